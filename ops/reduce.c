/* Reductions: sum, max/min values and argmax/argmin run backend kernels; mean, var, norm
 * and sum_to_shape are composed of them. The reduction ops take the reduced dims as a
 * bitmask in attrs.ints[0] and keepdim in ints[1] (see ag__forward_reduce). */
#include <math.h>
#include <string.h>
#include "ops_common.h"

/* ---- shared helpers ---- */

/* Runs a reduction op over the dims in mask. */
static ag_tensor *reduce_op(ag_op_def *op, ag_tensor *a, uint64_t mask, bool keepdim) {
    ag_attrs at = {.ints = {(int64_t)mask, keepdim}};
    return ag__dispatch1(op, 1, &a, &at);
}

/* Checks the input of a public reduction and turns its dims list into a bitmask (n_dims 0:
 * every dim); float_only refuses int64 inputs with PyTorch's wording. False on error. */
static bool reduce_args(const char *op, const ag_tensor *a, int n_dims, const int *dims,
                        bool float_only, uint64_t *mask) {
    if (!a) {
        ag__error_if_none(AG_ERR_INVALID_ARG, "%s: input 0 is NULL", op);
        return false;
    }
    if (float_only && a->dtype == AG_I64) {
        ag__error(AG_ERR_DTYPE,
                  "%s(): could not infer output dtype. Input dtype must be either a floating "
                  "point or complex dtype. Got: Long (int64)",
                  op);
        return false;
    }
    if (n_dims < 0 || (n_dims > 0 && !dims)) {
        ag__error(AG_ERR_INVALID_ARG, "%s: invalid dims list (n_dims %d, dims %p)", op, n_dims,
                  (const void *)dims);
        return false;
    }
    const uint64_t all = (UINT64_C(1) << a->ndim) - 1;
    if (n_dims == 0) {
        *mask = all;
        return true;
    }
    uint64_t seen = 0;
    for (int i = 0; i < n_dims; i++) {
        int d;
        if (ag__wrap_dim(op, dims[i], a->ndim, &d) != AG_OK) return false;
        if (seen >> d & 1) {
            ag__error(AG_ERR_INVALID_ARG, "%s: dim %d appears multiple times in the list of dims",
                      op, d);
            return false;
        }
        seen |= UINT64_C(1) << d;
    }
    /* A 0-dim tensor accepts dim 0 or -1 but has no dim to reduce. */
    *mask = seen & all;
    return true;
}

/* Number of elements one output element of a reduction over mask sums. */
static int64_t reduced_count(const ag_tensor *a, uint64_t mask) {
    int64_t n = 1;
    for (int d = 0; d < a->ndim; d++)
        if (mask >> d & 1) n *= a->shape[d];
    return n;
}

/* Error if a reduction without identity (max, argmax) would reduce an empty dim. */
static bool check_nonempty(const char *op, const ag_tensor *a, uint64_t mask) {
    for (int d = 0; d < a->ndim; d++)
        if (mask >> d & 1 && a->shape[d] == 0) {
            char s[160];
            ag__error(AG_ERR_SHAPE,
                      "%s(): Expected reduction dim %d to have non-zero size (input shape %s): "
                      "the operation has no identity",
                      op, d, ag__shape_fmt(s, sizeof s, a->ndim, a->shape));
            return false;
        }
    return true;
}

/* A reduction's gradient g reshaped to the input's rank (extent 1 in reduced dims), so it
 * broadcasts against the input. */
static ag_tensor *grad_keepdim(const ag_backward_ctx *ctx, ag_tensor *g) {
    const ag_attrs *at = ag__bw_attrs(ctx);
    if (at->ints[1]) return g;
    const ag_meta *m = IN_META(ctx, 0);
    int64_t shape[AG_MAX_DIMS];
    for (int d = 0; d < m->ndim; d++) shape[d] = (uint64_t)at->ints[0] >> d & 1 ? 1 : m->shape[d];
    return ag_reshape(g, m->ndim, shape);
}

/* ---- sum ---- */

static ag_status sum_backward(ag_backward_ctx *ctx) {
    const ag_meta *m = IN_META(ctx, 0);
    ctx->grad_inputs[0] = ag_expand(grad_keepdim(ctx, GRAD_OUT(ctx)), m->ndim, m->shape);
    return AG_OK;
}
static ag_op_def op_sum = {.name = "sum",
                           .kernel = "sum",
                           .n_inputs = 1,
                           .n_outputs = 1,
                           .flags = AG_OPF_AUTOCAST_F32,
                           .forward = ag__forward_reduce,
                           .backward = sum_backward,
                           .jvp = ag__jvp_linear};

