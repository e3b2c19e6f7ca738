/* Printing tensors in PyTorch's style: tensor([[1., 2.], [3., 4.]], dtype=float32). */
#include <math.h>
#include <stdlib.h>
#include "internal.h"

static void print_element(FILE *f, ag_dtype dtype, const void *data, int64_t i) {
    if (dtype == AG_I64) {
        fprintf(f, "%lld", (long long)((const int64_t *)data)[i]);
        return;
    }
    double v = ag__host_value(dtype, data, i);
    if (isnan(v))
        fputs("nan", f); /* printf writes "-nan" for a NaN with the sign bit set */
    else
        fprintf(f, "%.6g", v);
}

/* Prints dims from `dim` on of a row-major host copy; returns the next flat index. */
static int64_t print_dims(FILE *f, const ag_tensor *t, const void *data, int dim, int64_t at) {
    if (dim == t->ndim) {
        print_element(f, t->dtype, data, at);
        return at + 1;
    }
    fputc('[', f);
    for (int64_t i = 0; i < t->shape[dim]; i++) {
        if (i) fputs(dim + 1 < t->ndim ? ",\n" : ", ", f);
        if (i && dim + 1 < t->ndim) fprintf(f, "%*s", 8 + dim, "");
        at = print_dims(f, t, data, dim + 1, at);
    }
    fputc(']', f);
    return at;
}

ag_status ag_fprint(FILE *f, const ag_tensor *t) {
    if (!f || !t) return ag__error_if_none(AG_ERR_INVALID_ARG, "ag_fprint: NULL argument");
    size_t bytes = (size_t)t->numel * ag_dtype_size(t->dtype);
    void *data = ag__malloc(bytes ? bytes : 1);
    if (!data) return ag__error(AG_ERR_OUT_OF_MEMORY, "ag_fprint: out of host memory");
    ag_status st = ag_to_host(t, data, bytes);
    if (st == AG_OK) {
        fputs("tensor(", f);
        print_dims(f, t, data, 0, 0);
        fprintf(f, ", dtype=%s", ag_dtype_name(t->dtype));
        if (t->grad_fn)
            fprintf(f, ", grad_fn=<%s>", t->grad_fn->op->name);
        else if (t->requires_grad)
            fputs(", requires_grad=true", f);
        fputs(")\n", f);
    }
    free(data);
    return st;
}

ag_status ag_print(const ag_tensor *t) {
    return ag_fprint(stdout, t);
}

const char *ag_version(void) {
    return AG_VERSION_STRING;
}
