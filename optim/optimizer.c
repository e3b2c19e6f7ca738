/* Optimizers (torch.optim.SGD, Adam, AdamW) and gradient clipping.
 *
 * An optimizer holds a reference to each parameter, a copy of its name and its state
 * tensors, created at the parameter's first update. A step first checks every gradient (so
 * a bad one leaves all parameters untouched), then runs one fused backend kernel per
 * parameter that has a gradient ("sgd_update", "adam_update"; docs/kernels.md). The kernel
 * writes the parameter and its state in place; no graph is recorded, and the version
 * counters of the written tensors are bumped as for any in-place op.
 *
 * The kernels are also registered as ops ("sgd_update", "sgd_momentum_update",
 * "adam_update") whose forward performs the update on its inputs and returns the updated
 * tensors, so tools can run them like any other op. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "optim_internal.h"
#include "../ops/ops_common.h"

/* Which update an optimizer runs. */
typedef enum opt_kind { OPT_SGD, OPT_ADAM, OPT_ADAMW } opt_kind;

/* Most state tensors of one parameter (Adam: step, exp_avg, exp_avg_sq). */
#define MAX_SLOTS 3

/* State tensor names of each kind, in PyTorch's state-dict order. Adam's slot 0 is the step
 * count (float64, 0-dim), which the kernel never sees. SGD has its slot only with momentum. */
static const char *const slot_names[][MAX_SLOTS] = {
    [OPT_SGD] = {"momentum_buffer"},
    [OPT_ADAM] = {"step", "exp_avg", "exp_avg_sq"},
    [OPT_ADAMW] = {"step", "exp_avg", "exp_avg_sq"},
};
static const char *const kind_names[] = {
    [OPT_SGD] = "SGD", [OPT_ADAM] = "Adam", [OPT_ADAMW] = "AdamW"};

/* A parameter and its state. */
typedef struct opt_param {
    ag_tensor *param;                /* strong reference */
    char *name;                      /* copy of the caller's name */
    ag_tensor *state[MAX_SLOTS];     /* strong; NULL until first needed */
    char state_names[MAX_SLOTS][40]; /* "<index>.<slot>" */
    bool has_values;                 /* state holds values (an update ran, or a load) */
    int64_t steps;                   /* Adam: updates done; its step tensor is refreshed
                                        from this when the state is read out */
} opt_param;

struct ag_optimizer {
    opt_kind kind;
    int n_slots;          /* state tensors per parameter */
    double lr;            /* current lr (the options' lr is only the initial one) */
    double initial_lr;    /* see ag__optimizer_initial_lr */
    bool has_initial_lr;  /* initial_lr is set */
    ag_sgd_options sgd;   /* settings of an SGD */
    ag_adam_options adam; /* settings of an Adam or AdamW */
    int n;                /* parameters */
    opt_param *params;    /* n entries */
};

/* ---- the update ops ---- */

/* True if some element of t is reached through a zero stride (an expanded view): such a
 * tensor can't be written in place. */
static bool overlaps_itself(const ag_tensor *t) {
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] > 1 && t->strides[d] == 0) return true;
    return false;
}

/* Runs op's kernel on t = (param, grad, state...) and bumps the versions of the tensors it
 * wrote (param and state). */
static ag_status run_update(ag_op_def *op, int n, ag_tensor *const *t, const ag_attrs *attrs) {
    ag_kernel_tensor kin[4], kout[3];
    for (int i = 0; i < n; i++) ag__kt(t[i], &kin[i]);
    ag__kt(t[0], &kout[0]);
    for (int i = 2; i < n; i++) ag__kt(t[i], &kout[i - 1]);
    ag_status st =
        ag__run_kernel(op, t[0]->storage->device, t[0]->dtype, n, kin, n - 1, kout, attrs);
    if (st != AG_OK) return st;
    ag__bump_version(t[0]);
    for (int i = 2; i < n; i++) ag__bump_version(t[i]);
    return AG_OK;
}

/* Forward of the update ops: updates (param, grad, state...) in place and returns the
 * written tensors (param, state...) as outputs. */
