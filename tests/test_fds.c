/* SPDX-License-Identifier: MIT */
/*
 * Descriptors: running out of them, and not handing them to programs the
 * process executes.
 *
 * With RLIMIT_NOFILE lowered until no descriptor can be made, the calls
 * that need one fail with -EMFILE and the rest of the library keeps
 * working. Every descriptor the library makes is close-on-exec, so a
 * program executed after a pool has run sees none of them; the test
 * binary itself, started as "test_fds --list-fds", is that program.
 */
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "harness.h"

#define MAX_FD 4096
#define LIST_FDS "--list-fds"

/* ------------------------------------------------------------------ */
/* Running out                                                         */
/* ------------------------------------------------------------------ */

/*
 * Uses up every descriptor: lowers the soft limit to just above the
 * highest one open, then fills the gaps below it. The descriptors a test
 * gives back are taken before the limit is lowered, so there are some
 * even when nothing below the highest one is free.
 */
#define EXHAUST_SPARE 2

struct exhaust {
	struct rlimit old;
	int base;		/* what the others duplicate */
	int fds[MAX_FD];
	int n;
};

static int highest_fd(void)
{
	int fd, top = -1;

	for (fd = 0; fd < MAX_FD; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			top = fd;
	return top;
}

static void exhaust_start(struct exhaust *e)
{
	struct rlimit low;
	int fd;

	e->base = open("/dev/null", O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(e->base, 0);
	for (e->n = 0; e->n < EXHAUST_SPARE; e->n++) {
		e->fds[e->n] = fcntl(e->base, F_DUPFD_CLOEXEC, 0);
		ck_assert_int_ge(e->fds[e->n], 0);
	}
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &e->old), 0);
	low = e->old;
	low.rlim_cur = (rlim_t)highest_fd() + 1;
	/* An inherited descriptor may sit above the hard limit. */
	if (low.rlim_max != RLIM_INFINITY && low.rlim_cur > low.rlim_max)
		low.rlim_cur = low.rlim_max;
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);

	while ((fd = fcntl(e->base, F_DUPFD_CLOEXEC, 0)) >= 0) {
		ck_assert_int_lt(e->n, MAX_FD);
		e->fds[e->n++] = fd;
	}
	ck_assert_int_eq(errno, EMFILE);
}

/* Gives one descriptor back. */
static void exhaust_release_one(struct exhaust *e)
{
	ck_assert_int_gt(e->n, 0);
	close(e->fds[--e->n]);
}

static void exhaust_end(struct exhaust *e)
{
	while (e->n)
		close(e->fds[--e->n]);
	close(e->base);
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &e->old), 0);
}

struct tally {
	atomic_int ran;
	atomic_int exits;
	atomic_int code;
};

static int tally_event(wp_ctx *ctx, void *event, void *arg)
{
	struct tally *t = arg;

	(void)ctx;
	atomic_fetch_add(&t->ran, 1);
	return event ? 9 : 0;
}

static void tally_exit(int err, void *arg)
{
	struct tally *t = arg;

	atomic_store(&t->code, err);
	atomic_fetch_add(&t->exits, 1);
}

START_TEST(fd_calls_fail_with_emfile_and_the_handle_keeps_working)
{
	int fds = wp_test_count_fds(), fd;
	wp_pool *pool = wp_test_pool(_i, 2);
	struct tally t = { 0 };
	struct exhaust e;
	wp_handle *h;
	wp_ctx *ctx;
	int k;

	ck_assert_int_eq(wp_pool_register(pool, tally_event, &t, &h), 0);
	ck_assert_int_eq(wp_handle_on_exit(h, tally_exit, &t), 0);
	ck_assert_int_eq(wp_ctx_create(&ctx, NULL), 0);

	exhaust_start(&e);
	ck_assert_int_eq(wp_handle_error_fd(h), -EMFILE);
	ck_assert_int_eq(wp_ctx_fd(ctx), -EMFILE);

	/* Events, with and without the context, still run. */
	for (k = 0; k < 100; k++)
		ck_assert_int_eq(wp_handle_add_event(h, k % 2 ? ctx : NULL,
						     NULL), 0);
	ck_assert(wp_test_wait_atleast(&t.ran, 100));
	ck_assert_int_eq(wp_handle_error(h), 0);

	/* The exit is still seen, without a descriptor. */
	ck_assert_int_eq(wp_handle_add_event(h, NULL, &t), 0);
	ck_assert(wp_test_wait_atleast(&t.exits, 1));
	ck_assert_int_eq(wp_handle_error(h), 9);
	ck_assert(wp_handle_exited(h));
	wp_ctx_cancel(ctx);
	ck_assert_int_eq(wp_ctx_err(ctx), -ECANCELED);

	/* Once a descriptor frees, each is made and fires at once. */
	exhaust_release_one(&e);
	fd = wp_handle_error_fd(h);
	ck_assert_int_ge(fd, 0);
	ck_assert(wp_test_readable(fd, 0));
	exhaust_release_one(&e);
	fd = wp_ctx_fd(ctx);
	ck_assert_int_ge(fd, 0);
	ck_assert(wp_test_readable(fd, WP_TEST_WAIT_MS));
	exhaust_end(&e);

	wp_pool_destroy(pool);
	wp_ctx_release(ctx);
	ck_assert_int_eq(atomic_load(&t.ran), 101);
	ck_assert_int_eq(atomic_load(&t.exits), 1);
	ck_assert_int_eq(atomic_load(&t.code), 9);
	ck_assert_int_eq(wp_test_count_fds(), fds);
}
END_TEST

