/* Fused optimizer updates of the CUDA backend (docs/kernels.md, "Optimizer updates"):
 * sgd_update and adam_update, one kernel launch per call over all elements of a parameter.
 *
 * The updates are in place: each output is exactly the view of the input it updates, so
 * element i is read and written at one offset by one thread only. The settings are converted
 * to the key dtype on the host once per call, exactly as the cpu backend does (bias
 * corrections in double), and the arithmetic follows PyTorch 1.13's single-tensor code op by
 * op, as backends/cpu/cpu_kernels_optim.c does.
 *
 * Bit-for-bit agreement with the cpu: the cpu build performs every product, sum, quotient
 * and square root as a separate IEEE operation (x86-64 without FMA), while nvcc contracts
 * a*b + c into one fused multiply-add by default (-fmad=true), which rounds once instead of
 * twice. Every operation below therefore goes through cu_add_rn, cu_mul_rn, cu_div_rn and
 * cu_sqrt_rn (cuda_kernel_util.cuh: the __fadd_rn... intrinsics), which are never contracted
 * and stay correctly rounded even under -use_fast_math or -prec-div=false. The results then
 * depend on no compiler flag. */
#include <math.h>

#include "cuda_kernel_util.cuh"

/* Key dtypes of both kernels. */
#define DT_F ((1u << AG_F32) | (1u << AG_F64))

/* ---- walking the operands ---- */

/* The views of one update (param, grad, state...), coalesced together, and whether they
 * are all one contiguous run. */
template <int K> struct update_views {
    cu_view v[K];
    bool contiguous;
};

/* Element offset of element i in view k: i itself when every view is contiguous (the
 * offset is then folded into the pointers), else cu_offset. */
template <int K>
__device__ __forceinline__ long long update_offset(const update_views<K> &u, int k, long long i) {
    return u.contiguous ? i : cu_offset(u.v[k], i);
}

/* Coalesces the n (<= K) views of the update's inputs together into *u and advances the
 * pointers ptrs[k] (of element type T) past the view offsets when the views are contiguous. */
template <typename T, int K>
static void update_views_of(const ag_kernel_args *args, int n, update_views<K> *u, T **ptrs) {
    ag_kernel_tensor t[K];
    for (int k = 0; k < n; k++) t[k] = args->inputs[k];
    ag_kt_coalesce(t, n);
    u->contiguous = t[0].ndim <= 1;
    for (int k = 0; k < n && u->contiguous && t[0].ndim == 1; k++)
        u->contiguous = t[k].strides[0] == 1;
    for (int k = 0; k < K; k++) {
        const ag_kernel_tensor *src = &t[k < n ? k : 0]; /* absent views repeat the param's */
        u->v[k] = cu_view_of(src);
        ptrs[k] = cu_data<T>(src) + (u->contiguous ? src->offset : 0);
    }
}

/* ---- sgd_update ---- */

/* The settings of one SGD call in the key dtype: lr already negated, keep = 1 - dampening. */
template <typename T> struct sgd_coef {
    T neg_lr, momentum, keep, weight_decay;
    bool has_buf, l2, nesterov, first; /* first: the buffer holds no value yet */
};

/* SGD (_single_tensor_sgd of torch 1.13) on every element: views 0 param, 1 grad,
 * 2 momentum buffer (only read and written with has_buf). */
template <typename T>
__global__ void __launch_bounds__(CU_THREADS)
    sgd_kernel(T *param, const T *grad, T *buf, update_views<3> u, long long n, sgd_coef<T> c) {
    CU_FOR_EACH(i, n) {
        const long long pi = update_offset(u, 0, i);
        const T p = param[pi];
        T d = grad[update_offset(u, 1, i)];
        if (c.l2) d = cu_add_rn(d, cu_mul_rn(c.weight_decay, p));
        if (c.has_buf) {
            const long long bi = update_offset(u, 2, i);
            const T b =
                c.first ? d : cu_add_rn(cu_mul_rn(buf[bi], c.momentum), cu_mul_rn(c.keep, d));
            buf[bi] = b;
            d = c.nesterov ? cu_add_rn(d, cu_mul_rn(c.momentum, b)) : b;
        }
        param[pi] = cu_add_rn(p, cu_mul_rn(c.neg_lr, d));
    }
}

/* Builds the settings in T and launches sgd_kernel over the n operands of a checked call. */
template <typename T> static ag_status sgd_launch(const ag_kernel_args *args, int n) {
    const long long count = ag_kt_numel(&args->inputs[0]);
    if (count == 0) return AG_OK;
    cudaStream_t stream;
    const ag_status st = cu_enter(args->device, "sgd_update", &stream);
    if (st != AG_OK) return st;
    const ag_attrs *a = args->attrs;
    sgd_coef<T> c;
    c.neg_lr = (T)-a->reals[0];
    c.momentum = (T)a->reals[1];
    c.keep = (T)(1 - a->reals[2]);
    c.weight_decay = (T)a->reals[3];
    c.has_buf = n == 3;
    c.l2 = a->reals[3] != 0;
    c.nesterov = a->ints[0] != 0;
    c.first = a->ints[1] != 0;
    update_views<3> u;
    T *ptrs[3];
    update_views_of(args, n, &u, ptrs);
    const unsigned blocks = cu_grid_size(args->device, count, CU_THREADS);
    sgd_kernel<T><<<blocks, CU_THREADS, 0, stream>>>(ptrs[0], ptrs[1], ptrs[2], u, count, c);
    return cu_check_launch("sgd_update");
}

