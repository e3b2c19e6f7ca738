/* Validation of kernel arguments and the formatting of the error messages that name the
 * kernel, dtypes and shapes involved. */
#include "cpu_internal.h"

#include <stdio.h>

int64_t cpu_numel(const ag_kernel_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

const char *cpu_shape_str(const ag_kernel_tensor *t, char *buf, size_t size) {
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < t->ndim && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", d ? ", " : "",
                                 (long long)t->shape[d]);
    if (used < size) snprintf(buf + used, size - used, "]");
    return buf;
}

/* Checks one tensor's ndim, extents and buffer. */
static ag_status check_tensor(const char *kernel, const ag_kernel_tensor *t, const char *role,
                              int index) {
    if (t->ndim < 0 || t->ndim > AG_MAX_DIMS)
        return cpu_fail(AG_ERR_INVALID_ARG, "%s: %s %d has ndim %d (must be 0..%d)", kernel, role,
                        index, t->ndim, AG_MAX_DIMS);
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] < 0)
            return cpu_fail(AG_ERR_SHAPE, "%s: %s %d has negative extent %lld at dim %d", kernel,
                            role, index, (long long)t->shape[d], d);
    if (!t->data && cpu_numel(t) > 0)
        return cpu_fail(AG_ERR_INVALID_ARG, "%s: %s %d has no buffer", kernel, role, index);
    return AG_OK;
}

ag_status cpu_check_args(const ag_kernel_args *args, const char *kernel, int n_inputs,
                         int n_outputs) {
    if (!args || args->struct_size < sizeof(ag_kernel_args))
        return cpu_fail(AG_ERR_INVALID_ARG, "%s: missing or too small ag_kernel_args", kernel);
    if (args->n_inputs != n_inputs || args->n_outputs != n_outputs)
        return cpu_fail(AG_ERR_INVALID_ARG, "%s: takes %d inputs and %d outputs, got %d and %d",
                        kernel, n_inputs, n_outputs, args->n_inputs, args->n_outputs);
    if ((n_inputs && !args->inputs) || !args->outputs || !args->attrs)
        return cpu_fail(AG_ERR_INVALID_ARG, "%s: NULL inputs, outputs or attrs", kernel);
    for (int i = 0; i < n_inputs; i++) {
        const ag_status st = check_tensor(kernel, &args->inputs[i], "input", i);
        if (st != AG_OK) return st;
    }
    for (int i = 0; i < n_outputs; i++) {
        const ag_status st = check_tensor(kernel, &args->outputs[i], "output", i);
        if (st != AG_OK) return st;
    }
    return AG_OK;
}

ag_status cpu_check_dtype(const char *kernel, const ag_kernel_tensor *t, const char *role,
                          ag_dtype dtype) {
    if (t->dtype == dtype) return AG_OK;
    return cpu_fail(AG_ERR_DTYPE, "%s: %s is %s, expected %s", kernel, role,
                    ag_dtype_name(t->dtype), ag_dtype_name(dtype));
}

ag_status cpu_check_like(const char *kernel, const ag_kernel_tensor *t, const char *role,
                         ag_dtype dtype, const ag_kernel_tensor *ref) {
    const ag_status st = cpu_check_dtype(kernel, t, role, dtype);
    if (st != AG_OK) return st;
    bool same = t->ndim == ref->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == ref->shape[d];
    if (same) return AG_OK;
    char a[160], b[160];
    return cpu_fail(AG_ERR_SHAPE, "%s: %s %s has shape %s but the output has shape %s", kernel,
                    ag_dtype_name(dtype), role, cpu_shape_str(t, a, sizeof a),
                    cpu_shape_str(ref, b, sizeof b));
}

ag_status cpu_check_dim(const char *kernel, const ag_kernel_tensor *t, int64_t dim) {
    if (dim >= 0 && dim < t->ndim) return AG_OK;
    char s[160];
    return cpu_fail(AG_ERR_INVALID_ARG, "%s: dim %lld is out of range for a %s tensor of shape %s",
                    kernel, (long long)dim, ag_dtype_name(t->dtype), cpu_shape_str(t, s, sizeof s));
}
