/* Soak test: many training steps of a small model with the resident memory (RSS) sampled,
 * to show that nothing accumulates over a long run (issue 11, part 6).
 *
 * The model is Sequential(Linear(32, 64), GELU, Dropout(0.1), LayerNorm(64), Linear(64, 10))
 * on a synthetic classification set (2048 points from N(0, 1), labelled by the argmax of a
 * fixed random linear map), trained as ag train does: minibatches of 32 drawn at random
 * (index_select of fresh int64 indices every step), cross entropy with label smoothing 0.1,
 * AdamW (lr 2e-3, weight decay 1e-2), LinearLR warm-up then cosine annealing, clip_grad_norm
 * 1.0, zero_grad(set_to_none) after every step, and every step inside a scope. With
 * --checkpoint-every C the model and optimizer are saved to a temporary directory and
 * loaded back every C steps.
 *
 * RSS (/proc/self/statm) is sampled every K steps and at the end of the warm-up. Growth is
 * the largest sample after the warm-up minus the sample at its end; the run fails (exit 1)
 * if growth reaches --limit-kib, if the device's ag_memory_allocated differs between the
 * end of the warm-up and the end, or if the loss (mean over a window of steps) does not
 * fall from the start to the end. Usage errors exit 2.
 *
 * usage: soak [--steps N] [--warmup W] [--sample-every K] [--limit-kib L]
 *             [--checkpoint-every C] [--no-rss-check] [--seed S]
 *
 * --no-rss-check skips only the RSS limit: under AddressSanitizer (whose quarantine keeps
 * freed memory out of reuse) or valgrind RSS grows by design, and those tools check leaks
 * themselves. The device-memory, loss and error checks stay on. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, mkdtemp, and popen in test_util.h */
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "ag/ag.h"
#include "ag/io.h"
#include "ag/nn.h"
#include "ag/optim.h"
#include "test_util.h"

enum { N_POINTS = 2048, IN = 32, HIDDEN = 64, CLASSES = 10, BATCH = 32, MAX_PARAMS = 16 };
static const double LR = 2e-3;
static const int64_t LR_WARMUP = 100; /* LinearLR steps before the cosine */

typedef struct {
    long steps, warmup, sample_every, limit_kib, checkpoint_every;
    bool rss_check;
    uint64_t seed;
} soak_options;

typedef struct {
    long step;
    long rss_kib;
} rss_sample;

/* Resident set size in KiB, from /proc/self/statm (second field, in pages); -1 on error. */
static long rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = -1;
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* xorshift64*: the data set and the batch indices, independent of ag's generators. */
static uint64_t next_u64(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static double next_uniform(uint64_t *s) {
    return ((double)(next_u64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double next_normal(uint64_t *s) { /* Box-Muller */
    return sqrt(-2.0 * log(next_uniform(s))) * cos(6.283185307179586 * next_uniform(s));
}

/* Fills x [N_POINTS, IN] and y [N_POINTS]: y is the argmax of teacher @ x. */
static void make_data(uint64_t seed, float *x, int64_t *y) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
    static double teacher[CLASSES][IN];
    for (int c = 0; c < CLASSES; c++)
        for (int i = 0; i < IN; i++) teacher[c][i] = next_normal(&s);
    for (int n = 0; n < N_POINTS; n++) {
        for (int i = 0; i < IN; i++) x[n * IN + i] = (float)next_normal(&s);
        double best = -INFINITY;
        for (int c = 0; c < CLASSES; c++) {
            double v = 0;
            for (int i = 0; i < IN; i++) v += teacher[c][i] * x[n * IN + i];
            if (v > best) best = v, y[n] = c;
        }
    }
}

static int usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s [--steps N] [--warmup W] [--sample-every K] [--limit-kib L]\n"
            "          [--checkpoint-every C] [--no-rss-check] [--seed S]\n"
            "defaults: 100000 steps, warm-up a tenth of them, a sample every 100 steps,\n"
            "limit 1024 KiB, no checkpoints\n",
            argv0);
    return 2;
}

/* A long option value that must be an integer >= min. */
static bool parse_long(const char *s, long min, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < min) return false;
    *out = v;
    return true;
}

