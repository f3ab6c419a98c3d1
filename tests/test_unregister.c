/* SPDX-License-Identifier: MIT */
/*
 * Unregistering: immediate and graceful, from any thread or callback, and
 * freeing a handle while other threads are still adding to it.
 */
#include <sched.h>

#include "harness.h"

/*
 * A handle whose first event holds its worker until the gate opens, and
 * which records what its callbacks saw.
 */
struct held {
	struct wp_test_gate gate;
	wp_handle *h;
	atomic_int entered;
	atomic_int calls;
	atomic_int finished;
	atomic_int exits;
	atomic_int exit_err;
	atomic_int calls_at_exit;
	atomic_int finished_at_exit;
};

static int hold_first(wp_ctx *ctx, void *event, void *arg)
{
	struct held *d = arg;

	(void)ctx;
	(void)event;
	if (atomic_fetch_add(&d->entered, 1) == 0)
		wp_test_gate_wait(&d->gate);
	atomic_fetch_add(&d->calls, 1);
	atomic_fetch_add(&d->finished, 1);
	return 0;
}

static void held_exit(int err, void *arg)
{
	struct held *d = arg;

	atomic_store(&d->calls_at_exit, atomic_load(&d->calls));
	atomic_store(&d->finished_at_exit, atomic_load(&d->finished));
	atomic_store(&d->exit_err, err);
	atomic_fetch_add(&d->exits, 1);
}

static void held_init(wp_pool *pool, struct held *d, wp_event_fn fn)
{
	*d = (struct held){ .exit_err = 1 };
	wp_test_gate_init(&d->gate);
	ck_assert_int_eq(wp_pool_register(pool, fn, d, &d->h), 0);
	ck_assert_int_eq(wp_handle_on_exit(d->h, held_exit, d), 0);
}

/* Queues the holding event and n more, and waits for the first to run. */
static void held_start(struct held *d, int n)
{
	int k;

	ck_assert_int_eq(wp_handle_add_event(d->h, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&d->entered, 1));
	for (k = 0; k < n; k++)
		ck_assert_int_eq(wp_handle_add_event(d->h, NULL, NULL), 0);
}

/*
 * Waits until the handle refuses events, which it does from the moment
 * an unregister begins. Returns how many probes it accepted before.
 */
static int wait_until_closing(wp_handle *h)
{
	uint64_t end = wp_test_now_ns() + WP_TEST_WAIT_MS * 1000000ull;
	int accepted = 0, rc;

	while ((rc = wp_handle_try_add_event(h, NULL)) != -ECANCELED) {
		ck_assert_msg(rc == 0 || rc == -EAGAIN, "try_add: %d", rc);
		ck_assert(wp_test_now_ns() < end);
		if (rc == 0)
			accepted++;
		else
			wp_test_sleep_ms(1);
	}
	return accepted;
}

struct unregisterer {
	wp_handle *h;
	struct held *d;
	wp_ctx *ctx;
	atomic_int rc;
	atomic_int exits_on_return;
	atomic_int finished_on_return;
};

static void *unregister_in_thread(void *arg)
{
	struct unregisterer *u = arg;

	wp_handle_unregister(u->h);
	atomic_store(&u->exits_on_return, atomic_load(&u->d->exits));
	atomic_store(&u->finished_on_return, atomic_load(&u->d->finished));
	return NULL;
}

static void *graceful_in_thread(void *arg)
{
	struct unregisterer *u = arg;

	atomic_store(&u->rc, wp_handle_unregister_graceful(u->h, u->ctx));
	atomic_store(&u->exits_on_return, atomic_load(&u->d->exits));
	atomic_store(&u->finished_on_return, atomic_load(&u->d->finished));
	return NULL;
}

/* Immediate unregister. */

START_TEST(unregister_waits_for_the_running_callback)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct held d;
	struct unregisterer u = { .d = &d };
	pthread_t t;

	held_init(pool, &d, hold_first);
	held_start(&d, 0);
	u.h = d.h;
	wp_test_thread(&t, unregister_in_thread, &u);
	wait_until_closing(d.h);
	wp_test_sleep_ms(20);
	ck_assert_int_eq(atomic_load(&d.exits), 0);

	wp_test_gate_open(&d.gate);
	wp_test_join(t);
	ck_assert_int_eq(atomic_load(&u.finished_on_return), 1);
	ck_assert_int_eq(atomic_load(&u.exits_on_return), 1);
	ck_assert_int_eq(atomic_load(&d.finished_at_exit), 1);
	ck_assert_int_eq(atomic_load(&d.exit_err), -ECANCELED);
	ck_assert_int_eq(wp_handle_error(d.h), -ECANCELED);
	ck_assert(wp_handle_exited(d.h));

	wp_pool_destroy(pool);
	wp_test_gate_destroy(&d.gate);
}
END_TEST

