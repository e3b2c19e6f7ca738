/* The OpenCL backend's entry point: function table, init/shutdown (devices of every
 * platform, one context and in-order queue each), device info, error state, kernel lookup
 * and the "ocl_build_test" extra. */
#include "ocl_internal.h"

#include <CL/cl_ext.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Message of the last failure on this thread; large enough for a build log excerpt. */
static _Thread_local char g_last_error[8192];

/* Devices found by init (freed by shutdown). Written only by init and shutdown, which the
 * core never runs concurrently with other calls. */
static ocl_device *g_devices;
static int g_device_count;
static char g_skipped[1024]; /* why the last device left out at init could not be opened */

ag_status ocl_fail(ag_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
    va_end(ap);
    return status;
}

static const char *ocl_last_error(void) {
    return g_last_error;
}

const char *ocl_error_name(cl_int err) {
    switch (err) {
#define NAME(e)                                                                                    \
    case e:                                                                                        \
        return #e;
        NAME(CL_SUCCESS)
        NAME(CL_DEVICE_NOT_FOUND)
        NAME(CL_DEVICE_NOT_AVAILABLE)
        NAME(CL_COMPILER_NOT_AVAILABLE)
        NAME(CL_MEM_OBJECT_ALLOCATION_FAILURE)
        NAME(CL_OUT_OF_RESOURCES)
        NAME(CL_OUT_OF_HOST_MEMORY)
        NAME(CL_PROFILING_INFO_NOT_AVAILABLE)
        NAME(CL_MEM_COPY_OVERLAP)
        NAME(CL_IMAGE_FORMAT_MISMATCH)
        NAME(CL_IMAGE_FORMAT_NOT_SUPPORTED)
        NAME(CL_BUILD_PROGRAM_FAILURE)
        NAME(CL_MAP_FAILURE)
        NAME(CL_MISALIGNED_SUB_BUFFER_OFFSET)
        NAME(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
        NAME(CL_COMPILE_PROGRAM_FAILURE)
        NAME(CL_LINKER_NOT_AVAILABLE)
        NAME(CL_LINK_PROGRAM_FAILURE)
        NAME(CL_DEVICE_PARTITION_FAILED)
        NAME(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)
        NAME(CL_INVALID_VALUE)
        NAME(CL_INVALID_DEVICE_TYPE)
        NAME(CL_INVALID_PLATFORM)
        NAME(CL_INVALID_DEVICE)
        NAME(CL_INVALID_CONTEXT)
        NAME(CL_INVALID_QUEUE_PROPERTIES)
        NAME(CL_INVALID_COMMAND_QUEUE)
        NAME(CL_INVALID_HOST_PTR)
        NAME(CL_INVALID_MEM_OBJECT)
        NAME(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR)
        NAME(CL_INVALID_IMAGE_SIZE)
        NAME(CL_INVALID_SAMPLER)
        NAME(CL_INVALID_BINARY)
        NAME(CL_INVALID_BUILD_OPTIONS)
        NAME(CL_INVALID_PROGRAM)
        NAME(CL_INVALID_PROGRAM_EXECUTABLE)
        NAME(CL_INVALID_KERNEL_NAME)
        NAME(CL_INVALID_KERNEL_DEFINITION)
        NAME(CL_INVALID_KERNEL)
        NAME(CL_INVALID_ARG_INDEX)
        NAME(CL_INVALID_ARG_VALUE)
        NAME(CL_INVALID_ARG_SIZE)
        NAME(CL_INVALID_KERNEL_ARGS)
        NAME(CL_INVALID_WORK_DIMENSION)
        NAME(CL_INVALID_WORK_GROUP_SIZE)
        NAME(CL_INVALID_WORK_ITEM_SIZE)
        NAME(CL_INVALID_GLOBAL_OFFSET)
        NAME(CL_INVALID_EVENT_WAIT_LIST)
        NAME(CL_INVALID_EVENT)
        NAME(CL_INVALID_OPERATION)
        NAME(CL_INVALID_GL_OBJECT)
        NAME(CL_INVALID_BUFFER_SIZE)
        NAME(CL_INVALID_MIP_LEVEL)
        NAME(CL_INVALID_GLOBAL_WORK_SIZE)
        NAME(CL_INVALID_PROPERTY)
        NAME(CL_INVALID_IMAGE_DESCRIPTOR)
        NAME(CL_INVALID_COMPILER_OPTIONS)
        NAME(CL_INVALID_LINKER_OPTIONS)
        NAME(CL_INVALID_DEVICE_PARTITION_COUNT)
        NAME(CL_PLATFORM_NOT_FOUND_KHR)
#undef NAME
    default:
        return "unknown OpenCL error";
    }
}

ag_status ocl_check(cl_int err, const char *what) {
    if (err == CL_SUCCESS) return AG_OK;
    /* Allocation failures surface on many calls (drivers allocate lazily). */
    const ag_status st = err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_HOST_MEMORY
                             ? AG_ERR_OUT_OF_MEMORY
                             : AG_ERR_INTERNAL;
    return ocl_fail(st, "opencl: %s failed with %s (%d)", what, ocl_error_name(err), (int)err);
}

int ocl_device_count(void) {
    return g_device_count;
}

ocl_device *ocl_device_at(int index) {
    return index >= 0 && index < g_device_count ? &g_devices[index] : NULL;
}

/* Releases the context and queue of every device and forgets them. */
static void release_devices(void) {
    for (int i = 0; i < g_device_count; i++) {
        if (g_devices[i].queue) clReleaseCommandQueue(g_devices[i].queue);
        if (g_devices[i].context) clReleaseContext(g_devices[i].context);
    }
    free(g_devices);
    g_devices = NULL;
    g_device_count = 0;
}

/* Fills d (id and platform set) with its properties, context and queue. */
static ag_status open_device(ocl_device *d) {
    cl_int err = clGetDeviceInfo(d->id, CL_DEVICE_NAME, sizeof d->name, d->name, NULL);
    if (err != CL_SUCCESS) snprintf(d->name, sizeof d->name, "OpenCL device");
    d->name[sizeof d->name - 1] = '\0';
    char platform[64] = "";
    if (clGetPlatformInfo(d->platform, CL_PLATFORM_NAME, sizeof platform, platform, NULL) ==
            CL_SUCCESS &&
        platform[0]) {
        /* "<device> (<platform>)" tells apart the same card under two drivers. */
        const size_t len = strlen(d->name);
        snprintf(d->name + len, sizeof d->name - len, " (%.*s)", (int)sizeof platform - 1,
                 platform);
    }
    cl_device_fp_config fp64 = 0;
    if (clGetDeviceInfo(d->id, CL_DEVICE_DOUBLE_FP_CONFIG, sizeof fp64, &fp64, NULL) != CL_SUCCESS)
        fp64 = 0;
    d->fp64 = fp64 != 0;
    size_t wg = 1;
    if (clGetDeviceInfo(d->id, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof wg, &wg, NULL) != CL_SUCCESS)
        wg = 1;
    d->max_work_group = wg ? wg : 1;
    cl_ulong local = 0;
    if (clGetDeviceInfo(d->id, CL_DEVICE_LOCAL_MEM_SIZE, sizeof local, &local, NULL) != CL_SUCCESS)
        local = 0;
    d->local_mem = local;

    const cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)d->platform,
                                           0};
    d->context = clCreateContext(props, 1, &d->id, NULL, NULL, &err);
    if (err != CL_SUCCESS) return ocl_check(err, "clCreateContext");
    /* clCreateCommandQueue is deprecated in 2.0 but is the 1.2 call we target. */
    d->queue = clCreateCommandQueue(d->context, d->id, 0, &err);
    if (err != CL_SUCCESS) return ocl_check(err, "clCreateCommandQueue");
    return AG_OK;
}

