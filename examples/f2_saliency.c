/* Seed §F-2: input gradients. A saliency map of a Fashion-MNIST classifier: the conv
 * model (--model cnn, the default: ag_train_model_new's LeNet-5 with batch norm) or §P's
 * MLP (--model mlp).
 *
 *   x      one test image [1, 784], a leaf requiring grad
 *   c      the predicted class: argmax of model(x), the model in eval mode
 *   s      d logit_c / dx = ag_grad(model(x)[0, c], x): how much each pixel moves the
 *          score of the class the model picked; |s| is the saliency
 *
 * The model is trained here with the library's training functions (as ex_p_train and
 * `ag train --model cnn` do), or loaded (--load) from a checkpoint that `ag train --save`
 * wrote for the same --model. The picture, written with ag_png_save, is the image (gray)
 * beside |s| normalised to 0..255 (black, red, yellow, white), each pixel drawn as a
 * SCALE x SCALE block.
 *
 * The gradient is checked against central finite differences of the logit on the pixels
 * with the largest saliency. In float32 that check is weak: the logit carries rounding
 * errors of ~1e-6, which a step small enough for the truncation error (~1e-3) turns into
 * errors of ~1e-3 in the difference quotient, about 1% of gradients of ~0.1. So the check
 * evaluates the same network in float64: the trained parameters and buffers converted
 * (exactly), the layers applied in eval mode with the functional ops (one forward function
 * per model kind), where central differences are accurate to ~1e-9. Its logits must equal
 * the float32 model's up to float32 rounding (the copy is the model), its gradient
 * (ag_grad again, on the float64 graph) must match the differences to 1e-6, and the
 * float32 saliency must match them to float32 accuracy.
 *
 * usage: ex_f2_saliency [--model mlp|cnn] [--epochs N] [--limit N] [--data DIR]
 *                       [--load FILE] [--image I] [--out FILE]
 * Fails unless the model beats chance, the gradient is finite, non-zero and of the image's
 * shape, it matches the finite differences, and the PNG file is written. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ag/io.h"
#include "ag/train.h"

/* Pixels compared with finite differences: those with the largest |saliency|. */
enum { TOP_PIXELS = 10 };
/* Most classes a model may have here (the logits live in fixed arrays). */
enum { MAX_CLASSES = 64 };
/* Each image pixel becomes a SCALE x SCALE block; GAP columns separate the two panels. */
enum { SCALE = 8, GAP = 8 };
/* Central differences in float64 with step h: truncation ~h^2 |f'''| / 6 ~ 1e-12, rounding
 * ~ulp(logit) / h ~ 2e-15 / 1e-6 = 2e-9 (1e-9 relative to the largest gradient measured);
 * 1e-6 of the largest gradient is far above both and far below any real error.
 * The CNN is not smooth: in eval mode it is piecewise linear in the pixels (convolution,
 * batch norm on running statistics and linear layers are affine; ReLU and max pooling
 * switch pieces where a pre-activation crosses 0 or another entry of a pool window becomes
 * its maximum). A central difference whose two points lie on different pieces averages
 * their slopes and can disagree with the gradient, which is one piece's (the first
 * maximum of a window gets it). The step is 1e-6, as small as rounding allows, so that
 * only kinks within 1e-6 of the image count, but some are at the image itself: where a
 * pool window sees only the blank (exactly 0) background, its entries tie exactly, and
 * any change of a pixel under it breaks the tie. So each pixel's forward and backward
 * differences are compared too, and a pixel with a kink skipped (see TOL_KINK). */
static const double FD_STEP = 1e-6;
static const double TOL_F64 = 1e-6;
/* The float32 saliency carries float32 rounding (6e-8) through sums of up to 784 terms in
 * each layer: relative errors of ~1e-6 are expected (MLP 5e-7, CNN 2e-7 measured),
 * 1e-4 would be a bug. */
