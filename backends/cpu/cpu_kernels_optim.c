/* Fused optimizer updates (docs/kernels.md, "Optimizer updates"): one call reads a
 * parameter, its gradient and its state buffers and writes the new parameter and state in
 * place. Each output is exactly the view of the input it updates, so element i is read and
 * written at index i only, which keeps the loops safe to vectorise and to split across
 * threads. Arithmetic follows PyTorch's single-tensor implementations op by op, in the
 * element type, with the scalar settings converted to it once per call. */
#include "cpu_strided.h"

#include <tgmath.h>

/* Work per element of the update loops, in elementwise-op units, for the thread split. */
#define OPTIM_COST 4

/* Walks the n operands (param, grad, state...) over their common shape with `loop`. */
static ag_status run_update(const ag_kernel_args *args, int n, cpu_loop_fn loop, void *ctx) {
    const ag_kernel_tensor *param = &args->inputs[0];
    cpu_geom g;
    cpu_geom_init(&g, param->ndim, param->shape);
    if (g.numel == 0) return AG_OK;
    for (int i = 0; i < n; i++) cpu_geom_add(&g, &args->inputs[i], NULL);
    cpu_geom_coalesce(&g);
    cpu_geom_run(&g, g.numel * OPTIM_COST, loop, ctx);
    return AG_OK;
}

/* ---- sgd_update ---- */

/* SGD: _single_tensor_sgd of torch 1.13, one element at a time. The settings of a call live
 * in sgd_coef_T, with lr already negated and keep = 1 - dampening. */
#define DEFINE_SGD(T)                                                                              \
    typedef struct sgd_coef_##T {                                                                  \
        T neg_lr, momentum, keep, weight_decay;                                                    \
        bool has_buf, l2, nesterov, first; /* first: the buffer holds no value yet */              \
    } sgd_coef_##T;                                                                                \
    /* The gradient with the L2 penalty added. */                                                  \
    static inline T sgd_grad_##T(T g, T p, const sgd_coef_##T *c) {                                \
        return c->l2 ? g + c->weight_decay * p : g;                                                \
    }                                                                                              \
    static inline void sgd_elem_##T(T *p, const T *g, const sgd_coef_##T *c) {                     \
        *p = *p + c->neg_lr * sgd_grad_##T(*g, *p, c);                                             \
    }                                                                                              \
    static inline void sgd_momentum_elem_##T(T *p, const T *g, T *buf, const sgd_coef_##T *c) {    \
        const T d = sgd_grad_##T(*g, *p, c);                                                       \
        const T b = c->first ? d : *buf * c->momentum + c->keep * d;                               \
        *buf = b;                                                                                  \
        *p = *p + c->neg_lr * (c->nesterov ? d + c->momentum * b : b);                             \
    }                                                                                              \
    static void sgd_loop_##T(int64_t n, void *const *ptr, const int64_t *st, void *ctx) {          \
        const sgd_coef_##T *c = ctx;                                                               \
        T *p = ptr[0], *buf = c->has_buf ? ptr[2] : NULL; /* ptr[2] exists only then */            \
        const T *g = ptr[1];                                                                       \
        const bool unit = st[0] == 1 && st[1] == 1 && (!c->has_buf || st[2] == 1);                 \
        if (!c->has_buf && unit) {                                                                 \
            CPU_SIMD for (int64_t i = 0; i < n; i++) sgd_elem_##T(p + i, g + i, c);                \
        } else if (!c->has_buf) {                                                                  \
            for (int64_t i = 0; i < n; i++) sgd_elem_##T(p + i * st[0], g + i * st[1], c);         \
        } else if (unit) {                                                                         \
            CPU_SIMD for (int64_t i = 0; i < n; i++)                                               \
                sgd_momentum_elem_##T(p + i, g + i, buf + i, c);                                   \
        } else {                                                                                   \
            for (int64_t i = 0; i < n; i++)                                                        \
                sgd_momentum_elem_##T(p + i * st[0], g + i * st[1], buf + i * st[2], c);           \
        }                                                                                          \
    }                                                                                              \
    static ag_status sgd_update_##T(const ag_kernel_args *args) {                                  \
        const int n = ag_kt_sgd_inputs(args);                                                      \
        ag_status st = cpu_check_args(args, "sgd_update", n, n - 1);                               \
        if (st == AG_OK) st = ag_kt_check_sgd(args, CPU_DTYPE_##T, cpu_fail);                      \
        if (st != AG_OK) return st;                                                                \
        const ag_attrs *a = args->attrs;                                                           \
        sgd_coef_##T c = {.neg_lr = (T)-a->reals[0],                                               \
                          .momentum = (T)a->reals[1],                                              \
                          .keep = (T)(1 - a->reals[2]),                                            \
                          .weight_decay = (T)a->reals[3],                                          \
                          .has_buf = n == 3,                                                       \
                          .l2 = a->reals[3] != 0,                                                  \
                          .nesterov = a->ints[0] != 0,                                             \
                          .first = a->ints[1] != 0};                                               \
        return run_update(args, n, sgd_loop_##T, &c);                                              \
    }
