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

/* The per-call switches of an update (which penalty, first step, Nesterov) are passed to
 * the element functions as compile-time constants: each combination gets its own loop
 * (OPTIM_SWITCH), so the unit-stride loops have straight bodies and vectorise. A select on a
 * run-time flag would keep them scalar (GCC does not unswitch loops at -O2 and may not
 * compute both sides of a floating-point select). */
#define OPTIM_L2    1u /* add weight_decay * param to the gradient (SGD, Adam) */
#define OPTIM_DECAY 2u /* multiply the param by 1 - lr * weight_decay first (AdamW) */
#define OPTIM_FIRST 4u /* the state buffers hold no values yet (read as 0, or set) */
#define OPTIM_NEST  8u /* Nesterov momentum (SGD) */

/* Calls RUN(flags) with `flags` (a combination of the bits above) as a constant. */
#define OPTIM_SWITCH(flags, RUN)                                                                   \
    switch (flags) {                                                                               \
    case 0:                                                                                        \
        RUN(0u);                                                                                   \
        break;                                                                                     \
    case 1:                                                                                        \
        RUN(1u);                                                                                   \
        break;                                                                                     \
    case 2:                                                                                        \
        RUN(2u);                                                                                   \
        break;                                                                                     \
    case 4:                                                                                        \
        RUN(4u);                                                                                   \
        break;                                                                                     \
    case 5:                                                                                        \
        RUN(5u);                                                                                   \
        break;                                                                                     \
    case 6:                                                                                        \
        RUN(6u);                                                                                   \
        break;                                                                                     \
    case 8:                                                                                        \
        RUN(8u);                                                                                   \
        break;                                                                                     \
    case 9:                                                                                        \
        RUN(9u);                                                                                   \
        break;                                                                                     \
    case 12:                                                                                       \
        RUN(12u);                                                                                  \
        break;                                                                                     \
    default: /* 13: l2 + first + nesterov (decay never comes with l2 or nesterov) */               \
        RUN(13u);                                                                                  \
        break;                                                                                     \
    }

/* Forces inlining, so that the flags of OPTIM_SWITCH reach the loops as constants. */
#define OPTIM_INLINE static inline __attribute__((always_inline))

/* ---- sgd_update ---- */

/* SGD: _single_tensor_sgd of torch 1.13, one element at a time. The settings of a call live
 * in sgd_coef_T, with lr already negated and keep = 1 - dampening. */
#define DEFINE_SGD(T)                                                                              \
    typedef struct sgd_coef_##T {                                                                  \
        T neg_lr, momentum, keep, weight_decay;                                                    \
        bool has_buf;   /* a momentum buffer follows the grad */                                   \
        unsigned flags; /* OPTIM_L2, OPTIM_FIRST (the buffer holds no value yet), OPTIM_NEST */    \
    } sgd_coef_##T;                                                                                \
    /* The gradient with the L2 penalty added. */                                                  \
    OPTIM_INLINE T sgd_grad_##T(T g, T p, const sgd_coef_##T *c, unsigned f) {                     \
        return f & OPTIM_L2 ? g + c->weight_decay * p : g;                                         \
    }                                                                                              \
    OPTIM_INLINE void sgd_elem_##T(T *p, const T *g, T *buf, const sgd_coef_##T *c, unsigned f) {  \
        const T d = sgd_grad_##T(*g, *p, c, f);                                                    \
        if (!buf) {                                                                                \
            *p = *p + c->neg_lr * d;                                                               \
            return;                                                                                \
        }                                                                                          \
        const T b = f & OPTIM_FIRST ? d : *buf * c->momentum + c->keep * d;                        \
        *buf = b;                                                                                  \
        *p = *p + c->neg_lr * (f & OPTIM_NEST ? d + c->momentum * b : b);                          \
    }                                                                                              \
    /* One run of n elements; buf is NULL without momentum. */                                     \
    OPTIM_INLINE void sgd_run_##T(int64_t n, T *p, const T *g, T *buf, const int64_t *st,          \
                                  const sgd_coef_##T *c, unsigned f) {                             \
        if (!buf && st[0] == 1 && st[1] == 1) {                                                    \
            CPU_SIMD for (int64_t i = 0; i < n; i++) sgd_elem_##T(p + i, g + i, NULL, c, f);       \
        } else if (!buf) {                                                                         \
            for (int64_t i = 0; i < n; i++)                                                        \
                sgd_elem_##T(p + i * st[0], g + i * st[1], NULL, c, f);                            \
        } else if (st[0] == 1 && st[1] == 1 && st[2] == 1) {                                       \
            CPU_SIMD for (int64_t i = 0; i < n; i++) sgd_elem_##T(p + i, g + i, buf + i, c, f);    \
        } else {                                                                                   \
            for (int64_t i = 0; i < n; i++)                                                        \
                sgd_elem_##T(p + i * st[0], g + i * st[1], buf + i * st[2], c, f);                 \
        }                                                                                          \
    }                                                                                              \
    static void sgd_loop_##T(int64_t n, void *const *ptr, const int64_t *st, void *ctx) {          \
        /* A local copy: stores through p and buf cannot change it, so its fields stay in          \
         * registers. */                                                                           \
        const sgd_coef_##T c = *(const sgd_coef_##T *)ctx;                                         \
        T *p = ptr[0], *buf = c.has_buf ? ptr[2] : NULL; /* ptr[2] exists only then */             \
        const T *g = ptr[1];                                                                       \
        OPTIM_SWITCH(c.flags, SGD_RUN_##T)                                                         \
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
                          .flags = (a->reals[3] != 0 ? OPTIM_L2 : 0) |                             \
                                   (a->ints[0] != 0 ? OPTIM_NEST : 0) |                            \
                                   (a->ints[1] != 0 ? OPTIM_FIRST : 0)};                           \
        return run_update(args, n, sgd_loop_##T, &c);                                              \
    }
