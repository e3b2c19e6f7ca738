/* The functional transforms of torch.autograd.functional over a C function of tensors:
 * vjp, jvp, hvp, vhp, jacobian and hessian, with PyTorch's create_graph and strict rules.
 *
 * Reverse-mode pieces (vjp, vhp, the reverse jacobian, hessian) call ag_grad on a copy of
 * the inputs that requires grad. jvp runs the function once inside a dual level (forward
 * mode, core/forward_ad.c) instead of PyTorch's double-backward trick; hvp differentiates
 * that jvp in reverse mode (reverse-over-forward). Every transform runs inside a scope of
 * its own and hands its results to the caller's scope, detached unless create_graph. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* Most inputs and outputs of the functions these transforms accept. */
#define FN_MAX_IO 64

static const ag_functional_options default_options;

/* ---- shared steps ---- */

/* Checks the arguments every transform takes (results: its result array). */
static ag_status check_call(const char *who, ag_tensor_fn fn, int n_inputs,
                            ag_tensor *const *inputs, int n_outputs, ag_tensor **results) {
    if (!fn) return ag__error(AG_ERR_INVALID_ARG, "%s: the function is NULL", who);
    if (!results) return ag__error(AG_ERR_INVALID_ARG, "%s: the result array is NULL", who);
    if (n_inputs < 1 || n_inputs > FN_MAX_IO || !inputs)
        return ag__error(AG_ERR_INVALID_ARG, "%s: expected 1..%d inputs, got %d%s", who, FN_MAX_IO,
                         n_inputs, inputs ? "" : " (inputs is NULL)");
    if (n_outputs < 1 || n_outputs > FN_MAX_IO)
        return ag__error(AG_ERR_INVALID_ARG, "%s: expected 1..%d outputs, got %d", who, FN_MAX_IO,
                         n_outputs);
    for (int i = 0; i < n_inputs; i++) {
        if (!inputs[i])
            return ag__error_if_none(AG_ERR_INVALID_ARG, "%s: input %d is NULL", who, i);
        if (inputs[i]->dtype == AG_I64) {
            char d[192];
            return ag__error(AG_ERR_DTYPE, "%s: input %d is %s; inputs must be floating point", who,
                             i, ag__describe(inputs[i], d, sizeof d));
        }
    }
    return AG_OK;
}

/* Checks v[i] against input (or output) i: present (or the tensor has one element, where
 * NULL means 1) and of its shape. */
static ag_status check_vectors(const char *who, const char *role, int n, ag_tensor *const *v,
                               ag_tensor *const *like) {
    for (int i = 0; i < n; i++) {
        const ag_tensor *t = v ? v[i] : NULL;
        char a[192], b[192];
        if (!t && like[i]->numel != 1)
            return ag__error(AG_ERR_INVALID_ARG,
                             "%s: v can only be NULL for a single-element %s, but %s %d is %s", who,
                             role, role, i, ag__describe(like[i], a, sizeof a));
        if (t && (t->ndim != like[i]->ndim ||
                  memcmp(t->shape, like[i]->shape, (size_t)t->ndim * sizeof *t->shape) != 0))
            return ag__error(AG_ERR_SHAPE, "%s: v[%d] is %s, but %s %d is %s", who, i,
                             ag__describe(t, a, sizeof a), role, i,
                             ag__describe(like[i], b, sizeof b));
    }
    return AG_OK;
}

/* v[i] in like's dtype, or ones of like's shape where v is NULL (a single element). */
static ag_tensor *vector_or_one(ag_tensor *const *v, int i, ag_tensor *like) {
    return v && v[i] ? ag_to_dtype(v[i], like->dtype) : ag_ones_like(like);
}

/* Every v[i] resolved by vector_or_one into resolved. */
static ag_status resolve_vectors(int n, ag_tensor *const *v, ag_tensor *const *like,
                                 ag_tensor **resolved) {
    for (int i = 0; i < n; i++)
        if (!(resolved[i] = vector_or_one(v, i, like[i]))) return ag_last_status();
    return AG_OK;
}

