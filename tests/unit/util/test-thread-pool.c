/*
 * Tests of util/thread-pool.c: work runs in workers, completions in the
 * pool's context thread, queued work can be cancelled, limits hold.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include <glib.h>

#include "util/thread-pool.h"

static pthread_t main_thread;

typedef struct Work {
    int value;
    bool ran;                     /* set by the worker */
    pthread_t worker;
    bool done;                    /* set by the completion */
    int ret;
    unsigned *counter;
} Work;

static int work_fn(void *arg)
{
    Work *w = arg;

    w->ran = true;
    w->worker = pthread_self();
    return w->value;
}

static void work_done(void *opaque, int ret)
{
    Work *w = opaque;

    g_assert_true(pthread_equal(pthread_self(), main_thread));
    g_assert_false(w->done);
    w->done = true;
    w->ret = ret;
    if (w->counter) {
        (*w->counter)++;
    }
}

static AioContext *new_ctx(void)
{
    AioContext *ctx = aio_context_new(&error_abort);

    aio_context_set_current(ctx);
    return ctx;
}

static void free_ctx(AioContext *ctx)
{
    aio_context_set_current(aio_context_main());
    aio_context_unref(ctx);
}

static void test_submit(void)
{
    AioContext *ctx = new_ctx();
    ThreadPool *pool = thread_pool_get(ctx);
    Work w = { .value = -EIO };

    g_assert_true(thread_pool_get(ctx) == pool);  /* one pool per context */
    thread_pool_put(pool);

    thread_pool_submit(pool, work_fn, &w, work_done, &w);
    g_assert_false(w.done);      /* never from within submit */
    while (!w.done) {
        aio_poll(ctx, true);
    }
    g_assert_true(w.ran);
    g_assert_false(pthread_equal(w.worker, main_thread));
    g_assert_cmpint(w.ret, ==, -EIO);
    g_assert_cmpuint(thread_pool_in_flight(pool), ==, 0);
    thread_pool_put(pool);
    free_ctx(ctx);
}

static void test_many(void)
{
    AioContext *ctx = new_ctx();
    ThreadPool *pool = thread_pool_get(ctx);
    enum { N = 2000 };
    Work *w = g_new0(Work, N);
    unsigned completed = 0;

    for (int i = 0; i < N; i++) {
        w[i].value = i;
        w[i].counter = &completed;
        thread_pool_submit(pool, work_fn, &w[i], work_done, &w[i]);
    }
    while (completed < N) {
        aio_poll(ctx, true);
    }
    for (int i = 0; i < N; i++) {
        g_assert_true(w[i].done);
        g_assert_cmpint(w[i].ret, ==, i);
    }
    g_assert_cmpint(thread_pool_nr_threads(pool), <=, THREAD_POOL_DEFAULT_MAX_THREADS);
    thread_pool_put(pool);
    free_ctx(ctx);
    g_free(w);
}

/* A work function that blocks until released, so that later work stays queued. */
typedef struct Gate {
    GMutex lock;
    GCond cond;
    bool entered;
    bool open;
} Gate;

static int gate_fn(void *arg)
{
    Gate *g = arg;

    g_mutex_lock(&g->lock);
    g->entered = true;
    g_cond_broadcast(&g->cond);
    while (!g->open) {
        g_cond_wait(&g->cond, &g->lock);
    }
    g_mutex_unlock(&g->lock);
    return 7;
}

static void gate_done(void *opaque, int ret)
{
    int *r = opaque;

    *r = ret;
}

static void test_cancel(void)
{
    AioContext *ctx = new_ctx();
    ThreadPool *pool = thread_pool_get(ctx);
    Gate g = { .open = false };
    Work queued = { .value = 1 };
    int gate_ret = 0;
    ThreadPoolElement *running, *elem;

    g_mutex_init(&g.lock);
    g_cond_init(&g.cond);
    g_assert_true(thread_pool_set_limits(pool, 0, 1, 1000, &error_abort));

    running = thread_pool_submit(pool, gate_fn, &g, gate_done, &gate_ret);
    g_mutex_lock(&g.lock);
    while (!g.entered) {
        g_cond_wait(&g.cond, &g.lock);
    }
    g_mutex_unlock(&g.lock);

    /* The only worker is busy: this one stays queued. */
    elem = thread_pool_submit(pool, work_fn, &queued, work_done, &queued);
    g_assert_true(thread_pool_cancel(pool, elem));
    g_assert_false(queued.done);     /* the callback comes from the loop */
    /* Running work cannot be cancelled. */
    g_assert_false(thread_pool_cancel(pool, running));
    while (!queued.done) {
        aio_poll(ctx, true);
    }
    g_assert_cmpint(queued.ret, ==, -ECANCELED);
    g_assert_false(queued.ran);

    g_mutex_lock(&g.lock);
    g.open = true;
    g_cond_broadcast(&g.cond);
    g_mutex_unlock(&g.lock);
    while (gate_ret == 0) {
        aio_poll(ctx, true);
    }
    g_assert_cmpint(gate_ret, ==, 7);
    g_assert_false(queued.ran);
    thread_pool_put(pool);
    free_ctx(ctx);
    g_mutex_clear(&g.lock);
    g_cond_clear(&g.cond);
}

