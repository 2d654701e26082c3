/*
 * aio=native: Linux AIO (io_submit) for O_DIRECT files.
 *
 * One kernel AIO context per engine instance, i.e. per AioContext and
 * configuration; only the AioContext's thread touches it, so nothing here
 * locks. The instance owns a fixed array of `depth` slots, each holding the
 * iocb of one request in the kernel (or prepared for it), so requests cost
 * no allocation; the caller's RawAioReq points at its slot.
 *
 * Submission: a request takes a free slot, its iocb is prepared and added to
 * the batch; unplugged, the batch goes out at once, plugged it goes out in
 * one io_submit at the last unplug. With no free slot (or when earlier
 * requests are still waiting) requests join the overflow FIFO and take slots
 * as completions free them, in order; what completions let in is submitted
 * at once, plugged or not, and a request finding every slot in the batch
 * sends the batch even while plugged, since nothing else could free one. io_submit returning -EAGAIN leaves the
 * batch in place until the next completion (or a bottom half when nothing is
 * in flight).
 *
 * Completion: every iocb names the instance's eventfd (IOCB_FLAG_RESFD),
 * registered with the AioContext. Completions are reaped from the AIO ring
 * in user memory: the kernel maps it at the address io_setup returned and
 * documents userland as a writer of `head`. That makes the poll function a
 * pair of loads and lets the eventfd handler reap without io_getevents.
 * (libaio's io_getevents with a zero timeout peeks at the same ring when it
 * is empty, so an empty poll is cheap either way, but it reaps non-empty
 * rings with a syscall: measured on Linux 6.18 with one 4 KiB buffered read
 * per io_submit, submit + reap took 1.5-2.1 us with io_getevents and
 * 1.1-1.2 us reading the ring.) If the ring does not look like the
 * format we know (magic, incompat features) we fall back to io_getevents.
 * Events are popped one at a time, head stored before the callback runs, so
 * a callback that polls the loop (nested aio_poll) sees a consistent ring;
 * as the eventfd was already read, a bottom half is armed (a few atomics)
 * before a callback that leaves events behind, and reaps them if it nests.
 *
 * Semantics (raw-aio.h): short transfers are resubmitted for the rest (with a
 * slice of the caller's iovec allocated on that rare path), EOF zero-fills,
 * no progress on a write is -ENOSPC, -EAGAIN/-EINTR are resubmitted. FLUSH
 * is IOCB_CMD_FDSYNC (kernel 4.18+); if the kernel refuses it with -EINVAL
 * flushes go to the thread pool from then on. DISCARD and WRITE_ZEROES have
 * no AIO opcode and always run raw_aio_do_sync() in the thread pool; FUA
 * writes carry RWF_DSYNC in aio_rw_flags (kernel 4.13+), or use the pool
 * when the kernel refuses that with -EOPNOTSUPP.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <libaio.h>
#include <stddef.h>
#include <string.h>
#include <sys/uio.h>

#include <glib.h>

#include "block/raw-aio.h"
#include "linux-aio-ring.h"
#include "util/thread-pool.h"

#define LAIO_DEFAULT_DEPTH 128
#define LAIO_MAX_DEPTH     65536

typedef struct LaioSlot LaioSlot;
struct LaioSlot {
    struct iocb iocb;             /* first: io_event.obj points here */
    RawAioReq *req;
    struct iovec *rest;           /* slow path: the rest of a short transfer */
    LaioSlot *next_free;
};

typedef struct LinuxAioEngine {
    RawAioEngine hdr;
    io_context_t io_ctx;
    struct laio_ring *ring;       /* NULL: reap with io_getevents */
    EventNotifier notifier;
    int notifier_fd;              /* its fd, for every iocb */
    AioBH *kick_bh;               /* failed submissions, -EAGAIN retries, nested reaping */
    bool kick_armed;              /* kick_bh scheduled and not yet run */
    ThreadPool *pool;

    unsigned depth;
    LaioSlot *slots;
    LaioSlot *free_slots;
    struct iocb **batch;          /* prepared, not yet accepted by io_submit */
    unsigned batch_len;
    unsigned kernel_in_flight;    /* accepted by io_submit, not yet reaped */
    unsigned plugged;
    unsigned in_flight;           /* accepted by submit, callback not yet run */

    RawAioReq *overflow_head, *overflow_tail;
    RawAioReq *failed_head, *failed_tail;   /* complete from kick_bh */

    bool no_fdsync;               /* kernel refused IOCB_CMD_FDSYNC */
    bool no_rw_flags;             /* kernel refused RWF_DSYNC in aio_rw_flags */
} LinuxAioEngine;

