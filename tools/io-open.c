/*
 * How ringblk-io opens an image (part of tools/io-cmds.c's interface).
 *
 * A file name is a -drive: the settings become a DriveOptions tree that
 * qapi_drive_to_blockdev() expands (raw over file). The block layer tells
 * options given from schema defaults, so only what differs from the
 * expansion of the bare file name reaches bdrv_open().
 *
 * --image-opts takes a full BlockdevOptions string; the command line's
 * -t/-i/-d/-r/-U/-o are merged into it where it does not set them, and the
 * result goes back to text for bdrv_open_string(), so that again only
 * given options count as given.
 */
#include "tools/io-cmds.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "engine-opts.h"
#include "qapi/qapi.h"

JsonObject *io_child_object(JsonObject *obj, const char *key)
{
    if (!json_object_has_member(obj, key)) {
        json_object_set_object_member(obj, key, json_object_new());
    }
    return json_object_get_object_member(obj, key);
}

/* Cache modes as -drive defines them: (direct, no-flush). */
bool io_cache_mode(const char *mode, bool *direct, bool *no_flush)
{
    static const struct { const char *name; bool direct, no_flush; } modes[] = {
        { "none", true, false },
        { "writeback", false, false },
        { "writethrough", false, false },
        { "directsync", true, false },
        { "unsafe", false, true },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(modes); i++) {
        if (!strcmp(mode, modes[i].name)) {
            *direct = modes[i].direct;
            *no_flush = modes[i].no_flush;
            return true;
        }
    }
    return false;
}

/* Sets key in a keyval (string leaves) or JSON (typed) tree unless the user did. */
/* qemu-io's default discard mode (it opens images with BDRV_O_UNMAP). */
#define IO_DEFAULT_DISCARD "unmap"

static void io_set_default(JsonObject *obj, const char *key, const char *kv_value,
                           bool from_keyval)
{
    if (json_object_has_member(obj, key)) {
        return;
    }
    if (from_keyval) {
        json_object_set_string_member(obj, key, kv_value);
    } else if (!strcmp(kv_value, "on") || !strcmp(kv_value, "off")) {
        json_object_set_boolean_member(obj, key, !strcmp(kv_value, "on"));
    } else {
        json_object_set_string_member(obj, key, kv_value);
    }
}

/* Merges src's members into dst (nested objects recursively); src wins. */
static void io_merge(JsonObject *dst, JsonObject *src)
{
    GList *members = json_object_get_members(src);
    for (GList *l = members; l; l = l->next) {
        JsonNode *n = json_object_get_member(src, l->data);
        if (JSON_NODE_HOLDS_OBJECT(n) && json_object_has_member(dst, l->data) &&
            JSON_NODE_HOLDS_OBJECT(json_object_get_member(dst, l->data))) {
            io_merge(json_object_get_object_member(dst, l->data), json_node_get_object(n));
        } else {
            json_object_set_member(dst, l->data, json_node_copy(n));
        }
    }
    g_list_free(members);
}

/*
 * --image-opts with -t/-i/-o on the command line: the settings go to every
 * node of the chain that takes them (cache to all, aio and engine options
 * to the file node at the bottom), unless the options already set them.
 */
static bool io_apply_to_tree(JsonObject *node, const IoOpenArgs *args, bool from_keyval,
                             Error **errp)
{
    bool direct, no_flush;
    const char *driver = json_object_has_member(node, "driver") ?
        json_object_get_string_member(node, "driver") : NULL;

    if (args->cache) {
        if (!io_cache_mode(args->cache, &direct, &no_flush)) {
            error_setg(errp, "Invalid cache option: %s", args->cache);
            return false;
        }
        JsonObject *cache = io_child_object(node, "cache");
        io_set_default(cache, "direct", direct ? "on" : "off", from_keyval);
        io_set_default(cache, "no-flush", no_flush ? "on" : "off", from_keyval);
    }
    if (args->read_only) {
        io_set_default(node, "read-only", "on", from_keyval);
    }
    if (args->force_share) {
        io_set_default(node, "force-share", "on", from_keyval);
    }
    /* qemu-io opens images with discard=unmap unless -d says otherwise. */
    io_set_default(node, "discard", args->discard ? args->discard : IO_DEFAULT_DISCARD,
                   from_keyval);
    if (driver && (!strcmp(driver, "file") || !strcmp(driver, "host_device"))) {
        if (args->aio) {
            io_set_default(node, "aio", args->aio, from_keyval);
        }
        if (args->extra) {
            JsonObject *extra = engine_opts_parse(args->extra, errp);
            if (!extra) {
                return false;
            }
            io_merge(node, extra);
            json_object_unref(extra);
        }
    }
    for (const char *const *child = (const char *const[]){ "file", "image", NULL };
         *child; child++) {
        if (json_object_has_member(node, *child) &&
            JSON_NODE_HOLDS_OBJECT(json_object_get_member(node, *child)) &&
            !io_apply_to_tree(json_object_get_object_member(node, *child), args,
                              from_keyval, errp)) {
            return false;
        }
    }
    return true;
}

