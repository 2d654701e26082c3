/*
 * io_uring engine tests: resubmission of short and failed transfers, EOF,
 * overflow, -EBUSY, options (fixed files/buffers, SQPOLL, IOPOLL refusal,
 * restrictions), availability diagnostics (seccomp) and teardown with
 * requests in flight. Faults come from luring_debug_inject().
 * Skips (77) when io_uring is unavailable here.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/magic.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <glib.h>

#include "config-host.h"
#include "block/aio.h"
#include "block/block.h"
#include "block/io_uring.h"
#include "block/raw-aio.h"

#define FILE_SIZE (1024 * 1024)

static const RawAioOps *ops = &raw_aio_io_uring_ops;
static AioContext *ctx;
static char *scratch_dir;

typedef struct TestReq {
    RawAioReq req;
    struct iovec iov[4];
    int ret;
    bool done;
    int *counter;
} TestReq;

static void test_req_cb(void *opaque, int ret)
{
    TestReq *t = opaque;

    g_assert_false(t->done);
    t->done = true;
    t->ret = ret;
    if (t->counter) {
        (*t->counter)++;
    }
}

static uint8_t pattern_byte(uint64_t off)
{
    return (uint8_t)((off * 7 + (off >> 9)) ^ 0x5a);
}

/* A file of size bytes in dir filled with the pattern. */
static int make_file_in(const char *dir, const char *name, int extra_flags, size_t size)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_autofree uint8_t *buf = g_malloc(size);
    int fd;

    for (size_t i = 0; i < size; i++) {
        buf[i] = pattern_byte(i);
    }
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(pwrite(fd, buf, size, 0), ==, (ssize_t)size);
    if (extra_flags) {
        close(fd);
        fd = open(path, O_RDWR | O_CLOEXEC | extra_flags);
        g_assert_cmpint(fd, >=, 0);
    }
    unlink(path);
    return fd;
}

static int make_file(const char *name, int extra_flags, size_t size)
{
    return make_file_in(scratch_dir, name, extra_flags, size);
}

static RawAioConfig default_cfg(void)
{
    return (RawAioConfig) {
        .queue_depth = 0,
        .fixed_buffers = RAW_AIO_ONOFFAUTO_OFF,
        .sq_thread_cpu = -1,
        .restrict_ops = RAW_AIO_ONOFFAUTO_OFF,
    };
}

static RawAioEngine *create_engine(const RawAioConfig *cfg)
{
    Error *err = NULL;
    RawAioEngine *e = ops->create(ctx, cfg, &err);

    if (!e) {
        g_error("create: %s", error_get_pretty(err));
    }
    return e;
}

static void prep(TestReq *t, RawAioType type, int fd, int slot, uint64_t off,
                 void *buf, size_t len)
{
    memset(t, 0, sizeof(*t));
    t->req.type = type;
    t->req.fd = fd;
    t->req.file_slot = slot;
    t->req.offset = off;
    t->req.bytes = len;
    t->iov[0].iov_base = buf;
    t->iov[0].iov_len = len;
    t->req.iov = t->iov;
    t->req.niov = buf ? 1 : 0;
    t->req.cb = test_req_cb;
    t->req.opaque = t;
}

static void wait_for(TestReq *t)
{
    while (!t->done) {
        aio_poll(ctx, true);
    }
}

static void wait_count(int *count, int want)
{
    while (*count < want) {
        aio_poll(ctx, true);
    }
}

static void check_pattern(const uint8_t *buf, uint64_t off, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != pattern_byte(off + i)) {
            g_error("byte %zu (file offset %" PRIu64 "): got 0x%02x, want 0x%02x",
                    i, off + i, buf[i], pattern_byte(off + i));
        }
    }
}

/* ---- Basic I/O ---------------------------------------------------------------- */

/*
 * A lone read of a page-cache file (RAW_AIO_CACHED) is read inline by
 * preadv2(RWF_NOWAIT), still completing from the loop; a read that is
 * only partly there (EOF) or one behind a request in flight uses the ring.
 */
static void test_inline_read(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e = create_engine(&cfg);
    int fd = make_file("inline", 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc(16384);
    g_autofree uint8_t *buf2 = g_malloc(4096);
    struct iovec probe_iov;
    uint8_t probe;
    LuringStats st0, st1;
    TestReq t, u;

    probe_iov = (struct iovec){ &probe, 1 };
    if (preadv2(fd, &probe_iov, 1, 0, RWF_NOWAIT) != 1) {
        g_test_skip("the scratch file system does not take RWF_NOWAIT reads");
        ops->destroy(e);
        close(fd);
        return;
    }

    luring_get_stats(e, &st0);
    prep(&t, RAW_AIO_READ, fd, -1, 8192, buf, 16384);
    t.req.flags = RAW_AIO_CACHED;
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    g_assert_false(t.done);     /* never from within submit */
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    check_pattern(buf, 8192, 16384);
    luring_get_stats(e, &st1);
    g_assert_cmpuint(st1.inline_reads - st0.inline_reads, ==, 1);
    g_assert_cmpuint(st1.sqes - st0.sqes, ==, 0);

    /* Across EOF: the cached 4 KiB inline, the rest through the ring, zero-filled. */
    memset(buf, 0xee, 16384);
    prep(&t, RAW_AIO_READ, fd, -1, FILE_SIZE - 4096, buf, 16384);
    t.req.flags = RAW_AIO_CACHED;
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    check_pattern(buf, FILE_SIZE - 4096, 4096);
    for (size_t i = 4096; i < 16384; i++) {
        g_assert_cmpuint(buf[i], ==, 0);
    }
    luring_get_stats(e, &st0);
    g_assert_cmpuint(st0.inline_reads, ==, st1.inline_reads);
    g_assert_cmpuint(st0.sqes - st1.sqes, >=, 1);

    /* Behind a request in flight: the ring takes it too. */
    prep(&u, RAW_AIO_READ, fd, -1, 0, buf2, 4096);
    g_assert_cmpint(raw_aio_submit(e, &u.req), ==, 0);
    prep(&t, RAW_AIO_READ, fd, -1, 4096, buf, 4096);
    t.req.flags = RAW_AIO_CACHED;
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&u);
    wait_for(&t);
    g_assert_cmpint(u.ret, ==, 0);
    g_assert_cmpint(t.ret, ==, 0);
    check_pattern(buf2, 0, 4096);
    check_pattern(buf, 4096, 4096);
    luring_get_stats(e, &st1);
    g_assert_cmpuint(st1.inline_reads, ==, st0.inline_reads);

    ops->destroy(e);
    close(fd);
}


static void test_read_write(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e = create_engine(&cfg);
    int fd = make_file("rw", 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc(12288);
    g_autofree uint8_t *wbuf = g_malloc(8192);
    TestReq t;

    /* Vectored read: three segments of odd sizes. */
    prep(&t, RAW_AIO_READ, fd, -1, 4096, NULL, 0);
    t.iov[0] = (struct iovec){ buf, 1000 };
    t.iov[1] = (struct iovec){ buf + 1000, 5000 };
    t.iov[2] = (struct iovec){ buf + 6000, 6288 };
    t.req.niov = 3;
    t.req.bytes = 12288;
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    g_assert_false(t.done);     /* never from within submit */
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    check_pattern(buf, 4096, 12288);

    /* Single-segment write, then read back. */
    memset(wbuf, 0xc3, 8192);
    prep(&t, RAW_AIO_WRITE, fd, -1, 65536, wbuf, 8192);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    memset(buf, 0, 8192);
    g_assert_cmpint(pread(fd, buf, 8192, 65536), ==, 8192);
    g_assert_cmpmem(buf, 8192, wbuf, 8192);

    /* Flush. */
    prep(&t, RAW_AIO_FLUSH, fd, -1, 0, NULL, 0);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);

    /* Errors reach the callback as -errno. */
    prep(&t, RAW_AIO_READ, 9999, -1, 0, buf, 512);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, -EBADF);

    ops->destroy(e);
    close(fd);
}

/* ---- Resubmission --------------------------------------------------------------- */

