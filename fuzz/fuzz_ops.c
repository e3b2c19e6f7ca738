/* libFuzzer target: sequences of ops and their backward on the cpu backend.
 *
 * The bytes decode into a short program: 1-4 input tensors (float32 mostly, also float64
 * and int64; 0-4 dims of at most 6 each, zero-size allowed; values include 0, huge, NaN
 * and inf; float inputs may require grad), then up to 24 ops drawn from elementwise,
 * reductions, matmul, views, indexing, cat/stack, softmax, the nn losses and layers,
 * convolution and pooling, in-place ops and dtype conversions, each on tensors picked from
 * the results so far, with dims, shapes and indices from the bytes (often invalid on
 * purpose). Finally the sum of every result that requires grad is differentiated
 * (sometimes with create_graph and a second backward through the gradients).
 *
 * Errors are expected: an op that returns NULL must have set an error status with a
 * message. Every gradient a leaf receives must have the leaf's shape. Crashes, leaks and UB
 * are bugs. Tensors larger than MAX_NUMEL elements are dropped, so nothing grows huge.
 * Everything is created inside one scope per input and freed at its end. */
#include <math.h>
#include "fuzz_util.h"
#include "ag/nn.h"

#define MAX_SLOTS  16  /* tensors a program can refer to */
#define MAX_OPS    24  /* ops per program */
#define MAX_EXTENT 6   /* largest extent of a generated dim */
#define MAX_NUMEL  512 /* larger results are not kept */

/* A program being run: its bytes and the tensors so far (owned by the input's scope). */
typedef struct program {
    fuzz_bytes *b;
    ag_tensor *slot[MAX_SLOTS];
    unsigned born[MAX_SLOTS];    /* when each slot's tensor was made ... */
    unsigned changed[MAX_SLOTS]; /* ... and when its history last changed (in place) */
    unsigned now;
    int n;
    ag_tensor *leaves[4]; /* the inputs */
    int n_leaves;
} program;

/* FUZZ_OPS_TRACE=1 prints each op of a program (to reproduce a finding by hand). */
static bool trace;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    trace = getenv("FUZZ_OPS_TRACE") != NULL;
    fuzz_init_ag();
    return 0;
}

/* ---- decoding helpers ---- */

/* A value for tensor data or a scalar argument: mostly small, sometimes special. */
static double decode_value(fuzz_bytes *b) {
    static const double special[] = {0.0, -0.0, 1e30, -1e30, 1e-30, 1e300, INFINITY, -INFINITY};
    uint8_t v = fuzz_u8(b);
    if (v < 240) return (double)((int)v - 120) / 8.0;
    if (v < 248) return special[v - 240];
    return NAN;
}

/* A dim argument: mostly in range for small ranks, sometimes out of it. */
static int decode_dim(fuzz_bytes *b) {
    return fuzz_range(b, -4, 4);
}

/* A shape of 0-4 dims; extents -1..MAX_EXTENT (-1 asks reshape to infer one). */
static int decode_shape(fuzz_bytes *b, int64_t *shape) {
    int ndim = fuzz_range(b, 0, 4);
    for (int d = 0; d < ndim; d++) shape[d] = fuzz_range(b, -1, MAX_EXTENT);
    return ndim;
}

/* A pair argument (stride, padding, ...) in lo..hi. */
static void decode_pair(fuzz_bytes *b, int64_t *pair, int lo, int hi) {
    pair[0] = fuzz_range(b, lo, hi);
    pair[1] = fuzz_range(b, lo, hi);
}

/* A tensor of dtype with a shape and data from the bytes, at most MAX_NUMEL elements. */
static ag_tensor *decode_tensor(fuzz_bytes *b, ag_dtype dtype) {
    int ndim = fuzz_range(b, 0, 4);
    int64_t shape[4], numel = 1;
    for (int d = 0; d < ndim; d++) {
        uint8_t v = fuzz_u8(b);
        shape[d] = v % 16 == 0 ? 0 : 1 + v % MAX_EXTENT; /* zero-size now and then */
        if (numel * shape[d] > MAX_NUMEL) shape[d] = 1;
        numel *= shape[d];
    }
    double values[MAX_NUMEL];
    int64_t ints[MAX_NUMEL];
    for (int64_t i = 0; i < numel; i++) {
        if (dtype == AG_I64)
            ints[i] = fuzz_range(b, -2, 6); /* indices, a few out of range */
        else
            values[i] = decode_value(b);
    }
    if (dtype == AG_I64) return ag_from_i64(ints, ndim, shape);
    ag_tensor *t = ag_from_f64(values, ndim, shape);
    return dtype == AG_F64 ? t : ag_to_dtype(t, dtype);
}

