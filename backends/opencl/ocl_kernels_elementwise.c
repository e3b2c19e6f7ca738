/* Elementwise kernels of the OpenCL backend: unary and binary maps, copy (dtype conversion),
 * where, fill and arange (docs/kernels.md), launching the generic strided kernels of
 * kernels/elementwise.cl. Each op is one program per (op, dtype), selected by a define.
 * Before a launch the views are coalesced (extent-1 dims dropped, dims contiguous in every
 * tensor merged), so contiguous tensors are indexed as flat arrays. */
#include "ocl_internal.h"

#include <math.h>
#include <stdio.h>

extern const char ocl_source_elementwise[];

#define DT_F  ((1u << AG_F32) | (1u << AG_F64))
#define DT_FI (DT_F | (1u << AG_I64))
/* copy's: also float16 and bfloat16, converted with integer operations (elementwise.cl). */
#define DT_COPY (DT_FI | (1u << AG_F16) | (1u << AG_BF16))

/* Most work items of one launch; the kernels loop over the rest (grid stride). */
#define MAX_GLOBAL ((size_t)1 << 20)

/* OpenCL C type name of a dtype, as the programs see it (float16, bfloat16: their bits). */
static const char *cl_type_of(ag_dtype dtype) {
    return dtype == AG_F32   ? "float"
           : dtype == AG_F64 ? "double"
           : dtype == AG_I64 ? "long"
                             : "ushort";
}

/* A scalar kernel argument of the key dtype (or cl_long / cl_double where noted). */
typedef struct scalar_arg {
    size_t size;
    union {
        cl_float f32;
        cl_double f64;
        cl_long i64;
        cl_ushort u16; /* float16 / bfloat16 bits */
    } v;
} scalar_arg;

static scalar_arg scalar_long(int64_t x) {
    scalar_arg s = {sizeof(cl_long), {.i64 = x}};
    return s;
}

static scalar_arg scalar_double(double x) {
    scalar_arg s = {sizeof(cl_double), {.f64 = x}};
    return s;
}

/* A value in `dtype`: floats from real, i64 from integer; float16 and bfloat16 (whose
 * kernels read no scalar) get zero bits of their size. */
static scalar_arg scalar_of(ag_dtype dtype, double real, int64_t integer) {
    if (dtype == AG_I64) return scalar_long(integer);
    if (dtype == AG_F64) return scalar_double(real);
    if (dtype == AG_F16 || dtype == AG_BF16) {
        scalar_arg s = {sizeof(cl_ushort), {.u16 = 0}};
        return s;
    }
    scalar_arg s = {sizeof(cl_float), {.f32 = (cl_float)real}};
    return s;
}

/* Float -> i64 truncating toward zero, saturating, NaN -> 0 (as the cpu backend). */
static int64_t f64_to_i64(double x) {
    if (isnan(x)) return 0;
    if (x >= 9223372036854775808.0) return INT64_MAX;
    if (x < -9223372036854775808.0) return INT64_MIN;
    return (int64_t)x;
}

/* ---- checks ---- */

/* Checks one view: ndim range, extents, buffer. */
static ag_status check_tensor(const char *name, const ag_kernel_tensor *t, const char *role) {
    if (t->ndim < 0 || t->ndim > AG_MAX_DIMS)
        return ocl_fail(AG_ERR_INVALID_ARG, "%s: %s has ndim %d (must be 0..%d)", name, role,
                        t->ndim, AG_MAX_DIMS);
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] < 0)
            return ocl_fail(AG_ERR_SHAPE, "%s: %s has negative extent %lld at dim %d", name, role,
                            (long long)t->shape[d], d);
    if (!t->data && ag_kt_numel(t) > 0)
        return ocl_fail(AG_ERR_INVALID_ARG, "%s: %s has no buffer", name, role);
    return AG_OK;
}

/* Checks an elementwise call: n_inputs inputs and one output, the key dtype (the output's)
 * among `dtypes`, every input of the output's shape and (unless any_input_dtype) dtype. */
