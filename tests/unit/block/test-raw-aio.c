/*
 * Conformance tests for the AIO engines behind include/block/raw-aio.h.
 *
 * Every test runs once per row of engine_cases[]; paths are
 * /raw-aio/<row>/<test>. Test files live in a scratch directory under
 * /var/tmp (override with RINGBLK_TEST_DIR), which must take O_DIRECT.
 * Data is checked byte by byte against a pattern that depends on the file
 * offset, so misplaced, torn or stale data all fail.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "config-host.h"
#include "block/raw-aio.h"

typedef struct EngineCase {
    const char *name;             /* path component */
    const char *engine;           /* raw_aio_ops_by_name() */
    bool direct;                  /* test files opened with O_DIRECT */
    bool batches;                 /* nothing reaches the kernel while plugged */
    bool tmpfs;                   /* files on /dev/shm (no ZERO_RANGE, no O_DIRECT needed) */
    RawAioConfig cfg;
} EngineCase;

/* One line per configuration; engines not in this build are skipped. */
static const EngineCase engine_cases[] = {
    /* row              engine     direct batches tmpfs  configuration */
    { "threads",        "threads", false, false, false, { .sq_thread_cpu = -1 } },
    { "threads-direct", "threads", true,  false, false, { .sq_thread_cpu = -1 } },
    { "threads-tmpfs",  "threads", false, false, true,  { .sq_thread_cpu = -1 } },
    { "inline",         "inline",  false, true,  false, { .sq_thread_cpu = -1 } },
    { "inline-direct",  "inline",  true,  true,  false, { .sq_thread_cpu = -1 } },
    { "inline-tmpfs",   "inline",  false, true,  true,  { .sq_thread_cpu = -1 } },
    { "native",         "native",  true,  true,  false, { .sq_thread_cpu = -1 } },
    { "native-qd16",    "native",  true,  true,  false, { .queue_depth = 16, .sq_thread_cpu = -1 } },
    { "io_uring",       "io_uring", false, true, false, { .sq_thread_cpu = -1, .fixed_files = RAW_AIO_ONOFFAUTO_OFF,
                        .fixed_buffers = RAW_AIO_ONOFFAUTO_OFF, .restrict_ops = RAW_AIO_ONOFFAUTO_OFF } },
    { "io_uring-direct", "io_uring", true, true, false, { .sq_thread_cpu = -1,
                        .fixed_buffers = RAW_AIO_ONOFFAUTO_OFF, .restrict_ops = RAW_AIO_ONOFFAUTO_OFF } },
    { "io_uring-tmpfs",  "io_uring", false, true, true, { .sq_thread_cpu = -1, .fixed_files = RAW_AIO_ONOFFAUTO_OFF,
                        .fixed_buffers = RAW_AIO_ONOFFAUTO_OFF, .restrict_ops = RAW_AIO_ONOFFAUTO_OFF } },
    { "io_uring-qd16",  "io_uring", true,  true, false, { .queue_depth = 16, .sq_thread_cpu = -1,
                        .fixed_buffers = RAW_AIO_ONOFFAUTO_OFF, .restrict_ops = RAW_AIO_ONOFFAUTO_OFF } },
    { "io_uring-fixed-files", "io_uring", true, true, false, { .fixed_files = RAW_AIO_ONOFFAUTO_ON,
                        .sq_thread_cpu = -1, .fixed_buffers = RAW_AIO_ONOFFAUTO_OFF, .restrict_ops = RAW_AIO_ONOFFAUTO_OFF } },
    { "io_uring-fixed-buffers", "io_uring", true, true, false, { .sq_thread_cpu = -1,
                        .fixed_buffers = RAW_AIO_ONOFFAUTO_ON, .restrict_ops = RAW_AIO_ONOFFAUTO_OFF } },
    { "io_uring-sqpoll", "io_uring", true, false, false, { .sqpoll = true, .sq_thread_idle_ms = 50,
                        .sq_thread_cpu = -1, .fixed_buffers = RAW_AIO_ONOFFAUTO_OFF, .restrict_ops = RAW_AIO_ONOFFAUTO_OFF } },
    { "io_uring-restrict", "io_uring", true, true, false, { .sq_thread_cpu = -1,
                        .fixed_buffers = RAW_AIO_ONOFFAUTO_OFF, .restrict_ops = RAW_AIO_ONOFFAUTO_ON } },
    { "io_uring-restrict-fixed", "io_uring", true, true, false, { .fixed_files = RAW_AIO_ONOFFAUTO_ON,
                        .sq_thread_cpu = -1, .fixed_buffers = RAW_AIO_ONOFFAUTO_AUTO,
                        .restrict_ops = RAW_AIO_ONOFFAUTO_ON } },
    { "io_uring-all",   "io_uring", true,  false, false, { .queue_depth = 32, .fixed_files = RAW_AIO_ONOFFAUTO_ON,
                        .sqpoll = true, .sq_thread_idle_ms = 50, .sq_thread_cpu = -1,
                        .fixed_buffers = RAW_AIO_ONOFFAUTO_ON, .restrict_ops = RAW_AIO_ONOFFAUTO_ON } },
    { "io_uring-async", "io_uring", false, true, false, { .async_punt = true, .sq_thread_cpu = -1,
                        .fixed_buffers = RAW_AIO_ONOFFAUTO_OFF, .restrict_ops = RAW_AIO_ONOFFAUTO_OFF } },
    /*
     * SQEs on the event loop's io_uring fd monitor ring (switched to it at
     * create). Not "batches": any wait of the loop submits what is in that
     * ring, plugged or not (seen: 16 of 16 plugged writes done before unplug).
     */
    { "io_uring-share-ring", "io_uring", false, false, false, { .sq_thread_cpu = -1,
                        .fixed_buffers = RAW_AIO_ONOFFAUTO_OFF, .restrict_ops = RAW_AIO_ONOFFAUTO_OFF,
                        .share_ring = RAW_AIO_ONOFFAUTO_ON } },
    { "io_uring-share-ring-direct", "io_uring", true, false, false, { .sq_thread_cpu = -1,
                        .fixed_buffers = RAW_AIO_ONOFFAUTO_OFF, .restrict_ops = RAW_AIO_ONOFFAUTO_OFF,
                        .share_ring = RAW_AIO_ONOFFAUTO_ON } },
    { "io_uring-share-ring-tmpfs", "io_uring", false, false, true, { .sq_thread_cpu = -1,
                        .fixed_buffers = RAW_AIO_ONOFFAUTO_OFF, .restrict_ops = RAW_AIO_ONOFFAUTO_OFF,
                        .share_ring = RAW_AIO_ONOFFAUTO_ON } },
};

