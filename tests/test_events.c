/* SPDX-License-Identifier: MIT */
/*
 * Events: where handlers run, in which order, with which context, and how
 * a bounded queue pushes back on whoever adds.
 */
#include <sched.h>

#include "harness.h"

/* A handle's callbacks all run on one worker, one at a time. */

struct bound {
	struct wp_test_bound one;
	atomic_int calls;
	atomic_int exits;
};

static int bound_event(wp_ctx *ctx, void *event, void *arg)
{
	struct bound *b = arg;

	(void)ctx;
	(void)event;
	wp_test_bound_enter(&b->one);
	sched_yield();
	atomic_fetch_add(&b->calls, 1);
	wp_test_bound_leave(&b->one);
	return 0;
}

static void bound_exit(int err, void *arg)
{
	struct bound *b = arg;

	(void)err;
	wp_test_bound_enter(&b->one);
	atomic_fetch_add(&b->exits, 1);
	wp_test_bound_leave(&b->one);
}

enum { BOUND_HANDLES = 6, BOUND_PRODUCERS = 3, BOUND_EVENTS = 300 };

static wp_handle *bound_handles[BOUND_HANDLES];

static void *add_to_every_handle(void *arg)
{
	int k, n;

	(void)arg;
	for (n = 0; n < BOUND_EVENTS; n++)
		for (k = 0; k < BOUND_HANDLES; k++)
			if (wp_handle_add_event(bound_handles[k], NULL,
						NULL) != 0)
				return (void *)1;
	return NULL;
}

START_TEST(callbacks_of_a_handle_never_overlap_and_stay_on_its_worker)
{
	wp_pool *pool = wp_test_pool_opts(_i, 3, 16, true);
	struct bound b[BOUND_HANDLES] = { 0 };
	pthread_t t[BOUND_PRODUCERS];
	void *failed;
	int k;

	for (k = 0; k < BOUND_HANDLES; k++) {
		ck_assert_int_eq(wp_pool_register(pool, bound_event, &b[k],
						  &bound_handles[k]), 0);
		ck_assert_int_eq(wp_handle_on_exit(bound_handles[k],
						   bound_exit, &b[k]), 0);
	}
	for (k = 0; k < BOUND_PRODUCERS; k++)
		wp_test_thread(&t[k], add_to_every_handle, NULL);
	for (k = 0; k < BOUND_PRODUCERS; k++) {
		ck_assert_int_eq(pthread_join(t[k], &failed), 0);
		ck_assert_ptr_null(failed);
	}
	for (k = 0; k < BOUND_HANDLES; k++) {
		ck_assert(wp_test_wait_atleast(&b[k].calls,
					       BOUND_PRODUCERS * BOUND_EVENTS));
		wp_handle_unregister(bound_handles[k]);
	}

	for (k = 0; k < BOUND_HANDLES; k++) {
		ck_assert_int_eq(atomic_load(&b[k].calls),
				 BOUND_PRODUCERS * BOUND_EVENTS);
		ck_assert_int_eq(atomic_load(&b[k].exits), 1);
		ck_assert_int_eq(atomic_load(&b[k].one.overlaps), 0);
		ck_assert_int_eq(atomic_load(&b[k].one.wrong_thread), 0);
		ck_assert(atomic_load(&b[k].one.thread) !=
			  (unsigned long)pthread_self());
	}
	wp_pool_destroy(pool);
}
END_TEST

/* Order: each adding thread's events run in the order it added them. */

enum { ORDER_MAX_PRODUCERS = 8 };

struct order {
	atomic_uint next[ORDER_MAX_PRODUCERS];
	atomic_int misordered;
	atomic_int calls;
};

/* An event names its producer and its place in that producer's order. */
static void *order_event(unsigned producer, unsigned seq)
{
	return (void *)(((uintptr_t)producer << 24) | seq);
}

static int check_order(wp_ctx *ctx, void *event, void *arg)
{
	struct order *o = arg;
	unsigned producer = (unsigned)((uintptr_t)event >> 24);
	unsigned seq = (unsigned)((uintptr_t)event & 0xffffff);

	(void)ctx;
	if (producer >= ORDER_MAX_PRODUCERS ||
	    seq != atomic_load(&o->next[producer]))
		atomic_fetch_add(&o->misordered, 1);
	else
		atomic_store(&o->next[producer], seq + 1);
	atomic_fetch_add(&o->calls, 1);
	return 0;
}

