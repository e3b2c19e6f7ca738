/* `ag check`: checks ops on sample inputs on every available backend.
 *
 * Built-in ops (tools/check_builtin_samples.c has a recipe for each): forward and backward
 * on the checked device are compared with the cpu backend's (normalised mean squared error
 * per output and gradient, NaN/Inf where the cpu has none, int64 exactly), the op's kernel
 * is called once more through the backend ABI into a buffer with guard bytes around the
 * output (out-of-bounds writes), and --gradcheck runs gradcheck in float64 there.
 *
 * Composite functions (ag_conv2d and the like: no registry entry; samples in
 * tools/check_composite_samples.c): outputs and gradients against the cpu's, and with
 * --gradcheck gradcheck and gradgradcheck in float64 on the checked device.
 *
 * Plugin ops: the forward (the shapes and dtypes the shape rule declares, no NaN/Inf, the
 * cpu's values on other backends), gradcheck in float64 and gradgradcheck (or, for a
 * once-differentiable backward, that a double backward fails with PyTorch's error).
 *
 * Prints a table per kind of op (one row per op, backend and sample), the failures and a
 * summary; --csv writes every cell. Exit status: 0 when nothing failed, 1 on a failure, 2 on
 * a usage error. docs/backends.md and docs/writing-a-plugin.md describe it. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ag/plugin.h"
#include "backend_list.h"
#include "check_builtin_samples.h"
#include "check_composite_samples.h"
#include "commands.h"
#include "internal.h"

/* Most --plugin, --op and --backend options of each kind. */
#define MAX_ARGS 64

/* What the core says when a once-differentiable backward is differentiated (PyTorch's
 * wording, include/ag/plugin.h). */
#define ONCE_DIFFERENTIABLE_ERROR                                                                  \
    "trying to differentiate twice a function that was marked with @once_differentiable"

/* The shape of the sample generated for an op that declares none. */
#define GENERATED_NDIM 2
static const int64_t generated_shape[GENERATED_NDIM] = {3, 4};

/* Bytes of guard before and after a kernel's output in the guard-byte check. */
#define GUARD_BYTES 256

/* Most outputs of an op. */
#define MAX_OUTPUTS AG_PLUGIN_MAX_IO

typedef enum { PASS, FAIL, SKIP, NOT_APPLICABLE, N_VERDICTS } verdict;

/* The outcome of one check. */
typedef struct cell {
    verdict verdict;
    char reason[64];    /* shown in the table as word(reason), if set */
    char message[1024]; /* the error behind a FAIL (or a skip), printed below the table */
} cell;

#define MAX_CHECKS 5

/* One op on one device with one sample. */
typedef struct row {
    const char *op;   /* op name (borrowed from the registry or the recipes) */
    char backend[32]; /* "cpu:0" */
    char sample[160]; /* "0: f32[3,4]" (plugin sample 0) or "f32 [17,33]T, [33]" */
    cell cells[MAX_CHECKS];
} row;

/* The rows of one table. */
typedef struct row_list {
    row *rows;
    int n, cap;
} row_list;

/* A kind of table: its check columns and the words of its verdicts. */
typedef struct table_kind {
    const char *name;                /* "plugin", "builtin": first CSV column */
    const char *title;               /* printed above the table, or NULL */
    int n_checks;                    /* check columns */
    const char *checks[MAX_CHECKS];  /* their names */
    const char *words[N_VERDICTS];   /* a cell's word per verdict */
    const char *counted[N_VERDICTS]; /* the summary's word per verdict (NULL: not shown) */
} table_kind;

enum { FORWARD, GRADCHECK, GRADGRADCHECK };
static const table_kind plugin_table = {"plugin",
                                        NULL,
                                        3,
                                        {"forward", "gradcheck", "gradgradcheck"},
                                        {"pass", "FAIL", "skip", "-"},
                                        {"passed", "failed", "skipped", NULL}};

enum { B_FORWARD, B_BACKWARD, B_GUARD, B_GRADCHECK, B_JVP };
static const table_kind builtin_table = {"builtin",
                                         "built-in ops",
                                         3,
                                         {"forward", "backward", "guard", "gradcheck", "jvp"},
                                         {"OK", "FAIL", "not supported", "-"},
                                         {"OK", "failed", "not supported", "not applicable"}};

enum { C_FORWARD, C_BACKWARD, C_GRADCHECK, C_GRADGRADCHECK };
static const table_kind composite_table = {"composite",
                                           "composite functions",
                                           2,
                                           {"forward", "backward", "gradcheck", "gradgradcheck"},
                                           {"OK", "FAIL", "not supported", "-"},
                                           {"OK", "failed", "not supported", "not applicable"}};

/* An op to check. */
typedef struct target {
    const char *name;         /* full name, "swish::swish" */
    const ag_op *op;          /* for ag_op_call */
    const ag_plugin_op *decl; /* its declaration: schema, samples, flags */
} target;

/* The command line. */
typedef struct options {
    const char *plugins[MAX_ARGS], *ops[MAX_ARGS], *backends[MAX_ARGS];
    int n_plugins, n_ops, n_backends;
    const char *composites[MAX_ARGS]; /* composite functions to check (names, no repeats) */
    int n_composites;
    int max_samples;      /* --samples; 0: every sample */
    bool gradcheck;       /* --gradcheck: gradcheck of the built-in ops */
    const char *csv_path; /* --csv FILE, or NULL */
} options;

static const char usage_text[] =
    "usage: ag check [--plugin PATH]... [--op NAME]... [--backend NAME[:INDEX]]... "
    "[--samples N]\n"
    "                [--gradcheck] [--csv FILE]\n"
    "Checks ops on each backend (default: device 0 of every backend that loads). Without\n"
    "--plugin and --op: every built-in op and every plugin op loaded (AG_PLUGINS).\n"
    "Built-in ops run on sample inputs (tools/check_builtin_samples.c) there and on the cpu,\n"
    "which is the reference: outputs and gradients must agree (normalised mean squared\n"
    "error), and kernels must not write outside their outputs (guard bytes).\n"
    "Composite functions (conv2d, pools, norms: no kernel of their own) run on samples\n"
    "(tools/check_composite_samples.c) there and on the cpu: outputs and gradients must\n"
    "agree; --gradcheck adds gradcheck and gradgradcheck in float64.\n"
    "Plugin ops: forward, gradcheck in float64 and gradgradcheck, on each sample the op\n"
    "declares (or one generated from its schema); other backends must match the cpu.\n"
    "  --plugin PATH   load a plugin file and check its ops (repeatable)\n"
    "  --op NAME       check only this op (repeatable): a built-in or composite name\n"
    "                  (\"add\", \"conv2d\"), a full\n"
    "                  plugin name \"ns::name\", or a bare name one plugin op ends in\n"
    "  --backend NAME  check on this backend or device, e.g. opencl, cpu:1 (repeatable)\n"
    "  --samples N     check at most the first N samples of each op\n"
    "  --gradcheck     also run gradcheck of the built-in ops in float64 on each backend\n"
    "  --csv FILE      write every check as CSV (table,op,backend,sample,check,result,...)\n"
    "Exit status: 0 nothing failed (not supported and skips allowed), 1 a check failed,\n"
    "2 usage error.\n";

/* ---- results ---- */

static void set_verdict(cell *c, verdict v, const char *reason) {
    c->verdict = v;
    snprintf(c->reason, sizeof c->reason, "%s", reason ? reason : "");
}

/* Marks a check failed, with a reason for the table (or NULL) and a printf-style message. */
static void __attribute__((format(printf, 3, 4)))
fail_why(cell *c, const char *reason, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof c->message, fmt, ap);
    va_end(ap);
    set_verdict(c, FAIL, reason);
}
#define fail(c, ...) fail_why(c, NULL, __VA_ARGS__)

/* Records the failure of a call that returned st, with the thread's error: a FAIL, or
 * skip(not supported) when the backend has no kernel for the op. (The once_differentiable
 * error has that status too, but where this is called it means a broken double backward.) */
static void record_error(cell *c, ag_status st, const char *prefix) {
    if (st == AG_ERR_UNSUPPORTED && !strstr(ag_last_error(), ONCE_DIFFERENTIABLE_ERROR)) {
        snprintf(c->message, sizeof c->message, "%s%s", prefix, ag_last_error());
        set_verdict(c, SKIP, "not supported");
    } else
        fail(c, "%s%s", prefix, ag_last_error());
}

/* Marks both gradient checks skipped for one reason. */
static void skip_gradients(row *r, const char *reason) {
    set_verdict(&r->cells[GRADCHECK], SKIP, reason);
    set_verdict(&r->cells[GRADGRADCHECK], SKIP, reason);
}

/* "pass", "FAIL(NMSE 1e-3)", "not supported(no kernel)" as the table kind words them. */
static const char *cell_text(const table_kind *k, const cell *c, char *buf, size_t size) {
    if (c->reason[0])
        snprintf(buf, size, "%s(%s)", k->words[c->verdict], c->reason);
    else
        snprintf(buf, size, "%s", k->words[c->verdict]);
    return buf;
}

/* A new row of op on dev (backend "-" for a negative backend) at the end of l, its cells
 * not applicable; NULL when memory runs out. */
static row *new_row(row_list *l, const char *op, ag_device dev) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        row *rows = realloc(l->rows, (size_t)cap * sizeof *rows);
        if (!rows) return NULL;
        l->rows = rows;
        l->cap = cap;
    }
    row *r = &l->rows[l->n++];
    memset(r, 0, sizeof *r);
    r->op = op;
    if (dev.backend >= 0)
        ag_device_str(dev, r->backend, sizeof r->backend);
    else
        snprintf(r->backend, sizeof r->backend, "-");
    for (int c = 0; c < MAX_CHECKS; c++) r->cells[c].verdict = NOT_APPLICABLE;
    return r;
}

/* ---- tensors ---- */

static bool is_float(ag_dtype dtype) {
    return ag__is_float(dtype);
}

static bool same_device(ag_device a, ag_device b) {
    return a.backend == b.backend && a.index == b.index;
}

/* "f32", "f64", "i64". */
static const char *short_dtype(ag_dtype dtype) {
    static const char *const short_names[AG_DTYPE_COUNT] = {"f32", "f64", "i64", "f16", "bf16"};
    return (unsigned)dtype < AG_DTYPE_COUNT ? short_names[dtype] : ag_dtype_name(dtype);
}