#define ALIGN 4096

static char *scratch_dir;
static char *tmpfs_dir;           /* NULL when /dev/shm is not usable */
static pthread_t main_thread;

/* ---- fixture -------------------------------------------------------------------- */

typedef struct Fixture {
    const EngineCase *ec;
    const RawAioOps *ops;
    AioContext *ctx;
    RawAioEngine *engine;
    char *path;
    int fd;                       /* opened as the case says (O_DIRECT or not) */
    int check_fd;                 /* buffered fd for independent checks */
    int slot;
} Fixture;

static int open_test_file(const char *path, bool direct)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | (direct ? O_DIRECT : 0), 0600);

    g_assert_cmpint(fd, >=, 0);
    return fd;
}

static bool fixture_setup_cfg(Fixture *f, const EngineCase *ec, const RawAioConfig *cfg)
{
    Error *err = NULL;
    static unsigned file_no;

    memset(f, 0, sizeof(*f));
    f->ec = ec;
    f->ops = raw_aio_ops_by_name(ec->engine);
    if (!f->ops) {
        g_test_skip("engine not in this build's table");
        return false;
    }
    if (!f->ops->available(&err)) {
        g_test_skip(error_get_pretty(err));
        error_free(err);
        return false;
    }
    f->ctx = aio_context_new(&error_abort);
    aio_context_set_current(f->ctx);
    f->engine = raw_aio_engine_get(f->ops, f->ctx, cfg, &error_abort);
    if (ec->tmpfs && !tmpfs_dir) {
        g_test_skip("no tmpfs at /dev/shm");
        return false;
    }
    f->path = g_strdup_printf("%s/file-%u", ec->tmpfs ? tmpfs_dir : scratch_dir, file_no++);
    f->fd = open_test_file(f->path, ec->direct);
    f->check_fd = open_test_file(f->path, false);
    f->slot = f->ops->add_file(f->engine, f->fd, fcntl(f->fd, F_GETFL), &error_abort);
    g_assert_cmpint(f->slot, >=, -1);
    return true;
}

static void fixture_teardown(Fixture *f)
{
    if (f->slot >= 0 && f->ops->remove_file) {
        f->ops->remove_file(f->engine, f->slot);
    }
    raw_aio_engine_put(f->engine);
    close(f->fd);
    close(f->check_fd);
    g_unlink(f->path);
    g_free(f->path);
    aio_context_set_current(aio_context_main());
    aio_context_unref(f->ctx);
}

/* ---- requests ------------------------------------------------------------------- */

typedef struct TestReq {
    RawAioReq req;
    struct iovec iov;
    bool done;
    int ret;
    unsigned *counter;            /* optional: incremented on completion */
} TestReq;

static void test_req_cb(void *opaque, int ret)
{
    TestReq *t = opaque;

    /* Completions run in the submitting thread, exactly once. */
    g_assert_true(pthread_equal(pthread_self(), main_thread));
    g_assert_false(t->done);
    t->done = true;
    t->ret = ret;
    if (t->counter) {
        (*t->counter)++;
    }
}

static void test_req_init(Fixture *f, TestReq *t, RawAioType type, uint64_t offset,
                          void *buf, uint64_t bytes)
{
    memset(t, 0, sizeof(*t));
    t->req.type = type;
    t->req.fd = f->fd;
    t->req.file_slot = f->slot;
    t->req.offset = offset;
    t->req.bytes = bytes;
    if (buf) {
        t->iov.iov_base = buf;
        t->iov.iov_len = bytes;
        t->req.iov = &t->iov;
        t->req.niov = 1;
    }
    t->req.cb = test_req_cb;
    t->req.opaque = t;
    t->ret = 1;
}

static void wait_done(Fixture *f, TestReq *t)
{
    while (!t->done) {
        aio_poll(f->ctx, true);
    }
}

static int run_req(Fixture *f, TestReq *t)
{
    g_assert_cmpint(raw_aio_submit(f->engine, &t->req), ==, 0);
    g_assert_false(t->done);    /* never from within submit */
    wait_done(f, t);
    return t->ret;
}

static int do_rw(Fixture *f, RawAioType type, uint64_t offset, void *buf, uint64_t bytes,
                 unsigned flags)
{
    TestReq t;

    test_req_init(f, &t, type, offset, buf, bytes);
    t.req.flags = flags;
    return run_req(f, &t);
}

static int do_op(Fixture *f, RawAioType type, uint64_t offset, uint64_t bytes, unsigned flags)
{
    TestReq t;

    test_req_init(f, &t, type, offset, NULL, bytes);
    t.req.flags = flags;
    return run_req(f, &t);
}

/* ---- data -------------------------------------------------------------------------- */

static uint8_t pattern_byte(uint64_t off, unsigned seed)
{
    return (uint8_t)((off * 131) ^ (off >> 12) ^ seed);
}

static void fill_pattern(uint8_t *buf, uint64_t off, uint64_t len, unsigned seed)
{
    for (uint64_t i = 0; i < len; i++) {
        buf[i] = pattern_byte(off + i, seed);
    }
}

/* Asserts buf holds the pattern; reports the first wrong byte. */
static void check_pattern(const uint8_t *buf, uint64_t off, uint64_t len, unsigned seed)
{
    for (uint64_t i = 0; i < len; i++) {
        if (buf[i] != pattern_byte(off + i, seed)) {
            g_error("byte at file offset %" G_GUINT64_FORMAT ": 0x%02x, expected 0x%02x",
                    off + i, buf[i], pattern_byte(off + i, seed));
        }
    }
}

