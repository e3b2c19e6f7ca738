/* Anomaly mode (torch.autograd.detect_anomaly): the setting and its thread-locality, the
 * AG_DETECT_ANOMALY default, the message of a NaN/Inf gradient (op, output, forward
 * origin with a backtrace), and that nothing changes with the mode off or a clean graph. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "ag/ag.h"
#include "test_util.h"

/* A leaf of float64 values on the default device that requires grad. */
static ag_tensor *leaf(const double *v, int64_t n) {
    ag_tensor *t = ag_from_f64(v, 1, &n);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(ag_set_requires_grad(t, true), AG_OK);
    return t;
}

/* sum(sqrt(x)) at x = [0, 1, 4]: sqrt's backward makes an Inf for x[0]. */
static ag_status sqrt_backward(ag_tensor *x) {
    return ag_backward(ag_sum(ag_sqrt(x), 0, NULL, false), NULL);
}

/* Asserts that msg holds words. */
static void assert_has(const char *msg, const char *words) {
    ck_assert_msg(strstr(msg, words), "message '%s' lacks '%s'", msg, words);
}

START_TEST(setting_returns_the_previous_one) {
    ag_set_detect_anomaly(false);
    ck_assert(!ag_is_anomaly_enabled());
    ck_assert(!ag_set_detect_anomaly(true));
    ck_assert(ag_is_anomaly_enabled());
    ck_assert(ag_set_detect_anomaly(true));
    ck_assert(ag_set_detect_anomaly(false));
    ck_assert(!ag_is_anomaly_enabled());
}
END_TEST

START_TEST(nan_gradient_names_op_output_and_origin) {
    bool prev = ag_set_detect_anomaly(true);
    /* b gets grad * a = NaN through input 1 of mul; a needs no gradient. */
    ag_tensor *a = ag_log(ag_from_f64(TU_VALUES(-1, 1, 2), 1, TU_SHAPE(3)));
    ag_tensor *b = leaf(TU_VALUES(1, 2, 3), 3);
    ag_status st = ag_backward(ag_sum(ag_mul(a, b), 0, NULL, false), NULL);
    ag_set_detect_anomaly(prev);
    ck_assert_int_eq(st, AG_ERR_ANOMALY);
    const char *msg = ag_last_error();
    assert_has(msg, "Function 'mul backward' returned nan values in its 1th output (input 1 of "
                    "mul, shape [3]).");
    assert_has(msg, "The forward call that created it:\nmul(float64[3], float64[3]) called from:");
    /* A backtrace line of this test's own code, past ag's frames. */
    assert_has(msg, "called from:\n  ");
    assert_has(msg, "test_anomaly");
    ck_assert_ptr_null(ag_tensor_grad(b));
    ag_clear_error();
}
END_TEST

START_TEST(inf_gradient_is_reported_as_inf) {
    bool prev = ag_set_detect_anomaly(true);
    ag_tensor *x = leaf(TU_VALUES(0, 1, 4), 3);
    ag_status st = sqrt_backward(x);
    ag_set_detect_anomaly(prev);
    ck_assert_int_eq(st, AG_ERR_ANOMALY);
    assert_has(ag_last_error(), "Function 'sqrt backward' returned inf values in its 0th output");
    assert_has(ag_last_error(), "sqrt(float64[3]) called from:");
    ag_clear_error();
}
END_TEST

START_TEST(off_lets_the_inf_through) {
    bool prev = ag_set_detect_anomaly(false);
    ag_tensor *x = leaf(TU_VALUES(0, 1, 4), 3);
    ck_assert_int_eq(sqrt_backward(x), AG_OK);
    double g[3];
    ck_assert_int_eq(ag_to_host(ag_tensor_grad(x), g, sizeof g), AG_OK);
    ck_assert(isinf(g[0]) && g[1] == 0.5 && g[2] == 0.25);
    /* Recorded with the mode off, checked with it on: the node has no origin. */
    ag_tensor *loss = ag_sum(ag_sqrt(x), 0, NULL, false);
    ag_set_detect_anomaly(true);
    ag_status st = ag_backward(loss, NULL);
    ag_set_detect_anomaly(prev);
    ck_assert_int_eq(st, AG_ERR_ANOMALY);
    assert_has(ag_last_error(), "(unknown: anomaly mode was off when the forward ran)");
    ag_clear_error();
}
END_TEST

