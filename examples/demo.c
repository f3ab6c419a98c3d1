/*
 * A tour of workerpool: ordered events on several handles, a handler
 * error seen by polling the handle's error descriptor, and a graceful
 * unregister that lets queued events finish.
 *
 * Build: cc -O2 demo.c $(pkg-config --cflags --libs workerpool) -o demo
 * (or `make demo` in the source tree).
 */
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "workerpool.h"

#define HANDLES 3
#define EVENTS 5

struct account {
	const char *name;
	long balance;
	long last;		/* the last event seen, to show the order */
};

/* Each event is a deposit; handlers for one handle never overlap. */
static int deposit(wp_ctx *ctx, void *event, void *arg)
{
	struct account *a = arg;
	long amount = (long)(intptr_t)event;

	(void)ctx;
	if (amount < 0)
		return -1000;	/* a handler's own error code */
	a->balance += amount;
	a->last = amount;
	return 0;
}

static void on_exit_cb(int err, void *arg)
{
	struct account *a = arg;

	printf("  %s exited: %s (%d)\n", a->name, wp_strerror(err), err);
}

static int check(int rc, const char *what)
{
	if (rc < 0) {
		fprintf(stderr, "%s: %s\n", what, wp_strerror(rc));
		exit(1);
	}
	return rc;
}

int main(void)
{
	struct account acct[HANDLES] = {
		{ "alice", 0, 0 }, { "bob", 0, 0 }, { "carol", 0, 0 },
	};
	wp_handle *h[HANDLES];
	struct pollfd pfd;
	const char *why;
	wp_pool *pool;
	int i, e;

	check(wp_pool_create(&pool, NULL), "wp_pool_create");
	check(wp_pool_start(pool), "wp_pool_start");
	printf("backend: %s\n", wp_pool_backend(pool) == WP_BACKEND_URING ?
	       "io_uring" : "epoll");
	if (wp_pool_backend_reason(pool, &why))
		printf("  (io_uring unavailable: %s)\n", why);

	for (i = 0; i < HANDLES; i++) {
		check(wp_pool_register(pool, deposit, &acct[i], &h[i]),
		      "wp_pool_register");
		check(wp_handle_on_exit(h[i], on_exit_cb, &acct[i]),
		      "wp_handle_on_exit");
	}

	printf("ordered events: deposits 1..%d on each account\n", EVENTS);
	for (e = 1; e <= EVENTS; e++)
		for (i = 0; i < HANDLES; i++)
			check(wp_handle_add_event(h[i], NULL,
						  (void *)(intptr_t)e),
			      "wp_handle_add_event");

	printf("a handler error: a negative deposit ends bob\n");
	check(wp_handle_add_event(h[1], NULL, (void *)(intptr_t)-5),
	      "wp_handle_add_event");
	pfd.fd = check(wp_handle_error_fd(h[1]), "wp_handle_error_fd");
	pfd.events = POLLIN;
	if (poll(&pfd, 1, 5000) != 1) {
		fprintf(stderr, "the error descriptor never became readable\n");
		return 1;
	}
	printf("  poll: bob's error fd is readable, error %d\n",
	       wp_handle_error(h[1]));
	printf("  adding to bob now: %s\n",
	       wp_strerror(wp_handle_add_event(h[1], NULL, (void *)1)));

	printf("graceful unregister: alice and carol finish their queue\n");
	for (i = 0; i < HANDLES; i += 2)
		check(wp_handle_unregister_graceful(h[i], NULL),
		      "wp_handle_unregister_graceful");

	for (i = 0; i < HANDLES; i++) {
		printf("%s: balance %ld, last deposit %ld\n", acct[i].name,
		       acct[i].balance, acct[i].last);
		wp_handle_free(h[i]);
	}
	wp_pool_destroy(pool);
	return 0;
}
