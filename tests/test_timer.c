/* SPDX-License-Identifier: MIT */
/*
 * Timers: a handle's periodic callback keeps to its schedule, runs on the
 * handle's worker and never beside its events, and is gone by the time
 * the call that replaces, removes or ends it returns.
 */
#include <sched.h>

#include "harness.h"

/* Nanoseconds in a millisecond. */
#define MS 1000000ull

/* ------------------------------------------------------------------ */
/* A timer that records its fires                                      */
/* ------------------------------------------------------------------ */

enum { TICKS_MAX = 2048 };

/*
 * The record of one handle: when each fire came, how many periods it was
 * told were coalesced into it, and what it received. Only the handle's
 * worker writes at[] and missed[], and it publishes entry k by storing
 * n = k + 1, so the test reads entry k once it has seen n > k.
 */
struct ticks {
	wp_handle *h;
	uint64_t at[TICKS_MAX];
	uint64_t missed[TICKS_MAX];
	atomic_int n;
	atomic_int events;
	_Atomic(wp_ctx *) ctx;
	/* Set by the test once no fire may come; later fires count here. */
	atomic_bool over;
	atomic_int late;
	/* On fire number fail_at (from 1) the callback returns code. */
	int fail_at;
	int code;
	/* On fire number block_at it holds the worker for block_ms. */
	int block_at;
	long block_ms;
	/* The exit callback: how often it ran and with which code. */
	atomic_int exits;
	atomic_int exit_err;
};

static int note_tick(wp_ctx *ctx, void *arg)
{
	struct ticks *t = arg;
	int n = atomic_load(&t->n);

	if (atomic_load(&t->over))
		atomic_fetch_add(&t->late, 1);
	if (n < TICKS_MAX) {
		t->at[n] = wp_test_now_ns();
		t->missed[n] = wp_handle_timer_missed(t->h);
	}
	atomic_store(&t->ctx, ctx);
	if (n + 1 == t->block_at)
		wp_test_sleep_ms(t->block_ms);
	/* Publishes at[n] and missed[n]. */
	atomic_store(&t->n, n + 1);
	return n + 1 == t->fail_at ? t->code : 0;
}

/* The same record kept by another callback, to tell the two apart. */
static int note_tock(wp_ctx *ctx, void *arg)
{
	return note_tick(ctx, arg);
}

/* An event carries the code its handler returns: NULL for 0. */
static int note_event(wp_ctx *ctx, void *event, void *arg)
{
	struct ticks *t = arg;

	(void)ctx;
	atomic_fetch_add(&t->events, 1);
	return (int)(intptr_t)event;
}

static int count_tick(wp_ctx *ctx, void *arg)
{
	(void)ctx;
	atomic_fetch_add((atomic_int *)arg, 1);
	return 0;
}

static void note_exit(int err, void *arg)
{
	struct ticks *t = arg;

	atomic_store(&t->exit_err, err);
	atomic_fetch_add(&t->exits, 1);
}

static int ticked(struct ticks *t)
{
	return atomic_load(&t->n);
}

/* Registers a handle that counts its events and exit into t. */
static wp_handle *ticks_handle(wp_pool *pool, struct ticks *t)
{
	memset(t, 0, sizeof(*t));
	ck_assert_int_eq(wp_pool_register(pool, note_event, t, &t->h), 0);
	ck_assert_int_eq(wp_handle_on_exit(t->h, note_exit, t), 0);
	return t->h;
}

/* A handle whose timer fires every ms milliseconds and has fired. */
static wp_handle *ticking_handle(wp_pool *pool, struct ticks *t, long ms)
{
	wp_handle *h = ticks_handle(pool, t);

	ck_assert_int_eq(wp_handle_set_timer(h, NULL, (uint64_t)ms * MS,
					     note_tick, t), 0);
	ck_assert(wp_test_wait_atleast(&t->n, 2));
	return h;
}

/*
 * Called right after the call that ended t's timer returned: from here on
 * any fire is a late one, and none comes for ms milliseconds.
 */
static void assert_no_fire_for(struct ticks *t, long ms)
{
	int n, late;

	atomic_store(&t->over, true);
	n = ticked(t);
	wp_test_sleep_ms(ms);
	late = atomic_load(&t->late);
	ck_assert_msg(!late, "%d fires after the call returned", late);
	ck_assert_int_eq(ticked(t), n);
}

/*
 * A timer whose every fire holds the worker for 20 ms, so that a test can
 * act while the callback runs. Whoever ends or changes the timer must
 * wait for the running callback to return.
 */
struct slow {
	struct ticks t;
	atomic_int inside;
	atomic_int entered;
};

static int slow_tick(wp_ctx *ctx, void *arg)
{
	struct slow *s = arg;

	atomic_store(&s->inside, 1);
	atomic_fetch_add(&s->entered, 1);
	wp_test_sleep_ms(20);
	note_tick(ctx, &s->t);
	atomic_store(&s->inside, 0);
	return 0;
}

static void assert_not_running(struct slow *s)
{
	ck_assert_msg(!atomic_load(&s->inside),
		      "the call returned while the timer callback ran");
}

/* ------------------------------------------------------------------ */
/* Schedule                                                            */
/* ------------------------------------------------------------------ */

START_TEST(a_100ms_timer_fires_ten_times_in_one_second)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct ticks *t = malloc(sizeof(*t));
	wp_handle *h = ticks_handle(pool, t);
	uint64_t start, due;
	int k;

	start = wp_test_now_ns();
	ck_assert_int_eq(wp_handle_set_timer(h, NULL, 100 * MS, note_tick, t),
			 0);
	ck_assert(wp_test_wait_atleast(&t->n, 10));

	/* Fire k is due k * 100 ms after the schedule began, which was
	 * within the set call: never before, and at most 20 ms after. */
	for (k = 0; k < 10; k++) {
		due = start + (uint64_t)(k + 1) * 100 * MS;
		ck_assert_msg(t->at[k] >= due, "fire %d came %.3f ms early",
			      k + 1, (double)(due - t->at[k]) / MS);
		ck_assert_msg(t->at[k] <= due + 20 * MS,
			      "fire %d came %.3f ms after the set call", k + 1,
			      (double)(t->at[k] - start) / MS);
		ck_assert_uint_eq(t->missed[k], 0);
	}
	wp_pool_destroy(pool);
	free(t);
}
END_TEST

/*
 * A fire is a period served: by a call of its own, or, when the wake-up
 * came more than a period late, coalesced into the next call, which is
 * told how many it stands for. The library cannot make the kernel wake it
 * in time on a loaded machine, so the test counts served periods, and
 * asks that most of them (well over the 900 the issue names on an idle
 * machine, 983-1000 measured) had calls of their own.
 */
START_TEST(a_1ms_timer_fires_at_least_900_times_in_an_idle_second)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct ticks *t = malloc(sizeof(*t));
	wp_handle *h = ticks_handle(pool, t);
	uint64_t start, served = 0;
	int k, n, in_second = 0;

	start = wp_test_now_ns();
	ck_assert_int_eq(wp_handle_set_timer(h, NULL, MS, note_tick, t), 0);
	wp_test_sleep_ms(1050);
	ck_assert_int_eq(wp_handle_set_timer(h, NULL, 0, NULL, NULL), 0);

	n = ticked(t);
	for (k = 0; k < n && k < TICKS_MAX; k++) {
		if (t->at[k] < start + 1000 * MS) {
			in_second++;
			served += 1 + t->missed[k];
		}
	}
	ck_assert_msg(served >= 980, "%llu periods served in the first second",
		      (unsigned long long)served);
	ck_assert_msg(in_second >= 750, "%d calls in the first second",
		      in_second);
	ck_assert_msg(in_second <= 1000, "%d fires in the first second",
		      in_second);
	wp_pool_destroy(pool);
	free(t);
}
END_TEST