/* ---- the program's tensors ---- */

/* A tensor from the slots (NULL when there is none: the op then fails cleanly). */
static ag_tensor *pick(program *p) {
    if (!p->n) return NULL;
    int i = fuzz_u8(p->b) % p->n;
    if (trace) fprintf(stderr, "  slot %d\n", i);
    return p->slot[i];
}

/* An index tensor: a slot (any dtype) or fresh int64 indices. */
static ag_tensor *pick_index(program *p) {
    return fuzz_u8(p->b) < 64 ? pick(p) : decode_tensor(p->b, AG_I64);
}

/* An optional tensor argument (NULL a quarter of the time). */
static ag_tensor *pick_optional(program *p) {
    return fuzz_u8(p->b) < 64 ? NULL : pick(p);
}

/* Keeps an op's result. A NULL result must come with an error and its message. */
static void keep(program *p, ag_tensor *t, const char *op) {
    if (!t) {
        if (ag_last_status() == AG_OK) fuzz_fail(op, "NULL result without an error status");
        fuzz_check_status(ag_last_status(), op);
        return;
    }
    ag_clear_error();
    if (ag_numel(t) > MAX_NUMEL) return;
    unsigned now = ++p->now, born = now;
    for (int i = 0; i < p->n; i++) /* an in-place op's result is a slot already */
        if (p->slot[i] == t) {
            born = p->born[i];
            p->changed[i] = now;
        }
    int i = p->n < MAX_SLOTS ? p->n++ : fuzz_u8(p->b) % MAX_SLOTS;
    p->slot[i] = t;
    p->born[i] = born;
    p->changed[i] = now;
}

/* Two tensors for dst.op_(src) where src's graph cannot hold dst: src's history is older
 * than dst itself; else src is dst (a.mul_(a)). In-place on dst when src's graph saved dst
 * makes a reference cycle (dst -> new node -> src's nodes -> saved dst) that leaks: a known
 * limitation (fuzz/README.md), so programs avoid it. */
static void pick_inplace(program *p, ag_tensor **dst, ag_tensor **src) {
    if (!p->n) {
        *dst = *src = NULL;
        return;
    }
    int i = fuzz_u8(p->b) % p->n, j = fuzz_u8(p->b) % p->n;
    if (p->changed[j] >= p->born[i]) {
        if (p->changed[i] < p->born[j]) { /* the other way round */
            int t = i;
            i = j;
            j = t;
        } else {
            j = i;
        }
    }
    if (trace) fprintf(stderr, "  slots %d <- %d\n", i, j);
    *dst = p->slot[i];
    *src = p->slot[j];
}

/* A list of up to 3 dims for a reduction. */
static int decode_dims(fuzz_bytes *b, int *dims) {
    int n = fuzz_range(b, 0, 3);
    for (int i = 0; i < n; i++) dims[i] = decode_dim(b);
    return n;
}

/* ---- the ops, by family ---- */

static ag_tensor *run_binary(program *p, uint8_t which) {
    ag_tensor *a = pick(p), *b = pick(p);
    switch (which % 13) {
    case 0:
        return ag_add(a, b);
    case 1:
        return ag_sub(a, b);
    case 2:
        return ag_mul(a, b);
    case 3:
        return ag_div(a, b);
    case 4:
        return ag_pow(a, b);
    case 5:
        return ag_maximum(a, b);
    case 6:
        return ag_minimum(a, b);
    case 7:
        return ag_eq(a, b);
    case 8:
        return ag_ne(a, b);
    case 9:
        return ag_lt(a, b);
    case 10:
        return ag_le(a, b);
    case 11:
        return ag_gt(a, b);
    default:
        return ag_where(ag_ge(pick(p), pick(p)), a, b);
    }
}

