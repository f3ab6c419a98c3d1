/* SPDX-License-Identifier: MIT */
/*
 * Shutdown: pools destroyed, or stopped, with events still queued and
 * handlers running, cycle after cycle. Nothing crashes or leaks, every
 * exit callback runs exactly once with a code that says why, and every
 * event either ran in order before the exit or was dropped by it.
 *
 * WP_SHUTDOWN_CYCLES sets the number of cycles (`make stress` runs 1,000
 * on each backend).
 */
#include "harness.h"

#define CI_CYCLES 200
#define EVENTS 10000
#define HANDLES 50
#define BATCH 32

/* Handles whose handler fails, and on which of their events. */
#define FAILING(k) ((k) % 7 == 3)
#define FAIL_AT 20
#define FAIL_CODE 77

/* One handle's life within a cycle. */
struct life {
	wp_handle *h;
	int index;
	long added;		/* by the adding threads, one per handle */
	long ran;		/* by the handle's callbacks */
	long ticks;
	atomic_long misordered;
	atomic_int inside;
	atomic_int late;	/* callbacks after the exit callback */
	atomic_int exits;
	atomic_int code;
	bool unregistered;
};

struct totals {
	long cycles;
	long added, ran, dropped, refused;
	long exits, exits_shutdown, exits_failed, exits_cancelled;
};

static long env_cycles(void)
{
	const char *s = getenv("WP_SHUTDOWN_CYCLES");
	long v = s ? strtol(s, NULL, 10) : 0;

	return v > 0 ? v : CI_CYCLES;
}

static void life_enter(struct life *l)
{
	if (atomic_exchange(&l->inside, 1))
		atomic_fetch_add(&l->misordered, 1);
	if (atomic_load(&l->exits))
		atomic_fetch_add(&l->late, 1);
}

/* A little work per event, so that destroy finds events still queued. */
static void busy(void)
{
	for (volatile int k = 0; k < 200; k++)
		;
}

static int life_event(wp_ctx *ctx, void *event, void *arg)
{
	struct life *l = arg;
	long seq = (long)(uintptr_t)event;

	(void)ctx;
	life_enter(l);
	if (seq != l->ran + 1)
		atomic_fetch_add(&l->misordered, 1);
	l->ran = seq;
	busy();
	atomic_store(&l->inside, 0);
	return FAILING(l->index) && seq == FAIL_AT ? FAIL_CODE : 0;
}

static int life_tick(wp_ctx *ctx, void *arg)
{
	struct life *l = arg;

	(void)ctx;
	life_enter(l);
	l->ticks++;
	atomic_store(&l->inside, 0);
	return 0;
}

static void life_exit(int err, void *arg)
{
	struct life *l = arg;

	if (atomic_load(&l->inside))
		atomic_fetch_add(&l->misordered, 1);
	atomic_store(&l->code, err);
	atomic_fetch_add(&l->exits, 1);
}

/* Adds the next event of l, one at a time or in a batch. */
static int life_add(struct life *l, bool batch, long *refused)
{
	void *ev[BATCH];
	int k, rc;

	if (!batch) {
		rc = wp_handle_add_event(l->h, NULL,
					 (void *)(uintptr_t)(l->added + 1));
		rc = rc == 0 ? 1 : rc;
	} else {
		for (k = 0; k < BATCH; k++)
			ev[k] = (void *)(uintptr_t)(l->added + 1 + k);
		rc = wp_handle_add_events(l->h, NULL, ev, BATCH);
	}
	if (rc > 0)
		l->added += rc;
	else if (rc == -ECANCELED)
		(*refused)++;
	return rc;
}

struct adder {
	struct life *lives;
	int first, step;	/* the handles this adder feeds */
	long events;
	bool batch;
	long refused;
	long bad;		/* returns other than success or -ECANCELED */
};

