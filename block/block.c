/*
 * Nodes: opening from options, names and the node list, references,
 * close (drain + flush), reopen, AioContext moves and information.
 *
 * A node is opened from a BlockdevOptions tree checked against the schema
 * (qapi_check); its "driver" selects a BlockDriver ops table. Format
 * drivers (raw) get their "file" child opened first: a nested options
 * object, or the node-name of an existing node. Children inherit
 * read-only, cache.* and discard from their parent (a child may tighten
 * them, never loosen them).
 *
 * Nodes are created and destroyed in the main thread; a node may live in
 * another AioContext (an IOThread's), in which case the steps that touch
 * the context (engine, bottom halves) run there through aio_wait_bh_oneshot.
 */
#include "block/block_int.h"
#include "qapi/qapi.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static BlockDriverState *node_list;
static unsigned auto_node_counter;

static const BlockDriver *const block_drivers[] = {
    &bdrv_file,
    &bdrv_host_device,
    &bdrv_raw,
    &bdrv_null_co,
    &bdrv_null_aio,
    &bdrv_blkdebug,
};

const BlockDriver *bdrv_find_driver(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(block_drivers); i++) {
        if (name && !strcmp(block_drivers[i]->format_name, name)) {
            return block_drivers[i];
        }
    }
    return NULL;
}

/* ---- option access ------------------------------------------------------------- */

/* Member at a dotted path ("cache.direct"), or NULL. */
static JsonNode *opt_lookup(JsonObject *o, const char *dotted_key)
{
    const char *key = dotted_key;
    while (o) {
        const char *dot = strchr(key, '.');
        if (!dot) {
            return json_object_has_member(o, key) ? json_object_get_member(o, key) : NULL;
        }
        char *part = g_strndup(key, dot - key);
        JsonNode *n = json_object_has_member(o, part) ? json_object_get_member(o, part) : NULL;
        g_free(part);
        if (!n || !JSON_NODE_HOLDS_OBJECT(n)) {
            return NULL;
        }
        o = json_node_get_object(n);
        key = dot + 1;
    }
    return NULL;
}

bool bdrv_opt_has(JsonObject *o, const char *dotted_key)
{
    JsonNode *n = opt_lookup(o, dotted_key);
    return n && !JSON_NODE_HOLDS_NULL(n);
}

bool bdrv_opt_bool(JsonObject *o, const char *dotted_key, bool def)
{
    JsonNode *n = opt_lookup(o, dotted_key);
    if (!n || !JSON_NODE_HOLDS_VALUE(n)) {
        return def;
    }
    if (json_node_get_value_type(n) == G_TYPE_BOOLEAN) {
        return json_node_get_boolean(n);
    }
    if (json_node_get_value_type(n) == G_TYPE_STRING) {
        const char *s = json_node_get_string(n);
        if (!strcmp(s, "on") || !strcmp(s, "true") || !strcmp(s, "yes")) {
            return true;
        }
        if (!strcmp(s, "off") || !strcmp(s, "false") || !strcmp(s, "no")) {
            return false;
        }
    }
    return def;
}

int64_t bdrv_opt_int(JsonObject *o, const char *dotted_key, int64_t def)
{
    JsonNode *n = opt_lookup(o, dotted_key);
    if (!n || !JSON_NODE_HOLDS_VALUE(n)) {
        return def;
    }
    GType t = json_node_get_value_type(n);
    if (t == G_TYPE_INT64) {
        return json_node_get_int(n);
    }
    if (t == G_TYPE_DOUBLE) {
        return (int64_t)json_node_get_double(n);
    }
    if (t == G_TYPE_STRING) {
        char *end;
        const char *s = json_node_get_string(n);
        int64_t v = g_ascii_strtoll(s, &end, 0);
        return end != s && !*end ? v : def;
    }
    return def;
}

const char *bdrv_opt_str(JsonObject *o, const char *dotted_key, const char *def)
{
    JsonNode *n = opt_lookup(o, dotted_key);
    if (n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING) {
        return json_node_get_string(n);
    }
    if (n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_BOOLEAN) {
        return json_node_get_boolean(n) ? "on" : "off";
    }
    return def;
}

