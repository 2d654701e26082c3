/*
 * Block exports: the list of exports, their ids and lifetime.
 *
 * An export holds a reference to its node and pins it to one AioContext
 * (moved there at creation when the caller asks for an IOThread). The
 * list is touched in the main thread only. Deleting an export first
 * disconnects its clients through the NBD server, which waits until each
 * connection has drained its in-flight requests in the export's context.
 */
#include "export-internal.h"
#include "block/nbd.h"

#include <errno.h>
#include <string.h>

static BlockExport *exports;
static BlockExportDeletedFn *deleted_fn;
static void *deleted_opaque;

void block_export_set_deleted_notifier(BlockExportDeletedFn *fn, void *opaque)
{
    deleted_fn = fn;
    deleted_opaque = opaque;
}

BlockExport *block_export_find(const char *id)
{
    for (BlockExport *e = exports; e; e = e->next) {
        if (!strcmp(e->id, id)) {
            return e;
        }
    }
    return NULL;
}

BlockExport *block_export_find_by_name(const char *name)
{
    for (BlockExport *e = exports; e; e = e->next) {
        if (!e->shutting_down && !strcmp(e->name, name)) {
            return e;
        }
    }
    return NULL;
}

BlockExport *block_export_next(BlockExport *prev)
{
    return prev ? prev->next : exports;
}

const char *block_export_id(const BlockExport *exp)
{
    return exp->id;
}

const char *block_export_node_name(const BlockExport *exp)
{
    return exp->node_name;
}

const char *block_export_type(const BlockExport *exp)
{
    return "nbd";
}

bool block_export_shutting_down(const BlockExport *exp)
{
    return exp->shutting_down;
}

static uint32_t pow2_floor(uint64_t v)
{
    uint32_t p = 1;
    while ((uint64_t)p * 2 <= v && p < (1u << 31)) {
        p *= 2;
    }
    return p;
}

/*
 * Block size constraints for NBD_INFO_BLOCK_SIZE. The minimum is the
 * node's request alignment (smaller requests work, but cost a
 * read-modify-write); the preferred size is at least 4 KiB; the maximum is
 * what the server buffers per request, lowered to the node's max transfer.
 */
static void export_block_sizes(BlockExport *exp)
{
    BlockNodeInfo info;
    bdrv_query_node_info(exp->bs, &info);
    uint32_t min = info.request_alignment ? pow2_floor(info.request_alignment) : 1;
    if (min > 65536) {
        min = 65536;
    }
    uint64_t max = NBD_MAX_PAYLOAD;
    if (info.max_transfer && info.max_transfer < max) {
        max = info.max_transfer;
    }
    max -= max % min;
    if (max < min) {
        max = min;
    }
    uint32_t pref = MAX(min, 4096u);
    if (pref > max) {
        pref = pow2_floor(max);
        pref = MAX(pref, min);
    }
    exp->min_block = min;
    exp->pref_block = pref;
    exp->max_block = (uint32_t)max;
    bdrv_node_info_clear(&info);
}

