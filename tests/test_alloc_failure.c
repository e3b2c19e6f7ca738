/* Allocation-failure injection: for every allocation n that building a model, two training
 * steps, a checkpoint save or a checkpoint load make, ag_debug_fail_allocation(n) makes
 * exactly that one fail, and the run must end in a clean error: AG_ERR_OUT_OF_MEMORY with a
 * message, no crash, nothing left behind (device memory back to where it was; host memory
 * is LeakSanitizer's job in the sanitizer run) and a state the next call can use: the next
 * step trains, the previous checkpoint still loads. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>
#include "ag/ag.h"
#include "ag/io.h"
#include "ag/nn.h"
#include "ag/optim.h"
#include "test_util.h"

#define BATCH 6

/* The models the walks train, so that a step allocates what real training does (optimizer
 * state on the first step, norms, scopes, graph nodes, composite ops):
 * - RIG_MLP: Linear(4, 8), GELU, LayerNorm(8), Linear(8, 3); AdamW, gradient clipping;
 * - RIG_CNN: Conv2d(1, 2, 3, padding 1), BatchNorm2d(2), ReLU, MaxPool2d(2), Flatten,
 *   Linear(18, 3) on 6x6 images; SGD with Nesterov momentum and weight decay, StepLR;
 * - RIG_RNN: LSTM(4, 8, batch_first) over 5 steps, Flatten, Linear(40, 3); Adam with L2
 *   weight decay, gradient clipping. */
typedef enum rig_kind { RIG_MLP, RIG_CNN, RIG_RNN, RIG_KINDS } rig_kind;
static const char *const rig_names[RIG_KINDS] = {"MLP", "CNN", "RNN"};
#define STEPS 5 /* RIG_RNN's sequence length */

/* A model, its optimizer (and scheduler) and one batch. */
typedef struct rig {
    rig_kind kind;
    ag_module *model;
    ag_optimizer *opt;
    ag_scheduler *sched; /* RIG_CNN only */
    ag_named_tensor params[16];
    int n_params;
    ag_tensor *x, *y;
} rig;

static void rig_free(rig *r) {
    ag_scheduler_free(r->sched);
    ag_optimizer_free(r->opt);
    ag_module_free(r->model);
    ag_release(r->x);
    ag_release(r->y);
    memset(r, 0, sizeof *r);
}

/* The layers of a model of kind `kind` into layers[]; returns how many (NULL entries where
 * a constructor failed). */
static int rig_layers(rig_kind kind, ag_generator *gen, ag_module **layers) {
    if (kind == RIG_MLP) {
        layers[0] = ag_linear_new(4, 8, true, gen);
        layers[1] = ag_gelu_new(false);
        layers[2] = ag_layer_norm_new(8, 1e-5, true);
        layers[3] = ag_linear_new(8, 3, true, gen);
        return 4;
    }
    if (kind == RIG_RNN) {
        layers[0] = ag_lstm_new(4, 8, 1, true, true, gen);
        layers[1] = ag_flatten_new(1, -1);
        layers[2] = ag_linear_new(STEPS * 8, 3, true, gen);
        return 3;
    }
    layers[0] = ag_conv2d_new(1, 2, TU_SHAPE(3, 3), NULL, TU_SHAPE(1, 1), NULL, 1, true, gen);
    layers[1] = ag_batch_norm2d_new(2, 1e-5, 0.1, true);
    layers[2] = ag_relu_new();
    layers[3] = ag_max_pool2d_new(TU_SHAPE(2, 2), NULL, NULL);
    layers[4] = ag_flatten_new(1, -1);
    layers[5] = ag_linear_new(18, 3, true, gen);
    return 6;
}

/* The rig's optimizer (and scheduler); returns the error if one could not be made. */
static ag_status rig_optimizer(rig *r) {
    r->n_params = ag_module_parameters(r->model, r->params, 16);
    if (r->kind == RIG_MLP) {
        ag_adam_options options = ag_adamw_defaults();
        options.lr = 0.05;
        r->opt = ag_adamw_new(r->n_params, r->params, &options);
    } else if (r->kind == RIG_RNN) {
        ag_adam_options options = ag_adam_defaults();
        options.weight_decay = 1e-4;
        r->opt = ag_adam_new(r->n_params, r->params, &options);
    } else {
        ag_sgd_options options = ag_sgd_defaults(0.1);
        options.momentum = 0.9;
        options.nesterov = true;
        options.weight_decay = 1e-4;
        r->opt = ag_sgd_new(r->n_params, r->params, &options);
        r->sched = r->opt ? ag_step_lr_new(r->opt, 1, 0.5) : NULL;
        if (r->opt && !r->sched) return ag_last_status();
    }
    return r->opt ? AG_OK : ag_last_status();
}