static JsonNode *json_deep_copy_node(JsonNode *n);

static JsonObject *json_deep_copy_object(JsonObject *o)
{
    JsonObject *c = json_object_new();
    JsonObjectIter it;
    const char *name;
    JsonNode *member;
    json_object_iter_init(&it, o);
    while (json_object_iter_next(&it, &name, &member)) {
        json_object_set_member(c, name, json_deep_copy_node(member));
    }
    return c;
}

static JsonNode *json_deep_copy_node(JsonNode *n)
{
    if (JSON_NODE_HOLDS_OBJECT(n)) {
        JsonNode *c = json_node_new(JSON_NODE_OBJECT);
        json_node_take_object(c, json_deep_copy_object(json_node_get_object(n)));
        return c;
    }
    if (JSON_NODE_HOLDS_ARRAY(n)) {
        JsonArray *a = json_node_get_array(n), *ca = json_array_new();
        for (guint i = 0; i < json_array_get_length(a); i++) {
            json_array_add_element(ca, json_deep_copy_node(json_array_get_element(a, i)));
        }
        JsonNode *c = json_node_new(JSON_NODE_ARRAY);
        json_node_take_array(c, ca);
        return c;
    }
    return json_node_copy(n);
}

static void opt_set_bool_dotted(JsonObject *o, const char *parent, const char *key, bool v)
{
    JsonObject *p = o;
    if (parent) {
        if (!json_object_has_member(o, parent) ||
            !JSON_NODE_HOLDS_OBJECT(json_object_get_member(o, parent))) {
            json_object_set_object_member(o, parent, json_object_new());
        }
        p = json_object_get_object_member(o, parent);
    }
    json_object_set_boolean_member(p, key, v);
}

/* ---- node names ------------------------------------------------------------------- */

static bool node_name_wellformed(const char *name)
{
    if (!g_ascii_isalpha(name[0])) {
        return false;
    }
    for (const char *p = name; *p; p++) {
        if (!g_ascii_isalnum(*p) && *p != '-' && *p != '.' && *p != '_') {
            return false;
        }
    }
    return true;
}

BlockDriverState *bdrv_find_node(const char *node_name)
{
    for (BlockDriverState *bs = node_list; bs; bs = bs->next_node) {
        if (node_name && !strcmp(bs->node_name, node_name)) {
            return bs;
        }
    }
    return NULL;
}

BlockDriverState *bdrv_next_node(BlockDriverState *prev)
{
    return prev ? prev->next_node : node_list;
}

static void node_list_remove(BlockDriverState *bs)
{
    for (BlockDriverState **p = &node_list; *p; p = &(*p)->next_node) {
        if (*p == bs) {
            *p = bs->next_node;
            return;
        }
    }
}

static void node_list_append(BlockDriverState *bs)
{
    BlockDriverState **p = &node_list;
    while (*p) {
        p = &(*p)->next_node;
    }
    bs->next_node = NULL;
    *p = bs;
}

/* ---- open ------------------------------------------------------------------------- */

static void bdrv_refresh_passthrough(BlockDriverState *bs);

static void bdrv_refresh_limits(BlockDriverState *bs)
{
    if (bs->file) {
        /* Formats pass unaligned requests through: the protocol node aligns. */
        bs->bl = (BlockLimits){ 1, bs->file->bl.min_mem_alignment, 0, 0 };
    } else {
        bs->bl = (BlockLimits){ 1, 1, 0, 0 };
    }
    if (bs->drv->bdrv_refresh_limits) {
        bs->drv->bdrv_refresh_limits(bs, &bs->bl);
    }
    if (bs->bl.request_alignment < 1) {
        bs->bl.request_alignment = 1;
    }
    if (bs->bl.min_mem_alignment < 1) {
        bs->bl.min_mem_alignment = 1;
    }
    bdrv_io_refresh_limits(bs);
    bdrv_refresh_passthrough(bs);
}

/*
 * A node that would only forward requests unchanged is skipped by the
 * request path: one request, one set of checks and clock reads, not two.
 */
