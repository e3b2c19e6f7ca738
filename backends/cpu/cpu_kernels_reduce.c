/* Reduction kernels: sum, max, min, argmax, argmin.
 *
 * A plan splits the input's dims into kept ones (walked with the output) and reduced ones
 * (walked per output element), both as cpu_geom so any strides work. Many outputs are
 * spread across threads; a single output (a full reduction) is split into a fixed number of
 * chunks that depends only on the input size, whose partial results are combined in order,
 * so the result does not depend on the thread count. */
#include "cpu_strided.h"

#include <stdlib.h>

/* Most partial results of a single-output reduction, and the least work per chunk. */
#define MAX_CHUNKS 64
#define MIN_CHUNK  8192
/* Outputs accumulated together when reducing across them (see DEFINE_REDUCE). */
#define RED_BLOCK 64

/* Geometry of one reduction call. */
typedef struct red_plan {
    cpu_geom outer; /* output positions; operand 0 = out, 1 = in at the first reduced element */
    cpu_geom inner; /* the reduced elements, relative to that; operand 0 = in */
} red_plan;

/* Checks a reduction of input 0 (dtype `dtype`) into output 0 and builds its plan (see
 * ag_kt_check_reduce for `one_dim` and `empty_ok`). */
static ag_status plan_reduction(red_plan *pl, const ag_kernel_args *args, const char *name,
                                ag_dtype dtype, bool one_dim, bool empty_ok) {
    ag_kernel_tensor outer, inner; /* inner's extents are the reduced ones; outer goes unused */
    ag_status st = cpu_check_args(args, name, 1, 1);
    if (st == AG_OK)
        st = ag_kt_check_reduce(args, name, dtype, one_dim, empty_ok, &outer, &inner, cpu_fail);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *in = &args->inputs[0], *out = &args->outputs[0];
    cpu_geom_init(&pl->outer, out->ndim, out->shape);
    cpu_geom_add(&pl->outer, out, NULL);
    cpu_geom_add(&pl->outer, in, NULL);
    cpu_geom_coalesce(&pl->outer);
    cpu_geom_init(&pl->inner, in->ndim, inner.shape);
    cpu_geom_add(&pl->inner, in, NULL);
    cpu_geom_coalesce(&pl->inner);
    return AG_OK;
}

/* ---- the reductions, as ACC_TYPE / INIT / STEP / ROW / COMBINE / RESULT ----
 * ACC is the type values accumulate in; ACC_TYPE(ACC) the accumulator (for extremes a value v
 * and its position i, -1 while there is none). STEP folds one element at position pos, ROW
 * folds n elements x[k*s] at positions pos + k. */
#define SUM_ACC_TYPE(ACC)        ACC
#define SUM_INIT                 0
#define SUM_STEP(ACC, a, x, pos) (a) = ACC##_add((a), (ACC)(x))
/* Four partial sums: a single one makes the loop wait on each addition's latency. */
#define SUM_ROW(ACC, a, x, n, s, pos)                                                              \
    do {                                                                                           \
        ACC p0 = 0, p1 = 0, p2 = 0, p3 = 0;                                                        \
        int64_t k = 0;                                                                             \
        for (; k + 4 <= (n); k += 4) {                                                             \
            p0 = ACC##_add(p0, (ACC)(x)[k * (s)]);                                                 \
            p1 = ACC##_add(p1, (ACC)(x)[(k + 1) * (s)]);                                           \
            p2 = ACC##_add(p2, (ACC)(x)[(k + 2) * (s)]);                                           \
            p3 = ACC##_add(p3, (ACC)(x)[(k + 3) * (s)]);                                           \
        }                                                                                          \
        for (; k < (n); k++) p0 = ACC##_add(p0, (ACC)(x)[k * (s)]);                                \
        (a) = ACC##_add((a), ACC##_add(ACC##_add(p0, p1), ACC##_add(p2, p3)));                     \
    } while (0)
#define SUM_COMBINE(ACC, a, b) (a) = ACC##_add((a), (b))
#define SUM_RESULT(OUT, a)     ((OUT)(a))

