/* SPDX-License-Identifier: MIT */
/*
 * Handles: adding events, running them on the worker, and the one exit
 * every handle makes, whichever of an error, unregister, graceful
 * unregister or pool stop gets there first.
 *
 * Four facts carry the design:
 * - The state word changes phase by compare-and-swap, so exactly one
 *   caller wins the exit and owns what follows (error fd, exit callback).
 * - The worker publishes the handle it is about to run in worker->current
 *   with a full barrier before it reads the state; an unregister changes
 *   the state before it reads current. One of them sees the other, so once
 *   unregister sees another handle (or none) running, no event of this
 *   handle will start.
 * - An add takes no lock and counts nothing. It reads the state word,
 *   reserves its queue positions, then reads the word again; a close or
 *   free changes the word first and reads the queue tail after. Either the
 *   second read sees the change, and the add fills its positions with
 *   holes and fails, or its positions lie below the tail the closer read,
 *   and the worker runs them before the close takes effect.
 * - Handle memory is never given back to the system while the pool lives,
 *   and a handle is reused only after the worker has passed every queued
 *   item that names it and no other call on it is in progress. An add
 *   that is late enough to read a reused handle finds a new generation in
 *   the state word and steps back.
 */
#include <errno.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

/*
 * The handle whose exit callback this thread is running, if any. A call on
 * that handle from inside the callback must not wait for the exit to
 * finish: it finishes when the callback returns. On the worker, wp__self
 * says as much already; this covers exits run where no worker runs.
 */
static _Thread_local const struct wp_handle *running_exit;

bool wp__handle_in_exit_of(const wp_pool *pool)
{
	return running_exit && running_exit->w->pool == pool;
}

/* Marks an exit callback as taken: it has run or never will. */
static void exit_taken(int err, void *arg)
{
	(void)err;
	(void)arg;
}

/* Marks an exit callback being replaced: its argument is being written. */
static void exit_busy(int err, void *arg)
{
	(void)err;
	(void)arg;
}

/*
 * Puts mark in h's exit callback slot and returns what it held, or
 * exit_taken, leaving the slot alone, once the callback is taken. A
 * wp_handle_on_exit() between writing the argument and installing the
 * function is waited for: it is a few instructions long.
 */
static wp_exit_fn exit_swap(struct wp_handle *h, wp_exit_fn mark)
{
	wp_exit_fn fn = atomic_load(&h->exit_fn);

	for (;;) {
		if (fn == exit_busy) {
			sched_yield();
			fn = atomic_load(&h->exit_fn);
		} else if (fn == exit_taken ||
			   /* Acquire: pairs with on_exit's release. */
			   atomic_compare_exchange_weak(&h->exit_fn, &fn,
							mark)) {
			return fn;
		}
	}
}

/*
 * Takes h's exit callback for the exit, with the argument installed with
 * it; NULL when there is none or it was taken.
 */
static wp_exit_fn exit_take(struct wp_handle *h, void **arg)
{
	wp_exit_fn fn = exit_swap(h, exit_taken);

	*arg = h->exit_arg;
	return fn == exit_taken ? NULL : fn;
}

bool wp__handle_valid(const struct wp_handle *h)
{
	return h && atomic_load_explicit(&h->magic, memory_order_relaxed) ==
		    WP__HANDLE_MAGIC;
}

static int state_code(uint64_t st)
{
	return (int)(uint32_t)(st >> 32);
}


/*
 * Counts a call in progress, so that free waits for it to finish. The
 * generation is read before the count is taken and checked after: a call
 * that came in while h was being released, or after it was registered
 * anew, leaves again. The count's increment and the magic's load are
 * sequentially consistent, against wp__handle_release(), which clears
 * the magic and then reads the count: one of the two sees the other.
 */
bool wp__handle_enter(struct wp_handle *h)
{
	uint64_t gen;

	if (!h)
		return false;
	gen = atomic_load(&h->state) & WP__GEN_MASK;
	if (!wp__handle_valid(h))
		return false;
	WP__PAUSE(WP__PAUSE_ENTER);
	atomic_fetch_add(&h->users, 1);
	if (atomic_load(&h->magic) == WP__HANDLE_MAGIC &&
	    (atomic_load(&h->state) & WP__GEN_MASK) == gen)
		return true;
	wp__handle_leave(h);
	return false;
}

