/* Forward-mode AD against torch.autograd.forward_ad: the dual level, make_dual and
 * unpack_dual and their errors, tangents through a function built of most ops (checked by
 * central differences), composition with reverse mode both ways, in-place ops, no_grad,
 * non-differentiable ops. Each op's own rule is checked against its backward by
 * `ag check --gradcheck` (the jvp column, tests/test_check_cli.c). */
#include <check.h>
#include <math.h>
#include <string.h>
#include "ag/ag.h"
#include "ag/nn.h"
#include "test_util.h"

/* Asserts the last error has status st and mentions words, then clears it. */
static void assert_error(ag_status st, const char *words) {
    ck_assert_int_eq(ag_last_status(), st);
    ck_assert_msg(strstr(ag_last_error(), words), "message '%s' lacks '%s'", ag_last_error(),
                  words);
    ag_clear_error();
}

/* Asserts t holds want[0..n) within tol (relative to max(1, |want|)). */
static void assert_close(const ag_tensor *t, int64_t n, const double *want, double tol) {
    ck_assert_msg(t, "%s", ag_last_error());
    ck_assert_int_eq(ag_numel(t), n);
    double got[64] = {0};
    ck_assert_int_le(n, 64);
    ck_assert_int_eq(tu_read(t, got, n), AG_OK);
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabs(got[i] - want[i]) <= tol * fmax(1.0, fabs(want[i])),
                      "element %lld: %.17g, expected %.17g", (long long)i, got[i], want[i]);
}

/* The tangent of t (a new reference of the scope), asserted present. */
static ag_tensor *tangent_of(ag_tensor *t) {
    ag_tensor *tangent = NULL;
    ck_assert_msg(t, "%s", ag_last_error());
    ck_assert_int_eq(ag_unpack_dual(t, NULL, &tangent), AG_OK);
    ck_assert_msg(tangent, "no tangent");
    return tangent;
}

/* A float64 vector of n values. */
static ag_tensor *vec(int64_t n, const double *v) {
    return tu_tensor(AG_F64, 1, (int64_t[]){n}, v);
}

START_TEST(level_enter_exit_and_tangents_dropped_on_exit) {
    ck_assert(!ag_dual_level_is_open());
    ck_assert_int_eq(ag_dual_level_exit(), AG_ERR_INVALID_ARG);
    assert_error(AG_ERR_INVALID_ARG, "no dual level is open");
    ag_tensor *x = vec(3, TU_VALUES(1, 2, 3)), *v = vec(3, TU_VALUES(1, 0, -1));
    ck_assert_ptr_null(ag_make_dual(x, v));
    assert_error(AG_ERR_INVALID_ARG, "ag_dual_level_enter");
    ck_assert_int_eq(ag_dual_level_enter(), AG_OK);
    ck_assert(ag_dual_level_is_open());
    ck_assert_int_eq(ag_dual_level_enter(), AG_ERR_INVALID_ARG);
    assert_error(AG_ERR_INVALID_ARG, "nested");
    ag_tensor *d = ag_make_dual(x, v), *y = ag_mul(d, d);
    assert_close(tangent_of(y), 3, TU_VALUES(2, 0, -6), 0);
    /* The primal of unpack_dual carries no tangent; the original x never had one. */
    ag_tensor *primal = NULL, *tangent = NULL;
    ck_assert_int_eq(ag_unpack_dual(y, &primal, NULL), AG_OK);
    ck_assert_int_eq(ag_unpack_dual(primal, NULL, &tangent), AG_OK);
    ck_assert_ptr_null(tangent);
    assert_close(primal, 3, TU_VALUES(1, 4, 9), 0);
    ck_assert_int_eq(ag_unpack_dual(ag_mul(x, x), NULL, &tangent), AG_OK);
    ck_assert_ptr_null(tangent);
    ck_assert_int_eq(ag_dual_level_exit(), AG_OK);
    /* Closing the level dropped every tangent; the values stay. */
    ck_assert_int_eq(ag_unpack_dual(y, NULL, &tangent), AG_OK);
    ck_assert_ptr_null(tangent);
    assert_close(y, 3, TU_VALUES(1, 4, 9), 0);
}
END_TEST

