/* Seed §F-2: input gradients. A saliency map of the §P Fashion-MNIST classifier.
 *
 *   x      one test image [1, 784], a leaf requiring grad
 *   c      the predicted class: argmax of model(x), the model in eval mode
 *   s      d logit_c / dx = ag_grad(model(x)[0, c], x): how much each pixel moves the
 *          score of the class the model picked; |s| is the saliency
 *
 * The model is trained here with the library's training functions (as ex_p_train does), or
 * loaded from a checkpoint that `ag train --save` wrote. The picture, written with
 * ag_png_save, is the image (gray) beside |s| normalised to 0..255 (black, red, yellow,
 * white), each pixel drawn as a SCALE x SCALE block.
 *
 * The gradient is checked against central finite differences of the logit on the pixels
 * with the largest saliency. In float32 that check is weak: the logit carries rounding
 * errors of ~1e-6, which a step small enough for the truncation error (~1e-3) turns into
 * errors of ~1e-3 in the difference quotient, about 1% of gradients of ~0.1. So the check
 * evaluates the same network in float64: the trained parameters converted (exactly), the
 * layers applied with the functional ops (ag_linear, ag_gelu, ag_layer_norm; eval mode has
 * nothing else), where central differences are accurate to ~1e-9. Its logits must equal
 * the float32 model's up to float32 rounding (the copy is the model), its gradient (ag_grad
 * again, on the float64 graph) must match the differences to 1e-6, and the float32
 * saliency must match them to float32 accuracy.
 *
 * usage: ex_f2_saliency [--epochs N] [--limit N] [--data DIR] [--model FILE] [--image I]
 *                       [--out FILE]
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
 * 1e-6 of the largest gradient is far above both and far below any real error. */
static const double FD_STEP = 1e-6;
static const double TOL_F64 = 1e-6;
/* The float32 saliency carries float32 rounding (6e-8) through sums of 512 and 784 terms
 * in each of four layers: relative errors of ~1e-6 are expected (5e-7 measured), 1e-4
 * would be a bug. */
static const double TOL_F32 = 1e-4;
/* The float64 copy must compute the float32 model's logits up to float32 rounding. */
static const double TOL_LOGITS = 1e-4;

/* The §P model's parameters in float64, in layer order (see ag_train_model_new). */
enum { W0, B0, W2, B2, LN_W, LN_B, W5, B5, N_PARAMS };
static const char *const k_param_names[N_PARAMS] = {"0.weight", "0.bias", "2.weight", "2.bias",
                                                    "4.weight", "4.bias", "5.weight", "5.bias"};

