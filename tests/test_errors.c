/* SPDX-License-Identifier: MIT */
/*
 * Misuse and error texts: every documented misuse returns -EINVAL instead
 * of crashing, wp_strerror() names every code, and wp_version() agrees
 * with the header.
 */
#include <limits.h>

#include "harness.h"

/*
 * Contexts from nowhere: zeroed memory and a stack struct full of junk,
 * both larger than any real context, so reading them is always in bounds.
 */
struct fake_ctx {
	union {
		unsigned char bytes[512];
		max_align_t align;
	};
};

static void fake_init(struct fake_ctx *zeroed, struct fake_ctx *junk)
{
	memset(zeroed, 0, sizeof(*zeroed));
	memset(junk, 0x5a, sizeof(*junk));
}

static bool all_zero(const struct fake_ctx *f)
{
	size_t k;

	for (k = 0; k < sizeof(f->bytes); k++)
		if (f->bytes[k])
			return false;
	return true;
}

static int never_called(wp_ctx *ctx, void *event, void *arg)
{
	(void)ctx;
	(void)event;
	atomic_fetch_add((atomic_int *)arg, 1);
	return 0;
}

static void never_run(void *arg)
{
	atomic_fetch_add((atomic_int *)arg, 1);
}

/* Contexts. */

START_TEST(ctx_calls_refuse_null)
{
	wp_ctx *ctx = NULL;

	ck_assert_int_eq(wp_ctx_create(NULL, NULL), -EINVAL);
	ck_assert_int_eq(wp_ctx_with_timeout(NULL, NULL, 1000), -EINVAL);
	ck_assert_int_eq(wp_ctx_err(NULL), -EINVAL);
	ck_assert_int_eq(wp_ctx_fd(NULL), -EINVAL);
	wp_ctx_cancel(NULL);
	wp_ctx_release(NULL);

	ck_assert_int_eq(wp_ctx_create(&ctx, NULL), 0);
	ck_assert_int_eq(wp_ctx_with_timeout(NULL, ctx, 1000), -EINVAL);
	ck_assert_int_eq(wp_ctx_err(ctx), 0);
	wp_ctx_release(ctx);
}
END_TEST

START_TEST(ctx_calls_refuse_a_ctx_from_nowhere)
{
	struct fake_ctx zeroed, junk;
	wp_ctx *fakes[2] = { (wp_ctx *)&zeroed, (wp_ctx *)&junk };
	wp_ctx *ctx;
	int k;

	fake_init(&zeroed, &junk);
	for (k = 0; k < 2; k++) {
		ctx = NULL;
		ck_assert_int_eq(wp_ctx_create(&ctx, fakes[k]), -EINVAL);
		ck_assert_int_eq(wp_ctx_with_timeout(&ctx, fakes[k], 1000),
				 -EINVAL);
		ck_assert_int_eq(wp_ctx_err(fakes[k]), -EINVAL);
		ck_assert_int_eq(wp_ctx_fd(fakes[k]), -EINVAL);
	}
	ck_assert(all_zero(&zeroed));
}
END_TEST

/* Pools. */

START_TEST(pool_calls_refuse_null)
{
	struct wp_pool_options opt;
	atomic_int calls = 0;
	wp_handle *h = NULL;
	wp_ctx *ctx = NULL;

	wp_pool_options_init(&opt);
	opt.backend = wp_test_backend(_i);
	ck_assert_int_eq(wp_pool_create(NULL, &opt), -EINVAL);
	ck_assert_int_eq(wp_pool_start(NULL), -EINVAL);
	ck_assert_int_eq(wp_pool_stop(NULL), -EINVAL);
	ck_assert_int_eq(wp_ctx_create(&ctx, NULL), 0);
	ck_assert_int_eq(wp_pool_run(NULL, ctx), -EINVAL);
	ck_assert_int_eq(wp_pool_go(NULL, NULL, never_run, &calls), -EINVAL);
	ck_assert_int_eq(wp_pool_register(NULL, never_called, &calls, &h),
			 -EINVAL);
	wp_pool_destroy(NULL);
	wp_ctx_release(ctx);
	ck_assert_int_eq(atomic_load(&calls), 0);
}
END_TEST

