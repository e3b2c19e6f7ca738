/* Reductions (sum, max, min, argmax, argmin) and softmax / log_softmax of the CUDA backend
 * (docs/kernels.md, "Reductions" and "Softmax").
 *
 * A reduction splits the input's dims into kept ones (walked with the output) and reduced
 * ones (walked per output), each coalesced on the host. Every output is a row folded by a
 * group of `lanes` threads: one thread when neighbouring outputs lie closer together in
 * memory than the reduced elements (so a warp reads neighbouring outputs at once), else the
 * aligned lanes of part of a warp, a warp, or a whole block. A group combines with warp
 * shuffles and, for a block, shared memory. When the rows are too few to fill the device,
 * each output's reduced range is also cut into chunks: pass 1 leaves one partial result per
 * chunk in scratch, pass 2 combines them. Results never depend on timing.
 *
 * Softmax rows (the elements along the dim at each other position) use the same groups and
 * three passes: max, sum of exp(x - max) in double, write. */
#include <limits.h>
#include <math.h>
#include "cuda_kernel_util.cuh"

#define DT_F  ((1u << AG_F32) | (1u << AG_F64))
#define DT_FI (DT_F | (1u << AG_I64))

/* Threads an SM keeps resident at once (sm_80 and sm_90): the device is full with
 * sm_count * SM_THREADS threads. */
#define SM_THREADS 2048
/* Rows at least this long get a whole block when warps alone would leave the device idle. */
#define BLOCK_ROW_MIN 2048
/* Least elements each thread of a chunk folds when a reduction is split. */
#define SPLIT_PER_THREAD 32
/* Largest block of the softmax kernel (one block per long row when rows are very few). */
#define SOFTMAX_BLOCK_MAX 1024

/* ---- device helpers ---- */

/* Element offset of flat index i of v, without divisions when v has at most one dim. */
static __device__ __forceinline__ long long view_at(const cu_view &v, long long i) {
    if (v.ndim == 0) return v.offset;
    if (v.ndim == 1) return v.offset + i * v.strides[0];
    return cu_offset(v, i);
}

/* Whether x is NaN (never for integers). */
static __device__ __forceinline__ bool is_nan(float x) {
    return isnan(x);
}
static __device__ __forceinline__ bool is_nan(double x) {
    return isnan(x);
}
static __device__ __forceinline__ bool is_nan(long long) {
    return false;
}

/* An extreme value and its position among the reduced elements (-1: none yet). */
template <typename T> struct arg_acc {
    T v;
    long long i;
};

/* v of lane (this lane ^ mask) of the warp; every lane of the warp must call it. */
template <typename A> static __device__ __forceinline__ A shfl_xor(A v, int mask) {
    return __shfl_xor_sync(0xffffffffu, v, mask);
}
template <typename T>
static __device__ __forceinline__ arg_acc<T> shfl_xor(arg_acc<T> v, int mask) {
    v.v = __shfl_xor_sync(0xffffffffu, v.v, mask);
    v.i = __shfl_xor_sync(0xffffffffu, v.i, mask);
    return v;
}

/* ---- the reductions as functors: in_t (input), acc (accumulator), out_t (result);
 * init() is the identity of combine; step folds element x at position pos (positions
 * increase along one thread's steps); combine merges two accumulators in any order ---- */

/* Sum; f32 and f64 accumulate in double. */
template <typename T> struct sum_op {
    typedef T in_t;
    typedef double acc;
    typedef T out_t;
    static __device__ __forceinline__ acc init() {
        return 0;
    }
    static __device__ __forceinline__ acc step(acc a, T x, long long) {
        return a + (acc)x;
    }
    static __device__ __forceinline__ acc combine(acc a, acc b) {
        return a + b;
    }
    static __device__ __forceinline__ T result(acc a) {
        return (T)a;
    }
};
/* int64 sums wrap around (through unsigned arithmetic: signed overflow is undefined). */
template <> struct sum_op<long long> {
    typedef long long in_t;
    typedef long long acc;
    typedef long long out_t;
    static __device__ __forceinline__ acc init() {
        return 0;
    }
    static __device__ __forceinline__ acc step(acc a, long long x, long long) {
        return combine(a, x);
    }
    static __device__ __forceinline__ acc combine(acc a, acc b) {
        return (long long)((unsigned long long)a + (unsigned long long)b);
    }
    static __device__ __forceinline__ long long result(acc a) {
        return a;
    }
};

