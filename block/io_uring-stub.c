/*
 * io_uring engine stub for builds without liburing (--disable-linux-io-uring):
 * available() says why, create() fails the same way, and the debug hooks of
 * block/io_uring.h exist so tests link unchanged (they skip on !available).
 */
#include <errno.h>

#include "block/io_uring.h"
#include "block/raw-aio.h"

#define LURING_STUB_MSG "io_uring is unavailable: ringblk was built without " \
                        "io_uring support (--disable-linux-io-uring or no liburing)"

static bool luring_stub_available(Error **errp)
{
    error_setg(errp, LURING_STUB_MSG);
    return false;
}

static RawAioEngine *luring_stub_create(AioContext *ctx, const RawAioConfig *cfg,
                                        Error **errp)
{
    error_setg(errp, LURING_STUB_MSG);
    return NULL;
}

static void luring_stub_destroy(RawAioEngine *e)
{
    g_assert_not_reached();     /* create() never succeeds */
}

static int luring_stub_add_file(RawAioEngine *e, int fd, int open_flags, Error **errp)
{
    error_setg(errp, LURING_STUB_MSG);
    return -ENOSYS;
}

static int luring_stub_submit(RawAioEngine *e, RawAioReq *req)
{
    return -ENOSYS;
}

static void luring_stub_plug(RawAioEngine *e)
{
}

bool luring_probe_uncached(Error **errp)
{
    return luring_stub_available(errp);
}

void luring_debug_inject(RawAioEngine *e, int kind, int n)
{
}

void luring_debug_race(RawAioEngine *e, uint32_t window, uint32_t run_windows)
{
}

void luring_get_stats(RawAioEngine *e, LuringStats *st)
{
    *st = (LuringStats){ 0 };
}

void luring_get_info(RawAioEngine *e, LuringInfo *info)
{
    *info = (LuringInfo){ 0 };
}

void luring_debug_set_taskrun(const char *mode)
{
}

void luring_debug_set_share_ring(int on)
{
}

int luring_debug_nop(RawAioEngine *e)
{
    return -ENOSYS;
}

int luring_debug_nop_result(RawAioEngine *e, int *res)
{
    return 0;
}

bool luring_debug_leave_task_work(RawAioEngine *e)
{
    return false;
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
