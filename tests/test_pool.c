/* SPDX-License-Identifier: MIT */
/*
 * Pools: options, backends, the start/run/stop/destroy life cycle, the
 * pool's own context, wp_pool_go(), and what stopping does to handles.
 */
#include "harness.h"

/* Options and backends. */

START_TEST(options_init_fills_the_defaults)
{
	struct wp_pool_options opt;

	memset(&opt, 0xa5, sizeof(opt));
	wp_pool_options_init(&opt);
	ck_assert_uint_eq(opt.workers, 0);
	ck_assert_uint_ge(opt.queue_capacity, 1);
	ck_assert_int_eq(opt.backend, WP_BACKEND_AUTO);
	ck_assert_ptr_null(opt.cpus);
	ck_assert_uint_eq(opt.ncpus, 0);
}
END_TEST

START_TEST(zero_workers_means_one_per_online_cpu)
{
	wp_pool *pool = wp_test_pool_opts(_i, 0, 0, false);

	ck_assert_uint_eq(wp_pool_workers(pool),
			  (unsigned)sysconf(_SC_NPROCESSORS_ONLN));
	wp_pool_destroy(pool);
}
END_TEST

START_TEST(pool_has_the_workers_asked_for)
{
	wp_pool *pool = wp_test_pool(_i, 3);

	ck_assert_uint_eq(wp_pool_workers(pool), 3);
	wp_pool_destroy(pool);
}
END_TEST

START_TEST(forced_backend_is_used_and_reason_is_zero)
{
	wp_pool *pool = wp_test_pool_opts(_i, 1, 0, false);

	ck_assert_int_eq(wp_pool_backend(pool), wp_test_backend(_i));
	ck_assert_int_eq(wp_pool_backend_reason(pool, NULL), 0);
	wp_pool_destroy(pool);
}
END_TEST

START_TEST(auto_backend_honours_the_environment)
{
	struct wp_pool_options opt;
	wp_pool *pool = NULL;

	wp_pool_options_init(&opt);
	opt.workers = 1;
	ck_assert_int_eq(setenv("WP_BACKEND", wp_test_backend_name(_i), 1), 0);
	ck_assert_int_eq(wp_pool_create(&pool, &opt), 0);
	unsetenv("WP_BACKEND");

	ck_assert_int_eq(wp_pool_backend(pool), wp_test_backend(_i));
	wp_pool_destroy(pool);
}
END_TEST

START_TEST(auto_backend_explains_a_fallback)
{
	const char *what = NULL;
	wp_pool *pool = NULL;
	int reason;

	unsetenv("WP_BACKEND");
	ck_assert_int_eq(wp_pool_create(&pool, NULL), 0);
	reason = wp_pool_backend_reason(pool, &what);
	if (wp_pool_backend(pool) == WP_BACKEND_URING) {
		ck_assert_int_eq(reason, 0);
	} else {
		ck_assert_int_eq(wp_pool_backend(pool), WP_BACKEND_EPOLL);
		ck_assert_int_lt(reason, 0);
		ck_assert_ptr_nonnull(what);
	}
	wp_pool_destroy(pool);
}
END_TEST

/* Life cycle. */

START_TEST(start_twice_returns_ealready)
{
	wp_pool *pool = wp_test_pool(_i, 1);

	ck_assert_int_eq(wp_pool_start(pool), -EALREADY);
	wp_pool_destroy(pool);
}
END_TEST

START_TEST(stop_twice_returns_zero)
{
	wp_pool *pool = wp_test_pool(_i, 2);

	ck_assert_int_eq(wp_pool_stop(pool), 0);
	ck_assert_int_eq(wp_pool_stop(pool), 0);
	wp_pool_destroy(pool);
}
END_TEST

START_TEST(start_after_stop_returns_eshutdown)
{
	wp_pool *pool = wp_test_pool_opts(_i, 1, 0, false);

	ck_assert_int_eq(wp_pool_stop(pool), 0);
	ck_assert_int_eq(wp_pool_start(pool), -ESHUTDOWN);
	wp_pool_destroy(pool);
}
END_TEST

