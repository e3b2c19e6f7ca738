/* Seed §F-3: a gradient penalty (WGAN-GP) through a double backward.
 *
 *   f(x; theta) = tanh(W2 tanh(W1 x + b1) + b2)          a small critic, theta = (W1, b1, W2, b2)
 *   g = grad(sum_i f(x_i), x, create_graph)          g_i = df(x_i)/dx_i, recorded
 *   P(theta) = mean_i (|g_i|_2 - 1)^2                    the penalty on the gradient norm
 *
 * Backward of P reaches theta through the recorded first backward (second derivatives of tanh
 * and linear). dP/dtheta is checked against central differences of P(theta), each of which runs
 * its own ag_grad, and with ag_gradcheck on theta -> P(theta). All in float64. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "ag/ag.h"
#include "ag/nn.h"

enum { B = 4, D = 3, H = 6, N_PARAMS = 4 };
static const char *const k_names[N_PARAMS] = {"W1", "b1", "W2", "b2"};
/* Central differences with step h: truncation ~h^2 |P'''| / 6 ~ 1e-13, rounding
 * ~ulp(P) / h ~ 1e-10. A relative error of the gradient above 1e-6 is a real bug. */
static const double FD_STEP = 1e-6;
static const double TOL = 1e-6;

/* The critic f(x; theta) on a batch x [B, D]: one score per sample, [B, 1]. */
static ag_tensor *critic(ag_tensor *x, ag_tensor *const *p) {
    return ag_tanh(ag_linear(ag_tanh(ag_linear(x, p[0], p[1])), p[2], p[3]));
}

/* P(theta) = mean((|g_i| - 1)^2) with g = grad(sum f(x), x, create_graph); user is x. */
static ag_tensor *penalty(ag_tensor *const *p, void *user) {
    ag_tensor *x = user, *g = NULL;
    ag_tensor *y = ag_sum(critic(x, p), 0, NULL, false);
    if (!y || ag_grad(1, &y, 1, &x, NULL, true, true, false, &g) != AG_OK) return NULL;
    ag_tensor *norms = ag_norm(g, 2, 1, (int[]){1}, false);
    return ag_mean(ag_pow_scalar(ag_add_scalar(norms, -1), 2), 0, NULL, false);
}

/* P(theta) as a number, in a scope of its own. */
static ag_status penalty_value(ag_tensor *const *p, ag_tensor *x, double *value) {
    ag_scope *scope = ag_scope_begin();
    ag_tensor *P = penalty(p, x);
    ag_status st = P ? ag_item(P, value) : ag_last_status();
    ag_scope_end(scope);
    return st;
}

/* Writes the host values into the leaf t (outside the graph). */
static ag_status assign(ag_tensor *t, const double *values) {
    bool prev = ag_set_grad_enabled(false);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *src = ag_from_f64(values, ag_ndim(t), ag_shape(t));
    ag_status st = src && ag_copy_(t, src) ? AG_OK : ag_last_status();
    ag_scope_end(scope);
    ag_set_grad_enabled(prev);
    return st;
}

/* dP/dp[i] by central differences of P, element by element, into fd[numel]. */
static ag_status finite_differences(ag_tensor *const *p, int i, ag_tensor *x, double *fd) {
    int64_t n = ag_numel(p[i]);
    double *host = malloc((size_t)n * sizeof *host);
    ag_status st = host ? ag_to_host(p[i], host, (size_t)n * sizeof *host) : AG_ERR_OUT_OF_MEMORY;
    for (int64_t j = 0; j < n && st == AG_OK; j++) {
        double orig = host[j], plus = 0, minus = 0;
        host[j] = orig + FD_STEP;
        st = assign(p[i], host);
        if (st == AG_OK) st = penalty_value(p, x, &plus);
        host[j] = orig - FD_STEP;
        if (st == AG_OK) st = assign(p[i], host);
        if (st == AG_OK) st = penalty_value(p, x, &minus);
        host[j] = orig;
        if (st == AG_OK) st = assign(p[i], host);
        fd[j] = (plus - minus) / (2 * FD_STEP);
    }
    free(host);
    return st;
}

/* Prints a failure with the library's message; returns EXIT_FAILURE. */
static int fail(const char *what) {
    fprintf(stderr, "f3: %s: %s\n", what, ag_last_error());
    return EXIT_FAILURE;
}