/* A filename with -f/-t/-i/-d/-r/-U/-o becomes a -drive, expanded by the schema. */
static JsonObject *io_drive_options(const char *filename, const IoOpenArgs *args,
                                    Error **errp)
{
    JsonObject *drive;

    if (args->extra) {
        bool from_keyval;
        drive = qapi_parse_options(args->extra, NULL, &from_keyval, errp);
        if (!drive) {
            return NULL;
        }
    } else {
        drive = json_object_new();
    }
    json_object_set_string_member(drive, "file", filename);
    if (args->format) {
        json_object_set_string_member(drive, "format", args->format);
    }
    if (args->cache) {
        json_object_set_string_member(drive, "cache", args->cache);
    }
    if (args->aio) {
        json_object_set_string_member(drive, "aio", args->aio);
    }
    json_object_set_string_member(drive, "discard",
                                  args->discard ? args->discard : IO_DEFAULT_DISCARD);
    if (args->read_only) {
        json_object_set_string_member(drive, "read-only", "on");
    }
    if (args->force_share) {
        json_object_set_string_member(drive, "force-share", "on");
    }
    JsonObject *tree = qapi_drive_to_blockdev(drive, errp);
    json_object_unref(drive);
    return tree;
}

/*
 * The members of tree that differ from base: what the user actually chose.
 * "driver" and "filename" always stay. The block layer tells options given
 * from schema defaults (io_uring-only keys are refused with other engines
 * only when given), so the defaults the -drive expansion fills in must not
 * reach it as if they had been given.
 */
static JsonObject *io_tree_diff(JsonObject *tree, JsonObject *base)
{
    JsonObject *out = json_object_new();
    GList *members = json_object_get_members(tree);

    for (GList *l = members; l; l = l->next) {
        const char *key = l->data;
        JsonNode *n = json_object_get_member(tree, key);
        JsonNode *b = base && json_object_has_member(base, key) ?
                      json_object_get_member(base, key) : NULL;
        if (!strcmp(key, "driver") || !strcmp(key, "filename")) {
            json_object_set_member(out, key, json_node_copy(n));
        } else if (JSON_NODE_HOLDS_OBJECT(n)) {
            JsonObject *sub = io_tree_diff(json_node_get_object(n),
                                           b && JSON_NODE_HOLDS_OBJECT(b) ?
                                           json_node_get_object(b) : NULL);
            if (json_object_get_size(sub) > 0) {
                json_object_set_object_member(out, key, sub);
            } else {
                json_object_unref(sub);
            }
        } else if (!b || !json_node_equal(n, b)) {
            json_object_set_member(out, key, json_node_copy(n));
        }
    }
    g_list_free(members);
    return out;
}

/* A typed JSON value as keyval text: on/off, decimal numbers. */
static JsonNode *io_value_to_keyval(JsonNode *n)
{
    if (!JSON_NODE_HOLDS_VALUE(n)) {
        return NULL;
    }
    GType t = json_node_get_value_type(n);
    g_autofree char *text = NULL;
    if (t == G_TYPE_BOOLEAN) {
        text = g_strdup(json_node_get_boolean(n) ? "on" : "off");
    } else if (t == G_TYPE_INT64) {
        text = g_strdup_printf("%" PRId64, json_node_get_int(n));
    } else if (t == G_TYPE_DOUBLE) {
        text = g_strdup_printf("%.17g", json_node_get_double(n));
    } else {
        return NULL;
    }
    JsonNode *out = json_node_alloc();
    json_node_init_string(out, text);
    return out;
}

static void io_json_to_keyval(JsonObject *obj);

static void io_json_array_to_keyval(JsonArray *arr)
{
    for (guint i = 0; i < json_array_get_length(arr); i++) {
        JsonNode *n = json_array_get_element(arr, i);
        if (JSON_NODE_HOLDS_OBJECT(n)) {
            io_json_to_keyval(json_node_get_object(n));
        } else if (JSON_NODE_HOLDS_ARRAY(n)) {
            io_json_array_to_keyval(json_node_get_array(n));
        } else {
            JsonNode *kv = io_value_to_keyval(n);
            if (kv) {
                /* Arrays cannot replace in place: swap the value inside the node. */
                json_node_set_string(n, json_node_get_string(kv));
                json_node_unref(kv);
            }
        }
    }
}

