/* Kernels given as CUDA C source (plugins' ag_plugin_kernel_source, backend ABI 1.1),
 * compiled at run time with NVRTC.
 *
 * build_source compiles the source once per distinct GPU architecture among the devices
 * (sm_<major><minor>, to a cubin), loads each cubin as a library and finds the entry in it;
 * the handle keeps one kernel per device. Compiled programs are cached in memory by the
 * hash of (source, entry) and the architecture, so a plugin's kernel is compiled once per
 * process whatever asks for it. NVRTC needs no device, which lets cu_compile_test check
 * sources on machines without a GPU. launch_source passes the buffers (element 0 at the
 * pointer) and the sizes, one thread per work item, on the device's stream. */
#include "cuda_internal.h"

#include <limits.h>
#include <nvrtc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LAUNCH_THREADS 256 /* threads per block of a source kernel launch */
#define MAX_SIZES      8   /* most size arguments after the buffers */
/* Most buffers: a backward kernel's gradients, saved inputs and saved outputs (3 × 8 in
 * plugin ABI 1.1), then its 8 outputs. */
#define MAX_TENSORS 32

/* A compiled (source, entry): one loaded library and kernel per device. */
typedef struct source_kernel {
    struct source_kernel *next;
    uint64_t hash;          /* of source and entry */
    char *entry;            /* copy of the kernel function's name */
    int n_devices;          /* entries below */
    cudaLibrary_t *library; /* per device; devices of one architecture share it */
    cudaKernel_t *kernel;   /* per device */
} source_kernel;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static source_kernel *g_kernels;

/* FNV-1a over a string and its terminator. */
static uint64_t fnv_str(uint64_t h, const char *s) {
    do h = (h ^ (unsigned char)*s) * 1099511628211ull;
    while (*s++);
    return h;
}

/* Compiles source for sm_<arch> to a malloc'ed cubin in *cubin (size in *size); the
 * entry's lowered name (its symbol) goes to lowered (size bytes). Compile errors give
 * AG_ERR_INTERNAL with NVRTC's log. */
static ag_status compile(const char *source, const char *entry, int arch, char **cubin,
                         size_t *size, char *lowered, size_t lowered_size) {
    nvrtcProgram prog;
    nvrtcResult r = nvrtcCreateProgram(&prog, source, "plugin_kernel.cu", 0, NULL, NULL);
    if (r != NVRTC_SUCCESS)
        return cu_fail(AG_ERR_INTERNAL, "cuda: nvrtcCreateProgram for kernel '%s': %s", entry,
                       nvrtcGetErrorString(r));
    /* The name expression makes NVRTC fail when the entry does not exist, and gives its
     * symbol whether or not it is extern "C". */
    r = nvrtcAddNameExpression(prog, entry);
    char option[32];
    snprintf(option, sizeof option, "--gpu-architecture=sm_%d", arch);
    const char *options[] = {option, "--std=c++17"};
    if (r == NVRTC_SUCCESS) r = nvrtcCompileProgram(prog, 2, options);
    ag_status st = AG_OK;
    if (r != NVRTC_SUCCESS) {
        size_t log_size = 0;
        char *log =
            nvrtcGetProgramLogSize(prog, &log_size) == NVRTC_SUCCESS ? malloc(log_size + 1) : NULL;
        if (log && nvrtcGetProgramLog(prog, log) != NVRTC_SUCCESS) log[0] = '\0';
        if (log) log[log_size] = '\0';
        st = cu_fail(AG_ERR_INTERNAL,
                     "cuda: NVRTC could not compile kernel '%s' for sm_%d (%s); log:\n%s", entry,
                     arch, nvrtcGetErrorString(r), log && log[0] ? log : "(empty)");
        free(log);
    }
    const char *name = NULL;
    if (st == AG_OK && (r = nvrtcGetLoweredName(prog, entry, &name)) != NVRTC_SUCCESS)
        st = cu_fail(AG_ERR_INTERNAL, "cuda: kernel '%s' not found in its source: %s", entry,
                     nvrtcGetErrorString(r));
    if (st == AG_OK) snprintf(lowered, lowered_size, "%s", name);
    *cubin = NULL;
    if (st == AG_OK && (r = nvrtcGetCUBINSize(prog, size)) == NVRTC_SUCCESS &&
        (*cubin = malloc(*size)) && (r = nvrtcGetCUBIN(prog, *cubin)) != NVRTC_SUCCESS) {
        free(*cubin);
        *cubin = NULL;
    }
    if (st == AG_OK && !*cubin)
        st = r != NVRTC_SUCCESS
                 ? cu_fail(AG_ERR_INTERNAL, "cuda: NVRTC cubin of kernel '%s': %s", entry,
                           nvrtcGetErrorString(r))
                 : cu_fail(AG_ERR_OUT_OF_MEMORY, "cuda: out of host memory in NVRTC");
    nvrtcDestroyProgram(&prog);
    return st;
}

ag_status cu_compile_test(const char *source, const char *entry, int arch) {
    if (!source || !entry)
        return cu_fail(AG_ERR_INVALID_ARG, "cuda: cuda_compile_test with a NULL pointer");
    char *cubin = NULL, lowered[256];
    size_t size = 0;
    const ag_status st = compile(source, entry, arch, &cubin, &size, lowered, sizeof lowered);
    free(cubin);
    return st;
}

/* Unloads k's libraries and frees it. */
static void free_kernel(source_kernel *k) {
    for (int i = 0; k->library && i < k->n_devices; i++) {
        bool shared = false; /* unload each library once */
        for (int j = 0; j < i && !shared; j++) shared = k->library[j] == k->library[i];
        if (k->library[i] && !shared) cudaLibraryUnload(k->library[i]);
    }
    free(k->library);
    free(k->kernel);
    free(k->entry);
    free(k);
}

