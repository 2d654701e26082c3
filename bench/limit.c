/*
 * limit: the reference io_uring loop every benchmark row is divided by.
 *
 * No block layer, no event loop, no callbacks: keep `depth` requests in
 * flight, reap every completion that is ready, refill the freed slots, and
 * submit the refills and wait for the next completion in one io_uring_enter
 * (io_uring_submit_and_wait).  Slot i always uses buffer i, so fixed buffers
 * need no lookup and nothing is allocated after setup.  The ring flags are
 * options so the harness can find the best configuration per target; that
 * best is "what user space can get from this kernel".
 *
 * Exit status: 0 ok, 1 I/O or usage error, 77 the kernel refused a ring flag.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <liburing.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Debian 12 ships liburing 2.3; supply what older headers may lack. */
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif
#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN (1U << 8)
#endif

#define FLUSH_TAG UINT64_MAX

typedef struct Opts {
    unsigned depth, bs, flush_interval;
    uint64_t count, size;
    double seconds;
    int rand, write, direct, fixed_files, fixed_bufs, sqpoll, single_issuer,
        async, reg_ring, json, pattern;
    const char *path;
} Opts;

static uint64_t parse_size(const char *s)
{
    char *end;
    uint64_t v = strtoull(s, &end, 0);
    switch (*end) {
    case 'g': case 'G': v <<= 10; /* fall through */
    case 'm': case 'M': v <<= 10; /* fall through */
    case 'k': case 'K': v <<= 10; end++; break;
    }
    if (*end || end == s) {
        fprintf(stderr, "limit: bad size '%s'\n", s);
        exit(1);
    }
    return v;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_us(const struct timeval *tv)
{
    return tv->tv_sec * 1e6 + tv->tv_usec;
}

static void usage(void)
{
    fprintf(stderr,
        "usage: limit [options] FILE\n"
        "  --depth N          requests in flight (1)\n"
        "  --bs N             request size, k/m suffixes (4k)\n"
        "  --count N | --time S   stop after N requests or S seconds (3s)\n"
        "  --rw MODE          read|write|randread|randwrite (read)\n"
        "  --size N           use the first N bytes (whole file/device)\n"
        "  --direct           O_DIRECT\n"
        "  --fixed-files      register the fd (IOSQE_FIXED_FILE)\n"
        "  --fixed-bufs       register the buffers (READ/WRITE_FIXED)\n"
        "  --sqpoll           kernel submission thread (IORING_SETUP_SQPOLL)\n"
        "  --single-issuer    SINGLE_ISSUER + DEFER_TASKRUN\n"
        "  --reg-ring         register the ring fd (io_uring_register_ring_fd)\n"
        "  --async            IOSQE_ASYNC: go to an io worker at once\n"
        "  --flush-interval N fdatasync after every N writes (drained first)\n"
        "  --pattern N        byte written by write modes (0xa5)\n"
        "  --json             one JSON object instead of a text line\n");
    exit(1);
}

static void parse_args(int argc, char **argv, Opts *o)
{
    enum { O_DEPTH = 256, O_BS, O_COUNT, O_TIME, O_RW, O_SIZE, O_FLUSH, O_PATTERN };
    static const struct option longopts[] = {
        { "depth", 1, 0, O_DEPTH }, { "bs", 1, 0, O_BS }, { "count", 1, 0, O_COUNT },
        { "time", 1, 0, O_TIME }, { "rw", 1, 0, O_RW }, { "size", 1, 0, O_SIZE },
        { "flush-interval", 1, 0, O_FLUSH }, { "pattern", 1, 0, O_PATTERN },
        { "direct", 0, 0, 'D' }, { "fixed-files", 0, 0, 'F' }, { "fixed-bufs", 0, 0, 'B' },
        { "sqpoll", 0, 0, 'P' }, { "single-issuer", 0, 0, 'I' }, { "async", 0, 0, 'A' },
        { "reg-ring", 0, 0, 'R' }, { "json", 0, 0, 'j' }, { "help", 0, 0, 'h' },
        { 0, 0, 0, 0 }
    };
    *o = (Opts){ .depth = 1, .bs = 4096, .pattern = 0xa5 };
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_DEPTH: o->depth = strtoul(optarg, NULL, 0); break;
        case O_BS: o->bs = parse_size(optarg); break;
        case O_COUNT: o->count = parse_size(optarg); break;
        case O_TIME: o->seconds = strtod(optarg, NULL); break;
        case O_SIZE: o->size = parse_size(optarg); break;
        case O_FLUSH: o->flush_interval = strtoul(optarg, NULL, 0); break;
        case O_PATTERN: o->pattern = strtol(optarg, NULL, 0) & 0xff; break;
        case O_RW:
            o->write = strstr(optarg, "write") != NULL;
            o->rand = strncmp(optarg, "rand", 4) == 0;
            if (strcmp(optarg + 4 * o->rand, o->write ? "write" : "read")) {
                usage();
            }
            break;
        case 'D': o->direct = 1; break;
        case 'F': o->fixed_files = 1; break;
        case 'B': o->fixed_bufs = 1; break;
        case 'P': o->sqpoll = 1; break;
        case 'I': o->single_issuer = 1; break;
        case 'A': o->async = 1; break;
        case 'R': o->reg_ring = 1; break;
        case 'j': o->json = 1; break;
        default: usage();
        }
    }
    if (optind != argc - 1 || o->depth < 1 || o->depth > 4096 || o->bs < 512) {
        usage();
    }
    if (!o->count && o->seconds <= 0) {
        o->seconds = 3;
    }
    o->path = argv[optind];
}

