/* Convolution, pooling and normalisation (include/ag/nn.h): conv2d, max_pool2d, avg_pool2d,
 * batch_norm and group_norm, with PyTorch's semantics and error messages.
 *
 * Every function here is a composite of public differentiable ops, with no kernel and no
 * op definition of its own: backward, double backward (to any order) and forward-mode AD
 * come from the ops used, on every backend that runs them.
 *
 * The sliding windows of conv and pooling are an im2col ("unfold") made of one
 * index_select: the input's spatial dims are flattened to one dim of H*W positions (plus
 * one extra position holding the padding value when a window reaches outside the input),
 * and an int64 index of kH*kW*oH*oW positions, built by a host loop on every call, picks
 * each window's elements. The result [N, C, kH*kW, oH*oW] then meets the weight in one
 * batched matmul (conv), or is reduced over its window dim (pooling). index_select's
 * backward is an index_add of the same index (a col2im), whose backward is index_select
 * again. Cost per call: kH*kW*oH*oW int64 built on the host and copied to the device (157
 * KB for a 5x5 kernel over 28x28 outputs), and a column tensor kH*kW times the size of
 * the output per input channel; nothing is cached between calls. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ag/nn.h"
#include "ops_common.h"

/* ---- argument checks ---- */

/* False (with an error naming op, keeping an earlier one) if t is NULL. */
static bool present(const char *op, const ag_tensor *t, const char *role) {
    if (t) return true;
    ag__error_if_none(AG_ERR_INVALID_ARG, "%s: %s is NULL", op, role);
    return false;
}

/* False (with an error) unless t has a floating point dtype. */
static bool floating(const char *op, const ag_tensor *t, const char *role) {
    if (t->dtype != AG_I64) return true;
    char d[192];
    ag__error(AG_ERR_DTYPE, "%s: expected a floating point %s, got %s", op, role,
              ag__describe(t, d, sizeof d));
    return false;
}

/* "[2, 3, 4]" of t into buf. */
static const char *shape_of(const ag_tensor *t, char *buf, size_t size) {
    return ag__shape_fmt(buf, size, t->ndim, t->shape);
}

/* ---- windows over the last two dims ---- */

/* One sliding-window sweep over [N, C, H, W]: the geometry conv2d and the pools share. */
typedef struct window2d {
    int64_t n, c, h, w; /* input extents */
    int64_t kh, kw;     /* kernel */
    int64_t sh, sw;     /* stride */
    int64_t ph, pw;     /* zero (or -inf) padding on each side */
    int64_t dh, dw;     /* dilation */
    int64_t oh, ow;     /* output extents */
} window2d;

