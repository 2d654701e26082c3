/*
 * NBD server: an in-process client over a socketpair drives the server
 * with hand-built packets. The server runs in this thread's main
 * AioContext (or an IOThread for the /nbd/iothread tests); the client
 * helpers poll the main context while they wait, so both sides make
 * progress in one thread.
 */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "block/block.h"
#include "block/export.h"
#include "block/nbd.h"
#include "util/iothread.h"

static char *scratch_dir;

/* ---- client helpers ------------------------------------------------------------------ */

/* Polls the server side once; waits briefly on the client fd when nothing ran. */
static void pump(int fd, short events)
{
    if (!aio_poll(aio_context_main(), false)) {
        struct pollfd p = { .fd = fd, .events = events };
        poll(&p, 1, 1);
    }
}

#define PUMP_LIMIT 5000   /* iterations (~1 ms each when idle): a hang guard, not a timing check */

static void cl_send(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    for (int i = 0; len && i < PUMP_LIMIT * 10; i++) {
        ssize_t n = send(fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= n;
            continue;
        }
        g_assert_true(n < 0 && (errno == EAGAIN || errno == EINTR));
        pump(fd, POLLOUT);
    }
    g_assert_cmpuint(len, ==, 0);
}

/* Receives exactly len bytes; returns false on EOF first. */
static bool cl_recv_or_eof(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    for (int i = 0; len; i++) {
        g_assert_cmpint(i, <, PUMP_LIMIT);
        ssize_t n = recv(fd, p, len, MSG_DONTWAIT);
        if (n > 0) {
            p += n;
            len -= n;
            continue;
        }
        if (n == 0 || (n < 0 && errno == ECONNRESET)) {
            return false;
        }
        g_assert_true(errno == EAGAIN || errno == EINTR);
        pump(fd, POLLIN);
    }
    return true;
}

static void cl_recv(int fd, void *buf, size_t len)
{
    g_assert_true(cl_recv_or_eof(fd, buf, len));
}

/* Waits until the server closed the connection (after consuming any output). */
static void cl_expect_eof(int fd)
{
    uint8_t junk[4096];
    for (int i = 0;; i++) {
        g_assert_cmpint(i, <, PUMP_LIMIT);
        ssize_t n = recv(fd, junk, sizeof(junk), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno == ECONNRESET)) {
            return;
        }
        if (n < 0) {
            g_assert_true(errno == EAGAIN || errno == EINTR);
            pump(fd, POLLIN);
        }
    }
}

/* Waits until the server has released all but `left` connections. */
static void wait_conns(unsigned left)
{
    for (int i = 0; nbd_server_connection_count() > left; i++) {
        g_assert_cmpint(i, <, PUMP_LIMIT);
        if (!aio_poll(aio_context_main(), false)) {
            g_usleep(500);
        }
    }
}

static void wait_no_conns(void)
{
    wait_conns(0);
}

static uint16_t rd16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return be16toh(v);
}

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return be32toh(v);
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return be64toh(v);
}

static void wr16(uint8_t *p, uint16_t v)
{
    v = htobe16(v);
    memcpy(p, &v, 2);
}

static void wr32(uint8_t *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, 4);
}

static void wr64(uint8_t *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, 8);
}

