/* Hooks and their firing order against PyTorch 2.x: tensor hooks, retain_grad,
 * post-accumulate-grad hooks, module forward pre-hooks and forward hooks, removal by
 * handle. */
#include <check.h>
#include <stdint.h>
#include <string.h>
#include "ag/ag.h"
#include "ag/nn.h"
#include "test_util.h"

/* The tags of the hooks that ran, in firing order (reset by every test). */
static char fired[64];
/* Number of tags in fired. */
static int n_fired;

/* Appends the tag a hook was registered with (its user pointer holds a character). */
static void log_tag(void *user) {
    ck_assert_int_lt(n_fired, (int)sizeof fired - 1);
    fired[n_fired++] = (char)(intptr_t)user;
    fired[n_fired] = '\0';
}

/* Registration argument carrying tag c. */
static void *tag(char c) {
    return (void *)(intptr_t)c;
}

/* Asserts t's values (any dtype) equal want[0..n) exactly. */
static void assert_values(const ag_tensor *t, int64_t n, const double *want) {
    char msg[256] = "";
    ck_assert_msg(tu_values_are(t, 1, (int64_t[]){n}, want, 0, 0, msg, sizeof msg, NULL), "%s",
                  msg);
}

/* Asserts the last error has status st and mentions words, then clears it. */
static void assert_error(ag_status st, const char *words) {
    ck_assert_int_eq(ag_last_status(), st);
    ck_assert_msg(strstr(ag_last_error(), words), "message '%s' lacks '%s'", ag_last_error(),
                  words);
    ag_clear_error();
}

/* A float64 leaf requiring grad holding v[0..n). */
static ag_tensor *leaf(int64_t n, const double *v) {
    ag_tensor *t = tu_tensor(AG_F64, 1, (int64_t[]){n}, v);
    ck_assert_int_eq(ag_set_requires_grad(t, true), AG_OK);
    return t;
}

/* Tensor hook that only logs its tag. */
static ag_tensor *observe(ag_tensor *grad, void *user) {
    (void)grad;
    log_tag(user);
    return NULL;
}

/* Tensor hook that logs and multiplies the gradient by 10. */
static ag_tensor *times10(ag_tensor *grad, void *user) {
    log_tag(user);
    return ag_mul_scalar(grad, 10);
}

/* Tensor hook that logs and clamps the gradient into [-50, 50]. */
static ag_tensor *clamp50(ag_tensor *grad, void *user) {
    log_tag(user);
    return ag_clamp(grad, true, -50, true, 50);
}

/* Expected .grad of the leaf a post hook sees (the hook checks it has been accumulated). */
static const double *post_expect;

/* Post-accumulate-grad hook: logs and checks .grad is already the accumulated value. */
static void post_check(ag_tensor *t, void *user) {
    log_tag(user);
    if (post_expect) assert_values(ag_tensor_grad(t), ag_numel(t), post_expect);
}

START_TEST(tensor_hooks_then_retain_grad_then_accumulate_then_post_hooks) {
    ag_tensor *x = leaf(3, TU_VALUES(1, 2, 3));
    ag_tensor *y = ag_mul_scalar(x, 2);
    /* retain_grad registered before the hook still sees the hooked gradient (PyTorch 2.0). */
    ck_assert_int_eq(ag_retain_grad(y), AG_OK);
    ck_assert_uint_gt(ag_register_hook(y, times10, tag('Y')), 0);
    ck_assert_uint_gt(ag_register_post_accumulate_grad_hook(x, post_check, tag('P')), 0);
    ck_assert_uint_gt(ag_register_hook(x, observe, tag('A')), 0);
    ck_assert_uint_gt(ag_register_hook(x, clamp50, tag('B')), 0);
    ck_assert_uint_gt(ag_register_post_accumulate_grad_hook(x, post_check, tag('Q')), 0);
    post_expect = TU_VALUES(50, 50, 50);
    /* d sum(3y)/dy = 3, hooked to 30; dx = 60, clamped to 50. */
    ck_assert_int_eq(ag_backward(ag_sum(ag_mul_scalar(y, 3), 0, NULL, false), NULL), AG_OK);
    ck_assert_str_eq(fired, "YABPQ");
    assert_values(ag_tensor_grad(y), 3, TU_VALUES(30, 30, 30));
    assert_values(ag_tensor_grad(x), 3, TU_VALUES(50, 50, 50));
}
END_TEST

