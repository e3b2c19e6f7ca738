/* The cpu backend's entry point: function table, init/shutdown, device info, error
 * state, kernel lookup and the "cpu_set_num_threads" extra. */
#include "cpu_internal.h"

#include <cblas.h>
#include <omp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>

/* Message of the last failure on this thread. */
static _Thread_local char g_last_error[512];

/* Threads per kernel; 0 means the OpenMP default. Atomic: any thread may set it. */
static atomic_int g_num_threads;

ag_status cpu_fail(ag_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
    va_end(ap);
    return status;
}

static const char *cpu_last_error(void) {
    return g_last_error;
}

int cpu_num_threads(void) {
    const int n = atomic_load_explicit(&g_num_threads, memory_order_relaxed);
    return n > 0 ? n : omp_get_max_threads();
}

/* Extra "cpu_set_num_threads": threads for kernels and BLAS; n <= 0 restores the default. */
static void cpu_set_num_threads(int n) {
    atomic_store_explicit(&g_num_threads, n > 0 ? n : 0, memory_order_relaxed);
    openblas_set_num_threads(cpu_num_threads());
}

/* Extra "cpu_get_num_threads": the thread count kernels currently use. */
static int cpu_get_num_threads(void) {
    return cpu_num_threads();
}

/* Number of logical devices: AG_CPU_DEVICES (1..64, default 1). Several logical devices
 * share host memory and threads; they exist so that device placement, cross-device copies
 * and mixing errors can be tested on a machine with one CPU. Atomic: read by any thread. */
static atomic_int g_device_count = 1;

static ag_status cpu_init(void) {
    const char *env = getenv("AG_CPU_DEVICES");
    int n = env && env[0] ? atoi(env) : 1;
    if (n < 1 || n > 64)
        return cpu_fail(AG_ERR_INVALID_ARG, "cpu: AG_CPU_DEVICES=%s is not a count in 1..64", env);
    atomic_store(&g_device_count, n);
    return AG_OK;
}

bool cpu_device_valid(int device) {
    return device >= 0 && device < atomic_load(&g_device_count);
}

static void cpu_shutdown(void) {
    cpu_empty_cache(0);
}

static int cpu_device_count(void) {
    return atomic_load(&g_device_count);
}

/* Copies the value of the first "model name" line of /proc/cpuinfo into name. */
static void read_cpu_name(char *name, size_t size) {
    snprintf(name, size, "cpu");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        const char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) != 0 || !colon) continue;
        colon++;
        while (*colon == ' ' || *colon == '\t') colon++;
        snprintf(name, size, "%.*s", (int)strcspn(colon, "\n"), colon);
        break;
    }
    fclose(f);
}

/* Bytes of MemAvailable from /proc/meminfo (what can be allocated without swapping),
 * or 0 if it cannot be read. */
static uint64_t read_mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) break;
    fclose(f);
    return (uint64_t)kib * 1024u;
}

static ag_status cpu_device_info(int device, ag_device_info *info) {
    if (!cpu_device_valid(device))
        return cpu_fail(AG_ERR_DEVICE, "cpu: no device %d (%d devices)", device,
                        cpu_device_count());
    if (!info || info->struct_size < sizeof info->struct_size)
        return cpu_fail(AG_ERR_INVALID_ARG, "cpu: device_info needs an ag_device_info");
    ag_device_info full;
    memset(&full, 0, sizeof full);
    read_cpu_name(full.name, sizeof full.name);
    struct sysinfo si;
    if (sysinfo(&si) == 0) {
        full.total_memory = (uint64_t)si.totalram * si.mem_unit;
        full.free_memory = (uint64_t)si.freeram * si.mem_unit;
    }
    const uint64_t available = read_mem_available();
    if (available) full.free_memory = available;
    full.compute_units = omp_get_num_procs();
    /* Write only what the caller's (possibly older, smaller) struct holds. */
    const size_t n = info->struct_size < sizeof full ? info->struct_size : sizeof full;
    full.struct_size = info->struct_size;
    memcpy(info, &full, n);
    return AG_OK;
}

/* Checks a device index and a byte range for the copy slots. */
static ag_status check_copy(const char *what, int device, const void *a, const void *b) {
    if (!cpu_device_valid(device))
        return cpu_fail(AG_ERR_DEVICE, "cpu: %s on device %d (%d devices)", what, device,
                        atomic_load(&g_device_count));
    if (!a || !b) return cpu_fail(AG_ERR_INVALID_ARG, "cpu: %s with a NULL pointer", what);
    return AG_OK;
}