/* The lowest (is_max) or highest value of T: the identity of max or min. */
template <typename T, bool is_max> static __device__ __forceinline__ T extreme_identity() {
    return is_max ? -(T)INFINITY : (T)INFINITY;
}
template <> __device__ __forceinline__ long long extreme_identity<long long, true>() {
    return LLONG_MIN;
}
template <> __device__ __forceinline__ long long extreme_identity<long long, false>() {
    return LLONG_MAX;
}

/* NaN-propagating max (is_max) or min. Only the value is kept: which of equal values wins
 * makes no difference to it. */
template <typename T, bool is_max> struct extreme_op {
    typedef T in_t;
    typedef T acc;
    typedef T out_t;
    static __device__ __forceinline__ acc init() {
        return extreme_identity<T, is_max>();
    }
    static __device__ __forceinline__ acc step(acc a, T x, long long) {
        return combine(a, x);
    }
    static __device__ __forceinline__ acc combine(acc a, acc b) {
        if (is_nan(a)) return a;
        if (is_nan(b)) return b;
        return (is_max ? b > a : b < a) ? b : a;
    }
    static __device__ __forceinline__ T result(acc a) {
        return a;
    }
};
template <typename T> using max_op = extreme_op<T, true>;
template <typename T> using min_op = extreme_op<T, false>;

/* argmax (is_max) or argmin: the position of the first extreme, a NaN counting as the
 * extreme (the first NaN wins). */
template <typename T, bool is_max> struct arg_op {
    typedef T in_t;
    typedef arg_acc<T> acc;
    typedef long long out_t;
    /* x strictly beats v, or is the first NaN. */
    static __device__ __forceinline__ bool beats(T x, T v) {
        return (is_max ? x > v : x < v) || (is_nan(x) && !is_nan(v));
    }
    static __device__ __forceinline__ acc init() {
        const acc a = {T(0), -1};
        return a;
    }
    static __device__ __forceinline__ acc step(acc a, T x, long long pos) {
        if (a.i < 0 || beats(x, a.v)) {
            a.v = x;
            a.i = pos;
        }
        return a;
    }
    /* Partial results come from interleaved positions, so a tie (equal values, or both
     * NaN) goes to the lower position. */
    static __device__ __forceinline__ acc combine(acc a, acc b) {
        if (b.i < 0) return a;
        if (a.i < 0) return b;
        if (beats(b.v, a.v)) return b;
        if (beats(a.v, b.v)) return a;
        return b.i < a.i ? b : a;
    }
    static __device__ __forceinline__ long long result(acc a) {
        return a.i;
    }
};
template <typename T> using argmax_op = arg_op<T, true>;
template <typename T> using argmin_op = arg_op<T, false>;

/* Combines the accumulators of each group of `lanes` threads with Op (lanes a power of two:
 * up to CU_WARP the aligned lanes of a warp, above it the whole block, lanes ==
 * blockDim.x); every thread of the group gets the result. `shared` holds CU_WARP
 * accumulators (unused up to a warp); every thread of the block must make the call. */
template <typename Op>
static __device__ __forceinline__ typename Op::acc group_combine(typename Op::acc a, int lanes,
                                                                 typename Op::acc *shared) {
    for (int m = (lanes < CU_WARP ? lanes : CU_WARP) / 2; m > 0; m /= 2)
        a = Op::combine(a, shfl_xor(a, m));
    if (lanes <= CU_WARP) return a;
    const int lane = threadIdx.x % CU_WARP, warp = threadIdx.x / CU_WARP;
    __syncthreads(); /* shared may still be read by the previous call */
    if (lane == 0) shared[warp] = a;
    __syncthreads();
    a = lane < (int)(blockDim.x / CU_WARP) ? shared[lane] : Op::init();
    for (int m = CU_WARP / 2; m > 0; m /= 2) a = Op::combine(a, shfl_xor(a, m));
    return a;
}

