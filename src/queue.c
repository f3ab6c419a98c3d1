/* SPDX-License-Identifier: MIT */
/*
 * The bounded multi-producer, single-consumer queue in front of each
 * worker. Producers reserve positions by compare-and-swap on the tail and
 * publish each slot with its sequence number; the worker reads slots in
 * position order and hands them back for the next lap. No lock, and no
 * allocation after init.
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

/*
 * Slot sequence numbers: a slot is free for position p at 2p and holds
 * the item of position p at 2p + 1. Doubling keeps the two apart even
 * when the capacity is 1.
 */
#define SEQ_FREE(p) ((p) << 1)
#define SEQ_FULL(p) (((p) << 1) | 1)

int wp__queue_init(struct wp__queue *q, unsigned capacity)
{
	uint64_t cap = 1;
	size_t size;
	uint64_t i;

	while (cap < capacity)
		cap <<= 1;
	/* aligned_alloc wants a whole number of alignment units. */
	size = (cap * sizeof(*q->slots) + WP__CACHELINE - 1) &
	       ~(size_t)(WP__CACHELINE - 1);
	q->slots = wp__aligned_alloc(WP__CACHELINE, size);
	if (!q->slots)
		return -ENOMEM;

	for (i = 0; i < cap; i++)
		atomic_init(&q->slots[i].seq, SEQ_FREE(i));
	q->mask = cap - 1;
	q->head = 0;
	atomic_init(&q->tail, 0);
	atomic_init(&q->done, 0);
	return 0;
}

void wp__queue_fini(struct wp__queue *q)
{
	free(q->slots);
	q->slots = NULL;
}

/*
 * Reserves n consecutive positions and returns the first, or returns
 * UINT64_MAX when the queue lacks room for all n. The worker frees slots
 * in position order, so if the last of the n is free, all of them are.
 */
static uint64_t queue_reserve(struct wp__queue *q, uint64_t n)
{
	uint64_t pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
	struct wp__slot *last;
	uint64_t seq;

	for (;;) {
		last = &q->slots[(pos + n - 1) & q->mask];
		/* Acquire: the worker's reads of the old item come first. */
		seq = atomic_load_explicit(&last->seq, memory_order_acquire);
		if (seq == SEQ_FREE(pos + n - 1)) {
			if (atomic_compare_exchange_weak_explicit(&q->tail,
					&pos, pos + n, memory_order_relaxed,
					memory_order_relaxed))
				return pos;
		} else if ((int64_t)(seq - SEQ_FREE(pos + n - 1)) < 0) {
			return UINT64_MAX;
		} else {
			pos = atomic_load_explicit(&q->tail,
						   memory_order_relaxed);
		}
	}
}

static void queue_publish(struct wp__queue *q, uint64_t pos,
			  const struct wp__item *it)
{
	struct wp__slot *s = &q->slots[pos & q->mask];

	s->item = *it;
	/* Release: the item is written before the worker can see it. */
	atomic_store_explicit(&s->seq, SEQ_FULL(pos), memory_order_release);
}

bool wp__queue_push(struct wp__queue *q, const struct wp__item *it)
{
	uint64_t pos = queue_reserve(q, 1);

	if (pos == UINT64_MAX)
		return false;
	queue_publish(q, pos, it);
	return true;
}

/*
 * Queues up to n events of handle h in order: all of them if they fit,
 * otherwise as many as fit one by one. Returns how many were queued.
 */
size_t wp__queue_push_many(struct wp__queue *q, void *h, void *const *ev,
			   size_t n, uintptr_t c)
{
	struct wp__item it = { .a = h, .c = c };
	uint64_t pos;
	size_t i;

	if (n > 1 && n <= q->mask + 1) {
		pos = queue_reserve(q, n);
		if (pos != UINT64_MAX) {
			for (i = 0; i < n; i++) {
				it.b = ev[i];
				queue_publish(q, pos + i, &it);
			}
			return n;
		}
	}

	for (i = 0; i < n; i++) {
		it.b = ev[i];
		if (!wp__queue_push(q, &it))
			break;
	}
	return i;
}

bool wp__queue_pop(struct wp__queue *q, struct wp__item *it)
{
	struct wp__slot *s = &q->slots[q->head & q->mask];

	/* Acquire: pairs with the producer's publishing release. */
	if (atomic_load_explicit(&s->seq, memory_order_acquire) !=
	    SEQ_FULL(q->head))
		return false;

	*it = s->item;
	/* Release: the item is read before a producer may reuse the slot. */
	atomic_store_explicit(&s->seq, SEQ_FREE(q->head + q->mask + 1),
			      memory_order_release);
	q->head++;
	return true;
}

bool wp__queue_ready(const struct wp__queue *q)
{
	const struct wp__slot *s = &q->slots[q->head & q->mask];

	return atomic_load_explicit(&s->seq, memory_order_acquire) ==
	       SEQ_FULL(q->head);
}
