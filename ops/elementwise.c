/* Elementwise ops: arithmetic, math functions, activations, comparisons, where, dtype and
 * device conversion. Forward runs one backend kernel over broadcast inputs; backward is
 * written in ag ops (derivative formulas as in PyTorch's derivatives.yaml). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "ops_common.h"

/* ---- shared helpers ---- */

ag_tensor *ag__sum_to_input(const ag_backward_ctx *ctx, int i, ag_tensor *t) {
    const ag_meta *m = IN_META(ctx, i);
    return ag_sum_to_shape(t, m->ndim, m->shape);
}

ag_tensor *ag__scalar_like(const ag_tensor *t, double value) {
    if (!t) return NULL;
    return ag__scalar_on(t->dtype, value, t->storage->device);
}

ag_tensor *ag__jvp_sum(ag_tensor *a, ag_tensor *b) {
    return a && b ? ag_add(a, b) : a ? a : b;
}

/* Runs a one-input op, or a two-input op after promoting both inputs to one dtype. */
static ag_tensor *unary(ag_op_def *op, ag_tensor *a, const ag_attrs *attrs) {
    return ag__dispatch1(op, 1, &a, attrs);
}

static ag_tensor *binary(ag_op_def *op, ag_tensor *a, ag_tensor *b, bool float_result) {
    if (!a || !b) return ag__dispatch1(op, 2, (ag_tensor *[]){a, b}, NULL);
    ag_dtype dt = ag__promote(a->dtype, b->dtype);
    if (float_result && dt == AG_I64) dt = AG_F32; /* true division, as torch.div */
    if (a->dtype == dt && b->dtype == dt) return ag__dispatch1(op, 2, (ag_tensor *[]){a, b}, NULL);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *r =
        ag__dispatch1(op, 2, (ag_tensor *[]){ag_to_dtype(a, dt), ag_to_dtype(b, dt)}, NULL);
    return ag_scope_return(scope, r);
}

/* ---- arithmetic ---- */

static ag_status add_backward(ag_backward_ctx *ctx) {
    ag_tensor *g = GRAD_OUT(ctx);
    if (NEEDS(ctx, 0)) ctx->grad_inputs[0] = ag__sum_to_input(ctx, 0, g);
    if (NEEDS(ctx, 1)) ctx->grad_inputs[1] = ag__sum_to_input(ctx, 1, g);
    return AG_OK;
}

static ag_status sub_backward(ag_backward_ctx *ctx) {
    ag_tensor *g = GRAD_OUT(ctx);
    if (NEEDS(ctx, 0)) ctx->grad_inputs[0] = ag__sum_to_input(ctx, 0, g);
    if (NEEDS(ctx, 1)) ctx->grad_inputs[1] = ag__sum_to_input(ctx, 1, ag_neg(g));
    return AG_OK;
}

static ag_status mul_backward(ag_backward_ctx *ctx) {
    ag_tensor *g = GRAD_OUT(ctx), *a = SAVED(ctx, 0), *b = SAVED(ctx, 1);
    if (NEEDS(ctx, 0)) ctx->grad_inputs[0] = ag__sum_to_input(ctx, 0, ag_mul(g, b));
    if (NEEDS(ctx, 1)) ctx->grad_inputs[1] = ag__sum_to_input(ctx, 1, ag_mul(g, a));
    return AG_OK;
}

static ag_status div_backward(ag_backward_ctx *ctx) {
    ag_tensor *g = GRAD_OUT(ctx), *a = SAVED(ctx, 0), *b = SAVED(ctx, 1);
    if (NEEDS(ctx, 0)) ctx->grad_inputs[0] = ag__sum_to_input(ctx, 0, ag_div(g, b));
    if (NEEDS(ctx, 1))
        ctx->grad_inputs[1] = ag__sum_to_input(ctx, 1, ag_neg(ag_div(ag_mul(g, a), ag_mul(b, b))));
    return AG_OK;
}