/* The inputs as the function sees them, torch's _grad_preprocess: a view keeping the
 * input's history where create_graph and the input requires grad (results then
 * differentiate back to it), else a detached alias, requiring grad when need_grad. */
static ag_status prepare_inputs(int n, ag_tensor *const *inputs, bool create_graph, bool need_grad,
                                ag_tensor **prepared) {
    for (int i = 0; i < n; i++) {
        ag_tensor *x = inputs[i];
        if (create_graph && x->requires_grad) {
            prepared[i] = ag_view(x, x->ndim, x->shape);
        } else {
            prepared[i] = ag_detach(x);
            if (prepared[i] && need_grad && ag_set_requires_grad(prepared[i], true) != AG_OK)
                return ag_last_status();
        }
        if (!prepared[i]) return ag_last_status();
    }
    return AG_OK;
}

/* Runs fn; checks it produced n_outputs tensors. */
static ag_status call_fn(const char *who, ag_tensor_fn fn, void *user, int n_inputs,
                         ag_tensor *const *inputs, int n_outputs, ag_tensor **outputs) {
    for (int j = 0; j < n_outputs; j++) outputs[j] = NULL;
    ag_status st = fn(user, n_inputs, inputs, n_outputs, outputs);
    for (int j = 0; j < n_outputs && st == AG_OK; j++)
        if (!outputs[j])
            st = ag__error_if_none(AG_ERR_INVALID_ARG,
                                   "%s: the function returned AG_OK without output %d", who, j);
    if (st != AG_OK && ag_last_status() == AG_OK)
        ag__error(st, "%s: the function failed (status %d) without a message", who, (int)st);
    return st;
}

/* The single-element output of a scalar function (hvp, vhp, hessian). */
static ag_status check_scalar_output(const char *who, const ag_tensor *out) {
    char d[192];
    if (out->numel != 1 || out->dtype == AG_I64)
        return ag__error(AG_ERR_SHAPE,
                         "%s: the function must return a single floating point element, got %s",
                         who, ag__describe(out, d, sizeof d));
    return AG_OK;
}

/* torch's _check_requires_grad for outputs in strict mode. */
static ag_status check_output_requires_grad(const char *who, int j, const ag_tensor *out) {
    return ag__error(AG_ERR_NO_GRAD,
                     "%s: output %d of the user-provided function does not require gradients. "
                     "The outputs must be computed in a differentiable manner from the input when "
                     "running in strict mode (%s)",
                     who, j, out->dtype == AG_I64 ? "it is int64" : "it has no history");
}

/* Fills a missing result (an input the outputs do not depend on) with zeros of like, or in
 * strict mode fails with PyTorch's message. */
static ag_status zeros_unless_strict(const char *who, bool strict, const char *what, int i,
                                     ag_tensor *like, ag_tensor **result) {
    if (*result) return AG_OK;
    if (strict)
        return ag__error(AG_ERR_NO_GRAD,
                         "%s: %s %d. This is not allowed in strict mode (strict=true)", who, what,
                         i);
    *result = ag_zeros_like(like);
    return *result ? AG_OK : ag_last_status();
}

/* Hands n results over to the caller's scope (closing `scope`), detached unless
 * create_graph; NULL entries stay NULL. On error releases them and returns the error. */
static ag_status hand_out(ag_scope *scope, ag_status st, bool create_graph, int n,
                          ag_tensor **results) {
    for (int i = 0; i < n; i++) {
        ag_tensor *r =
            st == AG_OK && results[i] && !create_graph ? ag_detach(results[i]) : results[i];
        if (st == AG_OK && results[i] && !r) st = ag_last_status();
        results[i] = st == AG_OK ? ag_retain(r) : NULL;
    }
    ag_scope_end(scope);
    for (int i = 0; i < n; i++)
        if (st == AG_OK && results[i] && !ag__scope_adopt(results[i])) st = ag_last_status();
    if (st != AG_OK)
        for (int i = 0; i < n; i++) {
            ag_release(results[i]);
            results[i] = NULL;
        }
    return st;
}

