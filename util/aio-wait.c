/*
 * Cross-thread waiting: AIO_WAIT_WHILE() and aio_wait_bh_oneshot().
 *
 * A thread waiting for a condition owned by another context's thread polls
 * its own context and must be woken when that condition may have changed.
 * Waiters register their context here; aio_wait_kick() notifies every
 * registered context. The registry is a small mutex-protected array, but
 * aio_wait_kick() first reads an atomic count so the common no-waiter case
 * costs one load.
 */
#include <pthread.h>

#include "aio-internal.h"

/* pthread (not GMutex) so ThreadSanitizer sees the synchronisation. */
static pthread_mutex_t waiters_lock = PTHREAD_MUTEX_INITIALIZER;
static GPtrArray *waiters;        /* AioContext *, one entry per active wait */
static int num_waiters;           /* atomic */

void aio_wait_begin(void)
{
    AioContext *ctx = aio_context_current();

    aio_context_ref(ctx);
    pthread_mutex_lock(&waiters_lock);
    if (!waiters) {
        waiters = g_ptr_array_new();
    }
    g_ptr_array_add(waiters, ctx);
    /* Seq-cst with the kicker's fence: a kick after our cond check sees us. */
    __atomic_fetch_add(&num_waiters, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&waiters_lock);
}

void aio_wait_end(void)
{
    AioContext *ctx = aio_context_current();

    pthread_mutex_lock(&waiters_lock);
    g_ptr_array_remove_fast(waiters, ctx);
    __atomic_fetch_sub(&num_waiters, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&waiters_lock);
    aio_context_unref(ctx);
}

void aio_wait_kick(void)
{
    /* Order the caller's condition change before reading num_waiters. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (!__atomic_load_n(&num_waiters, __ATOMIC_RELAXED)) {
        return;
    }
    pthread_mutex_lock(&waiters_lock);
    for (guint i = 0; i < waiters->len; i++) {
        aio_notify(g_ptr_array_index(waiters, i));
    }
    pthread_mutex_unlock(&waiters_lock);
}

bool aio_wait_poll_other(AioContext *ctx)
{
    return aio_poll(aio_context_current(), true);
}

typedef struct {
    AioBHFunc *cb;
    void *opaque;
    bool done;        /* atomic */
} AioWaitBHData;

static void aio_wait_bh(void *opaque)
{
    AioWaitBHData *data = opaque;

    data->cb(data->opaque);
    __atomic_store_n(&data->done, true, __ATOMIC_RELEASE);
    aio_wait_kick();
}

void aio_wait_bh_oneshot(AioContext *ctx, AioBHFunc *cb, void *opaque)
{
    AioWaitBHData data = { .cb = cb, .opaque = opaque };

    if (aio_context_in_thread(ctx)) {
        cb(opaque);
        return;
    }
    aio_bh_schedule_oneshot(ctx, aio_wait_bh, &data);
    AIO_WAIT_WHILE(ctx, !__atomic_load_n(&data.done, __ATOMIC_ACQUIRE));
}
