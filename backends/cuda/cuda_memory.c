/* Memory of the CUDA backend: the caching device allocator, host<->device copies through
 * pinned staging buffers, device copies, synchronisation and statistics.
 *
 * Allocator: cudaMalloc and cudaFree are slow and cudaFree synchronises the whole device, so
 * freed buffers are kept per size class (backends/common/buffer_pool.h) and handed out
 * again, as PyTorch's caching allocator does. Everything runs on the device's one stream,
 * so a buffer freed while kernels that use it are still queued may be reused at once: its
 * next user is queued behind them. When cudaMalloc runs out, the cache is released and the
 * allocation tried again.
 *
 * Copies: the caller's host memory is pageable; copying it through page-locked (pinned)
 * staging buffers lets the DMA engine run while the host fills the next chunk, and lets a
 * host-to-device copy return before the device has read it. Two staging chunks per device,
 * each with an event that says when the device is done with it. */
#include "cuda_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../common/buffer_pool.h"

#define STAGING_CHUNK ((size_t)4 << 20) /* bytes per staging buffer */
#define STAGING_COUNT 2                 /* staging buffers per device, used in turn */

/* Pinned staging buffers of one device. */
typedef struct staging {
    pthread_mutex_t lock;            /* one copy at a time uses them */
    bool tried;                      /* allocation attempted (it may have failed) */
    void *chunk[STAGING_COUNT];      /* pinned host memory, STAGING_CHUNK bytes each */
    cudaEvent_t done[STAGING_COUNT]; /* recorded after the device last read/wrote a chunk */
} staging;

/* Memory state of one device. */
typedef struct cu_memory {
    ag_buffer_pool pool; /* cached device buffers and statistics */
    staging stage;       /* pinned staging buffers */
} cu_memory;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* guards creating g_memory */
static cu_memory *g_memory; /* one per device, created on first use */
static int g_memory_count;

/* The memory state of `device`, creating every device's on first use; NULL when the device
 * does not exist or host memory ran out. */
