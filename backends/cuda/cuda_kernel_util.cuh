/* Shared by the cuda_kernels_*.cu files: tensor views as kernels receive them, strided
 * indexing and copies, grid-stride loops, IEEE operations that are never fused, the
 * reductions of a group of threads and the launch shapes of row kernels, dtype dispatch and
 * the argument checks of a kernel entry. CUDA C++ only. */
#ifndef AG_CUDA_KERNEL_UTIL_CUH
#define AG_CUDA_KERNEL_UTIL_CUH

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "cuda_internal.h"
#include "../common/kernel_checks.h"

/* Threads per block of 1-D launches (a multiple of the warp size). */
#define CU_THREADS 256
/* Lanes of a warp. */
#define CU_WARP 32
/* Threads an SM keeps resident at once (sm_80 and sm_90): the device is full with
 * sm_count * CU_SM_THREADS threads. */
#define CU_SM_THREADS 2048
/* Rows at least this long get a whole block when warps alone would leave the device idle. */
#define CU_BLOCK_ROW_MIN 2048

/* A tensor view passed to kernels by value: element (i0..in-1) lives at
 * data[offset + sum(i_d * strides[d])]. data is already typed by the kernel's template. */
struct cu_view {
    long long offset;               /* element offset of element 0 */
    int ndim;                       /* dims, 0..AG_MAX_DIMS */
    long long shape[AG_MAX_DIMS];   /* extents */
    long long strides[AG_MAX_DIMS]; /* strides in elements */
};

/* The view of a kernel tensor (host). */
static inline cu_view cu_view_of(const ag_kernel_tensor *t) {
    cu_view v;
    v.offset = t->offset;
    v.ndim = t->ndim;
    for (int d = 0; d < AG_MAX_DIMS; d++) {
        v.shape[d] = d < t->ndim ? t->shape[d] : 1;
        v.strides[d] = d < t->ndim ? t->strides[d] : 0;
    }
    return v;
}

/* Element offset of row-major linear index i of v. */
__device__ __forceinline__ long long cu_offset(const cu_view &v, long long i) {
    long long off = v.offset;
    for (int d = v.ndim - 1; d >= 0; d--) {
        const long long e = v.shape[d];
        off += (i % e) * v.strides[d];
        i /= e;
    }
    return off;
}

/* Element offset of flat index i of v, without divisions when v has at most one dim. */
__device__ __forceinline__ long long cu_view_at(const cu_view &v, long long i) {
    if (v.ndim == 0) return v.offset;
    if (v.ndim == 1) return v.offset + i * v.strides[0];
    return cu_offset(v, i);
}

/* N views walked together over one shape (v[0]'s extents; the others carry the same). */
template <int N> struct cu_views {
    cu_view v[N]; /* the views, each with its own offset and strides */
};

/* Element offsets in each view of row-major position i of the common shape: one division
 * chain serves every view, and dim 0 needs none (i < numel). */
template <int N>
__device__ __forceinline__ void cu_offsets(const cu_views<N> &w, long long i, long long *off) {
    for (int j = 0; j < N; j++) off[j] = w.v[j].offset;
    const int nd = w.v[0].ndim;
    for (int d = nd - 1; d > 0; d--) {
        const long long e = w.v[0].shape[d], q = i / e, r = i - q * e;
        for (int j = 0; j < N; j++) off[j] += r * w.v[j].strides[d];
        i = q;
    }
    if (nd > 0)
        for (int j = 0; j < N; j++) off[j] += i * w.v[j].strides[0];
}

/* Coalesces N tensors of one shape (host; they are modified) and returns their views. */
template <int N> static inline cu_views<N> cu_views_of(ag_kernel_tensor *ts) {
    ag_kt_coalesce(ts, N);
    cu_views<N> w;
    for (int j = 0; j < N; j++) w.v[j] = cu_view_of(&ts[j]);
    return w;
}