void wp__handle_leave(struct wp_handle *h)
{
	/* Release: the call's reads of the handle finish before this. */
	atomic_fetch_sub_explicit(&h->users, 1, memory_order_release);
}

/* ------------------------------------------------------------------ */
/* Exiting                                                             */
/* ------------------------------------------------------------------ */

bool wp__handle_exit(struct wp_handle *h, int code)
{
	uint64_t old = atomic_load(&h->state);
	uint64_t st;
	int fd;

	do {
		if ((old & WP__PHASE) == WP__EXITED)
			return false;
		st = (old & (WP__FREED | WP__GEN_MASK)) | WP__EXITED |
		     ((uint64_t)(uint32_t)code << 32);
	} while (!atomic_compare_exchange_weak(&h->state, &old, st));

	/*
	 * The descriptor is read after the state changed; error_fd()
	 * publishes it before reading the state, so one of us signals it.
	 */
	fd = atomic_load(&h->efd);
	if (fd >= 0)
		eventfd_write(fd, 1);

	/* Adds blocked on a full queue give up on an exited handle. */
	wp__worker_kick(h->w);
	return true;
}

void wp__handle_run_exit(struct wp_handle *h)
{
	int code = state_code(atomic_load(&h->state));
	const struct wp_handle *outer = running_exit;
	struct wp__worker *w = h->w;
	wp_exit_fn fn;
	void *arg;

	/* Only the worker owns the wheel; elsewhere none runs any more. */
	if (wp__self == w)
		wp__timers_drop(w, h);

	fn = exit_take(h, &arg);
	if (fn) {
		running_exit = h;
		fn(code, arg);
		running_exit = outer;
	}

	/* The last touch of the handle here: it may be freed right after. */
	atomic_fetch_or_explicit(&h->flags, WP__H_FINISHED,
				 memory_order_release);
	wp__worker_kick(w);
}

/* Pushes a control request; the caller ensures a worker will serve it. */
void wp__handle_push(struct wp_handle *h, uint32_t what)
{
	struct wp__worker *w = h->w;
	struct wp_handle *top;
	uint32_t old;

	/*
	 * Each pending bit holds one reference, taken before the worker can
	 * see the bit; a request merged into one already pending gives its
	 * reference back.
	 */
	if (what != WP__CTL_FREE)
		atomic_fetch_add(&h->wref, 1);

	/*
	 * Already on the stack: the worker takes the new bit with the old.
	 * The acquire orders this push after the worker's exchange that
	 * emptied the bits, and with it its read of ctl_next.
	 */
	old = atomic_fetch_or_explicit(&h->ctl, what, memory_order_acq_rel);
	if ((old & what) && what != WP__CTL_FREE)
		atomic_fetch_sub(&h->wref, 1);
	if (old)
		return;

	/* Sequentially consistent, as wp__worker_wake() requires. */
	top = atomic_load_explicit(&w->ctl, memory_order_relaxed);
	do {
		h->ctl_next = top;
	} while (!atomic_compare_exchange_weak_explicit(&w->ctl, &top, h,
			memory_order_seq_cst, memory_order_relaxed));
	wp__worker_wake(w);
}

/*
 * Hands a request to the worker. Returns false when no worker will serve
 * it: the pool has stopped, or has not started and an exit cannot wait.
 * The worker itself (or the thread finishing a stopped worker's work)
 * always serves what it pushes before it is done.
 */
bool wp__handle_request(struct wp_handle *h, uint32_t what)
{
	wp_pool *pool = h->w->pool;
	bool ok;
	int st;

	pthread_mutex_lock(&pool->lock);
	st = atomic_load(&pool->state);
	ok = wp__self == h->w || st == WP__POOL_RUNNING ||
	     st == WP__POOL_STOPPING ||
	     (st == WP__POOL_NEW && what != WP__CTL_EXIT);
	if (ok)
		wp__handle_push(h, what);
	pthread_mutex_unlock(&pool->lock);
	return ok;
}

static bool not_running(void *arg)
{
	struct wp_handle *h = arg;

	return atomic_load(&h->w->current) != h;
}

static bool finished(void *arg)
{
	return wp__handle_finished(arg);
}

/*
 * Waits until the exit that another call won has run its callback, except
 * where that cannot be awaited: where the worker cannot be waited for, or
 * inside h's own exit callback.
 */