static int count_event(wp_ctx *ctx, void *event, void *arg)
{
	(void)ctx;
	(void)event;
	atomic_fetch_add((atomic_int *)arg, 1);
	return 0;
}

START_TEST(register_after_stop_returns_eshutdown)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	atomic_int calls = 0;
	wp_handle *h = NULL;

	ck_assert_int_eq(wp_pool_stop(pool), 0);
	ck_assert_int_eq(wp_pool_register(pool, count_event, &calls, &h),
			 -ESHUTDOWN);
	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&calls), 0);
}
END_TEST

START_TEST(events_queued_before_start_run_after_start)
{
	wp_pool *pool = wp_test_pool_opts(_i, 2, 0, false);
	atomic_int calls = 0;
	wp_handle *h = NULL;

	ck_assert_int_eq(wp_pool_register(pool, count_event, &calls, &h), 0);
	ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
	ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
	wp_test_sleep_ms(10);
	ck_assert_int_eq(atomic_load(&calls), 0);

	ck_assert_int_eq(wp_pool_start(pool), 0);
	ck_assert(wp_test_wait_atleast(&calls, 2));

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&calls), 2);
}
END_TEST

START_TEST(destroy_of_a_never_started_pool_releases_everything)
{
	int before = wp_test_count_fds();
	wp_pool *pool = wp_test_pool_opts(_i, 2, 0, false);
	atomic_int calls = 0;
	wp_handle *h = NULL;

	ck_assert_int_eq(wp_pool_register(pool, count_event, &calls, &h), 0);
	ck_assert_int_ge(wp_handle_error_fd(h), 0);
	ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
	ck_assert_int_ge(wp_ctx_fd(wp_pool_ctx(pool)), 0);

	wp_pool_destroy(pool);
	ck_assert_int_eq(wp_test_count_fds(), before);
	ck_assert_int_eq(atomic_load(&calls), 0);
}
END_TEST

/* Stopping exits handles, and destroying releases them. */

struct exits {
	atomic_int calls;
	atomic_int err;
	atomic_int off_worker;
	pthread_t worker;
};

static void note_exit(int err, void *arg)
{
	struct exits *e = arg;

	if (!pthread_equal(pthread_self(), e->worker))
		atomic_fetch_add(&e->off_worker, 1);
	atomic_store(&e->err, err);
	atomic_fetch_add(&e->calls, 1);
}

START_TEST(stop_exits_handles_with_eshutdown_on_their_worker)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	pthread_t worker = wp_test_worker_thread(pool);
	struct exits e[3];
	wp_handle *h[3];
	atomic_int calls = 0;
	int k;

	for (k = 0; k < 3; k++) {
		e[k] = (struct exits){ .worker = worker };
		ck_assert_int_eq(wp_pool_register(pool, count_event, &calls,
						  &h[k]), 0);
		ck_assert_int_eq(wp_handle_on_exit(h[k], note_exit, &e[k]), 0);
	}

	ck_assert_int_eq(wp_pool_stop(pool), 0);
	for (k = 0; k < 3; k++) {
		ck_assert(wp_handle_exited(h[k]));
		ck_assert_int_eq(wp_handle_error(h[k]), -ESHUTDOWN);
		ck_assert_int_eq(wp_handle_add_event(h[k], NULL, NULL),
				 -ECANCELED);
	}

	wp_pool_destroy(pool);
	for (k = 0; k < 3; k++) {
		ck_assert_int_eq(atomic_load(&e[k].calls), 1);
		ck_assert_int_eq(atomic_load(&e[k].err), -ESHUTDOWN);
		ck_assert_int_eq(atomic_load(&e[k].off_worker), 0);
	}
}
END_TEST

