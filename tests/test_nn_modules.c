/* Modules (nn/): parameter names and order as PyTorch's, Linear/Embedding/LayerNorm init,
 * forward against matmul and the functional ops, train/eval, forward hooks, gradients to
 * every parameter, a training loop with manual SGD, ownership and errors. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "ag/nn.h"
#include "test_util.h"

static void setup_unscoped(void) {
    ag_clear_error();
}

static void assert_error(ag_status expected, const char *words) {
    ck_assert_int_eq(ag_last_status(), expected);
    ck_assert_msg(strstr(ag_last_error(), words), "message '%s' lacks '%s'", ag_last_error(),
                  words);
    ag_clear_error();
}

/* Reads a whole tensor as doubles (caller frees). */
static double *read_all(const ag_tensor *t) {
    int64_t n = ag_numel(t);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(tu_read(t, v, n), AG_OK);
    return v;
}

static ag_tensor *randn(ag_generator *gen, int ndim, const int64_t *shape) {
    ag_tensor *t = ag_randn(gen, AG_F32, ndim, shape);
    ck_assert_ptr_nonnull(t);
    return t;
}

/* §P: Flatten, Linear(784, 512), GELU, LayerNorm(512), Linear(512, 512), GELU,
 * LayerNorm(512), Linear(512, 10). */
static ag_module *p_network(ag_generator *gen) {
    /* One statement per layer: an initializer list would draw from gen in no set order. */
    ag_module *layers[8];
    layers[0] = ag_flatten_new(1, -1);
    layers[1] = ag_linear_new(784, 512, true, gen);
    layers[2] = ag_gelu_new(false);
    layers[3] = ag_layer_norm_new(512, 1e-5, true);
    layers[4] = ag_linear_new(512, 512, true, gen);
    layers[5] = ag_gelu_new(false);
    layers[6] = ag_layer_norm_new(512, 1e-5, true);
    layers[7] = ag_linear_new(512, 10, true, gen);
    for (int i = 0; i < 8; i++) ck_assert_msg(layers[i], "layer %d: %s", i, ag_last_error());
    ag_module *seq = ag_sequential_new(8, layers);
    ck_assert_ptr_nonnull(seq);
    return seq;
}

static void assert_shape(const ag_tensor *t, int ndim, const int64_t *shape) {
    char msg[256] = "";
    ck_assert_msg(tu_shape_is(t, ndim, shape, msg, sizeof msg), "%s", msg);
}

/* ---- parameters and names ---- */

START_TEST(p_network_parameters_have_pytorch_names_and_order) {
    ag_generator *gen = ag_generator_new(1);
    ag_module *net = p_network(gen);
    ck_assert_int_eq(ag_module_parameters(net, NULL, 0), 10);
    ag_named_tensor p[10];
    ck_assert_int_eq(ag_module_parameters(net, p, 10), 10);
    const char *names[] = {"1.weight", "1.bias",   "3.weight", "3.bias",   "4.weight",
                           "4.bias",   "6.weight", "6.bias",   "7.weight", "7.bias"};
    const int64_t shapes[10][2] = {{512, 784}, {512}, {512}, {512},     {512, 512},
                                   {512},      {512}, {512}, {10, 512}, {10}};
    const int ndims[10] = {2, 1, 1, 1, 2, 1, 1, 1, 2, 1};
    int64_t total = 0;
    for (int i = 0; i < 10; i++) {
        ck_assert_str_eq(p[i].name, names[i]);
        assert_shape(p[i].tensor, ndims[i], shapes[i]);
        ck_assert_int_eq(ag_dtype_of(p[i].tensor), AG_F32);
        ck_assert(ag_requires_grad(p[i].tensor) && ag_is_leaf(p[i].tensor));
        ck_assert_ptr_null(ag_tensor_grad(p[i].tensor));
        total += ag_numel(p[i].tensor);
    }
    ck_assert_int_eq(total, 784 * 512 + 512 + 2 * 512 + 512 * 512 + 512 + 2 * 512 + 512 * 10 + 10);
    /* A small capacity fills what fits and still returns the total. */
    ag_named_tensor few[4] = {{0}};
    ck_assert_int_eq(ag_module_parameters(net, few, 3), 10);
    ck_assert_str_eq(few[2].name, "3.weight");
    ck_assert_ptr_null(few[3].name);
    const char *kinds[] = {"Flatten", "Linear", "GELU",      "LayerNorm",
                           "Linear",  "GELU",   "LayerNorm", "Linear"};
    ck_assert_str_eq(ag_module_kind(net), "Sequential");
    for (int i = 0; i < 8; i++) ck_assert_str_eq(ag_module_kind(ag_module_child(net, i)), kinds[i]);
    /* A child lists its parameters under its own names. */
    ag_named_tensor own[2];
    ck_assert_int_eq(ag_module_parameters(ag_module_child(net, 7), own, 2), 2);
    ck_assert_str_eq(own[0].name, "weight");
    ck_assert_ptr_eq(own[1].tensor, p[9].tensor);
    ag_module_free(net);
    ag_generator_free(gen);
}
END_TEST

