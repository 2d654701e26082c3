/*
 * io_uring AIO engine (aio=io_uring) behind include/block/raw-aio.h.
 * docs/devel/io_uring.md has the long version and the measurements.
 *
 * Ownership and threads: an instance (LuringEngine) owns one ring and one
 * eventfd and belongs to one AioContext; every entry point except
 * available() runs in that context's thread, so the request path takes no
 * lock (mutexes guard only the process-wide lists of SQPOLL rings and of
 * buffer pools). The ring is SINGLE_ISSUER|DEFER_TASKRUN by default: only
 * the creating thread may submit, which the seam demands anyway.
 *
 * Life of a request: submit() fills one SQE (two for FUA: a write linked to
 * an fdatasync) whose user_data is the RawAioReq pointer (low bits tag the
 * linked fsync). With no free SQE, or while older requests still wait, the
 * request joins the overflow FIFO, so nothing overtakes a FLUSH submitted
 * earlier. Unplugged, the SQE goes to the kernel at once; plugged, at the
 * last unplug; submitted from a completion callback, once after the whole
 * batch of CQEs (a BH covers callbacks that nest aio_poll). Completions
 * wake the eventfd registered with the ring, or are found by the poll
 * handler without a syscall. Each CQE is consumed before its callback runs,
 * so callbacks may submit, plug or nest aio_poll freely. Short transfers,
 * -EAGAIN and -EINTR are resubmitted for what remains; a read returning 0
 * (EOF) zero-fills the rest.
 *
 * In-flight SQEs never exceed the SQ size, and the CQ is twice that, so the
 * CQ cannot overflow. (SQPOLL: see luring_wait_sqe() for the SQ head lag.)
 *
 * What the ring cannot do (all but reads and writes on an IOPOLL ring; a
 * plain fd on a fixed-file-only restricted ring; -EOPNOTSUPP fallbacks)
 * goes to the context's thread pool (raw_aio_do_sync), in FIFO order.
 *
 * With share-ring the engine has no ring: its SQEs ride on the event loop's
 * io_uring fd-monitor ring and come back as foreign CQEs, one io_uring_enter
 * per loop iteration for both (fewer syscalls, but more CPU per I/O here:
 * see docs/devel/io_uring.md, so it is not the default).
 */
#include "config-host.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <linux/fs.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <liburing.h>

#include "block/io_uring.h"
#include "block/rate-race.h"
#include "block/raw-aio.h"
#include "linux-aio-batch.h"
#include "util/thread-pool.h"

/* Constants newer than Debian 12's headers (liburing 2.3, linux 6.1 uapi). */
#ifndef BLOCK_URING_CMD_DISCARD
#define BLOCK_URING_CMD_DISCARD _IO(0x12, 0)    /* Linux 6.12 */
#endif
#ifndef FALLOC_FL_KEEP_SIZE
#define FALLOC_FL_KEEP_SIZE 0x01
#endif
#ifndef FALLOC_FL_PUNCH_HOLE
#define FALLOC_FL_PUNCH_HOLE 0x02
#endif
#ifndef FALLOC_FL_ZERO_RANGE
#define FALLOC_FL_ZERO_RANGE 0x10
#endif

#define LURING_DEFAULT_DEPTH      128
#define LURING_MAX_DEPTH          4096
#define LURING_DEFAULT_SQ_IDLE_MS 1000
#define LURING_SQPOLL_SPIN_NS     (1000 * 1000)   /* luring_loop_spin() */
#define LURING_FILE_SLOTS         1024
#define LURING_LOOP_FILE_SLOT     (LURING_FILE_SLOTS - 1)   /* the loop's epoll fd */
#define LURING_PAGE               4096u

/*
 * Turning the eventfd off (IORING_CQ_EVENTFD_DISABLED) and on again needs
 * the kernel to order its "post work, then look at the disabled bit" with a
 * full barrier, which its locked RMW gives on x86 only.
 */
#if defined(__x86_64__) || defined(__i386__)
#define LURING_EVENTFD_TOGGLE 1
#else
#define LURING_EVENTFD_TOGGLE 0
#endif

#ifndef container_of
#define container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))
#endif

/* user_data tags in the low bits of the (8-aligned) RawAioReq pointer. */
#define TAG_MAIN   0u
#define TAG_LINK   1u     /* the fdatasync linked behind a FUA write */
#define TAG_NOP    2u     /* luring_debug_nop(); pointer is the engine */
#define TAG_LOOP   3u     /* our POLL_ADD on the loop's epoll fd; upper bits: its number */
#define TAG_MASK   7u

/* RawAioReq.engine_u64[0]: per-request state. */
#define ST_PENDING_MASK 0xffu          /* CQEs still expected */
#define ST_FUA_PAIR     (1u << 8)      /* write + linked fdatasync in the ring */
#define ST_SYNC_ONLY    (1u << 9)      /* FUA data done; only the fdatasync remains */
#define ST_PUNCH        (1u << 10)     /* write zeroes retried as punch hole */
#define ST_POST_SYNC    (1u << 11)     /* IOPOLL FUA: fdatasync after the write */
#define ST_SYNC         (1u << 12)     /* whole operation runs synchronously */
#define ST_DSYNC        (1u << 13)     /* shared ring FUA: a write with RWF_DSYNC */
/* engine_u64[1]: results of a FUA pair: low 32 bits write, high 32 fsync. */

typedef struct LuringEngine {
    RawAioEngine base;                 /* first: raw-aio.c sees only this */
    struct io_uring ring;
    EventNotifier notifier;
    AioBH *submit_bh;                  /* deferred submit / retry after -EBUSY */
    AioBH *done_bh;                    /* completes synchronous operations */
    AioBH *iopoll_bh;                  /* reaps an IOPOLL ring without SQPOLL */
    ThreadPool *pool_tp;               /* for what the ring cannot do; on first use */
    unsigned tp_inflight;

    unsigned sq_entries;
    unsigned inflight;                 /* SQEs filled and not yet completed */
    unsigned plugged;
    unsigned reaping;                  /* our frames running callbacks (luring_cb_enter) */
    bool submit_bh_pending;
    bool polling;                      /* the loop busy-polls us: eventfd off */
    bool taskrun_stale;                /* IORING_SQ_TASKRUN set with nothing to run */
    bool taskrun_left;                 /* completion work left for the loop's next wait */
    bool zombie;                       /* destroyed from within one of our callbacks */

    RawAioReq *ovf_head, *ovf_tail;    /* waiting for free SQEs, FIFO */
    RawAioReq *done_head, *done_tail;  /* synchronous results awaiting their BH */
    unsigned done_pending;             /* length of that list */
    unsigned sync_below;               /* luring_rw_sync(): cfg's, or the race's arm 1 */
    unsigned sync_split;               /* cfg.sync_below */
    /* cfg.sync_race: the split against all synchronous, luring_race_tick() */
    bool sync_race;
    RateRace race;
    /* sync_below requests of a plugged burst, run at the unplug in one io_submit. */
    RawAioReq **sync_burst;            /* sync_cap entries, from the first burst */
    int *sync_rets;
    unsigned sync_held, sync_cap;
    LaioBatch *sync_batch;
    bool sync_no_batch;                /* Linux AIO unusable: each runs alone */

    unsigned setup_flags;
    bool async_punt;                   /* IOSQE_ASYNC at low depth: luring_mark_async() */
    uint8_t sqe_base_flags;            /* IOSQE_ASYNC on every SQE: async-punt, shared ring */
    bool iopoll, sqpoll, defer_taskrun, taskrun_flag;
    bool restricted;
    bool reg_ring_fd;
    bool inline_reads;                 /* lone page-cache reads by preadv2 (RWF_NOWAIT) */
    bool blk_discard_cmd;              /* IORING_OP_URING_CMD usable for BLKDISCARD */
    /*
     * The loop blocks in our ring while we have requests in flight
     * (aio_context_set_ring_waiter): one io_uring_enter submits and waits,
     * and a one-shot POLL_ADD on the loop's epoll fd wakes it for fd events.
     */
    bool loop_waiter;
    /*
     * The eventfd stays off after a loop wait, until the loop blocks
     * elsewhere (luring_loop_release): the loop's next wait is in our ring
     * again, and each signal meanwhile cost the io-wq worker an eventfd
     * write and the loop a wasted wait (the epoll fd became ready).
     */
    bool evfd_parked;
    bool submit_deferred;              /* staged SQEs left for the loop's next wait */
    bool loop_poll_armed;              /* that POLL_ADD is in the kernel */
    int loop_poll_fd;                  /* the epoll fd it watches */
    uint64_t loop_poll_seq;            /* its number, in its user_data */
    /*
     * Sharing the fd monitor's ring: SQEs go on ctx's io_uring fd-monitor
     * ring (sq_ring), are submitted by the loop's next wait together with
     * it, and come back as foreign CQEs in the loop's dispatch phase.
     */
    bool shared;
    struct io_uring *sq_ring;          /* &ring, or the fd monitor's ring */

    /* Fixed files: slot bitmap. */
    bool fixed_files;             /* the fixed-file table is registered */
    bool fixed_required;          /* fixed-files=on: a restricted ring takes no plain fd */
    uint64_t file_used[LURING_FILE_SLOTS / 64];

    /* Fixed buffers: one registered region (pool, pool_size: copies of bufpool's). */
    struct LuringPool *bufpool;
    uint8_t *pool;
    size_t pool_size;

    /* Debug injection. */
    int inj_kind;
    int inj_count;
    bool nop_done;
    int nop_res;

    LuringStats stats;
    struct LuringEngine *sqpoll_next;
} LuringEngine;

static inline LuringEngine *luring_of(RawAioEngine *base)
{
    return (LuringEngine *)base;
}

/*
 * Completion work waits in the kernel until we enter (deferred or
 * cooperative task running); the kernel says so through a flag.
 */
static inline bool luring_task_work_flagged(const LuringEngine *e)
{
    return e->taskrun_flag &&
           (IO_URING_READ_ONCE(*e->ring.sq.kflags) & IORING_SQ_TASKRUN);
}

/* ---- Probe (once per process) ------------------------------------------------ */

typedef struct LuringCaps {
    bool ok;
    char *err;
    unsigned setup_flags;              /* optional IORING_SETUP_* accepted */
    bool restrictions;
    bool op_uring_cmd;
    bool op_fixed;
} LuringCaps;

static LuringCaps luring_caps;
static pthread_once_t luring_caps_once = PTHREAD_ONCE_INIT;

static int sys_io_uring_setup(unsigned entries, struct io_uring_params *p)
{
    int fd = syscall(__NR_io_uring_setup, entries, p);
    return fd < 0 ? -errno : fd;
}

static int sys_io_uring_register(int fd, unsigned op, const void *arg, unsigned n)
{
    int ret = syscall(__NR_io_uring_register, fd, op, arg, n);
    return ret < 0 ? -errno : ret;
}

static int read_int_file(const char *path, int *val)
{
    FILE *f = fopen(path, "re");
    int ok;

    if (!f) {
        return -errno;
    }
    ok = fscanf(f, "%d", val) == 1;
    fclose(f);
    return ok ? 0 : -EINVAL;
}

static bool luring_setup_error(int err, Error **errp)
{
    int disabled = 0, seccomp = 0;
    FILE *f;
    char line[128];

    /* Seccomp mode of this process: 2 means a filter is installed. */
    f = fopen("/proc/self/status", "re");
    if (f) {
        while (fgets(line, sizeof(line), f)) {
            if (sscanf(line, "Seccomp: %d", &seccomp) == 1) {
                break;
            }
        }
        fclose(f);
    }
    if (err == -ENOSYS) {
        if (seccomp == 2) {
            error_setg(errp, "io_uring is unavailable: io_uring_setup is blocked, "
                       "e.g. by a seccomp filter such as Docker's default profile "
                       "(ENOSYS)");
        } else {
            error_setg(errp, "io_uring is unavailable: the kernel has no io_uring "
                       "(ENOSYS; Linux 5.1 or newer with CONFIG_IO_URING is needed)");
        }
        return false;
    }
    if (err == -EPERM || err == -EACCES) {
        if (read_int_file("/proc/sys/kernel/io_uring_disabled", &disabled) == 0 &&
            disabled == 2) {
            error_setg(errp, "io_uring is unavailable: disabled by the sysctl "
                       "kernel.io_uring_disabled=2");
            return false;
        }
        if (disabled == 1) {
            error_setg(errp, "io_uring is unavailable: kernel.io_uring_disabled=1 "
                       "allows it only to members of the group kernel.io_uring_group "
                       "(or CAP_SYS_ADMIN)");
            return false;
        }
        error_setg(errp, "io_uring is unavailable: io_uring_setup is blocked, "
                   "e.g. by a seccomp filter such as Docker's default profile "
                   "(%s)", strerror(-err));
        return false;
    }
    error_setg_errno(errp, -err, "io_uring is unavailable: io_uring_setup failed");
    return false;
}

/* Whether the kernel accepts setup flag(s) `flags` on a tiny ring. */
static bool luring_setup_flag_ok(unsigned flags)
{
    struct io_uring_params p = { .flags = flags };
    int fd = sys_io_uring_setup(1, &p);

    if (fd < 0) {
        return false;
    }
    close(fd);
    return true;
}

static bool luring_probe_into(LuringCaps *caps, Error **errp)
{
    struct io_uring_params p = { 0 };
    struct io_uring ring;
    struct io_uring_probe *probe;
    static const unsigned optional[] = {
        IORING_SETUP_SUBMIT_ALL, IORING_SETUP_COOP_TASKRUN,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
        IORING_SETUP_SINGLE_ISSUER,
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
        IORING_SETUP_R_DISABLED,
    };
    int fd = sys_io_uring_setup(1, &p);

    memset(caps, 0, sizeof(*caps));
    if (fd < 0) {
        return luring_setup_error(fd, errp);
    }
    close(fd);
    for (size_t i = 0; i < G_N_ELEMENTS(optional); i++) {
        if (luring_setup_flag_ok(optional[i])) {
            caps->setup_flags |= optional[i];
        }
    }
    if (io_uring_queue_init(1, &ring, 0) == 0) {
        probe = io_uring_get_probe_ring(&ring);
        if (probe) {
            caps->op_uring_cmd = io_uring_opcode_supported(probe, IORING_OP_URING_CMD);
            caps->op_fixed = io_uring_opcode_supported(probe, IORING_OP_READ_FIXED);
            io_uring_free_probe(probe);
        }
        io_uring_queue_exit(&ring);
    }
    caps->restrictions = caps->setup_flags & IORING_SETUP_R_DISABLED;
    caps->ok = true;
    return true;
}

