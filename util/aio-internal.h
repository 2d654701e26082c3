/*
 * Private to the event loop (util/async.c, util/aio-posix.c, util/fdmon-*.c,
 * util/timer.c): the AioContext layout, the fd handler record and the fd
 * monitor (FdMon) backend interface. Tests may include it for test hooks.
 *
 * Threads: every field is owned by the context's thread unless its comment
 * says "atomic". Handlers are only added, changed and removed in the owning
 * thread, so the handler lists need no lock; what other threads touch is the
 * BH list, notify_me/notified and the notifier eventfd.
 */
#ifndef UTIL_AIO_INTERNAL_H
#define UTIL_AIO_INTERNAL_H

#include <poll.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/queue.h>

#include "config-host.h"
#include "block/aio.h"

/* The io_uring fd monitor is built with liburing (CONFIG_LINUX_IO_URING). */
#ifdef CONFIG_LINUX_IO_URING
#define FDMON_IO_URING 1
#endif

#ifdef FDMON_IO_URING
#include <liburing.h>
#endif

#ifndef container_of
#define container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))
#endif

typedef struct AioHandler AioHandler;
typedef TAILQ_HEAD(AioHandlerReadyList, AioHandler) AioHandlerReadyList;

struct AioHandler {
    int fd;
    bool is_external;
    bool deleted;             /* removed; freed once no dispatch loop can see it */
    bool poll_ready;          /* busy polling found work: dispatch io_poll_ready */
    bool edge_safe;           /* handler always drains its fd (event notifiers) */
    bool bad_fd;              /* the fd was closed while registered: not watched */
    IOHandler *io_read;
    IOHandler *io_write;
    AioPollFn *io_poll;
    IOHandler *io_poll_ready;
    AioPollBeginEnd *io_poll_begin;
    AioPollBeginEnd *io_poll_end;
    void *opaque;

    /* aio_set_event_notifier(): the typed callbacks behind the trampolines. */
    EventNotifier *en;
    EventNotifierHandler *en_read;
    EventNotifierPollFn *en_poll;
    EventNotifierHandler *en_poll_ready;

    int fdmon_events;         /* POLLIN|POLLOUT registered with the backend now */
    int revents;              /* set by the backend when queued as ready */
    void *gsource_tag;        /* g_source_add_unix_fd() tag while registered */

    /*
     * fdmon-io_uring: at most one POLL_ADD per handler is in the kernel.
     * A handler is freed only in FDMON_URING_IDLE (no CQE can name it).
     */
    uint8_t uring_state;      /* FDMON_URING_* */
    bool uring_multishot;     /* the POLL_ADD in flight is multishot */
    bool uring_zombie;        /* removed; freed when its final CQE arrives */

    LIST_ENTRY(AioHandler) node;        /* ctx->handlers, or a free-later list */
    LIST_ENTRY(AioHandler) poll_node;   /* ctx->poll_handlers (has io_poll) */
    LIST_ENTRY(AioHandler) ext_node;    /* ctx->external_handlers */
    TAILQ_ENTRY(AioHandler) ready_node; /* some aio_poll()'s ready list */
    AioHandlerReadyList *ready_list;    /* which one, NULL if none */
};

/*
 * An fd monitor backend. One is active per context (ctx->fdmon_ops). All
 * members run in the context's thread.
 */
typedef struct FdMonOps {
    const char *name;
    /* Sets up backend state; false with errp when the backend cannot run. */
    bool (*init)(AioContext *ctx, Error **errp);
    /*
     * Drops all backend state. Handlers still registered are forgotten by
     * the backend (their fdmon_events are left for the next backend).
     */
    void (*cleanup)(AioContext *ctx);
    /*
     * node's wanted events change from old_events to node->fdmon_events
     * (either may be 0: add/remove). May be called during dispatch.
     */
    void (*update)(AioContext *ctx, AioHandler *node, int old_events);
    /*
     * Waits up to timeout_ns (-1: forever, 0: just look) for events and adds
     * ready handlers to ready with aio_add_ready_handler(). Returns the
     * number of ready handlers or -errno.
     */
    int (*wait)(AioContext *ctx, AioHandlerReadyList *ready, int64_t timeout_ns);
    /* Optional: true when wait() must run even after busy polling succeeded. */
    bool (*need_wait)(AioContext *ctx);
    /* Optional: dispatches backend-private completions; true on progress. */
    bool (*dispatch)(AioContext *ctx);
} FdMonOps;

extern const FdMonOps fdmon_poll_ops;
extern const FdMonOps fdmon_epoll_ops;

/* Auto switching (AIO_FDMON_POLL): poll -> epoll above UP, back below DOWN. */
#define FDMON_EPOLL_UP_THRESHOLD   64
#define FDMON_EPOLL_DOWN_THRESHOLD 32

