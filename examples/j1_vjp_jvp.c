/* Seed §J-1: vector-Jacobian and Jacobian-vector products of a small network R^4 -> R^3,
 *
 *   f(x) = tanh(W2 tanh(W1 x + b1) + b2),      W1 [5, 4], W2 [3, 5]
 *
 *   J v     ag_jvp: one forward pass carrying the tangent v (forward mode)
 *   u^T J   ag_vjp: one forward and one backward pass (reverse mode)
 *   J       ag_jacobian: one backward per output element (reverse mode), or one forward-mode
 *           pass per input element (forward_mode)
 *
 * Checked in float64: J v = J @ v, u^T J = u @ J, the two Jacobians agree, and J v matches
 * central differences (f(x + h v) - f(x - h v)) / 2h with h = 1e-6. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "ag/ag.h"

enum { N = 4, H = 5, M = 3 };
static const double FD_STEP = 1e-6; /* truncation ~h^2 |f'''| ~ 1e-12, rounding ~1e-16 / h */
static const double TOL_FD = 1e-7;
static const double TOL = 1e-12; /* products of one Jacobian computed two ways */

/* The network's parameters. */
typedef struct net {
    ag_tensor *w1, *b1, *w2, *b2;
} net;

static ag_tensor *forward(const net *p, ag_tensor *x) {
    ag_tensor *h = ag_tanh(ag_add(ag_matmul(p->w1, x), p->b1));
    return ag_tanh(ag_add(ag_matmul(p->w2, h), p->b2));
}

/* f as the functional transforms call it: input x [N], output [M]; user is the net. */
static ag_status f(void *user, int n_inputs, ag_tensor *const *inputs, int n_outputs,
                   ag_tensor **outputs) {
    (void)n_inputs, (void)n_outputs;
    outputs[0] = forward(user, inputs[0]);
    return outputs[0] ? AG_OK : ag_last_status();
}

/* f(x + s v) into out (host). */
static ag_status f_at(const net *p, const double *x, const double *v, double s, double *out) {
    double xs[N];
    for (int i = 0; i < N; i++) xs[i] = x[i] + s * v[i];
    ag_scope *scope = ag_scope_begin();
    ag_tensor *y = forward(p, ag_from_f64(xs, 1, (int64_t[]){N}));
    ag_status st = y ? ag_to_host(y, out, M * sizeof *out) : ag_last_status();
    ag_scope_end(scope);
    return st;
}

