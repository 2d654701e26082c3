/*
 * The file and host_device protocol drivers: a regular file or a block
 * device, read and written through an AIO engine (include/block/raw-aio.h).
 *
 * Design:
 *   - Open: O_DIRECT per cache.direct; image locking with OFD locks; the
 *     alignment O_DIRECT needs (statx DIOALIGN, then the device's sector
 *     size, then probing reads, then 4096); one RWF_NOWAIT probe that tells
 *     whether the file can take non-blocking I/O (io_uring punts every
 *     request of a file that cannot to a kernel worker).
 *   - Engine: one instance per (AioContext, engine, configuration), shared
 *     by every file of that context (raw_aio_engine_get/put). The engine is
 *     chosen once at open by raw_choose_engine() and kept across reopen and
 *     AioContext moves.
 *   - Requests: the block layer hands a BdrvRequest whose embedded RawAioReq
 *     is filled and submitted as is, so the request path allocates nothing
 *     and adds no system call of its own.
 *   - Locking: QEMU's protocol of shared OFD locks on bytes 100+i ("holds
 *     permission i") and 200+i ("lets nobody else have i"), so QEMU and
 *     ringblk processes see each other. Every node holds consistent read
 *     (byte 100); a writer also holds write (101) and keeps other writers
 *     out (201), so a second writer (another process, or another open in
 *     this one) is refused and readers are not. OFD locks belong to the open
 *     file description: they are dropped explicitly, since a file registered
 *     with io_uring keeps the description alive after close().
 * Everything runs in the node's AioContext thread, except open/close/reopen
 * which run in the main thread while the node is drained.
 */
#include "block/block_int.h"
#include "block/io_uring.h"
#include "config-host.h"
#include "qapi/qapi.h"
#include "qapi/schema.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef STATX_DIOALIGN
#define STATX_DIOALIGN 0x00002000U
#endif
#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

typedef struct BDRVRawState {
    int fd;
    int open_flags;
    bool blkdev;
    bool host_device;
    uint32_t blk_lbs;            /* block devices: logical block size (ioctls need it) */
    char *filename;

    /* locking */
    bool use_lock;
    bool locking_on;             /* locking=on: lock failures are errors */
    bool force_share;

    /* alignment (for O_DIRECT) */
    uint32_t req_align;
    uint32_t mem_align;
    uint64_t max_transfer;
    const char *align_source;    /* "statx", "ioctl", "probe", "default", "buffered" */

    int nowait;                  /* 1, 0, -1 unknown */
    bool ram_backed;             /* tmpfs/ramfs file, zram/brd device: I/O never waits */

    /* RawAioReq flags every request carries (raw_update_aio_flags) */
    unsigned aio_flags;
    unsigned read_aio_flags;

    /* engine */
    const RawAioOps *ops;
    const char *aio_requested;
    RawAioConfig cfg;
    RawAioEngine *engine;
    int slot;
    bool punt_warned;
} BDRVRawState;

/* Reopen's prepared state. */
typedef struct RawReopenState {
    int fd;
    int open_flags;
    int slot;
    bool force_share;
} RawReopenState;

/* ---- locking -------------------------------------------------------------------- */

/*
 * QEMU's image locking protocol, which we speak so that QEMU and ringblk
 * processes see each other. Permission bit i (RAW_PERM_*) maps to two bytes
 * of the file: a process that holds permission i keeps a shared OFD lock on
 * byte RAW_LOCK_PERM_BASE + i; one that does not let others have it keeps a
 * shared OFD lock on byte RAW_LOCK_UNSHARE_BASE + i. All locks are shared
 * (F_RDLCK), so they never block each other: a conflict is found by asking
 * F_OFD_GETLK whether an F_WRLCK would be refused on the opposite byte,
 * which reports locks of every other open file description (in this process
 * too) and ignores those of the one asked through.
 */
enum {
    RAW_PERM_CONSISTENT_READ = 0,
    RAW_PERM_WRITE = 1,
    RAW_PERM_WRITE_UNCHANGED = 2,
    RAW_PERM_RESIZE = 3,
    RAW_PERM_GRAPH_MOD = 4,
    RAW_PERM_COUNT,
};
#define RAW_PERM(bit) (1u << (bit))
#define RAW_LOCK_PERM_BASE    100
#define RAW_LOCK_UNSHARE_BASE 200

static const char *const raw_perm_names[RAW_PERM_COUNT] = {
    [RAW_PERM_CONSISTENT_READ] = "consistent read",
    [RAW_PERM_WRITE] = "write",
    [RAW_PERM_WRITE_UNCHANGED] = "write unchanged",
    [RAW_PERM_RESIZE] = "resize",
    [RAW_PERM_GRAPH_MOD] = "graph modification",
};

/*
 * What each kind of open holds, as QEMU's own tools do (seen in /proc/locks):
 * every node reads consistently and lets others read, write and resize, except
 * that a writer keeps other writers out. force-share (read-only only) thus
 * takes the reader's lock, which unshares nothing. Image creation truncates,
 * so it also refuses other writers and resizers while it runs.
 */
#define RAW_READER_PERM       RAW_PERM(RAW_PERM_CONSISTENT_READ)
#define RAW_READER_UNSHARE    0u
#define RAW_WRITER_PERM       (RAW_PERM(RAW_PERM_CONSISTENT_READ) | RAW_PERM(RAW_PERM_WRITE))
#define RAW_WRITER_UNSHARE    RAW_PERM(RAW_PERM_WRITE)
#define RAW_CREATE_PERM       (RAW_PERM(RAW_PERM_WRITE) | RAW_PERM(RAW_PERM_RESIZE))
#define RAW_CREATE_UNSHARE    (RAW_PERM(RAW_PERM_WRITE) | RAW_PERM(RAW_PERM_RESIZE))

static int raw_lock_byte(int fd, short type, off_t byte)
{
    struct flock fl = {
        .l_type = type,
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = 1,
    };
    return fcntl(fd, F_OFD_SETLK, &fl) == -1 ? -errno : 0;
}

/* 1 when another open file description holds a lock on byte, 0 if none, or -errno. */
static int raw_byte_taken(int fd, off_t byte)
{
    struct flock fl = {
        .l_type = F_WRLCK,
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = 1,
    };
    if (fcntl(fd, F_OFD_GETLK, &fl) == -1) {
        return -errno;
    }
    return fl.l_type != F_UNLCK;
}

/* Drops every protocol lock fd holds (unlocking a byte not held is a no-op). */
static void raw_unlock_all(int fd)
{
    for (int i = 0; i < RAW_PERM_COUNT; i++) {
        raw_lock_byte(fd, F_UNLCK, RAW_LOCK_PERM_BASE + i);
        raw_lock_byte(fd, F_UNLCK, RAW_LOCK_UNSHARE_BASE + i);
    }
}

/*
 * One step of raw_lock_perms(): take (lock) or look at (!lock) byte.
 * 0; -EAGAIN when another open file description is in the way; another
 * -errno when the file takes no OFD locks.
 */
static int raw_lock_step(int fd, bool lock, off_t byte)
{
    if (lock) {
        /* Shared locks only fail against an exclusive one: not the protocol's, but in the way. */
        int ret = raw_lock_byte(fd, F_RDLCK, byte);
        return ret == -EACCES ? -EAGAIN : ret;
    }
    int taken = raw_byte_taken(fd, byte);
    return taken > 0 ? -EAGAIN : taken;
}

