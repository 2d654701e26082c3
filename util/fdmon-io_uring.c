/*
 * io_uring fd monitor.
 *
 * Each context owns one ring, used only by its thread. A handler that wants
 * events has one IORING_OP_POLL_ADD in the kernel, with user_data = the
 * AioHandler pointer (tag FDMON_URING_TAG_POLL in the low bits). Changes
 * are queued as SQEs and submitted by the next wait, so registering,
 * re-arming and waiting share one io_uring_enter(); an iteration costs work
 * proportional to the ready fds only.
 *
 * Level-triggered semantics (what poll and epoll give): a plain POLL_ADD is
 * one-shot and is re-armed after its CQE. The re-arm SQE is submitted only
 * at the next wait, after the handler ran, and the kernel checks readiness
 * when arming, so an fd the handler did not drain reports again. Event
 * notifiers always drain their eventfd, so they get a multishot POLL_ADD
 * (Linux 5.13) that stays armed and needs no re-arm SQE.
 *
 * At most one POLL_ADD per handler is in flight: changing events or removing
 * the handler sends POLL_REMOVE and waits for the poll's final CQE
 * (FDMON_URING_REMOVING) before arming again. A removed handler that still
 * has a poll in flight is kept on the zombie list and freed by that final
 * CQE, so a CQE never names freed memory.
 *
 * Timeouts: io_uring_submit_and_wait_timeout() passes a ns timespec (no
 * timeout SQE with IORING_FEAT_EXT_ARG, Linux 5.11; liburing falls back to
 * one otherwise). Built against a liburing without it, an IORING_OP_TIMEOUT
 * SQE does the same job.
 *
 * Foreign SQEs: see aio.h. Their CQEs are copied to a small ring buffer in
 * the wait and handed to the registered handler in the dispatch phase,
 * where callbacks may nest aio_poll() safely.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "aio-internal.h"

#define FDMON_URING_ENTRIES     256
#define FDMON_URING_FOREIGN_CAP 1024

static uint64_t node_user_data(AioHandler *node)
{
    return (uint64_t)(uintptr_t)node | FDMON_URING_TAG_POLL;
}

/* An SQE, submitting the queued ones first if the SQ is full. */
static struct io_uring_sqe *fdmon_uring_get_sqe(AioContext *ctx)
{
    struct io_uring *ring = &ctx->fdmon_uring.ring;
    struct io_uring_sqe *sqe;

    while (!(sqe = io_uring_get_sqe(ring))) {
        int ret = io_uring_submit(ring);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
            /* Cannot happen with valid SQEs; nothing sane to continue with. */
            error_report("io_uring fd monitor: io_uring_submit: %s", g_strerror(-ret));
            abort();
        }
    }
    return sqe;
}

static void fdmon_uring_arm(AioContext *ctx, AioHandler *node)
{
    struct io_uring_sqe *sqe = fdmon_uring_get_sqe(ctx);

    node->uring_multishot = node->edge_safe && ctx->fdmon_uring.have_multishot;
#ifdef HAVE_IO_URING_PREP_POLL_MULTISHOT
    if (node->uring_multishot) {
        io_uring_prep_poll_multishot(sqe, node->fd, (unsigned)node->fdmon_events);
    } else
#endif
    {
        node->uring_multishot = false;
        io_uring_prep_poll_add(sqe, node->fd, (unsigned)node->fdmon_events);
    }
    io_uring_sqe_set_data64(sqe, node_user_data(node));
    node->uring_state = FDMON_URING_ARMED;
}

static void fdmon_uring_disarm(AioContext *ctx, AioHandler *node)
{
    struct io_uring_sqe *sqe = fdmon_uring_get_sqe(ctx);

    io_uring_prep_poll_remove(sqe, node_user_data(node));
    io_uring_sqe_set_data64(sqe, FDMON_URING_TAG_INTERNAL);
    node->uring_state = FDMON_URING_REMOVING;
}

/* Test hook: RINGBLK_FDMON_IO_URING_FAIL=EPERM|ENOSYS|<errno> fakes a failed setup. */
static int fdmon_uring_fake_failure(void)
{
    const char *s = getenv("RINGBLK_FDMON_IO_URING_FAIL");

    if (!s || !*s) {
        return 0;
    }
    if (!strcmp(s, "EPERM")) {
        return -EPERM;
    }
    if (!strcmp(s, "ENOSYS")) {
        return -ENOSYS;
    }
    if (!strcmp(s, "ENOMEM")) {
        return -ENOMEM;
    }
    return -abs(atoi(s) ? atoi(s) : EINVAL);
}

