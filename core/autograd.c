/* The backward engine.
 *
 * 1. Walk the graph from the roots and count, for every node, how many edges lead into it
 *    (its dependencies).
 * 2. Seed the roots' gradients and run every node whose dependencies are all in: apply its
 *    hooks, check its saved tensors, call its backward (written in ag ops, so recorded
 *    when create_graph), and pass the results along its edges, summing where paths meet.
 * 3. Gradients reaching a leaf are accumulated into .grad (ag_backward) or handed back to
 *    the caller (ag_grad, which leaves .grad alone). A leaf with tensor hooks has its
 *    gradients summed first, and its hooks run once on the sum after the last node.
 * 4. A leaf's post-accumulate-grad hooks run as soon as the last edge into it has been
 *    processed (its .grad is final), so work they start (DDP's all-reduce) overlaps the
 *    rest of backward; leaves with tensor hooks, or whose edges were not all run, get
 *    theirs after the last node. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static uint64_t next_epoch; /* atomic: one per backward pass */

/* What a pass collects for ag_grad; NULL for ag_backward. */
typedef struct capture {
    int n;                    /* number of inputs */
    ag_tensor *const *inputs; /* tensors whose gradients are wanted */
    ag_tensor **grads;        /* gradient found for each (strong) */
} capture;

/* A growable array of nodes (or of leaves). The first 128 entries live inside the struct,
 * so the graph of a typical training step is walked without any malloc. */
typedef struct ptr_list {
    void **items;            /* inline_items, or a heap array once that is full */
    size_t count, capacity;  /* used and available entries */
    void *inline_items[128]; /* storage for small graphs */
} ptr_list;

static void list_init(ptr_list *l) {
    l->items = l->inline_items;
    l->count = 0;
    l->capacity = sizeof l->inline_items / sizeof l->inline_items[0];
}

static void list_free(ptr_list *l) {
    if (l->items != l->inline_items) free(l->items);
}

static ag_status list_push(ptr_list *l, void *n) {
    if (l->count == l->capacity) {
        size_t cap = l->capacity * 2;
        void **items = l->items == l->inline_items ? ag__malloc(cap * sizeof *items)
                                                   : ag__realloc(l->items, cap * sizeof *items);
        if (!items) return ag__error(AG_ERR_OUT_OF_MEMORY, "backward: out of host memory");
        if (l->items == l->inline_items) memcpy(items, l->inline_items, sizeof l->inline_items);
        l->items = items;
        l->capacity = cap;
    }
    l->items[l->count++] = n;
    return AG_OK;
}

static bool same_shape(const ag_tensor *t, int ndim, const int64_t *shape) {
    return t->ndim == ndim && memcmp(t->shape, shape, (size_t)ndim * sizeof *shape) == 0;
}

/* Adds g into *slot (taking a new reference to whatever *slot ends up holding). */
static ag_status accumulate(ag_tensor **slot, ag_tensor *g) {
    if (!*slot) {
        *slot = ag_retain(g);
        return AG_OK;
    }
    ag_tensor *sum = ag_add(*slot, g);
    if (!sum) return ag_last_status();
    ag_release(*slot);
    *slot = ag_retain(sum);
    return AG_OK;
}

/* Runs the tensor hooks in `hooks` watching output_nr on *grad, replacing it when one
 * returns a tensor. */
static ag_status run_hooks(ag_hook *hooks, int output_nr, ag_tensor **grad) {
    for (ag_hook *h = hooks; h; h = h->next) {
        if (h->output_nr != output_nr || !h->fn) continue;
        ag_tensor *r = h->fn(*grad, h->user);
        if (!r) {
            if (ag_last_status() != AG_OK) return ag_last_status();
            continue;
        }
        if (!same_shape(r, (*grad)->ndim, (*grad)->shape)) {
            char a[160], b[160];
            return ag__error(AG_ERR_SHAPE, "hook returned a gradient of shape %s, expected %s",
                             ag__shape_fmt(a, sizeof a, r->ndim, r->shape),
                             ag__shape_fmt(b, sizeof b, (*grad)->ndim, (*grad)->shape));
        }
        ag_retain(r);
        ag_release(*grad);
        *grad = r;
    }
    return AG_OK;
}

