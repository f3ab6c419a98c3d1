/* SPDX-License-Identifier: MIT */
/*
 * A libFuzzer target for the public API.
 *
 * The input is a small program. Its first byte picks the backend, the
 * number of workers and the queue capacity; each following pair of bytes
 * is one call (register, add, try_add, add_events, unregister, graceful
 * unregister, free, error_fd, on_exit, set_timer, ctx cancel, start,
 * stop, run, go, queries) on one of a few handle slots. The target runs
 * the calls on a fresh pool and holds every result to a model of what the
 * library promises: events of a handle run in the order added and never
 * after its exit, adds to an exited handle return -ECANCELED, every exit
 * callback runs exactly once with a code the model allows (and predicts
 * where the outcome is deterministic), a graceful exit runs everything
 * queued, and no descriptor outlives the pool. A broken promise aborts,
 * which libFuzzer reports with the input.
 *
 * Build and run with `make fuzz` (FUZZ_SECONDS, default 60).
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <time.h>

#include "workerpool.h"

#define SLOTS 4
#define MAX_OPS 48
#define MAX_RECS (MAX_OPS + SLOTS)
#define BATCH 8

#define EVENT_FAIL 101
#define TIMER_FAIL 102

/* Exit codes as bits, for the set of codes the model allows. */
enum {
	C_GRACEFUL = 1 << 0,	/* 0 */
	C_CANCELED = 1 << 1,	/* -ECANCELED */
	C_SHUTDOWN = 1 << 2,	/* -ESHUTDOWN */
	C_EVENT = 1 << 3,	/* EVENT_FAIL */
	C_TIMER = 1 << 4,	/* TIMER_FAIL */
};

enum op {
	OP_REGISTER, OP_ADD, OP_TRY_ADD, OP_ADD_EVENTS, OP_UNREGISTER,
	OP_GRACEFUL, OP_FREE, OP_ERROR_FD, OP_ON_EXIT, OP_SET_TIMER,
	OP_CTX_CANCEL, OP_START, OP_STOP, OP_RUN, OP_GO, OP_QUERY, OP_PAUSE,
	NOPS
};

enum pool_state { P_NEW, P_RUNNING, P_STOPPED };

/* What a handle's callbacks saw; kept until the end of the input. */
struct rec {
	long ran;		/* the last event run (events are 1, 2, ...) */
	atomic_bool timer_fails;
	atomic_int inside;
	atomic_int exits;
	atomic_int code;
};

/* What the model knows of a handle. */
struct slot {
	wp_handle *h;
	struct rec *rec;
	long accepted;		/* events accepted so far */
	long first_fail;	/* the first failing event accepted, or 0 */
	bool timer_fail;	/* a failing timer was set */
	bool refusing;		/* known to have exited: refuses events */
	bool known;		/* allowed is settled */
	bool finished;		/* its exit callback has surely run */
	unsigned allowed;	/* codes its exit may have */
	int efd;
};

struct fuzz {
	wp_pool *pool;
	enum pool_state state;
	wp_ctx *ctx;		/* live until an OP_CTX_CANCEL */
	bool ctx_ended;
	wp_ctx *dead;		/* cancelled from the start */
	struct slot slots[SLOTS];
	struct rec *recs[MAX_RECS];
	struct slot dead_slots[MAX_RECS];	/* freed handles' models */
	int nrecs, ndead;
	atomic_int tasks;
	int tasks_sent;
	const uint8_t *in;
	size_t left;
};

__attribute__((noreturn, format(printf, 1, 2)))
static void fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "fuzz_api: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	abort();
}

#define CHECK(cond, ...)						\
	do {								\
		if (!(cond))						\
			fail(__VA_ARGS__);				\
	} while (0)

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	CHECK(d, "opendir /proc/self/fd");
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;
}

static bool readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void pause_us(long us)
{
	struct timespec ts = { 0, us * 1000 };

	nanosleep(&ts, NULL);
}

