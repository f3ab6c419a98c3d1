/* SPDX-License-Identifier: MIT */
/*
 * Fault injection for the test suite. Every allocation and descriptor the
 * library makes, every io_uring setup and every thread creation passes
 * through wp__fault(); a test arms a countdown so that exactly the n-th
 * such call fails. Unarmed, each check is one relaxed load. The arming
 * functions are not part of the shared library's API: the version script
 * keeps them inside, and only the static library's tests reach them.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>

#include "internal.h"

/* Calls left before the injected failure; negative when disarmed. */
static _Atomic long countdown = -1;
static _Atomic long injected;

void wp__fault_arm(long n)
{
	atomic_store(&injected, 0);
	atomic_store(&countdown, n);
}

long wp__fault_injected(void)
{
	return atomic_load(&injected);
}

bool wp__fault(void)
{
	long n = atomic_load_explicit(&countdown, memory_order_relaxed);

	if (n < 0)
		return false;
	/* Exactly one caller takes the count from 0 to -1 and fails. */
	if (atomic_fetch_sub(&countdown, 1) != 0)
		return false;
	atomic_fetch_add(&injected, 1);
	return true;
}

void *wp__calloc(size_t n, size_t size)
{
	return wp__fault() ? NULL : calloc(n, size);
}

void *wp__aligned_alloc(size_t align, size_t size)
{
	return wp__fault() ? NULL : aligned_alloc(align, size);
}

int wp__eventfd(int flags)
{
	if (wp__fault()) {
		errno = EMFILE;
		return -1;
	}
	return eventfd(0, flags);
}

int wp__timerfd(int flags)
{
	if (wp__fault()) {
		errno = EMFILE;
		return -1;
	}
	return timerfd_create(CLOCK_MONOTONIC, flags);
}
