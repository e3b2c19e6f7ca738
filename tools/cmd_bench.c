/* `ag bench`: measures ag on each backend at three levels, in one run, beside hardware
 * references measured in the same run: single ops (matmul against the vendor gemm, the
 * memory-bound ops against a plain copy), training steps (§P and a ReLU-MLP with SGD and
 * MSE), and the framework's overhead per tiny op; then compares with PyTorch when it is
 * installed. Prints a table per section and writes CSV, JSON and a PNG chart on request.
 * This file holds the options, the orchestration and the table; docs/bench.md describes
 * the numbers. Exit status: 0, 1 when a cell or a report failed, 2 on a usage error. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include "backend_list.h"
#include "bench.h"
#include "commands.h"
#include "internal.h"

/* Most devices measured in one run. */
#define MAX_DEVICES 8

static const char usage_text[] =
    "usage: ag bench [options]\n"
    "Times ops, training steps and per-op overhead on each backend, beside hardware\n"
    "references measured in the same run (docs/bench.md).\n"
    "  --backends LIST  backends or devices, comma-separated (cpu,opencl,cuda:1); default:\n"
    "                   every backend found that loads\n"
    "  --ops LIST       workloads, comma-separated (default: all): %s,\n"
    "                   " BENCH_P_STEP ", " BENCH_MLP_STEP ", " BENCH_OVERHEAD ",\n"
    "                   " BENCH_TRANSFORMS "\n"
    "  --sizes LIST     op level: square matmul sizes and element counts (default: matmul\n"
    "                   128..2048 and the section P shapes; 65536,1048576,16777216 elements)\n"
    "  --dtype T        op level: float32 (default) or float64\n"
    "  --seconds X      time budget of each cell (0.2); at least 5 samples after warm-up\n"
    "  --csv FILE       write one line per (op, size, backend, pass)\n"
    "  --json FILE      write the same records with machine information\n"
    "  --plot FILE.png  draw a chart with gnuplot\n"
    "  --no-torch       skip the comparison with PyTorch (bench/torch_compare.py)\n";

/* Prints the usage error and the hint; returns the exit status 2. */
static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("ag bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(ag bench --help shows the options)\n", stderr);
    return 2;
}

/* ---- records (bench.h) ---- */

bench_record *bench_add(bench_results *r) {
    if (r->count == r->capacity) {
        const int capacity = r->capacity ? r->capacity * 2 : 64;
        bench_record *grown = realloc(r->items, (size_t)capacity * sizeof *grown);
        if (!grown) {
            fprintf(stderr, "ag bench: out of memory for the results\n");
            return NULL;
        }
        r->items = grown;
        r->capacity = capacity;
    }
    bench_record *rec = &r->items[r->count++];
    *rec = (bench_record){.reference = "-", .reference_s = NAN, .ratio = NAN, .unit = ""};
    return rec;
}

bench_record *bench_add_cell(bench_results *r, bench_section section, const char *op,
                             const char *size, ag_device dev, const char *pass, ag_dtype dtype,
                             const bench_stats *stats) {
    bench_record *rec = bench_add(r);
    if (!rec) return NULL;
    rec->section = section;
    snprintf(rec->op, sizeof rec->op, "%s", op);
    snprintf(rec->size, sizeof rec->size, "%s", size);
    ag_device_str(dev, rec->backend, sizeof rec->backend);
    snprintf(rec->pass, sizeof rec->pass, "%s", pass);
    rec->dtype = dtype;
    rec->stats = *stats;
    return rec;
}

void bench_results_free(bench_results *r) {
    free(r->items);
    *r = (bench_results){0};
}

int bench_cell_failed(ag_device dev, const char *op, const char *size, const char *pass) {
    char name[64];
    ag_device_str(dev, name, sizeof name);
    const bool unsupported = ag_last_status() == AG_ERR_UNSUPPORTED;
    bench_progress((ag_device){-1, -1}, NULL, NULL, NULL);
    fprintf(stderr, "ag bench: %s %s %s on %s %s: %s\n", op, size, pass, name,
            unsupported ? "skipped" : "failed", ag_last_error());
    ag_clear_error();
    return unsupported ? 0 : 1;
}

bool bench_wants(const bench_options *o, const char *name) {
    for (int i = 0; i < o->n_ops; i++)
        if (strcmp(o->ops[i], name) == 0) return true;
    return o->n_ops == 0;
}

