/*
 * Micro benchmark of the io_uring engine alone (no block layer): 4 KiB
 * random reads (or writes) at a fixed queue depth, completions driving
 * resubmission from their callbacks, as a guest or fio would. Prints
 * IOPS, io_uring_submit calls per request and the ring's setup flags, so
 * setup-flag and option choices can be compared (docs/devel/io_uring.md).
 *
 * usage: io_uring-micro FILE [depth] [seconds] [options...]
 *   options: write direct fixed-files fixed-buffers sqpoll async restrict poll
 *            uring-loop (the context's fd monitor is io_uring, so the engine
 *            shares its ring: share-ring=auto)
 *   env: RINGBLK_IO_URING_TASKRUN=defer|plain|coop, RINGBLK_IO_URING_REGRING=1
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "block/aio.h"
#include "block/io_uring.h"
#include "block/raw-aio.h"

#define BS 4096

typedef struct Slot {
    RawAioReq req;
    struct iovec iov;
} Slot;

static RawAioEngine *engine;
static uint64_t nblocks, done_ios;
static bool stopping;
static unsigned inflight;
static uint64_t rng = 88172645463325252ull;

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void slot_cb(void *opaque, int ret)
{
    Slot *s = opaque;

    if (ret < 0) {
        fprintf(stderr, "I/O error %d\n", ret);
        exit(1);
    }
    done_ios++;
    if (stopping) {
        inflight--;
        return;
    }
    s->req.offset = (next_rand() % nblocks) * BS;
    if (raw_aio_submit(engine, &s->req) < 0) {
        exit(1);
    }
}

int main(int argc, char **argv)
{
    const RawAioOps *ops = &raw_aio_io_uring_ops;
    RawAioConfig cfg = { .sq_thread_cpu = -1, .fixed_buffers = RAW_AIO_ONOFFAUTO_OFF,
                         .restrict_ops = RAW_AIO_ONOFFAUTO_OFF };
    unsigned depth = argc > 2 ? atoi(argv[2]) : 1;
    double secs = argc > 3 ? atof(argv[3]) : 3;
    bool write = false, direct = false, poll = false, uring_loop = false;
    AioContext *ctx;
    Slot *slots;
    struct stat st;
    struct timespec t0, t1;
    struct rusage ru0, ru1;
    LuringStats ls;
    LuringInfo li;
    int fd, slot;
    double el;

    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE [depth] [seconds] [options]\n", argv[0]);
        return 2;
    }
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "write")) {
            write = true;
        } else if (!strcmp(argv[i], "direct")) {
            direct = true;
        } else if (!strcmp(argv[i], "fixed-files")) {
            cfg.fixed_files = true;
        } else if (!strcmp(argv[i], "fixed-buffers")) {
            cfg.fixed_buffers = RAW_AIO_ONOFFAUTO_ON;
        } else if (!strcmp(argv[i], "sqpoll")) {
            cfg.sqpoll = true;
        } else if (!strcmp(argv[i], "async")) {
            cfg.async_punt = true;
        } else if (!strcmp(argv[i], "restrict")) {
            cfg.restrict_ops = RAW_AIO_ONOFFAUTO_ON;
        } else if (!strcmp(argv[i], "poll")) {
            poll = true;
        } else if (!strcmp(argv[i], "uring-loop")) {
            uring_loop = true;      /* the event loop waits on its own io_uring */
        } else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    fd = open(argv[1], (write ? O_RDWR : O_RDONLY) | (direct ? O_DIRECT : 0));
    if (fd < 0 || fstat(fd, &st) < 0) {
        perror(argv[1]);
        return 1;
    }
    /* st_size is 0 for block devices. */
    nblocks = lseek(fd, 0, SEEK_END) / BS;
    if (nblocks == 0) {
        fprintf(stderr, "%s: smaller than %d bytes\n", argv[1], BS);
        return 1;
    }
    cfg.queue_depth = depth < 2 ? 2 : depth;
    ctx = aio_context_new(&error_abort);
    aio_context_set_poll_params(ctx, poll ? 32000 : 0, 0, 0, &error_abort);
    if (uring_loop) {
        aio_context_set_fdmon(ctx, AIO_FDMON_IO_URING, &error_abort);
    }
    engine = ops->create(ctx, &cfg, &error_abort);
    slot = ops->add_file(engine, fd, direct ? O_DIRECT : 0, &error_abort);
    slots = calloc(depth, sizeof(*slots));
    getrusage(RUSAGE_THREAD, &ru0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 0; i < depth; i++) {
        Slot *s = &slots[i];

        s->iov.iov_base = ops->buf_alloc(engine, BS, BS);
        memset(s->iov.iov_base, 0x5a, BS);
        s->iov.iov_len = BS;
        s->req = (RawAioReq){ .type = write ? RAW_AIO_WRITE : RAW_AIO_READ, .fd = fd,
                              .file_slot = slot, .offset = (next_rand() % nblocks) * BS,
                              .bytes = BS, .iov = &s->iov, .niov = 1, .cb = slot_cb,
                              .opaque = s };
        inflight++;
        raw_aio_submit(engine, &s->req);
    }
    for (;;) {
        aio_poll(ctx, true);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        el = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
        if (el >= secs) {
            break;
        }
    }
    stopping = true;
    while (inflight) {
        aio_poll(ctx, true);
    }
    getrusage(RUSAGE_THREAD, &ru1);
    luring_get_stats(engine, &ls);
    luring_get_info(engine, &li);
    printf("%s iops=%.0f lat_us=%.2f cpu_us_per_io=%.2f submit_calls_per_io=%.3f "
           "setup_flags=0x%x ios=%llu loop_waits_per_io=%.3f fd_wakeups_per_io=%.4f "
           "eventfd_wakeups_per_io=%.4f sync_rw=%llu async_sqes=%llu\n", li.shared_fdmon_ring ? "shared-ring" : "own-ring",
           done_ios / el, el * 1e6 / done_ios * depth,
           ((ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec -
             ru0.ru_stime.tv_sec) * 1e6 + (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec +
             ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec)) / done_ios,
           (double)ls.enters / ls.submitted, li.setup_flags,
           (unsigned long long)done_ios, (double)ls.loop_waits / ls.submitted,
           (double)ls.loop_fd_wakeups / ls.submitted,
           (double)ls.eventfd_wakeups / ls.submitted, (unsigned long long)ls.sync_rw,
           (unsigned long long)ls.async_sqes);
    for (unsigned i = 0; i < depth; i++) {
        ops->buf_free(engine, slots[i].iov.iov_base, BS);
    }
    ops->destroy(engine);
    aio_context_unref(ctx);
    free(slots);
    close(fd);
    return 0;
}
