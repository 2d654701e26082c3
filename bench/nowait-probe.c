/*
 * nowait-probe: can this file take non-blocking I/O?
 *
 * io_uring first tries every read or write with IOCB_NOWAIT; a file that
 * rejects that (preadv2 with RWF_NOWAIT fails with EOPNOTSUPP: tmpfs and zram
 * on 6.x, many network and FUSE filesystems) gets every request handed to an
 * iou-wrk kernel thread, which is what makes io_uring slow there.  One
 * preadv2 call answers the question; this program asks it, with and without
 * O_DIRECT, and prints one line per mode (or a JSON object with --json).
 *
 * Exit status: 0 when the file was probed, 1 on usage or open errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define PROBE_BS 4096

/* Returns 0 when a non-blocking read worked (or only lacked cached data). */
static int probe(const char *path, int direct, const char **verdict)
{
    int fd = open(path, O_RDONLY | (direct ? O_DIRECT : 0));
    if (fd < 0) {
        *verdict = direct && errno == EINVAL ? "no O_DIRECT" : strerror(errno);
        return -errno;
    }
    void *buf;
    if (posix_memalign(&buf, PROBE_BS, PROBE_BS)) {
        close(fd);
        *verdict = "out of memory";
        return -ENOMEM;
    }
    struct iovec iov = { .iov_base = buf, .iov_len = PROBE_BS };
    ssize_t ret = preadv2(fd, &iov, 1, 0, RWF_NOWAIT);
    int err = ret < 0 ? errno : 0;
    free(buf);
    close(fd);
    if (err == 0) {
        *verdict = "nowait ok";
    } else if (err == EAGAIN) {
        /* Supported, the data was just not ready without blocking. */
        *verdict = "nowait ok (EAGAIN)";
        err = 0;
    } else if (err == EOPNOTSUPP) {
        *verdict = "EOPNOTSUPP (io_uring punts to iou-wrk)";
    } else {
        *verdict = strerror(err);
    }
    return -err;
}

int main(int argc, char **argv)
{
    int json = argc > 1 && strcmp(argv[1], "--json") == 0;
    if (argc != 2 + json) {
        fprintf(stderr, "usage: nowait-probe [--json] FILE\n");
        return 1;
    }
    const char *path = argv[1 + json];
    const char *v_buf, *v_dir;
    int r_buf = probe(path, 0, &v_buf);
    int r_dir = probe(path, 1, &v_dir);
    if (json) {
        printf("{\"file\": \"%s\", \"buffered\": {\"errno\": %d, \"verdict\": \"%s\"}, "
               "\"direct\": {\"errno\": %d, \"verdict\": \"%s\"}}\n",
               path, -r_buf, v_buf, -r_dir, v_dir);
    } else {
        printf("%s: buffered: %s; O_DIRECT: %s\n", path, v_buf, v_dir);
    }
    return 0;
}
