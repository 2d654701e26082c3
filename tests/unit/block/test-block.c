/*
 * Block layer core: opening nodes, names, request checks, accounting, the
 * null drivers, the raw format and blkdebug. File-backed behaviour is in
 * test-file-posix.c and test-data-integrity.c.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "block/block.h"
#include "block/block_int.h"
#include "util/iothread.h"

static char *scratch_dir;

static BlockDriverState *open_ok(const char *opts)
{
    Error *err = NULL;
    BlockDriverState *bs = bdrv_open_string(opts, &err);
    if (!bs) {
        g_error("open '%s': %s", opts, error_get_pretty(err));
    }
    return bs;
}

static void open_fails(const char *opts, const char *msg)
{
    Error *err = NULL;
    BlockDriverState *bs = bdrv_open_string(opts, &err);
    g_assert_null(bs);
    g_assert_nonnull(err);
    g_assert_cmpstr(error_get_pretty(err), ==, msg);
    error_free(err);
}

static char *make_file(const char *name, size_t size, int pattern)
{
    char *path = g_build_filename(scratch_dir, name, NULL);
    char *buf = g_malloc(size);
    memset(buf, pattern, size);
    g_assert_true(g_file_set_contents(path, buf, size, NULL));
    g_free(buf);
    return path;
}

/* ---- nodes ------------------------------------------------------------------------ */

static void test_open_names(void)
{
    BlockDriverState *a = open_ok("driver=null-co,node-name=disk0");
    BlockDriverState *b = open_ok("driver=null-aio");
    g_assert_cmpstr(bdrv_get_node_name(a), ==, "disk0");
    g_assert_true(bdrv_get_node_name(b)[0] == '#');
    g_assert_true(bdrv_find_node("disk0") == a);
    g_assert_true(bdrv_find_node(bdrv_get_node_name(b)) == b);
    g_assert_null(bdrv_find_node("nope"));
    g_assert_cmpstr(bdrv_get_driver_name(a), ==, "null-co");
    g_assert_cmpstr(bdrv_get_driver_name(b), ==, "null-aio");

    int n = 0;
    bool seen_a = false, seen_b = false;
    for (BlockDriverState *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        n++;
        seen_a |= bs == a;
        seen_b |= bs == b;
    }
    g_assert_cmpint(n, ==, 2);
    g_assert_true(seen_a && seen_b);

    open_fails("driver=null-co,node-name=disk0", "Duplicate nodes with node-name='disk0'");
    open_fails("driver=null-co,node-name=0bad", "Invalid node-name: '0bad'");

    /* refcount: the node stays until the last reference goes */
    bdrv_ref(a);
    bdrv_unref(a);
    g_assert_true(bdrv_find_node("disk0") == a);
    bdrv_unref(a);
    g_assert_null(bdrv_find_node("disk0"));
    bdrv_unref(b);
    g_assert_null(bdrv_next_node(NULL));
}

static void test_open_errors(void)
{
    Error *err = NULL;
    g_assert_null(bdrv_open_string("driver=nosuch", &err));
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(error_get_pretty(err), "driver"));
    g_clear_error(&err);

    /* raw needs its file */
    g_assert_null(bdrv_open_string("driver=raw", &err));
    g_assert_nonnull(err);
    g_clear_error(&err);

    open_fails("{\"driver\": \"raw\", \"file\": \"missing-node\"}",
               "Cannot find device='missing-node' nor node-name='missing-node'");

    char *path = g_build_filename(scratch_dir, "does-not-exist", NULL);
    char *opts = g_strdup_printf("driver=file,filename=%s", path);
    char *msg = g_strdup_printf("Could not open '%s': No such file or directory", path);
    open_fails(opts, msg);
    g_free(msg);
    g_free(opts);
    g_free(path);
}

