/* The training recipe (include/ag/train.h) and `ag train`: the §P model's layout, gradient
 * accumulation against one large batch, the learning-rate schedule, a short deterministic
 * run on the first 2048 Fashion-MNIST images that must beat chance and repeat exactly,
 * resident memory flat across epochs, and the command line: identical losses for one seed, save /
 * load / --eval-only giving the accuracy of the run, and the errors (missing data, corrupt or
 * mismatched checkpoints, usage). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "ag/io.h"
#include "ag/train.h"
#include "test_util.h"

#ifndef AG_CLI_PATH
#error "AG_CLI_PATH must name the ag binary (tests/train.cmake sets it)"
#endif

enum { SHORT_LIMIT = 2048, OUTPUT_SIZE = 1 << 16 };

#ifdef __SANITIZE_ADDRESS__
#define UNDER_ASAN true
#else
#define UNDER_ASAN false
#endif

/* A small model for the tests that only check the mechanics. */
static ag_train_config small_config(void) {
    ag_train_config c = ag_train_defaults();
    c.hidden = 32;
    return c;
}

START_TEST(test_steps_per_epoch) {
    ck_assert_int_eq(ag_train_steps_per_epoch(469, 2), 235); /* a final short group counts */
    ck_assert_int_eq(ag_train_steps_per_epoch(468, 2), 234);
    ck_assert_int_eq(ag_train_steps_per_epoch(5, 1), 5);
    ck_assert_int_eq(ag_train_steps_per_epoch(0, 2), 0);
}
END_TEST

START_TEST(test_model_layout) {
    ag_train_config c = ag_train_defaults();
    ag_generator *gen = ag_generator_new(0);
    ag_module *m = ag_train_model_new(&c, gen);
    ag_generator_free(gen);
    ck_assert_msg(m, "%s", ag_last_error());
    static const char *const kinds[] = {"Linear", "GELU", "Linear", "GELU", "LayerNorm", "Linear"};
    for (int i = 0; i < 6; i++) ck_assert_str_eq(ag_module_kind(ag_module_child(m, i)), kinds[i]);
    ck_assert_ptr_null(ag_module_child(m, 6));
    ag_named_tensor p[8];
    ck_assert_int_eq(ag_module_parameters(m, p, 8), 8);
    static const char *const names[8] = {"0.weight", "0.bias", "2.weight", "2.bias",
                                         "4.weight", "4.bias", "5.weight", "5.bias"};
    static const int64_t rows[8] = {512, 512, 512, 512, 512, 512, 10, 10};
    for (int i = 0; i < 8; i++) {
        ck_assert_str_eq(p[i].name, names[i]);
        ck_assert_int_eq(ag_size(p[i].tensor, 0), rows[i]);
    }
    ck_assert_int_eq(ag_size(p[0].tensor, 1), 784);
    ag_module_free(m);
}
END_TEST

/* Two batches of 4 with the loss halved give the gradients of one batch of 8. */
START_TEST(test_accumulation_is_the_group_mean) {
    ag_train_config c = small_config();
    ag_trainer split, whole;
    ck_assert_msg(ag_trainer_init(&split, &c, 0) == AG_OK, "%s", ag_last_error());
    ck_assert_msg(ag_trainer_init(&whole, &c, 0) == AG_OK, "%s", ag_last_error());
    ag_scope *scope = ag_scope_begin();
    ag_generator *gen = ag_generator_new(7);
    ag_tensor *x = ag_randn(gen, AG_F32, 2, TU_SHAPE(8, 784));
    ag_generator_free(gen);
    ag_tensor *y = tu_tensor(AG_I64, 1, TU_SHAPE(8), TU_VALUES(3, 1, 4, 1, 5, 9, 2, 6));
    ck_assert(ag_trainer_accumulate(&split, ag_slice(x, 0, 0, 4, 1), ag_slice(y, 0, 0, 4, 1), 2,
                                    NULL) == AG_OK);
    ck_assert(ag_trainer_accumulate(&split, ag_slice(x, 0, 4, 8, 1), ag_slice(y, 0, 4, 8, 1), 2,
                                    NULL) == AG_OK);
    ck_assert(ag_trainer_accumulate(&whole, x, y, 1, NULL) == AG_OK);
    for (int i = 0; i < split.n_params; i++) {
        double d = tu_max_abs_diff(ag_tensor_grad(split.params[i].tensor),
                                   ag_tensor_grad(whole.params[i].tensor));
        ck_assert_msg(d >= 0 && d < 1e-6, "%s: gradients differ by %g", split.params[i].name, d);
    }
    ag_scope_end(scope);
    ag_trainer_free(&split);
    ag_trainer_free(&whole);
}
END_TEST