/*
 * Takes the locks for (perm, unshare) on fd, then checks that nobody holds
 * what they exclude. Locking before looking closes the window in which two
 * processes could both look, see nothing and both go on: now at least one
 * of them sees the other. 0; -EAGAIN on a conflict, with errp naming the
 * permission; another -errno when the file takes no OFD locks, with
 * *bad_byte set and errp untouched. On failure fd holds none of the locks.
 */
static int raw_lock_perms(int fd, unsigned perm, unsigned unshare, const char *filename,
                          off_t *bad_byte, Error **errp)
{
    const unsigned want[2] = { perm, unshare };
    const off_t base[2] = { RAW_LOCK_PERM_BASE, RAW_LOCK_UNSHARE_BASE };
    int ret = 0, i = 0;
    off_t byte = 0;

    for (int pass = 0; pass < 2; pass++) {
        bool lock = pass == 0;
        for (i = 0; i < RAW_PERM_COUNT; i++) {
            for (int k = 0; k < 2; k++) {
                if (!(want[k] & RAW_PERM(i))) {
                    continue;
                }
                /* Lock our own byte; look at the opposite one. */
                byte = (lock ? base[k] : base[1 - k]) + i;
                ret = raw_lock_step(fd, lock, byte);
                if (ret < 0) {
                    goto fail;
                }
            }
        }
    }
    return 0;

fail:
    if (ret == -EAGAIN) {
        error_setg(errp, "Failed to get \"%s\" lock", raw_perm_names[i]);
        error_append_hint(errp, "Is another process using the image [%s]?\n", filename);
    } else {
        *bad_byte = byte;
    }
    raw_unlock_all(fd);
    return ret;
}

/*
 * Takes on fd the locks a node with this access holds (see RAW_READER_PERM).
 * 0, or -errno with errp. With locking=auto, a file that takes no OFD locks
 * is used without.
 */
static int raw_apply_locks(BDRVRawState *s, int fd, bool writable, Error **errp)
{
    if (!s->use_lock) {
        return 0;
    }
    off_t bad_byte = 0;
    int ret = raw_lock_perms(fd, writable ? RAW_WRITER_PERM : RAW_READER_PERM,
                             writable ? RAW_WRITER_UNSHARE : RAW_READER_UNSHARE,
                             s->filename, &bad_byte, errp);
    if (ret == 0 || ret == -EAGAIN) {
        return ret;
    }
    if (s->locking_on) {
        error_setg_errno(errp, -ret, "Failed to lock byte %d", (int)bad_byte);
        return ret;
    }
    /* locking=auto: the filesystem has no OFD locks; go on without. */
    s->use_lock = false;
    return 0;
}

static void raw_release_locks(BDRVRawState *s, int fd)
{
    if (s->use_lock) {
        raw_unlock_all(fd);
    }
}

/* Puts back the locks fd held before a refused reopen; no looking, shared locks always fit. */
static void raw_restore_locks(BDRVRawState *s, int fd, bool writable)
{
    unsigned perm = writable ? RAW_WRITER_PERM : RAW_READER_PERM;
    unsigned unshare = writable ? RAW_WRITER_UNSHARE : RAW_READER_UNSHARE;
    if (!s->use_lock) {
        return;
    }
    for (int i = 0; i < RAW_PERM_COUNT; i++) {
        if (perm & RAW_PERM(i)) {
            raw_lock_byte(fd, F_RDLCK, RAW_LOCK_PERM_BASE + i);
        }
        if (unshare & RAW_PERM(i)) {
            raw_lock_byte(fd, F_RDLCK, RAW_LOCK_UNSHARE_BASE + i);
        }
    }
}

/* ---- alignment ---------------------------------------------------------------------- */

static bool raw_try_read(int fd, void *buf, size_t len, off_t off)
{
    ssize_t r;
    do {
        r = pread(fd, buf, len, off);
    } while (r < 0 && errno == EINTR);
    return r >= 0;
}

/* Fills s->req_align/mem_align/max_transfer for fd opened with flags. */
static void raw_probe_alignment(BDRVRawState *s, int fd, int open_flags)
{
    s->max_transfer = 0;
    if (s->blkdev) {
        int max_sectors = 0;
        if (ioctl(fd, BLKSECTGET, &max_sectors) == 0 && max_sectors > 0) {
            s->max_transfer = (uint64_t)max_sectors * 512;
        }
    }
    if (!(open_flags & O_DIRECT)) {
        s->req_align = 1;
        s->mem_align = 1;
        s->align_source = "buffered";
        return;
    }

#ifdef HAVE_STATX
    struct statx stx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align) {
        s->req_align = stx.stx_dio_offset_align;
        s->mem_align = MAX(stx.stx_dio_mem_align, 1);
        if (s->blkdev && s->mem_align < s->req_align) {
            /*
             * A device may accept buffers aligned below its block size and
             * still transfer whole blocks: zram on Linux 6.18 takes a
             * 512-aligned O_DIRECT buffer (dma alignment 511, 4 KiB blocks)
             * and writes the whole pages around it, corrupting memory
             * before and after the buffer. Bounce such buffers instead.
             */
            s->mem_align = s->req_align;
        }
        s->align_source = "statx";
        return;
    }
#endif

    if (s->blkdev) {
        int lsz = 0;
        unsigned int psz = 0;
        if (ioctl(fd, BLKSSZGET, &lsz) == 0 && lsz > 0) {
            s->req_align = lsz;
            s->mem_align = lsz;
            s->align_source = "ioctl";
            return;
        }
        if (ioctl(fd, BLKPBSZGET, &psz) == 0 && psz > 0) {
            s->req_align = psz;
            s->mem_align = psz;
            s->align_source = "ioctl";
            return;
        }
    }

    /* Probe: the smallest length (and buffer offset) an O_DIRECT read accepts. */
    const size_t max_align = 4096;
    char *buf = NULL;
    if (posix_memalign((void **)&buf, max_align, 2 * max_align) == 0) {
        uint32_t req = 0, mem = 0;
        for (size_t a = 512; a <= max_align; a *= 2) {
            if (raw_try_read(fd, buf, a, 0)) {
                req = a;
                break;
            }
        }
        for (size_t a = 512; req && a <= max_align; a *= 2) {
            if (raw_try_read(fd, buf + a, req, 0)) {
                mem = a;
                break;
            }
        }
        free(buf);
        if (req && mem) {
            s->req_align = req;
            s->mem_align = mem;
            s->align_source = "probe";
            return;
        }
    }
    s->req_align = 4096;
    s->mem_align = 4096;
    s->align_source = "default";
}

/*
 * Can the file take non-blocking I/O? One RWF_NOWAIT read of an aligned
 * block: EOPNOTSUPP means no (tmpfs, zram, many network and FUSE
 * filesystems); success or EAGAIN (it would have blocked) means yes.
 */
static int raw_probe_nowait(BDRVRawState *s, int fd)
{
    size_t len = MAX(s->req_align, 512);
    void *buf = NULL;
    if (posix_memalign(&buf, MAX(s->mem_align, 512), len) != 0) {
        return -1;
    }
    struct iovec iov = { buf, len };
    ssize_t r = preadv2(fd, &iov, 1, 0, RWF_NOWAIT);
    int err = r < 0 ? errno : 0;
    free(buf);
    if (r >= 0 || err == EAGAIN) {
        return 1;
    }
    return err == EOPNOTSUPP ? 0 : -1;
}

