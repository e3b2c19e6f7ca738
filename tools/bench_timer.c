/* The timer of `ag bench`, `ag overhead` and `ag train --bench-steps` (tools/bench.h):
 * warm-up calls, then samples of `inner` calls each between two synchronisations of the
 * device, until the budget is spent and the minimum number of samples is reached; the
 * result is the median and the range of the samples' seconds per call. */
#include <math.h>
#include <stdlib.h>
#include "bench.h"
#include "internal.h"

/* qsort order of doubles. */
static int compare_doubles(const void *x, const void *y) {
    const double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Runs fn `calls` times, then waits for dev; *seconds receives the time it all took. */
static ag_status run_sample(bench_fn fn, void *ctx, ag_device dev, int calls, double *seconds) {
    const double start = ag_train_clock();
    ag_status st = AG_OK;
    for (int i = 0; st == AG_OK && i < calls; i++) st = fn(ctx);
    if (st == AG_OK) st = ag_synchronize(dev);
    *seconds = ag_train_clock() - start;
    return st;
}

/* Calls per sample: t->inner, or enough for BENCH_MIN_SAMPLE_S given one call's time. */
static int calls_per_sample(const bench_timing *t, double one_call) {
    if (t->inner > 0) return t->inner;
    if (one_call >= BENCH_MIN_SAMPLE_S) return 1;
    const double calls = BENCH_MIN_SAMPLE_S / (one_call > 1e-9 ? one_call : 1e-9);
    return calls > 100000 ? 100000 : (int)calls + 1;
}

ag_status bench_time(bench_fn fn, void *ctx, ag_device dev, const bench_timing *t,
                     bench_stats *out) {
    if (t->max_repeats < 1 || t->min_repeats > t->max_repeats)
        return ag__error(AG_ERR_INVALID_ARG, "bench: %d..%d samples asked for", t->min_repeats,
                         t->max_repeats);
    double *samples = malloc((size_t)t->max_repeats * sizeof *samples);
    if (!samples) return ag__error(AG_ERR_OUT_OF_MEMORY, "bench: no memory for the samples");
    /* Every sample starts on an idle device, so it times its own calls only. */
    ag_status st = ag_synchronize(dev);
    double warm = 0, one_call = INFINITY, spent = 0;
    /* Warm-up: first-use costs (kernel builds, allocator caches, thread pools); the fastest
     * call, which paid none of them, sizes the samples. */
    for (int i = 0; st == AG_OK && i < (t->warmup > 0 ? t->warmup : 1); i++) {
        double seconds = 0;
        st = run_sample(fn, ctx, dev, 1, &seconds);
        warm += seconds;
        if (seconds < one_call) one_call = seconds;
        if (t->budget > 0 && warm > t->budget / 2) break;
    }
    const int inner = calls_per_sample(t, one_call);
    int n = 0;
    while (st == AG_OK && n < t->max_repeats && (n < t->min_repeats || spent < t->budget)) {
        double seconds = 0;
        st = run_sample(fn, ctx, dev, inner, &seconds);
        spent += seconds;
        samples[n++] = seconds / inner;
    }
    if (st == AG_OK) {
        qsort(samples, (size_t)n, sizeof *samples, compare_doubles);
        *out = (bench_stats){.median =
                                 n % 2 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2,
                             .min = samples[0],
                             .max = samples[n - 1],
                             .repeats = n,
                             .inner = inner};
    }
    free(samples);
    return st;
}

bench_stats bench_scale(bench_stats s, double factor) {
    s.median *= factor;
    s.min *= factor;
    s.max *= factor;
    return s;
}
