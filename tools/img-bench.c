/*
 * ringblk-img bench: qemu-img bench's request loop over the block layer.
 *
 * Design: the loop must cost nothing next to the block layer it measures.
 * A fixed array of request slots, each with a buffer from bdrv_blockalign()
 * (so fixed buffers apply), is allocated before the clock starts. A
 * completion callback refills its own slot at once; refills made while
 * aio_poll() dispatches a batch of completions are plugged, and a BH
 * unplugs at the end of that aio_poll() pass, so one burst reaches the
 * engine as one submission, from inside the loop as a device model's
 * would (an engine may then leave it to the loop's next wait). No
 * allocation, lock or syscall of our own per request; the
 * clock is read once per request, and only when latency is recorded
 * (--output=json): the completion time of one request is the submission
 * time of the refill that follows it in the same slot.
 *
 * Beyond qemu-img: --random offsets (deterministic, --seed), --rw-mix, file
 * driver options (--engine-opts fixed-files=on,...), and --output=json with
 * IOPS, bandwidth, latency percentiles and CPU time per I/O.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "img-util.h"
#include "img.h"

enum {
    OPT_FLUSH_INTERVAL = 256,
    OPT_NO_DRAIN,
    OPT_PATTERN,
    OPT_IMAGE_OPTS,
    OPT_RANDOM,
    OPT_SEED,
    OPT_RW_MIX,
    OPT_ENGINE_OPTS,
    OPT_OUTPUT,
};

typedef struct Bench Bench;

/* The most memory the request buffers may take (depth x size). */
#define BENCH_MAX_BUFFER_BYTES (4ULL << 30)

typedef struct BenchSlot {
    Bench *b;
    IOVector rqiov;           /* over buf; set up once, the block layer only reads it */
    IOVector wqiov;           /* over the shared write pattern */
    uint8_t *buf;             /* read buffer of this slot */
    int64_t start_ns;         /* submission time, when latency is recorded */
} BenchSlot;

struct Bench {
    BlockDriverState *bs;
    AioContext *ctx;

    /* Workload. */
    uint64_t count;
    int depth;
    int nslots;               /* request slots: min(depth, count) */
    int64_t bufsize;
    int64_t offset;           /* next sequential offset */
    int64_t start_offset;
    int64_t step;
    int64_t image_size;
    int read_pct;             /* 100: reads only, 0: writes only */
    bool random;
    uint64_t nblocks;         /* random: bufsize-aligned positions from start_offset */
    ImgRand rng;
    uint64_t flush_interval;  /* 0: never */
    bool drain_on_flush;

    /* State. */
    BenchSlot *slots;
    BenchSlot **idle;         /* slots waiting for a flush to finish */
    int nidle;
    uint8_t *wbuf;            /* the write pattern; writes only read it, so slots share it */
    uint64_t submitted;
    uint64_t completed;
    uint64_t reads, writes;
    uint64_t since_flush;
    bool flush_waiting;       /* drain mode: no refills until the flush completed */
    bool flush_in_flight;
    int in_flight;
    bool plugged;
    AioBH *unplug_bh;         /* ends the plug in the aio_poll() pass that began it */
    int ret;                  /* first error */

    bool record_latency;
    ImgLatencyHist hist;
};

