/*
 * The file and host_device drivers (block/file-posix.c): alignment, the
 * non-blocking probe, engine choice and its option errors, truncate and
 * create, block status, reopen and open errors. Data integrity under every
 * engine is test-data-integrity.c's job.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "block/block.h"
#include "block/raw-aio.h"
#include "qapi/qapi.h"

static char *scratch_dir;
static char *tmpfs_dir;

static char *make_file(const char *dir, const char *name, size_t size)
{
    char *path = g_build_filename(dir, name, NULL);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, size), ==, 0);
    close(fd);
    return path;
}

static BlockDriverState *open_fmt(Error **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static BlockDriverState *open_fmt(Error **errp, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *o = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    BlockDriverState *bs = bdrv_open_string(o, errp);
    g_free(o);
    return bs;
}

static bool engine_ok(const char *name)
{
    const RawAioOps *ops = raw_aio_ops_by_name(name);
    return ops && ops->available(NULL);
}

static const char *info_string(JsonObject *o, const char *key)
{
    return o && json_object_has_member(o, key) ? json_object_get_string_member(o, key) : NULL;
}

/* ---- alignment ------------------------------------------------------------------------- */

static void test_alignment_buffered(void)
{
    char *path = make_file(scratch_dir, "buffered.img", 65536);
    Error *err = NULL;
    BlockDriverState *bs = open_fmt(&err, "driver=file,filename=%s", path);
    g_assert_no_error(err);
    BlockNodeInfo info;
    bdrv_query_node_info(bs, &info);
    g_assert_cmpuint(info.request_alignment, ==, 1);
    g_assert_cmpuint(info.memory_alignment, ==, 1);
    g_assert_false(info.cache_direct);
    g_assert_cmpstr(info_string(info.driver_specific, "alignment-source"), ==, "buffered");
    bdrv_node_info_clear(&info);
    bdrv_unref(bs);
    g_unlink(path);
    g_free(path);
}

static void test_alignment_direct(void)
{
    char *path = make_file(scratch_dir, "direct.img", 65536);
    Error *err = NULL;
    BlockDriverState *bs = open_fmt(&err, "driver=file,filename=%s,cache.direct=on", path);
    if (!bs) {
        g_test_skip(error_get_pretty(err));
        error_free(err);
        g_unlink(path);
        g_free(path);
        return;
    }
    BlockNodeInfo info;
    bdrv_query_node_info(bs, &info);
    g_assert_true(info.cache_direct);

    /* The kernel's own answer, asked independently. */
    struct statx stx;
    int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    if (statx(fd, "", AT_EMPTY_PATH, 0x2000 /* STATX_DIOALIGN */, &stx) == 0 &&
        (stx.stx_mask & 0x2000) && stx.stx_dio_offset_align) {
        g_assert_cmpuint(info.request_alignment, ==, stx.stx_dio_offset_align);
        g_assert_cmpuint(info.memory_alignment, ==, MAX(stx.stx_dio_mem_align, 1));
        g_assert_cmpstr(info_string(info.driver_specific, "alignment-source"), ==, "statx");
    } else {
        g_assert_cmpuint(info.request_alignment, >=, 512);
    }
    close(fd);
    g_assert_cmpuint(bdrv_request_alignment(bs), ==, info.request_alignment);
    g_assert_cmpuint(bdrv_min_mem_align(bs), ==, info.memory_alignment);

    /* bdrv_blockalign honours the memory alignment */
    void *b = bdrv_blockalign(bs, 4096);
    g_assert_cmpuint((uintptr_t)b % info.memory_alignment, ==, 0);
    bdrv_blockalign_free(bs, b, 4096);
    bdrv_node_info_clear(&info);
    bdrv_unref(bs);
    g_unlink(path);
    g_free(path);
}

/* ---- the non-blocking probe and aio=auto ------------------------------------------------- */

static void test_nowait_probe(void)
{
    char *path = make_file(scratch_dir, "nowait.img", 65536);
    Error *err = NULL;
    BlockDriverState *bs = open_fmt(&err, "driver=file,filename=%s", path);
    g_assert_no_error(err);
    BlockNodeInfo info;
    bdrv_query_node_info(bs, &info);
    g_assert_cmpint(info.nowait, ==, 1);       /* ext4 takes RWF_NOWAIT */
    bdrv_node_info_clear(&info);
    bdrv_unref(bs);
    g_unlink(path);
    g_free(path);

    if (!tmpfs_dir) {
        return;
    }
    path = make_file(tmpfs_dir, "nowait.img", 65536);
    bs = open_fmt(&err, "driver=file,filename=%s", path);
    g_assert_no_error(err);
    bdrv_query_node_info(bs, &info);
    g_assert_cmpint(info.nowait, ==, 0);       /* tmpfs: EOPNOTSUPP */
    bdrv_node_info_clear(&info);
    bdrv_unref(bs);
    g_unlink(path);
    g_free(path);
}

/* Opens a fresh file in dir with aio=aio; returns the engine and async-punt. */
static char *open_engine(const char *dir, const char *aio, bool direct, bool *punt)
{
    char *path = make_file(dir, "auto.img", 65536);
    Error *err = NULL;
    BlockDriverState *bs = open_fmt(&err, "driver=file,filename=%s,aio=%s,cache.direct=%s",
                                    path, aio, direct ? "on" : "off");
    g_assert_no_error(err);
    BlockNodeInfo info;
    bdrv_query_node_info(bs, &info);
    g_assert_cmpstr(info.aio_requested, ==, aio);
    char *engine = g_strdup(info.aio);
    *punt = json_object_get_boolean_member(info.driver_specific, "async-punt");
    /* fixed-files=auto: a registered file exactly on io_uring rings (punting or not) */
    g_assert_cmpint(json_object_get_boolean_member(info.driver_specific, "fixed-file"), ==,
                    !strcmp(engine, "io_uring"));
    /*
     * fixed-buffers=auto: never through the page cache or on tmpfs, where
     * the kernel's copy from a registered buffer is the slower one (with
     * O_DIRECT elsewhere it depends on RLIMIT_MEMLOCK).
     */
    struct statfs sf;
    g_assert_cmpint(statfs(dir, &sf), ==, 0);
    if (!direct || sf.f_type == TMPFS_MAGIC || strcmp(engine, "io_uring")) {
        g_assert_false(json_object_get_boolean_member(info.driver_specific, "fixed-buffers"));
    }
    /* Synchronous low-depth I/O is for RAM-backed block devices only. */
    g_assert_cmpint(json_object_get_int_member(info.driver_specific, "sync-below"), ==, 0);
    g_assert_false(json_object_get_boolean_member(info.driver_specific, "sync-race"));
    bdrv_node_info_clear(&info);
    bdrv_unref(bs);
    g_unlink(path);
    g_free(path);
    return engine;
}

/*
 * aio=auto's rule (raw_auto_engine()): io_uring where the file takes
 * non-blocking I/O; otherwise inline for a file in RAM (tmpfs here), native
 * with O_DIRECT, io_uring with IOSQE_ASYNC.
 */