static void test_open_json(void)
{
    BlockDriverState *bs = open_ok("{\"driver\": \"null-co\", \"size\": 65536, "
                                   "\"node-name\": \"j\"}");
    g_assert_cmpint(bdrv_getlength(bs), ==, 65536);

    /* bdrv_open does not take ownership of the tree */
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "driver", "null-aio");
    json_object_set_int_member(o, "size", 4096);
    Error *err = NULL;
    BlockDriverState *bs2 = bdrv_open(o, &err);
    g_assert_no_error(err);
    g_assert_cmpint(bdrv_getlength(bs2), ==, 4096);
    g_assert_cmpstr(json_object_get_string_member(o, "driver"), ==, "null-aio");
    g_assert_false(json_object_has_member(o, "read-zeroes"));
    json_object_unref(o);
    bdrv_unref(bs2);
    bdrv_unref(bs);
}

/* ---- request checks ----------------------------------------------------------------- */

typedef struct Done {
    int ret;
    int calls;
} Done;

static void done_cb(void *opaque, int ret)
{
    Done *d = opaque;
    d->ret = ret;
    d->calls++;
}

static void test_checks(void)
{
    BlockDriverState *bs = open_ok("driver=null-co,size=1M,read-zeroes=on");
    char buf[4096];

    g_assert_cmpint(bdrv_pread(bs, -1, 512, buf, 0), ==, -EIO);
    g_assert_cmpint(bdrv_pread(bs, (1 << 20) - 511, 512, buf, 0), ==, -EIO);
    g_assert_cmpint(bdrv_pread(bs, 1 << 20, 1, buf, 0), ==, -EIO);
    g_assert_cmpint(bdrv_pread(bs, 0, 512, buf, BDRV_REQ_FUA), ==, -EINVAL);
    g_assert_cmpint(bdrv_pwrite_zeroes(bs, 0, 1 << 21, 0), ==, -EIO);
    g_assert_cmpint(bdrv_pdiscard(bs, -512, 512), ==, -EIO);
    g_assert_cmpint(bdrv_pread(bs, (1 << 20) - 512, 512, buf, 0), ==, 0);
    g_assert_cmpint(bdrv_pread(bs, 1 << 20, 0, buf, 0), ==, 0);

    const BlockAcctStats *st = bdrv_get_stats(bs);
    g_assert_cmpuint(st->invalid_ops[BLOCK_ACCT_READ], ==, 4);
    g_assert_cmpuint(st->invalid_ops[BLOCK_ACCT_ZEROES], ==, 1);
    g_assert_cmpuint(st->invalid_ops[BLOCK_ACCT_DISCARD], ==, 1);
    g_assert_cmpuint(st->nr_ops[BLOCK_ACCT_READ], ==, 2);
    g_assert_cmpuint(st->nr_bytes[BLOCK_ACCT_READ], ==, 512);

    /* A single request over INT_MAX bytes is refused before anything is touched. */
    {
        BlockDriverState *big = open_ok("driver=null-co,size=8G");
        IOVector q;
        iovector_init_buf(&q, buf, (size_t)3 << 30);    /* never dereferenced */
        g_assert_cmpint(bdrv_preadv(big, 0, &q, 0), ==, -E2BIG);
        g_assert_cmpint(bdrv_pwritev(big, 0, &q, 0), ==, -E2BIG);
        g_assert_cmpint(bdrv_pwrite_zeroes(big, 0, (int64_t)4 << 30, 0), ==, 0);
        g_assert_cmpuint(bdrv_get_stats(big)->invalid_ops[BLOCK_ACCT_READ], ==, 1);
        bdrv_unref(big);
    }

    /* An invalid request's callback never runs inside the submitting call. */
    Done d = { 1, 0 };
    IOVector qiov;
    iovector_init_buf(&qiov, buf, 512);
    bdrv_aio_preadv(bs, -4096, &qiov, 0, done_cb, &d);
    g_assert_cmpint(d.calls, ==, 0);
    AIO_WAIT_WHILE(bdrv_get_aio_context(bs), d.calls == 0);
    g_assert_cmpint(d.calls, ==, 1);
    g_assert_cmpint(d.ret, ==, -EIO);
    bdrv_unref(bs);

    /* read-only nodes refuse every modification with -EPERM; a flush is a no-op */
    bs = open_ok("driver=null-co,size=1M,read-only=on");
    g_assert_true(bdrv_is_read_only(bs));
    g_assert_cmpint(bdrv_pwrite(bs, 0, 512, buf, 0), ==, -EPERM);
    g_assert_cmpint(bdrv_pwrite_zeroes(bs, 0, 512, 0), ==, -EPERM);
    g_assert_cmpint(bdrv_pdiscard(bs, 0, 512), ==, -EPERM);
    g_assert_cmpint(bdrv_flush(bs), ==, 0);      /* nothing to flush */
    g_assert_cmpint(bdrv_pread(bs, 0, 512, buf, 0), ==, 0);
    bdrv_unref(bs);
}