START_TEST(unregister_drops_queued_events)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct held d;
	struct unregisterer u = { .d = &d };
	pthread_t t;

	held_init(pool, &d, hold_first);
	held_start(&d, 5);
	u.h = d.h;
	wp_test_thread(&t, unregister_in_thread, &u);
	wait_until_closing(d.h);

	wp_test_gate_open(&d.gate);
	wp_test_join(t);
	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&d.calls), 1);
	ck_assert_int_eq(atomic_load(&d.exits), 1);
	ck_assert_int_eq(atomic_load(&d.exit_err), -ECANCELED);
	wp_test_gate_destroy(&d.gate);
}
END_TEST

START_TEST(unregister_is_idempotent)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct held d;

	held_init(pool, &d, hold_first);
	wp_handle_unregister(d.h);
	wp_handle_unregister(d.h);
	ck_assert_int_eq(atomic_load(&d.exits), 1);
	wp_handle_unregister(d.h);

	ck_assert_int_eq(wp_handle_error(d.h), -ECANCELED);
	ck_assert_int_eq(wp_handle_add_event(d.h, NULL, NULL), -ECANCELED);
	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&d.exits), 1);
	ck_assert_int_eq(atomic_load(&d.exit_err), -ECANCELED);
	ck_assert_int_eq(atomic_load(&d.calls), 0);
	wp_test_gate_destroy(&d.gate);
}
END_TEST

START_TEST(concurrent_unregisters_all_return_after_the_exit)
{
	enum { N = 4 };
	wp_pool *pool = wp_test_pool(_i, 2);
	struct unregisterer u[N];
	pthread_t t[N];
	struct held d;
	int k;

	held_init(pool, &d, hold_first);
	held_start(&d, 3);
	for (k = 0; k < N; k++) {
		u[k] = (struct unregisterer){ .h = d.h, .d = &d };
		wp_test_thread(&t[k], unregister_in_thread, &u[k]);
	}
	wait_until_closing(d.h);

	wp_test_gate_open(&d.gate);
	for (k = 0; k < N; k++)
		wp_test_join(t[k]);
	for (k = 0; k < N; k++) {
		ck_assert_int_eq(atomic_load(&u[k].exits_on_return), 1);
		ck_assert_int_eq(atomic_load(&u[k].finished_on_return), 1);
	}
	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&d.exits), 1);
	ck_assert_int_eq(atomic_load(&d.calls), 1);
	wp_test_gate_destroy(&d.gate);
}
END_TEST

/* Unregistering and freeing from inside callbacks. */

struct inside {
	struct wp_test_gate gate;
	wp_handle *h;
	wp_handle *victim;
	atomic_int calls;
	atomic_int returned;
	atomic_int exits_seen_inside;
	atomic_int handler_done;
	atomic_int done_seen_at_exit;
	atomic_int exits;
	atomic_int exit_err;
	atomic_int victim_exits;
	atomic_int victim_calls;
	atomic_int victim_err;
	atomic_int graceful_rc;
	_Atomic unsigned long worker;
	_Atomic unsigned long victim_exit_thread;
};

static void inside_init(struct inside *s)
{
	*s = (struct inside){ .exit_err = 1, .victim_err = 1 };
	wp_test_gate_init(&s->gate);
}

static int unregister_self(wp_ctx *ctx, void *event, void *arg)
{
	struct inside *s = arg;

	(void)ctx;
	(void)event;
	if (atomic_fetch_add(&s->calls, 1) > 0)
		return 0;
	wp_test_gate_wait(&s->gate);
	wp_handle_unregister(s->h);
	atomic_store(&s->exits_seen_inside, atomic_load(&s->exits));
	atomic_store(&s->returned, 1);
	atomic_store(&s->handler_done, 1);
	return 0;
}

static void inside_exit(int err, void *arg)
{
	struct inside *s = arg;

	atomic_store(&s->done_seen_at_exit, atomic_load(&s->handler_done));
	atomic_store(&s->exit_err, err);
	atomic_fetch_add(&s->exits, 1);
}

START_TEST(unregister_from_its_own_handler_returns_at_once)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct inside s;
	int k;

	inside_init(&s);
	ck_assert_int_eq(wp_pool_register(pool, unregister_self, &s, &s.h), 0);
	ck_assert_int_eq(wp_handle_on_exit(s.h, inside_exit, &s), 0);
	for (k = 0; k < 4; k++)
		ck_assert_int_eq(wp_handle_add_event(s.h, NULL, NULL), 0);
	wp_test_gate_open(&s.gate);
	ck_assert(wp_test_wait_atleast(&s.exits, 1));

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&s.returned), 1);
	ck_assert_int_eq(atomic_load(&s.exits_seen_inside), 0);
	ck_assert_int_eq(atomic_load(&s.done_seen_at_exit), 1);
	ck_assert_int_eq(atomic_load(&s.calls), 1);
	ck_assert_int_eq(atomic_load(&s.exits), 1);
	ck_assert_int_eq(atomic_load(&s.exit_err), -ECANCELED);
	wp_test_gate_destroy(&s.gate);
}
END_TEST