/* Opens the dual level for a forward-mode transform, with a message naming it. */
static ag_status enter_level(const char *who) {
    if (ag_dual_level_enter() == AG_OK) return AG_OK;
    return ag__error(AG_ERR_INVALID_ARG,
                     "%s: a dual level is open already; forward-mode transforms open their own "
                     "and levels do not nest",
                     who);
}

/* ---- vjp ---- */

ag_status ag_vjp(ag_tensor_fn fn, void *user, int n_inputs, ag_tensor *const *inputs, int n_outputs,
                 ag_tensor *const *v, const ag_functional_options *options, ag_tensor **outputs,
                 ag_tensor **vjps) {
    const ag_functional_options *o = options ? options : &default_options;
    ag_status st = check_call("vjp", fn, n_inputs, inputs, n_outputs, vjps);
    if (st != AG_OK) return st;
    ag_tensor *x[FN_MAX_IO], *out[FN_MAX_IO], *diff[FN_MAX_IO], *grad_out[FN_MAX_IO];
    ag_tensor *results[2 * FN_MAX_IO] = {NULL};
    ag_scope *scope = ag_scope_begin();
    bool prev = ag_set_grad_enabled(true);
    st = prepare_inputs(n_inputs, inputs, o->create_graph, true, x);
    if (st == AG_OK) st = call_fn("vjp", fn, user, n_inputs, x, n_outputs, out);
    if (st == AG_OK) st = check_vectors("vjp", "output", n_outputs, v, out);
    int n_diff = 0;
    for (int j = 0; j < n_outputs && st == AG_OK; j++) {
        if (!out[j]->requires_grad) {
            if (o->strict) st = check_output_requires_grad("vjp", j, out[j]);
            continue;
        }
        diff[n_diff] = out[j];
        grad_out[n_diff++] = vector_or_one(v, j, out[j]);
    }
    if (st == AG_OK && n_diff)
        st = ag_grad(n_diff, diff, n_inputs, x, grad_out, o->create_graph, o->create_graph, true,
                     results + n_outputs);
    for (int i = 0; i < n_inputs && st == AG_OK; i++)
        st = zeros_unless_strict("vjp", o->strict,
                                 "the output of the user-provided function is independent of "
                                 "input",
                                 i, inputs[i], &results[n_outputs + i]);
    ag_set_grad_enabled(prev);
    for (int j = 0; j < n_outputs && st == AG_OK && outputs; j++) results[j] = out[j];
    st = hand_out(scope, st, o->create_graph, n_outputs + n_inputs, results);
    for (int j = 0; j < n_outputs && outputs; j++) outputs[j] = results[j];
    for (int i = 0; i < n_inputs; i++) vjps[i] = results[n_outputs + i];
    return st;
}

/* ---- jvp (forward mode) ---- */

/* Runs fn on duals of the prepared inputs x with tangents v (a NULL entry: no tangent)
 * inside the open level; stores the outputs' primal views (if primals is not NULL) and
 * tangents (NULL where an output has none). */
static ag_status forward_pass(const char *who, ag_tensor_fn fn, void *user, int n_inputs,
                              ag_tensor *const *x, ag_tensor *const *v, int n_outputs,
                              ag_tensor **primals, ag_tensor **tangents) {
    ag_tensor *duals[FN_MAX_IO], *out[FN_MAX_IO];
    ag_status st = AG_OK;
    for (int i = 0; i < n_inputs && st == AG_OK; i++) {
        duals[i] = v[i] ? ag_make_dual(x[i], ag_to_dtype(v[i], x[i]->dtype)) : x[i];
        if (!duals[i]) st = ag_last_status();
    }
    if (st == AG_OK) st = call_fn(who, fn, user, n_inputs, duals, n_outputs, out);
    for (int j = 0; j < n_outputs && st == AG_OK; j++)
        st = ag_unpack_dual(out[j], primals ? &primals[j] : NULL, &tangents[j]);
    return st;
}