/* req->engine_priv[] use */
#define PRIV_SLOT   0
#define PRIV_ENGINE 1
/* req->engine_u64[0]: the error of a request failed in submit */

static inline void laio_flush_batch(LinuxAioEngine *s);

/* ---- availability ------------------------------------------------------------ */

static bool laio_probe(Error **errp)
{
    static gsize probed;
    static int probe_err;
    io_context_t ctx = 0;

    if (g_once_init_enter(&probed)) {
        int r = io_setup(1, &ctx);
        if (r == 0) {
            io_destroy(ctx);
        }
        probe_err = r < 0 ? -r : 0;
        g_once_init_leave(&probed, 1);
    }
    if (probe_err) {
        error_setg_errno(errp, probe_err, "aio=native is not available: io_setup failed");
        return false;
    }
    return true;
}

/* ---- request routing ------------------------------------------------------------ */

/* Whether req runs in the thread pool rather than through io_submit. */
static bool laio_uses_pool(LinuxAioEngine *s, RawAioReq *req)
{
    switch (req->type) {
    case RAW_AIO_DISCARD:
    case RAW_AIO_WRITE_ZEROES:
        return true;
    case RAW_AIO_FLUSH:
        return s->no_fdsync;
    case RAW_AIO_WRITE:
        return (req->flags & RAW_AIO_FUA) && s->no_rw_flags;
    default:
        return false;
    }
}

static void laio_finish(LinuxAioEngine *s, RawAioReq *req, int ret)
{
    s->in_flight--;
    req->cb(req->opaque, ret);
}

static int laio_pool_work(void *arg)
{
    return raw_aio_do_sync(arg);
}

static void laio_pool_done(void *opaque, int ret)
{
    RawAioReq *req = opaque;

    laio_finish(req->engine_priv[PRIV_ENGINE], req, ret);
}

static void laio_to_pool(LinuxAioEngine *s, RawAioReq *req)
{
    req->done = 0;
    thread_pool_submit(s->pool, laio_pool_work, req, laio_pool_done, req);
}

/* Schedules kick_bh once; the scheduling costs a few atomics, no syscall, from our thread. */
static inline void laio_arm_kick(LinuxAioEngine *s)
{
    if (!s->kick_armed) {
        s->kick_armed = true;
        aio_bh_schedule(s->kick_bh);
    }
}

/* Completes req with ret from a bottom half (never from within submit). */
static void laio_fail_later(LinuxAioEngine *s, RawAioReq *req, int ret)
{
    req->engine_u64[0] = (uint64_t)(int64_t)ret;
    req->next = NULL;
    if (s->failed_tail) {
        s->failed_tail->next = req;
    } else {
        s->failed_head = req;
    }
    s->failed_tail = req;
    laio_arm_kick(s);
}

/* ---- slots and iocbs --------------------------------------------------------------- */

static void laio_slot_release(LinuxAioEngine *s, LaioSlot *slot)
{
    if (G_UNLIKELY(slot->rest)) {
        g_free(slot->rest);
        slot->rest = NULL;
    }
    slot->req = NULL;
    slot->next_free = s->free_slots;
    s->free_slots = slot;
}

/* Prepares slot's iocb for what remains of req (from req->done on) and batches it. */
static void laio_prep_and_batch(LinuxAioEngine *s, LaioSlot *slot)
{
    RawAioReq *req = slot->req;
    struct iocb *iocb = &slot->iocb;
    const struct iovec *iov = req->iov;
    int niov = req->niov;

    if (req->type == RAW_AIO_FLUSH) {
        io_prep_fdsync(iocb, req->fd);
    } else {
        if (G_UNLIKELY(req->done > 0)) {
            int n = MIN(raw_aio_iov_count_from(req->iov, req->niov, req->done), IOV_MAX);

            g_free(slot->rest);
            slot->rest = g_new(struct iovec, n);
            niov = raw_aio_iov_slice(slot->rest, n, req->iov, req->niov, req->done);
            iov = slot->rest;
        }
        /* More than the kernel takes at once: the rest follows as a short transfer. */
        niov = MIN(niov, IOV_MAX);
        if (req->type == RAW_AIO_READ) {
            io_prep_preadv(iocb, req->fd, iov, niov, req->offset + req->done);
        } else {
            io_prep_pwritev(iocb, req->fd, iov, niov, req->offset + req->done);
            if (req->flags & RAW_AIO_FUA) {
                iocb->aio_rw_flags = RWF_DSYNC;
            }
        }
    }
    io_set_eventfd(iocb, s->notifier_fd);
    s->batch[s->batch_len++] = iocb;
}

