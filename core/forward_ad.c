/* Forward-mode AD (torch.autograd.forward_ad): the dual level, the tangents tensors carry
 * inside it, and the propagation every op runs while it is open.
 *
 * A tangent hangs off its tensor through an ag_dual record; all records are on one list so
 * that closing the level drops every tangent at once, as PyTorch does. After an op ran,
 * dispatch calls ag__fwad_propagate, which computes the outputs' tangents with the op's
 * jvp rule. Rules are written in ag ops on the primal values and run with forward AD
 * suspended (their own ops carry no tangents) but grad mode as it is: a tangent computed
 * from inputs that require grad has history, so reverse mode can differentiate it. An op
 * without a rule (a plugin's) gets its tangents from its backward instead. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

int ag__fwad_level_open;
_Thread_local int ag__fwad_suspended;

/* The tangent of one tensor. */
struct ag_dual {
    ag_tensor *owner;     /* the tensor carrying it (weak: the tensor drops it when freed) */
    ag_tensor *tangent;   /* the tangent (strong) */
    ag_dual *prev, *next; /* the list of all tangents */
};

/* The list of all tangents; its lock also guards every tensor's dual pointer. */
static pthread_mutex_t dual_lock = PTHREAD_MUTEX_INITIALIZER;
static ag_dual *dual_list;

/* ---- tangents ---- */

ag_tensor *ag__tangent(const ag_tensor *t) {
    ag_dual *d = __atomic_load_n(&t->dual, __ATOMIC_ACQUIRE);
    return d ? d->tangent : NULL;
}

static void unlink_dual(ag_dual *d) {
    if (d->prev)
        d->prev->next = d->next;
    else
        dual_list = d->next;
    if (d->next) d->next->prev = d->prev;
}

ag_status ag__set_tangent(ag_tensor *t, ag_tensor *tangent) {
    ag_dual *fresh = NULL;
    if (tangent && !t->dual && !(fresh = ag__calloc(1, sizeof *fresh)))
        return ag__error(AG_ERR_OUT_OF_MEMORY, "forward AD: out of host memory");
    ag_tensor *old = NULL;
    ag_dual *gone = NULL;
    pthread_mutex_lock(&dual_lock);
    ag_dual *d = t->dual;
    if (d) {
        old = d->tangent;
        d->tangent = ag_retain(tangent);
        if (!tangent) {
            unlink_dual(d);
            __atomic_store_n(&t->dual, NULL, __ATOMIC_RELEASE);
            gone = d;
        }
    } else if (fresh) {
        fresh->owner = t;
        fresh->tangent = ag_retain(tangent);
        fresh->next = dual_list;
        if (dual_list) dual_list->prev = fresh;
        dual_list = fresh;
        __atomic_store_n(&t->dual, fresh, __ATOMIC_RELEASE);
        fresh = NULL;
    }
    pthread_mutex_unlock(&dual_lock);
    free(fresh); /* t got a tangent from another thread meanwhile */
    free(gone);
    ag_release(old); /* outside the lock: freeing it may free tensors with tangents */
    return AG_OK;
}

/* ---- the level ---- */