/*
 * Is the file's data in RAM, so that no request can wait for a device or a
 * network: a file on tmpfs or ramfs, or a zram (without a writeback
 * device) or brd ("ram*") block device. Only these get synchronous I/O in
 * the loop's thread from aio=auto (inline, or io_uring's sync_below).
 */
static bool raw_probe_ram_backed(int fd, const struct stat *st)
{
    if (S_ISBLK(st->st_mode)) {
        char link[PATH_MAX];
        g_autofree char *sys = g_strdup_printf("/sys/dev/block/%u:%u",
                                               major(st->st_rdev), minor(st->st_rdev));
        ssize_t n = readlink(sys, link, sizeof(link) - 1);
        if (n <= 0) {
            return false;
        }
        link[n] = '\0';
        const char *name = strrchr(link, '/') ? strrchr(link, '/') + 1 : link;
        if (g_str_has_prefix(name, "zram")) {
            /* With a writeback device, idle pages may be on a disk. */
            g_autofree char *bd_path = g_strdup_printf("%s/backing_dev", sys);
            g_autofree char *bd = NULL;
            return !g_file_get_contents(bd_path, &bd, NULL, NULL) ||
                   !strcmp(g_strstrip(bd), "none");
        }
        return g_str_has_prefix(name, "ram") && g_ascii_isdigit(name[3]);
    }
    struct statfs sfs;
    return S_ISREG(st->st_mode) && fstatfs(fd, &sfs) == 0 &&
           (sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC);
}

/* ---- engine choice ------------------------------------------------------------------- */

/* Options only io_uring uses (native also takes aio-queue-depth). */
static const char *const uring_only_options[] = {
    "aio-queue-depth", "fixed-files", "fixed-buffers", "sqpoll", "sq-thread-idle",
    "sq-thread-cpu", "iopoll", "restrict", "share-ring",
};

/* An OnOffAuto option of the checked tree (absent: auto). */
static RawAioOnOffAuto opt_on_off_auto(JsonObject *opts, const char *name)
{
    const char *v = bdrv_opt_str(opts, name, "auto");
    return !strcmp(v, "on") ? RAW_AIO_ONOFFAUTO_ON :
           !strcmp(v, "off") ? RAW_AIO_ONOFFAUTO_OFF : RAW_AIO_ONOFFAUTO_AUTO;
}

static bool engine_usable(const RawAioOps *ops)
{
    return ops && ops->available(NULL);
}

/*
 * Whether the user chose io_uring-only option `name`: given explicitly and,
 * in the checked options, different from its schema default. A caller that
 * hands over a tree with the defaults filled in (the -drive expansion,
 * qapi_drive_to_blockdev()) then does not trip the aio=threads/native
 * conflict check, while a real choice (aio-queue-depth=8) still does.
 */
static bool uring_option_chosen(JsonObject *given, JsonObject *opts, const char *name)
{
    if (!given || !bdrv_opt_has(given, name)) {
        return false;
    }
    const QapiType *t = qapi_schema_lookup("BlockdevOptionsFile");
    const QapiMember *m = t ? qapi_type_find_member(t, name) : NULL;
    JsonNode *n = json_object_get_member(opts, name);
    if (!m || !n || !JSON_NODE_HOLDS_VALUE(n)) {
        return true;
    }
    switch (m->default_kind) {
    case QAPI_DEFAULT_STR:
        return json_node_get_value_type(n) != G_TYPE_STRING ||
               strcmp(json_node_get_string(n), m->default_str) != 0;
    case QAPI_DEFAULT_INT:
        return json_node_get_value_type(n) != G_TYPE_INT64 ||
               json_node_get_int(n) != m->default_int;
    case QAPI_DEFAULT_BOOL:
        return json_node_get_value_type(n) != G_TYPE_BOOLEAN ||
               json_node_get_boolean(n) != (m->default_int != 0);
    default:
        return true;
    }
}

/*
 * The aio=auto rule, per file, from the RWF_NOWAIT probe and O_DIRECT:
 *   1. the file takes non-blocking I/O -> io_uring (requests complete inline,
 *      no worker hop; IOSQE_ASYNC off);
 *   2. it does not (tmpfs, zram, many network/FUSE filesystems) and is opened
 *      with O_DIRECT -> native (Linux AIO);
 *   3. it does not, buffered -> io_uring with IOSQE_ASYNC (every request
 *      goes straight to a kernel worker; no doomed inline attempt);
 *   4. unknown probe answer -> native with O_DIRECT, threads without
 *      (never io_uring on a guess).
 * None of these blocks the event loop: native only with O_DIRECT, where
 * io_submit queues to the device; io_uring+ASYNC and threads run the
 * syscalls in worker threads.
 *
 * Numbers behind it (docs/devel/performance.md "aio=auto": ringblk-img bench
 * -c N -d 1|32 --random [-t none], 4 KiB random reads, medians of 3
 * interleaved runs on a loaded 2-CPU VM, so read them as ratios):
 *   ext4 O_DIRECT d1: io_uring 17k, native 13k, threads 14k; d32: io_uring 62k,
 *     native 59k, threads 39k.  ext4 cached d1: io_uring 272k vs threads 37k.
 *   tmpfs O_DIRECT d1: native 300k, io_uring 93k (+IOSQE_ASYNC 83k), threads
 *     46k; d32: native 260k, io_uring 98k, threads 93k.
 *   zram O_DIRECT d1: native 100k, io_uring 53k (+ASYNC 63k), threads 27k;
 *     d32: io_uring+ASYNC 198k, native 130k, io_uring 72k, threads 59k.
 *   tmpfs buffered d1: io_uring+ASYNC 56k, io_uring 47k, threads 43k; d32:
 *     io_uring+ASYNC 215k, io_uring 164k, threads 88k.  zram buffered d1:
 *     io_uring(+ASYNC) 32k, threads 21k; d32: io_uring+ASYNC 124k, threads
 *     58k, io_uring 27k.
 * So on no-nowait O_DIRECT files native wins at depth 1 by 1.6-3x (IOSQE_ASYNC
 * io_uring only at depth 32 on zram), and on buffered no-nowait files
 * io_uring with IOSQE_ASYNC is the fastest asynchronous engine at both
 * depths (1.3-2.4x threads). But where such a file is in RAM (tmpfs, zram)
 * the I/O is a memory copy done by whichever thread issues it: buffered,
 * every asynchronous engine adds a thread hop (inline measured 1.2-4x
 * io_uring+ASYNC); with O_DIRECT, native's io_submit already copies in
 * our thread, and a plain pread is cheaper (inline 1.16-1.37x native at
 * depth 1, 0.95-0.98x at depth 32; docs/devel/performance.md). So files in
 * RAM get inline, whatever the cache mode; inline sends plugged bursts
 * through one io_submit (1.6-2x at depth 32 where syscalls are dear).
 */