static ag_status pow_backward(ag_backward_ctx *ctx) {
    ag_tensor *g = GRAD_OUT(ctx), *a = SAVED(ctx, 0), *b = SAVED(ctx, 1);
    if (NEEDS(ctx, 0)) {
        /* b * a^(b-1) is 0 * 0^-1 = NaN at b == 0; PyTorch defines the derivative as 0. */
        ag_tensor *zero = ag__scalar_like(b, 0.0);
        ag_tensor *d = ag_mul(b, ag_pow(a, ag_sub(b, ag__scalar_like(b, 1.0))));
        ctx->grad_inputs[0] =
            ag__sum_to_input(ctx, 0, ag_mul(g, ag_where(ag_eq(b, zero), zero, d)));
    }
    if (NEEDS(ctx, 1)) {
        /* d/db a^b = a^b log a; PyTorch defines it as 0 where a == 0 (and b >= 0). */
        ag_tensor *zero = ag__scalar_like(a, 0.0);
        ag_tensor *safe_log = ag_log(ag_where(ag_eq(a, zero), ag__scalar_like(a, 1.0), a));
        ctx->grad_inputs[1] = ag__sum_to_input(ctx, 1, ag_mul(g, ag_mul(ag_pow(a, b), safe_log)));
    }
    return AG_OK;
}

/* Gradient share of `self` in maximum/minimum: 1 where it wins, 1/2 on ties. */
static ag_tensor *winner_mask(ag_tensor *self, ag_tensor *other, bool max) {
    ag_tensor *wins = max ? ag_gt(self, other) : ag_lt(self, other);
    return ag_add(wins, ag_mul_scalar(ag_eq(self, other), 0.5));
}

static ag_status maximum_backward(ag_backward_ctx *ctx) {
    ag_tensor *g = GRAD_OUT(ctx), *a = SAVED(ctx, 0), *b = SAVED(ctx, 1);
    if (NEEDS(ctx, 0))
        ctx->grad_inputs[0] = ag__sum_to_input(ctx, 0, ag_mul(g, winner_mask(a, b, true)));
    if (NEEDS(ctx, 1))
        ctx->grad_inputs[1] = ag__sum_to_input(ctx, 1, ag_mul(g, winner_mask(b, a, true)));
    return AG_OK;
}

static ag_status minimum_backward(ag_backward_ctx *ctx) {
    ag_tensor *g = GRAD_OUT(ctx), *a = SAVED(ctx, 0), *b = SAVED(ctx, 1);
    if (NEEDS(ctx, 0))
        ctx->grad_inputs[0] = ag__sum_to_input(ctx, 0, ag_mul(g, winner_mask(a, b, false)));
    if (NEEDS(ctx, 1))
        ctx->grad_inputs[1] = ag__sum_to_input(ctx, 1, ag_mul(g, winner_mask(b, a, false)));
    return AG_OK;
}

/* Forward rules: tangents ta, tb of a and b (NULL: zero); the result is broadcast to the
 * output's shape by the caller (core/forward_ad.c). */
static ag_status add_jvp(ag_jvp_ctx *ctx) {
    ctx->output_tangents[0] = ag__jvp_sum(TANGENT(ctx, 0), TANGENT(ctx, 1));
    return AG_OK;
}

static ag_status sub_jvp(ag_jvp_ctx *ctx) {
    ag_tensor *ta = TANGENT(ctx, 0), *tb = TANGENT(ctx, 1);
    ctx->output_tangents[0] = ta && tb ? ag_sub(ta, tb) : ta ? ta : ag_neg(tb);
    return AG_OK;
}

static ag_status mul_jvp(ag_jvp_ctx *ctx) {
    ag_tensor *ta = TANGENT(ctx, 0), *tb = TANGENT(ctx, 1);
    ctx->output_tangents[0] =
        ag__jvp_sum(ta ? ag_mul(ta, PRIMAL(ctx, 1)) : NULL, tb ? ag_mul(PRIMAL(ctx, 0), tb) : NULL);
    return AG_OK;
}

static ag_status div_jvp(ag_jvp_ctx *ctx) {
    ag_tensor *ta = TANGENT(ctx, 0), *tb = TANGENT(ctx, 1), *a = PRIMAL(ctx, 0),
              *b = PRIMAL(ctx, 1);
    ag_tensor *from_b = tb ? ag_neg(ag_div(ag_mul(tb, a), ag_mul(b, b))) : NULL;
    ctx->output_tangents[0] = ag__jvp_sum(ta ? ag_div(ta, b) : NULL, from_b);
    return AG_OK;
}

