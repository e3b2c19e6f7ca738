/* Seed §H-1/H-2: a two-layer MLP with MSE, gradients by autograd and by the hand-derived
 * chain rule side by side, then gradcheck of the loss in float64.
 *
 *   z = x W1^T + b1,  h = relu(z),  y_hat = h W2^T + b2,  L = 0.5 * mean((y_hat - y)^2)
 *
 *   dL/dy_hat = (y_hat - y) / B          dW2 = dy^T h     db2 = sum_rows(dy)
 *   dh = dy W2     dz = dh * [z > 0]     dW1 = dz^T x     db1 = sum_rows(dz)
 *
 * (The seed writes one sample, L = 0.5 |y_hat - y|^2; with a batch of B and the mean the
 * upstream gradient gains the factor 1/B.) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "ag/ag.h"

enum { W1, B1, W2, B2, N_PARAMS };
static const char *const k_names[N_PARAMS] = {"W1", "b1", "W2", "b2"};
enum { BATCH = 5, IN = 3, HIDDEN = 4 };

typedef struct batch {
    ag_tensor *x, *y;
} batch;

/* Forward pass; also hands back z and h (pass NULL when not needed). */
static ag_tensor *mlp(ag_tensor *x, ag_tensor *const *p, ag_tensor **z_out, ag_tensor **h_out) {
    ag_tensor *z = ag_add(ag_matmul(x, ag_transpose(p[W1], 0, 1)), p[B1]); /* (B, 4) */
    ag_tensor *h = ag_relu(z);
    if (z_out) *z_out = z;
    if (h_out) *h_out = h;
    return ag_add(ag_matmul(h, ag_transpose(p[W2], 0, 1)), p[B2]); /* (B, 1) */
}

/* The loss as a function of the parameters: also the function gradcheck differentiates. */
static ag_tensor *loss_fn(ag_tensor *const *p, void *user) {
    const batch *d = user;
    ag_tensor *diff = ag_sub(mlp(d->x, p, NULL, NULL), d->y);
    return ag_mul_scalar(ag_mean(ag_pow_scalar(diff, 2), 0, NULL, false), 0.5);
}

/* The hand-derived gradients, computed with ag ops outside the graph. */
static ag_status manual_grads(const batch *d, ag_tensor *const *p, ag_tensor **g) {
    bool prev = ag_set_grad_enabled(false);
    ag_tensor *z = NULL, *h = NULL;
    ag_tensor *y_hat = mlp(d->x, p, &z, &h);
    ag_tensor *dy = ag_mul_scalar(ag_sub(y_hat, d->y), 1.0 / BATCH);
    const int rows[1] = {0};
    g[W2] = ag_matmul(ag_transpose(dy, 0, 1), h);
    g[B2] = ag_sum(dy, 1, rows, false);
    ag_tensor *dh = ag_matmul(dy, p[W2]);
    ag_tensor *dz = ag_mul(dh, ag_gt(z, ag_zeros_like(z))); /* relu'(z) = [z > 0] */
    g[W1] = ag_matmul(ag_transpose(dz, 0, 1), d->x);
    g[B1] = ag_sum(dz, 1, rows, false);
    ag_set_grad_enabled(prev);
    for (int i = 0; i < N_PARAMS; i++)
        if (!g[i]) return ag_last_status();
    return AG_OK;
}

static double norm_of(ag_tensor *t) {
    double v = NAN;
    if (ag_item(ag_norm(t, 2, 0, NULL, false), &v) != AG_OK) return NAN;
    return v;
}

/* Float64 copies of the parameters as fresh leaves requiring grad, and of the batch. */
static ag_status to_f64(const batch *d, ag_tensor *const *p, batch *d64, ag_tensor **p64) {
    bool prev = ag_set_grad_enabled(false);
    d64->x = ag_to_dtype(d->x, AG_F64);
    d64->y = ag_to_dtype(d->y, AG_F64);
    for (int i = 0; i < N_PARAMS; i++) p64[i] = ag_to_dtype(p[i], AG_F64);
    ag_set_grad_enabled(prev);
    ag_status st = d64->x && d64->y ? AG_OK : ag_last_status();
    for (int i = 0; i < N_PARAMS && st == AG_OK; i++)
        st = p64[i] ? ag_set_requires_grad(p64[i], true) : ag_last_status();
    return st;
}

