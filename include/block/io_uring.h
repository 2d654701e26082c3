/*
 * io_uring engine extras beyond the RawAioOps seam: test and debug hooks.
 *
 * Everything here is cheap when unused (one predictable branch per
 * completion) and exists in the stub build too, so tests need no #ifdef.
 * All functions except luring_probe_uncached() run in the engine's
 * AioContext thread.
 *
 * Registered-buffer pool: raw_aio_io_uring_ops.buf_free() accepts any
 * io_uring instance, or NULL, for a buffer from any instance's pool (even
 * one already destroyed: its pool stays mapped until the last buffer is
 * back), and free()s memory that is not from a pool.
 */
#ifndef BLOCK_IO_URING_H
#define BLOCK_IO_URING_H

#include <stdbool.h>
#include <stdint.h>

#include "block/raw-aio.h"

typedef enum {
    LURING_INJECT_NONE = 0,
    LURING_INJECT_SHORT,    /* next N read/write completions report half the bytes */
    LURING_INJECT_EAGAIN,   /* next N read/write completions report -EAGAIN */
    LURING_INJECT_EBUSY,    /* next N io_uring_enter submits fail with -EBUSY (no syscall) */
} LuringInjectKind;

/*
 * Arms a fault for the next n events of `kind` (replacing any armed fault).
 * The env var RINGBLK_IO_URING_INJECT="short:N" / "eagain:N" / "ebusy:N"
 * arms every new instance the same way.
 */
void luring_debug_inject(RawAioEngine *e, int kind, int n);

/*
 * Restarts the sync_race of an engine created with cfg.sync_race (no-op
 * otherwise) with windows of `window` requests and `run_windows` windows
 * between rounds (include/block/rate-race.h), so a test can see switches.
 */
void luring_debug_race(RawAioEngine *e, uint32_t window, uint32_t run_windows);

/* Counters of one instance, for tests and tuning (not reset). */
typedef struct LuringStats {
    uint64_t submitted;      /* requests accepted by submit() */
    uint64_t sqes;           /* SQEs filled (resubmissions and links included) */
    uint64_t enters;         /* io_uring_enter calls made to submit */
    uint64_t resubmits;      /* short I/O, -EAGAIN, -EINTR continuations */
    uint64_t queued;         /* requests that waited in the overflow FIFO */
    uint64_t submit_retries; /* -EBUSY/-EAGAIN from io_uring_enter */
    uint64_t sync_ops;       /* operations done synchronously (ring cannot) */
    uint64_t fixed_buf_ops;  /* READ_FIXED / WRITE_FIXED */
    uint64_t async_sqes;     /* SQEs sent with IOSQE_ASYNC (async-punt, low depth) */
    uint64_t sync_rw;        /* reads/writes done synchronously (sync_below) */
    uint64_t sync_batches;   /* ... plugged bursts of them run as one io_submit */
    uint64_t inline_reads;   /* page-cache hits read by preadv2(RWF_NOWAIT) at submit */
    uint64_t loop_waits;     /* blocking waits of the event loop in our ring */
    uint64_t loop_fd_wakeups;/* ... that ended because an fd became ready */
    uint64_t eventfd_wakeups;/* runs of the eventfd handler that found it signalled */
    uint64_t task_work_left; /* reaps that left completion work to the loop's next wait */
    uint64_t race_rounds;    /* sync_race rounds decided (luring_race_tick()) */
    uint64_t race_sync_wins; /* ... that all-synchronous won */
} LuringStats;

void luring_get_stats(RawAioEngine *e, LuringStats *st);

/* What the instance actually uses (after AUTO decisions and kernel probes). */
typedef struct LuringInfo {
    unsigned sq_entries;
    unsigned setup_flags;    /* IORING_SETUP_* the ring was created with */
    bool defer_taskrun;      /* SINGLE_ISSUER|DEFER_TASKRUN (the default where supported) */
    bool sqpoll;
    bool shared_fdmon_ring;  /* SQEs go on the context's io_uring fd monitor ring */
    bool shared_sq_thread;   /* attached to another instance's SQ thread */
    bool fixed_files;        /* the fixed-file table is registered (fixed-files on or auto) */
    bool fixed_buffers;
    bool restricted;
    bool registered_ring_fd;
    bool loop_waiter;        /* the event loop blocks in this ring (aio_context_set_ring_waiter) */
    bool eventfd_enabled;    /* completions signal the eventfd now (no IORING_CQ_EVENTFD_DISABLED) */
} LuringInfo;

void luring_get_info(RawAioEngine *e, LuringInfo *info);

/*
 * Submits an IORING_OP_NOP on the instance's ring (an opcode the engine
 * never uses, so a restricted ring refuses it). Returns 0 when queued; the
 * CQE's result is later readable with luring_debug_nop_result(), which
 * returns 1 and sets *res once the CQE was reaped, else 0.
 */
int luring_debug_nop(RawAioEngine *e);
int luring_debug_nop_result(RawAioEngine *e, int *res);

/*
 * If completion work waits to be run (IORING_SQ_TASKRUN) on an instance the
 * loop waits in, marks it left for the loop's next wait, as a reap does
 * when it finds CQEs besides, and returns true; else false.
 */
bool luring_debug_leave_task_work(RawAioEngine *e);

/*
 * Override RINGBLK_IO_URING_TASKRUN ("defer", "plain", "coop"; NULL: the
 * environment) and the share-ring option (1: share wherever the other
 * options allow; 0: never; -1: as the option says) for instances created
 * afterwards, without setenv() in a threaded test.
 */
void luring_debug_set_taskrun(const char *mode);
void luring_debug_set_share_ring(int on);

/*
 * available() without the per-process cache (and without the
 * RINGBLK_IO_URING_DISABLE override): for tests that change the process's
 * privileges, e.g. install a seccomp filter in a forked child.
 */
bool luring_probe_uncached(Error **errp);

#endif
