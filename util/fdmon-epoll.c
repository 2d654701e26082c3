/*
 * epoll(7) fd monitor.
 *
 * Handlers are registered level-triggered with data.ptr = the AioHandler;
 * a registration changes only when aio_set_fd_handler() (or external
 * disable/enable) changes what a handler wants, so an iteration costs one
 * epoll_pwait2() plus work proportional to the ready fds, however many idle
 * fds are registered. Removed handlers are EPOLL_CTL_DEL'd before they can
 * be freed, so a returned data.ptr always points at a live handler.
 *
 * Timeouts: epoll_pwait2() takes a timespec (Linux 5.11). Where it is
 * missing (libc or kernel: ENOSYS) epoll_wait() gets the timeout rounded up
 * to whole ms, which may wake late but never early.
 */
#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "aio-internal.h"

static bool fdmon_epoll_init(AioContext *ctx, Error **errp)
{
    int fd = epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0) {
        error_setg_errno(errp, errno, "epoll fd monitor: epoll_create1 failed");
        return false;
    }
    ctx->fdmon_epoll.epfd = fd;
    ctx->fdmon_epoll.broken = false;
    if (!ctx->fdmon_epoll.events) {
        ctx->fdmon_epoll.events = g_new(struct epoll_event, FDMON_EPOLL_MAX_EVENTS);
    }
    return true;
}

static void fdmon_epoll_cleanup(AioContext *ctx)
{
    if (ctx->fdmon_epoll.epfd >= 0) {
        close(ctx->fdmon_epoll.epfd);
        ctx->fdmon_epoll.epfd = -1;
    }
    g_free(ctx->fdmon_epoll.events);
    ctx->fdmon_epoll.events = NULL;
}

static void fdmon_epoll_update(AioContext *ctx, AioHandler *node, int old_events)
{
    struct epoll_event ev = {
        .events = (node->fdmon_events & POLLIN ? EPOLLIN : 0) |
                  (node->fdmon_events & POLLOUT ? EPOLLOUT : 0),
        .data.ptr = node,
    };
    int op = !old_events ? EPOLL_CTL_ADD : !node->fdmon_events ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;

    if (epoll_ctl(ctx->fdmon_epoll.epfd, op, node->fd, &ev) < 0) {
        /*
         * DEL of an fd the caller already closed (EBADF/ENOENT) is harmless:
         * closing removed it. Otherwise the fd is not monitored: typically
         * EPERM for a regular file, which poll() accepts. A context that
         * only switched to epoll automatically goes back to poll for good
         * at the start of the next aio_poll(); an explicit epoll says so.
         */
        if (op == EPOLL_CTL_DEL) {
            return;
        }
        if (ctx->fdmon_type == AIO_FDMON_EPOLL) {
            warn_report("epoll fd monitor: cannot watch fd %d: %s", node->fd,
                        g_strerror(errno));
        } else {
            ctx->fdmon_epoll.broken = true;
        }
    }
}

static int fdmon_epoll_wait(AioContext *ctx, AioHandlerReadyList *ready, int64_t timeout_ns)
{
    struct epoll_event *events = ctx->fdmon_epoll.events;
    int ret = -1;

#ifdef HAVE_EPOLL_PWAIT2
    if (!ctx->fdmon_epoll.no_pwait2) {
        struct timespec ts;
        if (timeout_ns >= 0) {
            ts = aio_ns_to_timespec(timeout_ns);
        }
        ret = epoll_pwait2(ctx->fdmon_epoll.epfd, events, FDMON_EPOLL_MAX_EVENTS,
                           timeout_ns >= 0 ? &ts : NULL, NULL);
        if (ret < 0 && errno == ENOSYS) {
            ctx->fdmon_epoll.no_pwait2 = true;
        }
    }
    if (ctx->fdmon_epoll.no_pwait2)
#endif
    {
        int64_t ms = timeout_ns < 0 ? -1 : (timeout_ns + 999999) / 1000000;
        ret = epoll_wait(ctx->fdmon_epoll.epfd, events, FDMON_EPOLL_MAX_EVENTS,
                         ms > G_MAXINT ? G_MAXINT : (int)ms);
    }
    if (ret < 0) {
        return -errno;
    }
    for (int i = 0; i < ret; i++) {
        uint32_t e = events[i].events;
        int revents = (e & EPOLLIN ? POLLIN : 0) | (e & EPOLLOUT ? POLLOUT : 0) |
                      (e & EPOLLERR ? POLLERR : 0) | (e & EPOLLHUP ? POLLHUP : 0);
        aio_add_ready_handler(ready, events[i].data.ptr, revents);
    }
    return ret;
}

const FdMonOps fdmon_epoll_ops = {
    .name = "epoll",
    .init = fdmon_epoll_init,
    .cleanup = fdmon_epoll_cleanup,
    .update = fdmon_epoll_update,
    .wait = fdmon_epoll_wait,
};
