/* Elementwise kernels: unary and binary maps, where, copy (dtype conversion) and the
 * creation kernels fill and arange.
 *
 * Each op is a scalar expression OP(T, ...) over type T; macros turn it into a row loop
 * (with a unit-stride fast path the compiler can vectorise) and a kernel per dtype, and the
 * strided iteration lives in cpu_strided.h. <tgmath.h> makes exp(x) etc. pick the float or
 * double libm function from x's type. */
#include "cpu_strided.h"

#include <tgmath.h>

/* Attribute values the ops read, gathered once per call. */
typedef struct elt_params {
    double reals[2]; /* attrs->reals[0..1]: pow exponent, clamp bounds, fill/arange values */
    int64_t ints[2]; /* attrs->ints[0..1]: gelu mode, clamp flags, i64 fill/arange values */
    i64 lo, hi;      /* clamp bounds for i64, rounded toward the inside */
} elt_params;

static elt_params params_of(const ag_attrs *attrs) {
    elt_params p = {
        .reals = {attrs->reals[0], attrs->reals[1]},
        .ints = {attrs->ints[0], attrs->ints[1]},
        .lo = cpu_f64_to_i64(ceil(attrs->reals[0])),
        .hi = cpu_f64_to_i64(floor(attrs->reals[1])),
    };
    return p;
}

/* ---- scalar helpers per float type ---- */
#define DEFINE_FLOAT_HELPERS(T)                                                                    \
    /* Split by sign so exp never overflows: 1/(1+e^-x) for x >= 0, e^x/(1+e^x) below. Both        \
     * sides are computed and one selected, so that loops over it have no branch and               \
     * vectorise. */                                                                               \
    static inline T T##_sigmoid(T x) {                                                             \
        const T e = exp(x >= 0 ? -x : x);                                                          \
        const T pos = (T)1 / ((T)1 + e), neg = e / ((T)1 + e);                                     \
        return x >= 0 ? pos : neg;                                                                 \
    }                                                                                              \
    /* GELU, exact (x Φ(x)) and tanh-approximated; one loop each (gelu_loops). */                 \
    static inline T T##_gelu_erf(T x) {                                                            \
        return (T)0.5 * x * ((T)1 + erf(x * (T)0.7071067811865476));                               \
    }                                                                                              \
    static inline T T##_gelu_tanh(T x) {                                                           \
        return (T)0.5 * x * ((T)1 + tanh((T)0.7978845608028654 * (x + (T)0.044715 * x * x * x)));  \
    }                                                                                              \
    static inline T T##_clamp(T x, const elt_params *p) {                                          \
        if (p->ints[0] && x < (T)p->reals[0]) x = (T)p->reals[0];                                  \
        if (p->ints[1] && x > (T)p->reals[1]) x = (T)p->reals[1];                                  \
        return x;                                                                                  \
    }
CPU_FOR_F(DEFINE_FLOAT_HELPERS)

static inline i64 i64_clamp(i64 x, const elt_params *p) {
    if (p->ints[0] && x < p->lo) x = p->lo;
    if (p->ints[1] && x > p->hi) x = p->hi;
    return x;
}

/* ---- scalar ops: OP(T, x, params) and OP(T, a, b) ---- */
#define OP_NEG(T, x, p)        T##_neg(x)
#define OP_ABS(T, x, p)        T##_abs(x)
#define OP_SIGN(T, x, p)       (CPU_ISNAN(x) ? (x) : (T)(((x) > 0) - ((x) < 0)))
#define OP_EXP(T, x, p)        exp(x)
#define OP_LOG(T, x, p)        log(x)
#define OP_SQRT(T, x, p)       sqrt(x)
#define OP_SIN(T, x, p)        sin(x)
#define OP_COS(T, x, p)        cos(x)
#define OP_TANH(T, x, p)       tanh(x)
#define OP_ERF(T, x, p)        erf(x)
#define OP_RSQRT(T, x, p)      ((T)1 / sqrt(x))
#define OP_SIGMOID(T, x, p)    T##_sigmoid(x)
#define OP_RELU(T, x, p)       ((x) > 0 || CPU_ISNAN(x) ? (x) : (T)0)
#define OP_SILU(T, x, p)       ((x)*T##_sigmoid(x))
#define OP_GELU_ERF(T, x, p)   T##_gelu_erf(x)
#define OP_GELU_TANH(T, x, p)  T##_gelu_tanh(x)
#define OP_POW_SCALAR(T, x, p) pow(x, (T)(p)->reals[0])
#define OP_CLAMP(T, x, p)      T##_clamp(x, p)

