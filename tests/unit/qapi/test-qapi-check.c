/*
 * qapi_check(): conversion, defaults, unions, alternates, lists, ranges and
 * every error message, for keyval and JSON input.
 */
#include "qapi/qapi.h"
#include "qapi/qapi-types.h"
#include "qapi/size.h"
#include "qapi-test-util.h"

#include <errno.h>

#define FILE_DEFAULTS                                                          \
    "\"discard\":\"ignore\","                                                  \
    "\"cache\":{\"direct\":false,\"no-flush\":false,\"writeback\":true},"     \
    "\"read-only\":false,\"auto-read-only\":false,\"force-share\":false,"      \
    "\"detect-zeroes\":\"off\",\"aio\":\"auto\",\"locking\":\"auto\","       \
    "\"aio-queue-depth\":0,\"fixed-files\":\"auto\",\"fixed-buffers\":\"auto\","  \
    "\"sqpoll\":false,\"sq-thread-idle\":1000,\"sq-thread-cpu\":-1,"           \
    "\"iopoll\":false,\"restrict\":\"auto\",\"share-ring\":\"auto\""

#define BASE_DEFAULTS                                                          \
    "\"discard\":\"ignore\","                                                  \
    "\"cache\":{\"direct\":false,\"no-flush\":false,\"writeback\":true},"     \
    "\"read-only\":false,\"auto-read-only\":false,\"force-share\":false,"      \
    "\"detect-zeroes\":\"off\""

/* Parses text (keyval or JSON), checks it as type, compares with expect. */
static void check_ok(const char *type, const char *text, const char *expect)
{
    Error *err = NULL;
    bool kv;
    JsonObject *obj = qapi_parse_options(text, NULL, &kv, &err);
    g_assert_no_error(err);
    if (!qapi_check(type, obj, kv, &err)) {
        g_error("%s: unexpected error: %s", text, error_get_pretty(err));
    }
    g_autofree char *json = obj_to_json(obj);
    g_assert_cmpstr(json, ==, expect);

    /* A checked tree checks again, unchanged, in either mode. */
    g_assert_true(qapi_check(type, obj, false, &error_abort));
    g_assert_true(qapi_check(type, obj, true, &error_abort));
    g_autofree char *again = obj_to_json(obj);
    g_assert_cmpstr(again, ==, expect);
    json_object_unref(obj);
}

static void check_fail(const char *type, const char *text, const char *msg)
{
    Error *err = NULL;
    bool kv;
    JsonObject *obj = qapi_parse_options(text, NULL, &kv, &err);
    g_assert_no_error(err);
    g_assert_false(qapi_check(type, obj, kv, &err));
    assert_error(err, msg);
    json_object_unref(obj);
}

static void test_check_defaults_file(void)
{
    check_ok("BlockdevOptions", "driver=file,filename=disk.img",
             "{\"driver\":\"file\",\"filename\":\"disk.img\"," FILE_DEFAULTS "}");
    check_ok("BlockdevOptions", "{\"driver\":\"host_device\",\"filename\":\"/dev/x\"}",
             "{\"driver\":\"host_device\",\"filename\":\"/dev/x\"," FILE_DEFAULTS "}");
}

static void test_check_defaults_null(void)
{
    check_ok("BlockdevOptions", "driver=null-co",
             "{\"driver\":\"null-co\"," BASE_DEFAULTS ","
             "\"size\":1073741824,\"read-zeroes\":false,\"latency-ns\":0}");
    check_ok("BlockdevOptions", "driver=null-aio,size=4k,read-zeroes=on,latency-ns=100",
             "{\"driver\":\"null-aio\",\"size\":4096,\"read-zeroes\":true,\"latency-ns\":100,"
             BASE_DEFAULTS "}");
}

static void test_check_keyval_convert(void)
{
    check_ok("BlockdevOptions",
             "driver=file,filename=a,,b,aio=io_uring,cache.direct=on,aio-queue-depth=0x40,"
             "sq-thread-cpu=-1,sq-thread-idle=010,sqpoll=yes,iopoll=n,fixed-files=true,"
             "locking=off,read-only=y,discard=unmap,node-name=n0",
             "{\"driver\":\"file\",\"filename\":\"a,b\",\"aio\":\"io_uring\","
             "\"cache\":{\"direct\":true,\"no-flush\":false,\"writeback\":true},"
             "\"aio-queue-depth\":64,\"sq-thread-cpu\":-1,\"sq-thread-idle\":8,"
             "\"sqpoll\":true,\"iopoll\":false,\"fixed-files\":\"on\",\"locking\":\"off\","
             "\"read-only\":true,\"discard\":\"unmap\",\"node-name\":\"n0\","
             "\"auto-read-only\":false,\"force-share\":false,\"detect-zeroes\":\"off\","
             "\"fixed-buffers\":\"auto\",\"restrict\":\"auto\",\"share-ring\":\"auto\"}");
}