static void check_zero(const uint8_t *buf, uint64_t off, uint64_t len)
{
    for (uint64_t i = 0; i < len; i++) {
        if (buf[i] != 0) {
            g_error("byte at file offset %" G_GUINT64_FORMAT ": 0x%02x, expected 0",
                    off + i, buf[i]);
        }
    }
}

static void *alloc_buf(size_t len)
{
    void *p = NULL;

    g_assert_cmpint(posix_memalign(&p, ALIGN, MAX(len, 1)), ==, 0);
    memset(p, 0xa5, len);
    return p;
}

/* Writes the pattern through the buffered check fd, not through the engine. */
static void prefill(Fixture *f, uint64_t off, uint64_t len, unsigned seed)
{
    uint8_t *buf = alloc_buf(len);

    fill_pattern(buf, off, len, seed);
    g_assert_cmpint(pwrite(f->check_fd, buf, len, off), ==, (ssize_t)len);
    g_assert_cmpint(fsync(f->check_fd), ==, 0);
    free(buf);
}

/* Reads through the buffered check fd, after the engine's writes. */
static uint8_t *read_back(Fixture *f, uint64_t off, uint64_t len)
{
    uint8_t *buf = alloc_buf(len);

    g_assert_cmpint(pread(f->check_fd, buf, len, off), ==, (ssize_t)len);
    return buf;
}

static uint64_t file_size(Fixture *f)
{
    struct stat st;

    g_assert_cmpint(fstat(f->check_fd, &st), ==, 0);
    return st.st_size;
}

/* ---- tests --------------------------------------------------------------------------- */

typedef void TestFunc(Fixture *f);

static void test_rw_pattern(Fixture *f)
{
    static const uint64_t offsets[] = { 0, 4096, 65536, 1048576 + 8192 };
    static const uint64_t lengths[] = { 4096, 8192, 65536, 1048576 };
    unsigned seed = 1;

    for (size_t i = 0; i < G_N_ELEMENTS(offsets); i++) {
        for (size_t j = 0; j < G_N_ELEMENTS(lengths); j++, seed++) {
            uint64_t off = offsets[i], len = lengths[j];
            uint8_t *w = alloc_buf(len), *r = alloc_buf(len), *c;

            fill_pattern(w, off, len, seed);
            g_assert_cmpint(do_rw(f, RAW_AIO_WRITE, off, w, len, 0), ==, 0);
            g_assert_cmpint(do_rw(f, RAW_AIO_READ, off, r, len, 0), ==, 0);
            check_pattern(r, off, len, seed);
            c = read_back(f, off, len);
            check_pattern(c, off, len, seed);
            free(w);
            free(r);
            free(c);
        }
    }
}

/* Odd lengths and offsets where the fd allows them (buffered). */
static void test_rw_unaligned(Fixture *f)
{
    if (f->ec->direct) {
        g_test_skip("O_DIRECT needs aligned requests");
        return;
    }
    static const uint64_t offsets[] = { 1, 511, 4097, 100000 };
    static const uint64_t lengths[] = { 1, 3, 513, 70001 };
    unsigned seed = 7;

    for (size_t i = 0; i < G_N_ELEMENTS(offsets); i++) {
        for (size_t j = 0; j < G_N_ELEMENTS(lengths); j++, seed++) {
            uint64_t off = offsets[i], len = lengths[j];
            uint8_t *w = alloc_buf(len), *r = alloc_buf(len);

            fill_pattern(w, off, len, seed);
            g_assert_cmpint(do_rw(f, RAW_AIO_WRITE, off, w, len, 0), ==, 0);
            g_assert_cmpint(do_rw(f, RAW_AIO_READ, off, r, len, 0), ==, 0);
            check_pattern(r, off, len, seed);
            free(w);
            free(r);
        }
    }
}

/*
 * Vectored I/O with many segments, more than IOV_MAX (1024) in one request:
 * the engine must carry on with the rest itself.
 */
static void do_vectored(Fixture *f, int nseg)
{
    size_t seg = f->ec->direct ? 512 : 0;
    uint64_t off = 8192, total = 0;
    struct iovec *wv = g_new(struct iovec, nseg), *rv = g_new(struct iovec, nseg);
    uint8_t *wbuf, *rbuf, *c;
    TestReq t;

    /* Direct: 512-byte aligned segments; buffered: sizes 1..7 bytes and 4 KiB mixed. */
    for (int i = 0; i < nseg; i++) {
        size_t len = seg ? seg * (1 + i % 3) : (i % 5 == 4 ? 4096 : 1 + (size_t)(i % 7));
        wv[i].iov_len = rv[i].iov_len = len;
        total += len;
    }
    wbuf = alloc_buf(total);
    rbuf = alloc_buf(total);
    fill_pattern(wbuf, off, total, 42);
    for (int i = 0, pos = 0; i < nseg; pos += wv[i].iov_len, i++) {
        wv[i].iov_base = wbuf + pos;
        rv[i].iov_base = rbuf + pos;
    }

    test_req_init(f, &t, RAW_AIO_WRITE, off, NULL, total);
    t.req.iov = wv;
    t.req.niov = nseg;
    g_assert_cmpint(run_req(f, &t), ==, 0);
    c = read_back(f, off, total);
    check_pattern(c, off, total, 42);

    test_req_init(f, &t, RAW_AIO_READ, off, NULL, total);
    t.req.iov = rv;
    t.req.niov = nseg;
    g_assert_cmpint(run_req(f, &t), ==, 0);
    check_pattern(rbuf, off, total, 42);
    /* The engine may not modify the caller's array. */
    for (int i = 0, pos = 0; i < nseg; pos += wv[i].iov_len, i++) {
        g_assert_true(rv[i].iov_base == rbuf + pos);
    }

    free(wbuf);
    free(rbuf);
    free(c);
    g_free(wv);
    g_free(rv);
}

static void test_vectored(Fixture *f)
{
    do_vectored(f, 257);
}

static void test_vectored_over_iov_max(Fixture *f)
{
    do_vectored(f, 2500);
}