static void luring_probe_once(void)
{
    Error *err = NULL;
    const char *env = getenv("RINGBLK_IO_URING_DISABLE");

    if (env && *env && strcmp(env, "0") != 0) {
        luring_caps.ok = false;
        luring_caps.err = g_strdup("io_uring is unavailable: disabled by "
                                   "RINGBLK_IO_URING_DISABLE");
        return;
    }
    if (!luring_probe_into(&luring_caps, &err)) {
        luring_caps.err = g_strdup(error_get_pretty(err));
        error_free(err);
    }
}

bool luring_probe_uncached(Error **errp)
{
    LuringCaps caps;

    return luring_probe_into(&caps, errp);
}

static bool luring_available(Error **errp)
{
    pthread_once(&luring_caps_once, luring_probe_once);
    if (!luring_caps.ok) {
        error_setg(errp, "%s", luring_caps.err);
        return false;
    }
    return true;
}

/* ---- Test overrides of the tuning environment variables ---------------------- */

/* Read at create() in the context's thread; set by tests between tests. */
static const char *luring_taskrun_override;
static int luring_share_override = -1;

void luring_debug_set_taskrun(const char *mode)
{
    luring_taskrun_override = mode;
}

void luring_debug_set_share_ring(int on)
{
    luring_share_override = on;
}

/* ---- SQPOLL sharing ------------------------------------------------------------ */

/* Live SQPOLL rings; a new one attaches to a matching one's SQ thread. */
static pthread_mutex_t luring_sqpoll_lock = PTHREAD_MUTEX_INITIALIZER;
static LuringEngine *luring_sqpoll_list;

/* ---- Submission --------------------------------------------------------------- */

static void luring_fill_sqes(LuringEngine *e, RawAioReq *req);
static void luring_flush(LuringEngine *e);

static inline void luring_set_file(LuringEngine *e, struct io_uring_sqe *sqe,
                                   const RawAioReq *req)
{
    if (req->file_slot >= 0) {
        sqe->fd = req->file_slot;
        sqe->flags |= IOSQE_FIXED_FILE;
    }
}

/* SQEs a request needs now; 0 for synchronous operations. */
static inline unsigned luring_sqes_needed(const RawAioReq *req)
{
    uint64_t st = req->engine_u64[0];

    if (st & ST_SYNC) {
        return 0;
    }
    return (st & ST_FUA_PAIR) && !(st & ST_SYNC_ONLY) ? 2 : 1;
}

static void luring_done_push(LuringEngine *e, RawAioReq *req, int ret)
{
    req->engine_u64[1] = (uint64_t)(int64_t)ret;
    req->next = NULL;
    if (e->done_tail) {
        e->done_tail->next = req;
    } else {
        e->done_head = req;
    }
    e->done_tail = req;
    e->done_pending++;
    aio_bh_schedule(e->done_bh);
}

static void luring_sync_done(void *opaque, int ret);

/* Worker-thread halves of what the ring cannot do. */
static int luring_sync_work(void *opaque)
{
    return raw_aio_do_sync(opaque);
}

static int luring_fdatasync_work(void *opaque)
{
    RawAioReq *req = opaque;

    while (fdatasync(req->fd) < 0) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

/* Hands req to the context's thread pool; luring_sync_done() finishes it. */
static void luring_offload(LuringEngine *e, RawAioReq *req, ThreadPoolFunc *fn)
{
    if (!e->pool_tp) {
        e->pool_tp = thread_pool_get(e->base.ctx);
    }
    e->stats.sync_ops++;
    e->tp_inflight++;
    req->engine_priv[0] = e;
    thread_pool_submit(e->pool_tp, fn, req, luring_sync_done, req);
}

/*
 * Places req in the ring if it fits and nothing waits before it; else
 * appends it to the overflow FIFO. Synchronous operations also respect the
 * FIFO so they never overtake queued requests.
 */
static inline void luring_enqueue(LuringEngine *e, RawAioReq *req)
{
    unsigned need = luring_sqes_needed(req);

    if (!e->ovf_head) {
        if (need == 0) {
            luring_offload(e, req, luring_sync_work);
            return;
        }
        /* Unconsumed SQEs <= inflight, so this also guarantees free SQEs. */
        if (e->inflight + need <= e->sq_entries) {
            luring_fill_sqes(e, req);
            return;
        }
    }
    e->stats.queued++;
    req->next = NULL;
    if (e->ovf_tail) {
        e->ovf_tail->next = req;
    } else {
        e->ovf_head = req;
    }
    e->ovf_tail = req;
}

/* Moves requests from the overflow FIFO into free SQEs, in order. */
static void luring_refill(LuringEngine *e)
{
    RawAioReq *req;

    while ((req = e->ovf_head)) {
        unsigned need = luring_sqes_needed(req);

        if (e->inflight + need > e->sq_entries) {
            break;
        }
        e->ovf_head = req->next;
        if (!e->ovf_head) {
            e->ovf_tail = NULL;
        }
        if (need == 0) {
            luring_offload(e, req, luring_sync_work);
        } else {
            luring_fill_sqes(e, req);
        }
    }
}

/*
 * Finds where a partly done read/write resumes: segment *idx, *skip bytes
 * into it. Only walked on resubmission.
 */
static void luring_iov_pos(const RawAioReq *req, int *idx, size_t *skip)
{
    uint64_t left = req->done;
    int i = 0;

    while (i < req->niov && left >= req->iov[i].iov_len) {
        left -= req->iov[i].iov_len;
        i++;
    }
    *idx = i;
    *skip = left;
}

static inline bool luring_in_pool(const LuringEngine *e, const void *p, size_t len)
{
    const uint8_t *b = p;

    return e->pool && b >= e->pool && len <= e->pool_size &&
           (size_t)(b - e->pool) <= e->pool_size - len;
}

/* One buffer: from the registered pool (buffer index 0) when it lies there. */
static inline void luring_prep_segment(LuringEngine *e, struct io_uring_sqe *sqe,
                                       const RawAioReq *req, bool write, void *base,
                                       size_t len, uint64_t off)
{
    if (luring_in_pool(e, base, len)) {
        io_uring_prep_rw(write ? IORING_OP_WRITE_FIXED : IORING_OP_READ_FIXED,
                         sqe, req->fd, base, len, off);
        sqe->buf_index = 0;
        e->stats.fixed_buf_ops++;
        return;
    }
    io_uring_prep_rw(write ? IORING_OP_WRITE : IORING_OP_READ, sqe, req->fd,
                     base, len, off);
}

static void luring_prep_rw(LuringEngine *e, struct io_uring_sqe *sqe, RawAioReq *req)
{
    bool write = req->type == RAW_AIO_WRITE;
    uint64_t off = req->offset + req->done;
    const struct iovec *iov = req->iov;
    int niov = req->niov;
    void *base;
    size_t len;

    if (req->done) {
        int idx;
        size_t skip;

        luring_iov_pos(req, &idx, &skip);
        iov += idx;
        niov -= idx;
        if (skip) {
            /*
             * Resuming mid-segment: the caller's iov array may not be
             * modified, so finish this segment alone; the next round
             * continues with the untouched tail of the array.
             */
            base = (uint8_t *)iov->iov_base + skip;
            len = iov->iov_len - skip;
            goto single;
        }
    }
    if (niov == 1) {
        base = iov->iov_base;
        len = iov->iov_len;
        goto single;
    }
    /* Past IOV_MAX the kernel refuses; the rest follows as a "short" transfer. */
    io_uring_prep_rw(write ? IORING_OP_WRITEV : IORING_OP_READV, sqe, req->fd,
                     iov, MIN(niov, IOV_MAX), off);
    return;

single:
    luring_prep_segment(e, sqe, req, write, base, len, off);
}

static void luring_prep_zeroes(struct io_uring_sqe *sqe, RawAioReq *req)
{
    int mode;

    if (req->flags & RAW_AIO_BLKDEV) {
        /* blkdev_fallocate(ZERO_RANGE) is what BLKZEROOUT does. */
        mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    } else if (req->engine_u64[0] & ST_PUNCH) {
        mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    } else {
        /* Like a write, zeroing past EOF extends the file. */
        mode = FALLOC_FL_ZERO_RANGE;
    }
    io_uring_prep_fallocate(sqe, req->fd, mode, req->offset, req->bytes);
}

static inline uint64_t luring_user_data(LuringEngine *e, RawAioReq *req, unsigned tag)
{
    /* The fd monitor routes CQEs tagged AIO_FDMON_CQE_FOREIGN_TAG to us. */
    return (uint64_t)(uintptr_t)req | (e->shared ? AIO_FDMON_CQE_FOREIGN_TAG : tag);
}

/* Out of line: the SQ had no free entry when we needed one. */
static G_GNUC_NO_INLINE struct io_uring_sqe *luring_wait_sqe(LuringEngine *e)
{
    struct io_uring_sqe *sqe = NULL;

    while (!sqe) {
        int ret;

        /*
         * Shared ring: its other user may have filled the SQ; push it out.
         * SQPOLL: the SQ thread posts the CQEs of a batch before it
         * advances the SQ head (io_submit_sqes: flush completions, then
         * commit the head), so a slot we counted free may still look taken
         * for a moment: publish our SQEs (waking the thread if it sleeps)
         * and wait for space. Without SQPOLL the in-flight cap guarantees
         * a free SQE, unless the loop's POLL_ADD (luring_loop_wait) took
         * one and its submit failed (-EBUSY): push it out too.
         */
        g_assert(e->shared || e->sqpoll || e->loop_waiter);
        ret = io_uring_submit(e->sq_ring);
        if (ret >= 0 && e->sqpoll) {
            ret = io_uring_sqring_wait(e->sq_ring);
        }
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
            g_error("io_uring: no free SQE: %s", strerror(-ret));
        }
        sqe = io_uring_get_sqe(e->sq_ring);
    }
    return sqe;
}

static inline struct io_uring_sqe *luring_get_sqe(LuringEngine *e)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(e->sq_ring);

    return G_LIKELY(sqe) ? sqe : luring_wait_sqe(e);
}

/*
 * The common step: a whole read or write of one segment with no FUA or
 * sync state, one SQE. What luring_fill_sqes() does for it, without the
 * tests for everything else.
 */
static inline void luring_fill_rw_whole(LuringEngine *e, RawAioReq *req)
{
    struct io_uring_sqe *sqe = luring_get_sqe(e);

    luring_prep_segment(e, sqe, req, req->type == RAW_AIO_WRITE, req->iov[0].iov_base,
                        req->iov[0].iov_len, req->offset);
    sqe->flags |= e->sqe_base_flags;
    luring_set_file(e, sqe, req);
    io_uring_sqe_set_data64(sqe, luring_user_data(e, req, TAG_MAIN));
    req->engine_u64[0] = 1;     /* one CQE pending, no other state */
    e->inflight++;
    e->stats.sqes++;
}

/* Fills the SQE(s) for req's current step; the caller checked space. */
static void luring_fill_sqes(LuringEngine *e, RawAioReq *req)
{
    if (G_LIKELY(!req->engine_u64[0] && !req->done && req->niov == 1 &&
                 (req->type == RAW_AIO_READ || req->type == RAW_AIO_WRITE))) {
        luring_fill_rw_whole(e, req);
        return;
    }
    if (G_UNLIKELY(e->sqpoll) && luring_sqes_needed(req) == 2) {
        /* Both halves of a link must go out together (see luring_wait_sqe). */
        while (io_uring_sq_space_left(&e->ring) < 2) {
            io_uring_submit(&e->ring);
            io_uring_sqring_wait(&e->ring);
        }
    }
    struct io_uring_sqe *sqe = luring_get_sqe(e);
    uint64_t st = req->engine_u64[0];

    switch (req->type) {
    case RAW_AIO_READ:
    case RAW_AIO_WRITE:
        if (st & ST_SYNC_ONLY) {
            io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
        } else {
            luring_prep_rw(e, sqe, req);
        }
        break;
    case RAW_AIO_FLUSH:
        io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
        break;
    case RAW_AIO_DISCARD:
        if (req->flags & RAW_AIO_BLKDEV) {
            /* BLOCK_URING_CMD_DISCARD: start in addr, length in addr3. */
            io_uring_prep_rw(IORING_OP_URING_CMD, sqe, req->fd, NULL, 0, 0);
            sqe->cmd_op = BLOCK_URING_CMD_DISCARD;
            sqe->addr = req->offset;
            sqe->addr3 = req->bytes;
        } else {
            io_uring_prep_fallocate(sqe, req->fd,
                                    FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                    req->offset, req->bytes);
        }
        break;
    case RAW_AIO_WRITE_ZEROES:
        luring_prep_zeroes(sqe, req);
        break;
    default:
        g_assert_not_reached();
    }
    sqe->flags |= e->sqe_base_flags;
    luring_set_file(e, sqe, req);
    io_uring_sqe_set_data64(sqe, luring_user_data(e, req, TAG_MAIN));
    if (st & ST_DSYNC) {
        sqe->rw_flags |= RWF_DSYNC;
    }
    st = (st & ~(uint64_t)ST_PENDING_MASK) | 1;
    e->inflight++;
    e->stats.sqes++;

    if ((st & ST_FUA_PAIR) && !(st & ST_SYNC_ONLY)) {
        /*
         * FUA: the fdatasync runs only after the write fully succeeded;
         * a failed or short write cancels it (-ECANCELED).
         */
        struct io_uring_sqe *link = luring_get_sqe(e);

        sqe->flags |= IOSQE_IO_LINK;
        io_uring_prep_fsync(link, req->fd, IORING_FSYNC_DATASYNC);
        link->flags |= e->sqe_base_flags;
        luring_set_file(e, link, req);
        io_uring_sqe_set_data64(link, (uint64_t)(uintptr_t)req | TAG_LINK);
        st = (st & ~(uint64_t)ST_PENDING_MASK) | 2;
        req->engine_u64[1] = 0;
        e->inflight++;
        e->stats.sqes++;
    }
    req->engine_u64[0] = st;
}

/*
 * Called when io_uring_enter itself failed with something other than
 * -EBUSY/-EAGAIN/-EINTR (a dead ring, a SINGLE_ISSUER violation): the SQEs
 * the kernel did not take are pulled back and their requests fail.
 */
static void luring_fail_unsubmitted(LuringEngine *e, int err)
{
    struct io_uring_sq *sq = &e->ring.sq;
    unsigned head = *sq->khead;
    unsigned tail = sq->sqe_tail;

    if (e->sqpoll) {
        return;     /* the SQ thread owns khead; nothing to pull back safely */
    }
    for (unsigned i = head; i != tail; i++) {
        struct io_uring_sqe *sqe = &sq->sqes[sq->array[i & sq->ring_mask]];
        uint64_t ud = sqe->user_data;
        RawAioReq *req = (RawAioReq *)(uintptr_t)(ud & ~(uint64_t)TAG_MASK);

        e->inflight--;
        if ((ud & TAG_MASK) == TAG_MAIN) {
            luring_done_push(e, req, err);
        } else if ((ud & TAG_MASK) == TAG_NOP) {
            e->nop_done = true;
            e->nop_res = err;
        }
    }
    /* Nothing reached the kernel: rewind the tail it would read. */
    sq->sqe_tail = sq->sqe_head = head;
    io_uring_smp_store_release(sq->ktail, head);
}