ag_status ag_jvp(ag_tensor_fn fn, void *user, int n_inputs, ag_tensor *const *inputs,
                 ag_tensor *const *v, int n_outputs, const ag_functional_options *options,
                 ag_tensor **outputs, ag_tensor **jvps) {
    const ag_functional_options *o = options ? options : &default_options;
    ag_status st = check_call("jvp", fn, n_inputs, inputs, n_outputs, jvps);
    if (st == AG_OK) st = check_vectors("jvp", "input", n_inputs, v, inputs);
    if (st == AG_OK) st = enter_level("jvp");
    if (st != AG_OK) return st;
    ag_tensor *x[FN_MAX_IO], *tangents[FN_MAX_IO], *results[2 * FN_MAX_IO] = {NULL};
    ag_scope *scope = ag_scope_begin();
    /* As torch.autograd.functional, the function sees inputs that require grad with grad
     * mode on: it may take gradients itself (forward over reverse). */
    bool prev = ag_set_grad_enabled(true);
    st = prepare_inputs(n_inputs, inputs, o->create_graph, true, x);
    if (st == AG_OK) st = resolve_vectors(n_inputs, v, inputs, tangents);
    if (st == AG_OK)
        st = forward_pass("jvp", fn, user, n_inputs, x, tangents, n_outputs, results,
                          results + n_outputs);
    for (int j = 0; j < n_outputs && st == AG_OK; j++)
        st = zeros_unless_strict("jvp", o->strict,
                                 "the user-provided function's output does not depend on the "
                                 "inputs: the tangent is zero for output",
                                 j, results[j], &results[n_outputs + j]);
    ag_set_grad_enabled(prev);
    ag_dual_level_exit();
    for (int j = 0; j < n_outputs && !outputs; j++) results[j] = NULL;
    st = hand_out(scope, st, o->create_graph, 2 * n_outputs, results);
    for (int j = 0; j < n_outputs; j++) {
        if (outputs) outputs[j] = results[j];
        jvps[j] = results[n_outputs + j];
    }
    return st;
}

/* ---- hvp and vhp ---- */

/* Shared front of hvp and vhp: checks, v's shapes, prepared inputs. */
static ag_status second_order_setup(const char *who, ag_tensor_fn fn, int n_inputs,
                                    ag_tensor *const *inputs, ag_tensor *const *v,
                                    ag_tensor **results) {
    ag_status st = check_call(who, fn, n_inputs, inputs, 1, results);
    return st == AG_OK ? check_vectors(who, "input", n_inputs, v, inputs) : st;
}

/* Shared end of hvp and vhp: results[0] is f, results[1..] the products (zeros, or the
 * strict error, where one is missing); hands them out as output and products. */
static ag_status second_order_finish(const char *who, ag_scope *scope, ag_status st,
                                     const ag_functional_options *o, int n_inputs,
                                     ag_tensor *const *inputs, ag_tensor **results,
                                     ag_tensor **output, ag_tensor **products) {
    for (int i = 0; i < n_inputs && st == AG_OK; i++)
        st = zeros_unless_strict(who, o->strict,
                                 "the gradient of the user-provided function is independent of "
                                 "input",
                                 i, inputs[i], &results[1 + i]);
    if (!output) results[0] = NULL;
    st = hand_out(scope, st, o->create_graph, 1 + n_inputs, results);
    if (output) *output = results[0];
    for (int i = 0; i < n_inputs; i++) products[i] = results[1 + i];
    return st;
}