static void laio_start(LinuxAioEngine *s, RawAioReq *req)
{
    LaioSlot *slot = s->free_slots;

    s->free_slots = slot->next_free;
    slot->req = req;
    req->engine_priv[PRIV_SLOT] = slot;
    laio_prep_and_batch(s, slot);
}

static void overflow_push(LinuxAioEngine *s, RawAioReq *req)
{
    req->next = NULL;
    if (s->overflow_tail) {
        s->overflow_tail->next = req;
    } else {
        s->overflow_head = req;
    }
    s->overflow_tail = req;
}

/*
 * Moves waiting requests into free slots (or the pool), in order, and
 * submits unless plugged. From the completion path (`force`) it submits even
 * while plugged: those requests were submitted long ago, the plug only
 * delays the caller's current burst.
 */
static void laio_refill(LinuxAioEngine *s, bool force)
{
    while (s->overflow_head) {
        RawAioReq *req = s->overflow_head;
        bool pool = laio_uses_pool(s, req);

        if (!pool && !s->free_slots) {
            break;
        }
        s->overflow_head = req->next;
        if (!s->overflow_head) {
            s->overflow_tail = NULL;
        }
        if (pool) {
            laio_to_pool(s, req);
        } else {
            laio_start(s, req);
        }
    }
    if (force || !s->plugged) {
        laio_flush_batch(s);
    }
}

/*
 * The rest of laio_flush_batch(): r is what io_submit answered for the
 * whole batch, which it did not take entirely.
 */
static void G_GNUC_NO_INLINE laio_flush_batch_rest(LinuxAioEngine *s, int r)
{
    unsigned start = 0;

    for (;; r = io_submit(s->io_ctx, s->batch_len - start, s->batch + start)) {
        if (r > 0) {
            s->kernel_in_flight += r;
            start += r;
            if (start >= s->batch_len) {
                break;
            }
            continue;
        }
        if (r == 0 || r == -EAGAIN || r == -EINTR) {
            /* Kernel out of request slots: retry when something completes. */
            if (s->kernel_in_flight == 0) {
                laio_arm_kick(s);
            }
            break;
        }

        /* The first iocb was refused. */
        LaioSlot *slot = (LaioSlot *)s->batch[start++];
        RawAioReq *req = slot->req;

        laio_slot_release(s, slot);
        if (r == -EINVAL && req->type == RAW_AIO_FLUSH && !s->no_fdsync) {
            s->no_fdsync = true;        /* a kernel before 4.18 or a file without AIO fsync */
            laio_to_pool(s, req);
        } else if (r == -EOPNOTSUPP && req->type == RAW_AIO_WRITE &&
                   (req->flags & RAW_AIO_FUA) && !s->no_rw_flags) {
            s->no_rw_flags = true;      /* no RWF_DSYNC for AIO: write + fdatasync in the pool */
            laio_to_pool(s, req);
        } else if (r == -EINVAL && req->type == RAW_AIO_READ && req->done > 0 &&
                   raw_aio_fd_offset_at_eof(req->fd, req->offset + req->done)) {
            /* A continuation at an unaligned EOF refused up front: still EOF. */
            raw_aio_iov_memset_from(req->iov, req->niov, req->done);
            laio_fail_later(s, req, 0);
        } else {
            laio_fail_later(s, req, r);
        }
        if (start >= s->batch_len) {
            break;
        }
    }
    if (start > 0) {
        s->batch_len -= start;
        if (s->batch_len) {
            memmove(s->batch, s->batch + start, s->batch_len * sizeof(s->batch[0]));
        }
    }
}

/* Hands the batch to the kernel. Never calls a request's callback itself. */
static inline void laio_flush_batch(LinuxAioEngine *s)
{
    int r;

    if (!s->batch_len) {
        return;
    }
    r = io_submit(s->io_ctx, s->batch_len, s->batch);
    if (G_LIKELY(r == (int)s->batch_len)) {
        s->kernel_in_flight += r;
        s->batch_len = 0;
        return;
    }
    laio_flush_batch_rest(s, r);
}

/* ---- completion ------------------------------------------------------------------- */