/* Appends the available devices of `platform` to g_devices. */
static ag_status add_platform_devices(cl_platform_id platform) {
    cl_uint n = 0;
    cl_int err = clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 0, NULL, &n);
    if (err == CL_DEVICE_NOT_FOUND || n == 0) return AG_OK;
    if (err != CL_SUCCESS) return ocl_check(err, "clGetDeviceIDs");
    cl_device_id *ids = calloc(n, sizeof *ids);
    ocl_device *grown = realloc(g_devices, (size_t)(g_device_count + (int)n) * sizeof *grown);
    if (!ids || !grown) {
        free(ids);
        if (grown) g_devices = grown;
        return ocl_fail(AG_ERR_OUT_OF_MEMORY, "opencl: out of host memory listing devices");
    }
    g_devices = grown;
    err = clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, n, ids, NULL);
    const ag_status st = ocl_check(err, "clGetDeviceIDs");
    for (cl_uint i = 0; st == AG_OK && i < n; i++) {
        cl_bool available = CL_FALSE;
        if (clGetDeviceInfo(ids[i], CL_DEVICE_AVAILABLE, sizeof available, &available, NULL) !=
                CL_SUCCESS ||
            !available)
            continue;
        ocl_device *d = &g_devices[g_device_count];
        memset(d, 0, sizeof *d);
        d->platform = platform;
        d->id = ids[i];
        if (open_device(d) == AG_OK) {
            g_device_count++;
            continue;
        }
        /* A device that cannot be opened is left out rather than hiding the others; its
         * error is kept for init's message should no device remain. */
        snprintf(g_skipped, sizeof g_skipped, "%.128s: %.800s", d->name, ocl_last_error());
        if (d->queue) clReleaseCommandQueue(d->queue);
        if (d->context) clReleaseContext(d->context);
    }
    free(ids);
    return st;
}