/* A read reaching past EOF returns the file's bytes, then zeroes, and succeeds. */
static void test_read_past_eof(Fixture *f)
{
    /* An unaligned size: with O_DIRECT the continuation offset is unaligned too. */
    const uint64_t size = 12288 + 1000, len = 65536;
    uint8_t *r = alloc_buf(len);

    prefill(f, 0, size, 3);
    g_assert_cmpint(do_rw(f, RAW_AIO_READ, 0, r, len, 0), ==, 0);
    check_pattern(r, 0, size, 3);
    check_zero(r + size, size, len - size);

    /* Wholly past EOF. */
    memset(r, 0xa5, len);
    g_assert_cmpint(do_rw(f, RAW_AIO_READ, 1048576, r, len, 0), ==, 0);
    check_zero(r, 1048576, len);
    g_assert_cmpuint(file_size(f), ==, size);
    free(r);
}

/* A file shorter than the request by whole blocks: the short read is resubmitted, then EOF. */
static void test_short_read(Fixture *f)
{
    const uint64_t size = 20480, len = 131072;
    uint8_t *r = alloc_buf(len);
    struct iovec iov[3];
    TestReq t;

    prefill(f, 0, size, 5);
    /* Three segments so that EOF falls inside the second. */
    iov[0] = (struct iovec){ r, 16384 };
    iov[1] = (struct iovec){ r + 16384, 16384 };
    iov[2] = (struct iovec){ r + 32768, len - 32768 };
    test_req_init(f, &t, RAW_AIO_READ, 0, NULL, len);
    t.req.iov = iov;
    t.req.niov = 3;
    g_assert_cmpint(run_req(f, &t), ==, 0);
    check_pattern(r, 0, size, 5);
    check_zero(r + size, size, len - size);
    free(r);
}

/*
 * A short write is continued: with RLIMIT_FSIZE in the middle of a request
 * the kernel writes up to the limit, and the continuation gets EFBIG, which
 * must reach the callback (rather than success or -ENOSPC).
 */
static void test_short_write(Fixture *f)
{
    const uint64_t limit = 65536 + 4096, len = 131072;
    struct rlimit old, lim;
    uint8_t *w = alloc_buf(len), *c;
    void (*old_handler)(int);
    int r;

    fill_pattern(w, 0, len, 29);
    g_assert_cmpint(getrlimit(RLIMIT_FSIZE, &old), ==, 0);
    lim = old;
    lim.rlim_cur = limit;
    old_handler = signal(SIGXFSZ, SIG_IGN);
    g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &lim), ==, 0);
    r = do_rw(f, RAW_AIO_WRITE, 0, w, len, 0);
    g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &old), ==, 0);
    signal(SIGXFSZ, old_handler);

    g_assert_cmpint(r, ==, -EFBIG);
    g_assert_cmpuint(file_size(f), ==, limit);
    c = read_back(f, 0, limit);
    check_pattern(c, 0, limit, 29);
    free(c);
    free(w);
}

static void test_flush(Fixture *f)
{
    uint8_t *w = alloc_buf(8192), *c;

    fill_pattern(w, 0, 8192, 9);
    g_assert_cmpint(do_rw(f, RAW_AIO_WRITE, 0, w, 8192, 0), ==, 0);
    g_assert_cmpint(do_op(f, RAW_AIO_FLUSH, 0, 0, 0), ==, 0);
    /* FUA write. */
    fill_pattern(w, 8192, 8192, 10);
    g_assert_cmpint(do_rw(f, RAW_AIO_WRITE, 8192, w, 8192, RAW_AIO_FUA), ==, 0);
    c = read_back(f, 0, 16384);
    check_pattern(c, 0, 8192, 9);
    check_pattern(c + 8192, 8192, 8192, 10);
    free(w);
    free(c);
}

/* Discard punches a hole that reads back as zeroes; the size stays. */
static void test_discard(Fixture *f)
{
    const uint64_t size = 1048576, off = 65536, len = 131072;
    uint8_t *c;
    int r;

    prefill(f, 0, size, 11);
    r = do_op(f, RAW_AIO_DISCARD, off, len, 0);
    if (r == -ENOTSUP) {
        g_test_skip("the scratch file system cannot punch holes");
        return;
    }
    g_assert_cmpint(r, ==, 0);
    g_assert_cmpuint(file_size(f), ==, size);
    c = read_back(f, 0, size);
    check_pattern(c, 0, off, 11);
    check_zero(c + off, off, len);
    check_pattern(c + off + len, off + len, size - off - len, 11);
    free(c);
}

static void check_write_zeroes(Fixture *f, unsigned flags)
{
    const uint64_t size = 1048576, off = 4096, len = 200704;
    uint8_t *c;
    int r;

    prefill(f, 0, size, 13);
    r = do_op(f, RAW_AIO_WRITE_ZEROES, off, len, flags);
    if (r == -ENOTSUP) {
        g_test_skip("the scratch file system cannot zero ranges");
        return;
    }
    g_assert_cmpint(r, ==, 0);
    g_assert_cmpuint(file_size(f), ==, size);
    c = read_back(f, 0, size);
    check_pattern(c, 0, off, 13);
    check_zero(c + off, off, len);
    check_pattern(c + off + len, off + len, size - off - len, 13);
    free(c);

    /* Reaching past EOF extends the file with zeroes. */
    r = do_op(f, RAW_AIO_WRITE_ZEROES, size - 8192, 65536, flags);
    g_assert_cmpint(r, ==, 0);
    g_assert_cmpuint(file_size(f), ==, size - 8192 + 65536);
    c = read_back(f, size - 16384, 8192 + 65536);
    check_pattern(c, size - 16384, 8192, 13);
    check_zero(c + 8192, size - 8192, 65536);
    free(c);
}

static void test_write_zeroes(Fixture *f)
{
    check_write_zeroes(f, 0);
}

static void test_write_zeroes_unmap(Fixture *f)
{
    check_write_zeroes(f, RAW_AIO_MAY_UNMAP);
}