static const double TOL_F32 = 1e-4;
/* Kinks: a pixel whose forward and backward differences are more than TOL_KINK of the
 * largest saliency apart is skipped, and the next most salient pixel checked instead, at
 * most MAX_KINKS times. Without a kink they agree to rounding in the CNN (its pieces are
 * linear: ~3e-9 of the largest saliency measured) and to ~h |f''| in the MLP (~3e-8);
 * kinks measured 2e-2 to 5e-2. */
static const double TOL_KINK = 1e-4;
enum { MAX_KINKS = 10 };
/* The float64 copy must compute the float32 model's logits up to float32 rounding. */
static const double TOL_LOGITS = 1e-4;

/* The float64 copy of a model: its parameters and buffers, named as the model names them
 * (ag_train_model_new), in the order its forward function reads them. */
enum { MAX_STATE = 32 };
typedef ag_tensor *(*forward_f64_fn)(ag_tensor *const *t, ag_tensor *x);
typedef struct model_kind {
    const char *name;         /* --model's value */
    int model;                /* ag_train_config.model */
    const char *first, *last; /* its first layer's weight and its output layer's weight */
    int first_ndim;           /* dims of `first` (the last is [classes, features]) */
    int n;                    /* tensors of the float64 copy */
    const char *const *names; /* their names */
    forward_f64_fn forward;   /* the model in eval mode on t[n], x [N, in] float64 */
} model_kind;

/* §P's MLP: y = W5 LN(gelu(W2 gelu(W0 x + b0) + b2)) + b5, LayerNorm's eps 1e-5. */
enum { W0, B0, W2, B2, LN_W, LN_B, W5, B5, N_MLP };
static const char *const k_mlp_names[N_MLP] = {"0.weight", "0.bias", "2.weight", "2.bias",
                                               "4.weight", "4.bias", "5.weight", "5.bias"};
static ag_tensor *forward_mlp_f64(ag_tensor *const *t, ag_tensor *x) {
    ag_tensor *h = ag_gelu(ag_linear(x, t[W0], t[B0]), false);
    h = ag_gelu(ag_linear(h, t[W2], t[B2]), false);
    h = ag_layer_norm(h, 1, t[LN_W], t[LN_B], 1e-5);
    return ag_linear(h, t[W5], t[B5]);
}

/* The LeNet-5 of ag_train_model_new (train.h): two blocks of convolution (no bias), batch
 * norm, ReLU and 2x2 max pooling, then three linear layers with ReLU between them. Batch
 * norm runs as in eval mode: training false normalises with the running statistics
 * (momentum unused, nothing updated), eps 1e-5 as BatchNorm2d's. */
enum {
    C1_W,
    BN1_W,
    BN1_B,
    BN1_MEAN,
    BN1_VAR,
    C2_W,
    BN2_W,
    BN2_B,
    BN2_MEAN,
    BN2_VAR,
    L10_W,
    L10_B,
    L12_W,
    L12_B,
    L14_W,
    L14_B,
    N_CNN
};
static const char *const k_cnn_names[N_CNN] = {
    "1.weight",  "2.weight", "2.bias",         "2.running_mean", "2.running_var", "5.weight",
    "6.weight",  "6.bias",   "6.running_mean", "6.running_var",  "10.weight",     "10.bias",
    "12.weight", "12.bias",  "14.weight",      "14.bias"};
static ag_tensor *forward_cnn_f64(ag_tensor *const *t, ag_tensor *x) {
    static const int64_t pad2[2] = {2, 2}, pool[2] = {2, 2};
    if (!x) return NULL;
    const int64_t side = (int64_t)lround(sqrt((double)ag_size(x, 1)));
    ag_tensor *h = ag_reshape(x, 4, (int64_t[]){ag_size(x, 0), 1, side, side});
    h = ag_conv2d(h, t[C1_W], NULL, NULL, pad2, NULL, 1);
    h = ag_batch_norm(h, t[BN1_MEAN], t[BN1_VAR], t[BN1_W], t[BN1_B], false, 0.1, 1e-5);
    h = ag_max_pool2d(ag_relu(h), pool, NULL, NULL);
    h = ag_conv2d(h, t[C2_W], NULL, NULL, NULL, NULL, 1);
    h = ag_batch_norm(h, t[BN2_MEAN], t[BN2_VAR], t[BN2_W], t[BN2_B], false, 0.1, 1e-5);
    h = ag_max_pool2d(ag_relu(h), pool, NULL, NULL);
    h = ag_relu(ag_linear(ag_flatten(h, 1, -1), t[L10_W], t[L10_B]));
    h = ag_relu(ag_linear(h, t[L12_W], t[L12_B]));
    return ag_linear(h, t[L14_W], t[L14_B]);
}