int main(void) {
    ag_scope *scope = ag_scope_begin(); /* owns every tensor below */
    ag_generator *gen = ag_generator_new(0);
    net p = {0};
    ag_tensor *x = NULL, *v = NULL, *u = NULL;
    if (gen) {
        p.w1 = ag_randn(gen, AG_F64, 2, (int64_t[]){H, N});
        p.b1 = ag_randn(gen, AG_F64, 1, (int64_t[]){H});
        p.w2 = ag_randn(gen, AG_F64, 2, (int64_t[]){M, H});
        p.b2 = ag_randn(gen, AG_F64, 1, (int64_t[]){M});
        x = ag_randn(gen, AG_F64, 1, (int64_t[]){N});
        v = ag_randn(gen, AG_F64, 1, (int64_t[]){N});
        u = ag_randn(gen, AG_F64, 1, (int64_t[]){M});
    }
    ag_generator_free(gen);
    ag_status st = p.w1 && p.b1 && p.w2 && p.b2 && x && v && u ? AG_OK : ag_last_status();

    ag_tensor *y = NULL, *jv = NULL, *uj = NULL, *jac_rev = NULL, *jac_fwd = NULL;
    const ag_functional_options forward_mode = {.forward_mode = true};
    if (st == AG_OK) st = ag_jvp(f, &p, 1, &x, &v, 1, NULL, &y, &jv);
    if (st == AG_OK) st = ag_vjp(f, &p, 1, &x, 1, &u, NULL, NULL, &uj);
    if (st == AG_OK) st = ag_jacobian(f, &p, 1, &x, 1, NULL, &jac_rev);
    if (st == AG_OK) st = ag_jacobian(f, &p, 1, &x, 1, &forward_mode, &jac_fwd);

    double xv[N], vv[N], uv[M], jv_ad[M], uj_ad[N], J[M][N], J_fwd[M][N], plus[M], minus[M];
    if (st == AG_OK) st = ag_to_host(x, xv, sizeof xv);
    if (st == AG_OK) st = ag_to_host(v, vv, sizeof vv);
    if (st == AG_OK) st = ag_to_host(u, uv, sizeof uv);
    if (st == AG_OK) st = ag_to_host(jv, jv_ad, sizeof jv_ad);
    if (st == AG_OK) st = ag_to_host(uj, uj_ad, sizeof uj_ad);
    if (st == AG_OK) st = ag_to_host(jac_rev, J, sizeof J);
    if (st == AG_OK) st = ag_to_host(jac_fwd, J_fwd, sizeof J_fwd);
    if (st == AG_OK) st = f_at(&p, xv, vv, FD_STEP, plus);
    if (st == AG_OK) st = f_at(&p, xv, vv, -FD_STEP, minus);
    if (st != AG_OK) {
        fprintf(stderr, "j1: %s\n", ag_last_error());
        ag_scope_end(scope);
        return EXIT_FAILURE;
    }

    printf("x = ");
    ag_print(x);
    printf("v = ");
    ag_print(v);
    printf("u = ");
    ag_print(u);
    printf("f(x) = ");
    ag_print(y);
    printf("J (reverse mode, %d backward passes) = ", M);
    ag_print(jac_rev);
    double max_jac = 0, max_jv = 0, max_fd = 0, max_uj = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) max_jac = fmax(max_jac, fabs(J_fwd[i][j] - J[i][j]));
    printf("J (forward mode, %d jvp passes): max |difference| = %.3g\n\n", N, max_jac);

    printf("%-3s %20s %20s %20s\n", "i", "J v (ag_jvp)", "J @ v", "finite diff.");
    for (int i = 0; i < M; i++) {
        double jv_mat = 0, fd = (plus[i] - minus[i]) / (2 * FD_STEP);
        for (int j = 0; j < N; j++) jv_mat += J[i][j] * vv[j];
        printf("%-3d %20.12f %20.12f %20.12f\n", i, jv_ad[i], jv_mat, fd);
        max_jv = fmax(max_jv, fabs(jv_ad[i] - jv_mat));
        max_fd = fmax(max_fd, fabs(jv_ad[i] - fd));
        if (isnan(jv_ad[i])) max_jv = max_fd = INFINITY;
    }
    printf("\n%-3s %20s %20s\n", "j", "u^T J (ag_vjp)", "u @ J");
    for (int j = 0; j < N; j++) {
        double uj_mat = 0;
        for (int i = 0; i < M; i++) uj_mat += uv[i] * J[i][j];
        printf("%-3d %20.12f %20.12f\n", j, uj_ad[j], uj_mat);
        max_uj = fmax(max_uj, fabs(uj_ad[j] - uj_mat));
        if (isnan(uj_ad[j])) max_uj = INFINITY;
    }
    printf("\nmax |J v - J @ v|               = %.3g\n", max_jv);
    printf("max |J v - finite differences|  = %.3g\n", max_fd);
    printf("max |u^T J - u @ J|             = %.3g\n", max_uj);
    printf("max |J forward - J reverse|     = %.3g\n", max_jac);
    ag_scope_end(scope);
    bool ok = max_jv < TOL && max_uj < TOL && max_jac < TOL && max_fd < TOL_FD;
    printf("%s\n", ok ? "OK: jvp, vjp and both Jacobians agree" : "FAILED");
    return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