/* x beats the current extreme v: strictly (so the first occurrence wins), or as the first
 * NaN. */
#define BEATS_MAX(x, v) ((x) > (v) || (CPU_ISNAN(x) && !CPU_ISNAN(v)))
#define BEATS_MIN(x, v) ((x) < (v) || (CPU_ISNAN(x) && !CPU_ISNAN(v)))
#define EXTREME_ACC_TYPE(ACC)                                                                      \
    struct {                                                                                       \
        ACC v;                                                                                     \
        int64_t i;                                                                                 \
    }
#define EXTREME_INIT                                                                               \
    { 0, -1 }
#define EXTREME_STEP(BEATS, a, x, pos)                                                             \
    if ((a).i < 0 || BEATS(x, (a).v)) {                                                            \
        (a).v = (x);                                                                               \
        (a).i = (pos);                                                                             \
    }
#define EXTREME_ROW(BEATS, a, x, n, s, pos)                                                        \
    for (int64_t k = 0; k < (n); k++) {                                                            \
        EXTREME_STEP(BEATS, a, (x)[k * (s)], (pos) + k)                                            \
    }
/* b covers later positions than a, so on a tie a stays. */
#define EXTREME_COMBINE(BEATS, a, b)                                                               \
    if ((b).i >= 0 && ((a).i < 0 || BEATS((b).v, (a).v))) (a) = (b)

#define MAX_ACC_TYPE                  EXTREME_ACC_TYPE
#define MAX_INIT                      EXTREME_INIT
#define MAX_STEP(ACC, a, x, pos)      EXTREME_STEP(BEATS_MAX, a, x, pos)
#define MAX_ROW(ACC, a, x, n, s, pos) EXTREME_ROW(BEATS_MAX, a, x, n, s, pos)
#define MAX_COMBINE(ACC, a, b)        EXTREME_COMBINE(BEATS_MAX, a, b)
#define MAX_RESULT(OUT, a)            ((a).v)
#define MIN_ACC_TYPE                  EXTREME_ACC_TYPE
#define MIN_INIT                      EXTREME_INIT
#define MIN_STEP(ACC, a, x, pos)      EXTREME_STEP(BEATS_MIN, a, x, pos)
#define MIN_ROW(ACC, a, x, n, s, pos) EXTREME_ROW(BEATS_MIN, a, x, n, s, pos)
#define MIN_COMBINE(ACC, a, b)        EXTREME_COMBINE(BEATS_MIN, a, b)
#define MIN_RESULT(OUT, a)            ((a).v)
#define ARGMAX_ACC_TYPE               MAX_ACC_TYPE
#define ARGMAX_INIT                   MAX_INIT
#define ARGMAX_STEP                   MAX_STEP
#define ARGMAX_ROW                    MAX_ROW
#define ARGMAX_COMBINE                MAX_COMBINE
#define ARGMAX_RESULT(OUT, a)         ((a).i)
#define ARGMIN_ACC_TYPE               MIN_ACC_TYPE
#define ARGMIN_INIT                   MIN_INIT
#define ARGMIN_STEP                   MIN_STEP
#define ARGMIN_ROW                    MIN_ROW
#define ARGMIN_COMBINE                MIN_COMBINE
#define ARGMIN_RESULT(OUT, a)         ((a).i)

/* Generates kernel NAME##_##T: reduction R (SUM, MAX, ...) of T accumulated in ACC,
 * writing OUT; ONE_DIM and EMPTY_OK are plan_reduction's flags.
 *
 * Outputs are computed one at a time (`along`: walking each output's reduced elements) when
 * the reduced elements lie closer together in memory than neighbouring outputs; otherwise
 * RED_BLOCK neighbouring outputs are accumulated together (`across`: for each reduced
 * position, a sweep over the block), so memory is read in order either way. */
