/* View ops: reshape/view, transpose, permute, expand, slice, select, squeeze, unsqueeze,
 * flatten. A view shares storage and version counter with its input: the forward only
 * computes a new geometry (shape, strides, offset) and runs no kernel. Backward functions
 * are written in ag ops, so views are differentiable to any order. */
#include <string.h>
#include "ops_common.h"

/* ---- geometry ---- */

/* Shape, strides and storage offset of a (prospective) view. */
typedef struct geom {
    int ndim;
    int64_t shape[AG_MAX_DIMS];
    int64_t strides[AG_MAX_DIMS];
    int64_t offset;
} geom;

static geom geom_of(const ag_tensor *t) {
    geom g = {.ndim = t->ndim, .offset = t->offset};
    memcpy(g.shape, t->shape, sizeof g.shape);
    memcpy(g.strides, t->strides, sizeof g.strides);
    return g;
}

/* Keeps `count` elements start, start+step, ... of dim. */
static void geom_slice(geom *g, int dim, int64_t start, int64_t step, int64_t count) {
    g->offset += start * g->strides[dim];
    g->shape[dim] = count;
    g->strides[dim] *= step;
}

/* Removes dim (of extent 1 after a slice, or squeezed). */
static void geom_drop(geom *g, int dim) {
    for (int d = dim; d + 1 < g->ndim; d++) {
        g->shape[d] = g->shape[d + 1];
        g->strides[d] = g->strides[d + 1];
    }
    g->ndim--;
}

/* Makes output 0 of a view op: a tensor viewing `base`'s storage with geometry g. */
static ag_status emit(ag_op_ctx *ctx, ag_tensor *base, const geom *g) {
    ctx->outputs[0] = ag__tensor_view(base, g->ndim, g->shape, g->strides, g->offset);
    return ctx->outputs[0] ? AG_OK : ag_last_status();
}

/* Attributes carry a resolved shape as ints[0..ndim), followed by -1 when ndim < 8:
 * extents are never negative, and eight dims fill every slot. */
static void shape_to_attrs(int ndim, const int64_t *shape, ag_attrs *at) {
    /* The explicit range also tells gcc's -O3 overflow analysis that ndim fits. */
    for (int d = 0; d < ndim && d < AG_MAX_DIMS; d++) at->ints[d] = shape[d];
    if (ndim < AG_MAX_DIMS) at->ints[ndim] = -1;
}

static int shape_from_attrs(const ag_attrs *at, int64_t *shape) {
    int ndim = 0;
    while (ndim < AG_MAX_DIMS && at->ints[ndim] >= 0) {
        shape[ndim] = at->ints[ndim];
        ndim++;
    }
    return ndim;
}

static ag_status check_ndim(const char *op, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > AG_MAX_DIMS)
        return ag__error(AG_ERR_SHAPE, "%s: a tensor has 0..%d dims, got %d", op, AG_MAX_DIMS,
                         ndim);
    if (ndim && !shape) return ag__error(AG_ERR_INVALID_ARG, "%s: shape is NULL", op);
    return AG_OK;
}

/* Resolves one -1 extent of a requested shape against t's numel, as torch's infer_size. */
static ag_status infer_shape(const char *op, const ag_tensor *t, int ndim, const int64_t *req,
                             int64_t *shape) {
    ag_status st = check_ndim(op, ndim, req);
    if (st != AG_OK) return st;
    int infer = -1;
    int64_t known = 1;
    for (int d = 0; d < ndim; d++) {
        shape[d] = req[d];
        if (req[d] == -1) {
            if (infer >= 0)
                return ag__error(AG_ERR_SHAPE, "%s: only one dimension can be inferred", op);
            infer = d;
        } else if (req[d] < 0) {
            return ag__error(AG_ERR_SHAPE, "%s: invalid shape dimension %lld", op,
                             (long long)req[d]);
        } else {
            known *= req[d];
        }
    }
    char buf[160];
    if (known == t->numel || (infer >= 0 && known > 0 && t->numel % known == 0)) {
        if (infer >= 0 && known == 0)
            return ag__error(AG_ERR_SHAPE,
                             "%s: cannot reshape tensor of 0 elements into shape %s because the "
                             "unspecified dimension size -1 can be any value and is ambiguous",
                             op, ag__shape_fmt(buf, sizeof buf, ndim, req));
        if (infer >= 0) shape[infer] = t->numel / known;
        return AG_OK;
    }
    return ag__error(AG_ERR_SHAPE, "%s: shape '%s' is invalid for input of size %lld", op,
                     ag__shape_fmt(buf, sizeof buf, ndim, req), (long long)t->numel);
}

