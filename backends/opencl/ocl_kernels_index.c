/* Kernel table of the OpenCL backend for this family (placeholder: no kernels yet). */
#include "ocl_internal.h"

const ocl_kernel_entry ocl_index_kernels[] = {{NULL, 0, NULL}};