static void order_init(struct order *o)
{
	int p;

	*o = (struct order){ 0 };
	for (p = 0; p < ORDER_MAX_PRODUCERS; p++)
		atomic_store(&o->next[p], 1);
}

START_TEST(events_from_one_thread_run_in_the_order_added)
{
	enum { N = 3000 };
	wp_pool *pool = wp_test_pool_opts(_i, 2, 8, true);
	wp_handle *h = NULL;
	struct order o;
	unsigned s;

	order_init(&o);
	ck_assert_int_eq(wp_pool_register(pool, check_order, &o, &h), 0);
	for (s = 1; s <= N; s++)
		ck_assert_int_eq(wp_handle_add_event(h, NULL,
						     order_event(0, s)), 0);
	ck_assert(wp_test_wait_atleast(&o.calls, N));

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&o.calls), N);
	ck_assert_int_eq(atomic_load(&o.misordered), 0);
}
END_TEST

START_TEST(a_batch_larger_than_the_queue_runs_in_array_order)
{
	enum { BATCH = 100, BATCHES = 10 };
	wp_pool *pool = wp_test_pool_opts(_i, 2, 8, true);
	void *events[BATCH];
	wp_handle *h = NULL;
	struct order o;
	unsigned s = 1;
	int b, k;

	order_init(&o);
	ck_assert_int_eq(wp_pool_register(pool, check_order, &o, &h), 0);
	for (b = 0; b < BATCHES; b++) {
		for (k = 0; k < BATCH; k++)
			events[k] = order_event(0, s++);
		ck_assert_int_eq(wp_handle_add_events(h, NULL, events, BATCH),
				 BATCH);
	}
	ck_assert(wp_test_wait_atleast(&o.calls, BATCH * BATCHES));

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&o.calls), BATCH * BATCHES);
	ck_assert_int_eq(atomic_load(&o.misordered), 0);
}
END_TEST

enum { PRODUCERS = 4, PER_PRODUCER = 1000, CHUNK = 7 };

struct producer {
	wp_handle *h;
	unsigned id;
	bool batches;
	int failures;
};

/* Adds one by one, or in batches of CHUNK, each in this producer's order. */
static void *produce(void *arg)
{
	struct producer *p = arg;
	void *events[CHUNK];
	unsigned s = 1, k;

	while (s <= PER_PRODUCER) {
		if (!p->batches) {
			if (wp_handle_add_event(p->h, NULL,
						order_event(p->id, s++)) != 0)
				p->failures++;
			continue;
		}
		for (k = 0; k < CHUNK && s <= PER_PRODUCER; k++)
			events[k] = order_event(p->id, s++);
		if (wp_handle_add_events(p->h, NULL, events, k) != (int)k)
			p->failures++;
	}
	return NULL;
}

START_TEST(each_producers_order_holds_with_several_producers)
{
	wp_pool *pool = wp_test_pool_opts(_i, 2, 16, true);
	struct producer p[PRODUCERS];
	pthread_t t[PRODUCERS];
	wp_handle *h = NULL;
	struct order o;
	int k;

	order_init(&o);
	ck_assert_int_eq(wp_pool_register(pool, check_order, &o, &h), 0);
	for (k = 0; k < PRODUCERS; k++) {
		p[k] = (struct producer){ h, (unsigned)k, k % 2, 0 };
		wp_test_thread(&t[k], produce, &p[k]);
	}
	for (k = 0; k < PRODUCERS; k++)
		wp_test_join(t[k]);
	ck_assert(wp_test_wait_atleast(&o.calls, PRODUCERS * PER_PRODUCER));

	wp_pool_destroy(pool);
	for (k = 0; k < PRODUCERS; k++) {
		ck_assert_int_eq(p[k].failures, 0);
		ck_assert_uint_eq(atomic_load(&o.next[k]), PER_PRODUCER + 1);
	}
	ck_assert_int_eq(atomic_load(&o.calls), PRODUCERS * PER_PRODUCER);
	ck_assert_int_eq(atomic_load(&o.misordered), 0);
}
END_TEST

