/* SPDX-License-Identifier: MIT */
/*
 * Containers: io_uring refused by a seccomp filter or by the sysctl
 * kernel.io_uring_disabled. A pool that leaves the backend to the library
 * then comes up on epoll, says why, and behaves as it always does; a pool
 * that insists on io_uring fails with the kernel's error.
 *
 * Each case runs in a child process, so that the filter, which cannot be
 * removed, dies with it. The child reports a broken expectation through
 * a pipe and exits non-zero; the test in the parent fails with its words.
 * The sysctl is global: the child sets it only around the creation of its
 * pools and restores it before it checks anything, and the parent checks
 * that it was restored and restores it otherwise.
 */
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "harness.h"

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#elif defined(__i386__)
#define NATIVE_ARCH AUDIT_ARCH_I386
#elif defined(__riscv) && __riscv_xlen == 64
#define NATIVE_ARCH AUDIT_ARCH_RISCV64
#endif

#define SYSCTL "/proc/sys/kernel/io_uring_disabled"
#define SMOKE_EVENTS 1000
#define FAIL_ON 3
#define FAIL_CODE 5

/* The errors a filter makes io_uring_setup return, one per loop index. */
static const int refusals[] = { ENOSYS, EPERM, EOPNOTSUPP };
static const char *const refusal_names[] = { "ENOSYS", "EPERM", "EOPNOTSUPP" };

/* ------------------------------------------------------------------ */
/* The child process                                                   */
/* ------------------------------------------------------------------ */

/* Where the child writes what went wrong. */
static int report_fd = -1;

__attribute__((noreturn, format(printf, 2, 3)))
static void child_fail(int line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int n;

	n = snprintf(msg, sizeof(msg), "line %d: ", line);
	va_start(ap, fmt);
	vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);
	if (write(report_fd, msg, strlen(msg)) < 0)
		_exit(2);
	_exit(1);
}