/* Writes "[3,4]" into buf; returns the length written. */
static int shape_str(int ndim, const int64_t *shape, char *buf, size_t size) {
    int n = snprintf(buf, size, "[");
    for (int i = 0; i < ndim && n < (int)size; i++)
        n += snprintf(buf + n, size - (size_t)n, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (n < (int)size) n += snprintf(buf + n, size - (size_t)n, "]");
    return n;
}

/* Writes "f32[3,4]" into buf; returns the length written. */
static int meta_str(const ag_tensor_meta *m, char *buf, size_t size) {
    int n = snprintf(buf, size, "%s", short_dtype(m->dtype));
    if (n < (int)size) n += shape_str(m->ndim, m->shape, buf + n, size - (size_t)n);
    return n;
}

static ag_tensor_meta meta_of(const ag_tensor *t) {
    ag_tensor_meta m = {.dtype = ag_dtype_of(t), .ndim = ag_ndim(t)};
    memcpy(m.shape, ag_shape(t), (size_t)m.ndim * sizeof *m.shape);
    return m;
}

static bool same_meta(const ag_tensor_meta *a, const ag_tensor_meta *b) {
    return a->dtype == b->dtype && a->ndim == b->ndim &&
           memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof *a->shape) == 0;
}

static int64_t meta_numel(const ag_tensor_meta *m) {
    int64_t n = 1;
    for (int d = 0; d < m->ndim; d++) n *= m->shape[d];
    return n;
}

/* A tensor's elements copied to host memory, in its dtype. */
typedef struct values {
    ag_tensor_meta meta;
    void *data; /* malloc'd; NULL: no tensor */
} values;

/* Copies t's elements to the host (any strides); the thread's error on failure. */
static ag_status to_values(ag_tensor *t, values *v) {
    v->meta = meta_of(t);
    size_t bytes = (size_t)ag_numel(t) * ag_dtype_size(v->meta.dtype);
    v->data = malloc(bytes ? bytes : 1);
    if (!v->data) return ag__error(AG_ERR_OUT_OF_MEMORY, "ag check: out of host memory");
    return ag_to_host(t, v->data, bytes);
}

static void free_values(values *v, int n) {
    for (int i = 0; i < n; i++) {
        free(v[i].data);
        v[i].data = NULL;
    }
}

static double value_at(const values *v, int64_t i) {
    return ag__host_value(v->meta.dtype, v->data, i);
}

/* Largest normalised mean squared error accepted for a dtype. */
static double nmse_limit(ag_dtype dtype) {
    /* 16-bit results are float32 results rounded: a device's float32 kernel one float32 ulp
     * away from the cpu's occasionally rounds to the neighbouring 16-bit value. */
    switch (dtype) {
    case AG_F32:
        return 1e-7;
    case AG_F16:
        return 1e-5;
    case AG_BF16:
        return 1e-4;
    default:
        return 1e-14;
    }
}

/* Compares `got` (the checked device's) with `want` (the reference, the cpu's unless `by`
 * names another): the same dtype and shape; int64 exactly; floats by NMSE =
 * sum((got - want)^2) / sum(want^2), and no NaN/Inf in either (the samples avoid them).
 * False after failing c; `what` names the tensor. */
static bool compare_by(cell *c, const char *what, const values *got, const values *want,
                       const char *by) {
    char a[96], b[96];
    if (!same_meta(&got->meta, &want->meta)) {
        meta_str(&got->meta, a, sizeof a);
        meta_str(&want->meta, b, sizeof b);
        fail_why(c, "shape", "%s is %s, but %s is %s", what, a, by, b);
        return false;
    }
    int64_t n = meta_numel(&want->meta), differ = 0, bad = 0, want_bad = 0, first = -1;
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double x = value_at(got, i), y = value_at(want, i);
        if (!isfinite(y))
            want_bad++;
        else if (!isfinite(x))
            bad++;
        num += (x - y) * (x - y);
        den += y * y;
        if (x != y && first < 0) first = i;
        differ += x != y;
    }
    if (want_bad) {
        fail_why(c, "reference NaN/Inf", "%s: %s has %lld NaN/Inf of %lld (a bad sample?)", what,
                 by, (long long)want_bad, (long long)n);
        return false;
    }
    if (bad) {
        fail_why(c, "NaN/Inf", "%s has %lld NaN/Inf of %lld where %s is finite", what,
                 (long long)bad, (long long)n, by);
        return false;
    }
    if (want->meta.dtype == AG_I64) {
        if (!differ) return true;
        fail_why(c, "differs",
                 "%s: %lld of %lld elements differ from %s (first: %lld, %g instead of %g)", what,
                 (long long)differ, (long long)n, by, (long long)first, value_at(got, first),
                 value_at(want, first));
        return false;
    }
    double nmse = den > 0 ? num / den : num > 0 ? INFINITY : 0;
    if (nmse <= nmse_limit(want->meta.dtype)) return true;
    char reason[32];
    snprintf(reason, sizeof reason, "NMSE %.1e", nmse);
    fail_why(c, reason,
             "%s: NMSE %.3g against %s is above %g (first difference at %lld: %.17g "
             "instead of %.17g)",
             what, nmse, by, nmse_limit(want->meta.dtype), (long long)first, value_at(got, first),
             value_at(want, first));
    return false;
}

/* compare_by against the cpu's. */
static bool compare(cell *c, const char *what, const values *got, const values *want) {
    return compare_by(c, what, got, want, "the cpu's");
}
/* ---- plugin ops ---- */

/* Input i gets a gradient: a float input the op does not declare non-differentiable. */
static bool differentiable(const ag_plugin_op *d, ag_dtype dtype, int i) {
    return is_float(dtype) && !(d->nondiff_inputs >> i & 1u);
}

/* The outputs' dtypes and shapes the op's shape rule declares for these inputs. */
static ag_status declared(const ag_plugin_op *d, ag_tensor *const *in, const ag_attrs *attrs,
                          ag_tensor_meta *out) {
    ag_tensor_meta metas[AG_PLUGIN_MAX_IO];
    for (int i = 0; i < d->n_inputs; i++) metas[i] = meta_of(in[i]);
    return d->shape(d->n_inputs, metas, attrs, d->n_outputs, out);
}

/* The sample's inputs in the given dtypes: drawn uniformly from [low, high) in float64 with
 * a generator seeded by `seed`, so every dtype and backend sees the same values, then
 * converted (integers truncate). New tensors of the current scope, without history. */
static ag_status make_inputs(const ag_plugin_sample *s, const ag_dtype *dtypes, uint64_t seed,
                             ag_tensor **in) {
    ag_generator *gen = ag_generator_new(seed);
    if (!gen) return ag_last_status();
    bool prev = ag_set_grad_enabled(false);
    ag_status st = AG_OK;
    for (int i = 0; i < s->n_inputs && st == AG_OK; i++) {
        const ag_tensor_meta *m = &s->inputs[i];
        ag_tensor *u = ag_uniform(gen, AG_F64, m->ndim, m->shape, s->low, s->high);
        in[i] = dtypes[i] == AG_F64 ? u : ag_to_dtype(u, dtypes[i]);
        if (!in[i]) st = ag_last_status();
    }
    ag_set_grad_enabled(prev);
    ag_generator_free(gen);
    return st;
}

/* Runs the op. Inputs the op mutates are cloned first, so that repeated calls (gradcheck)
 * see the same values and a leaf requiring grad is never written. */
static ag_status call_op(const target *t, ag_tensor *const *in, const ag_attrs *attrs,
                         ag_tensor **out) {
    ag_tensor *args[AG_PLUGIN_MAX_IO];
    for (int i = 0; i < t->decl->n_inputs; i++)
        args[i] = t->decl->mutated_inputs >> i & 1u ? ag_clone(in[i]) : in[i];
    return ag_op_call(t->op, t->decl->n_inputs, args, attrs, t->decl->n_outputs, out);
}

/* Number of NaN and Inf elements of t (0 for integer tensors), or -1 on error. */
static int64_t count_nonfinite(ag_tensor *t) {
    if (!is_float(ag_dtype_of(t))) return 0;
    int64_t n = ag_numel(t), bad = 0;
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    ag_tensor *t64 = ag_to_dtype(t, AG_F64);
    if (!v || !t64 || ag_to_host(t64, v, (size_t)n * sizeof *v) != AG_OK)
        bad = -1;
    else
        for (int64_t i = 0; i < n; i++) bad += !isfinite(v[i]);
    free(v);
    return bad;
}

/* ---- the checks ---- */

/* Forward: the call succeeds, each output has the declared dtype and shape, and float
 * outputs are finite. An op without a kernel for the backend is skipped, not failed. */
static void check_forward(cell *c, const target *t, const ag_plugin_sample *s,
                          ag_tensor *const *in) {
    ag_tensor_meta want[AG_PLUGIN_MAX_IO];
    ag_tensor *out[AG_PLUGIN_MAX_IO];
    char got_s[96], want_s[96];
    if (declared(t->decl, in, &s->attrs, want) != AG_OK) {
        fail(c, "shape rule: %s", ag_last_error());
        return;
    }
    bool prev = ag_set_grad_enabled(false);
    ag_status st = call_op(t, in, &s->attrs, out);
    ag_set_grad_enabled(prev);
    if (st != AG_OK) {
        record_error(c, st, "");
        return;
    }
    for (int j = 0; j < t->decl->n_outputs; j++) {
        ag_tensor_meta got = meta_of(out[j]);
        if (!same_meta(&got, &want[j])) {
            meta_str(&got, got_s, sizeof got_s);
            meta_str(&want[j], want_s, sizeof want_s);
            fail(c, "output %d is %s, but the shape rule declares %s", j, got_s, want_s);
            return;
        }
        int64_t bad = count_nonfinite(out[j]);
        if (bad) {
            if (bad < 0)
                fail(c, "output %d: %s", j, ag_last_error());
            else
                fail(c, "output %d has %lld NaN/Inf of %lld elements", j, (long long)bad,
                     (long long)ag_numel(out[j]));
            return;
        }
    }
    set_verdict(c, PASS, NULL);
}

/* What gradcheck's function sees: the op, its attributes and which output to return. */
typedef struct call_ctx {
    const target *t;
    const ag_attrs *attrs;
    int output;
} call_ctx;

