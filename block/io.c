/*
 * The request path: bdrv_aio_* -> checks -> (alignment, splitting,
 * serialisation) -> driver op -> bdrv_req_done -> caller's callback.
 *
 * Design:
 *   - Every request is a BdrvRequest from the node's free list; the common
 *     case (aligned, within limits) hands that same struct to the driver, so
 *     after warm-up a request costs no allocation, one clock read at submit
 *     and one at completion.
 *   - Anything else becomes a small state machine on the "top" request:
 *     STAGE_RMW reads the partial head/tail blocks of a misaligned write into
 *     a bounce buffer, STAGE_MAIN issues the aligned operation as one or more
 *     fragments (split at max_transfer), and the top completes when its last
 *     fragment does.
 *   - Writes, write-zeroes and discards are tracked by the aligned range they
 *     touch. A read-modify-write is "serialising": it waits for every earlier
 *     overlapping write to finish, and later overlapping writes wait for it,
 *     so the data it read cannot go stale before it writes it back. Reads are
 *     not tracked. Waiting only on earlier requests keeps the order acyclic.
 *   - Callbacks never run inside the submitting call: requests that finish
 *     early (invalid, empty, no-op) complete from a per-node bottom half.
 *   - bs->in_flight counts top requests until their callback has returned;
 *     drain waits for it to reach zero, and the drop to zero kicks
 *     AIO_WAIT_WHILE waiters in other threads.
 * Everything here runs in the node's AioContext thread.
 */
#include "block/block_int.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Largest single read/write: INT_MAX rounded down to 4 KiB, as QEMU. */
#define BDRV_REQUEST_MAX_BYTES ((int64_t)(INT_MAX & ~4095))
/* Largest zero buffer the write-zeroes fallback writes at once. */
#define BDRV_ZERO_BUF_MAX (1 << 20)

enum {
    STAGE_DIRECT,   /* the top request itself is at the driver (or done_later) */
    STAGE_RMW,      /* reading head/tail blocks of a misaligned write */
    STAGE_MAIN,     /* fragments of the aligned operation in flight */
};

G_STATIC_ASSERT((int)BDRV_REQ_TYPE_READ == (int)BLOCK_ACCT_READ);
G_STATIC_ASSERT((int)BDRV_REQ_TYPE_WRITE == (int)BLOCK_ACCT_WRITE);
G_STATIC_ASSERT((int)BDRV_REQ_TYPE_FLUSH == (int)BLOCK_ACCT_FLUSH);
G_STATIC_ASSERT((int)BDRV_REQ_TYPE_DISCARD == (int)BLOCK_ACCT_DISCARD);
G_STATIC_ASSERT((int)BDRV_REQ_TYPE_ZEROES == (int)BLOCK_ACCT_ZEROES);
G_STATIC_ASSERT(STAGE_DIRECT == 0);

static void req_dispatch(BdrvRequest *req);
static void req_proceed(BdrvRequest *req);

/* ---- in-flight counter (written by the owner thread, read by any) ---------- */

static inline void in_flight_inc(BlockDriverState *bs)
{
    __atomic_store_n(&bs->in_flight, bs->in_flight + 1, __ATOMIC_RELAXED);
}

static inline void in_flight_dec(BlockDriverState *bs)
{
    unsigned v = bs->in_flight - 1;
    __atomic_store_n(&bs->in_flight, v, __ATOMIC_RELEASE);
    if (v == 0) {
        aio_wait_kick();
    }
}

bool bdrv_requests_pending(BlockDriverState *bs)
{
    for (; bs; bs = bs->file) {
        if (__atomic_load_n(&bs->in_flight, __ATOMIC_ACQUIRE)) {
            return true;
        }
    }
    return false;
}

/* ---- request pool ------------------------------------------------------------ */

static inline BdrvRequest *req_alloc(BlockDriverState *bs)
{
    BdrvRequest *req = bs->free_reqs;
    if (req) {
        bs->free_reqs = req->next;
    } else {
        req = g_aligned_alloc0(1, sizeof(*req), BDRV_REQUEST_ALIGN);
    }
    req->bs = bs;
    req->flags = 0;
    req->iov = NULL;
    req->niov = 0;
    req->qiov = NULL;
    req->parent = NULL;
    req->ret = 0;
    req->pending = 0;
    req->slow = 0;      /* STAGE_DIRECT, not invalid, tracked, ... */
    req->bounce = NULL;
    req->next = NULL;
    return req;
}

static void req_free(BdrvRequest *req)
{
    BlockDriverState *bs = req->bs;
    req->next = bs->free_reqs;
    bs->free_reqs = req;
}

/* ---- deferred completion -------------------------------------------------------- */

static void done_bh_cb(void *opaque)
{
    BlockDriverState *bs = opaque;
    /* Take the whole queue: requests deferred by callbacks wait for the next run. */
    BdrvRequest *req = bs->done_head;
    bs->done_head = bs->done_tail = NULL;
    while (req) {
        BdrvRequest *next = req->next;
        req->next = NULL;
        bdrv_req_done(req, req->later_ret);
        req = next;
    }
}

