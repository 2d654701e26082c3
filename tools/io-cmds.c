/*
 * ringblk-io's command language: qemu-io's commands, options and output.
 *
 * Scripts and golden files written for qemu-io read the same here: the
 * "read N/N bytes at offset O" and statistics lines, the -C machine
 * format, the hex dump of -v, the pattern and parse error messages.
 *
 * The tool plays the part QEMU's BlockBackend plays for qemu-io: requests
 * beyond the end of the image fail with -EIO before they reach the block
 * layer, and buffers come from bdrv_blockalign() (16 bytes off with -m,
 * so that O_DIRECT has to bounce).
 *
 * Opening images (the -drive expansion, --image-opts merging) is in
 * io-open.c; the program options and stdin are in io.c.
 *
 * Threads: every command that touches the image runs in the image's
 * AioContext thread. For an image in an IOThread, io_run_command() hands
 * the command over with aio_wait_bh_oneshot() and waits; aio_* completions
 * are printed from that thread as they arrive.
 */
#include "tools/io-cmds.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "qapi/qapi.h"

/* Largest single request, as QEMU's BDRV_REQUEST_MAX_BYTES. */
#define IO_MAX_REQUEST ((int64_t)(INT_MAX & ~511))
/* Offset of -m buffers from their alignment. */
#define IO_MISALIGN 16
/* Fill bytes: unread buffers, and writes without -P. */
#define IO_READ_FILL 0xab
#define IO_WRITE_FILL 0xcd

typedef int IoCmdFunc(IoSession *s, int argc, char **argv);

enum {
    IO_CMD_NEEDS_IMAGE = 1 << 0,  /* fails with "no file open" without one */
    IO_CMD_MAIN_THREAD = 1 << 1,  /* runs in the main thread even with an IOThread */
};

typedef struct IoCmd {
    const char *name;
    const char *altname;
    IoCmdFunc *func;
    int argmin;                 /* arguments after the name */
    int argmax;                 /* -1: no limit */
    unsigned flags;
    const char *args;
    const char *oneline;
    const char *help;           /* extended help, or NULL */
} IoCmd;

static const IoCmd *io_find_cmd(const char *name);

/* ---- Numbers, sizes, times ------------------------------------------------- */

/*
 * Parses a byte count as qemu-io does: decimal or 0x hex, with an optional
 * binary suffix (b, k, M, G, T, P, E; any case); a fraction only with a
 * suffix. Returns 0, -EINVAL (not a number, bad suffix) or -ERANGE.
 */
static int io_parse_size(const char *s, int64_t *value)
{
    const char *p = s;
    uint64_t whole;
    double frac = 0;
    char *end;

    if (!isdigit((unsigned char)*p)) {
        return -EINVAL;
    }
    errno = 0;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        if (!isxdigit((unsigned char)p[2])) {
            return -EINVAL;
        }
        whole = strtoull(p, &end, 16);
    } else {
        whole = strtoull(p, &end, 10);
    }
    if (errno == ERANGE) {
        return -ERANGE;
    }
    p = end;
    bool has_frac = false;
    if (*p == '.') {
        const char *q = p + 1;
        if (!isdigit((unsigned char)*q)) {
            return -EINVAL;
        }
        frac = strtod(p, &end);
        p = end;
        has_frac = true;
    }
    int shift = -1;
    switch (*p) {
    case '\0': shift = 0; break;
    case 'b': case 'B': shift = 0; p++; break;
    case 'k': case 'K': shift = 10; p++; break;
    case 'm': case 'M': shift = 20; p++; break;
    case 'g': case 'G': shift = 30; p++; break;
    case 't': case 'T': shift = 40; p++; break;
    case 'p': case 'P': shift = 50; p++; break;
    case 'e': case 'E': shift = 60; p++; break;
    }
    if (shift < 0 || *p != '\0') {
        return -EINVAL;
    }
    /* "1.5" alone is ambiguous: a fraction needs a unit to scale it. */
    if (has_frac && (shift == 0)) {
        return -EINVAL;
    }
    if (whole > (uint64_t)INT64_MAX >> shift) {
        return -ERANGE;
    }
    uint64_t v = whole << shift;
    if (has_frac) {
        double extra = frac * (double)(1ULL << shift);
        if ((double)v + extra > (double)INT64_MAX) {
            return -ERANGE;
        }
        v += (uint64_t)extra;
    }
    *value = (int64_t)v;
    return 0;
}

static void io_print_parse_error(int ret, const char *arg)
{
    if (ret == -ERANGE) {
        printf("Parsing error: argument too large -- %s\n", arg);
    } else {
        printf("Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- %s\n",
               arg);
    }
}

/* Parses a number argument, printing qemu-io's message on failure. */
static bool io_arg_size(const char *arg, int64_t *value)
{
    int ret = io_parse_size(arg, value);
    if (ret < 0) {
        io_print_parse_error(ret, arg);
        return false;
    }
    return true;
}

/*
 * Human size: three decimals in the largest binary unit that fits, the
 * decimals dropped when they are all zero ("4 KiB", "1.500 KiB").
 */
static char *io_fmt_size(char *buf, size_t len, double value)
{
    static const char *const units[] = { "EiB", "PiB", "TiB", "GiB", "MiB", "KiB" };
    const char *unit = "bytes";
    int i;

    for (i = 0; i < 6; i++) {
        double scale = (double)(1ULL << (10 * (6 - i)));
        if (value >= scale) {
            snprintf(buf, len, "%.3f", value / scale);
            unit = units[i];
            break;
        }
    }
    if (i == 6) {
        snprintf(buf, len, "%f", value);
    }
    char *zeroes = strstr(buf, ".000");
    if (zeroes) {
        *zeroes = '\0';
    }
    size_t used = strlen(buf);
    snprintf(buf + used, len - used, " %s", unit);
    return buf;
}

/* Elapsed time: "SS.cc sec" under a minute, "H:MM:SS.cc" above or for -C. */
static char *io_fmt_time(char *buf, size_t len, int64_t ns, bool machine)
{
    uint64_t centis = (uint64_t)ns / 10000000;
    unsigned cs = centis % 100;
    uint64_t secs = centis / 100;

    if (!machine && secs < 60) {
        snprintf(buf, len, "%02u.%02u sec", (unsigned)secs, cs);
    } else {
        snprintf(buf, len, "%u:%02u:%02u.%02u", (unsigned)(secs / 3600),
                 (unsigned)(secs / 60 % 60), (unsigned)(secs % 60), cs);
    }
    return buf;
}

static int64_t io_now_ns(void)
{
    return aio_clock_get_ns(AIO_CLOCK_MONOTONIC);
}