static unsigned code_bit(int code)
{
	switch (code) {
	case 0:
		return C_GRACEFUL;
	case -ECANCELED:
		return C_CANCELED;
	case -ESHUTDOWN:
		return C_SHUTDOWN;
	case EVENT_FAIL:
		return C_EVENT;
	case TIMER_FAIL:
		return C_TIMER;
	default:
		return 0;
	}
}

/* ------------------------------------------------------------------ */
/* Callbacks                                                           */
/* ------------------------------------------------------------------ */

static void enter(struct rec *r, const char *what)
{
	CHECK(!atomic_exchange(&r->inside, 1), "%s overlaps a callback", what);
	CHECK(!atomic_load(&r->exits), "%s runs after the exit callback",
	      what);
}

static int on_event(wp_ctx *ctx, void *event, void *arg)
{
	struct rec *r = arg;
	uintptr_t v = (uintptr_t)event;
	long seq = (long)(v >> 1);

	enter(r, "an event");
	CHECK(wp_ctx_err(ctx) != -EINVAL, "a handler got a dead context");
	CHECK(seq == r->ran + 1, "event %ld ran right after %ld", seq, r->ran);
	r->ran = seq;
	atomic_store(&r->inside, 0);
	return v & 1 ? EVENT_FAIL : 0;
}

static int on_timer(wp_ctx *ctx, void *arg)
{
	struct rec *r = arg;

	enter(r, "a timer");
	CHECK(wp_ctx_err(ctx) != -EINVAL, "a timer got a dead context");
	atomic_store(&r->inside, 0);
	return atomic_load(&r->timer_fails) ? TIMER_FAIL : 0;
}

static void on_exit_cb(int err, void *arg)
{
	struct rec *r = arg;

	CHECK(!atomic_load(&r->inside), "an exit callback overlaps");
	atomic_store(&r->code, err);
	CHECK(atomic_fetch_add(&r->exits, 1) == 0, "a second exit callback");
}

static void on_task(void *arg)
{
	atomic_fetch_add((atomic_int *)arg, 1);
}

/* ------------------------------------------------------------------ */
/* The model                                                           */
/* ------------------------------------------------------------------ */

/* The codes a handle may exit with by itself: its failures. */
static unsigned pending(const struct slot *s)
{
	return (s->first_fail ? C_EVENT : 0) | (s->timer_fail ? C_TIMER : 0);
}

/*
 * A call that ends the handle returned; code is what it causes unless
 * something else ended the handle first. finished: the call promises that
 * the exit callback has run by the time it returns.
 */
static void ended(struct slot *s, unsigned code, const char *call,
		  bool finished)
{
	struct rec *r = s->rec;

	if (!s->known)
		s->allowed = code | pending(s);
	s->known = s->refusing = true;
	CHECK(wp_handle_exited(s->h), "%s: handle not exited", call);
	if (!finished)
		return;

	s->finished = true;
	CHECK(atomic_load(&r->exits) == 1, "%s returned with %d exit "
	      "callbacks run", call, atomic_load(&r->exits));
	CHECK(code_bit(atomic_load(&r->code)) & s->allowed,
	      "%s: exit code %d, allowed 0x%x", call,
	      atomic_load(&r->code), s->allowed);
	CHECK(wp_handle_error(s->h) == atomic_load(&r->code),
	      "%s: wp_handle_error %d, callback saw %d", call,
	      wp_handle_error(s->h), atomic_load(&r->code));
	if (s->efd >= 0)
		CHECK(readable(s->efd), "%s: error fd not readable", call);
}

/* Takes the next byte of the input, or 0 past its end. */
static uint8_t next_byte(struct fuzz *f)
{
	if (!f->left)
		return 0;
	f->left--;
	return *f->in++;
}

/*
 * The context an add or a wait uses: variant 0 none, 1 the shared one,
 * 2 a cancelled one, 3 a fresh 200 us deadline (released by the caller
 * when *fresh). A wait that could last forever (the pool has not started,
 * so nothing frees room or drains) uses the cancelled one instead.
 */
