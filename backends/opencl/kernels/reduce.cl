/* Reductions (sum max min argmax argmin) and softmax / log_softmax.
 *
 * Group kernels run on a 1-D range of work groups of one fixed size (at most GROUP_MAX,
 * so each kernel is compiled for one local size): `lanes` consecutive work items (a power
 * of two dividing the group size) share one row (an output's reduced elements), so a group
 * holds get_local_size(0) / lanes rows. Lane l folds the row's elements l, l + lanes, ...
 * and the lanes are then combined by a tree in local memory, so results depend only on
 * the shapes and the group layout, never on timing.
 *
 * Float sums accumulate in double when the device has fp64, else in float with Kahan
 * compensation. */
#if defined(cl_khr_fp64)
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif

#define GROUP_MAX 256

#if T_ID == 2
#define ACC      long
#define KAHAN    0
#define ISNAN(x) 0
/* Wrapping addition: signed overflow is undefined. */
#define ADD(a, b) ((long)((ulong)(a) + (ulong)(b)))
#else
#if defined(cl_khr_fp64)
#define ACC   double
#define KAHAN 0
#else
#define ACC   float
#define KAHAN 1
#endif
#define ISNAN(x)  isnan(x)
#define ADD(a, b) ((a) + (b))
#endif

/* An accumulator: sum v (with Kahan compensation c: the true sum is v - c), or an extreme
 * v at position i (-1 while there is none). */
typedef struct acc_t {
    ACC v;
    ACC c;
    long i;
} acc_t;

/* ---- sum ---- */
inline acc_t sum_init(void) {
    acc_t a = {0, 0, -1};
    return a;
}
inline acc_t sum_step(acc_t a, T x, long pos) {
#if KAHAN
    const ACC y = (ACC)x - a.c, t = a.v + y;
    a.c = (t - a.v) - y;
    a.v = t;
#else
    a.v = ADD(a.v, (ACC)x);
#endif
    (void)pos;
    return a;
}
/* a + b, b covering later positions. */
inline acc_t sum_combine(acc_t a, acc_t b) {
#if KAHAN
    const ACC t = a.v + b.v;
    a.c += b.c + ((t - a.v) - b.v);
    a.v = t;
#else
    a.v = ADD(a.v, b.v);
#endif
    return a;
}

/* ---- extremes hi (max) and lo (min; not named max/min, which OpenCL C may define as
 * macros): NaN counts as the extreme; ties go to the lower position ---- */
#define BEATS_MAX(x, v) ((x) > (v) || (ISNAN(x) && !ISNAN(v)))
#define BEATS_MIN(x, v) ((x) < (v) || (ISNAN(x) && !ISNAN(v)))
#define DEFINE_EXTREME(NAME, BEATS)                                                                \
    inline acc_t NAME##_init(void) {                                                               \
        acc_t a = {0, 0, -1};                                                                      \
        return a;                                                                                  \
    }                                                                                              \
    inline acc_t NAME##_step(acc_t a, T x, long pos) {                                             \
        if (a.i < 0 || BEATS(x, (T)a.v)) {                                                         \
            a.v = x;                                                                               \
            a.i = pos;                                                                             \
        }                                                                                          \
        return a;                                                                                  \
    }                                                                                              \
    inline acc_t NAME##_combine(acc_t a, acc_t b) {                                                \
        const T av = (T)a.v, bv = (T)b.v;                                                          \
        if (b.i >= 0 &&                                                                            \
            (a.i < 0 || BEATS(bv, av) || (!BEATS(av, bv) && b.i < a.i)))                           \
            return b;                                                                              \
        return a;                                                                                  \
    }
DEFINE_EXTREME(hi, BEATS_MAX)
DEFINE_EXTREME(lo, BEATS_MIN)

/* Result of a finished accumulator. */
#define SUM_RESULT(a) ((T)((a).v - (a).c))
#define EXT_RESULT(a) ((T)(a).v)
#define ARG_RESULT(a) ((a).i)

/* Combines the `lanes` accumulators of each row of the group held in lv/lc/li (row r's
 * lanes at r * lanes + lane) into lane 0. Every item of the group must call it. */
#define TREE_COMBINE(OP, lv, lc, li, lane, lanes, slot)                                            \
    for (uint s_ = (lanes) / 2; s_ > 0; s_ /= 2) {                                                 \
        barrier(CLK_LOCAL_MEM_FENCE);                                                              \
        if ((lane) < s_) {                                                                         \
            acc_t a_ = {lv[slot], lc[slot], li[slot]};                                             \
            const acc_t b_ = {lv[(slot) + s_], lc[(slot) + s_], li[(slot) + s_]};                  \
            a_ = OP##_combine(a_, b_);                                                             \
            lv[slot] = a_.v;                                                                       \
            lc[slot] = a_.c;                                                                       \
            li[slot] = a_.i;                                                                       \
        }                                                                                          \
    }                                                                                              \
    barrier(CLK_LOCAL_MEM_FENCE)

/* Reduction NAME with accumulator ops OP, writing OUT_T through RESULT.
 *
 * Row g = get_global_id(0) / lanes < nout * split is chunk g % split of output g / split;
 * output o's elements start at ag_at(outer, o) of x and lie at ag_at(inner, r) from there
 * (r < nred).
 * With split == 1 the result goes to out; else each chunk leaves its accumulator in
 * part_v/part_c/part_i[g] and NAME##_finish combines the chunks in order. */
