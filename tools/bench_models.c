/* Model-level and overhead workloads (tools/bench.h): the §P training step (shared with
 * `ag train --bench-steps`), the seed's §E-1 style ReLU-MLP + SGD + MSE step, the
 * functional transforms of that MLP's input (jvp and vjp against a forward), and the chain
 * of tiny ops (shared with `ag overhead`), and their cells in `ag bench`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "bench.h"

/* Batch and layer widths of the MLP step: 784-512-10, batch 128 (seed §E-1's shape). */
enum { MLP_BATCH = 128, MLP_IN = 784, MLP_HIDDEN = 512, MLP_OUT = 10, MLP_PARAMS = 4 };
/* Muls per call of the overhead chain in `ag bench` (as `ag overhead`'s default). */
enum { BENCH_CHAIN = 100 };
/* Optimizer steps the §P schedule spans in `ag bench`: more than any run takes. */
#define P_STEP_SCHEDULE 1000000

/* ---- the overhead chain ---- */

ag_status overhead_chain_init(overhead_chain *c, int chain) {
    *c = (overhead_chain){.chain = chain, .mode = OVERHEAD_GRAD};
    c->x = ag_randn(NULL, AG_F32, 1, (int64_t[]){OVERHEAD_NUMEL});
    ag_status st = c->x ? ag_set_requires_grad(c->x, true) : ag_last_status();
    if (st != AG_OK) overhead_chain_free(c);
    return st;
}

ag_status overhead_chain_run(void *ctx) {
    overhead_chain *c = ctx;
    ag_scope *scope = ag_scope_begin();
    bool prev = ag_set_grad_enabled(c->mode != OVERHEAD_NO_GRAD);
    ag_tensor *y = c->x;
    for (int k = 0; k < c->chain; k++) y = ag_mul(y, c->x);
    ag_set_grad_enabled(prev);
    ag_status st = y ? AG_OK : ag_last_status();
    if (st == AG_OK && c->mode == OVERHEAD_BACKWARD)
        st = ag_backward(ag_sum(y, 0, NULL, false), NULL);
    if (st == AG_OK && c->mode == OVERHEAD_BACKWARD) st = ag_set_grad(c->x, NULL);
    ag_scope_end(scope);
    return st;
}

void overhead_chain_free(overhead_chain *c) {
    ag_release(c->x);
    c->x = NULL;
}

/* ---- the §P step ---- */

ag_status p_step_init(p_step *s, const ag_train_config *config, int64_t total_steps) {
    *s = (p_step){0};
    ag_train_config cfg = *config;
    cfg.accumulate = 1; /* one batch, one optimizer step */
    ag_status st = ag_trainer_init(&s->trainer, &cfg, total_steps);
    if (st != AG_OK) return st;
    ag_generator *gen = ag_generator_new(cfg.seed);
    int64_t *labels = malloc((size_t)cfg.batch_size * sizeof *labels);
    s->x = gen ? ag_randn(gen, AG_F32, 2, (int64_t[]){cfg.batch_size, cfg.in_features}) : NULL;
    if (labels) {
        for (int64_t i = 0; i < cfg.batch_size; i++) labels[i] = i % cfg.classes;
        s->y = ag_from_i64(labels, 1, (int64_t[]){cfg.batch_size});
    }
    st = s->x && s->y ? AG_OK : ag_last_status() != AG_OK ? ag_last_status() : AG_ERR_OUT_OF_MEMORY;
    free(labels);
    ag_generator_free(gen);
    if (st != AG_OK) p_step_free(s);
    return st;
}

ag_status p_step_run(void *ctx) {
    p_step *s = ctx;
    ag_status st = ag_trainer_accumulate(&s->trainer, s->x, s->y, 1, &s->loss);
    return st == AG_OK ? ag_trainer_step(&s->trainer) : st;
}

void p_step_free(p_step *s) {
    ag_release(s->x);
    ag_release(s->y);
    ag_trainer_free(&s->trainer);
    *s = (p_step){0};
}

/* ---- the ReLU-MLP + SGD + MSE step ---- */

