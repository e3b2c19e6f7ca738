/* The functional transforms against torch.autograd.functional: vjp, jvp (forward mode),
 * jacobian in both modes, hessian, hvp and vhp, checked against closed-form derivatives
 * written out below and against each other; strict and create_graph; errors of the user's
 * function and of the arguments; an open dual level; how often each transform calls the
 * function. float64 on the default backend (AG_BACKEND), read back with ag_to_host. */
#include <check.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "ag/ag.h"
#include "test_util.h"

/* float64 results are exact up to a few roundings. */
static const double TOL = 1e-10;

/* Asserts that a call returned AG_OK, naming it and the error otherwise. */
#define CK_OK(call)                                                                                \
    do {                                                                                           \
        ag_status st_ = (call);                                                                    \
        ck_assert_msg(st_ == AG_OK, "%s: %s (%s)", #call, ag_status_name(st_), ag_last_error());   \
    } while (0)

/* Asserts status got is st, the last error mentions words, then clears it. */
static void assert_error(ag_status got, ag_status st, const char *words) {
    ck_assert_msg(got == st, "status %s, expected %s (%s)", ag_status_name(got), ag_status_name(st),
                  ag_last_error());
    ck_assert_int_eq(ag_last_status(), st);
    ck_assert_msg(strstr(ag_last_error(), words), "message '%s' lacks '%s'", ag_last_error(),
                  words);
    ag_clear_error();
}

/* Asserts t has the shape and holds want within TOL. */
static void assert_values(const ag_tensor *t, int ndim, const int64_t *shape, const double *want) {
    char msg[512] = "";
    ck_assert_msg(t, "tensor is NULL (%s)", ag_last_error());
    ck_assert_msg(tu_values_are(t, ndim, shape, want, TOL, TOL, msg, sizeof msg, NULL), "%s", msg);
}

/* Asserts t is zeros of the shape. */
static void assert_zeros(const ag_tensor *t, int ndim, const int64_t *shape) {
    static const double zeros[64];
    ck_assert_int_le(tu_numel(ndim, shape), 64);
    assert_values(t, ndim, shape, zeros);
}

/* Asserts two tensors of one shape agree within TOL. */
static void assert_same(const ag_tensor *a, const ag_tensor *b) {
    double d = tu_max_abs_diff(a, b);
    ck_assert_msg(d >= 0 && d <= TOL, "tensors differ by %g (-1: shapes differ)", d);
}

/* t's n values on the host. */
static void read_values(const ag_tensor *t, double *out, int64_t n) {
    ck_assert_msg(t, "tensor is NULL (%s)", ag_last_error());
    ck_assert_int_eq(ag_numel(t), n);
    ck_assert_int_eq(tu_read(t, out, n), AG_OK);
}

/* A float64 vector of n values. */
static ag_tensor *vec(int64_t n, const double *v) {
    ag_tensor *t = tu_tensor(AG_F64, 1, TU_SHAPE(n), v);
    ck_assert_msg(t, "%s", ag_last_error());
    return t;
}

/* A float64 leaf requiring grad. */
static ag_tensor *leaf(int64_t n, const double *v) {
    ag_tensor *t = vec(n, v);
    ck_assert_int_eq(ag_set_requires_grad(t, true), AG_OK);
    return t;
}

/* The gradient of sum(t) with respect to x. */
static ag_tensor *grad_of_sum(ag_tensor *t, ag_tensor *x) {
    ag_tensor *s = ag_sum(t, 0, NULL, false), *g = NULL;
    ck_assert_msg(s, "%s", ag_last_error());
    CK_OK(ag_grad(1, &s, 1, &x, NULL, false, false, false, &g));
    return g;
}

/* Counts one call of a user function whose user pointer is an int counter (or NULL). */
static void count_call(void *user) {
    if (user) ++*(int *)user;
}

/* ---- the functions differentiated ---- */

/* a [2,3], b [3] -> (a @ b [2], sin(a) * b [2,3], sum(b^2) []): several inputs and outputs
 * of different ranks; the last output does not depend on a. */
static ag_status multi_fn(void *user, int n_in, ag_tensor *const *in, int n_out, ag_tensor **out) {
    count_call(user);
    if (n_in != 2 || n_out != 3) return AG_ERR_INVALID_ARG;
    out[0] = ag_matmul(in[0], in[1]);
    out[1] = ag_mul(ag_sin(in[0]), in[1]);
    out[2] = ag_sum(ag_mul(in[1], in[1]), 0, NULL, false);
    return out[0] && out[1] && out[2] ? AG_OK : ag_last_status();
}

static const double A0[6] = {0.3, -1.2, 0.7, 1.5, -0.4, 2.1};
static const double B0[3] = {0.9, -0.6, 1.3};
static const int OUT_NDIM[3] = {1, 2, 0};
static const int64_t OUT_SHAPE[3][2] = {{2}, {2, 3}, {0}};
static const int64_t OUT_NUMEL[3] = {2, 6, 1};
static const int IN_NDIM[2] = {2, 1};
static const int64_t IN_SHAPE[2][2] = {{2, 3}, {3}};
static const int64_t IN_NUMEL[2] = {6, 3};

/* multi_fn's inputs (A0, B0). */
static void multi_inputs(ag_tensor **in) {
    in[0] = tu_tensor(AG_F64, 2, TU_SHAPE(2, 3), A0);
    in[1] = vec(3, B0);
    ck_assert_msg(in[0] && in[1], "%s", ag_last_error());
}

/* Block (o, i) of multi_fn's Jacobian at (A0, B0), closed form, as a row-major
 * [numel(output o), numel(input i)] matrix (at most 36 values). */
static void multi_block(int o, int i, double *J) {
    const int64_t rows = OUT_NUMEL[o], cols = IN_NUMEL[i];
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            double v = 0;
            if (o == 0 && i == 0) /* d(a b)_r / da_jl = [r == j] b_l */
                v = r == c / 3 ? B0[c % 3] : 0;
            else if (o == 0 && i == 1) /* d(a b)_r / db_l = a_rl */
                v = A0[r * 3 + c];
            else if (o == 1 && i == 0) /* d(sin(a_ik) b_k) / da_jl = [ik == jl] cos(a_ik) b_k */
                v = r == c ? cos(A0[r]) * B0[r % 3] : 0;
            else if (o == 1 && i == 1) /* d(sin(a_ik) b_k) / db_l = [k == l] sin(a_ik) */
                v = r % 3 == c ? sin(A0[r]) : 0;
            else if (o == 2 && i == 1) /* d sum(b^2) / db_l = 2 b_l; output 2 ignores a */
                v = 2 * B0[c];
            J[r * cols + c] = v;
        }
}

/* out.shape + in.shape of block (o, i) into shape; returns its ndim. */
static int multi_block_shape(int o, int i, int64_t *shape) {
    memcpy(shape, OUT_SHAPE[o], (size_t)OUT_NDIM[o] * sizeof *shape);
    memcpy(shape + OUT_NDIM[o], IN_SHAPE[i], (size_t)IN_NDIM[i] * sizeof *shape);
    return OUT_NDIM[o] + IN_NDIM[i];
}

