/* Fused nn kernels of the OpenCL backend: layer_norm and cross_entropy (docs/kernels.md,
 * "Fused nn kernels"), launching kernels/nn.cl with one work-group per row. Arguments are
 * checked here as the cpu backend does; cross_entropy checks its targets on the device
 * (ag_cross_entropy_check) before anything is written. */
#include "ocl_kernel_util.h"

#include <limits.h>

extern const char ocl_source_nn[];

#define DT_F ((1u << AG_F32) | (1u << AG_F64))

/* Largest work-group of the row kernels (a power of two). */
#define ROW_GROUP_MAX 256

/* layer_norm attrs ints[1] bits (nn.cl LN_WEIGHT, LN_BIAS). */
enum { LN_WEIGHT = 1, LN_BIAS = 2 };

/* A real setting in the key dtype, passed by value. */
typedef union real_arg {
    cl_float f32;
    cl_double f64;
} real_arg;

static ocl_arg real_of(real_arg *r, ag_dtype dtype, double v) {
    if (dtype == AG_F64) {
        r->f64 = v;
        return (ocl_arg){NULL, sizeof r->f64, &r->f64};
    }
    r->f32 = (cl_float)v;
    return (ocl_arg){NULL, sizeof r->f32, &r->f32};
}

/* Key dtype of a call: its first input's, checked to be a float dtype. */
static ag_status key_dtype(const ag_kernel_args *args, const char *name, ag_dtype *out) {
    if (!args || args->n_inputs < 1 || !args->inputs)
        return ocl_fail(AG_ERR_INVALID_ARG, "%s: no inputs", name);
    *out = args->inputs[0].dtype;
    return ag_kt_check_float(name, "input", *out, ocl_fail);
}

/* Checks that t has `ndim` dims of extents `shape`; `what` names the mismatch. */
static ag_status check_shape(const char *name, const char *role, const ag_kernel_tensor *t,
                             int ndim, const int64_t *shape, const char *what) {
    bool fits = t->ndim == ndim;
    for (int d = 0; fits && d < ndim; d++) fits = t->shape[d] == shape[d];
    if (fits) return AG_OK;
    char s[160];
    return ocl_fail(AG_ERR_SHAPE, "%s: %s has shape %s, expected %s", name, role,
                    ag_kt_shape_str(t, s, sizeof s), what);
}

/* Gets kernel `kernel` of nn.cl, sets its arguments (the last one: local scratch of one
 * double per item) and runs `rows` groups of a power-of-two size <= row_len. */
static ag_status run_rows(const ag_kernel_args *args, ag_dtype dtype, const char *kernel,
                          ocl_arg *a, int count, int64_t rows, int64_t row_len) {
    cl_kernel k;
    ag_status st = ocl_kernel_get(args->device, ocl_source_nn, dtype, NULL, kernel, &k);
    if (st != AG_OK) return st;
    size_t group = ROW_GROUP_MAX, kernel_max = 0;
    cl_int err =
        clGetKernelWorkGroupInfo(k, ocl_device_at(args->device)->id, CL_KERNEL_WORK_GROUP_SIZE,
                                 sizeof kernel_max, &kernel_max, NULL);
    if ((st = ocl_check(err, kernel)) != AG_OK) return st;
    if (kernel_max < group) group = kernel_max;
    if ((size_t)row_len < group) group = (size_t)(row_len > 0 ? row_len : 1);
    group = ocl_pow2_floor(group);
    a[count - 1] = (ocl_arg){NULL, group * sizeof(cl_double), NULL}; /* __local */
    if ((st = ocl_set_args(k, a, count)) != AG_OK) return st;
    return ocl_enqueue(args->device, k, (size_t)rows * group, group, kernel);
}

/* ---- layer_norm ---- */

static ag_status layer_norm(const ag_kernel_args *args) {
    static const char *name = "layer_norm";
    const int flags = args && args->attrs ? (int)args->attrs->ints[1] & (LN_WEIGHT | LN_BIAS) : 0;
    const int n_in = 1 + !!(flags & LN_WEIGHT) + !!(flags & LN_BIAS);
    ag_dtype dt = AG_F32;
    ag_status st = key_dtype(args, name, &dt);
    const ag_dtype dtypes[] = {dt, dt, dt, dt};
    if (st != AG_OK || (st = ocl_check_call(args, name, n_in, 1, dtypes)) != AG_OK) return st;
    const ag_kernel_tensor *x = &args->inputs[0], *out = &args->outputs[0];
    const int64_t n_norm = args->attrs->ints[0];
    if (n_norm < 1 || n_norm > out->ndim)
        return ocl_fail(AG_ERR_INVALID_ARG,
                        "%s: cannot normalise the last %lld dims of a %d-dim tensor", name,
                        (long long)n_norm, out->ndim);
    const int lead = out->ndim - (int)n_norm;
    char want[160];
    ag_kt_shape_str(out, want, sizeof want);
    if ((st = check_shape(name, "input", x, out->ndim, out->shape, want)) != AG_OK) return st;
    snprintf(want, sizeof want, "the output's last %d dims", (int)n_norm);
    /* Absent affine inputs are stand-ins for the kernel's arguments, never read. */
    ag_kernel_tensor v[4] = {*out, *x, *x, *x};
    for (int i = 1, bit = LN_WEIGHT; bit <= LN_BIAS; bit <<= 1) {
        if (!(flags & bit)) continue;
        v[1 + bit] = args->inputs[i++];
        st = check_shape(name, bit == LN_WEIGHT ? "weight" : "bias", &v[1 + bit], (int)n_norm,
                         out->shape + lead, want);
        if (st != AG_OK) return st;
    }
    int64_t rows = 1, len = 1;
    for (int d = 0; d < out->ndim; d++) {
        if (d < lead)
            rows *= out->shape[d];
        else
            len *= out->shape[d];
    }
    if (rows * len == 0) return AG_OK;
    for (int i = 0; i < 4; i++) ag_kt_coalesce(&v[i], 1); /* each view keeps its flat order */
    real_arg eps;
    ocl_arg a[] = {OCL_T(&v[0]), OCL_T(&v[1]), OCL_T(&v[2]),
                   OCL_T(&v[3]), OCL_V(len),   real_of(&eps, dt, args->attrs->reals[0]),
                   OCL_V(flags), {0}};
    return run_rows(args, dt, "ag_layer_norm", a, (int)(sizeof a / sizeof a[0]), rows, len);
}

