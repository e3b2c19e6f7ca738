/* Batched matrix product. f32/f64 call BLAS gemm once per batch element: an operand whose
 * last two dims are row- or column-contiguous is passed in place (column-contiguous as a
 * transposed row-major matrix), anything else is packed into a contiguous temporary first.
 * bf16 calls OpenBLAS's sbgemm where it has one (float32 accumulation into a float32
 * temporary, rounded into the output). i64 uses plain loops. Batch dims come broadcast by
 * the core and may have stride 0. */
#include "cpu_strided.h"

#include <cblas.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Shapes and batch walk of one matmul call: out[..., m, n] = a[..., m, k] @ b[..., k, n]. */
typedef struct mm_plan {
    const ag_kernel_tensor *a, *b, *out;
    int64_t m, k, n;
    cpu_geom batch; /* batch dims over out's shape; operands 0 = out, 1 = a, 2 = b */
} mm_plan;

/* Element strides of the rows and columns of t's last two dims. */
static int64_t row_stride(const ag_kernel_tensor *t) {
    return t->strides[t->ndim - 2];
}
static int64_t col_stride(const ag_kernel_tensor *t) {
    return t->strides[t->ndim - 1];
}

/* Checks a matmul call (dtypes, ndim >= 2, fitting shapes) and builds its plan. */
static ag_status plan_matmul(mm_plan *pl, const ag_kernel_args *args, ag_dtype dtype) {
    ag_status st = cpu_check_args(args, "matmul", 2, 1);
    if (st == AG_OK) st = ag_kt_check_matmul(args, dtype, cpu_fail);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *a = &args->inputs[0], *b = &args->inputs[1], *out = &args->outputs[0];
    const int nd = out->ndim;
    pl->a = a;
    pl->b = b;
    pl->out = out;
    pl->m = out->shape[nd - 2];
    pl->k = a->shape[nd - 1];
    pl->n = out->shape[nd - 1];
    cpu_geom_init(&pl->batch, nd - 2, out->shape);
    cpu_geom_add(&pl->batch, out, NULL);
    cpu_geom_add(&pl->batch, a, NULL);
    cpu_geom_add(&pl->batch, b, NULL);
    cpu_geom_coalesce(&pl->batch);
    return AG_OK;
}

/* Computes one batch element from the addresses of its three matrices. */
typedef void (*mm_batch_fn)(const mm_plan *pl, void *out, const void *a, const void *b, void *ctx);

/* Calls fn for every batch element, in order. */
static void for_each_batch(const mm_plan *pl, mm_batch_fn fn, void *ctx) {
    const cpu_geom *g = &pl->batch;
    const int last = g->ndim - 1;
    int64_t off[3];
    cpu_cursor c;
    cpu_cursor_seek(&c, g, 0);
    for (int64_t pos = 0; pos < g->numel;) {
        const int64_t n = cpu_cursor_next(&c, g, g->numel - pos, off);
        for (int64_t j = 0; j < n; j++)
            fn(pl, cpu_geom_ptr(g, 0, off[0] + j * g->strides[0][last]),
               cpu_geom_ptr(g, 1, off[1] + j * g->strides[1][last]),
               cpu_geom_ptr(g, 2, off[2] + j * g->strides[2][last]), ctx);
        pos += n;
    }
}

/* mm_batch_fn for k = 0: the empty sum, zero, written bytewise (0.0 and 0 are all-zero
 * bits) so it serves every dtype. */
static void zero_batch(const mm_plan *pl, void *out, const void *a, const void *b, void *ctx) {
    (void)a;
    (void)b;
    (void)ctx;
    const size_t es = ag_dtype_size(pl->out->dtype);
    const int64_t ors = row_stride(pl->out), ocs = col_stride(pl->out);
    for (int64_t i = 0; i < pl->m; i++)
        for (int64_t j = 0; j < pl->n; j++)
            memset((char *)out + (i * ors + j * ocs) * (int64_t)es, 0, es);
}

/* How BLAS sees a [rows, cols] matrix with strides (rs, cs). */
typedef struct blas_layout {
    bool direct;           /* usable in place; else it goes through a contiguous copy */
    CBLAS_TRANSPOSE trans; /* row-major gemm flag */
    blasint ld;            /* leading dimension */
} blas_layout;

/* The BLAS reading of a [rows, cols] matrix with strides (rs, cs) (ag_kt_matrix_layout). */
static blas_layout layout_of(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
    const ag_kt_layout l = ag_kt_matrix_layout(rows, cols, rs, cs);
    return (blas_layout){l.direct, l.transposed ? CblasTrans : CblasNoTrans, (blasint)l.ld};
}

/* Per-call state of the float path: layouts and the temporaries of packed operands. */
typedef struct gemm_ctx {
    blas_layout la, lb, lc;
    void *tmp_a, *tmp_b, *tmp_c;     /* contiguous copies (NULL when used in place) */
    const void *packed_a, *packed_b; /* source currently in tmp_a / tmp_b */
} gemm_ctx;

/* Sets the layouts and allocates temporaries of elsize-byte elements (m, k, n > 0); C's
 * are c_elsize bytes, and C always goes through its temporary when that differs. */