START_TEST(stop_before_start_exits_handles_with_eshutdown)
{
	wp_pool *pool = wp_test_pool_opts(_i, 1, 0, false);
	struct exits e = { 0 };
	atomic_int calls = 0;
	wp_handle *h = NULL;

	ck_assert_int_eq(wp_pool_register(pool, count_event, &calls, &h), 0);
	ck_assert_int_eq(wp_handle_on_exit(h, note_exit, &e), 0);
	ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);

	ck_assert_int_eq(wp_pool_stop(pool), 0);
	ck_assert_int_eq(wp_handle_error(h), -ESHUTDOWN);
	ck_assert_int_eq(atomic_load(&e.calls), 1);
	ck_assert_int_eq(atomic_load(&e.err), -ESHUTDOWN);

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&e.calls), 1);
	ck_assert_int_eq(atomic_load(&calls), 0);
}
END_TEST

START_TEST(destroy_exits_registered_handles_and_leaks_nothing)
{
	int before = wp_test_count_fds();
	wp_pool *pool = wp_test_pool(_i, 2);
	struct exits e[4];
	atomic_int calls = 0;
	wp_handle *h;
	int k;

	for (k = 0; k < 4; k++) {
		e[k] = (struct exits){ 0 };
		ck_assert_int_eq(wp_pool_register(pool, count_event, &calls,
						  &h), 0);
		ck_assert_int_eq(wp_handle_on_exit(h, note_exit, &e[k]), 0);
		ck_assert_int_ge(wp_handle_error_fd(h), 0);
		ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
	}
	ck_assert_int_ge(wp_ctx_fd(wp_pool_ctx(pool)), 0);

	wp_pool_destroy(pool);
	for (k = 0; k < 4; k++) {
		ck_assert_int_eq(atomic_load(&e[k].calls), 1);
		ck_assert_int_eq(atomic_load(&e[k].err), -ESHUTDOWN);
	}
	ck_assert_int_eq(wp_test_count_fds(), before);
}
END_TEST

START_TEST(destroy_after_handles_were_freed_leaks_nothing)
{
	int before = wp_test_count_fds();
	wp_pool *pool = wp_test_pool(_i, 2);
	atomic_int calls = 0;
	wp_handle *h;
	int k;

	for (k = 0; k < 4; k++) {
		ck_assert_int_eq(wp_pool_register(pool, count_event, &calls,
						  &h), 0);
		ck_assert_int_ge(wp_handle_error_fd(h), 0);
		ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
		if (k % 2)
			wp_handle_unregister(h);
		wp_handle_free(h);
	}

	wp_pool_destroy(pool);
	ck_assert_int_eq(wp_test_count_fds(), before);
}
END_TEST

/* Handles are spread over the workers. */

struct where {
	_Atomic unsigned long thread;
	atomic_int calls;
};

static int note_thread(wp_ctx *ctx, void *event, void *arg)
{
	struct where *w = arg;

	(void)ctx;
	(void)event;
	atomic_store(&w->thread, (unsigned long)pthread_self());
	atomic_fetch_add(&w->calls, 1);
	return 0;
}

START_TEST(consecutive_handles_go_to_different_workers)
{
	enum { W = 3 };
	wp_pool *pool = wp_test_pool(_i, W);
	struct where w[W] = { 0 };
	wp_handle *h;
	int a, b;

	for (a = 0; a < W; a++) {
		ck_assert_int_eq(wp_pool_register(pool, note_thread, &w[a],
						  &h), 0);
		ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
	}
	for (a = 0; a < W; a++)
		ck_assert(wp_test_wait_atleast(&w[a].calls, 1));

	for (a = 0; a < W; a++) {
		ck_assert(atomic_load(&w[a].thread) !=
			  (unsigned long)pthread_self());
		for (b = a + 1; b < W; b++)
			ck_assert(atomic_load(&w[a].thread) !=
				  atomic_load(&w[b].thread));
	}
	wp_pool_destroy(pool);
}
END_TEST

/* The pool's own context and wp_pool_run(). */

struct watcher {
	atomic_int entered;
	atomic_int saw_end;
	atomic_int err;
	_Atomic(wp_ctx *) ctx;
};