/* The same zero conventions as pow_backward. */
static ag_status pow_jvp(ag_jvp_ctx *ctx) {
    ag_tensor *ta = TANGENT(ctx, 0), *tb = TANGENT(ctx, 1), *a = PRIMAL(ctx, 0),
              *b = PRIMAL(ctx, 1);
    ag_tensor *from_a = NULL, *from_b = NULL;
    if (ta) {
        ag_tensor *zero = ag__scalar_like(b, 0.0);
        ag_tensor *d = ag_mul(b, ag_pow(a, ag_sub(b, ag__scalar_like(b, 1.0))));
        from_a = ag_mul(ta, ag_where(ag_eq(b, zero), zero, d));
    }
    if (tb) {
        ag_tensor *zero = ag__scalar_like(a, 0.0);
        ag_tensor *safe_log = ag_log(ag_where(ag_eq(a, zero), ag__scalar_like(a, 1.0), a));
        from_b = ag_mul(tb, ag_mul(ctx->outputs[0], safe_log));
    }
    ctx->output_tangents[0] = ag__jvp_sum(from_a, from_b);
    return AG_OK;
}

static ag_status extreme_jvp(ag_jvp_ctx *ctx, bool max) {
    ag_tensor *ta = TANGENT(ctx, 0), *tb = TANGENT(ctx, 1), *a = PRIMAL(ctx, 0),
              *b = PRIMAL(ctx, 1);
    ctx->output_tangents[0] = ag__jvp_sum(ta ? ag_mul(ta, winner_mask(a, b, max)) : NULL,
                                          tb ? ag_mul(tb, winner_mask(b, a, max)) : NULL);
    return AG_OK;
}
static ag_status maximum_jvp(ag_jvp_ctx *ctx) {
    return extreme_jvp(ctx, true);
}
static ag_status minimum_jvp(ag_jvp_ctx *ctx) {
    return extreme_jvp(ctx, false);
}

#define BINARY_DEF(var, op_name, bw, fw, saves, fl)                                                \
    static ag_op_def var = {.name = op_name,                                                       \
                            .kernel = op_name,                                                     \
                            .n_inputs = 2,                                                         \
                            .n_outputs = 1,                                                        \
                            .flags = fl,                                                           \
                            .save_inputs = saves,                                                  \
                            .forward = ag__forward_elementwise,                                    \
                            .backward = bw,                                                        \
                            .jvp = fw}
BINARY_DEF(op_add, "add", add_backward, add_jvp, 0, 0);
BINARY_DEF(op_sub, "sub", sub_backward, sub_jvp, 0, 0);
BINARY_DEF(op_mul, "mul", mul_backward, mul_jvp, 3, 0);
BINARY_DEF(op_div, "div", div_backward, div_jvp, 3, 0);
BINARY_DEF(op_pow, "pow", pow_backward, pow_jvp, 3, AG_OPF_AUTOCAST_F32);
BINARY_DEF(op_maximum, "maximum", maximum_backward, maximum_jvp, 3, 0);
BINARY_DEF(op_minimum, "minimum", minimum_backward, minimum_jvp, 3, 0);

#define COMPARE_DEF(var, op_name)                                                                  \
    static ag_op_def var = {.name = op_name,                                                       \
                            .kernel = op_name,                                                     \
                            .n_inputs = 2,                                                         \
                            .n_outputs = 1,                                                        \
                            .flags = AG_OPF_NONDIFF,                                               \
                            .forward = ag__forward_elementwise}
COMPARE_DEF(op_eq, "eq");
COMPARE_DEF(op_ne, "ne");
COMPARE_DEF(op_lt, "lt");
COMPARE_DEF(op_le, "le");
COMPARE_DEF(op_gt, "gt");
COMPARE_DEF(op_ge, "ge");

