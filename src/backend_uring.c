/* SPDX-License-Identifier: MIT */
/*
 * The io_uring backend: each worker sleeps in io_uring_enter on its own
 * ring, where a read of the worker's doorbell eventfd is always pending.
 * Threads outside the pool wake a worker by writing the doorbell; workers
 * wake each other with IORING_OP_MSG_RING from their own ring, submitted
 * at once, when the kernel supports it.
 */
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#define RING_ENTRIES 64

/* io_uring_register() opcode for MSG_RING without a ring (Linux 6.13). */
#define REGISTER_SEND_MSG_RING 31

/*
 * How threads outside the pool wake a sleeping worker: a MSG_RING sent
 * without a ring of one's own, straight into the worker's completion
 * queue, where the kernel allows it (measured faster, see README), else
 * an eventfd write that completes the ring's pending read. The
 * environment variable WP_URING_WAKE=eventfd forces the latter, for
 * comparison.
 */
enum { WAKE_UNKNOWN, WAKE_EVENTFD, WAKE_MSG_RING };
static _Atomic int outside_wake = WAKE_UNKNOWN;

/* user_data of the completions a worker's ring can deliver. */
enum {
	TAG_DOORBELL = 1,	/* the doorbell read completed */
	TAG_WAKE = 2,		/* another worker's MSG_RING arrived */
	TAG_MSG_SENT = 3,	/* our own MSG_RING failed */
	TAG_TIMEOUT = 4,	/* the deadline timeout expired or went */
	TAG_TIMEOUT_MOVE = 5,	/* moving the timeout failed */
};

struct uring_state {
	struct io_uring ring;
	uint64_t bell;		/* the doorbell read's buffer */
	bool bell_armed;
	bool enable;		/* created disabled: enable on the worker */
	bool msg_ring;		/* IORING_OP_MSG_RING is supported */
	uint64_t armed;		/* the pending timeout's deadline, or 0 */
	bool no_move;		/* the kernel cannot update a timeout */
	struct __kernel_timespec ts;
};

static const char *setup_reason(int rc)
{
	switch (rc) {
	case -ENOSYS:
		return "io_uring_setup: ENOSYS (not in this kernel, or "
		       "blocked by a seccomp filter)";
	case -EPERM:
		return "io_uring_setup: EPERM (kernel.io_uring_disabled, or "
		       "a seccomp filter)";
	case -ENOMEM:
		return "io_uring_setup: ENOMEM (locked-memory limit)";
	case -EOPNOTSUPP:
		return "io_uring_setup: EOPNOTSUPP";
	case -EMFILE:
	case -ENFILE:
		return "io_uring_setup: out of file descriptors";
	default:
		return "io_uring_setup failed";
	}
}

/*
 * Creates the ring disabled so that the worker thread, which enables it,
 * becomes its single issuer. Kernels without those flags get a plain one.
 */
static int ring_create(struct uring_state *s)
{
	struct io_uring_params p = { 0 };
	int rc;

	if (wp__fault())
		return -ENOMEM;
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN |
		  IORING_SETUP_R_DISABLED;
	rc = io_uring_queue_init_params(RING_ENTRIES, &s->ring, &p);
	if (rc == -EINVAL) {
		memset(&p, 0, sizeof(p));
		rc = io_uring_queue_init_params(RING_ENTRIES, &s->ring, &p);
		return rc;
	}
	s->enable = rc == 0;
	return rc;
}

static bool probe_msg_ring(struct io_uring *ring)
{
	struct io_uring_probe *probe = io_uring_get_probe_ring(ring);
	bool ok;

	if (!probe)
		return false;
	ok = io_uring_opcode_supported(probe, IORING_OP_MSG_RING);
	io_uring_free_probe(probe);
	return ok;
}

static int uring_init(struct wp__worker *w, const char **what)
{
	struct uring_state *s;
	int rc;

	s = wp__calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	rc = ring_create(s);
	if (rc) {
		*what = setup_reason(rc);
		free(s);
		return rc;
	}
	s->msg_ring = probe_msg_ring(&s->ring);
	w->be = s;
	return 0;
}

/*
 * Enables a ring made with IORING_SETUP_R_DISABLED. liburing 2.3 declares
 * io_uring_enable_rings() but does not export it, so the registration is
 * made directly.
 */
static int uring_thread_init(struct wp__worker *w)
{
	struct uring_state *s = w->be;

	if (!s->enable)
		return 0;
	if (syscall(__NR_io_uring_register, s->ring.ring_fd,
		    IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0)
		return -errno;
	return 0;
}

static void uring_fini(struct wp__worker *w)
{
	struct uring_state *s = w->be;

	if (!s)
		return;
	io_uring_queue_exit(&s->ring);
	free(s);
	w->be = NULL;
}

static struct io_uring_sqe *get_sqe(struct uring_state *s)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);

	if (!sqe) {
		io_uring_submit(&s->ring);
		sqe = io_uring_get_sqe(&s->ring);
	}
	return sqe;
}