START_TEST(clean_backward_passes_with_the_mode_on) {
    bool prev = ag_set_detect_anomaly(true);
    ag_tensor *x = leaf(TU_VALUES(1, 2, 3), 3);
    /* y = sum(x^3): dy/dx = 3x^2 = [3, 12, 27], d2y/dx2 summed = 6x = [6, 12, 18]. */
    ag_tensor *y = ag_sum(ag_pow_scalar(x, 3), 0, NULL, false);
    ag_tensor *dx = NULL;
    ck_assert_int_eq(ag_grad(1, &y, 1, &x, NULL, true, true, false, &dx), AG_OK);
    ck_assert_int_eq(ag_backward(ag_sum(dx, 0, NULL, false), NULL), AG_OK);
    ag_set_detect_anomaly(prev);
    double g[3], gg[3];
    ck_assert_int_eq(ag_to_host(ag_detach(dx), g, sizeof g), AG_OK);
    ck_assert_int_eq(ag_to_host(ag_tensor_grad(x), gg, sizeof gg), AG_OK);
    for (int i = 0; i < 3; i++) {
        ck_assert_double_eq_tol(g[i], 3.0 * (i + 1) * (i + 1), 1e-12);
        ck_assert_double_eq_tol(gg[i], 6.0 * (i + 1), 1e-12);
    }
}
END_TEST

/* Turns the mode on in this thread only and reports what backward returned. */
static void *thread_with_anomaly(void *arg) {
    ag_set_detect_anomaly(true);
    ag_scope *s = ag_scope_begin();
    ag_status st = sqrt_backward(arg);
    ag_scope_end(s);
    return (void *)(intptr_t)st;
}

START_TEST(mode_is_thread_local) {
    ag_set_detect_anomaly(false);
    ag_tensor *x = leaf(TU_VALUES(0, 1, 4), 3);
    pthread_t thread;
    void *result = NULL;
    ck_assert_int_eq(pthread_create(&thread, NULL, thread_with_anomaly, x), 0);
    ck_assert_int_eq(pthread_join(thread, &result), 0);
    ck_assert_int_eq((int)(intptr_t)result, AG_ERR_ANOMALY);
    ck_assert(!ag_is_anomaly_enabled());
    ck_assert_int_eq(sqrt_backward(x), AG_OK);
}
END_TEST

/* ag_is_anomaly_enabled of a thread that never set the mode. */
static void *default_mode(void *unused) {
    (void)unused;
    return ag_is_anomaly_enabled() ? (void *)1 : NULL;
}

START_TEST(environment_sets_the_default) {
    ck_assert_int_eq(ag_init(), AG_OK);
    const char *env = getenv("AG_DETECT_ANOMALY");
    bool expected = env && strcmp(env, "1") == 0;
    pthread_t thread;
    void *result = NULL;
    ck_assert_int_eq(pthread_create(&thread, NULL, default_mode, NULL), 0);
    ck_assert_int_eq(pthread_join(thread, &result), 0);
    ck_assert_int_eq(result != NULL, expected);
}
END_TEST

static Suite *anomaly_suite(void) {
    Suite *s = suite_create("anomaly");
    TCase *tc = tcase_create("anomaly");
    tcase_add_checked_fixture(tc, tu_scope_setup, tu_scope_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, setting_returns_the_previous_one);
    tcase_add_test(tc, nan_gradient_names_op_output_and_origin);
    tcase_add_test(tc, inf_gradient_is_reported_as_inf);
    tcase_add_test(tc, off_lets_the_inf_through);
    tcase_add_test(tc, clean_backward_passes_with_the_mode_on);
    tcase_add_test(tc, mode_is_thread_local);
    tcase_add_test(tc, environment_sets_the_default);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return tu_run_suite(anomaly_suite());
}
