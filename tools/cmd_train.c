/* `ag train`: trains the seed's §P network (784-512-512-10 MLP with GELU and LayerNorm), or
 * with --model cnn a LeNet-5 (the seed's §F-2 image model), on Fashion-MNIST with the recipe
 * of include/ag/train.h, on the backend AG_BACKEND selects. Also evaluates a saved
 * checkpoint (--load --eval-only) and times single training steps (--bench-steps). With
 * --ddp (builds with MPI) every process of `mpirun -np N ag train --ddp` trains on its shard
 * of each epoch through DistributedDataParallel (docs/distributed.md).
 * docs/training.md describes the options and the output. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ag/io.h"
#include "ag/train.h"
#ifdef AG_WITH_DIST
#include "ag/dist.h"
#endif
#include "bench.h"
#include "commands.h"

/* Warm-up steps of --bench-steps, not timed. */
enum { BENCH_WARMUP = 10, MAX_BENCH_STEPS = 100000 };

typedef struct train_args {
    ag_train_config config;
    int epochs;
    const char *data, *save, *load;
    const char *trace; /* --trace FILE, or NULL */
    bool eval_only, quiet, ddp;
    int64_t limit, bench_steps;
    double bucket_cap_mb; /* --bucket-cap-mb: DDP's bucket size */
} train_args;

/* --ddp's process group and replica; comm and ddp NULL, rank 0 of 1 for one process. */
typedef struct train_dist {
    struct ag_comm *comm;
    struct ag_ddp *ddp;
    int rank, world;
    double bucket_cap_mb; /* --bucket-cap-mb */
} train_dist;

static const char usage_text[] =
    "usage: ag train [options]\n"
    "Trains the seed's section P MLP (784-H-H-10, GELU, LayerNorm), or with --model cnn a\n"
    "LeNet-5 style CNN, on Fashion-MNIST.\n"
    "  --model mlp|cnn      the MLP, or LeNet-5 with batch norm (2 conv + 3 linear) (mlp)\n"
    "  --amp bf16|fp16      mixed precision: the forward under autocast, and for fp16 a\n"
    "                       GradScaler; parameters and optimizer stay float32 (off)\n"
    "  --epochs N           epochs (10)\n"
    "  --batch-size N       images per batch (128)\n"
    "  --lr X               peak learning rate of AdamW (2e-3)\n"
    "  --weight-decay X     AdamW's decoupled weight decay (1e-2)\n"
    "  --accumulate N       batches per optimizer step (2)\n"
    "  --clip X             max gradient norm, 0 for none (1.0)\n"
    "  --label-smoothing X  of the cross entropy (0.1)\n"
    "  --warmup N           linear warm-up steps before the cosine schedule (0)\n"
    "  --hidden N           width H of the MLP's hidden layers (512)\n"
    "  --seed N             initialisation and shuffling seed (0)\n"
    "  --data DIR           MNIST-format data set (" AG_FASHION_MNIST_DIR ")\n"
    "  --limit N            train on the first N training images only\n"
    "  --save FILE          write a checkpoint (model + optimizer) after training\n"
    "  --load FILE          start from a checkpoint\n"
    "  --eval-only          with --load: print the test accuracy and stop\n"
    "  --bench-steps N      time N training steps of one batch on random data, print ms/step\n"
    "  --trace FILE         write a Chrome trace of the op timings (of the timed steps with\n"
    "                       --bench-steps) for ui.perfetto.dev or chrome://tracing\n"
    "  --quiet              no progress output, epoch lines only\n"
    "  --ddp                data-parallel over the processes of mpirun (builds with MPI):\n"
    "                       each trains on its shard, gradients averaged; rank 0 reports\n"
    "  --bucket-cap-mb X    with --ddp: gradients all-reduced in buckets of about X MB (25)\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("ag train: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(ag train --help shows the options)\n", stderr);
    return 2;
}

/* Reports a failed library call with ag's message; returns the exit status 1. */
static int fail(const char *what) {
    fprintf(stderr, "ag train: %s: %s\n", what, ag_last_error());
    return 1;
}