/* Strides that present t's elements in `shape` (same numel) without copying, as PyTorch's
 * computeStride: runs of dims that are contiguous with each other ("chunks") may be
 * re-split freely; returns false when a new dim would span two chunks. */
static bool view_strides(const ag_tensor *t, int ndim, const int64_t *shape, int64_t *strides) {
    if (t->ndim == 0) {
        for (int d = 0; d < ndim; d++) strides[d] = 1;
        return true;
    }
    if (t->numel == 0) {
        /* Any strides address zero elements; keep t's when the shape is unchanged. */
        if (ndim == t->ndim && memcmp(shape, t->shape, (size_t)ndim * sizeof *shape) == 0) {
            memcpy(strides, t->strides, (size_t)ndim * sizeof *strides);
            return true;
        }
        for (int d = ndim - 1; d >= 0; d--)
            strides[d] = d == ndim - 1 ? 1 : strides[d + 1] * (shape[d + 1] > 1 ? shape[d + 1] : 1);
        return true;
    }
    int view_d = ndim - 1;
    int64_t chunk_base = t->strides[t->ndim - 1], tensor_numel = 1, view_numel = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        tensor_numel *= t->shape[d];
        bool chunk_ends =
            d == 0 || (t->shape[d - 1] != 1 && t->strides[d - 1] != tensor_numel * chunk_base);
        if (!chunk_ends) continue;
        while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
            strides[view_d] = view_numel * chunk_base;
            view_numel *= shape[view_d];
            view_d--;
        }
        if (view_numel != tensor_numel) return false;
        if (d > 0) {
            chunk_base = t->strides[d - 1];
            tensor_numel = view_numel = 1;
        }
    }
    return view_d == -1;
}

/* Checks an expand request and resolves it: -1 keeps an extent; only extent-1 dims and new
 * leading dims grow, with stride 0. */
static ag_status expand_geometry(const ag_tensor *t, int ndim, const int64_t *req, geom *g) {
    ag_status st = check_ndim("expand", ndim, req);
    if (st != AG_OK) return st;
    char want[160], have[160];
    ag__shape_fmt(want, sizeof want, ndim, req);
    ag__shape_fmt(have, sizeof have, t->ndim, t->shape);
    if (ndim < t->ndim)
        return ag__error(AG_ERR_SHAPE,
                         "expand: the number of sizes provided (%d) must be greater or equal to "
                         "the number of dimensions in the tensor (%d). Target sizes: %s. Tensor "
                         "sizes: %s",
                         ndim, t->ndim, want, have);
    int lead = ndim - t->ndim;
    g->ndim = ndim;
    g->offset = t->offset;
    for (int d = 0; d < ndim; d++) {
        int src = d - lead;
        int64_t size = req[d];
        if (src < 0 && size < 0)
            return ag__error(AG_ERR_SHAPE,
                             "expand: the expanded size of the tensor (%lld) isn't allowed in a "
                             "leading, non-existing dimension %d",
                             (long long)size, d);
        if (src >= 0 && size == -1) size = t->shape[src];
        if (size < 0)
            return ag__error(AG_ERR_SHAPE,
                             "expand: invalid size %lld at dimension %d. Target "
                             "sizes: %s",
                             (long long)size, d, want);
        if (src >= 0 && t->shape[src] != size && t->shape[src] != 1)
            return ag__error(AG_ERR_SHAPE,
                             "expand: The expanded size of the tensor (%lld) must match the "
                             "existing size (%lld) at non-singleton dimension %d. Target sizes: "
                             "%s. Tensor sizes: %s",
                             (long long)size, (long long)t->shape[src], d, want, have);
        g->shape[d] = size;
        g->strides[d] = src >= 0 && t->shape[src] == size ? t->strides[src] : 0;
    }
    return AG_OK;
}

/* ---- ops ---- */

/* Runs a view op on a (NULL a reports the pending error through dispatch). */
static ag_tensor *run(ag_op_def *op, ag_tensor *a, const ag_attrs *at) {
    return ag__dispatch1(op, 1, &a, at);
}

