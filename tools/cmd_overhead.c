/* `ag overhead`: what ag itself costs per op, measured on a chain of tiny ops (16 float32
 * elements, so the kernels take nanoseconds and the rest is dispatch, allocation and graph
 * bookkeeping). Reports the median over repeats of microseconds per op for forward without
 * grad, forward recording the graph, and forward + backward. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include "bench.h"
#include "commands.h"

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
    static const char *const names[OVERHEAD_MODES] = {"forward, no grad", "forward, recording grad",
                                                      "forward + backward"};
    /* Each sample is 50 chains; 20 chains of warm-up fill caches, the allocator and the
     * kernel lookup. */
    const bench_timing timing = {
        .warmup = 20, .inner = 50, .min_repeats = repeats, .max_repeats = repeats};
    overhead_chain work;
    int status = overhead_chain_init(&work, chain) == AG_OK ? 0 : 1;
    printf("tiny-op overhead: chain of %d muls on %d float32 elements, median of %d runs\n", chain,
           OVERHEAD_NUMEL, repeats);
    for (int m = 0; m < OVERHEAD_MODES && status == 0; m++) {
        work.mode = (overhead_mode)m;
        bench_stats s;
        if (bench_time(overhead_chain_run, &work, ag_default_device(), &timing, &s) != AG_OK) {
            status = 1;
            break;
        }
        s = bench_scale(s, 1e6 / chain); /* microseconds per op */
        printf("  %-26s %7.3f us/op  (min %.3f, max %.3f)\n", names[m], s.median, s.min, s.max);
    }
    if (status) fprintf(stderr, "ag overhead: %s\n", ag_last_error());
    overhead_chain_free(&work);
    return status;
}
