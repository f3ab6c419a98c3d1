/* SPDX-License-Identifier: MIT */
/*
 * Allocation and system-call failures. The library passes every
 * allocation, descriptor, io_uring setup and thread creation through a
 * fault hook; these tests fail each of them in turn, the n-th on the n-th
 * run of a sequence that uses every call, until a run reaches no hook
 * left to fail. Each call must then succeed or return a clean negative
 * errno, nothing may hang, no descriptor may leak, and (in the sanitizer
 * builds) no memory either. A failure must also never be silent: each
 * fault injected shows as exactly one failed call.
 */
#include <fcntl.h>

#include "harness.h"

/* Internal to the library; the static library provides them. */
extern void wp__fault_arm(long n);
extern long wp__fault_injected(void);

#define CAPACITY 8
#define EVENTS 3
#define TIMER_NS 1000000u

struct sequence {
	long n;			/* the fault armed for this run */
	int failed;		/* calls that failed */
	atomic_int tasks;
};

/* A handle of the sequence and what its callbacks saw. */
struct seq_handle {
	wp_handle *h;
	int added;
	int efd;
	atomic_int ran;
	atomic_int ticks;
	atomic_int exits;
	atomic_int code;
};

/*
 * Checks a call's result: success, or one of the errors a failed
 * allocation, descriptor or thread may cause, and only when a fault was
 * injected. Returns whether the call succeeded.
 */
static bool ok(struct sequence *s, const char *call, int rc)
{
	if (rc >= 0)
		return true;
	ck_assert_msg(rc == -ENOMEM || rc == -EMFILE || rc == -ENFILE ||
		      rc == -EAGAIN, "fault %ld: %s returned %d (%s)", s->n,
		      call, rc, wp_strerror(rc));
	ck_assert_msg(wp__fault_injected() == 1, "fault %ld: %s failed with "
		      "%d, but nothing was injected", s->n, call, rc);
	s->failed++;
	return false;
}

static int seq_event(wp_ctx *ctx, void *event, void *arg)
{
	struct seq_handle *sh = arg;

	(void)ctx;
	(void)event;
	atomic_fetch_add(&sh->ran, 1);
	return 0;
}

static int seq_tick(wp_ctx *ctx, void *arg)
{
	struct seq_handle *sh = arg;

	(void)ctx;
	atomic_fetch_add(&sh->ticks, 1);
	return 0;
}

static void seq_exit(int err, void *arg)
{
	struct seq_handle *sh = arg;

	atomic_store(&sh->code, err);
	atomic_fetch_add(&sh->exits, 1);
}

static void seq_task(void *arg)
{
	atomic_fetch_add((atomic_int *)arg, 1);
}

/* Registers a handle and queues its first events, before the start. */
static bool seq_register(struct sequence *s, wp_pool *pool, wp_ctx *ctx,
			 struct seq_handle *sh)
{
	void *batch[EVENTS] = { NULL };
	int k;

	sh->efd = -1;
	if (!ok(s, "wp_pool_register",
		wp_pool_register(pool, seq_event, sh, &sh->h)))
		return false;
	ck_assert_int_eq(wp_handle_on_exit(sh->h, seq_exit, sh), 0);
	for (k = 0; k < EVENTS; k++)
		ck_assert_int_eq(wp_handle_add_event(sh->h, ctx, NULL), 0);
	ck_assert_int_eq(wp_handle_add_events(sh->h, NULL, batch, EVENTS),
			 EVENTS);
	sh->added = 2 * EVENTS;
	return true;
}

static void seq_start(struct sequence *s, wp_pool *pool)
{
	/* A failed start leaves the pool as it was: it can start again. */
	if (!ok(s, "wp_pool_start", wp_pool_start(pool)))
		ck_assert_int_eq(wp_pool_start(pool), 0);
}

/* A child of ctx with a descriptor, cancelled: the descriptor fires. */
static void seq_child_ctx(struct sequence *s, wp_ctx *ctx)
{
	wp_ctx *child = NULL;
	int fd;

	if (!ok(s, "wp_ctx_create", wp_ctx_create(&child, ctx)))
		return;
	fd = wp_ctx_fd(child);
	wp_ctx_cancel(child);
	if (ok(s, "wp_ctx_fd", fd))
		ck_assert(wp_test_readable(fd, WP_TEST_WAIT_MS));
	ck_assert_int_eq(wp_ctx_err(child), -ECANCELED);
	wp_ctx_release(child);
}

/* Ends both handles, one gracefully, one at once, and checks the exits. */
static void seq_end(struct seq_handle *sh, int n)
{
	int k;

	for (k = 0; k < n; k++) {
		if (k == 0) {
			ck_assert_int_eq(
				wp_handle_unregister_graceful(sh[k].h, NULL),
				0);
			ck_assert_int_eq(atomic_load(&sh[k].ran), sh[k].added);
			ck_assert_int_eq(atomic_load(&sh[k].code), 0);
		} else {
			wp_handle_unregister(sh[k].h);
			ck_assert_int_eq(atomic_load(&sh[k].code), -ECANCELED);
		}
		ck_assert_int_eq(atomic_load(&sh[k].exits), 1);
		if (sh[k].efd >= 0)
			ck_assert(wp_test_readable(sh[k].efd, 0));
	}
}

