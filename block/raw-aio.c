/*
 * Engine registry and the synchronous request executor.
 *
 * Instances: one RawAioEngine per (AioContext, engine, configuration),
 * refcounted. The per-context lists hang off a small global table keyed by
 * the context; the table lock is taken only by get/put, never per request.
 * An engine instance holds a reference on its context so that a context
 * address cannot be reused while an instance still names it.
 *
 * raw_aio_do_sync() is the blocking implementation of every request type
 * with the semantics of raw-aio.h. The threads engine runs it in workers;
 * native and io_uring use it for what their kernel interfaces cannot do.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <glib.h>

#include "block/raw-aio.h"

/* ---- registry ---------------------------------------------------------------- */

static const RawAioOps *const engine_table[] = {
    &raw_aio_threads_ops,
    &raw_aio_native_ops,
    &raw_aio_io_uring_ops,
    &raw_aio_inline_ops,
};

const RawAioOps *raw_aio_ops_by_name(const char *name)
{
    if (!name) {
        return NULL;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(engine_table); i++) {
        if (strcmp(engine_table[i]->name, name) == 0) {
            return engine_table[i];
        }
    }
    return NULL;
}

static GMutex instances_lock;
static GHashTable *instances;     /* AioContext * -> first RawAioEngine of its list */

static bool config_equal(const RawAioConfig *a, const RawAioConfig *b)
{
    /* Field by field: the struct has padding that memcmp would compare. */
    return a->queue_depth == b->queue_depth &&
           a->fixed_files == b->fixed_files &&
           a->fixed_buffers == b->fixed_buffers &&
           a->sqpoll == b->sqpoll &&
           a->sq_thread_idle_ms == b->sq_thread_idle_ms &&
           a->sq_thread_cpu == b->sq_thread_cpu &&
           a->iopoll == b->iopoll &&
           a->restrict_ops == b->restrict_ops &&
           a->async_punt == b->async_punt &&
           a->nowait == b->nowait &&
           a->share_ring == b->share_ring &&
           a->sync_below == b->sync_below &&
           a->sync_race == b->sync_race;
}

RawAioEngine *raw_aio_engine_get(const RawAioOps *ops, AioContext *ctx,
                                 const RawAioConfig *cfg, Error **errp)
{
    static const RawAioConfig default_cfg = { .sq_thread_cpu = -1 };
    RawAioEngine *e;

    if (!cfg) {
        cfg = &default_cfg;
    }

    g_mutex_lock(&instances_lock);
    if (!instances) {
        instances = g_hash_table_new(g_direct_hash, g_direct_equal);
    }
    for (e = g_hash_table_lookup(instances, ctx); e; e = e->next_in_ctx) {
        if (e->ops == ops && config_equal(&e->cfg, cfg)) {
            e->refcnt++;
            g_mutex_unlock(&instances_lock);
            return e;
        }
    }
    g_mutex_unlock(&instances_lock);

    /*
     * Create outside the lock (it may block, e.g. io_setup). get/put run in
     * ctx's thread, so no one else can add an instance for ctx meanwhile.
     */
    if (!ops->available(errp)) {
        return NULL;
    }
    e = ops->create(ctx, cfg, errp);
    if (!e) {
        return NULL;
    }
    e->ops = ops;
    e->ctx = ctx;
    e->cfg = *cfg;
    e->refcnt = 1;
    aio_context_ref(ctx);

    g_mutex_lock(&instances_lock);
    e->next_in_ctx = g_hash_table_lookup(instances, ctx);
    g_hash_table_insert(instances, ctx, e);
    g_mutex_unlock(&instances_lock);
    return e;
}

void raw_aio_engine_put(RawAioEngine *e)
{
    AioContext *ctx = e->ctx;

    g_mutex_lock(&instances_lock);
    g_assert(e->refcnt > 0);
    if (--e->refcnt > 0) {
        g_mutex_unlock(&instances_lock);
        return;
    }
    RawAioEngine *head = g_hash_table_lookup(instances, ctx);
    if (head == e) {
        if (e->next_in_ctx) {
            g_hash_table_insert(instances, ctx, e->next_in_ctx);
        } else {
            g_hash_table_remove(instances, ctx);
        }
    } else {
        RawAioEngine *p = head;
        while (p->next_in_ctx != e) {
            p = p->next_in_ctx;
        }
        p->next_in_ctx = e->next_in_ctx;
    }
    e->next_in_ctx = NULL;
    g_mutex_unlock(&instances_lock);

    e->ops->destroy(e);
    aio_context_unref(ctx);
}