static void await_exit(struct wp_handle *h)
{
	if (wp__can_wait_for(h->w) && running_exit != h)
		wp__worker_wait(h->w, NULL, finished, h);
}

/* Exits h with -ECANCELED and waits for its callbacks, where possible. */
static void handle_unregister(struct wp_handle *h)
{
	struct wp__worker *w = h->w;
	wp_exit_fn none = NULL;

	if (!wp__handle_exit(h, -ECANCELED)) {
		/* Another exit won. */
		await_exit(h);
		return;
	}

	if (wp__self == w) {
		/* Inside h's own callback, the exit runs once it returns. */
		if (atomic_load(&w->current) == h)
			wp__handle_push(h, WP__CTL_EXIT);
		else
			wp__handle_run_exit(h);
		return;
	}

	/*
	 * No exit callback and no timer: no need to involve the worker at
	 * all. A timer is dropped by the worker as the handle exits, so its
	 * fires need not look at the handle; the worker sets WP__H_TIMER
	 * before it reads the state, this thread changed the state before
	 * reading the flag, so one of the two sees the other.
	 */
	if (!(atomic_load(&h->flags) & WP__H_TIMER) &&
	    atomic_compare_exchange_strong(&h->exit_fn, &none, exit_taken)) {
		wp__worker_wait(w, NULL, not_running, h);
		atomic_fetch_or_explicit(&h->flags, WP__H_FINISHED,
					 memory_order_release);
		wp__worker_kick(w);
		return;
	}

	if (wp__handle_request(h, WP__CTL_EXIT)) {
		if (wp__can_wait_for(w))
			wp__worker_wait(w, NULL, finished, h);
		return;
	}
	/* No worker runs: the exit callback runs here. */
	wp__worker_wait(w, NULL, not_running, h);
	wp__handle_run_exit(h);
}

/* ------------------------------------------------------------------ */
/* Running on the worker                                               */
/* ------------------------------------------------------------------ */

void wp__handle_run(struct wp__worker *w, const struct wp__item *it)
{
	struct wp_handle *h = it->a;
	wp_ctx *ctx = (wp_ctx *)it->c;
	int rc;

	if (it->c == WP__ITEM_TASK) {
		if (atomic_load_explicit(&w->current, memory_order_relaxed))
			atomic_store_explicit(&w->current, NULL,
					      memory_order_release);
		((void (*)(void *))it->a)(it->b);
		return;
	}
	if (!h)
		return;		/* a hole left by an add that stepped back */

	/*
	 * Full barrier: current is published before the state is read. It
	 * stays set across a run of the same handle's events and is cleared
	 * at the end of the batch (worker_drain).
	 */
	if (atomic_load_explicit(&w->current, memory_order_relaxed) != h)
		atomic_exchange(&w->current, h);
	if (!wp__handle_has_exited(h)) {
		rc = h->fn(ctx ? ctx : w->pool->ctx, it->b, h->arg);
		if (rc && wp__handle_exit(h, rc))
			wp__handle_run_exit(h);
	}

	if (ctx)
		wp_ctx_release(ctx);
}

static bool list_remove(struct wp_handle **list, struct wp_handle *h)
{
	for (; *list; list = &(*list)->link) {
		if (*list == h) {
			*list = h->link;
			return true;
		}
	}
	return false;
}

/* Serves the requests pushed for h; runs on the worker (or, once the
 * pool has stopped, on the thread that stopped it). */
void wp__handle_ctl(struct wp__worker *w, struct wp_handle *h)
{
	uint32_t what = atomic_exchange_explicit(&h->ctl, 0,
						 memory_order_acq_rel);

	/*
	 * The requester changed the state before pushing; every event it
	 * let in lies below the tail read now (see the top of this file).
	 */
	if (what & WP__CTL_CLOSE) {
		/*
		 * A close whose handle another call exited meanwhile has
		 * nothing to drain. It must not be linked either: a free
		 * served before it may have put h on the releasing list,
		 * whose link the closing list shares.
		 */
		if (wp__handle_has_exited(h)) {
			atomic_fetch_sub(&h->wref, 1);
			wp__worker_kick(w);
		} else {
			h->at = atomic_load(&w->q.tail);
			h->link = w->closing;
			w->closing = h;
		}
	}
	if (what & WP__CTL_FREE) {
		/* A closing handle being freed no longer waits to close. */
		if (list_remove(&w->closing, h))
			atomic_fetch_sub(&h->wref, 1);
		wp__timers_discard(w, h);
		h->at = atomic_load(&w->q.tail);
		h->link = w->releasing;
		w->releasing = h;
	}
	if (what & WP__CTL_TIMER) {
		/* After: until the timer holds its own, this one keeps h. */
		wp__timers_apply(w, h);
		atomic_fetch_sub(&h->wref, 1);
	}
	if (what & WP__CTL_EXIT) {
		atomic_fetch_sub(&h->wref, 1);
		wp__handle_run_exit(h);
	}
}