/* Bottom-half flags (atomic). */
#define BH_PENDING   (1u << 0)   /* on the scheduled list or a slice */
#define BH_SCHEDULED (1u << 1)   /* should run when dequeued (cleared by cancel) */
#define BH_DELETED   (1u << 2)   /* free when dequeued */
#define BH_ONESHOT   (1u << 3)   /* free after running */

struct AioBH {
    AioContext *ctx;
    AioBHFunc *cb;
    void *opaque;
    unsigned flags;           /* atomic, BH_* */
    AioBH *next;              /* scheduled list, then the slice it is in */
};

/* A batch of BHs taken off the scheduled list by one aio_bh_poll(). */
typedef struct BHSlice {
    AioBH *head;
    struct BHSlice *next;
} BHSlice;

enum {
    FDMON_URING_IDLE = 0,     /* no POLL_ADD in flight */
    FDMON_URING_ARMED,        /* POLL_ADD in flight */
    FDMON_URING_REMOVING,     /* POLL_REMOVE sent, waiting for the final CQE */
};

/*
 * io_uring fd monitor: user_data tags in the low 3 bits (AioHandler
 * pointers are at least 8-byte aligned). See aio.h for the foreign tag.
 */
#define FDMON_URING_TAG_MASK     7ull
#define FDMON_URING_TAG_POLL     0ull   /* POLL_ADD of the AioHandler in the upper bits */
#define FDMON_URING_TAG_FOREIGN  AIO_FDMON_CQE_FOREIGN_TAG   /* 1: someone else's SQE */
#define FDMON_URING_TAG_INTERNAL 2ull   /* POLL_REMOVE, TIMEOUT: result ignored */

typedef struct FdMonForeignCqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
} FdMonForeignCqe;

#define FDMON_EPOLL_MAX_EVENTS 128

struct AioContext {
    GSource source;           /* first: the context is its own GSource */

    /* --- cross-thread wakeup --- */
    /*
     * atomic. Non-zero while the owning thread may sleep: +2 per blocking
     * aio_poll() wait, bit 0 between GSource prepare and check. aio_notify()
     * writes the eventfd only when it is non-zero.
     */
    int notify_me;
    bool notified;            /* atomic: aio_notify() since the last accept */
    EventNotifier notifier;
    AioHandler *notifier_node;

    /* --- bottom halves --- */
    AioBH *bh_list;           /* atomic LIFO of newly scheduled BHs */
    BHSlice *bh_slice_head;   /* oldest batch being run (nested aio_poll) */
    BHSlice *bh_slice_tail;

    /* --- fd handlers --- */
    GHashTable *handler_by_fd;
    LIST_HEAD(, AioHandler) handlers;
    LIST_HEAD(, AioHandler) poll_handlers;
    LIST_HEAD(, AioHandler) deleted_handlers;  /* freed when walking_handlers is 0 */
    unsigned walking_handlers;                 /* aio_poll() nesting depth */
    unsigned n_fds;                            /* handlers registered with the backend */
    LIST_HEAD(, AioHandler) external_handlers; /* is_external, not deleted */
    unsigned poll_disable_cnt;                 /* handlers with io_read but no io_poll */
    int external_disable_cnt;

    /* --- timers --- */
    AioTimer *timers[AIO_CLOCK_MAX];  /* sorted by expire_ns */

    /* --- fd monitor --- */
    const FdMonOps *fdmon_ops;
    AioFdMonType fdmon_type;  /* what was asked for */
    bool fdmon_switch_failed; /* epoll could not start: stop trying */
    bool fdmon_pinned;        /* aio_context_pin_fdmon(): never switch automatically */
    bool fdmon_recheck;       /* fd count or backend changed: aio_poll re-checks the switch */

    struct {
        struct pollfd *pfds;
        AioHandler **nodes;
        unsigned n, alloc;
        bool dirty;           /* rebuild pfds before the next wait */
    } fdmon_poll;

    struct {
        int epfd;
        bool no_pwait2;       /* epoll_pwait2 returned ENOSYS: round to ms */
        bool broken;          /* an fd could not be added (e.g. a regular file) */
        struct epoll_event *events;   /* FDMON_EPOLL_MAX_EVENTS */
    } fdmon_epoll;

#ifdef FDMON_IO_URING
    struct {
        struct io_uring ring;
        bool have_multishot;
        bool restricted;                  /* IORING_REGISTER_RESTRICTIONS applied */
        LIST_HEAD(, AioHandler) zombies;  /* removed, waiting for their CQEs */
        AioFdMonCqeHandler *foreign_cb;
        void *foreign_opaque;
        FdMonForeignCqe *foreign;         /* ring buffer of copied CQEs */
        unsigned foreign_head, foreign_count, foreign_cap;
        bool warned_foreign;
        struct __kernel_timespec ts;      /* timeout SQE argument (old liburing) */
    } fdmon_uring;
#endif