START_TEST(nested_sequential_names_are_dotted_paths) {
    ag_module *inner =
        ag_sequential_new(2, (ag_module *[]){ag_relu_new(), ag_linear_new(3, 1, false, NULL)});
    ag_module *outer =
        ag_sequential_new(2, (ag_module *[]){ag_linear_new(2, 3, true, NULL), inner});
    ck_assert_ptr_nonnull(outer);
    ag_named_tensor p[4];
    ck_assert_int_eq(ag_module_parameters(outer, p, 4), 3);
    ck_assert_str_eq(p[0].name, "0.weight");
    ck_assert_str_eq(p[1].name, "0.bias");
    ck_assert_str_eq(p[2].name, "1.1.weight");
    ck_assert_ptr_eq(ag_module_child(ag_module_child(outer, 1), 1), ag_module_child(inner, 1));
    ag_module_free(outer);
}
END_TEST

/* ---- initialisation ---- */

START_TEST(linear_init_is_uniform_within_one_over_sqrt_in_and_seeded) {
    ag_generator *gen = ag_generator_new(7), *same = ag_generator_new(7);
    ag_module *lin = ag_linear_new(784, 512, true, gen);
    ck_assert_ptr_nonnull(lin);
    ag_named_tensor p[2];
    ck_assert_int_eq(ag_module_parameters(lin, p, 2), 2);
    ck_assert_str_eq(p[0].name, "weight");
    ck_assert_str_eq(p[1].name, "bias");
    double bound = 1.0 / 28.0, sum = 0, sq = 0, lo = 1, hi = -1;
    double *w = read_all(p[0].tensor);
    for (int64_t i = 0; i < 784 * 512; i++) {
        ck_assert_msg(w[i] >= -bound && w[i] < bound, "weight %lld = %g", (long long)i, w[i]);
        sum += w[i];
        sq += w[i] * w[i];
        lo = fmin(lo, w[i]);
        hi = fmax(hi, w[i]);
    }
    free(w);
    double n = 784 * 512, mean = sum / n, var = sq / n - mean * mean;
    ck_assert_msg(fabs(mean) < 1e-3 && fabs(var / (bound * bound / 3) - 1) < 0.02, "mean %g var %g",
                  mean, var);
    ck_assert(lo < -0.999 * bound && hi > 0.999 * bound);
    double *b = read_all(p[1].tensor);
    for (int i = 0; i < 512; i++) ck_assert(b[i] >= -bound && b[i] < bound);
    free(b);
    /* Weight first, then bias, from the generator given (as PyTorch's reset_parameters). */
    ag_tensor *w2 = ag_uniform(same, AG_F32, 2, TU_SHAPE(512, 784), -bound, bound);
    ag_tensor *b2 = ag_uniform(same, AG_F32, 1, TU_SHAPE(512), -bound, bound);
    ck_assert(tu_max_abs_diff(p[0].tensor, w2) == 0 && tu_max_abs_diff(p[1].tensor, b2) == 0);
    /* The default generator: same seed, same parameters. */
    ag_manual_seed(3);
    ag_module *a = ag_linear_new(5, 4, true, NULL);
    ag_manual_seed(3);
    ag_module *c = ag_linear_new(5, 4, true, NULL);
    ag_named_tensor pa[2], pc[2];
    ag_module_parameters(a, pa, 2);
    ag_module_parameters(c, pc, 2);
    ck_assert(tu_max_abs_diff(pa[0].tensor, pc[0].tensor) == 0);
    ck_assert(tu_max_abs_diff(pa[1].tensor, pc[1].tensor) == 0);
    ck_assert(tu_max_abs_diff(pa[0].tensor, p[0].tensor) != 0);
    ag_module *nobias = ag_linear_new(5, 4, false, NULL);
    ck_assert_int_eq(ag_module_parameters(nobias, NULL, 0), 1);
    ag_module_free(nobias);
    ag_module_free(a);
    ag_module_free(c);
    ag_module_free(lin);
    ag_generator_free(gen);
    ag_generator_free(same);
}
END_TEST

