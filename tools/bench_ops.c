/* Op-level workloads of `ag bench` (tools/bench.h): matmul, add, mul, gelu, sum, softmax,
 * layer_norm, cross_entropy and the AdamW update, each timed forward (grad mode off) and
 * forward + backward (grad recorded, backward from a gradient of ones, gradients dropped
 * after each call), with the hardware reference of the same run beside them: the vendor
 * gemm of the backend ("ag_reference_gemm", include/ag/backend.h) for matmul, a plain copy
 * of the same number of bytes (memcpy on host memory, the backend's copy_device otherwise)
 * for the memory-bound ops. docs/bench.md explains the numbers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ag/optim.h"
#include "bench.h"
#include "internal.h"

/* Default square matmul sizes, the §P layers' products at batch 128 (m, k, n), and the
 * default element counts of the other ops (in cache, in the last-level cache, in DRAM). */
static const int64_t default_squares[] = {128, 256, 512, 1024, 2048};
static const int64_t p_shapes[][3] = {{128, 784, 512}, {128, 512, 512}, {128, 512, 10}};
static const int64_t default_counts[] = {65536, 1048576, 16777216};
#define N_SQUARES  (int)(sizeof default_squares / sizeof *default_squares)
#define N_P_SHAPES (int)(sizeof p_shapes / sizeof *p_shapes)
#define N_COUNTS   (int)(sizeof default_counts / sizeof *default_counts)

/* Row length of the row-wise ops (softmax, layer_norm, cross_entropy classes). */
#define ROW 1024
/* Most tensors a case holds. */
#define MAX_INPUTS 3
/* Most cached reference measurements per backend. */
#define MAX_REFERENCES 64

/* The passes of a cell, as the records name them. */
enum { PASS_FORWARD, PASS_BACKWARD, N_PASSES };

typedef struct op_case op_case;

/* An op-level workload. */
typedef struct op_kind {
    const char *name;  /* --ops and CSV name */
    bool matmul;       /* measured in GFLOP/s against the vendor gemm; else GB/s */
    bool rows;         /* works on rows of ROW elements (size printed as rows x ROW) */
    double traffic[2]; /* nominal elements read + written per element: forward (update),
                        * forward + backward; 0: no backward */
    ag_status (*setup)(op_case *c);    /* makes the inputs */
    ag_tensor *(*forward)(op_case *c); /* the op; NULL: the optimizer update */
} op_kind;

/* One workload at one size on one device. */
struct op_case {
    const op_kind *kind;
    ag_dtype dtype;
    int64_t m, k, n;           /* matmul: [m, k] @ [k, n] */
    int64_t rows, cols;        /* the others: rows x cols elements */
    ag_generator *gen;         /* seed 0 */
    int n_in;                  /* entries of in */
    ag_tensor *in[MAX_INPUTS]; /* inputs, in the op's order */
    ag_tensor *grad_out;       /* backward's incoming gradient; NULL for a scalar output */
    ag_optimizer *opt;         /* AdamW over in[0] */
};

/* Appends a standard normal input of the case's dtype; requiring grad when rg. */
static ag_status add_randn(op_case *c, int ndim, const int64_t *shape, bool rg) {
    ag_tensor *t = ag_randn(c->gen, c->dtype, ndim, shape);
    if (!t) return ag_last_status();
    c->in[c->n_in++] = t;
    return rg ? ag_set_requires_grad(t, true) : AG_OK;
}

/* matmul: a [m, k], b [k, n]. */
static ag_status setup_matmul(op_case *c) {
    ag_status st = add_randn(c, 2, (int64_t[]){c->m, c->k}, true);
    return st == AG_OK ? add_randn(c, 2, (int64_t[]){c->k, c->n}, true) : st;
}

/* add, mul: two vectors. */
static ag_status setup_binary(op_case *c) {
    const int64_t n = c->rows * c->cols;
    ag_status st = add_randn(c, 1, &n, true);
    return st == AG_OK ? add_randn(c, 1, &n, true) : st;
}