/* A new connection: returns the client's fd after reading the greeting. */
static int cl_connect_raw(void)
{
    int sv[2];
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
    g_assert_true(nbd_server_add_client(sv[0], &error_abort));
    uint8_t g[18];
    cl_recv(sv[1], g, sizeof(g));
    g_assert_cmphex(rd64(g), ==, NBD_INIT_MAGIC);
    g_assert_cmphex(rd64(g + 8), ==, NBD_OPTS_MAGIC);
    g_assert_cmphex(rd16(g + 16), ==, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    return sv[1];
}

static int cl_connect(uint32_t cflags)
{
    int fd = cl_connect_raw();
    uint8_t f[4];
    wr32(f, cflags);
    cl_send(fd, f, 4);
    return fd;
}

static void cl_opt(int fd, uint32_t opt, const void *data, uint32_t len)
{
    uint8_t h[16];
    wr64(h, NBD_OPTS_MAGIC);
    wr32(h + 8, opt);
    wr32(h + 12, len);
    cl_send(fd, h, 16);
    if (len) {
        cl_send(fd, data, len);
    }
}

typedef struct OptReply {
    uint32_t opt, type, len;
    uint8_t data[8192];
} OptReply;

static void cl_opt_reply(int fd, OptReply *r)
{
    uint8_t h[20];
    cl_recv(fd, h, 20);
    g_assert_cmphex(rd64(h), ==, NBD_REP_MAGIC);
    r->opt = rd32(h + 8);
    r->type = rd32(h + 12);
    r->len = rd32(h + 16);
    g_assert_cmpuint(r->len, <=, sizeof(r->data));
    cl_recv(fd, r->data, r->len);
}

/* Sends opt and expects one reply of type `type`. */
static void cl_opt_expect(int fd, uint32_t opt, const void *data, uint32_t len, uint32_t type)
{
    OptReply r;
    cl_opt(fd, opt, data, len);
    cl_opt_reply(fd, &r);
    g_assert_cmpuint(r.opt, ==, opt);
    g_assert_cmphex(r.type, ==, type);
}

/* Builds NBD_OPT_INFO/GO data: name, then the info requests. */
static uint32_t info_data(uint8_t *d, const char *name, const uint16_t *reqs, int n)
{
    uint32_t nl = strlen(name);
    wr32(d, nl);
    memcpy(d + 4, name, nl);
    wr16(d + 4 + nl, n);
    for (int i = 0; i < n; i++) {
        wr16(d + 6 + nl + 2 * i, reqs[i]);
    }
    return 6 + nl + 2 * n;
}

static uint32_t meta_data(uint8_t *d, const char *name, const char *const *q, int n)
{
    uint32_t nl = strlen(name), p;
    wr32(d, nl);
    memcpy(d + 4, name, nl);
    wr32(d + 4 + nl, n);
    p = 8 + nl;
    for (int i = 0; i < n; i++) {
        wr32(d + p, strlen(q[i]));
        memcpy(d + p + 4, q[i], strlen(q[i]));
        p += 4 + strlen(q[i]);
    }
    return p;
}

typedef struct Client {
    int fd;
    uint64_t size;
    uint16_t flags;
    bool structured;
} Client;

/* Fixed newstyle + NO_ZEROES, optional structured replies and base:allocation, then GO. */
static Client cl_go(const char *name, bool structured, bool meta)
{
    Client c = { .fd = cl_connect(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES),
                 .structured = structured };
    OptReply r;
    if (structured) {
        cl_opt_expect(c.fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0, NBD_REP_ACK);
    }
    if (meta) {
        uint8_t d[256];
        const char *q[] = { NBD_META_BASE_ALLOCATION };
        cl_opt(c.fd, NBD_OPT_SET_META_CONTEXT, d, meta_data(d, name, q, 1));
        cl_opt_reply(c.fd, &r);
        g_assert_cmphex(r.type, ==, NBD_REP_META_CONTEXT);
        g_assert_cmpuint(r.len, ==, 4 + strlen(NBD_META_BASE_ALLOCATION));
        g_assert_cmpmem(r.data + 4, r.len - 4, NBD_META_BASE_ALLOCATION,
                        strlen(NBD_META_BASE_ALLOCATION));
        cl_opt_reply(c.fd, &r);
        g_assert_cmphex(r.type, ==, NBD_REP_ACK);
    }
    uint8_t d[256];
    cl_opt(c.fd, NBD_OPT_GO, d, info_data(d, name, NULL, 0));
    for (;;) {
        cl_opt_reply(c.fd, &r);
        g_assert_cmpuint(r.opt, ==, NBD_OPT_GO);
        if (r.type == NBD_REP_ACK) {
            break;
        }
        g_assert_cmphex(r.type, ==, NBD_REP_INFO);
        if (rd16(r.data) == NBD_INFO_EXPORT) {
            g_assert_cmpuint(r.len, ==, 12);
            c.size = rd64(r.data + 2);
            c.flags = rd16(r.data + 10);
        }
    }
    return c;
}

/* Offsets of the reads sent, by cookie: replies place data chunks with them. */
static uint64_t read_offset[256];

static void cl_request(const Client *c, uint16_t type, uint16_t flags, uint64_t cookie,
                       uint64_t offset, uint32_t length)
{
    uint8_t h[28];
    if (type == NBD_CMD_READ) {
        read_offset[cookie & 255] = offset;
    }
    wr32(h, NBD_REQUEST_MAGIC);
    wr16(h + 4, flags);
    wr16(h + 6, type);
    wr64(h + 8, cookie);
    wr64(h + 16, offset);
    wr32(h + 24, length);
    cl_send(c->fd, h, 28);
}

/* A simple reply: returns its error, checks the cookie. */
static uint32_t cl_simple_reply(const Client *c, uint64_t *cookie)
{
    uint8_t h[16];
    cl_recv(c->fd, h, 16);
    g_assert_cmphex(rd32(h), ==, NBD_SIMPLE_REPLY_MAGIC);
    *cookie = rd64(h + 8);
    return rd32(h + 4);
}

typedef struct Chunk {
    uint16_t flags, type;
    uint64_t cookie;
    uint32_t len;
    uint8_t *payload;   /* g_malloc'd */
} Chunk;

/* Reads one reply header of either kind; for simple replies type is 0xffff. */
static void cl_any_reply(const Client *c, Chunk *ch, uint32_t *err)
{
    uint8_t h[20];
    cl_recv(c->fd, h, 4);
    if (rd32(h) == NBD_SIMPLE_REPLY_MAGIC) {
        cl_recv(c->fd, h + 4, 12);
        *err = rd32(h + 4);
        ch->cookie = rd64(h + 8);
        ch->type = 0xffff;
        ch->flags = 0;
        ch->len = 0;
        ch->payload = NULL;
        return;
    }
    g_assert_cmphex(rd32(h), ==, NBD_STRUCTURED_REPLY_MAGIC);
    cl_recv(c->fd, h + 4, 16);
    ch->flags = rd16(h + 4);
    ch->type = rd16(h + 6);
    ch->cookie = rd64(h + 8);
    ch->len = rd32(h + 16);
    ch->payload = g_malloc(ch->len + 1);
    cl_recv(c->fd, ch->payload, ch->len);
    *err = 0;
    if (ch->type & (1u << 15)) {
        g_assert_cmpuint(ch->len, >=, 6);
        *err = rd32(ch->payload);
        g_assert_cmpuint(rd16(ch->payload + 4), <=, ch->len - 6);
    }
}

/* Reads a whole reply to a read of len bytes into buf; returns the NBD error. */
static uint32_t cl_read_reply(const Client *c, uint64_t cookie, void *buf, uint32_t len)
{
    if (!c->structured) {
        uint64_t ck;
        uint32_t err = cl_simple_reply(c, &ck);
        g_assert_cmphex(ck, ==, cookie);
        if (!err) {
            cl_recv(c->fd, buf, len);
        }
        return err;
    }
    /* Chunks may be data or holes, in any order; together they cover the read once. */
    uint64_t base = read_offset[cookie & 255];
    g_autofree uint8_t *covered = g_malloc0(len + 1);
    uint32_t err = 0;
    for (;;) {
        Chunk ch;
        uint32_t e;
        cl_any_reply(c, &ch, &e);
        g_assert_cmphex(ch.cookie, ==, cookie);
        g_assert_cmpuint(ch.type, !=, 0xffff);   /* never a simple reply to a read */
        if (ch.type == NBD_REPLY_TYPE_OFFSET_DATA || ch.type == NBD_REPLY_TYPE_OFFSET_HOLE) {
            bool hole = ch.type == NBD_REPLY_TYPE_OFFSET_HOLE;
            if (hole) {
                g_assert_cmpuint(ch.len, ==, 12);
            } else {
                g_assert_cmpuint(ch.len, >, 8);
            }
            uint64_t off = rd64(ch.payload);
            uint32_t n = hole ? rd32(ch.payload + 8) : ch.len - 8;
            g_assert_cmpuint(n, >, 0);
            g_assert_cmpuint(off, >=, base);
            g_assert_cmpuint(off - base + n, <=, len);
            for (uint32_t i = 0; i < n; i++) {
                g_assert_cmpuint(covered[off - base + i], ==, 0);
                covered[off - base + i] = 1;
            }
            if (hole) {
                memset((uint8_t *)buf + (off - base), 0, n);
            } else {
                memcpy((uint8_t *)buf + (off - base), ch.payload + 8, n);
            }
        } else if (e) {
            err = e;
        }
        bool done = ch.flags & NBD_REPLY_FLAG_DONE;
        g_free(ch.payload);
        if (done) {
            if (!err) {
                for (uint32_t i = 0; i < len; i++) {
                    g_assert_cmpuint(covered[i], ==, 1);
                }
            }
            return err;
        }
    }
}

/* Reply to a command without data: simple or structured. */
static uint32_t cl_reply(const Client *c, uint64_t cookie)
{
    Chunk ch;
    uint32_t err;
    cl_any_reply(c, &ch, &err);
    g_assert_cmphex(ch.cookie, ==, cookie);
    if (ch.type != 0xffff) {
        g_assert_true(ch.flags & NBD_REPLY_FLAG_DONE);
    }
    g_free(ch.payload);
    return err;
}

/* A write of len bytes of buf at offset; returns the NBD error. */
static uint32_t cl_write(const Client *c, uint64_t cookie, uint64_t offset, const void *buf,
                         uint32_t len)
{
    cl_request(c, NBD_CMD_WRITE, 0, cookie, offset, len);
    cl_send(c->fd, buf, len);
    return cl_reply(c, cookie);
}

static void cl_close(Client *c)
{
    unsigned n = nbd_server_connection_count();
    cl_request(c, NBD_CMD_DISC, 0, 0, 0, 0);
    cl_expect_eof(c->fd);
    close(c->fd);
    wait_conns(n - 1);
}

/* ---- exports ------------------------------------------------------------------------- */

static BlockDriverState *disk_bs;
#define DISK_SIZE (4 * 1024 * 1024)

static void add_export(const char *id, const char *node, const char *name, bool writable,
                       const char *desc)
{
    BlockExportOptions o = { .id = id, .node_name = node, .name = name, .writable = writable,
                             .description = desc };
    g_assert_nonnull(nbd_export_add(&o, &error_abort));
}

/* "disk": a writable 4 MiB file; "ro": the same node, read-only. */
static void setup(void)
{
    g_autofree char *path = g_build_filename(scratch_dir, "disk.img", NULL);
    Error *err = NULL;
    g_assert_cmpint(bdrv_create_file(path, DISK_SIZE, "off", &err), ==, 0);
    g_autofree char *opts = g_strdup_printf("driver=file,node-name=disk0,filename=%s", path);
    disk_bs = bdrv_open_string(opts, &error_abort);
    add_export("e-disk", "disk0", "disk", true, "a test disk");
    add_export("e-ro", "disk0", "ro", false, NULL);
}

static void teardown(void)
{
    block_export_del_all();
    g_assert_cmpuint(nbd_server_connection_count(), ==, 0);
    g_assert_null(block_export_next(NULL));
    bdrv_unref(disk_bs);
    disk_bs = NULL;
}

/* ---- handshake ---------------------------------------------------------------------- */

static void test_export_name(void)
{
    setup();
    /* With and without NO_ZEROES: 10 or 134 bytes. */
    for (int nz = 0; nz < 2; nz++) {
        int fd = cl_connect(NBD_FLAG_C_FIXED_NEWSTYLE | (nz ? NBD_FLAG_C_NO_ZEROES : 0));
        cl_opt(fd, NBD_OPT_EXPORT_NAME, "disk", 4);
        uint8_t r[134];
        cl_recv(fd, r, nz ? 10 : 134);
        g_assert_cmpuint(rd64(r), ==, DISK_SIZE);
        uint16_t fl = rd16(r + 8);
        g_assert_true(fl & NBD_FLAG_HAS_FLAGS);
        g_assert_false(fl & NBD_FLAG_READ_ONLY);
        g_assert_true(fl & NBD_FLAG_SEND_FLUSH);
        g_assert_true(fl & NBD_FLAG_SEND_TRIM);
        g_assert_true(fl & NBD_FLAG_CAN_MULTI_CONN);
        if (!nz) {
            for (int i = 10; i < 134; i++) {
                g_assert_cmpint(r[i], ==, 0);
            }
        }
        Client c = { .fd = fd, .size = DISK_SIZE };
        cl_close(&c);
    }
    /* Unknown export: the server can only hang up. */
    int fd = cl_connect(NBD_FLAG_C_FIXED_NEWSTYLE);
    cl_opt(fd, NBD_OPT_EXPORT_NAME, "nosuch", 6);
    cl_expect_eof(fd);
    close(fd);
    wait_no_conns();
    teardown();
}

static void test_bad_client_flags(void)
{
    setup();
    int fd = cl_connect(1u << 5);
    cl_expect_eof(fd);
    close(fd);
    /* Bad option magic. */
    fd = cl_connect(NBD_FLAG_C_FIXED_NEWSTYLE);
    uint8_t h[16] = { 'x' };
    cl_send(fd, h, 16);
    cl_expect_eof(fd);
    close(fd);
    /* EOF in the middle of the handshake. */
    fd = cl_connect_raw();
    cl_send(fd, "\0\0", 2);
    shutdown(fd, SHUT_WR);
    cl_expect_eof(fd);
    close(fd);
    wait_no_conns();
    teardown();
}

static void test_go_info(void)
{
    setup();
    int fd = cl_connect(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    uint8_t d[256];
    OptReply r;
    uint16_t reqs[] = { NBD_INFO_NAME, NBD_INFO_DESCRIPTION, NBD_INFO_BLOCK_SIZE, 999 };

    /* INFO: name, description, block size, export, ACK. */
    cl_opt(fd, NBD_OPT_INFO, d, info_data(d, "disk", reqs, 4));
    bool seen_name = false, seen_desc = false, seen_bs = false, seen_exp = false;
    for (;;) {
        cl_opt_reply(fd, &r);
        g_assert_cmpuint(r.opt, ==, NBD_OPT_INFO);
        if (r.type == NBD_REP_ACK) {
            g_assert_cmpuint(r.len, ==, 0);
            break;
        }
        g_assert_cmphex(r.type, ==, NBD_REP_INFO);
        switch (rd16(r.data)) {
        case NBD_INFO_NAME:
            g_assert_cmpmem(r.data + 2, r.len - 2, "disk", 4);
            seen_name = true;
            break;
        case NBD_INFO_DESCRIPTION:
            g_assert_cmpmem(r.data + 2, r.len - 2, "a test disk", 11);
            seen_desc = true;
            break;
        case NBD_INFO_BLOCK_SIZE:
            g_assert_cmpuint(r.len, ==, 14);
            g_assert_cmpuint(rd32(r.data + 2), ==, bdrv_request_alignment(disk_bs));
            g_assert_cmpuint(rd32(r.data + 6), ==, MAX(4096, bdrv_request_alignment(disk_bs)));
            g_assert_cmpuint(rd32(r.data + 10), ==, 32 * 1024 * 1024);
            seen_bs = true;
            break;
        case NBD_INFO_EXPORT:
            g_assert_cmpuint(r.len, ==, 12);
            g_assert_cmpuint(rd64(r.data + 2), ==, DISK_SIZE);
            seen_exp = true;
            break;
        default:
            g_assert_not_reached();
        }
    }
    g_assert_true(seen_name && seen_desc && seen_bs && seen_exp);

    /* Unknown export; bad lengths; then GO on the read-only one. */
    cl_opt_expect(fd, NBD_OPT_INFO, d, info_data(d, "nosuch", NULL, 0), NBD_REP_ERR_UNKNOWN);
    uint32_t n = info_data(d, "disk", reqs, 2);
    cl_opt_expect(fd, NBD_OPT_GO, d, n - 1, NBD_REP_ERR_INVALID);
    cl_opt_expect(fd, NBD_OPT_GO, d, 3, NBD_REP_ERR_INVALID);
    wr32(d, 100000);
    cl_opt_expect(fd, NBD_OPT_GO, d, 10, NBD_REP_ERR_INVALID);

    cl_opt(fd, NBD_OPT_GO, d, info_data(d, "ro", NULL, 0));
    cl_opt_reply(fd, &r);
    g_assert_cmphex(r.type, ==, NBD_REP_INFO);
    g_assert_cmpuint(rd16(r.data), ==, NBD_INFO_EXPORT);
    uint16_t fl = rd16(r.data + 10);
    g_assert_true(fl & NBD_FLAG_READ_ONLY);
    g_assert_false(fl & NBD_FLAG_SEND_TRIM);
    cl_opt_reply(fd, &r);
    g_assert_cmphex(r.type, ==, NBD_REP_ACK);
    Client c = { .fd = fd };
    cl_close(&c);
    teardown();
}

static void test_list_abort_unsup(void)
{
    setup();
    int fd = cl_connect(NBD_FLAG_C_FIXED_NEWSTYLE);
    OptReply r;
    cl_opt(fd, NBD_OPT_LIST, NULL, 0);
    cl_opt_reply(fd, &r);
    g_assert_cmphex(r.type, ==, NBD_REP_SERVER);
    g_assert_cmpuint(rd32(r.data), ==, 4);
    g_assert_cmpmem(r.data + 4, r.len - 4, "diska test disk", 15);
    cl_opt_reply(fd, &r);
    g_assert_cmphex(r.type, ==, NBD_REP_SERVER);
    g_assert_cmpmem(r.data, r.len, "\0\0\0\2ro", 6);
    cl_opt_reply(fd, &r);
    g_assert_cmphex(r.type, ==, NBD_REP_ACK);
    cl_opt_expect(fd, NBD_OPT_LIST, "x", 1, NBD_REP_ERR_INVALID);
    cl_opt_expect(fd, NBD_OPT_STARTTLS, NULL, 0, NBD_REP_ERR_UNSUP);
    cl_opt_expect(fd, 12345, "abc", 3, NBD_REP_ERR_UNSUP);
    cl_opt_expect(fd, NBD_OPT_STRUCTURED_REPLY, "x", 1, NBD_REP_ERR_INVALID);
    /* Meta contexts need structured replies first. */
    uint8_t d[256];
    cl_opt_expect(fd, NBD_OPT_LIST_META_CONTEXT, d, meta_data(d, "disk", NULL, 0),
                  NBD_REP_ERR_INVALID);
    /* Oversized option data is skipped and refused. */
    g_autofree uint8_t *big = g_malloc0(100000);
    cl_opt_expect(fd, NBD_OPT_INFO, big, 100000, NBD_REP_ERR_TOO_BIG);
    cl_opt_expect(fd, NBD_OPT_ABORT, NULL, 0, NBD_REP_ACK);
    cl_expect_eof(fd);
    close(fd);
    /* Option data beyond any sane limit: disconnect. */
    fd = cl_connect(NBD_FLAG_C_FIXED_NEWSTYLE);
    uint8_t h[16];
    wr64(h, NBD_OPTS_MAGIC);
    wr32(h + 8, NBD_OPT_INFO);
    wr32(h + 12, 0xffffffffu);
    cl_send(fd, h, 16);
    cl_expect_eof(fd);
    close(fd);
    wait_no_conns();
    teardown();
}

static void test_meta_context(void)
{
    setup();
    int fd = cl_connect(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    OptReply r;
    uint8_t d[512];
    cl_opt_expect(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0, NBD_REP_ACK);
    cl_opt_expect(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0, NBD_REP_ERR_INVALID);
    /* LIST with no query: everything. */
    cl_opt(fd, NBD_OPT_LIST_META_CONTEXT, d, meta_data(d, "disk", NULL, 0));
    cl_opt_reply(fd, &r);
    g_assert_cmphex(r.type, ==, NBD_REP_META_CONTEXT);
    g_assert_cmpmem(r.data + 4, r.len - 4, "base:allocation", 15);
    cl_opt_reply(fd, &r);
    g_assert_cmphex(r.type, ==, NBD_REP_ACK);
    /* LIST "base:" matches; an unknown namespace does not. */
    const char *q1[] = { "base:" };
    cl_opt(fd, NBD_OPT_LIST_META_CONTEXT, d, meta_data(d, "disk", q1, 1));
    cl_opt_reply(fd, &r);
    g_assert_cmphex(r.type, ==, NBD_REP_META_CONTEXT);
    cl_opt_reply(fd, &r);
    g_assert_cmphex(r.type, ==, NBD_REP_ACK);
    const char *q2[] = { "qemu:dirty-bitmap:x" };
    cl_opt_expect(fd, NBD_OPT_SET_META_CONTEXT, d, meta_data(d, "disk", q2, 1), NBD_REP_ACK);
    /* Bad lengths: truncated query list, trailing garbage, unknown export. */
    const char *q3[] = { "base:allocation" };
    uint32_t n = meta_data(d, "disk", q3, 1);
    cl_opt_expect(fd, NBD_OPT_SET_META_CONTEXT, d, n - 1, NBD_REP_ERR_INVALID);
    d[n] = 0;
    cl_opt_expect(fd, NBD_OPT_SET_META_CONTEXT, d, n + 1, NBD_REP_ERR_INVALID);
    cl_opt_expect(fd, NBD_OPT_SET_META_CONTEXT, d, meta_data(d, "nosuch", q3, 1),
                  NBD_REP_ERR_UNKNOWN);
    wr32(d, 0xfffffff0u);
    cl_opt_expect(fd, NBD_OPT_SET_META_CONTEXT, d, n, NBD_REP_ERR_INVALID);
    close(fd);
    wait_no_conns();
    teardown();
}

/* ---- transmission -------------------------------------------------------------------- */

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 9));
    }
}