ag_status ag_hvp(ag_tensor_fn fn, void *user, int n_inputs, ag_tensor *const *inputs,
                 ag_tensor *const *v, const ag_functional_options *options, ag_tensor **output,
                 ag_tensor **hvps) {
    const ag_functional_options *o = options ? options : &default_options;
    ag_status st = second_order_setup("hvp", fn, n_inputs, inputs, v, hvps);
    if (st == AG_OK) st = enter_level("hvp");
    if (st != AG_OK) return st;
    ag_tensor *x[FN_MAX_IO], *tangents[FN_MAX_IO], *results[1 + FN_MAX_IO] = {NULL};
    ag_tensor *directional = NULL;
    ag_scope *scope = ag_scope_begin();
    bool prev = ag_set_grad_enabled(true);
    st = prepare_inputs(n_inputs, inputs, o->create_graph, true, x);
    if (st == AG_OK) st = resolve_vectors(n_inputs, v, inputs, tangents);
    /* The tangent of f along v is grad f . v, recorded as a function of x: its gradient is
     * H v (reverse-over-forward). */
    if (st == AG_OK)
        st = forward_pass("hvp", fn, user, n_inputs, x, tangents, 1, results, &directional);
    ag_dual_level_exit();
    if (st == AG_OK) st = check_scalar_output("hvp", results[0]);
    if (st == AG_OK && o->strict && !results[0]->requires_grad)
        st = check_output_requires_grad("hvp", 0, results[0]);
    if (st == AG_OK && directional && directional->requires_grad)
        st = ag_grad(1, &directional, n_inputs, x, NULL, o->create_graph, o->create_graph, true,
                     results + 1);
    ag_set_grad_enabled(prev);
    return second_order_finish("hvp", scope, st, o, n_inputs, inputs, results, output, hvps);
}

ag_status ag_vhp(ag_tensor_fn fn, void *user, int n_inputs, ag_tensor *const *inputs,
                 ag_tensor *const *v, const ag_functional_options *options, ag_tensor **output,
                 ag_tensor **vhps) {
    const ag_functional_options *o = options ? options : &default_options;
    ag_status st = second_order_setup("vhp", fn, n_inputs, inputs, v, vhps);
    if (st != AG_OK) return st;
    ag_tensor *x[FN_MAX_IO], *grads[FN_MAX_IO] = {NULL}, *diff[FN_MAX_IO], *weights[FN_MAX_IO];
    ag_tensor *results[1 + FN_MAX_IO] = {NULL};
    ag_scope *scope = ag_scope_begin();
    bool prev = ag_set_grad_enabled(true);
    st = prepare_inputs(n_inputs, inputs, o->create_graph, true, x);
    if (st == AG_OK) st = call_fn("vhp", fn, user, n_inputs, x, 1, results);
    if (st == AG_OK) st = check_scalar_output("vhp", results[0]);
    if (st == AG_OK && !results[0]->requires_grad && o->strict)
        st = check_output_requires_grad("vhp", 0, results[0]);
    /* v^T H = d/dx (grad f(x) . v): differentiate the first gradient once more. */
    if (st == AG_OK && results[0]->requires_grad)
        st = ag_grad(1, results, n_inputs, x, NULL, true, true, true, grads);
    int n_diff = 0;
    for (int i = 0; i < n_inputs && st == AG_OK; i++)
        if (grads[i] && grads[i]->requires_grad) {
            diff[n_diff] = grads[i];
            weights[n_diff++] = vector_or_one(v, i, inputs[i]);
        }
    if (st == AG_OK && n_diff)
        st = ag_grad(n_diff, diff, n_inputs, x, weights, o->create_graph, o->create_graph, true,
                     results + 1);
    ag_set_grad_enabled(prev);
    return second_order_finish("vhp", scope, st, o, n_inputs, inputs, results, output, vhps);
}

/* ---- jacobian and hessian ---- */

