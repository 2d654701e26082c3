/*
 * AioContext: ringblk's event loop.
 *
 * An AioContext belongs to one thread at a time (the main thread or an
 * IOThread). Everything registered with it — fd handlers, event notifiers,
 * timers, bottom halves — is dispatched in that thread by aio_poll(). The
 * only functions that may be called from any thread are aio_notify(),
 * aio_bh_schedule(), aio_bh_schedule_oneshot(), aio_context_ref/unref(),
 * aio_wait_bh_oneshot() and aio_wait_kick(); everything else must run in the
 * owning thread.
 *
 * File descriptors are monitored by an FdMon backend (util/fdmon-*.c): poll
 * for few fds, epoll for many, io_uring when chosen. See docs/devel/event-loop.md.
 */
#ifndef BLOCK_AIO_H
#define BLOCK_AIO_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

typedef struct AioContext AioContext;
typedef struct AioBH AioBH;
typedef struct AioTimer AioTimer;

/* Called when an fd is readable/writable, in the AioContext's thread. */
typedef void IOHandler(void *opaque);
/*
 * Busy-poll function: checks, without blocking and ideally without a
 * syscall, whether the handler has work (e.g. CQEs in a ring). Returns true
 * when it found some; the loop then calls io_poll_ready (or io_read if
 * io_poll_ready is NULL) to process it.
 */
typedef bool AioPollFn(void *opaque);
/* Called when busy polling starts/ends for this handler (e.g. to turn an eventfd off). */
typedef void AioPollBeginEnd(void *opaque);
typedef void AioBHFunc(void *opaque);
typedef void AioTimerCB(void *opaque);

/* ---- Context lifecycle ---------------------------------------------------- */

typedef enum {
    AIO_FDMON_AUTO = 0,   /* io_uring if usable, else poll/epoll switching by fd count */
    AIO_FDMON_POLL,       /* ppoll(2); switches to epoll above a threshold of fds */
    AIO_FDMON_EPOLL,      /* epoll, never switches back to poll */
    AIO_FDMON_IO_URING,   /* IORING_OP_POLL_ADD on the context's own ring */
} AioFdMonType;

/* Creates a context with the default fd monitor (env RINGBLK_FDMON overrides: poll|epoll|io_uring). */
AioContext *aio_context_new(Error **errp);
void aio_context_ref(AioContext *ctx);
void aio_context_unref(AioContext *ctx);

/*
 * Selects the fd monitor. Must be called with no fd registered or from the
 * owning thread between aio_poll() calls (a BH or handler callback is fine
 * too); handlers move to the new backend.
 * AIO_FDMON_IO_URING fails with a message naming the cause when io_uring is
 * unavailable (not compiled in, io_uring_disabled, seccomp).
 */
bool aio_context_set_fdmon(AioContext *ctx, AioFdMonType type, Error **errp);
/* Name of the backend in use now: "poll", "epoll" or "io_uring". */
const char *aio_context_fdmon_name(AioContext *ctx);

/* The context of the calling thread (the main context if none was set). */
AioContext *aio_context_current(void);
/* The process's main-loop context, created on first use. */
AioContext *aio_context_main(void);
/* Makes ctx the calling thread's current context (IOThreads call this). */
void aio_context_set_current(AioContext *ctx);
/* True when called in the thread that runs ctx. */
bool aio_context_in_thread(AioContext *ctx);

/*
 * Runs one iteration: due timers, scheduled bottom halves, then fd events.
 * With blocking=true, waits (nanosecond-precise, honouring the nearest
 * timer) until at least one handler, BH or timer ran, or aio_notify() was
 * called. Returns true if any callback made progress.
 */
bool aio_poll(AioContext *ctx, bool blocking);

/*
 * While this thread's aio_poll() dispatches (BHs, handlers, timers): the
 * aio_clock_get_ns(AIO_CLOCK_MONOTONIC) time taken once before dispatch,
 * refreshed by every nested aio_poll(); 0 outside dispatch. Per-request
 * timestamps (block accounting) use it instead of reading the clock: one
 * read per loop iteration instead of two per request.
 */