/*
 * Returns false while h must stay on the closing list. Once it returns
 * true, h may already be released by another thread: the exit callback
 * and the drop of wref are the last touches.
 */
static bool close_step(struct wp__worker *w, struct wp_handle *h,
		       uint64_t done)
{
	bool won;

	if (wp__handle_has_exited(h)) {
		atomic_fetch_sub(&h->wref, 1);
		wp__worker_kick(w);
		return true;
	}
	if (h->at > done)
		return false;
	WP__PAUSE(WP__PAUSE_CLOSE);

	/*
	 * The reference is dropped only once the exit is decided: until
	 * then h cannot be released and registered anew, so the exit with
	 * code 0 cannot end the handle that reuses its memory. A won exit
	 * keeps h until its callback has run, since whoever frees h waits
	 * for that.
	 */
	won = wp__handle_exit(h, 0);
	atomic_fetch_sub(&h->wref, 1);
	if (won)
		wp__handle_run_exit(h);
	return true;
}

static bool release_step(struct wp__worker *w, struct wp_handle *h,
			 uint64_t done)
{
	(void)w;
	if (atomic_load(&h->users) || atomic_load(&h->wref) ||
	    h->at > done)
		return false;
	return wp__handle_release(h);
}

/*
 * Runs step on every handle of a worker list. The list is detached first
 * and the handles that stay are put back, so a step may end a handle's
 * life without the walk reading it again.
 */
static void list_walk(struct wp__worker *w, struct wp_handle **list,
		      bool (*step)(struct wp__worker *, struct wp_handle *,
				   uint64_t), uint64_t done)
{
	struct wp_handle *h = *list, *next;

	*list = NULL;
	for (; h; h = next) {
		next = h->link;
		if (!step(w, h, done)) {
			h->link = *list;
			*list = h;
		}
	}
}

/*
 * Advances the handles waiting to close or to be released. When stopping,
 * nothing queued will run, so closing handles just drop out.
 */
void wp__handle_lists(struct wp__worker *w, bool stopping)
{
	uint64_t done = atomic_load(&w->q.done);

	list_walk(w, &w->closing, close_step,
		  stopping ? UINT64_MAX - 1 : done);
	list_walk(w, &w->releasing, release_step, done);
	if (stopping && w->releasing)
		sched_yield();
}

/* ------------------------------------------------------------------ */
/* The public calls                                                    */
/* ------------------------------------------------------------------ */

/*
 * Queues up to n events of h in order on w, h's worker when the state
 * read st, as many as fit at once. Returns how many, 0 when the queue is
 * full, or -ECANCELED when the state word moved from st (the handle is
 * closing, exiting or freed): the reserved positions are then left as
 * holes.
 */
static int add_some(struct wp_handle *h, struct wp__worker *w, uint64_t st,
		    uintptr_t c, void *const *ev, size_t n)
{
	static const struct wp__item hole = { NULL, NULL, 0 };
	struct wp__queue *q = &w->q;
	struct wp__item it = { .a = h, .c = c };
	uint64_t pos;
	size_t i;

	if (n > q->mask + 1)
		n = q->mask + 1;
	pos = wp__queue_reserve(q, n);
	if (pos == UINT64_MAX && n > 1) {
		n = 1;
		pos = wp__queue_reserve(q, 1);
	}
	if (pos == UINT64_MAX)
		return 0;

	/* Ordered after the reservation by its compare-and-swap. */
	if (atomic_load(&h->state) != st) {
		for (i = 0; i < n; i++)
			wp__queue_put(q, pos + i, &hole);
		return -ECANCELED;
	}
	for (i = 0; i < n; i++) {
		it.b = ev[i];
		wp__queue_put(q, pos + i, &it);
	}
	return (int)n;
}

