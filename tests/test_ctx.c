/* SPDX-License-Identifier: MIT */
/*
 * Contexts: cancellation, deadlines, parents and children, the readiness
 * descriptor, and the context a handler sees.
 */
#include <fcntl.h>

#include "harness.h"

/* A live context ends once, with the reason of whatever ended it first. */

START_TEST(new_ctx_is_live)
{
	wp_ctx *ctx = NULL;

	ck_assert_int_eq(wp_ctx_create(&ctx, NULL), 0);
	ck_assert_ptr_nonnull(ctx);
	ck_assert(!wp_ctx_done(ctx));
	ck_assert_int_eq(wp_ctx_err(ctx), 0);
	wp_ctx_release(ctx);
}
END_TEST

START_TEST(cancel_ends_ctx_with_ecanceled)
{
	wp_ctx *ctx = NULL;

	ck_assert_int_eq(wp_ctx_create(&ctx, NULL), 0);
	wp_ctx_cancel(ctx);
	ck_assert(wp_ctx_done(ctx));
	ck_assert_int_eq(wp_ctx_err(ctx), -ECANCELED);

	wp_ctx_cancel(ctx);
	ck_assert_int_eq(wp_ctx_err(ctx), -ECANCELED);
	wp_ctx_release(ctx);
}
END_TEST

START_TEST(timeout_ends_ctx_with_etimedout)
{
	wp_ctx *ctx = wp_test_ctx_ms(NULL, 20);

	ck_assert(wp_test_wait_ctx(ctx));
	ck_assert_int_eq(wp_ctx_err(ctx), -ETIMEDOUT);
	wp_ctx_release(ctx);
}
END_TEST

START_TEST(timeout_does_not_end_ctx_early)
{
	uint64_t start = wp_test_now_ns();
	wp_ctx *ctx = wp_test_ctx_ms(NULL, 50);

	ck_assert(wp_test_wait_ctx(ctx));
	ck_assert_uint_ge(wp_test_now_ns() - start, 50 * 1000000ull);
	wp_ctx_release(ctx);
}
END_TEST

START_TEST(cancel_after_timeout_keeps_etimedout)
{
	wp_ctx *ctx = wp_test_ctx_ms(NULL, 1);

	ck_assert(wp_test_wait_ctx(ctx));
	wp_ctx_cancel(ctx);
	ck_assert_int_eq(wp_ctx_err(ctx), -ETIMEDOUT);
	wp_ctx_release(ctx);
}
END_TEST

START_TEST(cancel_before_timeout_keeps_ecanceled)
{
	wp_ctx *ctx = wp_test_ctx_ms(NULL, 20);

	wp_ctx_cancel(ctx);
	wp_test_sleep_ms(40);
	ck_assert_int_eq(wp_ctx_err(ctx), -ECANCELED);
	wp_ctx_release(ctx);
}
END_TEST

/* Children follow their parents, never the other way round. */

START_TEST(cancelling_parent_cancels_every_descendant)
{
	wp_ctx *parent = NULL, *child = NULL, *grandchild = NULL;

	ck_assert_int_eq(wp_ctx_create(&parent, NULL), 0);
	ck_assert_int_eq(wp_ctx_create(&child, parent), 0);
	ck_assert_int_eq(wp_ctx_with_timeout(&grandchild, child,
					     60000000000ull), 0);
	ck_assert(!wp_ctx_done(grandchild));

	wp_ctx_cancel(parent);
	ck_assert_int_eq(wp_ctx_err(child), -ECANCELED);
	ck_assert_int_eq(wp_ctx_err(grandchild), -ECANCELED);

	wp_ctx_release(grandchild);
	wp_ctx_release(child);
	wp_ctx_release(parent);
}
END_TEST

START_TEST(cancelling_child_leaves_parent_and_siblings_live)
{
	wp_ctx *parent = NULL, *a = NULL, *b = NULL;

	ck_assert_int_eq(wp_ctx_create(&parent, NULL), 0);
	ck_assert_int_eq(wp_ctx_create(&a, parent), 0);
	ck_assert_int_eq(wp_ctx_create(&b, parent), 0);

	wp_ctx_cancel(a);
	ck_assert_int_eq(wp_ctx_err(a), -ECANCELED);
	ck_assert_int_eq(wp_ctx_err(parent), 0);
	ck_assert_int_eq(wp_ctx_err(b), 0);

	wp_ctx_release(a);
	wp_ctx_release(b);
	wp_ctx_release(parent);
}
END_TEST

