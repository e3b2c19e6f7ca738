/* `ag check`: runs plugin ops on sample inputs on every available backend and checks the
 * forward (the shapes and dtypes the shape rule declares, no NaN/Inf), gradcheck in float64
 * and gradgradcheck (or, for a once-differentiable backward, that a double backward fails
 * with PyTorch's error). Prints one row per op, backend and sample, then the failures and a
 * summary. Exit status: 0 when nothing failed, 1 on a failure, 2 on a usage error.
 * docs/writing-a-plugin.md describes it from a plugin author's side. */
#include <getopt.h>
#include <glob.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ag/plugin.h"
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

typedef enum { PASS, FAIL, SKIP } verdict;

/* The outcome of one check. */
typedef struct cell {
    verdict verdict;
    char reason[64];    /* shown in the table as pass(reason) or skip(reason), if set */
    char message[1024]; /* the error behind a FAIL (or a skip), printed below the table */
} cell;

enum { FORWARD, GRADCHECK, GRADGRADCHECK, N_CHECKS };
static const char *const check_names[N_CHECKS] = {"forward", "gradcheck", "gradgradcheck"};

/* One op on one device with one sample. */
typedef struct row {
    const char *op;   /* full op name (borrowed from the registry) */
    char backend[32]; /* "cpu:0" */
    char sample[160]; /* "0: f32[3,4]" (declared sample 0) or "gen: f32[3,4]" */
    cell cells[N_CHECKS];
} row;

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
    int max_samples; /* --samples; 0: every declared sample */
} options;

static const char usage_text[] =
    "usage: ag check [--plugin PATH]... [--op NAME]... [--backend NAME[:INDEX]]... "
    "[--samples N]\n"
    "Checks plugin ops (those of --plugin files and of AG_PLUGINS): forward, gradcheck in\n"
    "float64 and gradgradcheck, on each sample the op declares (or one generated from its\n"
    "schema), on each backend (default: device 0 of every backend that loads).\n"
    "  --plugin PATH   load a plugin file (repeatable)\n"
    "  --op NAME       check only this op (repeatable; default: every plugin op). NAME is\n"
    "                  the full name \"ns::name\", or a bare name that one plugin op ends in\n"
    "  --backend NAME  check on this backend or device, e.g. cpu, cpu:1 (repeatable)\n"
    "  --samples N     check at most the first N samples of each op\n"
    "Exit status: 0 all passed (skips allowed), 1 a check failed, 2 usage error.\n";

/* ---- results ---- */

static void set_verdict(cell *c, verdict v, const char *reason) {
    c->verdict = v;
    snprintf(c->reason, sizeof c->reason, "%s", reason ? reason : "");
}

/* Marks a check failed with a printf-style message. */
static void __attribute__((format(printf, 2, 3))) fail(cell *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof c->message, fmt, ap);
    va_end(ap);
    set_verdict(c, FAIL, NULL);
}

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

/* "pass", "FAIL", "skip(reason)". */
static const char *cell_text(const cell *c, char *buf, size_t size) {
    static const char *const words[] = {"pass", "FAIL", "skip"};
    if (c->reason[0])
        snprintf(buf, size, "%s(%s)", words[c->verdict], c->reason);
    else
        snprintf(buf, size, "%s", words[c->verdict]);
    return buf;
}

/* ---- tensors ---- */

static bool is_float(ag_dtype dtype) {
    return dtype == AG_F32 || dtype == AG_F64;
}

/* Input i gets a gradient: a float input the op does not declare non-differentiable. */
static bool differentiable(const ag_plugin_op *d, ag_dtype dtype, int i) {
    return is_float(dtype) && !(d->nondiff_inputs >> i & 1u);
}

