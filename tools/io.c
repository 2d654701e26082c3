/*
 * ringblk-io: exercises a block node with qemu-io's command language.
 *
 * The front end: program options (qemu-io's spellings), opening the image,
 * running the -c commands in order or reading commands from stdin at a
 * "ringblk-io> " prompt. The commands themselves are in io-cmds.c.
 *
 * Interactive input is read by an fd handler on the main AioContext, so
 * aio_* completions are printed while the prompt waits, as in qemu-io.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config-host.h"
#include "qapi/qapi.h"
#include "tools/io-cmds.h"
#include "util/iothread.h"

#define PROMPT "ringblk-io> "

static void usage(void)
{
    printf(
"Usage: ringblk-io [OPTIONS]... [-c COMMAND]... [FILE]\n"
"Runs qemu-io style commands (read, write, aio_read, ...) against an image\n"
"through the ringblk block layer. Without -c, reads commands from stdin.\n"
"\n"
"  -c, --cmd COMMAND    run COMMAND; repeat for a sequence (see -c help)\n"
"  -f, --format FMT     image format (raw, the default)\n"
"      --image-opts     FILE is an options string (keyval or JSON), not a path\n"
"  -r, --read-only      open the image read-only\n"
"  -t, --cache=MODE     none, writeback (default), writethrough, directsync, unsafe\n"
"  -n, --nocache        the same as -t none (O_DIRECT)\n"
"  -i, --aio=MODE       engine: threads, native, io_uring or auto (default)\n"
"  -k, --native-aio     the same as -i native\n"
"  -d, --discard=MODE   unmap (default, as qemu-io) or ignore\n"
"  -o, --options OPTS   more file-node options, e.g. fixed-files=on,sqpoll=on;\n"
"                       may be repeated\n"
"  -U, --force-share    open even if another process holds the image\n"
"  -m, --misalign       start I/O buffers 16 bytes past their alignment\n"
"  -T, --trace [[enable=]PATTERN][,file=FILE]\n"
"                       log every request (events rbio_submit, rbio_complete)\n"
"                       matching PATTERN to stderr or FILE\n"
"      --object iothread,id=ID[,poll-max-ns=NS,...]\n"
"                       run the image in an I/O thread of its own\n"
"  -h, --help           print this help\n"
"  -V, --version        print the version\n"
"\n"
"The exit status is 1 if any command failed, 0 otherwise.\n");
}

/* -T [[enable=]pattern][,file=path] */
static bool parse_trace(IoSession *s, const char *arg)
{
    g_auto(GStrv) parts = g_strsplit(arg, ",", -1);
    const char *pattern = NULL, *file = NULL;

    for (char **p = parts; *p; p++) {
        if (g_str_has_prefix(*p, "enable=")) {
            pattern = *p + strlen("enable=");
        } else if (g_str_has_prefix(*p, "file=")) {
            file = *p + strlen("file=");
        } else if (g_str_has_prefix(*p, "events=")) {
            error_report("-T events= files are not supported; give a pattern");
            return false;
        } else if (!strchr(*p, '=')) {
            pattern = *p;
        } else {
            error_report("Invalid trace option: %s", *p);
            return false;
        }
    }
    g_free(s->trace_pattern);
    s->trace_pattern = g_strdup(pattern && *pattern ? pattern : "*");
    if (file) {
        s->trace = fopen(file, "w");
        if (!s->trace) {
            error_report("Could not open trace file '%s': %s", file, strerror(errno));
            return false;
        }
    } else {
        s->trace = stderr;
    }
    return true;
}

/*
 * --object iothread,id=ID[,poll-max-ns=...]: checked against the schema's
 * ObjectOptions, then started.
 */
static IOThread *object_create(const char *text, Error **errp)
{
    bool from_keyval;
    JsonObject *opts = qapi_parse_options(text, "qom-type", &from_keyval, errp);
    IOThread *iothread = NULL;

    if (!opts) {
        return NULL;
    }
    if (!qapi_check("ObjectOptions", opts, from_keyval, errp)) {
        goto out;
    }
    if (strcmp(json_object_get_string_member(opts, "qom-type"), "iothread") != 0) {
        error_setg(errp, "Object type '%s' is not supported by ringblk-io",
                   json_object_get_string_member(opts, "qom-type"));
        goto out;
    }
    iothread = iothread_new(json_object_get_string_member(opts, "id"), errp);
    if (iothread &&
        !iothread_set_poll_params(iothread,
                                  json_object_get_int_member(opts, "poll-max-ns"),
                                  json_object_get_int_member(opts, "poll-grow"),
                                  json_object_get_int_member(opts, "poll-shrink"), errp)) {
        iothread_destroy(iothread);
        iothread = NULL;
    }
out:
    json_object_unref(opts);
    return iothread;
}

/* ---- Interactive input -------------------------------------------------------------- */

typedef struct IoStdin {
    IoSession *s;
    GString *buf;       /* bytes read, not yet run */
    bool eof;
    bool waiting;       /* the handler is registered */
    bool failed;
} IoStdin;

static void stdin_read(void *opaque)
{
    IoStdin *in = opaque;
    char chunk[4096];
    ssize_t n = read(STDIN_FILENO, chunk, sizeof(chunk));

    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        return;
    }
    if (n <= 0) {
        in->eof = true;
    } else {
        g_string_append_len(in->buf, chunk, n);
    }
}

static void stdin_wait(IoStdin *in, bool on)
{
    if (in->waiting != on) {
        aio_set_fd_handler(aio_context_main(), STDIN_FILENO, false,
                           on ? stdin_read : NULL, NULL, NULL, NULL, in);
        in->waiting = on;
    }
}