/* ---- iovec helpers -------------------------------------------------------------- */

void raw_aio_iov_memset_from(const struct iovec *iov, int niov, uint64_t from)
{
    for (int i = 0; i < niov; i++) {
        if (from >= iov[i].iov_len) {
            from -= iov[i].iov_len;
            continue;
        }
        memset((char *)iov[i].iov_base + from, 0, iov[i].iov_len - from);
        from = 0;
    }
}

int raw_aio_iov_count_from(const struct iovec *iov, int niov, uint64_t skip)
{
    int i = 0;

    while (i < niov && skip >= iov[i].iov_len) {
        skip -= iov[i].iov_len;
        i++;
    }
    return niov - i;
}

int raw_aio_iov_slice(struct iovec *dst, int dst_max, const struct iovec *iov,
                      int niov, uint64_t skip)
{
    int i = 0, n = 0;

    while (i < niov && skip >= iov[i].iov_len) {
        skip -= iov[i].iov_len;
        i++;
    }
    for (; i < niov && n < dst_max; i++, n++) {
        dst[n].iov_base = (char *)iov[i].iov_base + skip;
        dst[n].iov_len = iov[i].iov_len - skip;
        skip = 0;
    }
    return n;
}

/* ---- synchronous executor ---------------------------------------------------------- */

bool raw_aio_fd_offset_at_eof(int fd, uint64_t off)
{
    struct stat st;
    uint64_t size;

    if (fstat(fd, &st) < 0) {
        return false;
    }
    if (S_ISBLK(st.st_mode)) {
        if (ioctl(fd, BLKGETSIZE64, &size) < 0) {
            return false;
        }
    } else {
        size = st.st_size;
    }
    return off >= size;
}