START_TEST(post_hook_fires_once_per_backward_after_all_paths) {
    ag_tensor *x = leaf(2, TU_VALUES(1, 2));
    ck_assert_uint_gt(ag_register_post_accumulate_grad_hook(x, post_check, tag('P')), 0);
    /* x reaches the loss along three edges: d(x*x + x)/dx = 2x + 1. */
    post_expect = TU_VALUES(3, 5);
    ag_tensor *loss = ag_sum(ag_add(ag_mul(x, x), x), 0, NULL, false);
    ck_assert_int_eq(ag_backward_ex(loss, NULL, true, false), AG_OK);
    ck_assert_str_eq(fired, "P");
    /* A second backward accumulates first, then fires again. */
    post_expect = TU_VALUES(6, 10);
    ck_assert_int_eq(ag_backward(loss, NULL), AG_OK);
    ck_assert_str_eq(fired, "PP");
}
END_TEST

/* Post hook of the early test: records whether the other leaf (user) had its gradient yet. */
static bool other_had_grad;
static void note_other_grad(ag_tensor *leaf, void *user) {
    (void)leaf;
    other_had_grad = ag_tensor_grad(user) != NULL;
}

START_TEST(post_hook_fires_as_soon_as_its_leaf_is_final) {
    /* loss = sum(exp(x * w_first) * w_last): backward finishes w_last at the first node and
     * w_first at the last, so w_last's hook runs while the rest of backward is still to
     * come (what lets DDP's all-reduce overlap backward, as in PyTorch). */
    ag_tensor *x = leaf(2, TU_VALUES(0.5, -1)), *w_first = leaf(2, TU_VALUES(1, 2));
    ag_tensor *w_last = leaf(2, TU_VALUES(3, 4));
    ck_assert_int_eq(ag_set_requires_grad(x, false), AG_OK);
    ck_assert_uint_gt(ag_register_post_accumulate_grad_hook(w_last, note_other_grad, w_first), 0);
    other_had_grad = true;
    ag_tensor *loss = ag_sum(ag_mul(ag_exp(ag_mul(x, w_first)), w_last), 0, NULL, false);
    ck_assert_int_eq(ag_backward(loss, NULL), AG_OK);
    ck_assert_msg(!other_had_grad, "w_last's post hook ran after w_first's gradient was in");
    ck_assert_ptr_nonnull(ag_tensor_grad(w_first));
}
END_TEST

START_TEST(leaf_hook_runs_once_on_the_summed_gradient) {
    ag_tensor *x = leaf(2, TU_VALUES(10, 30));
    ck_assert_uint_gt(ag_register_hook(x, clamp50, tag('B')), 0);
    /* 2x + 1 = [21, 61] clamped as a whole (per path it would stay [21, 61]). */
    ck_assert_int_eq(ag_backward(ag_sum(ag_add(ag_mul(x, x), x), 0, NULL, false), NULL), AG_OK);
    ck_assert_str_eq(fired, "B");
    assert_values(ag_tensor_grad(x), 2, TU_VALUES(21, 50));
    ag_tensor *g = NULL, *loss = ag_sum(ag_add(ag_mul(x, x), x), 0, NULL, false);
    ck_assert_int_eq(ag_grad(1, &loss, 1, &x, NULL, false, false, false, &g), AG_OK);
    assert_values(g, 2, TU_VALUES(21, 50));
    ck_assert_str_eq(fired, "BB");
}
END_TEST

START_TEST(ag_grad_runs_tensor_hooks_but_not_post_hooks) {
    ag_tensor *x = leaf(2, TU_VALUES(1, 2));
    ck_assert_uint_gt(ag_register_hook(x, times10, tag('T')), 0);
    ck_assert_uint_gt(ag_register_post_accumulate_grad_hook(x, post_check, tag('P')), 0);
    ag_tensor *g = NULL;
    ag_tensor *loss = ag_sum(ag_mul_scalar(x, 3), 0, NULL, false);
    ck_assert_int_eq(ag_grad(1, &loss, 1, &x, NULL, false, false, false, &g), AG_OK);
    assert_values(g, 2, TU_VALUES(30, 30));
    ck_assert_str_eq(fired, "T");
    ck_assert_ptr_null(ag_tensor_grad(x));
}
END_TEST

/* Post hook doing an SGD step with lr 0.5 on its leaf, then clearing .grad. */
static void sgd_step(ag_tensor *t, void *user) {
    log_tag(user);
    ck_assert_ptr_nonnull(ag_sub_(t, ag_mul_scalar(ag_tensor_grad(t), 0.5)));
    ck_assert_int_eq(ag_set_grad(t, NULL), AG_OK);
}

