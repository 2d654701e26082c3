/*
 * The options schema as C tables (generated into qapi/qapi-schema.c by
 * scripts/qapi-gen.py from the qapi/ JSON files; see docs/devel/qapi.md).
 *
 * Everything here is read-only data: qapi_check(), the help printer, the
 * documentation and introspection all walk the same tables, so a member
 * added to the schema is parsed, checked, defaulted and documented without
 * any hand-written code.
 */
#ifndef QAPI_SCHEMA_H
#define QAPI_SCHEMA_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum QapiKind {
    QAPI_KIND_BUILTIN,
    QAPI_KIND_ENUM,
    QAPI_KIND_STRUCT,
    QAPI_KIND_UNION,          /* struct members plus a variant chosen by a tag member */
    QAPI_KIND_ALTERNATE,      /* one of several types, told apart by JSON type */
    QAPI_KIND_ARRAY,
} QapiKind;

typedef enum QapiBuiltin {
    QAPI_BUILTIN_NONE,        /* not a builtin */
    QAPI_BUILTIN_STR,
    QAPI_BUILTIN_INT,         /* int64, narrowed by the member's range */
    QAPI_BUILTIN_SIZE,        /* byte count; keyval accepts suffixes; 0..INT64_MAX */
    QAPI_BUILTIN_BOOL,
    QAPI_BUILTIN_NUMBER,      /* double */
    QAPI_BUILTIN_ANY,         /* any JSON value, unchecked */
} QapiBuiltin;

/* The values of an enum, indexed by the C enum constant; array[size] is NULL. */
typedef struct QapiEnumLookup {
    const char *const *array;
    int size;
} QapiEnumLookup;

typedef enum QapiDefaultKind {
    QAPI_DEFAULT_NONE,        /* no default: an absent optional member stays absent */
    QAPI_DEFAULT_STR,         /* str and enum members */
    QAPI_DEFAULT_INT,         /* int and size members */
    QAPI_DEFAULT_BOOL,
    QAPI_DEFAULT_OBJECT,      /* an empty object, then filled with its own defaults */
    QAPI_DEFAULT_ARRAY,       /* an empty list */
} QapiDefaultKind;

typedef struct QapiType QapiType;

typedef struct QapiMember {
    const char *name;
    const QapiType *type;
    bool optional;
    bool has_range;           /* int members: min..max inclusive */
    int64_t min;
    int64_t max;
    QapiDefaultKind default_kind;
    const char *default_str;
    int64_t default_int;      /* QAPI_DEFAULT_INT and QAPI_DEFAULT_BOOL */
    const char *doc;
} QapiMember;

/* A union variant (tag -> struct) or an alternate's alternative (name -> type). */
typedef struct QapiVariant {
    const char *name;
    const QapiType *type;
} QapiVariant;

struct QapiType {
    const char *name;
    QapiKind kind;
    QapiBuiltin builtin;
    const char *doc;
    /* struct: all members, base first; union: the common (base) members */
    const QapiMember *members;
    int n_members;
    /* enum */
    const QapiEnumLookup *lookup;
    const char *const *value_docs;
    /* union: the tag member's name; variants by tag (tags without one have no extra members) */
    const char *discriminator;
    /* union variants, or alternate alternatives */
    const QapiVariant *variants;
    int n_variants;
    /* array */
    const QapiType *element;
};

/* Every type, in schema order (builtins and implicit list types included). */
extern const QapiType qapi_schema_types[];
extern const int qapi_schema_n_types;

/*
 * A QMP command. args is a struct or union (implicit "q_obj_NAME-arg" for
 * inline members, "q_empty" for none); returns is "q_empty" for nothing.
 */
typedef struct QapiCommand {
    const char *name;
    const QapiType *args;
    const QapiType *returns;
    const char *doc;
} QapiCommand;

extern const QapiCommand qapi_schema_commands[];
extern const int qapi_schema_n_commands;

/* The command called name, or NULL. */
const QapiCommand *qapi_command_lookup(const char *name);

/* The type called name, or NULL. */
const QapiType *qapi_schema_lookup(const char *name);
/* A struct's or union's common member, or NULL. */
const QapiMember *qapi_type_find_member(const QapiType *t, const char *name);
/* The struct type of a union's variant for tag, or NULL when the tag has none. */
const QapiType *qapi_union_variant(const QapiType *u, const char *tag);
/* Index of value in lookup, or -1. */
int qapi_enum_lookup(const QapiEnumLookup *lookup, const char *value);
/* Name of a type as error messages and help spell it ("string", "integer", ...). */
const char *qapi_type_describe(const QapiType *t);

#endif
