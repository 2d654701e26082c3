/*
 * Listening UNIX stream sockets, as the NBD server and the storage
 * daemon's --chardev both open them.
 */
#ifndef UTIL_UNIX_SOCKET_H
#define UTIL_UNIX_SOCKET_H

#include "util/error.h"

/*
 * Binds and listens on path; returns a non-blocking, close-on-exec fd or -1
 * with errp set ("Cannot listen on 'PATH'" for bind and listen failures).
 * A socket file nobody accepts on (left by a process that died) is
 * replaced; a live one, or any other file, is left alone and refused.
 */
int unix_socket_listen(const char *path, int backlog, Error **errp);

#endif