static void check_auto(const char *dir, bool direct, bool nowait)
{
    struct statfs sf;
    g_assert_cmpint(statfs(dir, &sf), ==, 0);
    if (sf.f_type != (nowait ? EXT4_SUPER_MAGIC : TMPFS_MAGIC)) {
        g_test_skip(nowait ? "scratch dir is not on ext4" : "/dev/shm is not tmpfs");
        return;
    }
    bool uring = engine_ok("io_uring"), native = engine_ok("native"), punt;
    const char *want = nowait && uring ? "io_uring" :
                       !nowait ? "inline" :                /* tmpfs is in RAM */
                       direct && native ? "native" :
                       uring ? "io_uring" : "threads";
    char *e = open_engine(dir, "auto", direct, &punt);
    g_assert_cmpstr(e, ==, want);
    /* IOSQE_ASYNC exactly where io_uring cannot complete inline. */
    g_assert_cmpint(punt, ==, !strcmp(want, "io_uring") && !nowait);
    g_free(e);
}

static void test_auto_ext4_buffered(void)
{
    check_auto(scratch_dir, false, true);
}

static void test_auto_ext4_direct(void)
{
    check_auto(scratch_dir, true, true);
}

static void test_auto_tmpfs_buffered(void)
{
    if (!tmpfs_dir) {
        g_test_skip("no /dev/shm");
        return;
    }
    check_auto(tmpfs_dir, false, false);
}

static void test_auto_tmpfs_direct(void)
{
    if (!tmpfs_dir) {
        g_test_skip("no /dev/shm");
        return;
    }
    check_auto(tmpfs_dir, true, false);
}

/*
 * A RAM-backed block device with O_DIRECT (zram): io_uring, synchronous
 * below 12 outstanding requests, IOSQE_ASYNC; explicit io_uring gets no
 * synchronous path. Read-only, so a zram0 in use (as swap, say) is safe.
 */
static void test_auto_zram_direct(void)
{
    struct stat st;
    uint64_t size = 0;
    int fd = open("/dev/zram0", O_RDONLY);

    if (fd >= 0) {
        ioctl(fd, BLKGETSIZE64, &size);
        close(fd);
    }
    if (fd < 0 || size < 65536 || stat("/dev/zram0", &st) < 0 || !engine_ok("io_uring")) {
        g_test_skip("no readable, sized /dev/zram0 or no io_uring");
        return;
    }
    static const struct { const char *aio; int sync_below; } cases[] = {
        { "auto", 12 }, { "io_uring", 0 },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        Error *err = NULL;
        BlockDriverState *bs = open_fmt(&err, "driver=host_device,filename=/dev/zram0,"
                                        "aio=%s,cache.direct=on,read-only=on", cases[i].aio);
        g_assert_no_error(err);
        BlockNodeInfo info;
        bdrv_query_node_info(bs, &info);
        g_assert_cmpstr(info.aio, ==, "io_uring");
        g_assert_true(json_object_get_boolean_member(info.driver_specific, "async-punt"));
        g_assert_cmpint(json_object_get_int_member(info.driver_specific, "sync-below"), ==,
                        cases[i].sync_below);
        /* auto times the split against all-synchronous on the live stream */
        g_assert_cmpint(json_object_get_boolean_member(info.driver_specific, "sync-race"), ==,
                        cases[i].sync_below != 0);
        bdrv_node_info_clear(&info);

        /* The same bytes through the engine as through a plain read. */
        g_autofree uint8_t *buf = g_malloc(8192);     /* the block layer bounces */
        g_autofree uint8_t *ref = g_malloc(8192);
        fd = open("/dev/zram0", O_RDONLY);
        g_assert_cmpint(pread(fd, ref, 8192, 4096), ==, 8192);
        close(fd);
        g_assert_cmpint(bdrv_pread(bs, 4096, 8192, buf, 0), ==, 0);
        g_assert_cmpmem(buf, 8192, ref, 8192);

        /*
         * Into a buffer 512-aligned but not page aligned, which zram
         * accepts and then fills whole pages around (file-posix bounces):
         * the bytes around it stay as they were.
         */
        uint8_t *area = NULL;
        g_assert_cmpint(posix_memalign((void **)&area, 4096, 4 * 4096), ==, 0);
        memset(area, 0xaa, 4 * 4096);
        g_assert_cmpint(bdrv_pread(bs, 4096, 8192, area + 512, 0), ==, 0);
        g_assert_cmpmem(area + 512, 8192, ref, 8192);
        for (size_t j = 0; j < 4 * 4096; j++) {
            if (j < 512 || j >= 512 + 8192) {
                g_assert_cmpuint(area[j], ==, 0xaa);
            }
        }
        free(area);
        bdrv_unref(bs);
    }
}

/* Explicit io_uring: IOSQE_ASYNC exactly where the file cannot take non-blocking I/O. */
static void test_uring_async_punt(void)
{
    if (!engine_ok("io_uring")) {
        g_test_skip("no io_uring");
        return;
    }
    bool punt;
    char *e = open_engine(scratch_dir, "io_uring", false, &punt);
    g_assert_cmpstr(e, ==, "io_uring");
    g_assert_false(punt);
    g_free(e);
    if (tmpfs_dir) {
        e = open_engine(tmpfs_dir, "io_uring", false, &punt);
        g_assert_cmpstr(e, ==, "io_uring");
        g_assert_true(punt);
        g_free(e);
    }
    /* other engines never carry it */
    e = open_engine(scratch_dir, "threads", false, &punt);
    g_assert_false(punt);
    g_free(e);
}

static void test_aio_explicit(void)
{
    static const char *const engines[] = { "threads", "native", "io_uring" };
    char *path = make_file(scratch_dir, "explicit.img", 65536);
    for (size_t i = 0; i < G_N_ELEMENTS(engines); i++) {
        Error *err = NULL;
        BlockDriverState *bs = open_fmt(&err, "driver=file,filename=%s,aio=%s,cache.direct=on",
                                        path, engines[i]);
        if (!engine_ok(engines[i])) {
            g_assert_null(bs);
            g_assert_nonnull(err);
            g_clear_error(&err);
            continue;
        }
        g_assert_no_error(err);
        BlockNodeInfo info;
        bdrv_query_node_info(bs, &info);
        g_assert_cmpstr(info.aio, ==, engines[i]);
        g_assert_cmpstr(info.aio_requested, ==, engines[i]);
        bdrv_node_info_clear(&info);
        bdrv_unref(bs);
    }
    g_unlink(path);
    g_free(path);
}

static void expect_open_error(const char *opts_fmt, const char *path, const char *msg)
{
    Error *err = NULL;
    BlockDriverState *bs = open_fmt(&err, opts_fmt, path);
    g_assert_null(bs);
    g_assert_nonnull(err);
    g_assert_cmpstr(error_get_pretty(err), ==, msg);
    error_free(err);
}

