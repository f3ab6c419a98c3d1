/* SPDX-License-Identifier: MIT */
/*
 * Signals: a storm of SIGUSR1, sent to every thread of the process every
 * 50 microseconds, changes nothing a caller can see. The stress run still
 * accounts for every event, and no wait that has a deadline gives up
 * before it. Each is tried with a handler installed without SA_RESTART,
 * so that system calls fail with EINTR, and with it.
 *
 * WP_SIGNAL_EVENTS scales the stress run under the storm.
 */
#include <signal.h>
#include <sys/syscall.h>

#include "stress.h"

#define CI_EVENTS 300000
#define CI_HANDLES 500
#define STORM_PERIOD_NS 50000
#define DEADLINE_MS 5
#define TRIES 20

static atomic_long delivered;

static void on_signal(int sig)
{
	(void)sig;
	atomic_fetch_add_explicit(&delivered, 1, memory_order_relaxed);
}

struct storm {
	pthread_t thread;
	atomic_bool stop;
	long sent;
	long rounds;
};

static void storm_round(struct storm *st, pid_t pid, pid_t self)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	pid_t tid;

	if (!d)
		return;
	while ((e = readdir(d)) != NULL) {
		tid = (pid_t)atoi(e->d_name);
		if (tid <= 0 || tid == self)
			continue;
		if (syscall(SYS_tgkill, pid, tid, SIGUSR1) == 0)
			st->sent++;
	}
	closedir(d);
	st->rounds++;
}

static void *storm_main(void *arg)
{
	struct timespec period = { 0, STORM_PERIOD_NS };
	pid_t pid = getpid(), self = (pid_t)syscall(SYS_gettid);
	struct storm *st = arg;

	while (!atomic_load(&st->stop)) {
		storm_round(st, pid, self);
		nanosleep(&period, NULL);
	}
	return NULL;
}

/* Installs the handler with the given flags and starts the storm. */
static void storm_start(struct storm *st, int flags)
{
	struct sigaction sa;

	memset(st, 0, sizeof(*st));
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
	atomic_store(&delivered, 0);
	wp_test_thread(&st->thread, storm_main, st);
}

/*
 * Ends the storm and checks that it was one: signals were sent and
 * caught. The handler stays, for signals still pending or deferred by a
 * sanitizer.
 */
static void storm_stop(struct storm *st)
{
	atomic_store(&st->stop, true);
	wp_test_join(st->thread);
	ck_assert_int_ge(st->rounds, 1);
	ck_assert_int_ge(st->sent, st->rounds);
	ck_assert_int_ge(atomic_load(&delivered), 1);
}

static const char *flags_name(int flags)
{
	return flags & SA_RESTART ? "SA_RESTART" : "no SA_RESTART";
}

/* The stress run, under the storm. */

static void stress_under_storm(int i, int flags)
{
	struct stress_config cfg = {
		.backend = i,
		.events = stress_env("WP_SIGNAL_EVENTS", CI_EVENTS),
		.handles = (unsigned)stress_env("WP_SIGNAL_HANDLES",
						CI_HANDLES),
		.producers = 8,
		.churners = 2,
		.workers = 2,
		.capacity = 64,
		.churn_every = 100,
		.fail_every = 20000,
		.seed = stress_seed(),
	};
	uint64_t start = wp_test_now_ns();
	struct stress_counts n;
	struct storm st;
	char what[64];

	storm_start(&st, flags);
	stress(&cfg, &n);
	storm_stop(&st);

	snprintf(what, sizeof(what), "signal storm (%s, %ld signals)",
		 flags_name(flags), st.sent);
	stress_print(what, wp_test_backend_name(i), &cfg, &n,
		     (double)(wp_test_now_ns() - start) / 1e9);
	stress_assert(&cfg, &n);
}

START_TEST(counts_add_up_under_a_signal_storm_without_sa_restart)
{
	stress_under_storm(_i, 0);
}
END_TEST

START_TEST(counts_add_up_under_a_signal_storm_with_sa_restart)
{
	stress_under_storm(_i, SA_RESTART);
}
END_TEST

/* Deadlines under the storm. */

/*
 * A handle whose first event holds the pool's only worker, with a queue
 * of one item that a second event fills.
 */
struct blocked {
	wp_pool *pool;
	wp_handle *blocker;
	struct wp_test_gate gate;
	atomic_int entered;
};

static int hold(wp_ctx *ctx, void *event, void *arg)
{
	struct blocked *b = arg;

	(void)ctx;
	if (event) {
		atomic_store(&b->entered, 1);
		wp_test_gate_wait(&b->gate);
	}
	return 0;
}

static void blocked_start(struct blocked *b, int i)
{
	b->pool = wp_test_pool_opts(i, 1, 1, true);
	wp_test_gate_init(&b->gate);
	atomic_init(&b->entered, 0);
	ck_assert_int_eq(wp_pool_register(b->pool, hold, b, &b->blocker), 0);
	ck_assert_int_eq(wp_handle_add_event(b->blocker, NULL, b), 0);
	ck_assert(wp_test_wait_atleast(&b->entered, 1));
	ck_assert_int_eq(wp_handle_try_add_event(b->blocker, NULL), 0);
	ck_assert_int_eq(wp_handle_try_add_event(b->blocker, NULL), -EAGAIN);
}

