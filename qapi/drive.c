/*
 * -drive: the QEMU shorthand for a format node over a protocol node.
 *
 * The shorthand is itself a schema type (DriveOptions), so qapi_check()
 * validates it first; the mapping below only moves checked values into a
 * BlockdevOptions tree, which is checked again to fill its defaults:
 *
 *   raw node:  driver=raw, node-name, read-only, auto-read-only, force-share,
 *              discard, detect-zeroes, cache.{direct,no-flush,writeback}
 *   file node: driver=file (host_device for a block device), filename, aio,
 *              locking, the io_uring options, read-only, auto-read-only,
 *              force-share, discard, cache.{direct,no-flush}
 *
 * cache= follows QEMU: none = direct; writeback = neither; writethrough =
 * writeback off; directsync = direct, writeback off; unsafe = no-flush.
 * Write-through (cache.writeback=off) belongs to the node requests enter,
 * the raw node; the file node keeps the default (on).
 */
#include "qapi/qapi.h"

#include <string.h>
#include <sys/stat.h>

/* Members copied to the file node when given. */
static const char *const file_node_keys[] = {
    "aio", "locking", "aio-queue-depth", "fixed-files", "fixed-buffers", "sqpoll",
    "sq-thread-idle", "sq-thread-cpu", "iopoll", "restrict", "share-ring",
};

/* Members inherited by both nodes (as QEMU's children inherit them). */
static const char *const shared_keys[] = {
    "read-only", "auto-read-only", "force-share", "discard",
};

/* Members of the raw node only. */
static const char *const format_node_keys[] = {
    "node-name", "detect-zeroes",
};

/*
 * A deep copy with fresh value nodes: json_node_copy() shares values, and
 * qapi_check() rewrites values in place.
 */
static JsonNode *json_deep_copy(JsonNode *node)
{
    switch (JSON_NODE_TYPE(node)) {
    case JSON_NODE_OBJECT: {
        JsonObject *src = json_node_get_object(node);
        JsonObject *dst = json_object_new();
        GList *names = json_object_get_members(src);
        for (GList *l = names; l; l = l->next) {
            json_object_set_member(dst, l->data,
                                   json_deep_copy(json_object_get_member(src, l->data)));
        }
        g_list_free(names);
        JsonNode *n = json_node_init_object(json_node_alloc(), dst);
        json_object_unref(dst);
        return n;
    }
    case JSON_NODE_ARRAY: {
        JsonArray *src = json_node_get_array(node);
        JsonArray *dst = json_array_new();
        for (guint i = 0; i < json_array_get_length(src); i++) {
            json_array_add_element(dst, json_deep_copy(json_array_get_element(src, i)));
        }
        JsonNode *n = json_node_init_array(json_node_alloc(), dst);
        json_array_unref(dst);
        return n;
    }
    case JSON_NODE_VALUE: {
        JsonNode *n = json_node_alloc();
        GValue v = G_VALUE_INIT;
        json_node_get_value(node, &v);
        json_node_init(n, JSON_NODE_VALUE);
        json_node_set_value(n, &v);
        g_value_unset(&v);
        return n;
    }
    case JSON_NODE_NULL:
        break;
    }
    return json_node_init_null(json_node_alloc());
}

static void copy_member_if_absent(JsonObject *dst, JsonObject *src, const char *name)
{
    JsonNode *node = json_object_get_member(src, name);
    if (node && !json_object_has_member(dst, name)) {
        json_object_set_member(dst, name, json_deep_copy(node));
    }
}

static const char *protocol_driver(const char *filename)
{
    struct stat st;
    /* QEMU picks host_device for block devices the same way. */
    if (stat(filename, &st) == 0 && S_ISBLK(st.st_mode)) {
        return "host_device";
    }
    return "file";
}

