/* SPDX-License-Identifier: MIT */
/*
 * workerpool: run callbacks on a fixed set of worker threads.
 *
 * A pool owns W worker threads. Each worker sleeps on its own io_uring
 * (or epoll where io_uring is unavailable) and runs the work routed to it.
 * A handle, made by wp_pool_register(), is bound to one worker for its
 * whole life: every event added to it runs on that worker, in the order it
 * was added, and never concurrently with the handle's other callbacks.
 *
 * A handle ends ("exits") exactly once: when its handler returns non-zero,
 * when it is unregistered, when a graceful unregister has run everything
 * queued, or when the pool stops. The exit code is then readable with
 * wp_handle_error(), the optional exit callback runs once on the worker,
 * and the handle's error descriptor becomes readable so that other event
 * loops can wait for it with poll, select or epoll.
 *
 * A wp_ctx carries cancellation and a deadline. Blocking calls take one and
 * give up when it ends; handlers receive one and may watch it.
 *
 * Errors are negative errno values; wp_strerror() names them. Unless a
 * function says otherwise it does not block and may be called from any
 * thread, including from inside callbacks.
 */
#ifndef WORKERPOOL_H
#define WORKERPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header; wp_version() gives the library's. */
#define WP_VERSION_MAJOR 0
#define WP_VERSION_MINOR 1
#define WP_VERSION_PATCH 0
#define WP_VERSION_STRING "0.1.0"

#if defined(WP_BUILDING_LIBRARY)
#define WP_API __attribute__((visibility("default")))
#else
#define WP_API
#endif

typedef struct wp_pool wp_pool;
typedef struct wp_handle wp_handle;
typedef struct wp_ctx wp_ctx;

/* ------------------------------------------------------------------ */
/* Contexts: cancellation and deadlines                                */
/* ------------------------------------------------------------------ */

/*
 * Creates a context in *ctx. With a parent, the new context ends when the
 * parent ends (with the parent's reason) and never outlives the parent's
 * deadline. Release it with wp_ctx_release().
 *
 * Returns 0, -EINVAL (ctx NULL or parent not a context) or -ENOMEM.
 */
WP_API int wp_ctx_create(wp_ctx **ctx, wp_ctx *parent);

/*
 * Like wp_ctx_create(), and the context also ends with -ETIMEDOUT once
 * ns nanoseconds (CLOCK_MONOTONIC) have passed.
 */
WP_API int wp_ctx_with_timeout(wp_ctx **ctx, wp_ctx *parent, uint64_t ns);

/*
 * Ends ctx and every context derived from it with -ECANCELED. Calls after
 * the first, and calls on an already timed-out context, change nothing.
 */
WP_API void wp_ctx_cancel(wp_ctx *ctx);

/* True once ctx has been cancelled or its deadline has passed. */
WP_API bool wp_ctx_done(const wp_ctx *ctx);

/*
 * Why ctx ended: 0 while it is live, -ECANCELED or -ETIMEDOUT after, or
 * -EINVAL if ctx is not a context.
 */
WP_API int wp_ctx_err(const wp_ctx *ctx);

/*
 * A descriptor that becomes readable when ctx ends, for poll, select or
 * epoll. It is created on the first call (close-on-exec, non-blocking) and
 * owned by ctx: do not close or read it. Returns the descriptor, -EINVAL,
 * or -EMFILE/-ENFILE/-ENOMEM when no descriptor can be made.
 */
WP_API int wp_ctx_fd(wp_ctx *ctx);

/*
 * Drops the caller's reference. The context is freed once nothing uses it:
 * events added with it and contexts derived from it keep it alive, so it
 * may be released right after the calls that use it return.
 */
WP_API void wp_ctx_release(wp_ctx *ctx);

/* ------------------------------------------------------------------ */
/* Pools                                                               */
/* ------------------------------------------------------------------ */

enum wp_backend {
	WP_BACKEND_AUTO = 0,	/* io_uring, falling back to epoll */
	WP_BACKEND_URING = 1,
	WP_BACKEND_EPOLL = 2,
};

/* wp_pool_options.spin_ns: never sleep while the pool runs. */
#define WP_SPIN_FOREVER UINT64_MAX

/* wp_pool_options.spin_ns: the library picks, adapting to the load. */
#define WP_SPIN_ADAPTIVE (UINT64_MAX - 1)

