/* SPDX-License-Identifier: MIT */
/*
 * Exits: a handler's error ends its handle, a handle exits exactly once
 * whatever races to end it, and its error descriptor tells other event
 * loops when it has.
 */
#include <fcntl.h>
#include <limits.h>
#include <sys/epoll.h>
#include <sys/select.h>

#include "harness.h"

/* A handle that fails on request and records how it exited. */
struct failing {
	struct wp_test_gate gate;
	atomic_int calls;
	atomic_int exits;
	atomic_int exit_err;
	atomic_int exit_off_worker;
	_Atomic unsigned long worker;
	int code;
};

/* Events carrying FAIL return the handle's code, after the gate opens. */
static void *const FAIL = (void *)1;

static int fail_on_request(wp_ctx *ctx, void *event, void *arg)
{
	struct failing *f = arg;

	(void)ctx;
	atomic_store(&f->worker, (unsigned long)pthread_self());
	atomic_fetch_add(&f->calls, 1);
	if (event != FAIL)
		return 0;
	wp_test_gate_wait(&f->gate);
	return f->code;
}

static void note_exit(int err, void *arg)
{
	struct failing *f = arg;

	if (atomic_load(&f->worker) != (unsigned long)pthread_self())
		atomic_fetch_add(&f->exit_off_worker, 1);
	atomic_store(&f->exit_err, err);
	atomic_fetch_add(&f->exits, 1);
}

static wp_handle *failing_handle(wp_pool *pool, struct failing *f, int code)
{
	wp_handle *h = NULL;

	*f = (struct failing){ .code = code, .exit_err = 1 };
	wp_test_gate_init(&f->gate);
	ck_assert_int_eq(wp_pool_register(pool, fail_on_request, f, &h), 0);
	ck_assert_int_eq(wp_handle_on_exit(h, note_exit, f), 0);
	return h;
}

/* Makes h fail with its code and waits for its exit callback. */
static void fail_now(wp_handle *h, struct failing *f)
{
	ck_assert_int_eq(wp_handle_add_event(h, NULL, FAIL), 0);
	wp_test_gate_open(&f->gate);
	ck_assert(wp_test_wait_atleast(&f->exits, 1));
}

START_TEST(handler_error_drops_queued_events_and_exits_once)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct failing f;
	wp_handle *h = failing_handle(pool, &f, 7);
	int fd = wp_handle_error_fd(h), k;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(wp_handle_add_event(h, NULL, FAIL), 0);
	for (k = 0; k < 4; k++)
		ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
	ck_assert(!wp_handle_exited(h));
	ck_assert_int_eq(wp_handle_error(h), 0);

	wp_test_gate_open(&f.gate);
	ck_assert(wp_test_readable(fd, WP_TEST_WAIT_MS));
	ck_assert(wp_test_wait_atleast(&f.exits, 1));
	ck_assert(wp_handle_exited(h));
	ck_assert_int_eq(wp_handle_error(h), 7);

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&f.calls), 1);
	ck_assert_int_eq(atomic_load(&f.exits), 1);
	ck_assert_int_eq(atomic_load(&f.exit_err), 7);
	ck_assert_int_eq(atomic_load(&f.exit_off_worker), 0);
	wp_test_gate_destroy(&f.gate);
}
END_TEST

START_TEST(handler_code_becomes_the_exit_code_as_returned)
{
	static const int codes[] = { 1, 7, -1, -EIO, INT_MAX, INT_MIN };
	wp_pool *pool = wp_test_pool(_i, 2);
	struct failing f[6];
	wp_handle *h[6];
	int k;

	for (k = 0; k < 6; k++) {
		h[k] = failing_handle(pool, &f[k], codes[k]);
		fail_now(h[k], &f[k]);
		ck_assert_int_eq(wp_handle_error(h[k]), codes[k]);
	}

	wp_pool_destroy(pool);
	for (k = 0; k < 6; k++) {
		ck_assert_int_eq(atomic_load(&f[k].exits), 1);
		ck_assert_int_eq(atomic_load(&f[k].exit_err), codes[k]);
		wp_test_gate_destroy(&f[k].gate);
	}
}
END_TEST