/* A position in a view walked in row-major order: the index along each dim and the element
 * offset. The dim loops below are unrolled, so idx stays in registers. */
struct walk {
    long long idx[AG_MAX_DIMS];
    long long off;
};

/* Places w at flat index i of v. */
static __device__ __forceinline__ void walk_seek(walk &w, const cu_view &v, long long i) {
    w.off = v.offset;
#pragma unroll
    for (int d = AG_MAX_DIMS - 1; d >= 0; d--) {
        w.idx[d] = 0;
        if (d < v.ndim) {
            w.idx[d] = i % v.shape[d];
            w.off += w.idx[d] * v.strides[d];
            i /= v.shape[d];
        }
    }
}

/* Moves w n >= 0 flat positions on; the new position must lie inside v. */
static __device__ __forceinline__ void walk_advance(walk &w, const cu_view &v, long long n) {
#pragma unroll
    for (int d = AG_MAX_DIMS - 1; d >= 0; d--) {
        if (d < v.ndim && n > 0) {
            long long i = w.idx[d] + n;
            w.off += n * v.strides[d];
            n = 0; /* the carry into dim d - 1 */
            if (i >= v.shape[d]) {
                /* Steps are mostly shorter than the dim: a division only for longer ones. */
                n = i < 2 * v.shape[d] ? 1 : i / v.shape[d];
                i -= n * v.shape[d];
                w.off -= n * v.shape[d] * v.strides[d];
            }
            w.idx[d] = i;
        }
    }
}

/* Folds the reduced elements first, first + step, ... (< end) of one output into a; x
 * points at the output's first reduced element and inner gives the offsets from there. */
template <typename Op>
static __device__ __forceinline__ typename Op::acc
fold(typename Op::acc a, const typename Op::in_t *x, const cu_view &inner, long long first,
     long long end, int step) {
    if (inner.ndim <= 1) {
        const long long s = inner.ndim ? inner.strides[0] : 0;
#pragma unroll 4
        for (long long r = first; r < end; r += step) a = Op::step(a, x[r * s], r);
        return a;
    }
    if (first >= end) return a;
    walk w;
    walk_seek(w, inner, first);
    for (long long r = first;;) {
        a = Op::step(a, x[w.off], r);
        if ((r += step) >= end) break;
        walk_advance(w, inner, step);
    }
    return a;
}

/* ---- reduction kernels ---- */

/* Pass 1 of a reduction. Row g < nout * split is chunk g / nout of output o = g % nout
 * (neighbouring threads of a one-lane group take neighbouring outputs), folded by `lanes`
 * threads; output o's reduced elements start at view_at(outer, o) of in and lie at inner's
 * offsets from there. With split == 1 the result goes to out at view_at(outv, o), else the
 * row's accumulator to partial[g]. */
template <typename Op>
__global__ void __launch_bounds__(CU_THREADS)
    reduce_rows(const typename Op::in_t *in, cu_view outer, cu_view inner, long long nout,
                long long nred, long long split, int lanes, typename Op::out_t *out, cu_view outv,
                typename Op::acc *partial) {
    __shared__ typename Op::acc shared[CU_WARP];
    const int rows_per_block = blockDim.x / lanes, lane = threadIdx.x % lanes;
    const long long nrows = nout * split, chunk = (nred + split - 1) / split;
    /* The loop runs alike for the whole block, so every thread reaches group_combine. */
    for (long long row0 = (long long)blockIdx.x * rows_per_block; row0 < nrows;
         row0 += (long long)gridDim.x * rows_per_block) {
        const long long g = row0 + threadIdx.x / lanes;
        typename Op::acc a = Op::init();
        if (g < nrows) {
            const long long begin = g / nout * chunk;
            const long long end = begin + chunk < nred ? begin + chunk : nred;
            a = fold<Op>(a, in + view_at(outer, g % nout), inner, begin + lane, end, lanes);
        }
        a = group_combine<Op>(a, lanes, shared);
        if (g < nrows && lane == 0) {
            if (split > 1)
                partial[g] = a;
            else
                out[view_at(outv, g)] = Op::result(a);
        }
    }
}