/* sum(x^3), a single-element output. */
static ag_status cube_sum_fn(void *user, int n_in, ag_tensor *const *in, int n_out,
                             ag_tensor **out) {
    count_call(user);
    (void)n_in, (void)n_out;
    out[0] = ag_sum(ag_pow_scalar(in[0], 3), 0, NULL, false);
    return out[0] ? AG_OK : ag_last_status();
}

/* sin(s) of a single-element s. */
static ag_status sin_fn(void *user, int n_in, ag_tensor *const *in, int n_out, ag_tensor **out) {
    count_call(user);
    (void)n_in, (void)n_out;
    out[0] = ag_sin(in[0]);
    return out[0] ? AG_OK : ag_last_status();
}

/* x * sin(x), elementwise. */
static ag_status x_sin_x_fn(void *user, int n_in, ag_tensor *const *in, int n_out,
                            ag_tensor **out) {
    count_call(user);
    (void)n_in, (void)n_out;
    out[0] = ag_mul(in[0], ag_sin(in[0]));
    return out[0] ? AG_OK : ag_last_status();
}

/* x^3, elementwise. */
static ag_status cubes_fn(void *user, int n_in, ag_tensor *const *in, int n_out, ag_tensor **out) {
    count_call(user);
    (void)n_in, (void)n_out;
    out[0] = ag_pow_scalar(in[0], 3);
    return out[0] ? AG_OK : ag_last_status();
}

/* sum(x^4). */
static ag_status quartic_fn(void *user, int n_in, ag_tensor *const *in, int n_out,
                            ag_tensor **out) {
    count_call(user);
    (void)n_in, (void)n_out;
    out[0] = ag_sum(ag_pow_scalar(in[0], 4), 0, NULL, false);
    return out[0] ? AG_OK : ag_last_status();
}

/* f(x, y) = sum(x^2 y) + sum(sin x) for x, y [3]:
 *   df/dx = 2 x y + cos x,  df/dy = x^2,
 *   H_xx = diag(2 y - sin x),  H_xy = H_yx = diag(2 x),  H_yy = 0. */
static ag_status hess_fn(void *user, int n_in, ag_tensor *const *in, int n_out, ag_tensor **out) {
    count_call(user);
    (void)n_in, (void)n_out;
    ag_tensor *x = in[0], *y = in[1];
    out[0] =
        ag_add(ag_sum(ag_mul(ag_mul(x, x), y), 0, NULL, false), ag_sum(ag_sin(x), 0, NULL, false));
    return out[0] ? AG_OK : ag_last_status();
}

static const double HX[3] = {0.5, -1.2, 2.0};
static const double HY[3] = {1.5, -0.7, 0.3};

/* f(x, s) = s sum(x^2) for x [2,2] and a 0-dim s: H_xx = 2 s I [2,2,2,2], H_xs = H_sx = 2 x
 * [2,2], H_ss = 0 []. */
static ag_status scaled_square_fn(void *user, int n_in, ag_tensor *const *in, int n_out,
                                  ag_tensor **out) {
    count_call(user);
    (void)n_in, (void)n_out;
    out[0] = ag_mul(in[1], ag_sum(ag_mul(in[0], in[0]), 0, NULL, false));
    return out[0] ? AG_OK : ag_last_status();
}

/* sum(x^2), whatever the other inputs: independent of inputs 1.. */
static ag_status only_x_fn(void *user, int n_in, ag_tensor *const *in, int n_out, ag_tensor **out) {
    count_call(user);
    (void)n_in, (void)n_out;
    out[0] = ag_sum(ag_mul(in[0], in[0]), 0, NULL, false);
    return out[0] ? AG_OK : ag_last_status();
}

/* sum(x^2) + sum(y): depends on y, but its gradient with respect to y is constant. */
static ag_status linear_in_y_fn(void *user, int n_in, ag_tensor *const *in, int n_out,
                                ag_tensor **out) {
    count_call(user);
    (void)n_in, (void)n_out;
    out[0] = ag_add(ag_sum(ag_mul(in[0], in[0]), 0, NULL, false), ag_sum(in[1], 0, NULL, false));
    return out[0] ? AG_OK : ag_last_status();
}

/* ones [2], independent of the inputs (no history). */
static ag_status constant_fn(void *user, int n_in, ag_tensor *const *in, int n_out,
                             ag_tensor **out) {
    count_call(user);
    (void)n_in, (void)in, (void)n_out;
    out[0] = ag_ones(AG_F64, 1, TU_SHAPE(2));
    return out[0] ? AG_OK : ag_last_status();
}

/* Fails inside an op after making a temporary: [3] @ [5]. */
static ag_status failing_op_fn(void *user, int n_in, ag_tensor *const *in, int n_out,
                               ag_tensor **out) {
    count_call(user);
    (void)n_in, (void)n_out;
    ag_tensor *squares = ag_mul(in[0], in[0]);
    out[0] = ag_matmul(squares, ag_ones(AG_F64, 1, TU_SHAPE(5)));
    return out[0] ? AG_OK : ag_last_status();
}

/* Fails without a message and without touching a device. */
static ag_status silent_fail_fn(void *user, int n_in, ag_tensor *const *in, int n_out,
                                ag_tensor **out) {
    count_call(user);
    (void)n_in, (void)in, (void)n_out, (void)out;
    return AG_ERR_UNSUPPORTED;
}

/* Claims success without storing its output. */
static ag_status missing_output_fn(void *user, int n_in, ag_tensor *const *in, int n_out,
                                   ag_tensor **out) {
    count_call(user);
    (void)n_in, (void)in, (void)n_out, (void)out;
    return AG_OK;
}

/* ---- jacobian, jvp, vjp against the closed form ---- */

START_TEST(jacobian_both_modes_match_closed_form_blocks) {
    ag_tensor *in[2], *rev[6], *fwd[6];
    multi_inputs(in);
    const ag_functional_options forward = {.forward_mode = true};
    CK_OK(ag_jacobian(multi_fn, NULL, 2, in, 3, NULL, rev));
    CK_OK(ag_jacobian(multi_fn, NULL, 2, in, 3, &forward, fwd));
    for (int o = 0; o < 3; o++)
        for (int i = 0; i < 2; i++) {
            double J[36];
            int64_t shape[4];
            int ndim = multi_block_shape(o, i, shape);
            multi_block(o, i, J);
            ag_tensor *r = rev[o * 2 + i], *f = fwd[o * 2 + i];
            assert_values(r, ndim, shape, J);
            assert_values(f, ndim, shape, J);
            assert_same(r, f);
            ck_assert(!ag_requires_grad(r) && !ag_requires_grad(f));
            ck_assert_int_eq(ag_dtype_of(r), AG_F64);
            ck_assert_int_eq(ag_device_of(r).backend, ag_default_device().backend);
            ck_assert_int_eq(ag_device_of(f).backend, ag_default_device().backend);
        }
    ck_assert(!ag_dual_level_is_open());
}
END_TEST

