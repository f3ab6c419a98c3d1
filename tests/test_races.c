/* SPDX-License-Identifier: MIT */
/*
 * Interleavings that timing alone almost never gives, forced with the
 * library's pause points (src/pause.h): this program links a copy of the
 * library built with them, and holds the first thread that reaches the
 * armed point until the test has done its part. Each case frees a handle
 * while a call on it is held half way, registers a new handle in the
 * same memory, and checks that the held call leaves the new handle
 * alone; others end a context under a held call.
 */
#include "harness.h"
#include "pause.h"

/* The point to hold a thread at, once; 0 when none. */
static atomic_int armed;
static atomic_int held;
static atomic_int resume;

void wp__pause(enum wp__pause_site site)
{
	int want = (int)site;

	if (!atomic_compare_exchange_strong(&armed, &want, 0))
		return;
	atomic_store(&held, 1);
	while (!atomic_load(&resume))
		wp_test_sleep_ms(1);
}

static void arm(enum wp__pause_site site)
{
	atomic_store(&held, 0);
	atomic_store(&resume, 0);
	atomic_store(&armed, (int)site);
}

/* Waits until a thread is held at the armed point. */
static bool wait_held(void)
{
	for (int ms = 0; ms < 10000; ms++) {
		if (atomic_load(&held))
			return true;
		wp_test_sleep_ms(1);
	}
	return false;
}

/* A handle that counts its events and the ones carrying MARK. */
struct counted {
	wp_handle *h;
	atomic_int events;
	atomic_int marked;
	bool close_on_event;
};

static int MARK;

static int count_event(wp_ctx *ctx, void *event, void *arg)
{
	struct counted *c = arg;

	(void)ctx;
	if (event == &MARK)
		atomic_fetch_add(&c->marked, 1);
	atomic_fetch_add(&c->events, 1);
	if (c->close_on_event)
		wp_handle_unregister_graceful(c->h, NULL);
	return 0;
}

/*
 * Frees old and registers a new handle in its place; true when the new
 * one took old's memory, as the pool's free list gives it.
 */
static bool reuse(wp_pool *pool, wp_handle *old, struct counted *c)
{
	wp_handle_free(old);
	ck_assert_int_eq(wp_pool_register(pool, count_event, c, &c->h), 0);
	return c->h == old;
}

/* The new handle is alive: not exited, and it runs an event. */
static void check_alive(struct counted *c)
{
	ck_assert(!wp_handle_exited(c->h));
	ck_assert_int_eq(wp_handle_error(c->h), 0);
	ck_assert_int_eq(wp_handle_add_event(c->h, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&c->events, 1));
	ck_assert(!wp_handle_exited(c->h));
}

/* A call on h made by another thread, and what it returned. */
struct held_call {
	wp_handle *h;
	int rc;
};

/*
 * Runs fn on a thread that the pause point site holds, frees the call's
 * handle meanwhile and registers c's in the same memory, then lets the
 * call go on and waits for it to return.
 */
static void hold_and_reuse(wp_pool *pool, enum wp__pause_site site,
			   void *(*fn)(void *), struct held_call *call,
			   struct counted *c)
{
	pthread_t t;

	arm(site);
	wp_test_thread(&t, fn, call);
	ck_assert(wait_held());
	ck_assert(reuse(pool, call->h, c));
	atomic_store(&resume, 1);
	wp_test_join(t);
}

/* Adding. */

static void *add_marked(void *arg)
{
	struct held_call *a = arg;

	a->rc = wp_handle_add_event(a->h, NULL, &MARK);
	return NULL;
}

START_TEST(an_add_held_while_its_handle_is_freed_misses_the_new_one)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct counted old = { 0 }, c = { 0 };
	struct held_call a = { 0 };

	ck_assert_int_eq(wp_pool_register(pool, count_event, &old, &a.h), 0);
	hold_and_reuse(pool, WP__PAUSE_ADD_CHECKED, add_marked, &a, &c);
	ck_assert_int_eq(a.rc, -ECANCELED);
	ck_assert_int_eq(wp_handle_unregister_graceful(c.h, NULL), 0);
	ck_assert_int_eq(atomic_load(&c.marked), 0);
	ck_assert_int_eq(atomic_load(&old.events), 0);
	wp_handle_free(c.h);
	wp_pool_destroy(pool);
}
END_TEST

