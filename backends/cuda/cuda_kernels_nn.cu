/* Fused nn kernels of the CUDA backend: layer_norm and cross_entropy (docs/kernels.md,
 * "Fused nn kernels"), with the formulas, precision and argument checks of
 * backends/cpu/cpu_kernels_nn.c.
 *
 * Both reduce one row per position (layer_norm's normalised trailing dims, cross_entropy's
 * class dim) and write per element or per position. A row is taken by a group of `lanes`
 * threads: one thread when neighbouring rows lie closer together in memory than a row's
 * elements (and there are rows enough to fill the device), the aligned lanes of part of a
 * warp for short rows, a warp, or a whole block for long rows when rows are few. Groups
 * combine with warp shuffles and, for a block, shared memory. Sums accumulate in double and
 * each row is read in separate passes (mean before the squared deviations, max before exp).
 * Every view is indexed by its own flat index, so any strides work. cross_entropy checks its
 * targets on the device and reads the first bad one back before anything is written. */
#include <limits.h>
#include <math.h>
#include "cuda_kernel_util.cuh"

#define DT_F ((1u << AG_F32) | (1u << AG_F64))

/* Largest block of the row kernels (one block per long row when rows are very few). */
#define ROW_BLOCK_MAX 1024

/* layer_norm attrs ints[1] bits: which affine inputs follow x. */
enum { LN_WEIGHT = 1, LN_BIAS = 2 };

/* ---- device helpers ---- */

/* a * b + c rounded after each operation, as the cpu backend computes it (no fused
 * multiply-add, which nvcc would otherwise form). */
template <typename T> static __device__ __forceinline__ T mul_add_rn(T a, T b, T c) {
    return cu_add_rn(cu_mul_rn(a, b), c);
}

/* Sum of doubles, as a cu_group_combine functor. */
struct sum_double {
    typedef double acc;
    static __device__ __forceinline__ acc init() {
        return 0;
    }
    static __device__ __forceinline__ acc combine(acc a, acc b) {
        return a + b;
    }
};

/* NaN-propagating max of T, as a cu_group_combine functor. A row's max only matters where
 * the row has no NaN: a NaN anywhere makes the cpu's sum of exp, and so its result, NaN. */
template <typename T> struct nan_max {
    typedef T acc;
    static __device__ __forceinline__ acc init() {
        return -(T)INFINITY;
    }
    static __device__ __forceinline__ acc combine(acc a, acc b) {
        if (isnan(a)) return a;
        if (isnan(b)) return b;
        return b > a ? b : a;
    }
};

/* ---- kernels ---- */

/* layer_norm of nrows rows of len elements, `lanes` threads per row (a group as in
 * cu_group_combine). Row g's x starts at cu_view_at(xrows, g) and its element k lies
 * cu_view_at(xrow, k) further; likewise out with orows / orow. Weight and bias element k lie at
 * cu_view_at(wrow, k) and cu_view_at(brow, k) (their views carry their offsets); a NULL w or b is
 * absent (1 and 0). As the cpu: mean and biased variance in double, the write in T. */