START_TEST(an_exited_handle_refuses_events_with_ecanceled)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	void *events[2] = { NULL, NULL };
	struct failing f;
	wp_handle *h = failing_handle(pool, &f, 3);

	fail_now(h, &f);
	ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), -ECANCELED);
	ck_assert_int_eq(wp_handle_try_add_event(h, NULL), -ECANCELED);
	ck_assert_int_eq(wp_handle_add_events(h, NULL, events, 2), -ECANCELED);
	ck_assert_int_eq(wp_handle_unregister_graceful(h, NULL), -ECANCELED);
	wp_handle_unregister(h);
	ck_assert_int_eq(wp_handle_error(h), 3);

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&f.calls), 1);
	ck_assert_int_eq(atomic_load(&f.exits), 1);
	wp_test_gate_destroy(&f.gate);
}
END_TEST

static void count_exit(int err, void *arg)
{
	(void)err;
	atomic_fetch_add((atomic_int *)arg, 1);
}

START_TEST(exit_callback_set_after_exit_is_refused_and_never_runs)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	atomic_int late = 0;
	struct failing f;
	wp_handle *h = failing_handle(pool, &f, 3);

	fail_now(h, &f);
	ck_assert_int_eq(wp_handle_on_exit(h, count_exit, &late), -ECANCELED);

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&late), 0);
	ck_assert_int_eq(atomic_load(&f.exits), 1);
	wp_test_gate_destroy(&f.gate);
}
END_TEST

START_TEST(exit_after_error_is_not_repeated_by_unregister_or_stop)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct failing f;
	wp_handle *h = failing_handle(pool, &f, 11);

	fail_now(h, &f);
	wp_handle_unregister(h);
	ck_assert_int_eq(wp_pool_stop(pool), 0);
	ck_assert_int_eq(wp_handle_error(h), 11);

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&f.exits), 1);
	ck_assert_int_eq(atomic_load(&f.exit_err), 11);
	wp_test_gate_destroy(&f.gate);
}
END_TEST

/*
 * Every way of ending a handle at once: a failing event, unregister,
 * graceful unregister and, every other round, the pool stopping. Each
 * handle exits exactly once, with the code of whichever came first.
 */
enum { RACE_ROUNDS = 30, RACE_HANDLES = 4, RACE_CODE = 9 };

struct race_exit {
	atomic_int calls;
	atomic_int err;
	_Atomic unsigned long thread;
};

struct race {
	wp_handle *h[RACE_HANDLES];
	struct race_exit e[RACE_HANDLES];
	pthread_barrier_t start;
};

static int fail_if_asked(wp_ctx *ctx, void *event, void *arg)
{
	(void)ctx;
	(void)arg;
	return event == FAIL ? RACE_CODE : 0;
}

static void note_race_exit(int err, void *arg)
{
	struct race_exit *e = arg;

	atomic_store(&e->thread, (unsigned long)pthread_self());
	atomic_store(&e->err, err);
	atomic_fetch_add(&e->calls, 1);
}

static void *race_fail(void *arg)
{
	struct race *r = arg;
	int k;

	pthread_barrier_wait(&r->start);
	for (k = 0; k < RACE_HANDLES; k++) {
		wp_handle_add_event(r->h[k], NULL, NULL);
		wp_handle_add_event(r->h[k], NULL, FAIL);
	}
	return NULL;
}

static void *race_unregister(void *arg)
{
	struct race *r = arg;
	int k;

	pthread_barrier_wait(&r->start);
	for (k = 0; k < RACE_HANDLES; k += 2)
		wp_handle_unregister(r->h[k]);
	return NULL;
}

static void *race_graceful(void *arg)
{
	struct race *r = arg;
	int k;

	pthread_barrier_wait(&r->start);
	for (k = RACE_HANDLES - 1; k >= 0; k--)
		wp_handle_unregister_graceful(r->h[k], NULL);
	return NULL;
}

/* True if e's exit callback ran on self or on one of the racers t. */
static bool on_thread(struct race_exit *e, pthread_t self,
		      const pthread_t *t)
{
	unsigned long ran = atomic_load(&e->thread);
	int k;

	for (k = 0; k < 3; k++)
		if (ran == (unsigned long)t[k])
			return true;
	return ran == (unsigned long)self;
}

