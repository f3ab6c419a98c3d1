/* SPDX-License-Identifier: MIT */
/*
 * The benchmark scenarios on workerpool: pingpong, latency, throughput,
 * churn, memory and timers. A run prints one line, `name key=value ...`,
 * with the same keys as the reference programs of the same scenarios,
 * followed by the backend the pool ran on.
 *
 * A benchmark that loses events measures nothing, so every handler checks
 * what it receives, and the program exits 1 on an order violation, a lost
 * event or an acknowledgement that never came.
 *
 * Run: build/default/bench/bench -mode throughput -backend uring
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "workerpool.h"

/* Events carry integers and CLOCK_MONOTONIC times in the pointer. */
_Static_assert(sizeof(void *) >= sizeof(uint64_t), "needs 64-bit pointers");

#define NSEC_PER_SEC 1000000000ULL
#define NSEC_PER_MSEC 1000000ULL

/* A wait that sees no progress for this long has lost something. */
#define STALL_NS (10 * NSEC_PER_SEC)

/* How long pingpong polls for the acknowledgement before it sleeps. */
#define ACK_SPIN_NS 50000

struct opts {
	const char *mode;
	unsigned workers;
	long handles;		/* -1: the scenario's default */
	long producers;
	long events;		/* -1: the scenario's default */
	double seconds;
	enum wp_backend backend;
	const char *spin;	/* as given, or NULL for the library default */
	uint64_t spin_ns;
	long probe;		/* timers: time one fire in this many */
};

struct scenario {
	const char *name;
	void (*run)(wp_pool *pool, const struct opts *o);
	long events;		/* the default of -events */
	long handles;		/* the default of -handles */
};

