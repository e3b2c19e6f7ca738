/* Autograd semantics against PyTorch's: .grad accumulation, retain_grad, backward with a
 * gradient, retain_graph, ag_grad, create_graph, no_grad, detach, version counters and
 * in-place ops, hooks, scopes. */
#include <check.h>
#include <pthread.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "ag/ag.h"
#include "test_util.h"

static ag_tensor *vec(const double *v, int64_t n, bool requires_grad) {
    ag_tensor *t = ag_from_f64(v, 1, &n);
    ck_assert_ptr_nonnull(t);
    if (requires_grad) ck_assert_int_eq(ag_set_requires_grad(t, true), AG_OK);
    return t;
}

static void assert_values(const ag_tensor *t, const double *expected, int64_t n, double tol) {
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(ag_numel(t), n);
    double got[64];
    ag_tensor *f64 = ag_to_dtype((ag_tensor *)t, AG_F64);
    ck_assert_int_eq(ag_to_host(f64, got, sizeof got), AG_OK);
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabs(got[i] - expected[i]) <= tol, "element %lld: got %.10g expected %.10g",
                      (long long)i, got[i], expected[i]);
}

static void assert_error(ag_status st, ag_status expected, const char *words) {
    ck_assert_int_eq(st, expected);
    ck_assert_msg(strstr(ag_last_error(), words), "message '%s' lacks '%s'", ag_last_error(),
                  words);
    ag_clear_error();
}

/* §D-1: y = (x0*x1 + x2)^2 at [2, -3, 0.5] → grad [33, -22, -11]. */
static ag_tensor *d1(ag_tensor *x) {
    ag_tensor *a = ag_add(ag_mul(ag_select(x, 0, 0), ag_select(x, 0, 1)), ag_select(x, 0, 2));
    return ag_pow_scalar(a, 2);
}

START_TEST(grad_is_null_then_accumulates) {
    ag_tensor *x = vec((double[]){2, -3, 0.5}, 3, true);
    ck_assert_ptr_null(ag_tensor_grad(x));
    ck_assert_int_eq(ag_backward(d1(x), NULL), AG_OK);
    assert_values(ag_tensor_grad(x), (double[]){33, -22, -11}, 3, 1e-12);
    ck_assert_int_eq(ag_backward(d1(x), NULL), AG_OK);
    assert_values(ag_tensor_grad(x), (double[]){66, -44, -22}, 3, 1e-12);
    ck_assert_int_eq(ag_set_grad(x, NULL), AG_OK);
    ck_assert_ptr_null(ag_tensor_grad(x));
}
END_TEST

START_TEST(non_leaf_grad_only_with_retain_grad) {
    ag_tensor *x = vec((double[]){1, 2}, 2, true);
    ag_tensor *y = ag_mul_scalar(x, 3), *z = ag_mul_scalar(x, 4);
    ck_assert(!ag_is_leaf(y));
    ck_assert_int_eq(ag_retain_grad(y), AG_OK);
    ag_tensor *loss = ag_sum(ag_add(ag_mul(y, y), z), 0, NULL, false);
    ck_assert_int_eq(ag_backward(loss, NULL), AG_OK);
    assert_values(ag_tensor_grad(y), (double[]){6, 12}, 2, 1e-12);
    ck_assert_ptr_null(ag_tensor_grad(z));
    assert_values(ag_tensor_grad(x), (double[]){18 + 4, 36 + 4}, 2, 1e-12);
    ck_assert_str_eq(ag_grad_fn_name(y), "mul");
}
END_TEST

