/*
 * The help printer and introspection, from the schema tables.
 */
#include "qapi/qapi.h"
#include "qapi/schema.h"
#include "qapi-test-util.h"

#include <stdio.h>

static char *capture(void (*fn)(FILE *, const char *, const char *),
                     const char *a, const char *b)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    fn(f, a, b);
    fclose(f);
    return buf;
}

static void type_help(FILE *f, const char *type, const char *unused)
{
    qapi_print_type_help(f, type);
}

static void union_help(FILE *f, const char *type, const char *tag)
{
    qapi_print_union_help(f, type, tag);
}

static void test_help_struct(void)
{
    g_autofree char *out = capture(type_help, "IothreadOptions", NULL);
    g_assert_cmpstr(out, ==,
        "IothreadOptions options:\n"
        "  aio-max-batch=<int>      - most requests an engine batches into one submission;"
        " 0 means the engine's default (default: 0, minimum: 0)\n"
        "  id=<str>                 - the thread's name, by which nodes and exports refer"
        " to it (required)\n"
        "  poll-grow=<int>          - factor by which the window grows while polling pays"
        " off; 0 means the default (2) (default: 0, minimum: 0)\n"
        "  poll-max-ns=<int>        - longest busy-polling window in nanoseconds before the"
        " thread sleeps in the kernel; 0 disables busy polling (default: 32768, minimum: 0)\n"
        "  poll-shrink=<int>        - divisor by which the window shrinks when polling does"
        " not pay off; 0 means the default (reset the window to 0) (default: 0, minimum: 0)\n");
}

static void test_help_union_variant(void)
{
    g_autofree char *out = capture(union_help, "BlockdevOptions", "null-co");
    g_assert_cmpstr(out, ==,
        "null-co options:\n"
        "  auto-read-only=<bool>    - when read-only is off, fall back to read-only if the"
        " image cannot be opened read-write (default: off)\n"
        "  cache.direct=<bool>      - bypass the host page cache (O_DIRECT) (default: off)\n"
        "  cache.no-flush=<bool>    - ignore flush requests (fast, unsafe: data can be lost"
        " on a host crash) (default: off)\n"
        "  cache.writeback=<bool>   - when off, the node is write-through: each write"
        " completes only after the data is on stable storage (a flush follows every write)."
        " This is what -drive cache=writethrough and cache=directsync select. ringblk has no"
        " guest devices, so unlike QEMU the switch lives on the node; it matters on the node"
        " that requests enter. (default: on)\n"
        "  detect-zeroes=<off|on|unmap> - detect writes of zeroes (default: off)\n"
        "  discard=<ignore|unmap>   - what to do with discard requests (default: ignore)\n"
        "  force-share=<bool>       - do not take image locks that would keep other"
        " processes from writing; needs read-only (default: off)\n"
        "  latency-ns=<int>         - delay every request by this many nanoseconds"
        " (default: 0, minimum: 0)\n"
        "  node-name=<str>          - the node's name, by which other nodes, exports and"
        " QMP commands refer to it; generated when absent\n"
        "  read-only=<bool>         - open the node read-only (default: off)\n"
        "  read-zeroes=<bool>       - fill read buffers with zeroes (off: reads leave the"
        " buffer as it was, which is faster but useless for checking data) (default: off)\n"
        "  size=<size>              - size of the device in bytes (default: 1073741824)\n");
}

static void test_help_file(void)
{
    g_autofree char *out = capture(union_help, "BlockdevOptions", "file");
    g_assert_nonnull(strstr(out, "file options:\n"));
    g_assert_nonnull(strstr(out, "\n  aio=<threads|native|io_uring|inline|auto> - AIO engine"
                                 " (default: auto)\n"));
    g_assert_nonnull(strstr(out, "\n  aio-queue-depth=<int>    - io_uring and native: the"
                                 " most requests in flight in the kernel per event loop; 0"
                                 " means the engine's default (default: 0, range: 0 to"
                                 " 32768)\n"));
    g_assert_nonnull(strstr(out, "\n  filename=<str>           - path of the image file or"
                                 " block device (required)\n"));
    g_assert_null(strstr(out, "driver="));
}

static void test_help_lists(void)
{
    g_autofree char *out = capture(union_help, "BlockdevOptions", "blkdebug");
    g_assert_nonnull(strstr(out, "\n  image=<BlockdevRef>      - the child node requests"
                                 " pass to (required)\n"));
    g_assert_nonnull(strstr(out, "\n  inject-error.N.iotype=<read|write|flush|discard|"
                                 "write-zeroes> - the kind of request that fails; absent:"
                                 " any kind\n"));
}

static void test_help_union(void)
{
    g_autofree char *out = capture(type_help, "BlockdevOptions", NULL);
    g_assert_true(g_str_has_prefix(out, "BlockdevOptions options:\n"));
    g_assert_nonnull(strstr(out, "\n  driver=<file|host_device|raw|null-co|null-aio|"
                                 "blkdebug> - the block driver (required)\n"));
    g_assert_true(g_str_has_suffix(out, "Further options depend on driver; list them with"
                                        " driver=VALUE,help\n"));
}

static void test_help_errors(void)
{
    g_autofree char *a = capture(type_help, "Nope", NULL);
    g_assert_cmpstr(a, ==, "There is no option type 'Nope'\n");
    g_autofree char *b = capture(union_help, "BlockdevOptions", "qcow2");
    g_assert_cmpstr(b, ==, "Unknown driver 'qcow2' (valid: file, host_device, raw, null-co,"
                    " null-aio, blkdebug)\n");
    g_autofree char *c = capture(union_help, "IothreadOptions", "x");
    g_assert_cmpstr(c, ==, "There is no option type 'IothreadOptions'\n");
}

