/* Fused nn kernels: layer_norm and cross_entropy (contracts in docs/kernels.md, "Fused nn
 * kernels").
 *
 * Both reduce one row per position (the normalised trailing dims of layer_norm, the class
 * dim of cross_entropy) and write per element or per position. Rows are walked as cpu_geom,
 * so any strides work; positions are split across threads. Sums accumulate in f64 and each
 * row is read in separate passes (mean before the squared deviations, max before exp), so
 * large values neither overflow exp nor lose the variance to cancellation. */
#include "cpu_strided.h"

#include <tgmath.h>

/* ---- layer_norm ---- */

/* Bits of attrs ints[1]: which affine inputs follow x. */
enum { LN_WEIGHT = 1, LN_BIAS = 2 };

/* One row's statistics, built up by the passes. */
typedef struct ln_row {
    double acc;        /* the current pass's sum */
    double mean, rstd; /* set before the squared-deviation / write passes */
} ln_row;

/* The passes of one dtype, and the 1 and 0 that stand in for an absent weight and bias. */
typedef struct ln_kind {
    cpu_loop_fn sum, sqdev, write;
    const void *one, *zero;
} ln_kind;

/* One call: positions (operands out, x) and the row at position 0 (operands out, x, weight,
 * bias), whose out and x bases move to each position's row. */
typedef struct ln_plan {
    cpu_geom outer, row;
    double eps;
    const ln_kind *kind;
} ln_plan;

/* Row passes of dtype T over n elements, operands (out, x, weight, bias): the sum of x, the
 * sum of (x - mean)^2, and the write. The reductions let the compiler keep eight partial
 * sums (omp simd reduction, simdlen 8): one running sum would wait on every addition. Each pass has
 * a unit-stride copy of its loop (constant strides, so it vectorises) beside the general one; the
 * write's second copy is for an absent weight and bias (stride 0). */
#define LN_SUM_LOOP(SX)                                                                            \
    _Pragma("omp simd reduction(+ : acc) simdlen(8)") for (int64_t k = 0; k < n; k++) {            \
        acc += x[k * (SX)];                                                                        \
    }
#define LN_SQDEV_LOOP(SX)                                                                          \
    _Pragma("omp simd reduction(+ : acc) simdlen(8)") for (int64_t k = 0; k < n; k++) {            \
        const double d = x[k * (SX)] - mean;                                                       \
        acc += d * d;                                                                              \
    }
#define LN_WRITE_LOOP(SO, SX, SW, SB)                                                              \
    CPU_SIMD for (int64_t k = 0; k < n; k++) o[k * (SO)] =                                         \
        (x[k * (SX)] - mean) * rstd * w[k * (SW)] + b[k * (SB)]
#define DEFINE_LN_KIND(T)                                                                          \
    static void ln_sum_##T(int64_t n, void *const *p, const int64_t *s, void *ctx) {               \
        const T *x = (const T *)p[1];                                                              \
        double acc = 0;                                                                            \
        if (s[1] == 1)                                                                             \
            LN_SUM_LOOP(1)                                                                         \
        else                                                                                       \
            LN_SUM_LOOP(s[1])                                                                      \
        ((ln_row *)ctx)->acc += acc;                                                               \
    }                                                                                              \
    static void ln_sqdev_##T(int64_t n, void *const *p, const int64_t *s, void *ctx) {             \
        const T *x = (const T *)p[1];                                                              \
        const double mean = ((const ln_row *)ctx)->mean;                                           \
        double acc = 0;                                                                            \
        if (s[1] == 1)                                                                             \
            LN_SQDEV_LOOP(1)                                                                       \
        else                                                                                       \
            LN_SQDEV_LOOP(s[1])                                                                    \
        ((ln_row *)ctx)->acc += acc;                                                               \
    }                                                                                              \
    static void ln_write_##T(int64_t n, void *const *p, const int64_t *s, void *ctx) {             \
        /* In T: f32 rows get 4-wide float vectors, without conversions. */                        \
        const T mean = (T)((const ln_row *)ctx)->mean, rstd = (T)((const ln_row *)ctx)->rstd;      \
        T *o = (T *)p[0];                                                                          \
        const T *x = (const T *)p[1], *w = (const T *)p[2], *b = (const T *)p[3];                  \
        if (s[0] == 1 && s[1] == 1 && s[2] == 1 && s[3] == 1)                                      \
            LN_WRITE_LOOP(1, 1, 1, 1);                                                             \
        else if (s[0] == 1 && s[1] == 1 && s[2] == 0 && s[3] == 0)                                 \
            LN_WRITE_LOOP(1, 1, 0, 0);                                                             \
        else                                                                                       \
            LN_WRITE_LOOP(s[0], s[1], s[2], s[3]);                                                 \
    }                                                                                              \
    static const T ln_one_##T = 1, ln_zero_##T = 0;                                                \
    static const ln_kind ln_kind_##T = {ln_sum_##T, ln_sqdev_##T, ln_write_##T, &ln_one_##T,       \
                                        &ln_zero_##T};