void bdrv_req_done_later(BdrvRequest *req, int ret)
{
    BlockDriverState *bs = req->bs;
    req->later_ret = ret;
    req->next = NULL;
    if (bs->done_tail) {
        bs->done_tail->next = req;
    } else {
        bs->done_head = req;
        aio_bh_schedule(bs->done_bh);
    }
    bs->done_tail = req;
}

void bdrv_io_init(BlockDriverState *bs)
{
    bdrv_io_attach(bs, bs->ctx);
}

void bdrv_io_attach(BlockDriverState *bs, AioContext *ctx)
{
    bs->done_bh = aio_bh_new(ctx, done_bh_cb, bs);
}

void bdrv_io_detach(BlockDriverState *bs)
{
    assert(!bs->done_head);
    aio_bh_delete(bs->done_bh);
    bs->done_bh = NULL;
}

void bdrv_io_cleanup(BlockDriverState *bs)
{
    assert(bs->in_flight == 0);
    if (bs->done_bh) {
        bdrv_io_detach(bs);
    }
    while (bs->free_reqs) {
        BdrvRequest *req = bs->free_reqs;
        bs->free_reqs = req->next;
        iovector_destroy(&req->frag_qiov);
        g_aligned_free(req);
    }
    assert(!bs->zero_buf);
}

void bdrv_io_drop_buffers(BlockDriverState *bs)
{
    if (bs->zero_buf) {
        bdrv_blockalign_free(bs, bs->zero_buf, bs->zero_buf_size);
        bs->zero_buf = NULL;
    }
}

/* ---- overlap tracking ------------------------------------------------------------ */

static inline bool req_overlaps(const BdrvRequest *a, const BdrvRequest *b)
{
    return a->align_offset < b->align_offset + b->align_bytes &&
           b->align_offset < a->align_offset + a->align_bytes;
}

/* Must req wait for an earlier overlapping request? */
static bool req_must_wait(BdrvRequest *req)
{
    for (BdrvRequest *r = req->bs->track_head; r != req; r = r->track_next) {
        if ((req->serialising || r->serialising) && req_overlaps(req, r)) {
            return true;
        }
    }
    return false;
}

static void req_track(BdrvRequest *req)
{
    BlockDriverState *bs = req->bs;
    req->tracked = true;
    req->track_next = NULL;
    req->track_prev = bs->track_tail;
    if (bs->track_tail) {
        bs->track_tail->track_next = req;
    } else {
        bs->track_head = req;
    }
    bs->track_tail = req;
    if (req->serialising) {
        bs->serialising++;
    }
}

static void req_untrack(BdrvRequest *req)
{
    BlockDriverState *bs = req->bs;
    if (req->track_prev) {
        req->track_prev->track_next = req->track_next;
    } else {
        bs->track_head = req->track_next;
    }
    if (req->track_next) {
        req->track_next->track_prev = req->track_prev;
    } else {
        bs->track_tail = req->track_prev;
    }
    req->tracked = false;
    if (req->serialising) {
        bs->serialising--;
    }
    if (bs->waiting) {
        /* Start every waiter whose overlaps are gone, oldest first. */
        BdrvRequest *r = bs->track_head;
        while (r) {
            BdrvRequest *next = r->track_next;
            if (r->waiting && !req_must_wait(r)) {
                r->waiting = false;
                bs->waiting--;
                req_proceed(r);
            }
            r = next;
        }
    }
}

/* ---- alignment helpers ------------------------------------------------------------- */

static inline bool mem_aligned(const BlockDriverState *bs, const struct iovec *iov, int niov)
{
    uintptr_t mask = bs->bl.min_mem_alignment - 1;
    if (!mask) {
        return true;
    }
    for (int i = 0; i < niov; i++) {
        if (((uintptr_t)iov[i].iov_base | iov[i].iov_len) & mask) {
            return false;
        }
    }
    return true;
}

static void *req_bounce_alloc(BdrvRequest *req, size_t size)
{
    req->bounce = bdrv_blockalign(req->bs, size);
    req->bounce_size = size;
    return req->bounce;
}

/* Largest fragment for read/write: max_transfer rounded down to the alignments. */
void bdrv_io_refresh_limits(BlockDriverState *bs)
{
    int64_t max = bs->bl.max_transfer ? (int64_t)bs->bl.max_transfer : BDRV_REQUEST_MAX_BYTES;
    int64_t al = MAX(bs->bl.request_alignment, bs->bl.min_mem_alignment);
    max = max / al * al;
    bs->max_rw_bytes = max ? max : al;
    bs->max_direct_bytes = MIN(bs->max_rw_bytes, BDRV_REQUEST_MAX_BYTES);
}