/* Writes "f32[3,4]" into buf; returns the length written. */
static int meta_str(const ag_tensor_meta *m, char *buf, size_t size) {
    static const char *const short_names[] = {"f32", "f64", "i64"};
    int n = snprintf(buf, size, "%s[",
                     (unsigned)m->dtype < 3 ? short_names[m->dtype] : ag_dtype_name(m->dtype));
    for (int i = 0; i < m->ndim && n < (int)size; i++)
        n += snprintf(buf + n, size - (size_t)n, i ? ",%lld" : "%lld", (long long)m->shape[i]);
    if (n < (int)size) n += snprintf(buf + n, size - (size_t)n, "]");
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

/* Fills one row: the op on the current default device with sample s. */
static void check_sample(row *r, const target *t, const ag_plugin_sample *s, uint64_t seed) {
    ag_tensor *in[AG_PLUGIN_MAX_IO];
    ag_dtype dtypes[AG_PLUGIN_MAX_IO];
    for (int i = 0; i < s->n_inputs; i++) dtypes[i] = s->inputs[i].dtype;
    ag_scope *scope = ag_scope_begin();
    if (make_inputs(s, dtypes, seed, in) != AG_OK)
        fail(&r->cells[FORWARD], "inputs: %s", ag_last_error());
    else
        check_forward(&r->cells[FORWARD], t, s, in);
    ag_clear_error();
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

/* Rows an op gives per device: its samples (at most max_samples if > 0), or the generated
 * one. */
static int rows_per_device(const ag_plugin_op *d, int max_samples) {
    int n = has_samples(d) ? d->n_samples : 1;
    return max_samples > 0 && n > max_samples ? max_samples : n;
}

/* Appends the rows of one op on one device: one per sample checked. */
static void check_op(const target *t, ag_device dev, int max_samples, row *rows, int *n_rows) {
    const ag_plugin_op *d = t->decl;
    ag_plugin_sample generated;
    char why[64], tag[16];
    for (int k = 0; k < rows_per_device(d, max_samples); k++) {
        row *r = &rows[(*n_rows)++];
        memset(r, 0, sizeof *r);
        r->op = t->name;
        ag_device_str(dev, r->backend, sizeof r->backend);
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
        check_sample(r, t, s, (uint64_t)k + 1);
        ag_set_default_device((ag_device){-1, -1});
    }
}

/* ---- output ---- */

/* The six columns of a row (cell texts written into bufs). */
static void row_columns(const row *r, char bufs[N_CHECKS][96], const char **cols) {
    cols[0] = r->op;
    cols[1] = r->backend;
    cols[2] = r->sample;
    for (int c = 0; c < N_CHECKS; c++) cols[3 + c] = cell_text(&r->cells[c], bufs[c], 96);
}

/* Prints the table, the messages behind failures and skips, and the summary; returns the
 * number of failed checks. */
static int report(const row *rows, int n_rows) {
    const char *header[6] = {"op", "backend", "sample", "forward", "gradcheck", "gradgradcheck"};
    const char *cols[6];
    char bufs[N_CHECKS][96];
    int width[6], counts[3] = {0};
    for (int c = 0; c < 6; c++) width[c] = (int)strlen(header[c]);
    for (int i = 0; i < n_rows; i++) {
        row_columns(&rows[i], bufs, cols);
        for (int c = 0; c < 6; c++)
            if ((int)strlen(cols[c]) > width[c]) width[c] = (int)strlen(cols[c]);
    }
    for (int i = -1; i < n_rows; i++) {
        if (i >= 0) row_columns(&rows[i], bufs, cols);
        for (int c = 0; c < 6; c++)
            printf(c < 5 ? "%-*s  " : "%-*s\n", c < 5 ? width[c] : 0, i < 0 ? header[c] : cols[c]);
    }
    bool titled = false;
    for (int i = 0; i < n_rows; i++)
        for (int c = 0; c < N_CHECKS; c++) {
            const cell *x = &rows[i].cells[c];
            counts[x->verdict]++;
            if (!x->message[0]) continue;
            if (!titled) printf("\ndetails:\n");
            titled = true;
            printf("  %s on %s, sample %s, %s:\n    %s\n", rows[i].op, rows[i].backend,
                   rows[i].sample, check_names[c], x->message);
        }
    printf("\n%d row%s, %d checks: %d passed, %d failed, %d skipped\n", n_rows,
           n_rows == 1 ? "" : "s", n_rows * N_CHECKS, counts[PASS], counts[FAIL], counts[SKIP]);
    return counts[FAIL];
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

/* Prints the plugin ops --op may name, after an unknown or ambiguous name. */
static void list_ops(const char **names, int n) {
    if (!n) {
        fprintf(stderr, "no plugin op is loaded (give --plugin PATH or set AG_PLUGINS)\n");
        return;
    }
    fprintf(stderr, "available ops:");
    for (int i = 0; i < n; i++) fprintf(stderr, " %s", names[i]);
    fprintf(stderr, "\n");
}

/* Resolves --op NAME among the plugin ops: a name with "::" must match exactly; a bare name
 * matches the one op whose part after "::" equals it ("swish" → "swish::swish"). Returns the
 * full name, or NULL after printing why (unknown, ambiguous, built-in). */
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
    if (ag_op_find(want))
        fprintf(stderr, "ag check: '%s' is a built-in op; ag check covers plugin ops\n", want);
    else
        fprintf(stderr, "ag check: unknown op '%s'\n", want);
    ag_clear_error();
    list_ops(names, n);
    return NULL;
}

/* Sets *targets to the ops to check (--op, else every plugin op; malloc'd, no repeats);
 * returns -1 to go on, else the exit status. */
static int pick_ops(const options *o, target **targets, int *n_targets) {
    int n_names;
    const char **names = plugin_op_names(&n_names);
    int rc = -1, n_want = o->n_ops ? o->n_ops : n_names;
    *n_targets = 0;
    *targets = n_want ? malloc((size_t)n_want * sizeof **targets) : NULL;
    if (!n_want) {
        fprintf(stderr, "ag check: nothing to check: ");
        list_ops(names, n_names);
        rc = 2;
    } else if (!*targets || (n_names && !names)) {
        fprintf(stderr, "ag check: out of memory\n");
        rc = 1;
    }
    for (int k = 0; k < n_want && rc < 0; k++) {
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
    free(names);
    return rc;
}

/* Loads every backend found on the search path (each libag_backend_<name>.so), reporting
 * those that do not load; they are skipped. */
static void load_all_backends(void) {
    char dirs[8192], pattern[4200];
    glob_t g = {0};
    int flags = 0;
    if (ag__backend_search_dirs(dirs, sizeof dirs) != AG_OK) return;
    for (char *save, *dir = strtok_r(dirs, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        snprintf(pattern, sizeof pattern, "%s/libag_backend_*.so", dir);
        if (glob(pattern, flags, NULL, &g) == 0) flags = GLOB_APPEND;
    }
    for (size_t i = 0; flags && i < g.gl_pathc; i++) {
        char name[64];
        const char *base = strrchr(g.gl_pathv[i], '/') + 1 + strlen("libag_backend_");
        int len = (int)(strlen(base) - strlen(".so")), index;
        snprintf(name, sizeof name, "%.*s", len, base);
        bool seen = false; /* the same name in an earlier directory was tried already */
        for (size_t k = 0; k < i; k++)
            seen |= strcmp(strrchr(g.gl_pathv[k], '/'), strrchr(g.gl_pathv[i], '/')) == 0;
        if (!seen && ag_backend_load(name, &index) != AG_OK)
            printf("backend %s skipped: %s\n", name, ag_last_error());
        ag_clear_error();
    }
    if (flags) globfree(&g);
}

/* Fills devs with the devices to check on: those of --backend, else device 0 of every
 * backend that loads. Returns -1 to go on, else the exit status. */
static int pick_devices(const options *o, ag_device *devs, int *n_devs) {
    *n_devs = 0;
    if (!o->n_backends) {
        load_all_backends();
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
        {"help", no_argument, NULL, 'h'},          {0}};
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "p:o:b:s:h", long_options, NULL)) != -1) {
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

/* `ag check`: see the comment at the top of this file and the usage text. */
int ag_cmd_check(int argc, char **argv) {
    options o = {0};
    target *targets = NULL;
    ag_device devs[MAX_ARGS > AG_MAX_BACKENDS ? MAX_ARGS : AG_MAX_BACKENDS];
    int n_targets = 0, n_devs = 0, rc = parse(argc, argv, &o);
    if (rc >= 0) return rc;
    if (ag_init() != AG_OK) {
        fprintf(stderr, "ag check: %s\n", ag_last_error());
        return 1;
    }
    for (int i = 0; i < o.n_plugins; i++)
        if (ag_plugin_load(o.plugins[i]) != AG_OK) {
            fprintf(stderr, "ag check: %s\n", ag_last_error());
            return 1;
        }
    rc = pick_ops(&o, &targets, &n_targets);
    if (rc < 0) rc = pick_devices(&o, devs, &n_devs);
    int n_rows = 0, cap = 0;
    for (int i = 0; rc < 0 && i < n_targets; i++)
        cap += rows_per_device(targets[i].decl, o.max_samples) * n_devs;
    row *rows = rc < 0 && cap ? malloc((size_t)cap * sizeof *rows) : NULL;
    if (rc < 0 && !rows) {
        fprintf(stderr, "ag check: %s\n", cap ? "out of memory" : "no backend to check on");
        rc = 1;
    }
    for (int i = 0; rc < 0 && i < n_targets; i++)
        for (int k = 0; k < n_devs; k++)
            check_op(&targets[i], devs[k], o.max_samples, rows, &n_rows);
    if (rc < 0) rc = report(rows, n_rows) ? 1 : 0;
    free(rows);
    free(targets);
    return rc;
}
