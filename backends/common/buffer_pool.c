/* The device buffer pool of backends/common/buffer_pool.h. */
#include "buffer_pool.h"

#include <stdlib.h>
#include <string.h>

/* Requests above this cannot be rounded up to a class. */
#define MAX_BYTES (SIZE_MAX / 2)

void ag_pool_init(ag_buffer_pool *p, size_t max_bytes) {
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->lock, NULL);
    p->max_bytes = max_bytes ? max_bytes : MAX_BYTES;
}

/* Class of a request the device can hold, and its served size in *size. */
static int class_of(const ag_buffer_pool *p, size_t bytes, size_t *size) {
    const int c = ag_size_class(bytes, AG_POOL_GRANULE, AG_POOL_SMALL_LOG2, size);
    /* The top class may round past the device's limit while the request fits in it. */
    if (*size > p->max_bytes) *size = p->max_bytes;
    return c;
}

bool ag_pool_round(const ag_buffer_pool *p, size_t bytes, size_t *size) {
    if (bytes > MAX_BYTES || bytes > p->max_bytes) return false;
    class_of(p, bytes, size);
    return true;
}

void *ag_pool_take(ag_buffer_pool *p, size_t bytes) {
    size_t size;
    if (bytes > MAX_BYTES || bytes > p->max_bytes) return NULL;
    const int c = class_of(p, bytes, &size);
    pthread_mutex_lock(&p->lock);
    ag_pool_node *n = p->free_list[c];
    if (n) {
        p->free_list[c] = n->next;
        p->stats.alloc_count++;
        p->stats.cache_hits++;
        p->stats.in_use += size;
        if (p->stats.in_use > p->stats.peak_in_use) p->stats.peak_in_use = p->stats.in_use;
    }
    pthread_mutex_unlock(&p->lock);
    void *buffer = n ? n->buffer : NULL;
    free(n);
    return buffer;
}

void ag_pool_created(ag_buffer_pool *p, size_t bytes) {
    size_t size;
    class_of(p, bytes, &size);
    pthread_mutex_lock(&p->lock);
    p->stats.alloc_count++;
    p->stats.in_use += size;
    p->stats.reserved += size;
    if (p->stats.in_use > p->stats.peak_in_use) p->stats.peak_in_use = p->stats.in_use;
    pthread_mutex_unlock(&p->lock);
}

bool ag_pool_put(ag_buffer_pool *p, void *buffer, size_t bytes) {
    size_t size;
    const int c = class_of(p, bytes, &size);
    ag_pool_node *n = malloc(sizeof *n);
    pthread_mutex_lock(&p->lock);
    p->stats.in_use -= size;
    if (n) {
        n->buffer = buffer;
        n->next = p->free_list[c];
        p->free_list[c] = n;
    } else {
        p->stats.reserved -= size; /* the caller releases it */
    }
    pthread_mutex_unlock(&p->lock);
    return n != NULL;
}

void ag_pool_drain(ag_buffer_pool *p, void (*release)(void *ctx, void *buffer), void *ctx) {
    ag_pool_node *all = NULL;
    pthread_mutex_lock(&p->lock);
    for (int c = 0; c < AG_POOL_CLASSES; c++) {
        while (p->free_list[c]) {
            ag_pool_node *n = p->free_list[c];
            p->free_list[c] = n->next;
            n->next = all;
            all = n;
        }
    }
    p->stats.reserved = p->stats.in_use;
    pthread_mutex_unlock(&p->lock);
    while (all) {
        ag_pool_node *next = all->next;
        release(ctx, all->buffer);
        free(all);
        all = next;
    }
}

void ag_pool_destroy(ag_buffer_pool *p, void (*release)(void *ctx, void *buffer), void *ctx) {
    ag_pool_drain(p, release, ctx);
    pthread_mutex_destroy(&p->lock);
}

void ag_pool_stats(ag_buffer_pool *p, ag_memory_stats *stats) {
    pthread_mutex_lock(&p->lock);
    ag_memory_stats full = p->stats;
    pthread_mutex_unlock(&p->lock);
    /* Write only what the caller's (possibly older, smaller) struct holds. */
    const size_t n = stats->struct_size < sizeof full ? stats->struct_size : sizeof full;
    full.struct_size = stats->struct_size;
    memcpy(stats, &full, n);
}