/* Sets cache.<name> = value in node's cache object unless already there. */
static void set_cache_member(JsonObject *node, const char *name, bool value)
{
    JsonObject *cache;
    if (json_object_has_member(node, "cache") &&
        JSON_NODE_HOLDS_OBJECT(json_object_get_member(node, "cache"))) {
        cache = json_object_get_object_member(node, "cache");
    } else {
        cache = json_object_new();
        json_object_set_object_member(node, "cache", cache);
    }
    if (!json_object_has_member(cache, name)) {
        json_object_set_boolean_member(cache, name, value);
    }
}

JsonObject *qapi_drive_to_blockdev(JsonObject *drive, Error **errp)
{
    JsonNode *copy_node = json_node_init_object(json_node_alloc(), drive);
    JsonNode *dup = json_deep_copy(copy_node);
    json_node_unref(copy_node);
    JsonObject *opts = json_node_dup_object(dup);
    json_node_unref(dup);

    JsonObject *top = NULL;
    JsonObject *file = NULL;

    /* Lenient keyval mode: strings convert, typed values pass. */
    if (!qapi_check("DriveOptions", opts, true, errp)) {
        goto out;
    }

    const char *iface = json_object_get_string_member(opts, "if");
    if (strcmp(iface, "none") != 0) {
        error_setg(errp, "Drive interface '%s' is not supported: ringblk has no guest "
                   "devices (use if=none)", iface);
        goto out;
    }

    const char *filename = json_object_get_string_member(opts, "file");
    if (g_str_has_prefix(filename, "json:")) {
        file = qapi_parse_json_object(filename, errp);
        if (!file) {
            error_prepend(errp, "Parameter 'file': ");
            goto out;
        }
    } else {
        file = json_object_new();
        json_object_set_string_member(file, "driver", protocol_driver(filename));
        json_object_set_string_member(file, "filename", filename);
    }

    bool direct = false, no_flush = false, writeback = true;
    switch (qapi_enum_parse("DriveCacheMode", json_object_get_string_member(opts, "cache"))) {
    case DRIVE_CACHE_MODE_NONE:
        direct = true;
        break;
    case DRIVE_CACHE_MODE_WRITEBACK:
        break;
    case DRIVE_CACHE_MODE_WRITETHROUGH:
        writeback = false;
        break;
    case DRIVE_CACHE_MODE_DIRECTSYNC:
        direct = true;
        writeback = false;
        break;
    case DRIVE_CACHE_MODE_UNSAFE:
        no_flush = true;
        break;
    default:
        g_assert_not_reached();
    }

    /* Engine options only exist on the file and host_device drivers. */
    JsonNode *drv = json_object_get_member(file, "driver");
    const char *file_driver = drv && JSON_NODE_HOLDS_VALUE(drv) &&
                              json_node_get_value_type(drv) == G_TYPE_STRING ?
                              json_node_get_string(drv) : "";
    if (strcmp(file_driver, "file") == 0 || strcmp(file_driver, "host_device") == 0) {
        for (size_t i = 0; i < G_N_ELEMENTS(file_node_keys); i++) {
            copy_member_if_absent(file, opts, file_node_keys[i]);
        }
    }
    for (size_t i = 0; i < G_N_ELEMENTS(shared_keys); i++) {
        copy_member_if_absent(file, opts, shared_keys[i]);
    }
    set_cache_member(file, "direct", direct);
    set_cache_member(file, "no-flush", no_flush);

    top = json_object_new();
    json_object_set_string_member(top, "driver", json_object_get_string_member(opts, "format"));
    for (size_t i = 0; i < G_N_ELEMENTS(format_node_keys); i++) {
        copy_member_if_absent(top, opts, format_node_keys[i]);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(shared_keys); i++) {
        copy_member_if_absent(top, opts, shared_keys[i]);
    }
    set_cache_member(top, "direct", direct);
    set_cache_member(top, "no-flush", no_flush);
    set_cache_member(top, "writeback", writeback);
    json_object_set_object_member(top, "file", file);
    file = NULL;

    if (!qapi_check("BlockdevOptions", top, false, errp)) {
        json_object_unref(top);
        top = NULL;
    }

out:
    if (file) {
        json_object_unref(file);
    }
    json_object_unref(opts);
    return top;
}