#define OP_ADD(T, a, b) T##_add(a, b)
#define OP_SUB(T, a, b) T##_sub(a, b)
#define OP_MUL(T, a, b) T##_mul(a, b)
#define OP_DIV(T, a, b) ((a) / (b))
#define OP_POW(T, a, b) pow(a, b)
/* `|` rather than `||`: no branch, so the loop can be vectorised. */
#define OP_MAXIMUM(T, a, b) ((CPU_ISNAN(a) | ((a) > (b))) ? (a) : (b))
#define OP_MINIMUM(T, a, b) ((CPU_ISNAN(a) | ((a) < (b))) ? (a) : (b))
#define OP_EQ(T, a, b)      ((T)((a) == (b)))
#define OP_NE(T, a, b)      ((T)((a) != (b)))
#define OP_LT(T, a, b)      ((T)((a) < (b)))
#define OP_LE(T, a, b)      ((T)((a) <= (b)))
#define OP_GT(T, a, b)      ((T)((a) > (b)))
#define OP_GE(T, a, b)      ((T)((a) >= (b)))

/* ---- drivers shared by all kernels ---- */

/* Walks `out` and the n_inputs tensors `in` over out's shape with `loop`. */
static ag_status run_map(const ag_kernel_tensor *out, const ag_kernel_tensor *in, int n_inputs,
                         cpu_loop_fn loop, void *ctx) {
    cpu_geom g;
    cpu_geom_init(&g, out->ndim, out->shape);
    if (g.numel == 0) return AG_OK;
    cpu_geom_add(&g, out, NULL);
    for (int i = 0; i < n_inputs; i++) cpu_geom_add(&g, &in[i], NULL);
    cpu_geom_coalesce(&g);
    cpu_geom_run(&g, g.numel, loop, ctx);
    return AG_OK;
}

/* Checks a map kernel whose output and `n_inputs` inputs all have `dtype` and one shape. */
static ag_status check_map(const ag_kernel_args *args, const char *name, int n_inputs,
                           ag_dtype dtype) {
    static const char *const roles[] = {"input 0", "input 1", "input 2"};
    ag_status st = cpu_check_args(args, name, n_inputs, 1);
    if (st == AG_OK) st = cpu_check_dtype(name, &args->outputs[0], "output", dtype);
    for (int i = 0; i < n_inputs && st == AG_OK; i++)
        st = cpu_check_like(name, &args->inputs[i], roles[i], dtype, &args->outputs[0]);
    return st;
}

/* Checks and runs a map kernel whose ops all have `dtype`. */
static ag_status map_kernel(const ag_kernel_args *args, const char *name, int n_inputs,
                            ag_dtype dtype, cpu_loop_fn loop) {
    const ag_status st = check_map(args, name, n_inputs, dtype);
    if (st != AG_OK) return st;
    elt_params p = params_of(args->attrs);
    return run_map(&args->outputs[0], args->inputs, n_inputs, loop, &p);
}

/* ---- generators ---- */

