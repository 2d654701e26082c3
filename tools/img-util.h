/*
 * Helpers of ringblk-img that need no block layer: size parsing and
 * printing the way qemu-img does it, a small JSON writer that produces
 * qemu-img's JSON layout, the bench latency histogram and its PRNG.
 * Kept apart from tools/img.c so that unit tests can link them alone.
 */
#ifndef TOOLS_IMG_UTIL_H
#define TOOLS_IMG_UTIL_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * Parses a size: decimal or 0x hex integer, or a decimal fraction, with an
 * optional suffix b/B (bytes), k/K, M/m, G/g, T/t, P/p, E/e (powers of
 * 1024). A fraction needs a unit larger than bytes and is truncated to
 * whole bytes. Leading blanks are skipped; nothing may follow the suffix.
 * Returns 0 and *out, -EINVAL on syntax errors, -ERANGE above INT64_MAX.
 */
int img_parse_size(const char *str, uint64_t *out);

/*
 * Parses a size for option `name` and checks it against [min, max]; on
 * failure prints qemu-img's two-line message ("Invalid <name> specified.
 * You may use k, M, G, ...") or the range message and returns false.
 */
bool img_cvtnum_full(const char *name, const char *value, int64_t min,
                     int64_t max, int64_t *out);

/* Parses a plain decimal integer in [min, max]; false on anything else. */
bool img_parse_int(const char *value, int64_t min, int64_t max, int64_t *out);

/*
 * Formats a byte count as qemu-img shows it: "512 B", "1 GiB", "1.5 MiB",
 * "0.977 MiB" (three significant digits; a unit is used from 1000 of the
 * unit below). Returns a new string.
 */
char *img_size_to_str(uint64_t bytes);

/*
 * Appends ",key=value" to out, doubling commas in value as keyval syntax
 * requires (so file names with commas survive).
 */
void img_keyval_append(GString *out, const char *key, const char *value);

/* Appends s as a JSON string literal (quoted and escaped). */
void img_json_string(GString *out, const char *s);

/* ---- Latency histogram ------------------------------------------------------ */

/*
 * Log-linear buckets: values below 2^IMG_HIST_SUB_BITS ns each have their
 * own bucket; above, every power of two is split into 2^IMG_HIST_SUB_BITS
 * equal sub-buckets, so a bucket's width is at most 1/32 of its value
 * (about 3% error). Fixed size (64 x 32 counters): recording is one
 * count-leading-zeros and an increment, no allocation.
 */
#define IMG_HIST_SUB_BITS 5
#define IMG_HIST_SUB      (1u << IMG_HIST_SUB_BITS)
#define IMG_HIST_BUCKETS  ((64 - IMG_HIST_SUB_BITS + 1) * IMG_HIST_SUB)

typedef struct ImgLatencyHist {
    uint64_t count;
    uint64_t min_ns;
    uint64_t max_ns;
    uint64_t sum_ns;
    uint64_t bucket[IMG_HIST_BUCKETS];
} ImgLatencyHist;

void img_hist_init(ImgLatencyHist *h);

static inline unsigned img_hist_index(uint64_t ns)
{
    if (ns < IMG_HIST_SUB) {
        return (unsigned)ns;
    }
    unsigned msb = 63u - (unsigned)__builtin_clzll(ns);
    unsigned shift = msb - IMG_HIST_SUB_BITS;
    /* The row is msb - SUB_BITS + 1; within it, the SUB_BITS bits below the msb. */
    return (shift + 1) * IMG_HIST_SUB + (unsigned)((ns >> shift) & (IMG_HIST_SUB - 1));
}

static inline void img_hist_record(ImgLatencyHist *h, uint64_t ns)
{
    h->count++;
    h->sum_ns += ns;
    if (ns < h->min_ns) {
        h->min_ns = ns;
    }
    if (ns > h->max_ns) {
        h->max_ns = ns;
    }
    h->bucket[img_hist_index(ns)]++;
}

/* Smallest and largest value that fall in bucket i. */
uint64_t img_hist_bucket_low(unsigned i);
uint64_t img_hist_bucket_high(unsigned i);

/*
 * The value at percentile pct (0 < pct <= 100): the upper bound of the
 * bucket holding the ceil(pct% * count)-th smallest sample, clamped to the
 * recorded maximum. 0 when empty.
 */
uint64_t img_hist_percentile(const ImgLatencyHist *h, double pct);

/* ---- PRNG for random offsets (xorshift64*: deterministic per seed) ---------- */

typedef struct ImgRand {
    uint64_t s;
} ImgRand;

void img_rand_seed(ImgRand *r, uint64_t seed);

static inline uint64_t img_rand_next(ImgRand *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [0, n) for n > 0 (multiply-shift; bias below 2^-32 for n < 2^32). */
static inline uint64_t img_rand_below(ImgRand *r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)img_rand_next(r) * n) >> 64);
}

#endif
