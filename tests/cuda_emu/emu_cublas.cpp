/* The cuBLAS calls of the CUDA backend's matmul (cuda_kernels_matmul.cu), emulated for
 * cudaemu: handles, and the column-major products C = alpha op(A) op(B) + beta C of
 * {S,D}gemm, their strided batches and GemmEx (float16 and bfloat16 with float
 * accumulation) as plain loops. Arguments are checked as cuBLAS checks them
 * (CUBLAS_STATUS_INVALID_VALUE for a leading dimension too small for its matrix, and so
 * on), which is what tests the backend's choice of transposes and leading dimensions.
 * float16 and bfloat16 elements convert as include/ag/half.h (round to nearest even, NaN
 * to a quiet NaN), like every other 16-bit conversion of ag. */
#include "emu_internal.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <new>

#include "ag/half.h"

/* A cuBLAS handle: nothing to keep, as every call runs when made. */
struct cublasContext {};

namespace {

/* Element conversions to and from the accumulation type A. */
template <typename A> A load(float x) {
    return (A)x;
}
template <typename A> A load(double x) {
    return (A)x;
}
/* The 16 bits of a __half or __nv_bfloat16, and back, through the toolkit's raw structs. */
uint16_t bits_of(__half x) {
    return __half_raw(x).x;
}
uint16_t bits_of(__nv_bfloat16 x) {
    return __nv_bfloat16_raw(x).x;
}
template <typename H> H of_bits(uint16_t b);
template <> __half of_bits<__half>(uint16_t b) {
    __half_raw r;
    r.x = b;
    return __half(r);
}
template <> __nv_bfloat16 of_bits<__nv_bfloat16>(uint16_t b) {
    __nv_bfloat16_raw r;
    r.x = b;
    return __nv_bfloat16(r);
}
template <typename A> A load(__half x) {
    return (A)ag_f16_to_f32(bits_of(x));
}
template <typename A> A load(__nv_bfloat16 x) {
    return (A)ag_bf16_to_f32(bits_of(x));
}
template <typename T> T store(float x);
template <> float store<float>(float x) {
    return x;
}
template <> __half store<__half>(float x) {
    return of_bits<__half>(ag_f32_to_f16(x));
}
template <> __nv_bfloat16 store<__nv_bfloat16>(float x) {
    return of_bits<__nv_bfloat16>(ag_f32_to_bf16(x));
}
template <typename T> T store(double x) {
    return (T)x;
}

/* max(1, n). */
int at_least_one(int n) {
    return n > 1 ? n : 1;
}

/* Whether op is a transpose flag cuBLAS knows. */
bool valid_op(cublasOperation_t op) {
    return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C;
}

/* `batch` products C_i = alpha op(A_i) op(B_i) + beta C_i of element type T accumulated in
 * A (real types: CUBLAS_OP_C is CUBLAS_OP_T); matrix i of X starts stride_x elements after
 * matrix i - 1. C is not read when beta is 0, as in BLAS. */
template <typename T, typename A>
cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t transa, cublasOperation_t transb, int m,
                    int n, int k, A alpha, const T *a, int lda, long long stride_a, const T *b,
                    int ldb, long long stride_b, A beta, T *c, int ldc, long long stride_c,
                    int batch) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
    if (!valid_op(transa) || !valid_op(transb) || m < 0 || n < 0 || k < 0 || batch < 0 ||
        lda < at_least_one(ta ? k : m) || ldb < at_least_one(tb ? n : k) || ldc < at_least_one(m))
        return CUBLAS_STATUS_INVALID_VALUE;
    for (int i = 0; i < batch; i++) {
        const T *ai = a + i * stride_a, *bi = b + i * stride_b;
        T *ci = c + i * stride_c;
        for (long long col = 0; col < n; col++)
            for (long long row = 0; row < m; row++) {
                A sum = 0;
                for (long long p = 0; p < k; p++)
                    sum += load<A>(ta ? ai[p + row * lda] : ai[row + p * lda]) *
                           load<A>(tb ? bi[col + p * ldb] : bi[p + col * ldb]);
                T &out = ci[row + col * ldc];
                out = store<T>(beta == 0 ? alpha * sum : alpha * sum + beta * load<A>(out));
            }
    }
    return CUBLAS_STATUS_SUCCESS;
}

/* GemmEx for one storage type T of all three matrices, float accumulation. */
template <typename T>
cublasStatus_t gemm_ex(cublasHandle_t h, cublasOperation_t transa, cublasOperation_t transb, int m,
                       int n, int k, const void *alpha, const void *a, int lda, long long stride_a,
                       const void *b, int ldb, long long stride_b, const void *beta, void *c,
                       int ldc, long long stride_c, int batch) {
    return gemm<T, float>(h, transa, transb, m, n, k, *static_cast<const float *>(alpha),
                          static_cast<const T *>(a), lda, stride_a, static_cast<const T *>(b), ldb,
                          stride_b, *static_cast<const float *>(beta), static_cast<T *>(c), ldc,
                          stride_c, batch);
}