/* Waits for the queued work of every device. */
static void finish_queues(void) {
    for (int i = 0; i < g_device_count; i++)
        if (g_devices[i].queue) clFinish(g_devices[i].queue);
}

/* Exit guard. Work still queued at process exit must finish while the driver's compiler
 * is intact: PoCL compiles a kernel on its own threads when the kernel first runs, and
 * aborts or crashes if the compiler's static objects (created lazily by that first
 * compile, destroyed by exit handlers in reverse order of creation) are gone. libag calls
 * shutdown from its destructor, after every exit handler, so shutdown alone is too late.
 * Hence finish_queues is registered with atexit after each synchronising call that
 * follows the first use of a new kernel: that compile has then happened, so the handler
 * runs before the objects it created are destroyed. Registrations are bounded by the
 * number of kernel objects; the library is never unmapped (-z nodelete), so the handler
 * stays valid. */
static atomic_bool g_exit_guard_dirty;

void ocl_exit_guard_dirty(void) {
    atomic_store(&g_exit_guard_dirty, true);
}

void ocl_exit_guard_settle(void) {
    if (atomic_load_explicit(&g_exit_guard_dirty, memory_order_relaxed) &&
        atomic_exchange(&g_exit_guard_dirty, false) && atexit(finish_queues) != 0)
        atomic_store(&g_exit_guard_dirty, true); /* try again at the next synchronisation */
}

static void ocl_shutdown(void) {
    finish_queues(); /* kernels still queued use the programs and buffers released below */
    ocl_source_shutdown();
    ocl_program_shutdown();
    ocl_memory_shutdown();
    release_devices();
}

static ag_status ocl_init(void) {
    ocl_shutdown(); /* init may run again in one process (docs/backends.md) */
    g_skipped[0] = '\0';
    cl_uint n = 0;
    cl_int err = clGetPlatformIDs(0, NULL, &n);
    if (err != CL_SUCCESS || n == 0)
        return ocl_fail(AG_ERR_DEVICE,
                        "no OpenCL platform: clGetPlatformIDs found none (%s); is an OpenCL "
                        "driver (ICD) installed and listed in /etc/OpenCL/vendors?",
                        err != CL_SUCCESS ? ocl_error_name(err) : "0 platforms");
    cl_platform_id *platforms = calloc(n, sizeof *platforms);
    if (!platforms) return ocl_fail(AG_ERR_OUT_OF_MEMORY, "opencl: out of host memory at init");
    err = clGetPlatformIDs(n, platforms, NULL);
    ag_status st = ocl_check(err, "clGetPlatformIDs");
    for (cl_uint i = 0; st == AG_OK && i < n; i++) {
        const ag_status pst = add_platform_devices(platforms[i]);
        if (pst == AG_ERR_OUT_OF_MEMORY) st = pst;
        /* As a device, a platform that fails to list its devices is left out. */
        if (pst != AG_OK)
            snprintf(g_skipped, sizeof g_skipped, "platform %u: %.900s", (unsigned)i,
                     ocl_last_error());
    }
    free(platforms);
    if (st != AG_OK) {
        release_devices();
        return st;
    }
    if (g_device_count == 0)
        return ocl_fail(AG_ERR_DEVICE, "no OpenCL device available on %u OpenCL platform(s)%s%s",
                        (unsigned)n, g_skipped[0] ? "; " : "", g_skipped);
    return AG_OK;
}

