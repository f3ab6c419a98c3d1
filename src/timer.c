/* SPDX-License-Identifier: MIT */
/*
 * Per-handle periodic timers. Each worker keeps its handles' timers in a
 * hierarchical timing wheel: inserting, removing and firing a timer cost
 * the same whatever the number of timers, and the worker sleeps until the
 * next due tick without waking on a fixed clock.
 *
 * A tick is 2^17 ns (about 0.13 ms). A timer due at time d sits at tick
 * ceil(d / tick), so it never fires early and at most one tick late, plus
 * the wake-up latency. Level 0 covers the next 1024 ticks (134 ms) one
 * slot each, so common periods up to 100 ms never leave it; each of the 5
 * upper levels has 64 slots, each a whole lap of the level below, and a
 * slot is re-sorted ("cascaded") downwards when its lap begins.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define TICK_SHIFT 17
#define WP__TIMER_SLACK_NS 500000
#define L0_BITS WP__WHEEL_L0_BITS
#define LN_BITS WP__WHEEL_LN_BITS
#define L0_SIZE (1u << L0_BITS)
#define LN_SIZE (1u << LN_BITS)
#define UPPER WP__WHEEL_UPPER
#define NSLOTS (L0_SIZE + UPPER * LN_SIZE)
#define TIMER_CHUNK 1023
#define DUE_MAX ((uint64_t)INT64_MAX)

/* log2 of the ticks one slot of upper level k (1..UPPER) spans. */
static unsigned level_shift(unsigned k)
{
	return L0_BITS + LN_BITS * (k - 1);
}

static uint64_t ns_to_tick(uint64_t ns)
{
	return (ns + (1u << TICK_SHIFT) - 1) >> TICK_SHIFT;
}

void wp__timers_init(struct wp__worker *w)
{
	w->wheel.tick = wp__now_ns() >> TICK_SHIFT;
}

/* ------------------------------------------------------------------ */
/* The wheel                                                           */
/* ------------------------------------------------------------------ */

static void slot_mark(struct wp__wheel *wh, unsigned i, bool full)
{
	uint64_t *bits, bit;

	if (i < L0_SIZE) {
		bits = &wh->l0_bits[i / 64];
		bit = 1ull << (i % 64);
	} else {
		i -= L0_SIZE;
		bits = &wh->ln_bits[i / LN_SIZE];
		bit = 1ull << (i % LN_SIZE);
	}
	if (full)
		*bits |= bit;
	else
		*bits &= ~bit;
}

static void slot_add(struct wp__wheel *wh, unsigned i, struct wp__timer *t)
{
	struct wp__timer **slot = &wh->slots[i];

	t->next = *slot;
	if (t->next)
		t->next->pprev = &t->next;
	t->pprev = slot;
	*slot = t;
	slot_mark(wh, i, true);
	wh->count++;
}

/* The slot a timer due at tick belongs in, seen from the wheel's tick. */
static unsigned wheel_slot(const struct wp__wheel *wh, uint64_t tick)
{
	uint64_t delta, top;
	unsigned k;

	if (tick <= wh->tick)
		tick = wh->tick + 1;
	delta = tick - wh->tick;
	if (delta < L0_SIZE)
		return tick & (L0_SIZE - 1);

	for (k = 1; k < UPPER; k++)
		if (delta < 1ull << (level_shift(k) + LN_BITS))
			break;
	/* Beyond the top level's reach: park in its furthest slot, to be
	 * re-sorted when that slot's lap begins. */
	top = (1ull << (level_shift(UPPER) + LN_BITS)) - 1;
	if (k == UPPER && delta > top)
		tick = wh->tick + top;
	return L0_SIZE + (k - 1) * LN_SIZE +
	       (unsigned)((tick >> level_shift(k)) & (LN_SIZE - 1));
}

static void wheel_insert(struct wp__wheel *wh, struct wp__timer *t)
{
	slot_add(wh, wheel_slot(wh, ns_to_tick(t->due)), t);
}

/*
 * The first timer of a slot points back at the slot itself, so a removal
 * that empties a slot knows which one without the timer keeping its index.
 */
static void wheel_remove(struct wp__wheel *wh, struct wp__timer *t)
{
	struct wp__timer **pprev = t->pprev;
	uintptr_t at = (uintptr_t)pprev, first = (uintptr_t)wh->slots;

	if (!pprev)
		return;
	*pprev = t->next;
	if (t->next)
		t->next->pprev = pprev;
	t->pprev = NULL;
	wh->count--;
	if (!*pprev && at - first < sizeof(wh->slots))
		slot_mark(wh, (unsigned)((at - first) / sizeof(*pprev)), false);
}