/* sgd_update(param, grad[, momentum_buffer]) -> (param[, momentum_buffer]). */
static ag_status sgd_update_entry(const ag_kernel_args *args) {
    const int n = ag_kt_sgd_inputs(args);
    ag_status st = cu_check_call(args, "sgd_update", n, n - 1, NULL);
    if (st == AG_OK) st = ag_kt_check_sgd(args, args->inputs[0].dtype, cu_fail);
    if (st != AG_OK) return st;
    return args->inputs[0].dtype == AG_F32 ? sgd_launch<float>(args, n)
                                           : sgd_launch<double>(args, n);
}

/* ---- adam_update ---- */

/* The settings of one Adam/AdamW call in the key dtype, with the bias corrections of its
 * step computed in double as PyTorch does in Python: neg_step = -lr / (1 - beta1^step),
 * bc2_sqrt = sqrt(1 - beta2^step), decay = 1 - lr * weight_decay (AdamW). */
template <typename T> struct adam_coef {
    T beta1, keep1, beta2, keep2, neg_step, bc2_sqrt, eps, weight_decay, decay;
    bool l2, decoupled, first; /* first: exp_avg and exp_avg_sq hold no values (read as 0) */
};

/* Adam / AdamW (_single_tensor_adam / _single_tensor_adamw of torch 1.13) on every
 * element: views 0 param, 1 grad, 2 exp_avg, 3 exp_avg_sq. */
template <typename T>
__global__ void __launch_bounds__(CU_THREADS)
    adam_kernel(T *param, const T *grad, T *exp_avg, T *exp_avg_sq, update_views<4> u, long long n,
                adam_coef<T> c) {
    CU_FOR_EACH(i, n) {
        const long long pi = update_offset(u, 0, i), mi = update_offset(u, 2, i),
                        vi = update_offset(u, 3, i);
        T g = grad[update_offset(u, 1, i)], p = param[pi];
        if (c.l2) g = cu_add_rn(g, cu_mul_rn(c.weight_decay, p));
        if (c.decoupled) p = cu_mul_rn(p, c.decay);
        const T m0 = c.first ? (T)0 : exp_avg[mi], v0 = c.first ? (T)0 : exp_avg_sq[vi];
        const T m = cu_add_rn(cu_mul_rn(m0, c.beta1), cu_mul_rn(c.keep1, g));
        const T v = cu_add_rn(cu_mul_rn(v0, c.beta2), cu_mul_rn(cu_mul_rn(c.keep2, g), g));
        exp_avg[mi] = m;
        exp_avg_sq[vi] = v;
        const T denom = cu_add_rn(cu_div_rn(cu_sqrt_rn(v), c.bc2_sqrt), c.eps);
        param[pi] = cu_add_rn(p, cu_div_rn(cu_mul_rn(c.neg_step, m), denom));
    }
}

/* Builds the settings in T and launches adam_kernel over the operands of a checked call. */
template <typename T> static ag_status adam_launch(const ag_kernel_args *args) {
    const long long count = ag_kt_numel(&args->inputs[0]);
    if (count == 0) return AG_OK;
    cudaStream_t stream;
    const ag_status st = cu_enter(args->device, "adam_update", &stream);
    if (st != AG_OK) return st;
    const ag_attrs *a = args->attrs;
    const double lr = a->reals[0], b1 = a->reals[1], b2 = a->reals[2], wd = a->reals[4];
    const double step = (double)a->ints[2];
    adam_coef<T> c;
    c.beta1 = (T)b1;
    c.keep1 = (T)(1 - b1);
    c.beta2 = (T)b2;
    c.keep2 = (T)(1 - b2);
    c.neg_step = (T)(-(lr / (1 - pow(b1, step))));
    c.bc2_sqrt = (T)sqrt(1 - pow(b2, step));
    c.eps = (T)a->reals[3];
    c.weight_decay = (T)wd;
    c.decay = (T)(1 - lr * wd);
    c.l2 = a->ints[0] == 0 && wd != 0;
    c.decoupled = a->ints[0] != 0;
    c.first = a->ints[1] != 0;
    update_views<4> u;
    T *ptrs[4];
    update_views_of(args, 4, &u, ptrs);
    const unsigned blocks = cu_grid_size(args->device, count, CU_THREADS);
    adam_kernel<T>
        <<<blocks, CU_THREADS, 0, stream>>>(ptrs[0], ptrs[1], ptrs[2], ptrs[3], u, count, c);
    return cu_check_launch("adam_update");
}

/* adam_update(param, grad, exp_avg, exp_avg_sq) -> (param, exp_avg, exp_avg_sq). */
static ag_status adam_update_entry(const ag_kernel_args *args) {
    ag_status st = cu_check_call(args, "adam_update", 4, 3, NULL);
    if (st == AG_OK) st = ag_kt_check_adam(args, args->inputs[0].dtype, cu_fail);
    if (st != AG_OK) return st;
    return args->inputs[0].dtype == AG_F32 ? adam_launch<float>(args) : adam_launch<double>(args);
}

extern "C" const cu_kernel_entry cu_optim_kernels[] = {
    {"sgd_update", DT_F, sgd_update_entry},
    {"adam_update", DT_F, adam_update_entry},
    {NULL, 0, NULL},
};