static const model_kind k_kinds[] = {
    {"cnn", AG_TRAIN_CNN, "1.weight", "14.weight", 4, N_CNN, k_cnn_names, forward_cnn_f64},
    {"mlp", AG_TRAIN_MLP, "0.weight", "5.weight", 2, N_MLP, k_mlp_names, forward_mlp_f64}};
enum { N_KINDS = sizeof k_kinds / sizeof k_kinds[0] };

typedef struct options {
    const model_kind *kind;
    int epochs;
    long long limit;
    const char *data, *load, *out;
    long long image;
} options;

/* Prints a failure with the library's message; returns EXIT_FAILURE. */
static int fail(const char *what) {
    fprintf(stderr, "f2_saliency: %s: %s\n", what, ag_last_error());
    return EXIT_FAILURE;
}

/* fail() for functions that report with a bool: prints, returns false. */
static bool failed(const char *what) {
    fail(what);
    return false;
}

/* Sets config's layer sizes from a checkpoint of the model kind: the classes from the
 * output layer's weight [classes, features] and, for the MLP, the input and hidden sizes
 * from "0.weight" [hidden, in], so one saved with `ag train --hidden N` loads too (the
 * CNN's input size is the images'). Returns false (the failure printed) if it cannot. */
static bool config_from_checkpoint(const char *path, const model_kind *kind,
                                   ag_train_config *config) {
    int n = 0;
    ag_named_tensor *tensors = NULL;
    if (ag_safetensors_load(path, &n, &tensors) != AG_OK) return failed("reading --load");
    bool first = false, last = false;
    for (int i = 0; i < n; i++) {
        const int64_t *shape = ag_shape(tensors[i].tensor);
        const int ndim = ag_ndim(tensors[i].tensor);
        if (ndim == kind->first_ndim && strcmp(tensors[i].name, kind->first) == 0) {
            if (kind->model == AG_TRAIN_MLP)
                config->hidden = shape[0], config->in_features = shape[1];
            first = true;
        } else if (ndim == 2 && strcmp(tensors[i].name, kind->last) == 0) {
            config->classes = shape[0], last = true;
        }
    }
    ag_named_tensors_free(n, tensors);
    if (!(first && last))
        fprintf(stderr, "f2_saliency: %s has no %d-D %s and 2-D %s: not a --model %s checkpoint\n",
                path, kind->first_ndim, kind->first, kind->last, kind->name);
    return first && last;
}

/* Float64 copies of the model's parameters and buffers that kind->names lists into
 * t[kind->n] (tensors of the caller's scope, outside any graph). Returns false (the
 * failure printed) if it cannot. */
static bool copy_f64(ag_module *model, const model_kind *kind, ag_tensor **t) {
    ag_named_tensor named[MAX_STATE];
    int n = ag_module_parameters(model, named, MAX_STATE);
    if (n >= 0 && n <= MAX_STATE) {
        int buffers = ag_module_buffers(model, named + n, MAX_STATE - n);
        n = buffers < 0 ? -1 : n + buffers;
    }
    if (n < 0 || n > MAX_STATE) {
        fprintf(stderr, "f2_saliency: the model has more than %d parameters and buffers\n",
                MAX_STATE);
        return false;
    }
    bool prev = ag_set_grad_enabled(false);
    for (int i = 0; i < kind->n; i++) {
        t[i] = NULL;
        for (int j = 0; j < n; j++)
            if (strcmp(named[j].name, kind->names[i]) == 0)
                t[i] = ag_to_dtype(named[j].tensor, AG_F64);
    }
    ag_set_grad_enabled(prev);
    for (int i = 0; i < kind->n; i++) {
        if (t[i]) continue;
        fprintf(stderr, "f2_saliency: float64 copy of %s: %s\n", kind->names[i],
                ag_last_status() != AG_OK ? ag_last_error() : "no such parameter or buffer");
        return false;
    }
    return true;
}