/* The two statistics lines (or the -C line) of a finished command. */
static void io_report(const char *op, int64_t elapsed_ns, int64_t offset,
                      int64_t bytes, int ops, bool machine)
{
    char tbuf[64], sbuf[64], rbuf[64];
    double secs = (double)(elapsed_ns > 0 ? elapsed_ns : 1) / 1e9;

    io_fmt_time(tbuf, sizeof(tbuf), elapsed_ns, machine);
    if (machine) {
        printf("%" PRId64 ",%d,%s,%.3f,%.3f\n", bytes, ops, tbuf,
               (double)bytes / secs, ops / secs);
        return;
    }
    printf("%s %" PRId64 "/%" PRId64 " bytes at offset %" PRId64 "\n",
           op, bytes, bytes, offset);
    printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n",
           io_fmt_size(sbuf, sizeof(sbuf), (double)bytes), ops, tbuf,
           io_fmt_size(rbuf, sizeof(rbuf), (double)bytes / secs), ops / secs);
}

/* -v: offset, 16 bytes in hex, the same bytes as text. */
static void io_dump(const uint8_t *buf, int64_t offset, int64_t len)
{
    for (int64_t line = 0; line < len; line += 16) {
        int64_t n = len - line < 16 ? len - line : 16;
        printf("%08" PRIx64 ":  ", (uint64_t)(offset + line));
        for (int64_t i = 0; i < n; i++) {
            printf("%02x ", buf[line + i]);
        }
        putchar(' ');
        for (int64_t i = 0; i < n; i++) {
            uint8_t c = buf[line + i];
            putchar(c >= 0x20 && c < 0x7f ? c : '.');
        }
        putchar('\n');
    }
}

static int io_parse_pattern(const char *arg)
{
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 0);
    if (errno || end == arg || *end || v < 0 || v > 255) {
        printf("%s is not a valid pattern byte\n", arg);
        return -1;
    }
    return (int)v;
}

static bool io_pattern_ok(const uint8_t *buf, int64_t len, int pattern)
{
    for (int64_t i = 0; i < len; i++) {
        if (buf[i] != pattern) {
            return false;
        }
    }
    return true;
}

static void io_help_one(const IoCmd *ct);

static int io_usage(const char *name)
{
    io_help_one(io_find_cmd(name));
    return -EINVAL;
}

/* ---- Tracing (-T) ------------------------------------------------------------ */

static void io_trace(IoSession *s, const char *event, const char *op,
                     int64_t offset, int64_t bytes, int ret, bool done)
{
    if (!s->trace || !g_pattern_match_simple(s->trace_pattern, event)) {
        return;
    }
    if (done) {
        fprintf(s->trace, "%s op=%s offset=%" PRId64 " bytes=%" PRId64 " ret=%d\n",
                event, op, offset, bytes, ret);
    } else {
        fprintf(s->trace, "%s op=%s offset=%" PRId64 " bytes=%" PRId64 "\n",
                event, op, offset, bytes);
    }
    fflush(s->trace);
}

/* ---- Buffers ------------------------------------------------------------------- */

typedef struct IoBuf {
    void *base;
    size_t alloc;
    uint8_t *data;
    int64_t len;
    IOVector qiov;
} IoBuf;

static int io_check_range(IoSession *s, int64_t offset, int64_t bytes);

/*
 * One buffer of sum(lens) bytes, cut into nlens iovec elements, for a
 * request at offset. A request that will fail its range check gets a
 * token buffer: it never reaches the data, and "read 1E 2G" must not
 * allocate 2 GiB first.
 */
static void io_buf_new(IoSession *s, IoBuf *b, int64_t offset, const int64_t *lens,
                       int nlens, int fill)
{
    size_t skew = s->misalign ? IO_MISALIGN : 0;
    int64_t total = 0;

    for (int i = 0; i < nlens; i++) {
        total += lens[i];
    }
    b->len = total;
    if (io_check_range(s, offset, total) < 0) {
        b->alloc = 1;
        b->base = bdrv_blockalign(s->bs, b->alloc);
        b->data = b->base;
        iovector_init(&b->qiov, 1);
        return;
    }
    b->alloc = (size_t)total + skew;
    if (b->alloc == 0) {
        b->alloc = 1;
    }
    b->base = bdrv_blockalign(s->bs, b->alloc);
    b->data = (uint8_t *)b->base + skew;
    memset(b->data, fill, (size_t)total);
    if (nlens == 1) {
        iovector_init_buf(&b->qiov, b->data, (size_t)total);
    } else {
        iovector_init(&b->qiov, nlens);
        uint8_t *p = b->data;
        for (int i = 0; i < nlens; i++) {
            iovector_add(&b->qiov, p, (size_t)lens[i]);
            p += lens[i];
        }
    }
}

static void io_buf_free(IoSession *s, IoBuf *b)
{
    iovector_destroy(&b->qiov);
    bdrv_blockalign_free(s->bs, b->base, b->alloc);
    b->base = NULL;
}

/* The BlockBackend's range check: nothing beyond the end of the image. */
static int io_check_range(IoSession *s, int64_t offset, int64_t bytes)
{
    int64_t len = bdrv_getlength(s->bs);
    if (len < 0) {
        return (int)len;
    }
    if (offset < 0 || bytes < 0 || offset > len || len - offset < bytes) {
        return -EIO;
    }
    return 0;
}

/* Parses "len [len..]" from argv[first..argc). */
static int64_t *io_parse_lengths(char **argv, int first, int argc, int64_t *total)
{
    int64_t *lens = g_new(int64_t, argc - first);
    *total = 0;
    for (int i = first; i < argc; i++) {
        int64_t v;
        if (!io_arg_size(argv[i], &v)) {
            g_free(lens);
            return NULL;
        }
        if (v > IO_MAX_REQUEST || *total + v > IO_MAX_REQUEST) {
            printf("Argument '%s' exceeds maximum size %" PRId64 "\n", argv[i], IO_MAX_REQUEST);
            g_free(lens);
            return NULL;
        }
        lens[i - first] = v;
        *total += v;
    }
    return lens;
}

/*
 * The operands of readv, writev and aio_read: "off len [len...]" from
 * argv[optind..]. Sets *offset and *total and builds b (filled with `fill`).
 * Returns 0, or -EINVAL after printing the usage or the bad operand.
 */
static int io_vector_operands(IoSession *s, int argc, char **argv, const char *cmd,
                              int fill, int64_t *offset, int64_t *total, IoBuf *b)
{
    if (optind > argc - 2) {
        return io_usage(cmd);
    }
    if (!io_arg_size(argv[optind], offset)) {
        return -EINVAL;
    }
    int64_t *lens = io_parse_lengths(argv, optind + 1, argc, total);
    if (!lens) {
        return -EINVAL;
    }
    io_buf_new(s, b, *offset, lens, argc - optind - 1, fill);
    g_free(lens);
    return 0;
}

/* ---- Synchronous requests ---------------------------------------------------- */

typedef enum { IO_READ, IO_WRITE, IO_ZEROES, IO_DISCARD } IoOp;

static const char *const io_op_names[] = { "read", "write", "write_zeroes", "discard" };

