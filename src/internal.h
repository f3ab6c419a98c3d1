/* SPDX-License-Identifier: MIT */
/*
 * Internal declarations shared by the library's source files. Nothing here
 * is exported: cross-file helpers are named wp__*.
 */
#ifndef WP_INTERNAL_H
#define WP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "workerpool.h"

#define WP__CACHELINE 64
#define WP__ALIGNED _Alignas(WP__CACHELINE)

#define WP__CTX_MAGIC 0x77706378u	/* "wpcx" */
#define WP__POOL_MAGIC 0x7770706cu	/* "wppl" */
#define WP__HANDLE_MAGIC 0x7770686eu	/* "wphn" */

struct wp__worker;

/* Tells the CPU that this is a spin-wait loop. */
static inline void wp__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

/* ------------------------------------------------------------------ */
/* Waiting: futexes and contexts                                       */
/* ------------------------------------------------------------------ */

/* A word registered with a context: cancelling it bumps and wakes it. */
struct wp__waiter {
	_Atomic uint32_t *word;
	struct wp__waiter *next;
	struct wp__waiter *prev;
};

uint64_t wp__now_ns(void);

/*
 * Sleeps while *word == val, until deadline_ns (CLOCK_MONOTONIC, 0 for
 * none). Returns early on wake-ups, signals and spurious wake-ups: callers
 * re-check their condition in a loop.
 */
void wp__futex_wait(_Atomic uint32_t *word, uint32_t val,
		    uint64_t deadline_ns);
void wp__futex_wake(_Atomic uint32_t *word);

bool wp__ctx_valid(const wp_ctx *ctx);
void wp__ctx_ref(wp_ctx *ctx, unsigned n);
uint64_t wp__ctx_deadline(const wp_ctx *ctx);
void wp__ctx_watch(wp_ctx *ctx, struct wp__waiter *wt,
		   _Atomic uint32_t *word);
void wp__ctx_unwatch(wp_ctx *ctx, struct wp__waiter *wt);

#include "pause.h"
#include "queue.h"

/* ------------------------------------------------------------------ */
/* Timers                                                              */
/* ------------------------------------------------------------------ */

/*
 * A timer is one cache line, carved from aligned chunks (timer.c): firing
 * it touches that line and the callback's argument, nothing else of it.
 */
struct wp__timer {
	WP__ALIGNED struct wp__timer *next;	/* also the free list's link */
	struct wp__timer **pprev;	/* NULL while not in the wheel */
	uint64_t due;			/* CLOCK_MONOTONIC ns, next fire */
	uint64_t interval;
	wp_timer_fn fn;
	void *arg;
	wp_ctx *ctx;
	struct wp_handle *h;
};

_Static_assert(sizeof(struct wp__timer) == WP__CACHELINE,
	       "a timer is one cache line");

#define WP__WHEEL_L0_BITS 10
#define WP__WHEEL_LN_BITS 6
#define WP__WHEEL_UPPER 5

/*
 * A hierarchical timing wheel: level 0 has one slot per tick, each upper
 * level 64 slots that each span a whole lap of the level below. Bitmaps
 * of the non-empty slots find the next due tick without a scan.
 */
struct wp__wheel {
	uint64_t tick;			/* every tick up to here is done */
	size_t count;
	struct wp__timer *pending;	/* a slot being fired or cascaded */
	/* Installed timers per floor(log2(interval)), and which are non-0. */
	uint32_t classes[64];
	uint64_t class_bits;
	uint64_t l0_bits[(1 << WP__WHEEL_L0_BITS) / 64];
	uint64_t ln_bits[WP__WHEEL_UPPER];
	/* Level 0's slots, then each upper level's in turn. */
	struct wp__timer *slots[(1 << WP__WHEEL_L0_BITS) +
				WP__WHEEL_UPPER * (1 << WP__WHEEL_LN_BITS)];
};

/* ------------------------------------------------------------------ */
/* Backends                                                            */
/* ------------------------------------------------------------------ */

/*
 * A backend puts a worker to sleep until it is woken or a deadline
 * passes. Each backend keeps its private state behind worker->be.
 */
struct wp__backend {
	enum wp_backend kind;
	/* Sets up the worker's state on the creating thread. */
	int (*init)(struct wp__worker *w, const char **what);
	/* Runs first on the worker's own thread. */
	int (*thread_init)(struct wp__worker *w);
	void (*fini)(struct wp__worker *w);
	/* Sleeps until woken or until deadline_ns (0: no deadline). */
	void (*wait)(struct wp__worker *w, uint64_t deadline_ns);
	/*
	 * Wakes worker to; self is the calling worker of the same pool, or
	 * NULL from any other thread.
	 */
	void (*wake)(struct wp__worker *self, struct wp__worker *to);
};