CPU_FOR_F(DEFINE_LN_KIND)

/* Runs pass `loop` over the row geometry g, starting r's sum at 0. */
static void ln_pass(const cpu_geom *g, cpu_loop_fn loop, ln_row *r) {
    r->acc = 0;
    cpu_geom_for_range(g, 0, g->numel, loop, r);
}

/* Normalises the rows of positions [begin, end). */
static void ln_range(int64_t begin, int64_t end, void *ctx) {
    const ln_plan *pl = ctx;
    const cpu_geom *og = &pl->outer;
    const int last = og->ndim - 1;
    const double len = (double)pl->row.numel;
    ln_row r;
    cpu_geom g = pl->row;
    cpu_cursor c;
    cpu_cursor_seek(&c, og, begin);
    for (int64_t pos = begin; pos < end;) {
        int64_t off[CPU_MAX_OPS];
        const int64_t n = cpu_cursor_next(&c, og, end - pos, off);
        for (int64_t k = 0; k < n; k++) {
            g.base[0] = cpu_geom_ptr(og, 0, off[0] + k * og->strides[0][last]);
            g.base[1] = cpu_geom_ptr(og, 1, off[1] + k * og->strides[1][last]);
            ln_pass(&g, pl->kind->sum, &r);
            r.mean = r.acc / len;
            ln_pass(&g, pl->kind->sqdev, &r);
            r.rstd = 1 / sqrt(r.acc / len + pl->eps); /* biased variance, as PyTorch */
            ln_pass(&g, pl->kind->write, &r);
        }
        pos += n;
    }
}

/* Checks that an affine input has the key dtype and the shape of the normalised dims. */
static ag_status ln_check_affine(const ag_kernel_tensor *t, const char *role, ag_dtype dtype,
                                 const ag_kernel_tensor *out, int lead) {
    ag_status st = cpu_check_dtype("layer_norm", t, role, dtype);
    bool fits = t->ndim == out->ndim - lead;
    for (int d = 0; fits && d < t->ndim; d++) fits = t->shape[d] == out->shape[lead + d];
    if (st != AG_OK || fits) return st;
    char a[160], b[160];
    return cpu_fail(
        AG_ERR_SHAPE, "layer_norm: %s has shape %s but the output %s normalises its last %d dims",
        role, cpu_shape_str(t, a, sizeof a), cpu_shape_str(out, b, sizeof b), out->ndim - lead);
}

/* A stand-in for an absent weight or bias: `value` (a T) seen with zero strides. */
static ag_kernel_tensor ln_constant(const void *value, ag_dtype dtype) {
    /* Cast: the row geometry's bases are void *, but operands 2 and 3 are only read. */
    return (ag_kernel_tensor){.data = (void *)value, .dtype = dtype};
}

