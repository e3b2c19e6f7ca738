/* Elementwise kernels of the CUDA backend (docs/kernels.md): unary and binary maps, where,
 * copy (dtype conversion) and the creation kernels fill and arange.
 *
 * Every kernel is a map: out[i] = op(in_0[i], ..., in_{N-1}[i]) over the output's elements
 * (N = 0 for fill and arange, whose op gets the linear index i instead). Each op is a small
 * functor template over the element type, built on the host from the call's attrs. The views
 * are coalesced first (ag_kt_coalesce), so contiguous tensors become one flat run and take
 * map_contiguous; anything else takes map_strided, which splits the linear index into
 * coordinates once for all views (with 32-bit division when the count allows).
 *
 * Float ops use the float (expf, erff...) or double libm functions of the key dtype and the
 * cpu backend's formulas; i64 arithmetic wraps (two's complement) as on the cpu backend.
 * Inputs are never declared __restrict__: the core may pass the output's exact view as an
 * input (in-place ops), which a pure map handles since each element is read before it is
 * written by the same thread. */
#include <math.h>

#include "cuda_kernel_util.cuh"

/* Key dtype sets of the table; copy also converts to and from float16 and bfloat16. */
#define DT_F    ((1u << AG_F32) | (1u << AG_F64))
#define DT_FI   (DT_F | (1u << AG_I64))
#define DT_COPY (DT_FI | (1u << AG_F16) | (1u << AG_BF16))

/* ---- scalar helpers ---- */

/* The libm functions of the key float type: the float ones (expf...) for float32. */
CU_FLOAT_UNARY(ew_exp, expf, exp)
CU_FLOAT_UNARY(ew_log, logf, log)
CU_FLOAT_UNARY(ew_sqrt, sqrtf, sqrt)
CU_FLOAT_UNARY(ew_sin, sinf, sin)
CU_FLOAT_UNARY(ew_cos, cosf, cos)
CU_FLOAT_UNARY(ew_tanh, tanhf, tanh)
CU_FLOAT_UNARY(ew_erf, erff, erf)
CU_FLOAT_BINARY(ew_pow, powf, pow)

/* True for NaN; never for integers. */
template <typename T> __device__ __forceinline__ bool ew_isnan(T x) {
    return x != x;
}
template <> __device__ __forceinline__ bool ew_isnan<long long>(long long) {
    return false;
}

/* -x, |x|, a+b, a-b, a*b: plain for floats, wrapping for i64 (signed overflow is undefined
 * behaviour in C++, unsigned arithmetic is not). */
template <typename T> __device__ __forceinline__ T ew_neg(T x) {
    return -x;
}
template <> __device__ __forceinline__ long long ew_neg<long long>(long long x) {
    return (long long)(0ull - (unsigned long long)x);
}
template <typename T> __device__ __forceinline__ T ew_abs(T x) {
    return fabs(x);
}
template <> __device__ __forceinline__ float ew_abs<float>(float x) {
    return fabsf(x);
}
template <> __device__ __forceinline__ long long ew_abs<long long>(long long x) {
    return x < 0 ? ew_neg(x) : x;
}
template <typename T> __device__ __forceinline__ T ew_add(T a, T b) {
    return a + b;
}
template <> __device__ __forceinline__ long long ew_add<long long>(long long a, long long b) {
    return (long long)((unsigned long long)a + (unsigned long long)b);
}
template <typename T> __device__ __forceinline__ T ew_sub(T a, T b) {
    return a - b;
}
template <> __device__ __forceinline__ long long ew_sub<long long>(long long a, long long b) {
    return (long long)((unsigned long long)a - (unsigned long long)b);
}
template <typename T> __device__ __forceinline__ T ew_mul(T a, T b) {
    return a * b;
}
template <> __device__ __forceinline__ long long ew_mul<long long>(long long a, long long b) {
    return (long long)((unsigned long long)a * (unsigned long long)b);
}

/* 1/(1+exp(-x)), split by sign so exp never overflows. */
template <typename T> __device__ __forceinline__ T ew_sigmoid(T x) {
    if (x >= 0) return (T)1 / ((T)1 + ew_exp(-x));
    const T e = ew_exp(x);
    return e / ((T)1 + e);
}

/* Float -> i64 truncating toward zero; NaN gives 0 and out-of-range values saturate (as the
 * cpu backend's cpu_f64_to_i64; 2^63 is exact in float and double). */