static int fail_once(wp_ctx *ctx, void *event, void *arg)
{
	(void)ctx;
	(void)event;
	atomic_fetch_add(&((struct inside *)arg)->calls, 1);
	return 5;
}

static void unregister_in_exit(int err, void *arg)
{
	struct inside *s = arg;

	wp_handle_unregister(s->h);
	atomic_store(&s->returned, 1);
	atomic_store(&s->exit_err, err);
	atomic_fetch_add(&s->exits, 1);
}

START_TEST(unregister_from_its_own_exit_callback_returns_at_once)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct inside s;

	inside_init(&s);
	ck_assert_int_eq(wp_pool_register(pool, fail_once, &s, &s.h), 0);
	ck_assert_int_eq(wp_handle_on_exit(s.h, unregister_in_exit, &s), 0);
	ck_assert_int_eq(wp_handle_add_event(s.h, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&s.exits, 1));
	ck_assert_int_eq(wp_handle_error(s.h), 5);

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&s.returned), 1);
	ck_assert_int_eq(atomic_load(&s.exits), 1);
	ck_assert_int_eq(atomic_load(&s.exit_err), 5);
	wp_test_gate_destroy(&s.gate);
}
END_TEST

static void end_again_in_exit(int err, void *arg)
{
	struct inside *s = arg;

	wp_handle_unregister(s->h);
	atomic_store(&s->graceful_rc,
		     wp_handle_unregister_graceful(s->h, NULL));
	atomic_store(&s->returned, 1);
	atomic_store(&s->exit_err, err);
	atomic_fetch_add(&s->exits, 1);
}

/*
 * Before the pool starts, the exit callback runs on the unregistering
 * thread; ending the handle again from inside it returns at once there too.
 */
START_TEST(ending_again_from_an_exit_callback_before_start_returns)
{
	wp_pool *pool = wp_test_pool_opts(_i, 1, 0, false);
	struct inside s;

	inside_init(&s);
	ck_assert_int_eq(wp_pool_register(pool, fail_once, &s, &s.h), 0);
	ck_assert_int_eq(wp_handle_on_exit(s.h, end_again_in_exit, &s), 0);
	wp_handle_unregister(s.h);
	ck_assert_int_eq(atomic_load(&s.returned), 1);
	ck_assert_int_eq(atomic_load(&s.graceful_rc), -ECANCELED);
	ck_assert_int_eq(atomic_load(&s.exits), 1);
	ck_assert_int_eq(atomic_load(&s.exit_err), -ECANCELED);

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&s.exits), 1);
	ck_assert_int_eq(atomic_load(&s.calls), 0);
	wp_test_gate_destroy(&s.gate);
}
END_TEST

static int unregister_victim(wp_ctx *ctx, void *event, void *arg)
{
	struct inside *s = arg;

	(void)ctx;
	(void)event;
	atomic_store(&s->worker, (unsigned long)pthread_self());
	wp_test_gate_wait(&s->gate);
	wp_handle_unregister(s->victim);
	atomic_store(&s->exits_seen_inside, atomic_load(&s->victim_exits));
	atomic_store(&s->returned, 1);
	return 0;
}

static int count_victim(wp_ctx *ctx, void *event, void *arg)
{
	(void)ctx;
	(void)event;
	atomic_fetch_add(&((struct inside *)arg)->victim_calls, 1);
	return 0;
}

static void victim_exit(int err, void *arg)
{
	struct inside *s = arg;

	atomic_store(&s->victim_exit_thread, (unsigned long)pthread_self());
	atomic_store(&s->victim_err, err);
	atomic_fetch_add(&s->victim_exits, 1);
}

START_TEST(unregister_of_another_handle_on_the_same_worker_completes)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct inside s;
	int k;

	inside_init(&s);
	ck_assert_int_eq(wp_pool_register(pool, unregister_victim, &s, &s.h),
			 0);
	ck_assert_int_eq(wp_pool_register(pool, count_victim, &s, &s.victim),
			 0);
	ck_assert_int_eq(wp_handle_on_exit(s.victim, victim_exit, &s), 0);
	ck_assert_int_eq(wp_handle_add_event(s.h, NULL, NULL), 0);
	for (k = 0; k < 3; k++)
		ck_assert_int_eq(wp_handle_add_event(s.victim, NULL, NULL), 0);
	wp_test_gate_open(&s.gate);
	ck_assert(wp_test_wait_atleast(&s.returned, 1));

	ck_assert_int_eq(atomic_load(&s.exits_seen_inside), 1);
	ck_assert_int_eq(atomic_load(&s.victim_calls), 0);
	ck_assert_int_eq(atomic_load(&s.victim_err), -ECANCELED);
	ck_assert(atomic_load(&s.victim_exit_thread) ==
		  atomic_load(&s.worker));
	ck_assert_int_eq(wp_handle_error(s.victim), -ECANCELED);
	ck_assert_int_eq(wp_handle_error(s.h), 0);
	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&s.victim_exits), 1);
	wp_test_gate_destroy(&s.gate);
}
END_TEST