static void test_aio_option_errors(void)
{
    char *path = make_file(scratch_dir, "opterr.img", 65536);
    /* A child's option is named by its dotted key, as the schema's errors name it. */
    expect_open_error("driver=raw,file.driver=file,file.filename=%s,file.aio=threads,"
                      "file.sqpoll=on", path, "Parameter 'file.sqpoll' requires aio=io_uring");
    /* SQPOLL tuning without SQPOLL would be ignored: refused, whatever the engine. */
    expect_open_error("driver=file,filename=%s,aio=io_uring,sq-thread-cpu=0", path,
                      "Parameter 'sq-thread-cpu' requires sqpoll=on");
    expect_open_error("driver=raw,file.driver=file,file.filename=%s,file.sq-thread-idle=5",
                      path, "Parameter 'file.sq-thread-idle' requires sqpoll=on");
    if (g_file_test("/sys/devices/system/cpu/online", G_FILE_TEST_EXISTS)) {
        /* Checked before any ring exists: no io_uring needed to see the message. */
        Error *err = NULL;
        g_assert_null(open_fmt(&err, "driver=file,filename=%s,aio=io_uring,sqpoll=on,"
                               "sq-thread-cpu=100000", path));
        g_assert_nonnull(err);
        g_assert_true(g_str_has_prefix(error_get_pretty(err),
                                       "Parameter 'sq-thread-cpu': CPU 100000 is not online "
                                       "(online CPUs: "));
        error_free(err);
    }
    expect_open_error("driver=file,filename=%s,aio=threads,fixed-files=on", path,
                      "Parameter 'fixed-files' requires aio=io_uring");
    /* Checked before the file is opened: the option error wins over a missing file. */
    g_autofree char *missing = g_strdup_printf("%s.missing", path);
    expect_open_error("driver=file,filename=%s,aio=threads,fixed-files=on", missing,
                      "Parameter 'fixed-files' requires aio=io_uring");
    expect_open_error("driver=file,filename=%s,aio=io_uring,sq-thread-idle=5", missing,
                      "Parameter 'sq-thread-idle' requires sqpoll=on");
    expect_open_error("driver=file,filename=%s,aio=threads,sqpoll=on", path,
                      "Parameter 'sqpoll' requires aio=io_uring");
    expect_open_error("driver=file,filename=%s,aio=threads,sq-thread-idle=5", path,
                      "Parameter 'sq-thread-idle' requires aio=io_uring");
    expect_open_error("driver=file,filename=%s,aio=threads,aio-queue-depth=8", path,
                      "Parameter 'aio-queue-depth' requires aio=io_uring");
    if (engine_ok("native")) {
        expect_open_error("driver=file,filename=%s,aio=native,cache.direct=on,iopoll=on", path,
                          "Parameter 'iopoll' requires aio=io_uring");
        expect_open_error("driver=file,filename=%s,aio=native", path,
                          "aio=native was specified, but it requires cache.direct=on, "
                          "which was not specified.");
        /* native takes a queue depth */
        Error *err = NULL;
        BlockDriverState *bs = open_fmt(&err, "driver=file,filename=%s,aio=native,"
                                        "cache.direct=on,aio-queue-depth=16", path);
        g_assert_no_error(err);
        bdrv_unref(bs);
    }
    /* values equal to the schema defaults choose nothing, so they do not conflict */
    Error *derr = NULL;
    BlockDriverState *dbs = open_fmt(&derr, "driver=file,filename=%s,aio=threads,sqpoll=off,"
                                     "aio-queue-depth=0,fixed-buffers=auto,sq-thread-cpu=-1,"
                                     "sq-thread-idle=1000", path);
    g_assert_no_error(derr);
    bdrv_unref(dbs);
    /* with auto, io_uring options are fine whatever engine auto picks */
    Error *err = NULL;
    BlockDriverState *bs = open_fmt(&err, "driver=file,filename=%s,sqpoll=off,restrict=auto",
                                    path);
    g_assert_no_error(err);
    bdrv_unref(bs);
    g_unlink(path);
    g_free(path);
}

/* Opens the tree qapi_drive_to_blockdev() makes of a -drive string. */
static BlockDriverState *open_drive(Error **errp, const char *drive_fmt, const char *path)
{
    char *s = g_strdup_printf(drive_fmt, path);
    JsonObject *drive = keyval_parse(s, NULL, errp);
    g_free(s);
    g_assert_nonnull(drive);
    JsonObject *tree = qapi_drive_to_blockdev(drive, errp);
    json_object_unref(drive);
    g_assert_nonnull(tree);
    BlockDriverState *bs = bdrv_open(tree, errp);
    json_object_unref(tree);
    return bs;
}

/*
 * The -drive expansion fills every schema default into the file node; those
 * must not count as io_uring options chosen by the user.
 */
static void test_aio_drive_defaults(void)
{
    char *path = make_file(scratch_dir, "drive.img", 65536);
    Error *err = NULL;
    BlockDriverState *bs = open_drive(&err, "file=%s,format=raw,aio=threads", path);
    g_assert_no_error(err);
    BlockNodeInfo info;
    bdrv_query_node_info(bs, &info);
    g_assert_cmpstr(info.aio, ==, "threads");
    g_assert_cmpstr(info.aio_requested, ==, "threads");
    bdrv_node_info_clear(&info);
    bdrv_unref(bs);

    bs = open_drive(&err, "file=%s,format=raw,aio=threads,aio-queue-depth=8", path);
    g_assert_null(bs);
    g_assert_nonnull(err);
    /* The option belongs to the file node under the raw node: named by its dotted key. */
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "Parameter 'file.aio-queue-depth' requires aio=io_uring");
    g_clear_error(&err);
    bs = open_drive(&err, "file=%s,format=raw,aio=threads,fixed-files=on", path);
    g_assert_null(bs);
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "Parameter 'file.fixed-files' requires aio=io_uring");
    g_clear_error(&err);
    g_unlink(path);
    g_free(path);
}

/*
 * Explicit io_uring on an O_DIRECT file without non-blocking I/O (where auto
 * would pick native): one warning, at open.
 */