static void rw_cycle(bool structured)
{
    setup();
    Client c = cl_go("disk", structured, false);
    g_assert_cmpuint(c.size, ==, DISK_SIZE);
    g_autofree uint8_t *w = g_malloc(65536), *rd = g_malloc(65536);
    fill(w, 65536, structured);
    /* Write (with and without FUA), flush, read back; an unaligned piece too. */
    g_assert_cmpuint(cl_write(&c, 1, 8192, w, 65536), ==, 0);
    cl_request(&c, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 2, 100001, 777);
    cl_send(c.fd, w, 777);
    g_assert_cmpuint(cl_reply(&c, 2), ==, 0);
    cl_request(&c, NBD_CMD_FLUSH, 0, 3, 0, 0);
    g_assert_cmpuint(cl_reply(&c, 3), ==, 0);
    cl_request(&c, NBD_CMD_READ, 0, 4, 8192, 65536);
    g_assert_cmpuint(cl_read_reply(&c, 4, rd, 65536), ==, 0);
    g_assert_cmpmem(rd, 65536, w, 65536);
    cl_request(&c, NBD_CMD_READ, structured ? NBD_CMD_FLAG_DF : 0, 5, 100001, 777);
    g_assert_cmpuint(cl_read_reply(&c, 5, rd, 777), ==, 0);
    g_assert_cmpmem(rd, 777, w, 777);
    /* Zero-length read. */
    cl_request(&c, NBD_CMD_READ, 0, 6, 0, 0);
    g_assert_cmpuint(cl_read_reply(&c, 6, rd, 0), ==, 0);
    /* The data is in the file. */
    g_assert_cmpint(bdrv_pread(disk_bs, 8192, 65536, rd, 0), ==, 0);
    g_assert_cmpmem(rd, 65536, w, 65536);
    cl_close(&c);
    teardown();
}

