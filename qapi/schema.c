/*
 * Lookups over the generated schema tables (include/qapi/schema.h).
 *
 * The tables are small (tens of types), and lookups happen while options
 * are parsed, never on the I/O path, so plain linear searches do.
 */
#include "qapi/qapi.h"
#include "qapi/schema.h"

#include <string.h>

const QapiType *qapi_schema_lookup(const char *name)
{
    for (int i = 0; i < qapi_schema_n_types; i++) {
        if (strcmp(qapi_schema_types[i].name, name) == 0) {
            return &qapi_schema_types[i];
        }
    }
    return NULL;
}

const QapiCommand *qapi_command_lookup(const char *name)
{
    for (int i = 0; i < qapi_schema_n_commands; i++) {
        if (strcmp(qapi_schema_commands[i].name, name) == 0) {
            return &qapi_schema_commands[i];
        }
    }
    return NULL;
}

const QapiMember *qapi_type_find_member(const QapiType *t, const char *name)
{
    for (int i = 0; i < t->n_members; i++) {
        if (strcmp(t->members[i].name, name) == 0) {
            return &t->members[i];
        }
    }
    return NULL;
}

const QapiType *qapi_union_variant(const QapiType *u, const char *tag)
{
    for (int i = 0; i < u->n_variants; i++) {
        if (strcmp(u->variants[i].name, tag) == 0) {
            return u->variants[i].type;
        }
    }
    return NULL;
}

int qapi_enum_lookup(const QapiEnumLookup *lookup, const char *value)
{
    for (int i = 0; i < lookup->size; i++) {
        if (strcmp(lookup->array[i], value) == 0) {
            return i;
        }
    }
    return -1;
}

int qapi_enum_parse(const char *enum_name, const char *value)
{
    const QapiType *t = qapi_schema_lookup(enum_name);
    if (!t || t->kind != QAPI_KIND_ENUM || !value) {
        return -1;
    }
    return qapi_enum_lookup(t->lookup, value);
}

const char *qapi_type_describe(const QapiType *t)
{
    switch (t->kind) {
    case QAPI_KIND_BUILTIN:
        switch (t->builtin) {
        case QAPI_BUILTIN_STR:
            return "string";
        case QAPI_BUILTIN_INT:
            return "integer";
        case QAPI_BUILTIN_SIZE:
            return "size";
        case QAPI_BUILTIN_BOOL:
            return "boolean";
        case QAPI_BUILTIN_NUMBER:
            return "number";
        case QAPI_BUILTIN_ANY:
            return "value";
        case QAPI_BUILTIN_NONE:
            break;
        }
        break;
    case QAPI_KIND_ENUM:
        return "string";
    case QAPI_KIND_STRUCT:
    case QAPI_KIND_UNION:
        return "object";
    case QAPI_KIND_ARRAY:
        return "list";
    case QAPI_KIND_ALTERNATE:
        return t->name;
    }
    return t->name;
}