/* Linear(784, 512) - ReLU - Linear(512, 10), SGD lr 0.01, MSE against one-hot targets. */
typedef struct mlp_step {
    ag_module *model;  /* the Sequential */
    ag_optimizer *opt; /* plain SGD over its parameters */
    ag_tensor *x, *y;  /* float32 [128, 784] from N(0, 1); one-hot float32 [128, 10] */
} mlp_step;

/* Frees what mlp_step_init made. */
static void mlp_step_free(mlp_step *s) {
    ag_optimizer_free(s->opt);
    ag_module_free(s->model);
    ag_release(s->x);
    ag_release(s->y);
    *s = (mlp_step){0};
}

/* Builds the model, SGD and the batch on the default device (seed 0). */
static ag_status mlp_step_init(mlp_step *s) {
    *s = (mlp_step){0};
    ag_generator *gen = ag_generator_new(0);
    ag_module *layers[3] = {NULL, NULL, NULL};
    layers[0] = ag_linear_new(MLP_IN, MLP_HIDDEN, true, gen); /* one draw per statement */
    layers[1] = ag_relu_new();
    layers[2] = ag_linear_new(MLP_HIDDEN, MLP_OUT, true, gen);
    if (layers[0] && layers[1] && layers[2]) {
        s->model = ag_sequential_new(3, layers);
    } else {
        for (int i = 0; i < 3; i++) ag_module_free(layers[i]);
    }
    ag_named_tensor params[MLP_PARAMS];
    ag_sgd_options sgd = ag_sgd_defaults(0.01);
    if (s->model && ag_module_parameters(s->model, params, MLP_PARAMS) == MLP_PARAMS)
        s->opt = ag_sgd_new(MLP_PARAMS, params, &sgd);
    float one_hot[MLP_BATCH * MLP_OUT] = {0};
    for (int i = 0; i < MLP_BATCH; i++) one_hot[i * MLP_OUT + i % MLP_OUT] = 1;
    if (s->opt) s->x = ag_randn(gen, AG_F32, 2, (int64_t[]){MLP_BATCH, MLP_IN});
    if (s->x) s->y = ag_from_f32(one_hot, 2, (int64_t[]){MLP_BATCH, MLP_OUT});
    ag_generator_free(gen);
    ag_status st = s->y ? AG_OK : ag_last_status() != AG_OK ? ag_last_status() : AG_ERR_INTERNAL;
    if (st != AG_OK) mlp_step_free(s);
    return st;
}

/* One step: forward, MSE, zero_grad(set_to_none), backward, SGD (a bench_fn). */
static ag_status mlp_step_run(void *ctx) {
    mlp_step *s = ctx;
    ag_scope *scope = ag_scope_begin();
    ag_tensor *loss = ag_mse_loss(ag_module_forward(s->model, s->x), s->y, AG_REDUCTION_MEAN);
    ag_status st = loss ? ag_optimizer_zero_grad(s->opt, true) : ag_last_status();
    if (st == AG_OK) st = ag_backward(loss, NULL);
    if (st == AG_OK) st = ag_optimizer_step(s->opt);
    ag_scope_end(scope);
    return st;
}

/* ---- functional transforms of the MLP ---- */

/* How a transforms cell differentiates the MLP with respect to its input x [128, 784]. */
typedef enum transform_pass {
    PASS_FORWARD,      /* the forward alone (grad mode on, as the transforms run it) */
    PASS_JVP,          /* ag_jvp: one forward-mode pass */
    PASS_VJP,          /* ag_vjp: a forward and a backward */
    PASS_DOUBLE_VJP,   /* J v by the double-backward trick torch.autograd.functional.jvp uses */
    N_TRANSFORM_PASSES /* number of passes */
} transform_pass;

/* The MLP of mlp_step, a tangent v of x's shape and a cotangent u of the output's. */
typedef struct transform_bench {
    mlp_step mlp;
    ag_tensor *v, *u;
    transform_pass pass;
} transform_bench;

/* The MLP as an ag_tensor_fn of its input. */
static ag_status mlp_of_input(void *user, int n_inputs, ag_tensor *const *inputs, int n_outputs,
                              ag_tensor **outputs) {
    (void)n_inputs, (void)n_outputs;
    outputs[0] = ag_module_forward(((transform_bench *)user)->mlp.model, inputs[0]);
    return outputs[0] ? AG_OK : ag_last_status();
}