/* Many requests at once: writes to distinct blocks, then reads of all of them. */
static void run_many(Fixture *f, unsigned n)
{
    const uint64_t bs = 4096;
    uint8_t *wbuf = alloc_buf(n * bs), *rbuf = alloc_buf(n * bs);
    TestReq *reqs = g_new(TestReq, n);
    unsigned completed = 0;

    fill_pattern(wbuf, 0, n * bs, 17);
    for (unsigned i = 0; i < n; i++) {
        /* Reverse order so that the file is not written front to back. */
        uint64_t blk = n - 1 - i;
        test_req_init(f, &reqs[i], RAW_AIO_WRITE, blk * bs, wbuf + blk * bs, bs);
        reqs[i].counter = &completed;
        g_assert_cmpint(raw_aio_submit(f->engine, &reqs[i].req), ==, 0);
    }
    while (completed < n) {
        aio_poll(f->ctx, true);
    }
    for (unsigned i = 0; i < n; i++) {
        g_assert_cmpint(reqs[i].ret, ==, 0);
    }

    completed = 0;
    for (unsigned i = 0; i < n; i++) {
        test_req_init(f, &reqs[i], RAW_AIO_READ, i * bs, rbuf + i * bs, bs);
        reqs[i].counter = &completed;
        g_assert_cmpint(raw_aio_submit(f->engine, &reqs[i].req), ==, 0);
    }
    while (completed < n) {
        aio_poll(f->ctx, true);
    }
    for (unsigned i = 0; i < n; i++) {
        g_assert_cmpint(reqs[i].ret, ==, 0);
    }
    check_pattern(rbuf, 0, n * bs, 17);

    free(wbuf);
    free(rbuf);
    g_free(reqs);
}

static void test_many(Fixture *f)
{
    run_many(f, 1000);
}

/* Queue depth 16, 4096 requests: the overflow queue holds the rest; nothing is lost. */
static void test_overflow(Fixture *f)
{
    run_many(f, 4096);
}

static void submit_writes(Fixture *f, TestReq *reqs, uint8_t *wbuf, unsigned first,
                          unsigned n, unsigned *completed)
{
    const uint64_t bs = 4096;

    for (unsigned i = first; i < first + n; i++) {
        test_req_init(f, &reqs[i], RAW_AIO_WRITE, i * bs, wbuf + i * bs, bs);
        reqs[i].counter = completed;
        g_assert_cmpint(raw_aio_submit(f->engine, &reqs[i].req), ==, 0);
    }
}

/*
 * Plugged requests go out at the last unplug (nested plugs). 16 requests fit
 * in any queue depth the table uses; a plugged burst larger than the depth
 * is not lost or stuck in the overflow queue.
 */
static void test_plug(Fixture *f)
{
    const unsigned small = 16, big = 300, n = small + big;
    const uint64_t bs = 4096;
    uint8_t *wbuf = alloc_buf(n * bs);
    TestReq *reqs = g_new(TestReq, n);
    unsigned completed = 0;
    uint8_t *c;

    fill_pattern(wbuf, 0, n * bs, 19);
    f->ops->plug(f->engine);
    f->ops->plug(f->engine);
    submit_writes(f, reqs, wbuf, 0, small, &completed);
    f->ops->unplug(f->engine);
    if (f->ec->batches) {
        /* Still plugged once: nothing went to the kernel, so nothing can complete. */
        while (aio_poll(f->ctx, false)) {
        }
        g_assert_cmpuint(completed, ==, 0);
        g_assert_cmpuint(file_size(f), ==, 0);
    }
    f->ops->unplug(f->engine);
    while (completed < small) {
        aio_poll(f->ctx, true);
    }

    /* A plugged burst larger than any queue depth in the table. */
    f->ops->plug(f->engine);
    submit_writes(f, reqs, wbuf, small, big, &completed);
    if (strcmp(f->ec->engine, "native") == 0) {
        /*
         * Beyond raw-aio.h's contract, native does not make a plugged
         * caller wait for the unplug when the burst exceeds the depth.
         */
        while (completed < n) {
            aio_poll(f->ctx, true);
        }
    }
    f->ops->unplug(f->engine);
    while (completed < n) {
        aio_poll(f->ctx, true);
    }

    for (unsigned i = 0; i < n; i++) {
        g_assert_cmpint(reqs[i].ret, ==, 0);
    }
    c = read_back(f, 0, n * bs);
    check_pattern(c, 0, n * bs, 19);
    if (strcmp(f->ec->engine, "inline") == 0 && raw_aio_native_ops.available(NULL)) {
        InlineStats st;

        /* Both bursts ran as Linux AIO batches, whole (300 takes several io_submits). */
        raw_aio_inline_get_stats(f->engine, &st);
        g_assert_cmpuint(st.batches, ==, 2);
        g_assert_cmpuint(st.batched_requests, ==, n);
        g_assert_cmpuint(st.sync_requests, ==, 0);
    }
    free(c);
    free(wbuf);
    g_free(reqs);
}

/*
 * aio=inline's two paths: a request alone in its plugged burst runs in our
 * thread; a burst of several runs as one Linux AIO batch, and a FLUSH runs
 * the held burst first, so nothing plugged is overtaken by it. Other
 * engines only have to complete everything with the right data.
 */
