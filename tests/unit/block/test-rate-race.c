/*
 * RateRace (include/block/rate-race.h) driven with a synthetic clock: which
 * arm serves each request, when rounds decide, the incumbent's margin, and
 * that one slow window does not decide a round.
 */
#include <glib.h>

#include "block/rate-race.h"

/* A RateRace and a clock that advances by each arm's cost per request. */
typedef struct Sim {
    RateRace r;
    int64_t now;
    int64_t cost[2];            /* ns per request in each arm */
    uint64_t served[2];
} Sim;

/* Serves n requests; returns the arm the last one took. */
static unsigned sim_run(Sim *s, unsigned n)
{
    unsigned arm = s->r.arm;

    for (unsigned i = 0; i < n; i++) {
        if (rate_race_count(&s->r)) {
            arm = rate_race_tick(&s->r, s->now);
        }
        g_assert_cmpuint(arm, ==, s->r.arm);
        s->now += s->cost[arm];
        s->served[arm]++;
    }
    return arm;
}

/* Requests in one round: 2 * SAMPLES windows, each after window / 8 settling. */
static unsigned round_len(unsigned window)
{
    return 2 * RATE_RACE_SAMPLES * (window + MAX(window / 8, 1u));
}

static void test_faster_wins(void)
{
    Sim s = { .cost = { 100, 50 } };

    rate_race_init(&s.r, 0, 80, 10);
    g_assert_cmpuint(s.r.arm, ==, 1);                   /* the challenger first */
    sim_run(&s, round_len(80) - 1);
    g_assert_cmpuint(s.r.rounds, ==, 0);
    g_assert_cmpuint(sim_run(&s, 1), ==, 1);            /* the round decides */
    g_assert_cmpuint(s.r.rounds, ==, 1);
    g_assert_cmpuint(s.r.picked[1], ==, 1);
    g_assert_cmpuint(s.served[0], ==, s.served[1]);     /* a fair round */

    /*
     * The winner runs its 10 windows (the deciding request was the first),
     * then a round starts with arm 0.
     */
    s.served[0] = s.served[1] = 0;
    sim_run(&s, 10 * 80 - 1);
    g_assert_cmpuint(s.served[0], ==, 0);
    g_assert_cmpuint(s.r.arm, ==, 1);
    g_assert_cmpuint(sim_run(&s, 1), ==, 0);
    sim_run(&s, round_len(80));
    g_assert_cmpuint(s.r.rounds, ==, 2);
    g_assert_cmpuint(s.r.picked[1], ==, 2);
    g_assert_cmpuint(s.r.arm, ==, 1);
}

static void test_incumbent_margin(void)
{
    Sim s = { .cost = { 1000, 980 } };      /* 2% faster: below 1/32 */

    rate_race_init(&s.r, 0, 64, 4);
    sim_run(&s, round_len(64));
    g_assert_cmpuint(s.r.rounds, ==, 1);
    g_assert_cmpuint(s.r.picked[0], ==, 1);
    g_assert_cmpuint(s.r.arm, ==, 0);

    s.cost[1] = 900;                         /* 10% faster: takes over */
    sim_run(&s, 4 * 64 + round_len(64));
    g_assert_cmpuint(s.r.rounds, ==, 2);
    g_assert_cmpuint(s.r.arm, ==, 1);

    s.cost[1] = 1100;                        /* and hands back when slower */
    sim_run(&s, 4 * 64 + round_len(64));
    g_assert_cmpuint(s.r.rounds, ==, 3);
    g_assert_cmpuint(s.r.arm, ==, 0);
}

/* An idle pause inside one of the faster arm's windows: the median ignores it. */
static void test_one_slow_window(void)
{
    Sim s = { .cost = { 100, 60 } };
    unsigned settle = 64 / 8;

    rate_race_init(&s.r, 0, 64, 4);
    sim_run(&s, settle + 10);               /* into arm 1's first window */
    g_assert_cmpuint(s.r.arm, ==, 1);
    s.now += 1000000;                       /* 1 ms of nothing */
    sim_run(&s, round_len(64) - settle - 10);
    g_assert_cmpuint(s.r.rounds, ==, 1);
    g_assert_cmpuint(s.r.arm, ==, 1);
}

/* Degenerate sizes still make progress: window 1, run_windows 0. */
static void test_tiny(void)
{
    Sim s = { .cost = { 10, 20 } };

    rate_race_init(&s.r, 1, 1, 0);
    sim_run(&s, 1000);
    g_assert_cmpuint(s.r.rounds, >, 50);
    g_assert_cmpuint(s.r.picked[0], ==, s.r.rounds);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/rate-race/faster-wins", test_faster_wins);
    g_test_add_func("/rate-race/incumbent-margin", test_incumbent_margin);
    g_test_add_func("/rate-race/one-slow-window", test_one_slow_window);
    g_test_add_func("/rate-race/tiny", test_tiny);
    return g_test_run();
}