static ag_status cpu_copy_from_host(int device, void *dst, size_t dst_offset, const void *src,
                                    size_t bytes) {
    if (bytes == 0) return AG_OK;
    const ag_status st = check_copy("copy_from_host", device, dst, src);
    if (st != AG_OK) return st;
    memcpy((char *)dst + dst_offset, src, bytes);
    return AG_OK;
}

static ag_status cpu_copy_to_host(int device, void *dst, const void *src, size_t src_offset,
                                  size_t bytes) {
    if (bytes == 0) return AG_OK;
    const ag_status st = check_copy("copy_to_host", device, dst, src);
    if (st != AG_OK) return st;
    memcpy(dst, (const char *)src + src_offset, bytes);
    return AG_OK;
}

static ag_status cpu_copy_device(int device, void *dst, size_t dst_offset, const void *src,
                                 size_t src_offset, size_t bytes) {
    if (bytes == 0) return AG_OK;
    const ag_status st = check_copy("copy_device", device, dst, src);
    if (st != AG_OK) return st;
    /* memmove: both ranges may lie in one buffer. */
    memmove((char *)dst + dst_offset, (const char *)src + src_offset, bytes);
    return AG_OK;
}

static ag_status cpu_synchronize(int device) {
    if (!cpu_device_valid(device))
        return cpu_fail(AG_ERR_DEVICE, "cpu: no device %d (%d devices)", device,
                        cpu_device_count());
    return AG_OK; /* kernels run synchronously */
}

static const cpu_kernel_entry *const g_tables[] = {
    cpu_elementwise_kernels, cpu_reduce_kernels, cpu_matmul_kernels, cpu_index_kernels,
    cpu_softmax_kernels,     cpu_nn_kernels,     cpu_optim_kernels,
};

static ag_status cpu_get_kernel(const char *kernel, ag_dtype dtype, ag_kernel_fn *out) {
    if (!kernel || !out) return cpu_fail(AG_ERR_INVALID_ARG, "cpu: get_kernel with a NULL pointer");
    char have[64] = ""; /* dtypes the kernel exists for, to explain a miss */
    size_t used = 0;
    for (size_t t = 0; t < sizeof g_tables / sizeof g_tables[0]; t++) {
        for (const cpu_kernel_entry *e = g_tables[t]; e->name; e++) {
            if (strcmp(e->name, kernel) != 0) continue;
            if (e->dtype == dtype) {
                *out = e->fn;
                return AG_OK;
            }
            if (used < sizeof have)
                used += (size_t)snprintf(have + used, sizeof have - used, "%s%s", used ? ", " : "",
                                         ag_dtype_name(e->dtype));
        }
    }
    if (used)
        return cpu_fail(AG_ERR_UNSUPPORTED, "cpu backend has no kernel '%s' for %s (it has %s)",
                        kernel, ag_dtype_name(dtype), have);
    return cpu_fail(AG_ERR_UNSUPPORTED, "cpu backend has no kernel '%s' for %s", kernel,
                    ag_dtype_name(dtype));
}

static void *cpu_get_proc_address(const char *name) {
    if (!name) return NULL;
    if (strcmp(name, "cpu_set_num_threads") == 0) return (void *)cpu_set_num_threads;
    if (strcmp(name, "cpu_get_num_threads") == 0) return (void *)cpu_get_num_threads;
    if (strcmp(name, "ag_reference_gemm") == 0) return (void *)cpu_reference_gemm;
    /* Buffers are plain host pointers: plugins' cpu kernels may run on them. */
    if (strcmp(name, "ag_host_memory") == 0) return (void *)cpu_get_proc_address;
    return NULL;
}

static const ag_backend_iface g_iface = {
    .struct_size = sizeof(ag_backend_iface),
    .abi_major = AG_BACKEND_ABI_MAJOR,
    .abi_minor = AG_BACKEND_ABI_MINOR,
    .name = "cpu",
    .init = cpu_init,
    .shutdown = cpu_shutdown,
    .last_error = cpu_last_error,
    .device_count = cpu_device_count,
    .device_info = cpu_device_info,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .copy_from_host = cpu_copy_from_host,
    .copy_to_host = cpu_copy_to_host,
    .copy_device = cpu_copy_device,
    .synchronize = cpu_synchronize,
    .get_kernel = cpu_get_kernel,
    .memory_stats = cpu_memory_stats,
    .empty_cache = cpu_empty_cache,
    .get_proc_address = cpu_get_proc_address,
};

/* The backend's one exported symbol: returns its function table whatever the host's
 * version (the core compares versions and reports a mismatch). */
__attribute__((visibility("default"))) const ag_backend_iface *
ag_backend_entry(uint32_t host_abi_major, uint32_t host_abi_minor) {
    (void)host_abi_major;
    (void)host_abi_minor;
    return &g_iface;
}
