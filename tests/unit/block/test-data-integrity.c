/*
 * The data-integrity suite: the block layer over the file driver, run for
 * every row of integrity_cases[] (engine x cache mode x engine options).
 * Paths: /block/integrity/<row>/<test>.
 *
 * Data is a pattern that depends on the file offset and a generation
 * number, so misplaced, torn, stale or lost data all fail. Results are
 * checked through the node and independently through a separate buffered
 * file descriptor. Rows whose engine is not available here are skipped.
 *
 * Scratch files live under /var/tmp (RINGBLK_TEST_DIR overrides) or, for
 * tmpfs rows, /dev/shm.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "block/block.h"
#include "block/block_int.h"
#include "block/raw-aio.h"
#include "util/iothread.h"

typedef struct IntegrityCase {
    const char *name;            /* path component */
    const char *aio;             /* aio= value: threads|native|io_uring|inline|auto */
    bool direct;                 /* cache.direct */
    bool tmpfs;                  /* file in /dev/shm */
    const char *extra;           /* more file-node options, "" for none */
} IntegrityCase;

/*
 * One line per configuration. Engines missing from the build or the
 * kernel are skipped at run time; io_uring option combinations go here too.
 */
static const IntegrityCase integrity_cases[] = {
    /* row                     aio         direct tmpfs  extra options */
    { "threads",               "threads",  false, false, "" },
    { "threads-direct",        "threads",  true,  false, "" },
    { "threads-tmpfs",         "threads",  false, true,  "" },
    { "inline",                "inline",   false, false, "" },
    { "inline-tmpfs",          "inline",   false, true,  "" },
    { "auto-tmpfs",            "auto",     false, true,  "" },
    { "native-direct",         "native",   true,  false, "" },
    { "io_uring",              "io_uring", false, false, "" },
    { "io_uring-direct",       "io_uring", true,  false, "" },
    { "io_uring-fixed",        "io_uring", true,  false, "fixed-files=on,fixed-buffers=on" },
    { "io_uring-sqpoll",       "io_uring", true,  false, "sqpoll=on,sq-thread-idle=10" },
    /* each io_uring mode alone (the defaults register files, a pool and restrict) */
    { "io_uring-plain",        "io_uring", true,  false,
                                                "fixed-files=off,fixed-buffers=off,restrict=off" },
    { "io_uring-fixed-files",  "io_uring", true,  false,
                                                "fixed-files=on,fixed-buffers=off,restrict=off" },
    { "io_uring-fixed-buffers", "io_uring", false, false, "fixed-buffers=on,restrict=off" },
    { "io_uring-restrict-off", "io_uring", false, false, "restrict=off" },
    { "io_uring-fixed-files-off", "io_uring", false, false, "fixed-files=off" },
    /* combinations: a fixed-file-only restricted ring; everything at once */
    { "io_uring-restrict-fixed", "io_uring", true, false, "restrict=on,fixed-files=on" },
    { "io_uring-all",          "io_uring", true,  false, "aio-queue-depth=16,fixed-files=on,"
                                                        "fixed-buffers=on,restrict=on,sqpoll=on,"
                                                        "sq-thread-idle=10" },
    /* on the event loop's own ring (the loop switches to io_uring) */
    { "io_uring-shared",       "io_uring", false, false, "share-ring=on" },
    { "io_uring-shared-direct", "io_uring", true, false, "share-ring=on" },
    { "auto",                  "auto",     false, false, "" },
    { "auto-direct",           "auto",     true,  false, "" },
};

#define FILE_SIZE (1 << 20)

static char *scratch_dir;
static char *tmpfs_dir;
static const char *self_exe;

/* ---- pattern ------------------------------------------------------------------------ */

static inline uint8_t pat(int64_t off, int gen)
{
    return (uint8_t)(off ^ (off >> 8) ^ (off >> 16) ^ (gen * 0x5d));
}

static void fill(uint8_t *buf, int64_t off, size_t len, int gen)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = pat(off + i, gen);
    }
}

/* ---- fixture ------------------------------------------------------------------------ */

typedef struct Fixture {
    const IntegrityCase *ic;
    char *path;
    BlockDriverState *bs;
    int check_fd;                /* buffered, for independent checks */
    uint8_t *model;              /* what the file must contain */
    int64_t size;
    uint32_t align;
} Fixture;

static bool engine_present(const IntegrityCase *ic)
{
    if (!strcmp(ic->aio, "auto")) {
        return true;
    }
    const RawAioOps *ops = raw_aio_ops_by_name(ic->aio);
    Error *err = NULL;
    if (!ops) {
        g_test_skip("engine not in this build");
        return false;
    }
    if (!ops->available(&err)) {
        g_test_skip(error_get_pretty(err));
        error_free(err);
        return false;
    }
    return true;
}

static char *node_options(const Fixture *f, const char *more)
{
    return g_strdup_printf("driver=file,filename=%s,aio=%s,cache.direct=%s,discard=unmap%s%s%s%s",
                           f->path, f->ic->aio, f->ic->direct ? "on" : "off",
                           *f->ic->extra ? "," : "", f->ic->extra,
                           more && *more ? "," : "", more ? more : "");
}

static BlockDriverState *fixture_open(Fixture *f, const char *more, Error **errp)
{
    char *o = node_options(f, more);
    BlockDriverState *bs = bdrv_open_string(o, errp);
    g_free(o);
    return bs;
}

