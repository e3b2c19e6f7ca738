/* The plugins shipped in plugins/: swish::swish (composed backward) and fused::logsumexp
 * (two outputs, once-differentiable backward kernel), loaded by path. Values against
 * hand-computed numbers (Python's math module), gradcheck through the plugin ops,
 * gradgradcheck for swish, the once-differentiable error, the version check of saved
 * tensors, strided inputs, and refused inputs. */
#include <check.h>
#include <math.h>
#include <string.h>
#include "ag/plugin.h"
#include "test_util.h"

/* Text of PyTorch's error for a double backward through a once-differentiable op. */
#define ONCE_DIFF_WORDS                                                                            \
    "trying to differentiate twice a function that was marked with @once_differentiable"

/* The registered op `name`, failing the test if it is missing. */
static const ag_op *op_named(const char *name) {
    const ag_op *op = ag_op_find(name);
    ck_assert_msg(op != NULL, "%s: %s", name, ag_last_error());
    return op;
}

/* swish(x). */
static ag_tensor *swish(ag_tensor *x) {
    return ag_op_call1(op_named("swish::swish"), 1, &x, NULL);
}

/* (lse, max) of x over its last dim; NULL results on error. */
static ag_status logsumexp(ag_tensor *x, ag_tensor **lse, ag_tensor **max) {
    ag_tensor *out[2] = {NULL, NULL};
    ag_status st = ag_op_call(op_named("fused::logsumexp"), 1, &x, NULL, 2, out);
    *lse = out[0];
    *max = out[1];
    return st;
}

/* Checks t's shape and values against want within atol (rtol 1e-7). */
static void assert_values(const ag_tensor *t, int ndim, const int64_t *shape, const double *want,
                          double atol) {
    char msg[512] = "";
    ck_assert_msg(t != NULL, "NULL result: %s", ag_last_error());
    ck_assert_msg(tu_values_are(t, ndim, shape, want, atol, 1e-7, msg, sizeof msg, NULL), "%s",
                  msg);
}

/* Checks that the last call failed with `status` and a message containing `words`. */
static void assert_error(ag_status got, ag_status status, const char *words) {
    ck_assert_msg(got == status && ag_last_status() == status, "status %s, expected %s (%s)",
                  ag_status_name(got), ag_status_name(status), ag_last_error());
    ck_assert_msg(strstr(ag_last_error(), words), "message '%s' lacks '%s'", ag_last_error(),
                  words);
    ag_clear_error();
}

/* A float64 leaf requiring grad, uniform in [-3, 3). */
static ag_tensor *random_leaf(uint64_t seed, int ndim, const int64_t *shape) {
    ag_generator *gen = ag_generator_new(seed);
    ag_tensor *x = ag_uniform(gen, AG_F64, ndim, shape, -3, 3);
    ag_generator_free(gen);
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    return x;
}

/* Gradient of sum(f) with respect to x, where f is an op result depending on x. */
static ag_tensor *grad_of_sum(ag_tensor *f, ag_tensor *x) {
    ag_tensor *total = ag_sum(f, 0, NULL, false), *g = NULL;
    ck_assert_msg(ag_grad(1, &total, 1, &x, NULL, false, false, false, &g) == AG_OK, "%s",
                  ag_last_error());
    return g;
}

/* gradcheck functions: the plugin op on inputs[0], viewed as `user` says. */
enum { AS_IS, TRANSPOSED };
static ag_tensor *view_of(ag_tensor *x, void *user) {
    return *(const int *)user == TRANSPOSED ? ag_transpose(x, 0, 1) : x;
}
static ag_tensor *swish_fn(ag_tensor *const *inputs, void *user) {
    return swish(view_of(inputs[0], user));
}
/* lse + max/2, so that both outputs' gradients are checked. */
static ag_tensor *logsumexp_fn(ag_tensor *const *inputs, void *user) {
    ag_tensor *lse, *max;
    if (logsumexp(view_of(inputs[0], user), &lse, &max) != AG_OK) return NULL;
    return ag_add(lse, ag_mul_scalar(max, 0.5));
}

/* ---- loading ---- */

