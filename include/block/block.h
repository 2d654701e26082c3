/*
 * The block layer as tools and exports see it.
 *
 * A node (BlockDriverState) is opened from an options tree (see
 * include/qapi/qapi.h): a format driver (raw) over a protocol driver (file,
 * host_device, null-co, null-aio, blkdebug). Nodes live in an AioContext;
 * every function here must be called in that context's thread unless it
 * says otherwise. I/O functions return negative errno; setup functions take
 * Error **errp.
 *
 * Asynchronous requests complete through a callback that is called exactly
 * once, in the node's AioContext, and never from within the submitting
 * call (even for requests rejected up front), so callers need not guard
 * against re-entrance.
 */
#ifndef BLOCK_BLOCK_H
#define BLOCK_BLOCK_H

#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/aio.h"
#include "util/error.h"
#include "util/iov.h"

typedef struct BlockDriverState BlockDriverState;

typedef void BlockCompletionFunc(void *opaque, int ret);

/* Request flags. */
typedef enum {
    BDRV_REQ_FUA         = 1 << 0,  /* write: durable when it completes */
    BDRV_REQ_MAY_UNMAP   = 1 << 1,  /* write zeroes: may deallocate */
    BDRV_REQ_NO_FALLBACK = 1 << 2,  /* write zeroes: fail with -ENOTSUP rather than write zero buffers */
} BdrvRequestFlags;

/* ---- Nodes ----------------------------------------------------------------- */

/*
 * Opens a node (and its children) from a BlockdevOptions tree. The tree is
 * checked against the schema here (typed JSON, not keyval strings: callers
 * holding keyval trees run qapi_check(..., true, ...) first). Does not take
 * ownership of options. The node gets one reference and joins the list of
 * named nodes if it has a node-name (an automatic "#blockN" name otherwise).
 */
BlockDriverState *bdrv_open(JsonObject *options, Error **errp);
/* Parses keyval or JSON text (qapi_parse_options), checks and opens. */
BlockDriverState *bdrv_open_string(const char *text, Error **errp);
void bdrv_ref(BlockDriverState *bs);
/* The last reference drains, flushes (unless cache.no-flush) and closes. */
void bdrv_unref(BlockDriverState *bs);

BlockDriverState *bdrv_find_node(const char *node_name);
/* Iterates over all nodes: bdrv_next_node(NULL) is the first; NULL at the end. */
BlockDriverState *bdrv_next_node(BlockDriverState *prev);

const char *bdrv_get_node_name(const BlockDriverState *bs);
const char *bdrv_get_driver_name(const BlockDriverState *bs);
/* The filename of the protocol node at the bottom (NULL for null-co). */
const char *bdrv_get_filename(const BlockDriverState *bs);
bool bdrv_is_read_only(const BlockDriverState *bs);
/* Length in bytes, or -errno. */
int64_t bdrv_getlength(BlockDriverState *bs);

/* Resizes; prealloc is "off", "falloc" or "full". 0 or -errno with errp. */
int bdrv_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                  const char *prealloc, Error **errp);

/*
 * Changes options of an open node: read-only, cache.direct, cache.no-flush
 * (and driver options that allow it). Drains first. 0 or -errno with errp;
 * on failure the node is unchanged.
 */
int bdrv_reopen(BlockDriverState *bs, JsonObject *changes, Error **errp);

/* Creates an image file (driver "file" or "raw" over file). */
int bdrv_create_file(const char *filename, int64_t size, const char *prealloc,
                     Error **errp);

/* ---- Information ------------------------------------------------------------ */

typedef struct BlockNodeInfo {
    char *node_name;
    char *driver;              /* "raw", "file", "null-co", ... */
    char *filename;            /* may be NULL */
    int64_t size;
    bool read_only;
    bool cache_direct;
    bool cache_no_flush;
    uint32_t request_alignment;
    uint32_t memory_alignment;
    uint64_t max_transfer;     /* 0: unlimited */
    char *aio;                 /* effective engine of the protocol node: threads|native|io_uring|NULL */
    char *aio_requested;       /* as given: threads|native|io_uring|auto */
    int nowait;                /* file takes non-blocking I/O: 1 yes, 0 no, -1 unknown/not a file */
    JsonObject *driver_specific; /* extra per-driver facts (may be NULL) */
} BlockNodeInfo;

/* Fills info for bs (the node itself, facts of the protocol child merged in). */
void bdrv_query_node_info(BlockDriverState *bs, BlockNodeInfo *info);
void bdrv_node_info_clear(BlockNodeInfo *info);

/* ---- Asynchronous I/O ------------------------------------------------------- */

void bdrv_aio_preadv(BlockDriverState *bs, int64_t offset, IOVector *qiov,
                     BdrvRequestFlags flags, BlockCompletionFunc *cb, void *opaque);
void bdrv_aio_pwritev(BlockDriverState *bs, int64_t offset, IOVector *qiov,
                      BdrvRequestFlags flags, BlockCompletionFunc *cb, void *opaque);
