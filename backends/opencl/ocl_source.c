/* Kernels given as OpenCL C source (plugins' ag_plugin_kernel_source, backend ABI 1.1):
 * build_source builds the program on every device and returns a handle naming (source,
 * entry); launch_source sets the buffers and sizes as arguments and enqueues one work item
 * per index. Programs and per-thread kernel objects live in ocl_program.c's caches, built
 * bare (the source exactly as the plugin gave it). */
#include "ocl_kernel_util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* What a handle from build_source names. */
typedef struct source_kernel {
    struct source_kernel *next;
    const char *source; /* the plugin's text, by address (static while the plugin is loaded) */
    char *entry;        /* copy of the kernel function's name */
} source_kernel;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static source_kernel *g_source_kernels;

ag_status ocl_build_source(const char *source, const char *entry, void **out) {
    if (!source || !entry || !out)
        return ocl_fail(AG_ERR_INVALID_ARG, "opencl: build_source with a NULL pointer");
    pthread_mutex_lock(&g_lock);
    for (source_kernel *k = g_source_kernels; k; k = k->next)
        if (k->source == source && strcmp(k->entry, entry) == 0) {
            *out = k;
            pthread_mutex_unlock(&g_lock);
            return AG_OK;
        }
    pthread_mutex_unlock(&g_lock);
    for (int device = 0; device < ocl_device_count(); device++) {
        const ag_status st = ocl_source_build(device, source, entry);
        if (st != AG_OK) return st;
    }
    source_kernel *k = calloc(1, sizeof *k);
    if (k) k->entry = strdup(entry);
    if (!k || !k->entry) {
        free(k);
        return ocl_fail(AG_ERR_OUT_OF_MEMORY, "opencl: out of host memory in build_source");
    }
    k->source = source;
    pthread_mutex_lock(&g_lock);
    k->next = g_source_kernels; /* a twin built by another thread meanwhile is harmless */
    g_source_kernels = k;
    pthread_mutex_unlock(&g_lock);
    *out = k;
    return AG_OK;
}

ag_status ocl_launch_source(void *kernel, const ag_kernel_args *args, int n_sizes,
                            const int64_t *sizes, int64_t work_items) {
    const source_kernel *k = kernel;
    if (!k || !args || args->struct_size < sizeof(ag_kernel_args) || n_sizes < 0 ||
        (n_sizes > 0 && !sizes) || work_items < 0)
        return ocl_fail(AG_ERR_INVALID_ARG, "opencl: launch_source with invalid arguments");
    if (!ocl_device_at(args->device))
        return ocl_fail(AG_ERR_DEVICE, "opencl: %s on device %d (%d devices)", k->entry,
                        args->device, ocl_device_count());
    cl_kernel cl;
    ag_status st = ocl_source_kernel_get(args->device, k->source, k->entry, &cl);
    int arg = 0;
    for (int i = 0; i < args->n_inputs + args->n_outputs && st == AG_OK && arg >= 0; i++) {
        const ag_kernel_tensor *t =
            i < args->n_inputs ? &args->inputs[i] : &args->outputs[i - args->n_inputs];
        if (t->offset != 0)
            return ocl_fail(AG_ERR_INVALID_ARG,
                            "opencl: %s: tensor %d starts at element %lld, not 0", k->entry, i,
                            (long long)t->offset);
        const cl_mem mem = (cl_mem)t->data;
        arg = ocl_arg_value(cl, arg, sizeof mem, &mem);
    }
    for (int i = 0; i < n_sizes && st == AG_OK && arg >= 0; i++) {
        const cl_long size = sizes[i];
        arg = ocl_arg_value(cl, arg, sizeof size, &size);
    }
    if (st == AG_OK && arg < 0) st = AG_ERR_INTERNAL;
    if (st == AG_OK && work_items > 0) st = ocl_launch(args->device, cl, work_items, k->entry);
    return st;
}

void ocl_source_shutdown(void) {
    pthread_mutex_lock(&g_lock);
    while (g_source_kernels) {
        source_kernel *k = g_source_kernels;
        g_source_kernels = k->next;
        free(k->entry);
        free(k);
    }
    pthread_mutex_unlock(&g_lock);
}