static void race_round(int i, bool stop)
{
	void *(*const racer[])(void *) = {
		race_fail, race_unregister, race_graceful,
	};
	wp_pool *pool = wp_test_pool_opts(i, 2, 16, true);
	pthread_t t[3];
	struct race r;
	int k, err;

	memset(&r, 0, sizeof(r));
	pthread_barrier_init(&r.start, NULL, 4);
	for (k = 0; k < RACE_HANDLES; k++) {
		ck_assert_int_eq(wp_pool_register(pool, fail_if_asked, NULL,
						  &r.h[k]), 0);
		ck_assert_int_eq(wp_handle_on_exit(r.h[k], note_race_exit,
						   &r.e[k]), 0);
	}
	for (k = 0; k < 3; k++)
		wp_test_thread(&t[k], racer[k], &r);

	pthread_barrier_wait(&r.start);
	if (stop)
		ck_assert_int_eq(wp_pool_stop(pool), 0);
	for (k = 0; k < 3; k++)
		wp_test_join(t[k]);

	for (k = 0; k < RACE_HANDLES; k++) {
		ck_assert(wp_handle_exited(r.h[k]));
		err = wp_handle_error(r.h[k]);
		ck_assert_msg(err == RACE_CODE || err == -ECANCELED ||
			      err == 0 || (stop && err == -ESHUTDOWN),
			      "exit code %d", err);
		ck_assert_int_eq(atomic_load(&r.e[k].calls), 1);
		ck_assert_int_eq(atomic_load(&r.e[k].err), err);
		ck_assert_msg(!on_thread(&r.e[k], pthread_self(), t),
			      "exit %d (stop %d) ran off the worker", err,
			      stop);
	}
	wp_pool_destroy(pool);
	for (k = 0; k < RACE_HANDLES; k++)
		ck_assert_int_eq(atomic_load(&r.e[k].calls), 1);
	pthread_barrier_destroy(&r.start);
}

START_TEST(a_handle_exits_exactly_once_whatever_races_to_end_it)
{
	int round;

	for (round = 0; round < RACE_ROUNDS; round++)
		race_round(_i, round % 2);
}
END_TEST

/*
 * Replacing the exit callback while the handle exits: the exit runs the
 * old function with the old argument or the new with the new, and the
 * replacement succeeds exactly when the new one runs.
 */
#define SWAP_ROUNDS 2000

struct swap {
	atomic_int old_runs;
	atomic_int new_runs;
	atomic_int mismatched;
};

/* Each function's own argument; the callbacks count what they got. */
static struct swap swap_old, swap_new;

static void swap_old_exit(int err, void *arg)
{
	(void)err;
	atomic_fetch_add(arg == &swap_old ? &swap_old.old_runs :
					    &swap_old.mismatched, 1);
}

static void swap_new_exit(int err, void *arg)
{
	(void)err;
	atomic_fetch_add(arg == &swap_new ? &swap_new.new_runs :
					    &swap_new.mismatched, 1);
}

static int fail_at_once(wp_ctx *ctx, void *event, void *arg)
{
	(void)ctx;
	(void)event;
	(void)arg;
	return -1;
}

START_TEST(an_exit_callback_replaced_during_the_exit_keeps_its_arg)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	int replaced = 0, round, rc;
	wp_handle *h;

	memset(&swap_old, 0, sizeof(swap_old));
	memset(&swap_new, 0, sizeof(swap_new));
	for (round = 0; round < SWAP_ROUNDS; round++) {
		ck_assert_int_eq(wp_pool_register(pool, fail_at_once, NULL,
						  &h), 0);
		ck_assert_int_eq(wp_handle_on_exit(h, swap_old_exit,
						   &swap_old), 0);
		ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
		rc = wp_handle_on_exit(h, swap_new_exit, &swap_new);
		ck_assert_msg(rc == 0 || rc == -ECANCELED, "on_exit: %d", rc);
		replaced += rc == 0;
		wp_handle_free(h);
	}
	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&swap_old.mismatched) +
			 atomic_load(&swap_new.mismatched), 0);
	ck_assert_int_eq(atomic_load(&swap_new.new_runs), replaced);
	ck_assert_int_eq(atomic_load(&swap_old.old_runs),
			 SWAP_ROUNDS - replaced);
}
END_TEST

/*
 * Two threads replacing the exit callback at once, each with its own
 * pair: whichever is in place when the handle ends runs with its own
 * argument.
 */
struct replacer {
	wp_handle *h;
	wp_exit_fn fn;
	void *arg;
	atomic_int failed;
};

static void *replace_often(void *arg)
{
	struct replacer *r = arg;
	int k;

	for (k = 0; k < 1000; k++)
		if (wp_handle_on_exit(r->h, r->fn, r->arg))
			atomic_fetch_add(&r->failed, 1);
	return NULL;
}