/* The loop NAME##_loop_##T of a unary kernel computing out = OP(T, in, params). */
#define DEFINE_UNARY_LOOP(NAME, OP, T)                                                             \
    static void NAME##_loop_##T(int64_t n, void *const *p, const int64_t *s, void *ctx) {          \
        const elt_params *prm = ctx;                                                               \
        T *o = (T *)p[0];                                                                          \
        const T *a = (const T *)p[1];                                                              \
        (void)prm;                                                                                 \
        if (s[0] == 1 && s[1] == 1) {                                                              \
            CPU_SIMD for (int64_t i = 0; i < n; i++) o[i] = OP(T, a[i], prm);                      \
        } else {                                                                                   \
            for (int64_t i = 0; i < n; i++) o[i * s[0]] = OP(T, a[i * s[1]], prm);                 \
        }                                                                                          \
    }
/* A unary kernel NAME##_##T computing out = OP(T, in, params). */
#define DEFINE_UNARY(NAME, OP, T)                                                                  \
    DEFINE_UNARY_LOOP(NAME, OP, T)                                                                 \
    static ag_status NAME##_##T(const ag_kernel_args *args) {                                      \
        return map_kernel(args, #NAME, 1, CPU_DTYPE_##T, NAME##_loop_##T);                         \
    }
#define DEFINE_UNARY_F(NAME, OP)  DEFINE_UNARY(NAME, OP, f32) DEFINE_UNARY(NAME, OP, f64)
#define DEFINE_UNARY_FI(NAME, OP) DEFINE_UNARY_F(NAME, OP) DEFINE_UNARY(NAME, OP, i64)

/* A binary kernel NAME##_##T computing out = OP(T, a, b); fast paths for contiguous
 * operands and for either input being a broadcast scalar (stride 0). */
#define DEFINE_BINARY(NAME, OP, T)                                                                 \
    static void NAME##_loop_##T(int64_t n, void *const *p, const int64_t *s, void *ctx) {          \
        T *o = (T *)p[0];                                                                          \
        const T *a = (const T *)p[1], *b = (const T *)p[2];                                        \
        (void)ctx;                                                                                 \
        if (s[0] == 1 && s[1] == 1 && s[2] == 1) {                                                 \
            CPU_SIMD for (int64_t i = 0; i < n; i++) o[i] = OP(T, a[i], b[i]);                     \
        } else if (s[0] == 1 && s[1] == 1 && s[2] == 0) {                                          \
            const T bv = b[0];                                                                     \
            CPU_SIMD for (int64_t i = 0; i < n; i++) o[i] = OP(T, a[i], bv);                       \
        } else if (s[0] == 1 && s[1] == 0 && s[2] == 1) {                                          \
            const T av = a[0];                                                                     \
            CPU_SIMD for (int64_t i = 0; i < n; i++) o[i] = OP(T, av, b[i]);                       \
        } else {                                                                                   \
            for (int64_t i = 0; i < n; i++) o[i * s[0]] = OP(T, a[i * s[1]], b[i * s[2]]);         \
        }                                                                                          \
    }                                                                                              \
    static ag_status NAME##_##T(const ag_kernel_args *args) {                                      \
        return map_kernel(args, #NAME, 2, CPU_DTYPE_##T, NAME##_loop_##T);                         \
    }
#define DEFINE_BINARY_F(NAME, OP)  DEFINE_BINARY(NAME, OP, f32) DEFINE_BINARY(NAME, OP, f64)
#define DEFINE_BINARY_FI(NAME, OP) DEFINE_BINARY_F(NAME, OP) DEFINE_BINARY(NAME, OP, i64)