/* The layer_norm kernel for dtype `dtype`, with the passes of `kind`. */
static ag_status run_layer_norm(const ag_kernel_args *args, ag_dtype dtype, const ln_kind *kind) {
    const int64_t flags = args && args->attrs ? args->attrs->ints[1] : 0;
    const int n_in = 1 + !!(flags & LN_WEIGHT) + !!(flags & LN_BIAS);
    ag_status st = cpu_check_args(args, "layer_norm", n_in, 1);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *out = &args->outputs[0], *x = &args->inputs[0];
    if ((st = cpu_check_dtype("layer_norm", out, "output", dtype)) != AG_OK ||
        (st = cpu_check_like("layer_norm", x, "input", dtype, out)) != AG_OK)
        return st;
    const int64_t n_norm = args->attrs->ints[0];
    if (n_norm < 1 || n_norm > out->ndim)
        return cpu_fail(AG_ERR_INVALID_ARG,
                        "layer_norm: cannot normalise the last %lld dims of a %d-dim tensor",
                        (long long)n_norm, out->ndim);
    const int lead = out->ndim - (int)n_norm;
    ag_kernel_tensor w = ln_constant(kind->one, dtype), b = ln_constant(kind->zero, dtype);
    int next = 1;
    if (flags & LN_WEIGHT) w = args->inputs[next++];
    if (flags & LN_BIAS) b = args->inputs[next];
    if ((flags & LN_WEIGHT && (st = ln_check_affine(&w, "weight", dtype, out, lead)) != AG_OK) ||
        (flags & LN_BIAS && (st = ln_check_affine(&b, "bias", dtype, out, lead)) != AG_OK))
        return st;
    if (cpu_numel(out) == 0) return AG_OK;

    static const int64_t zeros[AG_MAX_DIMS];
    ln_plan pl = {.eps = args->attrs->reals[0], .kind = kind};
    cpu_geom_init(&pl.outer, lead, out->shape);
    cpu_geom_add(&pl.outer, out, NULL);
    cpu_geom_add(&pl.outer, x, NULL);
    cpu_geom_coalesce(&pl.outer);
    cpu_geom_init(&pl.row, (int)n_norm, out->shape + lead);
    cpu_geom_add(&pl.row, out, out->strides + lead);
    cpu_geom_add(&pl.row, x, x->strides + lead);
    cpu_geom_add(&pl.row, &w, flags & LN_WEIGHT ? NULL : zeros);
    cpu_geom_add(&pl.row, &b, flags & LN_BIAS ? NULL : zeros);
    cpu_geom_coalesce(&pl.row);
    cpu_parallel_for(pl.outer.numel, cpu_numel(out) * 3, ln_range, &pl);
    return AG_OK;
}

#define DEFINE_LAYER_NORM(T)                                                                       \
    static ag_status layer_norm_##T(const ag_kernel_args *args) {                                  \
        return run_layer_norm(args, CPU_DTYPE_##T, &ln_kind_##T);                                  \
    }
CPU_FOR_F(DEFINE_LAYER_NORM)

/* ---- cross_entropy ---- */

/* The class row shared by every position, and the loss settings. */
typedef struct ce_row {
    int64_t classes;  /* C, the extent of the class dim */
    int64_t stride;   /* logits' stride along it */
    int64_t ignore;   /* ignore_index */
    double smoothing; /* label_smoothing */
} ce_row;

/* Per-position loss of cross_entropy for dtype T; operands (out, target, logits at class
 * 0). Targets were checked before: each is ignore_index or in [0, C). */
#define DEFINE_CE_LOOP(T)                                                                          \
    static void ce_loop_##T(int64_t n, void *const *p, const int64_t *s, void *ctx) {              \
        const ce_row *r = ctx;                                                                     \
        T *o = (T *)p[0];                                                                          \
        const i64 *t = (const i64 *)p[1];                                                          \
        for (int64_t k = 0; k < n; k++) {                                                          \
            const i64 target = t[k * s[1]];                                                        \
            if (target == r->ignore) {                                                             \
                o[k * s[0]] = 0;                                                                   \
                continue;                                                                          \
            }                                                                                      \
            const T *x = (const T *)p[2] + k * s[2];                                               \
            /* exp of a T argument: expf for f32 rows, the costly part of the loop. */             \
            T mx = x[0];                                                                           \
            double sum = 0, total = 0;                                                             \
            for (int64_t c = 1; c < r->classes; c++)                                               \
                if (x[c * r->stride] > mx) mx = x[c * r->stride];                                  \
            /* C >= 1 here (the target is a class), so the max's own term makes sum >= 1. */       \
            int64_t c = 0;                                                                         \
            do {                                                                                   \
                sum += exp(x[c * r->stride] - mx);                                                 \
                total += x[c * r->stride];                                                         \
            } while (++c < r->classes);                                                            \
            const double lse = mx + log(sum);                                                      \
            const double nll = lse - x[target * r->stride];                                        \
            const double uniform = lse - total / (double)r->classes;                               \
            /* Without smoothing the uniform term is left out, not multiplied by 0: a -inf         \
             * logit (a masked class) makes it inf, and 0 * inf would be NaN. */                   \
            o[k * s[0]] =                                                                          \
                (T)(r->smoothing > 0 ? (1 - r->smoothing) * nll + r->smoothing * uniform : nll);   \
        }                                                                                          \
    }
