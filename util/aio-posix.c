/*
 * fd handlers and aio_poll().
 *
 * One iteration of aio_poll():
 *   1. maybe switch poll <-> epoll (hysteresis on the number of fds);
 *   2. compute the timeout: 0 if a BH or notification is pending, else the
 *      nearest timer deadline in ns, -1 if none (blocking only);
 *   3. busy poll the handlers' io_poll functions for up to the adaptive
 *      window (skipping the syscall when they find work);
 *   4. otherwise publish notify_me and wait in the fd monitor;
 *   5. dispatch: BHs, ready handlers, backend completions, due timers,
 *      then (at most AIO_POLL_EXTRA_BH_PASSES times) the BHs those
 *      scheduled.
 * A blocking call loops until something ran or aio_notify() was called.
 *
 * Handlers are owned by the context's thread. Removing one while any
 * aio_poll() of the context is dispatching (walking_handlers > 0) only marks
 * it deleted and takes it out of the backend; it is freed when the
 * outermost aio_poll() returns, so a ready list never points at freed
 * memory. A nested aio_poll() that finds a handler ready takes it off the
 * outer call's ready list, so each event is dispatched exactly once.
 *
 * External handlers are taken out of the fd monitor while external
 * handlers are disabled (so a level-triggered fd cannot keep waking a
 * nested loop that will not dispatch it), and put back on enable.
 */
#include <errno.h>
#include <string.h>

#include "aio-internal.h"

/* ---- ready lists ------------------------------------------------------------------ */

void aio_add_ready_handler(AioHandlerReadyList *ready, AioHandler *node, int revents)
{
    if (node->ready_list) {
        TAILQ_REMOVE(node->ready_list, node, ready_node);
    } else {
        node->revents = 0;
    }
    node->revents |= revents;
    TAILQ_INSERT_TAIL(ready, node, ready_node);
    node->ready_list = ready;
}

static void aio_remove_ready_handler(AioHandler *node)
{
    if (node->ready_list) {
        TAILQ_REMOVE(node->ready_list, node, ready_node);
        node->ready_list = NULL;
    }
}

/* ---- registration ------------------------------------------------------------------ */

static int aio_node_wanted_events(AioContext *ctx, AioHandler *node)
{
    int events = 0;
    if (node->deleted || node->bad_fd ||
        (node->is_external && ctx->external_disable_cnt)) {
        return 0;
    }
    if (node->io_read || node->io_poll_ready) {
        events |= POLLIN;
    }
    if (node->io_write) {
        events |= POLLOUT;
    }
    return events;
}

/* Tells the backend (and an attached GSource) what node wants now. */
static void aio_node_sync_events(AioContext *ctx, AioHandler *node)
{
    int old = node->fdmon_events;
    int events = aio_node_wanted_events(ctx, node);

    if (old == events) {
        return;
    }
    node->fdmon_events = events;
    ctx->n_fds += (events != 0) - (old != 0);
    ctx->fdmon_ops->update(ctx, node, old);
    ctx->fdmon_recheck = true;

    if (ctx->finalizing || g_source_is_destroyed(&ctx->source)) {
        node->gsource_tag = NULL;   /* GLib dropped its fds with the source */
    } else if (events) {
        GIOCondition cond = (events & POLLIN ? G_IO_IN | G_IO_HUP | G_IO_ERR : 0) |
                            (events & POLLOUT ? G_IO_OUT | G_IO_ERR : 0);
        if (node->gsource_tag) {
            g_source_modify_unix_fd(&ctx->source, node->gsource_tag, cond);
        } else {
            node->gsource_tag = g_source_add_unix_fd(&ctx->source, node->fd, cond);
        }
    } else if (node->gsource_tag) {
        g_source_remove_unix_fd(&ctx->source, node->gsource_tag);
        node->gsource_tag = NULL;
    }
}

void aio_handler_fd_invalid(AioContext *ctx, AioHandler *node)
{
    if (node->bad_fd || node->deleted) {
        return;
    }
    warn_report("event loop: fd %d was closed while its handler was registered; "
                "no longer watching it", node->fd);
    node->bad_fd = true;
    aio_node_sync_events(ctx, node);
}

void aio_handler_free(AioContext *ctx, AioHandler *node)
{
#ifdef FDMON_IO_URING
    if (node->uring_state != FDMON_URING_IDLE) {
        /* The io_uring backend frees it when its final CQE arrives. */
        node->uring_zombie = true;
        LIST_INSERT_HEAD(&ctx->fdmon_uring.zombies, node, node);
        return;
    }
#endif
    g_free(node);
}

