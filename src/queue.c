/* SPDX-License-Identifier: MIT */
/* Setting up the per-worker queues; the queue itself is in queue.h. */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

int wp__queue_init(struct wp__queue *q, unsigned capacity)
{
	unsigned shift = 0;
	uint64_t cap;
	size_t size;

	while ((1ull << shift) < capacity)
		shift++;
	cap = 1ull << shift;

	/* aligned_alloc wants a whole number of alignment units. */
	size = (cap * sizeof(*q->slots) + WP__CACHELINE - 1) &
	       ~(size_t)(WP__CACHELINE - 1);
	q->slots = wp__aligned_alloc(WP__CACHELINE, size);
	q->extra = wp__calloc(cap, sizeof(*q->extra));
	if (!q->slots || !q->extra) {
		wp__queue_fini(q);
		return -ENOMEM;
	}

	/* Every slot starts free for its position in lap 0. */
	for (uint64_t i = 0; i < cap; i++) {
		atomic_init(&q->slots[i].tag, 0);
		q->slots[i].b = NULL;
	}
	q->mask = cap - 1;
	q->shift = shift;
	q->head = 0;
	atomic_init(&q->tail, 0);
	atomic_init(&q->done, 0);
	return 0;
}

void wp__queue_fini(struct wp__queue *q)
{
	free(q->slots);
	free(q->extra);
	q->slots = NULL;
	q->extra = NULL;
}