static JsonObject *find_type(JsonArray *types, const char *name)
{
    for (guint i = 0; i < json_array_get_length(types); i++) {
        JsonObject *t = json_array_get_object_element(types, i);
        if (g_str_equal(json_object_get_string_member(t, "name"), name)) {
            return t;
        }
    }
    return NULL;
}

static void test_introspect(void)
{
    JsonNode *root = qapi_schema_introspect();
    JsonArray *types = json_node_get_array(root);
    g_assert_cmpint(json_array_get_length(types), ==,
                    qapi_schema_n_types + qapi_schema_n_commands);

    JsonObject *t = find_type(types, "OnOffAuto");
    g_autofree char *s1 = obj_to_json(t);
    g_assert_cmpstr(s1, ==, "{\"name\":\"OnOffAuto\",\"meta-type\":\"enum\","
                    "\"values\":[\"auto\",\"on\",\"off\"],\"doc\":\"A three-way switch: force a"
                    " feature on or off, or let ringblk decide.\\n\\nOptions of this type also take"
                    " a boolean's spellings for on and off: JSON true and false, and"
                    " yes/no/true/false in key=value text.\"}");

    t = find_type(types, "BlockdevRef");
    JsonNode *n = json_node_init_array(json_node_alloc(), json_object_get_array_member(t, "members"));
    g_autofree char *s2 = json_to_string(n, FALSE);
    json_node_unref(n);
    g_assert_cmpstr(s2, ==, "[{\"type\":\"BlockdevOptions\"},{\"type\":\"str\"}]");

    t = find_type(types, "BlockdevOptions");
    g_assert_cmpstr(json_object_get_string_member(t, "meta-type"), ==, "object");
    g_assert_cmpstr(json_object_get_string_member(t, "tag"), ==, "driver");
    JsonArray *variants = json_object_get_array_member(t, "variants");
    g_assert_cmpint(json_array_get_length(variants), ==, 6);
    JsonObject *v0 = json_array_get_object_element(variants, 0);
    g_assert_cmpstr(json_object_get_string_member(v0, "case"), ==, "file");
    g_assert_cmpstr(json_object_get_string_member(v0, "type"), ==, "BlockdevOptionsFile");

    t = find_type(types, "BlockdevOptionsFile");
    JsonArray *members = json_object_get_array_member(t, "members");
    JsonObject *depth = json_array_get_object_element(members, 3);
    g_autofree char *s3 = obj_to_json(depth);
    g_assert_cmpstr(s3, ==, "{\"name\":\"aio-queue-depth\",\"type\":\"int\",\"optional\":true,"
                    "\"default\":0,\"min\":0,\"max\":32768,\"doc\":\"io_uring and native: the"
                    " most requests in flight in the kernel per event loop; 0 means the engine's"
                    " default\"}");

    t = find_type(types, "BlkdebugInjectErrorOptionsList");
    g_autofree char *s4 = obj_to_json(t);
    g_assert_cmpstr(s4, ==, "{\"name\":\"BlkdebugInjectErrorOptionsList\",\"meta-type\":"
                    "\"array\",\"element-type\":\"BlkdebugInjectErrorOptions\",\"doc\":"
                    "\"A list of BlkdebugInjectErrorOptions.\"}");

    t = find_type(types, "blockdev-del");
    g_autofree char *s6 = obj_to_json(t);
    g_assert_cmpstr(s6, ==, "{\"name\":\"blockdev-del\",\"meta-type\":\"command\","
                    "\"arg-type\":\"q_obj_blockdev-del-arg\",\"ret-type\":\"q_empty\","
                    "\"doc\":\"Deletes a block node that was created by blockdev-add and that"
                    " nothing uses any more.\"}");
    t = find_type(types, "q_obj_blockdev-del-arg");
    g_assert_cmpint(json_array_get_length(json_object_get_array_member(t, "members")), ==, 1);
    t = find_type(types, "query-version");
    g_assert_cmpstr(json_object_get_string_member(t, "ret-type"), ==, "VersionInfo");

    t = find_type(types, "size");
    g_autofree char *s5 = obj_to_json(t);
    g_assert_cmpstr(s5, ==, "{\"name\":\"size\",\"meta-type\":\"builtin\",\"json-type\":\"int\"}");
    json_node_unref(root);
}

/* Every enum's C lookup table agrees with the schema table it came from. */
static void test_schema_tables(void)
{
    for (int i = 0; i < qapi_schema_n_types; i++) {
        const QapiType *t = &qapi_schema_types[i];
        g_assert_true(qapi_schema_lookup(t->name) == t);
        if (t->kind == QAPI_KIND_ENUM) {
            g_assert_null(t->lookup->array[t->lookup->size]);
            for (int v = 0; v < t->lookup->size; v++) {
                g_assert_cmpint(qapi_enum_parse(t->name, t->lookup->array[v]), ==, v);
                g_assert_nonnull(t->value_docs[v]);
            }
        }
        for (int m = 0; m < t->n_members; m++) {
            g_assert_nonnull(t->members[m].doc);
            g_assert_nonnull(t->members[m].type);
        }
    }
    g_assert_null(qapi_schema_lookup("NoSuchType"));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qapi/help/struct", test_help_struct);
    g_test_add_func("/qapi/help/union-variant", test_help_union_variant);
    g_test_add_func("/qapi/help/file", test_help_file);
    g_test_add_func("/qapi/help/lists", test_help_lists);
    g_test_add_func("/qapi/help/union", test_help_union);
    g_test_add_func("/qapi/help/errors", test_help_errors);
    g_test_add_func("/qapi/introspect/shape", test_introspect);
    g_test_add_func("/qapi/schema/tables", test_schema_tables);
    return g_test_run();
}
