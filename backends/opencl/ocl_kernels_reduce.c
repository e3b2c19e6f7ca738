/* Reductions (sum max min argmax argmin) and softmax / log_softmax of the OpenCL backend,
 * launching the group kernels of kernels/reduce.cl: `lanes` work items fold one row (an
 * output's reduced elements, or a softmax row) and combine in local memory. A reduction
 * with few outputs and many elements per output is also split into chunks whose partial
 * results a second kernel combines in order, so the device stays busy. */
#include "ocl_kernel_util.h"

extern const char ocl_source_reduce[];

#define DT_FI ((1u << AG_F32) | (1u << AG_F64) | (1u << AG_I64))
#define DT_F  ((1u << AG_F32) | (1u << AG_F64))

/* Fewer outputs than this, each of at least SPLIT_MIN elements, are split into chunks of
 * about SPLIT_CHUNK elements, at most SPLIT_MAX per output. */
#define SPLIT_OUTPUTS 64
#define SPLIT_MIN     65536
#define SPLIT_CHUNK   16384
#define SPLIT_MAX     64

/* Lanes per row of `len` elements: about four elements per lane, at most `wg`. */
static size_t lanes_for(int64_t len, size_t wg) {
    const size_t want = ocl_pow2_floor(len / 4 > 1 ? (size_t)(len / 4) : 1);
    return want < wg ? want : wg;
}

/* Enqueues group kernel k over nrows rows of `lanes` lanes in groups of wg items. */
static ag_status launch_rows(int device, cl_kernel k, size_t lanes, int64_t nrows, size_t wg,
                             const char *name) {
    return ocl_enqueue(device, k, (size_t)nrows * lanes, wg, name);
}

/* Temporary device buffers of the partial results of a split reduction. */
typedef struct parts {
    void *buf[3]; /* values, compensations, positions */
    size_t bytes;
} parts;

static void parts_free(int device, parts *p) {
    for (int i = 0; i < 3; i++)
        if (p->buf[i]) ocl_free(device, p->buf[i], p->bytes);
}

/* Reduction `name` (OpenCL kernel reduce_<name>): every dim where out has extent 1 and in
 * does not, or with `arg` exactly dim attrs->ints[0] (output i64). `empty_ok`: zero
 * elements per output are allowed. */
static ag_status run_reduce(const ag_kernel_args *args, const char *name, bool arg, bool empty_ok) {
    /* views[0] out, views[1] in at each output's first element: both walk out's shape;
     * inner: the reduced elements from there. */
    ag_kernel_tensor views[2], inner;
    ag_status st = ocl_check_call(args, name, 1, 1, NULL);
    if (st == AG_OK)
        st = ag_kt_check_reduce(args, name, args->inputs[0].dtype, arg, empty_ok, &views[1], &inner,
                                ocl_fail);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *out = &args->outputs[0];
    const ag_dtype dtype = args->inputs[0].dtype;
    views[0] = *out;
    const int64_t nout = ag_kt_numel(out), nred = ag_kt_numel(&inner);
    if (nout == 0) return AG_OK;
    ag_kt_coalesce(views, 2);
    ag_kt_coalesce(&inner, 1);

    char kname[32], fname[40];
    snprintf(kname, sizeof kname, "reduce_%s", name);
    snprintf(fname, sizeof fname, "%s_finish", kname);
    cl_kernel k, kf = NULL;
    const int dev = args->device;
    if ((st = ocl_kernel_get(dev, ocl_source_reduce, dtype, NULL, kname, &k)) != AG_OK) return st;
    const size_t wg = ocl_group_size(dev, k), lanes = lanes_for(nred, wg);
    int64_t split = 1;
    if (nout < SPLIT_OUTPUTS && nred >= SPLIT_MIN)
        split = nred / SPLIT_CHUNK < SPLIT_MAX ? nred / SPLIT_CHUNK : SPLIT_MAX;

    /* Without a split the part arguments are unused; out's buffer stands in. */
    parts p = {{NULL, NULL, NULL}, (size_t)(nout * split) * 8};
    cl_mem pm[3];
    for (int i = 0; i < 3; i++) {
        if (split > 1 && st == AG_OK) st = ocl_alloc(dev, p.bytes, &p.buf[i]);
        pm[i] = p.buf[i] ? (cl_mem)p.buf[i] : (cl_mem)out->data;
    }
    if (st == AG_OK && split > 1)
        st = ocl_kernel_get(dev, ocl_source_reduce, dtype, NULL, fname, &kf);
    const ocl_view iv = ocl_view_of(&inner);
    const cl_uint ln = (cl_uint)lanes;
    const ocl_arg a[] = {OCL_T(&views[1]), OCL_V(iv), OCL_T(&views[0]), OCL_V(nout),  OCL_V(nred),
                         OCL_V(split),     OCL_V(ln), OCL_V(pm[0]),     OCL_V(pm[1]), OCL_V(pm[2])};
    if (st == AG_OK) st = ocl_set_args(k, a, 10);
    if (st == AG_OK) st = launch_rows(dev, k, lanes, nout * split, wg, name);
    if (st == AG_OK && split > 1) {
        const ocl_arg f[] = {OCL_V(pm[0]),     OCL_V(pm[1]), OCL_V(pm[2]),
                             OCL_T(&views[0]), OCL_V(nout),  OCL_V(split)};
        st = ocl_set_args(kf, f, 6);
        if (st == AG_OK) st = ocl_launch(dev, kf, nout, name);
    }
    parts_free(dev, &p);
    return st;
}

