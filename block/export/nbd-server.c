/*
 * NBD server: fixed newstyle handshake and the transmission phase.
 *
 * Threads. The listener and every connection's handshake run in the main
 * AioContext. Once the client picks an export (NBD_OPT_GO or
 * NBD_OPT_EXPORT_NAME) the connection is bound to it and handed to the
 * export's AioContext with a one-shot BH; from then on only that thread
 * touches the connection, except for the server's list links and the
 * reference count, which belong to the main thread (links) or are atomic
 * (refcnt). A connection that is done hands itself back to the main thread
 * with another one-shot BH, which unlinks it and unbinds the export.
 *
 * Transmission. The socket is non-blocking; its handlers are "external" so
 * that a drain in the export's context does not start new client I/O.
 * The read handler pulls as much as the socket has into a receive buffer
 * and parses every complete request in it. A request is checked field by
 * field, gets a buffer (from the connection's free list of requests, each
 * keeping its bdrv_blockalign() buffer), and goes to the block layer
 * straight away; parsing continues with the next request. A burst of
 * requests parsed in one go is submitted under bdrv_io_plug(), so the
 * engine sees one batch. At most NBD_MAX_IN_FLIGHT requests live per
 * connection; when full, the read handler is removed until one finishes.
 *
 * With structured replies, a large read over holes is answered with
 * OFFSET_HOLE/OFFSET_DATA chunks planned from block status before the read
 * is submitted (req_plan_sparse_read).
 *
 * Replies are queued in order of completion and written by a BH with one
 * sendmsg() of header + data iovecs for as many replies as are queued (no
 * copy of the data). A short write leaves the rest for the write handler.
 * Every request gets exactly one reply (or none at all once the connection
 * is being torn down); DISC and a clean EOF let in-flight requests finish
 * and their replies go out before the socket is closed.
 *
 * See docs/devel/storage-daemon.md, "NBD server".
 */
#include "export-internal.h"
#include "block/nbd.h"
#include "util/unix-socket.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NBD_MAX_IN_FLIGHT     128
#define NBD_RBUF_SIZE         (256 * 1024)   /* a depth-32 burst of 4 KiB writes in one recv() */
#define NBD_KEEP_BUF_MAX      (256 * 1024)   /* larger buffers are freed after use */
#define NBD_OPT_DATA_MAX      (64 * 1024)    /* option data we buffer and parse */
#define NBD_OPT_SKIP_MAX      (16 * 1024 * 1024) /* beyond this, disconnect */
#define NBD_MAX_OPTIONS       4096           /* options per handshake */
#define NBD_MAX_LISTEN_FDS    4
#define NBD_BS_MAX_EXTENTS    1024           /* block status descriptors per reply */
#define NBD_SEND_IOV_MAX      64
#define NBD_SPARSE_READ_MIN   (64 * 1024)    /* smaller reads are sent as data */
#define NBD_READ_MAX_CHUNKS   16             /* content chunks of one sparse read */
#define NBD_CHUNK_HDR_MAX     32             /* OFFSET_HOLE: 20 + offset + size */
#define NBD_CACHE_STEP        (1024 * 1024)  /* CACHE reads this much at a time */
#define NBD_META_ID_BASE_ALLOCATION 1

typedef struct NbdConn NbdConn;
typedef struct NbdReq NbdReq;

struct NbdReq {
    NbdConn *conn;
    NbdReq *next;               /* free list or reply queue */
    uint64_t cookie;
    uint64_t offset;
    uint32_t length;
    uint16_t type;
    uint16_t flags;
    uint8_t *buf;               /* bdrv_blockalign() buffer, buf_cap bytes */
    size_t buf_cap;
    uint32_t payload_got;       /* write payload received so far */
    uint32_t cache_done;        /* CACHE: bytes read so far */
    bool flush_after;           /* TRIM with FUA: flush once the discard is done */
    IOVector qiov;
    /* The reply: outv[0..out_niov), usually out[] (hdr, then optional data). */
    uint8_t hdr[48];
    struct iovec out[2];
    struct iovec *outv;
    int out_niov;
    size_t out_total;
    /*
     * A read whose range has holes is answered with OFFSET_DATA/OFFSET_HOLE
     * chunks (nr_chunks > 0) built before the read is submitted; their headers
     * and iovecs are allocated on the request's first sparse read and kept.
     */
    unsigned nr_chunks;
    uint8_t *chunk_hdr;         /* NBD_READ_MAX_CHUNKS * NBD_CHUNK_HDR_MAX bytes */
    struct iovec *chunk_iov;    /* 2 * NBD_READ_MAX_CHUNKS */
};

typedef enum {
    HS_CLIENT_FLAGS,            /* 4 bytes of client flags */
    HS_OPT_HEADER,              /* 16-byte option header */
    HS_OPT_DATA,                /* option data into hs_buf */
    HS_OPT_SKIP,                /* discarding oversized option data */
} NbdHsState;

typedef enum {
    CONN_HANDSHAKE,
    CONN_HANDOFF,               /* bound, BH into the export's context pending */
    CONN_TRANSMISSION,
    CONN_CLOSING,
    CONN_DONE,
} NbdConnPhase;

struct NbdConn {
    NbdConn *prev, *next;       /* server list: main thread */
    int refcnt;                 /* atomic: list + pending stop BHs */
    int fd;
    AioContext *ctx;
    BlockExport *exp;           /* bound export */
    BlockDriverState *bs;
    NbdConnPhase phase;
    bool structured;
    bool no_zeroes;
    bool base_alloc;            /* base:allocation selected for meta_exp */
    BlockExport *meta_exp;
    bool stop_requested;        /* server stop / hard export deletion (connection's thread) */
    bool stop_sent;             /* main thread: a stop was requested */
    bool handed_off;            /* main thread: no longer in the handshake */

    /* Handshake (main thread). */
    NbdHsState hs;
    uint8_t hs_hdr[16];
    uint8_t *hs_buf;            /* option data */
    uint32_t hs_need, hs_have;
    uint32_t opt, opt_len;
    uint64_t hs_skip;
    unsigned nr_options;
    GByteArray *hs_out;
    size_t hs_out_pos;
    AioTimer hs_timer;          /* the handshake's deadline */
    bool hs_abort;              /* close once the output is flushed */
    bool hs_go;                 /* enter transmission once the output is flushed */

    /* Transmission (export's context). */
    uint8_t *rbuf;
    size_t rpos, rlen;          /* unparsed bytes are rbuf[rpos, rlen) */
    NbdReq *cur;                /* request whose write payload is arriving */
    uint64_t skip;              /* payload bytes to discard */
    NbdReq *free_reqs;
    unsigned nr_reqs;           /* live requests (submitted or awaiting reply) */
    unsigned nr_submitted;      /* requests inside the block layer */
    NbdReq *out_head, *out_tail;
    size_t out_off;             /* bytes of out_head already sent */
    AioBH *send_bh;
    bool reading, writing;      /* handlers registered */
    bool read_closed;           /* EOF, DISC or fatal: no more requests */
    bool drop_replies;          /* fatal: replies are discarded */
    bool plugged;
    bool send_blocked;          /* the socket refused part of the replies */
    bool read_full;             /* reading paused at NBD_MAX_IN_FLIGHT */
    /*
     * [data_from, data_until): known to hold data at the last block status
     * query. Reads inside it skip the query. Only data is remembered: a hole
     * may fill any time, but sending data is always correct.
     */
    uint64_t data_from, data_until;
};

typedef struct NbdServer {
    int listen_fds[NBD_MAX_LISTEN_FDS];
    int nr_listen;
    char *unix_path;
    unsigned max_connections;
    int64_t handshake_timeout_ns;
    unsigned nr_conns;
    NbdConn *conns;
} NbdServer;

