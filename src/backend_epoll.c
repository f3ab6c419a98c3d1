/* SPDX-License-Identifier: MIT */
/*
 * The epoll backend: each worker sleeps in epoll_wait on its own epoll
 * instance, which watches the worker's doorbell eventfd. Every wake-up is
 * a write to that eventfd.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

struct epoll_state {
	int epfd;
	bool have_pwait2;
};

static int epoll_init(struct wp__worker *w, const char **what)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct epoll_state *s;
	int rc;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->have_pwait2 = true;
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (s->epfd < 0) {
		rc = -errno;
		*what = "epoll_create1 failed";
		free(s);
		return rc;
	}

	ev.data.ptr = NULL;
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, w->doorbell, &ev) < 0) {
		rc = -errno;
		*what = "epoll_ctl on the doorbell failed";
		close(s->epfd);
		free(s);
		return rc;
	}
	w->be = s;
	return 0;
}

static int epoll_thread_init(struct wp__worker *w)
{
	(void)w;
	return 0;
}

static void epoll_fini(struct wp__worker *w)
{
	struct epoll_state *s = w->be;

	if (!s)
		return;
	close(s->epfd);
	free(s);
	w->be = NULL;
}

/* Waits with a nanosecond timeout where the kernel allows it. */
static int epoll_sleep(struct epoll_state *s, struct epoll_event *evs,
		       int max, uint64_t deadline_ns)
{
	struct timespec ts;
	uint64_t now, left;
	int n;

	if (!deadline_ns)
		return epoll_wait(s->epfd, evs, max, -1);

	now = wp__now_ns();
	left = deadline_ns > now ? deadline_ns - now : 0;
	if (s->have_pwait2) {
		ts.tv_sec = (time_t)(left / 1000000000u);
		ts.tv_nsec = (long)(left % 1000000000u);
		n = epoll_pwait2(s->epfd, evs, max, &ts, NULL);
		if (n >= 0 || errno != ENOSYS)
			return n;
		s->have_pwait2 = false;
	}
	/* Rounded up, so the wait never ends before the deadline. */
	return epoll_wait(s->epfd, evs, max, (int)((left + 999999) / 1000000));
}

static void epoll_wait_events(struct wp__worker *w, uint64_t deadline_ns)
{
	struct epoll_state *s = w->be;
	struct epoll_event evs[8];
	eventfd_t value;
	int i, n;

	n = epoll_sleep(s, evs, 8, deadline_ns);
	for (i = 0; i < n; i++)
		if (evs[i].data.ptr == NULL)
			eventfd_read(w->doorbell, &value);
}

static void epoll_wake(struct wp__worker *self, struct wp__worker *to)
{
	(void)self;
	eventfd_write(to->doorbell, 1);
}

static void epoll_flush(struct wp__worker *self)
{
	(void)self;
}

const struct wp__backend wp__backend_epoll = {
	.kind = WP_BACKEND_EPOLL,
	.init = epoll_init,
	.thread_init = epoll_thread_init,
	.fini = epoll_fini,
	.wait = epoll_wait_events,
	.wake = epoll_wake,
	.flush = epoll_flush,
};
