/* SPDX-License-Identifier: MIT */
/*
 * The stress run shared by the stress and signal tests.
 *
 * Producer threads add numbered events to random handles of one pool while
 * churner threads unregister, gracefully unregister and free those handles
 * and register new ones in their place; now and then a producer adds an
 * event whose handler fails. Callbacks check what they may see as they
 * run, and once the pool is destroyed every event is accounted for: it ran
 * exactly once, after every earlier event of its producer to that handle,
 * or it was dropped because its handle exited first. Nothing of a handle
 * runs after its exit callback, and that callback runs exactly once.
 *
 * The sizes come from the caller, usually scaled by environment variables
 * (see stress_env()), so that one test binary serves both the quick run of
 * `make check` and the long one of `make stress`.
 */
#ifndef WP_TEST_STRESS_H
#define WP_TEST_STRESS_H

#include <sched.h>
#include <stdarg.h>

#include "harness.h"

#define STRESS_MAX_PRODUCERS 8
#define STRESS_MAX_CHURNERS 4
#define STRESS_BATCH 16

/* The exit code of a handle whose handler failed on purpose. */
#define STRESS_FAIL_CODE 4242

/* A deadline short enough that adds on a full queue meet it. */
#define STRESS_DEADLINE_NS 200000u
#define STRESS_GRACEFUL_DEADLINE_NS 1000000u

/*
 * An event is a number: the producer in bits 0-2, a failure request in
 * bit 3 and the producer's sequence number for the handle above.
 */
#define STRESS_EV_FAIL 8u
#define STRESS_EV_SHIFT 4

/* What may have ended a handle, as bits of stress_rec.may_exit. */
enum {
	STRESS_BY_UNREGISTER = 1 << 0,
	STRESS_BY_GRACEFUL = 1 << 1,
	STRESS_BY_FREE = 1 << 2,
	STRESS_BY_HANDLER = 1 << 3,
	STRESS_BY_STOP = 1 << 4,
};

struct stress_config {
	int backend;		/* the loop index: 0 io_uring, 1 epoll */
	long events;		/* events to have accepted, in all */
	unsigned handles;	/* handles alive at any time */
	unsigned producers;
	unsigned churners;
	unsigned workers;
	unsigned capacity;	/* queue capacity of each worker */
	long churn_every;	/* one exit per this many accepted events */
	long fail_every;	/* about one failing event per this many adds */
	uint64_t seed;
};

/* What a run did, summed once the pool is gone. */
struct stress_counts {
	long accepted;		/* events the library took */
	long ran;		/* events whose handler ran */
	long dropped;		/* accepted, not run: the handle exited */
	long calls;		/* handler calls, counted as they run */
	long refused;		/* adds refused by an ending handle */
	long full;		/* try-adds that found the queue full */
	long timed_out;		/* adds whose deadline passed first */
	long handles;		/* handles registered over the run */
	long unregistered, graceful, graceful_timed_out, freed;
	long exits, exits_graceful, exits_cancelled, exits_failed;
	long exits_shutdown;
	long violations;
	char first[256];	/* the first violation, in words */
};

struct stress_run;

/*
 * One handle's life. accepted[p] is written by producer p only, ran[] and
 * failed_with by the handle's callbacks only; everything else is atomic.
 */
struct stress_rec {
	struct stress_run *run;
	struct stress_rec *next;	/* every record, for the final count */
	wp_handle *h;
	long accepted[STRESS_MAX_PRODUCERS];
	long ran[STRESS_MAX_PRODUCERS];
	int failed_with;
	atomic_int inside;
	atomic_int may_exit;
	atomic_int exits;
	atomic_int code;
};

/*
 * A place for a handle. A producer counts itself in users before it reads
 * rec and out after its call returns; a churner takes rec away, waits for
 * users to drain, and only then frees the handle, so no call can start on
 * a freed handle.
 */
struct stress_slot {
	_Atomic(struct stress_rec *) rec;
	atomic_int users;
};

struct stress_producer {
	struct stress_run *run;
	unsigned id;
	uint64_t rng;
	wp_ctx *ctx;		/* a live context that some events carry */
	atomic_long accepted;
	long refused, full, timed_out;
	pthread_t thread;
};

struct stress_churner {
	struct stress_run *run;
	unsigned id;
	uint64_t rng;
	long unregistered, graceful, graceful_timed_out, freed;
	pthread_t thread;
};

