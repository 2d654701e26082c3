/*
 * Synchronous Linux AIO batches: a set of reads and writes handed to the
 * kernel in one io_submit() and waited for before returning.
 *
 * For files where Linux AIO copies inside io_submit (page cache, tmpfs,
 * zram: aio=inline's files), this is the cost of one syscall for a whole
 * burst, with no eventfd, no poll and no other thread. Used by aio=inline
 * only; builds without libaio get stubs that say "no batches", and the
 * caller runs each request by itself.
 */
#ifndef BLOCK_LINUX_AIO_BATCH_H
#define BLOCK_LINUX_AIO_BATCH_H

#include "config-host.h"
#include "block/raw-aio.h"

typedef struct LaioBatch LaioBatch;

#ifdef CONFIG_LINUX_AIO
/* A private AIO context; NULL if the kernel gives none (then run requests alone). */
LaioBatch *laio_batch_new(void);
void laio_batch_free(LaioBatch *b);
/*
 * Runs reqs[0..n) (RAW_AIO_READ and RAW_AIO_WRITE only) and waits for them.
 * Returns how many, from the front, ran; each of those has its final result
 * in rets[i] (0 or -errno), with raw-aio.h's semantics: a request the
 * kernel did not transfer whole (EOF, a short write, an error) was run
 * again by raw_aio_do_sync(). The caller runs the rest itself.
 */
unsigned laio_batch_run(LaioBatch *b, RawAioReq *const *reqs, int *rets, unsigned n);
#else
static inline LaioBatch *laio_batch_new(void)
{
    return NULL;
}

static inline void laio_batch_free(LaioBatch *b)
{
}

static inline unsigned laio_batch_run(LaioBatch *b, RawAioReq *const *reqs, int *rets,
                                      unsigned n)
{
    return 0;
}
#endif

#endif