static int wait_for_ctx_end(wp_ctx *ctx, void *event, void *arg)
{
	struct watcher *w = arg;

	(void)event;
	atomic_store(&w->ctx, ctx);
	atomic_store(&w->entered, 1);
	if (wp_test_wait_ctx(ctx))
		atomic_store(&w->saw_end, 1);
	atomic_store(&w->err, wp_ctx_err(ctx));
	return 0;
}

START_TEST(stop_cancels_the_pool_ctx_under_a_running_handler)
{
	wp_pool *pool = wp_test_pool(_i, 2);
	struct watcher w = { 0 };
	wp_handle *h = NULL;

	ck_assert_int_eq(wp_ctx_err(wp_pool_ctx(pool)), 0);
	ck_assert_int_eq(wp_pool_register(pool, wait_for_ctx_end, &w, &h), 0);
	ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&w.entered, 1));

	ck_assert_int_eq(wp_pool_stop(pool), 0);
	ck_assert_int_eq(atomic_load(&w.saw_end), 1);
	ck_assert_int_eq(atomic_load(&w.err), -ECANCELED);
	ck_assert_ptr_eq(atomic_load(&w.ctx), wp_pool_ctx(pool));
	ck_assert_int_eq(wp_ctx_err(wp_pool_ctx(pool)), -ECANCELED);
	wp_pool_destroy(pool);
}
END_TEST

START_TEST(run_blocks_until_its_ctx_times_out_then_stops)
{
	wp_pool *pool = wp_test_pool_opts(_i, 1, 0, false);
	wp_ctx *ctx = wp_test_ctx_ms(NULL, 50);
	atomic_int calls = 0;
	wp_handle *h = NULL;

	ck_assert_int_eq(wp_pool_run(pool, ctx), 0);
	ck_assert(wp_ctx_done(ctx));
	ck_assert_int_eq(wp_ctx_err(ctx), -ETIMEDOUT);
	ck_assert(wp_ctx_done(wp_pool_ctx(pool)));
	ck_assert_int_eq(wp_pool_register(pool, count_event, &calls, &h),
			 -ESHUTDOWN);
	ck_assert_int_eq(wp_pool_start(pool), -ESHUTDOWN);

	wp_ctx_release(ctx);
	wp_pool_destroy(pool);
}
END_TEST

static void *cancel_after_first_call(void *arg)
{
	struct watcher *w = arg;

	if (wp_test_wait_atleast(&w->entered, 1))
		wp_ctx_cancel(atomic_load(&w->ctx));
	return NULL;
}

static int note_entry(wp_ctx *ctx, void *event, void *arg)
{
	struct watcher *w = arg;

	(void)ctx;
	(void)event;
	atomic_fetch_add(&w->entered, 1);
	return 0;
}

START_TEST(run_returns_when_its_ctx_is_cancelled_from_another_thread)
{
	wp_pool *pool = wp_test_pool_opts(_i, 2, 0, false);
	struct watcher w = { 0 };
	wp_handle *h = NULL;
	wp_ctx *ctx = NULL;
	pthread_t t;

	ck_assert_int_eq(wp_ctx_create(&ctx, NULL), 0);
	atomic_store(&w.ctx, ctx);
	ck_assert_int_eq(wp_pool_register(pool, note_entry, &w, &h), 0);
	ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
	wp_test_thread(&t, cancel_after_first_call, &w);

	ck_assert_int_eq(wp_pool_run(pool, ctx), 0);
	wp_test_join(t);
	ck_assert_int_eq(atomic_load(&w.entered), 1);
	ck_assert_int_eq(wp_ctx_err(ctx), -ECANCELED);
	ck_assert_int_eq(wp_handle_error(h), -ESHUTDOWN);

	wp_ctx_release(ctx);
	wp_pool_destroy(pool);
}
END_TEST

