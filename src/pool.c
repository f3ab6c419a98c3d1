/* SPDX-License-Identifier: MIT */
/*
 * Pools and their workers: creation and backend choice, the worker loop,
 * waking and waiting, handle storage, and stopping.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

#define WP__DEFAULT_CAPACITY 4096
/*
 * Adaptive spinning polls for at most SPIN_MAX, at least SPIN_MIN. Kept
 * short: at 50 us between events a longer poll would find work often
 * enough to keep polling, at the cost of a whole core.
 */
#define WP__SPIN_MAX_NS 10000
#define WP__SPIN_MIN_NS 1000
#define WP__SPIN_PROBE 32
/*
 * A polling worker offers its CPU to other runnable threads this often.
 * With more threads than CPUs, the thread whose work it waits for may be
 * queued behind it on the same CPU: yielding lets that thread run now
 * instead of at the end of the poll, and the worker finds work without
 * having slept. With nothing else runnable, the yield returns at once.
 */
#define WP__SPIN_YIELD_NS 1000
/* Holding back for a stream of items (see worker_hold). */
#define WP__HOLD_NS 2000
#define WP__HOLD_MIN 16
#define WP__HOLD_PROBE 256
#define WP__BATCH 64
#define WP__CHUNK_HANDLES 256

/* How often a worker re-checks handles waiting to be released. */
#define WP__RELEASE_POLL_NS 1000000

_Thread_local struct wp__worker *wp__self;

/* The pool whose stop this thread is finishing, if any. */
static _Thread_local const wp_pool *finishing;

/*
 * The worker this thread is, for good. wp__self says the same except
 * while pool_finish() lends the thread a stopped worker's name: a callback
 * run under that name still holds up this worker, and must not wait for
 * it.
 */
static _Thread_local const struct wp__worker *own;

bool wp__can_wait_for(const struct wp__worker *w)
{
	return wp__self != w && own != w && finishing != w->pool;
}

/* Handles are carved from chunks, with no per-handle allocator cost. */
struct wp__chunk {
	struct wp__chunk *next;
	struct wp_handle h[WP__CHUNK_HANDLES];
};

void wp_pool_options_init(struct wp_pool_options *opt)
{
	if (!opt)
		return;
	memset(opt, 0, sizeof(*opt));
	opt->queue_capacity = WP__DEFAULT_CAPACITY;
	opt->backend = WP_BACKEND_AUTO;
	opt->spin_ns = WP_SPIN_ADAPTIVE;
}

/* ------------------------------------------------------------------ */
/* Waking and waiting                                                  */
/* ------------------------------------------------------------------ */

/* The slow half of wp__worker_wake(): w announced that it sleeps. */
void wp__worker_ring(struct wp__worker *w)
{
	struct wp__worker *self = wp__self;

	/* Only the thread that clears the flag rings the doorbell. */
	if (!atomic_exchange(&w->sleeping, 0))
		return;
	if (self == w)
		return;
	if (self && self->pool != w->pool)
		self = NULL;
	w->pool->backend->wake(self, w);
}

static void worker_wake_waiters(struct wp__worker *w)
{
	atomic_fetch_add(&w->progress, 1);
	wp__futex_wake(&w->progress);
}

/* Wakes the threads blocked in wp__worker_wait() on w, if any. */
void wp__worker_kick(struct wp__worker *w)
{
	/* Ordered after the caller's state change by the seq_cst fence. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&w->nwaiters, memory_order_relaxed) ||
	    atomic_load_explicit(&w->nfull, memory_order_relaxed))
		worker_wake_waiters(w);
}

/*
 * The worker's kick after a round. Producers waiting for room are woken
 * only once half the queue is free: waking them for every batch would
 * cost two system calls per batch while a fast producer keeps the queue
 * full.
 */
static void worker_kick_round(struct wp__worker *w)
{
	uint64_t used;

	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&w->nwaiters, memory_order_relaxed)) {
		worker_wake_waiters(w);
		return;
	}
	if (!atomic_load_explicit(&w->nfull, memory_order_relaxed))
		return;
	used = atomic_load_explicit(&w->q.tail, memory_order_relaxed) -
	       w->q.head;
	if (used <= (w->q.mask + 1) / 2)
		worker_wake_waiters(w);
}

/*
 * Blocks until ready(arg) holds or ctx (may be NULL) ends, and returns 0
 * or ctx's error; count is the waiter count to register on (nwaiters, or
 * nfull for room in the queue). Whoever makes ready() true kicks w.
 */