START_TEST(two_threads_replacing_the_exit_callback_keep_pairs_whole)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct replacer r[2] = {
		{ .fn = swap_old_exit, .arg = &swap_old },
		{ .fn = swap_new_exit, .arg = &swap_new },
	};
	pthread_t t[2];
	int round, k;
	wp_handle *h;

	memset(&swap_old, 0, sizeof(swap_old));
	memset(&swap_new, 0, sizeof(swap_new));
	for (round = 0; round < 20; round++) {
		ck_assert_int_eq(wp_pool_register(pool, fail_at_once, NULL,
						  &h), 0);
		for (k = 0; k < 2; k++) {
			r[k].h = h;
			ck_assert_int_eq(pthread_create(&t[k], NULL,
							replace_often, &r[k]),
					 0);
		}
		for (k = 0; k < 2; k++)
			pthread_join(t[k], NULL);
		wp_handle_free(h);
	}
	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&r[0].failed) +
			 atomic_load(&r[1].failed), 0);
	ck_assert_int_eq(atomic_load(&swap_old.mismatched) +
			 atomic_load(&swap_new.mismatched), 0);
	ck_assert_int_eq(atomic_load(&swap_old.old_runs) +
			 atomic_load(&swap_new.new_runs), 20);
}
END_TEST

/* The error descriptor. */

START_TEST(error_fd_is_made_on_first_request_only)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct failing f;
	int before = wp_test_count_fds();
	wp_handle *h = failing_handle(pool, &f, 1);
	int fd;

	ck_assert_int_eq(wp_test_count_fds(), before);
	fd = wp_handle_error_fd(h);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(wp_test_count_fds(), before + 1);
	ck_assert_int_eq(wp_handle_error_fd(h), fd);
	ck_assert_int_eq(wp_test_count_fds(), before + 1);

	wp_handle_free(h);
	ck_assert_int_eq(wp_test_count_fds(), before);
	wp_pool_destroy(pool);
	wp_test_gate_destroy(&f.gate);
}
END_TEST

START_TEST(error_fd_is_a_cloexec_nonblocking_eventfd)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	char path[64], target[128];
	struct failing f;
	wp_handle *h = failing_handle(pool, &f, 1);
	int fd = wp_handle_error_fd(h);
	ssize_t n;

	ck_assert_int_ge(fd, 0);
	ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	ck_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	ck_assert_int_gt(n, 0);
	target[n] = '\0';
	ck_assert_str_eq(target, "anon_inode:[eventfd]");

	wp_pool_destroy(pool);
	wp_test_gate_destroy(&f.gate);
}
END_TEST

static void *open_gate_soon(void *arg)
{
	wp_test_sleep_ms(20);
	wp_test_gate_open(arg);
	return NULL;
}

/*
 * Starts a handle towards its exit: it fails once a helper thread opens
 * its gate, while the test waits on the descriptor.
 */
static int fail_soon(wp_handle *h, struct failing *f, pthread_t *t)
{
	int fd = wp_handle_error_fd(h);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(wp_handle_add_event(h, NULL, FAIL), 0);
	ck_assert(!wp_test_readable(fd, 0));
	wp_test_thread(t, open_gate_soon, &f->gate);
	return fd;
}

START_TEST(error_fd_wakes_poll_when_the_handle_exits)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct failing f;
	wp_handle *h = failing_handle(pool, &f, 4);
	pthread_t t;
	int fd = fail_soon(h, &f, &t);

	ck_assert(wp_test_readable(fd, WP_TEST_WAIT_MS));
	ck_assert(wp_test_readable(fd, 0));
	ck_assert_int_eq(wp_handle_error(h), 4);

	wp_test_join(t);
	wp_pool_destroy(pool);
	wp_test_gate_destroy(&f.gate);
}
END_TEST

START_TEST(error_fd_wakes_select_when_the_handle_exits)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct timeval tv = { .tv_sec = WP_TEST_WAIT_MS / 1000 };
	struct failing f;
	wp_handle *h = failing_handle(pool, &f, 4);
	pthread_t t;
	int fd = fail_soon(h, &f, &t);
	fd_set set;

	ck_assert_int_lt(fd, FD_SETSIZE);
	FD_ZERO(&set);
	FD_SET(fd, &set);
	ck_assert_int_eq(select(fd + 1, &set, NULL, NULL, &tv), 1);
	ck_assert(FD_ISSET(fd, &set));
	ck_assert_int_eq(wp_handle_error(h), 4);

	wp_test_join(t);
	wp_pool_destroy(pool);
	wp_test_gate_destroy(&f.gate);
}
END_TEST