static void test_rw_simple(void)
{
    rw_cycle(false);
}

static void test_rw_structured(void)
{
    rw_cycle(true);
}

static void test_trim_zeroes_cache(void)
{
    setup();
    Client c = cl_go("disk", true, true);
    g_autofree uint8_t *w = g_malloc(65536), *rd = g_malloc(65536);
    memset(w, 0xab, 65536);
    g_assert_cmpuint(cl_write(&c, 1, 0, w, 65536), ==, 0);
    /* WRITE_ZEROES over the middle (NO_HOLE: written, not punched). */
    cl_request(&c, NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE, 2, 4096, 8192);
    g_assert_cmpuint(cl_reply(&c, 2), ==, 0);
    cl_request(&c, NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FUA, 3, 16384, 4096);
    g_assert_cmpuint(cl_reply(&c, 3), ==, 0);
    cl_request(&c, NBD_CMD_READ, 0, 4, 0, 65536);
    g_assert_cmpuint(cl_read_reply(&c, 4, rd, 65536), ==, 0);
    for (int i = 0; i < 65536; i++) {
        uint8_t want = (i >= 4096 && i < 12288) || (i >= 16384 && i < 20480) ? 0 : 0xab;
        if (rd[i] != want) {
            g_error("byte %d: %#x, want %#x", i, rd[i], want);
        }
    }
    /* TRIM (with FUA) and CACHE succeed; trimmed contents are unspecified. */
    cl_request(&c, NBD_CMD_TRIM, NBD_CMD_FLAG_FUA, 5, 32768, 32768);
    g_assert_cmpuint(cl_reply(&c, 5), ==, 0);
    cl_request(&c, NBD_CMD_CACHE, 0, 6, 0, 65536);
    g_assert_cmpuint(cl_reply(&c, 6), ==, 0);
    /* FAST_ZERO: success or ENOTSUP, never a slow fallback error. */
    cl_request(&c, NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FAST_ZERO, 7, 0, 4096);
    uint32_t e = cl_reply(&c, 7);
    g_assert_true(e == 0 || e == NBD_ENOTSUP);
    cl_close(&c);
    teardown();
}

static void test_block_status(void)
{
    setup();
    Client c = cl_go("disk", true, true);
    /* Data in the first 64 KiB, the rest a hole (sparse file). */
    g_autofree uint8_t *w = g_malloc(65536);
    memset(w, 1, 65536);
    g_assert_cmpuint(cl_write(&c, 1, 0, w, 65536), ==, 0);
    for (int one = 0; one < 2; one++) {
        cl_request(&c, NBD_CMD_BLOCK_STATUS, one ? NBD_CMD_FLAG_REQ_ONE : 0, 2, 0, DISK_SIZE);
        Chunk ch;
        uint32_t err;
        cl_any_reply(&c, &ch, &err);
        g_assert_cmpuint(err, ==, 0);
        g_assert_cmpuint(ch.type, ==, NBD_REPLY_TYPE_BLOCK_STATUS);
        g_assert_true(ch.flags & NBD_REPLY_FLAG_DONE);
        g_assert_cmpuint(rd32(ch.payload), !=, 0);          /* the id SET gave */
        uint32_t n = (ch.len - 4) / 8;
        g_assert_cmpuint(ch.len, ==, 4 + 8 * n);
        g_assert_cmpuint(n, >=, 1);
        if (one) {
            g_assert_cmpuint(n, ==, 1);
        }
        /* First extent: data (HOLE clear), covering at least the written part. */
        g_assert_cmpuint(rd32(ch.payload + 4), >=, 65536);
        g_assert_false(rd32(ch.payload + 8) & NBD_STATE_HOLE);
        uint64_t sum = 0;
        for (uint32_t i = 0; i < n; i++) {
            sum += rd32(ch.payload + 4 + 8 * i);
        }
        g_assert_cmpuint(sum, <=, DISK_SIZE);
        if (!one) {
            g_assert_cmpuint(sum, ==, DISK_SIZE);
        }
        g_free(ch.payload);
    }
    /* Beyond the end, zero length. */
    cl_request(&c, NBD_CMD_BLOCK_STATUS, 0, 3, DISK_SIZE - 512, 1024);
    g_assert_cmpuint(cl_reply(&c, 3), ==, NBD_EINVAL);
    cl_request(&c, NBD_CMD_BLOCK_STATUS, 0, 4, 0, 0);
    g_assert_cmpuint(cl_reply(&c, 4), ==, NBD_EINVAL);
    cl_close(&c);

    /* Without a negotiated context: EINVAL. */
    c = cl_go("disk", true, false);
    cl_request(&c, NBD_CMD_BLOCK_STATUS, 0, 5, 0, 4096);
    g_assert_cmpuint(cl_reply(&c, 5), ==, NBD_EINVAL);
    cl_close(&c);
    teardown();
}

/* Reads one chunk of cookie's reply and checks it is exactly (type, flags, offset, length). */
static void expect_chunk(const Client *c, uint64_t cookie, uint16_t type, uint16_t flags,
                         uint64_t offset, uint32_t length, const uint8_t *data)
{
    Chunk ch;
    uint32_t err;
    cl_any_reply(c, &ch, &err);
    g_assert_cmpuint(err, ==, 0);
    g_assert_cmphex(ch.cookie, ==, cookie);
    g_assert_cmpuint(ch.type, ==, type);
    g_assert_cmphex(ch.flags, ==, flags);
    g_assert_cmpuint(rd64(ch.payload), ==, offset);
    if (type == NBD_REPLY_TYPE_OFFSET_HOLE) {
        g_assert_cmpuint(ch.len, ==, 12);
        g_assert_cmpuint(rd32(ch.payload + 8), ==, length);
    } else {
        g_assert_cmpuint(ch.len, ==, 8 + length);
        g_assert_cmpmem(ch.payload + 8, length, data, length);
    }
    g_free(ch.payload);
}

#define KiB 1024

/*
 * Reads over holes: OFFSET_HOLE chunks for the holes, OFFSET_DATA for the
 * rest, in order, the last one DONE; small reads, DF and simple replies
 * get plain data.
 */