static inline int64_t frag_max(const BlockDriverState *bs)
{
    return bs->max_rw_bytes;
}

/*
 * Issues [off, off+bytes) of type as fragments of top, taking data from
 * src at src_off (read/write) and splitting at max_transfer.
 */
static void issue_frags(BdrvRequest *top, BdrvReqType type, int64_t off, int64_t bytes,
                        const IOVector *src, size_t src_off, BdrvRequestFlags flags)
{
    BlockDriverState *bs = top->bs;
    int64_t max = src ? frag_max(bs) : bytes;
    while (bytes > 0) {
        int64_t n = MIN(bytes, max);
        BdrvRequest *frag = req_alloc(bs);
        frag->parent = top;
        frag->fragment = true;
        frag->type = type;
        frag->flags = flags;
        frag->offset = off;
        frag->bytes = n;
        if (src) {
            iovector_reset(&frag->frag_qiov);
            iovector_concat(&frag->frag_qiov, src, src_off, n);
            frag->iov = frag->frag_qiov.iov;
            frag->niov = frag->frag_qiov.niov;
            src_off += n;
        }
        top->pending++;
        req_dispatch(frag);
        off += n;
        bytes -= n;
    }
}

static void issue_buf(BdrvRequest *top, BdrvReqType type, int64_t off, int64_t bytes,
                      void *buf, BdrvRequestFlags flags)
{
    IOVector v;
    iovector_init_buf(&v, buf, bytes);
    issue_frags(top, type, off, bytes, &v, 0, flags);
}

/* ---- driver dispatch and completion -------------------------------------------------- */

static void req_dispatch(BdrvRequest *req)
{
    BlockDriverState *bs = req->bs;
    const BlockDriver *drv = bs->drv;
    int ret;

    switch (req->type) {
    case BDRV_REQ_TYPE_READ:
        ret = drv->bdrv_aio_preadv(bs, req);
        break;
    case BDRV_REQ_TYPE_WRITE:
        ret = drv->bdrv_aio_pwritev(bs, req);
        break;
    case BDRV_REQ_TYPE_FLUSH:
        ret = drv->bdrv_aio_flush ? drv->bdrv_aio_flush(bs, req) : -ENOTSUP;
        break;
    case BDRV_REQ_TYPE_DISCARD:
        ret = drv->bdrv_aio_pdiscard ? drv->bdrv_aio_pdiscard(bs, req) : -ENOTSUP;
        break;
    case BDRV_REQ_TYPE_ZEROES:
        ret = drv->bdrv_aio_pwrite_zeroes ? drv->bdrv_aio_pwrite_zeroes(bs, req) : -ENOTSUP;
        break;
    default:
        ret = -EINVAL;
    }
    if (ret < 0) {
        /* Not started: finish through the BH so no callback runs in a submit call. */
        bdrv_req_done_later(req, ret);
    }
}

/* Write-zeroes fallback: write the zero buffer over the range, chunk by chunk. */
static void fallback_next(BdrvRequest *req)
{
    BlockDriverState *bs = req->bs;
    int64_t left = req->zero_bytes - req->fallback_done;
    req->offset = req->zero_offset + req->fallback_done;
    req->bytes = MIN(left, (int64_t)bs->zero_buf_size);
    iovector_reset(&req->frag_qiov);
    iovector_add(&req->frag_qiov, bs->zero_buf, req->bytes);
    req->iov = req->frag_qiov.iov;
    req->niov = req->frag_qiov.niov;
    req_dispatch(req);
}

static void fallback_start(BdrvRequest *req)
{
    BlockDriverState *bs = req->bs;
    if (!bs->zero_buf) {
        size_t al = MAX(bs->bl.request_alignment, bs->bl.min_mem_alignment);
        size_t size = BDRV_ZERO_BUF_MAX;
        if (bs->bl.max_transfer && bs->bl.max_transfer < size) {
            size = bs->bl.max_transfer;
        }
        size = MAX(size / al * al, al);
        bs->zero_buf = bdrv_blockalign(bs, size);
        memset(bs->zero_buf, 0, size);
        bs->zero_buf_size = size;
    }
    req->fallback = true;
    req->zero_offset = req->offset;
    req->zero_bytes = req->bytes;
    req->fallback_done = 0;
    req->type = BDRV_REQ_TYPE_WRITE;
    req->flags &= BDRV_REQ_FUA;
    fallback_next(req);
}

/* Accounts top, returns it to the pool and calls the caller back. */
static inline void req_complete(BdrvRequest *top, int ret)
{
    BlockDriverState *bs = top->bs;
    BlockCompletionFunc *cb = top->cb;
    void *opaque = top->opaque;

    if (G_UNLIKELY(top->invalid)) {
        block_acct_invalid(&bs->stats, (BlockAcctType)top->type);
    } else {
        block_acct_done(&bs->stats, (BlockAcctType)top->type, top->acct_bytes,
                        top->start_ns, ret);
    }
    req_free(top);
    cb(opaque, ret);
    in_flight_dec(bs);
}

