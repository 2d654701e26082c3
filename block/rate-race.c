/*
 * RateRace: timing two arms on the live stream (include/block/rate-race.h).
 * A round is SETTLE, MEASURE for each of 2 * RATE_RACE_SAMPLES windows,
 * challenger first and incumbent last (so a kept incumbent needs no
 * switch), then RUN for run_windows windows.
 */
#include <glib.h>

#include "block/rate-race.h"

enum { PHASE_SETTLE, PHASE_MEASURE, PHASE_RUN };

/* The arm of measured window k: the challenger on even k. */
static unsigned round_arm(const RateRace *r, unsigned k)
{
    return r->incumbent ^ ((k & 1) ? 0u : 1u);
}

static void settle(RateRace *r)
{
    r->arm = round_arm(r, r->measured);
    r->phase = PHASE_SETTLE;
    r->left = MAX(r->window / 8, 1u);
}

static void start_round(RateRace *r)
{
    r->measured = 0;
    settle(r);
}

void rate_race_init(RateRace *r, unsigned first, uint32_t window, uint32_t run_windows)
{
    *r = (RateRace) {
        .incumbent = first & 1,
        .window = MAX(window, 1u),
        .run_windows = MAX(run_windows, 1u),
    };
    start_round(r);
}

static int64_t median3(const int64_t *v)
{
    int64_t a = v[0], b = v[1], c = v[2];

    G_STATIC_ASSERT(RATE_RACE_SAMPLES == 3);
    return MAX(MIN(a, b), MIN(MAX(a, b), c));
}

static void decide(RateRace *r)
{
    unsigned inc = r->incumbent, ch = inc ^ 1;
    int64_t t_inc = median3(r->ns[inc]), t_ch = median3(r->ns[ch]);

    if (t_ch < t_inc - t_inc / 32) {
        r->incumbent = ch;
    }
    r->rounds++;
    r->picked[r->incumbent]++;
    r->arm = r->incumbent;
    r->phase = PHASE_RUN;
    r->run_left = r->run_windows;
    r->left = r->window;
}

unsigned rate_race_tick(RateRace *r, int64_t now_ns)
{
    switch (r->phase) {
    case PHASE_SETTLE:
        r->start_ns = now_ns;
        r->phase = PHASE_MEASURE;
        r->left = r->window;
        break;
    case PHASE_MEASURE:
        r->ns[r->arm][r->measured / 2] = now_ns - r->start_ns;
        if (++r->measured < 2 * RATE_RACE_SAMPLES) {
            settle(r);
        } else {
            decide(r);
        }
        break;
    default:
        if (--r->run_left > 0) {
            r->left = r->window;
        } else {
            start_round(r);
        }
        break;
    }
    return r->arm;
}
