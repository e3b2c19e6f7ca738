/* Module kinds of the convolutional layer set: Conv2d, MaxPool2d, AvgPool2d, BatchNorm2d,
 * GroupNorm and Unflatten. Forwards call the functional ops of ops/conv.c; BatchNorm2d keeps
 * its running statistics as module buffers (saved in checkpoints, never trained). */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "module_internal.h"

/* Copies a pair argument (NULL: dflt twice) into out. */
static void copy_pair(int64_t *out, const int64_t *v, int64_t dflt) {
    out[0] = v ? v[0] : dflt;
    out[1] = v ? v[1] : dflt;
}

/* ---- Conv2d ---- */

typedef struct conv2d {
    ag_module base;
    int64_t in, out, groups;
    int64_t kernel[2], stride[2], padding[2], dilation[2];
    ag_tensor *weight; /* [out, in/groups, kH, kW], borrowed from base */
    ag_tensor *bias;   /* [out] or NULL */
} conv2d;

static ag_tensor *conv2d_forward(ag_module *m, ag_tensor *x) {
    const conv2d *c = (const conv2d *)m;
    return ag_conv2d(x, c->weight, c->bias, c->stride, c->padding, c->dilation, c->groups);
}

static void conv2d_describe(const ag_module *m, char *buf, size_t size) {
    const conv2d *c = (const conv2d *)m;
    snprintf(buf, size,
             "Conv2d(%lld, %lld, kernel_size=(%lld, %lld), stride=(%lld, %lld), padding=(%lld, "
             "%lld), dilation=(%lld, %lld), groups=%lld%s)",
             (long long)c->in, (long long)c->out, (long long)c->kernel[0], (long long)c->kernel[1],
             (long long)c->stride[0], (long long)c->stride[1], (long long)c->padding[0],
             (long long)c->padding[1], (long long)c->dilation[0], (long long)c->dilation[1],
             (long long)c->groups, c->bias ? "" : ", bias=false");
}

static const ag__module_kind conv2d_kind = {"Conv2d", conv2d_forward, conv2d_describe, NULL};

ag_module *ag_conv2d_new(int64_t in_channels, int64_t out_channels, const int64_t *kernel,
                         const int64_t *stride, const int64_t *padding, const int64_t *dilation,
                         int64_t groups, bool bias, ag_generator *gen) {
    if (in_channels <= 0 || out_channels <= 0 || groups <= 0 || !kernel)
        return ag__module_bad_arg(
            "Conv2d: in_channels (%lld), out_channels (%lld) and groups (%lld) must "
            "be positive and kernel_size given",
            (long long)in_channels, (long long)out_channels, (long long)groups);
    if (in_channels % groups || out_channels % groups)
        return ag__module_bad_arg(
            "Conv2d: in_channels (%lld) and out_channels (%lld) must be divisible by "
            "groups (%lld)",
            (long long)in_channels, (long long)out_channels, (long long)groups);
    if (kernel[0] <= 0 || kernel[1] <= 0)
        return ag__module_bad_arg("Conv2d: kernel_size (%lld, %lld) must be positive",
                                  (long long)kernel[0], (long long)kernel[1]);
    conv2d *c = ag__module_alloc(&conv2d_kind, sizeof *c);
    if (!c) return NULL;
    c->in = in_channels;
    c->out = out_channels;
    c->groups = groups;
    copy_pair(c->kernel, kernel, 1);
    copy_pair(c->stride, stride, 1);
    copy_pair(c->padding, padding, 0);
    copy_pair(c->dilation, dilation, 1);
    /* kaiming_uniform(a=sqrt(5)) bounds the weight by 1/sqrt(fan_in), fan_in = in/groups *
     * kH * kW, and PyTorch draws the bias from the same bound. */
    const int64_t fan_in = in_channels / groups * kernel[0] * kernel[1];
    const double bound = 1.0 / sqrt((double)fan_in);
    ag_scope *scope = ag_scope_begin();
    const int64_t wshape[4] = {out_channels, in_channels / groups, kernel[0], kernel[1]};
    c->weight = ag__module_add_parameter(
        &c->base, "weight", scope ? ag_uniform(gen, AG_F32, 4, wshape, -bound, bound) : NULL);
    if (bias && c->weight)
        c->bias = ag__module_add_parameter(
            &c->base, "bias", ag_uniform(gen, AG_F32, 1, &out_channels, -bound, bound));
    return ag__module_end_init(&c->base, scope, c->weight && (!bias || c->bias));
}

/* ---- MaxPool2d, AvgPool2d ---- */

typedef struct pool2d {
    ag_module base;
    int64_t kernel[2], stride[2], padding[2];
} pool2d;

static ag_tensor *max_pool2d_forward(ag_module *m, ag_tensor *x) {
    const pool2d *p = (const pool2d *)m;
    return ag_max_pool2d(x, p->kernel, p->stride, p->padding);
}

static ag_tensor *avg_pool2d_forward(ag_module *m, ag_tensor *x) {
    const pool2d *p = (const pool2d *)m;
    return ag_avg_pool2d(x, p->kernel, p->stride, p->padding);
}

