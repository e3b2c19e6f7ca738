/* Module kinds: Linear, ReLU, GELU, LayerNorm, Dropout, Embedding, Flatten, Sequential.
 * Each is a struct starting with ag_module, a kind table and a constructor; forwards call
 * the functional ops of ops/nn.c and ag.h. */
#include <math.h>
#include <stdio.h>
#include "module_internal.h"

/* ---- Linear ---- */

typedef struct linear {
    ag_module base;
    int64_t in, out;   /* features */
    ag_tensor *weight; /* [out, in], borrowed from base */
    ag_tensor *bias;   /* [out] or NULL */
} linear;

static ag_tensor *linear_forward(ag_module *m, ag_tensor *x) {
    const linear *l = (const linear *)m;
    return ag_linear(x, l->weight, l->bias);
}

static void linear_describe(const ag_module *m, char *buf, size_t size) {
    const linear *l = (const linear *)m;
    snprintf(buf, size, "Linear(%lld -> %lld%s)", (long long)l->in, (long long)l->out,
             l->bias ? "" : ", bias=false");
}

static const ag__module_kind linear_kind = {"Linear", linear_forward, linear_describe, NULL};

ag_module *ag_linear_new(int64_t in_features, int64_t out_features, bool bias, ag_generator *gen) {
    if (in_features <= 0 || out_features <= 0)
        return ag__module_bad_arg(
            "Linear: in_features (%lld) and out_features (%lld) must be positive",
            (long long)in_features, (long long)out_features);
    linear *l = ag__module_alloc(&linear_kind, sizeof *l);
    if (!l) return NULL;
    l->in = in_features;
    l->out = out_features;
    /* kaiming_uniform(a=sqrt(5)) bounds the weight by gain*sqrt(3/in) = 1/sqrt(in), and
     * PyTorch draws the bias from the same bound. */
    double bound = 1.0 / sqrt((double)in_features);
    ag_scope *scope = ag_scope_begin();
    const int64_t wshape[2] = {out_features, in_features};
    l->weight = ag__module_add_parameter(
        &l->base, "weight", scope ? ag_uniform(gen, AG_F32, 2, wshape, -bound, bound) : NULL);
    if (bias && l->weight)
        l->bias = ag__module_add_parameter(
            &l->base, "bias", ag_uniform(gen, AG_F32, 1, &out_features, -bound, bound));
    return ag__module_end_init(&l->base, scope, l->weight && (!bias || l->bias));
}

/* ---- ReLU, GELU ---- */

typedef struct gelu {
    ag_module base;
    bool approximate_tanh; /* tanh approximation instead of erf */
} gelu;

static ag_tensor *relu_forward(ag_module *m, ag_tensor *x) {
    (void)m;
    return ag_relu(x);
}

static const ag__module_kind relu_kind = {"ReLU", relu_forward, NULL, NULL};

ag_module *ag_relu_new(void) {
    return ag__module_alloc(&relu_kind, sizeof(ag_module));
}

static ag_tensor *gelu_forward(ag_module *m, ag_tensor *x) {
    return ag_gelu(x, ((const gelu *)m)->approximate_tanh);
}

static void gelu_describe(const ag_module *m, char *buf, size_t size) {
    snprintf(buf, size, "GELU%s",
             ((const gelu *)m)->approximate_tanh ? "(approximate='tanh')" : "");
}

static const ag__module_kind gelu_kind = {"GELU", gelu_forward, gelu_describe, NULL};

ag_module *ag_gelu_new(bool approximate_tanh) {
    gelu *g = ag__module_alloc(&gelu_kind, sizeof *g);
    if (!g) return NULL;
    g->approximate_tanh = approximate_tanh;
    return &g->base;
}

/* ---- LayerNorm ---- */

typedef struct layer_norm {
    ag_module base;
    int64_t size;      /* extent of the normalised last dim */
    double eps;        /* added to the variance */
    ag_tensor *weight; /* [size] or NULL without elementwise_affine */
    ag_tensor *bias;   /* [size] or NULL */
} layer_norm;

static ag_tensor *layer_norm_forward(ag_module *m, ag_tensor *x) {
    const layer_norm *n = (const layer_norm *)m;
    return ag_layer_norm(x, 1, n->weight, n->bias, n->eps);
}

static void layer_norm_describe(const ag_module *m, char *buf, size_t size) {
    const layer_norm *n = (const layer_norm *)m;
    snprintf(buf, size, "LayerNorm(%lld, eps=%g%s)", (long long)n->size, n->eps,
             n->weight ? "" : ", elementwise_affine=false");
}

static const ag__module_kind layer_norm_kind = {"LayerNorm", layer_norm_forward,
                                                layer_norm_describe, NULL};

