/*
 * libFuzzer target: option text through the parsers and qapi_check().
 *
 * Input: one selector byte, then option text. The selector picks the
 * schema type (BlockdevOptions, DriveOptions through
 * qapi_drive_to_blockdev(), ObjectOptions with implied key qom-type).
 * Besides "no crash, no leak", it asserts two properties of every tree
 * that passes the check:
 *   - checking again, in either mode, succeeds and changes nothing;
 *   - its JSON text parses back and checks to the same tree (when the
 *     input is UTF-8: keyval takes any bytes, JSON text cannot hold them).
 */
#include "qapi/qapi.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *to_json(JsonObject *obj)
{
    JsonNode *node = json_node_init_object(json_node_alloc(), obj);
    char *s = json_to_string(node, FALSE);
    json_node_unref(node);
    return s;
}

static void assert_stable(const char *type, JsonObject *checked, bool utf8)
{
    g_autofree char *first = to_json(checked);
    if (!qapi_check(type, checked, false, NULL) || !qapi_check(type, checked, true, NULL)) {
        abort();
    }
    g_autofree char *second = to_json(checked);
    if (strcmp(first, second) != 0) {
        abort();
    }
    if (!utf8) {
        return;
    }
    JsonObject *reparsed = qapi_parse_json_object(first, NULL);
    if (!reparsed || !qapi_check(type, reparsed, false, NULL)) {
        abort();
    }
    g_autofree char *third = to_json(reparsed);
    if (strcmp(first, third) != 0) {
        abort();
    }
    json_object_unref(reparsed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    unsigned selector = data[0] % 3;
    /* Option text is a C string: stop at the first NUL. */
    g_autofree char *text = g_strndup((const char *)data + 1, size - 1);
    const char *implied = selector == 2 ? "qom-type" : NULL;
    bool utf8 = g_utf8_validate(text, -1, NULL);
    bool from_keyval = false;

    JsonObject *opts = qapi_parse_options(text, implied, &from_keyval, NULL);
    if (!opts) {
        return 0;
    }
    switch (selector) {
    case 0:
        if (qapi_check("BlockdevOptions", opts, from_keyval, NULL)) {
            assert_stable("BlockdevOptions", opts, utf8);
        }
        break;
    case 1: {
        JsonObject *bd = qapi_drive_to_blockdev(opts, NULL);
        if (bd) {
            assert_stable("BlockdevOptions", bd, utf8);
            json_object_unref(bd);
        }
        break;
    }
    default:
        if (qapi_check("ObjectOptions", opts, from_keyval, NULL)) {
            assert_stable("ObjectOptions", opts, utf8);
        }
        break;
    }
    json_object_unref(opts);
    return 0;
}