static int parse_options(int argc, char **argv, soak_options *o) {
    static const struct option longopts[] = {{"steps", required_argument, NULL, 's'},
                                             {"warmup", required_argument, NULL, 'w'},
                                             {"sample-every", required_argument, NULL, 'k'},
                                             {"limit-kib", required_argument, NULL, 'l'},
                                             {"checkpoint-every", required_argument, NULL, 'c'},
                                             {"no-rss-check", no_argument, NULL, 'n'},
                                             {"seed", required_argument, NULL, 'r'},
                                             {"help", no_argument, NULL, 'h'},
                                             {0}};
    *o = (soak_options){
        .steps = 100000, .warmup = -1, .sample_every = 100, .limit_kib = 1024, .rss_check = true};
    long seed = 0;
    int c;
    bool ok = true;
    while (ok && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c == 's')
            ok = parse_long(optarg, 2, &o->steps);
        else if (c == 'w')
            ok = parse_long(optarg, 1, &o->warmup);
        else if (c == 'k')
            ok = parse_long(optarg, 1, &o->sample_every);
        else if (c == 'l')
            ok = parse_long(optarg, 1, &o->limit_kib);
        else if (c == 'c')
            ok = parse_long(optarg, 0, &o->checkpoint_every);
        else if (c == 'n')
            o->rss_check = false;
        else if (c == 'r')
            ok = parse_long(optarg, 0, &seed);
        else
            ok = false;
    }
    if (o->warmup < 0) o->warmup = o->steps / 10 > 0 ? o->steps / 10 : 1;
    o->seed = (uint64_t)seed;
    if (!ok || optind < argc || o->warmup >= o->steps) return usage(argv[0]);
    return 0;
}

typedef struct {
    ag_module *model;
    ag_optimizer *opt;
    ag_scheduler *sched;
    ag_generator *gen; /* weights and dropout */
    ag_named_tensor params[MAX_PARAMS];
    int n_params;
    ag_tensor *x, *y; /* the data set, owned */
    ag_cross_entropy_options loss;
} soak_state;

static ag_status setup(soak_state *t, const soak_options *o) {
    memset(t, 0, sizeof *t);
    float *x = malloc(sizeof(float) * N_POINTS * IN);
    int64_t *y = malloc(sizeof(int64_t) * N_POINTS);
    if (x && y) {
        make_data(o->seed, x, y);
        t->x = ag_from_f32(x, 2, (int64_t[]){N_POINTS, IN});
        t->y = ag_from_i64(y, 1, (int64_t[]){N_POINTS});
    }
    free(x);
    free(y);
    if (!t->x || !t->y) return ag_last_status() != AG_OK ? ag_last_status() : AG_ERR_OUT_OF_MEMORY;

    t->gen = ag_generator_new(o->seed);
    ag_module *layers[5] = {ag_linear_new(IN, HIDDEN, true, t->gen), ag_gelu_new(false),
                            ag_dropout_new(0.1, t->gen), ag_layer_norm_new(HIDDEN, 1e-5, true),
                            ag_linear_new(HIDDEN, CLASSES, true, t->gen)};
    t->model = ag_sequential_new(5, layers);
    if (!t->model) return ag_last_status();
    t->n_params = ag_module_parameters(t->model, t->params, MAX_PARAMS);
    if (t->n_params < 1 || t->n_params > MAX_PARAMS) return AG_ERR_INVALID_ARG;

    ag_adam_options adamw = ag_adamw_defaults();
    adamw.lr = LR;
    t->opt = ag_adamw_new(t->n_params, t->params, &adamw);
    if (!t->opt) return ag_last_status();
    /* warm-up from lr/10 over LR_WARMUP steps, then cosine to lr/10 over the rest */
    int64_t warm = o->steps > 2 * LR_WARMUP ? LR_WARMUP : 1;
    ag_scheduler *parts[2] = {ag_linear_lr_new(t->opt, 0.1, 1.0, warm),
                              ag_cosine_annealing_new(t->opt, o->steps - warm, LR / 10)};
    if (parts[0] && parts[1]) t->sched = ag_sequential_lr_new(t->opt, 2, parts, &warm);
    if (!t->sched) {
        for (int i = 0; i < 2; i++) ag_scheduler_free(parts[i]);
        return ag_last_status();
    }
    t->loss = ag_cross_entropy_defaults();
    t->loss.label_smoothing = 0.1;
    return AG_OK;
}