static void *add_events(void *arg)
{
	struct adder *a = arg;
	long n = 0;
	int k, rc;

	while (n < a->events) {
		for (k = a->first; k < HANDLES && n < a->events; k += a->step) {
			rc = life_add(&a->lives[k], a->batch, &a->refused);
			if (rc > 0)
				n += rc;
			else if (rc != -ECANCELED)
				a->bad++;
			else
				n++;
		}
	}
	return NULL;
}

/* Checks one handle after its pool is gone and adds it to the totals. */
static void life_count(struct life *l, struct totals *t)
{
	int code = atomic_load(&l->code);

	ck_assert_int_eq(atomic_load(&l->exits), 1);
	ck_assert_int_eq(atomic_load(&l->late), 0);
	ck_assert_int_eq(atomic_load(&l->misordered), 0);
	ck_assert_int_le(l->ran, l->added);
	if (code == FAIL_CODE) {
		ck_assert(FAILING(l->index));
		ck_assert_int_eq(l->ran, FAIL_AT);
		t->exits_failed++;
	} else if (code == -ECANCELED) {
		ck_assert(l->unregistered);
		t->exits_cancelled++;
	} else {
		ck_assert_int_eq(code, -ESHUTDOWN);
		t->exits_shutdown++;
	}
	t->exits += atomic_load(&l->exits);
	t->added += l->added;
	t->ran += l->ran;
	t->dropped += l->added - l->ran;
}

/*
 * One cycle: a pool, HANDLES handles and EVENTS events, ended while the
 * events run. Cycles differ in how: destroy right after the last add;
 * stop while a second thread still adds, then destroy; or destroy with
 * batches queued and periodic timers firing.
 */
static void cycle(int i, long c, struct totals *t)
{
	wp_pool *pool = wp_test_pool(i, 2);
	struct life lives[HANDLES];
	struct adder a[2];
	pthread_t other;
	int k, kind = (int)(c % 3);

	memset(lives, 0, sizeof(lives));
	for (k = 0; k < HANDLES; k++) {
		lives[k].index = k;
		ck_assert_int_eq(wp_pool_register(pool, life_event, &lives[k],
						  &lives[k].h), 0);
		ck_assert_int_eq(wp_handle_on_exit(lives[k].h, life_exit,
						   &lives[k]), 0);
		if (kind == 2 && k % 5 == 0)
			ck_assert_int_eq(wp_handle_set_timer(lives[k].h, NULL,
					 100000, life_tick, &lives[k]), 0);
	}

	a[0] = (struct adder){ .lives = lives, .first = 0,
			       .step = kind == 1 ? 2 : 1,
			       .events = kind == 1 ? EVENTS / 2 : EVENTS,
			       .batch = kind == 2 };
	a[1] = (struct adder){ .lives = lives, .first = 1, .step = 2,
			       .events = EVENTS / 2 };
	if (kind == 1)
		wp_test_thread(&other, add_events, &a[1]);

	/* An unregister midway: later adds to the handle are refused. */
	a[0].events /= 2;
	add_events(&a[0]);
	lives[0].unregistered = true;
	wp_handle_unregister(lives[0].h);
	ck_assert_int_eq(atomic_load(&lives[0].exits), 1);
	add_events(&a[0]);

	if (kind == 1) {
		ck_assert_int_eq(wp_pool_stop(pool), 0);
		wp_test_join(other);
		ck_assert_int_eq(a[1].bad, 0);
		t->refused += a[1].refused;
	}
	wp_pool_destroy(pool);

	ck_assert_int_eq(a[0].bad, 0);
	t->refused += a[0].refused;
	for (k = 0; k < HANDLES; k++)
		life_count(&lives[k], t);
	t->cycles++;
}

