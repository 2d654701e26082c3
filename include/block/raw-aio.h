/*
 * The AIO engine seam of the file/host_device drivers (block/file-posix.c).
 *
 * An engine (threads, native, io_uring) moves requests between a file
 * descriptor and memory asynchronously. file-posix treats all engines the
 * same through RawAioOps.
 *
 * Instances: an engine instance (RawAioEngine) belongs to one AioContext and
 * is used only from that context's thread, so the submit/complete path takes
 * no lock. Several files share an instance: block/raw-aio.c keeps one
 * instance per (AioContext, engine, configuration), refcounted, so the common
 * case is one ring (or AIO context, or thread pool) per thread. Moving a node
 * to another AioContext drains it, removes its file from the old instance and
 * adds it to an instance of the new context.
 *
 * Requests: the caller owns the RawAioReq memory (the block layer embeds it
 * in its own per-request struct), so engines need not allocate per request.
 * The caller fills the public fields; the engine owns the private ones from
 * submit until the completion callback returns.
 *
 * Semantics every engine finishes itself (callers see only 0 or -errno):
 *   - reads: short reads are resubmitted for the remainder; a read that hits
 *     EOF zero-fills the rest of the buffer and succeeds;
 *   - writes: short writes are resubmitted; no progress at all is -ENOSPC;
 *   - -EAGAIN and -EINTR are retried, even with nothing else in flight;
 *   - anything else reaches the callback as -errno.
 */
#ifndef BLOCK_RAW_AIO_H
#define BLOCK_RAW_AIO_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "block/aio.h"
#include "util/error.h"

typedef enum {
    RAW_AIO_READ,
    RAW_AIO_WRITE,
    RAW_AIO_FLUSH,          /* fdatasync */
    RAW_AIO_DISCARD,        /* punch hole (file) / BLKDISCARD (block device) */
    RAW_AIO_WRITE_ZEROES,   /* zero range (file) / BLKZEROOUT (block device) */
    RAW_AIO_TYPE_MAX,
} RawAioType;

/* Request flags. */
#define RAW_AIO_FUA         (1u << 0)  /* write: durable on completion (write + fdatasync) */
#define RAW_AIO_MAY_UNMAP   (1u << 1)  /* write zeroes: may punch a hole */
#define RAW_AIO_BLKDEV      (1u << 2)  /* fd is a block device: discard/zeroes use ioctls */
#define RAW_AIO_NO_FALLBACK (1u << 3)  /* write zeroes: fail with -ENOTSUP rather than write zeroes */
#define RAW_AIO_CACHED      (1u << 4)  /* read: buffered fd that takes RWF_NOWAIT (page-cache hits
                                          may be read inline; see io_uring.c) */

typedef void RawAioCompletionFunc(void *opaque, int ret);

typedef struct RawAioReq RawAioReq;
struct RawAioReq {
    /*
     * The first 64 bytes are all the io_uring engine's completion of a
     * plain read or write reads (on page-cache hits the kernel's copies
     * evict the request from L1 between submission and completion: each
     * line touched is a miss). Other engines also use the second line.
     */
    /* Public: filled by the caller before submit. */
    RawAioType type;
    unsigned flags;
    int fd;                       /* the file descriptor */
    int file_slot;                /* from add_file(); -1 when the file is not registered */
    uint64_t offset;
    uint64_t bytes;               /* total length (read/write: sum of iov lengths) */
    RawAioCompletionFunc *cb;     /* called exactly once, in the engine's AioContext */
    void *opaque;

    /* Private: owned by the engine from submit until cb returns. */
    uint64_t done;                /* bytes already transferred (short I/O resubmission) */
    uint64_t engine_u64[2];

    /* Public */
    struct iovec *iov;            /* read/write only; the engine may not modify the array */
    int niov;

    /* Private */
    RawAioReq *next;              /* overflow / completion queues */
    void *engine_priv[4];
};

