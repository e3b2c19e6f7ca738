/* Argument checks of kernel calls that every backend shares (cpu, opencl, cuda): the argument
 * block, dtypes and dims, and the rules of matmul, the index kernels, the optimizer updates,
 * the reductions and softmax, with the splits of the operands that those rules define.
 * Failures go through the backend's error setter (ag_kt_fail_fn), so every backend words
 * them alike: as the cpu backend always has, which tests match. Header-only (static inline)
 * like kernel_util.h; it compiles as C11 and as C++ (nvcc). */
#ifndef AG_BACKENDS_COMMON_KERNEL_CHECKS_H
#define AG_BACKENDS_COMMON_KERNEL_CHECKS_H

#include "kernel_util.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the argument block, dtypes, dims ---- */

/* Checks the argument block of kernel `name`: struct size, tensor counts, NULL pointers, ndim
 * ranges, non-negative extents and buffers, and with `dtypes` also the dtypes (dtypes[i] for
 * input i, then the outputs; NULL leaves them to the caller). */
static inline ag_status ag_kt_check_call(const ag_kernel_args *args, const char *name, int n_inputs,
                                         int n_outputs, const ag_dtype *dtypes,
                                         ag_kt_fail_fn fail) {
    if (!args || args->struct_size < sizeof(ag_kernel_args))
        return fail(AG_ERR_INVALID_ARG, "%s: missing or too small ag_kernel_args", name);
    if (args->n_inputs != n_inputs || args->n_outputs != n_outputs)
        return fail(AG_ERR_INVALID_ARG, "%s: takes %d inputs and %d outputs, got %d and %d", name,
                    n_inputs, n_outputs, args->n_inputs, args->n_outputs);
    if ((n_inputs && !args->inputs) || (n_outputs && !args->outputs) || !args->attrs)
        return fail(AG_ERR_INVALID_ARG, "%s: NULL inputs, outputs or attrs", name);
    for (int i = 0; i < n_inputs + n_outputs; i++) {
        const ag_kernel_tensor *t = i < n_inputs ? &args->inputs[i] : &args->outputs[i - n_inputs];
        const char *role = i < n_inputs ? "input" : "output";
        const int index = i < n_inputs ? i : i - n_inputs;
        if (t->ndim < 0 || t->ndim > AG_MAX_DIMS)
            return fail(AG_ERR_INVALID_ARG, "%s: %s %d has ndim %d (must be 0..%d)", name, role,
                        index, t->ndim, AG_MAX_DIMS);
        for (int d = 0; d < t->ndim; d++)
            if (t->shape[d] < 0)
                return fail(AG_ERR_SHAPE, "%s: %s %d has negative extent %lld at dim %d", name,
                            role, index, (long long)t->shape[d], d);
        if (!t->data && ag_kt_numel(t) > 0)
            return fail(AG_ERR_INVALID_ARG, "%s: %s %d has no buffer", name, role, index);
        if (dtypes && t->dtype != dtypes[i])
            return fail(AG_ERR_DTYPE, "%s: %s %d is %s, expected %s", name, role, index,
                        ag_dtype_name(t->dtype), ag_dtype_name(dtypes[i]));
    }
    return AG_OK;
}

/* Checks that t has `dtype`; `role` names t in the message ("input 1"). */
static inline ag_status ag_kt_check_dtype(const char *name, const ag_kernel_tensor *t,
                                          const char *role, ag_dtype dtype, ag_kt_fail_fn fail) {
    if (t->dtype == dtype) return AG_OK;
    return fail(AG_ERR_DTYPE, "%s: %s is %s, expected %s", name, role, ag_dtype_name(t->dtype),
                ag_dtype_name(dtype));
}

/* Checks that `dtype`, the dtype of the tensor named `role`, is a float dtype (float32 or
 * float64): the key dtypes of the kernels that exist for floats only. */
static inline ag_status ag_kt_check_float(const char *name, const char *role, ag_dtype dtype,
                                          ag_kt_fail_fn fail) {
    if (dtype == AG_F32 || dtype == AG_F64) return AG_OK;
    return fail(AG_ERR_DTYPE, "%s: %s is %s, expected float32 or float64", name, role,
                ag_dtype_name(dtype));
}