static wp_ctx *pick_ctx(struct fuzz *f, unsigned variant, bool *fresh,
			bool *ends)
{
	wp_ctx *ctx = NULL;

	*fresh = false;
	*ends = false;
	if (variant == 3) {
		CHECK(wp_ctx_with_timeout(&ctx, NULL, 200000) == 0,
		      "wp_ctx_with_timeout");
		*fresh = *ends = true;
		return ctx;
	}
	if (variant == 2 || (f->state == P_NEW &&
			     (variant == 0 || !f->ctx_ended))) {
		*ends = true;
		return f->dead;
	}
	if (variant == 1) {
		*ends = f->ctx_ended;
		return f->ctx;
	}
	return NULL;
}

/*
 * Checks the result of an add of n events (1 for single adds) and counts
 * what was accepted. ends: the add's context may end its wait; full_ok:
 * a full queue may refuse it (try_add); cut_ok: the batch may stop short
 * anyway, its own first event being one that fails.
 */
static void added(struct slot *s, int rc, int n, bool ends, bool full_ok,
		  bool cut_ok, const char *call)
{
	if (s->refusing) {
		CHECK(rc == -ECANCELED, "%s on an ended handle: %d", call, rc);
		return;
	}
	if (rc > 0) {
		CHECK(rc <= n, "%s: %d of %d", call, rc, n);
		CHECK(rc == n || ends || cut_ok || pending(s),
		      "%s: %d of %d", call, rc, n);
		s->accepted += rc;
		return;
	}
	if (rc == -ECANCELED && !ends) {
		CHECK(pending(s), "%s refused by a live handle", call);
		s->refusing = true;
		return;
	}
	CHECK(rc == -ECANCELED || (rc == -EAGAIN && full_ok) ||
	      (rc == -ETIMEDOUT && ends), "%s: %d", call, rc);
}

/* ------------------------------------------------------------------ */
/* Operations                                                          */
/* ------------------------------------------------------------------ */

static void op_register(struct fuzz *f, struct slot *s)
{
	struct rec *r;
	int rc;

	if (s->h || f->nrecs == MAX_RECS)
		return;
	r = calloc(1, sizeof(*r));
	CHECK(r, "calloc");
	rc = wp_pool_register(f->pool, on_event, r, &s->h);
	if (f->state == P_STOPPED) {
		CHECK(rc == -ESHUTDOWN, "register after stop: %d", rc);
		s->h = NULL;
		free(r);
		return;
	}
	CHECK(rc == 0, "register: %d", rc);
	CHECK(wp_handle_on_exit(s->h, on_exit_cb, r) == 0, "on_exit");
	f->recs[f->nrecs++] = r;
	*s = (struct slot){ .h = s->h, .rec = r, .efd = -1 };
}

static void *event_of(struct slot *s, long k, bool fail)
{
	return (void *)(((uintptr_t)(s->accepted + k + 1) << 1) | fail);
}

static void op_add(struct fuzz *f, struct slot *s, uint8_t a, int how)
{
	bool fail = (a >> 5) == 7, fresh, ends;
	wp_ctx *ctx = pick_ctx(f, (a >> 3) & 3, &fresh, &ends);
	void *ev[BATCH];
	int n = 1, k, rc;

	for (k = 0; k < BATCH; k++)
		ev[k] = event_of(s, k, fail && k == 0);
	if (how == OP_TRY_ADD) {
		rc = wp_handle_try_add_event(s->h, ev[0]);
		added(s, rc == 0 ? 1 : rc, 1, false, true, false, "try_add");
	} else if (how == OP_ADD) {
		rc = wp_handle_add_event(s->h, ctx, ev[0]);
		added(s, rc == 0 ? 1 : rc, 1, ends, false, false, "add");
	} else {
		n = 1 + (a >> 5);
		rc = wp_handle_add_events(s->h, ctx, ev, (size_t)n);
		added(s, rc, n, ends, false, fail, "add_events");
	}
	if (rc >= 0 && fail && !s->first_fail)
		s->first_fail = s->accepted - (rc > 0 ? rc : 1) + 1;
	if (fresh)
		wp_ctx_release(ctx);
}