START_TEST(backward_of_non_scalar_needs_gradient) {
    ag_tensor *x = vec((double[]){1, 2, 3}, 3, true);
    ag_tensor *y = ag_mul_scalar(x, 2);
    assert_error(ag_backward(y, NULL), AG_ERR_SHAPE,
                 "grad can be implicitly created only for scalar outputs");
    ag_tensor *wrong = vec((double[]){1, 1}, 2, false);
    assert_error(ag_backward(y, wrong), AG_ERR_SHAPE,
                 "Mismatch in shape: grad_output[0] has a shape of [2]");
    ck_assert_int_eq(ag_backward(y, vec((double[]){1, 0.5, -1}, 3, false)), AG_OK);
    assert_values(ag_tensor_grad(x), (double[]){2, 1, -2}, 3, 1e-12);
}
END_TEST

START_TEST(backward_on_tensor_without_grad_fails) {
    ag_tensor *x = vec((double[]){1}, 1, false);
    assert_error(ag_backward(ag_mul_scalar(x, 2), NULL), AG_ERR_NO_GRAD, "does not require grad");
}
END_TEST

START_TEST(retain_graph_and_freed_buffers) {
    ag_tensor *x = vec((double[]){1, 2}, 2, true);
    ag_tensor *loss = ag_sum(ag_mul(x, x), 0, NULL, false);
    ck_assert_int_eq(ag_backward_ex(loss, NULL, true, false), AG_OK);
    ck_assert_int_eq(ag_backward(loss, NULL), AG_OK);
    assert_values(ag_tensor_grad(x), (double[]){4, 8}, 2, 1e-12);
    assert_error(ag_backward(loss, NULL), AG_ERR_GRAPH_FREED,
                 "backward through the graph a second time");
    /* Nodes that saved nothing may run twice: add and sum save no tensors. */
    ag_tensor *lin = ag_sum(ag_add_scalar(x, 1), 0, NULL, false);
    ck_assert_int_eq(ag_backward(lin, NULL), AG_OK);
    ck_assert_int_eq(ag_backward(lin, NULL), AG_OK);
    assert_values(ag_tensor_grad(x), (double[]){6, 10}, 2, 1e-12);
}
END_TEST

START_TEST(grad_does_not_touch_dot_grad) {
    ag_tensor *x = vec((double[]){1, 2, 3}, 3, true), *w = vec((double[]){5}, 1, true);
    ag_tensor *y = ag_sum(ag_pow_scalar(x, 3), 0, NULL, false), *g[2];
    ck_assert_int_eq(ag_grad(1, &y, 1, &x, NULL, true, false, false, g), AG_OK);
    assert_values(g[0], (double[]){3, 12, 27}, 3, 1e-12);
    ck_assert_ptr_null(ag_tensor_grad(x));
    ag_tensor *inputs[2] = {x, w};
    assert_error(ag_grad(1, &y, 2, inputs, NULL, true, false, false, g), AG_ERR_INVALID_ARG,
                 "appears to not have been used in the graph");
    ck_assert_int_eq(ag_grad(1, &y, 2, inputs, NULL, false, false, true, g), AG_OK);
    ck_assert_ptr_null(g[1]);
    ag_tensor *c = vec((double[]){1}, 1, false);
    assert_error(ag_grad(1, &y, 1, &c, NULL, false, false, false, g), AG_ERR_NO_GRAD,
                 "does not require grad");
}
END_TEST

/* §J-3: d/dx sum(d/dx sum(x^2)) = [2, 2, 2], through create_graph. */
START_TEST(create_graph_second_derivative) {
    ag_tensor *x = vec((double[]){0.3, -1.2, 2.0}, 3, true), *g, *h;
    ag_tensor *y = ag_sum(ag_mul(x, x), 0, NULL, false);
    ck_assert_int_eq(ag_grad(1, &y, 1, &x, NULL, true, true, false, &g), AG_OK);
    ck_assert(ag_requires_grad(g));
    assert_values(g, (double[]){0.6, -2.4, 4.0}, 3, 1e-12);
    ag_tensor *gs = ag_sum(g, 0, NULL, false);
    ck_assert_int_eq(ag_grad(1, &gs, 1, &x, NULL, false, false, false, &h), AG_OK);
    assert_values(h, (double[]){2, 2, 2}, 3, 1e-12);
    /* backward with create_graph leaves a differentiable .grad. */
    ag_tensor *z = ag_sum(ag_pow_scalar(x, 3), 0, NULL, false);
    ck_assert_int_eq(ag_backward_ex(z, NULL, false, true), AG_OK);
    ck_assert(ag_requires_grad(ag_tensor_grad(x)));
    /* x.grad's graph refers back to x (a cycle, as in PyTorch): clearing it frees both. */
    ck_assert_int_eq(ag_set_grad(x, NULL), AG_OK);
}
END_TEST