void img_bench_usage(void)
{
    printf("usage: ringblk-img bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval]\n"
           "                         [-i aio] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q]\n"
           "                         [-s buffer_size] [-S step_size] [-t cache] [-w] [-U] [--image-opts]\n"
           "                         [--random] [--seed=N] [--rw-mix=PCT] [--engine-opts=opts]\n"
           "                         [--output=human|json] filename\n"
           "\n"
           "Sends count requests of buffer_size bytes, depth of them in flight, and reports the time.\n"
           "  -c count              requests in total (default 75000)\n"
           "  -d depth              requests in flight (default 64)\n"
           "  -s buffer_size        bytes per request (default 4k)\n"
           "  -o offset             first offset (default 0)\n"
           "  -S step_size          offset step between requests (default buffer_size); wraps at the end\n"
           "  -w                    write instead of read (--pattern=byte fills the buffers, default 0)\n"
           "  --flush-interval=N    writes: flush after every N requests (N >= depth)\n"
           "  --no-drain            with --flush-interval: flush without waiting for requests in flight\n"
           "  -t cache              cache mode (none, writeback (default), writethrough, directsync, unsafe)\n"
           "  -n                    no host cache: the same as -t none\n"
           "  -i aio                engine: threads, native, io_uring, inline, auto (default)\n"
           "  -q                    accepted for compatibility (qemu-img bench prints its lines anyway)\n"
           "  -U                    force-share: do not take the image lock\n"
           "  --image-opts          filename is an options string (driver=null-co,size=1G)\n"
           "beyond qemu-img:\n"
           "  --random              random buffer_size-aligned offsets from offset to the end\n"
           "  --seed=N              seed of the random offsets and the read/write mix (default 1)\n"
           "  --rw-mix=PCT          PCT%% reads, the rest writes, chosen per request\n"
           "  --engine-opts=opts    file driver options, e.g. fixed-files=on,fixed-buffers=on,sqpoll=on,\n"
           "                        aio-queue-depth=N, sq-thread-idle=MS, sq-thread-cpu=N, iopoll=on,\n"
           "                        share-ring=on\n"
           "  --output=json         one JSON object: iops, bandwidth, latency percentiles (ns),\n"
           "                        CPU time per I/O (ns), the engine used\n");
}

/* ---- The request loop ------------------------------------------------------------- */

static void bench_cb(void *opaque, int ret);

static void bench_unplug(Bench *b)
{
    b->plugged = false;
    aio_bh_cancel(b->unplug_bh);
    bdrv_io_unplug(b->bs);
}

static void bench_unplug_bh(void *opaque)
{
    bench_unplug(opaque);
}

/* Runs in a completion callback: the BH unplugs once this pass's callbacks are done. */
static void bench_plug(Bench *b)
{
    bdrv_io_plug(b->bs);
    b->plugged = true;
    aio_bh_schedule(b->unplug_bh);
}

static inline int64_t bench_next_offset(Bench *b)
{
    if (b->random) {
        return b->start_offset + (int64_t)img_rand_below(&b->rng, b->nblocks) * b->bufsize;
    }
    int64_t off = b->offset;
    b->offset += b->step;
    /* Wrap to the start when the next request would not fit. */
    if (b->offset > b->image_size - b->bufsize) {
        b->offset = b->start_offset;
    }
    return off;
}

static inline void bench_submit(Bench *b, BenchSlot *s, int64_t now)
{
    int64_t off = bench_next_offset(b);
    bool write = b->read_pct == 0 ||
                 (b->read_pct < 100 && img_rand_below(&b->rng, 100) >= (uint64_t)b->read_pct);
    s->start_ns = now;
    b->submitted++;
    b->since_flush++;
    b->in_flight++;
    if (write) {
        b->writes++;
        bdrv_aio_pwritev(b->bs, off, &s->wqiov, 0, bench_cb, s);
    } else {
        b->reads++;
        bdrv_aio_preadv(b->bs, off, &s->rqiov, 0, bench_cb, s);
    }
}

/*
 * Latency timestamps: inside the loop's dispatch, the time it began
 * (completions reaped together, and what their callbacks submit, share one
 * clock read, as in the block layer's accounting); the clock otherwise.
 * A completion is timed when the loop sees it, which is what a user of the
 * loop can observe.
 */
static inline int64_t bench_now_ns(void)
{
    int64_t now = aio_dispatch_time_ns();

    return now ? now : aio_clock_get_ns(AIO_CLOCK_MONOTONIC);
}

static void bench_flush_cb(void *opaque, int ret)
{
    Bench *b = opaque;
    b->flush_in_flight = false;
    if (ret < 0 && b->ret == 0) {
        b->ret = ret;
    }
    if (b->flush_waiting) {
        b->flush_waiting = false;
        int64_t now = b->record_latency ? bench_now_ns() : 0;
        if (!b->plugged) {
            bench_plug(b);
        }
        while (b->nidle > 0 && b->submitted < b->count && b->ret == 0) {
            bench_submit(b, b->idle[--b->nidle], now);
        }
    }
}