/* Pass 2 of a split reduction: output o combines partial[ch * nout + o] over its chunks ch,
 * one warp per output, and writes out at view_at(outv, o). */
template <typename Op>
__global__ void __launch_bounds__(CU_THREADS)
    reduce_finish(const typename Op::acc *partial, long long nout, long long split,
                  typename Op::out_t *out, cu_view outv) {
    const int warps = blockDim.x / CU_WARP, lane = threadIdx.x % CU_WARP;
    for (long long o0 = (long long)blockIdx.x * warps; o0 < nout;
         o0 += (long long)gridDim.x * warps) {
        const long long o = o0 + threadIdx.x / CU_WARP;
        typename Op::acc a = Op::init();
        if (o < nout)
            for (long long ch = lane; ch < split; ch += CU_WARP)
                a = Op::combine(a, partial[ch * nout + o]);
        a = group_combine<Op>(a, CU_WARP, NULL);
        if (o < nout && lane == 0) out[view_at(outv, o)] = Op::result(a);
    }
}

/* ---- softmax kernel ---- */

/* softmax (or log_softmax with is_log) over rows of len elements: row g < nrows starts at
 * view_at(xrows, g) of in and view_at(orows, g) of out, its elements sx and so apart; each
 * row is taken by `lanes` threads (a group as in group_combine). As the cpu backend: the
 * max and x - max in T, exp of a T (expf for f32), the sum of exp in double, then
 * log(sum) or 1/sum rounded to T once per row. A NaN in a row makes the whole row NaN
 * whichever NaN handling the max has, so the NaN-propagating one serves. */
template <typename T, bool is_log>
__global__ void __launch_bounds__(SOFTMAX_BLOCK_MAX)
    softmax_rows(const T *in, cu_view xrows, T *out, cu_view orows, long long nrows, long long len,
                 long long sx, long long so, int lanes) {
    __shared__ T shared_max[CU_WARP];
    __shared__ double shared_sum[CU_WARP];
    const int rows_per_block = blockDim.x / lanes, lane = threadIdx.x % lanes;
    for (long long row0 = (long long)blockIdx.x * rows_per_block; row0 < nrows;
         row0 += (long long)gridDim.x * rows_per_block) {
        const long long g = row0 + threadIdx.x / lanes;
        /* Threads past the last row take part in the combines with empty rows. */
        const long long n = g < nrows ? len : 0;
        const T *x = in + (n ? view_at(xrows, g) : 0);
        T mx = max_op<T>::init();
        for (long long r = lane; r < n; r += lanes) mx = max_op<T>::combine(mx, x[r * sx]);
        mx = group_combine<max_op<T>>(mx, lanes, shared_max);
        double sum = 0;
        for (long long r = lane; r < n; r += lanes) sum += (double)exp(x[r * sx] - mx);
        sum = group_combine<sum_op<T>>(sum, lanes, shared_sum);
        const T k = (T)(is_log ? log(sum) : 1 / sum);
        T *o = out + (n ? view_at(orows, g) : 0);
        for (long long r = lane; r < n; r += lanes) {
            const T d = x[r * sx] - mx;
            o[r * so] = is_log ? d - k : exp(d) * k;
        }
    }
}

/* ---- host side ---- */

/* Smallest power of two >= n (1 for n <= 1). */
static int pow2_ceil(long long n) {
    int p = 1;
    while (p < n) p *= 2;
    return p;
}

/* Threads that fill device `device`. */
static long long device_threads(int device) {
    return (long long)cu_device_at(device)->sm_count * SM_THREADS;
}

/* Threads per row for `rows` rows of `len` elements, in blocks of at most `block_max`
 * threads: one with `across` (rows neighbour in memory), the next power of two >= len for
 * short rows, a block for long rows when warps alone would not fill the device, else a
 * warp. */
static int row_lanes(int device, long long rows, long long len, bool across, int block_max) {
    if (across) return 1;
    if (len <= CU_WARP) return pow2_ceil(len);
    const long long full = device_threads(device);
    if (len < BLOCK_ROW_MIN || rows * CU_WARP >= full) return CU_WARP;
    return rows * block_max <= full ? block_max : CU_THREADS;
}

