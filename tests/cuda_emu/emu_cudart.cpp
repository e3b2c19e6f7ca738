/* The CUDA runtime calls of the CUDA backend's host files (cuda_backend.c, cuda_memory.c),
 * emulated on the host for cudaemu: one device whose memory is host memory, streams and
 * events that are only handles (kernels and copies run when queued, so every wait is
 * already over), and the calling thread's last error. Kernel launches are in
 * emu_runtime.cpp, libraries of plugin kernels in emu_nvrtc.cpp.
 *
 * Device memory comes from the C heap with a header in front, so that cudaFree can check
 * its pointer and cudaMemGetInfo can count; under AddressSanitizer a kernel that reads or
 * writes past the end of a buffer is caught (past the size the backend's caching allocator
 * asked for, which rounds sizes up). New buffers are filled with 0xff bytes (NaN in every
 * float type, -1 in integers), as a GPU hands out memory with stale contents: a kernel that
 * leaves elements unwritten shows. */
#include "emu_internal.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

/* Opaque to the backend: streams and events only need to be distinct live handles. */
struct CUstream_st {};
struct CUevent_st {};

namespace {

constexpr size_t DEVICE_MEMORY = (size_t)8 << 30;           /* what the emulated device holds */
constexpr size_t HEADER = 256;                              /* cudaMalloc aligns to 256 bytes */
constexpr unsigned long long MAGIC = 0x6375646165656d75ull; /* "cudaeemu": a device buffer */
/* Multiprocessors: cu_grid_size then makes grids of at most 8 blocks, which run fast, and
 * the kernels' grid-stride loops take many steps. */
constexpr int SM_COUNT = 1;

/* The header in front of every device buffer. */
struct buffer_header {
    unsigned long long magic; /* MAGIC while the buffer is allocated */
    size_t bytes;             /* as requested */
};

std::atomic<size_t> g_used{0}; /* device bytes allocated */
thread_local cudaError_t t_last_error = cudaSuccess;

/* The header of device buffer p, or null when the header in front of p is not one (p did
 * not come from cudaMalloc, or was freed). */
buffer_header *header_of(void *p) {
    if (!p) return nullptr;
    auto *h = reinterpret_cast<buffer_header *>(static_cast<char *>(p) - HEADER);
    return h->magic == MAGIC ? h : nullptr;
}

} // namespace

cudaError_t emu_error(cudaError_t err) {
    if (err != cudaSuccess) t_last_error = err;
    return err;
}

cudaError_t cudaGetLastError(void) {
    const cudaError_t err = t_last_error;
    t_last_error = cudaSuccess;
    return err;
}

const char *cudaGetErrorName(cudaError_t err) {
    switch (err) {
    case cudaSuccess:
        return "cudaSuccess";
    case cudaErrorInvalidValue:
        return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
        return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
        return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchOutOfResources:
        return "cudaErrorLaunchOutOfResources";
    case cudaErrorInvalidDevice:
        return "cudaErrorInvalidDevice";
    case cudaErrorInvalidKernelImage:
        return "cudaErrorInvalidKernelImage";
    case cudaErrorSymbolNotFound:
        return "cudaErrorSymbolNotFound";
    default:
        return "cudaErrorUnknown";
    }
}

const char *cudaGetErrorString(cudaError_t err) {
    switch (err) {
    case cudaSuccess:
        return "no error";
    case cudaErrorInvalidValue:
        return "invalid argument";
    case cudaErrorMemoryAllocation:
        return "out of memory";
    case cudaErrorInvalidConfiguration:
        return "invalid configuration argument";
    case cudaErrorLaunchOutOfResources:
        return "too many resources requested for launch";
    case cudaErrorInvalidDevice:
        return "invalid device ordinal";
    case cudaErrorInvalidKernelImage:
        return "device kernel image is invalid";
    case cudaErrorSymbolNotFound:
        return "named symbol not found";
    default:
        return "unknown error";
    }
}

/* ---- the device ---- */

