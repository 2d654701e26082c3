/*
 * The NBD protocol on the wire: message layouts and constants.
 *
 * Every multi-byte field on the wire is big-endian (network byte order).
 * The packed structs below describe the layout only: their integer fields
 * hold wire (big-endian) values, so code converts with be16toh/be32toh/
 * be64toh when reading and htobe* when filling them. Nothing here depends
 * on the host's byte order.
 *
 * Names follow the protocol document (NetworkBlockDevice/nbd doc/proto.md).
 * Only the fixed newstyle handshake is spoken; oldstyle is not.
 */
#ifndef BLOCK_NBD_H
#define BLOCK_NBD_H

#include <stdint.h>

#define NBD_DEFAULT_PORT            "10809"

/* ---- Magic numbers -------------------------------------------------------- */

#define NBD_INIT_MAGIC              0x4e42444d41474943ull  /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC              0x49484156454f5054ull  /* "IHAVEOPT" */
#define NBD_REP_MAGIC               0x0003e889045565a9ull  /* option replies */
#define NBD_REQUEST_MAGIC           0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC      0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC  0x668e33efu

/* ---- Handshake ------------------------------------------------------------- */

/* Handshake flags (server, 16 bits). */
#define NBD_FLAG_FIXED_NEWSTYLE     (1u << 0)
#define NBD_FLAG_NO_ZEROES          (1u << 1)
/* Client flags (32 bits). */
#define NBD_FLAG_C_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_C_NO_ZEROES        (1u << 1)

/* Transmission flags (16 bits). */
#define NBD_FLAG_HAS_FLAGS          (1u << 0)
#define NBD_FLAG_READ_ONLY          (1u << 1)
#define NBD_FLAG_SEND_FLUSH         (1u << 2)
#define NBD_FLAG_SEND_FUA           (1u << 3)
#define NBD_FLAG_ROTATIONAL         (1u << 4)
#define NBD_FLAG_SEND_TRIM          (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES  (1u << 6)
#define NBD_FLAG_SEND_DF            (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN     (1u << 8)
#define NBD_FLAG_SEND_RESIZE        (1u << 9)
#define NBD_FLAG_SEND_CACHE         (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO     (1u << 11)

/* Options. */
#define NBD_OPT_EXPORT_NAME         1
#define NBD_OPT_ABORT               2
#define NBD_OPT_LIST                3
#define NBD_OPT_STARTTLS            5
#define NBD_OPT_INFO                6
#define NBD_OPT_GO                  7
#define NBD_OPT_STRUCTURED_REPLY    8
#define NBD_OPT_LIST_META_CONTEXT   9
#define NBD_OPT_SET_META_CONTEXT    10
#define NBD_OPT_EXTENDED_HEADERS    11

/* Option reply types; errors have bit 31 set. */
#define NBD_REP_ACK                 1u
#define NBD_REP_SERVER              2u
#define NBD_REP_INFO                3u
#define NBD_REP_META_CONTEXT        4u
#define NBD_REP_ERR(n)              ((1u << 31) | (n))
#define NBD_REP_ERR_UNSUP           NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY          NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID         NBD_REP_ERR(3)
#define NBD_REP_ERR_PLATFORM        NBD_REP_ERR(4)
#define NBD_REP_ERR_TLS_REQD        NBD_REP_ERR(5)
#define NBD_REP_ERR_UNKNOWN         NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN        NBD_REP_ERR(7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD NBD_REP_ERR(8)
#define NBD_REP_ERR_TOO_BIG         NBD_REP_ERR(9)

/* NBD_REP_INFO payload types (16 bits, first in the payload). */
#define NBD_INFO_EXPORT             0
#define NBD_INFO_NAME               1
#define NBD_INFO_DESCRIPTION        2
#define NBD_INFO_BLOCK_SIZE         3

/* The one metadata context the protocol defines, and its flags. */
#define NBD_META_BASE_ALLOCATION    "base:allocation"
#define NBD_STATE_HOLE              (1u << 0)
#define NBD_STATE_ZERO              (1u << 1)

/* Limits from the protocol's string rules. */
#define NBD_MAX_STRING              4096   /* export names, messages, queries */

/* ---- Transmission ---------------------------------------------------------- */

/* Commands. */
#define NBD_CMD_READ                0
#define NBD_CMD_WRITE               1
#define NBD_CMD_DISC                2
#define NBD_CMD_FLUSH               3
#define NBD_CMD_TRIM                4
#define NBD_CMD_CACHE               5
#define NBD_CMD_WRITE_ZEROES        6
#define NBD_CMD_BLOCK_STATUS        7

/* Command flags (16 bits). */
#define NBD_CMD_FLAG_FUA            (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE        (1u << 1)
#define NBD_CMD_FLAG_DF             (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE        (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO      (1u << 4)

/* Structured reply chunk flags and types. */
#define NBD_REPLY_FLAG_DONE         (1u << 0)
#define NBD_REPLY_TYPE_NONE         0
#define NBD_REPLY_TYPE_OFFSET_DATA  1
#define NBD_REPLY_TYPE_OFFSET_HOLE  2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_ERROR        ((1u << 15) | 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET ((1u << 15) | 2)