typedef struct options {
    int epochs;
    long long limit;
    const char *data, *model, *out;
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

/* Sets config's layer sizes from a checkpoint of the §P model ("0.weight" is
 * [hidden, in], "5.weight" [classes, hidden]), so one saved with `ag train --hidden N`
 * loads too. Returns false (the failure printed) if it cannot. */
static bool config_from_checkpoint(const char *path, ag_train_config *config) {
    int n = 0;
    ag_named_tensor *tensors = NULL;
    if (ag_safetensors_load(path, &n, &tensors) != AG_OK) return failed("reading --model");
    bool first = false, last = false;
    for (int i = 0; i < n; i++) {
        const int64_t *shape = ag_shape(tensors[i].tensor);
        if (ag_ndim(tensors[i].tensor) != 2) continue;
        if (strcmp(tensors[i].name, "0.weight") == 0) {
            config->hidden = shape[0], config->in_features = shape[1], first = true;
        } else if (strcmp(tensors[i].name, "5.weight") == 0) {
            config->classes = shape[0], last = true;
        }
    }
    ag_named_tensors_free(n, tensors);
    if (!(first && last))
        fprintf(stderr, "f2_saliency: %s has no 2-D 0.weight and 5.weight: not a §P model\n", path);
    return first && last;
}

/* The float64 model: y = W5 LN(gelu(W2 gelu(W0 x + b0) + b2)) + b5, LayerNorm's eps 1e-5. */
static ag_tensor *forward_f64(ag_tensor *const *p, ag_tensor *x) {
    ag_tensor *h = ag_gelu(ag_linear(x, p[W0], p[B0]), false);
    h = ag_gelu(ag_linear(h, p[W2], p[B2]), false);
    h = ag_layer_norm(h, 1, p[LN_W], p[LN_B], 1e-5);
    return ag_linear(h, p[W5], p[B5]);
}

/* Float64 copies of the model's parameters into p[N_PARAMS] (tensors of the caller's
 * scope, outside any graph). Returns false (the failure printed) if it cannot. */
static bool params_f64(ag_module *model, ag_tensor **p) {
    ag_named_tensor named[N_PARAMS + 1];
    int n = ag_module_parameters(model, named, N_PARAMS + 1);
    if (n != N_PARAMS) {
        fprintf(stderr, "f2_saliency: the model has %d parameters, the §P model %d\n", n, N_PARAMS);
        return false;
    }
    bool prev = ag_set_grad_enabled(false);
    for (int i = 0; i < N_PARAMS; i++) {
        p[i] = NULL;
        for (int j = 0; j < n; j++)
            if (strcmp(named[j].name, k_param_names[i]) == 0)
                p[i] = ag_to_dtype(named[j].tensor, AG_F64);
    }
    ag_set_grad_enabled(prev);
    for (int i = 0; i < N_PARAMS; i++) {
        if (p[i]) continue;
        fprintf(stderr, "f2_saliency: float64 copy of %s: %s\n", k_param_names[i],
                ag_last_status() != AG_OK ? ag_last_error() : "no such parameter");
        return false;
    }
    return true;
}

/* logit `cls` of the float64 model at the host image `pixels` (numel values), no graph. */
static ag_status logit_f64(ag_tensor *const *p, const double *pixels, int64_t numel, int64_t cls,
                           double *value) {
    bool prev = ag_set_grad_enabled(false);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *y = forward_f64(p, ag_from_f64(pixels, 2, (int64_t[]){1, numel}));
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
    if (o->model) {
        ag_generator *gen = ag_generator_new(config->seed);
        *owned = *model = gen ? ag_train_model_new(config, gen) : NULL;
        ag_generator_free(gen);
        if (!*model) return fail("building the model");
        if (ag_checkpoint_load(o->model, *model, NULL) != AG_OK) return fail("loading --model");
        printf("model: loaded from %s\n", o->model);
        return EXIT_SUCCESS;
    }
    int64_t batches = ag_loader_batches(data->train_loader);
    int64_t steps = o->epochs * ag_train_steps_per_epoch(batches, config->accumulate);
    if (ag_trainer_init(trainer, config, steps) != AG_OK) return fail("building the model");
    *model = trainer->model;
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

    /* The logits in eval mode (as model.eval() in PyTorch; §P's model has no dropout, so
     * this matters only for models that do). */
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
 * gradient (into px->s64) and central differences on the TOP_PIXELS most salient pixels.
 * Returns false (the failure printed) when a check fails. */
static bool check_f64(ag_module *model, pixels *px, int64_t predicted, const double *l32,
                      int64_t classes) {
    ag_tensor *p[N_PARAMS], *g = NULL;
    ag_tensor *x = ag_from_f64(px->image, 2, (int64_t[]){1, px->numel});
    if (!params_f64(model, p)) return false;
    if (!x || ag_set_requires_grad(x, true) != AG_OK) return failed("float64 image");
    ag_tensor *y = forward_f64(p, x);
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

    int64_t top[TOP_PIXELS];
    top_pixels(px->s32, px->numel, TOP_PIXELS, top);
    printf("%-8s %7s %13s %13s %13s %10s %10s\n", "pixel", "value", "saliency f32", "grad f64",
           "central diff", "|f32-fd|", "|f64-fd|");
    double err32 = 0, err64 = 0, scale = 0;
    for (int k = 0; k < TOP_PIXELS; k++) {
        int64_t i = top[k];
        double orig = px->image[i], plus = 0, minus = 0;
        px->image[i] = orig + FD_STEP;
        ag_status st = logit_f64(p, px->image, px->numel, predicted, &plus);
        px->image[i] = orig - FD_STEP;
        if (st == AG_OK) st = logit_f64(p, px->image, px->numel, predicted, &minus);
        px->image[i] = orig;
        if (st != AG_OK) return failed("finite differences");
        double fd = (plus - minus) / (2 * FD_STEP);
        double e32 = fabs(px->s32[i] - fd), e64 = fabs(px->s64[i] - fd);
        printf("(%2lld,%2lld) %7.4f %13.8f %13.8f %13.8f %10.3g %10.3g\n",
               (long long)(i / px->cols), (long long)(i % px->cols), orig, px->s32[i], px->s64[i],
               fd, e32, e64);
        /* NaN must fail the comparisons below, not vanish in fmax. */
        err32 = isnan(e32) ? INFINITY : fmax(err32, e32);
        err64 = isnan(e64) ? INFINITY : fmax(err64, e64);
        scale = fmax(scale, fabs(fd));
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
    ok = ok && check_f64(model, &px, predicted, logits, classes);
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
    if (o->model && !config_from_checkpoint(o->model, &config)) return EXIT_FAILURE;
    ag_train_data data;
    if (ag_train_data_load(&data, o->data, &config, !o->model, o->limit) != AG_OK)
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

int main(int argc, char **argv) {
    static const struct option long_options[] = {{"epochs", required_argument, NULL, 'e'},
                                                 {"limit", required_argument, NULL, 'l'},
                                                 {"data", required_argument, NULL, 'd'},
                                                 {"model", required_argument, NULL, 'm'},
                                                 {"image", required_argument, NULL, 'i'},
                                                 {"out", required_argument, NULL, 'o'},
                                                 {0}};
    options o = {.epochs = 10, .data = AG_FASHION_MNIST_DIR, .out = "saliency.png"};
    int c;
    while ((c = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        if (c == 'e')
            o.epochs = atoi(optarg);
        else if (c == 'l')
            o.limit = atoll(optarg);
        else if (c == 'd')
            o.data = optarg;
        else if (c == 'm')
            o.model = optarg;
        else if (c == 'i')
            o.image = atoll(optarg);
        else if (c == 'o')
            o.out = optarg;
        else
            o.epochs = 0; /* unknown option: print the usage below */
    }
    if (o.epochs < 1 || o.limit < 0 || o.image < 0 || optind < argc) {
        fprintf(stderr,
                "usage: %s [--epochs N >= 1] [--limit N] [--data DIR] [--model FILE] "
                "[--image I] [--out FILE]\n",
                argv[0]);
        return 2;
    }
    ag_scope *scope = ag_scope_begin(); /* owns every tensor of run() */
    int rc = run(&o);
    ag_scope_end(scope);
    return rc;
}
