/* The CUDA backend's "ag_reference_gemm" extra (include/ag/backend.h): cublasSgemm /
 * cublasDgemm timed on device buffers of its own, on the device's stream, so that `ag bench`
 * can set ag's matmul beside the cuBLAS it calls. The math mode is ag's (TF32 only where
 * ag's matmul allows it), so both compute the same thing.
 *
 * A sample is a batch of products queued back to back and ended by a stream
 * synchronisation, timed with the host's monotonic clock: the way `ag bench` times ag's own
 * calls, so the ratio compares like with like, and a tiny product is not lost in the
 * synchronisation's latency. */
#include <cublas_v2.h>
#include <limits.h>
#include <stdlib.h>
#include <time.h>

#include "cuda_internal.h"

/* Untimed products first; a sample lasts at least MIN_SAMPLE_S (batches of up to
 * MAX_BATCH products); at most MAX_REPEATS samples. */
#define WARMUP       3
#define MIN_SAMPLE_S 1e-3
#define MAX_BATCH    10000
#define MAX_REPEATS  100000

/* Monotonic clock in seconds. */
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* qsort order of doubles. */
static int compare_doubles(const void *x, const void *y) {
    const double a = *static_cast<const double *>(x), b = *static_cast<const double *>(y);
    return (a > b) - (a < b);
}

/* One reference run: its handle, buffers and shape. */
typedef struct ref_gemm {
    cublasHandle_t handle; /* bound to the device's stream */
    cudaStream_t stream;   /* the device's one stream */
    ag_dtype dtype;        /* AG_F32 or AG_F64 */
    int m, n, k;           /* c[m, n] = a[m, k] b[k, n], row-major */
    void *a, *b, *c;       /* device buffers */
} ref_gemm;

/* Fails with cuBLAS status s of `call`. */
static ag_status blas_fail(cublasStatus_t s, const char *call) {
    return cu_fail(AG_ERR_INTERNAL, "reference gemm: %s failed (cuBLAS status %d)", call, (int)s);
}

/* Queues one product: row-major C = A B is column-major C^T = B^T A^T. */
static ag_status ref_run(const ref_gemm *r) {
    cublasStatus_t s;
    if (r->dtype == AG_F32) {
        const float one = 1, zero = 0;
        s = cublasSgemm(r->handle, CUBLAS_OP_N, CUBLAS_OP_N, r->n, r->m, r->k, &one,
                        static_cast<const float *>(r->b), r->n, static_cast<const float *>(r->a),
                        r->k, &zero, static_cast<float *>(r->c), r->n);
    } else {
        const double one = 1, zero = 0;
        s = cublasDgemm(r->handle, CUBLAS_OP_N, CUBLAS_OP_N, r->n, r->m, r->k, &one,
                        static_cast<const double *>(r->b), r->n, static_cast<const double *>(r->a),
                        r->k, &zero, static_cast<double *>(r->c), r->n);
    }
    return s == CUBLAS_STATUS_SUCCESS ? AG_OK : blas_fail(s, "gemm");
}

/* Allocates and fills the buffers and creates the handle, with ag's math mode. */
static ag_status ref_open(ref_gemm *r) {
    const size_t elsize = r->dtype == AG_F32 ? sizeof(float) : sizeof(double);
    const size_t sizes[3] = {elsize * (size_t)r->m * (size_t)r->k,
                             elsize * (size_t)r->k * (size_t)r->n,
                             elsize * (size_t)r->m * (size_t)r->n};
    void **buffers[3] = {&r->a, &r->b, &r->c};
    ag_status st = AG_OK;
    for (int i = 0; st == AG_OK && i < 3; i++) {
        st = cu_check(cudaMalloc(buffers[i], sizes[i]), "reference gemm: cudaMalloc");
        /* Bytes 0x3c make small nonzero values (0.0115 as float32). */
        if (st == AG_OK)
            st = cu_check(cudaMemsetAsync(*buffers[i], 0x3c, sizes[i], r->stream),
                          "reference gemm: cudaMemsetAsync");
    }
    cublasStatus_t s = CUBLAS_STATUS_SUCCESS;
    if (st == AG_OK && (s = cublasCreate(&r->handle)) != CUBLAS_STATUS_SUCCESS)
        return blas_fail(s, "cublasCreate");
    if (st == AG_OK && (s = cublasSetStream(r->handle, r->stream)) != CUBLAS_STATUS_SUCCESS)
        return blas_fail(s, "cublasSetStream");
    const cublasMath_t math = r->dtype == AG_F32 && cu_get_allow_tf32() ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                        : CUBLAS_DEFAULT_MATH;
    if (st == AG_OK && (s = cublasSetMathMode(r->handle, math)) != CUBLAS_STATUS_SUCCESS)
        return blas_fail(s, "cublasSetMathMode");
    return st;
}