ag_tensor *ag_add(ag_tensor *a, ag_tensor *b) {
    return binary(&op_add, a, b, false);
}
ag_tensor *ag_sub(ag_tensor *a, ag_tensor *b) {
    return binary(&op_sub, a, b, false);
}
ag_tensor *ag_mul(ag_tensor *a, ag_tensor *b) {
    return binary(&op_mul, a, b, false);
}
ag_tensor *ag_div(ag_tensor *a, ag_tensor *b) {
    return binary(&op_div, a, b, true);
}
ag_tensor *ag_pow(ag_tensor *a, ag_tensor *b) {
    return binary(&op_pow, a, b, false);
}
ag_tensor *ag_maximum(ag_tensor *a, ag_tensor *b) {
    return binary(&op_maximum, a, b, false);
}
ag_tensor *ag_minimum(ag_tensor *a, ag_tensor *b) {
    return binary(&op_minimum, a, b, false);
}
ag_tensor *ag_eq(ag_tensor *a, ag_tensor *b) {
    return binary(&op_eq, a, b, false);
}
ag_tensor *ag_ne(ag_tensor *a, ag_tensor *b) {
    return binary(&op_ne, a, b, false);
}
ag_tensor *ag_lt(ag_tensor *a, ag_tensor *b) {
    return binary(&op_lt, a, b, false);
}
ag_tensor *ag_le(ag_tensor *a, ag_tensor *b) {
    return binary(&op_le, a, b, false);
}
ag_tensor *ag_gt(ag_tensor *a, ag_tensor *b) {
    return binary(&op_gt, a, b, false);
}
ag_tensor *ag_ge(ag_tensor *a, ag_tensor *b) {
    return binary(&op_ge, a, b, false);
}

/* Scalar forms wrap the scalar in a 0-dim tensor of a's dtype, so no promotion happens. */
static ag_tensor *with_scalar(ag_tensor *(*fn)(ag_tensor *, ag_tensor *), ag_tensor *a, double s) {
    if (!a) return fn(a, a);
    ag_scope *scope = ag_scope_begin();
    return ag_scope_return(scope, fn(a, ag__scalar_like(a, s)));
}

ag_tensor *ag_add_scalar(ag_tensor *a, double s) {
    return with_scalar(ag_add, a, s);
}
ag_tensor *ag_mul_scalar(ag_tensor *a, double s) {
    return with_scalar(ag_mul, a, s);
}

/* ---- one-input math ---- */

static ag_status neg_backward(ag_backward_ctx *ctx) {
    ctx->grad_inputs[0] = ag_neg(GRAD_OUT(ctx));
    return AG_OK;
}

/* The other one-input ops are described by their derivative f'(x): backward multiplies the
 * gradient by it, forward mode the tangent (ag__jvp_elementwise). */
static ag_status unary_backward(ag_backward_ctx *ctx) {
    ag_tensor *d = ctx->node->op->derivative(SAVED(ctx, 0), ag__bw_attrs(ctx));
    ctx->grad_inputs[0] = ag_mul(GRAD_OUT(ctx), d);
    return AG_OK;
}