static void blocked_end(struct blocked *b)
{
	wp_test_gate_open(&b->gate);
	wp_pool_destroy(b->pool);
	wp_test_gate_destroy(&b->gate);
}

static void blocking_adds_meet_their_deadline(int i, int flags)
{
	struct blocked b;
	struct storm st;
	uint64_t start, took[TRIES];
	void *batch[2] = { NULL, NULL };
	int rc[TRIES], k;
	wp_ctx *ctx;

	blocked_start(&b, i);
	storm_start(&st, flags);
	for (k = 0; k < TRIES; k++) {
		start = wp_test_now_ns();
		ctx = wp_test_ctx_ms(NULL, DEADLINE_MS);
		if (k % 2)
			rc[k] = wp_handle_add_events(b.blocker, ctx, batch, 2);
		else
			rc[k] = wp_handle_add_event(b.blocker, ctx, NULL);
		took[k] = wp_test_now_ns() - start;
		wp_ctx_release(ctx);
	}
	storm_stop(&st);
	blocked_end(&b);

	for (k = 0; k < TRIES; k++) {
		ck_assert_msg(rc[k] == -ETIMEDOUT, "%s, try %d: %d",
			      flags_name(flags), k, rc[k]);
		ck_assert_msg(took[k] >= DEADLINE_MS * 1000000ull,
			      "%s, try %d: timed out after %llu ns",
			      flags_name(flags), k,
			      (unsigned long long)took[k]);
	}
}

START_TEST(add_never_times_out_before_its_deadline_under_signals)
{
	blocking_adds_meet_their_deadline(_i, 0);
	blocking_adds_meet_their_deadline(_i, SA_RESTART);
}
END_TEST

static void graceful_meets_its_deadline(int i, int flags)
{
	struct blocked b;
	struct storm st;
	uint64_t start, took[TRIES];
	int rc[TRIES], err[TRIES], k;
	wp_handle *h;
	wp_ctx *ctx;

	blocked_start(&b, i);
	storm_start(&st, flags);
	for (k = 0; k < TRIES; k++) {
		/*
		 * Without an exit callback the unregister that follows the
		 * deadline needs nothing from the held worker.
		 */
		ck_assert_int_eq(wp_pool_register(b.pool, hold, &b, &h), 0);
		start = wp_test_now_ns();
		ctx = wp_test_ctx_ms(NULL, DEADLINE_MS);
		rc[k] = wp_handle_unregister_graceful(h, ctx);
		took[k] = wp_test_now_ns() - start;
		err[k] = wp_handle_error(h);
		wp_ctx_release(ctx);
		wp_handle_free(h);
	}
	storm_stop(&st);
	blocked_end(&b);

	for (k = 0; k < TRIES; k++) {
		ck_assert_int_eq(rc[k], -ETIMEDOUT);
		ck_assert_int_eq(err[k], -ECANCELED);
		ck_assert_msg(took[k] >= DEADLINE_MS * 1000000ull,
			      "%s, try %d: timed out after %llu ns",
			      flags_name(flags), k,
			      (unsigned long long)took[k]);
	}
}

START_TEST(graceful_never_gives_up_before_its_deadline_under_signals)
{
	graceful_meets_its_deadline(_i, 0);
	graceful_meets_its_deadline(_i, SA_RESTART);
}
END_TEST

static void run_meets_its_deadline(int i, int flags)
{
	uint64_t start, took[TRIES / 2];
	int rc[TRIES / 2], k;
	struct storm st;
	wp_pool *pool;
	wp_ctx *ctx;

	storm_start(&st, flags);
	for (k = 0; k < TRIES / 2; k++) {
		pool = wp_test_pool_opts(i, 2, 0, false);
		start = wp_test_now_ns();
		ctx = wp_test_ctx_ms(NULL, DEADLINE_MS);
		rc[k] = wp_pool_run(pool, ctx);
		took[k] = wp_test_now_ns() - start;
		wp_ctx_release(ctx);
		wp_pool_destroy(pool);
	}
	storm_stop(&st);

	for (k = 0; k < TRIES / 2; k++) {
		ck_assert_int_eq(rc[k], 0);
		ck_assert_msg(took[k] >= DEADLINE_MS * 1000000ull,
			      "%s, try %d: returned after %llu ns",
			      flags_name(flags), k,
			      (unsigned long long)took[k]);
	}
}

START_TEST(run_never_returns_before_its_deadline_under_signals)
{
	run_meets_its_deadline(_i, 0);
	run_meets_its_deadline(_i, SA_RESTART);
}
END_TEST

static Suite *signals_suite(void)
{
	long events = stress_env("WP_SIGNAL_EVENTS", CI_EVENTS);
	Suite *s = suite_create("signals");
	TCase *tc;

	tc = wp_test_tcase("stress");
	tcase_set_timeout(tc, WP_TEST_TIMEOUT_S + (double)events / 20000);
	wp_test_add(tc, counts_add_up_under_a_signal_storm_without_sa_restart);
	wp_test_add(tc, counts_add_up_under_a_signal_storm_with_sa_restart);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("deadlines");
	wp_test_add(tc, add_never_times_out_before_its_deadline_under_signals);
	wp_test_add(tc,
		    graceful_never_gives_up_before_its_deadline_under_signals);
	wp_test_add(tc, run_never_returns_before_its_deadline_under_signals);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return wp_test_run(signals_suite());
}