__host__ __device__ __forceinline__ long long ew_to_i64(double x) {
    if (x != x) return 0;
    if (x >= 9223372036854775808.0) return INT64_MAX;
    if (x < -9223372036854775808.0) return INT64_MIN;
    return (long long)x;
}
__device__ __forceinline__ long long ew_to_i64(float x) {
    if (x != x) return 0;
    if (x >= 9223372036854775808.0f) return INT64_MAX;
    if (x < -9223372036854775808.0f) return INT64_MIN;
    return (long long)x;
}
__device__ __forceinline__ long long ew_to_i64(long long x) {
    return x;
}

/* ---- ops: functor templates over the element type T ---- */

/* Base of the ops that read no attribute: every op is built from the call's attrs. */
template <int ARITY> struct plain_op {
    static constexpr int arity = ARITY; /* inputs the op reads */
    explicit plain_op(const ag_attrs *) {}
};

/* An op NAME_op<T> of one input x computing EXPR. */
#define UNARY_OP(NAME, EXPR)                                                                       \
    template <typename T> struct NAME##_op : plain_op<1> {                                         \
        using plain_op<1>::plain_op;                                                               \
        __device__ T operator()(T x) const {                                                       \
            return EXPR;                                                                           \
        }                                                                                          \
    };
/* An op NAME_op<T> of two inputs a, b computing EXPR. */
#define BINARY_OP(NAME, EXPR)                                                                      \
    template <typename T> struct NAME##_op : plain_op<2> {                                         \
        using plain_op<2>::plain_op;                                                               \
        __device__ T operator()(T a, T b) const {                                                  \
            return EXPR;                                                                           \
        }                                                                                          \
    };

UNARY_OP(neg, ew_neg(x))
UNARY_OP(abs, ew_abs(x))
UNARY_OP(sign, ew_isnan(x) ? x : (T)((x > 0) - (x < 0)))
UNARY_OP(exp, ew_exp(x))
UNARY_OP(log, ew_log(x))
UNARY_OP(sqrt, ew_sqrt(x))
UNARY_OP(sin, ew_sin(x))
UNARY_OP(cos, ew_cos(x))
UNARY_OP(tanh, ew_tanh(x))
UNARY_OP(erf, ew_erf(x))
UNARY_OP(rsqrt, (T)1 / ew_sqrt(x))
UNARY_OP(sigmoid, ew_sigmoid(x))
UNARY_OP(relu, (x > 0 || ew_isnan(x)) ? x : (T)0)
UNARY_OP(silu, ew_mul(x, ew_sigmoid(x)))

BINARY_OP(add, ew_add(a, b))
BINARY_OP(sub, ew_sub(a, b))
BINARY_OP(mul, ew_mul(a, b))
BINARY_OP(div, a / b)
BINARY_OP(pow, ew_pow(a, b))
/* NaN-propagating: a NaN a wins, and a NaN b wins since a > b is then false. */
BINARY_OP(maximum, (ew_isnan(a) || a > b) ? a : b)
BINARY_OP(minimum, (ew_isnan(a) || a < b) ? a : b)
BINARY_OP(eq, (T)(a == b))
BINARY_OP(ne, (T)(a != b))
BINARY_OP(lt, (T)(a < b))
BINARY_OP(le, (T)(a <= b))
BINARY_OP(gt, (T)(a > b))
BINARY_OP(ge, (T)(a >= b))

/* gelu: ints[0] = 0 gives x*Phi(x) with erf, otherwise the tanh approximation. */
template <typename T> struct gelu_op {
    static constexpr int arity = 1;
    bool tanh_mode;
    explicit gelu_op(const ag_attrs *a) : tanh_mode(a->ints[0] != 0) {}
    __device__ T operator()(T x) const {
        if (!tanh_mode) return (T)0.5 * x * ((T)1 + ew_erf(x * (T)0.7071067811865476));
        /* x + 0.044715*x^3 without fma contraction, as the cpu rounds it. */
        const T cube = cu_mul_rn(cu_mul_rn(cu_mul_rn((T)0.044715, x), x), x);
        const T inner = (T)0.7978845608028654 * cu_add_rn(x, cube);
        return (T)0.5 * x * ((T)1 + ew_tanh(inner));
    }
};

/* pow(x, reals[0]) with the exponent in the key dtype. */
template <typename T> struct pow_scalar_op {
    static constexpr int arity = 1;
    T exponent;
    explicit pow_scalar_op(const ag_attrs *a) : exponent((T)a->reals[0]) {}
    __device__ T operator()(T x) const {
        return ew_pow(x, exponent);
    }
};

