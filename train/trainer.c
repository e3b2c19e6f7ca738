/* The §P training recipe: model, AdamW with its schedule, one epoch of training with
 * gradient accumulation and clipping, and evaluation. Each batch lives in its own scope,
 * so only the model's parameters, their gradients and the optimizer state outlive it. */
#include <stdlib.h>
#include <string.h>
#include "ag/train.h"
#include "../core/internal.h"

enum { N_LAYERS = 6 };

/* §P's hyperparameters. */
ag_train_config ag_train_defaults(void) {
    return (ag_train_config){.in_features = 784,
                             .hidden = 512,
                             .classes = 10,
                             .batch_size = 128,
                             .lr = 2e-3,
                             .weight_decay = 1e-2,
                             .accumulate = 2,
                             .clip = 1.0,
                             .label_smoothing = 0.1,
                             .warmup_steps = 0,
                             .seed = 0};
}

enum { CNN_LAYERS = 15 };

/* Side of the square images of in_features pixels, 0 if not a square or too small for
 * LeNet's two 5x5 convolutions and 2x2 pools. */
static int64_t image_side(int64_t in_features) {
    int64_t side = 1;
    while ((side + 1) * (side + 1) <= in_features) side++;
    return side * side == in_features && side >= 12 ? side : 0;
}

/* LeNet-5 (see train.h): the seed's §F-2 image model, with batch norm after each
 * convolution (whose bias it makes redundant): in the one or two epochs this model is run
 * for, it converges markedly faster than the plain LeNet (docs/training.md has numbers).
 * Layers are made one per statement so the generator is drawn from in layer order. */
static ag_module *lenet_new(const ag_train_config *c, ag_generator *gen) {
    const int64_t side = image_side(c->in_features);
    if (!side) {
        ag__error(AG_ERR_INVALID_ARG,
                  "ag_train_model_new: the CNN needs square images of at least 12x12 pixels, "
                  "but in_features is %lld",
                  (long long)c->in_features);
        return NULL;
    }
    const int64_t k5[2] = {5, 5}, pad2[2] = {2, 2}, pool[2] = {2, 2}, s = (side / 2 - 4) / 2;
    ag_module *layers[CNN_LAYERS];
    layers[0] = ag_unflatten_new(1, 3, (const int64_t[]){1, side, side});
    layers[1] = ag_conv2d_new(1, 6, k5, NULL, pad2, NULL, 1, false, gen);
    layers[2] = ag_batch_norm2d_new(6, 1e-5, 0.1, true);
    layers[3] = ag_relu_new();
    layers[4] = ag_max_pool2d_new(pool, NULL, NULL);
    layers[5] = ag_conv2d_new(6, 16, k5, NULL, NULL, NULL, 1, false, gen);
    layers[6] = ag_batch_norm2d_new(16, 1e-5, 0.1, true);
    layers[7] = ag_relu_new();
    layers[8] = ag_max_pool2d_new(pool, NULL, NULL);
    layers[9] = ag_flatten_new(1, -1);
    layers[10] = ag_linear_new(16 * s * s, 120, true, gen);
    layers[11] = ag_relu_new();
    layers[12] = ag_linear_new(120, 84, true, gen);
    layers[13] = ag_relu_new();
    layers[14] = ag_linear_new(84, c->classes, true, gen);
    bool ok = true;
    for (int i = 0; i < CNN_LAYERS; i++) ok = ok && layers[i];
    ag_module *model = ok ? ag_sequential_new(CNN_LAYERS, layers) : NULL;
    if (!model)
        for (int i = 0; i < CNN_LAYERS; i++) ag_module_free(layers[i]);
    return model;
}