static int io_do(IoSession *s, IoOp op, int64_t offset, int64_t bytes,
                 IOVector *qiov, BdrvRequestFlags flags)
{
    int ret = io_check_range(s, offset, bytes);
    io_trace(s, "rbio_submit", io_op_names[op], offset, bytes, 0, false);
    if (ret == 0 && bytes > 0) {
        switch (op) {
        case IO_READ:
            ret = bdrv_preadv(s->bs, offset, qiov, flags);
            break;
        case IO_WRITE:
            ret = bdrv_pwritev(s->bs, offset, qiov, flags);
            break;
        case IO_ZEROES:
            ret = bdrv_pwrite_zeroes(s->bs, offset, bytes, flags);
            break;
        case IO_DISCARD:
            ret = bdrv_pdiscard(s->bs, offset, bytes);
            break;
        }
    }
    io_trace(s, "rbio_complete", io_op_names[op], offset, bytes, ret, true);
    return ret;
}

/* ---- read / readv -------------------------------------------------------------- */

/* What read and readv print and check once the request is done. */
typedef struct IoReadCheck {
    bool pattern_check;            /* -P */
    int pattern;
    int64_t pattern_off, pattern_len;   /* the verified range, within the buffer */
    bool quiet, dump, csv;         /* -q, -v, -C */
} IoReadCheck;

/* Reports, verifies and frees b; returns the command's result. */
static int io_read_done(IoSession *s, IoBuf *b, const char *cmd, int ret, int64_t elapsed,
                        int64_t offset, int64_t count, const IoReadCheck *k)
{
    if (ret < 0) {
        printf("%s failed: %s\n", cmd, strerror(-ret));
    } else {
        if (k->pattern_check &&
            !io_pattern_ok(b->data + k->pattern_off, k->pattern_len, k->pattern)) {
            printf("Pattern verification failed at offset %" PRId64 ", %" PRId64 " bytes\n",
                   offset + k->pattern_off, k->pattern_len);
            ret = -EINVAL;
        }
        if (!k->quiet) {
            if (k->dump) {
                io_dump(b->data, offset, count);
            }
            io_report("read", elapsed, offset, count, 1, k->csv);
        }
    }
    io_buf_free(s, b);
    return ret;
}

static const char read_help[] =
"\n"
" Reads len bytes at offset off of the open image into one buffer.\n"
"\n"
"   read -P 0x5a 0 64k        check that the first 64 KiB are all 0x5a\n"
"   read -v 512 32            print 32 bytes from offset 512 in hex\n"
"\n"
" -C  print the statistics as one comma-separated line\n"
" -P  compare every byte with the given pattern; report a mismatch and fail\n"
" -s  with -P: start comparing this many bytes into the buffer\n"
" -l  with -P: compare only this many bytes\n"
" -p  accepted and ignored (old scripts use it)\n"
" -q  print nothing but errors\n"
" -v  print the data as a hex dump\n"
"\n";

static int read_f(IoSession *s, int argc, char **argv)
{
    bool Cflag = false, qflag = false, vflag = false;
    bool Pflag = false, sflag = false, lflag = false;
    int pattern = 0, c;
    int64_t poff = 0, plen = 0, offset, count;

    optind = 0;
    while ((c = getopt(argc, argv, "CpP:qs:l:v")) != -1) {
        switch (c) {
        case 'C': Cflag = true; break;
        case 'p': break;
        case 'P':
            Pflag = true;
            pattern = io_parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q': qflag = true; break;
        case 's':
            sflag = true;
            if (!io_arg_size(optarg, &poff)) {
                return -EINVAL;
            }
            break;
        case 'l':
            lflag = true;
            if (!io_arg_size(optarg, &plen)) {
                return -EINVAL;
            }
            break;
        case 'v': vflag = true; break;
        default:
            return io_usage("read");
        }
    }
    if (optind != argc - 2 || (!Pflag && (sflag || lflag))) {
        return io_usage("read");
    }
    if (!io_arg_size(argv[optind], &offset) || !io_arg_size(argv[optind + 1], &count)) {
        return -EINVAL;
    }
    if (count > IO_MAX_REQUEST) {
        printf("length cannot exceed %" PRId64 ", given %s\n", IO_MAX_REQUEST, argv[optind + 1]);
        return -EINVAL;
    }
    if (!lflag) {
        plen = count - poff;
    }
    if (Pflag && (poff > count || plen < 0 || poff + plen > count)) {
        printf("pattern verification range exceeds end of read data\n");
        return -EINVAL;
    }

    IoBuf b;
    io_buf_new(s, &b, offset, &count, 1, IO_READ_FILL);
    int64_t start = io_now_ns();
    int ret = io_do(s, IO_READ, offset, count, &b.qiov, 0);
    int64_t elapsed = io_now_ns() - start;
    return io_read_done(s, &b, "read", ret, elapsed, offset, count,
                        &(IoReadCheck){ Pflag, pattern, poff, plen, qflag, vflag, Cflag });
}

static const char readv_help[] =
"\n"
" Reads from offset off into one buffer per length given; the lengths\n"
" add up to the request size, so \"readv 0 512 3584\" is one 4 KiB request\n"
" with a two-element I/O vector.\n"
"\n"
" -C  print the statistics as one comma-separated line\n"
" -P  compare every byte with the given pattern; report a mismatch and fail\n"
" -q  print nothing but errors\n"
" -v  print the data as a hex dump\n"
"\n";

static int readv_f(IoSession *s, int argc, char **argv)
{
    bool Cflag = false, qflag = false, vflag = false, Pflag = false;
    int pattern = 0, c;
    int64_t offset, total;

    optind = 0;
    while ((c = getopt(argc, argv, "CP:qv")) != -1) {
        switch (c) {
        case 'C': Cflag = true; break;
        case 'P':
            Pflag = true;
            pattern = io_parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q': qflag = true; break;
        case 'v': vflag = true; break;
        default:
            return io_usage("readv");
        }
    }
    IoBuf b;
    int err = io_vector_operands(s, argc, argv, "readv", IO_READ_FILL, &offset, &total, &b);
    if (err < 0) {
        return err;
    }
    int64_t start = io_now_ns();
    int ret = io_do(s, IO_READ, offset, total, &b.qiov, 0);
    int64_t elapsed = io_now_ns() - start;
    return io_read_done(s, &b, "readv", ret, elapsed, offset, total,
                        &(IoReadCheck){ Pflag, pattern, 0, total, qflag, vflag, Cflag });
}

/* ---- write / writev ------------------------------------------------------------- */