static int free_self(wp_ctx *ctx, void *event, void *arg)
{
	struct inside *s = arg;

	(void)ctx;
	(void)event;
	if (atomic_fetch_add(&s->calls, 1) > 0)
		return 0;
	wp_test_gate_wait(&s->gate);
	wp_handle_free(s->h);
	atomic_store(&s->returned, 1);
	atomic_store(&s->handler_done, 1);
	return 0;
}

START_TEST(free_from_its_own_handler_is_safe)
{
	int before = wp_test_count_fds();
	wp_pool *pool = wp_test_pool(_i, 1);
	struct inside s;
	int k;

	inside_init(&s);
	ck_assert_int_eq(wp_pool_register(pool, free_self, &s, &s.h), 0);
	ck_assert_int_eq(wp_handle_on_exit(s.h, inside_exit, &s), 0);
	ck_assert_int_ge(wp_handle_error_fd(s.h), 0);
	for (k = 0; k < 3; k++)
		ck_assert_int_eq(wp_handle_add_event(s.h, NULL, NULL), 0);
	wp_test_gate_open(&s.gate);
	ck_assert(wp_test_wait_atleast(&s.exits, 1));

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&s.returned), 1);
	ck_assert_int_eq(atomic_load(&s.done_seen_at_exit), 1);
	ck_assert_int_eq(atomic_load(&s.calls), 1);
	ck_assert_int_eq(atomic_load(&s.exits), 1);
	ck_assert_int_eq(atomic_load(&s.exit_err), -ECANCELED);
	ck_assert_int_eq(wp_test_count_fds(), before);
	wp_test_gate_destroy(&s.gate);
}
END_TEST

static void free_in_exit(int err, void *arg)
{
	struct inside *s = arg;

	wp_handle_free(s->h);
	atomic_store(&s->returned, 1);
	atomic_store(&s->exit_err, err);
	atomic_fetch_add(&s->exits, 1);
}

START_TEST(free_from_its_own_exit_callback_is_safe)
{
	int before = wp_test_count_fds();
	wp_pool *pool = wp_test_pool(_i, 1);
	struct inside s;

	inside_init(&s);
	ck_assert_int_eq(wp_pool_register(pool, fail_once, &s, &s.h), 0);
	ck_assert_int_eq(wp_handle_on_exit(s.h, free_in_exit, &s), 0);
	ck_assert_int_ge(wp_handle_error_fd(s.h), 0);
	ck_assert_int_eq(wp_handle_add_event(s.h, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&s.exits, 1));

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&s.returned), 1);
	ck_assert_int_eq(atomic_load(&s.exits), 1);
	ck_assert_int_eq(atomic_load(&s.exit_err), 5);
	ck_assert_int_eq(wp_test_count_fds(), before);
	wp_test_gate_destroy(&s.gate);
}
END_TEST

/* Graceful unregister. */

START_TEST(graceful_runs_the_queue_refuses_new_events_exits_zero)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct held d;
	struct unregisterer u = { .d = &d, .rc = 1 };
	pthread_t t;
	int probes;

	held_init(pool, &d, hold_first);
	held_start(&d, 5);
	u.h = d.h;
	wp_test_thread(&t, graceful_in_thread, &u);
	probes = wait_until_closing(d.h);
	ck_assert_int_eq(wp_handle_add_event(d.h, NULL, NULL), -ECANCELED);
	ck_assert(!wp_handle_exited(d.h));

	wp_test_gate_open(&d.gate);
	wp_test_join(t);
	ck_assert_int_eq(atomic_load(&u.rc), 0);
	ck_assert_int_eq(atomic_load(&u.exits_on_return), 1);
	ck_assert_int_eq(atomic_load(&d.calls_at_exit), 6 + probes);
	ck_assert_int_eq(atomic_load(&d.exit_err), 0);
	ck_assert_int_eq(wp_handle_error(d.h), 0);
	ck_assert(wp_handle_exited(d.h));

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&d.calls), 6 + probes);
	ck_assert_int_eq(atomic_load(&d.exits), 1);
	wp_test_gate_destroy(&d.gate);
}
END_TEST

struct graceful_self {
	wp_handle *h;
	atomic_int calls;
	atomic_int rc;
	atomic_int try_rc;
	atomic_int exits;
	atomic_int exit_err;
	atomic_int calls_at_exit;
};

static int graceful_self(wp_ctx *ctx, void *event, void *arg)
{
	struct graceful_self *g = arg;

	(void)ctx;
	(void)event;
	if (atomic_fetch_add(&g->calls, 1) > 0)
		return 0;
	atomic_store(&g->rc, wp_handle_unregister_graceful(g->h, NULL));
	atomic_store(&g->try_rc, wp_handle_try_add_event(g->h, NULL));
	return 0;
}