/* Checks that t has `dtype` and exactly the shape of `out` (the output). */
static inline ag_status ag_kt_check_like(const char *name, const ag_kernel_tensor *t,
                                         const char *role, ag_dtype dtype,
                                         const ag_kernel_tensor *out, ag_kt_fail_fn fail) {
    const ag_status st = ag_kt_check_dtype(name, t, role, dtype, fail);
    if (st != AG_OK || ag_kt_same_shape(t, out)) return st;
    char a[160], b[160];
    return fail(AG_ERR_SHAPE, "%s: %s %s has shape %s but the output has shape %s", name,
                ag_dtype_name(dtype), role, ag_kt_shape_str(t, a, sizeof a),
                ag_kt_shape_str(out, b, sizeof b));
}

/* Checks that `dim` is a dimension of t. */
static inline ag_status ag_kt_check_dim(const char *name, const ag_kernel_tensor *t, int64_t dim,
                                        ag_kt_fail_fn fail) {
    if (dim >= 0 && dim < t->ndim) return AG_OK;
    char s[160];
    return fail(AG_ERR_INVALID_ARG, "%s: dim %lld is out of range for a %s tensor of shape %s",
                name, (long long)dim, ag_dtype_name(t->dtype), ag_kt_shape_str(t, s, sizeof s));
}

/* ---- matmul ---- */

/* Checks a matmul call whose block (2 inputs, 1 output) was checked: a[..., m, k] @
 * b[..., k, n] -> out[..., m, n], every operand of `dtype` and of one ndim >= 2, the batch
 * dims of a and b of out's extents (the core broadcasts them). */
static inline ag_status ag_kt_check_matmul(const ag_kernel_args *args, ag_dtype dtype,
                                           ag_kt_fail_fn fail) {
    const ag_kernel_tensor *a = &args->inputs[0], *b = &args->inputs[1], *out = &args->outputs[0];
    ag_status st;
    if ((st = ag_kt_check_dtype("matmul", a, "input 0", dtype, fail)) != AG_OK ||
        (st = ag_kt_check_dtype("matmul", b, "input 1", dtype, fail)) != AG_OK ||
        (st = ag_kt_check_dtype("matmul", out, "output", dtype, fail)) != AG_OK)
        return st;
    const int nd = out->ndim;
    bool fits = nd >= 2 && a->ndim == nd && b->ndim == nd;
    for (int d = 0; fits && d < nd - 2; d++)
        fits = a->shape[d] == out->shape[d] && b->shape[d] == out->shape[d];
    fits = fits && a->shape[nd - 2] == out->shape[nd - 2] && a->shape[nd - 1] == b->shape[nd - 2] &&
           b->shape[nd - 1] == out->shape[nd - 1];
    if (fits) return AG_OK;
    char sa[160], sb[160], so[160];
    return fail(AG_ERR_SHAPE, "matmul: %s shapes %s @ %s do not give output shape %s",
                ag_dtype_name(dtype), ag_kt_shape_str(a, sa, sizeof sa),
                ag_kt_shape_str(b, sb, sizeof sb), ag_kt_shape_str(out, so, sizeof so));
}

/* ---- index kernels: index_select, gather, index_add, scatter_add ---- */

/* The name of input i of an index kernel in messages; input 1 is always the index. */
static inline const char *ag_kt_index_role(int i) {
    static const char *const roles[] = {"input 0", "index", "input 2"};
    return roles[i];
}

/* Checks the dtypes of an index kernel call whose block was checked (the index int64, the
 * other inputs and the output `dtype`) and that dim = attrs->ints[0], which *dim receives, is
 * a dim of input 0. */
static inline ag_status ag_kt_check_index_args(const ag_kernel_args *args, const char *name,
                                               ag_dtype dtype, int *dim, ag_kt_fail_fn fail) {
    ag_status st = AG_OK;
    for (int i = 0; i < args->n_inputs && st == AG_OK; i++)
        st = ag_kt_check_dtype(name, &args->inputs[i], ag_kt_index_role(i), i == 1 ? AG_I64 : dtype,
                               fail);
    if (st == AG_OK) st = ag_kt_check_dtype(name, &args->outputs[0], "output", dtype, fail);
    if (st == AG_OK) st = ag_kt_check_dim(name, &args->inputs[0], args->attrs->ints[0], fail);
    *dim = (int)args->attrs->ints[0];
    return st;
}

