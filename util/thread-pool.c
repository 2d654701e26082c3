/*
 * Worker thread pool, one per AioContext.
 *
 * Design: the pool's lock protects the request queue (FIFO, doubly linked so
 * that a queued element can be cancelled), the done list and the thread
 * counters. Everything else -- the free list of elements, in_flight, the
 * reference count -- belongs to the context's thread and takes no lock.
 *
 * An element moves QUEUED -> RUNNING (a worker took it) -> DONE (on the done
 * list) -> back to the free list after its callback returned. Workers hand
 * completions to the context through one reusable bottom half; a worker
 * schedules it only when no run of it is already pending, so a burst of
 * completions costs one wakeup. The bottom half takes the whole done list
 * in one locked step and runs the callbacks one at a time from a list of
 * its own, so a callback that polls the loop (nested aio_poll) still sees
 * the remaining ones.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>

#include <glib.h>

#include "util/thread-pool.h"

enum {
    ELEM_FREE,
    ELEM_QUEUED,
    ELEM_RUNNING,
    ELEM_DONE,
};

struct ThreadPoolElement {
    ThreadPool *pool;
    ThreadPoolFunc *func;
    void *arg;
    ThreadPoolCompletionFunc *cb;
    void *opaque;
    int ret;
    int state;                    /* under pool->lock once submitted */
    ThreadPoolElement *prev;      /* request queue */
    ThreadPoolElement *next;      /* request queue, done list or free list */
};

#define ELEMS_PER_CHUNK 64

typedef struct ElemChunk {
    struct ElemChunk *next;
    ThreadPoolElement elems[ELEMS_PER_CHUNK];
} ElemChunk;

struct ThreadPool {
    AioContext *ctx;
    AioBH *completion_bh;

    /* Context thread only. */
    unsigned refcnt;
    unsigned in_flight;
    ThreadPoolElement *free_list;
    ElemChunk *chunks;
    ThreadPoolElement *ready;     /* completions taken off the done list, in order */
    bool ready_bh_armed;          /* the bottom half is scheduled for `ready` */

    pthread_mutex_t lock;
    pthread_cond_t work_cond;     /* workers wait here for requests */
    pthread_cond_t exit_cond;     /* teardown waits here for workers to exit */
    ThreadPoolElement *queue_head, *queue_tail;
    unsigned queued;
    ThreadPoolElement *done_head, *done_tail;
    bool bh_scheduled;
    int cur_threads;
    int idle_threads;
    int min_threads;
    int max_threads;
    unsigned idle_ms;
    bool stopping;
};

static GMutex registry_lock;
static GHashTable *registry;      /* AioContext * -> ThreadPool * */

/* ---- worker side ------------------------------------------------------------ */

static void queue_unlink_locked(ThreadPool *pool, ThreadPoolElement *elem)
{
    if (elem->prev) {
        elem->prev->next = elem->next;
    } else {
        pool->queue_head = elem->next;
    }
    if (elem->next) {
        elem->next->prev = elem->prev;
    } else {
        pool->queue_tail = elem->prev;
    }
    elem->prev = elem->next = NULL;
    pool->queued--;
}

/* Returns true when the caller must schedule the completion bottom half. */
static bool done_push_locked(ThreadPool *pool, ThreadPoolElement *elem)
{
    elem->state = ELEM_DONE;
    elem->next = NULL;
    if (pool->done_tail) {
        pool->done_tail->next = elem;
    } else {
        pool->done_head = elem;
    }
    pool->done_tail = elem;
    if (pool->bh_scheduled) {
        return false;
    }
    pool->bh_scheduled = true;
    return true;
}