static void graceful_self_exit(int err, void *arg)
{
	struct graceful_self *g = arg;

	atomic_store(&g->calls_at_exit, atomic_load(&g->calls));
	atomic_store(&g->exit_err, err);
	atomic_fetch_add(&g->exits, 1);
}

START_TEST(graceful_from_its_own_handler_returns_at_once_then_drains)
{
	wp_pool *pool = wp_test_pool_opts(_i, 1, 0, false);
	struct graceful_self g = { .rc = 1, .try_rc = 1, .exit_err = 1 };
	int k;

	ck_assert_int_eq(wp_pool_register(pool, graceful_self, &g, &g.h), 0);
	ck_assert_int_eq(wp_handle_on_exit(g.h, graceful_self_exit, &g), 0);
	for (k = 0; k < 4; k++)
		ck_assert_int_eq(wp_handle_add_event(g.h, NULL, NULL), 0);
	ck_assert_int_eq(wp_pool_start(pool), 0);
	ck_assert(wp_test_wait_atleast(&g.exits, 1));

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&g.rc), 0);
	ck_assert_int_eq(atomic_load(&g.try_rc), -ECANCELED);
	ck_assert_int_eq(atomic_load(&g.calls_at_exit), 4);
	ck_assert_int_eq(atomic_load(&g.calls), 4);
	ck_assert_int_eq(atomic_load(&g.exits), 1);
	ck_assert_int_eq(atomic_load(&g.exit_err), 0);
}
END_TEST

/*
 * Keeps the handler held until the graceful unregister has given up on
 * its ctx and exited the handle, so that the queue cannot drain first.
 * The wait is bounded, so a library that reports the exit code only
 * later makes the test slow, not stuck.
 */
struct opener {
	struct wp_test_gate *gate;
	wp_handle *h;
	wp_ctx *ctx;
};

static void *open_once_given_up(void *arg)
{
	struct opener *o = arg;
	uint64_t end;

	wp_test_wait_ctx(o->ctx);
	end = wp_test_now_ns() + WP_TEST_WAIT_MS * 1000000ull;
	while (wp_handle_error(o->h) == 0 && wp_test_now_ns() < end)
		wp_test_sleep_ms(1);
	wp_test_gate_open(o->gate);
	return NULL;
}

static void *cancel_soon(void *arg)
{
	wp_test_sleep_ms(20);
	wp_ctx_cancel(arg);
	return NULL;
}

/* A graceful unregister whose ctx times out, or is cancelled, first. */
static void graceful_cut_short(int i, bool cancel)
{
	wp_pool *pool = wp_test_pool(i, 1);
	struct opener o = { 0 };
	pthread_t t, c;
	struct held d;
	int expect;

	held_init(pool, &d, hold_first);
	held_start(&d, 3);
	if (cancel) {
		ck_assert_int_eq(wp_ctx_create(&o.ctx, NULL), 0);
		wp_test_thread(&c, cancel_soon, o.ctx);
	} else {
		o.ctx = wp_test_ctx_ms(NULL, 30);
	}
	o.gate = &d.gate;
	o.h = d.h;
	wp_test_thread(&t, open_once_given_up, &o);

	expect = cancel ? -ECANCELED : -ETIMEDOUT;
	ck_assert_int_eq(wp_handle_unregister_graceful(d.h, o.ctx), expect);
	ck_assert_int_eq(atomic_load(&d.exits), 1);
	ck_assert_int_eq(atomic_load(&d.exit_err), -ECANCELED);
	ck_assert_int_eq(wp_handle_error(d.h), -ECANCELED);
	ck_assert(wp_handle_exited(d.h));

	wp_test_join(t);
	if (cancel)
		wp_test_join(c);
	wp_ctx_release(o.ctx);
	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&d.exits), 1);
	wp_test_gate_destroy(&d.gate);
}

START_TEST(graceful_timing_out_unregisters_and_returns_etimedout)
{
	graceful_cut_short(_i, false);
}
END_TEST

START_TEST(graceful_cancelled_unregisters_and_returns_ecanceled)
{
	graceful_cut_short(_i, true);
}
END_TEST

START_TEST(graceful_after_unregister_returns_ecanceled)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct held d;

	held_init(pool, &d, hold_first);
	wp_handle_unregister(d.h);
	ck_assert_int_eq(wp_handle_unregister_graceful(d.h, NULL), -ECANCELED);
	ck_assert_int_eq(wp_handle_error(d.h), -ECANCELED);

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&d.exits), 1);
	ck_assert_int_eq(atomic_load(&d.exit_err), -ECANCELED);
	wp_test_gate_destroy(&d.gate);
}
END_TEST

static int fail_at_once(wp_ctx *ctx, void *event, void *arg)
{
	(void)ctx;
	(void)event;
	atomic_fetch_add(&((struct held *)arg)->calls, 1);
	return -EIO;
}

/* An exit callback that holds the worker until the gate opens. */
static void gated_exit(int err, void *arg)
{
	struct held *d = arg;

	atomic_store(&d->entered, 1);
	wp_test_gate_wait(&d->gate);
	held_exit(err, d);
}