/* ---- null ------------------------------------------------------------------------------ */

static void test_null_read_zeroes(void)
{
    const char *drivers[] = { "null-co", "null-aio" };
    for (int i = 0; i < 2; i++) {
        char *o = g_strdup_printf("driver=%s,size=64k,read-zeroes=on", drivers[i]);
        BlockDriverState *bs = open_ok(o);
        char buf[4096];
        memset(buf, 0x55, sizeof(buf));
        g_assert_cmpint(bdrv_pread(bs, 4096, 4096, buf, 0), ==, 0);
        for (int j = 0; j < 4096; j++) {
            g_assert_cmpint(buf[j], ==, 0);
        }
        g_assert_cmpint(bdrv_pwrite(bs, 0, 4096, buf, 0), ==, 0);
        g_assert_cmpint(bdrv_flush(bs), ==, 0);
        g_assert_cmpint(bdrv_pwrite_zeroes(bs, 0, 65536, 0), ==, 0);
        bdrv_unref(bs);
        g_free(o);

        o = g_strdup_printf("driver=%s,size=64k", drivers[i]);
        bs = open_ok(o);
        memset(buf, 0x55, sizeof(buf));
        g_assert_cmpint(bdrv_pread(bs, 0, 4096, buf, 0), ==, 0);
        g_assert_cmpint(buf[0], ==, 0x55);     /* read-zeroes=off leaves the buffer */
        bdrv_unref(bs);
        g_free(o);
    }
}

static void test_null_latency(void)
{
    const char *drivers[] = { "null-co", "null-aio" };
    for (int i = 0; i < 2; i++) {
        char *o = g_strdup_printf("driver=%s,latency-ns=2000000", drivers[i]);
        BlockDriverState *bs = open_ok(o);
        char buf[512];
        int64_t t0 = aio_clock_get_ns(AIO_CLOCK_MONOTONIC);
        Done d[8] = { 0 };
        IOVector q[8];
        for (int j = 0; j < 8; j++) {
            iovector_init_buf(&q[j], buf, sizeof(buf));
            bdrv_aio_preadv(bs, 0, &q[j], 0, done_cb, &d[j]);
        }
        AIO_WAIT_WHILE(bdrv_get_aio_context(bs), d[7].calls == 0);
        /* Lower bound only: the latency is a minimum, never an upper limit. */
        g_assert_cmpint(aio_clock_get_ns(AIO_CLOCK_MONOTONIC) - t0, >=, 2000000);
        for (int j = 0; j < 8; j++) {
            g_assert_cmpint(d[j].calls, ==, 1);
            g_assert_cmpint(d[j].ret, ==, 0);
        }
        const BlockAcctStats *st = bdrv_get_stats(bs);
        g_assert_cmpuint(st->max_time_ns[BLOCK_ACCT_READ], >=, 2000000);
        bdrv_unref(bs);
        g_free(o);
    }
}

/* Many requests in flight on null-aio complete, each exactly once. */
static void test_null_many(void)
{
    BlockDriverState *bs = open_ok("driver=null-aio,read-zeroes=on");
    enum { N = 1000 };
    Done *d = g_new0(Done, N);
    IOVector *q = g_new(IOVector, N);
    char *buf = g_malloc(512 * N);
    for (int i = 0; i < N; i++) {
        iovector_init_buf(&q[i], buf + 512 * i, 512);
        bdrv_aio_preadv(bs, 512 * i, &q[i], 0, done_cb, &d[i]);
    }
    bdrv_drain(bs);
    for (int i = 0; i < N; i++) {
        g_assert_cmpint(d[i].calls, ==, 1);
        g_assert_cmpint(d[i].ret, ==, 0);
    }
    g_free(buf);
    g_free(q);
    g_free(d);
    bdrv_unref(bs);
}

