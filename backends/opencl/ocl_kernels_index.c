/* Indexing kernels of the OpenCL backend: index_select, gather (index_take of
 * kernels/index.cl, one work item per output element) and index_add, scatter_add (out =
 * self by index_copy, then index_put_add: one work item per column along dim, adding in
 * order, so repeated indices are exact and deterministic without atomics).
 *
 * Indices are validated first on the device (index_check lowers a flag to the first bad
 * position); the flag is read back and a bad index fails with AG_ERR_INDEX before anything
 * is written. */
#include "ocl_kernel_util.h"

#include <limits.h>

extern const char ocl_source_index[];

#define DT_FI ((1u << AG_F32) | (1u << AG_F64) | (1u << AG_I64))

/* Fails with AG_ERR_INDEX when an element of `index` lies outside [0, size). */
static ag_status check_indices(const ag_kernel_args *args, const char *name,
                               const ag_kernel_tensor *index, int64_t size, int dim) {
    const int dev = args->device;
    const int64_t count = ag_kt_numel(index);
    if (count == 0) return AG_OK;
    cl_kernel k;
    ag_status st =
        ocl_kernel_get(dev, ocl_source_index, args->inputs[0].dtype, NULL, "index_check", &k);
    void *flag = NULL;
    cl_int bad = INT_MAX;
    if (st == AG_OK) st = ocl_alloc(dev, sizeof bad, &flag);
    if (st == AG_OK) st = ocl_copy_from_host(dev, flag, 0, &bad, sizeof bad);
    const cl_mem fm = flag;
    const ocl_arg a[] = {OCL_T(index), OCL_V(count), OCL_V(size), OCL_V(fm)};
    if (st == AG_OK) st = ocl_set_args(k, a, 4);
    if (st == AG_OK) st = ocl_launch(dev, k, count, name);
    if (st == AG_OK) st = ocl_copy_to_host(dev, &bad, flag, 0, sizeof bad);
    if (flag) ocl_free(dev, flag, sizeof bad);
    if (st != AG_OK || bad == INT_MAX) return st;

    /* The offending element: position `bad` in row-major order of index's shape. */
    const int64_t off = ag_kt_offset(index, bad);
    cl_long value = 0;
    if ((st = ocl_copy_to_host(dev, &value, index->data, (size_t)off * sizeof value,
                               sizeof value)) != AG_OK)
        return st;
    return ocl_fail(AG_ERR_INDEX, "%s: index %lld is out of range for dimension %d of size %lld",
                    name, (long long)value, dim, (long long)size);
}

/* index_select(x, index[n]) (`select`) and gather(x, index): out = x read through the index
 * along dim. */
static ag_status run_take(const ag_kernel_args *args, const char *name, bool select) {
    int dim;
    ag_status st = ocl_check_call(args, name, 2, 1, NULL);
    if (st == AG_OK)
        st = ag_kt_check_take(args, name, args->inputs[0].dtype, select, &dim, ocl_fail);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *x = &args->inputs[0], *index = &args->inputs[1];
    const ag_kernel_tensor *out = &args->outputs[0];
    if ((st = check_indices(args, name, index, x->shape[dim], dim)) != AG_OK) return st;
    const int64_t count = ag_kt_numel(out);
    if (count == 0) return AG_OK;
    /* v[0] x (stride 0 at dim), v[1] out, v[2] the index: all walk out's shape. */
    ag_kernel_tensor v[3];
    int64_t step;
    ag_kt_index_views(out, x, out, index, dim, select, v, &step);
    ag_kt_coalesce(v, 3);
    cl_kernel k;
    if ((st = ocl_kernel_get(args->device, ocl_source_index, x->dtype, NULL, "index_take", &k)) !=
        AG_OK)
        return st;
    const ocl_arg a[] = {OCL_T(&v[0]), OCL_T(&v[2]), OCL_T(&v[1]), OCL_V(count), OCL_V(step)};
    if ((st = ocl_set_args(k, a, 5)) != AG_OK) return st;
    return ocl_launch(args->device, k, count, name);
}