/* gelu, sum, softmax: one [rows, cols] tensor. */
static ag_status setup_unary(op_case *c) {
    return add_randn(c, 2, (int64_t[]){c->rows, c->cols}, true);
}

/* layer_norm: x [rows, cols], weight ones and bias zeros [cols], all requiring grad. */
static ag_status setup_layer_norm(op_case *c) {
    ag_status st = setup_unary(c);
    ag_tensor *w = st == AG_OK ? ag_ones(c->dtype, 1, &c->cols) : NULL;
    if (w) c->in[c->n_in++] = w;
    ag_tensor *b = w ? ag_zeros(c->dtype, 1, &c->cols) : NULL;
    if (b) c->in[c->n_in++] = b;
    if (!b) return ag_last_status();
    st = ag_set_requires_grad(w, true);
    return st == AG_OK ? ag_set_requires_grad(b, true) : st;
}

/* cross_entropy: logits [rows, cols], int64 targets [rows] (row i: class i % cols). */
static ag_status setup_cross_entropy(op_case *c) {
    ag_status st = setup_unary(c);
    int64_t *labels = st == AG_OK ? malloc((size_t)c->rows * sizeof *labels) : NULL;
    if (!labels) return st == AG_OK ? AG_ERR_OUT_OF_MEMORY : st;
    for (int64_t i = 0; i < c->rows; i++) labels[i] = i % c->cols;
    ag_tensor *y = ag_from_i64(labels, 1, &c->rows);
    free(labels);
    if (!y) return ag_last_status();
    c->in[c->n_in++] = y;
    return AG_OK;
}

/* adamw: a parameter with a gradient, and AdamW (PyTorch's defaults) over it. */
static ag_status setup_adamw(op_case *c) {
    const int64_t n = c->rows * c->cols;
    ag_status st = add_randn(c, 1, &n, true);
    ag_tensor *g = st == AG_OK ? ag_randn(c->gen, c->dtype, 1, &n) : NULL;
    st = g ? ag_set_grad(c->in[0], g) : ag_last_status();
    ag_release(g);
    const ag_adam_options adamw = ag_adamw_defaults();
    const ag_named_tensor param = {"param", c->in[0]};
    if (st == AG_OK) c->opt = ag_adamw_new(1, &param, &adamw);
    return st == AG_OK && !c->opt ? ag_last_status() : st;
}

/* The forward of each op on the case's inputs. */
static ag_tensor *fwd_matmul(op_case *c) {
    return ag_matmul(c->in[0], c->in[1]);
}
static ag_tensor *fwd_add(op_case *c) {
    return ag_add(c->in[0], c->in[1]);
}
static ag_tensor *fwd_mul(op_case *c) {
    return ag_mul(c->in[0], c->in[1]);
}
static ag_tensor *fwd_gelu(op_case *c) {
    return ag_gelu(c->in[0], false);
}
static ag_tensor *fwd_sum(op_case *c) {
    return ag_sum(c->in[0], 0, NULL, false);
}
static ag_tensor *fwd_softmax(op_case *c) {
    return ag_softmax(c->in[0], -1);
}
static ag_tensor *fwd_layer_norm(op_case *c) {
    return ag_layer_norm(c->in[0], 1, c->in[1], c->in[2], 1e-5);
}
static ag_tensor *fwd_cross_entropy(op_case *c) {
    const ag_cross_entropy_options options = ag_cross_entropy_defaults();
    return ag_cross_entropy(c->in[0], c->in[1], &options);
}

/* The workloads, in report order. Traffic counts what a fused implementation must read and
 * write at least: add reads 2 and writes 1 element per element, and its backward reads the
 * gradient and writes two; mul's backward also reads both inputs; gelu, softmax and
 * layer_norm read and write one tensor and read two (gradient, input or output) to write
 * one back; sum reads its input and its backward writes one; cross_entropy reads the
 * logits, and its backward reads them again to write their gradient; AdamW reads the
 * parameter, gradient and both moments and writes all but the gradient. */