BlockExport *nbd_export_add(const BlockExportOptions *opts, Error **errp)
{
    if (!opts->id || !*opts->id) {
        error_setg(errp, "Export id must be given");
        return NULL;
    }
    if (block_export_find(opts->id)) {
        error_setg(errp, "Block export id '%s' is already in use", opts->id);
        return NULL;
    }
    if (!opts->node_name) {
        error_setg(errp, "Export '%s' needs a node-name", opts->id);
        return NULL;
    }
    BlockDriverState *bs = bdrv_find_node(opts->node_name);
    if (!bs) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_FOUND, "Cannot find node '%s'",
                  opts->node_name);
        return NULL;
    }
    const char *name = opts->name ? opts->name : opts->node_name;
    if (strlen(name) > NBD_MAX_STRING) {
        error_setg(errp, "Export name '%.32s...' is longer than %d bytes", name,
                   NBD_MAX_STRING);
        return NULL;
    }
    if (opts->description && strlen(opts->description) > NBD_MAX_STRING) {
        error_setg(errp, "Export description is longer than %d bytes", NBD_MAX_STRING);
        return NULL;
    }
    for (BlockExport *e = exports; e; e = e->next) {
        if (!strcmp(e->name, name)) {
            error_setg(errp, "An NBD export named '%s' already exists", name);
            return NULL;
        }
    }
    if (opts->writable && bdrv_is_read_only(bs)) {
        error_setg(errp, "Cannot export read-only node '%s' as writable", opts->node_name);
        return NULL;
    }
    int64_t size = bdrv_getlength(bs);
    if (size < 0) {
        error_setg_errno(errp, (int)-size, "Cannot get the length of node '%s'",
                         opts->node_name);
        return NULL;
    }

    if (opts->ctx && opts->ctx != bdrv_get_aio_context(bs)) {
        /* Connections of another export of this node run in its current context. */
        for (BlockExport *e = exports; e; e = e->next) {
            if (e->bs == bs) {
                error_setg(errp, "Node '%s' is already exported by '%s' in another thread",
                           opts->node_name, e->id);
                return NULL;
            }
        }
    }

    BlockExport *exp = g_new0(BlockExport, 1);
    exp->bs = bs;
    export_block_sizes(exp);
    if (opts->ctx && opts->ctx != bdrv_get_aio_context(bs)) {
        if (bdrv_set_aio_context(bs, opts->ctx, errp) < 0) {
            g_free(exp);
            return NULL;
        }
    }
    bdrv_ref(bs);
    exp->id = g_strdup(opts->id);
    exp->name = g_strdup(name);
    exp->description = g_strdup(opts->description);
    exp->node_name = g_strdup(opts->node_name);
    exp->ctx = bdrv_get_aio_context(bs);
    exp->writable = opts->writable;
    exp->size = size;
    /*
     * CAN_MULTI_CONN: every connection to this export submits to the same
     * node in the same process; the block layer keeps no per-connection
     * cache, so a completed FLUSH (or FUA write) flushes the one file that
     * all connections write through, and its effect is visible to all of
     * them when the reply is sent.
     */
    exp->tx_flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
                    NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO |
                    NBD_FLAG_SEND_DF | NBD_FLAG_SEND_CACHE | NBD_FLAG_CAN_MULTI_CONN;
    if (exp->writable) {
        exp->tx_flags |= NBD_FLAG_SEND_TRIM;
    } else {
        exp->tx_flags |= NBD_FLAG_READ_ONLY;
    }

    /* Append, so that NBD_OPT_LIST shows exports in creation order. */
    BlockExport **p = &exports;
    while (*p) {
        p = &(*p)->next;
    }
    *p = exp;
    return exp;
}

static void export_free(BlockExport *exp)
{
    bdrv_unref(exp->bs);
    g_free(exp->id);
    g_free(exp->name);
    g_free(exp->description);
    g_free(exp->node_name);
    g_free(exp);
}

static void export_remove(BlockExport *exp)
{
    exp->shutting_down = true;
    nbd_server_disconnect_export(exp);
    for (BlockExport **p = &exports; *p; p = &(*p)->next) {
        if (*p == exp) {
            *p = exp->next;
            break;
        }
    }
    char *id = g_strdup(exp->id);
    export_free(exp);
    if (deleted_fn) {
        deleted_fn(id, deleted_opaque);
    }
    g_free(id);
}

int block_export_del(const char *id, bool hard, Error **errp)
{
    BlockExport *exp = block_export_find(id);
    if (!exp) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_FOUND, "Export '%s' is not found", id);
        return -ENOENT;
    }
    if (exp->shutting_down) {
        error_setg(errp, "Export '%s' is already shutting down", id);
        return -EBUSY;
    }
    if (!hard && exp->nr_clients) {
        error_setg(errp, "Export '%s' is in use by %u client%s", id, exp->nr_clients,
                   exp->nr_clients == 1 ? "" : "s");
        error_append_hint(errp, "Use mode 'hard' to disconnect the clients\n");
        return -EBUSY;
    }
    export_remove(exp);
    return 0;
}

void block_export_del_all(void)
{
    while (exports) {
        export_remove(exports);
    }
}
