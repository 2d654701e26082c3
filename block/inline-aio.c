/*
 * aio=inline: every request runs raw_aio_do_sync() right in submit(), in the
 * event loop's thread, and completes through a bottom half.
 *
 * For RAM-backed files that cannot take non-blocking I/O (a buffered file
 * on tmpfs, the page cache of a zram or brd device) every asynchronous
 * engine pays a hand-off to another thread for what is a memory copy:
 * io_uring punts each request to an io-wq worker, aio=threads to the pool.
 * Done inline, a 4 KiB request costs one preadv/pwritev, as fio psync does,
 * and blocks the loop for about a microsecond. aio=auto picks this engine
 * for those files only; never for a file whose I/O can wait on a device or
 * a network (the loop would stall for the whole wait).
 *
 * Completion is never inside submit() (raw-aio.h): finished requests go on
 * a FIFO list, and one BH runs their callbacks, so a burst of submissions
 * costs one BH pass. A callback may submit again; its request runs at
 * once and its callback waits for the next pass (each request carries a
 * sequence number, and a pass stops at the first one submitted after it
 * began), so a depth-1 stream returns to the loop after every request
 * instead of starving it. A callback may also nest aio_poll() waiting for
 * a request behind it on the list: the nested pass runs it, since the
 * list is popped one request at a time. Requests finish in submission
 * order. Nothing is queued in the kernel, so plugging has nothing to batch.
 *
 * FLUSH is the exception: on a zram device it writes back (and compresses)
 * every dirty page, which can take seconds, so it goes to the context's
 * aio=threads instance (its thread pool). Every request submitted before it has
 * completed already (they ran in submit()), which is all a flush must
 * cover; later requests may finish before it, as with any engine.
 */
#include <errno.h>

#include <glib.h>

#include "block/raw-aio.h"

typedef struct InlineEngine {
    RawAioEngine hdr;
    AioBH *done_bh;
    RawAioEngine *flusher;             /* aio=threads of the context, from the first flush */
    RawAioReq *done_head, *done_tail;  /* finished, callback not yet run */
    uint64_t next_seq;                 /* of the next submitted request */
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

    /* Every request but a flush is done; callbacks may be pending. */
    while (ie->done_head) {
        aio_poll(e->ctx, true);
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
        if (!ie->flusher) {
            /* The same configuration file-posix gives aio=threads: one shared instance. */
            RawAioConfig cfg = { .sq_thread_cpu = -1 };
            ie->flusher = raw_aio_engine_get(&raw_aio_threads_ops, e->ctx, &cfg, &error_abort);
        }
        return raw_aio_threads_ops.submit(ie->flusher, req);
    }
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
    return 0;
}

static void inline_plug(RawAioEngine *e)
{
}

static void inline_unplug(RawAioEngine *e)
{
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