/* Sum over dims (int64 stays int64). */
ag_tensor *ag_sum(ag_tensor *a, int n_dims, const int *dims, bool keepdim) {
    uint64_t mask;
    if (!reduce_args("sum", a, n_dims, dims, false, &mask)) return NULL;
    return reduce_op(&op_sum, a, mask, keepdim);
}

/* ---- mean and var ---- */

/* t divided by n as a tensor op, so n = 0 gives inf/NaN as IEEE (and PyTorch) do. */
static ag_tensor *div_count(ag_tensor *t, double n) {
    return ag_div(t, ag__scalar_like(t, n));
}

/* mean over mask; opens no scope (callers do). */
static ag_tensor *mean_mask(ag_tensor *a, uint64_t mask, bool keepdim) {
    return div_count(reduce_op(&op_sum, a, mask, keepdim), (double)reduced_count(a, mask));
}

/* Mean over dims: sum / count (NaN for an empty reduction); float only. */
ag_tensor *ag_mean(ag_tensor *a, int n_dims, const int *dims, bool keepdim) {
    uint64_t mask;
    if (!reduce_args("mean", a, n_dims, dims, true, &mask)) return NULL;
    ag_scope *scope = ag_scope_begin();
    return ag_scope_return(scope, mean_mask(a, mask, keepdim));
}

/* Variance: sum((x - mean)^2) / max(N - correction, 0); float only. */
ag_tensor *ag_var(ag_tensor *a, int n_dims, const int *dims, double correction, bool keepdim) {
    uint64_t mask;
    if (!reduce_args("var", a, n_dims, dims, true, &mask)) return NULL;
    ag_scope *scope = ag_scope_begin();
    ag_tensor *dev = ag_sub(a, mean_mask(a, mask, true));
    ag_tensor *ss = reduce_op(&op_sum, ag_mul(dev, dev), mask, keepdim);
    /* PyTorch clamps the divisor at 0: too large a correction gives inf (or NaN for 0/0). */
    double divisor = fmax((double)reduced_count(a, mask) - correction, 0.0);
    return ag_scope_return(scope, div_count(ss, divisor));
}

/* ---- max and min values ---- */

/* torch.amax/amin backward: the gradient is split evenly between the tied extremes. The
 * extreme is recomputed from the saved input (saving the output would make a cycle). */
static ag_status extreme_backward(ag_backward_ctx *ctx) {
    ag_tensor *x = SAVED(ctx, 0);
    ag_tensor *ext = reduce_op(ctx->node->op, x, (uint64_t)ag__bw_attrs(ctx)->ints[0], true);
    ag_tensor *hit = ag_eq(x, ext);
    ag_tensor *ties = reduce_op(&op_sum, hit, (uint64_t)ag__bw_attrs(ctx)->ints[0], true);
    ctx->grad_inputs[0] = ag_div(ag_mul(hit, grad_keepdim(ctx, GRAD_OUT(ctx))), ties);
    return AG_OK;
}
/* The tangent of amax/amin: the mean of the tangent over the tied extremes (PyTorch's
 * evenly distributed forward rule, matching extreme_backward). */
static ag_status extreme_jvp(ag_jvp_ctx *ctx) {
    ag_tensor *x = PRIMAL(ctx, 0);
    const uint64_t mask = (uint64_t)ctx->attrs->ints[0];
    const bool keepdim = ctx->attrs->ints[1] != 0;
    ag_tensor *hit = ag_eq(x, reduce_op((ag_op_def *)ctx->op, x, mask, true));
    ag_tensor *picked = reduce_op(&op_sum, ag_mul(hit, TANGENT(ctx, 0)), mask, keepdim);
    ctx->output_tangents[0] = ag_div(picked, reduce_op(&op_sum, hit, mask, keepdim));
    return AG_OK;
}
static ag_op_def op_max = {.name = "max",
                           .kernel = "max",
                           .n_inputs = 1,
                           .n_outputs = 1,
                           .save_inputs = 1,
                           .forward = ag__forward_reduce,
                           .backward = extreme_backward,
                           .jvp = extreme_jvp};