/*
 * A handler that watches its fd without a poll function: busy polling (and
 * the zero-timeout shortcut in aio_poll) cannot see its events.
 */
static bool aio_node_blocks_polling(const AioHandler *node)
{
    return !node->deleted && (node->io_read || node->io_write) && !node->io_poll;
}

static void aio_node_remove(AioContext *ctx, AioHandler *node)
{
    g_hash_table_remove(ctx->handler_by_fd, GINT_TO_POINTER(node->fd));
    LIST_REMOVE(node, node);
    if (node->io_poll) {
        LIST_REMOVE(node, poll_node);
    }
    if (aio_node_blocks_polling(node)) {
        ctx->poll_disable_cnt--;
    }
    if (node->is_external) {
        LIST_REMOVE(node, ext_node);
    }
    node->deleted = true;
    aio_node_sync_events(ctx, node);

    if (ctx->walking_handlers) {
        LIST_INSERT_HEAD(&ctx->deleted_handlers, node, node);
    } else {
        aio_remove_ready_handler(node);
        aio_handler_free(ctx, node);
    }
}

static void aio_set_fd_handler_common(AioContext *ctx, int fd, bool is_external,
                                      IOHandler *io_read, IOHandler *io_write,
                                      AioPollFn *io_poll, IOHandler *io_poll_ready,
                                      void *opaque, AioHandler **nodep)
{
    AioHandler *node = g_hash_table_lookup(ctx->handler_by_fd, GINT_TO_POINTER(fd));
    bool had_poll;

    g_assert(fd >= 0);
    if (!io_read && !io_write && !io_poll && !io_poll_ready) {
        if (node) {
            aio_node_remove(ctx, node);
        }
        *nodep = NULL;
        return;
    }

    if (!node) {
        node = g_new0(AioHandler, 1);
        node->fd = fd;
        g_hash_table_insert(ctx->handler_by_fd, GINT_TO_POINTER(fd), node);
        LIST_INSERT_HEAD(&ctx->handlers, node, node);
    } else {
        if (aio_node_blocks_polling(node)) {
            ctx->poll_disable_cnt--;
        }
        if (node->is_external) {
            LIST_REMOVE(node, ext_node);
        }
    }
    had_poll = node->io_poll != NULL;

    node->is_external = is_external;
    node->io_read = io_read;
    node->io_write = io_write;
    node->io_poll = io_poll;
    node->io_poll_ready = io_poll_ready;
    node->opaque = opaque;
    node->en = NULL;
    node->edge_safe = false;
    node->bad_fd = false;     /* re-registering is how a caller says "new fd" */

    if (had_poll && !io_poll) {
        LIST_REMOVE(node, poll_node);
    } else if (!had_poll && io_poll) {
        LIST_INSERT_HEAD(&ctx->poll_handlers, node, poll_node);
    }
    if (aio_node_blocks_polling(node)) {
        ctx->poll_disable_cnt++;
    }
    if (is_external) {
        LIST_INSERT_HEAD(&ctx->external_handlers, node, ext_node);
    }
    *nodep = node;
    /* The caller syncs with the backend once the node is complete. */
}

void aio_set_fd_handler(AioContext *ctx, int fd, bool is_external,
                        IOHandler *io_read, IOHandler *io_write,
                        AioPollFn *io_poll, IOHandler *io_poll_ready,
                        void *opaque)
{
    AioHandler *node;

    aio_set_fd_handler_common(ctx, fd, is_external, io_read, io_write, io_poll,
                              io_poll_ready, opaque, &node);
    if (node) {
        aio_node_sync_events(ctx, node);
    }
}

void aio_set_fd_poll(AioContext *ctx, int fd,
                     AioPollBeginEnd *io_poll_begin, AioPollBeginEnd *io_poll_end)
{
    AioHandler *node = g_hash_table_lookup(ctx->handler_by_fd, GINT_TO_POINTER(fd));
    if (node) {
        node->io_poll_begin = io_poll_begin;
        node->io_poll_end = io_poll_end;
    }
}

/*
 * Event notifiers: the node's own callbacks are trampolines to the typed
 * ones, so no function pointer is called through a cast type.
 */