static void pool2d_describe(const ag_module *m, char *buf, size_t size) {
    const pool2d *p = (const pool2d *)m;
    snprintf(buf, size, "%s(kernel_size=(%lld, %lld), stride=(%lld, %lld), padding=(%lld, %lld))",
             m->kind->name, (long long)p->kernel[0], (long long)p->kernel[1],
             (long long)p->stride[0], (long long)p->stride[1], (long long)p->padding[0],
             (long long)p->padding[1]);
}

static const ag__module_kind max_pool2d_kind = {"MaxPool2d", max_pool2d_forward, pool2d_describe,
                                                NULL};
static const ag__module_kind avg_pool2d_kind = {"AvgPool2d", avg_pool2d_forward, pool2d_describe,
                                                NULL};

/* A pool module; stride NULL or {0, 0} is the kernel size. Arguments are checked by the
 * functional op on the first forward, where the input is known. */
static ag_module *pool2d_new(const ag__module_kind *kind, const int64_t *kernel,
                             const int64_t *stride, const int64_t *padding) {
    if (!kernel) return ag__module_bad_arg("%s: kernel_size is NULL", kind->name);
    pool2d *p = ag__module_alloc(kind, sizeof *p);
    if (!p) return NULL;
    copy_pair(p->kernel, kernel, 1);
    copy_pair(p->stride, stride, 0);
    if (p->stride[0] == 0 && p->stride[1] == 0) copy_pair(p->stride, kernel, 1);
    copy_pair(p->padding, padding, 0);
    return &p->base;
}

ag_module *ag_max_pool2d_new(const int64_t *kernel, const int64_t *stride, const int64_t *padding) {
    return pool2d_new(&max_pool2d_kind, kernel, stride, padding);
}

ag_module *ag_avg_pool2d_new(const int64_t *kernel, const int64_t *stride, const int64_t *padding) {
    return pool2d_new(&avg_pool2d_kind, kernel, stride, padding);
}

/* ---- BatchNorm2d ---- */

typedef struct batch_norm2d {
    ag_module base;
    int64_t features;
    double eps, momentum;
    ag_tensor *weight, *bias;       /* [C] or NULL without affine */
    ag_tensor *running_mean;        /* [C] buffer, zeros at first */
    ag_tensor *running_var;         /* [C] buffer, ones at first */
    ag_tensor *num_batches_tracked; /* int64 0-dim buffer: training forwards so far */
} batch_norm2d;

static ag_tensor *batch_norm2d_forward(ag_module *m, ag_tensor *x) {
    batch_norm2d *b = (batch_norm2d *)m;
    if (ag_ndim(x) != 4) {
        ag__error(AG_ERR_SHAPE, "BatchNorm2d: expected 4D input (got %dD input)", ag_ndim(x));
        return NULL;
    }
    /* A scope, so that y can be dropped if counting the batch fails. */
    ag_scope *scope = ag_scope_begin();
    ag_tensor *y = ag_batch_norm(x, b->running_mean, b->running_var, b->weight, b->bias,
                                 m->training, b->momentum, b->eps);
    if (y && m->training) {
        bool prev = ag_set_grad_enabled(false);
        if (!ag_add_scalar_(b->num_batches_tracked, 1)) y = NULL;
        ag_set_grad_enabled(prev);
    }
    return ag_scope_return(scope, y);
}

static void batch_norm2d_describe(const ag_module *m, char *buf, size_t size) {
    const batch_norm2d *b = (const batch_norm2d *)m;
    snprintf(buf, size, "BatchNorm2d(%lld, eps=%g, momentum=%g%s)", (long long)b->features, b->eps,
             b->momentum, b->weight ? "" : ", affine=false");
}

static const ag__module_kind batch_norm2d_kind = {"BatchNorm2d", batch_norm2d_forward,
                                                  batch_norm2d_describe, NULL};

ag_module *ag_batch_norm2d_new(int64_t num_features, double eps, double momentum, bool affine) {
    if (num_features <= 0 || !(eps >= 0) || isinf(eps) || !(momentum >= 0 && momentum <= 1))
        return ag__module_bad_arg(
            "BatchNorm2d: num_features (%lld) must be positive, eps (%g) finite and "
            ">= 0, momentum (%g) in [0, 1]",
            (long long)num_features, eps, momentum);
    batch_norm2d *b = ag__module_alloc(&batch_norm2d_kind, sizeof *b);
    if (!b) return NULL;
    b->features = num_features;
    b->eps = eps;
    b->momentum = momentum;
    ag_scope *scope = ag_scope_begin();
    const int64_t *c = &num_features;
    bool ok = scope != NULL;
    if (ok && affine) {
        b->weight = ag__module_add_parameter(&b->base, "weight", ag_ones(AG_F32, 1, c));
        b->bias =
            b->weight ? ag__module_add_parameter(&b->base, "bias", ag_zeros(AG_F32, 1, c)) : NULL;
        ok = b->bias != NULL;
    }
    /* PyTorch's buffer order and names, so state dicts line up. */
    if (ok)
        b->running_mean = ag__module_add_buffer(&b->base, "running_mean", ag_zeros(AG_F32, 1, c));
    if (b->running_mean)
        b->running_var = ag__module_add_buffer(&b->base, "running_var", ag_ones(AG_F32, 1, c));
    if (b->running_var)
        b->num_batches_tracked =
            ag__module_add_buffer(&b->base, "num_batches_tracked", ag_zeros(AG_I64, 0, NULL));
    return ag__module_end_init(&b->base, scope, b->num_batches_tracked != NULL);
}