START_TEST(destroy_mid_flight_exits_each_handle_once_leaking_nothing)
{
	long cycles = env_cycles(), c;
	int fds = wp_test_count_fds();
	uint64_t start = wp_test_now_ns();
	struct totals t = { 0 };

	for (c = 0; c < cycles; c++)
		cycle(_i, c, &t);

	printf("shutdown on %s: %ld cycles, %ld events added = %ld ran + "
	       "%ld dropped, %ld adds refused; %ld exits: %ld shutdown, "
	       "%ld failed, %ld cancelled; %.1f s\n",
	       wp_test_backend_name(_i), t.cycles, t.added, t.ran, t.dropped,
	       t.refused, t.exits, t.exits_shutdown, t.exits_failed,
	       t.exits_cancelled, (double)(wp_test_now_ns() - start) / 1e9);
	ck_assert_int_eq(wp_test_count_fds(), fds);
	ck_assert_int_eq(t.exits, cycles * HANDLES);
	ck_assert_int_eq(t.added, t.ran + t.dropped);
	ck_assert_int_eq(t.exits_cancelled, cycles);
	ck_assert_int_gt(t.exits_failed, 0);
	ck_assert_int_gt(t.exits_shutdown, 0);
}
END_TEST

/* A handle whose timer is set twice before its worker looks, then freed. */

static int no_event(wp_ctx *ctx, void *event, void *arg)
{
	(void)ctx;
	(void)event;
	(void)arg;
	return 0;
}

static int no_tick(wp_ctx *ctx, void *arg)
{
	(void)ctx;
	(void)arg;
	return 0;
}

struct ender {
	wp_pool *pool;
	wp_handle *h;
	atomic_int done;
};

static void *free_and_destroy(void *arg)
{
	struct ender *e = arg;

	wp_handle_free(e->h);
	wp_pool_destroy(e->pool);
	atomic_store(&e->done, 1);
	return NULL;
}

/*
 * Requests to a worker that has not started pile up; the second timer
 * replaces the first. Freeing the handle and destroying the pool must
 * still finish. The end runs on a thread of its own, so that a hang
 * fails the test with words instead of a timeout.
 */
START_TEST(freed_handle_with_a_timer_set_twice_lets_destroy_return)
{
	struct ender e = { .pool = wp_test_pool_opts(_i, 1, 0, false) };
	pthread_t t;

	ck_assert_int_eq(wp_pool_register(e.pool, no_event, NULL, &e.h), 0);
	ck_assert_int_eq(wp_handle_set_timer(e.h, NULL, 1000000, no_tick,
					     NULL), 0);
	ck_assert_int_eq(wp_handle_set_timer(e.h, NULL, 2000000, no_tick,
					     NULL), 0);
	wp_test_thread(&t, free_and_destroy, &e);
	ck_assert_msg(wp_test_wait_atleast(&e.done, 1),
		      "wp_handle_free + wp_pool_destroy did not return");
	wp_test_join(t);
}
END_TEST

/*
 * A pool never started is stopped. Each exit callback of a handle on the
 * first worker ends a handle on the second, one by freeing it, one by
 * unregistering it; the stopping thread serves both workers, so it must
 * not wait inside the first callback for the second worker.
 */
struct pair {
	wp_handle *a;
	wp_handle *b;
	bool free_b;
	atomic_int a_exits;
	atomic_int b_exits;
};

static void pair_a_exit(int err, void *arg)
{
	struct pair *p = arg;

	(void)err;
	atomic_fetch_add(&p->a_exits, 1);
	if (p->free_b)
		wp_handle_free(p->b);
	else
		wp_handle_unregister(p->b);
}

static void pair_b_exit(int err, void *arg)
{
	struct pair *p = arg;

	ck_assert_int_eq(err, -ESHUTDOWN);
	atomic_fetch_add(&p->b_exits, 1);
}

static void *stop_only(void *arg)
{
	struct ender *e = arg;

	ck_assert_int_eq(wp_pool_stop(e->pool), 0);
	atomic_store(&e->done, 1);
	return NULL;
}