/* ---- cross_entropy ---- */

/* Element offset of flat position p in view t (row-major over its shape). */
static int64_t view_offset(const ag_kernel_tensor *t, int64_t p) {
    int64_t off = t->offset;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += (p % t->shape[d]) * t->strides[d];
        p /= t->shape[d];
    }
    return off;
}

/* Runs ag_cross_entropy_check over the targets; AG_ERR_INDEX naming the first bad one. */
static ag_status check_targets(const ag_kernel_args *args, ag_kernel_tensor *t, int64_t positions,
                               int64_t classes, int64_t ignore) {
    const int device = args->device;
    cl_kernel k;
    ag_status st =
        ocl_kernel_get(device, ocl_source_nn, AG_F32, NULL, "ag_cross_entropy_check", &k);
    void *flag = NULL;
    cl_int bad = INT_MAX;
    if (st == AG_OK) st = ocl_alloc(device, sizeof bad, &flag);
    if (st != AG_OK) return st;
    cl_mem mem = flag;
    const ocl_arg a[] = {
        OCL_T(t), OCL_V(positions), OCL_V(classes), OCL_V(ignore), {NULL, sizeof mem, &mem}};
    if ((st = ocl_copy_from_host(device, flag, 0, &bad, sizeof bad)) == AG_OK &&
        (st = ocl_set_args(k, a, (int)(sizeof a / sizeof a[0]))) == AG_OK &&
        (st = ocl_enqueue(device, k, (size_t)positions, 0, "cross_entropy_check")) == AG_OK)
        st = ocl_copy_to_host(device, &bad, flag, 0, sizeof bad);
    ocl_free(device, flag, sizeof bad);
    if (st != AG_OK || bad == INT_MAX) return st;
    cl_long target = 0;
    st = ocl_copy_to_host(device, &target, t->data, (size_t)view_offset(t, bad) * sizeof target,
                          sizeof target);
    if (st != AG_OK) return st;
    return ocl_fail(AG_ERR_INDEX,
                    "cross_entropy: Target %lld is out of bounds (%lld classes, ignore_index "
                    "%lld).",
                    (long long)target, (long long)classes, (long long)ignore);
}

static ag_status cross_entropy(const ag_kernel_args *args) {
    static const char *name = "cross_entropy";
    ag_dtype dt = AG_F32;
    ag_status st = key_dtype(args, name, &dt);
    const ag_dtype dtypes[] = {dt, AG_I64, dt};
    if (st != AG_OK || (st = ocl_check_call(args, name, 2, 1, dtypes)) != AG_OK) return st;
    const ag_kernel_tensor *x = &args->inputs[0], *out = &args->outputs[0];
    const int64_t cdim = args->attrs->ints[0];
    if (cdim < 0 || cdim >= x->ndim)
        return ocl_fail(AG_ERR_INVALID_ARG, "%s: class dim %lld is out of range for %d-dim logits",
                        name, (long long)cdim, x->ndim);
    /* xs: the logits without the class dim, the shape of out and target. */
    ag_kernel_tensor v[3] = {*out, args->inputs[1], *x};
    v[2].ndim = x->ndim - 1;
    for (int d = 0; d < v[2].ndim; d++) {
        v[2].shape[d] = x->shape[d + (d >= cdim)];
        v[2].strides[d] = x->strides[d + (d >= cdim)];
    }
    char want[160];
    ag_kt_shape_str(&v[2], want, sizeof want);
    if ((st = check_shape(name, "output", out, v[2].ndim, v[2].shape, want)) != AG_OK ||
        (st = check_shape(name, "target", &v[1], v[2].ndim, v[2].shape, want)) != AG_OK)
        return st;
    const double eps = args->attrs->reals[0];
    if (!(eps >= 0 && eps <= 1))
        return ocl_fail(AG_ERR_INVALID_ARG,
                        "%s: label_smoothing must be between 0.0 and 1.0, got %g", name, eps);
    const int64_t positions = ag_kt_numel(out), classes = x->shape[cdim];
    const int64_t cstride = x->strides[cdim], ignore = args->attrs->ints[1];
    if (positions == 0) return AG_OK;
    for (int i = 0; i < 3; i++) ag_kt_coalesce(&v[i], 1);
    if ((st = check_targets(args, &v[1], positions, classes, ignore)) != AG_OK) return st;
    real_arg smoothing;
    ocl_arg a[] = {OCL_T(&v[0]),
                   OCL_T(&v[1]),
                   OCL_T(&v[2]),
                   OCL_V(classes),
                   OCL_V(cstride),
                   OCL_V(ignore),
                   real_of(&smoothing, dt, eps),
                   {0}};
    return run_rows(args, dt, "ag_cross_entropy", a, (int)(sizeof a / sizeof a[0]), positions,
                    classes);
}

const ocl_kernel_entry ocl_nn_kernels[] = {
    {"layer_norm", DT_F, layer_norm},
    {"cross_entropy", DT_F, cross_entropy},
    {NULL, 0, NULL},
};