static void laio_complete_event(LinuxAioEngine *s, LaioSlot *slot, long res)
{
    RawAioReq *req = slot->req;

    /* The common case first: a read or write that transferred something. */
    if (G_LIKELY(res > 0 && req->type != RAW_AIO_FLUSH)) {
        req->done += res;
        if (G_LIKELY(req->done >= req->bytes)) {
            laio_slot_release(s, slot);
            laio_finish(s, req, 0);
        } else {
            laio_prep_and_batch(s, slot);   /* short transfer: go on with the rest */
        }
        return;
    }
    if (G_UNLIKELY(res == -EAGAIN || res == -EINTR)) {
        laio_prep_and_batch(s, slot);   /* try the same thing again */
        return;
    }
    if (req->type == RAW_AIO_FLUSH) {
        laio_slot_release(s, slot);
        laio_finish(s, req, res < 0 ? (int)res : 0);
        return;
    }
    if (G_UNLIKELY(res < 0)) {
        /*
         * O_DIRECT: after a short read at an unaligned EOF the continuation
         * offset is unaligned and the kernel says EINVAL; that is EOF.
         */
        if (res == -EINVAL && req->type == RAW_AIO_READ && req->done > 0 &&
            raw_aio_fd_offset_at_eof(req->fd, req->offset + req->done)) {
            raw_aio_iov_memset_from(req->iov, req->niov, req->done);
            res = 0;
        }
        laio_slot_release(s, slot);
        laio_finish(s, req, (int)res);
        return;
    }

    req->done += res;
    if (G_LIKELY(req->done >= req->bytes)) {
        laio_slot_release(s, slot);
        laio_finish(s, req, 0);
        return;
    }
    if (res == 0) {
        int ret = 0;

        if (req->type == RAW_AIO_READ) {
            raw_aio_iov_memset_from(req->iov, req->niov, req->done);   /* EOF */
        } else {
            ret = -ENOSPC;      /* a write that makes no progress */
        }
        laio_slot_release(s, slot);
        laio_finish(s, req, ret);
        return;
    }
    laio_prep_and_batch(s, slot);   /* short transfer: go on with the rest */
}

/*
 * Reaps every completion. The eventfd was read before we got here, so if a
 * callback polls the loop (nested aio_poll) nothing would wake it for the
 * events still in the ring: before each callback that leaves some behind,
 * kick_bh is armed to reap them from the nested loop.
 */
static void laio_process_completions(LinuxAioEngine *s)
{
    struct io_event ev;
    bool more;

    if (G_LIKELY(s->ring)) {
        while (laio_ring_pop(s->ring, &ev, &more)) {
            s->kernel_in_flight--;
            if (more) {
                laio_arm_kick(s);
            }
            laio_complete_event(s, (LaioSlot *)ev.obj, (long)ev.res);
        }
    } else {
        struct timespec zero = { 0, 0 };

        /* Fallback for an unknown ring format: one event per call, so none is held here. */
        while (io_getevents(s->io_ctx, 0, 1, &ev, &zero) == 1) {
            s->kernel_in_flight--;
            laio_arm_kick(s);
            laio_complete_event(s, (LaioSlot *)ev.obj, (long)ev.res);
        }
    }
    laio_refill(s, true);
}

static LinuxAioEngine *notifier_to_engine(EventNotifier *n)
{
    return (LinuxAioEngine *)((char *)n - offsetof(LinuxAioEngine, notifier));
}

static void laio_notifier_read(EventNotifier *n)
{
    LinuxAioEngine *s = notifier_to_engine(n);

    event_notifier_test_and_clear(n);
    laio_process_completions(s);
}

static bool laio_notifier_poll(EventNotifier *n)
{
    LinuxAioEngine *s = notifier_to_engine(n);
    if (!s->ring) {
        return false;       /* looking would need a syscall */
    }
    return laio_ring_has_events(s->ring);
}

static void laio_notifier_poll_ready(EventNotifier *n)
{
    laio_process_completions(notifier_to_engine(n));
}

static void laio_kick_bh(void *opaque)
{
    LinuxAioEngine *s = opaque;

    s->kick_armed = false;
    while (s->failed_head) {
        RawAioReq *req = s->failed_head;

        s->failed_head = req->next;
        if (!s->failed_head) {
            s->failed_tail = NULL;
        } else {
            laio_arm_kick(s);   /* the rest, should the callback nest aio_poll */
        }
        laio_finish(s, req, (int)(int64_t)req->engine_u64[0]);
    }
    laio_process_completions(s);
}

/* ---- ops --------------------------------------------------------------------------- */

static bool laio_available(Error **errp)
{
    return laio_probe(errp);
}