/* softmax / log_softmax over dim attrs->ints[0]. */
static ag_status run_softmax(const ag_kernel_args *args, const char *name) {
    ag_status st = ocl_check_call(args, name, 1, 1, NULL);
    if (st == AG_OK) st = ag_kt_check_softmax(args, name, args->inputs[0].dtype, ocl_fail);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *in = &args->inputs[0], *out = &args->outputs[0];
    const ag_dtype dtype = in->dtype;
    if (ag_kt_numel(out) == 0) return AG_OK;

    ag_kernel_tensor rows[2];
    int64_t len, sx, so;
    ag_kt_softmax_rows(in, out, args->attrs->ints[0], rows, &len, &sx, &so);
    ag_kt_coalesce(rows, 2);
    const int64_t nrows = ag_kt_numel(&rows[0]);
    cl_kernel k;
    if ((st = ocl_kernel_get(args->device, ocl_source_reduce, dtype, NULL, name, &k)) != AG_OK)
        return st;
    const size_t wg = ocl_group_size(args->device, k), lanes = lanes_for(len, wg);
    const cl_uint ln = (cl_uint)lanes;
    const ocl_arg a[] = {OCL_T(&rows[0]), OCL_T(&rows[1]), OCL_V(nrows), OCL_V(len),
                         OCL_V(sx),       OCL_V(so),       OCL_V(ln)};
    if ((st = ocl_set_args(k, a, 7)) != AG_OK) return st;
    return launch_rows(args->device, k, lanes, nrows, wg, name);
}

#define DEFINE_ENTRY(NAME, CALL)                                                                   \
    static ag_status NAME##_entry(const ag_kernel_args *args) {                                    \
        return CALL;                                                                               \
    }
DEFINE_ENTRY(sum, run_reduce(args, "sum", false, true))
DEFINE_ENTRY(max, run_reduce(args, "max", false, false))
DEFINE_ENTRY(min, run_reduce(args, "min", false, false))
DEFINE_ENTRY(argmax, run_reduce(args, "argmax", true, false))
DEFINE_ENTRY(argmin, run_reduce(args, "argmin", true, false))
DEFINE_ENTRY(softmax, run_softmax(args, "softmax"))
DEFINE_ENTRY(log_softmax, run_softmax(args, "log_softmax"))

const ocl_kernel_entry ocl_reduce_kernels[] = {
    {"sum", DT_FI, sum_entry},
    {"max", DT_FI, max_entry},
    {"min", DT_FI, min_entry},
    {"argmax", DT_FI, argmax_entry},
    {"argmin", DT_FI, argmin_entry},
    {"softmax", DT_F, softmax_entry},
    {"log_softmax", DT_F, log_softmax_entry},
    {NULL, 0, NULL},
};
