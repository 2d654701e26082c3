/*
 * Error reporting at API boundaries.
 *
 * Inside the block layer, functions return negative errno. Setup, option
 * parsing and anything a user's input reaches take an `Error **errp` and also
 * return a status (bool, NULL or negative errno). Rules:
 *   - *errp is left untouched on success;
 *   - an error is either returned through errp or reported, never both;
 *   - errp may be NULL (caller does not care) or &error_abort (a bug if set).
 *
 * Error is GLib's GError so that GLib and json-glib errors pass through
 * unchanged; these helpers add QEMU-style spellings and errno formatting.
 */
#ifndef UTIL_ERROR_H
#define UTIL_ERROR_H

#include <glib.h>
#include <stdbool.h>

typedef GError Error;

#define RB_ERROR rb_error_quark()
GQuark rb_error_quark(void);

/* Error classes, used as GError codes; QMP maps them to its "class" names. */
typedef enum {
    ERROR_CLASS_GENERIC_ERROR = 0,
    ERROR_CLASS_COMMAND_NOT_FOUND,
    ERROR_CLASS_DEVICE_NOT_FOUND,
} ErrorClass;

/* Pass as errp when an error would be a programming bug: aborts with the message. */
extern Error *error_abort;

void error_setg_internal(Error **errp, ErrorClass cls, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);
/* Like error_setg, appending ": strerror(os_errno)". os_errno is positive. */
void error_setg_errno_internal(Error **errp, int os_errno, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

#define error_setg(errp, ...) \
    error_setg_internal((errp), ERROR_CLASS_GENERIC_ERROR, __VA_ARGS__)
#define error_set(errp, cls, ...) error_setg_internal((errp), (cls), __VA_ARGS__)
#define error_setg_errno(errp, os_errno, ...) \
    error_setg_errno_internal((errp), (os_errno), __VA_ARGS__)

/* Moves local_err into *dst_errp (or frees/aborts as dst requires). */
void error_propagate(Error **dst_errp, Error *local_err);
/* Prepends "fmt: " to the message of an error already set in *errp. */
void error_prepend(Error **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* Adds a hint printed after the message (e.g. how to raise a limit). */
void error_append_hint(Error **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

const char *error_get_pretty(const Error *err);
ErrorClass error_get_class(const Error *err);
void error_free(Error *err);
/* Prints "PROGNAME: message" to stderr and frees the error. */
void error_report_err(Error *err);
/* Prints "PROGNAME: message" to stderr. */
void error_report(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
/* Prints "PROGNAME: warning: message" to stderr. */
void warn_report(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
/* Prefix used by error_report; defaults to g_get_prgname(). */
void error_set_progname(const char *name);

#endif