static void __attribute__((noreturn, format(printf, 1, 2)))
fail(const char *fmt, ...)
{
	va_list ap;

	fputs("bench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);

	/* Workers may be inside handlers: leave without running atexit. */
	_exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec;
}

static struct timespec timespec_of(uint64_t ns)
{
	struct timespec ts = {
		.tv_sec = ns / NSEC_PER_SEC,
		.tv_nsec = ns % NSEC_PER_SEC,
	};

	return ts;
}

/* User plus system time of the whole process, workers included. */
static void sleep_ns(uint64_t ns)
{
	struct timespec ts = timespec_of(ns);

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static uint64_t cpu_ns(void)
{
	struct rusage ru;
	uint64_t us;

	getrusage(RUSAGE_SELF, &ru);
	us = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000ULL +
	     ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
	return us * 1000;
}

/*
 * Waits for s to be posted; false if that took longer than ns. The
 * deadline is on CLOCK_REALTIME, which sem_timedwait wants and thread
 * sanitizers understand; a clock step only moves this stall guard.
 */
static bool sem_wait_ns(sem_t *s, uint64_t ns)
{
	struct timespec at;

	clock_gettime(CLOCK_REALTIME, &at);
	at = timespec_of(at.tv_sec * NSEC_PER_SEC + at.tv_nsec + ns);
	while (sem_timedwait(s, &at))
		if (errno != EINTR)
			return false;
	return true;
}

static const char *backend_name(enum wp_backend b)
{
	switch (b) {
	case WP_BACKEND_URING:
		return "uring";
	case WP_BACKEND_EPOLL:
		return "epoll";
	default:
		return "auto";
	}
}

/* Prints a result line, then the keys that say how the pool ran. */
static void __attribute__((format(printf, 3, 4)))
report(wp_pool *pool, const struct opts *o, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);

	printf(" backend=%s", backend_name(wp_pool_backend(pool)));
	if (o->spin)
		printf(" spin=%s", o->spin);
	putchar('\n');
	fflush(stdout);
}

static wp_handle *handle_open(wp_pool *pool, wp_event_fn fn, void *arg)
{
	wp_handle *h;
	int err;

	err = wp_pool_register(pool, fn, arg, &h);
	if (err)
		fail("register: %s", wp_strerror(err));
	return h;
}

static void add_event(wp_handle *h, uint64_t event)
{
	int err;

	err = wp_handle_add_event(h, NULL, (void *)(uintptr_t)event);
	if (err)
		fail("add event: %s", wp_strerror(err));
}

static int on_nothing(wp_ctx *ctx, void *event, void *arg)
{
	(void)ctx;
	(void)event;
	(void)arg;
	return 0;
}

/* ------------------------------------------------------------------ */
/* pingpong: one event in flight at a time                             */
/* ------------------------------------------------------------------ */

struct pingpong {
	sem_t ack;
	uint64_t next;		/* the event the handler expects next */
};

static int on_ping(wp_ctx *ctx, void *event, void *arg)
{
	struct pingpong *pp = arg;

	(void)ctx;
	if ((uintptr_t)event != pp->next)
		fail("pingpong: got event %" PRIuPTR ", want %" PRIu64,
		     (uintptr_t)event, pp->next);
	pp->next++;
	sem_post(&pp->ack);
	return 0;
}

/*
 * Polls for a while before sleeping, so that the round trip shows the
 * pool rather than the time the scheduler takes to wake this thread.
 */
static void await_ack(struct pingpong *pp, uint64_t i)
{
	uint64_t until = now_ns() + ACK_SPIN_NS;

	do {
		if (sem_trywait(&pp->ack) == 0)
			return;
	} while (now_ns() < until);

	if (!sem_wait_ns(&pp->ack, STALL_NS))
		fail("pingpong: event %" PRIu64 " never acknowledged", i);
}

static void run_pingpong(wp_pool *pool, const struct opts *o)
{
	struct pingpong pp = { .next = 0 };
	wp_handle *h;
	uint64_t t0;

	sem_init(&pp.ack, 0, 0);
	h = handle_open(pool, on_ping, &pp);

	t0 = now_ns();
	for (long i = 0; i < o->events; i++) {
		add_event(h, i);
		await_ack(&pp, i);
	}
	report(pool, o, "pingpong events=%ld ns_per_roundtrip=%.0f",
	       o->events, (double)(now_ns() - t0) / o->events);

	wp_handle_free(h);
	sem_destroy(&pp.ack);
}

/* ------------------------------------------------------------------ */
/* latency: events at a fixed rate, each carrying its send time        */
/* ------------------------------------------------------------------ */

struct latency {
	uint64_t *delay;	/* one per event, written by the worker */
	uint64_t *send;		/* time inside each add, on the sender */
	uint64_t n;
	uint64_t seen;
	uint64_t last_sent;
	sem_t done;		/* posted once all n have arrived */
};

static int on_stamp(wp_ctx *ctx, void *event, void *arg)
{
	uint64_t now = now_ns(), sent = (uintptr_t)event;
	struct latency *lt = arg;

	(void)ctx;
	if (sent < lt->last_sent)
		fail("latency: event %" PRIu64 " out of order", lt->seen);
	if (lt->seen == lt->n)
		fail("latency: more events arrived than were sent");
	lt->last_sent = sent;
	lt->delay[lt->seen++] = now - sent;
	if (lt->seen == lt->n)
		sem_post(&lt->done);
	return 0;
}

/*
 * Sleeps until each send time rather than polling, with the smallest
 * timer slack, so that the sender's own CPU use stays out of the figure.
 */
static void send_paced(wp_handle *h, uint64_t n, uint64_t rate,
		       uint64_t *send)
{
	uint64_t start = now_ns(), t;

	prctl(PR_SET_TIMERSLACK, 1UL);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t due = start + i * NSEC_PER_SEC / rate;
		struct timespec at = timespec_of(due);

		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at,
				       NULL) == EINTR)
			;
		t = now_ns();
		add_event(h, t);
		send[i] = now_ns() - t;
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* The p-quantile of n sorted delays, in microseconds. */
static double quantile_us(const uint64_t *sorted, uint64_t n, double p)
{
	return sorted[(uint64_t)(p * (n - 1))] / 1000.0;
}

