/*
 * ringblk-img helpers that need no block layer (see img-util.h).
 */
#include "img-util.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

static int suffix_shift(char c)
{
    switch (c) {
    case 'b': case 'B': return 0;
    case 'k': case 'K': return 10;
    case 'm': case 'M': return 20;
    case 'g': case 'G': return 30;
    case 't': case 'T': return 40;
    case 'p': case 'P': return 50;
    case 'e': case 'E': return 60;
    default: return -1;
    }
}

int img_parse_size(const char *str, uint64_t *out)
{
    const char *p = str;
    while (isspace((unsigned char)*p)) {
        p++;
    }
    /* strtoull would silently accept a sign; sizes have none. */
    if (!isdigit((unsigned char)*p)) {
        return -EINVAL;
    }

    uint64_t whole;
    double frac = 0;
    bool hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
    char *end;
    errno = 0;
    if (hex) {
        if (!isxdigit((unsigned char)p[2])) {
            return -EINVAL;
        }
        whole = strtoull(p, &end, 16);
    } else {
        whole = strtoull(p, &end, 10);
    }
    if (errno == ERANGE) {
        return -ERANGE;
    }
    if (*end == '.') {
        /* A fraction: decimal only, and it needs a unit (checked below). */
        if (hex || !isdigit((unsigned char)end[1])) {
            return -EINVAL;
        }
        char *fend;
        frac = strtod(end, &fend);
        end = fend;
    }

    int shift = 0;
    if (*end) {
        shift = suffix_shift(*end);
        if (shift < 0 || end[1] != '\0') {
            return -EINVAL;
        }
    }
    if (frac != 0 && shift == 0) {
        return -EINVAL;
    }
    /* Fractions written as ".0" still need a unit larger than bytes. */
    if (shift == 0 && strchr(p, '.')) {
        return -EINVAL;
    }

    if (shift && whole > (UINT64_MAX >> shift)) {
        return -ERANGE;
    }
    uint64_t val = whole << shift;
    if (frac != 0) {
        uint64_t extra = (uint64_t)(frac * (double)(1ULL << shift));
        if (val > UINT64_MAX - extra) {
            return -ERANGE;
        }
        val += extra;
    }
    if (val > INT64_MAX) {
        return -ERANGE;
    }
    *out = val;
    return 0;
}

bool img_cvtnum_full(const char *name, const char *value, int64_t min,
                     int64_t max, int64_t *out)
{
    uint64_t v;
    int ret = img_parse_size(value, &v);
    if (ret == -ERANGE || (ret == 0 && ((int64_t)v < min || (int64_t)v > max))) {
        error_report("Invalid %s specified. Must be between %" PRId64 " and %" PRId64 ".",
                     name, min, max);
        return false;
    }
    if (ret < 0) {
        error_report("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", name);
        error_report("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
        return false;
    }
    *out = (int64_t)v;
    return true;
}

bool img_parse_int(const char *value, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    errno = 0;
    if (!*value || isspace((unsigned char)*value)) {
        return false;
    }
    long long v = strtoll(value, &end, 10);
    if (errno || *end || v < min || v > max) {
        return false;
    }
    *out = v;
    return true;
}

char *img_size_to_str(uint64_t bytes)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    unsigned i = 0;
    /* Move to the next unit from 1000 of the current one, as qemu-img does ("0.977 MiB"). */
    while (i + 1 < G_N_ELEMENTS(units) && (double)bytes >= 1000.0 * ldexp(1.0, 10 * (int)i)) {
        i++;
    }
    double v = (double)bytes / ldexp(1.0, 10 * (int)i);
    return g_strdup_printf("%0.3g %s", v, units[i]);
}

void img_keyval_append(GString *out, const char *key, const char *value)
{
    g_string_append_printf(out, ",%s=", key);
    for (const char *p = value; *p; p++) {
        if (*p == ',') {
            g_string_append_c(out, ',');
        }
        g_string_append_c(out, *p);
    }
}

void img_json_string(GString *out, const char *s)
{
    g_string_append_c(out, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': g_string_append(out, "\\\""); break;
        case '\\': g_string_append(out, "\\\\"); break;
        case '\n': g_string_append(out, "\\n"); break;
        case '\r': g_string_append(out, "\\r"); break;
        case '\t': g_string_append(out, "\\t"); break;
        case '\b': g_string_append(out, "\\b"); break;
        case '\f': g_string_append(out, "\\f"); break;
        default:
            if (*p < 0x20) {
                g_string_append_printf(out, "\\u%04x", *p);
            } else {
                g_string_append_c(out, (char)*p);
            }
        }
    }
    g_string_append_c(out, '"');
}

/* ---- Latency histogram ------------------------------------------------------ */

void img_hist_init(ImgLatencyHist *h)
{
    memset(h, 0, sizeof(*h));
    h->min_ns = UINT64_MAX;
}

uint64_t img_hist_bucket_low(unsigned i)
{
    if (i < IMG_HIST_SUB) {
        return i;
    }
    unsigned shift = i / IMG_HIST_SUB - 1;
    return (uint64_t)(IMG_HIST_SUB + i % IMG_HIST_SUB) << shift;
}

uint64_t img_hist_bucket_high(unsigned i)
{
    if (i < IMG_HIST_SUB) {
        return i;
    }
    unsigned shift = i / IMG_HIST_SUB - 1;
    return img_hist_bucket_low(i) + ((1ULL << shift) - 1);
}

uint64_t img_hist_percentile(const ImgLatencyHist *h, double pct)
{
    if (h->count == 0) {
        return 0;
    }
    /* The epsilon keeps 99.9% of 1000 at rank 999 despite binary rounding. */
    uint64_t rank = (uint64_t)ceil(pct * (double)h->count / 100.0 - 1e-9);
    if (rank < 1) {
        rank = 1;
    }
    if (rank > h->count) {
        rank = h->count;
    }
    uint64_t seen = 0;
    for (unsigned i = 0; i < IMG_HIST_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= rank) {
            uint64_t v = img_hist_bucket_high(i);
            if (v > h->max_ns) {
                v = h->max_ns;
            }
            if (v < h->min_ns) {
                v = h->min_ns;
            }
            return v;
        }
    }
    return h->max_ns;
}

void img_rand_seed(ImgRand *r, uint64_t seed)
{
    /* xorshift must not start at 0; splitmix the seed so nearby seeds differ. */
    uint64_t z = seed + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    r->s = z ? z : 1;
}