static void bdrv_refresh_passthrough(BlockDriverState *bs)
{
    BlockDriverState *f = bs->file;
    bs->passthrough = f && bs->drv->bdrv_is_passthrough && bs->drv->bdrv_is_passthrough(bs) &&
                      bs->read_only == f->read_only && bs->cache_no_flush == f->cache_no_flush &&
                      bs->discard_unmap == f->discard_unmap &&
                      bs->writethrough == f->writethrough &&
                      bs->detect_zeroes == f->detect_zeroes;
}

static BlockDriverState *open_checked(JsonObject *opts, JsonObject *explicit_opts,
                                      const char *opt_prefix, Error **errp);

/* Opens the "file" child of bs from its member of opts (object or node-name). */
static BlockDriverState *open_file_child(BlockDriverState *bs, JsonObject *opts,
                                         JsonObject *explicit_opts, Error **errp)
{
    const char *ckey = bs->drv->child_key ? bs->drv->child_key : "file";
    JsonNode *n = json_object_has_member(opts, ckey) ? json_object_get_member(opts, ckey) : NULL;
    if (!n || JSON_NODE_HOLDS_NULL(n)) {
        error_setg(errp, "A block device must be specified for \"%s\"", ckey);
        return NULL;
    }
    if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING) {
        BlockDriverState *child = bdrv_find_node(json_node_get_string(n));
        if (!child) {
            /* As QEMU says it: the reference could name either. */
            error_setg(errp, "Cannot find device='%s' nor node-name='%s'",
                       json_node_get_string(n), json_node_get_string(n));
            return NULL;
        }
        if (!bs->read_only && child->read_only) {
            error_setg(errp, "Cannot open node '%s' read-write: its file '%s' is read-only",
                       bs->node_name ? bs->node_name : "", child->node_name);
            return NULL;
        }
        bdrv_ref(child);
        return child;
    }
    if (!JSON_NODE_HOLDS_OBJECT(n)) {
        error_setg(errp, "Invalid parameter type for '%s', expected: object or string", ckey);
        return NULL;
    }
    /* Inherit read-only, cache.* and discard unless the child tightens them. */
    JsonObject *copts = json_deep_copy_object(json_node_get_object(n));
    if (bs->read_only) {
        json_object_set_boolean_member(copts, "read-only", true);
    }
    if (bs->cache_direct) {
        opt_set_bool_dotted(copts, "cache", "direct", true);
    }
    if (bs->cache_no_flush) {
        opt_set_bool_dotted(copts, "cache", "no-flush", true);
    }
    if (bs->discard_unmap && !json_object_has_member(copts, "discard")) {
        json_object_set_string_member(copts, "discard", "unmap");
    }
    JsonNode *en = explicit_opts && json_object_has_member(explicit_opts, ckey) ?
                   json_object_get_member(explicit_opts, ckey) : NULL;
    JsonObject *cexplicit = en && JSON_NODE_HOLDS_OBJECT(en) ? json_node_get_object(en) : NULL;
    g_autofree char *cprefix = g_strconcat(bs->opt_prefix, ckey, ".", NULL);
    BlockDriverState *child = open_checked(copts, cexplicit, cprefix, errp);
    json_object_unref(copts);
    return child;
}