static ag_tensor *run_unary(program *p, uint8_t which) {
    ag_tensor *a = pick(p);
    fuzz_bytes *b = p->b;
    switch (which % 24) {
    case 0:
        return ag_neg(a);
    case 1:
        return ag_exp(a);
    case 2:
        return ag_log(a);
    case 3:
        return ag_sqrt(a);
    case 4:
        return ag_rsqrt(a);
    case 5:
        return ag_abs(a);
    case 6:
        return ag_sign(a);
    case 7:
        return ag_sin(a);
    case 8:
        return ag_cos(a);
    case 9:
        return ag_tanh(a);
    case 10:
        return ag_erf(a);
    case 11:
        return ag_sigmoid(a);
    case 12:
        return ag_relu(a);
    case 13:
        return ag_silu(a);
    case 14:
        return ag_gelu(a, fuzz_u8(b) & 1);
    case 15:
        return ag_add_scalar(a, decode_value(b));
    case 16:
        return ag_mul_scalar(a, decode_value(b));
    case 17:
        return ag_pow_scalar(a, decode_value(b));
    case 18: {
        bool has_min = fuzz_u8(b) & 1, has_max = fuzz_u8(b) & 1;
        return ag_clamp(a, has_min, decode_value(b), has_max, decode_value(b));
    }
    case 19:
        return ag_to_dtype(a, (ag_dtype)fuzz_range(b, 0, AG_DTYPE_COUNT));
    case 20:
        return ag_clone(a);
    case 21:
        return ag_contiguous(a);
    case 22:
        return ag_detach(a);
    default:
        return ag_dropout(a, fuzz_range(b, 0, 4) / 3.0, fuzz_u8(b) & 1, NULL);
    }
}

static ag_tensor *run_reduction(program *p, uint8_t which) {
    ag_tensor *a = pick(p);
    fuzz_bytes *b = p->b;
    int dims[3], n = decode_dims(b, dims);
    bool keepdim = fuzz_u8(b) & 1;
    switch (which % 11) {
    case 0:
        return ag_sum(a, n, dims, keepdim);
    case 1:
        return ag_mean(a, n, dims, keepdim);
    case 2:
        return ag_var(a, n, dims, fuzz_range(b, 0, 2), keepdim);
    case 3:
        return ag_max(a, n, dims, keepdim);
    case 4:
        return ag_min(a, n, dims, keepdim);
    case 5: {
        static const double ps[] = {1, 2, INFINITY, 0.5, 0, 3};
        return ag_norm(a, ps[fuzz_u8(b) % 6], n, dims, keepdim);
    }
    case 6:
        return ag_argmax(a, decode_dim(b), keepdim, fuzz_u8(b) & 1);
    case 7:
        return ag_argmin(a, decode_dim(b), keepdim, fuzz_u8(b) & 1);
    case 8: {
        int64_t shape[4];
        int ndim = decode_shape(b, shape);
        return ag_sum_to_shape(a, ndim, shape);
    }
    case 9:
        return ag_softmax(a, decode_dim(b));
    default:
        return ag_log_softmax(a, decode_dim(b));
    }
}

static ag_tensor *run_view(program *p, uint8_t which) {
    ag_tensor *a = pick(p);
    fuzz_bytes *b = p->b;
    int64_t shape[4];
    switch (which % 10) {
    case 0: {
        int ndim = decode_shape(b, shape);
        return ag_reshape(a, ndim, shape);
    }
    case 1: {
        int ndim = decode_shape(b, shape);
        return ag_view(a, ndim, shape);
    }
    case 2:
        return ag_transpose(a, decode_dim(b), decode_dim(b));
    case 3: {
        int perm[AG_MAX_DIMS];
        int ndim = a ? ag_ndim(a) : 0;
        for (int d = 0; d < ndim; d++) perm[d] = d;
        for (int d = ndim - 1; d > 0; d--) { /* a shuffle, sometimes broken on purpose */
            int k = fuzz_u8(b) % (d + 1), t = perm[d];
            perm[d] = perm[k];
            perm[k] = t;
        }
        if (ndim && fuzz_u8(b) >= 240) perm[0] = decode_dim(b);
        return ag_permute(a, perm);
    }
    case 4: {
        int ndim = decode_shape(b, shape);
        return ag_expand(a, ndim, shape);
    }
    case 5:
        return ag_slice(a, decode_dim(b), fuzz_range(b, -8, 8), fuzz_range(b, -8, 8),
                        fuzz_range(b, -1, 3));
    case 6:
        return ag_select(a, decode_dim(b), fuzz_range(b, -7, 7));
    case 7:
        return ag_unsqueeze(a, decode_dim(b));
    case 8:
        return ag_squeeze(a, decode_dim(b));
    default:
        return ag_flatten(a, decode_dim(b), decode_dim(b));
    }
}

static ag_tensor *run_index(program *p, uint8_t which) {
    fuzz_bytes *b = p->b;
    ag_tensor *a = pick(p);
    switch (which % 7) {
    case 0:
        return ag_index_select(a, decode_dim(b), pick_index(p));
    case 1:
        return ag_index_add(a, decode_dim(b), pick_index(p), pick(p));
    case 2:
        return ag_gather(a, decode_dim(b), pick_index(p));
    case 3:
        return ag_scatter_add(a, decode_dim(b), pick_index(p), pick(p));
    case 4:
    case 5: {
        ag_tensor *list[3] = {a, pick(p), pick(p)};
        int n = fuzz_range(b, 0, 3);
        return which % 7 == 4 ? ag_cat(n, list, decode_dim(b)) : ag_stack(n, list, decode_dim(b));
    }
    default: {
        /* num_classes -1 infers max + 1, so only fresh small indices: a computed int64 slot
         * may hold 5e9 and ask for a 40 GB arange (an allocation failure, not a bug). */
        int classes = fuzz_range(b, -1, 6);
        return ag_one_hot(classes < 0 ? decode_tensor(b, AG_I64) : pick_index(p), classes);
    }
    }
}