/* PyTorch's AccumulateGrad: the first gradient is stored (a private contiguous copy unless
 * create_graph), later ones are added; in place unless create_graph, so the graph of a
 * differentiable .grad is kept. A first gradient that nothing else references (the caller's
 * one reference, no other tensor on its storage) is stored as it is, not copied: the
 * common case of a fresh gradient from a backward function. */
static ag_status add_to_grad(ag_tensor *t, ag_tensor *g, bool create_graph) {
    if (!t->grad) {
        if (create_graph || (g->refcount == 1 && g->storage->refcount == 1 && !g->is_view &&
                             ag_is_contiguous(g) && !g->grad_fn)) {
            t->grad = ag_retain(g);
            return AG_OK;
        }
        ag_tensor *copy = ag_clone(g);
        if (!copy) return ag_last_status();
        t->grad = ag_retain(copy);
        return AG_OK;
    }
    if (create_graph) {
        ag_tensor *old = t->grad;
        t->grad = NULL;
        ag_status st = accumulate(&t->grad, old);
        if (st == AG_OK) st = accumulate(&t->grad, g);
        ag_release(old);
        return st;
    }
    return ag_add_(t->grad, g) ? AG_OK : ag_last_status();
}

/* Backward passes on several threads may reach one leaf (Hogwild-style training over shared
 * weights, which PyTorch's AccumulateGrad allows too): .grad is updated under a lock, one of
 * a few picked by the leaf's address. */
#define LEAF_LOCKS 16
static pthread_mutex_t leaf_locks[LEAF_LOCKS] = {
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
    PTHREAD_MUTEX_INITIALIZER};

static ag_status accumulate_grad(ag_tensor *t, ag_tensor *g, bool create_graph) {
    /* Tensor structs are at least 64-byte apart: the low bits say nothing. */
    pthread_mutex_t *lock = &leaf_locks[((uintptr_t)t >> 6) % LEAF_LOCKS];
    pthread_mutex_lock(lock);
    ag_status st = add_to_grad(t, g, create_graph);
    pthread_mutex_unlock(lock);
    return st;
}

/* Leaves a pass finishes after its last node: those with tensor hooks, whose hooks must see
 * the sum of all their gradients (PyTorch runs them once, in AccumulateGrad), and those
 * with post-accumulate-grad hooks. */
typedef struct leaf_lists {
    ptr_list held;   /* pairs (leaf, summed gradient), both strong, of hooked leaves */
    ptr_list posted; /* leaves (strong) with post-accumulate-grad hooks, .grad updated */
} leaf_lists;

/* Whether leaf has a post-accumulate-grad hook (post) or a tensor hook (!post). */
static bool has_hook(const ag_tensor *leaf, bool post) {
    for (const ag_hook *h = leaf->hooks; h; h = h->next)
        if (post ? h->post != NULL : h->fn != NULL) return true;
    return false;
}

/* Adds leaf (a new reference) to lv->posted unless it is there already or has no
 * post-accumulate-grad hook. */
static ag_status note_posted(ag_tensor *leaf, leaf_lists *lv) {
    bool hooked = has_hook(leaf, true);
    for (size_t i = 0; hooked && i < lv->posted.count; i++)
        if (lv->posted.items[i] == leaf) return AG_OK;
    ag_status st = hooked ? list_push(&lv->posted, leaf) : AG_OK;
    if (hooked && st == AG_OK) ag_retain(leaf);
    return st;
}

/* Captures g for ag_grad or accumulates it into .grad (noting the leaf for its
 * post-accumulate-grad hooks). Takes over the caller's reference to g, so that
 * accumulate_grad can tell an unshared g. */
