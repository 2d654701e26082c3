/*
 * qapi_check(): an option tree against the schema tables, in place.
 *
 * One recursive walk does everything: it converts keyval strings to the
 * member's type (json_node_set_*() rewrites a value node without touching
 * its parent; not json_node_init_*(), which in json-glib 1.6 reuses the
 * value it has just freed), turns keyval objects with keys 0, 1, ... into lists, picks a
 * union's variant by its tag, fills defaults, and stops at the first error.
 * Error messages name the full dotted key ("cache.direct",
 * "inject-error.0.errno"). Per object, the order is fixed so that
 * messages are deterministic: the union tag, then unknown keys, then the
 * members in schema order.
 *
 * A checked tree passes qapi_check() again unchanged, in either mode.
 */
#include "qapi/qapi.h"
#include "qapi/schema.h"
#include "qapi/size.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Deeper trees are rejected before recursion could exhaust the stack. */
#define CHECK_MAX_DEPTH 64

typedef struct CheckState {
    bool from_keyval;
    int depth;
} CheckState;

static bool check_node(CheckState *st, const QapiType *t, const QapiMember *m,
                       JsonNode *node, const char *path, Error **errp);

static char *path_join(const char *path, const char *name)
{
    return *path ? g_strconcat(path, ".", name, NULL) : g_strdup(name);
}

static void error_wrong_type(Error **errp, const char *path, const QapiType *t)
{
    error_setg(errp, "Invalid parameter type for '%s', expected: %s", path,
               qapi_type_describe(t));
}

/* The node's string when it is a JSON string, else NULL. */
static const char *node_string(JsonNode *node)
{
    if (JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == G_TYPE_STRING) {
        return json_node_get_string(node);
    }
    return NULL;
}

static bool node_is_int(JsonNode *node)
{
    return JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == G_TYPE_INT64;
}

/* Keyval booleans, as QEMU spells them. */
static int parse_bool(const char *s)
{
    static const char *const yes[] = { "on", "yes", "true", "y" };
    static const char *const no[] = { "off", "no", "false", "n" };
    for (size_t i = 0; i < G_N_ELEMENTS(yes); i++) {
        if (strcmp(s, yes[i]) == 0) {
            return 1;
        }
        if (strcmp(s, no[i]) == 0) {
            return 0;
        }
    }
    return -1;
}