/* |s|. */
static long long abs_ll(long long s) {
    return s < 0 ? -s : s;
}

/* Innermost stride of a coalesced view (0 for 0 dims). */
static long long inner_stride(const ag_kernel_tensor *t) {
    return t->ndim ? t->strides[t->ndim - 1] : 0;
}

/* The dtype of the first input, the key dtype of these kernels (checked later). */
static ag_dtype first_input_dtype(const ag_kernel_args *args) {
    return args && args->n_inputs >= 1 && args->inputs ? args->inputs[0].dtype : AG_F32;
}

/* Fails with the message of a dim out of range, as the cpu backend words it. */
static ag_status fail_dim(const char *name, const ag_kernel_tensor *t, long long dim) {
    char s[160];
    return cu_fail(AG_ERR_INVALID_ARG, "%s: dim %lld is out of range for a %s tensor of shape %s",
                   name, dim, ag_dtype_name(t->dtype), ag_kt_shape_str(t, s, sizeof s));
}

/* The geometry of one reduction call. */
typedef struct red_plan {
    ag_dtype dtype;         /* key dtype: the input's */
    const void *in;         /* input buffer */
    void *out;              /* output buffer */
    ag_kernel_tensor outv;  /* output positions in out */
    ag_kernel_tensor outer; /* the same positions in in: each output's first element */
    ag_kernel_tensor inner; /* the reduced elements relative to that (offset 0) */
    long long nout, nred;   /* outputs, reduced elements per output */
    int lanes;              /* threads per row */
    long long split;        /* chunks per output */
} red_plan;

/* Checks reduction `name` and plans it: `one_dim` reduces exactly dim attrs->ints[0] into
 * an i64 output (argmax/argmin), else every dim where out has extent 1 and in does not;
 * `empty_ok` allows zero reduced elements per output. pl->nout == 0: nothing to do. */
static ag_status plan_reduce(const ag_kernel_args *args, const char *name, bool one_dim,
                             bool empty_ok, red_plan *pl) {
    const ag_dtype dtype = first_input_dtype(args);
    const ag_dtype dtypes[2] = {dtype, one_dim ? AG_I64 : dtype};
    ag_status st = cu_check_call(args, name, 1, 1, dtypes);
    if (st != AG_OK) return st;
    if (dtype != AG_F32 && dtype != AG_F64 && dtype != AG_I64)
        return cu_fail(AG_ERR_DTYPE, "%s: input is %s, expected float32, float64 or int64", name,
                       ag_dtype_name(dtype));
    const ag_kernel_tensor *in = &args->inputs[0], *out = &args->outputs[0];
    const long long dim = one_dim ? args->attrs->ints[0] : -1;
    if (one_dim && (dim < 0 || dim >= in->ndim)) return fail_dim(name, in, dim);

    pl->dtype = dtype;
    pl->in = in->data;
    pl->out = out->data;
    pl->outv = *out;
    pl->outer = *in;
    pl->inner = *in;
    pl->inner.offset = 0;
    bool fits = in->ndim == out->ndim;
    for (int d = 0; fits && d < in->ndim; d++) {
        const bool reduced = one_dim ? d == dim : out->shape[d] == 1 && in->shape[d] != 1;
        fits = reduced ? out->shape[d] == 1 : out->shape[d] == in->shape[d];
        pl->outer.shape[d] = out->shape[d];
        pl->inner.shape[d] = reduced ? in->shape[d] : 1;
    }
    if (!fits) {
        char a[160], b[160];
        return cu_fail(AG_ERR_SHAPE, "%s: %s input of shape %s cannot reduce to output shape %s",
                       name, ag_dtype_name(dtype), ag_kt_shape_str(in, a, sizeof a),
                       ag_kt_shape_str(out, b, sizeof b));
    }
    pl->nout = ag_kt_numel(out);
    pl->nred = ag_kt_numel(&pl->inner);
    if (pl->nout == 0) return AG_OK;
    if (pl->nred == 0 && !empty_ok) {
        char a[160];
        return cu_fail(AG_ERR_SHAPE, "%s: cannot reduce zero elements (%s input of shape %s)", name,
                       ag_dtype_name(dtype), ag_kt_shape_str(in, a, sizeof a));
    }
    /* Each view is indexed by its own flat index, so each is coalesced alone. */
    ag_kt_coalesce(&pl->outv, 1);
    ag_kt_coalesce(&pl->outer, 1);
    ag_kt_coalesce(&pl->inner, 1);

    const bool across = pl->nout > 1 && pl->nred > 1 &&
                        abs_ll(inner_stride(&pl->outer)) < abs_ll(inner_stride(&pl->inner));
    pl->lanes = row_lanes(args->device, pl->nout, pl->nred, across, CU_THREADS);
    /* Rows too few to fill the device: cut each into chunks of at least SPLIT_PER_THREAD
     * elements per thread. */
    const long long full = device_threads(args->device), row_threads = pl->nout * pl->lanes;
    pl->split = 1;
    if (row_threads < full) {
        const long long most = pl->nred / ((long long)pl->lanes * SPLIT_PER_THREAD);
        pl->split = (full + row_threads - 1) / row_threads;
        if (pl->split > most) pl->split = most;
        if (pl->split < 1) pl->split = 1;
    }
    return AG_OK;
}

