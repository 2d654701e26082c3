/*
 * keyval_parse(): nesting, escaping, the implied key, help and every error.
 */
#include "qapi/qapi.h"
#include "qapi/keyval.h"
#include "qapi-test-util.h"

/* Parses params and compares the tree's JSON text with expect. */
static void check_parse(const char *params, const char *implied, const char *expect)
{
    Error *err = NULL;
    JsonObject *obj = keyval_parse(params, implied, &err);
    g_assert_no_error(err);
    g_assert_nonnull(obj);
    g_autofree char *json = obj_to_json(obj);
    g_assert_cmpstr(json, ==, expect);
    json_object_unref(obj);
}

static void check_parse_error(const char *params, const char *implied, const char *msg)
{
    Error *err = NULL;
    JsonObject *obj = keyval_parse(params, implied, &err);
    g_assert_null(obj);
    assert_error(err, msg);
}

static void test_keyval_flat(void)
{
    check_parse("", NULL, "{}");
    check_parse("a=1", NULL, "{\"a\":\"1\"}");
    check_parse("driver=file,filename=disk.img", NULL,
                "{\"driver\":\"file\",\"filename\":\"disk.img\"}");
    check_parse("a=", NULL, "{\"a\":\"\"}");
    check_parse("a=1,", NULL, "{\"a\":\"1\"}");
    check_parse("a=x=y", NULL, "{\"a\":\"x=y\"}");
    check_parse("Key_9-x=v", NULL, "{\"Key_9-x\":\"v\"}");
}

static void test_keyval_nested(void)
{
    check_parse("cache.direct=on,cache.no-flush=off", NULL,
                "{\"cache\":{\"direct\":\"on\",\"no-flush\":\"off\"}}");
    check_parse("file.driver=file,file.filename=a,driver=raw", NULL,
                "{\"file\":{\"driver\":\"file\",\"filename\":\"a\"},\"driver\":\"raw\"}");
    check_parse("a.b.c=1,a.b.d=2,a.e=3", NULL,
                "{\"a\":{\"b\":{\"c\":\"1\",\"d\":\"2\"},\"e\":\"3\"}}");
    check_parse("l.0=x,l.1=y", NULL, "{\"l\":{\"0\":\"x\",\"1\":\"y\"}}");
}

static void test_keyval_escape(void)
{
    check_parse("filename=a,,b.img", NULL, "{\"filename\":\"a,b.img\"}");
    check_parse("filename=a,,,,b,x=1", NULL, "{\"filename\":\"a,,b\",\"x\":\"1\"}");
    check_parse("a=,,", NULL, "{\"a\":\",\"}");
    check_parse("a=1,,b=2", NULL, "{\"a\":\"1,b=2\"}");
}

static void test_keyval_last_wins(void)
{
    check_parse("a=1,a=2", NULL, "{\"a\":\"2\"}");
    check_parse("c.d=1,x=0,c.d=2", NULL, "{\"c\":{\"d\":\"2\"},\"x\":\"0\"}");
}

static void test_keyval_implied(void)
{
    check_parse("disk.img", "filename", "{\"filename\":\"disk.img\"}");
    check_parse("disk.img,aio=native", "filename",
                "{\"filename\":\"disk.img\",\"aio\":\"native\"}");
    check_parse("a,,b.img,x=1", "filename", "{\"filename\":\"a,b.img\",\"x\":\"1\"}");
    check_parse("iothread,id=io0", "qom-type", "{\"qom-type\":\"iothread\",\"id\":\"io0\"}");
    /* With '=', the first element is an ordinary key. */
    check_parse("filename=x", "filename", "{\"filename\":\"x\"}");
    check_parse("id=io0", "qom-type", "{\"id\":\"io0\"}");
    /* Only the first element may be implied. */
    check_parse_error("id=io0,iothread", "qom-type",
                      "Expected '=' after parameter 'iothread'");
}

static void test_keyval_help(void)
{
    Error *err = NULL;
    bool help = true;
    JsonObject *obj = keyval_parse_with_help("driver=file", NULL, &help, &err);
    g_assert_no_error(err);
    g_assert_false(help);
    json_object_unref(obj);

    obj = keyval_parse_with_help("driver=file,help", NULL, &help, &err);
    g_assert_no_error(err);
    g_assert_true(help);
    g_autofree char *json = obj_to_json(obj);
    g_assert_cmpstr(json, ==, "{\"driver\":\"file\"}");
    json_object_unref(obj);

    obj = keyval_parse_with_help("?", "qom-type", &help, &err);
    g_assert_no_error(err);
    g_assert_true(help);
    json_object_unref(obj);

    /* Without a help pointer, "help" is just a missing '='. */
    check_parse_error("driver=file,help", NULL, "Expected '=' after parameter 'help'");
}

static void test_keyval_errors(void)
{
    check_parse_error("a", NULL, "Expected '=' after parameter 'a'");
    check_parse_error("a=1,b", NULL, "Expected '=' after parameter 'b'");
    check_parse_error(",", NULL, "Expected '=' after parameter ''");
    check_parse_error(",", "filename", "Expected '=' after parameter ''");
    check_parse_error("=1", NULL, "Invalid parameter ''");
    check_parse_error("a..b=1", NULL, "Invalid parameter 'a..b'");
    check_parse_error(".a=1", NULL, "Invalid parameter '.a'");
    check_parse_error("a.=1", NULL, "Invalid parameter 'a.'");
    check_parse_error("a b=1", NULL, "Invalid parameter 'a b'");
    check_parse_error("/tmp/x=y.img", "filename", "Invalid parameter '/tmp/x'");
    check_parse_error("cache=x,cache.direct=on", NULL,
                      "Parameters 'cache.*' used inconsistently");
    check_parse_error("cache.direct=on,cache=x", NULL,
                      "Parameters 'cache.*' used inconsistently");
    check_parse_error("a.b=1,a.b.c=2", NULL, "Parameters 'a.b.*' used inconsistently");
}

static void test_keyval_too_deep(void)
{
    GString *s = g_string_new(NULL);
    for (int i = 0; i < 2000; i++) {
        g_string_append(s, "a.");
    }
    g_string_append(s, "b");
    Error *err = NULL;
    g_autofree char *msg = g_strdup_printf("Invalid parameter '%s'", s->str);
    g_string_append(s, "=1");
    JsonObject *obj = keyval_parse(s->str, NULL, &err);
    g_assert_null(obj);
    assert_error(err, msg);
    g_string_free(s, TRUE);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qapi/keyval/flat", test_keyval_flat);
    g_test_add_func("/qapi/keyval/nested", test_keyval_nested);
    g_test_add_func("/qapi/keyval/escape", test_keyval_escape);
    g_test_add_func("/qapi/keyval/last-wins", test_keyval_last_wins);
    g_test_add_func("/qapi/keyval/implied", test_keyval_implied);
    g_test_add_func("/qapi/keyval/help", test_keyval_help);
    g_test_add_func("/qapi/keyval/errors", test_keyval_errors);
    g_test_add_func("/qapi/keyval/too-deep", test_keyval_too_deep);
    return g_test_run();
}