START_TEST(graceful_after_an_error_waits_for_the_exit_callback)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct unregisterer u;
	struct held d;
	pthread_t t;

	held_init(pool, &d, fail_at_once);
	ck_assert_int_eq(wp_handle_on_exit(d.h, gated_exit, &d), 0);
	ck_assert_int_eq(wp_handle_add_event(d.h, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&d.entered, 1));
	ck_assert_int_eq(wp_handle_error(d.h), -EIO);

	/* The handle has exited, its exit callback has not returned. */
	u = (struct unregisterer){ .h = d.h, .d = &d, .rc = 1 };
	wp_test_thread(&t, graceful_in_thread, &u);
	wp_test_sleep_ms(20);
	wp_test_gate_open(&d.gate);
	wp_test_join(t);
	ck_assert_int_eq(atomic_load(&u.rc), -ECANCELED);
	ck_assert_int_eq(atomic_load(&u.exits_on_return), 1);

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&d.exits), 1);
	ck_assert_int_eq(atomic_load(&d.exit_err), -EIO);
	wp_test_gate_destroy(&d.gate);
}
END_TEST

/* Every way of ending a handle at once, from several threads. */

/* What a racer does; the last kind stops the pool. */
enum {
	RACE_UNREGISTER,
	RACE_GRACEFUL,
	RACE_DEADLINE,		/* graceful, with a 1 ms deadline */
	RACE_STOP,
	RACE_KINDS
};

enum { RACE_ROUNDS = 200, STOP_ROUNDS = 50 };

struct race {
	wp_pool *pool;
	wp_handle *h;
	atomic_int go;
	atomic_int calls;
	atomic_int exits;
	int fail_at;		/* the failing call; past the last: none */
};

struct racer {
	struct race *r;
	int kind;
	int rc;
	int exits_on_return;
};

static int fail_at_call(wp_ctx *ctx, void *event, void *arg)
{
	struct race *r = arg;

	(void)ctx;
	(void)event;
	return atomic_fetch_add(&r->calls, 1) + 1 == r->fail_at ? -EIO : 0;
}

/* Slow enough that a call returning early would be caught before it. */
static void race_exit(int err, void *arg)
{
	struct race *r = arg;

	(void)err;
	sched_yield();
	atomic_fetch_add(&r->exits, 1);
}

static void *race_one(void *arg)
{
	struct racer *x = arg;
	wp_ctx *ctx = NULL;

	while (!atomic_load(&x->r->go))
		sched_yield();
	switch (x->kind) {
	case RACE_UNREGISTER:
		wp_handle_unregister(x->r->h);
		x->rc = 0;
		break;
	case RACE_GRACEFUL:
		x->rc = wp_handle_unregister_graceful(x->r->h, NULL);
		break;
	case RACE_STOP:
		x->rc = wp_pool_stop(x->r->pool);
		break;
	default:
		/* A failure here shows as an unexpected return code. */
		x->rc = wp_ctx_with_timeout(&ctx, NULL, 1000000);
		if (!x->rc)
			x->rc = wp_handle_unregister_graceful(x->r->h, ctx);
		wp_ctx_release(ctx);
		break;
	}
	x->exits_on_return = atomic_load(&x->r->exits);
	return NULL;
}

/* A handle on r->pool whose fail_at-th event fails, with events queued. */
static void race_setup(struct race *r, unsigned *seed)
{
	int k, rc;

	r->fail_at = 1 + rand_r(seed) % 16;
	ck_assert_int_eq(wp_pool_register(r->pool, fail_at_call, r, &r->h),
			 0);
	ck_assert_int_eq(wp_handle_on_exit(r->h, race_exit, r), 0);
	for (k = 0; k < 8; k++) {
		/* Refused once an event has failed. */
		rc = wp_handle_add_event(r->h, NULL, NULL);
		ck_assert(rc == 0 || rc == -ECANCELED);
	}
}

/* Starts the n racers together and checks what each saw on return. */
static void race_run(struct race *r, struct racer *x, int n, int round)
{
	pthread_t t[RACE_KINDS];
	int k;

	for (k = 0; k < n; k++) {
		x[k].r = r;
		wp_test_thread(&t[k], race_one, &x[k]);
	}
	atomic_store(&r->go, 1);
	for (k = 0; k < n; k++)
		wp_test_join(t[k]);

	for (k = 0; k < n; k++) {
		if (x[k].kind == RACE_STOP) {
			ck_assert_int_eq(x[k].rc, 0);
			continue;
		}
		ck_assert_msg(x[k].exits_on_return == 1,
			      "round %d: kind %d returned with %d exit "
			      "callbacks run", round, x[k].kind,
			      x[k].exits_on_return);
		ck_assert_msg(x[k].rc == 0 || x[k].rc == -ECANCELED ||
			      (x[k].kind == RACE_DEADLINE &&
			       x[k].rc == -ETIMEDOUT),
			      "round %d: kind %d returned %d", round,
			      x[k].kind, x[k].rc);
		/* A graceful unregister returns 0 only when it won. */
		if (x[k].kind != RACE_UNREGISTER && x[k].rc == 0)
			ck_assert_int_eq(wp_handle_error(r->h), 0);
	}
	ck_assert_int_eq(atomic_load(&r->exits), 1);
}