static ag_status gemm_prepare(gemm_ctx *g, const mm_plan *pl, size_t elsize, size_t c_elsize) {
    const int64_t m = pl->m, k = pl->k, n = pl->n;
    g->tmp_a = g->tmp_b = g->tmp_c = NULL; /* gemm_release is safe from here on */
    g->packed_a = g->packed_b = NULL;
    if (m > INT_MAX || k > INT_MAX || n > INT_MAX)
        return cpu_fail(AG_ERR_UNSUPPORTED, "matmul: %lld x %lld x %lld exceeds BLAS's int sizes",
                        (long long)m, (long long)k, (long long)n);
    g->la = layout_of(m, k, row_stride(pl->a), col_stride(pl->a));
    g->lb = layout_of(k, n, row_stride(pl->b), col_stride(pl->b));
    g->lc = layout_of(m, n, row_stride(pl->out), col_stride(pl->out));
    if (g->lc.trans == CblasTrans || c_elsize != elsize) g->lc.direct = false; /* row-major C */
    g->tmp_a = g->la.direct ? NULL : malloc((size_t)(m * k) * elsize);
    g->tmp_b = g->lb.direct ? NULL : malloc((size_t)(k * n) * elsize);
    g->tmp_c = g->lc.direct ? NULL : malloc((size_t)(m * n) * c_elsize);
    if ((!g->la.direct && !g->tmp_a) || (!g->lb.direct && !g->tmp_b) ||
        (!g->lc.direct && !g->tmp_c))
        return cpu_fail(AG_ERR_OUT_OF_MEMORY, "matmul: no memory to pack operands");
    /* Packed operands are contiguous row-major. */
    if (!g->la.direct) g->la = (blas_layout){false, CblasNoTrans, (blasint)k};
    if (!g->lb.direct) g->lb = (blas_layout){false, CblasNoTrans, (blasint)n};
    if (!g->lc.direct) g->lc = (blas_layout){false, CblasNoTrans, (blasint)n};
    return AG_OK;
}

/* Frees the temporaries of gemm_prepare. */
static void gemm_release(gemm_ctx *g) {
    free(g->tmp_a);
    free(g->tmp_b);
    free(g->tmp_c);
}

/* Float path per dtype: copy2d (strided 2-D copy, to pack and unpack), the batch function
 * and the kernel. */
#define DEFINE_MATMUL_FLOAT(T, GEMM)                                                               \
    static void copy2d_##T(T *dst, int64_t drs, int64_t dcs, const T *src, int64_t srs,            \
                           int64_t scs, int64_t rows, int64_t cols) {                              \
        for (int64_t i = 0; i < rows; i++)                                                         \
            for (int64_t j = 0; j < cols; j++) dst[i * drs + j * dcs] = src[i * srs + j * scs];    \
    }                                                                                              \
                                                                                                   \
    static void gemm_batch_##T(const mm_plan *pl, void *out, const void *a, const void *b,         \
                               void *ctx) {                                                        \
        gemm_ctx *g = ctx;                                                                         \
        const int64_t m = pl->m, k = pl->k, n = pl->n;                                             \
        const T *pa = (const T *)a, *pb = (const T *)b;                                            \
        T *pc = g->tmp_c ? (T *)g->tmp_c : (T *)out;                                               \
        if (g->tmp_a) { /* a broadcast batch operand is packed once */                             \
            if (g->packed_a != a)                                                                  \
                copy2d_##T(g->tmp_a, k, 1, pa, row_stride(pl->a), col_stride(pl->a), m, k);        \
            g->packed_a = a;                                                                       \
            pa = g->tmp_a;                                                                         \
        }                                                                                          \
        if (g->tmp_b) {                                                                            \
            if (g->packed_b != b)                                                                  \
                copy2d_##T(g->tmp_b, n, 1, pb, row_stride(pl->b), col_stride(pl->b), k, n);        \
            g->packed_b = b;                                                                       \
            pb = g->tmp_b;                                                                         \
        }                                                                                          \
        GEMM(CblasRowMajor, g->la.trans, g->lb.trans, (blasint)m, (blasint)n, (blasint)k, 1, pa,   \
             g->la.ld, pb, g->lb.ld, 0, pc, g->lc.ld);                                             \
        if (g->tmp_c)                                                                              \
            copy2d_##T((T *)out, row_stride(pl->out), col_stride(pl->out), pc, n, 1, m, n);        \
    }                                                                                              \
                                                                                                   \
    static ag_status matmul_##T(const ag_kernel_args *args) {                                      \
        mm_plan pl;                                                                                \
        ag_status st = plan_matmul(&pl, args, CPU_DTYPE_##T);                                      \
        if (st != AG_OK || pl.batch.numel == 0 || pl.m == 0 || pl.n == 0) return st;               \
        if (pl.k == 0) {                                                                           \
            for_each_batch(&pl, zero_batch, NULL);                                                 \
            return AG_OK;                                                                          \
        }                                                                                          \
        gemm_ctx g;                                                                                \
        st = gemm_prepare(&g, &pl, sizeof(T), sizeof(T));                                          \
        if (st == AG_OK) for_each_batch(&pl, gemm_batch_##T, &g);                                  \
        gemm_release(&g);                                                                          \
        return st;                                                                                 \
    }

DEFINE_MATMUL_FLOAT(f32, cblas_sgemm)
DEFINE_MATMUL_FLOAT(f64, cblas_dgemm)

#ifdef AG_CPU_SBGEMM
static void copy2d_bf16(bf16 *dst, int64_t drs, int64_t dcs, const bf16 *src, int64_t srs,
                        int64_t scs, int64_t rows, int64_t cols) {
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) dst[i * drs + j * dcs] = src[i * srs + j * scs];
}