/* Output extent of one spatial dim (PyTorch's floor formula, no ceil_mode). */
static int64_t out_extent(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
    return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

/* Fills the output extents of g; false if a padded input dim is smaller than the dilated
 * kernel (no window fits). */
static bool window_fits(window2d *g) {
    const int64_t ekh = g->dh * (g->kh - 1) + 1, ekw = g->dw * (g->kw - 1) + 1;
    if (g->h + 2 * g->ph < ekh || g->w + 2 * g->pw < ekw) return false;
    g->oh = out_extent(g->h, g->kh, g->sh, g->ph, g->dh);
    g->ow = out_extent(g->w, g->kw, g->sw, g->pw, g->dw);
    return true;
}

/* Whether the windows are the input itself (a 1x1 kernel, stride 1, no padding). */
static bool window_is_identity(const window2d *g) {
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
}

/* The int64 index of the unfold on x's device: entry (ki*kW + kj)*oH*oW + oi*oW + oj is the
 * flat input position read by kernel element (ki, kj) of output (oi, oj), or H*W (the
 * appended padding position) outside the input. *padded tells whether any entry is. */
static ag_tensor *unfold_index(const window2d *g, ag_device device, bool *padded) {
    const int64_t l = g->oh * g->ow, len = g->kh * g->kw * l, pad_at = g->h * g->w;
    int64_t *ix = ag__malloc((size_t)(len ? len : 1) * sizeof *ix);
    if (!ix) {
        ag__error(AG_ERR_OUT_OF_MEMORY, "unfold: out of host memory for a %lld-entry index",
                  (long long)len);
        return NULL;
    }
    bool outside = false;
    int64_t *p = ix;
    for (int64_t ki = 0; ki < g->kh; ki++)
        for (int64_t kj = 0; kj < g->kw; kj++)
            for (int64_t oi = 0; oi < g->oh; oi++) {
                const int64_t y = oi * g->sh - g->ph + ki * g->dh;
                for (int64_t oj = 0; oj < g->ow; oj++) {
                    const int64_t x = oj * g->sw - g->pw + kj * g->dw;
                    const bool in = y >= 0 && y < g->h && x >= 0 && x < g->w;
                    outside |= !in;
                    *p++ = in ? y * g->w + x : pad_at;
                }
            }
    ag_tensor *t = ag__from_host(AG_I64, 1, &len, ix, device);
    free(ix);
    *padded = outside;
    return t;
}

/* Whether the windows tile the input without overlap or padding (stride = kernel, as the
 * usual 2x2 pooling): then they are a permutation of the input, no index needed. */
static bool windows_tile(const window2d *g) {
    return g->sh == g->kh && g->sw == g->kw && g->ph == 0 && g->pw == 0 && g->dh == 1 && g->dw == 1;
}

/* x [N, C, H, W] unfolded into windows [N, C, kH*kW, oH*oW]; positions outside the input
 * read `fill` (0 for conv and avg_pool, -inf for max_pool). */
static ag_tensor *unfold(ag_tensor *x, const window2d *g, double fill) {
    const int64_t k = g->kh * g->kw, l = g->oh * g->ow;
    const int64_t cols_shape[4] = {g->n, g->c, k, l};
    if (window_is_identity(g)) return ag_reshape(x, 4, cols_shape);
    if (windows_tile(g)) {
        /* [N, C, oH, kH, oW, kW] (rows and columns past the last window dropped) permuted to
         * [N, C, kH, kW, oH, oW]: a copy whose backward is a copy too, both parallel, where
         * index_select's backward (index_add) runs serially. */
        ag_tensor *t = x;
        if (g->h != g->oh * g->kh) t = ag_slice(t, 2, 0, g->oh * g->kh, 1);
        if (g->w != g->ow * g->kw) t = ag_slice(t, 3, 0, g->ow * g->kw, 1);
        t = ag_reshape(t, 6, (int64_t[]){g->n, g->c, g->oh, g->kh, g->ow, g->kw});
        return ag_reshape(ag_permute(t, (const int[]){0, 1, 3, 5, 2, 4}), 4, cols_shape);
    }
    bool padded = false;
    ag_tensor *index = unfold_index(g, ag_device_of(x), &padded);
    if (!index) return NULL;
    ag_tensor *flat = ag_reshape(x, 3, (int64_t[]){g->n, g->c, g->h * g->w});
    if (padded) {
        /* One extra position per (n, c) plane holds the padding value; a broadcast scalar,
         * so it costs one element however large the batch. */
        const int64_t pad_shape[3] = {g->n, g->c, 1};
        ag_tensor *parts[2] = {flat, ag_expand(ag__scalar_like(x, fill), 3, pad_shape)};
        flat = ag_cat(2, parts, 2);
    }
    return ag_reshape(ag_index_select(flat, 2, index), 4, cols_shape);
}

/* Reads a pair argument: NULL gives dflt for both. */
static void pair(const int64_t *v, int64_t dflt, int64_t *a, int64_t *b) {
    *a = v ? v[0] : dflt;
    *b = v ? v[1] : dflt;
}

/* Checks that x is a 3-d (unbatched) or 4-d (batched) input; *x4 becomes the 4-d form. */
static bool spatial_input(const char *op, ag_tensor *x, ag_tensor **x4) {
    if (x->ndim == 3 || x->ndim == 4) {
        *x4 = x->ndim == 4 ? x : ag_unsqueeze(x, 0);
        return *x4 != NULL;
    }
    char s[160];
    ag__error(AG_ERR_SHAPE,
              "%s: Expected 3D (unbatched) or 4D (batched) input to %s, but got input of size: %s",
              op, op, shape_of(x, s, sizeof s));
    return false;
}

/* The result r [N, C', oH, oW] of a 4-d run, back in the caller's form (3-d if x was). */
static ag_tensor *unbatch_like(const ag_tensor *x, ag_tensor *r) {
    return x->ndim == 3 ? ag_squeeze(r, 0) : r;
}

/* ---- conv2d ---- */

/* Checks conv2d's weight, bias, groups and hyperparameters against x4 [N, C, H, W]. */
static bool conv_args_fit(const ag_tensor *x4, const ag_tensor *weight, const ag_tensor *bias,
                          const window2d *g, int64_t groups) {
    char sx[160], sw[160], sb[160];
    shape_of(x4, sx, sizeof sx);
    shape_of(weight, sw, sizeof sw);
    if (g->sh <= 0 || g->sw <= 0)
        return ag__error(AG_ERR_INVALID_ARG, "conv2d: non-positive stride is not supported"), false;
    if (g->ph < 0 || g->pw < 0)
        return ag__error(AG_ERR_INVALID_ARG, "conv2d: negative padding is not supported"), false;
    if (g->dh <= 0 || g->dw <= 0)
        return ag__error(AG_ERR_INVALID_ARG, "conv2d: dilation should be greater than zero"), false;
    if (groups <= 0)
        return ag__error(AG_ERR_INVALID_ARG,
                         "conv2d: non-positive groups is not supported (groups=%lld)",
                         (long long)groups),
               false;
    if (weight->ndim != 4)
        return ag__error(AG_ERR_SHAPE,
                         "conv2d: Expected 4-dimensional weight [out_channels, "
                         "in_channels/groups, kH, kW] for input %s, but got %d-dimensional "
                         "weight of size %s instead",
                         sx, weight->ndim, sw),
               false;
    if (weight->shape[0] % groups != 0 || weight->shape[0] == 0)
        return ag__error(AG_ERR_SHAPE,
                         "conv2d: Given groups=%lld, expected weight to be divisible by %lld at "
                         "dimension 0 (out_channels), but got weight of size %s instead",
                         (long long)groups, (long long)groups, sw),
               false;
    if (x4->shape[1] != weight->shape[1] * groups)
        return ag__error(AG_ERR_SHAPE,
                         "conv2d: Given groups=%lld, weight of size %s, expected input%s to have "
                         "%lld channels, but got %lld channels instead",
                         (long long)groups, sw, sx, (long long)(weight->shape[1] * groups),
                         (long long)x4->shape[1]),
               false;
    if (bias && (bias->ndim != 1 || bias->shape[0] != weight->shape[0]))
        return ag__error(AG_ERR_SHAPE,
                         "conv2d: Given weight of size %s, expected bias to be 1-dimensional "
                         "with %lld elements, but got bias of size %s instead",
                         sw, (long long)weight->shape[0], shape_of(bias, sb, sizeof sb)),
               false;
    return true;
}

static ag_tensor *conv2d(ag_tensor *x, ag_tensor *weight, ag_tensor *bias, const int64_t *stride,
                         const int64_t *padding, const int64_t *dilation, int64_t groups) {
    if (!present("conv2d", x, "input") || !present("conv2d", weight, "weight") ||
        !floating("conv2d", x, "input") || !floating("conv2d", weight, "weight") ||
        (bias && !floating("conv2d", bias, "bias")))
        return NULL;
    ag_scope *scope = ag_scope_begin();
    ag_tensor *x4 = NULL, *r = NULL;
    window2d g = {0};
    pair(stride, 1, &g.sh, &g.sw);
    pair(padding, 0, &g.ph, &g.pw);
    pair(dilation, 1, &g.dh, &g.dw);
    if (spatial_input("conv2d", x, &x4) && conv_args_fit(x4, weight, bias, &g, groups)) {
        g.n = x4->shape[0];
        g.c = x4->shape[1];
        g.h = x4->shape[2];
        g.w = x4->shape[3];
        g.kh = weight->shape[2];
        g.kw = weight->shape[3];
        if (!window_fits(&g)) {
            ag__error(AG_ERR_SHAPE,
                      "conv2d: Calculated padded input size per channel: (%lld x %lld). Kernel "
                      "size: (%lld x %lld). Kernel size can't be greater than actual input size",
                      (long long)(g.h + 2 * g.ph), (long long)(g.w + 2 * g.pw),
                      (long long)(g.dh * (g.kh - 1) + 1), (long long)(g.dw * (g.kw - 1) + 1));
        } else {
            const int64_t out = weight->shape[0], cg = g.c / groups, k = g.kh * g.kw;
            /* Grouped im2col GEMM: weight [G, O/G, C/G*k] @ cols [N, G, C/G*k, L], the weight
             * broadcast over the batch. */
            ag_tensor *cols =
                ag_reshape(unfold(x4, &g, 0.0), 4, (int64_t[]){g.n, groups, cg * k, g.oh * g.ow});
            ag_tensor *w = ag_reshape(weight, 3, (int64_t[]){groups, out / groups, cg * k});
            r = ag_reshape(ag_matmul(w, cols), 4, (int64_t[]){g.n, out, g.oh, g.ow});
            if (bias) r = ag_add(r, ag_reshape(bias, 3, (int64_t[]){out, 1, 1}));
            r = unbatch_like(x, r);
        }
    }
    return ag_scope_return(scope, r);
}

ag_tensor *ag_conv2d(ag_tensor *x, ag_tensor *weight, ag_tensor *bias, const int64_t *stride,
                     const int64_t *padding, const int64_t *dilation, int64_t groups) {
    ag__context_enter("conv2d", 3, (ag_tensor *[]){x, weight, bias});
    ag_tensor *r = conv2d(x, weight, bias, stride, padding, dilation, groups);
    ag__context_exit();
    return r;
}

/* ---- max_pool2d / avg_pool2d ---- */

/* Shared checks and geometry of the pools; *x4 is x in 4-d form. */
static bool pool_setup(const char *op, ag_tensor *x, const int64_t *kernel, const int64_t *stride,
                       const int64_t *padding, ag_tensor **x4, window2d *g) {
    if (!present(op, x, "input") || !floating(op, x, "input")) return false;
    if (!kernel) return ag__error(AG_ERR_INVALID_ARG, "%s: kernel_size is NULL", op), false;
    *g = (window2d){.kh = kernel[0], .kw = kernel[1], .dh = 1, .dw = 1};
    /* A NULL stride, or zeros, is PyTorch's stride=None: the kernel size. */
    pair(stride, 0, &g->sh, &g->sw);
    if (g->sh == 0 && g->sw == 0) {
        g->sh = g->kh;
        g->sw = g->kw;
    }
    pair(padding, 0, &g->ph, &g->pw);
    if (g->kh <= 0 || g->kw <= 0)
        return ag__error(AG_ERR_INVALID_ARG, "%s: kernel_size must be greater than zero", op),
               false;
    if (g->sh <= 0 || g->sw <= 0)
        return ag__error(AG_ERR_INVALID_ARG, "%s: stride should be greater than zero", op), false;
    if (g->ph < 0 || g->pw < 0 || g->ph > g->kh / 2 || g->pw > g->kw / 2)
        return ag__error(AG_ERR_INVALID_ARG,
                         "%s: pad should be at most half of kernel size (and not negative), but "
                         "got pad=(%lld, %lld) and kernel_size=(%lld, %lld)",
                         op, (long long)g->ph, (long long)g->pw, (long long)g->kh,
                         (long long)g->kw),
               false;
    if (!spatial_input(op, x, x4)) return false;
    g->n = (*x4)->shape[0];
    g->c = (*x4)->shape[1];
    g->h = (*x4)->shape[2];
    g->w = (*x4)->shape[3];
    if (!window_fits(g) || g->oh < 1 || g->ow < 1)
        return ag__error(AG_ERR_SHAPE,
                         "%s: Given input size: (%lldx%lldx%lld). Calculated output size: "
                         "(%lldx%lldx%lld). Output size is too small",
                         op, (long long)g->c, (long long)g->h, (long long)g->w, (long long)g->c,
                         (long long)out_extent(g->h, g->kh, g->sh, g->ph, 1),
                         (long long)out_extent(g->w, g->kw, g->sw, g->pw, 1)),
               false;
    return true;
}

static ag_tensor *max_pool2d(ag_tensor *x, const int64_t *kernel, const int64_t *stride,
                             const int64_t *padding) {
    ag_scope *scope = ag_scope_begin();
    ag_tensor *x4 = NULL, *r = NULL;
    window2d g;
    if (pool_setup("max_pool2d", x, kernel, stride, padding, &x4, &g)) {
        /* The first maximum of each window (in row-major window order) takes the whole
         * gradient, as PyTorch's max_pool2d: argmax, then a gather of that element. ag_max
         * would split the gradient between tied elements instead. */
        ag_tensor *cols = unfold(x4, &g, -INFINITY);
        ag_tensor *at = ag_argmax(cols, 2, true, false);
        r = ag_reshape(ag_gather(cols, 2, at), 4, (int64_t[]){g.n, g.c, g.oh, g.ow});
        r = unbatch_like(x, r);
    }
    return ag_scope_return(scope, r);
}

ag_tensor *ag_max_pool2d(ag_tensor *x, const int64_t *kernel, const int64_t *stride,
                         const int64_t *padding) {
    ag__context_enter("max_pool2d", 1, &x);
    ag_tensor *r = max_pool2d(x, kernel, stride, padding);
    ag__context_exit();
    return r;
}

static ag_tensor *avg_pool2d(ag_tensor *x, const int64_t *kernel, const int64_t *stride,
                             const int64_t *padding) {
    ag_scope *scope = ag_scope_begin();
    ag_tensor *x4 = NULL, *r = NULL;
    window2d g;
    if (pool_setup("avg_pool2d", x, kernel, stride, padding, &x4, &g)) {
        /* count_include_pad: the zeros of the padding count in every window's mean. */
        int window_dim = 2;
        ag_tensor *mean = ag_mean(unfold(x4, &g, 0.0), 1, &window_dim, false);
        r = unbatch_like(x, ag_reshape(mean, 4, (int64_t[]){g.n, g.c, g.oh, g.ow}));
    }
    return ag_scope_return(scope, r);
}

ag_tensor *ag_avg_pool2d(ag_tensor *x, const int64_t *kernel, const int64_t *stride,
                         const int64_t *padding) {
    ag__context_enter("avg_pool2d", 1, &x);
    ag_tensor *r = avg_pool2d(x, kernel, stride, padding);
    ag__context_exit();
    return r;
}

/* ---- batch_norm / group_norm ---- */

/* [1, C, 1, ...] for an ndim-dim input with C channels: per-channel tensors broadcast. */
static ag_tensor *per_channel(ag_tensor *t, int ndim) {
    int64_t shape[AG_MAX_DIMS];
    for (int d = 0; d < ndim; d++) shape[d] = 1;
    shape[1] = -1;
    return ag_reshape(t, ndim, shape);
}

/* Checks an optional per-channel tensor of batch_norm / group_norm: C elements. */
static bool channels_fit(const char *op, const ag_tensor *t, int64_t c, const char *role) {
    if (!t || (t->ndim == 1 && t->shape[0] == c)) return true;
    char s[160];
    ag__error(AG_ERR_SHAPE, "%s: %s should contain %lld elements not %s (a [%lld] tensor)", op,
              role, (long long)c, shape_of(t, s, sizeof s), (long long)c);
    return false;
}

/* y * weight + bias per channel (either may be NULL). */
static ag_tensor *affine(ag_tensor *y, ag_tensor *weight, ag_tensor *bias) {
    if (!y) return NULL;
    const int ndim = y->ndim;
    if (weight) y = ag_mul(y, per_channel(weight, ndim));
    if (bias) y = ag_add(y, per_channel(bias, ndim));
    return y;
}

/* running = (1 - momentum) * running + momentum * batch for the mean and the variance, in
 * place and outside the graph (detached, so that no forward-mode tangent reaches the running
 * statistics either). Both new terms are made before either statistic changes, so that a
 * failed allocation leaves them as they were. Returns false (error set) on failure. */
static bool update_running(ag_tensor *const running[2], ag_tensor *const batch[2],
                           double momentum) {
    ag_tensor *scaled[2];
    for (int i = 0; i < 2; i++) {
        ag_tensor *b = ag_to_dtype(ag_detach(batch[i]), ag_dtype_of(running[i]));
        if (!(scaled[i] = ag_mul_scalar(b, momentum))) return false;
    }
    for (int i = 0; i < 2; i++)
        if (!ag_mul_scalar_(running[i], 1 - momentum) || !ag_add_(running[i], scaled[i]))
            return false;
    return true;
}

static ag_tensor *batch_norm(ag_tensor *x, ag_tensor *running_mean, ag_tensor *running_var,
                             ag_tensor *weight, ag_tensor *bias, bool training, double momentum,
                             double eps) {
    const char *op = "batch_norm";
    if (!present(op, x, "input") || !floating(op, x, "input")) return NULL;
    char s[160];
    if (x->ndim < 2) {
        ag__error(AG_ERR_SHAPE, "%s: expected an input [N, C, ...] of at least 2 dims, got %s", op,
                  shape_of(x, s, sizeof s));
        return NULL;
    }
    const int64_t c = x->shape[1];
    if (!channels_fit(op, running_mean, c, "running_mean") ||
        !channels_fit(op, running_var, c, "running_var") ||
        !channels_fit(op, weight, c, "weight") || !channels_fit(op, bias, c, "bias"))
        return NULL;
    if (!running_mean != !running_var) {
        ag__error(AG_ERR_INVALID_ARG,
                  "%s: running_mean and running_var must both be given or both be NULL", op);
        return NULL;
    }
    /* Without running statistics the batch's are used in eval mode too, as PyTorch. */
    const bool batch_stats = training || !running_mean;
    const int64_t per_channel_count = x->numel / (c ? c : 1);
    if (training && per_channel_count <= 1) {
        ag__error(AG_ERR_SHAPE,
                  "%s: Expected more than 1 value per channel when training, got input size %s", op,
                  shape_of(x, s, sizeof s));
        return NULL;
    }
    ag_scope *scope = ag_scope_begin();
    ag_tensor *mean, *var;
    if (batch_stats) {
        int dims[AG_MAX_DIMS], n = 0;
        for (int d = 0; d < x->ndim; d++)
            if (d != 1) dims[n++] = d;
        mean = ag_mean(x, n, dims, true);
        var = ag_var(x, n, dims, 0, true); /* biased, for normalising */
        if (training && running_mean) {
            bool prev = ag_set_grad_enabled(false);
            /* running_var tracks the unbiased variance, as PyTorch. */
            const double unbias = (double)per_channel_count / (double)(per_channel_count - 1);
            ag_tensor *running[2] = {running_mean, running_var};
            ag_tensor *batch[2] = {ag_reshape(mean, 1, &c),
                                   ag_mul_scalar(ag_reshape(var, 1, &c), unbias)};
            bool updated = update_running(running, batch, momentum);
            ag_set_grad_enabled(prev);
            if (!updated) {
                ag_scope_end(scope);
                return NULL;
            }
        }
    } else {
        mean = per_channel(ag_to_dtype(running_mean, x->dtype), x->ndim);
        var = per_channel(ag_to_dtype(running_var, x->dtype), x->ndim);
    }
    ag_tensor *y = ag_mul(ag_sub(x, mean), ag_rsqrt(ag_add_scalar(var, eps)));
    return ag_scope_return(scope, affine(y, weight, bias));
}

ag_tensor *ag_batch_norm(ag_tensor *x, ag_tensor *running_mean, ag_tensor *running_var,
                         ag_tensor *weight, ag_tensor *bias, bool training, double momentum,
                         double eps) {
    ag__context_enter("batch_norm", 5, (ag_tensor *[]){x, running_mean, running_var, weight, bias});
    ag_tensor *r = batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps);
    ag__context_exit();
    return r;
}