/* Clamp bounds reals[0], reals[1] in the key dtype; i64 rounds them toward the inside. */
static inline void clamp_bounds(const ag_attrs *a, float *lo, float *hi) {
    *lo = (float)a->reals[0];
    *hi = (float)a->reals[1];
}
static inline void clamp_bounds(const ag_attrs *a, double *lo, double *hi) {
    *lo = a->reals[0];
    *hi = a->reals[1];
}
static inline void clamp_bounds(const ag_attrs *a, long long *lo, long long *hi) {
    *lo = ew_to_i64(ceil(a->reals[0]));
    *hi = ew_to_i64(floor(a->reals[1]));
}

/* clamp: lower bound when ints[0] != 0, upper bound when ints[1] != 0; NaN x stays NaN. */
template <typename T> struct clamp_op {
    static constexpr int arity = 1;
    T lo, hi;
    bool has_lo, has_hi;
    explicit clamp_op(const ag_attrs *a) : has_lo(a->ints[0] != 0), has_hi(a->ints[1] != 0) {
        clamp_bounds(a, &lo, &hi);
    }
    __device__ T operator()(T x) const {
        if (has_lo && x < lo) x = lo;
        if (has_hi && x > hi) x = hi;
        return x;
    }
};

/* where(cond, a, b) = cond != 0 ? a : b (a NaN cond counts as true). */
template <typename T> struct where_op {
    static constexpr int arity = 3;
    explicit where_op(const ag_attrs *) {}
    __device__ T operator()(T cond, T a, T b) const {
        return cond != 0 ? a : b;
    }
};

/* An element as a number: float16 and bfloat16 widen to float exactly. */
template <typename T> __device__ __forceinline__ T ew_number(T x) {
    return x;
}
__device__ __forceinline__ float ew_number(cu_f16 x) {
    return cu_f16_to_f32(x);
}
__device__ __forceinline__ float ew_number(cu_bf16 x) {
    return cu_bf16_to_f32(x);
}

/* copy: the input converted to TO (any input type; see ew_to_i64 for i64). To float16 and
 * bfloat16 through float32 (float64 and int64 round to float32 first, as PyTorch does), as
 * include/ag/half.h rounds; within one dtype the bits are kept. */
template <typename TO> struct convert_op {
    static constexpr int arity = 1;
    explicit convert_op(const ag_attrs *) {}
    template <typename TI> __device__ TO operator()(TI x) const {
        return (TO)ew_number(x);
    }
};
template <> struct convert_op<long long> {
    static constexpr int arity = 1;
    explicit convert_op(const ag_attrs *) {}
    template <typename TI> __device__ long long operator()(TI x) const {
        return ew_to_i64(ew_number(x));
    }
};
template <> struct convert_op<cu_f16> {
    static constexpr int arity = 1;
    explicit convert_op(const ag_attrs *) {}
    template <typename TI> __device__ cu_f16 operator()(TI x) const {
        return cu_f32_to_f16((float)ew_number(x));
    }
    __device__ cu_f16 operator()(cu_f16 x) const {
        return x;
    }
};
template <> struct convert_op<cu_bf16> {
    static constexpr int arity = 1;
    explicit convert_op(const ag_attrs *) {}
    template <typename TI> __device__ cu_bf16 operator()(TI x) const {
        return cu_f32_to_bf16((float)ew_number(x));
    }
    __device__ cu_bf16 operator()(cu_bf16 x) const {
        return x;
    }
};

/* fill: every element = reals[0] (floats) or ints[0] (i64). */
template <typename T> struct fill_op {
    static constexpr int arity = 0;
    T value;
    explicit fill_op(const ag_attrs *a) : value((T)a->reals[0]) {}
    __device__ T operator()(long long) const {
        return value;
    }
};
template <> struct fill_op<long long> {
    static constexpr int arity = 0;
    long long value;
    explicit fill_op(const ag_attrs *a) : value(a->ints[0]) {}
    __device__ long long operator()(long long) const {
        return value;
    }
};

/* arange: out[i] = start + i*step; floats compute in double (reals[0], reals[1]) without
 * fma contraction, as the cpu backend; i64 (ints[0], ints[1]) wraps. */
