/*
 * What ringblk-img's subcommand files share: opening an image the way
 * qemu-img's options describe it.
 */
#ifndef TOOLS_IMG_H
#define TOOLS_IMG_H

#include <stdbool.h>

#include "block/block.h"

typedef struct ImgOpenOpts {
    const char *fmt;          /* -f; NULL: raw */
    const char *cache;        /* -t/-T cache mode; NULL: writeback */
    const char *aio;          /* -i engine; NULL: the schema's default (auto) */
    const char *engine_opts;  /* --engine-opts keyval: file-node options (fixed-files=on,...) */
    bool read_only;
    bool image_opts;          /* the filename is an options string (--image-opts) */
    bool force_share;         /* -U */
} ImgOpenOpts;

/*
 * Opens filename as an image. On failure returns NULL with errp set to
 * "Could not open 'filename': <why>".
 */
BlockDriverState *img_open(const char *filename, const ImgOpenOpts *o, Error **errp);

/* qemu-img's cache mode and aio names; false after printing an error. */
bool img_check_cache_mode(const char *mode, bool source);
bool img_check_aio_mode(const char *mode);

/* Prints "Try 'ringblk-img --help' for more information" style hints. */
void img_print_help_hint(void);
/* Reports the option getopt_long() just refused, with the help hint. */
void img_bad_option(char **argv);

int img_bench(int argc, char **argv);
void img_bench_usage(void);

#endif