static void test_check_bool_spellings(void)
{
    static const char *const yes[] = { "on", "yes", "true", "y" };
    static const char *const no[] = { "off", "no", "false", "n" };
    for (int i = 0; i < 4; i++) {
        for (int v = 0; v < 2; v++) {
            Error *err = NULL;
            g_autofree char *text = g_strdup_printf("driver=null-co,read-zeroes=%s",
                                                    v ? yes[i] : no[i]);
            JsonObject *obj = keyval_parse(text, NULL, &err);
            g_assert_true(qapi_check("BlockdevOptions", obj, true, &err));
            g_assert_cmpint(json_object_get_boolean_member(obj, "read-zeroes"), ==, v);
            json_object_unref(obj);
        }
    }
    check_fail("BlockdevOptions", "driver=null-co,read-zeroes=ON",
               "Parameter 'read-zeroes' expects 'on' or 'off'");
    check_fail("BlockdevOptions", "driver=null-co,read-zeroes=1",
               "Parameter 'read-zeroes' expects 'on' or 'off'");
    check_fail("BlockdevOptions", "driver=null-co,read-zeroes=",
               "Parameter 'read-zeroes' expects 'on' or 'off'");
    check_fail("BlockdevOptions", "driver=file,filename=x,cache.direct=maybe",
               "Parameter 'cache.direct' expects 'on' or 'off'");
}