static const char write_help[] =
"\n"
" Writes len bytes at offset off of the open image. The data is the byte\n"
" 0xcd unless -P gives another; -z writes zeroes without a data buffer.\n"
"\n"
"   write -P 0x5a 0 64k       fill the first 64 KiB with 0x5a\n"
"   write -z -u 1M 1M         zero 1 MiB, letting the file deallocate it\n"
"\n"
" -C  print the statistics as one comma-separated line\n"
" -f  Force Unit Access: durable when it completes (also -F)\n"
" -n  with -z: fail with ENOTSUP rather than write a buffer of zeroes\n"
" -p  accepted and ignored (old scripts use it)\n"
" -P  the byte to write\n"
" -q  print nothing but errors\n"
" -u  with -z: the range may be deallocated\n"
" -z  write zeroes (bdrv_pwrite_zeroes)\n"
"\n";

static int write_f(IoSession *s, int argc, char **argv)
{
    bool Cflag = false, qflag = false, zflag = false, Pflag = false;
    bool uflag = false, nflag = false;
    BdrvRequestFlags flags = 0;
    int pattern = IO_WRITE_FILL, c;
    int64_t offset, count;

    optind = 0;
    while ((c = getopt(argc, argv, "CfFnpP:quz")) != -1) {
        switch (c) {
        case 'C': Cflag = true; break;
        case 'f': case 'F': flags |= BDRV_REQ_FUA; break;
        case 'n': nflag = true; flags |= BDRV_REQ_NO_FALLBACK; break;
        case 'p': break;
        case 'P':
            Pflag = true;
            pattern = io_parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q': qflag = true; break;
        case 'u': uflag = true; flags |= BDRV_REQ_MAY_UNMAP; break;
        case 'z': zflag = true; break;
        default:
            return io_usage("write");
        }
    }
    if (optind != argc - 2) {
        return io_usage("write");
    }
    if (zflag && Pflag) {
        printf("Only one of -z, -P, and -s can be specified at the same time\n");
        return -EINVAL;
    }
    if (uflag && !zflag) {
        printf("-u requires -z to be specified\n");
        return -EINVAL;
    }
    if (nflag && !zflag) {
        printf("-n requires -z to be specified\n");
        return -EINVAL;
    }
    if (!io_arg_size(argv[optind], &offset) || !io_arg_size(argv[optind + 1], &count)) {
        return -EINVAL;
    }
    if (!zflag && count > IO_MAX_REQUEST) {
        printf("length cannot exceed %" PRId64 ", given %s\n", IO_MAX_REQUEST, argv[optind + 1]);
        return -EINVAL;
    }

    IoBuf b = { 0 };
    int ret;
    int64_t start = io_now_ns();
    if (zflag) {
        ret = io_do(s, IO_ZEROES, offset, count, NULL, flags);
    } else {
        io_buf_new(s, &b, offset, &count, 1, pattern);
        start = io_now_ns();
        ret = io_do(s, IO_WRITE, offset, count, &b.qiov, flags);
    }
    int64_t elapsed = io_now_ns() - start;
    if (b.base) {
        io_buf_free(s, &b);
    }
    if (ret < 0) {
        printf("write failed: %s\n", strerror(-ret));
        return ret;
    }
    if (!qflag) {
        io_report("wrote", elapsed, offset, count, 1, Cflag);
    }
    return 0;
}

static const char writev_help[] =
"\n"
" Writes at offset off from one buffer per length given (one request\n"
" with an I/O vector of that many elements), all filled with the pattern.\n"
"\n"
" -C  print the statistics as one comma-separated line\n"
" -f  Force Unit Access: durable when it completes (also -F)\n"
" -P  the byte to write (default 0xcd)\n"
" -q  print nothing but errors\n"
"\n";

static int writev_f(IoSession *s, int argc, char **argv)
{
    bool Cflag = false, qflag = false;
    BdrvRequestFlags flags = 0;
    int pattern = IO_WRITE_FILL, c;
    int64_t offset, total;

    optind = 0;
    while ((c = getopt(argc, argv, "CfFP:q")) != -1) {
        switch (c) {
        case 'C': Cflag = true; break;
        case 'f': case 'F': flags |= BDRV_REQ_FUA; break;
        case 'P':
            pattern = io_parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q': qflag = true; break;
        default:
            return io_usage("writev");
        }
    }
    IoBuf b;
    int err = io_vector_operands(s, argc, argv, "writev", pattern, &offset, &total, &b);
    if (err < 0) {
        return err;
    }
    int64_t start = io_now_ns();
    int ret = io_do(s, IO_WRITE, offset, total, &b.qiov, flags);
    int64_t elapsed = io_now_ns() - start;
    io_buf_free(s, &b);
    if (ret < 0) {
        printf("writev failed: %s\n", strerror(-ret));
        return ret;
    }
    if (!qflag) {
        io_report("wrote", elapsed, offset, total, 1, Cflag);
    }
    return 0;
}

/* ---- aio_read / aio_write / aio_flush --------------------------------------------- */

typedef struct IoAioReq {
    IoSession *s;
    IoOp op;
    IoBuf buf;
    int64_t offset;
    int64_t bytes;
    int64_t start_ns;
    int pattern;
    bool Pflag, qflag, vflag, Cflag;
} IoAioReq;

static void io_aio_done(IoAioReq *req)
{
    IoSession *s = req->s;
    if (req->buf.base) {
        io_buf_free(s, &req->buf);
    }
    g_free(req);
    fflush(stdout);
    __atomic_fetch_sub(&s->inflight, 1, __ATOMIC_SEQ_CST);
    aio_wait_kick();
}

static void io_aio_read_cb(void *opaque, int ret)
{
    IoAioReq *req = opaque;
    int64_t elapsed = io_now_ns() - req->start_ns;

    io_trace(req->s, "rbio_complete", "read", req->offset, req->bytes, ret, true);
    if (ret < 0) {
        printf("aio_read failed: %s\n", strerror(-ret));
        goto out;
    }
    if (req->Pflag && !io_pattern_ok(req->buf.data, req->bytes, req->pattern)) {
        printf("Pattern verification failed at offset %" PRId64 ", %" PRId64 " bytes\n",
               req->offset, req->bytes);
    }
    if (req->qflag) {
        goto out;
    }
    if (req->vflag) {
        io_dump(req->buf.data, req->offset, req->bytes);
    }
    io_report("read", elapsed, req->offset, req->bytes, 1, req->Cflag);
out:
    io_aio_done(req);
}

static void io_aio_write_cb(void *opaque, int ret)
{
    IoAioReq *req = opaque;
    int64_t elapsed = io_now_ns() - req->start_ns;

    io_trace(req->s, "rbio_complete", io_op_names[req->op], req->offset, req->bytes, ret, true);
    if (ret < 0) {
        printf("aio_write failed: %s\n", strerror(-ret));
    } else if (!req->qflag) {
        io_report("wrote", elapsed, req->offset, req->bytes, 1, req->Cflag);
    }
    io_aio_done(req);
}

/*
 * Range errors complete through the same callback as I/O errors, and
 * (as the block layer promises) never within the submitting call: a
 * one-shot BH delivers them.
 */
typedef struct IoAioFail {
    BlockCompletionFunc *cb;
    void *opaque;
    int ret;
} IoAioFail;