void bdrv_aio_flush(BlockDriverState *bs, BlockCompletionFunc *cb, void *opaque);
void bdrv_aio_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes,
                       BlockCompletionFunc *cb, void *opaque);
void bdrv_aio_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                            BdrvRequestFlags flags, BlockCompletionFunc *cb, void *opaque);

/* Plugged: requests accumulate and reach the engine as one batch at unplug. Nests. */
void bdrv_io_plug(BlockDriverState *bs);
void bdrv_io_unplug(BlockDriverState *bs);

/* ---- Synchronous helpers ------------------------------------------------------ */
/*
 * These poll the node's AioContext until the request completes, with the
 * context's external handlers disabled (a nested poll cannot start new
 * export/guest I/O). Return 0 or -errno.
 */
int bdrv_preadv(BlockDriverState *bs, int64_t offset, IOVector *qiov, BdrvRequestFlags flags);
int bdrv_pwritev(BlockDriverState *bs, int64_t offset, IOVector *qiov, BdrvRequestFlags flags);
int bdrv_pread(BlockDriverState *bs, int64_t offset, int64_t bytes, void *buf,
               BdrvRequestFlags flags);
int bdrv_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes, const void *buf,
                BdrvRequestFlags flags);
int bdrv_flush(BlockDriverState *bs);
int bdrv_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes);
int bdrv_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                       BdrvRequestFlags flags);

/*
 * Allocation status of [offset, offset+bytes): returns 0 and sets *pnum
 * (> 0, the length of the run with the same status from offset) and
 * *status (BDRV_BLOCK_* bits), or -errno.
 */
#define BDRV_BLOCK_DATA   0x1  /* data is stored (may still read as zeroes) */
#define BDRV_BLOCK_ZERO   0x2  /* reads as zeroes */
int bdrv_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes,
                      int64_t *pnum, int *status);

/* ---- Drain and threads ---------------------------------------------------------- */

/* Waits until no request of bs (or its children) is in flight. */
void bdrv_drain(BlockDriverState *bs);
void bdrv_drain_all(void);
AioContext *bdrv_get_aio_context(BlockDriverState *bs);
/*
 * Moves bs and its children to ctx (e.g. an IOThread's): drains, detaches
 * the engine from the old context, attaches to the new. Call from the main
 * thread. 0 or -errno with errp.
 */
int bdrv_set_aio_context(BlockDriverState *bs, AioContext *ctx, Error **errp);

/* ---- Buffers -------------------------------------------------------------------- */

/* Memory alignment the node needs for zero-copy I/O (O_DIRECT). */
size_t bdrv_min_mem_align(BlockDriverState *bs);
/* Request alignment in bytes (512, 4096, or 1 for buffered files). */
uint32_t bdrv_request_alignment(BlockDriverState *bs);
/*
 * Allocates an I/O buffer suited to bs: aligned, and from the engine's
 * registered pool when fixed buffers are active. Never NULL (aborts on OOM).
 */
void *bdrv_blockalign(BlockDriverState *bs, size_t size);
/* As bdrv_blockalign(), but NULL when the memory is not there (large tool buffers). */
void *bdrv_try_blockalign(BlockDriverState *bs, size_t size);
/*
 * Frees a bdrv_blockalign() buffer. Free buffers before the node is closed
 * or moved to another AioContext: a pooled buffer belongs to the engine
 * instance of the node's context.
 */
void bdrv_blockalign_free(BlockDriverState *bs, void *buf, size_t size);

/* ---- Accounting --------------------------------------------------------------- */

typedef enum {
    BLOCK_ACCT_READ,
    BLOCK_ACCT_WRITE,
    BLOCK_ACCT_FLUSH,
    BLOCK_ACCT_DISCARD,
    BLOCK_ACCT_ZEROES,
    BLOCK_ACCT_MAX,
} BlockAcctType;

typedef struct BlockLatencyHistogram {
    int nbins;                 /* nboundaries + 1; 0 when not set */
    uint64_t *boundaries;      /* ns, strictly increasing, nbins-1 of them */
    uint64_t *bins;            /* counts */
} BlockLatencyHistogram;

typedef struct BlockAcctStats {
    uint64_t nr_bytes[BLOCK_ACCT_MAX];
    uint64_t nr_ops[BLOCK_ACCT_MAX];
    uint64_t failed_ops[BLOCK_ACCT_MAX];
    uint64_t invalid_ops[BLOCK_ACCT_MAX];
    uint64_t total_time_ns[BLOCK_ACCT_MAX];
    uint64_t max_time_ns[BLOCK_ACCT_MAX];
    BlockLatencyHistogram latency_histogram[BLOCK_ACCT_MAX];
} BlockAcctStats;

const BlockAcctStats *bdrv_get_stats(BlockDriverState *bs);
/*
 * Sets histogram boundaries (ns, strictly increasing) for one type, or for
 * all types when type == BLOCK_ACCT_MAX; n == 0 removes the histogram.
 * Resets the bins. QMP block-latency-histogram-set semantics.
 */
int bdrv_latency_histogram_set(BlockDriverState *bs, BlockAcctType type,
                               const uint64_t *boundaries, int n, Error **errp);

#endif