static void op_unregister(struct slot *s)
{
	wp_handle_unregister(s->h);
	ended(s, C_CANCELED, "unregister", true);
}

/*
 * A graceful unregister waits for the exit callback, except when it finds
 * the handle already exited: -ECANCELED then promises nothing more.
 */
static void op_graceful(struct fuzz *f, struct slot *s, uint8_t a)
{
	bool fresh, ends, was = s->refusing;
	wp_ctx *ctx = pick_ctx(f, (a >> 3) & 3, &fresh, &ends);
	int rc = wp_handle_unregister_graceful(s->h, ctx);
	int err = wp_handle_error(s->h);

	if (was) {
		CHECK(rc == -ECANCELED, "graceful on an ended handle: %d", rc);
		ended(s, 0, "graceful", false);
	} else if (!ends) {
		/* Everything queued runs first: the outcome is known. */
		CHECK(rc == (err ? -ECANCELED : 0), "graceful: %d, code %d",
		      rc, err);
		ended(s, s->first_fail ? 0 : C_GRACEFUL, "graceful", rc == 0);
	} else {
		CHECK(rc == 0 || rc == -ECANCELED || rc == -ETIMEDOUT,
		      "graceful with a context: %d", rc);
		CHECK(rc != 0 || err == 0, "graceful: 0 for code %d", err);
		ended(s, C_GRACEFUL | C_CANCELED, "graceful",
		      rc != -ECANCELED);
	}
	if (rc == 0)
		CHECK(s->rec->ran == s->accepted, "a graceful exit ran %ld "
		      "of %ld events", s->rec->ran, s->accepted);
	if (fresh)
		wp_ctx_release(ctx);
}

static void op_free(struct fuzz *f, struct slot *s)
{
	wp_handle_free(s->h);
	s->h = NULL;
	CHECK(atomic_load(&s->rec->exits) == 1, "free returned before the "
	      "exit callback");
	if (!s->known)
		s->allowed = C_CANCELED | pending(s);
	s->known = s->finished = true;
	CHECK(code_bit(atomic_load(&s->rec->code)) & s->allowed,
	      "free: exit code %d", atomic_load(&s->rec->code));
	f->dead_slots[f->ndead++] = *s;
	*s = (struct slot){ .efd = -1 };
}

static void op_error_fd(struct slot *s)
{
	int fd = wp_handle_error_fd(s->h);

	CHECK(fd >= 0, "error_fd: %d", fd);
	CHECK(s->efd < 0 || fd == s->efd, "error_fd changed");
	s->efd = fd;
	if (s->finished)
		CHECK(readable(fd), "error fd of an ended handle not readable");
	else if (!s->refusing && !pending(s))
		CHECK(!readable(fd), "error fd of a live handle readable");
}

static void op_on_exit(struct slot *s)
{
	int rc = wp_handle_on_exit(s->h, on_exit_cb, s->rec);

	if (s->finished)
		CHECK(rc == -ECANCELED, "on_exit after the exit: %d", rc);
	else if (!s->refusing && !pending(s))
		CHECK(rc == 0, "on_exit: %d", rc);
	else
		CHECK(rc == 0 || rc == -ECANCELED, "on_exit: %d", rc);
}

static void op_set_timer(struct fuzz *f, struct slot *s, uint8_t a)
{
	static const uint64_t intervals[] = { 0, 50000, 200000, 1000000 };
	uint64_t ns = intervals[(a >> 3) & 3];
	bool fails = (a >> 5) >= 6;
	wp_ctx *ctx = (a >> 5) & 1 ? f->ctx : NULL;
	int rc;

	if (ns && fails)
		atomic_store(&s->rec->timer_fails, true);
	rc = wp_handle_set_timer(s->h, ctx, ns, ns ? on_timer : NULL, s->rec);
	if (s->refusing)
		CHECK(rc == -ECANCELED, "set_timer on an ended handle: %d", rc);
	else if (!s->refusing && !pending(s))
		CHECK(rc == 0, "set_timer: %d", rc);
	else
		CHECK(rc == 0 || rc == -ECANCELED, "set_timer: %d", rc);
	if (rc == 0 && ns && fails)
		s->timer_fail = true;
}