/*
 * Except for a RAM-backed block device (zram, brd) opened with O_DIRECT:
 * there the read in our thread goes through the block layer (bio, driver,
 * completion), dearer than a tmpfs copy, and at depth an io-wq worker doing
 * it on another CPU pays for its hop. Measured 2026-12-06 (Linux 6.18,
 * 2 CPUs, 4 KiB reads on zram): inline 590k at depth 1 and 710k at 32,
 * io_uring 66k and about 1.0M. So auto takes io_uring with sync_below:
 * requests that find few others outstanding run synchronously, as inline
 * would; the rest go through the ring (luring_rw_sync()). On another VM
 * (2026-12-07, same kernel) synchronous batches won at depth 32 instead
 * (native 1.16M, io_uring 0.94M), so auto also sets sync_race: the engine
 * times the split against all-synchronous on the live stream and keeps
 * the faster.
 */
#define RAW_AUTO_SYNC_BELOW 12

static bool raw_auto_sync_ring(bool direct, int nowait, bool ram_backed, bool blkdev)
{
    return nowait == 0 && ram_backed && direct && blkdev &&
           engine_usable(raw_aio_ops_by_name("io_uring"));
}

static const RawAioOps *raw_auto_engine(bool direct, int nowait, bool ram_backed,
                                        bool blkdev)
{
    const RawAioOps *uring = raw_aio_ops_by_name("io_uring");
    if (nowait == 1 && engine_usable(uring)) {
        return uring;
    }
    if (raw_auto_sync_ring(direct, nowait, ram_backed, blkdev)) {
        return uring;               /* with sync_below */
    }
    if (nowait == 0 && ram_backed) {
        return &raw_aio_inline_ops;
    }
    const RawAioOps *native = raw_aio_ops_by_name("native");
    if (direct && engine_usable(native)) {
        return native;
    }
    if (!direct && nowait == 0 && engine_usable(uring)) {
        return uring;               /* with IOSQE_ASYNC: raw_want_async_punt() */
    }
    return raw_aio_ops_by_name("threads");
}

/*
 * IOSQE_ASYNC for io_uring: on a file that cannot take non-blocking I/O the
 * kernel's inline attempt always fails and the request goes to a worker
 * anyway, so skipping the attempt saves work at low depth (2.3x at depth 1
 * on zram and tmpfs); the engine applies it only to submissions that leave
 * few requests in flight (luring_mark_async()). On a file that can, it
 * turns inline completions into worker hops (ext4 cached d1: 72k vs 272k),
 * so it is off there. RINGBLK_AIO_ASYNC_PUNT=on|off overrides
 * it, for benchmarks. The choice shows as "async-punt" in the node's info.
 */
static bool raw_want_async_punt(int nowait)
{
    const char *env = getenv("RINGBLK_AIO_ASYNC_PUNT");
    if (env && !strcmp(env, "on")) {
        return true;
    }
    if (env && !strcmp(env, "off")) {
        return false;
    }
    return nowait == 0;
}

/*
 * Whether CPU cpu is online, from /sys/devices/system/cpu/online ("0-3,6").
 * *online gets that list for the message; unknown (no sysfs) counts as online.
 */
static bool raw_cpu_online(int64_t cpu, char **online)
{
    char *text = NULL;
    *online = NULL;
    if (!g_file_get_contents("/sys/devices/system/cpu/online", &text, NULL, NULL)) {
        return true;
    }
    g_strstrip(text);
    bool found = false;
    g_auto(GStrv) ranges = g_strsplit(text, ",", -1);
    for (char **r = ranges; *r && !found; r++) {
        char *end;
        int64_t lo = g_ascii_strtoll(*r, &end, 10), hi = lo;
        if (*end == '-') {
            hi = g_ascii_strtoll(end + 1, NULL, 10);
        }
        found = cpu >= lo && cpu <= hi;
    }
    *online = text;
    return found;
}

/*
 * SQPOLL tuning without SQPOLL would be ignored without a word; a CPU that is
 * not online would fail ring creation with a bare EINVAL. prefix: the dotted
 * path of the node's options, so that messages name the key as given.
 */
static bool raw_check_sq_options(JsonObject *given, JsonObject *opts, const char *prefix,
                                 Error **errp)
{
    bool sqpoll = bdrv_opt_bool(opts, "sqpoll", false);
    static const char *const sq_keys[] = { "sq-thread-cpu", "sq-thread-idle" };
    for (size_t i = 0; i < G_N_ELEMENTS(sq_keys); i++) {
        if (!sqpoll && uring_option_chosen(given, opts, sq_keys[i])) {
            error_setg(errp, "Parameter '%s%s' requires sqpoll=on", prefix, sq_keys[i]);
            return false;
        }
    }
    int64_t cpu = bdrv_opt_int(opts, "sq-thread-cpu", -1);
    g_autofree char *online = NULL;
    if (sqpoll && cpu >= 0 && !raw_cpu_online(cpu, &online)) {
        error_setg(errp, "Parameter '%ssq-thread-cpu': CPU %" PRId64 " is not online "
                   "(online CPUs: %s)", prefix, cpu, online);
        return false;
    }
    return true;
}

/*
 * io_uring options with another explicit engine, SQPOLL tuning without
 * SQPOLL: checked before the file is opened, so that such an error is the
 * one reported (not, say, a lock held by another process).
 */
static int raw_check_engine_options(BlockDriverState *bs, JsonObject *opts, Error **errp)
{
    const char *aio = bdrv_opt_str(opts, "aio", "auto");
    JsonObject *given = bs->explicit_opts;

    if (strcmp(aio, "auto") && strcmp(aio, "io_uring")) {
        for (size_t i = 0; i < G_N_ELEMENTS(uring_only_options); i++) {
            bool native_depth = !strcmp(aio, "native") &&
                                !strcmp(uring_only_options[i], "aio-queue-depth");
            if (!native_depth && uring_option_chosen(given, opts, uring_only_options[i])) {
                error_setg(errp, "Parameter '%s%s' requires aio=io_uring",
                           bs->opt_prefix ? bs->opt_prefix : "", uring_only_options[i]);
                return -EINVAL;
            }
        }
    }
    if (!raw_check_sq_options(given, opts, bs->opt_prefix ? bs->opt_prefix : "", errp)) {
        return -EINVAL;
    }
    return 0;
}

