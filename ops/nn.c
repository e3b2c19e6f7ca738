/* nn functional ops and losses (include/ag/nn.h), with PyTorch's formulas and defaults.
 *
 * layer_norm and the class-index cross_entropy run fused backend kernels ("layer_norm",
 * "cross_entropy", docs/kernels.md); their backwards are written in ag ops, recomputing
 * mean/rstd or softmax from the saved inputs, so they can be differentiated again. linear
 * is one op too (the "matmul" and "add" kernels), so that its weight gradient comes out in
 * the weight's own layout. The rest (dropout, embedding, mse, probability-target
 * cross_entropy, bce) are composites of public ops, each in its own scope. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "ag/nn.h"
#include "ops_common.h"

/* ---- argument checks shared by the functions below ---- */

/* False (with an error naming op, keeping an earlier one) if one of n tensors is NULL. */
static bool have(const char *op, int n, ag_tensor *const *tensors) {
    for (int i = 0; i < n; i++)
        if (!tensors[i]) {
            ag__error_if_none(AG_ERR_INVALID_ARG, "%s: input %d is NULL", op, i);
            return false;
        }
    return true;
}

/* False (with an error) unless t is a floating point tensor; role names t in the message. */
static bool is_float(const char *op, const ag_tensor *t, const char *role) {
    if (ag__is_float(t->dtype)) return true;
    char d[192];
    ag__error(AG_ERR_DTYPE, "%s: expected a floating point %s, got %s", op, role,
              ag__describe(t, d, sizeof d));
    return false;
}

/* False (with an error) unless r is one of the ag_reduction values. */
static bool valid_reduction(const char *op, ag_reduction r) {
    if (r == AG_REDUCTION_MEAN || r == AG_REDUCTION_SUM || r == AG_REDUCTION_NONE) return true;
    ag__error(AG_ERR_INVALID_ARG, "%s: %d is not a valid reduction (mean, sum or none)", op,
              (int)r);
    return false;
}

/* Whether a and b have the same shape. */
static bool same_shape(const ag_tensor *a, const ag_tensor *b) {
    return a->ndim == b->ndim &&
           memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof *a->shape) == 0;
}

/* mean, sum or (unchanged) none of a per-element loss. */
static ag_tensor *reduce_loss(ag_tensor *loss, ag_reduction r) {
    if (r == AG_REDUCTION_MEAN) return ag_mean(loss, 0, NULL, false);
    if (r == AG_REDUCTION_SUM) return ag_sum(loss, 0, NULL, false);
    return loss;
}

/* ---- linear ---- */

/* Kernels the linear op runs (kernel lookups only; not registered as ops). */
static ag_op_def linear_matmul = {.name = "linear", .kernel = "matmul"};
static ag_op_def linear_add = {.name = "linear", .kernel = "add"};

/* x [..., in] as a matrix [rows, in] (a view when x's leading dims allow, else a copy). */
static ag_tensor *as_rows(ag_tensor *x) {
    return x->ndim == 2 ? x : ag_reshape(x, 2, (int64_t[]){-1, x->shape[x->ndim - 1]});
}

/* dx = g @ weight, dweight = g^T @ x over every leading position, dbias = sum of g over the
 * leading dims. dweight is computed as [out, in] directly (not as the transpose of an
 * [in, out] product), so it is contiguous like the weight and is stored as .grad without a
 * copy. */
static ag_status linear_backward(ag_backward_ctx *ctx) {
    ag_tensor *x = SAVED(ctx, 0), *w = SAVED(ctx, 1), *g = GRAD_OUT(ctx);
    if (NEEDS(ctx, 0)) ctx->grad_inputs[0] = ag_matmul(g, w);
    if (NEEDS(ctx, 1)) ctx->grad_inputs[1] = ag_matmul(ag_transpose(as_rows(g), 0, 1), as_rows(x));
    if (ctx->node->n_inputs > 2 && NEEDS(ctx, 2)) {
        int dims[AG_MAX_DIMS];
        for (int d = 0; d + 1 < g->ndim; d++) dims[d] = d;
        ctx->grad_inputs[2] = ag_sum(g, g->ndim - 1, dims, false);
    }
    return AG_OK;
}

