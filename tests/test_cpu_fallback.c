/* No silent fallback: on a backend without a kernel for an op (here the swish plugin, which
 * has a cpu kernel only, on OpenCL) the op is an error naming the op and the backend,
 * unless AG_CPU_FALLBACK=1, which runs it on cpu copies, gradients included. Run through
 * ag_backend_probe with AG_BACKEND set to a non-cpu backend, with and without the switch. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "ag/ag.h"
#include "ag/plugin.h"
#include "test_util.h"

START_TEST(op_without_kernel_errors_or_falls_back) {
    const char *env = getenv("AG_CPU_FALLBACK");
    bool fallback = env && strcmp(env, "1") == 0;
    ck_assert_int_eq(ag_plugin_load(AG_TEST_SWISH_PLUGIN), AG_OK);
    const ag_op *swish = ag_op_find("swish::swish");
    ck_assert_ptr_nonnull(swish);
    const double xs[3] = {-1.5, 0.25, 2.0};
    ag_tensor *x = ag_from_f64(xs, 1, (int64_t[]){3});
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ag_tensor *y = ag_op_call1(swish, 1, &x, NULL);
    if (!fallback) {
        ck_assert_ptr_null(y);
        ck_assert_int_eq(ag_last_status(), AG_ERR_UNSUPPORTED);
        const char *msg = ag_last_error();
        ck_assert_msg(strstr(msg, "swish::swish") &&
                          strstr(msg, ag_backend_name(ag_device_of(x).backend)),
                      "%s", msg);
        ag_clear_error();
        return;
    }
    ck_assert_msg(y != NULL, "%s", ag_last_error());
    ck_assert_int_eq(ag_device_of(y).backend, ag_device_of(x).backend);
    ck_assert_int_eq(ag_backward(ag_sum(y, 0, NULL, false), NULL), AG_OK);
    double got[3], grad[3];
    ck_assert_int_eq(ag_to_host(y, got, sizeof got), AG_OK);
    ck_assert_int_eq(ag_to_host(ag_tensor_grad(x), grad, sizeof grad), AG_OK);
    for (int i = 0; i < 3; i++) {
        double s = 1 / (1 + exp(-xs[i]));
        ck_assert_double_eq_tol(got[i], xs[i] * s, 1e-12);
        ck_assert_double_eq_tol(grad[i], s + xs[i] * s * (1 - s), 1e-12);
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("cpu_fallback");
    TCase *tc = tcase_create("fallback");
    tcase_add_checked_fixture(tc, tu_scope_setup, tu_scope_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, op_without_kernel_errors_or_falls_back);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