START_TEST(plugins_are_registered) {
    /* Loading a file again is a no-op. */
    ck_assert_int_eq(ag_plugin_load(AG_TEST_SWISH_PLUGIN), AG_OK);
    const char *ops[2] = {"swish::swish", "fused::logsumexp"};
    const char *plugins[2] = {"swish", "logsumexp"};
    for (int k = 0; k < 2; k++) {
        const ag_plugin_op *decl = ag_op_plugin_decl(op_named(ops[k]));
        ck_assert_ptr_nonnull(decl);
        ck_assert_msg(decl->doc && *decl->doc, "%s has no doc line", ops[k]);
        ck_assert_int_gt(decl->n_samples, 0);
        bool listed = false;
        for (int i = 0; i < ag_plugin_count(); i++) {
            const char *name, *path, *version;
            int n_ops;
            ck_assert_int_eq(ag_plugin_describe(i, &name, &path, &version, &n_ops), AG_OK);
            listed |= strcmp(name, plugins[k]) == 0 && n_ops == 1 &&
                      strcmp(ag_plugin_op_name(i, 0), ops[k]) == 0;
        }
        ck_assert_msg(listed, "plugin %s with op %s is not listed", plugins[k], ops[k]);
    }
}
END_TEST

/* ---- swish ---- */

START_TEST(swish_values) {
    const double xs[6] = {-2, -1, 0, 0.5, 1, 2};
    const double ys[6] = {-0.2384058440442351, -0.2689414213699951, 0.0,
                          0.3112296656009273,  0.7310585786300049,  1.7615941559557646};
    assert_values(swish(tu_tensor(AG_F64, 2, TU_SHAPE(2, 3), xs)), 2, TU_SHAPE(2, 3), ys, 1e-15);
    ag_tensor *y32 = swish(tu_tensor(AG_F32, 2, TU_SHAPE(2, 3), xs));
    ck_assert_int_eq(ag_dtype_of(y32), AG_F32);
    assert_values(y32, 2, TU_SHAPE(2, 3), ys, 1e-7);
    /* 0-dim, and a zero-size tensor that writes nothing. */
    assert_values(swish(ag_scalar(AG_F64, 1)), 0, NULL, TU_VALUES(0.7310585786300049), 1e-15);
    assert_values(swish(ag_zeros(AG_F64, 2, TU_SHAPE(0, 3))), 2, TU_SHAPE(0, 3), NULL, 0);
    /* Large |x| neither overflows nor loses the sign. */
    assert_values(swish(tu_tensor(AG_F64, 1, TU_SHAPE(2), TU_VALUES(-800, 800))), 1, TU_SHAPE(2),
                  TU_VALUES(-0.0, 800), 0);
}
END_TEST

START_TEST(swish_gradient_is_the_formula) {
    /* s + x·s·(1−s) at the points of swish_values. */
    const double dy[6] = {-0.09078424878489547, 0.07232948812851325, 0.5,
                          0.7399611873026518,   0.9276705118714867,  1.0907842487848955};
    ag_tensor *x = tu_tensor(AG_F64, 1, TU_SHAPE(6), TU_VALUES(-2, -1, 0, 0.5, 1, 2));
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ag_tensor *y = swish(x);
    ck_assert_str_eq(ag_grad_fn_name(y), "swish::swish");
    assert_values(grad_of_sum(y, x), 1, TU_SHAPE(6), dy, 1e-15);
}
END_TEST

START_TEST(swish_gradcheck_and_gradgradcheck) {
    const int as_is = AS_IS, transposed = TRANSPOSED;
    ag_tensor *m = random_leaf(1, 2, TU_SHAPE(3, 4)), *s = random_leaf(2, 0, NULL);
    ck_assert_msg(ag_gradcheck(swish_fn, (void *)&as_is, 1, &m, NULL) == AG_OK, "%s",
                  ag_last_error());
    ck_assert_msg(ag_gradgradcheck(swish_fn, (void *)&as_is, 1, &m, NULL) == AG_OK, "%s",
                  ag_last_error());
    ck_assert_msg(ag_gradgradcheck(swish_fn, (void *)&as_is, 1, &s, NULL) == AG_OK, "%s",
                  ag_last_error());
    /* Through a transposed (non-contiguous) view of the input. */
    ck_assert_msg(ag_gradgradcheck(swish_fn, (void *)&transposed, 1, &m, NULL) == AG_OK, "%s",
                  ag_last_error());
}
END_TEST