/* The example proper; every tensor belongs to the caller's scope. */
static int run(void) {
    static const int64_t shapes[N_PARAMS][2] = {{H, D}, {H, 0}, {1, H}, {1, 0}};
    ag_generator *gen = ag_generator_new(3);
    if (!gen) return fail("generator");
    ag_tensor *x = ag_randn(gen, AG_F64, 2, (int64_t[]){B, D}), *p[N_PARAMS];
    for (int i = 0; i < N_PARAMS; i++)
        p[i] = ag_uniform(gen, AG_F64, shapes[i][1] ? 2 : 1, shapes[i], -1, 1);
    ag_generator_free(gen);
    ag_status st = x ? ag_set_requires_grad(x, true) : ag_last_status();
    for (int i = 0; i < N_PARAMS && st == AG_OK; i++)
        st = p[i] ? ag_set_requires_grad(p[i], true) : ag_last_status();
    if (st != AG_OK) return fail("inputs");

    /* The gradients g and their norms, for show. */
    ag_tensor *y = ag_sum(critic(x, p), 0, NULL, false), *g = NULL;
    if (!y || ag_grad(1, &y, 1, &x, NULL, false, false, false, &g) != AG_OK)
        return fail("first backward");
    printf("x = ");
    ag_print(x);
    printf("g = df/dx = ");
    ag_print(g);
    printf("|g_i| = ");
    ag_print(ag_norm(g, 2, 1, (int[]){1}, false));

    /* P and dP/dtheta through the double backward. */
    ag_tensor *P = penalty(p, x);
    double p_val = 0;
    if (!P || ag_item(P, &p_val) != AG_OK || ag_backward(P, NULL) != AG_OK)
        return fail("penalty backward");
    printf("P = mean((|g_i| - 1)^2) = %.15f (grad_fn %s)\n", p_val, ag_grad_fn_name(P));

    printf("%-3s %6s %18s %14s %14s\n", "", "numel", "max |dP/dtheta|", "max |abs err|", "rel err");
    double max_abs = 0, max_fd = 0;
    for (int i = 0; i < N_PARAMS; i++) {
        int64_t n = ag_numel(p[i]);
        double ad[H * D], fd[H * D], abs_i = 0, scale_i = 0;
        ag_tensor *grad = ag_tensor_grad(p[i]);
        if (!grad) return fail("dP/dtheta missing");
        if (ag_to_host(grad, ad, (size_t)n * sizeof *ad) != AG_OK) return fail("copy dP/dtheta");
        if (finite_differences(p, i, x, fd) != AG_OK) return fail("finite differences");
        for (int64_t j = 0; j < n; j++) {
            abs_i = fmax(abs_i, fabs(ad[j] - fd[j]));
            scale_i = fmax(scale_i, fabs(fd[j]));
            if (isnan(ad[j]) || isnan(fd[j])) abs_i = INFINITY;
        }
        printf("%-3s %6lld %18.12f %14.3g %14.3g\n", k_names[i], (long long)n, scale_i, abs_i,
               scale_i > 0 ? abs_i / scale_i : abs_i);
        printf("    dP/d%s (double backward)  = ", k_names[i]);
        ag_print(grad);
        printf("    dP/d%s (finite diff.)     = ", k_names[i]);
        ag_print(ag_from_f64(fd, ag_ndim(p[i]), ag_shape(p[i])));
        max_abs = fmax(max_abs, abs_i);
        max_fd = fmax(max_fd, scale_i);
    }
    /* Relative to the largest entry: tiny entries make elementwise ratios meaningless. */
    double rel = max_fd > 0 ? max_abs / max_fd : max_abs;
    printf("max |dP/dtheta - finite differences| = %.3g, relative %.3g (tolerance %g)\n", max_abs,
           rel, TOL);
    bool ok = rel < TOL;

    /* The library's own check of theta -> P(theta), x fixed. */
    ag_status gc = ag_gradcheck(penalty, x, N_PARAMS, p, NULL);
    printf("gradcheck (float64, P w.r.t. W1, b1, W2, b2): %s%s%s\n",
           gc == AG_OK ? "passed" : "FAILED", gc == AG_OK ? "" : ": ",
           gc == AG_OK ? "" : ag_last_error());
    ok = ok && gc == AG_OK;
    printf("%s\n", ok ? "OK: the gradient penalty's dP/dtheta matches" : "FAILED");
    return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}

int main(void) {
    ag_scope *scope = ag_scope_begin(); /* owns every tensor of run() */
    int rc = run();
    ag_scope_end(scope);
    return rc;
}