START_TEST(make_dual_refuses_bad_pairs) {
    ck_assert_int_eq(ag_dual_level_enter(), AG_OK);
    ag_tensor *x = vec(3, TU_VALUES(1, 2, 3));
    ck_assert_ptr_null(ag_make_dual(x, vec(2, TU_VALUES(1, 2))));
    assert_error(AG_ERR_SHAPE, "the primal's shape and dtype");
    ck_assert_ptr_null(ag_make_dual(x, tu_tensor(AG_F32, 1, TU_SHAPE(3), TU_VALUES(1, 2, 3))));
    assert_error(AG_ERR_SHAPE, "float32[3]");
    ag_tensor *ints = tu_tensor(AG_I64, 1, TU_SHAPE(3), TU_VALUES(1, 2, 3));
    ck_assert_ptr_null(ag_make_dual(ints, ints));
    assert_error(AG_ERR_DTYPE, "floating point primal");
    ag_tensor *d = ag_make_dual(x, vec(3, TU_VALUES(0, 0, 1)));
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_null(ag_make_dual(d, x));
    assert_error(AG_ERR_INVALID_ARG, "has a tangent already");
    ck_assert_ptr_null(ag_make_dual(x, d));
    assert_error(AG_ERR_INVALID_ARG, "has a tangent itself");
    ck_assert_ptr_null(ag_make_dual(NULL, x));
    assert_error(AG_ERR_INVALID_ARG, "primal is NULL");
    ck_assert_int_eq(ag_unpack_dual(NULL, NULL, NULL), AG_ERR_INVALID_ARG);
    ag_clear_error();
    ck_assert_int_eq(ag_dual_level_exit(), AG_OK);
}
END_TEST

/* A scalar built of most built-in ops (and the composites of nn.h) from x [4, 6], a weight
 * w [5, 6] and a bias b [5]: its tangent must be the directional derivative. */
static ag_tensor *many_ops(ag_tensor *x, ag_tensor *w, ag_tensor *b) {
    int64_t idx_v[] = {2, 0, 3}, gather_v[] = {0, 4, 1, 2, 2, 3, 4, 0};
    ag_tensor *idx = ag_from_i64(idx_v, 1, TU_SHAPE(3));
    ag_tensor *targets = ag_from_i64((const int64_t[]){1, 4, 0, 2}, 1, TU_SHAPE(4));
    ag_tensor *gidx = ag_from_i64(gather_v, 2, TU_SHAPE(4, 2));
    ag_tensor *h = ag_linear(x, w, b);                               /* [4, 5] */
    ag_tensor *n = ag_layer_norm(h, 1, NULL, NULL, 1e-5);            /* [4, 5] */
    ag_tensor *g = ag_gelu(ag_add(n, ag_mul_scalar(h, 0.1)), false); /* [4, 5] */
    ag_tensor *t = ag_gelu(ag_tanh(h), true);
    ag_tensor *ce =
        ag_cross_entropy(g, targets, &(ag_cross_entropy_options){AG_REDUCTION_MEAN, -100, 0.1});
    ag_tensor *soft = ag_sum(ag_mul(ag_softmax(h, 1), ag_log_softmax(t, 0)), 0, NULL, false);
    ag_tensor *r = ag_reshape(ag_transpose(h, 0, 1), 2, TU_SHAPE(10, 2));
    ag_tensor *sl = ag_slice(r, 0, 1, 9, 3);                             /* [3, 2] */
    ag_tensor *sel = ag_expand(ag_select(h, 1, 2), 2, TU_SHAPE(3, 4));   /* [3, 4] */
    ag_tensor *picked = ag_index_select(x, 1, idx);                      /* [4, 3] */
    ag_tensor *gathered = ag_gather(h, 1, gidx);                         /* [4, 2] */
    ag_tensor *joined = ag_cat(2, (ag_tensor *[]){picked, gathered}, 1); /* [4, 5] */
    ag_tensor *mixed =
        ag_where(ag_gt(joined, ag_scalar(AG_F64, 0.0)), ag_sin(joined), ag_cos(ag_mul(joined, h)));
    ag_tensor *pos = ag_add_scalar(ag_sigmoid(h), 0.5);
    ag_tensor *powers = ag_pow(pos, ag_add_scalar(ag_abs(g), 0.5));
    ag_tensor *misc =
        ag_add(ag_div(ag_sqrt(pos), ag_exp(ag_erf(h))), ag_mul(ag_log(pos), ag_rsqrt(pos)));
    ag_tensor *clipped = ag_clamp(ag_silu(h), true, -0.2, true, 0.8);
    ag_tensor *extremes = ag_add(ag_max(ag_maximum(h, g), 1, (int[]){1}, false),
                                 ag_min(ag_minimum(h, t), 0, NULL, false));
    ag_tensor *scattered = ag_scatter_add(h, 1, gidx, gathered);
    ag_tensor *added =
        ag_index_add(ag_relu(h), 0, ag_from_i64((const int64_t[]){3, 0}, 1, TU_SHAPE(2)),
                     ag_pow_scalar(ag_slice(h, 0, 0, 2, 1), 2.0));
    ag_tensor *stats = ag_add(ag_var(mixed, 1, (int[]){0}, 1.0, false),
                              ag_norm(powers, 3.0, 1, (int[]){0}, false));
    ag_tensor *prod =
        ag_matmul(ag_unsqueeze(misc, 0), ag_view(ag_transpose(scattered, 0, 1), 2, TU_SHAPE(5, 4)));
    ag_tensor *losses = ag_add(ag_mse_loss(clipped, added, AG_REDUCTION_MEAN),
                               ag_bce_with_logits(h, pos, NULL, AG_REDUCTION_SUM));
    ag_tensor *terms[] = {
        ce,
        ag_sum(soft, 0, NULL, false),
        ag_mean(sl, 0, NULL, false),
        ag_sum(ag_neg(sel), 0, NULL, false),
        ag_sum(stats, 0, NULL, false),
        ag_sum(extremes, 0, NULL, false),
        ag_sum(ag_squeeze(prod, 0), 0, NULL, false),
        losses,
        ag_sum(ag_flatten(ag_sub(ag_clone(sl), ag_contiguous(sl)), 0, -1), 0, NULL, false)};
    ag_tensor *sum = terms[0];
    for (size_t i = 1; i < sizeof terms / sizeof terms[0]; i++) sum = ag_add(sum, terms[i]);
    return sum;
}