START_TEST(swish_strided_inputs) {
    ag_tensor *m = random_leaf(3, 2, TU_SHAPE(4, 5));
    ag_tensor *views[2] = {ag_transpose(m, 0, 1), ag_slice(m, 1, 1, 5, 2)};
    for (int v = 0; v < 2; v++) {
        ck_assert(!ag_is_contiguous(views[v]));
        double diff = tu_max_abs_diff(swish(views[v]), swish(ag_contiguous(views[v])));
        ck_assert_msg(diff == 0, "view %d differs from its contiguous copy by %g", v, diff);
    }
}
END_TEST

/* ---- logsumexp ---- */

START_TEST(logsumexp_values) {
    ag_tensor *lse, *max;
    const double rows[7][2] = {
        {0, 0}, {1, 2}, {-1000, -1000}, {3, -1}, {-INFINITY, -INFINITY}, {INFINITY, 1}, {NAN, 1}};
    for (ag_dtype dt = AG_F32; dt <= AG_F64; dt++) {
        ck_assert_int_eq(
            logsumexp(tu_tensor(dt, 2, TU_SHAPE(7, 2), (const double *)rows), &lse, &max), AG_OK);
        ck_assert_int_eq(ag_dtype_of(lse), dt);
        assert_values(lse, 1, TU_SHAPE(7),
                      TU_VALUES(0.6931471805599453, 2.313261687518223, -999.3068528194401,
                                3.01814992791781, -INFINITY, INFINITY, NAN),
                      dt == AG_F32 ? 1e-4 : 1e-13);
        assert_values(max, 1, TU_SHAPE(7), TU_VALUES(0, 2, -1000, 3, -INFINITY, INFINITY, NAN), 0);
    }
    /* A 3-d input reduces its last dim; a 0-dim input is one row of one element. */
    ag_tensor *x3 = ag_reshape(ag_arange(AG_F64, 1, 7, 1), 3, TU_SHAPE(2, 1, 3));
    ck_assert_int_eq(logsumexp(x3, &lse, &max), AG_OK);
    assert_values(lse, 2, TU_SHAPE(2, 1), TU_VALUES(3.4076059644443806, 6.407605964444381), 1e-14);
    assert_values(max, 2, TU_SHAPE(2, 1), TU_VALUES(3, 6), 0);
    ck_assert_int_eq(logsumexp(ag_scalar(AG_F64, 0.5), &lse, &max), AG_OK);
    assert_values(lse, 0, NULL, TU_VALUES(0.5), 0);
    assert_values(max, 0, NULL, TU_VALUES(0.5), 0);
    /* No rows: nothing to write. */
    ck_assert_int_eq(logsumexp(ag_zeros(AG_F64, 2, TU_SHAPE(0, 4)), &lse, &max), AG_OK);
    assert_values(lse, 1, TU_SHAPE(0), NULL, 0);
}
END_TEST

START_TEST(logsumexp_gradients) {
    /* grad of lse is softmax; grad of max is 1 at the max, split between ties. */
    ag_tensor *x = tu_tensor(AG_F64, 2, TU_SHAPE(2, 3), TU_VALUES(1, 2, 3, 3, 1, 3));
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ag_tensor *lse, *max, *g = NULL;
    ck_assert_int_eq(logsumexp(x, &lse, &max), AG_OK);
    ck_assert_str_eq(ag_grad_fn_name(max), "fused::logsumexp");
    assert_values(grad_of_sum(lse, x), 2, TU_SHAPE(2, 3),
                  TU_VALUES(0.09003057317038046, 0.24472847105479764, 0.6652409557748218,
                            0.4683105308334812, 0.06337893833303762, 0.4683105308334812),
                  1e-15);
    ck_assert_int_eq(logsumexp(x, &lse, &max), AG_OK);
    assert_values(grad_of_sum(max, x), 2, TU_SHAPE(2, 3), TU_VALUES(0, 0, 1, 0.5, 0, 0.5), 0);
    /* Both outputs used; float32 runs the kernel's float32 path. */
    ag_tensor *x32 = ag_to_dtype(ag_detach(x), AG_F32);
    ck_assert_int_eq(ag_set_requires_grad(x32, true), AG_OK);
    ck_assert_int_eq(logsumexp(x32, &lse, &max), AG_OK);
    ag_tensor *both = ag_add(lse, max);
    ck_assert_int_eq(ag_backward(ag_sum(both, 0, NULL, false), NULL), AG_OK);
    g = ag_tensor_grad(x32);
    ck_assert_int_eq(ag_dtype_of(g), AG_F32);
    assert_values(g, 2, TU_SHAPE(2, 3),
                  TU_VALUES(0.09003057317038046, 0.24472847105479764, 1.6652409557748218,
                            0.9683105308334812, 0.06337893833303762, 0.9683105308334812),
                  1e-6);
}
END_TEST