/* Parses an integer option in [min, max]; false (after a message) if it is not one. */
static bool parse_int(const char *name, const char *text, int64_t min, int64_t max, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max) {
        usage_error("--%s must be an integer in %lld..%lld, not '%s'", name, (long long)min,
                    (long long)max, text);
        return false;
    }
    *out = v;
    return true;
}

/* Parses a real option in [min, max]; false (after a message) if it is not one. */
static bool parse_real(const char *name, const char *text, double min, double max, double *out) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= min && v <= max)) {
        usage_error("--%s must be a number in [%g, %g], not '%s'", name, min, max, text);
        return false;
    }
    *out = v;
    return true;
}

enum {
    OPT_EPOCHS = 256,
    OPT_BATCH,
    OPT_LR,
    OPT_WD,
    OPT_ACCUMULATE,
    OPT_CLIP,
    OPT_SMOOTHING,
    OPT_WARMUP,
    OPT_HIDDEN,
    OPT_SEED,
    OPT_DATA,
    OPT_LIMIT,
    OPT_SAVE,
    OPT_LOAD,
    OPT_EVAL_ONLY,
    OPT_BENCH,
    OPT_TRACE,
    OPT_QUIET,
    OPT_MODEL,
    OPT_AMP,
    OPT_DDP,
    OPT_BUCKET
};

/* Applies one option; false on a bad value (message printed). */
static bool apply_option(int c, const char *name, const char *arg, train_args *a) {
    ag_train_config *cfg = &a->config;
    int64_t v = 0;
    switch (c) {
    case OPT_EPOCHS:
        if (!parse_int(name, arg, 1, 100000, &v)) return false;
        a->epochs = (int)v;
        return true;
    case OPT_BATCH:
        return parse_int(name, arg, 1, 1 << 20, &cfg->batch_size);
    case OPT_LR:
        return parse_real(name, arg, 1e-12, 10, &cfg->lr);
    case OPT_WD:
        return parse_real(name, arg, 0, 10, &cfg->weight_decay);
    case OPT_ACCUMULATE:
        if (!parse_int(name, arg, 1, 1024, &v)) return false;
        cfg->accumulate = (int)v;
        return true;
    case OPT_CLIP:
        return parse_real(name, arg, 0, 1e9, &cfg->clip);
    case OPT_SMOOTHING:
        return parse_real(name, arg, 0, 1, &cfg->label_smoothing);
    case OPT_WARMUP:
        return parse_int(name, arg, 0, INT64_MAX, &cfg->warmup_steps);
    case OPT_HIDDEN:
        return parse_int(name, arg, 1, 1 << 16, &cfg->hidden);
    case OPT_SEED:
        if (!parse_int(name, arg, 0, INT64_MAX, &v)) return false;
        cfg->seed = (uint64_t)v;
        return true;
    case OPT_LIMIT:
        return parse_int(name, arg, 1, INT64_MAX, &a->limit);
    case OPT_BENCH:
        return parse_int(name, arg, 1, MAX_BENCH_STEPS, &a->bench_steps);
    case OPT_DATA:
        a->data = arg;
        return true;
    case OPT_SAVE:
        a->save = arg;
        return true;
    case OPT_LOAD:
        a->load = arg;
        return true;
    case OPT_TRACE:
        a->trace = arg;
        return true;
    case OPT_EVAL_ONLY:
        a->eval_only = true;
        return true;
    case OPT_MODEL:
        if (strcmp(arg, "mlp") == 0 || strcmp(arg, "cnn") == 0) {
            cfg->model = strcmp(arg, "cnn") == 0 ? AG_TRAIN_CNN : AG_TRAIN_MLP;
            return true;
        }
        usage_error("--model must be mlp or cnn, not '%s'", arg);
        return false;
    case OPT_AMP:
        if (strcmp(arg, "bf16") == 0 || strcmp(arg, "fp16") == 0) {
            cfg->amp = arg[0] == 'b' ? AG_BF16 : AG_F16;
            return true;
        }
        usage_error("--amp must be bf16 or fp16, not '%s'", arg);
        return false;
    case OPT_BUCKET:
        return parse_real(name, arg, 1e-6, 1e6, &a->bucket_cap_mb);
    case OPT_DDP:
#ifdef AG_WITH_DIST
        a->ddp = true;
        return true;
#else
        usage_error("--ddp needs ag built with MPI (install libopenmpi-dev and rebuild)");
        return false;
#endif
    default: /* OPT_QUIET */
        a->quiet = true;
        return true;
    }
}

