/* SPDX-License-Identifier: MIT */
/*
 * Shared helpers for the test programs. Every behavioural test is a Check
 * loop test run once per backend: the loop index _i picks the backend, so
 * a test registered with wp_test_add() runs on io_uring and on epoll.
 */
#ifndef WP_TEST_HARNESS_H
#define WP_TEST_HARNESS_H

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "workerpool.h"

#define WP_TEST_NBACKENDS 2

/*
 * Every wait in a test gives up after this long, so that a broken library
 * fails a test instead of hanging it. Check's own per-test limit is set
 * well above it by wp_test_tcase().
 */
#define WP_TEST_WAIT_MS 5000
#define WP_TEST_TIMEOUT_S 60

/* Registers fn as a loop test over both backends. */
#define wp_test_add(tc, fn) tcase_add_loop_test(tc, fn, 0, WP_TEST_NBACKENDS)

static inline enum wp_backend wp_test_backend(int i)
{
	return i == 0 ? WP_BACKEND_URING : WP_BACKEND_EPOLL;
}

static inline const char *wp_test_backend_name(int i)
{
	return i == 0 ? "uring" : "epoll";
}

/*
 * Creates a pool on backend i with the given workers and capacity (0
 * keeps the default) and starts it unless start is false.
 */
static inline wp_pool *wp_test_pool_opts(int i, unsigned workers,
					 unsigned cap, bool start)
{
	struct wp_pool_options opt;
	wp_pool *pool = NULL;
	int rc;

	wp_pool_options_init(&opt);
	opt.backend = wp_test_backend(i);
	opt.workers = workers;
	if (cap)
		opt.queue_capacity = cap;
	rc = wp_pool_create(&pool, &opt);
	ck_assert_msg(rc == 0, "wp_pool_create on %s: %s",
		      wp_test_backend_name(i), wp_strerror(rc));
	ck_assert_int_eq(wp_pool_backend(pool), wp_test_backend(i));
	if (start)
		ck_assert_int_eq(wp_pool_start(pool), 0);
	return pool;
}

static inline wp_pool *wp_test_pool(int i, unsigned workers)
{
	return wp_test_pool_opts(i, workers, 0, true);
}

/* Open descriptors of this process. */
static inline int wp_test_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;	/* the directory's own descriptor */
}

static inline void wp_test_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static inline uint64_t wp_test_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A test case whose tests may take as long as their generous waits. */
static inline TCase *wp_test_tcase(const char *name)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, WP_TEST_TIMEOUT_S);
	return tc;
}

/* Waits up to WP_TEST_WAIT_MS for *v to reach at least want. */
static inline bool wp_test_wait_atleast(atomic_int *v, int want)
{
	uint64_t end = wp_test_now_ns() + WP_TEST_WAIT_MS * 1000000ull;

	while (atomic_load(v) < want) {
		if (wp_test_now_ns() > end)
			return false;
		wp_test_sleep_ms(1);
	}
	return true;
}

/* Waits up to WP_TEST_WAIT_MS for wp_ctx_done(ctx). */
static inline bool wp_test_wait_ctx(const wp_ctx *ctx)
{
	uint64_t end = wp_test_now_ns() + WP_TEST_WAIT_MS * 1000000ull;

	while (!wp_ctx_done(ctx)) {
		if (wp_test_now_ns() > end)
			return false;
		wp_test_sleep_ms(1);
	}
	return true;
}

/* True if fd polls readable within ms milliseconds. */
static inline bool wp_test_readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int rc;

	do
		rc = poll(&p, 1, ms);
	while (rc < 0 && errno == EINTR);
	return rc == 1 && (p.revents & POLLIN);
}

/* A context that times out after ms milliseconds. */
static inline wp_ctx *wp_test_ctx_ms(wp_ctx *parent, long ms)
{
	wp_ctx *ctx = NULL;

	ck_assert_int_eq(wp_ctx_with_timeout(&ctx, parent,
					     (uint64_t)ms * 1000000u), 0);
	return ctx;
}

/*
 * A gate that threads (handlers, usually) wait on until the test opens
 * it. A wait gives up after WP_TEST_WAIT_MS and returns false, so that a
 * forgotten gate cannot hang a worker forever.
 */
struct wp_test_gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool open;
};

static inline void wp_test_gate_init(struct wp_test_gate *g)
{
	pthread_condattr_t attr;

	pthread_mutex_init(&g->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&g->cond, &attr);
	pthread_condattr_destroy(&attr);
	g->open = false;
}

static inline void wp_test_gate_open(struct wp_test_gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->open = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

static inline bool wp_test_gate_wait(struct wp_test_gate *g)
{
	uint64_t end = wp_test_now_ns() + WP_TEST_WAIT_MS * 1000000ull;
	struct timespec ts = {
		.tv_sec = (time_t)(end / 1000000000u),
		.tv_nsec = (long)(end % 1000000000u),
	};
	bool open;

	pthread_mutex_lock(&g->lock);
	while (!g->open)
		if (pthread_cond_timedwait(&g->cond, &g->lock, &ts) != 0)
			break;
	open = g->open;
	pthread_mutex_unlock(&g->lock);
	return open;
}

static inline void wp_test_gate_destroy(struct wp_test_gate *g)
{
	pthread_cond_destroy(&g->cond);
	pthread_mutex_destroy(&g->lock);
}

/* The thread a one-worker pool runs its work on. */
struct wp_test_self {
	struct wp_test_gate ran;
	pthread_t thread;
};

static inline void wp_test__note_self(void *arg)
{
	struct wp_test_self *s = arg;

	s->thread = pthread_self();
	wp_test_gate_open(&s->ran);
}

static inline pthread_t wp_test_worker_thread(wp_pool *pool)
{
	struct wp_test_self s;

	ck_assert_uint_eq(wp_pool_workers(pool), 1);
	wp_test_gate_init(&s.ran);
	ck_assert_int_eq(wp_pool_go(pool, NULL, wp_test__note_self, &s), 0);
	ck_assert(wp_test_gate_wait(&s.ran));
	wp_test_gate_destroy(&s.ran);
	return s.thread;
}

static inline void wp_test_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
	ck_assert_int_eq(pthread_create(t, NULL, fn, arg), 0);
}

static inline void wp_test_join(pthread_t t)
{
	ck_assert_int_eq(pthread_join(t, NULL), 0);
}

/*
 * Checks that a handle's callbacks run one at a time and all on one
 * thread: each callback calls enter first and leave last.
 */
struct wp_test_bound {
	atomic_int inside;
	atomic_int overlaps;
	atomic_int wrong_thread;
	_Atomic unsigned long thread;
};

static inline void wp_test_bound_enter(struct wp_test_bound *b)
{
	unsigned long self = (unsigned long)pthread_self();
	unsigned long first = 0;

	if (atomic_exchange(&b->inside, 1))
		atomic_fetch_add(&b->overlaps, 1);
	if (!atomic_compare_exchange_strong(&b->thread, &first, self) &&
	    first != self)
		atomic_fetch_add(&b->wrong_thread, 1);
}

static inline void wp_test_bound_leave(struct wp_test_bound *b)
{
	atomic_store(&b->inside, 0);
}

/* Runs the suite and returns the process exit status. */
static inline int wp_test_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