static ag_status check_map(const ag_kernel_args *args, const char *name, int n_inputs,
                           uint32_t dtypes, bool any_input_dtype) {
    static const char *const roles[] = {"input 0", "input 1", "input 2"};
    if (!args || args->struct_size < sizeof(ag_kernel_args))
        return ocl_fail(AG_ERR_INVALID_ARG, "%s: missing or too small ag_kernel_args", name);
    if (args->n_inputs != n_inputs || args->n_outputs != 1)
        return ocl_fail(AG_ERR_INVALID_ARG, "%s: takes %d inputs and 1 output, got %d and %d", name,
                        n_inputs, args->n_inputs, args->n_outputs);
    if ((n_inputs && !args->inputs) || !args->outputs || !args->attrs)
        return ocl_fail(AG_ERR_INVALID_ARG, "%s: NULL inputs, outputs or attrs", name);
    const ag_kernel_tensor *out = &args->outputs[0];
    ag_status st = check_tensor(name, out, "output");
    if (st != AG_OK) return st;
    if ((unsigned)out->dtype >= 32 || !(dtypes & (1u << out->dtype)))
        return ocl_fail(AG_ERR_DTYPE, "%s: no OpenCL kernel for %s", name,
                        ag_dtype_name(out->dtype));
    for (int i = 0; i < n_inputs; i++) {
        const ag_kernel_tensor *in = &args->inputs[i];
        if ((st = check_tensor(name, in, roles[i])) != AG_OK) return st;
        const bool dtype_ok = any_input_dtype
                                  ? (unsigned)in->dtype < 32 && (DT_COPY & (1u << in->dtype))
                                  : in->dtype == out->dtype;
        if (!dtype_ok)
            return ocl_fail(AG_ERR_DTYPE, "%s: %s is %s, the output %s", name, roles[i],
                            ag_dtype_name(in->dtype), ag_dtype_name(out->dtype));
        bool same = in->ndim == out->ndim;
        for (int d = 0; same && d < in->ndim; d++) same = in->shape[d] == out->shape[d];
        if (!same)
            return ocl_fail(AG_ERR_SHAPE, "%s: %s does not have the output's shape", name,
                            roles[i]);
    }
    if (args->device < 0 || args->device >= ocl_device_count())
        return ocl_fail(AG_ERR_DEVICE, "%s: no OpenCL device %d", name, args->device);
    return AG_OK;
}

/* ---- launching ---- */

/* One launch: kernel `kernel` of the program for the output's dtype and `defines`, with the
 * output and the inputs, the element count and the scalars as arguments, in that order. */
static ag_status launch(const ag_kernel_args *args, const char *name, const char *kernel,
                        const char *defines, const scalar_arg *scalars, int n_scalars) {
    const int64_t n = ag_kt_numel(&args->outputs[0]);
    if (n == 0) return AG_OK;
    ag_kernel_tensor views[4];
    const int n_views = 1 + args->n_inputs;
    views[0] = args->outputs[0];
    for (int i = 1; i < n_views; i++) views[i] = args->inputs[i - 1];
    ag_kt_coalesce(views, n_views);

    cl_kernel k;
    ag_status st =
        ocl_kernel_get(args->device, ocl_source_elementwise, views[0].dtype, defines, kernel, &k);
    if (st != AG_OK) return st;
    int arg = 0;
    for (int i = 0; i < n_views && arg >= 0; i++) arg = ocl_arg_tensor(k, arg, &views[i]);
    const cl_long count = n;
    if (arg >= 0) arg = ocl_arg_value(k, arg, sizeof count, &count);
    for (int i = 0; i < n_scalars && arg >= 0; i++)
        arg = ocl_arg_value(k, arg, scalars[i].size, &scalars[i].v);
    if (arg < 0) return AG_ERR_INTERNAL;
    const size_t global = (uint64_t)n < MAX_GLOBAL ? (size_t)n : MAX_GLOBAL;
    return ocl_enqueue(args->device, k, global, 0, name);
}

/* ---- entries ---- */

/* A unary map with operation macro U_<op> of elementwise.cl; p0, p1 carry reals[0..1] in the
 * key dtype (i64: the clamp bounds rounded toward the inside), i0, i1 ints[0..1]. */
static ag_status run_unary(const ag_kernel_args *args, const char *name, const char *op,
                           uint32_t dtypes) {
    const ag_status st = check_map(args, name, 1, dtypes, false);
    if (st != AG_OK) return st;
    const ag_attrs *at = args->attrs;
    const ag_dtype dt = args->outputs[0].dtype;
    const scalar_arg scalars[4] = {
        scalar_of(dt, at->reals[0], f64_to_i64(ceil(at->reals[0]))),
        scalar_of(dt, at->reals[1], f64_to_i64(floor(at->reals[1]))),
        scalar_long(at->ints[0]),
        scalar_long(at->ints[1]),
    };
    char defines[64];
    snprintf(defines, sizeof defines, "-D UOP=U_%s", op);
    return launch(args, name, "ag_unary", defines, scalars, 4);
}

/* A binary map with operation macro B_<op>. */
static ag_status run_binary(const ag_kernel_args *args, const char *name, const char *op,
                            uint32_t dtypes) {
    const ag_status st = check_map(args, name, 2, dtypes, false);
    if (st != AG_OK) return st;
    char defines[64];
    snprintf(defines, sizeof defines, "-D BOP=B_%s", op);
    return launch(args, name, "ag_binary", defines, NULL, 0);
}

/* Entry functions and table rows from one list per arity: (kernel name, OP macro suffix,
 * key dtypes). */
#define UNARY_OPS(X)                                                                               \
    X(neg, NEG, DT_FI)                                                                             \
    X(abs, ABS, DT_FI)                                                                             \
    X(sign, SIGN, DT_FI)                                                                           \
    X(exp, EXP, DT_F)                                                                              \
    X(log, LOG, DT_F)                                                                              \
    X(sqrt, SQRT, DT_F)                                                                            \
    X(sin, SIN, DT_F)                                                                              \
    X(cos, COS, DT_F)                                                                              \
    X(tanh, TANH, DT_F)                                                                            \
    X(erf, ERF, DT_F)                                                                              \
    X(rsqrt, RSQRT, DT_F)                                                                          \
    X(sigmoid, SIGMOID, DT_F)                                                                      \
    X(relu, RELU, DT_FI)                                                                           \
    X(silu, SILU, DT_F)                                                                            \
    X(gelu, GELU, DT_F)                                                                            \
    X(pow_scalar, POW_SCALAR, DT_F)                                                                \
    X(clamp, CLAMP, DT_FI)