/* SQEs filled and not yet taken by the kernel (own ring only). */
static inline unsigned luring_staged(LuringEngine *e)
{
    return e->shared ? 0 : io_uring_sq_ready(&e->ring);
}

static inline void luring_schedule_submit(LuringEngine *e)
{
    if (!e->submit_bh_pending) {
        e->submit_bh_pending = true;
        aio_bh_schedule(e->submit_bh);
    }
}

static void luring_flush_ring(LuringEngine *e);

/*
 * async-punt (a file that cannot take non-blocking I/O): IOSQE_ASYNC sends
 * a request straight to an io-wq worker, skipping an inline attempt that
 * must fail. Whether that pays depends on the depth (Linux 6.18, 4 KiB
 * reads, zram and tmpfs O_DIRECT; docs/devel/performance.md has the table):
 *   - up to 8 in flight it does: 2.3x at depth 1 (zram 26k -> 66k), 1.3x
 *     at 4 and 8. Forced requests (IO_WQ_WORK_CONCURRENT) make io-wq start
 *     more workers, one of them idle and ready when the next request comes.
 *   - from 12 on it costs up to 40% (zram d16 1.09M without, 670k with):
 *     each forced request wakes an idle worker, and the workers take turns.
 * Registered files and buffers follow the same line the other way: a
 * forced request resolves them in the worker, which takes the ring's lock
 * against our submitting thread (zram d8 537k plain, 330k fixed), while
 * the failed inline attempt resolves them here, where they save the
 * kernel work (zram d16 1.09M fixed, 700k plain). So it is decided per
 * submission, by how many requests the submission leaves in flight: below
 * LURING_ASYNC_MAX_INFLIGHT its SQEs get IOSQE_ASYNC and plain fds and
 * buffers (unless fixed-files=on demands the table). Only SQEs not yet
 * published to the kernel are touched.
 */
#define LURING_ASYNC_MAX_INFLIGHT 12

static void luring_unfix(LuringEngine *e, struct io_uring_sqe *sqe)
{
    uint64_t ud = sqe->user_data;
    RawAioReq *req = (RawAioReq *)(uintptr_t)(ud & ~(uint64_t)TAG_MASK);

    if ((ud & TAG_MASK) != TAG_MAIN && (ud & TAG_MASK) != TAG_LINK) {
        return;
    }
    if ((sqe->flags & IOSQE_FIXED_FILE) && !e->fixed_required) {
        sqe->flags &= ~IOSQE_FIXED_FILE;
        sqe->fd = req->fd;
    }
    /* Same addr, len and offset; buf_index is ignored by the plain ops. */
    if (sqe->opcode == IORING_OP_READ_FIXED || sqe->opcode == IORING_OP_WRITE_FIXED) {
        sqe->opcode = sqe->opcode == IORING_OP_READ_FIXED ? IORING_OP_READ : IORING_OP_WRITE;
        sqe->buf_index = 0;
        e->stats.fixed_buf_ops--;
    }
}

static void luring_mark_async(LuringEngine *e)
{
    struct io_uring_sq *sq = &e->ring.sq;

    if (!e->async_punt || e->inflight >= LURING_ASYNC_MAX_INFLIGHT) {
        return;
    }
    for (unsigned i = sq->sqe_head; i != sq->sqe_tail; i++) {
        struct io_uring_sqe *sqe = &sq->sqes[sq->array[i & sq->ring_mask]];

        if (sqe->flags & IOSQE_ASYNC) {
            continue;   /* marked by an earlier pass over the same SQEs */
        }
        sqe->flags |= IOSQE_ASYNC;
        e->stats.async_sqes++;
        luring_unfix(e, sqe);
    }
}

/*
 * Turns the eventfd back on after we had it off. Work queued meanwhile
 * signalled nothing and never will: after a full barrier (pairing with
 * the kernel's "post work, then look at the disabled bit", see
 * LURING_EVENTFD_TOGGLE), true when the CQ or the task-work flag shows
 * some. The flag counts even when we believed it stale.
 */
static bool luring_evfd_on_missed_work(LuringEngine *e)
{
    io_uring_cq_eventfd_toggle(&e->ring, true);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (io_uring_cq_ready(&e->ring) || luring_task_work_flagged(e)) {
        e->taskrun_stale = false;
        e->taskrun_left = false;
        return true;
    }
    return false;
}

/*
 * Sends every filled SQE to the kernel (one io_uring_enter, barring errors).
 *
 * Requests that complete inside the submit (page-cache hits) post their
 * CQEs before it returns, and each such batch would also signal the
 * eventfd: a ppoll and a read per batch for CQEs we are about to look at
 * anyway. So the eventfd is off while we submit; afterwards, the same
 * barrier-and-look as in luring_run_task_work() decides whether the reap
 * BH must pick up what arrived (never left to a wakeup that was not sent).
 */
static void luring_flush(LuringEngine *e)
{
    if (e->shared) {
        return;     /* the loop's next wait submits the shared ring */
    }
    e->submit_deferred = false;
#if LURING_EVENTFD_TOGGLE
    if (!e->polling && !e->evfd_parked && !e->sqpoll && !e->iopoll &&
        io_uring_sq_ready(&e->ring)) {
        io_uring_cq_eventfd_toggle(&e->ring, false);
        luring_flush_ring(e);
        if (luring_evfd_on_missed_work(e)) {
            luring_schedule_submit(e);
        }
        return;
    }
#endif
    luring_flush_ring(e);
}

static void luring_flush_ring(LuringEngine *e)
{
    int ret;

    luring_mark_async(e);

    while (io_uring_sq_ready(&e->ring)) {
        if (G_UNLIKELY(e->inj_kind == LURING_INJECT_EBUSY && e->inj_count > 0)) {
            e->inj_count--;
            ret = -EBUSY;
        } else {
            /* With SQPOLL this enters the kernel only to wake a sleeping SQ thread. */
            ret = io_uring_submit(&e->ring);
            e->stats.enters++;
        }
        if (ret > 0 || (ret == 0 && e->sqpoll)) {
            if (e->sqpoll) {
                return;
            }
            continue;   /* a partial submit goes again for the rest */
        }
        if (ret == -EINTR) {
            continue;
        }
        if (ret == -EBUSY || ret == -EAGAIN || ret == 0) {
            /*
             * CQ backlog, or no memory for requests right now: the SQEs stay
             * in the ring; the BH reaps completions and retries.
             */
            e->stats.submit_retries++;
            luring_schedule_submit(e);
            return;
        }
        if (ret == -EEXIST && e->defer_taskrun) {
            static bool reported;

            if (!reported) {
                reported = true;
                error_report("io_uring: a ring was used from a thread other than the "
                             "one that created it (SINGLE_ISSUER); engines must be "
                             "created and used in their AioContext's thread "
                             "(RINGBLK_IO_URING_TASKRUN=plain lifts the restriction)");
            }
        }
        luring_fail_unsubmitted(e, ret);
        return;
    }
}

/*
 * End of a batch of completions: submit what the callbacks queued. When the
 * loop waits in our ring, its next wait submits them in the same
 * io_uring_enter (the loop calls luring_loop_flush() first if it does
 * anything else): one syscall per depth-1 request instead of two.
 */
static inline void luring_flush_after_callbacks(LuringEngine *e)
{
    if (e->loop_waiter && !e->sqpoll) {
        e->submit_deferred = true;
        return;
    }
    luring_flush(e);
}

/* Submit now, or leave it to the end of the batch/unplug/BH. */
static inline void luring_kick(LuringEngine *e)
{
    if (e->plugged || e->shared) {
        return;     /* everything goes out at the last unplug */
    }
    if (e->reaping && io_uring_cq_ready(&e->ring)) {
        /*
         * More CQEs of this batch to come: their callbacks' submissions go
         * out together when luring_reap() ends; the BH covers a callback
         * that nests aio_poll() waiting for what it submitted. After the
         * batch's last CQE there is nothing to coalesce with: submit now
         * (scheduling the BH would also cost the loop a non-blocking pass).
         */
        luring_schedule_submit(e);
        return;
    }
    if (e->reaping || aio_context_polling_here(e->base.ctx)) {
        /*
         * Inside aio_poll(ctx) (a reap, or a BH or handler that unplugs)
         * the loop's next step is a wait that can submit this too.
         */
        luring_flush_after_callbacks(e);
    } else {
        luring_flush(e);
    }
    if (e->iopoll && !e->sqpoll && e->inflight) {
        aio_bh_schedule(e->iopoll_bh);
    }
}

/* ---- Completion ---------------------------------------------------------------- */

static inline void luring_finish(RawAioReq *req, int ret)
{
    req->cb(req->opaque, ret);
}

static void luring_resubmit(LuringEngine *e, RawAioReq *req)
{
    e->stats.resubmits++;
    if (e->ovf_head) {
        /* A continuation is older than anything waiting: it goes first. */
        e->stats.queued++;
        req->next = e->ovf_head;
        e->ovf_head = req;
        luring_refill(e);
        return;
    }
    luring_enqueue(e, req);
}

/* Zero-fills a read's buffers from req->done to the end (EOF reached). */
static void luring_zero_rest(RawAioReq *req)
{
    int idx;
    size_t skip;

    luring_iov_pos(req, &idx, &skip);
    for (int i = idx; i < req->niov; i++) {
        memset((uint8_t *)req->iov[i].iov_base + skip, 0, req->iov[i].iov_len - skip);
        skip = 0;
    }
}

/* Handles the result of a read or write step; FUA pairs come here once both CQEs are in. */
static void luring_complete_rw(LuringEngine *e, RawAioReq *req, int res, int sync_res)
{
    uint64_t st = req->engine_u64[0];

    if (st & ST_SYNC_ONLY) {
        if (sync_res == -EAGAIN || sync_res == -EINTR) {
            luring_resubmit(e, req);
            return;
        }
        luring_finish(req, sync_res);
        return;
    }
    if (res == -EAGAIN || res == -EINTR) {
        /* Retried even with nothing else in flight: the kernel gave no progress. */
        luring_resubmit(e, req);
        return;
    }
    if (res < 0) {
        luring_finish(req, res);
        return;
    }
    if (res == 0 && req->done < req->bytes) {
        if (req->type == RAW_AIO_READ) {
            /* EOF: what lies beyond reads as zeroes (images may end short). */
            luring_zero_rest(req);
            luring_finish(req, 0);
        } else {
            /* A write that makes no progress at all will not make any later. */
            luring_finish(req, -ENOSPC);
        }
        return;
    }
    req->done += (uint64_t)res;
    if (req->done < req->bytes) {
        /* Short transfer: go again for the remainder, at the advanced offset. */
        luring_resubmit(e, req);
        return;
    }
    if (st & ST_FUA_PAIR) {
        if (sync_res == 0) {
            luring_finish(req, 0);
            return;
        }
        if (sync_res == -EAGAIN || sync_res == -EINTR || sync_res == -ECANCELED) {
            /*
             * -ECANCELED: the write looked short to the kernel (it then
             * cancels the link) though our count says done, e.g. an earlier
             * round covered the rest. Either way: sync again, alone.
             */
            req->engine_u64[0] |= ST_SYNC_ONLY;
            luring_resubmit(e, req);
            return;
        }
        luring_finish(req, sync_res);
        return;
    }
    if (st & ST_POST_SYNC) {
        luring_offload(e, req, luring_fdatasync_work);
        return;
    }
    luring_finish(req, 0);
}

static void luring_complete_other(LuringEngine *e, RawAioReq *req, int res)
{
    if (res == -EAGAIN || res == -EINTR) {
        luring_resubmit(e, req);
        return;
    }
    if (res == -EOPNOTSUPP && (req->type == RAW_AIO_WRITE_ZEROES ||
                               (req->flags & RAW_AIO_BLKDEV))) {
        /*
         * No ZERO_RANGE here (tmpfs, some network file systems), or a
         * kernel before 6.12 without BLOCK_URING_CMD_DISCARD, or a device
         * that cannot: the synchronous path has every fallback and says
         * -ENOTSUP when nothing works.
         */
        req->engine_u64[0] |= ST_SYNC;
        e->stats.resubmits++;
        luring_offload(e, req, luring_sync_work);
        return;
    }
    if (res == -EOPNOTSUPP) {
        res = -ENOTSUP;
    }
    luring_finish(req, res);
}

static inline int luring_inject(LuringEngine *e, RawAioReq *req, int res)
{
    if (req->type != RAW_AIO_READ && req->type != RAW_AIO_WRITE) {
        return res;
    }
    if (e->inj_kind == LURING_INJECT_SHORT && res >= 2) {
        /* Keep O_DIRECT alignment where the size allows it. */
        int half = (res / 2) & ~511;
        e->inj_count--;
        return half ? half : res / 2;
    }
    if (e->inj_kind == LURING_INJECT_EAGAIN) {
        e->inj_count--;
        return -EAGAIN;
    }
    return res;
}

static void luring_loop_poll_done(LuringEngine *e, uint64_t ud, int res);

static void luring_handle_cqe(LuringEngine *e, uint64_t ud, int res)
{
    RawAioReq *req = (RawAioReq *)(uintptr_t)(ud & ~(uint64_t)TAG_MASK);
    unsigned tag = ud & TAG_MASK;
    uint64_t st;

    if (G_UNLIKELY(tag == TAG_LOOP)) {
        luring_loop_poll_done(e, ud, res);    /* not a request: not in e->inflight */
        return;
    }
    e->inflight--;
    /*
     * The common completion: a read or write with no FUA, sync or injection
     * state that moved all of its remaining bytes. What the general path
     * below and luring_complete_rw() conclude for it, in one test.
     */
    if (G_LIKELY(tag == TAG_MAIN && !(req->engine_u64[0] & ~(uint64_t)ST_PENDING_MASK) &&
                 (req->type == RAW_AIO_READ || req->type == RAW_AIO_WRITE) &&
                 res > 0 && req->done + (uint64_t)res == req->bytes && !e->inj_count)) {
        req->engine_u64[0] = 0;
        req->done = req->bytes;
        luring_finish(req, 0);
        return;
    }
    if (G_UNLIKELY(tag == TAG_NOP)) {
        e->nop_done = true;
        e->nop_res = res;
        return;
    }
    if (G_UNLIKELY(e->inj_count > 0 && tag == TAG_MAIN &&
                   e->inj_kind != LURING_INJECT_EBUSY &&
                   !(req->engine_u64[0] & ST_SYNC_ONLY))) {
        res = luring_inject(e, req, res);
    }
    st = req->engine_u64[0];
    if (st & ST_FUA_PAIR && !(st & ST_SYNC_ONLY)) {
        /* Collect both halves of the pair before deciding. */
        if (tag == TAG_LINK) {
            req->engine_u64[1] = (req->engine_u64[1] & 0xffffffffu) |
                                 ((uint64_t)(uint32_t)res << 32);
        } else {
            req->engine_u64[1] = (req->engine_u64[1] & ~(uint64_t)0xffffffffu) |
                                 (uint32_t)res;
        }
        req->engine_u64[0] = --st;
        if (st & ST_PENDING_MASK) {
            return;
        }
        luring_complete_rw(e, req, (int32_t)(uint32_t)req->engine_u64[1],
                           (int32_t)(uint32_t)(req->engine_u64[1] >> 32));
        return;
    }
    req->engine_u64[0] = st & ~(uint64_t)ST_PENDING_MASK;
    switch (req->type) {
    case RAW_AIO_READ:
    case RAW_AIO_WRITE:
        luring_complete_rw(e, req, res, res);
        break;
    default:
        luring_complete_other(e, req, res);
        break;
    }
}

