/*
 * IOThread: a thread that runs one AioContext's aio_poll() loop.
 *
 * Anything registered with iothread_get_aio_context() runs in that thread.
 * iothread_destroy() lets the BHs already scheduled run, stops the loop,
 * joins the thread and drops the context.
 */
#ifndef UTIL_IOTHREAD_H
#define UTIL_IOTHREAD_H

#include <stdbool.h>
#include <stdint.h>

#include "block/aio.h"
#include "util/error.h"

typedef struct IOThread IOThread;

/* Starts a thread named id; returns once it runs its loop. NULL with errp on failure. */
IOThread *iothread_new(const char *id, Error **errp);
/* Busy-poll parameters (see aio_context_set_poll_params); any thread. */
bool iothread_set_poll_params(IOThread *iothread, int64_t max_ns, int64_t grow,
                              int64_t shrink, Error **errp);
/* Selects the context's fd monitor (aio_context_set_fdmon), in the thread; any thread. */
bool iothread_set_fdmon(IOThread *iothread, AioFdMonType type, Error **errp);
AioContext *iothread_get_aio_context(IOThread *iothread);
const char *iothread_get_id(IOThread *iothread);
/* The thread's kernel thread id (gettid). */
int iothread_get_thread_id(IOThread *iothread);
/* Runs the pending BHs, stops and joins the thread, frees it. */
void iothread_destroy(IOThread *iothread);

#endif
