/*
 * libFuzzer target: the NBD server's input.
 *
 * The input is everything a client sends after the server's greeting
 * (client flags, options, then requests), written into one end of a
 * socketpair whose other end is a server connection. The harness pumps
 * the main AioContext, reads and discards whatever the server answers,
 * and closes its sending side when the input is exhausted; the
 * connection must then go away by itself. Two exports exist: "" (a
 * writable null-co node) and "ro" (read-only). Besides "no crash, no
 * leak, no hang", it checks that the server never writes anything after
 * it closed the connection and that every connection is released.
 */
#include "block/block.h"
#include "block/export.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void setup_once(void)
{
    static bool done;
    if (done) {
        return;
    }
    done = true;
    BlockDriverState *bs = bdrv_open_string(
        "driver=null-co,node-name=fz0,size=1048576,read-zeroes=on", &error_abort);
    BlockExportOptions rw = { .id = "rw", .node_name = "fz0", .name = "", .writable = true,
                              .description = "fuzz" };
    BlockExportOptions ro = { .id = "ro", .node_name = "fz0", .name = "ro" };
    if (!bs || !nbd_export_add(&rw, &error_abort) || !nbd_export_add(&ro, &error_abort)) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup_once();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0) {
        abort();
    }
    if (!nbd_server_add_client(sv[0], &error_abort)) {
        abort();
    }
    size_t sent = 0;
    bool shut = false, eof = false;
    static uint8_t junk[65536];
    /* Bounded: every step either moves bytes or lets the server run. */
    for (long i = 0; !eof || nbd_server_connection_count(); i++) {
        if (i > 10 * 1000 * 1000) {
            abort();             /* a hang */
        }
        bool progress = aio_poll(aio_context_main(), false);
        if (sent < size) {
            ssize_t n = send(sv[1], data + sent, size - sent, MSG_NOSIGNAL);
            if (n > 0) {
                sent += n;
                progress = true;
            } else if (n < 0 && errno != EAGAIN) {
                sent = size;     /* the server hung up */
            }
        } else if (!shut) {
            shutdown(sv[1], SHUT_WR);
            shut = true;
        }
        if (!eof) {
            ssize_t n = recv(sv[1], junk, sizeof(junk), 0);
            if (n == 0 || (n < 0 && errno != EAGAIN)) {
                eof = true;
            } else if (n > 0) {
                progress = true;
            }
        }
        if (!progress && eof && nbd_server_connection_count()) {
            aio_poll(aio_context_main(), true);
        }
    }
    /* Nothing arrives after the server closed its end. */
    if (recv(sv[1], junk, sizeof(junk), 0) > 0) {
        abort();
    }
    close(sv[1]);
    return 0;
}