static void run_latency(wp_pool *pool, const struct opts *o)
{
	struct latency lt = { .n = o->events * o->seconds };
	uint64_t t0, c0, wall;
	double cpu;
	wp_handle *h;

	if (lt.n == 0)
		fail("latency: -events times -seconds sends nothing");
	lt.delay = calloc(lt.n, sizeof(*lt.delay));
	lt.send = calloc(lt.n, sizeof(*lt.send));
	if (!lt.delay || !lt.send)
		fail("latency: out of memory");
	sem_init(&lt.done, 0, 0);
	h = handle_open(pool, on_stamp, &lt);

	c0 = cpu_ns();
	t0 = now_ns();
	send_paced(h, lt.n, o->events, lt.send);
	if (!sem_wait_ns(&lt.done, STALL_NS))
		fail("latency: %" PRIu64 " of %" PRIu64 " events arrived",
		     lt.seen, lt.n);
	wall = now_ns() - t0;
	cpu = 100.0 * (cpu_ns() - c0) / wall;

	/* The time inside the add is the sender's share of a wake-up. */
	qsort(lt.delay, lt.n, sizeof(*lt.delay), cmp_u64);
	qsort(lt.send, lt.n, sizeof(*lt.send), cmp_u64);
	report(pool, o, "latency rate=%ld events=%" PRIu64 " p50_us=%.1f "
	       "p99_us=%.1f p999_us=%.1f max_us=%.1f cpu_percent=%.1f "
	       "add_p50_us=%.2f", o->events, lt.n,
	       quantile_us(lt.delay, lt.n, 0.5),
	       quantile_us(lt.delay, lt.n, 0.99),
	       quantile_us(lt.delay, lt.n, 0.999),
	       quantile_us(lt.delay, lt.n, 1.0), cpu,
	       quantile_us(lt.send, lt.n, 0.5));

	wp_handle_free(h);
	sem_destroy(&lt.done);
	free(lt.send);
	free(lt.delay);
}

/* ------------------------------------------------------------------ */
/* throughput: P producers, H handles, every handle checks its order   */
/* ------------------------------------------------------------------ */

struct throughput;

/* One handle's state, on a cache line of its own. */
/* Written by the handler only; producers read the handles array. */
struct lane {
	_Atomic uint64_t next;	/* the sequence number expected next */
	struct throughput *tp;
	long index;
} __attribute__((aligned(64)));

struct throughput {
	struct lane *lanes;
	wp_handle **handles_of;	/* lane i's handle, read by producers */
	long handles;
	long producers;
	uint64_t per_handle;
	atomic_long finished;	/* handles that have seen all their events */
	sem_t done;		/* posted by the last handle to finish */
};

struct producer {
	struct throughput *tp;
	long index;
	pthread_t thread;
};

static int on_sequence(wp_ctx *ctx, void *event, void *arg)
{
	struct lane *l = arg;
	struct throughput *tp = l->tp;
	uint64_t want;

	(void)ctx;
	want = atomic_load_explicit(&l->next, memory_order_relaxed);
	if ((uintptr_t)event != want)
		fail("throughput: handle %ld got %" PRIuPTR ", want %" PRIu64,
		     l->index, (uintptr_t)event, want);

	/* Relaxed: only the main thread's stall check reads it. */
	atomic_store_explicit(&l->next, want + 1, memory_order_relaxed);

	/* The count orders nothing; the semaphore wakes the main thread. */
	if (want + 1 == tp->per_handle &&
	    atomic_fetch_add_explicit(&tp->finished, 1,
				      memory_order_relaxed) + 1 == tp->handles)
		sem_post(&tp->done);
	return 0;
}

/* Producer p feeds the handles h with h mod P = p, in turn. */
static void *produce(void *arg)
{
	struct producer *pr = arg;
	struct throughput *tp = pr->tp;

	for (uint64_t seq = 0; seq < tp->per_handle; seq++)
		for (long i = pr->index; i < tp->handles; i += tp->producers)
			add_event(tp->handles_of[i], seq);
	return NULL;
}

static uint64_t events_seen(struct throughput *tp)
{
	uint64_t sum = 0;

	for (long i = 0; i < tp->handles; i++)
		sum += atomic_load_explicit(&tp->lanes[i].next,
					    memory_order_relaxed);
	return sum;
}

/* Waits for every handle to finish; events are lost if progress stops. */
static void await_finished(struct throughput *tp)
{
	uint64_t seen = 0, last_change = now_ns();

	while (!sem_wait_ns(&tp->done, NSEC_PER_SEC)) {
		uint64_t now_seen = events_seen(tp);

		if (now_seen != seen) {
			seen = now_seen;
			last_change = now_ns();
		} else if (now_ns() - last_change > STALL_NS) {
			fail("throughput: %" PRIu64 " of %" PRIu64
			     " events handled", seen,
			     tp->per_handle * tp->handles);
		}
	}
}

