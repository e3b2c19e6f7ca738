/* In-place ops. Each is the out-of-place op followed by a copy into the destination, plus
 * PyTorch's bookkeeping: the version counter is bumped (so saved tensors detect the
 * change), a leaf that requires grad is refused while grad mode is on, and when the graph
 * is recorded the destination takes over the new history (its grad_fn is rebased). */
#include <string.h>
#include "ops_common.h"

typedef ag_tensor *(*binary_fn)(ag_tensor *, ag_tensor *);

static ag_tensor *copy_from(ag_tensor *a, ag_tensor *src) {
    return ag_expand(ag_to_dtype(src, a->dtype), a->ndim, a->shape);
}

/* Points a's history at output output_nr of node (NULL: no history, a becomes a constant). */
static ag_status rebase_history(ag_tensor *a, ag_node *node, int output_nr) {
    ag_node *old = a->grad_fn;
    if (old && old->retained && old->retained[a->output_nr] == a)
        old->retained[a->output_nr] = NULL;
    a->grad_fn = node;
    a->output_nr = output_nr;
    a->requires_grad = node != NULL;
    if (node) ag__node_retain(node);
    ag__node_release(old);
    return a->retains_grad && a->grad_fn ? ag_retain_grad(a) : AG_OK;
}

/* The checks every in-place op makes; *record says whether the graph must be recorded. */
static ag_status check_inplace(const char *name, ag_tensor *a, ag_tensor *b, bool *record) {
    char desc[192];
    if (!a || !b)
        return ag__error_if_none(AG_ERR_INVALID_ARG, "%s: %s is NULL", name,
                                 a ? "argument" : "tensor");
    bool grad_mode = ag_is_grad_enabled();
    if (grad_mode && !a->grad_fn && a->requires_grad)
        return ag__error(AG_ERR_INPLACE,
                         "%s: a leaf Variable that requires grad (%s) is being used in an "
                         "in-place operation.",
                         name, ag__describe(a, desc, sizeof desc));
    *record = grad_mode && (a->requires_grad || b->requires_grad);
    if (*record && a->is_view)
        return ag__error(AG_ERR_INPLACE,
                         "%s: in-place modification of a view (%s) while recording the graph is "
                         "not supported; use the out-of-place op",
                         name, ag__describe(a, desc, sizeof desc));
    return AG_OK;
}

static ag_tensor *inplace(const char *name, ag_tensor *a, ag_tensor *b, binary_fn fn) {
    char da[160], db[160];
    bool record = false;
    if (check_inplace(name, a, b, &record) != AG_OK) return NULL;
    ag_scope *scope = ag_scope_begin();
    ag_tensor *r;
    if (record) {
        /* The op must see a's old value even after a is overwritten: give it a copy that
         * carries a's old history. */
        r = fn(ag_clone(a), b);
    } else {
        bool prev = ag_set_grad_enabled(false);
        r = fn(a, b);
        ag_set_grad_enabled(prev);
    }
    ag_status st = r ? AG_OK : ag_last_status();
    if (st == AG_OK && (r->ndim != a->ndim ||
                        memcmp(r->shape, a->shape, (size_t)a->ndim * sizeof *a->shape) != 0))
        st = ag__error(AG_ERR_SHAPE, "%s: output with shape %s doesn't match the broadcast shape %s",
                       name, ag__shape_fmt(db, sizeof db, a->ndim, a->shape),
                       ag__shape_fmt(da, sizeof da, r->ndim, r->shape));
    if (st == AG_OK) st = ag__copy_into(a, r);
    if (st == AG_OK) {
        ag__bump_version(a);
        if (record) st = rebase_history(a, r->grad_fn, r->output_nr);
    }
    ag_scope_end(scope);
    return st == AG_OK ? a : NULL;
}

static ag_tensor *scalar_inplace(const char *name, ag_tensor *a, double s, binary_fn fn) {
    if (!a) return inplace(name, a, a, fn);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *r = inplace(name, a, ag__scalar_like(a, s), fn);
    ag_scope_end(scope);
    return r;
}

ag_tensor *ag_add_(ag_tensor *a, ag_tensor *b) { return inplace("add_", a, b, ag_add); }
ag_tensor *ag_sub_(ag_tensor *a, ag_tensor *b) { return inplace("sub_", a, b, ag_sub); }
ag_tensor *ag_mul_(ag_tensor *a, ag_tensor *b) { return inplace("mul_", a, b, ag_mul); }
ag_tensor *ag_div_(ag_tensor *a, ag_tensor *b) { return inplace("div_", a, b, ag_div); }
ag_tensor *ag_copy_(ag_tensor *a, ag_tensor *src) { return inplace("copy_", a, src, copy_from); }
ag_tensor *ag_add_scalar_(ag_tensor *a, double s) { return scalar_inplace("add_", a, s, ag_add); }
ag_tensor *ag_mul_scalar_(ag_tensor *a, double s) { return scalar_inplace("mul_", a, s, ag_mul); }
/* fill_ writes directly: the result does not depend on a's old value, so a recorded
 * history is simply cut (a becomes a constant). */
ag_tensor *ag_fill_(ag_tensor *a, double value) {
    bool record = false;
    if (check_inplace("fill_", a, a, &record) != AG_OK) return NULL;
    if (ag__fill(a, value) != AG_OK) return NULL;
    ag__bump_version(a);
    if (record && rebase_history(a, NULL, 0) != AG_OK) return NULL;
    return a;
}
ag_tensor *ag_zero_(ag_tensor *a) { return ag_fill_(a, 0.0); }
