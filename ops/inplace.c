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

/* Whether `op` (elementwise) may write straight into a: one dtype, b broadcastable to a's
 * shape, no element of a aliased through a zero stride, and b not a different view of a's
 * memory (that could read elements already overwritten). */
static bool can_write_directly(const ag_op_def *op, const ag_tensor *a, const ag_tensor *b) {
    if (!op || a->dtype != b->dtype || b->ndim > a->ndim ||
        !ag__same_device(a->storage->device, b->storage->device))
        return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] > 1 && a->strides[d] == 0) return false;
    int lead = a->ndim - b->ndim;
    for (int d = 0; d < b->ndim; d++)
        if (b->shape[d] != 1 && b->shape[d] != a->shape[lead + d]) return false;
    if (b->storage == a->storage)
        return b->offset == a->offset && b->ndim == a->ndim &&
               memcmp(b->strides, a->strides, (size_t)a->ndim * sizeof *a->strides) == 0 &&
               memcmp(b->shape, a->shape, (size_t)a->ndim * sizeof *a->shape) == 0;
    return true;
}

/* A registered op found by name once, then kept: no string lookup on the hot path. */
typedef struct op_ref {
    const char *name; /* registry name */
    ag_op_def *op;    /* resolved op (atomic), NULL until first use */
} op_ref;

static op_ref add_ref = {"add", NULL}, sub_ref = {"sub", NULL}, mul_ref = {"mul", NULL},
              div_ref = {"div", NULL};

static ag_op_def *resolve(op_ref *ref) {
    if (!ref) return NULL;
    ag_op_def *op = __atomic_load_n(&ref->op, __ATOMIC_ACQUIRE);
    if (!op) {
        op = ag__op_find(ref->name);
        __atomic_store_n(&ref->op, op, __ATOMIC_RELEASE);
    }
    return op;
}

/* direct: the registered elementwise op computing fn, used to write into a directly when
 * no graph is recorded (optimizer updates, gradient accumulation); NULL if none. */
static ag_tensor *inplace(const char *name, op_ref *direct, ag_tensor *a, ag_tensor *b,
                          binary_fn fn) {
    char da[160], db[160];
    bool record = false;
    if (check_inplace(name, a, b, &record) != AG_OK) return NULL;
    /* Inside a dual level a's tangent becomes the result's, so the result must be computed
     * by the op (which computes that tangent), never written directly. */
    bool dual = ag__fwad_active() && (ag__tangent(a) || ag__tangent(b));
    ag_op_def *op = record || dual ? NULL : resolve(direct);
    if (can_write_directly(op, a, b)) {
        ag_kernel_tensor kin[2], kout;
        ag__kt(a, &kin[0]);
        ag__kt_broadcast(b, a->ndim, a->shape, &kin[1]);
        ag__kt(a, &kout);
        if (ag__run_kernel(op, a->storage->device, a->dtype, 2, kin, 1, &kout, NULL) != AG_OK)
            return NULL;
        ag__bump_version(a);
        return a;
    }
    /* From here the result is computed by other ops: errors raised inside them name this
     * one and its arguments (the direct write above, the hot path, pays nothing for it). */
    ag__context_enter(name, 2, (ag_tensor *[]){a, b});
    ag_scope *scope = ag_scope_begin();
    ag_tensor *r;
    if (record) {
        /* The op must see a's old value even after a is overwritten: give it a copy that
         * carries a's old history. When b is a itself (a.mul_(a)) it is the old value too:
         * saving a would make a cycle a -> node -> a once a's history is rebased (a leak). */
        ag_tensor *old = ag_clone(a);
        r = fn(old, b == a ? old : b);
    } else {
        bool prev = ag_set_grad_enabled(false);
        r = fn(a, b);
        ag_set_grad_enabled(prev);
    }
    /* In place, the result keeps a's dtype (bf16.sub_(f32) is bf16), also in the graph:
     * a node whose output dtype differs from a's would get gradients of a's dtype and pass
     * them on unconverted (a float32 leaf would receive a bfloat16 .grad). */
    if (record && r && r->dtype != a->dtype) r = ag_to_dtype(r, a->dtype);
    ag_status st = r ? AG_OK : ag_last_status();
    if (st == AG_OK &&
        (r->ndim != a->ndim || memcmp(r->shape, a->shape, (size_t)a->ndim * sizeof *a->shape) != 0))
        st =
            ag__error(AG_ERR_SHAPE, "%s: output with shape %s doesn't match the broadcast shape %s",
                      name, ag__shape_fmt(db, sizeof db, a->ndim, a->shape),
                      ag__shape_fmt(da, sizeof da, r->ndim, r->shape));
    if (st == AG_OK) st = ag__copy_into(a, r);
    if (st == AG_OK) {
        ag__bump_version(a);
        if (record) st = rebase_history(a, r->grad_fn, r->output_nr);
    }
    if (st == AG_OK && dual) st = ag__set_tangent(a, ag__tangent(r));
    ag_scope_end(scope);
    ag__context_exit();
    return st == AG_OK ? a : NULL;
}

static ag_tensor *scalar_inplace(const char *name, op_ref *direct, ag_tensor *a, double s,
                                 binary_fn fn) {
    if (!a) return inplace(name, direct, a, a, fn);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *r = inplace(name, direct, a, ag__scalar_like(a, s), fn);
    ag_scope_end(scope);
    return r;
}

ag_tensor *ag_add_(ag_tensor *a, ag_tensor *b) {
    return inplace("add_", &add_ref, a, b, ag_add);
}
ag_tensor *ag_sub_(ag_tensor *a, ag_tensor *b) {
    return inplace("sub_", &sub_ref, a, b, ag_sub);
}
ag_tensor *ag_mul_(ag_tensor *a, ag_tensor *b) {
    return inplace("mul_", &mul_ref, a, b, ag_mul);
}
ag_tensor *ag_div_(ag_tensor *a, ag_tensor *b) {
    /* Integer true division changes the dtype, so it never writes directly. */
    return inplace("div_", a && a->dtype != AG_I64 ? &div_ref : NULL, a, b, ag_div);
}
ag_tensor *ag_copy_(ag_tensor *a, ag_tensor *src) {
    return inplace("copy_", NULL, a, src, copy_from);
}
ag_tensor *ag_add_scalar_(ag_tensor *a, double s) {
    return scalar_inplace("add_", &add_ref, a, s, ag_add);
}
ag_tensor *ag_mul_scalar_(ag_tensor *a, double s) {
    return scalar_inplace("mul_", &mul_ref, a, s, ag_mul);
}
/* fill_ writes directly: the result does not depend on a's old value, so a recorded
 * history is simply cut (a becomes a constant). */
ag_tensor *ag_fill_(ag_tensor *a, double value) {
    bool record = false;
    if (check_inplace("fill_", a, a, &record) != AG_OK) return NULL;
    if (ag__fill(a, value) != AG_OK) return NULL;
    ag__bump_version(a);
    /* A constant has a zero tangent. */
    if (a->dual && ag__set_tangent(a, NULL) != AG_OK) return NULL;
    if (record && rebase_history(a, NULL, 0) != AG_OK) return NULL;
    return a;
}
ag_tensor *ag_zero_(ag_tensor *a) {
    return ag_fill_(a, 0.0);
}