/* GemmEx of any type combination: the same 16-bit float type everywhere and float compute
 * are emulated, as the backend uses them; anything else is CUBLAS_STATUS_NOT_SUPPORTED. */
cublasStatus_t gemm_ex_any(cublasHandle_t h, cublasOperation_t transa, cublasOperation_t transb,
                           int m, int n, int k, const void *alpha, const void *a,
                           cudaDataType atype, int lda, long long stride_a, const void *b,
                           cudaDataType btype, int ldb, long long stride_b, const void *beta,
                           void *c, cudaDataType ctype, int ldc, long long stride_c, int batch,
                           cublasComputeType_t compute) {
    if (atype != btype || atype != ctype || compute != CUBLAS_COMPUTE_32F)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (atype == CUDA_R_16F)
        return gemm_ex<__half>(h, transa, transb, m, n, k, alpha, a, lda, stride_a, b, ldb,
                               stride_b, beta, c, ldc, stride_c, batch);
    if (atype == CUDA_R_16BF)
        return gemm_ex<__nv_bfloat16>(h, transa, transb, m, n, k, alpha, a, lda, stride_a, b, ldb,
                                      stride_b, beta, c, ldc, stride_c, batch);
    return CUBLAS_STATUS_NOT_SUPPORTED;
}

} // namespace

cublasStatus_t cublasCreate_v2(cublasHandle_t *handle) {
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    *handle = new (std::nothrow) cublasContext;
    return *handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
    (void)stream;
    return handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    /* TF32 would only lower the precision of float32 products: the emulation computes
     * them in float whatever the mode. */
    return mode == CUBLAS_DEFAULT_MATH || mode == CUBLAS_TF32_TENSOR_OP_MATH
               ? CUBLAS_STATUS_SUCCESS
               : CUBLAS_STATUS_INVALID_VALUE;
}

const char *cublasGetStatusName(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS:
        return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
        return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
        return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
        return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED:
        return "CUBLAS_STATUS_NOT_SUPPORTED";
    default:
        return "CUBLAS_STATUS_UNKNOWN";
    }
}

const char *cublasGetStatusString(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS:
        return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED:
        return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED:
        return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE:
        return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_NOT_SUPPORTED:
        return "the functionality requested is not supported";
    default:
        return "unknown error";
    }
}

cublasStatus_t cublasSgemm_v2(cublasHandle_t h, cublasOperation_t transa, cublasOperation_t transb,
                              int m, int n, int k, const float *alpha, const float *a, int lda,
                              const float *b, int ldb, const float *beta, float *c, int ldc) {
    return gemm<float, float>(h, transa, transb, m, n, k, *alpha, a, lda, 0, b, ldb, 0, *beta, c,
                              ldc, 0, 1);
}

cublasStatus_t cublasDgemm_v2(cublasHandle_t h, cublasOperation_t transa, cublasOperation_t transb,
                              int m, int n, int k, const double *alpha, const double *a, int lda,
                              const double *b, int ldb, const double *beta, double *c, int ldc) {
    return gemm<double, double>(h, transa, transb, m, n, k, *alpha, a, lda, 0, b, ldb, 0, *beta, c,
                                ldc, 0, 1);
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k,
                                         const float *alpha, const float *a, int lda,
                                         long long stride_a, const float *b, int ldb,
                                         long long stride_b, const float *beta, float *c, int ldc,
                                         long long stride_c, int batch) {
    return gemm<float, float>(h, transa, transb, m, n, k, *alpha, a, lda, stride_a, b, ldb,
                              stride_b, *beta, c, ldc, stride_c, batch);
}

cublasStatus_t cublasDgemmStridedBatched(cublasHandle_t h, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k,
                                         const double *alpha, const double *a, int lda,
                                         long long stride_a, const double *b, int ldb,
                                         long long stride_b, const double *beta, double *c, int ldc,
                                         long long stride_c, int batch) {
    return gemm<double, double>(h, transa, transb, m, n, k, *alpha, a, lda, stride_a, b, ldb,
                                stride_b, *beta, c, ldc, stride_c, batch);
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t transa, cublasOperation_t transb,
                            int m, int n, int k, const void *alpha, const void *a,
                            cudaDataType atype, int lda, const void *b, cudaDataType btype, int ldb,
                            const void *beta, void *c, cudaDataType ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo) {
    (void)algo;
    return gemm_ex_any(h, transa, transb, m, n, k, alpha, a, atype, lda, 0, b, btype, ldb, 0, beta,
                       c, ctype, ldc, 0, 1, compute);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t transa,
                                          cublasOperation_t transb, int m, int n, int k,
                                          const void *alpha, const void *a, cudaDataType atype,
                                          int lda, long long stride_a, const void *b,
                                          cudaDataType btype, int ldb, long long stride_b,
                                          const void *beta, void *c, cudaDataType ctype, int ldc,
                                          long long stride_c, int batch,
                                          cublasComputeType_t compute, cublasGemmAlgo_t algo) {
    (void)algo;
    return gemm_ex_any(h, transa, transb, m, n, k, alpha, a, atype, lda, stride_a, b, btype, ldb,
                       stride_b, beta, c, ctype, ldc, stride_c, batch, compute);
}