#define NBD_HANDSHAKE_TIMEOUT_NS (10 * 1000000000ll)   /* as QEMU's handshake-max-seconds */

static NbdServer server = { .nr_listen = 0, .handshake_timeout_ns = NBD_HANDSHAKE_TIMEOUT_NS };

static void conn_read(void *opaque);
static void conn_write(void *opaque);
static void conn_send(NbdConn *c);
static void conn_close(NbdConn *c, bool drop_replies);
static void conn_maybe_finish(NbdConn *c);
static void hs_read(void *opaque);
static void hs_write(void *opaque);

/* ---- helpers ------------------------------------------------------------------------ */

static void put16(uint8_t *p, uint16_t v)
{
    v = htobe16(v);
    memcpy(p, &v, 2);
}

static void put32(uint8_t *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, 8);
}

static uint16_t get16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return be16toh(v);
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return be32toh(v);
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return be64toh(v);
}

static void conn_unref(NbdConn *c)
{
    if (__atomic_sub_fetch(&c->refcnt, 1, __ATOMIC_ACQ_REL) == 0) {
        g_free(c);
    }
}

/* ---- connection lifetime (main thread) ------------------------------------------------- */

static NbdConn *conn_new(int fd)
{
    NbdConn *c = g_new0(NbdConn, 1);
    c->refcnt = 1;
    c->fd = fd;
    c->ctx = aio_context_main();
    c->phase = CONN_HANDSHAKE;
    c->next = server.conns;
    if (server.conns) {
        server.conns->prev = c;
    }
    server.conns = c;
    server.nr_conns++;
    return c;
}

/* Main thread, after the connection finished in its context. */
static void conn_release_bh(void *opaque)
{
    NbdConn *c = opaque;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        server.conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    server.nr_conns--;
    if (c->exp) {
        c->exp->nr_clients--;
    }
    conn_unref(c);
    aio_wait_kick();
}

/* ---- handshake (main thread) ------------------------------------------------------------ */

static void hs_update_handlers(NbdConn *c)
{
    bool want_write = c->hs_out && c->hs_out_pos < c->hs_out->len;
    /* While a reply is pending the client must wait for it: read nothing. */
    aio_set_fd_handler(c->ctx, c->fd, true, want_write ? NULL : hs_read,
                       want_write ? hs_write : NULL, NULL, NULL, c);
}

static void hs_finish(NbdConn *c)
{
    aio_timer_del(&c->hs_timer);
    aio_set_fd_handler(c->ctx, c->fd, true, NULL, NULL, NULL, NULL, NULL);
    close(c->fd);
    c->fd = -1;
    g_free(c->hs_buf);
    c->hs_buf = NULL;
    if (c->hs_out) {
        g_byte_array_unref(c->hs_out);
        c->hs_out = NULL;
    }
    c->phase = CONN_DONE;
    aio_bh_schedule_oneshot(aio_context_main(), conn_release_bh, c);
}

static void hs_append(NbdConn *c, const void *data, size_t len)
{
    if (!c->hs_out) {
        c->hs_out = g_byte_array_new();
    }
    g_byte_array_append(c->hs_out, data, len);
}

static void hs_reply(NbdConn *c, uint32_t type, const void *data, uint32_t len)
{
    uint8_t h[20];
    put64(h, NBD_REP_MAGIC);
    put32(h + 8, c->opt);
    put32(h + 12, type);
    put32(h + 16, len);
    hs_append(c, h, sizeof(h));
    if (len) {
        hs_append(c, data, len);
    }
}

static void hs_reply_err(NbdConn *c, uint32_t type, const char *msg)
{
    hs_reply(c, type, msg, msg ? (uint32_t)strlen(msg) : 0);
}

static void hs_expect(NbdConn *c, NbdHsState st, uint32_t need)
{
    c->hs = st;
    c->hs_need = need;
    c->hs_have = 0;
}

/* The transmission phase starts in the export's context. */
static void conn_start_bh(void *opaque);

static void hs_bind(NbdConn *c, BlockExport *exp)
{
    c->exp = exp;
    c->bs = exp->bs;
    exp->nr_clients++;
    if (c->meta_exp != exp) {
        c->base_alloc = false;
    }
}

static bool hs_send_export_name_reply(NbdConn *c, const char *name)
{
    BlockExport *exp = block_export_find_by_name(name);
    if (!exp) {
        return false;            /* the protocol gives no way to say why */
    }
    uint8_t r[10 + NBD_EXPORT_NAME_ZEROES] = { 0 };
    put64(r, exp->size);
    put16(r + 8, exp->tx_flags);
    hs_append(c, r, c->no_zeroes ? 10 : sizeof(r));
    hs_bind(c, exp);
    c->hs_go = true;
    return true;
}

/* The export an option names, or NULL after replying with the error. */
static BlockExport *hs_find_export(NbdConn *c, const char *name, uint32_t namelen)
{
    BlockExport *exp;

    if (strlen(name) != namelen) {
        hs_reply_err(c, NBD_REP_ERR_INVALID, "export name contains NUL");
        return NULL;
    }
    exp = block_export_find_by_name(name);
    if (!exp) {
        g_autofree char *msg = g_strdup_printf("export '%s' not present", name);
        hs_reply_err(c, NBD_REP_ERR_UNKNOWN, msg);
    }
    return exp;
}

/* NBD_OPT_INFO / NBD_OPT_GO. */
static void hs_opt_info(NbdConn *c)
{
    const uint8_t *d = c->hs_buf;
    uint32_t len = c->opt_len;
    if (len < 6) {
        hs_reply_err(c, NBD_REP_ERR_INVALID, "option data too short");
        return;
    }
    uint32_t namelen = get32(d);
    if (namelen > NBD_MAX_STRING || namelen > len - 6) {
        hs_reply_err(c, NBD_REP_ERR_INVALID, "bad export name length");
        return;
    }
    uint16_t nreq = get16(d + 4 + namelen);
    if ((uint64_t)4 + namelen + 2 + 2ull * nreq != len) {
        hs_reply_err(c, NBD_REP_ERR_INVALID, "option length does not match its contents");
        return;
    }
    g_autofree char *name = g_strndup((const char *)d + 4, namelen);
    BlockExport *exp = hs_find_export(c, name, namelen);
    if (!exp) {
        return;
    }
    bool want_name = false, want_desc = false, want_bs = c->opt == NBD_OPT_INFO;
    for (unsigned i = 0; i < nreq; i++) {
        switch (get16(d + 4 + namelen + 2 + 2 * i)) {
        case NBD_INFO_NAME:
            want_name = true;
            break;
        case NBD_INFO_DESCRIPTION:
            want_desc = true;
            break;
        case NBD_INFO_BLOCK_SIZE:
            want_bs = true;
            break;
        default:
            break;               /* unknown requests are ignored */
        }
    }
    if (want_name) {
        uint8_t t[2];
        put16(t, NBD_INFO_NAME);
        g_autofree uint8_t *p = g_malloc(2 + strlen(exp->name));
        memcpy(p, t, 2);
        memcpy(p + 2, exp->name, strlen(exp->name));
        hs_reply(c, NBD_REP_INFO, p, 2 + (uint32_t)strlen(exp->name));
    }
    if (want_desc && exp->description) {
        size_t dl = strlen(exp->description);
        g_autofree uint8_t *p = g_malloc(2 + dl);
        put16(p, NBD_INFO_DESCRIPTION);
        memcpy(p + 2, exp->description, dl);
        hs_reply(c, NBD_REP_INFO, p, 2 + (uint32_t)dl);
    }
    if (want_bs) {
        uint8_t p[14];
        put16(p, NBD_INFO_BLOCK_SIZE);
        put32(p + 2, exp->min_block);
        put32(p + 6, exp->pref_block);
        put32(p + 10, exp->max_block);
        hs_reply(c, NBD_REP_INFO, p, sizeof(p));
    }
    uint8_t ie[12];
    put16(ie, NBD_INFO_EXPORT);
    put64(ie + 2, exp->size);
    put16(ie + 10, exp->tx_flags);
    hs_reply(c, NBD_REP_INFO, ie, sizeof(ie));
    hs_reply(c, NBD_REP_ACK, NULL, 0);
    if (c->opt == NBD_OPT_GO) {
        hs_bind(c, exp);
        c->hs_go = true;
    }
}