static ag_status update_forward(ag_op_ctx *ctx) {
    ag_tensor *const *in = ctx->inputs;
    const int n = ctx->op->n_inputs;
    if (ctx->n_inputs != n || ctx->n_outputs != n - 1)
        return ag__error(AG_ERR_INVALID_ARG,
                         "%s: takes %d inputs and %d outputs (param and state), got %d and %d",
                         ctx->op->name, n, n - 1, ctx->n_inputs, ctx->n_outputs);
    for (int i = 0; i < n; i++)
        if (i != 1 && overlaps_itself(in[i])) {
            char d[192];
            return ag__error(AG_ERR_INVALID_ARG,
                             "%s: input %d (%s) has overlapping memory and can't be updated in "
                             "place",
                             ctx->op->name, i, ag__describe(in[i], d, sizeof d));
        }
    ag_status st = run_update((ag_op_def *)ctx->op, n, in, ctx->attrs);
    for (int k = 0; k < n - 1 && st == AG_OK; k++)
        ctx->outputs[k] = ag_retain(in[k == 0 ? 0 : k + 1]);
    return st;
}

/* attrs (docs/kernels.md): reals lr, momentum, dampening, weight_decay; ints nesterov,
 * first. "sgd_update" is plain SGD (momentum 0), "sgd_momentum_update" keeps a buffer. */
static ag_op_def op_sgd_update = {.name = "sgd_update",
                                  .kernel = "sgd_update",
                                  .n_inputs = 2, /* param, grad */
                                  .n_outputs = 1,
                                  .flags = AG_OPF_NONDIFF,
                                  .forward = update_forward};
static ag_op_def op_sgd_momentum_update = {.name = "sgd_momentum_update",
                                           .kernel = "sgd_update",
                                           .n_inputs = 3, /* param, grad, momentum_buffer */
                                           .n_outputs = 2,
                                           .flags = AG_OPF_NONDIFF,
                                           .forward = update_forward};
/* attrs: reals lr, beta1, beta2, eps, weight_decay; ints decoupled (AdamW), first, step. */
static ag_op_def op_adam_update = {.name = "adam_update",
                                   .kernel = "adam_update",
                                   .n_inputs = 4, /* param, grad, exp_avg, exp_avg_sq */
                                   .n_outputs = 3,
                                   .flags = AG_OPF_NONDIFF,
                                   .forward = update_forward};

/* Registers the update ops (ops/builtin.c calls this at load time). */
ag_status ag__register_optim_ops(void) {
    static ag_op_def *const ops[] = {&op_sgd_update, &op_sgd_momentum_update, &op_adam_update};
    return ag__register_all(ops, (int)(sizeof ops / sizeof ops[0]));
}

/* ---- construction ---- */

/* Checks one parameter of a new optimizer (fn names the constructor). */
static ag_status check_param(const char *fn, const ag_named_tensor *params, int i) {
    const ag_tensor *t = params[i].tensor;
    const char *name = params[i].name ? params[i].name : "";
    char d[192];
    if (!t)
        return ag__error_if_none(AG_ERR_INVALID_ARG, "%s: parameter %d ('%s') is NULL", fn, i,
                                 name);
    if (!ag_is_leaf(t))
        return ag__error(AG_ERR_INVALID_ARG,
                         "%s: can't optimize a non-leaf Tensor: parameter %d ('%s') was made by "
                         "%s",
                         fn, i, name, ag_grad_fn_name(t));
    if (!ag__is_float(t->dtype))
        return ag__error(AG_ERR_DTYPE,
                         "%s: parameter %d ('%s') is %s; optimizers update floating-point "
                         "parameters only",
                         fn, i, name, ag__describe(t, d, sizeof d));
    if (overlaps_itself(t))
        return ag__error(AG_ERR_INVALID_ARG,
                         "%s: parameter %d ('%s') has overlapping memory (an expanded view) and "
                         "can't be updated in place",
                         fn, i, name);
    for (int j = 0; j < i; j++)
        if (params[j].tensor == t)
            return ag__error(AG_ERR_INVALID_ARG, "%s: parameter %d ('%s') is parameter %d again",
                             fn, i, name, j);
    return AG_OK;
}