/* ---- accounting ---------------------------------------------------------------------------- */

static void test_accounting(void)
{
    BlockDriverState *bs = open_ok("driver=null-co,size=1M");
    char buf[8192] = { 0 };
    Error *err = NULL;
    const uint64_t bounds[] = { 1, 1000000000ull };

    g_assert_cmpint(bdrv_latency_histogram_set(bs, BLOCK_ACCT_MAX, bounds, 2, &err), ==, 0);
    g_assert_cmpint(bdrv_pwrite(bs, 0, 4096, buf, 0), ==, 0);
    g_assert_cmpint(bdrv_pwrite(bs, 4096, 8192, buf, 0), ==, 0);
    g_assert_cmpint(bdrv_pread(bs, 0, 512, buf, 0), ==, 0);
    g_assert_cmpint(bdrv_flush(bs), ==, 0);
    g_assert_cmpint(bdrv_pdiscard(bs, 0, 4096), ==, 0);
    g_assert_cmpint(bdrv_pwrite_zeroes(bs, 0, 4096, 0), ==, 0);

    const BlockAcctStats *st = bdrv_get_stats(bs);
    g_assert_cmpuint(st->nr_ops[BLOCK_ACCT_WRITE], ==, 2);
    g_assert_cmpuint(st->nr_bytes[BLOCK_ACCT_WRITE], ==, 12288);
    g_assert_cmpuint(st->nr_ops[BLOCK_ACCT_READ], ==, 1);
    g_assert_cmpuint(st->nr_bytes[BLOCK_ACCT_READ], ==, 512);
    g_assert_cmpuint(st->nr_ops[BLOCK_ACCT_FLUSH], ==, 1);
    g_assert_cmpuint(st->nr_ops[BLOCK_ACCT_DISCARD], ==, 1);
    g_assert_cmpuint(st->nr_ops[BLOCK_ACCT_ZEROES], ==, 1);
    g_assert_cmpuint(st->failed_ops[BLOCK_ACCT_WRITE], ==, 0);
    g_assert_cmpuint(st->total_time_ns[BLOCK_ACCT_WRITE], >=, st->max_time_ns[BLOCK_ACCT_WRITE]);

    const BlockLatencyHistogram *h = &st->latency_histogram[BLOCK_ACCT_WRITE];
    g_assert_cmpint(h->nbins, ==, 3);
    g_assert_cmpuint(h->bins[0] + h->bins[1] + h->bins[2], ==, 2);
    g_assert_cmpuint(h->bins[0], ==, 0);   /* nothing completes in under 1 ns */

    /* boundaries: strictly increasing, positive */
    const uint64_t bad[] = { 10, 10 };
    g_assert_cmpint(bdrv_latency_histogram_set(bs, BLOCK_ACCT_READ, bad, 2, &err), ==, -EINVAL);
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "Latency histogram boundaries must be strictly increasing");
    g_clear_error(&err);
    const uint64_t zero[] = { 0 };
    g_assert_cmpint(bdrv_latency_histogram_set(bs, BLOCK_ACCT_READ, zero, 1, &err), ==, -EINVAL);
    g_clear_error(&err);

    /* n == 0 removes one type's histogram; the others stay */
    g_assert_cmpint(bdrv_latency_histogram_set(bs, BLOCK_ACCT_READ, NULL, 0, &err), ==, 0);
    g_assert_cmpint(st->latency_histogram[BLOCK_ACCT_READ].nbins, ==, 0);
    g_assert_cmpint(st->latency_histogram[BLOCK_ACCT_WRITE].nbins, ==, 3);
    bdrv_unref(bs);
}

/* ---- raw ------------------------------------------------------------------------------------- */

