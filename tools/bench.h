/* `ag bench` (tools/cmd_bench.c) and what it shares with `ag overhead` and
 * `ag train --bench-steps`: the timer (bench_timer.c), the model-level and overhead
 * workloads (bench_models.c), the op-level workloads (bench_ops.c), the PyTorch comparison
 * (bench_torch.c) and the CSV, JSON and PNG reports (bench_report.c). docs/bench.md
 * describes what every number means. */
#ifndef AG_TOOLS_BENCH_H
#define AG_TOOLS_BENCH_H

#include <stdbool.h>
#include "ag/train.h"

/* ---- timing (bench_timer.c) ---- */

/* One call of a measured workload; returns AG_OK or the error that stops the measurement. */
typedef ag_status (*bench_fn)(void *ctx);

/* How a workload is timed. A sample is `inner` calls between two synchronisations of the
 * device; the result is the distribution of the samples' seconds per call. */
typedef struct bench_timing {
    int warmup;      /* untimed calls first (fewer once they have taken half of budget) */
    int inner;       /* calls per sample; 0: enough for a sample to last BENCH_MIN_SAMPLE_S */
    int min_repeats; /* samples at least */
    int max_repeats; /* samples at most */
    double budget;   /* seconds: sampling goes on until the samples took this long */
} bench_timing;

/* A sample should last at least this long when bench_timing.inner is 0 (seconds): long
 * enough that the clock and the synchronisation are small beside it. */
#define BENCH_MIN_SAMPLE_S 1e-3

/* The distribution of a measurement, in seconds per call (or per op, step: see callers). */
typedef struct bench_stats {
    double median, min, max; /* over the samples */
    int repeats;             /* samples taken */
    int inner;               /* calls per sample */
} bench_stats;

/* Times fn(ctx) on dev as t says, synchronising dev (ag_synchronize) before and after
 * every sample. Fails with fn's error or an allocation failure. */
ag_status bench_time(bench_fn fn, void *ctx, ag_device dev, const bench_timing *t,
                     bench_stats *out);
/* The same stats scaled by factor (seconds per call to seconds per op, say). */
bench_stats bench_scale(bench_stats s, double factor);

/* ---- model-level and overhead workloads (bench_models.c) ---- */

/* What a call of the overhead chain does. */
typedef enum overhead_mode {
    OVERHEAD_NO_GRAD,  /* forward with grad mode off */
    OVERHEAD_GRAD,     /* forward recording the graph */
    OVERHEAD_BACKWARD, /* forward recording the graph, then backward */
    OVERHEAD_MODES
} overhead_mode;

/* A chain of tiny ops on 16 float32 elements: y = x * x * ... * x, `chain` muls, so that
 * the kernels take nanoseconds and the time is ag's dispatch, allocation and graph work. */
typedef struct overhead_chain {
    ag_tensor *x;       /* [16] on the default device, requiring grad */
    int chain;          /* muls per call */
    overhead_mode mode; /* set before timing */
} overhead_chain;

/* Elements of the overhead chain's tensor. */
#define OVERHEAD_NUMEL 16

/* Makes x on the default device. */
ag_status overhead_chain_init(overhead_chain *c, int chain);
/* One chain in c->mode (a bench_fn), all temporaries in a scope of its own. */
ag_status overhead_chain_run(void *c);
/* Releases x. */
void overhead_chain_free(overhead_chain *c);

/* A §P training step as `ag train --bench-steps` times it: forward, label-smoothed cross
 * entropy, backward, clipping, AdamW, schedule and zero_grad on one fixed random batch. */
typedef struct p_step {
    ag_trainer trainer; /* model, AdamW and schedule (accumulate forced to 1) */
    ag_tensor *x, *y;   /* the batch: float32 [B, in] from N(0, 1), labels i % classes */
    double loss;        /* loss of the last step */
} p_step;

/* Builds the trainer (schedule over total_steps) and the batch on the default device. On
 * error nothing is left allocated. */
ag_status p_step_init(p_step *s, const ag_train_config *config, int64_t total_steps);
/* One training step (a bench_fn). */
ag_status p_step_run(void *s);
/* Frees the trainer and the batch. */
void p_step_free(p_step *s);

/* ---- records of a run (cmd_bench.c) ---- */

/* The sections of the report, in their order. */
typedef enum bench_section {
    SECTION_OPS,      /* op level: one op, forward / forward+backward / update */
    SECTION_MODELS,   /* model level: a training step */
    SECTION_OVERHEAD, /* framework overhead per tiny op */
    N_SECTIONS
} bench_section;

/* One measured cell: an (op, size, backend, pass). */
typedef struct bench_record {
    bench_section section;
    char op[24];        /* "matmul", "p_step", "overhead" */
    char size[40];      /* "128x784x512" (m x k x n), "1048576", "1024x1024", "batch 128" */
    char backend[40];   /* device ("cpu:0"), or "torch" for PyTorch's own rows */
    char pass[20];      /* "forward", "forward+backward", "update", "step", "forward_grad" */
    ag_dtype dtype;     /* of the measured tensors */
    bench_stats stats;  /* seconds per call (per op for the overhead section) */
    double throughput;  /* in unit */
    const char *unit;   /* "GFLOP/s", "GB/s", "steps/s", "us/op" (static text) */
    char reference[24]; /* what ratio compares with ("openblas sgemm", "memcpy", ...), "-" */
    double reference_s; /* the reference's seconds for the same work; NAN if none */
    double ratio;       /* reference_s / stats.median (above 1: ag is faster); NAN if none */
    int key[4];         /* sort order within the section: op, size, pass, backend */
} bench_record;