static void test_limits(void)
{
    AioContext *ctx = new_ctx();
    ThreadPool *pool = thread_pool_get(ctx);
    Error *err = NULL;

    g_assert_false(thread_pool_set_limits(pool, 2, 1, 1000, &err));
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "thread pool limits must satisfy 0 <= min (2) <= max (1), max >= 1");
    error_free(err);
    err = NULL;
    g_assert_false(thread_pool_set_limits(pool, 0, 0, 1000, &err));
    error_free(err);

    /* min threads are started at once and stay. */
    g_assert_true(thread_pool_set_limits(pool, 3, 4, 1, &error_abort));
    g_assert_cmpint(thread_pool_nr_threads(pool), ==, 3);
    thread_pool_put(pool);
    free_ctx(ctx);
}

/* Workers above the minimum exit after the idle timeout. */
static void test_idle_exit(void)
{
    AioContext *ctx = new_ctx();
    ThreadPool *pool = thread_pool_get(ctx);
    enum { N = 64 };
    Work w[N] = { 0 };
    unsigned completed = 0;

    g_assert_true(thread_pool_set_limits(pool, 1, 8, 1, &error_abort));
    for (int i = 0; i < N; i++) {
        w[i].counter = &completed;
        thread_pool_submit(pool, work_fn, &w[i], work_done, &w[i]);
    }
    while (completed < N) {
        aio_poll(ctx, true);
    }
    g_assert_cmpint(thread_pool_nr_threads(pool), >=, 1);
    g_assert_cmpint(thread_pool_nr_threads(pool), <=, 8);
    /* No deadline here: if they never leave, the test runner's timeout fails us. */
    while (thread_pool_nr_threads(pool) > 1) {
        g_usleep(1000);
    }
    g_assert_true(thread_pool_set_limits(pool, 0, 8, 1, &error_abort));
    while (thread_pool_nr_threads(pool) > 0) {
        g_usleep(1000);
    }
    /* Work still runs after every worker left. */
    memset(w, 0, sizeof(w[0]));
    w[0].value = 5;
    thread_pool_submit(pool, work_fn, &w[0], work_done, &w[0]);
    while (!w[0].done) {
        aio_poll(ctx, true);
    }
    g_assert_cmpint(w[0].ret, ==, 5);
    thread_pool_put(pool);
    free_ctx(ctx);
}

/* A callback that polls the loop (nested aio_poll) still gets the other completions. */
typedef struct Nested {
    AioContext *ctx;
    Work *other;
    bool done;
} Nested;

static void nested_done(void *opaque, int ret)
{
    Nested *n = opaque;

    while (!n->other->done) {
        aio_poll(n->ctx, true);
    }
    n->done = true;
}

static void test_nested_poll(void)
{
    AioContext *ctx = new_ctx();
    ThreadPool *pool = thread_pool_get(ctx);
    Work a = { 0 }, b = { .value = 3 };
    Nested n = { .ctx = ctx, .other = &b };

    /* Both finish before the loop runs, so both sit on the done list together. */
    thread_pool_submit(pool, work_fn, &a, nested_done, &n);
    thread_pool_submit(pool, work_fn, &b, work_done, &b);
    while (!__atomic_load_n(&a.ran, __ATOMIC_ACQUIRE) ||
           !__atomic_load_n(&b.ran, __ATOMIC_ACQUIRE)) {
        g_usleep(1000);
    }
    while (!n.done) {
        aio_poll(ctx, true);
    }
    g_assert_true(b.done);
    g_assert_cmpint(b.ret, ==, 3);
    thread_pool_put(pool);
    free_ctx(ctx);
}

/* Releasing the last reference waits for the work and runs its callbacks. */
static void test_put_drains(void)
{
    AioContext *ctx = new_ctx();
    ThreadPool *pool = thread_pool_get(ctx);
    enum { N = 100 };
    Work w[N] = { 0 };
    unsigned completed = 0;

    for (int i = 0; i < N; i++) {
        w[i].counter = &completed;
        thread_pool_submit(pool, work_fn, &w[i], work_done, &w[i]);
    }
    thread_pool_put(pool);
    g_assert_cmpuint(completed, ==, N);
    free_ctx(ctx);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    main_thread = pthread_self();
    g_test_add_func("/thread-pool/submit", test_submit);
    g_test_add_func("/thread-pool/many", test_many);
    g_test_add_func("/thread-pool/cancel", test_cancel);
    g_test_add_func("/thread-pool/limits", test_limits);
    g_test_add_func("/thread-pool/put-drains", test_put_drains);
    g_test_add_func("/thread-pool/idle-exit", test_idle_exit);
    g_test_add_func("/thread-pool/nested-poll", test_nested_poll);
    return g_test_run();
}