/*
 * The sequence: create, a context and its descriptor, two handles with
 * events, a timer and error descriptors, start, a task, a child context,
 * graceful and immediate unregister, stop, free, destroy; then a second
 * pool that runs until a deadline.
 */
static void seq_pool(struct sequence *s, int i, wp_ctx *ctx)
{
	struct wp_pool_options opt;
	struct seq_handle sh[2];
	wp_pool *pool = NULL;
	int k, n = 0;

	memset(sh, 0, sizeof(sh));
	wp_pool_options_init(&opt);
	opt.backend = wp_test_backend(i);
	opt.workers = 2;
	opt.queue_capacity = CAPACITY;
	if (!ok(s, "wp_pool_create", wp_pool_create(&pool, &opt)))
		return;

	for (; n < 2 && seq_register(s, pool, ctx, &sh[n]); n++)
		;
	/* One timer set and taken back, one that fires once started. */
	if (n && ok(s, "wp_handle_set_timer",
		    wp_handle_set_timer(sh[0].h, NULL, TIMER_NS, seq_tick,
					&sh[0])))
		ok(s, "wp_handle_set_timer",
		   wp_handle_set_timer(sh[0].h, NULL, 0, NULL, NULL));
	if (n)
		ok(s, "wp_handle_set_timer",
		   wp_handle_set_timer(sh[n - 1].h, ctx, TIMER_NS, seq_tick,
				       &sh[n - 1]));
	for (k = 0; k < n; k++) {
		sh[k].efd = wp_handle_error_fd(sh[k].h);
		if (ok(s, "wp_handle_error_fd", sh[k].efd))
			ck_assert(!wp_test_readable(sh[k].efd, 0));
		else
			sh[k].efd = -1;
	}

	seq_start(s, pool);
	ck_assert_int_eq(wp_pool_go(pool, NULL, seq_task, &s->tasks), 0);
	ck_assert(wp_test_wait_atleast(&s->tasks, 1));
	seq_child_ctx(s, ctx);
	seq_end(sh, n);

	ck_assert_int_eq(wp_pool_stop(pool), 0);
	ck_assert_int_eq(atomic_load(&s->tasks), 1);
	if (n)
		wp_handle_free(sh[0].h);
	wp_pool_destroy(pool);
	for (k = 0; k < n; k++)
		ck_assert_int_eq(atomic_load(&sh[k].exits), 1);
}

static void seq_run(struct sequence *s, int i)
{
	struct wp_pool_options opt;
	wp_pool *pool = NULL;
	wp_ctx *ctx = NULL;
	int rc;

	wp_pool_options_init(&opt);
	opt.backend = wp_test_backend(i);
	opt.workers = 2;
	if (!ok(s, "wp_pool_create", wp_pool_create(&pool, &opt)))
		return;
	if (ok(s, "wp_ctx_with_timeout",
	       wp_ctx_with_timeout(&ctx, NULL, 1000000))) {
		rc = wp_pool_run(pool, ctx);
		if (ok(s, "wp_pool_run", rc))
			ck_assert_int_eq(rc, 0);
		wp_ctx_release(ctx);
	}
	wp_pool_destroy(pool);
}

static void sequence(struct sequence *s, int i)
{
	wp_ctx *ctx = NULL;
	int fd;

	if (!ok(s, "wp_ctx_with_timeout",
		wp_ctx_with_timeout(&ctx, NULL, 60000000000ull)))
		ctx = NULL;
	if (ctx) {
		fd = wp_ctx_fd(ctx);
		if (ok(s, "wp_ctx_fd", fd))
			ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	}
	seq_pool(s, i, ctx);
	seq_run(s, i);
	wp_ctx_release(ctx);
}

START_TEST(every_failure_returns_a_clean_error_and_leaks_nothing)
{
	int fds = wp_test_count_fds();
	long n, injected, faults = 0;
	struct sequence s;

	for (n = 0;; n++) {
		memset(&s, 0, sizeof(s));
		s.n = n;
		wp__fault_arm(n);
		sequence(&s, _i);
		injected = wp__fault_injected();
		wp__fault_arm(-1);

		ck_assert_int_eq(wp_test_count_fds(), fds);
		ck_assert_msg(s.failed == injected, "fault %ld: %ld injected, "
			      "%d calls failed", n, injected, s.failed);
		if (!injected)
			break;
		faults++;
	}
	printf("faults on %s: %ld failures injected, one per run, each "
	       "returned by one call\n", wp_test_backend_name(_i), faults);
	ck_assert_int_ge(faults, 10);
}
END_TEST

/* Whether a pool left to choose its backend gets io_uring here. */
static bool uring_available(void)
{
	wp_pool *pool = NULL;
	bool on_uring;

	ck_assert_int_eq(wp_pool_create(&pool, NULL), 0);
	on_uring = wp_pool_backend(pool) == WP_BACKEND_URING;
	wp_pool_destroy(pool);
	return on_uring;
}