CPU_FOR_F(DEFINE_CE_LOOP)

/* Checks that every target lies in [0, C) or equals ignore_index; g walks the targets as
 * its operand 1. */
static ag_status ce_check_targets(const cpu_geom *g, const ce_row *r) {
    const int64_t s = g->strides[1][g->ndim - 1];
    cpu_cursor c;
    cpu_cursor_seek(&c, g, 0);
    for (int64_t pos = 0; pos < g->numel;) {
        int64_t off[CPU_MAX_OPS];
        const int64_t n = cpu_cursor_next(&c, g, g->numel - pos, off);
        const i64 *t = (const i64 *)cpu_geom_ptr(g, 1, off[1]);
        for (int64_t k = 0; k < n; k++)
            if (t[k * s] != r->ignore && (t[k * s] < 0 || t[k * s] >= r->classes))
                return cpu_fail(AG_ERR_INDEX,
                                "cross_entropy: Target %lld is out of bounds (%lld classes, "
                                "ignore_index %lld).",
                                (long long)t[k * s], (long long)r->classes, (long long)r->ignore);
        pos += n;
    }
    return AG_OK;
}

/* The cross_entropy kernel for dtype `dtype`, with position loop `loop`. */
static ag_status run_cross_entropy(const ag_kernel_args *args, ag_dtype dtype, cpu_loop_fn loop) {
    ag_status st = cpu_check_args(args, "cross_entropy", 2, 1);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *x = &args->inputs[0], *t = &args->inputs[1], *out = &args->outputs[0];
    if ((st = cpu_check_dtype("cross_entropy", x, "logits", dtype)) != AG_OK ||
        (st = cpu_check_dtype("cross_entropy", out, "output", dtype)) != AG_OK ||
        (st = cpu_check_like("cross_entropy", t, "target", AG_I64, out)) != AG_OK ||
        (st = cpu_check_dim("cross_entropy", x, args->attrs->ints[0])) != AG_OK)
        return st;
    const int cdim = (int)args->attrs->ints[0];
    /* The output's shape is the logits' without the class dim. */
    bool fits = out->ndim == x->ndim - 1;
    for (int d = 0; fits && d < out->ndim; d++) fits = out->shape[d] == x->shape[d + (d >= cdim)];
    if (!fits) {
        char a[160], b[160];
        return cpu_fail(AG_ERR_SHAPE,
                        "cross_entropy: logits %s without class dim %d do not give the output "
                        "shape %s",
                        cpu_shape_str(x, a, sizeof a), cdim, cpu_shape_str(out, b, sizeof b));
    }
    const double eps = args->attrs->reals[0];
    if (!(eps >= 0 && eps <= 1))
        return cpu_fail(AG_ERR_INVALID_ARG,
                        "cross_entropy: label_smoothing must be between 0.0 and 1.0, got %g", eps);
    if (cpu_numel(out) == 0) return AG_OK;

    ce_row row = {x->shape[cdim], x->strides[cdim], args->attrs->ints[1], eps};
    int64_t xs[AG_MAX_DIMS];
    for (int d = 0; d < out->ndim; d++) xs[d] = x->strides[d + (d >= cdim)];
    cpu_geom g;
    cpu_geom_init(&g, out->ndim, out->shape);
    cpu_geom_add(&g, out, NULL);
    cpu_geom_add(&g, t, NULL);
    cpu_geom_add(&g, x, xs);
    cpu_geom_coalesce(&g);
    if ((st = ce_check_targets(&g, &row)) != AG_OK) return st;
    cpu_geom_run(&g, g.numel * (row.classes + 1) * 3, loop, &row);
    return AG_OK;
}

#define DEFINE_CROSS_ENTROPY(T)                                                                    \
    static ag_status cross_entropy_##T(const ag_kernel_args *args) {                               \
        return run_cross_entropy(args, CPU_DTYPE_##T, ce_loop_##T);                                \
    }
CPU_FOR_F(DEFINE_CROSS_ENTROPY)

const cpu_kernel_entry cpu_nn_kernels[] = {
    CPU_ENTRY_F("layer_norm", layer_norm),
    CPU_ENTRY_F("cross_entropy", cross_entropy),
    {NULL, AG_F32, NULL},
};
