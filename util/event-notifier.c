/*
 * EventNotifier: an eventfd used as a level-triggered "something happened"
 * flag. set() adds 1 to the counter, test_and_clear() reads it back to 0.
 */
#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "block/aio.h"

int event_notifier_init(EventNotifier *e, bool active)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    e->fd = fd;
    if (active) {
        event_notifier_set(e);
    }
    return 0;
}

void event_notifier_cleanup(EventNotifier *e)
{
    if (e->fd >= 0) {
        close(e->fd);
        e->fd = -1;
    }
}

int event_notifier_get_fd(const EventNotifier *e)
{
    return e->fd;
}

int event_notifier_set(EventNotifier *e)
{
    uint64_t one = 1;
    int saved_errno = errno;    /* async-signal-safe: leave errno as we found it */
    int ret = 0;
    ssize_t r;

    do {
        r = write(e->fd, &one, sizeof(one));
    } while (r < 0 && errno == EINTR);
    /* EAGAIN: the counter is saturated, so it is signalled already. */
    if (r < 0 && errno != EAGAIN) {
        ret = -errno;
    }
    errno = saved_errno;
    return ret;
}

bool event_notifier_test_and_clear(EventNotifier *e)
{
    uint64_t value;
    ssize_t r;

    do {
        r = read(e->fd, &value, sizeof(value));
    } while (r < 0 && errno == EINTR);
    return r == sizeof(value) && value != 0;
}