/* ag_gradcheck_fn: output ctx->output of the op (the others stay in gradcheck's scope). */
static ag_tensor *call_output(ag_tensor *const *in, void *user) {
    const call_ctx *ctx = user;
    ag_tensor *out[AG_PLUGIN_MAX_IO];
    return call_op(ctx->t, in, ctx->attrs, out) == AG_OK ? out[ctx->output] : NULL;
}

/* The float64 dtypes of the sample's inputs for gradcheck (float inputs that accept
 * float64 are converted); a skip reason if a differentiable input does not accept it. */
static const char *gradcheck_dtypes(const ag_plugin_op *d, const ag_plugin_sample *s,
                                    ag_dtype *dtypes, char *why, size_t size) {
    bool any = false;
    for (int i = 0; i < d->n_inputs; i++) {
        ag_dtype dt = s->inputs[i].dtype;
        bool f64_ok = d->input_dtypes[i] & AG_DTYPE_BIT(AG_F64);
        dtypes[i] = is_float(dt) && f64_ok ? AG_F64 : dt;
        if (!differentiable(d, dt, i)) continue;
        if (!f64_ok) {
            snprintf(why, size, "input %d takes no float64", i);
            return why;
        }
        any = true;
    }
    return any ? NULL : "no differentiable input";
}

/* gradgradcheck of one output; for a once-differentiable op, checks that the double
 * backward is refused with PyTorch's error instead. */
static void gradgradcheck_output(cell *c, call_ctx *ctx, ag_tensor *const *in, const char *prefix) {
    ag_status st = ag_gradgradcheck(call_output, ctx, ctx->t->decl->n_inputs, in, NULL);
    if (!(ctx->t->decl->flags & AG_PLUGIN_ONCE_DIFFERENTIABLE)) {
        if (st != AG_OK) record_error(c, st, prefix);
    } else if (st == AG_OK)
        fail(c, "%sthe op is once-differentiable, but its double backward succeeded", prefix);
    else if (!strstr(ag_last_error(), ONCE_DIFFERENTIABLE_ERROR))
        fail(c,
             "%sthe double backward of a once-differentiable op should fail with \"%s\", "
             "but failed with: %s",
             prefix, ONCE_DIFFERENTIABLE_ERROR, ag_last_error());
    ag_clear_error();
}

/* gradcheck and gradgradcheck of every float output, on float64 inputs. */
static void check_gradients(row *r, const target *t, const ag_plugin_sample *s, uint64_t seed) {
    const ag_plugin_op *d = t->decl;
    ag_dtype dtypes[AG_PLUGIN_MAX_IO];
    ag_tensor *in[AG_PLUGIN_MAX_IO];
    ag_tensor_meta want[AG_PLUGIN_MAX_IO];
    cell *g = &r->cells[GRADCHECK], *gg = &r->cells[GRADGRADCHECK];
    char why[64], prefix[32] = "";
    /* As the core decides: a composed backward, or a once-differentiable kernel. */
    const char *skip = d->backward || (d->flags & AG_PLUGIN_ONCE_DIFFERENTIABLE)
                           ? gradcheck_dtypes(d, s, dtypes, why, sizeof why)
                           : "no backward";
    if (skip) {
        skip_gradients(r, skip);
        return;
    }
    ag_status st = make_inputs(s, dtypes, seed, in);
    for (int i = 0; i < d->n_inputs && st == AG_OK; i++)
        if (differentiable(d, dtypes[i], i)) st = ag_set_requires_grad(in[i], true);
    if (st == AG_OK) st = declared(d, in, &s->attrs, want);
    if (st != AG_OK) {
        fail(g, "float64 inputs: %s", ag_last_error());
        set_verdict(gg, SKIP, "gradcheck failed");
        return;
    }
    set_verdict(g, PASS, NULL);
    set_verdict(gg, PASS, d->flags & AG_PLUGIN_ONCE_DIFFERENTIABLE ? "once_differentiable" : NULL);
    bool any = false;
    for (int j = 0; j < d->n_outputs; j++) {
        if (!is_float(want[j].dtype)) continue; /* integer outputs have no gradient */
        any = true;
        call_ctx ctx = {t, &s->attrs, j};
        if (d->n_outputs > 1) snprintf(prefix, sizeof prefix, "output %d: ", j);
        st = g->verdict == PASS ? ag_gradcheck(call_output, &ctx, d->n_inputs, in, NULL) : AG_OK;
        if (st != AG_OK) record_error(g, st, prefix);
        ag_clear_error();
        if (gg->verdict == PASS) gradgradcheck_output(gg, &ctx, in, prefix);
    }
    if (!any) skip_gradients(r, "no float output");
}

/* The sample ag check makes for an op that declares none: every input in its first allowed
 * float dtype, shape [3, 4], values in [-1, 1), attributes zero. A skip reason if an input
 * takes no float dtype. */
static const char *generate_sample(const ag_plugin_op *d, ag_plugin_sample *s, char *why,
                                   size_t size) {
    *s = (ag_plugin_sample){.n_inputs = d->n_inputs, .low = -1, .high = 1};
    for (int i = 0; i < d->n_inputs; i++) {
        uint32_t allowed = d->input_dtypes[i];
        ag_tensor_meta *m = &s->inputs[i];
        if (!(allowed & (AG_DTYPE_BIT(AG_F32) | AG_DTYPE_BIT(AG_F64)))) {
            snprintf(why, size, "no sample: input %d takes no float dtype", i);
            return why;
        }
        m->dtype = allowed & AG_DTYPE_BIT(AG_F32) ? AG_F32 : AG_F64;
        m->ndim = GENERATED_NDIM;
        memcpy(m->shape, generated_shape, sizeof generated_shape);
    }
    return NULL;
}

/* "0: f32[3,4], f64[4]" */
static void sample_label(const char *tag, const ag_plugin_sample *s, char *buf, size_t size) {
    int n = snprintf(buf, size, "%s:", tag);
    for (int i = 0; i < s->n_inputs && n < (int)size; i++) {
        n += snprintf(buf + n, size - (size_t)n, i ? ", " : " ");
        if (n < (int)size) n += meta_str(&s->inputs[i], buf + n, size - (size_t)n);
    }
}

/* The op's outputs on sample s made with seed on dev, copied to the host (n_outputs). */
static ag_status outputs_on(const target *t, const ag_plugin_sample *s, uint64_t seed,
                            ag_device dev, values *out) {
    ag_tensor *in[AG_PLUGIN_MAX_IO], *res[AG_PLUGIN_MAX_IO];
    ag_dtype dtypes[AG_PLUGIN_MAX_IO];
    for (int i = 0; i < s->n_inputs; i++) dtypes[i] = s->inputs[i].dtype;
    ag_set_default_device(dev);
    ag_scope *scope = ag_scope_begin();
    bool prev = ag_set_grad_enabled(false);
    ag_status st = make_inputs(s, dtypes, seed, in);
    if (st == AG_OK) st = call_op(t, in, &s->attrs, res);
    for (int j = 0; j < t->decl->n_outputs && st == AG_OK; j++) st = to_values(res[j], &out[j]);
    ag_set_grad_enabled(prev);
    ag_scope_end(scope);
    return st;
}

/* On a device other than the cpu reference: the forward's outputs must be the cpu's. A
 * plugin without a cpu kernel passes with a note. */
static void compare_forward(cell *c, const target *t, const ag_plugin_sample *s, uint64_t seed,
                            ag_device dev, ag_device ref) {
    values got[AG_PLUGIN_MAX_IO], want[AG_PLUGIN_MAX_IO];
    int n = t->decl->n_outputs;
    char what[32];
    for (int j = 0; j < n; j++) got[j].data = want[j].data = NULL;
    if (outputs_on(t, s, seed, ref, want) != AG_OK)
        set_verdict(c, PASS, "no cpu reference");
    else if (outputs_on(t, s, seed, dev, got) != AG_OK)
        fail(c, "%s", ag_last_error());
    for (int j = 0; j < n && c->verdict == PASS && !c->reason[0]; j++) {
        snprintf(what, sizeof what, "output %d", j);
        compare(c, what, &got[j], &want[j]);
    }
    free_values(got, n);
    free_values(want, n);
    ag_set_default_device(dev);
    ag_clear_error();
}

/* Fills one row: the op on device dev with sample s. */
static void check_sample(row *r, const target *t, const ag_plugin_sample *s, uint64_t seed,
                         ag_device dev, ag_device ref) {
    ag_tensor *in[AG_PLUGIN_MAX_IO];
    ag_dtype dtypes[AG_PLUGIN_MAX_IO];
    for (int i = 0; i < s->n_inputs; i++) dtypes[i] = s->inputs[i].dtype;
    ag_scope *scope = ag_scope_begin();
    if (make_inputs(s, dtypes, seed, in) != AG_OK)
        fail(&r->cells[FORWARD], "inputs: %s", ag_last_error());
    else
        check_forward(&r->cells[FORWARD], t, s, in);
    ag_clear_error();
    if (r->cells[FORWARD].verdict == PASS && !same_device(dev, ref))
        compare_forward(&r->cells[FORWARD], t, s, seed, dev, ref);
    if (r->cells[FORWARD].verdict == PASS)
        check_gradients(r, t, s, seed);
    else
        skip_gradients(r, r->cells[FORWARD].verdict == FAIL ? "forward failed"
                                                            : r->cells[FORWARD].reason);
    ag_scope_end(scope);
    ag_clear_error();
}

/* True if the op declares its own samples. */
static bool has_samples(const ag_plugin_op *d) {
    return d->n_samples > 0 && d->samples;
}

/* Samples checked of an op: its own (at most max_samples if > 0), or the generated one. */
static int samples_checked(const ag_plugin_op *d, int max_samples) {
    int n = has_samples(d) ? d->n_samples : 1;
    return max_samples > 0 && n > max_samples ? max_samples : n;
}

/* Appends the rows of one op on one device: one per sample checked. False when memory runs
 * out. */
static bool check_op(const target *t, ag_device dev, ag_device ref, int max_samples,
                     row_list *rows) {
    const ag_plugin_op *d = t->decl;
    ag_plugin_sample generated;
    char why[64], tag[16];
    for (int k = 0; k < samples_checked(d, max_samples); k++) {
        row *r = new_row(rows, t->name, dev);
        if (!r) return false;
        const ag_plugin_sample *s = has_samples(d) ? &d->samples[k] : &generated;
        const char *skip = has_samples(d) ? NULL : generate_sample(d, &generated, why, sizeof why);
        if (has_samples(d))
            snprintf(tag, sizeof tag, "%d", k);
        else
            snprintf(tag, sizeof tag, "gen");
        if (skip) {
            snprintf(r->sample, sizeof r->sample, "%s: -", tag);
            set_verdict(&r->cells[FORWARD], SKIP, skip);
            skip_gradients(r, skip);
            continue;
        }
        sample_label(tag, s, r->sample, sizeof r->sample);
        ag_set_default_device(dev);
        /* One seed per sample: every backend sees the same values. */
        check_sample(r, t, s, (uint64_t)k + 1, dev, ref);
        ag_set_default_device((ag_device){-1, -1});
    }
    return true;
}