/*
 * Many timers of mixed intervals on one wheel. Intervals above about
 * 134 ms start above the wheel's first level and must be cascaded down;
 * a timer misplaced there comes up to that much late.
 *
 * Every fire is held against the schedule that began within its set
 * call: it stands for the periods since the last fire (one, plus those
 * it was told it missed), and is never due before the call began. Nor
 * is it more than LATE_MS late for a schedule begun as the call
 * returned; on a loaded machine, where a worker may be preempted for a
 * while, up to a quarter of a timer's fires may be, but a misplaced
 * timer is late on most of them.
 *
 * Every handle also counts, inside a one-second window opened once all
 * timers run, its fires and the periods they stood for. A timer on
 * schedule stands for window/interval periods there, give or take one,
 * plus those that a fire up to LATE_MS late carries across an end of
 * the window. On a loaded machine some periods may be coalesced, but
 * not more than a quarter: a wheel that fired only every other period
 * would show here.
 */
enum { MANY = 10000, WINDOW_MS = 1000, LATE_MS = 50 };

/*
 * Most timers are slow, so that the workers fire about 120,000 callbacks
 * a second, which even a sanitized build keeps up with: of every hundred
 * handles, one has 10 ms, four 20 ms, fifteen 50 ms, forty 100 ms and
 * forty 200 ms.
 */
static unsigned many_ms(int k)
{
	int r = k % 100;

	return r < 1 ? 10 : r < 5 ? 20 : r < 20 ? 50 : r < 60 ? 100 : 200;
}

struct window {
	_Atomic uint64_t from;
	_Atomic uint64_t to;
};

/*
 * Written by the test before the set call, then only by the worker;
 * except set_ret, which the test stores after the call returns and the
 * worker may read as 0 before then (it skips the lateness check).
 */
struct paced {
	struct window *win;
	wp_handle *h;
	unsigned ms;
	uint64_t set_at;	/* just before the set call */
	_Atomic uint64_t set_ret;	/* just after it */
	uint64_t periods;	/* the periods the fires so far stood for */
	uint64_t worst;		/* the latest fire, in ns past its period */
	int early;
	int all;		/* fires in all */
	int late;		/* fires more than LATE_MS late */
	int fires;		/* inside the window */
	int in_window;		/* the periods those fires stood for */
};

static int pace(wp_ctx *ctx, void *arg)
{
	struct paced *p = arg;
	uint64_t now = wp_test_now_ns(), ret, due;
	int stood = 1 + (int)wp_handle_timer_missed(p->h);

	(void)ctx;
	p->periods += (uint64_t)stood;
	if (now < p->set_at + p->periods * p->ms * MS)
		p->early++;
	ret = atomic_load_explicit(&p->set_ret, memory_order_relaxed);
	due = ret + p->periods * p->ms * MS;
	if (ret && now > due && now - due > p->worst)
		p->worst = now - due;
	if (ret && now > due + LATE_MS * MS)
		p->late++;
	p->all++;
	if (now >= atomic_load(&p->win->from) &&
	    now < atomic_load(&p->win->to)) {
		p->fires++;
		p->in_window += stood;
	}
	return 0;
}

/*
 * A timer is on schedule if it never came early, came late no more than
 * a quarter of the time, stood for as many periods in the window as its
 * interval says, and coalesced no more than a quarter of them.
 */
static bool on_schedule(const struct paced *p)
{
	int want = WINDOW_MS / (int)p->ms;
	int slack = 1 + LATE_MS / (int)p->ms;

	return !p->early && p->late <= p->all / 4 &&
	       p->in_window >= want - slack && p->in_window <= want + slack &&
	       p->fires >= want * 3 / 4;
}

static int never_runs(wp_ctx *ctx, void *event, void *arg)
{
	(void)ctx;
	(void)event;
	(void)arg;
	return 0;
}

START_TEST(ten_thousand_timers_of_mixed_intervals_keep_their_schedule)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct paced *p = calloc(MANY, sizeof(*p));
	struct window win = { UINT64_MAX, 0 };
	int k, bad = 0, first = -1;
	uint64_t from;

	ck_assert_ptr_nonnull(p);
	for (k = 0; k < MANY; k++) {
		p[k].win = &win;
		p[k].ms = many_ms(k);
		ck_assert_int_eq(wp_pool_register(pool, never_runs, NULL,
						  &p[k].h), 0);
		p[k].set_at = wp_test_now_ns();
		ck_assert_int_eq(wp_handle_set_timer(p[k].h, NULL,
						     p[k].ms * MS, pace, &p[k]),
				 0);
		atomic_store_explicit(&p[k].set_ret, wp_test_now_ns(),
				      memory_order_relaxed);
	}
	from = wp_test_now_ns() + 100 * MS;
	atomic_store(&win.to, from + WINDOW_MS * MS);
	atomic_store(&win.from, from);
	wp_test_sleep_ms(100 + WINDOW_MS + 50);
	wp_pool_destroy(pool);

	for (k = 0; k < MANY; k++) {
		if (on_schedule(&p[k]))
			continue;
		bad++;
		if (first < 0)
			first = k;
	}
	k = first < 0 ? 0 : first;
	ck_assert_msg(!bad, "%d of %d timers off schedule; timer %d of %u ms: "
		      "%d early and %d late of %d, up to %.3f ms late; "
		      "%d fires for %d periods in %d ms", bad, MANY, k,
		      p[k].ms, p[k].early, p[k].late, p[k].all,
		      (double)p[k].worst / MS, p[k].fires, p[k].in_window,
		      WINDOW_MS);
	free(p);
}
END_TEST

/*
 * A callback that holds the worker for five and a half periods makes
 * the next call come late, half a period off the grid, reporting the
 * periods it missed; the fires after it are back on the grid of the set
 * call, not on one that restarted from the late call.
 *
 * Fire j stands for period P(j), the sum of 1 + missed over fires up to
 * j. It is never early, and comes within the period it stands for. Most
 * fires after the late one come within TOL of their time: had the
 * schedule restarted from the late call, none would. The schedule began
 * within the set call, between start and ret.
 */
START_TEST(a_late_timer_coalesces_missed_periods_and_stays_anchored)
{
	enum { PERIOD_MS = 40, TOL_MS = 15, FIRES = 9 };
	wp_pool *pool = wp_test_pool(_i, 1);
	struct ticks *t = malloc(sizeof(*t));
	wp_handle *h = ticks_handle(pool, t);
	uint64_t start, ret, period = 0, due;
	int k, on_grid = 0;

	t->block_at = 2;
	t->block_ms = PERIOD_MS * 11 / 2;
	start = wp_test_now_ns();
	ck_assert_int_eq(wp_handle_set_timer(h, NULL, PERIOD_MS * MS,
					     note_tick, t), 0);
	ret = wp_test_now_ns();
	ck_assert(wp_test_wait_atleast(&t->n, FIRES));
	ck_assert_int_eq(wp_handle_set_timer(h, NULL, 0, NULL, NULL), 0);
	ck_assert_msg(t->missed[2] >= 3, "the call after the block missed %llu",
		      (unsigned long long)t->missed[2]);

	for (k = 0; k < FIRES; k++) {
		period += 1 + t->missed[k];
		due = start + period * PERIOD_MS * MS;
		ck_assert_msg(t->at[k] >= due, "fire %d is %.3f ms early",
			      k + 1, (double)(due - t->at[k]) / MS);
		ck_assert_msg(t->at[k] < due + (ret - start) + PERIOD_MS * MS,
			      "fire %d is %.3f ms late for period %llu",
			      k + 1, (double)(t->at[k] - due) / MS,
			      (unsigned long long)period);
		if (k > 2 && t->at[k] <= due + TOL_MS * MS)
			on_grid++;
	}
	ck_assert_msg(on_grid > (FIRES - 3) / 2,
		      "%d of %d fires after the late one on the grid", on_grid,
		      FIRES - 3);
	wp_pool_destroy(pool);
	free(t);
}
END_TEST