START_TEST(logsumexp_gradcheck) {
    const int as_is = AS_IS, transposed = TRANSPOSED;
    ag_tensor *m = random_leaf(4, 2, TU_SHAPE(3, 5)), *t = random_leaf(5, 3, TU_SHAPE(2, 3, 4));
    ck_assert_msg(ag_gradcheck(logsumexp_fn, (void *)&as_is, 1, &m, NULL) == AG_OK, "%s",
                  ag_last_error());
    ck_assert_msg(ag_gradcheck(logsumexp_fn, (void *)&as_is, 1, &t, NULL) == AG_OK, "%s",
                  ag_last_error());
    /* Transposed: the reduced dim is strided. */
    ck_assert_msg(ag_gradcheck(logsumexp_fn, (void *)&transposed, 1, &m, NULL) == AG_OK, "%s",
                  ag_last_error());
}
END_TEST

START_TEST(logsumexp_strided_inputs) {
    ag_tensor *m = random_leaf(6, 2, TU_SHAPE(4, 6));
    ag_tensor *views[2] = {ag_transpose(m, 0, 1), ag_slice(m, 1, 0, 6, 2)};
    for (int v = 0; v < 2; v++) {
        ag_tensor *lse, *max, *lse_c, *max_c;
        ck_assert_int_eq(logsumexp(views[v], &lse, &max), AG_OK);
        ck_assert_int_eq(logsumexp(ag_contiguous(views[v]), &lse_c, &max_c), AG_OK);
        ck_assert(tu_max_abs_diff(lse, lse_c) == 0 && tu_max_abs_diff(max, max_c) == 0);
    }
}
END_TEST

START_TEST(logsumexp_double_backward_fails) {
    ag_tensor *x = random_leaf(7, 2, TU_SHAPE(2, 3)), *lse, *max, *g = NULL, *gg = NULL;
    ck_assert_int_eq(logsumexp(x, &lse, &max), AG_OK);
    /* The gradient flowing into the op must have history (here 2·lse) for the first
     * backward to be recorded, as with PyTorch's once_differentiable... */
    ag_tensor *total = ag_sum(ag_mul(lse, lse), 0, NULL, false);
    ck_assert_msg(ag_grad(1, &total, 1, &x, NULL, true, true, false, &g) == AG_OK, "%s",
                  ag_last_error());
    ck_assert(ag_requires_grad(g));
    /* ...and its backward is PyTorch's DelayedError. */
    ag_tensor *g_total = ag_sum(ag_mul(g, g), 0, NULL, false);
    assert_error(ag_grad(1, &g_total, 1, &x, NULL, false, false, false, &gg), AG_ERR_UNSUPPORTED,
                 ONCE_DIFF_WORDS);
    ck_assert_ptr_null(gg);
    /* gradgradcheck reaches the same error. */
    const int as_is = AS_IS;
    assert_error(ag_gradgradcheck(logsumexp_fn, (void *)&as_is, 1, &x, NULL), AG_ERR_UNSUPPORTED,
                 ONCE_DIFF_WORDS);
}
END_TEST

/* Plugin ops declare no forward-mode rule: their tangents come from their backward. A
 * composed backward (swish) gives the exact tangent; a once-differentiable one (logsumexp)
 * cannot, and says so. */
