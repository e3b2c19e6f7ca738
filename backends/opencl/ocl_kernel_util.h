/* Host-side helpers shared by the reduction, softmax, matmul and indexing kernel entries
 * (ocl_kernels_reduce.c, ocl_kernels_matmul.c, ocl_kernels_index.c): argument checks, shape
 * strings and dimension coalescing of views that walk the same shape. */
#ifndef AG_OCL_KERNEL_UTIL_H
#define AG_OCL_KERNEL_UTIL_H

#include "ocl_internal.h"

#include <stdio.h>

/* Work-group size of 1-D launches: a fixed size, so that drivers which compile per local
 * size (PoCL) compile each kernel once. */
#define OCL_LOCAL 64

/* Work-group size the group kernels of reduce.cl are compiled for (their local arrays). */
#define OCL_GROUP_MAX 256

/* Number of elements of t (1 for 0-dim). */
static inline int64_t ocl_numel(const ag_kernel_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

/* Writes "[2, 3]" for t's shape into buf and returns buf. */
static inline const char *ocl_shape_str(const ag_kernel_tensor *t, char *buf, size_t size) {
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < t->ndim && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, d ? ", %lld" : "%lld",
                                 (long long)t->shape[d]);
    if (used < size) snprintf(buf + used, size - used, "]");
    return buf;
}

/* Checks the argument block of kernel `name`: struct size, tensor counts, ndim ranges and
 * dtypes (dtypes[i] for input i, then the outputs). */
static inline ag_status ocl_check_call(const ag_kernel_args *args, const char *name, int n_inputs,
                                       int n_outputs, const ag_dtype *dtypes) {
    if (!args || args->struct_size < sizeof(ag_kernel_args))
        return ocl_fail(AG_ERR_INVALID_ARG, "%s: ag_kernel_args of an older, smaller layout", name);
    if (args->n_inputs != n_inputs || args->n_outputs != n_outputs || !args->attrs ||
        (n_inputs && !args->inputs) || (n_outputs && !args->outputs))
        return ocl_fail(AG_ERR_INVALID_ARG, "%s: expects %d inputs and %d outputs, got %d and %d",
                        name, n_inputs, n_outputs, args->n_inputs, args->n_outputs);
    for (int i = 0; i < n_inputs + n_outputs; i++) {
        const ag_kernel_tensor *t = i < n_inputs ? &args->inputs[i] : &args->outputs[i - n_inputs];
        if (t->ndim < 0 || t->ndim > AG_MAX_DIMS || (!t->data && ocl_numel(t) > 0))
            return ocl_fail(AG_ERR_INVALID_ARG, "%s: tensor %d has no buffer or %d dims", name, i,
                            t->ndim);
        if (t->dtype != dtypes[i])
            return ocl_fail(AG_ERR_DTYPE, "%s: %s %d is %s, expected %s", name,
                            i < n_inputs ? "input" : "output", i < n_inputs ? i : i - n_inputs,
                            ag_dtype_name(t->dtype), ag_dtype_name(dtypes[i]));
    }
    return AG_OK;
}

/* Rewrites n views of one shape (ts[0]'s) into the fewest dims that walk the same elements
 * in the same order: extent-1 dims are dropped and neighbours that are contiguous in every
 * view are merged. Shapes with an extent 0 are left alone. */
static inline void ocl_coalesce(ag_kernel_tensor *ts, int n) {
    const int nd = ts[0].ndim;
    if (ocl_numel(&ts[0]) == 0) return;
    int out = 0;
    for (int d = 0; d < nd; d++) {
        const int64_t e = ts[0].shape[d];
        if (e == 1) continue;
        bool merge = out > 0;
        for (int i = 0; merge && i < n; i++) merge = ts[i].strides[out - 1] == ts[i].strides[d] * e;
        for (int i = 0; i < n; i++) {
            if (merge) {
                ts[i].shape[out - 1] *= e;
                ts[i].strides[out - 1] = ts[i].strides[d];
            } else {
                ts[i].shape[out] = e;
                ts[i].strides[out] = ts[i].strides[d];
            }
        }
        out += !merge;
    }
    for (int i = 0; i < n; i++) ts[i].ndim = out;
}

/* Sets the arguments of k in order from `count` (tensor or value) pieces; returns the next
 * argument index or -1. */
typedef struct ocl_arg {
    const ag_kernel_tensor *tensor; /* a buffer and its view, or NULL for a value */
    size_t size;                    /* bytes of value */
    const void *value;              /* the value */
} ocl_arg;
#define OCL_T(t) ((ocl_arg){(t), 0, NULL})
#define OCL_V(v) ((ocl_arg){NULL, sizeof(v), &(v)})

static inline ag_status ocl_set_args(cl_kernel k, const ocl_arg *a, int count) {
    int arg = 0;
    for (int i = 0; i < count && arg >= 0; i++)
        arg = a[i].tensor ? ocl_arg_tensor(k, arg, a[i].tensor)
                          : ocl_arg_value(k, arg, a[i].size, a[i].value);
    return arg < 0 ? AG_ERR_INTERNAL : AG_OK;
}

/* Largest power of two <= x (x >= 1). */
static inline size_t ocl_pow2_floor(size_t x) {
    size_t p = 1;
    while (p * 2 <= x) p *= 2;
    return p;
}

/* Work-group size kernel k of `device` runs with: at most OCL_GROUP_MAX and the kernel's
 * own limit, a power of two. */
static inline size_t ocl_group_size(int device, cl_kernel k) {
    size_t wg = 0;
    if (clGetKernelWorkGroupInfo(k, ocl_device_at(device)->id, CL_KERNEL_WORK_GROUP_SIZE, sizeof wg,
                                 &wg, NULL) != CL_SUCCESS ||
        wg == 0)
        wg = ocl_device_at(device)->max_work_group;
    return ocl_pow2_floor(wg < OCL_GROUP_MAX ? wg : OCL_GROUP_MAX);
}

/* Enqueues k over `count` work items in groups of OCL_LOCAL (or the kernel's limit). */
static inline ag_status ocl_launch(int device, cl_kernel k, int64_t count, const char *name) {
    const size_t wg = ocl_group_size(device, k);
    return ocl_enqueue(device, k, (size_t)count, wg < OCL_LOCAL ? wg : OCL_LOCAL, name);
}

#endif