/* Debian's liburing 2.3 declares but does not export the register helpers. */
static int fdmon_uring_register(struct io_uring *ring, unsigned op, void *arg, unsigned n)
{
    int ret = (int)syscall(__NR_io_uring_register, ring->ring_fd, op, arg, n);
    return ret < 0 ? -errno : ret;
}

/*
 * The loop's ring carries the loop's polls and the file engine's requests
 * (share-ring), so it accepts exactly those: POLL_ADD/REMOVE, the timeout
 * old liburing waits with, NOP, and the engine's reads, writes, syncs,
 * fallocate and block-device discard (URING_CMD, where the kernel knows
 * it), with no registrations at all. Anything else -- opening files,
 * sockets, reading through other fds' buffers -- fails with EACCES, so a
 * stray or forged SQE cannot widen what the process can do.
 */
static int fdmon_uring_restrict(struct io_uring *ring)
{
    static const uint8_t ops[] = {
        IORING_OP_NOP, IORING_OP_POLL_ADD, IORING_OP_POLL_REMOVE, IORING_OP_TIMEOUT,
        IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_READ, IORING_OP_WRITE,
        IORING_OP_FSYNC, IORING_OP_FALLOCATE, IORING_OP_URING_CMD,
    };
    struct io_uring_restriction res[G_N_ELEMENTS(ops) + 1];
    unsigned n = 0;
    int ret;

    memset(res, 0, sizeof(res));
    for (size_t i = 0; i < G_N_ELEMENTS(ops); i++) {
        res[n].opcode = IORING_RESTRICTION_SQE_OP;
        res[n++].sqe_op = ops[i];
    }
    res[n].opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED;
    res[n++].sqe_flags = IOSQE_IO_LINK | IOSQE_ASYNC;
    ret = fdmon_uring_register(ring, IORING_REGISTER_RESTRICTIONS, res, n);
    if (ret == -EINVAL) {
        /* A kernel older than URING_CMD (5.19) refuses the unknown opcode. */
        res[G_N_ELEMENTS(ops) - 1] = res[n - 1];
        ret = fdmon_uring_register(ring, IORING_REGISTER_RESTRICTIONS, res, n - 1);
    }
    if (ret < 0) {
        return ret;
    }
    return fdmon_uring_register(ring, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
}

/* A restricted ring where the kernel has restrictions (5.10), a plain one otherwise. */
static int fdmon_uring_setup(AioContext *ctx)
{
    struct io_uring *ring = &ctx->fdmon_uring.ring;
    struct io_uring_params p = { .flags = IORING_SETUP_R_DISABLED };
    int ret = io_uring_queue_init_params(FDMON_URING_ENTRIES, ring, &p);

    ctx->fdmon_uring.restricted = false;
    if (ret == -EINVAL) {
        return io_uring_queue_init(FDMON_URING_ENTRIES, ring, 0);
    }
    if (ret < 0) {
        return ret;
    }
    ret = fdmon_uring_restrict(ring);
    if (ret < 0) {
        /* Restrictions refused: a disabled ring is useless, start over plainly. */
        io_uring_queue_exit(ring);
        return io_uring_queue_init(FDMON_URING_ENTRIES, ring, 0);
    }
    ctx->fdmon_uring.restricted = true;
    return 0;
}

static bool fdmon_io_uring_init(AioContext *ctx, Error **errp)
{
    struct io_uring *ring = &ctx->fdmon_uring.ring;
    int ret = fdmon_uring_fake_failure();
    const char *why = "";

    if (ret == 0) {
        ret = fdmon_uring_setup(ctx);
    }
    if (ret < 0) {
        switch (-ret) {
        case EPERM:
            why = " (io_uring is forbidden here: sysctl kernel.io_uring_disabled "
                  "or a seccomp filter)";
            break;
        case ENOSYS:
            why = " (the kernel has no io_uring)";
            break;
        case ENOMEM:
            why = " (out of memory or RLIMIT_MEMLOCK too low)";
            break;
        }
        error_setg_errno(errp, -ret, "io_uring fd monitor unavailable: "
                         "io_uring_setup failed%s", why);
        return false;
    }
    /* Multishot poll came with Linux 5.13, as did IORING_FEAT_RSRC_TAGS. */
    ctx->fdmon_uring.have_multishot = (ring->features & IORING_FEAT_RSRC_TAGS) != 0;
    LIST_INIT(&ctx->fdmon_uring.zombies);
    ctx->fdmon_uring.foreign = g_new(FdMonForeignCqe, FDMON_URING_FOREIGN_CAP);
    ctx->fdmon_uring.foreign_cap = FDMON_URING_FOREIGN_CAP;
    ctx->fdmon_uring.foreign_head = ctx->fdmon_uring.foreign_count = 0;
    return true;
}

static void fdmon_io_uring_cleanup(AioContext *ctx)
{
    AioHandler *node;

    /* Closing the ring cancels every request: no CQE will name a handler. */
    io_uring_queue_exit(&ctx->fdmon_uring.ring);
    LIST_FOREACH(node, &ctx->handlers, node) {
        node->uring_state = FDMON_URING_IDLE;
    }
    LIST_FOREACH(node, &ctx->deleted_handlers, node) {
        node->uring_state = FDMON_URING_IDLE;
    }
    while ((node = LIST_FIRST(&ctx->fdmon_uring.zombies))) {
        LIST_REMOVE(node, node);
        g_free(node);
    }
    g_free(ctx->fdmon_uring.foreign);
    ctx->fdmon_uring.foreign = NULL;
    ctx->fdmon_uring.foreign_count = 0;
}

static void fdmon_io_uring_update(AioContext *ctx, AioHandler *node, int old_events)
{
    switch (node->uring_state) {
    case FDMON_URING_IDLE:
        if (node->fdmon_events) {
            fdmon_uring_arm(ctx, node);
        }
        break;
    case FDMON_URING_ARMED:
        /* Remove; the final CQE re-arms with the new events if any. */
        fdmon_uring_disarm(ctx, node);
        break;
    case FDMON_URING_REMOVING:
        break;            /* the final CQE looks at fdmon_events then */
    }
}

static void fdmon_uring_poll_cqe(AioContext *ctx, AioHandlerReadyList *ready,
                                 AioHandler *node, int32_t res, uint32_t flags)
{
    bool final = !(flags & IORING_CQE_F_MORE);

    if (res > 0 && !node->uring_zombie && !node->deleted) {
        aio_add_ready_handler(ready, node, res);
    } else if (res == -EINVAL && node->uring_multishot) {
        /* Multishot poll rejected (kernel older than it claims): one-shot from now. */
        ctx->fdmon_uring.have_multishot = false;
    }
    if (!final) {
        return;
    }
    node->uring_state = FDMON_URING_IDLE;
    if (node->uring_zombie) {
        LIST_REMOVE(node, node);
        g_free(node);
    } else if (res == -EBADF) {
        aio_handler_fd_invalid(ctx, node);    /* not re-armed */
    } else if (node->fdmon_events) {
        fdmon_uring_arm(ctx, node);
    }
}

/* false when the foreign buffer is full and the CQE must stay in the ring. */
static bool fdmon_uring_foreign_cqe(AioContext *ctx, struct io_uring_cqe *cqe)
{
    unsigned cap = ctx->fdmon_uring.foreign_cap;

    if (!ctx->fdmon_uring.foreign_cb) {
        if (!ctx->fdmon_uring.warned_foreign) {
            ctx->fdmon_uring.warned_foreign = true;
            warn_report("io_uring fd monitor: dropping a foreign CQE: no handler registered");
        }
        return true;
    }
    if (ctx->fdmon_uring.foreign_count == cap) {
        return false;
    }
    ctx->fdmon_uring.foreign[(ctx->fdmon_uring.foreign_head +
                              ctx->fdmon_uring.foreign_count) % cap] = (FdMonForeignCqe) {
        .user_data = cqe->user_data, .res = cqe->res, .flags = cqe->flags,
    };
    ctx->fdmon_uring.foreign_count++;
    return true;
}

/* Submits and waits for one CQE or timeout_ns (> 0). */
static int fdmon_uring_wait_timeout(AioContext *ctx, int64_t timeout_ns)
{
    struct io_uring *ring = &ctx->fdmon_uring.ring;
#ifdef HAVE_IO_URING_SUBMIT_AND_WAIT_TIMEOUT
    struct __kernel_timespec ts = {
        .tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000,
    };
    struct io_uring_cqe *cqe;

    return io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts, NULL);
#else
    /*
     * Old liburing: an IORING_OP_TIMEOUT SQE. count=1 makes it complete as
     * soon as any other CQE is posted, so it does not linger after an fd
     * event; its own CQE is tagged internal and ignored. The kernel reads
     * the timespec at submission, so one per context is enough.
     */
    struct io_uring_sqe *sqe = fdmon_uring_get_sqe(ctx);

    ctx->fdmon_uring.ts.tv_sec = timeout_ns / 1000000000;
    ctx->fdmon_uring.ts.tv_nsec = timeout_ns % 1000000000;
    io_uring_prep_timeout(sqe, &ctx->fdmon_uring.ts, 1, 0);
    io_uring_sqe_set_data64(sqe, FDMON_URING_TAG_INTERNAL);
    return io_uring_submit_and_wait(ring, 1);
#endif
}