/* Steps a trainer `steps` times on one batch, checking the lr before each step and after. */
static void check_lrs(ag_trainer *t, int steps, const double *lrs) {
    ag_scope *scope = ag_scope_begin();
    ag_tensor *x = ag_zeros(AG_F32, 2, TU_SHAPE(2, 784));
    ag_tensor *y = tu_tensor(AG_I64, 1, TU_SHAPE(2), TU_VALUES(0, 1));
    for (int s = 0; s <= steps; s++) {
        double lr = ag_optimizer_lr(t->optimizer);
        ck_assert_msg(tu_close(lr, lrs[s], 1e-12, 1e-9), "lr %.12g before step %d, expected %.12g",
                      lr, s, lrs[s]);
        if (s < steps) {
            ck_assert(ag_trainer_accumulate(t, x, y, 1, NULL) == AG_OK);
            ck_assert_msg(ag_trainer_step(t) == AG_OK, "%s", ag_last_error());
        }
    }
    ag_scope_end(scope);
}

START_TEST(test_cosine_schedule) {
    ag_train_config c = small_config();
    ag_trainer t;
    ck_assert_msg(ag_trainer_init(&t, &c, 4) == AG_OK, "%s", ag_last_error());
    const double a = c.lr;
    check_lrs(&t, 4,
              (const double[]){a, a * (1 + cos(M_PI / 4)) / 2, a / 2,
                               a * (1 + cos(3 * M_PI / 4)) / 2, 0});
    ag_trainer_free(&t);
}
END_TEST

START_TEST(test_warmup_then_cosine) {
    ag_train_config c = small_config();
    c.warmup_steps = 2;
    ag_trainer t;
    ck_assert_msg(ag_trainer_init(&t, &c, 4) == AG_OK, "%s", ag_last_error());
    const double a = c.lr;
    /* LinearLR from 1/2 to 1 over 2 steps, then CosineAnnealingLR with T_max 2. */
    check_lrs(&t, 4, (const double[]){a / 2, a * 3 / 4, a, a / 2, 0});
    ag_trainer_free(&t);
    ck_assert_int_eq(ag_trainer_init(&t, &c, 2), AG_ERR_INVALID_ARG); /* nothing left to anneal */
    ck_assert_ptr_null(t.model);
}
END_TEST

/* The data of the short runs, loaded once (main frees it). */
static ag_train_data data;
static bool loaded;

static ag_train_data *short_data(void) {
    if (!loaded) {
        ag_train_config c = ag_train_defaults();
        ck_assert_msg(ag_train_data_load(&data, AG_FASHION_MNIST_DIR, &c, true, SHORT_LIMIT) ==
                          AG_OK,
                      "%s", ag_last_error());
        loaded = true;
    }
    return &data;
}

/* One epoch of §P's recipe on the first 2048 images with `seed`. */
static void short_run(uint64_t seed, ag_epoch_stats *stats, ag_accuracy *acc) {
    ag_train_data *d = short_data();
    ag_train_config c = ag_train_defaults();
    c.seed = seed;
    int64_t batches = ag_loader_batches(d->train_loader);
    ck_assert_int_eq(batches, SHORT_LIMIT / c.batch_size);
    ag_trainer t;
    ck_assert_msg(ag_trainer_init(&t, &c, ag_train_steps_per_epoch(batches, c.accumulate)) == AG_OK,
                  "%s", ag_last_error());
    ag_loader_set_epoch(d->train_loader, 0);
    ck_assert_msg(ag_train_epoch(&t, d->train_loader, NULL, stats) == AG_OK, "%s", ag_last_error());
    ck_assert_int_eq(stats->images, SHORT_LIMIT);
    ck_assert_int_eq(stats->steps, 8);
    ck_assert(ag_optimizer_lr(t.optimizer) < 1e-12); /* annealed to 0 */
    ck_assert_msg(ag_evaluate(t.model, d->test_loader, acc) == AG_OK, "%s", ag_last_error());
    ck_assert_int_eq(acc->total, 10000);
    ag_trainer_free(&t);
}