/* ---- GroupNorm ---- */

typedef struct group_norm {
    ag_module base;
    int64_t groups, channels;
    double eps;
    ag_tensor *weight, *bias; /* [C] or NULL without affine */
} group_norm;

static ag_tensor *group_norm_forward(ag_module *m, ag_tensor *x) {
    const group_norm *g = (const group_norm *)m;
    return ag_group_norm(x, g->groups, g->weight, g->bias, g->eps);
}

static void group_norm_describe(const ag_module *m, char *buf, size_t size) {
    const group_norm *g = (const group_norm *)m;
    snprintf(buf, size, "GroupNorm(%lld, %lld, eps=%g%s)", (long long)g->groups,
             (long long)g->channels, g->eps, g->weight ? "" : ", affine=false");
}

static const ag__module_kind group_norm_kind = {"GroupNorm", group_norm_forward,
                                                group_norm_describe, NULL};

ag_module *ag_group_norm_new(int64_t num_groups, int64_t num_channels, double eps, bool affine) {
    if (num_groups <= 0 || num_channels <= 0 || num_channels % num_groups)
        return ag__module_bad_arg(
            "GroupNorm: num_channels (%lld) must be divisible by num_groups (%lld), "
            "both positive",
            (long long)num_channels, (long long)num_groups);
    if (!(eps >= 0) || isinf(eps))
        return ag__module_bad_arg("GroupNorm: eps (%g) must be finite and >= 0", eps);
    group_norm *g = ag__module_alloc(&group_norm_kind, sizeof *g);
    if (!g) return NULL;
    g->groups = num_groups;
    g->channels = num_channels;
    g->eps = eps;
    if (!affine) return &g->base;
    ag_scope *scope = ag_scope_begin();
    const int64_t *c = &num_channels;
    g->weight = ag__module_add_parameter(&g->base, "weight", scope ? ag_ones(AG_F32, 1, c) : NULL);
    if (g->weight) g->bias = ag__module_add_parameter(&g->base, "bias", ag_zeros(AG_F32, 1, c));
    return ag__module_end_init(&g->base, scope, g->bias != NULL);
}

/* ---- Unflatten ---- */

typedef struct unflatten {
    ag_module base;
    int dim;                    /* the dim replaced; negative counts from the end */
    int n;                      /* entries of sizes */
    int64_t sizes[AG_MAX_DIMS]; /* extents replacing it; one may be -1 */
} unflatten;

static ag_tensor *unflatten_forward(ag_module *m, ag_tensor *x) {
    const unflatten *u = (const unflatten *)m;
    const int nd = ag_ndim(x);
    int d = u->dim < 0 ? u->dim + nd : u->dim;
    if (d < 0 || d >= nd || nd - 1 + u->n > AG_MAX_DIMS) {
        ag__error(AG_ERR_SHAPE, "Unflatten: dim %d is out of range for a %d-dim input", u->dim, nd);
        return NULL;
    }
    const int64_t *s = ag_shape(x);
    int64_t shape[AG_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < d; i++) shape[k++] = s[i];
    for (int i = 0; i < u->n; i++) shape[k++] = u->sizes[i];
    for (int i = d + 1; i < nd; i++) shape[k++] = s[i];
    return ag_reshape(x, k, shape);
}

static void unflatten_describe(const ag_module *m, char *buf, size_t size) {
    const unflatten *u = (const unflatten *)m;
    int at = snprintf(buf, size, "Unflatten(dim=%d, unflattened_size=(", u->dim);
    for (int i = 0; i < u->n && at >= 0 && (size_t)at < size; i++)
        at +=
            snprintf(buf + at, size - (size_t)at, "%s%lld", i ? ", " : "", (long long)u->sizes[i]);
    if (at >= 0 && (size_t)at < size) snprintf(buf + at, size - (size_t)at, "))");
}

static const ag__module_kind unflatten_kind = {"Unflatten", unflatten_forward, unflatten_describe,
                                               NULL};

ag_module *ag_unflatten_new(int dim, int n, const int64_t *sizes) {
    if (n < 1 || n > AG_MAX_DIMS || !sizes)
        return ag__module_bad_arg("Unflatten: expected 1 to %d sizes, got %d%s", AG_MAX_DIMS, n,
                                  sizes ? "" : " (NULL)");
    unflatten *u = ag__module_alloc(&unflatten_kind, sizeof *u);
    if (!u) return NULL;
    u->dim = dim;
    u->n = n;
    memcpy(u->sizes, sizes, (size_t)n * sizeof *sizes);
    return &u->base;
}
