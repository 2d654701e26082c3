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
 *   - a plugged burst of two or more reads and writes runs at the unplug
 *     as one synchronous Linux AIO batch (linux-aio-batch.c): one
 *     io_submit() in which the kernel copies them all, in our thread, and
 *     a reap from the completion ring in our memory. Where syscalls are
 *     expensive that is 3-5x the IOPS of one preadv per request at depth
 *     32 (docs/devel/performance.md, "aio=auto"), and unlike handing the
 *     burst to aio=native it needs no eventfd, no poll and no read of the
 *     eventfd to learn what is already done.
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
 * plugged burst runs before it, so no request overtakes a flush submitted
 * after it. DISCARD and WRITE_ZEROES always take the lone path.
 */
#include <errno.h>

#include <glib.h>

#include "block/raw-aio.h"
#include "linux-aio-batch.h"

typedef struct InlineEngine {
    RawAioEngine hdr;
    AioBH *done_bh;
    RawAioEngine *flusher;             /* aio=threads of the context, from the first flush */
    LaioBatch *batch;                  /* from the first burst */
    bool no_batch;                     /* Linux AIO unusable: lone requests only */
    RawAioReq **burst;                 /* the held requests of the burst being run */
    int *burst_rets;
    unsigned burst_cap;
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

/* req is done with ret; its callback runs from done_bh. */
static void inline_finish(InlineEngine *ie, RawAioReq *req, int ret)
{
    req->engine_priv[0] = (void *)(intptr_t)ret;
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

/* The lone path: the whole request now. */
static void inline_run(InlineEngine *ie, RawAioReq *req)
{
    ie->stats.sync_requests++;
    inline_finish(ie, req, raw_aio_do_sync(req));
}

static bool inline_get_batch(InlineEngine *ie)
{
    if (!ie->batch && !ie->no_batch) {
        ie->batch = laio_batch_new();
        ie->no_batch = !ie->batch;      /* not an error: bursts take the lone path */
    }
    return ie->batch != NULL;
}

/* Runs what the plug held: alone inline, two or more as one Linux AIO batch. */
static void inline_release(InlineEngine *ie)
{
    RawAioReq *req = ie->held_head;
    unsigned n = ie->held, ran = 0;

    ie->held_head = ie->held_tail = NULL;
    ie->held = 0;
    if (n > 1 && inline_get_batch(ie)) {
        if (n > ie->burst_cap) {
            ie->burst_cap = MAX(n, 2 * ie->burst_cap);
            ie->burst = g_renew(RawAioReq *, ie->burst, ie->burst_cap);
            ie->burst_rets = g_renew(int, ie->burst_rets, ie->burst_cap);
        }
        for (unsigned i = 0; i < n; i++, req = req->next) {
            ie->burst[i] = req;
        }
        ran = laio_batch_run(ie->batch, ie->burst, ie->burst_rets, n);
        ie->stats.batches++;
        ie->stats.batched_requests += ran;
        for (unsigned i = 0; i < n; i++) {
            if (i < ran) {
                inline_finish(ie, ie->burst[i], ie->burst_rets[i]);
            } else {
                inline_run(ie, ie->burst[i]);    /* not accepted: alone, in order */
            }
        }
        return;
    }
    while (req) {
        RawAioReq *next = req->next;

        inline_run(ie, req);
        req = next;
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
    laio_batch_free(ie->batch);     /* batches end before release returns */
    g_free(ie->burst);
    g_free(ie->burst_rets);
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