static void req_finish(BdrvRequest *top, int ret)
{
    if (top->bounce) {
        bdrv_blockalign_free(top->bs, top->bounce, top->bounce_size);
        top->bounce = NULL;
    }
    if (top->tracked) {
        req_untrack(top);
    }
    req_complete(top, ret);
}

static void main_stage(BdrvRequest *top);

static void top_stage_done(BdrvRequest *top, int ret)
{
    switch (top->stage) {
    case STAGE_RMW:
        if (ret < 0) {
            req_finish(top, ret);
        } else {
            main_stage(top);
        }
        return;
    case STAGE_MAIN:
        if (ret == 0 && top->type == BDRV_REQ_TYPE_READ && top->bounce) {
            iov_from_buf(top->qiov->iov, top->qiov->niov, 0,
                         (char *)top->bounce + (top->offset - top->align_offset),
                         top->bytes);
        }
        req_finish(top, ret);
        return;
    default:
        req_finish(top, ret);
    }
}

/* Fragments, stages, fallbacks, -ENOTSUP answers. */
static void G_GNUC_NO_INLINE req_done_slow(BdrvRequest *req, int ret)
{
    if (req->fallback) {
        if (ret == 0) {
            req->fallback_done += req->bytes;
            if (req->fallback_done < req->zero_bytes) {
                fallback_next(req);
                return;
            }
        }
        req->fallback = false;
        req->type = BDRV_REQ_TYPE_ZEROES;
        req->offset = req->zero_offset;
        req->bytes = req->zero_bytes;
    } else if (ret == -ENOTSUP) {
        if (req->type == BDRV_REQ_TYPE_ZEROES && !(req->flags & BDRV_REQ_NO_FALLBACK)) {
            fallback_start(req);
            return;
        }
        if (req->type == BDRV_REQ_TYPE_DISCARD || req->type == BDRV_REQ_TYPE_FLUSH) {
            ret = 0;    /* discard is advisory; a driver without flush has nothing to flush */
        }
    }

    BdrvRequest *top = req->parent;
    if (!top) {
        top_stage_done(req, ret);
        return;
    }
    if (ret < 0 && top->ret == 0) {
        top->ret = ret;
    }
    req_free(req);
    if (--top->pending == 0) {
        top_stage_done(top, top->ret);
    }
}

void bdrv_req_done(BdrvRequest *req, int ret)
{
    /*
     * The common case: a top request that went to the driver as it was (no
     * stage, bounce, tracking or fallback; see bdrv_aio_preadv()).
     */
    if (G_LIKELY(!req->slow && ret != -ENOTSUP)) {
        req_complete(req, ret);
        return;
    }
    if (!req->fragment && ret != -ENOTSUP && req->stage == STAGE_DIRECT && !req->fallback) {
        req_finish(req, ret);   /* e.g. a tracked write */
        return;
    }
    req_done_slow(req, ret);
}

/* ---- stages ------------------------------------------------------------------------------ */

/* STAGE_MAIN: the aligned operation, from the bounce buffer or the caller's vector. */
static void main_stage(BdrvRequest *top)
{
    BlockDriverState *bs = top->bs;
    int64_t al = bs->bl.request_alignment;
    top->stage = STAGE_MAIN;
    top->ret = 0;

    if (top->type == BDRV_REQ_TYPE_ZEROES) {
        /* Bounce holds the head block at 0 and the tail block at al. */
        int64_t a = top->align_offset, e = a + top->align_bytes;
        int64_t end = top->offset + top->bytes;
        bool head = top->offset != a, tail = end != e;
        char *b = top->bounce;
        BdrvRequestFlags wflags = top->flags & BDRV_REQ_FUA;
        if (top->align_bytes == al) {
            memset(b + (top->offset - a), 0, top->bytes);
            issue_buf(top, BDRV_REQ_TYPE_WRITE, a, al, b, wflags);
            return;
        }
        int64_t mid_start = head ? a + al : a, mid_end = tail ? e - al : e;
        if (head) {
            memset(b + (top->offset - a), 0, al - (top->offset - a));
            issue_buf(top, BDRV_REQ_TYPE_WRITE, a, al, b, wflags);
        }
        if (mid_end > mid_start) {
            issue_frags(top, BDRV_REQ_TYPE_ZEROES, mid_start, mid_end - mid_start,
                        NULL, 0, top->flags);
        }
        if (tail) {
            memset(b + al, 0, end - (e - al));
            issue_buf(top, BDRV_REQ_TYPE_WRITE, e - al, al, b + al, wflags);
        }
        return;
    }

    if (top->bounce) {
        if (top->type == BDRV_REQ_TYPE_WRITE) {
            iov_to_buf(top->qiov->iov, top->qiov->niov, 0,
                       (char *)top->bounce + (top->offset - top->align_offset),
                       top->bytes);
        }
        issue_buf(top, top->type, top->align_offset, top->align_bytes, top->bounce,
                  top->flags);
    } else {
        issue_frags(top, top->type, top->offset, top->bytes, top->qiov, 0, top->flags);
    }
}