static void aio_en_read(void *opaque)
{
    AioHandler *node = opaque;
    node->en_read(node->en);
}

static bool aio_en_poll(void *opaque)
{
    AioHandler *node = opaque;
    return node->en_poll(node->en);
}

static void aio_en_poll_ready(void *opaque)
{
    AioHandler *node = opaque;
    node->en_poll_ready(node->en);
}

void aio_set_event_notifier(AioContext *ctx, EventNotifier *e, bool is_external,
                            EventNotifierHandler *io_read,
                            EventNotifierPollFn *io_poll,
                            EventNotifierHandler *io_poll_ready)
{
    AioHandler *node;

    aio_set_fd_handler_common(ctx, event_notifier_get_fd(e), is_external,
                              io_read ? aio_en_read : NULL, NULL,
                              io_poll ? aio_en_poll : NULL,
                              io_poll_ready ? aio_en_poll_ready : NULL,
                              NULL, &node);
    if (!node) {
        return;
    }
    node->opaque = node;
    node->en = e;
    node->en_read = io_read;
    node->en_poll = io_poll;
    node->en_poll_ready = io_poll_ready;
    /* Notifier handlers clear the eventfd, so edge-triggered monitoring is enough. */
    node->edge_safe = true;
    aio_node_sync_events(ctx, node);
}

void aio_handlers_cleanup(AioContext *ctx)
{
    AioHandler *node;

    while ((node = LIST_FIRST(&ctx->handlers))) {
        aio_node_remove(ctx, node);
    }
    while ((node = LIST_FIRST(&ctx->deleted_handlers))) {
        LIST_REMOVE(node, node);
        aio_handler_free(ctx, node);
    }
}

/* ---- external handlers ------------------------------------------------------------ */

static void aio_external_sync(AioContext *ctx)
{
    AioHandler *node;

    LIST_FOREACH(node, &ctx->external_handlers, ext_node) {
        aio_node_sync_events(ctx, node);
    }
}

void aio_disable_external(AioContext *ctx)
{
    if (ctx->external_disable_cnt++ == 0) {
        aio_external_sync(ctx);
    }
}

void aio_enable_external(AioContext *ctx)
{
    g_assert(ctx->external_disable_cnt > 0);
    if (--ctx->external_disable_cnt == 0) {
        aio_external_sync(ctx);
    }
}

bool aio_external_disabled(AioContext *ctx)
{
    return ctx->external_disable_cnt > 0;
}

/* ---- fd monitor selection ------------------------------------------------------------ */

bool aio_fdmon_switch(AioContext *ctx, const FdMonOps *ops, Error **errp)
{
    const FdMonOps *old = ctx->fdmon_ops;
    AioHandler *node;

    if (ops == old) {
        return true;
    }
    if (!ops->init(ctx, errp)) {
        return false;
    }
    old->cleanup(ctx);
    ctx->fdmon_ops = ops;
    LIST_FOREACH(node, &ctx->handlers, node) {
        if (node->fdmon_events) {
            ops->update(ctx, node, 0);
        }
    }
    ctx->fdmon_recheck = true;
    return true;
}

bool aio_context_set_fdmon(AioContext *ctx, AioFdMonType type, Error **errp)
{
    const FdMonOps *ops;
    Error *local_err = NULL;

    switch (type) {
    case AIO_FDMON_AUTO:
        /* io_uring when it works; quietly poll/epoll otherwise. */
        if (fdmon_io_uring_get_ops() &&
            aio_fdmon_switch(ctx, fdmon_io_uring_get_ops(), &local_err)) {
            ctx->fdmon_type = AIO_FDMON_IO_URING;
            ctx->fdmon_pinned = false;
            ctx->fdmon_recheck = true;
            return true;
        }
        g_clear_error(&local_err);
        type = AIO_FDMON_POLL;
        /* fall through */
    case AIO_FDMON_POLL:
        ops = ctx->n_fds > FDMON_EPOLL_UP_THRESHOLD || ctx->ring_waiter ?
              &fdmon_epoll_ops : &fdmon_poll_ops;
        if (!aio_fdmon_switch(ctx, ops, &local_err)) {
            /* epoll failed: poll always works */
            error_free(local_err);
            aio_fdmon_switch(ctx, &fdmon_poll_ops, &error_abort);
            ctx->fdmon_switch_failed = true;
        }
        break;
    case AIO_FDMON_EPOLL:
        if (!aio_fdmon_switch(ctx, &fdmon_epoll_ops, errp)) {
            return false;
        }
        break;
    case AIO_FDMON_IO_URING:
        if (!fdmon_io_uring_get_ops()) {
            error_setg(errp, "io_uring fd monitor unavailable: ringblk was built "
                       "without io_uring support (--disable-linux-io-uring or no liburing)");
            return false;
        }
        if (!aio_fdmon_switch(ctx, fdmon_io_uring_get_ops(), errp)) {
            return false;
        }
        break;
    default:
        error_setg(errp, "unknown fd monitor type %d", (int)type);
        return false;
    }
    ctx->fdmon_type = type;
    ctx->fdmon_pinned = false;
    ctx->fdmon_recheck = true;
    return true;
}