static void luring_free(LuringEngine *e);

/*
 * Runs pending completion work (DEFER_TASKRUN, COOP_TASKRUN) so that it
 * posts its CQEs, without ever sleeping.
 *
 * Since Linux 6.13 one io_uring_enter runs at most max(20, min_complete)
 * deferred work items (IO_LOCAL_TW_DEFAULT_MAX) and keeps the rest for a
 * later enter, without setting IORING_SQ_TASKRUN again or signalling the
 * eventfd: one enter with min_complete 0 could leave completions unseen
 * forever (the bench harness saw hangs at depth 32 on punted files). Asking
 * instead for every request in flight with a zero timeout lifts the cap
 * but sleeps whenever fewer are ready: the kernel arms an already expired
 * hrtimer and schedules, a sleep and a timer wakeup per call. On a punted
 * file at depth 32 that was one sleep per 8 reads, and it kept the thread
 * and the io-wq worker in lock-step (docs/devel/performance.md: tmpfs d32
 * 580k -> 900k reads/s). So: enters with min_complete 0, which never
 * wait, again while one posted a whole batch of 20. A pass short of that
 * may still have hit the cap (items that post no CQE, such as a reissue or
 * a re-armed poll, count too); when the loop waits in our ring, its next
 * wait runs what is left, so we stop there. Otherwise (no ring wait, or
 * busy polling) nothing would: go on while a pass posts anything. Going on
 * regardless costs an enter per pass while the io-wq worker keeps
 * completing (zram d32: 0.7 enters per read, 1.1M -> 630k).
 */
#define LURING_LOCAL_TW_BATCH 20

static void luring_get_events(LuringEngine *e)
{
    /* Bounded: each pass that goes on completed one of the requests in flight. */
    for (unsigned i = 0; i <= e->inflight; i++) {
        unsigned tail = io_uring_smp_load_acquire(e->ring.cq.ktail);

        if (io_uring_get_events(&e->ring) < 0 || e->iopoll) {
            return;     /* IOPOLL: one poll pass, as before */
        }
        unsigned posted = io_uring_smp_load_acquire(e->ring.cq.ktail) - tail;

        if (posted == 0 ||
            (posted < LURING_LOCAL_TW_BATCH && e->loop_waiter && !e->polling)) {
            return;
        }
    }
}

/*
 * Our frames that run callbacks (reaping CQEs, synchronous results) count
 * in e->reaping. A callback may destroy the instance (a nested aio_poll
 * running a close): destroy() then drains and leaves a zombie that the
 * outermost of those frames frees on its way out. Returns false when e is
 * gone.
 */
static inline void luring_cb_enter(LuringEngine *e)
{
    e->reaping++;
}

static inline bool luring_cb_leave(LuringEngine *e)
{
    if (--e->reaping == 0 && G_UNLIKELY(e->zombie)) {
        luring_free(e);
        return false;
    }
    return true;
}

/*
 * Runs deferred/cooperative task work, which posts CQEs only when we enter.
 *
 * With DEFER_TASKRUN the kernel signals the eventfd twice per batch: when
 * completion work is queued (the wakeup we want) and again when our own
 * io_uring_enter posts the CQEs (a useless second wakeup: one more
 * ppoll + read per batch, measured). So the eventfd is disabled while we
 * enter. Work queued meanwhile is not signalled but sets IORING_SQ_TASKRUN;
 * after re-enabling, a full barrier and a look at the flag close the race
 * (kernel: set flag, then check the eventfd-disabled bit; us: clear the
 * bit, then check the flag). The kernel side orders those with a locked
 * RMW on x86 only, so elsewhere we keep the double signal.
 */
static void luring_run_task_work(LuringEngine *e)
{
#if LURING_EVENTFD_TOGGLE
    if (e->polling || e->evfd_parked) {
        luring_get_events(e);               /* the eventfd is off already */
        return;
    }
    if (e->defer_taskrun && e->reaping == 1) {
        /*
         * Bounded, and only while entering still posts CQEs: on 6.18 the
         * flag was seen to stay set with every completion already posted
         * (32 CQEs ready, all in flight done), and an unbounded loop on it
         * spun forever without ever reaping them.
         */
        for (int i = 0; i < 4; i++) {
            unsigned tail = io_uring_smp_load_acquire(e->ring.cq.ktail);

            io_uring_cq_eventfd_toggle(&e->ring, false);
            luring_get_events(e);
            io_uring_cq_eventfd_toggle(&e->ring, true);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            if (!luring_task_work_flagged(e)) {
                e->taskrun_stale = false;
                return;
            }
            if (io_uring_smp_load_acquire(e->ring.cq.ktail) == tail) {
                /* Nothing to run for us: do not let the busy poll chase the flag. */
                e->taskrun_stale = true;
                return;
            }
        }
        return;
    }
#endif
    luring_get_events(e);
}

static inline bool luring_has_work(LuringEngine *e);

/*
 * Completion work that arrived while the loop's wait in our ring returned
 * (the device completes a batch over a few microseconds) can wait for the
 * next such wait, which submits what these CQEs' callbacks refill and runs
 * that work in the same enter: running it now costs an enter of its own
 * (disk d32: two per batch of 32). Only with CQEs to handle meanwhile, and
 * only where the loop's next step is bound to run it: a wait in our ring,
 * or, if the loop blocks anywhere else, release() finding the flag; if it
 * only looks first (a BH pending), flush() takes the mark back. Marked so
 * that the poll function does not report it meanwhile.
 */
static inline bool luring_task_work_can_wait(LuringEngine *e)
{
    return e->loop_waiter && !e->polling && !e->sqpoll && io_uring_cq_ready(&e->ring);
}

/* Reaps every CQE, running callbacks; then refills from the FIFO and submits once. */
static void luring_reap(LuringEngine *e)
{
    struct io_uring_cqe *cqe;

    luring_cb_enter(e);
    if (luring_task_work_flagged(e)) {
        if (luring_task_work_can_wait(e)) {
            e->taskrun_left = true;
            e->stats.task_work_left++;
        } else {
            luring_run_task_work(e);
        }
    }
    /*
     * Only the CQEs already there: a callback's submission that completes
     * inside io_uring_enter (a page-cache hit) posts its CQE at once, and
     * reaping on would run a depth-1 stream to its end without the loop
     * ever turning; luring_flush() schedules the BH for those.
     */
    unsigned budget = 0;
    bool counted = false;
    /* Fixed for the ring's life; locals so that callbacks do not force reloads. */
    unsigned *khead = e->ring.cq.khead, *ktail = e->ring.cq.ktail;
    const struct io_uring_cqe *cqes = e->ring.cq.cqes;
    const unsigned mask = e->ring.cq.ring_mask;

    for (;;) {
        /*
         * Head and tail reloaded each time: a callback may nest aio_poll
         * and reap some of these CQEs itself. This ring never has 32-byte
         * CQEs, so a CQE is cqes[head & mask]; and it never holds
         * liburing's own timeout CQEs (LIBURING_UDATA_TIMEOUT, which its
         * peek skips): the only timed wait, luring_loop_wait(), needs
         * IORING_FEAT_EXT_ARG, with which liburing posts none.
         */
        unsigned head = *khead;
        unsigned tail = io_uring_smp_load_acquire(ktail);

        if (head == tail) {
            /*
             * Empty: liburing's peek enters to flush task work or an
             * overflowed CQ when the kernel flags either, and to poll an
             * IOPOLL ring (not while luring_task_work_can_wait() left the
             * task work for later).
             */
            if (e->taskrun_left ||
                (!(IO_URING_READ_ONCE(*e->ring.sq.kflags) &
                   (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN)) &&
                 !(e->iopoll && !e->sqpoll)) ||
                io_uring_peek_cqe(&e->ring, &cqe) != 0) {
                break;
            }
            continue;
        }
        uint64_t ud = cqes[head & mask].user_data;
        int res = cqes[head & mask].res;

        /* Counted at the first CQE, after any task work the peek ran. */
        if (!counted) {
            budget = tail - head;
            counted = true;
        }
        if (budget-- == 0) {
            luring_schedule_submit(e);      /* the rest, next pass */
            break;
        }

        /* Consume first: the callback may nest aio_poll and reap again. */
        io_uring_smp_store_release(khead, head + 1);
        if (tail != head + 1) {
            /*
             * Page-cache hits: the kernel's copies evicted the next
             * request since it was submitted; start loading it while this
             * one's callback runs (a prefetch of a tag that is not a
             * pointer does no harm).
             */
            __builtin_prefetch((const void *)(uintptr_t)
                               (cqes[(head + 1) & mask].user_data & ~(uint64_t)TAG_MASK));
            /*
             * More CQEs wait, and the eventfd signal that announced them is
             * consumed: a callback nesting a blocking aio_poll() until one
             * of them completes would sleep forever. The submit BH reaps
             * them there; cancelled below when the batch did not need it.
             */
            luring_schedule_submit(e);
        }
        luring_handle_cqe(e, ud, res);
    }
    luring_refill(e);
    if (!luring_cb_leave(e)) {
        return;
    }
    if (!e->reaping && !e->plugged && luring_staged(e)) {
        if (e->submit_bh_pending) {
            e->submit_bh_pending = false;
            aio_bh_cancel(e->submit_bh);
        }
        luring_flush_after_callbacks(e);
    } else if (!e->reaping && e->submit_bh_pending && !luring_staged(e) &&
               !luring_has_work(e)) {
        /* Nothing to submit and nothing to reap: the BH would find no work. */
        e->submit_bh_pending = false;
        aio_bh_cancel(e->submit_bh);
    }
    if (e->iopoll && !e->sqpoll && e->inflight) {
        aio_bh_schedule(e->iopoll_bh);
    }
}

/* The eventfd handler: registered as a plain fd handler so that opaque is us. */
static void luring_fd_read(void *opaque)
{
    LuringEngine *e = opaque;

    if (event_notifier_test_and_clear(&e->notifier)) {
        e->stats.eventfd_wakeups++;
    }
    luring_reap(e);
}

static inline bool luring_has_work(LuringEngine *e)
{
    return io_uring_cq_ready(&e->ring) ||
           (!e->taskrun_stale && !e->taskrun_left && luring_task_work_flagged(e));
}

/* Busy poll: a look at the CQ tail and the task-work flag, no syscall. */
static bool luring_fd_poll(void *opaque)
{
    return luring_has_work(opaque);
}

static void luring_fd_poll_ready(void *opaque)
{
    luring_reap(opaque);
}

#if LURING_EVENTFD_TOGGLE
/*
 * While the loop busy-polls us, completions need no eventfd signal (each
 * costs the kernel an eventfd write and us a later spurious wakeup and
 * read). Re-enabled before the loop sleeps; work that arrived meanwhile is
 * caught by the look after the barrier (see luring_run_task_work()).
 */
static void luring_poll_begin(void *opaque)
{
    LuringEngine *e = opaque;

    e->polling = true;
    e->evfd_parked = false;     /* off either way; luring_poll_end() turns it on */
    io_uring_cq_eventfd_toggle(&e->ring, false);
}

static void luring_poll_end(void *opaque)
{
    LuringEngine *e = opaque;

    e->polling = false;
    if (luring_evfd_on_missed_work(e)) {
        event_notifier_set(&e->notifier);   /* rare: completed while disabled */
    }
}
#endif

/* ---- The event loop waits in our ring --------------------------------------------- */

static inline uint64_t luring_loop_poll_ud(uint64_t seq)
{
    return seq << 3 | TAG_LOOP;
}

/*
 * Blocking in our ring saves, per wakeup, the eventfd signal, the wait in
 * epoll and the eventfd read, and with DEFER_TASKRUN the enter that runs
 * the completion work: the wait runs it. Not while plugged (the wait would
 * submit what the plug holds back) or while the opt-in busy-poll mode has
 * the eventfd off.
 */
static bool luring_loop_wanted(void *opaque)
{
    LuringEngine *e = opaque;

    return e->inflight && !e->plugged && !e->polling;
}

static void luring_loop_flush(void *opaque)
{
    LuringEngine *e = opaque;

    e->taskrun_left = false;    /* the loop looks before it waits: the look runs it */
    if (e->submit_deferred) {
        e->submit_deferred = false;
        if (!e->plugged) {
            luring_flush(e);
        }
    }
}

/* The eventfd back on before the loop blocks outside our ring. */
static void luring_evfd_unpark(LuringEngine *e)
{
    if (!e->evfd_parked) {
        return;
    }
    e->evfd_parked = false;
    if (luring_evfd_on_missed_work(e)) {
        event_notifier_set(&e->notifier);
    }
}

static void luring_loop_release(void *opaque)
{
    luring_evfd_unpark(opaque);
}

static void luring_loop_waiter_stop(LuringEngine *e, int err)
{
    luring_evfd_unpark(e);
    if (err != -EEXIST) {   /* luring_flush_ring() reports that one */
        warn_report("io_uring: the event loop no longer waits in the engine's ring: %s",
                    strerror(-err));
    }
    aio_context_clear_ring_waiter(e->base.ctx, e);
    e->loop_waiter = false;
    luring_loop_flush(e);
}

/* Our POLL_ADD on the loop's epoll fd completed. */
static void luring_loop_poll_done(LuringEngine *e, uint64_t ud, int res)
{
    if (ud != luring_loop_poll_ud(e->loop_poll_seq)) {
        return;     /* a replaced poll */
    }
    e->loop_poll_armed = false;
    if (res < 0 && res != -ECANCELED && e->loop_waiter) {
        /* Re-arming would fail the same way on every wait: stop instead. */
        luring_loop_waiter_stop(e, res);
    }
}

/*
 * SQPOLL: the kernel thread submits without syscalls, and the loop watches
 * the CQ the same way before it sleeps: up to 1 ms (bounded by the timer
 * deadline), which covers a device's completion, spent on CPU the user
 * gave up for latency by asking for sqpoll=on. Fd events arrive in this CQ
 * too (the POLL_ADD on the epoll fd). True when something arrived or the
 * timeout passed; otherwise *timeout_ns is what remains of it.
 */
