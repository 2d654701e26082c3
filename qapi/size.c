/*
 * Size strings: "4096", "4k", "1.5G", "0x1000", "512B".
 *
 * Accepted: decimal digits with an optional fraction, or 0x hex digits;
 * then an optional binary suffix B (1), k (2^10), M, G, T, P or E (2^60),
 * in either case. A fraction needs a suffix larger than bytes, and is
 * truncated to whole bytes. Negative numbers are rejected.
 */
#include "qapi/qapi.h"
#include "qapi/size.h"

#include <errno.h>
#include <stdint.h>

static int size_suffix_shift(char c)
{
    switch (g_ascii_tolower(c)) {
    case 'b':
        return 0;
    case 'k':
        return 10;
    case 'm':
        return 20;
    case 'g':
        return 30;
    case 't':
        return 40;
    case 'p':
        return 50;
    case 'e':
        return 60;
    default:
        return -1;
    }
}

int qapi_strtosz(const char *str, uint64_t *value)
{
    const char *s = str;
    uint64_t whole = 0;
    bool overflow = false;
    const char *frac = NULL;
    size_t frac_len = 0;

    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        s += 2;
        if (!g_ascii_isxdigit(*s)) {
            return -EINVAL;
        }
        for (; g_ascii_isxdigit(*s); s++) {
            overflow |= whole > (UINT64_MAX >> 4);
            whole = (whole << 4) | (uint64_t)g_ascii_xdigit_value(*s);
        }
    } else {
        if (!g_ascii_isdigit(*s)) {
            return -EINVAL;
        }
        for (; g_ascii_isdigit(*s); s++) {
            unsigned d = (unsigned)(*s - '0');
            overflow |= whole > (UINT64_MAX - d) / 10;
            whole = whole * 10 + d;
        }
        if (*s == '.') {
            frac = ++s;
            while (g_ascii_isdigit(*s)) {
                s++;
            }
            frac_len = (size_t)(s - frac);
        }
    }

    int shift = 0;
    if (*s) {
        shift = size_suffix_shift(*s);
        if (shift < 0 || s[1] != '\0') {
            return -EINVAL;
        }
    }
    if (frac && shift == 0) {
        return -EINVAL;
    }
    if (overflow || (shift && whole > (UINT64_MAX >> shift))) {
        return -ERANGE;
    }
    uint64_t result = whole << shift;
    if (frac_len) {
        /* Fraction of one unit; a double is exact enough for a truncated byte count. */
        g_autofree char *f = g_strdup_printf("0.%.*s", (int)frac_len, frac);
        double part = g_ascii_strtod(f, NULL) * (double)(UINT64_C(1) << shift);
        uint64_t extra = (uint64_t)part;
        if (result > UINT64_MAX - extra) {
            return -ERANGE;
        }
        result += extra;
    }
    *value = result;
    return 0;
}
