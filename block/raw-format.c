/*
 * The raw format: the guest-visible data is the child's, optionally a slice
 * of it (options offset and size).
 *
 * Requests pass straight through to the child shifted by offset; the raw
 * node's own request alignment is 1, so alignment and bounce buffering
 * happen once, at the protocol node that knows its limits. Without a
 * slice the node is a pass-through: the request path sends requests to
 * the child directly and the node's statistics are its child's.
 */
#include "block/block_int.h"

#include <errno.h>
#include <inttypes.h>

typedef struct BDRVRawState {
    int64_t offset;
    int64_t size;                /* -1: to the end of the child */
} BDRVRawState;

static int raw_fmt_open(BlockDriverState *bs, JsonObject *opts, Error **errp)
{
    BDRVRawState *s = bs->opaque;
    s->offset = bdrv_opt_int(opts, "offset", 0);
    s->size = bdrv_opt_has(opts, "size") ? bdrv_opt_int(opts, "size", -1) : -1;
    int64_t child_len = bdrv_getlength(bs->file);
    if (child_len < 0) {
        error_setg_errno(errp, (int)-child_len, "Could not get the size of the file");
        return (int)child_len;
    }
    if (s->offset < 0) {
        error_setg(errp, "offset cannot be negative");
        return -EINVAL;
    }
    if (bdrv_opt_has(opts, "size") && s->size < 0) {
        error_setg(errp, "size cannot be negative");
        return -EINVAL;
    }
    if (s->offset > child_len ||
        (s->size >= 0 && s->size > child_len - s->offset)) {
        error_setg(errp, "The sum of offset (%" PRId64 ") and size (%" PRId64 ") has to be "
                   "smaller or equal to the  actual size of the containing file (%" PRId64 ")",
                   s->offset, s->size >= 0 ? s->size : 0, child_len);
        return -EINVAL;
    }
    bs->total_bytes = s->size >= 0 ? s->size : child_len - s->offset;
    return 0;
}

static int64_t raw_fmt_getlength(BlockDriverState *bs)
{
    BDRVRawState *s = bs->opaque;
    if (s->size >= 0) {
        return s->size;
    }
    int64_t len = bdrv_getlength(bs->file);
    if (len < 0) {
        return len;
    }
    return MAX(len - s->offset, 0);
}

static void raw_fmt_child_cb(void *opaque, int ret)
{
    bdrv_req_done(opaque, ret);
}

static IOVector *raw_fmt_view(BdrvRequest *req)
{
    req->drv_qiov.iov = req->iov;
    req->drv_qiov.niov = req->niov;
    req->drv_qiov.nalloc = -1;       /* a view: nothing to free */
    req->drv_qiov.size = req->bytes;
    return &req->drv_qiov;
}

static int raw_fmt_preadv(BlockDriverState *bs, BdrvRequest *req)
{
    BDRVRawState *s = bs->opaque;
    bdrv_aio_preadv(bs->file, req->offset + s->offset, raw_fmt_view(req), req->flags,
                    raw_fmt_child_cb, req);
    return 0;
}

static int raw_fmt_pwritev(BlockDriverState *bs, BdrvRequest *req)
{
    BDRVRawState *s = bs->opaque;
    bdrv_aio_pwritev(bs->file, req->offset + s->offset, raw_fmt_view(req), req->flags,
                     raw_fmt_child_cb, req);
    return 0;
}

static int raw_fmt_flush(BlockDriverState *bs, BdrvRequest *req)
{
    bdrv_aio_flush(bs->file, raw_fmt_child_cb, req);
    return 0;
}

static int raw_fmt_pdiscard(BlockDriverState *bs, BdrvRequest *req)
{
    BDRVRawState *s = bs->opaque;
    bdrv_aio_pdiscard(bs->file, req->offset + s->offset, req->bytes, raw_fmt_child_cb, req);
    return 0;
}

static int raw_fmt_pwrite_zeroes(BlockDriverState *bs, BdrvRequest *req)
{
    BDRVRawState *s = bs->opaque;
    bdrv_aio_pwrite_zeroes(bs->file, req->offset + s->offset, req->bytes, req->flags,
                           raw_fmt_child_cb, req);
    return 0;
}

static int raw_fmt_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                int64_t *pnum, int *status)
{
    BDRVRawState *s = bs->opaque;
    return bdrv_block_status(bs->file, offset + s->offset, bytes, pnum, status);
}

static int raw_fmt_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                            const char *prealloc, Error **errp)
{
    BDRVRawState *s = bs->opaque;
    if (s->size >= 0) {
        error_setg(errp, "Cannot resize fixed-size raw disks");
        return -ENOTSUP;
    }
    return bdrv_truncate(bs->file, offset + s->offset, exact, prealloc, errp);
}

static void raw_fmt_query_info(BlockDriverState *bs, BlockNodeInfo *info)
{
    BDRVRawState *s = bs->opaque;
    if (s->offset || s->size >= 0) {
        /* Added to the file's facts (alignment-source...), which stay true of the slice. */
        if (!info->driver_specific) {
            info->driver_specific = json_object_new();
        }
        JsonObject *o = info->driver_specific;
        json_object_set_int_member(o, "offset", s->offset);
        if (s->size >= 0) {
            json_object_set_int_member(o, "size", s->size);
        }
    }
}

static int raw_fmt_reopen_prepare(BDRVReopenState *state, Error **errp)
{
    /* offset and size cannot change; read-only and cache.* are generic. */
    JsonObject *c = state->changes;
    BDRVRawState *s = state->bs->opaque;
    if (bdrv_opt_has(c, "offset") && bdrv_opt_int(c, "offset", 0) != s->offset) {
        error_setg(errp, "Cannot change the option 'offset'");
        return -EINVAL;
    }
    if (bdrv_opt_has(c, "size") && bdrv_opt_int(c, "size", -1) != s->size) {
        error_setg(errp, "Cannot change the option 'size'");
        return -EINVAL;
    }
    return 0;
}

static bool raw_fmt_is_passthrough(BlockDriverState *bs)
{
    BDRVRawState *s = bs->opaque;
    return s->offset == 0 && s->size < 0;
}

const BlockDriver bdrv_raw = {
    .format_name = "raw",
    .instance_size = sizeof(BDRVRawState),
    .has_file_child = true,
    .bdrv_open = raw_fmt_open,
    .bdrv_getlength = raw_fmt_getlength,
    .bdrv_truncate = raw_fmt_truncate,
    .bdrv_aio_preadv = raw_fmt_preadv,
    .bdrv_aio_pwritev = raw_fmt_pwritev,
    .bdrv_aio_flush = raw_fmt_flush,
    .bdrv_aio_pdiscard = raw_fmt_pdiscard,
    .bdrv_aio_pwrite_zeroes = raw_fmt_pwrite_zeroes,
    .bdrv_block_status = raw_fmt_block_status,
    .bdrv_reopen_prepare = raw_fmt_reopen_prepare,
    .bdrv_query_info = raw_fmt_query_info,
    .bdrv_is_passthrough = raw_fmt_is_passthrough,
};
