/*
 * ringblk-img: qemu-img's subcommands for raw images.
 *
 * Each subcommand takes qemu-img's options and prints qemu-img's output,
 * so scripts and golden files written for qemu-img read the same; facts
 * qemu-img does not have (the engine in use, alignment, whether the file
 * takes non-blocking I/O) are added where they do not disturb that. Errors
 * are "ringblk-img: <message>" on stderr with exit status 1 (compare uses
 * 2 for errors, check 63 for "not supported", as qemu-img does).
 *
 * Everything runs in the main AioContext. Most commands use the
 * synchronous helpers of block.h; convert keeps -m chunks in flight with
 * the asynchronous calls (see ConvertJob), and bench (img-bench.c) drives
 * its own request loop.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config-host.h"
#include "engine-opts.h"
#include "img-util.h"
#include "img.h"
#include "qapi/qapi.h"
#include "util/iothread.h"

#define IMG_SECTOR 512

/* Long options without a short letter. */
enum {
    OPT_OBJECT = 256,
    OPT_IMAGE_OPTS,
    OPT_OUTPUT,
    OPT_SHRINK,
    OPT_PREALLOCATION,
    OPT_START_OFFSET,
    OPT_MAX_LENGTH,
    OPT_TARGET_IMAGE_OPTS,
    OPT_TARGET_IS_ZERO,
    OPT_ENGINE_OPTS,
};

void img_print_help_hint(void)
{
    fprintf(stderr, "Try 'ringblk-img --help' for more information\n");
}

void img_bad_option(char **argv)
{
    /* getopt_long leaves optopt 0 for an unknown long option. */
    if (optopt) {
        error_report("invalid option -- '%c'", optopt);
    } else {
        error_report("unrecognized option '%s'", argv[optind - 1]);
    }
    img_print_help_hint();
}

/* ---- Opening images ------------------------------------------------------------ */

bool img_check_cache_mode(const char *mode, bool source)
{
    if (qapi_enum_parse("DriveCacheMode", mode) < 0) {
        error_report(source ? "Invalid source cache option: %s" : "Invalid cache option: %s",
                     mode);
        return false;
    }
    return true;
}

bool img_check_aio_mode(const char *mode)
{
    if (qapi_enum_parse("BlockdevAioOptions", mode) < 0) {
        error_report("Invalid aio option: %s", mode);
        return false;
    }
    return true;
}

/* Appends the leaves of a keyval tree as ",prefix.dotted.key=value". */
static void append_tree(GString *out, const char *prefix, JsonObject *obj)
{
    GList *names = json_object_get_members(obj);
    for (GList *l = names; l; l = l->next) {
        JsonNode *n = json_object_get_member(obj, l->data);
        char *key = prefix ? g_strdup_printf("%s.%s", prefix, (const char *)l->data)
                           : g_strdup(l->data);
        if (JSON_NODE_HOLDS_OBJECT(n)) {
            append_tree(out, key, json_node_get_object(n));
        } else if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING) {
            img_keyval_append(out, key, json_node_get_string(n));
        }
        g_free(key);
    }
    g_list_free(names);
}

/*
 * Builds keyval text and opens it with bdrv_open_string(), so that the
 * block layer sees exactly the options the user gave (it tells explicit
 * options from schema defaults: io_uring-only keys are refused with other
 * engines only when given).
 *
 * Without --image-opts the image is a raw node over a file node (or
 * host_device), with -t mapped as QEMU maps cache modes: none = direct;
 * writethrough = writeback off; directsync = both; unsafe = no-flush.
 * The raw node passes read-only and cache.* on to its file child.
 */
BlockDriverState *img_open(const char *filename, const ImgOpenOpts *o, Error **errp)
{
    Error *err = NULL;
    BlockDriverState *bs = NULL;
    GString *text = g_string_new(NULL);
    const char *engine_prefix = "file";

    /* A "json:{...}" file name holds the options, as in QEMU, with or without --image-opts. */
    if (o->image_opts || g_str_has_prefix(filename, "json:")) {
        bool is_json = filename[0] == '{' || g_str_has_prefix(filename, "json:");
        if (is_json) {
            /* JSON is taken as it is (read-only and -U too): its author sets every option. */
            if (o->engine_opts) {
                error_setg(&err, "--engine-opts needs --image-opts in key=value form");
                goto out;
            }
            g_string_assign(text, filename);
            goto open;
        }
        JsonObject *given = keyval_parse(filename, NULL, &err);
        if (!given) {
            goto out;
        }
        /*
         * Engine options and -U go to the protocol node: the "file" child
         * when there is one, else the top node (driver=file, null-co...).
         */
        JsonNode *child = json_object_get_member(given, "file");
        if (!child || !JSON_NODE_HOLDS_OBJECT(child)) {
            engine_prefix = NULL;
        }
        bool has_ro = json_object_has_member(given, "read-only");
        json_object_unref(given);
        g_string_assign(text, filename);
        if (o->read_only && !has_ro) {
            g_string_append(text, ",read-only=on");
        }
    } else {
        struct stat st;
        bool blk = stat(filename, &st) == 0 && S_ISBLK(st.st_mode);
        g_string_append_printf(text, "driver=%s", o->fmt ? o->fmt : "raw");
        img_keyval_append(text, "file.driver", blk ? "host_device" : "file");
        img_keyval_append(text, "file.filename", filename);
        if (o->aio) {
            img_keyval_append(text, "file.aio", o->aio);
        }
        const char *cache = o->cache ? o->cache : "writeback";
        if (!strcmp(cache, "none") || !strcmp(cache, "directsync")) {
            g_string_append(text, ",cache.direct=on");
        }
        if (!strcmp(cache, "writethrough") || !strcmp(cache, "directsync")) {
            g_string_append(text, ",cache.writeback=off");
        }
        if (!strcmp(cache, "unsafe")) {
            g_string_append(text, ",cache.no-flush=on");
        }
        if (o->read_only) {
            g_string_append(text, ",read-only=on");
        }
    }
    if (o->force_share) {
        g_string_append(text, ",force-share=on");
        if (engine_prefix) {
            g_string_append(text, ",file.force-share=on");
        }
    }
    if (o->engine_opts) {
        JsonObject *eo = engine_opts_parse(o->engine_opts, errp);
        if (!eo) {
            /* Not an open error: said as ringblk-io's -o says it. */
            g_string_free(text, TRUE);
            return NULL;
        }
        append_tree(text, engine_prefix, eo);
        json_object_unref(eo);
    }

open:
    bs = bdrv_open_string(text->str, &err);

out:
    g_string_free(text, TRUE);
    if (err) {
        error_setg(errp, "Could not open '%s': %s", filename, error_get_pretty(err));
        error_free(err);
    }
    return bs;
}

/* -f must name a format ringblk has: raw. */
static bool check_format(const char *fmt)
{
    if (fmt && strcmp(fmt, "raw") != 0) {
        error_report("Unknown file format '%s'", fmt);
        return false;
    }
    return true;
}

/* ---- --object ---------------------------------------------------------------------- */

/* Objects created by --object, destroyed at exit. qemu-img knows many types; ringblk has iothread. */
static GPtrArray *img_objects;

static void destroy_objects(void)
{
    if (img_objects) {
        for (guint i = 0; i < img_objects->len; i++) {
            iothread_destroy(g_ptr_array_index(img_objects, i));
        }
        g_ptr_array_free(img_objects, TRUE);
        img_objects = NULL;
    }
}

