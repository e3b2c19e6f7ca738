/* ag backend ABI — the contract between the core (libag) and a compute backend
 * (libag_backend_<name>.so), loaded at run time with dlopen.
 *
 * Versioning (see docs/backends.md):
 *  - the backend exports one symbol, AG_BACKEND_ENTRY_SYMBOL, of type ag_backend_entry_fn;
 *  - the core calls it with its own ABI major/minor and gets back a function table;
 *  - the table starts with struct_size, abi_major, abi_minor and name; fields are only ever
 *    appended (minor bump); removing or retyping a field is a major bump and the core
 *    refuses a backend whose major differs from its own;
 *  - the core reads only the fields that fit in struct_size, and fills every slot the
 *    backend left NULL with a stub returning AG_ERR_UNIMPLEMENTED, so nothing calls NULL.
 *
 * Backends know nothing of autograd: they allocate, copy, synchronise and run kernels.
 * Kernels are looked up once by (op kernel name, dtype) and cached by the core; the hot
 * path then calls the function pointer directly. */
#ifndef AG_BACKEND_H
#define AG_BACKEND_H

#include "ag/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The backend ABI version this header describes. */
#define AG_BACKEND_ABI_MAJOR 1
#define AG_BACKEND_ABI_MINOR 1

/* Name of the one symbol every backend library exports. */
#define AG_BACKEND_ENTRY_SYMBOL "ag_backend_entry"

/* A tensor as a kernel sees it: memory plus a strided view of it. Element (i0..in-1)
 * lives at element index offset + sum(i_d * strides[d]) from data. Strides are in
 * elements, may be zero (broadcast) and, for inputs, need not be contiguous. */
typedef struct ag_kernel_tensor {
    void *data;                   /* backend buffer handle from alloc (host pointer on cpu) */
    int64_t offset;               /* offset of element (0,...,0) in elements */
    ag_dtype dtype;               /* element type */
    int ndim;                     /* number of dimensions, 0..AG_MAX_DIMS */
    int64_t shape[AG_MAX_DIMS];   /* extent of each dimension */
    int64_t strides[AG_MAX_DIMS]; /* step of each dimension, in elements */
} ag_kernel_tensor;

/* Everything a kernel call receives. */
typedef struct ag_kernel_args {
    size_t struct_size;              /* sizeof(ag_kernel_args) of the caller */
    int device;                      /* device index on this backend */
    int n_inputs;                    /* number of entries in inputs */
    int n_outputs;                   /* number of entries in outputs */
    const ag_kernel_tensor *inputs;  /* input views, read-only */
    const ag_kernel_tensor *outputs; /* output views; the kernel writes every element */
    const ag_attrs *attrs;           /* op attributes (see docs/kernels.md per kernel) */
} ag_kernel_args;

/* A kernel: computes outputs from inputs; returns AG_OK or an error with the backend's
 * last_error() message set. */
typedef ag_status (*ag_kernel_fn)(const ag_kernel_args *args);

/* Properties of one device. */
typedef struct ag_device_info {
    size_t struct_size;    /* sizeof(ag_device_info) of the caller */
    char name[128];        /* human-readable device name */
    uint64_t total_memory; /* bytes of memory on the device (0 if unknown) */
    uint64_t free_memory;  /* bytes currently free (0 if unknown) */
    int compute_units;     /* cores / SMs / compute units (0 if unknown) */
} ag_device_info;

/* Memory accounting of a backend's allocator on one device. */
typedef struct ag_memory_stats {
    size_t struct_size;   /* sizeof(ag_memory_stats) of the caller */
    uint64_t in_use;      /* bytes handed out and not yet freed */
    uint64_t reserved;    /* bytes held from the system (in use + cached) */
    uint64_t peak_in_use; /* highest in_use seen */
    uint64_t alloc_count; /* number of alloc calls served */
    uint64_t cache_hits;  /* alloc calls served from the cache */
} ag_memory_stats;