template <typename T>
__global__ void __launch_bounds__(ROW_BLOCK_MAX)
    layer_norm_rows(T *out, cu_view orows, cu_view orow, const T *x, cu_view xrows, cu_view xrow,
                    const T *w, cu_view wrow, const T *b, cu_view brow, long long nrows,
                    long long len, double eps, int lanes) {
    __shared__ double shared[CU_WARP];
    const int rows_per_block = blockDim.x / lanes, lane = threadIdx.x % lanes;
    /* The loop runs alike for the whole block, so every thread reaches cu_group_combine;
     * threads past the last row take part with empty rows. */
    for (long long row0 = (long long)blockIdx.x * rows_per_block; row0 < nrows;
         row0 += (long long)gridDim.x * rows_per_block) {
        const long long g = row0 + threadIdx.x / lanes, n = g < nrows ? len : 0;
        const T *xr = x + (n ? cu_view_at(xrows, g) : 0);
        double s = 0;
        for (long long k = lane; k < n; k += lanes) s += (double)xr[cu_view_at(xrow, k)];
        const double mean = cu_group_combine<sum_double>(s, lanes, shared) / (double)len;
        s = 0;
        for (long long k = lane; k < n; k += lanes) {
            const double d = (double)xr[cu_view_at(xrow, k)] - mean;
            s += d * d;
        }
        const double var = cu_group_combine<sum_double>(s, lanes, shared) / (double)len;
        const T m = (T)mean, rstd = (T)(1 / sqrt(var + eps));
        T *o = out + (n ? cu_view_at(orows, g) : 0);
        for (long long k = lane; k < n; k += lanes) {
            const T v = (xr[cu_view_at(xrow, k)] - m) * rstd;
            o[cu_view_at(orow, k)] =
                mul_add_rn(v, w ? w[cu_view_at(wrow, k)] : T(1), b ? b[cu_view_at(brow, k)] : T(0));
        }
    }
}

/* Records in *first_bad the lowest position p < npos whose target (view tv) is neither
 * ignore nor in [0, classes). The host starts *first_bad at ULLONG_MAX. */
__global__ void __launch_bounds__(CU_THREADS)
    cross_entropy_check(const long long *target, cu_view tv, long long npos, long long classes,
                        long long ignore, unsigned long long *first_bad) {
    CU_FOR_EACH(p, npos) {
        const long long t = target[cu_view_at(tv, p)];
        if (t != ignore && (t < 0 || t >= classes)) atomicMin(first_bad, (unsigned long long)p);
    }
}

/* Per-position loss of cross_entropy over npos positions, `lanes` threads per position (a
 * group as in cu_group_combine). Position p's target lies at cu_view_at(tv, p), its class 0 logit
 * at cu_view_at(xv, p) of x and class c cstride elements further; the loss goes to
 * cu_view_at(ov, p) of out. Targets were checked: each is ignore or in [0, classes). As the
 * cpu: max in T, exp of a T (expf for f32), sums and the loss in double. */
template <typename T>
__global__ void __launch_bounds__(ROW_BLOCK_MAX)
    cross_entropy_rows(T *out, cu_view ov, const long long *target, cu_view tv, const T *x,
                       cu_view xv, long long npos, long long classes, long long cstride,
                       long long ignore, double smoothing, int lanes) {
    __shared__ T shared_max[CU_WARP];
    __shared__ double shared_sum[CU_WARP];
    const int rows_per_block = blockDim.x / lanes, lane = threadIdx.x % lanes;
    /* As in layer_norm_rows; an ignored position reads no class. */
    for (long long p0 = (long long)blockIdx.x * rows_per_block; p0 < npos;
         p0 += (long long)gridDim.x * rows_per_block) {
        const long long p = p0 + threadIdx.x / lanes;
        const long long t = p < npos ? target[cu_view_at(tv, p)] : ignore;
        const long long n = t == ignore ? 0 : classes;
        const T *row = x + (n ? cu_view_at(xv, p) : 0);
        T mx = nan_max<T>::init();
        for (long long c = lane; c < n; c += lanes) mx = nan_max<T>::combine(mx, row[c * cstride]);
        mx = cu_group_combine<nan_max<T>>(mx, lanes, shared_max);
        double sum = 0, total = 0;
        for (long long c = lane; c < n; c += lanes) {
            const T v = row[c * cstride];
            sum += (double)exp(v - mx);
            total += (double)v;
        }
        sum = cu_group_combine<sum_double>(sum, lanes, shared_sum);
        total = cu_group_combine<sum_double>(total, lanes, shared_sum);
        if (p >= npos || lane != 0) continue;
        double loss = 0;
        if (n) {
            const double lse = (double)mx + log(sum);
            const double nll = lse - (double)row[t * cstride];
            const double uniform = lse - total / (double)classes;
            /* Without smoothing the uniform term is left out, not multiplied by 0: a -inf
             * logit (a masked class) makes it inf, and 0 * inf would be NaN. */
            loss = smoothing > 0 ? mul_add_rn(1 - smoothing, nll, smoothing * uniform) : nll;
        }
        out[cu_view_at(ov, p)] = (T)loss;
    }
}

