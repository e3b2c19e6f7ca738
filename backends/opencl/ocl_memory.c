/* Caching allocator, copies and synchronisation of the OpenCL backend.
 *
 * Buffers are cl_mem objects. Creating and releasing them costs a driver round trip, so a
 * freed buffer is kept per size class and serves the next request of its class; the pool
 * bookkeeping (classes, free lists, statistics) is backends/common/buffer_pool.h, shared
 * with the CUDA backend. The OpenCL runtime is called outside the pool's lock. */
#include "ocl_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../common/buffer_pool.h"

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* guards creating g_pools */
static ag_buffer_pool *g_pools; /* one per device, created on first use */
static int g_pool_count;

/* The pool of `device`, creating every device's on first use; NULL when the device does
 * not exist or host memory ran out. Each pool's largest buffer is the device's
 * CL_DEVICE_MAX_MEM_ALLOC_SIZE. */
static ag_buffer_pool *pool_of(int device) {
    ag_buffer_pool *pools = __atomic_load_n(&g_pools, __ATOMIC_ACQUIRE);
    if (!pools) {
        pthread_mutex_lock(&g_lock);
        pools = g_pools;
        const int n = ocl_device_count();
        if (!pools && n > 0 && (pools = calloc((size_t)n, sizeof *pools))) {
            for (int i = 0; i < n; i++) {
                cl_ulong max_alloc = 0;
                if (clGetDeviceInfo(ocl_device_at(i)->id, CL_DEVICE_MAX_MEM_ALLOC_SIZE,
                                    sizeof max_alloc, &max_alloc, NULL) != CL_SUCCESS)
                    max_alloc = 0;
                ag_pool_init(&pools[i], (size_t)max_alloc);
            }
            g_pool_count = n;
            __atomic_store_n(&g_pools, pools, __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&g_lock);
    }
    return pools && device >= 0 && device < g_pool_count ? &pools[device] : NULL;
}

/* Release callback of the pool. */
static void release_buffer(void *ctx, void *buffer) {
    (void)ctx;
    clReleaseMemObject((cl_mem)buffer);
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
    ag_buffer_pool *p = pool_of(device);
    if (!p) return ocl_fail(AG_ERR_OUT_OF_MEMORY, "opencl: out of host memory in alloc");
    size_t size;
    /* Drivers refuse buffers over CL_DEVICE_MAX_MEM_ALLOC_SIZE with a less clear error. */
    if (!ag_pool_round(p, bytes, &size))
        return ocl_fail(AG_ERR_OUT_OF_MEMORY,
                        "opencl: cannot allocate %zu bytes on device %d (%s): its largest "
                        "buffer is %zu bytes",
                        bytes, device, ocl_device_at(device)->name, p->max_bytes);
    void *cached = ag_pool_take(p, bytes);
    if (cached) {
        *out = cached;
        return AG_OK;
    }
    cl_mem mem = NULL;
    st = create_buffer(device, size, bytes, &mem);
    if (st == AG_ERR_OUT_OF_MEMORY) { /* cached buffers of other classes may be in the way */
        ag_pool_drain(p, release_buffer, NULL);
        st = create_buffer(device, size, bytes, &mem);
    }
    if (st != AG_OK) return st;
    ag_pool_created(p, bytes);
    *out = mem;
    return AG_OK;
}

void ocl_free(int device, void *buffer, size_t bytes) {
    ag_buffer_pool *p = buffer ? pool_of(device) : NULL;
    if (!p) return; /* not ours */
    if (!ag_pool_put(p, buffer, bytes)) clReleaseMemObject((cl_mem)buffer);
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
    ag_buffer_pool *p = pool_of(device);
    if (!p) return ocl_fail(AG_ERR_OUT_OF_MEMORY, "opencl: out of host memory in memory_stats");
    ag_pool_stats(p, stats);
    return AG_OK;
}

ag_status ocl_empty_cache(int device) {
    const ag_status st = check_device("empty_cache", device);
    if (st != AG_OK) return st;
    ag_buffer_pool *p = pool_of(device);
    if (p) ag_pool_drain(p, release_buffer, NULL);
    return AG_OK;
}

void ocl_memory_shutdown(void) {
    pthread_mutex_lock(&g_lock);
    ag_buffer_pool *pools = g_pools;
    const int n = g_pool_count;
    g_pools = NULL;
    g_pool_count = 0;
    pthread_mutex_unlock(&g_lock);
    for (int i = 0; pools && i < n; i++) ag_pool_destroy(&pools[i], release_buffer, NULL);
    free(pools);
}