static void test_raw_slice(void)
{
    char *path = make_file("slice.img", 65536, 0);
    /* Byte i of the file holds i / 256. */
    char *fo = g_strdup_printf("driver=file,filename=%s,node-name=f0", path);
    BlockDriverState *f = open_ok(fo);
    g_free(fo);
    char buf[65536];
    for (int i = 0; i < 65536; i++) {
        buf[i] = (char)(i / 256);
    }
    g_assert_cmpint(bdrv_pwrite(f, 0, 65536, buf, 0), ==, 0);

    Error *err = NULL;
    BlockDriverState *r = bdrv_open_string(
        "{\"driver\": \"raw\", \"file\": \"f0\", \"offset\": 4096, \"size\": 8192}", &err);
    g_assert_no_error(err);
    g_assert_cmpint(bdrv_getlength(r), ==, 8192);
    char rb[8192];
    g_assert_cmpint(bdrv_pread(r, 0, 8192, rb, 0), ==, 0);
    for (int i = 0; i < 8192; i++) {
        g_assert_cmpint(rb[i], ==, (char)((4096 + i) / 256));
    }
    /* the slice ends where size says */
    g_assert_cmpint(bdrv_pread(r, 8192 - 100, 101, rb, 0), ==, -EIO);
    memset(rb, 0x77, 100);
    g_assert_cmpint(bdrv_pwrite(r, 10, 100, rb, 0), ==, 0);
    g_assert_cmpint(bdrv_pread(f, 4096 + 10, 100, buf, 0), ==, 0);
    for (int i = 0; i < 100; i++) {
        g_assert_cmpint(buf[i], ==, 0x77);
    }
    g_assert_cmpint(bdrv_pread(f, 4096 + 9, 1, buf, 0), ==, 0);
    g_assert_cmpint(buf[0], ==, (char)((4096 + 9) / 256));
    g_assert_cmpint(bdrv_truncate(r, 4096, true, "off", &err), ==, -ENOTSUP);
    g_clear_error(&err);
    bdrv_unref(r);

    open_fails("{\"driver\": \"raw\", \"file\": \"f0\", \"offset\": 65000, \"size\": 8192}",
               "The sum of offset (65000) and size (8192) has to be smaller or equal to "
               "the  actual size of the containing file (65536)");
    bdrv_unref(f);
    g_unlink(path);
    g_free(path);
}

static void test_raw_nested(void)
{
    char *path = make_file("nested.img", 1 << 20, 0x11);
    char *o = g_strdup_printf("driver=raw,file.driver=file,file.filename=%s,read-only=on", path);
    BlockDriverState *bs = open_ok(o);
    g_assert_cmpstr(bdrv_get_driver_name(bs), ==, "raw");
    g_assert_cmpstr(bdrv_get_filename(bs), ==, path);
    g_assert_cmpint(bdrv_getlength(bs), ==, 1 << 20);
    g_assert_true(bdrv_is_read_only(bs));
    char buf[512];
    g_assert_cmpint(bdrv_pwrite(bs, 0, 512, buf, 0), ==, -EPERM);
    g_assert_cmpint(bdrv_pread(bs, 100, 512, buf, 0), ==, 0);
    g_assert_cmpint(buf[0], ==, 0x11);

    BlockNodeInfo info;
    bdrv_query_node_info(bs, &info);
    g_assert_cmpstr(info.driver, ==, "raw");
    g_assert_cmpstr(info.filename, ==, path);
    g_assert_cmpint(info.size, ==, 1 << 20);
    g_assert_true(info.read_only);
    g_assert_nonnull(info.aio);
    g_assert_cmpstr(info.aio_requested, ==, "auto");
    bdrv_node_info_clear(&info);
    bdrv_unref(bs);
    g_free(o);
    g_unlink(path);
    g_free(path);
}