START_TEST(post_hook_can_step_the_parameter) {
    ag_tensor *w = leaf(2, TU_VALUES(1, -1));
    ck_assert_uint_gt(ag_register_post_accumulate_grad_hook(w, sgd_step, tag('S')), 0);
    ck_assert_int_eq(ag_backward(ag_sum(ag_mul(w, w), 0, NULL, false), NULL), AG_OK);
    assert_values(w, 2, TU_VALUES(0, 0)); /* w - 0.5 * 2w */
    ck_assert_ptr_null(ag_tensor_grad(w));
    ck_assert_str_eq(fired, "S");
}
END_TEST

START_TEST(hooks_are_removed_by_handle_once) {
    ag_tensor *x = leaf(1, TU_VALUES(2));
    uint64_t t = ag_register_hook(x, times10, tag('T'));
    uint64_t p = ag_register_post_accumulate_grad_hook(x, post_check, tag('P'));
    ck_assert(t > 0 && p > 0 && t != p);
    ck_assert_int_eq(ag_remove_hook(x, t), AG_OK);
    ck_assert_int_eq(ag_remove_hook(x, p), AG_OK);
    ck_assert_int_eq(ag_remove_hook(x, p), AG_ERR_INVALID_ARG);
    assert_error(AG_ERR_INVALID_ARG, "no hook with handle");
    ck_assert_int_eq(ag_backward(ag_mul_scalar(x, 3), NULL), AG_OK);
    ck_assert_str_eq(fired, "");
    assert_values(ag_tensor_grad(x), 1, TU_VALUES(3));
}
END_TEST

START_TEST(post_hook_registration_errors) {
    ag_tensor *x = leaf(1, TU_VALUES(2));
    ag_tensor *y = ag_mul_scalar(x, 3);
    ck_assert_uint_eq(ag_register_post_accumulate_grad_hook(y, post_check, NULL), 0);
    assert_error(AG_ERR_INVALID_ARG,
                 "post accumulate grad hooks cannot be registered on non-leaf tensors");
    ag_tensor *c = ag_ones(AG_F64, 1, (int64_t[]){1});
    ck_assert_uint_eq(ag_register_post_accumulate_grad_hook(c, post_check, NULL), 0);
    assert_error(AG_ERR_NO_GRAD, "doesn't require gradient");
    ck_assert_uint_eq(ag_register_post_accumulate_grad_hook(x, NULL, NULL), 0);
    assert_error(AG_ERR_INVALID_ARG, "NULL function");
}
END_TEST

/* Module pre-hook that logs and doubles the input. */
static ag_tensor *pre_double(ag_module *m, ag_tensor *in, void *user) {
    (void)m;
    log_tag(user);
    return ag_mul_scalar(in, 2);
}

/* Module pre-hook that only logs. */
static ag_tensor *pre_observe(ag_module *m, ag_tensor *in, void *user) {
    (void)m;
    (void)in;
    log_tag(user);
    return NULL;
}

/* The input the last fwd_observe saw. */
static double seen_input[3];

/* Forward hook that logs and adds 1 to the output. */
static ag_tensor *fwd_add1(ag_module *m, ag_tensor *in, ag_tensor *out, void *user) {
    (void)m;
    (void)in;
    log_tag(user);
    return ag_add_scalar(out, 1);
}

/* Forward hook that logs and keeps the input it was given. */
static ag_tensor *fwd_observe(ag_module *m, ag_tensor *in, ag_tensor *out, void *user) {
    (void)m;
    (void)out;
    log_tag(user);
    ck_assert_int_eq(tu_read(in, seen_input, ag_numel(in)), AG_OK);
    return NULL;
}

