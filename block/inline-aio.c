/*
 * aio=inline: requests run synchronously in the event loop's thread, for
 * files in RAM.
 *
 * For RAM-backed files that cannot take non-blocking I/O (a file on tmpfs,
 * a zram or brd device, buffered or O_DIRECT) every asynchronous engine
 * pays a hand-off to another thread for what is a memory copy: io_uring
 * punts each request to an io-wq worker, aio=threads to the pool. Done in
 * our thread, a 4 KiB request costs one preadv/pwritev, as fio psync does,
 * and blocks the loop for about a microsecond. aio=auto picks this engine
 * for those files only; never for a file whose I/O can wait on a device or
 * a network (the loop would stall for the whole wait).
 *
 * Two paths, chosen per burst:
 *   - a lone request (unplugged, or alone in its plugged burst) runs
 *     raw_aio_do_sync() in submit() or at the unplug;
 *   - a plugged burst of two or more reads and writes goes to the context's
 *     aio=native instance as one io_submit(). On these files Linux AIO
 *     also copies inside io_submit, in our thread, but one syscall covers
 *     the whole burst: where syscalls are expensive that is 3-5x the IOPS
 *     of one preadv per request at depth 32 (docs/devel/performance.md,
 *     "aio=auto"). native completes them through its own eventfd.
 * Linux AIO reads and writes buffered files synchronously too, so the
 * batch path needs no O_DIRECT. Without Linux AIO (not compiled in,
 * io_setup failing) every request takes the lone path.
 *
 * Completion is never inside submit() (raw-aio.h): requests run here go on
 * a FIFO list, and one BH runs their callbacks, so a burst costs one BH
 * pass. A callback may submit again; its request runs at once and its
 * callback waits for the next pass (each request carries a sequence
 * number, and a pass stops at the first one submitted after it began), so
 * a depth-1 stream returns to the loop after every request instead of
 * starving it. A callback may also nest aio_poll() waiting for a request
 * behind it on the list: the nested pass runs it, since the list is popped
 * one request at a time.
 *
 * FLUSH goes to the context's aio=threads instance: on a zram device it
 * writes back (and compresses) every dirty page, which can take seconds. A
 * plugged burst is sent before it, so no request overtakes a flush
 * submitted after it. DISCARD and WRITE_ZEROES always take the lone path.
 */
#include <errno.h>

#include <glib.h>

#include "block/raw-aio.h"

typedef struct InlineEngine {
    RawAioEngine hdr;
    AioBH *done_bh;
    RawAioEngine *flusher;             /* aio=threads of the context, from the first flush */
    RawAioEngine *batcher;             /* aio=native of the context, from the first burst */
    bool no_batcher;                   /* Linux AIO unusable: lone requests only */
    RawAioReq *done_head, *done_tail;  /* finished, callback not yet run */
    RawAioReq *held_head, *held_tail;  /* plugged reads and writes, not yet run */
    unsigned held;
    unsigned plugged;
    uint64_t next_seq;                 /* of the next request run here */
    InlineStats stats;
} InlineEngine;

static bool inline_available(Error **errp)
{
    return true;
}

static void inline_done_bh(void *opaque)
{
    InlineEngine *ie = opaque;
    uint64_t end = ie->next_seq;      /* later submissions wait for the next pass */
    RawAioReq *req;

    while ((req = ie->done_head) && req->engine_u64[0] < end) {
        ie->done_head = req->next;
        if (!ie->done_head) {
            ie->done_tail = NULL;
        } else {
            /* A callback that nests aio_poll() must find the rest runnable. */
            aio_bh_schedule(ie->done_bh);
        }
        req->cb(req->opaque, (int)(intptr_t)req->engine_priv[0]);
    }
    if (ie->done_head) {
        aio_bh_schedule(ie->done_bh);
    }
}

/* The lone path: the whole request now, its callback from done_bh. */
static void inline_run(InlineEngine *ie, RawAioReq *req)
{
    ie->stats.sync_requests++;
    req->engine_priv[0] = (void *)(intptr_t)raw_aio_do_sync(req);
    req->engine_u64[0] = ie->next_seq++;
    req->next = NULL;
    if (ie->done_tail) {
        ie->done_tail->next = req;
    } else {
        ie->done_head = req;
        aio_bh_schedule(ie->done_bh);
    }
    ie->done_tail = req;
}