/* Builds every piece of the rig; on failure frees what was built and returns the error. */
static ag_status rig_build(rig *r, rig_kind kind, uint64_t seed) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    ag_generator *gen = ag_generator_new(seed);
    ag_module *layers[6] = {0};
    int n_layers = gen ? rig_layers(kind, gen, layers) : 0;
    bool built = gen != NULL;
    for (int i = 0; i < n_layers; i++) built = built && layers[i];
    if (built) r->model = ag_sequential_new(n_layers, layers);
    ag_status st = r->model ? AG_OK : ag_last_status();
    /* A Sequential that could not be made leaves its children to the caller. */
    if (!r->model)
        for (int i = 0; i < n_layers; i++) ag_module_free(layers[i]);
    if (st == AG_OK) st = rig_optimizer(r);
    if (st == AG_OK) {
        r->x = kind == RIG_MLP   ? ag_randn(gen, AG_F32, 2, TU_SHAPE(BATCH, 4))
               : kind == RIG_CNN ? ag_randn(gen, AG_F32, 4, TU_SHAPE(BATCH, 1, 6, 6))
                                 : ag_randn(gen, AG_F32, 3, TU_SHAPE(BATCH, STEPS, 4));
        const int64_t labels[BATCH] = {0, 1, 2, 2, 1, 0};
        r->y = r->x ? ag_from_data(AG_I64, 1, TU_SHAPE(BATCH), labels) : NULL;
        if (!r->y) st = ag_last_status();
    }
    ag_generator_free(gen);
    if (st != AG_OK) rig_free(r);
    return st;
}

/* Forward, cross-entropy, backward, clipping, optimizer and scheduler steps, zero_grad;
 * *loss gets the loss. */
static ag_status rig_step(rig *r, double *loss) {
    ag_scope *scope = ag_scope_begin();
    if (!scope) return ag_last_status();
    ag_cross_entropy_options ce = ag_cross_entropy_defaults();
    ag_tensor *logits = ag_module_forward(r->model, r->x);
    ag_tensor *l = logits ? ag_cross_entropy(logits, r->y, &ce) : NULL;
    ag_status st = l ? ag_backward(l, NULL) : ag_last_status();
    double norm;
    if (st == AG_OK) st = ag_clip_grad_norm(r->n_params, r->params, 1.0, 2.0, &norm);
    if (st == AG_OK) st = ag_optimizer_step(r->opt);
    if (st == AG_OK && r->sched) st = ag_scheduler_step(r->sched);
    if (st == AG_OK) st = ag_optimizer_zero_grad(r->opt, true);
    float value = NAN;
    if (st == AG_OK) st = ag_to_host(l, &value, sizeof value);
    *loss = value;
    ag_scope_end(scope);
    return st;
}

/* Every parameter's values, flattened, into out (capacity n); returns how many. */
static int64_t rig_values(const rig *r, double *out, int64_t n) {
    int64_t used = 0;
    for (int i = 0; i < r->n_params; i++) {
        int64_t numel = ag_numel(r->params[i].tensor);
        ck_assert_int_le(used + numel, n);
        ck_assert_int_eq(tu_read(r->params[i].tensor, out + used, numel), AG_OK);
        used += numel;
    }
    return used;
}

static ag_device cpu0(void) {
    ag_device d;
    ck_assert_int_eq(ag_device_parse("cpu:0", &d), AG_OK);
    return d;
}

/* Checks that a run whose allocation n failed says so: AG_ERR_OUT_OF_MEMORY and a message
 * about memory (each allocation counted is needed, so none may be absorbed silently: a NULL
 * taken for "nothing" is how wrong results slip through). Clears the error. */
static void check_failed(ag_status st, uint64_t n, const char *what) {
    ck_assert_msg(st == AG_ERR_OUT_OF_MEMORY,
                  "%s, allocation %llu failed: status %d, want AG_ERR_OUT_OF_MEMORY: %s", what,
                  (unsigned long long)n, st, ag_last_error());
    ck_assert_msg(strstr(ag_last_error(), "memory"),
                  "%s, allocation %llu: message '%s' does not say memory ran out", what,
                  (unsigned long long)n, ag_last_error());
    ag_clear_error();
}

/* Device memory must be back where it was: whatever the failed run made is freed. */
static void check_memory(ag_device dev, uint64_t before, uint64_t n) {
    uint64_t now = ag_memory_allocated(dev);
    ck_assert_msg(now == before, "allocation %llu failed: %lld bytes of tensors left behind",
                  (unsigned long long)n, (long long)(now - before));
}

/* Turns failures off after a run that had allocation n fail, checking that the run got
 * that far: one that allocated less than the counting run would test nothing. */