START_TEST(pool_create_refuses_bad_options)
{
	struct wp_pool_options opt;
	wp_pool *pool = NULL;

	wp_pool_options_init(&opt);
	opt.backend = wp_test_backend(_i);
	opt.queue_capacity = 0;
	ck_assert_int_eq(wp_pool_create(&pool, &opt), -EINVAL);

	wp_pool_options_init(&opt);
	opt.backend = (enum wp_backend)7;
	ck_assert_int_eq(wp_pool_create(&pool, &opt), -EINVAL);

	wp_pool_options_init(&opt);
	opt.backend = wp_test_backend(_i);
	opt.ncpus = 2;
	ck_assert_int_eq(wp_pool_create(&pool, &opt), -EINVAL);
	ck_assert_ptr_null(pool);
}
END_TEST

START_TEST(pool_calls_refuse_a_ctx_from_nowhere)
{
	wp_pool *pool = wp_test_pool_opts(_i, 1, 0, false);
	struct fake_ctx zeroed, junk;
	wp_ctx *fakes[2] = { (wp_ctx *)&zeroed, (wp_ctx *)&junk };
	atomic_int calls = 0;
	int k;

	fake_init(&zeroed, &junk);
	for (k = 0; k < 2; k++) {
		ck_assert_int_eq(wp_pool_run(pool, fakes[k]), -EINVAL);
		ck_assert_int_eq(wp_pool_go(pool, fakes[k], never_run, &calls),
				 -EINVAL);
	}
	ck_assert_int_eq(wp_pool_start(pool), 0);
	for (k = 0; k < 2; k++)
		ck_assert_int_eq(wp_pool_go(pool, fakes[k], never_run, &calls),
				 -EINVAL);

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&calls), 0);
	ck_assert(all_zero(&zeroed));
}
END_TEST

START_TEST(pool_calls_refuse_missing_callbacks_and_outputs)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	atomic_int calls = 0;
	wp_handle *h = NULL;

	ck_assert_int_eq(wp_pool_go(pool, NULL, NULL, &calls), -EINVAL);
	ck_assert_int_eq(wp_pool_register(pool, NULL, &calls, &h), -EINVAL);
	ck_assert_ptr_null(h);
	ck_assert_int_eq(wp_pool_register(pool, never_called, &calls, NULL),
			 -EINVAL);

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&calls), 0);
}
END_TEST

/* Handles. */

START_TEST(handle_calls_refuse_null)
{
	void *events[1] = { NULL };

	ck_assert_int_eq(wp_handle_add_event(NULL, NULL, NULL), -EINVAL);
	ck_assert_int_eq(wp_handle_try_add_event(NULL, NULL), -EINVAL);
	ck_assert_int_eq(wp_handle_add_events(NULL, NULL, events, 1), -EINVAL);
	ck_assert_int_eq(wp_handle_on_exit(NULL, NULL, NULL), -EINVAL);
	ck_assert_int_eq(wp_handle_unregister_graceful(NULL, NULL), -EINVAL);
	ck_assert_int_eq(wp_handle_error_fd(NULL), -EINVAL);
	ck_assert_int_eq(wp_handle_error(NULL), -EINVAL);
	wp_handle_unregister(NULL);
	wp_handle_free(NULL);
}
END_TEST

START_TEST(add_events_refuses_a_null_array)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	atomic_int calls = 0;
	wp_handle *h = NULL;

	ck_assert_int_eq(wp_pool_register(pool, never_called, &calls, &h), 0);
	ck_assert_int_eq(wp_handle_add_events(h, NULL, NULL, 3), -EINVAL);
	ck_assert_int_eq(wp_handle_unregister_graceful(h, NULL), 0);

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&calls), 0);
}
END_TEST

START_TEST(handle_calls_refuse_a_ctx_from_nowhere)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct fake_ctx zeroed, junk;
	wp_ctx *fakes[2] = { (wp_ctx *)&zeroed, (wp_ctx *)&junk };
	void *events[2] = { NULL, NULL };
	atomic_int calls = 0;
	wp_handle *h = NULL;
	int k;

	fake_init(&zeroed, &junk);
	ck_assert_int_eq(wp_pool_register(pool, never_called, &calls, &h), 0);
	for (k = 0; k < 2; k++) {
		ck_assert_int_eq(wp_handle_add_event(h, fakes[k], NULL),
				 -EINVAL);
		ck_assert_int_eq(wp_handle_add_events(h, fakes[k], events, 2),
				 -EINVAL);
		ck_assert_int_eq(wp_handle_unregister_graceful(h, fakes[k]),
				 -EINVAL);
	}
	ck_assert(!wp_handle_exited(h));
	ck_assert_int_eq(wp_handle_unregister_graceful(h, NULL), 0);

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&calls), 0);
	ck_assert(all_zero(&zeroed));
}
END_TEST

