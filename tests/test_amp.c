/* Mixed precision (docs/amp.md): float16/bfloat16 tensors computing in float32, type
 * promotion, autocast's per-op dtypes, and GradScaler's state machine against PyTorch's
 * rules (torch.amp.GradScaler and _amp_update_scale_), on every backend. */
#include <check.h>
#include <math.h>
#include <string.h>
#include <unistd.h>
#include "ag/ag.h"
#include "ag/io.h"
#include "ag/nn.h"
#include "ag/optim.h"
#include "test_util.h"

/* Asserts the last error has status st and mentions words, then clears it. */
static void assert_error(ag_status st, const char *words) {
    ck_assert_int_eq(ag_last_status(), st);
    ck_assert_msg(strstr(ag_last_error(), words), "message '%s' lacks '%s'", ag_last_error(),
                  words);
    ag_clear_error();
}

/* Asserts two 16-bit tensors hold the same bits. */
static void assert_same_bits(ag_tensor *got, ag_tensor *want, const char *what) {
    ck_assert_msg(got && want, "%s: %s", what, ag_last_error());
    ck_assert_int_eq(ag_dtype_of(got), ag_dtype_of(want));
    ck_assert_int_eq(ag_numel(got), ag_numel(want));
    uint16_t a[64], b[64];
    ck_assert_int_le(ag_numel(got), 64);
    size_t bytes = (size_t)ag_numel(got) * 2;
    ck_assert_int_eq(ag_to_host(got, a, bytes), AG_OK);
    ck_assert_int_eq(ag_to_host(want, b, bytes), AG_OK);
    for (int64_t i = 0; i < ag_numel(got); i++)
        ck_assert_msg(a[i] == b[i], "%s: element %lld is 0x%04x, expected 0x%04x", what,
                      (long long)i, a[i], b[i]);
}

/* Values with fractions that 16 bits cannot hold exactly, in [-2.5, 2.5). */
static ag_tensor *awkward(ag_dtype dtype, int ndim, const int64_t *shape) {
    double v[64];
    for (int64_t i = 0; i < tu_numel(ndim, shape); i++) v[i] = 2.5 * sin(1.3 * (double)i + 0.2);
    return ag_to_dtype(tu_tensor(AG_F64, ndim, shape, v), dtype);
}

/* One op under test, applied to a [3, 4] tensor and a [4] one. */
typedef ag_tensor *(*op_fn)(ag_tensor *a, ag_tensor *b);
static ag_tensor *op_mul(ag_tensor *a, ag_tensor *b) {
    return ag_mul(a, b);
}
static ag_tensor *op_exp(ag_tensor *a, ag_tensor *b) {
    (void)b;
    return ag_exp(a);
}
static ag_tensor *op_gelu(ag_tensor *a, ag_tensor *b) {
    (void)b;
    return ag_gelu(a, false);
}
static ag_tensor *op_matmul(ag_tensor *a, ag_tensor *b) {
    return ag_matmul(a, ag_unsqueeze(b, 1));
}
static ag_tensor *op_softmax(ag_tensor *a, ag_tensor *b) {
    (void)b;
    return ag_softmax(a, 1);
}
static ag_tensor *op_sum(ag_tensor *a, ag_tensor *b) {
    (void)b;
    return ag_sum(a, 1, (int[]){0}, false);
}
static ag_tensor *op_layer_norm(ag_tensor *a, ag_tensor *b) {
    return ag_layer_norm(a, 1, b, NULL, 1e-5);
}

/* Each op on 16-bit inputs gives its float32 result rounded once: the same bits as
 * converting the inputs to float32, running the op there, and converting the result (a
 * chain of ops rounds after each, so the test takes one op at a time). */
START_TEST(low_precision_ops_round_float32_results) {
    static const op_fn ops[] = {op_mul,     op_exp, op_gelu,      op_matmul,
                                op_softmax, op_sum, op_layer_norm};
    const ag_dtype dtypes[] = {AG_F16, AG_BF16};
    for (int d = 0; d < 2; d++) {
        ag_tensor *a = awkward(dtypes[d], 2, TU_SHAPE(3, 4)),
                  *b = awkward(dtypes[d], 1, TU_SHAPE(4));
        for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
            ag_tensor *low = ops[k](a, b);
            ck_assert_msg(low, "op %zu: %s", k, ag_last_error());
            ck_assert_int_eq(ag_dtype_of(low), dtypes[d]);
            ag_tensor *wide = ops[k](ag_to_dtype(a, AG_F32), ag_to_dtype(b, AG_F32));
            char what[64];
            snprintf(what, sizeof what, "%s op %zu", ag_dtype_name(dtypes[d]), k);
            assert_same_bits(low, ag_to_dtype(wide, dtypes[d]), what);
        }
    }
}
END_TEST

