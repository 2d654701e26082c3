/*
 * unix_socket_listen(): what it does with the file already at the path.
 */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/unix-socket.h"

static char *dir;

static char *sock_path(const char *name)
{
    return g_build_filename(dir, name, NULL);
}

static void test_listen(void)
{
    g_autofree char *path = sock_path("a.sock");
    int fd = unix_socket_listen(path, 4, &error_abort);
    g_assert_cmpint(fd, >=, 0);
    g_assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
    g_assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    strcpy(sa.sun_path, path);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    g_assert_cmpint(connect(c, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
    close(c);
    close(fd);
    g_unlink(path);
}

/* A socket file whose listener is gone (closed, not unlinked) is replaced. */
static void test_stale(void)
{
    g_autofree char *path = sock_path("stale.sock");
    int fd = unix_socket_listen(path, 4, &error_abort);
    close(fd);
    g_assert_true(g_file_test(path, G_FILE_TEST_EXISTS));
    fd = unix_socket_listen(path, 4, &error_abort);
    g_assert_cmpint(fd, >=, 0);
    close(fd);
    g_unlink(path);
}

/* A live listener keeps its path; a regular file is not removed either. */
static void test_in_use(void)
{
    g_autofree char *path = sock_path("live.sock");
    int live = unix_socket_listen(path, 4, &error_abort);
    Error *err = NULL;
    g_assert_cmpint(unix_socket_listen(path, 4, &err), ==, -1);
    g_autofree char *want = g_strdup_printf("Cannot listen on '%s': %s", path,
                                            g_strerror(EADDRINUSE));
    g_assert_cmpstr(error_get_pretty(err), ==, want);
    error_free(err);
    close(live);
    g_unlink(path);

    g_autofree char *file = sock_path("file");
    g_assert_true(g_file_set_contents(file, "data", 4, NULL));
    err = NULL;
    g_assert_cmpint(unix_socket_listen(file, 4, &err), ==, -1);
    g_assert_nonnull(err);
    error_free(err);
    g_autofree char *back = NULL;
    g_assert_true(g_file_get_contents(file, &back, NULL, NULL));
    g_assert_cmpstr(back, ==, "data");
    g_unlink(file);
}

static void test_bad_paths(void)
{
    Error *err = NULL;
    g_autofree char *long_path = g_strnfill(200, 'x');
    g_assert_cmpint(unix_socket_listen(long_path, 4, &err), ==, -1);
    g_autofree char *want = g_strdup_printf("UNIX socket path '%s' is too long", long_path);
    g_assert_cmpstr(error_get_pretty(err), ==, want);
    error_free(err);
    err = NULL;
    g_assert_cmpint(unix_socket_listen("/nonexistent-dir/x.sock", 4, &err), ==, -1);
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "Cannot listen on '/nonexistent-dir/x.sock': No such file or directory");
    error_free(err);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    dir = g_strdup("/var/tmp/ringblk-test-unix-socket-XXXXXX");
    if (!g_mkdtemp(dir)) {
        return 1;
    }
    g_test_add_func("/util/unix-socket/listen", test_listen);
    g_test_add_func("/util/unix-socket/stale", test_stale);
    g_test_add_func("/util/unix-socket/in-use", test_in_use);
    g_test_add_func("/util/unix-socket/bad-paths", test_bad_paths);
    int ret = g_test_run();
    g_rmdir(dir);
    g_free(dir);
    return ret;
}
