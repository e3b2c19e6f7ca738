/* cube::cube — y = x³, an ag op in a plugin built outside ag's tree.
 *
 * The plugin registers one op through the ABI of <ag/plugin.h>: a schema (one float32 or
 * float64 input, one output of the same shape), a cpu kernel, and a backward composed of
 * ag ops (dy/dx · g = 3x² · g), so the gradient is itself differentiable and double
 * backward works. */
#include <ag/plugin.h>

/* The host's function table, kept from init for error messages in the kernel. */
static const ag_plugin_host *host;

/* Output: same dtype and shape as the input. */
static ag_status cube_shape(int n_inputs, const ag_tensor_meta *inputs, const ag_attrs *attrs,
                            int n_outputs, ag_tensor_meta *outputs) {
    (void)n_inputs, (void)attrs, (void)n_outputs;
    outputs[0] = inputs[0];
    return AG_OK;
}

/* Number of elements of a kernel view. */
static int64_t numel(const ag_kernel_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

/* Element index (from data) of the i-th element, in row-major order, of a strided view. */
static int64_t element_at(const ag_kernel_tensor *t, int64_t i) {
    int64_t at = t->offset;
    for (int d = t->ndim - 1; d >= 0; d--) {
        at += i % t->shape[d] * t->strides[d];
        i /= t->shape[d];
    }
    return at;
}

/* Forward on the cpu: inputs may be strided views; the output is fresh and contiguous. */
static ag_status cube_cpu(const ag_kernel_args *args) {
    const ag_kernel_tensor *x = &args->inputs[0], *y = &args->outputs[0];
    int64_t n = numel(x);
    if (x->dtype == AG_F64) {
        const double *xs = x->data;
        double *ys = (double *)y->data + y->offset;
        for (int64_t i = 0; i < n; i++) {
            double v = xs[element_at(x, i)];
            ys[i] = v * v * v;
        }
    } else if (x->dtype == AG_F32) {
        const float *xs = x->data;
        float *ys = (float *)y->data + y->offset;
        for (int64_t i = 0; i < n; i++) {
            float v = xs[element_at(x, i)];
            ys[i] = v * v * v;
        }
    } else {
        return host->error(AG_ERR_DTYPE, "cube::cube: no cpu kernel for %s",
                           ag_dtype_name(x->dtype));
    }
    return AG_OK;
}

/* Backward in ag ops: grad_x = 3 · x² · grad_y. Temporaries live in a scope of their own;
 * only the result leaves it. */
static ag_status cube_backward(ag_plugin_backward_ctx *ctx) {
    if (!ctx->needs_input_grad[0]) return AG_OK;
    ag_tensor *x = ctx->saved_inputs[0], *g = ctx->grad_outputs[0];
    ag_scope *scope = ag_scope_begin();
    ag_tensor *grad = ag_mul(ag_mul_scalar(ag_mul(x, x), 3.0), g);
    ctx->grad_inputs[0] = ag_scope_return(scope, grad);
    return grad ? AG_OK : ag_last_status();
}

/* `ag check --plugin` evaluates the op on these inputs. */
static const ag_plugin_sample samples[] = {
    {.n_inputs = 1,
     .inputs = {{.dtype = AG_F64, .ndim = 2, .shape = {3, 4}}},
     .low = -2.0,
     .high = 2.0},
};

static const ag_plugin_op cube_op = {
    .struct_size = sizeof(ag_plugin_op),
    .name = "cube::cube",
    .doc = "y = x^3 (out-of-tree example)",
    .n_inputs = 1,
    .n_outputs = 1,
    .input_dtypes = {AG_DTYPE_BIT(AG_F32) | AG_DTYPE_BIT(AG_F64)},
    .save_inputs = 1u << 0, /* the backward needs x */
    .shape = cube_shape,
    .cpu_kernel = cube_cpu,
    .backward = cube_backward,
    .samples = samples,
    .n_samples = 1,
};

static ag_status cube_init(const ag_plugin_host *h, ag_plugin_registrar *registrar) {
    host = h;
    return h->register_op(registrar, &cube_op);
}

static const ag_plugin_info info = {
    .struct_size = sizeof(ag_plugin_info),
    .abi_major = AG_PLUGIN_ABI_MAJOR,
    .abi_minor = AG_PLUGIN_ABI_MINOR,
    .name = "cube",
    .version = "0.1.0",
    .init = cube_init,
};

/* The one exported symbol (AG_PLUGIN_ENTRY_SYMBOL). The host checks the ABI major in info
 * and refuses the plugin with a clear message if it differs. */
__attribute__((visibility("default"))) const ag_plugin_info *ag_plugin_entry(uint32_t host_major,
                                                                             uint32_t host_minor) {
    (void)host_major, (void)host_minor;
    return &info;
}