START_TEST(layer_norm_and_embedding_init) {
    ag_module *ln = ag_layer_norm_new(6, 1e-5, true);
    ag_named_tensor p[2];
    ck_assert_int_eq(ag_module_parameters(ln, p, 2), 2);
    char msg[256] = "";
    ck_assert_msg(tu_values_are(p[0].tensor, 1, TU_SHAPE(6), TU_VALUES(1, 1, 1, 1, 1, 1), 0, 0, msg,
                                sizeof msg, NULL),
                  "%s", msg);
    ck_assert_msg(tu_values_are(p[1].tensor, 1, TU_SHAPE(6), TU_VALUES(0, 0, 0, 0, 0, 0), 0, 0, msg,
                                sizeof msg, NULL),
                  "%s", msg);
    ck_assert_str_eq(p[0].name, "weight");
    ck_assert_str_eq(p[1].name, "bias");
    ag_module *plain = ag_layer_norm_new(6, 1e-5, false);
    ck_assert_int_eq(ag_module_parameters(plain, NULL, 0), 0);

    ag_generator *gen = ag_generator_new(11), *same = ag_generator_new(11);
    ag_module *emb = ag_embedding_new(1000, 64, gen);
    ck_assert_int_eq(ag_module_parameters(emb, p, 2), 1);
    ck_assert_str_eq(p[0].name, "weight");
    assert_shape(p[0].tensor, 2, TU_SHAPE(1000, 64));
    double *w = read_all(p[0].tensor), sum = 0, sq = 0;
    for (int i = 0; i < 64000; i++) sum += w[i], sq += w[i] * w[i];
    free(w);
    ck_assert_msg(fabs(sum / 64000) < 0.02 && fabs(sq / 64000 - 1) < 0.03, "mean %g, E[x^2] %g",
                  sum / 64000, sq / 64000);
    ck_assert(tu_max_abs_diff(p[0].tensor, ag_randn(same, AG_F32, 2, TU_SHAPE(1000, 64))) == 0);
    ag_module_free(emb);
    ag_module_free(plain);
    ag_module_free(ln);
    ag_generator_free(gen);
    ag_generator_free(same);
}
END_TEST

/* ---- forward ---- */

START_TEST(linear_forward_is_x_times_weight_transposed_plus_bias) {
    ag_generator *gen = ag_generator_new(2);
    ag_module *lin = ag_linear_new(3, 5, true, gen), *nobias = ag_linear_new(3, 5, false, gen);
    ag_named_tensor p[2], q[1];
    ag_module_parameters(lin, p, 2);
    ag_module_parameters(nobias, q, 1);
    ag_tensor *x2 = randn(gen, 2, TU_SHAPE(4, 3)), *x3 = randn(gen, 3, TU_SHAPE(2, 4, 3));
    ag_tensor *wt = ag_transpose(p[0].tensor, 0, 1);
    ag_tensor *y2 = ag_module_forward(lin, x2), *y3 = ag_module_forward(lin, x3);
    assert_shape(y2, 2, TU_SHAPE(4, 5));
    assert_shape(y3, 3, TU_SHAPE(2, 4, 5));
    ck_assert(tu_max_abs_diff(y2, ag_add(ag_matmul(x2, wt), p[1].tensor)) < 1e-6);
    ck_assert(tu_max_abs_diff(y3, ag_add(ag_matmul(x3, wt), p[1].tensor)) < 1e-6);
    ck_assert(tu_max_abs_diff(ag_module_forward(nobias, x2),
                              ag_matmul(x2, ag_transpose(q[0].tensor, 0, 1))) < 1e-6);
    ck_assert(ag_requires_grad(y2) && !ag_is_leaf(y2));
    ag_module_free(lin);
    ag_module_free(nobias);
    ag_generator_free(gen);
}
END_TEST

START_TEST(activation_norm_embedding_flatten_match_the_functional_ops) {
    ag_generator *gen = ag_generator_new(4);
    ag_tensor *x = randn(gen, 3, TU_SHAPE(2, 3, 6));
    ag_module *relu = ag_relu_new(), *gelu = ag_gelu_new(false), *gelu_tanh = ag_gelu_new(true);
    ck_assert(tu_max_abs_diff(ag_module_forward(relu, x), ag_relu(x)) == 0);
    ck_assert(tu_max_abs_diff(ag_module_forward(gelu, x), ag_gelu(x, false)) == 0);
    ck_assert(tu_max_abs_diff(ag_module_forward(gelu_tanh, x), ag_gelu(x, true)) == 0);
    ck_assert(tu_max_abs_diff(ag_gelu(x, true), ag_gelu(x, false)) > 0);

    ag_module *ln = ag_layer_norm_new(6, 1e-5, true);
    ag_named_tensor p[2];
    ag_module_parameters(ln, p, 2);
    ck_assert(tu_max_abs_diff(ag_module_forward(ln, x),
                              ag_layer_norm(x, 1, p[0].tensor, p[1].tensor, 1e-5)) == 0);
    /* [1, 2, 3, 4]: mean 2.5, biased variance 1.25. */
    ag_module *ln4 = ag_layer_norm_new(4, 1e-5, false);
    double s = sqrt(1.25 + 1e-5);
    char msg[256] = "";
    ck_assert_msg(tu_values_are(ag_module_forward(
                                    ln4, tu_tensor(AG_F32, 1, TU_SHAPE(4), TU_VALUES(1, 2, 3, 4))),
                                1, TU_SHAPE(4), TU_VALUES(-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s),
                                1e-6, 1e-5, msg, sizeof msg, NULL),
                  "%s", msg);

    ag_module *emb = ag_embedding_new(10, 3, gen);
    ag_module_parameters(emb, p, 1);
    ag_tensor *idx = tu_tensor(AG_I64, 2, TU_SHAPE(2, 2), TU_VALUES(0, 9, 4, 4));
    ag_tensor *rows = ag_module_forward(emb, idx);
    assert_shape(rows, 3, TU_SHAPE(2, 2, 3));
    ck_assert(tu_max_abs_diff(rows, ag_embedding(idx, p[0].tensor)) == 0);
    ck_assert(
        tu_max_abs_diff(ag_select(ag_select(rows, 0, 1), 0, 0), ag_select(p[0].tensor, 0, 4)) == 0);

    ag_module *flat = ag_flatten_new(1, -1), *flat01 = ag_flatten_new(0, 1);
    ag_tensor *x4 = randn(gen, 4, TU_SHAPE(2, 3, 4, 5));
    assert_shape(ag_module_forward(flat, x4), 2, TU_SHAPE(2, 60));
    assert_shape(ag_module_forward(flat01, x4), 3, TU_SHAPE(6, 4, 5));
    ck_assert(tu_max_abs_diff(ag_module_forward(flat, x4), ag_flatten(x4, 1, -1)) == 0);

    ag_module *modules[] = {relu, gelu, gelu_tanh, ln, ln4, emb, flat, flat01};
    for (int i = 0; i < 8; i++) ag_module_free(modules[i]);
    ag_generator_free(gen);
}
END_TEST

