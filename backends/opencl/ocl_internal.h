/* Internal interfaces of the OpenCL backend (libag_backend_opencl.so).
 *
 * Files: ocl_backend.c (function table, init, devices, errors, kernel lookup),
 * ocl_memory.c (caching allocator, copies, synchronisation), ocl_program.c (building
 * OpenCL C programs per device and dtype, in-memory and on-disk cache, build logs),
 * ocl_launch.c (setting kernel arguments from ag_kernel_tensor views and enqueueing),
 * ocl_source.c (plugin kernels given as OpenCL C source),
 * ocl_kernels_*.c (one C entry per kernel name of docs/kernels.md, each launching the
 * OpenCL C kernels of kernels/<stem>.cl). */
#ifndef AG_OCL_INTERNAL_H
#define AG_OCL_INTERNAL_H

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <stdbool.h>
#include "ag/backend.h"
#include "../common/kernel_util.h"

/* ---- errors (ocl_backend.c) ---- */

/* Sets the thread's message (printf-style) and returns status. */
ag_status ocl_fail(ag_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Name of an OpenCL error code ("CL_OUT_OF_RESOURCES"). */
const char *ocl_error_name(cl_int err);
/* Maps an OpenCL error of `what` to a status with a message; CL_SUCCESS gives AG_OK. */
ag_status ocl_check(cl_int err, const char *what);

/* ---- devices (ocl_backend.c) ---- */

/* One OpenCL device with its context and in-order queue. */
typedef struct ocl_device {
    cl_platform_id platform; /* platform it belongs to */
    cl_device_id id;         /* the device */
    cl_context context;      /* one context per device */
    cl_command_queue queue;  /* one in-order queue per device */
    bool fp64;               /* cl_khr_fp64 (float64 kernels) */
    size_t max_work_group;   /* CL_DEVICE_MAX_WORK_GROUP_SIZE */
    uint64_t local_mem;      /* CL_DEVICE_LOCAL_MEM_SIZE in bytes */
    char name[128];          /* "pthread-skylake ... (Portable Computing Language)" */
} ocl_device;

/* Marks that a kernel object was created, so that its first run may compile it. */
void ocl_exit_guard_dirty(void);
/* After a call that waited for the queue: makes sure queued work finishes at process exit
 * before the driver's compiler is torn down (see ocl_backend.c). */
void ocl_exit_guard_settle(void);

/* Number of devices found at init (across all platforms). */
int ocl_device_count(void);
/* Device `index` (0 <= index < ocl_device_count()). */
ocl_device *ocl_device_at(int index);

/* ---- memory (ocl_memory.c) ---- */

/* Backend ABI slots: alloc/free/copies/synchronize/memory_stats/empty_cache. Buffers are
 * cl_mem handles (the void * of the ABI). */
ag_status ocl_alloc(int device, size_t bytes, void **out);
void ocl_free(int device, void *buffer, size_t bytes);
ag_status ocl_copy_from_host(int device, void *dst, size_t dst_offset, const void *src,
                             size_t bytes);
ag_status ocl_copy_to_host(int device, void *dst, const void *src, size_t src_offset, size_t bytes);
ag_status ocl_copy_device(int device, void *dst, size_t dst_offset, const void *src,
                          size_t src_offset, size_t bytes);
ag_status ocl_synchronize(int device);
ag_status ocl_memory_stats(int device, ag_memory_stats *stats);
ag_status ocl_empty_cache(int device);
/* Frees every cached buffer of every device (shutdown). */
void ocl_memory_shutdown(void);

/* ---- programs (ocl_program.c) ---- */

/* The cl_kernel `kernel_name` of program `source` (OpenCL C, prefixed with kernels/common.cl
 * and "#define T <type>" for dtype, plus extra_defines if not NULL) built for `device`.
 * Programs are built once per (source, dtype, defines, device) and cached in memory, and
 * on disk under AG_OPENCL_CACHE_DIR when it is set. A build failure is AG_ERR_INTERNAL
 * with the build log in the message. The kernel object is owned by the cache.
 * Details: T and T_ID come as build options "-D T=float -D T_ID=0" (double 1, long 2;
 * float16 and bfloat16 are their bits, "-D T=ushort" with T_ID 3 and 4);
 * extra_defines is appended to the build options, e.g. "-D TILE=16". `source` must be one
 * of the never-changing ocl_source_* arrays: the kernel cache knows it by its address. The
 * cl_kernel returned belongs to the calling thread (clSetKernelArg is not thread-safe),
 * so set its arguments and enqueue it before the thread asks for the same kernel again.
 * float64 on a device without cl_khr_fp64 is AG_ERR_UNSUPPORTED. */
ag_status ocl_kernel_get(int device, const char *source, ag_dtype dtype, const char *extra_defines,
                         const char *kernel_name, cl_kernel *out);
/* Builds `source` for float32 on `device` (program cache included) and creates kernel
 * `kernel_name`; the "ocl_build_test" extra of get_proc_address, for tests of build errors. */
ag_status ocl_build_test(int device, const char *source, const char *kernel_name);
/* Builds a plugin's `source` exactly as given (no common.cl, no defines) on `device` and
 * creates kernel `entry`, to report build errors at build_source time. */
ag_status ocl_source_build(int device, const char *source, const char *entry);
/* ocl_kernel_get for a plugin source built as given; cached per thread the same way. */
ag_status ocl_source_kernel_get(int device, const char *source, const char *entry, cl_kernel *out);
/* Releases every cached program and kernel (shutdown). */
void ocl_program_shutdown(void);

/* ---- plugin source kernels (ocl_source.c) ---- */

/* Backend ABI 1.1 slots for kernels given as OpenCL C source (include/ag/backend.h). */
ag_status ocl_build_source(const char *source, const char *entry, void **out);
ag_status ocl_launch_source(void *kernel, const ag_kernel_args *args, int n_sizes,
                            const int64_t *sizes, int64_t work_items);
/* Forgets every handle of build_source (shutdown). */
void ocl_source_shutdown(void);

/* ---- launching (ocl_launch.c) ---- */

/* How a tensor view is passed to OpenCL C kernels: as a __global T * buffer argument
 * followed by this struct by value (kernels/common.cl declares the same layout). Only
 * 8-byte fields, so host and device agree on the layout. */
typedef struct ocl_view {
    cl_long offset;               /* element offset of element 0 */
    cl_long ndim;                 /* dims */
    cl_long shape[AG_MAX_DIMS];   /* extents */
    cl_long strides[AG_MAX_DIMS]; /* strides in elements */
} ocl_view;

/* The view of a kernel tensor. */
ocl_view ocl_view_of(const ag_kernel_tensor *t);
/* Sets arguments arg, arg+1 of k to t's buffer and view; returns the next argument index
 * (or -1 with the error set). */
int ocl_arg_tensor(cl_kernel k, int arg, const ag_kernel_tensor *t);
/* Sets argument arg of k to a value of `size` bytes; returns arg + 1 (or -1). */
int ocl_arg_value(cl_kernel k, int arg, size_t size, const void *value);
/* Enqueues k over `global` work items (rounded up to a multiple of `local`; local 0 lets
 * the runtime choose) on the device's queue. Kernels must ignore work items >= their own
 * count. */
ag_status ocl_enqueue(int device, cl_kernel k, size_t global, size_t local, const char *what);
/* Enqueues k over a 2-D range (global0 x global1, local0 x local1, rounded up). */
ag_status ocl_enqueue_2d(int device, cl_kernel k, const size_t global[2], const size_t local[2],
                         const char *what);

/* ---- kernel tables (one per ocl_kernels_*.c) ---- */

/* One kernel name -> entry (backends/common/kernel_util.h); float64 entries exist only
 * where some device has fp64. */
typedef ag_kernel_entry ocl_kernel_entry;

/* Each table ends with an entry whose name is NULL. */
extern const ocl_kernel_entry
    ocl_elementwise_kernels[]; /* unary, binary, where, copy, fill, arange */
extern const ocl_kernel_entry
    ocl_reduce_kernels[]; /* sum max min argmax argmin softmax log_softmax */
extern const ocl_kernel_entry ocl_matmul_kernels[]; /* matmul (tiled, local memory) */
extern const ocl_kernel_entry ocl_index_kernels[];  /* index_select index_add gather scatter_add */
extern const ocl_kernel_entry ocl_nn_kernels[];     /* layer_norm cross_entropy */
extern const ocl_kernel_entry ocl_optim_kernels[];  /* sgd_update adam_update */

/* The OpenCL C sources (generated from kernels/<stem>.cl at build time by CMake):
 * ocl_source_<file stem>, e.g. ocl_source_common, ocl_source_elementwise. */
extern const char ocl_source_common[];

#endif