/* J v for multi_fn from the closed-form blocks, or (jac non-NULL) from ag's blocks. */
static void jacobian_times(ag_tensor *const *jac, const double *const *v, double (*jv)[6]) {
    for (int o = 0; o < 3; o++) {
        for (int64_t r = 0; r < OUT_NUMEL[o]; r++) jv[o][r] = 0;
        for (int i = 0; i < 2; i++) {
            double J[36];
            if (jac)
                read_values(jac[o * 2 + i], J, OUT_NUMEL[o] * IN_NUMEL[i]);
            else
                multi_block(o, i, J);
            for (int64_t r = 0; r < OUT_NUMEL[o]; r++)
                for (int64_t c = 0; c < IN_NUMEL[i]; c++)
                    jv[o][r] += J[r * IN_NUMEL[i] + c] * v[i][c];
        }
    }
}

/* u^T J for multi_fn, as jacobian_times. */
static void times_jacobian(ag_tensor *const *jac, const double *const *u, double (*uj)[6]) {
    for (int i = 0; i < 2; i++) {
        for (int64_t c = 0; c < IN_NUMEL[i]; c++) uj[i][c] = 0;
        for (int o = 0; o < 3; o++) {
            double J[36];
            if (jac)
                read_values(jac[o * 2 + i], J, OUT_NUMEL[o] * IN_NUMEL[i]);
            else
                multi_block(o, i, J);
            for (int64_t r = 0; r < OUT_NUMEL[o]; r++)
                for (int64_t c = 0; c < IN_NUMEL[i]; c++)
                    uj[i][c] += u[o][r] * J[r * IN_NUMEL[i] + c];
        }
    }
}

START_TEST(jvp_equals_jacobian_times_v) {
    static const double VA[6] = {0.5, -1, 2, 0.25, 1.5, -0.75}, VB[3] = {-0.3, 0.8, 1.1};
    ag_tensor *in[2], *outs[3], *jv[3], *jac[6];
    multi_inputs(in);
    ag_tensor *v[2] = {tu_tensor(AG_F64, 2, TU_SHAPE(2, 3), VA), vec(3, VB)};
    CK_OK(ag_jvp(multi_fn, NULL, 2, in, v, 3, NULL, outs, jv));
    CK_OK(ag_jacobian(multi_fn, NULL, 2, in, 3, NULL, jac)); /* reverse mode */
    const double *vv[2] = {VA, VB};
    double want[3][6], from_jac[3][6];
    jacobian_times(NULL, vv, want);
    jacobian_times(jac, vv, from_jac);
    for (int o = 0; o < 3; o++) {
        assert_values(jv[o], OUT_NDIM[o], OUT_SHAPE[o], want[o]);
        for (int64_t r = 0; r < OUT_NUMEL[o]; r++)
            ck_assert_msg(fabs(from_jac[o][r] - want[o][r]) <= TOL, "output %d row %lld", o,
                          (long long)r);
        ck_assert(!ag_requires_grad(jv[o]) && !ag_requires_grad(outs[o]));
    }
    /* The outputs are f(inputs), without tangents once the transform has closed its level. */
    double ab[2] = {0}, bb = 0;
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < 3; c++) ab[r] += A0[r * 3 + c] * B0[c];
    for (int c = 0; c < 3; c++) bb += B0[c] * B0[c];
    assert_values(outs[0], 1, TU_SHAPE(2), ab);
    assert_values(outs[2], 0, NULL, &bb);
    ck_assert(!ag_dual_level_is_open());
    /* outputs may be NULL. */
    CK_OK(ag_jvp(multi_fn, NULL, 2, in, v, 3, NULL, NULL, jv));
    assert_values(jv[1], 2, TU_SHAPE(2, 3), want[1]);
}
END_TEST

START_TEST(vjp_equals_u_times_jacobian) {
    static const double U0[2] = {0.7, -1.1}, U1[6] = {0.2, -0.4, 1.3, -2.0, 0.6, 0.9};
    ag_tensor *in[2], *outs[3], *g[2], *jac[6];
    multi_inputs(in);
    ag_tensor *u[3] = {vec(2, U0), tu_tensor(AG_F64, 2, TU_SHAPE(2, 3), U1), NULL};
    /* A NULL entry for the single-element output weighs it by 1. */
    CK_OK(ag_vjp(multi_fn, NULL, 2, in, 3, u, NULL, outs, g));
    const ag_functional_options forward = {.forward_mode = true};
    CK_OK(ag_jacobian(multi_fn, NULL, 2, in, 3, &forward, jac));
    double one = 1, want[2][6], from_jac[2][6];
    const double *uu[3] = {U0, U1, &one};
    times_jacobian(NULL, uu, want);
    times_jacobian(jac, uu, from_jac);
    for (int i = 0; i < 2; i++) {
        assert_values(g[i], IN_NDIM[i], IN_SHAPE[i], want[i]);
        for (int64_t c = 0; c < IN_NUMEL[i]; c++)
            ck_assert_msg(fabs(from_jac[i][c] - want[i][c]) <= TOL, "input %d column %lld", i,
                          (long long)c);
        ck_assert(!ag_requires_grad(g[i]));
    }
    double ab[2] = {0};
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < 3; c++) ab[r] += A0[r * 3 + c] * B0[c];
    assert_values(outs[0], 1, TU_SHAPE(2), ab);
    ck_assert(!ag_requires_grad(outs[0]));
    /* A 0-dim weight for the scalar output; outputs NULL. */
    double w = -2.5;
    u[2] = ag_scalar(AG_F64, w);
    uu[2] = &w;
    times_jacobian(NULL, uu, want);
    CK_OK(ag_vjp(multi_fn, NULL, 2, in, 3, u, NULL, NULL, g));
    assert_values(g[0], 2, TU_SHAPE(2, 3), want[0]);
    assert_values(g[1], 1, TU_SHAPE(3), want[1]);
}
END_TEST

START_TEST(v_may_be_null_only_for_single_elements) {
    ag_tensor *x = vec(3, TU_VALUES(0.5, -1, 2)), *g = NULL, *in[2], *res[3];
    CK_OK(ag_vjp(cube_sum_fn, NULL, 1, &x, 1, NULL, NULL, NULL, &g));
    assert_values(g, 1, TU_SHAPE(3), TU_VALUES(3 * 0.25, 3 * 1, 3 * 4));
    multi_inputs(in);
    assert_error(ag_vjp(multi_fn, NULL, 2, in, 3, NULL, NULL, NULL, res), AG_ERR_INVALID_ARG,
                 "v can only be NULL for a single-element output");
    ag_tensor *u[3] = {NULL, ag_ones(AG_F64, 2, TU_SHAPE(2, 3)), NULL};
    assert_error(ag_vjp(multi_fn, NULL, 2, in, 3, u, NULL, NULL, res), AG_ERR_INVALID_ARG,
                 "output 0");
    u[0] = ag_ones(AG_F64, 1, TU_SHAPE(2));
    u[1] = ag_ones(AG_F64, 1, TU_SHAPE(6)); /* output 1 is [2, 3] */
    assert_error(ag_vjp(multi_fn, NULL, 2, in, 3, u, NULL, NULL, res), AG_ERR_SHAPE, "v[1]");
    /* jvp: v is per input. */
    assert_error(ag_jvp(multi_fn, NULL, 2, in, NULL, 3, NULL, NULL, res), AG_ERR_INVALID_ARG,
                 "single-element input");
    ag_tensor *v[2] = {ag_ones(AG_F64, 2, TU_SHAPE(2, 3)), ag_ones(AG_F64, 1, TU_SHAPE(2))};
    assert_error(ag_jvp(multi_fn, NULL, 2, in, v, 3, NULL, NULL, res), AG_ERR_SHAPE, "v[1]");
    ck_assert(!ag_dual_level_is_open());
    /* A 0-dim or one-element input needs no v: the tangent is 1. */
    ag_tensor *s = ag_scalar(AG_F64, 0.4), *jv = NULL, *out = NULL;
    CK_OK(ag_jvp(sin_fn, NULL, 1, &s, NULL, 1, NULL, &out, &jv));
    assert_values(jv, 0, NULL, TU_VALUES(cos(0.4)));
    assert_values(out, 0, NULL, TU_VALUES(sin(0.4)));
    ag_tensor *s1 = vec(1, TU_VALUES(-0.9)), *none[1] = {NULL};
    CK_OK(ag_jvp(sin_fn, NULL, 1, &s1, none, 1, NULL, NULL, &jv));
    assert_values(jv, 1, TU_SHAPE(1), TU_VALUES(cos(-0.9)));
}
END_TEST