START_TEST(p_network_forward_shape_and_empty_sequential) {
    ag_generator *gen = ag_generator_new(5);
    ag_module *net = p_network(gen);
    ag_tensor *x = ag_rand(gen, AG_F32, 4, TU_SHAPE(3, 1, 28, 28));
    ag_tensor *y = ag_module_forward(net, x);
    assert_shape(y, 2, TU_SHAPE(3, 10));
    /* Sequential is the composition of its children. */
    ag_tensor *h = x;
    for (int i = 0; i < 8; i++) h = ag_module_forward(ag_module_child(net, i), h);
    ck_assert(tu_max_abs_diff(y, h) == 0);
    /* An empty Sequential passes its input through. */
    ag_module *empty = ag_sequential_new(0, NULL);
    ck_assert_ptr_nonnull(empty);
    ck_assert_ptr_eq(ag_module_forward(empty, x), x);
    ck_assert_ptr_null(ag_module_child(empty, 0));
    ag_clear_error();
    ag_module_free(empty);
    ag_module_free(net);
    ag_generator_free(gen);
}
END_TEST

/* ---- train / eval ---- */

START_TEST(dropout_drops_in_train_mode_only) {
    ag_generator *gen = ag_generator_new(8), *same = ag_generator_new(8);
    ag_module *drop = ag_dropout_new(0.5, gen), *twin = ag_dropout_new(0.5, same);
    ck_assert(ag_module_is_training(drop));
    ag_tensor *x = ag_ones(AG_F32, 1, TU_SHAPE(2000));
    ag_tensor *y = ag_module_forward(drop, x);
    double *v = read_all(y);
    int zeros = 0;
    for (int i = 0; i < 2000; i++) {
        ck_assert_msg(v[i] == 0 || v[i] == 2, "element %d is %g", i, v[i]);
        zeros += v[i] == 0;
    }
    free(v);
    ck_assert_msg(zeros > 900 && zeros < 1100, "%d zeros of 2000", zeros);
    /* Same seed, same mask. */
    ck_assert(tu_max_abs_diff(y, ag_module_forward(twin, x)) == 0);
    ag_module_train(drop, false);
    ck_assert(!ag_module_is_training(drop));
    ck_assert(tu_max_abs_diff(ag_module_forward(drop, x), x) == 0);
    ag_module_train(drop, true);
    ck_assert(tu_max_abs_diff(ag_module_forward(drop, x), x) > 0);
    /* p = 0 keeps everything even in train mode. */
    ag_module *keep = ag_dropout_new(0, gen);
    ck_assert(tu_max_abs_diff(ag_module_forward(keep, x), x) == 0);
    ag_module_free(keep);
    ag_module_free(twin);

    /* eval() and train() reach every child of a container. */
    ag_module *inner = ag_sequential_new(1, &drop);
    ag_module *net = ag_sequential_new(2, (ag_module *[]){ag_linear_new(3, 3, true, gen), inner});
    ag_module_train(net, false);
    ck_assert(!ag_module_is_training(net) && !ag_module_is_training(inner));
    ck_assert(!ag_module_is_training(drop) && !ag_module_is_training(ag_module_child(net, 0)));
    ag_tensor *x3 = randn(gen, 2, TU_SHAPE(4, 3));
    ag_tensor *e1 = ag_module_forward(net, x3), *e2 = ag_module_forward(net, x3);
    ck_assert(tu_max_abs_diff(e1, e2) == 0);
    ag_module_train(net, true);
    ck_assert(ag_module_is_training(drop));
    ag_module_free(net);
    ag_generator_free(gen);
    ag_generator_free(same);
}
END_TEST

/* ---- forward hooks ---- */

typedef struct hook_log {
    char order[16]; /* one letter per hook call */
    int n;
    double first_seen; /* element 0 of the output the second hook saw */
    ag_module *module;
    uint64_t handle; /* of a hook that removes itself */
} hook_log;