/* A new optimizer of `kind` over the parameters, with settings still to be filled in. */
static ag_optimizer *optimizer_new(const char *fn, opt_kind kind, int n_slots, int n,
                                   const ag_named_tensor *params, double lr) {
    if (n <= 0 || !params) {
        ag__error(AG_ERR_INVALID_ARG, "%s: optimizer got an empty parameter list", fn);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (check_param(fn, params, i) != AG_OK) return NULL;
    ag_optimizer *opt = ag__calloc(1, sizeof *opt);
    opt_param *ps = ag__calloc((size_t)n, sizeof *ps);
    if (!opt || !ps) {
        free(opt);
        free(ps);
        ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
        return NULL;
    }
    *opt = (ag_optimizer){.kind = kind, .n_slots = n_slots, .lr = lr, .n = n, .params = ps};
    for (int i = 0; i < n; i++) {
        ps[i].param = ag_retain(params[i].tensor);
        ps[i].name = ag__strdup(params[i].name ? params[i].name : "");
        for (int s = 0; s < n_slots; s++)
            snprintf(ps[i].state_names[s], sizeof ps[i].state_names[s], "%d.%s", i,
                     slot_names[kind][s]);
        if (!ps[i].name) {
            ag_optimizer_free(opt);
            ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
            return NULL;
        }
    }
    return opt;
}

ag_sgd_options ag_sgd_defaults(double lr) {
    return (ag_sgd_options){.lr = lr};
}

ag_adam_options ag_adam_defaults(void) {
    return (ag_adam_options){.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
}

ag_adam_options ag_adamw_defaults(void) {
    ag_adam_options o = ag_adam_defaults();
    o.weight_decay = 1e-2;
    return o;
}

/* PyTorch's checks of the settings shared by all optimizers (NaN fails them too). */
static ag_status check_common(const char *fn, double lr, double weight_decay) {
    if (!(lr >= 0)) return ag__error(AG_ERR_INVALID_ARG, "%s: Invalid learning rate: %g", fn, lr);
    if (!(weight_decay >= 0))
        return ag__error(AG_ERR_INVALID_ARG, "%s: Invalid weight_decay value: %g", fn,
                         weight_decay);
    return AG_OK;
}

ag_optimizer *ag_sgd_new(int n, const ag_named_tensor *params, const ag_sgd_options *o) {
    const char *fn = "ag_sgd_new";
    if (!o) {
        ag__error(AG_ERR_INVALID_ARG, "%s: options is NULL", fn);
        return NULL;
    }
    if (check_common(fn, o->lr, o->weight_decay) != AG_OK) return NULL;
    if (!(o->momentum >= 0)) {
        ag__error(AG_ERR_INVALID_ARG, "%s: Invalid momentum value: %g", fn, o->momentum);
        return NULL;
    }
    if (o->nesterov && (o->momentum <= 0 || o->dampening != 0)) {
        ag__error(AG_ERR_INVALID_ARG,
                  "%s: Nesterov momentum requires a momentum and zero dampening", fn);
        return NULL;
    }
    ag_optimizer *opt = optimizer_new(fn, OPT_SGD, o->momentum != 0, n, params, o->lr);
    if (opt) opt->sgd = *o;
    return opt;
}

/* Adam and AdamW: one set of settings and checks. */
static ag_optimizer *adam_new(const char *fn, opt_kind kind, int n, const ag_named_tensor *params,
                              const ag_adam_options *o) {
    if (!o) {
        ag__error(AG_ERR_INVALID_ARG, "%s: options is NULL", fn);
        return NULL;
    }
    if (check_common(fn, o->lr, o->weight_decay) != AG_OK) return NULL;
    if (!(o->eps >= 0)) {
        ag__error(AG_ERR_INVALID_ARG, "%s: Invalid epsilon value: %g", fn, o->eps);
        return NULL;
    }
    const double betas[2] = {o->beta1, o->beta2};
    for (int i = 0; i < 2; i++)
        if (!(betas[i] >= 0 && betas[i] < 1)) {
            ag__error(AG_ERR_INVALID_ARG, "%s: Invalid beta parameter at index %d: %g", fn, i,
                      betas[i]);
            return NULL;
        }
    ag_optimizer *opt = optimizer_new(fn, kind, MAX_SLOTS, n, params, o->lr);
    if (opt) opt->adam = *o;
    return opt;
}

ag_optimizer *ag_adam_new(int n, const ag_named_tensor *params, const ag_adam_options *options) {
    return adam_new("ag_adam_new", OPT_ADAM, n, params, options);
}

ag_optimizer *ag_adamw_new(int n, const ag_named_tensor *params, const ag_adam_options *options) {
    return adam_new("ag_adamw_new", OPT_ADAMW, n, params, options);
}

/* Drops a parameter's state. */
static void drop_state(opt_param *p) {
    for (int s = 0; s < MAX_SLOTS; s++) {
        ag_release(p->state[s]);
        p->state[s] = NULL;
    }
    p->has_values = false;
    p->steps = 0;
}

void ag_optimizer_free(ag_optimizer *opt) {
    if (!opt) return;
    for (int i = 0; i < opt->n; i++) {
        drop_state(&opt->params[i]);
        ag_release(opt->params[i].param);
        free(opt->params[i].name);
    }
    free(opt->params);
    free(opt);
}

double ag_optimizer_lr(const ag_optimizer *opt) {
    return opt ? opt->lr : NAN;
}

void ag_optimizer_set_lr(ag_optimizer *opt, double lr) {
    if (opt) opt->lr = lr;
}

double ag__optimizer_initial_lr(ag_optimizer *opt) {
    if (!opt->has_initial_lr) {
        opt->initial_lr = opt->lr;
        opt->has_initial_lr = true;
    }
    return opt->initial_lr;
}

/* ---- step ---- */

/* True for Adam's step-count slot, which holds a float64 0-dim tensor. */
static bool is_step_slot(const ag_optimizer *opt, int s) {
    return opt->kind != OPT_SGD && s == 0;
}

/* Allocates the state tensors of p that are missing (uninitialised: has_values says whether
 * they hold anything). */
static ag_status ensure_state(const ag_optimizer *opt, opt_param *p) {
    const ag_tensor *t = p->param;
    for (int s = 0; s < opt->n_slots; s++) {
        if (p->state[s]) continue;
        p->state[s] = is_step_slot(opt, s)
                          ? ag__tensor_alloc(AG_F64, 0, NULL, t->storage->device)
                          : ag__tensor_alloc(t->dtype, t->ndim, t->shape, t->storage->device);
        if (!p->state[s]) return ag_last_status();
    }
    return AG_OK;
}

/* Checks that parameter i's gradient matches it in shape, dtype and device. */
static ag_status check_grad(const ag_optimizer *opt, int i) {
    const opt_param *p = &opt->params[i];
    const ag_tensor *t = p->param, *g = t->grad;
    if (g->dtype == t->dtype && g->ndim == t->ndim &&
        memcmp(g->shape, t->shape, (size_t)t->ndim * sizeof *t->shape) == 0 &&
        ag__same_device(g->storage->device, t->storage->device))
        return AG_OK;
    char dg[192], dt[192];
    const ag_status st = !ag__same_device(g->storage->device, t->storage->device) ? AG_ERR_DEVICE
                         : g->dtype != t->dtype                                   ? AG_ERR_DTYPE
                                                                                  : AG_ERR_SHAPE;
    return ag__error(st,
                     "ag_optimizer_step: the gradient of parameter %d ('%s') is %s but the "
                     "parameter is %s",
                     i, p->name, ag__describe(g, dg, sizeof dg), ag__describe(t, dt, sizeof dt));
}

/* One fused update of p, whose gradient has been checked. */
static ag_status update_param(ag_optimizer *opt, opt_param *p) {
    ag_tensor *t[4] = {p->param, p->param->grad};
    ag_attrs at;
    ag_op_def *op = &op_adam_update;
    int n = 4;
    ag_status st = ensure_state(opt, p);
    if (st != AG_OK) return st;
    if (opt->kind == OPT_SGD) {
        const ag_sgd_options *o = &opt->sgd;
        at = (ag_attrs){.reals = {opt->lr, o->momentum, o->dampening, o->weight_decay},
                        .ints = {o->nesterov, !p->has_values}};
        n = o->momentum != 0 ? 3 : 2;
        op = n == 3 ? &op_sgd_momentum_update : &op_sgd_update;
        t[2] = p->state[0];
    } else {
        const ag_adam_options *o = &opt->adam;
        at = (ag_attrs){.reals = {opt->lr, o->beta1, o->beta2, o->eps, o->weight_decay},
                        .ints = {opt->kind == OPT_ADAMW, !p->has_values, p->steps + 1}};
        t[2] = p->state[1];
        t[3] = p->state[2];
    }
    st = run_update(op, n, t, &at);
    if (st != AG_OK) return st;
    p->has_values = true;
    p->steps++;
    return AG_OK;
}

ag_status ag_optimizer_step(ag_optimizer *opt) {
    if (!opt) return ag__error_if_none(AG_ERR_INVALID_ARG, "ag_optimizer_step: optimizer is NULL");
    for (int i = 0; i < opt->n; i++) {
        if (!opt->params[i].param->grad) continue;
        ag_status st = check_grad(opt, i);
        if (st != AG_OK) return st;
    }
    for (int i = 0; i < opt->n; i++) {
        if (!opt->params[i].param->grad) continue;
        ag_status st = update_param(opt, &opt->params[i]);
        if (st != AG_OK) return st;
    }
    return AG_OK;
}

ag_status ag_optimizer_zero_grad(ag_optimizer *opt, bool set_to_none) {
    if (!opt)
        return ag__error_if_none(AG_ERR_INVALID_ARG, "ag_optimizer_zero_grad: optimizer is NULL");
    for (int i = 0; i < opt->n; i++) {
        ag_tensor *t = opt->params[i].param, *g = t->grad;
        if (!g) continue;
        ag_status st = AG_OK;
        if (set_to_none) {
            st = ag_set_grad(t, NULL);
        } else if (g->requires_grad) {
            /* A gradient with history (create_graph): PyTorch detaches it before zeroing;
             * a fresh zero tensor is that. */
            ag_scope *scope = ag_scope_begin();
            ag_tensor *zeros = ag_zeros_like(g);
            st = zeros ? ag_set_grad(t, zeros) : ag_last_status();
            ag_scope_end(scope);
        } else if (!ag_zero_(g)) {
            st = ag_last_status();
        }
        if (st != AG_OK) return st;
    }
    return AG_OK;
}

/* ---- state ---- */

int ag_optimizer_parameters(const ag_optimizer *opt, ag_named_tensor *out, int capacity) {
    if (!opt) {
        ag__error_if_none(AG_ERR_INVALID_ARG, "ag_optimizer_parameters: optimizer is NULL");
        return -1;
    }
    for (int i = 0; i < opt->n && out && i < capacity; i++)
        out[i] = (ag_named_tensor){opt->params[i].name, opt->params[i].param};
    return opt->n;
}

int ag_optimizer_state(const ag_optimizer *opt, ag_named_tensor *out, int capacity) {
    if (!opt) {
        ag__error_if_none(AG_ERR_INVALID_ARG, "ag_optimizer_state: optimizer is NULL");
        return -1;
    }
    int count = 0;
    for (int i = 0; i < opt->n; i++) {
        const opt_param *p = &opt->params[i];
        if (!p->has_values) continue;
        for (int s = 0; s < opt->n_slots; s++, count++) {
            /* The step tensor is written here, not at every step: it stays out of the
             * per-step work. */
            if (is_step_slot(opt, s)) {
                if (ag__fill(p->state[s], (double)p->steps) != AG_OK) return -1;
                ag__bump_version(p->state[s]);
            }
            if (out && count < capacity)
                out[count] = (ag_named_tensor){p->state_names[s], p->state[s]};
        }
    }
    return count;
}

/* Finds the parameter index and slot named by a state entry ("3.exp_avg"); false if none. */
static bool parse_state_name(const ag_optimizer *opt, const char *name, int *index, int *slot) {
    if (!name || name[0] < '0' || name[0] > '9') return false;
    char *end;
    long i = strtol(name, &end, 10);
    if (*end != '.' || i >= opt->n) return false;
    for (int s = 0; s < opt->n_slots; s++)
        if (strcmp(end + 1, slot_names[opt->kind][s]) == 0) {
            *index = (int)i;
            *slot = s;
            return true;
        }
    return false;
}

/* Checks one state entry against its parameter; a step count is read into *steps. */
static ag_status check_entry(const ag_optimizer *opt, const ag_named_tensor *e, int i, int s,
                             int64_t *steps) {
    const opt_param *p = &opt->params[i];
    const ag_tensor *t = e->tensor;
    char de[192], dp[192];
    if (is_step_slot(opt, s)) {
        double v = NAN;
        ag_status st = t->ndim == 0 ? ag_item(t, &v) : AG_OK;
        if (st != AG_OK) return st;
        if (!(v >= 0 && v <= 9007199254740992.0 && v == floor(v)))
            return ag__error(AG_ERR_INVALID_ARG,
                             "ag_optimizer_load_state: '%s' must be a 0-dim tensor holding a "
                             "whole number of steps >= 0, got %s",
                             e->name, ag__describe(t, de, sizeof de));
        *steps = (int64_t)v;
        return AG_OK;
    }
    if (t->ndim == p->param->ndim &&
        memcmp(t->shape, p->param->shape, (size_t)t->ndim * sizeof *t->shape) == 0)
        return AG_OK;
    return ag__error(
        AG_ERR_SHAPE, "ag_optimizer_load_state: '%s' is %s but parameter %d ('%s') is %s", e->name,
        ag__describe(t, de, sizeof de), i, p->name, ag__describe(p->param, dp, sizeof dp));
}

/* Matches the entries to (parameter, slot) in found[i * MAX_SLOTS + s] and checks them, the
 * step counts into steps[i]; the optimizer is not touched. */
static ag_status match_entries(const ag_optimizer *opt, int n, const ag_named_tensor *state,
                               int *found, int64_t *steps) {
    const char *fn = "ag_optimizer_load_state";
    for (int k = 0; k < opt->n * MAX_SLOTS; k++) found[k] = -1;
    for (int e = 0; e < n; e++) {
        int i, s;
        if (!state[e].tensor)
            return ag__error_if_none(AG_ERR_INVALID_ARG, "%s: entry %d ('%s') is NULL", fn, e,
                                     state[e].name ? state[e].name : "");
        if (!parse_state_name(opt, state[e].name, &i, &s))
            return ag__error(
                AG_ERR_INVALID_ARG, "%s: unknown state name '%s' for %s over %d parameters", fn,
                state[e].name ? state[e].name : "(null)", kind_names[opt->kind], opt->n);
        if (found[i * MAX_SLOTS + s] >= 0)
            return ag__error(AG_ERR_INVALID_ARG, "%s: state '%s' is given twice", fn,
                             state[e].name);
        found[i * MAX_SLOTS + s] = e;
        ag_status st = check_entry(opt, &state[e], i, s, &steps[i]);
        if (st != AG_OK) return st;
    }
    /* A parameter's state comes whole or not at all. */
    for (int i = 0; i < opt->n; i++) {
        int present = 0, missing = -1;
        for (int s = 0; s < opt->n_slots; s++)
            if (found[i * MAX_SLOTS + s] >= 0)
                present++;
            else if (missing < 0)
                missing = s;
        if (present > 0 && missing >= 0)
            return ag__error(AG_ERR_INVALID_ARG, "%s: the state of parameter %d ('%s') lacks '%s'",
                             fn, i, opt->params[i].name, opt->params[i].state_names[missing]);
    }
    return AG_OK;
}

/* Copies state entry e into p's slot s (converting dtype and device). */
static ag_status copy_entry(opt_param *p, int s, ag_tensor *e) {
    ag_scope *scope = ag_scope_begin();
    ag_tensor *src = ag_to_device(e, ag_device_of(p->state[s]));
    ag_status st = src ? ag__copy_into(p->state[s], src) : ag_last_status();
    ag_scope_end(scope);
    if (st == AG_OK) ag__bump_version(p->state[s]);
    return st;
}

ag_status ag_optimizer_load_state(ag_optimizer *opt, int n, const ag_named_tensor *state) {
    if (!opt || n < 0 || (n > 0 && !state))
        return ag__error_if_none(AG_ERR_INVALID_ARG,
                                 "ag_optimizer_load_state: NULL optimizer or state list");
    int *found = ag__malloc((size_t)opt->n * MAX_SLOTS * sizeof *found);
    int64_t *steps = ag__calloc((size_t)opt->n, sizeof *steps);
    ag_status st = found && steps ? AG_OK
                                  : ag__error(AG_ERR_OUT_OF_MEMORY,
                                              "ag_optimizer_load_state: out of host memory");
    if (st == AG_OK) st = match_entries(opt, n, state, found, steps);
    /* As PyTorch's load_state_dict, the loaded state replaces the old one entirely. */
    bool prev = ag_set_grad_enabled(false);
    for (int i = 0; i < opt->n && st == AG_OK; i++) {
        opt_param *p = &opt->params[i];
        const int *f = &found[i * MAX_SLOTS];
        if (f[0] < 0) {
            drop_state(p);
            continue;
        }
        st = ensure_state(opt, p);
        for (int s = 0; s < opt->n_slots && st == AG_OK; s++)
            if (!is_step_slot(opt, s)) st = copy_entry(p, s, state[f[s]].tensor);
        p->has_values = st == AG_OK;
        p->steps = steps[i];
    }
    ag_set_grad_enabled(prev);
    free(found);
    free(steps);
    return st;
}

/* ---- gradient clipping ---- */

ag_status ag_clip_grad_norm(int n, const ag_named_tensor *params, double max_norm, double norm_type,
                            double *total_norm) {
    const char *fn = "ag_clip_grad_norm";
    if (n < 0 || (n > 0 && !params))
        return ag__error_if_none(AG_ERR_INVALID_ARG, "%s: NULL parameter list", fn);
    if (!(norm_type > 0))
        return ag__error(AG_ERR_INVALID_ARG, "%s: norm_type must be > 0 (or INFINITY), got %g", fn,
                         norm_type);
    for (int i = 0; i < n; i++)
        if (!params[i].tensor)
            return ag__error_if_none(AG_ERR_INVALID_ARG, "%s: parameter %d ('%s') is NULL", fn, i,
                                     params[i].name ? params[i].name : "");
    ag_tensor **norms = ag__malloc((size_t)(n ? n : 1) * sizeof *norms);
    if (!norms) return ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    bool prev = ag_set_grad_enabled(false);
    ag_scope *scope = ag_scope_begin();
    /* As PyTorch: the norm of the per-gradient norms, on the first gradient's device (here
     * in float64). */
    int m = 0;
    ag_device device = {0, 0};
    for (int i = 0; i < n; i++) {
        ag_tensor *g = params[i].tensor->grad;
        if (!g) continue;
        if (m == 0) device = ag_device_of(g);
        norms[m++] =
            ag_to_device(ag_to_dtype(ag_norm(g, norm_type, 0, NULL, false), AG_F64), device);
    }
    double total = 0;
    ag_status st = AG_OK;
    if (m > 0) st = ag_item(ag_norm(ag_stack(m, norms, 0), norm_type, 0, NULL, false), &total);
    double coef = max_norm / (total + 1e-6);
    if (coef > 1) coef = 1; /* NaN stays NaN and spreads to the gradients, as in PyTorch */
    for (int i = 0; i < n && st == AG_OK && coef != 1; i++) {
        ag_tensor *g = params[i].tensor->grad;
        if (g && !ag_mul_scalar_(g, coef)) st = ag_last_status();
    }
    ag_scope_end(scope);
    ag_set_grad_enabled(prev);
    free(norms);
    if (total_norm) *total_norm = total;
    return st;
}