int main(int argc, char **argv)
{
    Opts o;
    parse_args(argc, argv, &o);

    int fd = open(o.path, (o.write ? O_RDWR : O_RDONLY) | (o.direct ? O_DIRECT : 0));
    struct stat st;
    uint64_t dev_size = 0;
    if (fd < 0 || fstat(fd, &st) < 0) {
        fprintf(stderr, "limit: %s: %s\n", o.path, strerror(errno));
        return 1;
    }
    if (S_ISBLK(st.st_mode) ? ioctl(fd, BLKGETSIZE64, &dev_size) < 0 : 0) {
        perror("limit: BLKGETSIZE64");
        return 1;
    }
    uint64_t file_size = S_ISBLK(st.st_mode) ? dev_size : (uint64_t)st.st_size;
    uint64_t size = o.size ? o.size : file_size;
    if (size > file_size) {
        fprintf(stderr, "limit: --size %" PRIu64 " is beyond the end of %s\n", size, o.path);
        return 1;
    }
    uint64_t nblocks = size / o.bs;
    if (nblocks == 0) {
        fprintf(stderr, "limit: %s is smaller than one block\n", o.path);
        return 1;
    }

    struct io_uring_params p = { 0 };
    if (o.sqpoll) {
        p.flags |= IORING_SETUP_SQPOLL;
    }
    if (o.single_issuer) {
        p.flags |= IORING_SETUP_SINGLE_ISSUER | (o.sqpoll ? 0 : IORING_SETUP_DEFER_TASKRUN);
    }
    struct io_uring ring;
    int ret = io_uring_queue_init_params(o.depth, &ring, &p);
    if (ret < 0) {
        /* Run-time detection: an older kernel answers EINVAL for unknown flags. */
        fprintf(stderr, "limit: io_uring_setup(flags 0x%x): %s\n", p.flags, strerror(-ret));
        return ret == -EINVAL || ret == -EPERM || ret == -ENOSYS ? 77 : 1;
    }

    unsigned char *bufs;
    if (posix_memalign((void **)&bufs, 4096, (size_t)o.depth * o.bs)) {
        fprintf(stderr, "limit: out of memory\n");
        return 1;
    }
    memset(bufs, o.write ? o.pattern : 0, (size_t)o.depth * o.bs);
    struct iovec *iovs = calloc(o.depth, sizeof(*iovs));
    for (unsigned i = 0; i < o.depth; i++) {
        iovs[i] = (struct iovec){ bufs + (size_t)i * o.bs, o.bs };
    }
    if ((o.fixed_files && (ret = io_uring_register_files(&ring, &fd, 1)) < 0) ||
        (o.fixed_bufs && (ret = io_uring_register_buffers(&ring, iovs, o.depth)) < 0) ||
        (o.reg_ring && (ret = io_uring_register_ring_fd(&ring)) < 0)) {
        fprintf(stderr, "limit: io_uring_register: %s\n", strerror(-ret));
        return ret == -EINVAL ? 77 : 1;
    }
    int sqe_fd = o.fixed_files ? 0 : fd;
    unsigned sqe_flags = (o.fixed_files ? IOSQE_FIXED_FILE : 0) | (o.async ? IOSQE_ASYNC : 0);

    uint64_t rng = 0x9e3779b97f4a7c15ull, seq = 0, issued = 0, done = 0, waits = 0;
    unsigned inflight = 0, since_flush = 0, *free_slots = calloc(o.depth, sizeof(unsigned));
    unsigned nfree = o.depth;
    int stopping = 0, flushing = 0;
    for (unsigned i = 0; i < o.depth; i++) {
        free_slots[i] = o.depth - 1 - i;
    }

    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    double t0 = now(), t1 = t0;
    for (;;) {
        /* Refill every free slot, unless stopping or draining for a flush. */
        while (nfree && !stopping && !flushing) {
            unsigned slot = free_slots[--nfree];
            uint64_t blk;
            if (o.rand) {
                rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
                blk = rng % nblocks;
            } else {
                blk = seq++ % nblocks;
            }
            struct io_uring_sqe *sqe;
            /* Under SQPOLL a completion can be posted before the kernel thread
             * publishes its SQ head, so the slot's SQE may not be free yet. */
            while (!(sqe = io_uring_get_sqe(&ring))) {
                io_uring_sqring_wait(&ring);
            }
            void *buf = iovs[slot].iov_base;
            if (o.fixed_bufs && o.write) {
                io_uring_prep_write_fixed(sqe, sqe_fd, buf, o.bs, blk * o.bs, slot);
            } else if (o.fixed_bufs) {
                io_uring_prep_read_fixed(sqe, sqe_fd, buf, o.bs, blk * o.bs, slot);
            } else if (o.write) {
                io_uring_prep_write(sqe, sqe_fd, buf, o.bs, blk * o.bs);
            } else {
                io_uring_prep_read(sqe, sqe_fd, buf, o.bs, blk * o.bs);
            }
            sqe->flags |= sqe_flags;
            io_uring_sqe_set_data64(sqe, slot);
            inflight++;
            if (++issued == o.count) {
                stopping = 1;
            }
            if (o.write && o.flush_interval && ++since_flush == o.flush_interval) {
                flushing = 1;
            }
        }
        if (flushing == 1 && inflight == 0) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            io_uring_prep_fsync(sqe, sqe_fd, IORING_FSYNC_DATASYNC);
            sqe->flags |= sqe_flags & IOSQE_FIXED_FILE;
            io_uring_sqe_set_data64(sqe, FLUSH_TAG);
            flushing = 2;
        }
        if (inflight == 0 && flushing != 2) {
            break;
        }
        ret = io_uring_submit_and_wait(&ring, 1);
        waits++;
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
            fprintf(stderr, "limit: io_uring_enter: %s\n", strerror(-ret));
            return 1;
        }
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            n++;
            if (cqe->user_data == FLUSH_TAG) {
                flushing = since_flush = 0;
            } else {
                free_slots[nfree++] = (unsigned)cqe->user_data;
                inflight--;
                done++;
            }
            if (cqe->res < 0 || (cqe->user_data != FLUSH_TAG && (unsigned)cqe->res != o.bs)) {
                fprintf(stderr, "limit: request failed: %s\n",
                        cqe->res < 0 ? strerror(-cqe->res) : "short transfer");
                return 1;
            }
        }
        io_uring_cq_advance(&ring, n);
        if (o.seconds > 0 && !stopping && (waits & 15) == 0 && (t1 = now()) - t0 >= o.seconds) {
            stopping = 1;
        }
    }
    t1 = now();
    getrusage(RUSAGE_SELF, &ru1);

    double secs = t1 - t0;
    double usr = (cpu_us(&ru1.ru_utime) - cpu_us(&ru0.ru_utime)) / done;
    double sys = (cpu_us(&ru1.ru_stime) - cpu_us(&ru0.ru_stime)) / done;
    double iops = done / secs, mibs = iops * o.bs / 1048576.0;
    if (o.json) {
        printf("{\"tool\": \"limit\", \"file\": \"%s\", \"rw\": \"%s%s\", \"bs\": %u, "
               "\"depth\": %u, \"ios\": %" PRIu64 ", \"seconds\": %.4f, \"iops\": %.0f, "
               "\"mib_s\": %.1f, \"user_us_per_io\": %.4f, \"sys_us_per_io\": %.4f, "
               "\"waits_per_io\": %.4f, \"ring_flags\": %u, \"direct\": %d, \"fixed_files\": %d, "
               "\"fixed_bufs\": %d, \"sqpoll\": %d, \"single_issuer\": %d, \"async\": %d, "
               "\"reg_ring\": %d}\n",
               o.path, o.rand ? "rand" : "", o.write ? "write" : "read", o.bs, o.depth, done,
               secs, iops, mibs, usr, sys, (double)waits / done, p.flags, o.direct,
               o.fixed_files, o.fixed_bufs, o.sqpoll, o.single_issuer, o.async, o.reg_ring);
    } else {
        printf("%s: %" PRIu64 " ios in %.3fs: %.0f IOPS, %.1f MiB/s, cpu %.3f usr + %.3f sys us/io\n",
               o.path, done, secs, iops, mibs, usr, sys);
    }
    io_uring_queue_exit(&ring);
    close(fd);
    free(free_slots);
    free(iovs);
    free(bufs);
    return 0;
}