static void test_read_sparse(void)
{
    setup();
    Client c = cl_go("disk", true, false);
    g_autofree uint8_t *w = g_malloc(64 * KiB), *rd = g_malloc(256 * KiB);
    g_autofree uint8_t *zero = g_malloc0(64 * KiB);
    fill(w, 64 * KiB, 9);
    /* Data at [64K, 128K) and [192K, 196K); the rest of the 4 MiB file is a hole. */
    g_assert_cmpuint(cl_write(&c, 1, 64 * KiB, w, 64 * KiB), ==, 0);
    g_assert_cmpuint(cl_write(&c, 2, 192 * KiB, w, 4 * KiB), ==, 0);

    g_autofree char *path = g_build_filename(scratch_dir, "disk.img", NULL);
    int fd = open(path, O_RDONLY);
    g_assert_cmpint(fd, >=, 0);
    off_t first_data = lseek(fd, 0, SEEK_DATA);
    close(fd);
    if (first_data != 64 * KiB) {
        cl_close(&c);
        teardown();
        g_test_skip("the scratch filesystem does not report holes at 4 KiB granularity");
        return;
    }

    cl_request(&c, NBD_CMD_READ, 0, 3, 0, 256 * KiB);
    expect_chunk(&c, 3, NBD_REPLY_TYPE_OFFSET_HOLE, 0, 0, 64 * KiB, NULL);
    expect_chunk(&c, 3, NBD_REPLY_TYPE_OFFSET_DATA, 0, 64 * KiB, 64 * KiB, w);
    expect_chunk(&c, 3, NBD_REPLY_TYPE_OFFSET_HOLE, 0, 128 * KiB, 64 * KiB, NULL);
    expect_chunk(&c, 3, NBD_REPLY_TYPE_OFFSET_DATA, 0, 192 * KiB, 4 * KiB, w);
    expect_chunk(&c, 3, NBD_REPLY_TYPE_OFFSET_HOLE, NBD_REPLY_FLAG_DONE, 196 * KiB, 60 * KiB,
                 NULL);
    /* All hole: one chunk, nothing read; with DF too (it is one chunk). */
    cl_request(&c, NBD_CMD_READ, 0, 4, 1024 * KiB, 64 * KiB);
    expect_chunk(&c, 4, NBD_REPLY_TYPE_OFFSET_HOLE, NBD_REPLY_FLAG_DONE, 1024 * KiB,
                 64 * KiB, NULL);
    cl_request(&c, NBD_CMD_READ, NBD_CMD_FLAG_DF, 5, 1024 * KiB, 128 * KiB);
    expect_chunk(&c, 5, NBD_REPLY_TYPE_OFFSET_HOLE, NBD_REPLY_FLAG_DONE, 1024 * KiB,
                 128 * KiB, NULL);
    /* DF over data and holes, and a read below the threshold: one data chunk. */
    cl_request(&c, NBD_CMD_READ, NBD_CMD_FLAG_DF, 6, 32 * KiB, 64 * KiB);
    g_autofree uint8_t *want = g_malloc0(64 * KiB);
    memcpy(want + 32 * KiB, w, 32 * KiB);
    expect_chunk(&c, 6, NBD_REPLY_TYPE_OFFSET_DATA, NBD_REPLY_FLAG_DONE, 32 * KiB, 64 * KiB,
                 want);
    cl_request(&c, NBD_CMD_READ, 0, 7, 0, 60 * KiB);
    expect_chunk(&c, 7, NBD_REPLY_TYPE_OFFSET_DATA, NBD_REPLY_FLAG_DONE, 0, 60 * KiB, zero);
    /* All data: one chunk. */
    cl_request(&c, NBD_CMD_READ, 0, 8, 64 * KiB, 64 * KiB);
    expect_chunk(&c, 8, NBD_REPLY_TYPE_OFFSET_DATA, NBD_REPLY_FLAG_DONE, 64 * KiB, 64 * KiB, w);
    /* Data the connection remembers that becomes zeroes (maybe a hole) reads as zeroes. */
    cl_request(&c, NBD_CMD_WRITE_ZEROES, 0, 81, 64 * KiB, 64 * KiB);
    g_assert_cmpuint(cl_reply(&c, 81), ==, 0);
    cl_request(&c, NBD_CMD_READ, 0, 82, 64 * KiB, 64 * KiB);
    g_assert_cmpuint(cl_read_reply(&c, 82, rd, 64 * KiB), ==, 0);
    g_assert_cmpmem(rd, 64 * KiB, zero, 64 * KiB);
    g_assert_cmpuint(cl_write(&c, 83, 64 * KiB, w, 64 * KiB), ==, 0);
    /* A hole that fills is read as data at once (holes are never remembered). */
    g_assert_cmpuint(cl_write(&c, 9, 1024 * KiB, w, 64 * KiB), ==, 0);
    cl_request(&c, NBD_CMD_READ, 0, 10, 1024 * KiB, 64 * KiB);
    expect_chunk(&c, 10, NBD_REPLY_TYPE_OFFSET_DATA, NBD_REPLY_FLAG_DONE, 1024 * KiB, 64 * KiB,
                 w);
    /* More runs than chunks allowed: the tail is one data chunk; contents exact. */
    for (int i = 0; i < 20; i++) {
        g_assert_cmpuint(cl_write(&c, 11, 2048 * KiB + i * 8 * KiB, w, 4 * KiB), ==, 0);
    }
    cl_request(&c, NBD_CMD_READ, 0, 12, 2048 * KiB, 160 * KiB);
    g_assert_cmpuint(cl_read_reply(&c, 12, rd, 160 * KiB), ==, 0);
    for (int i = 0; i < 160; i += 8) {
        g_assert_cmpmem(rd + i * KiB, 4 * KiB, w, 4 * KiB);
        g_assert_cmpmem(rd + (i + 4) * KiB, 4 * KiB, zero, 4 * KiB);
    }
    cl_close(&c);

    /* Without structured replies: the same range as plain data. */
    c = cl_go("disk", false, false);
    cl_request(&c, NBD_CMD_READ, 0, 13, 0, 256 * KiB);
    g_assert_cmpuint(cl_read_reply(&c, 13, rd, 256 * KiB), ==, 0);
    g_assert_cmpmem(rd, 64 * KiB, zero, 64 * KiB);
    g_assert_cmpmem(rd + 64 * KiB, 64 * KiB, w, 64 * KiB);
    g_assert_cmpmem(rd + 128 * KiB, 64 * KiB, zero, 64 * KiB);
    g_assert_cmpmem(rd + 192 * KiB, 4 * KiB, w, 4 * KiB);
    g_assert_cmpmem(rd + 196 * KiB, 60 * KiB, zero, 60 * KiB);
    cl_close(&c);
    teardown();
}

/* Pages of [off, off+len) of path that are in the page cache, or -1 if unknown. */
static int resident_pages(const char *path, off_t off, size_t len)
{
    int fd = open(path, O_RDONLY);
    g_assert_cmpint(fd, >=, 0);
    void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, off);
    close(fd);
    g_assert_true(p != MAP_FAILED);
    size_t pages = len / 4096;
    g_autofree unsigned char *vec = g_malloc(pages);
    int n = -1;
    if (mincore(p, len, vec) == 0) {
        n = 0;
        for (size_t i = 0; i < pages; i++) {
            n += vec[i] & 1;
        }
    }
    munmap(p, len);
    return n;
}

/* Drops the file's clean pages from the page cache. */
static void evict(const char *path)
{
    int fd = open(path, O_RDONLY);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(fdatasync(fd), ==, 0);
    g_assert_cmpint(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), ==, 0);
    close(fd);
}

/*
 * CACHE reads the range through the node (for a buffered file, into the
 * page cache); it is checked like READ and its read errors are its reply.
 */
static void test_cache(void)
{
    setup();
    Client c = cl_go("disk", true, false);
    g_autofree uint8_t *w = g_malloc(1536 * KiB);
    fill(w, 1536 * KiB, 5);
    g_assert_cmpuint(cl_write(&c, 1, 512 * KiB, w, 1536 * KiB), ==, 0);
    cl_request(&c, NBD_CMD_FLUSH, 0, 2, 0, 0);
    g_assert_cmpuint(cl_reply(&c, 2), ==, 0);

    g_autofree char *path = g_build_filename(scratch_dir, "disk.img", NULL);
    evict(path);
    if (resident_pages(path, 512 * KiB, 1536 * KiB) != 0) {
        g_test_message("the page cache kept the pages: residency not checked");
    } else {
        /* 1.5 MiB: more than one step of the prefetch. */
        cl_request(&c, NBD_CMD_CACHE, 0, 3, 512 * KiB, 1536 * KiB);
        g_assert_cmpuint(cl_reply(&c, 3), ==, 0);
        g_assert_cmpint(resident_pages(path, 512 * KiB, 1536 * KiB), ==, 1536 / 4);
    }
    /* Zero length, unaligned, on a read-only export: fine. */
    cl_request(&c, NBD_CMD_CACHE, 0, 4, 4096, 0);
    g_assert_cmpuint(cl_reply(&c, 4), ==, 0);
    cl_request(&c, NBD_CMD_CACHE, NBD_CMD_FLAG_FUA, 5, 1001, 3001);
    g_assert_cmpuint(cl_reply(&c, 5), ==, 0);
    /* Checked like READ. */
    cl_request(&c, NBD_CMD_CACHE, 0, 6, DISK_SIZE - 512, 1024);
    g_assert_cmpuint(cl_reply(&c, 6), ==, NBD_EINVAL);
    cl_request(&c, NBD_CMD_CACHE, 0, 7, UINT64_MAX - 511, 1024);
    g_assert_cmpuint(cl_reply(&c, 7), ==, NBD_EINVAL);
    cl_request(&c, NBD_CMD_CACHE, NBD_CMD_FLAG_DF, 8, 0, 4096);
    g_assert_cmpuint(cl_reply(&c, 8), ==, NBD_EINVAL);
    cl_close(&c);
    c = cl_go("ro", false, false);
    cl_request(&c, NBD_CMD_CACHE, 0, 9, 0, 65536);
    g_assert_cmpuint(cl_reply(&c, 9), ==, 0);
    cl_close(&c);
    teardown();

    /* A read error: EIO, also when it hits a later step; the connection goes on. */
    BlockDriverState *bs = bdrv_open_string(
        "{\"driver\": \"blkdebug\", \"node-name\": \"bad\","
        " \"image\": {\"driver\": \"null-co\", \"size\": 67108864},"
        " \"inject-error\": [{\"iotype\": \"read\", \"errno\": 5, \"sector\": 4096}]}",
        &error_abort);
    add_export("e-bad", "bad", NULL, false, NULL);
    c = cl_go("bad", true, false);
    cl_request(&c, NBD_CMD_CACHE, 0, 10, 0, 1024 * KiB);
    g_assert_cmpuint(cl_reply(&c, 10), ==, 0);
    cl_request(&c, NBD_CMD_CACHE, 0, 11, 0, 4 * 1024 * KiB);
    g_assert_cmpuint(cl_reply(&c, 11), ==, NBD_EIO);
    cl_request(&c, NBD_CMD_CACHE, 0, 12, 4 * 1024 * KiB, 1024 * KiB);
    g_assert_cmpuint(cl_reply(&c, 12), ==, 0);
    cl_close(&c);
    block_export_del_all();
    bdrv_unref(bs);
}