static bool add_object(const char *def)
{
    Error *err = NULL;
    JsonObject *kv = keyval_parse(def, "qom-type", &err);
    if (!kv) {
        error_report_err(err);
        return false;
    }
    bool ok = false;
    const char *type = json_object_has_member(kv, "qom-type") ?
                       json_object_get_string_member(kv, "qom-type") : NULL;
    const char *id = json_object_has_member(kv, "id") ?
                     json_object_get_string_member(kv, "id") : NULL;
    if (!type) {
        error_report("Parameter 'qom-type' is missing");
        goto out;
    }
    if (strcmp(type, "iothread") != 0) {
        error_report("invalid object type: %s", type);
        goto out;
    }
    if (!id) {
        error_report("Parameter 'id' is missing");
        goto out;
    }
    GList *names = json_object_get_members(kv);
    for (GList *l = names; l; l = l->next) {
        const char *k = l->data;
        if (strcmp(k, "qom-type") && strcmp(k, "id") && strcmp(k, "poll-max-ns") &&
            strcmp(k, "poll-grow") && strcmp(k, "poll-shrink")) {
            error_report("Property 'iothread.%s' not found", k);
            g_list_free(names);
            goto out;
        }
    }
    g_list_free(names);

    int64_t poll[3] = { -1, 0, 0 };
    static const char *const poll_keys[] = { "poll-max-ns", "poll-grow", "poll-shrink" };
    for (int i = 0; i < 3; i++) {
        if (json_object_has_member(kv, poll_keys[i]) &&
            !img_parse_int(json_object_get_string_member(kv, poll_keys[i]), 0, INT64_MAX,
                           &poll[i])) {
            error_report("Parameter '%s' expects a non-negative integer", poll_keys[i]);
            goto out;
        }
    }
    IOThread *t = iothread_new(id, &err);
    if (!t) {
        error_report_err(err);
        goto out;
    }
    if (!img_objects) {
        img_objects = g_ptr_array_new();
        atexit(destroy_objects);
    }
    g_ptr_array_add(img_objects, t);
    if (poll[0] >= 0 && !iothread_set_poll_params(t, poll[0], poll[1], poll[2], &err)) {
        error_report_err(err);
        goto out;
    }
    ok = true;
out:
    json_object_unref(kv);
    return ok;
}

/* ---- Subcommand help -------------------------------------------------------------- */

typedef struct ImgCmd {
    const char *name;
    int (*run)(int argc, char **argv);
    void (*usage)(void);
} ImgCmd;

static void create_usage(void)
{
    printf("usage: ringblk-img create [--object objectdef] [-q] [-f fmt] [-o options] filename [size]\n"
           "\n"
           "Creates a raw image of the given size (suffixes k, M, G, T, P, E).\n"
           "  -f fmt         image format: raw (the only one)\n"
           "  -o options     size=SIZE, preallocation=off|falloc|full; '-o help' lists them\n"
           "  -q             quiet: no \"Formatting\" line\n"
           "  --object def   create an object (iothread,id=ID)\n");
}

static void info_usage(void)
{
    printf("usage: ringblk-img info [--object objectdef] [--image-opts] [-f fmt] [--output=ofmt] [-U] filename\n"
           "\n"
           "Shows the image's format, virtual and disk size, and the block layer's view:\n"
           "the AIO engine in use, the alignment, and whether the file takes non-blocking I/O.\n"
           "  --output=human|json   output format\n"
           "  -t cache, -i aio      cache mode and engine to open with (default writeback, auto)\n"
           "  --engine-opts opts    file driver options (fixed-files=on,...)\n"
           "  -U                    force-share: open even if another process holds the lock\n");
}

static void map_usage(void)
{
    printf("usage: ringblk-img map [--object objectdef] [--image-opts] [-f fmt] [--start-offset=offset]\n"
           "                       [--max-length=len] [--output=ofmt] [-U] filename\n"
           "\n"
           "Shows which ranges hold data and which read as zeroes (SEEK_DATA/SEEK_HOLE).\n"
           "The human format lists the data ranges; json lists every range.\n");
}

static void check_usage(void)
{
    printf("usage: ringblk-img check [--object objectdef] [--image-opts] [-q] [-f fmt] [--output=ofmt]\n"
           "                         [-r [leaks | all]] [-T src_cache] [-U] filename\n"
           "\n"
           "Raw images have no metadata to check: reports that and exits with status 63.\n");
}

static void compare_usage(void)
{
    printf("usage: ringblk-img compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-T src_cache]\n"
           "                           [-p] [-q] [-s] [-U] filename1 filename2\n"
           "\n"
           "Compares the contents of two images. Exit status: 0 identical, 1 different, 2 error.\n"
           "  -s   strict: different sizes or allocation also count as different\n"
           "  -p   show progress\n"
           "  -q   quiet: exit status only\n");
}

static void convert_usage(void)
{
    printf("usage: ringblk-img convert [--object objectdef] [--image-opts] [--target-image-opts]\n"
           "                           [--target-is-zero] [-U] [-p] [-q] [-n] [-f fmt] [-t cache]\n"
           "                           [-T src_cache] [-O output_fmt] [-o options] [-S sparse_size]\n"
           "                           [-m num_requests] [-W] filename output_filename\n"
           "\n"
           "Copies a raw image to a raw image. Zero ranges of the source are not written\n"
           "(the output stays sparse); -S sets the size of zero runs to skip (default 4k,\n"
           "0: write everything).\n"
           "  -n                 use an existing output image (it must be large enough)\n"
           "  -t / -T cache      output / source cache mode (default unsafe / writeback)\n"
           "  -p                 show progress\n"
           "  -m N               chunks (2 MiB) in flight, 1 to 16 (default 8)\n"
           "  -W                 allow out-of-order writes (default: the output is written in order)\n");
}

static void measure_usage(void)
{
    printf("usage: ringblk-img measure [--output=ofmt] [-O output_fmt] [-o options]\n"
           "                           [--size N | [--object objectdef] [--image-opts] [-f fmt] filename]\n"
           "\n"
           "Prints the space a raw image of that size (or a copy of that image) needs.\n");
}

static void resize_usage(void)
{
    printf("usage: ringblk-img resize [--object objectdef] [--image-opts] [-f fmt] [--preallocation=prealloc]\n"
           "                          [-q] [--shrink] filename [+ | -]size\n"
           "\n"
           "Grows or shrinks an image; +size and -size are relative to the current size.\n"
           "Shrinking needs --shrink and deletes everything past the new end.\n");
}

/* ---- create ------------------------------------------------------------------------- */

static int img_create(int argc, char **argv)
{
    const char *fmt = "raw", *options = NULL, *filename, *prealloc = NULL;
    g_autofree char *options_buf = NULL;
    bool quiet = false;
    int64_t size = -1;
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, ":hqf:o:b:F:u", longopts, NULL)) != -1) {
        switch (c) {
        case 'h': create_usage(); return 0;
        case 'q': quiet = true; break;
        case 'f': fmt = optarg; break;
        case 'o':
            if (options) {
                /* Repeated -o accumulate, as in qemu-img. */
                char *joined = g_strdup_printf("%s,%s", options, optarg);
                g_free(options_buf);
                options = options_buf = joined;
            } else {
                options = optarg;
            }
            break;
        case 'b': case 'F':
            error_report("Backing files are not supported by the raw format");
            return 1;
        case 'u': break;
        case OPT_OBJECT:
            if (!add_object(optarg)) {
                return 1;
            }
            break;
        case ':': error_report("option '%s' needs an argument", argv[optind - 1]); return 1;
        default: img_bad_option(argv); return 1;
        }
    }
    if (!check_format(fmt)) {
        return 1;
    }
    if (options && (!strcmp(options, "help") || !strcmp(options, "?"))) {
        printf("Supported options:\n"
               "  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)\n"
               "  size=<size>            - Virtual disk size\n");
        return 0;
    }
    if (optind >= argc) {
        error_report("Expecting image file name");
        img_print_help_hint();
        return 1;
    }
    filename = argv[optind++];
    if (options) {
        Error *err = NULL;
        JsonObject *kv = keyval_parse(options, NULL, &err);
        if (!kv) {
            error_report("Invalid option list: %s", options);
            error_free(err);
            return 1;
        }
        GList *names = json_object_get_members(kv);
        int ret = 0;
        for (GList *l = names; l && !ret; l = l->next) {
            const char *k = l->data;
            JsonNode *n = json_object_get_member(kv, k);
            const char *v = JSON_NODE_HOLDS_VALUE(n) ? json_node_get_string(n) : NULL;
            if (!strcmp(k, "size") && v) {
                if (!img_cvtnum_full("image size", v, 0, INT64_MAX, &size)) {
                    ret = 1;
                }
            } else if (!strcmp(k, "preallocation") && v) {
                prealloc = g_intern_string(v);
            } else {
                error_report("%s: Invalid parameter '%s'", filename, k);
                ret = 1;
            }
        }
        g_list_free(names);
        json_object_unref(kv);
        if (ret) {
            return ret;
        }
    }
    if (optind < argc) {
        if (size >= 0) {
            error_report("The image size must be specified only once");
            return 1;
        }
        if (!img_cvtnum_full("image size", argv[optind++], 0, INT64_MAX, &size)) {
            return 1;
        }
    }
    if (optind < argc) {
        error_report("Unexpected argument: %s", argv[optind]);
        img_print_help_hint();
        return 1;
    }
    if (size < 0) {
        error_report("%s: Image creation needs a size parameter", filename);
        return 1;
    }

    if (!quiet) {
        printf("Formatting '%s', fmt=raw size=%" PRId64 "%s%s\n", filename, size,
               prealloc ? " preallocation=" : "", prealloc ? prealloc : "");
        fflush(stdout);
    }
    if (prealloc && strcmp(prealloc, "off") && strcmp(prealloc, "falloc") &&
        strcmp(prealloc, "full")) {
        error_report("%s: Invalid preallocation mode: '%s' (allowed: off, falloc, full)",
                     filename, prealloc);
        return 1;
    }
    /* Like qemu-img, the file is a whole number of 512-byte sectors. */
    int64_t rounded = size > INT64_MAX - (IMG_SECTOR - 1) ? size :
                      (size + IMG_SECTOR - 1) / IMG_SECTOR * IMG_SECTOR;
    Error *err = NULL;
    struct stat st;
    bool existed = stat(filename, &st) == 0;
    if (bdrv_create_file(filename, rounded, prealloc ? prealloc : "off", &err) < 0) {
        /* Leave no empty file behind when the size was refused. */
        if (!existed && stat(filename, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0) {
            unlink(filename);
        }
        error_prepend(&err, "%s: ", filename);
        error_report_err(err);
        return 1;
    }
    return 0;
}