/*
 * Two timers due in the same tick on one worker. The first callback to
 * run holds the worker for five and a half periods, so the other's call
 * comes that late: it must report the periods it missed like any late
 * call, not come once for its first period and at once again for the
 * rest. Every fire of either timer comes within the period it stands for.
 */
struct pair;

struct pair_timer {
	struct ticks t;
	struct pair *pair;
};

struct pair {
	struct pair_timer a;
	struct pair_timer b;
	atomic_bool held;
	/* Written on the worker around the two set calls. */
	uint64_t set_from;
	uint64_t set_to;
	int rc[2];
};

enum { PAIR_MS = 20, PAIR_FIRES = 5 };

static int hold_once(wp_ctx *ctx, void *arg)
{
	struct pair_timer *x = arg;
	int rc = note_tick(ctx, &x->t);

	if (!atomic_exchange(&x->pair->held, true))
		wp_test_sleep_ms(PAIR_MS * 11 / 2);
	return rc;
}

/* Sets both timers from the worker, so that they begin together. */
static int set_pair(wp_ctx *ctx, void *event, void *arg)
{
	struct pair *p = arg;

	(void)ctx;
	(void)event;
	p->set_from = wp_test_now_ns();
	p->rc[0] = wp_handle_set_timer(p->b.t.h, NULL, PAIR_MS * MS,
				       hold_once, &p->b);
	p->rc[1] = wp_handle_set_timer(p->a.t.h, NULL, PAIR_MS * MS,
				       hold_once, &p->a);
	p->set_to = wp_test_now_ns();
	return 0;
}

static void assert_within_periods(const struct pair *p,
				   const struct ticks *t, const char *name)
{
	uint64_t period = 0, from, to;
	int k;

	for (k = 0; k < PAIR_FIRES; k++) {
		period += 1 + t->missed[k];
		from = p->set_from + period * PAIR_MS * MS;
		to = p->set_to + (period + 1) * PAIR_MS * MS;
		ck_assert_msg(t->at[k] >= from && t->at[k] < to,
			      "timer %s: fire %d came %.3f ms after the set, "
			      "told of %llu missed periods", name, k + 1,
			      ((double)t->at[k] - (double)p->set_from) / MS,
			      (unsigned long long)t->missed[k]);
	}
}

START_TEST(a_timer_held_up_by_another_callback_still_coalesces)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct pair *p = calloc(1, sizeof(*p));
	wp_handle *h;

	p->a.pair = p->b.pair = p;
	ck_assert_int_eq(wp_pool_register(pool, set_pair, p, &h), 0);
	p->a.t.h = h;
	ck_assert_int_eq(wp_pool_register(pool, never_runs, NULL, &p->b.t.h),
			 0);
	ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&p->a.t.n, PAIR_FIRES));
	ck_assert(wp_test_wait_atleast(&p->b.t.n, PAIR_FIRES));

	wp_pool_destroy(pool);
	ck_assert_int_eq(p->rc[0], 0);
	ck_assert_int_eq(p->rc[1], 0);
	assert_within_periods(p, &p->a.t, "a");
	assert_within_periods(p, &p->b.t, "b");
	ck_assert_uint_ge(p->a.t.missed[0] + p->b.t.missed[0], 3);
	free(p);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Ending a handle                                                     */
/* ------------------------------------------------------------------ */

START_TEST(a_timer_callback_error_exits_the_handle_with_its_code)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct ticks *t = malloc(sizeof(*t));
	wp_handle *h = ticks_handle(pool, t);
	int fd = wp_handle_error_fd(h);

	ck_assert_int_ge(fd, 0);
	t->fail_at = 3;
	t->code = 42;
	ck_assert_int_eq(wp_handle_set_timer(h, NULL, 2 * MS, note_tick, t),
			 0);
	ck_assert(wp_test_readable(fd, WP_TEST_WAIT_MS));
	ck_assert(wp_test_wait_atleast(&t->exits, 1));
	ck_assert(wp_handle_exited(h));
	ck_assert_int_eq(wp_handle_error(h), 42);
	ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), -ECANCELED);
	assert_no_fire_for(t, 20);

	wp_pool_destroy(pool);
	ck_assert_int_eq(ticked(t), 3);
	ck_assert_int_eq(atomic_load(&t->exits), 1);
	ck_assert_int_eq(atomic_load(&t->exit_err), 42);
	ck_assert_int_eq(atomic_load(&t->events), 0);
	free(t);
}
END_TEST

static int fail_event(wp_ctx *ctx, void *event, void *arg)
{
	(void)ctx;
	(void)event;
	(void)arg;
	return 5;
}

/* Each way a handle can end, with its timer running at 1 ms. */
enum end_how { END_UNREGISTER, END_GRACEFUL, END_FREE, END_STOP, END_HOWS };

static void end_handle(wp_pool *pool, wp_handle *h, enum end_how how)
{
	switch (how) {
	case END_UNREGISTER:
		wp_handle_unregister(h);
		break;
	case END_GRACEFUL:
		ck_assert_int_eq(wp_handle_unregister_graceful(h, NULL), 0);
		break;
	case END_FREE:
		wp_handle_free(h);
		break;
	default:
		ck_assert_int_eq(wp_pool_stop(pool), 0);
		break;
	}
}

/*
 * Ends a handle, with or without an exit callback, while its timer
 * callback runs: the call waits for the callback, and no fire follows.
 */
static void end_while_running(int i, enum end_how how, bool on_exit)
{
	wp_pool *pool = wp_test_pool(i, 2);
	struct slow *s = calloc(1, sizeof(*s));
	wp_handle *h;

	ck_assert_int_eq(wp_pool_register(pool, note_event, &s->t, &h), 0);
	s->t.h = h;
	if (on_exit)
		ck_assert_int_eq(wp_handle_on_exit(h, note_exit, &s->t), 0);
	ck_assert_int_eq(wp_handle_set_timer(h, NULL, MS, slow_tick, s), 0);
	ck_assert(wp_test_wait_atleast(&s->entered, 1));
	end_handle(pool, h, how);
	assert_not_running(s);
	assert_no_fire_for(&s->t, 30);

	ck_assert_int_eq(atomic_load(&s->t.exits), on_exit);
	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&s->entered), ticked(&s->t));
	free(s);
}

START_TEST(no_timer_fires_after_the_call_that_ends_the_handle_returns)
{
	enum end_how how;

	for (how = 0; how < END_HOWS; how++) {
		end_while_running(_i, how, true);
		end_while_running(_i, how, false);
	}
}
END_TEST

START_TEST(a_handler_error_stops_the_handles_timer)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct ticks *t = malloc(sizeof(*t));
	wp_handle *h = ticking_handle(pool, t, 1);

	ck_assert_int_eq(wp_handle_add_event(h, NULL, (void *)5), 0);
	ck_assert(wp_test_wait_atleast(&t->exits, 1));
	assert_no_fire_for(t, 20);
	ck_assert_int_eq(wp_handle_error(h), 5);

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&t->exit_err), 5);
	free(t);
}
END_TEST

