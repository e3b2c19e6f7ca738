/* Creation: empty, zeros, ones, full, *_like, scalars and arange. Filling runs the
 * backend's "fill" kernel so values are written where the tensor lives. */
#include <math.h>
#include "ops_common.h"

/* Writes value into every element of t (any strides), outside the graph. */
static ag_status fill_tensor(ag_op_def *op, ag_tensor *t, double value) {
    /* Converting NaN, inf or a double beyond int64 to int64 is undefined behaviour; only
     * int64 tensors read ints[0], so only they refuse such a value. */
    bool fits = value >= (double)INT64_MIN && value < -(double)INT64_MIN; /* [-2^63, 2^63) */
    if (!fits && t->dtype == AG_I64)
        return ag__error(AG_ERR_INVALID_ARG, "fill: value %g cannot be converted to int64", value);
    ag_attrs at = {.ints = {fits ? (int64_t)value : 0}, .reals = {value}};
    ag_kernel_tensor kt;
    ag__kt(t, &kt);
    return ag__run_kernel(op, t->storage->device, t->dtype, 0, NULL, 1, &kt, &at);
}

/* full_like as an op: one input giving shape, dtype and device; never differentiable. */
static ag_status full_like_forward(ag_op_ctx *ctx) {
    ag_tensor *in = ctx->inputs[0];
    ag_tensor *out = ag__tensor_alloc(in->dtype, in->ndim, in->shape, in->storage->device);
    if (!out) return ag_last_status();
    ag_status st = fill_tensor((ag_op_def *)ctx->op, out, ctx->attrs->reals[0]);
    if (st != AG_OK) {
        ag_release(out);
        return st;
    }
    ctx->outputs[0] = out;
    return AG_OK;
}
static ag_op_def op_full_like = {.name = "full_like",
                                 .kernel = "fill",
                                 .n_inputs = 1,
                                 .n_outputs = 1,
                                 .flags = AG_OPF_NONDIFF,
                                 .forward = full_like_forward};

ag_status ag__fill(ag_tensor *t, double value) {
    return fill_tensor(&op_full_like, t, value);
}

ag_tensor *ag_empty(ag_dtype dtype, int ndim, const int64_t *shape) {
    return ag__scope_adopt(ag__tensor_alloc(dtype, ndim, shape, ag_default_device()));
}

ag_tensor *ag_full(ag_dtype dtype, int ndim, const int64_t *shape, double value) {
    ag_tensor *t = ag__tensor_alloc(dtype, ndim, shape, ag_default_device());
    if (t && ag__fill(t, value) != AG_OK) {
        ag_release(t);
        return NULL;
    }
    return ag__scope_adopt(t);
}

ag_tensor *ag_zeros(ag_dtype dtype, int ndim, const int64_t *shape) {
    return ag_full(dtype, ndim, shape, 0.0);
}

ag_tensor *ag_ones(ag_dtype dtype, int ndim, const int64_t *shape) {
    return ag_full(dtype, ndim, shape, 1.0);
}

ag_tensor *ag_full_like(const ag_tensor *t, double value) {
    ag_attrs at = {.reals = {value}};
    ag_tensor *in = (ag_tensor *)t;
    return ag__dispatch1(&op_full_like, 1, &in, &at);
}

ag_tensor *ag_zeros_like(const ag_tensor *t) {
    return ag_full_like(t, 0.0);
}

ag_tensor *ag_ones_like(const ag_tensor *t) {
    return ag_full_like(t, 1.0);
}

ag_tensor *ag__scalar_on(ag_dtype dtype, double value, ag_device device) {
    ag_tensor *t = ag__tensor_alloc(dtype, 0, NULL, device);
    if (t && ag__fill(t, value) != AG_OK) {
        ag_release(t);
        return NULL;
    }
    return ag__scope_adopt(t);
}

ag_tensor *ag_scalar(ag_dtype dtype, double value) {
    return ag__scalar_on(dtype, value, ag_default_device());
}

static ag_status arange_forward(ag_op_ctx *ctx) {
    const ag_attrs *at = ctx->attrs;
    int64_t n = at->ints[1];
    ag_tensor *out = ag__tensor_alloc((ag_dtype)at->ints[0], 1, &n, ag_default_device());
    ag_attrs kat = {.ints = {(int64_t)at->reals[0], (int64_t)at->reals[1]},
                    .reals = {at->reals[0], at->reals[1]}};
    return ag__forward_kernel(ctx, (ag_dtype)at->ints[0], NULL, out, NULL, &kat);
}
static ag_op_def op_arange = {.name = "arange",
                              .kernel = "arange",
                              .n_inputs = 0,
                              .n_outputs = 1,
                              .flags = AG_OPF_NONDIFF,
                              .forward = arange_forward};

ag_tensor *ag_arange(ag_dtype dtype, double start, double end, double step) {
    if (step == 0 || !isfinite(start) || !isfinite(end) || !isfinite(step)) {
        ag__error(AG_ERR_INVALID_ARG, "arange: invalid range start=%g end=%g step=%g", start, end,
                  step);
        return NULL;
    }
    double count = ceil((end - start) / step);
    if (count >= 0x1p62) {
        ag__error(AG_ERR_SHAPE, "arange: start=%g end=%g step=%g gives too many elements", start,
                  end, step);
        return NULL;
    }
    ag_attrs at = {.ints = {dtype, count > 0 ? (int64_t)count : 0}, .reals = {start, step}};
    return ag__dispatch1(&op_arange, 0, NULL, &at);
}

ag_status ag__register_creation_ops(void) {
    static ag_op_def *const ops[] = {&op_full_like, &op_arange};
    return ag__register_all(ops, 2);
}