static int worker_wait_on(struct wp__worker *w, _Atomic uint32_t *count,
			  wp_ctx *ctx, bool (*ready)(void *), void *arg)
{
	uint64_t deadline = wp__ctx_deadline(ctx);
	struct wp__waiter wt;
	uint32_t seen;
	int rc = 0;

	/*
	 * Counted before ready() is evaluated: a kick that the count does
	 * not reach happened before, and ready() sees its effect.
	 */
	atomic_fetch_add(count, 1);
	if (ctx)
		wp__ctx_watch(ctx, &wt, &w->progress);

	for (;;) {
		seen = atomic_load(&w->progress);
		if (ready(arg))
			break;
		rc = ctx ? wp_ctx_err(ctx) : 0;
		if (rc)
			break;
		wp__futex_wait(&w->progress, seen, deadline);
	}

	if (ctx)
		wp__ctx_unwatch(ctx, &wt);
	atomic_fetch_sub(count, 1);
	return rc;
}

int wp__worker_wait(struct wp__worker *w, wp_ctx *ctx,
		    bool (*ready)(void *), void *arg)
{
	return worker_wait_on(w, &w->nwaiters, ctx, ready, arg);
}

struct room_wait {
	struct wp__worker *w;
	struct wp_handle *h;
	uint64_t st;
	int err;
};

static bool room_ready(void *arg)
{
	struct room_wait *rw = arg;

	if (rw->h) {
		if (atomic_load(&rw->h->state) != rw->st) {
			rw->err = -ECANCELED;
			return true;
		}
	} else if (atomic_load(&rw->w->pool->state) >= WP__POOL_STOPPING) {
		rw->err = -ESHUTDOWN;
		return true;
	}
	return wp__queue_has_room(&rw->w->q);
}

/*
 * Waits until w's queue has room, ctx (may be NULL) ends, or the state of
 * h moves from st (h NULL: the pool stops). Returns 0 to try again, or
 * why not to.
 */
int wp__worker_wait_room(struct wp__worker *w, wp_ctx *ctx,
			 struct wp_handle *h, uint64_t st)
{
	struct room_wait rw = { w, h, st, 0 };
	int rc;

	/* The worker cannot make room while it waits for room. */
	if (wp__self == w || own == w)
		return -EDEADLK;
	rc = worker_wait_on(w, &w->nfull, ctx, room_ready, &rw);
	return rc ? rc : rw.err;
}

/* ------------------------------------------------------------------ */
/* The worker loop                                                     */
/* ------------------------------------------------------------------ */

/* Runs up to one batch of queued items; returns how many. */
static unsigned worker_drain(struct wp__worker *w)
{
	struct wp__item it;
	unsigned n;

	for (n = 0; n < WP__BATCH && wp__queue_pop(&w->q, &it); n++)
		wp__handle_run(w, &it);
	w->run_len += n;
	if (n) {
		atomic_store_explicit(&w->current, NULL, memory_order_release);
		atomic_store_explicit(&w->q.done, w->q.head,
				      memory_order_release);
	}
	return n;
}

/* Takes the control stack and serves it in the order it was pushed. */
static unsigned worker_control(struct wp__worker *w)
{
	struct wp_handle *h, *next, *fifo = NULL;
	unsigned n = 0;

	h = atomic_exchange(&w->ctl, NULL);
	for (; h; h = next) {
		next = h->ctl_next;
		h->ctl_next = fifo;
		fifo = h;
	}
	for (h = fifo; h; h = next, n++) {
		/* Read before serving: a new push may rewrite the link. */
		next = h->ctl_next;
		wp__handle_ctl(w, h);
	}
	return n;
}

/* One round of work: queued items, control requests, handle lists. */
static unsigned worker_round(struct wp__worker *w)
{
	unsigned n = worker_drain(w);

	if (atomic_load_explicit(&w->ctl, memory_order_acquire))
		n += worker_control(w);
	if (w->wheel.count)
		n += wp__timers_run(w);
	if (w->closing || w->releasing)
		wp__handle_lists(w, false);
	worker_kick_round(w);
	return n;
}

static bool worker_has_work(struct wp__worker *w)
{
	return wp__queue_ready(&w->q) || atomic_load(&w->ctl) ||
	       atomic_load_explicit(&w->stop, memory_order_relaxed) ||
	       (w->next_due && wp__now_ns() >= w->next_due);
}