/* J v as the double-backward trick computes it: g(u) = u^T J is linear in u, so
 * J v = d<g(u), v>/du, with u a zero leaf. */
static ag_status jvp_by_double_vjp(transform_bench *b, ag_tensor *x) {
    ag_tensor *xg = ag_detach(x), *y, *u, *g, *jv;
    ag_status st = ag_set_requires_grad(xg, true);
    y = st == AG_OK ? ag_module_forward(b->mlp.model, xg) : NULL;
    u = y ? ag_zeros_like(y) : NULL;
    if (st == AG_OK) st = u ? ag_set_requires_grad(u, true) : ag_last_status();
    if (st == AG_OK) st = ag_grad(1, &y, 1, &xg, &u, true, true, false, &g);
    ag_tensor *inner = st == AG_OK ? ag_sum(ag_mul(g, b->v), 0, NULL, false) : NULL;
    if (st == AG_OK)
        st = inner ? ag_grad(1, &inner, 1, &u, NULL, false, false, false, &jv) : ag_last_status();
    return st;
}

/* One call of the cell's pass (a bench_fn). */
static ag_status transform_run(void *ctx) {
    transform_bench *b = ctx;
    ag_scope *scope = ag_scope_begin();
    ag_tensor *x = b->mlp.x, *out = NULL, *result = NULL;
    ag_status st;
    switch (b->pass) {
    case PASS_FORWARD:
        st = mlp_of_input(b, 1, &x, 1, &out);
        break;
    case PASS_JVP:
        st = ag_jvp(mlp_of_input, b, 1, &x, &b->v, 1, NULL, &out, &result);
        break;
    case PASS_VJP:
        st = ag_vjp(mlp_of_input, b, 1, &x, 1, &b->u, NULL, &out, &result);
        break;
    default:
        st = jvp_by_double_vjp(b, x);
        break;
    }
    ag_scope_end(scope);
    return st;
}

/* ---- cells ---- */

/* Times a training step and records it (ms/step, steps/s); returns 1 on failure. */
static int step_cell(const bench_options *o, ag_device dev, bench_results *r, const char *op,
                     int key, bench_fn fn, void *ctx) {
    char size[40];
    snprintf(size, sizeof size, "batch %d", MLP_BATCH);
    bench_progress(dev, op, size, "step");
    const bench_timing timing = bench_cell_timing(o, 5);
    bench_stats stats;
    if (bench_time(fn, ctx, dev, &timing, &stats) != AG_OK)
        return bench_cell_failed(dev, op, size, "step");
    bench_record *rec = bench_add_cell(r, SECTION_MODELS, op, size, dev, "step", AG_F32, &stats);
    if (!rec) return 1;
    rec->throughput = 1 / stats.median;
    rec->unit = "steps/s";
    rec->key[0] = key;
    return 0;
}

/* The §P step on dev: the trainer of `ag train` with its defaults (batch 128). */
static int p_step_cell(const bench_options *o, ag_device dev, bench_results *r) {
    p_step s;
    const ag_train_config config = ag_train_defaults();
    if (p_step_init(&s, &config, P_STEP_SCHEDULE) != AG_OK)
        return bench_cell_failed(dev, BENCH_P_STEP, "batch 128", "step");
    int failed = step_cell(o, dev, r, BENCH_P_STEP, 0, p_step_run, &s);
    p_step_free(&s);
    return failed;
}

/* The MLP step on dev. */
static int mlp_step_cell(const bench_options *o, ag_device dev, bench_results *r) {
    mlp_step s;
    if (mlp_step_init(&s) != AG_OK)
        return bench_cell_failed(dev, BENCH_MLP_STEP, "batch 128", "step");
    int failed = step_cell(o, dev, r, BENCH_MLP_STEP, 1, mlp_step_run, &s);
    mlp_step_free(&s);
    return failed;
}

/* The overhead chain on dev, forward recording the graph and forward + backward, in
 * microseconds per op. */
