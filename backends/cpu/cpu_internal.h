/* Internals shared by the files of the cpu backend: error reporting, argument checks,
 * the allocator, the kernel tables and per-dtype arithmetic helpers. Nothing here is
 * exported from the shared library (it is built with -fvisibility=hidden). */
#ifndef AG_CPU_INTERNAL_H
#define AG_CPU_INTERNAL_H

#include "ag/backend.h"
#include "ag/half.h"
#include "../common/kernel_checks.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Element types by short name, so macros can paste them into function names. The 16-bit
 * floats are structs, so that the two cannot be mixed up with each other or with integers;
 * only the copy kernel reads and writes them (include/ag/half.h converts). */
typedef float f32;
typedef double f64;
typedef int64_t i64;
typedef struct f16 {
    uint16_t bits;
} f16;
typedef struct bf16 {
    uint16_t bits;
} bf16;

/* The ag_dtype of each short type name. */
#define CPU_DTYPE_f32  AG_F32
#define CPU_DTYPE_f64  AG_F64
#define CPU_DTYPE_i64  AG_I64
#define CPU_DTYPE_f16  AG_F16
#define CPU_DTYPE_bf16 AG_BF16

/* Kernels go parallel only above this many elements of work: below it the cost of
 * waking the OpenMP team exceeds the work itself. */
#define CPU_PARALLEL_MIN 32768

/* Put before a unit-stride loop over an output and its inputs: tells the compiler to
 * vectorise it without alias checks, which is safe because element i is only ever read and
 * written at index i (even when the output is one of the inputs). */
#define CPU_SIMD _Pragma("omp simd")

/* glibc's vector math library (libmvec) has SIMD versions of these float functions;
 * declaring them `omp declare simd` lets GCC vectorise the float32 loops that call them
 * (GELU's erf, softmax's and sigmoid's exp, ...) instead of one libm call per element.
 * Checked over all 2^32 float inputs: within 2 ulp of libm for erff and tanhf, 3 for expf.
 * Needs -fno-math-errno and libmvec (backends/cpu/CMakeLists.txt). */
#pragma omp declare simd notinbranch
float expf(float);
#pragma omp declare simd notinbranch
float erff(float);
#pragma omp declare simd notinbranch
float tanhf(float);

/* ---- errors (cpu_backend.c) ---- */

