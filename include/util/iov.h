/*
 * I/O vectors: a growable array of struct iovec with its total size.
 *
 * IOVector describes caller memory; it never owns the buffers it points to.
 * A vector built with iovector_init_buf() uses an inline slot and needs no
 * allocation (the hot path for single-buffer requests).
 */
#ifndef UTIL_IOV_H
#define UTIL_IOV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

typedef struct IOVector {
    struct iovec *iov;
    int niov;
    int nalloc;            /* -1: iov points at `local` (no heap array) */
    size_t size;           /* sum of iov_len */
    struct iovec local;
} IOVector;

/* An empty vector with room for alloc_hint elements. */
void iovector_init(IOVector *qiov, int alloc_hint);
/* A single-buffer vector; no allocation; must not be grown with iovector_add. */
void iovector_init_buf(IOVector *qiov, void *buf, size_t len);
void iovector_add(IOVector *qiov, void *base, size_t len);
/* Appends the [offset, offset+len) part of src. */
void iovector_concat(IOVector *dst, const IOVector *src, size_t offset, size_t len);
void iovector_reset(IOVector *qiov);
void iovector_destroy(IOVector *qiov);

/* Copies between a vector (starting `offset` bytes in) and a flat buffer; return bytes copied. */
size_t iov_from_buf(const struct iovec *iov, int niov, size_t offset, const void *buf, size_t len);
size_t iov_to_buf(const struct iovec *iov, int niov, size_t offset, void *buf, size_t len);
size_t iov_memset(const struct iovec *iov, int niov, size_t offset, int c, size_t len);
size_t iov_size(const struct iovec *iov, int niov);
/* True when every byte of the vector is zero. */
bool iov_is_zero(const struct iovec *iov, int niov);

#endif