/* The context a handler receives. */

struct seen {
	_Atomic(wp_ctx *) ctx[4];
	_Atomic(void *) arg;
	atomic_int calls;
};

static int note_ctx(wp_ctx *ctx, void *event, void *arg)
{
	struct seen *s = arg;
	int n = atomic_fetch_add(&s->calls, 1);

	(void)event;
	if (n < 4)
		atomic_store(&s->ctx[n], ctx);
	atomic_store(&s->arg, arg);
	return 0;
}

START_TEST(handler_receives_the_ctx_given_to_the_add)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct seen s = { .calls = 0 };
	wp_ctx *a = NULL, *b = NULL;
	void *events[2] = { NULL, NULL };
	wp_handle *h = NULL;

	ck_assert_int_eq(wp_ctx_create(&a, NULL), 0);
	ck_assert_int_eq(wp_ctx_create(&b, NULL), 0);
	ck_assert_int_eq(wp_pool_register(pool, note_ctx, &s, &h), 0);
	ck_assert_int_eq(wp_handle_add_event(h, a, NULL), 0);
	ck_assert_int_eq(wp_handle_add_events(h, b, events, 2), 2);
	ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&s.calls, 4));

	ck_assert_ptr_eq(atomic_load(&s.ctx[0]), a);
	ck_assert_ptr_eq(atomic_load(&s.ctx[1]), b);
	ck_assert_ptr_eq(atomic_load(&s.ctx[2]), b);
	ck_assert_ptr_eq(atomic_load(&s.ctx[3]), wp_pool_ctx(pool));
	ck_assert_ptr_eq(atomic_load(&s.arg), &s);

	wp_pool_destroy(pool);
	wp_ctx_release(a);
	wp_ctx_release(b);
}
END_TEST

START_TEST(try_add_hands_the_pool_ctx_to_the_handler)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct seen s = { .calls = 0 };
	wp_handle *h = NULL;

	ck_assert_int_eq(wp_pool_register(pool, note_ctx, &s, &h), 0);
	ck_assert_int_eq(wp_handle_try_add_event(h, NULL), 0);
	ck_assert(wp_test_wait_atleast(&s.calls, 1));

	ck_assert_ptr_eq(atomic_load(&s.ctx[0]), wp_pool_ctx(pool));
	wp_pool_destroy(pool);
}
END_TEST

/* Bounded queues. */

struct blocker {
	struct wp_test_gate gate;
	atomic_int entered;
	atomic_int calls;
};

/* The first event holds the worker until the test opens the gate. */
static int block_first(wp_ctx *ctx, void *event, void *arg)
{
	struct blocker *b = arg;

	(void)ctx;
	(void)event;
	if (atomic_fetch_add(&b->entered, 1) == 0)
		wp_test_gate_wait(&b->gate);
	atomic_fetch_add(&b->calls, 1);
	return 0;
}

/* Queues events with try_add until the queue is full; returns how many. */
static int fill(wp_handle *h)
{
	int n = 0, rc;

	while ((rc = wp_handle_try_add_event(h, NULL)) == 0)
		ck_assert_msg(++n < 1 << 16, "the queue took %d items", n);
	ck_assert_int_eq(rc, -EAGAIN);
	return n;
}

/*
 * A one-worker pool whose worker is held inside block_first(), so that
 * its queue holds exactly what the test adds next.
 */
static wp_pool *held_pool(int i, unsigned cap, struct blocker *b,
			  wp_handle **h)
{
	wp_pool *pool = wp_test_pool_opts(i, 1, cap, true);

	*b = (struct blocker){ 0 };
	wp_test_gate_init(&b->gate);
	ck_assert_int_eq(wp_pool_register(pool, block_first, b, h), 0);
	ck_assert_int_eq(wp_handle_add_event(*h, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&b->entered, 1));
	return pool;
}

static void release_pool(wp_pool *pool, struct blocker *b, int expect)
{
	wp_test_gate_open(&b->gate);
	ck_assert(wp_test_wait_atleast(&b->calls, expect));
	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&b->calls), expect);
	wp_test_gate_destroy(&b->gate);
}