static void test_plug_flush(Fixture *f)
{
    enum { N = 8 };
    const uint64_t bs = 4096;
    bool is_inline = strcmp(f->ec->engine, "inline") == 0;
    bool batcher = is_inline && raw_aio_native_ops.available(NULL);
    uint8_t *wbuf = alloc_buf(N * bs);
    TestReq reqs[N], flush;
    InlineStats st0 = { 0 }, st;
    unsigned completed = 0;
    uint8_t *c;

    fill_pattern(wbuf, 0, N * bs, 29);
    if (is_inline) {
        raw_aio_inline_get_stats(f->engine, &st0);
    }

    /* Alone in its burst. */
    f->ops->plug(f->engine);
    submit_writes(f, reqs, wbuf, 0, 1, &completed);
    f->ops->unplug(f->engine);
    while (completed < 1) {
        aio_poll(f->ctx, true);
    }
    if (is_inline) {
        raw_aio_inline_get_stats(f->engine, &st);
        g_assert_cmpuint(st.sync_requests - st0.sync_requests, ==, 1);
        g_assert_cmpuint(st.batches - st0.batches, ==, 0);
    }

    /* A burst, then a flush while still plugged. */
    f->ops->plug(f->engine);
    submit_writes(f, reqs, wbuf, 1, N - 1, &completed);
    test_req_init(f, &flush, RAW_AIO_FLUSH, 0, NULL, 0);
    flush.counter = &completed;
    g_assert_cmpint(raw_aio_submit(f->engine, &flush.req), ==, 0);
    if (batcher) {
        raw_aio_inline_get_stats(f->engine, &st);
        g_assert_cmpuint(st.batches - st0.batches, ==, 1);
        g_assert_cmpuint(st.batched_requests - st0.batched_requests, ==, N - 1);
    }
    f->ops->unplug(f->engine);
    while (completed < N + 1) {
        aio_poll(f->ctx, true);
    }
    for (unsigned i = 0; i < N; i++) {
        g_assert_cmpint(reqs[i].ret, ==, 0);
    }
    g_assert_cmpint(flush.ret, ==, 0);
    c = read_back(f, 0, N * bs);
    check_pattern(c, 0, N * bs, 29);
    free(c);
    free(wbuf);
}

/*
 * A plugged burst of reads across and past EOF: every read returns the
 * file's bytes and then zeroes. On aio=inline the burst runs as one Linux
 * AIO batch, where the kernel's short results go back through the sync
 * path (with O_DIRECT and this unaligned size, EINVAL at the tail).
 */
static void test_plug_eof(Fixture *f)
{
    enum { N = 5 };
    const uint64_t bs = 4096, size = 3 * 4096 + 1000;
    bool batcher = strcmp(f->ec->engine, "inline") == 0 && raw_aio_native_ops.available(NULL);
    uint8_t *r = alloc_buf(N * bs);
    TestReq reqs[N];
    InlineStats st0 = { 0 }, st;
    unsigned completed = 0;

    prefill(f, 0, size, 37);
    memset(r, 0xa5, N * bs);
    if (batcher) {
        raw_aio_inline_get_stats(f->engine, &st0);
    }
    f->ops->plug(f->engine);
    for (unsigned i = 0; i < N; i++) {
        test_req_init(f, &reqs[i], RAW_AIO_READ, i * bs, r + i * bs, bs);
        reqs[i].counter = &completed;
        g_assert_cmpint(raw_aio_submit(f->engine, &reqs[i].req), ==, 0);
    }
    f->ops->unplug(f->engine);
    while (completed < N) {
        aio_poll(f->ctx, true);
    }
    for (unsigned i = 0; i < N; i++) {
        g_assert_cmpint(reqs[i].ret, ==, 0);
    }
    check_pattern(r, 0, size, 37);
    check_zero(r + size, size, N * bs - size);
    if (batcher) {
        raw_aio_inline_get_stats(f->engine, &st);
        g_assert_cmpuint(st.batches - st0.batches, ==, 1);
        g_assert_cmpuint(st.batched_requests - st0.batched_requests, ==, N);
    }
    g_assert_cmpuint(file_size(f), ==, size);
    free(r);
}

/* A callback that polls the loop (as synchronous helpers do) still sees other completions. */
typedef struct NestedReq {
    TestReq t;
    Fixture *f;
    TestReq *other;
} NestedReq;

static void nested_cb(void *opaque, int ret)
{
    NestedReq *n = opaque;

    while (!n->other->done) {
        aio_poll(n->f->ctx, true);
    }
    test_req_cb(&n->t, ret);
}

static void test_nested_poll(Fixture *f)
{
    enum { N = 8 };
    uint8_t *buf = alloc_buf(N * 4096);
    NestedReq first;
    TestReq others[N];

    prefill(f, 0, N * 4096, 31);
    test_req_init(f, &first.t, RAW_AIO_READ, 0, buf, 4096);
    first.t.req.cb = nested_cb;
    first.t.req.opaque = &first;
    first.f = f;
    first.other = &others[N - 1];
    g_assert_cmpint(raw_aio_submit(f->engine, &first.t.req), ==, 0);
    for (int i = 1; i < N; i++) {
        test_req_init(f, &others[i], RAW_AIO_READ, i * 4096, buf + i * 4096, 4096);
        g_assert_cmpint(raw_aio_submit(f->engine, &others[i].req), ==, 0);
    }
    others[0].done = true;      /* unused slot */
    wait_done(f, &first.t);
    for (int i = 1; i < N; i++) {
        wait_done(f, &others[i]);
        g_assert_cmpint(others[i].ret, ==, 0);
    }
    g_assert_cmpint(first.t.ret, ==, 0);
    check_pattern(buf, 0, N * 4096, 31);
    free(buf);
}

/* add_file: native refuses a file without O_DIRECT with QEMU's message. */
static void test_add_file_flags(Fixture *f)
{
    Error *err = NULL;
    int fd = open_test_file(f->path, false);
    int r = f->ops->add_file(f->engine, fd, fcntl(fd, F_GETFL), &err);

    if (strcmp(f->ec->engine, "native") == 0) {
        g_assert_cmpint(r, ==, -EINVAL);
        g_assert_nonnull(err);
        g_assert_cmpstr(error_get_pretty(err), ==,
                        "aio=native was specified, but it requires cache.direct=on, "
                        "which was not specified.");
        error_free(err);
    } else {
        g_assert_cmpint(r, >=, -1);
        g_assert_null(err);
        if (r >= 0 && f->ops->remove_file) {
            f->ops->remove_file(f->engine, r);
        }
    }
    close(fd);
}