static void test_uring_punt_warning(void)
{
    if (!engine_ok("io_uring") || !tmpfs_dir) {
        g_test_skip("needs io_uring and /dev/shm");
        return;
    }
    if (g_test_subprocess()) {
        char *path = make_file(tmpfs_dir, "punt.img", 65536);
        Error *err = NULL;
        BlockDriverState *bs = open_fmt(&err, "driver=file,filename=%s,aio=io_uring,"
                                        "cache.direct=on", path);
        g_assert_no_error(err);
        char buf[4096];
        for (int i = 0; i < 10; i++) {
            g_assert_cmpint(bdrv_pread(bs, 0, 4096, buf, 0), ==, 0);
        }
        BlockNodeInfo info;
        bdrv_query_node_info(bs, &info);
        g_assert_cmpstr(info.aio, ==, "io_uring");
        g_assert_cmpint(info.nowait, ==, 0);
        bdrv_node_info_clear(&info);
        bdrv_unref(bs);
        g_unlink(path);
        g_free(path);
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_passed();
    g_test_trap_assert_stderr("*warning: '*punt.img' cannot take non-blocking I/O: io_uring "
                              "hands every request to a kernel worker thread*"
                              "aio=auto would pick aio=inline here*");
}

/* ---- open errors ---------------------------------------------------------------------------- */

static void test_open_errors(void)
{
    char *path = make_file(scratch_dir, "regular.img", 4096);
    char *msg = g_strdup_printf("'host_device' driver requires '%s' to be either "
                                "a character or block device", path);
    expect_open_error("driver=host_device,filename=%s", path, msg);
    g_free(msg);
    msg = g_strdup_printf("'%s' is a directory", scratch_dir);
    expect_open_error("driver=file,filename=%s,read-only=on", scratch_dir, msg);
    g_free(msg);
    expect_open_error("driver=file,filename=%s,force-share=on", path,
                      "force-share=on can only be used with read-only images");

    /* a file we may not write: read-write fails, auto-read-only falls back */
    if (geteuid() != 0) {
        g_assert_cmpint(chmod(path, 0400), ==, 0);
        Error *err = NULL;
        BlockDriverState *bs = open_fmt(&err, "driver=file,filename=%s", path);
        g_assert_null(bs);
        g_clear_error(&err);
        bs = open_fmt(&err, "driver=file,filename=%s,auto-read-only=on", path);
        g_assert_no_error(err);
        g_assert_true(bdrv_is_read_only(bs));
        bdrv_unref(bs);
    }
    g_unlink(path);
    g_free(path);
}

/* ---- locks as /proc/locks shows them ---------------------------------------------------------- */

/*
 * The protocol's bytes (100..104, 200..204) of path's inode that OFD locks
 * cover, one entry per lock and byte, ascending; "W" marks an exclusive
 * lock. /proc/locks merges one description's adjacent ranges ("100 101").
 */
static char *held_bytes(const char *path)
{
    struct stat st;
    g_assert_cmpint(stat(path, &st), ==, 0);
    char *locks = NULL;
    g_assert_true(g_file_get_contents("/proc/locks", &locks, NULL, NULL));
    /*
     * Match the device as well as the inode: a test running in parallel may
     * lock a file with the same inode number on another filesystem.
     */
    char *ino = g_strdup_printf(" %02x:%02x:%lu ", major(st.st_dev), minor(st.st_dev),
                                (unsigned long)st.st_ino);
    int count[2][300] = { { 0 } };
    char **lines = g_strsplit(locks, "\n", -1);
    for (int i = 0; lines[i]; i++) {
        const char *at = strstr(lines[i], ino);
        long start, end;
        if (!strstr(lines[i], "OFDLCK") || strstr(lines[i], "->") || !at ||
            sscanf(at + strlen(ino), "%ld %ld", &start, &end) != 2) {
            continue;
        }
        bool excl = strstr(lines[i], " WRITE ") != NULL;
        for (long b = MAX(start, 100); b <= MIN(end, 204); b++) {
            count[excl][b]++;
        }
    }
    GString *out = g_string_new(NULL);
    for (int b = 100; b <= 204; b++) {
        for (int excl = 0; excl < 2; excl++) {
            for (int n = 0; n < count[excl][b]; n++) {
                g_string_append_printf(out, "%s%s%d", out->len ? " " : "", excl ? "W" : "", b);
            }
        }
    }
    g_strfreev(lines);
    g_free(ino);
    g_free(locks);
    return g_string_free(out, FALSE);
}

#define assert_held(path, expect)                                                     \
    do {                                                                              \
        char *held_ = held_bytes(path);                                               \
        g_assert_cmpstr(held_, ==, expect);                                           \
        g_free(held_);                                                                \
    } while (0)

/* A writer holds 100 (consistent read), 101 (write), 201 (no other writer); readers 100. */
static void test_locks_proc(void)
{
    static const char *const engines[] = { "threads", "native", "io_uring" };
    char *path = make_file(scratch_dir, "locks.img", 65536);
    for (size_t e = 0; e < G_N_ELEMENTS(engines); e++) {
        if (!engine_ok(engines[e])) {
            continue;
        }
        const char *extra = !strcmp(engines[e], "io_uring") ? ",fixed-files=on" : "";
        Error *err = NULL;
        BlockDriverState *bs = open_fmt(&err, "driver=file,filename=%s,aio=%s,cache.direct=on%s",
                                        path, engines[e], extra);
        g_assert_no_error(err);
        assert_held(path, "100 101 201");
        BlockDriverState *ro = open_fmt(&err, "driver=file,filename=%s,read-only=on", path);
        g_assert_no_error(err);
        assert_held(path, "100 100 101 201");
        BlockDriverState *fs = open_fmt(&err, "driver=file,filename=%s,read-only=on,"
                                        "force-share=on", path);
        g_assert_no_error(err);
        assert_held(path, "100 100 100 101 201");
        bdrv_unref(fs);
        bdrv_unref(ro);
        assert_held(path, "100 101 201");
        /* closing releases every lock, also with a registered (fixed) file */
        bdrv_unref(bs);
        assert_held(path, "");
    }
    /* locking=off takes none */
    Error *err = NULL;
    BlockDriverState *bs = open_fmt(&err, "driver=file,filename=%s,locking=off", path);
    g_assert_no_error(err);
    assert_held(path, "");
    bdrv_unref(bs);
    g_unlink(path);
    g_free(path);
}

/* Another open file description (like another process) holding one byte, shared or exclusive. */
static int peer_lock(const char *path, short type, int byte)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };
    g_assert_cmpint(fcntl(fd, F_OFD_SETLK, &fl), ==, 0);
    return fd;
}

/* Would the peer's F_WRLCK test on byte (QEMU's check) find it taken? */
static bool peer_sees(int fd, int byte)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };
    g_assert_cmpint(fcntl(fd, F_OFD_GETLK, &fl), ==, 0);
    return fl.l_type != F_UNLCK;
}

static void expect_lock_error(const char *opts_fmt, const char *path, const char *perm)
{
    Error *err = NULL;
    BlockDriverState *bs = open_fmt(&err, opts_fmt, path);
    g_assert_null(bs);
    char *expect = g_strdup_printf("Failed to get \"%s\" lock\n"
                                   "Is another process using the image [%s]?\n", perm, path);
    g_assert_cmpstr(error_get_pretty(err), ==, expect);
    g_free(expect);
    g_clear_error(&err);
}