/* ---- built-in ops ---- */

/* One built-in check: an op, one of its recipes and the row's dtype. */
typedef struct builtin_case {
    ag_op_def *op;
    const builtin_sample *s;
    ag_dtype dtype; /* the row's */
    uint64_t seed;  /* of the inputs: the same on every device */
    ag_device ref;  /* the cpu reference device */
} builtin_case;

/* Everything one run of a case on one device gives, copied to the host. */
typedef struct run {
    ag_status status; /* of the forward */
    char error[1024]; /* its error */
    int n_out;        /* outputs copied */
    values out[MAX_OUTPUTS];
    ag_status grad_status; /* of the backward (AG_OK when none ran) */
    char grad_error[1024];
    values grads[SAMPLE_MAX_INPUTS]; /* data NULL: no gradient */
} run;

/* The op records a backward for float inputs. */
static bool has_backward(const ag_op_def *op) {
    return op->backward && !(op->flags & AG_OPF_NONDIFF);
}

/* Input i of the case gets a gradient. */
static bool wants_grad(const builtin_case *b, ag_dtype dtype, int i) {
    return has_backward(b->op) && is_float(dtype) && !ag__input_bit(b->op->nondiff_inputs, i);
}

static ag_dtype input_dtype(const builtin_case *b, int i) {
    int dt = b->s->inputs[i].dtype;
    return dt == SAMPLE_KEY ? b->dtype : (ag_dtype)dt;
}

/* Some input of the case gets a gradient. */
static bool case_has_backward(const builtin_case *b) {
    bool any = false;
    for (int i = 0; i < sample_n_inputs(b->s); i++) any |= wants_grad(b, input_dtype(b, i), i);
    return any;
}

/* The case's attributes, with the row's dtype or the reference device filled in. */
static ag_attrs case_attrs(const builtin_case *b) {
    ag_attrs at = b->s->attrs;
    if (b->s->flags & SAMPLE_ATTR_DTYPE) at.ints[0] = b->dtype;
    if (b->s->flags & SAMPLE_ATTR_DEVICE) {
        at.ints[0] = b->ref.backend;
        at.ints[1] = b->ref.index;
    }
    return at;
}

/* Uniform values in [low, high) of a shape and dtype, drawn in float64 on the cpu from gen
 * (whole numbers if `integer`), moved to dev. A tensor of the current scope, or NULL. */
static ag_tensor *draw(ag_generator *gen, ag_dtype dtype, int ndim, const int64_t *shape,
                       double low, double high, bool integer, ag_device ref, ag_device dev) {
    ag_set_default_device(ref);
    ag_tensor *t = ag_uniform(gen, AG_F64, ndim, shape, low, high);
    if (integer) t = ag_to_dtype(t, AG_I64);
    return ag_to_device(ag_to_dtype(t, dtype), dev);
}

/* The case's inputs on dev: drawn on the cpu with the case's seed (the same values on every
 * device), moved, then laid out (transposed views) there. Without history. */
static ag_status case_inputs(const builtin_case *b, ag_device dev, ag_tensor **in) {
    ag_generator *gen = ag_generator_new(b->seed);
    if (!gen) return ag_last_status();
    bool prev = ag_set_grad_enabled(false);
    ag_status st = AG_OK;
    for (int i = 0; i < sample_n_inputs(b->s) && st == AG_OK; i++) {
        const sample_input *x = &b->s->inputs[i];
        bool transposed = x->flags & IN_TRANSPOSED && x->ndim >= 2;
        int64_t shape[4];
        memcpy(shape, x->shape, sizeof shape);
        if (transposed) {
            shape[x->ndim - 2] = x->shape[x->ndim - 1];
            shape[x->ndim - 1] = x->shape[x->ndim - 2];
        }
        in[i] = draw(gen, input_dtype(b, i), x->ndim, shape, x->low, x->high, x->flags & IN_INTEGER,
                     b->ref, dev);
        if (in[i] && transposed) in[i] = ag_transpose(in[i], -1, -2);
        if (!in[i]) st = ag_last_status();
    }
    ag_set_grad_enabled(prev);
    ag_generator_free(gen);
    return st;
}

/* Runs the case's forward on dev into outputs (op->n_outputs of them). */
static ag_status case_forward(const builtin_case *b, ag_device dev, ag_tensor *const *in,
                              ag_tensor **out) {
    ag_attrs at = case_attrs(b);
    ag_set_default_device(dev); /* where arange puts its output */
    return ag__dispatch(b->op, sample_n_inputs(b->s), in, &at, b->op->n_outputs, out);
}

/* The kernel's output as the guard check describes it: the op output's shape, or for a
 * reduction the input's rank with extent 1 in the reduced dims. */
static ag_kernel_tensor guard_output(const builtin_case *b, ag_tensor *const *in,
                                     const values *out) {
    ag_kernel_tensor k = {.dtype = out->meta.dtype, .ndim = out->meta.ndim};
    memcpy(k.shape, out->meta.shape, sizeof k.shape);
    if (b->s->guard == GUARD_REDUCE) {
        k.ndim = ag_ndim(in[0]);
        for (int d = 0; d < k.ndim; d++)
            k.shape[d] = (uint64_t)b->s->attrs.ints[0] >> d & 1 ? 1 : ag_shape(in[0])[d];
    }
    ag__contiguous_strides(k.ndim, k.shape, k.strides);
    k.offset = GUARD_BYTES / (int64_t)ag_dtype_size(k.dtype);
    return k;
}

/* Guard bytes: byte i of the buffer before the kernel runs. */
static unsigned char guard_pattern(size_t i) {
    return (unsigned char)(0xA5 ^ (i * 13));
}

/* Counts the bytes of [from, to) that differ from the pattern. */
static size_t guard_damage(const unsigned char *buf, size_t from, size_t to) {
    size_t n = 0;
    for (size_t i = from; i < to; i++) n += buf[i] != guard_pattern(i);
    return n;
}

/* Calls the op's kernel on dev through the backend ABI with the output in the middle of a
 * buffer of GUARD_BYTES guard bytes either side; the guards must be intact and the output
 * the op's forward output `want`. */
static void check_guard(cell *c, const builtin_case *b, ag_device dev, ag_tensor *const *in,
                        const values *want) {
    const ag_backend_iface *be = &ag__backend(dev.backend)->iface;
    const char *name = b->op->kernel;
    ag_kernel_fn kernel;
    if (be->get_kernel(name, b->dtype, &kernel) != AG_OK) {
        fail_why(c, "no kernel", "%s has a forward but get_kernel(\"%s\", %s) fails: %s", be->name,
                 name, ag_dtype_name(b->dtype), be->last_error());
        return;
    }
    ag_kernel_tensor kin[SAMPLE_MAX_INPUTS], kout = guard_output(b, in, want);
    int n_in = b->s->guard == GUARD_FILL ? 0 : sample_n_inputs(b->s);
    for (int i = 0; i < n_in; i++)
        if (b->s->guard == GUARD_BROADCAST)
            ag__kt_broadcast(in[i], kout.ndim, kout.shape, &kin[i]);
        else
            ag__kt(in[i], &kin[i]);
    size_t bytes = (size_t)meta_numel(&want->meta) * ag_dtype_size(kout.dtype);
    size_t total = bytes + 2 * GUARD_BYTES;
    unsigned char *host = malloc(total);
    void *buf = NULL;
    if (!host) {
        fail(c, "out of host memory");
        return;
    }
    for (size_t i = 0; i < total; i++) host[i] = guard_pattern(i);
    ag_attrs at = case_attrs(b);
    ag_kernel_args args = {.struct_size = sizeof args,
                           .device = dev.index,
                           .n_inputs = n_in,
                           .n_outputs = 1,
                           .inputs = kin,
                           .outputs = &kout,
                           .attrs = &at};
    const char *step = "alloc";
    ag_status st = be->alloc(dev.index, total, &buf);
    if (st == AG_OK && (step = "copy_from_host"))
        st = be->copy_from_host(dev.index, buf, 0, host, total);
    kout.data = buf;
    if (st == AG_OK && (step = "the kernel")) st = kernel(&args);
    if (st == AG_OK && (step = "synchronize")) st = be->synchronize(dev.index);
    if (st == AG_OK && (step = "copy_to_host"))
        st = be->copy_to_host(dev.index, host, buf, 0, total);
    size_t before = guard_damage(host, 0, GUARD_BYTES);
    size_t after = guard_damage(host, GUARD_BYTES + bytes, total);
    if (st != AG_OK)
        fail_why(c, "error", "kernel '%s' (%s) called directly: %s failed: %s", name,
                 ag_dtype_name(b->dtype), step, be->last_error());
    else if (before || after)
        fail_why(c, "out of bounds",
                 "kernel '%s' (%s) wrote outside its output of %zu bytes: %zu of the %d guard "
                 "bytes before it and %zu of the %d after it changed",
                 name, ag_dtype_name(b->dtype), bytes, before, GUARD_BYTES, after, GUARD_BYTES);
    else {
        /* Against the op's forward on the same device: the same bytes, or close enough. */
        values got = {.meta = want->meta, .data = host + GUARD_BYTES};
        if (memcmp(got.data, want->data, bytes) == 0 ||
            compare_by(c, "the kernel's output", &got, want, "the op's forward output"))
            set_verdict(c, PASS, NULL);
    }
    if (buf) be->free(dev.index, buf, total);
    free(host);
}

/* Backward of a forward run: gradients of sum_j sum(out_j * w_j) with fixed random w_j
 * (drawn on the cpu, moved to the output's device) w.r.t. the inputs that want one,
 * copied into r->grads. */