/* ---- second order ---- */

START_TEST(hessian_matches_closed_form_blocks) {
    ag_tensor *in[2] = {vec(3, HX), vec(3, HY)}, *H[4];
    CK_OK(ag_hessian(hess_fn, NULL, 2, in, NULL, H));
    double xx[9] = {0}, xy[9] = {0};
    for (int k = 0; k < 3; k++) {
        xx[k * 4] = 2 * HY[k] - sin(HX[k]);
        xy[k * 4] = 2 * HX[k];
    }
    assert_values(H[0], 2, TU_SHAPE(3, 3), xx);
    assert_values(H[1], 2, TU_SHAPE(3, 3), xy);
    assert_values(H[2], 2, TU_SHAPE(3, 3), xy);
    assert_zeros(H[3], 2, TU_SHAPE(3, 3));
    for (int b = 0; b < 4; b++) ck_assert(!ag_requires_grad(H[b]));

    /* Blocks of inputs of different ranks: inputs[i].shape + inputs[j].shape. */
    static const double X[4] = {0.5, -1, 2, 0.25};
    const double s = 1.75;
    ag_tensor *in2[2] = {tu_tensor(AG_F64, 2, TU_SHAPE(2, 2), X), ag_scalar(AG_F64, s)};
    CK_OK(ag_hessian(scaled_square_fn, NULL, 2, in2, NULL, H));
    double hxx[16] = {0}, hxs[4];
    for (int k = 0; k < 4; k++) {
        hxx[k * 5] = 2 * s;
        hxs[k] = 2 * X[k];
    }
    assert_values(H[0], 4, TU_SHAPE(2, 2, 2, 2), hxx);
    assert_values(H[1], 2, TU_SHAPE(2, 2), hxs);
    assert_values(H[2], 2, TU_SHAPE(2, 2), hxs);
    assert_zeros(H[3], 0, NULL);
}
END_TEST

START_TEST(hvp_equals_vhp_equals_hessian_times_v) {
    static const double VX[3] = {1, 0.5, -0.25}, VY[3] = {-2, 0.75, 1.5};
    ag_tensor *in[2] = {vec(3, HX), vec(3, HY)}, *v[2] = {vec(3, VX), vec(3, VY)};
    ag_tensor *hv[2], *vh[2], *H[4], *f_hvp = NULL, *f_vhp = NULL;
    CK_OK(ag_hvp(hess_fn, NULL, 2, in, v, NULL, &f_hvp, hv));
    CK_OK(ag_vhp(hess_fn, NULL, 2, in, v, NULL, &f_vhp, vh));
    CK_OK(ag_hessian(hess_fn, NULL, 2, in, NULL, H));
    /* Closed form: (H v)_x = (2 y - sin x) v_x + 2 x v_y, (H v)_y = 2 x v_x. */
    double want[2][3], f = 0;
    for (int k = 0; k < 3; k++) {
        want[0][k] = (2 * HY[k] - sin(HX[k])) * VX[k] + 2 * HX[k] * VY[k];
        want[1][k] = 2 * HX[k] * VX[k];
        f += HX[k] * HX[k] * HY[k] + sin(HX[k]);
    }
    /* ag's Hessian times v. */
    const double *vv[2] = {VX, VY};
    for (int i = 0; i < 2; i++) {
        double hv_host[3] = {0};
        for (int j = 0; j < 2; j++) {
            double block[9];
            read_values(H[i * 2 + j], block, 9);
            for (int r = 0; r < 3; r++)
                for (int c = 0; c < 3; c++) hv_host[r] += block[r * 3 + c] * vv[j][c];
        }
        assert_values(hv[i], 1, TU_SHAPE(3), want[i]);
        assert_values(vh[i], 1, TU_SHAPE(3), want[i]);
        assert_values(hv[i], 1, TU_SHAPE(3), hv_host);
        assert_same(hv[i], vh[i]);
        ck_assert(!ag_requires_grad(hv[i]) && !ag_requires_grad(vh[i]));
    }
    assert_values(f_hvp, 0, NULL, &f);
    assert_values(f_vhp, 0, NULL, &f);
    ck_assert(!ag_dual_level_is_open());
    /* output may be NULL. */
    CK_OK(ag_hvp(hess_fn, NULL, 2, in, v, NULL, NULL, hv));
    CK_OK(ag_vhp(hess_fn, NULL, 2, in, v, NULL, NULL, vh));
    assert_values(hv[0], 1, TU_SHAPE(3), want[0]);
    assert_values(vh[1], 1, TU_SHAPE(3), want[1]);
}
END_TEST

/* ---- strict ---- */

