/*
 * --chardev socket: a listening UNIX socket whose accepted connections go
 * to one user (the monitor). Only the server side of a UNIX socket is
 * supported; wait=on (block until a client connects) is not.
 *
 * The listener is an "external" handler of the main context, like the
 * connections it hands out: a synchronous block operation polling the main
 * loop does not accept or run monitor commands in the middle of itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "qapi/qapi.h"
#include "storage-daemon.h"
#include "util/unix-socket.h"

struct SdChardev {
    char *id;
    char *path;
    int fd;
    SdChardevAcceptFn *accept_fn;
    void *opaque;
};

static GPtrArray *sd_chardevs;

SdChardev *sd_chardev_find(const char *id)
{
    for (guint i = 0; sd_chardevs && i < sd_chardevs->len; i++) {
        SdChardev *c = g_ptr_array_index(sd_chardevs, i);
        if (strcmp(c->id, id) == 0) {
            return c;
        }
    }
    return NULL;
}

static const char *kv_str(JsonObject *kv, const char *key)
{
    JsonNode *n = json_object_get_member(kv, key);
    return n && JSON_NODE_HOLDS_VALUE(n) ? json_node_get_string(n) : NULL;
}

static bool kv_bool(JsonObject *kv, const char *key, bool def, bool *out, Error **errp)
{
    const char *v = kv_str(kv, key);
    if (!json_object_has_member(kv, key)) {
        *out = def;
    } else if (v && (strcmp(v, "on") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "true") == 0)) {
        *out = true;
    } else if (v && (strcmp(v, "off") == 0 || strcmp(v, "no") == 0 || strcmp(v, "false") == 0)) {
        *out = false;
    } else {
        error_setg(errp, "Parameter '%s' expects 'on' or 'off'", key);
        return false;
    }
    return true;
}

SdChardev *sd_chardev_add(const char *spec, Error **errp)
{
    static const char *const known[] = { "backend", "id", "path", "server", "wait", NULL };
    JsonObject *kv = keyval_parse(spec, "backend", errp);
    SdChardev *chr = NULL;
    bool server, wait;

    if (!kv) {
        return NULL;
    }
    GList *keys = json_object_get_members(kv);
    for (GList *l = keys; l; l = l->next) {
        if (!g_strv_contains(known, l->data) || !kv_str(kv, l->data)) {
            error_setg(errp, "Invalid parameter '%s'", (const char *)l->data);
            g_list_free(keys);
            goto out;
        }
    }
    g_list_free(keys);
    const char *backend = kv_str(kv, "backend"), *id = kv_str(kv, "id"), *path = kv_str(kv, "path");
    if (!backend) {
        error_setg(errp, "Parameter 'backend' is missing");
        goto out;
    }
    if (strcmp(backend, "socket") != 0) {
        error_setg(errp, "chardev backend '%s' is not supported (only 'socket')", backend);
        goto out;
    }
    if (!id) {
        error_setg(errp, "Parameter 'id' is missing");
        goto out;
    }
    if (!path) {
        error_setg(errp, "chardev: socket: 'path' is required (UNIX sockets only)");
        goto out;
    }
    if (!kv_bool(kv, "server", false, &server, errp) || !kv_bool(kv, "wait", true, &wait, errp)) {
        goto out;
    }
    if (!server) {
        error_setg(errp, "chardev '%s': only server=on is supported", id);
        goto out;
    }
    if (wait) {
        error_setg(errp, "chardev '%s': wait=on is not supported, use wait=off", id);
        goto out;
    }
    if (sd_chardev_find(id)) {
        error_setg(errp, "attempt to add duplicate chardev '%s'", id);
        goto out;
    }
    int fd = unix_socket_listen(path, 16, errp);
    if (fd < 0) {
        goto out;
    }
    chr = g_new0(SdChardev, 1);
    chr->id = g_strdup(id);
    chr->path = g_strdup(path);
    chr->fd = fd;
    if (!sd_chardevs) {
        sd_chardevs = g_ptr_array_new();
    }
    g_ptr_array_add(sd_chardevs, chr);
out:
    json_object_unref(kv);
    return chr;
}

static void chardev_accept(void *opaque)
{
    SdChardev *chr = opaque;
    /* One per wakeup: a flood of connections cannot starve the rest of the loop. */
    int fd = accept4(chr->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
            warn_report("chardev '%s': accept: %s", chr->id, strerror(errno));
        }
        return;
    }
    chr->accept_fn(fd, chr->opaque);
}

bool sd_chardev_set_handler(SdChardev *chr, SdChardevAcceptFn *fn, void *opaque, Error **errp)
{
    if (chr->accept_fn) {
        error_setg(errp, "Chardev '%s' is busy", chr->id);
        return false;
    }
    chr->accept_fn = fn;
    chr->opaque = opaque;
    aio_set_fd_handler(aio_context_main(), chr->fd, true, chardev_accept, NULL, NULL, NULL, chr);
    return true;
}

void sd_chardev_cleanup(void)
{
    while (sd_chardevs && sd_chardevs->len) {
        SdChardev *chr = g_ptr_array_steal_index(sd_chardevs, sd_chardevs->len - 1);
        if (chr->accept_fn) {
            aio_set_fd_handler(aio_context_main(), chr->fd, true, NULL, NULL, NULL, NULL, NULL);
        }
        close(chr->fd);
        unlink(chr->path);
        g_free(chr->id);
        g_free(chr->path);
        g_free(chr);
    }
}
