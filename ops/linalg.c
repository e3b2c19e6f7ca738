/* Linear algebra and normalisation: matmul (torch.matmul rules) and softmax/log_softmax.
 * Forwards run backend kernels; backwards are composed of ag ops from the saved inputs. */
#include <stdio.h>
#include "ops_common.h"

/* ---- matmul ---- */

/* "2x3" of a shape into buf (PyTorch's wording in matmul errors). */
static char *dims_x(char *buf, size_t size, const ag_tensor *t) {
    size_t n = 0;
    buf[0] = '\0';
    for (int d = 0; d < t->ndim && n < size; d++)
        n += (size_t)snprintf(buf + n, size - n, d ? "x%lld" : "%lld", (long long)t->shape[d]);
    return buf;
}

/* The matmul op takes a [..., m, k] and b [..., k, n], both with ndim >= 2 (ranks may
 * differ); their batch dims broadcast and the output is contiguous [..., m, n]. */
static ag_status matmul_forward(ag_op_ctx *ctx) {
    ag_tensor *a = ctx->inputs[0], *b = ctx->inputs[1];
    char sa[160], sb[160];
    if (a->dtype != b->dtype || a->ndim < 2 || b->ndim < 2)
        return ag__error(AG_ERR_INVALID_ARG,
                         "matmul op: expected two inputs of one dtype with ndim >= 2, got %s and "
                         "%s",
                         ag__describe(a, sa, sizeof sa), ag__describe(b, sb, sizeof sb));
    const int64_t m = a->shape[a->ndim - 2], k = a->shape[a->ndim - 1];
    const int64_t n = b->shape[b->ndim - 1];
    if (b->shape[b->ndim - 2] != k)
        return ag__error(AG_ERR_SHAPE,
                         "matmul: mat1 and mat2 shapes cannot be multiplied (%s and %s)",
                         dims_x(sa, sizeof sa, a), dims_x(sb, sizeof sb, b));
    const int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t out_shape[AG_MAX_DIMS], a_shape[AG_MAX_DIMS], b_shape[AG_MAX_DIMS];
    for (int d = 0; d < nd - 2; d++) {
        int da = d - (nd - a->ndim), db = d - (nd - b->ndim);
        int64_t ea = da >= 0 ? a->shape[da] : 1, eb = db >= 0 ? b->shape[db] : 1;
        if (ea != eb && ea != 1 && eb != 1)
            return ag__error(AG_ERR_SHAPE,
                             "matmul: the batch dimensions of shapes %s and %s cannot be "
                             "broadcast (%lld vs %lld at dimension %d)",
                             ag__shape_fmt(sa, sizeof sa, a->ndim, a->shape),
                             ag__shape_fmt(sb, sizeof sb, b->ndim, b->shape), (long long)ea,
                             (long long)eb, d);
        out_shape[d] = a_shape[d] = b_shape[d] = ea == 1 ? eb : ea;
    }
    out_shape[nd - 2] = a_shape[nd - 2] = m;
    out_shape[nd - 1] = b_shape[nd - 1] = n;
    a_shape[nd - 1] = b_shape[nd - 2] = k;
    ag_kernel_tensor kin[2];
    ag__kt_broadcast(a, nd, a_shape, &kin[0]);
    ag__kt_broadcast(b, nd, b_shape, &kin[1]);
    return ag__forward_kernel(ctx, a->dtype, kin,
                              ag__tensor_alloc(a->dtype, nd, out_shape, a->storage->device), NULL,
                              NULL);
}

/* d(a @ b) = g @ b^T and a^T @ g, summed back over broadcast batch dims. */
static ag_status matmul_backward(ag_backward_ctx *ctx) {
    ag_tensor *g = GRAD_OUT(ctx), *a = SAVED(ctx, 0), *b = SAVED(ctx, 1);
    if (NEEDS(ctx, 0))
        ctx->grad_inputs[0] = ag__sum_to_input(ctx, 0, ag_matmul(g, ag_transpose(b, -1, -2)));
    if (NEEDS(ctx, 1))
        ctx->grad_inputs[1] = ag__sum_to_input(ctx, 1, ag_matmul(ag_transpose(a, -1, -2), g));
    return AG_OK;
}
/* d(a @ b) = da @ b + a @ db (both operands have ndim >= 2 here). */
static ag_status matmul_jvp(ag_jvp_ctx *ctx) {
    ag_tensor *ta = TANGENT(ctx, 0), *tb = TANGENT(ctx, 1);
    ctx->output_tangents[0] = ag__jvp_sum(ta ? ag_matmul(ta, PRIMAL(ctx, 1)) : NULL,
                                          tb ? ag_matmul(PRIMAL(ctx, 0), tb) : NULL);
    return AG_OK;
}
static ag_op_def op_matmul = {.name = "matmul",
                              .kernel = "matmul",
                              .n_inputs = 2,
                              .n_outputs = 1,
                              .flags = AG_OPF_AUTOCAST_LOW,
                              .save_inputs = 3,
                              .forward = matmul_forward,
                              .backward = matmul_backward,
                              .jvp = matmul_jvp};