static ag_tensor *exp_derivative(ag_tensor *x, const ag_attrs *at) {
    (void)at;
    return ag_exp(x);
}
static ag_tensor *sqrt_derivative(ag_tensor *x, const ag_attrs *at) {
    (void)at;
    return ag_mul_scalar(ag_rsqrt(x), 0.5);
}
static ag_tensor *rsqrt_derivative(ag_tensor *x, const ag_attrs *at) {
    (void)at;
    return ag_mul_scalar(ag_pow_scalar(x, -1.5), -0.5);
}
static ag_tensor *abs_derivative(ag_tensor *x, const ag_attrs *at) {
    (void)at;
    return ag_sign(x);
}
static ag_tensor *sin_derivative(ag_tensor *x, const ag_attrs *at) {
    (void)at;
    return ag_cos(x);
}
static ag_tensor *cos_derivative(ag_tensor *x, const ag_attrs *at) {
    (void)at;
    return ag_neg(ag_sin(x));
}
static ag_tensor *tanh_derivative(ag_tensor *x, const ag_attrs *at) {
    (void)at;
    ag_tensor *t = ag_tanh(x);
    return ag_add_scalar(ag_neg(ag_mul(t, t)), 1.0);
}
static ag_tensor *erf_derivative(ag_tensor *x, const ag_attrs *at) {
    (void)at;
    return ag_mul_scalar(ag_exp(ag_neg(ag_mul(x, x))), 2.0 / sqrt(M_PI));
}
static ag_tensor *sigmoid_derivative(ag_tensor *x, const ag_attrs *at) {
    (void)at;
    ag_tensor *s = ag_sigmoid(x);
    return ag_mul(s, ag_add_scalar(ag_neg(s), 1.0));
}
static ag_tensor *relu_derivative(ag_tensor *x, const ag_attrs *at) {
    (void)at;
    return ag_gt(x, ag__scalar_like(x, 0.0));
}
/* d/dx x*s(x) = s(x) * (1 + x * (1 - s(x))) */
static ag_tensor *silu_derivative(ag_tensor *x, const ag_attrs *at) {
    (void)at;
    ag_tensor *s = ag_sigmoid(x);
    return ag_mul(s, ag_add_scalar(ag_mul(x, ag_add_scalar(ag_neg(s), 1.0)), 1.0));
}
static ag_tensor *gelu_derivative(ag_tensor *x, const ag_attrs *at) {
    if (at->ints[0]) {
        /* tanh form: u = k(x + c x^3), d = 0.5(1 + t) + 0.5 x (1 - t^2) k (1 + 3c x^2) */
        const double k = sqrt(2.0 / M_PI), c = 0.044715;
        ag_tensor *x2 = ag_mul(x, x);
        ag_tensor *u = ag_mul_scalar(ag_add(x, ag_mul_scalar(ag_mul(x2, x), c)), k);
        ag_tensor *t = ag_tanh(u);
        ag_tensor *du = ag_mul_scalar(ag_add_scalar(ag_mul_scalar(x2, 3 * c), 1.0), k);
        ag_tensor *sech2 = ag_add_scalar(ag_neg(ag_mul(t, t)), 1.0);
        return ag_add(ag_mul_scalar(ag_add_scalar(t, 1.0), 0.5),
                      ag_mul(ag_mul_scalar(x, 0.5), ag_mul(sech2, du)));
    }
    /* exact: d = Phi(x) + x phi(x) */
    ag_tensor *cdf = ag_mul_scalar(ag_add_scalar(ag_erf(ag_mul_scalar(x, M_SQRT1_2)), 1.0), 0.5);
    ag_tensor *pdf =
        ag_mul_scalar(ag_exp(ag_mul_scalar(ag_mul(x, x), -0.5)), 1.0 / sqrt(2.0 * M_PI));
    return ag_add(cdf, ag_mul(x, pdf));
}
static ag_tensor *pow_scalar_derivative(ag_tensor *x, const ag_attrs *at) {
    double p = at->reals[0];
    return p == 0.0 ? ag_zeros_like(x) : ag_mul_scalar(ag_pow_scalar(x, p - 1.0), p);
}
/* The gradient passes where min <= x <= max, as in PyTorch. */
static ag_tensor *clamp_derivative(ag_tensor *x, const ag_attrs *at) {
    ag_tensor *d = at->ints[0] ? ag_ge(x, ag__scalar_like(x, at->reals[0])) : NULL;
    if (at->ints[1]) {
        ag_tensor *below = ag_le(x, ag__scalar_like(x, at->reals[1]));
        d = d ? ag_mul(d, below) : below;
    }
    return d ? d : ag_ones_like(x);
}

/* log divides by x rather than multiplying by 1/x: one rounding, not two. */
static ag_status log_backward(ag_backward_ctx *ctx) {
    ctx->grad_inputs[0] = ag_div(GRAD_OUT(ctx), SAVED(ctx, 0));
    return AG_OK;
}
static ag_status log_jvp(ag_jvp_ctx *ctx) {
    ctx->output_tangents[0] = ag_div(ctx->tangents[0], ctx->inputs[0]);
    return AG_OK;
}