/* out = x @ weight^T (the weight read transposed through its strides, leading dims of x
 * as batch dims), then out += bias in place. */
static ag_status linear_forward(ag_op_ctx *ctx) {
    ag_tensor *x = ctx->inputs[0], *w = ctx->inputs[1];
    const int nd = x->ndim;
    int64_t shape[AG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[nd - 1] = w->shape[0];
    ag_tensor *out = ag__tensor_alloc(x->dtype, nd, shape, x->storage->device);
    if (!out) return ag_last_status();
    ag_kernel_tensor kin[2], kout;
    ag__kt(x, &kin[0]);
    ag__kt(out, &kout);
    /* weight^T [in, out], broadcast (stride 0) over x's leading dims. */
    ag__kt(w, &kin[1]);
    kin[1].ndim = nd;
    for (int d = 0; d < nd - 2; d++) {
        kin[1].shape[d] = x->shape[d];
        kin[1].strides[d] = 0;
    }
    kin[1].shape[nd - 2] = w->shape[1];
    kin[1].strides[nd - 2] = w->strides[1];
    kin[1].shape[nd - 1] = w->shape[0];
    kin[1].strides[nd - 1] = w->strides[0];
    const ag_device dev = x->storage->device;
    ag_status st = ag__run_kernel(&linear_matmul, dev, x->dtype, 2, kin, 1, &kout, NULL);
    if (st == AG_OK && ctx->n_inputs > 2) {
        ag_kernel_tensor kadd[2] = {kout};
        ag__kt_broadcast(ctx->inputs[2], nd, shape, &kadd[1]);
        st = ag__run_kernel(&linear_add, dev, x->dtype, 2, kadd, 1, &kout, NULL);
    }
    if (st != AG_OK) {
        ag_release(out);
        return st;
    }
    ctx->outputs[0] = out;
    return AG_OK;
}

/* d(x W^T + b) = dx W^T + x dW^T + db, each term through the fused op itself. */
static ag_status linear_jvp(ag_jvp_ctx *ctx) {
    ag_tensor *tx = TANGENT(ctx, 0), *tw = TANGENT(ctx, 1);
    ag_tensor *t = ag__jvp_sum(tx ? ag_linear(tx, PRIMAL(ctx, 1), NULL) : NULL,
                               tw ? ag_linear(PRIMAL(ctx, 0), tw, NULL) : NULL);
    ctx->output_tangents[0] = ctx->n_inputs > 2 ? ag__jvp_sum(t, TANGENT(ctx, 2)) : t;
    return AG_OK;
}

static ag_op_def op_linear = {.name = "linear",
                              .n_inputs = -1,
                              .n_outputs = 1,
                              .flags = AG_OPF_AUTOCAST_LOW,
                              .save_inputs = 3, /* x and weight */
                              .forward = linear_forward,
                              .backward = linear_backward,
                              .jvp = linear_jvp};

/* x @ weight^T + bias for x [..., in] (or [in]), weight [out, in], bias [out] or NULL. */
ag_tensor *ag_linear(ag_tensor *x, ag_tensor *weight, ag_tensor *bias) {
    if (!have("linear", 2, (ag_tensor *[]){x, weight})) return NULL;
    char sx[160], sw[160], sb[160];
    ag__shape_fmt(sx, sizeof sx, x->ndim, x->shape);
    ag__shape_fmt(sw, sizeof sw, weight->ndim, weight->shape);
    if (weight->ndim != 2 || x->ndim < 1 || x->shape[x->ndim - 1] != weight->shape[1]) {
        ag__error(AG_ERR_SHAPE,
                  "linear: input %s and weight %s cannot be multiplied (expected a weight "
                  "[out_features, in_features] whose in_features equals the input's last dim)",
                  sx, sw);
        return NULL;
    }
    if (bias && (bias->ndim != 1 || bias->shape[0] != weight->shape[0])) {
        ag__error(AG_ERR_SHAPE, "linear: bias %s does not fit weight %s (expected bias [%lld])",
                  ag__shape_fmt(sb, sizeof sb, bias->ndim, bias->shape), sw,
                  (long long)weight->shape[0]);
        return NULL;
    }
    /* The fused op takes 2-d and batched float inputs of one dtype; a 1-d x and mixed or
     * integer dtypes take the composite path, with matmul's promotion rules. */
    const bool fused = x->ndim >= 2 && ag__is_float(x->dtype) && weight->dtype == x->dtype &&
                       (!bias || bias->dtype == x->dtype);
    if (fused) {
        ag_tensor *in[3] = {x, weight, bias};
        return ag__dispatch1(&op_linear, bias ? 3 : 2, in, NULL);
    }
    ag_scope *scope = ag_scope_begin();
    ag_tensor *r = ag_matmul(x, ag_transpose(weight, 0, 1));
    if (bias) r = ag_add(r, bias);
    return ag_scope_return(scope, r);
}

/* ---- layer_norm ---- */

/* Bits of attrs ints[1] of the layer_norm op: which affine inputs follow x. */
enum { LN_WEIGHT = 1, LN_BIAS = 2 };

/* The dims list of the last n dims of an ndim-dim tensor. */
static void last_dims(int ndim, int n, int *dims) {
    for (int k = 0; k < n; k++) dims[k] = ndim - n + k;
}

/* x normalised over its last n dims, (x - mean) * rstd, with rstd = 1/sqrt(var + eps)
 * (biased var, keepdim) stored in *rstd: the forward again, in ag ops. */
static ag_tensor *ln_normalise(ag_tensor *x, int n, double eps, ag_tensor **rstd) {
    int dims[AG_MAX_DIMS];
    last_dims(x->ndim, n, dims);
    ag_tensor *xc = ag_sub(x, ag_mean(x, n, dims, true));
    *rstd = ag_rsqrt(ag_add_scalar(ag_mean(ag_mul(xc, xc), n, dims, true), eps));
    return ag_mul(xc, *rstd);
}

/* dx = rstd * (gy - mean(gy) - xhat * mean(gy * xhat)) with gy = g * weight;
 * dweight = sum of g * xhat and dbias = sum of g over the leading dims. */
static ag_status layer_norm_backward(ag_backward_ctx *ctx) {
    const ag_attrs *at = ag__bw_attrs(ctx);
    const int n = (int)at->ints[0];
    const int iw = at->ints[1] & LN_WEIGHT ? 1 : 0;
    const int ib = at->ints[1] & LN_BIAS ? 1 + iw : 0;
    ag_tensor *x = SAVED(ctx, 0), *g = GRAD_OUT(ctx), *rstd = NULL, *xhat = NULL;
    if (NEEDS(ctx, 0) || (iw && NEEDS(ctx, iw))) xhat = ln_normalise(x, n, at->reals[0], &rstd);
    if (iw && NEEDS(ctx, iw)) ctx->grad_inputs[iw] = ag__sum_to_input(ctx, iw, ag_mul(g, xhat));
    if (ib && NEEDS(ctx, ib)) ctx->grad_inputs[ib] = ag__sum_to_input(ctx, ib, g);
    if (NEEDS(ctx, 0)) {
        int dims[AG_MAX_DIMS];
        last_dims(x->ndim, n, dims);
        ag_tensor *gy = iw ? ag_mul(g, SAVED(ctx, iw)) : g;
        ag_tensor *proj = ag_mul(xhat, ag_mean(ag_mul(gy, xhat), n, dims, true));
        ag_tensor *centred = ag_sub(ag_sub(gy, ag_mean(gy, n, dims, true)), proj);
        ctx->grad_inputs[0] = ag_mul(rstd, centred);
    }
    return AG_OK;
}

/* d xhat = rstd * (dx - mean(dx) - xhat * mean(dx * xhat)), the tangent of the
 * normalisation; then dy = d xhat * weight + xhat * dweight + dbias. */
static ag_status layer_norm_jvp(ag_jvp_ctx *ctx) {
    const ag_attrs *at = ctx->attrs;
    const int n = (int)at->ints[0];
    const int iw = at->ints[1] & LN_WEIGHT ? 1 : 0;
    const int ib = at->ints[1] & LN_BIAS ? 1 + iw : 0;
    ag_tensor *x = PRIMAL(ctx, 0), *tx = TANGENT(ctx, 0), *rstd, *t = NULL;
    ag_tensor *xhat = ln_normalise(x, n, at->reals[0], &rstd);
    if (tx) {
        int dims[AG_MAX_DIMS];
        last_dims(x->ndim, n, dims);
        ag_tensor *proj = ag_mul(xhat, ag_mean(ag_mul(tx, xhat), n, dims, true));
        t = ag_mul(rstd, ag_sub(ag_sub(tx, ag_mean(tx, n, dims, true)), proj));
        if (iw) t = ag_mul(t, PRIMAL(ctx, iw));
    }
    if (iw && TANGENT(ctx, iw)) t = ag__jvp_sum(t, ag_mul(xhat, TANGENT(ctx, iw)));
    if (ib) t = ag__jvp_sum(t, TANGENT(ctx, ib));
    ctx->output_tangents[0] = t;
    return AG_OK;
}

/* Inputs (x, [weight], [bias]); attrs ints[0] = normalised trailing dims, ints[1] = LN_*
 * bits, reals[0] = eps, passed to the kernel as they are. */
static ag_status layer_norm_forward(ag_op_ctx *ctx) {
    ag_tensor *x = ctx->inputs[0];
    ag_kernel_tensor kin[3];
    for (int i = 0; i < ctx->n_inputs; i++) ag__kt(ctx->inputs[i], &kin[i]);
    return ag__forward_kernel(ctx, x->dtype, kin,
                              ag__tensor_alloc(x->dtype, x->ndim, x->shape, x->storage->device),
                              NULL, ctx->attrs);
}

static ag_op_def op_layer_norm = {.name = "layer_norm",
                                  .kernel = "layer_norm",
                                  .n_inputs = -1,
                                  .n_outputs = 1,
                                  .flags = AG_OPF_AUTOCAST_F32,
                                  .save_inputs = AG_SAVE_ALL,
                                  .forward = layer_norm_forward,
                                  .backward = layer_norm_backward,
                                  .jvp = layer_norm_jvp};

/* Checks a layer_norm weight or bias: x's dtype and the shape of x's last n dims. */
static bool ln_affine_fits(const ag_tensor *x, int n, const ag_tensor *t, const char *role) {
    char st[160], sn[160], dx[192], dt[192];
    ag__shape_fmt(sn, sizeof sn, n, x->shape + x->ndim - n);
    if (t->ndim != n || memcmp(t->shape, x->shape + x->ndim - n, (size_t)n * sizeof *t->shape)) {
        ag__error(AG_ERR_SHAPE,
                  "layer_norm: Expected %s to be of same shape as normalized_shape, but got %s "
                  "of shape %s and normalized_shape = %s",
                  role, role, ag__shape_fmt(st, sizeof st, t->ndim, t->shape), sn);
        return false;
    }
    if (t->dtype != x->dtype) {
        ag__error(AG_ERR_DTYPE, "layer_norm: %s %s must have the input's dtype (input %s)", role,
                  ag__describe(t, dt, sizeof dt), ag__describe(x, dx, sizeof dx));
        return false;
    }
    return true;
}

/* Layer normalisation over the last n_normalized dims (fused kernel forward). */
ag_tensor *ag_layer_norm(ag_tensor *x, int n_normalized, ag_tensor *weight, ag_tensor *bias,
                         double eps) {
    if (!have("layer_norm", 1, &x) || !is_float("layer_norm", x, "input")) return NULL;
    if (n_normalized < 1 || n_normalized > x->ndim) {
        char s[160];
        ag__error(AG_ERR_INVALID_ARG,
                  "layer_norm: cannot normalise the last %d dims of an input of shape %s (%d "
                  "dims)",
                  n_normalized, ag__shape_fmt(s, sizeof s, x->ndim, x->shape), x->ndim);
        return NULL;
    }
    ag_tensor *in[3] = {x};
    int n_in = 1;
    ag_attrs at = {.ints = {n_normalized, 0}, .reals = {eps}};
    if (weight) {
        if (!ln_affine_fits(x, n_normalized, weight, "weight")) return NULL;
        in[n_in++] = weight;
        at.ints[1] |= LN_WEIGHT;
    }
    if (bias) {
        if (!ln_affine_fits(x, n_normalized, bias, "bias")) return NULL;
        in[n_in++] = bias;
        at.ints[1] |= LN_BIAS;
    }
    return ag__dispatch1(&op_layer_norm, n_in, in, &at);
}

/* ---- dropout ---- */

/* Inverted dropout: x * (u < 1 - p) / (1 - p) with u uniform from gen, when training. */
ag_tensor *ag_dropout(ag_tensor *x, double p, bool training, ag_generator *gen) {
    if (!have("dropout", 1, &x)) return NULL;
    if (!(p >= 0 && p <= 1)) {
        ag__error(AG_ERR_INVALID_ARG,
                  "dropout: dropout probability has to be between 0 and 1, but got %g", p);
        return NULL;
    }
    /* The identity is x itself, as F.dropout returns its input: no copy, same history. */
    if (!training || p == 0) return ag__scope_adopt(ag_retain(x));
    if (!is_float("dropout", x, "input")) return NULL;
    ag_scope *scope = ag_scope_begin();
    ag_tensor *r;
    if (p == 1) {
        /* Every element dropped; a product (not fresh zeros) keeps the graph and NaNs, as
         * PyTorch's input * 0. */
        r = ag_mul(x, ag__scalar_like(x, 0.0));
    } else {
        ag_tensor *u = ag_to_device(ag_rand(gen, x->dtype, x->ndim, x->shape), ag_device_of(x));
        ag_tensor *keep = ag_lt(u, ag__scalar_like(x, 1 - p));
        r = ag_mul(x, ag_mul_scalar(keep, 1 / (1 - p)));
    }
    return ag_scope_return(scope, r);
}

/* ---- embedding ---- */

/* weight's rows at the (flattened) indices, reshaped to indices' shape + [dim]. */
ag_tensor *ag_embedding(ag_tensor *indices, ag_tensor *weight) {
    if (!have("embedding", 2, (ag_tensor *[]){indices, weight})) return NULL;
    char si[160], sw[160];
    ag__shape_fmt(si, sizeof si, indices->ndim, indices->shape);
    ag__shape_fmt(sw, sizeof sw, weight->ndim, weight->shape);
    if (indices->dtype != AG_I64) {
        ag__error(AG_ERR_DTYPE, "embedding: expected int64 indices, got %s%s",
                  ag_dtype_name(indices->dtype), si);
        return NULL;
    }
    if (weight->ndim != 2 || indices->ndim >= AG_MAX_DIMS) {
        ag__error(AG_ERR_SHAPE,
                  "embedding: expected a weight [num_embeddings, embedding_dim] and indices of "
                  "at most %d dims, got weight %s and indices %s",
                  AG_MAX_DIMS - 1, sw, si);
        return NULL;
    }
    int64_t shape[AG_MAX_DIMS], flat = -1;
    memcpy(shape, indices->shape, (size_t)indices->ndim * sizeof *shape);
    shape[indices->ndim] = weight->shape[1];
    ag_scope *scope = ag_scope_begin();
    ag_tensor *rows = ag_index_select(weight, 0, ag_reshape(indices, 1, &flat));
    if (!rows && ag_last_status() == AG_ERR_INDEX) {
        char why[512];
        snprintf(why, sizeof why, "%s", ag_last_error());
        ag__error(AG_ERR_INDEX, "embedding: index out of range of weight %s (%s)", sw, why);
    }
    return ag_scope_return(scope, ag_reshape(rows, indices->ndim + 1, shape));
}

/* ---- mse_loss ---- */

/* (input - target)^2, broadcast, then reduced. */
static ag_tensor *mse_loss(ag_tensor *input, ag_tensor *target, ag_reduction reduction) {
    if (!have("mse_loss", 2, (ag_tensor *[]){input, target}) ||
        !valid_reduction("mse_loss", reduction))
        return NULL;
    if (input->dtype == AG_I64 && target->dtype == AG_I64) {
        ag__error(AG_ERR_DTYPE, "mse_loss: expected floating point input or target, got int64");
        return NULL;
    }
    ag_scope *scope = ag_scope_begin();
    ag_tensor *d = ag_sub(input, target);
    return ag_scope_return(scope, reduce_loss(ag_mul(d, d), reduction));
}

ag_tensor *ag_mse_loss(ag_tensor *input, ag_tensor *target, ag_reduction reduction) {
    ag__context_enter("mse_loss", 2, (ag_tensor *[]){input, target});
    ag_tensor *r = mse_loss(input, target, reduction);
    ag__context_exit();
    return r;
}

/* ---- cross_entropy ---- */

/* Per-position loss from class indices, as the kernel: inputs (logits, target); attrs
 * ints[0] = class dim, ints[1] = ignore_index, reals[0] = label_smoothing. */
static ag_status cross_entropy_forward(ag_op_ctx *ctx) {
    ag_tensor *x = ctx->inputs[0], *t = ctx->inputs[1];
    ag_kernel_tensor kin[2];
    ag__kt(x, &kin[0]);
    ag__kt(t, &kin[1]);
    return ag__forward_kernel(ctx, x->dtype, kin,
                              ag__tensor_alloc(x->dtype, t->ndim, t->shape, x->storage->device),
                              NULL, ctx->attrs);
}

/* 0-dim int64 tensor holding v exactly (ag_scalar goes through a double), on device. */
static ag_tensor *i64_scalar(int64_t v, ag_device device) {
    return ag__from_host(AG_I64, 0, NULL, &v, device);
}

/* d loss / d logits = keep * (softmax(x) - q) per position, with q the smoothed one-hot
 * target (1 - eps) * onehot + eps / C and keep 0 for ignored targets, broadcast over the
 * class dim: what backward scales by the gradient and forward mode contracts with the
 * tangent. */
static ag_tensor *ce_logits_derivative(ag_tensor *x, ag_tensor *target, const ag_attrs *at) {
    const int cdim = (int)at->ints[0];
    const double eps = at->reals[0];
    ag_tensor *t = ag_unsqueeze(target, cdim);
    const ag_device dev = x->storage->device;
    const int64_t classes = x->shape[cdim];
    /* Class numbers [C, 1, ..., 1], lined up with the class dim of t, compared in the
     * logits' dtype so the one-hot comes out in it (class numbers are exact floats). */
    static const int64_t ones[AG_MAX_DIMS] = {1, 1, 1, 1, 1, 1, 1, 1};
    int64_t shape[AG_MAX_DIMS];
    memcpy(shape, ones, sizeof shape);
    shape[0] = classes;
    ag_tensor *cls = ag_reshape(ag_to_device(ag_arange(x->dtype, 0, (double)classes, 1), dev),
                                x->ndim - cdim, shape);
    ag_tensor *q = ag_eq(ag_to_dtype(t, x->dtype), cls);
    if (eps > 0) q = ag_add_scalar(ag_mul_scalar(q, 1 - eps), eps / (double)classes);
    ag_tensor *keep = ag_to_dtype(ag_ne(t, i64_scalar(at->ints[1], dev)), x->dtype);
    return ag_mul(keep, ag_sub(ag_softmax(x, cdim), q));
}

static ag_status cross_entropy_backward(ag_backward_ctx *ctx) {
    const ag_attrs *at = ag__bw_attrs(ctx);
    ag_tensor *d = ce_logits_derivative(SAVED(ctx, 0), SAVED(ctx, 1), at);
    ctx->grad_inputs[0] = ag_mul(ag_unsqueeze(GRAD_OUT(ctx), (int)at->ints[0]), d);
    return AG_OK;
}

static ag_status cross_entropy_jvp(ag_jvp_ctx *ctx) {
    int cdim = (int)ctx->attrs->ints[0];
    ag_tensor *d = ce_logits_derivative(PRIMAL(ctx, 0), PRIMAL(ctx, 1), ctx->attrs);
    ctx->output_tangents[0] = ag_sum(ag_mul(d, TANGENT(ctx, 0)), 1, &cdim, false);
    return AG_OK;
}

static ag_op_def op_cross_entropy = {.name = "cross_entropy",
                                     .kernel = "cross_entropy",
                                     .n_inputs = 2,
                                     .n_outputs = 1,
                                     .flags = AG_OPF_AUTOCAST_F32,
                                     .save_inputs = 3,
                                     .nondiff_inputs = 2,
                                     .forward = cross_entropy_forward,
                                     .backward = cross_entropy_backward,
                                     .jvp = cross_entropy_jvp};

/* PyTorch's defaults: mean, ignore_index -100, no label smoothing. */
ag_cross_entropy_options ag_cross_entropy_defaults(void) {
    return (ag_cross_entropy_options){
        .reduction = AG_REDUCTION_MEAN, .ignore_index = -100, .label_smoothing = 0.0};
}

/* Whether an int64 target has the logits' shape without the class dim. */
static bool class_target_fits(const ag_tensor *logits, const ag_tensor *target, int cdim) {
    bool fits = target->ndim == logits->ndim - 1;
    for (int d = 0; fits && d < target->ndim; d++)
        fits = target->shape[d] == logits->shape[d + (d >= cdim)];
    return fits;
}

/* Class-index targets: the fused per-position loss, reduced over the positions whose
 * target is not ignore_index (mean divides by their count: NaN when there are none). */
static ag_tensor *ce_class_indices(ag_tensor *logits, ag_tensor *target, int cdim,
                                   const ag_cross_entropy_options *o) {
    ag_attrs at = {.ints = {cdim, o->ignore_index}, .reals = {o->label_smoothing}};
    ag_tensor *per = ag__dispatch1(&op_cross_entropy, 2, (ag_tensor *[]){logits, target}, &at);
    if (o->reduction != AG_REDUCTION_MEAN) return reduce_loss(per, o->reduction);
    ag_tensor *kept = ag_ne(target, i64_scalar(o->ignore_index, logits->storage->device));
    return ag_div(ag_sum(per, 0, NULL, false),
                  ag_to_dtype(ag_sum(kept, 0, NULL, false), logits->dtype));
}

/* Probability targets: -sum_c q_c log_softmax(x)_c with q = (1 - eps) t + eps / C. */
static ag_tensor *ce_probabilities(ag_tensor *logits, ag_tensor *target, int cdim,
                                   const ag_cross_entropy_options *o) {
    const double eps = o->label_smoothing;
    ag_tensor *q = target;
    if (eps > 0)
        q = ag_add_scalar(ag_mul_scalar(target, 1 - eps), eps / (double)logits->shape[cdim]);
    ag_tensor *per = ag_neg(ag_sum(ag_mul(q, ag_log_softmax(logits, cdim)), 1, &cdim, false));
    return reduce_loss(per, o->reduction);
}

/* torch.nn.functional.cross_entropy with class-index or probability targets. */
ag_tensor *ag_cross_entropy(ag_tensor *logits, ag_tensor *target,
                            const ag_cross_entropy_options *options) {
    const ag_cross_entropy_options o = options ? *options : ag_cross_entropy_defaults();
    if (!have("cross_entropy", 2, (ag_tensor *[]){logits, target}) ||
        !valid_reduction("cross_entropy", o.reduction) ||
        !is_float("cross_entropy", logits, "logits"))
        return NULL;
    if (!(o.label_smoothing >= 0 && o.label_smoothing <= 1)) {
        ag__error(AG_ERR_INVALID_ARG,
                  "cross_entropy: label_smoothing must be between 0.0 and 1.0. Got: %g",
                  o.label_smoothing);
        return NULL;
    }
    char sl[160], st[160];
    ag__shape_fmt(sl, sizeof sl, logits->ndim, logits->shape);
    ag__shape_fmt(st, sizeof st, target->ndim, target->shape);
    if (logits->ndim < 1) {
        ag__error(AG_ERR_SHAPE, "cross_entropy: logits must have a class dim, got shape %s", sl);
        return NULL;
    }
    /* Unbatched logits [C] have their classes in dim 0, batched ones in dim 1. */
    const int cdim = logits->ndim == 1 ? 0 : 1;
    const bool indices = target->dtype == AG_I64;
    if (indices && !class_target_fits(logits, target, cdim)) {
        ag__error(AG_ERR_SHAPE,
                  "cross_entropy: class-index target %s does not fit logits %s (expected the "
                  "logits' shape without the class dim %d)",
                  st, sl, cdim);
        return NULL;
    }
    if (!indices && !same_shape(logits, target)) {
        ag__error(AG_ERR_SHAPE,
                  "cross_entropy: probability target %s must have the logits' shape %s (class "
                  "indices must be int64)",
                  st, sl);
        return NULL;
    }
    ag_scope *scope = ag_scope_begin();
    ag_tensor *r = indices ? ce_class_indices(logits, target, cdim, &o)
                           : ce_probabilities(logits, target, cdim, &o);
    return ag_scope_return(scope, r);
}

/* ---- bce_with_logits ---- */

/* log(sigmoid(x)) as log_softmax([0, x])[1]: stable for any |x| and differentiable to any
 * order everywhere (min(x, 0) - log(1 + exp(-|x|)) has the wrong derivatives at x = 0). */
static ag_tensor *log_sigmoid(ag_tensor *x) {
    ag_tensor *pair[2] = {ag_zeros_like(x), x};
    return ag_select(ag_log_softmax(ag_stack(2, pair, x->ndim), -1), -1, 1);
}

/* PyTorch's (1 - t) x + (1 + (pw - 1) t) (log(1 + exp(-|x|)) + max(-x, 0)), where the
 * last factor is -log_sigmoid(x); without pos_weight the coefficient is 1. */
static ag_tensor *bce_with_logits(ag_tensor *logits, ag_tensor *target, ag_tensor *pos_weight,
                                  ag_reduction reduction) {
    if (!have("bce_with_logits", 2, (ag_tensor *[]){logits, target}) ||
        !valid_reduction("bce_with_logits", reduction) ||
        !is_float("bce_with_logits", logits, "input") ||
        !is_float("bce_with_logits", target, "target"))
        return NULL;
    char sl[160], st[160];
    ag__shape_fmt(sl, sizeof sl, logits->ndim, logits->shape);
    if (!same_shape(logits, target)) {
        ag__error(AG_ERR_SHAPE, "bce_with_logits: Target size %s must be the same as input size %s",
                  ag__shape_fmt(st, sizeof st, target->ndim, target->shape), sl);
        return NULL;
    }
    if (pos_weight) {
        /* pos_weight must broadcast to the input's shape without growing it. */
        bool fits = pos_weight->ndim <= logits->ndim;
        const int lead = logits->ndim - pos_weight->ndim;
        for (int d = 0; fits && d < pos_weight->ndim; d++)
            fits = pos_weight->shape[d] == 1 || pos_weight->shape[d] == logits->shape[lead + d];
        if (!fits) {
            ag__error(AG_ERR_SHAPE,
                      "bce_with_logits: pos_weight %s does not broadcast to input size %s",
                      ag__shape_fmt(st, sizeof st, pos_weight->ndim, pos_weight->shape), sl);
            return NULL;
        }
    }
    ag_scope *scope = ag_scope_begin();
    ag_tensor *ls = log_sigmoid(logits);
    if (pos_weight)
        ls = ag_mul(ag_add_scalar(ag_mul(ag_add_scalar(pos_weight, -1), target), 1), ls);
    ag_tensor *loss = ag_sub(ag_mul(ag_add_scalar(ag_neg(target), 1), logits), ls);
    return ag_scope_return(scope, reduce_loss(loss, reduction));
}

ag_tensor *ag_bce_with_logits(ag_tensor *logits, ag_tensor *target, ag_tensor *pos_weight,
                              ag_reduction reduction) {
    ag__context_enter("bce_with_logits", 3, (ag_tensor *[]){logits, target, pos_weight});
    ag_tensor *r = bce_with_logits(logits, target, pos_weight, reduction);
    ag__context_exit();
    return r;
}

/* Registers the nn ops with fused kernels. */
ag_status ag__register_nn_ops(void) {
    static ag_op_def *const ops[] = {&op_linear, &op_layer_norm, &op_cross_entropy};
    return ag__register_all(ops, (int)(sizeof ops / sizeof ops[0]));
}