/* The AG_ERR_SHAPE failure of an index kernel, listing every shape of the call. */
static inline ag_status ag_kt_index_shape_error(const ag_kernel_args *args, const char *name,
                                                int dim, ag_kt_fail_fn fail) {
    char msg[512] = "", buf[160];
    size_t used = 0;
    for (int i = 0; i < args->n_inputs && used < sizeof msg; i++)
        used += (size_t)snprintf(msg + used, sizeof msg - used, "%s %s, ", ag_kt_index_role(i),
                                 ag_kt_shape_str(&args->inputs[i], buf, sizeof buf));
    return fail(AG_ERR_SHAPE, "%s: %s shapes %soutput %s do not fit along dim %d", name,
                ag_dtype_name(args->outputs[0].dtype), msg,
                ag_kt_shape_str(&args->outputs[0], buf, sizeof buf), dim);
}

/* True when t has ndim dims with t.shape[d] == ref[d] (exact) or <= ref[d] (!exact), for
 * every d except `skip`. */
static inline bool ag_kt_extents_fit(const ag_kernel_tensor *t, int ndim, const int64_t *ref,
                                     int skip, bool exact) {
    if (t->ndim != ndim) return false;
    for (int d = 0; d < ndim; d++)
        if (d != skip && (exact ? t->shape[d] != ref[d] : t->shape[d] > ref[d])) return false;
    return true;
}

/* Checks index_select(x, index[n]) (`select`) or gather(x, index) -> out, whose block (2
 * inputs, 1 output) was checked, with data of `dtype`; *dim receives the dim. index_select's
 * out is x's shape with the index's length at dim; gather's out is the index's shape, which
 * is at most x's off dim. */
static inline ag_status ag_kt_check_take(const ag_kernel_args *args, const char *name,
                                         ag_dtype dtype, bool select, int *dim,
                                         ag_kt_fail_fn fail) {
    const ag_status st = ag_kt_check_index_args(args, name, dtype, dim, fail);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *x = &args->inputs[0], *index = &args->inputs[1];
    const ag_kernel_tensor *out = &args->outputs[0];
    bool fits;
    if (select) {
        fits = index->ndim == 1 && ag_kt_extents_fit(out, x->ndim, x->shape, *dim, true) &&
               out->shape[*dim] == index->shape[0];
    } else {
        fits = ag_kt_extents_fit(index, x->ndim, x->shape, *dim, false) &&
               ag_kt_extents_fit(out, index->ndim, index->shape, -1, true);
    }
    return fits ? AG_OK : ag_kt_index_shape_error(args, name, *dim, fail);
}

/* Checks index_add(self, index[n], source) (`index_add`) or scatter_add(self, index, src)
 * -> out (self's shape), whose block (3 inputs, 1 output) was checked, with data of `dtype`;
 * *dim receives the dim and *walk the tensor whose shape the accumulation covers. index_add's
 * source (the walk) is self's shape with the index's length at dim; scatter_add's index (the
 * walk) is at most src everywhere and at most self off dim. */
static inline ag_status ag_kt_check_put_add(const ag_kernel_args *args, const char *name,
                                            ag_dtype dtype, bool index_add, int *dim,
                                            const ag_kernel_tensor **walk, ag_kt_fail_fn fail) {
    const ag_status st = ag_kt_check_index_args(args, name, dtype, dim, fail);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *self = &args->inputs[0], *index = &args->inputs[1];
    const ag_kernel_tensor *src = &args->inputs[2], *out = &args->outputs[0];
    bool fits = ag_kt_extents_fit(out, self->ndim, self->shape, -1, true);
    if (index_add) {
        fits = fits && index->ndim == 1 &&
               ag_kt_extents_fit(src, self->ndim, self->shape, *dim, true) &&
               src->shape[*dim] == index->shape[0];
        *walk = src;
    } else {
        fits = fits && ag_kt_extents_fit(index, src->ndim, src->shape, -1, false) &&
               ag_kt_extents_fit(index, self->ndim, self->shape, *dim, false);
        *walk = index;
    }
    return fits ? AG_OK : ag_kt_index_shape_error(args, name, *dim, fail);
}

/* The three views of an index kernel's walk over the shape of `walk` (each keeping its own
 * buffer, offset and dtype): v[0] `target`, the tensor indexed along dim, with stride 0 at
 * dim; v[1] `values`; v[2] the index, whose 1-D index (index_select, index_add: `along`)
 * steps along dim only. Element i of the walk is v[0]'s element plus the index value times
 * *step, target's stride at dim. */