START_TEST(strict_refuses_independent_outputs_nonstrict_gives_zeros) {
    const ag_functional_options strict = {.strict = true};
    const ag_functional_options strict_fwd = {.strict = true, .forward_mode = true};
    ag_tensor *x = vec(3, HX), *y = vec(3, HY), *xy[2] = {x, y}, *r[6];
    ag_tensor *v[2] = {vec(3, TU_VALUES(1, 2, 3)), vec(3, TU_VALUES(-1, 0.5, 2))};

    /* vjp: y unused. */
    assert_error(ag_vjp(only_x_fn, NULL, 2, xy, 1, NULL, &strict, NULL, r), AG_ERR_NO_GRAD,
                 "strict");
    CK_OK(ag_vjp(only_x_fn, NULL, 2, xy, 1, NULL, NULL, NULL, r));
    assert_values(r[0], 1, TU_SHAPE(3), TU_VALUES(2 * HX[0], 2 * HX[1], 2 * HX[2]));
    assert_zeros(r[1], 1, TU_SHAPE(3));
    /* vjp, jvp, jacobian: an output without history. */
    ag_tensor *w = ag_ones(AG_F64, 1, TU_SHAPE(2));
    assert_error(ag_vjp(constant_fn, NULL, 1, &x, 1, &w, &strict, NULL, r), AG_ERR_NO_GRAD,
                 "strict");
    CK_OK(ag_vjp(constant_fn, NULL, 1, &x, 1, &w, NULL, NULL, r));
    assert_zeros(r[0], 1, TU_SHAPE(3));
    assert_error(ag_jvp(constant_fn, NULL, 1, &x, v, 1, &strict, NULL, r), AG_ERR_NO_GRAD,
                 "strict");
    ck_assert(!ag_dual_level_is_open());
    CK_OK(ag_jvp(constant_fn, NULL, 1, &x, v, 1, NULL, NULL, r));
    assert_zeros(r[0], 1, TU_SHAPE(2));
    assert_error(ag_jacobian(constant_fn, NULL, 1, &x, 1, &strict, r), AG_ERR_NO_GRAD, "strict");
    assert_error(ag_jacobian(constant_fn, NULL, 1, &x, 1, &strict_fwd, r), AG_ERR_NO_GRAD,
                 "strict");
    ck_assert(!ag_dual_level_is_open());
    CK_OK(ag_jacobian(constant_fn, NULL, 1, &x, 1, NULL, r));
    assert_zeros(r[0], 2, TU_SHAPE(2, 3));

    /* jacobian: output 2 of multi_fn ignores input 0 (the non-strict zeros are checked in
     * jacobian_both_modes_match_closed_form_blocks). */
    ag_tensor *in[2];
    multi_inputs(in);
    assert_error(ag_jacobian(multi_fn, NULL, 2, in, 3, &strict, r), AG_ERR_NO_GRAD, "strict");
    assert_error(ag_jacobian(multi_fn, NULL, 2, in, 3, &strict_fwd, r), AG_ERR_NO_GRAD, "strict");

    /* Second order: y unused, or used linearly (its gradient is constant). */
    for (int k = 0; k < 2; k++) {
        ag_tensor_fn fn = k ? linear_in_y_fn : only_x_fn;
        assert_error(ag_hvp(fn, NULL, 2, xy, v, &strict, NULL, r), AG_ERR_NO_GRAD, "strict");
        ck_assert(!ag_dual_level_is_open());
        assert_error(ag_vhp(fn, NULL, 2, xy, v, &strict, NULL, r), AG_ERR_NO_GRAD, "strict");
        assert_error(ag_hessian(fn, NULL, 2, xy, &strict, r), AG_ERR_NO_GRAD, "strict");
        /* Non-strict: H = [[2 I, 0], [0, 0]]. */
        CK_OK(ag_hvp(fn, NULL, 2, xy, v, NULL, NULL, r));
        assert_values(r[0], 1, TU_SHAPE(3), TU_VALUES(2, 4, 6));
        assert_zeros(r[1], 1, TU_SHAPE(3));
        CK_OK(ag_vhp(fn, NULL, 2, xy, v, NULL, NULL, r));
        assert_values(r[0], 1, TU_SHAPE(3), TU_VALUES(2, 4, 6));
        assert_zeros(r[1], 1, TU_SHAPE(3));
        CK_OK(ag_hessian(fn, NULL, 2, xy, NULL, r));
        assert_values(r[0], 2, TU_SHAPE(3, 3), TU_VALUES(2, 0, 0, 0, 2, 0, 0, 0, 2));
        for (int b = 1; b < 4; b++) assert_zeros(r[b], 2, TU_SHAPE(3, 3));
    }
}
END_TEST

/* ---- create_graph ---- */

START_TEST(create_graph_results_differentiate_back_to_the_inputs) {
    static const double X[3] = {0.5, -1.2, 2.0}, V[3] = {1, -0.5, 0.25};
    const ag_functional_options cg = {.create_graph = true};
    const ag_functional_options cg_fwd = {.create_graph = true, .forward_mode = true};
    const ag_functional_options fwd = {.forward_mode = true};
    ag_tensor *x = leaf(3, X), *v = vec(3, V), *out = NULL, *r = NULL, *jac = NULL;
    /* f = x sin x: f' = sin x + x cos x, f'' = 2 cos x - x sin x. */
    double first[3], second[3];
    for (int k = 0; k < 3; k++) {
        first[k] = V[k] * (sin(X[k]) + X[k] * cos(X[k]));
        second[k] = V[k] * (2 * cos(X[k]) - X[k] * sin(X[k]));
    }
    CK_OK(ag_vjp(x_sin_x_fn, NULL, 1, &x, 1, &v, &cg, &out, &r));
    ck_assert(ag_requires_grad(r) && ag_requires_grad(out));
    assert_values(r, 1, TU_SHAPE(3), first);
    assert_values(grad_of_sum(r, x), 1, TU_SHAPE(3), second);
    CK_OK(ag_vjp(x_sin_x_fn, NULL, 1, &x, 1, &v, NULL, &out, &r));
    ck_assert(!ag_requires_grad(r) && !ag_requires_grad(out));
    assert_values(r, 1, TU_SHAPE(3), first);

    /* jvp: reverse mode over the forward-mode tangent. */
    CK_OK(ag_jvp(x_sin_x_fn, NULL, 1, &x, &v, 1, &cg, &out, &r));
    ck_assert(ag_requires_grad(r) && ag_requires_grad(out));
    assert_values(r, 1, TU_SHAPE(3), first);
    assert_values(grad_of_sum(r, x), 1, TU_SHAPE(3), second);
    CK_OK(ag_jvp(x_sin_x_fn, NULL, 1, &x, &v, 1, NULL, &out, &r));
    ck_assert(!ag_requires_grad(r) && !ag_requires_grad(out));

    /* hvp, vhp of sum(x^4): H v = 12 x^2 v, d sum(H v) / dx = 24 x v. */
    double hv[3], third[3], h[9] = {0}, dh[3];
    for (int k = 0; k < 3; k++) {
        hv[k] = 12 * X[k] * X[k] * V[k];
        third[k] = 24 * X[k] * V[k];
        h[k * 4] = 12 * X[k] * X[k];
        dh[k] = 24 * X[k];
    }
    CK_OK(ag_hvp(quartic_fn, NULL, 1, &x, &v, &cg, &out, &r));
    ck_assert(ag_requires_grad(r) && ag_requires_grad(out));
    assert_values(r, 1, TU_SHAPE(3), hv);
    assert_values(grad_of_sum(r, x), 1, TU_SHAPE(3), third);
    CK_OK(ag_hvp(quartic_fn, NULL, 1, &x, &v, NULL, &out, &r));
    ck_assert(!ag_requires_grad(r) && !ag_requires_grad(out));
    CK_OK(ag_vhp(quartic_fn, NULL, 1, &x, &v, &cg, &out, &r));
    ck_assert(ag_requires_grad(r) && ag_requires_grad(out));
    assert_values(r, 1, TU_SHAPE(3), hv);
    assert_values(grad_of_sum(r, x), 1, TU_SHAPE(3), third);
    CK_OK(ag_vhp(quartic_fn, NULL, 1, &x, &v, NULL, &out, &r));
    ck_assert(!ag_requires_grad(r) && !ag_requires_grad(out));

    /* hessian of sum(x^4): diag(12 x^2), d sum(H) / dx = 24 x. */
    CK_OK(ag_hessian(quartic_fn, NULL, 1, &x, &cg, &r));
    ck_assert(ag_requires_grad(r));
    assert_values(r, 2, TU_SHAPE(3, 3), h);
    assert_values(grad_of_sum(r, x), 1, TU_SHAPE(3), dh);
    CK_OK(ag_hessian(quartic_fn, NULL, 1, &x, NULL, &r));
    ck_assert(!ag_requires_grad(r));

    /* jacobian of x^3, both modes: diag(3 x^2), d sum(J) / dx = 6 x. */
    double j[9] = {0}, dj[3];
    for (int k = 0; k < 3; k++) {
        j[k * 4] = 3 * X[k] * X[k];
        dj[k] = 6 * X[k];
    }
    for (int mode = 0; mode < 2; mode++) {
        CK_OK(ag_jacobian(cubes_fn, NULL, 1, &x, 1, mode ? &cg_fwd : &cg, &jac));
        ck_assert(ag_requires_grad(jac));
        assert_values(jac, 2, TU_SHAPE(3, 3), j);
        assert_values(grad_of_sum(jac, x), 1, TU_SHAPE(3), dj);
        CK_OK(ag_jacobian(cubes_fn, NULL, 1, &x, 1, mode ? &fwd : NULL, &jac));
        ck_assert(!ag_requires_grad(jac));
        assert_values(jac, 2, TU_SHAPE(3, 3), j);
    }
    ck_assert(!ag_dual_level_is_open());
    /* None of this touched x's .grad. */
    ck_assert_ptr_null(ag_tensor_grad(x));
}
END_TEST