static void disarm(uint64_t n) {
    uint64_t made = ag_debug_allocation_count();
    ag_debug_fail_allocation(0);
    ck_assert_msg(made >= n, "allocation %llu never came: the run made %llu", (unsigned long long)n,
                  (unsigned long long)made);
}

/* Builds a rig and trains it a step: makes what a process allocates once (loading the
 * backend, kernel caches), which a counting run must not include. */
static void warm_up(rig_kind kind) {
    rig r;
    double loss;
    ck_assert_int_eq(rig_build(&r, kind, 1), AG_OK);
    ck_assert_int_eq(rig_step(&r, &loss), AG_OK);
    rig_free(&r);
}

/* Allocations a piece of code makes, counted on a run without failures. */
#define COUNT_ALLOCATIONS(total, code)                                                             \
    do {                                                                                           \
        ag_debug_fail_allocation(0);                                                               \
        code;                                                                                      \
        (total) = ag_debug_allocation_count();                                                     \
    } while (0)

START_TEST(building_a_model_fails_cleanly_at_every_allocation) {
    const rig_kind kind = (rig_kind)_i;
    const ag_device dev = cpu0();
    const uint64_t memory_before = ag_memory_allocated(dev);
    rig r;
    warm_up(kind);
    uint64_t total;
    COUNT_ALLOCATIONS(total, ck_assert_int_eq(rig_build(&r, kind, 1), AG_OK));
    rig_free(&r);
    ck_assert_uint_gt(total, 10);
    for (uint64_t n = 1; n <= total; n++) {
        ag_debug_fail_allocation(n);
        ag_status st = rig_build(&r, kind, 1);
        disarm(n);
        check_failed(st, n, "building the model");
        check_memory(dev, memory_before, n);
    }
    printf("%s: building the model: %llu allocations, each failed once, cleanly\n", rig_names[kind],
           (unsigned long long)total);
}
END_TEST

START_TEST(training_steps_fail_cleanly_and_the_next_step_trains) {
    const rig_kind kind = (rig_kind)_i;
    const ag_device dev = cpu0();
    const uint64_t memory_before = ag_memory_allocated(dev);
    /* Two steps without failures (the first allocates the optimizer's state). */
    rig r;
    warm_up(kind);
    ck_assert_int_eq(rig_build(&r, kind, 2), AG_OK);
    double loss, got[1024];
    uint64_t total;
    COUNT_ALLOCATIONS(total, {
        ck_assert_int_eq(rig_step(&r, &loss), AG_OK);
        ck_assert_int_eq(rig_step(&r, &loss), AG_OK);
    });
    const int64_t n_values = rig_values(&r, got, 1024);
    rig_free(&r);
    ck_assert_uint_gt(total, 50);

    for (uint64_t n = 1; n <= total; n++) {
        ck_assert_int_eq(rig_build(&r, kind, 2), AG_OK);
        loss = NAN;
        ag_debug_fail_allocation(n);
        ag_status st = rig_step(&r, &loss);
        if (st == AG_OK) st = rig_step(&r, &loss);
        disarm(n);
        check_failed(st, n, "two training steps");
        /* The next step trains: gradients cleared, a finite loss, finite parameters. */
        ck_assert_int_eq(ag_optimizer_zero_grad(r.opt, true), AG_OK);
        ck_assert_msg(rig_step(&r, &loss) == AG_OK, "step after failing allocation %llu: %s",
                      (unsigned long long)n, ag_last_error());
        ck_assert(isfinite(loss));
        ck_assert_int_eq(rig_values(&r, got, 1024), n_values);
        for (int64_t i = 0; i < n_values; i++) ck_assert(isfinite(got[i]));
        rig_free(&r);
        check_memory(dev, memory_before, n);
    }
    printf("%s: two training steps: %llu allocations, each failed once, cleanly\n", rig_names[kind],
           (unsigned long long)total);
}
END_TEST