static void start_producers(struct throughput *tp, struct producer *pr)
{
	for (long p = 0; p < tp->producers; p++) {
		pr[p].tp = tp;
		pr[p].index = p;
		if (pthread_create(&pr[p].thread, NULL, produce, &pr[p]))
			fail("throughput: cannot start producer %ld", p);
	}
}

static void open_lanes(wp_pool *pool, struct throughput *tp)
{
	tp->lanes = aligned_alloc(64, tp->handles * sizeof(*tp->lanes));
	tp->handles_of = calloc(tp->handles, sizeof(*tp->handles_of));
	if (!tp->lanes || !tp->handles_of)
		fail("throughput: out of memory");
	for (long i = 0; i < tp->handles; i++) {
		struct lane *l = &tp->lanes[i];

		atomic_init(&l->next, 0);
		l->tp = tp;
		l->index = i;
		tp->handles_of[i] = handle_open(pool, on_sequence, l);
	}
}

static void run_throughput(wp_pool *pool, const struct opts *o)
{
	struct throughput tp = {
		.handles = o->handles,
		.producers = o->producers,
		.per_handle = o->events / o->handles,
	};
	struct producer *pr = calloc(tp.producers, sizeof(*pr));
	uint64_t t0, c0, wall, total = tp.per_handle * tp.handles;

	if (!pr || total == 0)
		fail("throughput: needs -events >= -handles and memory");
	atomic_init(&tp.finished, 0);
	sem_init(&tp.done, 0, 0);
	open_lanes(pool, &tp);

	c0 = cpu_ns();
	t0 = now_ns();
	start_producers(&tp, pr);
	await_finished(&tp);
	wall = now_ns() - t0;
	report(pool, o, "throughput workers=%u handles=%ld producers=%ld "
	       "events=%" PRIu64 " events_per_sec=%.0f cpu_ns_per_event=%.0f",
	       wp_pool_workers(pool), tp.handles, tp.producers, total,
	       total * 1e9 / wall, (double)(cpu_ns() - c0) / total);

	for (long p = 0; p < tp.producers; p++)
		pthread_join(pr[p].thread, NULL);
	for (long i = 0; i < tp.handles; i++)
		wp_handle_free(tp.handles_of[i]);
	sem_destroy(&tp.done);
	free(tp.handles_of);
	free(tp.lanes);
	free(pr);
}

/* ------------------------------------------------------------------ */
/* churn: the life of a handle, from a thread that is not a worker     */
/* ------------------------------------------------------------------ */

static void run_churn(wp_pool *pool, const struct opts *o)
{
	uint64_t t0 = now_ns();

	for (long i = 0; i < o->events; i++) {
		wp_handle *h = handle_open(pool, on_nothing, NULL);
		int err;

		wp_handle_unregister(h);
		err = wp_handle_error(h);
		if (err != -ECANCELED)
			fail("churn: handle %ld exited with %s", i,
			     wp_strerror(err));
		wp_handle_free(h);
	}
	report(pool, o, "churn handles=%ld ns_per_register_unregister=%.0f",
	       o->events, (double)(now_ns() - t0) / o->events);
}

/* ------------------------------------------------------------------ */
/* memory: what an idle handle costs                                   */
/* ------------------------------------------------------------------ */

static long rss_bytes(void)
{
	long size, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (!f || fscanf(f, "%ld %ld", &size, &resident) != 2)
		fail("memory: cannot read /proc/self/statm");
	fclose(f);
	return resident * sysconf(_SC_PAGESIZE);
}

/* Counts /proc/self/fd; the directory's own descriptor cancels out. */
static long open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	long n = 0;

	if (!d)
		fail("memory: cannot list /proc/self/fd");
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/*
 * The array of handle pointers is untouched memory until the handles are
 * stored in it, so its 8 bytes per handle are counted: a program that
 * holds H handles pays for them too.
 */
