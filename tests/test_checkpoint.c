/* Activation checkpointing (ag_checkpoint, torch.utils.checkpoint with use_reentrant=False):
 * gradients bitwise equal to the plain run through ag_backward and ag_grad, parameters
 * captured by the function, dropout's mask recomputed, retain_graph, double backward,
 * errors (bad arguments, a failing function, a function whose ops change, in-place
 * changes), and the memory it saves (ag_max_memory_allocated). */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
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

/* Asserts two tensors hold exactly the same values (bitwise, for finite values). */
static void assert_same(const ag_tensor *got, const ag_tensor *want, const char *what) {
    ck_assert_msg(got && want, "%s: missing tensor (%s)", what, ag_last_error());
    double diff = tu_max_abs_diff(got, want);
    ck_assert_msg(diff == 0, "%s: differs from the plain run by %g", what, diff);
}

/* ---- a deep MLP of Linear + GELU (+ Dropout) blocks ---- */

enum { MAX_BLOCKS = 16 };

/* One block's parameters; the checkpointed function's user argument. */
typedef struct block {
    ag_tensor *weight, *bias; /* [width, width] and [width], leaves requiring grad */
    double dropout;           /* probability, 0 for none (default generator) */
} block;

typedef struct mlp {
    int n_blocks;
    block blocks[MAX_BLOCKS];
} mlp;

/* y = dropout(gelu(x @ W^T + b)): the checkpointed function of one block. */
static ag_status block_fn(void *user, int n_inputs, ag_tensor *const *inputs, int n_outputs,
                          ag_tensor **outputs) {
    const block *b = user;
    ck_assert_int_eq(n_inputs, 1);
    ck_assert_int_eq(n_outputs, 1);
    ag_tensor *h = ag_gelu(ag_linear(inputs[0], b->weight, b->bias), false);
    if (b->dropout > 0) h = ag_dropout(h, b->dropout, true, NULL);
    outputs[0] = h;
    return h ? AG_OK : ag_last_status();
}

/* An MLP of n_blocks blocks of width `width` (float32, seeded: the same every call). */
static mlp make_mlp(int n_blocks, int64_t width, double dropout) {
    mlp m = {.n_blocks = n_blocks};
    ag_generator *gen = ag_generator_new(42);
    double scale = 1.0 / sqrt((double)width);
    for (int i = 0; i < n_blocks; i++) {
        block *b = &m.blocks[i];
        b->weight = ag_uniform(gen, AG_F32, 2, TU_SHAPE(width, width), -scale, scale);
        b->bias = ag_uniform(gen, AG_F32, 1, TU_SHAPE(width), -scale, scale);
        b->dropout = dropout;
        ck_assert_int_eq(ag_set_requires_grad(b->weight, true), AG_OK);
        ck_assert_int_eq(ag_set_requires_grad(b->bias, true), AG_OK);
    }
    ag_generator_free(gen);
    return m;
}

/* A seeded input batch [batch, width]. */
static ag_tensor *make_input(int64_t batch, int64_t width, bool requires_grad) {
    ag_generator *gen = ag_generator_new(7);
    ag_tensor *x = ag_randn(gen, AG_F32, 2, TU_SHAPE(batch, width));
    ag_generator_free(gen);
    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(ag_set_requires_grad(x, requires_grad), AG_OK);
    return x;
}

/* mean(mlp(x)^2), each block checkpointed or run plainly. Each block runs in a scope of its
 * own and only its output is kept, so that activations are held by the graph alone (which
 * frees them during backward), as in a program that measures its memory. */
static ag_tensor *mlp_loss(const mlp *m, ag_tensor *x, bool checkpointed) {
    ag_tensor *h = ag_retain(x);
    for (int i = 0; i < m->n_blocks; i++) {
        ag_scope *scope = ag_scope_begin();
        ag_tensor *next = NULL;
        block *b = (block *)&m->blocks[i];
        ag_status st = checkpointed ? ag_checkpoint(block_fn, b, 1, &h, 1, &next)
                                    : block_fn(b, 1, &h, 1, &next);
        ck_assert_msg(st == AG_OK, "block %d: %s", i, ag_last_error());
        ag_keep(next);
        ag_scope_end(scope);
        ag_release(h);
        h = next;
    }
    ag_tensor *loss = ag_mean(ag_mul(h, h), 0, NULL, false);
    ag_release(h);
    return loss;
}