START_TEST(run_on_a_started_pool_returns_ealready)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	wp_ctx *ctx = NULL;

	ck_assert_int_eq(wp_ctx_create(&ctx, NULL), 0);
	ck_assert_int_eq(wp_pool_run(pool, ctx), -EALREADY);
	wp_ctx_release(ctx);
	wp_pool_destroy(pool);
}
END_TEST

struct from_worker {
	wp_pool *pool;
	wp_ctx *ctx;
	atomic_int run_rc;
	atomic_int stop_rc;
	atomic_int done;
};

static int run_and_stop_here(wp_ctx *ctx, void *event, void *arg)
{
	struct from_worker *f = arg;

	(void)ctx;
	(void)event;
	atomic_store(&f->run_rc, wp_pool_run(f->pool, f->ctx));
	atomic_store(&f->stop_rc, wp_pool_stop(f->pool));
	atomic_store(&f->done, 1);
	return 0;
}

START_TEST(run_and_stop_from_a_worker_return_edeadlk)
{
	struct from_worker f = { .pool = wp_test_pool(_i, 1) };
	wp_handle *h = NULL;

	ck_assert_int_eq(wp_ctx_create(&f.ctx, NULL), 0);
	ck_assert_int_eq(wp_pool_register(f.pool, run_and_stop_here, &f, &h),
			 0);
	ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&f.done, 1));

	ck_assert_int_eq(atomic_load(&f.run_rc), -EDEADLK);
	ck_assert_int_eq(atomic_load(&f.stop_rc), -EDEADLK);
	ck_assert_int_eq(wp_ctx_err(wp_pool_ctx(f.pool)), 0);
	wp_ctx_release(f.ctx);
	wp_pool_destroy(f.pool);
}
END_TEST

/*
 * A task that stops and destroys another pool: that pool's leftovers are
 * served on this worker's thread, which must stay this pool's worker
 * afterwards, in the same callback and in the next.
 */
static int never_runs(wp_ctx *ctx, void *event, void *arg)
{
	(void)ctx;
	(void)event;
	(void)arg;
	ck_abort_msg("no event was added");
	return 0;
}

struct other_pool {
	wp_pool *pool;
	wp_pool *other;
	wp_ctx *ctx;
	atomic_int stop_rc;
	atomic_int run_rc[2];
	atomic_int done;
};

static void stop_the_other_pool(void *arg)
{
	struct other_pool *o = arg;

	atomic_store(&o->stop_rc, wp_pool_stop(o->other));
	wp_pool_destroy(o->other);
	atomic_store(&o->run_rc[0], wp_pool_run(o->pool, o->ctx));
	atomic_fetch_add(&o->done, 1);
}

static void run_here(void *arg)
{
	struct other_pool *o = arg;

	atomic_store(&o->run_rc[1], wp_pool_run(o->pool, o->ctx));
	atomic_fetch_add(&o->done, 1);
}

START_TEST(stopping_another_pool_from_a_worker_keeps_it_a_worker)
{
	struct other_pool o = { .pool = wp_test_pool(_i, 1),
				.other = wp_test_pool(_i, 2) };
	wp_handle *h = NULL;

	/* A handle, so that the other pool's stop has an exit to serve. */
	ck_assert_int_eq(wp_pool_register(o.other, never_runs, NULL,
					  &h), 0);
	ck_assert_int_eq(wp_ctx_create(&o.ctx, NULL), 0);
	ck_assert_int_eq(wp_pool_go(o.pool, NULL, stop_the_other_pool, &o),
			 0);
	ck_assert(wp_test_wait_atleast(&o.done, 1));
	ck_assert_int_eq(wp_pool_go(o.pool, NULL, run_here, &o), 0);
	ck_assert(wp_test_wait_atleast(&o.done, 2));

	ck_assert_int_eq(atomic_load(&o.stop_rc), 0);
	ck_assert_int_eq(atomic_load(&o.run_rc[0]), -EDEADLK);
	ck_assert_int_eq(atomic_load(&o.run_rc[1]), -EDEADLK);
	wp_ctx_release(o.ctx);
	wp_pool_destroy(o.pool);
}
END_TEST

