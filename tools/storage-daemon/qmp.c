/*
 * The QMP monitor: JSON commands and replies over the connections of a
 * --chardev socket (see docs/storage-daemon.md for the protocol as seen
 * from a client).
 *
 * Each connection has an input buffer that a small scanner splits into
 * top-level JSON values by counting brackets outside strings, so a client
 * may send several commands in one write or one command in several. A
 * complete value is parsed with json-glib and dispatched at once; commands
 * run to completion in the main thread, so replies keep the order of the
 * commands. Output is buffered and written as the socket accepts it; a
 * client that stops reading while its buffer grows past a limit, or that
 * goes away, is dropped without affecting anything else.
 *
 * Connection handlers are "external": a command that polls the main loop
 * (draining a node, say) cannot start another command under itself.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "qapi/qapi.h"
#include "storage-daemon.h"

#define QMP_MAX_INPUT   (1 << 20)   /* one command, bytes */
#define QMP_MAX_DEPTH   1024        /* nesting of one command */
#define QMP_MAX_OUTPUT  (16 << 20)  /* unread replies and events, bytes */

typedef struct SdMonitor {
    bool pretty;
} SdMonitor;

typedef struct QmpConn {
    SdMonitor *mon;
    int fd;
    GString *in;         /* the value being scanned */
    GString *out;        /* not yet written */
    int depth;           /* bracket depth in the value being scanned */
    bool in_string, escape;
    bool junk;           /* skipping bytes that cannot start a value */
    char word[32];       /* the bare word (literal or number) being scanned */
    size_t word_len;
    bool negotiated;
    bool dead;
    bool busy;           /* in conn_read: freeing waits until it returns */
} QmpConn;

static GPtrArray *qmp_conns;
static GPtrArray *qmp_monitors;   /* SdMonitor *, freed at cleanup */
/* A command is running: no connection reads (see monitors_suspend). */
static bool qmp_suspended;

static void conn_update_handlers(QmpConn *c);

/* ---- output ---------------------------------------------------------------------------- */

static void conn_close(QmpConn *c)
{
    if (c->dead) {
        return;
    }
    c->dead = true;
    aio_set_fd_handler(aio_context_main(), c->fd, true, NULL, NULL, NULL, NULL, NULL);
    close(c->fd);
    c->fd = -1;
    g_ptr_array_remove(qmp_conns, c);
    g_string_free(c->in, true);
    g_string_free(c->out, true);
    c->in = c->out = NULL;
    if (!c->busy) {
        g_free(c);
    }
}

/* Writes what the socket takes now; false when the connection died. */
static bool conn_flush(QmpConn *c)
{
    while (c->out->len) {
        ssize_t n = send(c->fd, c->out->str, c->out->len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                break;
            }
            conn_close(c);
            return false;
        }
        g_string_erase(c->out, 0, n);
    }
    conn_update_handlers(c);
    return true;
}

static void conn_send(QmpConn *c, JsonNode *msg)
{
    if (c->dead) {
        return;
    }
    JsonGenerator *gen = json_generator_new();
    json_generator_set_pretty(gen, c->mon->pretty);
    json_generator_set_root(gen, msg);
    gsize len;
    char *text = json_generator_to_data(gen, &len);
    g_object_unref(gen);
    g_string_append_len(c->out, text, len);
    g_string_append(c->out, "\r\n");
    g_free(text);
    if (c->out->len > QMP_MAX_OUTPUT) {
        conn_close(c);
        return;
    }
    conn_flush(c);
}

static JsonNode *object_node(JsonObject *o)
{
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(n, o);
    return n;
}

static const char *const qmp_error_class[] = {
    [ERROR_CLASS_GENERIC_ERROR] = "GenericError",
    [ERROR_CLASS_COMMAND_NOT_FOUND] = "CommandNotFound",
    [ERROR_CLASS_DEVICE_NOT_FOUND] = "DeviceNotFound",
};

static void send_error(QmpConn *c, Error *err, JsonNode *id)
{
    JsonObject *e = json_object_new();
    ErrorClass cls = error_get_class(err);
    if ((unsigned)cls >= G_N_ELEMENTS(qmp_error_class)) {
        cls = ERROR_CLASS_GENERIC_ERROR;
    }
    json_object_set_string_member(e, "class", qmp_error_class[cls]);
    json_object_set_string_member(e, "desc", error_get_pretty(err));
    JsonObject *r = json_object_new();
    json_object_set_object_member(r, "error", e);
    if (id) {
        json_object_set_member(r, "id", json_node_copy(id));
    }
    JsonNode *n = object_node(r);
    conn_send(c, n);
    json_node_unref(n);
    error_free(err);
}