/*
 * Moves a whole slot to the wheel's pending list, from which the caller
 * takes its timers one at a time. They stay linked until taken, so a
 * callback that removes a timer still pending unlinks it as usual.
 */
static void slot_take(struct wp__wheel *wh, unsigned i)
{
	struct wp__timer **slot = &wh->slots[i];

	wh->pending = *slot;
	if (wh->pending)
		wh->pending->pprev = &wh->pending;
	*slot = NULL;
	slot_mark(wh, i, false);
}

static struct wp__timer *pending_pop(struct wp__wheel *wh)
{
	struct wp__timer *t = wh->pending;

	if (!t)
		return NULL;
	wh->pending = t->next;
	if (t->next)
		t->next->pprev = &wh->pending;
	t->pprev = NULL;
	wh->count--;

	/*
	 * Firing touches each timer's callback argument, usually cold in the
	 * cache: ask for the next timer's while this one runs.
	 */
	if (t->next) {
		__builtin_prefetch(t->next->next);
		__builtin_prefetch(t->next->arg);
	}
	return t;
}

/* Ticks from start to the first set bit of level 0, circularly. */
static int l0_distance(const uint64_t *bits, unsigned start)
{
	unsigned word = start / 64, i;
	uint64_t m = bits[word] & (~0ull << (start % 64));

	for (i = 0; i <= L0_SIZE / 64; i++) {
		if (m)
			return (int)(((word * 64 + (unsigned)__builtin_ctzll(m))
				     - start) & (L0_SIZE - 1));
		word = (word + 1) % (L0_SIZE / 64);
		m = bits[word];
		if (i + 1 == L0_SIZE / 64)
			m &= (1ull << (start % 64)) - 1;
	}
	return -1;
}

/* The next tick at which a slot fires or cascades; UINT64_MAX if none. */
static uint64_t wheel_next(const struct wp__wheel *wh)
{
	uint64_t best = UINT64_MAX, block, rot, at;
	unsigned k, from;
	int d;

	d = l0_distance(wh->l0_bits,
			(unsigned)((wh->tick + 1) & (L0_SIZE - 1)));
	if (d >= 0)
		best = wh->tick + 1 + (unsigned)d;

	for (k = 1; k <= UPPER; k++) {
		if (!wh->ln_bits[k - 1])
			continue;
		block = wh->tick >> level_shift(k);
		from = (unsigned)((block + 1) & (LN_SIZE - 1));
		rot = wh->ln_bits[k - 1] >> from;
		if (from)
			rot |= wh->ln_bits[k - 1] << (LN_SIZE - from);
		at = (block + 1 + (uint64_t)__builtin_ctzll(rot)) <<
		     level_shift(k);
		if (at < best)
			best = at;
	}
	return best;
}

/* Moves the upper slots whose lap begins at tick down the wheel. */
static void wheel_cascade(struct wp__wheel *wh, uint64_t tick)
{
	struct wp__timer *t;
	unsigned k;

	for (k = UPPER; k >= 1; k--) {
		if (tick & ((1ull << level_shift(k)) - 1))
			continue;
		slot_take(wh, L0_SIZE + (k - 1) * LN_SIZE +
			  (unsigned)((tick >> level_shift(k)) &
				     (LN_SIZE - 1)));
		while ((t = pending_pop(wh)))
			wheel_insert(wh, t);
	}
}

/* ------------------------------------------------------------------ */
/* Firing                                                              */
/* ------------------------------------------------------------------ */

/* The interval class of a timer: floor(log2(interval)). */
static unsigned interval_class(const struct wp__timer *t)
{
	return 63 - (unsigned)__builtin_clzll(t->interval);
}

/*
 * An installed timer holds a reference on its handle (wref), so that the
 * handle is not reused while the wheel still points at it; it is counted
 * in its interval class, so that the worker knows its shortest period;
 * and it sets WP__H_TIMER, which makes every exit of the handle go
 * through its worker, where wp__handle_run_exit() drops the timer. So a
 * fire never needs to look at its handle's state.
 */
static void timer_hook(struct wp__worker *w, struct wp_handle *h,
		       struct wp__timer *t)
{
	unsigned c = interval_class(t);

	h->timer = t;
	atomic_fetch_add(&h->wref, 1);
	/* Sequentially consistent: set before the caller reads the state. */
	atomic_fetch_or(&h->flags, WP__H_TIMER);
	if (!w->wheel.classes[c]++)
		w->wheel.class_bits |= 1ull << c;
}