/* Fills a from argv; returns -1 to go on, else the exit status (0 after --help). */
static int parse_args(int argc, char **argv, train_args *a) {
    static const struct option options[] = {
        {"epochs", required_argument, NULL, OPT_EPOCHS},
        {"batch-size", required_argument, NULL, OPT_BATCH},
        {"lr", required_argument, NULL, OPT_LR},
        {"weight-decay", required_argument, NULL, OPT_WD},
        {"accumulate", required_argument, NULL, OPT_ACCUMULATE},
        {"clip", required_argument, NULL, OPT_CLIP},
        {"label-smoothing", required_argument, NULL, OPT_SMOOTHING},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"hidden", required_argument, NULL, OPT_HIDDEN},
        {"seed", required_argument, NULL, OPT_SEED},
        {"data", required_argument, NULL, OPT_DATA},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"save", required_argument, NULL, OPT_SAVE},
        {"load", required_argument, NULL, OPT_LOAD},
        {"eval-only", no_argument, NULL, OPT_EVAL_ONLY},
        {"bench-steps", required_argument, NULL, OPT_BENCH},
        {"trace", required_argument, NULL, OPT_TRACE},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"model", required_argument, NULL, OPT_MODEL},
        {"amp", required_argument, NULL, OPT_AMP},
        {"ddp", no_argument, NULL, OPT_DDP},
        {"bucket-cap-mb", required_argument, NULL, OPT_BUCKET},
        {"help", no_argument, NULL, 'h'},
        {0}};
    *a = (train_args){.config = ag_train_defaults(),
                      .epochs = 10,
                      .data = AG_FASHION_MNIST_DIR,
                      .bucket_cap_mb = 25};
    int c, index = 0;
    while ((c = getopt_long(argc, argv, "h", options, &index)) != -1) {
        if (c == 'h') {
            fputs(usage_text, stdout);
            return 0;
        }
        if (c == '?') return usage_error("unknown option or missing value");
        if (!apply_option(c, options[index].name, optarg, a)) return 2;
    }
    if (optind < argc) return usage_error("unexpected argument '%s'", argv[optind]);
    if (a->eval_only && !a->load) return usage_error("--eval-only needs --load FILE");
    if (a->eval_only && a->save) return usage_error("--eval-only does not train: drop --save");
    if (a->bench_steps && (a->load || a->save || a->eval_only))
        return usage_error("--bench-steps runs alone: drop --load, --save and --eval-only");
    if (a->ddp && a->eval_only) return usage_error("--ddp trains: drop --eval-only");
    return -1;
}

/* "784-512-512-10 MLP" or "LeNet-5 CNN" into buf: the model of a config, for messages. */
static const char *model_name(const ag_train_config *c, char *buf, size_t size) {
    if (c->model == AG_TRAIN_CNN)
        snprintf(buf, size, "LeNet-5 CNN");
    else
        snprintf(buf, size, "%lld-%lld-%lld-%lld MLP", (long long)c->in_features,
                 (long long)c->hidden, (long long)c->hidden, (long long)c->classes);
    return buf;
}

#ifdef AG_WITH_DIST
/* ag_trainer's before_backward for DDP: only a group's last batch communicates. */
static void ddp_before_backward(void *ddp, bool sync) {
    ag_ddp_no_sync(ddp, !sync);
}

/* ag_trainer's sync_grads for DDP: the averaged gradients, before clipping. */
static ag_status ddp_sync_grads(void *ddp) {
    return ag_ddp_finish(ddp);
}
#endif

/* Wraps the trainer's model in DDP when --ddp (rank 0's weights go to every process) and
 * hooks it into the trainer's steps; nothing for one process. */
