/* Fused nn kernels (docs/kernels.md, "Fused nn kernels"): one work-group per row (a
 * layer_norm row or a cross_entropy position). The group's items stride over the row and
 * combine their partial sums in local memory; the group size is a power of two. Sums
 * accumulate in double where the device has it. Element k of a row at position p is the
 * flat element p * len + k of the view (ag_at), so any strides work. */
#pragma OPENCL FP_CONTRACT OFF
#ifdef cl_khr_fp64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double acc_t;
#else
typedef float acc_t;
#endif

/* layer_norm flags (attrs ints[1]): which affine inputs are present. */
#define LN_WEIGHT 1
#define LN_BIAS   2

/* Combines v over the work-group with + (is_max 0) or max (is_max 1) through scratch (one
 * acc_t per item); every item gets the result. */
acc_t group_reduce(acc_t v, int is_max, __local acc_t *scratch) {
    const int lid = (int)get_local_id(0);
    scratch[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = (int)get_local_size(0) / 2; s > 0; s >>= 1) {
        if (lid < s) {
            const acc_t o = scratch[lid + s];
            scratch[lid] = is_max ? fmax(scratch[lid], o) : scratch[lid] + o;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const acc_t r = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE); /* scratch is reused by the next reduction */
    return r;
}

/* out = (x - mean) * rstd * weight + bias, one group per row of `len` elements (the launch
 * has exactly one group per row); w and b are read only when flags say they are present
 * (else they alias x). */
__kernel void ag_layer_norm(__global T *out, const ag_view ov, __global const T *x,
                            const ag_view xv, __global const T *w, const ag_view wv,
                            __global const T *b, const ag_view bv, const long len, const T eps,
                            const int flags, __local acc_t *scratch) {
    const long first = get_group_id(0) * len, step = get_local_size(0);
    acc_t s = 0;
    for (long k = get_local_id(0); k < len; k += step) s += x[ag_at(xv, first + k)];
    const acc_t mean = group_reduce(s, 0, scratch) / len;
    s = 0;
    for (long k = get_local_id(0); k < len; k += step) {
        const acc_t d = x[ag_at(xv, first + k)] - mean;
        s += d * d;
    }
    const acc_t var = group_reduce(s, 0, scratch) / len; /* biased, as PyTorch */
    const T m = (T)mean, rstd = (T)(1 / sqrt(var + eps));
    for (long k = get_local_id(0); k < len; k += step) {
        T v = (x[ag_at(xv, first + k)] - m) * rstd;
        if (flags & LN_WEIGHT) v = v * w[ag_at(wv, k)];
        if (flags & LN_BIAS) v = v + b[ag_at(bv, k)];
        out[ag_at(ov, first + k)] = v;
    }
}

/* Records in *bad the lowest position whose target is neither ignore_index nor in
 * [0, classes) (capped at INT_MAX - 1; the host starts *bad at INT_MAX). */
__kernel void ag_cross_entropy_check(__global const long *t, const ag_view tv, const long positions,
                                     const long classes, const long ignore, __global int *bad) {
    const long p = get_global_id(0);
    if (p >= positions) return;
    const long target = t[ag_at(tv, p)];
    if (target != ignore && (target < 0 || target >= classes))
        atomic_min(bad, (int)min(p, (long)INT_MAX - 1));
}

/* Per-position loss from class indices. xv is the logits' view without the class dim (the
 * row's class 0 at each position); class c is cstride elements further. Targets were
 * checked by ag_cross_entropy_check. An ignored position reads no class but still takes
 * part in the group's barriers. */
__kernel void ag_cross_entropy(__global T *out, const ag_view ov, __global const long *t,
                               const ag_view tv, __global const T *x, const ag_view xv,
                               const long classes, const long cstride, const long ignore,
                               const T smoothing, __local acc_t *scratch) {
    const long p = get_group_id(0), step = get_local_size(0);
    const long target = t[ag_at(tv, p)];
    const long n = target == ignore ? 0 : classes;
    __global const T *row = x + ag_at(xv, p);
    T mx = -INFINITY;
    for (long c = get_local_id(0); c < n; c += step) mx = fmax(mx, row[c * cstride]);
    mx = (T)group_reduce(mx, 1, scratch);
    acc_t sum = 0, total = 0;
    for (long c = get_local_id(0); c < n; c += step) {
        const T v = row[c * cstride];
        sum += exp(v - mx); /* exp in T, as the cpu backend */
        total += v;
    }
    sum = group_reduce(sum, 0, scratch);
    total = group_reduce(total, 0, scratch);
    if (get_local_id(0) != 0) return;
    if (n == 0) {
        out[ag_at(ov, p)] = 0;
        return;
    }
    const acc_t lse = mx + log(sum), nll = lse - row[target * cstride];
    /* Without smoothing the uniform term is left out: a -inf logit makes it inf. */
    const acc_t eps = smoothing;
    out[ag_at(ov, p)] = (T)(eps > 0 ? (1 - eps) * nll + eps * (lse - total / classes) : nll);
}
