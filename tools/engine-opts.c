/*
 * Engine options for ringblk-img --engine-opts and ringblk-io -o; see
 * engine-opts.h. The schema checks values later, when the node opens.
 */
#include <string.h>

#include "engine-opts.h"

/* BlockdevOptionsFile members that choose or tune the engine. */
static const char *const engine_keys[] = {
    "aio", "aio-queue-depth", "fixed-files", "fixed-buffers", "sqpoll",
    "sq-thread-idle", "sq-thread-cpu", "iopoll", "restrict", "share-ring",
};

static bool is_engine_key(const char *key)
{
    for (size_t i = 0; i < G_N_ELEMENTS(engine_keys); i++) {
        if (!strcmp(key, engine_keys[i])) {
            return true;
        }
    }
    return false;
}

JsonObject *engine_opts_parse(const char *text, Error **errp)
{
    JsonObject *opts = keyval_parse(text, NULL, errp);
    if (!opts) {
        return NULL;
    }
    GList *members = json_object_get_members(opts);
    for (GList *l = members; l; l = l->next) {
        const char *key = l->data;
        if (!is_engine_key(key)) {
            /* A nested key (cache.direct) is named whole, as the schema names keys. */
            JsonNode *n = json_object_get_member(opts, key);
            if (JSON_NODE_HOLDS_OBJECT(n)) {
                GList *sub = json_object_get_members(json_node_get_object(n));
                error_setg(errp, "Invalid parameter '%s.%s'", key,
                           sub ? (const char *)sub->data : "");
                g_list_free(sub);
            } else {
                error_setg(errp, "Invalid parameter '%s'", key);
            }
            g_list_free(members);
            json_object_unref(opts);
            return NULL;
        }
    }
    g_list_free(members);
    return opts;
}
