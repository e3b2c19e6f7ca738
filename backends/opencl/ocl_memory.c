/* Caching allocator, copies and synchronisation of the OpenCL backend.
 *
 * Buffers are cl_mem objects. Requests are rounded up to a size class (multiples of 256
 * bytes up to 4 KiB, then four classes per power of two, so at most 25% slack); a freed
 * buffer goes onto its device's free list for that class and serves the next request of
 * the class, because creating and releasing cl_mem objects costs a driver round trip.
 * Statistics count class sizes: reserved = in_use + cached. One mutex guards the lists and
 * statistics of every device; the OpenCL runtime is called outside it. */
#include "ocl_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRANULE       256  /* small classes step by this */
#define SMALL_LIMIT   4096 /* classes up to here step by GRANULE */
#define SMALL_CLASSES (SMALL_LIMIT / GRANULE)
#define MAX_BYTES     (SIZE_MAX / 2) /* larger requests cannot be rounded up */
#define MAX_LOG2      62             /* highest power of two a class lies above */
#define NUM_CLASSES   (SMALL_CLASSES + (MAX_LOG2 - 11) * 4)

/* A cached buffer: cl_mem cannot carry a link in its own bytes as host memory can. */
typedef struct cached_buffer {
    cl_mem mem;
    struct cached_buffer *next;
} cached_buffer;

/* Allocator state of one device. */
typedef struct ocl_pool {
    cached_buffer *free_list[NUM_CLASSES]; /* cached buffers per class */
    ag_memory_stats stats;
    cl_ulong max_alloc; /* CL_DEVICE_MAX_MEM_ALLOC_SIZE */
} ocl_pool;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static ocl_pool *g_pools; /* one per device, created on first use */
static int g_pool_count;

/* Class index of a request of `bytes` (<= MAX_BYTES); its rounded size goes to *size. */
static int size_class(size_t bytes, size_t *size) {
    if (bytes <= SMALL_LIMIT) {
        const size_t k = bytes == 0 ? 1 : (bytes + GRANULE - 1) / GRANULE;
        *size = k * GRANULE;
        return (int)k - 1;
    }
    const int p = 63 - __builtin_clzll((unsigned long long)(bytes - 1)); /* 2^p < bytes */
    const size_t low = (size_t)1 << p, step = low / 4;
    const size_t k = (bytes - low + step - 1) / step; /* 1..4 */
    *size = low + k * step;
    return SMALL_CLASSES + (p - 12) * 4 + (int)k - 1;
}

/* The pool of `device` (g_lock held), creating the pools on first use; NULL when the
 * device does not exist or host memory ran out. */
static ocl_pool *pool_locked(int device) {
    if (!g_pools) {
        const int n = ocl_device_count();
        if (n <= 0) return NULL;
        g_pools = calloc((size_t)n, sizeof *g_pools);
        if (!g_pools) return NULL;
        g_pool_count = n;
        for (int i = 0; i < n; i++) {
            cl_ulong max_alloc = 0;
            if (clGetDeviceInfo(ocl_device_at(i)->id, CL_DEVICE_MAX_MEM_ALLOC_SIZE,
                                sizeof max_alloc, &max_alloc, NULL) != CL_SUCCESS)
                max_alloc = 0;
            g_pools[i].max_alloc = max_alloc ? max_alloc : (cl_ulong)MAX_BYTES;
        }
    }
    return device >= 0 && device < g_pool_count ? &g_pools[device] : NULL;
}

/* Takes every cached buffer of pool p off its lists (g_lock held) and returns them as one
 * list, to be released after unlocking. */
static cached_buffer *take_cache_locked(ocl_pool *p) {
    cached_buffer *all = NULL;
    for (int c = 0; c < NUM_CLASSES; c++) {
        while (p->free_list[c]) {
            cached_buffer *b = p->free_list[c];
            p->free_list[c] = b->next;
            b->next = all;
            all = b;
        }
    }
    p->stats.reserved = p->stats.in_use;
    return all;
}

/* Releases a list from take_cache_locked. */
static void release_list(cached_buffer *list) {
    while (list) {
        cached_buffer *next = list->next;
        clReleaseMemObject(list->mem);
        free(list);
        list = next;
    }
}

/* Releases every cached buffer of device (which must exist). */
static void release_cache(int device) {
    pthread_mutex_lock(&g_lock);
    ocl_pool *p = pool_locked(device);
    cached_buffer *list = p ? take_cache_locked(p) : NULL;
    pthread_mutex_unlock(&g_lock);
    release_list(list);
}

/* Checks a device index for slot `what`. */
static ag_status check_device(const char *what, int device) {
    if (!ocl_device_at(device))
        return ocl_fail(AG_ERR_DEVICE, "opencl: %s on device %d (%d devices)", what, device,
                        ocl_device_count());
    return AG_OK;
}