static int ocl_device_count_slot(void) {
    if (g_device_count == 0) ocl_fail(AG_ERR_DEVICE, "opencl: no devices (init failed or not run)");
    return g_device_count;
}

static ag_status ocl_device_info(int device, ag_device_info *info) {
    const ocl_device *d = ocl_device_at(device);
    if (!d)
        return ocl_fail(AG_ERR_DEVICE, "opencl: no device %d (%d devices)", device, g_device_count);
    if (!info || info->struct_size < sizeof info->struct_size)
        return ocl_fail(AG_ERR_INVALID_ARG, "opencl: device_info needs an ag_device_info");
    ag_device_info full;
    memset(&full, 0, sizeof full);
    snprintf(full.name, sizeof full.name, "%s", d->name);
    cl_ulong mem = 0;
    if (clGetDeviceInfo(d->id, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof mem, &mem, NULL) == CL_SUCCESS)
        full.total_memory = mem;
    cl_uint units = 0;
    if (clGetDeviceInfo(d->id, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof units, &units, NULL) ==
        CL_SUCCESS)
        full.compute_units = (int)units;
    /* OpenCL 1.2 has no query for free memory: free_memory stays 0 (unknown). */
    const size_t n = info->struct_size < sizeof full ? info->struct_size : sizeof full;
    full.struct_size = info->struct_size;
    memcpy(info, &full, n);
    return AG_OK;
}

static const ocl_kernel_entry *const g_tables[] = {
    ocl_elementwise_kernels, ocl_reduce_kernels, ocl_matmul_kernels,
    ocl_index_kernels,       ocl_nn_kernels,     ocl_optim_kernels,
};

/* Whether some device has cl_khr_fp64. */
static bool any_fp64(void) {
    for (int i = 0; i < g_device_count; i++)
        if (g_devices[i].fp64) return true;
    return false;
}

static ag_status ocl_get_kernel(const char *kernel, ag_dtype dtype, ag_kernel_fn *out) {
    const ag_status st = ag_kt_find_kernel(g_tables, (int)(sizeof g_tables / sizeof g_tables[0]),
                                           "opencl", kernel, dtype, out, ocl_fail);
    /* A device without fp64 also refuses at build time (ocl_kernel_get); here the whole
     * backend refuses when no device could run it. */
    if (st == AG_OK && dtype == AG_F64 && !any_fp64())
        return ocl_fail(AG_ERR_UNSUPPORTED,
                        "opencl backend has no kernel '%s' for float64: no device has "
                        "cl_khr_fp64 (device 0: %s)",
                        kernel, g_device_count ? g_devices[0].name : "none");
    return st;
}

static void *ocl_get_proc_address(const char *name) {
    /* Extra "ocl_build_test" lets tests see build failures and their logs. */
    if (name && strcmp(name, "ocl_build_test") == 0) return (void *)ocl_build_test;
    return NULL;
}

static const ag_backend_iface g_iface = {
    .struct_size = sizeof(ag_backend_iface),
    .abi_major = AG_BACKEND_ABI_MAJOR,
    .abi_minor = AG_BACKEND_ABI_MINOR,
    .name = "opencl",
    .init = ocl_init,
    .shutdown = ocl_shutdown,
    .last_error = ocl_last_error,
    .device_count = ocl_device_count_slot,
    .device_info = ocl_device_info,
    .alloc = ocl_alloc,
    .free = ocl_free,
    .copy_from_host = ocl_copy_from_host,
    .copy_to_host = ocl_copy_to_host,
    .copy_device = ocl_copy_device,
    .synchronize = ocl_synchronize,
    .get_kernel = ocl_get_kernel,
    .memory_stats = ocl_memory_stats,
    .empty_cache = ocl_empty_cache,
    .get_proc_address = ocl_get_proc_address,
    .source_language = "opencl",
    .build_source = ocl_build_source,
    .launch_source = ocl_launch_source,
};

/* The backend's one exported symbol: returns its function table whatever the host's
 * version (the core compares versions and reports a mismatch). */
__attribute__((visibility("default"))) const ag_backend_iface *
ag_backend_entry(uint32_t host_abi_major, uint32_t host_abi_minor) {
    (void)host_abi_major;
    (void)host_abi_minor;
    return &g_iface;
}