static int handle_add(struct wp_handle *h, wp_ctx *ctx, void *const *ev,
		      size_t n, bool block)
{
	struct wp__worker *w;
	size_t done = 0;
	uint64_t st;
	int rc = 0;

	if (!h || (ctx && !wp__ctx_valid(ctx)) || !ev || n > INT32_MAX)
		return -EINVAL;
	/* The state before the magic, as in add_one(). */
	st = atomic_load(&h->state);
	if (!wp__handle_valid(h))
		return -EINVAL;
	if ((st & (WP__PHASE | WP__FREED)) != WP__LIVE)
		return -ECANCELED;
	if (!n)
		return 0;

	/* Read after the state, as in add_one(). */
	w = h->w;
	if (ctx)
		wp__ctx_ref(ctx, (unsigned)n);
	while (done < n) {
		rc = add_some(h, w, st, (uintptr_t)ctx, ev + done, n - done);
		if (rc != 0)
			wp__worker_wake(w);
		if (rc > 0) {
			done += (size_t)rc;
			rc = 0;
		} else if (rc < 0) {
			break;
		} else if (!block) {
			rc = -EAGAIN;
			break;
		} else {
			rc = wp__worker_wait_room(w, ctx, h, st);
			if (rc)
				break;
		}
	}

	/* The references taken for events that were not queued. */
	for (size_t i = done; ctx && i < n; i++)
		wp_ctx_release(ctx);
	return done ? (int)done : rc;
}

/*
 * One event with the pool's context, the common case, in one straight
 * line: 0, -EINVAL, -ECANCELED as add_some() has it, or -EAGAIN when the
 * queue is full.
 */
static int add_one(struct wp_handle *h, void *event)
{
	struct wp__item it = { h, event, 0 };
	struct wp__worker *w;
	uint64_t pos, st;
	bool moved;

	if (!h)
		return -EINVAL;
	/*
	 * The state, with its generation, is read before the magic is
	 * checked: should h be freed and registered anew after the check,
	 * the state read again below tells, and the event does not go to
	 * the new handle. The load's acquire keeps the magic's load after
	 * it.
	 */
	st = atomic_load(&h->state);
	if (!wp__handle_valid(h))
		return -EINVAL;
	if ((st & (WP__PHASE | WP__FREED)) != WP__LIVE)
		return -ECANCELED;
	WP__PAUSE(WP__PAUSE_ADD_CHECKED);
	/*
	 * The worker is read after the state: should the handle be freed
	 * and registered anew meanwhile, the state read again below has
	 * moved from st, whichever worker this is.
	 */
	w = h->w;
	pos = wp__queue_reserve(&w->q, 1);
	if (pos == UINT64_MAX)
		return -EAGAIN;

	/*
	 * Ordered after the reservation by its compare-and-swap. A hole
	 * still needs the worker: whoever waits for the queue to pass this
	 * position waits for it to read the hole.
	 */
	moved = atomic_load(&h->state) != st;
	if (moved)
		it.a = NULL;
	wp__queue_put(&w->q, pos, &it);
	wp__worker_wake(w);
	return moved ? -ECANCELED : 0;
}

int wp_handle_add_event(wp_handle *h, wp_ctx *ctx, void *event)
{
	int rc;

	if (!ctx) {
		rc = add_one(h, event);
		if (rc != -EAGAIN)
			return rc;
	}
	rc = handle_add(h, ctx, &event, 1, true);
	return rc > 0 ? 0 : rc;
}

int wp_handle_try_add_event(wp_handle *h, void *event)
{
	return add_one(h, event);
}

int wp_handle_add_events(wp_handle *h, wp_ctx *ctx, void *const *events,
			 size_t n)
{
	return handle_add(h, ctx, events, n, true);
}

int wp_handle_on_exit(wp_handle *h, wp_exit_fn fn, void *arg)
{
	wp_exit_fn old;
	int rc = 0;

	if (!wp__handle_enter(h))
		return -EINVAL;
	/*
	 * The old callback is claimed before the argument is overwritten:
	 * an exit meanwhile waits for the new pair instead of running the
	 * old function with the new argument.
	 */
	old = exit_swap(h, exit_busy);
	if (old == exit_taken) {
		rc = -ECANCELED;
	} else {
		h->exit_arg = arg;
		/* Release: exit_arg is written before fn can be taken. */
		atomic_store_explicit(&h->exit_fn, fn, memory_order_release);
	}
	wp__handle_leave(h);
	return rc;
}