/* Destroying an instance with requests in flight runs every callback first. */
static void test_destroy_in_flight(Fixture *f)
{
    const unsigned n = 300;
    const uint64_t bs = 4096;
    RawAioConfig cfg = f->ec->cfg;
    uint8_t *buf = alloc_buf(n * bs);
    TestReq *reqs = g_new(TestReq, n);
    unsigned completed = 0;
    RawAioEngine *e;
    int slot;

    /* A configuration of its own, so the put below is the last reference. */
    cfg.queue_depth = 37;
    e = raw_aio_engine_get(f->ops, f->ctx, &cfg, &error_abort);
    g_assert_true(e != f->engine);
    g_assert_cmpint(e->refcnt, ==, 1);
    /* File slots belong to an instance: register the file with this one too. */
    slot = f->ops->add_file(e, f->fd, fcntl(f->fd, F_GETFL), &error_abort);
    fill_pattern(buf, 0, n * bs, 23);
    for (unsigned i = 0; i < n; i++) {
        test_req_init(f, &reqs[i], i % 2 ? RAW_AIO_WRITE : RAW_AIO_READ,
                      i * bs, buf + i * bs, bs);
        reqs[i].req.file_slot = slot;
        reqs[i].counter = &completed;
        g_assert_cmpint(raw_aio_submit(e, &reqs[i].req), ==, 0);
    }
    raw_aio_engine_put(e);
    g_assert_cmpuint(completed, ==, n);
    for (unsigned i = 0; i < n; i++) {
        g_assert_true(reqs[i].done);
        g_assert_cmpint(reqs[i].ret, ==, 0);
    }
    free(buf);
    g_free(reqs);
}

/* One instance per (context, engine, configuration). */
static void test_instance_sharing(Fixture *f)
{
    RawAioConfig other = f->ec->cfg;
    RawAioEngine *same, *diff;
    AioContext *ctx2;

    same = raw_aio_engine_get(f->ops, f->ctx, &f->ec->cfg, &error_abort);
    g_assert_true(same == f->engine);
    g_assert_cmpuint(f->engine->refcnt, ==, 2);
    g_assert_true(f->engine->ops == f->ops);
    g_assert_true(f->engine->ctx == f->ctx);

    other.queue_depth = f->ec->cfg.queue_depth + 8;
    diff = raw_aio_engine_get(f->ops, f->ctx, &other, &error_abort);
    g_assert_true(diff != f->engine);
    g_assert_cmpuint(diff->cfg.queue_depth, ==, other.queue_depth);
    raw_aio_engine_put(diff);

    ctx2 = aio_context_new(&error_abort);
    diff = raw_aio_engine_get(f->ops, ctx2, &f->ec->cfg, &error_abort);
    g_assert_true(diff != f->engine);
    raw_aio_engine_put(diff);
    aio_context_unref(ctx2);

    raw_aio_engine_put(same);
    g_assert_cmpuint(f->engine->refcnt, ==, 1);
}

/* A request that fails in the kernel reaches the callback as -errno. */
static void test_error(Fixture *f)
{
    uint8_t *buf = alloc_buf(4096);
    int rfd = open(f->path, O_RDONLY | O_CLOEXEC | (f->ec->direct ? O_DIRECT : 0));
    TestReq t;

    g_assert_cmpint(rfd, >=, 0);
    test_req_init(f, &t, RAW_AIO_WRITE, 0, buf, 4096);
    t.req.fd = rfd;
    t.req.file_slot = -1;
    g_assert_cmpint(run_req(f, &t), ==, -EBADF);
    close(rfd);
    free(buf);
}

/* ---- an IOThread-like thread: completions come back to it ----------------------------- */

typedef struct ThreadArgs {
    const EngineCase *ec;
    char *path;
    pthread_t self;
    unsigned completed;
    bool wrong_thread;
} ThreadArgs;

static void thread_cb(void *opaque, int ret)
{
    ThreadArgs *a = opaque;

    if (!pthread_equal(pthread_self(), a->self) || ret != 0) {
        a->wrong_thread = true;
    }
    a->completed++;
}

static void *other_thread(void *opaque)
{
    ThreadArgs *a = opaque;
    AioContext *ctx = aio_context_new(&error_abort);
    const RawAioOps *ops = raw_aio_ops_by_name(a->ec->engine);
    RawAioEngine *e;
    RawAioReq reqs[32];
    struct iovec iov[32];
    uint8_t *buf = alloc_buf(32 * 4096);
    int fd = open_test_file(a->path, a->ec->direct);

    a->self = pthread_self();
    aio_context_set_current(ctx);
    e = raw_aio_engine_get(ops, ctx, &a->ec->cfg, &error_abort);
    memset(reqs, 0, sizeof(reqs));
    for (int i = 0; i < 32; i++) {
        iov[i] = (struct iovec){ buf + i * 4096, 4096 };
        reqs[i] = (RawAioReq){ .type = RAW_AIO_WRITE, .fd = fd, .file_slot = -1,
                               .offset = i * 4096, .bytes = 4096, .iov = &iov[i],
                               .niov = 1, .cb = thread_cb, .opaque = a };
        g_assert_cmpint(raw_aio_submit(e, &reqs[i]), ==, 0);
    }
    while (a->completed < 32) {
        aio_poll(ctx, true);
    }
    raw_aio_engine_put(e);
    close(fd);
    free(buf);
    aio_context_unref(ctx);
    return NULL;
}

static void test_other_thread(Fixture *f)
{
    ThreadArgs a = { .ec = f->ec, .path = f->path };
    pthread_t th;

    g_assert_cmpint(pthread_create(&th, NULL, other_thread, &a), ==, 0);
    g_assert_cmpint(pthread_join(th, NULL), ==, 0);
    g_assert_cmpuint(a.completed, ==, 32);
    g_assert_false(a.wrong_thread);
    g_assert_cmpuint(file_size(f), ==, 32 * 4096);
}

/*
 * A depth-1 stream whose callback submits the next request goes back to the
 * event loop between requests: a BH scheduled at the start runs long
 * before the stream ends (an engine that completes in its own thread, like
 * inline, must not run the whole chain inside one pass).
 */
typedef struct ChainReq {
    TestReq t;
    Fixture *f;
    unsigned left, done;
    unsigned *seen;               /* done when the BH ran */
    uint8_t *buf;
} ChainReq;

static void chain_cb(void *opaque, int ret)
{
    ChainReq *c = opaque;

    g_assert_cmpint(ret, ==, 0);
    c->done++;
    if (--c->left) {
        test_req_init(c->f, &c->t, RAW_AIO_READ, (c->done % 16) * 4096, c->buf, 4096);
        c->t.req.cb = chain_cb;
        c->t.req.opaque = c;
        g_assert_cmpint(raw_aio_submit(c->f->engine, &c->t.req), ==, 0);
    }
}