START_TEST(test_short_run_learns_and_repeats) {
    ag_epoch_stats s1, s2, s3;
    ag_accuracy a1, a2, a3;
    short_run(0, &s1, &a1);
    short_run(0, &s2, &a2);
    short_run(1, &s3, &a3);
    printf("short run: loss %.6f, accuracy %lld/%lld; seed 1: loss %.6f\n", s1.loss,
           (long long)a1.correct, (long long)a1.total, s3.loss);
    ck_assert_msg(a1.correct > a1.total / 2, "accuracy %lld/%lld after 2048 images",
                  (long long)a1.correct, (long long)a1.total);
    ck_assert_msg(s1.loss == s2.loss, "same seed, losses %.17g and %.17g", s1.loss, s2.loss);
    ck_assert_int_eq(a1.correct, a2.correct);
    ck_assert(s1.loss != s3.loss); /* the seed is used */
}
END_TEST

/* The CNN (--model cnn): LeNet-5's layers, and one epoch on the first 2048 images that
 * lowers the loss below chance's ln(10) and beats chance's 10% accuracy by far. */
START_TEST(test_cnn_short_run_learns) {
    ag_train_data *d = short_data();
    ag_train_config c = ag_train_defaults();
    c.model = AG_TRAIN_CNN;
    ag_trainer t;
    int64_t batches = ag_loader_batches(d->train_loader);
    ck_assert_msg(ag_trainer_init(&t, &c, ag_train_steps_per_epoch(batches, c.accumulate)) == AG_OK,
                  "%s", ag_last_error());
    static const char *const kinds[] = {
        "Unflatten", "Conv2d",  "BatchNorm2d", "ReLU", "MaxPool2d", "Conv2d", "BatchNorm2d", "ReLU",
        "MaxPool2d", "Flatten", "Linear",      "ReLU", "Linear",    "ReLU",   "Linear"};
    for (int i = 0; i < 15; i++)
        ck_assert_str_eq(ag_module_kind(ag_module_child(t.model, i)), kinds[i]);
    ck_assert_int_eq(t.n_params, 12); /* 2 conv weights, 2 x 2 batch norm, 3 x 2 linear */
    ck_assert_str_eq(t.params[6].name, "10.weight");
    ck_assert_int_eq(ag_size(t.params[6].tensor, 1), 400); /* 16 * 5 * 5 features */
    ck_assert_int_eq(ag_module_buffers(t.model, NULL, 0), 6);
    ag_loader_set_epoch(d->train_loader, 0);
    ag_epoch_stats stats;
    ag_accuracy acc;
    ck_assert_msg(ag_train_epoch(&t, d->train_loader, NULL, &stats) == AG_OK, "%s",
                  ag_last_error());
    ck_assert_msg(ag_evaluate(t.model, d->test_loader, &acc) == AG_OK, "%s", ag_last_error());
    printf("cnn short run: loss %.4f, accuracy %lld/%lld in %.2f s\n", stats.loss,
           (long long)acc.correct, (long long)acc.total, stats.seconds);
    ck_assert_msg(stats.loss < log(10.0), "loss %g", stats.loss);
    ck_assert_msg(acc.correct > acc.total * 3 / 10, "accuracy %lld/%lld", (long long)acc.correct,
                  (long long)acc.total);
    ag_trainer_free(&t);
    /* Images that are not square have no CNN. */
    c.in_features = 700;
    ck_assert_int_ne(ag_trainer_init(&t, &c, 0), AG_OK);
    ck_assert_msg(strstr(ag_last_error(), "square"), "%s", ag_last_error());
    ag_clear_error();
}
END_TEST