void bench_progress(ag_device dev, const char *op, const char *size, const char *pass) {
    if (!isatty(STDERR_FILENO)) return;
    char name[64] = "torch";
    if (dev.backend >= 0) ag_device_str(dev, name, sizeof name);
    /* \r and "erase line" redraw one line; no op clears it. */
    if (op)
        fprintf(stderr, "\r\x1b[K%s: %s %s %s ...", name, op, size, pass);
    else
        fputs("\r\x1b[K", stderr);
}

bench_timing bench_cell_timing(const bench_options *o, int warmup) {
    return (bench_timing){
        .warmup = warmup, .inner = 0, .min_repeats = 5, .max_repeats = 1000, .budget = o->seconds};
}

/* ---- options ---- */

enum {
    OPT_BACKENDS = 256,
    OPT_OPS,
    OPT_SIZES,
    OPT_DTYPE,
    OPT_SECONDS,
    OPT_CSV,
    OPT_JSON,
    OPT_PLOT,
    OPT_NO_TORCH
};

/* Splits a comma-separated list in place into at most BENCH_MAX_LIST words; -1 when it has
 * more, or an empty word. */
static int split(char *text, const char **words) {
    int n = 0;
    for (char *word = text;; n++) {
        char *comma = strchr(word, ',');
        if (comma) *comma = '\0';
        if (!word[0] || n == BENCH_MAX_LIST) return -1;
        words[n] = word;
        if (!comma) return n + 1;
        word = comma + 1;
    }
}

/* Parses --sizes into o; false after a message. */
static bool parse_sizes(char *text, bench_options *o) {
    const char *words[BENCH_MAX_LIST];
    o->n_sizes = split(text, words);
    for (int i = 0; i < o->n_sizes; i++) {
        char *end;
        errno = 0;
        const long long v = strtoll(words[i], &end, 10);
        if (errno || *end || end == words[i] || v < 1 || v > (1LL << 32)) o->n_sizes = -1;
        if (o->n_sizes > 0) o->sizes[i] = v;
    }
    if (o->n_sizes > 0) return true;
    usage_error("--sizes needs up to %d comma-separated whole numbers in 1..2^32", BENCH_MAX_LIST);
    return false;
}

/* Parses --ops into o; false after a message naming the workloads. */
static bool parse_ops(char *text, bench_options *o) {
    o->n_ops = split(text, o->ops);
    for (int i = 0; i < o->n_ops; i++) {
        const char *w = o->ops[i];
        if (bench_is_op(w) || strcmp(w, BENCH_P_STEP) == 0 || strcmp(w, BENCH_MLP_STEP) == 0 ||
            strcmp(w, BENCH_OVERHEAD) == 0 || strcmp(w, BENCH_TRANSFORMS) == 0)
            continue;
        char names[512];
        bench_op_names(names, sizeof names);
        usage_error("unknown workload '%s' in --ops (workloads: %s, %s, %s, %s, %s)", w, names,
                    BENCH_P_STEP, BENCH_MLP_STEP, BENCH_OVERHEAD, BENCH_TRANSFORMS);
        return false;
    }
    if (o->n_ops > 0) return true;
    usage_error("--ops needs up to %d comma-separated workload names", BENCH_MAX_LIST);
    return false;
}

/* Applies one option; false after a message. */
static bool apply_option(int c, char *arg, bench_options *o, char **backends) {
    char *end;
    switch (c) {
    case OPT_BACKENDS:
        *backends = arg;
        return true;
    case OPT_OPS:
        return parse_ops(arg, o);
    case OPT_SIZES:
        return parse_sizes(arg, o);
    case OPT_DTYPE:
        if (strcmp(arg, "float32") == 0 || strcmp(arg, "float64") == 0) {
            o->dtype = arg[5] == '3' ? AG_F32 : AG_F64;
            return true;
        }
        usage_error("--dtype must be float32 or float64, not '%s'", arg);
        return false;
    case OPT_SECONDS:
        errno = 0;
        o->seconds = strtod(arg, &end);
        if (!errno && *end == '\0' && end != arg && o->seconds >= 0.001 && o->seconds <= 600)
            return true;
        usage_error("--seconds must be a number in [0.001, 600], not '%s'", arg);
        return false;
    case OPT_CSV:
        o->csv = arg;
        return true;
    case OPT_JSON:
        o->json = arg;
        return true;
    case OPT_PLOT:
        o->plot = arg;
        return true;
    default: /* OPT_NO_TORCH */
        o->torch = false;
        return true;
    }
}