static void bench_start_flush(Bench *b)
{
    b->since_flush = 0;
    b->flush_in_flight = true;
    bdrv_aio_flush(b->bs, bench_flush_cb, b);
}

static void bench_cb(void *opaque, int ret)
{
    BenchSlot *s = opaque;
    Bench *b = s->b;
    int64_t now = 0;

    b->in_flight--;
    b->completed++;
    if (b->record_latency) {
        now = bench_now_ns();
        img_hist_record(&b->hist, (uint64_t)(now - s->start_ns));
    }
    if (ret < 0) {
        if (b->ret == 0) {
            b->ret = ret;
        }
        return;
    }
    if (b->ret < 0 || b->submitted >= b->count) {
        return;
    }
    if (b->flush_interval) {
        if (b->since_flush >= b->flush_interval && !b->flush_in_flight && !b->flush_waiting) {
            if (b->drain_on_flush) {
                /* Park this slot; the flush goes out once everything in flight completed. */
                b->flush_waiting = true;
            } else {
                bench_start_flush(b);
            }
        }
        if (b->flush_waiting) {
            b->idle[b->nidle++] = s;
            if (b->in_flight == 0 && !b->flush_in_flight) {
                bench_start_flush(b);
            }
            return;
        }
    }
    /* At depth 1 a burst is one request: plugging would only cost. */
    if (!b->plugged && b->depth > 1) {
        bench_plug(b);
    }
    bench_submit(b, s, now);
}

static void bench_run(Bench *b)
{
    int64_t now = b->record_latency ? aio_clock_get_ns(AIO_CLOCK_MONOTONIC) : 0;
    bdrv_io_plug(b->bs);
    for (int i = 0; i < b->nslots && b->submitted < b->count; i++) {
        bench_submit(b, &b->slots[i], now);
    }
    bdrv_io_unplug(b->bs);

    while (b->in_flight > 0 || b->flush_in_flight ||
           (b->ret == 0 && b->submitted < b->count)) {
        aio_poll(b->ctx, true);
        if (b->plugged) {
            bench_unplug(b);   /* the BH had no pass left to run in */
        }
    }
}

/* ---- Output ------------------------------------------------------------------------- */