static const op_kind kinds[] = {
    {"matmul", true, false, {0, 0}, setup_matmul, fwd_matmul},
    {"add", false, false, {3, 6}, setup_binary, fwd_add},
    {"mul", false, false, {3, 8}, setup_binary, fwd_mul},
    {"gelu", false, false, {2, 5}, setup_unary, fwd_gelu},
    {"sum", false, false, {1, 2}, setup_unary, fwd_sum},
    {"softmax", false, true, {2, 5}, setup_unary, fwd_softmax},
    {"layer_norm", false, true, {2, 5}, setup_layer_norm, fwd_layer_norm},
    {"cross_entropy", false, true, {1, 3}, setup_cross_entropy, fwd_cross_entropy},
    {"adamw", false, false, {7, 0}, setup_adamw, NULL},
};
#define N_KINDS (int)(sizeof kinds / sizeof *kinds)

bool bench_is_op(const char *name) {
    for (int i = 0; i < N_KINDS; i++)
        if (strcmp(kinds[i].name, name) == 0) return true;
    return false;
}

void bench_op_names(char *buf, size_t size) {
    buf[0] = '\0';
    for (int i = 0; i < N_KINDS; i++)
        snprintf(buf + strlen(buf), size - strlen(buf), "%s%s", i ? ", " : "", kinds[i].name);
}

/* Frees the case's tensors, optimizer and generator. */
static void case_free(op_case *c) {
    ag_optimizer_free(c->opt);
    for (int i = 0; i < c->n_in; i++) ag_release(c->in[i]);
    ag_release(c->grad_out);
    ag_generator_free(c->gen);
    *c = (op_case){0};
}

/* Makes the inputs and the gradient of ones backward starts from. */
static ag_status case_setup(op_case *c) {
    c->gen = ag_generator_new(0);
    ag_status st = c->gen ? c->kind->setup(c) : ag_last_status();
    if (st != AG_OK || !c->kind->forward) return st;
    bool prev = ag_set_grad_enabled(false);
    ag_tensor *y = c->kind->forward(c);
    ag_set_grad_enabled(prev);
    if (!y) return ag_last_status();
    if (ag_numel(y) > 1) c->grad_out = ag_ones_like(y);
    st = ag_numel(y) > 1 && !c->grad_out ? ag_last_status() : AG_OK;
    ag_release(y);
    return st;
}

/* One forward call without recording the graph (a bench_fn). */
static ag_status run_forward(void *ctx) {
    op_case *c = ctx;
    ag_scope *scope = ag_scope_begin();
    bool prev = ag_set_grad_enabled(false);
    ag_tensor *y = c->kind->forward(c);
    ag_set_grad_enabled(prev);
    ag_status st = y ? AG_OK : ag_last_status();
    ag_scope_end(scope);
    return st;
}

/* One forward recording the graph and its backward; the inputs' gradients are dropped
 * afterwards (zero_grad with set_to_none), so every call does the same work. */
static ag_status run_forward_backward(void *ctx) {
    op_case *c = ctx;
    ag_scope *scope = ag_scope_begin();
    ag_tensor *y = c->kind->forward(c);
    ag_status st = y ? ag_backward(y, c->grad_out) : ag_last_status();
    for (int i = 0; i < c->n_in; i++)
        if (st == AG_OK && ag_requires_grad(c->in[i])) st = ag_set_grad(c->in[i], NULL);
    ag_scope_end(scope);
    return st;
}

/* One optimizer update (a bench_fn). */
static ag_status run_update(void *ctx) {
    return ag_optimizer_step(((op_case *)ctx)->opt);
}

/* ---- hardware references ---- */