#define SGD_RUN_f32(f) sgd_run_f32(n, p, g, buf, st, &c, f)
#define SGD_RUN_f64(f) sgd_run_f64(n, p, g, buf, st, &c, f)
CPU_FOR_F(DEFINE_SGD)

/* ---- adam_update ---- */

/* One Adam/AdamW element: _single_tensor_adam / _single_tensor_adamw of torch 1.13. The
 * settings of a call live in adam_coef_T, with the bias corrections of its step computed in
 * double as PyTorch does in Python: neg_step = -lr / (1 - beta1^step), bc2_sqrt =
 * sqrt(1 - beta2^step), decay = 1 - lr * weight_decay (AdamW). */
#define DEFINE_ADAM(T)                                                                             \
    typedef struct adam_coef_##T {                                                                 \
        T beta1, keep1, beta2, keep2, neg_step, bc2_sqrt, eps, weight_decay, decay;                \
        unsigned flags; /* OPTIM_L2 (Adam), OPTIM_DECAY (AdamW), OPTIM_FIRST */                    \
    } adam_coef_##T;                                                                               \
    OPTIM_INLINE void adam_elem_##T(T *p, const T *g_in, T *m, T *v, const adam_coef_##T *c,       \
                                    unsigned f) {                                                  \
        T g = *g_in, pv = *p;                                                                      \
        if (f & OPTIM_L2) g = g + c->weight_decay * pv;                                            \
        if (f & OPTIM_DECAY) pv = pv * c->decay;                                                   \
        const T m0 = f & OPTIM_FIRST ? (T)0 : *m, v0 = f & OPTIM_FIRST ? (T)0 : *v;                \
        const T mv = m0 * c->beta1 + c->keep1 * g, vv = v0 * c->beta2 + c->keep2 * g * g;          \
        *m = mv;                                                                                   \
        *v = vv;                                                                                   \
        *p = pv + c->neg_step * mv / (sqrt(vv) / c->bc2_sqrt + c->eps);                            \
    }                                                                                              \
    OPTIM_INLINE void adam_run_##T(int64_t n, T *p, const T *g, T *m, T *v, const int64_t *st,     \
                                   const adam_coef_##T *c, unsigned f) {                           \
        if (st[0] == 1 && st[1] == 1 && st[2] == 1 && st[3] == 1) {                                \
            CPU_SIMD for (int64_t i = 0; i < n; i++)                                               \
                adam_elem_##T(p + i, g + i, m + i, v + i, c, f);                                   \
        } else {                                                                                   \
            for (int64_t i = 0; i < n; i++)                                                        \
                adam_elem_##T(p + i * st[0], g + i * st[1], m + i * st[2], v + i * st[3], c, f);   \
        }                                                                                          \
    }                                                                                              \
    static void adam_loop_##T(int64_t n, void *const *ptr, const int64_t *st, void *ctx) {         \
        const adam_coef_##T c = *(const adam_coef_##T *)ctx; /* see sgd_loop_T */                  \
        T *p = ptr[0], *m = ptr[2], *v = ptr[3];                                                   \
        const T *g = ptr[1];                                                                       \
        OPTIM_SWITCH(c.flags, ADAM_RUN_##T)                                                        \
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
                           .flags = (a->ints[0] == 0 && wd != 0 ? OPTIM_L2 : 0) |                  \
                                    (a->ints[0] != 0 ? OPTIM_DECAY : 0) |                          \
                                    (a->ints[1] != 0 ? OPTIM_FIRST : 0)};                          \
        return run_update(args, 4, adam_loop_##T, &c);                                             \
    }
#define ADAM_RUN_f32(f) adam_run_f32(n, p, g, m, v, st, &c, f)
#define ADAM_RUN_f64(f) adam_run_f64(n, p, g, m, v, st, &c, f)
CPU_FOR_F(DEFINE_ADAM)

const cpu_kernel_entry cpu_optim_kernels[] = {
    CPU_ENTRY_F("sgd_update", sgd_update),
    CPU_ENTRY_F("adam_update", adam_update),
    {NULL, AG_F32, NULL},
};