START_TEST(set_timer_on_an_exited_handle_returns_ecanceled)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct ticks *t = malloc(sizeof(*t));
	wp_handle *h[3];
	int k;

	h[0] = ticks_handle(pool, &t[0]);
	wp_handle_unregister(h[0]);
	ck_assert_int_eq(wp_pool_register(pool, fail_event, NULL, &h[1]), 0);
	ck_assert_int_eq(wp_handle_add_event(h[1], NULL, NULL), 0);
	ck_assert(wp_test_readable(wp_handle_error_fd(h[1]), WP_TEST_WAIT_MS));
	ck_assert_int_eq(wp_pool_register(pool, never_runs, NULL, &h[2]), 0);
	ck_assert_int_eq(wp_pool_stop(pool), 0);

	for (k = 0; k < 3; k++) {
		ck_assert(wp_handle_exited(h[k]));
		ck_assert_int_eq(wp_handle_set_timer(h[k], NULL, MS, note_tick,
						     t), -ECANCELED);
		ck_assert_int_eq(wp_handle_set_timer(h[k], NULL, 0, NULL,
						     NULL), -ECANCELED);
	}
	wp_pool_destroy(pool);
	ck_assert_int_eq(ticked(t), 0);
	free(t);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Replacing and removing                                              */
/* ------------------------------------------------------------------ */

START_TEST(replacing_a_timer_stops_the_old_one_before_set_returns)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct ticks *t = malloc(2 * sizeof(*t));
	wp_handle *h = ticking_handle(pool, &t[0], 2);

	t[1] = (struct ticks){ .h = h };
	ck_assert_int_eq(wp_handle_set_timer(h, NULL, 2 * MS, note_tock,
					     &t[1]), 0);
	assert_no_fire_for(&t[0], 20);
	ck_assert_int_ge(ticked(&t[1]), 3);

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&t[1].late), 0);
	free(t);
}
END_TEST

/* Replaces or removes the timer while its slow callback runs. */
static void change_while_running(int i, bool remove)
{
	wp_pool *pool = wp_test_pool(i, 2);
	struct slow *s = calloc(1, sizeof(*s));
	struct ticks *next = calloc(1, sizeof(*next));
	wp_handle *h = ticks_handle(pool, &s->t);
	int rc;

	next->h = h;
	ck_assert_int_eq(wp_handle_set_timer(h, NULL, MS, slow_tick, s), 0);
	ck_assert(wp_test_wait_atleast(&s->entered, 1));
	if (remove)
		rc = wp_handle_set_timer(h, NULL, 0, NULL, NULL);
	else
		rc = wp_handle_set_timer(h, NULL, MS, note_tock, next);
	ck_assert_int_eq(rc, 0);
	assert_not_running(s);
	assert_no_fire_for(&s->t, 10);

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&s->entered), ticked(&s->t));
	if (remove)
		ck_assert_int_eq(ticked(next), 0);
	else
		ck_assert_int_gt(ticked(next), 0);
	free(next);
	free(s);
}

START_TEST(replacing_waits_for_the_running_old_callback)
{
	change_while_running(_i, false);
}
END_TEST

START_TEST(removing_waits_for_the_running_callback)
{
	change_while_running(_i, true);
}
END_TEST

START_TEST(removing_a_timer_stops_it_before_set_returns)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct ticks *t = malloc(sizeof(*t));
	wp_handle *h = ticking_handle(pool, t, 2);

	ck_assert_int_eq(wp_handle_set_timer(h, NULL, 0, NULL, NULL), 0);
	assert_no_fire_for(t, 20);
	ck_assert(!wp_handle_exited(h));
	ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&t->events, 1));

	wp_pool_destroy(pool);
	free(t);
}
END_TEST

/*
 * Many changes in a row, each checked as it returns: the timer set in
 * round k tells its round, and a fire of a round older than the newest
 * change that has returned is one the change should have prevented.
 */
enum { ROUNDS = 300 };

struct rounds {
	atomic_int newest;
	atomic_int stale;
	atomic_int fires;
};

struct round {
	struct rounds *r;
	int k;
};

static int note_round(wp_ctx *ctx, void *arg)
{
	struct round *x = arg;

	(void)ctx;
	if (atomic_load(&x->r->newest) > x->k)
		atomic_fetch_add(&x->r->stale, 1);
	atomic_fetch_add(&x->r->fires, 1);
	return 0;
}

START_TEST(every_replace_and_remove_takes_effect_before_it_returns)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct round *x = calloc(ROUNDS + 1, sizeof(*x));
	struct rounds r = { .newest = -1 };
	wp_handle *h;
	uint64_t ns;
	int k;

	ck_assert_int_eq(wp_pool_register(pool, never_runs, NULL, &h), 0);
	for (k = 0; k <= ROUNDS; k++) {
		x[k] = (struct round){ &r, k };
		/* Every fifth round removes; the last one too. */
		ns = k % 5 == 4 || k == ROUNDS ? 0 : (uint64_t)(1 + k % 3) * MS;
		ck_assert_int_eq(wp_handle_set_timer(h, NULL, ns,
						     ns ? note_round : NULL,
						     &x[k]), 0);
		atomic_store(&r.newest, k);
		if (k % 7 == 0)
			wp_test_sleep_ms(2);
	}
	wp_test_sleep_ms(10);

	wp_pool_destroy(pool);
	ck_assert_msg(!atomic_load(&r.stale), "%d fires of a replaced timer",
		      atomic_load(&r.stale));
	ck_assert_int_gt(atomic_load(&r.fires), 0);
	free(x);
}
END_TEST

/* A handle that sets its own timer from its event handler. */

static void *const START = (void *)1;
static void *const STOP = (void *)2;

struct own {
	struct ticks t;
	atomic_int start_rc;
	atomic_int stop_rc;
};

static int set_own_timer(wp_ctx *ctx, void *event, void *arg)
{
	struct own *o = arg;

	(void)ctx;
	if (event == START) {
		atomic_store(&o->start_rc,
			     wp_handle_set_timer(o->t.h, NULL, 2 * MS,
						 note_tick, &o->t));
	} else if (event == STOP) {
		atomic_store(&o->stop_rc,
			     wp_handle_set_timer(o->t.h, NULL, 0, NULL, NULL));
		/* Applied at once: no fire may come from here on. */
		atomic_store(&o->t.over, true);
	}
	atomic_fetch_add(&o->t.events, 1);
	return 0;
}

START_TEST(a_handler_can_set_and_remove_its_own_handles_timer)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct own *o = calloc(1, sizeof(*o));
	int n;

	o->start_rc = o->stop_rc = 1;
	ck_assert_int_eq(wp_pool_register(pool, set_own_timer, o, &o->t.h), 0);
	ck_assert_int_eq(wp_handle_add_event(o->t.h, NULL, START), 0);
	ck_assert(wp_test_wait_atleast(&o->t.n, 3));
	ck_assert_int_eq(wp_handle_add_event(o->t.h, NULL, STOP), 0);
	ck_assert(wp_test_wait_atleast(&o->t.events, 2));
	n = ticked(&o->t);
	wp_test_sleep_ms(20);

	ck_assert_int_eq(ticked(&o->t), n);
	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&o->start_rc), 0);
	ck_assert_int_eq(atomic_load(&o->stop_rc), 0);
	ck_assert_int_eq(atomic_load(&o->t.late), 0);
	free(o);
}
END_TEST

/* A timer callback that replaces or removes its own timer on fire 3. */

struct self_set {
	struct ticks first;
	struct ticks second;
	bool remove;
	atomic_int rc;
};