static int fdmon_io_uring_wait(AioContext *ctx, AioHandlerReadyList *ready,
                               int64_t timeout_ns)
{
    struct io_uring *ring = &ctx->fdmon_uring.ring;
    struct io_uring_cqe *cqe;
    int ret, n = 0;

    if (ctx->fdmon_uring.foreign_count) {
        /*
         * Foreign CQEs taken from the ring wait for dispatch: never sleep on
         * them. A callback of one that nests aio_poll() until a later one
         * completes would otherwise wait for a CQE already consumed.
         */
        timeout_ns = 0;
    }
    if (timeout_ns == 0 || io_uring_cq_ready(ring)) {
        /*
         * Just look (or CQEs are already there: no need to sleep). Enter
         * only to submit or to flush an overflowed CQ; a multishot poll's
         * CQE posted when this thread signalled its own eventfd is usually
         * here already, making the iteration syscall-free.
         */
        ret = 0;
        if (io_uring_sq_ready(ring) || io_uring_cq_has_overflow(ring)) {
            ret = io_uring_submit_and_get_events(ring);
        }
    } else if (timeout_ns < 0) {
        ret = io_uring_submit_and_wait(ring, 1);
    } else {
        ret = fdmon_uring_wait_timeout(ctx, timeout_ns);
    }
    if (ret < 0 && ret != -ETIME && ret != -EINTR) {
        return ret;
    }

    while (io_uring_peek_cqe(ring, &cqe) == 0) {
        uint64_t tag = cqe->user_data & FDMON_URING_TAG_MASK;

        if (tag == FDMON_URING_TAG_POLL) {
            AioHandler *node = (AioHandler *)(uintptr_t)cqe->user_data;
            fdmon_uring_poll_cqe(ctx, ready, node, cqe->res, cqe->flags);
            n++;
        } else if (tag == FDMON_URING_TAG_FOREIGN) {
            if (!fdmon_uring_foreign_cqe(ctx, cqe)) {
                break;
            }
            n++;
        }
        /* FDMON_URING_TAG_INTERNAL and liburing's own timeouts: nothing to do */
        io_uring_cqe_seen(ring, cqe);
    }
    return n;
}