DEFINE_UNARY_FI(neg, OP_NEG)
DEFINE_UNARY_FI(abs, OP_ABS)
DEFINE_UNARY_FI(sign, OP_SIGN)
DEFINE_UNARY_F(exp, OP_EXP)
DEFINE_UNARY_F(log, OP_LOG)
DEFINE_UNARY_F(sqrt, OP_SQRT)
DEFINE_UNARY_F(sin, OP_SIN)
DEFINE_UNARY_F(cos, OP_COS)
DEFINE_UNARY_F(tanh, OP_TANH)
DEFINE_UNARY_F(erf, OP_ERF)
DEFINE_UNARY_F(rsqrt, OP_RSQRT)
DEFINE_UNARY_F(sigmoid, OP_SIGMOID)
DEFINE_UNARY_FI(relu, OP_RELU)
DEFINE_UNARY_F(silu, OP_SILU)
/* gelu: ints[0] picks the exact or the tanh form, one loop each, so that neither loop
 * branches per element. */
#define DEFINE_GELU(T)                                                                             \
    DEFINE_UNARY_LOOP(gelu_erf, OP_GELU_ERF, T)                                                    \
    DEFINE_UNARY_LOOP(gelu_tanh, OP_GELU_TANH, T)                                                  \
    static ag_status gelu_##T(const ag_kernel_args *args) {                                        \
        const bool tanh_form = args && args->attrs && args->attrs->ints[0];                        \
        return map_kernel(args, "gelu", 1, CPU_DTYPE_##T,                                          \
                          tanh_form ? gelu_tanh_loop_##T : gelu_erf_loop_##T);                     \
    }
CPU_FOR_F(DEFINE_GELU)
DEFINE_UNARY_F(pow_scalar, OP_POW_SCALAR)
DEFINE_UNARY_FI(clamp, OP_CLAMP)

DEFINE_BINARY_FI(add, OP_ADD)
DEFINE_BINARY_FI(sub, OP_SUB)
DEFINE_BINARY_FI(mul, OP_MUL)
DEFINE_BINARY_F(div, OP_DIV)
DEFINE_BINARY_F(pow, OP_POW)
DEFINE_BINARY_FI(maximum, OP_MAXIMUM)
DEFINE_BINARY_FI(minimum, OP_MINIMUM)
DEFINE_BINARY_FI(eq, OP_EQ)
DEFINE_BINARY_FI(ne, OP_NE)
DEFINE_BINARY_FI(lt, OP_LT)
DEFINE_BINARY_FI(le, OP_LE)
DEFINE_BINARY_FI(gt, OP_GT)
DEFINE_BINARY_FI(ge, OP_GE)

/* where(cond, a, b): out = cond != 0 ? a : b, everything in dtype T. */
#define DEFINE_WHERE(T)                                                                            \
    static void where_loop_##T(int64_t n, void *const *p, const int64_t *s, void *ctx) {           \
        T *o = (T *)p[0];                                                                          \
        const T *c = (const T *)p[1], *a = (const T *)p[2], *b = (const T *)p[3];                  \
        (void)ctx;                                                                                 \
        if (s[0] == 1 && s[1] == 1 && s[2] == 1 && s[3] == 1) {                                    \
            CPU_SIMD for (int64_t i = 0; i < n; i++) { /* both loaded: a select, not a branch */   \
                const T av = a[i], bv = b[i];                                                      \
                o[i] = c[i] != 0 ? av : bv;                                                        \
            }                                                                                      \
        } else {                                                                                   \
            for (int64_t i = 0; i < n; i++)                                                        \
                o[i * s[0]] = c[i * s[1]] != 0 ? a[i * s[2]] : b[i * s[3]];                        \
        }                                                                                          \
    }                                                                                              \
    static ag_status where_##T(const ag_kernel_args *args) {                                       \
        return map_kernel(args, "where", 3, CPU_DTYPE_##T, where_loop_##T);                        \
    }
CPU_FOR_FI(DEFINE_WHERE)

/* ---- copy: out (dtype TO) = in converted from dtype FROM ---- */

/* Every element as the number its conversion starts from: float32 for the 16-bit floats
 * (exact), the value itself otherwise. _Generic selects a function, then calls it, so no
 * branch treats a struct as a number. */
