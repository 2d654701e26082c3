/*
 * The schema as JSON, for QMP's query-qmp-schema and for tools.
 *
 * Shape (close to QEMU's SchemaInfo, with names not masked and with the
 * defaults and docs QEMU keeps out of it):
 *   [ {"name": "int", "meta-type": "builtin", "json-type": "int"},
 *     {"name": "OnOffAuto", "meta-type": "enum", "values": ["auto", ...],
 *      "doc": "..."},
 *     {"name": "BlockdevOptionsFile", "meta-type": "object",
 *      "members": [{"name": "aio", "type": "BlockdevAioOptions",
 *                   "optional": true, "default": "auto", "doc": "..."}, ...]},
 *     {"name": "BlockdevOptions", "meta-type": "object", "members": [...],
 *      "tag": "driver", "variants": [{"case": "file", "type": "BlockdevOptionsFile"}, ...]},
 *     {"name": "BlockdevRef", "meta-type": "alternate",
 *      "members": [{"type": "BlockdevOptions"}, {"type": "str"}]},
 *     {"name": "BlkdebugInjectErrorOptionsList", "meta-type": "array",
 *      "element-type": "BlkdebugInjectErrorOptions"},
 *     {"name": "blockdev-del", "meta-type": "command",
 *      "arg-type": "q_obj_blockdev-del-arg", "ret-type": "q_empty"} ]
 * Types first (schema order), then commands.
 * "min"/"max" appear on integer members with a range.
 */
#include "qapi/qapi.h"
#include "qapi/schema.h"

static const char *builtin_json_type(QapiBuiltin b)
{
    switch (b) {
    case QAPI_BUILTIN_STR:
        return "string";
    case QAPI_BUILTIN_INT:
    case QAPI_BUILTIN_SIZE:
        return "int";
    case QAPI_BUILTIN_BOOL:
        return "boolean";
    case QAPI_BUILTIN_NUMBER:
        return "number";
    case QAPI_BUILTIN_ANY:
        return "value";
    case QAPI_BUILTIN_NONE:
        break;
    }
    return "value";
}

static void add_member(JsonBuilder *b, const QapiMember *m)
{
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, m->name);
    json_builder_set_member_name(b, "type");
    json_builder_add_string_value(b, m->type->name);
    if (m->optional) {
        json_builder_set_member_name(b, "optional");
        json_builder_add_boolean_value(b, true);
    }
    switch (m->default_kind) {
    case QAPI_DEFAULT_NONE:
        break;
    case QAPI_DEFAULT_STR:
        json_builder_set_member_name(b, "default");
        json_builder_add_string_value(b, m->default_str);
        break;
    case QAPI_DEFAULT_INT:
        json_builder_set_member_name(b, "default");
        json_builder_add_int_value(b, m->default_int);
        break;
    case QAPI_DEFAULT_BOOL:
        json_builder_set_member_name(b, "default");
        json_builder_add_boolean_value(b, m->default_int != 0);
        break;
    case QAPI_DEFAULT_OBJECT:
        json_builder_set_member_name(b, "default");
        json_builder_begin_object(b);
        json_builder_end_object(b);
        break;
    case QAPI_DEFAULT_ARRAY:
        json_builder_set_member_name(b, "default");
        json_builder_begin_array(b);
        json_builder_end_array(b);
        break;
    }
    if (m->has_range) {
        json_builder_set_member_name(b, "min");
        json_builder_add_int_value(b, m->min);
        json_builder_set_member_name(b, "max");
        json_builder_add_int_value(b, m->max);
    }
    json_builder_set_member_name(b, "doc");
    json_builder_add_string_value(b, m->doc);
    json_builder_end_object(b);
}

static void add_type(JsonBuilder *b, const QapiType *t)
{
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, t->name);
    json_builder_set_member_name(b, "meta-type");
    switch (t->kind) {
    case QAPI_KIND_BUILTIN:
        json_builder_add_string_value(b, "builtin");
        json_builder_set_member_name(b, "json-type");
        json_builder_add_string_value(b, builtin_json_type(t->builtin));
        break;
    case QAPI_KIND_ENUM:
        json_builder_add_string_value(b, "enum");
        json_builder_set_member_name(b, "values");
        json_builder_begin_array(b);
        for (int i = 0; i < t->lookup->size; i++) {
            json_builder_add_string_value(b, t->lookup->array[i]);
        }
        json_builder_end_array(b);
        break;
    case QAPI_KIND_STRUCT:
    case QAPI_KIND_UNION:
        json_builder_add_string_value(b, "object");
        json_builder_set_member_name(b, "members");
        json_builder_begin_array(b);
        for (int i = 0; i < t->n_members; i++) {
            add_member(b, &t->members[i]);
        }
        json_builder_end_array(b);
        if (t->kind == QAPI_KIND_UNION) {
            json_builder_set_member_name(b, "tag");
            json_builder_add_string_value(b, t->discriminator);
            json_builder_set_member_name(b, "variants");
            json_builder_begin_array(b);
            for (int i = 0; i < t->n_variants; i++) {
                json_builder_begin_object(b);
                json_builder_set_member_name(b, "case");
                json_builder_add_string_value(b, t->variants[i].name);
                json_builder_set_member_name(b, "type");
                json_builder_add_string_value(b, t->variants[i].type->name);
                json_builder_end_object(b);
            }
            json_builder_end_array(b);
        }
        break;
    case QAPI_KIND_ALTERNATE:
        json_builder_add_string_value(b, "alternate");
        json_builder_set_member_name(b, "members");
        json_builder_begin_array(b);
        for (int i = 0; i < t->n_variants; i++) {
            json_builder_begin_object(b);
            json_builder_set_member_name(b, "type");
            json_builder_add_string_value(b, t->variants[i].type->name);
            json_builder_end_object(b);
        }
        json_builder_end_array(b);
        break;
    case QAPI_KIND_ARRAY:
        json_builder_add_string_value(b, "array");
        json_builder_set_member_name(b, "element-type");
        json_builder_add_string_value(b, t->element->name);
        break;
    }
    if (t->doc && *t->doc) {
        json_builder_set_member_name(b, "doc");
        json_builder_add_string_value(b, t->doc);
    }
    json_builder_end_object(b);
}

JsonNode *qapi_schema_introspect(void)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_array(b);
    for (int i = 0; i < qapi_schema_n_types; i++) {
        add_type(b, &qapi_schema_types[i]);
    }
    for (int i = 0; i < qapi_schema_n_commands; i++) {
        const QapiCommand *c = &qapi_schema_commands[i];
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "name");
        json_builder_add_string_value(b, c->name);
        json_builder_set_member_name(b, "meta-type");
        json_builder_add_string_value(b, "command");
        json_builder_set_member_name(b, "arg-type");
        json_builder_add_string_value(b, c->args->name);
        json_builder_set_member_name(b, "ret-type");
        json_builder_add_string_value(b, c->returns->name);
        json_builder_set_member_name(b, "doc");
        json_builder_add_string_value(b, c->doc);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    return json_builder_get_root(b);
}