/* Creates a buffer of `size` bytes on device d; AG_ERR_OUT_OF_MEMORY when it does not fit. */
static ag_status create_buffer(int device, size_t size, size_t bytes, cl_mem *out) {
    const ocl_device *d = ocl_device_at(device);
    cl_int err;
    *out = clCreateBuffer(d->context, CL_MEM_READ_WRITE, size, NULL, &err);
    if (err == CL_SUCCESS) return AG_OK;
    if (err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_RESOURCES ||
        err == CL_OUT_OF_HOST_MEMORY || err == CL_INVALID_BUFFER_SIZE)
        return ocl_fail(AG_ERR_OUT_OF_MEMORY,
                        "opencl: out of memory allocating %zu bytes on device %d (%s): %s", bytes,
                        device, d->name, ocl_error_name(err));
    char what[96];
    snprintf(what, sizeof what, "clCreateBuffer of %zu bytes on device %d", size, device);
    return ocl_check(err, what);
}

ag_status ocl_alloc(int device, size_t bytes, void **out) {
    ag_status st = check_device("alloc", device);
    if (st != AG_OK) return st;
    if (!out) return ocl_fail(AG_ERR_INVALID_ARG, "opencl: alloc with a NULL out pointer");
    size_t size = 0;
    const int c = bytes <= MAX_BYTES ? size_class(bytes, &size) : -1;

    pthread_mutex_lock(&g_lock);
    ocl_pool *p = pool_locked(device);
    cached_buffer *b = NULL;
    const cl_ulong max_alloc = p ? p->max_alloc : 0;
    /* The top class may round past the device's limit while the request fits it. */
    if (bytes <= max_alloc && size > max_alloc) size = (size_t)max_alloc;
    if (p && c >= 0 && bytes <= max_alloc) {
        b = p->free_list[c];
        if (b) p->free_list[c] = b->next;
    }
    pthread_mutex_unlock(&g_lock);
    if (!p) return ocl_fail(AG_ERR_OUT_OF_MEMORY, "opencl: out of host memory in alloc");
    /* Drivers refuse buffers over CL_DEVICE_MAX_MEM_ALLOC_SIZE with a less clear error. */
    if (c < 0 || bytes > max_alloc)
        return ocl_fail(AG_ERR_OUT_OF_MEMORY,
                        "opencl: cannot allocate %zu bytes on device %d (%s): its largest "
                        "buffer is %llu bytes",
                        bytes, device, ocl_device_at(device)->name, (unsigned long long)max_alloc);

    const bool hit = b != NULL;
    cl_mem mem = NULL;
    if (hit) {
        mem = b->mem;
        free(b);
    } else {
        st = create_buffer(device, size, bytes, &mem);
        if (st == AG_ERR_OUT_OF_MEMORY) { /* cached buffers of other classes may be in the way */
            release_cache(device);
            st = create_buffer(device, size, bytes, &mem);
        }
        if (st != AG_OK) return st;
    }

    pthread_mutex_lock(&g_lock);
    p->stats.alloc_count++;
    p->stats.in_use += size;
    if (hit)
        p->stats.cache_hits++;
    else
        p->stats.reserved += size;
    if (p->stats.in_use > p->stats.peak_in_use) p->stats.peak_in_use = p->stats.in_use;
    pthread_mutex_unlock(&g_lock);
    *out = mem;
    return AG_OK;
}

void ocl_free(int device, void *buffer, size_t bytes) {
    if (!ocl_device_at(device) || !buffer || bytes > MAX_BYTES) return; /* not ours */
    size_t size;
    const int c = size_class(bytes, &size);
    cached_buffer *b = malloc(sizeof *b);
    bool cached = false;
    pthread_mutex_lock(&g_lock);
    ocl_pool *p = pool_locked(device);
    if (p) {
        if (size > p->max_alloc) size = (size_t)p->max_alloc; /* as ocl_alloc clamped it */
        p->stats.in_use -= size;
        if (b) {
            b->mem = buffer;
            b->next = p->free_list[c];
            p->free_list[c] = b;
            cached = true;
        } else {
            p->stats.reserved -= size; /* no node to cache it in: released below */
        }
    }
    pthread_mutex_unlock(&g_lock);
    if (!cached) {
        free(b);
        clReleaseMemObject(buffer);
    }
}

/* Checks the arguments of a copy slot. */
static ag_status check_copy(const char *what, int device, const void *a, const void *b) {
    const ag_status st = check_device(what, device);
    if (st != AG_OK) return st;
    if (!a || !b) return ocl_fail(AG_ERR_INVALID_ARG, "opencl: %s with a NULL pointer", what);
    return AG_OK;
}

/* Maps a failed copy call to a status naming the slot, sizes and device. */
static ag_status copy_error(cl_int err, const char *call, const char *slot, size_t bytes,
                            int device) {
    char what[128];
    snprintf(what, sizeof what, "%s (%s of %zu bytes on device %d)", call, slot, bytes, device);
    return ocl_check(err, what);
}

