/* SPDX-License-Identifier: MIT */
/* Setting up the per-worker queues; the queue itself is in queue.h. */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

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
		atomic_init(&q->slots[i].seq, WP__SEQ_FREE(i));
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