    /* --- an engine's ring the loop may block in (aio_context_set_ring_waiter) --- */
    const AioRingWaiterOps *ring_waiter;
    void *ring_waiter_opaque;

    /* --- adaptive busy polling --- */
    int64_t poll_max_ns;
    int64_t poll_grow;
    int64_t poll_shrink;
    int64_t poll_ns;          /* current window */
    bool poll_started;        /* io_poll_begin called, io_poll_end not yet */

    bool finalizing;          /* being freed: no more GSource calls */
};

/* Adds node to ready with revents (taking it off a nested caller's list). */
void aio_add_ready_handler(AioHandlerReadyList *ready, AioHandler *node,
                           int revents);
/*
 * A backend found node's fd closed while registered (POLLNVAL, EBADF): warn
 * and stop watching it, so a blocking aio_poll() does not spin on it. May be
 * called from a backend's wait(), not from its update().
 */
void aio_handler_fd_invalid(AioContext *ctx, AioHandler *node);
/* Frees a removed handler unless the backend still references it. */
void aio_handler_free(AioContext *ctx, AioHandler *node);
/* Switches backend; all registered handlers move. */
bool aio_fdmon_switch(AioContext *ctx, const FdMonOps *ops, Error **errp);
/*
 * Benchmarks and tests: makes ctx use ops and never switch automatically
 * (e.g. to measure poll with thousands of fds).
 */
bool aio_context_pin_fdmon(AioContext *ctx, const FdMonOps *ops, Error **errp);
/* Drops every handler (context teardown). */
void aio_handlers_cleanup(AioContext *ctx);

/* Nanoseconds until the nearest timer (0 if due), -1 if none. */
int64_t aio_timers_deadline_ns(AioContext *ctx);
/* Runs due timers; true if any ran. */
bool aio_timers_run(AioContext *ctx);
/* Whether any timer is armed (aio_poll skips aio_timers_run() otherwise). */
static inline bool aio_timers_armed(AioContext *ctx)
{
    for (int c = 0; c < AIO_CLOCK_MAX; c++) {
        if (ctx->timers[c]) {
            return true;
        }
    }
    return false;
}

/*
 * The loop is about to do something other than wait in the ring waiter's
 * ring: the waiter sends what it kept for that wait.
 */
static inline void aio_ring_waiter_flush(AioContext *ctx)
{
    if (ctx->ring_waiter) {
        ctx->ring_waiter->flush(ctx->ring_waiter_opaque);
    }
}

/* The loop may block outside the waiter's ring next: see AioRingWaiterOps.release. */
static inline void aio_ring_waiter_release(AioContext *ctx)
{
    if (ctx->ring_waiter) {
        ctx->ring_waiter->flush(ctx->ring_waiter_opaque);
        ctx->ring_waiter->release(ctx->ring_waiter_opaque);
    }
}

/* Rounds of newly scheduled BHs one aio_poll() pass runs after its dispatch. */
#define AIO_POLL_EXTRA_BH_PASSES 2

/* Runs scheduled BHs (all batches, including a nested caller's); true if any ran. */
bool aio_bh_poll(AioContext *ctx);
/* True if a BH is scheduled or aio_notify() was called since the last accept. */
static inline bool aio_has_pending_work(AioContext *ctx)
{
    return __atomic_load_n(&ctx->bh_list, __ATOMIC_RELAXED) != NULL ||
           ctx->bh_slice_head != NULL ||
           __atomic_load_n(&ctx->notified, __ATOMIC_RELAXED);
}
void aio_bh_cleanup(AioContext *ctx);

/*
 * Adjusts the busy-poll window after an aio_poll() that was willing to block
 * waited block_ns in total (polling + sleeping). Exposed for tests.
 */
void aio_poll_adjust_window(AioContext *ctx, int64_t block_ns);
/* First window after growing from 0. */
#define AIO_POLL_INITIAL_NS 4000

/* Converts a relative ns timeout (>= 0) to a timespec. */
static inline struct timespec aio_ns_to_timespec(int64_t ns)
{
    struct timespec ts = { .tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000 };
    return ts;
}

/*
 * io_uring fd monitor. Compiled out (--disable-linux-io-uring), the ops
 * table is NULL and the ring-sharing hooks do nothing.
 */
#ifdef FDMON_IO_URING
extern const FdMonOps fdmon_io_uring_ops;
void fdmon_io_uring_set_foreign(AioContext *ctx, AioFdMonCqeHandler *cb, void *opaque);
static inline const FdMonOps *fdmon_io_uring_get_ops(void)
{
    return &fdmon_io_uring_ops;
}
#else
static inline const FdMonOps *fdmon_io_uring_get_ops(void)
{
    return NULL;
}
static inline void fdmon_io_uring_set_foreign(AioContext *ctx, AioFdMonCqeHandler *cb,
                                              void *opaque)
{
}
#endif

#endif
