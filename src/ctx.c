/* SPDX-License-Identifier: MIT */
/*
 * Contexts: cancellation and deadlines that spread from parent to child,
 * a descriptor that becomes readable when a context ends, and the futex
 * waits that blocking calls use to watch a context.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

struct wp_ctx {
	uint32_t magic;
	_Atomic int err;
	_Atomic uint32_t refs;
	uint64_t deadline;	/* CLOCK_MONOTONIC ns; 0 for none */
	wp_ctx *parent;

	/* Guards the lists below and fd. */
	pthread_mutex_t lock;
	wp_ctx *children;
	wp_ctx *sib_next;	/* in the parent's list, under its lock */
	wp_ctx *sib_prev;
	struct wp__waiter *waiters;
	int fd;
};

uint64_t wp__now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct timespec ns_to_timespec(uint64_t ns)
{
	struct timespec ts = {
		.tv_sec = (time_t)(ns / 1000000000u),
		.tv_nsec = (long)(ns % 1000000000u),
	};

	return ts;
}

void wp__futex_wait(_Atomic uint32_t *word, uint32_t val,
		    uint64_t deadline_ns)
{
	struct timespec ts;

	if (deadline_ns)
		ts = ns_to_timespec(deadline_ns);

	/* An absolute CLOCK_MONOTONIC timeout needs FUTEX_WAIT_BITSET. */
	syscall(SYS_futex, word, FUTEX_WAIT_BITSET_PRIVATE, val,
		deadline_ns ? &ts : NULL, NULL, FUTEX_BITSET_MATCH_ANY);
}

