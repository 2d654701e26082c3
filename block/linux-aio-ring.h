/*
 * The Linux AIO completion ring as user space sees it.
 *
 * io_setup() maps the kernel's ring (fs/aio.c) into our memory and returns
 * its address as the io_context_t. The kernel documents user space as a
 * writer of `head`, so completions can be popped with two loads and a
 * store instead of an io_getevents() call. Shared by aio=native and by
 * aio=inline's batches (linux-aio-batch.c).
 */
#ifndef BLOCK_LINUX_AIO_RING_H
#define BLOCK_LINUX_AIO_RING_H

#include <stdbool.h>
#include <libaio.h>

struct laio_ring {
    unsigned id;
    unsigned nr;                  /* number of io_events */
    unsigned head;                /* consumer index: ours to advance */
    unsigned tail;                /* producer index: the kernel's */
    unsigned magic;
    unsigned compat_features;
    unsigned incompat_features;
    unsigned header_length;
    struct io_event io_events[];
};
#define LAIO_RING_MAGIC 0xa10a10a1

/* The ring of io_ctx, or NULL if it is not in a format we know (then use io_getevents). */
static inline struct laio_ring *laio_ring_of(io_context_t io_ctx)
{
    struct laio_ring *ring = (struct laio_ring *)io_ctx;

    if (ring->magic != LAIO_RING_MAGIC || ring->incompat_features != 0) {
        return NULL;
    }
    return ring;
}

/* Whether the ring holds completions; a cheap look, for poll functions. */
static inline bool laio_ring_has_events(const struct laio_ring *ring)
{
    return ring->head != __atomic_load_n(&ring->tail, __ATOMIC_RELAXED);
}

/* Pops one event into *ev; *more says whether the ring holds others. */
static inline bool laio_ring_pop(struct laio_ring *ring, struct io_event *ev, bool *more)
{
    unsigned head = ring->head;
    /* Acquire: the event's contents are written before the kernel advances tail. */
    unsigned tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);

    if (head == tail) {
        return false;
    }
    *ev = ring->io_events[head];
    head = head + 1 == ring->nr ? 0 : head + 1;
    /* Release: we are done reading the slot before the kernel may reuse it. */
    __atomic_store_n(&ring->head, head, __ATOMIC_RELEASE);
    *more = head != tail;
    return true;
}

#endif