template <typename T> struct arange_op {
    static constexpr int arity = 0;
    double start, step;
    explicit arange_op(const ag_attrs *a) : start(a->reals[0]), step(a->reals[1]) {}
    __device__ T operator()(long long i) const {
        return (T)cu_add_rn(start, cu_mul_rn((double)i, step));
    }
};
template <> struct arange_op<long long> {
    static constexpr int arity = 0;
    long long start, step;
    explicit arange_op(const ag_attrs *a) : start(a->ints[0]), step(a->ints[1]) {}
    __device__ long long operator()(long long i) const {
        return ew_add(start, ew_mul(i, step));
    }
};

/* ---- the map kernels ---- */

/* Data pointers of a map with N inputs, each already advanced to its view's offset. */
template <typename TO, typename TI, int N> struct map_operands {
    TO *out;
    const TI *in[N > 0 ? N : 1];
};

/* The coalesced shape all K = N+1 views walk, with each view's strides (view 0 is the
 * output). Dims past ndim have extent 1 and stride 0. */
template <int K> struct map_geometry {
    int ndim;
    long long shape[AG_MAX_DIMS];
    long long strides[K][AG_MAX_DIMS];
};

/* op applied to the inputs at element offsets off[1..N] (off[0] is the output's); ops of no
 * input get the linear index i. */
template <int N, typename TO, typename TI, typename Op>
__device__ __forceinline__ TO map_element(const map_operands<TO, TI, N> &p, const Op &op,
                                          long long i, const long long (&off)[N + 1]) {
    if constexpr (N == 0)
        return op(i);
    else if constexpr (N == 1)
        return op(p.in[0][off[1]]);
    else if constexpr (N == 2)
        return op(p.in[0][off[1]], p.in[1][off[2]]);
    else
        return op(p.in[0][off[1]], p.in[1][off[2]], p.in[2][off[3]]);
}

/* Every view contiguous (stride 1, or a single element): element i is at offset i. */
template <int N, typename TO, typename TI, typename Op>
__global__ void __launch_bounds__(CU_THREADS)
    map_contiguous(map_operands<TO, TI, N> p, long long n, Op op) {
    CU_FOR_EACH(i, n) {
        long long off[N + 1];
#pragma unroll
        for (int k = 0; k <= N; k++) off[k] = i;
        p.out[i] = map_element(p, op, i, off);
    }
}

/* Element offsets of linear index i in the K views of g. The loop over dims is unrolled so
 * that shapes and strides are read straight from the kernel parameters; dim 0 takes the
 * remaining index without a division (i < shape[0] there), so 1-D views divide nothing. */
template <int K, typename I>
__device__ __forceinline__ void map_offsets(const map_geometry<K> &g, I i, long long (&off)[K]) {
#pragma unroll
    for (int k = 0; k < K; k++) off[k] = 0;
#pragma unroll
    for (int d = AG_MAX_DIMS - 1; d > 0; d--) {
        if (d < g.ndim) {
            const I e = (I)g.shape[d];
            const I q = i / e;
            const long long c = (long long)(i - q * e);
#pragma unroll
            for (int k = 0; k < K; k++) off[k] += c * g.strides[k][d];
            i = q;
        }
    }
#pragma unroll
    for (int k = 0; k < K; k++) off[k] += (long long)i * g.strides[k][0];
}

/* Any strides (broadcast, transposed, sliced). I is the index type: 32-bit when the count
 * and the thread count fit in int32 (cheaper divisions; i + grid stride then stays below
 * 2^32), else 64-bit. */
template <typename I, int N, typename TO, typename TI, typename Op>
__global__ void __launch_bounds__(CU_THREADS)
    map_strided(map_operands<TO, TI, N> p, map_geometry<N + 1> g, I n, Op op) {
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        long long off[N + 1];
        map_offsets(g, i, off);
        p.out[off[0]] = map_element(p, op, (long long)i, off);
    }
}

/* Launches op over the output of args (inputs of type TI, output of type TO) on the device's
 * stream; `name` names the kernel in errors. The call has been checked already. */
