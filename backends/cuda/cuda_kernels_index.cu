/* Indexing kernels of the CUDA backend: index_select and gather read through an int64 index
 * (ix_take, one thread per output element); index_add and scatter_add copy self into out
 * (ix_copy) and then add the source values through the index with atomics (ix_put_add), so
 * repeated indices add up; float sums over a repeated index may round in another order than
 * the cpu's sequential loop, int64 sums are exact.
 *
 * Indices are validated on the device before anything is written: ix_find_bad lowers a
 * scratch word to the row-major position of the first bad index, the word is read back, and a
 * bad index fails with AG_ERR_INDEX naming the kernel, the index and the size, as on the cpu. */
#include <stdio.h>

#include "cuda_kernel_util.cuh"

/* Data dtypes of every kernel of this file. */
#define DT_FI ((1u << AG_F32) | (1u << AG_F64) | (1u << AG_I64))

/* Input roles in messages; input 1 is always the index. */
static const char *const g_roles[] = {"input 0", "index", "input 2"};

/* N views walked together over one shape (v[0]'s extents; the others carry the same). */
template <int N> struct ix_views { cu_view v[N]; };

/* Element offsets in each view of row-major position i of the common shape: one division
 * chain serves every view, and dim 0 needs none (i < numel). */
template <int N>
static __device__ __forceinline__ void ix_offsets(const ix_views<N> &w, long long i,
                                                  long long *off) {
    for (int j = 0; j < N; j++) off[j] = w.v[j].offset;
    const int nd = w.v[0].ndim;
    for (int d = nd - 1; d > 0; d--) {
        const long long e = w.v[0].shape[d], q = i / e, r = i - q * e;
        for (int j = 0; j < N; j++) off[j] += r * w.v[j].strides[d];
        i = q;
    }
    if (nd > 0)
        for (int j = 0; j < N; j++) off[j] += i * w.v[j].strides[0];
}

/* Coalesces N tensors of one shape (host; they are modified) and returns their views. */
template <int N> static ix_views<N> ix_views_of(ag_kernel_tensor *ts) {
    ag_kt_coalesce(ts, N);
    ix_views<N> w;
    for (int j = 0; j < N; j++) w.v[j] = cu_view_of(&ts[j]);
    return w;
}

/* Lowers *first to the row-major position of every index outside [0, size). */
static __global__ void ix_find_bad(const long long *idx, ix_views<1> w, long long count,
                                   long long size, unsigned long long *first) {
    CU_FOR_EACH(p, count) {
        long long off;
        ix_offsets(w, p, &off);
        const long long v = idx[off];
        if (v < 0 || v >= size) atomicMin(first, (unsigned long long)p);
    }
}

/* out = x[index] along one dim; views (x, index, out) walk out's shape, x's with stride 0
 * along the indexed dim, whose stride is step. */
template <typename T>
static __global__ void ix_take(const T *x, const long long *idx, T *out, ix_views<3> w,
                               long long count, long long step) {
    CU_FOR_EACH(i, count) {
        long long off[3];
        ix_offsets(w, i, off);
        out[off[2]] = x[off[0] + idx[off[1]] * step];
    }
}