static inline void ag_kt_index_views(const ag_kernel_tensor *walk, const ag_kernel_tensor *target,
                                     const ag_kernel_tensor *values, const ag_kernel_tensor *index,
                                     int dim, bool along, ag_kernel_tensor v[3], int64_t *step) {
    v[0] = *target;
    v[1] = *values;
    v[2] = *index;
    for (int i = 0; i < 3; i++) {
        v[i].ndim = walk->ndim;
        for (int d = 0; d < walk->ndim; d++) v[i].shape[d] = walk->shape[d];
    }
    for (int d = 0; d < walk->ndim; d++) {
        v[0].strides[d] = d == dim ? 0 : target->strides[d];
        v[1].strides[d] = values->strides[d];
        v[2].strides[d] = along ? (d == dim ? index->strides[0] : 0) : index->strides[d];
    }
    *step = target->strides[dim];
}

/* ---- optimizer updates: sgd_update, adam_update ---- */

/* True when two kernel tensors are the same view of the same buffer. */
static inline bool ag_kt_same_view(const ag_kernel_tensor *a, const ag_kernel_tensor *b) {
    if (a->data != b->data || a->offset != b->offset || a->dtype != b->dtype || a->ndim != b->ndim)
        return false;
    const size_t bytes = (size_t)a->ndim * sizeof a->shape[0];
    return memcmp(a->shape, b->shape, bytes) == 0 && memcmp(a->strides, b->strides, bytes) == 0;
}

/* Checks an update whose block (n inputs, n - 1 outputs) was checked: the inputs (param,
 * grad, state...; named by `roles`) of the float dtype `dtype` and of the output's shape, and
 * outputs (param, state...) that are the param and state inputs themselves, since updates
 * are in place. */
static inline ag_status ag_kt_check_update(const ag_kernel_args *args, const char *name,
                                           const char *const *roles, ag_dtype dtype,
                                           ag_kt_fail_fn fail) {
    ag_status st = ag_kt_check_float(name, roles[0], dtype, fail);
    for (int i = 0; i < args->n_inputs && st == AG_OK; i++)
        st = ag_kt_check_like(name, &args->inputs[i], roles[i], dtype, &args->outputs[0], fail);
    for (int k = 0; k < args->n_outputs && st == AG_OK; k++) {
        const int in = k == 0 ? 0 : k + 1; /* the grad (input 1) is never written */
        if (!ag_kt_same_view(&args->outputs[k], &args->inputs[in]))
            st = fail(AG_ERR_INVALID_ARG,
                      "%s: output %d must be the same view as input %d (%s): updates are in place",
                      name, k, in, roles[in]);
    }
    return st;
}

/* Inputs of an sgd_update call (its outputs are one fewer): param, grad and, exactly when
 * the momentum attrs->reals[1] is not 0, the momentum buffer. Reads a NULL block as 2. */
static inline int ag_kt_sgd_inputs(const ag_kernel_args *args) {
    return args && args->attrs && args->attrs->reals[1] != 0 ? 3 : 2;
}

/* Checks sgd_update(param, grad[, momentum_buffer]) -> (param[, momentum_buffer]) of float
 * dtype `dtype`, whose block (ag_kt_sgd_inputs inputs) was checked. */
static inline ag_status ag_kt_check_sgd(const ag_kernel_args *args, ag_dtype dtype,
                                        ag_kt_fail_fn fail) {
    static const char *const roles[] = {"param", "grad", "momentum_buffer"};
    return ag_kt_check_update(args, "sgd_update", roles, dtype, fail);
}

/* Checks adam_update(param, grad, exp_avg, exp_avg_sq) -> (param, exp_avg, exp_avg_sq) of
 * float dtype `dtype`, whose block was checked, and its step attrs->ints[2] (from 1). */
static inline ag_status ag_kt_check_adam(const ag_kernel_args *args, ag_dtype dtype,
                                         ag_kt_fail_fn fail) {
    static const char *const roles[] = {"param", "grad", "exp_avg", "exp_avg_sq"};
    const ag_status st = ag_kt_check_update(args, "adam_update", roles, dtype, fail);
    if (st != AG_OK || args->attrs->ints[2] >= 1) return st;
    return fail(AG_ERR_INVALID_ARG, "adam_update: step must be >= 1, got %lld",
                (long long)args->attrs->ints[2]);
}

/* ---- reductions and softmax ---- */

