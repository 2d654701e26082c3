/*
 * IOThreads: one thread per AioContext, looping on aio_poll(ctx, true).
 * Stopping is itself a BH, so everything scheduled before iothread_destroy()
 * runs first; after the loop ends the thread runs non-blocking iterations
 * until nothing is left to do.
 */
#include <pthread.h>
#include <unistd.h>

#include "aio-internal.h"
#include "util/iothread.h"

struct IOThread {
    char *id;
    AioContext *ctx;
    GThread *thread;
    int tid;
    bool stopping;        /* set by the stop BH in the thread itself */
    pthread_mutex_t lock; /* start handshake (pthread: visible to ThreadSanitizer) */
    pthread_cond_t cond;
    bool started;
};

static gpointer iothread_run(gpointer opaque)
{
    IOThread *iothread = opaque;

    aio_context_set_current(iothread->ctx);
    pthread_mutex_lock(&iothread->lock);
    iothread->tid = (int)gettid();
    iothread->started = true;
    pthread_cond_signal(&iothread->cond);
    pthread_mutex_unlock(&iothread->lock);

    while (!iothread->stopping) {
        aio_poll(iothread->ctx, true);
    }
    while (aio_poll(iothread->ctx, false)) {
        /* drain what the last callbacks scheduled */
    }
    aio_context_set_current(NULL);
    return NULL;
}

IOThread *iothread_new(const char *id, Error **errp)
{
    IOThread *iothread;
    GError *gerr = NULL;
    AioContext *ctx;

    if (!id || !*id) {
        error_setg(errp, "IOThread id must not be empty");
        return NULL;
    }
    ctx = aio_context_new(errp);
    if (!ctx) {
        return NULL;
    }
    iothread = g_new0(IOThread, 1);
    iothread->id = g_strdup(id);
    iothread->ctx = ctx;
    pthread_mutex_init(&iothread->lock, NULL);
    pthread_cond_init(&iothread->cond, NULL);

    iothread->thread = g_thread_try_new(id, iothread_run, iothread, &gerr);
    if (!iothread->thread) {
        error_setg(errp, "Cannot start IOThread '%s': %s", id, gerr->message);
        g_error_free(gerr);
        aio_context_unref(ctx);
        pthread_mutex_destroy(&iothread->lock);
        pthread_cond_destroy(&iothread->cond);
        g_free(iothread->id);
        g_free(iothread);
        return NULL;
    }
    pthread_mutex_lock(&iothread->lock);
    while (!iothread->started) {
        pthread_cond_wait(&iothread->cond, &iothread->lock);
    }
    pthread_mutex_unlock(&iothread->lock);
    return iothread;
}

typedef struct {
    AioContext *ctx;
    int64_t max_ns, grow, shrink;
} IOThreadPollParams;

static void iothread_set_poll_params_bh(void *opaque)
{
    IOThreadPollParams *p = opaque;
    aio_context_set_poll_params(p->ctx, p->max_ns, p->grow, p->shrink, &error_abort);
}

bool iothread_set_poll_params(IOThread *iothread, int64_t max_ns, int64_t grow,
                              int64_t shrink, Error **errp)
{
    IOThreadPollParams p = { iothread->ctx, max_ns, grow, shrink };

    if (max_ns < 0 || grow < 0 || shrink < 0) {
        error_setg(errp, "IOThread '%s': poll-max-ns, poll-grow and poll-shrink must "
                   "not be negative", iothread->id);
        return false;
    }
    /* The window is the thread's own state: change it there. */
    aio_wait_bh_oneshot(iothread->ctx, iothread_set_poll_params_bh, &p);
    return true;
}

typedef struct {
    AioContext *ctx;
    AioFdMonType type;
    bool ok;
    Error *err;
} IOThreadSetFdMon;

static void iothread_set_fdmon_bh(void *opaque)
{
    IOThreadSetFdMon *p = opaque;
    p->ok = aio_context_set_fdmon(p->ctx, p->type, &p->err);
}

bool iothread_set_fdmon(IOThread *iothread, AioFdMonType type, Error **errp)
{
    IOThreadSetFdMon p = { .ctx = iothread->ctx, .type = type };

    aio_wait_bh_oneshot(iothread->ctx, iothread_set_fdmon_bh, &p);
    if (!p.ok) {
        error_propagate(errp, p.err);
        error_prepend(errp, "IOThread '%s': ", iothread->id);
    }
    return p.ok;
}

AioContext *iothread_get_aio_context(IOThread *iothread)
{
    return iothread->ctx;
}

const char *iothread_get_id(IOThread *iothread)
{
    return iothread->id;
}

int iothread_get_thread_id(IOThread *iothread)
{
    return iothread->tid;
}

static void iothread_stop_bh(void *opaque)
{
    IOThread *iothread = opaque;
    iothread->stopping = true;
}

void iothread_destroy(IOThread *iothread)
{
    if (!iothread) {
        return;
    }
    aio_bh_schedule_oneshot(iothread->ctx, iothread_stop_bh, iothread);
    g_thread_join(iothread->thread);
    aio_context_unref(iothread->ctx);
    pthread_mutex_destroy(&iothread->lock);
    pthread_cond_destroy(&iothread->cond);
    g_free(iothread->id);
    g_free(iothread);
}