/* Block (o, i) of a Jacobian of n_outputs x n_inputs blocks. */
#define BLOCK(jac, o, i, n_inputs) ((jac)[(size_t)(o) * (size_t)(n_inputs) + (size_t)(i)])

/* out.shape + in.shape into shape; false (with an error) when over AG_MAX_DIMS. */
static bool block_shape(const char *who, const ag_tensor *out, const ag_tensor *in, int *ndim,
                        int64_t *shape) {
    if (out->ndim + in->ndim > AG_MAX_DIMS) {
        char a[192], b[192];
        ag__error(AG_ERR_SHAPE, "%s: a block of output %s by input %s has more than %d dims", who,
                  ag__describe(out, a, sizeof a), ag__describe(in, b, sizeof b), AG_MAX_DIMS);
        return false;
    }
    memcpy(shape, out->shape, (size_t)out->ndim * sizeof *shape);
    memcpy(shape + out->ndim, in->shape, (size_t)in->ndim * sizeof *shape);
    *ndim = out->ndim + in->ndim;
    return true;
}

/* Zeros of a shape in like's dtype, on like's device. */
static ag_tensor *zeros_on(const ag_tensor *like, int ndim, const int64_t *shape) {
    ag_tensor *zeros = ag_zeros(like->dtype, ndim, shape);
    return zeros ? ag_to_device(zeros, like->storage->device) : NULL;
}

/* One-hot of like's shape and dtype with a 1 at flat position k. */
static ag_tensor *one_hot_at(ag_tensor *like, int64_t k) {
    ag_tensor *e = zeros_on(like, like->ndim, like->shape);
    ag_tensor *slot = e ? ag_select(ag_reshape(e, 1, &like->numel), 0, k) : NULL;
    return slot && ag_fill_(slot, 1.0) ? e : NULL;
}

/* Reverse mode: row k of block (o, i) is the gradient of element k of outputs[o] w.r.t.
 * x[i]; one backward per output element, the graph kept between them. */
static ag_status jacobian_by_rows(const char *who, int n_outputs, ag_tensor *const *outputs,
                                  int n_inputs, ag_tensor *const *x, ag_tensor *const *inputs,
                                  const ag_functional_options *o, ag_tensor **jac) {
    ag_status st = AG_OK;
    for (int j = 0; j < n_outputs && st == AG_OK; j++) {
        ag_tensor *out = outputs[j];
        if (!out->requires_grad && o->strict) st = check_output_requires_grad(who, j, out);
        const int64_t rows = out->numel;
        ag_tensor **row = ag__calloc((size_t)(rows ? rows : 1) * (size_t)n_inputs, sizeof *row);
        if (!row) st = ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory", who);
        for (int64_t k = 0; k < rows && st == AG_OK && out->requires_grad; k++) {
            ag_tensor *e = one_hot_at(out, k);
            st = e ? ag_grad(1, &out, n_inputs, x, &e, true, o->create_graph, true,
                             row + k * n_inputs)
                   : ag_last_status();
        }
        for (int i = 0; i < n_inputs && st == AG_OK; i++) {
            int ndim;
            int64_t shape[AG_MAX_DIMS];
            if (!block_shape(who, out, inputs[i], &ndim, shape)) {
                st = ag_last_status();
                break;
            }
            bool any = false;
            for (int64_t k = 0; k < rows; k++) any |= row[k * n_inputs + i] != NULL;
            if (!any && o->strict)
                st = ag__error(AG_ERR_NO_GRAD,
                               "%s: output %d of the user-provided function is independent of "
                               "input %d. This is not allowed in strict mode (strict=true)",
                               who, j, i);
            ag_tensor **parts = ag__malloc((size_t)(rows ? rows : 1) * sizeof *parts);
            if (!parts && st == AG_OK)
                st = ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory", who);
            for (int64_t k = 0; k < rows && st == AG_OK; k++) {
                parts[k] = row[k * n_inputs + i] ? row[k * n_inputs + i] : ag_zeros_like(inputs[i]);
                if (!parts[k]) st = ag_last_status();
            }
            ag_tensor *block = st != AG_OK ? NULL
                               : rows      ? ag_stack((int)rows, parts, 0)
                                           : zeros_on(inputs[i], 1, (int64_t[]){0});
            if (st == AG_OK && block) block = ag_reshape(block, ndim, shape);
            if (st == AG_OK && !block) st = ag_last_status();
            if (st == AG_OK) BLOCK(jac, j, i, n_inputs) = block;
            free(parts);
        }
        free(row);
    }
    return st;
}

