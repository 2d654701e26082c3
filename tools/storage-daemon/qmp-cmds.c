/*
 * The QMP commands. Arguments arrive checked against the schema
 * (qapi/block-export.json, block-core.json, objects.json, control.json)
 * with defaults filled, so handlers read members without checking types.
 * Result shapes follow QEMU's where QEMU has the command.
 */
#include <string.h>

#include "config-host.h"
#include "block/block.h"
#include "block/export.h"
#include "qapi/qapi.h"
#include "storage-daemon.h"

/* The current command's arguments as sent (blockdev-add needs them unchecked). */
static const char *qmp_raw_args;

static JsonNode *empty_return(void)
{
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(n, json_object_new());
    return n;
}

static JsonNode *object_node(JsonObject *o)
{
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(n, o);
    return n;
}

static JsonNode *array_node(JsonArray *a)
{
    JsonNode *n = json_node_new(JSON_NODE_ARRAY);
    json_node_take_array(n, a);
    return n;
}

JsonNode *sd_qmp_version(void)
{
    unsigned major = 0, minor = 0, micro = 0;
    sscanf(RINGBLK_VERSION, "%u.%u.%u", &major, &minor, &micro);
    JsonObject *v = json_object_new();
    json_object_set_int_member(v, "major", major);
    json_object_set_int_member(v, "minor", minor);
    json_object_set_int_member(v, "micro", micro);
    JsonObject *o = json_object_new();
    json_object_set_object_member(o, "qemu", v);
    json_object_set_string_member(o, "package", "ringblk " RINGBLK_VERSION);
    return object_node(o);
}

/* ---- control ---------------------------------------------------------------------------- */

static JsonNode *cmd_quit(JsonObject *args, Error **errp)
{
    sd_request_shutdown("host-qmp-quit");
    return empty_return();
}

static JsonNode *cmd_query_version(JsonObject *args, Error **errp)
{
    return sd_qmp_version();
}

static JsonNode *cmd_query_commands(JsonObject *args, Error **errp)
{
    JsonArray *a = json_array_new();
    for (int i = 0; sd_qmp_command_names[i]; i++) {
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "name", sd_qmp_command_names[i]);
        json_array_add_object_element(a, o);
    }
    return array_node(a);
}

static JsonNode *cmd_query_qmp_schema(JsonObject *args, Error **errp)
{
    return qapi_schema_introspect();
}

/* ---- nodes ------------------------------------------------------------------------------- */

static JsonNode *cmd_blockdev_add(JsonObject *args, Error **errp)
{
    return sd_blockdev_add(qmp_raw_args, errp) ? empty_return() : NULL;
}

static JsonNode *cmd_blockdev_del(JsonObject *args, Error **errp)
{
    return sd_blockdev_del(json_object_get_string_member(args, "node-name"), errp)
           ? empty_return() : NULL;
}

static JsonNode *cmd_query_named_block_nodes(JsonObject *args, Error **errp)
{
    JsonArray *a = json_array_new();
    for (BlockDriverState *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        BlockNodeInfo info = { 0 };
        bdrv_query_node_info(bs, &info);
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "node-name", info.node_name);
        json_object_set_string_member(o, "drv", info.driver);
        if (info.filename) {
            json_object_set_string_member(o, "file", info.filename);
        }
        json_object_set_boolean_member(o, "ro", info.read_only);
        JsonObject *cache = json_object_new();
        json_object_set_boolean_member(cache, "direct", info.cache_direct);
        json_object_set_boolean_member(cache, "no-flush", info.cache_no_flush);
        json_object_set_object_member(o, "cache", cache);
        JsonObject *image = json_object_new();
        json_object_set_int_member(image, "virtual-size", info.size);
        json_object_set_string_member(image, "format", info.driver);
        if (info.filename) {
            json_object_set_string_member(image, "filename", info.filename);
        }
        json_object_set_object_member(o, "image", image);
        json_object_set_int_member(o, "request-alignment", info.request_alignment);
        if (info.aio) {
            json_object_set_string_member(o, "aio", info.aio);
        }
        if (info.aio_requested) {
            json_object_set_string_member(o, "aio-requested", info.aio_requested);
        }
        /* Whether the file takes RWF_NOWAIT I/O: what aio=auto decided on. */
        if (info.nowait >= 0) {
            json_object_set_boolean_member(o, "nowait", info.nowait == 1);
        }
        if (info.driver_specific) {
            json_object_set_object_member(o, "driver-specific",
                                          json_object_ref(info.driver_specific));
        }
        json_object_set_string_member(o, "aio-context",
                                      bdrv_get_aio_context(bs) == aio_context_main()
                                      ? "main" : "iothread");
        json_array_add_object_element(a, o);
        bdrv_node_info_clear(&info);
    }
    return array_node(a);
}

static void add_histogram(JsonObject *stats, const char *key, const BlockLatencyHistogram *h)
{
    if (!h->nbins) {
        return;
    }
    JsonArray *b = json_array_new(), *bins = json_array_new();
    for (int i = 0; i < h->nbins - 1; i++) {
        json_array_add_int_element(b, (gint64)h->boundaries[i]);
    }
    for (int i = 0; i < h->nbins; i++) {
        json_array_add_int_element(bins, (gint64)h->bins[i]);
    }
    JsonObject *o = json_object_new();
    json_object_set_array_member(o, "boundaries", b);
    json_object_set_array_member(o, "bins", bins);
    json_object_set_object_member(stats, key, o);
}