/* The network config->model names (see train.h). */
ag_module *ag_train_model_new(const ag_train_config *c, ag_generator *gen) {
    if (!c) {
        ag__error(AG_ERR_INVALID_ARG, "ag_train_model_new: config is NULL");
        return NULL;
    }
    if (c->model == AG_TRAIN_CNN) return lenet_new(c, gen);
    if (c->model != AG_TRAIN_MLP) {
        ag__error(AG_ERR_INVALID_ARG, "ag_train_model_new: unknown model %d (MLP %d or CNN %d)",
                  c->model, AG_TRAIN_MLP, AG_TRAIN_CNN);
        return NULL;
    }
    /* One statement per layer: the generator must be drawn from in layer order, which an
     * initializer list would leave unsequenced. */
    ag_module *layers[N_LAYERS];
    layers[0] = ag_linear_new(c->in_features, c->hidden, true, gen);
    layers[1] = ag_gelu_new(false);
    layers[2] = ag_linear_new(c->hidden, c->hidden, true, gen);
    layers[3] = ag_gelu_new(false);
    layers[4] = ag_layer_norm_new(c->hidden, 1e-5, true);
    layers[5] = ag_linear_new(c->hidden, c->classes, true, gen);
    bool ok = true;
    for (int i = 0; i < N_LAYERS; i++) ok = ok && layers[i];
    ag_module *model = ok ? ag_sequential_new(N_LAYERS, layers) : NULL;
    if (!model) /* the layers are still ours when Sequential fails */
        for (int i = 0; i < N_LAYERS; i++) ag_module_free(layers[i]);
    return model;
}

/* Linear warm-up from lr / warmup to lr, then cosine annealing to 0 at total_steps. */
static ag_scheduler *schedule_new(ag_optimizer *opt, int64_t warmup, int64_t total_steps) {
    if (warmup <= 0) return ag_cosine_annealing_new(opt, total_steps, 0.0);
    ag_scheduler *parts[2] = {ag_linear_lr_new(opt, 1.0 / (double)warmup, 1.0, warmup), NULL};
    parts[1] = parts[0] ? ag_cosine_annealing_new(opt, total_steps - warmup, 0.0) : NULL;
    ag_scheduler *seq =
        parts[1] ? ag_sequential_lr_new(opt, 2, parts, (const int64_t[]){warmup}) : NULL;
    if (!seq) /* SequentialLR takes the parts only on success */
        for (int i = 0; i < 2; i++) ag_scheduler_free(parts[i]);
    return seq;
}

static ag_status check_config(const ag_train_config *c, int64_t total_steps) {
    if (!c) return ag__error(AG_ERR_INVALID_ARG, "ag_trainer_init: config is NULL");
    if (c->in_features < 1 || c->hidden < 1 || c->classes < 2 || c->batch_size < 1 ||
        c->accumulate < 1 || !(c->lr > 0) || c->weight_decay < 0 || c->clip < 0 ||
        c->label_smoothing < 0 || c->label_smoothing > 1 || c->warmup_steps < 0)
        return ag__error(AG_ERR_INVALID_ARG,
                         "ag_trainer_init: invalid config (in %lld, hidden "
                         "%lld, classes %lld, batch %lld, accumulate %d, lr "
                         "%g, weight decay %g, clip %g, smoothing %g, warm-up "
                         "%lld)",
                         (long long)c->in_features, (long long)c->hidden, (long long)c->classes,
                         (long long)c->batch_size, c->accumulate, c->lr, c->weight_decay, c->clip,
                         c->label_smoothing, (long long)c->warmup_steps);
    if (c->amp != AG_F32 && c->amp != AG_F16 && c->amp != AG_BF16)
        return ag__error(AG_ERR_INVALID_ARG,
                         "ag_trainer_init: amp must be float32 (off), float16 or bfloat16, got %s",
                         ag_dtype_name(c->amp));
    if (total_steps > 0 && c->warmup_steps >= total_steps)
        return ag__error(AG_ERR_INVALID_ARG,
                         "ag_trainer_init: %lld warm-up steps leave nothing of %lld steps",
                         (long long)c->warmup_steps, (long long)total_steps);
    return AG_OK;
}