static inline f32 value_of_f32(f32 x) {
    return x;
}
static inline f64 value_of_f64(f64 x) {
    return x;
}
static inline i64 value_of_i64(i64 x) {
    return x;
}
static inline f32 value_of_f16(f16 x) {
    return ag_f16_to_f32(x.bits);
}
static inline f32 value_of_bf16(bf16 x) {
    return ag_bf16_to_f32(x.bits);
}
#define VALUE_OF(x)                                                                                \
    _Generic((x), f32                                                                              \
             : value_of_f32, f64                                                                   \
             : value_of_f64, i64                                                                   \
             : value_of_i64, f16                                                                   \
             : value_of_f16, bf16                                                                  \
             : value_of_bf16)(x)

/* Floats truncate toward zero (saturating); integers pass through. */
static inline i64 i64_of_f32(f32 x) {
    return cpu_f64_to_i64(x);
}
static inline i64 i64_of_f64(f64 x) {
    return cpu_f64_to_i64(x);
}
static inline i64 i64_of_f16(f16 x) {
    return cpu_f64_to_i64(value_of_f16(x));
}
static inline i64 i64_of_bf16(bf16 x) {
    return cpu_f64_to_i64(value_of_bf16(x));
}

#define CONVERT_f32(x) ((f32)VALUE_OF(x))
#define CONVERT_f64(x) ((f64)VALUE_OF(x))
#define CONVERT_i64(x)                                                                             \
    _Generic((x), f32                                                                              \
             : i64_of_f32, f64                                                                     \
             : i64_of_f64, i64                                                                     \
             : value_of_i64, f16                                                                   \
             : i64_of_f16, bf16                                                                    \
             : i64_of_bf16)(x)
/* Doubles and integers reach 16 bits through float32, as PyTorch's c10::Half(double); a
 * 16-bit value copied to its own dtype keeps its bits (NaN payloads included). */
static inline f16 same_f16(f16 x) {
    return x;
}
static inline bf16 same_bf16(bf16 x) {
    return x;
}
#define F16_OF(T)                                                                                  \
    static inline f16 f16_of_##T(T x) {                                                            \
        return (f16){ag_f32_to_f16((f32)VALUE_OF(x))};                                             \
    }                                                                                              \
    static inline bf16 bf16_of_##T(T x) {                                                          \
        return (bf16){ag_f32_to_bf16((f32)VALUE_OF(x))};                                           \
    }
F16_OF(f32)
F16_OF(f64)
F16_OF(i64)
static inline f16 f16_of_bf16(bf16 x) {
    return (f16){ag_f32_to_f16(value_of_bf16(x))};
}
static inline bf16 bf16_of_f16(f16 x) {
    return (bf16){ag_f32_to_bf16(value_of_f16(x))};
}
#define CONVERT_f16(x)                                                                             \
    _Generic((x), f32                                                                              \
             : f16_of_f32, f64                                                                     \
             : f16_of_f64, i64                                                                     \
             : f16_of_i64, f16                                                                     \
             : same_f16, bf16                                                                      \
             : f16_of_bf16)(x)
#define CONVERT_bf16(x)                                                                            \
    _Generic((x), f32                                                                              \
             : bf16_of_f32, f64                                                                    \
             : bf16_of_f64, i64                                                                    \
             : bf16_of_i64, f16                                                                    \
             : bf16_of_f16, bf16                                                                   \
             : same_bf16)(x)

#define DEFINE_COPY_LOOP(TO, FROM)                                                                 \
    static void copy_loop_##TO##_##FROM(int64_t n, void *const *p, const int64_t *s, void *ctx) {  \
        TO *o = (TO *)p[0];                                                                        \
        const FROM *a = (const FROM *)p[1];                                                        \
        (void)ctx;                                                                                 \
        if (s[0] == 1 && s[1] == 1) {                                                              \
            CPU_SIMD for (int64_t i = 0; i < n; i++) o[i] = CONVERT_##TO(a[i]);                    \
        } else {                                                                                   \
            for (int64_t i = 0; i < n; i++) o[i * s[0]] = CONVERT_##TO(a[i * s[1]]);               \
        }                                                                                          \
    }