START_TEST(graceful_unregister_needs_no_descriptor)
{
	int fds = wp_test_count_fds();
	wp_pool *pool = wp_test_pool(_i, 2);
	struct tally t = { 0 };
	struct exhaust e;
	wp_handle *h;
	int k;

	exhaust_start(&e);
	ck_assert_int_eq(wp_pool_register(pool, tally_event, &t, &h), 0);
	ck_assert_int_eq(wp_handle_on_exit(h, tally_exit, &t), 0);
	for (k = 0; k < 50; k++)
		ck_assert_int_eq(wp_handle_add_event(h, NULL, NULL), 0);
	ck_assert_int_eq(wp_handle_unregister_graceful(h, NULL), 0);
	ck_assert_int_eq(atomic_load(&t.ran), 50);
	ck_assert_int_eq(atomic_load(&t.exits), 1);
	ck_assert_int_eq(wp_handle_error_fd(h), -EMFILE);
	wp_handle_free(h);
	exhaust_end(&e);

	wp_pool_destroy(pool);
	ck_assert_int_eq(atomic_load(&t.code), 0);
	ck_assert_int_eq(wp_test_count_fds(), fds);
}
END_TEST

START_TEST(pool_create_fails_with_emfile_and_leaves_nothing_open)
{
	int fds = wp_test_count_fds(), rc;
	struct wp_pool_options opt;
	wp_pool *pool = NULL;
	struct exhaust e;

	wp_pool_options_init(&opt);
	opt.backend = wp_test_backend(_i);
	opt.workers = 2;
	exhaust_start(&e);
	rc = wp_pool_create(&pool, &opt);
	exhaust_end(&e);

	ck_assert_int_eq(rc, -EMFILE);
	ck_assert_ptr_null(pool);
	ck_assert_int_eq(wp_test_count_fds(), fds);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Close-on-exec                                                       */
/* ------------------------------------------------------------------ */

/*
 * The descriptors open now, as /proc/self/fd lists them, and what each
 * refers to (cut to the array's size). The listing mode uses it too,
 * outside any test, so it reports failure instead of asserting.
 */
#define FDSET_MAX 1024

struct fdset {
	int n;
	int fd[FDSET_MAX];
	char target[FDSET_MAX][128];
};

static bool fdset_read(struct fdset *s)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	char path[300];
	ssize_t n;

	if (!d)
		return false;
	s->n = 0;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d))
			continue;
		if (s->n == FDSET_MAX)
			break;
		s->fd[s->n] = atoi(e->d_name);
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		n = readlink(path, s->target[s->n],
			     sizeof(s->target[s->n]) - 1);
		s->target[s->n][n > 0 ? n : 0] = '\0';
		s->n++;
	}
	closedir(d);
	return e == NULL;
}

/* What descriptor fd referred to when the set was read, or NULL. */
static const char *fdset_find(const struct fdset *s, int fd)
{
	int k;

	for (k = 0; k < s->n; k++)
		if (s->fd[k] == fd)
			return s->target[k];
	return NULL;
}

/*
 * Executes this binary in its listing mode with the pipe as its output,
 * and reads what it reports: one "fd target" line per descriptor.
 */
