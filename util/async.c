/*
 * AioContext lifecycle, bottom halves, cross-thread notification and the
 * GSource face of a context.
 *
 * Bottom halves: aio_bh_schedule() may run in any thread. It sets the BH's
 * flags with one atomic OR and, if the BH was not already queued, pushes it
 * on a lock-free LIFO (ctx->bh_list) and calls aio_notify(). The owning
 * thread takes the whole LIFO with one exchange, reverses it into a FIFO
 * "slice" and runs it. Slices are kept on a per-context queue so that a BH
 * which calls aio_poll() (nested) lets the rest of its own batch run too:
 * otherwise a nested wait could depend on a BH that sits in the caller's
 * batch and deadlock.
 *
 * Wakeup: see aio_notify().
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "aio-internal.h"

/* ---- Bottom halves ---------------------------------------------------------- */

AioBH *aio_bh_new(AioContext *ctx, AioBHFunc *cb, void *opaque)
{
    AioBH *bh = g_new0(AioBH, 1);
    bh->ctx = ctx;
    bh->cb = cb;
    bh->opaque = opaque;
    return bh;
}

static void aio_bh_enqueue(AioBH *bh, unsigned new_flags)
{
    AioContext *ctx = bh->ctx;
    unsigned old = __atomic_fetch_or(&bh->flags, BH_PENDING | new_flags,
                                     __ATOMIC_SEQ_CST);
    if (!(old & BH_PENDING)) {
        /* Release: the dequeuer sees the BH's fields and the caller's data. */
        AioBH *head = __atomic_load_n(&ctx->bh_list, __ATOMIC_RELAXED);
        do {
            bh->next = head;
        } while (!__atomic_compare_exchange_n(&ctx->bh_list, &head, bh, true,
                                              __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    }
    /*
     * From inside aio_poll(ctx) the loop finds the BH on bh_list before it
     * sleeps. A notification would also make its next pass only look, even
     * after the BH was cancelled: the io_uring engine schedules and cancels
     * its submit BH around every completion batch, and each such look cost
     * an io_uring_enter (disk d32: 4 enters per 32 reads instead of 2).
     */
    if (!aio_context_polling_here(ctx)) {
        aio_notify(ctx);
    }
}

void aio_bh_schedule(AioBH *bh)
{
    aio_bh_enqueue(bh, BH_SCHEDULED);
}

void aio_bh_cancel(AioBH *bh)
{
    /* It stays queued (the list is lock-free) but will not run when dequeued. */
    __atomic_fetch_and(&bh->flags, ~BH_SCHEDULED, __ATOMIC_SEQ_CST);
}

void aio_bh_delete(AioBH *bh)
{
    unsigned old = __atomic_fetch_or(&bh->flags, BH_DELETED, __ATOMIC_SEQ_CST);
    if (!(old & BH_PENDING)) {
        g_free(bh);
    }
    /* else aio_bh_poll() frees it when it dequeues it */
}

void aio_bh_schedule_oneshot(AioContext *ctx, AioBHFunc *cb, void *opaque)
{
    AioBH *bh = aio_bh_new(ctx, cb, opaque);
    aio_bh_enqueue(bh, BH_SCHEDULED | BH_ONESHOT);
}

/* Takes the scheduled LIFO and returns it in scheduling order. */
static AioBH *aio_bh_take_batch(AioContext *ctx)
{
    AioBH *lifo, *fifo = NULL;

    /* A plain load first: the locked exchange is for when there is something. */
    if (!__atomic_load_n(&ctx->bh_list, __ATOMIC_RELAXED)) {
        return NULL;
    }
    lifo = __atomic_exchange_n(&ctx->bh_list, NULL, __ATOMIC_ACQUIRE);
    while (lifo) {
        AioBH *next = lifo->next;
        lifo->next = fifo;
        fifo = lifo;
        lifo = next;
    }
    return fifo;
}

/* Runs one dequeued BH (or frees it); true if its callback ran. */
static inline bool aio_bh_run(AioBH *bh)
{
    /* Clear before calling so the callback may schedule the BH again. */
    unsigned old = __atomic_fetch_and(&bh->flags, ~(BH_PENDING | BH_SCHEDULED),
                                      __ATOMIC_SEQ_CST);
    bool ran = false;

    if (old & BH_DELETED) {
        g_free(bh);
        return false;
    }
    if (old & BH_SCHEDULED) {
        bh->cb(bh->opaque);   /* may delete bh: do not touch it after */
        ran = true;
    }
    if (old & BH_ONESHOT) {
        g_free(bh);
    }
    return ran;
}

bool aio_bh_poll(AioContext *ctx)
{
    BHSlice slice = { .head = aio_bh_take_batch(ctx) };
    bool progress = false;
    BHSlice *s;

    if (!slice.head && !ctx->bh_slice_head) {
        return false;
    }
    if (slice.head && !slice.head->next && !ctx->bh_slice_head) {
        /*
         * One BH and no older batch: a nested aio_poll() in its callback
         * would find nothing of ours left to run, so it needs no slice.
         */
        return aio_bh_run(slice.head);
    }
    if (slice.head) {
        /*
         * The slice lives on this stack frame; the loop below runs until the
         * queue is empty, so it is unlinked before we return.
         */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif
        if (ctx->bh_slice_tail) {
            ctx->bh_slice_tail->next = &slice;
        } else {
            ctx->bh_slice_head = &slice;
        }
        ctx->bh_slice_tail = &slice;
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic pop
#endif
    }

    /* Oldest batch first; a nested aio_poll() may empty any of them. */
    while ((s = ctx->bh_slice_head)) {
        AioBH *bh = s->head;

        if (!bh) {
            ctx->bh_slice_head = s->next;
            if (!s->next) {
                ctx->bh_slice_tail = NULL;
            }
            continue;
        }
        s->head = bh->next;
        progress |= aio_bh_run(bh);
    }
    return progress;
}

void aio_bh_cleanup(AioContext *ctx)
{
    AioBH *bh = aio_bh_take_batch(ctx);
    while (bh) {
        AioBH *next = bh->next;
        unsigned old = __atomic_fetch_and(&bh->flags, ~(BH_PENDING | BH_SCHEDULED),
                                          __ATOMIC_SEQ_CST);
        if (old & (BH_DELETED | BH_ONESHOT)) {
            g_free(bh);
        }
        bh = next;
    }
}

/* ---- Notification -------------------------------------------------------------- */

/*
 * aio_notify() and a sleeping aio_poll() form a Dekker pair:
 *
 *   notifier:  store notified (and before it the BH push);  full fence;  load notify_me
 *   poller:    store notify_me += 2;  full fence;  load bh_list / notified
 *
 * With a full fence between each side's store and load, at least one side
 * sees the other's store: either the poller sees the work and does not
 * sleep, or the notifier sees notify_me and writes the eventfd. When the
 * owning thread is running (notify_me == 0) no syscall is made, which is the
 * common case for BHs scheduled by completions in the same thread.
 */
void aio_notify(AioContext *ctx)
{
    __atomic_store_n(&ctx->notified, true, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&ctx->notify_me, __ATOMIC_RELAXED)) {
        event_notifier_set(&ctx->notifier);
    }
}

static void aio_context_notifier_read(EventNotifier *e)
{
    event_notifier_test_and_clear(e);
}

/* Busy polling sees a notification without reading the eventfd. */
static bool aio_context_notifier_poll(EventNotifier *e)
{
    AioContext *ctx = container_of(e, AioContext, notifier);
    return __atomic_load_n(&ctx->notified, __ATOMIC_RELAXED);
}

static void aio_context_notifier_poll_ready(EventNotifier *e)
{
    /* Nothing: aio_poll() accepts the notification itself. */
}

/* ---- GSource ------------------------------------------------------------------- */

static gboolean aio_ctx_prepare(GSource *source, gint *timeout)
{
    AioContext *ctx = (AioContext *)source;
    int64_t ns;

    /* GLib's poll, not the ring, waits next. */
    aio_ring_waiter_release(ctx);
    /* Same pairing as a blocking aio_poll(): publish, fence, then look. */
    __atomic_fetch_or(&ctx->notify_me, 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (aio_has_pending_work(ctx)) {
        __atomic_fetch_and(&ctx->notify_me, ~1, __ATOMIC_RELEASE);
        *timeout = 0;
        return TRUE;
    }
    ns = aio_timers_deadline_ns(ctx);
    if (ns < 0) {
        *timeout = -1;
    } else {
        /* Round up: GLib's ms timeout must not wake before the timer is due. */
        int64_t ms = (ns + 999999) / 1000000;
        *timeout = ms > G_MAXINT ? G_MAXINT : (gint)ms;
    }
    if (*timeout == 0) {
        __atomic_fetch_and(&ctx->notify_me, ~1, __ATOMIC_RELEASE);
        return TRUE;
    }
    return FALSE;
}

static gboolean aio_ctx_check(GSource *source)
{
    AioContext *ctx = (AioContext *)source;
    AioHandler *node;

    __atomic_fetch_and(&ctx->notify_me, ~1, __ATOMIC_RELEASE);
    if (aio_has_pending_work(ctx) || aio_timers_deadline_ns(ctx) == 0) {
        return TRUE;
    }
    LIST_FOREACH(node, &ctx->handlers, node) {
        if (node->gsource_tag && g_source_query_unix_fd(source, node->gsource_tag)) {
            return TRUE;
        }
    }
    return FALSE;
}

static gboolean aio_ctx_dispatch(GSource *source, GSourceFunc callback, gpointer user_data)
{
    aio_poll((AioContext *)source, false);
    return G_SOURCE_CONTINUE;
}

static void aio_ctx_finalize(GSource *source)
{
    AioContext *ctx = (AioContext *)source;
    AioHandler *node;

    /* GLib frees the source's fds itself; it must not be asked to remove them now. */
    LIST_FOREACH(node, &ctx->handlers, node) {
        node->gsource_tag = NULL;
    }
    ctx->finalizing = true;
    aio_bh_cleanup(ctx);
    aio_handlers_cleanup(ctx);
    ctx->fdmon_ops->cleanup(ctx);
    event_notifier_cleanup(&ctx->notifier);
    g_hash_table_destroy(ctx->handler_by_fd);
}

static GSourceFuncs aio_source_funcs = {
    .prepare = aio_ctx_prepare,
    .check = aio_ctx_check,
    .dispatch = aio_ctx_dispatch,
    .finalize = aio_ctx_finalize,
};

GSource *aio_get_g_source(AioContext *ctx)
{
    g_source_ref(&ctx->source);
    return &ctx->source;
}

/* ---- Lifecycle ------------------------------------------------------------------ */

static bool aio_fdmon_type_from_env(AioFdMonType *type)
{
    const char *s = getenv("RINGBLK_FDMON");
    if (!s || !*s) {
        return false;
    }
    if (!strcmp(s, "poll")) {
        *type = AIO_FDMON_POLL;
    } else if (!strcmp(s, "epoll")) {
        *type = AIO_FDMON_EPOLL;
    } else if (!strcmp(s, "io_uring")) {
        *type = AIO_FDMON_IO_URING;
    } else if (!strcmp(s, "auto")) {
        *type = AIO_FDMON_AUTO;
    } else {
        warn_report("RINGBLK_FDMON='%s' is not poll, epoll, io_uring or auto; using poll", s);
        return false;
    }
    return true;
}

AioContext *aio_context_new(Error **errp)
{
    AioContext *ctx = (AioContext *)g_source_new(&aio_source_funcs, sizeof(AioContext));
    AioFdMonType type = AIO_FDMON_POLL;
    Error *local_err = NULL;
    int ret;

    g_source_set_name(&ctx->source, "aio-context");
    ctx->handler_by_fd = g_hash_table_new(NULL, NULL);
    LIST_INIT(&ctx->handlers);
    LIST_INIT(&ctx->poll_handlers);
    LIST_INIT(&ctx->external_handlers);
    LIST_INIT(&ctx->deleted_handlers);
    ctx->fdmon_ops = &fdmon_poll_ops;
    ctx->fdmon_type = AIO_FDMON_POLL;
    ctx->fdmon_epoll.epfd = -1;
    fdmon_poll_ops.init(ctx, &error_abort);

    ret = event_notifier_init(&ctx->notifier, false);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to create the event loop's eventfd");
        ctx->notifier.fd = -1;
        g_source_unref(&ctx->source);
        return NULL;
    }

    if (aio_fdmon_type_from_env(&type) &&
        !aio_context_set_fdmon(ctx, type, &local_err)) {
        warn_report("%s; using the poll fd monitor", error_get_pretty(local_err));
        error_free(local_err);
    }

    aio_set_event_notifier(ctx, &ctx->notifier, false, aio_context_notifier_read,
                           aio_context_notifier_poll, aio_context_notifier_poll_ready);
    ctx->notifier_node = g_hash_table_lookup(ctx->handler_by_fd,
                                             GINT_TO_POINTER(ctx->notifier.fd));
    return ctx;
}

void aio_context_ref(AioContext *ctx)
{
    g_source_ref(&ctx->source);
}

void aio_context_unref(AioContext *ctx)
{
    g_source_unref(&ctx->source);
}

/* ---- Thread association ------------------------------------------------------- */

static __thread AioContext *current_ctx;
static AioContext *main_ctx;

AioContext *aio_context_main(void)
{
    static gsize once;
    if (g_once_init_enter(&once)) {
        main_ctx = aio_context_new(&error_abort);
        g_once_init_leave(&once, 1);
    }
    return main_ctx;
}

AioContext *aio_context_current(void)
{
    return current_ctx ? current_ctx : aio_context_main();
}

void aio_context_set_current(AioContext *ctx)
{
    current_ctx = ctx;
}

bool aio_context_in_thread(AioContext *ctx)
{
    return ctx == aio_context_current();
}

/* ---- Busy-poll parameters -------------------------------------------------------- */

bool aio_context_set_poll_params(AioContext *ctx, int64_t max_ns,
                                 int64_t grow, int64_t shrink, Error **errp)
{
    if (max_ns < 0 || grow < 0 || shrink < 0) {
        error_setg(errp, "poll-max-ns, poll-grow and poll-shrink must not be negative "
                   "(got %" PRId64 ", %" PRId64 ", %" PRId64 ")", max_ns, grow, shrink);
        return false;
    }
    ctx->poll_max_ns = max_ns;
    ctx->poll_grow = grow;
    ctx->poll_shrink = shrink;
    ctx->poll_ns = 0;   /* start again from nothing, as a fresh IOThread does */
    return true;
}

int64_t aio_context_poll_ns(AioContext *ctx)
{
    return ctx->poll_ns;
}

void aio_poll_adjust_window(AioContext *ctx, int64_t block_ns)
{
    int64_t ns = ctx->poll_ns;

    if (block_ns <= ns) {
        return;                     /* the event came inside the window: keep it */
    }
    if (block_ns > ctx->poll_max_ns) {
        /* Waited longer than we may ever poll: polling only burnt CPU. */
        ns = ctx->poll_shrink ? ns / ctx->poll_shrink : 0;
    } else if (ns < ctx->poll_max_ns) {
        /* A somewhat longer window would have caught this event. */
        if (ns == 0) {
            ns = AIO_POLL_INITIAL_NS;
        } else {
            int64_t grow = ctx->poll_grow ? ctx->poll_grow : 2;
            ns = ns > ctx->poll_max_ns / grow ? ctx->poll_max_ns : ns * grow;
        }
        if (ns > ctx->poll_max_ns) {
            ns = ctx->poll_max_ns;
        }
    }
    ctx->poll_ns = ns;
}
