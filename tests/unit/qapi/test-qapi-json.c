/*
 * JSON option text, "json:{...}" pseudo-filenames, and qapi_parse_options()
 * choosing between JSON and keyval.
 */
#include "qapi/qapi.h"
#include "qapi-test-util.h"

static void test_json_object(void)
{
    Error *err = NULL;
    JsonObject *obj = qapi_parse_json_object(
        "{\"driver\": \"file\", \"cache\": {\"direct\": true}, \"n\": 5}", &err);
    g_assert_no_error(err);
    g_autofree char *json = obj_to_json(obj);
    g_assert_cmpstr(json, ==, "{\"driver\":\"file\",\"cache\":{\"direct\":true},\"n\":5}");
    json_object_unref(obj);
}

static void test_json_prefix(void)
{
    Error *err = NULL;
    JsonObject *obj = qapi_parse_json_object("json:{\"driver\":\"null-co\"}", &err);
    g_assert_no_error(err);
    g_autofree char *json = obj_to_json(obj);
    g_assert_cmpstr(json, ==, "{\"driver\":\"null-co\"}");
    json_object_unref(obj);
}

static void test_json_errors(void)
{
    Error *err = NULL;
    g_assert_null(qapi_parse_json_object("[1, 2]", &err));
    assert_error(err, "JSON options must be an object");
    g_assert_null(qapi_parse_json_object("json:\"x\"", &err));
    assert_error(err, "JSON options must be an object");
    g_assert_null(qapi_parse_json_object("", &err));
    assert_error(err, "JSON options must be an object");

    g_assert_null(qapi_parse_json_object("{\"a\": }", &err));
    g_assert_nonnull(err);
    g_assert_true(g_str_has_prefix(error_get_pretty(err), "Invalid JSON options: "));
    error_free(err);
    err = NULL;

    g_assert_null(qapi_parse_json_object("{}{}", &err));
    assert_error(err, "Invalid JSON options: unexpected text after the end of the object");
    g_assert_null(qapi_parse_json_object("{\"a\":\"}\"} x", &err));
    assert_error(err, "Invalid JSON options: unexpected text after the end of the object");
    JsonObject *obj = qapi_parse_json_object(" {\"a\":\"}\\\"{\"}\n ", &err);
    g_assert_no_error(err);
    g_assert_cmpstr(json_object_get_string_member(obj, "a"), ==, "}\"{");
    json_object_unref(obj);

    GString *deep = g_string_new(NULL);
    for (int i = 0; i < 5000; i++) {
        g_string_append(deep, "{\"a\":");
    }
    g_assert_null(qapi_parse_json_object(deep->str, &err));
    assert_error(err, "Invalid JSON options: nested more than 1024 levels deep");
    g_string_free(deep, TRUE);
}

/* A checked JSON tree is mutable: qapi_check() converts it in place. */
/* Text that ends inside an object, array or string: where, and what is missing. */
static void test_json_truncated(void)
{
    Error *err = NULL;
    g_assert_null(qapi_parse_json_object("{\"driver\":\"raw\"", &err));
    assert_error(err, "Invalid JSON options: premature end of input at byte 15, expected '}'");
    g_assert_null(qapi_parse_json_object("{", &err));
    assert_error(err, "Invalid JSON options: premature end of input at byte 1, expected '}'");
    /* Positions count the "json:" prefix: they point into what the user typed. */
    g_assert_null(qapi_parse_json_object("json:{\"driver\":\"null-co\"", &err));
    assert_error(err, "Invalid JSON options: premature end of input at byte 24, expected '}'");
    g_assert_null(qapi_parse_json_object("{\"a\":[1,{\"b\":2}", &err));
    assert_error(err, "Invalid JSON options: premature end of input at byte 15, expected ']'");
    g_assert_null(qapi_parse_json_object("{\"a\":\"x}", &err));
    assert_error(err, "Invalid JSON options: premature end of input at byte 8, expected '\"'");
    g_assert_null(qapi_parse_json_object("{\"a\":\"x\\\"}", &err));
    assert_error(err, "Invalid JSON options: premature end of input at byte 10, expected '\"'");
}

/* json-glib keeps the last of two equal keys; options given twice are an error. */
static void test_json_duplicate(void)
{
    Error *err = NULL;
    g_assert_null(qapi_parse_json_object("{\"driver\":\"raw\",\"driver\":\"null-co\"}", &err));
    assert_error(err, "Invalid JSON options: duplicate key 'driver'");
    g_assert_null(qapi_parse_json_object(
        "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"a\","
        "\"filename\":\"b\"}}", &err));
    assert_error(err, "Invalid JSON options: duplicate key 'filename'");
    /* Deeper, inside an array, and spelt with an escape. */
    g_assert_null(qapi_parse_json_object("{\"a\":[{\"b\":{\"c\":1,\"\\u0063\":2}}]}", &err));
    assert_error(err, "Invalid JSON options: duplicate key 'c'");
    /* The same key in different objects is no duplicate. */
    JsonObject *obj = qapi_parse_json_object(
        "{\"a\":{\"x\":1},\"b\":{\"x\":2},\"c\":[{\"x\":3},{\"x\":4}],\"x\":5}", &err);
    g_assert_no_error(err);
    g_autofree char *json = obj_to_json(obj);
    g_assert_cmpstr(json, ==, "{\"a\":{\"x\":1},\"b\":{\"x\":2},\"c\":[{\"x\":3},{\"x\":4}],\"x\":5}");
    json_object_unref(obj);
}

static void test_json_mutable(void)
{
    Error *err = NULL;
    JsonObject *obj = qapi_parse_json_object("{\"driver\":\"null-co\"}", &err);
    g_assert_true(qapi_check("BlockdevOptions", obj, false, &err));
    g_assert_no_error(err);
    g_assert_cmpint(json_object_get_int_member(obj, "size"), ==, 1073741824);
    json_object_unref(obj);
}

static void check_options(const char *text, bool expect_keyval, const char *expect)
{
    Error *err = NULL;
    bool kv = !expect_keyval;
    JsonObject *obj = qapi_parse_options(text, "filename", &kv, &err);
    g_assert_no_error(err);
    g_assert_cmpint(kv, ==, expect_keyval);
    g_autofree char *json = obj_to_json(obj);
    g_assert_cmpstr(json, ==, expect);
    json_object_unref(obj);
}

static void test_json_options(void)
{
    check_options("{\"a\":1}", false, "{\"a\":1}");
    check_options("  {\"a\":true}", false, "{\"a\":true}");
    check_options("json:{\"a\":\"b\"}", false, "{\"a\":\"b\"}");
    check_options("a=1", true, "{\"a\":\"1\"}");
    check_options("disk.img,a=1", true, "{\"filename\":\"disk.img\",\"a\":\"1\"}");
    check_options("", true, "{}");

    Error *err = NULL;
    g_assert_null(qapi_parse_options("json:[]", NULL, NULL, &err));
    assert_error(err, "JSON options must be an object");
    g_assert_null(qapi_parse_options("a", NULL, NULL, &err));
    assert_error(err, "Expected '=' after parameter 'a'");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qapi/json/object", test_json_object);
    g_test_add_func("/qapi/json/prefix", test_json_prefix);
    g_test_add_func("/qapi/json/errors", test_json_errors);
    g_test_add_func("/qapi/json/truncated", test_json_truncated);
    g_test_add_func("/qapi/json/duplicate", test_json_duplicate);
    g_test_add_func("/qapi/json/mutable", test_json_mutable);
    g_test_add_func("/qapi/json/options", test_json_options);
    return g_test_run();
}
