/*
 * IOThread and cross-thread waiting: aio_wait_bh_oneshot(), AIO_WAIT_WHILE()
 * across threads, BHs scheduled into an IOThread, clean shutdown. Each test
 * runs with the IOThread's context on every fd monitor (path suffix).
 */
#include <sys/syscall.h>
#include <string.h>
#include <unistd.h>

#include "block/aio.h"
#include "util/iothread.h"

typedef struct {
    AioContext *ctx;
    int tid;
    bool in_thread;
    int count;                 /* atomic */
} ThreadInfo;

typedef struct {
    const char *name;
    AioFdMonType type;
} FdMon;

static const FdMon fdmons[] = {
    { "poll", AIO_FDMON_POLL },
    { "epoll", AIO_FDMON_EPOLL },
    { "io_uring", AIO_FDMON_IO_URING },
};

/* An IOThread on the fd monitor `data`, or NULL after g_test_skip(). */
static IOThread *iothread_on(const char *id, const void *data)
{
    const FdMon *mon = data;
    IOThread *t = iothread_new(id, &error_abort);
    Error *err = NULL;

    if (!iothread_set_fdmon(t, mon->type, &err)) {
        g_assert_true(g_str_has_prefix(error_get_pretty(err), "IOThread '"));
        g_test_skip(error_get_pretty(err));
        error_free(err);
        iothread_destroy(t);
        return NULL;
    }
    g_assert_cmpstr(aio_context_fdmon_name(iothread_get_aio_context(t)), ==, mon->name);
    return t;
}

#define IOTHREAD_OR_SKIP(t, id, data)          \
    IOThread *t = iothread_on(id, data);       \
    if (!t) {                                  \
        return;                                \
    }

static void record_thread(void *opaque)
{
    ThreadInfo *info = opaque;
    info->tid = (int)gettid();
    info->in_thread = aio_context_in_thread(info->ctx);
}

static void test_iothread_basic(const void *data)
{
    IOTHREAD_OR_SKIP(t, "io0", data);
    ThreadInfo info = { .ctx = iothread_get_aio_context(t) };

    g_assert_cmpstr(iothread_get_id(t), ==, "io0");
    g_assert_cmpint(iothread_get_thread_id(t), >, 0);
    g_assert_cmpint(iothread_get_thread_id(t), !=, (int)gettid());
    g_assert_false(aio_context_in_thread(info.ctx));

    aio_wait_bh_oneshot(info.ctx, record_thread, &info);
    g_assert_cmpint(info.tid, ==, iothread_get_thread_id(t));
    g_assert_true(info.in_thread);

    /* From the context's own thread it runs directly. */
    info.tid = 0;
    aio_wait_bh_oneshot(aio_context_current(), record_thread, &info);
    g_assert_cmpint(info.tid, ==, (int)gettid());
    iothread_destroy(t);
}

static void count_bh(void *opaque)
{
    ThreadInfo *info = opaque;
    g_usleep(100);
    __atomic_fetch_add(&info->count, 1, __ATOMIC_SEQ_CST);
}

/* Everything scheduled before iothread_destroy() runs before the thread ends. */
static void test_iothread_destroy_runs_pending(const void *data)
{
    IOTHREAD_OR_SKIP(t, "io1", data);
    ThreadInfo info = { .ctx = iothread_get_aio_context(t) };

    for (int i = 0; i < 100; i++) {
        aio_bh_schedule_oneshot(info.ctx, count_bh, &info);
    }
    iothread_destroy(t);
    g_assert_cmpint(__atomic_load_n(&info.count, __ATOMIC_SEQ_CST), ==, 100);
}

typedef struct {
    bool done;                 /* atomic */
    AioTimer timer;
} WaitData;

static void set_done_timer(void *opaque)
{
    WaitData *w = opaque;
    __atomic_store_n(&w->done, true, __ATOMIC_SEQ_CST);
    aio_wait_kick();
}

static void arm_timer_bh(void *opaque)
{
    WaitData *w = opaque;
    aio_timer_init(&w->timer, aio_context_current(), AIO_CLOCK_MONOTONIC,
                   set_done_timer, w);
    aio_timer_mod_ns(&w->timer, aio_clock_get_ns(AIO_CLOCK_MONOTONIC) + 10000000);
}

/* The main thread waits for a condition that the IOThread changes later. */
static void test_aio_wait_while_cross_thread(const void *data)
{
    IOTHREAD_OR_SKIP(t, "io2", data);
    AioContext *ctx = iothread_get_aio_context(t);
    WaitData w = { 0 };
    bool waited;

    aio_bh_schedule_oneshot(ctx, arm_timer_bh, &w);
    waited = AIO_WAIT_WHILE(ctx, !__atomic_load_n(&w.done, __ATOMIC_SEQ_CST));
    g_assert_true(waited);
    g_assert_true(__atomic_load_n(&w.done, __ATOMIC_SEQ_CST));
    g_assert_false(AIO_WAIT_WHILE(ctx, false));
    iothread_destroy(t);
}

static void test_iothread_poll_params(const void *data)
{
    IOTHREAD_OR_SKIP(t, "io3", data);
    Error *err = NULL;

    g_assert_true(iothread_set_poll_params(t, 32768, 2, 2, &error_abort));
    g_assert_false(iothread_set_poll_params(t, -1, 0, 0, &err));
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(error_get_pretty(err), "must not be negative"));
    error_free(err);
    iothread_destroy(t);
}

static void test_iothread_bad_id(void)
{
    Error *err = NULL;
    g_assert_null(iothread_new("", &err));
    g_assert_cmpstr(error_get_pretty(err), ==, "IOThread id must not be empty");
    error_free(err);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    for (size_t i = 0; i < G_N_ELEMENTS(fdmons); i++) {
        static const struct {
            const char *path;
            GTestDataFunc fn;
        } tests[] = {
            { "/iothread/basic", test_iothread_basic },
            { "/iothread/destroy-runs-pending-bhs", test_iothread_destroy_runs_pending },
            { "/iothread/aio-wait-while", test_aio_wait_while_cross_thread },
            { "/iothread/poll-params", test_iothread_poll_params },
        };
        for (size_t j = 0; j < G_N_ELEMENTS(tests); j++) {
            char *path = g_strdup_printf("%s/%s", tests[j].path, fdmons[i].name);
            g_test_add_data_func(path, &fdmons[i], tests[j].fn);
            g_free(path);
        }
    }
    g_test_add_func("/iothread/bad-id", test_iothread_bad_id);
    return g_test_run();
}