static void hs_opt_list(NbdConn *c)
{
    if (c->opt_len) {
        hs_reply_err(c, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
        return;
    }
    for (BlockExport *e = block_export_next(NULL); e; e = block_export_next(e)) {
        if (e->shutting_down) {
            continue;
        }
        size_t nl = strlen(e->name), dl = e->description ? strlen(e->description) : 0;
        g_autofree uint8_t *p = g_malloc(4 + nl + dl);
        put32(p, (uint32_t)nl);
        memcpy(p + 4, e->name, nl);
        if (dl) {
            memcpy(p + 4 + nl, e->description, dl);
        }
        hs_reply(c, NBD_REP_SERVER, p, (uint32_t)(4 + nl + dl));
    }
    hs_reply(c, NBD_REP_ACK, NULL, 0);
}

static void hs_meta_context_reply(NbdConn *c, uint32_t id)
{
    size_t nl = strlen(NBD_META_BASE_ALLOCATION);
    uint8_t p[4 + sizeof(NBD_META_BASE_ALLOCATION)];
    put32(p, id);
    memcpy(p + 4, NBD_META_BASE_ALLOCATION, nl);
    hs_reply(c, NBD_REP_META_CONTEXT, p, (uint32_t)(4 + nl));
}

/* NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT. */
static void hs_opt_meta(NbdConn *c)
{
    bool set = c->opt == NBD_OPT_SET_META_CONTEXT;
    const uint8_t *d = c->hs_buf;
    uint32_t len = c->opt_len;
    if (!c->structured) {
        hs_reply_err(c, NBD_REP_ERR_INVALID, "structured replies not negotiated");
        return;
    }
    if (len < 8) {
        hs_reply_err(c, NBD_REP_ERR_INVALID, "option data too short");
        return;
    }
    uint32_t namelen = get32(d);
    if (namelen > NBD_MAX_STRING || namelen > len - 8) {
        hs_reply_err(c, NBD_REP_ERR_INVALID, "bad export name length");
        return;
    }
    g_autofree char *name = g_strndup((const char *)d + 4, namelen);
    uint32_t nq = get32(d + 4 + namelen);
    uint32_t pos = 8 + namelen;
    /* First pass: validate every query's length so nothing is half-applied. */
    uint32_t p = pos;
    for (uint32_t i = 0; i < nq; i++) {
        if (len - p < 4) {
            hs_reply_err(c, NBD_REP_ERR_INVALID, "query list truncated");
            return;
        }
        uint32_t ql = get32(d + p);
        if (ql > NBD_MAX_STRING) {
            hs_reply_err(c, NBD_REP_ERR_TOO_BIG, "query too long");
            return;
        }
        if (ql > len - p - 4) {
            hs_reply_err(c, NBD_REP_ERR_INVALID, "query list truncated");
            return;
        }
        p += 4 + ql;
    }
    if (p != len) {
        hs_reply_err(c, NBD_REP_ERR_INVALID, "option length does not match its contents");
        return;
    }
    BlockExport *exp = hs_find_export(c, name, namelen);
    if (!exp) {
        return;
    }
    bool match = !set && nq == 0;   /* an empty LIST query lists everything */
    p = pos;
    for (uint32_t i = 0; i < nq; i++) {
        uint32_t ql = get32(d + p);
        const char *q = (const char *)d + p + 4;
        size_t bl = strlen(NBD_META_BASE_ALLOCATION);
        if (ql == bl && !memcmp(q, NBD_META_BASE_ALLOCATION, bl)) {
            match = true;
        } else if (!set && ql == 5 && !memcmp(q, "base:", 5)) {
            match = true;       /* LIST of a whole namespace */
        }
        p += 4 + ql;
    }
    if (set) {
        c->base_alloc = match;
        c->meta_exp = exp;
    }
    if (match) {
        hs_meta_context_reply(c, set ? NBD_META_ID_BASE_ALLOCATION : 0);
    }
    hs_reply(c, NBD_REP_ACK, NULL, 0);
}

/* A complete option (header + data in hs_buf) arrived. */
static void hs_handle_option(NbdConn *c)
{
    switch (c->opt) {
    case NBD_OPT_EXPORT_NAME: {
        g_autofree char *name = g_strndup((const char *)c->hs_buf, c->opt_len);
        if (strlen(name) != c->opt_len || !hs_send_export_name_reply(c, name)) {
            hs_finish(c);        /* no error reply exists for this option */
            return;
        }
        break;
    }
    case NBD_OPT_ABORT:
        hs_reply(c, NBD_REP_ACK, NULL, 0);
        c->hs_abort = true;
        break;
    case NBD_OPT_LIST:
        hs_opt_list(c);
        break;
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        hs_opt_info(c);
        break;
    case NBD_OPT_STRUCTURED_REPLY:
        if (c->opt_len) {
            hs_reply_err(c, NBD_REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data");
        } else if (c->structured) {
            hs_reply_err(c, NBD_REP_ERR_INVALID, "structured replies already negotiated");
        } else {
            c->structured = true;
            hs_reply(c, NBD_REP_ACK, NULL, 0);
        }
        break;
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        hs_opt_meta(c);
        break;
    default:
        hs_reply_err(c, NBD_REP_ERR_UNSUP, "option not supported");
        break;
    }
    g_free(c->hs_buf);
    c->hs_buf = NULL;
    hs_expect(c, HS_OPT_HEADER, 16);
}

/* Returns false when the connection was closed. */
static bool hs_parse(NbdConn *c)
{
    switch (c->hs) {
    case HS_CLIENT_FLAGS: {
        uint32_t f = get32(c->hs_hdr);
        if (f & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
            hs_finish(c);        /* the protocol says: drop the connection */
            return false;
        }
        c->no_zeroes = f & NBD_FLAG_C_NO_ZEROES;
        hs_expect(c, HS_OPT_HEADER, 16);
        return true;
    }
    case HS_OPT_HEADER:
        if (get64(c->hs_hdr) != NBD_OPTS_MAGIC || ++c->nr_options > NBD_MAX_OPTIONS) {
            hs_finish(c);
            return false;
        }
        c->opt = get32(c->hs_hdr + 8);
        c->opt_len = get32(c->hs_hdr + 12);
        if (c->opt == NBD_OPT_EXPORT_NAME && c->opt_len > NBD_MAX_STRING) {
            hs_finish(c);        /* cannot be answered with an error */
            return false;
        }
        if (c->opt_len > NBD_OPT_DATA_MAX) {
            if (c->opt_len > NBD_OPT_SKIP_MAX) {
                hs_finish(c);
                return false;
            }
            c->hs_skip = c->opt_len;
            c->hs = HS_OPT_SKIP;
            return true;
        }
        c->hs_buf = g_malloc(c->opt_len + 1);
        hs_expect(c, HS_OPT_DATA, c->opt_len);
        if (c->opt_len == 0) {
            hs_handle_option(c);
            return c->phase == CONN_HANDSHAKE;
        }
        return true;
    case HS_OPT_DATA:
        hs_handle_option(c);
        return c->phase == CONN_HANDSHAKE;
    case HS_OPT_SKIP:
        hs_reply_err(c, NBD_REP_ERR_TOO_BIG, "option data too large");
        hs_expect(c, HS_OPT_HEADER, 16);
        return true;
    }
    return true;
}

static void hs_after_output(NbdConn *c)
{
    if (c->hs_abort) {
        hs_finish(c);
    } else if (c->hs_go) {
        aio_set_fd_handler(c->ctx, c->fd, true, NULL, NULL, NULL, NULL, NULL);
        g_free(c->hs_buf);
        c->hs_buf = NULL;
        if (c->hs_out) {
            g_byte_array_unref(c->hs_out);
            c->hs_out = NULL;
        }
        aio_timer_del(&c->hs_timer);
        c->phase = CONN_HANDOFF;
        c->handed_off = true;
        c->ctx = c->exp->ctx;
        aio_bh_schedule_oneshot(c->ctx, conn_start_bh, c);
    } else {
        hs_update_handlers(c);
    }
}

/* Writes pending handshake output; false when the connection was closed. */
static bool hs_flush(NbdConn *c)
{
    while (c->hs_out && c->hs_out_pos < c->hs_out->len) {
        ssize_t n = send(c->fd, c->hs_out->data + c->hs_out_pos,
                         c->hs_out->len - c->hs_out_pos, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            hs_update_handlers(c);
            return true;
        }
        if (n <= 0) {
            hs_finish(c);
            return false;
        }
        c->hs_out_pos += n;
    }
    if (c->hs_out) {
        g_byte_array_set_size(c->hs_out, 0);
        c->hs_out_pos = 0;
    }
    hs_after_output(c);
    return c->phase == CONN_HANDSHAKE;
}

static void hs_write(void *opaque)
{
    hs_flush(opaque);
}

static void hs_read(void *opaque)
{
    NbdConn *c = opaque;
    for (;;) {
        ssize_t n;
        if (c->hs == HS_OPT_SKIP) {
            uint8_t junk[4096];
            n = recv(c->fd, junk, MIN(sizeof(junk), c->hs_skip), 0);
            if (n > 0) {
                c->hs_skip -= n;
            }
        } else {
            uint8_t *dst = c->hs == HS_OPT_DATA ? c->hs_buf : c->hs_hdr;
            n = recv(c->fd, dst + c->hs_have, c->hs_need - c->hs_have, 0);
            if (n > 0) {
                c->hs_have += n;
            }
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (n <= 0) {
            hs_finish(c);        /* EOF or error during the handshake */
            return;
        }
        bool complete = c->hs == HS_OPT_SKIP ? c->hs_skip == 0 : c->hs_have == c->hs_need;
        if (complete) {
            if (!hs_parse(c)) {
                return;
            }
            if (c->hs_out && c->hs_out->len) {
                hs_flush(c);
                return;          /* reading resumes once the reply is out */
            }
        }
    }
}

/* A client that does not finish its handshake in time is dropped (it holds a slot). */
static void hs_timeout(void *opaque)
{
    NbdConn *c = opaque;
    if (c->phase == CONN_HANDSHAKE) {
        hs_finish(c);
    }
}

static void hs_start(NbdConn *c)
{
    aio_timer_init(&c->hs_timer, c->ctx, AIO_CLOCK_MONOTONIC, hs_timeout, c);
    if (server.handshake_timeout_ns > 0) {
        aio_timer_mod_ns(&c->hs_timer,
                         aio_clock_get_ns(AIO_CLOCK_MONOTONIC) + server.handshake_timeout_ns);
    }
    uint8_t g[18];
    put64(g, NBD_INIT_MAGIC);
    put64(g + 8, NBD_OPTS_MAGIC);
    put16(g + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    hs_append(c, g, sizeof(g));
    hs_expect(c, HS_CLIENT_FLAGS, 4);
    hs_flush(c);
}

/* ---- requests (export's context) ------------------------------------------------------- */

static NbdReq *req_get(NbdConn *c)
{
    NbdReq *r = c->free_reqs;
    if (r) {
        c->free_reqs = r->next;
    } else {
        r = g_new0(NbdReq, 1);
        r->conn = c;
    }
    r->next = NULL;
    r->flush_after = false;
    r->payload_got = 0;
    r->nr_chunks = 0;
    c->nr_reqs++;
    return r;
}

/* Makes sure r->buf holds len bytes. */
static void req_buf(NbdReq *r, size_t len)
{
    if (r->buf_cap >= len && r->buf) {
        return;
    }
    if (r->buf) {
        bdrv_blockalign_free(r->conn->bs, r->buf, r->buf_cap);
    }
    size_t cap = 4096;
    while (cap < len) {
        cap *= 2;
    }
    r->buf = bdrv_blockalign(r->conn->bs, cap);
    r->buf_cap = cap;
}

static void req_put(NbdReq *r)
{
    NbdConn *c = r->conn;
    if (r->buf && r->buf_cap > NBD_KEEP_BUF_MAX) {
        bdrv_blockalign_free(c->bs, r->buf, r->buf_cap);
        r->buf = NULL;
        r->buf_cap = 0;
    }
    r->next = c->free_reqs;
    c->free_reqs = r;
    c->nr_reqs--;
}

/*
 * Registers what the connection waits for. The write handler is only
 * wanted while the socket refuses replies (otherwise the send BH writes),
 * so the steady state changes no registration.
 */
static void conn_set_handlers(NbdConn *c)
{
    bool want_read = !c->read_closed && c->nr_reqs < NBD_MAX_IN_FLIGHT;
    bool want_write = c->out_head != NULL && c->send_blocked;
    c->read_full = !c->read_closed && !want_read;
    if (want_read == c->reading && want_write == c->writing) {
        return;
    }
    c->reading = want_read;
    c->writing = want_write;
    aio_set_fd_handler(c->ctx, c->fd, true, want_read ? conn_read : NULL,
                       want_write ? conn_write : NULL, NULL, NULL, c);
}

static uint32_t nbd_errno(int err, const NbdReq *r)
{
    switch (err) {
    case 0:
        return 0;
    case EPERM:
    case EROFS:
    case EACCES:
        return NBD_EPERM;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return NBD_ENOSPC;
    case EINVAL:
        return NBD_EINVAL;
    case ENOMEM:
        return NBD_ENOMEM;
    case EOVERFLOW:
        return NBD_EOVERFLOW;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    case ENOTSUP:
        /* Only a fast-zero request may be told "not supported". */
        return r->type == NBD_CMD_WRITE_ZEROES && (r->flags & NBD_CMD_FLAG_FAST_ZERO) ?
               NBD_ENOTSUP : NBD_EINVAL;
    default:
        return NBD_EIO;
    }
}

/* Queues r's reply (built in r->hdr/r->out) and arranges for it to be sent. */
static void req_queue_reply(NbdReq *r)
{
    NbdConn *c = r->conn;
    if (c->drop_replies) {
        req_put(r);
        conn_maybe_finish(c);
        return;
    }
    r->out_total = 0;
    for (int i = 0; i < r->out_niov; i++) {
        r->out_total += r->outv[i].iov_len;
    }
    r->next = NULL;
    if (c->out_tail) {
        c->out_tail->next = r;
    } else {
        c->out_head = r;
    }
    c->out_tail = r;
    aio_bh_schedule(c->send_bh);
}

static void req_reply_simple(NbdReq *r, uint32_t err, void *data, size_t len)
{
    put32(r->hdr, NBD_SIMPLE_REPLY_MAGIC);
    put32(r->hdr + 4, err);
    put64(r->hdr + 8, r->cookie);
    r->outv = r->out;
    r->out[0] = (struct iovec){ r->hdr, 16 };
    r->out_niov = 1;
    if (len) {
        r->out[1] = (struct iovec){ data, len };
        r->out_niov = 2;
    }
}

static void chunk_header(uint8_t *h, uint64_t cookie, uint16_t flags, uint16_t type,
                         uint32_t len)
{
    put32(h, NBD_STRUCTURED_REPLY_MAGIC);
    put16(h + 4, flags);
    put16(h + 6, type);
    put64(h + 8, cookie);
    put32(h + 16, len);
}

static void req_chunk_header(NbdReq *r, uint16_t flags, uint16_t type, uint32_t len)
{
    chunk_header(r->hdr, r->cookie, flags, type, len);
    r->outv = r->out;
}

/* Replies with error err (NBD_E*) and an optional static message. */
static void req_reply_error(NbdReq *r, uint32_t err, const char *msg)
{
    NbdConn *c = r->conn;
    if (!c->structured) {
        req_reply_simple(r, err, NULL, 0);
    } else {
        size_t ml = msg ? strlen(msg) : 0;
        req_chunk_header(r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, (uint32_t)(6 + ml));
        put32(r->hdr + 20, err);
        put16(r->hdr + 24, (uint16_t)ml);
        r->out[0] = (struct iovec){ r->hdr, 26 };
        r->out_niov = 1;
        if (ml) {
            r->out[1] = (struct iovec){ (void *)msg, ml };
            r->out_niov = 2;
        }
    }
    req_queue_reply(r);
}

static void req_reply_ok(NbdReq *r)
{
    req_reply_simple(r, 0, NULL, 0);
    req_queue_reply(r);
}

static void req_reply_read(NbdReq *r)
{
    if (r->nr_chunks) {
        r->outv = r->chunk_iov;      /* built by req_plan_sparse_read() */
    } else if (!r->conn->structured) {
        req_reply_simple(r, 0, r->buf, r->length);
    } else if (r->length == 0) {
        req_chunk_header(r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0);
        r->out[0] = (struct iovec){ r->hdr, 20 };
        r->out_niov = 1;
    } else {
        /* One data chunk, final: the data is already read, no error can follow. */
        req_chunk_header(r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, 8 + r->length);
        put64(r->hdr + 20, r->offset);
        r->out[0] = (struct iovec){ r->hdr, 28 };
        r->out[1] = (struct iovec){ r->buf, r->length };
        r->out_niov = 2;
    }
    req_queue_reply(r);
}

static void req_done(void *opaque, int ret)
{
    NbdReq *r = opaque;
    NbdConn *c = r->conn;
    if (ret == 0 && r->flush_after) {
        r->flush_after = false;
        bdrv_aio_flush(c->bs, req_done, r);
        return;
    }
    c->nr_submitted--;
    if (ret < 0) {
        req_reply_error(r, nbd_errno(-ret, r), NULL);
    } else if (r->type == NBD_CMD_READ) {
        req_reply_read(r);
    } else {
        req_reply_ok(r);
    }
    if (c->phase == CONN_CLOSING) {
        conn_maybe_finish(c);
    }
}

/* BLOCK_STATUS for base:allocation, answered synchronously. */
static void req_block_status(NbdReq *r)
{
    NbdConn *c = r->conn;
    unsigned max = (r->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : NBD_BS_MAX_EXTENTS;
    req_buf(r, 4 + 8 * (size_t)max);
    put32(r->buf, NBD_META_ID_BASE_ALLOCATION);
    unsigned n = 0;
    int64_t off = r->offset, end = (int64_t)r->offset + r->length;
    uint32_t last_flags = 0;
    while (off < end && n < max) {
        int64_t pnum;
        int st;
        int ret = bdrv_block_status(c->bs, off, end - off, &pnum, &st);
        if (ret < 0) {
            if (n == 0) {
                req_reply_error(r, nbd_errno(-ret, r), "block status failed");
                return;
            }
            break;
        }
        uint32_t flags = (st & BDRV_BLOCK_DATA ? 0 : NBD_STATE_HOLE) |
                         (st & BDRV_BLOCK_ZERO ? NBD_STATE_ZERO : 0);
        if (n && flags == last_flags) {
            uint8_t *d = r->buf + 4 + 8 * (n - 1);
            put32(d, get32(d) + (uint32_t)pnum);
        } else {
            uint8_t *d = r->buf + 4 + 8 * n;
            put32(d, (uint32_t)pnum);
            put32(d + 4, flags);
            last_flags = flags;
            n++;
        }
        off += pnum;
    }
    req_chunk_header(r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, 4 + 8 * n);
    r->out[0] = (struct iovec){ r->hdr, 20 };
    r->out[1] = (struct iovec){ r->buf, 4 + 8 * n };
    r->out_niov = 2;
    req_queue_reply(r);
}

/*
 * Structured replies let a read skip the zeroes: [offset, offset+length) is
 * split by block status into runs that hold data and runs that read as
 * zeroes (holes, or BDRV_BLOCK_ZERO), and each becomes an OFFSET_DATA or
 * OFFSET_HOLE chunk, the last flagged DONE. Only reads of at least
 * NBD_SPARSE_READ_MIN ask (a 4 KiB read saves nothing worth a query), and
 * not inside the connection's remembered data range; the read itself still
 * covers the whole range (one request; holes read as zeroes cheaply), and
 * the data chunks point into its buffer. After NBD_READ_MAX_CHUNKS - 1 runs
 * the rest goes out as one data chunk. Returns true when the whole range
 * is one hole: the reply is complete and nothing needs to be read.
 */
static bool req_plan_sparse_read(NbdReq *r)
{
    NbdConn *c = r->conn;
    uint64_t end = r->offset + r->length;
    if (!c->structured || r->length < NBD_SPARSE_READ_MIN ||
        (r->offset >= c->data_from && end <= c->data_until)) {
        return false;
    }
    uint32_t run_len[NBD_READ_MAX_CHUNKS];
    bool run_hole[NBD_READ_MAX_CHUNKS];
    unsigned n = 0;
    uint64_t off = r->offset;
    while (off < end) {
        int64_t pnum;
        int st;
        bool hole;
        if (n == NBD_READ_MAX_CHUNKS - 1) {
            pnum = end - off;
            hole = false;
        } else {
            /* The first query looks past the read, so the data range it finds can be reused. */
            int64_t want = off == r->offset ? c->exp->size - (int64_t)off : (int64_t)(end - off);
            if (bdrv_block_status(c->bs, off, want, &pnum, &st) < 0) {
                return false;        /* no answer: send it all as data */
            }
            hole = st & BDRV_BLOCK_ZERO || !(st & BDRV_BLOCK_DATA);
            if (off == r->offset && !hole) {
                c->data_from = off;
                c->data_until = off + pnum;
            }
            pnum = MIN(pnum, (int64_t)(end - off));
        }
        if (n && run_hole[n - 1] == hole) {
            run_len[n - 1] += (uint32_t)pnum;
        } else {
            run_len[n] = (uint32_t)pnum;
            run_hole[n] = hole;
            n++;
        }
        off += pnum;
    }
    if (n == 1 && !run_hole[0]) {
        return false;                /* all data: the plain reply */
    }
    if (n > 1 && (r->flags & NBD_CMD_FLAG_DF)) {
        return false;                /* DF: one content chunk, so data */
    }
    if (n > 1) {
        req_buf(r, r->length);       /* the data chunks point into it */
    }
    if (!r->chunk_hdr) {
        r->chunk_hdr = g_malloc(NBD_READ_MAX_CHUNKS * NBD_CHUNK_HDR_MAX);
        r->chunk_iov = g_new(struct iovec, 2 * NBD_READ_MAX_CHUNKS);
    }
    int niov = 0;
    off = r->offset;
    for (unsigned i = 0; i < n; i++) {
        uint8_t *h = r->chunk_hdr + i * NBD_CHUNK_HDR_MAX;
        uint16_t fl = i == n - 1 ? NBD_REPLY_FLAG_DONE : 0;
        if (run_hole[i]) {
            chunk_header(h, r->cookie, fl, NBD_REPLY_TYPE_OFFSET_HOLE, 12);
            put64(h + 20, off);
            put32(h + 28, run_len[i]);
            r->chunk_iov[niov++] = (struct iovec){ h, 32 };
        } else {
            chunk_header(h, r->cookie, fl, NBD_REPLY_TYPE_OFFSET_DATA, 8 + run_len[i]);
            put64(h + 20, off);
            r->chunk_iov[niov++] = (struct iovec){ h, 28 };
            r->chunk_iov[niov++] = (struct iovec){ r->buf + (off - r->offset), run_len[i] };
        }
        off += run_len[i];
    }
    r->nr_chunks = n;
    r->out_niov = niov;
    return n == 1;
}

static void conn_plug(NbdConn *c)
{
    if (!c->plugged) {
        c->plugged = true;
        bdrv_io_plug(c->bs);
    }
}

/*
 * NBD_CMD_CACHE reads the range through the block layer into a throwaway
 * buffer, NBD_CACHE_STEP at a time (so memory stays bounded), and answers
 * once all of it was read: for a buffered node the data is then in the page
 * cache, for any node the device has seen it. A read error is the reply.
 */
static void req_cache_step(void *opaque, int ret)
{
    NbdReq *r = opaque;
    NbdConn *c = r->conn;
    if (ret == 0 && r->qiov.size) {
        r->cache_done += r->qiov.size;
    }
    if (ret < 0 || r->cache_done == r->length || c->drop_replies) {
        req_done(r, ret);
        return;
    }
    uint32_t n = MIN(r->length - r->cache_done, (uint32_t)NBD_CACHE_STEP);
    iovector_init_buf(&r->qiov, r->buf, n);
    bdrv_aio_preadv(c->bs, r->offset + r->cache_done, &r->qiov, 0, req_cache_step, r);
}

/* Hands a validated request to the block layer (write payload complete). */
static void req_submit(NbdReq *r)
{
    NbdConn *c = r->conn;
    BdrvRequestFlags f = 0;
    if (r->flags & NBD_CMD_FLAG_FUA) {
        f |= BDRV_REQ_FUA;
    }
    c->nr_submitted++;
    switch (r->type) {
    case NBD_CMD_READ:
        conn_plug(c);
        iovector_init_buf(&r->qiov, r->buf, r->length);
        bdrv_aio_preadv(c->bs, r->offset, &r->qiov, 0, req_done, r);
        break;
    case NBD_CMD_WRITE:
        conn_plug(c);
        iovector_init_buf(&r->qiov, r->buf, r->length);
        bdrv_aio_pwritev(c->bs, r->offset, &r->qiov, f, req_done, r);
        break;
    case NBD_CMD_FLUSH:
        bdrv_aio_flush(c->bs, req_done, r);
        break;
    case NBD_CMD_CACHE:
        req_buf(r, MIN(r->length, (uint32_t)NBD_CACHE_STEP));
        r->cache_done = 0;
        iovector_init_buf(&r->qiov, r->buf, 0);
        req_cache_step(r, 0);
        break;
    case NBD_CMD_TRIM:
        r->flush_after = r->flags & NBD_CMD_FLAG_FUA;
        bdrv_aio_pdiscard(c->bs, r->offset, r->length, req_done, r);
        break;
    case NBD_CMD_WRITE_ZEROES:
        if (!(r->flags & NBD_CMD_FLAG_NO_HOLE)) {
            f |= BDRV_REQ_MAY_UNMAP;
        }
        if (r->flags & NBD_CMD_FLAG_FAST_ZERO) {
            f |= BDRV_REQ_NO_FALLBACK;
        }
        bdrv_aio_pwrite_zeroes(c->bs, r->offset, r->length, f, req_done, r);
        break;
    default:
        g_assert_not_reached();
    }
}

/*
 * Checks a request; returns 0 or the NBD error to reply with, and a
 * message for structured replies.
 */
static uint32_t req_check(NbdConn *c, NbdReq *r, const char **msg)
{
    static const uint16_t allowed[] = {
        [NBD_CMD_READ] = NBD_CMD_FLAG_DF,
        [NBD_CMD_WRITE] = 0,
        [NBD_CMD_FLUSH] = 0,
        [NBD_CMD_TRIM] = 0,
        [NBD_CMD_CACHE] = 0,
        [NBD_CMD_WRITE_ZEROES] = NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO,
        [NBD_CMD_BLOCK_STATUS] = NBD_CMD_FLAG_REQ_ONE,
    };
    BlockExport *exp = c->exp;
    if (r->type >= G_N_ELEMENTS(allowed) || r->type == NBD_CMD_DISC) {
        *msg = "unknown command";
        return NBD_EINVAL;
    }
    /* FUA is accepted on every command (the protocol asks servers to). */
    if (r->flags & ~(allowed[r->type] | NBD_CMD_FLAG_FUA)) {
        *msg = "flag not valid for this command";
        return NBD_EINVAL;
    }
    if ((r->flags & NBD_CMD_FLAG_DF) && !c->structured) {
        *msg = "DF without structured replies";
        return NBD_EINVAL;
    }
    if (r->type == NBD_CMD_FLUSH) {
        if (r->offset || r->length) {
            *msg = "flush offset and length must be zero";
            return NBD_EINVAL;
        }
        return 0;
    }
    if (r->type == NBD_CMD_BLOCK_STATUS && !c->base_alloc) {
        *msg = "no metadata context negotiated";
        return NBD_EINVAL;
    }
    if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE || r->type == NBD_CMD_CACHE) &&
        r->length > NBD_MAX_PAYLOAD) {
        *msg = "request too large";
        return r->type == NBD_CMD_READ && (r->flags & NBD_CMD_FLAG_DF) ? NBD_EOVERFLOW
                                                                          : NBD_EINVAL;
    }
    bool is_write = r->type == NBD_CMD_WRITE || r->type == NBD_CMD_TRIM ||
                    r->type == NBD_CMD_WRITE_ZEROES;
    if (is_write && !exp->writable) {
        *msg = "export is read-only";
        return NBD_EPERM;
    }
    if (r->offset > (uint64_t)exp->size || r->length > (uint64_t)exp->size - r->offset) {
        *msg = "request beyond the end of the export";
        /* The protocol asks for ENOSPC on writes past the end. */
        return r->type == NBD_CMD_WRITE || r->type == NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC
                                                                             : NBD_EINVAL;
    }
    if (r->type == NBD_CMD_BLOCK_STATUS && r->length == 0) {
        *msg = "zero-length block status";
        return NBD_EINVAL;
    }
    return 0;
}

/*
 * One request header parsed from the receive buffer. Returns false when the
 * connection must stop reading (closed, or DISC).
 */
static bool conn_handle_header(NbdConn *c, const uint8_t *h)
{
    if (get32(h) != NBD_REQUEST_MAGIC) {
        conn_close(c, true);     /* cannot resynchronise: hard disconnect */
        return false;
    }
    uint16_t type = get16(h + 6);
    if (type == NBD_CMD_DISC) {
        /* Outstanding requests still get their replies. */
        conn_close(c, false);
        return false;
    }
    uint32_t length = get32(h + 24);
    if (type == NBD_CMD_WRITE && length > NBD_MAX_PAYLOAD) {
        conn_close(c, true);     /* a payload this large cannot be skipped safely */
        return false;
    }
    NbdReq *r = req_get(c);
    r->flags = get16(h + 4);
    r->type = type;
    r->cookie = get64(h + 8);
    r->offset = get64(h + 16);
    r->length = length;

    const char *msg = NULL;
    uint32_t err = req_check(c, r, &msg);
    if (err) {
        if (type == NBD_CMD_WRITE) {
            c->skip = length;    /* the payload follows: discard it */
        }
        req_reply_error(r, err, msg);
        return true;
    }
    switch (type) {
    case NBD_CMD_READ:
        if (req_plan_sparse_read(r)) {
            req_reply_read(r);   /* one hole: nothing to read */
        } else {
            req_buf(r, r->length);
            req_submit(r);
        }
        break;
    case NBD_CMD_WRITE:
        req_buf(r, r->length);
        if (r->length == 0) {
            req_submit(r);
        } else {
            c->cur = r;
        }
        break;
    case NBD_CMD_BLOCK_STATUS:
        req_block_status(r);
        break;
    default:
        req_submit(r);
        break;
    }
    return true;
}

/* Payload bytes for c->cur or c->skip from the receive buffer. */
static void conn_take_payload(NbdConn *c)
{
    size_t avail = c->rlen - c->rpos;
    if (c->cur) {
        NbdReq *r = c->cur;
        size_t n = MIN(avail, (size_t)(r->length - r->payload_got));
        memcpy(r->buf + r->payload_got, c->rbuf + c->rpos, n);
        r->payload_got += n;
        c->rpos += n;
        if (r->payload_got == r->length) {
            c->cur = NULL;
            req_submit(r);
        }
    } else if (c->skip) {
        size_t n = MIN(avail, c->skip);
        c->rpos += n;
        c->skip -= n;
    }
}

static void conn_read(void *opaque)
{
    NbdConn *c = opaque;
    bool eof = false;
    bool more = true;            /* the last recv filled what it was given */

    c->plugged = false;
    while (!c->read_closed) {
        /* Parse everything complete that is buffered. */
        for (;;) {
            if (c->cur || c->skip) {
                conn_take_payload(c);
                if (c->cur || c->skip) {
                    break;       /* buffer empty, payload incomplete */
                }
            } else if (c->rlen - c->rpos >= sizeof(NbdRequest)) {
                if (c->nr_reqs >= NBD_MAX_IN_FLIGHT) {
                    break;       /* resumes when a request finishes */
                }
                const uint8_t *h = c->rbuf + c->rpos;
                c->rpos += sizeof(NbdRequest);
                if (!conn_handle_header(c, h) || c->read_closed) {
                    goto out;
                }
            } else {
                break;
            }
        }
        if (c->nr_reqs >= NBD_MAX_IN_FLIGHT || eof || !more) {
            break;
        }
        ssize_t n;
        if (c->cur && c->rpos == c->rlen) {
            /*
             * A payload larger than what was buffered lands in its request
             * buffer directly; the same recvmsg() takes whatever follows it
             * (the next headers) into the receive buffer, so finishing a
             * payload costs no extra (EAGAIN) syscall.
             */
            NbdReq *r = c->cur;
            size_t want = r->length - r->payload_got;
            struct iovec iov[2] = {
                { r->buf + r->payload_got, want },
                { c->rbuf, NBD_RBUF_SIZE },
            };
            struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
            c->rpos = c->rlen = 0;
            n = recvmsg(c->fd, &mh, 0);
            if (n > 0) {
                size_t got = MIN((size_t)n, want);
                r->payload_got += got;
                c->rlen = (size_t)n - got;
                more = (size_t)n == want + NBD_RBUF_SIZE;
                if (r->payload_got == r->length) {
                    c->cur = NULL;
                    req_submit(r);
                }
                continue;
            }
        } else {
            if (c->rpos == c->rlen) {
                c->rpos = c->rlen = 0;
            } else if (c->rpos > NBD_RBUF_SIZE / 2 || c->rlen == NBD_RBUF_SIZE) {
                memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
                c->rlen -= c->rpos;
                c->rpos = 0;
            }
            size_t want = NBD_RBUF_SIZE - c->rlen;
            if (want == 0) {
                break;           /* cannot happen (parsing empties it): never read 0 bytes */
            }
            n = recv(c->fd, c->rbuf + c->rlen, want, 0);
            if (n > 0) {
                c->rlen += n;
                more = (size_t)n == want;
                continue;
            }
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        }
        eof = true;              /* 0: EOF; < 0: reset or another error */
        if (n < 0) {
            break;
        }
    }
    if (eof && !c->read_closed) {
        /* A clean EOF between requests finishes like DISC; mid-request it is fatal. */
        bool mid_request = c->cur || c->skip || c->rlen != c->rpos;
        conn_close(c, mid_request);
    }
out:
    if (c->plugged) {
        c->plugged = false;
        bdrv_io_unplug(c->bs);
    }
    if (c->phase == CONN_TRANSMISSION) {
        conn_set_handlers(c);
    } else {
        conn_maybe_finish(c);
    }
}

/* ---- sending replies ------------------------------------------------------------------ */

static void conn_send(NbdConn *c)
{
    c->send_blocked = false;
    while (c->out_head) {
        struct iovec iov[NBD_SEND_IOV_MAX];
        int niov = 0;
        size_t skip = c->out_off;
        for (NbdReq *r = c->out_head; r && niov + r->out_niov <= NBD_SEND_IOV_MAX;
             r = r->next) {
            for (int i = 0; i < r->out_niov; i++) {
                if (skip >= r->outv[i].iov_len) {
                    skip -= r->outv[i].iov_len;
                    continue;
                }
                iov[niov].iov_base = (uint8_t *)r->outv[i].iov_base + skip;
                iov[niov].iov_len = r->outv[i].iov_len - skip;
                skip = 0;
                niov++;
            }
        }
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = niov };
        ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (c->stop_requested) {
                conn_close(c, true);   /* a stopping server does not wait for slow readers */
                conn_maybe_finish(c);
                return;
            }
            c->send_blocked = true;
            break;
        }
        if (n <= 0) {
            conn_close(c, true);       /* EPIPE, ECONNRESET: the client is gone */
            conn_maybe_finish(c);
            return;
        }
        size_t done = c->out_off + (size_t)n;
        while (c->out_head && done >= c->out_head->out_total) {
            NbdReq *r = c->out_head;
            done -= r->out_total;
            c->out_head = r->next;
            if (!c->out_head) {
                c->out_tail = NULL;
            }
            req_put(r);
        }
        c->out_off = done;
        if (done) {
            c->send_blocked = true;    /* partial: the socket is full */
            break;
        }
    }
    if (c->phase == CONN_TRANSMISSION) {
        bool resume = c->read_full && c->nr_reqs < NBD_MAX_IN_FLIGHT;
        conn_set_handlers(c);
        if (resume && c->rlen != c->rpos) {
            /* Requests already buffered would wait for more input: parse them now. */
            conn_read(c);
        }
    } else if (c->phase == CONN_CLOSING) {
        bool want_write = c->out_head != NULL;
        if (want_write != c->writing) {
            c->writing = want_write;
            aio_set_fd_handler(c->ctx, c->fd, true, NULL, want_write ? conn_write : NULL,
                               NULL, NULL, c);
        }
        conn_maybe_finish(c);
    }
}

static void conn_send_bh(void *opaque)
{
    conn_send(opaque);
}

static void conn_write(void *opaque)
{
    conn_send(opaque);
}

/* ---- transmission lifetime (export's context) ------------------------------------------- */

static void conn_start_bh(void *opaque)
{
    NbdConn *c = opaque;
    c->phase = CONN_TRANSMISSION;
    c->rbuf = g_malloc(NBD_RBUF_SIZE);
    c->send_bh = aio_bh_new(c->ctx, conn_send_bh, c);
    if (c->stop_requested) {
        conn_close(c, true);
        conn_maybe_finish(c);
        return;
    }
    conn_set_handlers(c);
}

/*
 * Stops reading requests. drop_replies: the connection is broken (or the
 * server stops): replies are discarded. Otherwise (DISC, clean EOF) the
 * in-flight requests still get theirs. The connection is freed once no
 * request is left in the block layer.
 */
static void conn_close(NbdConn *c, bool drop_replies)
{
    if (c->phase == CONN_TRANSMISSION) {
        c->phase = CONN_CLOSING;
    }
    c->read_closed = true;
    if (drop_replies && !c->drop_replies) {
        c->drop_replies = true;
        while (c->out_head) {
            NbdReq *r = c->out_head;
            c->out_head = r->next;
            req_put(r);
        }
        c->out_tail = NULL;
        c->out_off = 0;
        /* Unblocks a client waiting for us and makes a blocked sendmsg impossible. */
        shutdown(c->fd, SHUT_RDWR);
    }
    if (c->cur) {
        req_put(c->cur);
        c->cur = NULL;
    }
    c->skip = 0;
    bool want_write = c->out_head != NULL && c->send_blocked;
    if (c->reading || want_write != c->writing) {
        c->reading = false;
        c->writing = want_write;
        aio_set_fd_handler(c->ctx, c->fd, true, NULL, want_write ? conn_write : NULL,
                           NULL, NULL, c);
    }
}

static void conn_maybe_finish(NbdConn *c)
{
    if (c->phase != CONN_CLOSING || c->nr_submitted || c->out_head || c->plugged) {
        return;
    }
    c->phase = CONN_DONE;
    aio_set_fd_handler(c->ctx, c->fd, true, NULL, NULL, NULL, NULL, NULL);
    close(c->fd);
    c->fd = -1;
    aio_bh_delete(c->send_bh);
    c->send_bh = NULL;
    g_assert(c->nr_reqs == 0);
    while (c->free_reqs) {
        NbdReq *r = c->free_reqs;
        c->free_reqs = r->next;
        if (r->buf) {
            bdrv_blockalign_free(c->bs, r->buf, r->buf_cap);
        }
        g_free(r->chunk_hdr);
        g_free(r->chunk_iov);
        g_free(r);
    }
    g_free(c->rbuf);
    c->rbuf = NULL;
    aio_bh_schedule_oneshot(aio_context_main(), conn_release_bh, c);
}

/* Runs in the connection's context on behalf of a stopping server. */
static void conn_stop_bh(void *opaque)
{
    NbdConn *c = opaque;
    c->stop_requested = true;
    if (c->phase == CONN_TRANSMISSION || c->phase == CONN_CLOSING) {
        conn_close(c, true);
        conn_maybe_finish(c);
    }
    /* CONN_HANDOFF: conn_start_bh sees stop_requested. */
    conn_unref(c);
}

/* Main thread: asks c to go away. */
static void conn_request_stop(NbdConn *c)
{
    if (c->stop_sent) {
        return;
    }
    c->stop_sent = true;
    if (!c->handed_off) {
        if (c->phase == CONN_HANDSHAKE) {
            hs_finish(c);
        }
        return;
    }
    __atomic_add_fetch(&c->refcnt, 1, __ATOMIC_RELAXED);
    aio_bh_schedule_oneshot(c->ctx, conn_stop_bh, c);
}

void nbd_server_disconnect_export(BlockExport *exp)
{
    for (NbdConn *c = server.conns; c; c = c->next) {
        if (c->meta_exp == exp) {
            c->meta_exp = NULL;
            c->base_alloc = false;
        }
        if (c->exp == exp) {
            conn_request_stop(c);
        }
    }
    AIO_WAIT_WHILE(aio_context_main(), exp->nr_clients > 0);
}

/* ---- listener (main thread) --------------------------------------------------------------- */

static void server_accept(void *opaque)
{
    int lfd = (int)(intptr_t)opaque;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            return;              /* EAGAIN, or a transient error (EMFILE...) */
        }
        if (server.max_connections && server.nr_conns >= server.max_connections) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  /* fails on unix: fine */
        hs_start(conn_new(fd));
    }
}

