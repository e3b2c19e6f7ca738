/* Convolution, pooling and normalisation (ops/conv.c, nn/conv_layers.c): values and
 * gradients against PyTorch 1.13 (tests/conv_reference.h, written by
 * tests/reference/conv_reference.py), gradcheck and gradgradcheck in float64, forward-mode
 * AD, error messages, the modules (initialisation, batch norm's buffers in train and eval
 * mode, Unflatten) and buffers in checkpoints. Runs on every backend. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ag/ag.h"
#include "ag/io.h"
#include "ag/nn.h"
#include "conv_reference.h"
#include "test_util.h"

#define COUNT(a) ((int64_t)(sizeof(a) / sizeof((a)[0])))

/* Marks t as a leaf requiring grad; returns it. */
static ag_tensor *leaf(ag_tensor *t) {
    ck_assert_int_eq(ag_set_requires_grad(t, true), AG_OK);
    return t;
}

/* Checks t's values (any shape with n elements) against want within 1e-9. */
static void assert_close(const char *what, const ag_tensor *t, const double *want, int64_t n) {
    char msg[512] = "";
    ck_assert_msg(t != NULL, "%s: NULL result: %s", what, ag_last_error());
    ck_assert_msg(ag_numel(t) == n, "%s: %lld elements, expected %lld", what,
                  (long long)ag_numel(t), (long long)n);
    ck_assert_msg(
        tu_values_are(t, ag_ndim(t), ag_shape(t), want, 1e-9, 1e-7, msg, sizeof msg, NULL),
        "%s: %s", what, msg);
}

/* Checks that a call failed with `status` and a message containing `words`. */
static void assert_error(const ag_tensor *result, ag_status status, const char *words) {
    ck_assert_ptr_null(result);
    ck_assert_msg(ag_last_status() == status, "status %s, expected %s (%s)",
                  ag_status_name(ag_last_status()), ag_status_name(status), ag_last_error());
    ck_assert_msg(strstr(ag_last_error(), words), "message '%s' lacks '%s'", ag_last_error(),
                  words);
    ag_clear_error();
}

/* Checks out against want_out and the gradients of sum(out * cotangent) (cotangent =
 * tu_pattern(out's shape, 0.37, 0.5), as the reference script) against want_grads[i] for each
 * input that requires grad. */
static void assert_case(const char *name, ag_tensor *out, int n_inputs, ag_tensor *const *inputs,
                        const double *want_out, int64_t n_out, const double *const *want_grads,
                        const int64_t *n_grads) {
    assert_close(name, out, want_out, n_out);
    ag_tensor *cot = tu_pattern(ag_ndim(out), ag_shape(out), 0.37, 0.5, 1.0);
    ag_tensor *grads[4] = {NULL};
    ck_assert_int_eq(n_inputs <= 4, 1);
    ck_assert_msg(ag_grad(1, (ag_tensor *[]){ag_sum(ag_mul(out, cot), 0, NULL, false)}, n_inputs,
                          inputs, NULL, false, false, false, grads) == AG_OK,
                  "%s: %s", name, ag_last_error());
    for (int i = 0; i < n_inputs; i++) {
        char what[96];
        snprintf(what, sizeof what, "%s grad %d", name, i);
        assert_close(what, grads[i], want_grads[i], n_grads[i]);
    }
}

/* ---- values against PyTorch ---- */

/* One conv2d reference case of conv_reference.py. */
typedef struct conv_case {
    const char *name;
    int64_t x[4], w[4];
    bool bias;
    int64_t stride[2], padding[2], dilation[2], groups;
    const double *out, *g0, *g1, *g2;
    int64_t n_out, n_g0, n_g1, n_g2;
} conv_case;