/* The parameters of m (weight, bias per block) into params; returns how many. */
static int mlp_params(const mlp *m, ag_tensor **params) {
    for (int i = 0; i < m->n_blocks; i++) {
        params[2 * i] = m->blocks[i].weight;
        params[2 * i + 1] = m->blocks[i].bias;
    }
    return 2 * m->n_blocks;
}

/* Moves the .grad of each tensor into grads (copies) and clears it. */
static void take_grads(int n, ag_tensor *const *tensors, ag_tensor **grads) {
    for (int i = 0; i < n; i++) {
        ck_assert_msg(ag_tensor_grad(tensors[i]), "tensor %d has no .grad", i);
        grads[i] = ag_clone(ag_tensor_grad(tensors[i]));
        ck_assert_int_eq(ag_set_grad(tensors[i], NULL), AG_OK);
    }
}

START_TEST(backward_gradients_equal_the_plain_run) {
    mlp m = make_mlp(8, 24, 0);
    ag_tensor *x = make_input(6, 24, true);
    ag_tensor *tensors[2 * MAX_BLOCKS + 1], *plain[2 * MAX_BLOCKS + 1], *ckpt[2 * MAX_BLOCKS + 1];
    int n = mlp_params(&m, tensors);
    tensors[n++] = x;

    ag_tensor *plain_loss = mlp_loss(&m, x, false);
    ck_assert_int_eq(ag_backward(plain_loss, NULL), AG_OK);
    take_grads(n, tensors, plain);
    ag_tensor *ckpt_loss = mlp_loss(&m, x, true);
    assert_same(ckpt_loss, plain_loss, "loss");
    ck_assert_msg(ag_backward(ckpt_loss, NULL) == AG_OK, "%s", ag_last_error());
    take_grads(n, tensors, ckpt);
    for (int i = 0; i < n; i++) assert_same(ckpt[i], plain[i], i == n - 1 ? "x.grad" : "param");
}
END_TEST

START_TEST(ag_grad_gradients_equal_the_plain_run_for_all_or_some_inputs) {
    mlp m = make_mlp(8, 16, 0);
    ag_tensor *x = make_input(5, 16, true);
    ag_tensor *inputs[2 * MAX_BLOCKS + 1], *plain[2 * MAX_BLOCKS + 1], *ckpt[2 * MAX_BLOCKS + 1];
    int n = mlp_params(&m, inputs);
    inputs[n++] = x;
    ag_tensor *loss = mlp_loss(&m, x, false);
    ck_assert_int_eq(ag_grad(1, &loss, n, inputs, NULL, false, false, false, plain), AG_OK);
    loss = mlp_loss(&m, x, true);
    ck_assert_msg(ag_grad(1, &loss, n, inputs, NULL, false, false, false, ckpt) == AG_OK, "%s",
                  ag_last_error());
    for (int i = 0; i < n; i++) assert_same(ckpt[i], plain[i], "ag_grad");
    ck_assert_ptr_null(ag_tensor_grad(x)); /* ag_grad leaves .grad alone */

    /* Only the first block's weight and the last block's bias. */
    ag_tensor *some[2] = {m.blocks[0].weight, m.blocks[7].bias}, *got[2];
    loss = mlp_loss(&m, x, true);
    ck_assert_msg(ag_grad(1, &loss, 2, some, NULL, false, false, false, got) == AG_OK, "%s",
                  ag_last_error());
    assert_same(got[0], plain[0], "first weight");
    assert_same(got[1], plain[15], "last bias");
}
END_TEST

START_TEST(parameters_captured_by_the_function_get_gradients_when_no_input_requires_grad) {
    mlp m = make_mlp(4, 16, 0);
    ag_tensor *x = make_input(4, 16, false);
    ag_tensor *params[2 * MAX_BLOCKS], *plain[2 * MAX_BLOCKS], *ckpt[2 * MAX_BLOCKS];
    int n = mlp_params(&m, params);
    ck_assert_int_eq(ag_backward(mlp_loss(&m, x, false), NULL), AG_OK);
    take_grads(n, params, plain);
    ck_assert_msg(ag_backward(mlp_loss(&m, x, true), NULL) == AG_OK, "%s", ag_last_error());
    take_grads(n, params, ckpt);
    for (int i = 0; i < n; i++) assert_same(ckpt[i], plain[i], "param");
    ck_assert_ptr_null(ag_tensor_grad(x));
}
END_TEST