/* STAGE_RMW: read the partial first/last blocks; then main_stage. */
static void rmw_stage(BdrvRequest *top)
{
    BlockDriverState *bs = top->bs;
    int64_t al = bs->bl.request_alignment;
    int64_t a = top->align_offset, e = a + top->align_bytes;
    bool head = top->offset != a, tail = top->offset + top->bytes != e;
    top->stage = STAGE_RMW;
    top->ret = 0;

    if (top->type == BDRV_REQ_TYPE_ZEROES) {
        char *b = req_bounce_alloc(top, 2 * al);
        if (top->align_bytes == al) {
            issue_buf(top, BDRV_REQ_TYPE_READ, a, al, b, 0);
            return;
        }
        if (head) {
            issue_buf(top, BDRV_REQ_TYPE_READ, a, al, b, 0);
        }
        if (tail) {
            issue_buf(top, BDRV_REQ_TYPE_READ, e - al, al, b + al, 0);
        }
        return;
    }
    char *b = req_bounce_alloc(top, top->align_bytes);
    if (head) {
        issue_buf(top, BDRV_REQ_TYPE_READ, a, al, b, 0);
    }
    if (tail && (top->align_bytes > al || !head)) {
        issue_buf(top, BDRV_REQ_TYPE_READ, e - al, al, b + top->align_bytes - al, 0);
    }
}

/* A write-type request that may run now (not waiting for an overlap). */
static void req_proceed(BdrvRequest *req)
{
    BlockDriverState *bs = req->bs;
    if (req->serialising) {
        rmw_stage(req);
        return;
    }
    switch (req->type) {
    case BDRV_REQ_TYPE_WRITE:
        if (!mem_aligned(bs, req->qiov->iov, req->qiov->niov) ||
            (bs->bl.max_iov && req->qiov->niov > bs->bl.max_iov)) {
            req_bounce_alloc(req, req->bytes);
            main_stage(req);
        } else if (req->bytes > frag_max(bs)) {
            main_stage(req);
        } else {
            req->iov = req->qiov->iov;
            req->niov = req->qiov->niov;
            req_dispatch(req);
        }
        return;
    case BDRV_REQ_TYPE_DISCARD:
        req->offset = req->align_offset;
        req->bytes = req->align_bytes;
        req_dispatch(req);
        return;
    default:   /* aligned write zeroes */
        req_dispatch(req);
    }
}

/* ---- submission ---------------------------------------------------------------------------- */

static int req_check(BlockDriverState *bs, BdrvRequest *req)
{
    BdrvRequestFlags allowed;
    switch (req->type) {
    case BDRV_REQ_TYPE_READ:
        allowed = 0;
        break;
    case BDRV_REQ_TYPE_WRITE:
        allowed = BDRV_REQ_FUA;
        break;
    case BDRV_REQ_TYPE_ZEROES:
        allowed = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK;
        break;
    default:
        allowed = 0;
    }
    if (req->flags & ~allowed) {
        return -EINVAL;
    }
    if (req->type != BDRV_REQ_TYPE_READ && req->type != BDRV_REQ_TYPE_FLUSH &&
        bs->read_only) {
        return -EPERM;
    }
    if (req->type == BDRV_REQ_TYPE_FLUSH) {
        return 0;
    }
    if ((req->type == BDRV_REQ_TYPE_READ || req->type == BDRV_REQ_TYPE_WRITE)) {
        if (!req->qiov) {
            return -EINVAL;
        }
        if (req->bytes > BDRV_REQUEST_MAX_BYTES) {
            return -E2BIG;
        }
    }
    if (req->offset < 0 || req->bytes < 0 || req->offset > bs->total_bytes ||
        req->bytes > bs->total_bytes - req->offset) {
        return -EIO;
    }
    return 0;
}