static void arm_doorbell(struct wp__worker *w, struct uring_state *s)
{
	struct io_uring_sqe *sqe;

	if (s->bell_armed)
		return;
	sqe = get_sqe(s);
	if (!sqe)
		return;
	io_uring_prep_read(sqe, w->doorbell, &s->bell, sizeof(s->bell), 0);
	io_uring_sqe_set_data64(sqe, TAG_DOORBELL);
	s->bell_armed = true;
}

/*
 * Points the ring's IORING_OP_TIMEOUT at an earlier deadline. A later one
 * is left alone: the early wake-up is harmless and costs less than moving
 * the timeout on every sleep.
 */
static void arm_timeout(struct uring_state *s, uint64_t deadline_ns)
{
	struct io_uring_sqe *sqe;

	if (!deadline_ns || (s->armed && s->armed <= deadline_ns))
		return;
	sqe = get_sqe(s);
	if (!sqe)
		return;

	/* The kernel copies the time when the entry is submitted. */
	s->ts.tv_sec = (long long)(deadline_ns / 1000000000u);
	s->ts.tv_nsec = (long long)(deadline_ns % 1000000000u);
	if (s->armed && !s->no_move) {
		io_uring_prep_timeout_update(sqe, &s->ts, TAG_TIMEOUT,
					     IORING_TIMEOUT_ABS);
		io_uring_sqe_set_data64(sqe, TAG_TIMEOUT_MOVE);
		sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	} else {
		/* Without updates, an older timeout just fires early. */
		io_uring_prep_timeout(sqe, &s->ts, 0, IORING_TIMEOUT_ABS);
		io_uring_sqe_set_data64(sqe, TAG_TIMEOUT);
	}
	s->armed = deadline_ns;
}

static void reap(struct uring_state *s)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe(&s->ring, head, cqe) {
		switch (io_uring_cqe_get_data64(cqe)) {
		case TAG_DOORBELL:
			s->bell_armed = false;
			break;
		case TAG_TIMEOUT:
			s->armed = 0;
			break;
		case TAG_TIMEOUT_MOVE:
			if (cqe->res == -EINVAL)
				s->no_move = true;
			s->armed = 0;
			break;
		}
		n++;
	}
	io_uring_cq_advance(&s->ring, n);
}

static void uring_wait(struct wp__worker *w, uint64_t deadline_ns)
{
	struct uring_state *s = w->be;

	arm_doorbell(w, s);
	arm_timeout(s, deadline_ns);
	io_uring_submit_and_wait(&s->ring, 1);
	reap(s);
}

static int wake_mode(void)
{
	int mode = atomic_load_explicit(&outside_wake, memory_order_relaxed);
	const char *env;

	if (mode != WAKE_UNKNOWN)
		return mode;
	env = getenv("WP_URING_WAKE");
	mode = env && !strcmp(env, "eventfd") ? WAKE_EVENTFD : WAKE_MSG_RING;
	atomic_store_explicit(&outside_wake, mode, memory_order_relaxed);
	return mode;
}

/*
 * Posts a wake-up completion to the worker's ring with no ring of our
 * own. Returns false where the kernel cannot, which then stays so.
 */
static bool wake_blind(struct uring_state *t)
{
	struct io_uring_sqe sqe;

	memset(&sqe, 0, sizeof(sqe));
	io_uring_prep_msg_ring(&sqe, t->ring.ring_fd, 0, TAG_WAKE, 0);
	if (syscall(__NR_io_uring_register, -1, REGISTER_SEND_MSG_RING,
		    &sqe, 1) >= 0)
		return true;
	if (errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS)
		atomic_store(&outside_wake, WAKE_EVENTFD);
	return false;
}

static void uring_wake(struct wp__worker *self, struct wp__worker *to)
{
	struct uring_state *s = self ? self->be : NULL;
	struct uring_state *t = to->be;
	struct io_uring_sqe *sqe;

	/* Only the ring's own thread may submit on it. */
	if (!s || !s->msg_ring ||
	    !pthread_equal(self->thread, pthread_self())) {
		if (wake_mode() != WAKE_MSG_RING || !wake_blind(t))
			eventfd_write(to->doorbell, 1);
		return;
	}

	sqe = get_sqe(s);
	if (!sqe) {
		eventfd_write(to->doorbell, 1);
		return;
	}
	io_uring_prep_msg_ring(sqe, t->ring.ring_fd, 0, TAG_WAKE, 0);
	io_uring_sqe_set_data64(sqe, TAG_MSG_SENT);
	/* Success needs no completion on the sender's ring. */
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	/*
	 * Sent now, not with the next sleep: the caller may be a callback
	 * that goes on running, or that blocks until the woken worker has
	 * done something.
	 */
	io_uring_submit(&s->ring);
}

const struct wp__backend wp__backend_uring = {
	.kind = WP_BACKEND_URING,
	.init = uring_init,
	.thread_init = uring_thread_init,
	.fini = uring_fini,
	.wait = uring_wait,
	.wake = uring_wake,
};