/* Fills a tensor of n values from a seeded formula (no generator: same on every backend). */
static ag_tensor *filled(int ndim, const int64_t *shape, double phase) {
    double v[64];
    int64_t n = tu_numel(ndim, shape);
    for (int64_t i = 0; i < n; i++) v[i] = sin(1.7 * (double)i + phase) * 1.3;
    return tu_tensor(AG_F64, ndim, shape, v);
}

START_TEST(tangent_of_many_ops_matches_central_differences) {
    ag_tensor *x = filled(2, TU_SHAPE(4, 6), 0.3), *w = filled(2, TU_SHAPE(5, 6), 1.1);
    ag_tensor *b = filled(1, TU_SHAPE(5), 2.0);
    ag_tensor *vx = filled(2, TU_SHAPE(4, 6), 0.7), *vw = filled(2, TU_SHAPE(5, 6), -0.4);
    ag_tensor *vb = filled(1, TU_SHAPE(5), 0.9);
    ck_assert_int_eq(ag_dual_level_enter(), AG_OK);
    ag_tensor *y = many_ops(ag_make_dual(x, vx), ag_make_dual(w, vw), ag_make_dual(b, vb));
    double jv;
    ck_assert_int_eq(ag_item(tangent_of(y), &jv), AG_OK);
    ck_assert_int_eq(ag_dual_level_exit(), AG_OK);
    /* Central differences along (vx, vw, vb). */
    const double h = 1e-6;
    double f[2];
    for (int s = 0; s < 2; s++) {
        double step = s ? -h : h;
        ag_tensor *fx = ag_add(x, ag_mul_scalar(vx, step)),
                  *fw = ag_add(w, ag_mul_scalar(vw, step));
        ck_assert_int_eq(ag_item(many_ops(fx, fw, ag_add(b, ag_mul_scalar(vb, step))), &f[s]),
                         AG_OK);
    }
    double fd = (f[0] - f[1]) / (2 * h);
    ck_assert_msg(fabs(jv - fd) <= 1e-6 * fmax(1.0, fabs(fd)), "jvp %.12g, differences %.12g", jv,
                  fd);
}
END_TEST

/* Reverse over forward: the tangent of f along v is grad f . v as a function of x, so its
 * gradient is H v. f = sum(x^3) gives H v = 6 x v. */