/* Keyval integers: strtoll base 0 (decimal, 0x hex, 0 octal), whole string. */
static int parse_int(const char *s, int64_t *value)
{
    if (!*s || g_ascii_isspace(*s)) {
        return -EINVAL;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (*end) {
        return -EINVAL;
    }
    if (errno == ERANGE) {
        return -ERANGE;
    }
    *value = v;
    return 0;
}

static bool check_range(const QapiMember *m, int64_t v, const char *path,
                        const char *what, Error **errp)
{
    if (m && m->has_range && (v < m->min || v > m->max)) {
        error_setg(errp, "Parameter '%s' expects %s between %" PRId64 " and %" PRId64
                   ", got %" PRId64, path, what, m->min, m->max, v);
        return false;
    }
    return true;
}

static bool check_bool(CheckState *st, JsonNode *node, const char *path, Error **errp)
{
    if (JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == G_TYPE_BOOLEAN) {
        return true;
    }
    const char *s = node_string(node);
    if (st->from_keyval && s) {
        int v = parse_bool(s);
        if (v < 0) {
            error_setg(errp, "Parameter '%s' expects 'on' or 'off'", path);
            return false;
        }
        json_node_set_boolean(node, v);
        return true;
    }
    error_setg(errp, "Invalid parameter type for '%s', expected: boolean", path);
    return false;
}

static bool check_int(CheckState *st, const QapiMember *m, JsonNode *node,
                      const char *path, Error **errp)
{
    int64_t v;
    const char *s = node_string(node);
    if (node_is_int(node)) {
        v = json_node_get_int(node);
    } else if (st->from_keyval && s) {
        int ret = parse_int(s, &v);
        if (ret == -ERANGE) {
            error_setg(errp, "Parameter '%s' expects an integer between %" PRId64
                       " and %" PRId64 ", got %s", path,
                       m && m->has_range ? m->min : INT64_MIN,
                       m && m->has_range ? m->max : INT64_MAX, s);
            return false;
        }
        if (ret < 0) {
            error_setg(errp, "Parameter '%s' expects an integer", path);
            return false;
        }
    } else {
        error_setg(errp, "Invalid parameter type for '%s', expected: integer", path);
        return false;
    }
    if (!check_range(m, v, path, "an integer", errp)) {
        return false;
    }
    if (!node_is_int(node)) {
        json_node_set_int(node, v);
    }
    return true;
}

static bool check_size(CheckState *st, const QapiMember *m, JsonNode *node,
                       const char *path, Error **errp)
{
    int64_t v;
    const char *s = node_string(node);
    if (node_is_int(node)) {
        v = json_node_get_int(node);
        if (v < 0) {
            goto bad_size;
        }
    } else if (st->from_keyval && s) {
        uint64_t u;
        if (qapi_strtosz(s, &u) < 0 || u > INT64_MAX) {
            goto bad_size;
        }
        v = (int64_t)u;
    } else {
        error_setg(errp, "Invalid parameter type for '%s', expected: size", path);
        return false;
    }
    if (!check_range(m, v, path, "a size", errp)) {
        return false;
    }
    if (!node_is_int(node)) {
        json_node_set_int(node, v);
    }
    return true;

bad_size:
    /* JSON trees hold int64, so sizes stop below 2^63 (QEMU's say 2^64). */
    error_setg(errp, "Parameter '%s' expects a non-negative number below 2^63", path);
    return false;
}

static bool check_number(CheckState *st, JsonNode *node, const char *path, Error **errp)
{
    if (JSON_NODE_HOLDS_VALUE(node)) {
        GType vt = json_node_get_value_type(node);
        if (vt == G_TYPE_DOUBLE) {
            return true;
        }
        if (vt == G_TYPE_INT64) {
            json_node_set_double(node, (double)json_node_get_int(node));
            return true;
        }
    }
    const char *s = node_string(node);
    if (st->from_keyval && s) {
        char *end;
        double v = g_ascii_strtod(s, &end);
        if (!*s || *end || g_ascii_isspace(*s)) {
            error_setg(errp, "Parameter '%s' expects a number", path);
            return false;
        }
        json_node_set_double(node, v);
        return true;
    }
    error_setg(errp, "Invalid parameter type for '%s', expected: number", path);
    return false;
}

/*
 * OnOffAuto also takes the spellings of a boolean (JSON true/false, keyval
 * yes/no/true/false), stored as "on"/"off": options that began as booleans
 * (fixed-files) keep accepting what users wrote before they gained "auto".
 */
static void onoffauto_from_bool(CheckState *st, const QapiType *t, JsonNode *node)
{
    int v = -1;

    if (strcmp(t->name, "OnOffAuto") != 0) {
        return;
    }
    if (JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == G_TYPE_BOOLEAN) {
        v = json_node_get_boolean(node);
    } else if (st->from_keyval && node_string(node)) {
        v = parse_bool(node_string(node));
    }
    if (v >= 0) {
        json_node_set_string(node, v ? "on" : "off");
    }
}

static bool check_enum(CheckState *st, const QapiType *t, JsonNode *node, const char *path,
                       Error **errp)
{
    onoffauto_from_bool(st, t, node);
    const char *s = node_string(node);
    if (!s) {
        error_wrong_type(errp, path, t);
        return false;
    }
    if (qapi_enum_lookup(t->lookup, s) < 0) {
        error_setg(errp, "Parameter '%s' does not accept value '%s'", path, s);
        g_autofree char *values = g_strjoinv(", ", (char **)t->lookup->array);
        error_append_hint(errp, "Valid values: %s", values);
        return false;
    }
    return true;
}

/* Adds the default of an absent member; objects get their own defaults too. */
static bool fill_default(CheckState *st, JsonObject *obj, const QapiMember *m,
                         const char *path, Error **errp)
{
    switch (m->default_kind) {
    case QAPI_DEFAULT_NONE:
        return true;
    case QAPI_DEFAULT_STR:
        json_object_set_string_member(obj, m->name, m->default_str);
        return true;
    case QAPI_DEFAULT_INT:
        json_object_set_int_member(obj, m->name, m->default_int);
        return true;
    case QAPI_DEFAULT_BOOL:
        json_object_set_boolean_member(obj, m->name, m->default_int != 0);
        return true;
    case QAPI_DEFAULT_ARRAY:
        json_object_set_array_member(obj, m->name, json_array_new());
        return true;
    case QAPI_DEFAULT_OBJECT:
        json_object_set_object_member(obj, m->name, json_object_new());
        return check_node(st, m->type, m, json_object_get_member(obj, m->name), path, errp);
    }
    return true;
}

/*
 * A keyval object with keys 0..n-1 becomes a list, in index order,
 * replacing member name of parent (json_node_init_array() cannot be used:
 * in json-glib 1.6 it reuses the object it has just freed).
 */
static bool keyval_listify(JsonObject *parent, const char *name, const char *path,
                           Error **errp)
{
    JsonObject *obj = json_object_get_object_member(parent, name);
    guint n = json_object_get_size(obj);
    JsonArray *arr = json_array_sized_new(n);

    for (guint i = 0; i < n; i++) {
        g_autofree char *key = g_strdup_printf("%u", i);
        JsonNode *elem = json_object_dup_member(obj, key);
        if (!elem) {
            /* Either an index is missing or some key is not an index. */
            GList *names = json_object_get_members(obj);
            const char *bad = NULL;
            for (GList *l = names; l && !bad; l = l->next) {
                const char *k = l->data;
                char *end;
                unsigned long idx = strtoul(k, &end, 10);
                g_autofree char *canon = g_strdup_printf("%lu", idx);
                if (*end || strcmp(canon, k) != 0) {
                    bad = k;
                }
            }
            g_autofree char *sub = path_join(path, bad ? bad : key);
            if (bad) {
                error_setg(errp, "Invalid parameter '%s'", sub);
            } else {
                error_setg(errp, "Parameter '%s' is missing", sub);
            }
            g_list_free(names);
            json_array_unref(arr);
            return false;
        }
        json_array_add_element(arr, elem);
    }
    json_object_set_array_member(parent, name, arr);
    return true;
}

static bool check_members(CheckState *st, const QapiMember *members, int n,
                          JsonObject *obj, const char *path, Error **errp)
{
    for (int i = 0; i < n; i++) {
        const QapiMember *m = &members[i];
        g_autofree char *sub = path_join(path, m->name);
        JsonNode *node = json_object_get_member(obj, m->name);
        if (node && st->from_keyval && m->type->kind == QAPI_KIND_ARRAY &&
            JSON_NODE_HOLDS_OBJECT(node)) {
            if (!keyval_listify(obj, m->name, sub, errp)) {
                return false;
            }
            node = json_object_get_member(obj, m->name);
        }
        if (!node) {
            if (!m->optional) {
                error_setg(errp, "Parameter '%s' is missing", sub);
                return false;
            }
            if (!fill_default(st, obj, m, sub, errp)) {
                return false;
            }
        } else if (!check_node(st, m->type, m, node, sub, errp)) {
            return false;
        }
    }
    return true;
}

/* Rejects keys that are neither common members of t nor members of variant. */
static bool check_unknown_keys(const QapiType *t, const QapiType *variant,
                               JsonObject *obj, const char *path, Error **errp)
{
    GList *names = json_object_get_members(obj);
    bool ok = true;
    for (GList *l = names; l; l = l->next) {
        const char *name = l->data;
        if (qapi_type_find_member(t, name) ||
            (variant && qapi_type_find_member(variant, name))) {
            continue;
        }
        g_autofree char *sub = path_join(path, name);
        error_setg(errp, "Invalid parameter '%s'", sub);
        ok = false;
        break;
    }
    g_list_free(names);
    return ok;
}

static bool check_object(CheckState *st, const QapiType *t, JsonNode *node,
                         const char *path, Error **errp)
{
    if (!JSON_NODE_HOLDS_OBJECT(node)) {
        error_wrong_type(errp, path, t);
        return false;
    }
    JsonObject *obj = json_node_get_object(node);
    const QapiType *variant = NULL;

    if (t->kind == QAPI_KIND_UNION) {
        const QapiMember *tag = qapi_type_find_member(t, t->discriminator);
        g_autofree char *sub = path_join(path, tag->name);
        JsonNode *tag_node = json_object_get_member(obj, tag->name);
        if (!tag_node) {
            error_setg(errp, "Parameter '%s' is missing", sub);
            return false;
        }
        if (!check_node(st, tag->type, tag, tag_node, sub, errp)) {
            return false;
        }
        variant = qapi_union_variant(t, json_node_get_string(tag_node));
    }
    if (!check_unknown_keys(t, variant, obj, path, errp)) {
        return false;
    }
    if (!check_members(st, t->members, t->n_members, obj, path, errp)) {
        return false;
    }
    return !variant || check_members(st, variant->members, variant->n_members, obj, path, errp);
}

static bool check_array(CheckState *st, const QapiType *t, JsonNode *node,
                        const char *path, Error **errp)
{
    if (!JSON_NODE_HOLDS_ARRAY(node)) {
        error_wrong_type(errp, path, t);
        return false;
    }
    JsonArray *arr = json_node_get_array(node);
    guint n = json_array_get_length(arr);
    for (guint i = 0; i < n; i++) {
        g_autofree char *idx = g_strdup_printf("%u", i);
        g_autofree char *sub = path_join(path, idx);
        if (!check_node(st, t->element, NULL, json_array_get_element(arr, i), sub, errp)) {
            return false;
        }
    }
    return true;
}

/* Whether a JSON node's type is what alternative type at takes. */
static bool alternative_matches(const QapiType *at, JsonNode *node)
{
    switch (at->kind) {
    case QAPI_KIND_STRUCT:
    case QAPI_KIND_UNION:
        return JSON_NODE_HOLDS_OBJECT(node);
    case QAPI_KIND_ENUM:
        return node_string(node) != NULL;
    case QAPI_KIND_BUILTIN:
        if (!JSON_NODE_HOLDS_VALUE(node)) {
            return false;
        }
        switch (at->builtin) {
        case QAPI_BUILTIN_STR:
            return node_string(node) != NULL;
        case QAPI_BUILTIN_BOOL:
            return json_node_get_value_type(node) == G_TYPE_BOOLEAN;
        case QAPI_BUILTIN_INT:
        case QAPI_BUILTIN_SIZE:
            return node_is_int(node);
        case QAPI_BUILTIN_NUMBER:
            return node_is_int(node) || json_node_get_value_type(node) == G_TYPE_DOUBLE;
        case QAPI_BUILTIN_ANY:
            return true;
        case QAPI_BUILTIN_NONE:
            return false;
        }
        return false;
    case QAPI_KIND_ALTERNATE:
    case QAPI_KIND_ARRAY:
        return false;
    }
    return false;
}

static bool check_alternate(CheckState *st, const QapiType *t, JsonNode *node,
                            const char *path, Error **errp)
{
    for (int i = 0; i < t->n_variants; i++) {
        if (alternative_matches(t->variants[i].type, node)) {
            return check_node(st, t->variants[i].type, NULL, node, path, errp);
        }
    }
    /* A keyval string may still convert to a scalar alternative (bool, number). */
    if (st->from_keyval && node_string(node)) {
        for (int i = 0; i < t->n_variants; i++) {
            const QapiType *at = t->variants[i].type;
            if (at->kind == QAPI_KIND_BUILTIN &&
                check_node(st, at, NULL, node, path, NULL)) {
                return true;
            }
        }
    }
    error_wrong_type(errp, path, t);
    return false;
}

static bool check_node(CheckState *st, const QapiType *t, const QapiMember *m,
                       JsonNode *node, const char *path, Error **errp)
{
    bool ok = false;

    if (st->depth >= CHECK_MAX_DEPTH) {
        error_setg(errp, "Parameter '%s' is nested too deeply", path);
        return false;
    }
    st->depth++;
    switch (t->kind) {
    case QAPI_KIND_BUILTIN:
        switch (t->builtin) {
        case QAPI_BUILTIN_STR:
            ok = node_string(node) != NULL;
            if (!ok) {
                error_wrong_type(errp, path, t);
            }
            break;
        case QAPI_BUILTIN_BOOL:
            ok = check_bool(st, node, path, errp);
            break;
        case QAPI_BUILTIN_INT:
            ok = check_int(st, m, node, path, errp);
            break;
        case QAPI_BUILTIN_SIZE:
            ok = check_size(st, m, node, path, errp);
            break;
        case QAPI_BUILTIN_NUMBER:
            ok = check_number(st, node, path, errp);
            break;
        case QAPI_BUILTIN_ANY:
            ok = true;
            break;
        case QAPI_BUILTIN_NONE:
            g_assert_not_reached();
        }
        break;
    case QAPI_KIND_ENUM:
        ok = check_enum(st, t, node, path, errp);
        break;
    case QAPI_KIND_STRUCT:
    case QAPI_KIND_UNION:
        ok = check_object(st, t, node, path, errp);
        break;
    case QAPI_KIND_ALTERNATE:
        ok = check_alternate(st, t, node, path, errp);
        break;
    case QAPI_KIND_ARRAY:
        ok = check_array(st, t, node, path, errp);
        break;
    }
    st->depth--;
    return ok;
}

static bool check_root(const QapiType *t, JsonObject *opts, bool from_keyval, Error **errp)
{
    CheckState st = { .from_keyval = from_keyval };
    JsonNode *node = json_node_init_object(json_node_alloc(), opts);
    bool ok = check_node(&st, t, NULL, node, "", errp);
    json_node_unref(node);
    return ok;
}

bool qapi_check(const char *type_name, JsonObject *opts, bool from_keyval, Error **errp)
{
    const QapiType *t = qapi_schema_lookup(type_name);
    if (!t || (t->kind != QAPI_KIND_STRUCT && t->kind != QAPI_KIND_UNION)) {
        error_setg(errp, "Unknown option type '%s'", type_name);
        return false;
    }
    return check_root(t, opts, from_keyval, errp);
}

bool qapi_check_command(const char *name, JsonObject *args, Error **errp)
{
    const QapiCommand *cmd = qapi_command_lookup(name);
    if (!cmd) {
        error_set(errp, ERROR_CLASS_COMMAND_NOT_FOUND, "The command %s has not been found",
                  name);
        return false;
    }
    return check_root(cmd->args, args, false, errp);
}