static ag_op_def op_neg = {.name = "neg",
                           .kernel = "neg",
                           .n_inputs = 1,
                           .n_outputs = 1,
                           .forward = ag__forward_elementwise,
                           .backward = neg_backward,
                           .jvp = ag__jvp_linear};
#define UNARY_DEF(var, op_name, deriv, fl)                                                         \
    static ag_op_def var = {.name = op_name,                                                       \
                            .kernel = op_name,                                                     \
                            .n_inputs = 1,                                                         \
                            .n_outputs = 1,                                                        \
                            .flags = fl,                                                           \
                            .save_inputs = 1,                                                      \
                            .forward = ag__forward_elementwise,                                    \
                            .backward = unary_backward,                                            \
                            .jvp = ag__jvp_elementwise,                                            \
                            .derivative = deriv}
UNARY_DEF(op_exp, "exp", exp_derivative, AG_OPF_AUTOCAST_F32);
static ag_op_def op_log = {.name = "log",
                           .kernel = "log",
                           .n_inputs = 1,
                           .n_outputs = 1,
                           .flags = AG_OPF_AUTOCAST_F32,
                           .save_inputs = 1,
                           .forward = ag__forward_elementwise,
                           .backward = log_backward,
                           .jvp = log_jvp};
UNARY_DEF(op_sqrt, "sqrt", sqrt_derivative, 0);
UNARY_DEF(op_rsqrt, "rsqrt", rsqrt_derivative, AG_OPF_AUTOCAST_F32);
UNARY_DEF(op_abs, "abs", abs_derivative, 0);
UNARY_DEF(op_sin, "sin", sin_derivative, 0);
UNARY_DEF(op_cos, "cos", cos_derivative, 0);
UNARY_DEF(op_tanh, "tanh", tanh_derivative, 0);
UNARY_DEF(op_erf, "erf", erf_derivative, 0);
UNARY_DEF(op_sigmoid, "sigmoid", sigmoid_derivative, 0);
UNARY_DEF(op_relu, "relu", relu_derivative, 0);
UNARY_DEF(op_silu, "silu", silu_derivative, 0);
UNARY_DEF(op_gelu, "gelu", gelu_derivative, 0);
UNARY_DEF(op_pow_scalar, "pow_scalar", pow_scalar_derivative, AG_OPF_AUTOCAST_F32);
UNARY_DEF(op_clamp, "clamp", clamp_derivative, 0);
static ag_op_def op_sign = {.name = "sign",
                            .kernel = "sign",
                            .n_inputs = 1,
                            .n_outputs = 1,
                            .flags = AG_OPF_NONDIFF,
                            .forward = ag__forward_elementwise};

ag_tensor *ag_neg(ag_tensor *a) {
    return unary(&op_neg, a, NULL);
}
ag_tensor *ag_exp(ag_tensor *a) {
    return unary(&op_exp, a, NULL);
}
ag_tensor *ag_log(ag_tensor *a) {
    return unary(&op_log, a, NULL);
}
ag_tensor *ag_sqrt(ag_tensor *a) {
    return unary(&op_sqrt, a, NULL);
}
ag_tensor *ag_rsqrt(ag_tensor *a) {
    return unary(&op_rsqrt, a, NULL);
}
ag_tensor *ag_abs(ag_tensor *a) {
    return unary(&op_abs, a, NULL);
}
ag_tensor *ag_sign(ag_tensor *a) {
    return unary(&op_sign, a, NULL);
}
ag_tensor *ag_sin(ag_tensor *a) {
    return unary(&op_sin, a, NULL);
}
ag_tensor *ag_cos(ag_tensor *a) {
    return unary(&op_cos, a, NULL);
}
ag_tensor *ag_tanh(ag_tensor *a) {
    return unary(&op_tanh, a, NULL);
}
ag_tensor *ag_erf(ag_tensor *a) {
    return unary(&op_erf, a, NULL);
}
ag_tensor *ag_sigmoid(ag_tensor *a) {
    return unary(&op_sigmoid, a, NULL);
}
ag_tensor *ag_relu(ag_tensor *a) {
    return unary(&op_relu, a, NULL);
}
ag_tensor *ag_silu(ag_tensor *a) {
    return unary(&op_silu, a, NULL);
}