/* ---- Options shared by the image-reading subcommands --------------------------- */

typedef struct CommonArgs {
    ImgOpenOpts open;
    const char *output;      /* --output: "human" or "json" */
    bool quiet;
    bool progress;
} CommonArgs;

static bool check_output(const char *output, bool *json)
{
    if (!strcmp(output, "json")) {
        *json = true;
    } else if (!strcmp(output, "human")) {
        *json = false;
    } else {
        error_report("--output must be used with human or json as argument.");
        return false;
    }
    return true;
}

static bool check_image_opts(const ImgOpenOpts *o)
{
    if (o->image_opts && o->fmt) {
        error_report("--image-opts and --format are mutually exclusive");
        return false;
    }
    return check_format(o->fmt);
}

/* ---- info --------------------------------------------------------------------------- */

/* Bytes the file occupies on disk (0 without a file, as for null-co), or -1. */
static int64_t disk_size(BlockDriverState *bs)
{
    const char *fn = bdrv_get_filename(bs);
    struct stat st;
    if (!fn) {
        return 0;
    }
    if (stat(fn, &st) < 0) {
        return -1;
    }
    return (int64_t)st.st_blocks * 512;
}

static const char *nowait_str(int nowait)
{
    return nowait > 0 ? "yes" : nowait == 0 ? "no" : "unknown";
}

/*
 * What info, map and check do after their options: exactly one image name
 * left on the command line, opened read-only. Returns the node, or NULL
 * after reporting why.
 */
static BlockDriverState *img_open_one_readonly(int argc, char **argv, ImgOpenOpts *o,
                                               const char **filename)
{
    if (optind != argc - 1) {
        error_report("Expecting one image file name");
        img_print_help_hint();
        return NULL;
    }
    *filename = argv[optind];
    o->read_only = true;
    Error *err = NULL;
    BlockDriverState *bs = img_open(*filename, o, &err);
    if (!bs) {
        error_report_err(err);
    }
    return bs;
}

static int img_info(int argc, char **argv)
{
    CommonArgs a = { .output = "human" };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "format", required_argument, NULL, 'f' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "backing-chain", no_argument, NULL, 'B' },
        { "force-share", no_argument, NULL, 'U' },
        { "engine-opts", required_argument, NULL, OPT_ENGINE_OPTS },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, ":hf:Ut:i:", longopts, NULL)) != -1) {
        switch (c) {
        case 'h': info_usage(); return 0;
        case 'f': a.open.fmt = optarg; break;
        case 'U': a.open.force_share = true; break;
        case 't':
            if (!img_check_cache_mode(optarg, false)) {
                return 1;
            }
            a.open.cache = optarg;
            break;
        case 'i':
            if (!img_check_aio_mode(optarg)) {
                return 1;
            }
            a.open.aio = optarg;
            break;
        case 'B': break;  /* raw images have no backing chain */
        case OPT_OBJECT: if (!add_object(optarg)) return 1; break;
        case OPT_IMAGE_OPTS: a.open.image_opts = true; break;
        case OPT_OUTPUT: a.output = optarg; break;
        case OPT_ENGINE_OPTS: a.open.engine_opts = optarg; break;
        case ':': error_report("option '%s' needs an argument", argv[optind - 1]); return 1;
        default: img_bad_option(argv); return 1;
        }
    }
    bool json;
    if (!check_output(a.output, &json) || !check_image_opts(&a.open)) {
        return 1;
    }
    const char *filename;
    BlockDriverState *bs = img_open_one_readonly(argc, argv, &a.open, &filename);
    if (!bs) {
        return 1;
    }

    int64_t size = bdrv_getlength(bs);
    if (size < 0) {
        error_report("Could not get the size of '%s': %s", filename, g_strerror((int)-size));
        bdrv_unref(bs);
        return 1;
    }
    int64_t on_disk = disk_size(bs);
    BlockNodeInfo ni;
    bdrv_query_node_info(bs, &ni);
    /* With --image-opts, the file's name, or the options themselves (null-co has no file). */
    bool opts_name = a.open.image_opts || g_str_has_prefix(filename, "json:");
    /* Where the file node's alignment came from (statx, ioctl, probe, default, buffered). */
    const char *align_source = ni.driver_specific &&
        json_object_has_member(ni.driver_specific, "alignment-source") ?
        json_object_get_string_member(ni.driver_specific, "alignment-source") : NULL;
    const char *image_name = opts_name && ni.filename ? ni.filename : filename;

    if (json) {
        GString *s = g_string_new("{\n    \"virtual-size\": ");
        g_string_append_printf(s, "%" PRId64 ",\n    \"filename\": ", size);
        img_json_string(s, image_name);
        g_string_append(s, ",\n    \"format\": ");
        img_json_string(s, ni.driver);
        if (on_disk >= 0) {
            g_string_append_printf(s, ",\n    \"actual-size\": %" PRId64, on_disk);
        }
        g_string_append(s, ",\n    \"dirty-flag\": false,\n    \"ringblk\": {\n        \"aio\": ");
        if (ni.aio) {
            img_json_string(s, ni.aio);
        } else {
            g_string_append(s, "null");
        }
        g_string_append(s, ",\n        \"aio-requested\": ");
        if (ni.aio_requested) {
            img_json_string(s, ni.aio_requested);
        } else {
            g_string_append(s, "null");
        }
        g_string_append_printf(s, ",\n        \"request-alignment\": %" PRIu32
                               ",\n        \"memory-alignment\": %" PRIu32,
                               ni.request_alignment, ni.memory_alignment);
        if (align_source) {
            g_string_append(s, ",\n        \"alignment-source\": ");
            img_json_string(s, align_source);
        }
        g_string_append_printf(s, ",\n        \"cache-direct\": %s"
                               ",\n        \"nowait\": %s\n    }\n}\n",
                               ni.cache_direct ? "true" : "false",
                               ni.nowait > 0 ? "true" : ni.nowait == 0 ? "false" : "null");
        fputs(s->str, stdout);
        g_string_free(s, TRUE);
    } else {
        char *vs = img_size_to_str((uint64_t)size);
        printf("image: %s\nfile format: %s\nvirtual size: %s (%" PRId64 " bytes)\n",
               image_name, ni.driver, vs, size);
        g_free(vs);
        if (on_disk >= 0) {
            char *ds = img_size_to_str((uint64_t)on_disk);
            printf("disk size: %s\n", ds);
            g_free(ds);
        } else {
            printf("disk size: unavailable\n");
        }
        /* ringblk's own facts, in qemu-img's "Format specific information" layout. */
        printf("Block layer information:\n");
        if (ni.aio) {
            printf("    aio: %s (requested: %s)\n", ni.aio,
                   ni.aio_requested ? ni.aio_requested : ni.aio);
        }
        printf("    cache.direct: %s\n", ni.cache_direct ? "on" : "off");
        printf("    request alignment: %" PRIu32 "\n", ni.request_alignment);
        printf("    memory alignment: %" PRIu32 "\n", ni.memory_alignment);
        if (align_source) {
            printf("    alignment source: %s\n", align_source);
        }
        printf("    non-blocking I/O (nowait): %s\n", nowait_str(ni.nowait));
    }
    bdrv_node_info_clear(&ni);
    bdrv_unref(bs);
    return 0;
}