static void timer_unhook(struct wp__worker *w, struct wp__timer *t)
{
	unsigned c = interval_class(t);

	if (!--w->wheel.classes[c])
		w->wheel.class_bits &= ~(1ull << c);
	atomic_fetch_and(&t->h->flags, ~WP__H_TIMER);
	t->h->timer = NULL;
	atomic_fetch_sub(&t->h->wref, 1);
}

/*
 * How late the worker may wake for a due tick: 1/128 of the shortest
 * period installed, at most WP__TIMER_SLACK_NS. When many long timers are
 * spread over time, a wake-up then serves every tick due within the slack
 * instead of one tick each: on a virtual machine a sleep and its wake-up
 * cost tens of microseconds of CPU, more than firing a few hundred timers.
 * A fire comes at most the slack plus one tick late (0.63 ms at most),
 * besides the wake-up's own latency.
 */
uint64_t wp__timers_slack(const struct wp__worker *w)
{
	uint64_t shortest;

	if (!w->wheel.class_bits)
		return 0;
	shortest = 1ull << __builtin_ctzll(w->wheel.class_bits);
	return shortest / 128 < WP__TIMER_SLACK_NS ? shortest / 128 :
	       WP__TIMER_SLACK_NS;
}

/* ------------------------------------------------------------------ */
/* Timer memory                                                        */
/* ------------------------------------------------------------------ */

/*
 * Timers are carved from chunks of whole cache lines. A timer that
 * straddled two lines would cost a fire two misses, and the wheel's
 * prefetch of the next timer would bring in only one of them.
 */
struct wp__timer_chunk {
	struct wp__timer t[TIMER_CHUNK];
	struct wp__timer_chunk *next;
};

/* A zeroed timer from h's pool, or NULL when memory runs out. */
static struct wp__timer *timer_alloc(struct wp_handle *h)
{
	wp_pool *pool = h->w->pool;
	struct wp__timer_chunk *c;
	struct wp__timer *t;
	int i;

	pthread_mutex_lock(&pool->timer_lock);
	if (!pool->free_timers) {
		c = wp__aligned_alloc(WP__CACHELINE, sizeof(*c));
		if (!c) {
			pthread_mutex_unlock(&pool->timer_lock);
			return NULL;
		}
		c->next = pool->timer_chunks;
		pool->timer_chunks = c;
		for (i = TIMER_CHUNK - 1; i >= 0; i--) {
			c->t[i].next = pool->free_timers;
			pool->free_timers = &c->t[i];
		}
	}
	t = pool->free_timers;
	pool->free_timers = t->next;
	pthread_mutex_unlock(&pool->timer_lock);

	memset(t, 0, sizeof(*t));
	t->h = h;
	return t;
}

/*
 * Gives t back to pool's slabs. The pool is passed in, not read through
 * t->h: the handle may be another's by the time its timer goes.
 */
static void timer_free(wp_pool *pool, struct wp__timer *t)
{
	if (t->ctx)
		wp_ctx_release(t->ctx);
	pthread_mutex_lock(&pool->timer_lock);
	t->next = pool->free_timers;
	pool->free_timers = t;
	pthread_mutex_unlock(&pool->timer_lock);
}

/* Gives the chunks back; every timer has been freed by now. */
void wp__timers_fini(wp_pool *pool)
{
	struct wp__timer_chunk *c;

	while ((c = pool->timer_chunks)) {
		pool->timer_chunks = c->next;
		free(c);
	}
	pool->free_timers = NULL;
}

/*
 * When a timer is next due, interval after t. An interval too long for
 * the clock's range (UINT64_MAX, say, for "never") ends at DUE_MAX, some
 * 292 years after boot, rather than wrap round to the past.
 */
static uint64_t due_after(uint64_t t, uint64_t interval)
{
	return interval < DUE_MAX - t ? t + interval : DUE_MAX;
}

static void timer_call(struct wp__worker *w, struct wp__timer *t,
		       uint64_t now)
{
	struct wp_handle *h = t->h;
	int rc;

	/* Late by more than a period: coalesce the missed fires into one. */
	w->missed = 0;
	if (now - t->due >= t->interval) {
		w->missed = (now - t->due) / t->interval;
		t->due += w->missed * t->interval;
	}
	t->due = due_after(t->due, t->interval);

	/*
	 * Marks the handle as running, for an unregister from inside the
	 * callback; no barrier is needed, since a handle with a timer exits
	 * only through this worker (see timer_hook).
	 */
	atomic_store_explicit(&w->current, h, memory_order_relaxed);
	w->firing = t;
	w->firing_h = h;
	rc = t->fn(t->ctx ? t->ctx : w->pool->ctx, t->arg);
	w->firing_h = NULL;
	if (rc && wp__handle_exit(h, rc))
		wp__handle_run_exit(h);

	/*
	 * A drop while firing (the callback replaced or removed the timer,
	 * or its handle exited) clears w->firing and leaves the freeing to
	 * here. A non-zero return whose exit another thread won leaves the
	 * timer out of the wheel until that exit drops it.
	 */
	if (w->firing != t)
		timer_free(w->pool, t);
	else if (!rc)
		wheel_insert(&w->wheel, t);
	w->firing = NULL;
}