/* ---- errors ---- */

/* Every transform on x [3] with fn and v [3] where it takes one: the status. */
static ag_status run_transform(int which, ag_tensor_fn fn, void *user, ag_tensor *x, ag_tensor *v,
                               ag_tensor **res) {
    const ag_functional_options fwd = {.forward_mode = true};
    ag_tensor *out = NULL;
    switch (which) {
    case 0:
        return ag_vjp(fn, user, 1, &x, 1, &v, NULL, &out, res);
    case 1:
        return ag_jvp(fn, user, 1, &x, &v, 1, NULL, &out, res);
    case 2:
        return ag_hvp(fn, user, 1, &x, &v, NULL, &out, res);
    case 3:
        return ag_vhp(fn, user, 1, &x, &v, NULL, &out, res);
    case 4:
        return ag_jacobian(fn, user, 1, &x, 1, NULL, res);
    case 5:
        return ag_jacobian(fn, user, 1, &x, 1, &fwd, res);
    default:
        return ag_hessian(fn, user, 1, &x, NULL, res);
    }
}
enum { N_TRANSFORMS = 7 };
static const char *const transform_names[N_TRANSFORMS] = {
    "vjp", "jvp", "hvp", "vhp", "jacobian", "jacobian (forward mode)", "hessian"};

START_TEST(function_errors_propagate_with_their_message_and_nothing_leaks) {
    ag_tensor *x = leaf(3, TU_VALUES(0.5, -1, 2)), *v = vec(3, TU_VALUES(1, 2, 3));
    const ag_device dev = ag_default_device();
    const uint64_t before = ag_memory_allocated(dev);
    for (int t = 0; t < N_TRANSFORMS; t++) {
        ag_tensor *res = x; /* a non-NULL sentinel the transform must clear */
        int calls = 0;
        ag_status st = run_transform(t, failing_op_fn, &calls, x, v, &res);
        ck_assert_msg(st == AG_ERR_SHAPE, "%s: %s (%s)", transform_names[t], ag_status_name(st),
                      ag_last_error());
        ck_assert_msg(strstr(ag_last_error(), "matmul"), "%s: message '%s' lost the op's",
                      transform_names[t], ag_last_error());
        ag_clear_error();
        ck_assert_int_eq(calls, 1); /* stopped at the first failure */
        ck_assert_msg(!res, "%s left a result", transform_names[t]);
        ck_assert(!ag_dual_level_is_open());
        ck_assert_msg(ag_memory_allocated(dev) == before, "%s: %llu bytes left allocated",
                      transform_names[t], (unsigned long long)(ag_memory_allocated(dev) - before));

        res = x;
        st = run_transform(t, silent_fail_fn, NULL, x, v, &res);
        assert_error(st, AG_ERR_UNSUPPORTED, "without a message");
        ck_assert(!res && !ag_dual_level_is_open());

        res = x;
        st = run_transform(t, missing_output_fn, NULL, x, v, &res);
        assert_error(st, AG_ERR_INVALID_ARG, "without output 0");
        ck_assert(!res && !ag_dual_level_is_open());
        ck_assert_uint_eq(ag_memory_allocated(dev), before);
    }
    ck_assert_ptr_null(ag_tensor_grad(x));
}
END_TEST

START_TEST(invalid_arguments_are_refused_with_clear_errors) {
    ag_tensor *x = vec(3, TU_VALUES(0.5, -1, 2)), *v = vec(3, TU_VALUES(1, 2, 3)), *r[4];
    ag_tensor *pair[2] = {x, NULL}, *out = NULL;
    for (int t = 0; t < N_TRANSFORMS; t++) {
        assert_error(run_transform(t, NULL, NULL, x, v, r), AG_ERR_INVALID_ARG,
                     "the function is NULL");
        ck_assert(!ag_dual_level_is_open());
    }
    /* No inputs, a NULL input array, a NULL input, no outputs. */
    assert_error(ag_vjp(cube_sum_fn, NULL, 0, &x, 1, NULL, NULL, NULL, r), AG_ERR_INVALID_ARG,
                 "vjp: expected 1..64 inputs, got 0");
    assert_error(ag_jvp(cube_sum_fn, NULL, 1, NULL, NULL, 1, NULL, NULL, r), AG_ERR_INVALID_ARG,
                 "inputs is NULL");
    assert_error(ag_hessian(cube_sum_fn, NULL, 65, pair, NULL, r), AG_ERR_INVALID_ARG,
                 "expected 1..64 inputs, got 65");
    assert_error(ag_hvp(only_x_fn, NULL, 2, pair, NULL, NULL, NULL, r), AG_ERR_INVALID_ARG,
                 "hvp: input 1 is NULL");
    assert_error(ag_vhp(only_x_fn, NULL, 2, pair, NULL, NULL, NULL, r), AG_ERR_INVALID_ARG,
                 "vhp: input 1 is NULL");
    assert_error(ag_jacobian(only_x_fn, NULL, 2, pair, 1, NULL, r), AG_ERR_INVALID_ARG,
                 "jacobian: input 1 is NULL");
    assert_error(ag_vjp(cube_sum_fn, NULL, 1, &x, 0, NULL, NULL, NULL, r), AG_ERR_INVALID_ARG,
                 "expected 1..64 outputs, got 0");
    assert_error(ag_jvp(cube_sum_fn, NULL, 1, &x, &v, -1, NULL, NULL, r), AG_ERR_INVALID_ARG,
                 "outputs, got -1");
    assert_error(ag_jacobian(cube_sum_fn, NULL, 1, &x, 0, NULL, r), AG_ERR_INVALID_ARG,
                 "outputs, got 0");
    /* v of the wrong shape. */
    ag_tensor *v4 = vec(4, TU_VALUES(1, 2, 3, 4));
    assert_error(ag_jvp(cubes_fn, NULL, 1, &x, &v4, 1, NULL, NULL, r), AG_ERR_SHAPE, "v[0]");
    assert_error(ag_hvp(cube_sum_fn, NULL, 1, &x, &v4, NULL, NULL, r), AG_ERR_SHAPE, "v[0]");
    assert_error(ag_vhp(cube_sum_fn, NULL, 1, &x, &v4, NULL, NULL, r), AG_ERR_SHAPE, "v[0]");
    assert_error(ag_vjp(cubes_fn, NULL, 1, &x, 1, &v4, NULL, NULL, r), AG_ERR_SHAPE, "v[0]");
    /* Second-order transforms need a single-element output. */
    assert_error(ag_hvp(cubes_fn, NULL, 1, &x, &v, NULL, &out, r), AG_ERR_SHAPE,
                 "single floating point element");
    assert_error(ag_vhp(cubes_fn, NULL, 1, &x, &v, NULL, &out, r), AG_ERR_SHAPE,
                 "single floating point element");
    assert_error(ag_hessian(cubes_fn, NULL, 1, &x, NULL, r), AG_ERR_SHAPE,
                 "single floating point element");
    ck_assert(!ag_dual_level_is_open());
}
END_TEST