/* ---- map ----------------------------------------------------------------------------- */

typedef struct MapEntry {
    int64_t start;
    int64_t length;
    int status;
} MapEntry;

static void map_print(const MapEntry *e, bool json, bool first, bool has_file,
                      const char *filename)
{
    if (json) {
        printf("%s{ \"start\": %" PRId64 ", \"length\": %" PRId64 ", \"depth\": 0,"
               " \"present\": true, \"zero\": %s, \"data\": %s",
               first ? "[" : ",\n", e->start, e->length,
               (e->status & BDRV_BLOCK_ZERO) ? "true" : "false",
               (e->status & BDRV_BLOCK_DATA) ? "true" : "false");
        if (has_file) {
            printf(", \"offset\": %" PRId64, e->start);
        }
        printf("}");
    } else if (e->status & BDRV_BLOCK_DATA) {
        /* The human format lists only ranges with data, as qemu-img does. */
        char o[32], l[32], m[32];
        snprintf(o, sizeof(o), "%#" PRIx64, (uint64_t)e->start);
        snprintf(l, sizeof(l), "%#" PRIx64, (uint64_t)e->length);
        snprintf(m, sizeof(m), "%#" PRIx64, (uint64_t)e->start);
        printf("%-16s%-16s%-16s%s\n", o, l, has_file ? m : "", has_file ? filename : "");
    }
}

static int img_map(int argc, char **argv)
{
    CommonArgs a = { .output = "human" };
    int64_t start = 0, max_len = -1;
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "format", required_argument, NULL, 'f' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "force-share", no_argument, NULL, 'U' },
        { "start-offset", required_argument, NULL, 's' },
        { "max-length", required_argument, NULL, 'l' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, ":hf:U", longopts, NULL)) != -1) {
        switch (c) {
        case 'h': map_usage(); return 0;
        case 'f': a.open.fmt = optarg; break;
        case 'U': a.open.force_share = true; break;
        case 's':
            if (!img_cvtnum_full("start offset", optarg, 0, INT64_MAX, &start)) {
                return 1;
            }
            break;
        case 'l':
            if (!img_cvtnum_full("max length", optarg, 0, INT64_MAX, &max_len)) {
                return 1;
            }
            break;
        case OPT_OBJECT: if (!add_object(optarg)) return 1; break;
        case OPT_IMAGE_OPTS: a.open.image_opts = true; break;
        case OPT_OUTPUT: a.output = optarg; break;
        case ':': error_report("option '%s' needs an argument", argv[optind - 1]); return 1;
        default: img_bad_option(argv); return 1;
        }
    }
    bool json;
    if (!check_output(a.output, &json) || !check_image_opts(&a.open)) {
        return 1;
    }
    const char *filename;
    BlockDriverState *bs = img_open_one_readonly(argc, argv, &a.open, &filename);
    if (!bs) {
        return 1;
    }
    int64_t size = bdrv_getlength(bs);
    int ret = 0;
    if (size < 0) {
        error_report("Could not get the size of '%s': %s", filename, g_strerror((int)-size));
        ret = 1;
        goto out;
    }
    int64_t end = size;
    if (max_len >= 0 && start <= size && max_len < size - start) {
        end = start + max_len;
    }
    const char *file = bdrv_get_filename(bs);
    bool has_file = file != NULL;
    if (!json) {
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    }

    MapEntry cur = { .start = -1 };
    bool first = true;
    for (int64_t off = start; off < end;) {
        int64_t pnum;
        int status;
        int r = bdrv_block_status(bs, off, end - off, &pnum, &status);
        if (r < 0) {
            error_report("Could not read file metadata: %s", g_strerror(-r));
            ret = 1;
            goto out;
        }
        /* Merge runs with the same status (the driver may split them). */
        if (cur.start >= 0 && cur.status == status) {
            cur.length += pnum;
        } else {
            if (cur.start >= 0) {
                map_print(&cur, json, first, has_file, file);
                first = false;
            }
            cur = (MapEntry){ .start = off, .length = pnum, .status = status };
        }
        off += pnum;
    }
    if (cur.start >= 0) {
        map_print(&cur, json, first, has_file, file);
        first = false;
    }
    if (json) {
        printf(first ? "[]\n" : "]\n");
    }
out:
    bdrv_unref(bs);
    return ret;
}

/* ---- check --------------------------------------------------------------------------- */

static int img_check(int argc, char **argv)
{
    CommonArgs a = { .output = "human" };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "format", required_argument, NULL, 'f' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "force-share", no_argument, NULL, 'U' },
        { "repair", required_argument, NULL, 'r' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, ":hf:r:T:qU", longopts, NULL)) != -1) {
        switch (c) {
        case 'h': check_usage(); return 0;
        case 'f': a.open.fmt = optarg; break;
        case 'U': a.open.force_share = true; break;
        case 'q': a.quiet = true; break;
        case 'r':
            if (strcmp(optarg, "leaks") && strcmp(optarg, "all")) {
                error_report("Unknown option value for -r (expecting 'leaks' or 'all'): %s", optarg);
                return 1;
            }
            break;
        case 'T':
            if (!img_check_cache_mode(optarg, true)) {
                return 1;
            }
            a.open.cache = optarg;
            break;
        case OPT_OBJECT: if (!add_object(optarg)) return 1; break;
        case OPT_IMAGE_OPTS: a.open.image_opts = true; break;
        case OPT_OUTPUT: a.output = optarg; break;
        case ':': error_report("option '%s' needs an argument", argv[optind - 1]); return 1;
        default: img_bad_option(argv); return 1;
        }
    }
    bool json;
    if (!check_output(a.output, &json) || !check_image_opts(&a.open)) {
        return 1;
    }
    /* Open it anyway, so that a missing or unreadable image is reported as such. */
    const char *filename;
    BlockDriverState *bs = img_open_one_readonly(argc, argv, &a.open, &filename);
    if (!bs) {
        return 1;
    }
    bdrv_unref(bs);
    error_report("This image format does not support checks");
    return 63;
}

/* ---- Progress (-p) --------------------------------------------------------------------- */

typedef struct Progress {
    bool enabled;
    double last;
} Progress;

static void progress_print(Progress *p, double pct, bool force)
{
    if (!p->enabled) {
        return;
    }
    /* A line per percent at most; \r keeps it on one terminal line as qemu-img does. */
    if (force || pct - p->last >= 1.0) {
        printf("    (%3.2f/100%%)\r", pct);
        fflush(stdout);
        p->last = pct;
    }
}

static void progress_end(Progress *p)
{
    if (p->enabled) {
        printf("    (100.00/100%%)\r\n");
        fflush(stdout);
    }
}

/* ---- compare ------------------------------------------------------------------------ */

#define COMPARE_CHUNK (1 << 20)

/* Offset of the first differing byte of two buffers, or -1. */
static int64_t first_difference(const uint8_t *a, const uint8_t *b, int64_t len)
{
    if (memcmp(a, b, (size_t)len) == 0) {
        return -1;
    }
    for (int64_t i = 0; i < len; i++) {
        if (a[i] != b[i]) {
            return i;
        }
    }
    return -1;
}