static void timer_fire(struct wp__worker *w, struct wp__timer *t,
		       uint64_t now)
{
	if (t->ctx && wp_ctx_done(t->ctx)) {
		timer_unhook(w, t);
		timer_free(w->pool, t);
		return;
	}
	timer_call(w, t, now);
}

static void update_next_due(struct wp__worker *w)
{
	uint64_t tick = wheel_next(&w->wheel);

	w->next_due = tick == UINT64_MAX ? 0 : tick << TICK_SHIFT;
}

static uint64_t coarse_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The coarse clock's resolution, read once. */
static uint64_t coarse_res_ns(void)
{
	static _Atomic uint64_t res;
	uint64_t r = atomic_load_explicit(&res, memory_order_relaxed);
	struct timespec ts;

	if (r)
		return r;
	if (clock_getres(CLOCK_MONOTONIC_COARSE, &ts) || (!ts.tv_sec &&
						       !ts.tv_nsec))
		ts = (struct timespec){ 0, 10000000 };
	r = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	/* Relaxed: every thread computes the same value. */
	atomic_store_explicit(&res, r, memory_order_relaxed);
	return r;
}

/*
 * The clock for the fires after a callback. A callback may run long, and
 * the fires after it must count their missed periods from a true clock;
 * the coarse clock (a few nanoseconds to read, a few milliseconds of
 * resolution) tells whether it moved, so the precise one is read only
 * then. *fresh says whether the time returned was read just now.
 */
static uint64_t clock_after_callback(uint64_t now, uint64_t *coarse,
				     bool *fresh)
{
	uint64_t c = coarse_now_ns();

	*fresh = c != *coarse;
	if (!*fresh)
		return now;
	*coarse = c;
	return wp__now_ns();
}

/*
 * The time to fire t at. A time kept because the coarse clock stood
 * still may be behind by up to its resolution; when that could hide a
 * whole missed period of t, the precise clock decides.
 */
static uint64_t clock_for(const struct wp__timer *t, uint64_t now,
			  bool *fresh)
{
	if (*fresh || now - t->due + coarse_res_ns() < t->interval)
		return now;
	*fresh = true;
	return wp__now_ns();
}

unsigned wp__timers_run(struct wp__worker *w)
{
	struct wp__wheel *wh = &w->wheel;
	uint64_t now = wp__now_ns(), coarse = coarse_now_ns();
	uint64_t last = now >> TICK_SHIFT;
	struct wp__timer *t;
	bool fresh = true;
	uint64_t tick;
	unsigned n = 0;

	while ((tick = wheel_next(wh)) <= last) {
		wh->tick = tick;
		wheel_cascade(wh, tick);
		slot_take(wh, tick & (L0_SIZE - 1));
		for (; (t = pending_pop(wh)); n++) {
			now = clock_for(t, now, &fresh);
			timer_fire(w, t, now);
			now = clock_after_callback(now, &coarse, &fresh);
		}
	}
	/* Events take current with a barrier again (wp__handle_run). */
	if (n)
		atomic_store_explicit(&w->current, NULL, memory_order_release);
	if (wh->tick < last)
		wh->tick = last;
	update_next_due(w);
	return n;
}

/* ------------------------------------------------------------------ */
/* Setting                                                             */
/* ------------------------------------------------------------------ */

/* Removes h's installed timer; one that is firing is freed by its caller. */
void wp__timers_drop(struct wp__worker *w, struct wp_handle *h)
{
	struct wp__timer *t = h->timer;

	if (!t)
		return;
	timer_unhook(w, t);
	if (t == w->firing) {
		w->firing = NULL;
		return;
	}
	wheel_remove(&w->wheel, t);
	timer_free(w->pool, t);
	/* An empty wheel is not run, so nothing else would clear it. */
	if (!w->wheel.count)
		w->next_due = 0;
}

/* Forgets every timer of h, installed or pending: h is being released. */
void wp__timers_discard(struct wp__worker *w, struct wp_handle *h)
{
	struct wp__timer *t = atomic_exchange(&h->timer_next, NULL);

	if (t)
		timer_free(w->pool, t);
	wp__timers_drop(w, h);
}