START_TEST(plugin_tangents_come_from_the_backward) {
    const double dy[6] = {-0.09078424878489547, 0.07232948812851325, 0.5,
                          0.7399611873026518,   0.9276705118714867,  1.0907842487848955};
    const double v[6] = {1, -2, 0.5, 3, 0, -1};
    double want[6];
    for (int i = 0; i < 6; i++) want[i] = dy[i] * v[i];
    ck_assert_int_eq(ag_dual_level_enter(), AG_OK);
    ag_tensor *x = tu_tensor(AG_F64, 1, TU_SHAPE(6), TU_VALUES(-2, -1, 0, 0.5, 1, 2));
    ag_tensor *d = ag_make_dual(x, tu_tensor(AG_F64, 1, TU_SHAPE(6), v)), *tangent = NULL;
    ck_assert_int_eq(ag_unpack_dual(swish(d), NULL, &tangent), AG_OK);
    assert_values(tangent, 1, TU_SHAPE(6), want, 1e-15);
    ag_tensor *lse, *max;
    ag_tensor *m =
        ag_make_dual(ag_reshape(x, 2, TU_SHAPE(2, 3)), ag_ones(AG_F64, 2, TU_SHAPE(2, 3)));
    assert_error(logsumexp(m, &lse, &max), AG_ERR_UNSUPPORTED, ONCE_DIFF_WORDS);
    ck_assert_int_eq(ag_dual_level_exit(), AG_OK);
}
END_TEST

/* ---- both ---- */

START_TEST(saved_input_modified_in_place) {
    ag_tensor *x = random_leaf(8, 2, TU_SHAPE(2, 3));
    for (int k = 0; k < 2; k++) {
        ag_tensor *h = ag_mul_scalar(x, 1.0), *y = NULL, *unused = NULL; /* non-leaf */
        if (k == 0)
            y = swish(h);
        else
            ck_assert_int_eq(logsumexp(h, &y, &unused), AG_OK);
        ck_assert_ptr_nonnull(ag_add_scalar_(h, 1.0));
        assert_error(ag_backward(ag_sum(y, 0, NULL, false), NULL), AG_ERR_INPLACE,
                     "modified by an inplace operation");
    }
}
END_TEST

START_TEST(refused_inputs) {
    ag_tensor *i64 = ag_from_i64((const int64_t[]){1, 2, 3}, 1, TU_SHAPE(3)), *lse, *max;
    ck_assert_ptr_null(swish(i64));
    assert_error(ag_last_status(), AG_ERR_DTYPE, "swish::swish: input 0 is int64[3]");
    assert_error(logsumexp(i64, &lse, &max), AG_ERR_DTYPE, "fused::logsumexp: input 0 is int64[3]");
    ck_assert(!lse && !max);
    /* The max of an empty row is undefined. */
    assert_error(logsumexp(ag_zeros(AG_F64, 2, TU_SHAPE(3, 0)), &lse, &max), AG_ERR_SHAPE,
                 "fused::logsumexp: the last dim of the input (dim 1) has size 0");
}
END_TEST

int main(void) {
    /* Load once for every test (the registry is process-wide). */
    const char *paths[2] = {AG_TEST_SWISH_PLUGIN, AG_TEST_LSE_PLUGIN};
    for (int i = 0; i < 2; i++)
        if (ag_plugin_load(paths[i]) != AG_OK) {
            fprintf(stderr, "test_plugins: %s\n", ag_last_error());
            return EXIT_FAILURE;
        }
    Suite *s = suite_create("plugins");
    TCase *tc = tcase_create("plugins");
    tcase_add_checked_fixture(tc, tu_scope_setup, tu_scope_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, plugins_are_registered);
    tcase_add_test(tc, swish_values);
    tcase_add_test(tc, swish_gradient_is_the_formula);
    tcase_add_test(tc, swish_gradcheck_and_gradgradcheck);
    tcase_add_test(tc, swish_strided_inputs);
    tcase_add_test(tc, logsumexp_values);
    tcase_add_test(tc, logsumexp_gradients);
    tcase_add_test(tc, logsumexp_gradcheck);
    tcase_add_test(tc, logsumexp_strided_inputs);
    tcase_add_test(tc, logsumexp_double_backward_fails);
    tcase_add_test(tc, plugin_tangents_come_from_the_backward);
    tcase_add_test(tc, saved_input_modified_in_place);
    tcase_add_test(tc, refused_inputs);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