static void exec_and_list(char *out, size_t size)
{
	char *const argv[] = { "test_fds", LIST_FDS, NULL };
	size_t len = 0;
	ssize_t got;
	int p[2], status;
	pid_t pid;

	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		/* dup2() clears close-on-exec on the copy. */
		if (dup2(p[1], STDOUT_FILENO) < 0)
			_exit(126);
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	close(p[1]);
	while (len + 1 < size &&
	       (got = read(p[0], out + len, size - len - 1)) != 0) {
		if (got < 0 && errno == EINTR)
			continue;
		ck_assert_int_gt(got, 0);
		len += (size_t)got;
	}
	out[len] = '\0';
	close(p[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "the executed lister failed: status 0x%x", status);
}

static int tick(wp_ctx *ctx, void *arg)
{
	(void)ctx;
	(void)arg;
	return 0;
}

START_TEST(no_library_descriptor_survives_exec)
{
	static struct fdset before, during;
	static char listing[65536];
	wp_handle *h[4];
	struct tally t = { 0 };
	wp_pool *pool;
	wp_ctx *ctx;
	char *line, *save, *target;
	const char *was;
	int k, fd, made = 0;

	ck_assert(fdset_read(&before));
	pool = wp_test_pool(_i, 2);
	ck_assert_int_eq(wp_ctx_with_timeout(&ctx, NULL, 60000000000ull), 0);
	ck_assert_int_ge(wp_ctx_fd(ctx), 0);
	for (k = 0; k < 4; k++) {
		ck_assert_int_eq(wp_pool_register(pool, tally_event, &t,
						  &h[k]), 0);
		ck_assert_int_ge(wp_handle_error_fd(h[k]), 0);
		ck_assert_int_eq(wp_handle_set_timer(h[k], ctx, 1000000, tick,
						     NULL), 0);
		ck_assert_int_eq(wp_handle_add_event(h[k], ctx, NULL), 0);
	}
	ck_assert(wp_test_wait_atleast(&t.ran, 4));

	/* Every descriptor the pool made is marked close-on-exec. */
	ck_assert(fdset_read(&during));
	for (k = 0; k < during.n; k++) {
		fd = during.fd[k];
		if (fdset_find(&before, fd))
			continue;
		made++;
		ck_assert_msg(fcntl(fd, F_GETFD) & FD_CLOEXEC,
			      "descriptor %d is not close-on-exec", fd);
	}
	ck_assert_int_ge(made, 5);

	/*
	 * The executed program has only what was open before the pool, each
	 * still referring to what it did then; the process may well have
	 * inherited descriptors of its own, eventfds among them.
	 */
	exec_and_list(listing, sizeof(listing));
	for (line = strtok_r(listing, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		k = -1;
		ck_assert_int_eq(sscanf(line, "%d %n", &fd, &k), 1);
		ck_assert_int_gt(k, 0);
		target = line + k;
		if (fd == STDOUT_FILENO)
			continue;	/* the pipe the listing comes through */
		was = fdset_find(&before, fd);
		ck_assert_msg(was != NULL, "descriptor %d (%s) survived exec",
			      fd, target);
		ck_assert_msg(strncmp(target, was, strlen(was)) == 0,
			      "descriptor %d is %s after exec, was %s", fd,
			      target, was);
	}

	wp_pool_destroy(pool);
	wp_ctx_release(ctx);
}
END_TEST

/* The listing mode: prints each open descriptor and what it refers to. */
static int list_fds(void)
{
	static struct fdset s;
	int k;

	if (!fdset_read(&s))
		return 1;
	for (k = 0; k < s.n; k++)
		printf("%d %s\n", s.fd[k], s.target[k][0] ? s.target[k] : "?");
	return 0;
}

static Suite *fds_suite(void)
{
	Suite *s = suite_create("fds");
	TCase *tc;

	tc = wp_test_tcase("emfile");
	wp_test_add(tc,
		    fd_calls_fail_with_emfile_and_the_handle_keeps_working);
	wp_test_add(tc, graceful_unregister_needs_no_descriptor);
	wp_test_add(tc, pool_create_fails_with_emfile_and_leaves_nothing_open);
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("exec");
	wp_test_add(tc, no_library_descriptor_survives_exec);
	suite_add_tcase(s, tc);
	return s;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], LIST_FDS) == 0)
		return list_fds();
	return wp_test_run(fds_suite());
}
