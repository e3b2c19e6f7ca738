/* Validation of kernel arguments: the cpu backend's names for the checks every backend
 * shares (backends/common/kernel_checks.h), reporting through cpu_fail. */
#include "cpu_internal.h"

int64_t cpu_numel(const ag_kernel_tensor *t) {
    return ag_kt_numel(t);
}

const char *cpu_shape_str(const ag_kernel_tensor *t, char *buf, size_t size) {
    return ag_kt_shape_str(t, buf, size);
}

ag_status cpu_check_args(const ag_kernel_args *args, const char *kernel, int n_inputs,
                         int n_outputs) {
    return ag_kt_check_call(args, kernel, n_inputs, n_outputs, NULL, cpu_fail);
}

ag_status cpu_check_dtype(const char *kernel, const ag_kernel_tensor *t, const char *role,
                          ag_dtype dtype) {
    return ag_kt_check_dtype(kernel, t, role, dtype, cpu_fail);
}

ag_status cpu_check_like(const char *kernel, const ag_kernel_tensor *t, const char *role,
                         ag_dtype dtype, const ag_kernel_tensor *ref) {
    return ag_kt_check_like(kernel, t, role, dtype, ref, cpu_fail);
}

ag_status cpu_check_dim(const char *kernel, const ag_kernel_tensor *t, int64_t dim) {
    return ag_kt_check_dim(kernel, t, dim, cpu_fail);
}
