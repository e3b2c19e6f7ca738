/* Fused optimizer updates (docs/kernels.md, "Optimizer updates"), in place, one work item
 * per element. The settings arrive in T, converted on the host as the cpu backend does, and
 * the arithmetic follows PyTorch 1.13's single-tensor code op by op (no contraction to
 * fma, so results match the cpu backend). */
#pragma OPENCL FP_CONTRACT OFF

/* sgd_update flags. */
#define SGD_L2       1
#define SGD_MOMENTUM 2
#define SGD_NESTEROV 4
#define SGD_FIRST    8

/* p += neg_lr * d with d the (momentum) direction; buf aliases p when there is no buffer. */
__kernel void ag_sgd_update(__global T *p, const ag_view pv, __global const T *g, const ag_view gv,
                            __global T *buf, const ag_view bv, const long n, const T neg_lr,
                            const T momentum, const T keep, const T weight_decay, const int flags) {
    const long i = get_global_id(0);
    if (i >= n) return;
    const long pi = ag_at(pv, i);
    const T pval = p[pi];
    T d = g[ag_at(gv, i)];
    if (flags & SGD_L2) d = d + weight_decay * pval;
    if (flags & SGD_MOMENTUM) {
        const long bi = ag_at(bv, i);
        const T b = (flags & SGD_FIRST) ? d : buf[bi] * momentum + keep * d;
        buf[bi] = b;
        d = (flags & SGD_NESTEROV) ? d + momentum * b : b;
    }
    p[pi] = pval + neg_lr * d;
}

/* adam_update flags. */
#define ADAM_L2        1
#define ADAM_DECOUPLED 2
#define ADAM_FIRST     4

/* Adam / AdamW; neg_step = -lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t) and decay =
 * 1 - lr * weight_decay come from the host. With ADAM_FIRST m and v are read as 0. */
__kernel void ag_adam_update(__global T *p, const ag_view pv, __global const T *g, const ag_view gv,
                             __global T *m, const ag_view mv, __global T *v, const ag_view vv,
                             const long n, const T beta1, const T keep1, const T beta2,
                             const T keep2, const T neg_step, const T bc2_sqrt, const T eps,
                             const T weight_decay, const T decay, const int flags) {
    const long i = get_global_id(0);
    if (i >= n) return;
    const long pi = ag_at(pv, i), mi = ag_at(mv, i), vi = ag_at(vv, i);
    T gval = g[ag_at(gv, i)], pval = p[pi];
    if (flags & ADAM_L2) gval = gval + weight_decay * pval;
    if (flags & ADAM_DECOUPLED) pval = pval * decay;
    const T m0 = (flags & ADAM_FIRST) ? (T)0 : m[mi], v0 = (flags & ADAM_FIRST) ? (T)0 : v[vi];
    const T m1 = m0 * beta1 + keep1 * gval, v1 = v0 * beta2 + keep2 * gval * gval;
    m[mi] = m1;
    v[vi] = v1;
    p[pi] = pval + neg_step * m1 / (sqrt(v1) / bc2_sqrt + eps);
}
