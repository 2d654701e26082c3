/*
 * Synchronous Linux AIO batches (linux-aio-batch.h).
 *
 * One AIO context of LAIO_BATCH_MAX entries per user, with no eventfd:
 * a batch is submitted and then reaped at once from the completion ring in
 * our memory (linux-aio-ring.h). On the files this is meant for, the
 * kernel has finished every request by the time io_submit returns, so the
 * reap is a few loads. Should some request still be in flight (a file
 * whose AIO really is asynchronous), io_getevents() waits for it: the
 * caller asked for synchronous I/O, and this stays synchronous.
 *
 * Nothing here is an engine of its own: no callbacks, no completion
 * queue, no state between calls apart from the context.
 */
#include <errno.h>
#include <limits.h>
#include <sys/uio.h>

#include <glib.h>

#include "linux-aio-batch.h"
#include "linux-aio-ring.h"

/* Requests per io_submit; larger bursts take several. */
#define LAIO_BATCH_MAX 64

struct LaioBatch {
    io_context_t io_ctx;
    struct laio_ring *ring;     /* NULL: reap with io_getevents only */
    struct iocb iocbs[LAIO_BATCH_MAX];
    struct iocb *ptrs[LAIO_BATCH_MAX];
    struct io_event events[LAIO_BATCH_MAX];
};

LaioBatch *laio_batch_new(void)
{
    LaioBatch *b = g_new0(LaioBatch, 1);

    if (io_setup(LAIO_BATCH_MAX, &b->io_ctx) < 0) {
        g_free(b);
        return NULL;
    }
    b->ring = laio_ring_of(b->io_ctx);
    for (unsigned i = 0; i < LAIO_BATCH_MAX; i++) {
        b->ptrs[i] = &b->iocbs[i];
    }
    return b;
}

void laio_batch_free(LaioBatch *b)
{
    if (b) {
        io_destroy(b->io_ctx);      /* nothing is in flight between calls */
        g_free(b);
    }
}

/* False for a request one iocb cannot carry; it ends the batch. */
static bool laio_batch_prep(struct iocb *iocb, RawAioReq *req)
{
    if (req->niov > IOV_MAX) {
        return false;
    }
    if (req->type == RAW_AIO_READ) {
        io_prep_preadv(iocb, req->fd, req->iov, req->niov, req->offset);
    } else if (req->type == RAW_AIO_WRITE) {
        io_prep_pwritev(iocb, req->fd, req->iov, req->niov, req->offset);
        if (req->flags & RAW_AIO_FUA) {
            iocb->aio_rw_flags = RWF_DSYNC;
        }
    } else {
        return false;
    }
    return true;
}

/* Fills events[0..n) with the completions of the n requests just accepted. */
static void laio_batch_reap(LaioBatch *b, unsigned n)
{
    unsigned got = 0;

    while (got < n) {
        bool more;
        int r;

        if (b->ring && laio_ring_pop(b->ring, &b->events[got], &more)) {
            got++;
            continue;
        }
        r = io_getevents(b->io_ctx, 1, n - got, &b->events[got], NULL);
        /*
         * With no timeout the only failure for a valid context is a signal;
         * giving up would leave the kernel writing into buffers we return.
         */
        g_assert(r > 0 || r == -EINTR);
        if (r > 0) {
            got += r;
        }
    }
}

unsigned laio_batch_run(LaioBatch *b, RawAioReq *const *reqs, int *rets, unsigned n)
{
    unsigned ran = 0;

    while (ran < n) {
        unsigned chunk = MIN(n - ran, LAIO_BATCH_MAX), prepped = 0;
        int accepted;

        while (prepped < chunk && laio_batch_prep(&b->iocbs[prepped], reqs[ran + prepped])) {
            prepped++;
        }
        accepted = prepped ? io_submit(b->io_ctx, prepped, b->ptrs) : 0;
        if (accepted <= 0) {
            return ran;
        }
        laio_batch_reap(b, accepted);
        for (int i = 0; i < accepted; i++) {
            const struct io_event *ev = &b->events[i];
            unsigned idx = ran + (unsigned)((struct iocb *)ev->obj - b->iocbs);
            RawAioReq *req = reqs[idx];

            if (G_LIKELY((long)ev->res >= 0 && (uint64_t)ev->res == req->bytes)) {
                rets[idx] = 0;
            } else {
                /* Short (EOF, a limit, MAX_RW_COUNT) or failed: the sync path knows every case. */
                rets[idx] = raw_aio_do_sync(req);
            }
        }
        ran += accepted;
        if ((unsigned)accepted < chunk) {
            return ran;     /* the rest goes back to the caller */
        }
    }
    return ran;
}