static ag_tensor *group_norm(ag_tensor *x, int64_t groups, ag_tensor *weight, ag_tensor *bias,
                             double eps) {
    const char *op = "group_norm";
    if (!present(op, x, "input") || !floating(op, x, "input")) return NULL;
    char s[160];
    if (x->ndim < 2 || groups <= 0 || x->shape[1] % groups != 0) {
        ag__error(AG_ERR_SHAPE,
                  "%s: Expected number of channels in input to be divisible by num_groups, but "
                  "got input of shape %s and num_groups=%lld",
                  op, shape_of(x, s, sizeof s), (long long)groups);
        return NULL;
    }
    const int64_t c = x->shape[1];
    if (!channels_fit(op, weight, c, "weight") || !channels_fit(op, bias, c, "bias")) return NULL;
    ag_scope *scope = ag_scope_begin();
    /* Each (sample, group) normalised over its channels and positions, biased variance. */
    int last = 2;
    ag_tensor *grouped = ag_reshape(x, 3, (int64_t[]){x->shape[0], groups, -1});
    ag_tensor *centred = ag_sub(grouped, ag_mean(grouped, 1, &last, true));
    ag_tensor *rstd = ag_rsqrt(ag_add_scalar(ag_var(grouped, 1, &last, 0, true), eps));
    ag_tensor *y = ag_reshape(ag_mul(centred, rstd), x->ndim, x->shape);
    return ag_scope_return(scope, affine(y, weight, bias));
}

ag_tensor *ag_group_norm(ag_tensor *x, int64_t groups, ag_tensor *weight, ag_tensor *bias,
                         double eps) {
    ag__context_enter("group_norm", 3, (ag_tensor *[]){x, weight, bias});
    ag_tensor *r = group_norm(x, groups, weight, bias, eps);
    ag__context_exit();
    return r;
}