ag_status ag_dual_level_enter(void) {
    int closed = 0;
    if (!__atomic_compare_exchange_n(&ag__fwad_level_open, &closed, 1, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return ag__error(AG_ERR_INVALID_ARG,
                         "dual_level: a dual level is open already (nested forward AD levels "
                         "are not supported, as in PyTorch)");
    return AG_OK;
}

ag_status ag_dual_level_exit(void) {
    int open = 1;
    if (!__atomic_compare_exchange_n(&ag__fwad_level_open, &open, 0, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return ag__error(AG_ERR_INVALID_ARG, "dual_level: no dual level is open");
    pthread_mutex_lock(&dual_lock);
    ag_dual *all = dual_list;
    dual_list = NULL;
    for (ag_dual *d = all; d; d = d->next)
        __atomic_store_n(&d->owner->dual, NULL, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&dual_lock);
    for (ag_dual *d = all, *next; d; d = next) {
        next = d->next;
        ag_release(d->tangent);
        free(d);
    }
    return AG_OK;
}

bool ag_dual_level_is_open(void) {
    return __atomic_load_n(&ag__fwad_level_open, __ATOMIC_ACQUIRE) != 0;
}

/* A view of t without history of its own beyond the view op and without t's tangent. */
static ag_tensor *alias_without_tangent(ag_tensor *t) {
    ag__fwad_suspended++;
    ag_tensor *alias = ag_view(t, t->ndim, t->shape);
    ag__fwad_suspended--;
    return alias;
}

ag_tensor *ag_make_dual(ag_tensor *primal, ag_tensor *tangent) {
    char p[192], t[192];
    if (!primal || !tangent) {
        ag__error_if_none(AG_ERR_INVALID_ARG, "make_dual: %s is NULL",
                          primal ? "tangent" : "primal");
        return NULL;
    }
    ag__describe(primal, p, sizeof p);
    ag__describe(tangent, t, sizeof t);
    ag_status st = AG_OK;
    if (!ag_dual_level_is_open())
        st = ag__error(AG_ERR_INVALID_ARG,
                       "make_dual: no dual level is open (call ag_dual_level_enter first)");
    else if (primal->dtype == AG_I64)
        st = ag__error(AG_ERR_DTYPE, "make_dual: expected a floating point primal, got %s", p);
    else if (tangent->dtype != primal->dtype || tangent->ndim != primal->ndim ||
             memcmp(tangent->shape, primal->shape, (size_t)primal->ndim * sizeof *primal->shape))
        st = ag__error(AG_ERR_SHAPE,
                       "make_dual: expected the tangent to have the primal's shape and dtype, "
                       "got primal %s and tangent %s",
                       p, t);
    else if (!ag__same_device(primal->storage->device, tangent->storage->device))
        st = ag__error(AG_ERR_DEVICE,
                       "make_dual: expected the tangent on the primal's device, got primal %s "
                       "and tangent %s",
                       p, t);
    else if (ag__tangent(primal))
        st = ag__error(AG_ERR_INVALID_ARG,
                       "make_dual: the primal %s has a tangent already at this level", p);
    else if (ag__tangent(tangent))
        st = ag__error(AG_ERR_INVALID_ARG,
                       "make_dual: the tangent %s has a tangent itself at this level", t);
    if (st != AG_OK) return NULL;
    ag_tensor *dual = alias_without_tangent(primal);
    if (dual && ag__set_tangent(dual, tangent) != AG_OK) return NULL; /* scope owns dual */
    return dual;
}

ag_status ag_unpack_dual(ag_tensor *t, ag_tensor **primal, ag_tensor **tangent) {
    if (primal) *primal = NULL;
    if (tangent) *tangent = NULL;
    if (!t) return ag__error_if_none(AG_ERR_INVALID_ARG, "unpack_dual: tensor is NULL");
    if (primal && !(*primal = alias_without_tangent(t))) return ag_last_status();
    ag_tensor *tan = ag__tangent(t);
    if (tangent && tan) *tangent = ag__scope_adopt(ag_retain(tan));
    return AG_OK;
}

/* ---- propagation ---- */

/* Input i of the op may carry a tangent (index inputs never do). */
static bool differentiable_input(const ag_op_def *op, int i) {
    return !ag__input_bit(op->nondiff_inputs, i);
}

/* The tangents of an op without a jvp rule, from its backward (the "double vjp" trick): the
 * vjp g(u) = J^T u is linear in u, so J t = d/du <g(u), t>. It runs the forward once more
 * on detached inputs and differentiates the backward, so it costs about three passes, and
 * the tangents have no history back to the primals. */
static ag_status jvp_from_backward(ag_jvp_ctx *c) {
    enum { MAX_IO = 64 };
    if (c->n_inputs > MAX_IO || c->n_outputs > MAX_IO)
        return ag__error(AG_ERR_UNSUPPORTED, "forward AD: %s has more than %d inputs or outputs",
                         c->op->name, MAX_IO);
    ag_tensor *x[MAX_IO], *with[MAX_IO], *tan[MAX_IO], *y[MAX_IO], *u[MAX_IO], *g[MAX_IO];
    ag_tensor *float_y[MAX_IO], *jt[MAX_IO];
    int n_with = 0, n_float = 0, slot[MAX_IO];
    bool prev = ag_set_grad_enabled(true);
    ag_status st = AG_OK;
    for (int i = 0; i < c->n_inputs && st == AG_OK; i++) {
        x[i] = ag_detach(c->inputs[i]);
        if (!x[i]) st = ag_last_status();
        if (st == AG_OK && c->tangents[i]) {
            st = ag_set_requires_grad(x[i], true);
            with[n_with] = x[i];
            tan[n_with++] = c->tangents[i];
        }
    }
    if (st == AG_OK)
        st = ag__dispatch((ag_op_def *)c->op, c->n_inputs, x, c->attrs, c->n_outputs, y);
    for (int j = 0; j < c->n_outputs && st == AG_OK; j++) {
        slot[j] = -1;
        if (y[j]->dtype == AG_I64 || !y[j]->requires_grad) continue;
        u[n_float] = ag_zeros_like(y[j]);
        st = u[n_float] ? ag_set_requires_grad(u[n_float], true) : ag_last_status();
        slot[j] = n_float;
        float_y[n_float++] = y[j];
    }
    if (st == AG_OK && n_float)
        st = ag_grad(n_float, float_y, n_with, with, u, true, true, true, g);
    ag_tensor *inner = NULL;
    for (int k = 0; k < n_with && st == AG_OK && n_float; k++) {
        if (!g[k]) continue;
        ag_tensor *term = ag_sum(ag_mul(g[k], tan[k]), 0, NULL, false);
        inner = inner ? ag_add(inner, term) : term;
        if (!inner) st = ag_last_status();
    }
    if (st == AG_OK && inner) st = ag_grad(1, &inner, n_float, u, NULL, false, false, true, jt);
    for (int j = 0; j < c->n_outputs && st == AG_OK; j++)
        c->output_tangents[j] = inner && slot[j] >= 0 ? jt[slot[j]] : NULL;
    ag_set_grad_enabled(prev);
    return st;
}

ag_status ag__jvp_linear(ag_jvp_ctx *c) {
    enum { MAX_IN = 64 };
    if (c->n_inputs > MAX_IN) return jvp_from_backward(c);
    ag_tensor *in[MAX_IN];
    for (int i = 0; i < c->n_inputs; i++) {
        in[i] = !differentiable_input(c->op, i) ? c->inputs[i]
                : c->tangents[i]                ? c->tangents[i]
                                                : ag_zeros_like(c->inputs[i]);
        if (!in[i]) return ag_last_status();
    }
    return ag__dispatch((ag_op_def *)c->op, c->n_inputs, in, c->attrs, c->n_outputs,
                        c->output_tangents);
}

ag_status ag__jvp_elementwise(ag_jvp_ctx *c) {
    c->output_tangents[0] = ag_mul(c->tangents[0], c->op->derivative(c->inputs[0], c->attrs));
    return c->output_tangents[0] ? AG_OK : ag_last_status();
}

/* Makes a rule's tangent match its output: broadcast to the output's shape (a rule may
 * return the tangent of a broadcast input as it is) and in the output's dtype. */
static ag_status fit_tangent(const ag_op_def *op, int j, const ag_tensor *out, ag_tensor **tan) {
    ag_tensor *t = *tan;
    bool same = t->ndim == out->ndim &&
                memcmp(t->shape, out->shape, (size_t)out->ndim * sizeof *out->shape) == 0;
    if (!same) t = ag_expand(t, out->ndim, out->shape);
    if (t && t->dtype != out->dtype) t = ag_to_dtype(t, out->dtype);
    if (!t) {
        char a[192], b[192];
        return ag__error(AG_ERR_SHAPE,
                         "forward AD: the tangent %s of %s's output %d does not fit the output "
                         "%s",
                         ag__describe(*tan, a, sizeof a), op->name, j,
                         ag__describe(out, b, sizeof b));
    }
    *tan = t;
    return AG_OK;
}

ag_status ag__fwad_propagate(ag_op_def *op, int n_inputs, ag_tensor *const *inputs,
                             const ag_attrs *attrs, int n_outputs, ag_tensor **outputs) {
    enum { SMALL = 16 };
    if (op->flags & AG_OPF_NONDIFF) return AG_OK;
    ag_tensor *small_in[SMALL], *small_out[SMALL] = {NULL};
    ag_tensor **tangents = small_in, **out_tangents = small_out;
    if (n_inputs > SMALL) tangents = ag__malloc((size_t)n_inputs * sizeof *tangents);
    if (n_outputs > SMALL) out_tangents = ag__calloc((size_t)n_outputs, sizeof *out_tangents);
    if (!tangents || !out_tangents) {
        if (tangents != small_in) free(tangents);
        return ag__error(AG_ERR_OUT_OF_MEMORY, "forward AD: out of host memory");
    }
    bool any = false;
    for (int i = 0; i < n_inputs; i++) {
        tangents[i] = differentiable_input(op, i) ? ag__tangent(inputs[i]) : NULL;
        any |= tangents[i] != NULL;
    }
    ag_status st = AG_OK;
    if (any && !op->jvp && !op->backward)
        st = ag__error(AG_ERR_UNSUPPORTED,
                       "forward AD: %s is not differentiable, but an input carries a tangent",
                       op->name);
    if (any && st == AG_OK) {
        ag__fwad_suspended++;
        ag_scope *scope = ag_scope_begin();
        ag_jvp_ctx ctx = {op, n_inputs, inputs, tangents, attrs, n_outputs, outputs, out_tangents};
        uint64_t errors = ag__errors_set();
        st = op->jvp ? op->jvp(&ctx) : jvp_from_backward(&ctx);
        if (st == AG_OK && ag__errors_set() != errors) st = ag_last_status();
        for (int j = 0; j < n_outputs && st == AG_OK; j++)
            if (out_tangents[j]) {
                st = fit_tangent(op, j, outputs[j], &out_tangents[j]);
                if (st == AG_OK) st = ag__set_tangent(outputs[j], out_tangents[j]);
            }
        if (st != AG_OK && strncmp(ag_last_error(), "forward AD", 10) != 0) {
            char why[512];
            snprintf(why, sizeof why, "%s", ag_last_error());
            ag__error(st, "forward AD of %s: %s", op->name, why);
        }
        ag_scope_end(scope);
        ag__fwad_suspended--;
    }
    if (tangents != small_in) free(tangents);
    if (out_tangents != small_out) free(out_tangents);
    return st;
}