static ag_status settle_leaf(ag_tensor *leaf, ag_tensor *g, capture *cap, bool create,
                             leaf_lists *lv) {
    ag_status st = AG_OK;
    if (cap) {
        for (int k = 0; k < cap->n && st == AG_OK; k++)
            if (cap->inputs[k] == leaf) st = accumulate(&cap->grads[k], g);
    } else {
        st = accumulate_grad(leaf, g, create);
        if (st == AG_OK) st = note_posted(leaf, lv);
    }
    ag_release(g);
    return st;
}

/* Delivers gradient g of leaf: settled at once, or summed in lv->held when tensor hooks
 * must see the total first. Takes over the caller's reference to g. */
static ag_status deliver_to_leaf(ag_tensor *leaf, ag_tensor *g, capture *cap, bool create,
                                 leaf_lists *lv) {
    if (!has_hook(leaf, false)) return settle_leaf(leaf, g, cap, create, lv);
    for (size_t i = 0; i < lv->held.count; i += 2) {
        if (lv->held.items[i] != leaf) continue;
        ag_tensor *sum = lv->held.items[i + 1];
        ag_status st = accumulate(&sum, g);
        lv->held.items[i + 1] = sum;
        ag_release(g);
        return st;
    }
    ag_status st = list_push(&lv->held, ag_retain(leaf));
    if (st == AG_OK) st = list_push(&lv->held, g);
    if (st != AG_OK) { /* the list keeps whole pairs only */
        if (lv->held.count % 2) lv->held.count--;
        ag_release(leaf);
        ag_release(g);
    }
    return st;
}

/* Runs leaf's post-accumulate-grad hooks now that its last edge of the pass is done, and
 * drops it from lv->posted so that finish_leaves does not run them again. Not for ag_grad
 * (no post hooks) nor leaves with tensor hooks (their .grad is settled at the end). */
static void run_post_hooks_early(ag_tensor *leaf, const capture *cap, leaf_lists *lv) {
    if (cap || has_hook(leaf, false)) return;
    for (size_t i = 0; i < lv->posted.count; i++) {
        if (lv->posted.items[i] != leaf) continue;
        lv->posted.items[i] = NULL;
        for (ag_hook *h = leaf->hooks, *next; h; h = next) {
            next = h->next;
            if (h->post) h->post(leaf, h->user);
        }
        ag_release(leaf);
        return;
    }
}

/* Ends a pass (run: it succeeded): each held leaf's tensor hooks run on its summed gradient,
 * which is then settled; then the post-accumulate-grad hooks run, leaf by leaf in the order
 * .grad was first updated, each leaf's in registration order. Drops the lists' references.
 * A post hook may remove itself: the next one is read before it runs. */
static ag_status finish_leaves(leaf_lists *lv, capture *cap, bool create, bool run) {
    ag_status st = AG_OK;
    for (size_t i = 0; i < lv->held.count; i += 2) {
        ag_tensor *leaf = lv->held.items[i], *g = lv->held.items[i + 1];
        if (run && st == AG_OK) st = run_hooks(leaf->hooks, 0, &g);
        if (run && st == AG_OK)
            st = settle_leaf(leaf, g, cap, create, lv);
        else
            ag_release(g);
        ag_release(leaf);
    }
    for (size_t i = 0; i < lv->posted.count; i++) {
        ag_tensor *leaf = lv->posted.items[i];
        if (!leaf) continue; /* its hooks ran early (run_post_hooks_early) */
        for (ag_hook *h = leaf->hooks, *next; run && st == AG_OK && h; h = next) {
            next = h->next;
            if (h->post) h->post(leaf, h->user);
        }
        ag_release(leaf);
    }
    list_free(&lv->held);
    list_free(&lv->posted);
    return st;
}