/* The records of a run, in the order measured. */
typedef struct bench_results {
    bench_record *items; /* count records */
    int count, capacity; /* used and allocated entries */
} bench_results;

/* Appends a zeroed record (reference "-", ratio and reference_s NAN); NULL (after a
 * message) when out of memory. */
bench_record *bench_add(bench_results *r);
/* Appends the record of a cell measured on dev with these fields; the caller fills
 * throughput, unit, the reference and the sort keys but the backend's. NULL when out of
 * memory. */
bench_record *bench_add_cell(bench_results *r, bench_section section, const char *op,
                             const char *size, ag_device dev, const char *pass, ag_dtype dtype,
                             const bench_stats *stats);
/* Reports on stderr that a cell failed with ag_last_error(); returns 1, or 0 when the
 * backend does not support it (AG_ERR_UNSUPPORTED: reported as skipped, not a failure). */
int bench_cell_failed(ag_device dev, const char *op, const char *size, const char *pass);
/* Frees the records. */
void bench_results_free(bench_results *r);

/* Names of the model-level and overhead workloads, as --ops, the CSV and the PyTorch
 * script spell them. */
#define BENCH_P_STEP     "p_step"
#define BENCH_MLP_STEP   "mlp_sgd_mse_step"
#define BENCH_OVERHEAD   "overhead"
#define BENCH_TRANSFORMS "mlp_transforms"

/* Most --sizes and --ops entries. */
#define BENCH_MAX_LIST 32

/* What to measure, from the command line. */
typedef struct bench_options {
    double seconds;                  /* time budget of one cell (--seconds) */
    ag_dtype dtype;                  /* op level: AG_F32 or AG_F64 (--dtype) */
    int n_sizes;                     /* entries of sizes; 0: the defaults */
    int64_t sizes[BENCH_MAX_LIST];   /* --sizes: square matmul sizes and element counts */
    int n_ops;                       /* entries of ops; 0: every workload */
    const char *ops[BENCH_MAX_LIST]; /* --ops (pointers into the argument) */
    bool torch;                      /* run the PyTorch comparison (not --no-torch) */
    const char *csv, *json, *plot;   /* output files, NULL when not asked for */
} bench_options;

/* True if --ops selects workload `name` (or there is no --ops). */
bool bench_wants(const bench_options *o, const char *name);
/* Shows what is being measured on a terminal (stderr), nothing otherwise. */
void bench_progress(ag_device dev, const char *op, const char *size, const char *pass);
/* The bench_timing of a cell under options o with `warmup` warm-up calls. */
bench_timing bench_cell_timing(const bench_options *o, int warmup);

/* ---- workloads of `ag bench` (bench_ops.c, bench_models.c) ---- */

/* Whether `name` is an op-level workload (matmul, add, ...). */
bool bench_is_op(const char *name);
/* Writes the op-level workload names, comma-separated, into buf. */
void bench_op_names(char *buf, size_t size);
/* Measures the op-level workloads o selects on dev, appending records; returns the number
 * of cells that failed (each reported on stderr). */
int bench_ops_run(const bench_options *o, ag_device dev, bench_results *r);
/* Measures the model-level and overhead workloads o selects on dev (float32, batch 128),
 * appending records; returns the number of cells that failed. */
int bench_models_run(const bench_options *o, ag_device dev, bench_results *r);

/* ---- the PyTorch comparison (bench_torch.c) ---- */

/* What the PyTorch script said about itself. */
typedef struct bench_torch_info {
    bool ran;         /* its results are in the records */
    char version[32]; /* torch.__version__ */
    int threads;      /* torch.get_num_threads() */
    char device[16];  /* "cpu" */
} bench_torch_info;

/* Runs bench/torch_compare.py (AG_TORCH_COMPARE: another script) when
 * `python3 -c 'import torch'` works (PYTHON or /usr/bin/python3): appends its rows
 * (backend "torch") of the workloads o selects and makes them the reference of the matching
 * rows of the cpu backend. Says so in one line and returns 0 when torch or
 * the script is absent; returns 1 (after a message) when the script fails. */
int bench_torch_run(const bench_options *o, bench_results *r, bench_torch_info *info);

/* ---- reports (bench_report.c) ---- */

/* The machine and run a JSON report describes. */
typedef struct bench_machine {
    char cpu_model[128];           /* /proc/cpuinfo's model name */
    int cores;                     /* online logical CPUs */
    char date[32];                 /* start of the run, ISO 8601 UTC */
    double peak_rss_mib;           /* getrusage's ru_maxrss at the end */
    int n_devices;                 /* devices measured */
    char devices[8][40];           /* their "cpu:0" names */
    char device_names[8][128];     /* and what the backend calls them */
    const bench_torch_info *torch; /* the PyTorch run */
} bench_machine;

/* Writes every record as a CSV line under the header of docs/bench.md; 0, or 1 after a
 * message. The file appears complete or not at all (temporary name, then rename). */
int bench_write_csv(const char *path, const bench_results *r);
/* Writes {"ag_version", "date", "machine", "devices", "torch", "records"}; 0 or 1. */
int bench_write_json(const char *path, const bench_results *r, const bench_machine *m);
/* Draws a PNG chart with gnuplot: per section, grouped bars per workload, one bar per
 * backend, log-scale times. 0, or 1 after a message (gnuplot missing or failing). */
int bench_write_plot(const char *path, const bench_results *r);

#endif
