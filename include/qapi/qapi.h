/*
 * Options: parsing and schema checking (implemented in qapi/).
 *
 * Option trees are json-glib JsonObjects. Whatever the source — a dotted
 * "key=value,..." string, JSON text, a "json:{...}" pseudo-filename, a QMP
 * command's arguments — the tree is checked against one schema
 * (the JSON files in qapi/), which converts keyval strings to their types, fills in
 * defaults and rejects unknown keys, bad enum values, wrong types and
 * missing required keys with an error naming the key and the value.
 *
 * After qapi_check() a consumer (a block driver's open, say) reads typed
 * members directly with json_object_get_*_member(): every optional member
 * that has a schema default is present.
 *
 * Schema enums are also C enums (generated qapi/qapi-types.h, included
 * here): enum BlockdevAioOptions has BLOCKDEV_AIO_OPTIONS_THREADS ...
 * BLOCKDEV_AIO_OPTIONS__MAX and BlockdevAioOptions_lookup; OnOffAuto has
 * ON_OFF_AUTO_AUTO/ON/OFF. Map a checked string member with
 * qapi_enum_parse("BlockdevAioOptions", json_object_get_string_member(o, "aio")).
 * Reference of every option: docs/options.md; how it works: docs/devel/qapi.md.
 */
#ifndef QAPI_QAPI_H
#define QAPI_QAPI_H

#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stdio.h>

#include "qapi/qapi-types.h"
#include "util/error.h"

/*
 * Parses "key=value,key2.sub=value,..." into a tree of string leaves.
 * Dotted keys nest; ",," is a literal comma. If implied_key is non-NULL, a
 * first element without '=' is its value ("disk.img" -> filename=disk.img).
 */
JsonObject *keyval_parse(const char *params, const char *implied_key, Error **errp);

/* Parses JSON text (or "json:{...}") that must be an object. */
JsonObject *qapi_parse_json_object(const char *text, Error **errp);

/*
 * Parses either form: text starting with '{' or "json:" is JSON, anything
 * else keyval. *from_keyval tells which, for qapi_check().
 */
JsonObject *qapi_parse_options(const char *text, const char *implied_key,
                               bool *from_keyval, Error **errp);

/*
 * Checks opts in place against the schema type `type_name` (e.g.
 * "BlockdevOptions", a union on "driver"). from_keyval: leaves are strings
 * to convert ("on"/"off", "4k" sizes, numbers). Fills defaults. On error,
 * returns false with a message naming the dotted key (e.g.
 * "Parameter 'cache.direct' expects 'on' or 'off'"); opts may be partly
 * converted then and should be discarded.
 */
bool qapi_check(const char *type_name, JsonObject *opts, bool from_keyval, Error **errp);

/*
 * Checks the "arguments" of QMP command name in place against the schema
 * (JSON types, defaults filled). An unknown command is an error of class
 * ERROR_CLASS_COMMAND_NOT_FOUND: "The command NAME has not been found".
 */
bool qapi_check_command(const char *name, JsonObject *args, Error **errp);

/*
 * Expands -drive style shorthands (file=, format=, cache=, aio=, if=none,
 * plus any driver key) into a BlockdevOptions tree (format node over a file
 * node). Returns a new tree or NULL with errp.
 */
JsonObject *qapi_drive_to_blockdev(JsonObject *drive, Error **errp);

/* Looks up the index of an enum value in schema enum `enum_name`, or -1. */
int qapi_enum_parse(const char *enum_name, const char *value);

/*
 * Prints the members of struct or union type_name in keyval spelling with
 * type, default, range and doc, one per line, sorted (QEMU's
 * "-blockdev driver=file,help" layout). For a union, only the common
 * members; see qapi_print_union_help().
 */
void qapi_print_type_help(FILE *f, const char *type_name);

/*
 * Prints the options of union union_name for tag value tag ("file" for
 * BlockdevOptions): common members (less the tag) and the variant's.
 * Returns false, after printing why, when tag is not a valid value.
 */
bool qapi_print_union_help(FILE *f, const char *union_name, const char *tag);

/*
 * The whole schema as a new JSON array of type descriptions (shape in
 * qapi/introspect.c, close to QEMU's query-qmp-schema). Caller unrefs.
 */
JsonNode *qapi_schema_introspect(void);

#endif