static bool inline_get_batcher(InlineEngine *ie)
{
    if (!ie->batcher && !ie->no_batcher) {
        RawAioConfig cfg = { .sq_thread_cpu = -1 };   /* what file-posix gives aio=native */
        Error *err = NULL;

        ie->batcher = raw_aio_engine_get(&raw_aio_native_ops, ie->hdr.ctx, &cfg, &err);
        if (!ie->batcher) {
            error_free(err);        /* not an error: bursts take the lone path */
            ie->no_batcher = true;
        }
    }
    return ie->batcher != NULL;
}

/* Runs what the plug held: alone inline, two or more in one io_submit. */
static void inline_release(InlineEngine *ie)
{
    RawAioReq *req = ie->held_head;
    bool batch = ie->held > 1 && inline_get_batcher(ie);

    ie->held_head = ie->held_tail = NULL;
    ie->held = 0;
    if (batch) {
        ie->batcher->ops->plug(ie->batcher);
    }
    while (req) {
        RawAioReq *next = req->next;

        if (!batch || ie->batcher->ops->submit(ie->batcher, req) < 0) {
            inline_run(ie, req);
        } else {
            ie->stats.batched_requests++;
        }
        req = next;
    }
    if (batch) {
        ie->stats.batches++;
        ie->batcher->ops->unplug(ie->batcher);
    }
}

static RawAioEngine *inline_create(AioContext *ctx, const RawAioConfig *cfg, Error **errp)
{
    InlineEngine *ie = g_new0(InlineEngine, 1);

    ie->hdr.ctx = ctx;
    ie->done_bh = aio_bh_new(ctx, inline_done_bh, ie);
    return &ie->hdr;
}

static void inline_destroy(RawAioEngine *e)
{
    InlineEngine *ie = (InlineEngine *)e;

    inline_release(ie);     /* a plug left behind must not lose requests */
    /* Every lone request is done; callbacks may be pending. */
    while (ie->done_head) {
        aio_poll(e->ctx, true);
    }
    if (ie->batcher) {
        raw_aio_engine_put(ie->batcher);    /* waits for its requests */
    }
    if (ie->flusher) {
        raw_aio_engine_put(ie->flusher);    /* waits for flushes in flight */
    }
    aio_bh_delete(ie->done_bh);
    g_free(ie);
}

static int inline_add_file(RawAioEngine *e, int fd, int open_flags, Error **errp)
{
    return -1;      /* nothing to register */
}

static int inline_submit(RawAioEngine *e, RawAioReq *req)
{
    InlineEngine *ie = (InlineEngine *)e;

    if ((unsigned)req->type >= RAW_AIO_TYPE_MAX) {
        return -EINVAL;
    }
    req->done = 0;
    if (req->type == RAW_AIO_FLUSH) {
        inline_release(ie);
        if (!ie->flusher) {
            /* The same configuration file-posix gives aio=threads: one shared instance. */
            RawAioConfig cfg = { .sq_thread_cpu = -1 };
            ie->flusher = raw_aio_engine_get(&raw_aio_threads_ops, e->ctx, &cfg, &error_abort);
        }
        return raw_aio_threads_ops.submit(ie->flusher, req);
    }
    if (ie->plugged && (req->type == RAW_AIO_READ || req->type == RAW_AIO_WRITE)) {
        req->next = NULL;
        if (ie->held_tail) {
            ie->held_tail->next = req;
        } else {
            ie->held_head = req;
        }
        ie->held_tail = req;
        ie->held++;
        return 0;
    }
    inline_run(ie, req);
    return 0;
}

static void inline_plug(RawAioEngine *e)
{
    ((InlineEngine *)e)->plugged++;
}

static void inline_unplug(RawAioEngine *e)
{
    InlineEngine *ie = (InlineEngine *)e;

    g_assert(ie->plugged > 0);
    if (--ie->plugged == 0 && ie->held_head) {
        inline_release(ie);
    }
}

void raw_aio_inline_get_stats(RawAioEngine *e, InlineStats *st)
{
    g_assert(e->ops == &raw_aio_inline_ops);
    *st = ((InlineEngine *)e)->stats;
}

const RawAioOps raw_aio_inline_ops = {
    .name = "inline",
    .available = inline_available,
    .create = inline_create,
    .destroy = inline_destroy,
    .add_file = inline_add_file,
    .submit = inline_submit,
    .plug = inline_plug,
    .unplug = inline_unplug,
};