static ag_tensor *hook_double(ag_module *m, ag_tensor *in, ag_tensor *out, void *user) {
    hook_log *log = user;
    ck_assert_ptr_nonnull(m);
    ck_assert_ptr_nonnull(in);
    log->order[log->n++] = 'A';
    return ag_mul_scalar(out, 2);
}

static ag_tensor *hook_observe(ag_module *m, ag_tensor *in, ag_tensor *out, void *user) {
    (void)m;
    (void)in;
    hook_log *log = user;
    log->order[log->n++] = 'B';
    double v[16];
    ck_assert_int_eq(tu_read(out, v, 16), AG_OK);
    log->first_seen = v[0];
    return NULL;
}

static ag_tensor *hook_once(ag_module *m, ag_tensor *in, ag_tensor *out, void *user) {
    (void)in;
    (void)out;
    hook_log *log = user;
    log->order[log->n++] = 'O';
    ck_assert_int_eq(ag_module_remove_hook(m, log->handle), AG_OK);
    return NULL;
}

START_TEST(forward_hooks_observe_replace_run_in_order_and_are_removed) {
    ag_module *relu = ag_relu_new();
    ag_tensor *x = tu_tensor(AG_F32, 1, TU_SHAPE(3), TU_VALUES(1.5, -1, 2));
    hook_log log = {0};
    uint64_t a = ag_module_register_forward_hook(relu, hook_double, &log);
    uint64_t b = ag_module_register_forward_hook(relu, hook_observe, &log);
    ck_assert(a > 0 && b > 0 && a != b);
    char msg[256] = "";
    ck_assert_msg(tu_values_are(ag_module_forward(relu, x), 1, TU_SHAPE(3), TU_VALUES(3, 0, 4), 0,
                                0, msg, sizeof msg, NULL),
                  "%s", msg);
    ck_assert_str_eq(log.order, "AB");
    ck_assert(log.first_seen == 3); /* B saw A's replacement */

    ck_assert_int_eq(ag_module_remove_hook(relu, a), AG_OK);
    ck_assert_int_eq(ag_module_remove_hook(relu, a), AG_ERR_INVALID_ARG);
    assert_error(AG_ERR_INVALID_ARG, "no hook with handle");
    ck_assert_msg(tu_values_are(ag_module_forward(relu, x), 1, TU_SHAPE(3), TU_VALUES(1.5, 0, 2), 0,
                                0, msg, sizeof msg, NULL),
                  "%s", msg);
    ck_assert_str_eq(log.order, "ABB");
    ck_assert(log.first_seen == 1.5);

    /* A hook may remove itself while hooks run: it runs once, B keeps running. */
    log.handle = ag_module_register_forward_hook(relu, hook_once, &log);
    ag_module_forward(relu, x);
    ag_module_forward(relu, x);
    ck_assert_str_eq(log.order, "ABBBOB");
    /* A handle belongs to the module it was registered on. */
    ag_module *other = ag_relu_new();
    ck_assert_int_eq(ag_module_remove_hook(other, b), AG_ERR_INVALID_ARG);
    ag_clear_error();
    ck_assert_int_eq(ag_module_remove_hook(relu, b), AG_OK);
    ag_module_free(other);
    ag_module_free(relu);
}
END_TEST

static ag_tensor *hook_count(ag_module *m, ag_tensor *in, ag_tensor *out, void *user) {
    (void)in;
    ck_assert_str_eq(ag_module_kind(m), "Linear");
    ck_assert_int_eq(ag_size(out, 1), 512);
    ++*(int *)user;
    return NULL;
}

START_TEST(hooks_on_children_run_inside_the_container) {
    ag_generator *gen = ag_generator_new(6);
    ag_module *net = p_network(gen);
    int calls = 0;
    ck_assert(ag_module_register_forward_hook(ag_module_child(net, 1), hook_count, &calls) > 0);
    ck_assert(ag_module_register_forward_hook(ag_module_child(net, 4), hook_count, &calls) > 0);
    assert_shape(ag_module_forward(net, ag_rand(gen, AG_F32, 2, TU_SHAPE(2, 784))), 2,
                 TU_SHAPE(2, 10));
    ck_assert_int_eq(calls, 2);
    ag_module_free(net); /* frees the children's hooks too (LeakSanitizer checks) */
    ag_generator_free(gen);
}
END_TEST

/* ---- gradients and training ---- */