START_TEST(racing_exits_all_return_after_the_exit_callback)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct racer x[RACE_STOP];
	unsigned seed = 1;
	struct race r;
	int round, k;

	for (round = 0; round < RACE_ROUNDS; round++) {
		r = (struct race){ .pool = pool };
		race_setup(&r, &seed);
		for (k = 0; k < RACE_STOP; k++)
			x[k] = (struct racer){
				.kind = (round + k) % RACE_STOP
			};
		race_run(&r, x, RACE_STOP, round);
		wp_handle_free(r.h);
	}
	wp_pool_destroy(pool);
}
END_TEST

/* The same, with the pool stopping under them. */
START_TEST(racing_exits_and_a_stop_all_return_after_the_exit_callback)
{
	struct racer x[RACE_KINDS];
	unsigned seed = 2;
	struct race r;
	int round, k;

	for (round = 0; round < STOP_ROUNDS; round++) {
		r = (struct race){ .pool = wp_test_pool(_i, 2) };
		race_setup(&r, &seed);
		for (k = 0; k < RACE_KINDS; k++)
			x[k] = (struct racer){ .kind = k };
		race_run(&r, x, RACE_KINDS, round);
		wp_pool_destroy(r.pool);
	}
}
END_TEST

/* Adding while another thread ends the handle. */

enum { ADDERS = 4 };

struct adders {
	wp_handle *h;
	atomic_int started;
	atomic_int finished;
	atomic_int unexpected;
	atomic_int added;
	atomic_int calls;
	atomic_int exits;
};

static int count_call(wp_ctx *ctx, void *event, void *arg)
{
	(void)ctx;
	(void)event;
	atomic_fetch_add(&((struct adders *)arg)->calls, 1);
	return 0;
}

static void count_exit(int err, void *arg)
{
	(void)err;
	atomic_fetch_add(&((struct adders *)arg)->exits, 1);
}

/* One add in one of three ways; returns 0 or the error that ends it. */
static int add_one_way(struct adders *a, int way)
{
	void *events[3] = { NULL, NULL, NULL };
	int rc;

	switch (way % 3) {
	case 0:
		return wp_handle_add_event(a->h, NULL, NULL);
	case 1:
		rc = wp_handle_try_add_event(a->h, NULL);
		if (rc == -EAGAIN)
			sched_yield();
		return rc == -EAGAIN ? 0 : rc;
	default:
		rc = wp_handle_add_events(a->h, NULL, events, 3);
		return rc >= 0 ? 0 : rc;
	}
}

/* Adds until the handle refuses with -ECANCELED, then never again. */
static void *add_until_refused(void *arg)
{
	struct adders *a = arg;
	int way = atomic_fetch_add(&a->started, 1), rc, n = 0;

	while ((rc = add_one_way(a, way)) != -ECANCELED) {
		if (rc != 0)
			atomic_fetch_add(&a->unexpected, 1);
		if (++n == 50)
			atomic_fetch_add(&a->added, 1);
	}
	atomic_fetch_add(&a->finished, 1);
	return NULL;
}

START_TEST(adders_racing_unregister_all_end_with_ecanceled)
{
	wp_pool *pool = wp_test_pool_opts(_i, 2, 8, true);
	struct adders a = { 0 };
	pthread_t t[ADDERS];
	int k, calls;

	ck_assert_int_eq(wp_pool_register(pool, count_call, &a, &a.h), 0);
	ck_assert_int_eq(wp_handle_on_exit(a.h, count_exit, &a), 0);
	for (k = 0; k < ADDERS; k++)
		wp_test_thread(&t[k], add_until_refused, &a);
	ck_assert(wp_test_wait_atleast(&a.added, ADDERS));

	wp_handle_unregister(a.h);
	calls = atomic_load(&a.calls);
	ck_assert_int_eq(atomic_load(&a.exits), 1);
	for (k = 0; k < ADDERS; k++)
		wp_test_join(t[k]);
	wp_test_sleep_ms(10);

	ck_assert_int_eq(atomic_load(&a.calls), calls);
	ck_assert_int_eq(atomic_load(&a.finished), ADDERS);
	ck_assert_int_eq(atomic_load(&a.unexpected), 0);
	wp_handle_free(a.h);
	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&a.exits), 1);
}
END_TEST

/*
 * Frees the handle while adders are blocked inside wp_handle_add_event()
 * on its full queue. Free cannot return before the held handler does,
 * and the handler is released only once every adder has been refused, so
 * no call on the handle starts after the free returns.
 */
struct freeing {
	struct adders a;
	struct held d;
	atomic_int timed_out;
};