static ag_status check_saved(const ag_node *n) {
    if (n->saved_freed)
        return ag__error(AG_ERR_GRAPH_FREED,
                         "Trying to backward through the graph a second time (or directly access "
                         "saved tensors after they have already been freed) in %s backward. "
                         "Saved intermediate values of the graph are freed when you call "
                         "backward or ag_grad. Specify retain_graph=true if you need to backward "
                         "through the graph a second time or if you need to access saved tensors "
                         "after calling backward.",
                         n->op->name);
    for (int i = 0; i < n->n_inputs + n->n_outputs; i++) {
        const ag_tensor *s = n->saved[i];
        if (!s || ag_version_of(s) == n->saved_version[i]) continue;
        char desc[192];
        bool output = i >= n->n_inputs;
        return ag__error(AG_ERR_INPLACE,
                         "one of the variables needed for gradient computation has been "
                         "modified by an inplace operation: [%s], %s %d of %s, is at version "
                         "%llu; expected version %llu instead. Hint: the in-place op that "
                         "changed it ran after %s was recorded.",
                         ag__describe(s, desc, sizeof desc), output ? "output" : "input",
                         output ? i - n->n_inputs : i, n->op->name,
                         (unsigned long long)ag_version_of(s),
                         (unsigned long long)n->saved_version[i], n->op->name);
    }
    return AG_OK;
}

/* Gradient of each output of n, hooks applied, retained/captured; zeros where none came. */
static ag_status gather_output_grads(ag_node *n, capture *cap, ag_tensor **grads) {
    bool any = false;
    for (int j = 0; j < n->n_outputs; j++) {
        grads[j] = n->grad_buf[j];
        n->grad_buf[j] = NULL;
        if (!grads[j]) continue;
        any = true;
        ag_status st = run_hooks(n->hooks, j, &grads[j]);
        if (st != AG_OK) return st;
        if (n->retained && n->retained[j] && !cap) {
            ag_tensor *t = n->retained[j];
            if (!t->grad) {
                ag_tensor *copy = ag_clone(grads[j]);
                if (!copy) return ag_last_status();
                t->grad = ag_retain(copy);
            } else if (!ag_add_(t->grad, grads[j])) {
                return ag_last_status();
            }
        }
        for (int k = 0; cap && k < cap->n; k++)
            if (cap->inputs[k]->grad_fn == n && cap->inputs[k]->output_nr == j) {
                st = accumulate(&cap->grads[k], grads[j]);
                if (st != AG_OK) return st;
            }
    }
    if (!any) return AG_OK;
    for (int j = 0; j < n->n_outputs; j++) {
        if (grads[j]) continue;
        const ag_meta *m = &n->out_meta[j];
        grads[j] = ag_retain(ag_zeros(m->dtype, m->ndim, m->shape));
        if (!grads[j]) return ag_last_status();
    }
    return AG_OK;
}

/* ---- once-differentiable backward ---- */

/* Forward: an alias of input 0 (the gradient); the other inputs are the grad_outputs, so
 * that a second backward reaches this node and fails here. */
static ag_status delayed_error_forward(ag_op_ctx *ctx) {
    ag_tensor *g = ctx->inputs[0];
    ctx->outputs[0] = ag__tensor_view(g, g->ndim, g->shape, g->strides, g->offset);
    return ctx->outputs[0] ? AG_OK : ag_last_status();
}

static ag_status delayed_error_backward(ag_backward_ctx *ctx) {
    const ag_op_def *op = (const ag_op_def *)(intptr_t)ag__bw_attrs(ctx)->ints[0];
    return ag__error(AG_ERR_UNSUPPORTED,
                     "trying to differentiate twice a function that was marked with "
                     "@once_differentiable (the backward of %s is a kernel without a backward)",
                     op ? op->name : "an op");
}

static ag_op_def op_delayed_error = {.name = "once_differentiable_error",
                                     .n_inputs = -1,
                                     .n_outputs = 1,
                                     .forward = delayed_error_forward,
                                     .backward = delayed_error_backward};

/* Replaces each gradient in in_g by an alias whose backward is an error, when the
 * gradients flowing in have history (create_graph); in_g entries are scope-owned. */