struct wp_pool_options {
	/* Worker threads; 0 means one per online CPU. */
	unsigned workers;
	/* Queued items per worker, at least 1; rounded up to a power of 2. */
	unsigned queue_capacity;
	/*
	 * WP_BACKEND_AUTO honours the environment variable WP_BACKEND
	 * ("uring" or "epoll"); an explicit choice does not fall back.
	 */
	enum wp_backend backend;
	/*
	 * How long an idle worker polls its queue before it sleeps, in
	 * nanoseconds, or WP_SPIN_ADAPTIVE or WP_SPIN_FOREVER. While it
	 * polls, it yields its CPU (sched_yield) every microsecond, so that
	 * other runnable threads on that CPU are not held up. With
	 * WP_SPIN_ADAPTIVE, a worker fed a steady stream of events also
	 * waits 2 us before it looks at an emptied queue again, so that
	 * producers on other CPUs fill it without contention; the other
	 * settings never wait so.
	 */
	uint64_t spin_ns;
	/* Optional: worker i is pinned to CPU cpus[i % ncpus]. */
	const int *cpus;
	size_t ncpus;
};

/*
 * Fills *opt with the defaults: one worker per online CPU, 4096 queued
 * items per worker, WP_BACKEND_AUTO, WP_SPIN_ADAPTIVE, no pinning.
 */
WP_API void wp_pool_options_init(struct wp_pool_options *opt);

/*
 * Creates a pool in *pool; opt NULL means the defaults. The backend is set
 * up here, so a forced backend that cannot run fails here. Workers start
 * with wp_pool_start() or wp_pool_run(); handles may be registered and
 * events queued before that.
 *
 * Returns 0, -EINVAL (bad argument or option), -ENOMEM, or the error of
 * the forced backend's setup. Blocks only briefly.
 */
WP_API int wp_pool_create(wp_pool **pool, const struct wp_pool_options *opt);

/*
 * Starts the worker threads. Returns 0, -EINVAL, -EALREADY (already
 * started), -ESHUTDOWN (already stopped) or the error of pthread_create.
 */
WP_API int wp_pool_start(wp_pool *pool);

/*
 * Starts the pool, blocks until ctx ends, then stops the pool. Returns 0
 * once the pool has stopped because ctx ended, or an error of
 * wp_pool_start(). May not be called from a worker, nor from an exit
 * callback of the pool's handles wherever it runs (-EDEADLK).
 */
WP_API int wp_pool_run(wp_pool *pool, wp_ctx *ctx);

/*
 * Stops the pool: cancels the pool's context, exits every registered
 * handle with -ESHUTDOWN (their exit callbacks run), drops queued events
 * and joins the workers. Handlers still running are waited for. Later
 * adds fail with -ECANCELED and registrations with -ESHUTDOWN. Exit
 * callbacks that no worker ran (a pool never started, requests left at
 * the end) run on the calling thread, along with whatever they ask of
 * the pool's workers.
 *
 * Blocks. Returns 0, -EINVAL, or -EDEADLK from a worker thread or from
 * an exit callback of the pool's handles while the pool runs (the stop
 * would wait for that callback). A second call returns 0 at once.
 */
WP_API int wp_pool_stop(wp_pool *pool);

/*
 * Stops the pool if needed and frees it, together with every handle not
 * yet freed: handle pointers are invalid afterwards. Must not be called
 * while other threads still use the pool. Called from a worker, or from
 * an exit callback of the pool's handles wherever it runs, it does
 * nothing.
 */
WP_API void wp_pool_destroy(wp_pool *pool);

/* The backend the pool runs on: WP_BACKEND_URING or WP_BACKEND_EPOLL. */
WP_API enum wp_backend wp_pool_backend(const wp_pool *pool);

/*
 * Why io_uring is not used: returns the negative errno of the failed setup
 * step (0 if io_uring runs or was never tried), and sets *what, if not
 * NULL, to a static text naming the step and the reason.
 */
WP_API int wp_pool_backend_reason(const wp_pool *pool, const char **what);

/* The number of worker threads. */
WP_API unsigned wp_pool_workers(const wp_pool *pool);

/*
 * The pool's own context, cancelled when the pool stops. Handlers receive
 * it for events added without a context. Owned by the pool.
 */
WP_API wp_ctx *wp_pool_ctx(wp_pool *pool);

