/* A long training loop must not leak: 10,000 forward + backward + SGD steps of a small
 * MLP (16-32-4, batch 8, float32), each step inside a scope, with resident memory measured
 * after the first tenth of the steps and at the end. AG_MEMORY_LOOP_STEPS lowers the step
 * count (the sanitizer build is ~20x slower). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ag/ag.h"
#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

enum { BATCH = 8, IN = 16, HIDDEN = 32, OUT = 4, N_PARAMS = 4 };
static const double LR = 0.05;
static const long MAX_GROWTH = 1L << 20; /* bytes of RSS allowed to appear after warm-up */

/* True under a tool that keeps freed memory out of reuse on purpose (ASan's quarantine,
 * Valgrind's freed-block queue), so RSS grows by design; those tools check leaks directly. */
static bool under_memory_tool(void) {
    const char *preload = getenv("LD_PRELOAD");
    return UNDER_ASAN || (preload && strstr(preload, "vgpreload"));
}

/* Resident set size in bytes, from /proc/self/statm (second field, in pages). */
static long rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = -1;
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

static long steps_from_env(void) {
    const char *s = getenv("AG_MEMORY_LOOP_STEPS");
    long n = s ? strtol(s, NULL, 10) : 10000;
    return n >= 10 ? n : 10000;
}

/* A leaf the caller owns: randn * scale, created inside a scope and kept out of it. */
static ag_tensor *owned_randn(ag_generator *gen, int ndim, const int64_t *shape, double scale,
                              bool requires_grad) {
    ag_scope *scope = ag_scope_begin();
    ag_tensor *t = ag_keep(ag_mul_scalar(ag_randn(gen, AG_F32, ndim, shape), scale));
    ag_scope_end(scope);
    if (t && requires_grad && ag_set_requires_grad(t, true) != AG_OK) {
        ag_release(t);
        return NULL;
    }
    return t;
}

/* params: w1 [32,16], b1 [32], w2 [4,32], b2 [4]; loss = mean((mlp(x) - y)^2). */
static ag_tensor *mse_loss(ag_tensor *const *p, ag_tensor *x, ag_tensor *y) {
    ag_tensor *h = ag_relu(ag_add(ag_matmul(x, ag_transpose(p[0], 0, 1)), p[1]));
    ag_tensor *y_hat = ag_add(ag_matmul(h, ag_transpose(p[2], 0, 1)), p[3]);
    return ag_mean(ag_pow_scalar(ag_sub(y_hat, y), 2), 0, NULL, false);
}

/* One SGD step; every temporary of the step belongs to its scope. */
static ag_status train_step(ag_tensor *const *params, ag_tensor *x, ag_tensor *y, double *loss) {
    ag_scope *step = ag_scope_begin();
    ag_tensor *l = mse_loss(params, x, y);
    ag_status st = l ? ag_backward(l, NULL) : ag_last_status();
    if (st == AG_OK) st = ag_item(l, loss);
    /* The update must not be recorded: parameters stay leaves. */
    bool prev = ag_set_grad_enabled(false);
    for (int i = 0; i < N_PARAMS && st == AG_OK; i++) {
        if (!ag_sub_(params[i], ag_mul_scalar(ag_tensor_grad(params[i]), LR)))
            st = ag_last_status();
        if (st == AG_OK) st = ag_set_grad(params[i], NULL); /* zero_grad(set_to_none=True) */
    }
    ag_set_grad_enabled(prev);
    ag_scope_end(step);
    return st;
}

START_TEST(rss_stays_flat_over_training) {
    const long steps = steps_from_env(), warm = steps / 10;
    ag_generator *gen = ag_generator_new(42);
    ck_assert_ptr_nonnull(gen);
    ag_tensor *params[N_PARAMS] = {
        owned_randn(gen, 2, (int64_t[]){HIDDEN, IN}, 1 / sqrt(IN), true),
        owned_randn(gen, 1, (int64_t[]){HIDDEN}, 0.1, true),
        owned_randn(gen, 2, (int64_t[]){OUT, HIDDEN}, 1 / sqrt(HIDDEN), true),
        owned_randn(gen, 1, (int64_t[]){OUT}, 0.1, true),
    };
    ag_tensor *x = owned_randn(gen, 2, (int64_t[]){BATCH, IN}, 1, false);
    ag_tensor *y = owned_randn(gen, 2, (int64_t[]){BATCH, OUT}, 1, false);
    ag_generator_free(gen);
    for (int i = 0; i < N_PARAMS; i++) ck_assert_msg(params[i], "init: %s", ag_last_error());
    ck_assert_msg(x && y, "data: %s", ag_last_error());

    double first = NAN, loss = NAN;
    long rss_warm = -1;
    for (long s = 1; s <= steps; s++) {
        ag_status st = train_step(params, x, y, &loss);
        ck_assert_msg(st == AG_OK, "step %ld: %s", s, ag_last_error());
        if (s == 1) first = loss;
        if (s == warm) rss_warm = rss_bytes();
    }
    long rss_end = rss_bytes();
    printf("memory_loop: %ld steps, loss %.6g -> %.6g, RSS after step %ld: %ld KiB, after step "
           "%ld: %ld KiB (growth %ld KiB)\n",
           steps, first, loss, warm, rss_warm / 1024, steps, rss_end / 1024,
           (rss_end - rss_warm) / 1024);

    for (int i = 0; i < N_PARAMS; i++) ag_release(params[i]);
    ag_release(x);
    ag_release(y);

    ck_assert_msg(isfinite(loss) && loss < first, "loss did not decrease: %g -> %g", first, loss);
    ck_assert_msg(rss_warm > 0 && rss_end > 0, "could not read /proc/self/statm");
    if (!under_memory_tool())
        ck_assert_msg(rss_end - rss_warm < MAX_GROWTH, "RSS grew by %ld bytes from step %ld to %ld",
                      rss_end - rss_warm, warm, steps);
}
END_TEST

int main(void) {
    Suite *s = suite_create("memory_loop");
    TCase *tc = tcase_create("training");
    tcase_set_timeout(tc, 1800);
    tcase_add_test(tc, rss_stays_flat_over_training);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