/* Compiles and loads k (entry and n_devices set) for every device. */
static ag_status load_kernel(source_kernel *k, const char *source) {
    ag_status st = AG_OK;
    for (int i = 0; i < k->n_devices && st == AG_OK; i++) {
        const cu_device *d = cu_device_at(i);
        const int arch = d->cc_major * 10 + d->cc_minor;
        for (int j = 0; j < i && !k->library[i]; j++) { /* a device of the same arch */
            const cu_device *e = cu_device_at(j);
            if (e->cc_major * 10 + e->cc_minor == arch) {
                k->library[i] = k->library[j];
                k->kernel[i] = k->kernel[j];
            }
        }
        if (k->library[i]) continue;
        char *cubin = NULL, lowered[256];
        size_t size = 0;
        st = compile(source, k->entry, arch, &cubin, &size, lowered, sizeof lowered);
        if (st == AG_OK) st = cu_enter(i, "build_source", NULL);
        if (st == AG_OK)
            st = cu_check(cudaLibraryLoadData(&k->library[i], cubin, NULL, NULL, 0, NULL, NULL, 0),
                          "cudaLibraryLoadData of a plugin kernel");
        if (st == AG_OK)
            st = cu_check(cudaLibraryGetKernel(&k->kernel[i], k->library[i], lowered),
                          "cudaLibraryGetKernel of a plugin kernel");
        free(cubin);
    }
    return st;
}

ag_status cu_build_source(const char *source, const char *entry, void **out) {
    if (!source || !entry || !out)
        return cu_fail(AG_ERR_INVALID_ARG, "cuda: build_source with a NULL pointer");
    const uint64_t hash = fnv_str(fnv_str(14695981039346656037ull, source), entry);
    pthread_mutex_lock(&g_lock);
    for (source_kernel *k = g_kernels; k; k = k->next)
        if (k->hash == hash && strcmp(k->entry, entry) == 0) {
            *out = k;
            pthread_mutex_unlock(&g_lock);
            return AG_OK;
        }
    pthread_mutex_unlock(&g_lock);

    const int n = cu_device_count();
    if (n <= 0) return cu_fail(AG_ERR_DEVICE, "cuda: build_source without devices");
    source_kernel *k = calloc(1, sizeof *k);
    if (k) {
        k->hash = hash;
        k->n_devices = n;
        k->entry = strdup(entry);
        k->library = calloc((size_t)n, sizeof *k->library);
        k->kernel = calloc((size_t)n, sizeof *k->kernel);
    }
    if (!k || !k->entry || !k->library || !k->kernel) {
        if (k) free_kernel(k);
        return cu_fail(AG_ERR_OUT_OF_MEMORY, "cuda: out of host memory in build_source");
    }
    const ag_status st = load_kernel(k, source);
    if (st != AG_OK) {
        free_kernel(k);
        return st;
    }
    pthread_mutex_lock(&g_lock);
    k->next = g_kernels; /* a twin built by another thread meanwhile is harmless */
    g_kernels = k;
    pthread_mutex_unlock(&g_lock);
    *out = k;
    return AG_OK;
}

ag_status cu_launch_source(void *kernel, const ag_kernel_args *args, int n_sizes,
                           const int64_t *sizes, int64_t work_items) {
    const source_kernel *k = kernel;
    const int n_tensors = args ? args->n_inputs + args->n_outputs : 0;
    if (!k || !args || args->struct_size < sizeof(ag_kernel_args) || n_sizes < 0 ||
        n_sizes > MAX_SIZES || (n_sizes > 0 && !sizes) || work_items < 0 || n_tensors < 0 ||
        n_tensors > MAX_TENSORS)
        return cu_fail(AG_ERR_INVALID_ARG, "cuda: launch_source with invalid arguments");
    cudaStream_t stream;
    ag_status st = cu_enter(args->device, k->entry, &stream);
    if (st != AG_OK || work_items == 0) return st;
    const int64_t blocks = (work_items + LAUNCH_THREADS - 1) / LAUNCH_THREADS;
    if (blocks > INT_MAX)
        return cu_fail(AG_ERR_UNSUPPORTED,
                       "cuda: %s: %lld work items are more than one launch holds", k->entry,
                       (long long)work_items);
    void *pointers[MAX_TENSORS];
    long long values[MAX_SIZES];
    void *params[MAX_TENSORS + MAX_SIZES];
    for (int i = 0; i < n_tensors; i++) {
        const ag_kernel_tensor *t =
            i < args->n_inputs ? &args->inputs[i] : &args->outputs[i - args->n_inputs];
        pointers[i] = (char *)t->data + t->offset * (int64_t)ag_dtype_size(t->dtype);
        params[i] = &pointers[i];
    }
    for (int i = 0; i < n_sizes; i++) {
        values[i] = sizes[i];
        params[n_tensors + i] = &values[i];
    }
    const dim3 grid = {(unsigned)blocks, 1, 1}, block = {LAUNCH_THREADS, 1, 1};
    return cu_check(
        cudaLaunchKernel((const void *)k->kernel[args->device], grid, block, params, 0, stream),
        k->entry);
}

void cu_nvrtc_shutdown(void) {
    pthread_mutex_lock(&g_lock);
    source_kernel *all = g_kernels;
    g_kernels = NULL;
    pthread_mutex_unlock(&g_lock);
    while (all) {
        source_kernel *next = all->next;
        free_kernel(all);
        all = next;
    }
}