/* Checks reduction `name` whose block (1 input, 1 output) was checked, and splits its input.
 * The input (of `dtype`) reduces into the output (of `dtype`, int64 with `one_dim`) over
 * exactly dim attrs->ints[0] with `one_dim` (argmax, argmin), else over every dim where the
 * output has extent 1 and the input does not; `empty_ok` allows zero reduced elements per
 * output. *outer receives the input over the output's shape (each output's first reduced
 * element), *inner the reduced elements relative to that (offset 0). */
static inline ag_status ag_kt_check_reduce(const ag_kernel_args *args, const char *name,
                                           ag_dtype dtype, bool one_dim, bool empty_ok,
                                           ag_kernel_tensor *outer, ag_kernel_tensor *inner,
                                           ag_kt_fail_fn fail) {
    const ag_kernel_tensor *in = &args->inputs[0], *out = &args->outputs[0];
    ag_status st;
    if ((st = ag_kt_check_dtype(name, in, "input", dtype, fail)) != AG_OK ||
        (st = ag_kt_check_dtype(name, out, "output", one_dim ? AG_I64 : dtype, fail)) != AG_OK)
        return st;
    const int64_t dim = one_dim ? args->attrs->ints[0] : -1;
    if (one_dim && (st = ag_kt_check_dim(name, in, dim, fail)) != AG_OK) return st;
    *outer = *in;
    *inner = *in;
    inner->offset = 0;
    bool fits = in->ndim == out->ndim;
    for (int d = 0; fits && d < in->ndim; d++) {
        const bool reduced = one_dim ? d == dim : out->shape[d] == 1 && in->shape[d] != 1;
        fits = reduced ? out->shape[d] == 1 : out->shape[d] == in->shape[d];
        outer->shape[d] = out->shape[d];
        inner->shape[d] = reduced ? in->shape[d] : 1;
    }
    if (!fits) {
        char a[160], b[160];
        return fail(AG_ERR_SHAPE, "%s: %s input of shape %s cannot reduce to output shape %s", name,
                    ag_dtype_name(dtype), ag_kt_shape_str(in, a, sizeof a),
                    ag_kt_shape_str(out, b, sizeof b));
    }
    if (!empty_ok && ag_kt_numel(inner) == 0 && ag_kt_numel(out) > 0) {
        char a[160];
        return fail(AG_ERR_SHAPE, "%s: cannot reduce zero elements (%s input of shape %s)", name,
                    ag_dtype_name(dtype), ag_kt_shape_str(in, a, sizeof a));
    }
    return AG_OK;
}

/* Checks softmax or log_softmax `name` whose block (1 input, 1 output) was checked: input and
 * output of `dtype` and one shape, and dim attrs->ints[0] one of its dims (or 0 when it has
 * none). */
static inline ag_status ag_kt_check_softmax(const ag_kernel_args *args, const char *name,
                                            ag_dtype dtype, ag_kt_fail_fn fail) {
    const ag_kernel_tensor *in = &args->inputs[0], *out = &args->outputs[0];
    ag_status st;
    if ((st = ag_kt_check_dtype(name, out, "output", dtype, fail)) != AG_OK ||
        (st = ag_kt_check_like(name, in, "input", dtype, out, fail)) != AG_OK)
        return st;
    const int64_t dim = args->attrs->ints[0];
    return out->ndim > 0 || dim != 0 ? ag_kt_check_dim(name, out, dim, fail) : AG_OK;
}

/* Splits a checked softmax of `in` into `out` along dim into rows: rows[0] and rows[1] are in
 * and out with extent 1 at dim, so they walk the first element of every row; *len receives
 * the row length and *in_stride, *out_stride the element strides along a row. A 0-dim tensor
 * is one row of one element. */
static inline void ag_kt_softmax_rows(const ag_kernel_tensor *in, const ag_kernel_tensor *out,
                                      int64_t dim, ag_kernel_tensor rows[2], int64_t *len,
                                      int64_t *in_stride, int64_t *out_stride) {
    rows[0] = *in;
    rows[1] = *out;
    *len = 1;
    *in_stride = *out_stride = 0;
    if (out->ndim == 0) return;
    *len = out->shape[dim];
    *in_stride = in->strides[dim];
    *out_stride = out->strides[dim];
    rows[0].shape[dim] = rows[1].shape[dim] = 1;
}

#ifdef __cplusplus
}
#endif
#endif