static void io_aio_fail_bh(void *opaque)
{
    IoAioFail *f = opaque;
    f->cb(f->opaque, f->ret);
    g_free(f);
}

static void io_aio_submit(IoAioReq *req, BdrvRequestFlags flags)
{
    IoSession *s = req->s;
    BlockCompletionFunc *cb = req->op == IO_READ ? io_aio_read_cb : io_aio_write_cb;
    int ret = io_check_range(s, req->offset, req->bytes);

    __atomic_fetch_add(&s->inflight, 1, __ATOMIC_SEQ_CST);
    io_trace(s, "rbio_submit", io_op_names[req->op], req->offset, req->bytes, 0, false);
    req->start_ns = io_now_ns();
    if (ret < 0 || req->bytes == 0) {
        IoAioFail *f = g_new(IoAioFail, 1);
        *f = (IoAioFail){ cb, req, ret };
        aio_bh_schedule_oneshot(bdrv_get_aio_context(s->bs), io_aio_fail_bh, f);
        return;
    }
    switch (req->op) {
    case IO_READ:
        bdrv_aio_preadv(s->bs, req->offset, &req->buf.qiov, flags, cb, req);
        break;
    case IO_WRITE:
        bdrv_aio_pwritev(s->bs, req->offset, &req->buf.qiov, flags, cb, req);
        break;
    case IO_ZEROES:
        bdrv_aio_pwrite_zeroes(s->bs, req->offset, req->bytes, flags, cb, req);
        break;
    case IO_DISCARD:
        bdrv_aio_pdiscard(s->bs, req->offset, req->bytes, cb, req);
        break;
    }
}

static const char aio_read_help[] =
"\n"
" Submits a read like readv and returns at once; the result (statistics,\n"
" pattern check, hex dump) is printed when the request completes, which\n"
" may be during a later command, \"sleep\" or \"aio_flush\". The command\n"
" itself succeeds once the request is submitted: a failed or mismatching\n"
" read is printed but does not change the exit status.\n"
"\n"
" -C  print the statistics as one comma-separated line\n"
" -P  compare every byte with the given pattern\n"
" -q  print nothing but errors\n"
" -v  print the data as a hex dump\n"
"\n";

