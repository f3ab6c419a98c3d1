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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "workerpool.h"

#define WP_TEST_NBACKENDS 2

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
