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

/* Least elements each thread of a chunk folds when a reduction is split. */
#define SPLIT_PER_THREAD 32
/* Largest block of the softmax kernel (one block per long row when rows are very few). */
#define SOFTMAX_BLOCK_MAX 1024

/* ---- device helpers ---- */

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

/* cu_shfl_xor of an arg_acc: its value and position from lane (this lane ^ mask). */
template <typename T>
static __device__ __forceinline__ arg_acc<T> cu_shfl_xor(arg_acc<T> v, int mask) {
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
 * threads; output o's reduced elements start at cu_view_at(outer, o) of in and lie at inner's
 * offsets from there. With split == 1 the result goes to out at cu_view_at(outv, o), else the
 * row's accumulator to partial[g]. */
template <typename Op>
__global__ void __launch_bounds__(CU_THREADS)
    reduce_rows(const typename Op::in_t *in, cu_view outer, cu_view inner, long long nout,
                long long nred, long long split, int lanes, typename Op::out_t *out, cu_view outv,
                typename Op::acc *partial) {
    __shared__ typename Op::acc shared[CU_WARP];
    const int rows_per_block = blockDim.x / lanes, lane = threadIdx.x % lanes;
    const long long nrows = nout * split, chunk = (nred + split - 1) / split;
    /* The loop runs alike for the whole block, so every thread reaches cu_group_combine. */
    for (long long row0 = (long long)blockIdx.x * rows_per_block; row0 < nrows;
         row0 += (long long)gridDim.x * rows_per_block) {
        const long long g = row0 + threadIdx.x / lanes;
        typename Op::acc a = Op::init();
        if (g < nrows) {
            const long long begin = g / nout * chunk;
            const long long end = begin + chunk < nred ? begin + chunk : nred;
            a = fold<Op>(a, in + cu_view_at(outer, g % nout), inner, begin + lane, end, lanes);
        }
        a = cu_group_combine<Op>(a, lanes, shared);
        if (g < nrows && lane == 0) {
            if (split > 1)
                partial[g] = a;
            else
                out[cu_view_at(outv, g)] = Op::result(a);
        }
    }
}

/* Pass 2 of a split reduction: output o combines partial[ch * nout + o] over its chunks ch,
 * one warp per output, and writes out at cu_view_at(outv, o). */
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
        a = cu_group_combine<Op>(a, CU_WARP, NULL);
        if (o < nout && lane == 0) out[cu_view_at(outv, o)] = Op::result(a);
    }
}

/* ---- softmax kernel ---- */

/* softmax (or log_softmax with is_log) over rows of len elements: row g < nrows starts at
 * cu_view_at(xrows, g) of in and cu_view_at(orows, g) of out, its elements sx and so apart; each
 * row is taken by `lanes` threads (a group as in cu_group_combine). As the cpu backend: the
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
        const T *x = in + (n ? cu_view_at(xrows, g) : 0);
        T mx = max_op<T>::init();
        for (long long r = lane; r < n; r += lanes) mx = max_op<T>::combine(mx, x[r * sx]);
        mx = cu_group_combine<max_op<T>>(mx, lanes, shared_max);
        double sum = 0;
        for (long long r = lane; r < n; r += lanes) sum += (double)exp(x[r * sx] - mx);
        sum = cu_group_combine<sum_op<T>>(sum, lanes, shared_sum);
        const T k = (T)(is_log ? log(sum) : 1 / sum);
        T *o = out + (n ? cu_view_at(orows, g) : 0);
        for (long long r = lane; r < n; r += lanes) {
            const T d = x[r * sx] - mx;
            o[r * so] = is_log ? d - k : exp(d) * k;
        }
    }
}

/* ---- host side ---- */

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
    ag_status st = cu_check_call(args, name, 1, 1, NULL);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *in = &args->inputs[0], *out = &args->outputs[0];
    const ag_dtype dtype = in->dtype;
    if (dtype != AG_F32 && dtype != AG_F64 && dtype != AG_I64)
        return cu_fail(AG_ERR_DTYPE, "%s: input is %s, expected float32, float64 or int64", name,
                       ag_dtype_name(dtype));
    st = ag_kt_check_reduce(args, name, dtype, one_dim, empty_ok, &pl->outer, &pl->inner, cu_fail);
    if (st != AG_OK) return st;
    pl->dtype = dtype;
    pl->in = in->data;
    pl->out = out->data;
    pl->outv = *out;
    pl->nout = ag_kt_numel(out);
    pl->nred = ag_kt_numel(&pl->inner);
    if (pl->nout == 0) return AG_OK;
    /* Each view is indexed by its own flat index, so each is coalesced alone. */
    ag_kt_coalesce(&pl->outv, 1);
    ag_kt_coalesce(&pl->outer, 1);
    ag_kt_coalesce(&pl->inner, 1);

    const bool across = cu_rows_across(&pl->outer, pl->nout, pl->nred, cu_inner_stride(&pl->inner));
    pl->lanes = cu_row_lanes(args->device, pl->nout, pl->nred, across, CU_THREADS);
    /* Rows too few to fill the device: cut each into chunks of at least SPLIT_PER_THREAD
     * elements per thread. */
    const long long full = cu_device_threads(args->device), row_threads = pl->nout * pl->lanes;
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
    ag_status st = cu_check_call(args, name, 1, 1, NULL);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *in = &args->inputs[0], *out = &args->outputs[0];
    const ag_dtype dtype = in->dtype;
    if ((st = ag_kt_check_float(name, "input", dtype, cu_fail)) != AG_OK ||
        (st = ag_kt_check_softmax(args, name, dtype, cu_fail)) != AG_OK)
        return st;
    if (ag_kt_numel(out) == 0) return AG_OK;

    /* Each row's first element in in and out, each view coalesced alone. */
    ag_kernel_tensor rows[2];
    int64_t len, sx, so;
    ag_kt_softmax_rows(in, out, args->attrs->ints[0], rows, &len, &sx, &so);
    ag_kt_coalesce(&rows[0], 1);
    ag_kt_coalesce(&rows[1], 1);
    const long long nrows = ag_kt_numel(&rows[0]);
    /* No split here: see cu_whole_row_lanes. */
    const int lanes = cu_whole_row_lanes(args->device, &rows[0], nrows, len, sx, SOFTMAX_BLOCK_MAX);
    const unsigned threads = cu_block_threads(lanes);

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
