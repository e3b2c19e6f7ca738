/* Caching allocator of the cpu backend.
 *
 * Requests are rounded up to a size class: multiples of 64 bytes up to 1 KiB, then four
 * classes per power of two (so at most 25% slack). A freed buffer goes onto its class's
 * free list (linked through the buffer's first bytes) and serves the next request of that
 * class, so steady-state training loops stop calling the system allocator. Statistics count
 * class sizes: reserved = in_use + cached. One mutex guards the lists and statistics; the
 * system allocator is called outside it. */
#include "cpu_internal.h"
#include "../common/kernel_util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define ALIGNMENT   64
#define SMALL_LOG2  10             /* classes up to 1 KiB step by ALIGNMENT */
#define MAX_BYTES   (SIZE_MAX / 2) /* larger requests cannot be rounded up */
#define NUM_CLASSES AG_SIZE_CLASS_COUNT(ALIGNMENT, SMALL_LOG2)

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static void *g_free_list[NUM_CLASSES]; /* cached buffers per class, linked through word 0 */
static ag_memory_stats g_stats;

/* Class index of a request of `bytes` (<= MAX_BYTES); its rounded size goes to *size. */
static int size_class(size_t bytes, size_t *size) {
    return ag_size_class(bytes, ALIGNMENT, SMALL_LOG2, size);
}

/* Takes every cached buffer off the free lists (g_lock held) and returns them as one list,
 * to be freed after unlocking. */
static void *take_cache_locked(void) {
    void *all = NULL;
    for (int c = 0; c < NUM_CLASSES; c++) {
        while (g_free_list[c]) {
            void *buf = g_free_list[c];
            g_free_list[c] = *(void **)buf;
            *(void **)buf = all;
            all = buf;
        }
    }
    g_stats.reserved = g_stats.in_use;
    return all;
}

/* Frees every cached buffer. */
static void release_cache(void) {
    pthread_mutex_lock(&g_lock);
    void *list = take_cache_locked();
    pthread_mutex_unlock(&g_lock);
    while (list) {
        void *next = *(void **)list;
        free(list);
        list = next;
    }
}

ag_status cpu_alloc(int device, size_t bytes, void **out) {
    if (!cpu_device_valid(device))
        return cpu_fail(AG_ERR_DEVICE, "cpu: alloc on device %d, which does not exist", device);
    if (!out) return cpu_fail(AG_ERR_INVALID_ARG, "cpu: alloc with a NULL out pointer");
    if (bytes > MAX_BYTES)
        return cpu_fail(AG_ERR_OUT_OF_MEMORY, "cpu: cannot allocate %zu bytes", bytes);
    size_t size;
    const int c = size_class(bytes, &size);

    pthread_mutex_lock(&g_lock);
    void *buf = g_free_list[c];
    if (buf) g_free_list[c] = *(void **)buf;
    pthread_mutex_unlock(&g_lock);

    const bool hit = buf != NULL;
    if (!hit) {
        buf = aligned_alloc(ALIGNMENT, size);
        if (!buf) { /* cached buffers of other classes may be what is missing */
            release_cache();
            buf = aligned_alloc(ALIGNMENT, size);
        }
        if (!buf)
            return cpu_fail(AG_ERR_OUT_OF_MEMORY, "cpu: out of memory allocating %zu bytes", bytes);
    }

    pthread_mutex_lock(&g_lock);
    g_stats.alloc_count++;
    g_stats.in_use += size;
    if (hit)
        g_stats.cache_hits++;
    else
        g_stats.reserved += size;
    if (g_stats.in_use > g_stats.peak_in_use) g_stats.peak_in_use = g_stats.in_use;
    pthread_mutex_unlock(&g_lock);
    *out = buf;
    return AG_OK;
}

void cpu_free(int device, void *buffer, size_t bytes) {
    if (!cpu_device_valid(device) || !buffer || bytes > MAX_BYTES) return; /* not ours */
    size_t size;
    const int c = size_class(bytes, &size);
    pthread_mutex_lock(&g_lock);
    *(void **)buffer = g_free_list[c];
    g_free_list[c] = buffer;
    g_stats.in_use -= size;
    pthread_mutex_unlock(&g_lock);
}

ag_status cpu_memory_stats(int device, ag_memory_stats *stats) {
    if (!cpu_device_valid(device)) return cpu_fail(AG_ERR_DEVICE, "cpu: no device %d", device);
    if (!stats || stats->struct_size < sizeof stats->struct_size)
        return cpu_fail(AG_ERR_INVALID_ARG, "cpu: memory_stats needs an ag_memory_stats");
    pthread_mutex_lock(&g_lock);
    ag_memory_stats full = g_stats;
    pthread_mutex_unlock(&g_lock);
    /* Write only what the caller's (possibly older, smaller) struct holds. */
    const size_t n = stats->struct_size < sizeof full ? stats->struct_size : sizeof full;
    full.struct_size = stats->struct_size;
    memcpy(stats, &full, n);
    return AG_OK;
}

ag_status cpu_empty_cache(int device) {
    if (!cpu_device_valid(device)) return cpu_fail(AG_ERR_DEVICE, "cpu: no device %d", device);
    release_cache();
    return AG_OK;
}