ag_tensor *ag_gelu(ag_tensor *a, bool approximate_tanh) {
    ag_attrs at = {.ints = {approximate_tanh}};
    return unary(&op_gelu, a, &at);
}

ag_tensor *ag_pow_scalar(ag_tensor *a, double p) {
    ag_attrs at = {.reals = {p}};
    return unary(&op_pow_scalar, a, &at);
}

ag_tensor *ag_clamp(ag_tensor *a, bool has_min, double min, bool has_max, double max) {
    ag_attrs at = {.ints = {has_min, has_max}, .reals = {min, max}};
    return unary(&op_clamp, a, &at);
}

/* ---- where ---- */

static ag_status where_backward(ag_backward_ctx *ctx) {
    ag_tensor *g = GRAD_OUT(ctx), *cond = SAVED(ctx, 0), *zero = ag__scalar_like(g, 0.0);
    if (NEEDS(ctx, 1)) ctx->grad_inputs[1] = ag__sum_to_input(ctx, 1, ag_where(cond, g, zero));
    if (NEEDS(ctx, 2)) ctx->grad_inputs[2] = ag__sum_to_input(ctx, 2, ag_where(cond, zero, g));
    return AG_OK;
}
static ag_op_def op_where = {.name = "where",
                             .kernel = "where",
                             .n_inputs = 3,
                             .n_outputs = 1,
                             .save_inputs = 1,
                             .nondiff_inputs = 1,
                             .forward = ag__forward_elementwise,
                             .backward = where_backward,
                             .jvp = ag__jvp_linear};

ag_tensor *ag_where(ag_tensor *cond, ag_tensor *a, ag_tensor *b) {
    if (!cond || !a || !b) return ag__dispatch1(&op_where, 3, (ag_tensor *[]){cond, a, b}, NULL);
    ag_dtype dt = ag__promote(a->dtype, b->dtype);
    ag_scope *scope = ag_scope_begin();
    /* The kernel reads the condition in the data dtype; converting keeps it one kernel. */
    ag_tensor *in[3] = {ag_to_dtype(cond, dt), ag_to_dtype(a, dt), ag_to_dtype(b, dt)};
    return ag_scope_return(scope, ag__dispatch1(&op_where, 3, in, NULL));
}

/* ---- copies: dtype, device, clone ---- */

/* One "copy" kernel serves clone and dtype conversion: the key is the output dtype. */
static ag_status copy_forward(ag_op_ctx *ctx) {
    ag_tensor *in = ctx->inputs[0];
    ag_dtype dt = (ag_dtype)ctx->attrs->ints[0];
    ag_kernel_tensor kin;
    ag__kt(in, &kin);
    return ag__forward_kernel(
        ctx, dt, &kin, ag__tensor_alloc(dt, in->ndim, in->shape, in->storage->device), NULL, NULL);
}
static ag_status copy_backward(ag_backward_ctx *ctx) {
    ctx->grad_inputs[0] = ag_to_dtype(GRAD_OUT(ctx), IN_META(ctx, 0)->dtype);
    return AG_OK;
}
static ag_op_def op_copy = {.name = "copy",
                            .kernel = "copy",
                            .n_inputs = 1,
                            .n_outputs = 1,
                            .forward = copy_forward,
                            .backward = copy_backward,
                            .jvp = ag__jvp_linear};

ag_status ag__copy_into(ag_tensor *dst, ag_tensor *src) {
    if (!ag__same_device(dst->storage->device, src->storage->device)) {
        char a[192], b[192];
        return ag__error(AG_ERR_DEVICE,
                         "copy: destination %s and source %s are on different devices",
                         ag__describe(dst, a, sizeof a), ag__describe(src, b, sizeof b));
    }
    ag_kernel_tensor kin, kout;
    ag__kt_broadcast(src, dst->ndim, dst->shape, &kin);
    ag__kt(dst, &kout);
    return ag__run_kernel(&op_copy, dst->storage->device, dst->dtype, 1, &kin, 1, &kout, NULL);
}

static ag_tensor *copy_as(ag_tensor *a, ag_dtype dtype) {
    ag_attrs at = {.ints = {dtype}};
    return unary(&op_copy, a, &at);
}