/* logit `cls` of the float64 model at the host image `pixels` (numel values), no graph. */
static ag_status logit_f64(const model_kind *kind, ag_tensor *const *t, const double *pixels,
                           int64_t numel, int64_t cls, double *value) {
    bool prev = ag_set_grad_enabled(false);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *y = kind->forward(t, ag_from_f64(pixels, 2, (int64_t[]){1, numel}));
    ag_status st = y ? ag_item(ag_select(ag_select(y, 0, 0), 0, cls), value) : ag_last_status();
    ag_scope_end(scope);
    ag_set_grad_enabled(prev);
    return st;
}

/* Indices of the k largest |s[i]| of s[0..n), largest first, into top[k]. */
static void top_pixels(const double *s, int64_t n, int k, int64_t *top) {
    for (int j = 0; j < k; j++) {
        top[j] = -1;
        for (int64_t i = 0; i < n; i++) {
            bool taken = false;
            for (int t = 0; t < j; t++) taken = taken || top[t] == i;
            if (!taken && (top[j] < 0 || fabs(s[i]) > fabs(s[top[j]]))) top[j] = i;
        }
    }
}

/* A heat colour for v in [0, 1]: black, red, yellow, white. */
static void heat(double v, uint8_t *rgb) {
    for (int c = 0; c < 3; c++) rgb[c] = (uint8_t)lround(255 * fmin(1, fmax(0, 3 * v - c)));
}

/* Writes the image (pixels in [0, 1]) and |saliency| scaled to its maximum side by side. */
static ag_status write_picture(const char *path, const double *image, const double *saliency,
                               int64_t rows, int64_t cols) {
    double max_s = 0;
    for (int64_t i = 0; i < rows * cols; i++) max_s = fmax(max_s, fabs(saliency[i]));
    int panel = (int)cols * SCALE, width = 2 * panel + GAP, height = (int)rows * SCALE;
    uint8_t *rgb = malloc((size_t)width * (size_t)height * 3);
    if (!rgb) return AG_ERR_OUT_OF_MEMORY;
    memset(rgb, 128, (size_t)width * (size_t)height * 3); /* the gap: mid gray */
    for (int y = 0; y < height; y++)
        for (int x = 0; x < panel; x++) {
            int64_t i = (int64_t)(y / SCALE) * cols + x / SCALE;
            uint8_t *left = rgb + ((size_t)y * (size_t)width + (size_t)x) * 3;
            uint8_t *right = left + (size_t)(panel + GAP) * 3;
            left[0] = left[1] = left[2] = (uint8_t)lround(255 * fmin(1, fmax(0, image[i])));
            heat(max_s > 0 ? fabs(saliency[i]) / max_s : 0, right);
        }
    ag_status st = ag_png_save(path, width, height, 3, rgb);
    free(rgb);
    return st;
}

/* True if the file at path starts with the PNG signature. */
static bool is_png(const char *path) {
    unsigned char head[8] = {0};
    FILE *f = fopen(path, "rb");
    size_t got = f ? fread(head, 1, sizeof head, f) : 0;
    if (f) fclose(f);
    return got == 8 && memcmp(head, "\x89PNG\r\n\x1a\n", 8) == 0;
}

/* Loads the model from --model, or trains it on the training set: *model receives it, and
 * *owned too when the caller must free it (a trained model belongs to the trainer). */
