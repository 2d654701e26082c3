/*
 * Listening UNIX stream sockets. The one policy worth sharing is what to do
 * with a file already at the path: a socket whose owner died stays behind
 * (nothing unlinks it), and the next start must be able to take its place;
 * a socket someone still accepts on belongs to a running process and must
 * not be taken from it. A connect() tells the two apart.
 */
#include "util/unix-socket.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* True if path is a socket file nobody accepts connections on. */
static bool unix_socket_is_stale(const struct sockaddr_un *sa)
{
    struct stat st;
    if (lstat(sa->sun_path, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        return false;
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) {
        return false;
    }
    /* A listener with a full backlog answers EAGAIN: alive too. */
    bool refused = connect(probe, (const struct sockaddr *)sa, sizeof(*sa)) < 0 &&
                   errno == ECONNREFUSED;
    close(probe);
    return refused;
}

int unix_socket_listen(const char *path, int backlog, Error **errp)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sa.sun_path)) {
        error_setg(errp, "UNIX socket path '%s' is too long", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Cannot create a UNIX socket");
        return -1;
    }
    int ret = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    if (ret < 0 && errno == EADDRINUSE && unix_socket_is_stale(&sa) && unlink(path) == 0) {
        ret = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    }
    if (ret < 0) {
        error_setg_errno(errp, errno, "Cannot listen on '%s'", path);
        close(fd);
        return -1;
    }
    if (listen(fd, backlog) < 0) {
        error_setg_errno(errp, errno, "Cannot listen on '%s'", path);
        close(fd);
        unlink(path);            /* ours: bind created it */
        return -1;
    }
    return fd;
}