START_TEST(module_pre_hooks_forward_hooks_order_and_replacement) {
    ag_module *relu = ag_relu_new();
    ag_tensor *x = tu_tensor(AG_F64, 1, TU_SHAPE(3), TU_VALUES(1.5, -1, 2));
    /* Registered interleaved: pre-hooks still all run before the forward. */
    uint64_t c = ag_module_register_forward_hook(relu, fwd_add1, tag('C'));
    uint64_t a = ag_module_register_forward_pre_hook(relu, pre_double, tag('a'));
    uint64_t d = ag_module_register_forward_hook(relu, fwd_observe, tag('D'));
    uint64_t b = ag_module_register_forward_pre_hook(relu, pre_observe, tag('b'));
    ck_assert(a > 0 && b > 0 && c > 0 && d > 0);
    /* relu(2x) + 1; the forward hook sees the input the pre-hooks made. */
    assert_values(ag_module_forward(relu, x), 3, TU_VALUES(4, 1, 5));
    ck_assert_str_eq(fired, "abCD");
    ck_assert(seen_input[0] == 3 && seen_input[1] == -2 && seen_input[2] == 4);

    ck_assert_int_eq(ag_module_remove_hook(relu, a), AG_OK);
    ck_assert_int_eq(ag_module_remove_hook(relu, a), AG_ERR_INVALID_ARG);
    assert_error(AG_ERR_INVALID_ARG, "ReLU has no hook with handle");
    ck_assert_int_eq(ag_module_remove_hook(relu, c), AG_OK);
    assert_values(ag_module_forward(relu, x), 3, TU_VALUES(1.5, 0, 2));
    ck_assert_str_eq(fired, "abCDbD");
    ck_assert_uint_eq(ag_module_register_forward_pre_hook(relu, NULL, NULL), 0);
    assert_error(AG_ERR_INVALID_ARG, "hook function is NULL");
    ag_module_free(relu); /* frees b and d (LeakSanitizer) */
}
END_TEST

START_TEST(hooks_on_nested_modules_fire_inside_the_container) {
    ag_module *inner = ag_sequential_new(1, (ag_module *[]){ag_relu_new()});
    ag_module *net = ag_sequential_new(2, (ag_module *[]){inner, ag_gelu_new(false)});
    ck_assert_ptr_nonnull(net);
    ag_module *leaf_relu = ag_module_child(inner, 0);
    ck_assert(ag_module_register_forward_pre_hook(net, pre_observe, tag('N')) > 0);
    ck_assert(ag_module_register_forward_hook(net, fwd_observe, tag('n')) > 0);
    ck_assert(ag_module_register_forward_pre_hook(inner, pre_observe, tag('I')) > 0);
    ck_assert(ag_module_register_forward_hook(inner, fwd_observe, tag('i')) > 0);
    ck_assert(ag_module_register_forward_pre_hook(leaf_relu, pre_double, tag('R')) > 0);
    ck_assert(ag_module_register_forward_hook(leaf_relu, fwd_add1, tag('r')) > 0);
    ck_assert(ag_module_register_forward_pre_hook(ag_module_child(net, 1), pre_observe, tag('G')) >
              0);
    ag_tensor *x = tu_tensor(AG_F64, 1, TU_SHAPE(3), TU_VALUES(0, -1, 2));
    ag_tensor *y = ag_module_forward(net, x);
    ck_assert_str_eq(fired, "NIRriGn");
    /* gelu(relu(2x) + 1): the child's replacements flow on through the container. */
    double want[3], v[3] = {1, 1, 5};
    ck_assert_int_eq(tu_read(ag_gelu(tu_tensor(AG_F64, 1, TU_SHAPE(3), v), false), want, 3), AG_OK);
    assert_values(y, 3, want);
    ag_module_free(net);
}
END_TEST

/* Clears the firing log before each test. */
static void reset_log(void) {
    n_fired = 0;
    fired[0] = '\0';
    post_expect = NULL;
    tu_scope_setup();
}

static Suite *hooks_suite(void) {
    Suite *s = suite_create("hooks");
    TCase *tc = tcase_create("hooks");
    tcase_add_checked_fixture(tc, reset_log, tu_scope_teardown);
    tcase_add_test(tc, tensor_hooks_then_retain_grad_then_accumulate_then_post_hooks);
    tcase_add_test(tc, post_hook_fires_once_per_backward_after_all_paths);
    tcase_add_test(tc, post_hook_fires_as_soon_as_its_leaf_is_final);
    tcase_add_test(tc, leaf_hook_runs_once_on_the_summed_gradient);
    tcase_add_test(tc, ag_grad_runs_tensor_hooks_but_not_post_hooks);
    tcase_add_test(tc, post_hook_can_step_the_parameter);
    tcase_add_test(tc, hooks_are_removed_by_handle_once);
    tcase_add_test(tc, post_hook_registration_errors);
    tcase_add_test(tc, module_pre_hooks_forward_hooks_order_and_replacement);
    tcase_add_test(tc, hooks_on_nested_modules_fire_inside_the_container);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return tu_run_suite(hooks_suite());
}
