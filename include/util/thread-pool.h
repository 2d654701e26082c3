/*
 * A pool of worker threads per AioContext, for work that can only block
 * (fallocate, ioctls, preadv on files that cannot take non-blocking I/O).
 *
 * The work function runs in a worker thread; its completion callback runs
 * in the AioContext the pool belongs to, i.e. in the thread that submitted.
 * Submission, cancellation and get/put happen in that context's thread.
 *
 * Lifetime: thread_pool_get() returns the context's pool (created on first
 * use) with a reference taken; thread_pool_put() drops it. The last put
 * waits for outstanding work (running the context's loop so that their
 * callbacks run), stops the workers and frees the pool. While a pool exists
 * it holds a reference on its AioContext, so a context is never freed with a
 * pool still bound to it.
 *
 * Requests cost no malloc: elements come from a per-pool free list that
 * grows in chunks and is reused; the pool's queue lock is the only lock on
 * the path. Workers are started on demand up to max_threads (default 64)
 * and exit after idling for the idle timeout (default 10 s) while more than
 * min_threads (default 0) are alive.
 */
#ifndef UTIL_THREAD_POOL_H
#define UTIL_THREAD_POOL_H

#include <stdbool.h>

#include "block/aio.h"

typedef struct ThreadPool ThreadPool;
typedef struct ThreadPoolElement ThreadPoolElement;

/* Runs in a worker thread. Returns 0 or -errno, passed to the completion. */
typedef int ThreadPoolFunc(void *arg);
/* Runs in the pool's AioContext thread, exactly once per submitted element. */
typedef void ThreadPoolCompletionFunc(void *opaque, int ret);

#define THREAD_POOL_DEFAULT_MAX_THREADS 64
#define THREAD_POOL_DEFAULT_IDLE_MS     10000

/* The pool of ctx, created on first use, with a reference taken. ctx's thread. */
ThreadPool *thread_pool_get(AioContext *ctx);
/* Drops a reference; the last one drains and frees the pool. ctx's thread. */
void thread_pool_put(ThreadPool *pool);

/*
 * Sets the worker limits (0 <= min <= max, max >= 1) and the idle timeout
 * after which a worker above min exits. Returns false with errp on bad values.
 */
bool thread_pool_set_limits(ThreadPool *pool, int min_threads, int max_threads,
                            unsigned idle_ms, Error **errp);

/*
 * Queues func(arg) for a worker. cb(opaque, ret) is called later in the
 * pool's context, never from within this call. Returns a handle valid until
 * cb returns; it is only good for thread_pool_cancel(). Never fails.
 */
ThreadPoolElement *thread_pool_submit(ThreadPool *pool, ThreadPoolFunc *func,
                                      void *arg, ThreadPoolCompletionFunc *cb,
                                      void *opaque);

/*
 * Cancels elem if no worker picked it up yet: func never runs and cb gets
 * -ECANCELED (later, from the loop, as for any completion); returns true.
 * Returns false when it is already running or done; cb then gets the real
 * result. Call only before elem's cb has run.
 */
bool thread_pool_cancel(ThreadPool *pool, ThreadPoolElement *elem);

/* For tests and statistics: workers alive now; elements submitted whose cb has not run. */
int thread_pool_nr_threads(ThreadPool *pool);
unsigned thread_pool_in_flight(ThreadPool *pool);

#endif