START_TEST(no_grad_and_detach) {
    ag_tensor *x = vec((double[]){1, 2}, 2, true);
    bool prev = ag_set_grad_enabled(false);
    ag_tensor *y = ag_mul_scalar(x, 2);
    ag_set_grad_enabled(prev);
    ck_assert(!ag_requires_grad(y));
    ck_assert(ag_is_grad_enabled());
    ag_tensor *d = ag_detach(ag_mul_scalar(x, 3));
    ck_assert(!ag_requires_grad(d));
    ck_assert(ag_is_leaf(d));
    /* detach shares storage and version counter. */
    ag_tensor *base = vec((double[]){1, 2}, 2, false), *alias = ag_detach(base);
    ck_assert_ptr_eq(ag_data_ptr(base), ag_data_ptr(alias));
    uint64_t v0 = ag_version_of(base);
    ck_assert_ptr_nonnull(ag_add_scalar_(alias, 1));
    ck_assert_uint_eq(ag_version_of(base), v0 + 1);
    assert_values(base, (double[]){2, 3}, 2, 0);
}
END_TEST

START_TEST(inplace_on_saved_tensor_is_detected) {
    ag_tensor *x = vec((double[]){1, 2, 3}, 3, true);
    ag_tensor *y = ag_mul_scalar(x, 1.0);             /* a non-leaf */
    ag_tensor *z = ag_sum(ag_exp(y), 0, NULL, false); /* exp saves y */
    ck_assert_ptr_nonnull(ag_mul_scalar_(y, 2));
    ck_assert_uint_eq(ag_version_of(y), 1);
    ag_status st = ag_backward(z, NULL);
    ck_assert_int_eq(st, AG_ERR_INPLACE);
    const char *msg = ag_last_error();
    ck_assert_msg(strstr(msg, "one of the variables needed for gradient computation has been "
                              "modified by an inplace operation"),
                  "%s", msg);
    ck_assert_msg(strstr(msg, "float64[3]") && strstr(msg, "exp") && strstr(msg, "version 1") &&
                      strstr(msg, "expected version 0"),
                  "%s", msg);
}
END_TEST

START_TEST(inplace_is_recorded_on_non_leaf) {
    ag_tensor *x = vec((double[]){1, 2}, 2, true);
    ag_tensor *y = ag_mul(x, x);
    ck_assert_ptr_nonnull(ag_mul_scalar_(y, 3)); /* y = 3 x^2 */
    ck_assert_ptr_nonnull(ag_add_(y, x));        /* y = 3 x^2 + x */
    ck_assert_int_eq(ag_backward(ag_sum(y, 0, NULL, false), NULL), AG_OK);
    assert_values(ag_tensor_grad(x), (double[]){7, 13}, 2, 1e-12);
    /* A leaf that requires grad is refused unless grad mode is off. */
    ck_assert_ptr_null(ag_add_scalar_(x, 1));
    assert_error(ag_last_status(), AG_ERR_INPLACE, "a leaf Variable that requires grad");
    bool prev = ag_set_grad_enabled(false);
    ck_assert_ptr_nonnull(ag_add_scalar_(x, 1));
    ag_set_grad_enabled(prev);
    assert_values(x, (double[]){2, 3}, 2, 0);
    /* Broadcasting may not grow the destination. */
    ag_tensor *small = vec((double[]){1}, 1, false);
    ck_assert_ptr_null(ag_add_(small, vec((double[]){1, 2}, 2, false)));
    assert_error(ag_last_status(), AG_ERR_SHAPE, "doesn't match the broadcast shape");
}
END_TEST

