/* Indexing and joining: index_select, index_add, gather, scatter_add (one backend kernel
 * each, key dtype = the data's), cat and stack (copies into slices of one output), and
 * one_hot (composite). Index tensors are int64 and never differentiable; backward
 * functions are written in ag ops, so every op here is differentiable to any order. */
#include <stdlib.h>
#include <string.h>
#include "ops_common.h"

/* ---- shared helpers ---- */

/* Extent of dim d, with a 0-dim tensor counting as one element along dim 0. */
static int64_t size_at(const ag_tensor *t, int d) {
    return t->ndim ? t->shape[d] : 1;
}

/* Number of dims, a 0-dim tensor counting as 1-D (as PyTorch's index ops do). */
static int dims_of(const ag_tensor *t) {
    return t->ndim ? t->ndim : 1;
}

/* Kernel descriptor of t; a 0-dim t is shown as 1-D [1], since index kernels need a dim. */
static void kt_dims(const ag_tensor *t, ag_kernel_tensor *kt) {
    ag__kt(t, kt);
    if (kt->ndim) return;
    kt->ndim = 1;
    kt->shape[0] = 1;
    kt->strides[0] = 1;
}

/* Allocates an output in input 0's dtype with (ndim, shape) and runs the op's kernel on all
 * inputs; attrs ints[0] is the (non-negative) dim. */
static ag_status run_index_kernel(ag_op_ctx *ctx, int ndim, const int64_t *shape) {
    ag_tensor *x = ctx->inputs[0];
    ag_tensor *out = ag__tensor_alloc(x->dtype, ndim, shape, x->storage->device);
    ag_kernel_tensor kin[3], kout;
    for (int i = 0; i < ctx->n_inputs; i++) kt_dims(ctx->inputs[i], &kin[i]);
    if (out) kt_dims(out, &kout);
    return ag__forward_kernel(ctx, x->dtype, kin, out, &kout, ctx->attrs);
}

/* Zeros of a node input's shape, dtype and device: a broadcast 0-dim zero, which the
 * index_add/scatter_add kernels read like any strided input. */
static ag_tensor *zeros_of_input(const ag_backward_ctx *ctx, int i) {
    const ag_meta *m = IN_META(ctx, i);
    return ag_expand(ag__scalar_on(m->dtype, 0.0, m->device), m->ndim, m->shape);
}

/* Checks what every index op needs: an int64 index and a dim inside the data's dims. */
static ag_status check_index(const char *op, const ag_tensor *data, const ag_tensor *index, int dim,
                             int *wrapped) {
    if (index->dtype != AG_I64)
        return ag__error(AG_ERR_DTYPE, "%s: expected an int64 index tensor, got %s", op,
                         ag_dtype_name(index->dtype));
    return ag__wrap_dim(op, dim, data->ndim, wrapped);
}

/* Checks that two data tensors of one op share a dtype (the kernels need one). */
static ag_status check_same_dtype(const char *op, const ag_tensor *a, const ag_tensor *b) {
    if (a->dtype == b->dtype) return AG_OK;
    char da[192], db[192];
    return ag__error(AG_ERR_DTYPE, "%s: self (%s) and source (%s) must have the same dtype", op,
                     ag__describe(a, da, sizeof da), ag__describe(b, db, sizeof db));
}

/* Checks that index's extents are <= ref's in every dim (except `skip`, -1 for none). */
static ag_status check_index_extents(const char *op, const ag_tensor *index, const ag_tensor *ref,
                                     int skip, const char *ref_name) {
    char di[160], dr[160];
    ag__shape_fmt(di, sizeof di, index->ndim, index->shape);
    ag__shape_fmt(dr, sizeof dr, ref->ndim, ref->shape);
    if (dims_of(index) != dims_of(ref))
        return ag__error(AG_ERR_SHAPE,
                         "%s: index %s must have the same number of dimensions as %s %s", op, di,
                         ref_name, dr);
    for (int d = 0; d < index->ndim; d++)
        if (d != skip && size_at(index, d) > size_at(ref, d))
            return ag__error(AG_ERR_SHAPE,
                             "%s: size does not match at dimension %d: expected index %s to be "
                             "smaller than %s %s apart from dimension %d",
                             op, d, di, ref_name, dr, skip);
    return AG_OK;
}