/* True when len bytes are all zero (memcmp against itself shifted by one: fast in libc). */
static bool buffer_is_zero(const uint8_t *a, int64_t len)
{
    return len == 0 || (a[0] == 0 && memcmp(a, a + 1, (size_t)len - 1) == 0);
}

/* Offset of the first non-zero byte, or -1. */
static int64_t first_nonzero(const uint8_t *a, int64_t len)
{
    if (buffer_is_zero(a, len)) {
        return -1;
    }
    for (int64_t i = 0; i < len; i++) {
        if (a[i]) {
            return i;
        }
    }
    return -1;
}

/*
 * Checks that [off, end) of bs reads as zeroes. Returns -1 if so, the
 * first non-zero offset otherwise, or -2 after reporting an error.
 */
static int64_t check_zero_tail(BlockDriverState *bs, const char *name, int64_t off,
                               int64_t end, uint8_t *buf, Progress *p, int64_t total,
                               int64_t *done)
{
    while (off < end) {
        int64_t pnum;
        int status;
        int r = bdrv_block_status(bs, off, end - off, &pnum, &status);
        if (r < 0) {
            error_report("Error while reading offset %" PRId64 " of %s: %s", off, name,
                         g_strerror(-r));
            return -2;
        }
        if (!(status & BDRV_BLOCK_ZERO) && pnum > COMPARE_CHUNK) {
            pnum = COMPARE_CHUNK;
        }
        if (!(status & BDRV_BLOCK_ZERO)) {
            r = bdrv_pread(bs, off, pnum, buf, 0);
            if (r < 0) {
                error_report("Error while reading offset %" PRId64 " of %s: %s", off, name,
                             g_strerror(-r));
                return -2;
            }
            int64_t nz = first_nonzero(buf, pnum);
            if (nz >= 0) {
                return off + nz;
            }
        }
        off += pnum;
        *done += pnum;
        progress_print(p, 100.0 * (double)*done / (double)total, false);
    }
    return -1;
}

static int img_compare(int argc, char **argv)
{
    ImgOpenOpts o1 = { 0 }, o2 = { 0 };
    bool quiet = false, strict = false;
    Progress prog = { 0 };
    const char *cache = NULL;
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, ":hf:F:T:pqsU", longopts, NULL)) != -1) {
        switch (c) {
        case 'h': compare_usage(); return 0;
        case 'f': o1.fmt = optarg; break;
        case 'F': o2.fmt = optarg; break;
        case 'T':
            if (!img_check_cache_mode(optarg, true)) {
                return 2;
            }
            cache = optarg;
            break;
        case 'p': prog.enabled = true; break;
        case 'q': quiet = true; break;
        case 's': strict = true; break;
        case 'U': o1.force_share = o2.force_share = true; break;
        case OPT_OBJECT: if (!add_object(optarg)) return 2; break;
        case OPT_IMAGE_OPTS: o1.image_opts = o2.image_opts = true; break;
        case ':': error_report("option '%s' needs an argument", argv[optind - 1]); return 2;
        default: img_bad_option(argv); return 2;
        }
    }
    if (quiet) {
        prog.enabled = false;
    }
    if (optind != argc - 2) {
        error_report("Expecting two image file names");
        img_print_help_hint();
        return 2;
    }
    if (o1.image_opts && (o1.fmt || o2.fmt)) {
        error_report("--image-opts and -f/-F are mutually exclusive");
        return 2;
    }
    if (!check_format(o1.fmt) || !check_format(o2.fmt)) {
        return 2;
    }
    const char *n1 = argv[optind], *n2 = argv[optind + 1];
    o1.cache = o2.cache = cache;
    o1.read_only = o2.read_only = true;

    Error *err = NULL;
    BlockDriverState *bs1 = NULL, *bs2 = NULL;
    uint8_t *buf1 = NULL, *buf2 = NULL;
    int ret = 2;
    bs1 = img_open(n1, &o1, &err);
    if (!bs1) {
        error_report_err(err);
        return 2;
    }
    bs2 = img_open(n2, &o2, &err);
    if (!bs2) {
        error_report_err(err);
        goto out;
    }
    int64_t len1 = bdrv_getlength(bs1), len2 = bdrv_getlength(bs2);
    if (len1 < 0 || len2 < 0) {
        error_report("Can't get size of %s: %s", len1 < 0 ? n1 : n2,
                     g_strerror((int)-(len1 < 0 ? len1 : len2)));
        goto out;
    }
    if (len1 != len2) {
        if (strict) {
            if (!quiet) {
                printf("Strict mode: Image size mismatch!\n");
            }
            ret = 1;
            goto out;
        }
    }
    buf1 = bdrv_blockalign(bs1, COMPARE_CHUNK);
    buf2 = bdrv_blockalign(bs2, COMPARE_CHUNK);

    int64_t common = len1 < len2 ? len1 : len2;
    int64_t total = len1 > len2 ? len1 : len2;
    int64_t done = 0, mismatch = -1;
    progress_print(&prog, 0, true);
    for (int64_t off = 0; off < common && mismatch < 0;) {
        int64_t p1, p2;
        int s1, s2;
        int r = bdrv_block_status(bs1, off, common - off, &p1, &s1);
        if (r >= 0) {
            r = bdrv_block_status(bs2, off, common - off, &p2, &s2);
        }
        if (r < 0) {
            error_report("Error while reading offset %" PRId64 ": %s", off, g_strerror(-r));
            goto out;
        }
        int64_t n = p1 < p2 ? p1 : p2;
        bool both_zero = (s1 & BDRV_BLOCK_ZERO) && (s2 & BDRV_BLOCK_ZERO);
        /* Only ranges that are read need to fit the buffer; zero ranges go in one step. */
        if (!both_zero && n > COMPARE_CHUNK) {
            n = COMPARE_CHUNK;
        }
        if (strict && s1 != s2) {
            if (!quiet) {
                printf("Strict mode: Offset %" PRId64 " block status mismatch!\n", off);
            }
            ret = 1;
            goto out;
        }
        /* Ranges that read as zeroes in both need no reading. */
        if (!both_zero) {
            r = bdrv_pread(bs1, off, n, buf1, 0);
            if (r < 0) {
                error_report("Error while reading offset %" PRId64 " of %s: %s", off, n1,
                             g_strerror(-r));
                goto out;
            }
            r = bdrv_pread(bs2, off, n, buf2, 0);
            if (r < 0) {
                error_report("Error while reading offset %" PRId64 " of %s: %s", off, n2,
                             g_strerror(-r));
                goto out;
            }
            int64_t d = first_difference(buf1, buf2, n);
            if (d >= 0) {
                mismatch = off + d;
                break;
            }
        }
        off += n;
        done += n;
        progress_print(&prog, 100.0 * (double)done / (double)total, false);
    }
    /* The longer image must read as zeroes beyond the shorter one's end. */
    if (mismatch < 0 && len1 != len2) {
        /* As qemu-img: the warning only when the common part matched. */
        if (!quiet) {
            printf("Warning: Image size mismatch!\n");
        }
        BlockDriverState *longer = len1 > len2 ? bs1 : bs2;
        mismatch = check_zero_tail(longer, len1 > len2 ? n1 : n2, common, total, buf1,
                                   &prog, total, &done);
        if (mismatch == -2) {
            goto out;
        }
    }
    progress_end(&prog);
    if (mismatch >= 0) {
        if (!quiet) {
            printf("Content mismatch at offset %" PRId64 "!\n", mismatch);
        }
        ret = 1;
    } else {
        if (!quiet) {
            printf("Images are identical.\n");
        }
        ret = 0;
    }
out:
    if (buf1) {
        bdrv_blockalign_free(bs1, buf1, COMPARE_CHUNK);
    }
    if (buf2) {
        bdrv_blockalign_free(bs2, buf2, COMPARE_CHUNK);
    }
    if (bs2) {
        bdrv_unref(bs2);
    }
    bdrv_unref(bs1);
    return ret;
}