static int change_own_timer(wp_ctx *ctx, void *arg)
{
	struct self_set *s = arg;
	wp_handle *h = s->first.h;

	note_tick(ctx, &s->first);
	if (ticked(&s->first) != 3)
		return 0;
	if (s->remove)
		atomic_store(&s->rc, wp_handle_set_timer(h, NULL, 0, NULL,
							 NULL));
	else
		atomic_store(&s->rc, wp_handle_set_timer(h, NULL, 3 * MS,
							 note_tock,
							 &s->second));
	/* Applied at once: this callback never runs again. */
	atomic_store(&s->first.over, true);
	return 0;
}

static void run_self_set(int i, bool remove)
{
	wp_pool *pool = wp_test_pool(i, 2);
	struct self_set *s = calloc(1, sizeof(*s));
	wp_handle *h = ticks_handle(pool, &s->first);

	s->second.h = h;
	s->remove = remove;
	s->rc = 1;
	ck_assert_int_eq(wp_handle_set_timer(h, NULL, 2 * MS,
					     change_own_timer, s), 0);
	ck_assert(wp_test_wait_atleast(&s->first.n, 3));
	if (!remove)
		ck_assert(wp_test_wait_atleast(&s->second.n, 3));
	wp_test_sleep_ms(20);

	ck_assert(!wp_handle_exited(h));
	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&s->rc), 0);
	ck_assert_int_eq(ticked(&s->first), 3);
	ck_assert_int_eq(atomic_load(&s->first.late), 0);
	if (remove)
		ck_assert_int_eq(ticked(&s->second), 0);
	free(s);
}

START_TEST(a_timer_callback_can_replace_its_own_timer)
{
	run_self_set(_i, false);
}
END_TEST

START_TEST(a_timer_callback_can_remove_its_own_timer)
{
	run_self_set(_i, true);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Where timers run                                                    */
/* ------------------------------------------------------------------ */

/* Every callback of a handle checks in and out here. */
struct bound {
	wp_handle *h;
	struct wp_test_bound one;
	atomic_int events;
	atomic_int fires;
	atomic_int missed_in_event;
};

static int bound_event(wp_ctx *ctx, void *event, void *arg)
{
	struct bound *b = arg;

	(void)ctx;
	(void)event;
	wp_test_bound_enter(&b->one);
	if (wp_handle_timer_missed(b->h))
		atomic_fetch_add(&b->missed_in_event, 1);
	sched_yield();
	atomic_fetch_add(&b->events, 1);
	wp_test_bound_leave(&b->one);
	return 0;
}

static int bound_tick(wp_ctx *ctx, void *arg)
{
	struct bound *b = arg;

	(void)ctx;
	wp_test_bound_enter(&b->one);
	sched_yield();
	atomic_fetch_add(&b->fires, 1);
	wp_test_bound_leave(&b->one);
	return 0;
}

enum { BOUND_HANDLES = 4, BOUND_EVENTS = 3000 };

static void *add_events(void *arg)
{
	struct bound *b = arg;
	int n, k;

	for (n = 0; n < BOUND_EVENTS; n++) {
		for (k = 0; k < BOUND_HANDLES; k++)
			if (wp_handle_add_event(b[k].h, NULL, NULL) != 0)
				return (void *)1;
		if (n % 100 == 0)
			wp_test_sleep_ms(1);
	}
	return NULL;
}

START_TEST(a_timer_never_overlaps_events_and_stays_on_its_worker)
{
	wp_pool *pool = wp_test_pool_opts(_i, 2, 64, true);
	struct bound b[BOUND_HANDLES] = { 0 };
	void *failed;
	pthread_t t;
	int k;

	for (k = 0; k < BOUND_HANDLES; k++) {
		ck_assert_int_eq(wp_pool_register(pool, bound_event, &b[k],
						  &b[k].h), 0);
		ck_assert_int_eq(wp_handle_set_timer(b[k].h, NULL, MS,
						     bound_tick, &b[k]), 0);
	}
	wp_test_thread(&t, add_events, b);
	ck_assert_int_eq(pthread_join(t, &failed), 0);
	ck_assert_ptr_null(failed);
	for (k = 0; k < BOUND_HANDLES; k++)
		ck_assert(wp_test_wait_atleast(&b[k].events, BOUND_EVENTS));

	wp_pool_destroy(pool);
	for (k = 0; k < BOUND_HANDLES; k++) {
		ck_assert_int_eq(atomic_load(&b[k].events), BOUND_EVENTS);
		ck_assert_int_ge(atomic_load(&b[k].fires), 10);
		ck_assert_int_eq(atomic_load(&b[k].one.overlaps), 0);
		ck_assert_int_eq(atomic_load(&b[k].one.wrong_thread), 0);
		ck_assert_int_eq(atomic_load(&b[k].missed_in_event), 0);
		ck_assert(atomic_load(&b[k].one.thread) !=
			  (unsigned long)pthread_self());
	}
}
END_TEST

/* A one-worker pool: its one thread runs every callback. */
START_TEST(a_timer_runs_on_the_thread_that_runs_its_handles_events)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	pthread_t worker = wp_test_worker_thread(pool);
	struct bound b = { 0 };

	ck_assert_int_eq(wp_pool_register(pool, bound_event, &b, &b.h), 0);
	ck_assert_int_eq(wp_handle_set_timer(b.h, NULL, MS, bound_tick, &b),
			 0);
	ck_assert(wp_test_wait_atleast(&b.fires, 1));
	ck_assert(pthread_equal((pthread_t)atomic_load(&b.one.thread), worker));
	ck_assert_int_eq(wp_handle_add_event(b.h, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&b.events, 1));
	ck_assert(wp_test_wait_atleast(&b.fires, 5));

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&b.one.wrong_thread), 0);
	ck_assert_int_eq(atomic_load(&b.one.overlaps), 0);
}
END_TEST

/*
 * Two timers on one worker; the first holds the worker once, so both
 * come late. Each is told only of its own missed periods: asked about
 * the other handle, or outside a timer callback, the answer is 0.
 */
struct peek {
	struct ticks t;
	wp_handle *other;
	atomic_int saw_other;
};

static int peek_at_other(wp_ctx *ctx, void *arg)
{
	struct peek *p = arg;

	if (wp_handle_timer_missed(p->other))
		atomic_fetch_add(&p->saw_other, 1);
	return note_tick(ctx, &p->t);
}

static uint64_t most_missed(struct ticks *t)
{
	uint64_t most = 0;
	int k;

	for (k = 0; k < ticked(t) && k < TICKS_MAX; k++)
		if (t->missed[k] > most)
			most = t->missed[k];
	return most;
}

START_TEST(timer_missed_tells_only_the_handles_own_timer_callback)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct ticks *t = malloc(sizeof(*t));
	struct peek *p = malloc(sizeof(*p));
	wp_handle *h = ticks_handle(pool, t);

	p->other = h;
	ticks_handle(pool, &p->t);
	atomic_store(&p->saw_other, 0);
	t->block_at = 1;
	t->block_ms = 30;
	/*
	 * The peeking timer runs before the blocking one is set, so the
	 * block always falls within its periods, however late this thread
	 * gets to the second call.
	 */
	ck_assert_int_eq(wp_handle_set_timer(p->t.h, NULL, 5 * MS,
					     peek_at_other, p), 0);
	ck_assert_int_eq(wp_handle_set_timer(h, NULL, 5 * MS, note_tick, t),
			 0);
	ck_assert(wp_test_wait_atleast(&t->n, 3));
	ck_assert(wp_test_wait_atleast(&p->t.n, 3));
	ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&t->events, 1));

	ck_assert_uint_eq(wp_handle_timer_missed(h), 0);
	ck_assert_uint_eq(wp_handle_timer_missed(NULL), 0);
	wp_pool_destroy(pool);
	ck_assert_uint_ge(t->missed[1], 3);
	ck_assert_uint_ge(most_missed(&p->t), 3);
	ck_assert_int_eq(atomic_load(&p->saw_other), 0);
	free(p);
	free(t);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Contexts                                                            */