/* Number of entries in dir besides . and .. */
static int files_in(const char *dir) {
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

START_TEST(checkpoint_save_and_load_fail_cleanly_and_keep_the_old_file) {
    const rig_kind kind = (rig_kind)_i;
    const ag_device dev = cpu0();
    char dir[256] = "", buf[320], count_buf[320];
    const char *path =
        tu_tmp_path(dir, sizeof dir, "alloc_failure", "model.safetensors", buf, sizeof buf);
    const char *count_path = tu_tmp_path(dir, sizeof dir, "alloc_failure", "count.safetensors",
                                         count_buf, sizeof count_buf);
    rig r, other;
    double loss, saved[1024], got[1024];
    ck_assert_int_eq(rig_build(&r, kind, 3), AG_OK);
    ck_assert_int_eq(rig_step(&r, &loss), AG_OK);
    ck_assert_int_eq(ag_checkpoint_save(path, r.model, r.opt), AG_OK);
    int64_t n_values = rig_values(&r, saved, 1024);
    ck_assert_int_eq(rig_step(&r, &loss), AG_OK); /* r now differs from the file */
    const uint64_t memory_before = ag_memory_allocated(dev);

    /* Saving r over the file fails at every allocation; the old file stays whole. */
    uint64_t save_total;
    COUNT_ALLOCATIONS(save_total,
                      ck_assert_int_eq(ag_checkpoint_save(count_path, r.model, r.opt), AG_OK));
    ck_assert_int_eq(unlink(count_path), 0);
    ck_assert_uint_gt(save_total, 5);
    for (uint64_t n = 1; n <= save_total; n++) {
        ag_debug_fail_allocation(n);
        ag_status st = ag_checkpoint_save(path, r.model, r.opt);
        disarm(n);
        check_failed(st, n, "checkpoint save");
        ck_assert_msg(files_in(dir) == 1, "allocation %llu failed: a temporary file was left",
                      (unsigned long long)n);
        ck_assert_int_eq(rig_build(&other, kind, 4), AG_OK);
        ck_assert_int_eq(ag_checkpoint_load(path, other.model, other.opt), AG_OK);
        ck_assert_int_eq(rig_values(&other, got, 1024), n_values);
        ck_assert(memcmp(got, saved, (size_t)n_values * sizeof *got) == 0);
        rig_free(&other);
        check_memory(dev, memory_before, n);
    }

    /* Loading fails at every allocation; loading again then works and the model trains. */
    uint64_t load_total;
    ck_assert_int_eq(rig_build(&other, kind, 4), AG_OK);
    COUNT_ALLOCATIONS(load_total,
                      ck_assert_int_eq(ag_checkpoint_load(path, other.model, other.opt), AG_OK));
    rig_free(&other);
    for (uint64_t n = 1; n <= load_total; n++) {
        ck_assert_int_eq(rig_build(&other, kind, 4), AG_OK);
        ag_debug_fail_allocation(n);
        ag_status st = ag_checkpoint_load(path, other.model, other.opt);
        disarm(n);
        check_failed(st, n, "checkpoint load");
        ck_assert_int_eq(ag_checkpoint_load(path, other.model, other.opt), AG_OK);
        ck_assert_int_eq(rig_values(&other, got, 1024), n_values);
        ck_assert(memcmp(got, saved, (size_t)n_values * sizeof *got) == 0);
        ck_assert_int_eq(rig_step(&other, &loss), AG_OK);
        rig_free(&other);
        check_memory(dev, memory_before, n);
    }
    printf("%s: checkpoint save: %llu allocations, load: %llu, each failed once, cleanly\n",
           rig_names[kind], (unsigned long long)save_total, (unsigned long long)load_total);
    rig_free(&r);
    tu_remove_tmpdir(dir);
}
END_TEST

START_TEST(the_switch_counts_per_thread_and_turns_off) {
    ag_debug_fail_allocation(0);
    ck_assert_uint_eq(ag_debug_allocation_count(), 0);
    ag_tensor *t = ag_full(AG_F32, 1, TU_SHAPE(3), 1.0);
    ck_assert_ptr_nonnull(t);
    /* A tensor is at least its struct, its storage struct and its buffer. */
    ck_assert_uint_ge(ag_debug_allocation_count(), 3);
    ag_release(t);
    ag_debug_fail_allocation(1);
    ck_assert_ptr_null(ag_full(AG_F32, 1, TU_SHAPE(3), 1.0));
    ck_assert_int_eq(ag_last_status(), AG_ERR_OUT_OF_MEMORY);
    ag_clear_error();
    /* Only the n-th fails: the next one goes through. */
    t = ag_full(AG_F32, 1, TU_SHAPE(3), 1.0);
    ck_assert_ptr_nonnull(t);
    ag_release(t);
    ag_debug_fail_allocation(0);
}
END_TEST

int main(void) {
    Suite *s = suite_create("alloc_failure");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    /* No fixture scope: the tests own their tensors and release them. */
    tcase_add_test(tc, the_switch_counts_per_thread_and_turns_off);
    tcase_add_loop_test(tc, building_a_model_fails_cleanly_at_every_allocation, 0, RIG_KINDS);
    tcase_add_loop_test(tc, training_steps_fail_cleanly_and_the_next_step_trains, 0, RIG_KINDS);
    tcase_add_loop_test(tc, checkpoint_save_and_load_fail_cleanly_and_keep_the_old_file, 0,
                        RIG_KINDS);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