/* ---- convert ------------------------------------------------------------------------- */

#define CONVERT_CHUNK (2 << 20)

/*
 * The copy runs -m chunks at a time, as qemu-img's coroutines do: each slot
 * reads a chunk of data (at most CONVERT_CHUNK) into its own buffer, then
 * writes it, data runs with pwritev and runs of -S zero bytes as nothing
 * (fresh output) or write-zeroes (-n). Without -W, chunks are written in
 * order: a slot whose chunk was read early waits for the chunks before it.
 * Zero ranges of the source take no slot on a fresh output. Everything runs
 * in completion callbacks of the main AioContext; the caller polls until no
 * slot is busy.
 */
typedef struct ConvertJob ConvertJob;

typedef struct ConvertSlot {
    ConvertJob *job;
    uint8_t *buf;
    IOVector qiov;
    int64_t offset, len;      /* the chunk */
    int64_t pos, pos_next;    /* written so far; end of the write in flight */
    uint64_t seq;             /* the chunk's place in the output order */
    bool is_zero;             /* a zero range of the source: write-zeroes, no read */
    bool busy;
    bool ready;               /* read, waiting for its turn to write */
} ConvertSlot;

struct ConvertJob {
    BlockDriverState *in, *out;
    int64_t len, sparse;
    bool out_zero, in_order;
    Progress *prog;

    ConvertSlot *slots;
    int nslots;
    int active;
    int64_t next_offset;      /* where planning continues */
    uint64_t next_seq, write_seq;
    int64_t done;             /* bytes finished, for -p */
    int ret;                  /* first error */
    bool err_write;
    int64_t err_offset;
};

static void convert_start(ConvertSlot *s);
static void convert_try_write(ConvertSlot *s);

static void convert_fail(ConvertJob *job, int ret, bool write, int64_t offset)
{
    if (job->ret == 0) {
        job->ret = ret;
        job->err_write = write;
        job->err_offset = offset;
    }
}

static void convert_progress(ConvertJob *job, int64_t bytes)
{
    job->done += bytes;
    progress_print(job->prog, 100.0 * (double)job->done / (double)job->len, false);
}

/* Ends a slot's work. After an error, slots waiting for their turn end too. */
static void convert_slot_idle(ConvertSlot *s)
{
    ConvertJob *job = s->job;
    s->busy = false;
    s->ready = false;
    job->active--;
    if (job->ret < 0) {
        for (int i = 0; i < job->nslots; i++) {
            if (job->slots[i].busy && job->slots[i].ready) {
                convert_slot_idle(&job->slots[i]);
            }
        }
    }
}

static void convert_chunk_done(ConvertSlot *s)
{
    ConvertJob *job = s->job;
    convert_progress(job, s->len);
    job->write_seq++;
    convert_slot_idle(s);
    /* The next chunk in order may be waiting, read already. */
    for (int i = 0; i < job->nslots; i++) {
        ConvertSlot *w = &job->slots[i];
        if (w->busy && w->ready && w->seq == job->write_seq) {
            convert_try_write(w);
            break;
        }
    }
    convert_start(s);
}

static void convert_write_cb(void *opaque, int ret)
{
    ConvertSlot *s = opaque;
    if (ret < 0) {
        convert_fail(s->job, ret, true, s->offset + s->pos);
        convert_slot_idle(s);
        return;
    }
    s->pos = s->pos_next;
    convert_try_write(s);
}

/* Issues the next write of a slot whose turn it is, or finishes the chunk. */
static void convert_write_next(ConvertSlot *s)
{
    ConvertJob *job = s->job;
    if (s->is_zero) {
        if (s->pos < s->len) {
            s->pos_next = s->len;
            bdrv_aio_pwrite_zeroes(job->out, s->offset, s->len, BDRV_REQ_MAY_UNMAP,
                                   convert_write_cb, s);
            return;
        }
        convert_chunk_done(s);
        return;
    }
    int64_t step = job->sparse ? job->sparse : s->len;
    while (s->pos < s->len) {
        /* The run from pos of pieces of -S bytes that are all zero, or all not. */
        int64_t i = s->pos;
        int64_t n = step < s->len - i ? step : s->len - i;
        bool zero = job->sparse && buffer_is_zero(s->buf + i, n);
        int64_t j = i + n;
        while (j < s->len) {
            int64_t m = step < s->len - j ? step : s->len - j;
            if ((job->sparse && buffer_is_zero(s->buf + j, m)) != zero) {
                break;
            }
            j += m;
        }
        if (zero && job->out_zero) {
            s->pos = j;         /* the output reads as zeroes there already */
            continue;
        }
        s->pos_next = j;
        if (zero) {
            bdrv_aio_pwrite_zeroes(job->out, s->offset + i, j - i, BDRV_REQ_MAY_UNMAP,
                                   convert_write_cb, s);
        } else {
            iovector_init_buf(&s->qiov, s->buf + i, (size_t)(j - i));
            bdrv_aio_pwritev(job->out, s->offset + i, &s->qiov, 0, convert_write_cb, s);
        }
        return;
    }
    convert_chunk_done(s);
}

static void convert_try_write(ConvertSlot *s)
{
    ConvertJob *job = s->job;
    if (job->ret < 0) {
        convert_slot_idle(s);
        return;
    }
    if (job->in_order && s->seq != job->write_seq) {
        s->ready = true;        /* convert_chunk_done() of the chunk before wakes it */
        return;
    }
    s->ready = false;
    convert_write_next(s);
}

static void convert_read_cb(void *opaque, int ret)
{
    ConvertSlot *s = opaque;
    if (ret < 0) {
        convert_fail(s->job, ret, false, s->offset);
        convert_slot_idle(s);
        return;
    }
    convert_try_write(s);
}

/* Gives the slot the next chunk that needs I/O, if any, and starts it. */
static void convert_start(ConvertSlot *s)
{
    ConvertJob *job = s->job;
    while (job->ret == 0 && job->next_offset < job->len) {
        int64_t off = job->next_offset, pnum;
        int status;
        int r = bdrv_block_status(job->in, off, job->len - off, &pnum, &status);
        if (r < 0) {
            convert_fail(job, r, false, off);
            break;
        }
        bool zero_range = (status & BDRV_BLOCK_ZERO) && job->sparse;
        if (zero_range && job->out_zero) {
            /* Nothing to read or write: the whole range in one step. */
            job->next_offset += pnum;
            convert_progress(job, pnum);
            continue;
        }
        if (pnum > CONVERT_CHUNK) {
            pnum = CONVERT_CHUNK;
        }
        job->next_offset += pnum;
        s->offset = off;
        s->len = pnum;
        s->pos = 0;
        s->is_zero = zero_range;
        s->seq = job->next_seq++;
        s->busy = true;
        s->ready = false;
        job->active++;
        if (zero_range) {
            convert_try_write(s);
        } else {
            iovector_init_buf(&s->qiov, s->buf, (size_t)pnum);
            bdrv_aio_preadv(job->in, off, &s->qiov, 0, convert_read_cb, s);
        }
        return;
    }
}

/* Copies everything; false after reporting the first error. */
static bool convert_run(ConvertJob *job, int nslots)
{
    job->nslots = nslots;
    job->slots = g_new0(ConvertSlot, nslots);
    for (int i = 0; i < nslots; i++) {
        job->slots[i].job = job;
        job->slots[i].buf = bdrv_blockalign(job->in, CONVERT_CHUNK);
    }
    for (int i = 0; i < nslots; i++) {
        convert_start(&job->slots[i]);
    }
    AioContext *ctx = bdrv_get_aio_context(job->out);
    while (job->active > 0) {
        aio_poll(ctx, true);
    }
    for (int i = 0; i < nslots; i++) {
        bdrv_blockalign_free(job->in, job->slots[i].buf, CONVERT_CHUNK);
    }
    g_free(job->slots);
    if (job->ret < 0) {
        error_report("error while %s at byte %" PRId64 ": %s",
                     job->err_write ? "writing" : "reading", job->err_offset,
                     g_strerror(-job->ret));
        return false;
    }
    return true;
}