START_TEST(int64_inputs_are_refused) {
    ag_tensor *i = tu_tensor(AG_I64, 1, TU_SHAPE(3), TU_VALUES(1, 2, 3));
    ag_tensor *v = vec(3, TU_VALUES(1, 2, 3)), *r[1];
    for (int t = 0; t < N_TRANSFORMS; t++) {
        int calls = 0;
        ag_status st = run_transform(t, cube_sum_fn, &calls, i, v, r);
        ck_assert_msg(st == AG_ERR_DTYPE, "%s: %s", transform_names[t], ag_status_name(st));
        ck_assert_msg(strstr(ag_last_error(), "int64") &&
                          strstr(ag_last_error(), "inputs must be floating point"),
                      "%s: '%s'", transform_names[t], ag_last_error());
        ag_clear_error();
        ck_assert_int_eq(calls, 0);
        ck_assert(!ag_dual_level_is_open());
    }
}
END_TEST

/* A dual level opened by the caller: forward-mode transforms refuse to nest and leave it
 * (and its tangents) alone; reverse-mode ones still work. */
START_TEST(open_dual_level_is_refused_and_left_open) {
    ag_tensor *x = vec(3, TU_VALUES(0.5, -1, 2)), *v = vec(3, TU_VALUES(1, 2, 3)), *r[1];
    CK_OK(ag_dual_level_enter());
    ag_tensor *d = ag_make_dual(x, v), *tangent = NULL;
    ck_assert_msg(d, "%s", ag_last_error());
    const int forward_mode[] = {1, 2, 5};
    for (int k = 0; k < 3; k++) {
        int calls = 0;
        r[0] = x;
        ag_status st = run_transform(forward_mode[k], cube_sum_fn, &calls, x, v, r);
        const char *name = transform_names[forward_mode[k]];
        ck_assert_msg(st == AG_ERR_INVALID_ARG, "%s: %s", name, ag_status_name(st));
        ck_assert_msg(strstr(ag_last_error(), "dual level is open already"), "%s: '%s'", name,
                      ag_last_error());
        ck_assert_msg(strncmp(ag_last_error(), name, strlen(name) < 8 ? strlen(name) : 8) == 0,
                      "'%s' does not name %s", ag_last_error(), name);
        ag_clear_error();
        ck_assert_int_eq(calls, 0);
        ck_assert(ag_dual_level_is_open());
        CK_OK(ag_unpack_dual(d, NULL, &tangent));
        assert_values(tangent, 1, TU_SHAPE(3), TU_VALUES(1, 2, 3));
    }
    /* Reverse mode needs no level. */
    ag_tensor *g = NULL;
    CK_OK(ag_vjp(cube_sum_fn, NULL, 1, &x, 1, NULL, NULL, NULL, &g));
    assert_values(g, 1, TU_SHAPE(3), TU_VALUES(0.75, 3, 12));
    ck_assert(ag_dual_level_is_open());
    CK_OK(ag_dual_level_exit());
}
END_TEST

/* jvp costs one forward pass; forward-mode jacobian one per input element, reverse mode one
 * forward (and a backward per output element). */
START_TEST(calls_of_the_function_per_transform) {
    ag_tensor *in[2], *r[6], *out[3];
    multi_inputs(in);
    ag_tensor *v[2] = {ag_ones(AG_F64, 2, TU_SHAPE(2, 3)), ag_ones(AG_F64, 1, TU_SHAPE(3))};
    ag_tensor *u[3] = {ag_ones(AG_F64, 1, TU_SHAPE(2)), ag_ones(AG_F64, 2, TU_SHAPE(2, 3)), NULL};
    const ag_functional_options fwd = {.forward_mode = true};
    int calls = 0;
    CK_OK(ag_jvp(multi_fn, &calls, 2, in, v, 3, NULL, out, r));
    ck_assert_int_eq(calls, 1);
    calls = 0;
    CK_OK(ag_vjp(multi_fn, &calls, 2, in, 3, u, NULL, out, r));
    ck_assert_int_eq(calls, 1);
    calls = 0;
    CK_OK(ag_jacobian(multi_fn, &calls, 2, in, 3, &fwd, r));
    ck_assert_int_eq(calls, 6 + 3);
    calls = 0;
    CK_OK(ag_jacobian(multi_fn, &calls, 2, in, 3, NULL, r));
    ck_assert_int_eq(calls, 1);
    ag_tensor *xy[2] = {vec(3, HX), vec(3, HY)}, *w[2] = {vec(3, HY), vec(3, HX)};
    calls = 0;
    CK_OK(ag_hvp(hess_fn, &calls, 2, xy, w, NULL, NULL, r));
    ck_assert_int_eq(calls, 1);
    calls = 0;
    CK_OK(ag_vhp(hess_fn, &calls, 2, xy, w, NULL, NULL, r));
    ck_assert_int_eq(calls, 1);
    calls = 0;
    CK_OK(ag_hessian(hess_fn, &calls, 2, xy, NULL, r));
    ck_assert_int_eq(calls, 1);
}
END_TEST

/* A NULL result array is an argument error, as for ag_grad and ag_checkpoint. Each call runs
 * in a child process so that a crash fails this check only; the function given fails without
 * device work, so a transform that checks its arguments never calls it. */
static int null_results_child(int which, ag_tensor *x, ag_tensor *v) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm(60);
        ag_status st = run_transform(which, silent_fail_fn, NULL, x, v, NULL);
        _exit(st == AG_ERR_INVALID_ARG ? 0 : st == AG_OK ? 3 : 2);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

START_TEST(null_result_arrays_are_argument_errors) {
    ag_tensor *x = vec(3, TU_VALUES(0.5, -1, 2)), *v = vec(3, TU_VALUES(1, 2, 3));
    char failed[512] = "";
    for (int t = 0; t < N_TRANSFORMS; t++) {
        int code = null_results_child(t, x, v);
        if (code) tu_appendf(failed, sizeof failed, " %s: %d;", transform_names[t], code);
    }
    ck_assert_msg(!failed[0],
                  "a NULL result array was not refused (child exit status; 0 would be "
                  "AG_ERR_INVALID_ARG, 2 another error, 1 under ASan or >= 128 a crash):%s",
                  failed);
}
END_TEST