/* Engine configuration; filled from the file driver's options. */
typedef enum {
    RAW_AIO_ONOFFAUTO_AUTO = 0,
    RAW_AIO_ONOFFAUTO_ON,
    RAW_AIO_ONOFFAUTO_OFF,
} RawAioOnOffAuto;

typedef struct RawAioConfig {
    unsigned queue_depth;             /* 0: engine default */
    RawAioOnOffAuto fixed_files;      /* auto: on for a ring of our own */
    RawAioOnOffAuto fixed_buffers;    /* auto: use if RLIMIT_MEMLOCK allows */
    bool sqpoll;
    unsigned sq_thread_idle_ms;       /* 0: engine default */
    int sq_thread_cpu;                /* -1: not pinned */
    bool iopoll;
    RawAioOnOffAuto restrict_ops;     /* auto: restrict where the kernel supports it */
    bool async_punt;                  /* IOSQE_ASYNC: file cannot take non-blocking I/O */
    /*
     * The file takes non-blocking I/O (the RWF_NOWAIT probe): io_uring's
     * completions come from the device, not from io-wq. Picks the ring's
     * task-run mode (docs/devel/io_uring.md).
     */
    bool nowait;
    RawAioOnOffAuto share_ring;       /* io_uring: SQEs on the event loop's ring */
    /*
     * io_uring, set by aio=auto only: reads and writes submitted while fewer
     * than this many requests are outstanding run synchronously in submit()
     * (a RAM-backed block device, where that is a memory copy); 0: never.
     */
    unsigned sync_below;
    /*
     * With sync_below, aio=auto only: time the split against running every
     * read and write synchronously, on the live stream, and keep the
     * faster (include/block/rate-race.h).
     */
    bool sync_race;
} RawAioConfig;

typedef struct RawAioEngine RawAioEngine;

typedef struct RawAioOps {
    const char *name;                 /* "threads", "native", "io_uring", "inline" */

    /*
     * Whether the engine works on this system. Probed once and cached. On
     * false, errp says why (not compiled in, io_uring_disabled=2, seccomp...).
     * Any thread.
     */
    bool (*available)(Error **errp);

    /*
     * Creates an instance bound to ctx (called in ctx's thread). Registers
     * its completion notifier with ctx. Returns NULL with errp on failure.
     */
    RawAioEngine *(*create)(AioContext *ctx, const RawAioConfig *cfg, Error **errp);

    /*
     * Destroys an instance after waiting for every in-flight request to
     * complete (their callbacks run). Called in ctx's thread.
     */
    void (*destroy)(RawAioEngine *e);

    /*
     * Adds a file that requests will name. Returns a slot >= 0 to put in
     * RawAioReq.file_slot (a fixed-file index for io_uring), -1 if the
     * engine does not register files, or -errno with errp on failure.
     * open_flags are the fd's O_* flags (O_DIRECT matters for native/iopoll).
     */
    int (*add_file)(RawAioEngine *e, int fd, int open_flags, Error **errp);
    /* Points an existing slot at a new fd (reopen). 0 or -errno. Optional. */
    int (*update_file)(RawAioEngine *e, int slot, int fd);
    /* Forgets a slot; no request may name it any more. Optional. */
    void (*remove_file)(RawAioEngine *e, int slot);

    /*
     * Starts a request. Returns 0, and req->cb is called exactly once later
     * (never from within submit); or -errno and cb is never called.
     * Requests beyond the engine's capacity are queued, never dropped, and
     * never reordered ahead of a FLUSH submitted after them.
     */
    int (*submit)(RawAioEngine *e, RawAioReq *req);

    /* Plugged: requests accumulate and go out in one batch at unplug. Nests. */
    void (*plug)(RawAioEngine *e);
    void (*unplug)(RawAioEngine *e);

    /*
     * Registered-buffer pool (io_uring fixed-buffers). Optional; when NULL
     * the block layer allocates aligned memory itself. buf_alloc returns
     * memory aligned to `align` or NULL.
     */
    void *(*buf_alloc)(RawAioEngine *e, size_t size, size_t align);
    void (*buf_free)(RawAioEngine *e, void *buf, size_t size);
} RawAioOps;