/*
 * Fills the queue of a pool made with capacity cap and checks that it
 * held rounded items. The held event may still occupy its slot, so a
 * full queue holds the rounded capacity or one less.
 */
static void check_capacity(int i, unsigned cap, int rounded)
{
	struct blocker b;
	wp_handle *h;
	wp_pool *pool;
	int n;

	pool = held_pool(i, cap, &b, &h);
	n = fill(h);
	ck_assert_msg(n >= rounded - 1 && n <= rounded,
		      "capacity %u held %d", cap, n);
	release_pool(pool, &b, n + 1);
}

START_TEST(queue_capacity_is_rounded_up_to_a_power_of_two)
{
	check_capacity(_i, 5, 8);
	check_capacity(_i, 8, 8);
	check_capacity(_i, 100, 128);
	check_capacity(_i, 3, 4);
	check_capacity(_i, 2, 2);
}
END_TEST

START_TEST(queue_of_capacity_one_holds_one_item)
{
	check_capacity(_i, 1, 1);
}
END_TEST

START_TEST(handles_on_one_worker_share_its_queue)
{
	struct blocker b;
	wp_handle *h, *other;
	wp_pool *pool;
	int n = 0;

	pool = held_pool(_i, 8, &b, &h);
	ck_assert_int_eq(wp_pool_register(pool, block_first, &b, &other), 0);
	while (wp_handle_try_add_event(other, NULL) == 0)
		ck_assert_int_lt(++n, 1 << 20);
	ck_assert_int_eq(wp_handle_try_add_event(h, NULL), -EAGAIN);
	ck_assert_int_ge(n, 7);

	release_pool(pool, &b, n + 1);
}
END_TEST

struct late_add {
	wp_handle *h;
	wp_ctx *ctx;
	atomic_int rc;
	atomic_int done;
};

static void *add_blocking(void *arg)
{
	struct late_add *a = arg;

	atomic_store(&a->rc, wp_handle_add_event(a->h, a->ctx, NULL));
	atomic_store(&a->done, 1);
	return NULL;
}

START_TEST(add_to_a_full_queue_waits_until_space_frees)
{
	struct late_add a = { 0 };
	struct blocker b;
	wp_pool *pool;
	pthread_t t;
	int n;

	pool = held_pool(_i, 4, &b, &a.h);
	n = fill(a.h);
	wp_test_thread(&t, add_blocking, &a);
	wp_test_sleep_ms(30);
	ck_assert_int_eq(atomic_load(&a.done), 0);

	wp_test_gate_open(&b.gate);
	wp_test_join(t);
	ck_assert_int_eq(atomic_load(&a.rc), 0);
	release_pool(pool, &b, n + 2);
}
END_TEST

START_TEST(add_to_a_full_queue_gives_up_when_its_ctx_times_out)
{
	void *events[3] = { NULL, NULL, NULL };
	struct blocker b;
	wp_ctx *ctx;
	wp_handle *h;
	wp_pool *pool;
	int n;

	pool = held_pool(_i, 4, &b, &h);
	n = fill(h);

	ctx = wp_test_ctx_ms(NULL, 20);
	ck_assert_int_eq(wp_handle_add_event(h, ctx, NULL), -ETIMEDOUT);
	wp_ctx_release(ctx);

	ctx = wp_test_ctx_ms(NULL, 20);
	ck_assert_int_eq(wp_handle_add_events(h, ctx, events, 3), -ETIMEDOUT);
	wp_ctx_release(ctx);

	ck_assert_int_eq(wp_handle_try_add_event(h, NULL), -EAGAIN);
	release_pool(pool, &b, n + 1);
}
END_TEST

START_TEST(batch_cut_short_by_its_ctx_returns_how_many_it_queued)
{
	void *events[10] = { NULL };
	struct blocker b;
	wp_ctx *ctx;
	wp_handle *h;
	wp_pool *pool;
	int n;

	pool = held_pool(_i, 4, &b, &h);
	ctx = wp_test_ctx_ms(NULL, 20);
	n = wp_handle_add_events(h, ctx, events, 10);
	wp_ctx_release(ctx);
	ck_assert_msg(n == 3 || n == 4, "queued %d of 10", n);
	ck_assert_int_eq(wp_handle_try_add_event(h, NULL), -EAGAIN);

	release_pool(pool, &b, n + 1);
}
END_TEST

