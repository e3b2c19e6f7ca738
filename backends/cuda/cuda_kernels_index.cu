/* Indexing kernels of the CUDA backend: index_select and gather read through an int64 index
 * (ix_take, one thread per output element); index_add and scatter_add copy self into out
 * (cu_copy) and then add the source values through the index with atomics (ix_put_add), so
 * repeated indices add up; float sums over a repeated index may round in another order than
 * the cpu's sequential loop, int64 sums are exact.
 *
 * Indices are validated on the device before anything is written: ix_find_bad lowers a
 * scratch word to the row-major position of the first bad index, the word is read back, and a
 * bad index fails with AG_ERR_INDEX naming the kernel, the index and the size, as on the cpu. */
#include "cuda_kernel_util.cuh"

/* Data dtypes of every kernel of this file. */
#define DT_FI ((1u << AG_F32) | (1u << AG_F64) | (1u << AG_I64))

/* Lowers *first to the row-major position of every index outside [0, size). */
static __global__ void ix_find_bad(const long long *idx, cu_views<1> w, long long count,
                                   long long size, unsigned long long *first) {
    CU_FOR_EACH(p, count) {
        long long off;
        cu_offsets(w, p, &off);
        const long long v = idx[off];
        if (v < 0 || v >= size) atomicMin(first, (unsigned long long)p);
    }
}

/* out = x[index] along one dim; views (x, out, index) walk out's shape, x's with stride 0
 * along the indexed dim, whose stride is step. */
template <typename T>
static __global__ void ix_take(const T *x, const long long *idx, T *out, cu_views<3> w,
                               long long count, long long step) {
    CU_FOR_EACH(i, count) {
        long long off[3];
        cu_offsets(w, i, off);
        out[off[1]] = x[off[0] + idx[off[2]] * step];
    }
}

/* *p += v atomically, per dtype; int64 goes through the unsigned 64-bit atomicAdd, whose
 * two's complement wrap-around is the cpu's wrapping addition. */
static __device__ __forceinline__ void ix_atomic_add(float *p, float v) {
    atomicAdd(p, v);
}
static __device__ __forceinline__ void ix_atomic_add(double *p, double v) {
    atomicAdd(p, v);
}
static __device__ __forceinline__ void ix_atomic_add(long long *p, long long v) {
    atomicAdd(reinterpret_cast<unsigned long long *>(p), (unsigned long long)v);
}

/* out[index] += src along one dim; views (out, src, index) walk the accumulated shape,
 * out's with stride 0 along the indexed dim, whose stride is step. */
template <typename T>
static __global__ void ix_put_add(T *out, const T *src, const long long *idx, cu_views<3> w,
                                  long long count, long long step) {
    CU_FOR_EACH(i, count) {
        long long off[3];
        cu_offsets(w, i, off);
        ix_atomic_add(out + off[0] + idx[off[2]] * step, src[off[1]]);
    }
}

/* Fails unless dtype, the key dtype of a checked call, is one the kernels exist for. */
static ag_status check_data_dtype(const char *name, ag_dtype dtype) {
    if (dtype == AG_F32 || dtype == AG_F64 || dtype == AG_I64) return AG_OK;
    return cu_fail(AG_ERR_DTYPE, "%s: %s data is not supported (float32, float64, int64)", name,
                   ag_dtype_name(dtype));
}

/* Fails with AG_ERR_INDEX when an element of `index` lies outside [0, size), naming the
 * first one in row-major order (the one the cpu reports). Waits for the stream. */
static ag_status check_indices(const ag_kernel_args *args, const char *name,
                               const ag_kernel_tensor *index, int64_t size, int dim,
                               cudaStream_t stream) {
    const int dev = args->device;
    const long long count = ag_kt_numel(index);
    if (count == 0) return AG_OK;
    ag_kernel_tensor t = *index;
    const cu_views<1> w = cu_views_of<1>(&t);
    cu_scratch flag;
    ag_status st = cu_scratch_alloc(dev, sizeof(unsigned long long), name, &flag);
    if (st != AG_OK) return st;
    /* All bits set: "no bad index" compares above every position. */
    st = cu_check(cudaMemsetAsync(flag.ptr, 0xff, sizeof(unsigned long long), stream), name);
    if (st == AG_OK) {
        ix_find_bad<<<cu_grid_size(dev, count, CU_THREADS), CU_THREADS, 0, stream>>>(
            cu_data<const long long>(index), w, count, size,
            static_cast<unsigned long long *>(flag.ptr));
        st = cu_check_launch(name);
    }
    unsigned long long first = ~0ull;
    if (st == AG_OK) st = cu_read_back(dev, &first, flag.ptr, sizeof first, name);
    cu_scratch_free(&flag);
    if (st != AG_OK || first >= (unsigned long long)count) return st;

    /* The offending element's offset, from its position in the (coalesced) walk. */
    const long long off = ag_kt_offset(&t, (long long)first);
    long long value = 0;
    if ((st = cu_read_back(dev, &value, cu_data<const long long>(index) + off, sizeof value,
                           name)) != AG_OK)
        return st;
    return cu_fail(AG_ERR_INDEX, "%s: index %lld is out of range for dimension %d of size %lld",
                   name, value, dim, (long long)size);
}