static ag_status case_backward(const builtin_case *b, ag_tensor *const *in, ag_tensor **out,
                               run *r) {
    ag_tensor *loss = NULL, *wrt[SAMPLE_MAX_INPUTS], *grads[SAMPLE_MAX_INPUTS];
    int n_wrt = 0, map[SAMPLE_MAX_INPUTS];
    ag_generator *gen = ag_generator_new(b->seed + 1000);
    if (!gen) return ag_last_status();
    for (int j = 0; j < b->op->n_outputs; j++) {
        if (!ag_requires_grad(out[j]) || !is_float(ag_dtype_of(out[j]))) continue;
        ag_tensor_meta m = meta_of(out[j]);
        ag_tensor *w =
            draw(gen, m.dtype, m.ndim, m.shape, -1, 1, false, b->ref, ag_device_of(out[j]));
        ag_tensor *term = ag_sum(ag_mul(out[j], w), 0, NULL, false);
        loss = loss ? ag_add(loss, term) : term;
        if (!loss) break;
    }
    ag_generator_free(gen);
    ag_status st = ag_last_status();
    if (!loss) return st; /* no output requires grad: no gradient */
    for (int i = 0; i < sample_n_inputs(b->s); i++)
        if (ag_requires_grad(in[i])) {
            map[n_wrt] = i;
            wrt[n_wrt++] = in[i];
        }
    st = ag_grad(1, &loss, n_wrt, wrt, NULL, false, false, true, grads);
    for (int k = 0; k < n_wrt && st == AG_OK; k++)
        if (grads[k]) st = to_values(grads[k], &r->grads[map[k]]);
    return st;
}

/* Runs the case on dev (forward, then backward when the op has one) into r; with guard,
 * also the guard-byte check of its kernel. */
static void run_case(const builtin_case *b, ag_device dev, cell *guard, run *r) {
    ag_tensor *in[SAMPLE_MAX_INPUTS], *out[MAX_OUTPUTS];
    memset(r, 0, sizeof *r);
    ag_clear_error();
    ag_scope *scope = ag_scope_begin();
    ag_status st = case_inputs(b, dev, in);
    for (int i = 0; i < sample_n_inputs(b->s) && st == AG_OK; i++)
        if (wants_grad(b, ag_dtype_of(in[i]), i)) st = ag_set_requires_grad(in[i], true);
    if (st == AG_OK) st = case_forward(b, dev, in, out);
    for (int j = 0; j < b->op->n_outputs && st == AG_OK; j++, r->n_out++)
        st = to_values(out[j], &r->out[j]);
    r->status = st;
    if (st != AG_OK) snprintf(r->error, sizeof r->error, "%s", ag_last_error());
    if (st == AG_OK && guard) check_guard(guard, b, dev, in, &r->out[0]);
    ag_clear_error();
    if (st == AG_OK && case_has_backward(b)) {
        r->grad_status = case_backward(b, in, out, r);
        if (r->grad_status != AG_OK)
            snprintf(r->grad_error, sizeof r->grad_error, "%s", ag_last_error());
    }
    ag_scope_end(scope);
    ag_set_default_device((ag_device){-1, -1});
    ag_clear_error();
}

static void free_run(run *r) {
    free_values(r->out, r->n_out);
    free_values(r->grads, SAMPLE_MAX_INPUTS);
}

/* The result of a call on the checked device that failed with st and error: not supported
 * for a missing kernel, else a FAIL. */
static void device_error(cell *c, ag_status st, const char *prefix, const char *error) {
    snprintf(c->message, sizeof c->message, "%s%s", prefix, error);
    set_verdict(c, st == AG_ERR_UNSUPPORTED ? SKIP : FAIL,
                st == AG_ERR_UNSUPPORTED ? "no kernel" : "error");
}

/* Forward: the same outputs as the cpu's. */
static void compare_outputs(cell *c, const builtin_case *b, const run *got, const run *want) {
    char what[32];
    if (want->status != AG_OK) {
        fail_why(c, "cpu error", "on the cpu reference: %s", want->error);
        return;
    }
    if (got->status != AG_OK) {
        device_error(c, got->status, "", got->error);
        return;
    }
    set_verdict(c, PASS, NULL);
    for (int j = 0; j < b->op->n_outputs && c->verdict == PASS; j++) {
        snprintf(what, sizeof what, "output %d", j);
        compare(c, what, &got->out[j], &want->out[j]);
    }
}

/* Backward: the same gradients as the cpu's, for each input that wants one. */
static void compare_grads(cell *c, const builtin_case *b, const run *got, const run *want) {
    char what[48];
    if (want->grad_status != AG_OK) {
        fail_why(c, "cpu error", "backward on the cpu reference: %s", want->grad_error);
        return;
    }
    if (got->grad_status != AG_OK) {
        device_error(c, got->grad_status, "", got->grad_error);
        return;
    }
    set_verdict(c, NOT_APPLICABLE, NULL); /* until a gradient is compared */
    for (int i = 0; i < sample_n_inputs(b->s) && c->verdict != FAIL; i++) {
        snprintf(what, sizeof what, "the gradient of input %d", i);
        if (!got->grads[i].data != !want->grads[i].data)
            fail_why(c, "missing", "%s is %s here but %s on the cpu", what,
                     got->grads[i].data ? "computed" : "none",
                     want->grads[i].data ? "computed" : "none");
        else if (got->grads[i].data && compare(c, what, &got->grads[i], &want->grads[i]))
            set_verdict(c, PASS, NULL);
    }
}

/* What gradcheck's function sees. */
typedef struct builtin_call {
    const builtin_case *b;
    ag_device dev;
    int output;
} builtin_call;

/* ag_gradcheck_fn: output `output` of the op. */
static ag_tensor *call_builtin(ag_tensor *const *in, void *user) {
    const builtin_call *call = user;
    ag_tensor *out[MAX_OUTPUTS];
    return case_forward(call->b, call->dev, in, out) == AG_OK ? out[call->output] : NULL;
}

/* --gradcheck: gradcheck in float64 on dev of every float output, w.r.t. the float64
 * inputs that want a gradient. Rows of other dtypes are not applicable. */
static void check_builtin_gradcheck(cell *c, const builtin_case *b, ag_device dev) {
    ag_tensor *in[SAMPLE_MAX_INPUTS], *out[MAX_OUTPUTS];
    char prefix[32] = "";
    if (b->dtype != AG_F64 || !has_backward(b->op)) return;
    ag_scope *scope = ag_scope_begin();
    ag_status st = case_inputs(b, dev, in);
    bool any = false;
    for (int i = 0; i < sample_n_inputs(b->s) && st == AG_OK; i++)
        if (ag_dtype_of(in[i]) == AG_F64 && wants_grad(b, AG_F64, i)) {
            st = ag_set_requires_grad(in[i], true);
            any = true;
        }
    bool prev = ag_set_grad_enabled(false);
    if (st == AG_OK && any) st = case_forward(b, dev, in, out);
    ag_set_grad_enabled(prev);
    if (st != AG_OK) device_error(c, st, "", ag_last_error());
    for (int j = 0; j < b->op->n_outputs && st == AG_OK && any; j++) {
        if (!is_float(ag_dtype_of(out[j]))) continue;
        builtin_call call = {b, dev, j};
        if (b->op->n_outputs > 1) snprintf(prefix, sizeof prefix, "output %d: ", j);
        set_verdict(c, PASS, NULL);
        st = ag_gradcheck(call_builtin, &call, sample_n_inputs(b->s), in, NULL);
        if (st != AG_OK) device_error(c, st, prefix, ag_last_error());
    }
    ag_scope_end(scope);
    ag_set_default_device((ag_device){-1, -1});
    ag_clear_error();
}

/* What ag_jacobian's function sees: the case, with its inputs that want a gradient taken
 * from the function's arguments and the others (indices) fixed. */
typedef struct jacobian_call {
    const builtin_case *b;
    ag_device dev;
    ag_tensor *const *fixed;      /* every input of the case */
    int which[SAMPLE_MAX_INPUTS]; /* the case's input behind argument k */
} jacobian_call;

/* ag_tensor_fn: the case's forward with inputs which[k] replaced by in[k]. */
static ag_status call_for_jacobian(void *user, int n_inputs, ag_tensor *const *in, int n_outputs,
                                   ag_tensor **out) {
    const jacobian_call *call = user;
    ag_tensor *all[SAMPLE_MAX_INPUTS];
    memcpy(all, call->fixed, (size_t)sample_n_inputs(call->b->s) * sizeof *all);
    for (int k = 0; k < n_inputs; k++) all[call->which[k]] = in[k];
    (void)n_outputs; /* the op's own count */
    return case_forward(call->b, call->dev, all, out);
}

/* --gradcheck, column jvp: the Jacobian built by forward mode (one jvp per input element,
 * the op's jvp rule) against the one built by reverse mode (one vjp per output element,
 * its backward), in float64 on dev; NMSE within float64's limit. */
static void check_builtin_jvp(cell *c, const builtin_case *b, ag_device dev) {
    if (b->dtype != AG_F64 || !has_backward(b->op)) return;
    if (!b->op->jvp) { /* plugin ops may derive it from backward; built-ins have a rule */
        fail_why(c, "no rule", "built-in op '%s' has a backward but no forward-mode rule (jvp)",
                 b->op->name);
        return;
    }
    enum { MAX_BLOCKS = MAX_OUTPUTS * SAMPLE_MAX_INPUTS };
    ag_tensor *in[SAMPLE_MAX_INPUTS], *args[SAMPLE_MAX_INPUTS];
    ag_tensor *by_rows[MAX_BLOCKS], *by_columns[MAX_BLOCKS];
    ag_scope *scope = ag_scope_begin();
    ag_status st = case_inputs(b, dev, in);
    jacobian_call call = {b, dev, in, {0}};
    int n = 0;
    for (int i = 0; i < sample_n_inputs(b->s) && st == AG_OK; i++)
        if (ag_dtype_of(in[i]) == AG_F64 && wants_grad(b, AG_F64, i)) {
            call.which[n] = i;
            args[n++] = in[i];
        }
    const int n_out = b->op->n_outputs;
    const ag_functional_options reverse = {0}, forward = {.forward_mode = true};
    if (st == AG_OK && n)
        st = ag_jacobian(call_for_jacobian, &call, n, args, n_out, &reverse, by_rows);
    if (st == AG_OK && n)
        st = ag_jacobian(call_for_jacobian, &call, n, args, n_out, &forward, by_columns);
    if (st != AG_OK) device_error(c, st, "", ag_last_error());
    for (int k = 0; k < n_out * n && st == AG_OK; k++) {
        values got, want;
        char what[96];
        snprintf(what, sizeof what, "the forward-mode Jacobian block (output %d, input %d)", k / n,
                 call.which[k % n]);
        st = to_values(by_columns[k], &got);
        if (st == AG_OK) st = to_values(by_rows[k], &want);
        if (st != AG_OK)
            device_error(c, st, "", ag_last_error());
        else if (compare_by(c, what, &got, &want, "the reverse-mode one"))
            set_verdict(c, PASS, NULL);
        else
            st = AG_ERR_GRADCHECK;
        free_values(&got, 1);
        free_values(&want, 1);
    }
    ag_scope_end(scope);
    ag_set_default_device((ag_device){-1, -1});
    ag_clear_error();
}

