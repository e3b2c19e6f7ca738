/* Device placement with two logical cpu devices (AG_CPU_DEVICES=2, set by ctest): copies
 * between devices, gradients flowing back across a copy, the default device, and the
 * error for mixing devices. */
#include <check.h>
#include <string.h>
#include "ag/ag.h"
#include "test_util.h"

static ag_scope *scope;
static ag_device cpu0, cpu1;

static void setup(void) {
    ag_clear_error();
    ck_assert_int_eq(ag_device_parse("cpu:0", &cpu0), AG_OK);
    ck_assert_int_eq(ag_device_parse("cpu:1", &cpu1), AG_OK);
    scope = ag_scope_begin();
}

static void teardown(void) {
    ag_scope_end(scope);
    ag_set_default_device((ag_device){-1, -1});
}

static bool same_device(ag_device a, ag_device b) {
    return a.backend == b.backend && a.index == b.index;
}

START_TEST(copy_to_another_device) {
    ag_tensor *x = ag_from_f64((double[]){1, 2, 3, 4, 5, 6}, 2, (int64_t[]){2, 3});
    ag_tensor *xt = ag_transpose(x, 0, 1);
    ag_tensor *y = ag_to_device(xt, cpu1);
    ck_assert_ptr_nonnull(y);
    ck_assert(same_device(ag_device_of(y), cpu1));
    ck_assert(same_device(ag_device_of(x), cpu0));
    ck_assert_ptr_ne(ag_data_ptr(y), ag_data_ptr(x));
    double got[6];
    ck_assert_int_eq(ag_to_host(y, got, sizeof got), AG_OK);
    const double expected[6] = {1, 4, 2, 5, 3, 6};
    for (int i = 0; i < 6; i++) ck_assert(got[i] == expected[i]);
    /* Copying to the device a tensor is on already is the tensor itself. */
    ck_assert_ptr_eq(ag_data_ptr(ag_to_device(x, cpu0)), ag_data_ptr(x));
}
END_TEST

START_TEST(mixing_devices_is_an_error) {
    ag_tensor *a = ag_ones(AG_F32, 1, (int64_t[]){3});
    ag_tensor *b = ag_to_device(ag_ones(AG_F32, 1, (int64_t[]){3}), cpu1);
    ck_assert_ptr_null(ag_add(a, b));
    ck_assert_int_eq(ag_last_status(), AG_ERR_DEVICE);
    const char *msg = ag_last_error();
    ck_assert_msg(strstr(msg, "add") && strstr(msg, "same device") && strstr(msg, "cpu:0") &&
                      strstr(msg, "cpu:1"),
                  "%s", msg);
    ag_clear_error();
    ck_assert_ptr_null(ag_to_device(a, (ag_device){cpu0.backend, 5}));
    ck_assert_int_eq(ag_last_status(), AG_ERR_DEVICE);
    ag_clear_error();
}
END_TEST

static ag_tensor *round_trip(ag_tensor *const *in, void *user) {
    const ag_device *other = user;
    ag_tensor *far = ag_mul(ag_to_device(in[0], *other), ag_to_device(in[0], *other));
    return ag_to_device(far, ag_device_of(in[0]));
}

START_TEST(gradients_cross_devices) {
    ag_tensor *x = ag_from_f64((double[]){0.5, -1, 2}, 1, (int64_t[]){3});
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ag_tensor *loss = ag_sum(ag_mul_scalar(ag_to_device(x, cpu1), 2), 0, NULL, false);
    ck_assert(same_device(ag_device_of(loss), cpu1));
    ck_assert_int_eq(ag_backward(loss, NULL), AG_OK);
    ag_tensor *g = ag_tensor_grad(x);
    ck_assert(same_device(ag_device_of(g), cpu0));
    double got[3];
    ck_assert_int_eq(ag_to_host(g, got, sizeof got), AG_OK);
    for (int i = 0; i < 3; i++) ck_assert(got[i] == 2.0);
    ck_assert_int_eq(ag_set_grad(x, NULL), AG_OK);
    ck_assert_int_eq(ag_gradcheck(round_trip, &cpu1, 1, &x, NULL), AG_OK);
    ck_assert_int_eq(ag_gradgradcheck(round_trip, &cpu1, 1, &x, NULL), AG_OK);
}
END_TEST

START_TEST(default_device_override) {
    ag_set_default_device(cpu1);
    ag_tensor *t = ag_zeros(AG_F32, 1, (int64_t[]){2});
    ck_assert(same_device(ag_device_of(t), cpu1));
    ag_set_default_device((ag_device){-1, -1});
    ck_assert(same_device(ag_device_of(ag_zeros(AG_F32, 0, NULL)), cpu0));
    ck_assert_int_eq(ag_synchronize(cpu1), AG_OK);
}
END_TEST

static Suite *devices_suite(void) {
    Suite *s = suite_create("devices");
    TCase *tc = tcase_create("two logical cpu devices");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, copy_to_another_device);
    tcase_add_test(tc, mixing_devices_is_an_error);
    tcase_add_test(tc, gradients_cross_devices);
    tcase_add_test(tc, default_device_override);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return tu_run_suite(devices_suite());
}
