/*
 * Extras of the keyval parser beyond include/qapi/qapi.h.
 */
#ifndef QAPI_KEYVAL_H
#define QAPI_KEYVAL_H

#include "qapi/qapi.h"

/*
 * Like keyval_parse(), also accepting an element "help" or "?" (without
 * '='), which sets *help instead of being an error. *help is false
 * otherwise. Tools use it for "--blockdev driver=file,help".
 */
JsonObject *keyval_parse_with_help(const char *params, const char *implied_key,
                                   bool *help, Error **errp);

#endif
