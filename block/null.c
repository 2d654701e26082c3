/*
 * null-co and null-aio: protocol drivers that store nothing, for measuring
 * the block layer's own overhead.
 *
 * Options: size (bytes, default 1 GiB), read-zeroes (reads fill the buffer
 * with zeroes; off: the buffer is left untouched), latency-ns (each request
 * completes that long after submission).
 *
 * null-co is as cheap as the layer allows: a request is queued on the
 * node's deferred-completion list and one bottom half completes every
 * request queued since its last run (no syscall, no allocation).
 * null-aio completes like a real AIO engine: through an eventfd that the
 * AioContext watches (one write and one read per batch), so it also
 * measures the event loop's fd path.
 * With latency-ns, both keep a FIFO of requests (same latency, so deadlines
 * are in submission order) and one timer for its head.
 */
#include "block/block_int.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

typedef struct BDRVNullState {
    int64_t length;
    int64_t latency_ns;
    bool read_zeroes;
    bool aio;                    /* null-aio */
    /* null-aio: completion notifier and its queue */
    EventNotifier e;
    bool e_ok;
    BdrvRequest *q_head, *q_tail;
    /* latency-ns: requests waiting for their deadline */
    AioTimer timer;
    BdrvRequest *lat_head, *lat_tail;
} BDRVNullState;

static void null_aio_complete(EventNotifier *e)
{
    BDRVNullState *s = (BDRVNullState *)((char *)e - offsetof(BDRVNullState, e));
    event_notifier_test_and_clear(e);
    BdrvRequest *req = s->q_head;
    s->q_head = s->q_tail = NULL;
    while (req) {
        BdrvRequest *next = req->drv_next;
        bdrv_req_done(req, 0);
        req = next;
    }
}

/* Completes req "now" in the driver's style. */
static void null_complete(BDRVNullState *s, BdrvRequest *req)
{
    if (!s->aio) {
        bdrv_req_done_later(req, 0);
        return;
    }
    req->drv_next = NULL;
    if (s->q_tail) {
        s->q_tail->drv_next = req;
    } else {
        s->q_head = req;
        event_notifier_set(&s->e);
    }
    s->q_tail = req;
}

static void null_timer_cb(void *opaque)
{
    BDRVNullState *s = opaque;
    int64_t now = aio_clock_get_ns(AIO_CLOCK_MONOTONIC);
    while (s->lat_head && s->lat_head->drv_u64 <= now) {
        BdrvRequest *req = s->lat_head;
        s->lat_head = req->drv_next;
        if (!s->lat_head) {
            s->lat_tail = NULL;
        }
        null_complete(s, req);
    }
    if (s->lat_head) {
        aio_timer_mod_ns(&s->timer, s->lat_head->drv_u64);
    }
}

static int null_submit(BlockDriverState *bs, BdrvRequest *req)
{
    BDRVNullState *s = bs->opaque;
    if (req->type == BDRV_REQ_TYPE_READ && s->read_zeroes) {
        iov_memset(req->iov, req->niov, 0, 0, req->bytes);
    }
    if (!s->latency_ns) {
        null_complete(s, req);
        return 0;
    }
    req->drv_u64 = aio_clock_get_ns(AIO_CLOCK_MONOTONIC) + s->latency_ns;
    req->drv_next = NULL;
    if (s->lat_tail) {
        s->lat_tail->drv_next = req;
    } else {
        s->lat_head = req;
        aio_timer_mod_ns(&s->timer, req->drv_u64);
    }
    s->lat_tail = req;
    return 0;
}

static int null_attach(BlockDriverState *bs, AioContext *ctx, Error **errp)
{
    BDRVNullState *s = bs->opaque;
    aio_timer_init(&s->timer, ctx, AIO_CLOCK_MONOTONIC, null_timer_cb, s);
    if (s->aio) {
        aio_set_event_notifier(ctx, &s->e, false, null_aio_complete, NULL, NULL);
    }
    return 0;
}

static void null_detach(BlockDriverState *bs)
{
    BDRVNullState *s = bs->opaque;
    aio_timer_del(&s->timer);
    if (s->aio) {
        aio_set_event_notifier(bs->ctx, &s->e, false, NULL, NULL, NULL);
    }
}

static int null_open_common(BlockDriverState *bs, JsonObject *opts, bool aio, Error **errp)
{
    BDRVNullState *s = bs->opaque;
    s->length = bdrv_opt_int(opts, "size", 1 << 30);
    s->latency_ns = bdrv_opt_int(opts, "latency-ns", 0);
    s->read_zeroes = bdrv_opt_bool(opts, "read-zeroes", false);
    s->aio = aio;
    if (s->length < 0) {
        error_setg(errp, "Parameter 'size' must be non-negative");
        return -EINVAL;
    }
    if (s->latency_ns < 0) {
        error_setg(errp, "latency-ns is invalid");
        return -EINVAL;
    }
    if (aio) {
        int ret = event_notifier_init(&s->e, false);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Failed to create the completion notifier");
            return ret;
        }
        s->e_ok = true;
    }
    bs->total_bytes = s->length;
    return null_attach(bs, bs->ctx, errp);
}

static int null_co_open(BlockDriverState *bs, JsonObject *opts, Error **errp)
{
    return null_open_common(bs, opts, false, errp);
}

static int null_aio_open(BlockDriverState *bs, JsonObject *opts, Error **errp)
{
    return null_open_common(bs, opts, true, errp);
}

static void null_close(BlockDriverState *bs)
{
    BDRVNullState *s = bs->opaque;
    null_detach(bs);
    if (s->e_ok) {
        event_notifier_cleanup(&s->e);
    }
}

static int64_t null_getlength(BlockDriverState *bs)
{
    BDRVNullState *s = bs->opaque;
    return s->length;
}

static int null_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes,
                             int64_t *pnum, int *status)
{
    BDRVNullState *s = bs->opaque;
    *pnum = bytes;
    *status = s->read_zeroes ? (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO) : BDRV_BLOCK_DATA;
    return 0;
}

static void null_query_info(BlockDriverState *bs, BlockNodeInfo *info)
{
    BDRVNullState *s = bs->opaque;
    JsonObject *o = json_object_new();
    json_object_set_boolean_member(o, "read-zeroes", s->read_zeroes);
    json_object_set_int_member(o, "latency-ns", s->latency_ns);
    if (info->driver_specific) {
        json_object_unref(info->driver_specific);
    }
    info->driver_specific = o;
}

#define NULL_DRIVER_OPS                                  \
    .instance_size = sizeof(BDRVNullState),             \
    .is_protocol = true,                                \
    .bdrv_close = null_close,                           \
    .bdrv_getlength = null_getlength,                   \
    .bdrv_aio_preadv = null_submit,                     \
    .bdrv_aio_pwritev = null_submit,                    \
    .bdrv_aio_flush = null_submit,                      \
    .bdrv_aio_pdiscard = null_submit,                   \
    .bdrv_aio_pwrite_zeroes = null_submit,              \
    .bdrv_block_status = null_block_status,             \
    .bdrv_attach_aio_context = null_attach,             \
    .bdrv_detach_aio_context = null_detach,             \
    .bdrv_query_info = null_query_info

const BlockDriver bdrv_null_co = {
    .format_name = "null-co",
    .bdrv_open = null_co_open,
    NULL_DRIVER_OPS,
};

const BlockDriver bdrv_null_aio = {
    .format_name = "null-aio",
    .bdrv_open = null_aio_open,
    NULL_DRIVER_OPS,
};