static void run_memory(wp_pool *pool, const struct opts *o)
{
	wp_handle **hs = malloc(o->handles * sizeof(*hs));
	long rss0, fds0;

	if (!hs)
		fail("memory: out of memory");
	rss0 = rss_bytes();
	fds0 = open_fds();
	for (long i = 0; i < o->handles; i++)
		hs[i] = handle_open(pool, on_nothing, NULL);
	report(pool, o, "memory handles=%ld bytes_per_handle=%.0f "
	       "fds_per_handle=%.2f", o->handles,
	       (double)(rss_bytes() - rss0) / o->handles,
	       (double)(open_fds() - fds0) / o->handles);

	for (long i = 0; i < o->handles; i++)
		wp_handle_free(hs[i]);
	free(hs);
}

/* ------------------------------------------------------------------ */
/* timers: H handles, each with a periodic 100 ms timer                */
/* ------------------------------------------------------------------ */

#define TIMER_INTERVAL_NS (100 * NSEC_PER_MSEC)
#define TIMER_WARMUP_NS (200 * NSEC_PER_MSEC)

struct timers;

/* One handle's schedule, written only by its worker. */
struct ticker {
	wp_handle *h;
	struct timers *tm;
	uint64_t due;		/* when the next fire is due */
	long skip;		/* fires left before the next timed one */
};

/*
 * Lateness is counted per worker thread in 10 us buckets up to 1 s, so
 * that counting costs the workers no shared cache line.
 *
 * Every fire is counted, but by default only one in -probe [8] reads the
 * clock to learn how late it came: at a million fires a second, reading
 * CLOCK_MONOTONIC on every fire (24 ns on the machine the README names)
 * costs more CPU than the pool spends firing them. Each handle times every
 * probe-th of its fires, the handles starting at different phases, so the
 * timed fires are a fixed share of every handle, worker and moment of the
 * run. -probe 1 times every fire.
 */
#define LATE_BUCKET_US 10
#define LATE_BUCKETS 100000

struct late_histogram {
	uint64_t fires;
	uint64_t timed;
	uint32_t bucket[LATE_BUCKETS];
};

struct timers {
	struct ticker *tk;
	struct late_histogram *hist[64];	/* one per worker thread */
	_Atomic unsigned nhist;
	_Atomic bool counting;
	_Atomic long started;
	long probe;
};

static _Thread_local struct late_histogram *my_hist;

/* Counts a fire, and its lateness when it was timed (late_ns >= 0). */
static void count_fire(struct timers *tm, int64_t late_ns)
{
	uint64_t b;
	unsigned i;

	if (!my_hist) {
		i = atomic_fetch_add(&tm->nhist, 1);
		if (i >= 64)
			fail("timers: too many worker threads");
		my_hist = calloc(1, sizeof(*my_hist));
		if (!my_hist)
			fail("timers: out of memory");
		tm->hist[i] = my_hist;
	}
	my_hist->fires++;
	if (late_ns < 0)
		return;
	b = (uint64_t)late_ns / 1000 / LATE_BUCKET_US;
	my_hist->timed++;
	my_hist->bucket[b < LATE_BUCKETS ? b : LATE_BUCKETS - 1]++;
}

static int on_tick(wp_ctx *ctx, void *arg)
{
	struct ticker *t = arg;
	int64_t late = -1;
	uint64_t now;

	(void)ctx;
	/* Coalesced fires stand for the latest period they cover. */
	t->due += wp_handle_timer_missed(t->h) * TIMER_INTERVAL_NS;
	if (!t->skip--) {
		t->skip = t->tm->probe - 1;
		now = now_ns();
		if (now < t->due)
			fail("timers: a fire came %.1f us early",
			     (t->due - now) / 1000.0);
		late = (int64_t)(now - t->due);
	}
	if (atomic_load_explicit(&t->tm->counting, memory_order_relaxed))
		count_fire(t->tm, late);
	t->due += TIMER_INTERVAL_NS;
	return 0;
}

/* Totals the histograms: fires, and the bucket holding the timed p99. */
static uint64_t late_p99_us(struct timers *tm, uint64_t *fires)
{
	uint64_t n = 0, timed = 0, seen = 0, rank;
	unsigned i, k = atomic_load(&tm->nhist);
	long b;

	for (i = 0; i < k; i++) {
		n += tm->hist[i]->fires;
		timed += tm->hist[i]->timed;
	}
	*fires = n;
	n = timed;
	rank = (uint64_t)(0.99 * n);
	for (b = 0; b < LATE_BUCKETS; b++) {
		for (i = 0; i < k; i++)
			seen += tm->hist[i]->bucket[b];
		if (n && seen > rank)
			break;
	}
	return n ? (uint64_t)(b + 1) * LATE_BUCKET_US : 0;
}