START_TEST(backward_of_a_sum_reaches_every_parameter) {
    ag_generator *gen = ag_generator_new(9);
    ag_module *net = p_network(gen);
    ag_tensor *y = ag_module_forward(net, randn(gen, 4, TU_SHAPE(4, 1, 28, 28)));
    ck_assert_int_eq(ag_backward(ag_sum(y, 0, NULL, false), NULL), AG_OK);
    ag_named_tensor p[10];
    ck_assert_int_eq(ag_module_parameters(net, p, 10), 10);
    for (int i = 0; i < 10; i++) {
        ag_tensor *g = ag_tensor_grad(p[i].tensor);
        ck_assert_msg(g, "%s has no gradient", p[i].name);
        ck_assert_int_eq(ag_numel(g), ag_numel(p[i].tensor));
        double *v = read_all(g), norm = 0;
        for (int64_t k = 0; k < ag_numel(g); k++) norm += fabs(v[k]);
        free(v);
        ck_assert_msg(isfinite(norm) && norm > 0, "%s: |grad| = %g", p[i].name, norm);
    }
    /* d sum(y) / d bias of the last layer is the batch size. */
    double ones[10] = {4, 4, 4, 4, 4, 4, 4, 4, 4, 4};
    char msg[256] = "";
    ck_assert_msg(tu_values_are(ag_tensor_grad(p[9].tensor), 1, TU_SHAPE(10), ones, 0, 0, msg,
                                sizeof msg, NULL),
                  "%s", msg);
    ag_module_free(net);
    ag_generator_free(gen);
}
END_TEST

/* Mean squared error of the network on (x, target), built from ag.h ops only. */
static ag_tensor *mse(ag_module *net, ag_tensor *x, ag_tensor *target) {
    ag_tensor *d = ag_sub(ag_module_forward(net, x), target);
    return ag_mean(ag_mul(d, d), 0, NULL, false);
}

START_TEST(manual_sgd_reduces_the_loss) {
    ag_generator *gen = ag_generator_new(10);
    ag_module *hidden = ag_linear_new(4, 16, true, gen); /* drawn before the last layer */
    ag_module *net = ag_sequential_new(
        3, (ag_module *[]){hidden, ag_gelu_new(false), ag_linear_new(16, 1, true, gen)});
    ag_tensor *x = randn(gen, 2, TU_SHAPE(64, 4));
    ag_tensor *target =
        ag_tanh(ag_matmul(x, tu_tensor(AG_F32, 2, TU_SHAPE(4, 1), TU_VALUES(0.5, -1, 0.25, 2))));
    ag_named_tensor p[4];
    ck_assert_int_eq(ag_module_parameters(net, p, 4), 4);
    double first = 0, last = 0;
    for (int step = 0; step < 300; step++) {
        ag_scope *s = ag_scope_begin();
        ag_tensor *loss = mse(net, x, target);
        ck_assert_int_eq(ag_item(loss, step ? &last : &first), AG_OK);
        ck_assert_int_eq(ag_backward(loss, NULL), AG_OK);
        bool was = ag_set_grad_enabled(false);
        for (int i = 0; i < 4; i++) {
            ck_assert_ptr_nonnull(
                ag_sub_(p[i].tensor, ag_mul_scalar(ag_tensor_grad(p[i].tensor), 0.1)));
            ck_assert_int_eq(ag_set_grad(p[i].tensor, NULL), AG_OK);
        }
        ag_set_grad_enabled(was);
        ag_scope_end(s);
    }
    ck_assert_msg(last < 0.1 * first, "loss %g -> %g", first, last);
    ag_module_free(net);
    ag_generator_free(gen);
}
END_TEST

/* ---- ownership ---- */

START_TEST(parameters_outlive_the_scope_they_were_made_in) {
    ag_scope *s = ag_scope_begin();
    ag_module *lin = ag_linear_new(3, 2, true, NULL);
    ag_scope_end(s);
    ag_named_tensor p[2];
    ag_module_parameters(lin, p, 2);
    double w[6];
    ck_assert_int_eq(tu_read(p[0].tensor, w, 6), AG_OK); /* AddressSanitizer checks */
    ag_module_free(lin);
}
END_TEST

START_TEST(without_a_scope_the_caller_owns_results_and_nothing_leaks) {
    ag_module *net = ag_sequential_new(
        2, (ag_module *[]){ag_linear_new(3, 2, true, NULL), ag_layer_norm_new(2, 1e-5, true)});
    ag_tensor *x = ag_ones(AG_F32, 2, TU_SHAPE(5, 3));
    ag_tensor *y = ag_module_forward(net, x);
    assert_shape(y, 2, TU_SHAPE(5, 2));
    ag_tensor *loss = ag_sum(y, 0, NULL, false);
    ck_assert_int_eq(ag_backward(loss, NULL), AG_OK);
    ag_release(loss);
    ag_release(y);
    ag_release(x);
    ag_module_free(net); /* LeakSanitizer checks that parameters and grads are freed */
}
END_TEST

/* ---- errors ---- */