bool aio_context_pin_fdmon(AioContext *ctx, const FdMonOps *ops, Error **errp)
{
    if (!aio_fdmon_switch(ctx, ops, errp)) {
        return false;
    }
    ctx->fdmon_pinned = true;
    return true;
}

const char *aio_context_fdmon_name(AioContext *ctx)
{
    return ctx->fdmon_ops->name;
}

/*
 * Hysteresis keeps a context near the threshold from switching back and
 * forth. The answer only changes when the fd count, the backend or its
 * health does, so it is computed again only then (fdmon_recheck).
 */
static void aio_fdmon_maybe_switch_slow(AioContext *ctx)
{
    Error *local_err = NULL;

    ctx->fdmon_recheck = false;
    if (ctx->fdmon_ops == &fdmon_epoll_ops && ctx->fdmon_epoll.broken &&
        ctx->fdmon_type != AIO_FDMON_EPOLL) {
        /* epoll refused an fd that poll can watch: stay with poll from now on. */
        aio_fdmon_switch(ctx, &fdmon_poll_ops, &error_abort);
        ctx->fdmon_switch_failed = true;
        return;
    }
    if (ctx->fdmon_type != AIO_FDMON_POLL || ctx->fdmon_switch_failed ||
        ctx->fdmon_pinned) {
        return;
    }
    /* A ring waiter needs an epoll fd to poll (aio_context_set_ring_waiter). */
    if (ctx->fdmon_ops == &fdmon_poll_ops &&
        (ctx->n_fds > FDMON_EPOLL_UP_THRESHOLD || ctx->ring_waiter)) {
        if (!aio_fdmon_switch(ctx, &fdmon_epoll_ops, &local_err)) {
            warn_report("%s; staying with poll", error_get_pretty(local_err));
            error_free(local_err);
            ctx->fdmon_switch_failed = true;
        } else if (ctx->fdmon_epoll.broken) {
            /*
             * A handler moved over has an fd epoll cannot watch (a regular
             * file on stdin): the wait about to begin would miss it.
             */
            aio_fdmon_switch(ctx, &fdmon_poll_ops, &error_abort);
            ctx->fdmon_switch_failed = true;
        }
    } else if (ctx->fdmon_ops == &fdmon_epoll_ops && !ctx->ring_waiter &&
               ctx->n_fds < FDMON_EPOLL_DOWN_THRESHOLD) {
        aio_fdmon_switch(ctx, &fdmon_poll_ops, &error_abort);
    }
}

static inline void aio_fdmon_maybe_switch(AioContext *ctx)
{
    if (G_UNLIKELY(ctx->fdmon_recheck)) {
        aio_fdmon_maybe_switch_slow(ctx);
    }
}

/* ---- busy polling ---------------------------------------------------------------------- */

/* What begin/end get: the EventNotifier for notifiers, else the handler's opaque. */
static void *aio_node_user_opaque(AioHandler *node)
{
    return node->en ? (void *)node->en : node->opaque;
}

static bool aio_node_pollable(AioContext *ctx, AioHandler *node)
{
    return !node->deleted && !(node->is_external && ctx->external_disable_cnt);
}

/*
 * The context's own notifier has a poll function (so it does not disable
 * busy polling), but what it would report is ctx->notified, which the
 * callers read themselves, and its poll_ready does nothing: it is skipped,
 * which saves a ready-list round trip per iteration.
 */
static inline bool aio_node_polled(AioContext *ctx, AioHandler *node)
{
    return node != ctx->notifier_node && aio_node_pollable(ctx, node);
}