/*
 * Runs fn(arg) once on some worker, unordered with respect to everything
 * else. Blocks while that worker's queue is full, until space frees or
 * ctx (may be NULL: wait as long as needed) ends. A task still queued
 * when the pool stops does not run.
 *
 * Returns 0, -EINVAL, -ESHUTDOWN (pool stopped), -EDEADLK (from a worker
 * whose own queue is full), or the error of ctx.
 */
WP_API int wp_pool_go(wp_pool *pool, wp_ctx *ctx, void (*fn)(void *arg),
		      void *arg);

/* ------------------------------------------------------------------ */
/* Handles                                                             */
/* ------------------------------------------------------------------ */

/*
 * An event handler: runs on the handle's worker with the context given to
 * the add (or the pool's own), the event pointer and the registered arg.
 * Returning non-zero ends the handle with that value as its exit code.
 */
typedef int (*wp_event_fn)(wp_ctx *ctx, void *event, void *arg);

/* An exit callback: runs once on the handle's worker with the exit code. */
typedef void (*wp_exit_fn)(int err, void *arg);

/*
 * Registers fn and binds the new handle to a worker, chosen in turn.
 * Returns 0, -EINVAL, -ENOMEM, or -ESHUTDOWN once the pool is stopping.
 */
WP_API int wp_pool_register(wp_pool *pool, wp_event_fn fn, void *arg,
			    wp_handle **out);

/*
 * Queues event for the handle's handler. Events added by one thread run
 * in the order added. While the worker's queue is full the call blocks
 * until space frees or ctx ends; ctx may be NULL, and the handler then
 * receives the pool's context. A callback that blocks here for a handle
 * of another worker holds its own worker meanwhile, so two workers must
 * not wait for room in each other's queues at the same time: each would
 * wait until its ctx ends, or for ever without one.
 *
 * Returns 0, -EINVAL, -ECANCELED (the handle has exited or is closing),
 * -EDEADLK (called on the handle's worker while its queue is full), or the
 * error of ctx (-ECANCELED or -ETIMEDOUT).
 */
WP_API int wp_handle_add_event(wp_handle *h, wp_ctx *ctx, void *event);

/*
 * Like wp_handle_add_event() but never blocks: returns -EAGAIN when the
 * queue is full.
 */
WP_API int wp_handle_try_add_event(wp_handle *h, void *event);

/*
 * Queues n events that run in array order, blocking like
 * wp_handle_add_event() while the queue is full. Returns the number
 * queued: n, or fewer when the handle exited or ctx ended part way, or
 * when, called on the handle's worker, the queue filled part way. If
 * none was queued, returns the error wp_handle_add_event() would have.
 */
WP_API int wp_handle_add_events(wp_handle *h, wp_ctx *ctx,
				void *const *events, size_t n);

/*
 * Sets the callback that runs once, on the worker, when the handle exits.
 * (An exit while no worker runs, before wp_pool_start() or after the pool
 * stopped, runs it on the thread that caused the exit.) Returns 0,
 * -EINVAL, or -ECANCELED if the handle has already exited (the callback is
 * then not installed). Not to be called concurrently with itself on the
 * same handle.
 */
WP_API int wp_handle_on_exit(wp_handle *h, wp_exit_fn fn, void *arg);

/*
 * Exits the handle with -ECANCELED; queued events are dropped. Returns
 * when none of the handle's callbacks is running or will run again, the
 * exit callback included. Idempotent, and safe against every other way
 * the handle may exit at the same time.
 *
 * Called from inside one of the handle's own callbacks it returns at once:
 * no event runs after the current callback, and the exit callback runs
 * right after it returns. Blocks otherwise (briefly: at most until the
 * running callback returns, plus a round trip to the worker when an exit
 * callback is set), except in a callback that wp_pool_stop() runs on its
 * own thread: there it returns at once, and the exit callback runs on
 * that thread once the current callback has returned. A callback that
 * blocks here for a handle of another worker holds its own worker
 * meanwhile, so two workers must not do so for each other's handles at
 * the same time: each would wait for the other for ever.
 */
WP_API void wp_handle_unregister(wp_handle *h);