/* Fills o and *backends (NULL: every backend) from argv; returns -1 to go on, else the
 * exit status (0 after --help). */
static int parse_args(int argc, char **argv, bench_options *o, char **backends) {
    static const struct option options[] = {{"backends", required_argument, NULL, OPT_BACKENDS},
                                            {"ops", required_argument, NULL, OPT_OPS},
                                            {"sizes", required_argument, NULL, OPT_SIZES},
                                            {"dtype", required_argument, NULL, OPT_DTYPE},
                                            {"seconds", required_argument, NULL, OPT_SECONDS},
                                            {"csv", required_argument, NULL, OPT_CSV},
                                            {"json", required_argument, NULL, OPT_JSON},
                                            {"plot", required_argument, NULL, OPT_PLOT},
                                            {"no-torch", no_argument, NULL, OPT_NO_TORCH},
                                            {"help", no_argument, NULL, 'h'},
                                            {0}};
    *o = (bench_options){.seconds = 0.2, .dtype = AG_F32, .torch = true};
    *backends = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        if (c == 'h') {
            char names[512];
            bench_op_names(names, sizeof names);
            printf(usage_text, names);
            return 0;
        }
        if (c == '?') return usage_error("unknown option or missing value");
        if (!apply_option(c, optarg, o, backends)) return 2;
    }
    if (optind < argc) return usage_error("unexpected argument '%s'", argv[optind]);
    return -1;
}

/* Fills devs with the devices to measure: those of the list, else device 0 of every
 * backend that loads. One that does not load is reported and skipped. Returns -1 to go on,
 * else the exit status (2 for a malformed name). */
static int pick_devices(char *list, ag_device *devs, int *n) {
    *n = 0;
    if (!list) {
        ag_tool_load_all_backends();
        for (int b = 0; b < ag_backend_count() && *n < MAX_DEVICES; b++)
            devs[(*n)++] = (ag_device){b, 0};
        return -1;
    }
    const char *specs[BENCH_MAX_LIST];
    const int count = split(list, specs);
    if (count < 0) return usage_error("--backends needs a comma-separated list of backends");
    for (int i = 0; i < count; i++) {
        ag_device dev;
        const ag_status st = ag_device_parse(specs[i], &dev);
        if (st == AG_ERR_INVALID_ARG) return usage_error("--backends: %s", ag_last_error());
        if (st != AG_OK) {
            printf("backend %s skipped: %s\n", specs[i], ag_last_error());
            ag_clear_error();
            continue;
        }
        bool seen = false;
        for (int k = 0; k < *n; k++)
            seen |= devs[k].backend == dev.backend && devs[k].index == dev.index;
        if (!seen && *n < MAX_DEVICES) devs[(*n)++] = dev;
    }
    return -1;
}

/* ---- the table ---- */

/* qsort order of records: section, op, size, pass, backend. */
static int compare_records(const void *x, const void *y) {
    const bench_record *a = x, *b = y;
    if (a->section != b->section) return (int)a->section - (int)b->section;
    for (int i = 0; i < 4; i++)
        if (a->key[i] != b->key[i]) return a->key[i] - b->key[i];
    return 0;
}

/* A number with 3 or 4 significant digits and no exponent in the usual ranges; "-" for
 * NaN. */
static const char *num(double v, char *buf, size_t size) {
    if (isnan(v))
        snprintf(buf, size, "-");
    else
        snprintf(buf, size,
                 v >= 1000  ? "%.0f"
                 : v >= 100 ? "%.1f"
                 : v >= 10  ? "%.2f"
                 : v >= 0.1 ? "%.3f"
                            : "%.3g",
                 v);
    return buf;
}

/* Widths of the text columns of one section. */
typedef struct widths {
    int op, size, pass, backend, reference;
} widths;

/* Updates w to fit s if longer. */
static void fit(int *w, const char *s) {
    const int n = (int)strlen(s);
    if (n > *w) *w = n;
}

