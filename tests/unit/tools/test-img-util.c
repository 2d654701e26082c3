/*
 * Unit tests for ringblk-img's helpers: size parsing and printing as
 * qemu-img does them, the JSON string writer, the latency histogram.
 */
#include <errno.h>
#include <glib.h>
#include <stdint.h>

#include "img-util.h"
#include "qapi/qapi.h"

static void check_size(const char *s, int want_ret, uint64_t want)
{
    uint64_t v = 0xdeadbeef;
    int ret = img_parse_size(s, &v);
    if (ret != want_ret) {
        g_error("img_parse_size(\"%s\") returned %d, expected %d", s, ret, want_ret);
    }
    if (ret == 0) {
        g_assert_cmpuint(v, ==, want);
    } else {
        g_assert_cmpuint(v, ==, 0xdeadbeef);  /* untouched on error */
    }
}

static void test_parse_size_valid(void)
{
    check_size("0", 0, 0);
    check_size("100", 0, 100);
    check_size("1b", 0, 1);
    check_size("1B", 0, 1);
    check_size("1k", 0, 1024);
    check_size("1K", 0, 1024);
    check_size("1m", 0, 1 << 20);
    check_size("1M", 0, 1 << 20);
    check_size("1G", 0, 1ULL << 30);
    check_size("1g", 0, 1ULL << 30);
    check_size("2T", 0, 2ULL << 40);
    check_size("3P", 0, 3ULL << 50);
    check_size("7E", 0, 7ULL << 60);
    check_size("0x1000", 0, 4096);
    check_size("0X10k", 0, 16 * 1024);
    check_size("1.5M", 0, 3 << 19);
    check_size("0.5k", 0, 512);
    check_size("0.3k", 0, 307);       /* truncated to whole bytes */
    check_size(" 1M", 0, 1 << 20);    /* leading blanks, as qemu-img */
    check_size("9223372036854775807", 0, INT64_MAX);
}

static void test_parse_size_invalid(void)
{
    check_size("", -EINVAL, 0);
    check_size("k", -EINVAL, 0);
    check_size("-1", -EINVAL, 0);
    check_size("+1", -EINVAL, 0);
    check_size("1.5", -EINVAL, 0);    /* a fraction of a byte */
    check_size("1.0", -EINVAL, 0);
    check_size("1.5b", -EINVAL, 0);
    check_size("1e3", -EINVAL, 0);    /* 'e' is exabytes, and "3" may not follow */
    check_size("1kB", -EINVAL, 0);
    check_size("1x", -EINVAL, 0);
    check_size("1k5", -EINVAL, 0);
    check_size("0x", -EINVAL, 0);
    check_size("0x1.8M", -EINVAL, 0);
    check_size("1.M", -EINVAL, 0);
    check_size("1M ", -EINVAL, 0);
}

static void test_parse_size_range(void)
{
    check_size("8E", -ERANGE, 0);
    check_size("15E", -ERANGE, 0);
    check_size("16E", -ERANGE, 0);
    check_size("9223372036854775808", -ERANGE, 0);
    check_size("99999999999999999999", -ERANGE, 0);
    check_size("7.99999999999999999E", -ERANGE, 0);  /* rounds to 8E */
}

static void check_str(uint64_t v, const char *want)
{
    char *s = img_size_to_str(v);
    g_assert_cmpstr(s, ==, want);
    g_free(s);
}

static void test_size_to_str(void)
{
    /* Expected strings are what Debian's qemu-img 7.2 prints for these sizes. */
    check_str(0, "0 B");
    check_str(512, "512 B");
    check_str(999, "999 B");
    check_str(1000, "0.977 KiB");
    check_str(1024, "1 KiB");
    check_str(4096, "4 KiB");
    check_str(73728, "72 KiB");
    check_str(1022976, "999 KiB");
    check_str(1024000, "0.977 MiB");
    check_str(1047552, "0.999 MiB");
    check_str(1572864, "1.5 MiB");
    check_str(10240000, "9.77 MiB");
    check_str(123457024, "118 MiB");
    check_str(1073741824, "1 GiB");
    check_str(1073741824000ULL, "0.977 TiB");
    check_str(UINT64_MAX, "16 EiB");
}

static void test_int(void)
{
    int64_t v = -5;
    g_assert_true(img_parse_int("32", 1, 100, &v));
    g_assert_cmpint(v, ==, 32);
    g_assert_false(img_parse_int("0", 1, 100, &v));
    g_assert_false(img_parse_int("101", 1, 100, &v));
    g_assert_false(img_parse_int("1k", 1, 100, &v));
    g_assert_false(img_parse_int("", 1, 100, &v));
    g_assert_false(img_parse_int(" 1", 1, 100, &v));
    g_assert_false(img_parse_int("99999999999999999999", 1, INT64_MAX, &v));
    g_assert_cmpint(v, ==, 32);
}

static void test_json_string(void)
{
    GString *s = g_string_new(NULL);
    img_json_string(s, "a\"b\\c\n\x01/é");
    g_assert_cmpstr(s->str, ==, "\"a\\\"b\\\\c\\n\\u0001/é\"");
    g_string_free(s, TRUE);
}

static void test_keyval_append(void)
{
    GString *s = g_string_new("driver=raw");
    img_keyval_append(s, "file.filename", "/tmp/a,b=c,,d.img");
    img_keyval_append(s, "file.aio", "io_uring");
    img_keyval_append(s, "empty", "");
    g_assert_cmpstr(s->str, ==,
                    "driver=raw,file.filename=/tmp/a,,b=c,,,,d.img,file.aio=io_uring,empty=");

    /* The option parser reads back exactly what was escaped. */
    Error *err = NULL;
    JsonObject *kv = keyval_parse(s->str, NULL, &err);
    g_assert_no_error(err);
    JsonObject *file = json_object_get_object_member(kv, "file");
    g_assert_cmpstr(json_object_get_string_member(file, "filename"), ==, "/tmp/a,b=c,,d.img");
    g_assert_cmpstr(json_object_get_string_member(file, "aio"), ==, "io_uring");
    g_assert_cmpstr(json_object_get_string_member(kv, "empty"), ==, "");
    json_object_unref(kv);
    g_string_free(s, TRUE);
}