/* ---- host side ---- */

/* The dtype of the first input, the key dtype of these kernels (checked later). */
static ag_dtype first_input_dtype(const ag_kernel_args *args) {
    return args && args->n_inputs >= 1 && args->inputs ? args->inputs[0].dtype : AG_F32;
}

/* ---- layer_norm ---- */

/* Checks that an affine input (weight or bias) has exactly the shape of out's last dims
 * from `lead` on. */
static ag_status check_affine(const ag_kernel_tensor *t, const char *role,
                              const ag_kernel_tensor *out, int lead) {
    bool fits = t->ndim == out->ndim - lead;
    for (int d = 0; fits && d < t->ndim; d++) fits = t->shape[d] == out->shape[lead + d];
    if (fits) return AG_OK;
    char a[160], b[160];
    return cu_fail(
        AG_ERR_SHAPE, "layer_norm: %s has shape %s but the output %s normalises its last %d dims",
        role, ag_kt_shape_str(t, a, sizeof a), ag_kt_shape_str(out, b, sizeof b), out->ndim - lead);
}

/* t's dims from `lead` on, at offset `offset`: one row of a layer_norm operand. */
static ag_kernel_tensor trailing_dims(const ag_kernel_tensor *t, int lead, long long offset) {
    ag_kernel_tensor r = *t;
    r.offset = offset;
    r.ndim = t->ndim - lead;
    for (int d = 0; d < r.ndim; d++) {
        r.shape[d] = t->shape[lead + d];
        r.strides[d] = t->strides[lead + d];
    }
    return r;
}

/* layer_norm(x[, weight][, bias]) -> out over the last attrs ints[0] dims; ints[1] bits say
 * which affine inputs follow; eps reals[0]. */