bool nbd_server_add_client(int fd, Error **errp)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        error_setg_errno(errp, errno, "Cannot make the client socket non-blocking");
        return false;
    }
    hs_start(conn_new(fd));
    return true;
}

unsigned nbd_server_connection_count(void)
{
    return server.nr_conns;
}

static bool listen_inet(const char *host, const char *port, Error **errp)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE };
    struct addrinfo *res;
    int rc = getaddrinfo(host, port ? port : NBD_DEFAULT_PORT, &hints, &res);
    if (rc) {
        error_setg(errp, "Cannot resolve '%s:%s': %s", host ? host : "",
                   port ? port : NBD_DEFAULT_PORT, gai_strerror(rc));
        return false;
    }
    int last_errno = 0;
    for (struct addrinfo *ai = res; ai && server.nr_listen < NBD_MAX_LISTEN_FDS;
         ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (ai->ai_family == AF_INET6) {
            /* The IPv4 address gets its own socket. */
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        }
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
            last_errno = errno;
            close(fd);
            continue;
        }
        server.listen_fds[server.nr_listen++] = fd;
    }
    freeaddrinfo(res);
    if (!server.nr_listen) {
        error_setg_errno(errp, last_errno ? last_errno : EADDRNOTAVAIL,
                         "Cannot listen on '%s:%s'", host ? host : "",
                         port ? port : NBD_DEFAULT_PORT);
        return false;
    }
    return true;
}