static bool luring_loop_spin(LuringEngine *e, int64_t *timeout_ns)
{
    int64_t limit = *timeout_ns >= 0 && *timeout_ns < LURING_SQPOLL_SPIN_NS ?
                    *timeout_ns : LURING_SQPOLL_SPIN_NS;
    int64_t start, spent;

    /* Publish the SQEs (a syscall only to wake a sleeping SQ thread). */
    if (io_uring_submit(&e->ring) < 0) {
        return false;   /* the wait below submits and reports */
    }
    start = aio_clock_get_ns(AIO_CLOCK_MONOTONIC);
    for (unsigned i = 1;; i++) {
        if (io_uring_cq_ready(&e->ring)) {
            return true;
        }
        if (i % 64 == 0 && (spent = aio_clock_get_ns(AIO_CLOCK_MONOTONIC) - start) >= limit) {
            break;
        }
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    if (*timeout_ns >= 0) {
        *timeout_ns -= spent;
        return *timeout_ns <= 0;
    }
    return false;
}

/* Returns 1 when epfd may be readable, 0 when not, -errno when it did not wait. */
static int luring_loop_wait(void *opaque, int epfd, int64_t timeout_ns)
{
    LuringEngine *e = opaque;
    struct __kernel_timespec ts;
    struct io_uring_cqe *cqe;
    int ret;

    luring_mark_async(e);      /* before our POLL_ADD joins the staged SQEs */
    if (!e->loop_poll_armed || e->loop_poll_fd != epfd) {
        /*
         * One-shot, so that a poll armed on a ready fd completes at once.
         * A poll left on an epoll fd the loop replaced completes unnoticed
         * (its number is old) at that fd's next event or at teardown.
         */
        struct io_uring_sqe *sqe;

        if (e->fixed_files && e->loop_poll_fd != epfd) {
            /* A restricted fixed-file ring takes no plain fd: give it a slot. */
            int rc = io_uring_register_files_update(&e->ring, LURING_LOOP_FILE_SLOT,
                                                    &epfd, 1);
            if (rc < 0) {
                luring_loop_waiter_stop(e, rc);
                return rc;
            }
            e->loop_poll_fd = epfd;
        }
        sqe = io_uring_get_sqe(&e->ring);
        if (!sqe) {
            /* The SQ is full of deferred submissions: send them first. */
            luring_flush(e);
            sqe = io_uring_get_sqe(&e->ring);
            if (!sqe) {
                return -EBUSY;
            }
        }
        if (e->fixed_files) {
            io_uring_prep_poll_add(sqe, LURING_LOOP_FILE_SLOT, POLLIN);
            sqe->flags |= IOSQE_FIXED_FILE;
        } else {
            io_uring_prep_poll_add(sqe, epfd, POLLIN);
        }
        sqe->user_data = luring_loop_poll_ud(++e->loop_poll_seq);
        e->loop_poll_armed = true;
        e->loop_poll_fd = epfd;
    }
    e->stats.loop_waits++;
    e->submit_deferred = false;         /* this enter submits everything staged */
    /* Completions wake us here: an eventfd signal would be one more wakeup. */
    io_uring_cq_eventfd_toggle(&e->ring, false);
    if (e->sqpoll && luring_loop_spin(e, &timeout_ns)) {
        ret = 0;
    } else {
        if (timeout_ns >= 0) {
            ts.tv_sec = timeout_ns / 1000000000;
            ts.tv_nsec = timeout_ns % 1000000000;
        }
        ret = io_uring_submit_and_wait_timeout(&e->ring, &cqe, 1,
                                               timeout_ns >= 0 ? &ts : NULL, NULL);
    }
    /*
     * Left off (evfd_parked): the loop finds our completions with its poll
     * function now and waits in our ring next, or releases us first.
     */
    e->evfd_parked = true;
    e->taskrun_stale = false;
    e->taskrun_left = false;
    if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
        luring_loop_waiter_stop(e, ret);
        return ret;
    }
    /*
     * Whether our POLL_ADD is among the CQEs: one compare per CQE against
     * the tail read once (io_uring_for_each_cqe reloads the tail and works
     * the CQE size out again for each one; this ring never has 32-byte CQEs).
     */
    const struct io_uring_cqe *cqes = e->ring.cq.cqes;
    unsigned mask = e->ring.cq.ring_mask;
    unsigned tail = io_uring_smp_load_acquire(e->ring.cq.ktail);
    uint64_t poll_ud = luring_loop_poll_ud(e->loop_poll_seq);

    for (unsigned head = *e->ring.cq.khead; head != tail; head++) {
        if (cqes[head & mask].user_data == poll_ud) {
            e->stats.loop_fd_wakeups++;
            return 1;
        }
    }
    return 0;
}

static const AioRingWaiterOps luring_loop_waiter_ops = {
    .wanted = luring_loop_wanted,
    .wait = luring_loop_wait,
    .flush = luring_loop_flush,
    .release = luring_loop_release,
};

/*
 * Whether the loop may wait in this ring: it needs the timeout argument of
 * io_uring_enter (EXT_ARG, 5.11), a POLL_ADD the ring accepts (not IOPOLL;
 * with fixed files the epoll fd gets the last slot, since a restricted
 * fixed-file ring refuses plain fds) and the eventfd switch (x86, see
 * LURING_EVENTFD_TOGGLE). RINGBLK_IO_URING_LOOP_WAIT=0 turns it off for
 * measurements.
 */
static bool luring_loop_wait_possible(LuringEngine *e)
{
    const char *env = getenv("RINGBLK_IO_URING_LOOP_WAIT");

    if (env && !strcmp(env, "0")) {
        return false;
    }
    return LURING_EVENTFD_TOGGLE && !e->shared && !e->iopoll &&
           (e->ring.features & IORING_FEAT_EXT_ARG);
}

static void luring_submit_bh(void *opaque)
{
    LuringEngine *e = opaque;

    e->submit_bh_pending = false;
    luring_cb_enter(e);
    luring_reap(e);
    if (!luring_cb_leave(e)) {
        return;
    }
    /*
     * Unlike luring_reap()'s own flush, also inside an outer reap: this BH
     * exists for a callback that nests aio_poll() waiting for what it
     * submitted (a loop that waits in our ring submits it with that wait).
     */
    if (!e->plugged) {
        luring_flush_after_callbacks(e);
    }
    /*
     * The reap above ran inside this BH, so its own cancel did not apply:
     * each CQE with more behind it scheduled us again. Left pending, the
     * loop's next pass would only look (a flush enter and a task-work enter
     * per batch, never one wait that submits and collects: disk d32 0.13
     * enters per read instead of 0.04).
     */
    if (e->submit_bh_pending && !e->reaping && !luring_has_work(e) &&
        (!luring_staged(e) || e->submit_deferred || e->plugged)) {
        e->submit_bh_pending = false;
        aio_bh_cancel(e->submit_bh);
    }
}

static void luring_sync_done(void *opaque, int ret)
{
    RawAioReq *req = opaque;
    LuringEngine *e = req->engine_priv[0];

    e->tp_inflight--;
    luring_cb_enter(e);
    luring_finish(req, ret);
    if (!luring_cb_leave(e)) {
        return;
    }
    /* The callback may have submitted: send it (a no-op when nothing is staged). */
    if (!e->plugged && !e->reaping && luring_staged(e)) {
        luring_flush(e);
    }
}

static void luring_done_bh(void *opaque)
{
    LuringEngine *e = opaque;
    RawAioReq *last = e->done_tail;   /* later ones wait for the next pass */
    RawAioReq *req;

    luring_cb_enter(e);
    while ((req = e->done_head)) {
        e->done_head = req->next;
        if (!e->done_head) {
            e->done_tail = NULL;
        }
        e->done_pending--;
        luring_finish(req, (int)(int64_t)req->engine_u64[1]);
        if (req == last) {
            /*
             * A callback that submits again (a page-cache hit read inline
             * lands here at once) would otherwise keep this pass going for
             * the whole stream and starve the loop; done_push scheduled
             * the BH for those.
             */
            break;
        }
    }
    if (luring_cb_leave(e) && !e->reaping && !e->plugged && luring_staged(e)) {
        luring_flush(e);
    }
}

/*
 * IOPOLL without SQPOLL: completions are only found by polling from our
 * thread, so keep polling (io_uring_enter GETEVENTS, min 0) while anything
 * is in flight. This busy loop is the price of IOPOLL.
 */
static void luring_iopoll_bh(void *opaque)
{
    LuringEngine *e = opaque;

    if (!e->inflight) {
        return;
    }
    io_uring_get_events(&e->ring);
    luring_reap(e);
}

/* Foreign CQEs of the fd monitor's ring: ours, in the loop's dispatch phase. */
static void luring_foreign_cqe(void *opaque, uint64_t user_data, int32_t res,
                               uint32_t flags)
{
    RawAioReq *req = (RawAioReq *)(uintptr_t)(user_data & ~(uint64_t)TAG_MASK);
    LuringEngine *e = req->engine_priv[1];

    luring_cb_enter(e);
    luring_handle_cqe(e, (uint64_t)(uintptr_t)req | TAG_MAIN, res);
    luring_refill(e);
    luring_cb_leave(e);
}

/* ---- Ops ------------------------------------------------------------------------ */

/*
 * A lone read of a page-cache file: try preadv2(RWF_NOWAIT) right here.
 * A hit costs one syscall and completes through the done BH, with no SQE,
 * no CQE and no io_uring_enter; measured in docs/devel/io_uring.md. Only
 * with nothing else in flight or plugged: a batch of requests is cheaper
 * as SQEs of one io_uring_enter, and a depth-1 stream is what the ring
 * serves worst. A miss (-EAGAIN), a short read (part cached, or EOF) or
 * any error hands the rest to the ring, which finishes it as any request
 * (resubmitting the remainder, zero-filling at EOF, reporting errors).
 */
static bool luring_read_inline(LuringEngine *e, RawAioReq *req)
{
    ssize_t n;

    if (!e->inline_reads || e->inflight || e->plugged || e->ovf_head ||
        req->niov > IOV_MAX || req->engine_u64[0] != 0) {
        return false;
    }
    n = preadv2(req->fd, req->iov, req->niov, (off_t)req->offset, RWF_NOWAIT);
    if (n == (ssize_t)req->bytes) {
        e->stats.inline_reads++;
        luring_done_push(e, req, 0);
        return true;
    }
    if (n > 0) {
        req->done = (uint64_t)n;    /* the ring reads what was not cached */
    }
    return false;
}

/*
 * sync_below (aio=auto on a RAM-backed block device opened O_DIRECT, such
 * as zram): such a device cannot take non-blocking I/O, so every ring
 * request costs a hop to an io-wq worker, while the same read done here is
 * a memory copy. At low depth that copy wins by far (zram d1: 590k reads/s
 * synchronously, 66k through the ring); at depth 32 the ring wins, since
 * the worker copies on another CPU while we submit (about 1.0M against
 * 710k). So a read or write that finds fewer than sync_below requests
 * outstanding runs here and completes through the done BH; the rest go to
 * the ring. A short or failed transfer is left to the ring, which has the
 * retry and error handling (the part already done is kept).
 */
/* One sync_below request by itself; false when the ring must finish it. */
static bool luring_rw_sync_one(LuringEngine *e, RawAioReq *req)
{
    ssize_t n = req->type == RAW_AIO_READ ?
                preadv(req->fd, req->iov, req->niov, (off_t)req->offset) :
                pwritev(req->fd, req->iov, req->niov, (off_t)req->offset);

    if (n == (ssize_t)req->bytes) {
        e->stats.sync_rw++;
        luring_done_push(e, req, 0);
        return true;
    }
    if (n > 0) {
        req->done = (uint64_t)n;
    }
    return false;
}

/*
 * Plugged, the request is held instead and the whole burst runs at the
 * unplug (luring_sync_burst_run()), as aio=inline does: two or more in
 * one synchronous Linux AIO batch, where the kernel copies each in our
 * thread inside io_submit. One syscall for the burst instead of one
 * preadv each (zram O_DIRECT, the completions of one loop pass at depth
 * 4-8: docs/devel/performance.md).
 */
static bool luring_rw_sync(LuringEngine *e, RawAioReq *req)
{
    if ((req->type != RAW_AIO_READ && req->type != RAW_AIO_WRITE) ||
        e->inflight + e->done_pending + e->sync_held >= e->sync_below || e->ovf_head ||
        req->niov > IOV_MAX) {
        return false;
    }
    if (e->plugged && !e->sync_no_batch) {
        if (e->sync_held == e->sync_cap) {
            e->sync_cap = MAX(16u, 2 * e->sync_cap);
            e->sync_burst = g_renew(RawAioReq *, e->sync_burst, e->sync_cap);
            e->sync_rets = g_renew(int, e->sync_rets, e->sync_cap);
        }
        e->sync_burst[e->sync_held++] = req;
        return true;
    }
    return luring_rw_sync_one(e, req);
}

/* Runs the held burst (before the ring's staged SQEs go, so a flush staged after it waits). */
static void luring_sync_burst_run(LuringEngine *e)
{
    unsigned n = e->sync_held, ran = 0;
    bool queued = false;

    if (n == 0) {
        return;
    }
    e->sync_held = 0;
    if (n >= 2 && !e->sync_batch && !e->sync_no_batch) {
        e->sync_batch = laio_batch_new();
        e->sync_no_batch = !e->sync_batch;      /* not an error: each runs alone */
    }
    if (n >= 2 && e->sync_batch) {
        ran = laio_batch_run(e->sync_batch, e->sync_burst, e->sync_rets, n);
        for (unsigned i = 0; i < ran; i++) {
            e->stats.sync_rw++;
            luring_done_push(e, e->sync_burst[i], e->sync_rets[i]);
        }
        e->stats.sync_batches++;
    }
    for (unsigned i = ran; i < n; i++) {
        if (!luring_rw_sync_one(e, e->sync_burst[i])) {
            luring_enqueue(e, e->sync_burst[i]);
            queued = true;
        }
    }
    if (queued) {
        luring_kick(e);
    }
}

/*
 * sync_race (aio=auto, with sync_below): which of the split and running
 * every read and write synchronously is faster at depth depends on the
 * machine (zram d32: the ring won 1.4x on one VM, synchronous batches
 * 1.25x on another), so the engine times both on the live stream
 * (RateRace) and keeps the faster. Arm 0 is the split (sync_below as
 * configured), arm 1 runs synchronously whatever finds fewer than a ring's
 * worth outstanding. Windows of
 * 4096 requests (about 4 ms at 1M/s), and the winner runs 256 windows
 * between rounds: a round's loser costs under 1% of the time.
 */
#define LURING_RACE_WINDOW 4096
#define LURING_RACE_RUN    256