static void *cancel_soon(void *arg)
{
	wp_test_sleep_ms(20);
	wp_ctx_cancel(arg);
	return NULL;
}

START_TEST(add_to_a_full_queue_gives_up_when_its_ctx_is_cancelled)
{
	struct blocker b;
	wp_ctx *ctx = NULL;
	wp_handle *h;
	wp_pool *pool;
	pthread_t t;
	int n;

	pool = held_pool(_i, 4, &b, &h);
	n = fill(h);

	ck_assert_int_eq(wp_ctx_create(&ctx, NULL), 0);
	wp_test_thread(&t, cancel_soon, ctx);
	ck_assert_int_eq(wp_handle_add_event(h, ctx, NULL), -ECANCELED);
	wp_test_join(t);
	ck_assert_int_eq(wp_handle_add_event(h, ctx, NULL), -ECANCELED);
	wp_ctx_release(ctx);

	release_pool(pool, &b, n + 1);
}
END_TEST

static void noop(void *arg)
{
	atomic_fetch_add((atomic_int *)arg, 1);
}

START_TEST(go_to_a_full_queue_gives_up_when_its_ctx_times_out)
{
	atomic_int ran = 0;
	struct blocker b;
	wp_ctx *ctx;
	wp_handle *h;
	wp_pool *pool;
	int n;

	pool = held_pool(_i, 4, &b, &h);
	n = fill(h);

	ctx = wp_test_ctx_ms(NULL, 20);
	ck_assert_int_eq(wp_pool_go(pool, ctx, noop, &ran), -ETIMEDOUT);
	wp_ctx_release(ctx);

	release_pool(pool, &b, n + 1);
	ck_assert_int_eq(atomic_load(&ran), 0);
}
END_TEST

/* A task waiting for room gives up as soon as the pool stops. */
struct go_wait {
	wp_pool *pool;
	atomic_int ran;
	atomic_int rc;
	atomic_int done;
};

static void *go_blocked(void *arg)
{
	struct go_wait *g = arg;

	atomic_store(&g->rc, wp_pool_go(g->pool, NULL, noop, &g->ran));
	atomic_store(&g->done, 1);
	return NULL;
}

static void *stop_pool(void *arg)
{
	ck_assert_int_eq(wp_pool_stop(arg), 0);
	return NULL;
}

static void held_task(void *arg)
{
	struct blocker *b = arg;

	atomic_fetch_add(&b->entered, 1);
	wp_test_gate_wait(&b->gate);
	atomic_fetch_add(&b->calls, 1);
}

START_TEST(go_to_a_full_queue_gives_up_when_the_pool_stops)
{
	struct go_wait g = { .pool = wp_test_pool_opts(_i, 1, 2, true) };
	struct blocker b = { 0 };
	pthread_t t, u;

	/* Only tasks: no handle's exit wakes anyone at the stop. */
	wp_test_gate_init(&b.gate);
	ck_assert_int_eq(wp_pool_go(g.pool, NULL, held_task, &b), 0);
	ck_assert(wp_test_wait_atleast(&b.entered, 1));
	ck_assert_int_eq(wp_pool_go(g.pool, NULL, noop, &g.ran), 0);
	ck_assert_int_eq(wp_pool_go(g.pool, NULL, noop, &g.ran), 0);
	wp_test_thread(&t, go_blocked, &g);
	/* Long enough for the task to be waiting. */
	wp_test_sleep_ms(20);
	ck_assert_int_eq(atomic_load(&g.done), 0);

	/* The stop waits for the held task; the waiting one must not. */
	wp_test_thread(&u, stop_pool, g.pool);
	ck_assert(wp_test_wait_atleast(&g.done, 1));
	ck_assert_msg(atomic_load(&b.calls) == 0,
		      "the waiting task returned only after the held one");
	ck_assert_int_eq(atomic_load(&g.rc), -ESHUTDOWN);
	wp_test_join(t);
	wp_test_gate_open(&b.gate);
	wp_test_join(u);

	wp_pool_destroy(g.pool);
	wp_test_gate_destroy(&b.gate);
	ck_assert_int_eq(atomic_load(&b.calls), 1);
	/* The two queued before the stop may run; the refused one not. */
	ck_assert_int_le(atomic_load(&g.ran), 2);
}
END_TEST