static ag_status mark_once_differentiable(ag_node *n, ag_tensor *const *out_g, ag_tensor **in_g) {
    bool history = false;
    for (int j = 0; j < n->n_outputs; j++) history |= out_g[j]->requires_grad;
    if (!history) return AG_OK;
    ag_tensor *args[17];
    if (n->n_outputs > 16)
        return ag__error(AG_ERR_INTERNAL,
                         "%s: a once-differentiable op with %d outputs (16 at most)", n->op->name,
                         n->n_outputs);
    for (int j = 0; j < n->n_outputs; j++) args[j + 1] = out_g[j];
    /* The op itself, not its registry index, which unregistering may change. */
    ag_attrs at = {.ints = {(int64_t)(intptr_t)n->op}};
    for (int i = 0; i < n->n_inputs; i++) {
        if (!in_g[i]) continue;
        args[0] = in_g[i];
        ag_tensor *marked = ag__dispatch1(&op_delayed_error, n->n_outputs + 1, args, &at);
        if (!marked) return ag_last_status();
        in_g[i] = marked;
    }
    return AG_OK;
}

/* Runs one node's backward and routes its input gradients; pushes newly ready nodes. */
static ag_status run_node(ag_node *n, capture *cap, bool retain, bool create, ptr_list *ready,
                          leaf_lists *lv) {
    ag_tensor *out_grads[16] = {0}, *in_grads_buf[16] = {0};
    ag_tensor **out_g =
        n->n_outputs <= 16 ? out_grads : ag__calloc((size_t)n->n_outputs, sizeof *out_g);
    ag_tensor **in_g =
        n->n_inputs <= 16 ? in_grads_buf : ag__calloc((size_t)n->n_inputs, sizeof *in_g);
    ag_status st =
        out_g && in_g ? AG_OK : ag__error(AG_ERR_OUT_OF_MEMORY, "backward: out of memory");
    if (st == AG_OK) st = gather_output_grads(n, cap, out_g);
    bool have_grads = st == AG_OK && n->n_outputs > 0 && out_g[0];
    /* A node of ag_checkpoint gets its saved tensors back by running the function again. */
    if (have_grads && n->awaiting_recompute && !n->saved_freed) st = ag__checkpoint_recompute(n);
    if (have_grads && st == AG_OK) st = check_saved(n);
    if (have_grads && st == AG_OK) {
        ag_scope *scope = ag_scope_begin();
        ag_backward_ctx ctx = {n, out_g, in_g};
        /* A backward kernel has no backward: run it outside the graph, then mark its
         * results so that differentiating them fails (PyTorch's DelayedError). */
        bool once = create && n->op->once_differentiable;
        if (once) ag_set_grad_enabled(false);
        uint64_t traced = ag__trace_begin(), errors_before = ag__errors_set();
        st = n->op->backward(&ctx);
        /* Backward rules are chains of ops that pass a NULL along: one that failed (out of
         * memory, say) leaves its error and a NULL gradient, which must not pass for "no
         * gradient" and a silently wrong result. */
        if (st == AG_OK && ag__errors_set() != errors_before && ag_last_status() != AG_OK)
            st = ag_last_status();
        ag__trace_end(traced, n->op->name, true, n->out_meta[0].device, n->n_outputs, out_g);
        if (once) {
            ag_set_grad_enabled(true);
            if (st == AG_OK) st = mark_once_differentiable(n, out_g, in_g);
        }
        for (int i = 0; i < n->n_inputs; i++) {
            if (st != AG_OK || !ag__needs_grad(&ctx, i)) {
                in_g[i] = NULL;
                continue;
            }
            if (in_g[i] && !same_shape(in_g[i], n->in_meta[i].ndim, n->in_meta[i].shape)) {
                char a[160], b[160];
                st = ag__error(AG_ERR_INTERNAL,
                               "%s backward returned a gradient of shape %s for input %d of "
                               "shape %s",
                               n->op->name,
                               ag__shape_fmt(a, sizeof a, in_g[i]->ndim, in_g[i]->shape), i,
                               ag__shape_fmt(b, sizeof b, n->in_meta[i].ndim, n->in_meta[i].shape));
            }
            /* A gradient has its input's dtype (PyTorch's validate_outputs converts too): a
             * rule that computed in another precision must not hand a leaf a bfloat16 .grad. */
            if (st == AG_OK && in_g[i] && in_g[i]->dtype != n->in_meta[i].dtype &&
                !(in_g[i] = ag_to_dtype(in_g[i], n->in_meta[i].dtype)))
                st = ag_last_status();
            ag_retain(in_g[i]);
        }
        /* Anomaly mode: catch a NaN/Inf where it is made, not steps later in .grad. */
        if (st == AG_OK && ag_is_anomaly_enabled()) st = ag__anomaly_check(n, in_g);
        if (st != AG_OK)
            for (int i = 0; i < n->n_inputs; i++) {
                ag_release(in_g[i]);
                in_g[i] = NULL;
            }
        ag_scope_end(scope);
        if (!retain && n->has_saved) {
            ag__node_free_saved(n);
            n->saved_freed = true;
        }
    }
    for (int i = 0; i < n->n_inputs; i++) {
        ag_edge *e = &n->edges[i];
        if (st == AG_OK && in_g[i]) {
            if (e->node)
                st = accumulate(&e->node->grad_buf[e->input_nr], in_g[i]);
            else if (e->leaf) {
                st = deliver_to_leaf(e->leaf, in_g[i], cap, create, lv);
                in_g[i] = NULL; /* deliver_to_leaf took the reference */
            }
        }
        ag_release(in_g[i]);
        if (e->leaf && e->leaf->post_pending > 0 && --e->leaf->post_pending == 0 && st == AG_OK)
            run_post_hooks_early(e->leaf, cap, lv);
        /* A node no captured input is reached from never runs (nor do its inputs). */
        if (e->node && --e->node->deps == 0 && e->node->needed && st == AG_OK)
            st = list_push(ready, e->node);
    }
    for (int j = 0; j < n->n_outputs; j++) ag_release(out_g[j]);
    if (out_g != out_grads) free(out_g);
    if (in_g != in_grads_buf) free(in_g);
    return st;
}