template <typename TO, typename TI, typename Op>
static ag_status launch_map(const ag_kernel_args *args, const char *name, const Op &op) {
    constexpr int N = Op::arity, K = N + 1;
    const long long n = ag_kt_numel(&args->outputs[0]);
    if (n == 0) return AG_OK;
    cudaStream_t stream;
    const ag_status st = cu_enter(args->device, name, &stream);
    if (st != AG_OK) return st;

    ag_kernel_tensor views[K];
    views[0] = args->outputs[0];
    for (int k = 1; k < K; k++) views[k] = args->inputs[k - 1];
    ag_kt_coalesce(views, K);

    map_operands<TO, TI, N> p;
    p.out = cu_data<TO>(&views[0]) + views[0].offset;
    for (int k = 1; k < K; k++) p.in[k - 1] = cu_data<const TI>(&views[k]) + views[k].offset;
    bool contiguous = views[0].ndim <= 1;
    for (int k = 0; k < K && contiguous && views[0].ndim == 1; k++)
        contiguous = views[k].strides[0] == 1;

    const unsigned blocks = cu_grid_size(args->device, n, CU_THREADS);
    if (contiguous) {
        map_contiguous<N><<<blocks, CU_THREADS, 0, stream>>>(p, n, op);
    } else {
        map_geometry<K> g;
        g.ndim = views[0].ndim;
        for (int d = 0; d < AG_MAX_DIMS; d++) {
            g.shape[d] = d < g.ndim ? views[0].shape[d] : 1;
            for (int k = 0; k < K; k++) g.strides[k][d] = d < g.ndim ? views[k].strides[d] : 0;
        }
        if (n <= INT32_MAX && (long long)blocks * CU_THREADS <= INT32_MAX)
            map_strided<unsigned, N><<<blocks, CU_THREADS, 0, stream>>>(p, g, (unsigned)n, op);
        else
            map_strided<unsigned long long, N>
                <<<blocks, CU_THREADS, 0, stream>>>(p, g, (unsigned long long)n, op);
    }
    return cu_check_launch(name);
}

/* ---- checks and entries ---- */

/* Checks a map call of n_inputs inputs and one output: the key dtype (the output's) among
 * `dtypes`, every input of the output's shape and of its dtype, except that copy's input
 * (`convert`) may be any of f32, f64, i64, f16 and bf16. */
static ag_status check_map(const ag_kernel_args *args, const char *name, int n_inputs,
                           uint32_t dtypes, bool convert) {
    /* The dtypes the tensors must have, read only from a block that cu_check_call will
     * accept as far as counts and pointers go (it reports any other block). */
    const bool readable = args && args->struct_size >= sizeof(ag_kernel_args) &&
                          args->n_inputs == n_inputs && args->n_outputs == 1 && args->outputs &&
                          (n_inputs == 0 || args->inputs);
    const ag_dtype key = readable ? args->outputs[0].dtype : AG_F32;
    ag_dtype expected[4] = {key, key, key, key};
    if (convert && readable) expected[0] = args->inputs[0].dtype;
    ag_status st = cu_check_call(args, name, n_inputs, 1, expected);
    if (st != AG_OK) return st;
    if ((unsigned)key >= 32 || !(dtypes & (1u << key)))
        return cu_fail(AG_ERR_DTYPE, "%s: no CUDA kernel for %s", name, ag_dtype_name(key));
    const ag_kernel_tensor *out = &args->outputs[0];
    for (int i = 0; i < n_inputs; i++) {
        const ag_kernel_tensor *in = &args->inputs[i];
        if (convert && ((unsigned)in->dtype >= 32 || !(DT_COPY & (1u << in->dtype))))
            return cu_fail(AG_ERR_DTYPE, "%s: cannot convert %s to %s", name,
                           ag_dtype_name(in->dtype), ag_dtype_name(key));
        if (!ag_kt_same_shape(in, out)) {
            char a[160], b[160];
            return cu_fail(AG_ERR_SHAPE, "%s: %s input %d has shape %s but the output has shape %s",
                           name, ag_dtype_name(in->dtype), i, ag_kt_shape_str(in, a, sizeof a),
                           ag_kt_shape_str(out, b, sizeof b));
        }
    }
    return AG_OK;
}

/* Launches Op<T> for the key dtype T of a checked call; DTYPES says whether i64 exists. */
template <template <typename> class Op, uint32_t DTYPES>
static ag_status dispatch_map(const ag_kernel_args *args, const char *name) {
    const ag_dtype key = args->outputs[0].dtype;
    if constexpr ((DTYPES >> AG_I64) & 1u) {
        if (key == AG_I64)
            return launch_map<long long, long long>(args, name, Op<long long>(args->attrs));
    }
    if (key == AG_F32) return launch_map<float, float>(args, name, Op<float>(args->attrs));
    return launch_map<double, double>(args, name, Op<double>(args->attrs));
}

/* Checks and runs the map kernel of Op with key dtypes DTYPES. */
template <template <typename> class Op, uint32_t DTYPES>
static ag_status run_map(const ag_kernel_args *args, const char *name) {
    const ag_status st = check_map(args, name, Op<float>::arity, DTYPES, false);
    return st != AG_OK ? st : dispatch_map<Op, DTYPES>(args, name);
}