#define BINARY_OPS(X)                                                                              \
    X(add, ADD, DT_FI)                                                                             \
    X(sub, SUB, DT_FI)                                                                             \
    X(mul, MUL, DT_FI)                                                                             \
    X(div, DIV, DT_F)                                                                              \
    X(pow, POW, DT_F)                                                                              \
    X(maximum, MAXIMUM, DT_FI)                                                                     \
    X(minimum, MINIMUM, DT_FI)                                                                     \
    X(eq, EQ, DT_FI)                                                                               \
    X(ne, NE, DT_FI)                                                                               \
    X(lt, LT, DT_FI)                                                                               \
    X(le, LE, DT_FI)                                                                               \
    X(gt, GT, DT_FI)                                                                               \
    X(ge, GE, DT_FI)

#define DEFINE_UNARY(NAME, OP, DTYPES)                                                             \
    static ag_status k_##NAME(const ag_kernel_args *args) {                                        \
        return run_unary(args, #NAME, #OP, DTYPES);                                                \
    }
#define DEFINE_BINARY(NAME, OP, DTYPES)                                                            \
    static ag_status k_##NAME(const ag_kernel_args *args) {                                        \
        return run_binary(args, #NAME, #OP, DTYPES);                                               \
    }
UNARY_OPS(DEFINE_UNARY)
BINARY_OPS(DEFINE_BINARY)

/* copy: out (key dtype) = in converted from f32, f64, i64, f16 or bf16 (to and from the 16-bit
 * types bit for bit as include/ag/half.h). */
static ag_status k_copy(const ag_kernel_args *args) {
    const ag_status st = check_map(args, "copy", 1, DT_COPY, true);
    if (st != AG_OK) return st;
    const ag_dtype from = args->inputs[0].dtype;
    char defines[64];
    snprintf(defines, sizeof defines, "-D UOP=U_COPY -D IN_T=%s -D IN_ID=%d", cl_type_of(from),
             (int)from);
    const ag_dtype dt = args->outputs[0].dtype;
    const scalar_arg unused[4] = {scalar_of(dt, 0, 0), scalar_of(dt, 0, 0), scalar_long(0),
                                  scalar_long(0)};
    return launch(args, "copy", "ag_unary", defines, unused, 4);
}

/* where(cond, a, b). */
static ag_status k_where(const ag_kernel_args *args) {
    const ag_status st = check_map(args, "where", 3, DT_FI, false);
    return st != AG_OK ? st : launch(args, "where", "ag_where", NULL, NULL, 0);
}

/* fill: value reals[0] (floats) or ints[0] (i64). */
static ag_status k_fill(const ag_kernel_args *args) {
    const ag_status st = check_map(args, "fill", 0, DT_FI, false);
    if (st != AG_OK) return st;
    const scalar_arg v =
        scalar_of(args->outputs[0].dtype, args->attrs->reals[0], args->attrs->ints[0]);
    return launch(args, "fill", "ag_fill", NULL, &v, 1);
}

/* arange: 1-D out[i] = start + i*step; float32 computes in double where the device has
 * fp64 (as the cpu backend), i64 wraps. */
static ag_status k_arange(const ag_kernel_args *args) {
    const ag_status st = check_map(args, "arange", 0, DT_FI, false);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *out = &args->outputs[0];
    if (out->ndim != 1)
        return ocl_fail(AG_ERR_SHAPE, "arange: %s output must be 1-D, not %d-D",
                        ag_dtype_name(out->dtype), out->ndim);
    const ag_attrs *at = args->attrs;
    scalar_arg range[2];
    const char *defines = NULL;
    if (out->dtype == AG_I64) {
        range[0] = scalar_long(at->ints[0]);
        range[1] = scalar_long(at->ints[1]);
    } else if (out->dtype == AG_F64 || ocl_device_at(args->device)->fp64) {
        range[0] = scalar_double(at->reals[0]);
        range[1] = scalar_double(at->reals[1]);
        defines = "-D AG_FP64";
    } else {
        range[0] = scalar_of(AG_F32, at->reals[0], 0);
        range[1] = scalar_of(AG_F32, at->reals[1], 0);
    }
    return launch(args, "arange", "ag_arange", defines, range, 2);
}

#define ENTRY(NAME, OP, DTYPES) {#NAME, DTYPES, k_##NAME},
const ocl_kernel_entry ocl_elementwise_kernels[] = {
    UNARY_OPS(ENTRY)  /* neg ... clamp */
    BINARY_OPS(ENTRY) /* add ... ge */
    {"copy", DT_COPY, k_copy},
    {"where", DT_FI, k_where},
    {"fill", DT_FI, k_fill},
    {"arange", DT_FI, k_arange},
    {NULL, 0, NULL},
};