/* A worker adding to its own full queue is told instead of hanging. */

struct self_fill {
	wp_pool *pool;
	wp_handle *h;
	wp_handle *other;
	atomic_int filled;
	atomic_int try_rc;
	atomic_int add_rc;
	atomic_int batch_rc;
	atomic_int other_rc;
	atomic_int go_rc;
	atomic_int done;
	atomic_int calls;
	atomic_int ran;
};

static void *const FILL = (void *)1;

static int fill_own_queue(wp_ctx *ctx, void *event, void *arg)
{
	struct self_fill *s = arg;
	void *events[2] = { NULL, NULL };
	int n = 0, rc;

	(void)ctx;
	if (event != FILL) {
		atomic_fetch_add(&s->calls, 1);
		return 0;
	}
	while ((rc = wp_handle_try_add_event(s->h, NULL)) == 0 && n < 1 << 20)
		n++;
	atomic_store(&s->filled, n);
	atomic_store(&s->try_rc, rc);
	atomic_store(&s->add_rc, wp_handle_add_event(s->h, NULL, NULL));
	atomic_store(&s->batch_rc, wp_handle_add_events(s->h, NULL, events, 2));
	atomic_store(&s->other_rc, wp_handle_add_event(s->other, NULL, NULL));
	atomic_store(&s->go_rc, wp_pool_go(s->pool, NULL, noop, &s->ran));
	atomic_store(&s->done, 1);
	return 0;
}

START_TEST(worker_adding_to_its_own_full_queue_gets_edeadlk)
{
	struct self_fill s = { .pool = wp_test_pool_opts(_i, 1, 4, true) };

	ck_assert_int_eq(wp_pool_register(s.pool, fill_own_queue, &s, &s.h),
			 0);
	ck_assert_int_eq(wp_pool_register(s.pool, fill_own_queue, &s,
					  &s.other), 0);
	ck_assert_int_eq(wp_handle_add_event(s.h, NULL, FILL), 0);
	ck_assert(wp_test_wait_atleast(&s.done, 1));
	ck_assert(wp_test_wait_atleast(&s.calls, atomic_load(&s.filled)));

	wp_pool_destroy(s.pool);
	ck_assert_int_ge(atomic_load(&s.filled), 3);
	ck_assert_int_eq(atomic_load(&s.try_rc), -EAGAIN);
	ck_assert_int_eq(atomic_load(&s.add_rc), -EDEADLK);
	ck_assert_int_eq(atomic_load(&s.batch_rc), -EDEADLK);
	ck_assert_int_eq(atomic_load(&s.other_rc), -EDEADLK);
	ck_assert_int_eq(atomic_load(&s.go_rc), -EDEADLK);
	ck_assert_int_eq(atomic_load(&s.calls), atomic_load(&s.filled));
	ck_assert_int_eq(atomic_load(&s.ran), 0);
}
END_TEST

/* A batch from the handle's own worker stops where its queue fills. */

struct self_batch {
	wp_handle *h;
	atomic_int rc;
	atomic_int calls;
};

static int batch_into_own_queue(wp_ctx *ctx, void *event, void *arg)
{
	struct self_batch *s = arg;
	void *events[8] = { NULL };

	(void)ctx;
	if (event == FILL)
		atomic_store(&s->rc, wp_handle_add_events(s->h, NULL, events,
							  8));
	else
		atomic_fetch_add(&s->calls, 1);
	return 0;
}

