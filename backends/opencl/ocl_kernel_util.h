/* Host-side helpers shared by the kernel entries of the OpenCL backend (ocl_kernels_*.c):
 * argument checks, kernel arguments and launch sizes. Facts about views (element counts,
 * shape strings, coalescing) are backends/common/kernel_util.h's and the checks of kernel
 * calls backends/common/kernel_checks.h's, shared with the other backends. */
#ifndef AG_OCL_KERNEL_UTIL_H
#define AG_OCL_KERNEL_UTIL_H

#include "ocl_internal.h"
#include "../common/kernel_checks.h"

#include <stdio.h>

/* Work-group size of 1-D launches: a fixed size, so that drivers which compile per local
 * size (PoCL) compile each kernel once. */
#define OCL_LOCAL 64

/* Work-group size the group kernels of reduce.cl are compiled for (their local arrays). */
#define OCL_GROUP_MAX 256

/* Checks the argument block of kernel `name` (ag_kt_check_call with the backend's errors). */
static inline ag_status ocl_check_call(const ag_kernel_args *args, const char *name, int n_inputs,
                                       int n_outputs, const ag_dtype *dtypes) {
    return ag_kt_check_call(args, name, n_inputs, n_outputs, dtypes, ocl_fail);
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