#define DEFINE_REDUCE(NAME, OP, OUT_T, RESULT)                                                     \
    __kernel void NAME(__global const T *x, const ag_view outer, const ag_view inner,              \
                       __global OUT_T *out, const ag_view outv, const long nout, const long nred,  \
                       const long split, const uint lanes, __global ACC *part_v,                   \
                       __global ACC *part_c, __global long *part_i) {                              \
        __local ACC lv[GROUP_MAX], lc[GROUP_MAX];                                                  \
        __local long li[GROUP_MAX];                                                                \
        const uint slot = get_local_id(0), lane = slot % lanes;                                    \
        const long g = get_global_id(0) / lanes;                                                   \
        acc_t a = OP##_init();                                                                     \
        if (g < nout * split) {                                                                    \
            const long o = g / split, ch = g % split;                                              \
            const long begin = nred * ch / split, end = nred * (ch + 1) / split;                   \
            const long base = ag_at(outer, o);                                                     \
            const long s1 = inner.ndim == 1 ? inner.strides[0] : 0; /* one dim: no divisions */    \
            for (long r = begin + lane; r < end; r += lanes)                                       \
                a = OP##_step(a, x[base + (inner.ndim > 1 ? ag_at(inner, r) : r * s1)], r);        \
        }                                                                                          \
        lv[slot] = a.v;                                                                            \
        lc[slot] = a.c;                                                                            \
        li[slot] = a.i;                                                                            \
        TREE_COMBINE(OP, lv, lc, li, lane, lanes, slot);                                           \
        if (lane == 0 && g < nout * split) {                                                       \
            const acc_t r = {lv[slot], lc[slot], li[slot]};                                        \
            if (split == 1) {                                                                      \
                out[ag_at(outv, g)] = RESULT(r);                                                   \
            } else {                                                                               \
                part_v[g] = r.v;                                                                   \
                part_c[g] = r.c;                                                                   \
                part_i[g] = r.i;                                                                   \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    __kernel void NAME##_finish(__global const ACC *part_v, __global const ACC *part_c,            \
                                __global const long *part_i, __global OUT_T *out,                  \
                                const ag_view outv, const long nout, const long split) {           \
        const long o = get_global_id(0);                                                           \
        if (o >= nout) return;                                                                     \
        acc_t a = {part_v[o * split], part_c[o * split], part_i[o * split]};                       \
        for (long ch = 1; ch < split; ch++) {                                                      \
            const acc_t b = {part_v[o * split + ch], part_c[o * split + ch],                       \
                             part_i[o * split + ch]};                                              \
            a = OP##_combine(a, b);                                                                \
        }                                                                                          \
        out[ag_at(outv, o)] = RESULT(a);                                                           \
    }

DEFINE_REDUCE(reduce_sum, sum, T, SUM_RESULT)
DEFINE_REDUCE(reduce_max, hi, T, EXT_RESULT)
DEFINE_REDUCE(reduce_min, lo, T, EXT_RESULT)
DEFINE_REDUCE(reduce_argmax, hi, long, ARG_RESULT)
DEFINE_REDUCE(reduce_argmin, lo, long, ARG_RESULT)

#if T_ID != 2
/* softmax (IS_LOG 0) or log_softmax (1) over rows of len elements: row g starts at
 * ag_at(xrows, g) of x and ag_at(orows, g) of out, its elements sx / so apart. Three passes
 * over the row: max, sum of exp(x - max), write. */
#define DEFINE_SOFTMAX(NAME, IS_LOG)                                                               \
    __kernel void NAME(__global const T *x, const ag_view xrows, __global T *out,                  \
                       const ag_view orows, const long nrows, const long len, const long sx,       \
                       const long so, const uint lanes) {                                          \
        __local ACC lv[GROUP_MAX], lc[GROUP_MAX];                                                  \
        __local long li[GROUP_MAX];                                                                \
        const uint slot = get_local_id(0), lane = slot % lanes;                                    \
        const uint row0 = slot - lane;                                                             \
        const long g = get_global_id(0) / lanes;                                                   \
        const bool valid = g < nrows;                                                              \
        const long xb = valid ? ag_at(xrows, g) : 0, ob = valid ? ag_at(orows, g) : 0;             \
        T mx = -INFINITY;                                                                          \
        for (long r = lane; valid && r < len; r += lanes) mx = fmax(mx, x[xb + r * sx]);           \
        lv[slot] = mx;                                                                             \
        for (uint s = lanes / 2; s > 0; s /= 2) {                                                  \
            barrier(CLK_LOCAL_MEM_FENCE);                                                          \
            if (lane < s) lv[slot] = fmax(lv[slot], lv[slot + s]);                                 \
        }                                                                                          \
        barrier(CLK_LOCAL_MEM_FENCE);                                                              \
        mx = (T)lv[row0];                                                                          \
        acc_t a = sum_init();                                                                      \
        for (long r = lane; valid && r < len; r += lanes)                                          \
            a = sum_step(a, exp(x[xb + r * sx] - mx), r);                                          \
        barrier(CLK_LOCAL_MEM_FENCE);                                                              \
        lv[slot] = a.v;                                                                            \
        lc[slot] = a.c;                                                                            \
        li[slot] = a.i;                                                                            \
        TREE_COMBINE(sum, lv, lc, li, lane, lanes, slot);                                          \
        const ACC sum = lv[row0] - lc[row0];                                                       \
        const T k = (T)(IS_LOG ? log(sum) : 1 / sum);                                              \
        for (long r = lane; valid && r < len; r += lanes) {                                        \
            const T d = x[xb + r * sx] - mx;                                                       \
            out[ob + r * so] = IS_LOG ? d - k : exp(d) * k;                                        \
        }                                                                                          \
    }
DEFINE_SOFTMAX(softmax, 0)
DEFINE_SOFTMAX(log_softmax, 1)
#endif
