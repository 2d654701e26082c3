/*
 * I/O vectors (see include/util/iov.h).
 *
 * A vector starts either on its inline slot (iovector_init_buf: no heap
 * array, the single-buffer fast path) or on a heap array that doubles as it
 * grows. The buffers themselves always belong to the caller.
 */
#include "util/iov.h"

#include <assert.h>
#include <glib.h>
#include <string.h>

void iovector_init(IOVector *qiov, int alloc_hint)
{
    if (alloc_hint < 1) {
        alloc_hint = 1;
    }
    qiov->iov = g_new(struct iovec, alloc_hint);
    qiov->niov = 0;
    qiov->nalloc = alloc_hint;
    qiov->size = 0;
    qiov->local = (struct iovec){ 0 };
}

void iovector_init_buf(IOVector *qiov, void *buf, size_t len)
{
    qiov->local.iov_base = buf;
    qiov->local.iov_len = len;
    qiov->iov = &qiov->local;
    qiov->niov = 1;
    qiov->nalloc = -1;
    qiov->size = len;
}

void iovector_add(IOVector *qiov, void *base, size_t len)
{
    /* An inline vector is fixed at one element by contract. */
    assert(qiov->nalloc >= 0);
    if (qiov->niov == qiov->nalloc) {
        qiov->nalloc = qiov->nalloc ? qiov->nalloc * 2 : 4;
        qiov->iov = g_renew(struct iovec, qiov->iov, qiov->nalloc);
    }
    qiov->iov[qiov->niov].iov_base = base;
    qiov->iov[qiov->niov].iov_len = len;
    qiov->niov++;
    qiov->size += len;
}

void iovector_concat(IOVector *dst, const IOVector *src, size_t offset, size_t len)
{
    assert(offset <= src->size && len <= src->size - offset);
    for (int i = 0; i < src->niov && len > 0; i++) {
        size_t l = src->iov[i].iov_len;
        if (offset >= l) {
            offset -= l;
            continue;
        }
        size_t n = MIN(l - offset, len);
        iovector_add(dst, (char *)src->iov[i].iov_base + offset, n);
        offset = 0;
        len -= n;
    }
}

void iovector_reset(IOVector *qiov)
{
    assert(qiov->nalloc >= 0);
    qiov->niov = 0;
    qiov->size = 0;
}

void iovector_destroy(IOVector *qiov)
{
    if (qiov->nalloc >= 0) {
        g_free(qiov->iov);
    }
    memset(qiov, 0, sizeof(*qiov));
}

size_t iov_from_buf(const struct iovec *iov, int niov, size_t offset,
                    const void *buf, size_t len)
{
    size_t done = 0;
    for (int i = 0; i < niov && done < len; i++) {
        if (offset >= iov[i].iov_len) {
            offset -= iov[i].iov_len;
            continue;
        }
        size_t n = MIN(iov[i].iov_len - offset, len - done);
        memcpy((char *)iov[i].iov_base + offset, (const char *)buf + done, n);
        done += n;
        offset = 0;
    }
    return done;
}

size_t iov_to_buf(const struct iovec *iov, int niov, size_t offset,
                  void *buf, size_t len)
{
    size_t done = 0;
    for (int i = 0; i < niov && done < len; i++) {
        if (offset >= iov[i].iov_len) {
            offset -= iov[i].iov_len;
            continue;
        }
        size_t n = MIN(iov[i].iov_len - offset, len - done);
        memcpy((char *)buf + done, (const char *)iov[i].iov_base + offset, n);
        done += n;
        offset = 0;
    }
    return done;
}

size_t iov_memset(const struct iovec *iov, int niov, size_t offset, int c, size_t len)
{
    size_t done = 0;
    for (int i = 0; i < niov && done < len; i++) {
        if (offset >= iov[i].iov_len) {
            offset -= iov[i].iov_len;
            continue;
        }
        size_t n = MIN(iov[i].iov_len - offset, len - done);
        memset((char *)iov[i].iov_base + offset, c, n);
        done += n;
        offset = 0;
    }
    return done;
}

size_t iov_size(const struct iovec *iov, int niov)
{
    size_t s = 0;
    for (int i = 0; i < niov; i++) {
        s += iov[i].iov_len;
    }
    return s;
}

/* Word-at-a-time where the pointer allows; bytes at the edges. */
static bool buf_is_zero(const unsigned char *p, size_t len)
{
    while (len > 0 && ((uintptr_t)p & (sizeof(uint64_t) - 1))) {
        if (*p) {
            return false;
        }
        p++;
        len--;
    }
    const uint64_t *w = (const uint64_t *)p;
    for (; len >= 4 * sizeof(uint64_t); len -= 4 * sizeof(uint64_t), w += 4) {
        if (w[0] | w[1] | w[2] | w[3]) {
            return false;
        }
    }
    p = (const unsigned char *)w;
    for (size_t i = 0; i < len; i++) {
        if (p[i]) {
            return false;
        }
    }
    return true;
}

bool iov_is_zero(const struct iovec *iov, int niov)
{
    for (int i = 0; i < niov; i++) {
        if (!buf_is_zero(iov[i].iov_base, iov[i].iov_len)) {
            return false;
        }
    }
    return true;
}
