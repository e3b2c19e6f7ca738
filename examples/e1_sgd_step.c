/* Seed §E-1: one epoch of minibatch SGD steps, in the seed's order:
 *
 *   forward -> loss -> zero_grad(set_to_none) -> backward -> clip_grad_norm -> step
 *
 * Model Linear(10, 64) - ReLU - Linear(64, 1), SGD lr 1e-2 with momentum 0.9, MSE loss,
 * gradient norm clipped to 1.0, on a synthetic regression y = x w + 0.1 noise (seed 0):
 * 320 samples in 20 shuffled batches of 16. Prints the loss of every step and the loss on
 * all samples before and after the epoch; fails unless that loss fell. */
#include <stdio.h>
#include <stdlib.h>
#include "ag/data.h"
#include "ag/optim.h"

enum { SAMPLES = 320, BATCH = 16, IN = 10, HIDDEN = 64, N_PARAMS = 4 };

/* The synthetic data set: x [320, 10] ~ N(0, 1), y = x w + 0.1 noise with w ~ N(0, 1). */
static ag_status make_data(ag_tensor **x, ag_tensor **y) {
    ag_generator *gen = ag_generator_new(0);
    ag_scope *scope = ag_scope_begin();
    *x = ag_randn(gen, AG_F32, 2, (int64_t[]){SAMPLES, IN});
    ag_tensor *w = ag_randn(gen, AG_F32, 2, (int64_t[]){IN, 1});
    ag_tensor *noise = ag_randn(gen, AG_F32, 2, (int64_t[]){SAMPLES, 1});
    *y = ag_add(ag_matmul(*x, w), ag_mul_scalar(noise, 0.1));
    ag_keep(*x); /* both outlive the scope; main releases them */
    ag_keep(*y);
    ag_scope_end(scope);
    ag_generator_free(gen);
    return *x && *y ? AG_OK : ag_last_status();
}

/* Mean squared error of the model on all samples, without recording a graph. */
static ag_status full_loss(ag_module *model, ag_tensor *x, ag_tensor *y, double *loss) {
    bool prev = ag_set_grad_enabled(false);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *l = ag_mse_loss(ag_module_forward(model, x), y, AG_REDUCTION_MEAN);
    ag_status st = l ? ag_item(l, loss) : ag_last_status();
    ag_scope_end(scope);
    ag_set_grad_enabled(prev);
    return st;
}

/* One §E-1 step on a batch; every temporary belongs to the step's scope. */
static ag_status sgd_step(ag_module *model, ag_optimizer *opt, int n, const ag_named_tensor *params,
                          ag_tensor *xb, ag_tensor *yb, double *loss, double *grad_norm) {
    ag_tensor *pred = ag_module_forward(model, xb);
    ag_tensor *l = ag_mse_loss(pred, yb, AG_REDUCTION_MEAN);
    ag_status st = l ? ag_optimizer_zero_grad(opt, true) : ag_last_status();
    if (st == AG_OK) st = ag_backward(l, NULL);
    if (st == AG_OK) st = ag_clip_grad_norm(n, params, 1.0, 2.0, grad_norm);
    if (st == AG_OK) st = ag_optimizer_step(opt);
    if (st == AG_OK) st = ag_item(l, loss);
    return st;
}

/* Builds the model and optimizer and runs the epoch; before and after receive the loss on
 * all samples around it. */
static ag_status run(ag_tensor *x, ag_tensor *y, double *before, double *after) {
    ag_generator *gen = ag_generator_new(0);
    ag_module *layers[3];
    layers[0] = ag_linear_new(IN, HIDDEN, true, gen); /* drawn in order: one per statement */
    layers[1] = ag_relu_new();
    layers[2] = ag_linear_new(HIDDEN, 1, true, gen);
    ag_generator_free(gen);
    ag_module *model = layers[0] && layers[1] && layers[2] ? ag_sequential_new(3, layers) : NULL;
    ag_named_tensor params[N_PARAMS];
    int n = model ? ag_module_parameters(model, params, N_PARAMS) : 0;
    ag_sgd_options sgd = ag_sgd_defaults(1e-2);
    sgd.momentum = 0.9;
    ag_optimizer *opt = n == N_PARAMS ? ag_sgd_new(n, params, &sgd) : NULL;
    ag_loader_options lo = {.batch_size = BATCH, .shuffle = true, .seed = 0, .world_size = 1};
    ag_loader *loader = opt ? ag_loader_new(x, y, &lo) : NULL;
    ag_status st = loader ? full_loss(model, x, y, before) : ag_last_status();

    printf("step  batch loss  grad norm (before clipping to 1.0)\n");
    int64_t steps = ag_loader_batches(loader);
    for (int64_t step = 1; st == AG_OK && step <= steps; step++) {
        ag_scope *scope = ag_scope_begin(); /* one scope per step: the batch and its graph */
        ag_tensor *xb = NULL, *yb = NULL;
        double loss = 0, norm = 0;
        st = ag_loader_next(loader, &xb, &yb) ? AG_OK : ag_last_status();
        if (st == AG_OK) st = sgd_step(model, opt, n, params, xb, yb, &loss, &norm);
        ag_scope_end(scope);
        if (st == AG_OK) printf("%4lld  %10.5f  %9.4f\n", (long long)step, loss, norm);
    }
    if (st == AG_OK) st = full_loss(model, x, y, after);
    ag_loader_free(loader);
    ag_optimizer_free(opt);
    if (model)
        ag_module_free(model);
    else
        for (int i = 0; i < 3; i++) ag_module_free(layers[i]);
    return st;
}

int main(void) {
    ag_tensor *x = NULL, *y = NULL;
    double before = 0, after = 0;
    ag_status st = make_data(&x, &y);
    if (st == AG_OK) st = run(x, y, &before, &after);
    ag_release(x);
    ag_release(y);
    if (st != AG_OK) {
        fprintf(stderr, "e1: %s\n", ag_last_error());
        return EXIT_FAILURE;
    }
    bool fell = after < before;
    printf("loss on all %d samples: %.5f before the epoch, %.5f after\n", SAMPLES, before, after);
    printf("%s\n", fell ? "OK: the loss fell" : "FAILED: the loss did not fall");
    return fell ? EXIT_SUCCESS : EXIT_FAILURE;
}