START_TEST(a_stop_before_start_serves_exits_that_end_other_workers_handles)
{
	struct ender e = { .pool = wp_test_pool_opts(_i, 2, 0, false) };
	struct pair p[2] = { { .free_b = true }, { .free_b = false } };
	pthread_t t;
	int k;

	for (k = 0; k < 2; k++) {
		/* Consecutive handles go to the two workers in turn. */
		ck_assert_int_eq(wp_pool_register(e.pool, no_event, NULL,
						  &p[k].a), 0);
		ck_assert_int_eq(wp_pool_register(e.pool, no_event, NULL,
						  &p[k].b), 0);
		ck_assert_int_eq(wp_handle_on_exit(p[k].a, pair_a_exit, &p[k]),
				 0);
		ck_assert_int_eq(wp_handle_on_exit(p[k].b, pair_b_exit, &p[k]),
				 0);
	}
	wp_test_thread(&t, stop_only, &e);
	ck_assert_msg(wp_test_wait_atleast(&e.done, 1),
		      "wp_pool_stop did not return");
	wp_test_join(t);

	for (k = 0; k < 2; k++) {
		ck_assert_int_eq(atomic_load(&p[k].a_exits), 1);
		ck_assert_int_eq(atomic_load(&p[k].b_exits), 1);
	}
	wp_handle_free(p[1].b);
	wp_pool_destroy(e.pool);
}
END_TEST

/*
 * A graceful unregister waits for a pool that has not started; the pool
 * is stopped, and as soon as the stop has served the close, the waiting
 * thread frees the handle, while the stop, slowed down by another
 * handle's exit callback, has not finished with that worker yet.
 */
struct closer {
	wp_handle *h;
	atomic_int rc;
	atomic_int done;
};

static void *graceful_then_free(void *arg)
{
	struct closer *c = arg;

	atomic_store(&c->rc, wp_handle_unregister_graceful(c->h, NULL));
	wp_handle_free(c->h);
	atomic_store(&c->done, 1);
	return NULL;
}

static void slow_exit(int err, void *arg)
{
	(void)err;
	(void)arg;
	wp_test_sleep_ms(50);
}

START_TEST(a_handle_freed_while_the_stop_serves_its_close_is_safe)
{
	struct ender e = { .pool = wp_test_pool_opts(_i, 1, 0, false) };
	struct closer c = { 0 };
	wp_handle *slow;
	pthread_t t, u;

	ck_assert_int_eq(wp_pool_register(e.pool, no_event, NULL, &c.h), 0);
	ck_assert_int_eq(wp_pool_register(e.pool, no_event, NULL, &slow), 0);
	ck_assert_int_eq(wp_handle_on_exit(slow, slow_exit, NULL), 0);
	wp_test_thread(&t, graceful_then_free, &c);
	/* Long enough for the close request to be queued. */
	wp_test_sleep_ms(50);
	wp_test_thread(&u, stop_only, &e);
	ck_assert(wp_test_wait_atleast(&c.done, 1));
	ck_assert(wp_test_wait_atleast(&e.done, 1));
	wp_test_join(t);
	wp_test_join(u);

	ck_assert_int_eq(atomic_load(&c.rc), -ECANCELED);
	wp_handle_free(slow);
	wp_pool_destroy(e.pool);
}
END_TEST

static Suite *shutdown_suite(void)
{
	Suite *s = suite_create("shutdown");
	TCase *tc;

	tc = wp_test_tcase("cycles");
	/* About 0.1 s a cycle under sanitizers, at worst. */
	tcase_set_timeout(tc, WP_TEST_TIMEOUT_S + (double)env_cycles() / 10);
	wp_test_add(tc,
		    destroy_mid_flight_exits_each_handle_once_leaking_nothing);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("requests");
	wp_test_add(tc,
		    freed_handle_with_a_timer_set_twice_lets_destroy_return);
	wp_test_add(tc,
		a_stop_before_start_serves_exits_that_end_other_workers_handles);
	wp_test_add(tc, a_handle_freed_while_the_stop_serves_its_close_is_safe);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return wp_test_run(shutdown_suite());
}