/* y = exp(w * 2): a function of no inputs, only of a captured parameter. */
static ag_status from_captured(void *user, int n_inputs, ag_tensor *const *inputs, int n_outputs,
                               ag_tensor **outputs) {
    (void)n_inputs, (void)inputs, (void)n_outputs;
    outputs[0] = ag_exp(ag_mul_scalar(user, 2));
    return outputs[0] ? AG_OK : ag_last_status();
}

START_TEST(a_function_without_inputs) {
    ag_tensor *w = tu_tensor(AG_F64, 1, TU_SHAPE(2), TU_VALUES(0.5, -1));
    ck_assert_int_eq(ag_set_requires_grad(w, true), AG_OK);
    ag_tensor *y;
    ck_assert_int_eq(ag_checkpoint(from_captured, w, 0, NULL, 1, &y), AG_OK);
    ck_assert_int_eq(ag_backward(ag_sum(y, 0, NULL, false), NULL), AG_OK);
    double want[2] = {2 * exp(1.0), 2 * exp(-2.0)};
    ck_assert(tu_values_are(ag_tensor_grad(w), 1, TU_SHAPE(2), want, 1e-12, 0, NULL, 0, NULL));
}
END_TEST

START_TEST(dropout_recomputes_the_same_mask_and_leaves_the_generator_as_it_was) {
    mlp m = make_mlp(6, 16, 0.5);
    ag_tensor *x = make_input(8, 16, true);
    ag_tensor *tensors[2 * MAX_BLOCKS + 1], *plain[2 * MAX_BLOCKS + 1], *ckpt[2 * MAX_BLOCKS + 1];
    int n = mlp_params(&m, tensors);
    tensors[n++] = x;

    ag_manual_seed(1234);
    ag_tensor *plain_loss = mlp_loss(&m, x, false);
    ck_assert_int_eq(ag_backward(plain_loss, NULL), AG_OK);
    take_grads(n, tensors, plain);

    ag_manual_seed(1234);
    ag_tensor *ckpt_loss = mlp_loss(&m, x, true);
    assert_same(ckpt_loss, plain_loss, "loss with dropout");
    ag_manual_seed(99); /* the recomputation must not depend on the state at backward */
    ck_assert_msg(ag_backward(ckpt_loss, NULL) == AG_OK, "%s", ag_last_error());
    take_grads(n, tensors, ckpt);
    for (int i = 0; i < n; i++) assert_same(ckpt[i], plain[i], "grad with dropout");
    /* Backward put the generator back where it was: seed 99's first numbers. */
    ag_tensor *after = ag_rand(NULL, AG_F64, 1, TU_SHAPE(4));
    ag_manual_seed(99);
    assert_same(after, ag_rand(NULL, AG_F64, 1, TU_SHAPE(4)), "generator after backward");
}
END_TEST

/* y = sum(tanh(x * w)^2 * x), checkpointed: smooth, with second derivatives in x and w. */
static ag_status smooth_fn(void *user, int n_inputs, ag_tensor *const *inputs, int n_outputs,
                           ag_tensor **outputs) {
    (void)n_inputs, (void)n_outputs;
    ag_tensor *t = ag_tanh(ag_mul(inputs[0], user));
    outputs[0] = ag_sum(ag_mul(ag_mul(t, t), inputs[0]), 0, NULL, false);
    return outputs[0] ? AG_OK : ag_last_status();
}