CPU_FOR_F(DEFINE_SGD)

/* ---- adam_update ---- */

/* One Adam/AdamW element: _single_tensor_adam / _single_tensor_adamw of torch 1.13. The
 * settings of a call live in adam_coef_T, with the bias corrections of its step computed in
 * double as PyTorch does in Python: neg_step = -lr / (1 - beta1^step), bc2_sqrt =
 * sqrt(1 - beta2^step), decay = 1 - lr * weight_decay (AdamW). */
#define DEFINE_ADAM(T)                                                                             \
    typedef struct adam_coef_##T {                                                                 \
        T beta1, keep1, beta2, keep2, neg_step, bc2_sqrt, eps, weight_decay, decay;                \
        bool l2, decoupled, first; /* first: exp_avg and exp_avg_sq hold no values (read 0) */     \
    } adam_coef_##T;                                                                               \
    static inline void adam_elem_##T(T *p, const T *g_in, T *m, T *v, const adam_coef_##T *c) {    \
        T g = *g_in, pv = *p;                                                                      \
        if (c->l2) g = g + c->weight_decay * pv;                                                   \
        if (c->decoupled) pv = pv * c->decay;                                                      \
        const T m0 = c->first ? (T)0 : *m, v0 = c->first ? (T)0 : *v;                              \
        const T mv = m0 * c->beta1 + c->keep1 * g, vv = v0 * c->beta2 + c->keep2 * g * g;          \
        *m = mv;                                                                                   \
        *v = vv;                                                                                   \
        *p = pv + c->neg_step * mv / (sqrt(vv) / c->bc2_sqrt + c->eps);                            \
    }                                                                                              \
    static void adam_loop_##T(int64_t n, void *const *ptr, const int64_t *st, void *ctx) {         \
        const adam_coef_##T *c = ctx;                                                              \
        T *p = ptr[0], *m = ptr[2], *v = ptr[3];                                                   \
        const T *g = ptr[1];                                                                       \
        if (st[0] == 1 && st[1] == 1 && st[2] == 1 && st[3] == 1) {                                \
            CPU_SIMD for (int64_t i = 0; i < n; i++) adam_elem_##T(p + i, g + i, m + i, v + i, c); \
        } else {                                                                                   \
            for (int64_t i = 0; i < n; i++)                                                        \
                adam_elem_##T(p + i * st[0], g + i * st[1], m + i * st[2], v + i * st[3], c);      \
        }                                                                                          \
    }                                                                                              \
    static ag_status adam_update_##T(const ag_kernel_args *args) {                                 \
        ag_status st = cpu_check_args(args, "adam_update", 4, 3);                                  \
        if (st == AG_OK) st = ag_kt_check_adam(args, CPU_DTYPE_##T, cpu_fail);                     \
        if (st != AG_OK) return st;                                                                \
        const ag_attrs *a = args->attrs;                                                           \
        const double lr = a->reals[0], b1 = a->reals[1], b2 = a->reals[2], wd = a->reals[4];       \
        const double step = (double)a->ints[2];                                                    \
        adam_coef_##T c = {.beta1 = (T)b1,                                                         \
                           .keep1 = (T)(1 - b1),                                                   \
                           .beta2 = (T)b2,                                                         \
                           .keep2 = (T)(1 - b2),                                                   \
                           .neg_step = (T)(-(lr / (1 - pow(b1, step)))),                           \
                           .bc2_sqrt = (T)sqrt(1 - pow(b2, step)),                                 \
                           .eps = (T)a->reals[3],                                                  \
                           .weight_decay = (T)wd,                                                  \
                           .decay = (T)(1 - lr * wd),                                              \
                           .l2 = a->ints[0] == 0 && wd != 0,                                       \
                           .decoupled = a->ints[0] != 0,                                           \
                           .first = a->ints[1] != 0};                                              \
        return run_update(args, 4, adam_loop_##T, &c);                                             \
    }
CPU_FOR_F(DEFINE_ADAM)

const cpu_kernel_entry cpu_optim_kernels[] = {
    CPU_ENTRY_F("sgd_update", sgd_update),
    CPU_ENTRY_F("adam_update", adam_update),
    {NULL, AG_F32, NULL},
};