static int fail(const char *what) {
    fprintf(stderr, "h2: %s failed: %s\n", what, ag_last_error());
    return EXIT_FAILURE;
}

/* The example proper; main wraps it in the scope that owns every tensor it makes. */
static int run(void) {
    ag_generator *gen = ag_generator_new(0);
    if (!gen) return fail("ag_generator_new");
    batch d = {ag_randn(gen, AG_F32, 2, (int64_t[]){BATCH, IN}),
               ag_randn(gen, AG_F32, 2, (int64_t[]){BATCH, 1})};
    ag_tensor *p[N_PARAMS] = {
        ag_randn(gen, AG_F32, 2, (int64_t[]){HIDDEN, IN}),
        ag_randn(gen, AG_F32, 1, (int64_t[]){HIDDEN}),
        ag_randn(gen, AG_F32, 2, (int64_t[]){1, HIDDEN}),
        ag_randn(gen, AG_F32, 1, (int64_t[]){1}),
    };
    ag_generator_free(gen);
    for (int i = 0; i < N_PARAMS; i++)
        if (!p[i] || ag_set_requires_grad(p[i], true) != AG_OK) return fail("creating parameters");

    ag_tensor *loss = loss_fn(p, &d);
    double loss_val = 0;
    if (!loss || ag_backward(loss, NULL) != AG_OK || ag_item(loss, &loss_val) != AG_OK)
        return fail("forward/backward");
    ag_tensor *manual[N_PARAMS] = {0};
    if (manual_grads(&d, p, manual) != AG_OK) return fail("manual gradients");

    printf("loss = %.7f\n", loss_val);
    printf("%-3s %16s %16s %14s\n", "", "|autograd grad|", "|manual grad|", "max |diff|");
    int bad = 0;
    for (int i = 0; i < N_PARAMS; i++) {
        ag_tensor *g = ag_tensor_grad(p[i]);
        /* Compared as a difference tensor: -1 flags a shape mismatch or a failed op. */
        double diff = -1;
        ag_tensor *dmax = ag_max(ag_abs(ag_sub(g, manual[i])), 0, NULL, false);
        if (dmax && ag_item(dmax, &diff) != AG_OK) diff = -1;
        bool ok = diff >= 0 && diff < 1e-5;
        printf("%-3s %16.7f %16.7f %14.3g%s\n", k_names[i], norm_of(g), norm_of(manual[i]), diff,
               ok ? "" : "  MISMATCH");
        bad += !ok;
    }
    for (int i = 0; i < N_PARAMS; i++) {
        printf("%s.grad (autograd) = ", k_names[i]);
        ag_print(ag_tensor_grad(p[i]));
        printf("%s.grad (manual)   = ", k_names[i]);
        ag_print(manual[i]);
    }
    ag_clear_error();

    /* The seed's suggestion: verify with gradcheck, in float64 for precision. */
    batch d64;
    ag_tensor *p64[N_PARAMS];
    if (to_f64(&d, p, &d64, p64) != AG_OK) return fail("float64 copies");
    ag_status gc = ag_gradcheck(loss_fn, &d64, N_PARAMS, p64, NULL);
    printf("gradcheck (float64, loss w.r.t. W1, b1, W2, b2): %s%s%s\n",
           gc == AG_OK ? "passed" : "FAILED", gc == AG_OK ? "" : ": ", ag_last_error());
    bad += gc != AG_OK;
    printf("%s\n", bad ? "FAILED" : "OK: autograd matches the manual derivation");
    return bad ? EXIT_FAILURE : EXIT_SUCCESS;
}

int main(void) {
    ag_scope *scope = ag_scope_begin();
    int rc = run();
    ag_scope_end(scope);
    return rc;
}