/* ------------------------------------------------------------------ */

START_TEST(a_timer_receives_its_ctx_or_else_the_pool_ctx)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct ticks *t = malloc(2 * sizeof(*t));
	wp_ctx *ctx = NULL;

	ck_assert_int_eq(wp_ctx_create(&ctx, NULL), 0);
	ticks_handle(pool, &t[0]);
	ticks_handle(pool, &t[1]);
	ck_assert_int_eq(wp_handle_set_timer(t[0].h, ctx, MS, note_tick,
					     &t[0]), 0);
	/* The timer keeps its context alive. */
	wp_ctx_release(ctx);
	ck_assert_int_eq(wp_handle_set_timer(t[1].h, NULL, MS, note_tick,
					     &t[1]), 0);
	ck_assert(wp_test_wait_atleast(&t[0].n, 3));
	ck_assert(wp_test_wait_atleast(&t[1].n, 3));

	ck_assert_ptr_eq(atomic_load(&t[0].ctx), ctx);
	ck_assert(!wp_ctx_done(atomic_load(&t[0].ctx)));
	ck_assert_ptr_eq(atomic_load(&t[1].ctx), wp_pool_ctx(pool));
	wp_pool_destroy(pool);
	free(t);
}
END_TEST

START_TEST(cancelling_a_timers_ctx_stops_the_timer_but_not_the_handle)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct ticks *t = malloc(2 * sizeof(*t));
	wp_handle *h = ticks_handle(pool, &t[0]);
	wp_ctx *ctx = NULL;
	int n;

	ck_assert_int_eq(wp_ctx_create(&ctx, NULL), 0);
	ck_assert_int_eq(wp_handle_set_timer(h, ctx, MS, note_tick, &t[0]), 0);
	ck_assert(wp_test_wait_atleast(&t[0].n, 3));
	wp_ctx_cancel(ctx);
	/* A fire that began before the cancel may still finish. */
	wp_test_sleep_ms(5);
	n = ticked(&t[0]);
	wp_test_sleep_ms(20);
	ck_assert_int_eq(ticked(&t[0]), n);

	ck_assert(!wp_handle_exited(h));
	ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&t[0].events, 1));
	t[1] = (struct ticks){ .h = h };
	ck_assert_int_eq(wp_handle_set_timer(h, NULL, MS, note_tock, &t[1]), 0);
	ck_assert(wp_test_wait_atleast(&t[1].n, 3));
	ck_assert_int_eq(wp_handle_error(h), 0);

	wp_pool_destroy(pool);
	ck_assert_int_eq(ticked(&t[0]), n);
	wp_ctx_release(ctx);
	free(t);
}
END_TEST

START_TEST(a_timer_stops_when_its_ctx_times_out)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct ticks *t = malloc(sizeof(*t));
	wp_handle *h = ticks_handle(pool, t);
	wp_ctx *ctx = wp_test_ctx_ms(NULL, 50);
	int n;

	ck_assert_int_eq(wp_handle_set_timer(h, ctx, 5 * MS, note_tick, t), 0);
	ck_assert(wp_test_wait_ctx(ctx));
	wp_ctx_release(ctx);
	wp_test_sleep_ms(10);
	n = ticked(t);
	wp_test_sleep_ms(30);

	ck_assert_int_eq(ticked(t), n);
	ck_assert_msg(n >= 5 && n <= 10, "%d fires in 50 ms at 5 ms", n);
	ck_assert(!wp_handle_exited(h));
	wp_pool_destroy(pool);
	free(t);
}
END_TEST

START_TEST(a_timer_set_with_an_ended_ctx_never_fires)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct ticks *t = malloc(sizeof(*t));
	wp_handle *h = ticks_handle(pool, t);
	wp_ctx *ctx = NULL;

	ck_assert_int_eq(wp_ctx_create(&ctx, NULL), 0);
	wp_ctx_cancel(ctx);
	ck_assert_int_eq(wp_handle_set_timer(h, ctx, MS, note_tick, t), 0);
	wp_ctx_release(ctx);
	wp_test_sleep_ms(20);

	ck_assert_int_eq(ticked(t), 0);
	ck_assert(!wp_handle_exited(h));
	wp_pool_destroy(pool);
	free(t);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Lifecycle and misuse                                                */
/* ------------------------------------------------------------------ */

START_TEST(timers_set_before_start_begin_firing_after_start)
{
	wp_pool *pool = wp_test_pool_opts(_i, 2, 0, false);
	struct ticks *t = malloc(4 * sizeof(*t));
	uint64_t started;
	int k;

	for (k = 0; k < 3; k++)
		ticks_handle(pool, &t[k]);
	t[3] = (struct ticks){ .h = t[1].h };
	ck_assert_int_eq(wp_handle_set_timer(t[0].h, NULL, 10 * MS, note_tick,
					     &t[0]), 0);
	/* Replaced, then removed, before the pool starts. */
	ck_assert_int_eq(wp_handle_set_timer(t[1].h, NULL, MS, note_tick,
					     &t[1]), 0);
	ck_assert_int_eq(wp_handle_set_timer(t[1].h, NULL, MS, note_tock,
					     &t[3]), 0);
	ck_assert_int_eq(wp_handle_set_timer(t[2].h, NULL, MS, note_tick,
					     &t[2]), 0);
	ck_assert_int_eq(wp_handle_set_timer(t[2].h, NULL, 0, NULL, NULL), 0);
	wp_test_sleep_ms(30);
	for (k = 0; k < 4; k++)
		ck_assert_int_eq(ticked(&t[k]), 0);

	started = wp_test_now_ns();
	ck_assert_int_eq(wp_pool_start(pool), 0);
	ck_assert(wp_test_wait_atleast(&t[0].n, 3));
	ck_assert(wp_test_wait_atleast(&t[3].n, 3));
	wp_test_sleep_ms(10);

	wp_pool_destroy(pool);
	ck_assert_msg(t[0].at[0] >= started + 10 * MS,
		      "first fire %.3f ms after start",
		      ((double)t[0].at[0] - (double)started) / MS);
	ck_assert_int_eq(ticked(&t[1]), 0);
	ck_assert_int_eq(ticked(&t[2]), 0);
	free(t);
}
END_TEST

/* Pools torn down in each state with timers set: descriptors come back. */
static void destroy_with_timers(int i, bool start, bool stop)
{
	enum { HANDLES = 64 };
	wp_pool *pool = wp_test_pool_opts(i, 2, 0, start);
	atomic_int fires = 0;
	wp_ctx *ctx = NULL;
	wp_handle *h;
	int k;

	ck_assert_int_eq(wp_ctx_create(&ctx, NULL), 0);
	for (k = 0; k < HANDLES; k++) {
		ck_assert_int_eq(wp_pool_register(pool, never_runs, NULL, &h),
				 0);
		if (k % 4 == 0)
			ck_assert_int_ge(wp_handle_error_fd(h), 0);
		ck_assert_int_eq(wp_handle_set_timer(h, k % 2 ? ctx : NULL,
						     (uint64_t)(1 + k % 5) *
						     MS, count_tick, &fires),
				 0);
	}
	wp_ctx_release(ctx);
	if (start)
		ck_assert(wp_test_wait_atleast(&fires, HANDLES));
	if (stop)
		ck_assert_int_eq(wp_pool_stop(pool), 0);
	wp_pool_destroy(pool);
}