/* A raw node without a slice is skipped by the request path, never its checks. */
static void test_raw_passthrough(void)
{
    char *path = make_file("pass.img", 65536, 0x44);
    char *fo = g_strdup_printf("driver=file,filename=%s,node-name=pf", path);
    BlockDriverState *f = open_ok(fo);
    g_free(fo);
    BlockDriverState *r = open_ok("{\"driver\": \"raw\", \"file\": \"pf\"}");
    char buf[512];
    g_assert_cmpint(bdrv_pread(r, 0, 512, buf, 0), ==, 0);
    g_assert_cmpint(buf[0], ==, 0x44);
    /* its statistics are its child's */
    g_assert_true(bdrv_get_stats(r) == bdrv_get_stats(f));
    g_assert_cmpuint(bdrv_get_stats(f)->nr_ops[BLOCK_ACCT_READ], ==, 1);
    bdrv_unref(r);

    /* a read-only parent over a read-write child keeps refusing writes */
    r = open_ok("{\"driver\": \"raw\", \"file\": \"pf\", \"read-only\": true}");
    g_assert_cmpint(bdrv_pwrite(r, 0, 512, buf, 0), ==, -EPERM);
    g_assert_true(bdrv_get_stats(r) != bdrv_get_stats(f));
    /* ... also after the child alone went read-only and back */
    Error *err = NULL;
    JsonObject *c = json_object_new();
    json_object_set_boolean_member(c, "read-only", true);
    g_assert_cmpint(bdrv_reopen(f, c, &err), ==, 0);
    g_assert_cmpint(bdrv_pwrite(r, 0, 512, buf, 0), ==, -EPERM);
    json_object_set_boolean_member(c, "read-only", false);
    g_assert_cmpint(bdrv_reopen(f, c, &err), ==, 0);
    g_assert_no_error(err);
    g_assert_cmpint(bdrv_pwrite(r, 0, 512, buf, 0), ==, -EPERM);
    g_assert_cmpint(bdrv_pwrite(f, 0, 512, buf, 0), ==, 0);
    json_object_unref(c);
    bdrv_unref(r);
    bdrv_unref(f);
    g_unlink(path);
    g_free(path);
}

/* ---- blkdebug ---------------------------------------------------------------------------------- */

static void test_blkdebug(void)
{
    BlockDriverState *bs = open_ok(
        "{\"driver\": \"blkdebug\", \"image\": {\"driver\": \"null-co\", \"read-zeroes\": true},"
        " \"inject-error\": [{\"iotype\": \"read\", \"errno\": 28, \"sector\": 8, \"once\": true},"
        "                    {\"iotype\": \"flush\", \"errno\": 5}]}");
    char buf[4096];
    g_assert_cmpint(bdrv_pread(bs, 0, 4096, buf, 0), ==, 0);        /* sectors 0-7 */
    g_assert_cmpint(bdrv_pread(bs, 4000, 200, buf, 0), ==, -ENOSPC); /* touches sector 8 */
    g_assert_cmpint(bdrv_pread(bs, 4000, 200, buf, 0), ==, 0);       /* once */
    g_assert_cmpint(bdrv_pwrite(bs, 4096, 512, buf, 0), ==, 0);
    g_assert_cmpint(bdrv_flush(bs), ==, -EIO);
    g_assert_cmpint(bdrv_flush(bs), ==, -EIO);
    const BlockAcctStats *st = bdrv_get_stats(bs);
    g_assert_cmpuint(st->failed_ops[BLOCK_ACCT_READ], ==, 1);
    g_assert_cmpuint(st->failed_ops[BLOCK_ACCT_FLUSH], ==, 2);
    bdrv_unref(bs);
}

/* ---- block status ------------------------------------------------------------------------------------------ */

static void test_block_status_null(void)
{
    BlockDriverState *bs = open_ok("driver=null-co,size=1M,read-zeroes=on");
    int64_t pnum;
    int status;
    g_assert_cmpint(bdrv_block_status(bs, 4096, 1 << 21, &pnum, &status), ==, 0);
    g_assert_cmpint(pnum, ==, (1 << 20) - 4096);
    g_assert_cmpint(status, ==, BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO);
    g_assert_cmpint(bdrv_block_status(bs, -1, 512, &pnum, &status), ==, -EINVAL);
    bdrv_unref(bs);
}

/* ---- limits: splitting at max_transfer, bouncing long vectors --------------------------- */