/* One reference measurement. */
typedef struct ref_entry {
    int64_t m, n, k; /* gemm shape, or a copy's bytes in m with n = k = 0 */
    double seconds;  /* NAN: unavailable */
} ref_entry;

/* The references measured on one device, cached by shape or byte count. */
typedef struct ref_cache {
    const bench_options *o;            /* budget and dtype */
    ag_device dev;                     /* the device measured */
    const ag_backend *be;              /* its backend */
    int n;                             /* entries used */
    ref_entry entries[MAX_REFERENCES]; /* in the order measured */
} ref_cache;

/* The cached seconds of (m, n, k), or a negative number when not measured yet. */
static double cache_find(const ref_cache *rc, int64_t m, int64_t n, int64_t k) {
    for (int i = 0; i < rc->n; i++)
        if (rc->entries[i].m == m && rc->entries[i].n == n && rc->entries[i].k == k)
            return rc->entries[i].seconds;
    return -1;
}

/* Remembers a measurement (the oldest stays when the cache is full). */
static double cache_put(ref_cache *rc, int64_t m, int64_t n, int64_t k, double seconds) {
    if (rc->n < MAX_REFERENCES) rc->entries[rc->n++] = (ref_entry){m, n, k, seconds};
    return seconds;
}

/* Median seconds of the vendor gemm out[m, n] = a[m, k] b[k, n] on the device (NAN when the
 * backend has none or it fails, said on stderr): one call sizes the repeats to the budget. */
static double reference_gemm(ref_cache *rc, int64_t m, int64_t n, int64_t k) {
    double seconds = cache_find(rc, m, n, k);
    if (seconds >= 0 || isnan(seconds)) return seconds;
    ag_reference_gemm_fn gemm =
        (ag_reference_gemm_fn)rc->be->iface.get_proc_address("ag_reference_gemm");
    if (!gemm) return cache_put(rc, m, n, k, NAN);
    double one = 0;
    ag_status st = gemm(rc->dev.index, rc->o->dtype, m, n, k, 1, &one);
    const double fit = one > 0 ? rc->o->seconds / one : 1000;
    const int repeats = fit < 5 ? 5 : fit > 1000 ? 1000 : (int)fit;
    if (st == AG_OK) st = gemm(rc->dev.index, rc->o->dtype, m, n, k, repeats, &seconds);
    if (st == AG_OK) return cache_put(rc, m, n, k, seconds);
    fprintf(stderr, "ag bench: reference gemm %lldx%lldx%lld on %s: %s\n", (long long)m,
            (long long)k, (long long)n, rc->be->iface.name, rc->be->iface.last_error());
    return cache_put(rc, m, n, k, NAN);
}

/* A plain copy between two buffers of one device. */
typedef struct copy_ctx {
    const ag_backend *be;
    int device;
    bool host;       /* host memory: memcpy; else the backend's copy_device */
    void *dst, *src; /* buffers of `bytes` */
    size_t bytes;
} copy_ctx;

/* One copy (a bench_fn). */
static ag_status run_copy(void *ctx) {
    copy_ctx *c = ctx;
    if (!c->host) return c->be->iface.copy_device(c->device, c->dst, 0, c->src, 0, c->bytes);
    memcpy(c->dst, c->src, c->bytes);
    return AG_OK;
}

/* Median seconds of a plain copy of `bytes` bytes on the device (NAN after a message when
 * it fails), timed as the cells are. */
