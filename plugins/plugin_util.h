/* Shared by the shipped plugins.
 *
 * Element access for cpu kernels: a kernel tensor is strided (docs/kernels.md), so elements
 * are found from a linear index through the strides, and float32/float64 are read and
 * written as double so one loop serves both dtypes.
 *
 * Preludes for source kernels: a kernel body written with KERNEL, GLOBAL, INDEX (a 64-bit
 * signed integer) and THREAD_INDEX (the global 1-D work item / thread index) compiles as
 * OpenCL C after AG_OPENCL_PRELUDE and as CUDA C (NVRTC) after AG_CUDA_PRELUDE. */
#ifndef AG_PLUGINS_PLUGIN_UTIL_H
#define AG_PLUGINS_PLUGIN_UTIL_H

#include "ag/backend.h"

/* Element offset of linear (row-major) index i over the first nd dims of t. */
static inline int64_t strided_offset(const ag_kernel_tensor *t, int nd, int64_t i) {
    int64_t off = t->offset;
    for (int d = nd - 1; d >= 0; d--) {
        off += i % t->shape[d] * t->strides[d];
        i /= t->shape[d];
    }
    return off;
}

/* Number of elements of the first nd dims of t (1 for nd = 0). */
static inline int64_t strided_count(const ag_kernel_tensor *t, int nd) {
    int64_t n = 1;
    for (int d = 0; d < nd; d++) n *= t->shape[d];
    return n;
}

/* Element at offset off of a float32 or float64 tensor, as double. */
static inline double strided_load(const ag_kernel_tensor *t, int64_t off) {
    return t->dtype == AG_F32 ? ((const float *)t->data)[off] : ((const double *)t->data)[off];
}

/* Stores v (rounded to float32 where t is float32) at offset off. */
static inline void strided_store(const ag_kernel_tensor *t, int64_t off, double v) {
    if (t->dtype == AG_F32)
        ((float *)t->data)[off] = (float)v;
    else
        ((double *)t->data)[off] = v;
}

/* OpenCL C spellings of the source kernel macros. */
#define AG_OPENCL_PRELUDE                                                                          \
    "#define KERNEL __kernel\n"                                                                    \
    "#define GLOBAL __global\n"                                                                    \
    "#define INDEX long\n"                                                                         \
    "#define THREAD_INDEX ((long)get_global_id(0))\n"

/* CUDA C spellings; extern "C" keeps the entry names unmangled for NVRTC lookups, and
 * INFINITY (OpenCL C has it) is defined because NVRTC has no <math.h>. */
#define AG_CUDA_PRELUDE                                                                            \
    "#define KERNEL extern \"C\" __global__\n"                                                     \
    "#define GLOBAL\n"                                                                             \
    "#define INDEX long long\n"                                                                    \
    "#define THREAD_INDEX ((long long)blockIdx.x * blockDim.x + threadIdx.x)\n"                    \
    "#ifndef INFINITY\n"                                                                           \
    "#define INFINITY __int_as_float(0x7f800000)\n"                                                \
    "#endif\n"

#endif