static BlockDriverState *open_checked(JsonObject *opts, JsonObject *explicit_opts,
                                      const char *opt_prefix, Error **errp)
{
    const char *driver = bdrv_opt_str(opts, "driver", NULL);
    const BlockDriver *drv = bdrv_find_driver(driver);
    if (!drv) {
        if (driver) {
            error_setg(errp, "Unknown driver '%s'", driver);
        } else {
            error_setg(errp, "Parameter 'driver' is missing");
        }
        return NULL;
    }

    const char *node_name = bdrv_opt_str(opts, "node-name", NULL);
    if (node_name) {
        if (!node_name_wellformed(node_name)) {
            error_setg(errp, "Invalid node-name: '%s'", node_name);
            return NULL;
        }
        if (strlen(node_name) > 31) {
            error_setg(errp, "Node name too long");
            return NULL;
        }
        if (bdrv_find_node(node_name)) {
            error_setg(errp, "Duplicate nodes with node-name='%s'", node_name);
            return NULL;
        }
    }

    BlockDriverState *bs = g_new0(BlockDriverState, 1);
    bs->drv = drv;
    bs->refcnt = 1;
    bs->ctx = aio_context_current();
    aio_context_ref(bs->ctx);
    bs->read_only = bdrv_opt_bool(opts, "read-only", false);
    bs->cache_direct = bdrv_opt_bool(opts, "cache.direct", false);
    bs->cache_no_flush = bdrv_opt_bool(opts, "cache.no-flush", false);
    bs->discard_unmap = !g_strcmp0(bdrv_opt_str(opts, "discard", "ignore"), "unmap") ||
                        !g_strcmp0(bdrv_opt_str(opts, "discard", "ignore"), "on");
    bs->writethrough = !bdrv_opt_bool(opts, "cache.writeback", true);
    const char *dz = bdrv_opt_str(opts, "detect-zeroes", "off");
    bs->detect_zeroes = !strcmp(dz, "unmap") ? 2 : !strcmp(dz, "on") ? 1 : 0;
    bs->node_name = node_name ? g_strdup(node_name) : NULL;
    bs->opaque = drv->instance_size ? g_malloc0(drv->instance_size) : NULL;
    bs->explicit_opts = explicit_opts;
    bs->opt_prefix = opt_prefix;
    bdrv_io_init(bs);

    if (drv->has_file_child) {
        bs->file = open_file_child(bs, opts, explicit_opts, errp);
        if (!bs->file) {
            goto fail;
        }
    }
    if (drv->bdrv_open(bs, opts, errp) < 0) {
        if (bs->file) {
            bdrv_unref(bs->file);
            bs->file = NULL;
        }
        goto fail;
    }
    bs->explicit_opts = NULL;
    bs->opt_prefix = NULL;
    bdrv_refresh_limits(bs);
    if (!bs->node_name) {
        bs->node_name = g_strdup_printf("#block%u", auto_node_counter++);
    }
    bs->options = json_object_ref(opts);
    node_list_append(bs);
    return bs;

fail:
    bdrv_io_cleanup(bs);
    aio_context_unref(bs->ctx);
    g_free(bs->opaque);
    g_free(bs->node_name);
    g_free(bs);
    return NULL;
}

BlockDriverState *bdrv_open_checked(JsonObject *opts, Error **errp)
{
    return open_checked(opts, NULL, "", errp);
}

BlockDriverState *bdrv_open(JsonObject *options, Error **errp)
{
    JsonObject *opts = json_deep_copy_object(options);
    BlockDriverState *bs = NULL;
    if (qapi_check("BlockdevOptions", opts, false, errp)) {
        bs = open_checked(opts, options, "", errp);
    }
    json_object_unref(opts);
    return bs;
}

BlockDriverState *bdrv_open_string(const char *text, Error **errp)
{
    bool from_keyval = false;
    JsonObject *opts = qapi_parse_options(text, NULL, &from_keyval, errp);
    if (!opts) {
        return NULL;
    }
    JsonObject *given = json_deep_copy_object(opts);
    BlockDriverState *bs = NULL;
    if (qapi_check("BlockdevOptions", opts, from_keyval, errp)) {
        bs = open_checked(opts, given, "", errp);
    }
    json_object_unref(given);
    json_object_unref(opts);
    return bs;
}

/* ---- references and close ---------------------------------------------------------- */

void bdrv_ref(BlockDriverState *bs)
{
    bs->refcnt++;
}

static void close_in_ctx(void *opaque)
{
    BlockDriverState *bs = opaque;
    bdrv_io_drop_buffers(bs);
    if (bs->drv->bdrv_close) {
        bs->drv->bdrv_close(bs);
    }
    bdrv_io_cleanup(bs);
}