/* Short reads injected twice in a row at depth 1 with nothing else in flight. */
static void test_short_read(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e;
    int fd = make_file("short", 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc0(65536);
    LuringStats st;
    TestReq t;

    cfg.queue_depth = 1;
    e = create_engine(&cfg);
    luring_debug_inject(e, LURING_INJECT_SHORT, 2);
    prep(&t, RAW_AIO_READ, fd, -1, 8192, NULL, 0);
    /* Segments chosen so the halves fall mid-segment. */
    t.iov[0] = (struct iovec){ buf, 3000 };
    t.iov[1] = (struct iovec){ buf + 3000, 40000 };
    t.iov[2] = (struct iovec){ buf + 43000, 22536 };
    t.req.niov = 3;
    t.req.bytes = 65536;
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    check_pattern(buf, 8192, 65536);
    luring_get_stats(e, &st);
    /* 2 injected shorts; the mid-segment resume takes one extra step. */
    g_assert_cmpuint(st.resubmits, >=, 2);
    g_assert_cmpuint(st.submitted, ==, 1);
    ops->destroy(e);
    close(fd);
}

static void test_short_write(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e;
    int fd = make_file("shortw", 0, FILE_SIZE);
    g_autofree uint8_t *wbuf = g_malloc(32768);
    g_autofree uint8_t *rbuf = g_malloc(32768);
    LuringStats st;
    TestReq t;

    cfg.queue_depth = 1;
    e = create_engine(&cfg);
    for (int i = 0; i < 32768; i++) {
        wbuf[i] = (uint8_t)(i * 13);
    }
    luring_debug_inject(e, LURING_INJECT_SHORT, 2);
    prep(&t, RAW_AIO_WRITE, fd, -1, 4096, wbuf, 32768);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    luring_get_stats(e, &st);
    g_assert_cmpuint(st.resubmits, ==, 2);
    g_assert_cmpint(pread(fd, rbuf, 32768, 4096), ==, 32768);
    g_assert_cmpmem(rbuf, 32768, wbuf, 32768);
    ops->destroy(e);
    close(fd);
}

static void test_eagain(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e;
    int fd = make_file("eagain", 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc0(4096);
    LuringStats st;
    TestReq t;

    cfg.queue_depth = 1;
    e = create_engine(&cfg);
    luring_debug_inject(e, LURING_INJECT_EAGAIN, 3);
    prep(&t, RAW_AIO_READ, fd, -1, 12288, buf, 4096);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    check_pattern(buf, 12288, 4096);
    luring_get_stats(e, &st);
    g_assert_cmpuint(st.resubmits, ==, 3);
    g_assert_cmpuint(st.sqes, ==, 4);
    ops->destroy(e);
    close(fd);
}

static void test_eof_zero_fill(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e = create_engine(&cfg);
    int fd = make_file("eof", 0, 1000);
    g_autofree uint8_t *buf = g_malloc(8192);
    TestReq t;

    memset(buf, 0xaa, 8192);
    prep(&t, RAW_AIO_READ, fd, -1, 0, NULL, 0);
    t.iov[0] = (struct iovec){ buf, 600 };
    t.iov[1] = (struct iovec){ buf + 600, 7592 };
    t.req.niov = 2;
    t.req.bytes = 8192;
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    check_pattern(buf, 0, 1000);
    for (int i = 1000; i < 8192; i++) {
        g_assert_cmpuint(buf[i], ==, 0);
    }

    /* Entirely past EOF: all zeroes. */
    memset(buf, 0xaa, 4096);
    prep(&t, RAW_AIO_READ, fd, -1, 65536, buf, 4096);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    for (int i = 0; i < 4096; i++) {
        g_assert_cmpuint(buf[i], ==, 0);
    }
    ops->destroy(e);
    close(fd);
}

/* ---- Overflow and submission errors ----------------------------------------------- */

#define OVF_REQS 4096

static int *flush_counter, flush_saw;

static void flush_seen_cb(void *opaque, int ret)
{
    flush_saw = *flush_counter;
    test_req_cb(opaque, ret);
}

/* 4096 reads through a 16-entry ring, then a flush: all complete, in order of FIFO. */
static void test_overflow(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e;
    int fd = make_file("ovf", 0, FILE_SIZE);
    g_autofree TestReq *t = g_new0(TestReq, OVF_REQS + 1);
    g_autofree uint8_t *buf = g_malloc(OVF_REQS * 256);
    LuringStats st;
    int count = 0;

    cfg.queue_depth = 16;
    e = create_engine(&cfg);
    for (int i = 0; i < OVF_REQS; i++) {
        prep(&t[i], RAW_AIO_READ, fd, -1, (uint64_t)i * 256, buf + i * 256, 256);
        t[i].counter = &count;
        g_assert_cmpint(raw_aio_submit(e, &t[i].req), ==, 0);
    }
    prep(&t[OVF_REQS], RAW_AIO_FLUSH, fd, -1, 0, NULL, 0);
    t[OVF_REQS].counter = &count;
    t[OVF_REQS].req.cb = flush_seen_cb;
    flush_counter = &count;
    flush_saw = -1;
    g_assert_cmpint(raw_aio_submit(e, &t[OVF_REQS].req), ==, 0);
    wait_count(&count, OVF_REQS + 1);
    /*
     * The flush overtook nothing: it left the FIFO after every read, so at
     * most 15 reads (the rest of the ring) were still in flight beside it.
     */
    g_assert_cmpint(flush_saw, >=, OVF_REQS - 15);
    for (int i = 0; i <= OVF_REQS; i++) {
        g_assert_true(t[i].done);
        g_assert_cmpint(t[i].ret, ==, 0);
    }
    check_pattern(buf, 0, OVF_REQS * 256);
    luring_get_stats(e, &st);
    g_assert_cmpuint(st.submitted, ==, OVF_REQS + 1);
    g_assert_cmpuint(st.queued, >=, OVF_REQS + 1 - 16);
    ops->destroy(e);
    close(fd);
}

/* io_uring_enter failing with -EBUSY: reap, retry; nothing lost. */
static void test_ebusy(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e;
    int fd = make_file("ebusy", 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc(64 * 512);
    TestReq t[64];
    LuringStats st;
    int count = 0;

    cfg.queue_depth = 8;
    e = create_engine(&cfg);
    luring_debug_inject(e, LURING_INJECT_EBUSY, 3);
    for (int i = 0; i < 64; i++) {
        prep(&t[i], RAW_AIO_READ, fd, -1, (uint64_t)i * 512, buf + i * 512, 512);
        t[i].counter = &count;
        g_assert_cmpint(raw_aio_submit(e, &t[i].req), ==, 0);
    }
    wait_count(&count, 64);
    for (int i = 0; i < 64; i++) {
        g_assert_cmpint(t[i].ret, ==, 0);
    }
    check_pattern(buf, 0, 64 * 512);
    luring_get_stats(e, &st);
    g_assert_cmpuint(st.submit_retries, ==, 3);
    ops->destroy(e);
    close(fd);
}

/* Plugged requests go out in one io_uring_enter at unplug. */
static void test_plug(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e = create_engine(&cfg);
    int fd = make_file("plug", 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc(32 * 4096);
    TestReq t[32];
    LuringStats before, after;
    int count = 0;

    luring_get_stats(e, &before);
    ops->plug(e);
    ops->plug(e);
    for (int i = 0; i < 32; i++) {
        prep(&t[i], RAW_AIO_READ, fd, -1, (uint64_t)i * 4096, buf + i * 4096, 4096);
        t[i].counter = &count;
        g_assert_cmpint(raw_aio_submit(e, &t[i].req), ==, 0);
    }
    ops->unplug(e);
    luring_get_stats(e, &after);
    g_assert_cmpuint(after.enters, ==, before.enters);   /* still plugged */
    ops->unplug(e);
    luring_get_stats(e, &after);
    g_assert_cmpuint(after.enters, ==, before.enters + 1);
    wait_count(&count, 32);
    check_pattern(buf, 0, 32 * 4096);
    ops->destroy(e);
    close(fd);
}

/* Callbacks that submit again are batched into one enter per batch of CQEs. */
typedef struct Chain {
    RawAioEngine *e;
    TestReq t;
    int left;
    AioBH *resubmit_bh;       /* if set, the next read goes from this BH */
    uint8_t buf[512];
} Chain;

static void chain_resubmit(void *opaque)
{
    Chain *c = opaque;

    c->t.req.offset = (c->t.req.offset + 512) % FILE_SIZE;
    g_assert_cmpint(raw_aio_submit(c->e, &c->t.req), ==, 0);
}

static void chain_cb(void *opaque, int ret)
{
    Chain *c = opaque;

    g_assert_cmpint(ret, ==, 0);
    check_pattern(c->buf, c->t.req.offset, 512);
    if (--c->left > 0) {
        if (c->resubmit_bh) {
            aio_bh_schedule(c->resubmit_bh);
        } else {
            chain_resubmit(c);
        }
    }
}

static void test_callback_resubmit(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e = create_engine(&cfg);
    int fd = make_file("chain", 0, FILE_SIZE);
    Chain c[8] = { 0 };

    for (int i = 0; i < 8; i++) {
        c[i].e = e;
        c[i].left = 50;
        prep(&c[i].t, RAW_AIO_READ, fd, -1, (uint64_t)i * 65536, c[i].buf, 512);
        c[i].t.req.cb = chain_cb;
        c[i].t.req.opaque = &c[i];
        g_assert_cmpint(raw_aio_submit(e, &c[i].t.req), ==, 0);
    }
    for (;;) {
        int left = 0;

        for (int i = 0; i < 8; i++) {
            left += c[i].left;
        }
        if (!left) {
            break;
        }
        aio_poll(ctx, true);
    }
    ops->destroy(e);
    close(fd);
}

/* A callback that submits and then nests aio_poll() until that request is done. */
typedef struct Nest {
    RawAioEngine *e;
    int fd;
    TestReq inner;
    uint8_t buf[4096];
    int outer_done;
} Nest;

static void nest_cb(void *opaque, int ret)
{
    Nest *n = opaque;

    g_assert_cmpint(ret, ==, 0);
    if (n->outer_done++ == 0) {
        prep(&n->inner, RAW_AIO_READ, n->fd, -1, 8192, n->buf, 4096);
        g_assert_cmpint(raw_aio_submit(n->e, &n->inner.req), ==, 0);
        while (!n->inner.done) {
            aio_poll(ctx, true);
        }
        g_assert_cmpint(n->inner.ret, ==, 0);
        check_pattern(n->buf, 8192, 4096);
    }
}

static void test_nested_poll(void)
{
    RawAioConfig cfg = default_cfg();
    Nest n = { .e = create_engine(&cfg), .fd = make_file("nest", 0, FILE_SIZE) };
    g_autofree uint8_t *buf = g_malloc(8 * 4096);
    TestReq t[8];

    /* Several CQEs per batch, so the first callback is not the batch's last. */
    ops->plug(n.e);
    for (int i = 0; i < 8; i++) {
        prep(&t[i], RAW_AIO_READ, n.fd, -1, (uint64_t)i * 4096, buf + i * 4096, 4096);
        t[i].req.cb = nest_cb;
        t[i].req.opaque = &n;
        g_assert_cmpint(raw_aio_submit(n.e, &t[i].req), ==, 0);
    }
    ops->unplug(n.e);
    while (n.outer_done < 8) {
        aio_poll(ctx, true);
    }
    check_pattern(buf, 0, 8 * 4096);
    ops->destroy(n.e);
    close(n.fd);
}

/*
 * n 4 KiB reads at off, off + 4096, ... into buf, submitted while plugged
 * (so they reach the engine as one burst); waits for all, each must succeed.
 */
static void plugged_reads(RawAioEngine *e, TestReq *t, int n, int fd, int slot,
                          uint64_t off, uint8_t *buf)
{
    int count = 0;

    ops->plug(e);
    for (int i = 0; i < n; i++) {
        prep(&t[i], RAW_AIO_READ, fd, slot, off + (uint64_t)i * 4096, buf + i * 4096, 4096);
        t[i].counter = &count;
        g_assert_cmpint(raw_aio_submit(e, &t[i].req), ==, 0);
    }
    ops->unplug(e);
    wait_count(&count, n);
    for (int i = 0; i < n; i++) {
        g_assert_cmpint(t[i].ret, ==, 0);
    }
}

/*
 * A burst of completions larger than the kernel's per-enter budget for
 * deferred work (20 items since Linux 6.13): 128 reads punted to io-wq
 * finish together and queue their work at once. All of them must be
 * reaped, not just the first batches: with the loop waiting in our ring
 * (its wait runs the work too) and without (then only luring_get_events()
 * does, after the eventfd's one signal). A tmpfs file punts every read,
 * forced or not (it cannot take non-blocking I/O); elsewhere IOSQE_ASYNC
 * punts the first 11 of each burst.
 */
static void completion_burst(bool loop_wait)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e;
    struct statfs sf;
    bool shm = statfs("/dev/shm", &sf) == 0 && sf.f_type == TMPFS_MAGIC;
    g_autofree char *name = g_strdup_printf("ringblk-test-burst-%d", getpid());
    int fd = make_file_in(shm ? "/dev/shm" : scratch_dir, name, 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc(128 * 4096);
    g_autofree TestReq *t = g_new0(TestReq, 128);

    cfg.queue_depth = 128;
    cfg.async_punt = true;
    if (!loop_wait) {
        g_setenv("RINGBLK_IO_URING_LOOP_WAIT", "0", TRUE);
    }
    e = create_engine(&cfg);
    g_unsetenv("RINGBLK_IO_URING_LOOP_WAIT");
    for (int round = 0; round < 20; round++) {
        plugged_reads(e, t, 128, fd, -1, 0, buf);
    }
    check_pattern(buf, 0, 128 * 4096);
    ops->destroy(e);
    close(fd);
}

static void test_completion_burst(void)
{
    completion_burst(true);
}

static void test_completion_burst_no_loop_wait(void)
{
    completion_burst(false);
}

/* ---- Operations ------------------------------------------------------------------ */

static void test_fua(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e = create_engine(&cfg);
    int fd = make_file("fua", 0, FILE_SIZE);
    g_autofree uint8_t *wbuf = g_malloc(16384);
    g_autofree uint8_t *rbuf = g_malloc(16384);
    LuringStats st;
    TestReq t;

    memset(wbuf, 0x77, 16384);
    prep(&t, RAW_AIO_WRITE, fd, -1, 0, wbuf, 16384);
    t.req.flags = RAW_AIO_FUA;
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    luring_get_stats(e, &st);
    g_assert_cmpuint(st.sqes, ==, 2);     /* write + linked fdatasync */

    /* A short first write: the link is cancelled, the engine goes again. */
    memset(wbuf, 0x99, 16384);
    luring_debug_inject(e, LURING_INJECT_SHORT, 1);
    prep(&t, RAW_AIO_WRITE, fd, -1, 16384, wbuf, 16384);
    t.req.flags = RAW_AIO_FUA;
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    luring_get_stats(e, &st);
    g_assert_cmpuint(st.resubmits, ==, 1);
    g_assert_cmpuint(st.sqes, ==, 6);
    g_assert_cmpint(pread(fd, rbuf, 16384, 16384), ==, 16384);
    g_assert_cmpmem(rbuf, 16384, wbuf, 16384);

    /* A failing write: the error, not the link's -ECANCELED. */
    prep(&t, RAW_AIO_WRITE, fd, -1, (uint64_t)-4096, wbuf, 4096);
    t.req.flags = RAW_AIO_FUA;
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, -EINVAL);
    ops->destroy(e);
    close(fd);
}

static void test_discard_zeroes(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e = create_engine(&cfg);
    int fd = make_file("zero", 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc(65536);
    TestReq t;

    prep(&t, RAW_AIO_DISCARD, fd, -1, 65536, NULL, 65536);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    g_assert_cmpint(pread(fd, buf, 65536, 65536), ==, 65536);
    for (int i = 0; i < 65536; i++) {
        g_assert_cmpuint(buf[i], ==, 0);
    }

    prep(&t, RAW_AIO_WRITE_ZEROES, fd, -1, 262144, NULL, 8192);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    g_assert_cmpint(pread(fd, buf, 16384, 262144 - 4096), ==, 16384);
    check_pattern(buf, 262144 - 4096, 4096);
    for (int i = 4096; i < 12288; i++) {
        g_assert_cmpuint(buf[i], ==, 0);
    }
    check_pattern(buf + 12288, 262144 + 8192, 4096);

    /* Zeroes past EOF extend the file, as a write would. */
    prep(&t, RAW_AIO_WRITE_ZEROES, fd, -1, FILE_SIZE, NULL, 4096);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    g_assert_cmpint(lseek(fd, 0, SEEK_END), ==, FILE_SIZE + 4096);
    ops->destroy(e);
    close(fd);
}

/*
 * Block devices (a loop device; root only): discard goes on the ring as
 * BLOCK_URING_CMD_DISCARD where the kernel has it (6.12), else to the
 * thread pool (BLKDISCARD); write zeroes as FALLOCATE ZERO_RANGE|KEEP_SIZE.
 */
static void test_blkdev_discard_zeroes(void)
{
    g_autofree char *backing = g_build_filename(scratch_dir, "loop-backing", NULL);
    char *argv[] = { (char *)"losetup", (char *)"-f", (char *)"--show", backing, NULL };
    char *detach[] = { (char *)"losetup", (char *)"-d", NULL, NULL };
    g_autofree char *dev = NULL;
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e;
    uint8_t *buf = NULL;
    LuringStats st;
    int status = -1, fd;
    TestReq t;

    fd = open(backing, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, 4 << 20), ==, 0);
    close(fd);
    if (geteuid() != 0 ||
        !g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDERR_TO_DEV_NULL,
                      NULL, NULL, &dev, NULL, &status, NULL) ||
        !g_spawn_check_wait_status(status, NULL) || !dev || !g_str_has_prefix(dev, "/dev/")) {
        g_test_skip("needs root and a free loop device");
        unlink(backing);
        return;
    }
    g_strstrip(dev);
    fd = open(dev, O_RDWR | O_DIRECT | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(posix_memalign((void **)&buf, 4096, 65536), ==, 0);
    e = create_engine(&cfg);

    memset(buf, 0xe7, 65536);
    prep(&t, RAW_AIO_WRITE, fd, -1, 0, buf, 65536);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);

    prep(&t, RAW_AIO_DISCARD, fd, -1, 0, NULL, 16384);
    t.req.flags = RAW_AIO_BLKDEV;
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    prep(&t, RAW_AIO_WRITE_ZEROES, fd, -1, 32768, NULL, 8192);
    t.req.flags = RAW_AIO_BLKDEV;
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    luring_get_stats(e, &st);
    /* Linux 6.12+ takes both on the ring; older kernels send discard to a worker. */
    {
        struct utsname u;
        unsigned maj = 0, min = 0;

        g_assert_cmpint(uname(&u), ==, 0);
        sscanf(u.release, "%u.%u", &maj, &min);
        g_assert_cmpuint(st.sync_ops, ==, maj > 6 || (maj == 6 && min >= 12) ? 0 : 1);
    }

    prep(&t, RAW_AIO_READ, fd, -1, 0, buf, 65536);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    for (int i = 0; i < 65536; i++) {
        /* A loop device's discard punches the backing file: reads as zeroes. */
        bool zero = i < 16384 || (i >= 32768 && i < 40960);
        g_assert_cmpuint(buf[i], ==, zero ? 0 : 0xe7);
    }
    ops->destroy(e);
    close(fd);
    free(buf);
    detach[2] = dev;
    g_spawn_sync(NULL, detach, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL, NULL);
    unlink(backing);
}

/* ---- Options ----------------------------------------------------------------------- */

static void test_fixed_files(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e;
    int fd = make_file("fixed", 0, FILE_SIZE);
    int fd2 = make_file("fixed2", 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc(4096);
    Error *err = NULL;
    TestReq t;
    int slot;

    cfg.fixed_files = RAW_AIO_ONOFFAUTO_ON;
    e = create_engine(&cfg);
    slot = ops->add_file(e, fd, O_RDWR, &err);
    g_assert_no_error(err);
    g_assert_cmpint(slot, >=, 0);

    /* The slot is what the kernel uses: a bogus fd beside it does not matter. */
    prep(&t, RAW_AIO_READ, -1, slot, 8192, buf, 4096);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    check_pattern(buf, 8192, 4096);

    /* Reopen: the slot now names fd2 (same content, written differently). */
    g_assert_cmpint(pwrite(fd2, "ABCD", 4, 8192), ==, 4);
    g_assert_cmpint(ops->update_file(e, slot, fd2), ==, 0);
    prep(&t, RAW_AIO_READ, -1, slot, 8192, buf, 4096);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    g_assert_cmpmem(buf, 4, "ABCD", 4);

    ops->remove_file(e, slot);
    prep(&t, RAW_AIO_READ, -1, slot, 8192, buf, 4096);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, -EBADF);
    g_assert_cmpint(ops->update_file(e, slot, fd2), ==, -EBADF);
    ops->destroy(e);
    close(fd);
    close(fd2);
}

/*
 * fixed-files=auto: a table on rings of our own, async-punt ones included
 * (luring_mark_async() sends low-depth requests by plain fd there); files
 * beyond it, or on a restricted ring, still work by fd.
 */
static void test_fixed_files_auto(void)
{
    static const struct {
        RawAioOnOffAuto mode;
        bool async_punt;
        RawAioOnOffAuto restrict_ops;
        bool table;
    } cases[] = {
        { RAW_AIO_ONOFFAUTO_AUTO, false, RAW_AIO_ONOFFAUTO_OFF, true },
        { RAW_AIO_ONOFFAUTO_AUTO, false, RAW_AIO_ONOFFAUTO_AUTO, true },
        { RAW_AIO_ONOFFAUTO_AUTO, true,  RAW_AIO_ONOFFAUTO_OFF, true },
        { RAW_AIO_ONOFFAUTO_OFF,  false, RAW_AIO_ONOFFAUTO_OFF, false },
        { RAW_AIO_ONOFFAUTO_ON,   true,  RAW_AIO_ONOFFAUTO_OFF, true },
    };
    int fd = make_file("ffauto", 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc(4096);

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        RawAioConfig cfg = default_cfg();
        Error *err = NULL;
        LuringInfo info;
        TestReq t;

        cfg.fixed_files = cases[i].mode;
        cfg.async_punt = cases[i].async_punt;
        cfg.restrict_ops = cases[i].restrict_ops;
        RawAioEngine *e = create_engine(&cfg);
        luring_get_info(e, &info);
        g_assert_cmpint(info.fixed_files, ==, cases[i].table);
        int slot = ops->add_file(e, fd, O_RDWR, &err);
        g_assert_no_error(err);
        g_assert_cmpint(slot >= 0, ==, cases[i].table);

        /*
         * Through the slot (a bogus fd beside it: only the slot can work),
         * and by plain fd. A lone request on an async-punt ring goes by fd
         * unless the table is required (test_async_punt_depth()).
         */
        bool by_fd = slot < 0 || (cases[i].async_punt && cases[i].mode != RAW_AIO_ONOFFAUTO_ON);
        prep(&t, RAW_AIO_READ, by_fd ? fd : -1, slot, 4096, buf, 4096);
        g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
        wait_for(&t);
        g_assert_cmpint(t.ret, ==, 0);
        check_pattern(buf, 4096, 4096);
        prep(&t, RAW_AIO_READ, fd, -1, 12288, buf, 4096);
        g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
        wait_for(&t);
        g_assert_cmpint(t.ret, ==, 0);
        check_pattern(buf, 12288, 4096);
        if (slot >= 0) {
            ops->remove_file(e, slot);
        }
        ops->destroy(e);
    }
    close(fd);
}

static void test_fixed_buffers(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e;
    int fd = make_file("fbuf", 0, FILE_SIZE);
    LuringInfo info;
    LuringStats st;
    uint8_t *a, *b;
    TestReq t;

    cfg.fixed_buffers = RAW_AIO_ONOFFAUTO_ON;
    cfg.queue_depth = 32;
    e = create_engine(&cfg);
    luring_get_info(e, &info);
    g_assert_true(info.fixed_buffers);
    a = ops->buf_alloc(e, 65536, 4096);
    b = ops->buf_alloc(e, 4096, 512);
    g_assert_nonnull(a);
    g_assert_nonnull(b);
    g_assert_true((uintptr_t)a % 4096 == 0);
    g_assert_true(b >= a + 65536 || b + 4096 <= a);

    prep(&t, RAW_AIO_READ, fd, -1, 4096, a, 65536);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    check_pattern(a, 4096, 65536);
    memset(b, 0x42, 4096);
    prep(&t, RAW_AIO_WRITE, fd, -1, 0, b, 4096);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    luring_get_stats(e, &st);
    g_assert_cmpuint(st.fixed_buf_ops, ==, 2);
    ops->buf_free(e, a, 65536);
    /* Freed pages are reused. */
    g_assert_true(ops->buf_alloc(e, 65536, 4096) == a);
    ops->buf_free(e, a, 65536);
    ops->buf_free(e, b, 4096);

    /* Larger than the pool: ordinary memory, plain READ. */
    a = ops->buf_alloc(e, 64 << 20, 4096);
    g_assert_nonnull(a);
    ops->buf_free(e, a, 64 << 20);

    /*
     * Buffers outliving their instance, freed through another one or none:
     * the pool stays mapped until its last page is back (ASan checks).
     */
    a = ops->buf_alloc(e, 8192, 4096);
    b = ops->buf_alloc(e, 4096, 4096);
    ops->destroy(e);
    memset(a, 1, 8192);
    e = create_engine(&cfg);
    ops->buf_free(e, a, 8192);
    memset(b, 2, 4096);
    ops->buf_free(NULL, b, 4096);
    ops->destroy(e);
    close(fd);
}

/* Drops CAP_IPC_LOCK (which exempts root from RLIMIT_MEMLOCK) and lowers the limit. */
static void limit_memlock(rlim_t bytes)
{
    struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];
    struct rlimit rl = { bytes, bytes };

    g_assert_cmpint(syscall(SYS_capget, &hdr, data), ==, 0);
    data[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
    data[CAP_IPC_LOCK / 32].permitted &= ~(1u << (CAP_IPC_LOCK % 32));
    g_assert_cmpint(syscall(SYS_capset, &hdr, data), ==, 0);
    g_assert_cmpint(setrlimit(RLIMIT_MEMLOCK, &rl), ==, 0);
}

static void memlock_child(void)
{
    RawAioConfig cfg = default_cfg();
    Error *err = NULL;
    RawAioEngine *e;
    LuringInfo info;

    limit_memlock(1024 * 1024);
    cfg.fixed_buffers = RAW_AIO_ONOFFAUTO_ON;
    e = ops->create(ctx, &cfg, &err);
    g_assert_null(e);
    fprintf(stderr, "ON: %s\n", error_get_pretty(err));
    error_free(err);

    cfg.fixed_buffers = RAW_AIO_ONOFFAUTO_AUTO;
    e = create_engine(&cfg);
    luring_get_info(e, &info);
    g_assert_false(info.fixed_buffers);
    ops->destroy(e);
    /* Warned once only. */
    e = create_engine(&cfg);
    ops->destroy(e);
    exit(0);
}

/*
 * async-punt rings (files that cannot take non-blocking I/O): registered
 * files and buffers under auto as elsewhere, and IOSQE_ASYNC decided per
 * submission. A lone request goes forced, by plain fd and plain buffer
 * (io-wq would take the ring's lock to resolve them); a burst that leaves
 * 12 or more in flight goes unforced, through the tables. fixed-files=on
 * keeps the slot even on forced requests (a restricted ring demands it).
 */
static void test_async_punt_depth(void)
{
    static const RawAioOnOffAuto files[] = { RAW_AIO_ONOFFAUTO_AUTO, RAW_AIO_ONOFFAUTO_ON };
    int fd = make_file("puntdepth", 0, FILE_SIZE);
    /* Another file with other bytes: tells which one a request really read. */
    int other = make_file("puntdepth-other", 0, 65536);
    uint8_t fill[65536];

    memset(fill, 0xee, sizeof(fill));
    g_assert_cmpint(pwrite(other, fill, sizeof(fill), 0), ==, (ssize_t)sizeof(fill));

    for (size_t m = 0; m < G_N_ELEMENTS(files); m++) {
        RawAioConfig cfg = default_cfg();
        Error *err = NULL;
        LuringInfo info;
        LuringStats st0, st1, st2;
        TestReq t[16];
        uint8_t *buf;

        cfg.async_punt = true;
        cfg.queue_depth = 32;
        cfg.fixed_files = files[m];
        cfg.fixed_buffers = RAW_AIO_ONOFFAUTO_AUTO;
        RawAioEngine *e = create_engine(&cfg);
        luring_get_info(e, &info);
        g_assert_true(info.fixed_files);
        g_assert_true(info.fixed_buffers);
        int slot = ops->add_file(e, fd, O_RDWR, &err);
        g_assert_no_error(err);
        g_assert_cmpint(slot, >=, 0);
        buf = ops->buf_alloc(e, 16 * 4096, 4096);
        g_assert_nonnull(buf);

        /*
         * Alone: forced, plain buffer, and under auto the plain fd, here
         * another file's: its bytes prove the fd was used. With
         * fixed-files=on the fd is bogus and the slot must stay.
         */
        bool required = files[m] == RAW_AIO_ONOFFAUTO_ON;
        int fd_arg = required ? -1 : other;
        luring_get_stats(e, &st0);
        prep(&t[0], RAW_AIO_READ, fd_arg, slot, 4096, buf, 4096);
        g_assert_cmpint(raw_aio_submit(e, &t[0].req), ==, 0);
        wait_for(&t[0]);
        g_assert_cmpint(t[0].ret, ==, 0);
        if (required) {
            check_pattern(buf, 4096, 4096);
        } else {
            g_assert_cmpmem(buf, 4096, fill, 4096);
        }
        luring_get_stats(e, &st1);
        g_assert_cmpuint(st1.async_sqes - st0.async_sqes, ==, 1);
        g_assert_cmpuint(st1.fixed_buf_ops - st0.fixed_buf_ops, ==, 0);

        /* 16 at once: unforced, registered buffers, the slot (file fd's bytes). */
        memset(buf, 0, 16 * 4096);
        plugged_reads(e, t, 16, fd_arg, slot, 0, buf);
        check_pattern(buf, 0, 16 * 4096);
        luring_get_stats(e, &st2);
        g_assert_cmpuint(st2.async_sqes - st1.async_sqes, ==, 0);
        g_assert_cmpuint(st2.fixed_buf_ops - st1.fixed_buf_ops, ==, 16);

        ops->buf_free(e, buf, 16 * 4096);
        ops->remove_file(e, slot);
        ops->destroy(e);
    }
    close(other);
    close(fd);
}

/*
 * sync_below (what aio=auto sets on a RAM-backed block device): reads and
 * writes that find fewer than sync_below requests outstanding run in
 * submit() and complete through the BH; the rest go to the ring. A short
 * transfer (EOF) is finished by the ring, zero-filled as usual.
 */
/* Plugged sync_below bursts run as Linux AIO batches where libaio was built in. */
#ifdef CONFIG_LINUX_AIO
#define SYNC_BATCHES(n) (n)
#else
#define SYNC_BATCHES(n) 0
#endif

static void test_sync_below(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e;
    int fd = make_file("syncbelow", 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc(16 * 4096);
    g_autofree uint8_t *wbuf = g_malloc(4096);
    uint8_t back[4096];
    LuringStats st0, st1, st2, st3;
    TestReq t[16];

    cfg.sync_below = 12;
    cfg.queue_depth = 32;
    e = create_engine(&cfg);

    /* Alone: synchronous, no SQE. */
    luring_get_stats(e, &st0);
    prep(&t[0], RAW_AIO_READ, fd, -1, 8192, buf, 4096);
    g_assert_cmpint(raw_aio_submit(e, &t[0].req), ==, 0);
    g_assert_false(t[0].done);          /* the callback still comes from the BH */
    wait_for(&t[0]);
    g_assert_cmpint(t[0].ret, ==, 0);
    check_pattern(buf, 8192, 4096);
    memset(wbuf, 0x5c, 4096);
    prep(&t[0], RAW_AIO_WRITE, fd, -1, 4096, wbuf, 4096);
    g_assert_cmpint(raw_aio_submit(e, &t[0].req), ==, 0);
    wait_for(&t[0]);
    g_assert_cmpint(t[0].ret, ==, 0);
    g_assert_cmpint(pread(fd, back, 4096, 4096), ==, 4096);
    g_assert_cmpmem(back, 4096, wbuf, 4096);
    luring_get_stats(e, &st1);
    g_assert_cmpuint(st1.sync_rw - st0.sync_rw, ==, 2);
    g_assert_cmpuint(st1.sqes - st0.sqes, ==, 0);

    /*
     * 16 at once (plugged): the first 12 synchronously, as one Linux AIO
     * batch at the unplug, the other 4 through the ring.
     */
    plugged_reads(e, t, 16, fd, -1, 65536, buf);
    check_pattern(buf, 65536, 16 * 4096);
    luring_get_stats(e, &st2);
    g_assert_cmpuint(st2.sync_rw - st1.sync_rw, ==, 12);
    g_assert_cmpuint(st2.sync_batches - st1.sync_batches, ==, SYNC_BATCHES(1));
    g_assert_cmpuint(st2.sqes - st1.sqes, ==, 4);

    /*
     * A plugged burst of writes, reads and a read across EOF: each gets its
     * data and result (the batch finishes a short transfer itself), and
     * nothing runs before the unplug.
     */
    {
        uint8_t wb[3][4096];
        int count = 0;

        ops->plug(e);
        for (int i = 0; i < 3; i++) {
            memset(wb[i], 0x30 + i, 4096);
            prep(&t[i], RAW_AIO_WRITE, fd, -1, 131072 + (uint64_t)i * 4096, wb[i], 4096);
            t[i].counter = &count;
            g_assert_cmpint(raw_aio_submit(e, &t[i].req), ==, 0);
        }
        for (int i = 3; i < 5; i++) {
            prep(&t[i], RAW_AIO_READ, fd, -1, (uint64_t)i * 4096, buf + i * 4096, 4096);
            t[i].counter = &count;
            g_assert_cmpint(raw_aio_submit(e, &t[i].req), ==, 0);
        }
        memset(buf + 8 * 4096, 0xaa, 8192);
        prep(&t[5], RAW_AIO_READ, fd, -1, FILE_SIZE - 4096, buf + 8 * 4096, 8192);
        t[5].counter = &count;
        g_assert_cmpint(raw_aio_submit(e, &t[5].req), ==, 0);
        g_assert_cmpint(pread(fd, back, 4096, 131072), ==, 4096);
        check_pattern(back, 131072, 4096);         /* still held */
        ops->unplug(e);
        wait_count(&count, 6);
        for (int i = 0; i < 6; i++) {
            g_assert_cmpint(t[i].ret, ==, 0);
        }
        for (int i = 0; i < 3; i++) {
            g_assert_cmpint(pread(fd, back, 4096, 131072 + (uint64_t)i * 4096), ==, 4096);
            g_assert_cmpmem(back, 4096, wb[i], 4096);
        }
        check_pattern(buf + 3 * 4096, 3 * 4096, 2 * 4096);
        check_pattern(buf + 8 * 4096, FILE_SIZE - 4096, 4096);
        for (int i = 9 * 4096; i < 10 * 4096; i++) {
            g_assert_cmpuint(buf[i], ==, 0);
        }
        luring_get_stats(e, &st3);
        g_assert_cmpuint(st3.sync_rw - st2.sync_rw, ==, 6);
        g_assert_cmpuint(st3.sync_batches - st2.sync_batches, ==, SYNC_BATCHES(1));
        g_assert_cmpuint(st3.sqes - st2.sqes, ==, 0);
        st2 = st3;
    }

    /* Across EOF: the synchronous part is kept, the ring zero-fills the rest. */
    memset(buf, 0xaa, 8192);
    prep(&t[0], RAW_AIO_READ, fd, -1, FILE_SIZE - 4096, buf, 8192);
    g_assert_cmpint(raw_aio_submit(e, &t[0].req), ==, 0);
    wait_for(&t[0]);
    g_assert_cmpint(t[0].ret, ==, 0);
    check_pattern(buf, FILE_SIZE - 4096, 4096);
    for (int i = 4096; i < 8192; i++) {
        g_assert_cmpuint(buf[i], ==, 0);
    }
    luring_get_stats(e, &st3);
    g_assert_cmpuint(st3.sync_rw - st2.sync_rw, ==, 0);
    g_assert_cmpuint(st3.sqes - st2.sqes, >=, 1);

    ops->destroy(e);
    close(fd);
}

/*
 * sync_race (aio=auto with sync_below): the engine times the split against
 * running everything synchronously. Which one wins depends on the machine,
 * so the test asserts what each arm does and that the data is right
 * whichever arm serves a burst, not who wins.
 */
/* Reads 16 plugged blocks at off and checks them; returns how many ran synchronously. */
static uint64_t race_burst(RawAioEngine *e, TestReq *t, int fd, uint64_t off, uint8_t *buf,
                           uint64_t *sqes)
{
    LuringStats before, after;

    luring_get_stats(e, &before);
    memset(buf, 0xaa, 16 * 4096);
    plugged_reads(e, t, 16, fd, -1, off, buf);
    check_pattern(buf, off, 16 * 4096);
    luring_get_stats(e, &after);
    *sqes = after.sqes - before.sqes;
    return after.sync_rw - before.sync_rw;
}

static void test_sync_race(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e;
    int fd = make_file("syncrace", 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc(16 * 4096);
    LuringStats st;
    uint64_t sqes;
    TestReq t[16];

    cfg.sync_below = 12;
    cfg.sync_race = true;
    cfg.queue_depth = 32;
    e = create_engine(&cfg);

    /*
     * A round starts with the challenger, all synchronous: its settling
     * stretch (64 / 8 requests) and first window cover a burst of 16, none
     * of which goes to the ring (the split would send 4).
     */
    luring_debug_race(e, 64, 1);
    g_assert_cmpuint(race_burst(e, t, fd, 65536, buf, &sqes), ==, 16);
    g_assert_cmpuint(sqes, ==, 0);

    /*
     * Windows count requests, so the arms' stretches are known: requests
     * 1-71 take arm 1 (8 settling, 64 measured), 72-143 the split (the
     * tick comes before the request it counts). Bursts 2-4 (17-64) are
     * all synchronous, burst 6 (81-96) splits 12 and 4.
     */
    for (int i = 1; i < 6; i++) {
        uint64_t n = race_burst(e, t, fd, 0, buf, &sqes);

        if (i < 4) {
            g_assert_cmpuint(n, ==, 16);
            g_assert_cmpuint(sqes, ==, 0);
        }
    }
    g_assert_cmpuint(race_burst(e, t, fd, 0, buf, &sqes), ==, 12);
    g_assert_cmpuint(sqes, ==, 4);
    luring_get_stats(e, &st);
    g_assert_cmpuint(st.race_rounds, ==, 0);

    /* Many short rounds: every burst reads the right data, whichever arm. */
    luring_debug_race(e, 16, 2);
    for (int i = 0; i < 200; i++) {
        uint64_t n = race_burst(e, t, fd, (uint64_t)(i % 15) * 65536, buf, &sqes);

        g_assert_cmpuint(n + sqes, ==, 16);     /* each request went one way */
    }
    luring_get_stats(e, &st);
    g_assert_cmpuint(st.race_rounds, >=, 10);
    g_assert_cmpuint(st.race_sync_wins, <=, st.race_rounds);
    ops->destroy(e);

    /* Without sync_race the split stays as configured (luring_debug_race: no-op). */
    cfg.sync_race = false;
    e = create_engine(&cfg);
    luring_debug_race(e, 64, 1);
    g_assert_cmpuint(race_burst(e, t, fd, 0, buf, &sqes), ==, 12);
    g_assert_cmpuint(sqes, ==, 4);
    luring_get_stats(e, &st);
    g_assert_cmpuint(st.race_rounds, ==, 0);
    ops->destroy(e);
    close(fd);
}

static void test_memlock(void)
{
    if (g_test_subprocess()) {
        memlock_child();
        return;
    }
    if (geteuid() != 0) {
        g_test_skip("needs root to drop CAP_IPC_LOCK deterministically");
        return;
    }
    g_test_trap_subprocess(NULL, 0, 0);
    g_test_trap_assert_passed();
    g_test_trap_assert_stderr("*ON: io_uring fixed buffers: pinning the 4096 KiB buffer "
                              "pool exceeds RLIMIT_MEMLOCK (1024 KiB); raise the limit to "
                              "at least 5120 KiB ('ulimit -l 5120'*fixed-buffers=off*"
                              "warning: io_uring fixed buffers*continuing without "
                              "fixed buffers*");
    /* AUTO warns once per process, not per instance. */
    g_test_trap_assert_stderr_unmatched("*continuing without fixed buffers*"
                                        "continuing without fixed buffers*");
}

static void test_sqpoll(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e, *e2;
    int fd = make_file("sqpoll", 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc(4096);
    LuringInfo info;
    TestReq t;

    cfg.sqpoll = true;
    cfg.sq_thread_idle_ms = 10;
    e = create_engine(&cfg);
    luring_get_info(e, &info);
    g_assert_true(info.sqpoll);

    for (int round = 0; round < 3; round++) {
        prep(&t, RAW_AIO_READ, fd, -1, 4096 * round, buf, 4096);
        g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
        wait_for(&t);
        g_assert_cmpint(t.ret, ==, 0);
        check_pattern(buf, 4096 * round, 4096);
        /* Past sq_thread_idle: the SQ thread sleeps and needs a wakeup. */
        g_usleep(50 * 1000);
    }

    /* A second instance with the same settings shares the SQ thread. */
    e2 = create_engine(&cfg);
    luring_get_info(e2, &info);
    g_assert_true(info.shared_sq_thread);
    prep(&t, RAW_AIO_READ, fd, -1, 8192, buf, 4096);
    g_assert_cmpint(raw_aio_submit(e2, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    check_pattern(buf, 8192, 4096);
    ops->destroy(e);
    ops->destroy(e2);
    close(fd);
}

/* ---- Busy polling -------------------------------------------------------------------- */

/* read-family syscalls of this process so far (/proc/self/io "syscr"). */
static uint64_t read_syscalls(void)
{
    g_autofree char *io = NULL;
    const char *p;

    g_assert_true(g_file_get_contents("/proc/self/io", &io, NULL, NULL));
    p = strstr(io, "syscr: ");
    g_assert_nonnull(p);
    return g_ascii_strtoull(p + 7, NULL, 10);
}

/* Reads n blocks with O_DIRECT one at a time; returns the read syscalls it took. */
static uint64_t direct_reads(RawAioEngine *e, int fd, uint8_t *buf, int n)
{
    /* Reading /proc/self/io costs reads itself, after the value it shows. */
    uint64_t first = read_syscalls();
    uint64_t own = read_syscalls() - first;
    uint64_t before = read_syscalls();
    TestReq t;

    for (int i = 0; i < n; i++) {
        prep(&t, RAW_AIO_READ, fd, -1, (uint64_t)(i % 64) * 4096, buf, 4096);
        g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
        wait_for(&t);
        g_assert_cmpint(t.ret, ==, 0);
    }
    return read_syscalls() - before - own;
}

/*
 * With adaptive busy polling on, the loop finds completions through the
 * engine's poll function (a look at the CQ and the task-work flag), never
 * sleeping on or reading the eventfd. Counted with /proc/self/io: without
 * polling the same reads cost eventfd reads, with a window grown past any
 * wait they cost none. O_DIRECT, so completions are asynchronous.
 */
static void test_busy_poll(void)
{
    const int64_t max_ns = 60 * G_GINT64_CONSTANT(1000000000);
    AioContext *saved = ctx;
    RawAioConfig cfg = default_cfg();
    int fd = make_file("busypoll", O_DIRECT, FILE_SIZE);
    uint8_t *buf = NULL;
    RawAioEngine *e;
    uint64_t plain, polled;
    int warm;

    g_assert_cmpint(posix_memalign((void **)&buf, 4096, 4096), ==, 0);
    ctx = aio_context_new(&error_abort);
    /* Waiting in the ring reads no eventfd either: measure the eventfd path. */
    g_setenv("RINGBLK_IO_URING_LOOP_WAIT", "0", TRUE);
    e = create_engine(&cfg);
    g_unsetenv("RINGBLK_IO_URING_LOOP_WAIT");
    plain = direct_reads(e, fd, buf, 32);
    check_pattern(buf, 31 * 4096, 4096);
    g_assert_cmpuint(plain, >, 0);          /* the eventfd path is what we count */

    /*
     * Grow the window (x10^6: 4 us, then 4 s, which then holds: every
     * wait is shorter). Shrinking needs a wait longer than 60 s.
     */
    g_assert_true(aio_context_set_poll_params(ctx, max_ns, 1000000, 1, &error_abort));
    for (warm = 0; warm < 1000 && aio_context_poll_ns(ctx) < 1000000000; warm++) {
        direct_reads(e, fd, buf, 1);
    }
    g_assert_cmpint(aio_context_poll_ns(ctx), >=, 1000000000);
    polled = direct_reads(e, fd, buf, 32);
    check_pattern(buf, 31 * 4096, 4096);
    g_assert_cmpuint(polled, ==, 0);

    ops->destroy(e);
    aio_context_unref(ctx);
    ctx = saved;
    free(buf);
    close(fd);
}

/* ---- The event loop waits in the engine's ring ------------------------------------------ */

static void set_flag_cb(void *opaque)
{
    *(bool *)opaque = true;
}

static void pipe_ready_cb(void *opaque)
{
    int *p = opaque;
    char c;

    g_assert_cmpint(read(p[0], &c, 1), ==, 1);
    p[2]++;
}

typedef struct LateBh {
    AioContext *ctx;
    bool ran;
} LateBh;

static void late_bh_cb(void *opaque)
{
    ((LateBh *)opaque)->ran = true;
}

/* Schedules a BH from another thread once the loop has had time to block. */
static gpointer late_bh_thread(gpointer opaque)
{
    LateBh *l = opaque;

    g_usleep(50 * 1000);
    aio_bh_schedule_oneshot(l->ctx, late_bh_cb, l);
    return NULL;
}

/*
 * An engine on a new context (the global ctx) that the loop waits in;
 * NULL, with the test skipped and the context gone, where the kernel
 * cannot do that.
 */
static RawAioEngine *loop_waiter_engine(const RawAioConfig *cfg, LuringInfo *info)
{
    RawAioEngine *e;

    ctx = aio_context_new(&error_abort);
    e = create_engine(cfg);
    luring_get_info(e, info);
    if (!info->loop_waiter) {
        g_test_skip("the kernel lacks IORING_FEAT_EXT_ARG (5.11)");
        ops->destroy(e);
        aio_context_unref(ctx);
        return NULL;
    }
    return e;
}

/*
 * While requests are in flight the loop blocks in the engine's ring
 * (aio_context_set_ring_waiter), and everything else the loop watches must
 * still wake it: an fd handler (through the ring's POLL_ADD on the loop's
 * epoll fd), a timer (the wait's timeout) and a BH scheduled from another
 * thread (aio_notify). The request in flight is a read from an empty pipe,
 * so it stays in flight until the test writes to the pipe.
 */
static void test_loop_wait(gconstpointer variant)
{
    AioContext *saved = ctx;
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e, *e2;
    LuringInfo info;
    LuringStats st;
    int in_flight[2], other[3];
    char data[16] = "fifteen bytes..", got[16] = "";
    TestReq t;
    AioTimer *timer;
    bool fired = false;
    LateBh late = { 0 };
    GThread *th;

    /*
     * With SQPOLL the loop spins on the CQ for up to 1 ms before it sleeps.
     * A restricted fixed-file ring takes the epoll fd in a fixed-file slot.
     */
    cfg.sqpoll = variant && !strcmp(variant, "sqpoll");
    if (variant && !strcmp(variant, "fixed-files")) {
        cfg.fixed_files = RAW_AIO_ONOFFAUTO_ON;
        cfg.restrict_ops = RAW_AIO_ONOFFAUTO_ON;
    }
    e = loop_waiter_engine(&cfg, &info);
    if (!e) {
        ctx = saved;
        return;
    }
    /* One waiter per context. */
    e2 = create_engine(&cfg);
    luring_get_info(e2, &info);
    g_assert_false(info.loop_waiter);
    ops->destroy(e2);

    g_assert_cmpint(pipe2(in_flight, O_CLOEXEC), ==, 0);
    g_assert_cmpint(pipe2(other, O_CLOEXEC | O_NONBLOCK), ==, 0);
    other[2] = 0;
    aio_set_fd_handler(ctx, other[0], false, pipe_ready_cb, NULL, NULL, NULL, other);
    aio_poll(ctx, false);
    g_assert_cmpstr(aio_context_fdmon_name(ctx), ==, "epoll");   /* poll moved */

    prep(&t, RAW_AIO_READ, in_flight[0],
         cfg.fixed_files ? ops->add_file(e, in_flight[0], O_RDONLY, &error_abort) : -1,
         0, got, sizeof(got));
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);

    /* An fd event. */
    g_assert_cmpint(write(other[1], "x", 1), ==, 1);
    while (other[2] == 0) {
        aio_poll(ctx, true);
    }
    g_assert_false(t.done);
    luring_get_stats(e, &st);
    g_assert_cmpuint(st.loop_waits, >=, 1);
    g_assert_cmpuint(st.loop_fd_wakeups, >=, 1);

    /* A timer. */
    timer = aio_timer_new(ctx, AIO_CLOCK_MONOTONIC, set_flag_cb, &fired);
    aio_timer_mod_ns(timer, aio_clock_get_ns(AIO_CLOCK_MONOTONIC) + 20 * 1000 * 1000);
    while (!fired) {
        aio_poll(ctx, true);
    }
    g_assert_false(t.done);
    aio_timer_free(timer);

    /* A BH from another thread. */
    late.ctx = ctx;
    th = g_thread_new("late-bh", late_bh_thread, &late);
    while (!late.ran) {
        aio_poll(ctx, true);
    }
    g_thread_join(th);
    g_assert_false(t.done);

    /* The request itself: its completion ends a wait in the ring. */
    luring_get_stats(e, &st);
    g_assert_cmpint(write(in_flight[1], data, sizeof(data)), ==, sizeof(data));
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    g_assert_cmpmem(got, sizeof(got), data, sizeof(data));
    {
        LuringStats after;

        luring_get_stats(e, &after);
        g_assert_cmpuint(after.loop_waits, >, st.loop_waits);
    }

    /*
     * What a completion callback submits rides on the loop's next wait: a
     * chain of 20 dependent reads costs one submitting enter (the first,
     * from outside a callback) and at least 19 waits. A pass that finds
     * work pending (a CQE that arrived while a callback ran, which depends
     * on scheduling) flushes instead, so a busy machine may see one or two
     * more (seen: 2 in 2 of 16 ASan runs two at a time); without the
     * feature it would be 20. (SQPOLL submits without syscalls anyway.)
     * The same holds when a BH the callback schedules submits, as a device
     * model's would: it runs inside aio_poll(), before the loop's wait.
     */
    for (int via_bh = 0; via_bh < 2 && !cfg.sqpoll; via_bh++) {
        int fd = make_file("loopchain", 0, FILE_SIZE);
        LuringStats before, after;
        Chain c = { .e = e, .left = 20 };

        if (via_bh) {
            c.resubmit_bh = aio_bh_new(ctx, chain_resubmit, &c);
        }
        luring_get_stats(e, &before);
        prep(&c.t, RAW_AIO_READ, fd,
             cfg.fixed_files ? ops->add_file(e, fd, O_RDWR, &error_abort) : -1,
             0, c.buf, 512);
        c.t.req.cb = chain_cb;
        c.t.req.opaque = &c;
        g_assert_cmpint(raw_aio_submit(e, &c.t.req), ==, 0);
        while (c.left) {
            aio_poll(ctx, true);
        }
        luring_get_stats(e, &after);
        g_assert_cmpuint(after.enters - before.enters, >=, 1);
        g_assert_cmpuint(after.enters - before.enters, <=, 4);
        g_assert_cmpuint(after.loop_waits - before.loop_waits, >=, 16);
        if (c.resubmit_bh) {
            aio_bh_delete(c.resubmit_bh);
        }
        close(fd);
    }

    aio_set_fd_handler(ctx, other[0], false, NULL, NULL, NULL, NULL, NULL);
    ops->destroy(e);
    /* Without a waiter a context with few fds goes back to poll. */
    aio_poll(ctx, false);
    g_assert_cmpstr(aio_context_fdmon_name(ctx), ==, "poll");

    /* Turned off for measurements. */
    g_setenv("RINGBLK_IO_URING_LOOP_WAIT", "0", TRUE);
    e = create_engine(&cfg);
    g_unsetenv("RINGBLK_IO_URING_LOOP_WAIT");
    luring_get_info(e, &info);
    g_assert_false(info.loop_waiter);
    ops->destroy(e);

    aio_context_unref(ctx);
    ctx = saved;
    close(in_flight[0]);
    close(in_flight[1]);
    close(other[0]);
    close(other[1]);
}

/* Keeps the loop from ever waiting: each aio_poll() pass only looks. */
static void always_pending_bh(void *opaque)
{
    AioBH **bh = opaque;
    aio_bh_schedule(*bh);
}

/*
 * Completion work that arrives while a batch's callbacks run is left for
 * the loop's next wait in the ring (LuringStats.task_work_left), which
 * submits the refills and runs it in one enter. It must still run when the
 * loop does something else first. A read forced through io-wq
 * (async-punt) queues its completion work; once IORING_SQ_TASKRUN shows
 * it, the test marks it left (as a reap that found CQEs too would) and
 * drives the loop with a blocking aio_poll() (the wait runs it), with a BH
 * always pending (the loop only looks: flush() must take the work back)
 * and with non-blocking aio_poll() alone (release() must find it). A lost
 * run hangs. Then 32 chains of such reads, where reaps leave work for real.
 */
static void test_loop_wait_task_work_left(void)
{
    AioContext *saved = ctx;
    RawAioConfig cfg = default_cfg();
    LuringInfo info;
    LuringStats before, after;
    RawAioEngine *e;
    int fd = make_file("twleft", 0, FILE_SIZE);
    uint8_t buf[512];
    Chain c[32];
    int total;

    cfg.async_punt = true;
    cfg.queue_depth = 64;
    e = loop_waiter_engine(&cfg, &info);
    if (!e) {
        ctx = saved;
        close(fd);
        return;
    }
    if (!info.defer_taskrun) {
        g_test_skip("no IORING_SETUP_DEFER_TASKRUN here");
        goto out;
    }
    for (int mode = 0; mode < 3; mode++) {
        AioBH *busy = NULL;
        TestReq t;

        prep(&t, RAW_AIO_READ, fd, -1, (uint64_t)mode * 4096, buf, sizeof(buf));
        g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
        while (!luring_debug_leave_task_work(e)) {
            g_usleep(1000);     /* io-wq completes the read and queues its work */
        }
        if (mode == 1) {
            busy = aio_bh_new(ctx, always_pending_bh, &busy);
            aio_bh_schedule(busy);
        }
        while (!t.done) {
            aio_poll(ctx, mode != 2);
        }
        g_assert_cmpint(t.ret, ==, 0);
        check_pattern(buf, (uint64_t)mode * 4096, sizeof(buf));
        if (busy) {
            aio_bh_delete(busy);
            aio_poll(ctx, false);
        }
    }

    luring_get_stats(e, &before);
    for (int i = 0; i < 32; i++) {
        c[i] = (Chain) { .e = e, .left = 64 };
        prep(&c[i].t, RAW_AIO_READ, fd, -1, (uint64_t)i * 4096, c[i].buf, 512);
        c[i].t.req.cb = chain_cb;
        c[i].t.req.opaque = &c[i];
        g_assert_cmpint(raw_aio_submit(e, &c[i].t.req), ==, 0);
    }
    do {
        aio_poll(ctx, true);
        total = 0;
        for (int i = 0; i < 32; i++) {
            total += c[i].left;
        }
    } while (total);
    luring_get_stats(e, &after);
    g_assert_cmpuint(after.submitted - before.submitted, ==, 32 * 64);
    /* How often it happens depends on scheduling: shown, not asserted. */
    g_test_message("reaps that left completion work to the next wait: %" PRIu64,
                   after.task_work_left - before.task_work_left);
out:
    ops->destroy(e);
    aio_context_unref(ctx);
    ctx = saved;
    close(fd);
}

typedef struct LateWrite {
    int fd;
    const char *data;
    size_t len;
} LateWrite;

/* Writes to a pipe from another thread once the loop has had time to block. */
static gpointer late_write_thread(gpointer opaque)
{
    LateWrite *l = opaque;

    g_usleep(50 * 1000);
    g_assert_cmpint(write(l->fd, l->data, l->len), ==, (ssize_t)l->len);
    return NULL;
}

/* Waits in the loop until a timer 5 ms out fires: one loop wait ends by its timeout. */
static void loop_wait_for_timer(void)
{
    bool fired = false;
    AioTimer *timer = aio_timer_new(ctx, AIO_CLOCK_MONOTONIC, set_flag_cb, &fired);

    aio_timer_mod_ns(timer, aio_clock_get_ns(AIO_CLOCK_MONOTONIC) + 5 * 1000 * 1000);
    while (!fired) {
        aio_poll(ctx, true);
    }
    aio_timer_free(timer);
}

/*
 * Between two waits in the ring the engine's eventfd stays off: the loop's
 * next wait finds the completions in the ring, and each signal meanwhile
 * cost an eventfd write in the kernel and a wasted wait in the loop (the
 * epoll fd became readable: 0.04 per read on zram at depth 32). When the
 * loop blocks elsewhere instead (here: the engine is plugged, so the fd
 * monitor waits), or aio_poll(ctx, false) hands control back, it is on
 * again: a completion that arrived before, or arrives during, that wait
 * still wakes the loop.
 */
static void test_loop_wait_eventfd_parked(void)
{
    AioContext *saved = ctx;
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e;
    LuringInfo info;
    LuringStats before, after;
    int p[2];
    char got[8];
    TestReq t;
    LateWrite lw;
    GThread *th;

    e = loop_waiter_engine(&cfg, &info);
    if (!e) {
        ctx = saved;
        return;
    }
    g_assert_true(info.eventfd_enabled);
    g_assert_cmpint(pipe2(p, O_CLOEXEC), ==, 0);

    /* Off after a wait in the ring; found by the next one; on again after aio_poll(false). */
    prep(&t, RAW_AIO_READ, p[0], -1, 0, got, 4);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    /*
     * A preempted test (sanitizers, a busy CI machine) can find the 5 ms
     * timer already due, so no wait blocks: wait until one did, in the ring.
     */
    for (int tries = 0; tries < 100; tries++) {
        luring_get_stats(e, &before);
        loop_wait_for_timer();
        luring_get_stats(e, &after);
        if (after.loop_waits > before.loop_waits) {
            break;
        }
    }
    luring_get_info(e, &info);
    g_assert_false(info.eventfd_enabled);
    g_assert_false(t.done);
    luring_get_stats(e, &before);
    g_assert_cmpint(write(p[1], "abcd", 4), ==, 4);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    g_assert_cmpmem(got, 4, "abcd", 4);
    luring_get_stats(e, &after);
    g_assert_cmpuint(after.loop_waits, >, before.loop_waits);
    aio_poll(ctx, false);
    luring_get_info(e, &info);
    g_assert_true(info.eventfd_enabled);

    /* Completed before the loop blocks in the fd monitor (plugged): the look finds it. */
    prep(&t, RAW_AIO_READ, p[0], -1, 0, got, 4);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    loop_wait_for_timer();
    g_assert_cmpint(write(p[1], "efgh", 4), ==, 4);
    ops->plug(e);
    luring_get_stats(e, &before);
    wait_for(&t);
    luring_get_stats(e, &after);
    g_assert_cmpuint(after.loop_waits, ==, before.loop_waits);
    g_assert_cmpmem(got, 4, "efgh", 4);
    ops->unplug(e);

    /* Completed while the fd monitor waits: the eventfd wakes it. */
    prep(&t, RAW_AIO_READ, p[0], -1, 0, got, 4);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    loop_wait_for_timer();
    ops->plug(e);
    lw = (LateWrite) { .fd = p[1], .data = "ijkl", .len = 4 };
    th = g_thread_new("late-write", late_write_thread, &lw);
    luring_get_stats(e, &before);
    wait_for(&t);
    g_thread_join(th);
    luring_get_stats(e, &after);
    g_assert_cmpuint(after.loop_waits, ==, before.loop_waits);
    g_assert_cmpmem(got, 4, "ijkl", 4);
    luring_get_info(e, &info);
    g_assert_true(info.eventfd_enabled);
    ops->unplug(e);

    ops->destroy(e);
    aio_context_unref(ctx);
    ctx = saved;
    close(p[0]);
    close(p[1]);
}

/* ---- SQPOLL thread CPU after the idle time ------------------------------------------ */

/* The tids of this process's SQPOLL threads (comm "iou-sqp-<pid>"). */
static GArray *sq_thread_tids(void)
{
    GArray *tids = g_array_new(FALSE, FALSE, sizeof(int));
    g_autofree char *want = g_strdup_printf("iou-sqp-%d\n", getpid());
    GDir *dir = g_dir_open("/proc/self/task", 0, NULL);
    const char *name;

    g_assert_nonnull(dir);
    while ((name = g_dir_read_name(dir))) {
        g_autofree char *path = g_strdup_printf("/proc/self/task/%s/comm", name);
        g_autofree char *comm = NULL;

        if (g_file_get_contents(path, &comm, NULL, NULL) && !strcmp(comm, want)) {
            int tid = atoi(name);

            g_array_append_val(tids, tid);
        }
    }
    g_dir_close(dir);
    return tids;
}

/* utime + stime of a thread of ours, in clock ticks, and its state letter. */
static uint64_t thread_ticks(int tid, char *state)
{
    g_autofree char *path = g_strdup_printf("/proc/self/task/%d/stat", tid);
    g_autofree char *stat = NULL;
    unsigned long long utime, stime;
    const char *p;

    g_assert_true(g_file_get_contents(path, &stat, NULL, NULL));
    /* After "tid (comm) ": state is field 3, utime and stime fields 14 and 15. */
    p = strrchr(stat, ')');
    g_assert_nonnull(p);
    g_assert_cmpint(sscanf(p + 2, "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                           state, &utime, &stime), ==, 3);
    return utime + stime;
}

/*
 * The SQ thread spins while there is work and for sq-thread-idle ms after,
 * then sleeps (IORING_SQ_NEED_WAKEUP) and costs nothing. Asserted on CPU
 * ticks only, never on wall-clock speed: it must run during I/O, consume at
 * most one tick in 500 ms once idle (50x the idle time after the last
 * request), and the next request must wake it and complete.
 */
static void test_sqpoll_idle_cpu(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e;
    int fd = make_file("sqidle", 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc(4096);
    g_autoptr(GArray) before = sq_thread_tids();
    g_autoptr(GArray) after = NULL;
    uint64_t t0, t1, idle0, idle1;
    int tid = -1;
    char state;
    LuringInfo info;
    TestReq t;
    int n;

    cfg.sqpoll = true;
    /* An idle time no other test uses: a thread of our own, not a shared one. */
    cfg.sq_thread_idle_ms = 23;
    e = create_engine(&cfg);
    luring_get_info(e, &info);
    g_assert_true(info.sqpoll);
    g_assert_false(info.shared_sq_thread);
    /* The thread names itself once it runs: look again until it has (max 10 s). */
    for (int tries = 0; tid < 0 && tries < 1000; tries++) {
        if (tries) {
            g_usleep(10 * 1000);
        }
        g_clear_pointer(&after, g_array_unref);
        after = sq_thread_tids();
        for (guint i = 0; i < after->len; i++) {
            bool old = false;

            for (guint j = 0; j < before->len; j++) {
                old |= g_array_index(before, int, j) == g_array_index(after, int, i);
            }
            if (!old) {
                g_assert_cmpint(tid, ==, -1);   /* exactly one new SQ thread */
                tid = g_array_index(after, int, i);
            }
        }
    }
    if (tid < 0) {
        g_test_skip("no iou-sqp-<pid> thread found in /proc/self/task");
        ops->destroy(e);
        close(fd);
        return;
    }

    /* During I/O the thread runs: keep reading until it has used 2 ticks. */
    t0 = thread_ticks(tid, &state);
    for (n = 0; thread_ticks(tid, &state) < t0 + 2; n++) {
        uint64_t off = (uint64_t)(n % 256) * 4096;

        g_assert_cmpint(n, <, 10 * 1000 * 1000);
        prep(&t, RAW_AIO_READ, fd, -1, off, buf, 4096);
        g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
        wait_for(&t);
        g_assert_cmpint(t.ret, ==, 0);
        check_pattern(buf, off, 4096);
    }
    t1 = thread_ticks(tid, &state);
    g_assert_cmpuint(t1, >=, t0 + 2);

    /* Idle: well past sq-thread-idle, the thread sleeps and uses no CPU. */
    g_usleep(1000 * 1000);
    idle0 = thread_ticks(tid, &state);
    g_usleep(500 * 1000);
    idle1 = thread_ticks(tid, &state);
    if (idle1 > idle0 + 1) {
        g_error("SQ thread %d used %" PRIu64 " ticks in 500 ms while idle (state %c)",
                tid, idle1 - idle0, state);
    }
    g_assert_cmpint(state, ==, 'S');

    /*
     * Each request finds the thread asleep, so it has to wake it
     * (IORING_SQ_NEED_WAKEUP), and completes.
     */
    for (int round = 0; round < 3; round++) {
        while (thread_ticks(tid, &state), state != 'S') {
            g_usleep(10 * 1000);
        }
        prep(&t, RAW_AIO_READ, fd, -1, 65536 + 4096 * round, buf, 4096);
        g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
        wait_for(&t);
        g_assert_cmpint(t.ret, ==, 0);
        check_pattern(buf, 65536 + 4096 * round, 4096);
    }
    ops->destroy(e);
    close(fd);
}

/*
 * SQPOLL at a tiny depth with page-cache hits: the SQ thread posts CQEs
 * before it commits the SQ head, so freed slots lag behind completions.
 * Reads and FUA writes (two linked SQEs) must all complete correctly.
 */
static void test_sqpoll_full_ring(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e;
    int fd = make_file("sqfull", 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc(512 * 512);
    g_autofree TestReq *t = g_new0(TestReq, 512);
    int count = 0;

    cfg.sqpoll = true;
    cfg.sq_thread_idle_ms = 1;
    cfg.queue_depth = 4;
    e = create_engine(&cfg);
    for (int round = 0; round < 4; round++) {
        count = 0;
        for (int i = 0; i < 512; i++) {
            bool w = i % 3 == 0;

            if (w) {
                memset(buf + i * 512, round, 512);
            }
            prep(&t[i], w ? RAW_AIO_WRITE : RAW_AIO_READ, fd, -1,
                 (uint64_t)i * 512, buf + i * 512, 512);
            t[i].req.flags = w ? RAW_AIO_FUA : 0;
            t[i].counter = &count;
            g_assert_cmpint(raw_aio_submit(e, &t[i].req), ==, 0);
        }
        wait_count(&count, 512);
        for (int i = 0; i < 512; i++) {
            g_assert_cmpint(t[i].ret, ==, 0);
            if (i % 3 && round == 0) {
                check_pattern(buf + i * 512, (uint64_t)i * 512, 512);
            }
        }
    }
    ops->destroy(e);
    close(fd);
}

static void test_iopoll_refused(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e;
    Error *err = NULL;
    int fd = make_file("iopoll", O_DIRECT, FILE_SIZE);
    int fd2 = make_file("iopoll2", 0, FILE_SIZE);
    g_autofree char *pollq = NULL;
    struct stat st;
    int ret;

    cfg.iopoll = true;
    e = create_engine(&cfg);
    ret = ops->add_file(e, fd2, O_RDWR, &err);
    g_assert_cmpint(ret, ==, -EINVAL);
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "io_uring iopoll needs O_DIRECT (cache.direct=on)");
    g_clear_error(&err);

    g_assert_cmpint(fstat(fd, &st), ==, 0);
    pollq = g_strdup_printf("/sys/dev/block/%u:%u/queue/io_poll",
                            major(st.st_dev), minor(st.st_dev));
    ret = ops->add_file(e, fd, O_RDWR | O_DIRECT, &err);
    if (ret >= 0 || ret == -1) {
        g_test_skip("the scratch directory's device has poll queues");
    } else {
        g_assert_cmpint(ret, ==, -EOPNOTSUPP);
        g_assert_true(strstr(error_get_pretty(err), "has no poll queues") ||
                      strstr(error_get_pretty(err), "is not on a block device"));
        g_clear_error(&err);
    }
    ops->destroy(e);
    close(fd);
    close(fd2);
}

static void test_restrict(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e;
    int fd = make_file("restrict", 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc(4096);
    LuringInfo info;
    LuringStats st;
    TestReq t;
    int res = 1;

    for (int fixed = 0; fixed < 2; fixed++) {
        int slot = -1;

        cfg.restrict_ops = RAW_AIO_ONOFFAUTO_ON;
        cfg.fixed_files = fixed ? RAW_AIO_ONOFFAUTO_ON : RAW_AIO_ONOFFAUTO_OFF;
        e = create_engine(&cfg);
        luring_get_info(e, &info);
        g_assert_true(info.restricted);
        if (fixed) {
            slot = ops->add_file(e, fd, O_RDWR, &error_abort);
            g_assert_cmpint(slot, >=, 0);
            /* Plain fds never reach a fixed-only ring: a worker serves them. */
            prep(&t, RAW_AIO_READ, fd, -1, 0, buf, 4096);
            g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
            wait_for(&t);
            g_assert_cmpint(t.ret, ==, 0);
            check_pattern(buf, 0, 4096);
            luring_get_stats(e, &st);
            g_assert_cmpuint(st.sync_ops, ==, 1);
        }
        /* Allowed opcodes work. */
        prep(&t, RAW_AIO_READ, fd, slot, 4096, buf, 4096);
        g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
        wait_for(&t);
        g_assert_cmpint(t.ret, ==, 0);
        check_pattern(buf, 4096, 4096);
        prep(&t, RAW_AIO_FLUSH, fd, slot, 0, NULL, 0);
        g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
        wait_for(&t);
        g_assert_cmpint(t.ret, ==, 0);

        /* A NOP is not on the list: the kernel refuses it. */
        g_assert_cmpint(luring_debug_nop(e), ==, 0);
        while (!luring_debug_nop_result(e, &res)) {
            aio_poll(ctx, true);
        }
        g_assert_cmpint(res, ==, -EACCES);
        ops->destroy(e);
    }

    /* The default (auto) restricts where the kernel can (R_DISABLED: Linux 5.10). */
    {
        struct utsname u;
        unsigned maj = 0, min = 0;

        cfg.restrict_ops = RAW_AIO_ONOFFAUTO_AUTO;
        cfg.fixed_files = RAW_AIO_ONOFFAUTO_OFF;
        e = create_engine(&cfg);
        luring_get_info(e, &info);
        g_assert_cmpint(uname(&u), ==, 0);
        sscanf(u.release, "%u.%u", &maj, &min);
        if (maj > 5 || (maj == 5 && min >= 10)) {
            g_assert_true(info.restricted);
        }
        ops->destroy(e);
    }

    cfg.restrict_ops = RAW_AIO_ONOFFAUTO_OFF;
    cfg.fixed_files = RAW_AIO_ONOFFAUTO_OFF;
    e = create_engine(&cfg);
    g_assert_cmpint(luring_debug_nop(e), ==, 0);
    while (!luring_debug_nop_result(e, &res)) {
        aio_poll(ctx, true);
    }
    g_assert_cmpint(res, ==, 0);
    ops->destroy(e);
    close(fd);
}

/* destroy() with requests in flight and queued: every callback runs first. */
static void test_destroy_inflight(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e;
    int fd = make_file("destroy", 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc(128 * 4096);
    g_autofree TestReq *t = g_new0(TestReq, 128);
    int count = 0;

    cfg.queue_depth = 16;
    e = create_engine(&cfg);
    for (int i = 0; i < 128; i++) {
        prep(&t[i], i % 2 ? RAW_AIO_WRITE : RAW_AIO_READ, fd, -1,
             (uint64_t)i * 4096, buf + i * 4096, 4096);
        if (i % 2) {
            memset(buf + i * 4096, i, 4096);
        }
        t[i].counter = &count;
        g_assert_cmpint(raw_aio_submit(e, &t[i].req), ==, 0);
    }
    ops->destroy(e);
    g_assert_cmpint(count, ==, 128);
    for (int i = 0; i < 128; i++) {
        g_assert_cmpint(t[i].ret, ==, 0);
    }
    for (int i = 0; i < 128; i += 2) {
        check_pattern(buf + i * 4096, (uint64_t)i * 4096, 4096);
    }
    close(fd);
}

/* ---- Task-run modes ------------------------------------------------------------------ */

/* The default is DEFER_TASKRUN; these run a test again with plain task work. */
static void run_plain(gconstpointer data)
{
    void (*fn)(void) = (void (*)(void))data;
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e;
    LuringInfo info;

    luring_debug_set_taskrun("plain");
    e = create_engine(&cfg);
    luring_get_info(e, &info);
    g_assert_false(info.defer_taskrun);
    ops->destroy(e);
    fn();
    luring_debug_set_taskrun(NULL);
}

static void test_default_defer(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e = create_engine(&cfg);
    LuringInfo info;
    struct utsname u;
    unsigned maj = 0, min = 0;

    luring_get_info(e, &info);
    g_assert_cmpint(uname(&u), ==, 0);
    sscanf(u.release, "%u.%u", &maj, &min);
    if (maj > 6 || (maj == 6 && min >= 1)) {
        g_assert_true(info.defer_taskrun);
    }
    ops->destroy(e);

    /*
     * A file that takes non-blocking I/O (cfg.nowait, what file-posix sets
     * from its probe) gets plain task running: its completions come from
     * the device, not io-wq, and reach the CQ as they come.
     */
    cfg.nowait = true;
    e = create_engine(&cfg);
    luring_get_info(e, &info);
    g_assert_false(info.defer_taskrun);
    ops->destroy(e);
}

/* ---- Sharing the fd monitor's ring ------------------------------------------------------ */

/* Runs a test with its engines' SQEs on the io_uring fd monitor's ring. */
static void run_shared(gconstpointer data)
{
    void (*fn)(void) = (void (*)(void))data;
    AioContext *saved = ctx;
    RawAioConfig cfg = default_cfg();
    Error *err = NULL;
    RawAioEngine *e;
    LuringInfo info;

    ctx = aio_context_new(&error_abort);
    if (!aio_context_set_fdmon(ctx, AIO_FDMON_IO_URING, &err)) {
        g_test_skip(error_get_pretty(err));
        error_free(err);
        aio_context_unref(ctx);
        ctx = saved;
        return;
    }
    luring_debug_set_share_ring(1);
    e = create_engine(&cfg);
    luring_get_info(e, &info);
    g_assert_true(info.shared_fdmon_ring);
    ops->destroy(e);
    fn();
    luring_debug_set_share_ring(-1);
    aio_context_unref(ctx);
    ctx = saved;
}

/* Whether an engine made on a new context with cfg shares that context's ring. */
static bool shares_ring(AioFdMonType loop, const RawAioConfig *cfg, const char **fdmon,
                        char **errmsg)
{
    AioContext *c = aio_context_new(&error_abort);
    Error *err = NULL;
    RawAioEngine *e;
    LuringInfo info = { 0 };
    bool shared = false;

    if (loop != AIO_FDMON_POLL && !aio_context_set_fdmon(c, loop, &err)) {
        g_test_skip(error_get_pretty(err));
        error_free(err);
        aio_context_unref(c);
        return false;
    }
    e = ops->create(c, cfg, &err);
    if (e) {
        luring_get_info(e, &info);
        shared = info.shared_fdmon_ring;
        ops->destroy(e);
    } else if (errmsg) {
        *errmsg = g_strdup(error_get_pretty(err));
        error_free(err);
    }
    if (fdmon) {
        *fdmon = aio_context_fdmon_name(c);
    }
    aio_context_unref(c);
    return shared;
}

/* share-ring=auto (the default): only when the loop already runs on io_uring. */
static void test_share_ring_auto(void)
{
    RawAioConfig cfg = default_cfg();
    const char *fdmon = NULL;

    g_assert_false(shares_ring(AIO_FDMON_POLL, &cfg, &fdmon, NULL));
    g_assert_cmpstr(fdmon, ==, "poll");
    {
        AioContext *c = aio_context_new(&error_abort);
        Error *err = NULL;
        bool ok = aio_context_set_fdmon(c, AIO_FDMON_IO_URING, &err);

        aio_context_unref(c);
        if (!ok) {
            g_test_skip(error_get_pretty(err));
            error_free(err);
            return;
        }
    }
    /* fixed-files=auto (the default) does not keep it from sharing */
    g_assert_true(shares_ring(AIO_FDMON_IO_URING, &cfg, &fdmon, NULL));
    g_assert_cmpstr(fdmon, ==, "io_uring");
    cfg.fixed_files = RAW_AIO_ONOFFAUTO_ON;     /* needs a ring of its own: quietly not shared */
    g_assert_false(shares_ring(AIO_FDMON_IO_URING, &cfg, NULL, NULL));
    cfg = default_cfg();
    cfg.share_ring = RAW_AIO_ONOFFAUTO_OFF;
    g_assert_false(shares_ring(AIO_FDMON_IO_URING, &cfg, NULL, NULL));
}

/* share-ring=on moves a poll loop onto io_uring; conflicting options are refused. */
static void test_share_ring_on(void)
{
    RawAioConfig cfg = default_cfg();
    const char *fdmon = NULL;
    char *msg = NULL;

    cfg.share_ring = RAW_AIO_ONOFFAUTO_ON;
    g_assert_true(shares_ring(AIO_FDMON_POLL, &cfg, &fdmon, NULL));
    g_assert_cmpstr(fdmon, ==, "io_uring");

    cfg.sqpoll = true;
    g_assert_false(shares_ring(AIO_FDMON_POLL, &cfg, &fdmon, &msg));
    g_assert_cmpstr(msg, ==, "io_uring: share-ring=on cannot be combined with sqpoll=on, "
                    "which needs a ring of the engine's own");
    g_assert_cmpstr(fdmon, ==, "poll");
    g_free(msg);
}

/* FUA on the shared ring is one write with RWF_DSYNC. */
static void test_shared_fua(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e = create_engine(&cfg);
    int fd = make_file("sfua", 0, FILE_SIZE);
    g_autofree uint8_t *wbuf = g_malloc(16384);
    g_autofree uint8_t *rbuf = g_malloc(16384);
    LuringStats st;
    TestReq t;

    memset(wbuf, 0x31, 16384);
    luring_debug_inject(e, LURING_INJECT_SHORT, 1);
    prep(&t, RAW_AIO_WRITE, fd, -1, 8192, wbuf, 16384);
    t.req.flags = RAW_AIO_FUA;
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    luring_get_stats(e, &st);
    g_assert_cmpuint(st.sqes, ==, 2);     /* the write, then its remainder */
    g_assert_cmpint(pread(fd, rbuf, 16384, 8192), ==, 16384);
    g_assert_cmpmem(rbuf, 16384, wbuf, 16384);
    ops->destroy(e);
    close(fd);
}

/*
 * A DEFER_TASKRUN ring used from a thread other than its creator (a
 * contract violation) fails the request with an error; no hang, no crash.
 */
typedef struct WrongThread {
    RawAioEngine *e;
    TestReq *t;
    int ret;
} WrongThread;

static void *wrong_thread_fn(void *opaque)
{
    WrongThread *w = opaque;

    w->ret = raw_aio_submit(w->e, &w->t->req);
    return NULL;
}

static void test_wrong_thread(void)
{
    RawAioConfig cfg = default_cfg();
    RawAioEngine *e = create_engine(&cfg);
    int fd = make_file("wrongthread", 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc(4096);
    LuringInfo info;
    WrongThread w;
    GThread *th;
    TestReq t;

    luring_get_info(e, &info);
    if (!info.defer_taskrun) {
        g_test_skip("no DEFER_TASKRUN here");
        ops->destroy(e);
        close(fd);
        return;
    }
    prep(&t, RAW_AIO_READ, fd, -1, 0, buf, 4096);
    w = (WrongThread){ .e = e, .t = &t, .ret = 1 };
    th = g_thread_new("wrong", wrong_thread_fn, &w);
    g_thread_join(th);
    g_assert_cmpint(w.ret, ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, -EEXIST);

    /* The ring still works from its own thread. */
    prep(&t, RAW_AIO_READ, fd, -1, 4096, buf, 4096);
    g_assert_cmpint(raw_aio_submit(e, &t.req), ==, 0);
    wait_for(&t);
    g_assert_cmpint(t.ret, ==, 0);
    check_pattern(buf, 4096, 4096);
    ops->destroy(e);
    close(fd);
}

/*
 * A completion callback that destroys the instance (as a close run by a
 * nested aio_poll would): the rest completes inside destroy(), and the
 * instance is freed once our frames unwind (ASan checks).
 */
typedef struct SelfDestruct {
    RawAioEngine *e;
    int count;
    int count_at_destroy;
} SelfDestruct;

static void self_destruct_cb(void *opaque, int ret)
{
    SelfDestruct *sd = opaque;

    g_assert_cmpint(ret, ==, 0);
    if (++sd->count == 1) {
        ops->destroy(sd->e);
        sd->count_at_destroy = sd->count;
    }
}

static void run_self_destruct(RawAioConfig *cfg, bool via_pool)
{
    int fd = make_file("selfdestruct", 0, FILE_SIZE);
    g_autofree uint8_t *buf = g_malloc(32 * 4096);
    TestReq t[32];
    SelfDestruct sd = { 0 };
    int slot = -1;

    sd.e = create_engine(cfg);
    if (!via_pool && cfg->fixed_files) {
        slot = ops->add_file(sd.e, fd, O_RDWR, &error_abort);
    }
    for (int i = 0; i < 32; i++) {
        prep(&t[i], RAW_AIO_READ, fd, slot, (uint64_t)i * 4096, buf + i * 4096, 4096);
        t[i].req.cb = self_destruct_cb;
        t[i].req.opaque = &sd;
        g_assert_cmpint(raw_aio_submit(sd.e, &t[i].req), ==, 0);
    }
    while (sd.count < 32) {
        aio_poll(ctx, true);
    }
    g_assert_cmpint(sd.count_at_destroy, ==, 32);
    check_pattern(buf, 0, 32 * 4096);
    /* Let deferred work (the thread pool's put) run. */
    while (aio_poll(ctx, false)) {
    }
    close(fd);
}

static void test_destroy_from_callback(void)
{
    RawAioConfig cfg = default_cfg();

    cfg.queue_depth = 8;
    run_self_destruct(&cfg, false);
    /* Completions from the thread pool: a restricted fixed-file ring and a plain fd. */
    cfg.fixed_files = RAW_AIO_ONOFFAUTO_ON;
    cfg.restrict_ops = RAW_AIO_ONOFFAUTO_ON;
    run_self_destruct(&cfg, true);
}

/* ---- Availability ------------------------------------------------------------------- */

static void disable_env_child(void)
{
    Error *err = NULL;

    g_assert_false(ops->available(&err));
    fprintf(stderr, "%s\n", error_get_pretty(err));
    error_free(err);
    exit(0);
}

static void test_disable_env(void)
{
    if (g_test_subprocess()) {
        disable_env_child();
        return;
    }
    g_setenv("RINGBLK_IO_URING_DISABLE", "1", TRUE);
    g_test_trap_subprocess(NULL, 0, 0);
    g_unsetenv("RINGBLK_IO_URING_DISABLE");
    g_test_trap_assert_passed();
    g_test_trap_assert_stderr("io_uring is unavailable: disabled by "
                              "RINGBLK_IO_URING_DISABLE\n");
}

/* A raw seccomp filter: io_uring_setup fails with EPERM, all else allowed. */
static void install_seccomp_filter(void)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { G_N_ELEMENTS(filter), filter };

    g_assert_cmpint(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), ==, 0);
    g_assert_cmpint(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), ==, 0);
}

static void seccomp_child(void)
{
    Error *err = NULL;

    install_seccomp_filter();
    g_assert_false(ops->available(&err));
    fprintf(stderr, "%s\n", error_get_pretty(err));
    g_clear_error(&err);
    g_assert_false(luring_probe_uncached(&err));
    g_clear_error(&err);
    exit(0);
}

static void test_seccomp(void)
{
#if defined(__x86_64__)
    if (g_test_subprocess()) {
        seccomp_child();
        return;
    }
    g_test_trap_subprocess(NULL, 0, 0);
    g_test_trap_assert_passed();
    g_test_trap_assert_stderr("io_uring is unavailable: io_uring_setup is blocked, "
                              "e.g. by a seccomp filter such as Docker's default "
                              "profile (Operation not permitted)\n");
#else
    g_test_skip("seccomp filter written for x86_64");
#endif
}

/*
 * The same filter, through the block layer: aio=auto falls back (threads
 * buffered, native with O_DIRECT) and I/O works; explicit aio=io_uring
 * fails at open with the cause.
 */
static void seccomp_auto_child(void)
{
    char path[] = "/var/tmp/ringblk-test-io-uring-seccomp-XXXXXX";
    static const char *const modes[] = { "aio=auto", "aio=auto,cache.direct=on",
                                         "aio=io_uring" };
    uint8_t *buf = NULL;
    int fd = mkstemp(path);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, 65536), ==, 0);
    close(fd);
    g_assert_cmpint(posix_memalign((void **)&buf, 4096, 4096), ==, 0);
    install_seccomp_filter();
    for (size_t i = 0; i < G_N_ELEMENTS(modes); i++) {
        g_autofree char *opts = g_strdup_printf("driver=file,filename=%s,%s", path, modes[i]);
        Error *err = NULL;
        BlockDriverState *bs = bdrv_open_string(opts, &err);
        BlockNodeInfo info;

        if (!bs) {
            fprintf(stderr, "%s: %s\n", modes[i], error_get_pretty(err));
            error_free(err);
            continue;
        }
        bdrv_query_node_info(bs, &info);
        memset(buf, 0x6b, 4096);
        g_assert_cmpint(bdrv_pwrite(bs, 8192, 4096, buf, 0), ==, 0);
        memset(buf, 0, 4096);
        g_assert_cmpint(bdrv_pread(bs, 8192, 4096, buf, 0), ==, 0);
        g_assert_cmpuint(buf[0], ==, 0x6b);
        g_assert_cmpuint(buf[4095], ==, 0x6b);
        fprintf(stderr, "%s: %s\n", modes[i], info.aio);
        bdrv_node_info_clear(&info);
        bdrv_unref(bs);
    }
    unlink(path);
    free(buf);
    exit(0);
}

static void test_seccomp_auto(void)
{
#if defined(__x86_64__)
    if (g_test_subprocess()) {
        seccomp_auto_child();
        return;
    }
    const RawAioOps *native = raw_aio_ops_by_name("native");
    g_autofree char *want = g_strdup_printf(
        "aio=auto: threads\n"
        "aio=auto,cache.direct=on: %s\n"
        "aio=io_uring: io_uring is unavailable: io_uring_setup is blocked, e.g. by a "
        "seccomp filter such as Docker's default profile (Operation not permitted)\n",
        native && native->available(NULL) ? "native" : "threads");

    g_test_trap_subprocess(NULL, 0, 0);
    g_test_trap_assert_passed();
    g_test_trap_assert_stderr(want);
#else
    g_test_skip("seccomp filter written for x86_64");
#endif
}

int main(int argc, char **argv)
{
    Error *err = NULL;
    int ret;

    g_test_init(&argc, &argv, NULL);
    if (!g_test_subprocess() && !ops->available(&err)) {
        g_printerr("skipping: %s\n", error_get_pretty(err));
        error_free(err);
        return 77;
    }
    ctx = aio_context_new(&error_abort);
    scratch_dir = g_strdup_printf("/var/tmp/ringblk-test-io-uring-%d", getpid());
    if (!g_test_subprocess()) {
        /* Subprocess children use no files (and exit without cleaning up). */
        g_mkdir_with_parents(scratch_dir, 0700);
    }

    g_test_add_func("/io_uring/available/env", test_disable_env);
    g_test_add_func("/io_uring/available/seccomp", test_seccomp);
    g_test_add_func("/io_uring/available/seccomp-auto", test_seccomp_auto);
    g_test_add_func("/io_uring/rw", test_read_write);
    g_test_add_func("/io_uring/inline-read", test_inline_read);
    g_test_add_func("/io_uring/short-read", test_short_read);
    g_test_add_func("/io_uring/short-write", test_short_write);
    g_test_add_func("/io_uring/eagain", test_eagain);
    g_test_add_func("/io_uring/eof-zero-fill", test_eof_zero_fill);
    g_test_add_func("/io_uring/overflow", test_overflow);
    g_test_add_func("/io_uring/ebusy", test_ebusy);
    g_test_add_func("/io_uring/plug", test_plug);
    g_test_add_func("/io_uring/callback-resubmit", test_callback_resubmit);
    g_test_add_func("/io_uring/nested-poll", test_nested_poll);
    g_test_add_func("/io_uring/completion-burst", test_completion_burst);
    g_test_add_func("/io_uring/completion-burst/no-loop-wait", test_completion_burst_no_loop_wait);
    g_test_add_func("/io_uring/fua", test_fua);
    g_test_add_func("/io_uring/discard-zeroes", test_discard_zeroes);
    g_test_add_func("/io_uring/blkdev-discard-zeroes", test_blkdev_discard_zeroes);
    g_test_add_func("/io_uring/fixed-files", test_fixed_files);
    g_test_add_func("/io_uring/fixed-files-auto", test_fixed_files_auto);
    g_test_add_func("/io_uring/fixed-buffers", test_fixed_buffers);
    g_test_add_func("/io_uring/async-punt/depth", test_async_punt_depth);
    g_test_add_func("/io_uring/sync-below", test_sync_below);
    g_test_add_func("/io_uring/sync-race", test_sync_race);
    g_test_add_func("/io_uring/memlock", test_memlock);
    g_test_add_func("/io_uring/sqpoll-wakeup", test_sqpoll);
    g_test_add_func("/io_uring/sqpoll-full-ring", test_sqpoll_full_ring);
    g_test_add_func("/io_uring/sqpoll-idle-cpu", test_sqpoll_idle_cpu);
    g_test_add_func("/io_uring/busy-poll", test_busy_poll);
    g_test_add_data_func("/io_uring/loop-wait", NULL, test_loop_wait);
    g_test_add_data_func("/io_uring/loop-wait/sqpoll", "sqpoll", test_loop_wait);
    g_test_add_func("/io_uring/loop-wait/eventfd-parked", test_loop_wait_eventfd_parked);
    g_test_add_func("/io_uring/loop-wait/task-work-left", test_loop_wait_task_work_left);
    g_test_add_data_func("/io_uring/loop-wait/fixed-files-restricted", "fixed-files",
                         test_loop_wait);
    g_test_add_func("/io_uring/iopoll-refused", test_iopoll_refused);
    g_test_add_func("/io_uring/restrict", test_restrict);
    g_test_add_func("/io_uring/destroy-inflight", test_destroy_inflight);
    g_test_add_func("/io_uring/destroy-from-callback", test_destroy_from_callback);
    g_test_add_func("/io_uring/taskrun/default-defer", test_default_defer);
    g_test_add_func("/io_uring/taskrun/wrong-thread", test_wrong_thread);
    g_test_add_data_func("/io_uring/taskrun/plain/rw", test_read_write, run_plain);
    g_test_add_data_func("/io_uring/taskrun/plain/short-read", test_short_read, run_plain);
    g_test_add_data_func("/io_uring/taskrun/plain/overflow", test_overflow, run_plain);
    g_test_add_data_func("/io_uring/taskrun/plain/callback-resubmit", test_callback_resubmit,
                         run_plain);
    g_test_add_data_func("/io_uring/taskrun/plain/fua", test_fua, run_plain);
    g_test_add_data_func("/io_uring/taskrun/plain/nested-poll", test_nested_poll, run_plain);
    g_test_add_data_func("/io_uring/taskrun/plain/destroy-inflight", test_destroy_inflight,
                         run_plain);
    g_test_add_func("/io_uring/share-ring/auto", test_share_ring_auto);
    g_test_add_func("/io_uring/share-ring/on", test_share_ring_on);
    g_test_add_data_func("/io_uring/shared-ring/rw", test_read_write, run_shared);
    g_test_add_data_func("/io_uring/shared-ring/short-read", test_short_read, run_shared);
    g_test_add_data_func("/io_uring/shared-ring/eagain", test_eagain, run_shared);
    g_test_add_data_func("/io_uring/shared-ring/eof-zero-fill", test_eof_zero_fill, run_shared);
    g_test_add_data_func("/io_uring/shared-ring/overflow", test_overflow, run_shared);
    g_test_add_data_func("/io_uring/shared-ring/callback-resubmit", test_callback_resubmit,
                         run_shared);
    g_test_add_data_func("/io_uring/shared-ring/discard-zeroes", test_discard_zeroes,
                         run_shared);
    g_test_add_data_func("/io_uring/shared-ring/fua", test_shared_fua, run_shared);
    g_test_add_data_func("/io_uring/shared-ring/nested-poll", test_nested_poll, run_shared);
    g_test_add_data_func("/io_uring/shared-ring/destroy-inflight", test_destroy_inflight,
                         run_shared);
    g_test_add_data_func("/io_uring/shared-ring/destroy-from-callback",
                         test_destroy_from_callback, run_shared);
    ret = g_test_run();
    rmdir(scratch_dir);
    g_free(scratch_dir);
    aio_context_unref(ctx);
    return ret;
}