/*
 * Refuses new events, lets every event queued before the call run, then
 * exits the handle with code 0. Blocks until the handle has exited and its
 * exit callback has run; if ctx ends first, unregisters the handle (exit
 * code -ECANCELED) and returns ctx's error, unless the queue finished
 * meanwhile and the handle exited with 0: the close then stands, and the
 * call returns 0.
 *
 * Returns 0, -EINVAL, -ECANCELED if the handle had already exited (once
 * that exit's callback has run), or -ETIMEDOUT / -ECANCELED from ctx.
 * Called from the handle's own worker it cannot wait for its own queue:
 * it returns 0 at once and the exit follows once the queue has run. The
 * same holds in a callback that wp_pool_stop() runs on its own thread.
 */
WP_API int wp_handle_unregister_graceful(wp_handle *h, wp_ctx *ctx);

/*
 * A descriptor that becomes readable when the handle exits (an eventfd,
 * close-on-exec, non-blocking), made on the first call so that a handle
 * costs no descriptor until asked. Owned by the handle: do not close it.
 * Returns the descriptor, -EINVAL, or -EMFILE/-ENFILE/-ENOMEM.
 */
WP_API int wp_handle_error_fd(wp_handle *h);

/*
 * The exit code: 0 while the handle runs (and after a graceful exit), the
 * handler's non-zero return, -ECANCELED after unregister, or -ESHUTDOWN
 * after the pool stopped. -EINVAL if h is NULL.
 */
WP_API int wp_handle_error(const wp_handle *h);

/* True once the handle has exited. */
WP_API bool wp_handle_exited(const wp_handle *h);

/*
 * Unregisters the handle if needed and releases it. Calls on h that are
 * already in progress in other threads finish safely; h must not be used
 * afterwards. Safe from inside the handle's own callbacks.
 */
WP_API void wp_handle_free(wp_handle *h);

/* ------------------------------------------------------------------ */
/* Timers                                                              */
/* ------------------------------------------------------------------ */

/*
 * A timer callback: runs on the handle's worker with the context given to
 * wp_handle_set_timer() (or the pool's own) and the registered arg.
 * Returning non-zero ends the handle with that value as its exit code.
 */
typedef int (*wp_timer_fn)(wp_ctx *ctx, void *arg);

/*
 * Calls fn(ctx, arg) every interval_ns nanoseconds on the handle's worker,
 * never concurrently with the handle's other callbacks. Fires follow the
 * schedule start + k * interval_ns, so the timer does not drift; when
 * fires fall behind by more than one period, the missed periods are
 * coalesced into one call (see wp_handle_timer_missed()). A fire never
 * comes early, and at most 0.63 ms late besides the wake-up's latency and
 * the callbacks ahead of it: time runs in 0.13 ms ticks, and a worker may
 * wait up to 1/128 of its shortest period, at most 0.5 ms, so that one
 * wake-up serves the timers of several ticks.
 *
 * Setting again replaces the timer; interval_ns 0 removes it (fn may then
 * be NULL). The timer stops for good when ctx (may be NULL) ends, and
 * when the handle exits. The call returns once the change has taken
 * effect: the old callback will not run again. It may block briefly for a
 * round trip to the worker; from the handle's worker it applies at once.
 * Before the pool starts, the change applies when it starts. From a
 * callback on another worker, of this pool or any other, it does not wait
 * (two workers could otherwise wait for each other), nor from a callback
 * that wp_pool_stop() runs on its own thread: the change applies as soon
 * as the handle's worker looks, and the old callback may fire once more
 * before.
 * An interval longer than the clock's range (UINT64_MAX, say) never
 * fires.
 *
 * Returns 0, -EINVAL, -ENOMEM, or -ECANCELED if the handle has exited.
 */
WP_API int wp_handle_set_timer(wp_handle *h, wp_ctx *ctx,
			       uint64_t interval_ns, wp_timer_fn fn,
			       void *arg);

/*
 * Inside a timer callback of h: how many periods were missed and
 * coalesced into this call (0 when it runs on schedule). 0 elsewhere.
 */
WP_API uint64_t wp_handle_timer_missed(const wp_handle *h);

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

/*
 * A static text for a code returned by this library or by a handler (a
 * negative errno, or any other value, which is named as a handler code).
 */
WP_API const char *wp_strerror(int err);

/*
 * The version of the library in use, as "MAJOR.MINOR.PATCH": with a
 * shared library, the one loaded at run time, which a program can compare
 * with the WP_VERSION_STRING it was compiled against.
 */
WP_API const char *wp_version(void);

#ifdef __cplusplus
}
#endif

#endif
