/*
 * Per-node I/O accounting: counts, bytes, latency totals and maxima, and
 * latency histograms with caller-set boundaries (QMP
 * block-latency-histogram-set semantics: bin i counts latencies in
 * [boundaries[i-1], boundaries[i]), the first bin starts at 0 and the last
 * is open-ended).
 *
 * Cost on the request path: the caller reads the clock once at submit and
 * once in block_acct_done() (inline, block_int.h); the rest is a few adds
 * and, with a histogram, a binary search.
 * Stats belong to the node's AioContext thread (no locks).
 */
#include "block/block_int.h"

#include <errno.h>

void block_acct_histogram_add(BlockLatencyHistogram *h, uint64_t ns)
{
    /* Find the first boundary > ns: its index is the bin. */
    int lo = 0, hi = h->nbins - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (ns < h->boundaries[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    h->bins[lo]++;
}

/* block_acct_done() is inline in block_int.h: it runs once per request. */

void block_acct_invalid(BlockAcctStats *stats, BlockAcctType type)
{
    stats->invalid_ops[type]++;
}

static void histogram_clear(BlockLatencyHistogram *h)
{
    g_free(h->boundaries);
    g_free(h->bins);
    *h = (BlockLatencyHistogram){ 0 };
}

void block_acct_cleanup(BlockAcctStats *stats)
{
    for (int t = 0; t < BLOCK_ACCT_MAX; t++) {
        histogram_clear(&stats->latency_histogram[t]);
    }
}

/* A pass-through node (raw without a slice) has its child's statistics. */
static BlockDriverState *stats_node(BlockDriverState *bs)
{
    while (bs->passthrough) {
        bs = bs->file;
    }
    return bs;
}

const BlockAcctStats *bdrv_get_stats(BlockDriverState *bs)
{
    return &stats_node(bs)->stats;
}

int bdrv_latency_histogram_set(BlockDriverState *bs, BlockAcctType type,
                               const uint64_t *boundaries, int n, Error **errp)
{
    if ((int)type < 0 || type > BLOCK_ACCT_MAX) {
        error_setg(errp, "Invalid latency histogram type %d", (int)type);
        return -EINVAL;
    }
    if (n < 0 || (n > 0 && !boundaries)) {
        error_setg(errp, "Invalid latency histogram boundaries");
        return -EINVAL;
    }
    for (int i = 1; i < n; i++) {
        if (boundaries[i] <= boundaries[i - 1]) {
            error_setg(errp, "Latency histogram boundaries must be strictly increasing");
            return -EINVAL;
        }
    }
    if (n > 0 && boundaries[0] == 0) {
        error_setg(errp, "Latency histogram boundaries must be positive");
        return -EINVAL;
    }
    bs = stats_node(bs);
    int first = type == BLOCK_ACCT_MAX ? 0 : type;
    int last = type == BLOCK_ACCT_MAX ? BLOCK_ACCT_MAX - 1 : type;
    for (int t = first; t <= last; t++) {
        BlockLatencyHistogram *h = &bs->stats.latency_histogram[t];
        histogram_clear(h);
        if (n > 0) {
            h->nbins = n + 1;
            h->boundaries = g_memdup2(boundaries, sizeof(uint64_t) * n);
            h->bins = g_new0(uint64_t, n + 1);
        }
    }
    return 0;
}