static inline bool aio_run_poll_handlers_once(AioContext *ctx, AioHandlerReadyList *ready)
{
    bool progress = false;
    AioHandler *node;

    LIST_FOREACH(node, &ctx->poll_handlers, poll_node) {
        if (aio_node_polled(ctx, node) && node->io_poll(node->opaque)) {
            node->poll_ready = true;
            aio_add_ready_handler(ready, node, 0);
            progress = true;
        }
    }
    return progress;
}

/*
 * Starts or ends polling mode. While it is on, handlers may turn off their
 * fd notifications (io_poll_begin). Ending it, they turn them back on, and
 * their io_poll runs once more: work that arrived between the last poll and
 * io_poll_end would otherwise raise no fd event. Returns true if it found work.
 */
static bool aio_poll_set_started(AioContext *ctx, AioHandlerReadyList *ready, bool started)
{
    AioHandler *node;
    bool progress = false;

    if (ctx->poll_started == started) {
        return false;
    }
    ctx->poll_started = started;
    LIST_FOREACH(node, &ctx->poll_handlers, poll_node) {
        if (!aio_node_polled(ctx, node)) {
            continue;
        }
        if (started) {
            if (node->io_poll_begin) {
                node->io_poll_begin(aio_node_user_opaque(node));
            }
        } else {
            if (node->io_poll_end) {
                node->io_poll_end(aio_node_user_opaque(node));
            }
            if (node->io_poll(node->opaque)) {
                node->poll_ready = true;
                aio_add_ready_handler(ready, node, 0);
                progress = true;
            }
        }
    }
    return progress;
}

/* Busy polls for up to the window; true if a handler found work (timeout is then 0). */
static bool aio_try_poll_mode(AioContext *ctx, AioHandlerReadyList *ready,
                              int64_t *timeout)
{
    int64_t max_ns = ctx->poll_ns;

    if (*timeout >= 0 && *timeout < max_ns) {
        max_ns = *timeout;
    }
    if (max_ns > 0 && ctx->poll_disable_cnt == 0 && !LIST_EMPTY(&ctx->poll_handlers)) {
        int64_t start = aio_clock_get_ns(AIO_CLOCK_MONOTONIC);
        int64_t elapsed;

        aio_ring_waiter_flush(ctx);     /* polling for what nobody submitted would spin */

        /*
         * Queued backend work (io_uring SQEs: re-arms, registrations) goes
         * to the kernel first, without blocking; what it completes at once
         * needs no polling.
         */
        if (ctx->fdmon_ops->need_wait && ctx->fdmon_ops->need_wait(ctx)) {
            ctx->fdmon_ops->wait(ctx, ready, 0);
            if (!TAILQ_EMPTY(ready) || ctx->fdmon_ops->need_wait(ctx)) {
                *timeout = 0;
                return true;
            }
        }
        aio_poll_set_started(ctx, ready, true);
        do {
            /* A notification counts as work found, as it did when the notifier was polled. */
            if (aio_run_poll_handlers_once(ctx, ready) ||
                __atomic_load_n(&ctx->notified, __ATOMIC_RELAXED)) {
                /* Stay in polling mode: the next iteration will likely poll too. */
                *timeout = 0;
                return true;
            }
            elapsed = aio_clock_get_ns(AIO_CLOCK_MONOTONIC) - start;
        } while (elapsed < max_ns && !aio_has_pending_work(ctx));
        /* The time spent polling counts against the timer deadline. */
        if (*timeout > 0) {
            *timeout = elapsed >= *timeout ? 0 : *timeout - elapsed;
        }
    }
    if (ctx->poll_started && aio_poll_set_started(ctx, ready, false)) {
        *timeout = 0;
        return true;
    }
    return false;
}

/* ---- waiting in an engine's ring ----------------------------------------------------------- */

bool aio_context_set_ring_waiter(AioContext *ctx, const AioRingWaiterOps *ops, void *opaque)
{
    if (ctx->ring_waiter) {
        return false;
    }
    ctx->ring_waiter = ops;
    ctx->ring_waiter_opaque = opaque;
    ctx->fdmon_recheck = true;      /* poll -> epoll at the next aio_poll() */
    return true;
}

void aio_context_clear_ring_waiter(AioContext *ctx, void *opaque)
{
    if (ctx->ring_waiter && ctx->ring_waiter_opaque == opaque) {
        ctx->ring_waiter = NULL;
        ctx->ring_waiter_opaque = NULL;
        ctx->fdmon_recheck = true;
    }
}