/* Model, AdamW and schedule; all or nothing. */
ag_status ag_trainer_init(ag_trainer *t, const ag_train_config *config, int64_t total_steps) {
    if (!t) return ag__error(AG_ERR_INVALID_ARG, "ag_trainer_init: trainer is NULL");
    memset(t, 0, sizeof *t);
    ag_status st = check_config(config, total_steps);
    if (st != AG_OK) return st;
    t->config = *config;
    ag_generator *gen = ag_generator_new(config->seed);
    t->model = gen ? ag_train_model_new(config, gen) : NULL;
    ag_generator_free(gen);
    if (t->model) {
        t->n_params = ag_module_parameters(t->model, NULL, 0);
        t->params = ag__calloc((size_t)t->n_params, sizeof *t->params);
        if (!t->params) ag__error(AG_ERR_OUT_OF_MEMORY, "ag_trainer_init: parameter list");
    }
    if (t->params) {
        ag_module_parameters(t->model, t->params, t->n_params);
        ag_adam_options adamw = ag_adamw_defaults();
        adamw.lr = config->lr;
        adamw.weight_decay = config->weight_decay;
        t->optimizer = ag_adamw_new(t->n_params, t->params, &adamw);
    }
    if (t->optimizer && total_steps > 0)
        t->scheduler = schedule_new(t->optimizer, config->warmup_steps, total_steps);
    /* float16's range is narrow enough that small gradients underflow: scale the loss. */
    bool needs_scaler = config->amp == AG_F16;
    if (t->optimizer && needs_scaler) t->scaler = ag_grad_scaler_new(NULL);
    if (!t->optimizer || (total_steps > 0 && !t->scheduler) || (needs_scaler && !t->scaler)) {
        st = ag__error_if_none(AG_ERR_INTERNAL, "ag_trainer_init failed");
        ag_trainer_free(t);
        return st;
    }
    t->loss = ag_cross_entropy_defaults();
    t->loss.label_smoothing = config->label_smoothing;
    return AG_OK;
}

/* Frees what ag_trainer_init made. */
void ag_trainer_free(ag_trainer *t) {
    if (!t) return;
    ag_grad_scaler_free(t->scaler);
    ag_scheduler_free(t->scheduler);
    ag_optimizer_free(t->optimizer);
    free(t->params);
    ag_module_free(t->model);
    memset(t, 0, sizeof *t);
}

/* ceil(batches / accumulate). */
int64_t ag_train_steps_per_epoch(int64_t batches, int accumulate) {
    return accumulate > 0 ? (batches + accumulate - 1) / accumulate : 0;
}

/* Forward, loss / divisor, backward (gradients add up in .grad). */
ag_status ag_trainer_accumulate(ag_trainer *t, ag_tensor *x, ag_tensor *y, int divisor,
                                double *loss) {
    if (!t || !t->model || divisor < 1)
        return ag__error(AG_ERR_INVALID_ARG, "ag_trainer_accumulate: no trainer or divisor < 1");
    ag_scope *scope = ag_scope_begin();
    ag_autocast outside = ag_autocast_get();
    if (t->config.amp != AG_F32) ag_autocast_set((ag_autocast){true, t->config.amp}, &outside);
    ag_tensor *l = ag_cross_entropy(ag_module_forward(t->model, x), y, &t->loss);
    ag_autocast_set(outside, NULL);
    /* Dividing by the group size makes the summed gradients those of the group's mean. */
    ag_tensor *objective = ag_mul_scalar(l, 1.0 / divisor);
    if (t->scaler) objective = ag_grad_scaler_scale(t->scaler, objective);
    ag_status st = objective ? ag_backward(objective, NULL) : ag_last_status();
    if (st == AG_OK && loss) st = ag_item(l, loss);
    ag_scope_end(scope);
    return st;
}

/* clip_grad_norm, AdamW step, schedule step, zero_grad(set_to_none); with a GradScaler,
 * PyTorch's recipe: unscale_ before clipping, then the scaler's step (skipped on inf/NaN
 * gradients) and update. */
ag_status ag_trainer_step(ag_trainer *t) {
    if (!t || !t->optimizer)
        return ag__error(AG_ERR_INVALID_ARG, "ag_trainer_step: trainer not initialised");
    ag_scope *scope = ag_scope_begin();
    double norm = 0;
    /* Averaged across processes before anything reads the gradients (clipping's norm). */
    ag_status st = t->sync_grads ? t->sync_grads(t->sync_user) : AG_OK;
    if (st == AG_OK && t->scaler) st = ag_grad_scaler_unscale(t->scaler, t->optimizer);
    if (st == AG_OK && t->config.clip > 0)
        st = ag_clip_grad_norm(t->n_params, t->params, t->config.clip, 2.0, &norm);
    if (st == AG_OK && t->scaler) {
        st = ag_grad_scaler_step(t->scaler, t->optimizer, NULL);
        if (st == AG_OK) st = ag_grad_scaler_update(t->scaler);
    } else if (st == AG_OK) {
        st = ag_optimizer_step(t->optimizer);
    }
    if (st == AG_OK && t->scheduler) st = ag_scheduler_step(t->scheduler);
    if (st == AG_OK) st = ag_optimizer_zero_grad(t->optimizer, true);
    ag_scope_end(scope);
    return st;
}