static void all_ended(struct fuzz *f, const char *call)
{
	int k;

	f->state = P_STOPPED;
	f->ctx_ended = true;
	for (k = 0; k < SLOTS; k++)
		if (f->slots[k].h)
			ended(&f->slots[k], C_SHUTDOWN, call, true);
	for (k = 0; k < f->nrecs; k++)
		CHECK(!atomic_load(&f->recs[k]->inside), "%s returned with a "
		      "callback running", call);
}

static void op_start(struct fuzz *f)
{
	int rc = wp_pool_start(f->pool);

	if (f->state == P_NEW) {
		CHECK(rc == 0, "start: %d", rc);
		f->state = P_RUNNING;
	} else {
		CHECK(rc == (f->state == P_RUNNING ? -EALREADY : -ESHUTDOWN),
		      "start: %d", rc);
	}
}

static void op_run(struct fuzz *f)
{
	wp_ctx *ctx = NULL;
	int rc;

	CHECK(wp_ctx_with_timeout(&ctx, NULL, 1000000) == 0, "ctx");
	rc = wp_pool_run(f->pool, ctx);
	CHECK(wp_ctx_done(ctx) || rc, "run returned before its deadline");
	wp_ctx_release(ctx);
	if (f->state == P_NEW) {
		CHECK(rc == 0, "run: %d", rc);
		all_ended(f, "run");
	} else {
		CHECK(rc == (f->state == P_RUNNING ? -EALREADY : -ESHUTDOWN),
		      "run: %d", rc);
	}
}

static void op_go(struct fuzz *f)
{
	wp_ctx *ctx = f->state == P_NEW ? f->dead : NULL;
	int rc = wp_pool_go(f->pool, ctx, on_task, &f->tasks);

	if (f->state == P_STOPPED)
		CHECK(rc == -ESHUTDOWN, "go after stop: %d", rc);
	else if (ctx)
		CHECK(rc == 0 || rc == -ECANCELED, "go: %d", rc);
	else
		CHECK(rc == 0, "go: %d", rc);
	if (rc == 0)
		f->tasks_sent++;
}

static void op_query(struct slot *s)
{
	bool exited = wp_handle_exited(s->h);
	int err = wp_handle_error(s->h);

	if (s->refusing)
		CHECK(exited, "an ended handle is not exited");
	if (s->finished) {
		CHECK(err == atomic_load(&s->rec->code), "wp_handle_error %d, "
		      "callback saw %d", err, atomic_load(&s->rec->code));
	} else if (!s->refusing && !pending(s)) {
		CHECK(!exited && err == 0, "a live handle exited with %d", err);
	}
	if (exited)
		s->refusing = true;
}

static bool needs_handle(enum op o)
{
	return o == OP_ADD || o == OP_TRY_ADD || o == OP_ADD_EVENTS ||
	       o == OP_UNREGISTER || o == OP_GRACEFUL || o == OP_FREE ||
	       o == OP_ERROR_FD || o == OP_ON_EXIT || o == OP_SET_TIMER ||
	       o == OP_QUERY;
}

static void op(struct fuzz *f, uint8_t code, uint8_t a)
{
	struct slot *s = &f->slots[a % SLOTS];
	enum op o = (enum op)(code % NOPS);

	/* A call on an empty slot registers a handle there instead. */
	if (!s->h && needs_handle(o))
		o = OP_REGISTER;

	switch (o) {
	case OP_REGISTER:
		op_register(f, s);
		break;
	case OP_ADD:
	case OP_TRY_ADD:
	case OP_ADD_EVENTS:
		op_add(f, s, a, o);
		break;
	case OP_UNREGISTER:
		op_unregister(s);
		break;
	case OP_GRACEFUL:
		op_graceful(f, s, a);
		break;
	case OP_FREE:
		op_free(f, s);
		break;
	case OP_ERROR_FD:
		op_error_fd(s);
		break;
	case OP_ON_EXIT:
		op_on_exit(s);
		break;
	case OP_SET_TIMER:
		op_set_timer(f, s, a);
		break;
	case OP_CTX_CANCEL:
		wp_ctx_cancel(f->ctx);
		f->ctx_ended = true;
		break;
	case OP_START:
		op_start(f);
		break;
	case OP_STOP:
		CHECK(wp_pool_stop(f->pool) == 0, "stop");
		all_ended(f, "stop");
		break;
	case OP_RUN:
		op_run(f);
		break;
	case OP_GO:
		op_go(f);
		break;
	case OP_QUERY:
		op_query(s);
		break;
	default:
		pause_us(50 + 50 * (a & 3));
		break;
	}
}