static JsonNode *cmd_query_blockstats(JsonObject *args, Error **errp)
{
    /* QEMU's member prefixes; discard is "unmap", write-zeroes "zero". */
    static const char *const prefix[BLOCK_ACCT_MAX] = {
        [BLOCK_ACCT_READ] = "rd", [BLOCK_ACCT_WRITE] = "wr", [BLOCK_ACCT_FLUSH] = "flush",
        [BLOCK_ACCT_DISCARD] = "unmap", [BLOCK_ACCT_ZEROES] = "zero",
    };
    static const char *const hist[BLOCK_ACCT_MAX] = {
        [BLOCK_ACCT_READ] = "rd_latency_histogram", [BLOCK_ACCT_WRITE] = "wr_latency_histogram",
        [BLOCK_ACCT_FLUSH] = "flush_latency_histogram",
        [BLOCK_ACCT_DISCARD] = "unmap_latency_histogram",
        [BLOCK_ACCT_ZEROES] = "zap_latency_histogram",
    };
    JsonArray *a = json_array_new();
    for (BlockDriverState *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        const BlockAcctStats *st = bdrv_get_stats(bs);
        JsonObject *s = json_object_new();
        for (int t = 0; t < BLOCK_ACCT_MAX; t++) {
            char key[64];
            if (t != BLOCK_ACCT_FLUSH) {
                snprintf(key, sizeof(key), "%s_bytes", prefix[t]);
                json_object_set_int_member(s, key, (gint64)st->nr_bytes[t]);
            }
            snprintf(key, sizeof(key), "%s_operations", prefix[t]);
            json_object_set_int_member(s, key, (gint64)st->nr_ops[t]);
            snprintf(key, sizeof(key), "failed_%s_operations", prefix[t]);
            json_object_set_int_member(s, key, (gint64)st->failed_ops[t]);
            snprintf(key, sizeof(key), "invalid_%s_operations", prefix[t]);
            json_object_set_int_member(s, key, (gint64)st->invalid_ops[t]);
            snprintf(key, sizeof(key), "%s_total_time_ns", prefix[t]);
            json_object_set_int_member(s, key, (gint64)st->total_time_ns[t]);
            snprintf(key, sizeof(key), "%s_max_time_ns", prefix[t]);
            json_object_set_int_member(s, key, (gint64)st->max_time_ns[t]);
        }
        for (int t = 0; t < BLOCK_ACCT_MAX; t++) {
            add_histogram(s, hist[t], &st->latency_histogram[t]);
        }
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "node-name", bdrv_get_node_name(bs));
        json_object_set_object_member(o, "stats", s);
        json_array_add_object_element(a, o);
    }
    return array_node(a);
}

static bool set_histogram(BlockDriverState *bs, BlockAcctType type, JsonArray *list, Error **errp)
{
    guint n = json_array_get_length(list);
    uint64_t *b = g_new(uint64_t, n ? n : 1);
    for (guint i = 0; i < n; i++) {
        gint64 v = json_array_get_int_element(list, i);
        if (v <= 0) {
            error_setg(errp, "Histogram boundaries must be positive, got %" G_GINT64_FORMAT, v);
            g_free(b);
            return false;
        }
        b[i] = (uint64_t)v;
    }
    bool ok = bdrv_latency_histogram_set(bs, type, b, (int)n, errp) == 0;
    g_free(b);
    return ok;
}

static JsonNode *cmd_block_latency_histogram_set(JsonObject *args, Error **errp)
{
    static const struct { const char *key; BlockAcctType type; } per_type[] = {
        { "boundaries-read", BLOCK_ACCT_READ },
        { "boundaries-write", BLOCK_ACCT_WRITE },
        { "boundaries-zap", BLOCK_ACCT_ZEROES },
        { "boundaries-flush", BLOCK_ACCT_FLUSH },
    };
    const char *id = json_object_get_string_member(args, "id");
    BlockDriverState *bs = bdrv_find_node(id);
    if (!bs) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_FOUND, "Device '%s' not found", id);
        return NULL;
    }
    JsonArray *all = json_object_has_member(args, "boundaries")
                     ? json_object_get_array_member(args, "boundaries") : NULL;
    bool any = all != NULL;
    for (size_t i = 0; i < G_N_ELEMENTS(per_type); i++) {
        any |= json_object_has_member(args, per_type[i].key);
    }
    if (!any) {
        /* No boundaries at all: every histogram is removed. */
        return set_histogram(bs, BLOCK_ACCT_MAX, json_array_new(), errp)
               ? empty_return() : NULL;
    }
    if (all && !set_histogram(bs, BLOCK_ACCT_MAX, all, errp)) {
        return NULL;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(per_type); i++) {
        if (json_object_has_member(args, per_type[i].key) &&
            !set_histogram(bs, per_type[i].type,
                           json_object_get_array_member(args, per_type[i].key), errp)) {
            return NULL;
        }
    }
    return empty_return();
}