/* The maps whose entry is run_map alone: (kernel name, key dtypes); NAME_op is the op. */
#define MAP_KERNELS(X)                                                                             \
    X(neg, DT_FI)                                                                                  \
    X(abs, DT_FI)                                                                                  \
    X(sign, DT_FI)                                                                                 \
    X(exp, DT_F)                                                                                   \
    X(log, DT_F)                                                                                   \
    X(sqrt, DT_F)                                                                                  \
    X(sin, DT_F)                                                                                   \
    X(cos, DT_F)                                                                                   \
    X(tanh, DT_F)                                                                                  \
    X(erf, DT_F)                                                                                   \
    X(rsqrt, DT_F)                                                                                 \
    X(sigmoid, DT_F)                                                                               \
    X(relu, DT_FI)                                                                                 \
    X(silu, DT_F)                                                                                  \
    X(gelu, DT_F)                                                                                  \
    X(pow_scalar, DT_F)                                                                            \
    X(clamp, DT_FI)                                                                                \
    X(add, DT_FI)                                                                                  \
    X(sub, DT_FI)                                                                                  \
    X(mul, DT_FI)                                                                                  \
    X(div, DT_F)                                                                                   \
    X(pow, DT_F)                                                                                   \
    X(maximum, DT_FI)                                                                              \
    X(minimum, DT_FI)                                                                              \
    X(eq, DT_FI)                                                                                   \
    X(ne, DT_FI)                                                                                   \
    X(lt, DT_FI)                                                                                   \
    X(le, DT_FI)                                                                                   \
    X(gt, DT_FI)                                                                                   \
    X(ge, DT_FI)                                                                                   \
    X(where, DT_FI)                                                                                \
    X(fill, DT_FI)

/* The entry NAME_entry of a MAP_KERNELS row. */
#define DEFINE_MAP_ENTRY(NAME, DTYPES)                                                             \
    static ag_status NAME##_entry(const ag_kernel_args *args) {                                    \
        return run_map<NAME##_op, DTYPES>(args, #NAME);                                            \
    }
MAP_KERNELS(DEFINE_MAP_ENTRY)

/* copy to the key dtype TO from the input's dtype. */
template <typename TO> static ag_status copy_to(const ag_kernel_args *args) {
    switch (args->inputs[0].dtype) {
    case AG_F32:
        return launch_map<TO, float>(args, "copy", convert_op<TO>(args->attrs));
    case AG_F64:
        return launch_map<TO, double>(args, "copy", convert_op<TO>(args->attrs));
    case AG_F16:
        return launch_map<TO, cu_f16>(args, "copy", convert_op<TO>(args->attrs));
    case AG_BF16:
        return launch_map<TO, cu_bf16>(args, "copy", convert_op<TO>(args->attrs));
    default: /* AG_I64: check_map accepted nothing else */
        return launch_map<TO, long long>(args, "copy", convert_op<TO>(args->attrs));
    }
}

/* copy: out (key dtype) = in converted from f32, f64, i64, f16 or bf16. */
static ag_status copy_entry(const ag_kernel_args *args) {
    const ag_status st = check_map(args, "copy", 1, DT_COPY, true);
    if (st != AG_OK) return st;
    switch (args->outputs[0].dtype) {
    case AG_F32:
        return copy_to<float>(args);
    case AG_F64:
        return copy_to<double>(args);
    case AG_F16:
        return copy_to<cu_f16>(args);
    case AG_BF16:
        return copy_to<cu_bf16>(args);
    default:
        return copy_to<long long>(args);
    }
}

/* arange: a 1-D output (any stride). */
static ag_status arange_entry(const ag_kernel_args *args) {
    const ag_status st = check_map(args, "arange", 0, DT_FI, false);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *out = &args->outputs[0];
    if (out->ndim != 1)
        return cu_fail(AG_ERR_SHAPE, "arange: %s output must be 1-D, not %d-D",
                       ag_dtype_name(out->dtype), out->ndim);
    return dispatch_map<arange_op, DT_FI>(args, "arange");
}

#define MAP_ENTRY_ROW(NAME, DTYPES) {#NAME, DTYPES, NAME##_entry},
extern "C" const cu_kernel_entry cu_elementwise_kernels[] = {
    MAP_KERNELS(MAP_ENTRY_ROW) /* neg ... fill */
    {"copy", DT_COPY, copy_entry},
    {"arange", DT_FI, arange_entry},
    {NULL, 0, NULL},
};