extern __thread int64_t aio_dispatch_ns;
static inline int64_t aio_dispatch_time_ns(void)
{
    return aio_dispatch_ns;
}

/*
 * The context this thread's innermost aio_poll() runs, NULL outside one.
 * Whatever that thread leaves for ctx's loop inside aio_poll(ctx) is seen
 * before the loop blocks: a BH scheduled there needs no aio_notify(), and
 * an engine may leave its submissions to the loop's next wait.
 */
extern __thread AioContext *aio_polling_ctx;
static inline bool aio_context_polling_here(AioContext *ctx)
{
    return aio_polling_ctx == ctx;
}
/* Wakes a blocking aio_poll(ctx) from any thread. */
void aio_notify(AioContext *ctx);

/* ---- fd handlers ---------------------------------------------------------- */

/*
 * Registers (or updates, or with all callbacks NULL removes) the handlers of
 * fd. "External" handlers (exports, guest notifications) are skipped while
 * aio_disable_external() is in effect. Safe to call from within a handler,
 * including for the fd being dispatched.
 */
void aio_set_fd_handler(AioContext *ctx, int fd, bool is_external,
                        IOHandler *io_read, IOHandler *io_write,
                        AioPollFn *io_poll, IOHandler *io_poll_ready,
                        void *opaque);
/*
 * Optional begin/end notifications around busy polling of fd's io_poll.
 * They get the handler's opaque, or the EventNotifier * for a handler set
 * with aio_set_event_notifier().
 */
void aio_set_fd_poll(AioContext *ctx, int fd,
                     AioPollBeginEnd *io_poll_begin, AioPollBeginEnd *io_poll_end);

/* Disables/enables external handlers as a group; nests (a counter). */
void aio_disable_external(AioContext *ctx);
void aio_enable_external(AioContext *ctx);
bool aio_external_disabled(AioContext *ctx);

/* ---- Event notifiers (eventfd) -------------------------------------------- */

typedef struct EventNotifier {
    int fd;
} EventNotifier;
typedef void EventNotifierHandler(EventNotifier *e);
typedef bool EventNotifierPollFn(EventNotifier *e);

/* Returns 0 or -errno. active=true starts it signalled. */
int event_notifier_init(EventNotifier *e, bool active);
void event_notifier_cleanup(EventNotifier *e);
int event_notifier_get_fd(const EventNotifier *e);
/* Signals; async-signal-safe and callable from any thread. Returns 0 or -errno. */
int event_notifier_set(EventNotifier *e);
/* Clears; returns true if it was signalled. */
bool event_notifier_test_and_clear(EventNotifier *e);

void aio_set_event_notifier(AioContext *ctx, EventNotifier *e, bool is_external,
                            EventNotifierHandler *io_read,
                            EventNotifierPollFn *io_poll,
                            EventNotifierHandler *io_poll_ready);

/* ---- Bottom halves --------------------------------------------------------- */

/* A reusable BH: schedule it as often as needed; delete it when done. */
AioBH *aio_bh_new(AioContext *ctx, AioBHFunc *cb, void *opaque);
/* Schedules bh to run once in its context's next aio_poll(); any thread. Idempotent while pending. */
void aio_bh_schedule(AioBH *bh);
/* Unschedules a pending bh (owning thread). */
void aio_bh_cancel(AioBH *bh);
/* Frees bh; safe while it is pending and from within its own callback. */
void aio_bh_delete(AioBH *bh);
/* Runs cb(opaque) once in ctx's thread, then forgets it; any thread. */
void aio_bh_schedule_oneshot(AioContext *ctx, AioBHFunc *cb, void *opaque);

/* ---- Timers ----------------------------------------------------------------- */