/* Sets each timer from its own worker, where setting needs no hop. */
static int on_start_timer(wp_ctx *ctx, void *event, void *arg)
{
	struct ticker *t = arg;
	int err;

	(void)ctx;
	(void)event;
	t->due = now_ns() + TIMER_INTERVAL_NS;
	err = wp_handle_set_timer(t->h, NULL, TIMER_INTERVAL_NS, on_tick, t);
	if (err)
		fail("timers: set: %s", wp_strerror(err));
	atomic_fetch_add_explicit(&t->tm->started, 1, memory_order_relaxed);
	return 0;
}

static void start_tickers(wp_pool *pool, struct timers *tm, long n)
{
	uint64_t t0 = now_ns();

	for (long i = 0; i < n; i++) {
		tm->tk[i].tm = tm;
		tm->tk[i].skip = i % tm->probe;
		tm->tk[i].h = handle_open(pool, on_start_timer, &tm->tk[i]);
		add_event(tm->tk[i].h, 0);
	}
	while (atomic_load(&tm->started) < n) {
		if (now_ns() - t0 > STALL_NS)
			fail("timers: only %ld of %ld timers started",
			     atomic_load(&tm->started), n);
		sleep_ns(NSEC_PER_MSEC);
	}
}

static void run_timers(wp_pool *pool, const struct opts *o)
{
	struct timers tm = { .probe = o->probe };
	uint64_t t0, c0, wall, fires, p99;
	double cpu;

	tm.tk = calloc(o->handles, sizeof(*tm.tk));
	if (!tm.tk)
		fail("timers: out of memory");
	start_tickers(pool, &tm, o->handles);
	sleep_ns(TIMER_WARMUP_NS);

	c0 = cpu_ns();
	t0 = now_ns();
	atomic_store(&tm.counting, true);
	sleep_ns((uint64_t)(o->seconds * NSEC_PER_SEC));
	atomic_store(&tm.counting, false);
	wall = now_ns() - t0;
	cpu = 100.0 * (cpu_ns() - c0) / wall;

	/* Stopping the pool first leaves the histograms to this thread. */
	for (long i = 0; i < o->handles; i++)
		wp_handle_free(tm.tk[i].h);
	if (wp_pool_stop(pool))
		fail("timers: cannot stop the pool");
	p99 = late_p99_us(&tm, &fires);
	report(pool, o, "timers handles=%ld seconds=%.1f fires=%" PRIu64
	       " expected=%.0f cpu_percent=%.1f late_p99_us=%" PRIu64
	       " probe=%ld", o->handles, wall / 1e9, fires,
	       o->handles * (wall / 1e9) * 10, cpu, p99, o->probe);

	for (unsigned i = 0; i < atomic_load(&tm.nhist); i++)
		free(tm.hist[i]);
	free(tm.tk);
}

/* ------------------------------------------------------------------ */
/* Flags and the scenario table                                        */
/* ------------------------------------------------------------------ */

/* A scenario is one function and one row; -1 marks a flag it ignores. */
static const struct scenario scenarios[] = {
	{ "pingpong", run_pingpong, 2000000, -1 },
	{ "latency", run_latency, 20000, -1 },
	{ "throughput", run_throughput, 2000000, 64 },
	{ "churn", run_churn, 200000, -1 },
	{ "memory", run_memory, -1, 1000000 },
	{ "timers", run_timers, -1, 100000 },
};

static void __attribute__((noreturn)) usage(int status)
{
	fprintf(status ? stderr : stdout,
		"usage: bench -mode pingpong|latency|throughput|churn|memory|"
		"timers\n"
		"  [-workers W] [-handles H] [-producers P] [-events N]\n"
		"  [-seconds S] [-backend uring|epoll|auto]\n"
		"  [-spin NS|adaptive|forever] [-probe N]\n");
	exit(status);
}

static void __attribute__((noreturn)) bad_flag(const char *flag)
{
	fprintf(stderr, "bench: unknown flag %s\n", flag);
	usage(2);
}