/* view, squeeze and unsqueeze: attrs hold the new shape (see shape_to_attrs). */
static ag_status view_forward(ag_op_ctx *ctx) {
    ag_tensor *in = ctx->inputs[0];
    geom g = {.offset = in->offset};
    g.ndim = shape_from_attrs(ctx->attrs, g.shape);
    if (!view_strides(in, g.ndim, g.shape, g.strides)) {
        char have[160], strides[160], want[160];
        return ag__error(AG_ERR_SHAPE,
                         "%s: view size is not compatible with input tensor's size and stride "
                         "(at least one dimension spans across two contiguous subspaces): "
                         "input %s with strides %s, requested %s. Use reshape instead.",
                         ctx->op->name, ag__shape_fmt(have, sizeof have, in->ndim, in->shape),
                         ag__shape_fmt(strides, sizeof strides, in->ndim, in->strides),
                         ag__shape_fmt(want, sizeof want, g.ndim, g.shape));
    }
    return emit(ctx, in, &g);
}

static ag_status reshape_backward(ag_backward_ctx *ctx) {
    const ag_meta *m = IN_META(ctx, 0);
    ctx->grad_inputs[0] = ag_reshape(GRAD_OUT(ctx), m->ndim, m->shape);
    return AG_OK;
}

/* permute and transpose: attrs ints[0..ndim) hold the permutation. */
static ag_status permute_forward(ag_op_ctx *ctx) {
    ag_tensor *in = ctx->inputs[0];
    geom g = {.ndim = in->ndim, .offset = in->offset};
    for (int d = 0; d < in->ndim; d++) {
        g.shape[d] = in->shape[ctx->attrs->ints[d]];
        g.strides[d] = in->strides[ctx->attrs->ints[d]];
    }
    return emit(ctx, in, &g);
}

static ag_op_def op_permute;

static ag_status permute_backward(ag_backward_ctx *ctx) {
    const ag_attrs *at = ag__bw_attrs(ctx);
    ag_attrs inv = {.ints = {0}};
    for (int d = 0; d < IN_META(ctx, 0)->ndim; d++) inv.ints[at->ints[d]] = d;
    ctx->grad_inputs[0] = run(&op_permute, GRAD_OUT(ctx), &inv);
    return AG_OK;
}

static ag_status expand_forward(ag_op_ctx *ctx) {
    ag_tensor *in = ctx->inputs[0];
    int64_t shape[AG_MAX_DIMS];
    geom g;
    int ndim = shape_from_attrs(ctx->attrs, shape);
    ag_status st = expand_geometry(in, ndim, shape, &g);
    return st == AG_OK ? emit(ctx, in, &g) : st;
}

static ag_status expand_backward(ag_backward_ctx *ctx) {
    ctx->grad_inputs[0] = ag__sum_to_input(ctx, 0, GRAD_OUT(ctx));
    return AG_OK;
}

/* slice: attrs {dim, start, step, count}, already clamped into the input. */
static ag_status slice_forward(ag_op_ctx *ctx) {
    ag_tensor *in = ctx->inputs[0];
    const int64_t *a = ctx->attrs->ints;
    geom g = geom_of(in);
    geom_slice(&g, (int)a[0], a[1], a[2], a[3]);
    return emit(ctx, in, &g);
}

/* select: attrs {dim, index}, index already non-negative. */
static ag_status select_forward(ag_op_ctx *ctx) {
    ag_tensor *in = ctx->inputs[0];
    const int64_t *a = ctx->attrs->ints;
    geom g = geom_of(in);
    geom_slice(&g, (int)a[0], a[1], 1, 1);
    geom_drop(&g, (int)a[0]);
    return emit(ctx, in, &g);
}

/* slice_backward(g; dim, start, step, size): zeros with g's shape but extent `size` at
 * dim, with g written into elements start, start+step, ... of dim. Not a view. */