static ag_tensor *run_nn(program *p, uint8_t which) {
    fuzz_bytes *b = p->b;
    ag_tensor *x = pick(p);
    switch (which % 9) {
    case 0:
        return ag_matmul(x, pick(p));
    case 1:
        return ag_linear(x, pick(p), pick_optional(p));
    case 2:
        return ag_layer_norm(x, fuzz_range(b, 0, 3), pick_optional(p), pick_optional(p),
                             fuzz_u8(b) & 1 ? 1e-5 : 0.0);
    case 3:
        return ag_embedding(pick_index(p), x);
    case 4:
        return ag_mse_loss(x, pick(p), (ag_reduction)fuzz_range(b, 0, 2));
    case 5: {
        ag_cross_entropy_options o = ag_cross_entropy_defaults();
        o.reduction = (ag_reduction)fuzz_range(b, 0, 2);
        if (fuzz_u8(b) & 1) o.ignore_index = fuzz_range(b, -1, 3);
        if (fuzz_u8(b) & 1) o.label_smoothing = fuzz_range(b, 0, 4) / 4.0;
        return ag_cross_entropy(x, pick_index(p), &o);
    }
    case 6:
        return ag_bce_with_logits(x, pick(p), pick_optional(p), (ag_reduction)fuzz_range(b, 0, 2));
    case 7: {
        ag_tensor *w = pick(p), *bias = pick_optional(p);
        int64_t stride[2], padding[2], dilation[2];
        decode_pair(b, stride, 0, 2);
        decode_pair(b, padding, -1, 2);
        decode_pair(b, dilation, 0, 2);
        return ag_conv2d(x, w, bias, stride, padding, dilation, fuzz_range(b, 0, 3));
    }
    default: {
        int64_t kernel[2], stride[2], padding[2];
        decode_pair(b, kernel, 0, 3);
        decode_pair(b, stride, 0, 2);
        decode_pair(b, padding, -1, 2);
        if (fuzz_u8(b) & 1) return ag_max_pool2d(x, kernel, stride, padding);
        return ag_avg_pool2d(x, kernel, stride, padding);
    }
    }
}

static ag_tensor *run_norm_inplace(program *p, uint8_t which) {
    fuzz_bytes *b = p->b;
    ag_tensor *a, *src;
    pick_inplace(p, &a, &src);
    switch (which % 11) {
    case 0:
        return ag_batch_norm(a, pick_optional(p), pick_optional(p), pick_optional(p),
                             pick_optional(p), fuzz_u8(b) & 1, 0.1, 1e-5);
    case 1:
        return ag_group_norm(a, fuzz_range(b, 0, 3), pick_optional(p), pick_optional(p), 1e-5);
    /* In-place ops return a borrowed a: it is a slot already. */
    case 2:
        return ag_add_(a, src);
    case 3:
        return ag_sub_(a, src);
    case 4:
        return ag_mul_(a, src);
    case 5:
        return ag_div_(a, src);
    case 6:
        return ag_add_scalar_(a, decode_value(b));
    case 7:
        return ag_mul_scalar_(a, decode_value(b));
    case 8:
        return ag_fill_(a, decode_value(b));
    case 9:
        return ag_zero_(a);
    default:
        return ag_copy_(a, src);
    }
}

/* Runs one op from the bytes and keeps its result. */
static void run_op(program *p) {
    uint8_t family = fuzz_u8(p->b), which = fuzz_u8(p->b);
    static const char *const names[] = {"binary", "unary", "reduction",    "view",
                                        "index",  "nn",    "norm/in-place"};
    static ag_tensor *(*const run[])(program *, uint8_t) = {
        run_binary, run_unary, run_reduction, run_view, run_index, run_nn, run_norm_inplace};
    int f = family % 7;
    ag_tensor *t = run[f](p, which);
    if (trace) {
        char shape[128] = "NULL";
        if (t) ag_shape_str(t, shape, sizeof shape);
        fprintf(stderr, "op %s/%d -> %s %s%s\n", names[f], which, shape,
                t && ag_requires_grad(t)
                    ? (ag_is_leaf(t) ? "(leaf requiring grad) " : "(requires grad) ")
                    : "",
                t ? "" : ag_last_error());
    }
    keep(p, t, names[f]);
}