static int aio_read_f(IoSession *s, int argc, char **argv)
{
    IoAioReq tmpl = { .s = s, .op = IO_READ };
    int c;

    optind = 0;
    while ((c = getopt(argc, argv, "CP:qv")) != -1) {
        switch (c) {
        case 'C': tmpl.Cflag = true; break;
        case 'P':
            tmpl.Pflag = true;
            tmpl.pattern = io_parse_pattern(optarg);
            if (tmpl.pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q': tmpl.qflag = true; break;
        case 'v': tmpl.vflag = true; break;
        default:
            return io_usage("aio_read");
        }
    }
    /* The buffer is built in place: an IoBuf must not be copied. */
    IoAioReq *req = g_memdup2(&tmpl, sizeof(tmpl));
    int err = io_vector_operands(s, argc, argv, "aio_read", IO_READ_FILL,
                                 &req->offset, &req->bytes, &req->buf);
    if (err < 0) {
        g_free(req);
        return err;
    }
    io_aio_submit(req, 0);
    return 0;
}

static const char aio_write_help[] =
"\n"
" Submits a write like writev and returns at once; the result is printed\n"
" when the request completes. Use aio_flush to wait for all of them. The\n"
" command succeeds once the request is submitted.\n"
"\n"
" -C  print the statistics as one comma-separated line\n"
" -f  Force Unit Access: durable when it completes (also -F)\n"
" -P  the byte to write (default 0xcd)\n"
" -q  print nothing but errors\n"
" -u  with -z: the range may be deallocated\n"
" -z  write zeroes (bdrv_aio_pwrite_zeroes); one length only\n"
"\n";

static int aio_write_f(IoSession *s, int argc, char **argv)
{
    IoAioReq tmpl = { .s = s, .op = IO_WRITE, .pattern = IO_WRITE_FILL };
    BdrvRequestFlags flags = 0;
    bool zflag = false, uflag = false;
    int c;

    optind = 0;
    while ((c = getopt(argc, argv, "CfFP:quz")) != -1) {
        switch (c) {
        case 'C': tmpl.Cflag = true; break;
        case 'f': case 'F': flags |= BDRV_REQ_FUA; break;
        case 'P':
            tmpl.Pflag = true;
            tmpl.pattern = io_parse_pattern(optarg);
            if (tmpl.pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q': tmpl.qflag = true; break;
        case 'u': uflag = true; flags |= BDRV_REQ_MAY_UNMAP; break;
        case 'z': zflag = true; break;
        default:
            return io_usage("aio_write");
        }
    }
    if (optind > argc - 2) {
        return io_usage("aio_write");
    }
    if (zflag && tmpl.Pflag) {
        printf("-z and -P cannot be specified at the same time\n");
        return -EINVAL;
    }
    if (zflag && optind != argc - 2) {
        printf("-z supports only a single length parameter\n");
        return -EINVAL;
    }
    if (uflag && !zflag) {
        printf("-u requires -z to be specified\n");
        return -EINVAL;
    }
    if (!io_arg_size(argv[optind], &tmpl.offset)) {
        return -EINVAL;
    }
    IoAioReq *req;
    if (zflag) {
        if (!io_arg_size(argv[optind + 1], &tmpl.bytes)) {
            return -EINVAL;
        }
        tmpl.op = IO_ZEROES;
        req = g_memdup2(&tmpl, sizeof(tmpl));
    } else {
        int64_t *lens = io_parse_lengths(argv, optind + 1, argc, &tmpl.bytes);
        if (!lens) {
            return -EINVAL;
        }
        req = g_memdup2(&tmpl, sizeof(tmpl));
        io_buf_new(s, &req->buf, req->offset, lens, argc - optind - 1, tmpl.pattern);
        g_free(lens);
    }
    io_aio_submit(req, flags);
    return 0;
}

static int aio_flush_f(IoSession *s, int argc, char **argv)
{
    io_wait_aio(s);
    return 0;
}

/* ---- flush, discard, length, info, map, alloc, truncate ------------------------------ */

static int flush_f(IoSession *s, int argc, char **argv)
{
    io_trace(s, "rbio_submit", "flush", 0, 0, 0, false);
    int ret = bdrv_flush(s->bs);
    io_trace(s, "rbio_complete", "flush", 0, 0, ret, true);
    if (ret < 0) {
        printf("flush failed: %s\n", strerror(-ret));
    }
    return ret;
}

static const char discard_help[] =
"\n"
" Discards len bytes at offset off. With discard=unmap (the default, as\n"
" in qemu-io) the file deallocates the range where it can, and it reads\n"
" back as zeroes; with discard=ignore (-d ignore) the block layer drops\n"
" the request.\n"
"\n"
" -C  print the statistics as one comma-separated line\n"
" -q  print nothing but errors\n"
"\n";

static int discard_f(IoSession *s, int argc, char **argv)
{
    bool Cflag = false, qflag = false;
    int64_t offset, bytes;
    int c;

    optind = 0;
    while ((c = getopt(argc, argv, "Cq")) != -1) {
        switch (c) {
        case 'C': Cflag = true; break;
        case 'q': qflag = true; break;
        default:
            return io_usage("discard");
        }
    }
    if (optind != argc - 2) {
        return io_usage("discard");
    }
    if (!io_arg_size(argv[optind], &offset) || !io_arg_size(argv[optind + 1], &bytes)) {
        return -EINVAL;
    }
    if (bytes > IO_MAX_REQUEST) {
        printf("length cannot exceed %" PRId64 ", given %s\n", IO_MAX_REQUEST, argv[optind + 1]);
        return -EINVAL;
    }
    int64_t start = io_now_ns();
    int ret = io_do(s, IO_DISCARD, offset, bytes, NULL, 0);
    int64_t elapsed = io_now_ns() - start;
    if (ret < 0) {
        printf("discard failed: %s\n", strerror(-ret));
        return ret;
    }
    if (!qflag) {
        io_report("discard", elapsed, offset, bytes, 1, Cflag);
    }
    return 0;
}

static int length_f(IoSession *s, int argc, char **argv)
{
    char buf[64];
    int64_t len = bdrv_getlength(s->bs);
    if (len < 0) {
        printf("getlength: %s\n", strerror((int)-len));
        return (int)len;
    }
    printf("%s\n", io_fmt_size(buf, sizeof(buf), (double)len));
    return 0;
}

static int info_f(IoSession *s, int argc, char **argv)
{
    BlockNodeInfo info = { 0 };
    char buf[64];

    bdrv_query_node_info(s->bs, &info);
    printf("format name: %s\n", info.driver);
    printf("node name: %s\n", info.node_name ? info.node_name : "");
    if (info.filename) {
        printf("filename: %s\n", info.filename);
    }
    printf("virtual size: %s (%" PRId64 " bytes)\n",
           io_fmt_size(buf, sizeof(buf), (double)info.size), info.size);
    printf("read-only: %s\n", info.read_only ? "yes" : "no");
    printf("cache: direct=%s, no-flush=%s\n",
           info.cache_direct ? "on" : "off", info.cache_no_flush ? "on" : "off");
    if (info.aio) {
        printf("aio: %s (requested %s)\n", info.aio,
               info.aio_requested ? info.aio_requested : "auto");
    }
    printf("request alignment: %" PRIu32 "\n", info.request_alignment);
    printf("memory alignment: %" PRIu32 "\n", info.memory_alignment);
    bdrv_node_info_clear(&info);
    return 0;
}

static void io_print_map_line(int64_t offset, int64_t bytes, bool allocated)
{
    char sbuf[64], obuf[64];
    printf("%s (0x%" PRIx64 ") bytes %s allocated at offset %s (0x%" PRIx64 ")\n",
           io_fmt_size(sbuf, sizeof(sbuf), (double)bytes), (uint64_t)bytes,
           allocated ? "   " : "not", io_fmt_size(obuf, sizeof(obuf), (double)offset),
           (uint64_t)offset);
}

/* "Allocated" means the protocol stores data there (BDRV_BLOCK_DATA): holes are not. */
static int map_f(IoSession *s, int argc, char **argv)
{
    int64_t len = bdrv_getlength(s->bs);
    int64_t offset = 0, run_start = 0;
    bool run_alloc = false;

    if (len < 0) {
        printf("could not get image length: %s\n", strerror((int)-len));
        return (int)len;
    }
    while (offset < len) {
        int64_t pnum = 0;
        int status = 0;
        int ret = bdrv_block_status(s->bs, offset, len - offset, &pnum, &status);
        if (ret < 0) {
            printf("block status failed: %s\n", strerror(-ret));
            return ret;
        }
        if (pnum <= 0) {
            printf("block status made no progress at offset %" PRId64 "\n", offset);
            return -EIO;
        }
        bool alloc = status & BDRV_BLOCK_DATA;
        if (offset > run_start && alloc != run_alloc) {
            io_print_map_line(run_start, offset - run_start, run_alloc);
            run_start = offset;
        }
        run_alloc = alloc;
        offset += pnum;
    }
    if (offset > run_start) {
        io_print_map_line(run_start, offset - run_start, run_alloc);
    }
    return 0;
}

static int alloc_f(IoSession *s, int argc, char **argv)
{
    int64_t offset, count = 512, done = 0, allocated = 0;
    char buf[64];

    if (!io_arg_size(argv[1], &offset)) {
        return -EINVAL;
    }
    if (argc == 3 && !io_arg_size(argv[2], &count)) {
        return -EINVAL;
    }
    int ret = io_check_range(s, offset, count);
    while (ret == 0 && done < count) {
        int64_t pnum = 0;
        int status = 0;
        ret = bdrv_block_status(s->bs, offset + done, count - done, &pnum, &status);
        if (ret == 0 && pnum <= 0) {
            ret = -EIO;
        }
        if (ret == 0) {
            pnum = pnum < count - done ? pnum : count - done;
            if (status & BDRV_BLOCK_DATA) {
                allocated += pnum;
            }
            done += pnum;
        }
    }
    if (ret < 0) {
        printf("alloc failed: %s\n", strerror(-ret));
        return ret;
    }
    printf("%" PRId64 "/%" PRId64 " bytes %sallocated at offset %s\n", allocated, count,
           allocated ? "" : "not ", io_fmt_size(buf, sizeof(buf), (double)offset));
    return 0;
}

static int truncate_f(IoSession *s, int argc, char **argv)
{
    const char *prealloc = "off";
    int64_t offset;
    int c;
    Error *err = NULL;

    optind = 0;
    while ((c = getopt(argc, argv, "m:")) != -1) {
        switch (c) {
        case 'm':
            prealloc = optarg;
            break;
        default:
            return io_usage("truncate");
        }
    }
    if (optind != argc - 1) {
        return io_usage("truncate");
    }
    if (!io_arg_size(argv[optind], &offset)) {
        return -EINVAL;
    }
    int ret = bdrv_truncate(s->bs, offset, false, prealloc, &err);
    if (ret < 0) {
        error_report_err(err);
    }
    return ret;
}

/* ---- open / close / reopen -------------------------------------------------------- */

static const char open_help[] =
"\n"
" Opens an image when none is open. A path is opened as a -drive (raw\n"
" over a file node); -o alone takes a full options string (keyval or JSON),\n"
" as --image-opts does. Settings not given here come from the command\n"
" line (-t, -i, -d, -o).\n"
"\n"
"   open -r -t none disk.img\n"
"   open -o driver=file,filename=disk.img,aio=io_uring\n"
"\n"
" -r  read-only\n"
" -n  O_DIRECT: short for -t none\n"
" -U  force-share\n"
" -i  engine: threads, native, io_uring or auto\n"
" -t  cache mode: none, writeback, writethrough, directsync or unsafe\n"
" -d  discard mode: ignore or unmap\n"
" -o  options for the image (with a path: added to the file node's)\n"
"\n";

static IoOpenArgs io_defaults;

static int open_f(IoSession *s, int argc, char **argv)
{
    IoOpenArgs args = io_defaults;
    const char *extra = NULL;
    Error *err = NULL;
    int c;

    args.read_only = false;
    args.image_opts = false;
    optind = 0;
    while ((c = getopt(argc, argv, "rnUt:i:d:o:")) != -1) {
        switch (c) {
        case 'r': args.read_only = true; break;
        case 'n': args.cache = "none"; break;
        case 'U': args.force_share = true; break;
        case 't': args.cache = optarg; break;
        case 'i': args.aio = optarg; break;
        case 'd': args.discard = optarg; break;
        case 'o': extra = optarg; break;
        default:
            return io_usage("open");
        }
    }
    if (s->bs) {
        error_report("file open already, try 'help close'");
        return -EBUSY;
    }
    if (optind == argc - 1) {
        /* Extra options for this file merge with the command line's. */
        g_autofree char *merged = NULL;
        if (extra) {
            merged = args.extra ? g_strconcat(args.extra, ",", extra, NULL) : g_strdup(extra);
            args.extra = merged;
        }
        int ret = io_open_image(s, argv[optind], &args, &err);
        if (ret < 0) {
            error_report_err(err);
        }
        return ret;
    }
    if (optind == argc && extra) {
        args.image_opts = true;
        int ret = io_open_image(s, extra, &args, &err);
        if (ret < 0) {
            error_report_err(err);
        }
        return ret;
    }
    return io_usage("open");
}

static int close_f(IoSession *s, int argc, char **argv)
{
    io_close_image(s);
    return 0;
}

static const char reopen_help[] =
"\n"
" Changes options of the open image; outstanding requests finish first.\n"
"\n"
"   reopen -r                 make the image read-only\n"
"   reopen -c none            switch to O_DIRECT\n"
"\n"
" -r  read-only\n"
" -w  read-write\n"
" -c  cache mode: none, writeback, writethrough, directsync or unsafe\n"
" -o  options to change (keyval), e.g. cache.no-flush=on\n"
"\n";

static int reopen_f(IoSession *s, int argc, char **argv)
{
    JsonObject *changes = json_object_new();
    Error *err = NULL;
    bool rflag = false, wflag = false;
    int ret = -EINVAL, c;

    optind = 0;
    while ((c = getopt(argc, argv, "c:o:rw")) != -1) {
        switch (c) {
        case 'c': {
            bool direct, no_flush;
            if (!io_cache_mode(optarg, &direct, &no_flush)) {
                error_report("Invalid cache option: %s", optarg);
                goto out;
            }
            JsonObject *cache = io_child_object(changes, "cache");
            json_object_set_boolean_member(cache, "direct", direct);
            json_object_set_boolean_member(cache, "no-flush", no_flush);
            break;
        }
        case 'o': {
            JsonObject *opts = keyval_parse(optarg, NULL, &err);
            if (!opts) {
                error_report_err(err);
                goto out;
            }
            /* bdrv_reopen() takes keyval strings as they are. */
            GList *members = json_object_get_members(opts);
            for (GList *l = members; l; l = l->next) {
                json_object_set_member(changes, l->data,
                                       json_node_copy(json_object_get_member(opts, l->data)));
            }
            g_list_free(members);
            json_object_unref(opts);
            break;
        }
        case 'r': rflag = true; break;
        case 'w': wflag = true; break;
        default:
            io_usage("reopen");
            goto out;
        }
    }
    if (optind != argc) {
        io_usage("reopen");
        goto out;
    }
    if (rflag && wflag) {
        error_report("Cannot set both -r and -w");
        goto out;
    }
    if (rflag || wflag) {
        json_object_set_boolean_member(changes, "read-only", rflag);
    }
    ret = bdrv_reopen(s->bs, changes, &err);
    if (ret < 0) {
        error_report_err(err);
    }
out:
    json_object_unref(changes);
    return ret;
}

/* ---- sleep, help, quit ------------------------------------------------------------- */

static void io_sleep_done(void *opaque)
{
    *(bool *)opaque = true;
}

/* Sleeps while the main loop runs, so that aio completions are printed meanwhile. */
static int sleep_f(IoSession *s, int argc, char **argv)
{
    char *end;
    errno = 0;
    long ms = strtol(argv[1], &end, 10);
    if (errno || end == argv[1] || *end || ms < 0) {
        printf("%s is not a valid number\n", argv[1]);
        return -EINVAL;
    }
    AioContext *ctx = aio_context_main();
    AioTimer timer;
    bool done = false;
    aio_timer_init(&timer, ctx, AIO_CLOCK_MONOTONIC, io_sleep_done, &done);
    aio_timer_mod_ns(&timer, io_now_ns() + ms * 1000000LL);
    while (!done) {
        aio_poll(ctx, true);
    }
    return 0;
}

static void io_help_one(const IoCmd *ct)
{
    if (ct->args) {
        printf("%s %s -- %s\n", ct->name, ct->args, ct->oneline);
    } else {
        printf("%s -- %s\n", ct->name, ct->oneline);
    }
}

static int help_f(IoSession *s, int argc, char **argv);

static int quit_f(IoSession *s, int argc, char **argv)
{
    s->quit = true;
    return 0;
}

static const IoCmd io_cmds[] = {
    { "aio_flush", NULL, aio_flush_f, 0, 0, IO_CMD_NEEDS_IMAGE, NULL,
      "waits until every aio request has completed", NULL },
    { "aio_read", NULL, aio_read_f, 1, -1, IO_CMD_NEEDS_IMAGE,
      "[-Cqv] [-P pattern] off len [len..]", "starts a read and prints its result when it completes",
      aio_read_help },
    { "aio_write", NULL, aio_write_f, 1, -1, IO_CMD_NEEDS_IMAGE,
      "[-Cfquz] [-P pattern] off len [len..]", "starts a write and prints its result when it completes",
      aio_write_help },
    { "alloc", NULL, alloc_f, 1, 2, IO_CMD_NEEDS_IMAGE, "offset [count]",
      "tells how much of a range stores data", NULL },
    { "close", "c", close_f, 0, 0, IO_CMD_NEEDS_IMAGE | IO_CMD_MAIN_THREAD, NULL,
      "closes the image", NULL },
    { "discard", NULL, discard_f, 2, -1, IO_CMD_NEEDS_IMAGE, "[-Cq] off len",
      "discards a range of the image", discard_help },
    { "flush", NULL, flush_f, 0, 0, IO_CMD_NEEDS_IMAGE, NULL,
      "makes completed writes durable", NULL },
    { "help", "?", help_f, 0, 1, IO_CMD_MAIN_THREAD, "[command]",
      "lists the commands, or explains one", NULL },
    { "info", "i", info_f, 0, 0, IO_CMD_NEEDS_IMAGE, NULL,
      "shows the image's driver, size, cache and engine", NULL },
    { "length", "l", length_f, 0, 0, IO_CMD_NEEDS_IMAGE, NULL,
      "prints the image size", NULL },
    { "map", NULL, map_f, 0, 0, IO_CMD_NEEDS_IMAGE, NULL,
      "lists the runs of stored data and holes", NULL },
    { "open", "o", open_f, 1, -1, IO_CMD_MAIN_THREAD,
      "[-rnU] [-t cache] [-i aio] [-d discard] [-o options] [path]",
      "opens an image", open_help },
    { "quit", "q", quit_f, 0, 0, IO_CMD_MAIN_THREAD, NULL, "leaves ringblk-io", NULL },
    { "read", "r", read_f, 2, -1, IO_CMD_NEEDS_IMAGE,
      "[-Cqv] [-P pattern [-s off] [-l len]] off len",
      "reads a range of the image", read_help },
    { "readv", NULL, readv_f, 2, -1, IO_CMD_NEEDS_IMAGE, "[-Cqv] [-P pattern] off len [len..]",
      "reads a range into several buffers", readv_help },
    { "reopen", NULL, reopen_f, 0, -1, IO_CMD_NEEDS_IMAGE | IO_CMD_MAIN_THREAD,
      "[(-r|-w)] [-c cache] [-o options]", "changes options of the open image", reopen_help },
    { "sleep", NULL, sleep_f, 1, 1, IO_CMD_MAIN_THREAD, "ms",
      "waits that many milliseconds while requests complete", NULL },
    { "truncate", "t", truncate_f, 1, 3, IO_CMD_NEEDS_IMAGE, "[-m prealloc_mode] off",
      "grows or shrinks the image to off bytes", NULL },
    { "write", "w", write_f, 2, -1, IO_CMD_NEEDS_IMAGE,
      "[-Cfnquz] [-P pattern] off len", "writes a range of the image",
      write_help },
    { "writev", NULL, writev_f, 2, -1, IO_CMD_NEEDS_IMAGE, "[-Cfq] [-P pattern] off len [len..]",
      "writes a range from several buffers", writev_help },
};

static const IoCmd *io_find_cmd(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(io_cmds); i++) {
        if (!strcmp(io_cmds[i].name, name) ||
            (io_cmds[i].altname && !strcmp(io_cmds[i].altname, name))) {
            return &io_cmds[i];
        }
    }
    return NULL;
}

void io_help_all(void)
{
    for (size_t i = 0; i < G_N_ELEMENTS(io_cmds); i++) {
        io_help_one(&io_cmds[i]);
    }
    printf("\nUse 'help commandname' for extended help.\n");
}

static int help_f(IoSession *s, int argc, char **argv)
{
    if (argc == 1) {
        io_help_all();
        return 0;
    }
    const IoCmd *ct = io_find_cmd(argv[1]);
    if (!ct) {
        printf("command %s not found\n", argv[1]);
        return 0;
    }
    io_help_one(ct);
    if (ct->help) {
        fputs(ct->help, stdout);
    }
    return 0;
}

/* ---- Sessions and dispatch ------------------------------------------------------------ */

void io_session_init(IoSession *s, AioContext *home_ctx)
{
    memset(s, 0, sizeof(*s));
    s->home_ctx = home_ctx;
}

void io_set_open_defaults(const IoOpenArgs *args)
{
    io_defaults = *args;
}

static void io_wait_aio_bh(void *opaque)
{
    IoSession *s = opaque;
    AioContext *ctx = bdrv_get_aio_context(s->bs);
    AIO_WAIT_WHILE(ctx, __atomic_load_n(&s->inflight, __ATOMIC_SEQ_CST) > 0);
}

void io_wait_aio(IoSession *s)
{
    if (!s->bs) {
        return;
    }
    AioContext *ctx = bdrv_get_aio_context(s->bs);
    if (aio_context_in_thread(ctx)) {
        io_wait_aio_bh(s);
    } else {
        AIO_WAIT_WHILE(ctx, __atomic_load_n(&s->inflight, __ATOMIC_SEQ_CST) > 0);
    }
}

typedef struct IoCall {
    IoSession *s;
    const IoCmd *ct;
    int argc;
    char **argv;
    int ret;
} IoCall;

static void io_call_bh(void *opaque)
{
    IoCall *call = opaque;
    call->ret = call->ct->func(call->s, call->argc, call->argv);
    fflush(stdout);
}

int io_run_command(IoSession *s, const char *line)
{
    char **argv = NULL;
    int argc = 0;
    int ret;

    /* Words are separated by spaces and tabs; there is no quoting (as qemu-io). */
    char **words = g_strsplit_set(line, " \t\r\n", -1);
    argv = g_new0(char *, g_strv_length(words) + 1);
    for (char **w = words; *w; w++) {
        if (**w) {
            argv[argc++] = *w;
        }
    }
    if (argc == 0) {
        ret = 0;
        goto out;
    }
    const IoCmd *ct = io_find_cmd(argv[0]);
    if (!ct) {
        fflush(stdout);
        fprintf(stderr, "command \"%s\" not found\n", argv[0]);
        ret = -EINVAL;
        goto out;
    }
    int nargs = argc - 1;
    if (nargs < ct->argmin || (ct->argmax != -1 && nargs > ct->argmax)) {
        fflush(stdout);
        if (ct->argmax == -1) {
            fprintf(stderr, "bad argument count %d to %s, expected at least %d arguments\n",
                    nargs, ct->name, ct->argmin);
        } else if (ct->argmin == ct->argmax) {
            fprintf(stderr, "bad argument count %d to %s, expected %d arguments\n",
                    nargs, ct->name, ct->argmin);
        } else {
            fprintf(stderr, "bad argument count %d to %s, expected between %d and %d arguments\n",
                    nargs, ct->name, ct->argmin, ct->argmax);
        }
        ret = -EINVAL;
        goto out;
    }
    if ((ct->flags & IO_CMD_NEEDS_IMAGE) && !s->bs) {
        fflush(stdout);
        fprintf(stderr, "no file open, try 'help open'\n");
        ret = -EINVAL;
        goto out;
    }
    /* getopt's messages name the command (argv[0]), as qemu-io's do. */
    IoCall call = { s, ct, argc, argv, 0 };
    AioContext *ctx = s->bs ? bdrv_get_aio_context(s->bs) : NULL;
    if ((ct->flags & IO_CMD_MAIN_THREAD) || !ctx || aio_context_in_thread(ctx)) {
        io_call_bh(&call);
    } else {
        aio_wait_bh_oneshot(ctx, io_call_bh, &call);
    }
    ret = call.ret;
out:
    fflush(stdout);
    g_free(argv);
    g_strfreev(words);
    return ret;
}