/* Forward mode: column k of block (o, i) is the tangent of outputs[o] when input i moves
 * along the k-th unit vector; one forward pass per input element. */
static ag_status jacobian_by_columns(ag_tensor_fn fn, void *user, int n_outputs, int n_inputs,
                                     ag_tensor *const *x, const ag_functional_options *o,
                                     ag_tensor **jac) {
    ag_status st = enter_level("jacobian");
    const bool entered = st == AG_OK;
    ag_tensor *v[FN_MAX_IO] = {NULL}, *primals[FN_MAX_IO], *tangents[FN_MAX_IO];
    for (int i = 0; i < n_inputs && st == AG_OK; i++) {
        const int64_t cols = x[i]->numel;
        ag_tensor **col = ag__calloc((size_t)(cols ? cols : 1) * (size_t)n_outputs, sizeof *col);
        if (!col) st = ag__error(AG_ERR_OUT_OF_MEMORY, "jacobian: out of host memory");
        /* An empty input has no column: one pass without tangents gives the outputs'
         * shapes, and its blocks are empty. */
        if (!cols && st == AG_OK)
            st = forward_pass("jacobian", fn, user, n_inputs, x, v, n_outputs, primals, tangents);
        for (int j = 0; j < n_outputs && st == AG_OK && !cols; j++) {
            int ndim;
            int64_t shape[AG_MAX_DIMS];
            if (!block_shape("jacobian", primals[j], x[i], &ndim, shape) ||
                !(BLOCK(jac, j, i, n_inputs) = zeros_on(x[i], ndim, shape)))
                st = ag_last_status();
        }
        for (int64_t k = 0; k < cols && st == AG_OK; k++) {
            v[i] = one_hot_at(x[i], k);
            st = v[i] ? forward_pass("jacobian", fn, user, n_inputs, x, v, n_outputs, primals,
                                     tangents)
                      : ag_last_status();
            for (int j = 0; j < n_outputs && st == AG_OK; j++) {
                if (primals[j]->dtype == AG_I64 && o->strict)
                    st = check_output_requires_grad("jacobian", j, primals[j]);
                col[k * n_outputs + j] = tangents[j];
            }
            v[i] = NULL;
        }
        for (int j = 0; j < n_outputs && st == AG_OK && cols; j++) {
            const ag_tensor *out = primals[j];
            int ndim;
            int64_t shape[AG_MAX_DIMS];
            if (!block_shape("jacobian", out, x[i], &ndim, shape)) {
                st = ag_last_status();
                break;
            }
            bool any = false;
            for (int64_t k = 0; k < cols; k++) any |= col[k * n_outputs + j] != NULL;
            if (!any && o->strict)
                st = ag__error(AG_ERR_NO_GRAD,
                               "jacobian: output %d of the user-provided function is "
                               "independent of input %d. This is not allowed in strict mode "
                               "(strict=true)",
                               j, i);
            ag_tensor **parts = ag__malloc((size_t)cols * sizeof *parts);
            if (!parts && st == AG_OK)
                st = ag__error(AG_ERR_OUT_OF_MEMORY, "jacobian: out of host memory");
            for (int64_t k = 0; k < cols && st == AG_OK; k++) {
                ag_tensor *c = col[k * n_outputs + j];
                parts[k] = c ? c : ag_zeros_like(primals[j]);
                if (!parts[k]) st = ag_last_status();
            }
            /* Columns stacked last give out.shape + [numel of input i]. */
            ag_tensor *block = st == AG_OK ? ag_stack((int)cols, parts, out->ndim) : NULL;
            if (st == AG_OK && block) block = ag_reshape(block, ndim, shape);
            if (st == AG_OK && !block) st = ag_last_status();
            if (st == AG_OK) BLOCK(jac, j, i, n_inputs) = block;
            free(parts);
        }
        free(col);
    }
    if (entered) ag_dual_level_exit();
    return st;
}