static void worker_sleep(struct wp__worker *w)
{
	uint64_t deadline = w->next_due, poll;

	if (deadline)
		deadline += wp__timers_slack(w);
	/*
	 * Announce the sleep, then look once more: a producer that
	 * published before this store is seen by the look, and one that
	 * publishes after it sees the flag and rings (see wake).
	 */
	atomic_store(&w->sleeping, 1);
	if (worker_has_work(w)) {
		atomic_store(&w->sleeping, 0);
		return;
	}
	if (wp__queue_reserved(&w->q)) {
		/* A producer is between reserving and publishing. */
		atomic_store(&w->sleeping, 0);
		sched_yield();
		return;
	}
	if (w->releasing || w->closing) {
		poll = wp__now_ns() + WP__RELEASE_POLL_NS;
		if (!deadline || poll < deadline)
			deadline = poll;
	}
	w->pool->backend->wait(w, deadline);
	atomic_store(&w->sleeping, 0);
}

/*
 * How long to poll before sleeping. Adaptive spinning follows the recent
 * idle gaps: when work tends to come back within a few microseconds,
 * polling a little longer than the typical gap saves the sleep and the
 * wake-up system calls; when gaps are long, polling would only burn the
 * CPU, so the worker sleeps at once.
 *
 * A gap measured across a sleep includes the wake-up's own latency, which
 * can keep the average high even once work comes back quickly; so every
 * WP__SPIN_PROBE-th idle period polls anyway, as a probe.
 */
static uint64_t spin_budget(struct wp__worker *w, bool *probe)
{
	*probe = false;
	if (w->spin_ns != WP_SPIN_ADAPTIVE)
		return w->spin_ns;
	if (w->idle_avg > WP__SPIN_MAX_NS / 2) {
		if (++w->idle_probe % WP__SPIN_PROBE)
			return 0;
		*probe = true;
		return WP__SPIN_MAX_NS / 2;
	}
	return w->idle_avg * 4 + WP__SPIN_MIN_NS < WP__SPIN_MAX_NS ?
	       w->idle_avg * 4 + WP__SPIN_MIN_NS : WP__SPIN_MAX_NS;
}

/* Polls for work for up to budget ns; returns whether some came. */
static bool worker_spin(struct wp__worker *w, uint64_t start,
			uint64_t budget)
{
	uint64_t until, yield_at = start + WP__SPIN_YIELD_NS;
	uint64_t now;

	if (!budget)
		return false;
	/* A budget past the clock's range polls until work comes. */
	until = budget > UINT64_MAX - start ? UINT64_MAX : start + budget;
	while (!worker_has_work(w)) {
		now = wp__now_ns();
		if (budget != WP_SPIN_FOREVER && now >= until)
			return false;
		if (now >= yield_at) {
			sched_yield();
			yield_at = wp__now_ns() + WP__SPIN_YIELD_NS;
		} else {
			wp__cpu_relax();
		}
	}
	return true;
}

/*
 * Holding back. A worker that keeps up with a fast producer on another CPU
 * finds one item at a time and at once polls the slot the producer writes
 * next: each write then has to take the cache line back from the worker,
 * and the producer pays that on every add. When the queue is fed as a
 * stream, an idle worker therefore first waits WP__HOLD_NS without looking
 * at the queue, and the producer fills whole cache lines undisturbed.
 *
 * A stream is recognised by its effect: a hold after which at least
 * WP__HOLD_MIN items were waiting. Every WP__HOLD_PROBE-th idle period
 * holds as a probe; a hold that finds fewer items ends the stream, so
 * request-response traffic, which finds one item, pays a hold only once
 * per probe period. Only adaptive spinning holds: a fixed spin or busy
 * polling asks for the lowest latency.
 */
static void worker_hold(struct wp__worker *w, uint64_t start)
{
	if (w->held_back)
		w->stream = w->run_len >= WP__HOLD_MIN;
	w->run_len = 0;
	w->held_back = false;
	if (w->spin_ns != WP_SPIN_ADAPTIVE)
		return;
	if (!w->stream && ++w->hold_probe % WP__HOLD_PROBE)
		return;

	/* A producer that shares this CPU may fill the queue meanwhile. */
	w->held_back = true;
	sched_yield();
	while (wp__now_ns() < start + WP__HOLD_NS)
		wp__cpu_relax();
}

/* Waits for work: polls first if that pays, then sleeps. */
static void worker_idle(struct wp__worker *w)
{
	uint64_t start = wp__now_ns(), gap;
	bool probe, found;

	worker_hold(w, start);
	found = worker_spin(w, start, spin_budget(w, &probe));
	if (!found) {
		/* What wakes it was not waiting for the hold. */
		w->held_back = false;
		worker_sleep(w);
	}

	/* An average of the last few gaps, with long ones clamped; a probe
	 * that found work shows what the gaps really are. */
	gap = wp__now_ns() - start;
	if (gap > WP__SPIN_MAX_NS * 4)
		gap = WP__SPIN_MAX_NS * 4;
	if (probe && found)
		w->idle_avg = gap;
	else
		w->idle_avg = (w->idle_avg * 7 + gap) / 8;
}

