/* SPDX-License-Identifier: MIT */
/*
 * The bounded multi-producer, single-consumer queue in front of each
 * worker. Producers reserve positions by compare-and-swap on the tail and
 * publish each slot with its sequence number; the worker reads slots in
 * position order and hands them back for the next lap. No lock, and no
 * allocation after init. The hot functions are inline: they run once per
 * event on both sides.
 */
#ifndef WP_QUEUE_H
#define WP_QUEUE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * One queued item. For an event, a is the handle, b the event and c the
 * context (0 for the pool's own). For a task, a is the function, b its
 * argument and c is WP__ITEM_TASK. Contexts are allocated, so bit 0 of a
 * context pointer is always clear. An item with a NULL is a hole left by
 * an add that changed its mind after reserving its place.
 */
struct wp__item {
	void *a;
	void *b;
	uintptr_t c;
};

#define WP__ITEM_TASK ((uintptr_t)1)

/*
 * Slot sequence numbers: a slot is free for position p at 2p and holds
 * the item of position p at 2p + 1. Doubling keeps the two apart even
 * when the capacity is 1.
 */
#define WP__SEQ_FREE(p) ((p) << 1)
#define WP__SEQ_FULL(p) (((p) << 1) | 1)

struct wp__slot {
	_Atomic uint64_t seq;
	struct wp__item item;
};

/*
 * Each side writes its own cache line, and the fields both read stay on a
 * line nobody writes after init, so no add or pop drags another thread's
 * line across.
 */
struct wp__queue {
	_Alignas(64) struct wp__slot *slots;
	uint64_t mask;
	/* Reserved by producers with compare-and-swap. */
	_Alignas(64) _Atomic uint64_t tail;
	/* Next position the worker reads; only the worker touches it. */
	_Alignas(64) uint64_t head;
	/* Every position below done has been run (or dropped). */
	_Atomic uint64_t done;
};

int wp__queue_init(struct wp__queue *q, unsigned capacity);
void wp__queue_fini(struct wp__queue *q);

/*
 * Reserves n consecutive positions and returns the first, or UINT64_MAX
 * when the queue lacks room for all n. The worker frees slots in position
 * order, so if the last of the n is free, all of them are. The successful
 * compare-and-swap is sequentially consistent: the state checks that
 * follow a reservation rely on it (see handle.c), and so does the look at
 * the worker's sleeping flag after it (see wp__worker_wake): a worker
 * about to sleep checks the tail, not just the next slot, so a position
 * reserved but not yet published keeps it awake.
 */
static inline uint64_t wp__queue_reserve(struct wp__queue *q, uint64_t n)
{
	uint64_t pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
	struct wp__slot *last;
	uint64_t seq;

	for (;;) {
		last = &q->slots[(pos + n - 1) & q->mask];
		/* Acquire: the worker's reads of the old item come first. */
		seq = atomic_load_explicit(&last->seq, memory_order_acquire);
		if (seq == WP__SEQ_FREE(pos + n - 1)) {
			if (atomic_compare_exchange_weak_explicit(&q->tail,
					&pos, pos + n, memory_order_seq_cst,
					memory_order_relaxed))
				return pos;
		} else if ((int64_t)(seq - WP__SEQ_FREE(pos + n - 1)) < 0) {
			return UINT64_MAX;
		} else {
			pos = atomic_load_explicit(&q->tail,
						   memory_order_relaxed);
		}
	}
}

/* Publishes the item of a reserved position. */
static inline void wp__queue_put(struct wp__queue *q, uint64_t pos,
				 const struct wp__item *it)
{
	struct wp__slot *s = &q->slots[pos & q->mask];

	s->item = *it;
	/* Release: the item is written before the worker can see it. */
	atomic_store_explicit(&s->seq, WP__SEQ_FULL(pos), memory_order_release);
}

/* Queues one item; false when the queue is full. */
static inline bool wp__queue_push(struct wp__queue *q,
				  const struct wp__item *it)
{
	uint64_t pos = wp__queue_reserve(q, 1);

	if (pos == UINT64_MAX)
		return false;
	wp__queue_put(q, pos, it);
	return true;
}

/* True when a producer could reserve a position now. */
static inline bool wp__queue_has_room(struct wp__queue *q)
{
	uint64_t pos = atomic_load(&q->tail);

	return atomic_load(&q->slots[pos & q->mask].seq) ==
	       WP__SEQ_FREE(pos);
}

/* The worker takes the next item, if it has been published. */
static inline bool wp__queue_pop(struct wp__queue *q, struct wp__item *it)
{
	struct wp__slot *s = &q->slots[q->head & q->mask];

	/* Acquire: pairs with the producer's publishing store. */
	if (atomic_load_explicit(&s->seq, memory_order_acquire) !=
	    WP__SEQ_FULL(q->head))
		return false;

	*it = s->item;
	/* Release: the item is read before a producer may reuse the slot. */
	atomic_store_explicit(&s->seq, WP__SEQ_FREE(q->head + q->mask + 1),
			      memory_order_release);
	q->head++;
	return true;
}

/* True when the next item is published. */
static inline bool wp__queue_ready(const struct wp__queue *q)
{
	const struct wp__slot *s = &q->slots[q->head & q->mask];

	return atomic_load_explicit(&s->seq, memory_order_acquire) ==
	       WP__SEQ_FULL(q->head);
}

/*
 * True when a producer holds a position the worker has not read, even if
 * its item is not published yet. Sequentially consistent: it pairs with
 * the reservation's compare-and-swap.
 */
static inline bool wp__queue_reserved(const struct wp__queue *q)
{
	return atomic_load(&q->tail) != q->head;
}

#endif
