/* SPDX-License-Identifier: MIT */
/*
 * Stress: many producers, many handles and constant churn on two workers.
 * Every event accepted runs exactly once and in its producer's order, or
 * is dropped because its handle exited first; nothing runs after an exit;
 * every exit callback runs once; the counts add up.
 *
 * `make check` runs a short version. WP_STRESS_EVENTS and
 * WP_STRESS_HANDLES scale it up (`make stress` runs 10 million events on
 * 10,000 handles), and WP_STRESS_SEED fixes the random choices of a run.
 */
#include "stress.h"

#define CI_EVENTS 500000
#define CI_HANDLES 1000

static struct stress_config config(int i, long events, unsigned handles,
				   unsigned capacity)
{
	struct stress_config cfg = {
		.backend = i,
		.events = events,
		.handles = handles,
		.producers = 8,
		.churners = 2,
		.workers = 2,
		.capacity = capacity,
		.churn_every = 100,
		.fail_every = 20000,
		.seed = stress_seed(),
	};

	return cfg;
}

static void run(const char *what, const struct stress_config *cfg)
{
	uint64_t start = wp_test_now_ns();
	int fds = wp_test_count_fds();
	struct stress_counts n;

	stress(cfg, &n);
	stress_print(what, wp_test_backend_name(cfg->backend), cfg, &n,
		     (double)(wp_test_now_ns() - start) / 1e9);
	stress_assert(cfg, &n);
	ck_assert_int_eq(wp_test_count_fds(), fds);
}

START_TEST(every_event_runs_once_in_order_or_is_dropped_by_its_exit)
{
	struct stress_config cfg;

	cfg = config(_i, stress_env("WP_STRESS_EVENTS", CI_EVENTS),
		     (unsigned)stress_env("WP_STRESS_HANDLES", CI_HANDLES),
		     4096);
	run("stress", &cfg);
}
END_TEST

/*
 * Queues of eight items keep most adds waiting for room, so blocking
 * adds, full try-adds and deadlines on full queues all meet the churn.
 */
START_TEST(blocked_adds_account_for_every_event_on_tiny_queues)
{
	struct stress_config cfg;

	cfg = config(_i, stress_env("WP_STRESS_EVENTS", CI_EVENTS) / 4,
		     (unsigned)stress_env("WP_STRESS_HANDLES", CI_HANDLES) / 10,
		     8);
	cfg.churn_every = 50;
	run("stress, tiny queues", &cfg);
}
END_TEST

static Suite *stress_suite(void)
{
	long events = stress_env("WP_STRESS_EVENTS", CI_EVENTS);
	Suite *s = suite_create("stress");
	TCase *tc;

	tc = wp_test_tcase("churn");
	/* Generous for sanitizers; about 20 s a million events at worst. */
	tcase_set_timeout(tc, WP_TEST_TIMEOUT_S + (double)events / 50000);
	wp_test_add(tc,
		    every_event_runs_once_in_order_or_is_dropped_by_its_exit);
	wp_test_add(tc, blocked_adds_account_for_every_event_on_tiny_queues);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return wp_test_run(stress_suite());
}
