/*
 * keyval: "key=value,key2.sub=value,..." into a JsonObject tree.
 *
 * The result has only string leaves and object inner nodes; qapi_check()
 * converts leaves to their schema types and turns objects whose keys are
 * 0, 1, 2... into lists where the schema wants a list. Syntax:
 *   - elements are separated by ','; ",," inside a value is a literal ',';
 *   - a key is one or more '.'-separated fragments of [A-Za-z0-9_-];
 *   - a repeated key keeps its last value;
 *   - the first element may lack "key=" when the caller names an implied key;
 *   - "help" or "?" alone asks for help when the caller can give it.
 */
#include "qapi/qapi.h"
#include "qapi/keyval.h"

#include <string.h>

/* Bounds the recursion of whoever walks or frees the tree. */
#define KEYVAL_MAX_DEPTH 1024

static bool key_fragment_ok(const char *frag, size_t len)
{
    if (len == 0) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = frag[i];
        if (!g_ascii_isalnum(c) && c != '-' && c != '_') {
            return false;
        }
    }
    return true;
}

/* Stores value under the dotted key, creating intermediate objects. */
static bool keyval_put(JsonObject *root, const char *key, const char *value, Error **errp)
{
    JsonObject *cur = root;
    const char *frag = key;
    int depth = 0;

    for (;;) {
        const char *dot = strchr(frag, '.');
        size_t len = dot ? (size_t)(dot - frag) : strlen(frag);
        if (!key_fragment_ok(frag, len) || ++depth > KEYVAL_MAX_DEPTH) {
            error_setg(errp, "Invalid parameter '%s'", key);
            return false;
        }
        char *name = g_strndup(frag, len);
        JsonNode *node = json_object_get_member(cur, name);
        if (!dot) {
            if (node && JSON_NODE_HOLDS_OBJECT(node)) {
                error_setg(errp, "Parameters '%s.*' used inconsistently", key);
                g_free(name);
                return false;
            }
            json_object_set_string_member(cur, name, value);
            g_free(name);
            return true;
        }
        if (!node) {
            JsonObject *child = json_object_new();
            json_object_set_object_member(cur, name, child);
            cur = child;
        } else if (JSON_NODE_HOLDS_OBJECT(node)) {
            cur = json_node_get_object(node);
        } else {
            error_setg(errp, "Parameters '%.*s.*' used inconsistently",
                       (int)(dot - key), key);
            g_free(name);
            return false;
        }
        g_free(name);
        frag = dot + 1;
    }
}

/* Reads a value up to an unescaped ',' (or the end); returns the position after it. */
static const char *keyval_value(const char *s, GString *out)
{
    while (*s) {
        if (*s == ',') {
            if (s[1] != ',') {
                return s + 1;
            }
            s++;
        }
        g_string_append_c(out, *s++);
    }
    return s;
}

JsonObject *keyval_parse_with_help(const char *params, const char *implied_key,
                                   bool *help, Error **errp)
{
    JsonObject *root = json_object_new();
    const char *s = params;
    bool first = true;

    if (help) {
        *help = false;
    }
    while (*s) {
        size_t klen = strcspn(s, "=,");
        g_autofree char *key = NULL;
        g_autoptr(GString) value = g_string_new(NULL);

        if (s[klen] == '=') {
            key = g_strndup(s, klen);
            s = keyval_value(s + klen + 1, value);
        } else if (help && ((klen == 4 && strncmp(s, "help", 4) == 0) ||
                            (klen == 1 && s[0] == '?'))) {
            *help = true;
            s += klen;
            if (*s == ',') {
                s++;
            }
            first = false;
            continue;
        } else if (first && implied_key && klen > 0) {
            key = g_strdup(implied_key);
            s = keyval_value(s, value);
        } else {
            error_setg(errp, "Expected '=' after parameter '%.*s'", (int)klen, s);
            json_object_unref(root);
            return NULL;
        }
        if (!keyval_put(root, key, value->str, errp)) {
            json_object_unref(root);
            return NULL;
        }
        first = false;
    }
    return root;
}

JsonObject *keyval_parse(const char *params, const char *implied_key, Error **errp)
{
    return keyval_parse_with_help(params, implied_key, NULL, errp);
}