static inline bool aio_ring_waiter_wanted(AioContext *ctx)
{
    return ctx->ring_waiter && ctx->fdmon_ops == &fdmon_epoll_ops &&
           ctx->ring_waiter->wanted(ctx->ring_waiter_opaque);
}

/*
 * A blocking wait in the waiter's ring instead of epoll_pwait2(). The ring
 * watches the epoll fd, so fd events wake it too; they are then collected
 * by a zero-timeout look at epoll. The ring's completions are found by the
 * waiter's io_poll function, as busy polling would find them.
 */
static void aio_wait_in_ring(AioContext *ctx, AioHandlerReadyList *ready, int64_t timeout)
{
    int ret = ctx->ring_waiter->wait(ctx->ring_waiter_opaque, ctx->fdmon_epoll.epfd,
                                     timeout);

    if (ret < 0) {
        /* What the waiter kept for its wait must not sleep with us in epoll. */
        aio_ring_waiter_release(ctx);
        ctx->fdmon_ops->wait(ctx, ready, timeout);
        return;
    }
    if (ret > 0) {
        ctx->fdmon_ops->wait(ctx, ready, 0);
    }
    aio_run_poll_handlers_once(ctx, ready);
}

/* ---- dispatch -------------------------------------------------------------------------- */

static bool aio_dispatch_ready(AioContext *ctx, AioHandlerReadyList *ready)
{
    bool progress = false;
    AioHandler *node;

    while ((node = TAILQ_FIRST(ready))) {
        int revents = node->revents;
        bool poll_ready = node->poll_ready;
        bool counts = node != ctx->notifier_node;

        aio_remove_ready_handler(node);
        node->revents = 0;
        node->poll_ready = false;
        if (node->deleted || (node->is_external && ctx->external_disable_cnt)) {
            continue;
        }
        if (poll_ready) {
            IOHandler *cb = node->io_poll_ready ? node->io_poll_ready : node->io_read;
            if (cb) {
                cb(node->opaque);
                progress |= counts;
            }
        }
        /* Each callback may remove or change node: re-check before the next. */
        if (!node->deleted && (revents & (POLLIN | POLLHUP | POLLERR)) && node->io_read) {
            node->io_read(node->opaque);
            progress |= counts;
        }
        if (!node->deleted && (revents & (POLLOUT | POLLHUP | POLLERR)) && node->io_write) {
            node->io_write(node->opaque);
            progress |= counts;
        }
    }
    return progress;
}

static int64_t aio_compute_timeout(AioContext *ctx)
{
    if (aio_has_pending_work(ctx)) {
        return 0;
    }
    return aio_timers_deadline_ns(ctx);
}

static void aio_free_deleted_handlers(AioContext *ctx)
{
    AioHandler *node;

    while ((node = LIST_FIRST(&ctx->deleted_handlers))) {
        LIST_REMOVE(node, node);
        aio_remove_ready_handler(node);
        aio_handler_free(ctx, node);
    }
}

__thread int64_t aio_dispatch_ns;
__thread AioContext *aio_polling_ctx;