/* mm_batch_fn of bf16: operands packed as for the float dtypes, C in float32 always. */
static void gemm_batch_bf16(const mm_plan *pl, void *out, const void *a, const void *b, void *ctx) {
    gemm_ctx *g = ctx;
    const int64_t m = pl->m, k = pl->k, n = pl->n;
    const bf16 *pa = a, *pb = b;
    if (g->tmp_a) {
        if (g->packed_a != a)
            copy2d_bf16(g->tmp_a, k, 1, pa, row_stride(pl->a), col_stride(pl->a), m, k);
        g->packed_a = a;
        pa = g->tmp_a;
    }
    if (g->tmp_b) {
        if (g->packed_b != b)
            copy2d_bf16(g->tmp_b, n, 1, pb, row_stride(pl->b), col_stride(pl->b), k, n);
        g->packed_b = b;
        pb = g->tmp_b;
    }
    float *c = g->tmp_c;
    cblas_sbgemm(CblasRowMajor, g->la.trans, g->lb.trans, (blasint)m, (blasint)n, (blasint)k, 1,
                 (const bfloat16 *)pa, g->la.ld, (const bfloat16 *)pb, g->lb.ld, 0, c, (blasint)n);
    bf16 *o = out;
    const int64_t ors = row_stride(pl->out), ocs = col_stride(pl->out);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) o[i * ors + j * ocs].bits = ag_f32_to_bf16(c[i * n + j]);
}

static ag_status matmul_bf16(const ag_kernel_args *args) {
    mm_plan pl;
    ag_status st = plan_matmul(&pl, args, AG_BF16);
    if (st != AG_OK || pl.batch.numel == 0 || pl.m == 0 || pl.n == 0) return st;
    if (pl.k == 0) {
        for_each_batch(&pl, zero_batch, NULL);
        return AG_OK;
    }
    gemm_ctx g;
    st = gemm_prepare(&g, &pl, sizeof(bf16), sizeof(float));
    if (st == AG_OK) for_each_batch(&pl, gemm_batch_bf16, &g);
    gemm_release(&g);
    return st;
}
#endif

/* One i64 batch element, split by rows of the output. */
typedef struct i64_job {
    const mm_plan *pl;
    i64 *out;
    const i64 *a, *b;
} i64_job;

/* cpu_range_fn: output rows [begin, end) of an i64 product, with wrapping arithmetic. */
static void i64_rows(int64_t begin, int64_t end, void *ctx) {
    const i64_job *j = ctx;
    const mm_plan *pl = j->pl;
    const int64_t ars = row_stride(pl->a), acs = col_stride(pl->a);
    const int64_t brs = row_stride(pl->b), bcs = col_stride(pl->b);
    const int64_t ors = row_stride(pl->out), ocs = col_stride(pl->out);
    for (int64_t i = begin; i < end; i++) {
        i64 *o = j->out + i * ors;
        for (int64_t c = 0; c < pl->n; c++) o[c * ocs] = 0;
        for (int64_t p = 0; p < pl->k; p++) { /* i-p-c order reads rows of b */
            const i64 av = j->a[i * ars + p * acs];
            const i64 *br = j->b + p * brs;
            for (int64_t c = 0; c < pl->n; c++)
                o[c * ocs] = i64_add(o[c * ocs], i64_mul(av, br[c * bcs]));
        }
    }
}

/* mm_batch_fn of the i64 path: rows in parallel when the product is large. */
static void i64_batch(const mm_plan *pl, void *out, const void *a, const void *b, void *ctx) {
    (void)ctx;
    i64_job job = {pl, (i64 *)out, (const i64 *)a, (const i64 *)b};
    cpu_parallel_for(pl->m, pl->m * pl->n * (pl->k + 1), i64_rows, &job);
}

static ag_status matmul_i64(const ag_kernel_args *args) {
    mm_plan pl;
    const ag_status st = plan_matmul(&pl, args, AG_I64);
    if (st != AG_OK || pl.batch.numel == 0 || pl.m == 0 || pl.n == 0) return st;
    for_each_batch(&pl, i64_batch, NULL);
    return AG_OK;
}

const cpu_kernel_entry cpu_matmul_kernels[] = {
    CPU_ENTRY_FI("matmul", matmul),
#ifdef AG_CPU_SBGEMM
    CPU_ENTRY("matmul", matmul, bf16),
#endif
    {NULL, AG_F32, NULL},
};