START_TEST(error_fd_wakes_epoll_when_the_handle_exits)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct epoll_event ev = { .events = EPOLLIN }, out;
	struct failing f;
	wp_handle *h = failing_handle(pool, &f, 4);
	pthread_t t;
	int fd = fail_soon(h, &f, &t);
	int ep = epoll_create1(EPOLL_CLOEXEC);

	ck_assert_int_ge(ep, 0);
	ev.data.fd = fd;
	ck_assert_int_eq(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
	ck_assert_int_eq(epoll_wait(ep, &out, 1, WP_TEST_WAIT_MS), 1);
	ck_assert_int_eq(out.data.fd, fd);
	ck_assert(out.events & EPOLLIN);
	ck_assert_int_eq(wp_handle_error(h), 4);

	close(ep);
	wp_test_join(t);
	wp_pool_destroy(pool);
	wp_test_gate_destroy(&f.gate);
}
END_TEST

START_TEST(error_fd_asked_after_the_exit_is_readable)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct failing f;
	wp_handle *h = failing_handle(pool, &f, 4);
	int fd;

	fail_now(h, &f);
	fd = wp_handle_error_fd(h);
	ck_assert_int_ge(fd, 0);
	ck_assert(wp_test_readable(fd, 0));

	wp_pool_destroy(pool);
	wp_test_gate_destroy(&f.gate);
}
END_TEST

START_TEST(error_fd_becomes_readable_on_every_kind_of_exit)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct failing f[3];
	wp_handle *h[3];
	int fd[3], k;

	for (k = 0; k < 3; k++) {
		h[k] = failing_handle(pool, &f[k], 1);
		fd[k] = wp_handle_error_fd(h[k]);
		ck_assert_int_ge(fd[k], 0);
	}
	wp_handle_unregister(h[0]);
	ck_assert_int_eq(wp_handle_unregister_graceful(h[1], NULL), 0);
	ck_assert(wp_test_readable(fd[0], 0));
	ck_assert(wp_test_readable(fd[1], 0));
	ck_assert(!wp_test_readable(fd[2], 0));

	ck_assert_int_eq(wp_pool_stop(pool), 0);
	ck_assert(wp_test_readable(fd[2], 0));
	ck_assert_int_eq(wp_handle_error(h[0]), -ECANCELED);
	ck_assert_int_eq(wp_handle_error(h[1]), 0);
	ck_assert_int_eq(wp_handle_error(h[2]), -ESHUTDOWN);

	wp_pool_destroy(pool);
	for (k = 0; k < 3; k++) {
		ck_assert_int_eq(atomic_load(&f[k].exits), 1);
		wp_test_gate_destroy(&f[k].gate);
	}
}
END_TEST

static Suite *exit_suite(void)
{
	Suite *s = suite_create("exit");
	TCase *tc;

	tc = wp_test_tcase("handler error");
	wp_test_add(tc, handler_error_drops_queued_events_and_exits_once);
	wp_test_add(tc, handler_code_becomes_the_exit_code_as_returned);
	wp_test_add(tc, an_exited_handle_refuses_events_with_ecanceled);
	wp_test_add(tc, exit_callback_set_after_exit_is_refused_and_never_runs);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("exactly once");
	wp_test_add(tc, exit_after_error_is_not_repeated_by_unregister_or_stop);
	wp_test_add(tc, a_handle_exits_exactly_once_whatever_races_to_end_it);
	wp_test_add(tc,
		    an_exit_callback_replaced_during_the_exit_keeps_its_arg);
	wp_test_add(tc,
		    two_threads_replacing_the_exit_callback_keep_pairs_whole);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("error fd");
	wp_test_add(tc, error_fd_is_made_on_first_request_only);
	wp_test_add(tc, error_fd_is_a_cloexec_nonblocking_eventfd);
	wp_test_add(tc, error_fd_wakes_poll_when_the_handle_exits);
	wp_test_add(tc, error_fd_wakes_select_when_the_handle_exits);
	wp_test_add(tc, error_fd_wakes_epoll_when_the_handle_exits);
	wp_test_add(tc, error_fd_asked_after_the_exit_is_readable);
	wp_test_add(tc, error_fd_becomes_readable_on_every_kind_of_exit);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	return wp_test_run(exit_suite());
}
