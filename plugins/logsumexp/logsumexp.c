/* The fused logsumexp plugin: op "fused::logsumexp", over the last dim of x, with two
 * outputs, lse = log Σ exp(x) and the row max m (torch.logsumexp(x, -1) and
 * torch.amax(x, -1)). The forward finds m anyway to shift the exponentials, so the second
 * output is free. A 0-dim x is one row of one element; an empty last dim is refused (the
 * max of nothing is undefined, as for torch.amax).
 *
 * The backward is one fused kernel, so the op is once differentiable: a double backward
 * fails with PyTorch's @once_differentiable error. It gets (g_lse, g_m, x, lse, m) and
 * writes
 *     grad_x = g_lse · exp(x − lse) + g_m · [x = m] / (ties of m in the row)
 * The second term is the max's own gradient, split evenly between ties as torch.amax
 * does. The ABI has no way to mark an output non-differentiable (PyTorch's
 * mark_non_differentiable), so m requires grad like lse; dropping its term would give a
 * silently wrong gradient to anyone who uses m. When only lse is used, g_m is zeros and
 * the term adds nothing. */
#include <math.h>
#include "ag/plugin.h"
#include "plugin_util.h"

/* The host's error reporter, kept from init for the shape rule. */
static ag_status (*report_error)(ag_status status, const char *fmt, ...);

/* A tensor's rows: x is rows × cols with the last dim as cols (0-dim: one element). */
typedef struct rows {
    int nd;       /* leading dims that index rows */
    int64_t n;    /* number of rows */
    int64_t cols; /* elements per row */
    int64_t step; /* stride between a row's elements */
} rows;

/* The row layout of x. */
static rows rows_of(const ag_kernel_tensor *x) {
    int nd = x->ndim ? x->ndim - 1 : 0;
    return (rows){nd, strided_count(x, nd), x->ndim ? x->shape[nd] : 1,
                  x->ndim ? x->strides[nd] : 0};
}

/* cpu forward: x → (lse, m); rows are reduced in double, any strides. */
static ag_status logsumexp_cpu(const ag_kernel_args *args) {
    const ag_kernel_tensor *x = &args->inputs[0];
    const ag_kernel_tensor *lse = &args->outputs[0], *mx = &args->outputs[1];
    rows r = rows_of(x);
    for (int64_t i = 0; i < r.n; i++) {
        int64_t row = strided_offset(x, r.nd, i);
        double m = -INFINITY; /* NaN-propagating max */
        for (int64_t k = 0; k < r.cols; k++) {
            double v = strided_load(x, row + k * r.step);
            if (v > m || isnan(v)) m = v;
        }
        /* Shift by a finite max only: a row of −inf gives −inf, one with +inf gives +inf
         * (torch.logsumexp does the same). */
        double shift = isinf(m) ? 0 : m, sum = 0;
        for (int64_t k = 0; k < r.cols; k++) sum += exp(strided_load(x, row + k * r.step) - shift);
        /* A row of −inf has sum 0, and log(0) = −inf is its logsumexp. */
        /* cppcheck-suppress invalidFunctionArg */
        strided_store(lse, strided_offset(lse, lse->ndim, i), shift + log(sum));
        strided_store(mx, strided_offset(mx, mx->ndim, i), m);
    }
    return AG_OK;
}

/* cpu backward: (g_lse, g_m, x, lse, m) → grad_x, as the header comment says. */
static ag_status logsumexp_backward_cpu(const ag_kernel_args *args) {
    const ag_kernel_tensor *g_lse = &args->inputs[0], *g_m = &args->inputs[1];
    const ag_kernel_tensor *x = &args->inputs[2], *lse = &args->inputs[3], *mx = &args->inputs[4];
    const ag_kernel_tensor *gx = &args->outputs[0];
    rows r = rows_of(x), rg = rows_of(gx);
    for (int64_t i = 0; i < r.n; i++) {
        int64_t row = strided_offset(x, r.nd, i), grow = strided_offset(gx, rg.nd, i);
        double gl = strided_load(g_lse, strided_offset(g_lse, g_lse->ndim, i));
        double gm = strided_load(g_m, strided_offset(g_m, g_m->ndim, i));
        double l = strided_load(lse, strided_offset(lse, lse->ndim, i));
        double m = strided_load(mx, strided_offset(mx, mx->ndim, i));
        int64_t ties = 0;
        for (int64_t k = 0; k < r.cols; k++) ties += strided_load(x, row + k * r.step) == m;
        for (int64_t k = 0; k < r.cols; k++) {
            double v = strided_load(x, row + k * r.step);
            strided_store(gx, grow + k * rg.step, gl * exp(v - l) + (v == m ? gm / ties : 0));
        }
    }
    return AG_OK;
}

/* Shape rule: both outputs have x's dtype and x's shape without the last dim. */
static ag_status logsumexp_shape(int n_inputs, const ag_tensor_meta *inputs, const ag_attrs *attrs,
                                 int n_outputs, ag_tensor_meta *outputs) {
    (void)n_inputs, (void)attrs, (void)n_outputs;
    const ag_tensor_meta *x = &inputs[0];
    if (x->ndim > 0 && x->shape[x->ndim - 1] == 0)
        return report_error(AG_ERR_SHAPE,
                            "fused::logsumexp: the last dim of the input (dim %d) has size 0; "
                            "the row max of an empty row is undefined",
                            x->ndim - 1);
    outputs[0] = *x;
    outputs[0].ndim = x->ndim ? x->ndim - 1 : 0;
    outputs[1] = outputs[0];
    return AG_OK;
}

