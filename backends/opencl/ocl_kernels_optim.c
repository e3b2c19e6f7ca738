/* Fused optimizer updates of the OpenCL backend: sgd_update and adam_update
 * (docs/kernels.md, "Optimizer updates"), launching kernels/optim.cl with one work item per
 * element. The settings are converted to the key dtype here, exactly as the cpu backend
 * does, so both backends compute the same values. */
#include "ocl_kernel_util.h"

#include <math.h>

extern const char ocl_source_optim[];

#define DT_F ((1u << AG_F32) | (1u << AG_F64))

/* optim.cl flag bits. */
enum { SGD_L2 = 1, SGD_MOMENTUM = 2, SGD_NESTEROV = 4, SGD_FIRST = 8 };
enum { ADAM_L2 = 1, ADAM_DECOUPLED = 2, ADAM_FIRST = 4 };

/* Most settings of one kernel (adam_update's). */
#define MAX_SETTINGS 9

/* The settings of a call in the key dtype, each passed by value. */
typedef struct settings {
    int count;
    ag_dtype dtype;
    cl_float f32[MAX_SETTINGS];
    cl_double f64[MAX_SETTINGS];
} settings;

/* Runs kernel `kernel` of optim.cl over the param's elements with arguments: the n tensors
 * (param, grad, state; absent state passes the param again), the count, the settings and
 * the flags. */
static ag_status run_update(const ag_kernel_args *args, const char *kernel, int n,
                            const settings *s, int flags) {
    const int64_t count = ag_kt_numel(&args->inputs[0]);
    if (count == 0) return AG_OK;
    ag_kernel_tensor v[4];
    ocl_arg a[4 + 1 + MAX_SETTINGS + 1];
    int used = 0;
    for (int i = 0; i < (n < 3 ? 3 : n); i++) {
        v[i] = args->inputs[i < n ? i : 0];
        ag_kt_coalesce(&v[i], 1); /* each view keeps its flat order */
        a[used++] = OCL_T(&v[i]);
    }
    a[used++] = OCL_V(count);
    for (int i = 0; i < s->count; i++)
        a[used++] = s->dtype == AG_F64 ? OCL_V(s->f64[i]) : OCL_V(s->f32[i]);
    a[used++] = OCL_V(flags);
    cl_kernel k;
    ag_status st = ocl_kernel_get(args->device, ocl_source_optim, s->dtype, NULL, kernel, &k);
    if (st == AG_OK) st = ocl_set_args(k, a, used);
    if (st == AG_OK) st = ocl_enqueue(args->device, k, (size_t)count, 0, kernel);
    return st;
}

/* Adds setting x, converted to the key dtype. */
static void add_setting(settings *s, double x) {
    s->f32[s->count] = (cl_float)x;
    s->f64[s->count++] = x;
}

/* sgd_update(param, grad[, momentum_buffer]) -> (param[, momentum_buffer]). */
static ag_status sgd_update(const ag_kernel_args *args) {
    const int n = ag_kt_sgd_inputs(args);
    ag_status st = ocl_check_call(args, "sgd_update", n, n - 1, NULL);
    if (st == AG_OK) st = ag_kt_check_sgd(args, args->inputs[0].dtype, ocl_fail);
    if (st != AG_OK) return st;
    const bool has_buf = n == 3;
    const ag_attrs *at = args->attrs;
    settings s = {.dtype = args->inputs[0].dtype};
    add_setting(&s, -at->reals[0]);    /* neg_lr */
    add_setting(&s, at->reals[1]);     /* momentum */
    add_setting(&s, 1 - at->reals[2]); /* keep = 1 - dampening */
    add_setting(&s, at->reals[3]);     /* weight_decay */
    const int flags = (at->reals[3] != 0 ? SGD_L2 : 0) | (has_buf ? SGD_MOMENTUM : 0) |
                      (at->ints[0] ? SGD_NESTEROV : 0) | (at->ints[1] ? SGD_FIRST : 0);
    return run_update(args, "ag_sgd_update", n, &s, flags);
}

/* adam_update(param, grad, exp_avg, exp_avg_sq) -> (param, exp_avg, exp_avg_sq). */
static ag_status adam_update(const ag_kernel_args *args) {
    ag_status st = ocl_check_call(args, "adam_update", 4, 3, NULL);
    if (st == AG_OK) st = ag_kt_check_adam(args, args->inputs[0].dtype, ocl_fail);
    if (st != AG_OK) return st;
    const ag_attrs *at = args->attrs;
    const double lr = at->reals[0], b1 = at->reals[1], b2 = at->reals[2], wd = at->reals[4];
    const double step = (double)at->ints[2];
    settings s = {.dtype = args->inputs[0].dtype};
    add_setting(&s, b1);
    add_setting(&s, 1 - b1);
    add_setting(&s, b2);
    add_setting(&s, 1 - b2);
    add_setting(&s, -(lr / (1 - pow(b1, step)))); /* neg_step, bias corrections in double */
    add_setting(&s, sqrt(1 - pow(b2, step)));     /* bc2_sqrt */
    add_setting(&s, at->reals[3]);                /* eps */
    add_setting(&s, wd);
    add_setting(&s, 1 - lr * wd); /* decay (AdamW) */
    const int flags = (at->ints[0] == 0 && wd != 0 ? ADAM_L2 : 0) |
                      (at->ints[0] ? ADAM_DECOUPLED : 0) | (at->ints[1] ? ADAM_FIRST : 0);
    return run_update(args, "ag_adam_update", 4, &s, flags);
}

const ocl_kernel_entry ocl_optim_kernels[] = {
    {"sgd_update", DT_F, sgd_update},
    {"adam_update", DT_F, adam_update},
    {NULL, 0, NULL},
};