/* The other side of the protocol, played by hand as a QEMU process would. */
static void test_locks_qemu_protocol(void)
{
    char *path = make_file(scratch_dir, "proto.img", 65536);
    const char *rw = "driver=file,filename=%s";
    const char *ro = "driver=file,filename=%s,read-only=on";
    const char *fs = "driver=file,filename=%s,read-only=on,force-share=on";
    Error *err = NULL;

    /* a QEMU writer (qemu-io: 100 and 101): we cannot write, but can read */
    int peer = peer_lock(path, F_RDLCK, 101);
    expect_lock_error(rw, path, "write");
    assert_held(path, "101");       /* the failed open left nothing behind */
    BlockDriverState *bs = open_fmt(&err, ro, path);
    g_assert_no_error(err);
    bdrv_unref(bs);
    bs = open_fmt(&err, fs, path);
    g_assert_no_error(err);
    bdrv_unref(bs);
    close(peer);

    /* a QEMU node that lets nobody else write (201) */
    peer = peer_lock(path, F_RDLCK, 201);
    expect_lock_error(rw, path, "write");
    bs = open_fmt(&err, fs, path);
    g_assert_no_error(err);
    bdrv_unref(bs);
    close(peer);

    /* one that lets nobody else read consistently (200): not even force-share reads */
    peer = peer_lock(path, F_RDLCK, 200);
    expect_lock_error(ro, path, "consistent read");
    expect_lock_error(fs, path, "consistent read");
    close(peer);

    /* an exclusive lock (older ringblk) is in the way too */
    peer = peer_lock(path, F_WRLCK, 100);
    expect_lock_error(fs, path, "consistent read");
    close(peer);

    /* what a QEMU process checks sees our writer, and only the writer */
    peer = open(path, O_RDWR | O_CLOEXEC);
    g_assert_cmpint(peer, >=, 0);
    bs = open_fmt(&err, rw, path);
    g_assert_no_error(err);
    g_assert_true(peer_sees(peer, 100));        /* wants to unshare consistent read */
    g_assert_true(peer_sees(peer, 101));        /* wants to unshare write */
    g_assert_true(peer_sees(peer, 201));        /* wants to write */
    g_assert_false(peer_sees(peer, 200));       /* wants to read: allowed */
    g_assert_false(peer_sees(peer, 203));       /* wants to resize */
    bdrv_unref(bs);
    bs = open_fmt(&err, fs, path);
    g_assert_no_error(err);
    g_assert_true(peer_sees(peer, 100));
    g_assert_false(peer_sees(peer, 101));
    g_assert_false(peer_sees(peer, 201));       /* force-share unshares nothing */
    bdrv_unref(bs);
    g_assert_false(peer_sees(peer, 100));
    close(peer);

    /* create refuses a QEMU writer or resizer, and leaves the file alone */
    static const struct { int byte; const char *perm; } busy[] = {
        { 101, "write" }, { 201, "write" }, { 103, "resize" }, { 203, "resize" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(busy); i++) {
        peer = peer_lock(path, F_RDLCK, busy[i].byte);
        g_assert_cmpint(bdrv_create_file(path, 4096, "off", &err), ==, -EAGAIN);
        char *expect = g_strdup_printf("Failed to get \"%s\" lock\n"
                                       "Is another process using the image [%s]?\n",
                                       busy[i].perm, path);
        g_assert_cmpstr(error_get_pretty(err), ==, expect);
        g_free(expect);
        g_clear_error(&err);
        close(peer);
        struct stat st;
        g_assert_cmpint(stat(path, &st), ==, 0);
        g_assert_cmpint(st.st_size, ==, 65536);
    }
    /* a reader does not stop it */
    peer = peer_lock(path, F_RDLCK, 100);
    g_assert_cmpint(bdrv_create_file(path, 4096, "off", &err), ==, 0);
    g_assert_no_error(err);
    close(peer);
    assert_held(path, "");
    g_unlink(path);
    g_free(path);
}

static int reopen_json(BlockDriverState *bs, const char *json, Error **errp)
{
    JsonParser *p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, json, -1, NULL));
    int ret = bdrv_reopen(bs, json_node_get_object(json_parser_get_root(p)), errp);
    g_object_unref(p);
    return ret;
}

/* Reopen moves the locks to the new descriptor; a refused reopen keeps the old ones. */
static void test_locks_reopen(void)
{
    static const char *const engines[] = { "threads", "io_uring" };
    char *path = make_file(scratch_dir, "relock.img", 65536);
    for (size_t e = 0; e < G_N_ELEMENTS(engines); e++) {
        if (!engine_ok(engines[e])) {
            continue;
        }
        const char *extra = !strcmp(engines[e], "io_uring") ? ",fixed-files=on" : "";
        Error *err = NULL;
        BlockDriverState *bs = open_fmt(&err, "driver=file,filename=%s,aio=%s%s", path,
                                        engines[e], extra);
        g_assert_no_error(err);
        assert_held(path, "100 101 201");

        g_assert_cmpint(reopen_json(bs, "{\"read-only\": true}", &err), ==, 0);
        g_assert_no_error(err);
        assert_held(path, "100");
        /* now another writer may come, and keeps us from writing again */
        BlockDriverState *w = open_fmt(&err, "driver=file,filename=%s", path);
        g_assert_no_error(err);
        g_assert_cmpint(reopen_json(bs, "{\"read-only\": false}", &err), ==, -EAGAIN);
        g_assert_true(g_str_has_prefix(error_get_pretty(err),
                                       "Failed to get \"write\" lock\nIs another process"));
        g_clear_error(&err);
        g_assert_true(bdrv_is_read_only(bs));
        assert_held(path, "100 100 101 201");
        bdrv_unref(w);

        g_assert_cmpint(reopen_json(bs, "{\"read-only\": false}", &err), ==, 0);
        g_assert_no_error(err);
        assert_held(path, "100 101 201");
        /* read-write to read-write (a cache change) hands the locks over to itself */
        g_assert_cmpint(reopen_json(bs, "{\"cache\": {\"direct\": true}}", &err), ==, 0);
        g_assert_no_error(err);
        assert_held(path, "100 101 201");
        g_assert_cmpint(reopen_json(bs, "{\"force-share\": true}", &err), ==, -EINVAL);
        g_assert_cmpstr(error_get_pretty(err), ==,
                        "force-share=on can only be used with read-only images");
        g_clear_error(&err);
        assert_held(path, "100 101 201");
        bdrv_unref(bs);
        assert_held(path, "");
    }
    g_unlink(path);
    g_free(path);
}

/* ---- truncate, create, block status ---------------------------------------------------------- */

