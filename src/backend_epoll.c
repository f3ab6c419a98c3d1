/* SPDX-License-Identifier: MIT */
/*
 * The epoll backend: each worker sleeps in epoll_wait on its own epoll
 * instance, which watches the worker's doorbell eventfd and a timerfd for
 * its next deadline. Every wake-up is a write to the doorbell.
 *
 * Both descriptors are watched edge-triggered, so that a wake-up costs one
 * system call, epoll_wait, and no read. Every eventfd write and every
 * timer expiry reports the descriptor again, whether or not its counter
 * was read: the doorbell's counter just grows (by one per wake-up, it
 * cannot reach its limit), and setting the timerfd again starts it over.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

struct epoll_state {
	int epfd;
	int tfd;
	uint64_t armed;		/* the timerfd's deadline; 0 when idle */
};

/* epoll data of the two descriptors. */
#define DATA_DOORBELL 1
#define DATA_TIMER 2

static int watch(int epfd, int fd, uint64_t data)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET,
				  .data.u64 = data };

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static void state_free(struct epoll_state *s)
{
	if (s->tfd >= 0)
		close(s->tfd);
	if (s->epfd >= 0)
		close(s->epfd);
	free(s);
}

static int epoll_init(struct wp__worker *w, const char **what)
{
	struct epoll_state *s;
	int rc = 0;

	s = wp__calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->tfd = -1;
	s->epfd = wp__fault() ? (errno = EMFILE, -1) :
		  epoll_create1(EPOLL_CLOEXEC);
	if (s->epfd >= 0)
		s->tfd = wp__timerfd(TFD_CLOEXEC | TFD_NONBLOCK);
	if (s->epfd < 0 || s->tfd < 0) {
		rc = -errno;
		*what = "epoll_create1 or timerfd_create failed";
	} else {
		rc = watch(s->epfd, w->doorbell, DATA_DOORBELL);
		if (!rc)
			rc = watch(s->epfd, s->tfd, DATA_TIMER);
		if (rc)
			*what = "epoll_ctl failed";
	}
	if (rc) {
		state_free(s);
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
	if (!w->be)
		return;
	state_free(w->be);
	w->be = NULL;
}

/*
 * Points the timerfd at an earlier deadline. A later one is left alone:
 * the early wake-up is harmless and saves a system call per sleep.
 */
static void arm_timer(struct epoll_state *s, uint64_t deadline_ns)
{
	struct itimerspec its = { 0 };

	if (!deadline_ns || (s->armed && s->armed <= deadline_ns))
		return;
	its.it_value.tv_sec = (time_t)(deadline_ns / 1000000000u);
	its.it_value.tv_nsec = (long)(deadline_ns % 1000000000u);
	if (timerfd_settime(s->tfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
		s->armed = deadline_ns;
}

static void epoll_wait_events(struct wp__worker *w, uint64_t deadline_ns)
{
	struct epoll_state *s = w->be;
	struct epoll_event evs[2];
	int i, n;

	arm_timer(s, deadline_ns);
	n = epoll_wait(s->epfd, evs, 2, -1);
	for (i = 0; i < n; i++) {
		/* Expired: the next deadline must set the timer again. */
		if (evs[i].data.u64 == DATA_TIMER)
			s->armed = 0;
	}
}

static void epoll_wake(struct wp__worker *self, struct wp__worker *to)
{
	(void)self;
	eventfd_write(to->doorbell, 1);
}

const struct wp__backend wp__backend_epoll = {
	.kind = WP_BACKEND_EPOLL,
	.init = epoll_init,
	.thread_init = epoll_thread_init,
	.fini = epoll_fini,
	.wait = epoll_wait_events,
	.wake = epoll_wake,
};