static int get_model(const options *o, const ag_train_config *config, ag_train_data *data,
                     ag_trainer *trainer, ag_module **model, ag_module **owned) {
    if (o->load) {
        ag_generator *gen = ag_generator_new(config->seed);
        *owned = *model = gen ? ag_train_model_new(config, gen) : NULL;
        ag_generator_free(gen);
        if (!*model) return fail("building the model");
        if (ag_checkpoint_load(o->load, *model, NULL) != AG_OK) return fail("loading --load");
        printf("model: %s, loaded from %s\n", o->kind->name, o->load);
        return EXIT_SUCCESS;
    }
    int64_t batches = ag_loader_batches(data->train_loader);
    int64_t steps = o->epochs * ag_train_steps_per_epoch(batches, config->accumulate);
    if (ag_trainer_init(trainer, config, steps) != AG_OK) return fail("building the model");
    *model = trainer->model;
    printf("model: %s, trained for %d epoch%s\n", o->kind->name, o->epochs,
           o->epochs == 1 ? "" : "s");
    ag_progress progress;
    ag_progress_init(&progress, stdout, true);
    for (int epoch = 0; epoch < o->epochs; epoch++) {
        ag_epoch_stats stats;
        ag_accuracy acc = {0};
        ag_loader_set_epoch(data->train_loader, (uint64_t)epoch);
        ag_progress_begin(&progress, epoch + 1, o->epochs, batches);
        if (ag_train_epoch(trainer, data->train_loader, &progress, &stats) != AG_OK ||
            ag_evaluate(trainer->model, data->test_loader, &acc) != AG_OK)
            return fail("training");
        ag_progress_epoch(&progress, &stats, &acc);
    }
    return EXIT_SUCCESS;
}

/* Host copies of one image and its gradients, numel doubles each. */
typedef struct pixels {
    int64_t rows, cols, numel;
    double *image; /* the test image, in [0, 1] */
    double *s32;   /* d logit / dx of the float32 model: the saliency */
    double *s64;   /* the same gradient of the float64 copy */
} pixels;

/* The float32 model's saliency of test image `index` for its predicted class: fills
 * px->image and px->s32, *predicted and *logits[classes] (MAX_CLASSES). Returns false (the
 * failure printed) when a check fails. */
static bool saliency_f32(ag_module *model, const ag_image_dataset *test, int64_t index, pixels *px,
                         int64_t *predicted, double *logits, int64_t *classes) {
    /* x: the image as a fresh leaf (a copy, not a view of the data set) requiring grad. */
    ag_tensor *x =
        ag_clone(ag_reshape(ag_select(test->images, 0, index), 2, (int64_t[]){1, px->numel}));
    double label = 0;
    if (!x || ag_set_requires_grad(x, true) != AG_OK ||
        ag_item(ag_select(test->labels, 0, index), &label) != AG_OK ||
        ag_to_host(ag_to_dtype(ag_detach(x), AG_F64), px->image,
                   (size_t)px->numel * sizeof *px->image) != AG_OK)
        return failed("test image");

    /* The logits in eval mode (as model.eval() in PyTorch): the CNN's batch norm normalises
     * with its running statistics, not with those of this batch of one image (§P's MLP has
     * no layer that differs between the modes). */
    ag_module_train(model, false);
    ag_tensor *y = ag_module_forward(model, x);
    *classes = y ? ag_size(y, 1) : 0;
    if (!y || ag_to_host(ag_to_dtype(ag_detach(y), AG_F64), logits,
                         (size_t)*classes * sizeof *logits) != AG_OK)
        return failed("forward");
    *predicted = 0;
    for (int64_t c = 1; c < *classes; c++)
        if (logits[c] > logits[*predicted]) *predicted = c;
    printf("test image %lld: true class %lld, predicted class %lld (logit %.4f)%s\n",
           (long long)index, (long long)label, (long long)*predicted, logits[*predicted],
           *predicted == (int64_t)label ? "" : " (misclassified)");

    /* s = d logit_c / dx: ag_grad leaves the parameters' .grad alone. */
    ag_tensor *logit = ag_select(ag_select(y, 0, 0), 0, *predicted), *g = NULL;
    if (!logit || ag_grad(1, &logit, 1, &x, NULL, false, false, false, &g) != AG_OK)
        return failed("ag_grad");
    char shape_x[64], shape_g[64];
    ag_shape_str(x, shape_x, sizeof shape_x);
    ag_shape_str(g, shape_g, sizeof shape_g);
    if (strcmp(shape_x, shape_g) != 0 || ag_dtype_of(g) != AG_F32 ||
        ag_to_host(ag_to_dtype(g, AG_F64), px->s32, (size_t)px->numel * sizeof *px->s32) != AG_OK) {
        fprintf(stderr, "f2_saliency: FAILED: gradient %s %s, image %s float32 %s\n", shape_g,
                ag_dtype_name(ag_dtype_of(g)), shape_x, ag_last_error());
        return false;
    }
    int64_t finite = 0, nonzero = 0;
    double max_s = 0;
    for (int64_t i = 0; i < px->numel; i++) {
        finite += isfinite(px->s32[i]) != 0;
        nonzero += px->s32[i] != 0;
        max_s = fmax(max_s, fabs(px->s32[i]));
    }
    printf("gradient: shape %s like the image, %lld of %lld finite, %lld non-zero, max |s| "
           "%.4g\n",
           shape_g, (long long)finite, (long long)px->numel, (long long)nonzero, max_s);
    if (finite != px->numel || nonzero == 0) {
        fprintf(stderr, "f2_saliency: FAILED: the gradient must be finite and not all zero\n");
        return false;
    }
    return true;
}