static void test_truncate(void)
{
    char *path = make_file(scratch_dir, "trunc.img", 65536);
    Error *err = NULL;
    BlockDriverState *bs = open_fmt(&err, "driver=file,filename=%s", path);
    g_assert_no_error(err);
    struct stat st;

    g_assert_cmpint(bdrv_truncate(bs, 1 << 20, true, "off", &err), ==, 0);
    g_assert_cmpint(bdrv_getlength(bs), ==, 1 << 20);
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 1 << 20);
    g_assert_cmpint(st.st_blocks, ==, 0);        /* sparse */

    g_assert_cmpint(bdrv_truncate(bs, 2 << 20, true, "full", &err), ==, 0);
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 2 << 20);
    g_assert_cmpint(st.st_blocks * 512, >=, 1 << 20);

    g_assert_cmpint(bdrv_truncate(bs, 3 << 20, true, "falloc", &err), ==, 0);
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_blocks * 512, >=, 2 << 20);

    g_assert_cmpint(bdrv_truncate(bs, 4096, true, "falloc", &err), ==, -ENOTSUP);
    g_assert_cmpstr(error_get_pretty(err), ==, "Cannot use preallocation for shrinking files");
    g_clear_error(&err);
    g_assert_cmpint(bdrv_truncate(bs, 4096, true, "metadata", &err), ==, -ENOTSUP);
    g_assert_cmpstr(error_get_pretty(err), ==, "Unsupported preallocation mode 'metadata'");
    g_clear_error(&err);
    g_assert_cmpint(bdrv_truncate(bs, -1, true, "off", &err), ==, -EINVAL);
    g_clear_error(&err);

    g_assert_cmpint(bdrv_truncate(bs, 4096, true, "off", &err), ==, 0);
    g_assert_cmpint(bdrv_getlength(bs), ==, 4096);
    char buf[8192];
    g_assert_cmpint(bdrv_pread(bs, 0, 4096, buf, 0), ==, 0);
    g_assert_cmpint(bdrv_pread(bs, 0, 4097, buf, 0), ==, -EIO);
    bdrv_unref(bs);

    bs = open_fmt(&err, "driver=file,filename=%s,read-only=on", path);
    g_assert_cmpint(bdrv_truncate(bs, 8192, true, "off", &err), ==, -EACCES);
    g_assert_cmpstr(error_get_pretty(err), ==, "Image is read-only");
    g_clear_error(&err);
    bdrv_unref(bs);
    g_unlink(path);
    g_free(path);
}

static void test_create(void)
{
    char *path = g_build_filename(scratch_dir, "created.img", NULL);
    Error *err = NULL;
    struct stat st;
    g_assert_cmpint(bdrv_create_file(path, 1 << 20, "off", &err), ==, 0);
    g_assert_no_error(err);
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 1 << 20);
    g_assert_cmpint(st.st_blocks, ==, 0);

    /* create again truncates: old data is gone */
    g_assert_true(g_file_set_contents(path, "hello", 5, NULL));
    g_assert_cmpint(bdrv_create_file(path, 65536, "full", &err), ==, 0);
    char *data;
    gsize len;
    g_assert_true(g_file_get_contents(path, &data, &len, NULL));
    g_assert_cmpuint(len, ==, 65536);
    for (gsize i = 0; i < len; i++) {
        g_assert_cmpint(data[i], ==, 0);
    }
    g_free(data);
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_blocks * 512, >=, 65536);

    g_assert_cmpint(bdrv_create_file(path, -1, "off", &err), ==, -EINVAL);
    g_assert_cmpstr(error_get_pretty(err), ==, "Image size cannot be negative");
    g_clear_error(&err);

    /* refused while another node writes the image */
    BlockDriverState *bs = open_fmt(&err, "driver=file,filename=%s", path);
    g_assert_no_error(err);
    g_assert_cmpint(bdrv_create_file(path, 4096, "off", &err), ==, -EAGAIN);
    g_assert_true(g_str_has_prefix(error_get_pretty(err), "Failed to get \"write\" lock"));
    g_clear_error(&err);
    bdrv_unref(bs);

    char *bad = g_build_filename(scratch_dir, "no-such-dir", "x.img", NULL);
    g_assert_cmpint(bdrv_create_file(bad, 4096, "off", &err), ==, -ENOENT);
    g_clear_error(&err);
    g_free(bad);
    g_unlink(path);
    g_free(path);
}

static void test_block_status(void)
{
    char *path = make_file(scratch_dir, "sparse.img", 1 << 20);
    Error *err = NULL;
    BlockDriverState *bs = open_fmt(&err, "driver=file,filename=%s,discard=unmap", path);
    g_assert_no_error(err);
    char buf[65536];
    memset(buf, 1, sizeof(buf));
    g_assert_cmpint(bdrv_pwrite(bs, 262144, 65536, buf, 0), ==, 0);
    g_assert_cmpint(bdrv_flush(bs), ==, 0);

    int64_t pnum;
    int status;
    g_assert_cmpint(bdrv_block_status(bs, 0, 1 << 20, &pnum, &status), ==, 0);
    g_assert_cmpint(status, ==, BDRV_BLOCK_ZERO);
    g_assert_cmpint(pnum, ==, 262144);
    g_assert_cmpint(bdrv_block_status(bs, 262144, 1 << 20, &pnum, &status), ==, 0);
    g_assert_cmpint(status, ==, BDRV_BLOCK_DATA);
    g_assert_cmpint(pnum, ==, 65536);
    g_assert_cmpint(bdrv_block_status(bs, 327680, 1 << 20, &pnum, &status), ==, 0);
    g_assert_cmpint(status, ==, BDRV_BLOCK_ZERO);
    g_assert_cmpint(pnum, ==, (1 << 20) - 327680);
    /* bounded by the request */
    g_assert_cmpint(bdrv_block_status(bs, 262144 + 4096, 8192, &pnum, &status), ==, 0);
    g_assert_cmpint(pnum, ==, 8192);
    g_assert_cmpint(bdrv_block_status(bs, 1 << 20, 4096, &pnum, &status), <, 0);

    /* after a discard the range is a hole again */
    g_assert_cmpint(bdrv_pdiscard(bs, 262144, 65536), ==, 0);
    g_assert_cmpint(bdrv_block_status(bs, 0, 1 << 20, &pnum, &status), ==, 0);
    g_assert_cmpint(status, ==, BDRV_BLOCK_ZERO);
    g_assert_cmpint(pnum, ==, 1 << 20);
    bdrv_unref(bs);

    /* discard=ignore (the default) leaves the data */
    bs = open_fmt(&err, "driver=file,filename=%s", path);
    g_assert_cmpint(bdrv_pwrite(bs, 0, 4096, buf, 0), ==, 0);
    g_assert_cmpint(bdrv_pdiscard(bs, 0, 4096), ==, 0);
    memset(buf, 0, 4096);
    g_assert_cmpint(bdrv_pread(bs, 0, 4096, buf, 0), ==, 0);
    g_assert_cmpint(buf[0], ==, 1);
    bdrv_unref(bs);
    g_unlink(path);
    g_free(path);
}