START_TEST(retain_graph_allows_a_second_backward_and_without_it_the_second_fails) {
    mlp m = make_mlp(3, 8, 0);
    ag_tensor *x = make_input(4, 8, true);
    ag_tensor *plain_loss = mlp_loss(&m, x, false);
    ck_assert_int_eq(ag_backward_ex(plain_loss, NULL, true, false), AG_OK);
    ck_assert_int_eq(ag_backward_ex(plain_loss, NULL, true, false), AG_OK);
    ag_tensor *tensors[1] = {x}, *plain[1], *ckpt[1];
    take_grads(1, tensors, plain);

    ag_tensor *loss = mlp_loss(&m, x, true);
    ck_assert_msg(ag_backward_ex(loss, NULL, true, false) == AG_OK, "%s", ag_last_error());
    ck_assert_msg(ag_backward_ex(loss, NULL, false, false) == AG_OK, "%s", ag_last_error());
    take_grads(1, tensors, ckpt);
    assert_same(ckpt[0], plain[0], "x.grad after two backwards");
    ck_assert_int_eq(ag_backward(loss, NULL), AG_ERR_GRAPH_FREED);
    assert_error(AG_ERR_GRAPH_FREED, "backward through the graph a second time");

    /* A single backward without retain_graph, then a second one. */
    loss = mlp_loss(&m, x, true);
    ck_assert_int_eq(ag_backward(loss, NULL), AG_OK);
    ck_assert_int_eq(ag_backward(loss, NULL), AG_ERR_GRAPH_FREED);
    assert_error(AG_ERR_GRAPH_FREED, "Specify retain_graph=true");

    /* The checkpointed function's own output as the root: the failing node is inside it. */
    ag_tensor *y;
    ck_assert_int_eq(ag_checkpoint(smooth_fn, m.blocks[0].bias, 1, &x, 1, &y), AG_OK);
    ck_assert_int_eq(ag_backward(y, NULL), AG_OK);
    ck_assert_int_eq(ag_backward(y, NULL), AG_ERR_GRAPH_FREED);
    assert_error(AG_ERR_GRAPH_FREED, "backward through the graph a second time");
}
END_TEST

/* d/d(x, w) of sum(d y / d x) for smooth_fn, plainly or checkpointed, into second[2]. */
static void second_derivatives(ag_tensor *x, ag_tensor *w, bool checkpointed, ag_tensor **second) {
    ag_tensor *y, *dx;
    ag_status st =
        checkpointed ? ag_checkpoint(smooth_fn, w, 1, &x, 1, &y) : smooth_fn(w, 1, &x, 1, &y);
    ck_assert_int_eq(st, AG_OK);
    ck_assert_msg(ag_grad(1, &y, 1, &x, NULL, true, true, false, &dx) == AG_OK, "%s",
                  ag_last_error());
    ck_assert(ag_requires_grad(dx));
    ag_tensor *s = ag_sum(dx, 0, NULL, false), *wrt[2] = {x, w};
    ck_assert_msg(ag_grad(1, &s, 2, wrt, NULL, false, false, false, second) == AG_OK, "%s",
                  ag_last_error());
}

START_TEST(double_backward_through_a_checkpoint_equals_the_plain_run) {
    ag_tensor *x = tu_tensor(AG_F64, 1, TU_SHAPE(4), TU_VALUES(0.3, -1.2, 0.7, 2.0));
    ag_tensor *w = tu_tensor(AG_F64, 1, TU_SHAPE(4), TU_VALUES(1.5, 0.4, -0.8, 0.1));
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ck_assert_int_eq(ag_set_requires_grad(w, true), AG_OK);
    ag_tensor *plain[2], *ckpt[2];
    second_derivatives(x, w, false, plain);
    second_derivatives(x, w, true, ckpt);
    assert_same(ckpt[0], plain[0], "d2/dx2");
    assert_same(ckpt[1], plain[1], "d2/dxdw");
}
END_TEST

/* Two nested checkpoints: the inner one runs as part of the outer. */
static ag_status nested_fn(void *user, int n_inputs, ag_tensor *const *inputs, int n_outputs,
                           ag_tensor **outputs) {
    (void)n_inputs, (void)n_outputs;
    const mlp *m = user;
    ag_tensor *h = inputs[0];
    for (int i = 0; i < m->n_blocks; i++) {
        ag_tensor *next;
        ag_status st = ag_checkpoint(block_fn, (void *)&m->blocks[i], 1, &h, 1, &next);
        if (st != AG_OK) return st;
        h = next;
    }
    outputs[0] = h;
    return AG_OK;
}