void wp__futex_wake(_Atomic uint32_t *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

bool wp__ctx_valid(const wp_ctx *ctx)
{
	return ctx && ctx->magic == WP__CTX_MAGIC;
}

void wp__ctx_ref(wp_ctx *ctx, unsigned n)
{
	/* Taking a reference needs no ordering: the caller already has one. */
	atomic_fetch_add_explicit(&ctx->refs, n, memory_order_relaxed);
}

uint64_t wp__ctx_deadline(const wp_ctx *ctx)
{
	return ctx ? ctx->deadline : 0;
}

/* Makes fd readable now (when the context ended) or at the deadline. */
static void ctx_arm_fd(wp_ctx *ctx)
{
	struct itimerspec its = { 0 };
	int flags = 0;

	if (atomic_load(&ctx->err)) {
		its.it_value.tv_nsec = 1;
	} else if (ctx->deadline) {
		its.it_value = ns_to_timespec(ctx->deadline);
		flags = TFD_TIMER_ABSTIME;
	} else {
		return;
	}

	timerfd_settime(ctx->fd, flags, &its, NULL);
}

/*
 * Ends ctx with err and spreads it to the children; ctx->lock not held.
 * A context past its deadline has timed out already, whatever ends it
 * now, and its descendants, whose deadlines are no later, too.
 */
static void ctx_end(wp_ctx *ctx, int err)
{
	struct wp__waiter *wt;
	wp_ctx *child;
	int none = 0;

	if (ctx->deadline && wp__now_ns() >= ctx->deadline)
		err = -ETIMEDOUT;
	pthread_mutex_lock(&ctx->lock);
	if (!atomic_compare_exchange_strong(&ctx->err, &none, err)) {
		pthread_mutex_unlock(&ctx->lock);
		return;
	}

	/*
	 * Bumping each watched word makes a waiter that is about to sleep on
	 * its old value return at once; the wake covers one already asleep.
	 */
	for (wt = ctx->waiters; wt; wt = wt->next) {
		atomic_fetch_add(wt->word, 1);
		wp__futex_wake(wt->word);
	}
	if (ctx->fd >= 0)
		ctx_arm_fd(ctx);

	/* Children unlink themselves under this lock, so the list holds. */
	for (child = ctx->children; child; child = child->sib_next)
		ctx_end(child, err);
	pthread_mutex_unlock(&ctx->lock);
}

static int ctx_new(wp_ctx **out, wp_ctx *parent, uint64_t deadline)
{
	wp_ctx *ctx;

	if (!out || (parent && !wp__ctx_valid(parent)))
		return -EINVAL;
	ctx = wp__calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;

	ctx->magic = WP__CTX_MAGIC;
	atomic_init(&ctx->refs, 1);
	ctx->fd = -1;
	ctx->deadline = deadline;
	pthread_mutex_init(&ctx->lock, NULL);

	if (parent) {
		if (parent->deadline &&
		    (!deadline || parent->deadline < deadline))
			ctx->deadline = parent->deadline;
		wp__ctx_ref(parent, 1);
		ctx->parent = parent;

		/* Linked under the parent's lock so no cancel is missed. */
		pthread_mutex_lock(&parent->lock);
		atomic_init(&ctx->err, atomic_load(&parent->err));
		ctx->sib_next = parent->children;
		if (parent->children)
			parent->children->sib_prev = ctx;
		parent->children = ctx;
		pthread_mutex_unlock(&parent->lock);
	}

	*out = ctx;
	return 0;
}

int wp_ctx_create(wp_ctx **ctx, wp_ctx *parent)
{
	return ctx_new(ctx, parent, 0);
}

int wp_ctx_with_timeout(wp_ctx **ctx, wp_ctx *parent, uint64_t ns)
{
	uint64_t now = wp__now_ns();

	/* A timeout too large to represent never expires. */
	return ctx_new(ctx, parent, ns > UINT64_MAX - now ? 0 : now + ns);
}

void wp_ctx_cancel(wp_ctx *ctx)
{
	if (!wp__ctx_valid(ctx))
		return;

	ctx_end(ctx, -ECANCELED);
}

int wp_ctx_err(const wp_ctx *ctx)
{
	int err;

	if (!wp__ctx_valid(ctx))
		return -EINVAL;

	err = atomic_load(&ctx->err);
	if (!err && ctx->deadline && wp__now_ns() >= ctx->deadline)
		err = -ETIMEDOUT;
	return err;
}

bool wp_ctx_done(const wp_ctx *ctx)
{
	return wp_ctx_err(ctx) != 0;
}

int wp_ctx_fd(wp_ctx *ctx)
{
	int fd;

	if (!wp__ctx_valid(ctx))
		return -EINVAL;

	pthread_mutex_lock(&ctx->lock);
	if (ctx->fd < 0) {
		/*
		 * A timerfd serves both ends: armed for the deadline, and
		 * re-armed to expire at once on cancel.
		 */
		fd = wp__timerfd(TFD_CLOEXEC | TFD_NONBLOCK);
		if (fd < 0) {
			pthread_mutex_unlock(&ctx->lock);
			return -errno;
		}
		ctx->fd = fd;
		ctx_arm_fd(ctx);
	}
	fd = ctx->fd;
	pthread_mutex_unlock(&ctx->lock);
	return fd;
}

void wp_ctx_release(wp_ctx *ctx)
{
	wp_ctx *parent;

	if (!wp__ctx_valid(ctx))
		return;

	/* The last release must see every other user's writes. */
	if (atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) != 1)
		return;

	parent = ctx->parent;
	if (parent) {
		pthread_mutex_lock(&parent->lock);
		if (ctx->sib_prev)
			ctx->sib_prev->sib_next = ctx->sib_next;
		else
			parent->children = ctx->sib_next;
		if (ctx->sib_next)
			ctx->sib_next->sib_prev = ctx->sib_prev;
		pthread_mutex_unlock(&parent->lock);
	}

	if (ctx->fd >= 0)
		close(ctx->fd);
	pthread_mutex_destroy(&ctx->lock);
	ctx->magic = 0;
	free(ctx);
	if (parent)
		wp_ctx_release(parent);
}

void wp__ctx_watch(wp_ctx *ctx, struct wp__waiter *wt,
		   _Atomic uint32_t *word)
{
	wt->word = word;
	wt->prev = NULL;

	pthread_mutex_lock(&ctx->lock);
	wt->next = ctx->waiters;
	if (ctx->waiters)
		ctx->waiters->prev = wt;
	ctx->waiters = wt;
	pthread_mutex_unlock(&ctx->lock);
}

void wp__ctx_unwatch(wp_ctx *ctx, struct wp__waiter *wt)
{
	pthread_mutex_lock(&ctx->lock);
	if (wt->prev)
		wt->prev->next = wt->next;
	else
		ctx->waiters = wt->next;
	if (wt->next)
		wt->next->prev = wt->prev;
	pthread_mutex_unlock(&ctx->lock);
}
