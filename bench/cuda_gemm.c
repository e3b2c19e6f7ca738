/* float32 GEMM on the CUDA backend against cuBLAS called directly, in one run: for each
 * shape, GFLOP/s of ag_matmul (device tensors, output allocated by ag each call) and of
 * cublasSgemm on buffers of our own, and their ratio. TF32 stays off in both (ag's default;
 * cuBLAS's default math mode), so both compute full float32.
 * Usage: bench_cuda_gemm [seconds per measurement, default 0.3]. Exits 77 without a GPU. */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "ag/ag.h"

/* Square sizes, then the §P layer shapes at batch 128 (m, k, n). */
static const int shapes[][3] = {{256, 256, 256},    {512, 512, 512},    {1024, 1024, 1024},
                                {2048, 2048, 2048}, {4096, 4096, 4096}, {128, 784, 512},
                                {128, 512, 512},    {128, 512, 10}};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Seconds per ag_matmul of a and b on dev, repeated for about `budget` seconds. */
static double time_ag(ag_tensor *a, ag_tensor *b, ag_device dev, double budget) {
    for (int i = 0; i < 3; i++) ag_release(ag_matmul(a, b)); /* warm-up: kernels, cache */
    ag_synchronize(dev);
    long reps = 0;
    const double start = now();
    double elapsed = 0;
    while (elapsed < budget) {
        for (int i = 0; i < 10; i++, reps++) ag_release(ag_matmul(a, b));
        ag_synchronize(dev);
        elapsed = now() - start;
    }
    return elapsed / (double)reps;
}

/* Seconds per cublasSgemm of the same product, row-major as C^T = B^T A^T. */
static double time_cublas(cublasHandle_t h, int m, int k, int n, double budget) {
    float *a, *b, *c;
    const float one = 1, zero = 0;
    if (cudaMalloc((void **)&a, sizeof(float) * (size_t)m * k) != cudaSuccess ||
        cudaMalloc((void **)&b, sizeof(float) * (size_t)k * n) != cudaSuccess ||
        cudaMalloc((void **)&c, sizeof(float) * (size_t)m * n) != cudaSuccess)
        return -1;
    cudaMemset(a, 0, sizeof(float) * (size_t)m * k);
    cudaMemset(b, 0, sizeof(float) * (size_t)k * n);
    for (int i = 0; i < 3; i++)
        cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &one, b, n, a, k, &zero, c, n);
    cudaDeviceSynchronize();
    long reps = 0;
    const double start = now();
    double elapsed = 0;
    while (elapsed < budget) {
        for (int i = 0; i < 10; i++, reps++)
            cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &one, b, n, a, k, &zero, c, n);
        cudaDeviceSynchronize();
        elapsed = now() - start;
    }
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    return elapsed / (double)reps;
}

int main(int argc, char **argv) {
    const double budget = argc > 1 ? atof(argv[1]) : 0.3;
    ag_device dev;
    if (ag_device_parse("cuda", &dev) != AG_OK) {
        printf("bench_cuda_gemm skipped: %s\n", ag_last_error());
        return 77;
    }
    cublasHandle_t h;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
        printf("bench_cuda_gemm: cublasCreate failed\n");
        return 1;
    }
    ag_set_default_device(dev);
    ag_generator *gen = ag_generator_new(1);
    printf("%-18s %12s %12s %8s\n", "m x k x n", "ag GFLOP/s", "cuBLAS", "ag/cuBLAS");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int m = shapes[s][0], k = shapes[s][1], n = shapes[s][2];
        /* No scope is open: each result is ours to release at once. */
        ag_tensor *a = ag_uniform(gen, AG_F32, 2, (const int64_t[]){m, k}, -1, 1);
        ag_tensor *b = ag_uniform(gen, AG_F32, 2, (const int64_t[]){k, n}, -1, 1);
        if (!a || !b) {
            printf("%dx%dx%d: %s\n", m, k, n, ag_last_error());
            ag_release(a);
            ag_release(b);
            continue;
        }
        const double flops = 2.0 * m * k * n;
        const double t_ag = time_ag(a, b, dev, budget), t_blas = time_cublas(h, m, k, n, budget);
        char label[32];
        snprintf(label, sizeof label, "%dx%dx%d", m, k, n);
        printf("%-18s %12.1f %12.1f %8.3f\n", label, flops / t_ag * 1e-9, flops / t_blas * 1e-9,
               t_blas / t_ag);
        ag_release(a);
        ag_release(b);
    }
    ag_generator_free(gen);
    cublasDestroy(h);
    return 0;
}