ag_module *ag_layer_norm_new(int64_t size, double eps, bool elementwise_affine) {
    if (size <= 0 || !(eps >= 0) || isinf(eps))
        return ag__module_bad_arg(
            "LayerNorm: size (%lld) must be positive and eps (%g) finite and >= 0", (long long)size,
            eps);
    layer_norm *n = ag__module_alloc(&layer_norm_kind, sizeof *n);
    if (!n) return NULL;
    n->size = size;
    n->eps = eps;
    if (!elementwise_affine) return &n->base;
    ag_scope *scope = ag_scope_begin();
    n->weight =
        ag__module_add_parameter(&n->base, "weight", scope ? ag_ones(AG_F32, 1, &size) : NULL);
    if (n->weight) n->bias = ag__module_add_parameter(&n->base, "bias", ag_zeros(AG_F32, 1, &size));
    return ag__module_end_init(&n->base, scope, n->bias);
}

/* ---- Dropout ---- */

typedef struct dropout {
    ag_module base;
    double p;          /* probability of zeroing an element */
    ag_generator *gen; /* borrowed; NULL: the default generator */
} dropout;

static ag_tensor *dropout_forward(ag_module *m, ag_tensor *x) {
    const dropout *d = (const dropout *)m;
    return ag_dropout(x, d->p, m->training, d->gen);
}

static void dropout_describe(const ag_module *m, char *buf, size_t size) {
    snprintf(buf, size, "Dropout(p=%g)", ((const dropout *)m)->p);
}

static const ag__module_kind dropout_kind = {"Dropout", dropout_forward, dropout_describe, NULL};

ag_module *ag_dropout_new(double p, ag_generator *gen) {
    if (!(p >= 0 && p <= 1)) return ag__module_bad_arg("Dropout: p (%g) must be in [0, 1]", p);
    dropout *d = ag__module_alloc(&dropout_kind, sizeof *d);
    if (!d) return NULL;
    d->p = p;
    d->gen = gen;
    return &d->base;
}

/* ---- Embedding ---- */

typedef struct embedding {
    ag_module base;
    int64_t num, dim;  /* table extents */
    ag_tensor *weight; /* [num, dim] */
} embedding;

static ag_tensor *embedding_forward(ag_module *m, ag_tensor *x) {
    return ag_embedding(x, ((const embedding *)m)->weight);
}

static void embedding_describe(const ag_module *m, char *buf, size_t size) {
    const embedding *e = (const embedding *)m;
    snprintf(buf, size, "Embedding(%lld, %lld)", (long long)e->num, (long long)e->dim);
}

static const ag__module_kind embedding_kind = {"Embedding", embedding_forward, embedding_describe,
                                               NULL};

ag_module *ag_embedding_new(int64_t num_embeddings, int64_t embedding_dim, ag_generator *gen) {
    if (num_embeddings <= 0 || embedding_dim <= 0)
        return ag__module_bad_arg(
            "Embedding: num_embeddings (%lld) and embedding_dim (%lld) must be positive",
            (long long)num_embeddings, (long long)embedding_dim);
    embedding *e = ag__module_alloc(&embedding_kind, sizeof *e);
    if (!e) return NULL;
    e->num = num_embeddings;
    e->dim = embedding_dim;
    ag_scope *scope = ag_scope_begin();
    const int64_t shape[2] = {num_embeddings, embedding_dim};
    e->weight = ag__module_add_parameter(&e->base, "weight",
                                         scope ? ag_randn(gen, AG_F32, 2, shape) : NULL);
    return ag__module_end_init(&e->base, scope, e->weight);
}

/* ---- Flatten ---- */

typedef struct flatten {
    ag_module base;
    int start, end; /* dims flattened, inclusive; negative count from the end */
} flatten;

static ag_tensor *flatten_forward(ag_module *m, ag_tensor *x) {
    const flatten *f = (const flatten *)m;
    return ag_flatten(x, f->start, f->end);
}

static void flatten_describe(const ag_module *m, char *buf, size_t size) {
    const flatten *f = (const flatten *)m;
    snprintf(buf, size, "Flatten(start_dim=%d, end_dim=%d)", f->start, f->end);
}

static const ag__module_kind flatten_kind = {"Flatten", flatten_forward, flatten_describe, NULL};

ag_module *ag_flatten_new(int start_dim, int end_dim) {
    flatten *f = ag__module_alloc(&flatten_kind, sizeof *f);
    if (!f) return NULL;
    f->start = start_dim;
    f->end = end_dim;
    return &f->base;
}

/* ---- Sequential ---- */

static ag_tensor *sequential_forward(ag_module *m, ag_tensor *x) {
    /* An empty Sequential returns x itself, as PyTorch's. */
    for (int i = 0; x && i < m->n_children; i++) x = ag__module_forward_child(m, i, x);
    return x;
}

static const ag__module_kind sequential_kind = {"Sequential", sequential_forward, NULL, NULL};

ag_module *ag_sequential_new(int n, ag_module *const *children) {
    ag_module *m = ag__module_alloc(&sequential_kind, sizeof *m);
    if (!m) return NULL;
    /* All or nothing: on failure the caller still owns every child. */
    if (ag__module_add_children(m, n, children) == AG_OK) return m;
    ag_module_free(m);
    return NULL;
}
