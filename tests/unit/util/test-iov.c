/*
 * I/O vectors (util/iov.c).
 */
#include <string.h>

#include <glib.h>

#include "util/iov.h"

static void test_init_buf(void)
{
    char buf[100];
    IOVector q;
    iovector_init_buf(&q, buf, sizeof(buf));
    g_assert_cmpint(q.niov, ==, 1);
    g_assert_cmpuint(q.size, ==, 100);
    g_assert_true(q.iov == &q.local);
    g_assert_true(q.iov[0].iov_base == buf);
    iovector_destroy(&q);    /* nothing to free */
}

static void test_add_concat(void)
{
    char a[10], b[20], c[30];
    IOVector q, d;
    iovector_init(&q, 1);
    iovector_add(&q, a, sizeof(a));
    iovector_add(&q, b, sizeof(b));
    iovector_add(&q, c, sizeof(c));
    g_assert_cmpint(q.niov, ==, 3);
    g_assert_cmpuint(q.size, ==, 60);
    g_assert_cmpuint(iov_size(q.iov, q.niov), ==, 60);

    /* [5, 45): the tail of a, all of b, the first 15 bytes of c */
    iovector_init(&d, 0);
    iovector_concat(&d, &q, 5, 40);
    g_assert_cmpint(d.niov, ==, 3);
    g_assert_true(d.iov[0].iov_base == a + 5);
    g_assert_cmpuint(d.iov[0].iov_len, ==, 5);
    g_assert_true(d.iov[1].iov_base == b);
    g_assert_cmpuint(d.iov[1].iov_len, ==, 20);
    g_assert_true(d.iov[2].iov_base == c);
    g_assert_cmpuint(d.iov[2].iov_len, ==, 15);
    g_assert_cmpuint(d.size, ==, 40);

    iovector_reset(&d);
    g_assert_cmpint(d.niov, ==, 0);
    g_assert_cmpuint(d.size, ==, 0);
    iovector_concat(&d, &q, 10, 20);    /* exactly b */
    g_assert_cmpint(d.niov, ==, 1);
    g_assert_true(d.iov[0].iov_base == b);
    iovector_destroy(&d);
    iovector_destroy(&q);
}

static void test_copy(void)
{
    char a[7], b[5], c[11];
    struct iovec iov[3] = { { a, 7 }, { b, 5 }, { c, 11 } };
    char src[23], dst[23];
    for (int i = 0; i < 23; i++) {
        src[i] = (char)(i + 1);
    }
    g_assert_cmpuint(iov_from_buf(iov, 3, 0, src, 23), ==, 23);
    g_assert_cmpint(a[0], ==, 1);
    g_assert_cmpint(b[0], ==, 8);
    g_assert_cmpint(c[10], ==, 23);

    memset(dst, 0, sizeof(dst));
    g_assert_cmpuint(iov_to_buf(iov, 3, 6, dst, 8), ==, 8);
    for (int i = 0; i < 8; i++) {
        g_assert_cmpint(dst[i], ==, i + 7);
    }
    /* past the end: copies what there is */
    g_assert_cmpuint(iov_to_buf(iov, 3, 20, dst, 10), ==, 3);
    g_assert_cmpuint(iov_from_buf(iov, 3, 30, src, 5), ==, 0);

    g_assert_false(iov_is_zero(iov, 3));
    g_assert_cmpuint(iov_memset(iov, 3, 5, 0, 100), ==, 18);
    g_assert_cmpint(a[4], ==, 5);
    g_assert_cmpint(a[5], ==, 0);
    g_assert_false(iov_is_zero(iov, 3));
    iov_memset(iov, 3, 0, 0, 5);
    g_assert_true(iov_is_zero(iov, 3));
}

static void test_is_zero_unaligned(void)
{
    char *buf = g_malloc0(4096 + 3);
    struct iovec iov = { buf + 3, 4096 };
    g_assert_true(iov_is_zero(&iov, 1));
    for (int pos = 0; pos < 4096; pos += 511) {
        buf[3 + pos] = 1;
        g_assert_false(iov_is_zero(&iov, 1));
        buf[3 + pos] = 0;
    }
    buf[3 + 4095] = 1;
    g_assert_false(iov_is_zero(&iov, 1));
    g_free(buf);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/iov/init-buf", test_init_buf);
    g_test_add_func("/iov/add-concat", test_add_concat);
    g_test_add_func("/iov/copy", test_copy);
    g_test_add_func("/iov/is-zero", test_is_zero_unaligned);
    return g_test_run();
}
