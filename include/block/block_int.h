/*
 * The block layer as drivers see it: the BlockDriver ops table, the
 * per-request struct the request path hands to drivers, and the node's
 * internals. Tools and exports use include/block/block.h only.
 *
 * Threads: a node and its children live in one AioContext; every op below
 * runs in that context's thread unless it says otherwise, so the request
 * path takes no lock.
 *
 * Requests: the layer (block/io.c) turns a caller's request into one or
 * more BdrvRequests, each an aligned, limit-respecting operation, and hands
 * each to the driver. A BdrvRequest comes from a per-node free list, so
 * after warm-up the request path allocates nothing; it embeds the engine's
 * RawAioReq so file-posix needs no allocation either. See
 * docs/devel/block-layer.md.
 */
#ifndef BLOCK_BLOCK_INT_H
#define BLOCK_BLOCK_INT_H

#include <time.h>

#include "block/block.h"
#include "block/raw-aio.h"

typedef enum {
    BDRV_REQ_TYPE_READ,
    BDRV_REQ_TYPE_WRITE,
    BDRV_REQ_TYPE_FLUSH,
    BDRV_REQ_TYPE_DISCARD,
    BDRV_REQ_TYPE_ZEROES,
} BdrvReqType;

typedef struct BdrvRequest BdrvRequest;

/*
 * One operation in flight on one node. Fields marked "driver" are what a
 * driver reads (and the scratch space it may use); the rest belong to
 * block/io.c.
 *
 * Layout: on page-cache hits each 4 KiB copy the kernel makes evicts much
 * of L1 between a request's submission and its completion, so every line
 * the completion touches is a miss. A plain read's completion reads
 * line 0 (io.c's completion fields) and, with io_uring, the first line of
 * the file engine's RawAioReq (line 2); its submission writes lines 0-3.
 * What splitting, bouncing and tracking (which every write takes) need
 * comes after. Requests are allocated cache-line aligned.
 */
struct BdrvRequest {
    /* line 0 -- io.c: completion */
    BlockDriverState *bs;
    BdrvReqType type;
    BdrvRequestFlags flags;
    BlockCompletionFunc *cb;
    void *opaque;
    int64_t start_ns;            /* accounting */
    uint64_t acct_bytes;
    /*
     * Everything that takes a request off the direct path, in one word:
     * zero means "a plain top request at the driver", which completion
     * checks with one load.
     */
    union {
        struct {
            uint8_t stage;       /* io.c's state machine */
            bool invalid;        /* rejected before reaching the driver */
            bool fallback;       /* write zeroes being emulated with zero writes */
            bool tracked;        /* on the node's overlap list */
            bool serialising;    /* read-modify-write: waits for overlapping writes */
            bool waiting;        /* waiting for an overlap to clear */
            bool fragment;       /* a piece of parent's */
        };
        uint64_t slow;
    };
    /* io.c: free list / deferred completion queue */
    BdrvRequest *next;

    /* line 1 -- driver: what to do (bs, type and flags above) */
    int64_t offset;
    int64_t bytes;
    struct iovec *iov;           /* read/write: the data (never modified by drivers) */
    int niov;

    /* io.c: the caller's request */
    int ret;                     /* first error of the fragments */
    IOVector *qiov;              /* caller's vector (read/write) */
    BdrvRequest *parent;         /* set on fragments of a split/bounced request */
    unsigned pending;            /* fragments in flight */
    int later_ret;               /* bdrv_req_done_later's result */
    void *bounce;                /* bdrv_blockalign'd copy of [align_offset, +align_bytes) */

    /* lines 2-3 -- driver: scratch space, valid from the driver op until bdrv_req_done() */
    RawAioReq raw;               /* file-posix: the engine request */

    /* cold: other drivers' scratch space */
    void *drv_priv;
    int64_t drv_u64;             /* e.g. null's completion deadline */
    IOVector drv_qiov;           /* a view of iov/niov for drivers that pass it on */
    BdrvRequest *drv_next;       /* driver queues (null-aio, blkdebug) */