START_TEST(destroying_a_pool_with_timers_set_leaks_nothing)
{
	int before = wp_test_count_fds();

	destroy_with_timers(_i, true, false);
	ck_assert_int_eq(wp_test_count_fds(), before);
	destroy_with_timers(_i, true, true);
	ck_assert_int_eq(wp_test_count_fds(), before);
	destroy_with_timers(_i, false, false);
	ck_assert_int_eq(wp_test_count_fds(), before);
}
END_TEST

/*
 * Contexts from nowhere, larger than any real context so that reading
 * them stays in bounds: zeroed memory and memory full of junk.
 */
struct fake_ctx {
	union {
		unsigned char bytes[512];
		max_align_t align;
	};
};

START_TEST(set_timer_misuse_returns_einval_and_sets_nothing)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct ticks *t = malloc(sizeof(*t));
	wp_handle *h = ticks_handle(pool, t);
	struct fake_ctx zeroed, junk;

	memset(&zeroed, 0, sizeof(zeroed));
	memset(&junk, 0x5a, sizeof(junk));
	ck_assert_int_eq(wp_handle_set_timer(NULL, NULL, MS, note_tick, t),
			 -EINVAL);
	ck_assert_int_eq(wp_handle_set_timer(NULL, NULL, 0, NULL, NULL),
			 -EINVAL);
	ck_assert_int_eq(wp_handle_set_timer(h, NULL, MS, NULL, t), -EINVAL);
	ck_assert_int_eq(wp_handle_set_timer(h, (wp_ctx *)&zeroed, MS,
					     note_tick, t), -EINVAL);
	ck_assert_int_eq(wp_handle_set_timer(h, (wp_ctx *)&junk, MS,
					     note_tick, t), -EINVAL);
	/* Removing when no timer is set is no misuse. */
	ck_assert_int_eq(wp_handle_set_timer(h, NULL, 0, NULL, NULL), 0);
	wp_test_sleep_ms(20);

	ck_assert_int_eq(ticked(t), 0);
	ck_assert(!wp_handle_exited(h));
	wp_pool_destroy(pool);
	free(t);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Corners                                                             */
/* ------------------------------------------------------------------ */

/*
 * Removing a worker's last timer, or ending the handle that had it, must
 * let the worker sleep again: an idle pool uses next to no CPU. (A worker
 * that kept polling would use all of the 300 ms.)
 */
static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void assert_idle_sleeps(void)
{
	uint64_t c0;

	/* The old due time passes first. */
	wp_test_sleep_ms(20);
	c0 = cpu_ns();
	wp_test_sleep_ms(300);
	ck_assert_msg(cpu_ns() - c0 < 100 * MS,
		      "an idle pool used %llu ms of CPU in 300 ms",
		      (unsigned long long)((cpu_ns() - c0) / MS));
}

START_TEST(a_worker_whose_last_timer_goes_sleeps_again)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct ticks *t = malloc(sizeof(*t));
	wp_handle *h = ticking_handle(pool, t, 2);

	ck_assert_int_eq(wp_handle_set_timer(h, NULL, 0, NULL, NULL), 0);
	assert_idle_sleeps();
	ck_assert_int_eq(wp_handle_set_timer(h, NULL, 2 * MS, note_tick, t),
			 0);
	ck_assert(wp_test_wait_atleast(&t->n, ticked(t) + 2));
	wp_handle_unregister(h);
	assert_idle_sleeps();

	wp_pool_destroy(pool);
	free(t);
}
END_TEST

/*
 * A removal waits for the running callback even when the handle exits
 * meanwhile: the exit finishes only after that callback returns.
 */
struct removal {
	struct slow *s;
	atomic_int returned;
	atomic_int inside_at_return;
};

static void *remove_timer(void *arg)
{
	struct removal *r = arg;

	ck_assert_int_eq(wp_handle_set_timer(r->s->t.h, NULL, 0, NULL, NULL),
			 0);
	atomic_store(&r->inside_at_return, atomic_load(&r->s->inside));
	atomic_store(&r->returned, 1);
	return NULL;
}

START_TEST(a_removal_waits_for_the_running_callback_through_an_exit)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct slow *s = calloc(1, sizeof(*s));
	struct removal r = { .s = s };
	wp_handle *h = ticks_handle(pool, &s->t);
	pthread_t t;

	ck_assert_int_eq(wp_handle_set_timer(h, NULL, 100 * MS, slow_tick, s),
			 0);
	ck_assert(wp_test_wait_atleast(&s->entered, 1));
	wp_test_thread(&t, remove_timer, &r);
	/* The removal waits for the callback, which runs 20 ms. */
	wp_test_sleep_ms(5);
	wp_handle_unregister(h);
	wp_test_join(t);

	ck_assert_int_eq(atomic_load(&r.returned), 1);
	ck_assert_msg(!atomic_load(&r.inside_at_return),
		      "set_timer returned while the callback ran");
	wp_pool_destroy(pool);
	free(s);
}
END_TEST

/* An interval beyond the clock's range means never, not at once. */
START_TEST(an_interval_too_long_for_the_clock_never_fires)
{
	static const uint64_t longest[] = { UINT64_MAX, UINT64_MAX - 1000000000,
					    (uint64_t)INT64_MAX };
	wp_pool *pool = wp_test_pool(_i, 1);
	atomic_int fires[3];
	wp_handle *h[3];
	int k;

	for (k = 0; k < 3; k++) {
		atomic_init(&fires[k], 0);
		ck_assert_int_eq(wp_pool_register(pool, never_runs, NULL,
						  &h[k]), 0);
		ck_assert_int_eq(wp_handle_set_timer(h[k], NULL, longest[k],
						     count_tick, &fires[k]),
				 0);
	}
	wp_test_sleep_ms(50);
	for (k = 0; k < 3; k++)
		ck_assert_int_eq(atomic_load(&fires[k]), 0);
	wp_pool_destroy(pool);
}
END_TEST

/*
 * Two workers' callbacks set timers on each other's handles at the same
 * time. Neither may wait for the other: both calls return.
 */
struct crossing {
	wp_handle *h[2];
	atomic_int inside;
	atomic_int returned;
	atomic_int ticks;
};

static int cross_set(wp_ctx *ctx, void *event, void *arg)
{
	struct crossing *c = arg;
	int other = event ? 0 : 1;

	(void)ctx;
	atomic_fetch_add(&c->inside, 1);
	/* Both callbacks run before either sets its timer. */
	if (!wp_test_wait_atleast(&c->inside, 2))
		return 0;
	ck_assert_int_eq(wp_handle_set_timer(c->h[other], NULL, MS,
					     count_tick, &c->ticks), 0);
	atomic_fetch_add(&c->returned, 1);
	return 0;
}

START_TEST(workers_setting_each_others_timers_at_once_both_return)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct crossing c = { 0 };
	int k;

	/* Consecutive handles go to the two workers in turn. */
	for (k = 0; k < 2; k++)
		ck_assert_int_eq(wp_pool_register(pool, cross_set, &c,
						  &c.h[k]), 0);
	ck_assert_int_eq(wp_handle_add_event(c.h[0], NULL, NULL), 0);
	ck_assert_int_eq(wp_handle_add_event(c.h[1], NULL, (void *)1), 0);
	ck_assert(wp_test_wait_atleast(&c.returned, 2));
	ck_assert(wp_test_wait_atleast(&c.ticks, 10));
	wp_pool_destroy(pool);
}
END_TEST