/* Turns every scalar of a typed JSON tree into its keyval string, in place. */
static void io_json_to_keyval(JsonObject *obj)
{
    GList *members = json_object_get_members(obj);
    for (GList *l = members; l; l = l->next) {
        l->data = g_strdup(l->data);
    }
    for (GList *l = members; l; l = l->next) {
        JsonNode *n = json_object_get_member(obj, l->data);
        if (JSON_NODE_HOLDS_OBJECT(n)) {
            io_json_to_keyval(json_node_get_object(n));
        } else if (JSON_NODE_HOLDS_ARRAY(n)) {
            io_json_array_to_keyval(json_node_get_array(n));
        } else {
            JsonNode *kv = io_value_to_keyval(n);
            if (kv) {
                json_object_set_member(obj, l->data, kv);
            }
        }
    }
    g_list_free_full(members, g_free);
}

/*
 * A keyval tree (string leaves) back to "a.b=v,..." text, commas doubled;
 * arrays become numbered keys ("inject-error.0.iotype=read").
 */
static void io_keyval_append(GString *out, const char *prefix, JsonNode *n)
{
    if (JSON_NODE_HOLDS_OBJECT(n) || JSON_NODE_HOLDS_ARRAY(n)) {
        GList *members = NULL;
        JsonArray *arr = NULL;
        guint len;
        if (JSON_NODE_HOLDS_OBJECT(n)) {
            members = json_object_get_members(json_node_get_object(n));
            len = g_list_length(members);
        } else {
            arr = json_node_get_array(n);
            len = json_array_get_length(arr);
        }
        GList *l = members;
        for (guint i = 0; i < len; i++) {
            g_autofree char *idx = g_strdup_printf("%u", i);
            const char *key = arr ? idx : l->data;
            g_autofree char *sub = prefix ? g_strconcat(prefix, ".", key, NULL) : g_strdup(key);
            io_keyval_append(out, sub,
                             arr ? json_array_get_element(arr, i) :
                                   json_object_get_member(json_node_get_object(n), key));
            if (l) {
                l = l->next;
            }
        }
        g_list_free(members);
        return;
    }
    if (out->len) {
        g_string_append_c(out, ',');
    }
    g_string_append_printf(out, "%s=", prefix);
    const char *v = JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING ?
                    json_node_get_string(n) : "";
    for (const char *p = v; *p; p++) {
        g_string_append_c(out, *p);
        if (*p == ',') {
            g_string_append_c(out, ',');
        }
    }
}

int io_open_image(IoSession *s, const char *name, const IoOpenArgs *args, Error **errp)
{
    BlockDriverState *bs;

    if (args->image_opts) {
        bool from_keyval = true;
        if (args->format) {
            error_setg(errp, "--image-opts and --format are mutually exclusive");
            return -EINVAL;
        }
        JsonObject *opts = qapi_parse_options(name, NULL, &from_keyval, errp);
        if (!opts) {
            return -EINVAL;
        }
        /*
         * Settings from the command line are keyval text; to merge them into
         * JSON options, the JSON's values become keyval strings too (the
         * schema converts them back).
         */
        if (!from_keyval && (args->cache || args->aio || args->extra || args->read_only ||
                             args->force_share || args->discard)) {
            io_json_to_keyval(opts);
            from_keyval = true;
        }
        if (!io_apply_to_tree(opts, args, from_keyval, errp)) {
            json_object_unref(opts);
            return -EINVAL;
        }
        /* Back to text, so that the block layer sees only what was given. */
        JsonNode *root = json_node_init_object(json_node_alloc(), opts);
        char *text;
        if (from_keyval) {
            GString *kv = g_string_new(NULL);
            io_keyval_append(kv, NULL, root);
            text = g_string_free(kv, false);
        } else {
            text = json_to_string(root, false);
        }
        json_node_unref(root);
        json_object_unref(opts);
        bs = bdrv_open_string(text, errp);
        g_free(text);
    } else {
        JsonObject *tree = io_drive_options(name, args, errp);
        if (!tree) {
            return -EINVAL;
        }
        /*
         * The base is what the schema fills in by itself, so discard is
         * its schema default there (ignore), not qemu-io's unmap.
         */
        IoOpenArgs plain = { .format = args->format, .discard = "ignore" };
        JsonObject *base = io_drive_options(name, &plain, &error_abort);
        JsonObject *given = io_tree_diff(tree, base);
        bs = bdrv_open(given, errp);
        json_object_unref(given);
        json_object_unref(base);
        json_object_unref(tree);
    }
    if (!bs) {
        return -EIO;
    }
    if (s->home_ctx != bdrv_get_aio_context(bs) &&
        bdrv_set_aio_context(bs, s->home_ctx, errp) < 0) {
        bdrv_unref(bs);
        return -EIO;
    }
    s->bs = bs;
    return 0;
}

void io_close_image(IoSession *s)
{
    if (!s->bs) {
        return;
    }
    io_wait_aio(s);
    AioContext *main_ctx = aio_context_main();
    if (bdrv_get_aio_context(s->bs) != main_ctx) {
        bdrv_set_aio_context(s->bs, main_ctx, &error_abort);
    }
    bdrv_unref(s->bs);
    s->bs = NULL;
}
