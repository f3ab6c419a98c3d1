/*
 * workerpool inside another event loop: the main thread sleeps in its own
 * epoll_wait, watching each handle's error descriptor and a context's
 * descriptor, while the pool's workers run periodic timers. One handle
 * fails after a few ticks; the loop sees it exit, and ends when the
 * context's deadline passes.
 *
 * Build: cc -O2 event_loop.c $(pkg-config --cflags --libs workerpool) \
 *            -o event_loop   (or `make examples` in the source tree)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>

#include "workerpool.h"

#define SENSORS 3
#define MS 1000000ull

struct sensor {
	const char *name;
	int ticks;
	int fail_after;		/* 0: never */
	wp_handle *h;
};

/* Runs on the sensor's worker, never two at a time for one sensor. */
static int sample(wp_ctx *ctx, void *arg)
{
	struct sensor *s = arg;

	(void)ctx;
	s->ticks++;
	if (s->fail_after && s->ticks == s->fail_after)
		return -42;	/* this sensor's own error code */
	return 0;
}

static int no_events(wp_ctx *ctx, void *event, void *arg)
{
	(void)ctx;
	(void)event;
	(void)arg;
	return 0;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "%s: %s\n", what, wp_strerror(rc));
	exit(1);
}

static void watch(int ep, int fd, void *what)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = what };

	if (fd < 0)
		die("descriptor", fd);
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		perror("epoll_ctl");
		exit(1);
	}
}

int main(void)
{
	struct sensor sensors[SENSORS] = {
		{ "thermo", 0, 0, NULL },
		{ "baro", 0, 5, NULL },
		{ "hygro", 0, 0, NULL },
	};
	struct epoll_event ev;
	wp_pool *pool;
	wp_ctx *run;
	int ep, i, rc;

	if ((rc = wp_pool_create(&pool, NULL)) || (rc = wp_pool_start(pool)))
		die("pool", rc);
	if ((rc = wp_ctx_with_timeout(&run, NULL, 300 * MS)))
		die("context", rc);

	ep = epoll_create1(EPOLL_CLOEXEC);
	watch(ep, wp_ctx_fd(run), NULL);
	for (i = 0; i < SENSORS; i++) {
		struct sensor *s = &sensors[i];

		if ((rc = wp_pool_register(pool, no_events, s, &s->h)))
			die("register", rc);
		if ((rc = wp_handle_set_timer(s->h, NULL, 20 * MS, sample, s)))
			die("timer", rc);
		watch(ep, wp_handle_error_fd(s->h), s);
	}

	/* One loop for everything: exits and the deadline. */
	for (;;) {
		if (epoll_wait(ep, &ev, 1, -1) != 1)
			continue;
		if (!ev.data.ptr)
			break;	/* the context's deadline passed */
		struct sensor *s = ev.data.ptr;
		/* Reading the exit code orders the worker's writes first. */
		int err = wp_handle_error(s->h);

		printf("%s exited with %d after %d ticks\n", s->name, err,
		       s->ticks);
		epoll_ctl(ep, EPOLL_CTL_DEL, wp_handle_error_fd(s->h), NULL);
	}

	printf("deadline: %s\n", wp_strerror(wp_ctx_err(run)));
	for (i = 0; i < SENSORS; i++) {
		wp_handle_unregister(sensors[i].h);
		printf("%s: %d ticks, exit %d\n", sensors[i].name,
		       sensors[i].ticks, wp_handle_error(sensors[i].h));
		wp_handle_free(sensors[i].h);
	}
	wp_ctx_release(run);
	wp_pool_destroy(pool);
	return 0;
}