static int raw_choose_engine(BlockDriverState *bs, BDRVRawState *s, JsonObject *opts,
                             Error **errp)
{
    const char *aio = bdrv_opt_str(opts, "aio", "auto");
    bool direct = s->open_flags & O_DIRECT;
    s->aio_requested = !strcmp(aio, "threads") ? "threads" :
                       !strcmp(aio, "native") ? "native" :
                       !strcmp(aio, "io_uring") ? "io_uring" :
                       !strcmp(aio, "inline") ? "inline" : "auto";

    if (!strcmp(s->aio_requested, "auto")) {
        s->ops = raw_auto_engine(direct, s->nowait, s->ram_backed, s->blkdev);
    } else {
        s->ops = raw_aio_ops_by_name(s->aio_requested);
        if (!s->ops) {
            error_setg(errp, "aio=%s is not available: not compiled in", s->aio_requested);
            return -ENOTSUP;
        }
        if (!s->ops->available(errp)) {
            return -ENOTSUP;
        }
        /* Say so where auto would have avoided the punt (not on NFS buffered, say). */
        if (!strcmp(s->aio_requested, "io_uring") && s->nowait == 0 && !s->punt_warned) {
            const RawAioOps *pick = raw_auto_engine(direct, s->nowait, s->ram_backed,
                                                    s->blkdev);

            s->punt_warned = true;
            /* Measured 2026-12-06 (docs/devel/performance.md, the 03:11 run). */
            if (raw_auto_sync_ring(direct, s->nowait, s->ram_backed, s->blkdev)) {
                warn_report("'%s' cannot take non-blocking I/O: io_uring hands every "
                            "request to a kernel worker thread, which costs a thread hop "
                            "per request (measured 10x slower at queue depth 1 than a "
                            "synchronous read there); aio=auto would read synchronously "
                            "at low queue depth here", s->filename);
            } else if (pick == &raw_aio_inline_ops) {
                warn_report("'%s' cannot take non-blocking I/O: io_uring hands every "
                            "request to a kernel worker thread, which costs a thread hop "
                            "per request (measured 10-20x slower at queue depth 1 than a "
                            "synchronous read there, about equal at depth 32); aio=auto "
                            "would pick aio=inline here", s->filename);
            } else if (pick != s->ops) {
                warn_report("'%s' cannot take non-blocking I/O: io_uring hands every "
                            "request to a kernel worker thread, which costs a thread hop "
                            "per request (measured 1.6-3x slower at queue depth 1 than "
                            "aio=native there); aio=auto would pick aio=%s here",
                            s->filename, pick->name);
            }
        }
    }
    if (!s->ops) {
        error_setg(errp, "No AIO engine is available");
        return -ENOTSUP;
    }

    s->cfg = (RawAioConfig){ .sq_thread_cpu = -1 };
    if (!strcmp(s->ops->name, "io_uring")) {
        s->cfg.queue_depth = bdrv_opt_int(opts, "aio-queue-depth", 0);
        s->cfg.fixed_files = opt_on_off_auto(opts, "fixed-files");
        s->cfg.fixed_buffers = opt_on_off_auto(opts, "fixed-buffers");
        if (s->cfg.fixed_buffers == RAW_AIO_ONOFFAUTO_AUTO &&
            (!direct || (s->ram_backed && !s->blkdev))) {
            /*
             * Through the page cache (and on tmpfs, whose O_DIRECT is the
             * same copy) the kernel copies either way, and from a
             * registered buffer it copies slower: it looks the buffer up
             * (io_import_reg_buf) and copies through a bio_vec, where a
             * plain buffer takes one user copy. Measured 2026-12-07 (Linux
             * 6.18, 4 KiB reads at depth 32, interleaved): cached, pinned,
             * ringblk 1.02-1.08x without, the limit loop 1.11x; tmpfs
             * O_DIRECT 1.00-1.12x. Registered buffers pay where O_DIRECT
             * reaches a device (disk; zram: equal), saving the pinning of
             * every request's pages.
             */
            s->cfg.fixed_buffers = RAW_AIO_ONOFFAUTO_OFF;
        }
        s->cfg.sqpoll = bdrv_opt_bool(opts, "sqpoll", false);
        s->cfg.sq_thread_idle_ms = bdrv_opt_int(opts, "sq-thread-idle", 0);
        s->cfg.sq_thread_cpu = bdrv_opt_int(opts, "sq-thread-cpu", -1);
        s->cfg.iopoll = bdrv_opt_bool(opts, "iopoll", false);
        s->cfg.restrict_ops = opt_on_off_auto(opts, "restrict");
        s->cfg.async_punt = raw_want_async_punt(s->nowait);
        s->cfg.nowait = s->nowait == 1;
        s->cfg.share_ring = opt_on_off_auto(opts, "share-ring");
        if (!strcmp(s->aio_requested, "auto") &&
            raw_auto_sync_ring(direct, s->nowait, s->ram_backed, s->blkdev)) {
            s->cfg.sync_below = RAW_AUTO_SYNC_BELOW;
            s->cfg.sync_race = true;
        }
    } else if (!strcmp(s->ops->name, "native")) {
        s->cfg.queue_depth = bdrv_opt_int(opts, "aio-queue-depth", 0);
    }
    return 0;
}

static int raw_engine_attach(BDRVRawState *s, AioContext *ctx, Error **errp)
{
    s->engine = raw_aio_engine_get(s->ops, ctx, &s->cfg, errp);
    if (!s->engine) {
        return -EIO;
    }
    s->slot = -1;
    if (s->ops->add_file) {
        int slot = s->ops->add_file(s->engine, s->fd, s->open_flags, errp);
        if (slot < -1) {
            raw_aio_engine_put(s->engine);
            s->engine = NULL;
            return slot;
        }
        s->slot = slot;
    }
    return 0;
}

static void raw_engine_detach(BDRVRawState *s)
{
    if (!s->engine) {
        return;
    }
    if (s->slot >= 0 && s->ops->remove_file) {
        s->ops->remove_file(s->engine, s->slot);
    }
    s->slot = -1;
    raw_aio_engine_put(s->engine);
    s->engine = NULL;
}

/* ---- open/close ------------------------------------------------------------------------ */

/*
 * What raw_submit() adds to every request's flags, worked out once: after
 * open and after reopen (the only places blkdev, nowait and open_flags change).
 */
static void raw_update_aio_flags(BDRVRawState *s)
{
    s->aio_flags = s->blkdev ? RAW_AIO_BLKDEV : 0;
    s->read_aio_flags = s->aio_flags |
                        (s->nowait == 1 && !(s->open_flags & O_DIRECT) ? RAW_AIO_CACHED : 0);
}

static int raw_open_fd(const char *filename, bool read_only, bool direct, int *pflags,
                       Error **errp)
{
    int flags = O_CLOEXEC | (read_only ? O_RDONLY : O_RDWR) | (direct ? O_DIRECT : 0);
    int fd;
    do {
        fd = open(filename, flags);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        int err = errno;
        if (err == EINVAL && direct) {
            error_setg(errp, "Could not open '%s': filesystem does not support O_DIRECT",
                       filename);
        } else {
            error_setg_errno(errp, err, "Could not open '%s'", filename);
        }
        return -err;
    }
    *pflags = flags;
    return fd;
}

