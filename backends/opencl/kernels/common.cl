/* Prepended to every program of the OpenCL backend. The host defines T (the element type:
 * float, double, long, or ushort holding the bits of float16 / bfloat16) and T_ID (0
 * float32, 1 float64, 2 int64, 3 float16, 4 bfloat16) before this file. */
#if T_ID == 1
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif

#define AG_MAX_DIMS 8

/* Layout shared with ocl_view in ocl_internal.h: only 8-byte fields. */
typedef struct ag_view {
    long offset;
    long ndim;
    long shape[AG_MAX_DIMS];
    long strides[AG_MAX_DIMS];
} ag_view;

/* Number of elements of a view. */
inline long ag_numel(const ag_view v) {
    long n = 1;
    for (int d = 0; d < v.ndim; d++) n *= v.shape[d];
    return n;
}

/* Element offset of the i-th element in row-major order of the view's shape. */
inline long ag_at(const ag_view v, long i) {
    long off = v.offset;
    for (int d = (int)v.ndim - 1; d >= 0; d--) {
        long e = v.shape[d];
        off += (i % e) * v.strides[d];
        i /= e;
    }
    return off;
}