static ag_status slice_backward_forward(ag_op_ctx *ctx) {
    ag_tensor *grad = ctx->inputs[0];
    const int64_t *a = ctx->attrs->ints;
    int dim = (int)a[0];
    int64_t shape[AG_MAX_DIMS];
    memcpy(shape, grad->shape, sizeof shape);
    shape[dim] = a[3];
    ag_tensor *out = ag__tensor_alloc(grad->dtype, grad->ndim, shape, grad->storage->device);
    if (!out) return ag_last_status();
    geom g = geom_of(out);
    geom_slice(&g, dim, a[1], a[2], grad->shape[dim]);
    ag_tensor *region = ag__tensor_view(out, g.ndim, g.shape, g.strides, g.offset);
    ag_status st = region ? ag__fill(out, 0.0) : ag_last_status();
    if (st == AG_OK) st = ag__copy_into(region, grad);
    ag_release(region);
    if (st != AG_OK) {
        ag_release(out);
        return st;
    }
    ctx->outputs[0] = out;
    return AG_OK;
}

static ag_op_def op_slice, op_slice_backward;

static ag_tensor *slice_raw(ag_tensor *a, int dim, int64_t start, int64_t step, int64_t count) {
    ag_attrs at = {.ints = {dim, start, step, count}};
    return run(&op_slice, a, &at);
}

static ag_tensor *slice_backward_raw(ag_tensor *g, int dim, int64_t start, int64_t step,
                                     int64_t size) {
    ag_attrs at = {.ints = {dim, start, step, size}};
    return run(&op_slice_backward, g, &at);
}

static ag_status slice_backward(ag_backward_ctx *ctx) {
    const int64_t *a = ag__bw_attrs(ctx)->ints;
    int dim = (int)a[0];
    ctx->grad_inputs[0] =
        slice_backward_raw(GRAD_OUT(ctx), dim, a[1], a[2], IN_META(ctx, 0)->shape[dim]);
    return AG_OK;
}

static ag_status select_backward(ag_backward_ctx *ctx) {
    const int64_t *a = ag__bw_attrs(ctx)->ints;
    int dim = (int)a[0];
    ctx->grad_inputs[0] = slice_backward_raw(ag_unsqueeze(GRAD_OUT(ctx), dim), dim, a[1], 1,
                                             IN_META(ctx, 0)->shape[dim]);
    return AG_OK;
}

/* The gradient of slice_backward is the slice of the incoming gradient it wrote. */
static ag_status slice_backward_backward(ag_backward_ctx *ctx) {
    const int64_t *a = ag__bw_attrs(ctx)->ints;
    int dim = (int)a[0];
    ctx->grad_inputs[0] = slice_raw(GRAD_OUT(ctx), dim, a[1], a[2], IN_META(ctx, 0)->shape[dim]);
    return AG_OK;
}

/* The tangent of view, squeeze and unsqueeze: the tangent in the output's shape. A reshape,
 * not the view op: the tangent's strides need not allow a view where the primal's do. */
static ag_status reshape_jvp(ag_jvp_ctx *ctx) {
    const ag_tensor *out = ctx->outputs[0];
    ctx->output_tangents[0] = ag_reshape(TANGENT(ctx, 0), out->ndim, out->shape);
    return AG_OK;
}

/* The other views are linear: their tangent is the same op on the tangent. */
#define VIEW_DEF(var, op_name, fwd, bw, fw)                                                        \
    static ag_op_def var = {.name = op_name,                                                       \
                            .n_inputs = 1,                                                         \
                            .n_outputs = 1,                                                        \
                            .flags = AG_OPF_VIEW,                                                  \
                            .forward = fwd,                                                        \
                            .backward = bw,                                                        \
                            .jvp = fw}
VIEW_DEF(op_view, "view", view_forward, reshape_backward, reshape_jvp);
VIEW_DEF(op_squeeze, "squeeze", view_forward, reshape_backward, reshape_jvp);
VIEW_DEF(op_unsqueeze, "unsqueeze", view_forward, reshape_backward, reshape_jvp);
VIEW_DEF(op_permute, "permute", permute_forward, permute_backward, ag__jvp_linear);
VIEW_DEF(op_transpose, "transpose", permute_forward, permute_backward, ag__jvp_linear);
VIEW_DEF(op_expand, "expand", expand_forward, expand_backward, ag__jvp_linear);
VIEW_DEF(op_slice, "slice", slice_forward, slice_backward, ag__jvp_linear);
VIEW_DEF(op_select, "select", select_forward, select_backward, ag__jvp_linear);
static ag_op_def op_slice_backward = {.name = "slice_backward",
                                      .kernel = "copy",
                                      .n_inputs = 1,
                                      .n_outputs = 1,
                                      .forward = slice_backward_forward,
                                      .backward = slice_backward_backward,
                                      .jvp = ag__jvp_linear};