/* Runs a planned reduction with functor Op. */
template <typename Op>
static ag_status run_reduce(int device, const red_plan *pl, const char *name) {
    typedef typename Op::acc acc;
    cudaStream_t stream;
    ag_status st = cu_enter(device, name, &stream);
    if (st != AG_OK) return st;
    cu_scratch parts = {NULL, 0, 0};
    if (pl->split > 1 &&
        (st = cu_scratch_alloc(device, (size_t)(pl->nout * pl->split) * sizeof(acc), name,
                               &parts)) != AG_OK)
        return st;
    const cu_view outv = cu_view_of(&pl->outv);
    typename Op::out_t *out = static_cast<typename Op::out_t *>(pl->out);
    acc *partial = static_cast<acc *>(parts.ptr);
    const unsigned blocks = cu_grid_size(device, pl->nout * pl->split * pl->lanes, CU_THREADS);
    reduce_rows<Op><<<blocks, CU_THREADS, 0, stream>>>(
        static_cast<const typename Op::in_t *>(pl->in), cu_view_of(&pl->outer),
        cu_view_of(&pl->inner), pl->nout, pl->nred, pl->split, pl->lanes, out, outv, partial);
    st = cu_check_launch(name);
    if (st == AG_OK && pl->split > 1) {
        const unsigned fblocks = cu_grid_size(device, pl->nout * CU_WARP, CU_THREADS);
        reduce_finish<Op>
            <<<fblocks, CU_THREADS, 0, stream>>>(partial, pl->nout, pl->split, out, outv);
        st = cu_check_launch(name);
    }
    cu_scratch_free(&parts);
    return st;
}

/* The entry of reduction `name` with functor template Op (see plan_reduce for one_dim and
 * empty_ok). */
template <template <typename> class Op>
static ag_status reduce_entry(const ag_kernel_args *args, const char *name, bool one_dim,
                              bool empty_ok) {
    red_plan pl;
    ag_status st = plan_reduce(args, name, one_dim, empty_ok, &pl);
    if (st != AG_OK || pl.nout == 0) return st;
    if (pl.dtype == AG_F32) return run_reduce<Op<float>>(args->device, &pl, name);
    if (pl.dtype == AG_F64) return run_reduce<Op<double>>(args->device, &pl, name);
    return run_reduce<Op<long long>>(args->device, &pl, name);
}

/* sum: 0 for an empty reduction. */
static ag_status sum_entry(const ag_kernel_args *args) {
    return reduce_entry<sum_op>(args, "sum", false, true);
}
/* max: NaN-propagating. */
static ag_status max_entry(const ag_kernel_args *args) {
    return reduce_entry<max_op>(args, "max", false, false);
}
/* min: NaN-propagating. */
static ag_status min_entry(const ag_kernel_args *args) {
    return reduce_entry<min_op>(args, "min", false, false);
}
/* argmax over dim ints[0]. */
static ag_status argmax_entry(const ag_kernel_args *args) {
    return reduce_entry<argmax_op>(args, "argmax", true, false);
}
/* argmin over dim ints[0]. */
static ag_status argmin_entry(const ag_kernel_args *args) {
    return reduce_entry<argmin_op>(args, "argmin", true, false);
}