static void test_split_and_bounce(void)
{
    char *path = make_file("split.img", 1 << 20, 0);
    char *o = g_strdup_printf("driver=raw,file.driver=file,file.filename=%s", path);
    BlockDriverState *bs = open_ok(o);
    g_free(o);
    BlockDriverState *file = bs->file;
    /* Pretend the device takes at most 8 KiB and 4 segments per request. */
    file->bl.max_transfer = 8192;
    file->bl.max_iov = 4;
    bdrv_io_refresh_limits(file);

    enum { LEN = 100000 };
    uint8_t *w = g_malloc(LEN), *r = g_malloc(LEN);
    for (int i = 0; i < LEN; i++) {
        w[i] = (uint8_t)(i * 31 + 7);
    }
    g_assert_cmpint(bdrv_pwrite(bs, 12345, LEN, w, 0), ==, 0);
    const BlockAcctStats *st = bdrv_get_stats(file);
    g_assert_cmpuint(st->nr_ops[BLOCK_ACCT_WRITE], ==, 1);      /* one request, many fragments */
    g_assert_cmpint(bdrv_pread(bs, 12345, LEN, r, 0), ==, 0);
    g_assert_cmpint(memcmp(w, r, LEN), ==, 0);

    /* 50 segments > max_iov: bounced, still exact */
    IOVector q;
    iovector_init(&q, 4);
    for (int i = 0; i < 50; i++) {
        iovector_add(&q, r + i * 2000, 2000);
    }
    memset(r, 0, LEN);
    g_assert_cmpint(bdrv_preadv(bs, 12345, &q, 0), ==, 0);
    g_assert_cmpint(memcmp(w, r, LEN), ==, 0);
    g_assert_cmpint(bdrv_pwritev(bs, 500000, &q, 0), ==, 0);
    memset(r, 0, LEN);
    g_assert_cmpint(bdrv_pread(bs, 500000, LEN, r, 0), ==, 0);
    g_assert_cmpint(memcmp(w, r, LEN), ==, 0);
    iovector_destroy(&q);

    /* independent check of the file */
    char *data;
    gsize len;
    g_assert_true(g_file_get_contents(path, &data, &len, NULL));
    g_assert_cmpint(memcmp(data + 12345, w, LEN), ==, 0);
    g_assert_cmpint(memcmp(data + 500000, w, LEN), ==, 0);
    g_assert_cmpint(data[12344], ==, 0);
    g_assert_cmpint(data[12345 + LEN], ==, 0);
    g_free(data);
    g_free(w);
    g_free(r);
    bdrv_unref(bs);
    g_unlink(path);
    g_free(path);
}

/* ---- a format over a file, moved to an IOThread ----------------------------------------- */

static void test_chain_iothread(void)
{
    char *path = make_file("chain.img", 1 << 20, 0x22);
    char *o = g_strdup_printf("driver=raw,node-name=top,file.driver=file,file.filename=%s,"
                              "file.node-name=bottom", path);
    BlockDriverState *bs = open_ok(o);
    g_free(o);
    Error *err = NULL;
    IOThread *iot = iothread_new("chain-io", &err);
    g_assert_no_error(err);
    AioContext *ctx = iothread_get_aio_context(iot);

    g_assert_cmpint(bdrv_set_aio_context(bs, ctx, &err), ==, 0);
    g_assert_true(bdrv_get_aio_context(bs) == ctx);
    g_assert_true(bdrv_get_aio_context(bdrv_find_node("bottom")) == ctx);

    /* sync helpers from the main thread, the node in the iothread */
    char buf[5000];
    memset(buf, 0x33, sizeof(buf));
    g_assert_cmpint(bdrv_pwrite(bs, 777, sizeof(buf), buf, 0), ==, 0);
    g_assert_cmpint(bdrv_flush(bs), ==, 0);
    memset(buf, 0, sizeof(buf));
    g_assert_cmpint(bdrv_pread(bs, 776, 2, buf, 0), ==, 0);
    g_assert_cmpint(buf[0], ==, 0x22);
    g_assert_cmpint(buf[1], ==, 0x33);
    bdrv_drain_all();

    /* reopen while it lives in the iothread (the engine is touched there) */
    JsonObject *c = json_object_new();
    JsonObject *cache = json_object_new();
    json_object_set_boolean_member(cache, "direct", true);
    json_object_set_object_member(c, "cache", cache);
    g_assert_cmpint(bdrv_reopen(bs, c, &err), ==, 0);
    g_assert_no_error(err);
    json_object_unref(c);
    g_assert_cmpuint(bdrv_request_alignment(bs), >=, 512);
    char again[10];
    memset(again, 0x33, sizeof(again));
    g_assert_cmpint(bdrv_pwrite(bs, 777, 10, again, 0), ==, 0);

    /* close while it lives in the iothread */
    bdrv_unref(bs);
    g_assert_null(bdrv_find_node("bottom"));
    iothread_destroy(iot);

    char *data;
    gsize len;
    g_assert_true(g_file_get_contents(path, &data, &len, NULL));
    g_assert_cmpint(data[777], ==, 0x33);
    g_assert_cmpint(data[777 + 4999], ==, 0x33);
    g_assert_cmpint(data[777 + 5000], ==, 0x22);
    g_free(data);
    g_unlink(path);
    g_free(path);
}