/* Sets this thread's last_error message (printf-style) and returns `status`. */
ag_status cpu_fail(ag_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Number of threads kernels use (set by cpu_set_num_threads, else the OpenMP default). */
int cpu_num_threads(void);
/* Whether device is one of the logical devices (AG_CPU_DEVICES, default 1). */
bool cpu_device_valid(int device);

/* ---- argument checks (cpu_check.c) ---- */

/* Number of elements of a kernel tensor (1 for 0-dim). */
int64_t cpu_numel(const ag_kernel_tensor *t);
/* Writes "[2, 3]" for t's shape into buf and returns buf. */
const char *cpu_shape_str(const ag_kernel_tensor *t, char *buf, size_t size);
/* Checks the argument block: struct size, tensor counts, NULL pointers, ndim ranges,
 * extents and buffers (ag_kt_check_call without dtypes). */
ag_status cpu_check_args(const ag_kernel_args *args, const char *kernel, int n_inputs,
                         int n_outputs);
/* Checks that t has `dtype`; `role` names t in the message ("input 1"). */
ag_status cpu_check_dtype(const char *kernel, const ag_kernel_tensor *t, const char *role,
                          ag_dtype dtype);
/* Checks that t has dtype `dtype` and exactly the shape of `ref` (the output). */
ag_status cpu_check_like(const char *kernel, const ag_kernel_tensor *t, const char *role,
                         ag_dtype dtype, const ag_kernel_tensor *ref);
/* Checks that `dim` is a valid dimension of t. */
ag_status cpu_check_dim(const char *kernel, const ag_kernel_tensor *t, int64_t dim);

/* ---- shared kernel pieces ---- */

/* Copies src into dst (same shape, any strides), converting between f32, f64 and i64. */
ag_status cpu_copy_tensor(const ag_kernel_tensor *dst, const ag_kernel_tensor *src);

/* ---- allocator (cpu_allocator.c) ---- */

/* Hands out a 64-byte aligned buffer of at least `bytes`, from the cache when possible. */
ag_status cpu_alloc(int device, size_t bytes, void **out);
/* Returns a buffer of `bytes` (as passed to cpu_alloc) to the cache. */
void cpu_free(int device, void *buffer, size_t bytes);
/* Fills the allocator statistics (honouring stats->struct_size). */
ag_status cpu_memory_stats(int device, ag_memory_stats *stats);
/* Frees every cached buffer. */
ag_status cpu_empty_cache(int device);

/* ---- extras (cpu_reference.c) ---- */

/* The "ag_reference_gemm" extra: OpenBLAS's gemm timed on its own buffers
 * (ag_reference_gemm_fn in include/ag/backend.h). */
ag_status cpu_reference_gemm(int device, ag_dtype dtype, int64_t m, int64_t n, int64_t k,
                             int repeats, double *seconds_median);

/* ---- kernel tables (one per cpu_kernels_*.c) ---- */

/* One (kernel name, key dtype) → function entry. */
typedef struct cpu_kernel_entry {
    const char *name;
    ag_dtype dtype;
    ag_kernel_fn fn;
} cpu_kernel_entry;

/* Each table ends with an entry whose name is NULL. */
extern const cpu_kernel_entry cpu_elementwise_kernels[]; /* unary, binary, where, creation */
extern const cpu_kernel_entry cpu_reduce_kernels[];      /* sum, max, min, argmax, argmin */
extern const cpu_kernel_entry cpu_matmul_kernels[];      /* matmul */
extern const cpu_kernel_entry cpu_index_kernels[];       /* index_select ... scatter_add */
extern const cpu_kernel_entry cpu_softmax_kernels[];     /* softmax, log_softmax */
extern const cpu_kernel_entry cpu_nn_kernels[];          /* layer_norm, cross_entropy */
extern const cpu_kernel_entry cpu_optim_kernels[];       /* sgd_update, adam_update */

/* Table entries of kernel `name` implemented by fn##_f32 etc.: one dtype, the float dtypes,
 * or the float dtypes plus i64. */
#define CPU_ENTRY(name, fn, T)                                                                     \
    { name, CPU_DTYPE_##T, fn##_##T }
#define CPU_ENTRY_F(name, fn)  CPU_ENTRY(name, fn, f32), CPU_ENTRY(name, fn, f64)
#define CPU_ENTRY_FI(name, fn) CPU_ENTRY_F(name, fn), CPU_ENTRY(name, fn, i64)

/* Instantiates macro M once per dtype (float only, or float plus i64). */
#define CPU_FOR_F(M)  M(f32) M(f64)
#define CPU_FOR_FI(M) M(f32) M(f64) M(i64)
/* Every dtype: only the copy kernel handles the 16-bit floats. */
#define CPU_FOR_ALL(M) M(f32) M(f64) M(i64) M(f16) M(bf16)

/* ---- per-dtype arithmetic, so macro-generated code can say T##_add ----
 * Integer arithmetic wraps (two's complement) instead of overflowing, which would be
 * undefined behaviour in C. */
#define f32_add(a, b) ((a) + (b))
#define f64_add(a, b) ((a) + (b))
#define f32_sub(a, b) ((a) - (b))
#define f64_sub(a, b) ((a) - (b))
#define f32_mul(a, b) ((a) * (b))
#define f64_mul(a, b) ((a) * (b))
static inline i64 i64_add(i64 a, i64 b) {
    return (i64)((uint64_t)a + (uint64_t)b);
}
static inline i64 i64_sub(i64 a, i64 b) {
    return (i64)((uint64_t)a - (uint64_t)b);
}
static inline i64 i64_mul(i64 a, i64 b) {
    return (i64)((uint64_t)a * (uint64_t)b);
}

#define f32_neg(x) (-(x))
#define f64_neg(x) (-(x))
static inline i64 i64_neg(i64 x) {
    return i64_sub(0, x);
}
#define f32_abs(x) fabsf(x)
#define f64_abs(x) fabs(x)
static inline i64 i64_abs(i64 x) {
    return x < 0 ? i64_neg(x) : x;
}

/* True for NaN; always false for integers (folds away). */
#define CPU_ISNAN(x) ((x) != (x))

/* Float → i64 conversion that truncates toward zero and saturates (NaN → 0), since an
 * out-of-range cast is undefined behaviour in C. */
static inline i64 cpu_f64_to_i64(double x) {
    if (CPU_ISNAN(x)) return 0;
    if (x >= 9223372036854775808.0) return INT64_MAX;
    if (x < -9223372036854775808.0) return INT64_MIN;
    return (i64)x;
}

#endif