static int img_convert(int argc, char **argv)
{
    ImgOpenOpts src = { .cache = "writeback" }, dst = { .cache = "unsafe" };
    const char *out_fmt = "raw", *options = NULL;
    bool quiet = false, skip_create = false, target_is_zero = false, out_of_order = false;
    Progress prog = { 0 };
    int64_t sparse = 4096, nreq = 8;
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "target-image-opts", no_argument, NULL, OPT_TARGET_IMAGE_OPTS },
        { "target-is-zero", no_argument, NULL, OPT_TARGET_IS_ZERO },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, ":hf:O:o:t:T:S:m:pqnWUc", longopts, NULL)) != -1) {
        switch (c) {
        case 'h': convert_usage(); return 0;
        case 'f': src.fmt = optarg; break;
        case 'O': out_fmt = optarg; break;
        case 'o': options = optarg; break;
        case 't':
            if (!img_check_cache_mode(optarg, false)) {
                return 1;
            }
            dst.cache = optarg;
            break;
        case 'T':
            if (!img_check_cache_mode(optarg, true)) {
                return 1;
            }
            src.cache = optarg;
            break;
        case 'S':
            if (!img_cvtnum_full("buffer size for sparse output", optarg, 0, CONVERT_CHUNK,
                                 &sparse)) {
                return 1;
            }
            if (sparse % IMG_SECTOR) {
                error_report("Invalid buffer size for sparse output specified. Valid sizes are "
                             "multiples of %d up to %d. Select 0 to disable sparse detection "
                             "(fully allocates output).", IMG_SECTOR, CONVERT_CHUNK);
                return 1;
            }
            break;
        case 'm':
            if (!img_parse_int(optarg, 1, 16, &nreq)) {
                error_report("Invalid number of coroutines. Allowed number of coroutines is "
                             "between 1 and 16");
                return 1;
            }
            break;
        case 'p': prog.enabled = true; break;
        case 'q': quiet = true; break;
        case 'n': skip_create = true; break;
        case 'W': out_of_order = true; break;
        case 'U': src.force_share = true; break;
        case 'c':
            error_report("Compression not supported for this file format");
            return 1;
        case OPT_OBJECT: if (!add_object(optarg)) return 1; break;
        case OPT_IMAGE_OPTS: src.image_opts = true; break;
        case OPT_TARGET_IMAGE_OPTS: dst.image_opts = true; break;
        case OPT_TARGET_IS_ZERO: target_is_zero = true; break;
        case ':': error_report("option '%s' needs an argument", argv[optind - 1]); return 1;
        default: img_bad_option(argv); return 1;
        }
    }
    if (quiet) {
        prog.enabled = false;
    }
    if (argc - optind < 2) {
        error_report("Must specify image file name");
        img_print_help_hint();
        return 1;
    }
    if (argc - optind > 2) {
        error_report("ringblk-img converts one source image at a time");
        return 1;
    }
    if (!check_image_opts(&src) || !check_format(out_fmt)) {
        return 1;
    }
    if (dst.image_opts && !skip_create) {
        error_report("--target-image-opts requires use of -n flag");
        return 1;
    }
    if (target_is_zero && !skip_create) {
        error_report("--target-is-zero requires use of -n flag");
        return 1;
    }
    if (options && skip_create) {
        error_report("-o has no effect when skipping image creation");
        return 1;
    }
    const char *src_name = argv[optind], *dst_name = argv[optind + 1];
    const char *prealloc = "off";
    if (options) {
        Error *err = NULL;
        JsonObject *kv = keyval_parse(options, NULL, &err);
        if (!kv) {
            error_report("Invalid option list: %s", options);
            error_free(err);
            return 1;
        }
        GList *names = json_object_get_members(kv);
        int bad = 0;
        for (GList *l = names; l && !bad; l = l->next) {
            if (!strcmp(l->data, "preallocation")) {
                prealloc = g_intern_string(json_object_get_string_member(kv, "preallocation"));
            } else {
                error_report("Invalid parameter '%s'", (const char *)l->data);
                bad = 1;
            }
        }
        g_list_free(names);
        json_object_unref(kv);
        if (bad) {
            return 1;
        }
    }

    Error *err = NULL;
    BlockDriverState *in = NULL, *out = NULL;
    int ret = 1;
    src.read_only = true;
    in = img_open(src_name, &src, &err);
    if (!in) {
        error_report_err(err);
        return 1;
    }
    int64_t len = bdrv_getlength(in);
    if (len < 0) {
        error_report("Could not get the size of '%s': %s", src_name, g_strerror((int)-len));
        goto out;
    }
    if (!skip_create) {
        if (bdrv_create_file(dst_name, len, prealloc, &err) < 0) {
            error_prepend(&err, "%s: error while converting raw: ", dst_name);
            error_report_err(err);
            goto out;
        }
    }
    out = img_open(dst_name, &dst, &err);
    if (!out) {
        error_report_err(err);
        goto out;
    }
    int64_t out_len = bdrv_getlength(out);
    if (out_len < 0) {
        error_report("Could not get the size of '%s': %s", dst_name, g_strerror((int)-out_len));
        goto out;
    }
    if (skip_create && out_len < len) {
        error_report("output file is smaller than input file");
        goto out;
    }
    /* A freshly created image reads as zeroes: zero ranges need no write at all. */
    bool out_zero = !skip_create || target_is_zero;

    ConvertJob job = {
        .in = in, .out = out, .len = len, .sparse = sparse, .out_zero = out_zero,
        .in_order = !out_of_order, .prog = &prog,
    };
    progress_print(&prog, 0, true);
    if (!convert_run(&job, (int)nreq)) {
        goto out;
    }
    int r = bdrv_flush(out);
    if (r < 0) {
        error_report("error while flushing the output image: %s", g_strerror(-r));
        goto out;
    }
    progress_end(&prog);
    ret = 0;
out:
    if (out) {
        bdrv_unref(out);
    }
    bdrv_unref(in);
    return ret;
}

/* ---- measure --------------------------------------------------------------------------- */

/* A raw image needs its virtual size, whatever it holds: both figures are that size. */
static int img_measure(int argc, char **argv)
{
    ImgOpenOpts o = { 0 };
    const char *out_fmt = "raw", *output = "human";
    int64_t size = -1;
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "size", required_argument, NULL, 's' },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, ":hf:O:o:l:U", longopts, NULL)) != -1) {
        switch (c) {
        case 'h': measure_usage(); return 0;
        case 'f': o.fmt = optarg; break;
        case 'O': out_fmt = optarg; break;
        case 'o': break;  /* raw has no option that changes the size needed */
        case 'l':
            error_report("raw images have no snapshots");
            return 1;
        case 'U': o.force_share = true; break;
        case 's':
            if (!img_cvtnum_full("image size", optarg, 0, INT64_MAX, &size)) {
                return 1;
            }
            break;
        case OPT_OBJECT: if (!add_object(optarg)) return 1; break;
        case OPT_IMAGE_OPTS: o.image_opts = true; break;
        case OPT_OUTPUT: output = optarg; break;
        case ':': error_report("option '%s' needs an argument", argv[optind - 1]); return 1;
        default: img_bad_option(argv); return 1;
        }
    }
    bool json;
    if (!check_output(output, &json) || !check_image_opts(&o) || !check_format(out_fmt)) {
        return 1;
    }
    if (size >= 0 && optind < argc) {
        error_report("--size N cannot be used together with a filename.");
        return 1;
    }
    if (size < 0 && optind != argc - 1) {
        error_report("Either --size N or one filename must be specified.");
        return 1;
    }
    if (size < 0) {
        Error *err = NULL;
        o.read_only = true;
        BlockDriverState *bs = img_open(argv[optind], &o, &err);
        if (!bs) {
            error_report_err(err);
            return 1;
        }
        size = bdrv_getlength(bs);
        bdrv_unref(bs);
        if (size < 0) {
            error_report("Could not get the size of '%s': %s", argv[optind],
                         g_strerror((int)-size));
            return 1;
        }
    }
    if (json) {
        printf("{\n    \"required\": %" PRId64 ",\n    \"fully-allocated\": %" PRId64 "\n}\n",
               size, size);
    } else {
        printf("required size: %" PRId64 "\nfully allocated size: %" PRId64 "\n", size, size);
    }
    return 0;
}