static void send_return(QmpConn *c, JsonNode *ret, JsonNode *id)
{
    JsonObject *r = json_object_new();
    json_object_set_member(r, "return", ret);
    if (id) {
        json_object_set_member(r, "id", json_node_copy(id));
    }
    JsonNode *n = object_node(r);
    conn_send(c, n);
    json_node_unref(n);
}

void sd_qmp_event(const char *name, JsonObject *data)
{
    gint64 now = g_get_real_time();
    JsonObject *ts = json_object_new();
    json_object_set_int_member(ts, "seconds", now / G_USEC_PER_SEC);
    json_object_set_int_member(ts, "microseconds", now % G_USEC_PER_SEC);
    JsonObject *ev = json_object_new();
    json_object_set_object_member(ev, "timestamp", ts);
    json_object_set_string_member(ev, "event", name);
    if (data) {
        json_object_set_object_member(ev, "data", data);
    }
    JsonNode *n = object_node(ev);
    /* A connection may close while we send: walk a copy. */
    GPtrArray *conns = qmp_conns ? g_ptr_array_copy(qmp_conns, NULL, NULL) : g_ptr_array_new();
    for (guint i = 0; i < conns->len; i++) {
        QmpConn *c = g_ptr_array_index(conns, i);
        if (c->negotiated) {
            conn_send(c, n);
        }
    }
    g_ptr_array_free(conns, true);
    json_node_unref(n);
}

/*
 * Commands may poll the main loop (an I/O thread starting, a node
 * draining). Reading is off meanwhile on every connection, so no command
 * starts inside another and replies keep the order of the commands.
 */
static void monitors_suspend(bool suspend)
{
    qmp_suspended = suspend;
    for (guint i = 0; qmp_conns && i < qmp_conns->len; i++) {
        conn_update_handlers(g_ptr_array_index(qmp_conns, i));
    }
}

/* ---- commands ---------------------------------------------------------------------- */

static void handle_message(QmpConn *c, const char *text, gsize len)
{
    JsonParser *parser = json_parser_new();
    GError *perr = NULL;
    Error *err = NULL;
    JsonNode *id = NULL;
    JsonObject *args = NULL;
    char *raw_args = NULL;

    if (!json_parser_load_from_data(parser, text, len, &perr)) {
        error_setg(&err, "JSON parse error, %s", perr->message);
        g_error_free(perr);
        goto fail;
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        error_setg(&err, "QMP input must be a JSON object");
        goto fail;
    }
    JsonObject *msg = json_node_get_object(root);
    id = json_object_get_member(msg, "id");

    const char *name = NULL;
    GList *keys = json_object_get_members(msg);
    for (GList *l = keys; l; l = l->next) {
        const char *k = l->data;
        JsonNode *v = json_object_get_member(msg, k);
        if (strcmp(k, "execute") == 0) {
            if (!JSON_NODE_HOLDS_VALUE(v) || json_node_get_value_type(v) != G_TYPE_STRING) {
                error_setg(&err, "QMP input member 'execute' must be a string");
                break;
            }
            name = json_node_get_string(v);
        } else if (strcmp(k, "arguments") == 0) {
            if (!JSON_NODE_HOLDS_OBJECT(v)) {
                error_setg(&err, "QMP input member 'arguments' must be an object");
                break;
            }
        } else if (strcmp(k, "id") != 0) {
            error_setg(&err, "QMP input member '%s' is unexpected", k);
            break;
        }
    }
    g_list_free(keys);
    if (err) {
        goto fail;
    }
    if (!name) {
        error_setg(&err, "QMP input lacks member 'execute'");
        goto fail;
    }
    /* The parser's tree is ours: checking fills defaults into it. */
    args = json_object_has_member(msg, "arguments")
           ? json_object_ref(json_object_get_object_member(msg, "arguments"))
           : json_object_new();

    if (!c->negotiated) {
        if (strcmp(name, "qmp_capabilities") != 0) {
            error_set(&err, ERROR_CLASS_COMMAND_NOT_FOUND,
                      "Expecting capabilities negotiation with 'qmp_capabilities'");
            goto fail;
        }
        if (!qapi_check_command(name, args, &err)) {
            goto fail;
        }
        if (json_object_has_member(args, "enable") &&
            json_array_get_length(json_object_get_array_member(args, "enable")) > 0) {
            error_setg(&err, "Capability '%s' not available",
                       json_array_get_string_element(
                           json_object_get_array_member(args, "enable"), 0));
            goto fail;
        }
        c->negotiated = true;
        send_return(c, object_node(json_object_new()), id);
        goto out;
    }
    if (strcmp(name, "qmp_capabilities") == 0) {
        error_set(&err, ERROR_CLASS_COMMAND_NOT_FOUND,
                  "Capabilities negotiation is already complete, command ignored");
        goto fail;
    }
    JsonGenerator *gen = json_generator_new();
    JsonNode *an = object_node(json_object_ref(args));
    json_generator_set_root(gen, an);
    raw_args = json_generator_to_data(gen, NULL);
    json_node_unref(an);
    g_object_unref(gen);
    if (!qapi_check_command(name, args, &err)) {
        goto fail;
    }
    monitors_suspend(true);
    JsonNode *ret = sd_qmp_dispatch(name, args, raw_args, &err);
    monitors_suspend(false);
    if (!ret) {
        goto fail;
    }
    send_return(c, ret, id);
    goto out;

fail:
    send_error(c, err, id);
out:
    if (args) {
        json_object_unref(args);
    }
    g_free(raw_args);
    g_object_unref(parser);
}