/* Mixed precision (--amp): one epoch on the first 2048 images in bfloat16 and in float16
 * with a GradScaler lands near float32's accuracy (docs/amp.md); parameters stay float32. */
START_TEST(test_amp_short_runs_match_float32) {
    ag_train_data *d = short_data();
    const ag_dtype precisions[3] = {AG_F32, AG_BF16, AG_F16};
    double accuracy[3];
    for (int k = 0; k < 3; k++) {
        ag_train_config c = ag_train_defaults();
        c.amp = precisions[k];
        ag_trainer t;
        int64_t batches = ag_loader_batches(d->train_loader);
        ck_assert_msg(ag_trainer_init(&t, &c, ag_train_steps_per_epoch(batches, c.accumulate)) ==
                          AG_OK,
                      "%s", ag_last_error());
        ck_assert((t.scaler != NULL) == (precisions[k] == AG_F16));
        ag_loader_set_epoch(d->train_loader, 0);
        ag_epoch_stats stats;
        ag_accuracy acc;
        ck_assert_msg(ag_train_epoch(&t, d->train_loader, NULL, &stats) == AG_OK, "%s",
                      ag_last_error());
        ck_assert_msg(ag_evaluate(t.model, d->test_loader, &acc) == AG_OK, "%s", ag_last_error());
        ck_assert_int_eq(ag_dtype_of(t.params[0].tensor), AG_F32);
        accuracy[k] = 100.0 * (double)acc.correct / (double)acc.total;
        printf("amp %s short run: loss %.4f, accuracy %.2f%%\n", ag_dtype_name(precisions[k]),
               stats.loss, accuracy[k]);
        ag_trainer_free(&t);
    }
    for (int k = 1; k < 3; k++)
        ck_assert_msg(fabs(accuracy[k] - accuracy[0]) < 5, "%s: %.2f%% against float32's %.2f%%",
                      ag_dtype_name(precisions[k]), accuracy[k], accuracy[0]);
    ag_train_config c = ag_train_defaults();
    c.amp = AG_F64;
    ag_trainer t;
    ck_assert_int_eq(ag_trainer_init(&t, &c, 0), AG_ERR_INVALID_ARG);
    ck_assert_msg(strstr(ag_last_error(), "amp must be"), "%s", ag_last_error());
    ag_clear_error();
}
END_TEST

/* Memory must not grow from epoch to epoch: each batch lives in a scope, the allocator's
 * cache is warm after the first epoch. */
START_TEST(test_memory_flat_across_epochs) {
    if (UNDER_ASAN) return; /* ASan's quarantine grows RSS by design; LSan checks leaks */
    ag_train_data *d = short_data();
    ag_train_config c = small_config();
    ag_trainer t;
    ck_assert_msg(ag_trainer_init(&t, &c, 0) == AG_OK, "%s", ag_last_error());
    double rss[6];
    for (int e = 0; e < 6; e++) {
        ag_epoch_stats stats;
        ag_accuracy acc;
        ag_loader_set_epoch(d->train_loader, (uint64_t)e);
        ck_assert(ag_train_epoch(&t, d->train_loader, NULL, &stats) == AG_OK);
        ck_assert(ag_evaluate(t.model, d->test_loader, &acc) == AG_OK);
        rss[e] = ag_train_rss_mib();
    }
    ck_assert(rss[1] > 0);
    ck_assert_msg(rss[5] - rss[1] < 1.0, "RSS grew from %.2f MiB after epoch 2 to %.2f MiB", rss[1],
                  rss[5]);
    ag_trainer_free(&t);
}
END_TEST

/* ---- the command line ---- */

static char tmpdir[64];

/* Runs `ag train <args>` with stderr merged into out; returns the exit status. */
static int run_cli(const char *args, char *out, size_t size) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' train %s 2>&1", AG_CLI_PATH, args);
    return tu_run_command(cmd, out, size);
}

/* A path in this test's temporary directory. */
static const char *tmp_path(const char *name, char *buf, size_t size) {
    return tu_tmp_path(tmpdir, sizeof tmpdir, "train", name, buf, size);
}