/* ---- public functions ---- */

/* Runs a view-family op with a resolved shape. */
static ag_tensor *view_as(ag_op_def *op, ag_tensor *a, int ndim, const int64_t *shape) {
    ag_attrs at = {.ints = {0}};
    shape_to_attrs(ndim, shape, &at);
    return run(op, a, &at);
}

/* torch.view: a view in the new shape, or an error when the strides do not allow one. */
ag_tensor *ag_view(ag_tensor *a, int ndim, const int64_t *shape) {
    int64_t s[AG_MAX_DIMS];
    if (!a) return run(&op_view, a, NULL);
    if (infer_shape("view", a, ndim, shape, s) != AG_OK) return NULL;
    return view_as(&op_view, a, ndim, s);
}

/* torch.reshape: a view when the strides allow, else a view of a contiguous copy. */
ag_tensor *ag_reshape(ag_tensor *a, int ndim, const int64_t *shape) {
    int64_t s[AG_MAX_DIMS], strides[AG_MAX_DIMS];
    if (!a) return run(&op_view, a, NULL);
    if (infer_shape("reshape", a, ndim, shape, s) != AG_OK) return NULL;
    if (view_strides(a, ndim, s, strides)) return view_as(&op_view, a, ndim, s);
    ag_scope *scope = ag_scope_begin();
    return ag_scope_return(scope, view_as(&op_view, ag_contiguous(a), ndim, s));
}

/* torch.flatten: reshape merging dims start_dim..end_dim. */
ag_tensor *ag_flatten(ag_tensor *a, int start_dim, int end_dim) {
    if (!a) return run(&op_view, a, NULL);
    int s, e;
    if (ag__wrap_dim("flatten", start_dim, a->ndim, &s) != AG_OK ||
        ag__wrap_dim("flatten", end_dim, a->ndim, &e) != AG_OK)
        return NULL;
    if (s > e) {
        ag__error(AG_ERR_INVALID_ARG, "flatten: start_dim (%d) cannot come after end_dim (%d)",
                  start_dim, end_dim);
        return NULL;
    }
    if (a->ndim == 0) return ag_reshape(a, 1, (int64_t[]){1});
    int64_t shape[AG_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < a->ndim; d++) {
        if (d <= s || d > e)
            shape[nd++] = a->shape[d];
        else
            shape[nd - 1] *= a->shape[d];
    }
    return ag_reshape(a, nd, shape);
}

/* torch.squeeze: drops extent-1 dims (all, or only dim). */
ag_tensor *ag_squeeze(ag_tensor *a, int dim) {
    if (!a) return run(&op_squeeze, a, NULL);
    int only = -1;
    if (dim != AG_ALL_DIMS && ag__wrap_dim("squeeze", dim, a->ndim, &only) != AG_OK) return NULL;
    int64_t shape[AG_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != 1 || (only >= 0 && d != only)) shape[nd++] = a->shape[d];
    return view_as(&op_squeeze, a, nd, shape);
}

/* torch.unsqueeze: inserts an extent-1 dim at dim (in -ndim-1..ndim). */
ag_tensor *ag_unsqueeze(ag_tensor *a, int dim) {
    if (!a) return run(&op_unsqueeze, a, NULL);
    int at;
    if (a->ndim == AG_MAX_DIMS) {
        ag__error(AG_ERR_SHAPE, "unsqueeze: a tensor has at most %d dims", AG_MAX_DIMS);
        return NULL;
    }
    if (ag__wrap_dim("unsqueeze", dim, a->ndim + 1, &at) != AG_OK) return NULL;
    int64_t shape[AG_MAX_DIMS];
    for (int d = 0, src = 0; d <= a->ndim; d++) shape[d] = d == at ? 1 : a->shape[src++];
    return view_as(&op_unsqueeze, a, a->ndim + 1, shape);
}