START_TEST(promotion_and_conversion_rules) {
    ag_tensor *h = ag_full(AG_F16, 1, TU_SHAPE(2), 1.5), *b = ag_full(AG_BF16, 1, TU_SHAPE(2), 2);
    ag_tensor *f = ag_full(AG_F32, 1, TU_SHAPE(2), 1), *i = ag_full(AG_I64, 1, TU_SHAPE(2), 3);
    ck_assert_int_eq(ag_dtype_of(ag_add(h, b)), AG_F32); /* neither holds the other */
    ck_assert_int_eq(ag_dtype_of(ag_add(h, f)), AG_F32);
    ck_assert_int_eq(ag_dtype_of(ag_add(h, i)), AG_F16);
    ck_assert_int_eq(ag_dtype_of(ag_mul(i, b)), AG_BF16);
    ck_assert_int_eq(ag_dtype_of(ag_gt(h, h)), AG_F16);
    char msg[256] = "";
    /* 65520 rounds up to inf in float16; 1 + 2^-8 is a bfloat16 tie, to even (1). */
    ck_assert_msg(tu_values_are(ag_to_dtype(ag_full(AG_F32, 1, TU_SHAPE(1), 65520), AG_F16), 1,
                                TU_SHAPE(1), TU_VALUES(INFINITY), 0, 0, msg, sizeof msg, NULL),
                  "%s", msg);
    ck_assert_msg(tu_values_are(ag_to_dtype(ag_full(AG_F64, 1, TU_SHAPE(1), 1 + 0x1p-8), AG_BF16),
                                1, TU_SHAPE(1), TU_VALUES(1), 0, 0, msg, sizeof msg, NULL),
                  "%s", msg);
    ck_assert_msg(tu_values_are(ag_to_dtype(ag_full(AG_F16, 1, TU_SHAPE(1), -2.75), AG_I64), 1,
                                TU_SHAPE(1), TU_VALUES(-2), 0, 0, msg, sizeof msg, NULL),
                  "%s", msg);
}
END_TEST

/* A 16-bit leaf gets a 16-bit gradient; its values are exact for small whole numbers. */
START_TEST(low_precision_backward) {
    ag_tensor *x = ag_to_dtype(tu_tensor(AG_F64, 1, TU_SHAPE(3), TU_VALUES(1, -2, 3)), AG_F16);
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ck_assert_int_eq(ag_backward(ag_sum(ag_mul(x, x), 0, NULL, false), NULL), AG_OK);
    ag_tensor *g = ag_tensor_grad(x);
    ck_assert_int_eq(ag_dtype_of(g), AG_F16);
    char msg[256] = "";
    ck_assert_msg(
        tu_values_are(g, 1, TU_SHAPE(3), TU_VALUES(2, -4, 6), 0, 0, msg, sizeof msg, NULL), "%s",
        msg);
}
END_TEST

/* Found by fuzz/fuzz_ops: an in-place op across dtypes keeps the target's dtype in the graph
 * too, so a float32 leaf reached through it gets a float32 gradient, not a bfloat16 one. */
START_TEST(inplace_across_dtypes_gives_the_leaf_its_dtype) {
    ag_tensor *x = tu_tensor(AG_F32, 1, TU_SHAPE(3), TU_VALUES(1, -2, 3));
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ag_tensor *y = ag_to_dtype(ag_mul_scalar(x, 3), AG_BF16);
    ck_assert_ptr_nonnull(ag_sub_(y, x)); /* y = 3x - x in bfloat16 */
    ck_assert_int_eq(ag_dtype_of(y), AG_BF16);
    ck_assert_int_eq(ag_backward(ag_sum(y, 0, NULL, false), NULL), AG_OK);
    ag_tensor *g = ag_tensor_grad(x);
    ck_assert_int_eq(ag_dtype_of(g), AG_F32);
    char msg[256] = "";
    ck_assert_msg(tu_values_are(g, 1, TU_SHAPE(3), TU_VALUES(2, 2, 2), 0, 0, msg, sizeof msg, NULL),
                  "%s", msg);
}
END_TEST

/* Found by fuzz/fuzz_ops: a 16-bit op on a zero-size tensor whose contiguous strides are 0
 * ran its float32 stand-in on a buffer of another shape and failed. */