#define expect(cond)							\
	do {								\
		if (!(cond))						\
			child_fail(__LINE__, "%s", #cond);		\
	} while (0)

#define expect_eq(a, b)							\
	do {								\
		long a_ = (long)(a), b_ = (long)(b);			\
		if (a_ != b_)						\
			child_fail(__LINE__, "%s == %s (%ld != %ld)",	\
				   #a, #b, a_, b_);			\
	} while (0)

/*
 * Runs fn(arg) in a child and fails the test with the child's report if
 * it fails. The child ends with exit(), so that the leak checker of the
 * sanitizer build looks at it too.
 */
static void in_child(void (*fn)(int), int arg)
{
	char msg[512] = "";
	ssize_t n;
	int p[2], status;
	pid_t pid;

	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	fflush(NULL);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(p[0]);
		report_fd = p[1];
		fn(arg);
		exit(0);
	}
	close(p[1]);
	do
		n = read(p[0], msg, sizeof(msg) - 1);
	while (n < 0 && errno == EINTR);
	msg[n > 0 ? n : 0] = '\0';
	close(p[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "child (status 0x%x): %s", status, msg);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	expect(d != NULL);
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;
}

/* ------------------------------------------------------------------ */
/* The smoke suite, run on the pool that fell back                     */
/* ------------------------------------------------------------------ */

struct smoke {
	wp_handle *h;
	bool fail;		/* the handler fails on event FAIL_ON */
	long next;
	atomic_int ran;
	atomic_int misordered;
	atomic_int exits;
	atomic_int code;
};

static int smoke_event(wp_ctx *ctx, void *event, void *arg)
{
	struct smoke *s = arg;
	long seq = (long)(uintptr_t)event;

	(void)ctx;
	if (seq != s->next + 1)
		atomic_fetch_add(&s->misordered, 1);
	s->next = seq;
	atomic_fetch_add(&s->ran, 1);
	return s->fail && seq == FAIL_ON ? FAIL_CODE : 0;
}

static void smoke_exit(int err, void *arg)
{
	struct smoke *s = arg;

	atomic_store(&s->code, err);
	atomic_fetch_add(&s->exits, 1);
}

/* A handle with n events queued. */
static void smoke_open(wp_pool *pool, struct smoke *s, bool fail, int n)
{
	long k;

	memset(s, 0, sizeof(*s));
	s->fail = fail;
	expect_eq(wp_pool_register(pool, smoke_event, s, &s->h), 0);
	expect_eq(wp_handle_on_exit(s->h, smoke_exit, s), 0);
	for (k = 1; k <= n; k++)
		expect_eq(wp_handle_add_event(s->h, NULL, (void *)k), 0);
}

static void smoke_ordered(wp_pool *pool)
{
	struct smoke s;

	smoke_open(pool, &s, false, SMOKE_EVENTS);
	expect(wp_test_wait_atleast(&s.ran, SMOKE_EVENTS));
	expect_eq(atomic_load(&s.misordered), 0);
	expect_eq(wp_handle_error(s.h), 0);
	wp_handle_free(s.h);
	expect_eq(atomic_load(&s.exits), 1);
	expect_eq(atomic_load(&s.code), -ECANCELED);
}

static void smoke_error_fd(wp_pool *pool)
{
	struct smoke s;
	int fd;

	smoke_open(pool, &s, true, 0);
	fd = wp_handle_error_fd(s.h);
	expect(fd >= 0);
	expect(!wp_test_readable(fd, 0));
	for (long k = 1; k <= 2 * FAIL_ON; k++)
		wp_handle_add_event(s.h, NULL, (void *)k);
	expect(wp_test_readable(fd, WP_TEST_WAIT_MS));
	expect_eq(wp_handle_error(s.h), FAIL_CODE);
	expect(wp_test_wait_atleast(&s.exits, 1));
	expect_eq(atomic_load(&s.code), FAIL_CODE);
	expect_eq(atomic_load(&s.ran), FAIL_ON);
	expect_eq(wp_handle_add_event(s.h, NULL, NULL), -ECANCELED);
	wp_handle_free(s.h);
	expect_eq(atomic_load(&s.exits), 1);
}

static void smoke_unregister(wp_pool *pool)
{
	struct smoke s;

	smoke_open(pool, &s, false, SMOKE_EVENTS);
	wp_handle_unregister(s.h);
	expect(wp_handle_exited(s.h));
	expect_eq(wp_handle_error(s.h), -ECANCELED);
	expect_eq(atomic_load(&s.exits), 1);
	expect_eq(atomic_load(&s.code), -ECANCELED);
	expect(atomic_load(&s.ran) <= SMOKE_EVENTS);
	expect_eq(atomic_load(&s.misordered), 0);
	expect_eq(wp_handle_add_event(s.h, NULL, NULL), -ECANCELED);
	wp_handle_free(s.h);
}

static void smoke_graceful(wp_pool *pool)
{
	struct smoke s;

	smoke_open(pool, &s, false, SMOKE_EVENTS);
	expect_eq(wp_handle_unregister_graceful(s.h, NULL), 0);
	expect_eq(atomic_load(&s.ran), SMOKE_EVENTS);
	expect_eq(atomic_load(&s.misordered), 0);
	expect_eq(atomic_load(&s.exits), 1);
	expect_eq(atomic_load(&s.code), 0);
	expect_eq(wp_handle_error(s.h), 0);
	wp_handle_free(s.h);
}

/*
 * Checks the pools a child made while io_uring was refused with err: the
 * automatic one fell back to epoll and says why, and works; the forced
 * one failed with err. Destroys the automatic one.
 */
static void check_fallback(wp_pool *pool, int rc, wp_pool *forced,
			   int forced_rc, int err)
{
	const char *what = NULL;

	expect_eq(forced_rc, -err);
	expect(forced == NULL);
	expect_eq(rc, 0);
	expect_eq(wp_pool_backend(pool), WP_BACKEND_EPOLL);
	expect_eq(wp_pool_backend_reason(pool, &what), -err);
	expect(what != NULL && strstr(what, "io_uring") != NULL);

	expect_eq(wp_pool_start(pool), 0);
	smoke_ordered(pool);
	smoke_error_fd(pool);
	smoke_unregister(pool);
	smoke_graceful(pool);
	wp_pool_destroy(pool);
}

/* Creates the automatic pool and the one forced onto io_uring. */
static void create_both(wp_pool **pool, int *rc, wp_pool **forced,
			int *forced_rc)
{
	struct wp_pool_options opt;

	unsetenv("WP_BACKEND");
	wp_pool_options_init(&opt);
	opt.workers = 2;
	*pool = NULL;
	*rc = wp_pool_create(pool, &opt);
	opt.backend = WP_BACKEND_URING;
	*forced = NULL;
	*forced_rc = wp_pool_create(forced, &opt);
}

/* ------------------------------------------------------------------ */
/* A seccomp filter                                                    */
/* ------------------------------------------------------------------ */

#ifdef NATIVE_ARCH
/*
 * Makes io_uring_setup fail with err for this thread and the threads it
 * creates; every other system call, and every call of a foreign ABI, is
 * allowed.
 */
static int refuse_uring_setup(int err)
{
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO |
			 ((unsigned)err & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {
		.len = sizeof(code) / sizeof(code[0]),
		.filter = code,
	};

	/* Without privileges, a filter may only be installed this way. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return -errno;
	if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0)
		return 0;
	if (errno != ENOSYS)
		return -errno;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) ? -errno : 0;
}

static void child_filtered(int i)
{
	int err = refusals[i], fds, rc, forced_rc;
	wp_pool *pool, *forced;
	char params[120] = { 0 };

	expect_eq(refuse_uring_setup(err), 0);
	expect_eq(syscall(__NR_io_uring_setup, 4, params), -1);
	expect_eq(errno, err);

	fds = count_fds();
	create_both(&pool, &rc, &forced, &forced_rc);
	check_fallback(pool, rc, forced, forced_rc, err);
	expect_eq(count_fds(), fds);
}
#endif

START_TEST(seccomp_refusal_means_epoll_and_forced_uring_fails)
{
#ifdef NATIVE_ARCH
	printf("container: io_uring_setup refused with %s\n",
	       refusal_names[_i]);
	in_child(child_filtered, _i);
#else
	printf("skipped: no seccomp architecture known for this build\n");
#endif
}
END_TEST

/* ------------------------------------------------------------------ */
/* The sysctl                                                          */
/* ------------------------------------------------------------------ */

static int sysctl_read(void)
{
	char buf[16] = "";
	int fd = open(SYSCTL, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 ? atoi(buf) : -1;
}

static bool sysctl_write(int v)
{
	char buf[16];
	int fd = open(SYSCTL, O_WRONLY | O_CLOEXEC), n;
	bool ok;

	if (fd < 0)
		return false;
	n = snprintf(buf, sizeof(buf), "%d\n", v);
	ok = write(fd, buf, (size_t)n) == n;
	close(fd);
	return ok;
}

/* Sets the sysctl to 2 just for the creation of the pools. */
static void child_disabled(int old)
{
	int rc, forced_rc, fds = count_fds();
	wp_pool *pool, *forced;
	bool set, restored;

	set = sysctl_write(2);
	create_both(&pool, &rc, &forced, &forced_rc);
	restored = sysctl_write(old);

	expect(set);
	expect(restored);
	check_fallback(pool, rc, forced, forced_rc, EPERM);
	expect_eq(count_fds(), fds);
}

START_TEST(disabled_sysctl_means_epoll_and_forced_uring_fails)
{
	int old = sysctl_read(), now;

	if (geteuid() != 0 || old < 0 || !sysctl_write(old)) {
		printf("skipped: %s cannot be set here\n", SYSCTL);
		return;
	}
	printf("container: %s set to 2 while pools are created, then back "
	       "to %d\n", SYSCTL, old);
	in_child(child_disabled, old);
	now = sysctl_read();
	if (now != old)
		sysctl_write(old);
	ck_assert_int_eq(now, old);
}
END_TEST

static Suite *container_suite(void)
{
	Suite *s = suite_create("container");
	TCase *tc;

	/* The fallback is epoll by definition: the loop runs over errors. */
	tc = wp_test_tcase("seccomp");
	tcase_add_loop_test(tc,
			    seccomp_refusal_means_epoll_and_forced_uring_fails,
			    0, (int)(sizeof(refusals) / sizeof(refusals[0])));
	suite_add_tcase(s, tc);

	tc = wp_test_tcase("sysctl");
	tcase_add_test(tc,
		       disabled_sysctl_means_epoll_and_forced_uring_fails);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return wp_test_run(container_suite());
}
