/*
 * Error reporting: QEMU-style helpers over GError (see include/util/error.h).
 */
#include "util/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

G_DEFINE_QUARK(ringblk-error-quark, rb_error)

/* A distinct address that error_setg recognises; never dereferenced as an error. */
Error *error_abort;

static const char *progname;

/* Hints are kept beside the message, separated by this marker, and printed after it. */
#define HINT_SEP "\n"

static void error_setv(Error **errp, ErrorClass cls, const char *suffix,
                       const char *fmt, va_list ap)
{
    char *msg = g_strdup_vprintf(fmt, ap);
    if (suffix) {
        char *full = g_strconcat(msg, ": ", suffix, NULL);
        g_free(msg);
        msg = full;
    }
    if (errp == &error_abort) {
        fprintf(stderr, "Unexpected error: %s\n", msg);
        abort();
    }
    if (errp) {
        g_assert(*errp == NULL);
        *errp = g_error_new_literal(RB_ERROR, cls, msg);
    }
    g_free(msg);
}

void error_setg_internal(Error **errp, ErrorClass cls, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_setv(errp, cls, NULL, fmt, ap);
    va_end(ap);
}

void error_setg_errno_internal(Error **errp, int os_errno, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_setv(errp, ERROR_CLASS_GENERIC_ERROR, g_strerror(os_errno), fmt, ap);
    va_end(ap);
}

void error_propagate(Error **dst_errp, Error *local_err)
{
    if (!local_err) {
        return;
    }
    if (dst_errp == &error_abort) {
        fprintf(stderr, "Unexpected error: %s\n", local_err->message);
        abort();
    }
    if (dst_errp && !*dst_errp) {
        *dst_errp = local_err;
    } else {
        g_error_free(local_err);
    }
}

void error_prepend(Error **errp, const char *fmt, ...)
{
    if (!errp || !*errp || errp == &error_abort) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    char *prefix = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    char *msg = g_strconcat(prefix, (*errp)->message, NULL);
    g_free((*errp)->message);
    (*errp)->message = msg;
    g_free(prefix);
}

void error_append_hint(Error **errp, const char *fmt, ...)
{
    if (!errp || !*errp || errp == &error_abort) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    char *hint = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    char *msg = g_strconcat((*errp)->message, HINT_SEP, hint, NULL);
    g_free((*errp)->message);
    (*errp)->message = msg;
    g_free(hint);
}

const char *error_get_pretty(const Error *err)
{
    return err->message;
}

ErrorClass error_get_class(const Error *err)
{
    return err->domain == RB_ERROR ? (ErrorClass)err->code : ERROR_CLASS_GENERIC_ERROR;
}

void error_free(Error *err)
{
    if (err) {
        g_error_free(err);
    }
}

void error_set_progname(const char *name)
{
    progname = name;
}

static const char *report_prefix(void)
{
    const char *p = progname ? progname : g_get_prgname();
    return p ? p : "ringblk";
}

void error_report_err(Error *err)
{
    /* Strip a trailing newline a hint may have left. */
    const char *msg = err->message;
    size_t len = strlen(msg);
    while (len && msg[len - 1] == '\n') {
        len--;
    }
    fprintf(stderr, "%s: %.*s\n", report_prefix(), (int)len, msg);
    g_error_free(err);
}

void error_report(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s\n", report_prefix(), msg);
    g_free(msg);
}

void warn_report(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: warning: %s\n", report_prefix(), msg);
    g_free(msg);
}