/*
 * A never-started pool runs an exit callback on the thread that caused
 * the exit. Destroying the pool from there would free the handle under
 * the call still running on it: the destroy does nothing.
 */
struct destroy_in_exit {
	wp_pool *pool;
	atomic_int exits;
};

static void destroy_the_pool(int err, void *arg)
{
	struct destroy_in_exit *d = arg;

	(void)err;
	wp_pool_destroy(d->pool);
	atomic_fetch_add(&d->exits, 1);
}

START_TEST(destroy_inside_an_exit_callback_is_refused)
{
	struct destroy_in_exit d = { .pool = wp_test_pool_opts(_i, 1, 0,
							       false) };
	wp_handle *h = NULL;

	ck_assert_int_eq(wp_pool_register(d.pool, never_runs, NULL,
					  &h), 0);
	ck_assert_int_eq(wp_handle_on_exit(h, destroy_the_pool, &d), 0);
	wp_handle_free(h);
	ck_assert_int_eq(atomic_load(&d.exits), 1);

	ck_assert_uint_eq(wp_pool_workers(d.pool), 1);
	ck_assert_int_eq(wp_pool_start(d.pool), 0);
	wp_pool_destroy(d.pool);
}
END_TEST

/*
 * An exit callback run on the thread that caused the exit cannot wait for
 * a stop: the stop waits for that very callback. Running the pool from
 * there, or stopping it once started, is refused.
 */
struct run_in_exit {
	wp_pool *pool;
	wp_ctx *ctx;
	atomic_int run_rc;
	atomic_int start_rc;
	atomic_int stop_rc;
	atomic_int exits;
};

static void run_the_pool(int err, void *arg)
{
	struct run_in_exit *r = arg;

	(void)err;
	atomic_store(&r->run_rc, wp_pool_run(r->pool, r->ctx));
	atomic_store(&r->start_rc, wp_pool_start(r->pool));
	atomic_store(&r->stop_rc, wp_pool_stop(r->pool));
	atomic_fetch_add(&r->exits, 1);
}

START_TEST(run_inside_an_exit_callback_returns_edeadlk)
{
	struct run_in_exit r = { .pool = wp_test_pool_opts(_i, 1, 0,
							   false) };
	wp_handle *h = NULL;

	ck_assert_int_eq(wp_ctx_create(&r.ctx, NULL), 0);
	wp_ctx_cancel(r.ctx);
	ck_assert_int_eq(wp_pool_register(r.pool, never_runs, NULL, &h), 0);
	ck_assert_int_eq(wp_handle_on_exit(h, run_the_pool, &r), 0);
	wp_handle_unregister(h);
	ck_assert_int_eq(atomic_load(&r.exits), 1);

	ck_assert_int_eq(atomic_load(&r.run_rc), -EDEADLK);
	ck_assert_int_eq(atomic_load(&r.start_rc), 0);
	ck_assert_int_eq(atomic_load(&r.stop_rc), -EDEADLK);
	ck_assert_int_eq(wp_pool_stop(r.pool), 0);
	wp_ctx_release(r.ctx);
	wp_pool_destroy(r.pool);
}
END_TEST

/*
 * A handler stops a pool that never started, whose exit callbacks then
 * run on the handler's worker. One of them unregisters a handle of that
 * very worker, and tries to stop the worker's pool: it cannot wait for
 * the worker, which runs the handler.
 */
struct nested_stop {
	wp_pool *pool;
	wp_pool *other;
	atomic_int stop_rc;
	wp_handle *mine;
	atomic_int unregistered;
	atomic_int stopped;
	atomic_int mine_exits;
};

static void unregister_mine(int err, void *arg)
{
	struct nested_stop *n = arg;

	(void)err;
	wp_handle_unregister(n->mine);
	atomic_store(&n->unregistered, 1);
	/* Still a worker of its own pool, which it cannot stop. */
	atomic_store(&n->stop_rc, wp_pool_stop(n->pool));
}