/* Error values: fixed numbers, not the host's errno. */
#define NBD_EPERM                   1
#define NBD_EIO                     5
#define NBD_ENOMEM                  12
#define NBD_EINVAL                  22
#define NBD_ENOSPC                  28
#define NBD_EOVERFLOW               75
#define NBD_ENOTSUP                 95
#define NBD_ESHUTDOWN               108

/* ---- Wire layouts (fields big-endian) --------------------------------------- */

#define NBD_PACKED __attribute__((packed))

/* S: greeting of the fixed newstyle handshake. */
typedef struct NBD_PACKED NbdGreeting {
    uint64_t init_magic;        /* NBD_INIT_MAGIC */
    uint64_t opts_magic;        /* NBD_OPTS_MAGIC */
    uint16_t handshake_flags;
} NbdGreeting;

/* C: option header, followed by `length` bytes of option data. */
typedef struct NBD_PACKED NbdOptionHeader {
    uint64_t magic;             /* NBD_OPTS_MAGIC */
    uint32_t option;
    uint32_t length;
} NbdOptionHeader;

/* S: option reply header, followed by `length` bytes. */
typedef struct NBD_PACKED NbdOptionReply {
    uint64_t magic;             /* NBD_REP_MAGIC */
    uint32_t option;
    uint32_t type;
    uint32_t length;
} NbdOptionReply;

/* S: reply to NBD_OPT_EXPORT_NAME (then 124 zero bytes unless NO_ZEROES). */
typedef struct NBD_PACKED NbdExportNameReply {
    uint64_t size;
    uint16_t flags;             /* transmission flags */
} NbdExportNameReply;
#define NBD_EXPORT_NAME_ZEROES      124

/* NBD_REP_INFO payloads. */
typedef struct NBD_PACKED NbdInfoExport {
    uint16_t info;              /* NBD_INFO_EXPORT */
    uint64_t size;
    uint16_t flags;
} NbdInfoExport;

typedef struct NBD_PACKED NbdInfoBlockSize {
    uint16_t info;              /* NBD_INFO_BLOCK_SIZE */
    uint32_t minimum;
    uint32_t preferred;
    uint32_t maximum;
} NbdInfoBlockSize;

/* C: request header; NBD_CMD_WRITE is followed by `length` bytes. */
typedef struct NBD_PACKED NbdRequest {
    uint32_t magic;             /* NBD_REQUEST_MAGIC */
    uint16_t flags;             /* NBD_CMD_FLAG_* */
    uint16_t type;              /* NBD_CMD_* */
    uint64_t cookie;            /* echoed in the reply ("handle") */
    uint64_t offset;
    uint32_t length;
} NbdRequest;

/* S: simple reply; a successful NBD_CMD_READ is followed by the data. */
typedef struct NBD_PACKED NbdSimpleReply {
    uint32_t magic;             /* NBD_SIMPLE_REPLY_MAGIC */
    uint32_t error;             /* NBD_E*, 0 on success */
    uint64_t cookie;
} NbdSimpleReply;

/* S: structured reply chunk header, followed by `length` bytes of payload. */
typedef struct NBD_PACKED NbdStructuredReply {
    uint32_t magic;             /* NBD_STRUCTURED_REPLY_MAGIC */
    uint16_t flags;             /* NBD_REPLY_FLAG_* */
    uint16_t type;              /* NBD_REPLY_TYPE_* */
    uint64_t cookie;
    uint32_t length;
} NbdStructuredReply;

/* Payload starts of the chunk types the server sends. */
typedef struct NBD_PACKED NbdChunkOffsetData {
    uint64_t offset;            /* followed by the data */
} NbdChunkOffsetData;

typedef struct NBD_PACKED NbdChunkOffsetHole {
    uint64_t offset;
    uint32_t length;
} NbdChunkOffsetHole;

typedef struct NBD_PACKED NbdChunkError {
    uint32_t error;             /* NBD_E*, non-zero */
    uint16_t message_length;    /* followed by the message */
} NbdChunkError;

typedef struct NBD_PACKED NbdBlockDescriptor {
    uint32_t length;
    uint32_t status_flags;      /* NBD_STATE_* for base:allocation */
} NbdBlockDescriptor;

_Static_assert(sizeof(NbdGreeting) == 18, "wire layout");
_Static_assert(sizeof(NbdOptionHeader) == 16, "wire layout");
_Static_assert(sizeof(NbdOptionReply) == 20, "wire layout");
_Static_assert(sizeof(NbdExportNameReply) == 10, "wire layout");
_Static_assert(sizeof(NbdInfoExport) == 12, "wire layout");
_Static_assert(sizeof(NbdInfoBlockSize) == 14, "wire layout");
_Static_assert(sizeof(NbdRequest) == 28, "wire layout");
_Static_assert(sizeof(NbdSimpleReply) == 16, "wire layout");
_Static_assert(sizeof(NbdStructuredReply) == 20, "wire layout");
_Static_assert(sizeof(NbdChunkError) == 6, "wire layout");
_Static_assert(sizeof(NbdBlockDescriptor) == 8, "wire layout");

#endif