/* OnOffAuto takes a boolean's spellings too (fixed-files was a boolean). */
static void test_check_onoffauto_bools(void)
{
    static const struct { const char *text, *expect; } cases[] = {
        { "{\"driver\":\"file\",\"filename\":\"x\",\"fixed-files\":true}", "on" },
        { "{\"driver\":\"file\",\"filename\":\"x\",\"fixed-files\":false}", "off" },
        { "{\"driver\":\"file\",\"filename\":\"x\",\"fixed-files\":\"auto\"}", "auto" },
        { "driver=file,filename=x,fixed-files=yes", "on" },
        { "driver=file,filename=x,fixed-files=n", "off" },
        { "driver=file,filename=x,fixed-files=on", "on" },
        { "driver=file,filename=x,fixed-files=auto", "auto" },
        { "driver=file,filename=x", "auto" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        bool kv;
        JsonObject *obj = qapi_parse_options(cases[i].text, NULL, &kv, &error_abort);
        g_assert_true(qapi_check("BlockdevOptions", obj, kv, &error_abort));
        g_assert_cmpstr(json_object_get_string_member(obj, "fixed-files"), ==, cases[i].expect);
        json_object_unref(obj);
    }
    check_fail("BlockdevOptions", "driver=file,filename=x,fixed-files=maybe",
               "Parameter 'fixed-files' does not accept value 'maybe'\n"
               "Valid values: auto, on, off");
    check_fail("BlockdevOptions", "{\"driver\":\"file\",\"filename\":\"x\",\"fixed-files\":1}",
               "Invalid parameter type for 'fixed-files', expected: string");
    /* Other enums stay strict: a boolean is no aio mode. */
    check_fail("BlockdevOptions", "{\"driver\":\"file\",\"filename\":\"x\",\"aio\":true}",
               "Invalid parameter type for 'aio', expected: string");
}

static void check_size_kv(const char *text, int64_t expect)
{
    Error *err = NULL;
    g_autofree char *opts = g_strdup_printf("driver=null-co,size=%s", text);
    JsonObject *obj = keyval_parse(opts, NULL, &err);
    if (!qapi_check("BlockdevOptions", obj, true, &err)) {
        g_error("size=%s: %s", text, error_get_pretty(err));
    }
    g_assert_cmpint(json_object_get_int_member(obj, "size"), ==, expect);
    json_object_unref(obj);
}

static void test_check_sizes(void)
{
    check_size_kv("0", 0);
    check_size_kv("512", 512);
    check_size_kv("512B", 512);
    check_size_kv("512b", 512);
    check_size_kv("4k", 4096);
    check_size_kv("4K", 4096);
    check_size_kv("1M", 1 << 20);
    check_size_kv("1m", 1 << 20);
    check_size_kv("2G", INT64_C(2) << 30);
    check_size_kv("1.5G", INT64_C(3) << 29);
    check_size_kv("0.5k", 512);
    check_size_kv("1.0001k", 1024);
    check_size_kv("3T", INT64_C(3) << 40);
    check_size_kv("1P", INT64_C(1) << 50);
    check_size_kv("7E", INT64_C(7) << 60);
    check_size_kv("0x1000", 4096);
    check_size_kv("0x10M", 16 << 20);
    check_size_kv("0x1E", 30);
    check_size_kv("9223372036854775807", INT64_MAX);

    static const char *const bad[] = {
        "", "-1", "k", "1.5", "1.5B", "1x", "1kk", "1 k", " 1", "0x", "0x1.5k",
        "8E", "9223372036854775808", "18446744073709551616", "1e3", ".5k", "+1",
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autofree char *opts = g_strdup_printf("driver=null-co,size=%s", bad[i]);
        check_fail("BlockdevOptions", opts,
                   "Parameter 'size' expects a non-negative number below 2^63");
    }
    check_fail("BlockdevOptions", "{\"driver\":\"null-co\",\"size\":-1}",
               "Parameter 'size' expects a non-negative number below 2^63");
    check_fail("BlockdevOptions", "{\"driver\":\"null-co\",\"size\":\"4k\"}",
               "Invalid parameter type for 'size', expected: size");
    check_fail("BlockdevOptions", "{\"driver\":\"null-co\",\"size\":1.5}",
               "Invalid parameter type for 'size', expected: size");
}

static void test_check_strtosz(void)
{
    uint64_t v = 0;
    g_assert_cmpint(qapi_strtosz("15E", &v), ==, 0);
    g_assert_cmpuint(v, ==, UINT64_C(15) << 60);
    g_assert_cmpint(qapi_strtosz("18446744073709551615", &v), ==, 0);
    g_assert_cmpuint(v, ==, UINT64_MAX);
    g_assert_cmpint(qapi_strtosz("0xffffffffffffffff", &v), ==, 0);
    g_assert_cmpuint(v, ==, UINT64_MAX);
    g_assert_cmpint(qapi_strtosz("16E", &v), ==, -ERANGE);
    g_assert_cmpint(qapi_strtosz("15.99999999E", &v), ==, 0);
    g_assert_cmpint(qapi_strtosz("18446744073709551616", &v), ==, -ERANGE);
    g_assert_cmpint(qapi_strtosz("0x10000000000000000", &v), ==, -ERANGE);
    g_assert_cmpint(qapi_strtosz("1.5", &v), ==, -EINVAL);
    g_assert_cmpint(qapi_strtosz("1Q", &v), ==, -EINVAL);
    g_assert_cmpint(qapi_strtosz("-5", &v), ==, -EINVAL);
}

static void test_check_ints(void)
{
    check_fail("BlockdevOptions", "driver=file,filename=x,aio-queue-depth=40000",
               "Parameter 'aio-queue-depth' expects an integer between 0 and 32768, got 40000");
    check_fail("BlockdevOptions", "driver=file,filename=x,aio-queue-depth=-1",
               "Parameter 'aio-queue-depth' expects an integer between 0 and 32768, got -1");
    check_fail("BlockdevOptions", "{\"driver\":\"file\",\"filename\":\"x\",\"aio-queue-depth\":32769}",
               "Parameter 'aio-queue-depth' expects an integer between 0 and 32768, got 32769");
    check_fail("BlockdevOptions", "driver=file,filename=x,sq-thread-cpu=-2",
               "Parameter 'sq-thread-cpu' expects an integer between -1 and 2147483647, got -2");
    check_fail("BlockdevOptions", "driver=file,filename=x,sq-thread-cpu=abc",
               "Parameter 'sq-thread-cpu' expects an integer");
    check_fail("BlockdevOptions", "driver=file,filename=x,sq-thread-cpu=",
               "Parameter 'sq-thread-cpu' expects an integer");
    check_fail("BlockdevOptions", "driver=file,filename=x,sq-thread-cpu=1k",
               "Parameter 'sq-thread-cpu' expects an integer");
    check_fail("BlockdevOptions", "driver=file,filename=x,sq-thread-cpu= 1",
               "Parameter 'sq-thread-cpu' expects an integer");
    check_fail("BlockdevOptions", "driver=null-co,latency-ns=99999999999999999999",
               "Parameter 'latency-ns' expects an integer between 0 and 9223372036854775807,"
               " got 99999999999999999999");
    check_fail("BlockdevOptions", "{\"driver\":\"null-co\",\"latency-ns\":\"5\"}",
               "Invalid parameter type for 'latency-ns', expected: integer");
    check_fail("BlockdevOptions", "{\"driver\":\"null-co\",\"latency-ns\":5.0}",
               "Invalid parameter type for 'latency-ns', expected: integer");
    check_ok("BlockdevOptions", "driver=file,filename=x,aio-queue-depth=32768,sq-thread-cpu=3",
             "{\"driver\":\"file\",\"filename\":\"x\",\"aio-queue-depth\":32768,"
             "\"sq-thread-cpu\":3,\"discard\":\"ignore\","
             "\"cache\":{\"direct\":false,\"no-flush\":false,\"writeback\":true},"
             "\"read-only\":false,\"auto-read-only\":false,\"force-share\":false,"
             "\"detect-zeroes\":\"off\",\"aio\":\"auto\",\"locking\":\"auto\","
             "\"fixed-files\":\"auto\",\"fixed-buffers\":\"auto\",\"sqpoll\":false,"
             "\"sq-thread-idle\":1000,\"iopoll\":false,\"restrict\":\"auto\",\"share-ring\":\"auto\"}");
}

static void test_check_enums(void)
{
    check_fail("BlockdevOptions", "driver=file,filename=x,aio=uring",
               "Parameter 'aio' does not accept value 'uring'\n"
               "Valid values: threads, native, io_uring, inline, auto");
    check_fail("BlockdevOptions", "driver=qcow2",
               "Parameter 'driver' does not accept value 'qcow2'\n"
               "Valid values: file, host_device, raw, null-co, null-aio, blkdebug");
    check_fail("BlockdevOptions", "{\"driver\":\"file\",\"filename\":\"x\",\"aio\":1}",
               "Invalid parameter type for 'aio', expected: string");
    check_fail("BlockdevOptions", "{\"driver\":true}",
               "Invalid parameter type for 'driver', expected: string");
    g_assert_cmpint(qapi_enum_parse("BlockdevAioOptions", "io_uring"), ==,
                    BLOCKDEV_AIO_OPTIONS_IO_URING);
    g_assert_cmpint(qapi_enum_parse("BlockdevAioOptions", "auto"), ==,
                    BLOCKDEV_AIO_OPTIONS_AUTO);
    g_assert_cmpint(qapi_enum_parse("OnOffAuto", "off"), ==, ON_OFF_AUTO_OFF);
    g_assert_cmpint(qapi_enum_parse("BlockdevAioOptions", "uring"), ==, -1);
    g_assert_cmpint(qapi_enum_parse("NoSuchEnum", "x"), ==, -1);
    g_assert_cmpint(qapi_enum_parse("BlockdevOptions", "file"), ==, -1);
    g_assert_cmpint(qapi_enum_parse("OnOffAuto", NULL), ==, -1);
    g_assert_cmpstr(BlockdevDriver_lookup.array[BLOCKDEV_DRIVER_NULL_CO], ==, "null-co");
    g_assert_cmpint(BlockdevDriver_lookup.size, ==, BLOCKDEV_DRIVER__MAX);
}

static void test_check_unknown(void)
{
    check_fail("BlockdevOptions", "driver=file,filename=x,cache.drect=on",
               "Invalid parameter 'cache.drect'");
    check_fail("BlockdevOptions", "driver=file,filname=x",
               "Invalid parameter 'filname'");
    /* Members of other variants are unknown. */
    check_fail("BlockdevOptions", "driver=null-co,filename=x",
               "Invalid parameter 'filename'");
    check_fail("BlockdevOptions", "{\"driver\":\"raw\",\"file\":{\"driver\":\"file\","
               "\"filename\":\"x\",\"bogus\":1}}",
               "Invalid parameter 'file.bogus'");
    check_fail("IothreadOptions", "id=a,poll-max=1", "Invalid parameter 'poll-max'");
}

static void test_check_missing(void)
{
    check_fail("BlockdevOptions", "driver=file", "Parameter 'filename' is missing");
    check_fail("BlockdevOptions", "filename=x", "Parameter 'driver' is missing");
    check_fail("BlockdevOptions", "", "Parameter 'driver' is missing");
    check_fail("BlockdevOptions", "driver=raw", "Parameter 'file' is missing");
    check_fail("BlockdevOptions", "driver=raw,file.driver=file",
               "Parameter 'file.filename' is missing");
    check_fail("BlockdevOptions", "driver=raw,file.filename=x",
               "Parameter 'file.driver' is missing");
    check_fail("IothreadOptions", "poll-max-ns=0", "Parameter 'id' is missing");
}

static void test_check_wrong_type(void)
{
    check_fail("BlockdevOptions", "driver=file,filename.x=1",
               "Invalid parameter type for 'filename', expected: string");
    check_fail("BlockdevOptions", "driver=file,filename=x,cache=none",
               "Invalid parameter type for 'cache', expected: object");
    check_fail("BlockdevOptions", "{\"driver\":\"file\",\"filename\":5}",
               "Invalid parameter type for 'filename', expected: string");
    check_fail("BlockdevOptions", "{\"driver\":\"file\",\"filename\":null}",
               "Invalid parameter type for 'filename', expected: string");
    check_fail("BlockdevOptions", "{\"driver\":\"file\",\"filename\":\"x\",\"cache\":{\"direct\":\"on\"}}",
               "Invalid parameter type for 'cache.direct', expected: boolean");
    check_fail("BlockdevOptions", "{\"driver\":\"file\",\"filename\":\"x\",\"cache\":[]}",
               "Invalid parameter type for 'cache', expected: object");
    check_fail("BlockdevOptions", "{\"driver\":\"raw\",\"file\":5}",
               "Invalid parameter type for 'file', expected: BlockdevRef");
    check_fail("BlockdevOptions", "{\"driver\":\"blkdebug\",\"image\":\"n\",\"inject-error\":{}}",
               "Invalid parameter type for 'inject-error', expected: list");
    check_fail("BlockdevOptions", "driver=blkdebug,image=n,inject-error=x",
               "Invalid parameter type for 'inject-error', expected: list");
}

static void test_check_union_raw(void)
{
    check_ok("BlockdevOptions", "driver=raw,file=disk0,offset=1M,size=64k",
             "{\"driver\":\"raw\",\"file\":\"disk0\",\"offset\":1048576,\"size\":65536,"
             BASE_DEFAULTS "}");
    check_ok("BlockdevOptions",
             "{\"driver\":\"raw\",\"node-name\":\"top\",\"file\":{\"driver\":\"null-co\","
             "\"size\":1024}}",
             "{\"driver\":\"raw\",\"node-name\":\"top\",\"file\":{\"driver\":\"null-co\","
             "\"size\":1024," BASE_DEFAULTS ",\"read-zeroes\":false,\"latency-ns\":0},"
             BASE_DEFAULTS ",\"offset\":0}");
    check_ok("BlockdevOptions",
             "driver=raw,file.driver=file,file.filename=x,file.aio=threads,file.cache.direct=on",
             "{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"x\","
             "\"aio\":\"threads\",\"cache\":{\"direct\":true,\"no-flush\":false,"
             "\"writeback\":true},\"discard\":\"ignore\",\"read-only\":false,"
             "\"auto-read-only\":false,\"force-share\":false,\"detect-zeroes\":\"off\","
             "\"locking\":\"auto\",\"aio-queue-depth\":0,\"fixed-files\":\"auto\","
             "\"fixed-buffers\":\"auto\",\"sqpoll\":false,\"sq-thread-idle\":1000,"
             "\"sq-thread-cpu\":-1,\"iopoll\":false,\"restrict\":\"auto\",\"share-ring\":\"auto\"},"
             BASE_DEFAULTS ",\"offset\":0}");
    check_fail("BlockdevOptions", "driver=raw,file.driver=file,file.filename=x,file.aio=x",
               "Parameter 'file.aio' does not accept value 'x'\n"
               "Valid values: threads, native, io_uring, inline, auto");
}

static void test_check_blkdebug_list(void)
{
    const char *expect =
        "{\"driver\":\"blkdebug\",\"image\":\"n\",\"inject-error\":["
        "{\"iotype\":\"read\",\"errno\":5,\"sector\":-1,\"once\":false},"
        "{\"errno\":28,\"once\":true,\"sector\":-1}]," BASE_DEFAULTS "}";
    check_ok("BlockdevOptions",
             "driver=blkdebug,image=n,inject-error.0.iotype=read,"
             "inject-error.1.errno=28,inject-error.1.once=on", expect);
    /* Index order decides, not text order. */
    check_ok("BlockdevOptions",
             "driver=blkdebug,image=n,inject-error.1.errno=28,inject-error.1.once=on,"
             "inject-error.0.iotype=read",
             "{\"driver\":\"blkdebug\",\"image\":\"n\",\"inject-error\":["
             "{\"iotype\":\"read\",\"errno\":5,\"sector\":-1,\"once\":false},"
             "{\"errno\":28,\"once\":true,\"sector\":-1}]," BASE_DEFAULTS "}");
    check_ok("BlockdevOptions",
             "{\"driver\":\"blkdebug\",\"image\":\"n\",\"inject-error\":["
             "{\"iotype\":\"read\"},{\"errno\":28,\"once\":true}]}", expect);
    check_ok("BlockdevOptions", "driver=blkdebug,image=n",
             "{\"driver\":\"blkdebug\",\"image\":\"n\"," BASE_DEFAULTS ",\"inject-error\":[]}");

    check_fail("BlockdevOptions", "driver=blkdebug,image=n,inject-error.1.errno=5",
               "Parameter 'inject-error.0' is missing");
    check_fail("BlockdevOptions", "driver=blkdebug,image=n,inject-error.x.errno=5",
               "Invalid parameter 'inject-error.x'");
    check_fail("BlockdevOptions", "driver=blkdebug,image=n,inject-error.0.errno=5,"
               "inject-error.01.errno=5", "Invalid parameter 'inject-error.01'");
    check_fail("BlockdevOptions", "driver=blkdebug,image=n,inject-error.0.errno=0",
               "Parameter 'inject-error.0.errno' expects an integer between 1 and 4095, got 0");
    check_fail("BlockdevOptions", "driver=blkdebug,image=n,inject-error.0.iotype=trim",
               "Parameter 'inject-error.0.iotype' does not accept value 'trim'\n"
               "Valid values: read, write, flush, discard, write-zeroes");
    check_fail("BlockdevOptions", "{\"driver\":\"blkdebug\",\"image\":\"n\",\"inject-error\":[5]}",
               "Invalid parameter type for 'inject-error.0', expected: object");
}

static void test_check_objects(void)
{
    check_ok("IothreadOptions", "id=io0,poll-max-ns=0",
             "{\"id\":\"io0\",\"poll-max-ns\":0,\"poll-grow\":0,\"poll-shrink\":0,"
             "\"aio-max-batch\":0}");
    Error *err = NULL;
    JsonObject *obj = keyval_parse("iothread,id=io1,poll-grow=4", "qom-type", &err);
    g_assert_true(qapi_check("ObjectOptions", obj, true, &err));
    g_autofree char *json = obj_to_json(obj);
    g_assert_cmpstr(json, ==, "{\"qom-type\":\"iothread\",\"id\":\"io1\",\"poll-grow\":4,"
                    "\"poll-max-ns\":32768,\"poll-shrink\":0,\"aio-max-batch\":0}");
    json_object_unref(obj);
    check_fail("ObjectOptions", "qom-type=memory,id=m",
               "Parameter 'qom-type' does not accept value 'memory'\nValid values: iothread");
}

static void test_check_bad_type_name(void)
{
    Error *err = NULL;
    JsonObject *obj = json_object_new();
    g_assert_false(qapi_check("NoSuchType", obj, true, &err));
    assert_error(err, "Unknown option type 'NoSuchType'");
    g_assert_false(qapi_check("OnOffAuto", obj, true, &err));
    assert_error(err, "Unknown option type 'OnOffAuto'");
    json_object_unref(obj);
}

static void test_check_too_deep(void)
{
    /* raw over raw over ...: refused before the recursion gets deep. */
    GString *s = g_string_new(NULL);
    for (int i = 0; i < 100; i++) {
        g_string_append(s, "{\"driver\":\"raw\",\"file\":");
    }
    g_string_append(s, "\"n\"");
    for (int i = 0; i < 100; i++) {
        g_string_append_c(s, '}');
    }
    Error *err = NULL;
    JsonObject *obj = qapi_parse_json_object(s->str, &err);
    g_assert_no_error(err);
    g_assert_false(qapi_check("BlockdevOptions", obj, false, &err));
    g_assert_nonnull(err);
    g_assert_true(strstr(error_get_pretty(err), "is nested too deeply"));
    error_free(err);
    json_object_unref(obj);
    g_string_free(s, TRUE);
}

static void check_command(const char *name, const char *args, const char *expect)
{
    JsonObject *obj = qapi_parse_json_object(args, &error_abort);
    g_assert_true(qapi_check_command(name, obj, &error_abort));
    g_autofree char *json = obj_to_json(obj);
    g_assert_cmpstr(json, ==, expect);
    json_object_unref(obj);
}

static void check_command_fail(const char *name, const char *args, const char *msg)
{
    Error *err = NULL;
    JsonObject *obj = qapi_parse_json_object(args, &error_abort);
    g_assert_false(qapi_check_command(name, obj, &err));
    g_assert_nonnull(err);
    g_assert_cmpint(error_get_class(err), ==, g_str_equal(msg, "The command nope has not been found") ?
                    ERROR_CLASS_COMMAND_NOT_FOUND : ERROR_CLASS_GENERIC_ERROR);
    assert_error(err, msg);
    json_object_unref(obj);
}

static void test_check_commands(void)
{
    check_command("qmp_capabilities", "{}", "{}");
    check_command("blockdev-del", "{\"node-name\":\"n0\"}", "{\"node-name\":\"n0\"}");
    check_command("blockdev-add", "{\"driver\":\"null-co\",\"node-name\":\"n0\"}",
                  "{\"driver\":\"null-co\",\"node-name\":\"n0\"," BASE_DEFAULTS ","
                  "\"size\":1073741824,\"read-zeroes\":false,\"latency-ns\":0}");
    check_command("object-add", "{\"qom-type\":\"iothread\",\"id\":\"io0\"}",
                  "{\"qom-type\":\"iothread\",\"id\":\"io0\",\"poll-max-ns\":32768,"
                  "\"poll-grow\":0,\"poll-shrink\":0,\"aio-max-batch\":0}");

    check_command_fail("nope", "{}", "The command nope has not been found");
    check_command_fail("quit", "{\"now\":true}", "Invalid parameter 'now'");
    check_command_fail("blockdev-del", "{}", "Parameter 'node-name' is missing");
    check_command_fail("blockdev-del", "{\"node-name\":1}",
                       "Invalid parameter type for 'node-name', expected: string");
    /* Commands take JSON: no keyval conversion. */
    check_command_fail("blockdev-add", "{\"driver\":\"null-co\",\"size\":\"4k\"}",
                       "Invalid parameter type for 'size', expected: size");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qapi/check/defaults-file", test_check_defaults_file);
    g_test_add_func("/qapi/check/defaults-null", test_check_defaults_null);
    g_test_add_func("/qapi/check/keyval-convert", test_check_keyval_convert);
    g_test_add_func("/qapi/check/bool-spellings", test_check_bool_spellings);
    g_test_add_func("/qapi/check/onoffauto-bools", test_check_onoffauto_bools);
    g_test_add_func("/qapi/check/sizes", test_check_sizes);
    g_test_add_func("/qapi/check/strtosz", test_check_strtosz);
    g_test_add_func("/qapi/check/ints", test_check_ints);
    g_test_add_func("/qapi/check/enums", test_check_enums);
    g_test_add_func("/qapi/check/unknown", test_check_unknown);
    g_test_add_func("/qapi/check/missing", test_check_missing);
    g_test_add_func("/qapi/check/wrong-type", test_check_wrong_type);
    g_test_add_func("/qapi/check/union-raw", test_check_union_raw);
    g_test_add_func("/qapi/check/blkdebug-list", test_check_blkdebug_list);
    g_test_add_func("/qapi/check/objects", test_check_objects);
    g_test_add_func("/qapi/check/bad-type-name", test_check_bad_type_name);
    g_test_add_func("/qapi/check/too-deep", test_check_too_deep);
    g_test_add_func("/qapi/check/commands", test_check_commands);
    return g_test_run();
}