/* torch.matmul: promotes dtypes, handles 1-D operands, broadcasts batch dims. */
ag_tensor *ag_matmul(ag_tensor *a, ag_tensor *b) {
    if (!a || !b) return ag__dispatch1(&op_matmul, 2, (ag_tensor *[]){a, b}, NULL);
    if (a->ndim == 0 || b->ndim == 0) {
        ag__error(AG_ERR_SHAPE,
                  "matmul: both arguments to matmul need to be at least 1D, but they are %dD and "
                  "%dD",
                  a->ndim, b->ndim);
        return NULL;
    }
    ag_dtype dt = ag__promote(a->dtype, b->dtype);
    ag_scope *scope = ag_scope_begin();
    /* A 1-D operand is a row (a) or column (b) vector whose extra dim is removed after. */
    ag_tensor *a2 = a->ndim == 1 ? ag_unsqueeze(a, 0) : a;
    ag_tensor *b2 = b->ndim == 1 ? ag_unsqueeze(b, 1) : b;
    ag_tensor *r = ag__dispatch1(&op_matmul, 2,
                                 (ag_tensor *[]){ag_to_dtype(a2, dt), ag_to_dtype(b2, dt)}, NULL);
    if (b->ndim == 1) r = ag_squeeze(r, -1);
    if (a->ndim == 1) r = ag_squeeze(r, b->ndim == 1 ? -1 : -2);
    return ag_scope_return(scope, r);
}

/* ---- softmax and log_softmax ---- */

/* softmax: dx = y * (g - sum(g * y)), with y recomputed from the saved input. */
static ag_status softmax_backward(ag_backward_ctx *ctx) {
    int dim = (int)ag__bw_attrs(ctx)->ints[0];
    ag_tensor *g = GRAD_OUT(ctx), *y = ag_softmax(SAVED(ctx, 0), dim);
    ag_tensor *dot = ag_sum(ag_mul(g, y), 1, &dim, true);
    ctx->grad_inputs[0] = ag_mul(y, ag_sub(g, dot));
    return AG_OK;
}

/* log_softmax: dx = g - softmax(x) * sum(g). */
static ag_status log_softmax_backward(ag_backward_ctx *ctx) {
    int dim = (int)ag__bw_attrs(ctx)->ints[0];
    ag_tensor *g = GRAD_OUT(ctx), *y = ag_softmax(SAVED(ctx, 0), dim);
    ctx->grad_inputs[0] = ag_sub(g, ag_mul(y, ag_sum(g, 1, &dim, true)));
    return AG_OK;
}

/* softmax: dy = y * (dx - sum(dx * y)), with y the output. */
static ag_status softmax_jvp(ag_jvp_ctx *ctx) {
    int dim = (int)ctx->attrs->ints[0];
    ag_tensor *t = TANGENT(ctx, 0), *y = ctx->outputs[0];
    ctx->output_tangents[0] = ag_mul(y, ag_sub(t, ag_sum(ag_mul(t, y), 1, &dim, true)));
    return AG_OK;
}
/* log_softmax: dy = dx - sum(dx * softmax(x)), with softmax(x) = exp(y). */
static ag_status log_softmax_jvp(ag_jvp_ctx *ctx) {
    int dim = (int)ctx->attrs->ints[0];
    ag_tensor *t = TANGENT(ctx, 0), *p = ag_exp(ctx->outputs[0]);
    ctx->output_tangents[0] = ag_sub(t, ag_sum(ag_mul(t, p), 1, &dim, true));
    return AG_OK;
}
/* The elementwise forward fits: one input, an output of its shape and dtype, attrs passed
 * through to the kernel. */
static ag_op_def op_softmax = {.name = "softmax",
                               .kernel = "softmax",
                               .n_inputs = 1,
                               .n_outputs = 1,
                               .flags = AG_OPF_AUTOCAST_F32,
                               .save_inputs = 1,
                               .forward = ag__forward_elementwise,
                               .backward = softmax_backward,
                               .jvp = softmax_jvp};
static ag_op_def op_log_softmax = {.name = "log_softmax",
                                   .kernel = "log_softmax",
                                   .n_inputs = 1,
                                   .n_outputs = 1,
                                   .flags = AG_OPF_AUTOCAST_F32,
                                   .save_inputs = 1,
                                   .forward = ag__forward_elementwise,
                                   .backward = log_softmax_backward,
                                   .jvp = log_softmax_jvp};

/* softmax or log_softmax along dim (a 0-dim input is one element along dim 0). */
static ag_tensor *softmax_like(ag_op_def *op, ag_tensor *a, int dim) {
    if (!a) return ag__dispatch1(op, 1, &a, NULL);
    int d;
    if (ag__wrap_dim(op->name, dim, a->ndim, &d) != AG_OK) return NULL;
    if (a->dtype == AG_I64) {
        ag__error(AG_ERR_DTYPE, "%s: expected a floating point input, got int64", op->name);
        return NULL;
    }
    ag_attrs at = {.ints = {d}};
    return ag__dispatch1(op, 1, &a, &at);
}

/* Softmax along dim. */
ag_tensor *ag_softmax(ag_tensor *a, int dim) {
    return softmax_like(&op_softmax, a, dim);
}

/* Log-softmax along dim. */
ag_tensor *ag_log_softmax(ag_tensor *a, int dim) {
    return softmax_like(&op_log_softmax, a, dim);
}

/* Registers the linear algebra ops. */
ag_status ag__register_linalg_ops(void) {
    static ag_op_def *const ops[] = {&op_matmul, &op_softmax, &op_log_softmax};
    return ag__register_all(ops, (int)(sizeof ops / sizeof ops[0]));
}