/* Prints the heading and the rows of section s. */
static void print_section(const bench_results *r, bench_section s, const bench_options *o) {
    static const char *const titles[N_SECTIONS] = {
        "op level", "model level (float32, batch 128)",
        "framework overhead (chain of 100 muls on 16 float32 elements, per op)"};
    widths w = {2, 4, 4, 7, 9};
    int rows = 0;
    for (int i = 0; i < r->count; i++) {
        const bench_record *e = &r->items[i];
        if (e->section != s) continue;
        rows++;
        fit(&w.op, e->op);
        fit(&w.size, e->size);
        fit(&w.pass, e->pass);
        fit(&w.backend, e->backend);
        fit(&w.reference, e->reference);
    }
    if (!rows) return;
    const bool us = s == SECTION_OVERHEAD;
    if (s == SECTION_OPS)
        printf("\n== %s (%s) ==\n", titles[s], ag_dtype_name(o->dtype));
    else
        printf("\n== %s ==\n", titles[s]);
    printf("%-*s  %-*s  %-*s  %-*s  %10s  %-19s  %7s  %-18s  %-*s  %6s\n", w.op, "op", w.size,
           "size", w.pass, "pass", w.backend, "backend", us ? "median us" : "median ms",
           us ? "min..max us" : "min..max ms", "samples", "throughput", w.reference, "reference",
           "ratio");
    const double scale = us ? 1e6 : 1e3;
    for (int i = 0; i < r->count; i++) {
        const bench_record *e = &r->items[i];
        if (e->section != s) continue;
        char med[32], lo[32], hi[32], range[80], rate[48], ratio[32], tp[32];
        num(e->stats.median * scale, med, sizeof med);
        if (isnan(e->stats.min))
            snprintf(range, sizeof range, "-");
        else
            snprintf(range, sizeof range, "%s..%s", num(e->stats.min * scale, lo, sizeof lo),
                     num(e->stats.max * scale, hi, sizeof hi));
        snprintf(rate, sizeof rate, "%s %s", num(e->throughput, tp, sizeof tp), e->unit);
        num(e->ratio, ratio, sizeof ratio);
        char samples[16] = "-";
        if (e->stats.repeats) snprintf(samples, sizeof samples, "%d", e->stats.repeats);
        printf("%-*s  %-*s  %-*s  %-*s  %10s  %-19s  %7s  %-18s  %-*s  %6s\n", w.op, e->op, w.size,
               e->size, w.pass, e->pass, w.backend, e->backend, med, range, samples, rate,
               w.reference, e->reference, ratio);
    }
}

/* Prints the PyTorch section: each torch row beside the cpu rows it is the reference of. */
static void print_torch(const bench_results *r, const bench_torch_info *t) {
    printf("\n== vs PyTorch %s (%s, %d threads; torch/ag above 1: ag is faster) ==\n", t->version,
           t->device, t->threads);
    printf("%-16s  %-16s  %-8s  %12s  %12s  %8s\n", "workload", "pass", "backend", "ag", "torch",
           "torch/ag");
    for (int i = 0; i < r->count; i++) {
        const bench_record *tr = &r->items[i];
        if (strcmp(tr->backend, "torch") != 0) continue;
        const bool us = tr->section == SECTION_OVERHEAD;
        const double scale = us ? 1e6 : 1e3;
        char a[32], b[32], c[32], ag_text[48], torch_text[48];
        snprintf(torch_text, sizeof torch_text, "%s %s", num(tr->stats.median * scale, b, sizeof b),
                 us ? "us" : "ms");
        bool any = false;
        for (int j = 0; j < r->count; j++) {
            const bench_record *e = &r->items[j];
            if (e->section != tr->section || strcmp(e->op, tr->op) != 0 ||
                strcmp(e->pass, tr->pass) != 0 || strcmp(e->reference, "torch") != 0)
                continue;
            snprintf(ag_text, sizeof ag_text, "%s %s", num(e->stats.median * scale, a, sizeof a),
                     us ? "us" : "ms");
            printf("%-16s  %-16s  %-8s  %12s  %12s  %8s\n", tr->op, tr->pass, e->backend, ag_text,
                   torch_text, num(e->ratio, c, sizeof c));
            any = true;
        }
        if (!any)
            printf("%-16s  %-16s  %-8s  %12s  %12s  %8s\n", tr->op, tr->pass, "-", "-", torch_text,
                   "-");
    }
}

/* ---- the run ---- */