/* out = self (same shape, any strides). */
static ag_status copy_self(const ag_kernel_args *args, const char *name) {
    ag_kernel_tensor v[2] = {args->inputs[0], args->outputs[0]};
    const int64_t count = ag_kt_numel(&v[0]);
    if (count == 0) return AG_OK;
    ag_kt_coalesce(v, 2);
    cl_kernel k;
    ag_status st =
        ocl_kernel_get(args->device, ocl_source_index, v[0].dtype, NULL, "index_copy", &k);
    const ocl_arg a[] = {OCL_T(&v[0]), OCL_T(&v[1]), OCL_V(count)};
    if (st == AG_OK) st = ocl_set_args(k, a, 3);
    return st == AG_OK ? ocl_launch(args->device, k, count, name) : st;
}

/* index_add(self, index[n], source) (`index_add`) and scatter_add(self, index, src):
 * out = self, then out[index] += source along dim. */
static ag_status run_put_add(const ag_kernel_args *args, const char *name, bool index_add) {
    int dim;
    const ag_kernel_tensor *walk; /* the tensor whose shape the accumulation covers */
    ag_status st = ocl_check_call(args, name, 3, 1, NULL);
    if (st == AG_OK)
        st = ag_kt_check_put_add(args, name, args->inputs[0].dtype, index_add, &dim, &walk,
                                 ocl_fail);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *self = &args->inputs[0], *index = &args->inputs[1];
    const ag_kernel_tensor *src = &args->inputs[2], *out = &args->outputs[0];
    if ((st = check_indices(args, name, index, self->shape[dim], dim)) != AG_OK) return st;
    if ((st = copy_self(args, name)) != AG_OK) return st;

    /* Columns: walk's shape with extent 1 at dim; v[0] out, v[1] src, v[2] index. */
    const int64_t len = walk->shape[dim];
    ag_kernel_tensor v[3] = {*walk, *walk, *walk};
    v[0].data = out->data;
    v[0].offset = out->offset;
    v[1].data = src->data;
    v[1].offset = src->offset;
    v[2].data = index->data;
    v[2].offset = index->offset;
    for (int d = 0; d < walk->ndim; d++) {
        v[0].strides[d] = out->strides[d];
        v[1].strides[d] = src->strides[d];
        v[2].strides[d] = index_add ? 0 : index->strides[d];
        for (int i = 0; i < 3; i++) v[i].shape[d] = d == dim ? 1 : walk->shape[d];
    }
    const int64_t ncols = ag_kt_numel(&v[0]);
    if (ncols == 0 || len == 0) return AG_OK;
    const int64_t ostep = out->strides[dim], sstep = src->strides[dim];
    const int64_t istep = index_add ? index->strides[0] : index->strides[dim];
    ag_kt_coalesce(v, 3);
    cl_kernel k;
    if ((st = ocl_kernel_get(args->device, ocl_source_index, out->dtype, NULL, "index_put_add",
                             &k)) != AG_OK)
        return st;
    const ocl_arg a[] = {OCL_T(&v[0]), OCL_T(&v[1]), OCL_T(&v[2]), OCL_V(ncols),
                         OCL_V(len),   OCL_V(ostep), OCL_V(sstep), OCL_V(istep)};
    if ((st = ocl_set_args(k, a, 8)) != AG_OK) return st;
    return ocl_launch(args->device, k, ncols, name);
}

static ag_status index_select_entry(const ag_kernel_args *args) {
    return run_take(args, "index_select", true);
}
static ag_status gather_entry(const ag_kernel_args *args) {
    return run_take(args, "gather", false);
}
static ag_status index_add_entry(const ag_kernel_args *args) {
    return run_put_add(args, "index_add", true);
}
static ag_status scatter_add_entry(const ag_kernel_args *args) {
    return run_put_add(args, "scatter_add", false);
}

const ocl_kernel_entry ocl_index_kernels[] = {
    {"index_select", DT_FI, index_select_entry},
    {"index_add", DT_FI, index_add_entry},
    {"gather", DT_FI, gather_entry},
    {"scatter_add", DT_FI, scatter_add_entry},
    {NULL, 0, NULL},
};