START_TEST(invalid_constructor_arguments_are_errors) {
    ck_assert_ptr_null(ag_linear_new(0, 3, true, NULL));
    assert_error(AG_ERR_INVALID_ARG,
                 "Linear: in_features (0) and out_features (3) must be positive");
    ck_assert_ptr_null(ag_linear_new(3, -1, true, NULL));
    assert_error(AG_ERR_INVALID_ARG, "must be positive");
    ck_assert_ptr_null(ag_layer_norm_new(0, 1e-5, true));
    assert_error(AG_ERR_INVALID_ARG, "LayerNorm: size (0)");
    ck_assert_ptr_null(ag_layer_norm_new(4, -1, true));
    assert_error(AG_ERR_INVALID_ARG, "eps (-1)");
    ck_assert_ptr_null(ag_layer_norm_new(4, NAN, true));
    assert_error(AG_ERR_INVALID_ARG, "LayerNorm");
    const double bad_p[] = {-0.1, 1.5, NAN};
    for (int i = 0; i < 3; i++) {
        ck_assert_ptr_null(ag_dropout_new(bad_p[i], NULL));
        assert_error(AG_ERR_INVALID_ARG, "must be in [0, 1]");
    }
    /* p = 1 zeroes everything in train mode, as PyTorch. */
    ag_module *all = ag_dropout_new(1.0, NULL);
    ck_assert_ptr_nonnull(all);
    double sum = -1;
    ck_assert_int_eq(
        ag_item(ag_sum(ag_module_forward(all, ag_ones(AG_F32, 1, (int64_t[]){8})), 0, NULL, false),
                &sum),
        AG_OK);
    ck_assert(sum == 0.0);
    ag_module_free(all);
    ck_assert_ptr_null(ag_embedding_new(0, 3, NULL));
    assert_error(AG_ERR_INVALID_ARG, "Embedding: num_embeddings (0)");
    ck_assert_ptr_null(ag_embedding_new(3, -2, NULL));
    assert_error(AG_ERR_INVALID_ARG, "embedding_dim (-2)");
    ck_assert_ptr_null(ag_sequential_new(-1, NULL));
    assert_error(AG_ERR_INVALID_ARG, "Sequential: got -1 children");
    ck_assert_ptr_null(ag_sequential_new(2, NULL));
    assert_error(AG_ERR_INVALID_ARG, "NULL array");
}
END_TEST

START_TEST(failed_sequential_leaves_children_with_the_caller) {
    ag_module *relu = ag_relu_new(), *lin = ag_linear_new(2, 2, true, NULL);
    ck_assert_ptr_null(ag_sequential_new(3, (ag_module *[]){relu, lin, NULL}));
    assert_error(AG_ERR_INVALID_ARG, "Sequential: child 2 is NULL");
    /* A child whose constructor failed: that constructor's error is kept. */
    ck_assert_ptr_null(
        ag_sequential_new(2, (ag_module *[]){relu, ag_linear_new(0, 1, true, NULL)}));
    assert_error(AG_ERR_INVALID_ARG, "Linear: in_features (0)");
    ck_assert_ptr_null(ag_sequential_new(3, (ag_module *[]){relu, lin, relu}));
    assert_error(AG_ERR_INVALID_ARG, "child 2 is the same module as child 0");
    /* Still the caller's: they can join a container now... */
    ag_module *seq = ag_sequential_new(2, (ag_module *[]){relu, lin});
    ck_assert_ptr_nonnull(seq);
    /* ...and then belong to it alone. */
    ck_assert_ptr_null(ag_sequential_new(1, &lin));
    assert_error(AG_ERR_INVALID_ARG, "child 0 (Linear) already belongs to a container");
    ag_module_free(lin);
    assert_error(AG_ERR_INVALID_ARG, "is a child of a container; free the container");
    ag_module_free(seq); /* frees relu and lin once (AddressSanitizer checks) */
    ag_module_free(NULL);
}
END_TEST

START_TEST(forward_errors_name_the_module_and_keep_the_op_message) {
    ag_generator *gen = ag_generator_new(12);
    ag_module *lin = ag_linear_new(784, 512, true, gen);
    ag_named_tensor p[2];
    ag_module_parameters(lin, p, 2);
    ag_tensor *x = randn(gen, 2, TU_SHAPE(2, 100));
    ck_assert_ptr_null(ag_linear(x, p[0].tensor, p[1].tensor));
    char op_msg[1024];
    snprintf(op_msg, sizeof op_msg, "%s", ag_last_error());
    ag_clear_error();
    ck_assert_ptr_null(ag_module_forward(lin, x));
    ck_assert_int_eq(ag_last_status(), AG_ERR_SHAPE);
    char want[1100];
    snprintf(want, sizeof want, "Linear(784 -> 512): %s", op_msg);
    ck_assert_str_eq(ag_last_error(), want);
    ag_clear_error();

    /* Inside a container the message also says which child failed. */
    ag_module *net = p_network(gen);
    ck_assert_ptr_null(ag_module_forward(net, x));
    ck_assert_int_eq(ag_last_status(), AG_ERR_SHAPE);
    snprintf(want, sizeof want, "Sequential[1]: Linear(784 -> 512): %s", op_msg);
    ck_assert_str_eq(ag_last_error(), want);
    ag_clear_error();
    ag_module *flat = ag_flatten_new(2, -1);
    ck_assert_ptr_null(ag_module_forward(flat, x));
    assert_error(AG_ERR_INDEX, "Flatten(start_dim=2, end_dim=-1): flatten: dimension out of range");

    /* An op message that already names the module gets no prefix ("gelu: ..." for GELU);
     * gelu has no int64 kernel, as in PyTorch. */
    ag_module *gelu = ag_gelu_new(false);
    ck_assert_ptr_null(ag_module_forward(gelu, tu_tensor(AG_I64, 1, TU_SHAPE(2), TU_VALUES(1, 2))));
    ck_assert_msg(strncmp(ag_last_error(), "gelu: ", 6) == 0, "%s", ag_last_error());
    ag_clear_error();
    ag_module_free(gelu);

    /* NULL in, NULL out, keeping the first error. */
    ck_assert_ptr_null(ag_module_forward(lin, ag_linear(x, p[0].tensor, NULL)));
    ck_assert_str_eq(ag_last_error(), op_msg);
    ag_clear_error();
    ck_assert_ptr_null(ag_module_forward(lin, NULL));
    assert_error(AG_ERR_INVALID_ARG, "ag_module_forward: the input is NULL");
    ck_assert_ptr_null(ag_module_forward(NULL, x));
    assert_error(AG_ERR_INVALID_ARG, "ag_module_forward: the module is NULL");
    ag_module_free(flat);
    ag_module_free(net);
    ag_module_free(lin);
    ag_generator_free(gen);
}
END_TEST