/* ---- objects ------------------------------------------------------------------------------ */

static JsonNode *cmd_object_add(JsonObject *args, Error **errp)
{
    return sd_object_add(args, errp) ? empty_return() : NULL;
}

static JsonNode *cmd_object_del(JsonObject *args, Error **errp)
{
    return sd_object_del(json_object_get_string_member(args, "id"), errp) ? empty_return() : NULL;
}

static JsonNode *cmd_query_iothreads(JsonObject *args, Error **errp)
{
    JsonArray *a = json_array_new();
    GPtrArray *threads = sd_iothreads();
    for (guint i = 0; i < threads->len; i++) {
        SdIOThread *t = g_ptr_array_index(threads, i);
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "id", t->id);
        json_object_set_int_member(o, "thread-id", iothread_get_thread_id(t->iothread));
        json_object_set_int_member(o, "poll-max-ns", t->poll_max_ns);
        json_object_set_int_member(o, "poll-grow", t->poll_grow);
        json_object_set_int_member(o, "poll-shrink", t->poll_shrink);
        json_object_set_int_member(o, "aio-max-batch", t->aio_max_batch);
        json_array_add_object_element(a, o);
    }
    return array_node(a);
}

/* ---- NBD and exports ------------------------------------------------------------------- */

static JsonNode *cmd_nbd_server_start(JsonObject *args, Error **errp)
{
    return sd_nbd_server_start(args, errp) ? empty_return() : NULL;
}

static JsonNode *cmd_nbd_server_stop(JsonObject *args, Error **errp)
{
    return sd_nbd_server_stop(errp) ? empty_return() : NULL;
}

static JsonNode *cmd_block_export_add(JsonObject *args, Error **errp)
{
    return sd_export_add(args, errp) ? empty_return() : NULL;
}

static JsonNode *cmd_block_export_del(JsonObject *args, Error **errp)
{
    const char *id = json_object_get_string_member(args, "id");
    if (!block_export_find(id)) {
        error_setg(errp, "Export '%s' is not found", id);
        return NULL;
    }
    bool hard = strcmp(json_object_get_string_member(args, "mode"), "hard") == 0;
    return block_export_del(id, hard, errp) == 0 ? empty_return() : NULL;
}

static JsonNode *cmd_query_block_exports(JsonObject *args, Error **errp)
{
    JsonArray *a = json_array_new();
    for (BlockExport *e = block_export_next(NULL); e; e = block_export_next(e)) {
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "type", block_export_type(e));
        json_object_set_string_member(o, "id", block_export_id(e));
        json_object_set_string_member(o, "node-name", block_export_node_name(e));
        json_object_set_boolean_member(o, "shutting-down", block_export_shutting_down(e));
        json_array_add_object_element(a, o);
    }
    return array_node(a);
}

/* ---- dispatch ----------------------------------------------------------------------------- */

typedef JsonNode *QmpCommandFn(JsonObject *args, Error **errp);


static const struct {
    const char *name;
    QmpCommandFn *fn;
} qmp_commands[] = {
    { "block-export-add", cmd_block_export_add },
    { "block-export-del", cmd_block_export_del },
    { "block-latency-histogram-set", cmd_block_latency_histogram_set },
    { "blockdev-add", cmd_blockdev_add },
    { "blockdev-del", cmd_blockdev_del },
    { "nbd-server-start", cmd_nbd_server_start },
    { "nbd-server-stop", cmd_nbd_server_stop },
    { "object-add", cmd_object_add },
    { "object-del", cmd_object_del },
    { "qmp_capabilities", NULL },   /* handled by the monitor */
    { "query-block-exports", cmd_query_block_exports },
    { "query-blockstats", cmd_query_blockstats },
    { "query-commands", cmd_query_commands },
    { "query-iothreads", cmd_query_iothreads },
    { "query-named-block-nodes", cmd_query_named_block_nodes },
    { "query-qmp-schema", cmd_query_qmp_schema },
    { "query-version", cmd_query_version },
    { "quit", cmd_quit },
};

const char *const sd_qmp_command_names[] = {
    "block-export-add", "block-export-del", "block-latency-histogram-set",
    "blockdev-add", "blockdev-del", "nbd-server-start", "nbd-server-stop",
    "object-add", "object-del", "qmp_capabilities", "query-block-exports",
    "query-blockstats", "query-commands", "query-iothreads",
    "query-named-block-nodes", "query-qmp-schema", "query-version", "quit",
    NULL,
};

JsonNode *sd_qmp_dispatch(const char *name, JsonObject *args, const char *raw_args,
                          Error **errp)
{
    qmp_raw_args = raw_args;
    for (size_t i = 0; i < G_N_ELEMENTS(qmp_commands); i++) {
        if (strcmp(qmp_commands[i].name, name) == 0 && qmp_commands[i].fn) {
            return qmp_commands[i].fn(args, errp);
        }
    }
    error_set(errp, ERROR_CLASS_COMMAND_NOT_FOUND, "The command %s has not been found", name);
    return NULL;
}