static void note_mine_exit(int err, void *arg)
{
	struct nested_stop *n = arg;

	(void)err;
	atomic_fetch_add(&n->mine_exits, 1);
}

static int stop_nested(wp_ctx *ctx, void *event, void *arg)
{
	struct nested_stop *n = arg;

	(void)ctx;
	(void)event;
	wp_pool_stop(n->other);
	atomic_store(&n->stopped, 1);
	return 0;
}

START_TEST(an_exit_callback_a_handlers_stop_runs_never_waits_for_it)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct nested_stop n = { 0 };
	wp_handle *h, *q;

	n.pool = pool;
	n.other = wp_test_pool_opts(_i, 1, 0, false);
	ck_assert_int_eq(wp_pool_register(pool, stop_nested, &n, &h), 0);
	ck_assert_int_eq(wp_pool_register(pool, never_runs, NULL, &n.mine),
			 0);
	ck_assert_int_eq(wp_handle_on_exit(n.mine, note_mine_exit, &n), 0);
	ck_assert_int_eq(wp_pool_register(n.other, never_runs, NULL, &q), 0);
	ck_assert_int_eq(wp_handle_on_exit(q, unregister_mine, &n), 0);
	ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
	ck_assert(wp_test_wait_atleast(&n.stopped, 1));
	ck_assert_int_eq(atomic_load(&n.unregistered), 1);
	ck_assert_int_eq(atomic_load(&n.stop_rc), -EDEADLK);
	ck_assert(wp_test_wait_atleast(&n.mine_exits, 1));
	ck_assert(wp_handle_exited(n.mine));
	wp_pool_destroy(n.other);
	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&n.mine_exits), 1);
}
END_TEST

/* wp_pool_go(). */

struct tasks {
	atomic_int ran;
	atomic_int on_caller;
	pthread_t caller;
};

static void run_task(void *arg)
{
	struct tasks *t = arg;

	if (pthread_equal(pthread_self(), t->caller))
		atomic_fetch_add(&t->on_caller, 1);
	atomic_fetch_add(&t->ran, 1);
}

START_TEST(go_runs_each_task_once_on_a_worker)
{
	wp_pool *pool = wp_test_pool_opts(_i, 2, 8, true);
	struct tasks t = { .caller = pthread_self() };
	int k;

	for (k = 0; k < 200; k++)
		ck_assert_int_eq(wp_pool_go(pool, NULL, run_task, &t), 0);
	ck_assert(wp_test_wait_atleast(&t.ran, 200));

	ck_assert_int_eq(wp_pool_stop(pool), 0);
	ck_assert_int_eq(atomic_load(&t.ran), 200);
	ck_assert_int_eq(atomic_load(&t.on_caller), 0);
	wp_pool_destroy(pool);
}
END_TEST

START_TEST(go_before_start_runs_after_start)
{
	wp_pool *pool = wp_test_pool_opts(_i, 1, 8, false);
	struct tasks t = { .caller = pthread_self() };

	ck_assert_int_eq(wp_pool_go(pool, NULL, run_task, &t), 0);
	ck_assert_int_eq(wp_pool_go(pool, NULL, run_task, &t), 0);
	ck_assert_int_eq(wp_pool_start(pool), 0);
	ck_assert(wp_test_wait_atleast(&t.ran, 2));

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&t.ran), 2);
}
END_TEST

START_TEST(go_after_stop_returns_eshutdown)
{
	wp_pool *pool = wp_test_pool(_i, 1);
	struct tasks t = { .caller = pthread_self() };

	ck_assert_int_eq(wp_pool_stop(pool), 0);
	ck_assert_int_eq(wp_pool_go(pool, NULL, run_task, &t), -ESHUTDOWN);
	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&t.ran), 0);
}
END_TEST

