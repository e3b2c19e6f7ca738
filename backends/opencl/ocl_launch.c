/* Launching OpenCL C kernels: kernel arguments from ag_kernel_tensor views and enqueueing
 * 1-D and 2-D ranges on a device's in-order queue. */
#include "ocl_internal.h"

#include <stdio.h>
#include <string.h>

ocl_view ocl_view_of(const ag_kernel_tensor *t) {
    ocl_view v;
    memset(&v, 0, sizeof v); /* unused dims are zero, so the bytes passed are defined */
    v.offset = t->offset;
    v.ndim = t->ndim;
    for (int d = 0; d < t->ndim && d < AG_MAX_DIMS; d++) {
        v.shape[d] = t->shape[d];
        v.strides[d] = t->strides[d];
    }
    return v;
}

/* Sets one argument; `what` says which in the message. */
static int set_arg(cl_kernel k, int arg, size_t size, const void *value, const char *what) {
    const cl_int err = clSetKernelArg(k, (cl_uint)arg, size, value);
    if (err == CL_SUCCESS) return arg + 1;
    char msg[96];
    snprintf(msg, sizeof msg, "clSetKernelArg (argument %d, %s)", arg, what);
    ocl_check(err, msg);
    return -1;
}

int ocl_arg_tensor(cl_kernel k, int arg, const ag_kernel_tensor *t) {
    if (arg < 0) return -1; /* an earlier argument failed: keep its message */
    const cl_mem mem = (cl_mem)t->data;
    if (set_arg(k, arg, sizeof mem, &mem, "buffer") < 0) return -1;
    const ocl_view v = ocl_view_of(t);
    return set_arg(k, arg + 1, sizeof v, &v, "view");
}

int ocl_arg_value(cl_kernel k, int arg, size_t size, const void *value) {
    if (arg < 0) return -1;
    return set_arg(k, arg, size, value, "value");
}

/* Rounds n up to a multiple of m (m > 0). */
static size_t round_up(size_t n, size_t m) {
    return (n + m - 1) / m * m;
}

/* Enqueues k over `dims` dimensions; local NULL lets the runtime choose. */
static ag_status enqueue(int device, cl_kernel k, cl_uint dims, const size_t *global,
                         const size_t *local, const char *what) {
    const ocl_device *d = ocl_device_at(device);
    if (!d)
        return ocl_fail(AG_ERR_DEVICE, "opencl: %s on device %d (%d devices)", what, device,
                        ocl_device_count());
    size_t g[2];
    for (cl_uint i = 0; i < dims; i++) {
        if (global[i] == 0) return AG_OK; /* nothing to do; OpenCL 1.2 refuses empty ranges */
        g[i] = local ? round_up(global[i], local[i]) : global[i];
    }
    const cl_int err = clEnqueueNDRangeKernel(d->queue, k, dims, NULL, g, local, 0, NULL, NULL);
    if (err == CL_SUCCESS) return AG_OK;
    char msg[160];
    snprintf(msg, sizeof msg, "clEnqueueNDRangeKernel (%.64s on device %d)", what, device);
    return ocl_check(err, msg);
}

ag_status ocl_enqueue(int device, cl_kernel k, size_t global, size_t local, const char *what) {
    return enqueue(device, k, 1, &global, local ? &local : NULL, what);
}

ag_status ocl_enqueue_2d(int device, cl_kernel k, const size_t global[2], const size_t local[2],
                         const char *what) {
    const bool runtime_local = !local || local[0] == 0 || local[1] == 0;
    return enqueue(device, k, 2, global, runtime_local ? NULL : local, what);
}
