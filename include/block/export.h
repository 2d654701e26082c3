/*
 * Block exports: serving block nodes to clients (NBD today).
 *
 * The NBD server (block/export/nbd-server.c) listens on one address; each
 * export names a node and is served under an export name. Exports run in
 * their node's AioContext (an IOThread when the node was moved there);
 * their socket handlers are registered as "external", so synchronous block
 * operations that poll the context do not start new client I/O.
 *
 * All functions here run in the main thread.
 */
#ifndef BLOCK_EXPORT_H
#define BLOCK_EXPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "block/block.h"
#include "util/error.h"

/* Where the NBD server listens. */
typedef struct NbdServerAddr {
    enum { NBD_ADDR_UNIX, NBD_ADDR_INET } type;
    char *path;          /* unix */
    char *host;          /* inet: host name or address; NULL = all (0.0.0.0/::) */
    char *port;          /* inet: port (default "10809") */
} NbdServerAddr;

/* Starts the server; max_connections 0 = unlimited. One server per process. */
bool nbd_server_start(const NbdServerAddr *addr, unsigned max_connections, Error **errp);
/* Stops accepting, closes all connections (in-flight requests drain first). */
void nbd_server_stop(void);
bool nbd_server_running(void);
/*
 * Serves an already connected stream socket (socketpair, inherited fd) as if
 * the listener had accepted it; the server need not be listening. Takes
 * ownership of fd (made non-blocking here). False with errp on failure.
 */
bool nbd_server_add_client(int fd, Error **errp);
/* Connections open now (handshaking or bound to an export). */
unsigned nbd_server_connection_count(void);
/*
 * Clients that have not entered the transmission phase this long after
 * connecting are disconnected (default 10 s, as QEMU's handshake-max-seconds;
 * 0 = no limit). Applies to connections accepted afterwards.
 */
void nbd_server_set_handshake_timeout(int64_t ns);
/* The TCP port the server listens on (useful with port "0"), or -1. */
int nbd_server_local_port(void);

typedef struct BlockExport BlockExport;

typedef struct BlockExportOptions {
    const char *id;            /* unique export id */
    const char *node_name;     /* node to serve */
    const char *name;          /* NBD export name; defaults to node_name */
    const char *description;   /* optional, sent with NBD_INFO_DESCRIPTION */
    bool writable;
    AioContext *ctx;           /* NULL: the node's context; else move the node there (iothread=) */
    bool allocation_depth;     /* reserved */
} BlockExportOptions;

/* Called when an export is really gone (for the BLOCK_EXPORT_DELETED event). */
typedef void BlockExportDeletedFn(const char *id, void *opaque);
void block_export_set_deleted_notifier(BlockExportDeletedFn *fn, void *opaque);

/* Adds an NBD export (the server need not be running yet). NULL with errp on failure. */
BlockExport *nbd_export_add(const BlockExportOptions *opts, Error **errp);
/*
 * Removes an export by id. mode "safe" fails with -EBUSY while clients are
 * connected; "hard" disconnects them first. 0 or -errno with errp.
 */
int block_export_del(const char *id, bool hard, Error **errp);
BlockExport *block_export_find(const char *id);
/* Iterates: NULL gives the first; NULL at the end. */
BlockExport *block_export_next(BlockExport *prev);
const char *block_export_id(const BlockExport *exp);
const char *block_export_node_name(const BlockExport *exp);
const char *block_export_type(const BlockExport *exp);   /* "nbd" */
bool block_export_shutting_down(const BlockExport *exp);
/* Removes every export, disconnecting clients, draining their requests (shutdown). */
void block_export_del_all(void);

#endif