static int attach_ddp(train_dist *dist, ag_trainer *t) {
#ifdef AG_WITH_DIST
    if (!dist->comm) return 0;
    ag_ddp_options options = ag_ddp_defaults();
    options.bucket_cap_mb = dist->bucket_cap_mb;
    dist->ddp = ag_ddp_new(t->model, dist->comm, &options);
    if (!dist->ddp) return fail("setting up DistributedDataParallel");
    t->before_backward = ddp_before_backward;
    t->sync_grads = ddp_sync_grads;
    t->sync_user = dist->ddp;
#else
    (void)dist;
    (void)t;
#endif
    return 0;
}

/* Drops the DDP replica: before the model it hooks is freed. */
static void detach_ddp(train_dist *dist) {
#ifdef AG_WITH_DIST
    ag_ddp_free(dist->ddp);
#endif
    dist->ddp = NULL;
}

/* Buckets of the DDP replica (0 without DDP). */
static int ddp_buckets(const train_dist *dist) {
#ifdef AG_WITH_DIST
    if (dist->ddp) return ag_ddp_bucket_count(dist->ddp);
#endif
    (void)dist;
    return 0;
}

/* Seconds the last steps waited for gradient all-reduces (0 without DDP). */
static double ddp_wait_seconds(train_dist *dist) {
#ifdef AG_WITH_DIST
    if (dist->ddp) return ag_ddp_take_wait_seconds(dist->ddp);
#endif
    (void)dist;
    return 0;
}

/* Sums n doubles over the processes (nothing for one process). */
static ag_status sum_over_ranks(train_dist *dist, double *values, int n) {
#ifdef AG_WITH_DIST
    if (!dist->comm) return AG_OK;
    ag_scope *scope = ag_scope_begin();
    ag_tensor *t = ag_from_f64(values, 1, (int64_t[]){n});
    ag_status st = t ? dist->comm->allreduce_sum(dist->comm, t) : ag_last_status();
    if (st == AG_OK) st = ag_to_host(t, values, (size_t)n * sizeof *values);
    ag_scope_end(scope);
    return st;
#else
    (void)dist;
    (void)values;
    (void)n;
    return AG_OK;
#endif
}

/* A p_step run by bench_time that starts --trace at the first timed step. */
typedef struct traced_step {
    p_step *step;      /* the step to run */
    const char *trace; /* --trace FILE, or NULL */
    int calls;         /* calls so far (the first BENCH_WARMUP are the warm-up) */
} traced_step;

/* bench_fn of a traced_step. */
static ag_status traced_step_run(void *ctx) {
    traced_step *t = ctx;
    /* bench_time without a budget runs exactly BENCH_WARMUP warm-up calls first. */
    if (t->trace && ++t->calls == BENCH_WARMUP + 1) {
        ag_status st = ag_trace_start(t->trace);
        if (st != AG_OK) return st;
    }
    return p_step_run(t->step);
}

/* --bench-steps: one training step = forward, loss, backward, clip, AdamW, schedule and
 * zero_grad on one batch (no accumulation), on fixed random inputs (tools/bench.h's p_step,
 * which `ag bench` times too); prints the median. */
static int bench(const train_args *a, train_dist *dist) {
    const int n = (int)a->bench_steps;
    p_step s;
    if (p_step_init(&s, &a->config, n + BENCH_WARMUP) != AG_OK) return fail("building the model");
    if (attach_ddp(dist, &s.trainer)) {
        p_step_free(&s);
        return 1;
    }
    const bench_timing timing = {
        .warmup = BENCH_WARMUP, .inner = 1, .min_repeats = n, .max_repeats = n};
    bench_stats ms;
    traced_step ts = {&s, a->trace, 0};
    int rc = bench_time(traced_step_run, &ts, ag_default_device(), &timing, &ms) == AG_OK
                 ? 0
                 : fail("training step");
    if (ts.calls > BENCH_WARMUP && ag_trace_stop() != AG_OK && rc == 0)
        rc = fail("writing the trace");
    /* Warm-up included: the wait per step is a mean over every step run. */
    double wait_ms = 1e3 * ddp_wait_seconds(dist) / (n + BENCH_WARMUP);
    if (rc == 0 && dist->rank == 0) {
        const ag_train_config *cfg = &s.trainer.config;
        char dev[64], model[96];
        ag_device_str(ag_default_device(), dev, sizeof dev);
        ms = bench_scale(ms, 1e3);
        printf("ag: %.2f ms/step (median of %d steps after %d warm-up; min %.2f, max %.2f; "
               "batch %lld, %s, %s, last loss %.4f)\n",
               ms.median, n, BENCH_WARMUP, ms.min, ms.max, (long long)cfg->batch_size,
               model_name(cfg, model, sizeof model), dev, s.loss);
        if (dist->comm)
            printf("ddp: %d processes, batch %lld each, %d bucket%s; %.3f ms/step waiting for "
                   "the gradient all-reduce after backward (mean)\n",
                   dist->world, (long long)cfg->batch_size, ddp_buckets(dist),
                   ddp_buckets(dist) == 1 ? "" : "s", wait_ms);
    }
    detach_ddp(dist);
    p_step_free(&s);
    return rc;
}

