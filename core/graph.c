/* The autograd graph: recording nodes during forward, their lifetime, saved tensors,
 * hooks, and the per-tensor autograd properties (requires_grad, .grad, detach). */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static _Thread_local bool grad_disabled; /* grad mode is on unless a thread turns it off */
static uint64_t next_seq;                /* atomic: creation order of nodes */
static uint64_t next_hook_handle;        /* atomic: hook handles, unique per process */

static _Thread_local signed char anomaly_local; /* 0: the process default, 1: on, -1: off */
static bool anomaly_default;                    /* atomic: AG_DETECT_ANOMALY=1 at ag_init */

bool ag_set_grad_enabled(bool enabled) {
    bool prev = !grad_disabled;
    grad_disabled = !enabled;
    return prev;
}

bool ag_is_grad_enabled(void) {
    return !grad_disabled;
}

bool ag_set_detect_anomaly(bool on) {
    bool prev = ag_is_anomaly_enabled();
    anomaly_local = on ? 1 : -1;
    return prev;
}

bool ag_is_anomaly_enabled(void) {
    return anomaly_local ? anomaly_local > 0 : __atomic_load_n(&anomaly_default, __ATOMIC_RELAXED);
}

void ag__anomaly_read_env(void) {
    const char *env = getenv("AG_DETECT_ANOMALY");
    __atomic_store_n(&anomaly_default, env && strcmp(env, "1") == 0, __ATOMIC_RELAXED);
}

static void meta_of(const ag_tensor *t, ag_meta *m) {
    m->dtype = t->dtype;
    m->ndim = t->ndim;
    memcpy(m->shape, t->shape, sizeof m->shape);
    m->device = t->storage->device;
}

/* One allocation holds the node and all its per-input/per-output arrays. */
static ag_node *node_new(ag_op_def *op, int n_in, int n_out) {
    /* Saved tensors and their versions: one slot per input and per output. */
    size_t per_slot = sizeof(ag_tensor *) + sizeof(uint64_t);
    size_t size = sizeof(ag_node) + (size_t)n_in * (sizeof(ag_edge) + sizeof(ag_meta) + per_slot) +
                  (size_t)n_out * (sizeof(ag_meta) + sizeof(ag_tensor *) + per_slot);
    /* Most nodes (up to 5 inputs, 1 output) fit a pooled block: no malloc per op. */
    ag_node *n = size <= AG_POOL_NODE_BYTES ? ag__pool_alloc(AG_POOL_NODE) : ag__calloc(1, size);
    if (!n) return NULL;
    n->pooled = size <= AG_POOL_NODE_BYTES;
    char *p = (char *)(n + 1);
    n->saved_version = (uint64_t *)p;
    p += (size_t)(n_in + n_out) * sizeof(uint64_t);
    n->in_meta = (ag_meta *)p;
    p += (size_t)n_in * sizeof(ag_meta);
    n->out_meta = (ag_meta *)p;
    p += (size_t)n_out * sizeof(ag_meta);
    n->edges = (ag_edge *)p;
    p += (size_t)n_in * sizeof(ag_edge);
    n->saved = (ag_tensor **)p;
    p += (size_t)(n_in + n_out) * sizeof(ag_tensor *);
    n->grad_buf = (ag_tensor **)p;
    n->refcount = 1;
    n->op = op;
    n->n_inputs = n_in;
    n->n_outputs = n_out;
    n->seq = __atomic_fetch_add(&next_seq, 1, __ATOMIC_RELAXED);
    return n;
}

ag_status ag__graph_record(ag_op_def *op, int n_inputs, ag_tensor *const *inputs,
                           const ag_attrs *attrs, int n_outputs, ag_tensor **outputs) {
    ag_node *node = node_new(op, n_inputs, n_outputs);
    if (!node)
        return ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory recording the graph",
                         op->name);
    node->attrs = *attrs;
    if (ag_is_anomaly_enabled()) {
        node->origin = ag__anomaly_origin();
        if (!node->origin) {
            ag__node_release(node);
            return ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory recording the origin",
                             op->name);
        }
    }
    for (int i = 0; i < n_inputs; i++) {
        ag_tensor *in = inputs[i];
        meta_of(in, &node->in_meta[i]);
        if (in->requires_grad && !ag__input_bit(op->nondiff_inputs, i)) {
            if (in->grad_fn) {
                node->edges[i].node = in->grad_fn;
                node->edges[i].input_nr = in->output_nr;
                ag__node_retain(in->grad_fn);
            } else {
                node->edges[i].leaf = ag_retain(in);
            }
        }
        if (ag__input_bit(op->save_inputs, i)) {
            node->saved[i] = ag_retain(in);
            node->saved_version[i] = ag_version_of(in);
            node->has_saved = true;
        }
    }
    for (int j = 0; j < n_outputs; j++) {
        ag_tensor *out = outputs[j];
        meta_of(out, &node->out_meta[j]);
        if (ag__input_bit(op->save_outputs, j)) {
            /* An alias without history: saving the output itself would make a cycle
             * output -> node -> output. It shares the version counter, so in-place changes
             * are still caught. */
            ag_tensor *alias =
                ag__tensor_view(out, out->ndim, out->shape, out->strides, out->offset);
            if (!alias) {
                ag__node_release(node);
                return ag_last_status();
            }
            node->saved[n_inputs + j] = alias;
            node->saved_version[n_inputs + j] = ag_version_of(out);
            node->has_saved = true;
        }
        /* Integer outputs never carry gradients. */
        if (out->dtype == AG_I64) continue;
        out->grad_fn = node;
        out->output_nr = j;
        out->requires_grad = true;
        ag__node_retain(node);
    }
    /* Inside ag_checkpoint the saved tensors are dropped now and recomputed in backward. */
    ag_status st = ag__checkpoint_current ? ag__checkpoint_recorded(node) : AG_OK;
    ag__node_release(node); /* the outputs hold it now */
    return st;
}

