/* Activation checkpointing (torch.utils.checkpoint with use_reentrant=False).
 *
 * ag_checkpoint runs a function with the graph recorded as usual, but each node recorded
 * inside it drops its saved tensors at once: the intermediate activations are freed when
 * the function returns instead of living until backward. The nodes stay tied to a frame
 * that keeps what is needed to run the function again: the function, its inputs (with
 * their versions) and the default generator's state. When backward reaches a node whose
 * saved tensors were dropped, the frame runs the function again; the k-th node recorded
 * by that recomputation hands its saved tensors to the frame's k-th node, and the rest of
 * the recomputation is thrown away.
 *
 * Ownership, without cycles: a tied node holds its frame (strong); the frame holds its
 * inputs (strong) and only weak pointers to its nodes, which a node clears when it is
 * freed. The inputs are dropped once the recomputation has filled the nodes.
 *
 * The recomputed saved tensors keep their history (they were computed from the original
 * inputs with grad mode on, and the recomputed nodes keep their own saved tensors too), so
 * a create_graph backward through a checkpointed region is correct. */
#include <stdlib.h>
#include "internal.h"

struct ag_checkpoint_frame {
    int refcount;              /* atomic: the running ag_checkpoint call + tied nodes */
    ag_tensor_fn fn;           /* the checkpointed function */
    void *user;                /* its argument */
    int n_inputs;              /* inputs it is given */
    ag_tensor **inputs;        /* strong, until the recomputation has run */
    uint64_t *input_versions;  /* versions of the inputs when ag_checkpoint was called */
    int n_outputs;             /* outputs it stores */
    uint64_t rng_seed;         /* default generator's state when the forward began */
    uint64_t rng_counter;      /* (with rng_seed) */
    int n_nodes, capacity;     /* ops recorded by the forward, and room in the arrays */
    const ag_op_def **ops;     /* op of each recorded node, kept after a node is freed */
    ag_node **nodes;           /* weak: the nodes awaiting their saved tensors, else NULL */
    bool running;              /* the forward call has not returned yet */
    bool recomputing;          /* the recomputation is running */
    bool recomputed;           /* it ran and filled every node: the inputs are gone */
    int next_index;            /* recomputation: index of the next node it records */
    ag_status failure;         /* recomputation: the first mismatch found, or AG_OK */
    char failure_message[768]; /* its message, set again after fn returns */
};

_Thread_local ag_checkpoint_frame *ag__checkpoint_current;

/* Drops the frame's inputs (after the recomputation, or with the frame). */
static void release_inputs(ag_checkpoint_frame *f) {
    for (int i = 0; f->inputs && i < f->n_inputs; i++) ag_release(f->inputs[i]);
    free(f->inputs);
    f->inputs = NULL;
    f->recomputed = true;
}