/* Runs permute or transpose after wrapping each entry of perm (ndim of them). */
static ag_tensor *permute_as(ag_op_def *op, ag_tensor *a, const int *perm) {
    if (!a) return run(op, a, NULL);
    if (a->ndim && !perm) {
        ag__error(AG_ERR_INVALID_ARG, "%s: perm is NULL", op->name);
        return NULL;
    }
    ag_attrs at = {.ints = {0}};
    unsigned seen = 0;
    for (int d = 0; d < a->ndim; d++) {
        int p;
        if (ag__wrap_dim(op->name, perm[d], a->ndim, &p) != AG_OK) return NULL;
        if (seen >> p & 1) {
            ag__error(AG_ERR_INVALID_ARG, "%s: repeated dim %d in the permutation", op->name,
                      perm[d]);
            return NULL;
        }
        seen |= 1u << p;
        at.ints[d] = p;
    }
    return run(op, a, &at);
}

/* torch.permute: result dim i is a's dim perm[i]. */
ag_tensor *ag_permute(ag_tensor *a, const int *perm) {
    return permute_as(&op_permute, a, perm);
}

/* torch.transpose: swaps dim0 and dim1. */
ag_tensor *ag_transpose(ag_tensor *a, int dim0, int dim1) {
    int perm[AG_MAX_DIMS], d0, d1;
    if (!a) return run(&op_transpose, a, NULL);
    if (ag__wrap_dim("transpose", dim0, a->ndim, &d0) != AG_OK ||
        ag__wrap_dim("transpose", dim1, a->ndim, &d1) != AG_OK)
        return NULL;
    for (int d = 0; d < a->ndim; d++) perm[d] = d == d0 ? d1 : d == d1 ? d0 : d;
    return permute_as(&op_transpose, a, perm);
}

/* torch.expand: broadcasts to shape with stride 0 in grown dims. */
ag_tensor *ag_expand(ag_tensor *a, int ndim, const int64_t *shape) {
    geom g;
    if (!a) return run(&op_expand, a, NULL);
    if (expand_geometry(a, ndim, shape, &g) != AG_OK) return NULL;
    return view_as(&op_expand, a, g.ndim, g.shape);
}

/* Wraps dim of a for slice/select, which need at least one dim. */
static ag_status wrap_sliced_dim(const char *op, const ag_tensor *a, int dim, int *out) {
    if (a->ndim == 0)
        return ag__error(AG_ERR_INDEX, "%s: %s() cannot be applied to a 0-dim tensor", op, op);
    return ag__wrap_dim(op, dim, a->ndim, out);
}

/* a[..., start:end:step, ...] along dim, with Python's clamping. */
ag_tensor *ag_slice(ag_tensor *a, int dim, int64_t start, int64_t end, int64_t step) {
    if (!a) return run(&op_slice, a, NULL);
    int d;
    if (wrap_sliced_dim("slice", a, dim, &d) != AG_OK) return NULL;
    if (step <= 0) {
        ag__error(AG_ERR_INVALID_ARG, "slice: slice step must be positive, got %lld",
                  (long long)step);
        return NULL;
    }
    /* Python's slice clamping: negative bounds count from the end, then clip to [0, size]. */
    int64_t size = a->shape[d];
    if (start < 0) start = start + size < 0 ? 0 : start + size;
    if (end < 0) end = end + size < 0 ? 0 : end + size;
    if (start > size) start = size;
    if (end > size) end = size;
    if (end < start) end = start;
    /* (end - start - 1) / step + 1 rounds up without overflowing for a huge step. */
    return slice_raw(a, d, start, step, end == start ? 0 : (end - start - 1) / step + 1);
}

/* a[..., index, ...]: removes dim (negative index counts from the end). */
ag_tensor *ag_select(ag_tensor *a, int dim, int64_t index) {
    if (!a) return run(&op_select, a, NULL);
    int d;
    if (wrap_sliced_dim("select", a, dim, &d) != AG_OK) return NULL;
    int64_t size = a->shape[d];
    if (index < -size || index >= size) {
        ag__error(AG_ERR_INDEX,
                  "select: index %lld is out of bounds for dimension %d with size %lld",
                  (long long)index, d, (long long)size);
        return NULL;
    }
    ag_attrs at = {.ints = {d, index < 0 ? index + size : index}};
    return run(&op_select, a, &at);
}

/* Registers the view ops and slice_backward. */
ag_status ag__register_view_ops(void) {
    static ag_op_def *const ops[] = {
        &op_view,   &op_squeeze, &op_unsqueeze, &op_permute,        &op_transpose,
        &op_expand, &op_slice,   &op_select,    &op_slice_backward,
    };
    return ag__register_all(ops, (int)(sizeof ops / sizeof ops[0]));
}