/*
 * sync_below for an arm. Arm 1 is capped at the ring's size, so that one
 * plugged burst cannot keep the loop copying for longer than a ring's worth
 * of requests (the race measures throughput, not the loop's latency).
 */
static unsigned luring_race_sync_below(const LuringEngine *e, unsigned arm)
{
    return arm ? MAX(e->sq_entries, e->sync_split) : e->sync_split;
}

static void luring_race_start(LuringEngine *e, uint32_t window, uint32_t run_windows)
{
    if (e->sync_race) {
        /* The stats count every round of the instance, across restarts. */
        uint64_t rounds = e->race.rounds, picked0 = e->race.picked[0],
                 picked1 = e->race.picked[1];

        rate_race_init(&e->race, 0, window, run_windows);
        e->race.rounds = rounds;
        e->race.picked[0] = picked0;
        e->race.picked[1] = picked1;
        e->sync_below = luring_race_sync_below(e, e->race.arm);
    } else {
        e->race.left = UINT32_MAX;      /* luring_race_tick() only re-arms */
    }
}

static void luring_race_init(LuringEngine *e)
{
    luring_race_start(e, LURING_RACE_WINDOW, LURING_RACE_RUN);
}

static G_GNUC_NO_INLINE void luring_race_tick(LuringEngine *e)
{
    if (!e->sync_race) {
        e->race.left = UINT32_MAX;
        return;
    }
    unsigned arm = rate_race_tick(&e->race, aio_clock_get_ns(AIO_CLOCK_MONOTONIC));
    e->sync_below = luring_race_sync_below(e, arm);
}

void luring_debug_race(RawAioEngine *base, uint32_t window, uint32_t run_windows)
{
    luring_race_start(luring_of(base), window, run_windows);
}

/*
 * The common request, decided in one test: a whole one-segment read, or a
 * write without FUA, on a registered file, that goes straight into a free
 * SQE: no synchronous split (sync_below), no inline page-cache read (only
 * tried when the engine is idle and unplugged), nothing queued before it.
 * What luring_submit_general() concludes for it, without its tests for
 * everything else.
 */
static inline bool luring_submit_is_plain(const LuringEngine *e, const RawAioReq *req)
{
    G_STATIC_ASSERT(RAW_AIO_READ == 0 && RAW_AIO_WRITE == 1);

    if ((unsigned)req->type > RAW_AIO_WRITE || req->niov != 1 ||
        (unsigned)req->file_slot >= LURING_FILE_SLOTS ||
        e->sync_below || e->ovf_head || e->inflight >= e->sq_entries) {
        return false;
    }
    if (req->type == RAW_AIO_WRITE) {
        return !(req->flags & RAW_AIO_FUA);
    }
    /* luring_read_inline() tries a page-cache read only when idle and unplugged. */
    return !(req->flags & RAW_AIO_CACHED) || e->inflight || e->plugged;
}

/* The engine's state of a request it accepted; st: its ST_* flags. */
static inline void luring_req_start(LuringEngine *e, RawAioReq *req, uint64_t st)
{
    req->done = 0;
    req->engine_priv[1] = e;
    req->engine_u64[0] = st;
    req->engine_u64[1] = 0;
    e->stats.submitted++;
}

static int luring_submit_general(LuringEngine *e, RawAioReq *req);
static int luring_submit(RawAioEngine *base, RawAioReq *req)
{
    LuringEngine *e = luring_of(base);

    if (G_LIKELY(luring_submit_is_plain(e, req))) {
        luring_req_start(e, req, 0);
        luring_fill_rw_whole(e, req);
        luring_kick(e);
        return 0;
    }
    return luring_submit_general(e, req);
}

static G_GNUC_NO_INLINE int luring_submit_general(LuringEngine *e, RawAioReq *req)
{
    uint64_t st = 0;

    if (G_UNLIKELY((unsigned)req->type >= RAW_AIO_TYPE_MAX)) {
        return -EINVAL;
    }
    if (G_UNLIKELY(req->file_slot >= LURING_FILE_SLOTS)) {
        return -EBADF;
    }
    if (req->type == RAW_AIO_WRITE && (req->flags & RAW_AIO_FUA)) {
        st = e->iopoll ? ST_POST_SYNC : e->shared ? ST_DSYNC : ST_FUA_PAIR;
    } else if (req->type != RAW_AIO_READ && req->type != RAW_AIO_WRITE) {
        if (e->iopoll || (req->type == RAW_AIO_DISCARD && (req->flags & RAW_AIO_BLKDEV) &&
                          !e->blk_discard_cmd)) {
            st = ST_SYNC;   /* an IOPOLL ring takes only reads and writes */
        } else if (req->type == RAW_AIO_WRITE_ZEROES && !(req->flags & RAW_AIO_BLKDEV) &&
                   (req->flags & RAW_AIO_MAY_UNMAP)) {
            /*
             * A punched hole reads as zeroes but KEEP_SIZE cannot extend
             * the file: punch only inside it (one fstat; not a hot path).
             */
            struct stat sb;

            if (fstat(req->fd, &sb) == 0 && req->offset + req->bytes <= (uint64_t)sb.st_size) {
                st = ST_PUNCH;
            }
        }
        if (req->bytes == 0 && req->type != RAW_AIO_FLUSH) {
            /* fallocate and the ioctls refuse empty ranges; nothing to do. */
            req->engine_u64[0] = 0;
            e->stats.submitted++;
            luring_done_push(e, req, 0);
            return 0;
        }
    }
    if (G_UNLIKELY(req->file_slot < 0 && e->restricted && e->fixed_required)) {
        /* The ring accepts registered files only: a plain fd goes to a worker. */
        st = ST_SYNC;
    }
    luring_req_start(e, req, st);
    if (e->sync_below && st == 0) {
        if (G_UNLIKELY(rate_race_count(&e->race))) {
            luring_race_tick(e);
        }
        if (luring_rw_sync(e, req)) {
            return 0;
        }
    } else if ((req->flags & RAW_AIO_CACHED) && req->type == RAW_AIO_READ &&
               luring_read_inline(e, req)) {
        return 0;
    }
    luring_enqueue(e, req);
    luring_kick(e);
    return 0;
}

static void luring_plug(RawAioEngine *base)
{
    luring_of(base)->plugged++;
}

static void luring_unplug(RawAioEngine *base)
{
    LuringEngine *e = luring_of(base);

    g_assert(e->plugged > 0);
    if (--e->plugged == 0) {
        luring_sync_burst_run(e);
        if (luring_staged(e)) {
            luring_kick(e);
        }
    }
}

/* ---- Fixed files ---------------------------------------------------------------- */

static int luring_dev_iopoll_check(int fd, int open_flags, Error **errp)
{
    struct stat st;
    char path[128], link[PATH_MAX];
    dev_t dev;
    int val = 0;
    ssize_t n;
    const char *name;

    if (!(open_flags & O_DIRECT)) {
        error_setg(errp, "io_uring iopoll needs O_DIRECT (cache.direct=on)");
        return -EINVAL;
    }
    if (fstat(fd, &st) < 0) {
        error_setg_errno(errp, errno, "io_uring iopoll: cannot stat the file");
        return -errno;
    }
    dev = S_ISBLK(st.st_mode) ? st.st_rdev : st.st_dev;
    snprintf(path, sizeof(path), "/sys/dev/block/%u:%u", major(dev), minor(dev));
    n = readlink(path, link, sizeof(link) - 1);
    if (n < 0) {
        error_setg(errp, "io_uring iopoll: the file is not on a block device "
                   "(device %u:%u has no %s)", major(dev), minor(dev), path);
        return -EOPNOTSUPP;
    }
    link[n] = '\0';
    name = strrchr(link, '/') ? strrchr(link, '/') + 1 : link;
    snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/queue/io_poll",
             major(dev), minor(dev));
    if (access(path, R_OK) != 0) {
        /* A partition: the queue belongs to the whole disk. */
        snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/../queue/io_poll",
                 major(dev), minor(dev));
    }
    if (read_int_file(path, &val) < 0 || val != 1) {
        error_setg(errp, "io_uring iopoll: device %s (%u:%u) has no poll queues "
                   "(queue/io_poll is %d); polled I/O would never complete",
                   name, major(dev), minor(dev), val);
        error_append_hint(errp, "For NVMe, load the driver with poll_queues=N "
                          "(e.g. nvme.poll_queues=2), or use iopoll=off.\n");
        return -EOPNOTSUPP;
    }
    return 0;
}

/*
 * Registers fd in a fixed-file slot, as a description of its own. The ring
 * holds a reference to every registered file until the slot is cleared, or,
 * when the process dies without closing its nodes (SIGKILL), until the
 * kernel's asynchronous ring teardown, some 40 ms after exit on 6.18.
 * Image locks are OFD locks on the caller's open file description: had we
 * registered that description, a killed process's locks would outlive it
 * and an immediate restart would be refused. A reopen through
 * /proc/self/fd (same inode, same flags) holds no locks; if it fails (no
 * /proc), the caller's description is registered after all.
 */
static int luring_register_file(LuringEngine *e, int slot, int fd)
{
    char path[40];
    int flags = fcntl(fd, F_GETFL);
    int own = -1;
    int ret;

    if (flags >= 0) {
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        own = open(path, flags | O_CLOEXEC);
    }
    ret = io_uring_register_files_update(&e->ring, slot, own >= 0 ? &own : &fd, 1);
    if (own >= 0) {
        close(own);     /* the ring keeps the file */
    }
    return ret;
}

static int luring_add_file(RawAioEngine *base, int fd, int open_flags, Error **errp)
{
    LuringEngine *e = luring_of(base);
    int ret;

    if (e->iopoll) {
        ret = luring_dev_iopoll_check(fd, open_flags, errp);
        if (ret < 0) {
            return ret;
        }
    }
    if (!e->fixed_files) {
        return -1;
    }
    for (int w = 0; w < LURING_FILE_SLOTS / 64; w++) {
        if (~e->file_used[w]) {
            int slot = w * 64 + __builtin_ctzll(~e->file_used[w]);

            ret = luring_register_file(e, slot, fd);
            if (ret < 0 && !e->fixed_required) {
                return -1;      /* fixed-files=auto: the plain fd will do */
            }
            if (ret < 0) {
                error_setg_errno(errp, -ret, "io_uring: cannot register the file "
                                 "in fixed-file slot %d", slot);
                return ret;
            }
            e->file_used[w] |= 1ull << (slot % 64);
            return slot;
        }
    }
    if (e->restricted && e->fixed_required) {
        /* The restricted ring accepts fixed files only. */
        error_setg(errp, "io_uring: all %d fixed-file slots are in use",
                   LURING_FILE_SLOTS);
        return -ENFILE;
    }
    return -1;
}

static int luring_update_file(RawAioEngine *base, int slot, int fd)
{
    LuringEngine *e = luring_of(base);
    int ret;

    if (slot < 0 || slot >= LURING_FILE_SLOTS ||
        !(e->file_used[slot / 64] & (1ull << (slot % 64)))) {
        return -EBADF;
    }
    ret = luring_register_file(e, slot, fd);
    return ret < 0 ? ret : 0;
}

static void luring_remove_file(RawAioEngine *base, int slot)
{
    LuringEngine *e = luring_of(base);
    int none = -1;

    if (slot < 0 || slot >= LURING_FILE_SLOTS ||
        !(e->file_used[slot / 64] & (1ull << (slot % 64)))) {
        return;
    }
    io_uring_register_files_update(&e->ring, slot, &none, 1);
    e->file_used[slot / 64] &= ~(1ull << (slot % 64));
}

/* ---- Fixed buffers --------------------------------------------------------------- */

/*
 * Registered-buffer pools.
 *
 * A buffer may outlive its instance or be freed through another one (a
 * node moved to another AioContext, a tool freeing after close). So pools
 * are known process-wide, their page bitmaps are updated with atomic
 * operations, and an instance's destroy only orphans its pool: the mapping
 * goes when its last page is freed. Allocation and freeing through the
 * owning instance (the usual case) take no lock; only a buffer freed
 * through another instance, or with none, looks the pool up under a mutex.
 */
typedef struct LuringPool {
    uint8_t *base;
    size_t size;
    unsigned pages;
    uint64_t *map;              /* bit per page; atomic */
    uint64_t state;             /* (pages in use << 1) | orphaned; atomic */
    struct LuringPool *next;    /* luring_pools, under luring_pools_lock */
} LuringPool;

static pthread_mutex_t luring_pools_lock = PTHREAD_MUTEX_INITIALIZER;
static LuringPool *luring_pools;