/* Every request the server refuses, with the connection still usable after. */
static void validation_errors(bool structured)
{
    setup();
    Client c = cl_go("disk", structured, false);
    uint8_t buf[4096] = { 0 };
    cl_request(&c, 99, 0, 1, 0, 0);                                  /* unknown command */
    g_assert_cmpuint(cl_reply(&c, 1), ==, NBD_EINVAL);
    cl_request(&c, NBD_CMD_READ, 0, 2, DISK_SIZE - 512, 1024);       /* beyond the end */
    g_assert_cmpuint(cl_read_reply(&c, 2, buf, 1024), ==, NBD_EINVAL);
    cl_request(&c, NBD_CMD_READ, 0, 3, UINT64_MAX - 100, 4096);      /* overflow */
    g_assert_cmpuint(cl_read_reply(&c, 3, buf, 4096), ==, NBD_EINVAL);
    cl_request(&c, NBD_CMD_READ, 1u << 9, 4, 0, 512);                /* unknown flag */
    g_assert_cmpuint(cl_read_reply(&c, 4, buf, 512), ==, NBD_EINVAL);
    cl_request(&c, NBD_CMD_READ, NBD_CMD_FLAG_REQ_ONE, 5, 0, 512);   /* flag of another command */
    g_assert_cmpuint(cl_read_reply(&c, 5, buf, 512), ==, NBD_EINVAL);
    cl_request(&c, NBD_CMD_READ, 0, 6, 0, 64 * 1024 * 1024);         /* oversized read */
    g_assert_cmpuint(cl_read_reply(&c, 6, buf, 0), ==, NBD_EINVAL);
    /* A write beyond the end: its payload is consumed, ENOSPC. */
    cl_request(&c, NBD_CMD_WRITE, 0, 7, DISK_SIZE - 1024, 4096);
    cl_send(c.fd, buf, 4096);
    g_assert_cmpuint(cl_reply(&c, 7), ==, NBD_ENOSPC);
    cl_request(&c, NBD_CMD_WRITE, NBD_CMD_FLAG_DF, 8, 0, 512);       /* bad flag on a write */
    cl_send(c.fd, buf, 512);
    g_assert_cmpuint(cl_reply(&c, 8), ==, NBD_EINVAL);
    cl_request(&c, NBD_CMD_FLUSH, 0, 9, 1, 0);                        /* flush with an offset */
    g_assert_cmpuint(cl_reply(&c, 9), ==, NBD_EINVAL);
    cl_request(&c, NBD_CMD_TRIM, 0, 10, DISK_SIZE, 1);
    g_assert_cmpuint(cl_reply(&c, 10), ==, NBD_EINVAL);
    if (!structured) {
        cl_request(&c, NBD_CMD_READ, NBD_CMD_FLAG_DF, 11, 0, 512);   /* DF needs structured */
        g_assert_cmpuint(cl_read_reply(&c, 11, buf, 512), ==, NBD_EINVAL);
    }
    /* Still works. */
    cl_request(&c, NBD_CMD_READ, 0, 12, 0, 4096);
    g_assert_cmpuint(cl_read_reply(&c, 12, buf, 4096), ==, 0);
    cl_close(&c);

    /* Read-only export: writes, trims and zeroes get EPERM, payload skipped. */
    c = cl_go("ro", structured, false);
    g_assert_true(c.flags & NBD_FLAG_READ_ONLY);
    cl_request(&c, NBD_CMD_WRITE, 0, 20, 0, 4096);
    cl_send(c.fd, buf, 4096);
    g_assert_cmpuint(cl_reply(&c, 20), ==, NBD_EPERM);
    cl_request(&c, NBD_CMD_TRIM, 0, 21, 0, 4096);
    g_assert_cmpuint(cl_reply(&c, 21), ==, NBD_EPERM);
    cl_request(&c, NBD_CMD_WRITE_ZEROES, 0, 22, 0, 4096);
    g_assert_cmpuint(cl_reply(&c, 22), ==, NBD_EPERM);
    cl_request(&c, NBD_CMD_READ, 0, 23, 0, 4096);
    g_assert_cmpuint(cl_read_reply(&c, 23, buf, 4096), ==, 0);
    cl_close(&c);
    teardown();
}

static void test_errors_simple(void)
{
    validation_errors(false);
}

static void test_errors_structured(void)
{
    validation_errors(true);
}

static void test_fatal_errors(void)
{
    setup();
    /* Bad request magic: hard disconnect. */
    Client c = cl_go("disk", false, false);
    uint8_t h[28] = { 0 };
    cl_send(c.fd, h, 28);
    cl_expect_eof(c.fd);
    close(c.fd);
    /* Oversized write: the payload cannot be skipped safely. */
    c = cl_go("disk", false, false);
    cl_request(&c, NBD_CMD_WRITE, 0, 1, 0, 64 * 1024 * 1024);
    cl_expect_eof(c.fd);
    close(c.fd);
    /* Truncated header, then EOF. */
    c = cl_go("disk", false, false);
    cl_send(c.fd, "\x25\x60\x95\x13\0\0", 6);
    shutdown(c.fd, SHUT_WR);
    cl_expect_eof(c.fd);
    close(c.fd);
    /* Truncated write payload, then EOF. */
    c = cl_go("disk", false, false);
    cl_request(&c, NBD_CMD_WRITE, 0, 2, 0, 4096);
    cl_send(c.fd, h, 28);
    shutdown(c.fd, SHUT_WR);
    cl_expect_eof(c.fd);
    close(c.fd);
    wait_no_conns();
    teardown();
}

static size_t put_request(uint8_t *h, uint16_t type, uint64_t cookie, uint64_t off, uint32_t len)
{
    wr32(h, NBD_REQUEST_MAGIC);
    wr16(h + 4, 0);
    wr16(h + 6, type);
    wr64(h + 8, cookie);
    wr64(h + 16, off);
    wr32(h + 24, len);
    return 28;
}

/* ---- concurrency ---------------------------------------------------------------------- */

/*
 * Requests complete out of order: reads of a blkdebug node over a slow
 * null-co, where the one read that fails is answered straight away.
 */
static void test_out_of_order(void)
{
    BlockDriverState *bs = bdrv_open_string(
        "{\"driver\": \"blkdebug\", \"node-name\": \"slow\","
        " \"image\": {\"driver\": \"null-co\", \"read-zeroes\": true, \"latency-ns\": 50000000},"
        " \"inject-error\": [{\"iotype\": \"read\", \"errno\": 5, \"sector\": 2048}]}",
        &error_abort);
    add_export("e-slow", "slow", NULL, true, NULL);
    Client c = cl_go("slow", true, false);
    enum { N = 64 };
    /*
     * One send, so the server parses and submits all of them in one go: the
     * failure completes from a BH, which runs before the latency timer of
     * any of the others, whatever the scheduling.
     */
    uint8_t reqs[N * 28];
    for (int i = 0; i < N; i++) {
        uint64_t off = i == N - 1 ? 1024 * 1024 : (uint64_t)i * 4096;
        put_request(reqs + 28 * i, NBD_CMD_READ, 1000 + i, off, 4096);
    }
    cl_send(c.fd, reqs, sizeof(reqs));
    /* The failing one (last sent) is answered first. */
    Chunk ch;
    uint32_t err;
    cl_any_reply(&c, &ch, &err);
    g_assert_cmphex(ch.cookie, ==, 1000 + N - 1);
    g_assert_cmpuint(err, ==, NBD_EIO);
    g_free(ch.payload);
    bool seen[N] = { false };
    for (int i = 0; i < N - 1; i++) {
        cl_any_reply(&c, &ch, &err);
        g_assert_cmpuint(err, ==, 0);
        g_assert_cmpuint(ch.type, ==, NBD_REPLY_TYPE_OFFSET_DATA);
        g_assert_cmpuint(ch.len, ==, 8 + 4096);
        g_assert_cmpuint(ch.cookie, >=, 1000);
        g_assert_cmpuint(ch.cookie, <, 1000 + N - 1);
        g_assert_false(seen[ch.cookie - 1000]);
        seen[ch.cookie - 1000] = true;
        g_assert_cmpuint(rd64(ch.payload), ==, (ch.cookie - 1000) * 4096);
        g_free(ch.payload);
    }
    cl_close(&c);
    block_export_del_all();
    bdrv_unref(bs);
}

