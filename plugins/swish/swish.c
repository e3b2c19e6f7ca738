/* The swish plugin (seed §I-1): op "swish::swish", y = x·sigmoid(x), elementwise.
 *
 * Forward: a cpu kernel honouring strides, and OpenCL C / CUDA C sources for backends that
 * compile kernels at run time. Backward: composed of ag ops from the saved input,
 * grad·(s + x·s·(1−s)) with s = sigmoid(x), so it is recorded under create_graph and a
 * double backward works. Only x is saved: s is recomputed rather than stored, as the
 * built-in ops do (docs/memory.md). */
#include <math.h>
#include "ag/plugin.h"
#include "plugin_util.h"

/* cpu forward: one input, one output of its shape and dtype, any strides. x/(1 + e^−x) is
 * x·sigmoid(x); for very negative x, e^−x overflows to inf and gives the limit −0. */
static ag_status swish_cpu(const ag_kernel_args *args) {
    const ag_kernel_tensor *x = &args->inputs[0], *y = &args->outputs[0];
    int64_t n = strided_count(x, x->ndim);
    for (int64_t i = 0; i < n; i++) {
        double v = strided_load(x, strided_offset(x, x->ndim, i));
        strided_store(y, strided_offset(y, y->ndim, i), v / (1 + exp(-v)));
    }
    return AG_OK;
}

/* Shape rule: the output has the input's dtype and shape. */
static ag_status swish_shape(int n_inputs, const ag_tensor_meta *inputs, const ag_attrs *attrs,
                             int n_outputs, ag_tensor_meta *outputs) {
    (void)n_inputs, (void)attrs, (void)n_outputs;
    outputs[0] = inputs[0];
    return AG_OK;
}

/* Composed backward: grad·(s + x·s·(1−s)). Intermediates belong to the backward's scope. */
static ag_status swish_backward(ag_plugin_backward_ctx *ctx) {
    if (!ctx->needs_input_grad[0]) return AG_OK;
    ag_tensor *x = ctx->saved_inputs[0], *s = ag_sigmoid(x);
    ag_tensor *one_minus_s = ag_add_scalar(ag_neg(s), 1.0);
    ag_tensor *dydx = ag_add(s, ag_mul(ag_mul(x, s), one_minus_s));
    ctx->grad_inputs[0] = ag_mul(ctx->grad_outputs[0], dydx);
    return ctx->grad_inputs[0] ? AG_OK : ag_last_status();
}

/* Source kernels (calling convention 1.1, AG_PLUGIN_LAUNCH_ELEMENTS, the default): float32,
 * the input's and the output's contiguous buffers (element 0 at the pointer), then the
 * element count; one work item / thread per element. */
#define SWISH_KERNEL                                                                               \
    "KERNEL void swish_f32(GLOBAL const float *x, GLOBAL float *y, INDEX n) {\n"                   \
    "    INDEX i = THREAD_INDEX;\n"                                                                \
    "    if (i < n) y[i] = x[i] / (1.0f + exp(-x[i]));\n"                                          \
    "}\n"
static const ag_plugin_kernel_source swish_sources[] = {
    {"opencl", AG_OPENCL_PRELUDE SWISH_KERNEL, "swish_f32"},
    {"cuda", AG_CUDA_PRELUDE SWISH_KERNEL, "swish_f32"},
};

/* `ag check` inputs: a matrix, a 0-dim tensor, and float32 (checked for its forward). */
static const ag_plugin_sample swish_samples[] = {
    {.n_inputs = 1, .inputs = {{AG_F64, 2, {3, 4}}}, .low = -4, .high = 4},
    {.n_inputs = 1, .inputs = {{AG_F64, 0, {0}}}, .low = -4, .high = 4},
    {.n_inputs = 1, .inputs = {{AG_F32, 1, {7}}}, .low = -4, .high = 4},
};

static const ag_plugin_op swish_op = {
    .struct_size = sizeof(ag_plugin_op),
    .name = "swish::swish",
    .doc = "y = x * sigmoid(x) elementwise (float32/float64); backward in ag ops, so "
           "differentiable again",
    .n_inputs = 1,
    .n_outputs = 1,
    .input_dtypes = {AG_DTYPE_BIT(AG_F32) | AG_DTYPE_BIT(AG_F64)},
    .save_inputs = 1u << 0,
    .shape = swish_shape,
    .cpu_kernel = swish_cpu,
    .sources = swish_sources,
    .n_sources = sizeof swish_sources / sizeof swish_sources[0],
    .backward = swish_backward,
    .samples = swish_samples,
    .n_samples = sizeof swish_samples / sizeof swish_samples[0],
};

/* Registers the one op. */
static ag_status swish_init(const ag_plugin_host *host, ag_plugin_registrar *registrar) {
    return host->register_op(registrar, &swish_op);
}

static const ag_plugin_info swish_info = {
    .struct_size = sizeof(ag_plugin_info),
    .abi_major = AG_PLUGIN_ABI_MAJOR,
    .abi_minor = AG_PLUGIN_ABI_MINOR,
    .name = "swish",
    .version = "1.0.0",
    .init = swish_init,
};

/* Plugin entry: the host checks the ABI version in the returned info. */
const ag_plugin_info *ag_plugin_entry(uint32_t host_abi_major, uint32_t host_abi_minor) {
    (void)host_abi_major, (void)host_abi_minor;
    return &swish_info;
}