/* "f32 [17,33]T, i64[17] (dim 0)": the row's dtype, the inputs' shapes (with their dtype
 * where it is not the row's; T: a transposed view) and the recipe's note. */
static void builtin_label(const builtin_sample *s, ag_dtype dtype, char *buf, size_t size) {
    int n = snprintf(buf, size, "%s", short_dtype(dtype));
    for (int i = 0; i < sample_n_inputs(s) && n < (int)size; i++) {
        const sample_input *x = &s->inputs[i];
        n += snprintf(buf + n, size - (size_t)n, "%s%s", i ? ", " : " ",
                      x->dtype == SAMPLE_KEY ? "" : short_dtype((ag_dtype)x->dtype));
        if (n < (int)size) n += shape_str(x->ndim, x->shape, buf + n, size - (size_t)n);
        if (n < (int)size && x->flags & IN_TRANSPOSED)
            n += snprintf(buf + n, size - (size_t)n, "T");
    }
    if (s->note && n < (int)size) snprintf(buf + n, size - (size_t)n, " (%s)", s->note);
}

/* Whether the guard-byte check applies: the recipe says how to call the kernel, and the
 * backend has one for the row's dtype (16-bit rows of ops without a 16-bit kernel run the
 * float32 kernel through conversions: there is no kernel of theirs to call). */
static bool guarded(const builtin_case *b, ag_device dev) {
    if (b->s->guard == GUARD_NONE) return false;
    if (b->dtype != AG_F16 && b->dtype != AG_BF16) return true;
    ag_kernel_fn kernel;
    const ag_backend_iface *be = &ag__backend(dev.backend)->iface;
    bool has = be->get_kernel(b->op->kernel, b->dtype, &kernel) == AG_OK && kernel;
    be->last_error(); /* the lookup's miss is no error of the check */
    return has;
}

/* Fills one row: case b on dev against the cpu reference. */
static void check_builtin_row(row *r, const builtin_case *b, ag_device dev, bool gradcheck) {
    run want, got;
    cell *fwd = &r->cells[B_FORWARD], *bwd = &r->cells[B_BACKWARD], *guard = &r->cells[B_GUARD];
    builtin_label(b->s, b->dtype, r->sample, sizeof r->sample);
    run_case(b, b->ref, NULL, &want);
    run_case(b, dev, guarded(b, dev) && want.status == AG_OK ? guard : NULL, &got);
    compare_outputs(fwd, b, &got, &want);
    if (fwd->verdict == SKIP) {
        if (case_has_backward(b)) set_verdict(bwd, SKIP, "no kernel");
        if (guarded(b, dev)) set_verdict(guard, SKIP, "no kernel");
    } else if (fwd->verdict == PASS && case_has_backward(b))
        compare_grads(bwd, b, &got, &want);
    if (gradcheck && fwd->verdict != SKIP) {
        check_builtin_gradcheck(&r->cells[B_GRADCHECK], b, dev);
        check_builtin_jvp(&r->cells[B_JVP], b, dev);
    }
    free_run(&want);
    free_run(&got);
}

/* A FAIL row for a built-in op that ag check has no recipe for, or a recipe of no op. */
static bool missing_row(row_list *rows, const char *op, const char *reason, const char *message) {
    row *r = new_row(rows, op, (ag_device){-1, -1});
    if (!r) return false;
    snprintf(r->sample, sizeof r->sample, "-");
    fail_why(&r->cells[B_FORWARD], reason, "%s", message);
    return true;
}

/* Appends the rows of built-in op `op` on every device: one per recipe (at most
 * max_samples), dtype and device; a FAIL row when it has no recipe. */
static bool check_builtin_op(ag_op_def *op, const ag_device *devs, int n_devs, ag_device ref,
                             const options *o, row_list *rows) {
    int recipes = 0;
    char message[256];
    for (int k = 0; k < check_builtin_sample_count; k++) {
        const builtin_sample *s = &check_builtin_samples[k];
        if (strcmp(s->op, op->name) != 0) continue;
        if (o->max_samples > 0 && recipes >= o->max_samples) break;
        recipes++;
        for (int dt = 0; dt < AG_DTYPE_COUNT; dt++) {
            if (!(s->dtypes & AG_DTYPE_BIT(dt))) continue;
            builtin_case b = {op, s, (ag_dtype)dt, (uint64_t)k + 1, ref};
            for (int d = 0; d < n_devs; d++) {
                row *r = new_row(rows, op->name, devs[d]);
                if (!r) return false;
                check_builtin_row(r, &b, devs[d], o->gradcheck);
            }
        }
    }
    if (recipes) return true;
    snprintf(message, sizeof message,
             "built-in op '%s' has no sample recipe: add one to tools/check_builtin_samples.c",
             op->name);
    return missing_row(rows, op->name, "no sample", message);
}

/* Recipes naming no registered built-in op (a renamed or removed op) are FAIL rows. */
static bool check_stale_recipes(row_list *rows) {
    char message[256];
    for (int k = 0; k < check_builtin_sample_count; k++) {
        const char *name = check_builtin_samples[k].op;
        const ag_op_def *op = ag__op_find(name);
        bool reported = false;
        for (int i = 0; i < k; i++) reported |= strcmp(check_builtin_samples[i].op, name) == 0;
        if ((op && !op->plugin) || reported) continue;
        snprintf(message, sizeof message,
                 "tools/check_builtin_samples.c has a recipe for '%s', which is no built-in op",
                 name);
        if (!missing_row(rows, name, "no such op", message)) return false;
    }
    return true;
}
/* ---- composite functions ---- */

/* One composite sample in one dtype. */
typedef struct composite_case {
    const composite_sample *s;
    ag_dtype dtype;
    uint64_t seed; /* of the inputs: the same on every device */
    ag_device ref; /* the cpu reference device */
} composite_case;

static int composite_n_inputs(const composite_sample *s) {
    int n = 0;
    while (n < SAMPLE_MAX_INPUTS && s->inputs[n].present) n++;
    return n;
}

/* The case's inputs on dev (drawn on the cpu with the case's seed), float ones requiring
 * grad when `grad`. */
static ag_status composite_inputs(const composite_case *c, ag_device dev, bool grad,
                                  ag_tensor **in) {
    ag_generator *gen = ag_generator_new(c->seed);
    if (!gen) return ag_last_status();
    ag_status st = AG_OK;
    for (int i = 0; i < composite_n_inputs(c->s) && st == AG_OK; i++) {
        const sample_input *x = &c->s->inputs[i];
        const ag_dtype dtype = x->dtype == SAMPLE_KEY ? c->dtype : (ag_dtype)x->dtype;
        in[i] = draw(gen, dtype, x->ndim, x->shape, x->low, x->high, x->flags & IN_INTEGER, c->ref,
                     dev);
        st = in[i] ? AG_OK : ag_last_status();
        if (st == AG_OK && grad && is_float(dtype)) st = ag_set_requires_grad(in[i], true);
    }
    ag_generator_free(gen);
    ag_set_default_device(dev);
    return st;
}

/* Runs the case on dev: its output and the gradients of sum(out * w) (w fixed random) with
 * respect to its float inputs, copied into r. */
static void run_composite(const composite_case *c, ag_device dev, run *r) {
    ag_tensor *in[SAMPLE_MAX_INPUTS], *grads[SAMPLE_MAX_INPUTS];
    memset(r, 0, sizeof *r);
    ag_clear_error();
    ag_scope *scope = ag_scope_begin();
    ag_status st = composite_inputs(c, dev, true, in);
    ag_tensor *out = st == AG_OK ? c->s->fn(in, NULL) : NULL;
    if (st == AG_OK && !out) st = ag_last_status();
    if (st == AG_OK && (st = to_values(out, &r->out[0])) == AG_OK) r->n_out = 1;
    r->status = st;
    if (st != AG_OK) snprintf(r->error, sizeof r->error, "%s", ag_last_error());
    if (st == AG_OK && ag_requires_grad(out)) {
        ag_tensor_meta m = meta_of(out);
        ag_generator *gen = ag_generator_new(c->seed + 1000);
        ag_tensor *w = gen ? draw(gen, m.dtype, m.ndim, m.shape, -1, 1, false, c->ref, dev) : NULL;
        ag_generator_free(gen);
        ag_tensor *loss = ag_sum(ag_mul(out, w), 0, NULL, false);
        const int n = composite_n_inputs(c->s);
        st = loss ? ag_grad(1, &loss, n, in, NULL, false, false, true, grads) : ag_last_status();
        for (int i = 0; i < n && st == AG_OK; i++)
            if (grads[i]) st = to_values(grads[i], &r->grads[i]);
        r->grad_status = st;
        if (st != AG_OK) snprintf(r->grad_error, sizeof r->grad_error, "%s", ag_last_error());
    }
    ag_scope_end(scope);
    ag_set_default_device((ag_device){-1, -1});
    ag_clear_error();
}

/* --gradcheck: gradcheck (gradgrad false) or gradgradcheck of a float64 case on dev. */
static void check_composite_gradients(cell *c, const composite_case *cc, ag_device dev,
                                      bool gradgrad) {
    if (cc->dtype != AG_F64) return;
    ag_scope *scope = ag_scope_begin();
    ag_tensor *in[SAMPLE_MAX_INPUTS];
    const int n = composite_n_inputs(cc->s);
    ag_status st = composite_inputs(cc, dev, true, in);
    if (st == AG_OK)
        st = gradgrad ? ag_gradgradcheck(cc->s->fn, NULL, n, in, NULL)
                      : ag_gradcheck(cc->s->fn, NULL, n, in, NULL);
    if (st == AG_OK)
        set_verdict(c, PASS, NULL);
    else
        device_error(c, st, "", ag_last_error());
    ag_scope_end(scope);
    ag_set_default_device((ag_device){-1, -1});
    ag_clear_error();
}