extern const struct wp__backend wp__backend_uring;
extern const struct wp__backend wp__backend_epoll;

/* ------------------------------------------------------------------ */
/* Workers, handles, pools                                             */
/* ------------------------------------------------------------------ */

/* Control requests a handle carries to its worker (wp_handle.ctl). */
enum {
	WP__CTL_EXIT = 1 << 0,	/* run the exit callback */
	WP__CTL_CLOSE = 1 << 1,	/* graceful unregister: exit once drained */
	WP__CTL_FREE = 1 << 2,	/* release the handle once unreferenced */
	WP__CTL_TIMER = 1 << 3,	/* install the handle's pending timer */
};

struct wp__worker {
	struct wp__queue q;

	/* The handle whose callback runs now; written by the worker. */
	WP__ALIGNED _Atomic(struct wp_handle *) current;

	/* Read by every thread that queues work here. */
	WP__ALIGNED _Atomic int sleeping;
	_Atomic bool stop;
	/* Handles with control requests, pushed by any thread. */
	_Atomic(struct wp_handle *) ctl;
	/* Threads blocked on this worker; they sleep on progress. */
	_Atomic uint32_t nwaiters;
	_Atomic uint32_t nfull;		/* of those, waiting for room */
	_Atomic uint32_t progress;

	/* Owned by the worker thread. */
	WP__ALIGNED struct wp_handle *closing;
	struct wp_handle *releasing;
	uint64_t spin_ns;
	uint64_t idle_avg;		/* recent idle gaps, for spinning */
	unsigned idle_probe;
	unsigned run_len;		/* items run since the last idle */
	unsigned hold_probe;
	bool stream;			/* the queue is fed as a stream */
	bool held_back;			/* the last idle began with a hold */
	uint64_t next_due;		/* the wheel's next fire; 0 for none */
	struct wp__timer *firing;	/* the timer whose callback runs */
	/* Its handle, kept while the callback runs even if it drops t. */
	struct wp_handle *firing_h;
	uint64_t missed;		/* periods the firing one coalesced */
	struct wp__wheel wheel;

	struct wp_pool *pool;
	unsigned index;
	int doorbell;		/* eventfd other threads write to wake it */
	pthread_t thread;
	bool started;
	void *be;
};

/*
 * The handle state word: the phase in the low bits, WP__FREED once
 * wp_handle_free() was called, a generation that changes each time the
 * memory is registered anew, and the exit code in the upper 32 bits. Any
 * change to the word tells an add in flight to step back (see handle.c).
 */
#define WP__LIVE 0ull
#define WP__CLOSING 1ull
#define WP__EXITED 2ull
#define WP__PHASE 3ull
#define WP__FREED 4ull
#define WP__GEN_ONE 8ull
#define WP__GEN_MASK 0xfffffff8ull

/* wp_handle.flags */
#define WP__H_FINISHED 1u	/* no callback of the handle will run again */
#define WP__H_TIMER 2u		/* the worker has a timer of it installed */

/*
 * A handle: 112 bytes, none of them written by adds, so producers and the
 * worker only ever share it read-only on the event path.
 */
struct wp_handle {
	/* Read for every event, by the add and by the worker. */
	wp_event_fn fn;
	void *arg;
	struct wp__worker *w;
	_Atomic uint64_t state;

	_Atomic(wp_exit_fn) exit_fn;
	void *exit_arg;
	struct wp_handle *ctl_next;
	struct wp_handle *link;	/* worker lists and the pool's free list */
	/* Worker only: the queue position to drain (closing) or to pass
	 * (releasing); a handle being released no longer closes. */
	uint64_t at;
	struct wp__timer *timer;	/* worker only: the installed timer */
	/* A timer set from another thread, waiting for the worker. */
	_Atomic(struct wp__timer *) timer_next;

	_Atomic uint32_t users;		/* calls other than adds running */
	_Atomic uint32_t ctl;
	/* Pending control requests the worker has not finished. */
	_Atomic uint32_t wref;
	_Atomic uint32_t flags;		/* WP__H_* */
	_Atomic int efd;
	/* WP__HANDLE_MAGIC while registered; written under the pool lock. */
	_Atomic uint32_t magic;
};

_Static_assert(sizeof(struct wp_handle) == 112, "a handle is 112 bytes");
/* A queue slot keeps its flags in the low bits of a handle's address. */
_Static_assert(_Alignof(struct wp_handle) > WP__TAG_FLAGS,
	       "handles leave the queue's tag flags clear");

static inline bool wp__handle_has_exited(const struct wp_handle *h)
{
	return (atomic_load(&h->state) & WP__PHASE) == WP__EXITED;
}

static inline bool wp__handle_finished(const struct wp_handle *h)
{
	/* Acquire: pairs with the release that set the bit. */
	return atomic_load_explicit(&h->flags, memory_order_acquire) &
	       WP__H_FINISHED;
}

