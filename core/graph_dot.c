/* ag_graph_dot: the autograd graph behind a tensor as a Graphviz DOT file.
 *
 * One box per graph node (op name, output dtypes and shapes, saved tensors), one ellipse
 * per leaf that gradients reach (marked requires_grad), an arrow from each input to the
 * node that consumes it, and the root tensor in gold at the bottom. Render with
 * `dot -Tpng graph.dot -o graph.png` (docs/debugging.md). */
#include <stdlib.h>
#include "internal.h"

/* A set of pointers (open addressing): each node and leaf is drawn once, however many
 * paths lead to it. */
typedef struct ptr_set {
    const void **slots; /* capacity entries, NULL where free */
    size_t capacity;    /* a power of two */
    size_t count;       /* used entries */
} ptr_set;

/* Slot of p in slots (its own, or the free one where it would go). */
static size_t set_slot(const void **slots, size_t capacity, const void *p) {
    size_t i = ((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15u & (capacity - 1);
    while (slots[i] && slots[i] != p) i = (i + 1) & (capacity - 1);
    return i;
}

/* Adds p: 1 if it was new, 0 if present already, -1 when out of memory. */
static int set_add(ptr_set *s, const void *p) {
    if (2 * (s->count + 1) > s->capacity) {
        size_t cap = s->capacity ? 2 * s->capacity : 64;
        const void **slots = ag__calloc(cap, sizeof *slots);
        if (!slots) return -1;
        for (size_t i = 0; i < s->capacity; i++)
            if (s->slots[i]) slots[set_slot(slots, cap, s->slots[i])] = s->slots[i];
        free(s->slots);
        s->slots = slots;
        s->capacity = cap;
    }
    size_t i = set_slot(s->slots, s->capacity, p);
    if (s->slots[i]) return 0;
    s->slots[i] = p;
    s->count++;
    return 1;
}

/* What the writer needs: the root and the file name for messages. */
typedef struct dot_job {
    const ag_tensor *root; /* the tensor whose history is drawn */
    const char *path;      /* target file */
} dot_job;

/* Writes s inside a DOT double-quoted string. */
static void put_escaped(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        fputc(*s, f);
    }
}

/* Writes the box of graph node n: op, outputs, saved tensors. */
static void put_node(FILE *f, const ag_node *n) {
    fprintf(f, "  n%p [shape=box, label=\"", (const void *)n);
    put_escaped(f, n->op->name);
    for (int j = 0; j < n->n_outputs; j++) {
        char shape[160];
        const ag_meta *m = &n->out_meta[j];
        fprintf(f, "\\nout %d: %s%s", j, ag_dtype_name(m->dtype),
                ag__shape_fmt(shape, sizeof shape, m->ndim, m->shape));
    }
    for (int i = 0; n->has_saved && !n->saved_freed && i < n->n_inputs + n->n_outputs; i++) {
        char desc[192];
        bool output = i >= n->n_inputs;
        if (n->saved[i])
            fprintf(f, "\\nsaved %s %d: %s", output ? "output" : "input",
                    output ? i - n->n_inputs : i, ag__describe(n->saved[i], desc, sizeof desc));
    }
    /* A backward without retain_graph freed them: a second backward would fail here. */
    if (n->saved_freed) fputs("\\nsaved tensors freed", f);
    fputs("\"];\n", f);
}

/* Writes the ellipse of leaf t. */
static void put_leaf(FILE *f, const ag_tensor *t) {
    char desc[192];
    fprintf(f, "  t%p [shape=ellipse, style=filled, fillcolor=lightblue, label=\"leaf\\n%s%s\"];\n",
            (const void *)t, ag__describe(t, desc, sizeof desc),
            t->requires_grad ? "\\nrequires_grad" : "");
}

/* Writes the nodes and edges reachable from start (depth first, each once). */
static ag_status put_graph(FILE *f, ag_node *start) {
    ptr_set seen = {0};
    size_t count = 0, capacity = 64;
    ag_node **stack = ag__malloc(capacity * sizeof *stack);
    bool ok = stack && set_add(&seen, start) >= 0;
    if (ok) stack[count++] = start;
    while (ok && count) {
        const ag_node *n = stack[--count];
        put_node(f, n);
        for (int i = 0; i < n->n_inputs && ok; i++) {
            const ag_edge *e = &n->edges[i];
            const void *from = e->node ? (const void *)e->node : (const void *)e->leaf;
            if (!from) continue; /* an input that needs no gradient */
            int added = set_add(&seen, from);
            ok = added >= 0;
            fprintf(f, "  %c%p -> n%p;\n", e->node ? 'n' : 't', from, (const void *)n);
            if (added == 1 && e->leaf) put_leaf(f, e->leaf);
            if (added == 1 && e->node && count == capacity) {
                ag_node **grown = ag__realloc(stack, 2 * capacity * sizeof *stack);
                ok = grown != NULL;
                if (ok) {
                    stack = grown;
                    capacity *= 2;
                }
            }
            if (ok && added == 1 && e->node) stack[count++] = e->node;
        }
    }
    free(stack);
    free(seen.slots);
    return ok ? AG_OK : ag__error(AG_ERR_OUT_OF_MEMORY, "ag_graph_dot: out of host memory");
}

/* ag__file_writer of a dot_job. */
static ag_status write_dot(FILE *f, void *user) {
    const dot_job *job = user;
    const ag_tensor *root = job->root;
    char desc[192];
    fputs("digraph autograd {\n  node [fontname=\"monospace\", fontsize=10];\n", f);
    ag_status st = AG_OK;
    if (root->grad_fn)
        st = put_graph(f, root->grad_fn);
    else
        put_leaf(f, root);
    fprintf(f, "  root [shape=box, style=\"filled,bold\", fillcolor=gold, label=\"root\\n%s\"];\n",
            ag__describe(root, desc, sizeof desc));
    fprintf(f, "  %c%p -> root;\n}\n", root->grad_fn ? 'n' : 't',
            root->grad_fn ? (const void *)root->grad_fn : (const void *)root);
    if (st == AG_OK && ferror(f)) st = ag__io_error("ag_graph_dot", "cannot write", job->path);
    return st;
}

ag_status ag_graph_dot(const ag_tensor *root, const char *path) {
    if (!root) return ag__error_if_none(AG_ERR_INVALID_ARG, "ag_graph_dot: the tensor is NULL");
    if (!path || !*path) return ag__error(AG_ERR_INVALID_ARG, "ag_graph_dot: no file name");
    if (!root->grad_fn && !root->requires_grad)
        return ag__error(AG_ERR_INVALID_ARG,
                         "ag_graph_dot: the tensor has no autograd graph (it has no grad_fn and "
                         "does not require grad)");
    dot_job job = {root, path};
    return ag__write_file_atomic("ag_graph_dot", path, write_dot, &job);
}
