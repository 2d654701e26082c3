/*
 * aio=native in a build without libaio: the engine exists so that option
 * parsing and raw_aio_ops_by_name() behave the same in every build, but it
 * reports itself unavailable and never creates an instance.
 */
#include <errno.h>

#include "block/raw-aio.h"

#define LAIO_NOT_COMPILED "aio=native was not compiled in (this build has no Linux AIO support)"

static bool laio_stub_available(Error **errp)
{
    error_setg(errp, LAIO_NOT_COMPILED);
    return false;
}

static RawAioEngine *laio_stub_create(AioContext *ctx, const RawAioConfig *cfg, Error **errp)
{
    error_setg(errp, LAIO_NOT_COMPILED);
    return NULL;
}

static void laio_stub_destroy(RawAioEngine *e)
{
    g_assert_not_reached();
}

static int laio_stub_add_file(RawAioEngine *e, int fd, int open_flags, Error **errp)
{
    error_setg(errp, LAIO_NOT_COMPILED);
    return -ENOTSUP;
}

static int laio_stub_submit(RawAioEngine *e, RawAioReq *req)
{
    return -ENOTSUP;
}

static void laio_stub_plug(RawAioEngine *e)
{
}

const RawAioOps raw_aio_native_ops = {
    .name = "native",
    .available = laio_stub_available,
    .create = laio_stub_create,
    .destroy = laio_stub_destroy,
    .add_file = laio_stub_add_file,
    .submit = laio_stub_submit,
    .plug = laio_stub_plug,
    .unplug = laio_stub_plug,
};