/* grad sum(x^3) = 3 x^2, taken inside the function with create_graph (its Jacobian, the
 * Hessian of sum(x^3), is diag(6 x)). */
static ag_status gradient_fn(void *user, int n_in, ag_tensor *const *in, int n_out,
                             ag_tensor **out) {
    count_call(user);
    (void)n_in, (void)n_out;
    ag_tensor *x = in[0], *y = ag_sum(ag_pow_scalar(x, 3), 0, NULL, false);
    return y ? ag_grad(1, &y, 1, &x, NULL, true, true, false, out) : ag_last_status();
}

/* Forward over reverse through the transforms: as torch.autograd.functional.jvp, the function
 * runs with grad mode on and inputs that require grad, so it may take gradients itself; the
 * backward it runs inside the level carries the tangents, and jvp gives H v. */
START_TEST(jvp_of_a_function_that_takes_gradients) {
    static const double X[3] = {0.5, -1.2, 2.0}, V[3] = {1, -0.5, 0.25};
    ag_tensor *x = vec(3, X), *v = vec(3, V), *r = NULL, *jac = NULL;
    double hv[3], h[9] = {0};
    for (int k = 0; k < 3; k++) {
        hv[k] = 6 * X[k] * V[k];
        h[k * 4] = 6 * X[k];
    }
    CK_OK(ag_jvp(gradient_fn, NULL, 1, &x, &v, 1, NULL, NULL, &r));
    assert_values(r, 1, TU_SHAPE(3), hv);
    ck_assert(!ag_requires_grad(r));
    const ag_functional_options fwd = {.forward_mode = true};
    CK_OK(ag_jacobian(gradient_fn, NULL, 1, &x, 1, &fwd, &jac));
    assert_values(jac, 2, TU_SHAPE(3, 3), h);
    CK_OK(ag_jacobian(gradient_fn, NULL, 1, &x, 1, NULL, &jac));
    assert_values(jac, 2, TU_SHAPE(3, 3), h);
    ck_assert(!ag_dual_level_is_open());
}
END_TEST

/* sum(e) + sum(x^2) for an empty e [0] and x [3]. */
static ag_status with_empty_fn(void *user, int n_in, ag_tensor *const *in, int n_out,
                               ag_tensor **out) {
    count_call(user);
    (void)n_in, (void)n_out;
    out[0] = ag_add(ag_sum(in[0], 0, NULL, false), ag_sum(ag_mul(in[1], in[1]), 0, NULL, false));
    return out[0] ? AG_OK : ag_last_status();
}

/* An empty input has an empty block of out.shape + [0] in both modes (core/functional.c's
 * comment on ag_jacobian says so for forward mode too). */
START_TEST(jacobian_block_of_an_empty_input_in_both_modes) {
    ag_tensor *in[2] = {ag_zeros(AG_F64, 1, TU_SHAPE(0)), vec(3, HX)}, *jac[2];
    const ag_functional_options fwd = {.forward_mode = true};
    for (int mode = 0; mode < 2; mode++) {
        jac[0] = jac[1] = NULL;
        ag_status st = ag_jacobian(with_empty_fn, NULL, 2, in, 1, mode ? &fwd : NULL, jac);
        ck_assert_msg(st == AG_OK, "%s mode: %s", mode ? "forward" : "reverse", ag_last_error());
        assert_values(jac[0], 1, TU_SHAPE(0), NULL);
        assert_values(jac[1], 1, TU_SHAPE(3), TU_VALUES(2 * HX[0], 2 * HX[1], 2 * HX[2]));
    }
}
END_TEST

/* x^2 and argmax(x) (int64, no gradient). */
static ag_status with_int_output_fn(void *user, int n_in, ag_tensor *const *in, int n_out,
                                    ag_tensor **out) {
    count_call(user);
    (void)n_in, (void)n_out;
    out[0] = ag_mul(in[0], in[0]);
    out[1] = ag_argmax(in[0], 0, false, false);
    return out[0] && out[1] ? AG_OK : ag_last_status();
}

/* Without strict, an int64 output has zero blocks in both modes (as reverse mode and
 * PyTorch); strict refuses it in both. */
START_TEST(jacobian_of_an_int64_output_is_zero_unless_strict) {
    ag_tensor *x = vec(3, HX), *jac[2];
    const ag_functional_options fwd = {.forward_mode = true}, strict = {.strict = true};
    const ag_functional_options strict_fwd = {.strict = true, .forward_mode = true};
    for (int mode = 0; mode < 2; mode++) {
        ag_status st = ag_jacobian(with_int_output_fn, NULL, 1, &x, 2, mode ? &fwd : NULL, jac);
        ck_assert_msg(st == AG_OK, "%s mode: %s", mode ? "forward" : "reverse", ag_last_error());
        assert_values(jac[0], 2, TU_SHAPE(3, 3),
                      TU_VALUES(2 * HX[0], 0, 0, 0, 2 * HX[1], 0, 0, 0, 2 * HX[2]));
        assert_zeros(jac[1], 1, TU_SHAPE(3));
        assert_error(
            ag_jacobian(with_int_output_fn, NULL, 1, &x, 2, mode ? &strict_fwd : &strict, jac),
            AG_ERR_NO_GRAD, "strict");
    }
}
END_TEST

/* A failed test must not leave a level open for the next one. */
static void teardown(void) {
    if (ag_dual_level_is_open()) ag_dual_level_exit();
    tu_scope_teardown();
}

static Suite *functional_suite(void) {
    Suite *s = suite_create("functional");
    TCase *tc = tcase_create("functional");
    tcase_add_checked_fixture(tc, tu_scope_setup, teardown);
    tcase_add_test(tc, jacobian_both_modes_match_closed_form_blocks);
    tcase_add_test(tc, jvp_equals_jacobian_times_v);
    tcase_add_test(tc, vjp_equals_u_times_jacobian);
    tcase_add_test(tc, v_may_be_null_only_for_single_elements);
    tcase_add_test(tc, hessian_matches_closed_form_blocks);
    tcase_add_test(tc, hvp_equals_vhp_equals_hessian_times_v);
    tcase_add_test(tc, strict_refuses_independent_outputs_nonstrict_gives_zeros);
    tcase_add_test(tc, create_graph_results_differentiate_back_to_the_inputs);
    tcase_add_test(tc, function_errors_propagate_with_their_message_and_nothing_leaks);
    tcase_add_test(tc, invalid_arguments_are_refused_with_clear_errors);
    tcase_add_test(tc, int64_inputs_are_refused);
    tcase_add_test(tc, open_dual_level_is_refused_and_left_open);
    tcase_add_test(tc, calls_of_the_function_per_transform);
    tcase_add_test(tc, null_result_arrays_are_argument_errors);
    tcase_add_test(tc, jvp_of_a_function_that_takes_gradients);
    tcase_add_test(tc, jacobian_block_of_an_empty_input_in_both_modes);
    tcase_add_test(tc, jacobian_of_an_int64_output_is_zero_unless_strict);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return tu_run_suite(functional_suite());
}
