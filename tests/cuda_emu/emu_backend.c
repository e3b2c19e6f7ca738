/* Entry point of libag_backend_cudaemu.so, the test-only backend "cudaemu": the CUDA
 * backend of backends/cuda, every file of it, built against a host emulation of the CUDA
 * runtime, cuBLAS and NVRTC (tests/cuda_emu), so that its kernels run in CI without a GPU.
 *
 * The real cuda_backend.c is compiled with its ag_backend_entry renamed to
 * cu_real_backend_entry; this entry returns the same function table under the name the
 * loader expects for this library. */
#include <pthread.h>
#include "ag/backend.h"

/* The CUDA backend's own entry (cuda_backend.c). */
const ag_backend_iface *cu_real_backend_entry(uint32_t host_abi_major, uint32_t host_abi_minor);

static ag_backend_iface g_iface; /* the CUDA backend's table, renamed */
static pthread_once_t g_iface_once = PTHREAD_ONCE_INIT;

/* Fills g_iface from the CUDA backend's table. */
static void make_iface(void) {
    g_iface = *cu_real_backend_entry(AG_BACKEND_ABI_MAJOR, AG_BACKEND_ABI_MINOR);
    g_iface.name = "cudaemu";
}

__attribute__((visibility("default"))) const ag_backend_iface *
ag_backend_entry(uint32_t host_abi_major, uint32_t host_abi_minor) {
    (void)host_abi_major;
    (void)host_abi_minor;
    pthread_once(&g_iface_once, make_iface);
    return &g_iface;
}
