/* ag — types shared by the public API (ag.h) and the backend ABI (backend.h).
 *
 * Everything here is part of the ABI: enum values are never renumbered, new values
 * are only appended. */
#ifndef AG_TYPES_H
#define AG_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Most dimensions a tensor may have. */
#define AG_MAX_DIMS 8

/* Element types. The numbering is ABI. float16 and bfloat16 are storage types: ops on
 * them compute in float32 (a backend may add low-precision kernels; where it has none the
 * core converts, docs/amp.md), and include/ag/half.h converts their values. */
typedef enum ag_dtype {
    AG_F32 = 0,    /* IEEE 754 binary32 */
    AG_F64 = 1,    /* IEEE 754 binary64 */
    AG_I64 = 2,    /* signed 64-bit integer (indices, counts) */
    AG_F16 = 3,    /* IEEE 754 binary16 */
    AG_BF16 = 4,   /* bfloat16: float32's top 16 bits */
    AG_DTYPE_COUNT /* number of dtype slots; not a dtype */
} ag_dtype;

/* Status codes. Every fallible call returns one; AG_OK is zero. The matching
 * human-readable message is available from ag_last_error() (core) or the backend's
 * last_error() slot. */
typedef enum ag_status {
    AG_OK = 0,                 /* success */
    AG_ERR_INVALID_ARG = 1,    /* a NULL or out-of-range argument */
    AG_ERR_SHAPE = 2,          /* shapes that do not fit the op */
    AG_ERR_DTYPE = 3,          /* a dtype the op does not accept */
    AG_ERR_DEVICE = 4,         /* tensors on different devices/backends */
    AG_ERR_UNSUPPORTED = 5,    /* no kernel for this op/dtype on this backend */
    AG_ERR_OUT_OF_MEMORY = 6,  /* host or device allocation failed */
    AG_ERR_BACKEND_LOAD = 7,   /* a backend or plugin library could not be found or loaded */
    AG_ERR_ABI = 8,            /* a backend or plugin built for another ABI major */
    AG_ERR_GRAPH_FREED = 9,    /* second backward through a graph whose buffers were freed */
    AG_ERR_INPLACE = 10,       /* a saved tensor was modified in place, or a refused in-place op */
    AG_ERR_NO_GRAD = 11,       /* backward/grad on something that does not require grad */
    AG_ERR_INDEX = 12,         /* an index outside a dimension */
    AG_ERR_UNIMPLEMENTED = 13, /* an ABI slot the backend left empty */
    AG_ERR_INTERNAL = 14,      /* a failure inside a backend or the engine */
    AG_ERR_GRADCHECK = 15,     /* gradcheck found analytical and numerical gradients apart */
    AG_ERR_IO = 16,            /* a file could not be read or written */
    AG_ERR_ANOMALY = 17        /* anomaly mode: a backward function produced NaN/Inf */
} ag_status;

/* Non-tensor arguments of an op. Each op documents which slots it reads; unused slots
 * are zero. Fixed size, so dispatch never allocates for attributes. */
typedef struct ag_attrs {
    int64_t ints[8]; /* integer attributes: dims, flags, counts */
    double reals[8]; /* floating attributes: scalars, epsilons, bounds, optimizer settings */
} ag_attrs;

/* Bytes per element of a dtype (0 for a value that is no dtype). Inline, so backends and
 * plugins use it without linking libag. */
static inline size_t ag_dtype_size(ag_dtype dtype) {
    return dtype == AG_F32                       ? 4
           : dtype == AG_F64 || dtype == AG_I64  ? 8
           : dtype == AG_F16 || dtype == AG_BF16 ? 2
                                                 : 0;
}

/* Lower-case name of a dtype ("float32"), or "invalid". Inline, as ag_dtype_size. */
static inline const char *ag_dtype_name(ag_dtype dtype) {
    static const char *const names[AG_DTYPE_COUNT] = {"float32", "float64", "int64", "float16",
                                                      "bfloat16"};
    return (unsigned)dtype < AG_DTYPE_COUNT ? names[dtype] : "invalid";
}
/* Name of a status code ("AG_ERR_SHAPE"). */
const char *ag_status_name(ag_status status);

#ifdef __cplusplus
}
#endif
#endif