/* CPU time the thread t has used, in milliseconds. */
static double thread_cpu_ms(pthread_t t)
{
	struct timespec ts;
	clockid_t id;

	ck_assert_int_eq(pthread_getcpuclockid(t, &id), 0);
	ck_assert_int_eq(clock_gettime(id, &ts), 0);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* CPU time an idle worker spends over 100 ms, with the given spin. */
static double idle_worker_cpu_ms(int i, uint64_t spin_ns)
{
	struct wp_pool_options opt;
	wp_pool *pool = NULL;
	pthread_t t;
	double before;

	wp_pool_options_init(&opt);
	opt.backend = wp_test_backend(i);
	opt.workers = 1;
	opt.spin_ns = spin_ns;
	ck_assert_int_eq(wp_pool_create(&pool, &opt), 0);
	ck_assert_int_eq(wp_pool_start(pool), 0);
	t = wp_test_worker_thread(pool);
	wp_test_sleep_ms(10);
	before = thread_cpu_ms(t);
	wp_test_sleep_ms(100);
	before = thread_cpu_ms(t) - before;
	wp_pool_destroy(pool);
	return before;
}

START_TEST(a_spin_longer_than_the_clocks_range_keeps_polling)
{
	/* Polling spends the CPU it does not yield; sleeping spends none. */
	ck_assert_double_lt(idle_worker_cpu_ms(_i, 0), 20);
	ck_assert_double_gt(idle_worker_cpu_ms(_i, WP_SPIN_FOREVER), 40);
	ck_assert_double_gt(idle_worker_cpu_ms(_i, UINT64_MAX - 2), 40);
}
END_TEST

static Suite *pool_suite(void)
{
	Suite *s = suite_create("pool");
	TCase *tc;

	tc = wp_test_tcase("options");
	tcase_add_test(tc, options_init_fills_the_defaults);
	wp_test_add(tc, zero_workers_means_one_per_online_cpu);
	wp_test_add(tc, a_spin_longer_than_the_clocks_range_keeps_polling);
	wp_test_add(tc, pool_has_the_workers_asked_for);
	wp_test_add(tc, forced_backend_is_used_and_reason_is_zero);
	wp_test_add(tc, auto_backend_honours_the_environment);
	tcase_add_test(tc, auto_backend_explains_a_fallback);
	wp_test_add(tc, consecutive_handles_go_to_different_workers);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("lifecycle");
	wp_test_add(tc, start_twice_returns_ealready);
	wp_test_add(tc, stop_twice_returns_zero);
	wp_test_add(tc, start_after_stop_returns_eshutdown);
	wp_test_add(tc, register_after_stop_returns_eshutdown);
	wp_test_add(tc, events_queued_before_start_run_after_start);
	wp_test_add(tc, stop_exits_handles_with_eshutdown_on_their_worker);
	wp_test_add(tc, stop_before_start_exits_handles_with_eshutdown);
	wp_test_add(tc, destroy_exits_registered_handles_and_leaks_nothing);
	wp_test_add(tc, destroy_after_handles_were_freed_leaks_nothing);
	wp_test_add(tc, destroy_of_a_never_started_pool_releases_everything);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("run");
	wp_test_add(tc, stop_cancels_the_pool_ctx_under_a_running_handler);
	wp_test_add(tc, run_blocks_until_its_ctx_times_out_then_stops);
	wp_test_add(tc,
		    run_returns_when_its_ctx_is_cancelled_from_another_thread);
	wp_test_add(tc, run_on_a_started_pool_returns_ealready);
	wp_test_add(tc, run_and_stop_from_a_worker_return_edeadlk);
	wp_test_add(tc, stopping_another_pool_from_a_worker_keeps_it_a_worker);
	wp_test_add(tc,
		    an_exit_callback_a_handlers_stop_runs_never_waits_for_it);
	wp_test_add(tc, destroy_inside_an_exit_callback_is_refused);
	wp_test_add(tc, run_inside_an_exit_callback_returns_edeadlk);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("go");
	wp_test_add(tc, go_runs_each_task_once_on_a_worker);
	wp_test_add(tc, go_before_start_runs_after_start);
	wp_test_add(tc, go_after_stop_returns_eshutdown);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	return wp_test_run(pool_suite());
}