/* dst = src; views (src, dst) of one shape. */
template <typename T>
static __global__ void ix_copy(const T *src, T *dst, ix_views<2> w, long long count) {
    CU_FOR_EACH(i, count) {
        long long off[2];
        ix_offsets(w, i, off);
        dst[off[1]] = src[off[0]];
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
static __global__ void ix_put_add(T *out, const T *src, const long long *idx, ix_views<3> w,
                                  long long count, long long step) {
    CU_FOR_EACH(i, count) {
        long long off[3];
        ix_offsets(w, i, off);
        ix_atomic_add(out + off[0] + idx[off[2]] * step, src[off[1]]);
    }
}

/* Checks counts, dtypes (index int64, the rest the key dtype: input 0's) and dim =
 * attrs->ints[0]; *dtype receives the key dtype. */
static ag_status check_index_args(const ag_kernel_args *args, const char *name, int n_inputs,
                                  int *dim, ag_dtype *dtype) {
    /* Read the key dtype only where the argument block has it; cu_check_call reports the
     * rest. */
    const bool readable =
        args && args->struct_size >= sizeof(ag_kernel_args) && args->n_inputs > 0 && args->inputs;
    *dtype = readable ? args->inputs[0].dtype : AG_F32;
    const ag_dtype dts[4] = {*dtype, AG_I64, *dtype, *dtype};
    ag_status st = cu_check_call(args, name, n_inputs, 1, dts);
    if (st != AG_OK) return st;
    if (*dtype != AG_F32 && *dtype != AG_F64 && *dtype != AG_I64)
        return cu_fail(AG_ERR_DTYPE, "%s: %s data is not supported (float32, float64, int64)", name,
                       ag_dtype_name(*dtype));
    const ag_kernel_tensor *x = &args->inputs[0];
    const int64_t d = args->attrs->ints[0];
    if (d < 0 || d >= x->ndim) {
        char s[160];
        return cu_fail(AG_ERR_INVALID_ARG,
                       "%s: dim %lld is out of range for a %s tensor of shape %s", name,
                       (long long)d, ag_dtype_name(x->dtype), ag_kt_shape_str(x, s, sizeof s));
    }
    *dim = (int)d;
    return AG_OK;
}

/* The AG_ERR_SHAPE failure listing every shape of the call. */
static ag_status shape_error(const ag_kernel_args *args, const char *name, int dim) {
    char msg[512] = "", buf[160];
    size_t used = 0;
    for (int i = 0; i < args->n_inputs && used < sizeof msg; i++)
        used += (size_t)snprintf(msg + used, sizeof msg - used, "%s %s, ", g_roles[i],
                                 ag_kt_shape_str(&args->inputs[i], buf, sizeof buf));
    return cu_fail(AG_ERR_SHAPE, "%s: %s shapes %soutput %s do not fit along dim %d", name,
                   ag_dtype_name(args->outputs[0].dtype), msg,
                   ag_kt_shape_str(&args->outputs[0], buf, sizeof buf), dim);
}

/* True when t has ndim dims with t.shape[d] == ref[d] (exact) or <= ref[d] (!exact), for
 * every d except `skip`. */
static bool extents_fit(const ag_kernel_tensor *t, int ndim, const int64_t *ref, int skip,
                        bool exact) {
    if (t->ndim != ndim) return false;
    for (int d = 0; d < ndim; d++)
        if (d != skip && (exact ? t->shape[d] != ref[d] : t->shape[d] > ref[d])) return false;
    return true;
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
    const ix_views<1> w = ix_views_of<1>(&t);
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
    long long pos = (long long)first, off = w.v[0].offset;
    for (int d = w.v[0].ndim - 1; d >= 0; d--) {
        off += pos % w.v[0].shape[d] * w.v[0].strides[d];
        pos /= w.v[0].shape[d];
    }
    long long value = 0;
    if ((st = cu_read_back(dev, &value, cu_data<const long long>(index) + off, sizeof value,
                           name)) != AG_OK)
        return st;
    return cu_fail(AG_ERR_INDEX, "%s: index %lld is out of range for dimension %d of size %lld",
                   name, value, dim, (long long)size);
}

/* Launches ix_take<T> over the coalesced views (x, index, out). */
template <typename T>
static ag_status launch_take(const ag_kernel_args *args, const char *name, ag_kernel_tensor *v,
                             long long count, long long step, cudaStream_t stream) {
    const ix_views<3> w = ix_views_of<3>(v);
    ix_take<T><<<cu_grid_size(args->device, count, CU_THREADS), CU_THREADS, 0, stream>>>(
        cu_data<const T>(&v[0]), cu_data<const long long>(&v[1]), cu_data<T>(&v[2]), w, count,
        step);
    return cu_check_launch(name);
}

/* index_select(x, index[n]) (`select`) and gather(x, index): out = x read through the index
 * along dim. */
static ag_status run_take(const ag_kernel_args *args, const char *name, bool select) {
    int dim;
    ag_dtype dtype;
    ag_status st = check_index_args(args, name, 2, &dim, &dtype);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *x = &args->inputs[0], *index = &args->inputs[1];
    const ag_kernel_tensor *out = &args->outputs[0];
    bool fits;
    if (select) { /* out is x's shape with index's length at dim */
        fits = index->ndim == 1 && extents_fit(out, x->ndim, x->shape, dim, true) &&
               out->shape[dim] == index->shape[0];
    } else { /* out is index's shape, at most x's off dim */
        fits = extents_fit(index, x->ndim, x->shape, dim, false) &&
               extents_fit(out, index->ndim, index->shape, -1, true);
    }
    if (!fits) return shape_error(args, name, dim);
    cudaStream_t stream;
    if ((st = cu_enter(args->device, name, &stream)) != AG_OK) return st;
    if ((st = check_indices(args, name, index, x->shape[dim], dim, stream)) != AG_OK) return st;
    const long long count = ag_kt_numel(out);
    if (count == 0) return AG_OK;

    /* v[0] x (stride 0 at dim), v[1] the index, v[2] out: all walk out's shape. */
    ag_kernel_tensor v[3] = {*out, *out, *out};
    v[0].data = x->data;
    v[0].offset = x->offset;
    v[1].data = index->data;
    v[1].offset = index->offset;
    for (int d = 0; d < out->ndim; d++) {
        v[0].strides[d] = d == dim ? 0 : x->strides[d];
        v[1].strides[d] = select ? (d == dim ? index->strides[0] : 0) : index->strides[d];
    }
    const long long step = x->strides[dim];
    CU_DISPATCH(
        dtype, { st = launch_take<T>(args, name, v, count, step, stream); },
        st = cu_fail(AG_ERR_DTYPE, "%s: no %s kernel", name, ag_dtype_name(dtype));)
    return st;
}

/* Launches ix_copy<T> for out = self, then ix_put_add<T> over the views (out, src, index)
 * unless they are empty. */
template <typename T>
static ag_status launch_put_add(const ag_kernel_args *args, const char *name, ag_kernel_tensor *v,
                                long long count, long long step, cudaStream_t stream) {
    const int dev = args->device;
    ag_kernel_tensor copy[2] = {args->inputs[0], args->outputs[0]};
    const long long copy_count = ag_kt_numel(&copy[0]);
    if (copy_count > 0) {
        const ix_views<2> cw = ix_views_of<2>(copy);
        ix_copy<T><<<cu_grid_size(dev, copy_count, CU_THREADS), CU_THREADS, 0, stream>>>(
            cu_data<const T>(&copy[0]), cu_data<T>(&copy[1]), cw, copy_count);
        const ag_status st = cu_check_launch(name);
        if (st != AG_OK) return st;
    }
    if (count == 0) return AG_OK;
    const ix_views<3> w = ix_views_of<3>(v);
    ix_put_add<T><<<cu_grid_size(dev, count, CU_THREADS), CU_THREADS, 0, stream>>>(
        cu_data<T>(&v[0]), cu_data<const T>(&v[1]), cu_data<const long long>(&v[2]), w, count,
        step);
    return cu_check_launch(name);
}

/* index_add(self, index[n], source) (`index_add`) and scatter_add(self, index, src):
 * out = self, then out[index] += source along dim. */
static ag_status run_put_add(const ag_kernel_args *args, const char *name, bool index_add) {
    int dim;
    ag_dtype dtype;
    ag_status st = check_index_args(args, name, 3, &dim, &dtype);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *self = &args->inputs[0], *index = &args->inputs[1];
    const ag_kernel_tensor *src = &args->inputs[2], *out = &args->outputs[0];
    bool fits = extents_fit(out, self->ndim, self->shape, -1, true);
    const ag_kernel_tensor *walk; /* the tensor whose shape the accumulation covers */
    if (index_add) {              /* source is self's shape with index's length at dim */
        fits = fits && index->ndim == 1 && extents_fit(src, self->ndim, self->shape, dim, true) &&
               src->shape[dim] == index->shape[0];
        walk = src;
    } else { /* index at most src everywhere, at most self off dim */
        fits = fits && extents_fit(index, src->ndim, src->shape, -1, false) &&
               extents_fit(index, self->ndim, self->shape, dim, false);
        walk = index;
    }
    if (!fits) return shape_error(args, name, dim);
    cudaStream_t stream;
    if ((st = cu_enter(args->device, name, &stream)) != AG_OK) return st;
    if ((st = check_indices(args, name, index, self->shape[dim], dim, stream)) != AG_OK) return st;

    /* v[0] out (stride 0 at dim), v[1] src, v[2] the index: all walk `walk`'s shape. */
    ag_kernel_tensor v[3] = {*walk, *walk, *walk};
    v[0].data = out->data;
    v[0].offset = out->offset;
    v[1].data = src->data;
    v[1].offset = src->offset;
    v[2].data = index->data;
    v[2].offset = index->offset;
    for (int d = 0; d < walk->ndim; d++) {
        v[0].strides[d] = d == dim ? 0 : out->strides[d];
        v[1].strides[d] = src->strides[d];
        v[2].strides[d] = index_add ? (d == dim ? index->strides[0] : 0) : index->strides[d];
    }
    const long long count = ag_kt_numel(walk), step = out->strides[dim];
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