/* "f32 [2,4,5,6], [4,2,3,2], [4] (groups 2)": the row's dtype, the shapes, the note. */
static void composite_label(const composite_sample *s, ag_dtype dtype, char *buf, size_t size) {
    int n = snprintf(buf, size, "%s", short_dtype(dtype));
    for (int i = 0; i < composite_n_inputs(s) && n < (int)size; i++) {
        n += snprintf(buf + n, size - (size_t)n, "%s", i ? ", " : " ");
        if (n < (int)size)
            n += shape_str(s->inputs[i].ndim, s->inputs[i].shape, buf + n, size - (size_t)n);
    }
    if (s->note && n < (int)size) snprintf(buf + n, size - (size_t)n, " (%s)", s->note);
}

/* Fills one row: composite case c on dev against the cpu reference. */
static void check_composite_row(row *r, const composite_case *c, ag_device dev, bool gradcheck) {
    run want, got;
    cell *fwd = &r->cells[C_FORWARD], *bwd = &r->cells[C_BACKWARD];
    composite_label(c->s, c->dtype, r->sample, sizeof r->sample);
    run_composite(c, c->ref, &want);
    run_composite(c, dev, &got);
    if (want.status != AG_OK)
        fail_why(fwd, "cpu error", "on the cpu reference: %s", want.error);
    else if (got.status != AG_OK)
        device_error(fwd, got.status, "", got.error);
    else if (compare(fwd, "the output", &got.out[0], &want.out[0]))
        set_verdict(fwd, PASS, NULL);
    if (fwd->verdict == PASS) {
        if (want.grad_status != AG_OK)
            fail_why(bwd, "cpu error", "backward on the cpu reference: %s", want.grad_error);
        else if (got.grad_status != AG_OK)
            device_error(bwd, got.grad_status, "", got.grad_error);
        else
            set_verdict(bwd, PASS, NULL);
        for (int i = 0; i < composite_n_inputs(c->s) && bwd->verdict == PASS; i++) {
            char what[48];
            snprintf(what, sizeof what, "the gradient of input %d", i);
            if (!got.grads[i].data != !want.grads[i].data)
                fail_why(bwd, "missing", "%s is %s here but %s on the cpu", what,
                         got.grads[i].data ? "computed" : "none",
                         want.grads[i].data ? "computed" : "none");
            else if (got.grads[i].data)
                compare(bwd, what, &got.grads[i], &want.grads[i]);
        }
    }
    if (gradcheck && fwd->verdict == PASS) {
        check_composite_gradients(&r->cells[C_GRADCHECK], c, dev, false);
        check_composite_gradients(&r->cells[C_GRADGRADCHECK], c, dev, true);
    }
    free_run(&want);
    free_run(&got);
}

/* Appends the rows of composite `name` on every device: one per sample (at most
 * max_samples), dtype and device. */
static bool check_composite(const char *name, const ag_device *devs, int n_devs, ag_device ref,
                            const options *o, row_list *rows) {
    int samples = 0;
    for (int k = 0; k < check_composite_sample_count; k++) {
        const composite_sample *s = &check_composite_samples[k];
        if (strcmp(s->name, name) != 0) continue;
        if (o->max_samples > 0 && samples >= o->max_samples) break;
        samples++;
        for (int dt = 0; dt < AG_DTYPE_COUNT; dt++) {
            if (!(s->dtypes & AG_DTYPE_BIT(dt))) continue;
            /* Seeds apart from the built-in recipes' (which count from 1). */
            composite_case c = {s, (ag_dtype)dt, 100000 + (uint64_t)k, ref};
            for (int d = 0; d < n_devs; d++) {
                row *r = new_row(rows, s->name, devs[d]);
                if (!r) return false;
                check_composite_row(r, &c, devs[d], o->gradcheck);
            }
        }
    }
    return true;
}

/* Whether name is a composite of the table. */
static bool is_composite(const char *name) {
    for (int k = 0; k < check_composite_sample_count; k++)
        if (strcmp(check_composite_samples[k].name, name) == 0) return true;
    return false;
}

/* Adds name to o's composites unless there. */
static void add_composite(options *o, const char *name) {
    for (int i = 0; i < o->n_composites; i++)
        if (strcmp(o->composites[i], name) == 0) return;
    if (o->n_composites < MAX_ARGS) o->composites[o->n_composites++] = name;
}

/* ---- output ---- */

/* The columns of a row (cell texts written into bufs); returns their number. */
static int row_columns(const table_kind *k, const row *r, char bufs[MAX_CHECKS][96],
                       const char **cols) {
    cols[0] = r->op;
    cols[1] = r->backend;
    cols[2] = r->sample;
    for (int c = 0; c < k->n_checks; c++) cols[3 + c] = cell_text(k, &r->cells[c], bufs[c], 96);
    return 3 + k->n_checks;
}

/* Prints a table, the messages behind failures and skips, and the summary; returns the
 * number of failed checks. */
static int report(const table_kind *k, const row_list *l) {
    const char *header[3 + MAX_CHECKS] = {"op", "backend", "sample"}, *cols[3 + MAX_CHECKS];
    char bufs[MAX_CHECKS][96];
    int width[3 + MAX_CHECKS], counts[N_VERDICTS] = {0}, n_cols = 3 + k->n_checks;
    for (int c = 0; c < k->n_checks; c++) header[3 + c] = k->checks[c];
    for (int c = 0; c < n_cols; c++) width[c] = (int)strlen(header[c]);
    for (int i = 0; i < l->n; i++) {
        row_columns(k, &l->rows[i], bufs, cols);
        for (int c = 0; c < n_cols; c++)
            if ((int)strlen(cols[c]) > width[c]) width[c] = (int)strlen(cols[c]);
    }
    if (k->title) printf("%s:\n", k->title);
    for (int i = -1; i < l->n; i++) {
        if (i >= 0) row_columns(k, &l->rows[i], bufs, cols);
        for (int c = 0; c < n_cols; c++)
            printf(c < n_cols - 1 ? "%-*s  " : "%-*s\n", c < n_cols - 1 ? width[c] : 0,
                   i < 0 ? header[c] : cols[c]);
    }
    bool titled = false;
    for (int i = 0; i < l->n; i++)
        for (int c = 0; c < k->n_checks; c++) {
            const cell *x = &l->rows[i].cells[c];
            counts[x->verdict]++;
            if (!x->message[0]) continue;
            if (!titled) printf("\ndetails:\n");
            titled = true;
            printf("  %s on %s, sample %s, %s:\n    %s\n", l->rows[i].op, l->rows[i].backend,
                   l->rows[i].sample, k->checks[c], x->message);
        }
    printf("\n%s%s%d row%s, %d checks:", k->title ? k->title : "", k->title ? ": " : "", l->n,
           l->n == 1 ? "" : "s", l->n * k->n_checks);
    for (int v = 0, shown = 0; v < N_VERDICTS; v++)
        if (k->counted[v]) printf("%s %d %s", shown++ ? "," : "", counts[v], k->counted[v]);
    printf("\n");
    return counts[FAIL];
}

/* Writes s as a CSV field (quoted, quotes doubled). */
static void csv_field(FILE *f, const char *s, const char *end) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fprintf(f, "\"%s", end);
}

/* Appends one line per cell of a table to f. */
static void csv_rows(FILE *f, const table_kind *k, const row_list *l) {
    for (int i = 0; i < l->n; i++)
        for (int c = 0; c < k->n_checks; c++) {
            const row *r = &l->rows[i];
            const cell *x = &r->cells[c];
            const char *fields[] = {k->name,   r->op,        r->backend,
                                    r->sample, k->checks[c], k->words[x->verdict],
                                    x->reason};
            for (size_t j = 0; j < sizeof fields / sizeof fields[0]; j++)
                csv_field(f, fields[j], ",");
            csv_field(f, x->message, "\n");
        }
}

/* --csv: writes both tables; false (after saying why) when the file cannot be written. */
static bool write_csv(const char *path, const table_kind *kinds, const row_list *lists, int n) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "ag check: cannot write %s: %s\n", path, strerror(errno));
        return false;
    }
    fprintf(f, "table,op,backend,sample,check,result,reason,message\n");
    for (int t = 0; t < n; t++) csv_rows(f, &kinds[t], &lists[t]);
    if (fclose(f) != 0) {
        fprintf(stderr, "ag check: cannot write %s: %s\n", path, strerror(errno));
        return false;
    }
    return true;
}

/* ---- choosing ops and devices ---- */

/* Full names of every loaded plugin op in load order (malloc'd array of borrowed names;
 * NULL when there are none or memory runs out). */
static const char **plugin_op_names(int *n) {
    int total = 0, ops;
    const char *name, *path, *version;
    *n = 0;
    for (int i = 0; i < ag_plugin_count(); i++)
        if (ag_plugin_describe(i, &name, &path, &version, &ops) == AG_OK) total += ops;
    const char **names = total ? malloc((size_t)total * sizeof *names) : NULL;
    for (int i = 0; names && i < ag_plugin_count(); i++)
        for (int j = 0; *n < total && ag_plugin_op_name(i, j); j++)
            names[(*n)++] = ag_plugin_op_name(i, j);
    return names;
}

/* Prints the ops --op may name, after an unknown or ambiguous name. */
static void list_ops(const char **names, int n) {
    if (!n)
        fprintf(stderr, "no plugin op is loaded (give --plugin PATH or set AG_PLUGINS)\n");
    else {
        fprintf(stderr, "plugin ops:");
        for (int i = 0; i < n; i++) fprintf(stderr, " %s", names[i]);
        fprintf(stderr, "\n");
    }
    fprintf(stderr, "built-in ops:");
    for (int i = 0; i < ag__op_count(); i++)
        if (!ag__op_at(i)->plugin) fprintf(stderr, " %s", ag__op_at(i)->name);
    fprintf(stderr, "\ncomposite functions:");
    for (int k = 0; k < check_composite_sample_count; k++)
        if (k == 0 || strcmp(check_composite_samples[k - 1].name, check_composite_samples[k].name))
            fprintf(stderr, " %s", check_composite_samples[k].name);
    fprintf(stderr, "\n");
}

/* Resolves --op NAME among the plugin ops: a name with "::" must match exactly; a bare name
 * matches the one op whose part after "::" equals it ("swish" → "swish::swish"). Returns the
 * full name, or NULL after printing why (unknown, ambiguous). */