static void teardown(soak_state *t) {
    ag_scheduler_free(t->sched);
    ag_optimizer_free(t->opt);
    ag_module_free(t->model);
    ag_generator_free(t->gen);
    ag_release(t->x);
    ag_release(t->y);
}

/* One training step on a random minibatch; every temporary belongs to the step's scope. */
static ag_status train_step(soak_state *t, uint64_t *rng, double *loss) {
    int64_t idx[BATCH];
    for (int i = 0; i < BATCH; i++) idx[i] = (int64_t)(next_u64(rng) % N_POINTS);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *index = ag_from_i64(idx, 1, (int64_t[]){BATCH});
    ag_tensor *logits = ag_module_forward(t->model, ag_index_select(t->x, 0, index));
    ag_tensor *l = ag_cross_entropy(logits, ag_index_select(t->y, 0, index), &t->loss);
    ag_status st = l ? ag_backward(l, NULL) : ag_last_status();
    if (st == AG_OK) st = ag_item(l, loss);
    double norm = 0;
    if (st == AG_OK) st = ag_clip_grad_norm(t->n_params, t->params, 1.0, 2.0, &norm);
    if (st == AG_OK) st = ag_optimizer_step(t->opt);
    if (st == AG_OK) st = ag_scheduler_step(t->sched);
    if (st == AG_OK) st = ag_optimizer_zero_grad(t->opt, true);
    ag_scope_end(scope);
    return st;
}

/* Accuracy on the whole set in eval mode without grad, in [0, 1]; -1 on error. */
static double accuracy(soak_state *t) {
    ag_module_train(t->model, false);
    bool prev = ag_set_grad_enabled(false);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *pred = ag_argmax(ag_module_forward(t->model, t->x), 1, false, false);
    double correct = -1;
    if (ag_item(ag_sum(ag_eq(pred, t->y), 0, NULL, false), &correct) != AG_OK) correct = -1;
    ag_scope_end(scope);
    ag_set_grad_enabled(prev);
    ag_module_train(t->model, true);
    return correct < 0 ? -1 : correct / N_POINTS;
}

/* Saves the model and optimizer to path and loads them back. */
static ag_status checkpoint_round_trip(soak_state *t, const char *path) {
    ag_status st = ag_checkpoint_save(path, t->model, t->opt);
    return st == AG_OK ? ag_checkpoint_load(path, t->model, t->opt) : st;
}