/* ---- input --------------------------------------------------------------------------- */

static void report_input_error(QmpConn *c, const char *msg)
{
    Error *err = NULL;
    error_setg(&err, "JSON parse error, %s", msg);
    send_error(c, err, NULL);
}

static bool is_word_char(char ch)
{
    return g_ascii_isalnum(ch) || ch == '-' || ch == '+' || ch == '.';
}

/*
 * A bare word inside a value must be a literal or a number: anything else
 * (a client typing "bad json") is reported at once, instead of waiting
 * forever for brackets that will never balance.
 */
static bool word_valid(const char *w, size_t len)
{
    if (len == 4 && (memcmp(w, "true", 4) == 0 || memcmp(w, "null", 4) == 0)) {
        return true;
    }
    if (len == 5 && memcmp(w, "false", 5) == 0) {
        return true;
    }
    if (len == 0 || !(g_ascii_isdigit(w[0]) || w[0] == '-')) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!g_ascii_isdigit(w[i]) && !strchr("-+.eE", w[i])) {
            return false;
        }
    }
    return true;
}

static void conn_scan_reset(QmpConn *c)
{
    c->depth = 0;
    c->in_string = c->escape = false;
    c->word_len = 0;
    g_string_truncate(c->in, 0);
}

/* Feeds bytes to the scanner; each complete top-level value is handled at once. */
static void conn_scan(QmpConn *c, const char *buf, size_t len)
{
    for (size_t i = 0; i < len && !c->dead; i++) {
        char ch = buf[i];
        bool space = ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';

        if (c->depth == 0) {
            if (ch == '{' || ch == '[') {
                if (c->junk) {
                    report_input_error(c, "invalid token outside a JSON value");
                    c->junk = false;
                }
                c->depth = 1;
                g_string_truncate(c->in, 0);
                g_string_append_c(c->in, ch);
            } else if (ch == '\n') {
                /* Junk is reported once per line, however many tokens it has. */
                if (c->junk) {
                    report_input_error(c, "invalid token outside a JSON value");
                    c->junk = false;
                }
            } else if (!space) {
                c->junk = true;
            }
            continue;
        }
        g_string_append_c(c->in, ch);
        if (!c->in_string) {
            if (is_word_char(ch)) {
                if (c->word_len < sizeof(c->word)) {
                    c->word[c->word_len] = ch;
                }
                c->word_len++;
                continue;
            }
            if (c->word_len) {
                bool ok = c->word_len <= sizeof(c->word) && word_valid(c->word, c->word_len);
                c->word_len = 0;
                if (!ok) {
                    report_input_error(c, "invalid token in a JSON value");
                    conn_scan_reset(c);
                    /* The byte that ended the word may start a new command. */
                    if (ch == '{' || ch == '[') {
                        i--;
                    }
                    continue;
                }
            }
        }
        if (c->in_string) {
            if (c->escape) {
                c->escape = false;
            } else if (ch == '\\') {
                c->escape = true;
            } else if (ch == '"') {
                c->in_string = false;
            }
        } else if (ch == '"') {
            c->in_string = true;
        } else if (ch == '{' || ch == '[') {
            c->depth++;
        } else if (ch == '}' || ch == ']') {
            c->depth--;
        }
        if (c->depth == 0) {
            handle_message(c, c->in->str, c->in->len);
            if (!c->dead) {
                g_string_truncate(c->in, 0);
            }
        } else if (c->in->len > QMP_MAX_INPUT || c->depth > QMP_MAX_DEPTH) {
            report_input_error(c, "input too large or too deeply nested");
            conn_scan_reset(c);
        }
    }
}

static void conn_read_all(QmpConn *c)
{
    char buf[4096];

    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            return;
        }
        if (n <= 0) {
            conn_close(c);
            return;
        }
        conn_scan(c, buf, n);
        if (c->dead) {
            return;
        }
    }
}