struct stress_run {
	struct stress_config cfg;
	wp_pool *pool;
	struct stress_slot *slots;
	struct stress_producer producers[STRESS_MAX_PRODUCERS];
	struct stress_churner churners[STRESS_MAX_CHURNERS];
	atomic_bool stop;
	atomic_long steps;	/* exits the churners have made */
	atomic_long calls;

	pthread_mutex_t lock;	/* guards recs and nrecs */
	struct stress_rec *recs;
	long nrecs;

	atomic_long violations;
	char first[256];
};

/* A positive number from the environment, or def. */
static inline long stress_env(const char *name, long def)
{
	const char *s = getenv(name);
	char *end;
	long v;

	if (!s || !*s)
		return def;
	v = strtol(s, &end, 10);
	return *end || v <= 0 ? def : v;
}

static inline uint64_t stress_rand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*state = x;
	return x;
}

/* A well-mixed, never zero, starting state for stress_rand(). */
static inline uint64_t stress_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x ? x : 1;
}

static inline unsigned stress_below(uint64_t *state, unsigned n)
{
	return (unsigned)(stress_rand(state) % n);
}

/*
 * Records a broken guarantee. Only the first is described: the others are
 * counted. Safe from any thread, the workers included.
 */
__attribute__((format(printf, 2, 3)))
static inline void stress_violation(struct stress_run *run,
				    const char *fmt, ...)
{
	va_list ap;

	if (atomic_fetch_add(&run->violations, 1) != 0)
		return;
	va_start(ap, fmt);
	vsnprintf(run->first, sizeof(run->first), fmt, ap);
	va_end(ap);
}

/* ------------------------------------------------------------------ */
/* Callbacks                                                           */
/* ------------------------------------------------------------------ */

static inline int stress_event(wp_ctx *ctx, void *event, void *arg)
{
	struct stress_rec *r = arg;
	uintptr_t v = (uintptr_t)event;
	unsigned p = (unsigned)(v & 7);
	long seq = (long)(v >> STRESS_EV_SHIFT);

	(void)ctx;
	atomic_fetch_add_explicit(&r->run->calls, 1, memory_order_relaxed);
	if (atomic_exchange(&r->inside, 1))
		stress_violation(r->run, "two callbacks of a handle overlap");
	if (atomic_load(&r->exits))
		stress_violation(r->run, "an event ran after its handle's "
				 "exit callback");
	if (seq != r->ran[p] + 1)
		stress_violation(r->run, "producer %u: event %ld ran right "
				 "after event %ld", p, seq, r->ran[p]);
	r->ran[p] = seq;
	atomic_store(&r->inside, 0);

	if (!(v & STRESS_EV_FAIL))
		return 0;
	r->failed_with = STRESS_FAIL_CODE;
	return STRESS_FAIL_CODE;
}

static inline void stress_exit(int err, void *arg)
{
	struct stress_rec *r = arg;

	if (atomic_load(&r->inside))
		stress_violation(r->run, "an exit callback ran during an "
				 "event of its handle");
	atomic_store(&r->code, err);
	if (atomic_fetch_add(&r->exits, 1) != 0)
		stress_violation(r->run, "a handle's exit callback ran twice");
}

/* ------------------------------------------------------------------ */
/* Producers                                                           */
/* ------------------------------------------------------------------ */

static inline void *stress_ev(unsigned p, long seq, bool fail)
{
	return (void *)(((uintptr_t)seq << STRESS_EV_SHIFT) |
			(fail ? STRESS_EV_FAIL : 0) | p);
}

/* An add with a fresh deadline; meeting it early is a violation. */
static inline int stress_add_by(struct stress_producer *p,
				struct stress_rec *r, void *ev)
{
	uint64_t start = wp_test_now_ns();
	wp_ctx *ctx = NULL;
	int rc;

	rc = wp_ctx_with_timeout(&ctx, NULL, STRESS_DEADLINE_NS);
	if (rc) {
		stress_violation(p->run, "wp_ctx_with_timeout: %d", rc);
		return -ECANCELED;
	}
	rc = wp_handle_add_event(r->h, ctx, ev);
	if (rc == -ETIMEDOUT &&
	    wp_test_now_ns() - start < STRESS_DEADLINE_NS)
		stress_violation(p->run, "an add timed out after %llu ns of "
				 "a %u ns deadline", (unsigned long long)
				 (wp_test_now_ns() - start),
				 STRESS_DEADLINE_NS);
	wp_ctx_release(ctx);
	return rc;
}