ag_status ag_jacobian(ag_tensor_fn fn, void *user, int n_inputs, ag_tensor *const *inputs,
                      int n_outputs, const ag_functional_options *options, ag_tensor **jacobian) {
    const ag_functional_options *o = options ? options : &default_options;
    ag_status st = check_call("jacobian", fn, n_inputs, inputs, n_outputs, jacobian);
    if (st != AG_OK) return st;
    const int n_blocks = n_outputs * n_inputs;
    for (int b = 0; b < n_blocks; b++) jacobian[b] = NULL;
    ag_tensor *x[FN_MAX_IO], *out[FN_MAX_IO];
    ag_scope *scope = ag_scope_begin();
    bool prev = ag_set_grad_enabled(true);
    st = prepare_inputs(n_inputs, inputs, o->create_graph, true, x);
    if (st == AG_OK && o->forward_mode) {
        st = jacobian_by_columns(fn, user, n_outputs, n_inputs, x, o, jacobian);
    } else if (st == AG_OK) {
        st = call_fn("jacobian", fn, user, n_inputs, x, n_outputs, out);
        if (st == AG_OK)
            st = jacobian_by_rows("jacobian", n_outputs, out, n_inputs, x, inputs, o, jacobian);
    }
    ag_set_grad_enabled(prev);
    return hand_out(scope, st, o->create_graph, n_blocks, jacobian);
}

ag_status ag_hessian(ag_tensor_fn fn, void *user, int n_inputs, ag_tensor *const *inputs,
                     const ag_functional_options *options, ag_tensor **hessian) {
    const ag_functional_options *o = options ? options : &default_options;
    ag_status st = check_call("hessian", fn, n_inputs, inputs, 1, hessian);
    if (st != AG_OK) return st;
    const int n_blocks = n_inputs * n_inputs;
    for (int b = 0; b < n_blocks; b++) hessian[b] = NULL;
    ag_tensor *x[FN_MAX_IO], *out = NULL, *grads[FN_MAX_IO] = {NULL};
    ag_scope *scope = ag_scope_begin();
    bool prev = ag_set_grad_enabled(true);
    st = prepare_inputs(n_inputs, inputs, o->create_graph, true, x);
    if (st == AG_OK) st = call_fn("hessian", fn, user, n_inputs, x, 1, &out);
    if (st == AG_OK) st = check_scalar_output("hessian", out);
    if (st == AG_OK && !out->requires_grad && o->strict)
        st = check_output_requires_grad("hessian", 0, out);
    if (st == AG_OK && out->requires_grad)
        st = ag_grad(1, &out, n_inputs, x, NULL, true, true, true, grads);
    /* The Hessian is the Jacobian of the gradient (reverse over reverse); an input the
     * function does not depend on has a zero gradient, whose Jacobian is zero. */
    for (int i = 0; i < n_inputs && st == AG_OK; i++)
        st = zeros_unless_strict("hessian", o->strict,
                                 "the output of the user-provided function is independent of "
                                 "input",
                                 i, x[i], &grads[i]);
    if (st == AG_OK)
        st = jacobian_by_rows("hessian", n_inputs, grads, n_inputs, x, inputs, o, hessian);
    ag_set_grad_enabled(prev);
    return hand_out(scope, st, o->create_graph, n_blocks, hessian);
}