static RawAioEngine *laio_create(AioContext *ctx, const RawAioConfig *cfg, Error **errp)
{
    LinuxAioEngine *s;
    unsigned depth = cfg->queue_depth ? cfg->queue_depth : LAIO_DEFAULT_DEPTH;
    int r;

    if (depth > LAIO_MAX_DEPTH) {
        error_setg(errp, "aio=native: queue depth %u is larger than the maximum %u",
                   depth, LAIO_MAX_DEPTH);
        return NULL;
    }

    s = g_new0(LinuxAioEngine, 1);
    s->hdr.ctx = ctx;
    s->depth = depth;
    r = io_setup(depth, &s->io_ctx);
    if (r < 0) {
        error_setg_errno(errp, -r, "aio=native: cannot create a Linux AIO context of depth %u",
                         depth);
        if (r == -EAGAIN) {
            error_append_hint(errp, "fs.aio-max-nr limits the AIO requests of all processes\n");
        }
        g_free(s);
        return NULL;
    }
    r = event_notifier_init(&s->notifier, false);
    if (r < 0) {
        error_setg_errno(errp, -r, "aio=native: cannot create an eventfd");
        io_destroy(s->io_ctx);
        g_free(s);
        return NULL;
    }
    s->notifier_fd = event_notifier_get_fd(&s->notifier);

    s->ring = laio_ring_of(s->io_ctx);

    s->slots = g_new0(LaioSlot, depth);
    for (unsigned i = depth; i-- > 0;) {
        s->slots[i].next_free = s->free_slots;
        s->free_slots = &s->slots[i];
    }
    s->batch = g_new(struct iocb *, depth);
    s->pool = thread_pool_get(ctx);
    s->kick_bh = aio_bh_new(ctx, laio_kick_bh, s);
    aio_set_event_notifier(ctx, &s->notifier, false, laio_notifier_read,
                           laio_notifier_poll, laio_notifier_poll_ready);
    return &s->hdr;
}

static void laio_destroy(RawAioEngine *e)
{
    LinuxAioEngine *s = (LinuxAioEngine *)e;

    /* Whatever is batched or waiting goes out; every callback runs before we go. */
    s->plugged = 0;
    laio_refill(s, true);
    while (s->in_flight) {
        aio_poll(e->ctx, true);
    }

    aio_set_event_notifier(e->ctx, &s->notifier, false, NULL, NULL, NULL);
    event_notifier_cleanup(&s->notifier);
    aio_bh_delete(s->kick_bh);
    io_destroy(s->io_ctx);
    thread_pool_put(s->pool);
    g_free(s->batch);
    g_free(s->slots);
    g_free(s);
}

static int laio_add_file(RawAioEngine *e, int fd, int open_flags, Error **errp)
{
    if (!(open_flags & O_DIRECT)) {
        error_setg(errp, "aio=native was specified, but it requires cache.direct=on, "
                   "which was not specified.");
        return -EINVAL;
    }
    return -1;
}

static int laio_submit(RawAioEngine *e, RawAioReq *req)
{
    LinuxAioEngine *s = (LinuxAioEngine *)e;

    if (G_UNLIKELY((unsigned)req->type >= RAW_AIO_TYPE_MAX)) {
        return -EINVAL;
    }
    req->done = 0;
    req->engine_priv[PRIV_ENGINE] = s;
    s->in_flight++;

    /* Behind waiting requests everything waits, so that nothing overtakes them. */
    if (G_UNLIKELY(s->overflow_head)) {
        overflow_push(s, req);
        return 0;
    }
    if (G_UNLIKELY(laio_uses_pool(s, req))) {
        laio_to_pool(s, req);
        return 0;
    }
    if (G_UNLIKELY(!s->free_slots)) {
        overflow_push(s, req);
        /*
         * A request that finds the batch holding every slot sends it even
         * while plugged: only completions free slots.
         */
        if (s->batch_len) {
            laio_flush_batch(s);
        }
        return 0;
    }
    laio_start(s, req);
    if (!s->plugged) {
        laio_flush_batch(s);
    }
    return 0;
}

static void laio_plug(RawAioEngine *e)
{
    ((LinuxAioEngine *)e)->plugged++;
}

static void laio_unplug(RawAioEngine *e)
{
    LinuxAioEngine *s = (LinuxAioEngine *)e;

    g_assert(s->plugged > 0);
    if (--s->plugged == 0) {
        laio_refill(s, true);
    }
}

const RawAioOps raw_aio_native_ops = {
    .name = "native",
    .available = laio_available,
    .create = laio_create,
    .destroy = laio_destroy,
    .add_file = laio_add_file,
    .submit = laio_submit,
    .plug = laio_plug,
    .unplug = laio_unplug,
};