static ag_op_def op_min = {.name = "min",
                           .kernel = "min",
                           .n_inputs = 1,
                           .n_outputs = 1,
                           .save_inputs = 1,
                           .forward = ag__forward_reduce,
                           .backward = extreme_backward,
                           .jvp = extreme_jvp};

/* max or min over dims. */
static ag_tensor *extreme(ag_op_def *op, ag_tensor *a, int n_dims, const int *dims, bool keepdim) {
    uint64_t mask;
    if (!reduce_args(op->name, a, n_dims, dims, false, &mask) || !check_nonempty(op->name, a, mask))
        return NULL;
    return reduce_op(op, a, mask, keepdim);
}

/* Max values over dims (torch.amax). */
ag_tensor *ag_max(ag_tensor *a, int n_dims, const int *dims, bool keepdim) {
    return extreme(&op_max, a, n_dims, dims, keepdim);
}

/* Min values over dims (torch.amin). */
ag_tensor *ag_min(ag_tensor *a, int n_dims, const int *dims, bool keepdim) {
    return extreme(&op_min, a, n_dims, dims, keepdim);
}

/* ---- argmax and argmin ---- */

/* The kernel reduces exactly dim ints[0] into an int64 output of keepdim shape; the public
 * functions squeeze or reshape it. */
static ag_status arg_forward(ag_op_ctx *ctx) {
    ag_tensor *in = ctx->inputs[0];
    int dim = (int)ctx->attrs->ints[0];
    int64_t shape[AG_MAX_DIMS];
    memcpy(shape, in->shape, sizeof shape);
    shape[dim] = 1;
    ag_kernel_tensor kin;
    ag__kt(in, &kin);
    return ag__forward_kernel(ctx, in->dtype, &kin,
                              ag__tensor_alloc(AG_I64, in->ndim, shape, in->storage->device), NULL,
                              ctx->attrs);
}
static ag_op_def op_argmax = {.name = "argmax",
                              .kernel = "argmax",
                              .n_inputs = 1,
                              .n_outputs = 1,
                              .flags = AG_OPF_NONDIFF,
                              .forward = arg_forward};
static ag_op_def op_argmin = {.name = "argmin",
                              .kernel = "argmin",
                              .n_inputs = 1,
                              .n_outputs = 1,
                              .flags = AG_OPF_NONDIFF,
                              .forward = arg_forward};

/* argmax or argmin along dim, or over all elements (flatten; result of shape [] or, with
 * keepdim, all ones as torch.argmax(dim=None, keepdim=True)). */
static ag_tensor *arg_extreme(ag_op_def *op, ag_tensor *a, int dim, bool keepdim, bool flatten) {
    int d = 0;
    if (!a) return ag__dispatch1(op, 1, &a, NULL);
    if (!flatten && ag__wrap_dim(op->name, dim, a->ndim, &d) != AG_OK) return NULL;
    if (!check_nonempty(op->name, a, flatten ? (UINT64_C(1) << a->ndim) - 1 : UINT64_C(1) << d))
        return NULL;
    ag_attrs at = {.ints = {d}};
    ag_scope *scope = ag_scope_begin();
    ag_tensor *r;
    if (!flatten && a->ndim > 0) {
        r = ag__dispatch1(op, 1, &a, &at);
        if (!keepdim) r = ag_squeeze(r, d);
    } else {
        /* The kernel needs a dim to reduce: a 0-dim input is flattened to one element too. */
        static const int64_t ones[AG_MAX_DIMS] = {1, 1, 1, 1, 1, 1, 1, 1}, flat = -1;
        r = ag__dispatch1(op, 1, (ag_tensor *[]){ag_reshape(a, 1, &flat)}, &at);
        r = ag_reshape(r, keepdim ? a->ndim : 0, ones);
    }
    return ag_scope_return(scope, r);
}

/* Index of the first max along dim, or over all elements. */
ag_tensor *ag_argmax(ag_tensor *a, int dim, bool keepdim, bool flatten) {
    return arg_extreme(&op_argmax, a, dim, keepdim, flatten);
}

/* Index of the first min along dim, or over all elements. */
ag_tensor *ag_argmin(ag_tensor *a, int dim, bool keepdim, bool flatten) {
    return arg_extreme(&op_argmin, a, dim, keepdim, flatten);
}