#define DEFINE_COPY_LOOPS(TO)                                                                      \
    DEFINE_COPY_LOOP(TO, f32)                                                                      \
    DEFINE_COPY_LOOP(TO, f64)                                                                      \
    DEFINE_COPY_LOOP(TO, i64) DEFINE_COPY_LOOP(TO, f16) DEFINE_COPY_LOOP(TO, bf16)
CPU_FOR_ALL(DEFINE_COPY_LOOPS)

#define COPY_LOOP_ROW(TO)                                                                          \
    [CPU_DTYPE_##TO] = {[AG_F32] = copy_loop_##TO##_f32,                                           \
                        [AG_F64] = copy_loop_##TO##_f64,                                           \
                        [AG_I64] = copy_loop_##TO##_i64,                                           \
                        [AG_F16] = copy_loop_##TO##_f16,                                           \
                        [AG_BF16] = copy_loop_##TO##_bf16},
static const cpu_loop_fn g_copy_loops[AG_DTYPE_COUNT][AG_DTYPE_COUNT] = {
    CPU_FOR_ALL(COPY_LOOP_ROW)};

ag_status cpu_copy_tensor(const ag_kernel_tensor *dst, const ag_kernel_tensor *src) {
    return run_map(dst, src, 1, g_copy_loops[dst->dtype][src->dtype], NULL);
}

#define DEFINE_COPY(TO)                                                                            \
    static ag_status copy_##TO(const ag_kernel_args *args) {                                       \
        ag_status st = cpu_check_args(args, "copy", 1, 1);                                         \
        if (st == AG_OK)                                                                           \
            st = cpu_check_dtype("copy", &args->outputs[0], "output", CPU_DTYPE_##TO);             \
        if (st != AG_OK) return st;                                                                \
        const ag_dtype from = args->inputs[0].dtype;                                               \
        if ((unsigned)from >= AG_DTYPE_COUNT)                                                      \
            return cpu_fail(AG_ERR_DTYPE, "copy: cannot convert dtype %d to %s", (int)from,        \
                            ag_dtype_name(CPU_DTYPE_##TO));                                        \
        st = cpu_check_like("copy", &args->inputs[0], "input 0", from, &args->outputs[0]);         \
        return st != AG_OK ? st : cpu_copy_tensor(&args->outputs[0], &args->inputs[0]);            \
    }
CPU_FOR_ALL(DEFINE_COPY)

/* ---- creation ---- */

/* fill: every element = value (reals[0] for floats, ints[0] for i64). */
#define DEFINE_FILL(T)                                                                             \
    static void fill_loop_##T(int64_t n, void *const *p, const int64_t *s, void *ctx) {            \
        const T v = *(const T *)ctx;                                                               \
        T *o = (T *)p[0];                                                                          \
        if (s[0] == 1) {                                                                           \
            CPU_SIMD for (int64_t i = 0; i < n; i++) o[i] = v;                                     \
        } else {                                                                                   \
            for (int64_t i = 0; i < n; i++) o[i * s[0]] = v;                                       \
        }                                                                                          \
    }                                                                                              \
    static ag_status fill_##T(const ag_kernel_args *args) {                                        \
        const ag_status st = check_map(args, "fill", 0, CPU_DTYPE_##T);                            \
        if (st != AG_OK) return st;                                                                \
        T v = CPU_DTYPE_##T == AG_I64 ? (T)args->attrs->ints[0] : (T)args->attrs->reals[0];        \
        return run_map(&args->outputs[0], NULL, 0, fill_loop_##T, &v);                             \
    }
CPU_FOR_FI(DEFINE_FILL)

/* arange: 1-D out[i] = start + i*step; floats compute in double, i64 wraps. */
typedef struct arange_job {
    const ag_kernel_tensor *out;
    elt_params p;
} arange_job;

#define ARANGE_VALUE_f32(p, i) ((f32)((p).reals[0] + (double)(i) * (p).reals[1]))
#define ARANGE_VALUE_f64(p, i) ((p).reals[0] + (double)(i) * (p).reals[1])
#define ARANGE_VALUE_i64(p, i) i64_add((p).ints[0], i64_mul(i, (p).ints[1]))

#define DEFINE_ARANGE(T)                                                                           \
    static void arange_range_##T(int64_t begin, int64_t end, void *ctx) {                          \
        const arange_job *j = ctx;                                                                 \
        T *o = (T *)j->out->data + j->out->offset;                                                 \
        const int64_t s = j->out->strides[0];                                                      \
        for (int64_t i = begin; i < end; i++) o[i * s] = ARANGE_VALUE_##T(j->p, i);                \
    }                                                                                              \
    static ag_status arange_##T(const ag_kernel_args *args) {                                      \
        ag_status st = check_map(args, "arange", 0, CPU_DTYPE_##T);                                \
        if (st != AG_OK) return st;                                                                \
        if (args->outputs[0].ndim != 1)                                                            \
            return cpu_fail(AG_ERR_SHAPE, "arange: %s output must be 1-D, not %d-D",               \
                            ag_dtype_name(CPU_DTYPE_##T), args->outputs[0].ndim);                  \
        arange_job job = {&args->outputs[0], params_of(args->attrs)};                              \
        const int64_t n = args->outputs[0].shape[0];                                               \
        cpu_parallel_for(n, n, arange_range_##T, &job);                                            \
        return AG_OK;                                                                              \
    }
CPU_FOR_FI(DEFINE_ARANGE)

const cpu_kernel_entry cpu_elementwise_kernels[] = {
    CPU_ENTRY_FI("neg", neg),
    CPU_ENTRY_FI("abs", abs),
    CPU_ENTRY_FI("sign", sign),
    CPU_ENTRY_F("exp", exp),
    CPU_ENTRY_F("log", log),
    CPU_ENTRY_F("sqrt", sqrt),
    CPU_ENTRY_F("sin", sin),
    CPU_ENTRY_F("cos", cos),
    CPU_ENTRY_F("tanh", tanh),
    CPU_ENTRY_F("erf", erf),
    CPU_ENTRY_F("rsqrt", rsqrt),
    CPU_ENTRY_F("sigmoid", sigmoid),
    CPU_ENTRY_FI("relu", relu),
    CPU_ENTRY_F("silu", silu),
    CPU_ENTRY_F("gelu", gelu),
    CPU_ENTRY_F("pow_scalar", pow_scalar),
    CPU_ENTRY_FI("clamp", clamp),
    CPU_ENTRY_FI("copy", copy),
    CPU_ENTRY("copy", copy, f16),
    CPU_ENTRY("copy", copy, bf16),
    CPU_ENTRY_FI("add", add),
    CPU_ENTRY_FI("sub", sub),
    CPU_ENTRY_FI("mul", mul),
    CPU_ENTRY_F("div", div),
    CPU_ENTRY_F("pow", pow),
    CPU_ENTRY_FI("maximum", maximum),
    CPU_ENTRY_FI("minimum", minimum),
    CPU_ENTRY_FI("eq", eq),
    CPU_ENTRY_FI("ne", ne),
    CPU_ENTRY_FI("lt", lt),
    CPU_ENTRY_FI("le", le),
    CPU_ENTRY_FI("gt", gt),
    CPU_ENTRY_FI("ge", ge),
    CPU_ENTRY_FI("where", where),
    CPU_ENTRY_FI("fill", fill),
    CPU_ENTRY_FI("arange", arange),
    {NULL, AG_F32, NULL},
};