START_TEST(nested_checkpoints_and_several_outputs) {
    mlp m = make_mlp(3, 8, 0.25);
    ag_tensor *x = make_input(4, 8, true);
    ag_manual_seed(5);
    ag_tensor *plain_loss = mlp_loss(&m, x, false);
    ck_assert_int_eq(ag_backward(plain_loss, NULL), AG_OK);
    ag_tensor *tensors[1] = {x}, *plain[1], *ckpt[1];
    take_grads(1, tensors, plain);
    ag_manual_seed(5);
    ag_tensor *y;
    ck_assert_int_eq(ag_checkpoint(nested_fn, &m, 1, &x, 1, &y), AG_OK);
    ck_assert_msg(ag_backward(ag_mean(ag_mul(y, y), 0, NULL, false), NULL) == AG_OK, "%s",
                  ag_last_error());
    take_grads(1, tensors, ckpt);
    assert_same(ckpt[0], plain[0], "x.grad through nested checkpoints");
    for (int i = 0; i < m.n_blocks; i++) {
        ag_set_grad(m.blocks[i].weight, NULL);
        ag_set_grad(m.blocks[i].bias, NULL);
    }
}
END_TEST

/* outputs = (x * 2, exp(x), x): several outputs, one of them the input itself. */
static ag_status three_outputs(void *user, int n_inputs, ag_tensor *const *inputs, int n_outputs,
                               ag_tensor **outputs) {
    (void)user, (void)n_inputs, (void)n_outputs;
    outputs[0] = ag_mul_scalar(inputs[0], 2);
    outputs[1] = ag_exp(inputs[0]);
    outputs[2] = inputs[0];
    return outputs[0] && outputs[1] ? AG_OK : ag_last_status();
}

START_TEST(several_outputs_and_no_grad_mode) {
    ag_tensor *x = tu_tensor(AG_F64, 1, TU_SHAPE(2), TU_VALUES(0, 1));
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ag_tensor *out[3];
    ck_assert_int_eq(ag_checkpoint(three_outputs, NULL, 1, &x, 3, out), AG_OK);
    ck_assert_ptr_eq(out[2], x);
    ag_tensor *s = ag_add(ag_add(ag_sum(out[0], 0, NULL, false), ag_sum(out[1], 0, NULL, false)),
                          ag_sum(out[2], 0, NULL, false));
    ck_assert_int_eq(ag_backward(s, NULL), AG_OK);
    double want[2] = {3 + 1, 3 + exp(1.0)};
    ck_assert(tu_values_are(ag_tensor_grad(x), 1, TU_SHAPE(2), want, 1e-12, 0, NULL, 0, NULL));

    bool prev = ag_set_grad_enabled(false);
    ck_assert_int_eq(ag_checkpoint(three_outputs, NULL, 1, &x, 3, out), AG_OK);
    ag_set_grad_enabled(prev);
    ck_assert(!ag_requires_grad(out[0]) && !ag_requires_grad(out[1]));
}
END_TEST

START_TEST(an_output_freed_before_backward_is_skipped_by_the_recomputation) {
    ag_tensor *x = tu_tensor(AG_F64, 1, TU_SHAPE(2), TU_VALUES(0, 1));
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *out[3];
    ck_assert_int_eq(ag_checkpoint(three_outputs, NULL, 1, &x, 3, out), AG_OK);
    ag_tensor *doubled = ag_keep(out[0]);
    ag_scope_end(scope); /* exp(x) and its node go away */
    ck_assert_int_eq(ag_backward(ag_sum(ag_mul(doubled, doubled), 0, NULL, false), NULL), AG_OK);
    ag_release(doubled);
    ck_assert(
        tu_values_are(ag_tensor_grad(x), 1, TU_SHAPE(2), TU_VALUES(0, 8), 0, 0, NULL, 0, NULL));
}
END_TEST

/* Fails after running some ops. */
static ag_status failing_fn(void *user, int n_inputs, ag_tensor *const *inputs, int n_outputs,
                            ag_tensor **outputs) {
    (void)user, (void)n_inputs, (void)n_outputs;
    outputs[0] = ag_exp(inputs[0]); /* a partial result, freed by ag_checkpoint */
    /* [3] @ [2]: a shape error. */
    return ag_matmul(outputs[0], ag_ones(AG_F64, 1, TU_SHAPE(2))) ? AG_OK : ag_last_status();
}

/* Returns AG_OK but leaves its output NULL. */
static ag_status lazy_fn(void *user, int n_inputs, ag_tensor *const *inputs, int n_outputs,
                         ag_tensor **outputs) {
    (void)user, (void)n_inputs, (void)inputs, (void)n_outputs, (void)outputs;
    return AG_OK;
}