static void bdrv_submit(BlockDriverState *bs, BdrvReqType type, int64_t offset, int64_t bytes,
                        IOVector *qiov, BdrvRequestFlags flags,
                        BlockCompletionFunc *cb, void *opaque)
{
    while (bs->passthrough) {
        bs = bs->file;
    }
    BdrvRequest *req = req_alloc(bs);
    if (type == BDRV_REQ_TYPE_WRITE && G_UNLIKELY(bs->writethrough || bs->detect_zeroes)) {
        if (bs->writethrough) {
            flags |= BDRV_REQ_FUA;
        }
        if (bs->detect_zeroes && qiov && qiov->size && iov_is_zero(qiov->iov, qiov->niov)) {
            type = BDRV_REQ_TYPE_ZEROES;
            if (bs->detect_zeroes == 2 && bs->discard_unmap) {
                flags |= BDRV_REQ_MAY_UNMAP;
            }
        }
    }
    req->type = type;
    req->flags = flags;
    req->offset = offset;
    req->bytes = bytes;
    req->acct_bytes = bytes > 0 ? bytes : 0;
    req->qiov = qiov;
    req->cb = cb;
    req->opaque = opaque;
    in_flight_inc(bs);
    req->start_ns = block_acct_now_ns();

    int ret = req_check(bs, req);
    if (ret < 0) {
        req->invalid = true;
        bdrv_req_done_later(req, ret);
        return;
    }

    const int64_t al = bs->bl.request_alignment;
    switch (type) {
    case BDRV_REQ_TYPE_FLUSH:
        /* Nothing to flush on a read-only node (QEMU answers 0 too). */
        if (bs->cache_no_flush || bs->read_only) {
            bdrv_req_done_later(req, 0);
        } else {
            req_dispatch(req);
        }
        return;

    case BDRV_REQ_TYPE_READ:
        if (bytes == 0) {
            bdrv_req_done_later(req, 0);
            return;
        }
        if (((offset | bytes) & (al - 1)) == 0 && bytes <= frag_max(bs) &&
            (!bs->bl.max_iov || qiov->niov <= bs->bl.max_iov) &&
            mem_aligned(bs, qiov->iov, qiov->niov)) {
            /* The hot path: the request goes to the driver as it is. */
            req->iov = qiov->iov;
            req->niov = qiov->niov;
            req_dispatch(req);
            return;
        }
        req->align_offset = offset & ~(al - 1);
        req->align_bytes = ((offset + bytes + al - 1) & ~(al - 1)) - req->align_offset;
        if (((offset | bytes) & (al - 1)) || !mem_aligned(bs, qiov->iov, qiov->niov) ||
            (bs->bl.max_iov && qiov->niov > bs->bl.max_iov)) {
            req_bounce_alloc(req, req->align_bytes);
        }
        main_stage(req);
        return;

    case BDRV_REQ_TYPE_DISCARD:
        if (!bs->discard_unmap) {
            bdrv_req_done_later(req, 0);    /* discard=ignore */
            return;
        }
        /* Discard only whole aligned blocks inside the range. */
        req->align_offset = (offset + al - 1) & ~(al - 1);
        req->align_bytes = ((offset + bytes) & ~(al - 1)) - req->align_offset;
        if (req->align_bytes <= 0) {
            bdrv_req_done_later(req, 0);
            return;
        }
        break;

    default:    /* write, write zeroes */
        if (bytes == 0) {
            bdrv_req_done_later(req, 0);
            return;
        }
        req->align_offset = offset & ~(al - 1);
        req->align_bytes = ((offset + bytes + al - 1) & ~(al - 1)) - req->align_offset;
        req->serialising = ((offset | bytes) & (al - 1)) != 0;
        break;
    }

    req_track(req);
    if (bs->serialising && req_must_wait(req)) {
        req->waiting = true;
        bs->waiting++;
        return;
    }
    req_proceed(req);
}

/*
 * Whether a read or write of qiov at offset passes the range and size
 * checks of req_check() and needs no alignment, splitting or bounce buffer
 * (what bdrv_submit() and req_proceed() test): then it can go to the
 * driver as it is.
 */
static inline bool rw_is_direct(const BlockDriverState *bs, int64_t offset,
                                const IOVector *qiov)
{
    int64_t bytes = (int64_t)qiov->size;

    if (bytes <= 0 || bytes > bs->max_direct_bytes || offset < 0 ||
        bytes > bs->total_bytes || offset > bs->total_bytes - bytes ||
        ((offset | bytes) & (bs->bl.request_alignment - 1))) {
        return false;
    }
    if (qiov->niov == 1) {
        return !(((uintptr_t)qiov->iov[0].iov_base | qiov->iov[0].iov_len) &
                 (bs->bl.min_mem_alignment - 1));
    }
    return (!bs->bl.max_iov || qiov->niov <= bs->bl.max_iov) &&
           mem_aligned(bs, qiov->iov, qiov->niov);
}

void bdrv_aio_preadv(BlockDriverState *bs, int64_t offset, IOVector *qiov,
                     BdrvRequestFlags flags, BlockCompletionFunc *cb, void *opaque)
{
    while (bs->passthrough) {
        bs = bs->file;
    }
    /* The hot path: what bdrv_submit() would do for a direct read, minus its checks. */
    if (G_LIKELY(qiov && !flags && rw_is_direct(bs, offset, qiov))) {
        BdrvRequest *req = req_alloc(bs);
        req->type = BDRV_REQ_TYPE_READ;
        req->offset = offset;
        req->bytes = (int64_t)qiov->size;
        req->acct_bytes = qiov->size;
        req->qiov = qiov;
        req->iov = qiov->iov;
        req->niov = qiov->niov;
        req->cb = cb;
        req->opaque = opaque;
        in_flight_inc(bs);
        req->start_ns = block_acct_now_ns();
        int ret = bs->drv->bdrv_aio_preadv(bs, req);
        if (ret < 0) {
            /* Not started: finish through the BH, as req_dispatch() does. */
            bdrv_req_done_later(req, ret);
        }
        return;
    }
    bdrv_submit(bs, BDRV_REQ_TYPE_READ, offset, qiov ? (int64_t)qiov->size : 0, qiov,
                flags, cb, opaque);
}