/* Error texts. */

START_TEST(strerror_names_library_and_handler_codes)
{
	static const int codes[] = {
		0, -EINVAL, -ENOMEM, -ECANCELED, -ETIMEDOUT, -EAGAIN,
		-EDEADLK, -ESHUTDOWN, -EALREADY, -EMFILE, -ENOSYS,
		1, 42, -100000, INT_MAX, INT_MIN,
	};
	const char *text;
	size_t k;

	for (k = 0; k < sizeof(codes) / sizeof(codes[0]); k++) {
		text = wp_strerror(codes[k]);
		ck_assert_msg(text != NULL, "no text for %d", codes[k]);
		ck_assert_msg(text[0] != '\0', "empty text for %d", codes[k]);
	}
	ck_assert_str_ne(wp_strerror(-EINVAL), wp_strerror(-ECANCELED));
	ck_assert_str_ne(wp_strerror(-ETIMEDOUT), wp_strerror(-ECANCELED));
}
END_TEST

START_TEST(version_is_the_headers)
{
	char built[32];

	snprintf(built, sizeof(built), "%d.%d.%d", WP_VERSION_MAJOR,
		 WP_VERSION_MINOR, WP_VERSION_PATCH);
	ck_assert_str_eq(WP_VERSION_STRING, built);
	ck_assert_str_eq(wp_version(), WP_VERSION_STRING);
}
END_TEST

static int fail_with(wp_ctx *ctx, void *event, void *arg)
{
	(void)ctx;
	(void)arg;
	return (int)(intptr_t)event;
}

START_TEST(strerror_names_every_exit_code_a_handle_reports)
{
	static const int codes[] = { 3, -EIO, -1 };
	wp_pool *pool = wp_test_pool(_i, 1);
	wp_handle *h[4];
	const char *text;
	int k;

	for (k = 0; k < 4; k++)
		ck_assert_int_eq(wp_pool_register(pool, fail_with, NULL, &h[k]),
				 0);
	for (k = 0; k < 3; k++) {
		ck_assert_int_eq(wp_handle_add_event(h[k], NULL,
				 (void *)(intptr_t)codes[k]), 0);
		ck_assert(wp_test_readable(wp_handle_error_fd(h[k]),
					   WP_TEST_WAIT_MS));
	}
	ck_assert_int_eq(wp_pool_stop(pool), 0);

	for (k = 0; k < 4; k++) {
		text = wp_strerror(wp_handle_error(h[k]));
		ck_assert_ptr_nonnull(text);
		ck_assert(text[0] != '\0');
	}
	ck_assert_int_eq(wp_handle_error(h[3]), -ESHUTDOWN);
	wp_pool_destroy(pool);
}
END_TEST

static Suite *errors_suite(void)
{
	Suite *s = suite_create("errors");
	TCase *tc;

	tc = wp_test_tcase("misuse");
	tcase_add_test(tc, ctx_calls_refuse_null);
	tcase_add_test(tc, ctx_calls_refuse_a_ctx_from_nowhere);
	wp_test_add(tc, pool_calls_refuse_null);
	wp_test_add(tc, pool_create_refuses_bad_options);
	wp_test_add(tc, pool_calls_refuse_a_ctx_from_nowhere);
	wp_test_add(tc, pool_calls_refuse_missing_callbacks_and_outputs);
	tcase_add_test(tc, handle_calls_refuse_null);
	wp_test_add(tc, add_events_refuses_a_null_array);
	wp_test_add(tc, handle_calls_refuse_a_ctx_from_nowhere);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("strerror");
	tcase_add_test(tc, strerror_names_library_and_handler_codes);
	tcase_add_test(tc, version_is_the_headers);
	wp_test_add(tc, strerror_names_every_exit_code_a_handle_reports);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	return wp_test_run(errors_suite());
}