static int overhead_cells(const bench_options *o, ag_device dev, bench_results *r) {
    static const char *const passes[OVERHEAD_MODES] = {"forward_nograd", "forward_grad",
                                                       "forward+backward"};
    char size[16];
    snprintf(size, sizeof size, "%d", OVERHEAD_NUMEL);
    overhead_chain c;
    if (overhead_chain_init(&c, BENCH_CHAIN) != AG_OK)
        return bench_cell_failed(dev, BENCH_OVERHEAD, size, passes[OVERHEAD_GRAD]);
    int failed = 0;
    for (int m = OVERHEAD_GRAD; m <= OVERHEAD_BACKWARD; m++) {
        bench_progress(dev, BENCH_OVERHEAD, size, passes[m]);
        c.mode = (overhead_mode)m;
        const bench_timing timing = bench_cell_timing(o, 20);
        bench_stats stats;
        if (bench_time(overhead_chain_run, &c, dev, &timing, &stats) != AG_OK) {
            failed += bench_cell_failed(dev, BENCH_OVERHEAD, size, passes[m]);
            continue;
        }
        stats = bench_scale(stats, 1.0 / BENCH_CHAIN); /* per op, not per chain */
        bench_record *rec = bench_add_cell(r, SECTION_OVERHEAD, BENCH_OVERHEAD, size, dev,
                                           passes[m], AG_F32, &stats);
        if (!rec) {
            failed++;
            break;
        }
        rec->throughput = stats.median * 1e6;
        rec->unit = "us/op";
        rec->key[2] = m;
    }
    overhead_chain_free(&c);
    return failed;
}

/* The transforms of the MLP's input on dev: each pass in ms, with the forward as its
 * reference (ratio: forward time / the pass's time). */
static int transform_cells(const bench_options *o, ag_device dev, bench_results *r) {
    static const char *const passes[N_TRANSFORM_PASSES] = {"forward", "jvp", "vjp",
                                                           "jvp_double_vjp"};
    char size[40];
    snprintf(size, sizeof size, "batch %d", MLP_BATCH);
    transform_bench b = {0};
    ag_generator *gen = ag_generator_new(1);
    ag_status st = gen ? mlp_step_init(&b.mlp) : ag_last_status();
    if (st == AG_OK) b.v = ag_randn(gen, AG_F32, 2, (int64_t[]){MLP_BATCH, MLP_IN});
    if (st == AG_OK && b.v) b.u = ag_randn(gen, AG_F32, 2, (int64_t[]){MLP_BATCH, MLP_OUT});
    ag_generator_free(gen);
    if (st != AG_OK || !b.u) {
        ag_release(b.v);
        if (st == AG_OK) mlp_step_free(&b.mlp);
        return bench_cell_failed(dev, BENCH_TRANSFORMS, size, passes[0]);
    }
    int failed = 0;
    double forward_s = NAN;
    for (int p = 0; p < N_TRANSFORM_PASSES; p++) {
        bench_progress(dev, BENCH_TRANSFORMS, size, passes[p]);
        b.pass = (transform_pass)p;
        const bench_timing timing = bench_cell_timing(o, 3);
        bench_stats stats;
        if (bench_time(transform_run, &b, dev, &timing, &stats) != AG_OK) {
            failed += bench_cell_failed(dev, BENCH_TRANSFORMS, size, passes[p]);
            continue;
        }
        bench_record *rec = bench_add_cell(r, SECTION_MODELS, BENCH_TRANSFORMS, size, dev,
                                           passes[p], AG_F32, &stats);
        if (!rec) {
            failed++;
            break;
        }
        rec->throughput = 1 / stats.median;
        rec->unit = "calls/s";
        if (p == PASS_FORWARD) forward_s = stats.median;
        snprintf(rec->reference, sizeof rec->reference, "forward");
        rec->reference_s = forward_s;
        rec->ratio = forward_s / stats.median;
        rec->key[0] = 2;
        rec->key[2] = p;
    }
    ag_release(b.v);
    ag_release(b.u);
    mlp_step_free(&b.mlp);
    return failed;
}

int bench_models_run(const bench_options *o, ag_device dev, bench_results *r) {
    int failed = 0;
    if (bench_wants(o, BENCH_P_STEP)) failed += p_step_cell(o, dev, r);
    if (bench_wants(o, BENCH_MLP_STEP)) failed += mlp_step_cell(o, dev, r);
    if (bench_wants(o, BENCH_TRANSFORMS)) failed += transform_cells(o, dev, r);
    if (bench_wants(o, BENCH_OVERHEAD)) failed += overhead_cells(o, dev, r);
    return failed;
}