    /* io.c: alignment and splitting */
    int64_t align_offset;        /* the aligned range the request covers */
    int64_t align_bytes;
    size_t bounce_size;
    IOVector frag_qiov;          /* fragment's slice; its array is reused across requests */
    int64_t zero_offset;         /* the write-zeroes range while emulating */
    int64_t zero_bytes;
    int64_t fallback_done;       /* write-zeroes fallback progress */

    /* io.c: overlap tracking for read-modify-write serialisation */
    BdrvRequest *track_prev, *track_next;
};

#define BDRV_REQUEST_ALIGN 64
/* The lines above, on LP64 (elsewhere only the order holds). */
G_STATIC_ASSERT(sizeof(void *) != 8 || offsetof(BdrvRequest, offset) == BDRV_REQUEST_ALIGN);
G_STATIC_ASSERT(sizeof(void *) != 8 || offsetof(BdrvRequest, raw) == 2 * BDRV_REQUEST_ALIGN);

/* Limits a driver reports in refresh_limits; io.c enforces them. */
typedef struct BlockLimits {
    uint32_t request_alignment;  /* offsets and lengths must be multiples (>= 1) */
    uint32_t min_mem_alignment;  /* buffer addresses and lengths must be multiples (>= 1) */
    uint64_t max_transfer;       /* bytes per read/write request; 0: unlimited */
    int max_iov;                 /* iovec elements per request; 0: unlimited */
} BlockLimits;

/* State of a reopen between prepare and commit/abort. */
typedef struct BDRVReopenState {
    BlockDriverState *bs;
    bool read_only;              /* the new values */
    bool cache_direct;
    bool cache_no_flush;
    JsonObject *changes;         /* as passed to bdrv_reopen (driver options) */
    void *opaque;                /* driver's prepared state */
} BDRVReopenState;

typedef struct BlockDriver {
    const char *format_name;
    size_t instance_size;        /* bs->opaque, zeroed */
    /* Format/filter drivers have a child (bs->file) opened before their open. */
    bool has_file_child;
    /* The option naming that child: "file" when NULL (blkdebug: "image"). */
    const char *child_key;
    /* Protocol drivers that keep a filename. */
    bool is_protocol;

    /*
     * Opens bs from its checked options (qapi_check'd BlockdevOptions of
     * this driver). bs->file is open already when has_file_child. Sets
     * bs->total_bytes. 0 or -errno with errp. Main thread, bs in its context.
     */
    int (*bdrv_open)(BlockDriverState *bs, JsonObject *opts, Error **errp);
    /* Frees driver state; the node is drained and flushed. */
    void (*bdrv_close)(BlockDriverState *bs);
    /* Current length (may ask the OS). Not on the request path. */
    int64_t (*bdrv_getlength)(BlockDriverState *bs);
    int (*bdrv_truncate)(BlockDriverState *bs, int64_t offset, bool exact,
                         const char *prealloc, Error **errp);

    /*
     * The request ops. req has type, offset, bytes, flags (and iov/niov for
     * read/write), all within the node's limits and aligned to
     * request_alignment (discard: any). Return 0 and call
     * bdrv_req_done(req, ret) exactly once later — never from within the
     * op; or return -errno without ever calling it (-ENOTSUP from
     * write_zeroes makes the layer write zero buffers unless NO_FALLBACK).
     * FUA on writes must be honoured.
     */
    int (*bdrv_aio_preadv)(BlockDriverState *bs, BdrvRequest *req);
    int (*bdrv_aio_pwritev)(BlockDriverState *bs, BdrvRequest *req);
    int (*bdrv_aio_flush)(BlockDriverState *bs, BdrvRequest *req);
    int (*bdrv_aio_pdiscard)(BlockDriverState *bs, BdrvRequest *req);
    int (*bdrv_aio_pwrite_zeroes)(BlockDriverState *bs, BdrvRequest *req);

    /* Synchronous; see bdrv_block_status. NULL: everything is data. */
    int (*bdrv_block_status)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                             int64_t *pnum, int *status);

    /* Fills bl (pre-set from the child, or to 1/1/0/0 for protocols). */
    void (*bdrv_refresh_limits)(BlockDriverState *bs, BlockLimits *bl);

    /* Called in the context's thread; children are handled by block.c. */
    int (*bdrv_attach_aio_context)(BlockDriverState *bs, AioContext *ctx, Error **errp);
    void (*bdrv_detach_aio_context)(BlockDriverState *bs);

    void (*bdrv_io_plug)(BlockDriverState *bs);
    void (*bdrv_io_unplug)(BlockDriverState *bs);

    /* Reopen: prepare may fail and leaves bs unchanged; then commit or abort. */
    int (*bdrv_reopen_prepare)(BDRVReopenState *state, Error **errp);
    void (*bdrv_reopen_commit)(BDRVReopenState *state);
    void (*bdrv_reopen_abort)(BDRVReopenState *state);

    /*
     * Whether requests may skip this node and go to bs->file as they are
     * (raw without offset/size). block.c also requires the node's generic
     * settings to equal its child's. Optional: NULL means never.
     */
    bool (*bdrv_is_passthrough)(BlockDriverState *bs);

    /* Adds driver facts (filename, aio, nowait, driver_specific...). */
    void (*bdrv_query_info)(BlockDriverState *bs, BlockNodeInfo *info);

    /*
     * I/O buffers (registered pools). buf_alloc may return NULL (the layer
     * then uses aligned heap memory); buf_free gets every buffer that
     * bdrv_blockalign handed out while buf_alloc was set and must free()
     * those that are not its own.
     */
    void *(*bdrv_buf_alloc)(BlockDriverState *bs, size_t size, size_t align);
    void (*bdrv_buf_free)(BlockDriverState *bs, void *buf, size_t size);
} BlockDriver;