static ag_tensor *double_grad(ag_tensor *grad, void *user) {
    (*(int *)user)++;
    return ag_mul_scalar(grad, 2);
}

static ag_tensor *observe(ag_tensor *grad, void *user) {
    double v;
    ck_assert_int_eq(ag_item(ag_sum(grad, 0, NULL, false), &v), AG_OK);
    *(double *)user = v;
    return NULL;
}

START_TEST(hooks_replace_observe_and_remove) {
    ag_tensor *x = vec((double[]){1, 2}, 2, true);
    int calls = 0;
    double seen = 0;
    uint64_t h = ag_register_hook(x, double_grad, &calls);
    ck_assert_uint_gt(h, 0);
    ag_tensor *y = ag_mul_scalar(x, 3);
    ck_assert_uint_gt(ag_register_hook(y, observe, &seen), 0);
    ck_assert_int_eq(ag_backward(ag_sum(y, 0, NULL, false), NULL), AG_OK);
    ck_assert_int_eq(calls, 1);
    ck_assert(seen == 2.0);
    assert_values(ag_tensor_grad(x), (double[]){6, 6}, 2, 0);
    ck_assert_int_eq(ag_remove_hook(x, h), AG_OK);
    assert_error(ag_remove_hook(x, h), AG_ERR_INVALID_ARG, "no hook");
    ck_assert_int_eq(ag_backward(ag_sum(ag_mul_scalar(x, 3), 0, NULL, false), NULL), AG_OK);
    ck_assert_int_eq(calls, 1);
    assert_values(ag_tensor_grad(x), (double[]){9, 9}, 2, 0);
}
END_TEST

START_TEST(null_propagates_first_error) {
    ag_tensor *a = vec((double[]){1, 2, 3}, 3, false), *b = vec((double[]){1, 2}, 2, false);
    ag_tensor *r = ag_exp(ag_mul(ag_add(a, b), a));
    ck_assert_ptr_null(r);
    ck_assert_int_eq(ag_last_status(), AG_ERR_SHAPE);
    ck_assert_msg(strstr(ag_last_error(), "add"), "%s", ag_last_error());
    ck_assert_int_eq(ag_backward(r, NULL), AG_ERR_SHAPE);
    ag_clear_error();
}
END_TEST

START_TEST(shared_subgraph_and_deep_chain) {
    /* Diamond: y = a*a + a, a = 2x: dy/dx = (4a + 1) * 2... checked numerically. */
    ag_tensor *x = vec((double[]){0.5}, 1, true);
    ag_tensor *a = ag_mul_scalar(x, 2);
    ag_tensor *y = ag_add(ag_mul(a, a), a);
    ck_assert_int_eq(ag_backward(ag_sum(y, 0, NULL, false), NULL), AG_OK);
    assert_values(ag_tensor_grad(x), (double[]){2 * (2 * 1.0 + 1)}, 1, 1e-12);
    /* A 20,000-node chain is built and freed without recursion. */
    ag_tensor *w = vec((double[]){1}, 1, true), *c = w;
    ag_scope *inner = ag_scope_begin();
    for (int i = 0; i < 20000; i++) c = ag_mul_scalar(c, 1.0);
    ck_assert_int_eq(ag_backward(ag_sum(c, 0, NULL, false), NULL), AG_OK);
    ag_scope_end(inner);
    assert_values(ag_tensor_grad(w), (double[]){1}, 1, 0);
}
END_TEST