cudaError_t cudaGetDeviceCount(int *count) {
    if (!count) return emu_error(cudaErrorInvalidValue);
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device) {
    if (!prop) return emu_error(cudaErrorInvalidValue);
    if (device != 0) return emu_error(cudaErrorInvalidDevice);
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "cudaemu, CUDA kernels emulated on the host");
    prop->totalGlobalMem = DEVICE_MEMORY;
    prop->sharedMemPerBlock = 48 << 10;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = 1024;
    prop->multiProcessorCount = SM_COUNT;
    prop->major = 9;
    prop->minor = 0;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    return device == 0 ? cudaSuccess : emu_error(cudaErrorInvalidDevice);
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    if (!free_bytes || !total_bytes) return emu_error(cudaErrorInvalidValue);
    *total_bytes = DEVICE_MEMORY;
    *free_bytes = DEVICE_MEMORY - g_used.load();
    return cudaSuccess;
}

/* ---- streams and events ---- */

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags) {
    (void)flags; /* a stream never waits for another */
    if (!stream) return emu_error(cudaErrorInvalidValue);
    *stream = new (std::nothrow) CUstream_st;
    return *stream ? cudaSuccess : emu_error(cudaErrorMemoryAllocation);
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    if (!stream) return emu_error(cudaErrorInvalidValue);
    delete stream;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    (void)stream; /* its work has run */
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned flags) {
    (void)flags; /* nothing is timed */
    if (!event) return emu_error(cudaErrorInvalidValue);
    *event = new (std::nothrow) CUevent_st;
    return *event ? cudaSuccess : emu_error(cudaErrorMemoryAllocation);
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    if (!event) return emu_error(cudaErrorInvalidValue);
    delete event;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    (void)stream;
    return event ? cudaSuccess : emu_error(cudaErrorInvalidValue);
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    return event ? cudaSuccess : emu_error(cudaErrorInvalidValue);
}

/* ---- memory ---- */

cudaError_t cudaMalloc(void **ptr, size_t bytes) {
    if (!ptr) return emu_error(cudaErrorInvalidValue);
    *ptr = nullptr;
    if (bytes == 0) return cudaSuccess; /* as CUDA: no buffer, no error */
    if (bytes > DEVICE_MEMORY || g_used.fetch_add(bytes) + bytes > DEVICE_MEMORY) {
        if (bytes <= DEVICE_MEMORY) g_used.fetch_sub(bytes);
        return emu_error(cudaErrorMemoryAllocation);
    }
    void *base = nullptr; /* exactly HEADER + bytes, so that AddressSanitizer sees the end */
    if (posix_memalign(&base, HEADER, HEADER + bytes) != 0) {
        g_used.fetch_sub(bytes);
        return emu_error(cudaErrorMemoryAllocation);
    }
    auto *h = static_cast<buffer_header *>(base);
    h->magic = MAGIC;
    h->bytes = bytes;
    *ptr = static_cast<char *>(base) + HEADER;
    memset(*ptr, 0xff, bytes);
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr) {
    if (!ptr) return cudaSuccess;
    buffer_header *h = header_of(ptr);
    if (!h) return emu_error(cudaErrorInvalidValue);
    h->magic = 0;
    g_used.fetch_sub(h->bytes);
    free(h);
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **ptr, size_t bytes, unsigned flags) {
    (void)flags; /* host memory is host memory */
    if (!ptr) return emu_error(cudaErrorInvalidValue);
    *ptr = malloc(bytes ? bytes : 1);
    return *ptr ? cudaSuccess : emu_error(cudaErrorMemoryAllocation);
}

cudaError_t cudaFreeHost(void *ptr) {
    free(ptr);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
    (void)stream;
    if (bytes == 0) return cudaSuccess;
    if (!dst || !src || kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault)
        return emu_error(cudaErrorInvalidValue);
    memmove(dst, src, bytes); /* a device-to-device copy may overlap (cu_copy_device) */
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *ptr, int value, size_t bytes, cudaStream_t stream) {
    (void)stream;
    if (bytes == 0) return cudaSuccess;
    if (!ptr) return emu_error(cudaErrorInvalidValue);
    memset(ptr, value, bytes);
    return cudaSuccess;
}