ag_status ocl_copy_from_host(int device, void *dst, size_t dst_offset, const void *src,
                             size_t bytes) {
    if (bytes == 0) return AG_OK;
    const ag_status st = check_copy("copy_from_host", device, dst, src);
    if (st != AG_OK) return st;
    /* Blocking: the caller may reuse src as soon as this returns. */
    const cl_int err = clEnqueueWriteBuffer(ocl_device_at(device)->queue, (cl_mem)dst, CL_TRUE,
                                            dst_offset, bytes, src, 0, NULL, NULL);
    return copy_error(err, "clEnqueueWriteBuffer", "copy_from_host", bytes, device);
}

ag_status ocl_copy_to_host(int device, void *dst, const void *src, size_t src_offset,
                           size_t bytes) {
    if (bytes == 0) return AG_OK;
    const ag_status st = check_copy("copy_to_host", device, dst, src);
    if (st != AG_OK) return st;
    /* Blocking: the caller reads dst as soon as this returns. In-order queue, so every
     * kernel writing src has finished first. */
    const cl_int err = clEnqueueReadBuffer(ocl_device_at(device)->queue, (cl_mem)src, CL_TRUE,
                                           src_offset, bytes, dst, 0, NULL, NULL);
    if (err == CL_SUCCESS) ocl_exit_guard_settle();
    return copy_error(err, "clEnqueueReadBuffer", "copy_to_host", bytes, device);
}

ag_status ocl_copy_device(int device, void *dst, size_t dst_offset, const void *src,
                          size_t src_offset, size_t bytes) {
    if (bytes == 0) return AG_OK;
    ag_status st = check_copy("copy_device", device, dst, src);
    if (st != AG_OK) return st;
    cl_command_queue q = ocl_device_at(device)->queue;
    const bool overlap =
        dst == src && dst_offset < src_offset + bytes && src_offset < dst_offset + bytes;
    if (!overlap)
        return copy_error(clEnqueueCopyBuffer(q, (cl_mem)src, (cl_mem)dst, src_offset, dst_offset,
                                              bytes, 0, NULL, NULL),
                          "clEnqueueCopyBuffer", "copy_device", bytes, device);
    /* OpenCL refuses overlapping copies (CL_MEM_COPY_OVERLAP): go through a temporary. */
    void *tmp = NULL;
    st = ocl_alloc(device, bytes, &tmp);
    if (st != AG_OK) return st;
    cl_int err =
        clEnqueueCopyBuffer(q, (cl_mem)src, (cl_mem)tmp, src_offset, 0, bytes, 0, NULL, NULL);
    if (err == CL_SUCCESS)
        err = clEnqueueCopyBuffer(q, (cl_mem)tmp, (cl_mem)dst, 0, dst_offset, bytes, 0, NULL, NULL);
    /* The in-order queue runs the copies before any later use of tmp. */
    ocl_free(device, tmp, bytes);
    return copy_error(err, "clEnqueueCopyBuffer", "copy_device", bytes, device);
}

ag_status ocl_synchronize(int device) {
    const ag_status st = check_device("synchronize", device);
    if (st != AG_OK) return st;
    char what[64];
    snprintf(what, sizeof what, "clFinish on device %d", device);
    const cl_int err = clFinish(ocl_device_at(device)->queue);
    if (err == CL_SUCCESS) ocl_exit_guard_settle();
    return ocl_check(err, what);
}

ag_status ocl_memory_stats(int device, ag_memory_stats *stats) {
    const ag_status st = check_device("memory_stats", device);
    if (st != AG_OK) return st;
    if (!stats || stats->struct_size < sizeof stats->struct_size)
        return ocl_fail(AG_ERR_INVALID_ARG, "opencl: memory_stats needs an ag_memory_stats");
    ag_memory_stats full;
    memset(&full, 0, sizeof full);
    pthread_mutex_lock(&g_lock);
    const ocl_pool *p = pool_locked(device);
    if (p) full = p->stats;
    pthread_mutex_unlock(&g_lock);
    /* Write only what the caller's (possibly older, smaller) struct holds. */
    const size_t n = stats->struct_size < sizeof full ? stats->struct_size : sizeof full;
    full.struct_size = stats->struct_size;
    memcpy(stats, &full, n);
    return AG_OK;
}

ag_status ocl_empty_cache(int device) {
    const ag_status st = check_device("empty_cache", device);
    if (st != AG_OK) return st;
    release_cache(device);
    return AG_OK;
}

void ocl_memory_shutdown(void) {
    pthread_mutex_lock(&g_lock);
    cached_buffer *all = NULL;
    for (int i = 0; i < g_pool_count; i++) {
        cached_buffer *list = take_cache_locked(&g_pools[i]);
        while (list) {
            cached_buffer *next = list->next;
            list->next = all;
            all = list;
            list = next;
        }
    }
    free(g_pools);
    g_pools = NULL;
    g_pool_count = 0;
    pthread_mutex_unlock(&g_lock);
    release_list(all);
}