/* Grid-stride loop over [0, n). */
#define CU_FOR_EACH(i, n)                                                                          \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (long long)(n);       \
         i += (long long)gridDim.x * blockDim.x)

/* dst = src over views (src, dst) of one shape. */
template <typename T>
static __global__ void cu_copy(const T *src, T *dst, cu_views<2> w, long long count) {
    CU_FOR_EACH(i, count) {
        long long off[2];
        cu_offsets(w, i, off);
        dst[off[1]] = src[off[0]];
    }
}

/* ---- float16 and bfloat16: include/ag/half.h bit for bit, with integer operations ---- */

/* Elements of float16 and bfloat16 tensors: their 16 bits, which the functions below convert
 * (no cuda_fp16.h, so that the cudaemu build compiles the same code with the host C++
 * compiler). Distinct types, so that kernel templates tell the two formats apart. */
struct cu_f16 {
    unsigned short bits;
};
struct cu_bf16 {
    unsigned short bits;
};

/* The bits of a float32, and the float32 of some bits. */
__host__ __device__ __forceinline__ unsigned int cu_f32_bits(float f) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    unsigned int u;
    memcpy(&u, &f, sizeof u);
    return u;
#endif
}
__host__ __device__ __forceinline__ float cu_f32_from_bits(unsigned int u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}

/* bfloat16 (float32's top 16 bits) -> float32, exactly. */
__host__ __device__ __forceinline__ float cu_bf16_to_f32(cu_bf16 h) {
    return cu_f32_from_bits((unsigned int)h.bits << 16);
}

/* float32 -> bfloat16, round to nearest even; NaN stays a quiet NaN. */
__host__ __device__ __forceinline__ cu_bf16 cu_f32_to_bf16(float f) {
    unsigned int u = cu_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return cu_bf16{(unsigned short)((u >> 16) | 0x0040u)};
    u += 0x7fffu + ((u >> 16) & 1u);
    return cu_bf16{(unsigned short)(u >> 16)};
}

/* IEEE binary16 -> float32, exactly; a subnormal is normalised with shifts, so that no float
 * arithmetic (nor flushing to zero) is involved. */
__host__ __device__ __forceinline__ float cu_f16_to_f32(cu_f16 h) {
    const unsigned int sign = (unsigned int)(h.bits & 0x8000u) << 16, e = (h.bits >> 10) & 0x1fu;
    unsigned int man = h.bits & 0x3ffu;
    if (e == 0x1fu) return cu_f32_from_bits(sign | 0x7f800000u | (man << 13)); /* inf, NaN */
    if (e != 0) return cu_f32_from_bits(sign | ((e + 112u) << 23) | (man << 13));
    if (man == 0) return cu_f32_from_bits(sign); /* +-0 */
    /* Subnormal man * 2^-24: shift the leading 1 up to bit 10 (the implicit bit). */
    unsigned int fe = 113u;
    while (!(man & 0x400u)) {
        man <<= 1;
        fe--;
    }
    return cu_f32_from_bits(sign | (fe << 23) | ((man & 0x3ffu) << 13));
}

/* float32 -> IEEE binary16, round to nearest even; overflow gives infinity, NaN stays a
 * quiet NaN, results below the smallest subnormal round to zero. */
__host__ __device__ __forceinline__ cu_f16 cu_f32_to_f16(float f) {
    const unsigned int u = cu_f32_bits(f);
    const unsigned short sign = (unsigned short)((u >> 16) & 0x8000u);
    const unsigned int a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return cu_f16{(unsigned short)(sign | 0x7e00u)};  /* NaN */
    if (a >= 0x477ff000u) return cu_f16{(unsigned short)(sign | 0x7c00u)}; /* past 65504: inf */
    if (a >= 0x38800000u) { /* normal in binary16: round at bit 13, rebias 127 -> 15 */
        const unsigned int rounded = a + 0xfffu + ((a >> 13) & 1u);
        return cu_f16{(unsigned short)(sign | ((rounded - 0x38000000u) >> 13))};
    }
    if (a < 0x33000000u) return cu_f16{sign}; /* below 2^-25: zero */
    /* Subnormal: the value in units of 2^-24, rounded to nearest even. */
    const unsigned int fe = a >> 23, man = (a & 0x7fffffu) | 0x800000u, shift = 126u - fe;
    unsigned int q = man >> shift;
    const unsigned int rest = man & ((1u << shift) - 1u), mid = 1u << (shift - 1u);
    if (rest > mid || (rest == mid && (q & 1u))) q++;
    return cu_f16{(unsigned short)(sign | q)};
}