static void timer_install(struct wp__worker *w, struct wp_handle *h,
			  struct wp__timer *t)
{
	uint64_t now = wp__now_ns();

	wp__timers_drop(w, h);
	if (!t->interval) {
		timer_free(w->pool, t);
		return;
	}

	/* Hooked before the state is read: see timer_hook. */
	timer_hook(w, h, t);
	if (wp__handle_has_exited(h)) {
		timer_unhook(w, t);
		timer_free(w->pool, t);
		return;
	}

	/* An empty wheel may have stood still: bring it to now. */
	if (!w->wheel.count)
		w->wheel.tick = now >> TICK_SHIFT;
	t->due = due_after(now, t->interval);
	wheel_insert(&w->wheel, t);
	update_next_due(w);
}

/* Installs the timer another thread left for the worker. */
void wp__timers_apply(struct wp__worker *w, struct wp_handle *h)
{
	struct wp__timer *t = atomic_exchange(&h->timer_next, NULL);

	if (t)
		timer_install(w, h, t);
}

/* Frees every timer a stopped worker still holds. */
void wp__timers_clear(struct wp__worker *w)
{
	struct wp__timer *t;
	unsigned i;

	for (i = 0; i < NSLOTS; i++) {
		slot_take(&w->wheel, i);
		while ((t = pending_pop(&w->wheel))) {
			timer_unhook(w, t);
			timer_free(w->pool, t);
		}
	}
	w->next_due = 0;
}

/*
 * The change has taken effect: the worker installed it, or the handle's
 * exit finished, after which none of its callbacks runs.
 */
static bool timer_applied(void *arg)
{
	struct wp_handle *h = arg;

	return !atomic_load(&h->timer_next) || wp__handle_finished(h);
}

/*
 * Whether the caller waits for the worker to apply a change: not before
 * the pool starts, not where the worker cannot be waited for, and not
 * from a worker of any pool, nor from a callback run in a worker's name
 * by a stop. That worker could be waiting for this one, or be this very
 * thread, busy in the callback that stopped another pool.
 */
static bool set_waits(const struct wp_handle *h)
{
	return atomic_load(&h->w->pool->state) != WP__POOL_NEW &&
	       wp__can_wait_for(h->w) && !wp__self;
}

/* Hands t to h's worker; h is entered, so it stays h meanwhile. */
static int set_timer(struct wp_handle *h, struct wp__timer *t)
{
	struct wp__worker *w = h->w;
	struct wp__timer *old;

	/* The worker owns the wheel, so it applies the change itself. */
	if (wp__self == w) {
		timer_install(w, h, t);
		return 0;
	}

	old = atomic_exchange(&h->timer_next, t);
	if (old)
		timer_free(w->pool, old);
	if (!wp__handle_request(h, WP__CTL_TIMER)) {
		/* Stopped: no worker will take it. */
		t = atomic_exchange(&h->timer_next, NULL);
		if (t)
			timer_free(w->pool, t);
		return -ECANCELED;
	}
	if (set_waits(h))
		wp__worker_wait(w, NULL, timer_applied, h);
	return 0;
}

int wp_handle_set_timer(wp_handle *h, wp_ctx *ctx, uint64_t interval_ns,
			wp_timer_fn fn, void *arg)
{
	struct wp__timer *t;
	int rc;

	if ((interval_ns && !fn) || (ctx && !wp__ctx_valid(ctx)))
		return -EINVAL;

	/*
	 * Entered before the state is read: a free that comes later waits
	 * for this call to leave before the handle can be registered anew.
	 */
	if (!wp__handle_enter(h))
		return -EINVAL;
	if (wp__handle_has_exited(h) || (atomic_load(&h->state) & WP__FREED)) {
		rc = -ECANCELED;
		goto out;
	}
	t = timer_alloc(h);
	if (!t) {
		rc = -ENOMEM;
		goto out;
	}
	t->interval = interval_ns;
	t->fn = fn;
	t->arg = arg;
	t->ctx = ctx;
	if (ctx)
		wp__ctx_ref(ctx, 1);
	rc = set_timer(h, t);
out:
	wp__handle_leave(h);
	return rc;
}

uint64_t wp_handle_timer_missed(const wp_handle *h)
{
	struct wp__worker *w = wp__self;

	/*
	 * Only the handle whose timer callback runs gets an answer, so h
	 * need not be read: comparing the pointer is enough. The handle is
	 * kept apart from the timer, which the callback may have replaced
	 * or removed without changing what this call coalesced.
	 */
	if (!h || !w || w->firing_h != h)
		return 0;
	return w->missed;
}
