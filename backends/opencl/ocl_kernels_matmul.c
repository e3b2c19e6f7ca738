/* Batched matrix product of the OpenCL backend: the tiled local-memory kernels of
 * kernels/matmul.cl over any strides, with batch dims broadcast by the core (stride 0).
 * The first tile variant whose work group and local memory the device allows is used. */
#include "ocl_kernel_util.h"

extern const char ocl_source_matmul[];

/* Tile variants of matmul.cl, fastest first: a group of lx x ly items computes a ts x ts
 * output tile with `local` elements of local memory. */
static const struct {
    const char *name;
    size_t ts, lx, ly, local;
} g_tiles[] = {
    {"matmul_b64", 64, 16, 16, 2 * 16 * 65},
    {"matmul_b32", 32, 8, 8, 2 * 16 * 33},
    {"matmul_b4", 4, 4, 4, 2 * 4 * 5},
};

/* The matmul entry: the checks, then the first tile variant that the device runs. */
static ag_status matmul_entry(const ag_kernel_args *args) {
    ag_status st = ocl_check_call(args, "matmul", 2, 1, NULL);
    if (st == AG_OK) st = ag_kt_check_matmul(args, args->inputs[0].dtype, ocl_fail);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *a = &args->inputs[0], *b = &args->inputs[1], *out = &args->outputs[0];
    const ag_dtype dtype = a->dtype;
    const int nd = out->ndim;
    const int64_t m = out->shape[nd - 2], n = out->shape[nd - 1], k = a->shape[nd - 1];
    /* The batch dims of the three operands, walked together. */
    ag_kernel_tensor batch[3] = {*out, *a, *b};
    for (int i = 0; i < 3; i++) batch[i].ndim = nd - 2;
    const int64_t nbatch = ag_kt_numel(&batch[0]);
    if (nbatch == 0 || m == 0 || n == 0) return AG_OK;
    ag_kt_coalesce(batch, 3);

    const int dev = args->device;
    cl_kernel kern = NULL;
    size_t v, ts = 0;
    for (v = 0; v < sizeof g_tiles / sizeof g_tiles[0]; v++) {
        if ((st = ocl_kernel_get(dev, ocl_source_matmul, dtype, NULL, g_tiles[v].name, &kern)) !=
            AG_OK)
            return st;
        const uint64_t local = g_tiles[v].local * ag_dtype_size(dtype);
        size_t wg = 0;
        if (clGetKernelWorkGroupInfo(kern, ocl_device_at(dev)->id, CL_KERNEL_WORK_GROUP_SIZE,
                                     sizeof wg, &wg, NULL) == CL_SUCCESS &&
            wg >= g_tiles[v].lx * g_tiles[v].ly && local <= ocl_device_at(dev)->local_mem) {
            ts = g_tiles[v].ts;
            break;
        }
    }
    if (!ts)
        return ocl_fail(AG_ERR_UNSUPPORTED, "matmul: device %s runs no tile variant",
                        ocl_device_at(dev)->name);

    const int64_t ars = a->strides[nd - 2], acs = a->strides[nd - 1];
    const int64_t brs = b->strides[nd - 2], bcs = b->strides[nd - 1];
    const int64_t ors = out->strides[nd - 2], ocs = out->strides[nd - 1];
    const ocl_arg kargs[] = {OCL_T(&batch[1]), OCL_T(&batch[2]), OCL_T(&batch[0]), OCL_V(m),
                             OCL_V(n),         OCL_V(k),         OCL_V(ars),       OCL_V(acs),
                             OCL_V(brs),       OCL_V(bcs),       OCL_V(ors),       OCL_V(ocs)};
    if ((st = ocl_set_args(kern, kargs, 12)) != AG_OK) return st;
    const size_t mt = (size_t)((m + (int64_t)ts - 1) / (int64_t)ts);
    const size_t nt = (size_t)((n + (int64_t)ts - 1) / (int64_t)ts);
    const size_t global[2] = {nt * g_tiles[v].lx, (size_t)nbatch * mt * g_tiles[v].ly};
    const size_t local[2] = {g_tiles[v].lx, g_tiles[v].ly};
    return ocl_enqueue_2d(dev, kern, global, local, "matmul");
}

#define DT_FI ((1u << AG_F32) | (1u << AG_F64) | (1u << AG_I64))

const ocl_kernel_entry ocl_matmul_kernels[] = {
    {"matmul", DT_FI, matmul_entry},
    {NULL, 0, NULL},
};