static double reference_copy(ref_cache *rc, size_t bytes) {
    double seconds = cache_find(rc, (int64_t)bytes, 0, 0);
    if (seconds >= 0 || isnan(seconds)) return seconds;
    copy_ctx c = {.be = rc->be,
                  .device = rc->dev.index,
                  .host = rc->be->host_memory,
                  .bytes = bytes ? bytes : 1};
    ag_status st = AG_OK;
    if (c.host) {
        c.src = malloc(c.bytes);
        c.dst = malloc(c.bytes);
        st = c.src && c.dst ? AG_OK : AG_ERR_OUT_OF_MEMORY;
        if (st == AG_OK) {
            /* Written once, so the copies touch real pages, not the shared zero page. */
            memset(c.src, 1, c.bytes);
            memset(c.dst, 0, c.bytes);
        }
    } else {
        st = c.be->iface.alloc(c.device, c.bytes, &c.src);
        if (st == AG_OK) st = c.be->iface.alloc(c.device, c.bytes, &c.dst);
    }
    const bench_timing timing = bench_cell_timing(rc->o, 3);
    bench_stats stats = {0};
    if (st == AG_OK) st = bench_time(run_copy, &c, rc->dev, &timing, &stats);
    if (st != AG_OK)
        fprintf(stderr, "ag bench: reference copy of %zu bytes on %s: %s\n", c.bytes,
                c.be->iface.name,
                st == AG_ERR_OUT_OF_MEMORY && c.host ? "out of memory"
                : c.host                             ? ag_last_error()
                                                     : c.be->iface.last_error());
    if (c.host) {
        free(c.src);
        free(c.dst);
    } else {
        if (c.src) c.be->iface.free(c.device, c.src, c.bytes);
        if (c.dst) c.be->iface.free(c.device, c.dst, c.bytes);
    }
    return cache_put(rc, (int64_t)bytes, 0, 0, st == AG_OK ? stats.median : NAN);
}

/* ---- cells ---- */

/* The size column of a case: m x k x n, rows x cols, or the element count. */
static void case_size(const op_case *c, char *buf, size_t size) {
    if (c->kind->matmul)
        snprintf(buf, size, "%lldx%lldx%lld", (long long)c->m, (long long)c->k, (long long)c->n);
    else if (c->kind->rows)
        snprintf(buf, size, "%lldx%lld", (long long)c->rows, (long long)c->cols);
    else
        snprintf(buf, size, "%lld", (long long)(c->rows * c->cols));
}

/* Fills the throughput and the reference of a measured record. */
static void rate(ref_cache *rc, const op_case *c, int pass, bench_record *rec) {
    const double t = rec->stats.median;
    if (c->kind->matmul) {
        const double flops = 2.0 * (double)c->m * (double)c->n * (double)c->k;
        /* Backward adds dA = g B^T ([m, k], inner n) and dB = A^T g ([k, n], inner m). */
        double ref = reference_gemm(rc, c->m, c->n, c->k);
        if (pass == PASS_BACKWARD)
            ref += reference_gemm(rc, c->m, c->k, c->n) + reference_gemm(rc, c->k, c->n, c->m);
        rec->throughput = flops * (pass == PASS_BACKWARD ? 3 : 1) / t / 1e9;
        rec->unit = "GFLOP/s";
        rec->reference_s = ref;
        if (!isnan(ref))
            snprintf(rec->reference, sizeof rec->reference, "%s %cgemm",
                     strcmp(rc->be->iface.name, "cpu") == 0        ? "openblas"
                     : strncmp(rc->be->iface.name, "cuda", 4) == 0 ? "cublas"
                                                                   : rc->be->iface.name,
                     c->dtype == AG_F32 ? 's' : 'd');
    } else {
        const double bytes =
            c->kind->traffic[pass] * (double)(c->rows * c->cols) * (double)ag_dtype_size(c->dtype);
        rec->throughput = bytes / t / 1e9;
        rec->unit = "GB/s";
        /* A copy of half the bytes reads and writes as many bytes as the op. */
        rec->reference_s = reference_copy(rc, (size_t)(bytes / 2));
        snprintf(rec->reference, sizeof rec->reference, "%s",
                 rc->be->host_memory ? "memcpy" : "copy_device");
    }
    rec->ratio = rec->reference_s / t;
    if (isnan(rec->reference_s)) snprintf(rec->reference, sizeof rec->reference, "-");
}

