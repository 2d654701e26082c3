/*
 * event-loop: aio_poll() iterations per second against the number of idle
 * fds, per fd monitor.
 *
 * Each cell registers N idle eventfds (never signalled) plus one active
 * eventfd whose handler clears it and signals it again, so every blocking
 * aio_poll() finds exactly one ready fd: the figure is the loop's own cost
 * per iteration (wait syscall + dispatch) and how it grows with idle fds.
 * "poll" is pinned to ppoll; "default" is what aio_context_new() gives
 * (poll, switching to epoll above FDMON_EPOLL_UP_THRESHOLD fds).
 *
 * The machine may be shared: each cell is run REPEATS times and the best
 * run is printed (the loop's cost, not the neighbours').
 *
 * Usage: event-loop [-t MS_PER_RUN] [-r REPEATS] [-n N,N,...]
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "block/aio.h"
#include "util/aio-internal.h"

typedef struct {
    EventNotifier e;
    uint64_t count;
} Active;

static void active_read(EventNotifier *e)
{
    Active *a = container_of(e, Active, e);
    event_notifier_test_and_clear(e);
    a->count++;
    event_notifier_set(e);
}

static void idle_read(EventNotifier *e)
{
    event_notifier_test_and_clear(e);
}

enum { MON_POLL, MON_EPOLL, MON_IO_URING, MON_DEFAULT, MON_MAX };
static const char *const mon_names[MON_MAX] = { "poll", "epoll", "io_uring", "default" };

/* Iterations per second, or -1 if the monitor is unavailable (reason in *why). */
static double run_cell(int mon, int nidle, int64_t ms, char **why)
{
    AioContext *ctx = aio_context_new(&error_abort);
    EventNotifier *idle = g_new(EventNotifier, nidle);
    Active active = { 0 };
    Error *err = NULL;
    bool ok = true;
    int64_t start, end, iters = 0;

    switch (mon) {
    case MON_POLL:
        ok = aio_context_pin_fdmon(ctx, &fdmon_poll_ops, &err);
        break;
    case MON_EPOLL:
        ok = aio_context_set_fdmon(ctx, AIO_FDMON_EPOLL, &err);
        break;
    case MON_IO_URING:
        ok = aio_context_set_fdmon(ctx, AIO_FDMON_IO_URING, &err);
        break;
    }
    if (!ok) {
        *why = g_strdup(error_get_pretty(err));
        error_free(err);
        aio_context_unref(ctx);
        g_free(idle);
        return -1;
    }
    for (int i = 0; i < nidle; i++) {
        int ret = event_notifier_init(&idle[i], false);
        if (ret < 0) {
            fprintf(stderr, "event-loop: eventfd #%d: %s\n", i, strerror(-ret));
            exit(1);
        }
        aio_set_event_notifier(ctx, &idle[i], false, idle_read, NULL, NULL);
    }
    g_assert(event_notifier_init(&active.e, true) == 0);
    aio_set_event_notifier(ctx, &active.e, false, active_read, NULL, NULL);

    /* Warm up: backend switch, arming, page faults. */
    for (int i = 0; i < 1000; i++) {
        aio_poll(ctx, true);
    }
    start = aio_clock_get_ns(AIO_CLOCK_MONOTONIC);
    end = start + ms * 1000000;
    do {
        for (int i = 0; i < 256; i++) {
            aio_poll(ctx, true);
        }
        iters += 256;
    } while (aio_clock_get_ns(AIO_CLOCK_MONOTONIC) < end);
    end = aio_clock_get_ns(AIO_CLOCK_MONOTONIC);
    if (mon == MON_DEFAULT) {
        *why = g_strdup(aio_context_fdmon_name(ctx));
    }

    aio_set_event_notifier(ctx, &active.e, false, NULL, NULL, NULL);
    event_notifier_cleanup(&active.e);
    for (int i = 0; i < nidle; i++) {
        aio_set_event_notifier(ctx, &idle[i], false, NULL, NULL, NULL);
        event_notifier_cleanup(&idle[i]);
    }
    g_free(idle);
    aio_context_unref(ctx);
    return iters * 1e9 / (double)(end - start);
}

int main(int argc, char **argv)
{
    int64_t ms = 200;
    int repeats = 3;
    int sizes[16] = { 1, 10, 100, 1000, 10000 };
    int nsizes = 5;
    struct rlimit rl;
    char *unavailable[MON_MAX] = { 0 };
    int opt;

    while ((opt = getopt(argc, argv, "t:r:n:h")) != -1) {
        switch (opt) {
        case 'r':
            repeats = atoi(optarg) > 0 ? atoi(optarg) : 1;
            break;
        case 't':
            ms = atoll(optarg);
            break;
        case 'n': {
            char **v = g_strsplit(optarg, ",", 16);
            nsizes = 0;
            for (int i = 0; v[i] && nsizes < 16; i++) {
                sizes[nsizes++] = atoi(v[i]);
            }
            g_strfreev(v);
            break;
        }
        default:
            fprintf(stderr, "usage: %s [-t MS_PER_RUN] [-r REPEATS] [-n N,N,...]\n",
                    argv[0]);
            return opt == 'h' ? 0 : 2;
        }
    }
    if (ms <= 0) {
        ms = 200;
    }

    /* Room for the idle fds plus a few per context. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);

    printf("aio_poll() iterations/s: 1 active eventfd + N idle eventfds, "
           "best of %d runs of %" PRId64 " ms\n", repeats, ms);
    printf("%8s", "idle fds");
    for (int m = 0; m < MON_MAX; m++) {
        printf(" %12s", mon_names[m]);
    }
    printf("  default backend\n");
    {
        /* One discarded run: the first measurement otherwise pays for a cold CPU. */
        char *why = NULL;
        run_cell(MON_POLL, 1, ms, &why);
        g_free(why);
    }
    for (int s = 0; s < nsizes; s++) {
        char *chosen = NULL;
        if ((rlim_t)sizes[s] + 64 > rl.rlim_cur) {
            printf("%8d  skipped: RLIMIT_NOFILE is %llu\n", sizes[s],
                   (unsigned long long)rl.rlim_cur);
            continue;
        }
        printf("%8d", sizes[s]);
        fflush(stdout);
        for (int m = 0; m < MON_MAX; m++) {
            char *why = NULL;
            double r = -1;
            for (int rep = 0; rep < repeats; rep++) {
                double x;
                g_free(why);
                why = NULL;
                x = run_cell(m, sizes[s], ms, &why);
                if (x < 0) {
                    r = x;
                    break;
                }
                r = MAX(r, x);
            }
            if (r < 0) {
                printf(" %12s", "n/a");
                if (!unavailable[m]) {
                    unavailable[m] = why;
                } else {
                    g_free(why);
                }
            } else {
                printf(" %12.0f", r);
                if (m == MON_DEFAULT) {
                    chosen = why;
                } else {
                    g_free(why);
                }
            }
            fflush(stdout);
        }
        printf("  %s\n", chosen ? chosen : "");
        g_free(chosen);
    }
    for (int m = 0; m < MON_MAX; m++) {
        if (unavailable[m]) {
            printf("%s: %s\n", mon_names[m], unavailable[m]);
            g_free(unavailable[m]);
        }
    }
    return 0;
}