/* detect-zeroes turns all-zero writes into write zeroes (with unmap: holes). */
static void test_detect_zeroes(void)
{
    char *path = make_file(scratch_dir, "dz.img", 1 << 20);
    Error *err = NULL;
    BlockDriverState *bs = open_fmt(&err, "driver=file,filename=%s,discard=unmap,"
                                    "detect-zeroes=unmap", path);
    g_assert_no_error(err);
    char *buf = g_malloc(65536);
    memset(buf, 3, 65536);
    g_assert_cmpint(bdrv_pwrite(bs, 0, 65536, buf, 0), ==, 0);
    memset(buf, 0, 65536);
    g_assert_cmpint(bdrv_pwrite(bs, 0, 65536, buf, 0), ==, 0);
    const BlockAcctStats *st = bdrv_get_stats(bs);
    g_assert_cmpuint(st->nr_ops[BLOCK_ACCT_WRITE], ==, 1);
    g_assert_cmpuint(st->nr_ops[BLOCK_ACCT_ZEROES], ==, 1);
    int64_t pnum;
    int status;
    g_assert_cmpint(bdrv_block_status(bs, 0, 1 << 20, &pnum, &status), ==, 0);
    g_assert_cmpint(status, ==, BDRV_BLOCK_ZERO);
    g_assert_cmpint(pnum, ==, 1 << 20);
    memset(buf, 9, 65536);
    g_assert_cmpint(bdrv_pread(bs, 0, 65536, buf, 0), ==, 0);
    for (int i = 0; i < 65536; i++) {
        g_assert_cmpint(buf[i], ==, 0);
    }
    bdrv_unref(bs);

    /* off (the default): a zero write is a write */
    bs = open_fmt(&err, "driver=file,filename=%s", path);
    g_assert_cmpint(bdrv_pwrite(bs, 0, 4096, buf, 0), ==, 0);
    g_assert_cmpuint(bdrv_get_stats(bs)->nr_ops[BLOCK_ACCT_WRITE], ==, 1);
    g_assert_cmpuint(bdrv_get_stats(bs)->nr_ops[BLOCK_ACCT_ZEROES], ==, 0);
    bdrv_unref(bs);
    g_free(buf);
    g_unlink(path);
    g_free(path);
}

/* ---- reopen ------------------------------------------------------------------------------------ */

static void test_reopen(void)
{
    char *path = make_file(scratch_dir, "reopen.img", 65536);
    Error *err = NULL;
    BlockDriverState *bs = open_fmt(&err, "driver=raw,file.driver=file,file.filename=%s,"
                                    "read-only=on,node-name=top,file.node-name=bottom", path);
    g_assert_no_error(err);
    char buf[4096];
    memset(buf, 7, sizeof(buf));
    g_assert_cmpint(bdrv_pwrite(bs, 0, 4096, buf, 0), ==, -EPERM);

    JsonObject *c = json_object_new();
    json_object_set_boolean_member(c, "read-only", false);
    JsonObject *cache = json_object_new();
    json_object_set_boolean_member(cache, "direct", true);
    json_object_set_object_member(c, "cache", cache);
    g_assert_cmpint(bdrv_reopen(bs, c, &err), ==, 0);
    g_assert_no_error(err);
    g_assert_false(bdrv_is_read_only(bs));
    BlockNodeInfo info;
    bdrv_query_node_info(bs, &info);
    g_assert_true(info.cache_direct);
    g_assert_false(info.read_only);
    g_assert_cmpuint(info.request_alignment, >=, 512);
    bdrv_node_info_clear(&info);
    g_assert_cmpint(bdrv_pwrite(bs, 100, 1000, buf, 0), ==, 0);

    /* a failed reopen leaves everything as it was */
    json_object_unref(c);
    c = json_object_new();
    json_object_set_string_member(c, "driver", "null-co");
    g_assert_cmpint(bdrv_reopen(bs, c, &err), ==, -EINVAL);
    g_assert_cmpstr(error_get_pretty(err), ==, "Cannot change the option 'driver'");
    g_clear_error(&err);
    json_object_unref(c);
    c = json_object_new();
    json_object_set_string_member(c, "filename", "/elsewhere");
    g_assert_cmpint(bdrv_reopen(bs, c, &err), ==, -EINVAL);
    g_assert_cmpstr(error_get_pretty(err), ==, "Cannot change the option 'filename'");
    g_clear_error(&err);
    g_assert_false(bdrv_is_read_only(bs));
    g_assert_cmpint(bdrv_pwrite(bs, 2000, 1000, buf, 0), ==, 0);

    /* unknown keys and bad values, also for the child; keyval strings accepted */
    static const struct { const char *json, *msg; } bad[] = {
        { "{\"bogus\": \"1\"}", "Cannot change the option 'bogus'" },
        { "{\"cache\": {\"direct\": \"maybe\"}}",
          "Parameter 'cache.direct' expects 'on' or 'off'" },
        { "{\"cache\": {\"other\": \"on\"}}", "Cannot change the option 'cache.other'" },
        { "{\"file\": {\"bogus\": \"on\"}}", "Cannot change the option 'file.bogus'" },
        { "{\"file\": {\"read-only\": \"yes\"}}",
          "Parameter 'file.read-only' expects 'on' or 'off'" },
        { "{\"file\": {\"read-only\": \"on\"}}",
          "Cannot make node 'top' read-write: its file 'bottom' stays read-only" },
        { "{\"file\": {\"driver\": \"host_device\"}}",
          "Cannot change the option 'file.driver'" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        JsonParser *p = json_parser_new();
        g_assert_true(json_parser_load_from_data(p, bad[i].json, -1, NULL));
        JsonObject *o = json_node_get_object(json_parser_get_root(p));
        g_assert_cmpint(bdrv_reopen(bs, o, &err), ==, -EINVAL);
        g_assert_cmpstr(error_get_pretty(err), ==, bad[i].msg);
        g_clear_error(&err);
        g_object_unref(p);
    }
    g_assert_false(bdrv_is_read_only(bs));

    /* a change for the child only */
    {
        JsonParser *p = json_parser_new();
        g_assert_true(json_parser_load_from_data(p, "{\"file\": {\"cache\": {\"direct\": \"off\"}}}",
                                                 -1, NULL));
        g_assert_cmpint(bdrv_reopen(bs, json_node_get_object(json_parser_get_root(p)), &err),
                        ==, 0);
        g_assert_no_error(err);
        g_object_unref(p);
        g_assert_cmpuint(bdrv_request_alignment(bs), ==, 1);
    }

    json_object_unref(c);
    c = json_object_new();
    json_object_set_boolean_member(c, "read-only", true);
    g_assert_cmpint(bdrv_reopen(bs, c, &err), ==, 0);
    g_assert_cmpint(bdrv_pwrite(bs, 0, 4096, buf, 0), ==, -EPERM);
    memset(buf, 0, sizeof(buf));
    g_assert_cmpint(bdrv_pread(bs, 0, 4096, buf, 0), ==, 0);
    for (int i = 0; i < 4096; i++) {
        g_assert_cmpint(buf[i], ==, (i >= 100 && i < 1100) || (i >= 2000 && i < 3000) ? 7 : 0);
    }
    json_object_unref(c);
    bdrv_unref(bs);
    g_unlink(path);
    g_free(path);
}

/* ---- host_device on a loop device (root only; skipped elsewhere) -------------------------- */

static char *loop_attach(const char *file)
{
    char *argv[] = { (char *)"losetup", (char *)"-f", (char *)"--show", (char *)file, NULL };
    char *out = NULL;
    int status = -1;
    if (geteuid() != 0 ||
        !g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDERR_TO_DEV_NULL,
                      NULL, NULL, &out, NULL, &status, NULL) ||
        !g_spawn_check_wait_status(status, NULL) || !out || !g_str_has_prefix(out, "/dev/")) {
        g_free(out);
        return NULL;
    }
    g_strstrip(out);
    return out;
}

