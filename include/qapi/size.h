/*
 * Parsing sizes with binary suffixes (the keyval form of 'size' members).
 */
#ifndef QAPI_SIZE_H
#define QAPI_SIZE_H

#include <stdint.h>

/*
 * Parses a whole string such as "4096", "64k", "1.5G", "0x1000" or "2E"
 * (suffixes B k M G T P E, either case, powers of 1024; a fraction needs a
 * suffix). Returns 0, -EINVAL for bad syntax or -ERANGE above 2^64-1.
 */
int qapi_strtosz(const char *str, uint64_t *value);

#endif