/* Loads --load into the trainer (the optimizer state too unless only evaluating). */
static int load_checkpoint(const train_args *a, ag_trainer *t) {
    if (ag_checkpoint_load_with_scaler(a->load, t->model, a->eval_only ? NULL : t->optimizer,
                                       a->eval_only ? NULL : t->scaler) == AG_OK)
        return 0;
    char model[96];
    fprintf(stderr, "ag train: cannot load checkpoint '%s' into the %s: %s\n", a->load,
            model_name(&t->config, model, sizeof model), ag_last_error());
    return 1;
}

/* The training run: epochs of training, each followed by a test evaluation. */
static int train(const train_args *a, ag_train_data *d, ag_trainer *t, train_dist *dist) {
    int64_t batches = ag_loader_batches(d->train_loader);
    int64_t steps = ag_train_steps_per_epoch(batches, a->config.accumulate) * a->epochs;
    if (a->config.warmup_steps >= steps)
        return usage_error("--warmup %lld must be below the run's %lld optimizer steps",
                           (long long)a->config.warmup_steps, (long long)steps);
    if (ag_trainer_init(t, &a->config, steps) != AG_OK) return fail("building the model");
    if (a->load && load_checkpoint(a, t)) return 1;
    if (attach_ddp(dist, t)) return 1;
    const bool report = dist->rank == 0; /* one process prints and saves for all */
    char dev[64], model[96];
    ag_device_str(ag_default_device(), dev, sizeof dev);
    if (dist->world > 1 && report)
        printf("data parallel: %d processes, each on its shard of %lld batches per epoch\n",
               dist->world, (long long)batches);
    if (report)
        printf("training %s%s%s on %s: %lld images in %lld batches of %lld, %lld "
               "optimizer steps (accumulate %d) in %d epoch%s, seed %llu\n",
               model_name(&t->config, model, sizeof model),
               a->config.amp != AG_F32 ? " with AMP " : "",
               a->config.amp != AG_F32 ? ag_dtype_name(a->config.amp) : "", dev,
               (long long)(a->limit > 0 && a->limit < d->train.count ? a->limit : d->train.count),
               (long long)batches, (long long)a->config.batch_size, (long long)steps,
               a->config.accumulate, a->epochs, a->epochs == 1 ? "" : "s",
               (unsigned long long)a->config.seed);
    ag_progress progress;
    ag_progress_init(&progress, stdout, a->quiet);
    ag_accuracy acc = {0};
    for (int e = 0; e < a->epochs; e++) {
        ag_epoch_stats stats;
        ag_loader_set_epoch(d->train_loader, (uint64_t)e);
        if (report) ag_progress_begin(&progress, e + 1, a->epochs, batches);
        if (ag_train_epoch(t, d->train_loader, report ? &progress : NULL, &stats) != AG_OK)
            return fail("training");
        /* The epoch's loss and image count over all processes; every process evaluates the
         * same replica on the whole test set, so accuracy needs no reduction. */
        double totals[2] = {stats.loss * (double)stats.images, (double)stats.images};
        if (sum_over_ranks(dist, totals, 2) != AG_OK) return fail("reducing the metrics");
        stats.images = (int64_t)totals[1];
        stats.loss = totals[1] > 0 ? totals[0] / totals[1] : 0;
        if (ag_evaluate(t->model, d->test_loader, &acc) != AG_OK) return fail("evaluation");
        if (report) ag_progress_epoch(&progress, &stats, &acc);
    }
    if (!report) return 0;
    ag_print_accuracy(stdout, &acc);
    if (a->save &&
        ag_checkpoint_save_with_scaler(a->save, t->model, t->optimizer, t->scaler) != AG_OK)
        return fail("saving the checkpoint");
    if (a->save) printf("saved checkpoint %s\n", a->save);
    return 0;
}