START_TEST(child_of_ended_parent_is_born_ended)
{
	wp_ctx *parent = NULL, *child = NULL, *timed = NULL;

	ck_assert_int_eq(wp_ctx_create(&parent, NULL), 0);
	wp_ctx_cancel(parent);

	ck_assert_int_eq(wp_ctx_create(&child, parent), 0);
	ck_assert_int_eq(wp_ctx_with_timeout(&timed, parent, 60000000000ull),
			 0);
	ck_assert_int_eq(wp_ctx_err(child), -ECANCELED);
	ck_assert_int_eq(wp_ctx_err(timed), -ECANCELED);

	wp_ctx_release(timed);
	wp_ctx_release(child);
	wp_ctx_release(parent);
}
END_TEST

START_TEST(child_ends_with_parents_timeout)
{
	wp_ctx *parent = wp_test_ctx_ms(NULL, 20);
	wp_ctx *child = NULL;

	ck_assert_int_eq(wp_ctx_create(&child, parent), 0);
	ck_assert(wp_test_wait_ctx(child));
	ck_assert_int_eq(wp_ctx_err(child), -ETIMEDOUT);
	ck_assert_int_eq(wp_ctx_err(parent), -ETIMEDOUT);

	wp_ctx_release(child);
	wp_ctx_release(parent);
}
END_TEST

START_TEST(child_deadline_is_never_later_than_parents)
{
	wp_ctx *parent = wp_test_ctx_ms(NULL, 30);
	wp_ctx *child = wp_test_ctx_ms(parent, 60 * 1000);

	ck_assert(wp_test_wait_ctx(child));
	ck_assert_int_eq(wp_ctx_err(child), -ETIMEDOUT);

	wp_ctx_release(child);
	wp_ctx_release(parent);
}
END_TEST

START_TEST(child_with_earlier_deadline_ends_alone)
{
	wp_ctx *parent = NULL, *child = NULL;

	ck_assert_int_eq(wp_ctx_create(&parent, NULL), 0);
	child = wp_test_ctx_ms(parent, 10);

	ck_assert(wp_test_wait_ctx(child));
	ck_assert_int_eq(wp_ctx_err(child), -ETIMEDOUT);
	ck_assert_int_eq(wp_ctx_err(parent), 0);

	wp_ctx_release(child);
	wp_ctx_release(parent);
}
END_TEST

START_TEST(timed_out_child_keeps_etimedout_when_its_parent_is_cancelled)
{
	wp_ctx *parent = NULL, *child = NULL, *grandchild = NULL;

	ck_assert_int_eq(wp_ctx_create(&parent, NULL), 0);
	child = wp_test_ctx_ms(parent, 10);
	ck_assert_int_eq(wp_ctx_create(&grandchild, child), 0);
	ck_assert(wp_test_wait_ctx(child));

	wp_ctx_cancel(parent);
	ck_assert_int_eq(wp_ctx_err(parent), -ECANCELED);
	ck_assert_int_eq(wp_ctx_err(child), -ETIMEDOUT);
	ck_assert_int_eq(wp_ctx_err(grandchild), -ETIMEDOUT);

	wp_ctx_release(grandchild);
	wp_ctx_release(child);
	wp_ctx_release(parent);
}
END_TEST

START_TEST(released_parent_still_ends_its_child)
{
	wp_ctx *parent = wp_test_ctx_ms(NULL, 20);
	wp_ctx *child = NULL;

	ck_assert_int_eq(wp_ctx_create(&child, parent), 0);
	wp_ctx_release(parent);

	ck_assert(wp_test_wait_ctx(child));
	ck_assert_int_eq(wp_ctx_err(child), -ETIMEDOUT);
	wp_ctx_release(child);
}
END_TEST

