/*
 * Helpers shared by the qapi unit tests.
 */
#ifndef TESTS_QAPI_TEST_UTIL_H
#define TESTS_QAPI_TEST_UTIL_H

#include "qapi/qapi.h"

/* Compact JSON text of obj (members in insertion order); g_free it. */
static inline char *obj_to_json(JsonObject *obj)
{
    JsonNode *node = json_node_init_object(json_node_alloc(), obj);
    char *s = json_to_string(node, FALSE);
    json_node_unref(node);
    return s;
}

/* Asserts that err is set with exactly msg, and frees it. */
#define assert_error(err, msg) do {                          \
        g_assert_nonnull(err);                               \
        g_assert_cmpstr(error_get_pretty(err), ==, (msg));   \
        error_free(err);                                     \
        (err) = NULL;                                        \
    } while (0)

#endif