void wp_handle_unregister(wp_handle *h)
{
	if (!wp__handle_enter(h))
		return;
	handle_unregister(h);
	wp__handle_leave(h);
}

static int graceful_wait(struct wp_handle *h, wp_ctx *ctx)
{
	int rc;

	/* The worker cannot wait for its own queue to drain. */
	if (!wp__can_wait_for(h->w))
		return 0;

	rc = wp__worker_wait(h->w, ctx, finished, h);
	if (rc) {
		WP__PAUSE(WP__PAUSE_CLOSE_GIVE_UP);
		handle_unregister(h);
		/* The close may have finished first: then it stands. */
		if (!state_code(atomic_load(&h->state)))
			return 0;
		return rc;
	}
	return state_code(atomic_load(&h->state)) ? -ECANCELED : 0;
}

int wp_handle_unregister_graceful(wp_handle *h, wp_ctx *ctx)
{
	uint64_t old, st;
	int rc;

	if ((ctx && !wp__ctx_valid(ctx)) || !wp__handle_enter(h))
		return -EINVAL;
	old = atomic_load(&h->state);
	do {
		if ((old & WP__PHASE) != WP__LIVE)
			break;
		st = (old & ~(uint64_t)WP__PHASE) | WP__CLOSING;
	} while (!atomic_compare_exchange_weak(&h->state, &old, st));
	WP__PAUSE(WP__PAUSE_CLOSE_ASK);

	if ((old & WP__PHASE) == WP__EXITED ||
	    ((old & WP__PHASE) == WP__LIVE &&
	     !wp__handle_request(h, WP__CTL_CLOSE))) {
		/* Another exit won (a stopped pool has exited it too). */
		await_exit(h);
		rc = -ECANCELED;
	} else {
		/* Adds blocked on a full queue give up on a closing handle. */
		wp__worker_kick(h->w);
		rc = graceful_wait(h, ctx);
	}
	wp__handle_leave(h);
	return rc;
}

int wp_handle_error_fd(wp_handle *h)
{
	int fd, none = -1;

	if (!wp__handle_valid(h))
		return -EINVAL;

	fd = atomic_load(&h->efd);
	if (fd >= 0)
		return fd;

	if (!wp__handle_enter(h))
		return -EINVAL;
	fd = wp__eventfd(EFD_CLOEXEC | EFD_NONBLOCK);
	if (fd < 0) {
		fd = -errno;
	} else if (!atomic_compare_exchange_strong(&h->efd, &none, fd)) {
		close(fd);
		fd = none;
	} else if (wp__handle_has_exited(h)) {
		/* Published before the state is read: see wp__handle_exit. */
		eventfd_write(fd, 1);
	}
	wp__handle_leave(h);
	return fd;
}

int wp_handle_error(const wp_handle *h)
{
	uint64_t st;

	if (!wp__handle_valid(h))
		return -EINVAL;
	st = atomic_load(&h->state);
	return (st & WP__PHASE) == WP__EXITED ? state_code(st) : 0;
}

bool wp_handle_exited(const wp_handle *h)
{
	return wp__handle_valid(h) && wp__handle_has_exited(h);
}

/* True when nothing refers to h: it can go back to the pool at once. */
static bool release_now(struct wp_handle *h)
{
	struct wp__worker *w = h->w;

	return !atomic_load(&h->users) && !atomic_load(&h->wref) &&
	       !atomic_load(&h->ctl) &&
	       atomic_load(&w->q.done) == atomic_load(&w->q.tail);
}

void wp_handle_free(wp_handle *h)
{
	if (!wp__handle_enter(h))
		return;
	atomic_fetch_or(&h->state, WP__FREED);
	handle_unregister(h);
	wp__handle_leave(h);

	if (wp__self != h->w && release_now(h) && wp__handle_release(h))
		return;
	if (wp__handle_request(h, WP__CTL_FREE))
		return;

	/* The pool has stopped: only calls still in progress can remain. */
	while (!wp__handle_release(h))
		sched_yield();
}