bool nbd_server_start(const NbdServerAddr *addr, unsigned max_connections, Error **errp)
{
    if (server.nr_listen) {
        error_setg(errp, "NBD server already running");
        return false;
    }
    if (addr->type == NBD_ADDR_UNIX) {
        if (!addr->path || !*addr->path) {
            error_setg(errp, "NBD server address needs a path");
            return false;
        }
        int fd = unix_socket_listen(addr->path, 128, errp);
        if (fd < 0) {
            return false;
        }
        server.listen_fds[server.nr_listen++] = fd;
        server.unix_path = g_strdup(addr->path);
    } else if (!listen_inet(addr->host, addr->port, errp)) {
        return false;
    }
    server.max_connections = max_connections;
    for (int i = 0; i < server.nr_listen; i++) {
        aio_set_fd_handler(aio_context_main(), server.listen_fds[i], true, server_accept,
                           NULL, NULL, NULL, (void *)(intptr_t)server.listen_fds[i]);
    }
    return true;
}

void nbd_server_set_handshake_timeout(int64_t ns)
{
    server.handshake_timeout_ns = ns;
}

bool nbd_server_running(void)
{
    return server.nr_listen > 0;
}

int nbd_server_local_port(void)
{
    for (int i = 0; i < server.nr_listen; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (getsockname(server.listen_fds[i], (struct sockaddr *)&ss, &len) == 0) {
            if (ss.ss_family == AF_INET) {
                return ntohs(((struct sockaddr_in *)&ss)->sin_port);
            }
            if (ss.ss_family == AF_INET6) {
                return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
            }
        }
    }
    return -1;
}

void nbd_server_stop(void)
{
    for (int i = 0; i < server.nr_listen; i++) {
        aio_set_fd_handler(aio_context_main(), server.listen_fds[i], true, NULL, NULL,
                           NULL, NULL, NULL);
        close(server.listen_fds[i]);
    }
    server.nr_listen = 0;
    if (server.unix_path) {
        unlink(server.unix_path);
        g_free(server.unix_path);
        server.unix_path = NULL;
    }
    for (NbdConn *c = server.conns; c; c = c->next) {
        conn_request_stop(c);
    }
    AIO_WAIT_WHILE(aio_context_main(), server.nr_conns > 0);
}