/*
 * Sends out while receiving exactly inlen bytes into in, as a real client
 * does (reading replies while it still sends requests).
 */
static void cl_exchange(int fd, const uint8_t *out, size_t outlen, uint8_t *in, size_t inlen)
{
    for (int i = 0; outlen || inlen; i++) {
        g_assert_cmpint(i, <, PUMP_LIMIT * 10);
        bool progress = false;
        if (outlen) {
            ssize_t n = send(fd, out, outlen, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) {
                out += n;
                outlen -= n;
                progress = true;
            }
        }
        if (inlen) {
            ssize_t n = recv(fd, in, inlen, MSG_DONTWAIT);
            g_assert_cmpint(n, !=, 0);
            if (n > 0) {
                in += n;
                inlen -= n;
                progress = true;
            }
        }
        if (!progress) {
            pump(fd, POLLIN | (outlen ? POLLOUT : 0));
        } else {
            aio_poll(aio_context_main(), false);
        }
    }
}

/* More requests than the in-flight limit, pipelined as one stream. */
static void test_many_in_flight(void)
{
    setup();
    Client c = cl_go("disk", false, false);
    enum { N = 600, BS = 4096 };
    g_autofree uint8_t *out = g_malloc((size_t)N * (28 + BS));
    g_autofree uint8_t *in = g_malloc((size_t)N * (16 + BS));
    size_t o = 0;
    for (int i = 0; i < N; i++) {
        o += put_request(out + o, NBD_CMD_WRITE, i, (uint64_t)i * BS, BS);
        fill(out + o, BS, i);
        o += BS;
    }
    cl_exchange(c.fd, out, o, in, (size_t)N * 16);
    bool seen[N] = { false };
    for (int i = 0; i < N; i++) {
        const uint8_t *r = in + 16 * i;
        g_assert_cmphex(rd32(r), ==, NBD_SIMPLE_REPLY_MAGIC);
        g_assert_cmpuint(rd32(r + 4), ==, 0);
        uint64_t ck = rd64(r + 8);
        g_assert_cmpuint(ck, <, N);
        g_assert_false(seen[ck]);
        seen[ck] = true;
    }
    o = 0;
    for (int i = 0; i < N; i++) {
        o += put_request(out + o, NBD_CMD_READ, i, (uint64_t)i * BS, BS);
    }
    cl_exchange(c.fd, out, o, in, (size_t)N * (16 + BS));
    g_autofree uint8_t *w = g_malloc(BS);
    for (int i = 0; i < N; i++) {
        const uint8_t *r = in + (size_t)(16 + BS) * i;
        g_assert_cmphex(rd32(r), ==, NBD_SIMPLE_REPLY_MAGIC);
        g_assert_cmpuint(rd32(r + 4), ==, 0);
        uint64_t ck = rd64(r + 8);
        g_assert_cmpuint(ck, <, N);
        fill(w, BS, ck);
        g_assert_cmpmem(r + 16, BS, w, BS);
    }
    cl_close(&c);
    teardown();
}

/* The client vanishes with writes in flight: the server drains and frees the connection. */
static void test_disconnect_mid_write(void)
{
    BlockDriverState *bs = bdrv_open_string(
        "driver=null-co,node-name=slow,latency-ns=20000000", &error_abort);
    add_export("e-slow", "slow", NULL, true, NULL);
    Client c = cl_go("slow", true, false);
    uint8_t buf[4096] = { 0 };
    for (int i = 0; i < 16; i++) {
        cl_request(&c, NBD_CMD_WRITE, 0, i, (uint64_t)i * 4096, 4096);
        cl_send(c.fd, buf, 4096);
    }
    cl_request(&c, NBD_CMD_WRITE, 0, 99, 0, 4096);
    cl_send(c.fd, buf, 100);                  /* half a payload */
    close(c.fd);
    wait_no_conns();
    /* Hard export deletion with a client attached. */
    c = cl_go("slow", true, false);
    for (int i = 0; i < 16; i++) {
        cl_request(&c, NBD_CMD_READ, 0, i, (uint64_t)i * 4096, 4096);
    }
    Error *err = NULL;
    g_assert_cmpint(block_export_del("e-slow", false, &err), ==, -EBUSY);
    g_assert_nonnull(err);
    error_free(err);
    g_assert_cmpint(block_export_del("e-slow", true, &error_abort), ==, 0);
    g_assert_cmpuint(nbd_server_connection_count(), ==, 0);
    g_assert_null(block_export_find("e-slow"));
    close(c.fd);
    bdrv_unref(bs);
}

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    g_assert_nonnull(d);
    while (readdir(d)) {
        n++;
    }
    closedir(d);
    return n;
}

