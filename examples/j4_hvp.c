/* Seed §J-4: Hessian-vector product the Pearlmutter way, with one double backward:
 *
 *   g = grad(f(x), x, create_graph)      Hv = grad(g, x, grad_outputs = v)
 *
 * for the non-quadratic f(x) = sum(x^3) + sum(sin x) * sum(x^2), whose Hessian is dense:
 *
 *   H_ij = (6 x_i + 2 S - Q sin x_i) [i == j] + 2 x_j cos x_i + 2 x_i cos x_j,
 *   S = sum(sin x), Q = sum(x^2).
 *
 * Checked against central differences of the gradient, H[:, j] ~ (grad f(x + h e_j) -
 * grad f(x - h e_j)) / 2h, and against the closed form above. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "ag/ag.h"

enum { N = 5 };
static const double FD_STEP = 1e-5; /* truncation ~h^2 |f'''|, rounding ~1e-16 / h */
static const double TOL = 1e-6;

static ag_tensor *f(ag_tensor *x) {
    ag_tensor *cubes = ag_sum(ag_pow_scalar(x, 3), 0, NULL, false);
    ag_tensor *coupling =
        ag_mul(ag_sum(ag_sin(x), 0, NULL, false), ag_sum(ag_pow_scalar(x, 2), 0, NULL, false));
    return ag_add(cubes, coupling);
}

/* grad f at the point xv, into out (host). */
static ag_status grad_at(const double *xv, double *out) {
    ag_scope *scope = ag_scope_begin();
    ag_tensor *x = ag_from_f64(xv, 1, (int64_t[]){N});
    ag_status st = x ? ag_set_requires_grad(x, true) : ag_last_status();
    ag_tensor *y = st == AG_OK ? f(x) : NULL, *g = NULL;
    if (st == AG_OK)
        st = y ? ag_grad(1, &y, 1, &x, NULL, false, false, false, &g) : ag_last_status();
    if (st == AG_OK) st = ag_to_host(g, out, N * sizeof *out);
    ag_scope_end(scope);
    return st;
}

/* H v by central differences of the gradient, one Hessian column per coordinate. */
static ag_status hvp_finite_differences(const double *xv, const double *v, double *hv) {
    double col[N], plus[N], minus[N], xp[N];
    for (int i = 0; i < N; i++) hv[i] = 0;
    for (int j = 0; j < N; j++) {
        for (int i = 0; i < N; i++) xp[i] = xv[i];
        xp[j] = xv[j] + FD_STEP;
        ag_status st = grad_at(xp, plus);
        xp[j] = xv[j] - FD_STEP;
        if (st == AG_OK) st = grad_at(xp, minus);
        if (st != AG_OK) return st;
        for (int i = 0; i < N; i++) col[i] = (plus[i] - minus[i]) / (2 * FD_STEP);
        for (int i = 0; i < N; i++) hv[i] += col[i] * v[j];
    }
    return AG_OK;
}

/* H v from the closed-form Hessian in the header comment. */
static void hvp_closed_form(const double *x, const double *v, double *hv) {
    double s = 0, q = 0;
    for (int i = 0; i < N; i++) s += sin(x[i]), q += x[i] * x[i];
    for (int i = 0; i < N; i++) {
        hv[i] = 0;
        for (int j = 0; j < N; j++) {
            double h = 2 * x[j] * cos(x[i]) + 2 * x[i] * cos(x[j]);
            if (i == j) h += 6 * x[i] + 2 * s - q * sin(x[i]);
            hv[i] += h * v[j];
        }
    }
}

int main(void) {
    ag_scope *scope = ag_scope_begin(); /* owns every tensor below */
    ag_generator *gen = ag_generator_new(0);
    ag_tensor *x = gen ? ag_randn(gen, AG_F64, 1, (int64_t[]){N}) : NULL;
    ag_tensor *v = gen ? ag_randn(gen, AG_F64, 1, (int64_t[]){N}) : NULL;
    ag_generator_free(gen);
    ag_status st = x && v ? ag_set_requires_grad(x, true) : ag_last_status();

    /* Pearlmutter: the first backward is recorded, the second runs through it. */
    ag_tensor *y = st == AG_OK ? f(x) : NULL, *g = NULL, *hv = NULL;
    if (st == AG_OK) st = y ? ag_grad(1, &y, 1, &x, NULL, true, true, false, &g) : ag_last_status();
    if (st == AG_OK) st = ag_grad(1, &g, 1, &x, &v, false, false, false, &hv);

    double xv[N], vv[N], hv_ad[N], hv_fd[N], hv_cf[N];
    if (st == AG_OK) st = ag_to_host(x, xv, sizeof xv);
    if (st == AG_OK) st = ag_to_host(v, vv, sizeof vv);
    if (st == AG_OK) st = ag_to_host(hv, hv_ad, sizeof hv_ad);
    if (st == AG_OK) st = hvp_finite_differences(xv, vv, hv_fd);
    if (st != AG_OK) {
        fprintf(stderr, "j4: %s\n", ag_last_error());
        ag_scope_end(scope);
        return EXIT_FAILURE;
    }
    hvp_closed_form(xv, vv, hv_cf);

    printf("x = ");
    ag_print(x);
    printf("v = ");
    ag_print(v);
    printf("%-3s %20s %20s %20s\n", "i", "Hv (double backward)", "Hv (finite diff.)",
           "Hv (closed form)");
    double max_fd = 0, max_cf = 0;
    for (int i = 0; i < N; i++) {
        printf("%-3d %20.12f %20.12f %20.12f\n", i, hv_ad[i], hv_fd[i], hv_cf[i]);
        max_fd = fmax(max_fd, fabs(hv_ad[i] - hv_fd[i]));
        max_cf = fmax(max_cf, fabs(hv_ad[i] - hv_cf[i]));
        if (isnan(hv_ad[i])) max_fd = max_cf = INFINITY;
    }
    printf("max |Hv - finite differences| = %.3g\n", max_fd);
    printf("max |Hv - closed form|        = %.3g\n", max_cf);
    ag_scope_end(scope);
    bool ok = max_fd < TOL && max_cf < TOL;
    printf("%s\n", ok ? "OK: Pearlmutter HVP matches" : "FAILED");
    return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