/* null-aio's eventfd and null's latency timer follow the node to an IOThread and back. */
static void test_null_iothread(void)
{
    const char *drivers[] = { "null-co", "null-aio" };
    Error *err = NULL;
    IOThread *iot = iothread_new("null-io", &err);
    g_assert_no_error(err);
    for (int i = 0; i < 2; i++) {
        for (int lat = 0; lat < 2; lat++) {
            char *o = g_strdup_printf("driver=%s,read-zeroes=on,latency-ns=%d", drivers[i],
                                      lat ? 100000 : 0);
            BlockDriverState *bs = open_ok(o);
            g_free(o);
            char buf[4096];
            for (int round = 0; round < 2; round++) {
                g_assert_cmpint(bdrv_set_aio_context(bs, iothread_get_aio_context(iot), &err),
                                ==, 0);
                memset(buf, 1, sizeof(buf));
                g_assert_cmpint(bdrv_pread(bs, 0, 4096, buf, 0), ==, 0);
                g_assert_cmpint(buf[4095], ==, 0);
                g_assert_cmpint(bdrv_set_aio_context(bs, aio_context_main(), &err), ==, 0);
                memset(buf, 1, sizeof(buf));
                g_assert_cmpint(bdrv_pread(bs, 0, 4096, buf, 0), ==, 0);
                g_assert_cmpint(buf[0], ==, 0);
            }
            bdrv_unref(bs);
        }
    }
    iothread_destroy(iot);
}

/* A node whose child is shared with another parent cannot move. */
static void test_move_shared_child(void)
{
    BlockDriverState *base = open_ok("driver=null-co,node-name=shared");
    BlockDriverState *a = open_ok("{\"driver\": \"raw\", \"file\": \"shared\"}");
    Error *err = NULL;
    IOThread *iot = iothread_new("shared-io", &err);
    g_assert_cmpint(bdrv_set_aio_context(a, iothread_get_aio_context(iot), &err), ==, -EBUSY);
    g_assert_nonnull(strstr(error_get_pretty(err), "is shared"));
    g_clear_error(&err);
    g_assert_true(bdrv_get_aio_context(a) == aio_context_main());
    bdrv_unref(a);
    bdrv_unref(base);
    iothread_destroy(iot);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    scratch_dir = g_strdup("/var/tmp/ringblk-test-block-XXXXXX");
    if (!g_mkdtemp(scratch_dir)) {
        g_printerr("cannot create a scratch directory\n");
        return 1;
    }
    g_test_add_func("/block/open/names", test_open_names);
    g_test_add_func("/block/open/errors", test_open_errors);
    g_test_add_func("/block/open/json", test_open_json);
    g_test_add_func("/block/request/checks", test_checks);
    g_test_add_func("/block/accounting", test_accounting);
    g_test_add_func("/block/block-status/null", test_block_status_null);
    g_test_add_func("/null/read-zeroes", test_null_read_zeroes);
    g_test_add_func("/null/latency", test_null_latency);
    g_test_add_func("/null/many-in-flight", test_null_many);
    g_test_add_func("/block/request/split-and-bounce", test_split_and_bounce);
    g_test_add_func("/block/aio-context/chain-to-iothread", test_chain_iothread);
    g_test_add_func("/block/aio-context/shared-child", test_move_shared_child);
    g_test_add_func("/null/iothread", test_null_iothread);
    g_test_add_func("/raw/slice", test_raw_slice);
    g_test_add_func("/raw/nested", test_raw_nested);
    g_test_add_func("/raw/passthrough", test_raw_passthrough);
    g_test_add_func("/blkdebug/inject-error", test_blkdebug);
    int ret = g_test_run();
    g_rmdir(scratch_dir);
    g_free(scratch_dir);
    return ret;
}