/* The result of a single add as a count: 1 when accepted. */
static inline int stress_one(int rc)
{
	return rc == 0 ? 1 : rc;
}

/*
 * Adds one event or a batch to r in one of the library's ways, and
 * returns how many were accepted, or a negative errno.
 */
static inline int stress_add(struct stress_producer *p, struct stress_rec *r,
			     void **ev, unsigned *n)
{
	unsigned how = stress_below(&p->rng, 100);

	*n = 1;
	if (how < 55)
		return stress_one(wp_handle_add_event(r->h, NULL, ev[0]));
	if (how < 65)
		return stress_one(wp_handle_try_add_event(r->h, ev[0]));
	if (how < 80) {
		*n = 1 + stress_below(&p->rng, STRESS_BATCH);
		return wp_handle_add_events(r->h, NULL, ev, *n);
	}
	if (how < 98)
		return stress_one(wp_handle_add_event(r->h, p->ctx, ev[0]));
	return stress_one(stress_add_by(p, r, ev[0]));
}

static inline void stress_produce_one(struct stress_producer *p,
				      struct stress_rec *r)
{
	struct stress_run *run = p->run;
	long next = r->accepted[p->id] + 1;
	void *ev[STRESS_BATCH];
	bool fail;
	unsigned k, n;
	int rc;

	fail = run->cfg.fail_every &&
	       stress_rand(&p->rng) % (uint64_t)run->cfg.fail_every == 0;
	if (fail)
		atomic_fetch_or(&r->may_exit, STRESS_BY_HANDLER);
	for (k = 0; k < STRESS_BATCH; k++)
		ev[k] = stress_ev(p->id, next + k, fail && k == 0);

	rc = stress_add(p, r, ev, &n);
	if (rc > 0 && (unsigned)rc <= n) {
		r->accepted[p->id] += rc;
		atomic_fetch_add_explicit(&p->accepted, rc,
					  memory_order_relaxed);
	} else if (rc == -ECANCELED) {
		/* Only a handle that is ending may refuse events. */
		p->refused++;
		if (!atomic_load(&r->may_exit))
			stress_violation(run, "an add to a live handle "
					 "returned -ECANCELED");
	} else if (rc == -EAGAIN) {
		p->full++;
	} else if (rc == -ETIMEDOUT) {
		p->timed_out++;
	} else {
		stress_violation(run, "an add returned %d of %u", rc, n);
	}
}

/* Waits a moment for the other threads, whatever signals arrive. */
static inline void stress_pause(void)
{
	struct timespec ts = { 0, 20000 };

	nanosleep(&ts, NULL);
}

/*
 * True while producer p is ahead of the churn: producers and churners
 * keep pace, so that one exit comes per churn_every events however fast
 * either side runs. A few steps of slack keep both sides busy.
 */
static inline bool stress_ahead(struct stress_producer *p)
{
	const struct stress_config *cfg = &p->run->cfg;
	long steps = atomic_load(&p->run->steps) + 4 * cfg->churners;

	return atomic_load_explicit(&p->accepted, memory_order_relaxed) *
	       (long)cfg->producers > steps * cfg->churn_every;
}