static int raw_open_common(BlockDriverState *bs, JsonObject *opts, bool host_device,
                           Error **errp)
{
    BDRVRawState *s = bs->opaque;
    const char *filename = bdrv_opt_str(opts, "filename", NULL);
    const char *locking = bdrv_opt_str(opts, "locking", "auto");
    struct stat st;
    int ret;

    s->fd = -1;
    s->slot = -1;
    s->host_device = host_device;
    if (!filename || !*filename) {
        error_setg(errp, "Parameter 'filename' is missing");
        return -EINVAL;
    }
    s->filename = g_strdup(filename);
    s->force_share = bdrv_opt_bool(opts, "force-share", false);
    if (s->force_share && !bs->read_only) {
        error_setg(errp, "force-share=on can only be used with read-only images");
        ret = -EINVAL;
        goto fail;
    }
    s->use_lock = strcmp(locking, "off") != 0;
    s->locking_on = !strcmp(locking, "on");
    ret = raw_check_engine_options(bs, opts, errp);
    if (ret < 0) {
        goto fail;
    }

    s->fd = raw_open_fd(filename, bs->read_only, bs->cache_direct, &s->open_flags, errp);
    if (s->fd < 0 && !bs->read_only && bdrv_opt_bool(opts, "auto-read-only", false) &&
        (s->fd == -EACCES || s->fd == -EROFS || s->fd == -EPERM)) {
        g_clear_error(errp);
        bs->read_only = true;
        s->fd = raw_open_fd(filename, true, bs->cache_direct, &s->open_flags, errp);
    }
    if (s->fd < 0) {
        ret = s->fd;
        s->fd = -1;
        goto fail;
    }
    if (fstat(s->fd, &st) < 0) {
        ret = -errno;
        error_setg_errno(errp, errno, "Could not stat '%s'", filename);
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        error_setg(errp, "'%s' is a directory", filename);
        ret = -EISDIR;
        goto fail;
    }
    s->blkdev = S_ISBLK(st.st_mode);
    s->blk_lbs = 512;
    if (s->blkdev) {
        int lbs = 0;
        if (ioctl(s->fd, BLKSSZGET, &lbs) == 0 && lbs > 0) {
            s->blk_lbs = lbs;
        }
    }
    if (host_device && !S_ISBLK(st.st_mode) && !S_ISCHR(st.st_mode)) {
        error_setg(errp, "'host_device' driver requires '%s' to be either "
                   "a character or block device", filename);
        ret = -EINVAL;
        goto fail;
    }

    ret = raw_apply_locks(s, s->fd, !bs->read_only, errp);
    if (ret < 0) {
        goto fail;
    }

    raw_probe_alignment(s, s->fd, s->open_flags);
    s->nowait = raw_probe_nowait(s, s->fd);
    s->ram_backed = raw_probe_ram_backed(s->fd, &st);
    raw_update_aio_flags(s);

    ret = raw_choose_engine(bs, s, opts, errp);
    if (ret < 0) {
        goto fail_unlock;
    }
    ret = raw_engine_attach(s, bs->ctx, errp);
    if (ret < 0) {
        goto fail_unlock;
    }

    bs->filename = g_strdup(filename);
    int64_t len = bs->drv->bdrv_getlength(bs);
    if (len < 0) {
        error_setg_errno(errp, (int)-len, "Could not get the size of '%s'", filename);
        ret = (int)len;
        raw_engine_detach(s);
        goto fail_unlock;
    }
    bs->total_bytes = len;
    return 0;

fail_unlock:
    raw_release_locks(s, s->fd);
fail:
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    g_free(s->filename);
    s->filename = NULL;
    return ret;
}

static int raw_file_open(BlockDriverState *bs, JsonObject *opts, Error **errp)
{
    return raw_open_common(bs, opts, false, errp);
}

static int raw_hdev_open(BlockDriverState *bs, JsonObject *opts, Error **errp)
{
    return raw_open_common(bs, opts, true, errp);
}

static void raw_close(BlockDriverState *bs)
{
    BDRVRawState *s = bs->opaque;
    /* The engine lets go of the file first (a registered file keeps the lock alive). */
    raw_engine_detach(s);
    if (s->fd >= 0) {
        raw_release_locks(s, s->fd);
        close(s->fd);
        s->fd = -1;
    }
    g_free(s->filename);
    s->filename = NULL;
}

static int64_t raw_getlength(BlockDriverState *bs)
{
    BDRVRawState *s = bs->opaque;
    struct stat st;
    if (s->blkdev) {
        uint64_t size;
        if (ioctl(s->fd, BLKGETSIZE64, &size) < 0) {
            return -errno;
        }
        return size;
    }
    if (fstat(s->fd, &st) < 0) {
        return -errno;
    }
    if (S_ISCHR(st.st_mode)) {
        off_t end = lseek(s->fd, 0, SEEK_END);
        return end < 0 ? -errno : end;
    }
    return st.st_size;
}

static void raw_refresh_limits(BlockDriverState *bs, BlockLimits *bl)
{
    BDRVRawState *s = bs->opaque;
    long iov_max = sysconf(_SC_IOV_MAX);
    bl->request_alignment = s->req_align;
    bl->min_mem_alignment = s->mem_align;
    bl->max_transfer = s->max_transfer;
    bl->max_iov = iov_max > 0 ? (int)iov_max : 1024;
}

/* ---- requests ------------------------------------------------------------------------------ */

static void raw_aio_complete(void *opaque, int ret)
{
    bdrv_req_done(opaque, ret);
}

/*
 * A write padded to the O_DIRECT alignment at the unaligned end of a file
 * grows the file to the aligned size; put the size back, so the image keeps
 * its length. Only when the file ends exactly where our write did (nobody
 * else grew it meanwhile).
 */
static void raw_aio_complete_tail(void *opaque, int ret)
{
    BdrvRequest *req = opaque;
    BlockDriverState *bs = req->bs;
    BDRVRawState *s = bs->opaque;
    struct stat st;
    if (fstat(s->fd, &st) == 0 && st.st_size == req->offset + req->bytes &&
        st.st_size > bs->total_bytes && ftruncate(s->fd, bs->total_bytes) < 0 && ret == 0) {
        ret = -errno;
    }
    bdrv_req_done(req, ret);
}

static inline int raw_submit(BlockDriverState *bs, BdrvRequest *req, RawAioType type,
                             unsigned flags)
{
    BDRVRawState *s = bs->opaque;
    RawAioReq *r = &req->raw;
    r->type = type;
    r->flags = flags | (type == RAW_AIO_READ ? s->read_aio_flags : s->aio_flags);
    r->fd = s->fd;
    r->file_slot = s->slot;
    r->offset = req->offset;
    r->bytes = req->bytes;
    r->iov = req->iov;
    r->niov = req->niov;
    r->cb = raw_aio_complete;
    if (G_UNLIKELY(req->offset + req->bytes > bs->total_bytes) && !s->blkdev &&
        type == RAW_AIO_WRITE) {
        r->cb = raw_aio_complete_tail;
    }
    r->opaque = req;
    r->done = 0;
    r->next = NULL;
    return raw_aio_submit(s->engine, r);
}

static int raw_preadv(BlockDriverState *bs, BdrvRequest *req)
{
    return raw_submit(bs, req, RAW_AIO_READ, 0);
}

static int raw_pwritev(BlockDriverState *bs, BdrvRequest *req)
{
    return raw_submit(bs, req, RAW_AIO_WRITE, (req->flags & BDRV_REQ_FUA) ? RAW_AIO_FUA : 0);
}

static int raw_flush(BlockDriverState *bs, BdrvRequest *req)
{
    req->iov = NULL;
    req->niov = 0;
    return raw_submit(bs, req, RAW_AIO_FLUSH, 0);
}

static int raw_pdiscard(BlockDriverState *bs, BdrvRequest *req)
{
    BDRVRawState *s = bs->opaque;
    if (s->blkdev) {
        /* BLKDISCARD takes whole logical blocks only: discard the ones inside. */
        int64_t lbs = s->blk_lbs;
        int64_t start = (req->offset + lbs - 1) / lbs * lbs;
        int64_t end = (req->offset + req->bytes) / lbs * lbs;
        if (end <= start) {
            return -ENOTSUP;    /* nothing whole to discard; discard is advisory */
        }
        req->offset = start;
        req->bytes = end - start;
    }
    req->iov = NULL;
    req->niov = 0;
    return raw_submit(bs, req, RAW_AIO_DISCARD, 0);
}

