/* Internal interfaces of the CUDA backend (libag_backend_cuda.so).
 *
 * Files: cuda_backend.c (function table, init, devices, errors, kernel lookup, extras),
 * cuda_memory.c (caching device allocator, pinned staging buffers, copies, synchronisation),
 * cuda_nvrtc.c (plugin CUDA sources compiled by NVRTC, cached by source hash and arch),
 * cuda_reference.cu (the "ag_reference_gemm" extra: cuBLAS timed on its own buffers),
 * cuda_kernels_*.cu (one C entry per kernel name of docs/kernels.md, each launching the CUDA
 * kernels of its file; cuda_kernel_util.cuh has their shared device helpers).
 *
 * Everything runs on one stream per device (cu_device.stream): kernels, copies and cuBLAS
 * calls are ordered on it, so a buffer freed to the cache may be handed out again at once
 * (its next user is queued behind its last). This header compiles as C and as C++. */
#ifndef AG_CUDA_INTERNAL_H
#define AG_CUDA_INTERNAL_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include "ag/backend.h"
#include "../common/kernel_util.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors (cuda_backend.c) ---- */

/* Sets the thread's message (printf-style) and returns status. */
ag_status cu_fail(ag_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Message of the last failure on this thread (the last_error slot). */
const char *cu_error_text(void);
/* Maps a CUDA runtime error of `what` to a status with a message naming the error
 * (cudaGetErrorName and cudaGetErrorString); cudaSuccess gives AG_OK. Out-of-memory errors
 * give AG_ERR_OUT_OF_MEMORY. */
ag_status cu_check(cudaError_t err, const char *what);
/* After launching kernels for `what`: reports a launch error (bad configuration, no kernel
 * image for the device) through cu_check. Errors while running surface at the next
 * synchronisation. */
ag_status cu_check_launch(const char *what);

/* ---- devices (cuda_backend.c) ---- */

/* One CUDA device. */
typedef struct cu_device {
    int ordinal;             /* CUDA device ordinal */
    cudaStream_t stream;     /* the one non-blocking stream all work of this device runs on */
    int sm_count;            /* multiprocessors */
    int cc_major, cc_minor;  /* compute capability */
    size_t shared_per_block; /* bytes of shared memory per block */
    char name[128];          /* "NVIDIA H100 80GB HBM3" */
} cu_device;

/* Number of devices found at init. */
int cu_device_count(void);
/* Device `index` (0 <= index < cu_device_count()), or NULL. */
cu_device *cu_device_at(int index);
/* Makes device `index` current on the calling thread; *stream receives its stream. Fails
 * with AG_ERR_DEVICE naming `what` for an index out of range. Every entry calls it first. */
ag_status cu_enter(int index, const char *what, cudaStream_t *stream);
/* Number of blocks for a grid-stride loop over n items with `threads` per block: enough to
 * fill device `index` several times over, never more than needed. */
unsigned cu_grid_size(int index, int64_t n, unsigned threads);

/* ---- memory (cuda_memory.c) ---- */

/* Backend ABI slots: alloc/free/copies/synchronize/memory_stats/empty_cache. Buffers are
 * device pointers (the void * of the ABI). */
ag_status cu_alloc(int device, size_t bytes, void **out);
void cu_free(int device, void *buffer, size_t bytes);
ag_status cu_copy_from_host(int device, void *dst, size_t dst_offset, const void *src,
                            size_t bytes);
ag_status cu_copy_to_host(int device, void *dst, const void *src, size_t src_offset, size_t bytes);
ag_status cu_copy_device(int device, void *dst, size_t dst_offset, const void *src,
                         size_t src_offset, size_t bytes);
ag_status cu_synchronize(int device);
ag_status cu_memory_stats(int device, ag_memory_stats *stats);
ag_status cu_empty_cache(int device);
/* Frees every cached buffer and staging buffer of every device (shutdown). */
void cu_memory_shutdown(void);

/* Scratch memory for a kernel entry (partial sums, packed operands, error flags): a buffer
 * of the caching allocator, released with cu_scratch_free once the work using it has been
 * queued (stream order makes that safe). */
typedef struct cu_scratch {
    void *ptr;    /* device pointer, NULL when empty */
    size_t bytes; /* size requested */
    int device;   /* device it belongs to */
} cu_scratch;
/* Allocates `bytes` of scratch on `device`; on failure the error names `what`. */
ag_status cu_scratch_alloc(int device, size_t bytes, const char *what, cu_scratch *out);
/* Returns scratch to the cache (no-op when empty). */
void cu_scratch_free(cu_scratch *s);

/* Copies `bytes` from device memory to host memory, waiting for the device's stream first:
 * for the few entries that must read a result back (index bounds, error flags). */
ag_status cu_read_back(int device, void *dst, const void *src, size_t bytes, const char *what);

/* ---- cuBLAS (cuda_kernels_matmul.cu) ---- */

/* Allows or forbids TF32 tensor-core math in float32 matmuls (forbidden by default, so
 * float32 results match the cpu backend's; AG_CUDA_ALLOW_TF32=1 allows it at init). The
 * "cuda_set_allow_tf32" extra of get_proc_address. */
void cu_set_allow_tf32(int allow);
/* Whether TF32 is allowed (the "cuda_get_allow_tf32" extra). */
int cu_get_allow_tf32(void);
/* Destroys the cuBLAS handles (shutdown). */
void cu_matmul_shutdown(void);

/* ---- extras (cuda_reference.cu) ---- */

/* The "ag_reference_gemm" extra: cuBLAS's gemm timed on buffers of its own on the device's
 * stream (ag_reference_gemm_fn in include/ag/backend.h). */
ag_status cu_reference_gemm(int device, ag_dtype dtype, int64_t m, int64_t n, int64_t k,
                            int repeats, double *seconds_median);

/* ---- plugin source kernels (cuda_nvrtc.c) ---- */

/* Backend ABI slots for kernels given as CUDA C source (see include/ag/backend.h). */
ag_status cu_build_source(const char *source, const char *entry, void **out);
ag_status cu_launch_source(void *kernel, const ag_kernel_args *args, int n_sizes,
                           const int64_t *sizes, int64_t work_items);
/* Unloads every compiled program (shutdown). */
void cu_nvrtc_shutdown(void);
/* Compiles `source` with NVRTC for sm_<arch> (e.g. 90) and checks that it defines `entry`,
 * without loading it: no device needed. The "cuda_compile_test" extra, so that tests check
 * plugin sources and compile errors on machines without a GPU. */
ag_status cu_compile_test(const char *source, const char *entry, int arch);

/* ---- kernel tables (one per cuda_kernels_*.cu) ---- */

/* One kernel name -> entry (backends/common/kernel_util.h). */
typedef ag_kernel_entry cu_kernel_entry;

/* Each table ends with an entry whose name is NULL. */
extern const cu_kernel_entry
    cu_elementwise_kernels[]; /* unary, binary, where, copy, fill, arange */
extern const cu_kernel_entry
    cu_reduce_kernels[]; /* sum max min argmax argmin softmax log_softmax */
extern const cu_kernel_entry cu_matmul_kernels[]; /* matmul (cuBLAS; i64 tiled) */
extern const cu_kernel_entry cu_index_kernels[];  /* index_select index_add gather scatter_add */
extern const cu_kernel_entry cu_nn_kernels[];     /* layer_norm cross_entropy */
extern const cu_kernel_entry cu_optim_kernels[];  /* sgd_update adam_update */

#ifdef __cplusplus
}
#endif
#endif