/* The function table a backend returns. Append-only; see the versioning rules above. */
typedef struct ag_backend_iface {
    size_t struct_size; /* sizeof(ag_backend_iface) the backend was built with */
    uint32_t abi_major; /* AG_BACKEND_ABI_MAJOR the backend was built with */
    uint32_t abi_minor; /* AG_BACKEND_ABI_MINOR the backend was built with */
    const char *name;   /* short name, equal to <name> in libag_backend_<name>.so */

    /* Brings the backend up; called before anything else (again after shutdown if the
     * process loads the backend anew). NULL means nothing to do. */
    ag_status (*init)(void);
    /* Releases everything (cached buffers included); called at process end. */
    void (*shutdown)(void);
    /* Message of the last failed call on this thread ("" if none). */
    const char *(*last_error)(void);

    /* Number of usable devices (>= 1 after a successful init). */
    int (*device_count)(void);
    /* Fills *info for device index `device`. */
    ag_status (*device_info)(int device, ag_device_info *info);

    /* Allocates `bytes` (> 0) on `device`; *out receives the buffer handle. */
    ag_status (*alloc)(int device, size_t bytes, void **out);
    /* Returns a buffer from alloc with the same `bytes` it was allocated with; the backend
     * may cache it for reuse. */
    void (*free)(int device, void *buffer, size_t bytes);
    /* Copies `bytes` from host memory into buffer `dst` at byte offset `dst_offset`. */
    ag_status (*copy_from_host)(int device, void *dst, size_t dst_offset, const void *src,
                                size_t bytes);
    /* Copies `bytes` from buffer `src` at byte offset `src_offset` into host memory. */
    ag_status (*copy_to_host)(int device, void *dst, const void *src, size_t src_offset,
                              size_t bytes);
    /* Copies `bytes` between two buffers of the same device. */
    ag_status (*copy_device)(int device, void *dst, size_t dst_offset, const void *src,
                             size_t src_offset, size_t bytes);
    /* Waits until all work queued on `device` has finished. */
    ag_status (*synchronize)(int device);

    /* Finds the kernel for (kernel name, dtype); on AG_ERR_UNSUPPORTED, last_error()
     * says why. The dtype is the key dtype documented per kernel in docs/kernels.md. */
    ag_status (*get_kernel)(const char *kernel, ag_dtype dtype, ag_kernel_fn *out);

    /* Allocator statistics of `device`. */
    ag_status (*memory_stats)(int device, ag_memory_stats *stats);
    /* Returns cached, unused buffers of `device` to the system. */
    ag_status (*empty_cache)(int device);

    /* Backend-specific extras by name (NULL if none). The cpu backend has
     * "cpu_set_num_threads" (void (*)(int n), n <= 0 restores the default) and
     * "cpu_get_num_threads" (int (*)(void)). Any backend whose buffers are host pointers
     * returns non-NULL for "ag_host_memory": plugins' cpu kernels then run on it. A backend
     * with a vendor BLAS may return "ag_reference_gemm" (an ag_reference_gemm_fn, below):
     * `ag bench` compares its matmul with it (cpu: OpenBLAS, cuda: cuBLAS). */
    void *(*get_proc_address)(const char *name);

    /* ---- ABI 1.1: kernels given as source code (plugins' ag_plugin_kernel_source) ---- */

    /* Language of the kernel sources this backend compiles at run time: "opencl" (OpenCL C),
     * "cuda" (CUDA C through NVRTC), or NULL when it compiles none. */
    const char *source_language;
    /* Compiles kernel function `entry` of `source` for the backend's devices; *out receives
     * a handle that stays valid until shutdown. Compiling again the same (source, entry)
     * returns the same handle from the backend's cache. A compile error is AG_ERR_INTERNAL
     * with the compiler's log in last_error(). */
    ag_status (*build_source)(const char *source, const char *entry, void **out);
    /* Runs a kernel from build_source on args->device. The kernel's arguments are the
     * buffer of each input, then of each output (every tensor contiguous and starting at
     * element 0), then the n_sizes 64-bit integers of sizes. It runs one work item (thread)
     * per index in [0, work_items); the kernel ignores indices beyond its own count. */
    ag_status (*launch_source)(void *kernel, const ag_kernel_args *args, int n_sizes,
                               const int64_t *sizes, int64_t work_items);
} ag_backend_iface;

/* The "ag_reference_gemm" extra: times the vendor BLAS's own gemm (row-major
 * C[m, n] = A[m, k] B[k, n], dtype AG_F32 or AG_F64) on buffers it allocates on `device`,
 * after warm-up calls, and writes the median over `repeats` timed samples of the seconds
 * per product into *seconds_median. Every sample ends with the device synchronised. On
 * failure the status comes with the backend's last_error() message set. */
typedef ag_status (*ag_reference_gemm_fn)(int device, ag_dtype dtype, int64_t m, int64_t n,
                                          int64_t k, int repeats, double *seconds_median);

/* Type of the entry symbol. Receives the host's ABI version; returns the backend's table
 * (static storage, never freed) or NULL if the backend refuses the host. */
typedef const ag_backend_iface *(*ag_backend_entry_fn)(uint32_t host_abi_major,
                                                       uint32_t host_abi_minor);

#ifdef __cplusplus
}
#endif
#endif