/* Launches ix_take<T> over the coalesced views (x, out, index). */
template <typename T>
static ag_status launch_take(const ag_kernel_args *args, const char *name, ag_kernel_tensor *v,
                             long long count, long long step, cudaStream_t stream) {
    const cu_views<3> w = cu_views_of<3>(v);
    ix_take<T><<<cu_grid_size(args->device, count, CU_THREADS), CU_THREADS, 0, stream>>>(
        cu_data<const T>(&v[0]), cu_data<const long long>(&v[2]), cu_data<T>(&v[1]), w, count,
        step);
    return cu_check_launch(name);
}

/* index_select(x, index[n]) (`select`) and gather(x, index): out = x read through the index
 * along dim. */
static ag_status run_take(const ag_kernel_args *args, const char *name, bool select) {
    int dim;
    ag_status st = cu_check_call(args, name, 2, 1, NULL);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *x = &args->inputs[0], *index = &args->inputs[1];
    const ag_kernel_tensor *out = &args->outputs[0];
    const ag_dtype dtype = x->dtype;
    if ((st = check_data_dtype(name, dtype)) != AG_OK ||
        (st = ag_kt_check_take(args, name, dtype, select, &dim, cu_fail)) != AG_OK)
        return st;
    cudaStream_t stream;
    if ((st = cu_enter(args->device, name, &stream)) != AG_OK) return st;
    if ((st = check_indices(args, name, index, x->shape[dim], dim, stream)) != AG_OK) return st;
    const long long count = ag_kt_numel(out);
    if (count == 0) return AG_OK;

    /* v[0] x (stride 0 at dim), v[1] out, v[2] the index: all walk out's shape. */
    ag_kernel_tensor v[3];
    int64_t step;
    ag_kt_index_views(out, x, out, index, dim, select, v, &step);
    CU_DISPATCH(
        dtype, { st = launch_take<T>(args, name, v, count, step, stream); },
        st = cu_fail(AG_ERR_DTYPE, "%s: no %s kernel", name, ag_dtype_name(dtype));)
    return st;
}

/* Launches cu_copy<T> for out = self, then ix_put_add<T> over the views (out, src, index)
 * unless they are empty. */
template <typename T>
static ag_status launch_put_add(const ag_kernel_args *args, const char *name, ag_kernel_tensor *v,
                                long long count, long long step, cudaStream_t stream) {
    const int dev = args->device;
    ag_kernel_tensor copy[2] = {args->inputs[0], args->outputs[0]};
    const long long copy_count = ag_kt_numel(&copy[0]);
    if (copy_count > 0) {
        const cu_views<2> cw = cu_views_of<2>(copy);
        cu_copy<T><<<cu_grid_size(dev, copy_count, CU_THREADS), CU_THREADS, 0, stream>>>(
            cu_data<const T>(&copy[0]), cu_data<T>(&copy[1]), cw, copy_count);
        const ag_status st = cu_check_launch(name);
        if (st != AG_OK) return st;
    }
    if (count == 0) return AG_OK;
    const cu_views<3> w = cu_views_of<3>(v);
    ix_put_add<T><<<cu_grid_size(dev, count, CU_THREADS), CU_THREADS, 0, stream>>>(
        cu_data<T>(&v[0]), cu_data<const T>(&v[1]), cu_data<const long long>(&v[2]), w, count,
        step);
    return cu_check_launch(name);
}

/* index_add(self, index[n], source) (`index_add`) and scatter_add(self, index, src):
 * out = self, then out[index] += source along dim. */
static ag_status run_put_add(const ag_kernel_args *args, const char *name, bool index_add) {
    int dim;
    const ag_kernel_tensor *walk; /* the tensor whose shape the accumulation covers */
    ag_status st = cu_check_call(args, name, 3, 1, NULL);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *self = &args->inputs[0], *index = &args->inputs[1];
    const ag_kernel_tensor *src = &args->inputs[2], *out = &args->outputs[0];
    const ag_dtype dtype = self->dtype;
    if ((st = check_data_dtype(name, dtype)) != AG_OK ||
        (st = ag_kt_check_put_add(args, name, dtype, index_add, &dim, &walk, cu_fail)) != AG_OK)
        return st;
    cudaStream_t stream;
    if ((st = cu_enter(args->device, name, &stream)) != AG_OK) return st;
    if ((st = check_indices(args, name, index, self->shape[dim], dim, stream)) != AG_OK) return st;

    /* v[0] out (stride 0 at dim), v[1] src, v[2] the index: all walk `walk`'s shape. */
    ag_kernel_tensor v[3];
    int64_t step;
    ag_kt_index_views(walk, out, src, index, dim, index_add, v, &step);
    const long long count = ag_kt_numel(walk);
    CU_DISPATCH(
        dtype, { st = launch_put_add<T>(args, name, v, count, step, stream); },
        st = cu_fail(AG_ERR_DTYPE, "%s: no %s kernel", name, ag_dtype_name(dtype));)
    return st;
}

/* The kernel entries. */
static ag_status index_select_entry(const ag_kernel_args *args) {
    return run_take(args, "index_select", true);
}
static ag_status gather_entry(const ag_kernel_args *args) {
    return run_take(args, "gather", false);
}
static ag_status index_add_entry(const ag_kernel_args *args) {
    return run_put_add(args, "index_add", true);
}
static ag_status scatter_add_entry(const ag_kernel_args *args) {
    return run_put_add(args, "scatter_add", false);
}

const cu_kernel_entry cu_index_kernels[] = {
    {"index_select", DT_FI, index_select_entry},
    {"index_add", DT_FI, index_add_entry},
    {"gather", DT_FI, gather_entry},
    {"scatter_add", DT_FI, scatter_add_entry},
    {NULL, 0, NULL},
};