/* The capture of the backward running on this thread; NULL for ag_backward, which
 * produces the gradient of every leaf it reaches. */
static _Thread_local const capture *running_capture;

static bool captures_leaf(const capture *cap, const ag_tensor *leaf) {
    for (int k = 0; k < cap->n; k++)
        if (cap->inputs[k] == leaf) return true;
    return false;
}

bool ag__leaf_needed(const ag_tensor *leaf) {
    return !running_capture || captures_leaf(running_capture, leaf);
}

static int by_creation(const void *a, const void *b) {
    const ag_node *x = *(ag_node *const *)a, *y = *(ag_node *const *)b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* ag_grad runs only the nodes that lead to one of its inputs (PyTorch's exec_info): the
 * weight gradients of a network are not computed for an input gradient. A node is needed
 * when one of its outputs is a captured input, or an edge leads to a captured leaf or a
 * needed node. Edges point to earlier nodes, so one pass in creation order settles each
 * node after the nodes it points to. A once-differentiable error node always runs: its
 * message says why the gradient is missing, where pruning would silently give zeros. */
static void mark_needed(ptr_list *seen, const capture *cap) {
    qsort(seen->items, seen->count, sizeof *seen->items, by_creation);
    for (size_t i = 0; i < seen->count; i++) {
        ag_node *n = seen->items[i];
        bool needed = n->op == &op_delayed_error;
        for (int k = 0; k < cap->n && !needed; k++) needed = cap->inputs[k]->grad_fn == n;
        for (int e = 0; e < n->n_inputs && !needed; e++) {
            const ag_edge *edge = &n->edges[e];
            needed = edge->node ? edge->node->needed : edge->leaf && captures_leaf(cap, edge->leaf);
        }
        n->needed = needed;
    }
}

/* Counts dependencies of every node reachable from the roots; lists them in `seen`. */
static ag_status count_dependencies(int n_roots, ag_tensor *const *roots, uint64_t epoch,
                                    ptr_list *seen) {
    ptr_list stack;
    list_init(&stack);
    ag_status st = AG_OK;
    for (int r = 0; r < n_roots && st == AG_OK; r++) {
        ag_node *n = roots[r]->grad_fn;
        if (!n || n->epoch == epoch) continue;
        n->epoch = epoch;
        n->deps = 0;
        n->needed = true;
        st = list_push(&stack, n);
        if (st == AG_OK) st = list_push(seen, n);
    }
    while (st == AG_OK && stack.count) {
        ag_node *n = stack.items[--stack.count];
        for (int i = 0; i < n->n_inputs && st == AG_OK; i++) {
            ag_node *next = n->edges[i].node;
            ag_tensor *leaf = n->edges[i].leaf;
            if (leaf && has_hook(leaf, true)) {
                if (leaf->post_epoch != epoch) {
                    leaf->post_epoch = epoch;
                    leaf->post_pending = 0;
                }
                leaf->post_pending++;
            }
            if (!next) continue;
            if (next->epoch != epoch) {
                next->epoch = epoch;
                next->deps = 0;
                next->needed = true;
                st = list_push(&stack, next);
                if (st == AG_OK) st = list_push(seen, next);
            }
            next->deps++;
        }
    }
    list_free(&stack);
    return st;
}

/* Checks a root and makes its seed gradient (a new reference). */
static ag_status seed_gradient(int r, ag_tensor *root, ag_tensor *given, ag_tensor **seed) {
    char a[160], b[160];
    if (!root->requires_grad)
        return ag__error(AG_ERR_NO_GRAD,
                         "element %d of tensors does not require grad and does not have a "
                         "grad_fn",
                         r);
    if (!given) {
        if (root->numel != 1)
            return ag__error(AG_ERR_SHAPE,
                             "grad can be implicitly created only for scalar outputs (output %d "
                             "has shape %s)",
                             r, ag__shape_fmt(a, sizeof a, root->ndim, root->shape));
        *seed = ag_retain(ag_ones_like(root));
        return *seed ? AG_OK : ag_last_status();
    }
    if (!same_shape(given, root->ndim, root->shape))
        return ag__error(AG_ERR_SHAPE,
                         "Mismatch in shape: grad_output[%d] has a shape of %s and output[%d] "
                         "has a shape of %s.",
                         r, ag__shape_fmt(a, sizeof a, given->ndim, given->shape), r,
                         ag__shape_fmt(b, sizeof b, root->ndim, root->shape));
    if (given->dtype != root->dtype ||
        !ag__same_device(given->storage->device, root->storage->device))
        return ag__error(AG_ERR_DTYPE,
                         "grad_output[%d] is %s but output[%d] is %s: expected the same dtype "
                         "and device",
                         r, ag__describe(given, a, sizeof a), r, ag__describe(root, b, sizeof b));
    *seed = ag_retain(given);
    return AG_OK;
}

static ag_status run_backward(int n_roots, ag_tensor *const *roots, ag_tensor *const *root_grads,
                              bool retain, bool create, capture *cap) {
    for (int r = 0; r < n_roots; r++)
        if (!roots[r])
            return ag__error_if_none(AG_ERR_INVALID_ARG, "backward: output %d is NULL", r);
    bool prev_mode = ag_set_grad_enabled(create);
    /* Backward ops run in the dtypes of their gradients, as PyTorch's (autocast is off). */
    ag_autocast prev_autocast = ag__autocast_state;
    ag__autocast_state.enabled = false;
    ag_scope *scope = ag_scope_begin();
    uint64_t epoch = __atomic_add_fetch(&next_epoch, 1, __ATOMIC_RELAXED);
    ptr_list seen, ready;
    leaf_lists lv;
    list_init(&seen);
    list_init(&ready);
    list_init(&lv.held);
    list_init(&lv.posted);
    ag_status st = count_dependencies(n_roots, roots, epoch, &seen);
    const capture *outer_capture = running_capture;
    running_capture = cap;
    if (st == AG_OK && cap) mark_needed(&seen, cap);
    for (int r = 0; r < n_roots && st == AG_OK; r++) {
        ag_tensor *seed = NULL;
        st = seed_gradient(r, roots[r], root_grads ? root_grads[r] : NULL, &seed);
        if (st != AG_OK) break;
        ag_node *n = roots[r]->grad_fn;
        if (n) {
            st = accumulate(&n->grad_buf[roots[r]->output_nr], seed);
        } else {
            st = deliver_to_leaf(roots[r], seed, cap, create, &lv);
            seed = NULL; /* deliver_to_leaf took the reference */
        }
        ag_release(seed);
    }
    for (size_t i = 0; i < seen.count && st == AG_OK; i++) {
        ag_node *n = seen.items[i];
        if (n->deps == 0 && n->needed) st = list_push(&ready, n);
    }
    while (st == AG_OK && ready.count)
        st = run_node(ready.items[--ready.count], cap, retain, create, &ready, &lv);
    /* After an error, unreached nodes may still hold partial gradients. */
    for (size_t i = 0; i < seen.count; i++) {
        ag_node *n = seen.items[i];
        for (int j = 0; j < n->n_outputs; j++) {
            ag_release(n->grad_buf[j]);
            n->grad_buf[j] = NULL;
        }
    }
    running_capture = outer_capture;
    ag_status leaves_st = finish_leaves(&lv, cap, create, st == AG_OK);
    if (st == AG_OK) st = leaves_st;
    list_free(&seen);
    list_free(&ready);
    ag_scope_end(scope);
    ag__autocast_state = prev_autocast;
    ag_set_grad_enabled(prev_mode);
    return st;
}

ag_status ag_backward_ex(ag_tensor *t, ag_tensor *gradient, bool retain_graph, bool create_graph) {
    if (!t) return ag__error_if_none(AG_ERR_INVALID_ARG, "backward: tensor is NULL");
    return run_backward(1, &t, gradient ? &gradient : NULL, retain_graph, create_graph, NULL);
}

ag_status ag_backward(ag_tensor *t, ag_tensor *gradient) {
    return ag_backward_ex(t, gradient, false, false);
}

ag_status ag_grad(int n_outputs, ag_tensor *const *outputs, int n_inputs, ag_tensor *const *inputs,
                  ag_tensor *const *grad_outputs, bool retain_graph, bool create_graph,
                  bool allow_unused, ag_tensor **grads) {
    if (n_outputs < 1 || n_inputs < 1 || !outputs || !inputs || !grads)
        return ag__error(AG_ERR_INVALID_ARG, "ag_grad: need at least one output and one input");
    for (int k = 0; k < n_inputs; k++) {
        grads[k] = NULL;
        if (!inputs[k])
            return ag__error_if_none(AG_ERR_INVALID_ARG, "ag_grad: input %d is NULL", k);
        if (!inputs[k]->requires_grad)
            return ag__error(AG_ERR_NO_GRAD,
                             "One of the differentiated Tensors (input %d) does not require grad",
                             k);
    }
    capture cap = {n_inputs, inputs, grads};
    ag_status st = run_backward(n_outputs, outputs, grad_outputs, retain_graph, create_graph, &cap);
    for (int k = 0; k < n_inputs && st == AG_OK; k++)
        if (!grads[k] && !allow_unused)
            st = ag__error(AG_ERR_INVALID_ARG,
                           "One of the differentiated Tensors (input %d) appears to not have been "
                           "used in the graph. Set allow_unused=true if this is the desired "
                           "behavior.",
                           k);
    for (int k = 0; k < n_inputs; k++) {
        if (st != AG_OK) {
            ag_release(grads[k]);
            grads[k] = NULL;
        } else if (grads[k] && !ag__scope_adopt(grads[k])) {
            st = ag_last_status();
        }
    }
    return st;
}