/* Runs commands from stdin until quit or end of input. Returns false if one failed. */
static bool command_loop_interactive(IoSession *s)
{
    IoStdin in = { .s = s, .buf = g_string_new(NULL) };
    bool ok = true;

    while (!s->quit) {
        fputs(PROMPT, stdout);
        fflush(stdout);
        char *nl;
        while (!(nl = memchr(in.buf->str, '\n', in.buf->len)) && !in.eof) {
            stdin_wait(&in, true);
            aio_poll(aio_context_main(), true);
        }
        /* No nested reads while a command runs (its polls would see stdin). */
        stdin_wait(&in, false);
        if (!nl && in.buf->len == 0) {
            break;
        }
        size_t len = nl ? (size_t)(nl - in.buf->str) : in.buf->len;
        char *line = g_strndup(in.buf->str, len);
        g_string_erase(in.buf, 0, nl ? len + 1 : len);
        if (io_run_command(s, line) < 0) {
            ok = false;
        }
        g_free(line);
    }
    stdin_wait(&in, false);
    if (in.eof && isatty(STDIN_FILENO)) {
        putchar('\n');     /* Ctrl-D at the prompt: end the line */
    }
    g_string_free(in.buf, true);
    return ok;
}

/* ---- main ------------------------------------------------------------------------------ */

enum {
    OPT_IMAGE_OPTS = 256,
    OPT_OBJECT,
};

int main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { "cmd", required_argument, NULL, 'c' },
        { "format", required_argument, NULL, 'f' },
        { "read-only", no_argument, NULL, 'r' },
        { "nocache", no_argument, NULL, 'n' },
        { "misalign", no_argument, NULL, 'm' },
        { "native-aio", no_argument, NULL, 'k' },
        { "aio", required_argument, NULL, 'i' },
        { "cache", required_argument, NULL, 't' },
        { "discard", required_argument, NULL, 'd' },
        { "options", required_argument, NULL, 'o' },
        { "trace", required_argument, NULL, 'T' },
        { "force-share", no_argument, NULL, 'U' },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "object", required_argument, NULL, OPT_OBJECT },
        { NULL, 0, NULL, 0 },
    };
    IoOpenArgs open_args = { 0 };
    IoSession s;
    IOThread *iothread = NULL;
    GPtrArray *cmds = g_ptr_array_new();
    char *extra_opts = NULL;
    int status = 0, c;
    Error *err = NULL;

    g_set_prgname("ringblk-io");
    error_set_progname("ringblk-io");
    /* Line-buffered, so that stdout and stderr interleave as written. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    io_session_init(&s, aio_context_main());
    /* getopt's messages start with argv[0]: the name, not the build path. */
    argv[0] = (char *)"ringblk-io";

    while ((c = getopt_long(argc, argv, "hVc:f:rnmki:t:d:o:T:U", long_opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage();
            goto out;
        case 'V':
            printf("ringblk-io version %s\n", RINGBLK_VERSION);
            goto out;
        case 'c':
            g_ptr_array_add(cmds, optarg);
            break;
        case 'f':
            open_args.format = optarg;
            break;
        case 'r':
            open_args.read_only = true;
            break;
        case 'n':
            open_args.cache = "none";
            break;
        case 'm':
            s.misalign = true;
            break;
        case 'k':
            open_args.aio = "native";
            break;
        case 'i':
            open_args.aio = optarg;
            break;
        case 't':
            open_args.cache = optarg;
            break;
        case 'd':
            open_args.discard = optarg;
            break;
        case 'o':
            /* Repeatable: later options add to (and override) earlier ones. */
            if (open_args.extra) {
                char *both = g_strconcat(open_args.extra, ",", optarg, NULL);
                g_free(extra_opts);
                open_args.extra = extra_opts = both;
            } else {
                open_args.extra = optarg;
            }
            break;
        case 'T':
            if (!parse_trace(&s, optarg)) {
                status = 1;
                goto out;
            }
            break;
        case 'U':
            open_args.force_share = true;
            break;
        case OPT_IMAGE_OPTS:
            open_args.image_opts = true;
            break;
        case OPT_OBJECT:
            if (iothread) {
                error_report("only one --object iothread is supported");
                status = 1;
                goto out;
            }
            iothread = object_create(optarg, &err);
            if (!iothread) {
                error_report_err(err);
                status = 1;
                goto out;
            }
            break;
        default:
            fprintf(stderr, "Try 'ringblk-io --help' for more information.\n");
            status = 1;
            goto out;
        }
    }
    if (argc - optind > 1) {
        fprintf(stderr, "ringblk-io: too many arguments\n"
                "Try 'ringblk-io --help' for more information.\n");
        status = 1;
        goto out;
    }
    if (open_args.image_opts && optind == argc) {
        error_report("--image-opts requires an options string as its file argument");
        status = 1;
        goto out;
    }
    if (iothread) {
        s.home_ctx = iothread_get_aio_context(iothread);
    }
    io_set_open_defaults(&open_args);

    if (optind < argc) {
        if (io_open_image(&s, argv[optind], &open_args, &err) < 0) {
            error_report_err(err);
            status = 1;
            goto out;
        }
    }

    if (cmds->len) {
        for (guint i = 0; i < cmds->len && !s.quit; i++) {
            if (io_run_command(&s, cmds->pdata[i]) < 0) {
                status = 1;
            }
        }
    } else if (!command_loop_interactive(&s)) {
        status = 1;
    }

out:
    io_close_image(&s);
    if (iothread) {
        iothread_destroy(iothread);
    }
    if (s.trace && s.trace != stderr) {
        fclose(s.trace);
    }
    g_free(s.trace_pattern);
    g_ptr_array_free(cmds, true);
    g_free(extra_opts);
    fflush(stdout);
    return status;
}