struct BlockDriverState {
    const BlockDriver *drv;
    void *opaque;                /* driver state */
    char *node_name;
    BlockDriverState *file;      /* the child of a format/filter node, or NULL */
    BlockDriverState *next_node; /* global node list */
    int refcnt;
    AioContext *ctx;

    bool read_only;
    bool cache_direct;
    bool cache_no_flush;
    bool discard_unmap;          /* discard=unmap (else discards are ignored) */
    bool writethrough;           /* cache.writeback=off: every write is FUA */
    int detect_zeroes;           /* 0 off, 1 on, 2 unmap */
    char *filename;              /* protocol drivers: the file they opened */
    int64_t total_bytes;         /* cached length; refreshed by getlength/truncate */
    BlockLimits bl;
    int64_t max_rw_bytes;        /* bl.max_transfer rounded to the alignments (io.c) */
    int64_t max_direct_bytes;    /* largest read that may go to the driver as it is (io.c) */
    bool passthrough;            /* requests go straight to bs->file (see is_passthrough) */
    JsonObject *options;         /* the checked options it was opened with */
    JsonObject *explicit_opts;   /* during open only: the options as the user gave them
                                    (before defaults were filled), or NULL */
    const char *opt_prefix;      /* during open only: the dotted path of its options
                                    ("" at the top, "file." for a child), for messages */

    /* request path (io.c); touched only in ctx's thread, in_flight read from any */
    unsigned in_flight;
    BdrvRequest *free_reqs;
    BdrvRequest *track_head, *track_tail;
    unsigned serialising;        /* tracked serialising requests */
    unsigned waiting;            /* requests waiting for an overlap to clear */
    BdrvRequest *done_head, *done_tail;   /* deferred completions */
    AioBH *done_bh;
    void *zero_buf;              /* write-zeroes fallback source */
    size_t zero_buf_size;
    int plugged;

    BlockAcctStats stats;
};

/* ---- block.c ------------------------------------------------------------------ */