static void deadline_after_ms(struct timespec *ts, unsigned ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *worker_thread(void *opaque)
{
    ThreadPool *pool = opaque;

    pthread_mutex_lock(&pool->lock);
    while (!pool->stopping) {
        ThreadPoolElement *elem = pool->queue_head;

        if (!elem) {
            int r = 0;
            struct timespec deadline;

            pool->idle_threads++;
            if (pool->cur_threads > pool->min_threads) {
                deadline_after_ms(&deadline, pool->idle_ms);
                while (!pool->queue_head && !pool->stopping && r != ETIMEDOUT) {
                    r = pthread_cond_timedwait(&pool->work_cond, &pool->lock, &deadline);
                }
            } else {
                pthread_cond_wait(&pool->work_cond, &pool->lock);
            }
            pool->idle_threads--;
            /* Leave only when idle for a whole timeout and above the minimum. */
            if (r == ETIMEDOUT && !pool->queue_head &&
                pool->cur_threads > pool->min_threads) {
                break;
            }
            continue;
        }

        queue_unlink_locked(pool, elem);
        elem->state = ELEM_RUNNING;
        pthread_mutex_unlock(&pool->lock);

        int ret = elem->func(elem->arg);

        pthread_mutex_lock(&pool->lock);
        elem->ret = ret;
        if (done_push_locked(pool, elem)) {
            /*
             * Safe outside the lock: teardown deletes the bottom half only
             * after this thread has left (cur_threads reaches 0 below).
             */
            pthread_mutex_unlock(&pool->lock);
            aio_bh_schedule(pool->completion_bh);
            pthread_mutex_lock(&pool->lock);
        }
    }
    pool->cur_threads--;
    pthread_cond_broadcast(&pool->exit_cond);
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

/* Called with the lock held. Workers block every signal: the process's handlers run elsewhere. */
static void spawn_worker_locked(ThreadPool *pool)
{
    pthread_attr_t attr;
    pthread_t tid;
    sigset_t all, old;
    int r;

    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    r = pthread_create(&tid, &attr, worker_thread, pool);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (r == 0) {
        pool->cur_threads++;
    } else if (pool->cur_threads == 0) {
        /* The queued work waits for the next submit to try again. */
        g_warning("thread pool: cannot start a worker thread: %s", g_strerror(r));
    }
}

/* ---- context side ------------------------------------------------------------ */

/*
 * Runs completions until none is left. The shared done list is moved in one
 * locked step to `ready`, which only this thread touches; callbacks are
 * popped from there one at a time so that a nested aio_poll() in a callback
 * (which runs this function again) still finds the rest.
 */
static void run_completions(ThreadPool *pool)
{
    for (;;) {
        ThreadPoolElement *elem = pool->ready;

        if (!elem) {
            pthread_mutex_lock(&pool->lock);
            elem = pool->done_head;
            pool->done_head = pool->done_tail = NULL;
            pthread_mutex_unlock(&pool->lock);
            if (!elem) {
                return;
            }
        }
        pool->ready = elem->next;
        if (pool->ready && !pool->ready_bh_armed) {
            /* More to do: a nested aio_poll() in the callback must find it. */
            pool->ready_bh_armed = true;
            aio_bh_schedule(pool->completion_bh);
        }

        ThreadPoolCompletionFunc *cb = elem->cb;
        void *opaque = elem->opaque;
        int ret = elem->ret;

        /* The handle is dead once cb returns; recycle it before calling. */
        elem->state = ELEM_FREE;
        elem->next = pool->free_list;
        pool->free_list = elem;
        pool->in_flight--;
        cb(opaque, ret);
    }
}

static void completion_bh(void *opaque)
{
    ThreadPool *pool = opaque;

    pthread_mutex_lock(&pool->lock);
    pool->bh_scheduled = false;
    pthread_mutex_unlock(&pool->lock);
    pool->ready_bh_armed = false;
    run_completions(pool);
}

static ThreadPool *pool_new(AioContext *ctx)
{
    ThreadPool *pool = g_new0(ThreadPool, 1);
    pthread_condattr_t cattr;

    pool->ctx = ctx;
    aio_context_ref(ctx);
    pool->completion_bh = aio_bh_new(ctx, completion_bh, pool);
    pthread_mutexattr_t mattr;

    /* Held for a few instructions only: spinning briefly beats sleeping in the kernel. */
    pthread_mutexattr_init(&mattr);
    pthread_mutexattr_settype(&mattr, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&pool->lock, &mattr);
    pthread_mutexattr_destroy(&mattr);
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&pool->work_cond, &cattr);
    pthread_condattr_destroy(&cattr);
    pthread_cond_init(&pool->exit_cond, NULL);
    pool->min_threads = 0;
    pool->max_threads = THREAD_POOL_DEFAULT_MAX_THREADS;
    pool->idle_ms = THREAD_POOL_DEFAULT_IDLE_MS;
    return pool;
}

static void pool_free(ThreadPool *pool)
{
    AioContext *ctx = pool->ctx;

    /* Outstanding work finishes and its callbacks run before the pool goes. */
    while (pool->in_flight) {
        run_completions(pool);
        if (pool->in_flight) {
            aio_poll(ctx, true);
        }
    }

    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->work_cond);
    while (pool->cur_threads > 0) {
        pthread_cond_wait(&pool->exit_cond, &pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);

    aio_bh_delete(pool->completion_bh);
    pthread_cond_destroy(&pool->exit_cond);
    pthread_cond_destroy(&pool->work_cond);
    pthread_mutex_destroy(&pool->lock);
    while (pool->chunks) {
        ElemChunk *c = pool->chunks;
        pool->chunks = c->next;
        g_free(c);
    }
    g_free(pool);
    aio_context_unref(ctx);
}

ThreadPool *thread_pool_get(AioContext *ctx)
{
    ThreadPool *pool;

    g_mutex_lock(&registry_lock);
    if (!registry) {
        registry = g_hash_table_new(g_direct_hash, g_direct_equal);
    }
    pool = g_hash_table_lookup(registry, ctx);
    if (!pool) {
        pool = pool_new(ctx);
        g_hash_table_insert(registry, ctx, pool);
    }
    pool->refcnt++;
    g_mutex_unlock(&registry_lock);
    return pool;
}

void thread_pool_put(ThreadPool *pool)
{
    bool last;

    g_mutex_lock(&registry_lock);
    g_assert(pool->refcnt > 0);
    last = --pool->refcnt == 0;
    if (last) {
        g_hash_table_remove(registry, pool->ctx);
    }
    g_mutex_unlock(&registry_lock);
    if (last) {
        pool_free(pool);
    }
}

bool thread_pool_set_limits(ThreadPool *pool, int min_threads, int max_threads,
                            unsigned idle_ms, Error **errp)
{
    if (min_threads < 0 || max_threads < 1 || min_threads > max_threads) {
        error_setg(errp, "thread pool limits must satisfy 0 <= min (%d) <= max (%d), max >= 1",
                   min_threads, max_threads);
        return false;
    }
    pthread_mutex_lock(&pool->lock);
    pool->min_threads = min_threads;
    pool->max_threads = max_threads;
    pool->idle_ms = idle_ms;
    while (pool->cur_threads < min_threads) {
        int before = pool->cur_threads;
        spawn_worker_locked(pool);
        if (pool->cur_threads == before) {
            break;
        }
    }
    /* Idle workers re-evaluate their timeout and the new limits. */
    pthread_cond_broadcast(&pool->work_cond);
    pthread_mutex_unlock(&pool->lock);
    return true;
}

static ThreadPoolElement *elem_alloc(ThreadPool *pool)
{
    if (!pool->free_list) {
        ElemChunk *c = g_new0(ElemChunk, 1);

        c->next = pool->chunks;
        pool->chunks = c;
        for (int i = ELEMS_PER_CHUNK - 1; i >= 0; i--) {
            c->elems[i].next = pool->free_list;
            pool->free_list = &c->elems[i];
        }
    }
    ThreadPoolElement *elem = pool->free_list;
    pool->free_list = elem->next;
    return elem;
}

ThreadPoolElement *thread_pool_submit(ThreadPool *pool, ThreadPoolFunc *func,
                                      void *arg, ThreadPoolCompletionFunc *cb,
                                      void *opaque)
{
    ThreadPoolElement *elem = elem_alloc(pool);
    bool wake;

    elem->pool = pool;
    elem->func = func;
    elem->arg = arg;
    elem->cb = cb;
    elem->opaque = opaque;
    elem->ret = 0;
    elem->next = NULL;
    pool->in_flight++;

    pthread_mutex_lock(&pool->lock);
    elem->state = ELEM_QUEUED;
    elem->prev = pool->queue_tail;
    if (pool->queue_tail) {
        pool->queue_tail->next = elem;
    } else {
        pool->queue_head = elem;
    }
    pool->queue_tail = elem;
    pool->queued++;
    if ((int)pool->queued > pool->idle_threads && pool->cur_threads < pool->max_threads) {
        spawn_worker_locked(pool);
    }
    wake = pool->idle_threads > 0;
    pthread_mutex_unlock(&pool->lock);
    /* Outside the lock, or the woken worker would block on it at once. */
    if (wake) {
        pthread_cond_signal(&pool->work_cond);
    }
    return elem;
}

bool thread_pool_cancel(ThreadPool *pool, ThreadPoolElement *elem)
{
    bool cancelled = false, schedule = false;

    g_assert(elem->pool == pool);
    pthread_mutex_lock(&pool->lock);
    if (elem->state == ELEM_QUEUED) {
        queue_unlink_locked(pool, elem);
        elem->ret = -ECANCELED;
        schedule = done_push_locked(pool, elem);
        cancelled = true;
    }
    pthread_mutex_unlock(&pool->lock);
    if (schedule) {
        aio_bh_schedule(pool->completion_bh);
    }
    return cancelled;
}

int thread_pool_nr_threads(ThreadPool *pool)
{
    int n;

    pthread_mutex_lock(&pool->lock);
    n = pool->cur_threads;
    pthread_mutex_unlock(&pool->lock);
    return n;
}

unsigned thread_pool_in_flight(ThreadPool *pool)
{
    return pool->in_flight;
}
