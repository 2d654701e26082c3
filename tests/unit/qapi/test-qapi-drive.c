/*
 * qapi_drive_to_blockdev(): the -drive shorthand into BlockdevOptions.
 */
#include "qapi/qapi.h"
#include "qapi-test-util.h"

#define BASE_TAIL                                                              \
    "\"auto-read-only\":false,\"force-share\":false"

#define FILE_TAIL                                                              \
    "\"locking\":\"auto\",\"aio-queue-depth\":0,\"fixed-files\":\"auto\","        \
    "\"fixed-buffers\":\"auto\",\"sqpoll\":false,\"sq-thread-idle\":1000,"     \
    "\"sq-thread-cpu\":-1,\"iopoll\":false,\"restrict\":\"auto\",\"share-ring\":\"auto\""

static JsonObject *drive(const char *text, Error **errp)
{
    JsonObject *opts = qapi_parse_options(text, NULL, NULL, &error_abort);
    JsonObject *bd = qapi_drive_to_blockdev(opts, errp);
    /* The input is left as it was. */
    g_autofree char *after = obj_to_json(opts);
    JsonObject *again = qapi_parse_options(text, NULL, NULL, &error_abort);
    g_autofree char *before = obj_to_json(again);
    g_assert_cmpstr(after, ==, before);
    json_object_unref(again);
    json_object_unref(opts);
    return bd;
}

static void check_drive(const char *text, const char *expect)
{
    Error *err = NULL;
    JsonObject *bd = drive(text, &err);
    if (!bd) {
        g_error("%s: %s", text, error_get_pretty(err));
    }
    g_autofree char *json = obj_to_json(bd);
    g_assert_cmpstr(json, ==, expect);
    /* The result is a checked BlockdevOptions tree. */
    g_assert_true(qapi_check("BlockdevOptions", bd, false, &error_abort));
    g_autofree char *again = obj_to_json(bd);
    g_assert_cmpstr(again, ==, expect);
    json_object_unref(bd);
}

static void check_drive_fail(const char *text, const char *msg)
{
    Error *err = NULL;
    g_assert_null(drive(text, &err));
    assert_error(err, msg);
}

/* "cache":{...} of both nodes for a cache mode */
static char *expect_for(const char *file_extra, const char *direct, const char *no_flush,
                        const char *writeback)
{
    return g_strdup_printf(
        "{\"driver\":\"raw\",\"cache\":{\"direct\":%s,\"no-flush\":%s,\"writeback\":%s},"
        "\"file\":{\"driver\":\"file\",\"filename\":\"disk.img\",%s"
        "\"cache\":{\"direct\":%s,\"no-flush\":%s,\"writeback\":true},"
        "\"discard\":\"ignore\",\"read-only\":false," BASE_TAIL ","
        "\"detect-zeroes\":\"off\",\"aio\":\"auto\"," FILE_TAIL "},"
        "\"discard\":\"ignore\",\"read-only\":false," BASE_TAIL ","
        "\"detect-zeroes\":\"off\",\"offset\":0}",
        direct, no_flush, writeback, file_extra, direct, no_flush);
}

