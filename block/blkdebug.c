/*
 * blkdebug: a filter that passes requests to its child ("image") and fails
 * those matching an inject-error rule, for testing error paths.
 *
 * A rule matches by request type (any when absent) and by 512-byte sector
 * (any when -1); a matching request fails with -errno without reaching the
 * child. A "once" rule disables itself after its first match. Rules are
 * tried in order; the first match wins. Failed requests complete from the
 * node's bottom half, like any early completion.
 */
#include "block/block_int.h"

#include <errno.h>
#include <string.h>

typedef struct BlkdebugRule {
    int iotype;                  /* BdrvReqType, or -1 for any */
    int error;
    int64_t sector;
    bool once;
    bool used;
} BlkdebugRule;

typedef struct BDRVBlkdebugState {
    BlkdebugRule *rules;
    int nrules;
} BDRVBlkdebugState;

static int blkdebug_iotype(const char *s)
{
    static const char *const names[] = {
        [BDRV_REQ_TYPE_READ] = "read",
        [BDRV_REQ_TYPE_WRITE] = "write",
        [BDRV_REQ_TYPE_FLUSH] = "flush",
        [BDRV_REQ_TYPE_DISCARD] = "discard",
        [BDRV_REQ_TYPE_ZEROES] = "write-zeroes",
    };
    for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
        if (s && !strcmp(s, names[i])) {
            return (int)i;
        }
    }
    return -2;
}

static int blkdebug_open(BlockDriverState *bs, JsonObject *opts, Error **errp)
{
    BDRVBlkdebugState *s = bs->opaque;
    JsonArray *a = json_object_has_member(opts, "inject-error") &&
                   JSON_NODE_HOLDS_ARRAY(json_object_get_member(opts, "inject-error")) ?
                   json_object_get_array_member(opts, "inject-error") : NULL;
    int n = a ? (int)json_array_get_length(a) : 0;
    s->rules = g_new0(BlkdebugRule, MAX(n, 1));
    for (int i = 0; i < n; i++) {
        JsonNode *en = json_array_get_element(a, i);
        if (!JSON_NODE_HOLDS_OBJECT(en)) {
            error_setg(errp, "Parameter 'inject-error.%d' expects an object", i);
            g_free(s->rules);
            s->rules = NULL;
            return -EINVAL;
        }
        JsonObject *r = json_node_get_object(en);
        const char *t = bdrv_opt_str(r, "iotype", NULL);
        s->rules[i].iotype = t ? blkdebug_iotype(t) : -1;
        if (s->rules[i].iotype == -2) {
            error_setg(errp, "Parameter 'inject-error.%d.iotype' does not accept value '%s'",
                       i, t);
            g_free(s->rules);
            s->rules = NULL;
            return -EINVAL;
        }
        s->rules[i].error = (int)bdrv_opt_int(r, "errno", EIO);
        s->rules[i].sector = bdrv_opt_int(r, "sector", -1);
        s->rules[i].once = bdrv_opt_bool(r, "once", false);
    }
    s->nrules = n;
    bs->total_bytes = bdrv_getlength(bs->file);
    return bs->total_bytes < 0 ? (int)bs->total_bytes : 0;
}

static void blkdebug_close(BlockDriverState *bs)
{
    BDRVBlkdebugState *s = bs->opaque;
    g_free(s->rules);
    s->rules = NULL;
}

static int64_t blkdebug_getlength(BlockDriverState *bs)
{
    return bdrv_getlength(bs->file);
}

/* The error of the first rule req matches, or 0. */
static int blkdebug_match(BDRVBlkdebugState *s, BdrvRequest *req)
{
    for (int i = 0; i < s->nrules; i++) {
        BlkdebugRule *r = &s->rules[i];
        if (r->used || (r->iotype >= 0 && r->iotype != (int)req->type)) {
            continue;
        }
        if (r->sector >= 0) {
            int64_t first = req->offset / 512;
            int64_t end = (req->offset + req->bytes + 511) / 512;
            if (req->type == BDRV_REQ_TYPE_FLUSH || r->sector < first || r->sector >= end) {
                continue;
            }
        }
        if (r->once) {
            r->used = true;
        }
        return -r->error;
    }
    return 0;
}

static void blkdebug_child_cb(void *opaque, int ret)
{
    bdrv_req_done(opaque, ret);
}

static int blkdebug_submit(BlockDriverState *bs, BdrvRequest *req)
{
    int err = blkdebug_match(bs->opaque, req);
    if (err) {
        bdrv_req_done_later(req, err);
        return 0;
    }
    switch (req->type) {
    case BDRV_REQ_TYPE_READ:
    case BDRV_REQ_TYPE_WRITE:
        req->drv_qiov.iov = req->iov;
        req->drv_qiov.niov = req->niov;
        req->drv_qiov.nalloc = -1;
        req->drv_qiov.size = req->bytes;
        if (req->type == BDRV_REQ_TYPE_READ) {
            bdrv_aio_preadv(bs->file, req->offset, &req->drv_qiov, req->flags,
                            blkdebug_child_cb, req);
        } else {
            bdrv_aio_pwritev(bs->file, req->offset, &req->drv_qiov, req->flags,
                             blkdebug_child_cb, req);
        }
        break;
    case BDRV_REQ_TYPE_FLUSH:
        bdrv_aio_flush(bs->file, blkdebug_child_cb, req);
        break;
    case BDRV_REQ_TYPE_DISCARD:
        bdrv_aio_pdiscard(bs->file, req->offset, req->bytes, blkdebug_child_cb, req);
        break;
    case BDRV_REQ_TYPE_ZEROES:
        bdrv_aio_pwrite_zeroes(bs->file, req->offset, req->bytes, req->flags,
                               blkdebug_child_cb, req);
        break;
    }
    return 0;
}

static int blkdebug_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                 int64_t *pnum, int *status)
{
    return bdrv_block_status(bs->file, offset, bytes, pnum, status);
}

static int blkdebug_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                             const char *prealloc, Error **errp)
{
    return bdrv_truncate(bs->file, offset, exact, prealloc, errp);
}

const BlockDriver bdrv_blkdebug = {
    .format_name = "blkdebug",
    .instance_size = sizeof(BDRVBlkdebugState),
    .has_file_child = true,
    .child_key = "image",
    .bdrv_open = blkdebug_open,
    .bdrv_close = blkdebug_close,
    .bdrv_getlength = blkdebug_getlength,
    .bdrv_truncate = blkdebug_truncate,
    .bdrv_aio_preadv = blkdebug_submit,
    .bdrv_aio_pwritev = blkdebug_submit,
    .bdrv_aio_flush = blkdebug_submit,
    .bdrv_aio_pdiscard = blkdebug_submit,
    .bdrv_aio_pwrite_zeroes = blkdebug_submit,
    .bdrv_block_status = blkdebug_block_status,
};
