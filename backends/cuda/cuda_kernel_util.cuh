/* Shared by the cuda_kernels_*.cu files: tensor views as kernels receive them, strided
 * indexing, grid-stride loops, warp and block reductions, dtype dispatch and the argument
 * checks of a kernel entry. CUDA C++ only. */
#ifndef AG_CUDA_KERNEL_UTIL_CUH
#define AG_CUDA_KERNEL_UTIL_CUH

#include <stdint.h>
#include "cuda_internal.h"

/* Threads per block of 1-D launches (a multiple of the warp size). */
#define CU_THREADS 256
/* Lanes of a warp. */
#define CU_WARP 32

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

/* Grid-stride loop over [0, n). */
#define CU_FOR_EACH(i, n)                                                                          \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (long long)(n);       \
         i += (long long)gridDim.x * blockDim.x)

/* Sum of v over the warp (every lane gets it). */
template <typename A> __device__ __forceinline__ A cu_warp_sum(A v) {
    for (int o = CU_WARP / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum of v over the block (blockDim.x a multiple of CU_WARP, at most 1024); every thread
 * gets it. `shared` holds CU_WARP values; the block must reach this call together. */
template <typename A> __device__ __forceinline__ A cu_block_sum(A v, A *shared) {
    const int lane = threadIdx.x % CU_WARP, warp = threadIdx.x / CU_WARP;
    v = cu_warp_sum(v);
    __syncthreads(); /* shared may still be read by a previous call */
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    const int warps = blockDim.x / CU_WARP;
    v = lane < warps ? shared[lane] : A(0);
    return cu_warp_sum(v);
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

/* Checks a kernel call's argument block (see ag_kt_check_call) and the device index. */
static inline ag_status cu_check_call(const ag_kernel_args *args, const char *name, int n_inputs,
                                      int n_outputs, const ag_dtype *dtypes) {
    ag_status st = ag_kt_check_call(args, name, n_inputs, n_outputs, dtypes, cu_fail);
    if (st == AG_OK && (args->device < 0 || args->device >= cu_device_count()))
        st = cu_fail(AG_ERR_DEVICE, "%s: no CUDA device %d (%d devices)", name, args->device,
                     cu_device_count());
    return st;
}

#endif
