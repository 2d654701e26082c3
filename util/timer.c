/*
 * Timers of an AioContext: one list per clock, sorted by deadline, owned by
 * the context's thread. aio_poll() sleeps no longer than the nearest
 * deadline (in ns) and runs a timer only once its clock has reached
 * expire_ns, so a timer never fires early; a wait that ends a little before
 * the deadline just waits again.
 */
#include <time.h>

#include "aio-internal.h"

int64_t aio_clock_get_ns(AioClockType type)
{
    struct timespec ts;
    clock_gettime(type == AIO_CLOCK_REALTIME ? CLOCK_REALTIME : CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void aio_timer_init(AioTimer *t, AioContext *ctx, AioClockType clock,
                    AioTimerCB *cb, void *opaque)
{
    g_assert(clock >= 0 && clock < AIO_CLOCK_MAX);
    *t = (AioTimer) {
        .ctx = ctx, .clock = clock, .expire_ns = -1, .cb = cb, .opaque = opaque,
    };
}

AioTimer *aio_timer_new(AioContext *ctx, AioClockType clock,
                        AioTimerCB *cb, void *opaque)
{
    AioTimer *t = g_new(AioTimer, 1);
    aio_timer_init(t, ctx, clock, cb, opaque);
    return t;
}

bool aio_timer_pending(const AioTimer *t)
{
    return t->expire_ns >= 0;
}

void aio_timer_del(AioTimer *t)
{
    AioTimer **pp;

    if (!aio_timer_pending(t)) {
        return;
    }
    for (pp = &t->ctx->timers[t->clock]; *pp; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    }
    t->next = NULL;
    t->expire_ns = -1;
}

void aio_timer_mod_ns(AioTimer *t, int64_t expire_ns)
{
    AioTimer **pp;

    aio_timer_del(t);
    if (expire_ns < 0) {
        expire_ns = 0;   /* "already due"; -1 is reserved for "not pending" */
    }
    /* After timers with the same deadline: equal deadlines fire in arming order. */
    for (pp = &t->ctx->timers[t->clock]; *pp && (*pp)->expire_ns <= expire_ns;
         pp = &(*pp)->next) {
    }
    t->expire_ns = expire_ns;
    t->next = *pp;
    *pp = t;
}

void aio_timer_free(AioTimer *t)
{
    if (t) {
        aio_timer_del(t);
        g_free(t);
    }
}

int64_t aio_timers_deadline_ns(AioContext *ctx)
{
    int64_t deadline = -1;

    for (int c = 0; c < AIO_CLOCK_MAX; c++) {
        AioTimer *t = ctx->timers[c];
        int64_t left;
        if (!t) {
            continue;
        }
        left = t->expire_ns - aio_clock_get_ns(c);
        if (left <= 0) {
            return 0;
        }
        if (deadline < 0 || left < deadline) {
            deadline = left;
        }
    }
    return deadline;
}

bool aio_timers_run(AioContext *ctx)
{
    bool progress = false;

    for (int c = 0; c < AIO_CLOCK_MAX; c++) {
        int64_t now;
        AioTimer *t;

        if (!ctx->timers[c]) {
            continue;
        }
        /*
         * One clock reading per pass: a callback that re-arms its timer for
         * "now" runs again next iteration instead of looping here.
         */
        now = aio_clock_get_ns(c);
        while ((t = ctx->timers[c]) && t->expire_ns <= now) {
            ctx->timers[c] = t->next;
            t->next = NULL;
            t->expire_ns = -1;
            t->cb(t->opaque);   /* may re-arm, delete or free t */
            progress = true;
        }
    }
    return progress;
}