static void test_hist_buckets(void)
{
    /* Buckets tile the whole range without gaps or overlaps. */
    g_assert_cmpuint(img_hist_bucket_low(0), ==, 0);
    for (unsigned i = 1; i < IMG_HIST_BUCKETS; i++) {
        g_assert_cmpuint(img_hist_bucket_low(i), ==, img_hist_bucket_high(i - 1) + 1);
    }
    g_assert_cmpuint(img_hist_bucket_high(IMG_HIST_BUCKETS - 1), ==, UINT64_MAX);

    /* Every value lands in the bucket whose bounds hold it. */
    static const uint64_t probes[] = { 0, 1, 31, 32, 33, 63, 64, 65, 1000, 4095,
                                       4096, 123456789, 1ULL << 40, INT64_MAX, UINT64_MAX };
    for (size_t k = 0; k < G_N_ELEMENTS(probes); k++) {
        unsigned i = img_hist_index(probes[k]);
        g_assert_cmpuint(i, <, IMG_HIST_BUCKETS);
        g_assert_cmpuint(img_hist_bucket_low(i), <=, probes[k]);
        g_assert_cmpuint(img_hist_bucket_high(i), >=, probes[k]);
        /* Relative width at most 1/32 above the exact-valued range. */
        if (probes[k] >= IMG_HIST_SUB) {
            uint64_t w = img_hist_bucket_high(i) - img_hist_bucket_low(i) + 1;
            g_assert_cmpuint(w * IMG_HIST_SUB, <=, img_hist_bucket_low(i));
        }
    }
}

static void test_hist_percentiles(void)
{
    ImgLatencyHist *h = g_new(ImgLatencyHist, 1);
    img_hist_init(h);
    g_assert_cmpuint(img_hist_percentile(h, 50), ==, 0);

    /* 1..1000 ns, once each: exact below 32, within 1/32 above. */
    for (uint64_t v = 1; v <= 1000; v++) {
        img_hist_record(h, v);
    }
    g_assert_cmpuint(h->count, ==, 1000);
    g_assert_cmpuint(h->min_ns, ==, 1);
    g_assert_cmpuint(h->max_ns, ==, 1000);
    g_assert_cmpuint(h->sum_ns, ==, 500500);
    g_assert_cmpuint(img_hist_percentile(h, 1), ==, 10);
    g_assert_cmpuint(img_hist_percentile(h, 2.5), ==, 25);
    uint64_t p50 = img_hist_percentile(h, 50);
    g_assert_cmpuint(p50, >=, 500);
    g_assert_cmpuint(p50, <=, 500 + 500 / 32);
    uint64_t p99 = img_hist_percentile(h, 99);
    g_assert_cmpuint(p99, >=, 990);
    g_assert_cmpuint(p99, <=, 1000);
    g_assert_cmpuint(img_hist_percentile(h, 100), ==, 1000);  /* clamped to max */

    /* One slow outlier in 1000 shows at p99.9 and not at p99. */
    img_hist_init(h);
    for (int k = 0; k < 999; k++) {
        img_hist_record(h, 20000);
    }
    img_hist_record(h, 5000000);
    g_assert_cmpuint(img_hist_percentile(h, 99), <=, 20000 + 20000 / 32);
    g_assert_cmpuint(img_hist_percentile(h, 99.9), <=, 20000 + 20000 / 32);
    g_assert_cmpuint(img_hist_percentile(h, 99.95), ==, 5000000);
    g_free(h);
}

static void test_rand(void)
{
    ImgRand a, b;
    img_rand_seed(&a, 42);
    img_rand_seed(&b, 42);
    for (int i = 0; i < 100; i++) {
        g_assert_cmpuint(img_rand_next(&a), ==, img_rand_next(&b));
    }
    img_rand_seed(&b, 43);
    g_assert_cmpuint(img_rand_next(&a), !=, img_rand_next(&b));

    /* img_rand_below stays in range and reaches both ends of a small one. */
    bool seen[8] = { false };
    for (int i = 0; i < 1000; i++) {
        uint64_t v = img_rand_below(&a, 8);
        g_assert_cmpuint(v, <, 8);
        seen[v] = true;
    }
    for (int i = 0; i < 8; i++) {
        g_assert_true(seen[i]);
    }
    img_rand_seed(&a, 0);   /* seed 0 must not stick at zero */
    g_assert_cmpuint(img_rand_next(&a), !=, 0);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/tools/img/parse-size/valid", test_parse_size_valid);
    g_test_add_func("/tools/img/parse-size/invalid", test_parse_size_invalid);
    g_test_add_func("/tools/img/parse-size/range", test_parse_size_range);
    g_test_add_func("/tools/img/size-to-str", test_size_to_str);
    g_test_add_func("/tools/img/parse-int", test_int);
    g_test_add_func("/tools/img/json-string", test_json_string);
    g_test_add_func("/tools/img/keyval-append", test_keyval_append);
    g_test_add_func("/tools/img/hist/buckets", test_hist_buckets);
    g_test_add_func("/tools/img/hist/percentiles", test_hist_percentiles);
    g_test_add_func("/tools/img/rand", test_rand);
    return g_test_run();
}