void bdrv_aio_pwritev(BlockDriverState *bs, int64_t offset, IOVector *qiov,
                      BdrvRequestFlags flags, BlockCompletionFunc *cb, void *opaque)
{
    while (bs->passthrough) {
        bs = bs->file;
    }
    /*
     * The hot path, as for reads; an aligned write is still tracked, so a
     * later read-modify-write waits for it (and it for an earlier one).
     */
    if (G_LIKELY(qiov && !(flags & ~BDRV_REQ_FUA) && !bs->read_only && !bs->detect_zeroes &&
                 rw_is_direct(bs, offset, qiov))) {
        BdrvRequest *req = req_alloc(bs);
        req->type = BDRV_REQ_TYPE_WRITE;
        req->flags = bs->writethrough ? flags | BDRV_REQ_FUA : flags;
        req->offset = offset;
        req->bytes = (int64_t)qiov->size;
        req->acct_bytes = qiov->size;
        req->qiov = qiov;
        req->cb = cb;
        req->opaque = opaque;
        in_flight_inc(bs);
        req->start_ns = block_acct_now_ns();
        req->align_offset = offset;
        req->align_bytes = req->bytes;
        req_track(req);
        if (bs->serialising && req_must_wait(req)) {
            req->waiting = true;
            bs->waiting++;
            return;     /* req_proceed() sends it once the overlap is gone */
        }
        req->iov = qiov->iov;
        req->niov = qiov->niov;
        int ret = bs->drv->bdrv_aio_pwritev(bs, req);
        if (ret < 0) {
            bdrv_req_done_later(req, ret);
        }
        return;
    }
    bdrv_submit(bs, BDRV_REQ_TYPE_WRITE, offset, qiov ? (int64_t)qiov->size : 0, qiov,
                flags, cb, opaque);
}

void bdrv_aio_flush(BlockDriverState *bs, BlockCompletionFunc *cb, void *opaque)
{
    bdrv_submit(bs, BDRV_REQ_TYPE_FLUSH, 0, 0, NULL, 0, cb, opaque);
}

void bdrv_aio_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes,
                       BlockCompletionFunc *cb, void *opaque)
{
    bdrv_submit(bs, BDRV_REQ_TYPE_DISCARD, offset, bytes, NULL, 0, cb, opaque);
}

void bdrv_aio_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                            BdrvRequestFlags flags, BlockCompletionFunc *cb, void *opaque)
{
    bdrv_submit(bs, BDRV_REQ_TYPE_ZEROES, offset, bytes, NULL, flags, cb, opaque);
}

/* ---- plug --------------------------------------------------------------------------------- */

void bdrv_io_plug(BlockDriverState *bs)
{
    for (; bs; bs = bs->file) {
        bs->plugged++;
        if (bs->drv->bdrv_io_plug) {
            bs->drv->bdrv_io_plug(bs);
        }
    }
}

void bdrv_io_unplug(BlockDriverState *bs)
{
    for (; bs; bs = bs->file) {
        assert(bs->plugged > 0);
        bs->plugged--;
        if (bs->drv->bdrv_io_unplug) {
            bs->drv->bdrv_io_unplug(bs);
        }
    }
}

/* ---- synchronous helpers ------------------------------------------------------------------- */

typedef struct SyncReq {
    BlockDriverState *bs;
    BdrvReqType type;
    int64_t offset;
    int64_t bytes;
    IOVector *qiov;
    BdrvRequestFlags flags;
    int ret;
    bool done;
} SyncReq;

static void sync_cb(void *opaque, int ret)
{
    SyncReq *s = opaque;
    s->ret = ret;
    __atomic_store_n(&s->done, true, __ATOMIC_RELEASE);
    aio_wait_kick();
}

static void sync_submit(void *opaque)
{
    SyncReq *s = opaque;
    bdrv_submit(s->bs, s->type, s->offset, s->bytes, s->qiov, s->flags, sync_cb, s);
}

static int sync_run(SyncReq *s)
{
    AioContext *ctx = s->bs->ctx;
    if (aio_context_in_thread(ctx)) {
        /* A nested poll must not start new export/guest I/O. */
        aio_disable_external(ctx);
        sync_submit(s);
        AIO_WAIT_WHILE(ctx, !__atomic_load_n(&s->done, __ATOMIC_ACQUIRE));
        aio_enable_external(ctx);
    } else {
        aio_wait_bh_oneshot(ctx, sync_submit, s);
        AIO_WAIT_WHILE(ctx, !__atomic_load_n(&s->done, __ATOMIC_ACQUIRE));
    }
    return s->ret;
}