static long parse_long(const char *flag, const char *s, long min)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min) {
		fprintf(stderr, "bench: %s wants a number >= %ld\n", flag, min);
		usage(2);
	}
	return v;
}

static enum wp_backend parse_backend(const char *s)
{
	if (!strcmp(s, "uring"))
		return WP_BACKEND_URING;
	if (!strcmp(s, "epoll"))
		return WP_BACKEND_EPOLL;
	if (!strcmp(s, "auto"))
		return WP_BACKEND_AUTO;
	fprintf(stderr, "bench: unknown backend %s\n", s);
	usage(2);
}

static double parse_seconds(const char *s)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end || !(v > 0)) {
		fprintf(stderr, "bench: -seconds wants a positive number\n");
		usage(2);
	}
	return v;
}

/* The name is kept for the result line; the library gets the number. */
static void set_spin(struct opts *o, const char *s)
{
	o->spin = s;
	if (!strcmp(s, "forever"))
		o->spin_ns = WP_SPIN_FOREVER;
	else if (!strcmp(s, "adaptive"))
		o->spin_ns = WP_SPIN_ADAPTIVE;
	else
		o->spin_ns = parse_long("-spin", s, 0);
}

static void set_flag(struct opts *o, const char *flag, const char *v)
{
	if (!strcmp(flag, "-mode"))
		o->mode = v;
	else if (!strcmp(flag, "-workers"))
		o->workers = parse_long(flag, v, 0);
	else if (!strcmp(flag, "-handles"))
		o->handles = parse_long(flag, v, 1);
	else if (!strcmp(flag, "-producers"))
		o->producers = parse_long(flag, v, 1);
	else if (!strcmp(flag, "-events"))
		o->events = parse_long(flag, v, 1);
	else if (!strcmp(flag, "-seconds"))
		o->seconds = parse_seconds(v);
	else if (!strcmp(flag, "-backend"))
		o->backend = parse_backend(v);
	else if (!strcmp(flag, "-spin"))
		set_spin(o, v);
	else if (!strcmp(flag, "-probe"))
		o->probe = parse_long(flag, v, 1);
	else
		bad_flag(flag);
}

static const struct scenario *parse_args(int argc, char **argv,
					 struct opts *o)
{
	size_t n = sizeof(scenarios) / sizeof(scenarios[0]);

	*o = (struct opts){ .mode = "pingpong", .workers = 2, .handles = -1,
			    .producers = 2, .events = -1, .seconds = 5,
			    .probe = 8 };
	for (int i = 1; i < argc; i += 2) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
			usage(0);
		if (i + 1 == argc)
			usage(2);
		set_flag(o, argv[i], argv[i + 1]);
	}

	for (size_t i = 0; i < n; i++) {
		if (strcmp(o->mode, scenarios[i].name))
			continue;
		if (o->events < 0)
			o->events = scenarios[i].events;
		if (o->handles < 0)
			o->handles = scenarios[i].handles;
		return &scenarios[i];
	}
	fprintf(stderr, "bench: unknown mode %s\n", o->mode);
	usage(2);
}

/* An explicit backend must be the one running, so a fallback is loud. */
static wp_pool *pool_open(const struct opts *o)
{
	struct wp_pool_options po;
	wp_pool *pool;
	int err;

	wp_pool_options_init(&po);
	po.workers = o->workers;
	po.backend = o->backend;
	if (o->spin)
		po.spin_ns = o->spin_ns;

	err = wp_pool_create(&pool, &po);
	if (err)
		fail("cannot create a pool on backend %s: %s",
		     backend_name(o->backend), wp_strerror(err));
	if (o->backend != WP_BACKEND_AUTO &&
	    wp_pool_backend(pool) != o->backend)
		fail("the pool runs on another backend than asked for");

	err = wp_pool_start(pool);
	if (err)
		fail("cannot start the pool: %s", wp_strerror(err));
	return pool;
}

int main(int argc, char **argv)
{
	const struct scenario *sc;
	struct opts o;
	wp_pool *pool;
	int err;

	sc = parse_args(argc, argv, &o);
	pool = pool_open(&o);
	sc->run(pool, &o);

	err = wp_pool_stop(pool);
	if (err)
		fail("cannot stop the pool: %s", wp_strerror(err));
	wp_pool_destroy(pool);
	return 0;
}
