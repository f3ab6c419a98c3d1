/* SPDX-License-Identifier: MIT */
/*
 * The bounded multi-producer, single-consumer queue in front of each
 * worker. Producers reserve positions by compare-and-swap on the tail and
 * publish each slot by marking it full for its position; the worker reads
 * slots in position order and marks each free for the next lap. No lock,
 * and no
 * allocation after init. The hot functions are inline: they run once
 * per event on both sides.
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
 * A slot is 16 bytes, four to a cache line, since moving lines from the
 * producer's CPU to the worker's is most of what a stream of events
 * costs. Its tag word carries the item's first pointer with three flags
 * in the low bits, which the pointers it holds (handles) leave clear:
 *
 *   WP__TAG_LAP	the lap of the position the tag speaks of, that is
 *			bit `shift` of the position: no slot is more than
 *			one lap behind another, so one bit tells them apart
 *   WP__TAG_FULL	the slot holds the item of that position; clear,
 *			the slot is free for that position
 *   WP__TAG_EXTRA	the item's third word is in the queue's extra array:
 *			a context (pointer set) or a task's function (pointer
 *			clear; b is its argument)
 *
 * A full tag whose pointer is NULL and without EXTRA is a hole.
 */
#define WP__TAG_LAP ((uintptr_t)1)
#define WP__TAG_FULL ((uintptr_t)2)
#define WP__TAG_EXTRA ((uintptr_t)4)
#define WP__TAG_FLAGS ((uintptr_t)7)

struct wp__slot {
	_Atomic uintptr_t tag;
	void *b;
};

/*
 * Each side writes its own cache line, and the fields both read stay on a
 * line nobody writes after init, so no add or pop drags another thread's
 * line across.
 */
struct wp__queue {
	_Alignas(64) struct wp__slot *slots;
	uintptr_t *extra;		/* one word per slot, rarely used */
	uint64_t mask;
	unsigned shift;			/* the capacity is 1 << shift */
	/* Reserved by producers with compare-and-swap. */
	_Alignas(64) _Atomic uint64_t tail;
	/* Next position the worker reads; only the worker touches it. */
	_Alignas(64) uint64_t head;
	/* Every position below done has been run (or dropped). */
	_Atomic uint64_t done;
};

int wp__queue_init(struct wp__queue *q, unsigned capacity);
void wp__queue_fini(struct wp__queue *q);

/* The lap flag of position pos. */
static inline uintptr_t wp__queue_lap(const struct wp__queue *q,
				      uint64_t pos)
{
	return (pos >> q->shift) & WP__TAG_LAP;
}

/*
 * Reserves n consecutive positions and returns the first, or UINT64_MAX
 * when the queue lacks room for all n. The worker frees slots in position
 * order, so if the last of the n is free, all of them are. A slot that is
 * not free means a full queue only if the tail has not moved meanwhile:
 * otherwise pos was stale and the lap flag could have misled.
 *
 * The successful compare-and-swap is sequentially consistent: the state
 * checks that follow a reservation rely on it (see handle.c), and so does
 * the look at the worker's sleeping flag after it (see wp__worker_wake):
 * a worker about to sleep checks the tail, not just the next slot, so a
 * position reserved but not yet published keeps it awake.
 */
static inline uint64_t wp__queue_reserve(struct wp__queue *q, uint64_t n)
{
	uint64_t pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
	uint64_t last, now;
	uintptr_t tag;

	for (;;) {
		last = pos + n - 1;
		/* Acquire: the worker's reads of the old item come first. */
		tag = atomic_load_explicit(&q->slots[last & q->mask].tag,
					   memory_order_acquire);
		if (tag == wp__queue_lap(q, last)) {
			if (atomic_compare_exchange_weak_explicit(&q->tail,
					&pos, pos + n, memory_order_seq_cst,
					memory_order_relaxed))
				return pos;
			continue;
		}
		/* Acquire: a tail that moved is read anew, not an old one. */
		now = atomic_load_explicit(&q->tail, memory_order_acquire);
		if (now == pos)
			return UINT64_MAX;
		pos = now;
	}
}

/* Publishes the item of a reserved position. */
static inline void wp__queue_put(struct wp__queue *q, uint64_t pos,
				 const struct wp__item *it)
{
	struct wp__slot *s = &q->slots[pos & q->mask];
	uintptr_t tag = WP__TAG_FULL | wp__queue_lap(q, pos);

	if (it->c == WP__ITEM_TASK) {
		q->extra[pos & q->mask] = (uintptr_t)it->a;
		tag |= WP__TAG_EXTRA;
	} else {
		tag |= (uintptr_t)it->a;
		if (it->c) {
			q->extra[pos & q->mask] = it->c;
			tag |= WP__TAG_EXTRA;
		}
	}
	s->b = it->b;
	/* Release: the item is written before the worker can see it. */
	atomic_store_explicit(&s->tag, tag, memory_order_release);
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

	return atomic_load(&q->slots[pos & q->mask].tag) ==
	       wp__queue_lap(q, pos);
}

/* True when the next item is published. */
static inline bool wp__queue_ready(const struct wp__queue *q)
{
	const struct wp__slot *s = &q->slots[q->head & q->mask];

	/* Acquire: pairs with the producer's publishing store. */
	return (atomic_load_explicit(&s->tag, memory_order_acquire) &
		(WP__TAG_FULL | WP__TAG_LAP)) ==
	       (WP__TAG_FULL | wp__queue_lap(q, q->head));
}

/* The worker takes the next item, if it has been published. */
static inline bool wp__queue_pop(struct wp__queue *q, struct wp__item *it)
{
	struct wp__slot *s = &q->slots[q->head & q->mask];
	uintptr_t lap = wp__queue_lap(q, q->head);
	uintptr_t tag, x;

	/* Acquire: pairs with the producer's publishing store. */
	tag = atomic_load_explicit(&s->tag, memory_order_acquire);
	if ((tag & (WP__TAG_FULL | WP__TAG_LAP)) != (WP__TAG_FULL | lap))
		return false;

	it->a = (void *)(tag & ~WP__TAG_FLAGS);
	it->b = s->b;
	it->c = 0;
	if (tag & WP__TAG_EXTRA) {
		x = q->extra[q->head & q->mask];
		if (it->a) {
			it->c = x;
		} else {
			it->a = (void *)x;
			it->c = WP__ITEM_TASK;
		}
	}
	/*
	 * Release: the item is read before a producer may reuse the slot,
	 * which is now free for the same position a lap on.
	 */
	atomic_store_explicit(&s->tag, lap ^ WP__TAG_LAP, memory_order_release);
	q->head++;
	return true;
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