int main(int argc, char **argv) {
    soak_options o;
    int rc = parse_options(argc, argv, &o);
    if (rc) return rc;

    /* Every allocation the loop's bookkeeping needs is made before the warm-up ends. */
    long n_samples = o.steps / o.sample_every + 3;
    rss_sample *samples = calloc((size_t)n_samples, sizeof *samples);
    char tmpdir[64] = "", ckpt[128] = "";
    /* tu_tmp_path would do, but its ck_assert needs a running Check suite. */
    if (o.checkpoint_every > 0) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/ag_test_soak_XXXXXX");
        if (!mkdtemp(tmpdir)) {
            perror("soak: mkdtemp");
            free(samples);
            return 1;
        }
        snprintf(ckpt, sizeof ckpt, "%s/ckpt.safetensors", tmpdir);
    }
    soak_state t;
    ag_status st = samples ? setup(&t, &o) : AG_ERR_OUT_OF_MEMORY;
    const ag_device dev = ag_default_device();
    char dev_name[32];
    ag_device_str(dev, dev_name, sizeof dev_name);
    printf("soak: %ld steps (warm-up %ld, RSS every %ld, limit %ld KiB%s), checkpoint every "
           "%ld, %d-%d-%d MLP, batch %d, on %s\n",
           o.steps, o.warmup, o.sample_every, o.limit_kib, o.rss_check ? "" : ", not checked",
           o.checkpoint_every, IN, HIDDEN, CLASSES, BATCH, dev_name);
    fflush(stdout);

    const long window = o.steps / 10 < 100 ? (o.steps / 10 > 0 ? o.steps / 10 : 1) : 100;
    double loss = NAN, loss_first = 0, loss_last = 0, acc_start = -1;
    uint64_t rng = o.seed * 0xD1B54A32D192ED03ULL + 7;
    long n = 0, rss_warm = -1, step = 0;
    uint64_t dev_warm = 0;
    double t0 = now_s(), t_warm = t0;
    if (st == AG_OK) {
        acc_start = accuracy(&t);
        samples[n++] = (rss_sample){0, rss_kib()};
    }
    for (step = 1; st == AG_OK && step <= o.steps; step++) {
        st = train_step(&t, &rng, &loss);
        if (st == AG_OK && o.checkpoint_every > 0 && step % o.checkpoint_every == 0)
            st = checkpoint_round_trip(&t, ckpt);
        if (st != AG_OK) break;
        if (step <= window) loss_first += loss;
        if (step > o.steps - window) loss_last += loss;
        if (step == o.warmup || step % o.sample_every == 0 || step == o.steps) {
            if (n < n_samples) samples[n++] = (rss_sample){step, rss_kib()};
            if (step == o.warmup) {
                rss_warm = samples[n - 1].rss_kib;
                dev_warm = ag_memory_allocated(dev);
                t_warm = now_s();
            }
        }
    }
    double t_end = now_s();
    if (st != AG_OK) {
        if (n == 0)
            fprintf(stderr, "soak: FAILED in the set-up: %s\n", ag_last_error());
        else
            fprintf(stderr, "soak: FAILED at step %ld: %s\n", step, ag_last_error());
        rc = 1;
    }

    if (rc == 0) {
        uint64_t dev_end = ag_memory_allocated(dev);
        long rss_max = rss_warm, rss_end = samples[n - 1].rss_kib;
        for (long i = 0; i < n; i++)
            if (samples[i].step >= o.warmup && samples[i].rss_kib > rss_max)
                rss_max = samples[i].rss_kib;
        const long growth = rss_max - rss_warm;
        loss_first /= (double)window;
        loss_last /= (double)window;
        const double acc_end = accuracy(&t);
        printf("soak: %ld steps in %.1f s (%.0f steps/s; %.0f steps/s after warm-up)\n", o.steps,
               t_end - t0, (double)o.steps / (t_end - t0),
               (double)(o.steps - o.warmup) / (t_end - t_warm));
        printf("soak: loss %.4f -> %.4f (mean of the first and last %ld steps), accuracy %.1f%% "
               "-> %.1f%%\n",
               loss_first, loss_last, window, 100 * acc_start, 100 * acc_end);
        printf("soak: RSS at step 0 %ld KiB, after warm-up (step %ld) %ld KiB, max after warm-up "
               "%ld KiB, final %ld KiB: growth %ld KiB (limit %ld KiB%s)\n",
               samples[0].rss_kib, o.warmup, rss_warm, rss_max, rss_end, growth, o.limit_kib,
               o.rss_check ? "" : ", not checked");
        printf("soak: device memory (ag_memory_allocated %s) after warm-up %llu bytes, at the end "
               "%llu bytes, peak %llu bytes\n",
               dev_name, (unsigned long long)dev_warm, (unsigned long long)dev_end,
               (unsigned long long)ag_max_memory_allocated(dev));
        if (rss_warm < 0 || rss_end < 0) {
            fprintf(stderr, "soak: FAILED: cannot read /proc/self/statm\n");
            rc = 1;
        }
        if (o.rss_check && growth >= o.limit_kib) {
            fprintf(stderr,
                    "soak: FAILED: RSS grew by %ld KiB after the warm-up; samples (step: "
                    "KiB):\n",
                    growth);
            for (long i = 0; i < n; i++)
                fprintf(stderr, "%ld: %ld%s", samples[i].step, samples[i].rss_kib,
                        i + 1 < n ? (i % 8 == 7 ? "\n" : ", ") : "\n");
            rc = 1;
        }
        if (dev_end != dev_warm) {
            fprintf(stderr, "soak: FAILED: device memory changed from %llu to %llu bytes\n",
                    (unsigned long long)dev_warm, (unsigned long long)dev_end);
            rc = 1;
        }
        if (!(isfinite(loss_last) && loss_last < loss_first)) {
            fprintf(stderr, "soak: FAILED: the loss did not fall: %g -> %g\n", loss_first,
                    loss_last);
            rc = 1;
        }
    }
    if (samples) teardown(&t);
    free(samples);
    tu_remove_tmpdir(tmpdir);
    if (rc == 0) printf("soak: OK\n");
    return rc;
}