START_TEST(zero_size_16_bit_ops) {
    ag_tensor *z = ag_to_dtype(ag_zeros(AG_F32, 4, TU_SHAPE(0, 3, 4, 0)), AG_F16);
    ag_tensor *e = ag_exp(z);
    ck_assert_msg(e != NULL, "%s", ag_last_error());
    ck_assert_int_eq(ag_dtype_of(e), AG_F16);
    char msg[256] = "";
    ck_assert_msg(tu_shape_is(e, 4, TU_SHAPE(0, 3, 4, 0), msg, sizeof msg), "%s", msg);
}
END_TEST

/* Autocast picks each op's dtype; the casts are recorded, so float32 parameters get float32
 * gradients; leaving the region restores the previous state. */
START_TEST(autocast_per_op_dtypes) {
    ag_tensor *w = ag_full(AG_F32, 2, TU_SHAPE(4, 3), 0.25),
              *x = awkward(AG_F32, 2, TU_SHAPE(2, 3));
    ck_assert_int_eq(ag_set_requires_grad(w, true), AG_OK);
    ag_autocast outer;
    ck_assert_int_eq(ag_autocast_set((ag_autocast){true, AG_BF16}, &outer), AG_OK);
    ck_assert(!outer.enabled);
    ag_tensor *h = ag_linear(x, w, NULL), *p = ag_softmax(h, 1), *r = ag_relu(h);
    ck_assert_int_eq(ag_dtype_of(h), AG_BF16); /* lower list */
    ck_assert_int_eq(ag_dtype_of(ag_matmul(x, ag_transpose(w, 0, 1))), AG_BF16);
    ck_assert_int_eq(ag_dtype_of(p), AG_F32); /* float32 list */
    ck_assert_int_eq(ag_dtype_of(ag_exp(h)), AG_F32);
    ck_assert_int_eq(ag_dtype_of(ag_sum(h, 0, NULL, false)), AG_F32);
    ck_assert_int_eq(ag_dtype_of(r), AG_BF16); /* as its input */
    /* A nested region with another dtype, then back. */
    ag_autocast bf16;
    ck_assert_int_eq(ag_autocast_set((ag_autocast){true, AG_F16}, &bf16), AG_OK);
    ck_assert_int_eq(ag_dtype_of(ag_linear(x, w, NULL)), AG_F16);
    ck_assert_int_eq(ag_autocast_set(bf16, NULL), AG_OK);
    ck_assert_int_eq(ag_autocast_get().dtype, AG_BF16);
    ck_assert_int_eq(ag_autocast_set((ag_autocast){true, AG_F64}, NULL), AG_ERR_DTYPE);
    assert_error(AG_ERR_DTYPE, "float16 or bfloat16");
    ck_assert(ag_autocast_get().enabled); /* a refused call changes nothing */
    ag_tensor *loss = ag_sum(ag_mul(p, p), 0, NULL, false);
    ck_assert_int_eq(ag_autocast_set(outer, NULL), AG_OK);
    ck_assert(!ag_autocast_get().enabled);
    ck_assert_int_eq(ag_dtype_of(ag_linear(x, w, NULL)), AG_F32);
    ck_assert_int_eq(ag_backward(loss, NULL), AG_OK);
    ck_assert_int_eq(ag_dtype_of(ag_tensor_grad(w)), AG_F32);
}
END_TEST

/* One SGD (lr 1) iteration on w with loss sum(w * c): the gradient is c, inf when asked. */
static bool scaled_iteration(ag_grad_scaler *s, ag_optimizer *opt, ag_tensor *w, bool inject_inf) {
    ag_scope *scope = ag_scope_begin();
    ag_tensor *c = tu_tensor(AG_F32, 1, TU_SHAPE(2), TU_VALUES(0.5, inject_inf ? INFINITY : -1));
    ck_assert_int_eq(ag_optimizer_zero_grad(opt, true), AG_OK);
    ag_tensor *loss = ag_sum(ag_mul(w, c), 0, NULL, false);
    ck_assert_int_eq(ag_backward(ag_grad_scaler_scale(s, loss), NULL), AG_OK);
    bool stepped = true;
    ck_assert_int_eq(ag_grad_scaler_step(s, opt, &stepped), AG_OK);
    ck_assert_int_eq(ag_grad_scaler_update(s), AG_OK);
    ag_scope_end(scope);
    return stepped;
}

/* The scale sequence of a scripted run, by torch._amp_update_scale_'s rule with
 * init_scale 16, growth 2, backoff 0.5, growth_interval 3. */