START_TEST(argument_errors_and_a_failing_function) {
    ag_tensor *x = tu_tensor(AG_F64, 1, TU_SHAPE(3), TU_VALUES(1, 2, 3));
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ag_tensor *y = x;
    ck_assert_int_eq(ag_checkpoint(NULL, NULL, 1, &x, 1, &y), AG_ERR_INVALID_ARG);
    ck_assert_ptr_null(y);
    assert_error(AG_ERR_INVALID_ARG, "ag_checkpoint: fn is NULL");
    ck_assert_int_eq(ag_checkpoint(smooth_fn, x, 1, &x, 0, &y), AG_ERR_INVALID_ARG);
    assert_error(AG_ERR_INVALID_ARG, "need at least one output");
    ck_assert_int_eq(ag_checkpoint(smooth_fn, x, 1, &x, 1, NULL), AG_ERR_INVALID_ARG);
    assert_error(AG_ERR_INVALID_ARG, "need at least one output");
    ck_assert_int_eq(ag_checkpoint(smooth_fn, x, 1, NULL, 1, &y), AG_ERR_INVALID_ARG);
    assert_error(AG_ERR_INVALID_ARG, "1 inputs but inputs is NULL");
    ck_assert_int_eq(ag_checkpoint(smooth_fn, x, 1, (ag_tensor *[]){NULL}, 1, &y),
                     AG_ERR_INVALID_ARG);
    assert_error(AG_ERR_INVALID_ARG, "ag_checkpoint: input 0 is NULL");

    /* The function's own error comes back; its partial results are freed (LSan). */
    ck_assert_int_eq(ag_checkpoint(failing_fn, NULL, 1, &x, 1, &y), AG_ERR_SHAPE);
    ck_assert_ptr_null(y);
    assert_error(AG_ERR_SHAPE, "matmul");
    ck_assert_int_eq(ag_checkpoint(lazy_fn, NULL, 1, &x, 1, &y), AG_ERR_INVALID_ARG);
    assert_error(AG_ERR_INVALID_ARG, "returned AG_OK but left output 0 of 1 NULL");
}
END_TEST

/* Runs exp, then mul by 3 on the first call; what later calls run depends on *mode:
 * 0 the same, 1 sin instead of exp, 2 exp only, 3 one more op. */
typedef struct fickle {
    int calls, mode;
} fickle;

static ag_status fickle_fn(void *user, int n_inputs, ag_tensor *const *inputs, int n_outputs,
                           ag_tensor **outputs) {
    (void)n_inputs, (void)n_outputs;
    fickle *f = user;
    bool first = f->calls++ == 0;
    ag_tensor *x = inputs[0];
    ag_tensor *h = !first && f->mode == 1 ? ag_sin(x) : ag_exp(x);
    if (first || f->mode != 2) h = ag_mul_scalar(h, 3);
    if (!first && f->mode == 3) h = ag_tanh(h);
    outputs[0] = h;
    return h ? AG_OK : ag_last_status();
}

START_TEST(a_function_that_changes_its_ops_fails_backward_clearly) {
    ag_tensor *x = tu_tensor(AG_F64, 1, TU_SHAPE(3), TU_VALUES(1, 2, 3));
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    const char *expected[4] = {
        NULL,
        "checkpoint: the recomputed forward ran sin where the forward ran exp",
        "checkpoint: the recomputed forward ended where the forward ran mul (it recorded 2 ops, "
        "the recomputation 1)",
        "checkpoint: the recomputed forward ran tanh where the forward ran no more ops",
    };
    for (int mode = 0; mode < 4; mode++) {
        fickle f = {0, mode};
        ag_tensor *y;
        ck_assert_int_eq(ag_checkpoint(fickle_fn, &f, 1, &x, 1, &y), AG_OK);
        ag_status st = ag_backward(ag_sum(y, 0, NULL, false), NULL);
        ck_assert_int_eq(f.calls, 2);
        if (!expected[mode]) {
            ck_assert_msg(st == AG_OK, "%s", ag_last_error());
            continue;
        }
        ck_assert_int_eq(st, AG_ERR_INVALID_ARG);
        assert_error(AG_ERR_INVALID_ARG, expected[mode]);
    }
}
END_TEST