static ag_status layer_norm_entry(const ag_kernel_args *args) {
    static const char name[] = "layer_norm";
    const long long flags = args && args->attrs ? args->attrs->ints[1] : 0;
    const int n_in = 1 + !!(flags & LN_WEIGHT) + !!(flags & LN_BIAS);
    const ag_dtype dtype = first_input_dtype(args);
    const ag_dtype dtypes[4] = {dtype, dtype, dtype, dtype};
    ag_status st = cu_check_call(args, name, n_in, 1, dtypes);
    if (st != AG_OK || (st = ag_kt_check_float(name, "input", dtype, cu_fail)) != AG_OK) return st;
    const ag_kernel_tensor *x = &args->inputs[0], *out = &args->outputs[0];
    if ((st = ag_kt_check_like(name, x, "input", dtype, out, cu_fail)) != AG_OK) return st;
    const long long n_norm = args->attrs->ints[0];
    if (n_norm < 1 || n_norm > out->ndim)
        return cu_fail(AG_ERR_INVALID_ARG,
                       "layer_norm: cannot normalise the last %lld dims of a %d-dim tensor", n_norm,
                       out->ndim);
    const int lead = out->ndim - (int)n_norm;
    const ag_kernel_tensor *w = flags & LN_WEIGHT ? &args->inputs[1] : NULL;
    const ag_kernel_tensor *b = flags & LN_BIAS ? &args->inputs[n_in - 1] : NULL;
    if ((w && (st = check_affine(w, "weight", out, lead)) != AG_OK) ||
        (b && (st = check_affine(b, "bias", out, lead)) != AG_OK))
        return st;
    if (ag_kt_numel(out) == 0) return AG_OK;

    /* Row starts over the leading dims; each row's elements over the trailing ones, relative
     * to the row start for out and x, absolute for weight and bias (x stands in for an
     * absent one, never read). */
    ag_kernel_tensor starts[2] = {*out, *x};
    ag_kernel_tensor row[4] = {trailing_dims(out, lead, 0), trailing_dims(x, lead, 0),
                               w ? *w : trailing_dims(x, lead, 0),
                               b ? *b : trailing_dims(x, lead, 0)};
    for (int i = 0; i < 2; i++) {
        starts[i].ndim = lead;
        ag_kt_coalesce(&starts[i], 1);
    }
    for (int i = 0; i < 4; i++) ag_kt_coalesce(&row[i], 1);
    const long long nrows = ag_kt_numel(&starts[0]), len = ag_kt_numel(&row[0]);
    const int lanes = cu_whole_row_lanes(args->device, &starts[1], nrows, len,
                                         cu_inner_stride(&row[1]), ROW_BLOCK_MAX);

    cudaStream_t stream;
    if ((st = cu_enter(args->device, name, &stream)) != AG_OK) return st;
    const unsigned threads = cu_block_threads(lanes);
    const unsigned blocks = cu_grid_size(args->device, nrows * lanes, threads);
    const cu_view v[6] = {cu_view_of(&starts[0]), cu_view_of(&row[0]), cu_view_of(&starts[1]),
                          cu_view_of(&row[1]),    cu_view_of(&row[2]), cu_view_of(&row[3])};
    const double eps = args->attrs->reals[0];
    if (dtype == AG_F32)
        layer_norm_rows<float><<<blocks, threads, 0, stream>>>(
            cu_data<float>(out), v[0], v[1], cu_data<const float>(x), v[2], v[3],
            w ? cu_data<const float>(w) : NULL, v[4], b ? cu_data<const float>(b) : NULL, v[5],
            nrows, len, eps, lanes);
    else
        layer_norm_rows<double><<<blocks, threads, 0, stream>>>(
            cu_data<double>(out), v[0], v[1], cu_data<const double>(x), v[2], v[3],
            w ? cu_data<const double>(w) : NULL, v[4], b ? cu_data<const double>(b) : NULL, v[5],
            nrows, len, eps, lanes);
    return cu_check_launch(name);
}

/* ---- cross_entropy ---- */

/* Checks every target (view tv, npos positions) on the device: AG_ERR_INDEX naming the
 * first one that is neither ignore nor in [0, classes). Waits for the device. */
static ag_status check_targets(int device, cudaStream_t stream, const ag_kernel_tensor *tv,
                               long long npos, long long classes, long long ignore) {
    static const char name[] = "cross_entropy";
    cu_scratch flag = {NULL, 0, 0};
    ag_status st = cu_scratch_alloc(device, sizeof(unsigned long long), name, &flag);
    if (st != AG_OK) return st;
    unsigned long long first_bad = ULLONG_MAX;
    /* All bytes 0xff: ULLONG_MAX, no bad target yet. */
    st = cu_check(cudaMemsetAsync(flag.ptr, 0xff, sizeof first_bad, stream), name);
    if (st == AG_OK) {
        cross_entropy_check<<<cu_grid_size(device, npos, CU_THREADS), CU_THREADS, 0, stream>>>(
            cu_data<const long long>(tv), cu_view_of(tv), npos, classes, ignore,
            static_cast<unsigned long long *>(flag.ptr));
        st = cu_check_launch(name);
    }
    if (st == AG_OK) st = cu_read_back(device, &first_bad, flag.ptr, sizeof first_bad, name);
    /* Freed only now: the read-back waits for the stream, which could by then hold work of
     * another user of this scratch. */
    cu_scratch_free(&flag);
    if (st != AG_OK || first_bad == ULLONG_MAX) return st;
    long long target = 0;
    st = cu_read_back(device, &target,
                      cu_data<const long long>(tv) + ag_kt_offset(tv, (long long)first_bad),
                      sizeof target, name);
    if (st != AG_OK) return st;
    return cu_fail(AG_ERR_INDEX,
                   "cross_entropy: Target %lld is out of bounds (%lld classes, ignore_index %lld).",
                   target, classes, ignore);
}