START_TEST(gradient_of_a_tangent_is_the_hessian_vector_product) {
    ag_tensor *x = vec(3, TU_VALUES(0.5, -1, 2)), *v = vec(3, TU_VALUES(1, 0.5, -0.25));
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ck_assert_int_eq(ag_dual_level_enter(), AG_OK);
    ag_tensor *y = ag_sum(ag_pow_scalar(ag_make_dual(x, v), 3.0), 0, NULL, false);
    ag_tensor *jv = tangent_of(y), *hv = NULL;
    ck_assert(ag_requires_grad(jv));
    ck_assert_int_eq(ag_dual_level_exit(), AG_OK);
    assert_close(jv, 1, TU_VALUES(3 * 0.25 * 1 + 3 * 1 * 0.5 + 3 * 4 * -0.25), 1e-15);
    ck_assert_int_eq(ag_grad(1, &jv, 1, &x, NULL, false, false, false, &hv), AG_OK);
    assert_close(hv, 3, TU_VALUES(6 * 0.5 * 1, 6 * -1 * 0.5, 6 * 2 * -0.25), 1e-15);
}
END_TEST

/* Forward over reverse: a backward run inside the level propagates tangents through the
 * backward's own ops, so the gradient's tangent is H v. */
START_TEST(backward_inside_the_level_gives_gradient_tangents) {
    ag_tensor *x = vec(3, TU_VALUES(0.5, -1, 2)), *v = vec(3, TU_VALUES(1, 0.5, -0.25));
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ck_assert_int_eq(ag_dual_level_enter(), AG_OK);
    ag_tensor *d = ag_make_dual(x, v), *g = NULL;
    ag_tensor *y = ag_sum(ag_mul(ag_sin(d), d), 0, NULL, false);
    ck_assert_int_eq(ag_grad(1, &y, 1, &d, NULL, false, false, false, &g), AG_OK);
    double hv[3], grad[3];
    const double xs[] = {0.5, -1, 2}, vs[] = {1, 0.5, -0.25};
    for (int i = 0; i < 3; i++) {
        grad[i] = cos(xs[i]) * xs[i] + sin(xs[i]);
        hv[i] = (2 * cos(xs[i]) - xs[i] * sin(xs[i])) * vs[i];
    }
    assert_close(g, 3, grad, 1e-15);
    assert_close(tangent_of(g), 3, hv, 1e-14);
    ck_assert_int_eq(ag_dual_level_exit(), AG_OK);
}
END_TEST

/* Grad mode does not switch forward AD off (as PyTorch); non-differentiable ops give no
 * tangent and no error; conversions convert the tangent too. */
START_TEST(no_grad_nondifferentiable_ops_and_conversions) {
    ag_tensor *x = vec(4, TU_VALUES(1, -2, 3, 0.5)), *v = vec(4, TU_VALUES(1, 1, 1, 1));
    ck_assert_int_eq(ag_dual_level_enter(), AG_OK);
    bool prev = ag_set_grad_enabled(false);
    ag_tensor *d = ag_make_dual(x, v), *tangent = NULL;
    assert_close(tangent_of(ag_exp(d)), 4, TU_VALUES(exp(1), exp(-2), exp(3), exp(0.5)), 1e-15);
    ag_set_grad_enabled(prev);
    ck_assert_int_eq(ag_unpack_dual(ag_argmax(d, 0, false, false), NULL, &tangent), AG_OK);
    ck_assert_ptr_null(tangent);
    ck_assert_int_eq(ag_unpack_dual(ag_gt(d, x), NULL, &tangent), AG_OK);
    ck_assert_ptr_null(tangent);
    ag_tensor *f32 = ag_to_dtype(ag_mul_scalar(d, 2.0), AG_F32);
    ck_assert_int_eq(ag_dtype_of(tangent_of(f32)), AG_F32);
    assert_close(tangent_of(f32), 4, TU_VALUES(2, 2, 2, 2), 0);
    ck_assert_int_eq(ag_dual_level_exit(), AG_OK);
}
END_TEST