/* Every RawAioEngine starts with this header; engines embed it first. */
struct RawAioEngine {
    const RawAioOps *ops;
    AioContext *ctx;
    RawAioConfig cfg;
    unsigned refcnt;              /* managed by raw_aio_engine_get/put */
    RawAioEngine *next_in_ctx;    /* raw-aio.c's per-context list */
};

extern const RawAioOps raw_aio_threads_ops;
extern const RawAioOps raw_aio_native_ops;    /* stubs report "not compiled in" */
extern const RawAioOps raw_aio_io_uring_ops;  /* stubs report "not compiled in" */
extern const RawAioOps raw_aio_inline_ops;    /* synchronous, in the loop's thread */

/* Counters of an aio=inline instance, for tests and tuning (not reset). */
typedef struct InlineStats {
    uint64_t sync_requests;       /* run synchronously in our thread */
    uint64_t batched_requests;    /* run in a plugged burst's Linux AIO batch */
    uint64_t batches;             /* bursts run as batches (one per unplug with 2+ held) */
} InlineStats;

void raw_aio_inline_get_stats(RawAioEngine *e, InlineStats *st);

/* Looks an engine up by name ("threads", "native", "io_uring", "inline"); NULL if unknown. */
const RawAioOps *raw_aio_ops_by_name(const char *name);

/*
 * Returns the instance of `ops` for ctx whose configuration equals cfg,
 * creating it if needed (one per context and configuration), with a
 * reference taken. Call in ctx's thread.
 */
RawAioEngine *raw_aio_engine_get(const RawAioOps *ops, AioContext *ctx,
                                 const RawAioConfig *cfg, Error **errp);
/* Drops a reference; the last one destroys the instance (draining it). */
void raw_aio_engine_put(RawAioEngine *e);

/*
 * Performs the whole of req synchronously in the calling thread, with the
 * semantics described at the top of this file: short reads and writes are
 * continued, a read reaching EOF zero-fills the rest and succeeds, a write
 * that makes no progress is -ENOSPC, EINTR/EAGAIN are retried. FLUSH is
 * fdatasync; DISCARD punches a hole (BLKDISCARD with RAW_AIO_BLKDEV);
 * WRITE_ZEROES uses fallocate(ZERO_RANGE), or with RAW_AIO_MAY_UNMAP a
 * punched hole (BLKZEROOUT for block devices); both return -ENOTSUP when
 * the file cannot do it without writing data (the block layer then writes
 * zeroes unless RAW_AIO_NO_FALLBACK). A FUA write uses pwritev2(RWF_DSYNC)
 * or pwritev + fdatasync. Does not touch req->cb. Returns 0 or -errno.
 * Engines run it in worker threads; it blocks.
 */
int raw_aio_do_sync(RawAioReq *req);

/* Helpers for engines that finish short transfers themselves. */
/* Zeroes iov's bytes from `from` to its end. */
void raw_aio_iov_memset_from(const struct iovec *iov, int niov, uint64_t from);
/*
 * Describes iov's bytes from `skip` to the end in dst (at most dst_max
 * entries; the last may be cut short). Returns the number of entries used.
 */
int raw_aio_iov_slice(struct iovec *dst, int dst_max, const struct iovec *iov,
                      int niov, uint64_t skip);
/* Number of iov entries that hold bytes from `skip` on. */
int raw_aio_iov_count_from(const struct iovec *iov, int niov, uint64_t skip);
/* Whether offset is at or past the end of fd (regular file or block device). */
bool raw_aio_fd_offset_at_eof(int fd, uint64_t offset);

static inline int raw_aio_submit(RawAioEngine *e, RawAioReq *req)
{
    return e->ops->submit(e, req);
}

#endif
