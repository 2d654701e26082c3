/*
 * What block/export/export.c (the export list) and nbd-server.c (the
 * protocol) share. Everything here is touched in the main thread only,
 * except the read-only fields a connection copies at bind time (bs, size,
 * tx_flags, block sizes), which do not change while clients are bound.
 */
#ifndef BLOCK_EXPORT_INTERNAL_H
#define BLOCK_EXPORT_INTERNAL_H

#include "block/export.h"

/* Largest request payload (read or write) the server buffers: 32 MiB. */
#define NBD_MAX_PAYLOAD (32u * 1024 * 1024)

struct BlockExport {
    char *id;
    char *name;                 /* NBD export name */
    char *description;          /* may be NULL */
    char *node_name;
    BlockDriverState *bs;       /* one reference held */
    AioContext *ctx;            /* where connections bound to it run */
    bool writable;
    bool shutting_down;         /* being deleted: refuses new clients */
    int64_t size;
    uint16_t tx_flags;          /* NBD transmission flags */
    uint32_t min_block, pref_block, max_block;
    unsigned nr_clients;        /* connections bound to it (main thread) */
    BlockExport *next;
};

/* export.c: lookup by NBD name for the handshake (skips exports being deleted). */
BlockExport *block_export_find_by_name(const char *name);

/* nbd-server.c: disconnects every client bound to exp and waits until they are gone. */
void nbd_server_disconnect_export(BlockExport *exp);

#endif