/* 1000 connect/disconnect cycles through a listening UNIX socket: no fd growth. */
static void test_connect_cycles(void)
{
    setup();
    g_autofree char *path = g_build_filename(scratch_dir, "nbd.sock", NULL);
    NbdServerAddr addr = { .type = NBD_ADDR_UNIX, .path = path };
    g_assert_true(nbd_server_start(&addr, 0, &error_abort));
    g_assert_true(nbd_server_running());
    /* One warm-up cycle so lazily created state does not count. */
    int before = -1;
    for (int i = 0; i <= 1000; i++) {
        if (i == 1) {
            before = count_fds();
        }
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        strcpy(sa.sun_path, path);
        g_assert_cmpint(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
        uint8_t g[18];
        cl_recv(fd, g, 18);
        g_assert_cmphex(rd64(g), ==, NBD_INIT_MAGIC);
        switch (i % 3) {
        case 0:                               /* hang up at once */
            break;
        case 1: {                             /* GO, one read, DISC */
            uint8_t f[4], d[64];
            wr32(f, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
            cl_send(fd, f, 4);
            cl_opt(fd, NBD_OPT_GO, d, info_data(d, "disk", NULL, 0));
            OptReply r;
            do {
                cl_opt_reply(fd, &r);
            } while (r.type == NBD_REP_INFO);
            g_assert_cmphex(r.type, ==, NBD_REP_ACK);
            Client c = { .fd = fd };
            uint8_t buf[512];
            cl_request(&c, NBD_CMD_READ, 0, 1, 0, 512);
            g_assert_cmpuint(cl_read_reply(&c, 1, buf, 512), ==, 0);
            cl_request(&c, NBD_CMD_DISC, 0, 0, 0, 0);
            cl_expect_eof(fd);
            break;
        }
        case 2: {                             /* ABORT */
            uint8_t f[4];
            wr32(f, NBD_FLAG_C_FIXED_NEWSTYLE);
            cl_send(fd, f, 4);
            cl_opt_expect(fd, NBD_OPT_ABORT, NULL, 0, NBD_REP_ACK);
            cl_expect_eof(fd);
            break;
        }
        }
        close(fd);
        wait_no_conns();
    }
    g_assert_cmpint(count_fds(), ==, before);

    /* max-connections: the third client is turned away. */
    nbd_server_stop();
    g_assert_false(nbd_server_running());
    g_assert_true(nbd_server_start(&addr, 2, &error_abort));
    int fds[3];
    for (int i = 0; i < 3; i++) {
        fds[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        strcpy(sa.sun_path, path);
        g_assert_cmpint(connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
        uint8_t g[18];
        if (i < 2) {
            cl_recv(fds[i], g, 18);
        } else {
            g_assert_false(cl_recv_or_eof(fds[i], g, 18));
        }
    }
    g_assert_cmpuint(nbd_server_connection_count(), ==, 2);
    /* Stopping the server disconnects the two in the handshake. */
    nbd_server_stop();
    g_assert_cmpuint(nbd_server_connection_count(), ==, 0);
    for (int i = 0; i < 3; i++) {
        close(fds[i]);
    }
    g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
    teardown();
}

/* TCP on the loopback with an ephemeral port. */
static void test_inet(void)
{
    setup();
    NbdServerAddr addr = { .type = NBD_ADDR_INET, .host = "127.0.0.1", .port = "0" };
    g_assert_true(nbd_server_start(&addr, 0, &error_abort));
    Error *err = NULL;
    g_assert_false(nbd_server_start(&addr, 0, &err));
    g_assert_cmpstr(error_get_pretty(err), ==, "NBD server already running");
    g_clear_error(&err);
    int port = nbd_server_local_port();
    g_assert_cmpint(port, >, 0);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    g_assert_cmpint(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
    uint8_t g[18];
    cl_recv(fd, g, 18);
    g_assert_cmphex(rd64(g), ==, NBD_INIT_MAGIC);
    close(fd);
    nbd_server_stop();
    g_assert_cmpuint(nbd_server_connection_count(), ==, 0);
    NbdServerAddr bad = { .type = NBD_ADDR_UNIX, .path = "/nonexistent-dir/x.sock" };
    g_assert_false(nbd_server_start(&bad, 0, &err));
    g_assert_true(g_str_has_prefix(error_get_pretty(err), "Cannot listen on '/nonexistent-dir/x.sock'"));
    g_clear_error(&err);
    g_assert_false(nbd_server_running());
    teardown();
}

/* nbd_server_stop() with one client in transmission (requests in flight) and one handshaking. */
static void test_stop_with_clients(void)
{
    BlockDriverState *bs = bdrv_open_string(
        "driver=null-co,node-name=slow,latency-ns=20000000", &error_abort);
    add_export("e-slow", "slow", NULL, true, NULL);
    Client c = cl_go("slow", true, false);
    for (int i = 0; i < 8; i++) {
        cl_request(&c, NBD_CMD_READ, 0, i, (uint64_t)i * 4096, 4096);
    }
    int hs = cl_connect_raw();
    aio_poll(aio_context_main(), false);
    nbd_server_stop();
    g_assert_cmpuint(nbd_server_connection_count(), ==, 0);
    /* Whatever the client got, the connection ends. */
    cl_expect_eof(c.fd);
    cl_expect_eof(hs);
    close(c.fd);
    close(hs);
    block_export_del_all();
    bdrv_unref(bs);
}

/* A client that never finishes its handshake is dropped at the deadline. */
static void test_handshake_timeout(void)
{
    setup();
    nbd_server_set_handshake_timeout(50 * 1000 * 1000);
    int idle = cl_connect_raw();                         /* sends nothing */
    Client c = cl_go("disk", false, false);              /* in transmission: unaffected */
    cl_expect_eof(idle);
    close(idle);
    wait_conns(1);
    uint8_t buf[512];
    cl_request(&c, NBD_CMD_READ, 0, 1, 0, 512);
    g_assert_cmpuint(cl_read_reply(&c, 1, buf, 512), ==, 0);
    cl_close(&c);
    nbd_server_set_handshake_timeout(10ll * 1000 * 1000 * 1000);
    teardown();
}

/* An export in an IOThread: the handshake in the main thread, I/O in the IOThread. */
static void test_iothread(void)
{
    IOThread *iot = iothread_new("nbd-iot", &error_abort);
    BlockDriverState *bs = bdrv_open_string("driver=null-co,node-name=n0,read-zeroes=on",
                                            &error_abort);
    BlockExportOptions o = { .id = "e0", .node_name = "n0", .writable = true,
                             .ctx = iothread_get_aio_context(iot) };
    g_assert_nonnull(nbd_export_add(&o, &error_abort));
    g_assert_true(bdrv_get_aio_context(bs) == iothread_get_aio_context(iot));
    /* A second export of the node cannot pull it into yet another thread. */
    BlockExportOptions o2 = { .id = "e1", .node_name = "n0", .name = "other",
                              .ctx = aio_context_main() };
    Error *err = NULL;
    g_assert_null(nbd_export_add(&o2, &err));
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "Node 'n0' is already exported by 'e0' in another thread");
    g_clear_error(&err);
    Client c1 = cl_go("n0", true, false), c2 = cl_go("n0", false, false);
    uint8_t buf[8192];
    for (int i = 0; i < 50; i++) {
        cl_request(&c1, NBD_CMD_WRITE, 0, i, 0, 8192);
        cl_send(c1.fd, buf, 8192);
        cl_request(&c2, NBD_CMD_READ, 0, i, 4096, 8192);
    }
    for (int i = 0; i < 50; i++) {
        g_assert_cmpuint(cl_reply(&c1, i), ==, 0);
        g_assert_cmpuint(cl_read_reply(&c2, i, buf, 8192), ==, 0);
    }
    /* A client with requests in flight when the export goes away. */
    for (int i = 0; i < 10; i++) {
        cl_request(&c1, NBD_CMD_READ, 0, i, 0, 8192);
    }
    cl_close(&c2);
    block_export_del_all();
    g_assert_cmpuint(nbd_server_connection_count(), ==, 0);
    close(c1.fd);
    g_assert_cmpint(bdrv_set_aio_context(bs, aio_context_main(), &error_abort), ==, 0);
    bdrv_unref(bs);
    iothread_destroy(iot);
}

static void test_export_api(void)
{
    BlockDriverState *bs = bdrv_open_string("driver=null-co,node-name=n1", &error_abort);
    Error *err = NULL;
    BlockExportOptions o = { .id = "x", .node_name = "nosuch" };
    g_assert_null(nbd_export_add(&o, &err));
    g_assert_cmpstr(error_get_pretty(err), ==, "Cannot find node 'nosuch'");
    g_clear_error(&err);
    o.node_name = "n1";
    BlockExport *e = nbd_export_add(&o, &error_abort);
    g_assert_cmpstr(block_export_id(e), ==, "x");
    g_assert_cmpstr(block_export_node_name(e), ==, "n1");
    g_assert_cmpstr(block_export_type(e), ==, "nbd");
    g_assert_false(block_export_shutting_down(e));
    g_assert_true(block_export_find("x") == e);
    g_assert_true(block_export_next(NULL) == e);
    g_assert_null(block_export_next(e));
    g_assert_null(nbd_export_add(&o, &err));
    g_assert_cmpstr(error_get_pretty(err), ==, "Block export id 'x' is already in use");
    g_clear_error(&err);
    o.id = "y";
    g_assert_null(nbd_export_add(&o, &err));
    g_assert_cmpstr(error_get_pretty(err), ==, "An NBD export named 'n1' already exists");
    g_clear_error(&err);
    g_assert_cmpint(block_export_del("nosuch", false, &err), ==, -ENOENT);
    g_clear_error(&err);
    g_assert_cmpint(block_export_del("x", false, &error_abort), ==, 0);
    g_assert_null(block_export_find("x"));
    bdrv_unref(bs);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    scratch_dir = g_strdup("/var/tmp/ringblk-test-nbd-XXXXXX");
    if (!g_mkdtemp(scratch_dir)) {
        g_printerr("cannot create a scratch directory\n");
        return 1;
    }
    g_test_add_func("/nbd/export/api", test_export_api);
    g_test_add_func("/nbd/handshake/export-name", test_export_name);
    g_test_add_func("/nbd/handshake/bad-client", test_bad_client_flags);
    g_test_add_func("/nbd/handshake/go-info", test_go_info);
    g_test_add_func("/nbd/handshake/list-abort-unsup", test_list_abort_unsup);
    g_test_add_func("/nbd/handshake/meta-context", test_meta_context);
    g_test_add_func("/nbd/cmd/rw-simple", test_rw_simple);
    g_test_add_func("/nbd/cmd/rw-structured", test_rw_structured);
    g_test_add_func("/nbd/cmd/trim-zeroes-cache", test_trim_zeroes_cache);
    g_test_add_func("/nbd/cmd/block-status", test_block_status);
    g_test_add_func("/nbd/cmd/read-sparse", test_read_sparse);
    g_test_add_func("/nbd/cmd/cache", test_cache);
    g_test_add_func("/nbd/errors/simple", test_errors_simple);
    g_test_add_func("/nbd/errors/structured", test_errors_structured);
    g_test_add_func("/nbd/errors/fatal", test_fatal_errors);
    g_test_add_func("/nbd/concurrency/out-of-order", test_out_of_order);
    g_test_add_func("/nbd/concurrency/many-in-flight", test_many_in_flight);
    g_test_add_func("/nbd/concurrency/disconnect-mid-write", test_disconnect_mid_write);
    g_test_add_func("/nbd/server/connect-cycles", test_connect_cycles);
    g_test_add_func("/nbd/server/inet", test_inet);
    g_test_add_func("/nbd/server/stop-with-clients", test_stop_with_clients);
    g_test_add_func("/nbd/handshake/timeout", test_handshake_timeout);
    g_test_add_func("/nbd/iothread/export", test_iothread);
    int ret = g_test_run();
    g_autofree char *img = g_build_filename(scratch_dir, "disk.img", NULL);
    g_unlink(img);
    g_rmdir(scratch_dir);
    g_free(scratch_dir);
    return ret;
}