/* ---- resize ---------------------------------------------------------------------------- */

static int img_resize(int argc, char **argv)
{
    ImgOpenOpts o = { 0 };
    bool quiet = false, shrink = false;
    const char *prealloc = "off";
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "preallocation", required_argument, NULL, OPT_PREALLOCATION },
        { "shrink", no_argument, NULL, OPT_SHRINK },
        { NULL, 0, NULL, 0 },
    };
    /* "-1G" is a size here, not an option: stop at the first non-option (+ keeps order). */
    int c;
    while ((c = getopt_long(argc, argv, "+:hf:q", longopts, NULL)) != -1) {
        switch (c) {
        case 'h': resize_usage(); return 0;
        case 'f': o.fmt = optarg; break;
        case 'q': quiet = true; break;
        case OPT_OBJECT: if (!add_object(optarg)) return 1; break;
        case OPT_IMAGE_OPTS: o.image_opts = true; break;
        case OPT_PREALLOCATION:
            if (strcmp(optarg, "off") && strcmp(optarg, "falloc") && strcmp(optarg, "full")) {
                error_report("Invalid preallocation mode '%s'", optarg);
                return 1;
            }
            prealloc = optarg;
            break;
        case OPT_SHRINK: shrink = true; break;
        case ':': error_report("option '%s' needs an argument", argv[optind - 1]); return 1;
        default: img_bad_option(argv); return 1;
        }
    }
    /* Options may still follow the file name (qemu-img permutes them): take them too. */
    const char *filename = NULL, *size_arg = NULL;
    for (int i = optind; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--")) {
            continue;
        }
        if (!strcmp(arg, "--shrink")) {
            shrink = true;
        } else if (!strcmp(arg, "-q")) {
            quiet = true;
        } else if (!filename) {
            filename = arg;
        } else if (!size_arg) {
            size_arg = arg;
        } else {
            error_report("Unexpected argument: %s", arg);
            return 1;
        }
    }
    if (!filename || !size_arg) {
        error_report("Not enough arguments");
        img_print_help_hint();
        return 1;
    }
    if (!check_image_opts(&o)) {
        return 1;
    }
    int sign = 0;
    const char *num = size_arg;
    if (*num == '+' || *num == '-') {
        sign = *num == '+' ? 1 : -1;
        num++;
    }
    uint64_t n;
    if (img_parse_size(num, &n) < 0) {
        error_report("Parameter 'size' expects a non-negative number below 2^64");
        error_report("Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, "
                     "peta-\nand exabytes, respectively.");
        return 1;
    }

    Error *err = NULL;
    BlockDriverState *bs = img_open(filename, &o, &err);
    if (!bs) {
        error_report_err(err);
        return 1;
    }
    int ret = 1;
    int64_t cur = bdrv_getlength(bs);
    if (cur < 0) {
        error_report("Could not get the size of '%s': %s", filename, g_strerror((int)-cur));
        goto out;
    }
    int64_t target;
    if (sign > 0) {
        if ((int64_t)n > INT64_MAX - cur) {
            error_report("New image size is too large");
            goto out;
        }
        target = cur + (int64_t)n;
    } else if (sign < 0) {
        target = cur - (int64_t)n;
    } else {
        target = (int64_t)n;
    }
    if (target <= 0) {
        error_report("New image size must be positive");
        goto out;
    }
    if (target < cur) {
        if (!shrink) {
            error_report("Use the --shrink option to perform a shrink operation.");
            goto out;
        }
        warn_report("Shrinking an image will delete all data beyond the shrunken image's end. "
                    "Before performing such an operation, make sure there is no important "
                    "data there.");
        if (strcmp(prealloc, "off")) {
            error_report("Preallocation can only be used for growing images");
            goto out;
        }
    }
    if (bdrv_truncate(bs, target, true, prealloc, &err) < 0) {
        error_report_err(err);
        goto out;
    }
    if (!quiet) {
        printf("Image resized.\n");
    }
    ret = 0;
out:
    bdrv_unref(bs);
    return ret;
}

/* ---- main ------------------------------------------------------------------------------ */

static const ImgCmd img_cmds[] = {
    { "bench", img_bench, img_bench_usage },
    { "check", img_check, check_usage },
    { "compare", img_compare, compare_usage },
    { "convert", img_convert, convert_usage },
    { "create", img_create, create_usage },
    { "info", img_info, info_usage },
    { "map", img_map, map_usage },
    { "measure", img_measure, measure_usage },
    { "resize", img_resize, resize_usage },
};

static void help(void)
{
    printf("ringblk-img version " RINGBLK_VERSION "\n"
           "usage: ringblk-img [standard options] command [command options]\n"
           "Raw disk image utility with qemu-img's commands and options\n"
           "\n"
           "    '-h', '--help'       display this help and exit\n"
           "    '-V', '--version'    output version information and exit\n"
           "\n"
           "Commands (ringblk-img COMMAND --help describes each):\n"
           "  bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [-n]\n"
           "        [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size]\n"
           "        [-t cache] [-w] [-U] [--image-opts] [--random] [--seed=N] [--rw-mix=PCT]\n"
           "        [--engine-opts=opts] [--output=ofmt] filename\n"
           "  check [--object objectdef] [--image-opts] [-q] [-f fmt] [--output=ofmt] [-T src_cache] [-U] filename\n"
           "  compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U]\n"
           "          filename1 filename2\n"
           "  convert [--object objectdef] [--image-opts] [--target-image-opts] [--target-is-zero] [-U] [-p]\n"
           "          [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-o options]\n"
           "          [-S sparse_size] [-m num] [-W] filename output_filename\n"
           "  create [--object objectdef] [-q] [-f fmt] [-o options] filename [size]\n"
           "  info [--object objectdef] [--image-opts] [-f fmt] [--output=ofmt] [-t cache] [-i aio]\n"
           "       [--engine-opts=opts] [-U] filename\n"
           "  map [--object objectdef] [--image-opts] [-f fmt] [--start-offset=offset] [--max-length=len]\n"
           "      [--output=ofmt] [-U] filename\n"
           "  measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [--object objectdef]\n"
           "          [--image-opts] [-f fmt] filename]\n"
           "  resize [--object objectdef] [--image-opts] [-f fmt] [--preallocation=prealloc] [-q] [--shrink]\n"
           "         filename [+ | -]size\n"
           "\n"
           "Parameters:\n"
           "  'filename' is a raw image file; with --image-opts, an options string\n"
           "    (driver=raw,file.driver=file,file.filename=x.img,file.aio=io_uring or JSON)\n"
           "  'fmt' is the image format: raw\n"
           "  'cache' is none, writeback (default, except for convert), writethrough,\n"
           "    directsync or unsafe (default for convert)\n"
           "  'aio' is threads, native, io_uring or auto (default)\n"
           "  'size' is in bytes; suffixes k, M, G, T, P, E (powers of 1024) are supported\n"
           "  'objectdef' is iothread,id=ID[,poll-max-ns=N,poll-grow=N,poll-shrink=N]\n"
           "  'ofmt' is human (default) or json\n"
           "\n"
           "Supported formats: raw (over file, host_device, null-co, null-aio)\n");
}

int main(int argc, char **argv)
{
    error_set_progname("ringblk-img");
    g_set_prgname("ringblk-img");
    if (argc < 2) {
        error_report("Not enough arguments");
        img_print_help_hint();
        return 1;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
        help();
        return 0;
    }
    if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
        printf("ringblk-img version " RINGBLK_VERSION "\n");
        return 0;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(img_cmds); i++) {
        if (!strcmp(cmd, img_cmds[i].name)) {
            /* The subcommand parses argv[1..]: its name takes argv[0]'s place for getopt. */
            optind = 1;
            int ret = img_cmds[i].run(argc - 1, argv + 1);
            fflush(stdout);
            return ret;
        }
    }
    error_report("Command not found: %s", cmd);
    img_print_help_hint();
    return 1;
}
