/* The cpu backend's "ag_reference_gemm" extra (include/ag/backend.h): OpenBLAS's own
 * cblas_sgemm / cblas_dgemm timed on buffers of its own, so that `ag bench` can set ag's
 * matmul beside the BLAS it calls, measured in the same process with the same threads. */
#include "cpu_internal.h"

#include <cblas.h>
#include <limits.h>
#include <stdlib.h>
#include <time.h>

/* Untimed products before the samples: OpenBLAS starts its threads and buffers on first use. */
enum { WARMUP = 2, MAX_REPEATS = 100000 };

/* Monotonic clock in seconds. */
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* qsort order of doubles. */
static int compare_doubles(const void *x, const void *y) {
    const double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* One row-major product c[m, n] = a[m, k] b[k, n]. */
static void gemm(ag_dtype dtype, int m, int n, int k, const void *a, const void *b, void *c) {
    if (dtype == AG_F32)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c,
                    n);
    else
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0, a, k, b, n, 0.0, c, n);
}

/* A buffer of `count` elements of dtype holding small nonzero values: real pages, not the
 * shared zero page an untouched calloc buffer reads from; 64-byte aligned like the
 * allocator's buffers that ag's matmul gets. */
static void *filled(ag_dtype dtype, int64_t count) {
    const size_t size = dtype == AG_F32 ? sizeof(float) : sizeof(double);
    void *p = aligned_alloc(64, ((size_t)count * size + 63) / 64 * 64);
    for (int64_t i = 0; p && i < count; i++) {
        const double v = (double)(i % 13) * 0.125 - 0.75;
        if (dtype == AG_F32)
            ((float *)p)[i] = (float)v;
        else
            ((double *)p)[i] = v;
    }
    return p;
}

ag_status cpu_reference_gemm(int device, ag_dtype dtype, int64_t m, int64_t n, int64_t k,
                             int repeats, double *seconds_median) {
    if (!cpu_device_valid(device))
        return cpu_fail(AG_ERR_DEVICE, "reference gemm: no cpu:%d", device);
    if (dtype != AG_F32 && dtype != AG_F64)
        return cpu_fail(AG_ERR_DTYPE, "reference gemm: %s is not float32 or float64",
                        ag_dtype_name(dtype));
    if (m < 1 || n < 1 || k < 1 || m > INT_MAX || n > INT_MAX || k > INT_MAX || repeats < 1 ||
        repeats > MAX_REPEATS || !seconds_median)
        return cpu_fail(AG_ERR_INVALID_ARG,
                        "reference gemm: m %lld, n %lld, k %lld must be in 1..%d and repeats %d "
                        "in 1..%d",
                        (long long)m, (long long)n, (long long)k, INT_MAX, repeats, MAX_REPEATS);
    void *a = filled(dtype, m * k), *b = filled(dtype, k * n), *c = filled(dtype, m * n);
    double *samples = malloc((size_t)repeats * sizeof *samples);
    ag_status st = a && b && c && samples
                       ? AG_OK
                       : cpu_fail(AG_ERR_OUT_OF_MEMORY,
                                  "reference gemm: no memory for %lldx%lldx%lld %s buffers",
                                  (long long)m, (long long)k, (long long)n, ag_dtype_name(dtype));
    for (int i = 0; st == AG_OK && i < WARMUP; i++) gemm(dtype, (int)m, (int)n, (int)k, a, b, c);
    for (int i = 0; st == AG_OK && i < repeats; i++) {
        const double start = now();
        gemm(dtype, (int)m, (int)n, (int)k, a, b, c);
        samples[i] = now() - start;
    }
    if (st == AG_OK) {
        qsort(samples, (size_t)repeats, sizeof *samples, compare_doubles);
        *seconds_median = repeats % 2 ? samples[repeats / 2]
                                      : (samples[repeats / 2 - 1] + samples[repeats / 2]) / 2;
    }
    free(samples);
    free(c);
    free(b);
    free(a);
    return st;
}
