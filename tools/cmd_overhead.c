/* `ag overhead`: what ag itself costs per op, measured on a chain of tiny ops (16 float32
 * elements, so the kernels take nanoseconds and the rest is dispatch, allocation and graph
 * bookkeeping). Reports the median over repeats of microseconds per op for forward without
 * grad, forward recording the graph, and forward + backward. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "ag/ag.h"
#include "commands.h"

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef enum { FORWARD_NO_GRAD, FORWARD_GRAD, FORWARD_BACKWARD, N_MODES } mode;

/* One timed run: `steps` chains of `chain` muls; returns microseconds per op or < 0. */
static double run_once(ag_tensor *x, mode m, int chain, int steps) {
    double start = seconds();
    for (int s = 0; s < steps; s++) {
        ag_scope *scope = ag_scope_begin();
        bool prev = ag_set_grad_enabled(m != FORWARD_NO_GRAD);
        ag_tensor *y = x;
        for (int k = 0; k < chain; k++) y = ag_mul(y, x);
        ag_set_grad_enabled(prev);
        bool ok = y != NULL;
        if (ok && m == FORWARD_BACKWARD)
            ok = ag_backward(ag_sum(y, 0, NULL, false), NULL) == AG_OK &&
                 ag_set_grad(x, NULL) == AG_OK;
        ag_scope_end(scope);
        if (!ok) return -1;
    }
    return (seconds() - start) / steps / chain * 1e6;
}

int ag_cmd_overhead(int argc, char **argv) {
    static const struct option options[] = {{"chain", required_argument, NULL, 'c'},
                                            {"repeats", required_argument, NULL, 'r'},
                                            {"help", no_argument, NULL, 'h'},
                                            {0}};
    int chain = 100, repeats = 21, c;
    while ((c = getopt_long(argc, argv, "c:r:h", options, NULL)) != -1) {
        if (c == 'c')
            chain = atoi(optarg);
        else if (c == 'r')
            repeats = atoi(optarg);
        else {
            fprintf(c == 'h' ? stdout : stderr, "usage: ag overhead [--chain N] [--repeats N]\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (chain < 1 || repeats < 1 || repeats > 1000) {
        fprintf(stderr, "ag overhead: --chain must be >= 1 and --repeats in 1..1000\n");
        return 2;
    }
    if (ag_init() != AG_OK) {
        fprintf(stderr, "ag overhead: %s\n", ag_last_error());
        return 1;
    }
    static const char *const names[N_MODES] = {"forward, no grad", "forward, recording grad",
                                               "forward + backward"};
    ag_tensor *x = ag_randn(NULL, AG_F32, 1, (int64_t[]){16});
    int status = x && ag_set_requires_grad(x, true) == AG_OK ? 0 : 1;
    double samples[1000];
    printf("tiny-op overhead: chain of %d muls on 16 float32 elements, median of %d runs\n", chain,
           repeats);
    for (int m = 0; m < N_MODES && status == 0; m++) {
        run_once(x, (mode)m, chain, 20); /* warm-up: caches, allocator, kernel lookup */
        for (int r = 0; r < repeats && status == 0; r++) {
            samples[r] = run_once(x, (mode)m, chain, 50);
            if (samples[r] < 0) status = 1;
        }
        if (status) break;
        qsort(samples, (size_t)repeats, sizeof *samples, compare_doubles);
        printf("  %-26s %7.3f us/op  (min %.3f, max %.3f)\n", names[m], samples[repeats / 2],
               samples[0], samples[repeats - 1]);
    }
    if (status) fprintf(stderr, "ag overhead: %s\n", ag_last_error());
    ag_release(x);
    return status;
}
