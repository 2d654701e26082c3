/*
 * The daemon's objects: block nodes added by --blockdev/blockdev-add, I/O
 * threads, the NBD server and its exports.
 *
 * The command line and QMP both call these functions with option trees
 * already checked against the schema, so both accept exactly the same
 * options. Each function either succeeds or leaves nothing behind.
 */
#include <string.h>

#include "block/block.h"
#include "block/export.h"
#include "qapi/qapi.h"
#include "storage-daemon.h"

/* Nodes the user created (we hold their reference); children are not listed. */
static GPtrArray *sd_nodes;
static GPtrArray *sd_threads;

static GPtrArray *nodes(void)
{
    if (!sd_nodes) {
        sd_nodes = g_ptr_array_new();
    }
    return sd_nodes;
}

GPtrArray *sd_iothreads(void)
{
    if (!sd_threads) {
        sd_threads = g_ptr_array_new();
    }
    return sd_threads;
}

SdIOThread *sd_iothread_find(const char *id)
{
    GPtrArray *a = sd_iothreads();
    for (guint i = 0; i < a->len; i++) {
        SdIOThread *t = g_ptr_array_index(a, i);
        if (strcmp(t->id, id) == 0) {
            return t;
        }
    }
    return NULL;
}

/* ---- block nodes --------------------------------------------------------------------- */

/*
 * text is --blockdev's argument or blockdev-add's arguments as JSON text:
 * bdrv_open_string() must see what the user gave, not a tree with the
 * schema's defaults filled in, since children inherit only options their
 * parent was explicitly given.
 */
bool sd_blockdev_add(const char *text, Error **errp)
{
    bool from_keyval;
    g_autofree char *with_driver = NULL;
    JsonObject *opts = qapi_parse_options(text, "driver", &from_keyval, errp);
    if (!opts) {
        return false;
    }
    JsonNode *nn = json_object_get_member(opts, "node-name");
    g_autofree char *name = nn && JSON_NODE_HOLDS_VALUE(nn) &&
                            json_node_get_value_type(nn) == G_TYPE_STRING
                            ? g_strdup(json_node_get_string(nn)) : NULL;
    json_object_unref(opts);

    if (from_keyval) {
        /* QEMU's --blockdev has "driver" as implied key: "file,filename=x". */
        const char *comma = strchr(text, ',');
        size_t first = comma ? (size_t)(comma - text) : strlen(text);
        if (!memchr(text, '=', first)) {
            text = with_driver = g_strconcat("driver=", text, NULL);
        }
    }
    if (!name) {
        /* QEMU's rule: a node the user cannot name cannot be used or deleted. */
        error_setg(errp, "'node-name' must be specified for the root node");
        return false;
    }
    if (bdrv_find_node(name)) {
        error_setg(errp, "Duplicate nodes with node-name='%s'", name);
        return false;
    }
    BlockDriverState *bs = bdrv_open_string(text, errp);
    if (!bs) {
        return false;
    }
    g_ptr_array_add(nodes(), bs);
    return true;
}

static bool node_exported(BlockDriverState *bs)
{
    for (BlockExport *e = block_export_next(NULL); e; e = block_export_next(e)) {
        BlockDriverState *ebs = bdrv_find_node(block_export_node_name(e));
        if (ebs == bs) {
            return true;
        }
    }
    return false;
}

bool sd_blockdev_del(const char *node_name, Error **errp)
{
    BlockDriverState *bs = bdrv_find_node(node_name);
    if (!bs) {
        error_setg(errp, "Failed to find node with node-name='%s'", node_name);
        return false;
    }
    if (!g_ptr_array_remove(nodes(), bs)) {
        error_setg(errp, "Node %s is not owned by the monitor", node_name);
        return false;
    }
    if (node_exported(bs)) {
        g_ptr_array_add(nodes(), bs);
        error_setg(errp, "Node %s is in use by an export", node_name);
        return false;
    }
    bdrv_unref(bs);
    return true;
}

/* ---- I/O threads ---------------------------------------------------------------------- */

bool sd_object_add(JsonObject *opts, Error **errp)
{
    const char *type = json_object_get_string_member(opts, "qom-type");
    const char *id = json_object_get_string_member(opts, "id");

    if (strcmp(type, "iothread") != 0) {
        error_setg(errp, "Invalid object type '%s'", type);
        return false;
    }
    if (sd_iothread_find(id)) {
        error_setg(errp, "attempt to add duplicate property '%s' to object (type 'container')", id);
        return false;
    }
    SdIOThread *t = g_new0(SdIOThread, 1);
    t->poll_max_ns = json_object_get_int_member(opts, "poll-max-ns");
    t->poll_grow = json_object_get_int_member(opts, "poll-grow");
    t->poll_shrink = json_object_get_int_member(opts, "poll-shrink");
    t->aio_max_batch = json_object_get_int_member(opts, "aio-max-batch");
    t->iothread = iothread_new(id, errp);
    if (!t->iothread) {
        g_free(t);
        return false;
    }
    if (!iothread_set_poll_params(t->iothread, t->poll_max_ns, t->poll_grow,
                                  t->poll_shrink, errp)) {
        iothread_destroy(t->iothread);
        g_free(t);
        return false;
    }
    t->id = g_strdup(id);
    g_ptr_array_add(sd_iothreads(), t);
    return true;
}