static void luring_pool_release(LuringPool *p)
{
    LuringPool **pp;

    pthread_mutex_lock(&luring_pools_lock);
    for (pp = &luring_pools; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    pthread_mutex_unlock(&luring_pools_lock);
    munmap(p->base, p->size);
    g_free(p->map);
    g_free(p);
}

static inline bool pool_page_used(const LuringPool *p, unsigned i)
{
    return __atomic_load_n(&p->map[i / 64], __ATOMIC_RELAXED) & (1ull << (i % 64));
}

static void pool_set_pages(LuringPool *p, unsigned first, unsigned n, bool used)
{
    for (unsigned j = first; j < first + n; j++) {
        uint64_t bit = 1ull << (j % 64);

        if (used) {
            __atomic_fetch_or(&p->map[j / 64], bit, __ATOMIC_RELAXED);
        } else {
            __atomic_fetch_and(&p->map[j / 64], ~bit, __ATOMIC_RELAXED);
        }
    }
}

/* Returns pages of buf to p; the last page of an orphaned pool unmaps it. */
static void luring_pool_put(LuringPool *p, void *buf, size_t size)
{
    unsigned first = ((uint8_t *)buf - p->base) / LURING_PAGE;
    unsigned npages = (size + LURING_PAGE - 1) / LURING_PAGE;

    pool_set_pages(p, first, npages, false);
    if (__atomic_sub_fetch(&p->state, 2 * (uint64_t)npages, __ATOMIC_ACQ_REL) == 1) {
        luring_pool_release(p);
    }
}

static void *luring_buf_alloc(RawAioEngine *base, size_t size, size_t align)
{
    LuringEngine *e = luring_of(base);
    LuringPool *p = e->bufpool;
    unsigned npages, i, j;
    void *mem;

    /* The pool is page aligned; larger alignments come from ordinary memory. */
    if (p && size && size <= p->size && align <= LURING_PAGE) {
        npages = (size + LURING_PAGE - 1) / LURING_PAGE;
        for (i = 0; i + npages <= p->pages;) {
            if (i % 64 == 0 && __atomic_load_n(&p->map[i / 64], __ATOMIC_RELAXED) == ~0ull) {
                i += 64;
                continue;
            }
            for (j = 0; j < npages && !pool_page_used(p, i + j); j++) {
            }
            if (j == npages) {
                /* Only the owner allocates, so the pages are still free. */
                pool_set_pages(p, i, npages, true);
                __atomic_add_fetch(&p->state, 2 * (uint64_t)npages, __ATOMIC_RELAXED);
                return p->base + (size_t)i * LURING_PAGE;
            }
            i += j + 1;     /* past the used page */
        }
    }
    /* Pool exhausted or not in use: ordinary memory (plain READ/WRITE). */
    if (posix_memalign(&mem, align < sizeof(void *) ? sizeof(void *) : align,
                       size ? size : 1) != 0) {
        return NULL;
    }
    return mem;
}

/* base may be NULL or any io_uring instance: pools are found process-wide. */
static void luring_buf_free(RawAioEngine *base, void *buf, size_t size)
{
    LuringEngine *e = base ? luring_of(base) : NULL;
    LuringPool *p;
    uint8_t *b = buf;

    if (!buf) {
        return;
    }
    size = size ? size : 1;
    if (e && luring_in_pool(e, buf, size)) {
        luring_pool_put(e->bufpool, buf, size);
        return;
    }
    pthread_mutex_lock(&luring_pools_lock);
    for (p = luring_pools; p; p = p->next) {
        if (b >= p->base && b < p->base + p->size) {
            break;
        }
    }
    pthread_mutex_unlock(&luring_pools_lock);
    if (p) {
        /* Our pages keep p alive: it cannot be released under us. */
        luring_pool_put(p, buf, size);
        return;
    }
    free(buf);
}

static size_t luring_pool_size(unsigned depth)
{
    const char *env = getenv("RINGBLK_IO_URING_BUF_POOL_MB");
    size_t sz;

    if (env && atoi(env) > 0) {
        return (size_t)atoi(env) << 20;
    }
    /* 32 KiB per queue slot: 4 MiB at depth 128, half the common 8 MiB memlock. */
    sz = (size_t)depth * 32 * 1024;
    return MAX(sz, (size_t)1 << 20);
}

/* Returns 1 when the pool is registered, 0 when skipped (AUTO), -errno on error. */
static int luring_setup_buffers(LuringEngine *e, Error **errp)
{
    bool must = e->base.cfg.fixed_buffers == RAW_AIO_ONOFFAUTO_ON;
    static bool warned;
    struct rlimit rl;
    struct iovec iov;
    Error *err = NULL;
    int ret;

    if (e->base.cfg.fixed_buffers == RAW_AIO_ONOFFAUTO_OFF) {
        return 0;
    }
    /*
     * Also on async-punt files: under load their requests go without
     * IOSQE_ASYNC (luring_mark_async()), so the buffer is imported by the
     * failed inline attempt in our thread and io-wq never takes the ring's
     * lock for it (zram O_DIRECT d32: 893k without, 1.14M with).
     */
    e->pool_size = luring_pool_size(e->sq_entries);
    e->pool = mmap(NULL, e->pool_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (e->pool == MAP_FAILED) {
        e->pool = NULL;
        ret = -errno;
        error_setg_errno(&err, -ret, "io_uring: cannot map the %zu KiB buffer pool",
                         e->pool_size >> 10);
        goto fail;
    }
    iov.iov_base = e->pool;
    iov.iov_len = e->pool_size;
    ret = io_uring_register_buffers(&e->ring, &iov, 1);
    if (ret < 0) {
        if (ret == -ENOMEM && getrlimit(RLIMIT_MEMLOCK, &rl) == 0 &&
            rl.rlim_cur != RLIM_INFINITY) {
            /* Registered buffers are pinned and count against RLIMIT_MEMLOCK. */
            size_t need_kib = (size_t)(rl.rlim_cur >> 10) + (e->pool_size >> 10);

            error_setg(&err, "io_uring fixed buffers: pinning the %zu KiB buffer pool "
                       "exceeds RLIMIT_MEMLOCK (%llu KiB); raise the limit to at "
                       "least %zu KiB ('ulimit -l %zu', or 'prlimit --pid PID "
                       "--memlock=%zu', or LimitMEMLOCK= in a systemd unit) or use "
                       "fixed-buffers=off", e->pool_size >> 10,
                       (unsigned long long)rl.rlim_cur >> 10, need_kib, need_kib,
                       need_kib << 10);
        } else {
            error_setg_errno(&err, -ret, "io_uring: cannot register the buffer pool");
        }
        munmap(e->pool, e->pool_size);
        e->pool = NULL;
        goto fail;
    }
    e->bufpool = g_new0(LuringPool, 1);
    e->bufpool->base = e->pool;
    e->bufpool->size = e->pool_size;
    e->bufpool->pages = e->pool_size / LURING_PAGE;
    e->bufpool->map = g_new0(uint64_t, (e->bufpool->pages + 63) / 64);
    pthread_mutex_lock(&luring_pools_lock);
    e->bufpool->next = luring_pools;
    luring_pools = e->bufpool;
    pthread_mutex_unlock(&luring_pools_lock);
    return 1;

fail:
    if (must) {
        error_propagate(errp, err);
        return ret;
    }
    if (!warned) {
        warned = true;
        warn_report("%s; continuing without fixed buffers", error_get_pretty(err));
    }
    error_free(err);
    return 0;
}

/* ---- Create / destroy ------------------------------------------------------------ */

/*
 * Task-run mode (docs/devel/io_uring.md has the measurements):
 *   defer (the default for files that cannot take non-blocking I/O):
 *     SINGLE_ISSUER|DEFER_TASKRUN. The kernel signals our
 *     eventfd as soon as completion work is queued, without interrupting
 *     the thread; luring_reap() then runs that work with one io_uring_enter
 *     (GETEVENTS), seen through IORING_SQ_TASKRUN. Every submit must come
 *     from the creating thread, which raw-aio.h already demands (create and
 *     submit run in ctx's thread). io-wq completes such files' requests
 *     one by one; deferred, they are run in batches: tmpfs d32 2.6x plain.
 *   plain (the default for files that can, cfg->nowait): completions run
 *     as task work that interrupts our sleep in ppoll/epoll_wait (a
 *     spurious EINTR wakeup per completion, none while the loop waits in
 *     our ring), then post the CQE and signal the eventfd. On the disk at
 *     depth 32 the device's completions then reach the CQ as they come:
 *     +15% reads and 1 enter per 32 instead of 3; equal at depth 1 and on
 *     page-cache hits.
 *   coop: COOP_TASKRUN does not wake a task sleeping outside io_uring_enter,
 *     so with an eventfd-driven loop completions wait for an unrelated
 *     wakeup: measured 2-4x slower at depth 1. Kept only for measurement.
 * SQPOLL rings use plain: the SQ thread issues, and DEFER_TASKRUN is refused.
 */
static unsigned luring_wanted_flags(const RawAioConfig *cfg)
{
    /* Tuning override; tests set it without touching the environment. */
    const char *mode = luring_taskrun_override ? luring_taskrun_override :
                       getenv("RINGBLK_IO_URING_TASKRUN");
    unsigned f = IORING_SETUP_SUBMIT_ALL;

    if (cfg->sqpoll || (mode && !strcmp(mode, "plain")) || (!mode && cfg->nowait)) {
        return f;
    }
    if (mode && !strcmp(mode, "coop")) {
        return f | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
    }
    return f | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
           IORING_SETUP_TASKRUN_FLAG;
}

static int luring_setup_ring(LuringEngine *e, const RawAioConfig *cfg,
                             unsigned depth, bool restrict_ring, Error **errp)
{
    struct io_uring_params p;
    unsigned want = luring_wanted_flags(cfg);
    LuringEngine *share = NULL;
    int ret;

    memset(&p, 0, sizeof(p));
    /* Keep only what this kernel accepted in the probe. */
    p.flags = want & luring_caps.setup_flags;
    if ((p.flags & IORING_SETUP_TASKRUN_FLAG) &&
        !(p.flags & (IORING_SETUP_COOP_TASKRUN | IORING_SETUP_DEFER_TASKRUN))) {
        p.flags &= ~IORING_SETUP_TASKRUN_FLAG;
    }
    if ((p.flags & IORING_SETUP_DEFER_TASKRUN) &&
        (p.flags & (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_TASKRUN_FLAG)) !=
        (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_TASKRUN_FLAG)) {
        /* We find deferred work through IORING_SQ_TASKRUN; without it, plain. */
        p.flags &= ~(IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SINGLE_ISSUER);
    }
    if (cfg->iopoll) {
        p.flags |= IORING_SETUP_IOPOLL;
    }
    if (restrict_ring) {
        p.flags |= IORING_SETUP_R_DISABLED;
    }
    if (cfg->sqpoll) {
        p.flags |= IORING_SETUP_SQPOLL;
        p.sq_thread_idle = cfg->sq_thread_idle_ms ? cfg->sq_thread_idle_ms :
                           LURING_DEFAULT_SQ_IDLE_MS;
        if (cfg->sq_thread_cpu >= 0) {
            p.flags |= IORING_SETUP_SQ_AFF;
            p.sq_thread_cpu = cfg->sq_thread_cpu;
        }
        pthread_mutex_lock(&luring_sqpoll_lock);
        for (share = luring_sqpoll_list; share; share = share->sqpoll_next) {
            if (share->base.cfg.sq_thread_cpu == cfg->sq_thread_cpu &&
                share->base.cfg.sq_thread_idle_ms == cfg->sq_thread_idle_ms) {
                break;
            }
        }
        if (share) {
            /* One SQ thread serves every matching instance. */
            p.flags |= IORING_SETUP_ATTACH_WQ;
            p.wq_fd = share->ring.ring_fd;
        }
    }
    ret = io_uring_queue_init_params(depth, &e->ring, &p);
    if (ret < 0 && share) {
        p.flags &= ~IORING_SETUP_ATTACH_WQ;
        p.wq_fd = 0;
        ret = io_uring_queue_init_params(depth, &e->ring, &p);
    }
    if (cfg->sqpoll) {
        if (ret == 0) {
            e->sqpoll_next = luring_sqpoll_list;
            luring_sqpoll_list = e;
        }
        pthread_mutex_unlock(&luring_sqpoll_lock);
    }
    if (ret < 0) {
        struct rlimit rl;

        error_setg_errno(errp, -ret, "io_uring: cannot create a ring of %u entries%s%s",
                         depth, cfg->sqpoll ? " with SQPOLL" : "",
                         cfg->iopoll ? " with IOPOLL" : "");
        if (ret == -ENOMEM && getrlimit(RLIMIT_MEMLOCK, &rl) == 0 &&
            rl.rlim_cur != RLIM_INFINITY) {
            /* Without CAP_IPC_LOCK the ring's pages count against RLIMIT_MEMLOCK. */
            error_append_hint(errp, "RLIMIT_MEMLOCK is %llu KiB; raise it ('ulimit -l', "
                              "prlimit --memlock) or use a smaller queue depth.\n",
                              (unsigned long long)rl.rlim_cur >> 10);
        }
        return ret;
    }
    e->setup_flags = p.flags;
    return 0;
}

static int luring_restrict(LuringEngine *e, Error **errp)
{
    struct io_uring_restriction res[24];
    unsigned n = 0;
    static const uint8_t ops[] = {
        IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_READ, IORING_OP_WRITE,
        IORING_OP_FSYNC, IORING_OP_FALLOCATE,
    };
    static const uint8_t regs[] = {
        IORING_REGISTER_FILES_UPDATE, IORING_UNREGISTER_RING_FDS,
    };
    int ret;

    memset(res, 0, sizeof(res));
    for (size_t i = 0; i < G_N_ELEMENTS(ops); i++) {
        res[n].opcode = IORING_RESTRICTION_SQE_OP;
        res[n++].sqe_op = ops[i];
    }
    if (e->pool) {
        res[n].opcode = IORING_RESTRICTION_SQE_OP;
        res[n++].sqe_op = IORING_OP_READ_FIXED;
        res[n].opcode = IORING_RESTRICTION_SQE_OP;
        res[n++].sqe_op = IORING_OP_WRITE_FIXED;
    }
    if (e->blk_discard_cmd) {
        res[n].opcode = IORING_RESTRICTION_SQE_OP;
        res[n++].sqe_op = IORING_OP_URING_CMD;
    }
    if (e->loop_waiter) {
        /* The event loop's wait on its epoll fd (luring_loop_wait). */
        res[n].opcode = IORING_RESTRICTION_SQE_OP;
        res[n++].sqe_op = IORING_OP_POLL_ADD;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(regs); i++) {
        res[n].opcode = IORING_RESTRICTION_REGISTER_OP;
        res[n++].register_op = regs[i];
    }
    res[n].opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED;
    res[n++].sqe_flags = IOSQE_FIXED_FILE | IOSQE_IO_LINK | IOSQE_ASYNC;
    if (e->fixed_required) {
        res[n].opcode = IORING_RESTRICTION_SQE_FLAGS_REQUIRED;
        res[n++].sqe_flags = IOSQE_FIXED_FILE;
    }
    /* Debian's liburing 2.3 declares but does not export the helper. */
    ret = sys_io_uring_register(e->ring.ring_fd, IORING_REGISTER_RESTRICTIONS, res, n);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "io_uring: cannot register ring restrictions");
        return ret;
    }
    return 0;
}

static void luring_sqpoll_unlink(LuringEngine *e)
{
    LuringEngine **p;

    pthread_mutex_lock(&luring_sqpoll_lock);
    for (p = &luring_sqpoll_list; *p; p = &(*p)->sqpoll_next) {
        if (*p == e) {
            *p = e->sqpoll_next;
            break;
        }
    }
    pthread_mutex_unlock(&luring_sqpoll_lock);
}

static void luring_inject_from_env(LuringEngine *e)
{
    const char *env = getenv("RINGBLK_IO_URING_INJECT");
    char kind[16];
    int n;

    if (!env || sscanf(env, "%15[a-z]:%d", kind, &n) != 2) {
        return;
    }
    if (!strcmp(kind, "short")) {
        luring_debug_inject(&e->base, LURING_INJECT_SHORT, n);
    } else if (!strcmp(kind, "eagain")) {
        luring_debug_inject(&e->base, LURING_INJECT_EAGAIN, n);
    } else if (!strcmp(kind, "ebusy")) {
        luring_debug_inject(&e->base, LURING_INJECT_EBUSY, n);
    }
}

static void luring_destroy(RawAioEngine *base);

/*
 * The fixed-file table. auto turns it on wherever the ring is ours: a
 * registered file saves the kernel an fget/fput per request (+8% IOPS on
 * page-cache reads at depth 32), async-punt files included: only their
 * low-depth requests skip the inline attempt that resolves the file in
 * our thread, and only those make io-wq take the ring's lock for it. Only fixed-files=on makes the table required: then a restricted ring
 * refuses plain fds, and running out of slots fails the open.
 */