/* Takes batch `index` of `batches` from loader; an early end is an error. */
static ag_status next_batch(ag_loader *loader, int64_t index, int64_t batches, ag_tensor **x,
                            ag_tensor **y) {
    if (ag_loader_next(loader, x, y)) return AG_OK;
    return ag__error_if_none(AG_ERR_INTERNAL, "loader ended after %lld of %lld batches",
                             (long long)index, (long long)batches);
}

/* One epoch in train mode, a scope per batch, a step per group of batches. */
ag_status ag_train_epoch(ag_trainer *t, ag_loader *loader, ag_progress *progress,
                         ag_epoch_stats *stats) {
    if (!t || !t->optimizer || !loader || !stats)
        return ag__error(AG_ERR_INVALID_ARG, "ag_train_epoch: NULL argument");
    memset(stats, 0, sizeof *stats);
    double start = ag_train_clock(), loss_sum = 0;
    int64_t batches = ag_loader_batches(loader);
    int acc = t->config.accumulate;
    ag_module_train(t->model, true);
    ag_status st = ag_optimizer_zero_grad(t->optimizer, true);
    for (int64_t b = 0; st == AG_OK && b < batches; b++) {
        ag_scope *scope = ag_scope_begin();
        ag_tensor *x = NULL, *y = NULL;
        int64_t group_start = b - b % acc;
        int divisor = (int)(batches - group_start < acc ? batches - group_start : acc);
        double loss = 0;
        st = next_batch(loader, b, batches, &x, &y);
        if (t->before_backward) t->before_backward(t->sync_user, b + 1 - group_start == divisor);
        if (st == AG_OK) st = ag_trainer_accumulate(t, x, y, divisor, &loss);
        if (st == AG_OK) {
            loss_sum += loss * (double)ag_size(x, 0);
            stats->images += ag_size(x, 0);
        }
        if (st == AG_OK && (b + 1 - group_start == divisor)) {
            st = ag_trainer_step(t);
            stats->steps++;
        }
        ag_scope_end(scope);
        if (st == AG_OK && progress)
            ag_progress_batch(progress, b + 1, stats->images, loss_sum / (double)stats->images);
    }
    stats->loss = stats->images ? loss_sum / (double)stats->images : 0;
    stats->seconds = ag_train_clock() - start;
    return st;
}

/* Adds one batch's correct predictions and size to acc. */
static ag_status count_correct(ag_module *model, ag_tensor *x, ag_tensor *y, ag_accuracy *acc) {
    ag_tensor *pred = ag_argmax(ag_module_forward(model, x), 1, false, false);
    ag_tensor *hits = ag_sum(ag_eq(pred, y), 0, NULL, false);
    double n = 0;
    ag_status st = hits ? ag_item(hits, &n) : ag_last_status();
    if (st != AG_OK) return st;
    acc->correct += (int64_t)n;
    acc->total += ag_size(y, 0);
    return AG_OK;
}

/* Accuracy in eval mode without grad, a scope per batch. */
ag_status ag_evaluate(ag_module *model, ag_loader *loader, ag_accuracy *accuracy) {
    if (!model || !loader || !accuracy)
        return ag__error(AG_ERR_INVALID_ARG, "ag_evaluate: NULL argument");
    memset(accuracy, 0, sizeof *accuracy);
    ag_module_train(model, false);
    bool prev = ag_set_grad_enabled(false);
    ag_loader_set_epoch(loader, 0);
    int64_t batches = ag_loader_batches(loader);
    ag_status st = AG_OK;
    for (int64_t b = 0; st == AG_OK && b < batches; b++) {
        ag_scope *scope = ag_scope_begin();
        ag_tensor *x = NULL, *y = NULL;
        st = next_batch(loader, b, batches, &x, &y);
        if (st == AG_OK) st = count_correct(model, x, y, accuracy);
        ag_scope_end(scope);
    }
    ag_set_grad_enabled(prev);
    return st;
}