typedef enum {
    AIO_CLOCK_MONOTONIC = 0,  /* CLOCK_MONOTONIC: intervals, deadlines */
    AIO_CLOCK_REALTIME,       /* CLOCK_REALTIME: wall-clock deadlines */
    AIO_CLOCK_MAX,
} AioClockType;

int64_t aio_clock_get_ns(AioClockType type);

/* Timers may be embedded (aio_timer_init) or allocated (aio_timer_new). */
struct AioTimer {
    AioContext *ctx;
    AioClockType clock;
    int64_t expire_ns;        /* -1 when not pending */
    AioTimerCB *cb;
    void *opaque;
    AioTimer *next;           /* sorted active list of its clock; owned by the context */
};

void aio_timer_init(AioTimer *t, AioContext *ctx, AioClockType clock,
                    AioTimerCB *cb, void *opaque);
AioTimer *aio_timer_new(AioContext *ctx, AioClockType clock,
                        AioTimerCB *cb, void *opaque);
/* Arms t to fire once when aio_clock_get_ns(clock) >= expire_ns; re-arming moves it. */
void aio_timer_mod_ns(AioTimer *t, int64_t expire_ns);
/* Disarms; a no-op if not pending. */
void aio_timer_del(AioTimer *t);
bool aio_timer_pending(const AioTimer *t);
/* Disarms and frees a timer from aio_timer_new(). */
void aio_timer_free(AioTimer *t);

/* ---- Adaptive busy polling -------------------------------------------------- */

/*
 * As QEMU's iothread properties: poll up to max_ns before sleeping; the
 * window grows by `grow` (x2 when 0) when a poll would have succeeded just
 * past it and shrinks by `shrink` (to 0 when 0) when polling did not help.
 * max_ns=0 disables busy polling. Returns false with errp on negative values.
 */
bool aio_context_set_poll_params(AioContext *ctx, int64_t max_ns,
                                 int64_t grow, int64_t shrink, Error **errp);
/* Current adaptive window in ns (for tests and query-iothreads). */
int64_t aio_context_poll_ns(AioContext *ctx);

/* ---- GLib integration ------------------------------------------------------- */

/* The context as a GSource: attach it to a GMainContext to let a GMainLoop drive it. */
GSource *aio_get_g_source(AioContext *ctx);

/* ---- Sharing the io_uring fd monitor's ring ---------------------------------- */

struct io_uring;

/*
 * The io_uring fd monitor owns one ring per context. Another user in the
 * same thread (the io_uring AIO engine) may put its own SQEs on it, so one
 * io_uring_enter() both submits I/O and waits for fd events. Rule: every
 * such SQE's user_data has its low 3 bits equal to AIO_FDMON_CQE_FOREIGN_TAG
 * (tag an 8-byte aligned pointer with `ptr | 1`); the fd monitor copies those
 * CQEs and hands them to the registered handler during aio_poll()'s dispatch
 * phase (never from inside the wait). Unsubmitted SQEs are submitted by the
 * next aio_poll(); call io_uring_submit() to start them earlier.
 */
#define AIO_FDMON_CQE_FOREIGN_TAG 1ull
typedef void AioFdMonCqeHandler(void *opaque, uint64_t user_data,
                                int32_t res, uint32_t flags);

/* The fd monitor's ring, or NULL unless the io_uring fd monitor is active. */
struct io_uring *aio_context_get_fdmon_ring(AioContext *ctx);
/*
 * Whether that ring only accepts polls, NOP, reads, writes, fsync,
 * fallocate and URING_CMD (no registrations): true wherever the kernel has
 * ring restrictions (Linux 5.10).
 */
bool aio_context_fdmon_ring_restricted(AioContext *ctx);
/*
 * Sets the handler of foreign CQEs (owning thread). The ring goes away when
 * the fd monitor is switched: do not switch with foreign requests in flight.
 */
void aio_context_set_fdmon_cqe_handler(AioContext *ctx, AioFdMonCqeHandler *cb,
                                       void *opaque);

/* ---- Waiting in an engine's ring -------------------------------------------- */

