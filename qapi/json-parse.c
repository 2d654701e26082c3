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
 * Refuses, before json-glib sees it, text nested too deeply, text with
 * something after the top-level object or array (json-glib 1.6 leaks the
 * tree it has built when it then fails) and text that ends inside a string,
 * object or array (json-glib blames the last token it saw instead).
 * base: bytes of the original text before text (a "json:" prefix), so that
 * positions count from the start of what the user typed.
 */
static bool json_prescan(const char *text, size_t base, Error **errp)
{
    char closers[JSON_MAX_DEPTH];   /* what each open object or array needs */
    int depth = 0;
    bool in_string = false;
    const char *p;
    for (p = text; *p; p++) {
        if (in_string) {
            if (*p == '\\' && p[1]) {
                p++;
            } else if (*p == '"') {
                in_string = false;
            }
        } else if (*p == '"') {
            in_string = true;
        } else if (*p == '{' || *p == '[') {
            if (depth == JSON_MAX_DEPTH) {
                error_setg(errp, "Invalid JSON options: nested more than %d levels deep",
                           JSON_MAX_DEPTH);
                return false;
            }
            closers[depth++] = *p == '{' ? '}' : ']';
        } else if ((*p == '}' || *p == ']') && depth > 0 && --depth == 0) {
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
    if (in_string || depth > 0) {
        error_setg(errp, "Invalid JSON options: premature end of input at byte %zu, "
                   "expected '%c'", base + (size_t)(p - text), in_string ? '"' : closers[depth - 1]);
        return false;
    }
    return true;
}

/*
 * json-glib keeps the last of two equal keys without a word; options given
 * twice are an error. The parser reports each member after adding it to its
 * object: a name seen before in the same object is a duplicate. Objects stay
 * alive (in the tree) until the parser is freed, except one replaced by a
 * duplicate member, which is reported first, so their addresses are unique
 * up to the first duplicate.
 */
typedef struct JsonDupCheck {
    GHashTable *names;        /* JsonObject * -> GHashTable set of member names */
    char *dup;                /* the first duplicate key */
} JsonDupCheck;

static void json_dup_member(JsonParser *parser, JsonObject *object, const char *name,
                            gpointer opaque)
{
    JsonDupCheck *dc = opaque;
    (void)parser;
    if (dc->dup) {
        return;
    }
    GHashTable *set = g_hash_table_lookup(dc->names, object);
    if (!set) {
        set = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_hash_table_insert(dc->names, object, set);
    }
    if (!g_hash_table_add(set, g_strdup(name))) {
        dc->dup = g_strdup(name);
    }
}

JsonObject *qapi_parse_json_object(const char *text, Error **errp)
{
    size_t base = 0;
    if (g_str_has_prefix(text, JSON_PREFIX)) {
        base = strlen(JSON_PREFIX);
        text += base;
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
    if (!json_prescan(text, base, errp)) {
        return NULL;
    }
    g_autoptr(JsonParser) parser = json_parser_new();
    JsonDupCheck dc = {
        .names = g_hash_table_new_full(NULL, NULL, NULL, (GDestroyNotify)g_hash_table_unref),
    };
    g_signal_connect(parser, "object-member", G_CALLBACK(json_dup_member), &dc);
    GError *local_err = NULL;
    bool ok = json_parser_load_from_data(parser, text, -1, &local_err);
    g_hash_table_unref(dc.names);
    if (!ok) {
        error_setg(errp, "Invalid JSON options: %s", local_err->message);
        g_error_free(local_err);
        g_free(dc.dup);
        return NULL;
    }
    if (dc.dup) {
        error_setg(errp, "Invalid JSON options: duplicate key '%s'", dc.dup);
        g_free(dc.dup);
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