bool aio_poll(AioContext *ctx, bool blocking)
{
    AioHandlerReadyList ready = TAILQ_HEAD_INITIALIZER(ready);
    bool progress = false;
    int64_t start = -1;     /* when this call began to be willing to wait */
    int64_t outer_dispatch_ns = aio_dispatch_ns;   /* non-zero: nested in a dispatch */
    AioContext *outer_polling_ctx = aio_polling_ctx;

    aio_fdmon_maybe_switch(ctx);
    ctx->walking_handlers++;
    aio_polling_ctx = ctx;

    for (;;) {
        int64_t timeout = blocking ? aio_compute_timeout(ctx) : 0;
        bool woke;

        if (timeout != 0 && ctx->poll_max_ns && start < 0) {
            start = aio_clock_get_ns(AIO_CLOCK_MONOTONIC);
        }
        if (!aio_try_poll_mode(ctx, &ready, &timeout)) {
            bool published = false;
            if (timeout != 0) {
                /* See aio_notify(): publish that we may sleep, then look once more. */
                __atomic_fetch_add(&ctx->notify_me, 2, __ATOMIC_RELAXED);
                __atomic_thread_fence(__ATOMIC_SEQ_CST);
                published = true;
                if (aio_has_pending_work(ctx)) {
                    timeout = 0;
                }
            }
            if (timeout == 0 && ctx->poll_disable_cnt == 0 &&
                !(ctx->fdmon_ops->need_wait && ctx->fdmon_ops->need_wait(ctx))) {
                /*
                 * Work is pending (a BH), so this pass only looks. Every
                 * watched fd has a poll function, and one round of those
                 * sees what a zero-timeout ppoll would, without the syscall
                 * (null-co at depth 1: one ppoll per request before).
                 */
                aio_ring_waiter_flush(ctx);
                aio_run_poll_handlers_once(ctx, &ready);
            } else if (timeout != 0 && aio_ring_waiter_wanted(ctx)) {
                aio_wait_in_ring(ctx, &ready, timeout);
            } else {
                if (timeout != 0) {
                    aio_ring_waiter_release(ctx);
                } else {
                    aio_ring_waiter_flush(ctx);
                }
                ctx->fdmon_ops->wait(ctx, &ready, timeout);
            }
            if (published) {
                __atomic_fetch_sub(&ctx->notify_me, 2, __ATOMIC_RELEASE);
            }
        } else if (ctx->fdmon_ops->need_wait && ctx->fdmon_ops->need_wait(ctx)) {
            ctx->fdmon_ops->wait(ctx, &ready, 0);
        }

        /* Accept the notification before running BHs, which may schedule more. */
        woke = __atomic_load_n(&ctx->notified, __ATOMIC_RELAXED) &&
               __atomic_exchange_n(&ctx->notified, false, __ATOMIC_ACQUIRE);

        aio_dispatch_ns = aio_clock_get_ns(AIO_CLOCK_MONOTONIC);
        progress |= aio_bh_poll(ctx);
        if (!TAILQ_EMPTY(&ready)) {
            progress |= aio_dispatch_ready(ctx, &ready);
        }
        if (ctx->fdmon_ops->dispatch) {
            progress |= ctx->fdmon_ops->dispatch(ctx);
        }
        if (aio_timers_armed(ctx)) {
            progress |= aio_timers_run(ctx);
        }
        /*
         * What this pass's callbacks scheduled runs now, a bounded number of
         * times: a request handler schedules its completion BH, which queues
         * a reply and schedules the send BH. Left to the next call, each
         * would cost a pass that only looks at the fds (a zero-timeout
         * ppoll where some fd has no poll function, as an NBD socket).
         */
        for (int extra = 0; extra < AIO_POLL_EXTRA_BH_PASSES && progress &&
             __atomic_load_n(&ctx->bh_list, __ATOMIC_RELAXED); extra++) {
            aio_bh_poll(ctx);
        }

        if (!blocking || progress || woke) {
            break;
        }
        /* Woken early (a timer not quite due, a handler gone): wait again. */
    }

    if (!blocking) {
        /* The caller may not come back soon: what callbacks submitted goes now. */
        aio_ring_waiter_release(ctx);
    }

    /* The window adapts to how long this whole call waited. */
    if (start >= 0 && ctx->poll_max_ns) {
        aio_poll_adjust_window(ctx, aio_clock_get_ns(AIO_CLOCK_MONOTONIC) - start);
    }

    /*
     * Nested: the caller goes on dispatching with our (later) time. The
     * outermost call leaves dispatch.
     */
    if (!outer_dispatch_ns) {
        aio_dispatch_ns = 0;
    }
    aio_polling_ctx = outer_polling_ctx;
    if (--ctx->walking_handlers == 0) {
        aio_free_deleted_handlers(ctx);
    }
    return progress;
}

/* ---- the shared ring ---------------------------------------------------------------------- */

struct io_uring *aio_context_get_fdmon_ring(AioContext *ctx)
{
#ifdef FDMON_IO_URING
    if (ctx->fdmon_ops == &fdmon_io_uring_ops) {
        return &ctx->fdmon_uring.ring;
    }
#endif
    return NULL;
}

bool aio_context_fdmon_ring_restricted(AioContext *ctx)
{
#ifdef FDMON_IO_URING
    return aio_context_get_fdmon_ring(ctx) && ctx->fdmon_uring.restricted;
#else
    return false;
#endif
}

void aio_context_set_fdmon_cqe_handler(AioContext *ctx, AioFdMonCqeHandler *cb,
                                       void *opaque)
{
    fdmon_io_uring_set_foreign(ctx, cb, opaque);
}