/* Calls that count themselves in before they act. */

static void *unregister_held(void *arg)
{
	struct held_call *u = arg;

	wp_handle_unregister(u->h);
	return NULL;
}

START_TEST(an_unregister_held_before_counting_spares_the_new_handle)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct counted old = { 0 }, c = { 0 };
	struct held_call u = { 0 };

	ck_assert_int_eq(wp_pool_register(pool, count_event, &old, &u.h), 0);
	hold_and_reuse(pool, WP__PAUSE_ENTER, unregister_held, &u, &c);
	check_alive(&c);
	/* Its count of calls in progress is whole: it can be freed. */
	wp_handle_free(c.h);
	wp_pool_destroy(pool);
}
END_TEST

static atomic_int exit_runs;

static void note_exit(int err, void *arg)
{
	(void)err;
	(void)arg;
	atomic_fetch_add(&exit_runs, 1);
}

static void *on_exit_held(void *arg)
{
	struct held_call *e = arg;

	e->rc = wp_handle_on_exit(e->h, note_exit, NULL);
	return NULL;
}

START_TEST(an_on_exit_held_before_it_counts_is_refused)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct counted old = { 0 }, c = { 0 };
	struct held_call e = { 0 };

	atomic_store(&exit_runs, 0);
	ck_assert_int_eq(wp_pool_register(pool, count_event, &old, &e.h), 0);
	hold_and_reuse(pool, WP__PAUSE_ENTER, on_exit_held, &e, &c);

	ck_assert_int_eq(e.rc, -EINVAL);
	check_alive(&c);
	wp_handle_unregister(c.h);
	ck_assert_int_eq(atomic_load(&exit_runs), 0);
	wp_handle_free(c.h);
	wp_pool_destroy(pool);
}
END_TEST

/* Closing. */

START_TEST(a_close_held_before_its_exit_spares_the_next_handle)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct counted old = { .close_on_event = true }, c = { 0 };

	ck_assert_int_eq(wp_pool_register(pool, count_event, &old, &old.h),
			 0);
	arm(WP__PAUSE_CLOSE);
	ck_assert_int_eq(wp_handle_add_event(old.h, NULL, NULL), 0);
	ck_assert(wait_held());
	/*
	 * The worker is held with the close under way, and the free ends
	 * the handle. Whether the new handle takes its memory or not, the
	 * close going on must not end the new one.
	 */
	reuse(pool, old.h, &c);
	atomic_store(&resume, 1);

	check_alive(&c);
	wp_handle_free(c.h);
	wp_pool_destroy(pool);
}
END_TEST

/*
 * A graceful unregister held between marking its handle closing and
 * asking the worker to close it, while a free of the handle is served and
 * another handle is closing: the late request must leave the other
 * handle on its way, not release it.
 */
static int slow_event(wp_ctx *ctx, void *event, void *arg)
{
	(void)ctx;
	(void)event;
	(void)arg;
	usleep(100);
	return 0;
}

struct graceful_call {
	wp_handle *h;
	atomic_int rc;
};

static void *graceful(void *arg)
{
	struct graceful_call *g = arg;

	atomic_store(&g->rc, wp_handle_unregister_graceful(g->h, NULL));
	return NULL;
}

