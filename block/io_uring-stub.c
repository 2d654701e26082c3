/*
 * aio=io_uring in a build without liburing: the engine reports itself
 * unavailable and never creates an instance. Compiled only when
 * CONFIG_LINUX_IO_URING is false; block/io_uring.c is the real engine.
 */
#include <errno.h>

#include "block/raw-aio.h"

#define LURING_NOT_COMPILED "aio=io_uring was not compiled in (this build has no io_uring support)"

static bool luring_stub_available(Error **errp)
{
    error_setg(errp, LURING_NOT_COMPILED);
    return false;
}

static RawAioEngine *luring_stub_create(AioContext *ctx, const RawAioConfig *cfg, Error **errp)
{
    error_setg(errp, LURING_NOT_COMPILED);
    return NULL;
}

static void luring_stub_destroy(RawAioEngine *e)
{
    g_assert_not_reached();
}

static int luring_stub_add_file(RawAioEngine *e, int fd, int open_flags, Error **errp)
{
    error_setg(errp, LURING_NOT_COMPILED);
    return -ENOTSUP;
}

static int luring_stub_submit(RawAioEngine *e, RawAioReq *req)
{
    return -ENOTSUP;
}

static void luring_stub_plug(RawAioEngine *e)
{
}

const RawAioOps raw_aio_io_uring_ops = {
    .name = "io_uring",
    .available = luring_stub_available,
    .create = luring_stub_create,
    .destroy = luring_stub_destroy,
    .add_file = luring_stub_add_file,
    .submit = luring_stub_submit,
    .plug = luring_stub_plug,
    .unplug = luring_stub_plug,
};