/* Source kernels (calling convention 1.1, AG_PLUGIN_LAUNCH_ROWS): float32, contiguous
 * row-major buffers in kernel order (inputs, then outputs; element 0 at the pointer), then
 * rows and cols of x; one work item / thread per row. */
#define LSE_KERNELS                                                                                \
    "KERNEL void logsumexp_f32(GLOBAL const float *x, GLOBAL float *lse, GLOBAL float *mx,\n"      \
    "                          INDEX rows, INDEX cols) {\n"                                        \
    "    INDEX r = THREAD_INDEX;\n"                                                                \
    "    if (r >= rows) return;\n"                                                                 \
    "    GLOBAL const float *row = x + r * cols;\n"                                                \
    "    float m = -INFINITY, sum = 0.0f;\n"                                                       \
    "    for (INDEX k = 0; k < cols; k++)\n"                                                       \
    "        if (row[k] > m || isnan(row[k])) m = row[k];\n"                                       \
    "    float shift = isinf(m) ? 0.0f : m;\n"                                                     \
    "    for (INDEX k = 0; k < cols; k++) sum += exp(row[k] - shift);\n"                           \
    "    lse[r] = shift + log(sum);\n"                                                             \
    "    mx[r] = m;\n"                                                                             \
    "}\n"                                                                                          \
    "KERNEL void logsumexp_backward_f32(GLOBAL const float *g_lse, GLOBAL const float *g_m,\n"     \
    "                                   GLOBAL const float *x, GLOBAL const float *lse,\n"         \
    "                                   GLOBAL const float *mx, GLOBAL float *gx,\n"               \
    "                                   INDEX rows, INDEX cols) {\n"                               \
    "    INDEX r = THREAD_INDEX;\n"                                                                \
    "    if (r >= rows) return;\n"                                                                 \
    "    GLOBAL const float *row = x + r * cols;\n"                                                \
    "    float ties = 0.0f;\n"                                                                     \
    "    for (INDEX k = 0; k < cols; k++) ties += row[k] == mx[r] ? 1.0f : 0.0f;\n"                \
    "    for (INDEX k = 0; k < cols; k++)\n"                                                       \
    "        gx[r * cols + k] = g_lse[r] * exp(row[k] - lse[r])\n"                                 \
    "                           + (row[k] == mx[r] ? g_m[r] / ties : 0.0f);\n"                     \
    "}\n"
static const char lse_opencl[] = AG_OPENCL_PRELUDE LSE_KERNELS;
static const char lse_cuda[] = AG_CUDA_PRELUDE LSE_KERNELS;
static const ag_plugin_kernel_source lse_sources[] = {
    {"opencl", lse_opencl, "logsumexp_f32"},
    {"cuda", lse_cuda, "logsumexp_f32"},
};
static const ag_plugin_kernel_source lse_backward_sources[] = {
    {"opencl", lse_opencl, "logsumexp_backward_f32"},
    {"cuda", lse_cuda, "logsumexp_backward_f32"},
};

/* `ag check` inputs: a batch of rows, a 3-d tensor, a single row. */
static const ag_plugin_sample lse_samples[] = {
    {.n_inputs = 1, .inputs = {{AG_F64, 2, {3, 5}}}, .low = -3, .high = 3},
    {.n_inputs = 1, .inputs = {{AG_F64, 3, {2, 3, 4}}}, .low = -3, .high = 3},
    {.n_inputs = 1, .inputs = {{AG_F64, 1, {6}}}, .low = -3, .high = 3},
};

static const ag_plugin_op lse_op = {
    .struct_size = sizeof(ag_plugin_op),
    .name = "fused::logsumexp",
    .doc = "(log sum exp(x), max x) over the last dim (float32/float64); fused backward "
           "kernel, once differentiable",
    .n_inputs = 1,
    .n_outputs = 2,
    .input_dtypes = {AG_DTYPE_BIT(AG_F32) | AG_DTYPE_BIT(AG_F64)},
    .save_inputs = 1u << 0,
    .save_outputs = 1u << 0 | 1u << 1,
    .shape = logsumexp_shape,
    .cpu_kernel = logsumexp_cpu,
    .sources = lse_sources,
    .n_sources = sizeof lse_sources / sizeof lse_sources[0],
    .backward_cpu_kernel = logsumexp_backward_cpu,
    .backward_sources = lse_backward_sources,
    .n_backward_sources = sizeof lse_backward_sources / sizeof lse_backward_sources[0],
    .flags = AG_PLUGIN_ONCE_DIFFERENTIABLE,
    .samples = lse_samples,
    .n_samples = sizeof lse_samples / sizeof lse_samples[0],
    .launch = AG_PLUGIN_LAUNCH_ROWS,
};

/* Keeps the error reporter and registers the one op. */
static ag_status logsumexp_init(const ag_plugin_host *host, ag_plugin_registrar *registrar) {
    report_error = host->error;
    return host->register_op(registrar, &lse_op);
}

static const ag_plugin_info lse_info = {
    .struct_size = sizeof(ag_plugin_info),
    .abi_major = AG_PLUGIN_ABI_MAJOR,
    .abi_minor = AG_PLUGIN_ABI_MINOR,
    .name = "logsumexp",
    .version = "1.0.0",
    .init = logsumexp_init,
};

/* Plugin entry: the host checks the ABI version in the returned info. */
const ag_plugin_info *ag_plugin_entry(uint32_t host_abi_major, uint32_t host_abi_minor) {
    (void)host_abi_major, (void)host_abi_minor;
    return &lse_info;
}