struct canceller {
	wp_ctx *ctx;
	long delay_ms;
};

static void *cancel_later(void *arg)
{
	struct canceller *c = arg;

	wp_test_sleep_ms(c->delay_ms);
	wp_ctx_cancel(c->ctx);
	return NULL;
}

START_TEST(cancel_from_another_thread_is_seen)
{
	struct canceller c = { .delay_ms = 10 };
	wp_ctx *child = NULL;
	pthread_t t;

	ck_assert_int_eq(wp_ctx_create(&c.ctx, NULL), 0);
	ck_assert_int_eq(wp_ctx_create(&child, c.ctx), 0);
	wp_test_thread(&t, cancel_later, &c);

	ck_assert(wp_test_wait_ctx(child));
	ck_assert_int_eq(wp_ctx_err(child), -ECANCELED);

	wp_test_join(t);
	wp_ctx_release(child);
	wp_ctx_release(c.ctx);
}
END_TEST

/* The descriptor: made on demand, readable once the context ends. */

START_TEST(fd_is_made_once_cloexec_and_nonblocking)
{
	int before = wp_test_count_fds();
	wp_ctx *ctx = NULL;
	int fd;

	ck_assert_int_eq(wp_ctx_create(&ctx, NULL), 0);
	ck_assert_int_eq(wp_test_count_fds(), before);

	fd = wp_ctx_fd(ctx);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(wp_ctx_fd(ctx), fd);
	ck_assert_int_eq(wp_test_count_fds(), before + 1);
	ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	ck_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);

	wp_ctx_release(ctx);
	ck_assert_int_eq(wp_test_count_fds(), before);
}
END_TEST

START_TEST(fd_becomes_readable_on_cancel)
{
	wp_ctx *ctx = NULL;
	int fd;

	ck_assert_int_eq(wp_ctx_create(&ctx, NULL), 0);
	fd = wp_ctx_fd(ctx);
	ck_assert_int_ge(fd, 0);
	ck_assert(!wp_test_readable(fd, 0));

	wp_ctx_cancel(ctx);
	ck_assert(wp_test_readable(fd, 0));
	ck_assert(wp_test_readable(fd, 0));
	wp_ctx_release(ctx);
}
END_TEST

START_TEST(fd_becomes_readable_on_timeout)
{
	wp_ctx *ctx = wp_test_ctx_ms(NULL, 20);
	int fd = wp_ctx_fd(ctx);

	ck_assert_int_ge(fd, 0);
	ck_assert(wp_test_readable(fd, WP_TEST_WAIT_MS));
	ck_assert_int_eq(wp_ctx_err(ctx), -ETIMEDOUT);
	wp_ctx_release(ctx);
}
END_TEST

START_TEST(fd_of_child_becomes_readable_when_parent_ends)
{
	wp_ctx *parent = NULL, *child = NULL;
	int fd;

	ck_assert_int_eq(wp_ctx_create(&parent, NULL), 0);
	ck_assert_int_eq(wp_ctx_create(&child, parent), 0);
	fd = wp_ctx_fd(child);
	ck_assert_int_ge(fd, 0);
	ck_assert(!wp_test_readable(fd, 0));

	wp_ctx_cancel(parent);
	ck_assert(wp_test_readable(fd, WP_TEST_WAIT_MS));

	wp_ctx_release(child);
	wp_ctx_release(parent);
}
END_TEST

START_TEST(fd_asked_after_the_end_is_readable)
{
	wp_ctx *ctx = NULL;
	int fd;

	ck_assert_int_eq(wp_ctx_create(&ctx, NULL), 0);
	wp_ctx_cancel(ctx);
	fd = wp_ctx_fd(ctx);
	ck_assert_int_ge(fd, 0);
	ck_assert(wp_test_readable(fd, 0));
	wp_ctx_release(ctx);
}
END_TEST

/* The context a handler sees is the add's, kept alive for it. */

struct seen {
	struct wp_test_gate gate;
	_Atomic(wp_ctx *) ctx;
	atomic_int err;
	atomic_int calls;
};

