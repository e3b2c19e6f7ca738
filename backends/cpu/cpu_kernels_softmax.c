/* softmax and log_softmax over one dim. Every other position is a cpu_geom element; for
 * each, the row along the dim is processed in three passes (max, sum of exp(x - max),
 * write), so large inputs never overflow exp. Sums accumulate in f64. */
#include "cpu_strided.h"

#include <stdlib.h>
#include <tgmath.h>

/* Positions processed together when the softmax dim is an outer one. */
#define SM_BLOCK 64

/* The row along the softmax dim, shared by every position. */
typedef struct sm_row {
    int64_t len;   /* extent of the dim */
    int64_t s_out; /* output stride along it */
    int64_t s_in;  /* input stride along it */
} sm_row;

/* Softmax (or, with IS_LOG, log_softmax) kernel NAME##_##T.
 *
 * NAME##_block_##T handles nb positions at once, position k's elements at x + k*xk + i*r->s_in:
 * each pass sweeps the block for one i before moving on. The loop uses blocks of SM_BLOCK
 * when neighbouring positions are closer in memory than neighbouring elements of a row
 * (softmax over an outer dim), else one position at a time, so memory is read in order. */
#define DEFINE_SOFTMAX(NAME, IS_LOG, T)                                                            \
    static void NAME##_block_##T(T *o, int64_t ok, const T *x, int64_t xk, int64_t nb,             \
                                 const sm_row *r) {                                                \
        T mx[SM_BLOCK];                                                                            \
        double sum[SM_BLOCK];                                                                      \
        for (int64_t k = 0; k < nb; k++) {                                                         \
            mx[k] = x[k * xk];                                                                     \
            sum[k] = 0;                                                                            \
        }                                                                                          \
        for (int64_t i = 1; i < r->len; i++)                                                       \
            for (int64_t k = 0; k < nb; k++)                                                       \
                if (x[i * r->s_in + k * xk] > mx[k]) mx[k] = x[i * r->s_in + k * xk];              \
        for (int64_t i = 0; i < r->len; i++)                                                       \
            for (int64_t k = 0; k < nb; k++) sum[k] += exp(x[i * r->s_in + k * xk] - mx[k]);       \
        for (int64_t k = 0; k < nb; k++) /* now log(sum) or 1/sum */                               \
            sum[k] = IS_LOG ? log(sum[k]) : 1 / sum[k];                                            \
        for (int64_t i = 0; i < r->len; i++)                                                       \
            for (int64_t k = 0; k < nb; k++) {                                                     \
                const T d = x[i * r->s_in + k * xk] - mx[k];                                       \
                o[i * r->s_out + k * ok] = IS_LOG ? d - (T)sum[k] : exp(d) * (T)sum[k];            \
            }                                                                                      \
    }                                                                                              \
    static void NAME##_loop_##T(int64_t n, void *const *p, const int64_t *s, void *ctx) {          \
        const sm_row *r = ctx;                                                                     \
        const int64_t block = llabs(s[1]) < llabs(r->s_in) ? SM_BLOCK : 1;                         \
        for (int64_t k0 = 0; k0 < n; k0 += block)                                                  \
            NAME##_block_##T((T *)p[0] + k0 * s[0], s[0], (const T *)p[1] + k0 * s[1], s[1],       \
                             n - k0 < block ? n - k0 : block, r);                                  \
    }                                                                                              \
    static ag_status NAME##_##T(const ag_kernel_args *args) {                                      \
        return run_softmax(args, #NAME, CPU_DTYPE_##T, NAME##_loop_##T);                           \
    }

/* Checks a softmax call and runs `loop` over every position of the other dims. */
static ag_status run_softmax(const ag_kernel_args *args, const char *name, ag_dtype dtype,
                             cpu_loop_fn loop) {
    ag_status st = cpu_check_args(args, name, 1, 1);
    if (st == AG_OK) st = ag_kt_check_softmax(args, name, dtype, cpu_fail);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *in = &args->inputs[0], *out = &args->outputs[0];
    if (cpu_numel(out) == 0) return AG_OK;

    /* Every position of the other dims: out's shape with extent 1 along the row. */
    ag_kernel_tensor rows[2];
    sm_row row;
    ag_kt_softmax_rows(in, out, args->attrs->ints[0], rows, &row.len, &row.s_in, &row.s_out);
    cpu_geom g;
    cpu_geom_init(&g, out->ndim, rows[1].shape);
    cpu_geom_add(&g, out, NULL);
    cpu_geom_add(&g, in, NULL);
    cpu_geom_coalesce(&g);
    cpu_geom_run(&g, g.numel * row.len * 3, loop, &row);
    return AG_OK;
}

#define DEFINE_SOFTMAXES(T) DEFINE_SOFTMAX(softmax, false, T) DEFINE_SOFTMAX(log_softmax, true, T)
CPU_FOR_F(DEFINE_SOFTMAXES)

const cpu_kernel_entry cpu_softmax_kernels[] = {
    CPU_ENTRY_F("softmax", softmax),
    CPU_ENTRY_F("log_softmax", log_softmax),
    {NULL, AG_F32, NULL},
};