/*
 * Whether a wait has work even with a zero timeout: SQEs to submit, CQEs
 * already posted (poll events, shared requests) or copied out, an
 * overflowed CQ. aio_poll() skips the wait of a non-blocking pass when
 * this says no and every fd has a poll function, so CQEs sitting in the
 * ring must say yes or they wait for the next blocking pass (a client
 * pumping aio_poll(false) would never see them).
 */
static bool fdmon_io_uring_need_wait(AioContext *ctx)
{
    struct io_uring *ring = &ctx->fdmon_uring.ring;

    return io_uring_sq_ready(ring) > 0 || io_uring_cq_ready(ring) > 0 ||
           io_uring_cq_has_overflow(ring) || ctx->fdmon_uring.foreign_count > 0;
}

static bool fdmon_io_uring_dispatch(AioContext *ctx)
{
    bool progress = false;

    /* Pop before calling: a callback may nest aio_poll(), which pops too. */
    while (ctx->fdmon_uring.foreign_count) {
        FdMonForeignCqe c = ctx->fdmon_uring.foreign[ctx->fdmon_uring.foreign_head];

        ctx->fdmon_uring.foreign_head =
            (ctx->fdmon_uring.foreign_head + 1) % ctx->fdmon_uring.foreign_cap;
        ctx->fdmon_uring.foreign_count--;
        ctx->fdmon_uring.foreign_cb(ctx->fdmon_uring.foreign_opaque, c.user_data,
                                    c.res, c.flags);
        progress = true;
    }
    return progress;
}

void fdmon_io_uring_set_foreign(AioContext *ctx, AioFdMonCqeHandler *cb, void *opaque)
{
    ctx->fdmon_uring.foreign_cb = cb;
    ctx->fdmon_uring.foreign_opaque = opaque;
}

const FdMonOps fdmon_io_uring_ops = {
    .name = "io_uring",
    .init = fdmon_io_uring_init,
    .cleanup = fdmon_io_uring_cleanup,
    .update = fdmon_io_uring_update,
    .wait = fdmon_io_uring_wait,
    .need_wait = fdmon_io_uring_need_wait,
    .dispatch = fdmon_io_uring_dispatch,
};