/* The "test accuracy ..." line of an output, copied into line. */
static void accuracy_line(const char *out, char *line, size_t size) {
    const char *s = strstr(out, "test accuracy ");
    ck_assert_msg(s, "no accuracy line in:\n%s", out);
    snprintf(line, size, "%.*s", (int)strcspn(s, "\n"), s);
}

/* The checkpoint of a short --hidden 64 run, made once; *acc_line gets its accuracy. */
static const char *small_checkpoint(char *acc_line, size_t size) {
    static char path[128], line[128];
    static char out[OUTPUT_SIZE];
    if (!path[0]) {
        char args[512];
        snprintf(args, sizeof args, "--limit 1024 --epochs 1 --hidden 64 --quiet --save '%s'",
                 tmp_path("small.safetensors", path, sizeof path));
        int rc = run_cli(args, out, sizeof out);
        ck_assert_msg(rc == 0, "exit %d:\n%s", rc, out);
        accuracy_line(out, line, sizeof line);
    }
    if (acc_line) snprintf(acc_line, size, "%s", line);
    return path;
}

START_TEST(test_cli_same_seed_same_losses) {
    static char out1[OUTPUT_SIZE], out2[OUTPUT_SIZE];
    const char *args = "--limit 512 --epochs 2 --hidden 32 --seed 3";
    ck_assert_int_eq(run_cli(args, out1, sizeof out1), 0);
    ck_assert_int_eq(run_cli(args, out2, sizeof out2), 0);
    /* Every "loss X" field, progress lines and epoch lines alike, in order. */
    const char *p1 = out1, *p2 = out2;
    int fields = 0;
    while ((p1 = strstr(p1, "loss ")) != NULL) {
        p2 = strstr(p2, "loss ");
        ck_assert_msg(p2, "second run printed fewer losses:\n%s", out2);
        p1 += 5;
        p2 += 5;
        size_t n1 = strcspn(p1, " \n"), n2 = strcspn(p2, " \n");
        ck_assert_msg(n1 == n2 && strncmp(p1, p2, n1) == 0, "losses %.*s and %.*s", (int)n1, p1,
                      (int)n2, p2);
        fields++;
    }
    ck_assert_ptr_null(strstr(p2, "loss "));
    ck_assert_msg(fields >= 4, "only %d losses in:\n%s", fields, out1);
    ck_assert_ptr_nonnull(strstr(out1, "epoch  2/2  train loss"));
}
END_TEST

START_TEST(test_cli_eval_only_matches_training) {
    char want[128], args[512], out[4096];
    const char *ckpt = small_checkpoint(want, sizeof want);
    snprintf(args, sizeof args, "--hidden 64 --load '%s' --eval-only", ckpt);
    int rc = run_cli(args, out, sizeof out);
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, out);
    char got[128];
    accuracy_line(out, got, sizeof got);
    ck_assert_str_eq(got, want);
    ck_assert_ptr_null(strstr(out, "epoch")); /* evaluation only */
}
END_TEST

/* Expects exit status `want_rc` and output containing `needle`. */
static void expect_failure(const char *args, int want_rc, const char *needle) {
    char out[OUTPUT_SIZE];
    int rc = run_cli(args, out, sizeof out);
    ck_assert_msg(rc == want_rc, "ag train %s: exit %d, expected %d:\n%s", args, rc, want_rc, out);
    ck_assert_msg(strstr(out, needle), "ag train %s: no '%s' in:\n%s", args, needle, out);
}

START_TEST(test_cli_usage_errors) {
    expect_failure("--epochs 0", 2, "--epochs");
    expect_failure("--lr abc", 2, "--lr");
    expect_failure("--accumulate", 2, "missing value");
    expect_failure("--no-such-option", 2, "unknown option");
    expect_failure("--model rnn", 2, "--model must be mlp or cnn, not 'rnn'");
    expect_failure("--amp fp8", 2, "--amp must be bf16 or fp16, not 'fp8'");
    expect_failure("extra", 2, "unexpected argument 'extra'");
    expect_failure("--eval-only", 2, "--eval-only needs --load");
    expect_failure("--bench-steps 5 --save x", 2, "--bench-steps runs alone");
    expect_failure("--limit 256 --epochs 1 --warmup 1", 2, "--warmup 1 must be below");
}
END_TEST