START_TEST(grad_scaler_reproduces_the_scale_sequence) {
    const ag_grad_scaler_options o = {16, 2.0, 0.5, 3, true};
    ag_grad_scaler *s = ag_grad_scaler_new(&o);
    ck_assert_ptr_nonnull(s);
    ag_tensor *w = ag_keep(tu_tensor(AG_F32, 1, TU_SHAPE(2), TU_VALUES(0, 0)));
    ck_assert_int_eq(ag_set_requires_grad(w, true), AG_OK);
    ag_sgd_options sgd = ag_sgd_defaults(1.0);
    ag_optimizer *opt = ag_sgd_new(1, &(ag_named_tensor){"w", w}, &sgd);
    const bool inf[10] = {false, false, true, false, false, false, false, true, true, false};
    const double scale[10] = {16, 16, 8, 8, 8, 16, 16, 8, 4, 4};
    const int64_t tracker[10] = {1, 2, 0, 1, 2, 0, 1, 0, 0, 1};
    int steps = 0;
    for (int k = 0; k < 10; k++) {
        bool stepped = scaled_iteration(s, opt, w, inf[k]);
        ck_assert_msg(stepped == !inf[k], "iteration %d: stepped %d", k, stepped);
        steps += stepped;
        ck_assert_msg(ag_grad_scaler_scale_value(s) == scale[k],
                      "iteration %d: scale %g, expected %g", k, ag_grad_scaler_scale_value(s),
                      scale[k]);
        ck_assert_int_eq(ag_grad_scaler_growth_tracker(s), tracker[k]);
    }
    /* Each good step moved w by -c exactly (the scales are powers of two); skipped ones not. */
    char msg[256] = "";
    ck_assert_msg(tu_values_are(w, 1, TU_SHAPE(2), TU_VALUES(-0.5 * steps, 1.0 * steps), 0, 0, msg,
                                sizeof msg, NULL),
                  "%s", msg);
    ag_optimizer_free(opt);
    ag_release(w);
    ag_grad_scaler_free(s);
}
END_TEST

START_TEST(grad_scaler_refuses_out_of_order_calls) {
    ag_grad_scaler *s = ag_grad_scaler_new(NULL);
    ck_assert_double_eq(ag_grad_scaler_scale_value(s), 65536);
    ag_tensor *w = ag_keep(tu_tensor(AG_F32, 1, TU_SHAPE(2), TU_VALUES(1, 2)));
    ck_assert_int_eq(ag_set_requires_grad(w, true), AG_OK);
    ag_sgd_options sgd = ag_sgd_defaults(0.1);
    ag_optimizer *opt = ag_sgd_new(1, &(ag_named_tensor){"w", w}, &sgd);
    ck_assert_int_eq(ag_grad_scaler_update(s), AG_ERR_INVALID_ARG);
    assert_error(AG_ERR_INVALID_ARG, "no inf checks were recorded");
    ag_tensor *loss = ag_sum(ag_mul(w, w), 0, NULL, false);
    ck_assert_int_eq(ag_backward(ag_grad_scaler_scale(s, loss), NULL), AG_OK);
    /* unscale_ divides the gradient (2w * 65536) back to 2w. */
    ck_assert_int_eq(ag_grad_scaler_unscale(s, opt), AG_OK);
    char msg[256] = "";
    ck_assert_msg(tu_values_are(ag_tensor_grad(w), 1, TU_SHAPE(2), TU_VALUES(2, 4), 0, 0, msg,
                                sizeof msg, NULL),
                  "%s", msg);
    ck_assert_int_eq(ag_grad_scaler_unscale(s, opt), AG_ERR_INVALID_ARG);
    assert_error(AG_ERR_INVALID_ARG, "already been called on this optimizer");
    bool stepped = false;
    ck_assert_int_eq(ag_grad_scaler_step(s, opt, &stepped), AG_OK);
    ck_assert(stepped);
    ck_assert_int_eq(ag_grad_scaler_step(s, opt, &stepped), AG_ERR_INVALID_ARG);
    assert_error(AG_ERR_INVALID_ARG, "step() has already been called");
    ck_assert(!stepped);
    ck_assert_int_eq(ag_grad_scaler_unscale(s, opt), AG_ERR_INVALID_ARG);
    assert_error(AG_ERR_INVALID_ARG, "after step()");
    ck_assert_int_eq(ag_grad_scaler_update(s), AG_OK);
    /* Options, NULLs. */
    ag_grad_scaler_options bad = ag_grad_scaler_defaults();
    bad.backoff_factor = 1.5;
    ck_assert_ptr_null(ag_grad_scaler_new(&bad));
    assert_error(AG_ERR_INVALID_ARG, "backoff_factor");
    ck_assert_ptr_null(ag_grad_scaler_scale(s, NULL));
    ag_clear_error();
    ck_assert_int_eq(ag_grad_scaler_step(NULL, opt, NULL), AG_ERR_INVALID_ARG);
    ag_clear_error();
    ag_optimizer_free(opt);
    ag_release(w);
    ag_grad_scaler_free(s);
}
END_TEST

