/*
 * ringblk-storage-daemon: serves block nodes over NBD, controlled by QMP.
 * Its command line follows qemu-storage-daemon's.
 *
 * Startup processes the options in the order given; any error prints
 * "ringblk-storage-daemon: <message>", undoes everything (sockets are
 * unlinked, nodes closed) and exits 1. Once every option is in place the
 * pidfile is written and a --daemonize parent is told to exit 0.
 *
 * The main thread then runs the main AioContext until a signal (SIGINT,
 * SIGTERM, SIGHUP, read from a signalfd registered in the loop) or QMP
 * quit asks for shutdown. Shutdown removes the exports (which stops their
 * clients and drains their requests), stops the NBD server, closes the
 * nodes (flushing writable ones), stops the I/O threads, closes monitors
 * and chardevs, removes the pidfile and exits 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config-host.h"
#include "block/block.h"
#include "block/export.h"
#include "qapi/qapi.h"
#include "storage-daemon.h"

static bool shutdown_requested;
static const char *shutdown_reason;

void sd_request_shutdown(const char *reason)
{
    if (!shutdown_requested) {
        shutdown_requested = true;
        shutdown_reason = reason;
    }
    aio_notify(aio_context_main());
}

static void usage(void)
{
    printf(
"Usage: " SD_PROGNAME " [options]\n"
"ringblk storage daemon: serves block nodes over NBD, controlled by QMP\n"
"\n"
"  -h, --help             display this help and exit\n"
"  -V, --version          output version information and exit\n"
"\n"
"  --blockdev [driver=]<driver>[,node-name=<N>][,discard=ignore|unmap]\n"
"             [,cache.direct=on|off][,cache.no-flush=on|off]\n"
"             [,read-only=on|off][,auto-read-only=on|off]\n"
"             [,force-share=on|off][,detect-zeroes=on|off|unmap]\n"
"             [,driver specific parameters...]\n"
"             or the same as JSON: --blockdev '{\"driver\": ...}'\n"
"                         configure a block node (see docs/options.md;\n"
"                         file nodes take aio=threads|native|io_uring|inline|auto)\n"
"\n"
"  --chardev socket,id=<id>,path=<path>,server=on,wait=off\n"
"                         a UNIX socket for --monitor\n"
"\n"
"  --daemonize            daemonize the process, and have the parent exit\n"
"                         once startup is complete\n"
"\n"
"  --export [type=]nbd,id=<id>,node-name=<node-name>[,name=<export-name>]\n"
"           [,writable=on|off][,iothread=<id>][,description=<text>]\n"
"                         export the specified block node over NBD\n"
"\n"
"  --monitor [chardev=]name[,mode=control][,pretty=on|off]\n"
"                         configure a QMP monitor\n"
"\n"
"  --nbd-server addr.type=inet,addr.host=<host>,addr.port=<port>\n"
"               [,max-connections=<n>]\n"
"  --nbd-server addr.type=unix,addr.path=<path>[,max-connections=<n>]\n"
"                         start an NBD server for exporting block nodes\n"
"\n"
"  --object iothread,id=<id>[,poll-max-ns=<ns>][,poll-grow=<n>]\n"
"           [,poll-shrink=<n>][,aio-max-batch=<n>]\n"
"                         create an I/O thread\n"
"\n"
"  --pidfile <path>       write process ID to a file after startup\n"
"\n"
"More in docs/storage-daemon.md.\n");
}

enum {
    OPT_BLOCKDEV = 256,
    OPT_CHARDEV,
    OPT_DAEMONIZE,
    OPT_EXPORT,
    OPT_MONITOR,
    OPT_NBD_SERVER,
    OPT_OBJECT,
    OPT_PIDFILE,
};

typedef struct SdOption {
    int opt;
    const char *arg;
} SdOption;

/* Parses text into schema type `type` (keyval with implied_key, or JSON). */
static JsonObject *parse_checked(const char *text, const char *implied_key,
                                 const char *type, Error **errp)
{
    bool from_keyval;
    JsonObject *o = qapi_parse_options(text, implied_key, &from_keyval, errp);
    if (o && !qapi_check(type, o, from_keyval, errp)) {
        json_object_unref(o);
        o = NULL;
    }
    return o;
}

static bool process_option(const SdOption *o, Error **errp)
{
    JsonObject *opts = NULL;
    bool ok = false;

    switch (o->opt) {
    case OPT_BLOCKDEV:
        return sd_blockdev_add(o->arg, errp);
    case OPT_CHARDEV:
        return sd_chardev_add(o->arg, errp) != NULL;
    case OPT_MONITOR:
        return sd_monitor_add(o->arg, errp);
    case OPT_OBJECT:
        if (strcmp(o->arg, "help") == 0) {
            printf("List of user creatable objects:\n  iothread\n");
            exit(0);
        }
        opts = parse_checked(o->arg, "qom-type", "ObjectOptions", errp);
        ok = opts && sd_object_add(opts, errp);
        break;
    case OPT_NBD_SERVER:
        opts = parse_checked(o->arg, NULL, "NbdServerOptions", errp);
        ok = opts && sd_nbd_server_start(opts, errp);
        break;
    case OPT_EXPORT:
        opts = parse_checked(o->arg, "type", "BlockExportOptions", errp);
        ok = opts && sd_export_add(opts, errp);
        break;
    default:
        return true;
    }
    if (opts) {
        json_object_unref(opts);
    }
    return ok;
}

/* ---- signals ------------------------------------------------------------------------- */

