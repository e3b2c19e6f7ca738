/* The CUDA backend's entry point: function table, init/shutdown (every visible device, one
 * non-blocking stream each), device info, error state, kernel lookup and the extras of
 * get_proc_address.
 *
 * No GPU is a normal case: without a driver or a device, init fails with AG_ERR_DEVICE and
 * "no CUDA device: <the runtime's words>", so `AG_BACKEND=cuda ag info` explains itself and
 * the tests of this backend skip. */
#include "cuda_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Message of the last failure on this thread; large enough for an NVRTC log excerpt. */
static _Thread_local char g_last_error[8192];

/* Devices found by init (freed by shutdown). Written only by init and shutdown, which the
 * core never runs concurrently with other calls. */
static cu_device *g_devices;
static int g_device_count;

ag_status cu_fail(ag_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
    va_end(ap);
    return status;
}

const char *cu_error_text(void) {
    return g_last_error;
}

ag_status cu_check(cudaError_t err, const char *what) {
    if (err == cudaSuccess) return AG_OK;
    const ag_status st = err == cudaErrorMemoryAllocation ? AG_ERR_OUT_OF_MEMORY : AG_ERR_INTERNAL;
    return cu_fail(st, "cuda: %s failed with %s (%d): %s", what, cudaGetErrorName(err), (int)err,
                   cudaGetErrorString(err));
}

ag_status cu_check_launch(const char *what) {
    return cu_check(cudaGetLastError(), what);
}

int cu_device_count(void) {
    return g_device_count;
}

cu_device *cu_device_at(int index) {
    return index >= 0 && index < g_device_count ? &g_devices[index] : NULL;
}

ag_status cu_enter(int index, const char *what, cudaStream_t *stream) {
    const cu_device *d = cu_device_at(index);
    if (!d)
        return cu_fail(AG_ERR_DEVICE, "cuda: %s: no device %d (%d devices)", what, index,
                       g_device_count);
    const cudaError_t err = cudaSetDevice(d->ordinal);
    if (err != cudaSuccess) return cu_check(err, "cudaSetDevice");
    if (stream) *stream = d->stream;
    return AG_OK;
}

unsigned cu_grid_size(int index, int64_t n, unsigned threads) {
    const cu_device *d = cu_device_at(index);
    /* Enough resident blocks to fill every SM several times; more only cost scheduling. */
    const int64_t fill = (int64_t)(d ? d->sm_count : 1) * 8;
    const int64_t needed = (n + threads - 1) / threads;
    const int64_t blocks = needed < fill ? needed : fill;
    return blocks > 0 ? (unsigned)blocks : 1u;
}

/* Destroys the streams and forgets the devices. */
static void release_devices(void) {
    for (int i = 0; i < g_device_count; i++) {
        if (!g_devices[i].stream) continue;
        cudaSetDevice(g_devices[i].ordinal);
        cudaStreamDestroy(g_devices[i].stream);
    }
    free(g_devices);
    g_devices = NULL;
    g_device_count = 0;
}

/* Fills d for CUDA device `ordinal` and creates its stream. */
static ag_status open_device(cu_device *d, int ordinal) {
    struct cudaDeviceProp prop;
    cudaError_t err = cudaGetDeviceProperties(&prop, ordinal);
    if (err != cudaSuccess) return cu_check(err, "cudaGetDeviceProperties");
    d->ordinal = ordinal;
    snprintf(d->name, sizeof d->name, "%.127s", prop.name);
    d->sm_count = prop.multiProcessorCount;
    d->cc_major = prop.major;
    d->cc_minor = prop.minor;
    d->shared_per_block = prop.sharedMemPerBlock;
    err = cudaSetDevice(ordinal);
    if (err == cudaSuccess) err = cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking);
    return cu_check(err, "creating the device's stream");
}

static void cu_shutdown(void) {
    /* Work still queued uses the buffers and programs released below. At process exit the
     * runtime may already be unloading: every call then fails harmlessly. */
    for (int i = 0; i < g_device_count; i++) {
        cudaSetDevice(g_devices[i].ordinal);
        cudaStreamSynchronize(g_devices[i].stream);
    }
    cu_nvrtc_shutdown();
    cu_matmul_shutdown();
    cu_memory_shutdown();
    release_devices();
}

/* libag calls shutdown from its destructor, which runs after the exit handlers, and the
 * CUDA runtime tears itself down in an exit handler of its own: freeing buffers, cuBLAS
 * handles and libraries after that may crash. So init registers shutdown as an exit
 * handler too, once, after the runtime's first call registered the runtime's handler:
 * handlers run in reverse order, so ours runs first. The library is never unmapped
 * (-z nodelete), so the handler stays valid; shutdown twice is harmless. */
static void register_exit_shutdown(void) {
    static bool registered;
    if (!registered) registered = atexit(cu_shutdown) == 0;
}