static int fsync_data(int fd)
{
    while (fdatasync(fd) < 0) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

/* 0 until pwritev2(RWF_DSYNC) proved unsupported, then 1 (write + fdatasync from then on). */
static int no_rwf_dsync;

static int do_readv_writev(RawAioReq *req)
{
    bool is_write = req->type == RAW_AIO_WRITE;
    bool fua = is_write && (req->flags & RAW_AIO_FUA);
    bool fua_by_flag = fua && !__atomic_load_n(&no_rwf_dsync, __ATOMIC_RELAXED);
    struct iovec slice[64];

    req->done = 0;
    while (req->done < req->bytes) {
        const struct iovec *iov = req->iov;
        int n = req->niov;
        ssize_t r;

        if (req->done > 0) {
            /* A continuation: describe the rest; the caller's array stays untouched. */
            n = raw_aio_iov_slice(slice, G_N_ELEMENTS(slice), req->iov, req->niov, req->done);
            iov = slice;
        }
        if (n > IOV_MAX) {
            n = IOV_MAX;    /* the rest follows as if it were a short transfer */
        }
        if (!is_write) {
            r = preadv(req->fd, iov, n, req->offset + req->done);
        } else if (fua_by_flag) {
            r = pwritev2(req->fd, iov, n, req->offset + req->done, RWF_DSYNC);
            if (r < 0 && (errno == EOPNOTSUPP || errno == ENOSYS ||
                          (errno == EINVAL && req->done == 0))) {
                /* Kernel or file without RWF_DSYNC: fall back to write + fdatasync. */
                if (errno != EINVAL) {
                    __atomic_store_n(&no_rwf_dsync, 1, __ATOMIC_RELAXED);
                }
                fua_by_flag = false;
                continue;
            }
        } else {
            r = pwritev(req->fd, iov, n, req->offset + req->done);
        }

        if (r < 0) {
            int err = errno;
            /* Interrupted or a non-blocking fd that was not ready: just try again. */
            if (err == EINTR || err == EAGAIN) {
                continue;
            }
            /*
             * O_DIRECT: a short read at an unaligned EOF leaves an unaligned
             * offset, which the kernel refuses with EINVAL; that is still EOF.
             */
            if (!is_write && err == EINVAL && req->done > 0 &&
                raw_aio_fd_offset_at_eof(req->fd, req->offset + req->done)) {
                raw_aio_iov_memset_from(req->iov, req->niov, req->done);
                req->done = req->bytes;
                break;
            }
            return -err;
        }
        if (r == 0) {
            if (is_write) {
                return -ENOSPC;     /* no progress at all: the device is full */
            }
            /* EOF: the rest of the buffer reads as zeroes. */
            raw_aio_iov_memset_from(req->iov, req->niov, req->done);
            req->done = req->bytes;
            break;
        }
        req->done += r;
    }

    if (fua && !fua_by_flag) {
        return fsync_data(req->fd);
    }
    return 0;
}

static int errno_to_notsup(int err)
{
    /* The file system cannot do it: the block layer decides what to do instead. */
    if (err == EOPNOTSUPP || err == ENOSYS || err == ENOTTY) {
        return -ENOTSUP;
    }
    return -err;
}

static int do_fallocate(int fd, int mode, uint64_t off, uint64_t len)
{
    while (fallocate(fd, mode, off, len) < 0) {
        if (errno != EINTR) {
            return errno_to_notsup(errno);
        }
    }
    return 0;
}

static int do_blkdev_ioctl(int fd, unsigned long cmd, uint64_t off, uint64_t len)
{
    uint64_t range[2] = { off, len };

    while (ioctl(fd, cmd, range) < 0) {
        if (errno != EINTR) {
            return errno_to_notsup(errno);
        }
    }
    return 0;
}

static int file_size(int fd, uint64_t *size)
{
    struct stat st;

    if (fstat(fd, &st) < 0) {
        return -errno;
    }
    *size = st.st_size;
    return 0;
}

static int do_write_zeroes_file(RawAioReq *req)
{
    uint64_t end = req->offset + req->bytes, size = 0;
    int r;

    r = file_size(req->fd, &size);
    if (r < 0) {
        return r;
    }
    /*
     * MAY_UNMAP: a punched hole reads back as zeroes, but KEEP_SIZE cannot
     * extend the file, so a range reaching past EOF takes ZERO_RANGE below.
     */
    if ((req->flags & RAW_AIO_MAY_UNMAP) && end <= size) {
        r = do_fallocate(req->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                         req->offset, req->bytes);
        if (r != -ENOTSUP) {
            return r;
        }
    }
    r = do_fallocate(req->fd, FALLOC_FL_ZERO_RANGE, req->offset, req->bytes);
    if (r != -ENOTSUP) {
        return r;
    }
    /*
     * No ZERO_RANGE (tmpfs, some network file systems): punch the part
     * inside the file, allocate it again unless unmapping is allowed, and
     * extend the file for the part past EOF.
     */
    if (req->offset < size) {
        uint64_t in_file = MIN(end, size) - req->offset;

        r = do_fallocate(req->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                         req->offset, in_file);
        if (r < 0) {
            return r;
        }
        if (!(req->flags & RAW_AIO_MAY_UNMAP)) {
            r = do_fallocate(req->fd, 0, req->offset, in_file);
            if (r < 0 && r != -ENOTSUP) {
                return r;
            }
        }
    }
    if (end > size) {
        while (ftruncate(req->fd, end) < 0) {
            if (errno != EINTR) {
                return -errno;
            }
        }
    }
    return 0;
}

int raw_aio_do_sync(RawAioReq *req)
{
    if ((req->type == RAW_AIO_DISCARD || req->type == RAW_AIO_WRITE_ZEROES) &&
        req->bytes == 0) {
        return 0;   /* fallocate and the ioctls refuse empty ranges */
    }
    switch (req->type) {
    case RAW_AIO_READ:
    case RAW_AIO_WRITE:
        return do_readv_writev(req);
    case RAW_AIO_FLUSH:
        return fsync_data(req->fd);
    case RAW_AIO_DISCARD:
        if (req->flags & RAW_AIO_BLKDEV) {
            return do_blkdev_ioctl(req->fd, BLKDISCARD, req->offset, req->bytes);
        }
        return do_fallocate(req->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                            req->offset, req->bytes);
    case RAW_AIO_WRITE_ZEROES:
        if (req->flags & RAW_AIO_BLKDEV) {
            return do_blkdev_ioctl(req->fd, BLKZEROOUT, req->offset, req->bytes);
        }
        return do_write_zeroes_file(req);
    default:
        return -EINVAL;
    }
}