START_TEST(test_cli_missing_data) {
    expect_failure("--data /nonexistent/ag-data --epochs 1", 1, "/nonexistent/ag-data");
    char dir[128], args[256];
    snprintf(args, sizeof args, "--data '%s' --epochs 1", tmp_path("", dir, sizeof dir));
    expect_failure(args, 1, "loading the data set"); /* a directory without the files */
}
END_TEST

/* Writes bytes to a file in the temporary directory; returns its path in buf. */
static const char *write_file(const char *name, const void *data, size_t n, char *buf,
                              size_t size) {
    FILE *f = fopen(tmp_path(name, buf, size), "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
    return buf;
}

START_TEST(test_cli_bad_checkpoints) {
    char path[128], args[512];
    const char garbage[] = "this is not a safetensors file";
    write_file("garbage.safetensors", garbage, sizeof garbage, path, sizeof path);
    snprintf(args, sizeof args, "--hidden 64 --load '%s' --eval-only", path);
    expect_failure(args, 1, "cannot load checkpoint");

    /* The first half of a real checkpoint. */
    const char *ckpt = small_checkpoint(NULL, 0);
    FILE *f = fopen(ckpt, "rb");
    ck_assert_ptr_nonnull(f);
    static char bytes[1 << 20];
    size_t n = fread(bytes, 1, sizeof bytes, f);
    fclose(f);
    write_file("truncated.safetensors", bytes, n / 2, path, sizeof path);
    snprintf(args, sizeof args, "--hidden 64 --load '%s' --eval-only", path);
    expect_failure(args, 1, "truncated.safetensors");

    /* A --hidden 64 checkpoint into a --hidden 32 model. */
    snprintf(args, sizeof args, "--hidden 32 --load '%s' --eval-only", ckpt);
    expect_failure(args, 1, "cannot load checkpoint");
    expect_failure(args, 1, "0.weight");

    snprintf(args, sizeof args, "--load '%s' --eval-only", tmp_path("absent", path, sizeof path));
    expect_failure(args, 1, "absent");
}
END_TEST

/* Removes the temporary directory and what the tests left in it. */
static void remove_tmpdir(void) {
    if (!tmpdir[0]) return;
    static const char *const names[] = {"small.safetensors", "garbage.safetensors",
                                        "truncated.safetensors"};
    char path[128];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
    rmdir(tmpdir);
}

static Suite *train_suite(void) {
    Suite *s = suite_create("train");
    TCase *mech = tcase_create("recipe");
    tcase_add_test(mech, test_steps_per_epoch);
    tcase_add_test(mech, test_model_layout);
    tcase_add_test(mech, test_accumulation_is_the_group_mean);
    tcase_add_test(mech, test_cosine_schedule);
    tcase_add_test(mech, test_warmup_then_cosine);
    suite_add_tcase(s, mech);
    TCase *run = tcase_create("short run");
    tcase_set_timeout(run, 600);
    tcase_add_test(run, test_short_run_learns_and_repeats);
    tcase_add_test(run, test_cnn_short_run_learns);
    tcase_add_test(run, test_amp_short_runs_match_float32);
    tcase_add_test(run, test_memory_flat_across_epochs);
    suite_add_tcase(s, run);
    TCase *cli = tcase_create("command line");
    tcase_set_timeout(cli, 600);
    tcase_add_test(cli, test_cli_same_seed_same_losses);
    tcase_add_test(cli, test_cli_eval_only_matches_training);
    tcase_add_test(cli, test_cli_usage_errors);
    tcase_add_test(cli, test_cli_missing_data);
    tcase_add_test(cli, test_cli_bad_checkpoints);
    suite_add_tcase(s, cli);
    return s;
}

int main(void) {
    int rc = tu_run_suite(train_suite());
    ag_train_data_free(&data);
    remove_tmpdir();
    return rc;
}