/* The state round-trips (as in a checkpoint); a disabled scaler passes everything through. */
START_TEST(grad_scaler_state_and_disabled) {
    const ag_grad_scaler_options o = {1024, 2.0, 0.5, 5, true};
    ag_grad_scaler *s = ag_grad_scaler_new(&o), *t = ag_grad_scaler_new(NULL);
    ag_tensor *w = ag_keep(tu_tensor(AG_F32, 1, TU_SHAPE(2), TU_VALUES(0, 0)));
    ck_assert_int_eq(ag_set_requires_grad(w, true), AG_OK);
    ag_sgd_options sgd = ag_sgd_defaults(1.0);
    ag_optimizer *opt = ag_sgd_new(1, &(ag_named_tensor){"w", w}, &sgd);
    scaled_iteration(s, opt, w, true);
    scaled_iteration(s, opt, w, false);
    ag_named_tensor state[2];
    ck_assert_int_eq(ag_grad_scaler_state(s, state), 2);
    ck_assert_int_eq(ag_grad_scaler_load_state(t, 2, state), AG_OK);
    ck_assert_double_eq(ag_grad_scaler_scale_value(t), 512);
    ck_assert_int_eq(ag_grad_scaler_growth_tracker(t), 1);
    ck_assert_int_eq(ag_grad_scaler_load_state(t, 1, state), AG_ERR_INVALID_ARG);
    assert_error(AG_ERR_INVALID_ARG, "growth_tracker");
    /* In a checkpoint beside a model and its optimizer, as PyTorch's checkpoint["scaler"]. */
    char dir[128] = "", path[160];
    ag_module *model = ag_linear_new(2, 1, false, NULL);
    ag_grad_scaler *u = ag_grad_scaler_new(NULL);
    ck_assert_int_eq(
        ag_checkpoint_save_with_scaler(
            tu_tmp_path(dir, sizeof dir, "amp", "scaler.safetensors", path, sizeof path), model,
            NULL, s),
        AG_OK);
    ck_assert_int_eq(ag_checkpoint_load_with_scaler(path, model, NULL, u), AG_OK);
    ck_assert_double_eq(ag_grad_scaler_scale_value(u), 512);
    ck_assert_int_eq(ag_grad_scaler_growth_tracker(u), 1);
    ck_assert_int_eq(ag_checkpoint_load(path, model, NULL), AG_OK); /* scaler entries ignored */
    remove(path);
    rmdir(dir);
    ag_grad_scaler_free(u);
    ag_module_free(model);
    ag_grad_scaler_options off = ag_grad_scaler_defaults();
    off.enabled = false;
    ag_grad_scaler *d = ag_grad_scaler_new(&off);
    ag_tensor *loss = ag_sum(w, 0, NULL, false);
    ck_assert_ptr_eq(ag_grad_scaler_scale(d, loss), loss);
    ck_assert(scaled_iteration(d, opt, w, true)); /* no inf check: steps anyway */
    ck_assert_double_eq(ag_grad_scaler_scale_value(d), 1);
    ag_grad_scaler_free(d);
    ag_optimizer_free(opt);
    ag_release(w);
    ag_grad_scaler_free(s);
    ag_grad_scaler_free(t);
}
END_TEST

/* A failed test must not leave autocast on for the next one. */
static void teardown(void) {
    ag_autocast_set((ag_autocast){false, AG_F32}, NULL);
    tu_scope_teardown();
}

static Suite *amp_suite(void) {
    Suite *s = suite_create("amp");
    TCase *tc = tcase_create("amp");
    tcase_add_checked_fixture(tc, tu_scope_setup, teardown);
    tcase_add_test(tc, low_precision_ops_round_float32_results);
    tcase_add_test(tc, promotion_and_conversion_rules);
    tcase_add_test(tc, low_precision_backward);
    tcase_add_test(tc, inplace_across_dtypes_gives_the_leaf_its_dtype);
    tcase_add_test(tc, zero_size_16_bit_ops);
    tcase_add_test(tc, autocast_per_op_dtypes);
    tcase_add_test(tc, grad_scaler_reproduces_the_scale_sequence);
    tcase_add_test(tc, grad_scaler_refuses_out_of_order_calls);
    tcase_add_test(tc, grad_scaler_state_and_disabled);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return tu_run_suite(amp_suite());
}