static int raw_pwrite_zeroes(BlockDriverState *bs, BdrvRequest *req)
{
    BDRVRawState *s = bs->opaque;
    unsigned flags = 0;
    if (s->blkdev && ((req->offset | req->bytes) & (s->blk_lbs - 1))) {
        /* BLKZEROOUT takes whole logical blocks: let the layer write zeroes. */
        return -ENOTSUP;
    }
    if (req->flags & BDRV_REQ_MAY_UNMAP) {
        flags |= RAW_AIO_MAY_UNMAP;
    }
    if (req->flags & BDRV_REQ_NO_FALLBACK) {
        flags |= RAW_AIO_NO_FALLBACK;
    }
    if (req->flags & BDRV_REQ_FUA) {
        flags |= RAW_AIO_FUA;
    }
    req->iov = NULL;
    req->niov = 0;
    return raw_submit(bs, req, RAW_AIO_WRITE_ZEROES, flags);
}

static int raw_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes,
                            int64_t *pnum, int *status)
{
    BDRVRawState *s = bs->opaque;
    *pnum = bytes;
    *status = BDRV_BLOCK_DATA;
    if (s->blkdev || s->host_device) {
        return 0;
    }
    off_t data = lseek(s->fd, offset, SEEK_DATA);
    if (data < 0) {
        if (errno == ENXIO) {
            /* In a hole that runs to the end of the file. */
            *status = BDRV_BLOCK_ZERO;
        }
        /* Other errors (no SEEK_DATA support): everything is data. */
        return 0;
    }
    if (data > offset) {
        *pnum = MIN(bytes, data - offset);
        *status = BDRV_BLOCK_ZERO;
        return 0;
    }
    off_t hole = lseek(s->fd, offset, SEEK_HOLE);
    if (hole > offset) {
        *pnum = MIN(bytes, hole - offset);
    }
    return 0;
}

/* ---- truncate and create --------------------------------------------------------------------- */

/* Writes zeroes over [from, to) with plain pwrite (prealloc=full). */
static int raw_write_zeroes_range(int fd, int64_t from, int64_t to)
{
    const size_t chunk = 1 << 20;
    char *buf = g_malloc0(chunk);
    int ret = 0;
    while (from < to) {
        size_t n = MIN((int64_t)chunk, to - from);
        ssize_t r = pwrite(fd, buf, n, from);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            ret = -errno;
            break;
        }
        if (r == 0) {
            ret = -ENOSPC;
            break;
        }
        from += r;
    }
    g_free(buf);
    return ret;
}

static int raw_regular_truncate(int fd, int64_t offset, const char *prealloc, Error **errp)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        error_setg_errno(errp, errno, "Could not stat the file");
        return -errno;
    }
    int64_t cur = st.st_size;
    if (strcmp(prealloc, "off") && offset < cur) {
        error_setg(errp, "Cannot use preallocation for shrinking files");
        return -ENOTSUP;
    }
    if (!strcmp(prealloc, "falloc") && offset > cur) {
        int r = posix_fallocate(fd, cur, offset - cur);
        if (r) {
            error_setg_errno(errp, r, "Could not preallocate new data");
            return -r;
        }
        return 0;
    }
    if (ftruncate(fd, offset) < 0) {
        int err = errno;
        error_setg_errno(errp, err, "Failed to resize the file");
        return -err;
    }
    if (!strcmp(prealloc, "full") && offset > cur) {
        /* Plain buffered writes: the fd may be O_DIRECT (drained; restored below). */
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0 && (fl & O_DIRECT)) {
            fcntl(fd, F_SETFL, fl & ~O_DIRECT);
        }
        int r = raw_write_zeroes_range(fd, cur, offset);
        if (fl >= 0 && (fl & O_DIRECT)) {
            fcntl(fd, F_SETFL, fl);
        }
        if (r < 0) {
            error_setg_errno(errp, -r, "Could not write zeros for preallocation");
            if (ftruncate(fd, cur) < 0) {
                /* The error above says what matters. */
            }
            return r;
        }
        if (fsync(fd) < 0) {
            error_setg_errno(errp, errno, "Could not flush file to disk");
            return -errno;
        }
    }
    return 0;
}

static int raw_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                        const char *prealloc, Error **errp)
{
    BDRVRawState *s = bs->opaque;
    if (s->blkdev || s->host_device) {
        int64_t cur = raw_getlength(bs);
        if (cur < 0) {
            error_setg_errno(errp, (int)-cur, "Failed to inquire current file length");
            return (int)cur;
        }
        if (offset > cur) {
            error_setg(errp, "Cannot grow device files");
            return -EINVAL;
        }
        if (exact && offset != cur) {
            error_setg(errp, "Cannot resize device files");
            return -ENOTSUP;
        }
        return 0;
    }
    return raw_regular_truncate(s->fd, offset, prealloc, errp);
}

int raw_create_file(const char *filename, int64_t size, const char *prealloc, Error **errp)
{
    if (size < 0) {
        error_setg(errp, "Image size cannot be negative");
        return -EINVAL;
    }
    if (strcmp(prealloc, "off") && strcmp(prealloc, "falloc") && strcmp(prealloc, "full")) {
        error_setg(errp, "Unsupported preallocation mode '%s'", prealloc);
        return -EINVAL;
    }
    int fd = open(filename, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = errno;
        error_setg_errno(errp, err, "Could not create '%s'", filename);
        return -err;
    }
    int ret = 0;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISBLK(st.st_mode)) {
        /* Nothing to create on a device: it must just be large enough. */
        uint64_t dsize = 0;
        if (ioctl(fd, BLKGETSIZE64, &dsize) == 0 && (uint64_t)size > dsize) {
            error_setg(errp, "Image size %" PRId64 " is larger than the device (%" PRIu64 ")",
                       size, dsize);
            ret = -ENOSPC;
        }
        close(fd);
        return ret;
    }
    /* Refuse to truncate an image another process writes or resizes (no OFD locks: go on). */
    off_t bad_byte;
    if (raw_lock_perms(fd, RAW_CREATE_PERM, RAW_CREATE_UNSHARE, filename, &bad_byte,
                       errp) == -EAGAIN) {
        close(fd);
        return -EAGAIN;
    }
    if (ftruncate(fd, 0) < 0) {
        ret = -errno;
        error_setg_errno(errp, errno, "Could not truncate '%s'", filename);
    } else {
        ret = raw_regular_truncate(fd, size, prealloc, errp);
    }
    raw_unlock_all(fd);
    close(fd);
    return ret;
}

/* ---- AioContext, plug, buffers ------------------------------------------------------------------ */

static int raw_attach_aio_context(BlockDriverState *bs, AioContext *ctx, Error **errp)
{
    return raw_engine_attach(bs->opaque, ctx, errp);
}

static void raw_detach_aio_context(BlockDriverState *bs)
{
    raw_engine_detach(bs->opaque);
}

static void raw_io_plug(BlockDriverState *bs)
{
    BDRVRawState *s = bs->opaque;
    if (s->ops->plug) {
        s->ops->plug(s->engine);
    }
}

static void raw_io_unplug(BlockDriverState *bs)
{
    BDRVRawState *s = bs->opaque;
    if (s->ops->unplug) {
        s->ops->unplug(s->engine);
    }
}

static void *raw_buf_alloc(BlockDriverState *bs, size_t size, size_t align)
{
    BDRVRawState *s = bs->opaque;
    if (s->engine && s->ops->buf_alloc) {
        return s->ops->buf_alloc(s->engine, size, align);
    }
    return NULL;
}