static int hold_and_count(wp_ctx *ctx, void *event, void *arg)
{
	struct freeing *f = arg;

	(void)ctx;
	(void)event;
	if (atomic_fetch_add(&f->d.entered, 1) == 0)
		wp_test_gate_wait(&f->d.gate);
	atomic_fetch_add(&f->a.calls, 1);
	return 0;
}

static void freeing_exit(int err, void *arg)
{
	struct freeing *f = arg;

	atomic_store(&f->d.exit_err, err);
	atomic_fetch_add(&f->a.exits, 1);
}

static void *block_in_add(void *arg)
{
	struct adders *a = arg;
	int rc;

	atomic_fetch_add(&a->started, 1);
	while ((rc = wp_handle_add_event(a->h, NULL, NULL)) != -ECANCELED)
		atomic_fetch_add(&a->unexpected, 1);
	atomic_fetch_add(&a->finished, 1);
	return NULL;
}

static void *open_once_adders_are_refused(void *arg)
{
	struct freeing *f = arg;

	if (!wp_test_wait_atleast(&f->a.finished, ADDERS))
		atomic_store(&f->timed_out, 1);
	wp_test_gate_open(&f->d.gate);
	return NULL;
}

START_TEST(free_while_adds_are_in_flight_is_safe)
{
	wp_pool *pool = wp_test_pool_opts(_i, 1, 2, true);
	pthread_t t[ADDERS], opener;
	struct freeing f;
	int k;

	memset(&f, 0, sizeof(f));
	wp_test_gate_init(&f.d.gate);
	ck_assert_int_eq(wp_pool_register(pool, hold_and_count, &f, &f.a.h),
			 0);
	ck_assert_int_eq(wp_handle_on_exit(f.a.h, freeing_exit, &f), 0);
	ck_assert_int_eq(wp_handle_add_event(f.a.h, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&f.d.entered, 1));
	while (wp_handle_try_add_event(f.a.h, NULL) == 0)
		;
	for (k = 0; k < ADDERS; k++)
		wp_test_thread(&t[k], block_in_add, &f.a);
	ck_assert(wp_test_wait_atleast(&f.a.started, ADDERS));
	wp_test_sleep_ms(10);
	wp_test_thread(&opener, open_once_adders_are_refused, &f);

	wp_handle_free(f.a.h);
	wp_test_join(opener);
	for (k = 0; k < ADDERS; k++)
		wp_test_join(t[k]);
	ck_assert_int_eq(atomic_load(&f.timed_out), 0);
	ck_assert_int_eq(atomic_load(&f.a.finished), ADDERS);
	ck_assert_int_eq(atomic_load(&f.a.unexpected), 0);
	ck_assert_int_eq(atomic_load(&f.a.calls), 1);
	ck_assert_int_eq(atomic_load(&f.a.exits), 1);
	ck_assert_int_eq(atomic_load(&f.d.exit_err), -ECANCELED);

	wp_pool_destroy(pool);
	wp_test_gate_destroy(&f.d.gate);
}
END_TEST

static Suite *unregister_suite(void)
{
	Suite *s = suite_create("unregister");
	TCase *tc;

	tc = wp_test_tcase("immediate");
	wp_test_add(tc, unregister_waits_for_the_running_callback);
	wp_test_add(tc, unregister_drops_queued_events);
	wp_test_add(tc, unregister_is_idempotent);
	wp_test_add(tc, concurrent_unregisters_all_return_after_the_exit);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("from callbacks");
	wp_test_add(tc, unregister_from_its_own_handler_returns_at_once);
	wp_test_add(tc, unregister_from_its_own_exit_callback_returns_at_once);
	wp_test_add(tc,
		    ending_again_from_an_exit_callback_before_start_returns);
	wp_test_add(tc,
		    unregister_of_another_handle_on_the_same_worker_completes);
	wp_test_add(tc, free_from_its_own_handler_is_safe);
	wp_test_add(tc, free_from_its_own_exit_callback_is_safe);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("graceful");
	wp_test_add(tc, graceful_runs_the_queue_refuses_new_events_exits_zero);
	wp_test_add(tc,
		    graceful_from_its_own_handler_returns_at_once_then_drains);
	wp_test_add(tc, graceful_timing_out_unregisters_and_returns_etimedout);
	wp_test_add(tc, graceful_cancelled_unregisters_and_returns_ecanceled);
	wp_test_add(tc, graceful_after_unregister_returns_ecanceled);
	wp_test_add(tc, graceful_after_an_error_waits_for_the_exit_callback);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("races");
	wp_test_add(tc, racing_exits_all_return_after_the_exit_callback);
	wp_test_add(tc,
		    racing_exits_and_a_stop_all_return_after_the_exit_callback);
	wp_test_add(tc, adders_racing_unregister_all_end_with_ecanceled);
	wp_test_add(tc, free_while_adds_are_in_flight_is_safe);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	return wp_test_run(unregister_suite());
}