/* sum(dy/dx ^ 2) for y = sum(x^3): a backward inside the checkpointed function. */
static ag_status penalty_fn(void *user, int n_inputs, ag_tensor *const *inputs, int n_outputs,
                            ag_tensor **outputs) {
    (void)user, (void)n_inputs, (void)n_outputs;
    ag_tensor *x = inputs[0], *y = ag_sum(ag_pow_scalar(x, 3), 0, NULL, false), *dx;
    ag_status st = ag_grad(1, &y, 1, &x, NULL, true, true, false, &dx);
    if (st != AG_OK) return st;
    outputs[0] = ag_sum(ag_mul(dx, dx), 0, NULL, false);
    return outputs[0] ? AG_OK : ag_last_status();
}

START_TEST(a_backward_inside_the_function_is_refused_clearly) {
    ag_tensor *x = tu_tensor(AG_F64, 1, TU_SHAPE(2), TU_VALUES(1, 2));
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ag_tensor *y;
    ck_assert_int_eq(penalty_fn(NULL, 1, &x, 1, &y), AG_OK); /* fine without checkpoint */
    ck_assert_int_eq(ag_checkpoint(penalty_fn, NULL, 1, &x, 1, &y), AG_ERR_UNSUPPORTED);
    ck_assert_ptr_null(y);
    assert_error(AG_ERR_UNSUPPORTED, "while that function was still running");
}
END_TEST

/* exp(h) with h = x * 3 then h changed in place: exp saved h, so backward fails,
 * checkpointed or not. */
static ag_status exp_then_change_its_input(void *user, int n_inputs, ag_tensor *const *inputs,
                                           int n_outputs, ag_tensor **outputs) {
    (void)user, (void)n_inputs, (void)n_outputs;
    ag_tensor *h = ag_mul_scalar(inputs[0], 3);
    outputs[0] = ag_exp(h);
    return outputs[0] && ag_mul_scalar_(h, 2) ? AG_OK : ag_last_status();
}

START_TEST(in_place_changes_after_the_forward_are_caught) {
    /* The input of the checkpointed function. */
    mlp m = make_mlp(1, 4, 0);
    ag_tensor *x = ag_mul_scalar(make_input(2, 4, true), 1); /* a non-leaf: may change */
    ag_tensor *loss = mlp_loss(&m, x, true);
    ck_assert_ptr_nonnull(ag_add_scalar_(x, 1));
    ck_assert_int_eq(ag_backward(loss, NULL), AG_ERR_INPLACE);
    assert_error(AG_ERR_INPLACE, "input 0 of a checkpointed function, is at version 1; expected "
                                 "version 0");

    /* A parameter the function reads (an optimizer step before backward). */
    x = make_input(2, 4, false);
    loss = mlp_loss(&m, x, true);
    bool prev = ag_set_grad_enabled(false);
    ck_assert_ptr_nonnull(ag_mul_scalar_(m.blocks[0].weight, 0.5));
    ag_set_grad_enabled(prev);
    ck_assert_int_eq(ag_backward(loss, NULL), AG_ERR_INPLACE);
    assert_error(AG_ERR_INPLACE, "input 1 of linear, is at version 1; expected version 0");

    /* Inside the function, after an op saved the tensor: the same error as without. */
    ag_tensor *leaf = tu_tensor(AG_F64, 1, TU_SHAPE(2), TU_VALUES(0, 1)), *y;
    ck_assert_int_eq(ag_set_requires_grad(leaf, true), AG_OK);
    ck_assert_int_eq(exp_then_change_its_input(NULL, 1, &leaf, 1, &y), AG_OK);
    ck_assert_int_eq(ag_backward(ag_sum(y, 0, NULL, false), NULL), AG_ERR_INPLACE);
    char plain_message[512];
    snprintf(plain_message, sizeof plain_message, "%s", ag_last_error());
    ag_clear_error();
    ck_assert_int_eq(ag_checkpoint(exp_then_change_its_input, NULL, 1, &leaf, 1, &y), AG_OK);
    ck_assert_int_eq(ag_backward(ag_sum(y, 0, NULL, false), NULL), AG_ERR_INPLACE);
    ck_assert_str_eq(ag_last_error(), plain_message);
    ag_clear_error();
}
END_TEST