static int luring_setup_files(LuringEngine *e, const RawAioConfig *cfg, Error **errp)
{
    bool must = cfg->fixed_files == RAW_AIO_ONOFFAUTO_ON;
    int ret;

    if (!must && cfg->fixed_files == RAW_AIO_ONOFFAUTO_OFF) {
        return 0;
    }
    ret = io_uring_register_files_sparse(&e->ring, LURING_FILE_SLOTS);
    if (ret < 0) {
        if (!must) {
            return 0;
        }
        error_setg_errno(errp, -ret, "io_uring: cannot register a table of "
                         "%d fixed files", LURING_FILE_SLOTS);
        return ret;
    }
    e->fixed_files = true;
    e->fixed_required = must;
    e->file_used[LURING_LOOP_FILE_SLOT / 64] |= 1ull << (LURING_LOOP_FILE_SLOT % 64);
    return 0;
}

/*
 * Whether to put our SQEs on ctx's fd-monitor ring (share-ring): 1 yes,
 * 0 no, -1 error. on: always, switching the loop to io_uring if need be;
 * auto: when the loop already runs on io_uring. Options that need a ring
 * of our own (registered files or buffers, SQPOLL, IOPOLL, restrictions
 * asked for) rule sharing out: quietly for auto, with an error for on.
 */
static int luring_want_shared(AioContext *ctx, const RawAioConfig *cfg, Error **errp)
{
    const char *own = cfg->fixed_files == RAW_AIO_ONOFFAUTO_ON ? "fixed-files=on" :
                      cfg->fixed_buffers == RAW_AIO_ONOFFAUTO_ON ? "fixed-buffers=on" :
                      cfg->sqpoll ? "sqpoll=on" :
                      cfg->iopoll ? "iopoll=on" :
                      cfg->restrict_ops == RAW_AIO_ONOFFAUTO_ON ? "restrict=on" : NULL;
    RawAioOnOffAuto want = cfg->share_ring;

    if (luring_share_override >= 0) {
        /* Tests: share wherever the options allow, as before the option existed. */
        want = luring_share_override && !own ? RAW_AIO_ONOFFAUTO_ON : RAW_AIO_ONOFFAUTO_OFF;
    }
    switch (want) {
    case RAW_AIO_ONOFFAUTO_OFF:
        return 0;
    case RAW_AIO_ONOFFAUTO_AUTO:
        return !own && aio_context_get_fdmon_ring(ctx) != NULL;
    case RAW_AIO_ONOFFAUTO_ON:
        break;
    }
    if (own) {
        error_setg(errp, "io_uring: share-ring=on cannot be combined with %s, "
                   "which needs a ring of the engine's own", own);
        return -1;
    }
    if (!aio_context_get_fdmon_ring(ctx) &&
        !aio_context_set_fdmon(ctx, AIO_FDMON_IO_URING, errp)) {
        error_prepend(errp, "io_uring: share-ring=on needs the event loop on io_uring: ");
        return -1;
    }
    return 1;
}

static RawAioEngine *luring_create(AioContext *ctx, const RawAioConfig *cfg, Error **errp)
{
    const char *inl = getenv("RINGBLK_IO_URING_INLINE_READ");   /* measuring: 0 turns it off */
    LuringEngine *e;
    /* At least 2: a FUA write needs two SQEs at once. */
    unsigned depth = cfg->queue_depth ? MAX(cfg->queue_depth, 2) : LURING_DEFAULT_DEPTH;
    bool restrict_ring;
    int ret;

    if (!luring_available(errp)) {
        return NULL;
    }
    if (depth > LURING_MAX_DEPTH) {
        error_setg(errp, "io_uring: queue depth %u is above the maximum %u",
                   depth, LURING_MAX_DEPTH);
        return NULL;
    }
    if (cfg->restrict_ops == RAW_AIO_ONOFFAUTO_ON && !luring_caps.restrictions) {
        error_setg(errp, "io_uring: restrict-ops=on needs ring restrictions "
                   "(IORING_SETUP_R_DISABLED, Linux 5.10)");
        return NULL;
    }
    restrict_ring = cfg->restrict_ops != RAW_AIO_ONOFFAUTO_OFF && luring_caps.restrictions;

    e = g_new0(LuringEngine, 1);
    e->base.ops = &raw_aio_io_uring_ops;
    e->base.ctx = ctx;
    e->base.cfg = *cfg;
    e->notifier.fd = -1;
    e->ring.ring_fd = -1;
    e->loop_poll_fd = -1;
    e->iopoll = cfg->iopoll;
    e->sqpoll = cfg->sqpoll;
    e->sync_below = e->sync_split = cfg->sync_below;
    e->sync_race = cfg->sync_race && cfg->sync_below;
    e->blk_discard_cmd = luring_caps.op_uring_cmd;

    e->inline_reads = !inl || strcmp(inl, "0") != 0;
    e->sq_ring = &e->ring;
    ret = luring_want_shared(ctx, cfg, errp);
    if (ret < 0) {
        g_free(e);
        return NULL;
    }
    if (ret) {
        e->shared = true;
        e->sq_ring = aio_context_get_fdmon_ring(ctx);
        e->sq_entries = depth;
        /* The loop submits this ring: no per-submission choice, always forced. */
        e->sqe_base_flags = cfg->async_punt ? IOSQE_ASYNC : 0;
        aio_context_set_fdmon_cqe_handler(ctx, luring_foreign_cqe, NULL);
        e->submit_bh = aio_bh_new(ctx, luring_submit_bh, e);
        e->done_bh = aio_bh_new(ctx, luring_done_bh, e);
        e->iopoll_bh = aio_bh_new(ctx, luring_iopoll_bh, e);
        luring_inject_from_env(e);
        luring_race_init(e);
        return &e->base;
    }
    e->async_punt = cfg->async_punt;
    ret = luring_setup_ring(e, cfg, depth, restrict_ring, errp);
    if (ret < 0) {
        g_free(e);
        return NULL;
    }
    e->sq_entries = e->ring.sq.ring_entries;
    e->defer_taskrun = e->setup_flags & IORING_SETUP_DEFER_TASKRUN;
    e->taskrun_flag = e->setup_flags & IORING_SETUP_TASKRUN_FLAG;

    ret = luring_setup_files(e, cfg, errp);
    if (ret < 0) {
        goto fail;
    }
    ret = luring_setup_buffers(e, errp);
    if (ret < 0) {
        goto fail;
    }
    ret = event_notifier_init(&e->notifier, false);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "io_uring: cannot create an eventfd");
        e->notifier.fd = -1;
        goto fail;
    }
    ret = io_uring_register_eventfd(&e->ring, event_notifier_get_fd(&e->notifier));
    if (ret < 0) {
        error_setg_errno(errp, -ret, "io_uring: cannot register the eventfd");
        goto fail;
    }
    /* Decided before the restrictions, which then allow its POLL_ADD. */
    e->loop_waiter = luring_loop_wait_possible(e);
    if (restrict_ring) {
        ret = luring_restrict(e, errp);
        if (ret < 0) {
            goto fail;
        }
        e->restricted = true;
    }
    if (!e->sqpoll && getenv("RINGBLK_IO_URING_REGRING") &&
        strcmp(getenv("RINGBLK_IO_URING_REGRING"), "0") != 0) {
        /* Optional: saves the fd lookup per io_uring_enter; per-thread table. */
        e->reg_ring_fd = io_uring_register_ring_fd(&e->ring) == 1;
    }
    if (restrict_ring) {
        ret = sys_io_uring_register(e->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS,
                                    NULL, 0);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "io_uring: cannot enable the restricted ring");
            goto fail;
        }
    }
    e->submit_bh = aio_bh_new(ctx, luring_submit_bh, e);
    e->done_bh = aio_bh_new(ctx, luring_done_bh, e);
    e->iopoll_bh = aio_bh_new(ctx, luring_iopoll_bh, e);
    aio_set_fd_handler(ctx, event_notifier_get_fd(&e->notifier), false, luring_fd_read,
                       NULL, luring_fd_poll, luring_fd_poll_ready, e);
    /* One waiter per context: the first instance that can be it. */
    if (e->loop_waiter) {
        e->loop_waiter = aio_context_set_ring_waiter(ctx, &luring_loop_waiter_ops, e);
    }
#if LURING_EVENTFD_TOGGLE
    /* Measured no gain (docs/devel/io_uring.md): opt-in for further study. */
    if (getenv("RINGBLK_IO_URING_POLL_EVENTFD") &&
        !strcmp(getenv("RINGBLK_IO_URING_POLL_EVENTFD"), "off")) {
        aio_set_fd_poll(ctx, event_notifier_get_fd(&e->notifier), luring_poll_begin,
                        luring_poll_end);
    }
#endif
    luring_inject_from_env(e);
    luring_race_init(e);
    return &e->base;

fail:
    luring_destroy(&e->base);
    return NULL;
}

static void luring_destroy(RawAioEngine *base)
{
    LuringEngine *e = luring_of(base);

    e->plugged = 0;
    luring_sync_burst_run(e);
    if (e->loop_waiter) {
        aio_context_clear_ring_waiter(base->ctx, e);
        e->loop_waiter = false;
        luring_loop_flush(e);
    }
    if (e->submit_bh) {
        /* Every request completes, its callback runs, before the ring goes. */
        while (e->shared && (e->inflight || e->ovf_head || e->done_head || e->tp_inflight)) {
            /*
             * Our CQEs arrive through the loop's dispatch. Called from one
             * of our callbacks, CQEs the loop already copied out would not
             * stop a blocking wait (aio_poll only counts BHs and notify as
             * pending work), so look without blocking first.
             */
            if (!aio_poll(base->ctx, false)) {
                aio_poll(base->ctx, true);
            }
        }
        while (e->inflight || e->ovf_head || e->done_head || e->tp_inflight ||
               luring_staged(e)) {
            luring_done_bh(e);
            luring_flush(e);
            if (e->tp_inflight) {
                /* Thread-pool completions arrive through the loop. */
                aio_poll(base->ctx, true);
            } else if (e->inflight && (e->sqpoll || !io_uring_sq_ready(&e->ring))) {
                /* Wait only when everything is in the kernel's hands. */
                struct io_uring_cqe *cqe;
                int ret = io_uring_wait_cqe(&e->ring, &cqe);

                if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
                    g_error("io_uring: waiting for completions at destroy: %s",
                            strerror(-ret));
                }
            }
            luring_reap(e);
            luring_done_bh(e);
        }
        if (!e->shared) {
            aio_set_fd_handler(base->ctx, event_notifier_get_fd(&e->notifier), false,
                               NULL, NULL, NULL, NULL, NULL);
        }
    }
    if (e->reaping) {
        /* From within our callback: the frames below us still use e and the ring. */
        e->zombie = true;
        return;
    }
    luring_free(e);
}

static void luring_pool_put_bh(void *opaque)
{
    thread_pool_put(opaque);
}

/* Final teardown; nothing is in flight and no frame of ours runs. */
static void luring_free(LuringEngine *e)
{
    if (e->submit_bh) {
        aio_bh_delete(e->submit_bh);
        aio_bh_delete(e->done_bh);
        aio_bh_delete(e->iopoll_bh);
    }
    if (e->pool_tp) {
        if (e->zombie) {
            /* We may be inside the pool's own completion dispatch: put it later. */
            aio_bh_schedule_oneshot(e->base.ctx, luring_pool_put_bh, e->pool_tp);
        } else {
            thread_pool_put(e->pool_tp);
        }
    }
    if (e->sqpoll) {
        luring_sqpoll_unlink(e);
    }
    if (e->ring.ring_fd >= 0) {
        io_uring_queue_exit(&e->ring);
    }
    if (e->notifier.fd >= 0) {
        event_notifier_cleanup(&e->notifier);
    }
    if (e->sync_batch) {
        laio_batch_free(e->sync_batch);
    }
    g_free(e->sync_burst);
    g_free(e->sync_rets);
    if (e->bufpool) {
        /* Orphan the pool; buffers still out keep it mapped until freed. */
        if (__atomic_fetch_or(&e->bufpool->state, 1, __ATOMIC_ACQ_REL) == 0) {
            luring_pool_release(e->bufpool);
        }
    }
    g_free(e);
}

/* ---- Debug hooks ------------------------------------------------------------------- */

void luring_debug_inject(RawAioEngine *base, int kind, int n)
{
    LuringEngine *e = luring_of(base);

    e->inj_kind = kind;
    e->inj_count = kind == LURING_INJECT_NONE ? 0 : n;
}

void luring_get_stats(RawAioEngine *base, LuringStats *st)
{
    LuringEngine *e = luring_of(base);

    *st = e->stats;
    st->race_rounds = e->race.rounds;
    st->race_sync_wins = e->race.picked[1];
}

void luring_get_info(RawAioEngine *base, LuringInfo *info)
{
    LuringEngine *e = luring_of(base);

    info->sq_entries = e->sq_entries;
    info->setup_flags = e->setup_flags;
    info->defer_taskrun = e->defer_taskrun;
    info->sqpoll = e->setup_flags & IORING_SETUP_SQPOLL;
    info->shared_fdmon_ring = e->shared;
    info->shared_sq_thread = e->setup_flags & IORING_SETUP_ATTACH_WQ;
    info->fixed_files = e->fixed_files;
    info->fixed_buffers = e->pool != NULL;
    info->restricted = e->shared ? aio_context_fdmon_ring_restricted(e->base.ctx) : e->restricted;
    info->registered_ring_fd = e->reg_ring_fd;
    info->loop_waiter = e->loop_waiter;
    info->eventfd_enabled = e->ring.cq.kflags &&
                            !(IO_URING_READ_ONCE(*e->ring.cq.kflags) & IORING_CQ_EVENTFD_DISABLED);
}

int luring_debug_nop(RawAioEngine *base)
{
    LuringEngine *e = luring_of(base);
    struct io_uring_sqe *sqe;

    if (e->shared || e->inflight >= e->sq_entries || e->ovf_head ||
        !(sqe = io_uring_get_sqe(&e->ring))) {
        return -EBUSY;
    }
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)e | TAG_NOP);
    e->inflight++;
    e->nop_done = false;
    luring_kick(e);
    return 0;
}

int luring_debug_nop_result(RawAioEngine *base, int *res)
{
    LuringEngine *e = luring_of(base);

    if (!e->nop_done) {
        return 0;
    }
    *res = e->nop_res;
    return 1;
}

bool luring_debug_leave_task_work(RawAioEngine *base)
{
    LuringEngine *e = luring_of(base);

    if (!e->loop_waiter || !luring_task_work_flagged(e)) {
        return false;
    }
    e->taskrun_left = true;
    return true;
}

const RawAioOps raw_aio_io_uring_ops = {
    .name = "io_uring",
    .available = luring_available,
    .create = luring_create,
    .destroy = luring_destroy,
    .add_file = luring_add_file,
    .update_file = luring_update_file,
    .remove_file = luring_remove_file,
    .submit = luring_submit,
    .plug = luring_plug,
    .unplug = luring_unplug,
    .buf_alloc = luring_buf_alloc,
    .buf_free = luring_buf_free,
};