/* ---- backward ---- */

/* Every leaf's gradient, if any, has the leaf's shape and dtype. */
static void check_leaf_grads(const program *p) {
    for (int i = 0; i < p->n_leaves; i++) {
        const ag_tensor *x = p->leaves[i], *g = ag_tensor_grad(x);
        if (!g) continue;
        bool same = ag_ndim(g) == ag_ndim(x) && ag_dtype_of(g) == ag_dtype_of(x);
        for (int d = 0; same && d < ag_ndim(x); d++) same = ag_size(g, d) == ag_size(x, d);
        if (!same) {
            char what[256], xs[96], gs[96];
            ag_shape_str(x, xs, sizeof xs);
            ag_shape_str(g, gs, sizeof gs);
            snprintf(what, sizeof what, "leaf %s %s has a gradient %s %s",
                     ag_dtype_name(ag_dtype_of(x)), xs, ag_dtype_name(ag_dtype_of(g)), gs);
            fuzz_fail("backward", what);
        }
    }
}

/* Backward from the sum of every result that requires grad; with create_graph, a second
 * backward from the sum of the leaves' gradients. */
static void run_backward(program *p) {
    ag_tensor *loss = NULL;
    for (int i = 0; i < p->n; i++) {
        if (!ag_requires_grad(p->slot[i])) continue;
        ag_tensor *s = ag_sum(p->slot[i], 0, NULL, false);
        loss = loss ? ag_add(loss, ag_to_dtype(s, ag_dtype_of(loss))) : s;
    }
    if (!loss) {
        fuzz_check_status(ag_last_status(), "loss");
        return;
    }
    bool higher = fuzz_u8(p->b) & 1;
    if (trace) fprintf(stderr, "backward%s\n", higher ? " with create_graph" : "");
    ag_status st = ag_backward_ex(loss, NULL, false, higher);
    fuzz_check_status(st, "ag_backward");
    if (st != AG_OK) return;
    check_leaf_grads(p);
    if (!higher) return;
    ag_tensor *second = NULL;
    for (int i = 0; i < p->n_leaves; i++) {
        ag_tensor *g = ag_tensor_grad(p->leaves[i]);
        if (!g || !ag_requires_grad(g)) continue;
        ag_tensor *s = ag_sum(ag_mul(g, g), 0, NULL, false);
        second = second ? ag_add(second, ag_to_dtype(s, ag_dtype_of(second))) : s;
    }
    if (second) fuzz_check_status(ag_backward(second, NULL), "second-order backward");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_bytes b = {data, size};
    program p = {.b = &b};
    ag_manual_seed(1); /* dropout: the same input runs the same way */
    ag_clear_error();
    ag_scope *scope = ag_scope_begin();
    p.n_leaves = fuzz_range(&b, 1, 4);
    for (int i = 0; i < p.n_leaves; i++) {
        static const ag_dtype dtypes[] = {AG_F32, AG_F32, AG_F32, AG_F32, AG_F32, AG_F64, AG_I64};
        ag_dtype dt = dtypes[fuzz_u8(&b) % 7];
        ag_tensor *t = decode_tensor(&b, dt);
        if (!t) fuzz_fail("making an input", ag_last_error());
        /* A leaf again after ag_to_dtype (no input requires grad yet). */
        if (dt != AG_I64 && fuzz_u8(&b) & 1)
            fuzz_check_status(ag_set_requires_grad(t, true), "ag_set_requires_grad");
        if (trace) {
            char shape[128];
            ag_shape_str(t, shape, sizeof shape);
            fprintf(stderr, "input %s %s%s\n", ag_dtype_name(ag_dtype_of(t)), shape,
                    ag_requires_grad(t) ? " (requires grad)" : "");
        }
        p.born[p.n] = p.changed[p.n] = ++p.now;
        p.leaves[i] = p.slot[p.n++] = t;
    }
    int n_ops = fuzz_range(&b, 1, MAX_OPS);
    for (int k = 0; k < n_ops && b.n; k++) run_op(&p);
    run_backward(&p);
    /* A .grad recorded with create_graph (even by a backward that failed half-way) holds a
     * graph that holds its leaf: the reference cycle PyTorch warns about for
     * backward(create_graph=True). Break it as users must. */
    for (int i = 0; i < p.n_leaves; i++)
        fuzz_check_status(ag_set_grad(p.leaves[i], NULL), "ag_set_grad");
    ag_scope_end(scope);
    ag_clear_error();
    return 0;
}
