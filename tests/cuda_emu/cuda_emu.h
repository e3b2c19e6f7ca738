/* Device side of cudaemu, the test-only host emulation of the CUDA backend: what CUDA C++
 * provides to kernel code, for g++. Every kernel file of backends/cuda is compiled as C++
 * with this header included first (tests/cuda_emu/rewrite_launches.cmake writes the copies
 * that include it), and so is every plugin kernel source the emulated NVRTC compiles.
 *
 * Model: a launch runs its blocks one after another on the calling thread; the threads of a
 * block are fibers (emu_runtime.cpp) that switch only where CUDA threads must wait for each
 * other: __syncthreads and the warp shuffles. Everything else of a thread runs without
 * interruption, so atomics are plain read-modify-writes and a __shared__ array can be a
 * static variable (blocks never overlap, and launches are serialised process-wide).
 * Meeting a barrier at different places, or waiting for a thread that has exited, is
 * reported with the threads and source lines involved, and the process aborts; a block
 * larger than the kernel's __launch_bounds__ fails to launch.
 *
 * Not modelled: asynchrony (work runs when it is queued), races between threads (they
 * never interleave between barriers), CUDA's math library (the host's libm computes expf
 * and the rest, with other last-bit roundings) and the stale contents of shared memory. */
#ifndef AG_CUDA_EMU_H
#define AG_CUDA_EMU_H

#include <cuda_runtime_api.h>
#include <math.h>
#include <stddef.h>
#include <source_location>
#include <type_traits>
#include <utility>

/* The runtime's exported interface, shared with plugin kernels compiled at run time. */
#define EMU_API __attribute__((visibility("default")))

/* CUDA's execution-space and kernel attributes mean nothing on the host. */
#undef __device__
#undef __global__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __launch_bounds__
#define __device__
#define __global__
#define __host__
#define __forceinline__ inline
#define __shared__      static
#define __launch_bounds__(...)

extern "C" {

/* The running thread's coordinates, set by the scheduler before a fiber runs. */
extern EMU_API uint3 threadIdx, blockIdx;
extern EMU_API dim3 blockDim, gridDim;

/* Runs fn(ctx) as the kernel `name` over grid x block threads (emu_runtime.cpp); blocks of
 * more than max_threads threads (the kernel's __launch_bounds__, 0 when it has none) fail.
 * An invalid configuration runs nothing and returns the error, which cudaGetLastError then
 * returns too. */
EMU_API cudaError_t emu_run_grid(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                                 unsigned max_threads, const char *name, void (*fn)(void *),
                                 void *ctx);
/* __syncthreads of the running thread, called at file:line:column. */
EMU_API void emu_syncthreads(const char *file, unsigned line, unsigned column);
/* Replaces the `size` bytes at value with those of lane (own lane ^ lane_mask) of the
 * warp, as __shfl_xor_sync(mask, ..., lane_mask, width) called at file:line:column. */
EMU_API void emu_shfl_xor(unsigned mask, void *value, size_t size, int lane_mask, int width,
                          const char *file, unsigned line, unsigned column);
}

/* A <<<grid, block, shared_bytes, stream>>> launch: the rewritten launch statement is
 * emu_launch(grid, block, ...).run("kernel", kernel, args...). */
class emu_launch {
  public:
    /* The launch configuration, with CUDA's defaults. */
    emu_launch(dim3 grid, dim3 block, size_t shared_bytes = 0, cudaStream_t stream = 0)
        : grid_(grid), block_(block), shared_bytes_(shared_bytes), stream_(stream) {}

    /* The kernel's __launch_bounds__: blocks of more threads fail to launch. */
    emu_launch &bounds(unsigned max_threads) {
        max_threads_ = max_threads;
        return *this;
    }

    /* Runs kernel(args...) on every thread. The arguments are taken at the launch (arrays
     * decay to pointers) and each thread gets its own copies, as kernel parameters are.
     * Returns the launch error (cudaSuccess). */
    template <typename K, typename... A> cudaError_t run(const char *name, K kernel, A... args) {
        auto body = [&] { kernel(args...); };
        return emu_run_grid(grid_, block_, shared_bytes_, stream_, max_threads_, name,
                            call<decltype(body)>, &body);
    }

  private:
    /* Calls the lambda *f. */
    template <typename F> static void call(void *f) {
        (*static_cast<F *>(f))();
    }
    dim3 grid_, block_;
    size_t shared_bytes_;
    cudaStream_t stream_;
    unsigned max_threads_ = 0; /* 0: no bound */
};

/* Launches kernel with parameter i read from params[i], as cudaLaunchKernel passes them:
 * how the entries of plugin kernels compiled by the emulated NVRTC launch (emu_nvrtc.cpp). */
template <typename... P>
cudaError_t emu_launch_params(emu_launch launch, const char *name, void (*kernel)(P...),
                              void **params) {
    return [&]<size_t... I>(std::index_sequence<I...>) {
        return launch.run(name, kernel, *static_cast<std::remove_cvref_t<P> *>(params[I])...);
    }
    (std::index_sequence_for<P...>{});
}

/* ---- intrinsics ---- */

/* Waits until every thread of the block has reached this same __syncthreads. */
inline void __syncthreads(std::source_location at = std::source_location::current()) {
    emu_syncthreads(at.file_name(), at.line(), at.column());
}

/* var of lane (own lane ^ lane_mask) within groups of `width` lanes; every lane of mask (the
 * whole warp) must make this same call. Types as CUDA's overloads: numbers of 4 or 8 bytes. */
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32,
                  std::source_location at = std::source_location::current()) {
    static_assert(std::is_arithmetic_v<T> && (sizeof(T) == 4 || sizeof(T) == 8),
                  "CUDA shuffles 32- and 64-bit numbers only");
    emu_shfl_xor(mask, &var, sizeof var, lane_mask, width, at.file_name(), at.line(), at.column());
    return var;
}

/* Atomics: no other thread runs between the read and the write (see the file comment). */
inline float atomicAdd(float *p, float v) {
    const float old = *p;
    *p = old + v;
    return old;
}
inline double atomicAdd(double *p, double v) {
    const double old = *p;
    *p = old + v;
    return old;
}
inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) {
    const unsigned long long old = *p;
    *p = old + v;
    return old;
}
inline unsigned long long atomicMin(unsigned long long *p, unsigned long long v) {
    const unsigned long long old = *p;
    if (v < old) *p = v;
    return old;
}

/* Correctly rounded operations; the emulation compiles with -ffp-contract=off, so none of
 * them fuses with another. */
inline float __fadd_rn(float a, float b) {
    return a + b;
}
inline float __fmul_rn(float a, float b) {
    return a * b;
}
inline float __fdiv_rn(float a, float b) {
    return a / b;
}
inline float __fsqrt_rn(float a) {
    return sqrtf(a);
}
inline double __dadd_rn(double a, double b) {
    return a + b;
}
inline double __dmul_rn(double a, double b) {
    return a * b;
}
inline double __ddiv_rn(double a, double b) {
    return a / b;
}
inline double __dsqrt_rn(double a) {
    return sqrt(a);
}

#endif