/* float and double overloads NAME(x) of a one-argument function: F32 for float, F64 for
 * double. */
#define CU_FLOAT_UNARY(NAME, F32, F64)                                                             \
    __device__ __forceinline__ float NAME(float x) {                                               \
        return F32(x);                                                                             \
    }                                                                                              \
    __device__ __forceinline__ double NAME(double x) {                                             \
        return F64(x);                                                                             \
    }
/* float and double overloads NAME(a, b) of a two-argument function. */
#define CU_FLOAT_BINARY(NAME, F32, F64)                                                            \
    __device__ __forceinline__ float NAME(float a, float b) {                                      \
        return F32(a, b);                                                                          \
    }                                                                                              \
    __device__ __forceinline__ double NAME(double a, double b) {                                   \
        return F64(a, b);                                                                          \
    }

/* Sums, products, quotients and square roots rounded once each, as the cpu backend's
 * separate IEEE operations: nvcc never contracts these intrinsics into a fused multiply-add
 * (as it would a*b + c), and they stay correctly rounded under -use_fast_math or
 * -prec-div=false. */
CU_FLOAT_BINARY(cu_add_rn, __fadd_rn, __dadd_rn)
CU_FLOAT_BINARY(cu_mul_rn, __fmul_rn, __dmul_rn)
CU_FLOAT_BINARY(cu_div_rn, __fdiv_rn, __ddiv_rn)
CU_FLOAT_UNARY(cu_sqrt_rn, __fsqrt_rn, __dsqrt_rn)

/* v of lane (this lane ^ mask) of the warp; every lane of the warp must call it. A struct
 * accumulator gets an overload next to its type, which cu_group_combine finds by
 * argument-dependent lookup where it is instantiated. */
template <typename A> __device__ __forceinline__ A cu_shfl_xor(A v, int mask) {
    return __shfl_xor_sync(0xffffffffu, v, mask);
}

/* Combines the accumulators of each group of `lanes` threads with Op::combine (lanes a power
 * of two: up to CU_WARP the aligned lanes of a warp, above it the whole block, lanes ==
 * blockDim.x); every thread of the group gets the result. `shared` holds CU_WARP
 * accumulators (unused up to a warp); every thread of the block must make the call. */
template <typename Op>
__device__ __forceinline__ typename Op::acc cu_group_combine(typename Op::acc a, int lanes,
                                                             typename Op::acc *shared) {
    for (int m = (lanes < CU_WARP ? lanes : CU_WARP) / 2; m > 0; m /= 2)
        a = Op::combine(a, cu_shfl_xor(a, m));
    if (lanes <= CU_WARP) return a;
    const int lane = threadIdx.x % CU_WARP, warp = threadIdx.x / CU_WARP;
    __syncthreads(); /* shared may still be read by the previous call */
    if (lane == 0) shared[warp] = a;
    __syncthreads();
    a = lane < (int)(blockDim.x / CU_WARP) ? shared[lane] : Op::init();
    for (int m = CU_WARP / 2; m > 0; m /= 2) a = Op::combine(a, cu_shfl_xor(a, m));
    return a;
}

/* ---- launch shapes of row kernels (host) ---- */

/* Smallest power of two >= n (1 for n <= 1). */
static inline int cu_pow2_ceil(long long n) {
    int p = 1;
    while (p < n) p *= 2;
    return p;
}