static void conn_read(void *opaque)
{
    QmpConn *c = opaque;
    c->busy = true;
    conn_read_all(c);
    c->busy = false;
    if (c->dead) {
        g_free(c);
    }
}

static void conn_write(void *opaque)
{
    conn_flush(opaque);
}

static void conn_update_handlers(QmpConn *c)
{
    if (c->dead) {
        return;
    }
    aio_set_fd_handler(aio_context_main(), c->fd, true, qmp_suspended ? NULL : conn_read,
                       c->out->len ? conn_write : NULL, NULL, NULL, c);
}

static void monitor_accept(int fd, void *opaque)
{
    QmpConn *c = g_new0(QmpConn, 1);
    c->mon = opaque;
    c->fd = fd;
    c->in = g_string_new(NULL);
    c->out = g_string_new(NULL);
    g_ptr_array_add(qmp_conns, c);

    JsonObject *qmp = json_object_new();
    json_object_set_member(qmp, "version", sd_qmp_version());
    json_object_set_array_member(qmp, "capabilities", json_array_new());
    JsonObject *greeting = json_object_new();
    json_object_set_object_member(greeting, "QMP", qmp);
    JsonNode *n = object_node(greeting);
    /* The client may already be gone: busy keeps c valid until we are done. */
    c->busy = true;
    conn_send(c, n);
    json_node_unref(n);
    c->busy = false;
    if (c->dead) {
        g_free(c);
    } else {
        conn_update_handlers(c);
    }
}

bool sd_monitor_add(const char *spec, Error **errp)
{
    JsonObject *kv = keyval_parse(spec, "chardev", errp);
    bool ok = false, pretty = false;

    if (!kv) {
        return false;
    }
    GList *keys = json_object_get_members(kv);
    for (GList *l = keys; l; l = l->next) {
        const char *k = l->data;
        JsonNode *v = json_object_get_member(kv, k);
        const char *s = JSON_NODE_HOLDS_VALUE(v) ? json_node_get_string(v) : NULL;
        if (!s || (strcmp(k, "chardev") && strcmp(k, "mode") && strcmp(k, "pretty"))) {
            error_setg(errp, "Invalid parameter '%s'", k);
            g_list_free(keys);
            goto out;
        }
        if (strcmp(k, "mode") == 0 && strcmp(s, "control") != 0) {
            error_setg(errp, "Only QMP monitors are supported (mode=control)");
            g_list_free(keys);
            goto out;
        }
        if (strcmp(k, "pretty") == 0) {
            if (strcmp(s, "on") == 0) {
                pretty = true;
            } else if (strcmp(s, "off") != 0) {
                error_setg(errp, "Parameter 'pretty' expects 'on' or 'off'");
                g_list_free(keys);
                goto out;
            }
        }
    }
    g_list_free(keys);
    if (!json_object_has_member(kv, "chardev")) {
        error_setg(errp, "Parameter 'chardev' is missing");
        goto out;
    }
    const char *id = json_object_get_string_member(kv, "chardev");
    SdChardev *chr = sd_chardev_find(id);
    if (!chr) {
        error_setg(errp, "chardev \"%s\" not found", id);
        goto out;
    }
    SdMonitor *mon = g_new0(SdMonitor, 1);
    mon->pretty = pretty;
    if (!sd_chardev_set_handler(chr, monitor_accept, mon, errp)) {
        g_free(mon);
        goto out;
    }
    if (!qmp_conns) {
        qmp_conns = g_ptr_array_new();
        qmp_monitors = g_ptr_array_new_with_free_func(g_free);
    }
    g_ptr_array_add(qmp_monitors, mon);
    ok = true;
out:
    json_object_unref(kv);
    return ok;
}

void sd_monitor_cleanup(void)
{
    /* Give every client up to a second in all to take its last replies (the quit answer). */
    gint64 deadline = g_get_monotonic_time() + G_USEC_PER_SEC;
    while (qmp_conns && qmp_conns->len) {
        QmpConn *c = g_ptr_array_index(qmp_conns, 0);
        bool alive = true;
        while (alive && c->out->len) {
            alive = conn_flush(c);    /* false: c is closed and freed */
            gint64 left = (deadline - g_get_monotonic_time()) / 1000;
            struct pollfd pfd = { .fd = alive ? c->fd : -1, .events = POLLOUT };
            if (!alive || !c->out->len || left <= 0 || poll(&pfd, 1, (int)left) <= 0) {
                break;
            }
        }
        if (!alive) {
            continue;
        }
        conn_close(c);
    }
    if (qmp_conns) {
        g_ptr_array_free(qmp_conns, true);
        g_ptr_array_free(qmp_monitors, true);
        qmp_conns = qmp_monitors = NULL;
    }
}
