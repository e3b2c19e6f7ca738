/* Indexing: index_select / gather read through an i64 index (index_take), index_add /
 * scatter_add accumulate through one (index_put_add) after copying self (index_copy).
 * index_check finds out-of-range indices before anything is written. */

#if T_ID == 2
#define ADD(a, b) ((long)((ulong)(a) + (ulong)(b)))
#else
#define ADD(a, b) ((a) + (b))
#endif

/* Lowers *bad to the position of every index of idx (count elements) outside [0, size);
 * positions from INT_MAX - 1 on count as INT_MAX - 1. */
__kernel void index_check(__global const long *idx, const ag_view iv, const long count,
                          const long size, __global int *bad) {
    const long p = get_global_id(0);
    if (p >= count) return;
    const long v = idx[ag_at(iv, p)];
    if (v < 0 || v >= size) atomic_min(bad, (int)min(p, (long)INT_MAX - 1));
}

/* out = x, both views of one shape. */
__kernel void index_copy(__global const T *x, const ag_view xv, __global T *out,
                         const ag_view ov, const long count) {
    const long p = get_global_id(0);
    if (p < count) out[ag_at(ov, p)] = x[ag_at(xv, p)];
}

/* out[p] = x[xv(p) + idx[iv(p)] * step]: xv, iv and ov walk out's shape, xv with stride 0
 * along the indexed dim, whose stride is step. */
__kernel void index_take(__global const T *x, const ag_view xv, __global const long *idx,
                         const ag_view iv, __global T *out, const ag_view ov, const long count,
                         const long step) {
    const long p = get_global_id(0);
    if (p < count) out[ag_at(ov, p)] = x[ag_at(xv, p) + idx[ag_at(iv, p)] * step];
}

/* One work item per column c (a position of every dim but the indexed one, ncols in all):
 * for i < len in order, out[ov(c) + idx[iv(c) + i * istep] * ostep] += src[sv(c) + i * sstep].
 * Columns write disjoint elements, so repeated indices add up without atomics, in the
 * same order as on the cpu. */
__kernel void index_put_add(__global T *out, const ag_view ov, __global const T *src,
                            const ag_view sv, __global const long *idx, const ag_view iv,
                            const long ncols, const long len, const long ostep,
                            const long sstep, const long istep) {
    const long c = get_global_id(0);
    if (c >= ncols) return;
    const long ob = ag_at(ov, c), sb = ag_at(sv, c), ib = ag_at(iv, c);
    for (long i = 0; i < len; i++) {
        __global T *d = out + ob + idx[ib + i * istep] * ostep;
        *d = ADD(*d, src[sb + i * sstep]);
    }
}