/* In-place ops take the tangent of their result; fill_ makes it zero. */
START_TEST(inplace_ops_update_the_tangent) {
    ck_assert_int_eq(ag_dual_level_enter(), AG_OK);
    ag_tensor *a = ag_make_dual(vec(3, TU_VALUES(1, 2, 3)), vec(3, TU_VALUES(1, 0, 2)));
    ag_tensor *b = ag_make_dual(vec(3, TU_VALUES(4, 5, 6)), vec(3, TU_VALUES(0, 1, 1)));
    ck_assert_ptr_eq(ag_mul_(a, b), a);
    /* d(a b) = da b + a db */
    assert_close(tangent_of(a), 3, TU_VALUES(4, 2, 15), 0);
    ck_assert_ptr_eq(ag_add_scalar_(a, 1.0), a);
    assert_close(tangent_of(a), 3, TU_VALUES(4, 2, 15), 0);
    /* A constant in place of b: a's tangent goes on unchanged through a * 2. */
    ck_assert_ptr_eq(ag_mul_(a, vec(3, TU_VALUES(2, 2, 2))), a);
    assert_close(tangent_of(a), 3, TU_VALUES(8, 4, 30), 0);
    ag_tensor *tangent = NULL;
    ck_assert_ptr_eq(ag_fill_(a, 7.0), a);
    ck_assert_int_eq(ag_unpack_dual(a, NULL, &tangent), AG_OK);
    ck_assert_ptr_null(tangent);
    /* A plain tensor receiving a dual's value takes its tangent. */
    ag_tensor *c = vec(3, TU_VALUES(0, 0, 0));
    ck_assert_ptr_eq(ag_copy_(c, b), c);
    assert_close(tangent_of(c), 3, TU_VALUES(0, 1, 1), 0);
    ck_assert_int_eq(ag_dual_level_exit(), AG_OK);
}
END_TEST

/* Views of a dual carry the view of its tangent, whatever its layout: a reshape of a
 * transposed tangent that could not be viewed. */
START_TEST(views_carry_the_tangent_view) {
    ck_assert_int_eq(ag_dual_level_enter(), AG_OK);
    ag_tensor *x = filled(2, TU_SHAPE(2, 3), 0.0);
    ag_tensor *v =
        ag_transpose(tu_tensor(AG_F64, 2, TU_SHAPE(3, 2), TU_VALUES(1, 2, 3, 4, 5, 6)), 0, 1);
    ag_tensor *d = ag_make_dual(x, v);
    ag_tensor *flat = ag_view(d, 1, TU_SHAPE(6));
    assert_close(tangent_of(flat), 6, TU_VALUES(1, 3, 5, 2, 4, 6), 0);
    assert_close(tangent_of(ag_select(d, 0, 1)), 3, TU_VALUES(2, 4, 6), 0);
    ck_assert_int_eq(ag_dual_level_exit(), AG_OK);
}
END_TEST

/* Tensors freed inside the level drop their tangents (LeakSanitizer checks), and a tangent
 * outlives the tensor it was given with. */
START_TEST(freed_duals_release_their_tangents) {
    ck_assert_int_eq(ag_dual_level_enter(), AG_OK);
    ag_scope *inner = ag_scope_begin();
    ag_tensor *v = ag_keep(vec(2, TU_VALUES(3, 4)));
    ag_tensor *d = ag_make_dual(vec(2, TU_VALUES(1, 2)), v);
    ag_tensor *kept = ag_keep(ag_mul_scalar(d, 2.0));
    ag_scope_end(inner);
    assert_close(tangent_of(kept), 2, TU_VALUES(6, 8), 0);
    ag_release(kept);
    assert_close(v, 2, TU_VALUES(3, 4), 0);
    ag_release(v);
    ck_assert_int_eq(ag_dual_level_exit(), AG_OK);
}
END_TEST

/* A failed test must not leave the level open for the next one. */
static void teardown(void) {
    if (ag_dual_level_is_open()) ag_dual_level_exit();
    tu_scope_teardown();
}

static Suite *forward_ad_suite(void) {
    Suite *s = suite_create("forward_ad");
    TCase *tc = tcase_create("forward_ad");
    tcase_add_checked_fixture(tc, tu_scope_setup, teardown);
    tcase_add_test(tc, level_enter_exit_and_tangents_dropped_on_exit);
    tcase_add_test(tc, make_dual_refuses_bad_pairs);
    tcase_add_test(tc, tangent_of_many_ops_matches_central_differences);
    tcase_add_test(tc, gradient_of_a_tangent_is_the_hessian_vector_product);
    tcase_add_test(tc, backward_inside_the_level_gives_gradient_tangents);
    tcase_add_test(tc, no_grad_nondifferentiable_ops_and_conversions);
    tcase_add_test(tc, inplace_ops_update_the_tangent);
    tcase_add_test(tc, views_carry_the_tangent_view);
    tcase_add_test(tc, freed_duals_release_their_tangents);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return tu_run_suite(forward_ad_suite());
}