/* ------------------------------------------------------------------ */
/* One input                                                           */
/* ------------------------------------------------------------------ */

/* Checks a handle's whole life once its pool is gone. */
static void check_life(const struct slot *s)
{
	const struct rec *r = s->rec;
	int code = atomic_load(&r->code);

	CHECK(atomic_load(&r->exits) == 1, "%d exit callbacks",
	      atomic_load(&r->exits));
	CHECK(code_bit(code) & s->allowed, "exit code %d, allowed 0x%x",
	      code, s->allowed);
	CHECK(r->ran <= s->accepted, "%ld events ran of %ld accepted",
	      r->ran, s->accepted);
	if (code == 0)
		CHECK(r->ran == s->accepted, "a graceful exit ran %ld of %ld",
		      r->ran, s->accepted);
	if (code == EVENT_FAIL)
		CHECK(r->ran == s->first_fail, "the failing event %ld, but "
		      "%ld ran", s->first_fail, r->ran);
}

static void setup(struct fuzz *f, uint8_t shape)
{
	struct wp_pool_options opt;
	int k, rc;

	memset(f, 0, sizeof(*f));
	for (k = 0; k < SLOTS; k++)
		f->slots[k].efd = -1;
	wp_pool_options_init(&opt);
	opt.backend = shape & 1 ? WP_BACKEND_EPOLL : WP_BACKEND_URING;
	opt.workers = 1 + ((shape >> 1) & 1);
	opt.queue_capacity = 1u << ((shape >> 2) & 3);
	rc = wp_pool_create(&f->pool, &opt);
	if (rc && opt.backend == WP_BACKEND_URING) {
		/* Where io_uring is refused, both halves fuzz epoll. */
		opt.backend = WP_BACKEND_EPOLL;
		rc = wp_pool_create(&f->pool, &opt);
	}
	CHECK(rc == 0, "wp_pool_create: %d", rc);
	CHECK(wp_ctx_create(&f->ctx, NULL) == 0, "wp_ctx_create");
	CHECK(wp_ctx_create(&f->dead, NULL) == 0, "wp_ctx_create");
	wp_ctx_cancel(f->dead);
	if (shape & 0x10)
		op_start(f);
}

static void teardown(struct fuzz *f)
{
	int k;

	wp_pool_destroy(f->pool);
	for (k = 0; k < SLOTS; k++) {
		struct slot *s = &f->slots[k];

		if (!s->h)
			continue;
		if (!s->known)
			s->allowed = C_SHUTDOWN | pending(s);
		check_life(s);
	}
	for (k = 0; k < f->ndead; k++)
		check_life(&f->dead_slots[k]);
	CHECK(atomic_load(&f->tasks) <= f->tasks_sent, "more tasks ran than "
	      "were queued");
	for (k = 0; k < f->nrecs; k++)
		free(f->recs[k]);
	wp_ctx_release(f->ctx);
	wp_ctx_release(f->dead);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fuzz f;
	int fds = count_fds(), n;

	if (size < 1)
		return 0;
	setup(&f, data[0]);
	f.in = data + 1;
	f.left = size - 1;
	for (n = 0; n < MAX_OPS && f.left >= 2; n++) {
		uint8_t code = next_byte(&f);

		op(&f, code, next_byte(&f));
	}
	teardown(&f);
	CHECK(count_fds() == fds, "descriptors leaked: %d, then %d", fds,
	      count_fds());
	return 0;
}