static void frame_release(ag_checkpoint_frame *f) {
    if (!f || __atomic_sub_fetch(&f->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
    /* Releasing the inputs may free earlier graph, and with it earlier frames. */
    release_inputs(f);
    free(f->input_versions);
    free(f->ops);
    free(f->nodes);
    free(f);
}

/* Runs fn inside a scope of its own, so that its intermediates are freed when it returns
 * (only the graph and what the caller keeps survive), and hands the outputs to the
 * caller's scope like op results. On failure every output is NULL. */
static ag_status run_function(ag_tensor_fn fn, void *user, int n_inputs, ag_tensor *const *inputs,
                              int n_outputs, ag_tensor **outputs) {
    for (int j = 0; j < n_outputs; j++) outputs[j] = NULL;
    ag_scope *scope = ag_scope_begin();
    if (!scope) return ag_last_status();
    uint64_t errors_before = ag__errors_set();
    ag_status st = fn(user, n_inputs, inputs, n_outputs, outputs);
    if (st != AG_OK && ag__errors_set() == errors_before)
        ag__error(st,
                  "ag_checkpoint: the checkpointed function failed (status %d) without an "
                  "error message",
                  (int)st);
    for (int j = 0; j < n_outputs && st == AG_OK; j++)
        if (!outputs[j])
            st = ag__error(AG_ERR_INVALID_ARG,
                           "ag_checkpoint: the checkpointed function returned AG_OK but left "
                           "output %d of %d NULL",
                           j, n_outputs);
    /* The outputs outlive the scope: retained before it ends, adopted by the caller's. */
    for (int j = 0; j < n_outputs; j++)
        if (st == AG_OK)
            ag_retain(outputs[j]);
        else
            outputs[j] = NULL;
    ag_scope_end(scope);
    for (int j = 0; j < n_outputs && st == AG_OK; j++) {
        if (ag__scope_adopt(outputs[j])) continue;
        st = ag_last_status(); /* adopt released output j; the later ones are ours */
        for (int k = j + 1; k < n_outputs; k++) ag_release(outputs[k]);
        for (int k = 0; k < n_outputs; k++) outputs[k] = NULL;
    }
    return st;
}

ag_status ag_checkpoint(ag_tensor_fn fn, void *user, int n_inputs, ag_tensor *const *inputs,
                        int n_outputs, ag_tensor **outputs) {
    if (!outputs || n_outputs < 1)
        return ag__error(AG_ERR_INVALID_ARG,
                         "ag_checkpoint: need at least one output and an array for it (got "
                         "n_outputs %d, outputs %s)",
                         n_outputs, outputs ? "given" : "NULL");
    for (int j = 0; j < n_outputs; j++) outputs[j] = NULL;
    if (!fn) return ag__error(AG_ERR_INVALID_ARG, "ag_checkpoint: fn is NULL");
    if (n_inputs < 0 || (n_inputs > 0 && !inputs))
        return ag__error(AG_ERR_INVALID_ARG, "ag_checkpoint: %d inputs but inputs is %s", n_inputs,
                         inputs ? "given" : "NULL");
    for (int i = 0; i < n_inputs; i++)
        if (!inputs[i])
            return ag__error_if_none(AG_ERR_INVALID_ARG, "ag_checkpoint: input %d is NULL", i);
    /* Nothing is recorded without grad mode, and a checkpoint inside a checkpointed
     * function is recomputed with the outer one: both just run the function. */
    if (!ag_is_grad_enabled() || ag__checkpoint_current)
        return run_function(fn, user, n_inputs, inputs, n_outputs, outputs);

    ag_checkpoint_frame *f = ag__calloc(1, sizeof *f);
    if (f && n_inputs) {
        f->inputs = ag__calloc((size_t)n_inputs, sizeof *f->inputs);
        f->input_versions = ag__calloc((size_t)n_inputs, sizeof *f->input_versions);
    }
    if (!f || (n_inputs && (!f->inputs || !f->input_versions))) {
        if (f) free(f->inputs);
        if (f) free(f->input_versions);
        free(f);
        return ag__error(AG_ERR_OUT_OF_MEMORY, "ag_checkpoint: out of host memory");
    }
    f->refcount = 1;
    f->fn = fn;
    f->user = user;
    f->n_inputs = n_inputs;
    f->n_outputs = n_outputs;
    for (int i = 0; i < n_inputs; i++) {
        f->inputs[i] = ag_retain(inputs[i]);
        f->input_versions[i] = ag_version_of(inputs[i]);
    }
    ag__default_rng_state(&f->rng_seed, &f->rng_counter);
    f->running = true;
    ag__checkpoint_current = f;
    ag_status st = run_function(fn, user, n_inputs, inputs, n_outputs, outputs);
    ag__checkpoint_current = NULL; /* there was none: see the test above */
    f->running = false;
    frame_release(f); /* freed here unless a node recorded inside still needs it */
    return st;
}

/* Grows the frame's per-node arrays to hold one more node. */
static ag_status frame_grow(ag_checkpoint_frame *f) {
    if (f->n_nodes < f->capacity) return AG_OK;
    int cap = f->capacity ? f->capacity * 2 : 16;
    const ag_op_def **ops = ag__realloc(f->ops, (size_t)cap * sizeof *ops);
    if (ops) f->ops = ops;
    ag_node **nodes = ops ? ag__realloc(f->nodes, (size_t)cap * sizeof *nodes) : NULL;
    if (!nodes)
        return ag__error(AG_ERR_OUT_OF_MEMORY, "ag_checkpoint: out of host memory recording");
    f->nodes = nodes;
    f->capacity = cap;
    return AG_OK;
}

/* Keeps the first failure of a recomputation (fn may overwrite the thread's message). */
static ag_status recompute_failed(ag_checkpoint_frame *f, ag_status st) {
    if (f->failure == AG_OK) {
        f->failure = st;
        snprintf(f->failure_message, sizeof f->failure_message, "%s", ag_last_error());
    }
    return st;
}

/* Forward: node's saved tensors are dropped and node waits for the recomputation. */
static ag_status forget_saved(ag_checkpoint_frame *f, ag_node *node) {
    ag_status st = frame_grow(f);
    if (st != AG_OK) return st;
    int k = f->n_nodes++;
    f->ops[k] = node->op;
    f->nodes[k] = NULL;
    if (!node->has_saved) return AG_OK; /* nothing to recompute for it */
    f->nodes[k] = node;
    node->checkpoint = f;
    node->checkpoint_index = k;
    __atomic_add_fetch(&f->refcount, 1, __ATOMIC_RELAXED);
    /* saved_version is kept: the recomputed tensors must be at the same versions. */
    ag__node_free_saved(node);
    node->awaiting_recompute = true;
    return AG_OK;
}

/* Recomputation: node (recorded again) shares its saved tensors with the original node. */
static ag_status hand_over_saved(ag_checkpoint_frame *f, ag_node *node) {
    if (f->failure != AG_OK) return f->failure;
    int k = f->next_index++;
    if (k >= f->n_nodes)
        return recompute_failed(
            f, ag__error(AG_ERR_INVALID_ARG,
                         "checkpoint: the recomputed forward ran %s where the forward ran no "
                         "more ops (it recorded %d): the checkpointed function must run the "
                         "same ops every time it is called",
                         node->op->name, f->n_nodes));
    ag_node *orig = f->nodes[k];
    if (f->ops[k] != node->op ||
        (orig && (orig->n_inputs != node->n_inputs || orig->n_outputs != node->n_outputs)))
        return recompute_failed(
            f, ag__error(AG_ERR_INVALID_ARG,
                         "checkpoint: the recomputed forward ran %s where the forward ran %s "
                         "(op %d of the checkpointed function, with %d inputs where the forward "
                         "had %d): the checkpointed function must run the same ops every time "
                         "it is called",
                         node->op->name, f->ops[k]->name, k, node->n_inputs,
                         orig ? orig->n_inputs : node->n_inputs));
    if (!orig || !orig->awaiting_recompute) return AG_OK; /* freed, or filled before */
    int n_slots = node->n_inputs + node->n_outputs;
    for (int i = 0; i < n_slots; i++) {
        const ag_tensor *s = node->saved[i];
        if (!s || node->saved_version[i] == orig->saved_version[i]) continue;
        char desc[192];
        bool output = i >= node->n_inputs;
        return recompute_failed(
            f, ag__error(AG_ERR_INPLACE,
                         "one of the variables needed for gradient computation has been "
                         "modified by an inplace operation: [%s], %s %d of %s, is at version "
                         "%llu; expected version %llu instead. Hint: it was recomputed by "
                         "ag_checkpoint, and an in-place op changed it (or a tensor the "
                         "checkpointed function reads) after the forward.",
                         ag__describe(s, desc, sizeof desc), output ? "output" : "input",
                         output ? i - node->n_inputs : i, node->op->name,
                         (unsigned long long)node->saved_version[i],
                         (unsigned long long)orig->saved_version[i]));
    }
    for (int i = 0; i < n_slots; i++) orig->saved[i] = ag_retain(node->saved[i]);
    orig->awaiting_recompute = false;
    return AG_OK;
}

ag_status ag__checkpoint_recorded(ag_node *node) {
    ag_checkpoint_frame *f = ag__checkpoint_current;
    return f->recomputing ? hand_over_saved(f, node) : forget_saved(f, node);
}

void ag__checkpoint_node_freed(ag_node *n) {
    ag_checkpoint_frame *f = n->checkpoint;
    if (f->nodes[n->checkpoint_index] == n) f->nodes[n->checkpoint_index] = NULL;
    n->checkpoint = NULL;
    frame_release(f);
}

/* Checks the frame can run again: not from inside its own forward, nor recursively, and
 * on inputs that still hold the values the forward saw. */
static ag_status check_recomputable(const ag_checkpoint_frame *f, const ag_node *n) {
    if (f->running || f->recomputing)
        return ag__error(AG_ERR_UNSUPPORTED,
                         "checkpoint: a backward reached %s inside the checkpointed function "
                         "while that function was still running (a backward inside the "
                         "function may not go through its own ops)",
                         n->op->name);
    if (f->recomputed)
        return ag__error(AG_ERR_INTERNAL,
                         "checkpoint: %s is still waiting for its saved tensors after the "
                         "recomputation",
                         n->op->name);
    for (int i = 0; i < f->n_inputs; i++) {
        uint64_t now = ag_version_of(f->inputs[i]);
        if (now == f->input_versions[i]) continue;
        char desc[192];
        return ag__error(AG_ERR_INPLACE,
                         "one of the variables needed for gradient computation has been "
                         "modified by an inplace operation: [%s], input %d of a checkpointed "
                         "function, is at version %llu; expected version %llu instead. Hint: "
                         "ag_checkpoint runs the function again on its inputs during backward, "
                         "so they must not change after it is called (nor inside it).",
                         ag__describe(f->inputs[i], desc, sizeof desc), i, (unsigned long long)now,
                         (unsigned long long)f->input_versions[i]);
    }
    return AG_OK;
}

ag_status ag__checkpoint_recompute(ag_node *n) {
    ag_checkpoint_frame *f = n->checkpoint;
    ag_status st = check_recomputable(f, n);
    if (st != AG_OK) return st;
    ag_tensor *outputs_buf[8];
    ag_tensor **outputs =
        f->n_outputs <= 8 ? outputs_buf : ag__calloc((size_t)f->n_outputs, sizeof *outputs);
    ag_scope *scope = outputs ? ag_scope_begin() : NULL;
    if (!scope) {
        if (outputs != outputs_buf) free(outputs);
        return ag__error(AG_ERR_OUT_OF_MEMORY, "checkpoint: out of host memory");
    }
    /* Same random numbers as the forward (dropout), and the caller's stream untouched. */
    uint64_t seed, counter;
    ag__default_rng_state(&seed, &counter);
    ag__default_rng_restore(f->rng_seed, f->rng_counter);
    ag_checkpoint_frame *outer = ag__checkpoint_current;
    ag__checkpoint_current = f;
    f->recomputing = true;
    f->next_index = 0;
    f->failure = AG_OK;
    bool prev_grad = ag_set_grad_enabled(true);
    /* Keeps the frame alive even if the function frees the last node tied to it. */
    __atomic_add_fetch(&f->refcount, 1, __ATOMIC_RELAXED);
    uint64_t errors_before = ag__errors_set();
    st = f->fn(f->user, f->n_inputs, f->inputs, f->n_outputs, outputs);
    if (st != AG_OK && ag__errors_set() == errors_before)
        ag__error(st, "the function failed (status %d) without an error message", (int)st);
    ag_scope_end(scope); /* the outputs and everything else not saved by a node */
    if (outputs != outputs_buf) free(outputs);
    ag_set_grad_enabled(prev_grad);
    f->recomputing = false;
    ag__checkpoint_current = outer;
    ag__default_rng_restore(seed, counter);
    if (f->failure != AG_OK) {
        st = ag__error(f->failure, "%s", f->failure_message);
    } else if (st != AG_OK) {
        char message[768];
        snprintf(message, sizeof message, "%s", ag_last_error());
        st = ag__error(st,
                       "checkpoint: recomputing the checkpointed function for %s backward "
                       "failed: %s",
                       n->op->name, message);
    } else if (f->next_index != f->n_nodes) {
        st = ag__error(AG_ERR_INVALID_ARG,
                       "checkpoint: the recomputed forward ended where the forward ran %s (it "
                       "recorded %d ops, the recomputation %d): the checkpointed function must "
                       "run the same ops every time it is called",
                       f->ops[f->next_index]->name, f->n_nodes, f->next_index);
    } else if (n->awaiting_recompute) {
        st = ag__error(AG_ERR_INTERNAL, "checkpoint: the recomputation did not reach %s",
                       n->op->name);
    } else {
        release_inputs(f); /* every node still alive has its saved tensors again */
    }
    frame_release(f);
    return st;
}