static int signal_fd = -1;

static void signal_read(void *opaque)
{
    struct signalfd_siginfo si;
    while (read(signal_fd, &si, sizeof(si)) == sizeof(si)) {
        sd_request_shutdown("host-signal");
    }
}

/*
 * Blocked in every thread (I/O threads inherit the mask) and read from a
 * signalfd in the main loop, so a signal is just another event.
 */
static void signals_block(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* ---- daemonize and pidfile ------------------------------------------------------------ */

/*
 * Forks; the parent waits on a pipe for one byte the child sends once it
 * is ready, and exits 0 then, or 1 when the pipe closes without it (the
 * child failed and printed why on the shared stderr).
 */
static int daemonize(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        error_report("pipe: %s", strerror(errno));
        exit(1);
    }
    pid_t pid = fork();
    if (pid < 0) {
        error_report("fork: %s", strerror(errno));
        exit(1);
    }
    if (pid > 0) {
        char c;
        close(p[1]);
        ssize_t n;
        do {
            n = read(p[0], &c, 1);
        } while (n < 0 && errno == EINTR);
        if (n == 1) {
            _exit(0);
        }
        int status;
        waitpid(pid, &status, 0);
        _exit(1);
    }
    close(p[0]);
    setsid();
    return p[1];
}

static void daemon_ready(int fd)
{
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        if (null > STDERR_FILENO) {
            close(null);
        }
    }
    if (write(fd, "", 1) != 1) {
        /* The parent is gone: nobody to tell. */
    }
    close(fd);
}

static bool write_pidfile(const char *path, Error **errp)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Cannot open pid file '%s'", path);
        return false;
    }
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    bool ok = write(fd, buf, len) == len;
    if (!ok) {
        error_setg(errp, "Cannot write pid file '%s'", path);
        unlink(path);
    }
    close(fd);
    return ok;
}

static void export_deleted(const char *id, void *opaque)
{
    JsonObject *data = json_object_new();
    json_object_set_string_member(data, "id", id);
    sd_qmp_event("BLOCK_EXPORT_DELETED", data);
}

static void shutdown_all(void)
{
    sd_objects_cleanup();
    sd_monitor_cleanup();
    sd_chardev_cleanup();
    if (signal_fd >= 0) {
        aio_set_fd_handler(aio_context_main(), signal_fd, false, NULL, NULL, NULL, NULL, NULL);
        close(signal_fd);
        signal_fd = -1;
    }
    /* Let deferred frees (closed connections) run. */
    while (aio_poll(aio_context_main(), false)) {
    }
}

int main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { "blockdev", required_argument, NULL, OPT_BLOCKDEV },
        { "chardev", required_argument, NULL, OPT_CHARDEV },
        { "daemonize", no_argument, NULL, OPT_DAEMONIZE },
        { "export", required_argument, NULL, OPT_EXPORT },
        { "monitor", required_argument, NULL, OPT_MONITOR },
        { "nbd-server", required_argument, NULL, OPT_NBD_SERVER },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "pidfile", required_argument, NULL, OPT_PIDFILE },
        { NULL, 0, NULL, 0 },
    };
    GArray *opts = g_array_new(false, false, sizeof(SdOption));
    const char *pidfile = NULL;
    bool do_daemonize = false;
    Error *err = NULL;
    sigset_t sigs;
    int c;

    g_set_prgname(SD_PROGNAME);
    error_set_progname(SD_PROGNAME);
    argv[0] = (char *)SD_PROGNAME;

    while ((c = getopt_long(argc, argv, "hV", long_opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage();
            return 0;
        case 'V':
            printf(SD_PROGNAME " version " RINGBLK_VERSION "\n");
            return 0;
        case OPT_DAEMONIZE:
            do_daemonize = true;
            break;
        case OPT_PIDFILE:
            pidfile = optarg;
            break;
        case '?':
            fprintf(stderr, "Try '" SD_PROGNAME " --help' for more information.\n");
            return 1;
        default:
            g_array_append_val(opts, ((SdOption){ c, optarg }));
            break;
        }
    }
    if (optind < argc) {
        error_report("Unexpected argument: %s", argv[optind]);
        return 1;
    }

    /* Before any thread exists: fork, and the signal mask every thread inherits. */
    int ready_fd = do_daemonize ? daemonize() : -1;
    signals_block(&sigs);

    AioContext *ctx = aio_context_main();
    signal_fd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    if (signal_fd < 0) {
        error_report("signalfd: %s", strerror(errno));
        return 1;
    }
    aio_set_fd_handler(ctx, signal_fd, false, signal_read, NULL, NULL, NULL, NULL);
    block_export_set_deleted_notifier(export_deleted, NULL);

    for (guint i = 0; i < opts->len; i++) {
        if (!process_option(&g_array_index(opts, SdOption, i), &err)) {
            break;
        }
    }
    if (!err && pidfile) {
        write_pidfile(pidfile, &err);
    }
    g_array_free(opts, true);
    if (err) {
        error_report_err(err);
        shutdown_all();
        return 1;
    }
    if (ready_fd >= 0) {
        daemon_ready(ready_fd);
    }

    while (!shutdown_requested) {
        aio_poll(ctx, true);
    }

    JsonObject *data = json_object_new();
    json_object_set_boolean_member(data, "guest", false);
    json_object_set_string_member(data, "reason", shutdown_reason);
    sd_qmp_event("SHUTDOWN", data);
    shutdown_all();
    if (pidfile) {
        unlink(pidfile);
    }
    return 0;
}