/* Threads that fill device `device`. */
static inline long long cu_device_threads(int device) {
    return (long long)cu_device_at(device)->sm_count * CU_SM_THREADS;
}

/* Innermost stride of a coalesced view (0 for 0 dims). */
static inline long long cu_inner_stride(const ag_kernel_tensor *t) {
    return t->ndim ? t->strides[t->ndim - 1] : 0;
}

/* Whether `rows` rows of `len` elements, elem_stride apart, whose first elements walk the
 * coalesced view `starts`, lie closer together in memory than a row's elements: a warp of
 * one-thread rows then reads neighbouring rows at once. */
static inline bool cu_rows_across(const ag_kernel_tensor *starts, long long rows, long long len,
                                  long long elem_stride) {
    return rows > 1 && len > 1 && llabs(cu_inner_stride(starts)) < llabs(elem_stride);
}

/* Threads per row for `rows` rows of `len` elements, in blocks of at most `block_max`
 * threads: one with `across` (see cu_rows_across), the next power of two >= len for short
 * rows, a block for long rows when warps alone would not fill the device, else a warp. */
static inline int cu_row_lanes(int device, long long rows, long long len, bool across,
                               int block_max) {
    if (across) return 1;
    if (len <= CU_WARP) return cu_pow2_ceil(len);
    const long long full = cu_device_threads(device);
    if (len < CU_BLOCK_ROW_MIN || rows * CU_WARP >= full) return CU_WARP;
    return rows * block_max <= full ? block_max : CU_THREADS;
}

/* cu_row_lanes for kernels that take each row whole (no split into chunks): one thread per
 * row pays off only with rows enough to fill the device. */
static inline int cu_whole_row_lanes(int device, const ag_kernel_tensor *starts, long long rows,
                                     long long len, long long elem_stride, int block_max) {
    const bool across =
        cu_rows_across(starts, rows, len, elem_stride) && rows * 4 >= cu_device_threads(device);
    return cu_row_lanes(device, rows, len, across, block_max);
}

/* Threads per block for groups of `lanes` threads: CU_THREADS, or one group if larger. */
static inline unsigned cu_block_threads(int lanes) {
    return lanes > CU_THREADS ? (unsigned)lanes : CU_THREADS;
}

/* The typed device pointer of a kernel tensor. */
template <typename T> static inline T *cu_data(const ag_kernel_tensor *t) {
    return static_cast<T *>(t->data);
}

/* Calls body with a type alias T for the key dtype (float, double, long long); other
 * dtypes fall to `otherwise`. Usage: CU_DISPATCH(dtype, { launch<T>(...); }, return err;) */
#define CU_DISPATCH(dtype, body, otherwise)                                                        \
    switch (dtype) {                                                                               \
    case AG_F32: {                                                                                 \
        typedef float T;                                                                           \
        body;                                                                                      \
    } break;                                                                                       \
    case AG_F64: {                                                                                 \
        typedef double T;                                                                          \
        body;                                                                                      \
    } break;                                                                                       \
    case AG_I64: {                                                                                 \
        typedef long long T;                                                                       \
        body;                                                                                      \
    } break;                                                                                       \
    default:                                                                                       \
        otherwise;                                                                                 \
    }

/* Checks a kernel call's argument block (see ag_kt_check_call; dtypes may be NULL) and the
 * device index. */
static inline ag_status cu_check_call(const ag_kernel_args *args, const char *name, int n_inputs,
                                      int n_outputs, const ag_dtype *dtypes) {
    ag_status st = ag_kt_check_call(args, name, n_inputs, n_outputs, dtypes, cu_fail);
    if (st == AG_OK && (args->device < 0 || args->device >= cu_device_count()))
        st = cu_fail(AG_ERR_DEVICE, "%s: no CUDA device %d (%d devices)", name, args->device,
                     cu_device_count());
    return st;
}

#endif