static void bdrv_close(BlockDriverState *bs)
{
    bdrv_drain(bs);
    if (!bs->read_only && !bs->cache_no_flush) {
        bdrv_flush(bs);
    }
    node_list_remove(bs);
    aio_wait_bh_oneshot(bs->ctx, close_in_ctx, bs);
    if (bs->file) {
        bdrv_unref(bs->file);
    }
    if (bs->options) {
        json_object_unref(bs->options);
    }
    block_acct_cleanup(&bs->stats);
    aio_context_unref(bs->ctx);
    g_free(bs->opaque);
    g_free(bs->node_name);
    g_free(bs->filename);
    g_free(bs);
}

void bdrv_unref(BlockDriverState *bs)
{
    if (!bs) {
        return;
    }
    assert(bs->refcnt > 0);
    if (--bs->refcnt == 0) {
        bdrv_close(bs);
    }
}

void bdrv_drain_all(void)
{
    for (BlockDriverState *bs = node_list; bs; bs = bs->next_node) {
        bdrv_drain(bs);
    }
}

/* ---- simple queries ------------------------------------------------------------------ */

const char *bdrv_get_node_name(const BlockDriverState *bs)
{
    return bs->node_name;
}

const char *bdrv_get_driver_name(const BlockDriverState *bs)
{
    return bs->drv->format_name;
}

const char *bdrv_get_filename(const BlockDriverState *bs)
{
    while (bs->file) {
        bs = bs->file;
    }
    return bs->filename;
}

bool bdrv_is_read_only(const BlockDriverState *bs)
{
    return bs->read_only;
}

int64_t bdrv_getlength(BlockDriverState *bs)
{
    if (bs->drv->bdrv_getlength) {
        int64_t len = bs->drv->bdrv_getlength(bs);
        if (len < 0) {
            return len;
        }
        bs->total_bytes = len;
    }
    return bs->total_bytes;
}

AioContext *bdrv_get_aio_context(BlockDriverState *bs)
{
    return bs->ctx;
}

int bdrv_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes,
                      int64_t *pnum, int *status)
{
    int64_t len = bs->total_bytes;
    if (offset < 0 || bytes <= 0 || offset >= len) {
        return offset == len && bytes > 0 ? -ENXIO : -EINVAL;
    }
    bytes = MIN(bytes, len - offset);
    if (!bs->drv->bdrv_block_status) {
        *pnum = bytes;
        *status = BDRV_BLOCK_DATA;
        return 0;
    }
    int ret = bs->drv->bdrv_block_status(bs, offset, bytes, pnum, status);
    if (ret == 0) {
        assert(*pnum > 0 && *pnum <= bytes);
    }
    return ret;
}

/* ---- truncate and create ------------------------------------------------------------- */

int bdrv_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                  const char *prealloc, Error **errp)
{
    if (!prealloc) {
        prealloc = "off";
    }
    if (strcmp(prealloc, "off") && strcmp(prealloc, "falloc") && strcmp(prealloc, "full")) {
        error_setg(errp, "Unsupported preallocation mode '%s'", prealloc);
        return -ENOTSUP;
    }
    if (offset < 0) {
        error_setg(errp, "Image size cannot be negative");
        return -EINVAL;
    }
    if (bs->read_only) {
        error_setg(errp, "Image is read-only");
        return -EACCES;
    }
    if (!bs->drv->bdrv_truncate) {
        error_setg(errp, "Image format driver does not support resize");
        return -ENOTSUP;
    }
    bdrv_drain(bs);
    int ret = bs->drv->bdrv_truncate(bs, offset, exact, prealloc, errp);
    for (BlockDriverState *b = bs; b; b = b->file) {
        bdrv_getlength(b);
    }
    bdrv_getlength(bs);
    return ret;
}

int bdrv_create_file(const char *filename, int64_t size, const char *prealloc,
                     Error **errp)
{
    return raw_create_file(filename, size, prealloc ? prealloc : "off", errp);
}

/* ---- reopen ---------------------------------------------------------------------------- */