static void record_progress(void *opaque)
{
    ChainReq *c = opaque;
    *c->seen = c->done;
}

static void test_loop_turns(Fixture *f)
{
    enum { N = 200 };
    unsigned seen = N + 1;
    ChainReq c = { .f = f, .left = N, .seen = &seen, .buf = alloc_buf(4096) };

    prefill(f, 0, 16 * 4096, 23);
    test_req_init(f, &c.t, RAW_AIO_READ, 0, c.buf, 4096);
    c.t.req.cb = chain_cb;
    c.t.req.opaque = &c;
    g_assert_cmpint(raw_aio_submit(f->engine, &c.t.req), ==, 0);
    aio_bh_schedule_oneshot(f->ctx, record_progress, &c);
    while (c.left) {
        aio_poll(f->ctx, true);
    }
    g_assert_cmpuint(c.done, ==, N);
    g_assert_cmpuint(seen, <, N / 2);
    free(c.buf);
}

/* ---- registration ---------------------------------------------------------------------- */

typedef struct TestCase {
    const EngineCase *ec;
    TestFunc *fn;
    bool small_depth;             /* run with queue depth 16 */
} TestCase;

static void run_test(gconstpointer data)
{
    const TestCase *tc = data;
    Fixture f;
    RawAioConfig cfg = tc->ec->cfg;

    if (tc->small_depth) {
        cfg.queue_depth = 16;
    }
    if (!fixture_setup_cfg(&f, tc->ec, &cfg)) {
        return;
    }
    tc->fn(&f);
    fixture_teardown(&f);
}

static void test_ops_by_name(void)
{
    g_assert_true(raw_aio_ops_by_name("threads") == &raw_aio_threads_ops);
    g_assert_true(raw_aio_ops_by_name("native") == &raw_aio_native_ops);
    g_assert_true(raw_aio_ops_by_name("io_uring") == &raw_aio_io_uring_ops);
    g_assert_null(raw_aio_ops_by_name("bogus"));
    g_assert_null(raw_aio_ops_by_name(""));
    g_assert_null(raw_aio_ops_by_name(NULL));
}

/* Without libaio, native exists but says why it cannot run. */
static void test_native_stub(void)
{
#ifdef CONFIG_LINUX_AIO
    g_test_skip("built with Linux AIO");
#else
    Error *err = NULL;

    g_assert_false(raw_aio_native_ops.available(&err));
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "aio=native was not compiled in (this build has no Linux AIO support)");
    error_free(err);
    err = NULL;
    g_assert_null(raw_aio_engine_get(&raw_aio_native_ops, aio_context_main(), NULL, &err));
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "aio=native was not compiled in (this build has no Linux AIO support)");
    error_free(err);
#endif
}

static bool scratch_takes_o_direct(void)
{
    char *p = g_strdup_printf("%s/probe", scratch_dir);
    int fd = open(p, O_RDWR | O_CREAT | O_DIRECT, 0600);

    if (fd >= 0) {
        close(fd);
        g_unlink(p);
    }
    g_free(p);
    return fd >= 0;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        TestFunc *fn;
        bool small_depth;
    } tests[] = {
        { "rw-pattern", test_rw_pattern },
        { "rw-unaligned", test_rw_unaligned },
        { "vectored", test_vectored },
        { "vectored-over-iov-max", test_vectored_over_iov_max },
        { "read-past-eof", test_read_past_eof },
        { "short-read", test_short_read },
        { "short-write", test_short_write },
        { "flush", test_flush },
        { "discard", test_discard },
        { "write-zeroes", test_write_zeroes },
        { "write-zeroes-unmap", test_write_zeroes_unmap },
        { "many", test_many },
        { "overflow", test_overflow, true },
        { "plug", test_plug },
        { "plug-flush", test_plug_flush },
        { "plug-eof", test_plug_eof },
        { "nested-poll", test_nested_poll },
        { "loop-turns", test_loop_turns },
        { "add-file-flags", test_add_file_flags },
        { "destroy-in-flight", test_destroy_in_flight },
        { "instance-sharing", test_instance_sharing },
        { "error", test_error },
        { "other-thread", test_other_thread },
    };
    const char *base = g_getenv("RINGBLK_TEST_DIR");
    int ret;

    g_test_init(&argc, &argv, NULL);
    main_thread = pthread_self();
    scratch_dir = g_build_filename(base ? base : "/var/tmp", "ringblk-raw-aio-XXXXXX", NULL);
    if (!g_mkdtemp(scratch_dir)) {
        g_printerr("cannot create a scratch directory in %s\n", base ? base : "/var/tmp");
        return 77;
    }
    if (!scratch_takes_o_direct()) {
        g_printerr("%s does not take O_DIRECT\n", scratch_dir);
        g_rmdir(scratch_dir);
        return 77;
    }

    tmpfs_dir = g_strdup("/dev/shm/ringblk-raw-aio-XXXXXX");
    if (!g_mkdtemp(tmpfs_dir)) {
        g_clear_pointer(&tmpfs_dir, g_free);
    }

    g_test_add_func("/raw-aio/ops-by-name", test_ops_by_name);
    g_test_add_func("/raw-aio/native-stub", test_native_stub);
    for (size_t i = 0; i < G_N_ELEMENTS(engine_cases); i++) {
        for (size_t j = 0; j < G_N_ELEMENTS(tests); j++) {
            TestCase *tc = g_new0(TestCase, 1);
            char *path = g_strdup_printf("/raw-aio/%s/%s", engine_cases[i].name, tests[j].name);

            tc->ec = &engine_cases[i];
            tc->fn = tests[j].fn;
            tc->small_depth = tests[j].small_depth;
            g_test_add_data_func_full(path, tc, run_test, g_free);
            g_free(path);
        }
    }
    ret = g_test_run();
    g_rmdir(scratch_dir);
    g_free(scratch_dir);
    if (tmpfs_dir) {
        g_rmdir(tmpfs_dir);
        g_free(tmpfs_dir);
    }
    return ret;
}