#define CONV_CASE(N, X0, X1, X2, X3, W0, W1, W2, W3, B, S0, S1, P0, P1, D0, D1, G, G2, NG2)        \
    {                                                                                              \
#N, {X0, X1, X2, X3 },                                                                     \
             {W0, W1, W2, W3 }, B,                                                                 \
              {S0, S1 },                                                                           \
               {P0, P1 },                                                                          \
                {D0, D1 }, G, N##_OUT, N##_G0, N##_G1, G2, COUNT(N##_OUT), COUNT(N##_G0),          \
                 COUNT(N##_G1), NG2                                                                \
    }

static const conv_case conv_cases[] = {
    CONV_CASE(CONV_BASIC, 2, 3, 5, 5, 4, 3, 3, 3, true, 1, 1, 1, 1, 1, 1, 1, CONV_BASIC_G2,
              COUNT(CONV_BASIC_G2)),
    CONV_CASE(CONV_STRIDE_DIL, 1, 2, 7, 6, 3, 2, 3, 2, true, 2, 1, 1, 2, 2, 1, 1,
              CONV_STRIDE_DIL_G2, COUNT(CONV_STRIDE_DIL_G2)),
    CONV_CASE(CONV_GROUPS, 2, 4, 5, 5, 6, 2, 3, 3, false, 2, 2, 1, 1, 1, 1, 2, NULL, 0),
    CONV_CASE(CONV_1X1, 2, 3, 4, 4, 5, 3, 1, 1, true, 1, 1, 0, 0, 1, 1, 1, CONV_1X1_G2,
              COUNT(CONV_1X1_G2)),
    CONV_CASE(CONV_NONSQUARE, 1, 2, 6, 5, 2, 2, 2, 3, true, 1, 2, 0, 1, 1, 1, 1, CONV_NONSQUARE_G2,
              COUNT(CONV_NONSQUARE_G2)),
    CONV_CASE(CONV_DEPTHWISE, 1, 3, 5, 5, 3, 1, 3, 3, true, 1, 1, 2, 2, 2, 2, 3, CONV_DEPTHWISE_G2,
              COUNT(CONV_DEPTHWISE_G2)),
    CONV_CASE(CONV_PATCH, 1, 2, 6, 6, 3, 2, 2, 2, true, 2, 2, 0, 0, 1, 1, 1, CONV_PATCH_G2,
              COUNT(CONV_PATCH_G2)),
};

START_TEST(conv2d_values) {
    const conv_case *c = &conv_cases[_i];
    ag_tensor *x = leaf(tu_pattern(4, c->x, 0.9, 0.1, 1.0));
    ag_tensor *w = leaf(tu_pattern(4, c->w, 0.5, 0.3, 1.0));
    ag_tensor *b = c->bias ? leaf(tu_pattern(1, c->w, 1.1, 0.2, 1.0)) : NULL;
    ag_tensor *out = ag_conv2d(x, w, b, c->stride, c->padding, c->dilation, c->groups);
    const double *grads[3] = {c->g0, c->g1, c->g2};
    const int64_t n_grads[3] = {c->n_g0, c->n_g1, c->n_g2};
    assert_case(c->name, out, c->bias ? 3 : 2, (ag_tensor *[]){x, w, b}, c->out, c->n_out, grads,
                n_grads);
}
END_TEST

/* One pooling reference case. */
typedef struct pool_case {
    const char *name;
    bool max;
    int64_t x[4], kernel[2], stride[2], padding[2];
    const double *out, *g0;
    int64_t n_out, n_g0;
} pool_case;

#define POOL_CASE(N, MAX, X0, X1, X2, X3, K0, K1, S0, S1, P0, P1)                                  \
    {                                                                                              \
#N, MAX,                                                                                   \
            {X0, X1, X2, X3 },                                                                     \
             {K0, K1 }, {S0, S1 }, {P0, P1 }, N##_OUT, N##_G0, COUNT(N##_OUT), COUNT(N##_G0)       \
    }

static const pool_case pool_cases[] = {
    POOL_CASE(MAXPOOL_K3S2P1, true, 2, 2, 7, 6, 3, 3, 2, 2, 1, 1),
    POOL_CASE(MAXPOOL_K23, true, 1, 2, 5, 6, 2, 3, 2, 1, 1, 1),
    POOL_CASE(MAXPOOL_TILE, true, 1, 2, 5, 5, 2, 2, 0, 0, 0, 0), /* stride 0: the kernel */
    POOL_CASE(AVGPOOL_K3S2P1, false, 2, 2, 7, 6, 3, 3, 2, 2, 1, 1),
    POOL_CASE(AVGPOOL_K23, false, 1, 2, 5, 6, 2, 3, 1, 2, 1, 0),
    POOL_CASE(AVGPOOL_TILE, false, 1, 2, 5, 5, 2, 2, 2, 2, 0, 0),
};

START_TEST(pool_values) {
    const pool_case *c = &pool_cases[_i];
    ag_tensor *x = leaf(tu_pattern(4, c->x, 0.9, 0.1, 1.0));
    ag_tensor *out = c->max ? ag_max_pool2d(x, c->kernel, c->stride, c->padding)
                            : ag_avg_pool2d(x, c->kernel, c->stride, c->padding);
    assert_case(c->name, out, 1, &x, c->out, c->n_out, (const double *[]){c->g0}, &c->n_g0);
}
END_TEST

START_TEST(pool_unbatched_and_stride_null) {
    /* A 3-d input is one unbatched image; a NULL stride is the kernel size. */
    ag_tensor *x = tu_pattern(3, TU_SHAPE(2, 5, 5), 0.9, 0.1, 1.0);
    ag_tensor *r = ag_max_pool2d(x, (int64_t[]){2, 2}, NULL, NULL);
    ck_assert_int_eq(ag_ndim(r), 3);
    assert_close("unbatched max_pool2d", r, MAXPOOL_TILE_OUT, COUNT(MAXPOOL_TILE_OUT));
}
END_TEST

/* Checks the float [C] tensor t against want. */
static void assert_running(const char *what, ag_tensor *t, const double *want, int64_t n) {
    assert_close(what, t, want, n);
}

START_TEST(batch_norm_values) {
    ag_tensor *x = leaf(tu_pattern(4, TU_SHAPE(4, 3, 3, 2), 0.9, 0.1, 2.0));
    ag_tensor *w = leaf(tu_pattern(1, TU_SHAPE(3), 0.5, 0.3, 1.0));
    ag_tensor *b = leaf(tu_pattern(1, TU_SHAPE(3), 1.1, 0.2, 1.0));
    ag_tensor *rm = tu_pattern(1, TU_SHAPE(3), 0.7, 0.4, 1.0);
    ag_tensor *s = tu_pattern(1, TU_SHAPE(3), 0.3, 0.2, 1.0);
    ag_tensor *rv = ag_add_scalar(ag_mul(s, s), 1);
    ag_tensor *rm_t = ag_clone(rm), *rv_t = ag_clone(rv);
    ag_tensor *in[3] = {x, w, b};
    /* Training: batch statistics, running ones updated with momentum 0.1 (unbiased var). */
    ag_tensor *y = ag_batch_norm(x, rm_t, rv_t, w, b, true, 0.1, 1e-5);
    assert_case("BN_TRAIN", y, 3, in, BN_TRAIN_OUT, COUNT(BN_TRAIN_OUT),
                (const double *[]){BN_TRAIN_G0, BN_TRAIN_G1, BN_TRAIN_G2},
                (const int64_t[]){COUNT(BN_TRAIN_G0), COUNT(BN_TRAIN_G1), COUNT(BN_TRAIN_G2)});
    assert_running("running_mean", rm_t, BN_TRAIN_RUNNING_MEAN, 3);
    assert_running("running_var", rv_t, BN_TRAIN_RUNNING_VAR, 3);
    ck_assert_int_eq(ag_requires_grad(rm_t), false);
    /* Eval: the running statistics, which stay as they are. */
    y = ag_batch_norm(x, rm, rv, w, b, false, 0.1, 1e-5);
    assert_case("BN_EVAL", y, 3, in, BN_EVAL_OUT, COUNT(BN_EVAL_OUT),
                (const double *[]){BN_EVAL_G0, BN_EVAL_G1, BN_EVAL_G2},
                (const int64_t[]){COUNT(BN_EVAL_G0), COUNT(BN_EVAL_G1), COUNT(BN_EVAL_G2)});
    ck_assert_double_eq(tu_max_abs_diff(rv, ag_add_scalar(ag_mul(s, s), 1)), 0);
    /* [N, C] input, no affine. */
    ag_tensor *x2 = leaf(tu_pattern(2, TU_SHAPE(5, 3), 0.8, 0.3, 1.0));
    ag_tensor *rm2 = ag_clone(rm), *rv2 = ag_clone(rv);
    y = ag_batch_norm(x2, rm2, rv2, NULL, NULL, true, 0.1, 1e-5);
    assert_case("BN_2D", y, 1, &x2, BN_2D_OUT, COUNT(BN_2D_OUT), (const double *[]){BN_2D_G0},
                (const int64_t[]){COUNT(BN_2D_G0)});
    assert_running("2-d running_var", rv2, BN_2D_RUNNING_VAR, 3);
}
END_TEST

START_TEST(group_norm_values) {
    ag_tensor *x = leaf(tu_pattern(4, TU_SHAPE(2, 6, 3, 2), 0.9, 0.1, 2.0));
    ag_tensor *w = leaf(tu_pattern(1, TU_SHAPE(6), 0.5, 0.3, 1.0));
    ag_tensor *b = leaf(tu_pattern(1, TU_SHAPE(6), 1.1, 0.2, 1.0));
    assert_case("GN_3", ag_group_norm(x, 3, w, b, 1e-5), 3, (ag_tensor *[]){x, w, b}, GN_3_OUT,
                COUNT(GN_3_OUT), (const double *[]){GN_3_G0, GN_3_G1, GN_3_G2},
                (const int64_t[]){COUNT(GN_3_G0), COUNT(GN_3_G1), COUNT(GN_3_G2)});
    assert_case("GN_1", ag_group_norm(x, 1, NULL, NULL, 1e-5), 1, &x, GN_1_OUT, COUNT(GN_1_OUT),
                (const double *[]){GN_1_G0}, (const int64_t[]){COUNT(GN_1_G0)});
    assert_case("GN_6", ag_group_norm(x, 6, NULL, NULL, 1e-5), 1, &x, GN_6_OUT, COUNT(GN_6_OUT),
                (const double *[]){GN_6_G0}, (const int64_t[]){COUNT(GN_6_G0)});
}
END_TEST

/* ---- gradcheck and gradgradcheck ---- */

/* A float64 function checked by gradcheck/gradgradcheck: inputs 0..n-1 with their shapes. */
typedef struct gc_case {
    const char *name;
    int n;
    int64_t shapes[3][4];
    int ndims[3];
} gc_case;

static ag_tensor *gc_fn(ag_tensor *const *in, void *user) {
    const gc_case *c = user;
    if (strcmp(c->name, "conv2d") == 0)
        return ag_conv2d(in[0], in[1], in[2], (int64_t[]){2, 1}, (int64_t[]){1, 1},
                         (int64_t[]){1, 2}, 2);
    if (strcmp(c->name, "conv2d_1x1") == 0)
        return ag_conv2d(in[0], in[1], NULL, NULL, NULL, NULL, 1);
    if (strcmp(c->name, "max_pool2d") == 0)
        return ag_max_pool2d(in[0], (int64_t[]){3, 3}, (int64_t[]){2, 2}, (int64_t[]){1, 1});
    if (strcmp(c->name, "max_pool2d_tile") == 0)
        return ag_max_pool2d(in[0], (int64_t[]){2, 2}, NULL, NULL);
    if (strcmp(c->name, "avg_pool2d") == 0)
        return ag_avg_pool2d(in[0], (int64_t[]){2, 3}, (int64_t[]){1, 1}, (int64_t[]){1, 1});
    if (strcmp(c->name, "batch_norm") == 0)
        return ag_batch_norm(in[0], NULL, NULL, in[1], in[2], true, 0.1, 1e-5);
    return ag_group_norm(in[0], 2, in[1], in[2], 1e-5);
}

static const gc_case gc_cases[] = {
    {"conv2d", 3, {{1, 4, 5, 4}, {2, 2, 3, 2}, {2}}, {4, 4, 1}},
    {"conv2d_1x1", 2, {{2, 3, 2, 2}, {2, 3, 1, 1}}, {4, 4}},
    {"max_pool2d", 1, {{1, 2, 5, 4}}, {4}},
    {"max_pool2d_tile", 1, {{1, 2, 4, 5}}, {4}},
    {"avg_pool2d", 1, {{1, 2, 4, 4}}, {4}},
    {"batch_norm", 3, {{3, 2, 2, 2}, {2}, {2}}, {4, 1, 1}},
    {"group_norm", 3, {{2, 4, 2, 2}, {4}, {4}}, {4, 1, 1}},
};

START_TEST(gradcheck_and_gradgradcheck) {
    const gc_case *c = &gc_cases[_i];
    ag_tensor *in[3] = {NULL};
    for (int i = 0; i < c->n; i++)
        in[i] = leaf(tu_pattern(c->ndims[i], c->shapes[i], 0.9 + 0.2 * i, 0.1 + i, 1.0));
    ag_gradcheck_options opt = ag_gradcheck_defaults();
    ck_assert_msg(ag_gradcheck(gc_fn, (void *)c, c->n, in, &opt) == AG_OK, "%s gradcheck: %s",
                  c->name, ag_last_error());
    ck_assert_msg(ag_gradgradcheck(gc_fn, (void *)c, c->n, in, &opt) == AG_OK,
                  "%s gradgradcheck: %s", c->name, ag_last_error());
}
END_TEST

/* conv2d as an ag_tensor_fn of x with a fixed weight (user). */
static ag_status conv_of_x(void *user, int n_inputs, ag_tensor *const *inputs, int n_outputs,
                           ag_tensor **outputs) {
    (void)n_inputs;
    (void)n_outputs;
    outputs[0] = ag_conv2d(inputs[0], user, NULL, NULL, (int64_t[]){1, 1}, NULL, 1);
    return outputs[0] ? AG_OK : ag_last_status();
}

START_TEST(forward_mode_matches) {
    /* conv2d is linear in x, so its Jacobian-vector product is the conv of the tangent. */
    ag_tensor *x = tu_pattern(4, TU_SHAPE(1, 2, 4, 4), 0.9, 0.1, 1.0);
    ag_tensor *v = tu_pattern(4, TU_SHAPE(1, 2, 4, 4), 0.4, 0.7, 1.0);
    ag_tensor *w = tu_pattern(4, TU_SHAPE(3, 2, 3, 3), 0.5, 0.3, 1.0);
    ag_tensor *out = NULL, *jv = NULL;
    ck_assert_msg(ag_jvp(conv_of_x, w, 1, &x, &v, 1, NULL, &out, &jv) == AG_OK, "%s",
                  ag_last_error());
    ag_tensor *want = ag_conv2d(v, w, NULL, NULL, (int64_t[]){1, 1}, NULL, 1);
    ck_assert_double_lt(tu_max_abs_diff(jv, want), 1e-12);
}
END_TEST

/* ---- errors ---- */

START_TEST(error_cases) {
    ag_tensor *x = tu_pattern(4, TU_SHAPE(1, 4, 5, 5), 0.9, 0.1, 1.0);
    ag_tensor *w3 = tu_pattern(4, TU_SHAPE(2, 3, 3, 3), 0.5, 0.3, 1.0);
    ag_tensor *wg = tu_pattern(4, TU_SHAPE(3, 2, 3, 3), 0.5, 0.3, 1.0);
    ag_tensor *big = tu_pattern(4, TU_SHAPE(1, 4, 7, 7), 0.5, 0.3, 1.0);
    ag_tensor *flat = tu_pattern(2, TU_SHAPE(2, 3), 0.5, 0.3, 1.0);
    ag_tensor *w4 = tu_pattern(4, TU_SHAPE(2, 4, 3, 3), 0.5, 0.3, 1.0);
    ag_tensor *b3 = tu_pattern(1, TU_SHAPE(3), 0.5, 0.3, 1.0);
    assert_error(ag_conv2d(x, w3, NULL, NULL, NULL, NULL, 1), AG_ERR_SHAPE,
                 "expected input[1, 4, 5, 5] to have 3 channels, but got 4 channels instead");
    assert_error(ag_conv2d(x, wg, NULL, NULL, NULL, NULL, 2), AG_ERR_SHAPE,
                 "Given groups=2, expected weight to be divisible by 2 at dimension 0");
    assert_error(ag_conv2d(x, big, NULL, NULL, NULL, NULL, 1), AG_ERR_SHAPE,
                 "Kernel size can't be greater than actual input size");
    assert_error(ag_conv2d(flat, w4, NULL, NULL, NULL, NULL, 1), AG_ERR_SHAPE,
                 "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of "
                 "size: [2, 3]");
    assert_error(ag_conv2d(x, w4, b3, NULL, NULL, NULL, 1), AG_ERR_SHAPE,
                 "expected bias to be 1-dimensional with 2 elements, but got bias of size [3]");
    assert_error(ag_conv2d(x, w4, NULL, (int64_t[]){0, 1}, NULL, NULL, 1), AG_ERR_INVALID_ARG,
                 "non-positive stride");
    assert_error(ag_conv2d(x, w4, NULL, NULL, NULL, NULL, 0), AG_ERR_INVALID_ARG,
                 "non-positive groups");
    assert_error(ag_conv2d(x, flat, NULL, NULL, NULL, NULL, 1), AG_ERR_SHAPE,
                 "Expected 4-dimensional weight");
    assert_error(ag_max_pool2d(x, (int64_t[]){2, 2}, NULL, (int64_t[]){2, 0}), AG_ERR_INVALID_ARG,
                 "pad should be at most half of kernel size");
    assert_error(ag_avg_pool2d(x, (int64_t[]){6, 6}, NULL, NULL), AG_ERR_SHAPE,
                 "Output size is too small");
    assert_error(ag_max_pool2d(flat, (int64_t[]){2, 2}, NULL, NULL), AG_ERR_SHAPE,
                 "input to max_pool2d");
    ag_tensor *one = tu_pattern(2, TU_SHAPE(1, 3), 0.5, 0.3, 1.0);
    assert_error(ag_batch_norm(one, NULL, NULL, NULL, NULL, true, 0.1, 1e-5), AG_ERR_SHAPE,
                 "Expected more than 1 value per channel when training, got input size [1, 3]");
    assert_error(ag_batch_norm(x, b3, b3, NULL, NULL, true, 0.1, 1e-5), AG_ERR_SHAPE,
                 "running_mean should contain 4 elements");
    assert_error(ag_group_norm(x, 3, NULL, NULL, 1e-5), AG_ERR_SHAPE,
                 "Expected number of channels in input to be divisible by num_groups, but got "
                 "input of shape [1, 4, 5, 5] and num_groups=3");
    ag_tensor *ints = ag_from_i64((int64_t[]){1, 2, 3, 4}, 4, TU_SHAPE(1, 1, 2, 2));
    assert_error(ag_conv2d(ints, w4, NULL, NULL, NULL, NULL, 1), AG_ERR_DTYPE, "floating point");
    ag_module *bn = ag_batch_norm2d_new(3, 1e-5, 0.1, true);
    assert_error(ag_module_forward(bn, flat), AG_ERR_SHAPE, "expected 4D input (got 2D input)");
    ag_module_free(bn);
    assert_error(
        (ag_tensor *)ag_conv2d_new(4, 6, (int64_t[]){3, 3}, NULL, NULL, NULL, 4, true, NULL),
        AG_ERR_INVALID_ARG, "must be divisible by groups");
}
END_TEST

/* ---- modules ---- */

START_TEST(conv_module_init) {
    ag_generator *gen = ag_generator_new(3);
    ag_module *conv = ag_conv2d_new(6, 16, (int64_t[]){5, 3}, NULL, NULL, NULL, 2, true, gen);
    ck_assert_msg(conv != NULL, "%s", ag_last_error());
    ag_named_tensor p[2];
    ck_assert_int_eq(ag_module_parameters(conv, p, 2), 2);
    ck_assert_str_eq(p[0].name, "weight");
    ck_assert_str_eq(p[1].name, "bias");
    ck_assert_int_eq(ag_numel(p[0].tensor), 16 * 3 * 5 * 3);
    /* kaiming_uniform(a=sqrt(5)): |w| <= 1/sqrt(fan_in), fan_in = 6/2 * 5 * 3 = 45. */
    ag_tensor *m = ag_max(ag_abs(p[0].tensor), 0, NULL, false);
    double top = 0;
    ck_assert_int_eq(ag_item(m, &top), AG_OK);
    ck_assert_double_le(top, 1 / sqrt(45.0));
    ck_assert_double_gt(top, 0.9 / sqrt(45.0));
    ag_tensor *x = ag_randn(gen, AG_F32, 4, TU_SHAPE(2, 6, 9, 7));
    ag_tensor *y = ag_module_forward(conv, x);
    ck_assert_msg(y != NULL, "%s", ag_last_error());
    ck_assert_int_eq(ag_size(y, 1), 16);
    ck_assert_int_eq(ag_size(y, 2), 5);
    ck_assert_int_eq(ag_size(y, 3), 5);
    ag_module_free(conv);
    ag_generator_free(gen);
}
END_TEST

/* Value of a one-element tensor. */
static double item(const ag_tensor *t) {
    double v = 0;
    ck_assert_msg(t && ag_item(t, &v) == AG_OK, "%s", ag_last_error());
    return v;
}

START_TEST(batch_norm_module_buffers) {
    ag_module *layers[2] = {
        ag_conv2d_new(2, 3, (int64_t[]){1, 1}, NULL, NULL, NULL, 1, false, NULL),
        ag_batch_norm2d_new(3, 1e-5, 0.1, true)};
    ag_module *net = ag_sequential_new(2, layers);
    ck_assert_ptr_nonnull(net);
    ag_named_tensor buf[4];
    ck_assert_int_eq(ag_module_buffers(net, buf, 4), 3);
    ck_assert_str_eq(buf[0].name, "1.running_mean");
    ck_assert_str_eq(buf[1].name, "1.running_var");
    ck_assert_str_eq(buf[2].name, "1.num_batches_tracked");
    ck_assert_int_eq(ag_module_parameters(net, NULL, 0), 3); /* conv weight, bn weight, bias */
    ag_tensor *x = ag_to_dtype(tu_pattern(4, TU_SHAPE(4, 2, 3, 3), 0.9, 0.1, 3.0), AG_F32);
    /* Train mode: batch statistics (mean 0 per channel), running ones move 10%. */
    ag_tensor *y = ag_module_forward(net, x);
    ag_tensor *h = ag_module_forward(layers[0], x);
    int dims[3] = {0, 2, 3};
    ag_tensor *ym = ag_mean(y, 3, dims, false), *hm = ag_mean(h, 3, dims, false);
    ck_assert_double_lt(item(ag_max(ag_abs(ym), 0, NULL, false)), 1e-5);
    ck_assert_double_lt(tu_max_abs_diff(buf[0].tensor, ag_mul_scalar(hm, 0.1)), 1e-6);
    ck_assert_double_eq(item(buf[2].tensor), 1);
    /* Eval mode: running statistics, which stay put. */
    ag_module_train(net, false);
    ag_tensor *ye = ag_module_forward(net, x);
    ag_tensor *want = ag_batch_norm(h, buf[0].tensor, buf[1].tensor, NULL, NULL, false, 0.1, 1e-5);
    ck_assert_double_lt(tu_max_abs_diff(ye, want), 1e-5);
    ck_assert_double_eq(item(buf[2].tensor), 1);
    ag_module_free(net);
}
END_TEST

START_TEST(unflatten_module) {
    ag_module *u = ag_unflatten_new(1, 3, (int64_t[]){1, 28, -1});
    ag_tensor *x = ag_zeros(AG_F32, 2, TU_SHAPE(2, 784));
    ag_tensor *y = ag_module_forward(u, x);
    ck_assert_msg(y != NULL, "%s", ag_last_error());
    char s[64];
    ag_shape_str(y, s, sizeof s);
    ck_assert_str_eq(s, "[2, 1, 28, 28]");
    assert_error(ag_module_forward(u, ag_zeros(AG_F32, 2, TU_SHAPE(2, 785))), AG_ERR_SHAPE, "");
    ag_module_free(u);
}
END_TEST

/* A Conv2d + BatchNorm2d + GroupNorm net (same initialisation for one seed). */
static ag_module *small_net(uint64_t seed) {
    ag_generator *gen = ag_generator_new(seed);
    ag_module *layers[3] = {ag_conv2d_new(1, 4, (int64_t[]){3, 3}, NULL, NULL, NULL, 1, true, gen),
                            ag_batch_norm2d_new(4, 1e-5, 0.1, true),
                            ag_group_norm_new(2, 4, 1e-5, true)};
    ag_generator_free(gen);
    ag_module *net = ag_sequential_new(3, layers);
    ck_assert_ptr_nonnull(net);
    return net;
}

START_TEST(checkpoint_buffers_round_trip) {
    char dir[64] = "", path[128];
    tu_tmp_path(dir, sizeof dir, "conv", "bn.safetensors", path, sizeof path);
    ag_module *a = small_net(1), *b = small_net(2);
    ag_tensor *x = ag_to_dtype(tu_pattern(4, TU_SHAPE(3, 1, 5, 5), 0.9, 0.1, 2.0), AG_F32);
    for (int i = 0; i < 3; i++) ag_module_forward(a, x); /* running stats move */
    ck_assert_int_eq(ag_checkpoint_save(path, a, NULL), AG_OK);
    int n_file = 0;
    ag_named_tensor *loaded = NULL;
    ck_assert_int_eq(ag_safetensors_load(path, &n_file, &loaded), AG_OK);
    ck_assert_int_eq(n_file, 2 + 2 + 3 + 2);
    ag_named_tensors_free(n_file, loaded);
    ck_assert_msg(ag_checkpoint_load(path, b, NULL) == AG_OK, "%s", ag_last_error());
    ag_named_tensor ba[3], bb[3];
    ck_assert_int_eq(ag_module_buffers(a, ba, 3), 3);
    ck_assert_int_eq(ag_module_buffers(b, bb, 3), 3);
    for (int i = 0; i < 3; i++) ck_assert_double_eq(tu_max_abs_diff(ba[i].tensor, bb[i].tensor), 0);
    ck_assert_double_eq(item(bb[2].tensor), 3);
    ag_module_train(a, false);
    ag_module_train(b, false);
    ck_assert_double_eq(tu_max_abs_diff(ag_module_forward(a, x), ag_module_forward(b, x)), 0);
    /* A model without the buffers refuses the file, naming the entry. */
    ag_module *plain = ag_conv2d_new(1, 4, (int64_t[]){3, 3}, NULL, NULL, NULL, 1, true, NULL);
    ag_module *seq = ag_sequential_new(1, &plain);
    ck_assert_int_ne(ag_checkpoint_load(path, seq, NULL), AG_OK);
    ck_assert_msg(strstr(ag_last_error(), "unexpected entry"), "%s", ag_last_error());
    ag_clear_error();
    ag_module_free(seq);
    ag_module_free(a);
    ag_module_free(b);
    remove(path);
    rmdir(dir);
}
END_TEST

static Suite *conv_suite(void) {
    Suite *s = suite_create("conv");
    TCase *tc = tcase_create("values");
    tcase_add_checked_fixture(tc, tu_scope_setup, tu_scope_teardown);
    tcase_add_loop_test(tc, conv2d_values, 0, (int)COUNT(conv_cases));
    tcase_add_loop_test(tc, pool_values, 0, (int)COUNT(pool_cases));
    tcase_add_test(tc, pool_unbatched_and_stride_null);
    tcase_add_test(tc, batch_norm_values);
    tcase_add_test(tc, group_norm_values);
    tcase_add_test(tc, forward_mode_matches);
    tcase_add_test(tc, error_cases);
    tcase_add_test(tc, conv_module_init);
    tcase_add_test(tc, batch_norm_module_buffers);
    tcase_add_test(tc, unflatten_module);
    tcase_add_test(tc, checkpoint_buffers_round_trip);
    suite_add_tcase(s, tc);
    TCase *grads = tcase_create("gradients");
    tcase_add_checked_fixture(grads, tu_scope_setup, tu_scope_teardown);
    tcase_set_timeout(grads, 300);
    tcase_add_loop_test(grads, gradcheck_and_gradgradcheck, 0, (int)COUNT(gc_cases));
    suite_add_tcase(s, grads);
    return s;
}

int main(void) {
    return tu_run_suite(conv_suite());
}