/* Checks the saliency px->s32 against the float64 copy of the model: its logits, its
 * gradient (into px->s64) and central differences on the TOP_PIXELS most salient pixels
 * without a kink. Returns false (the failure printed) when a check fails. */
static bool check_f64(ag_module *model, const model_kind *kind, pixels *px, int64_t predicted,
                      const double *l32, int64_t classes) {
    ag_tensor *t[MAX_STATE], *g = NULL;
    ag_tensor *x = ag_from_f64(px->image, 2, (int64_t[]){1, px->numel});
    if (!copy_f64(model, kind, t)) return false;
    if (!x || ag_set_requires_grad(x, true) != AG_OK) return failed("float64 image");
    ag_tensor *y = kind->forward(t, x);
    ag_tensor *logit = y ? ag_select(ag_select(y, 0, 0), 0, predicted) : NULL;
    double l64[MAX_CLASSES] = {0}, logit_err = 0, logit_scale = 1;
    if (!logit || ag_to_host(y, l64, (size_t)classes * sizeof *l64) != AG_OK ||
        ag_grad(1, &logit, 1, &x, NULL, false, false, false, &g) != AG_OK ||
        ag_to_host(g, px->s64, (size_t)px->numel * sizeof *px->s64) != AG_OK)
        return failed("float64 gradient");
    for (int64_t c = 0; c < classes; c++) {
        logit_err = fmax(logit_err, fabs(l64[c] - l32[c]));
        logit_scale = fmax(logit_scale, fabs(l32[c]));
    }
    printf("float64 copy of the model: max |logit64 - logit32| = %.3g (tolerance %.3g)\n",
           logit_err, TOL_LOGITS * logit_scale);
    bool ok = logit_err <= TOL_LOGITS * logit_scale;

    /* The logit at the image itself, for the one-sided differences. */
    double f0 = 0;
    if (logit_f64(kind, t, px->image, px->numel, predicted, &f0) != AG_OK)
        return failed("finite differences");
    int64_t top[TOP_PIXELS + MAX_KINKS];
    top_pixels(px->s32, px->numel, TOP_PIXELS + MAX_KINKS, top);
    const double max_s = fabs(px->s32[top[0]]);
    printf("%-8s %7s %13s %13s %13s %10s %10s %10s\n", "pixel", "value", "saliency f32", "grad f64",
           "central diff", "|fwd-bwd|", "|f32-fd|", "|f64-fd|");
    double err32 = 0, err64 = 0, scale = 0;
    int checked = 0, kinks = 0;
    for (int k = 0; k < TOP_PIXELS + MAX_KINKS && checked < TOP_PIXELS; k++) {
        int64_t i = top[k];
        double orig = px->image[i], plus = 0, minus = 0;
        px->image[i] = orig + FD_STEP;
        ag_status st = logit_f64(kind, t, px->image, px->numel, predicted, &plus);
        px->image[i] = orig - FD_STEP;
        if (st == AG_OK) st = logit_f64(kind, t, px->image, px->numel, predicted, &minus);
        px->image[i] = orig;
        if (st != AG_OK) return failed("finite differences");
        double fd = (plus - minus) / (2 * FD_STEP);
        /* The forward and backward differences: equal (to rounding) unless a kink lies
         * within the step. Computed from the logit alone, so skipping a kink cannot hide a
         * wrong gradient. */
        double kink = fabs((plus - f0) - (f0 - minus)) / FD_STEP;
        double e32 = fabs(px->s32[i] - fd), e64 = fabs(px->s64[i] - fd);
        printf("(%2lld,%2lld) %7.4f %13.8f %13.8f %13.8f %10.3g %10.3g %10.3g%s\n",
               (long long)(i / px->cols), (long long)(i % px->cols), orig, px->s32[i], px->s64[i],
               fd, kink, e32, e64, kink > TOL_KINK * max_s ? "  kink: skipped" : "");
        if (kink > TOL_KINK * max_s) {
            kinks++;
            continue;
        }
        /* NaN must fail the comparisons below, not vanish in fmax. */
        err32 = isnan(e32) ? INFINITY : fmax(err32, e32);
        err64 = isnan(e64) ? INFINITY : fmax(err64, e64);
        scale = fmax(scale, fabs(fd));
        checked++;
    }
    printf("%d pixels compared, %d skipped at kinks (one-sided differences more than %g of the "
           "largest saliency apart)\n",
           checked, kinks, TOL_KINK);
    if (checked < TOP_PIXELS) {
        fprintf(stderr, "f2_saliency: FAILED: more than %d of the most salient pixels at kinks\n",
                MAX_KINKS);
        ok = false;
    }
    /* Relative to the largest gradient: small entries make elementwise ratios meaningless. */
    double rel32 = scale > 0 ? err32 / scale : err32, rel64 = scale > 0 ? err64 / scale : err64;
    printf("central differences vs float64 gradient: relative error %.3g (tolerance %g)\n", rel64,
           TOL_F64);
    printf("central differences vs float32 saliency: relative error %.3g (tolerance %g)\n", rel32,
           TOL_F32);
    return ok && rel64 <= TOL_F64 && rel32 <= TOL_F32;
}