START_TEST(a_batch_on_its_own_worker_stops_where_the_queue_fills)
{
	wp_pool *pool = wp_test_pool_opts(_i, 1, 4, true);
	struct self_batch s = { .rc = -1 };

	ck_assert_int_eq(wp_pool_register(pool, batch_into_own_queue, &s,
					  &s.h), 0);
	ck_assert_int_eq(wp_handle_add_event(s.h, NULL, FILL), 0);
	ck_assert(wp_test_wait_atleast(&s.rc, 1));
	ck_assert(wp_test_wait_atleast(&s.calls, atomic_load(&s.rc)));
	/* Cut short by the full queue, not by an exit. */
	ck_assert(!wp_handle_exited(s.h));

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&s.rc), 4);
	ck_assert_int_eq(atomic_load(&s.calls), 4);
}
END_TEST

/*
 * Two workers whose callbacks each wait for room in the other's full
 * queue hold each other until their contexts end.
 */
struct mutual {
	wp_handle *h[2];
	wp_ctx *ctx;
	atomic_int inside;
	atomic_int rc[2];
};

static int add_to_the_other(wp_ctx *ctx, void *event, void *arg)
{
	struct mutual *m = arg;
	void *two[2] = { NULL, NULL };
	int me = (int)(uintptr_t)event - 1;

	(void)ctx;
	if (me < 0)
		return 0;
	atomic_fetch_add(&m->inside, 1);
	wp_test_wait_atleast(&m->inside, 2);
	atomic_store(&m->rc[me], wp_handle_add_events(m->h[!me], m->ctx,
						      two, 2));
	return 0;
}

START_TEST(workers_waiting_on_each_others_full_queues_wait_for_ctx)
{
	wp_pool *pool = wp_test_pool_opts(_i, 2, 2, false);
	struct mutual m = { .rc = { -1, -1 } };
	uint64_t start;
	int k;

	m.ctx = wp_test_ctx_ms(NULL, 200);
	for (k = 0; k < 2; k++)
		ck_assert_int_eq(wp_pool_register(pool, add_to_the_other, &m,
						  &m.h[k]), 0);
	ck_assert(wp_pool_workers(pool) == 2);
	/* Each queue: the event that adds to the other, and one more. */
	for (k = 0; k < 2; k++) {
		ck_assert_int_eq(wp_handle_add_event(m.h[k], NULL,
				 (void *)(uintptr_t)(k + 1)), 0);
		ck_assert_int_eq(wp_handle_add_event(m.h[k], NULL, NULL), 0);
	}
	start = wp_test_now_ns();
	ck_assert_int_eq(wp_pool_start(pool), 0);
	ck_assert(wp_test_wait_atleast(&m.rc[0], 0));
	ck_assert(wp_test_wait_atleast(&m.rc[1], 0));

	/*
	 * Each queued the one event that fitted, then waited for ctx; the
	 * first to give up frees room for the other, which may then finish.
	 */
	ck_assert_uint_ge(wp_test_now_ns() - start, 150000000u);
	ck_assert_int_ge(atomic_load(&m.rc[0]), 1);
	ck_assert_int_ge(atomic_load(&m.rc[1]), 1);
	ck_assert(atomic_load(&m.rc[0]) == 1 || atomic_load(&m.rc[1]) == 1);
	wp_pool_destroy(pool);
	wp_ctx_release(m.ctx);
}
END_TEST

/*
 * A handler that adds to a handle on another, sleeping worker wakes that
 * worker at once: it need not return first. Here it waits, still inside
 * its callback, until the other handle's event has run.
 */
struct cross {
	wp_handle *there;	/* on the other worker */
	atomic_int ran;		/* events run there */
	atomic_int exits;	/* exit callbacks run there */
	atomic_int seen;	/* what the waiting handler saw */
	atomic_int done;
};

static int cross_there(wp_ctx *ctx, void *event, void *arg)
{
	struct cross *c = arg;

	(void)ctx;
	(void)event;
	atomic_fetch_add(&c->ran, 1);
	return 0;
}

static void cross_exit(int err, void *arg)
{
	struct cross *c = arg;

	(void)err;
	atomic_fetch_add(&c->exits, 1);
}

static int cross_add_and_wait(wp_ctx *ctx, void *event, void *arg)
{
	struct cross *c = arg;

	(void)ctx;
	(void)event;
	if (wp_handle_add_event(c->there, NULL, NULL) == 0)
		atomic_store(&c->seen, wp_test_wait_atleast(&c->ran, 1));
	atomic_store(&c->done, 1);
	return 0;
}