static void loop_detach(const char *dev)
{
    char *argv[] = { (char *)"losetup", (char *)"-d", (char *)dev, NULL };
    g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL, NULL);
}

static void test_host_device(void)
{
    char *path = make_file(scratch_dir, "loop-backing.img", 16 << 20);
    char *dev = loop_attach(path);
    if (!dev) {
        g_test_skip("needs root and a free loop device");
        g_unlink(path);
        g_free(path);
        return;
    }
    static const char *const caches[] = { "off", "on" };
    for (int c = 0; c < 2; c++) {
        Error *err = NULL;
        BlockDriverState *bs = open_fmt(&err, "driver=host_device,filename=%s,cache.direct=%s,"
                                        "discard=unmap", dev, caches[c]);
        g_assert_no_error(err);
        g_assert_cmpint(bdrv_getlength(bs), ==, 16 << 20);
        BlockNodeInfo info;
        bdrv_query_node_info(bs, &info);
        g_assert_true(json_object_get_boolean_member(info.driver_specific, "block-device"));
        if (c == 1) {
            g_assert_cmpuint(info.request_alignment, >=, 512);
        }
        bdrv_node_info_clear(&info);

        char *buf = g_malloc(65536), *rb = g_malloc(65536);
        for (int i = 0; i < 65536; i++) {
            buf[i] = (char)(i * 13 + c);
        }
        g_assert_cmpint(bdrv_pwrite(bs, 1000, 60000, buf, 0), ==, 0);
        g_assert_cmpint(bdrv_flush(bs), ==, 0);
        g_assert_cmpint(bdrv_pread(bs, 1000, 60000, rb, 0), ==, 0);
        g_assert_cmpint(memcmp(buf, rb, 60000), ==, 0);

        /* BLKZEROOUT (with and without unmap), then a misaligned one */
        g_assert_cmpint(bdrv_pwrite_zeroes(bs, 4096, 8192, 0), ==, 0);
        g_assert_cmpint(bdrv_pwrite_zeroes(bs, 16384, 8192, BDRV_REQ_MAY_UNMAP), ==, 0);
        g_assert_cmpint(bdrv_pwrite_zeroes(bs, 30001, 999, 0), ==, 0);
        g_assert_cmpint(bdrv_pread(bs, 0, 65536, rb, 0), ==, 0);
        for (int i = 0; i < 65536; i++) {
            bool zero = (i >= 4096 && i < 12288) || (i >= 16384 && i < 24576) ||
                        (i >= 30001 && i < 31000);
            char want = zero ? 0 : (i >= 1000 && i < 61000) ? buf[i - 1000] : 0;
            g_assert_cmpint(rb[i], ==, want);
        }
        /* BLKDISCARD on a loop device reads back as zeroes */
        g_assert_cmpint(bdrv_pdiscard(bs, 1 << 20, 1 << 20), ==, 0);

        int64_t pnum;
        int status;
        g_assert_cmpint(bdrv_block_status(bs, 0, 16 << 20, &pnum, &status), ==, 0);
        g_assert_cmpint(status, ==, BDRV_BLOCK_DATA);
        g_assert_cmpint(pnum, ==, 16 << 20);

        g_assert_cmpint(bdrv_truncate(bs, 32 << 20, true, "off", &err), ==, -EINVAL);
        g_assert_cmpstr(error_get_pretty(err), ==, "Cannot grow device files");
        g_clear_error(&err);
        g_assert_cmpint(bdrv_truncate(bs, 16 << 20, true, "off", &err), ==, 0);
        g_free(buf);
        g_free(rb);
        bdrv_unref(bs);
    }
    loop_detach(dev);
    g_free(dev);
    g_unlink(path);
    g_free(path);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    const char *base = g_getenv("RINGBLK_TEST_DIR");
    scratch_dir = g_strdup_printf("%s/ringblk-file-posix-XXXXXX", base ? base : "/var/tmp");
    if (!g_mkdtemp(scratch_dir)) {
        g_printerr("cannot create a scratch directory\n");
        return 1;
    }
    tmpfs_dir = g_strdup("/dev/shm/ringblk-file-posix-XXXXXX");
    if (!g_mkdtemp(tmpfs_dir)) {
        g_free(tmpfs_dir);
        tmpfs_dir = NULL;
    }
    g_test_add_func("/file-posix/alignment/buffered", test_alignment_buffered);
    g_test_add_func("/file-posix/alignment/direct", test_alignment_direct);
    g_test_add_func("/file-posix/nowait-probe", test_nowait_probe);
    g_test_add_func("/file-posix/auto/ext4-buffered", test_auto_ext4_buffered);
    g_test_add_func("/file-posix/auto/ext4-direct", test_auto_ext4_direct);
    g_test_add_func("/file-posix/auto/tmpfs-buffered", test_auto_tmpfs_buffered);
    g_test_add_func("/file-posix/auto/tmpfs-direct", test_auto_tmpfs_direct);
    g_test_add_func("/file-posix/auto/zram-direct", test_auto_zram_direct);
    g_test_add_func("/file-posix/aio/io_uring-async-punt", test_uring_async_punt);
    g_test_add_func("/file-posix/aio/explicit", test_aio_explicit);
    g_test_add_func("/file-posix/aio/option-errors", test_aio_option_errors);
    g_test_add_func("/file-posix/aio/drive-defaults", test_aio_drive_defaults);
    g_test_add_func("/file-posix/aio/io_uring-punt-warning", test_uring_punt_warning);
    g_test_add_func("/file-posix/open-errors", test_open_errors);
    g_test_add_func("/file-posix/locks/proc", test_locks_proc);
    g_test_add_func("/file-posix/locks/qemu-protocol", test_locks_qemu_protocol);
    g_test_add_func("/file-posix/locks/reopen", test_locks_reopen);
    g_test_add_func("/file-posix/truncate", test_truncate);
    g_test_add_func("/file-posix/create", test_create);
    g_test_add_func("/file-posix/block-status", test_block_status);
    g_test_add_func("/file-posix/reopen", test_reopen);
    g_test_add_func("/file-posix/detect-zeroes", test_detect_zeroes);
    g_test_add_func("/file-posix/host_device/loop", test_host_device);
    int ret = g_test_run();
    g_rmdir(scratch_dir);
    if (tmpfs_dir) {
        g_rmdir(tmpfs_dir);
    }
    g_free(scratch_dir);
    g_free(tmpfs_dir);
    return ret;
}