/* Computes, checks, prints and draws the saliency of test image o->image; every tensor
 * belongs to the caller's scope. */
static int explain(const options *o, ag_module *model, const ag_image_dataset *test) {
    pixels px = {.rows = test->rows, .cols = test->cols, .numel = test->rows * test->cols};
    size_t bytes = (size_t)px.numel * sizeof(double);
    px.image = malloc(bytes), px.s32 = malloc(bytes), px.s64 = malloc(bytes);
    int64_t predicted = 0, classes = 0;
    double logits[MAX_CLASSES] = {0};
    bool ok = px.image && px.s32 && px.s64;
    if (!ok) fprintf(stderr, "f2_saliency: out of host memory\n");
    ok = ok && saliency_f32(model, test, o->image, &px, &predicted, logits, &classes);
    ok = ok && check_f64(model, o->kind, &px, predicted, logits, classes);
    if (ok && write_picture(o->out, px.image, px.s32, px.rows, px.cols) != AG_OK)
        ok = failed("writing the picture");
    if (ok) {
        bool png = is_png(o->out);
        printf("wrote %s (%lldx%lld: the image, then |saliency|)%s\n", o->out,
               (long long)(2 * px.cols * SCALE + GAP), (long long)(px.rows * SCALE),
               png ? "" : ": FAILED, not a PNG file");
        ok = png;
    }
    printf("%s\n", ok ? "OK: the input gradient matches central differences" : "FAILED");
    free(px.image), free(px.s32), free(px.s64);
    return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* Loads the data and the model, checks the accuracy, explains one image. */
static int run(const options *o) {
    ag_train_config config = ag_train_defaults();
    config.model = o->kind->model;
    if (o->load && !config_from_checkpoint(o->load, o->kind, &config)) return EXIT_FAILURE;
    ag_train_data data;
    if (ag_train_data_load(&data, o->data, &config, !o->load, o->limit) != AG_OK)
        return fail("loading the data");
    ag_trainer trainer = {0};
    ag_module *model = NULL, *owned = NULL;
    int rc = get_model(o, &config, &data, &trainer, &model, &owned);
    ag_accuracy acc = {0};
    if (rc == EXIT_SUCCESS && ag_evaluate(model, data.test_loader, &acc) != AG_OK)
        rc = fail("evaluation");
    if (rc == EXIT_SUCCESS) {
        ag_print_accuracy(stdout, &acc);
        /* Chance is one correct answer in `classes`. */
        if (acc.correct * config.classes <= acc.total) {
            fprintf(stderr, "f2_saliency: FAILED: the accuracy is no better than chance\n");
            rc = EXIT_FAILURE;
        }
    }
    if (rc == EXIT_SUCCESS && config.classes > MAX_CLASSES) {
        fprintf(stderr, "f2_saliency: %lld classes, at most %d here\n", (long long)config.classes,
                MAX_CLASSES);
        rc = EXIT_FAILURE;
    }
    if (rc == EXIT_SUCCESS && (o->image < 0 || o->image >= data.test.count)) {
        fprintf(stderr, "f2_saliency: --image %lld: the test set has %lld images\n", o->image,
                (long long)data.test.count);
        rc = 2;
    }
    if (rc == EXIT_SUCCESS) rc = explain(o, model, &data.test);
    ag_module_free(owned);
    ag_trainer_free(&trainer);
    ag_train_data_free(&data);
    return rc;
}

/* The model kind --model names, NULL if none. */
static const model_kind *kind_named(const char *name) {
    for (int i = 0; i < N_KINDS; i++)
        if (strcmp(k_kinds[i].name, name) == 0) return &k_kinds[i];
    return NULL;
}

int main(int argc, char **argv) {
    static const struct option long_options[] = {
        {"model", required_argument, NULL, 'm'}, {"epochs", required_argument, NULL, 'e'},
        {"limit", required_argument, NULL, 'l'}, {"data", required_argument, NULL, 'd'},
        {"load", required_argument, NULL, 'L'},  {"image", required_argument, NULL, 'i'},
        {"out", required_argument, NULL, 'o'},   {0}};
    options o = {
        .kind = &k_kinds[0], .epochs = 10, .data = AG_FASHION_MNIST_DIR, .out = "saliency.png"};
    int c;
    while ((c = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        if (c == 'm')
            o.kind = kind_named(optarg);
        else if (c == 'e')
            o.epochs = atoi(optarg);
        else if (c == 'l')
            o.limit = atoll(optarg);
        else if (c == 'd')
            o.data = optarg;
        else if (c == 'L')
            o.load = optarg;
        else if (c == 'i')
            o.image = atoll(optarg);
        else if (c == 'o')
            o.out = optarg;
        else
            o.epochs = 0; /* unknown option: print the usage below */
    }
    if (!o.kind || o.epochs < 1 || o.limit < 0 || o.image < 0 || optind < argc) {
        fprintf(stderr,
                "usage: %s [--model cnn|mlp] [--epochs N >= 1] [--limit N] [--data DIR] "
                "[--load FILE] [--image I] [--out FILE]\n",
                argv[0]);
        return 2;
    }
    ag_scope *scope = ag_scope_begin(); /* owns every tensor of run() */
    int rc = run(&o);
    ag_scope_end(scope);
    return rc;
}