START_TEST(scope_return_and_keep) {
    ag_scope *outer = ag_scope_begin();
    ag_scope *inner = ag_scope_begin();
    ag_tensor *kept = ag_keep(ag_full(AG_F32, 1, (int64_t[]){4}, 2.0));
    ag_tensor *ret = ag_scope_return(inner, ag_add_scalar(kept, 1));
    assert_values(ret, (double[]){3, 3, 3, 3}, 4, 0);
    ag_scope_end(outer);
    assert_values(kept, (double[]){2, 2, 2, 2}, 4, 0);
    ag_release(kept);
}
END_TEST

/* A thread turns grad mode off and records nothing, while the main thread still does. */
static void *thread_without_grad(void *arg) {
    ag_tensor *x = arg;
    ag_set_grad_enabled(false);
    ag_scope *s = ag_scope_begin();
    ag_tensor *y = ag_mul_scalar(x, 2);
    bool recorded = ag_requires_grad(y);
    ag_scope_end(s);
    return recorded ? x : NULL;
}

START_TEST(grad_mode_is_thread_local) {
    ag_tensor *x = vec((double[]){1, 2}, 2, true);
    pthread_t thread;
    void *result = x;
    ck_assert_int_eq(pthread_create(&thread, NULL, thread_without_grad, x), 0);
    ck_assert_int_eq(pthread_join(thread, &result), 0);
    ck_assert_ptr_null(result);
    ck_assert(ag_is_grad_enabled());
    ck_assert(ag_requires_grad(ag_mul_scalar(x, 2)));
}
END_TEST

/* m.div_(m) on a non-leaf: the op sees m's old value for both operands, so its node does not
 * save m itself (m -> node -> m would be a cycle, a leak LeakSanitizer reports). Found by
 * fuzz/fuzz_ops. */
START_TEST(inplace_op_on_itself) {
    ag_tensor *x = tu_tensor(AG_F64, 1, TU_SHAPE(3), TU_VALUES(1, -2, 4));
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ag_tensor *m = ag_mul_scalar(x, 2);
    ck_assert_ptr_nonnull(ag_div_(m, m));
    ck_assert_int_eq(ag_backward(ag_sum(ag_mul(m, x), 0, NULL, false), NULL), AG_OK);
    char msg[256] = "";
    /* m is 1 everywhere, so d(sum(m * x))/dx = m + x * dm/dx = 1 + 0. */
    ck_assert_msg(tu_values_are(m, 1, TU_SHAPE(3), TU_VALUES(1, 1, 1), 0, 0, msg, sizeof msg, NULL),
                  "%s", msg);
    ck_assert_msg(tu_values_are(ag_tensor_grad(x), 1, TU_SHAPE(3), TU_VALUES(1, 1, 1), 0, 0, msg,
                                sizeof msg, NULL),
                  "%s", msg);
}
END_TEST

static Suite *autograd_suite(void) {
    Suite *s = suite_create("autograd");
    TCase *tc = tcase_create("semantics");
    tcase_add_checked_fixture(tc, tu_scope_setup, tu_scope_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, grad_is_null_then_accumulates);
    tcase_add_test(tc, non_leaf_grad_only_with_retain_grad);
    tcase_add_test(tc, backward_of_non_scalar_needs_gradient);
    tcase_add_test(tc, backward_on_tensor_without_grad_fails);
    tcase_add_test(tc, retain_graph_and_freed_buffers);
    tcase_add_test(tc, grad_does_not_touch_dot_grad);
    tcase_add_test(tc, create_graph_second_derivative);
    tcase_add_test(tc, no_grad_and_detach);
    tcase_add_test(tc, inplace_on_saved_tensor_is_detected);
    tcase_add_test(tc, inplace_is_recorded_on_non_leaf);
    tcase_add_test(tc, hooks_replace_observe_and_remove);
    tcase_add_test(tc, null_propagates_first_error);
    tcase_add_test(tc, shared_subgraph_and_deep_chain);
    tcase_add_test(tc, scope_return_and_keep);
    tcase_add_test(tc, grad_mode_is_thread_local);
    tcase_add_test(tc, inplace_op_on_itself);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return tu_run_suite(autograd_suite());
}