/*
 * The same across two pools: a worker of one pool and a worker of another
 * set timers on each other's handles at once. Neither may wait for the
 * other.
 */
START_TEST(two_pools_workers_setting_each_others_timers_return)
{
	wp_pool *pool[2] = { wp_test_pool(_i, 1), wp_test_pool(_i, 1) };
	struct crossing c = { 0 };
	int k;

	for (k = 0; k < 2; k++)
		ck_assert_int_eq(wp_pool_register(pool[k], cross_set, &c,
						  &c.h[k]), 0);
	ck_assert_int_eq(wp_handle_add_event(c.h[0], NULL, NULL), 0);
	ck_assert_int_eq(wp_handle_add_event(c.h[1], NULL, (void *)1), 0);
	ck_assert(wp_test_wait_atleast(&c.returned, 2));
	ck_assert(wp_test_wait_atleast(&c.ticks, 10));
	wp_pool_destroy(pool[0]);
	wp_pool_destroy(pool[1]);
}
END_TEST

/*
 * A handler stops a second pool that never started, so the second pool's
 * exit callbacks run on the handler's worker. One of them sets a timer on
 * a handle of that same worker: it cannot wait for the worker, which is
 * busy running the handler that called the stop.
 */
struct nested {
	wp_pool *other;
	wp_handle *mine;
	atomic_int set_rc;
	atomic_int stopped;
	atomic_int ticks;
};

static void set_from_exit(int err, void *arg)
{
	struct nested *n = arg;

	(void)err;
	atomic_store(&n->set_rc, wp_handle_set_timer(n->mine, NULL, MS,
						     count_tick, &n->ticks));
}

static int stop_other(wp_ctx *ctx, void *event, void *arg)
{
	struct nested *n = arg;

	(void)ctx;
	(void)event;
	wp_pool_stop(n->other);
	atomic_store(&n->stopped, 1);
	return 0;
}

START_TEST(a_timer_set_in_a_handlers_stop_of_a_pool_never_hangs)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct nested n = { .set_rc = 1 };
	wp_handle *h, *q;

	n.other = wp_test_pool_opts(_i, 1, 0, false);
	ck_assert_int_eq(wp_pool_register(pool, stop_other, &n, &h), 0);
	ck_assert_int_eq(wp_pool_register(pool, never_runs, NULL, &n.mine),
			 0);
	ck_assert_int_eq(wp_pool_register(n.other, never_runs, NULL, &q), 0);
	ck_assert_int_eq(wp_handle_on_exit(q, set_from_exit, &n), 0);
	ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&n.stopped, 1));
	ck_assert_int_eq(atomic_load(&n.set_rc), 0);
	ck_assert(wp_test_wait_atleast(&n.ticks, 5));
	wp_pool_destroy(n.other);
	wp_pool_destroy(pool);
}
END_TEST

/*
 * A late callback that replaces its own timer is still the call that
 * coalesced the missed periods: it is told so after the change as before.
 */
struct replaced {
	wp_handle *h;
	atomic_int n;
	uint64_t before;
	uint64_t after;
};

static int replace_when_late(wp_ctx *ctx, void *arg)
{
	struct replaced *r = arg;
	int n = atomic_load(&r->n) + 1;

	(void)ctx;
	if (n == 1)
		wp_test_sleep_ms(30);
	if (n == 2) {
		r->before = wp_handle_timer_missed(r->h);
		wp_handle_set_timer(r->h, NULL, 100 * MS, replace_when_late,
				    r);
		r->after = wp_handle_timer_missed(r->h);
	}
	/* Publishes before and after. */
	atomic_store(&r->n, n);
	return 0;
}

START_TEST(timer_missed_holds_after_the_callback_replaces_its_timer)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct replaced r = { 0 };

	ck_assert_int_eq(wp_pool_register(pool, never_runs, NULL, &r.h), 0);
	ck_assert_int_eq(wp_handle_set_timer(r.h, NULL, 5 * MS,
					     replace_when_late, &r), 0);
	ck_assert(wp_test_wait_atleast(&r.n, 2));
	ck_assert_uint_ge(r.before, 3);
	ck_assert_uint_eq(r.after, r.before);
	wp_pool_destroy(pool);
}
END_TEST

static Suite *timer_suite(void)
{
	Suite *s = suite_create("timer");
	TCase *tc;

	tc = wp_test_tcase("schedule");
	wp_test_add(tc, a_100ms_timer_fires_ten_times_in_one_second);
	wp_test_add(tc, a_1ms_timer_fires_at_least_900_times_in_an_idle_second);
	wp_test_add(tc,
		    ten_thousand_timers_of_mixed_intervals_keep_their_schedule);
	wp_test_add(tc,
		    a_late_timer_coalesces_missed_periods_and_stays_anchored);
	wp_test_add(tc, a_timer_held_up_by_another_callback_still_coalesces);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("corners");
	wp_test_add(tc, a_worker_whose_last_timer_goes_sleeps_again);
	wp_test_add(tc,
		    a_removal_waits_for_the_running_callback_through_an_exit);
	wp_test_add(tc, an_interval_too_long_for_the_clock_never_fires);
	wp_test_add(tc, workers_setting_each_others_timers_at_once_both_return);
	wp_test_add(tc,
		    two_pools_workers_setting_each_others_timers_return);
	wp_test_add(tc,
		    a_timer_set_in_a_handlers_stop_of_a_pool_never_hangs);
	wp_test_add(tc,
		    timer_missed_holds_after_the_callback_replaces_its_timer);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("changes");
	wp_test_add(tc, replacing_a_timer_stops_the_old_one_before_set_returns);
	wp_test_add(tc, removing_a_timer_stops_it_before_set_returns);
	wp_test_add(tc, replacing_waits_for_the_running_old_callback);
	wp_test_add(tc, removing_waits_for_the_running_callback);
	wp_test_add(tc,
		    every_replace_and_remove_takes_effect_before_it_returns);
	wp_test_add(tc, a_handler_can_set_and_remove_its_own_handles_timer);
	wp_test_add(tc, a_timer_callback_can_replace_its_own_timer);
	wp_test_add(tc, a_timer_callback_can_remove_its_own_timer);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("exit");
	wp_test_add(tc, a_timer_callback_error_exits_the_handle_with_its_code);
	wp_test_add(tc,
		    no_timer_fires_after_the_call_that_ends_the_handle_returns);
	wp_test_add(tc, a_handler_error_stops_the_handles_timer);
	wp_test_add(tc, set_timer_on_an_exited_handle_returns_ecanceled);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("binding");
	wp_test_add(tc, a_timer_never_overlaps_events_and_stays_on_its_worker);
	wp_test_add(tc,
		    a_timer_runs_on_the_thread_that_runs_its_handles_events);
	wp_test_add(tc, timer_missed_tells_only_the_handles_own_timer_callback);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("ctx");
	wp_test_add(tc, a_timer_receives_its_ctx_or_else_the_pool_ctx);
	wp_test_add(tc,
		    cancelling_a_timers_ctx_stops_the_timer_but_not_the_handle);
	wp_test_add(tc, a_timer_stops_when_its_ctx_times_out);
	wp_test_add(tc, a_timer_set_with_an_ended_ctx_never_fires);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("lifecycle");
	wp_test_add(tc, timers_set_before_start_begin_firing_after_start);
	wp_test_add(tc, destroying_a_pool_with_timers_set_leaks_nothing);
	wp_test_add(tc, set_timer_misuse_returns_einval_and_sets_nothing);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	return wp_test_run(timer_suite());
}