int bdrv_preadv(BlockDriverState *bs, int64_t offset, IOVector *qiov, BdrvRequestFlags flags)
{
    SyncReq s = { bs, BDRV_REQ_TYPE_READ, offset, qiov ? (int64_t)qiov->size : 0, qiov, flags };
    return sync_run(&s);
}

int bdrv_pwritev(BlockDriverState *bs, int64_t offset, IOVector *qiov, BdrvRequestFlags flags)
{
    SyncReq s = { bs, BDRV_REQ_TYPE_WRITE, offset, qiov ? (int64_t)qiov->size : 0, qiov, flags };
    return sync_run(&s);
}

int bdrv_pread(BlockDriverState *bs, int64_t offset, int64_t bytes, void *buf,
               BdrvRequestFlags flags)
{
    if (bytes < 0) {
        return -EINVAL;
    }
    IOVector qiov;
    iovector_init_buf(&qiov, buf, bytes);
    return bdrv_preadv(bs, offset, &qiov, flags);
}

int bdrv_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes, const void *buf,
                BdrvRequestFlags flags)
{
    if (bytes < 0) {
        return -EINVAL;
    }
    IOVector qiov;
    iovector_init_buf(&qiov, (void *)buf, bytes);
    return bdrv_pwritev(bs, offset, &qiov, flags);
}

int bdrv_flush(BlockDriverState *bs)
{
    SyncReq s = { bs, BDRV_REQ_TYPE_FLUSH };
    return sync_run(&s);
}

int bdrv_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    SyncReq s = { bs, BDRV_REQ_TYPE_DISCARD, offset, bytes };
    return sync_run(&s);
}

int bdrv_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                       BdrvRequestFlags flags)
{
    SyncReq s = { bs, BDRV_REQ_TYPE_ZEROES, offset, bytes, NULL, flags };
    return sync_run(&s);
}

/* ---- drain --------------------------------------------------------------------------------- */

static void disable_external_bh(void *opaque)
{
    aio_disable_external(opaque);
}

static void enable_external_bh(void *opaque)
{
    aio_enable_external(opaque);
}

/*
 * External handlers (exports) of the node's context are off while we wait,
 * so a steady stream of new requests cannot keep the drain from ending.
 */
void bdrv_drain(BlockDriverState *bs)
{
    AioContext *ctx = bs->ctx;
    if (aio_context_in_thread(ctx)) {
        aio_disable_external(ctx);
        AIO_WAIT_WHILE(ctx, bdrv_requests_pending(bs));
        aio_enable_external(ctx);
    } else {
        aio_wait_bh_oneshot(ctx, disable_external_bh, ctx);
        AIO_WAIT_WHILE(ctx, bdrv_requests_pending(bs));
        aio_wait_bh_oneshot(ctx, enable_external_bh, ctx);
    }
}

/* ---- buffers --------------------------------------------------------------------------------- */

static BlockDriverState *bdrv_bottom(BlockDriverState *bs)
{
    while (bs->file) {
        bs = bs->file;
    }
    return bs;
}

size_t bdrv_min_mem_align(BlockDriverState *bs)
{
    size_t a = 1;
    for (; bs; bs = bs->file) {
        a = MAX(a, bs->bl.min_mem_alignment);
    }
    return a;
}

uint32_t bdrv_request_alignment(BlockDriverState *bs)
{
    uint32_t a = 1;
    for (; bs; bs = bs->file) {
        a = MAX(a, bs->bl.request_alignment);
    }
    return a;
}

void *bdrv_try_blockalign(BlockDriverState *bs, size_t size)
{
    BlockDriverState *bottom = bdrv_bottom(bs);
    size_t align = MAX(bdrv_min_mem_align(bs), (size_t)sysconf(_SC_PAGESIZE));
    void *p = NULL;
    if (size == 0) {
        size = 1;
    }
    if (bottom->drv->bdrv_buf_alloc) {
        p = bottom->drv->bdrv_buf_alloc(bottom, size, align);
        if (p) {
            return p;
        }
    }
    if (posix_memalign(&p, align, size) != 0) {
        return NULL;
    }
    return p;
}

void *bdrv_blockalign(BlockDriverState *bs, size_t size)
{
    void *p = bdrv_try_blockalign(bs, size);
    if (!p) {
        g_error("bdrv_blockalign: out of memory (%zu bytes)", size);
    }
    return p;
}

void bdrv_blockalign_free(BlockDriverState *bs, void *buf, size_t size)
{
    if (!buf) {
        return;
    }
    BlockDriverState *bottom = bdrv_bottom(bs);
    if (bottom->drv->bdrv_buf_free) {
        bottom->drv->bdrv_buf_free(bottom, buf, size ? size : 1);
    } else {
        free(buf);
    }
}