/* Measures every pass of one case (its kind, shape and dtype set); returns the failures. */
static int run_case(ref_cache *rc, op_case *c, bench_results *r, int kind_key, int size_key) {
    static const char *const pass_names[N_PASSES] = {"forward", "forward+backward"};
    char size[40];
    case_size(c, size, sizeof size);
    const char *first = c->kind->forward ? pass_names[PASS_FORWARD] : "update";
    if (case_setup(c) != AG_OK) {
        int failed = bench_cell_failed(rc->dev, c->kind->name, size, first);
        case_free(c);
        return failed;
    }
    int failed = 0;
    for (int pass = 0; pass < N_PASSES; pass++) {
        if (c->kind->traffic[pass] == 0 && !c->kind->matmul) continue;
        const char *name = pass == PASS_FORWARD ? first : pass_names[pass];
        bench_progress(rc->dev, c->kind->name, size, name);
        const bench_fn fn = !c->kind->forward      ? run_update
                            : pass == PASS_FORWARD ? run_forward
                                                   : run_forward_backward;
        const bench_timing timing = bench_cell_timing(rc->o, 3);
        bench_stats stats;
        if (bench_time(fn, c, rc->dev, &timing, &stats) != AG_OK) {
            failed += bench_cell_failed(rc->dev, c->kind->name, size, name);
            continue;
        }
        bench_record *rec =
            bench_add_cell(r, SECTION_OPS, c->kind->name, size, rc->dev, name, c->dtype, &stats);
        if (!rec) {
            failed++;
            break;
        }
        rate(rc, c, pass, rec);
        rec->key[0] = kind_key;
        rec->key[1] = size_key;
        rec->key[2] = pass;
    }
    case_free(c);
    /* Cached buffers of this size go back to the system: the peak RSS is then that of the
     * largest case, not of all of them. */
    rc->be->iface.empty_cache(rc->dev.index);
    return failed;
}

/* Runs one kind at every size of o (or its defaults). */
static int run_kind(ref_cache *rc, int kind_key, bench_results *r) {
    const bench_options *o = rc->o;
    const op_kind *kind = &kinds[kind_key];
    int failed = 0;
    if (kind->matmul) {
        const int squares = o->n_sizes ? o->n_sizes : N_SQUARES;
        for (int i = 0; i < squares + (o->n_sizes ? 0 : N_P_SHAPES); i++) {
            const int64_t s = i < squares ? (o->n_sizes ? o->sizes[i] : default_squares[i]) : 0;
            op_case c = {.kind = kind, .dtype = o->dtype};
            c.m = i < squares ? s : p_shapes[i - squares][0];
            c.k = i < squares ? s : p_shapes[i - squares][1];
            c.n = i < squares ? s : p_shapes[i - squares][2];
            failed += run_case(rc, &c, r, kind_key, i);
        }
        return failed;
    }
    const int counts = o->n_sizes ? o->n_sizes : N_COUNTS;
    for (int i = 0; i < counts; i++) {
        const int64_t count = o->n_sizes ? o->sizes[i] : default_counts[i];
        op_case c = {.kind = kind, .dtype = o->dtype};
        /* Rows of ROW elements where the count allows, else one row of them all. */
        c.cols = kind->rows && count >= ROW && count % ROW == 0 ? ROW : count;
        c.rows = count / c.cols;
        failed += run_case(rc, &c, r, kind_key, i);
    }
    return failed;
}

int bench_ops_run(const bench_options *o, ag_device dev, bench_results *r) {
    ref_cache *rc = calloc(1, sizeof *rc);
    if (!rc) {
        fprintf(stderr, "ag bench: out of memory\n");
        return 1;
    }
    *rc = (ref_cache){.o = o, .dev = dev, .be = ag__backend(dev.backend)};
    int failed = 0;
    for (int k = 0; k < N_KINDS; k++)
        if (bench_wants(o, kinds[k].name)) failed += run_kind(rc, k, r);
    free(rc);
    return failed;
}