START_TEST(accessor_and_hook_argument_errors) {
    ag_module *relu = ag_relu_new();
    ag_named_tensor p[1];
    ck_assert_int_eq(ag_module_parameters(NULL, p, 1), -1);
    assert_error(AG_ERR_INVALID_ARG, "the module is NULL");
    ck_assert_int_eq(ag_module_parameters(relu, NULL, 1), -1);
    assert_error(AG_ERR_INVALID_ARG, "out NULL with capacity > 0");
    ck_assert_int_eq(ag_module_parameters(relu, p, -1), -1);
    assert_error(AG_ERR_INVALID_ARG, "capacity < 0");
    ck_assert_int_eq(ag_module_parameters(relu, NULL, 0), 0);
    ck_assert_ptr_null(ag_module_child(relu, 0));
    assert_error(AG_ERR_INDEX, "index 0 is out of range for ReLU with 0 children");
    ck_assert_ptr_null(ag_module_child(NULL, 0));
    assert_error(AG_ERR_INVALID_ARG, "ag_module_child: the module is NULL");
    ck_assert_int_eq(ag_module_register_forward_hook(relu, NULL, NULL), 0);
    assert_error(AG_ERR_INVALID_ARG, "the hook function is NULL");
    ck_assert_int_eq(ag_module_register_forward_hook(NULL, hook_observe, NULL), 0);
    assert_error(AG_ERR_INVALID_ARG, "the module is NULL");
    ck_assert_int_eq(ag_module_remove_hook(NULL, 1), AG_ERR_INVALID_ARG);
    assert_error(AG_ERR_INVALID_ARG, "module is NULL");
    ck_assert_int_eq(ag_module_remove_hook(relu, 0), AG_ERR_INVALID_ARG);
    assert_error(AG_ERR_INVALID_ARG, "ReLU has no hook with handle 0");
    ck_assert_ptr_null(ag_module_kind(NULL));
    ck_assert(!ag_module_is_training(NULL));
    ag_module_train(NULL, false);
    ck_assert_int_eq(ag_last_status(), AG_OK);
    ag_module_free(relu);
}
END_TEST

static Suite *nn_modules_suite(void) {
    Suite *s = suite_create("nn_modules");
    struct {
        const char *name;
        bool scoped;
        const TTest *tests[8];
    } cases[] = {
        {"parameters",
         true,
         {p_network_parameters_have_pytorch_names_and_order,
          nested_sequential_names_are_dotted_paths}},
        {"init",
         true,
         {linear_init_is_uniform_within_one_over_sqrt_in_and_seeded,
          layer_norm_and_embedding_init}},
        {"forward",
         true,
         {linear_forward_is_x_times_weight_transposed_plus_bias,
          activation_norm_embedding_flatten_match_the_functional_ops,
          p_network_forward_shape_and_empty_sequential, dropout_drops_in_train_mode_only}},
        {"hooks",
         true,
         {forward_hooks_observe_replace_run_in_order_and_are_removed,
          hooks_on_children_run_inside_the_container}},
        {"training",
         true,
         {backward_of_a_sum_reaches_every_parameter, manual_sgd_reduces_the_loss}},
        {"ownership",
         false,
         {parameters_outlive_the_scope_they_were_made_in,
          without_a_scope_the_caller_owns_results_and_nothing_leaks}},
        {"errors",
         true,
         {invalid_constructor_arguments_are_errors,
          failed_sequential_leaves_children_with_the_caller,
          forward_errors_name_the_module_and_keep_the_op_message,
          accessor_and_hook_argument_errors}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        TCase *tc = tcase_create(cases[c].name);
        if (cases[c].scoped)
            tcase_add_checked_fixture(tc, tu_scope_setup, tu_scope_teardown);
        else
            tcase_add_checked_fixture(tc, setup_unscoped, NULL);
        tcase_set_timeout(tc, 120);
        for (int t = 0; t < 8 && cases[c].tests[t]; t++) tcase_add_test(tc, cases[c].tests[t]);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void) {
    return tu_run_suite(nn_modules_suite());
}