static ag_status cu_init(void) {
    cu_shutdown(); /* init may run again in one process (docs/backends.md) */
    int n = 0;
    /* On failure cudaGetDeviceCount leaves n untouched: the return code is what counts. */
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        cudaGetLastError(); /* clear the error so that a later init starts clean */
        return cu_fail(AG_ERR_DEVICE, "no CUDA device: %s (%s, error %d)", cudaGetErrorString(err),
                       cudaGetErrorName(err), (int)err);
    }
    if (n <= 0)
        return cu_fail(AG_ERR_DEVICE, "no CUDA device: cudaGetDeviceCount found none "
                                      "(CUDA_VISIBLE_DEVICES may hide them)");
    g_devices = calloc((size_t)n, sizeof *g_devices);
    if (!g_devices) return cu_fail(AG_ERR_OUT_OF_MEMORY, "cuda: out of host memory at init");
    for (int i = 0; i < n; i++) {
        const ag_status st = open_device(&g_devices[i], i);
        g_device_count = i + 1; /* so that release_devices sees the stream made so far */
        if (st != AG_OK) {
            char why[1024];
            snprintf(why, sizeof why, "%.1000s", g_last_error);
            release_devices();
            return cu_fail(AG_ERR_DEVICE, "no CUDA device: device %d could not be opened: %s", i,
                           why);
        }
    }
    register_exit_shutdown();
    return AG_OK;
}

static int cu_device_count_slot(void) {
    if (g_device_count == 0) cu_fail(AG_ERR_DEVICE, "cuda: no devices (init failed or not run)");
    return g_device_count;
}

static ag_status cu_device_info(int device, ag_device_info *info) {
    ag_status st = cu_enter(device, "device_info", NULL);
    if (st != AG_OK) return st;
    if (!info || info->struct_size < sizeof info->struct_size)
        return cu_fail(AG_ERR_INVALID_ARG, "cuda: device_info needs an ag_device_info");
    const cu_device *d = cu_device_at(device);
    ag_device_info full;
    memset(&full, 0, sizeof full);
    snprintf(full.name, sizeof full.name, "%.100s (sm_%d%d)", d->name, d->cc_major % 100,
             d->cc_minor % 10);
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
        full.total_memory = total_bytes;
        full.free_memory = free_bytes;
    }
    full.compute_units = d->sm_count;
    const size_t n = info->struct_size < sizeof full ? info->struct_size : sizeof full;
    full.struct_size = info->struct_size;
    memcpy(info, &full, n);
    return AG_OK;
}

static const cu_kernel_entry *const g_tables[] = {
    cu_elementwise_kernels, cu_reduce_kernels, cu_matmul_kernels,
    cu_index_kernels,       cu_nn_kernels,     cu_optim_kernels,
};

static ag_status cu_get_kernel(const char *kernel, ag_dtype dtype, ag_kernel_fn *out) {
    return ag_kt_find_kernel(g_tables, (int)(sizeof g_tables / sizeof g_tables[0]), "cuda", kernel,
                             dtype, out, cu_fail);
}

static void *cu_get_proc_address(const char *name) {
    if (!name) return NULL;
    if (strcmp(name, "cuda_set_allow_tf32") == 0) return (void *)cu_set_allow_tf32;
    if (strcmp(name, "cuda_get_allow_tf32") == 0) return (void *)cu_get_allow_tf32;
    if (strcmp(name, "cuda_compile_test") == 0) return (void *)cu_compile_test;
    if (strcmp(name, "ag_reference_gemm") == 0) return (void *)cu_reference_gemm;
    return NULL;
}

static const ag_backend_iface g_iface = {
    .struct_size = sizeof(ag_backend_iface),
    .abi_major = AG_BACKEND_ABI_MAJOR,
    .abi_minor = AG_BACKEND_ABI_MINOR,
    .name = "cuda",
    .init = cu_init,
    .shutdown = cu_shutdown,
    .last_error = cu_error_text,
    .device_count = cu_device_count_slot,
    .device_info = cu_device_info,
    .alloc = cu_alloc,
    .free = cu_free,
    .copy_from_host = cu_copy_from_host,
    .copy_to_host = cu_copy_to_host,
    .copy_device = cu_copy_device,
    .synchronize = cu_synchronize,
    .get_kernel = cu_get_kernel,
    .memory_stats = cu_memory_stats,
    .empty_cache = cu_empty_cache,
    .get_proc_address = cu_get_proc_address,
    .source_language = "cuda",
    .build_source = cu_build_source,
    .launch_source = cu_launch_source,
};

/* The backend's one exported symbol: returns its function table whatever the host's
 * version (the core compares versions and reports a mismatch). */
__attribute__((visibility("default"))) const ag_backend_iface *
ag_backend_entry(uint32_t host_abi_major, uint32_t host_abi_minor) {
    (void)host_abi_major;
    (void)host_abi_minor;
    return &g_iface;
}