/* softmax (is_log false) or log_softmax over dim attrs->ints[0]. */
template <bool is_log> static ag_status softmax_entry(const ag_kernel_args *args) {
    const char *name = is_log ? "log_softmax" : "softmax";
    const ag_dtype dtype = first_input_dtype(args);
    const ag_dtype dtypes[2] = {dtype, dtype};
    ag_status st = cu_check_call(args, name, 1, 1, dtypes);
    if (st != AG_OK) return st;
    if (dtype != AG_F32 && dtype != AG_F64)
        return cu_fail(AG_ERR_DTYPE, "%s: input is %s, expected float32 or float64", name,
                       ag_dtype_name(dtype));
    const ag_kernel_tensor *in = &args->inputs[0], *out = &args->outputs[0];
    if (!ag_kt_same_shape(in, out)) {
        char a[160], b[160];
        return cu_fail(AG_ERR_SHAPE, "%s: %s input has shape %s but the output has shape %s", name,
                       ag_dtype_name(dtype), ag_kt_shape_str(in, a, sizeof a),
                       ag_kt_shape_str(out, b, sizeof b));
    }
    const long long dim = args->attrs->ints[0];
    if ((out->ndim > 0 || dim != 0) && (dim < 0 || dim >= out->ndim))
        return fail_dim(name, out, dim);
    if (ag_kt_numel(out) == 0) return AG_OK;

    /* A 0-dim tensor is a row of one element. */
    long long len = 1, sx = 0, so = 0;
    ag_kernel_tensor rows[2] = {*in, *out};
    if (out->ndim > 0) {
        len = out->shape[dim];
        sx = in->strides[dim];
        so = out->strides[dim];
        rows[0].shape[dim] = rows[1].shape[dim] = 1;
    }
    ag_kt_coalesce(&rows[0], 1);
    ag_kt_coalesce(&rows[1], 1);
    const long long nrows = ag_kt_numel(&rows[0]);
    /* One thread per row reads neighbouring rows together, but only pays off with enough
     * rows to fill the device (there is no split here). */
    const bool across = nrows > 1 && len > 1 && abs_ll(inner_stride(&rows[0])) < abs_ll(sx) &&
                        nrows * 4 >= device_threads(args->device);
    const int lanes = row_lanes(args->device, nrows, len, across, SOFTMAX_BLOCK_MAX);
    const unsigned threads = lanes > CU_THREADS ? (unsigned)lanes : CU_THREADS;

    cudaStream_t stream;
    if ((st = cu_enter(args->device, name, &stream)) != AG_OK) return st;
    const unsigned blocks = cu_grid_size(args->device, nrows * lanes, threads);
    const cu_view xr = cu_view_of(&rows[0]), orows = cu_view_of(&rows[1]);
    if (dtype == AG_F32)
        softmax_rows<float, is_log><<<blocks, threads, 0, stream>>>(
            cu_data<const float>(in), xr, cu_data<float>(out), orows, nrows, len, sx, so, lanes);
    else
        softmax_rows<double, is_log><<<blocks, threads, 0, stream>>>(
            cu_data<const double>(in), xr, cu_data<double>(out), orows, nrows, len, sx, so, lanes);
    return cu_check_launch(name);
}

extern "C" const cu_kernel_entry cu_reduce_kernels[] = {
    {"sum", DT_FI, sum_entry},
    {"max", DT_FI, max_entry},
    {"min", DT_FI, min_entry},
    {"argmax", DT_FI, argmax_entry},
    {"argmin", DT_FI, argmin_entry},
    {"softmax", DT_F, softmax_entry<false>},
    {"log_softmax", DT_F, softmax_entry<true>},
    {NULL, 0, NULL},
};