void ag__node_retain(ag_node *node) {
    __atomic_add_fetch(&node->refcount, 1, __ATOMIC_RELAXED);
}

void ag__node_free_saved(ag_node *n) {
    for (int i = 0; i < n->n_inputs + n->n_outputs; i++) {
        ag_release(n->saved[i]);
        n->saved[i] = NULL;
    }
}

/* Frees a node whose count reached zero, then its inputs' nodes, iteratively: a chain of
 * a million nodes (a long RNN) must not overflow the C stack. Nodes waiting to be freed are
 * linked through their dead_next field, so freeing never needs memory. */
void ag__node_release(ag_node *node) {
    if (!node || __atomic_sub_fetch(&node->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
    ag_node *dead = node;
    node->dead_next = NULL;
    while (dead) {
        ag_node *n = dead;
        dead = n->dead_next;
        for (int i = 0; i < n->n_inputs; i++) {
            ag_release(n->edges[i].leaf);
            ag_node *next = n->edges[i].node;
            if (!next || __atomic_sub_fetch(&next->refcount, 1, __ATOMIC_ACQ_REL) != 0) continue;
            next->dead_next = dead;
            dead = next;
        }
        ag__node_free_saved(n);
        if (n->checkpoint) ag__checkpoint_node_freed(n);
        for (int j = 0; j < n->n_outputs; j++) ag_release(n->grad_buf[j]);
        for (ag_hook *h = n->hooks, *next; h; h = next) {
            next = h->next;
            free(h);
        }
        free(n->retained);
        free(n->origin);
        if (n->pooled)
            ag__pool_free(AG_POOL_NODE, n);
        else
            free(n);
    }
}

/* ---- what backward functions see ---- */

ag_tensor *ag__saved(const ag_backward_ctx *ctx, int i) {
    return ctx->node->saved[i];
}

ag_tensor *ag__saved_output(const ag_backward_ctx *ctx, int j) {
    return ctx->node->saved[ctx->node->n_inputs + j];
}

bool ag__needs_grad(const ag_backward_ctx *ctx, int i) {
    const ag_edge *e = &ctx->node->edges[i];
    return e->node ? e->node->needed : e->leaf && ag__leaf_needed(e->leaf);
}

const ag_attrs *ag__bw_attrs(const ag_backward_ctx *ctx) {
    return &ctx->node->attrs;
}

const ag_meta *ag__bw_in_meta(const ag_backward_ctx *ctx, int i) {
    return &ctx->node->in_meta[i];
}

/* ---- autograd properties of tensors ---- */

ag_status ag_set_requires_grad(ag_tensor *t, bool requires_grad) {
    if (!t) return ag__error_if_none(AG_ERR_INVALID_ARG, "ag_set_requires_grad: tensor is NULL");
    if (t->grad_fn) {
        if (requires_grad) return AG_OK;
        return ag__error(AG_ERR_INVALID_ARG,
                         "you can only change requires_grad flags of leaf variables. If you want "
                         "to use a computed variable in a subgraph that doesn't require "
                         "differentiation use var_no_grad = var.detach().");
    }
    if (requires_grad && t->dtype == AG_I64)
        return ag__error(AG_ERR_DTYPE,
                         "only Tensors of floating point dtype can require gradients (got int64)");
    t->requires_grad = requires_grad;
    return AG_OK;
}

bool ag_requires_grad(const ag_tensor *t) {
    return t && t->requires_grad;
}

bool ag_is_leaf(const ag_tensor *t) {
    return t && !t->grad_fn;
}

ag_tensor *ag_tensor_grad(const ag_tensor *t) {
    return t ? t->grad : NULL;
}

ag_status ag_set_grad(ag_tensor *t, ag_tensor *grad) {
    if (!t) return ag__error_if_none(AG_ERR_INVALID_ARG, "ag_set_grad: tensor is NULL");
    if (grad &&
        (grad->ndim != t->ndim ||
         memcmp(grad->shape, t->shape, (size_t)t->ndim * sizeof *t->shape) != 0 ||
         grad->dtype != t->dtype || !ag__same_device(grad->storage->device, t->storage->device))) {
        char a[192], b[192];
        const ag_status st = !ag__same_device(grad->storage->device, t->storage->device)
                                 ? AG_ERR_DEVICE
                             : grad->dtype != t->dtype ? AG_ERR_DTYPE
                                                       : AG_ERR_SHAPE;
        return ag__error(st, "ag_set_grad: assigned grad %s does not match tensor %s",
                         ag__describe(grad, a, sizeof a), ag__describe(t, b, sizeof b));
    }
    ag_retain(grad);
    ag_release(t->grad);
    t->grad = grad;
    return AG_OK;
}

ag_status ag_retain_grad(ag_tensor *t) {
    if (!t) return ag__error_if_none(AG_ERR_INVALID_ARG, "ag_retain_grad: tensor is NULL");
    if (!t->requires_grad)
        return ag__error(AG_ERR_NO_GRAD,
                         "can't retain_grad on Tensor that has requires_grad=False");
    if (!t->grad_fn) return AG_OK; /* leaves keep their grad anyway */
    ag_node *n = t->grad_fn;
    if (!n->retained) {
        n->retained = ag__calloc((size_t)n->n_outputs, sizeof *n->retained);
        if (!n->retained) return ag__error(AG_ERR_OUT_OF_MEMORY, "ag_retain_grad: out of memory");
    }
    n->retained[t->output_nr] = t;
    t->retains_grad = true;
    return AG_OK;
}

const char *ag_grad_fn_name(const ag_tensor *t) {
    return t && t->grad_fn ? t->grad_fn->op->name : NULL;
}

ag_tensor *ag_detach(ag_tensor *t) {
    if (!t) {
        ag__error_if_none(AG_ERR_INVALID_ARG, "detach: input is NULL");
        return NULL;
    }
    ag_tensor *d = ag__tensor_view(t, t->ndim, t->shape, t->strides, t->offset);
    if (!d) return NULL;
    d->is_view = t->is_view;
    return ag__scope_adopt(d);
}

/* Appends a hook (tensor hook fn or post-accumulate hook post) to t's list; its handle. */
static uint64_t add_hook(const char *who, ag_tensor *t, ag_grad_hook_fn fn,
                         ag_post_accumulate_hook_fn post, void *user) {
    if (!t || (!fn && !post)) {
        ag__error_if_none(AG_ERR_INVALID_ARG, "%s: NULL %s", who, t ? "function" : "tensor");
        return 0;
    }
    if (!t->requires_grad) {
        ag__error(AG_ERR_NO_GRAD,
                  "cannot register a hook on a tensor that doesn't require gradient");
        return 0;
    }
    /* A non-leaf has no .grad of its own to accumulate into (PyTorch 2.1 says the same). */
    if (post && t->grad_fn) {
        ag__error(AG_ERR_INVALID_ARG,
                  "%s: post accumulate grad hooks cannot be registered on non-leaf tensors "
                  "(this one was made by %s)",
                  who, t->grad_fn->op->name);
        return 0;
    }
    ag_hook *h = ag__calloc(1, sizeof *h);
    if (!h) {
        ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of memory", who);
        return 0;
    }
    h->handle = __atomic_add_fetch(&next_hook_handle, 1, __ATOMIC_RELAXED);
    h->fn = fn;
    h->post = post;
    h->user = user;
    h->output_nr = t->grad_fn ? t->output_nr : 0;
    ag_hook **list = t->grad_fn ? &t->grad_fn->hooks : &t->hooks;
    while (*list) list = &(*list)->next;
    *list = h;
    return h->handle;
}

uint64_t ag_register_hook(ag_tensor *t, ag_grad_hook_fn fn, void *user) {
    return add_hook("ag_register_hook", t, fn, NULL, user);
}

uint64_t ag_register_post_accumulate_grad_hook(ag_tensor *leaf, ag_post_accumulate_hook_fn fn,
                                               void *user) {
    return add_hook("ag_register_post_accumulate_grad_hook", leaf, NULL, fn, user);
}

ag_status ag_remove_hook(ag_tensor *t, uint64_t handle) {
    if (!t) return ag__error_if_none(AG_ERR_INVALID_ARG, "ag_remove_hook: tensor is NULL");
    for (ag_hook **list = t->grad_fn ? &t->grad_fn->hooks : &t->hooks; *list;
         list = &(*list)->next) {
        if ((*list)->handle != handle) continue;
        ag_hook *h = *list;
        *list = h->next;
        free(h);
        return AG_OK;
    }
    return ag__error(AG_ERR_INVALID_ARG, "ag_remove_hook: no hook with handle %llu on this tensor",
                     (unsigned long long)handle);
}