static int cross_unregister(wp_ctx *ctx, void *event, void *arg)
{
	struct cross *c = arg;

	(void)ctx;
	(void)event;
	wp_handle_unregister(c->there);
	atomic_store(&c->seen, atomic_load(&c->exits));
	atomic_store(&c->done, 1);
	return 0;
}

/* Two handles, here and there, on the two workers of a fresh pool. */
static wp_pool *cross_pool(int i, struct cross *c, wp_event_fn here_fn,
			   wp_handle **here)
{
	wp_pool *pool = wp_test_pool(i, 2);

	ck_assert_int_eq(wp_pool_register(pool, here_fn, c, here), 0);
	ck_assert_int_eq(wp_pool_register(pool, cross_there, c, &c->there),
			 0);
	ck_assert_int_eq(wp_handle_on_exit(c->there, cross_exit, c), 0);
	/* Long enough for the other worker to stop polling and sleep. */
	wp_test_sleep_ms(20);
	return pool;
}

START_TEST(a_handler_adding_to_a_sleeping_worker_wakes_it_at_once)
{
	struct cross c = { 0 };
	wp_handle *here;
	wp_pool *pool = cross_pool(_i, &c, cross_add_and_wait, &here);

	ck_assert_int_eq(wp_handle_add_event(here, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&c.done, 1));
	ck_assert_msg(atomic_load(&c.seen),
		      "the event waited for the adding handler to return");
	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&c.ran), 1);
}
END_TEST

START_TEST(a_handler_unregistering_on_a_sleeping_worker_returns)
{
	struct cross c = { 0 };
	wp_handle *here;
	wp_pool *pool = cross_pool(_i, &c, cross_unregister, &here);

	ck_assert_int_eq(wp_handle_add_event(here, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&c.done, 1));
	ck_assert_int_eq(atomic_load(&c.seen), 1);
	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&c.exits), 1);
}
END_TEST

static Suite *events_suite(void)
{
	Suite *s = suite_create("events");
	TCase *tc;

	tc = wp_test_tcase("binding");
	wp_test_add(tc,
		    callbacks_of_a_handle_never_overlap_and_stay_on_its_worker);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("order");
	wp_test_add(tc, events_from_one_thread_run_in_the_order_added);
	wp_test_add(tc, a_batch_larger_than_the_queue_runs_in_array_order);
	wp_test_add(tc, each_producers_order_holds_with_several_producers);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("across workers");
	wp_test_add(tc, a_handler_adding_to_a_sleeping_worker_wakes_it_at_once);
	wp_test_add(tc, a_handler_unregistering_on_a_sleeping_worker_returns);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("ctx");
	wp_test_add(tc, handler_receives_the_ctx_given_to_the_add);
	wp_test_add(tc, try_add_hands_the_pool_ctx_to_the_handler);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("backpressure");
	wp_test_add(tc, queue_capacity_is_rounded_up_to_a_power_of_two);
	wp_test_add(tc, queue_of_capacity_one_holds_one_item);
	wp_test_add(tc, handles_on_one_worker_share_its_queue);
	wp_test_add(tc, add_to_a_full_queue_waits_until_space_frees);
	wp_test_add(tc, add_to_a_full_queue_gives_up_when_its_ctx_times_out);
	wp_test_add(tc, add_to_a_full_queue_gives_up_when_its_ctx_is_cancelled);
	wp_test_add(tc, batch_cut_short_by_its_ctx_returns_how_many_it_queued);
	wp_test_add(tc, go_to_a_full_queue_gives_up_when_its_ctx_times_out);
	wp_test_add(tc, go_to_a_full_queue_gives_up_when_the_pool_stops);
	wp_test_add(tc, worker_adding_to_its_own_full_queue_gets_edeadlk);
	wp_test_add(tc,
		    a_batch_on_its_own_worker_stops_where_the_queue_fills);
	wp_test_add(tc,
		    workers_waiting_on_each_others_full_queues_wait_for_ctx);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	return wp_test_run(events_suite());
}