/*
 * A ring waiter: an AIO engine whose io_uring the loop blocks in, instead
 * of in the fd monitor, while the engine wants it (requests in flight).
 * One io_uring_enter() then submits, waits for the engine's completions
 * (running its deferred completion work) and for the fd monitor's epoll fd,
 * on which the waiter keeps a one-shot POLL_ADD: the engine's eventfd, a
 * ppoll and an eventfd read per wakeup are saved. Only with the epoll fd
 * monitor; a context whose monitor is "poll" (the default) moves to epoll
 * while a waiter is set. docs/devel/event-loop.md has the rules.
 */
typedef struct AioRingWaiterOps {
    /* Whether the next blocking wait should be in the ring (cheap, no syscall). */
    bool (*wanted)(void *opaque);
    /*
     * Waits up to timeout_ns (> 0, or -1: forever) for a completion in the
     * ring or for epfd to become readable. Returns 1 when epfd may be
     * readable, 0 when not, -errno when it could not wait (the loop then
     * waits in the fd monitor). Runs no callback: the loop finds the
     * completions with the waiter's io_poll function afterwards.
     */
    int (*wait)(void *opaque, int epfd, int64_t timeout_ns);
    /*
     * Sends what the waiter kept for its next wait (submissions made by
     * completion callbacks). The loop calls it whenever it does anything
     * else: a non-blocking pass, busy polling, a wait in the fd monitor, the
     * end of a non-blocking aio_poll(), GSource prepare. Cheap when there
     * is nothing to send.
     */
    void (*flush)(void *opaque);
    /*
     * The loop is about to block somewhere other than the ring (the fd
     * monitor with a timeout, GLib's poll) or may not come back soon: the
     * waiter makes its completions wake the fd monitor again (between its
     * waits it may have left that off). Cheap when nothing changes.
     */
    void (*release)(void *opaque);
} AioRingWaiterOps;

/*
 * Sets ctx's waiter (owning thread); false if another one is set. So a
 * request a completion callback submits may start only when the loop next
 * polls or waits, not when aio_poll() returns: drive the context with
 * aio_poll() or its GSource, as every user does.
 */
bool aio_context_set_ring_waiter(AioContext *ctx, const AioRingWaiterOps *ops,
                                 void *opaque);
/* Clears it if opaque is the waiter. */
void aio_context_clear_ring_waiter(AioContext *ctx, void *opaque);

/* ---- Cross-thread waiting ---------------------------------------------------- */

/*
 * Runs cb(opaque) in ctx's thread and waits until it returned. From ctx's
 * own thread it runs cb directly.
 */
void aio_wait_bh_oneshot(AioContext *ctx, AioBHFunc *cb, void *opaque);

/* Wakes every AIO_WAIT_WHILE waiter in any thread (call after changing their condition). */
void aio_wait_kick(void);

/* Internal to AIO_WAIT_WHILE. */
void aio_wait_begin(void);
void aio_wait_end(void);
bool aio_wait_poll_other(AioContext *ctx);

/*
 * Polls until cond is false. In ctx's own thread it runs aio_poll(ctx, true);
 * from another thread (usually the main thread waiting for an IOThread's
 * node) it runs the caller's own context and relies on aio_wait_kick() from
 * ctx's thread when cond may have changed.
 */
#define AIO_WAIT_WHILE(ctx, cond) ({                                 \
    bool waited_ = false;                                            \
    AioContext *wctx_ = (ctx);                                       \
    aio_wait_begin();                                                \
    if (aio_context_in_thread(wctx_)) {                              \
        while ((cond)) {                                             \
            aio_poll(wctx_, true);                                   \
            waited_ = true;                                          \
        }                                                            \
    } else {                                                         \
        while ((cond)) {                                             \
            aio_wait_poll_other(wctx_);                              \
            waited_ = true;                                          \
        }                                                            \
    }                                                                \
    aio_wait_end();                                                  \
    waited_; })

#endif