#define DEFINE_REDUCE(NAME, R, T, ACC, OUT, ONE_DIM, EMPTY_OK)                                     \
    typedef R##_ACC_TYPE(ACC) NAME##_acc_##T;                                                      \
                                                                                                   \
    /* Folds reduced positions [begin, end) of the output whose input starts at element            \
     * offset `start` of `in` into *acc. */                                                        \
    static void NAME##_along_##T(const cpu_geom *inner, const T *in, int64_t start, int64_t begin, \
                                 int64_t end, NAME##_acc_##T *acc) {                               \
        NAME##_acc_##T a = *acc;                                                                   \
        const int64_t s = inner->strides[0][inner->ndim - 1];                                      \
        int64_t off = 0; /* set by cpu_cursor_next; GCC 13 cannot tell */                          \
        cpu_cursor c;                                                                              \
        cpu_cursor_seek(&c, inner, begin);                                                         \
        for (int64_t pos = begin; pos < end;) {                                                    \
            const int64_t n = cpu_cursor_next(&c, inner, end - pos, &off);                         \
            const T *x = in + start + off;                                                         \
            R##_ROW(ACC, a, x, n, s, pos);                                                         \
            pos += n;                                                                              \
        }                                                                                          \
        *acc = a;                                                                                  \
    }                                                                                              \
                                                                                                   \
    /* Folds all reduced positions of nb outputs at once; output k's input starts at element       \
     * offset start + k*step of `in`. */                                                           \
    static void NAME##_across_##T(const cpu_geom *inner, const T *in, int64_t start, int64_t step, \
                                  int64_t nb, NAME##_acc_##T *acc) {                               \
        const int64_t s = inner->strides[0][inner->ndim - 1];                                      \
        int64_t off = 0; /* set by cpu_cursor_next; GCC 13 cannot tell */                          \
        cpu_cursor c;                                                                              \
        cpu_cursor_seek(&c, inner, 0);                                                             \
        for (int64_t pos = 0; pos < inner->numel;) {                                               \
            const int64_t n = cpu_cursor_next(&c, inner, inner->numel - pos, &off);                \
            for (int64_t t = 0; t < n; t++) {                                                      \
                const T *x = in + start + off + t * s;                                             \
                for (int64_t k = 0; k < nb; k++) {                                                 \
                    R##_STEP(ACC, acc[k], x[k * step], pos + t);                                   \
                }                                                                                  \
            }                                                                                      \
            pos += n;                                                                              \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    /* cpu_range_fn: computes outputs [begin, end) of a plan. */                                   \
    static void NAME##_outputs_##T(int64_t begin, int64_t end, void *ctx) {                        \
        const red_plan *pl = ctx;                                                                  \
        const int last = pl->outer.ndim - 1;                                                       \
        const int64_t so = pl->outer.strides[0][last], si = pl->outer.strides[1][last];            \
        const int64_t sr = pl->inner.strides[0][pl->inner.ndim - 1];                               \
        const bool across = pl->outer.numel > 1 && pl->inner.numel > 1 && llabs(si) < llabs(sr);   \
        const T *in = pl->outer.base[1];                                                           \
        int64_t off[2];                                                                            \
        cpu_cursor c;                                                                              \
        cpu_cursor_seek(&c, &pl->outer, begin);                                                    \
        for (int64_t pos = begin; pos < end;) {                                                    \
            const int64_t n = cpu_cursor_next(&c, &pl->outer, end - pos, off);                     \
            OUT *o = (OUT *)cpu_geom_ptr(&pl->outer, 0, off[0]);                                   \
            for (int64_t k0 = 0; k0 < n; k0 += RED_BLOCK) {                                        \
                const int64_t nb = n - k0 < RED_BLOCK ? n - k0 : RED_BLOCK;                        \
                NAME##_acc_##T a[RED_BLOCK];                                                       \
                for (int64_t k = 0; k < nb; k++) {                                                 \
                    const NAME##_acc_##T init = R##_INIT;                                          \
                    a[k] = init;                                                                   \
                    if (!across)                                                                   \
                        NAME##_along_##T(&pl->inner, in, off[1] + (k0 + k) * si, 0,                \
                                         pl->inner.numel, &a[k]);                                  \
                }                                                                                  \
                if (across) NAME##_across_##T(&pl->inner, in, off[1] + k0 * si, si, nb, a);        \
                for (int64_t k = 0; k < nb; k++) o[(k0 + k) * so] = R##_RESULT(OUT, a[k]);         \
            }                                                                                      \
            pos += n;                                                                              \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    /* A single-output reduction cut into chunks with one partial result each. */                  \
    typedef struct {                                                                               \
        const red_plan *pl;                                                                        \
        int nchunks;                                                                               \
        NAME##_acc_##T part[MAX_CHUNKS];                                                           \
    } NAME##_chunks_##T;                                                                           \
                                                                                                   \
    /* cpu_range_fn: computes the partial results of chunks [begin, end). */                       \
    static void NAME##_chunk_range_##T(int64_t begin, int64_t end, void *ctx) {                    \
        NAME##_chunks_##T *job = ctx;                                                              \
        const cpu_geom *inner = &job->pl->inner;                                                   \
        for (int64_t ch = begin; ch < end; ch++) {                                                 \
            int64_t b, e;                                                                          \
            cpu_split(inner->numel, (int)ch, job->nchunks, &b, &e);                                \
            const NAME##_acc_##T init = R##_INIT;                                                  \
            job->part[ch] = init;                                                                  \
            NAME##_along_##T(inner, job->pl->outer.base[1], 0, b, e, &job->part[ch]);              \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    static ag_status NAME##_##T(const ag_kernel_args *args) {                                      \
        red_plan pl;                                                                               \
        const ag_status st = plan_reduction(&pl, args, #NAME, CPU_DTYPE_##T, ONE_DIM, EMPTY_OK);   \
        if (st != AG_OK || pl.outer.numel == 0) return st;                                         \
        const int64_t nout = pl.outer.numel, nred = pl.inner.numel;                                \
        if (nout > 1 || nred < 2 * MIN_CHUNK) {                                                    \
            cpu_parallel_for(nout, (nred * nout), NAME##_outputs_##T, &pl);                        \
            return AG_OK;                                                                          \
        }                                                                                          \
        NAME##_chunks_##T job = {.pl = &pl};                                                       \
        job.nchunks = nred / MIN_CHUNK > MAX_CHUNKS ? MAX_CHUNKS : (int)(nred / MIN_CHUNK);        \
        cpu_parallel_for(job.nchunks, nred, NAME##_chunk_range_##T, &job);                         \
        NAME##_acc_##T a = job.part[0];                                                            \
        for (int ch = 1; ch < job.nchunks; ch++) {                                                 \
            R##_COMBINE(ACC, a, job.part[ch]);                                                     \
        }                                                                                          \
        *(OUT *)pl.outer.base[0] = R##_RESULT(OUT, a);                                             \
        return AG_OK;                                                                              \
    }

/* Sums accumulate in f64 for floats (f32 included) and wrap in i64. */
DEFINE_REDUCE(sum, SUM, f32, f64, f32, false, true)
DEFINE_REDUCE(sum, SUM, f64, f64, f64, false, true)
DEFINE_REDUCE(sum, SUM, i64, i64, i64, false, true)

#define DEFINE_EXTREMES(T)                                                                         \
    DEFINE_REDUCE(max, MAX, T, T, T, false, false)                                                 \
    DEFINE_REDUCE(min, MIN, T, T, T, false, false)                                                 \
    DEFINE_REDUCE(argmax, ARGMAX, T, T, i64, true, false)                                          \
    DEFINE_REDUCE(argmin, ARGMIN, T, T, i64, true, false)
CPU_FOR_FI(DEFINE_EXTREMES)

const cpu_kernel_entry cpu_reduce_kernels[] = {
    CPU_ENTRY_FI("sum", sum),       CPU_ENTRY_FI("max", max),       CPU_ENTRY_FI("min", min),
    CPU_ENTRY_FI("argmax", argmax), CPU_ENTRY_FI("argmin", argmin), {NULL, AG_F32, NULL},
};