static cu_memory *memory_of(int device) {
    cu_memory *m = __atomic_load_n(&g_memory, __ATOMIC_ACQUIRE);
    if (!m) {
        pthread_mutex_lock(&g_lock);
        m = g_memory;
        const int n = cu_device_count();
        if (!m && n > 0 && (m = calloc((size_t)n, sizeof *m))) {
            for (int i = 0; i < n; i++) {
                ag_pool_init(&m[i].pool, 0);
                pthread_mutex_init(&m[i].stage.lock, NULL);
            }
            g_memory_count = n;
            __atomic_store_n(&g_memory, m, __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&g_lock);
    }
    return m && device >= 0 && device < g_memory_count ? &m[device] : NULL;
}

/* Release callback of the pool: cudaFree on the current device. */
static void release_buffer(void *ctx, void *buffer) {
    (void)ctx;
    cudaFree(buffer);
}

/* Makes `device` current and finds its memory state; errors name `what`. */
static ag_status enter_memory(int device, const char *what, cudaStream_t *stream, cu_memory **out) {
    ag_status st = cu_enter(device, what, stream);
    if (st != AG_OK) return st;
    *out = memory_of(device);
    return *out ? AG_OK : cu_fail(AG_ERR_OUT_OF_MEMORY, "cuda: out of host memory in %s", what);
}

ag_status cu_alloc(int device, size_t bytes, void **out) {
    cu_memory *m;
    ag_status st = enter_memory(device, "alloc", NULL, &m);
    if (st != AG_OK) return st;
    if (!out) return cu_fail(AG_ERR_INVALID_ARG, "cuda: alloc with a NULL out pointer");
    size_t size;
    if (!ag_pool_round(&m->pool, bytes, &size))
        return cu_fail(AG_ERR_OUT_OF_MEMORY, "cuda: cannot allocate %zu bytes on device %d", bytes,
                       device);
    void *buffer = ag_pool_take(&m->pool, bytes);
    if (buffer) {
        *out = buffer;
        return AG_OK;
    }
    cudaError_t err = cudaMalloc(&buffer, size);
    if (err == cudaErrorMemoryAllocation) { /* cached buffers of other classes may be in the way */
        cudaGetLastError();
        ag_pool_drain(&m->pool, release_buffer, NULL);
        err = cudaMalloc(&buffer, size);
    }
    if (err != cudaSuccess) {
        cudaGetLastError(); /* an allocation failure is not sticky: clear it */
        size_t free_bytes = 0, total_bytes = 0;
        cudaMemGetInfo(&free_bytes, &total_bytes);
        ag_memory_stats stats = {.struct_size = sizeof stats};
        ag_pool_stats(&m->pool, &stats);
        return cu_fail(err == cudaErrorMemoryAllocation ? AG_ERR_OUT_OF_MEMORY : AG_ERR_INTERNAL,
                       "cuda: out of memory allocating %zu bytes on device %d (%s): %zu of %zu "
                       "bytes free; ag holds %llu bytes, %llu in use (%s)",
                       bytes, device, cu_device_at(device)->name, free_bytes, total_bytes,
                       (unsigned long long)stats.reserved, (unsigned long long)stats.in_use,
                       cudaGetErrorString(err));
    }
    ag_pool_created(&m->pool, bytes);
    *out = buffer;
    return AG_OK;
}

void cu_free(int device, void *buffer, size_t bytes) {
    cu_memory *m = buffer ? memory_of(device) : NULL;
    if (!m) return; /* not ours */
    if (!ag_pool_put(&m->pool, buffer, bytes) && cu_enter(device, "free", NULL) == AG_OK)
        cudaFree(buffer);
}

ag_status cu_scratch_alloc(int device, size_t bytes, const char *what, cu_scratch *out) {
    out->ptr = NULL;
    out->bytes = bytes;
    out->device = device;
    if (bytes == 0) return AG_OK;
    const ag_status st = cu_alloc(device, bytes, &out->ptr);
    if (st != AG_OK) {
        char why[1024];
        snprintf(why, sizeof why, "%.1000s", cu_error_text());
        return cu_fail(st, "%s: scratch memory: %s", what, why);
    }
    return AG_OK;
}

void cu_scratch_free(cu_scratch *s) {
    if (s->ptr) cu_free(s->device, s->ptr, s->bytes);
    s->ptr = NULL;
}

/* ---- copies ---- */

/* Allocates the staging buffers of m once (stage.lock held); false when pinned memory is not
 * available, and the copies then go straight from pageable memory. */
static bool staging_ready(staging *s) {
    if (!s->tried) {
        s->tried = true;
        bool ok = true;
        for (int i = 0; i < STAGING_COUNT && ok; i++)
            ok = cudaHostAlloc(&s->chunk[i], STAGING_CHUNK, cudaHostAllocPortable) == cudaSuccess &&
                 cudaEventCreateWithFlags(&s->done[i], cudaEventDisableTiming) == cudaSuccess;
        if (!ok) {
            cudaGetLastError();
            for (int i = 0; i < STAGING_COUNT; i++) {
                if (s->chunk[i]) cudaFreeHost(s->chunk[i]);
                if (s->done[i]) cudaEventDestroy(s->done[i]);
                s->chunk[i] = NULL;
                s->done[i] = NULL;
            }
        }
    }
    return s->chunk[0] != NULL;
}

/* Checks the arguments of a copy slot and enters its device. */
static ag_status enter_copy(const char *what, int device, const void *a, const void *b,
                            cudaStream_t *stream, cu_memory **m) {
    const ag_status st = enter_memory(device, what, stream, m);
    if (st != AG_OK) return st;
    if (!a || !b) return cu_fail(AG_ERR_INVALID_ARG, "cuda: %s with a NULL pointer", what);
    return AG_OK;
}

/* Maps a failed copy to a status naming the slot, size and device. */
static ag_status copy_error(cudaError_t err, const char *slot, size_t bytes, int device) {
    char what[128];
    snprintf(what, sizeof what, "%s of %zu bytes on device %d", slot, bytes, device);
    return cu_check(err, what);
}

ag_status cu_copy_from_host(int device, void *dst, size_t dst_offset, const void *src,
                            size_t bytes) {
    if (bytes == 0) return AG_OK;
    cudaStream_t stream;
    cu_memory *m;
    ag_status st = enter_copy("copy_from_host", device, dst, src, &stream, &m);
    if (st != AG_OK) return st;
    char *to = (char *)dst + dst_offset;
    staging *s = &m->stage;
    pthread_mutex_lock(&s->lock);
    cudaError_t err = cudaSuccess;
    if (!staging_ready(s)) {
        /* Pageable source: the runtime stages it itself and returns once src was read. */
        err = cudaMemcpyAsync(to, src, bytes, cudaMemcpyHostToDevice, stream);
        if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
    }
    for (size_t done = 0, i = 0; s->chunk[0] && done < bytes && err == cudaSuccess;
         i = (i + 1) % STAGING_COUNT) {
        const size_t n = bytes - done < STAGING_CHUNK ? bytes - done : STAGING_CHUNK;
        /* The chunk's previous copy must have left it before it is filled again. */
        err = cudaEventSynchronize(s->done[i]);
        if (err != cudaSuccess) break;
        memcpy(s->chunk[i], (const char *)src + done, n);
        err = cudaMemcpyAsync(to + done, s->chunk[i], n, cudaMemcpyHostToDevice, stream);
        if (err == cudaSuccess) err = cudaEventRecord(s->done[i], stream);
        done += n;
    }
    pthread_mutex_unlock(&s->lock);
    return copy_error(err, "copy_from_host", bytes, device);
}

ag_status cu_copy_to_host(int device, void *dst, const void *src, size_t src_offset, size_t bytes) {
    if (bytes == 0) return AG_OK;
    cudaStream_t stream;
    cu_memory *m;
    ag_status st = enter_copy("copy_to_host", device, dst, src, &stream, &m);
    if (st != AG_OK) return st;
    const char *from = (const char *)src + src_offset;
    staging *s = &m->stage;
    pthread_mutex_lock(&s->lock);
    cudaError_t err = cudaSuccess;
    if (!staging_ready(s)) {
        err = cudaMemcpyAsync(dst, from, bytes, cudaMemcpyDeviceToHost, stream);
        if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
    } else {
        /* Chunk k goes device -> staging[k % 2] while the host empties the other one. */
        const size_t chunks = (bytes + STAGING_CHUNK - 1) / STAGING_CHUNK;
        for (size_t k = 0; k < chunks + 1 && err == cudaSuccess; k++) {
            if (k < chunks) {
                const size_t at = k * STAGING_CHUNK, i = k % STAGING_COUNT;
                const size_t n = bytes - at < STAGING_CHUNK ? bytes - at : STAGING_CHUNK;
                err = cudaMemcpyAsync(s->chunk[i], from + at, n, cudaMemcpyDeviceToHost, stream);
                if (err == cudaSuccess) err = cudaEventRecord(s->done[i], stream);
            }
            if (k > 0 && err == cudaSuccess) {
                const size_t at = (k - 1) * STAGING_CHUNK, i = (k - 1) % STAGING_COUNT;
                const size_t n = bytes - at < STAGING_CHUNK ? bytes - at : STAGING_CHUNK;
                err = cudaEventSynchronize(s->done[i]);
                if (err == cudaSuccess) memcpy((char *)dst + at, s->chunk[i], n);
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    return copy_error(err, "copy_to_host", bytes, device);
}

ag_status cu_copy_device(int device, void *dst, size_t dst_offset, const void *src,
                         size_t src_offset, size_t bytes) {
    if (bytes == 0) return AG_OK;
    cudaStream_t stream;
    cu_memory *m;
    ag_status st = enter_copy("copy_device", device, dst, src, &stream, &m);
    if (st != AG_OK) return st;
    char *to = (char *)dst + dst_offset;
    const char *from = (const char *)src + src_offset;
    if (to >= from + bytes || from >= to + bytes)
        return copy_error(cudaMemcpyAsync(to, from, bytes, cudaMemcpyDeviceToDevice, stream),
                          "copy_device", bytes, device);
    /* cudaMemcpy's result is undefined for overlapping ranges (the ABI promises memmove):
     * go through a temporary, which stream order keeps alive until both copies ran. */
    cu_scratch tmp;
    st = cu_scratch_alloc(device, bytes, "copy_device", &tmp);
    if (st != AG_OK) return st;
    cudaError_t err = cudaMemcpyAsync(tmp.ptr, from, bytes, cudaMemcpyDeviceToDevice, stream);
    if (err == cudaSuccess)
        err = cudaMemcpyAsync(to, tmp.ptr, bytes, cudaMemcpyDeviceToDevice, stream);
    cu_scratch_free(&tmp);
    return copy_error(err, "copy_device", bytes, device);
}

ag_status cu_read_back(int device, void *dst, const void *src, size_t bytes, const char *what) {
    cudaStream_t stream;
    ag_status st = cu_enter(device, what, &stream);
    if (st != AG_OK) return st;
    cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream);
    if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
    return cu_check(err, what);
}

ag_status cu_synchronize(int device) {
    cudaStream_t stream;
    ag_status st = cu_enter(device, "synchronize", &stream);
    if (st != AG_OK) return st;
    char what[96];
    snprintf(what, sizeof what, "synchronize of device %d (a kernel queued earlier failed)",
             device);
    return cu_check(cudaStreamSynchronize(stream), what);
}

ag_status cu_memory_stats(int device, ag_memory_stats *stats) {
    cu_memory *m;
    ag_status st = enter_memory(device, "memory_stats", NULL, &m);
    if (st != AG_OK) return st;
    if (!stats || stats->struct_size < sizeof stats->struct_size)
        return cu_fail(AG_ERR_INVALID_ARG, "cuda: memory_stats needs an ag_memory_stats");
    ag_pool_stats(&m->pool, stats);
    return AG_OK;
}

ag_status cu_empty_cache(int device) {
    cu_memory *m;
    ag_status st = enter_memory(device, "empty_cache", NULL, &m);
    if (st != AG_OK) return st;
    ag_pool_drain(&m->pool, release_buffer, NULL);
    return AG_OK;
}

void cu_memory_shutdown(void) {
    pthread_mutex_lock(&g_lock);
    cu_memory *m = g_memory;
    const int n = g_memory_count;
    g_memory = NULL;
    g_memory_count = 0;
    pthread_mutex_unlock(&g_lock);
    for (int i = 0; m && i < n; i++) {
        cu_enter(i, "shutdown", NULL); /* at process exit it may fail: free what we can */
        ag_pool_destroy(&m[i].pool, release_buffer, NULL);
        staging *s = &m[i].stage;
        for (int k = 0; k < STAGING_COUNT; k++) {
            if (s->chunk[k]) cudaFreeHost(s->chunk[k]);
            if (s->done[k]) cudaEventDestroy(s->done[k]);
        }
        pthread_mutex_destroy(&s->lock);
    }
    free(m);
}