/* A boolean option value as reopen accepts it: JSON bool or keyval on/off. */
static bool reopen_bool(JsonNode *n, const char *name, bool *out, Error **errp)
{
    if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_BOOLEAN) {
        *out = json_node_get_boolean(n);
        return true;
    }
    if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING) {
        const char *v = json_node_get_string(n);
        if (!strcmp(v, "on") || !strcmp(v, "off")) {
            *out = !strcmp(v, "on");
            return true;
        }
    }
    error_setg(errp, "Parameter '%s' expects 'on' or 'off'", name);
    return false;
}

/*
 * Checks the changes meant for one node (prefix: its dotted path, "" or
 * "file.") and computes its new generic values, starting from inherited
 * ones. Keys that are neither generic nor an option the node was opened
 * with are refused; the driver's prepare decides about its own options.
 */
static bool reopen_node_values(BlockDriverState *bs, JsonObject *changes, const char *prefix,
                               BDRVReopenState *st, JsonObject **child_changes,
                               Error **errp)
{
    const char *ckey = bs->drv->child_key ? bs->drv->child_key : "file";
    JsonObjectIter it;
    const char *key;
    JsonNode *member;

    *child_changes = NULL;
    if (!changes) {
        return true;
    }
    json_object_iter_init(&it, changes);
    while (json_object_iter_next(&it, &key, &member)) {
        g_autofree char *name = g_strconcat(prefix, key, NULL);
        if (!strcmp(key, "read-only")) {
            if (!reopen_bool(member, name, &st->read_only, errp)) {
                return false;
            }
        } else if (!strcmp(key, "cache")) {
            if (!JSON_NODE_HOLDS_OBJECT(member)) {
                error_setg(errp, "Invalid parameter type for '%s', expected: object", name);
                return false;
            }
            JsonObjectIter cit;
            const char *ckey2;
            JsonNode *cm;
            json_object_iter_init(&cit, json_node_get_object(member));
            while (json_object_iter_next(&cit, &ckey2, &cm)) {
                g_autofree char *cname = g_strconcat(name, ".", ckey2, NULL);
                bool v;
                if (strcmp(ckey2, "direct") && strcmp(ckey2, "no-flush")) {
                    error_setg(errp, "Cannot change the option '%s'", cname);
                    return false;
                }
                if (!reopen_bool(cm, cname, &v, errp)) {
                    return false;
                }
                if (!strcmp(ckey2, "direct")) {
                    st->cache_direct = v;
                } else {
                    st->cache_no_flush = v;
                }
            }
        } else if (!strcmp(key, "driver") || !strcmp(key, "node-name")) {
            const char *cur = !strcmp(key, "driver") ? bs->drv->format_name : bs->node_name;
            const char *v = JSON_NODE_HOLDS_VALUE(member) &&
                            json_node_get_value_type(member) == G_TYPE_STRING ?
                            json_node_get_string(member) : NULL;
            if (!v || strcmp(v, cur)) {
                error_setg(errp, "Cannot change the option '%s'", name);
                return false;
            }
        } else if (!strcmp(key, ckey) && bs->file && JSON_NODE_HOLDS_OBJECT(member)) {
            *child_changes = json_node_get_object(member);
        } else if (!bs->drv->bdrv_reopen_prepare || !bs->options ||
                   !json_object_has_member(bs->options, key)) {
            error_setg(errp, "Cannot change the option '%s'", name);
            return false;
        }
    }
    return true;
}

typedef struct ReopenRun {
    BDRVReopenState *st;
    int n;
    int ret;
    Error *err;
} ReopenRun;

/* Prepares every node of the chain, then commits all (or aborts those prepared). */
static void reopen_in_ctx(void *opaque)
{
    ReopenRun *run = opaque;
    BDRVReopenState *st = run->st;
    int i, ret = 0;
    for (i = 0; i < run->n; i++) {
        BlockDriverState *b = st[i].bs;
        if (b->drv->bdrv_reopen_prepare) {
            ret = b->drv->bdrv_reopen_prepare(&st[i], &run->err);
            if (ret < 0) {
                break;
            }
        }
    }
    run->ret = ret;
    if (ret < 0) {
        for (int j = i - 1; j >= 0; j--) {
            if (st[j].bs->drv->bdrv_reopen_abort) {
                st[j].bs->drv->bdrv_reopen_abort(&st[j]);
            }
        }
        return;
    }
    for (int j = run->n - 1; j >= 0; j--) {
        BlockDriverState *b = st[j].bs;
        if (b->drv->bdrv_reopen_commit) {
            b->drv->bdrv_reopen_commit(&st[j]);
        }
        b->read_only = st[j].read_only;
        b->cache_direct = st[j].cache_direct;
        b->cache_no_flush = st[j].cache_no_flush;
        bdrv_refresh_limits(b);
    }
}

