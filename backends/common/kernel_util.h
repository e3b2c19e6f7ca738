/* Host-side helpers every backend shares (cpu, opencl, cuda): facts about kernel tensor
 * views, coalescing of views that walk one shape, BLAS matrix layouts, the kernel tables and
 * the size classes of the caching allocators (the argument checks of kernel calls are
 * kernel_checks.h's). Header-only (static inline) so that each backend library stays
 * self-contained; it compiles as C11 and as C++ (nvcc). */
#ifndef AG_BACKENDS_COMMON_KERNEL_UTIL_H
#define AG_BACKENDS_COMMON_KERNEL_UTIL_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include "ag/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A backend's error setter: sets the thread's message (printf-style) and returns status. */
typedef ag_status (*ag_kt_fail_fn)(ag_status status, const char *fmt, ...);

/* Number of elements of t (1 for 0-dim). */
static inline int64_t ag_kt_numel(const ag_kernel_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

/* Whether t and u have the same ndim and extents. */
static inline bool ag_kt_same_shape(const ag_kernel_tensor *t, const ag_kernel_tensor *u) {
    if (t->ndim != u->ndim) return false;
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] != u->shape[d]) return false;
    return true;
}

/* Writes "[2, 3]" for t's shape into buf and returns buf. */
static inline const char *ag_kt_shape_str(const ag_kernel_tensor *t, char *buf, size_t size) {
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < t->ndim && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, d ? ", %lld" : "%lld",
                                 (long long)t->shape[d]);
    if (used < size) snprintf(buf + used, size - used, "]");
    return buf;
}

/* Element offset of row-major flat index i of t (0 <= i < its element count). */
static inline int64_t ag_kt_offset(const ag_kernel_tensor *t, int64_t i) {
    int64_t off = t->offset;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += i % t->shape[d] * t->strides[d];
        i /= t->shape[d];
    }
    return off;
}

/* How a BLAS gemm can read a row-major [rows, cols] matrix in place. */
typedef struct ag_kt_layout {
    bool direct;     /* readable in place; else it must go through a contiguous copy */
    bool transposed; /* column-contiguous: read as the transpose of a row-major matrix */
    int64_t ld;      /* leading dimension, at most INT_MAX (0 when not direct) */
} ag_kt_layout;

/* Finds a row-contiguous or else a column-contiguous (transposed) reading of a [rows, cols]
 * matrix with element strides (rs, cs) whose leading dimension fits in an int. The stride of
 * an extent-1 dim is never used, so it is replaced by whatever makes the layout valid. */
static inline ag_kt_layout ag_kt_matrix_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
    ag_kt_layout l = {false, false, 0};
    const int64_t row_rs = rows == 1 ? cols : rs, row_cs = cols == 1 ? 1 : cs;
    const int64_t col_rs = rows == 1 ? 1 : rs, col_cs = cols == 1 ? rows : cs;
    if (row_cs == 1 && row_rs >= cols && row_rs <= INT_MAX) {
        l.direct = true;
        l.ld = row_rs;
    } else if (col_rs == 1 && col_cs >= rows && col_cs <= INT_MAX) {
        l.direct = true;
        l.transposed = true;
        l.ld = col_cs;
    }
    return l;
}

/* Rewrites n views of one shape (ts[0]'s) into the fewest dims that walk the same elements
 * in the same order: extent-1 dims are dropped and neighbours that are contiguous in every
 * view are merged, so contiguous tensors become 1-D. Shapes with an extent 0 are left
 * alone. */
static inline void ag_kt_coalesce(ag_kernel_tensor *ts, int n) {
    const int nd = ts[0].ndim;
    if (ag_kt_numel(&ts[0]) == 0) return;
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

/* One entry of a backend's kernel tables: kernel name -> entry. The entry reads the key
 * dtype from its ag_kernel_args; `dtypes` says which key dtypes exist. */
typedef struct ag_kernel_entry {
    const char *name; /* kernel name from docs/kernels.md */
    uint32_t dtypes;  /* key dtypes it supports (bits 1 << AG_F32 etc.) */
    ag_kernel_fn fn;  /* the entry */
} ag_kernel_entry;

/* The get_kernel slot over n tables, each ending with a NULL name: finds (kernel, dtype);
 * a miss is AG_ERR_UNSUPPORTED through `fail`, naming `backend` and the dtypes the kernel
 * does exist for. */
static inline ag_status ag_kt_find_kernel(const ag_kernel_entry *const *tables, int n,
                                          const char *backend, const char *kernel, ag_dtype dtype,
                                          ag_kernel_fn *out, ag_kt_fail_fn fail) {
    if (!kernel || !out)
        return fail(AG_ERR_INVALID_ARG, "%s: get_kernel with a NULL pointer", backend);
    for (int t = 0; t < n; t++) {
        for (const ag_kernel_entry *e = tables[t]; e->name; e++) {
            if (strcmp(e->name, kernel) != 0) continue;
            if ((unsigned)dtype < 32 && (e->dtypes & (1u << dtype))) {
                *out = e->fn;
                return AG_OK;
            }
            char have[64] = ""; /* dtypes the kernel exists for, to explain the miss */
            size_t used = 0;
            for (int k = 0; k < AG_DTYPE_COUNT; k++)
                if (e->dtypes & (1u << k) && used < sizeof have)
                    used += (size_t)snprintf(have + used, sizeof have - used, "%s%s",
                                             used ? ", " : "", ag_dtype_name((ag_dtype)k));
            return fail(AG_ERR_UNSUPPORTED, "%s backend has no kernel '%s' for %s (it has %s)",
                        backend, kernel, ag_dtype_name(dtype), used ? have : "none");
        }
    }
    return fail(AG_ERR_UNSUPPORTED, "%s backend has no kernel '%s' for %s", backend, kernel,
                ag_dtype_name(dtype));
}

/* Size classes of the caching allocators: requests up to 2^small_log2 bytes round up to a
 * multiple of granule (a power of two below that), larger ones to one of four classes per
 * power of two (at most 25% slack). Returns the class index, counted from 0, of a request
 * of `bytes` (<= SIZE_MAX / 2) and its rounded size in *size. */
static inline int ag_size_class(size_t bytes, size_t granule, int small_log2, size_t *size) {
    const size_t small_limit = (size_t)1 << small_log2;
    if (bytes <= small_limit) {
        const size_t k = bytes == 0 ? 1 : (bytes + granule - 1) / granule;
        *size = k * granule;
        return (int)k - 1;
    }
    const int p = 63 - __builtin_clzll((unsigned long long)(bytes - 1)); /* 2^p < bytes */
    const size_t low = (size_t)1 << p, step = low / 4;
    const size_t k = (bytes - low + step - 1) / step; /* 1..4 */
    *size = low + k * step;
    return (int)(small_limit / granule) + (p - small_log2) * 4 + (int)k - 1;
}

/* Number of classes ag_size_class(..., granule, small_log2, ...) can return: the small
 * ones, then four for each p in small_log2..62. */
#define AG_SIZE_CLASS_COUNT(granule, small_log2)                                                   \
    ((int)(((size_t)1 << (small_log2)) / (granule)) + (63 - (small_log2)) * 4)

#ifdef __cplusplus
}
#endif
#endif