/* Fills the machine description of the JSON report (all but the peak RSS and torch). */
static void describe_machine(bench_machine *m, const ag_device *devs, int n) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    snprintf(m->cpu_model, sizeof m->cpu_model, "unknown");
    while (f && fgets(line, sizeof line, f)) {
        const char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) != 0 || !colon) continue;
        snprintf(m->cpu_model, sizeof m->cpu_model, "%.*s", (int)strcspn(colon + 2, "\n"),
                 colon + 2);
        break;
    }
    if (f) fclose(f);
    m->cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    m->n_devices = n;
    for (int i = 0; i < n; i++) {
        ag_device_str(devs[i], m->devices[i], sizeof m->devices[i]);
        ag_device_info info = {.struct_size = sizeof info};
        const ag_backend *be = ag__backend(devs[i].backend);
        if (be->iface.device_info(devs[i].index, &info) == AG_OK)
            snprintf(m->device_names[i], sizeof m->device_names[i], "%s", info.name);
        else
            snprintf(m->device_names[i], sizeof m->device_names[i], "?");
    }
}

/* Measures every selected workload on every device; returns the failed cells. */
static int measure(const bench_options *o, const ag_device *devs, int n, bench_results *r) {
    int failed = 0;
    for (int d = 0; d < n; d++) {
        const int first = r->count;
        ag_set_default_device(devs[d]); /* tensors, modules and optimizers go there */
        failed += bench_ops_run(o, devs[d], r);
        failed += bench_models_run(o, devs[d], r);
        ag_set_default_device((ag_device){-1, -1});
        for (int i = first; i < r->count; i++) r->items[i].key[3] = d;
    }
    bench_progress((ag_device){-1, -1}, NULL, NULL, NULL);
    return failed;
}

/* Writes the files asked for; returns how many failed. */
static int write_reports(const bench_options *o, const bench_results *r, const bench_machine *m) {
    int failed = 0;
    if (o->csv) failed += bench_write_csv(o->csv, r);
    if (o->json) failed += bench_write_json(o->json, r, m);
    if (o->plot) failed += bench_write_plot(o->plot, r);
    if (!failed && (o->csv || o->json || o->plot))
        printf("wrote%s%s%s%s%s%s\n", o->csv ? " " : "", o->csv ? o->csv : "", o->json ? " " : "",
               o->json ? o->json : "", o->plot ? " " : "", o->plot ? o->plot : "");
    return failed;
}

int ag_cmd_bench(int argc, char **argv) {
    bench_options o;
    char *backends;
    int rc = parse_args(argc, argv, &o, &backends);
    if (rc >= 0) return rc;
    bench_machine machine = {0};
    const time_t now = time(NULL);
    strftime(machine.date, sizeof machine.date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    if (ag_init() != AG_OK) {
        fprintf(stderr, "ag bench: %s\n", ag_last_error());
        return 1;
    }
    ag_device devs[MAX_DEVICES];
    int n = 0;
    rc = pick_devices(backends, devs, &n);
    if (rc >= 0) return rc;
    if (n == 0) {
        fprintf(stderr, "ag bench: no backend to measure\n");
        return 1;
    }
    describe_machine(&machine, devs, n);
    printf("ag bench: %d device%s (", n, n == 1 ? "" : "s");
    for (int i = 0; i < n; i++)
        printf("%s%s %s", i ? ", " : "", machine.devices[i], machine.device_names[i]);
    printf("), %g s per cell, median of >= 5 samples after warm-up\n", o.seconds);
    fflush(stdout);

    bench_results r = {0};
    int failed = measure(&o, devs, n, &r);
    bench_torch_info torch = {0};
    const bool wants_torch = bench_wants(&o, BENCH_P_STEP) || bench_wants(&o, BENCH_MLP_STEP) ||
                             bench_wants(&o, BENCH_OVERHEAD) || bench_wants(&o, BENCH_TRANSFORMS);
    if (o.torch && wants_torch) failed += bench_torch_run(&o, &r, &torch);
    machine.torch = &torch;
    qsort(r.items, (size_t)r.count, sizeof *r.items, compare_records);

    for (int s = 0; s < N_SECTIONS; s++) print_section(&r, (bench_section)s, &o);
    if (torch.ran) print_torch(&r, &torch);
    struct rusage usage;
    machine.peak_rss_mib =
        getrusage(RUSAGE_SELF, &usage) == 0 ? (double)usage.ru_maxrss / 1024 : NAN;
    printf("\n%d cells; peak RSS %.1f MiB; ratio = reference time / ag time (above 1: faster "
           "than the reference)\n",
           r.count, machine.peak_rss_mib);
    failed += write_reports(&o, &r, &machine);
    bench_results_free(&r);
    if (failed) fprintf(stderr, "ag bench: %d failure%s\n", failed, failed == 1 ? "" : "s");
    return failed ? 1 : 0;
}