/*
 * With the backend left to the library, a failure while io_uring is set
 * up is not an error: the pool comes up on epoll and says why.
 */
START_TEST(auto_backend_falls_back_to_epoll_on_any_setup_failure)
{
	int fds = wp_test_count_fds(), rc, reason;
	long n, injected, fallbacks = 0;
	struct wp_pool_options opt;
	const char *why;
	wp_pool *pool;

	unsetenv("WP_BACKEND");
	if (!uring_available()) {
		printf("skipped: io_uring is not available here\n");
		return;
	}
	wp_pool_options_init(&opt);
	opt.workers = 2;
	for (n = 0;; n++) {
		pool = NULL;
		wp__fault_arm(n);
		rc = wp_pool_create(&pool, &opt);
		injected = wp__fault_injected();
		wp__fault_arm(-1);

		if (rc) {
			ck_assert_msg(injected && (rc == -ENOMEM ||
						   rc == -EMFILE),
				      "fault %ld: wp_pool_create: %d", n, rc);
		} else {
			reason = wp_pool_backend_reason(pool, &why);
			if (wp_pool_backend(pool) == WP_BACKEND_EPOLL) {
				ck_assert_int_eq(injected, 1);
				ck_assert(reason == -ENOMEM ||
					  reason == -EMFILE);
				ck_assert_ptr_nonnull(why);
				fallbacks++;
			}
			ck_assert_int_eq(wp_pool_start(pool), 0);
			wp_pool_destroy(pool);
		}
		ck_assert_int_eq(wp_test_count_fds(), fds);
		if (!injected)
			break;
	}
	printf("faults on auto: %ld failures injected, %ld fell back to "
	       "epoll\n", n, fallbacks);
	ck_assert_int_ge(fallbacks, 2);
}
END_TEST

/*
 * A start whose last thread cannot be created. The workers made before it
 * must not have run anything (one queued handler here takes the pool's
 * lock, which the failing start holds) nor set up anything a second start
 * cannot use: after the retry, every worker runs what was queued before
 * and wakes for what comes after.
 */
enum { RETRY_WORKERS = 3 };

struct retry {
	wp_pool *pool;
	wp_handle *h[RETRY_WORKERS];
	wp_handle *extra;	/* registered by a handler */
	atomic_int ran;
};

static int retry_event(wp_ctx *ctx, void *event, void *arg)
{
	struct retry *r = arg;

	(void)ctx;
	if (event && !r->extra)
		ck_assert_int_eq(wp_pool_register(r->pool, retry_event, r,
						  &r->extra), 0);
	atomic_fetch_add(&r->ran, 1);
	return 0;
}

START_TEST(a_start_that_fails_part_way_can_be_retried)
{
	struct wp_pool_options opt;
	struct retry r = { 0 };
	int k;

	wp_pool_options_init(&opt);
	opt.backend = wp_test_backend(_i);
	opt.workers = RETRY_WORKERS;
	ck_assert_int_eq(wp_pool_create(&r.pool, &opt), 0);
	for (k = 0; k < RETRY_WORKERS; k++) {
		ck_assert_int_eq(wp_pool_register(r.pool, retry_event, &r,
						  &r.h[k]), 0);
		ck_assert_int_eq(wp_handle_add_event(r.h[k], NULL,
						     k ? NULL : &r), 0);
	}

	/* Thread creation is the only hook a start passes. */
	wp__fault_arm(RETRY_WORKERS - 1);
	ck_assert_int_eq(wp_pool_start(r.pool), -EAGAIN);
	ck_assert_int_eq(wp__fault_injected(), 1);
	wp__fault_arm(-1);
	ck_assert_int_eq(atomic_load(&r.ran), 0);

	ck_assert_int_eq(wp_pool_start(r.pool), 0);
	ck_assert(wp_test_wait_atleast(&r.ran, RETRY_WORKERS));
	ck_assert_ptr_nonnull(r.extra);
	/* Long enough for the workers to stop polling and sleep. */
	wp_test_sleep_ms(20);
	for (k = 0; k < RETRY_WORKERS; k++)
		ck_assert_int_eq(wp_handle_add_event(r.h[k], NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&r.ran, 2 * RETRY_WORKERS));

	wp_pool_destroy(r.pool);
	ck_assert_int_eq(atomic_load(&r.ran), 2 * RETRY_WORKERS);
}
END_TEST

static Suite *faults_suite(void)
{
	Suite *s = suite_create("faults");
	TCase *tc;

	tc = wp_test_tcase("injected");
	wp_test_add(tc, every_failure_returns_a_clean_error_and_leaks_nothing);
	tcase_add_test(tc,
		       auto_backend_falls_back_to_epoll_on_any_setup_failure);
	wp_test_add(tc, a_start_that_fails_part_way_can_be_retried);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return wp_test_run(faults_suite());
}