int bdrv_reopen(BlockDriverState *bs, JsonObject *changes, Error **errp)
{
    int n = 0;
    for (BlockDriverState *b = bs; b; b = b->file) {
        n++;
    }
    BDRVReopenState *st = g_new0(BDRVReopenState, n);

    /*
     * New values, node by node: a node's own changes win; otherwise it
     * inherits what its parent's changes set; otherwise it keeps its own.
     */
    JsonObject *node_changes = changes;
    GString *prefix = g_string_new("");
    int i = 0, ret = 0;
    for (BlockDriverState *b = bs; b; b = b->file, i++) {
        st[i] = (BDRVReopenState){ .bs = b, .read_only = b->read_only,
                                   .cache_direct = b->cache_direct,
                                   .cache_no_flush = b->cache_no_flush,
                                   .changes = node_changes };
        if (i > 0) {
            JsonObject *pc = st[i - 1].changes;
            if (pc && json_object_has_member(pc, "read-only")) {
                st[i].read_only = st[i - 1].read_only;
            }
            if (bdrv_opt_has(pc, "cache.direct")) {
                st[i].cache_direct = st[i - 1].cache_direct;
            }
            if (bdrv_opt_has(pc, "cache.no-flush")) {
                st[i].cache_no_flush = st[i - 1].cache_no_flush;
            }
        }
        JsonObject *child_changes;
        if (!reopen_node_values(b, node_changes, prefix->str, &st[i], &child_changes, errp)) {
            ret = -EINVAL;
            break;
        }
        node_changes = child_changes;
        g_string_append_printf(prefix, "%s.", b->drv->child_key ? b->drv->child_key : "file");
    }
    g_string_free(prefix, TRUE);
    if (ret == 0) {
        for (int j = 1; j < n; j++) {
            if (!st[j - 1].read_only && st[j].read_only) {
                error_setg(errp, "Cannot make node '%s' read-write: its file '%s' stays read-only",
                           st[j - 1].bs->node_name, st[j].bs->node_name);
                ret = -EINVAL;
                break;
            }
        }
    }
    if (ret < 0) {
        g_free(st);
        return ret;
    }

    bdrv_drain(bs);
    /* The drivers touch their engine instance: run in the node's thread. */
    ReopenRun run = { .st = st, .n = n };
    aio_wait_bh_oneshot(bs->ctx, reopen_in_ctx, &run);
    g_free(st);
    /* Parents elsewhere (a child shared by node-name) may no longer match it. */
    for (BlockDriverState *b = node_list; b; b = b->next_node) {
        bdrv_refresh_passthrough(b);
    }
    if (run.ret < 0) {
        error_propagate(errp, run.err);
    }
    return run.ret;
}

/* ---- AioContext moves -------------------------------------------------------------------- */

typedef struct CtxMove {
    BlockDriverState *bs;
    AioContext *ctx;
    Error *err;
    int ret;
} CtxMove;

static void detach_in_ctx(void *opaque)
{
    CtxMove *m = opaque;
    for (BlockDriverState *b = m->bs; b; b = b->file) {
        bdrv_io_drop_buffers(b);
        if (b->drv->bdrv_detach_aio_context) {
            b->drv->bdrv_detach_aio_context(b);
        }
        bdrv_io_detach(b);
    }
}