static int note_ctx(wp_ctx *ctx, void *event, void *arg)
{
	struct seen *s = arg;

	(void)event;
	wp_test_gate_wait(&s->gate);
	atomic_store(&s->ctx, ctx);
	atomic_store(&s->err, wp_ctx_err(ctx));
	atomic_fetch_add(&s->calls, 1);
	return 0;
}

START_TEST(released_ctx_stays_alive_for_its_queued_event)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct seen s = { .err = 1 };
	wp_handle *h = NULL;
	wp_ctx *ctx = NULL;

	wp_test_gate_init(&s.gate);
	ck_assert_int_eq(wp_pool_register(pool, note_ctx, &s, &h), 0);
	ck_assert_int_eq(wp_ctx_create(&ctx, NULL), 0);
	ck_assert_int_eq(wp_handle_add_event(h, ctx, NULL), 0);
	wp_ctx_release(ctx);

	wp_test_gate_open(&s.gate);
	ck_assert(wp_test_wait_atleast(&s.calls, 1));
	ck_assert_ptr_eq(atomic_load(&s.ctx), ctx);
	ck_assert_int_eq(atomic_load(&s.err), 0);

	wp_pool_destroy(pool);
	wp_test_gate_destroy(&s.gate);
}
END_TEST

START_TEST(handler_sees_cancel_of_its_events_ctx)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct seen s = { .err = 1 };
	wp_handle *h = NULL;
	wp_ctx *ctx = NULL;

	wp_test_gate_init(&s.gate);
	ck_assert_int_eq(wp_pool_register(pool, note_ctx, &s, &h), 0);
	ck_assert_int_eq(wp_ctx_create(&ctx, NULL), 0);
	ck_assert_int_eq(wp_handle_add_event(h, ctx, NULL), 0);
	wp_ctx_cancel(ctx);

	wp_test_gate_open(&s.gate);
	ck_assert(wp_test_wait_atleast(&s.calls, 1));
	ck_assert_ptr_eq(atomic_load(&s.ctx), ctx);
	ck_assert_int_eq(atomic_load(&s.err), -ECANCELED);

	wp_ctx_release(ctx);
	wp_pool_destroy(pool);
	wp_test_gate_destroy(&s.gate);
}
END_TEST

static Suite *ctx_suite(void)
{
	Suite *s = suite_create("ctx");
	TCase *tc;

	tc = wp_test_tcase("ending");
	tcase_add_test(tc, new_ctx_is_live);
	tcase_add_test(tc, cancel_ends_ctx_with_ecanceled);
	tcase_add_test(tc, timeout_ends_ctx_with_etimedout);
	tcase_add_test(tc, timeout_does_not_end_ctx_early);
	tcase_add_test(tc, cancel_after_timeout_keeps_etimedout);
	tcase_add_test(tc, cancel_before_timeout_keeps_ecanceled);
	tcase_add_test(tc, cancel_from_another_thread_is_seen);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("parents");
	tcase_add_test(tc, cancelling_parent_cancels_every_descendant);
	tcase_add_test(tc, cancelling_child_leaves_parent_and_siblings_live);
	tcase_add_test(tc, child_of_ended_parent_is_born_ended);
	tcase_add_test(tc, child_ends_with_parents_timeout);
	tcase_add_test(tc, child_deadline_is_never_later_than_parents);
	tcase_add_test(tc, child_with_earlier_deadline_ends_alone);
	tcase_add_test(tc, released_parent_still_ends_its_child);
	tcase_add_test(tc,
		timed_out_child_keeps_etimedout_when_its_parent_is_cancelled);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("fd");
	tcase_add_test(tc, fd_is_made_once_cloexec_and_nonblocking);
	tcase_add_test(tc, fd_becomes_readable_on_cancel);
	tcase_add_test(tc, fd_becomes_readable_on_timeout);
	tcase_add_test(tc, fd_of_child_becomes_readable_when_parent_ends);
	tcase_add_test(tc, fd_asked_after_the_end_is_readable);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("handlers");
	wp_test_add(tc, released_ctx_stays_alive_for_its_queued_event);
	wp_test_add(tc, handler_sees_cancel_of_its_events_ctx);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	return wp_test_run(ctx_suite());
}