/* ---- norm ---- */

/* t ** e with the value and the gradient taken as 0 where t == 0: the plain power has an
 * infinite derivative there (e < 1), which would turn into NaN gradients; PyTorch's norm
 * backward masks those to 0 the same way. */
static ag_tensor *pow_zero_safe(ag_tensor *t, double e) {
    ag_tensor *zero = ag__scalar_like(t, 0.0), *is_zero = ag_eq(t, zero);
    ag_tensor *safe = ag_where(is_zero, ag__scalar_like(t, 1.0), t);
    return ag_where(is_zero, zero, ag_pow_scalar(safe, e));
}

/* p-norm over dims, composed of abs/pow/sum (p = inf: max of abs). */
ag_tensor *ag_norm(ag_tensor *a, double p, int n_dims, const int *dims, bool keepdim) {
    uint64_t mask;
    if (!reduce_args("norm", a, n_dims, dims, true, &mask)) return NULL;
    if (!(p > 0)) {
        ag__error(AG_ERR_INVALID_ARG, "norm: p must be > 0, got %g", p);
        return NULL;
    }
    if (isinf(p) && !check_nonempty("norm", a, mask)) return NULL;
    ag_scope *scope = ag_scope_begin();
    ag_tensor *r;
    if (isinf(p))
        r = reduce_op(&op_max, ag_abs(a), mask, keepdim);
    else if (p == 1)
        r = reduce_op(&op_sum, ag_abs(a), mask, keepdim);
    else if (p == 2)
        r = pow_zero_safe(reduce_op(&op_sum, ag_mul(a, a), mask, keepdim), 0.5);
    else {
        ag_tensor *mag = ag_abs(a);
        ag_tensor *powered = p < 1 ? pow_zero_safe(mag, p) : ag_pow_scalar(mag, p);
        r = pow_zero_safe(reduce_op(&op_sum, powered, mask, keepdim), 1.0 / p);
    }
    return ag_scope_return(scope, r);
}

/* ---- sum_to_shape ---- */

/* Sums a over broadcast dims down to shape; a itself when the shapes are equal. */
ag_tensor *ag_sum_to_shape(ag_tensor *a, int ndim, const int64_t *shape) {
    if (!a) {
        ag__error_if_none(AG_ERR_INVALID_ARG, "sum_to_shape: input 0 is NULL");
        return NULL;
    }
    if (ndim < 0 || ndim > AG_MAX_DIMS || (ndim > 0 && !shape)) {
        ag__error(AG_ERR_INVALID_ARG, "sum_to_shape: invalid target shape (ndim %d)", ndim);
        return NULL;
    }
    /* Fast path first: every broadcasting backward calls this, mostly with equal shapes. */
    if (ndim == a->ndim &&
        (ndim == 0 || memcmp(shape, a->shape, (size_t)ndim * sizeof *shape) == 0))
        return ag__scope_adopt(ag_retain(a));
    const int lead = a->ndim - ndim;
    bool ok = lead >= 0;
    const uint64_t lead_mask = ok ? (UINT64_C(1) << lead) - 1 : 0;
    uint64_t mask = lead_mask;
    for (int d = 0; ok && d < ndim; d++) {
        if (shape[d] == 1 && a->shape[lead + d] != 1)
            mask |= UINT64_C(1) << (lead + d);
        else
            ok = shape[d] == a->shape[lead + d];
    }
    if (!ok) {
        char s[160], t[160];
        ag__error(AG_ERR_SHAPE, "sum_to_shape: a tensor of shape %s cannot be summed to shape %s",
                  ag__shape_fmt(s, sizeof s, a->ndim, a->shape),
                  ag__shape_fmt(t, sizeof t, ndim, shape));
        return NULL;
    }
    /* Only leading dims summed: keepdim=false drops them, no reshape needed. */
    if (mask == lead_mask) return reduce_op(&op_sum, a, mask, false);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *r = reduce_op(&op_sum, a, mask, true);
    return ag_scope_return(scope, lead ? ag_reshape(r, ndim, shape) : r);
}

/* Registers the reduction ops. */
ag_status ag__register_reduce_ops(void) {
    static ag_op_def *const ops[] = {&op_sum, &op_max, &op_min, &op_argmax, &op_argmin};
    return ag__register_all(ops, (int)(sizeof ops / sizeof ops[0]));
}
