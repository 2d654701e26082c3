/*
 * aio=threads: every request runs raw_aio_do_sync() in a worker of the
 * context's thread pool (util/thread-pool.c).
 *
 * The instance is a thin wrapper holding a pool reference and a count of
 * requests in flight, which destroy() waits for. All of it is touched only
 * in the context's thread: submit there, completions there (the pool
 * delivers them through its bottom half). The pool's queue is FIFO and
 * unbounded, so nothing is ever dropped or overtaken by a later request;
 * plugging has nothing to batch. The request's own private words carry the
 * pool handle, so there is no per-request allocation.
 */
#include <errno.h>

#include <glib.h>

#include "block/raw-aio.h"
#include "util/thread-pool.h"

typedef struct ThreadsEngine {
    RawAioEngine hdr;
    ThreadPool *pool;
    unsigned in_flight;
} ThreadsEngine;

static bool threads_available(Error **errp)
{
    return true;
}

static RawAioEngine *threads_create(AioContext *ctx, const RawAioConfig *cfg, Error **errp)
{
    ThreadsEngine *t = g_new0(ThreadsEngine, 1);

    t->pool = thread_pool_get(ctx);
    t->hdr.ctx = ctx;
    return &t->hdr;
}

static void threads_destroy(RawAioEngine *e)
{
    ThreadsEngine *t = (ThreadsEngine *)e;

    /* Callbacks of requests still in the pool run before we go. */
    while (t->in_flight) {
        aio_poll(e->ctx, true);
    }
    thread_pool_put(t->pool);
    g_free(t);
}

static int threads_add_file(RawAioEngine *e, int fd, int open_flags, Error **errp)
{
    return -1;      /* the pool needs no registration */
}

static int threads_work(void *arg)
{
    return raw_aio_do_sync(arg);
}

static void threads_complete(void *opaque, int ret)
{
    RawAioReq *req = opaque;
    ThreadsEngine *t = req->engine_priv[1];

    t->in_flight--;
    req->cb(req->opaque, ret);
}

static int threads_submit(RawAioEngine *e, RawAioReq *req)
{
    ThreadsEngine *t = (ThreadsEngine *)e;

    if ((unsigned)req->type >= RAW_AIO_TYPE_MAX) {
        return -EINVAL;
    }
    req->done = 0;
    req->engine_priv[1] = t;
    t->in_flight++;
    req->engine_priv[0] = thread_pool_submit(t->pool, threads_work, req,
                                             threads_complete, req);
    return 0;
}

static void threads_plug(RawAioEngine *e)
{
}

static void threads_unplug(RawAioEngine *e)
{
}

const RawAioOps raw_aio_threads_ops = {
    .name = "threads",
    .available = threads_available,
    .create = threads_create,
    .destroy = threads_destroy,
    .add_file = threads_add_file,
    .submit = threads_submit,
    .plug = threads_plug,
    .unplug = threads_unplug,
};
