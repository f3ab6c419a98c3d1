/* SPDX-License-Identifier: MIT */
/* The texts the library gives out: names for its codes, its version. */
#include <errno.h>
#include <string.h>

#include "workerpool.h"

const char *wp_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
	case -EINVAL:
		return "invalid argument";
	case -ENOMEM:
		return "out of memory";
	case -EAGAIN:
		return "queue full";
	case -ECANCELED:
		return "cancelled, or the handle has exited";
	case -ETIMEDOUT:
		return "deadline passed";
	case -EDEADLK:
		return "would wait on the calling worker itself";
	case -ESHUTDOWN:
		return "pool stopped";
	case -EALREADY:
		return "already started";
	}
	/* Other errnos by their system text; anything else is a handler's. */
	if (err < 0 && err > -4096 && strerrorname_np(-err))
		return strerror(-err);
	return "handler error";
}

const char *wp_version(void)
{
	return WP_VERSION_STRING;
}