const BlockDriver *bdrv_find_driver(const char *name);
/* Opens from already-checked options (a child's subtree). */
BlockDriverState *bdrv_open_checked(JsonObject *opts, Error **errp);

/* Option getters that accept typed JSON and keyval strings ("on", "4096"). */
bool bdrv_opt_bool(JsonObject *o, const char *dotted_key, bool def);
int64_t bdrv_opt_int(JsonObject *o, const char *dotted_key, int64_t def);
const char *bdrv_opt_str(JsonObject *o, const char *dotted_key, const char *def);
bool bdrv_opt_has(JsonObject *o, const char *dotted_key);

/* ---- io.c --------------------------------------------------------------------- */

/* A driver's completion of req. */
void bdrv_req_done(BdrvRequest *req, int ret);
/* Completes req from a bottom half of the node's context (drivers: null-co). */
void bdrv_req_done_later(BdrvRequest *req, int ret);
/* Request pool and deferred-completion BH setup/teardown (block.c). */
void bdrv_io_init(BlockDriverState *bs);
void bdrv_io_cleanup(BlockDriverState *bs);
void bdrv_io_attach(BlockDriverState *bs, AioContext *ctx);
void bdrv_io_detach(BlockDriverState *bs);
/*
 * Frees the node's cached buffers (the write-zeroes source). They may come
 * from the engine's pool, so this runs before the driver lets go of its
 * engine (close, AioContext detach).
 */
void bdrv_io_drop_buffers(BlockDriverState *bs);
/* Recomputes what io.c derives from bs->bl (after refresh_limits). */
void bdrv_io_refresh_limits(BlockDriverState *bs);
/* True when a request of bs or a child is in flight (any thread). */
bool bdrv_requests_pending(BlockDriverState *bs);

/* ---- accounting.c --------------------------------------------------------------- */

/*
 * The accounting clock: CLOCK_MONOTONIC in ns, as aio_clock_get_ns(AIO_CLOCK_MONOTONIC).
 * Inside aio_poll()'s dispatch, the time dispatch began (aio_dispatch_time_ns()):
 * requests that complete, and those their callbacks submit, in one loop
 * iteration share one clock read (two reads per request were 4-5% of the
 * CPU of cached reads at depth 32).
 */
static inline int64_t block_acct_now_ns(void)
{
    struct timespec ts;
    int64_t now = aio_dispatch_time_ns();

    if (now) {
        return now;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Counts ns in h's bin (a binary search; out of line). */
void block_acct_histogram_add(BlockLatencyHistogram *h, uint64_t ns);

/*
 * Accounts a request that started at start_ns (block_acct_now_ns()) and
 * finished now with ret. Inline: it runs once per request.
 */
static inline void block_acct_done(BlockAcctStats *stats, BlockAcctType type, uint64_t bytes,
                                   int64_t start_ns, int ret)
{
    if (ret < 0) {
        stats->failed_ops[type]++;
        return;
    }
    uint64_t ns = (uint64_t)(block_acct_now_ns() - start_ns);
    stats->nr_ops[type]++;
    stats->nr_bytes[type] += bytes;
    stats->total_time_ns[type] += ns;
    if (ns > stats->max_time_ns[type]) {
        stats->max_time_ns[type] = ns;
    }
    if (G_UNLIKELY(stats->latency_histogram[type].nbins)) {
        block_acct_histogram_add(&stats->latency_histogram[type], ns);
    }
}
void block_acct_invalid(BlockAcctStats *stats, BlockAcctType type);
void block_acct_cleanup(BlockAcctStats *stats);

/* ---- drivers -------------------------------------------------------------------- */

extern const BlockDriver bdrv_null_co;
extern const BlockDriver bdrv_null_aio;
extern const BlockDriver bdrv_raw;
extern const BlockDriver bdrv_file;
extern const BlockDriver bdrv_host_device;
extern const BlockDriver bdrv_blkdebug;

/* file-posix's creation helper (bdrv_create_file). */
int raw_create_file(const char *filename, int64_t size, const char *prealloc,
                    Error **errp);

#endif
