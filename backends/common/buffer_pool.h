/* The bookkeeping of a caching allocator for device buffers, shared by the device backends
 * (opencl: cl_mem handles, cuda: device pointers). The pool never creates or releases a
 * buffer itself: the backend asks it for a cached buffer, creates one of the rounded size
 * when there is none, and gives buffers back; the pool keeps per-size-class free lists and
 * the statistics of ag_memory_stats (reserved = in use + cached, counted in class sizes).
 *
 * Size classes: multiples of 512 bytes up to 4 KiB, then four classes per power of two (at
 * most 25% slack), as backends/common/kernel_util.h's ag_size_class. Creating and releasing
 * device buffers costs a driver round trip (and cudaFree synchronises the device), which is
 * why freed buffers are kept for the next request of their class. One mutex per pool guards
 * its lists and statistics; the backend calls its driver outside it. */
#ifndef AG_BACKENDS_COMMON_BUFFER_POOL_H
#define AG_BACKENDS_COMMON_BUFFER_POOL_H

#include <pthread.h>
#include <stdbool.h>
#include "kernel_util.h"

#define AG_POOL_GRANULE    512 /* small classes step by this */
#define AG_POOL_SMALL_LOG2 12  /* classes up to 4 KiB step by AG_POOL_GRANULE */
#define AG_POOL_CLASSES    AG_SIZE_CLASS_COUNT(AG_POOL_GRANULE, AG_POOL_SMALL_LOG2)

/* A cached buffer: device handles cannot carry a link in their own bytes. */
typedef struct ag_pool_node {
    void *buffer;              /* the backend's handle */
    struct ag_pool_node *next; /* next cached buffer of the class */
} ag_pool_node;

/* The allocator state of one device. */
typedef struct ag_buffer_pool {
    pthread_mutex_t lock;                     /* guards everything below */
    ag_pool_node *free_list[AG_POOL_CLASSES]; /* cached buffers per class */
    ag_memory_stats stats;                    /* struct_size unused (0) */
    size_t max_bytes;                         /* largest buffer the device allows */
} ag_buffer_pool;

/* Sets up an empty pool whose buffers are at most max_bytes (0: no limit). */
void ag_pool_init(ag_buffer_pool *p, size_t max_bytes);
/* Releases every cached buffer with release(ctx, buffer) and destroys the mutex. */
void ag_pool_destroy(ag_buffer_pool *p, void (*release)(void *ctx, void *buffer), void *ctx);

/* The size a request of `bytes` is served with (its class, clamped to max_bytes); false when
 * the device cannot hold a buffer of `bytes`. */
bool ag_pool_round(const ag_buffer_pool *p, size_t bytes, size_t *size);
/* A cached buffer for a request of `bytes` (counted as an allocation served from the cache),
 * or NULL: then create one of ag_pool_round's size and report it with ag_pool_created. */
void *ag_pool_take(ag_buffer_pool *p, size_t bytes);
/* Counts a buffer created for a request of `bytes`. */
void ag_pool_created(ag_buffer_pool *p, size_t bytes);
/* Gives back a buffer of a request of `bytes` to cache. False when it cannot be cached (no
 * host memory for a node): the caller releases it; the statistics already forgot it. */
bool ag_pool_put(ag_buffer_pool *p, void *buffer, size_t bytes);
/* Releases every cached buffer with release(ctx, buffer), outside the lock. */
void ag_pool_drain(ag_buffer_pool *p, void (*release)(void *ctx, void *buffer), void *ctx);
/* Copies the statistics into the caller's struct, within its struct_size. */
void ag_pool_stats(ag_buffer_pool *p, ag_memory_stats *stats);

#endif