static const char *resolve(const char *want, const char **names, int n) {
    const char *found = NULL;
    int matches = 0;
    bool bare = !strstr(want, "::");
    for (int i = 0; i < n; i++) {
        const char *sep = strstr(names[i], "::");
        if (strcmp(bare && sep ? sep + 2 : names[i], want) != 0) continue;
        if (matches++ == 0) found = names[i];
    }
    if (matches == 1) return found;
    if (matches > 1) {
        fprintf(stderr, "ag check: op '%s' is ambiguous; name one of:", want);
        for (int i = 0; i < n; i++) {
            const char *sep = strstr(names[i], "::");
            if (sep && strcmp(sep + 2, want) == 0) fprintf(stderr, " %s", names[i]);
        }
        fprintf(stderr, "\n");
        return NULL;
    }
    fprintf(stderr, "ag check: unknown op '%s'\n", want);
    list_ops(names, n);
    return NULL;
}

/* The ops to check: *targets the plugin ops (malloc'd, no repeats), builtins the built-in
 * ops (no repeats). --op names them; without --op, every plugin op, and every built-in op
 * unless --plugin was given. Returns -1 to go on, else the exit status. */
static int pick_ops(options *o, target **targets, int *n_targets, ag_op_def **builtins,
                    int *n_builtins) {
    int n_names;
    const char **names = plugin_op_names(&n_names);
    int rc = -1, n_want = o->n_ops ? o->n_ops : n_names;
    *n_targets = *n_builtins = 0;
    *targets = malloc((size_t)(n_want ? n_want : 1) * sizeof **targets);
    if (!*targets || (n_names && !names)) {
        fprintf(stderr, "ag check: out of memory\n");
        rc = 1;
    }
    for (int i = 0; rc < 0 && !o->n_ops && !o->n_plugins && i < ag__op_count(); i++)
        if (!ag__op_at(i)->plugin) builtins[(*n_builtins)++] = ag__op_at(i);
    for (int k = 0; rc < 0 && !o->n_ops && !o->n_plugins && k < check_composite_sample_count; k++)
        add_composite(o, check_composite_samples[k].name);
    for (int k = 0; k < n_want && rc < 0; k++) {
        ag_op_def *def = o->n_ops ? ag__op_find(o->ops[k]) : NULL;
        if (!def && o->n_ops && is_composite(o->ops[k])) {
            add_composite(o, o->ops[k]);
            continue;
        }
        if (def && !def->plugin) {
            bool seen = false;
            for (int i = 0; i < *n_builtins; i++) seen |= builtins[i] == def;
            if (!seen) builtins[(*n_builtins)++] = def;
            continue;
        }
        const char *name = o->n_ops ? resolve(o->ops[k], names, n_names) : names[k];
        bool seen = false;
        for (int i = 0; name && i < *n_targets; i++) seen |= strcmp((*targets)[i].name, name) == 0;
        if (!name)
            rc = 2;
        else if (!seen) {
            target *t = &(*targets)[(*n_targets)++];
            t->name = name;
            t->op = ag_op_find(name); /* a loaded plugin's op: registered, declared */
            t->decl = ag_op_plugin_decl(t->op);
        }
    }
    if (rc < 0 && !*n_targets && !*n_builtins && !o->n_composites) {
        fprintf(stderr, "ag check: nothing to check\n");
        rc = 2;
    }
    free(names);
    return rc;
}

/* Fills devs with the devices to check on: those of --backend, else device 0 of every
 * backend that loads. Returns -1 to go on, else the exit status. */
static int pick_devices(const options *o, ag_device *devs, int *n_devs) {
    *n_devs = 0;
    if (!o->n_backends) {
        ag_tool_load_all_backends();
        for (int b = 0; b < ag_backend_count(); b++) devs[(*n_devs)++] = (ag_device){b, 0};
        return -1;
    }
    for (int k = 0; k < o->n_backends; k++) {
        ag_device dev;
        ag_status st = ag_device_parse(o->backends[k], &dev);
        if (st != AG_OK) {
            fprintf(stderr, "ag check: --backend %s: %s\n", o->backends[k], ag_last_error());
            return st == AG_ERR_INVALID_ARG ? 2 : 1;
        }
        bool seen = false;
        for (int i = 0; i < *n_devs; i++)
            seen |= devs[i].backend == dev.backend && devs[i].index == dev.index;
        if (!seen) devs[(*n_devs)++] = dev;
    }
    return -1;
}

/* Appends optarg to one of the repeatable options' lists; false (after saying why) when
 * it is full. */
static bool append(const char **list, int *n, const char *option) {
    if (*n == MAX_ARGS) {
        fprintf(stderr, "ag check: at most %d %s options\n", MAX_ARGS, option);
        return false;
    }
    list[(*n)++] = optarg;
    return true;
}

/* Parses the command line into o; returns -1 to go on, else the exit status. */
static int parse(int argc, char **argv, options *o) {
    static const struct option long_options[] = {
        {"plugin", required_argument, NULL, 'p'},  {"op", required_argument, NULL, 'o'},
        {"backend", required_argument, NULL, 'b'}, {"samples", required_argument, NULL, 's'},
        {"gradcheck", no_argument, NULL, 'g'},     {"csv", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},          {0}};
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "p:o:b:s:gc:h", long_options, NULL)) != -1) {
        switch (c) {
        case 'p':
            if (!append(o->plugins, &o->n_plugins, "--plugin")) return 2;
            break;
        case 'o':
            if (!append(o->ops, &o->n_ops, "--op")) return 2;
            break;
        case 'b':
            if (!append(o->backends, &o->n_backends, "--backend")) return 2;
            break;
        case 's':
            o->max_samples = (int)strtol(optarg, &end, 10);
            if (*end || end == optarg || o->max_samples < 1) {
                fprintf(stderr, "ag check: --samples needs a whole number >= 1, not '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case 'g':
            o->gradcheck = true;
            break;
        case 'c':
            o->csv_path = optarg;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            fputs(usage_text, stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ag check: unexpected argument '%s'\n%s", argv[optind], usage_text);
        return 2;
    }
    return -1;
}

/* Runs every check: plugin rows into lists[0], built-in rows into lists[1], composite rows
 * into lists[2]. False when memory runs out. */
static bool run_checks(const options *o, const target *targets, int n_targets,
                       ag_op_def *const *builtins, int n_builtins, const ag_device *devs,
                       int n_devs, ag_device ref, row_list *lists) {
    for (int i = 0; i < n_targets; i++)
        for (int k = 0; k < n_devs; k++)
            if (!check_op(&targets[i], devs[k], ref, o->max_samples, &lists[0])) return false;
    bool tty = isatty(STDERR_FILENO);
    for (int i = 0; i < n_builtins; i++) {
        /* Device kernels may compile on first use: show where a slow run is. */
        if (tty)
            fprintf(stderr, "\r\033[Kchecking %s (%d/%d)", builtins[i]->name, i + 1, n_builtins);
        if (!check_builtin_op(builtins[i], devs, n_devs, ref, o, &lists[1])) return false;
    }
    for (int i = 0; i < o->n_composites; i++) {
        if (tty)
            fprintf(stderr, "\r\033[Kchecking %s (composite %d/%d)", o->composites[i], i + 1,
                    o->n_composites);
        if (!check_composite(o->composites[i], devs, n_devs, ref, o, &lists[2])) return false;
    }
    if (tty && (n_builtins || o->n_composites)) fprintf(stderr, "\r\033[K");
    /* Checking every built-in op: stale recipes too. */
    return o->n_ops || o->n_plugins || check_stale_recipes(&lists[1]);
}

/* `ag check`: see the comment at the top of this file and the usage text. */
int ag_cmd_check(int argc, char **argv) {
    options o = {0};
    target *targets = NULL;
    ag_device devs[MAX_ARGS > AG_MAX_BACKENDS ? MAX_ARGS : AG_MAX_BACKENDS], ref;
    int n_targets = 0, n_builtins = 0, n_devs = 0, rc = parse(argc, argv, &o);
    if (rc >= 0) return rc;
    /* A missing kernel must show as such, not run on the cpu (core/dispatch.c). */
    unsetenv("AG_CPU_FALLBACK");
    if (ag_init() != AG_OK || ag_device_parse("cpu", &ref) != AG_OK) {
        fprintf(stderr, "ag check: %s\n", ag_last_error());
        return 1;
    }
    for (int i = 0; i < o.n_plugins; i++)
        if (ag_plugin_load(o.plugins[i]) != AG_OK) {
            fprintf(stderr, "ag check: %s\n", ag_last_error());
            return 1;
        }
    int cap = ag__op_count() > MAX_ARGS ? ag__op_count() : MAX_ARGS;
    ag_op_def **builtins = malloc((size_t)cap * sizeof *builtins);
    if (!builtins) {
        fprintf(stderr, "ag check: out of memory\n");
        return 1;
    }
    table_kind kinds[3] = {plugin_table, builtin_table, composite_table};
    row_list lists[3] = {{0}};
    if (o.gradcheck) kinds[1].n_checks = 5; /* gradcheck and jvp */
    if (o.gradcheck) kinds[2].n_checks = 4; /* gradcheck and gradgradcheck */
    rc = pick_ops(&o, &targets, &n_targets, builtins, &n_builtins);
    if (rc < 0) rc = pick_devices(&o, devs, &n_devs);
    if (rc < 0 && !n_devs) {
        fprintf(stderr, "ag check: no backend to check on\n");
        rc = 1;
    }
    if (rc < 0 &&
        !run_checks(&o, targets, n_targets, builtins, n_builtins, devs, n_devs, ref, lists)) {
        fprintf(stderr, "ag check: out of memory\n");
        rc = 1;
    }
    if (rc < 0) {
        int failed = 0;
        if ((n_builtins || o.n_composites) && n_targets) kinds[0].title = "plugin ops";
        for (int t = 0; t < 3; t++)
            if (lists[t].n) failed += report(&kinds[t], &lists[t]);
        rc = failed ? 1 : 0;
        if (o.csv_path && !write_csv(o.csv_path, kinds, lists, 3)) rc = 1;
    }
    /* Work still queued on a device finishes before the process exits. */
    for (int k = 0; k < n_devs; k++) ag_synchronize(devs[k]);
    free(lists[0].rows);
    free(lists[1].rows);
    free(lists[2].rows);
    free(builtins);
    free(targets);
    return rc;
}