/* ---- index_select / index_add ---- */

static ag_status index_select_forward(ag_op_ctx *ctx) {
    ag_tensor *x = ctx->inputs[0];
    int64_t shape[AG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    if (x->ndim) shape[ctx->attrs->ints[0]] = ctx->inputs[1]->numel;
    return run_index_kernel(ctx, x->ndim, shape);
}

static ag_status index_select_backward(ag_backward_ctx *ctx) {
    int dim = (int)ag__bw_attrs(ctx)->ints[0];
    ctx->grad_inputs[0] = ag_index_add(zeros_of_input(ctx, 0), dim, SAVED(ctx, 1), GRAD_OUT(ctx));
    return AG_OK;
}

/* index_add and scatter_add: the output has self's (input 0's) shape. */
static ag_status self_shaped_forward(ag_op_ctx *ctx) {
    return run_index_kernel(ctx, ctx->inputs[0]->ndim, ctx->inputs[0]->shape);
}

static ag_status index_add_backward(ag_backward_ctx *ctx) {
    ag_tensor *g = GRAD_OUT(ctx);
    int dim = (int)ag__bw_attrs(ctx)->ints[0];
    if (NEEDS(ctx, 0)) ctx->grad_inputs[0] = g;
    if (NEEDS(ctx, 2)) ctx->grad_inputs[2] = ag_index_select(g, dim, SAVED(ctx, 1));
    return AG_OK;
}

static ag_op_def op_index_select = {.name = "index_select",
                                    .kernel = "index_select",
                                    .n_inputs = 2,
                                    .n_outputs = 1,
                                    .save_inputs = 2,
                                    .nondiff_inputs = 2,
                                    .forward = index_select_forward,
                                    .backward = index_select_backward,
                                    .jvp = ag__jvp_linear};
static ag_op_def op_index_add = {.name = "index_add",
                                 .kernel = "index_add",
                                 .n_inputs = 3,
                                 .n_outputs = 1,
                                 .save_inputs = 2,
                                 .nondiff_inputs = 2,
                                 .forward = self_shaped_forward,
                                 .backward = index_add_backward,
                                 .jvp = ag__jvp_linear};

/* Checks the index of index_select/index_add: a vector (or one 0-dim entry). */
static ag_status check_index_vector(const char *op, const ag_tensor *data, const ag_tensor *index,
                                    int dim, int *wrapped) {
    ag_status st = check_index(op, data, index, dim, wrapped);
    if (st == AG_OK && index->ndim > 1)
        st = ag__error(AG_ERR_SHAPE, "%s: index is supposed to be a vector, got %d dims", op,
                       index->ndim);
    if (st == AG_OK && data->ndim == 0 && index->numel != 1)
        st = ag__error(AG_ERR_INDEX, "%s: a 0-dim input takes exactly one index, got %lld", op,
                       (long long)index->numel);
    return st;
}

/* torch.index_select. */
ag_tensor *ag_index_select(ag_tensor *a, int dim, ag_tensor *index) {
    ag_tensor *in[2] = {a, index};
    if (!a || !index) return ag__dispatch1(&op_index_select, 2, in, NULL);
    int d;
    if (check_index_vector("index_select", a, index, dim, &d) != AG_OK) return NULL;
    ag_attrs at = {.ints = {d}};
    return ag__dispatch1(&op_index_select, 2, in, &at);
}

/* torch.index_add (out of place). */
ag_tensor *ag_index_add(ag_tensor *a, int dim, ag_tensor *index, ag_tensor *source) {
    ag_tensor *in[3] = {a, index, source};
    if (!a || !index || !source) return ag__dispatch1(&op_index_add, 3, in, NULL);
    int d;
    ag_status st = check_index_vector("index_add", a, index, dim, &d);
    if (st == AG_OK) st = check_same_dtype("index_add", a, source);
    char sa[160], ss[160];
    ag__shape_fmt(sa, sizeof sa, a->ndim, a->shape);
    ag__shape_fmt(ss, sizeof ss, source->ndim, source->shape);
    if (st == AG_OK && source->ndim != a->ndim)
        st = ag__error(AG_ERR_SHAPE, "index_add: source %s must have as many dims as self %s", ss,
                       sa);
    for (int k = 0; st == AG_OK && k < dims_of(a); k++) {
        int64_t want = k == d ? index->numel : size_at(a, k);
        if (size_at(source, k) != want)
            st = ag__error(AG_ERR_SHAPE,
                           "index_add: source %s does not fit self %s with %lld indices along "
                           "dim %d (expected extent %lld at dim %d)",
                           ss, sa, (long long)index->numel, d, (long long)want, k);
    }
    if (st != AG_OK) return NULL;
    ag_attrs at = {.ints = {d}};
    return ag__dispatch1(&op_index_add, 3, in, &at);
}

/* ---- gather / scatter_add ---- */

static ag_status gather_forward(ag_op_ctx *ctx) {
    return run_index_kernel(ctx, ctx->inputs[1]->ndim, ctx->inputs[1]->shape);
}

static ag_status gather_backward(ag_backward_ctx *ctx) {
    int dim = (int)ag__bw_attrs(ctx)->ints[0];
    ctx->grad_inputs[0] = ag_scatter_add(zeros_of_input(ctx, 0), dim, SAVED(ctx, 1), GRAD_OUT(ctx));
    return AG_OK;
}

/* Pads t with trailing zeros in every dim up to shape (t's extents are <= shape's). */
static ag_tensor *pad_to(ag_tensor *t, int ndim, const int64_t *shape) {
    for (int d = 0; d < ndim && t; d++) {
        if (t->shape[d] == shape[d]) continue;
        int64_t zshape[AG_MAX_DIMS];
        memcpy(zshape, t->shape, sizeof zshape);
        zshape[d] = shape[d] - t->shape[d];
        ag_tensor *parts[2] = {t, ag_expand(ag__scalar_like(t, 0.0), ndim, zshape)};
        t = ag_cat(2, parts, d);
    }
    return t;
}

static ag_status scatter_add_backward(ag_backward_ctx *ctx) {
    ag_tensor *g = GRAD_OUT(ctx);
    int dim = (int)ag__bw_attrs(ctx)->ints[0];
    if (NEEDS(ctx, 0)) ctx->grad_inputs[0] = g;
    if (NEEDS(ctx, 2)) {
        /* src elements beyond the index's extents were never scattered: zero gradient. */
        const ag_meta *m = IN_META(ctx, 2);
        ctx->grad_inputs[2] = pad_to(ag_gather(g, dim, SAVED(ctx, 1)), m->ndim, m->shape);
    }
    return AG_OK;
}

static ag_op_def op_gather = {.name = "gather",
                              .kernel = "gather",
                              .n_inputs = 2,
                              .n_outputs = 1,
                              .save_inputs = 2,
                              .nondiff_inputs = 2,
                              .forward = gather_forward,
                              .backward = gather_backward,
                              .jvp = ag__jvp_linear};
static ag_op_def op_scatter_add = {.name = "scatter_add",
                                   .kernel = "scatter_add",
                                   .n_inputs = 3,
                                   .n_outputs = 1,
                                   .save_inputs = 2,
                                   .nondiff_inputs = 2,
                                   .forward = self_shaped_forward,
                                   .backward = scatter_add_backward,
                                   .jvp = ag__jvp_linear};

/* torch.gather. */
ag_tensor *ag_gather(ag_tensor *a, int dim, ag_tensor *index) {
    ag_tensor *in[2] = {a, index};
    if (!a || !index) return ag__dispatch1(&op_gather, 2, in, NULL);
    int d;
    if (check_index("gather", a, index, dim, &d) != AG_OK ||
        check_index_extents("gather", index, a, d, "input") != AG_OK)
        return NULL;
    ag_attrs at = {.ints = {d}};
    return ag__dispatch1(&op_gather, 2, in, &at);
}

/* torch.scatter_add (out of place). */
ag_tensor *ag_scatter_add(ag_tensor *a, int dim, ag_tensor *index, ag_tensor *src) {
    ag_tensor *in[3] = {a, index, src};
    if (!a || !index || !src) return ag__dispatch1(&op_scatter_add, 3, in, NULL);
    int d;
    if (check_index("scatter_add", a, index, dim, &d) != AG_OK ||
        check_same_dtype("scatter_add", a, src) != AG_OK ||
        check_index_extents("scatter_add", index, src, -1, "src") != AG_OK ||
        check_index_extents("scatter_add", index, a, d, "self") != AG_OK)
        return NULL;
    ag_attrs at = {.ints = {d}};
    return ag__dispatch1(&op_scatter_add, 3, in, &at);
}

/* ---- cat / stack ---- */

/* Empty 1-D tensors are left out of cat whatever the other shapes, as in PyTorch. */
static bool cat_skips(const ag_tensor *t) {
    return t->ndim == 1 && t->shape[0] == 0;
}

/* cat: attrs ints[0] = dim (non-negative); inputs checked by ag_cat. */
static ag_status cat_forward(ag_op_ctx *ctx) {
    int dim = (int)ctx->attrs->ints[0];
    const ag_tensor *ref = ctx->inputs[0];
    ag_dtype dtype = ref->dtype;
    int64_t total = 0;
    for (int i = 0; i < ctx->n_inputs; i++) {
        const ag_tensor *t = ctx->inputs[i];
        dtype = ag__promote(dtype, t->dtype);
        if (cat_skips(t)) continue;
        ref = t;
        total += t->shape[dim];
    }
    int64_t shape[AG_MAX_DIMS];
    memcpy(shape, ref->shape, sizeof shape);
    shape[dim] = total;
    ag_tensor *out = ag__tensor_alloc(dtype, ref->ndim, shape, ref->storage->device);
    if (!out) return ag_last_status();
    ag_status st = AG_OK;
    int64_t at = 0;
    for (int i = 0; i < ctx->n_inputs && st == AG_OK; i++) {
        ag_tensor *t = ctx->inputs[i];
        if (cat_skips(t)) continue;
        /* The copy kernel converts each input to the output dtype on the way. */
        ag_tensor *part = ag__tensor_view(out, t->ndim, t->shape, out->strides,
                                          out->offset + at * out->strides[dim]);
        st = part ? ag__copy_into(part, t) : ag_last_status();
        ag_release(part);
        at += t->shape[dim];
    }
    if (st != AG_OK) {
        ag_release(out);
        return st;
    }
    ctx->outputs[0] = out;
    return AG_OK;
}

static ag_status cat_backward(ag_backward_ctx *ctx) {
    ag_tensor *g = GRAD_OUT(ctx);
    int dim = (int)ag__bw_attrs(ctx)->ints[0];
    int64_t at = 0;
    for (int i = 0; i < ctx->node->n_inputs; i++) {
        const ag_meta *m = IN_META(ctx, i);
        bool skipped = m->ndim == 1 && m->shape[0] == 0;
        int64_t len = skipped ? 0 : m->shape[dim];
        if (NEEDS(ctx, i)) {
            ag_tensor *part = ag_slice(g, dim, at, at + len, 1);
            /* A skipped input gets an empty gradient of its own shape [0]. */
            if (skipped) part = ag_reshape(part, 1, m->shape);
            ctx->grad_inputs[i] = ag_to_dtype(part, m->dtype);
        }
        at += len;
    }
    return AG_OK;
}

static ag_op_def op_cat = {.name = "cat",
                           .kernel = "copy",
                           .n_inputs = -1,
                           .n_outputs = 1,
                           .forward = cat_forward,
                           .backward = cat_backward,
                           .jvp = ag__jvp_linear};

/* Checks cat's inputs against each other; *wrapped receives the non-negative dim. */
static ag_status check_cat(int n, ag_tensor *const *tensors, int dim, int *wrapped) {
    const ag_tensor *ref = NULL;
    int ref_i = 0;
    for (int i = 0; i < n; i++) {
        const ag_tensor *t = tensors[i];
        if (t->ndim == 0)
            return ag__error(AG_ERR_SHAPE,
                             "cat: zero-dimensional tensor (at position %d) cannot be "
                             "concatenated",
                             i);
        if (!ref && !cat_skips(t)) {
            ref = t;
            ref_i = i;
        }
    }
    ag_status st = ag__wrap_dim("cat", dim, ref ? ref->ndim : 1, wrapped);
    for (int i = 0; ref && i < n && st == AG_OK; i++) {
        const ag_tensor *t = tensors[i];
        if (cat_skips(t)) continue;
        bool fits = t->ndim == ref->ndim;
        for (int d = 0; fits && d < t->ndim; d++)
            fits = d == *wrapped || t->shape[d] == ref->shape[d];
        if (fits) continue;
        char a[160], b[160];
        st = ag__error(AG_ERR_SHAPE,
                       "cat: sizes of tensors must match except in dimension %d, but tensor %d "
                       "has shape %s and tensor %d has shape %s",
                       *wrapped, i, ag__shape_fmt(b, sizeof b, t->ndim, t->shape), ref_i,
                       ag__shape_fmt(a, sizeof a, ref->ndim, ref->shape));
    }
    return st;
}

/* torch.cat with type promotion; empty 1-D inputs are skipped. */
ag_tensor *ag_cat(int n, ag_tensor *const *tensors, int dim) {
    if (n < 1 || !tensors) {
        ag__error_if_none(AG_ERR_INVALID_ARG, "cat: expected a non-empty list of tensors");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!tensors[i]) return ag__dispatch1(&op_cat, n, tensors, NULL);
    int d;
    if (check_cat(n, tensors, dim, &d) != AG_OK) return NULL;
    ag_attrs at = {.ints = {d}};
    return ag__dispatch1(&op_cat, n, tensors, &at);
}

/* torch.stack: unsqueeze each input at dim, then cat. */
ag_tensor *ag_stack(int n, ag_tensor *const *tensors, int dim) {
    if (n < 1 || !tensors) {
        ag__error_if_none(AG_ERR_INVALID_ARG, "stack: expected a non-empty list of tensors");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!tensors[i]) return ag_cat(n, tensors, dim); /* reports the NULL input */
    const ag_tensor *t0 = tensors[0];
    for (int i = 1; i < n; i++) {
        const ag_tensor *t = tensors[i];
        if (t->ndim == t0->ndim &&
            memcmp(t->shape, t0->shape, (size_t)t->ndim * sizeof *t->shape) == 0)
            continue;
        char a[160], b[160];
        ag__error(AG_ERR_SHAPE,
                  "stack: stack expects each tensor to be equal size, but got %s at entry 0 "
                  "and %s at entry %d",
                  ag__shape_fmt(a, sizeof a, t0->ndim, t0->shape),
                  ag__shape_fmt(b, sizeof b, t->ndim, t->shape), i);
        return NULL;
    }
    int d;
    if (t0->ndim == AG_MAX_DIMS) {
        ag__error(AG_ERR_SHAPE, "stack: a tensor has at most %d dims", AG_MAX_DIMS);
        return NULL;
    }
    if (ag__wrap_dim("stack", dim, t0->ndim + 1, &d) != AG_OK) return NULL;
    ag_tensor **parts = ag__malloc((size_t)n * sizeof *parts);
    if (!parts) {
        ag__error(AG_ERR_OUT_OF_MEMORY, "stack: out of host memory");
        return NULL;
    }
    ag_scope *scope = ag_scope_begin();
    for (int i = 0; i < n; i++) parts[i] = ag_unsqueeze(tensors[i], d);
    ag_tensor *r = ag_cat(n, parts, d);
    free(parts);
    return ag_scope_return(scope, r);
}

/* ---- one_hot ---- */

/* Value of a reduction of an int64 tensor (max or min over all elements). */
static ag_status extreme(ag_tensor *(*reduce)(ag_tensor *, int, const int *, bool), ag_tensor *t,
                         int64_t *value) {
    ag_tensor *r = reduce(t, 0, NULL, false);
    /* Read as int64, not through ag_item's double: INT64_MAX rounds to 2^63 there, which
     * does not convert back (undefined behaviour). */
    *value = 0;
    return r ? ag_to_host(r, value, sizeof *value) : ag_last_status();
}

/* torch.nn.functional.one_hot: eq(unsqueeze(index, -1), arange(num_classes)). */
ag_tensor *ag_one_hot(ag_tensor *index, int64_t num_classes) {
    if (!index) {
        ag__error_if_none(AG_ERR_INVALID_ARG, "one_hot: input is NULL");
        return NULL;
    }
    if (index->dtype != AG_I64) {
        ag__error(AG_ERR_DTYPE, "one_hot: expected an int64 index tensor, got %s",
                  ag_dtype_name(index->dtype));
        return NULL;
    }
    if (num_classes < -1) {
        ag__error(AG_ERR_INVALID_ARG, "one_hot: num_classes must be -1 or >= 0, got %lld",
                  (long long)num_classes);
        return NULL;
    }
    if (num_classes == -1 && index->numel == 0) {
        ag__error(AG_ERR_INVALID_ARG,
                  "one_hot: can not infer the total number of classes from an empty tensor");
        return NULL;
    }
    ag_scope *scope = ag_scope_begin();
    ag_status st = AG_OK;
    int64_t lo = 0, hi = -1;
    if (index->numel) {
        st = extreme(ag_min, index, &lo);
        if (st == AG_OK) st = extreme(ag_max, index, &hi);
    }
    if (st == AG_OK && num_classes == -1 && hi == INT64_MAX)
        st = ag__error(AG_ERR_INDEX, "one_hot: class value %lld leaves no num_classes to infer",
                       (long long)hi);
    if (st == AG_OK && num_classes == -1) num_classes = hi + 1;
    if (st == AG_OK && lo < 0)
        st = ag__error(AG_ERR_INDEX, "one_hot: class values must be non-negative, got %lld",
                       (long long)lo);
    if (st == AG_OK && hi >= num_classes)
        st = ag__error(AG_ERR_INDEX,
                       "one_hot: class values must be smaller than num_classes (%lld), got %lld",
                       (long long)num_classes, (long long)hi);
    ag_tensor *r = NULL;
    if (st == AG_OK) {
        ag_tensor *classes =
            ag_to_device(ag_arange(AG_I64, 0, (double)num_classes, 1), index->storage->device);
        r = ag_eq(ag_unsqueeze(index, -1), classes);
    }
    return ag_scope_return(scope, r);
}

/* Registers index_select, index_add, gather, scatter_add and cat. */
ag_status ag__register_index_ops(void) {
    static ag_op_def *const ops[] = {&op_index_select, &op_index_add, &op_gather, &op_scatter_add,
                                     &op_cat};
    return ag__register_all(ops, (int)(sizeof ops / sizeof ops[0]));
}