/* Creates the file (size bytes of generation 0) and opens the node. */
static bool fixture_setup(Fixture *f, const IntegrityCase *ic, int64_t size)
{
    static unsigned file_no;
    memset(f, 0, sizeof(*f));
    f->ic = ic;
    if (!engine_present(ic)) {
        return false;
    }
    if (ic->tmpfs && !tmpfs_dir) {
        g_test_skip("no tmpfs at /dev/shm");
        return false;
    }
    f->path = g_strdup_printf("%s/img-%d-%u", ic->tmpfs ? tmpfs_dir : scratch_dir,
                              (int)getpid(), file_no++);
    f->size = size;
    f->model = g_malloc(size);
    fill(f->model, 0, size, 0);
    g_assert_true(g_file_set_contents(f->path, (char *)f->model, size, NULL));
    f->check_fd = open(f->path, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(f->check_fd, >=, 0);

    Error *err = NULL;
    f->bs = fixture_open(f, NULL, &err);
    if (!f->bs && ic->direct && err && strstr(error_get_pretty(err), "O_DIRECT")) {
        g_test_skip(error_get_pretty(err));
        error_free(err);
        return false;
    }
    g_assert_no_error(err);
    f->align = bdrv_request_alignment(f->bs);
    if (ic->direct) {
        g_assert_cmpuint(f->align, >=, 512);
    } else {
        g_assert_cmpuint(f->align, ==, 1);
    }
    return true;
}

static void fixture_teardown(Fixture *f)
{
    if (f->bs) {
        bdrv_unref(f->bs);
    }
    if (f->check_fd > 0) {
        close(f->check_fd);
    }
    if (f->path) {
        g_unlink(f->path);
    }
    g_free(f->path);
    g_free(f->model);
}

/* Checks [off, off+len) through the node and through the buffered fd against the model. */
static void check_range(Fixture *f, int64_t off, int64_t len)
{
    uint8_t *buf = g_malloc(len + 1);
    g_assert_cmpint(bdrv_pread(f->bs, off, len, buf, 0), ==, 0);
    for (int64_t i = 0; i < len; i++) {
        if (buf[i] != f->model[off + i]) {
            g_error("node: byte at %" G_GINT64_FORMAT " is 0x%02x, expected 0x%02x",
                    off + i, buf[i], f->model[off + i]);
        }
    }
    ssize_t r = pread(f->check_fd, buf, len, off);
    g_assert_cmpint(r, ==, len);
    for (int64_t i = 0; i < len; i++) {
        if (buf[i] != f->model[off + i]) {
            g_error("file: byte at %" G_GINT64_FORMAT " is 0x%02x, expected 0x%02x",
                    off + i, buf[i], f->model[off + i]);
        }
    }
    g_free(buf);
}

static void check_all(Fixture *f)
{
    check_range(f, 0, f->size);
}

static void model_write(Fixture *f, int64_t off, int64_t len, int gen)
{
    fill(f->model + off, off, len, gen);
}

/* Sync write of generation gen through the node, recorded in the model. */
static void write_gen(Fixture *f, int64_t off, int64_t len, int gen)
{
    uint8_t *buf = g_malloc(len);
    fill(buf, off, len, gen);
    g_assert_cmpint(bdrv_pwrite(f->bs, off, len, buf, 0), ==, 0);
    model_write(f, off, len, gen);
    g_free(buf);
}

typedef struct Done {
    int ret;
    int calls;
    bool in_thread;
    AioContext *ctx;
} Done;

static void done_cb(void *opaque, int ret)
{
    Done *d = opaque;
    d->ret = ret;
    d->calls++;
    d->in_thread = d->ctx ? aio_context_in_thread(d->ctx) : true;
}

/* ---- the tests ---------------------------------------------------------------------- */

/* Aligned and misaligned offsets and lengths, small and larger than a block. */
static void test_pattern(Fixture *f)
{
    static const struct { int64_t off, len; } rw[] = {
        { 0, 4096 }, { 4096, 65536 }, { 1, 1 }, { 511, 2 }, { 513, 4095 },
        { 8191, 8194 }, { 100000, 12345 }, { 4096 * 30 + 7, 511 }, { 65536 - 3, 6 },
        { FILE_SIZE - 4096, 4096 }, { FILE_SIZE - 1, 1 }, { 3000, 200 },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(rw); i++) {
        write_gen(f, rw[i].off, rw[i].len, (int)i + 1);
        check_range(f, rw[i].off > 5000 ? rw[i].off - 5000 : 0,
                    MIN(rw[i].len + 10000, f->size - MAX(rw[i].off - 5000, 0)));
    }
    check_all(f);

    /* reads at odd places, each checked */
    for (int64_t off = 0; off < 20000; off += 1237) {
        check_range(f, off, 1 + off % 3000);
    }
}

/* Vectored I/O: many segments of odd sizes, read back with another segmentation. */
static void test_vectored(Fixture *f)
{
    enum { NSEG = 300 };
    const int64_t off = 12345;
    uint8_t *segs[NSEG];
    IOVector w;
    iovector_init(&w, 4);
    int64_t total = 0;
    for (int i = 0; i < NSEG; i++) {
        size_t len = 1 + (i * 37) % 700;
        segs[i] = g_malloc(len);
        fill(segs[i], off + total, len, 7);
        iovector_add(&w, segs[i], len);
        total += len;
    }
    g_assert_cmpint(bdrv_pwritev(f->bs, off, &w, 0), ==, 0);
    model_write(f, off, total, 7);

    /* read back in 1500 segments (more than IOV_MAX allows at once? no: the layer copes) */
    enum { NREAD = 1500 };
    uint8_t *rbuf = g_malloc0(total);
    IOVector r;
    iovector_init(&r, 4);
    int64_t pos = 0;
    for (int i = 0; i < NREAD && pos < total; i++) {
        int64_t len = MIN(1 + (i * 13) % 97, total - pos);
        iovector_add(&r, rbuf + pos, len);
        pos += len;
    }
    if (pos < total) {
        iovector_add(&r, rbuf + pos, total - pos);
    }
    g_assert_cmpint(bdrv_preadv(f->bs, off, &r, 0), ==, 0);
    g_assert_cmpint(memcmp(rbuf, f->model + off, total), ==, 0);

    /* An aligned vectored request with aligned segments goes straight through. */
    uint8_t *abuf = bdrv_blockalign(f->bs, 16 * 4096);
    IOVector a;
    iovector_init(&a, 16);
    for (int i = 0; i < 16; i++) {
        fill(abuf + i * 4096, 65536 + i * 4096, 4096, 8);
        iovector_add(&a, abuf + i * 4096, 4096);
    }
    g_assert_cmpint(bdrv_pwritev(f->bs, 65536, &a, 0), ==, 0);
    model_write(f, 65536, 16 * 4096, 8);
    memset(abuf, 0, 16 * 4096);
    g_assert_cmpint(bdrv_preadv(f->bs, 65536, &a, 0), ==, 0);
    g_assert_cmpint(memcmp(abuf, f->model + 65536, 16 * 4096), ==, 0);
    bdrv_blockalign_free(f->bs, abuf, 16 * 4096);

    check_all(f);
    iovector_destroy(&a);
    iovector_destroy(&r);
    iovector_destroy(&w);
    g_free(rbuf);
    for (int i = 0; i < NSEG; i++) {
        g_free(segs[i]);
    }
}

/* A file whose size is not a multiple of the alignment: reads up to EOF are exact. */
static void test_eof(Fixture *f)
{
    /* Replace the fixture's file with a 10000-byte one. */
    bdrv_unref(f->bs);
    g_assert_cmpint(truncate(f->path, 10000), ==, 0);
    f->size = 10000;
    Error *err = NULL;
    f->bs = fixture_open(f, NULL, &err);
    g_assert_no_error(err);
    g_assert_cmpint(bdrv_getlength(f->bs), ==, 10000);

    check_range(f, 0, 10000);
    check_range(f, 9000, 1000);
    check_range(f, 9999, 1);
    check_range(f, 8192, 1808);
    uint8_t buf[4096];
    g_assert_cmpint(bdrv_pread(f->bs, 9000, 1001, buf, 0), ==, -EIO);
    g_assert_cmpint(bdrv_pread(f->bs, 10000, 1, buf, 0), ==, -EIO);
    g_assert_cmpint(bdrv_pwrite(f->bs, 9999, 2, buf, 0), ==, -EIO);

    /* a misaligned write in the last, partial block; the file keeps its size */
    write_gen(f, 9990, 10, 3);
    check_range(f, 8000, 2000);
    g_assert_cmpint(bdrv_pwrite_zeroes(f->bs, 9995, 5, 0), ==, 0);
    memset(f->model + 9995, 0, 5);
    check_range(f, 8000, 2000);
    struct stat st;
    g_assert_cmpint(fstat(f->check_fd, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 10000);
    g_assert_cmpint(bdrv_getlength(f->bs), ==, 10000);
}

/* Write zeroes (all flag combinations, aligned and not) and discard. */
static void test_zeroes_discard(Fixture *f)
{
    static const struct { int64_t off, len; BdrvRequestFlags flags; } z[] = {
        { 0, 4096, 0 },
        { 8192, 65536, BDRV_REQ_MAY_UNMAP },
        { 100001, 3000, 0 },                      /* misaligned both ends */
        { 200000, 70000, BDRV_REQ_MAY_UNMAP },    /* misaligned, spans blocks */
        { 300000, 1, 0 },
        { 400000, 4096 * 10, BDRV_REQ_FUA },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(z); i++) {
        g_assert_cmpint(bdrv_pwrite_zeroes(f->bs, z[i].off, z[i].len, z[i].flags), ==, 0);
        memset(f->model + z[i].off, 0, z[i].len);
    }
    check_all(f);

    /* NO_FALLBACK: either done efficiently, or -ENOTSUP with the data untouched */
    write_gen(f, 500000, 8192, 4);
    int r = bdrv_pwrite_zeroes(f->bs, 500000, 8192, BDRV_REQ_NO_FALLBACK);
    g_assert_true(r == 0 || r == -ENOTSUP);
    if (r == 0) {
        memset(f->model + 500000, 0, 8192);
    }
    check_all(f);

    /* discard of whole blocks punches a hole that reads as zeroes (ext4, tmpfs) */
    write_gen(f, 600000 & ~65535, 131072, 5);
    g_assert_cmpint(bdrv_pdiscard(f->bs, 600000 & ~65535, 131072), ==, 0);
    memset(f->model + (600000 & ~65535), 0, 131072);
    check_all(f);
    int64_t pnum;
    int status;
    g_assert_cmpint(bdrv_block_status(f->bs, 600000 & ~65535, 131072, &pnum, &status), ==, 0);
    g_assert_cmpint(status, ==, BDRV_BLOCK_ZERO);
    g_assert_cmpint(pnum, ==, 131072);

    /* a misaligned discard only drops whole blocks; the bytes around are intact */
    write_gen(f, 700000, 20000, 6);
    g_assert_cmpint(bdrv_pdiscard(f->bs, 700001, 19998), ==, 0);
    uint8_t *buf = g_malloc(20000);
    g_assert_cmpint(bdrv_pread(f->bs, 700000, 20000, buf, 0), ==, 0);
    g_assert_cmpint(buf[0], ==, f->model[700000]);
    g_assert_cmpint(buf[19999], ==, f->model[719999]);
    for (int i = 0; i < 20000; i++) {
        g_assert_true(buf[i] == 0 || buf[i] == f->model[700000 + i]);
    }
    pread(f->check_fd, buf, 20000, 700000);
    memcpy(f->model + 700000, buf, 20000);
    g_free(buf);
    check_all(f);
}

/* Flush after writes, overwrite, FUA; writes and flushes in flight together. */
static void test_flush(Fixture *f)
{
    write_gen(f, 0, 65536, 1);
    g_assert_cmpint(bdrv_flush(f->bs), ==, 0);
    write_gen(f, 0, 65536, 2);
    g_assert_cmpint(bdrv_flush(f->bs), ==, 0);
    check_range(f, 0, 65536);

    uint8_t *buf = g_malloc(8192);
    fill(buf, 8192, 8192, 3);
    g_assert_cmpint(bdrv_pwrite(f->bs, 8192, 8192, buf, BDRV_REQ_FUA), ==, 0);
    model_write(f, 8192, 8192, 3);
    g_free(buf);

    /* Each write completes before the flush issued after its completion; all succeed. */
    enum { N = 32 };
    Done d[N + 1];
    IOVector q[N];
    uint8_t *bufs = g_malloc(N * 4096);
    AioContext *ctx = bdrv_get_aio_context(f->bs);
    memset(d, 0, sizeof(d));
    for (int i = 0; i < N; i++) {
        fill(bufs + i * 4096, 131072 + i * 4096, 4096, 4);
        iovector_init_buf(&q[i], bufs + i * 4096, 4096);
        bdrv_aio_pwritev(f->bs, 131072 + i * 4096, &q[i], 0, done_cb, &d[i]);
    }
    model_write(f, 131072, N * 4096, 4);
    bdrv_aio_flush(f->bs, done_cb, &d[N]);
    AIO_WAIT_WHILE(ctx, ({ bool busy = false;
                           for (int i = 0; i <= N; i++) busy |= d[i].calls == 0;
                           busy; }));
    for (int i = 0; i <= N; i++) {
        g_assert_cmpint(d[i].calls, ==, 1);
        g_assert_cmpint(d[i].ret, ==, 0);
    }
    g_assert_cmpint(bdrv_flush(f->bs), ==, 0);
    g_free(bufs);
    check_all(f);

    const BlockAcctStats *st = bdrv_get_stats(f->bs);
    g_assert_cmpuint(st->nr_ops[BLOCK_ACCT_FLUSH], ==, 4);
    g_assert_cmpuint(st->failed_ops[BLOCK_ACCT_FLUSH], ==, 0);
}

/* 1000 requests in flight at once: writes (some misaligned), then reads. */
static void test_concurrent(Fixture *f)
{
    enum { N = 1000, LEN = 1000 };
    AioContext *ctx = bdrv_get_aio_context(f->bs);
    Done *d = g_new0(Done, N);
    IOVector *q = g_new(IOVector, N);
    uint8_t *bufs = g_malloc((size_t)N * LEN);
    int ndone;

    /* distinct ranges: request i covers [i*LEN, (i+1)*LEN) — mostly misaligned */
    for (int i = 0; i < N; i++) {
        fill(bufs + (size_t)i * LEN, (int64_t)i * LEN, LEN, 9);
        iovector_init_buf(&q[i], bufs + (size_t)i * LEN, LEN);
        bdrv_aio_pwritev(f->bs, (int64_t)i * LEN, &q[i], 0, done_cb, &d[i]);
    }
    model_write(f, 0, (int64_t)N * LEN, 9);
    AIO_WAIT_WHILE(ctx, ({ ndone = 0; for (int i = 0; i < N; i++) ndone += d[i].calls;
                           ndone < N; }));
    for (int i = 0; i < N; i++) {
        g_assert_cmpint(d[i].calls, ==, 1);
        g_assert_cmpint(d[i].ret, ==, 0);
    }
    check_all(f);

    memset(bufs, 0, (size_t)N * LEN);
    memset(d, 0, sizeof(Done) * N);
    for (int i = 0; i < N; i++) {
        bdrv_aio_preadv(f->bs, (int64_t)((i * 7919) % N) * LEN, &q[i], 0, done_cb, &d[i]);
    }
    AIO_WAIT_WHILE(ctx, ({ ndone = 0; for (int i = 0; i < N; i++) ndone += d[i].calls;
                           ndone < N; }));
    for (int i = 0; i < N; i++) {
        g_assert_cmpint(d[i].ret, ==, 0);
        int64_t off = (int64_t)((i * 7919) % N) * LEN;
        g_assert_cmpint(memcmp(bufs + (size_t)i * LEN, f->model + off, LEN), ==, 0);
    }
    g_free(bufs);
    g_free(q);
    g_free(d);
}

/* bdrv_drain returns only when every request has completed and its callback ran. */
static void test_drain(Fixture *f)
{
    enum { N = 200 };
    Done *d = g_new0(Done, N);
    IOVector *q = g_new(IOVector, N);
    uint8_t *bufs = g_malloc(N * 4096);
    for (int i = 0; i < N; i++) {
        int64_t off = (int64_t)i * 4096 + (i % 3);
        fill(bufs + i * 4096, off, 4096, 11);
        iovector_init_buf(&q[i], bufs + i * 4096, 4096);
        if (i % 4 == 3) {
            bdrv_aio_flush(f->bs, done_cb, &d[i]);
        } else {
            bdrv_aio_pwritev(f->bs, off, &q[i], 0, done_cb, &d[i]);
            model_write(f, off, 4096, 11);
        }
    }
    bdrv_drain(f->bs);
    for (int i = 0; i < N; i++) {
        g_assert_cmpint(d[i].calls, ==, 1);
        g_assert_cmpint(d[i].ret, ==, 0);
    }
    /* nothing left: a second drain returns at once */
    bdrv_drain(f->bs);
    g_free(bufs);
    g_free(q);
    g_free(d);
    check_all(f);
}

/*
 * Read-modify-write serialisation: several misaligned writes to the same
 * aligned block in flight at once (disjoint, so without serialisation one
 * would write back stale bytes over another), and for nodes that align,
 * overlapping ones, which must apply in submission order.
 */
static void test_rmw(Fixture *f)
{
    AioContext *ctx = bdrv_get_aio_context(f->bs);
    enum { N = 16 };
    for (int round = 0; round < 20; round++) {
        Done d[N];
        IOVector q[N];
        uint8_t bufs[N][300];
        int64_t base = 4096 * (8 + round);
        memset(d, 0, sizeof(d));
        for (int i = 0; i < N; i++) {
            int64_t off = base + 13 + i * 250;     /* disjoint: [off, off+237) */
            int len = 237;
            bool overlap = f->align > 1 && (i % 4 == 3);
            if (overlap) {
                off -= 100;                          /* overlaps the previous request */
                len = 300;
            }
            fill(bufs[i], off, len, 20 + round * N + i);
            iovector_init_buf(&q[i], bufs[i], len);
            bdrv_aio_pwritev(f->bs, off, &q[i], 0, done_cb, &d[i]);
            model_write(f, off, len, 20 + round * N + i);
        }
        AIO_WAIT_WHILE(ctx, ({ bool busy = false;
                               for (int i = 0; i < N; i++) busy |= d[i].calls == 0;
                               busy; }));
        for (int i = 0; i < N; i++) {
            g_assert_cmpint(d[i].ret, ==, 0);
        }
        check_range(f, base, 8192);
    }

    /* An aligned write overlapping an in-flight read-modify-write waits for it. */
    if (f->align > 1) {
        Done d1 = { 0 }, d2 = { 0 };
        uint8_t *b1 = g_malloc(100);
        uint8_t *b2 = bdrv_blockalign(f->bs, f->align);
        IOVector q1, q2;
        fill(b1, 50, 100, 90);
        fill(b2, 0, f->align, 91);
        iovector_init_buf(&q1, b1, 100);
        iovector_init_buf(&q2, b2, f->align);
        bdrv_aio_pwritev(f->bs, 50, &q1, 0, done_cb, &d1);
        bdrv_aio_pwritev(f->bs, 0, &q2, 0, done_cb, &d2);
        model_write(f, 50, 100, 90);
        model_write(f, 0, f->align, 91);
        AIO_WAIT_WHILE(ctx, d1.calls == 0 || d2.calls == 0);
        g_assert_cmpint(d1.ret, ==, 0);
        g_assert_cmpint(d2.ret, ==, 0);
        check_range(f, 0, f->align);
        g_free(b1);
        bdrv_blockalign_free(f->bs, b2, f->align);
    }
    check_all(f);
}

/*
 * The write-zeroes fallback: blkdebug answers every write-zeroes with
 * -ENOTSUP, so the layer writes zero buffers through it to the file
 * (engine buffers and all), unless NO_FALLBACK.
 */
static void test_zeroes_fallback(Fixture *f)
{
    bdrv_unref(f->bs);
    f->bs = NULL;
    GString *opts = g_string_new(NULL);
    g_string_printf(opts, "driver=blkdebug,inject-error.0.iotype=write-zeroes,"
                    "inject-error.0.errno=%d,image.driver=file,image.filename=%s,"
                    "image.aio=%s,image.cache.direct=%s", ENOTSUP, f->path, f->ic->aio,
                    f->ic->direct ? "on" : "off");
    char **extra = g_strsplit(f->ic->extra, ",", -1);
    for (int i = 0; extra[i]; i++) {
        if (*extra[i]) {
            g_string_append_printf(opts, ",image.%s", extra[i]);
        }
    }
    g_strfreev(extra);
    Error *err = NULL;
    f->bs = bdrv_open_string(opts->str, &err);
    g_assert_no_error(err);
    g_string_free(opts, TRUE);

    g_assert_cmpint(bdrv_pwrite_zeroes(f->bs, 4096, 65536, 0), ==, 0);
    memset(f->model + 4096, 0, 65536);
    g_assert_cmpint(bdrv_pwrite_zeroes(f->bs, 100001, 5000, BDRV_REQ_FUA), ==, 0);
    memset(f->model + 100001, 0, 5000);
    write_gen(f, 200000, 4096, 3);
    g_assert_cmpint(bdrv_pwrite_zeroes(f->bs, 200000, 4096, BDRV_REQ_NO_FALLBACK), ==, -ENOTSUP);
    check_all(f);
    /* larger than the fallback's zero buffer (1 MiB): written in chunks */
    g_assert_cmpint(bdrv_pwrite_zeroes(f->bs, 0, f->size, 0), ==, 0);
    memset(f->model, 0, f->size);
    check_all(f);
}

/*
 * Random batches: reads, writes (vectored, odd buffers), write zeroes and
 * discards at random offsets and lengths, all in flight together, with
 * small limits so requests split and bounce. Ranges of one batch do not
 * overlap (so the result is defined) but may share blocks, which is where
 * read-modify-write must serialise. Deterministic: a fixed seed.
 */
typedef struct RandOp {
    int type;                    /* 0 read, 1 write, 2 zeroes, 3 discard */
    int64_t off, len;
    IOVector q;
    uint8_t *buf;
    Done d;
} RandOp;

static void test_random(Fixture *f)
{
    GRand *rand = g_rand_new_with_seed(0x5eed);
    AioContext *ctx = bdrv_get_aio_context(f->bs);
    enum { BATCHES = 60, OPS = 24 };
    uint8_t *seen = g_malloc(f->size);

    /* Small limits: 16 KiB per request, 8 segments (file node internals). */
    f->bs->bl.max_transfer = 16384;
    f->bs->bl.max_iov = 8;
    bdrv_io_refresh_limits(f->bs);

    for (int b = 0; b < BATCHES; b++) {
        RandOp ops[OPS];
        int nops = 0;
        memset(seen, 0, f->size);
        for (int tries = 0; nops < OPS && tries < 200; tries++) {
            RandOp *o = &ops[nops];
            o->type = g_rand_int_range(rand, 0, 4);
            o->len = g_rand_int_range(rand, 1, g_rand_boolean(rand) ? 600 : 70000);
            o->off = g_rand_int_range(rand, 0, f->size - o->len);
            if (g_rand_boolean(rand)) {
                o->off &= ~511;
                o->len = MAX(o->len & ~511, 512);
            }
            bool clash = false;
            for (int64_t i = o->off; i < o->off + o->len && !clash; i++) {
                clash = seen[i];
            }
            if (clash) {
                continue;
            }
            memset(seen + o->off, 1, o->len);
            nops++;
        }
        for (int i = 0; i < nops; i++) {
            RandOp *o = &ops[i];
            memset(&o->d, 0, sizeof(o->d));
            o->buf = NULL;
            switch (o->type) {
            case 0:
            case 1: {
                /* an odd buffer, cut into up to 12 segments */
                o->buf = g_malloc(o->len + 7);
                uint8_t *p = o->buf + g_rand_int_range(rand, 0, 7);
                if (o->type == 1) {
                    fill(p, o->off, o->len, 100 + b);
                }
                iovector_init(&o->q, 4);
                int64_t pos = 0;
                int segs = g_rand_int_range(rand, 1, 13);
                for (int k = 0; k < segs - 1 && pos < o->len - 1; k++) {
                    int64_t n = g_rand_int_range(rand, 1, (int)MAX(2, (o->len - pos) / 2));
                    iovector_add(&o->q, p + pos, n);
                    pos += n;
                }
                iovector_add(&o->q, p + pos, o->len - pos);
                if (o->type == 0) {
                    bdrv_aio_preadv(f->bs, o->off, &o->q, 0, done_cb, &o->d);
                } else {
                    bdrv_aio_pwritev(f->bs, o->off, &o->q, 0, done_cb, &o->d);
                    model_write(f, o->off, o->len, 100 + b);
                }
                break;
            }
            case 2:
                bdrv_aio_pwrite_zeroes(f->bs, o->off, o->len,
                                       g_rand_boolean(rand) ? BDRV_REQ_MAY_UNMAP : 0,
                                       done_cb, &o->d);
                memset(f->model + o->off, 0, o->len);
                break;
            default:
                /* Discard: only whole aligned blocks drop; the model learns after. */
                bdrv_aio_pdiscard(f->bs, o->off, o->len, done_cb, &o->d);
                break;
            }
        }
        AIO_WAIT_WHILE(ctx, ({ bool busy = false;
                               for (int i = 0; i < nops; i++) busy |= ops[i].d.calls == 0;
                               busy; }));
        for (int i = 0; i < nops; i++) {
            RandOp *o = &ops[i];
            g_assert_cmpint(o->d.calls, ==, 1);
            g_assert_cmpint(o->d.ret, ==, 0);
            if (o->type == 0) {
                uint8_t *got = g_malloc(o->len);
                iov_to_buf(o->q.iov, o->q.niov, 0, got, o->len);
                for (int64_t k = 0; k < o->len; k++) {
                    if (got[k] != f->model[o->off + k]) {
                        g_error("batch %d: read at %" G_GINT64_FORMAT ": byte %" G_GINT64_FORMAT
                                " is 0x%02x, expected 0x%02x", b, o->off, k, got[k],
                                f->model[o->off + k]);
                    }
                }
                g_free(got);
            }
            if (o->type == 3) {
                /* each byte is either unchanged or zero; take what the file says */
                uint8_t *got = g_malloc(o->len);
                g_assert_cmpint(pread(f->check_fd, got, o->len, o->off), ==, o->len);
                for (int64_t k = 0; k < o->len; k++) {
                    g_assert_true(got[k] == 0 || got[k] == f->model[o->off + k]);
                }
                memcpy(f->model + o->off, got, o->len);
                g_free(got);
            }
            if (o->type <= 1) {
                iovector_destroy(&o->q);
                g_free(o->buf);
            }
        }
        if (b % 10 == 9) {
            check_all(f);
        }
    }
    g_free(seen);
    g_rand_free(rand);
}

/* ---- moving to an iothread under load -------------------------------------------------- */

/*
 * A load of `depth` misaligned writes kept in flight: each completion
 * resubmits in its own slot until `total` requests ran. To move the node,
 * the test pauses resubmission (completions park their slot), moves (which
 * drains the requests in flight), and resumes the parked slots in the new
 * context. Every callback must run in the context it was submitted from.
 */
typedef struct Load Load;

typedef struct LoadSlot {
    Load *l;
    IOVector q;
    uint8_t *buf;
} LoadSlot;

struct Load {
    Fixture *f;
    int depth;
    int total;
    int submitted;               /* ctx thread only */
    int completed;               /* atomic: read by the main thread */
    int errors;
    int wrong_thread;
    bool paused;                 /* atomic: the main thread waits for it */
    int pause_at;                /* completions after which the load pauses; 0: never */
    int nparked;
    int *parked;
    LoadSlot *slots;
    AioContext *ctx;             /* where requests are submitted now */
};

#define LOAD_LEN 3000            /* misaligned on purpose: RMW and bounces too */

static void load_cb_entry(void *opaque, int ret);

static void load_submit(Load *l, LoadSlot *s)
{
    int n = l->submitted++;
    /* Request n writes generation 30 + n over a range cycling through the file. */
    int64_t off = (int64_t)(n % 300) * LOAD_LEN + 7;
    fill(s->buf, off, LOAD_LEN, 30 + n);
    iovector_init_buf(&s->q, s->buf, LOAD_LEN);
    bdrv_aio_pwritev(l->f->bs, off, &s->q, 0, load_cb_entry, s);
}

static void load_cb_entry(void *opaque, int ret)
{
    LoadSlot *s = opaque;
    Load *l = s->l;
    if (ret < 0) {
        l->errors++;
    }
    if (!aio_context_in_thread(l->ctx)) {
        l->wrong_thread++;
    }
    int done = __atomic_add_fetch(&l->completed, 1, __ATOMIC_SEQ_CST);
    if (l->pause_at && done >= l->pause_at) {
        __atomic_store_n(&l->paused, true, __ATOMIC_SEQ_CST);
    }
    if (l->submitted < l->total) {
        if (l->paused) {
            l->parked[l->nparked++] = (int)(s - l->slots);
        } else {
            load_submit(l, s);
        }
    }
    aio_wait_kick();
}

static void load_resume_bh(void *opaque)
{
    Load *l = opaque;
    int n = l->nparked;
    __atomic_store_n(&l->paused, false, __ATOMIC_SEQ_CST);
    l->nparked = 0;
    for (int i = 0; i < n && l->submitted < l->total; i++) {
        load_submit(l, &l->slots[l->parked[i]]);
    }
}

static void test_iothread_move(Fixture *f)
{
    Error *err = NULL;
    IOThread *iot = iothread_new("integrity-io", &err);
    g_assert_no_error(err);
    AioContext *io_ctx = iothread_get_aio_context(iot);
    AioContext *main_ctx = bdrv_get_aio_context(f->bs);
    static const int move_at[] = { 100, 300, 450 };

    Load l = { .f = f, .depth = 8, .total = 600, .ctx = main_ctx, .pause_at = move_at[0] };
    l.slots = g_new0(LoadSlot, l.depth);
    l.parked = g_new0(int, l.depth);
    for (int i = 0; i < l.depth; i++) {
        l.slots[i].l = &l;
        l.slots[i].buf = g_malloc(LOAD_LEN);
    }
    for (int i = 0; i < l.depth; i++) {
        load_submit(&l, &l.slots[i]);
    }

#define PAUSED() __atomic_load_n(&l.paused, __ATOMIC_SEQ_CST)
#define COMPLETED() __atomic_load_n(&l.completed, __ATOMIC_SEQ_CST)
    for (int m = 0; m < 3; m++) {
        /* The load pauses itself after move_at[m] completions, with requests in flight. */
        if (l.ctx == main_ctx) {
            while (!PAUSED()) {
                aio_poll(main_ctx, true);
            }
        } else {
            AIO_WAIT_WHILE(l.ctx, !PAUSED());
        }
        g_assert_cmpint(COMPLETED(), <, l.total);
        AioContext *to = m % 2 == 0 ? io_ctx : main_ctx;
        g_assert_cmpint(bdrv_set_aio_context(f->bs, to, &err), ==, 0);
        g_assert_no_error(err);
        g_assert_true(bdrv_get_aio_context(f->bs) == to);
        l.ctx = to;
        l.pause_at = m + 1 < 3 ? move_at[m + 1] : 0;
        aio_wait_bh_oneshot(to, load_resume_bh, &l);
    }
    AIO_WAIT_WHILE(l.ctx, COMPLETED() < l.total);
#undef COMPLETED
#undef PAUSED
    g_assert_true(bdrv_get_aio_context(f->bs) == io_ctx);
    bdrv_drain(f->bs);
    g_assert_cmpint(l.errors, ==, 0);
    g_assert_cmpint(l.wrong_thread, ==, 0);
    g_assert_cmpint(l.submitted, ==, l.total);

    /* Ranges of one cycle do not overlap, so the last writer of each range wins. */
    for (int n = 0; n < l.total; n++) {
        model_write(f, (int64_t)(n % 300) * LOAD_LEN + 7, LOAD_LEN, 30 + n);
    }
    check_all(f);       /* sync helpers from the main thread into the iothread */
    write_gen(f, 5, 5000, 99);
    g_assert_cmpint(bdrv_flush(f->bs), ==, 0);
    check_all(f);

    g_assert_cmpint(bdrv_set_aio_context(f->bs, main_ctx, &err), ==, 0);
    check_all(f);
    for (int i = 0; i < l.depth; i++) {
        g_free(l.slots[i].buf);
    }
    g_free(l.slots);
    g_free(l.parked);
    iothread_destroy(iot);
}

/* ---- locking -------------------------------------------------------------------------------- */

/* Child mode: open path as told and print the outcome. */
static int lock_child(const char *opts)
{
    Error *err = NULL;
    BlockDriverState *bs = bdrv_open_string(opts, &err);
    if (!bs) {
        printf("refused: %s\n", error_get_pretty(err));
        error_free(err);
        return 2;
    }
    printf("opened\n");
    bdrv_unref(bs);
    return 0;
}

static int run_child(const char *opts, char **out)
{
    char *argv[] = { (char *)self_exe, (char *)"--lock-child", (char *)opts, NULL };
    int status = -1;
    GError *gerr = NULL;
    g_assert_true(g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, out, NULL,
                               &status, &gerr));
    g_assert_no_error(gerr);
    g_assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void test_locking(Fixture *f)
{
    char *out = NULL;
    char *rw = node_options(f, NULL);
    char *ro = node_options(f, "read-only=on");
    char *nolock = node_options(f, "locking=off");

    /* another process cannot write while we do */
    g_assert_cmpint(run_child(rw, &out), ==, 2);
    char *expect = g_strdup_printf("refused: Failed to get \"write\" lock\n"
                                   "Is another process using the image [%s]?\n\n", f->path);
    g_assert_cmpstr(out, ==, expect);
    g_free(expect);
    g_free(out);
    /* readers are allowed */
    g_assert_cmpint(run_child(ro, &out), ==, 0);
    g_assert_cmpstr(out, ==, "opened\n");
    g_free(out);
    /* locking=off does not look */
    g_assert_cmpint(run_child(nolock, &out), ==, 0);
    g_free(out);

    /* a second writer in this process is refused too (OFD locks) */
    Error *err = NULL;
    BlockDriverState *bs2 = fixture_open(f, NULL, &err);
    g_assert_null(bs2);
    g_assert_true(g_str_has_prefix(error_get_pretty(err), "Failed to get \"write\" lock\n"));
    g_clear_error(&err);

    /* once we close, the lock is gone */
    bdrv_unref(f->bs);
    f->bs = NULL;
    g_assert_cmpint(run_child(rw, &out), ==, 0);
    g_free(out);

    /* a read-only node does not keep writers out */
    f->bs = fixture_open(f, "read-only=on", &err);
    g_assert_no_error(err);
    g_assert_cmpint(run_child(rw, &out), ==, 0);
    g_free(out);

    /* reopen read-write takes the write lock; read-only again releases it */
    JsonObject *c = json_object_new();
    json_object_set_boolean_member(c, "read-only", false);
    g_assert_cmpint(bdrv_reopen(f->bs, c, &err), ==, 0);
    g_assert_no_error(err);
    g_assert_false(bdrv_is_read_only(f->bs));
    g_assert_cmpint(run_child(rw, &out), ==, 2);
    g_free(out);
    write_gen(f, 0, 4096, 40);
    json_object_set_boolean_member(c, "read-only", true);
    g_assert_cmpint(bdrv_reopen(f->bs, c, &err), ==, 0);
    g_assert_cmpint(run_child(rw, &out), ==, 0);
    g_free(out);
    json_object_unref(c);
    check_all(f);

    g_free(rw);
    g_free(ro);
    g_free(nolock);
}

/* ---- registration --------------------------------------------------------------------------- */

typedef void IntegrityTestFn(Fixture *f);

typedef struct IntegrityTest {
    const IntegrityCase *ic;
    IntegrityTestFn *fn;
} IntegrityTest;

static void run_integrity_test(gconstpointer opaque)
{
    const IntegrityTest *t = opaque;
    Fixture f;
    if (fixture_setup(&f, t->ic, FILE_SIZE)) {
        t->fn(&f);
        check_all(&f);
    }
    fixture_teardown(&f);
}

static const struct {
    const char *name;
    IntegrityTestFn *fn;
} integrity_tests[] = {
    { "pattern", test_pattern },
    { "vectored", test_vectored },
    { "eof", test_eof },
    { "zeroes-discard", test_zeroes_discard },
    { "flush", test_flush },
    { "concurrent-1000", test_concurrent },
    { "drain", test_drain },
    { "rmw-serialisation", test_rmw },
    { "zeroes-fallback", test_zeroes_fallback },
    { "random-batches", test_random },
    { "iothread-move", test_iothread_move },
    { "locking", test_locking },
};

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--lock-child")) {
        return lock_child(argv[2]);
    }
    self_exe = g_file_read_link("/proc/self/exe", NULL);
    g_test_init(&argc, &argv, NULL);

    const char *base = g_getenv("RINGBLK_TEST_DIR");
    scratch_dir = g_strdup_printf("%s/ringblk-integrity-XXXXXX", base ? base : "/var/tmp");
    if (!g_mkdtemp(scratch_dir)) {
        g_printerr("cannot create a scratch directory under %s\n", base ? base : "/var/tmp");
        return 1;
    }
    tmpfs_dir = g_strdup("/dev/shm/ringblk-integrity-XXXXXX");
    if (!g_mkdtemp(tmpfs_dir)) {
        g_free(tmpfs_dir);
        tmpfs_dir = NULL;
    }

    for (size_t c = 0; c < G_N_ELEMENTS(integrity_cases); c++) {
        for (size_t t = 0; t < G_N_ELEMENTS(integrity_tests); t++) {
            IntegrityTest *it = g_new(IntegrityTest, 1);
            it->ic = &integrity_cases[c];
            it->fn = integrity_tests[t].fn;
            char *path = g_strdup_printf("/block/integrity/%s/%s", integrity_cases[c].name,
                                         integrity_tests[t].name);
            g_test_add_data_func_full(path, it, run_integrity_test, g_free);
            g_free(path);
        }
    }
    int ret = g_test_run();
    g_rmdir(scratch_dir);
    if (tmpfs_dir) {
        g_rmdir(tmpfs_dir);
    }
    g_free(scratch_dir);
    g_free(tmpfs_dir);
    g_free((char *)self_exe);
    return ret;
}