/* cross_entropy(logits, target) -> out: class dim attrs ints[0], ignore_index ints[1],
 * label smoothing reals[0]. */
static ag_status cross_entropy_entry(const ag_kernel_args *args) {
    static const char name[] = "cross_entropy";
    const ag_dtype dtype = first_input_dtype(args);
    const ag_dtype dtypes[3] = {dtype, AG_I64, dtype};
    ag_status st = cu_check_call(args, name, 2, 1, dtypes);
    if (st != AG_OK || (st = ag_kt_check_float(name, "input", dtype, cu_fail)) != AG_OK) return st;
    const ag_kernel_tensor *x = &args->inputs[0], *t = &args->inputs[1], *out = &args->outputs[0];
    const long long cdim = args->attrs->ints[0];
    if ((st = ag_kt_check_like(name, t, "target", AG_I64, out, cu_fail)) != AG_OK ||
        (st = ag_kt_check_dim(name, x, cdim, cu_fail)) != AG_OK)
        return st;
    /* xv: the logits without the class dim (each position's class 0), out's shape. */
    ag_kernel_tensor ov = *out, tv = *t, xv = *x;
    xv.ndim = x->ndim - 1;
    for (int d = 0; d < xv.ndim; d++) {
        xv.shape[d] = x->shape[d + (d >= cdim)];
        xv.strides[d] = x->strides[d + (d >= cdim)];
    }
    if (!ag_kt_same_shape(out, &xv)) {
        char a[160], b[160];
        return cu_fail(AG_ERR_SHAPE,
                       "cross_entropy: logits %s without class dim %d do not give the output "
                       "shape %s",
                       ag_kt_shape_str(x, a, sizeof a), (int)cdim,
                       ag_kt_shape_str(out, b, sizeof b));
    }
    const double smoothing = args->attrs->reals[0];
    if (!(smoothing >= 0 && smoothing <= 1))
        return cu_fail(AG_ERR_INVALID_ARG,
                       "cross_entropy: label_smoothing must be between 0.0 and 1.0, got %g",
                       smoothing);
    const long long npos = ag_kt_numel(out);
    if (npos == 0) return AG_OK;

    const long long classes = x->shape[cdim], cstride = x->strides[cdim];
    const long long ignore = args->attrs->ints[1];
    ag_kt_coalesce(&ov, 1);
    ag_kt_coalesce(&tv, 1);
    ag_kt_coalesce(&xv, 1);
    cudaStream_t stream;
    if ((st = cu_enter(args->device, name, &stream)) != AG_OK ||
        (st = check_targets(args->device, stream, &tv, npos, classes, ignore)) != AG_OK)
        return st;

    const int lanes = cu_whole_row_lanes(args->device, &xv, npos, classes, cstride, ROW_BLOCK_MAX);
    const unsigned threads = cu_block_threads(lanes);
    const unsigned blocks = cu_grid_size(args->device, npos * lanes, threads);
    const cu_view o = cu_view_of(&ov), tg = cu_view_of(&tv), xs = cu_view_of(&xv);
    const long long *target = cu_data<const long long>(&tv);
    if (dtype == AG_F32)
        cross_entropy_rows<float><<<blocks, threads, 0, stream>>>(
            cu_data<float>(out), o, target, tg, cu_data<const float>(x), xs, npos, classes, cstride,
            ignore, smoothing, lanes);
    else
        cross_entropy_rows<double><<<blocks, threads, 0, stream>>>(
            cu_data<double>(out), o, target, tg, cu_data<const double>(x), xs, npos, classes,
            cstride, ignore, smoothing, lanes);
    return cu_check_launch(name);
}

extern "C" const cu_kernel_entry cu_nn_kernels[] = {
    {"layer_norm", DT_F, layer_norm_entry},
    {"cross_entropy", DT_F, cross_entropy_entry},
    {NULL, 0, NULL},
};
