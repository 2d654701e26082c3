/*
 * ringblk-storage-daemon: what its parts share.
 *
 * main.c parses the command line, runs the main AioContext and shuts down;
 * objects.c keeps the daemon's nodes, I/O threads, NBD server and exports
 * (the command line and QMP both go through it, so they accept the same
 * schema); chardev.c listens on UNIX sockets; qmp.c speaks QMP on them and
 * qmp-cmds.c implements the commands. Everything runs in the main thread.
 * See docs/devel/storage-daemon.md.
 */
#ifndef STORAGE_DAEMON_H
#define STORAGE_DAEMON_H

#include <json-glib/json-glib.h>
#include <stdbool.h>

#include "block/aio.h"
#include "util/error.h"
#include "util/iothread.h"

#define SD_PROGNAME "ringblk-storage-daemon"

/* ---- objects.c: the daemon's state ----------------------------------------------- */

/*
 * Each takes a tree already checked against its schema type
 * (BlockdevOptions, ObjectOptions, NbdServerOptions, BlockExportOptions)
 * and changes nothing when it fails.
 */
/* text: keyval or JSON (the user's, unchecked: see objects.c). */
bool sd_blockdev_add(const char *text, Error **errp);
bool sd_blockdev_del(const char *node_name, Error **errp);
bool sd_object_add(JsonObject *opts, Error **errp);
bool sd_object_del(const char *id, Error **errp);
bool sd_nbd_server_start(JsonObject *opts, Error **errp);
bool sd_nbd_server_stop(Error **errp);
bool sd_export_add(JsonObject *opts, Error **errp);

typedef struct SdIOThread {
    char *id;
    IOThread *iothread;
    int64_t poll_max_ns, poll_grow, poll_shrink, aio_max_batch;
} SdIOThread;

/* The I/O threads in creation order (elements SdIOThread *). */
GPtrArray *sd_iothreads(void);
SdIOThread *sd_iothread_find(const char *id);

/* Closes every export, the NBD server, every node and I/O thread. */
void sd_objects_cleanup(void);

/* ---- main.c --------------------------------------------------------------------------- */

/* Asks the main loop to shut down (reason as in QEMU's SHUTDOWN event). */
void sd_request_shutdown(const char *reason);

/* ---- chardev.c: listening UNIX sockets -------------------------------------------- */

typedef struct SdChardev SdChardev;
/* Called with each accepted connection's fd (non-blocking); the callee owns it. */
typedef void SdChardevAcceptFn(int fd, void *opaque);

/* --chardev socket,id=,path=,server=on,wait=off: binds and listens, not accepting yet. */
SdChardev *sd_chardev_add(const char *spec, Error **errp);
SdChardev *sd_chardev_find(const char *id);
/* Starts accepting into fn; false if the chardev already has a user. */
bool sd_chardev_set_handler(SdChardev *chr, SdChardevAcceptFn *fn, void *opaque, Error **errp);
/* Closes and unlinks every chardev socket. */
void sd_chardev_cleanup(void);

/* ---- qmp.c: the monitor ----------------------------------------------------------- */

/* --monitor [chardev=]ID[,mode=control][,pretty=on|off] */
bool sd_monitor_add(const char *spec, Error **errp);
/* Sends an event to every monitor past capabilities negotiation; takes data (may be NULL). */
void sd_qmp_event(const char *name, JsonObject *data);
/* Flushes pending replies (briefly) and closes every monitor connection. */
void sd_monitor_cleanup(void);

/* ---- qmp-cmds.c ----------------------------------------------------------------------- */

/*
 * Runs a command whose arguments passed qapi_check_command(). Returns the
 * "return" value (a new node) or NULL with errp. Unknown: CommandNotFound.
 * raw_args: the arguments as the client sent them, as JSON text.
 */
JsonNode *sd_qmp_dispatch(const char *name, JsonObject *args, const char *raw_args,
                          Error **errp);
/* query-version's answer, also in the greeting. */
JsonNode *sd_qmp_version(void);
/* The commands sd_qmp_dispatch knows, NULL-terminated. */
extern const char *const sd_qmp_command_names[];

#endif
