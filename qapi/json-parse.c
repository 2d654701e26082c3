/*
 * JSON option text ("{...}" or a "json:{...}" pseudo-filename) into a
 * JsonObject, and the choice between JSON and keyval.
 *
 * json-glib does the parsing; this file only insists on an object and
 * words the errors the way option errors are worded.
 */
#include "qapi/qapi.h"

#include <string.h>

#define JSON_PREFIX "json:"

/* json-glib's parser recurses per nesting level; deeper text is refused first. */
#define JSON_MAX_DEPTH 1024

/*
 * Refuses, before json-glib sees it, text nested too deeply and text
 * with something after the top-level object or array (json-glib 1.6
 * leaks the tree it has built when it then fails).
 */
static bool json_prescan(const char *text, Error **errp)
{
    int depth = 0;
    bool in_string = false;
    for (const char *p = text; *p; p++) {
        if (in_string) {
            if (*p == '\\' && p[1]) {
                p++;
            } else if (*p == '"') {
                in_string = false;
            }
        } else if (*p == '"') {
            in_string = true;
        } else if (*p == '{' || *p == '[') {
            if (++depth > JSON_MAX_DEPTH) {
                error_setg(errp, "Invalid JSON options: nested more than %d levels deep",
                           JSON_MAX_DEPTH);
                return false;
            }
        } else if ((*p == '}' || *p == ']') && --depth == 0) {
            for (const char *q = p + 1; *q; q++) {
                if (!g_ascii_isspace(*q)) {
                    error_setg(errp, "Invalid JSON options: unexpected text after the "
                               "end of the object");
                    return false;
                }
            }
            return true;
        }
    }
    return true;
}

JsonObject *qapi_parse_json_object(const char *text, Error **errp)
{
    if (g_str_has_prefix(text, JSON_PREFIX)) {
        text += strlen(JSON_PREFIX);
    }

    /* Anything but an object is an error anyway; json-glib need not see it. */
    const char *p = text;
    while (g_ascii_isspace(*p)) {
        p++;
    }
    if (*p != '{') {
        error_setg(errp, "JSON options must be an object");
        return NULL;
    }
    if (!json_prescan(text, errp)) {
        return NULL;
    }
    g_autoptr(JsonParser) parser = json_parser_new();
    GError *local_err = NULL;
    if (!json_parser_load_from_data(parser, text, -1, &local_err)) {
        error_setg(errp, "Invalid JSON options: %s", local_err->message);
        g_error_free(local_err);
        return NULL;
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        error_setg(errp, "JSON options must be an object");
        return NULL;
    }
    /* A mutable tree (qapi_check() converts in place) that outlives the parser. */
    return json_node_dup_object(root);
}

JsonObject *qapi_parse_options(const char *text, const char *implied_key,
                               bool *from_keyval, Error **errp)
{
    const char *p = text;
    while (g_ascii_isspace(*p)) {
        p++;
    }
    bool json = *p == '{' || g_str_has_prefix(text, JSON_PREFIX);
    if (from_keyval) {
        *from_keyval = !json;
    }
    return json ? qapi_parse_json_object(text, errp)
                : keyval_parse(text, implied_key, errp);
}
