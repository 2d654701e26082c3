/*
 * RateRace: picks the faster of two ways ("arms") to serve one request
 * stream by timing both on the live stream.
 *
 * Which way is faster can depend on the machine more than on the file:
 * aio=auto on a zram device opened O_DIRECT at depth 32 found the ring
 * 1.4x faster than synchronous batches on one VM and 0.8x on another
 * (docs/devel/performance.md). A fixed rule serves one of them; a race
 * serves both.
 *
 * A round measures windows of `window` requests, alternating the arms
 * (RATE_RACE_SAMPLES each, every one after a short settling stretch so the
 * switch itself is not timed), and the arm with the shorter median time
 * runs for `run_windows` windows before the next round. The incumbent
 * keeps its place unless the other arm is faster by more than 1/32, so
 * noise does not make it flap. Medians keep one window that spans an idle
 * pause from deciding. Since each window has the same request count, time
 * alone compares the rates. Both arms must be correct ways to run any
 * request: the race only decides speed.
 *
 * Cost on the hot path: one decrement and test per request
 * (rate_race_count()); a clock read per window, out of line.
 */
#ifndef BLOCK_RATE_RACE_H
#define BLOCK_RATE_RACE_H

#include <stdbool.h>
#include <stdint.h>

#define RATE_RACE_SAMPLES 3

typedef struct RateRace {
    uint32_t left;              /* requests until rate_race_tick() is due */
    uint8_t arm;                /* the arm requests take now: 0 or 1 */
    uint8_t phase;              /* rate-race.c: settling, measuring or running */
    uint8_t incumbent;          /* the arm the last round picked */
    uint8_t measured;           /* windows measured in this round */
    uint32_t window;            /* requests per window */
    uint32_t run_windows;       /* windows the winner runs between rounds */
    uint32_t run_left;
    int64_t start_ns;           /* when the window being measured began */
    int64_t ns[2][RATE_RACE_SAMPLES];
    uint64_t rounds;            /* rounds decided */
    uint64_t picked[2];         /* ... won by each arm */
} RateRace;

/* Starts a round at once; `first` is the incumbent until a round says otherwise. */
void rate_race_init(RateRace *r, unsigned first, uint32_t window, uint32_t run_windows);

/* Counts one request; true when rate_race_tick() is due before it is served. */
static inline bool rate_race_count(RateRace *r)
{
    return --r->left == 0;
}

/* Ends a phase at now_ns (a monotonic clock); returns the arm to use from now on. */
unsigned rate_race_tick(RateRace *r, int64_t now_ns);

#endif