static void attach_in_ctx(void *opaque)
{
    CtxMove *m = opaque;
    /* Bottom-up: a parent may need its child attached. */
    int n = 0;
    for (BlockDriverState *b = m->bs; b; b = b->file) {
        n++;
    }
    for (int depth = n - 1; depth >= 0; depth--) {
        BlockDriverState *b = m->bs;
        for (int k = 0; k < depth; k++) {
            b = b->file;
        }
        bdrv_io_attach(b, m->ctx);
        if (b->drv->bdrv_attach_aio_context && !m->err) {
            m->ret = b->drv->bdrv_attach_aio_context(b, m->ctx, &m->err);
        }
    }
}

static void set_ctx_chain(BlockDriverState *bs, AioContext *ctx)
{
    for (BlockDriverState *b = bs; b; b = b->file) {
        aio_context_ref(ctx);
        aio_context_unref(b->ctx);
        b->ctx = ctx;
    }
}

int bdrv_set_aio_context(BlockDriverState *bs, AioContext *ctx, Error **errp)
{
    AioContext *old = bs->ctx;
    if (ctx == old) {
        return 0;
    }
    if (bs->refcnt > 1 || (bs->file && bs->file->refcnt > 1)) {
        /* Shared children would end up in two contexts; keep it simple and safe. */
        for (BlockDriverState *b = bs->file; b; b = b->file) {
            if (b->refcnt > 1) {
                error_setg(errp, "Cannot move node '%s': its child '%s' is shared",
                           bs->node_name, b->node_name);
                return -EBUSY;
            }
        }
    }
    bdrv_drain(bs);
    aio_context_ref(old);
    CtxMove m = { .bs = bs, .ctx = ctx };
    aio_wait_bh_oneshot(old, detach_in_ctx, &m);
    set_ctx_chain(bs, ctx);
    aio_wait_bh_oneshot(ctx, attach_in_ctx, &m);
    if (m.err) {
        /* Roll back to the old context. */
        Error *first = m.err;
        m.err = NULL;
        aio_wait_bh_oneshot(ctx, detach_in_ctx, &m);
        set_ctx_chain(bs, old);
        m.ctx = old;
        aio_wait_bh_oneshot(old, attach_in_ctx, &m);
        if (m.err) {
            error_free(m.err);
        }
        error_propagate(errp, first);
        aio_context_unref(old);
        return m.ret < 0 ? m.ret : -EIO;
    }
    aio_context_unref(old);
    return 0;
}

/* ---- information ------------------------------------------------------------------------- */

void bdrv_query_node_info(BlockDriverState *bs, BlockNodeInfo *info)
{
    memset(info, 0, sizeof(*info));
    info->node_name = g_strdup(bs->node_name);
    info->driver = g_strdup(bs->drv->format_name);
    info->size = bdrv_getlength(bs);
    info->read_only = bs->read_only;
    info->cache_direct = bs->cache_direct;
    info->cache_no_flush = bs->cache_no_flush;
    info->request_alignment = bdrv_request_alignment(bs);
    info->memory_alignment = bdrv_min_mem_align(bs);
    info->max_transfer = 0;
    for (BlockDriverState *b = bs; b; b = b->file) {
        if (b->bl.max_transfer && (!info->max_transfer || b->bl.max_transfer < info->max_transfer)) {
            info->max_transfer = b->bl.max_transfer;
        }
    }
    info->nowait = -1;
    /* Bottom-up so the node's own facts win over its child's. */
    int n = 0;
    for (BlockDriverState *b = bs; b; b = b->file) {
        n++;
    }
    for (int depth = n - 1; depth >= 0; depth--) {
        BlockDriverState *b = bs;
        for (int k = 0; k < depth; k++) {
            b = b->file;
        }
        if (b->drv->bdrv_query_info) {
            b->drv->bdrv_query_info(b, info);
        }
    }
    if (!info->filename && bdrv_get_filename(bs)) {
        info->filename = g_strdup(bdrv_get_filename(bs));
    }
}

void bdrv_node_info_clear(BlockNodeInfo *info)
{
    g_free(info->node_name);
    g_free(info->driver);
    g_free(info->filename);
    g_free(info->aio);
    g_free(info->aio_requested);
    if (info->driver_specific) {
        json_object_unref(info->driver_specific);
    }
    memset(info, 0, sizeof(*info));
}