static double tv_seconds(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void print_json(Bench *b, double secs, const struct rusage *r0, const struct rusage *r1,
                       uint64_t seed)
{
    BlockNodeInfo ni;
    bdrv_query_node_info(b->bs, &ni);
    double user = tv_seconds(r1->ru_utime) - tv_seconds(r0->ru_utime);
    double sys = tv_seconds(r1->ru_stime) - tv_seconds(r0->ru_stime);
    uint64_t n = b->completed;
    double iops = secs > 0 ? (double)n / secs : 0;
    double per_io = n ? 1e9 / (double)n : 0;

    GString *s = g_string_new("{\n");
    g_string_append_printf(s,
        "    \"requests\": %" PRIu64 ",\n"
        "    \"reads\": %" PRIu64 ",\n"
        "    \"writes\": %" PRIu64 ",\n"
        "    \"bytes-per-request\": %" PRId64 ",\n"
        "    \"depth\": %d,\n"
        "    \"offsets\": \"%s\",\n",
        n, b->reads, b->writes, b->bufsize, b->depth, b->random ? "random" : "sequential");
    if (b->random || (b->read_pct > 0 && b->read_pct < 100)) {
        g_string_append_printf(s, "    \"seed\": %" PRIu64 ",\n", seed);
    }
    g_string_append_printf(s,
        "    \"seconds\": %.6f,\n"
        "    \"iops\": %.1f,\n"
        "    \"bandwidth-bytes-per-second\": %.0f,\n",
        secs, iops, iops * (double)b->bufsize);
    g_string_append_printf(s,
        "    \"latency-ns\": {\n"
        "        \"min\": %" PRIu64 ",\n"
        "        \"mean\": %" PRIu64 ",\n"
        "        \"p50\": %" PRIu64 ",\n"
        "        \"p99\": %" PRIu64 ",\n"
        "        \"p99.9\": %" PRIu64 ",\n"
        "        \"max\": %" PRIu64 "\n"
        "    },\n",
        b->hist.count ? b->hist.min_ns : 0,
        b->hist.count ? b->hist.sum_ns / b->hist.count : 0,
        img_hist_percentile(&b->hist, 50), img_hist_percentile(&b->hist, 99),
        img_hist_percentile(&b->hist, 99.9), b->hist.max_ns);
    g_string_append_printf(s,
        "    \"cpu\": {\n"
        "        \"user-seconds\": %.6f,\n"
        "        \"system-seconds\": %.6f,\n"
        "        \"user-ns-per-io\": %.1f,\n"
        "        \"system-ns-per-io\": %.1f,\n"
        "        \"ns-per-io\": %.1f\n"
        "    },\n",
        user, sys, user * per_io, sys * per_io, (user + sys) * per_io);
    g_string_append(s, "    \"driver\": ");
    img_json_string(s, ni.driver);
    g_string_append(s, ",\n    \"aio\": ");
    if (ni.aio) {
        img_json_string(s, ni.aio);
    } else {
        g_string_append(s, "null");
    }
    g_string_append(s, ",\n    \"aio-requested\": ");
    if (ni.aio_requested) {
        img_json_string(s, ni.aio_requested);
    } else {
        g_string_append(s, "null");
    }
    g_string_append_printf(s, ",\n    \"cache-direct\": %s,\n    \"nowait\": %s\n}\n",
                           ni.cache_direct ? "true" : "false",
                           ni.nowait > 0 ? "true" : ni.nowait == 0 ? "false" : "null");
    fputs(s->str, stdout);
    g_string_free(s, TRUE);
    bdrv_node_info_clear(&ni);
}

/* ---- Option parsing ------------------------------------------------------------------ */

int img_bench(int argc, char **argv)
{
    ImgOpenOpts o = { 0 };
    int64_t count = 75000, depth = 64, bufsize = 4096, offset = 0, step = 0;
    int64_t flush_interval = 0, pattern = 0, read_pct = -1, seed = 1;
    bool write = false, drain = true, random_offsets = false, json = false;
    bool nocache = false;
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "flush-interval", required_argument, NULL, OPT_FLUSH_INTERVAL },
        { "no-drain", no_argument, NULL, OPT_NO_DRAIN },
        { "pattern", required_argument, NULL, OPT_PATTERN },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "force-share", no_argument, NULL, 'U' },
        { "random", no_argument, NULL, OPT_RANDOM },
        { "seed", required_argument, NULL, OPT_SEED },
        { "rw-mix", required_argument, NULL, OPT_RW_MIX },
        { "engine-opts", required_argument, NULL, OPT_ENGINE_OPTS },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, ":hc:d:f:ni:o:qs:S:t:wU", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            img_bench_usage();
            return 0;
        case 'c':
            if (!img_parse_int(optarg, 0, INT_MAX, &count)) {
                error_report("Invalid request count specified");
                return 1;
            }
            break;
        case 'd':
            if (!img_parse_int(optarg, 1, 65536, &depth)) {
                error_report("Invalid queue depth specified");
                return 1;
            }
            break;
        case 'f': o.fmt = optarg; break;
        case 'n': nocache = true; break;
        case 'i':
            if (!img_check_aio_mode(optarg)) {
                return 1;
            }
            o.aio = optarg;
            break;
        case 'o':
            if (!img_cvtnum_full("offset", optarg, 0, INT64_MAX, &offset)) {
                return 1;
            }
            break;
        case 'q': break;
        case 's':
            if (!img_cvtnum_full("buffer size", optarg, 1, INT_MAX, &bufsize)) {
                return 1;
            }
            break;
        case 'S':
            if (!img_cvtnum_full("step_size", optarg, 0, INT_MAX, &step)) {
                return 1;
            }
            break;
        case 't':
            if (!img_check_cache_mode(optarg, false)) {
                return 1;
            }
            o.cache = optarg;
            break;
        case 'w': write = true; break;
        case 'U': o.force_share = true; break;
        case OPT_FLUSH_INTERVAL:
            if (!img_parse_int(optarg, 0, INT_MAX, &flush_interval)) {
                error_report("Invalid flush interval specified");
                return 1;
            }
            break;
        case OPT_NO_DRAIN: drain = false; break;
        case OPT_PATTERN:
            if (!img_parse_int(optarg, 0, 0xff, &pattern)) {
                /* qemu-img takes decimal; hex is handy too. */
                char *end;
                errno = 0;
                long v = strtol(optarg, &end, 0);
                if (errno || *end || !*optarg || v < 0 || v > 0xff) {
                    error_report("Invalid pattern byte specified");
                    return 1;
                }
                pattern = v;
            }
            break;
        case OPT_IMAGE_OPTS: o.image_opts = true; break;
        case OPT_RANDOM: random_offsets = true; break;
        case OPT_SEED:
            if (!img_parse_int(optarg, 0, INT64_MAX, &seed)) {
                error_report("Invalid seed specified");
                return 1;
            }
            break;
        case OPT_RW_MIX:
            if (!img_parse_int(optarg, 0, 100, &read_pct)) {
                error_report("Invalid read percentage for --rw-mix specified (0 to 100)");
                return 1;
            }
            break;
        case OPT_ENGINE_OPTS: o.engine_opts = optarg; break;
        case OPT_OUTPUT:
            if (!strcmp(optarg, "json")) {
                json = true;
            } else if (strcmp(optarg, "human")) {
                error_report("--output must be used with human or json as argument.");
                return 1;
            }
            break;
        case ':':
            error_report("option '%s' needs an argument", argv[optind - 1]);
            return 1;
        default:
            img_bad_option(argv);
            return 1;
        }
    }
    if (optind != argc - 1) {
        error_report("Expecting one image file name");
        img_print_help_hint();
        return 1;
    }
    if (read_pct >= 0 && write) {
        error_report("-w and --rw-mix are mutually exclusive");
        return 1;
    }
    if (read_pct < 0) {
        read_pct = write ? 0 : 100;
    }
    bool any_write = read_pct < 100;
    if (flush_interval && !any_write) {
        error_report("--flush-interval is only available in write tests");
        return 1;
    }
    if (flush_interval && flush_interval < depth) {
        error_report("Flush interval can't be smaller than depth");
        return 1;
    }
    if (!drain && !flush_interval) {
        error_report("--no-drain only makes sense with --flush-interval");
        return 1;
    }
    if (o.image_opts && (o.fmt || o.cache || o.aio || nocache)) {
        error_report("--image-opts cannot be combined with -f, -t, -n or -i: "
                     "give driver, cache.direct and aio in the options string");
        return 1;
    }
    if (o.fmt && strcmp(o.fmt, "raw")) {
        error_report("Unknown file format '%s'", o.fmt);
        return 1;
    }
    if (nocache) {
        o.cache = "none";
    }
    if (step == 0) {
        step = bufsize;
    }
    o.read_only = !any_write;

    Error *err = NULL;
    BlockDriverState *bs = img_open(argv[optind], &o, &err);
    if (!bs) {
        error_report_err(err);
        return 1;
    }

    int ret = 1;
    Bench *b = g_new0(Bench, 1);
    b->bs = bs;
    b->ctx = bdrv_get_aio_context(bs);
    b->unplug_bh = aio_bh_new(b->ctx, bench_unplug_bh, b);
    b->count = (uint64_t)count;
    b->depth = (int)depth;
    b->bufsize = bufsize;
    b->offset = b->start_offset = offset;
    b->step = step;
    b->read_pct = (int)read_pct;
    b->random = random_offsets;
    b->flush_interval = (uint64_t)flush_interval;
    b->drain_on_flush = drain;
    b->record_latency = json;
    img_hist_init(&b->hist);
    img_rand_seed(&b->rng, (uint64_t)seed);
    b->image_size = bdrv_getlength(bs);
    if (b->image_size < 0) {
        error_report("Could not get the image size: %s", g_strerror((int)-b->image_size));
        goto out;
    }
    /*
     * The first request must fit; sequential offsets wrap before a request
     * would cross the end and random ones are drawn below it, so then all fit.
     * Checked before any buffer is allocated: a request larger than the image
     * must not cost depth times its size in memory first.
     */
    if (offset > b->image_size - bufsize) {
        error_report("Requests of %" PRId64 " bytes from offset %" PRId64
                     " do not fit in the image (%" PRId64 " bytes)",
                     bufsize, offset, b->image_size);
        goto out;
    }
    /* No more buffers than requests; each slot has its own, so bound the total. */
    b->nslots = (int)MIN((uint64_t)depth, (uint64_t)count);
    if ((uint64_t)b->nslots * (uint64_t)bufsize > BENCH_MAX_BUFFER_BYTES) {
        error_report("Buffers for %d requests of %" PRId64 " bytes in parallel "
                     "exceed %llu GiB; lower -d or -s", b->nslots, bufsize,
                     BENCH_MAX_BUFFER_BYTES >> 30);
        goto out;
    }
    if (random_offsets) {
        b->nblocks = (uint64_t)((b->image_size - offset - bufsize) / bufsize + 1);
    }

    /* Everything the loop needs is allocated before the clock starts. */
    b->slots = g_new0(BenchSlot, b->nslots);
    b->idle = g_new0(BenchSlot *, b->nslots);
    for (int i = 0; i < b->nslots; i++) {
        b->slots[i].b = b;
        if (read_pct > 0) {
            b->slots[i].buf = bdrv_try_blockalign(bs, (size_t)bufsize);
            if (!b->slots[i].buf) {
                goto oom;
            }
            memset(b->slots[i].buf, 0, (size_t)bufsize);
        }
    }
    if (any_write) {
        b->wbuf = bdrv_try_blockalign(bs, (size_t)bufsize);
        if (!b->wbuf) {
            goto oom;
        }
        memset(b->wbuf, (int)pattern, (size_t)bufsize);
    }
    for (int i = 0; i < b->nslots; i++) {
        iovector_init_buf(&b->slots[i].rqiov, b->slots[i].buf, (size_t)bufsize);
        iovector_init_buf(&b->slots[i].wqiov, b->wbuf, (size_t)bufsize);
    }

    if (!json) {
        const char *kind = read_pct == 100 ? "read" : read_pct == 0 ? "write" : NULL;
        if (kind) {
            printf("Sending %" PRId64 " %s requests, %" PRId64 " bytes each, %" PRId64
                   " in parallel (starting at offset %" PRId64 ", step size %" PRId64 ")\n",
                   count, kind, bufsize, depth, offset, step);
        } else {
            printf("Sending %" PRId64 " mixed requests (%" PRId64 "%% reads), %" PRId64
                   " bytes each, %" PRId64 " in parallel (starting at offset %" PRId64
                   ", step size %" PRId64 ")\n",
                   count, read_pct, bufsize, depth, offset, step);
        }
        if (flush_interval) {
            printf("Sending flush every %" PRId64 " requests\n", flush_interval);
        }
        fflush(stdout);
    }

    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    int64_t t0 = aio_clock_get_ns(AIO_CLOCK_MONOTONIC);
    bench_run(b);
    int64_t t1 = aio_clock_get_ns(AIO_CLOCK_MONOTONIC);
    getrusage(RUSAGE_SELF, &r1);

    if (b->ret < 0) {
        error_report("Failed request: %s", g_strerror(-b->ret));
        goto out;
    }
    double secs = (double)(t1 - t0) / 1e9;
    if (json) {
        print_json(b, secs, &r0, &r1, (uint64_t)seed);
    } else {
        printf("Run completed in %3.3f seconds.\n", secs);
    }
    ret = 0;
    goto out;

oom:
    error_report("Could not allocate request buffers of %" PRId64 " bytes: %s",
                 bufsize, g_strerror(ENOMEM));
out:
    if (b->slots) {
        for (int i = 0; i < b->nslots; i++) {
            if (b->slots[i].buf) {
                bdrv_blockalign_free(bs, b->slots[i].buf, (size_t)bufsize);
            }
        }
    }
    if (b->wbuf) {
        bdrv_blockalign_free(bs, b->wbuf, (size_t)bufsize);
    }
    g_free(b->slots);
    g_free(b->idle);
    aio_bh_delete(b->unplug_bh);
    g_free(b);
    bdrv_unref(bs);
    return ret;
}