static void worker_pin(struct wp__worker *w)
{
	wp_pool *pool = w->pool;
	cpu_set_t set;

	if (!pool->ncpus)
		return;
	CPU_ZERO(&set);
	CPU_SET(pool->cpus[w->index % pool->ncpus], &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

/* Drops what is left queued: the events' contexts are released. */
static void worker_discard(struct wp__worker *w)
{
	struct wp__item it;

	while (wp__queue_pop(&w->q, &it))
		if (it.c && it.c != WP__ITEM_TASK)
			wp_ctx_release((wp_ctx *)it.c);
	atomic_store_explicit(&w->q.done, w->q.head, memory_order_release);
}

/* Serves the last requests of a stopping worker; no event runs again. */
static void worker_finish(struct wp__worker *w)
{
	do {
		worker_discard(w);
		worker_control(w);
		wp__timers_clear(w);
		wp__handle_lists(w, true);
	} while (w->releasing || atomic_load(&w->ctl));
	wp__worker_kick(w);
}

/* Waits until the start decides; false when it was abandoned. */
static bool worker_gate(struct wp__worker *w)
{
	_Atomic uint32_t *gate = &w->pool->gate;
	uint32_t g;

	/* Acquire: pairs with the release that decided the start. */
	while ((g = atomic_load_explicit(gate, memory_order_acquire)) ==
	       WP__GATE_SHUT)
		wp__futex_wait(gate, WP__GATE_SHUT, 0);
	return g == WP__GATE_OPEN;
}

static void *worker_main(void *arg)
{
	struct wp__worker *w = arg;

	if (!worker_gate(w))
		return NULL;
	wp__self = w;
	own = w;
	worker_pin(w);
	w->pool->backend->thread_init(w);

	while (!atomic_load_explicit(&w->stop, memory_order_acquire)) {
		if (!worker_round(w))
			worker_idle(w);
	}

	worker_finish(w);
	wp__self = NULL;
	own = NULL;
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Handle storage                                                      */
/* ------------------------------------------------------------------ */

struct wp_handle *wp__handle_alloc(wp_pool *pool)
{
	struct wp__chunk *c;
	struct wp_handle *h;
	int i;

	if (!pool->free_handles) {
		c = wp__calloc(1, sizeof(*c));
		if (!c)
			return NULL;
		c->next = pool->chunks;
		pool->chunks = c;
		for (i = WP__CHUNK_HANDLES - 1; i >= 0; i--) {
			c->h[i].link = pool->free_handles;
			pool->free_handles = &c->h[i];
		}
	}
	h = pool->free_handles;
	pool->free_handles = h->link;
	return h;
}

/* Registered, not yet released; under the pool lock. */
static bool handle_live(const struct wp_handle *h)
{
	return atomic_load_explicit(&h->magic, memory_order_relaxed) ==
	       WP__HANDLE_MAGIC;
}

/*
 * Returns a handle nothing refers to any more to its pool. False when a
 * call entered it meanwhile: the handle stays, and the caller tries again
 * once that call has left.
 */
bool wp__handle_release(struct wp_handle *h)
{
	wp_pool *pool = h->w->pool;
	int fd = -1;
	bool gone;

	pthread_mutex_lock(&pool->lock);
	/*
	 * Sequentially consistent, the store and the load: a call that
	 * enters now either sees the magic gone or is counted here (see
	 * wp__handle_enter).
	 */
	atomic_store(&h->magic, 0);
	gone = !atomic_load(&h->users);
	if (gone) {
		/* No call can make the descriptor any more. */
		fd = atomic_load(&h->efd);
		h->link = pool->free_handles;
		pool->free_handles = h;
	} else {
		atomic_store(&h->magic, WP__HANDLE_MAGIC);
	}
	pthread_mutex_unlock(&pool->lock);
	if (fd >= 0)
		close(fd);
	return gone;
}

/* ------------------------------------------------------------------ */
/* Creating and destroying                                             */
/* ------------------------------------------------------------------ */

static int check_options(const struct wp_pool_options *opt)
{
	size_t i;

	if (!opt->queue_capacity || opt->queue_capacity > (1u << 30))
		return -EINVAL;
	if (opt->backend != WP_BACKEND_AUTO &&
	    opt->backend != WP_BACKEND_URING &&
	    opt->backend != WP_BACKEND_EPOLL)
		return -EINVAL;
	if (opt->ncpus && !opt->cpus)
		return -EINVAL;
	for (i = 0; i < opt->ncpus; i++)
		if (opt->cpus[i] < 0 || opt->cpus[i] >= CPU_SETSIZE)
			return -EINVAL;
	return 0;
}

static void workers_fini(wp_pool *pool, unsigned n)
{
	struct wp__worker *w;
	unsigned i;

	for (i = 0; i < n; i++) {
		w = &pool->workers[i];
		pool->backend->fini(w);
		close(w->doorbell);
		wp__queue_fini(&w->q);
	}
}

static int worker_init(wp_pool *pool, unsigned i, unsigned capacity)
{
	struct wp__worker *w = &pool->workers[i];
	int rc;

	w->pool = pool;
	w->index = i;
	w->spin_ns = pool->spin_ns;
	wp__timers_init(w);
	rc = wp__queue_init(&w->q, capacity);
	if (rc)
		return rc;

	w->doorbell = wp__eventfd(EFD_CLOEXEC);
	if (w->doorbell < 0) {
		rc = -errno;
		wp__queue_fini(&w->q);
		return rc;
	}

	rc = pool->backend->init(w, &pool->reason_text);
	if (rc) {
		close(w->doorbell);
		wp__queue_fini(&w->q);
	}
	return rc;
}

static int workers_init(wp_pool *pool, unsigned capacity)
{
	unsigned i;
	int rc;

	for (i = 0; i < pool->nworkers; i++) {
		rc = worker_init(pool, i, capacity);
		if (rc) {
			workers_fini(pool, i);
			return rc;
		}
	}
	return 0;
}

static enum wp_backend choose_backend(enum wp_backend asked)
{
	const char *env = getenv("WP_BACKEND");

	if (asked != WP_BACKEND_AUTO || !env)
		return asked;
	if (!strcmp(env, "uring") || !strcmp(env, "io_uring"))
		return WP_BACKEND_URING;
	if (!strcmp(env, "epoll"))
		return WP_BACKEND_EPOLL;
	return WP_BACKEND_AUTO;
}

/*
 * Sets up every worker on the chosen backend. On auto, any io_uring
 * failure (no syscall, forbidden by seccomp or sysctl, locked-memory
 * limits) falls back to epoll and is remembered as the reason.
 */
static int backend_setup(wp_pool *pool, enum wp_backend asked,
			 unsigned capacity)
{
	enum wp_backend kind = choose_backend(asked);
	int rc;

	if (kind != WP_BACKEND_EPOLL) {
		pool->backend = &wp__backend_uring;
		rc = workers_init(pool, capacity);
		if (!rc || kind == WP_BACKEND_URING)
			return rc;
		pool->reason = rc;
		/* Not io_uring's own refusal: memory or descriptors ran out. */
		if (!pool->reason_text)
			pool->reason_text = wp_strerror(rc);
	}
	pool->backend = &wp__backend_epoll;
	return workers_init(pool, capacity);
}

static int pool_alloc(wp_pool **out, const struct wp_pool_options *opt)
{
	long online = sysconf(_SC_NPROCESSORS_ONLN);
	wp_pool *pool;

	pool = wp__calloc(1, sizeof(*pool));
	if (!pool)
		return -ENOMEM;
	pool->nworkers = opt->workers ? opt->workers :
			 (unsigned)(online > 0 ? online : 1);
	pool->workers = wp__aligned_alloc(WP__CACHELINE,
				      pool->nworkers * sizeof(*pool->workers));
	if (pool->workers)
		memset(pool->workers, 0,
		       pool->nworkers * sizeof(*pool->workers));
	if (opt->ncpus) {
		pool->cpus = wp__calloc(opt->ncpus, sizeof(*pool->cpus));
		if (pool->cpus)
			memcpy(pool->cpus, opt->cpus,
			       opt->ncpus * sizeof(*pool->cpus));
		pool->ncpus = opt->ncpus;
	}
	if (!pool->workers || (opt->ncpus && !pool->cpus) ||
	    wp_ctx_create(&pool->ctx, NULL)) {
		free(pool->cpus);
		free(pool->workers);
		free(pool);
		return -ENOMEM;
	}
	pthread_mutex_init(&pool->lock, NULL);
	pthread_mutex_init(&pool->stop_lock, NULL);
	pthread_mutex_init(&pool->timer_lock, NULL);
	*out = pool;
	return 0;
}

static void pool_free(wp_pool *pool)
{
	pthread_mutex_destroy(&pool->lock);
	pthread_mutex_destroy(&pool->stop_lock);
	pthread_mutex_destroy(&pool->timer_lock);
	wp_ctx_release(pool->ctx);
	free(pool->cpus);
	free(pool->workers);
	pool->magic = 0;
	free(pool);
}

int wp_pool_create(wp_pool **out, const struct wp_pool_options *opt)
{
	struct wp_pool_options defaults;
	wp_pool *pool;
	int rc;

	if (!out)
		return -EINVAL;
	if (!opt) {
		wp_pool_options_init(&defaults);
		opt = &defaults;
	}
	rc = check_options(opt);
	if (rc)
		return rc;

	rc = pool_alloc(&pool, opt);
	if (rc)
		return rc;
	pool->spin_ns = opt->spin_ns;
	rc = backend_setup(pool, opt->backend, opt->queue_capacity);
	if (rc) {
		pool_free(pool);
		return rc;
	}
	pool->magic = WP__POOL_MAGIC;
	*out = pool;
	return 0;
}

static bool pool_valid(const wp_pool *pool)
{
	return pool && pool->magic == WP__POOL_MAGIC;
}

/* Also under a lent name: the thread still holds up its own worker. */
static bool on_worker_of(const wp_pool *pool)
{
	return (wp__self && wp__self->pool == pool) ||
	       (own && own->pool == pool);
}

/* Stops and joins workers [0, n). */
static void workers_join(wp_pool *pool, unsigned n)
{
	struct wp__worker *w;
	unsigned i;

	for (i = 0; i < n; i++) {
		w = &pool->workers[i];
		if (!w->started)
			continue;
		atomic_store(&w->stop, true);
		atomic_store(&w->sleeping, 1);
		wp__worker_wake(w);
	}
	for (i = 0; i < n; i++) {
		w = &pool->workers[i];
		if (!w->started)
			continue;
		pthread_join(w->thread, NULL);
		w->started = false;
		atomic_store(&w->stop, false);
	}
}

static void gate_decide(wp_pool *pool, uint32_t how)
{
	/* Release: what the start set up is seen by the workers it lets in. */
	atomic_store_explicit(&pool->gate, how, memory_order_release);
	wp__futex_wake(&pool->gate);
}

int wp_pool_start(wp_pool *pool)
{
	unsigned i;
	int rc = 0;

	if (!pool_valid(pool))
		return -EINVAL;

	pthread_mutex_lock(&pool->lock);
	if (atomic_load(&pool->state) != WP__POOL_NEW) {
		rc = atomic_load(&pool->state) == WP__POOL_RUNNING ?
		     -EALREADY : -ESHUTDOWN;
		goto out;
	}
	atomic_store(&pool->gate, WP__GATE_SHUT);
	for (i = 0; i < pool->nworkers; i++) {
		rc = wp__fault() ? -EAGAIN :
		     -pthread_create(&pool->workers[i].thread, NULL,
				     worker_main, &pool->workers[i]);
		if (rc) {
			gate_decide(pool, WP__GATE_ABANDONED);
			while (i--)
				pthread_join(pool->workers[i].thread, NULL);
			goto out;
		}
	}
	for (i = 0; i < pool->nworkers; i++)
		pool->workers[i].started = true;
	atomic_store(&pool->state, WP__POOL_RUNNING);
	gate_decide(pool, WP__GATE_OPEN);
out:
	pthread_mutex_unlock(&pool->lock);
	return rc;
}

/* Exits every live handle with -ESHUTDOWN; the workers run the rest. */
static void pool_exit_handles(wp_pool *pool)
{
	struct wp__chunk *c;
	struct wp_handle *h;
	int i;

	pthread_mutex_lock(&pool->lock);
	atomic_store(&pool->state, WP__POOL_STOPPING);
	for (c = pool->chunks; c; c = c->next) {
		for (i = 0; i < WP__CHUNK_HANDLES; i++) {
			h = &c->h[i];
			if (handle_live(h) && wp__handle_exit(h, -ESHUTDOWN))
				wp__handle_push(h, WP__CTL_EXIT);
		}
	}
	pthread_mutex_unlock(&pool->lock);
}

static bool handle_finished(void *arg)
{
	struct wp_handle *h = arg;

	return wp__handle_finished(h);
}

/* The first handle whose exit has not finished, or NULL. */
static struct wp_handle *pool_unfinished(wp_pool *pool)
{
	struct wp_handle *h, *found = NULL;
	struct wp__chunk *c;
	int i;

	pthread_mutex_lock(&pool->lock);
	for (c = pool->chunks; c && !found; c = c->next) {
		for (i = 0; i < WP__CHUNK_HANDLES && !found; i++) {
			h = &c->h[i];
			if (handle_live(h) && !handle_finished(h))
				found = h;
		}
	}
	pthread_mutex_unlock(&pool->lock);
	return found;
}

/*
 * Waits until every exit, including those other threads began just before
 * the stop, has run its callback on the worker. Registration is closed,
 * so a handle found here is not reused while it is waited for.
 */
static void pool_await_exits(wp_pool *pool)
{
	struct wp_handle *h;

	while ((h = pool_unfinished(pool)))
		wp__worker_wait(h->w, NULL, handle_finished, h);
}

/* Whether a worker of a stopping pool still holds requests or handles. */
static bool pool_pending(wp_pool *pool)
{
	struct wp__worker *w;
	unsigned i;

	for (i = 0; i < pool->nworkers; i++) {
		w = &pool->workers[i];
		if (atomic_load(&w->ctl) || w->closing || w->releasing)
			return true;
	}
	return false;
}

/*
 * Serves, on this thread, what the joined workers left: their last
 * requests and the ones that the callbacks run here push, to any worker,
 * in passes until one leaves nothing. Only then does the pool refuse
 * requests (STOPPED): every push happens under the pool's lock, which the
 * last look and the state change share, so none slips in between.
 */
static void pool_finish(wp_pool *pool)
{
	/* This thread may be a worker of another pool, or finishing one. */
	const wp_pool *outer = finishing;
	struct wp__worker *self = wp__self;
	unsigned i;

	finishing = pool;
	for (;;) {
		for (i = 0; i < pool->nworkers; i++) {
			/* Callbacks run here see the worker as theirs. */
			wp__self = &pool->workers[i];
			worker_finish(wp__self);
			wp__self = self;
		}
		pthread_mutex_lock(&pool->lock);
		if (!pool_pending(pool)) {
			atomic_store(&pool->state, WP__POOL_STOPPED);
			pthread_mutex_unlock(&pool->lock);
			break;
		}
		pthread_mutex_unlock(&pool->lock);
	}
	finishing = outer;
}

int wp_pool_stop(wp_pool *pool)
{
	bool running;
	unsigned i;

	if (!pool_valid(pool))
		return -EINVAL;
	if (on_worker_of(pool))
		return -EDEADLK;

	pthread_mutex_lock(&pool->stop_lock);
	if (atomic_load(&pool->state) == WP__POOL_STOPPED)
		goto out;

	running = atomic_load(&pool->state) == WP__POOL_RUNNING;
	/*
	 * An exit callback that runs on this thread finishes only once it
	 * returns, and a running pool's stop waits for every exit.
	 */
	if (running && wp__handle_in_exit_of(pool)) {
		pthread_mutex_unlock(&pool->stop_lock);
		return -EDEADLK;
	}
	wp_ctx_cancel(pool->ctx);
	pool_exit_handles(pool);
	/* Tasks waiting for room give up on a stopping pool: tell them. */
	for (i = 0; i < pool->nworkers; i++)
		wp__worker_kick(&pool->workers[i]);
	if (running)
		pool_await_exits(pool);
	workers_join(pool, pool->nworkers);
	pool_finish(pool);
out:
	pthread_mutex_unlock(&pool->stop_lock);
	return 0;
}

int wp_pool_run(wp_pool *pool, wp_ctx *ctx)
{
	_Atomic uint32_t word = 0;
	struct wp__waiter wt;
	int rc;

	if (!pool_valid(pool) || !wp__ctx_valid(ctx))
		return -EINVAL;
	/* Its stop would wait for the exit callback that runs here. */
	if (on_worker_of(pool) || wp__handle_in_exit_of(pool))
		return -EDEADLK;
	rc = wp_pool_start(pool);
	if (rc)
		return rc;

	wp__ctx_watch(ctx, &wt, &word);
	while (!wp_ctx_done(ctx))
		wp__futex_wait(&word, 0, wp__ctx_deadline(ctx));
	wp__ctx_unwatch(ctx, &wt);

	return wp_pool_stop(pool);
}

void wp_pool_destroy(wp_pool *pool)
{
	struct wp__chunk *c;
	unsigned i;
	int fd;

	/*
	 * Nor from an exit callback that runs on the calling thread: the
	 * call that runs it still uses the handle, which would be freed.
	 */
	if (!pool_valid(pool) || on_worker_of(pool) ||
	    wp__handle_in_exit_of(pool))
		return;
	wp_pool_stop(pool);

	while ((c = pool->chunks)) {
		pool->chunks = c->next;
		for (i = 0; i < WP__CHUNK_HANDLES; i++) {
			fd = atomic_load(&c->h[i].efd);
			if (handle_live(&c->h[i]) && fd >= 0)
				close(fd);
		}
		free(c);
	}
	for (i = 0; i < pool->nworkers; i++)
		worker_discard(&pool->workers[i]);
	workers_fini(pool, pool->nworkers);
	wp__timers_fini(pool);
	pool_free(pool);
}

int wp_pool_register(wp_pool *pool, wp_event_fn fn, void *arg,
		     wp_handle **out)
{
	struct wp_handle *h;
	unsigned i;

	if (!pool_valid(pool) || !fn || !out)
		return -EINVAL;
	i = atomic_fetch_add_explicit(&pool->next_worker, 1,
				      memory_order_relaxed);

	pthread_mutex_lock(&pool->lock);
	if (atomic_load(&pool->state) >= WP__POOL_STOPPING) {
		pthread_mutex_unlock(&pool->lock);
		return -ESHUTDOWN;
	}
	h = wp__handle_alloc(pool);
	if (!h) {
		pthread_mutex_unlock(&pool->lock);
		return -ENOMEM;
	}

	/*
	 * Initialised under the lock: wp_pool_stop() walks live handles.
	 * users is left alone: a late call on the old handle may still be
	 * counted, and takes its count back itself (wp__handle_enter).
	 */
	atomic_store_explicit(&h->exit_fn, NULL, memory_order_relaxed);
	h->exit_arg = NULL;
	h->at = 0;
	h->link = NULL;
	atomic_store_explicit(&h->efd, -1, memory_order_relaxed);
	h->fn = fn;
	h->arg = arg;
	h->w = &pool->workers[i % pool->nworkers];
	atomic_store_explicit(&h->ctl, 0, memory_order_relaxed);
	atomic_store_explicit(&h->wref, 0, memory_order_relaxed);
	atomic_store_explicit(&h->flags, 0, memory_order_relaxed);
	h->ctl_next = NULL;
	atomic_store_explicit(&h->magic, WP__HANDLE_MAGIC,
			      memory_order_relaxed);
	/* A new generation: adds still in flight on the old one step back. */
	atomic_store(&h->state, ((atomic_load(&h->state) & WP__GEN_MASK) +
				 WP__GEN_ONE) & WP__GEN_MASK);
	pthread_mutex_unlock(&pool->lock);

	*out = h;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Accessors and tasks                                                 */
/* ------------------------------------------------------------------ */

enum wp_backend wp_pool_backend(const wp_pool *pool)
{
	if (!pool_valid(pool))
		return WP_BACKEND_AUTO;
	return pool->backend->kind;
}

int wp_pool_backend_reason(const wp_pool *pool, const char **what)
{
	if (!pool_valid(pool))
		return -EINVAL;
	if (what)
		*what = pool->reason ? pool->reason_text : NULL;
	return pool->reason;
}

unsigned wp_pool_workers(const wp_pool *pool)
{
	return pool_valid(pool) ? pool->nworkers : 0;
}

wp_ctx *wp_pool_ctx(wp_pool *pool)
{
	return pool_valid(pool) ? pool->ctx : NULL;
}

int wp_pool_go(wp_pool *pool, wp_ctx *ctx, void (*fn)(void *), void *arg)
{
	struct wp__item it = { (void *)fn, arg, WP__ITEM_TASK };
	struct wp__worker *w;
	unsigned i;
	int rc;

	if (!pool_valid(pool) || !fn || (ctx && !wp__ctx_valid(ctx)))
		return -EINVAL;
	if (atomic_load(&pool->state) >= WP__POOL_STOPPING)
		return -ESHUTDOWN;

	/* The calling worker first: no hop, and no wake-up to send. */
	if (on_worker_of(pool) && wp__queue_push(&wp__self->q, &it))
		return 0;
	i = atomic_fetch_add_explicit(&pool->next_worker, 1,
				      memory_order_relaxed);
	w = &pool->workers[i % pool->nworkers];
	while (!wp__queue_push(&w->q, &it)) {
		rc = wp__worker_wait_room(w, ctx, NULL, 0);
		if (rc)
			return rc;
	}
	wp__worker_wake(w);
	return 0;
}