START_TEST(a_graceful_close_asked_after_a_free_spares_other_closes)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct graceful_call late = { .rc = 1 }, other = { .rc = 1 };
	wp_handle *busy, *fresh[2];
	pthread_t tl, to;
	int k;

	ck_assert_int_eq(wp_pool_register(pool, slow_event, NULL, &late.h), 0);
	ck_assert_int_eq(wp_pool_register(pool, slow_event, NULL, &other.h),
			 0);
	ck_assert_int_eq(wp_pool_register(pool, slow_event, NULL, &busy), 0);
	/* About 200 ms of work ahead keeps the other handle closing. */
	for (k = 0; k < 2000; k++)
		ck_assert_int_eq(wp_handle_add_event(busy, NULL, NULL), 0);
	wp_test_thread(&to, graceful, &other);
	while (wp_handle_try_add_event(other.h, NULL) != -ECANCELED)
		wp_test_sleep_ms(1);

	arm(WP__PAUSE_CLOSE_ASK);
	wp_test_thread(&tl, graceful, &late);
	ck_assert(wait_held());
	wp_handle_free(late.h);
	wp_test_sleep_ms(30);	/* the worker serves the free meanwhile */
	atomic_store(&resume, 1);
	wp_test_join(tl);
	wp_test_join(to);
	ck_assert_int_eq(atomic_load(&late.rc), -ECANCELED);
	ck_assert_int_eq(atomic_load(&other.rc), 0);

	/*
	 * The other handle was never freed: no registration may reuse it.
	 * Two tasks in turn on the worker make sure that a round of its
	 * loop has passed over its lists since the other call returned.
	 */
	wp_test_worker_thread(pool);
	wp_test_worker_thread(pool);
	for (k = 0; k < 2; k++) {
		ck_assert_int_eq(wp_pool_register(pool, slow_event, NULL,
						  &fresh[k]), 0);
		ck_assert_ptr_ne(fresh[k], other.h);
	}
	ck_assert(wp_handle_exited(other.h));
	ck_assert_int_eq(wp_handle_error(other.h), 0);
	wp_pool_destroy(pool);
}
END_TEST

/*
 * A graceful unregister whose context ends while the handle's queue still
 * runs, held before it unregisters: the queue finishes meanwhile and the
 * handle exits with 0. The close has then happened, and the call says so
 * rather than report an unregister that did not take place.
 */
struct gated {
	atomic_int open;
	atomic_int events;
	atomic_int exits;
};

static int gated_event(wp_ctx *ctx, void *event, void *arg)
{
	struct gated *g = arg;

	(void)ctx;
	(void)event;
	while (!atomic_load(&g->open))
		wp_test_sleep_ms(1);
	atomic_fetch_add(&g->events, 1);
	return 0;
}

static void count_exit(int err, void *arg)
{
	struct gated *g = arg;

	(void)err;
	atomic_fetch_add(&g->exits, 1);
}

struct graceful_ctx_call {
	wp_handle *h;
	wp_ctx *ctx;
	atomic_int rc;
};

static void *graceful_with_ctx(void *arg)
{
	struct graceful_ctx_call *g = arg;

	atomic_store(&g->rc, wp_handle_unregister_graceful(g->h, g->ctx));
	return NULL;
}

START_TEST(a_close_finishing_as_its_ctx_ends_returns_0)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct graceful_ctx_call call = { .rc = 1 };
	struct gated g = { 0 };
	pthread_t t;

	ck_assert_int_eq(wp_pool_register(pool, gated_event, &g, &call.h), 0);
	ck_assert_int_eq(wp_handle_on_exit(call.h, count_exit, &g), 0);
	ck_assert_int_eq(wp_handle_add_event(call.h, NULL, NULL), 0);
	ck_assert_int_eq(wp_ctx_create(&call.ctx, NULL), 0);
	wp_ctx_cancel(call.ctx);

	arm(WP__PAUSE_CLOSE_GIVE_UP);
	wp_test_thread(&t, graceful_with_ctx, &call);
	ck_assert(wait_held());
	atomic_store(&g.open, 1);
	ck_assert(wp_test_wait_atleast(&g.exits, 1));
	atomic_store(&resume, 1);
	wp_test_join(t);

	ck_assert_int_eq(atomic_load(&g.events), 1);
	ck_assert_int_eq(wp_handle_error(call.h), 0);
	ck_assert_int_eq(atomic_load(&call.rc), 0);
	wp_ctx_release(call.ctx);
	wp_pool_destroy(pool);
}
END_TEST

static Suite *races_suite(void)
{
	Suite *s = suite_create("races");
	TCase *tc;

	tc = wp_test_tcase("freed while held");
	wp_test_add(tc,
		    an_add_held_while_its_handle_is_freed_misses_the_new_one);
	wp_test_add(tc,
		    an_unregister_held_before_counting_spares_the_new_handle);
	wp_test_add(tc, an_on_exit_held_before_it_counts_is_refused);
	wp_test_add(tc, a_close_held_before_its_exit_spares_the_next_handle);
	wp_test_add(tc,
		    a_graceful_close_asked_after_a_free_spares_other_closes);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("ctx ends while held");
	wp_test_add(tc, a_close_finishing_as_its_ctx_ends_returns_0);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return wp_test_run(races_suite());
}
