/*
 * Option help from the schema tables, in keyval spelling:
 *
 *   file options:
 *     aio=<threads|native|io_uring|auto> - AIO engine (default: auto)
 *     cache.direct=<bool>      - bypass the host page cache (O_DIRECT) (default: off)
 *
 * Nested structs are flattened into dotted keys and list elements are
 * shown as KEY.N.MEMBER, the way keyval writes them. Keys are sorted, as
 * QEMU sorts its "driver=file,help" output.
 */
#include "qapi/qapi.h"
#include "qapi/schema.h"

#include <inttypes.h>
#include <string.h>

/* Enums with at most this many values list them in the key column. */
#define HELP_MAX_INLINE_VALUES 6

typedef struct HelpLine {
    char *key;
    char *text;
} HelpLine;

static char *type_label(const QapiType *t)
{
    if (t->kind == QAPI_KIND_BUILTIN) {
        return g_strdup(t->name);
    }
    if (t->kind == QAPI_KIND_ENUM && t->lookup->size <= HELP_MAX_INLINE_VALUES) {
        return g_strjoinv("|", (char **)t->lookup->array);
    }
    return g_strdup(t->name);
}

static char *default_text(const QapiMember *m)
{
    switch (m->default_kind) {
    case QAPI_DEFAULT_STR:
        return g_strdup(m->default_str);
    case QAPI_DEFAULT_INT:
        return g_strdup_printf("%" PRId64, m->default_int);
    case QAPI_DEFAULT_BOOL:
        return g_strdup(m->default_int ? "on" : "off");
    case QAPI_DEFAULT_NONE:
    case QAPI_DEFAULT_OBJECT:
    case QAPI_DEFAULT_ARRAY:
        break;
    }
    return NULL;
}

static void collect_members(GPtrArray *lines, const char *prefix,
                            const QapiMember *members, int n, int depth);

static void collect_member(GPtrArray *lines, const char *prefix, const QapiMember *m,
                           int depth)
{
    g_autofree char *key = g_strconcat(prefix, m->name, NULL);
    const QapiType *t = m->type;

    /* Structs are written as dotted keys; depth guards recursive schemas. */
    if (t->kind == QAPI_KIND_STRUCT && depth < 4) {
        g_autofree char *sub = g_strconcat(key, ".", NULL);
        collect_members(lines, sub, t->members, t->n_members, depth + 1);
        return;
    }
    if (t->kind == QAPI_KIND_ARRAY && t->element->kind == QAPI_KIND_STRUCT && depth < 4) {
        g_autofree char *sub = g_strconcat(key, ".N.", NULL);
        collect_members(lines, sub, t->element->members, t->element->n_members, depth + 1);
        return;
    }

    g_autofree char *label = type_label(t);
    g_autofree char *dflt = default_text(m);
    g_autofree char *range = NULL;
    if (m->has_range && m->max == INT64_MAX && m->min != INT64_MIN) {
        range = g_strdup_printf("minimum: %" PRId64, m->min);
    } else if (m->has_range && (m->min != INT64_MIN || m->max != INT64_MAX)) {
        range = g_strdup_printf("range: %" PRId64 " to %" PRId64, m->min, m->max);
    }
    GString *text = g_string_new(m->doc);
    if (!m->optional) {
        g_string_append(text, " (required)");
    } else if (dflt || range) {
        g_string_append(text, " (");
        if (dflt) {
            g_string_append_printf(text, "default: %s%s", dflt, range ? ", " : "");
        }
        if (range) {
            g_string_append(text, range);
        }
        g_string_append(text, ")");
    }

    HelpLine *line = g_new(HelpLine, 1);
    line->key = g_strdup_printf("%s=<%s>", key, label);
    line->text = g_string_free(text, FALSE);
    g_ptr_array_add(lines, line);
}

static void collect_members(GPtrArray *lines, const char *prefix,
                            const QapiMember *members, int n, int depth)
{
    for (int i = 0; i < n; i++) {
        collect_member(lines, prefix, &members[i], depth);
    }
}

static int compare_lines(gconstpointer a, gconstpointer b)
{
    const HelpLine *la = *(HelpLine *const *)a;
    const HelpLine *lb = *(HelpLine *const *)b;
    return strcmp(la->key, lb->key);
}

static void free_line(gpointer p)
{
    HelpLine *line = p;
    g_free(line->key);
    g_free(line->text);
    g_free(line);
}

static void print_lines(FILE *f, GPtrArray *lines)
{
    g_ptr_array_sort(lines, compare_lines);
    for (guint i = 0; i < lines->len; i++) {
        HelpLine *line = lines->pdata[i];
        fprintf(f, "  %-24s - %s\n", line->key, line->text);
    }
}

void qapi_print_type_help(FILE *f, const char *type_name)
{
    const QapiType *t = qapi_schema_lookup(type_name);
    if (!t || (t->kind != QAPI_KIND_STRUCT && t->kind != QAPI_KIND_UNION)) {
        fprintf(f, "There is no option type '%s'\n", type_name);
        return;
    }
    g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(free_line);
    collect_members(lines, "", t->members, t->n_members, 0);
    fprintf(f, "%s options:\n", t->name);
    print_lines(f, lines);
    if (t->kind == QAPI_KIND_UNION) {
        fprintf(f, "Further options depend on %s; list them with %s=VALUE,help\n",
                t->discriminator, t->discriminator);
    }
}

bool qapi_print_union_help(FILE *f, const char *union_name, const char *tag)
{
    const QapiType *t = qapi_schema_lookup(union_name);
    if (!t || t->kind != QAPI_KIND_UNION) {
        fprintf(f, "There is no option type '%s'\n", union_name);
        return false;
    }
    const QapiMember *disc = qapi_type_find_member(t, t->discriminator);
    if (qapi_enum_lookup(disc->type->lookup, tag) < 0) {
        g_autofree char *values = g_strjoinv(", ", (char **)disc->type->lookup->array);
        fprintf(f, "Unknown %s '%s' (valid: %s)\n", t->discriminator, tag, values);
        return false;
    }
    g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(free_line);
    for (int i = 0; i < t->n_members; i++) {
        if (&t->members[i] != disc) {
            collect_member(lines, "", &t->members[i], 0);
        }
    }
    const QapiType *variant = qapi_union_variant(t, tag);
    if (variant) {
        collect_members(lines, "", variant->members, variant->n_members, 0);
    }
    fprintf(f, "%s options:\n", tag);
    print_lines(f, lines);
    return true;
}
