/*
 * ringblk-io's command language (tools/io-cmds.c), shared with its
 * front end (tools/io.c).
 *
 * The session owns at most one open image. Commands that touch the image
 * run in the image's AioContext thread (the main thread, or the IOThread
 * given with --object iothread); the front end only parses the command
 * line, reads stdin and waits.
 */
#ifndef TOOLS_IO_CMDS_H
#define TOOLS_IO_CMDS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "block/block.h"

typedef struct IoSession {
    BlockDriverState *bs;      /* the open image, or NULL */
    AioContext *home_ctx;      /* where images run: main context or an IOThread's */
    bool misalign;             /* -m: buffers start 16 bytes past alignment */
    bool quit;                 /* set by the quit command */
    int inflight;              /* aio_* requests not yet completed (atomic) */
    FILE *trace;               /* -T: one line per request, or NULL */
    char *trace_pattern;       /* glob of trace events to print */
} IoSession;

/* How an image is opened: the program's options and the open command's. */
typedef struct IoOpenArgs {
    const char *format;        /* -f: NULL means raw */
    const char *cache;         /* -t: none|writeback|writethrough|directsync|unsafe, or NULL */
    const char *aio;           /* -i: threads|native|io_uring|inline|auto, or NULL */
    const char *discard;       /* -d: ignore|unmap, or NULL */
    const char *extra;         /* -o: more options (keyval or JSON), or NULL */
    bool read_only;            /* -r */
    bool force_share;          /* -U */
    bool image_opts;           /* --image-opts: name is a full options string */
} IoOpenArgs;

void io_session_init(IoSession *s, AioContext *home_ctx);

/* Settings the open command inherits from the command line (-f, -t, -i, -o...). */
void io_set_open_defaults(const IoOpenArgs *args);

/*
 * Opens name (a filename, or with image_opts an options string) and makes
 * it the session's image. Returns 0, or -errno with errp set.
 */
int io_open_image(IoSession *s, const char *name, const IoOpenArgs *args, Error **errp);

/* Waits for outstanding aio requests, then closes the image. */
void io_close_image(IoSession *s);

/* The object member key of obj, created empty if missing. */
JsonObject *io_child_object(JsonObject *obj, const char *key);
/* Maps a -drive cache mode to (cache.direct, cache.no-flush); false if unknown. */
bool io_cache_mode(const char *mode, bool *direct, bool *no_flush);

/* Runs one command line. Returns 0, or negative errno when it failed. */
int io_run_command(IoSession *s, const char *line);

/* Polls until every aio request of the session has completed. */
void io_wait_aio(IoSession *s);

/* Prints the help of every command (the -c help text). */
void io_help_all(void);

#endif