static inline void *stress_producer_main(void *arg)
{
	struct stress_producer *p = arg;
	struct stress_run *run = p->run;
	long quota = run->cfg.events / run->cfg.producers;
	struct stress_slot *s;
	struct stress_rec *r;

	while (atomic_load_explicit(&p->accepted, memory_order_relaxed) <
	       quota && !atomic_load(&run->stop)) {
		if (stress_ahead(p)) {
			stress_pause();
			continue;
		}
		s = &run->slots[stress_below(&p->rng, run->cfg.handles)];
		atomic_fetch_add(&s->users, 1);
		r = atomic_load(&s->rec);
		if (r)
			stress_produce_one(p, r);
		atomic_fetch_sub(&s->users, 1);
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Churners                                                            */
/* ------------------------------------------------------------------ */

/*
 * Registers a handle into an empty slot. A failure ends the run, since
 * the producers could otherwise wait forever for handles to add to.
 */
static inline void stress_register(struct stress_run *run,
				   struct stress_slot *s)
{
	struct stress_rec *r = calloc(1, sizeof(*r));
	int rc = -ENOMEM;

	if (r) {
		r->run = run;
		rc = wp_pool_register(run->pool, stress_event, r, &r->h);
	}
	if (rc == 0)
		rc = wp_handle_on_exit(r->h, stress_exit, r);
	if (rc) {
		stress_violation(run, "registering a handle: %d", rc);
		atomic_store(&run->stop, true);
		free(r);
		return;
	}

	pthread_mutex_lock(&run->lock);
	r->next = run->recs;
	run->recs = r;
	run->nrecs++;
	pthread_mutex_unlock(&run->lock);
	atomic_store(&s->rec, r);
}

/* Checks that the exit callback has run by the time a call returned. */
static inline void stress_exited(struct stress_run *run,
				 struct stress_rec *r, const char *call)
{
	if (atomic_load(&r->exits) != 1)
		stress_violation(run, "%s returned with %d exit callbacks run",
				 call, atomic_load(&r->exits));
}

/* Frees the slot's handle, if any, and registers a new one in its place. */
static inline void stress_renew(struct stress_churner *c,
				struct stress_slot *s)
{
	struct stress_rec *r = atomic_exchange(&s->rec, NULL);

	if (r) {
		while (atomic_load(&s->users))
			sched_yield();
		atomic_fetch_or(&r->may_exit, STRESS_BY_FREE);
		wp_handle_free(r->h);
		stress_exited(c->run, r, "wp_handle_free");
		c->freed++;
	}
	stress_register(c->run, s);
}

static inline void stress_graceful(struct stress_churner *c,
				   struct stress_rec *r, bool deadline)
{
	struct stress_run *run = c->run;
	uint64_t start = wp_test_now_ns();
	wp_ctx *ctx = NULL;
	int rc;

	atomic_fetch_or(&r->may_exit, STRESS_BY_GRACEFUL);
	if (deadline) {
		/* Meeting its deadline, a graceful unregister cancels. */
		atomic_fetch_or(&r->may_exit, STRESS_BY_UNREGISTER);
		if (wp_ctx_with_timeout(&ctx, NULL,
					STRESS_GRACEFUL_DEADLINE_NS) != 0)
			stress_violation(run, "wp_ctx_with_timeout failed");
	}
	rc = wp_handle_unregister_graceful(r->h, ctx);
	if (rc == 0 && wp_handle_error(r->h) != 0)
		stress_violation(run, "a graceful unregister returned 0 for "
				 "exit code %d", wp_handle_error(r->h));
	else if (rc == -ECANCELED && !wp_handle_error(r->h))
		stress_violation(run, "a graceful unregister returned "
				 "-ECANCELED for exit code 0");
	else if (rc == -ETIMEDOUT && (!deadline || wp_test_now_ns() - start <
				      STRESS_GRACEFUL_DEADLINE_NS))
		stress_violation(run, "a graceful unregister timed out early");
	else if (rc && rc != -ECANCELED && rc != -ETIMEDOUT)
		stress_violation(run, "a graceful unregister returned %d", rc);
	stress_exited(run, r, "wp_handle_unregister_graceful");
	if (rc == -ETIMEDOUT)
		c->graceful_timed_out++;
	c->graceful++;
	wp_ctx_release(ctx);
}

/* One exit, of a kind picked at random, for a live handle. */
static inline void stress_end_one(struct stress_churner *c,
				  struct stress_slot *s, struct stress_rec *r)
{
	unsigned how = stress_below(&c->rng, 100);

	if (how < 30) {
		atomic_fetch_or(&r->may_exit, STRESS_BY_UNREGISTER);
		wp_handle_unregister(r->h);
		if (!wp_handle_exited(r->h))
			stress_violation(c->run, "wp_handle_unregister "
					 "returned before the exit");
		stress_exited(c->run, r, "wp_handle_unregister");
		c->unregistered++;
	} else if (how < 55) {
		stress_graceful(c, r, false);
	} else if (how < 65) {
		stress_graceful(c, r, true);
	} else {
		stress_renew(c, s);
	}
}

static inline long stress_accepted(struct stress_run *run)
{
	long n = 0;
	unsigned k;

	for (k = 0; k < run->cfg.producers; k++)
		n += atomic_load_explicit(&run->producers[k].accepted,
					  memory_order_relaxed);
	return n;
}

/*
 * Each churner owns the slots whose index it is congruent to, so two
 * churners never end the same handle. Exits are paced by the events
 * accepted; handles that ended by themselves are replaced at any time.
 */
static inline void *stress_churner_main(void *arg)
{
	struct stress_churner *c = arg;
	struct stress_run *run = c->run;
	unsigned n = run->cfg.churners, mine;
	struct stress_slot *s;
	struct stress_rec *r;

	mine = (run->cfg.handles - c->id + n - 1) / n;
	while (!atomic_load(&run->stop) && mine) {
		s = &run->slots[c->id + n * stress_below(&c->rng, mine)];
		r = atomic_load(&s->rec);
		if (!r || atomic_load(&r->exits)) {
			stress_renew(c, s);
		} else if (atomic_load(&run->steps) * run->cfg.churn_every <
			   stress_accepted(run)) {
			stress_end_one(c, s, r);
			atomic_fetch_add(&run->steps, 1);
			/*
			 * Half the exited handles are replaced at once; the
			 * rest stay for a while, so adds meet them too.
			 */
			if (atomic_load(&s->rec) == r &&
			    stress_below(&c->rng, 2))
				stress_renew(c, s);
		} else {
			stress_pause();
		}
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* The run and its count                                               */
/* ------------------------------------------------------------------ */

/* Checks one finished handle and adds it to the counts. */
static inline void stress_count_rec(struct stress_run *run,
				    struct stress_rec *r,
				    struct stress_counts *n)
{
	int may = atomic_load(&r->may_exit), code = atomic_load(&r->code);
	long dropped = 0;
	unsigned p;

	for (p = 0; p < run->cfg.producers; p++) {
		if (r->ran[p] > r->accepted[p])
			stress_violation(run, "producer %u: %ld events ran of "
					 "%ld accepted", p, r->ran[p],
					 r->accepted[p]);
		n->accepted += r->accepted[p];
		n->ran += r->ran[p];
		dropped += r->accepted[p] - r->ran[p];
	}
	n->dropped += dropped;

	if (atomic_load(&r->exits) != 1)
		stress_violation(run, "a handle exited %d times",
				 atomic_load(&r->exits));
	n->exits += atomic_load(&r->exits);

	if (code == 0 && (may & STRESS_BY_GRACEFUL)) {
		n->exits_graceful++;
		if (dropped)
			stress_violation(run, "a graceful exit dropped %ld "
					 "events", dropped);
	} else if (code == -ECANCELED &&
		   (may & (STRESS_BY_UNREGISTER | STRESS_BY_FREE))) {
		n->exits_cancelled++;
	} else if (code == STRESS_FAIL_CODE && r->failed_with == code) {
		n->exits_failed++;
	} else if (code == -ESHUTDOWN && (may & STRESS_BY_STOP)) {
		n->exits_shutdown++;
	} else {
		stress_violation(run, "a handle exited with %d after "
				 "exits 0x%x were asked", code, may);
	}
}

static inline void stress_count(struct stress_run *run,
				struct stress_counts *n)
{
	struct stress_rec *r, *next;
	long producers = 0;
	unsigned k;

	memset(n, 0, sizeof(*n));
	for (r = run->recs; r; r = next) {
		next = r->next;
		stress_count_rec(run, r, n);
		free(r);
	}
	n->handles = run->nrecs;
	n->calls = atomic_load(&run->calls);

	for (k = 0; k < run->cfg.producers; k++) {
		producers += atomic_load(&run->producers[k].accepted);
		n->refused += run->producers[k].refused;
		n->full += run->producers[k].full;
		n->timed_out += run->producers[k].timed_out;
	}
	if (producers != n->accepted)
		stress_violation(run, "producers counted %ld accepted events, "
				 "handles %ld", producers, n->accepted);
	for (k = 0; k < run->cfg.churners; k++) {
		n->unregistered += run->churners[k].unregistered;
		n->graceful += run->churners[k].graceful;
		n->graceful_timed_out += run->churners[k].graceful_timed_out;
		n->freed += run->churners[k].freed;
	}
	n->violations = atomic_load(&run->violations);
	memcpy(n->first, run->first, sizeof(n->first));
}

static inline void stress_start(struct stress_run *run)
{
	const struct stress_config *cfg = &run->cfg;
	unsigned k;

	run->slots = calloc(cfg->handles, sizeof(*run->slots));
	ck_assert_ptr_nonnull(run->slots);
	for (k = 0; k < cfg->handles; k++)
		stress_register(run, &run->slots[k]);

	for (k = 0; k < cfg->producers; k++) {
		struct stress_producer *p = &run->producers[k];

		p->run = run;
		p->id = k;
		p->rng = stress_mix(cfg->seed + k);
		ck_assert_int_eq(wp_ctx_create(&p->ctx, NULL), 0);
		wp_test_thread(&p->thread, stress_producer_main, p);
	}
	for (k = 0; k < cfg->churners; k++) {
		struct stress_churner *c = &run->churners[k];

		c->run = run;
		c->id = k;
		c->rng = stress_mix(cfg->seed + STRESS_MAX_PRODUCERS + k);
		wp_test_thread(&c->thread, stress_churner_main, c);
	}
}

/*
 * Runs the whole stress: every producer's share of cfg->events accepted,
 * then the pool destroyed with whatever is still queued, then the count.
 */
static inline void stress(const struct stress_config *cfg,
			  struct stress_counts *out)
{
	struct stress_run *run = calloc(1, sizeof(*run));
	unsigned k;

	ck_assert_ptr_nonnull(run);
	ck_assert_uint_le(cfg->producers, STRESS_MAX_PRODUCERS);
	ck_assert_uint_le(cfg->churners, STRESS_MAX_CHURNERS);
	ck_assert_uint_ge(cfg->churners, 1);
	run->cfg = *cfg;
	pthread_mutex_init(&run->lock, NULL);
	run->pool = wp_test_pool_opts(cfg->backend, cfg->workers,
				      cfg->capacity, true);

	stress_start(run);
	for (k = 0; k < cfg->producers; k++)
		wp_test_join(run->producers[k].thread);
	atomic_store(&run->stop, true);
	for (k = 0; k < cfg->churners; k++)
		wp_test_join(run->churners[k].thread);

	/* The handles still in their slots end with the pool. */
	for (k = 0; k < cfg->handles; k++) {
		struct stress_rec *r = atomic_load(&run->slots[k].rec);

		if (r)
			atomic_fetch_or(&r->may_exit, STRESS_BY_STOP);
	}
	wp_pool_destroy(run->pool);
	for (k = 0; k < cfg->producers; k++)
		wp_ctx_release(run->producers[k].ctx);

	stress_count(run, out);
	pthread_mutex_destroy(&run->lock);
	free(run->slots);
	free(run);
}

/* The seed of a run: WP_STRESS_SEED, or one that changes every run. */
static inline uint64_t stress_seed(void)
{
	long s = stress_env("WP_STRESS_SEED", 0);

	return s ? (uint64_t)s : wp_test_now_ns() ^ (uint64_t)getpid();
}

/* Prints what a run did, on one line. */
static inline void stress_print(const char *what, const char *backend,
				const struct stress_config *cfg,
				const struct stress_counts *n, double secs)
{
	printf("%s on %s: %ld accepted = %ld ran + %ld dropped; "
	       "%ld handles, %ld refused adds, %ld full, %ld timed out; "
	       "exits: %ld graceful, %ld cancelled, %ld failed, "
	       "%ld shutdown; seed %llu; %.1f s\n",
	       what, backend, n->accepted, n->ran, n->dropped, n->handles,
	       n->refused, n->full, n->timed_out, n->exits_graceful,
	       n->exits_cancelled, n->exits_failed, n->exits_shutdown,
	       (unsigned long long)cfg->seed, secs);
	fflush(stdout);
}

/* The checks every stress run ends with. */
static inline void stress_assert(const struct stress_config *cfg,
				 const struct stress_counts *n)
{
	ck_assert_msg(n->violations == 0, "%ld violations, first: %s "
		      "(seed %llu)", n->violations, n->first,
		      (unsigned long long)cfg->seed);
	ck_assert_int_ge(n->accepted, cfg->events / cfg->producers *
			 cfg->producers);
	ck_assert_int_eq(n->accepted, n->ran + n->dropped);
	ck_assert_int_eq(n->calls, n->ran);
	ck_assert_int_eq(n->exits, n->handles);
	ck_assert_int_eq(n->exits, n->exits_graceful + n->exits_cancelled +
			 n->exits_failed + n->exits_shutdown);
}

#endif