static void test_drive_cache_modes(void)
{
    static const struct {
        const char *mode, *direct, *no_flush, *writeback;
    } modes[] = {
        { "none", "true", "false", "true" },
        { "writeback", "false", "false", "true" },
        { "writethrough", "false", "false", "false" },
        { "directsync", "true", "false", "false" },
        { "unsafe", "false", "true", "true" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(modes); i++) {
        g_autofree char *text = g_strdup_printf("file=disk.img,cache=%s", modes[i].mode);
        g_autofree char *expect = expect_for("", modes[i].direct, modes[i].no_flush,
                                             modes[i].writeback);
        check_drive(text, expect);
    }
    /* Default: writeback. */
    g_autofree char *expect = expect_for("", "false", "false", "true");
    check_drive("file=disk.img", expect);
    check_drive("file=disk.img,format=raw,if=none", expect);
}

static void test_drive_options(void)
{
    check_drive("file=disk.img,aio=io_uring,cache=none,node-name=d0,read-only=on,"
                "discard=unmap,locking=off,sqpoll=on,aio-queue-depth=128,detect-zeroes=unmap",
                "{\"driver\":\"raw\",\"node-name\":\"d0\",\"detect-zeroes\":\"unmap\","
                "\"read-only\":true,\"discard\":\"unmap\","
                "\"cache\":{\"direct\":true,\"no-flush\":false,\"writeback\":true},"
                "\"file\":{\"driver\":\"file\",\"filename\":\"disk.img\",\"aio\":\"io_uring\","
                "\"locking\":\"off\",\"aio-queue-depth\":128,\"sqpoll\":true,"
                "\"read-only\":true,\"discard\":\"unmap\","
                "\"cache\":{\"direct\":true,\"no-flush\":false,\"writeback\":true},"
                BASE_TAIL ",\"detect-zeroes\":\"off\",\"fixed-files\":\"auto\","
                "\"fixed-buffers\":\"auto\",\"sq-thread-idle\":1000,\"sq-thread-cpu\":-1,"
                "\"iopoll\":false,\"restrict\":\"auto\",\"share-ring\":\"auto\"},"
                BASE_TAIL ",\"offset\":0}");
    /* JSON input with typed values works the same. */
    check_drive("{\"file\":\"disk.img\",\"cache\":\"none\",\"read-only\":true}",
                "{\"driver\":\"raw\",\"read-only\":true,"
                "\"cache\":{\"direct\":true,\"no-flush\":false,\"writeback\":true},"
                "\"file\":{\"driver\":\"file\",\"filename\":\"disk.img\",\"read-only\":true,"
                "\"cache\":{\"direct\":true,\"no-flush\":false,\"writeback\":true},"
                "\"discard\":\"ignore\"," BASE_TAIL ",\"detect-zeroes\":\"off\","
                "\"aio\":\"auto\"," FILE_TAIL "},"
                "\"discard\":\"ignore\"," BASE_TAIL ",\"detect-zeroes\":\"off\",\"offset\":0}");
}

static void test_drive_json_file(void)
{
    check_drive("file=json:{\"driver\":\"null-co\",,\"size\":4096},cache=none",
                "{\"driver\":\"raw\","
                "\"cache\":{\"direct\":true,\"no-flush\":false,\"writeback\":true},"
                "\"file\":{\"driver\":\"null-co\",\"size\":4096,"
                "\"cache\":{\"direct\":true,\"no-flush\":false,\"writeback\":true},"
                "\"discard\":\"ignore\",\"read-only\":false," BASE_TAIL ","
                "\"detect-zeroes\":\"off\",\"read-zeroes\":false,\"latency-ns\":0},"
                "\"discard\":\"ignore\",\"read-only\":false," BASE_TAIL ","
                "\"detect-zeroes\":\"off\",\"offset\":0}");
    /* aio= is a file-driver option: not given to null-co. */
    check_drive_fail("file=json:{\"driver\":\"null-co\",,\"bogus\":1}",
                     "Invalid parameter 'file.bogus'");
    /* json-glib words the rest; it differs between versions. */
    Error *err = NULL;
    g_assert_null(drive("file=json:{\"driver\":", &err));
    g_assert_true(g_str_has_prefix(error_get_pretty(err),
                                   "Parameter 'file': Invalid JSON options: "));
    error_free(err);
}

static void test_drive_host_device(void)
{
    /* Any block device will do; find one in /sys/block. */
    g_autoptr(GDir) dir = g_dir_open("/sys/block", 0, NULL);
    const char *name = dir ? g_dir_read_name(dir) : NULL;
    g_autofree char *dev = name ? g_strdup_printf("/dev/%s", name) : NULL;
    if (!dev || !g_file_test(dev, G_FILE_TEST_EXISTS)) {
        g_test_skip("no block device node to look at");
        return;
    }
    g_autofree char *text = g_strdup_printf("file=%s", dev);
    JsonObject *bd = drive(text, &error_abort);
    JsonObject *file = json_object_get_object_member(bd, "file");
    g_assert_cmpstr(json_object_get_string_member(file, "driver"), ==, "host_device");
    json_object_unref(bd);
}

static void test_drive_errors(void)
{
    check_drive_fail("file=disk.img,if=virtio",
                     "Drive interface 'virtio' is not supported: ringblk has no guest "
                     "devices (use if=none)");
    check_drive_fail("file=disk.img,if=usb",
                     "Parameter 'if' does not accept value 'usb'\nValid values: none, ide, "
                     "scsi, floppy, pflash, mtd, sd, virtio, xen");
    check_drive_fail("file=disk.img,format=qcow2",
                     "Parameter 'format' does not accept value 'qcow2'\nValid values: raw");
    check_drive_fail("file=disk.img,cache=direct",
                     "Parameter 'cache' does not accept value 'direct'\nValid values: none, "
                     "writeback, writethrough, directsync, unsafe");
    check_drive_fail("format=raw", "Parameter 'file' is missing");
    check_drive_fail("file=disk.img,aio=fast",
                     "Parameter 'aio' does not accept value 'fast'\n"
                     "Valid values: threads, native, io_uring, inline, auto");
    check_drive_fail("file=disk.img,readonly=on", "Invalid parameter 'readonly'");
    check_drive_fail("file=disk.img,read-only=maybe",
                     "Parameter 'read-only' expects 'on' or 'off'");
    check_drive_fail("file=disk.img,aio-queue-depth=99999",
                     "Parameter 'aio-queue-depth' expects an integer between 0 and 32768, "
                     "got 99999");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qapi/drive/cache-modes", test_drive_cache_modes);
    g_test_add_func("/qapi/drive/options", test_drive_options);
    g_test_add_func("/qapi/drive/json-file", test_drive_json_file);
    g_test_add_func("/qapi/drive/host-device", test_drive_host_device);
    g_test_add_func("/qapi/drive/errors", test_drive_errors);
    return g_test_run();
}