enum wp__pool_state {
	WP__POOL_NEW,
	WP__POOL_RUNNING,
	WP__POOL_STOPPING,
	WP__POOL_STOPPED,
};

struct wp__chunk;
struct wp__timer_chunk;

/*
 * A start creates every worker thread before any of them touches its ring
 * or its queue: should one creation fail, the others leave untouched, and
 * the start can be tried again.
 */
enum { WP__GATE_SHUT, WP__GATE_OPEN, WP__GATE_ABANDONED };

struct wp_pool {
	uint32_t magic;
	unsigned nworkers;
	struct wp__worker *workers;
	const struct wp__backend *backend;
	int reason;
	const char *reason_text;
	uint64_t spin_ns;
	int *cpus;
	size_t ncpus;
	wp_ctx *ctx;
	_Atomic unsigned next_worker;

	/* Guards state, the handle slabs and control pushes near stop. */
	pthread_mutex_t lock;
	_Atomic int state;
	/* WP__GATE_*: how the start under way ended; workers wait on it. */
	_Atomic uint32_t gate;
	struct wp__chunk *chunks;
	struct wp_handle *free_handles;

	/* Guards the timer slabs, which any thread allocates from. */
	pthread_mutex_t timer_lock;
	struct wp__timer_chunk *timer_chunks;
	struct wp__timer *free_timers;

	/* Serialises wp_pool_stop(). */
	pthread_mutex_t stop_lock;
};

/*
 * The worker the calling thread is, or NULL. Initial-exec: read on hot
 * paths, it must not cost a __tls_get_addr call in the shared library.
 */
extern _Thread_local struct wp__worker *wp__self
	__attribute__((tls_model("initial-exec")));

/* fault.c: injected failures for the tests (see there). */
bool wp__fault(void);
void wp__fault_arm(long n);
long wp__fault_injected(void);
void *wp__calloc(size_t n, size_t size);
void *wp__aligned_alloc(size_t align, size_t size);
int wp__eventfd(int flags);
int wp__timerfd(int flags);

/* pool.c */
void wp__worker_kick(struct wp__worker *w);
void wp__worker_ring(struct wp__worker *w);

/*
 * Whether the calling thread may block until w serves a request: not on w
 * itself, nor on the thread finishing a stopped pool's leftovers, which
 * serves them only once the callback it runs has returned.
 */
bool wp__can_wait_for(const struct wp__worker *w);

/*
 * Wakes w if it sleeps or is about to. The caller claimed its work (a
 * queue reservation or a control push) with a sequentially consistent
 * read-modify-write, and the worker stores sleeping before its last look
 * for work, the queue tail included: one of the two sees the other, so
 * a wake-up is never lost. Inline: every add makes this check.
 */
static inline void wp__worker_wake(struct wp__worker *w)
{
	if (atomic_load(&w->sleeping))
		wp__worker_ring(w);
}
int wp__worker_wait(struct wp__worker *w, wp_ctx *ctx,
		    bool (*ready)(void *), void *arg);
int wp__worker_wait_room(struct wp__worker *w, wp_ctx *ctx,
			 struct wp_handle *h, uint64_t st);
struct wp_handle *wp__handle_alloc(wp_pool *pool);
bool wp__handle_release(struct wp_handle *h);

/* timer.c */
void wp__timers_init(struct wp__worker *w);
unsigned wp__timers_run(struct wp__worker *w);
void wp__timers_apply(struct wp__worker *w, struct wp_handle *h);
void wp__timers_drop(struct wp__worker *w, struct wp_handle *h);
void wp__timers_discard(struct wp__worker *w, struct wp_handle *h);
void wp__timers_clear(struct wp__worker *w);
uint64_t wp__timers_slack(const struct wp__worker *w);
void wp__timers_fini(wp_pool *pool);

/* handle.c */
bool wp__handle_valid(const struct wp_handle *h);
/*
 * Counts a call on h in progress: h is not released until it leaves.
 * False, and not counted, when h is not (or no longer) a registered
 * handle.
 */
bool wp__handle_enter(struct wp_handle *h);
void wp__handle_leave(struct wp_handle *h);
bool wp__handle_request(struct wp_handle *h, uint32_t what);
void wp__handle_push(struct wp_handle *h, uint32_t what);
void wp__handle_run(struct wp__worker *w, const struct wp__item *it);
bool wp__handle_exit(struct wp_handle *h, int code);
void wp__handle_run_exit(struct wp_handle *h);
void wp__handle_ctl(struct wp__worker *w, struct wp_handle *h);
void wp__handle_lists(struct wp__worker *w, bool stopping);
/* Whether this thread runs an exit callback of a handle of pool. */
bool wp__handle_in_exit_of(const wp_pool *pool);

#endif
