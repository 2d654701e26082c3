/*
 * ppoll(2) fd monitor.
 *
 * Keeps a pollfd array (and the handler of each slot) for the handlers
 * registered with the backend. The array is rebuilt only when the set of
 * fds or their events changed since the last wait, so a steady-state
 * iteration allocates nothing; its cost still grows with the number of fds,
 * which is why contexts switch to epoll above FDMON_EPOLL_UP_THRESHOLD.
 * The timeout is a timespec, so timer deadlines keep their ns precision.
 */
#include <errno.h>
#include <time.h>

#include "aio-internal.h"

static bool fdmon_poll_init(AioContext *ctx, Error **errp)
{
    ctx->fdmon_poll.dirty = true;
    return true;
}

static void fdmon_poll_cleanup(AioContext *ctx)
{
    g_free(ctx->fdmon_poll.pfds);
    g_free(ctx->fdmon_poll.nodes);
    ctx->fdmon_poll.pfds = NULL;
    ctx->fdmon_poll.nodes = NULL;
    ctx->fdmon_poll.n = ctx->fdmon_poll.alloc = 0;
}

static void fdmon_poll_update(AioContext *ctx, AioHandler *node, int old_events)
{
    ctx->fdmon_poll.dirty = true;
}

static void fdmon_poll_rebuild(AioContext *ctx)
{
    AioHandler *node;
    unsigned n = 0;

    if (ctx->n_fds > ctx->fdmon_poll.alloc) {
        unsigned alloc = MAX(ctx->n_fds, 16u);
        alloc = MAX(alloc, ctx->fdmon_poll.alloc * 2);
        ctx->fdmon_poll.pfds = g_renew(struct pollfd, ctx->fdmon_poll.pfds, alloc);
        ctx->fdmon_poll.nodes = g_renew(AioHandler *, ctx->fdmon_poll.nodes, alloc);
        ctx->fdmon_poll.alloc = alloc;
    }
    LIST_FOREACH(node, &ctx->handlers, node) {
        if (node->fdmon_events) {
            g_assert(n < ctx->fdmon_poll.alloc);
            ctx->fdmon_poll.pfds[n] = (struct pollfd) {
                .fd = node->fd, .events = (short)node->fdmon_events,
            };
            ctx->fdmon_poll.nodes[n] = node;
            n++;
        }
    }
    ctx->fdmon_poll.n = n;
    ctx->fdmon_poll.dirty = false;
}

static int fdmon_poll_wait(AioContext *ctx, AioHandlerReadyList *ready, int64_t timeout_ns)
{
    struct timespec ts;
    int ret, found = 0;

    if (ctx->fdmon_poll.dirty) {
        fdmon_poll_rebuild(ctx);
    }
    if (timeout_ns >= 0) {
        ts = aio_ns_to_timespec(timeout_ns);
    }
    ret = ppoll(ctx->fdmon_poll.pfds, ctx->fdmon_poll.n,
                timeout_ns >= 0 ? &ts : NULL, NULL);
    if (ret <= 0) {
        return ret < 0 ? -errno : 0;
    }
    for (unsigned i = 0; i < ctx->fdmon_poll.n && found < ret; i++) {
        short revents = ctx->fdmon_poll.pfds[i].revents;
        if (revents & POLLNVAL) {
            aio_handler_fd_invalid(ctx, ctx->fdmon_poll.nodes[i]);
            found++;
        } else if (revents) {
            aio_add_ready_handler(ready, ctx->fdmon_poll.nodes[i], revents);
            found++;
        }
    }
    return found;
}

const FdMonOps fdmon_poll_ops = {
    .name = "poll",
    .init = fdmon_poll_init,
    .cleanup = fdmon_poll_cleanup,
    .update = fdmon_poll_update,
    .wait = fdmon_poll_wait,
};