START_TEST(memory_counters_follow_storages) {
    ag_device dev = ag_default_device();
    uint64_t before = ag_memory_allocated(dev);
    ag_reset_peak_memory(dev);
    ck_assert_uint_eq(ag_max_memory_allocated(dev), before);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *t = ag_zeros(AG_F32, 2, TU_SHAPE(100, 10));
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(ag_memory_allocated(dev), before + 4000);
    ag_tensor *v = ag_reshape(t, 1, TU_SHAPE(1000)); /* a view: no new storage */
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(ag_memory_allocated(dev), before + 4000);
    ag_scope_end(scope);
    ck_assert_uint_eq(ag_memory_allocated(dev), before);
    ck_assert_uint_eq(ag_max_memory_allocated(dev), before + 4000);
    ag_reset_peak_memory(dev);
    ck_assert_uint_eq(ag_max_memory_allocated(dev), before);
    /* Devices outside the table read as zero. */
    ck_assert_uint_eq(ag_memory_allocated((ag_device){-1, 0}), 0);
    ck_assert_uint_eq(ag_max_memory_allocated((ag_device){0, 1000}), 0);
}
END_TEST

/* Peak bytes above the starting point during forward + backward of a deep MLP. */
static uint64_t peak_of_step(const mlp *m, ag_tensor *x, bool checkpointed) {
    ag_device dev = ag_default_device();
    ag_scope *scope = ag_scope_begin();
    uint64_t start = ag_memory_allocated(dev);
    ag_reset_peak_memory(dev);
    ag_tensor *loss = mlp_loss(m, x, checkpointed);
    ck_assert_msg(ag_backward(loss, NULL) == AG_OK, "%s", ag_last_error());
    ag_scope_end(scope);
    for (int i = 0; i < m->n_blocks; i++) {
        ag_set_grad(m->blocks[i].weight, NULL);
        ag_set_grad(m->blocks[i].bias, NULL);
    }
    return ag_max_memory_allocated(dev) - start;
}

START_TEST(checkpointing_lowers_the_peak_memory_of_a_deep_mlp) {
    mlp m = make_mlp(8, 128, 0.1);
    ag_tensor *x = make_input(256, 128, false);
    uint64_t plain = peak_of_step(&m, x, false), ckpt = peak_of_step(&m, x, true);
    printf("checkpoint: peak memory of forward+backward, 8 blocks of Linear(128, 128) + GELU + "
           "Dropout(0.1), batch 256: plain %llu bytes, checkpointed %llu bytes (%.2fx less)\n",
           (unsigned long long)plain, (unsigned long long)ckpt, (double)plain / (double)ckpt);
    /* Plain keeps four [256, 128] activations per block until backward, checkpointed one
     * (the block's output), and the weights' gradients add up to about as much again. */
    ck_assert_uint_lt(ckpt, plain);
    ck_assert_uint_lt(ckpt * 3, plain * 2);
}
END_TEST

static Suite *checkpoint_suite(void) {
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("checkpoint");
    tcase_add_checked_fixture(tc, tu_scope_setup, tu_scope_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, backward_gradients_equal_the_plain_run);
    tcase_add_test(tc, ag_grad_gradients_equal_the_plain_run_for_all_or_some_inputs);
    tcase_add_test(tc,
                   parameters_captured_by_the_function_get_gradients_when_no_input_requires_grad);
    tcase_add_test(tc, a_function_without_inputs);
    tcase_add_test(tc, dropout_recomputes_the_same_mask_and_leaves_the_generator_as_it_was);
    tcase_add_test(tc, retain_graph_allows_a_second_backward_and_without_it_the_second_fails);
    tcase_add_test(tc, double_backward_through_a_checkpoint_equals_the_plain_run);
    tcase_add_test(tc, nested_checkpoints_and_several_outputs);
    tcase_add_test(tc, several_outputs_and_no_grad_mode);
    tcase_add_test(tc, an_output_freed_before_backward_is_skipped_by_the_recomputation);
    tcase_add_test(tc, argument_errors_and_a_failing_function);
    tcase_add_test(tc, a_function_that_changes_its_ops_fails_backward_clearly);
    tcase_add_test(tc, a_backward_inside_the_function_is_refused_clearly);
    tcase_add_test(tc, in_place_changes_after_the_forward_are_caught);
    tcase_add_test(tc, memory_counters_follow_storages);
    tcase_add_test(tc, checkpointing_lowers_the_peak_memory_of_a_deep_mlp);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return tu_run_suite(checkpoint_suite());
}