/* Frees what ref_open made (cudaFree waits for the queued work). */
static void ref_close(ref_gemm *r) {
    if (r->handle) (void)cublasDestroy(r->handle);
    (void)cudaFree(r->a);
    (void)cudaFree(r->b);
    (void)cudaFree(r->c);
}

/* Times the products: warm-up, batch size from one synchronised product, then the
 * samples (seconds per product). */
static ag_status ref_time(const ref_gemm *r, int repeats, double *samples) {
    ag_status st = AG_OK;
    for (int i = 0; st == AG_OK && i < WARMUP; i++) st = ref_run(r);
    if (st == AG_OK) st = cu_check(cudaStreamSynchronize(r->stream), "reference gemm: sync");
    double start = now();
    if (st == AG_OK) st = ref_run(r);
    if (st == AG_OK) st = cu_check(cudaStreamSynchronize(r->stream), "reference gemm: sync");
    const double one = now() - start;
    const int batch = one >= MIN_SAMPLE_S               ? 1
                      : one * MAX_BATCH <= MIN_SAMPLE_S ? MAX_BATCH
                                                        : (int)(MIN_SAMPLE_S / one) + 1;
    for (int i = 0; st == AG_OK && i < repeats; i++) {
        start = now();
        for (int j = 0; st == AG_OK && j < batch; j++) st = ref_run(r);
        if (st == AG_OK) st = cu_check(cudaStreamSynchronize(r->stream), "reference gemm: sync");
        samples[i] = (now() - start) / batch;
    }
    return st;
}

ag_status cu_reference_gemm(int device, ag_dtype dtype, int64_t m, int64_t n, int64_t k,
                            int repeats, double *seconds_median) {
    ref_gemm r = {};
    ag_status st = cu_enter(device, "reference gemm", &r.stream);
    if (st != AG_OK) return st;
    if (dtype != AG_F32 && dtype != AG_F64)
        return cu_fail(AG_ERR_DTYPE, "reference gemm: %s is not float32 or float64",
                       ag_dtype_name(dtype));
    if (m < 1 || n < 1 || k < 1 || m > INT_MAX || n > INT_MAX || k > INT_MAX || repeats < 1 ||
        repeats > MAX_REPEATS || !seconds_median)
        return cu_fail(AG_ERR_INVALID_ARG,
                       "reference gemm: m %lld, n %lld, k %lld must be in 1..%d and repeats %d "
                       "in 1..%d",
                       (long long)m, (long long)n, (long long)k, INT_MAX, repeats, MAX_REPEATS);
    r.dtype = dtype;
    r.m = (int)m;
    r.n = (int)n;
    r.k = (int)k;
    double *samples = static_cast<double *>(malloc((size_t)repeats * sizeof *samples));
    st = samples ? ref_open(&r)
                 : cu_fail(AG_ERR_OUT_OF_MEMORY, "reference gemm: no host memory for samples");
    if (st == AG_OK) st = ref_time(&r, repeats, samples);
    if (st == AG_OK) {
        qsort(samples, (size_t)repeats, sizeof *samples, compare_doubles);
        *seconds_median = repeats % 2 ? samples[repeats / 2]
                                      : (samples[repeats / 2 - 1] + samples[repeats / 2]) / 2;
    }
    ref_close(&r);
    free(samples);
    return st;
}