static bool iothread_in_use(SdIOThread *t)
{
    AioContext *ctx = iothread_get_aio_context(t->iothread);
    for (BlockDriverState *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        if (bdrv_get_aio_context(bs) == ctx) {
            return true;
        }
    }
    return false;
}

static void iothread_free(SdIOThread *t)
{
    iothread_destroy(t->iothread);
    g_free(t->id);
    g_free(t);
}

bool sd_object_del(const char *id, Error **errp)
{
    SdIOThread *t = sd_iothread_find(id);
    if (!t) {
        error_setg(errp, "object '%s' not found", id);
        return false;
    }
    if (iothread_in_use(t)) {
        error_setg(errp, "object '%s' is in use, can not be deleted", id);
        return false;
    }
    g_ptr_array_remove(sd_iothreads(), t);
    iothread_free(t);
    return true;
}

/* ---- NBD server and exports ----------------------------------------------------------- */

bool sd_nbd_server_start(JsonObject *opts, Error **errp)
{
    JsonObject *addr = json_object_get_object_member(opts, "addr");
    const char *type = json_object_get_string_member(addr, "type");
    NbdServerAddr a = { 0 };

    if (nbd_server_running()) {
        error_setg(errp, "NBD server already running");
        return false;
    }
    if (strcmp(type, "unix") == 0) {
        a.type = NBD_ADDR_UNIX;
        a.path = (char *)json_object_get_string_member(addr, "path");
    } else {
        a.type = NBD_ADDR_INET;
        a.host = (char *)json_object_get_string_member(addr, "host");
        a.port = (char *)json_object_get_string_member(addr, "port");
    }
    return nbd_server_start(&a, (unsigned)json_object_get_int_member(opts, "max-connections"),
                            errp);
}

bool sd_nbd_server_stop(Error **errp)
{
    if (!nbd_server_running()) {
        error_setg(errp, "NBD server not running");
        return false;
    }
    nbd_server_stop();
    return true;
}

static const char *opt_str(JsonObject *o, const char *key)
{
    return json_object_has_member(o, key) ? json_object_get_string_member(o, key) : NULL;
}

bool sd_export_add(JsonObject *opts, Error **errp)
{
    BlockExportOptions eo = {
        .id = json_object_get_string_member(opts, "id"),
        .node_name = json_object_get_string_member(opts, "node-name"),
        .name = opt_str(opts, "name"),
        .description = opt_str(opts, "description"),
        .writable = json_object_get_boolean_member(opts, "writable"),
        .allocation_depth = json_object_get_boolean_member(opts, "allocation-depth"),
    };
    const char *iothread = opt_str(opts, "iothread");

    if (block_export_find(eo.id)) {
        error_setg(errp, "Block export id '%s' is already in use", eo.id);
        return false;
    }
    BlockDriverState *bs = bdrv_find_node(eo.node_name);
    if (!bs) {
        error_setg(errp, "Cannot find device=\"\" nor node-name=\"%s\"", eo.node_name);
        return false;
    }
    if (eo.writable && bdrv_is_read_only(bs)) {
        error_setg(errp, "Cannot export read-only node '%s' as writable", eo.node_name);
        return false;
    }
    if (iothread) {
        SdIOThread *t = sd_iothread_find(iothread);
        if (!t) {
            error_setg(errp, "iothread \"%s\" not found", iothread);
            return false;
        }
        eo.ctx = iothread_get_aio_context(t->iothread);
    }
    return nbd_export_add(&eo, errp) != NULL;
}

/* ---- shutdown ----------------------------------------------------------------------- */

void sd_objects_cleanup(void)
{
    /* Clients first: their requests drain before the nodes are flushed and closed. */
    block_export_del_all();
    if (nbd_server_running()) {
        nbd_server_stop();
    }
    GPtrArray *n = nodes();
    while (n->len) {
        BlockDriverState *bs = g_ptr_array_steal_index(n, n->len - 1);
        /* Back to the main loop before the threads go away. */
        if (bdrv_get_aio_context(bs) != aio_context_main()) {
            bdrv_set_aio_context(bs, aio_context_main(), NULL);
        }
        bdrv_unref(bs);
    }
    GPtrArray *t = sd_iothreads();
    while (t->len) {
        iothread_free(g_ptr_array_steal_index(t, t->len - 1));
    }
}