/* --load FILE --eval-only: the test accuracy of a checkpoint. */
static int eval_only(const train_args *a, ag_train_data *d, ag_trainer *t) {
    if (ag_trainer_init(t, &a->config, 0) != AG_OK) return fail("building the model");
    if (load_checkpoint(a, t)) return 1;
    ag_accuracy acc;
    if (ag_evaluate(t->model, d->test_loader, &acc) != AG_OK) return fail("evaluation");
    ag_print_accuracy(stdout, &acc);
    return 0;
}

/* Joins the mpirun job for --ddp. */
static int start_dist(train_dist *dist) {
#ifdef AG_WITH_DIST
    if (ag_dist_init(NULL, NULL) != AG_OK || !(dist->comm = ag_comm_mpi_new()))
        return fail("joining the MPI job");
    dist->rank = dist->comm->rank;
    dist->world = dist->comm->world_size;
#else
    (void)dist;
#endif
    return 0;
}

/* Leaves the MPI job; a failed process ends the whole job, since its peers would wait for
 * it in their next all-reduce. Returns rc. */
static int stop_dist(train_dist *dist, int rc) {
#ifdef AG_WITH_DIST
    ag_comm_free(dist->comm);
    if (dist->comm && rc != 0) ag_dist_abort(rc);
    if (dist->comm) ag_dist_finalize();
#else
    (void)dist;
#endif
    return rc;
}

/* This process's shard of the training images (the first --limit), replacing the loader
 * that covers them all. */
static int shard_training_set(const train_args *a, ag_train_data *d, const train_dist *dist) {
    if (dist->world < 2) return 0;
    int64_t n = a->limit > 0 && a->limit < d->train.count ? a->limit : d->train.count;
    ag_loader_options o = {.batch_size = a->config.batch_size,
                           .shuffle = true,
                           .seed = a->config.seed,
                           .rank = dist->rank,
                           .world_size = dist->world};
    ag_scope *scope = ag_scope_begin();
    ag_tensor *x = ag_slice(d->train.images, 0, 0, n, 1),
              *y = ag_slice(d->train.labels, 0, 0, n, 1);
    ag_loader *shard = x && y ? ag_loader_new(x, y, &o) : NULL;
    ag_scope_end(scope);
    if (!shard) return fail("sharding the training set");
    ag_loader_free(d->train_loader);
    d->train_loader = shard;
    return 0;
}

/* Loads the data and trains, evaluates or benchmarks. */
static int run(const train_args *a, train_dist *dist) {
    if (a->bench_steps) return bench(a, dist);
    ag_train_data data;
    if (ag_train_data_load(&data, a->data, &a->config, !a->eval_only, a->limit) != AG_OK)
        return fail("loading the data set");
    if (!a->eval_only && shard_training_set(a, &data, dist)) {
        ag_train_data_free(&data);
        return 1;
    }
    ag_trainer t = {0};
    if (a->trace && ag_trace_start(a->trace) != AG_OK) {
        ag_train_data_free(&data);
        return fail("starting the trace");
    }
    int rc = a->eval_only ? eval_only(a, &data, &t) : train(a, &data, &t, dist);
    if (a->trace && ag_trace_stop() != AG_OK && rc == 0) rc = fail("writing the trace");
    detach_ddp(dist);
    ag_trainer_free(&t);
    ag_train_data_free(&data);
    return rc;
}

/* `ag train`: parses the options, loads the data and trains, evaluates or benchmarks. */
int ag_cmd_train(int argc, char **argv) {
    train_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    if (ag_init() != AG_OK) return fail("initialising ag");
    train_dist dist = {.world = 1, .bucket_cap_mb = a.bucket_cap_mb};
    if (a.ddp && start_dist(&dist)) return 1;
    rc = run(&a, &dist);
    return stop_dist(&dist, rc);
}