static void raw_buf_free(BlockDriverState *bs, void *buf, size_t size)
{
    BDRVRawState *s = bs->opaque;
    if (s->engine && s->ops->buf_free) {
        s->ops->buf_free(s->engine, buf, size);
    } else {
        free(buf);
    }
}

/* ---- reopen ------------------------------------------------------------------------------------- */

static int raw_reopen_prepare(BDRVReopenState *state, Error **errp)
{
    BlockDriverState *bs = state->bs;
    BDRVRawState *s = bs->opaque;
    JsonObject *c = state->changes;
    static const char *const fixed[] = { "filename", "aio", "locking" };

    for (size_t i = 0; i < G_N_ELEMENTS(fixed); i++) {
        if (bdrv_opt_has(c, fixed[i]) &&
            g_strcmp0(bdrv_opt_str(c, fixed[i], NULL), bdrv_opt_str(bs->options, fixed[i], NULL))) {
            error_setg(errp, "Cannot change the option '%s'", fixed[i]);
            return -EINVAL;
        }
    }
    for (size_t i = 0; i < G_N_ELEMENTS(uring_only_options); i++) {
        if (bdrv_opt_has(c, uring_only_options[i])) {
            error_setg(errp, "Cannot change the option '%s'", uring_only_options[i]);
            return -EINVAL;
        }
    }

    bool force_share = bdrv_opt_has(c, "force-share") ? bdrv_opt_bool(c, "force-share", false)
                                                      : s->force_share;
    if (force_share && !state->read_only) {
        error_setg(errp, "force-share=on can only be used with read-only images");
        return -EINVAL;
    }

    RawReopenState *rs = g_new0(RawReopenState, 1);
    rs->slot = -1;
    rs->force_share = force_share;
    state->opaque = rs;
    rs->fd = raw_open_fd(s->filename, state->read_only, state->cache_direct,
                         &rs->open_flags, errp);
    if (rs->fd < 0) {
        int ret = rs->fd;
        g_free(rs);
        state->opaque = NULL;
        return ret;
    }
    /*
     * The old and new descriptions would see each other's locks as another
     * user's: hand them over (taken back by raw_restore_locks on failure).
     */
    raw_release_locks(s, s->fd);
    int ret = raw_apply_locks(s, rs->fd, !state->read_only, errp);
    if (ret == 0 && s->ops->add_file) {
        int slot = s->ops->add_file(s->engine, rs->fd, rs->open_flags, errp);
        if (slot < -1) {
            ret = slot;
        } else {
            rs->slot = slot;
        }
    }
    if (ret < 0) {
        raw_release_locks(s, rs->fd);
        close(rs->fd);
        raw_restore_locks(s, s->fd, !bs->read_only);
        g_free(rs);
        state->opaque = NULL;
        return ret;
    }
    return 0;
}

static void raw_reopen_commit(BDRVReopenState *state)
{
    BlockDriverState *bs = state->bs;
    BDRVRawState *s = bs->opaque;
    RawReopenState *rs = state->opaque;

    if (s->slot >= 0 && s->ops->remove_file) {
        s->ops->remove_file(s->engine, s->slot);
    }
    close(s->fd);                /* its locks went to rs->fd in prepare */
    s->fd = rs->fd;
    s->open_flags = rs->open_flags;
    s->slot = rs->slot;
    s->force_share = rs->force_share;
    raw_probe_alignment(s, s->fd, s->open_flags);
    raw_update_aio_flags(s);
    g_free(rs);
    state->opaque = NULL;
}

static void raw_reopen_abort(BDRVReopenState *state)
{
    BDRVRawState *s = state->bs->opaque;
    RawReopenState *rs = state->opaque;
    if (!rs) {
        return;
    }
    if (rs->slot >= 0 && s->ops->remove_file) {
        s->ops->remove_file(s->engine, rs->slot);
    }
    raw_release_locks(s, rs->fd);
    close(rs->fd);
    raw_restore_locks(s, s->fd, !state->bs->read_only);
    g_free(rs);
    state->opaque = NULL;
}

/* ---- info ---------------------------------------------------------------------------------------- */

static void raw_query_info(BlockDriverState *bs, BlockNodeInfo *info)
{
    BDRVRawState *s = bs->opaque;
    g_free(info->filename);
    info->filename = g_strdup(s->filename);
    g_free(info->aio);
    info->aio = g_strdup(s->ops ? s->ops->name : NULL);
    g_free(info->aio_requested);
    info->aio_requested = g_strdup(s->aio_requested);
    info->nowait = s->nowait;
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "alignment-source", s->align_source);
    json_object_set_boolean_member(o, "block-device", s->blkdev);
    json_object_set_boolean_member(o, "locking", s->use_lock);
    json_object_set_boolean_member(o, "nowait", s->nowait == 1);
    json_object_set_boolean_member(o, "async-punt", s->cfg.async_punt);
    json_object_set_boolean_member(o, "fixed-file", s->slot >= 0);
    bool fixed_buffers = false;
    if (s->engine && s->ops == raw_aio_ops_by_name("io_uring")) {
        LuringInfo li;
        luring_get_info(s->engine, &li);
        fixed_buffers = li.fixed_buffers;
    }
    json_object_set_boolean_member(o, "fixed-buffers", fixed_buffers);
    json_object_set_int_member(o, "sync-below", s->cfg.sync_below);
    json_object_set_boolean_member(o, "sync-race", s->cfg.sync_race);
    if (info->driver_specific) {
        json_object_unref(info->driver_specific);
    }
    info->driver_specific = o;
}

#define RAW_DRIVER_OPS                                        \
    .instance_size = sizeof(BDRVRawState),                   \
    .is_protocol = true,                                     \
    .bdrv_close = raw_close,                                 \
    .bdrv_getlength = raw_getlength,                         \
    .bdrv_truncate = raw_truncate,                           \
    .bdrv_aio_preadv = raw_preadv,                           \
    .bdrv_aio_pwritev = raw_pwritev,                         \
    .bdrv_aio_flush = raw_flush,                             \
    .bdrv_aio_pdiscard = raw_pdiscard,                       \
    .bdrv_aio_pwrite_zeroes = raw_pwrite_zeroes,             \
    .bdrv_block_status = raw_block_status,                   \
    .bdrv_refresh_limits = raw_refresh_limits,               \
    .bdrv_attach_aio_context = raw_attach_aio_context,       \
    .bdrv_detach_aio_context = raw_detach_aio_context,       \
    .bdrv_io_plug = raw_io_plug,                             \
    .bdrv_io_unplug = raw_io_unplug,                         \
    .bdrv_reopen_prepare = raw_reopen_prepare,               \
    .bdrv_reopen_commit = raw_reopen_commit,                 \
    .bdrv_reopen_abort = raw_reopen_abort,                   \
    .bdrv_query_info = raw_query_info,                       \
    .bdrv_buf_alloc = raw_buf_alloc,                         \
    .bdrv_buf_free = raw_buf_free

const BlockDriver bdrv_file = {
    .format_name = "file",
    .bdrv_open = raw_file_open,
    RAW_DRIVER_OPS,
};

const BlockDriver bdrv_host_device = {
    .format_name = "host_device",
    .bdrv_open = raw_hdev_open,
    RAW_DRIVER_OPS,
};