ag_tensor *ag_clone(ag_tensor *a) {
    return copy_as(a, a ? a->dtype : AG_F32);
}

ag_tensor *ag_to_dtype(ag_tensor *a, ag_dtype dtype) {
    if (a && a->dtype == dtype) return ag__scope_adopt(ag_retain(a));
    if (a && ag_dtype_size(dtype) == 0) {
        ag__error(AG_ERR_DTYPE, "to_dtype: cannot convert %s to %s (not a dtype)",
                  ag_dtype_name(a->dtype), ag_dtype_name(dtype));
        return NULL;
    }
    return copy_as(a, dtype);
}

ag_tensor *ag_contiguous(ag_tensor *a) {
    if (a && ag_is_contiguous(a)) return ag__scope_adopt(ag_retain(a));
    return ag_clone(a);
}

/* Device transfer stages through host memory: backends only know their own buffers. */
static ag_status to_device_forward(ag_op_ctx *ctx) {
    ag_tensor *in = ctx->inputs[0];
    ag_device dev = {(int)ctx->attrs->ints[0], (int)ctx->attrs->ints[1]};
    size_t bytes = (size_t)in->numel * ag_dtype_size(in->dtype);
    void *host = ag__malloc(bytes ? bytes : 1);
    if (!host) return ag__error(AG_ERR_OUT_OF_MEMORY, "to_device: out of host memory");
    ag_status st = ag_to_host(in, host, bytes);
    ag_tensor *out = st == AG_OK ? ag__tensor_alloc(in->dtype, in->ndim, in->shape, dev) : NULL;
    if (st == AG_OK && !out) st = ag_last_status();
    if (st == AG_OK && bytes) {
        const ag_backend *be = ag__backend(dev.backend);
        st = be->iface.copy_from_host(dev.index, out->storage->data, 0, host, bytes);
        if (st != AG_OK)
            ag__error(st, "to_device: copy to %s failed: %s", be->iface.name,
                      be->iface.last_error());
    }
    free(host);
    if (st != AG_OK) {
        ag_release(out);
        return st;
    }
    ctx->outputs[0] = out;
    return AG_OK;
}
static ag_status to_device_backward(ag_backward_ctx *ctx) {
    ctx->grad_inputs[0] = ag_to_device(GRAD_OUT(ctx), IN_META(ctx, 0)->device);
    return AG_OK;
}
static ag_op_def op_to_device = {.name = "to_device",
                                 .n_inputs = 1,
                                 .n_outputs = 1,
                                 .forward = to_device_forward,
                                 .backward = to_device_backward,
                                 .jvp = ag__jvp_linear};

ag_tensor *ag_to_device(ag_tensor *a, ag_device device) {
    if (a && (device.backend < 0 || device.backend >= ag_backend_count() || device.index < 0 ||
              device.index >= ag__backend(device.backend)->iface.device_count())) {
        char d[32];
        ag_device_str(device, d, sizeof d);
        ag__error(AG_ERR_DEVICE, "to_device: no device %s", d);
        return NULL;
    }
    if (a && ag__same_device(a->storage->device, device)) return ag__scope_adopt(ag_retain(a));
    ag_attrs at = {.ints = {device.backend, device.index}};
    return unary(&op_to_device, a, &at);
}

ag_status ag__register_elementwise_ops(void) {
    static ag_op_def *const ops[] = {
        &op_add,   &op_sub,  &op_mul,     &op_div,   &op_pow,       &op_maximum, &op_minimum,
        &op_eq,    &op_ne,   &op_lt,      &op_le,    &op_gt,        &op_ge,      &op_neg,
        &op_exp,   &op_log,  &op_sqrt,    &op_rsqrt, &op_abs,       &op_sin,     &op_cos,
        &op_tanh,  &op_erf,  &op_sigmoid, &op_relu,  &op_silu,      &op_gelu,    &op_pow_scalar,
        &op_clamp, &op_sign, &op_where,   &op_copy,  &op_to_device,
    };
    return ag__register_all(ops, (int)(sizeof ops / sizeof ops[0]));
}
