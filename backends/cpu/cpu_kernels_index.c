/* Indexing kernels: index_select, gather (reads through an index) and index_add,
 * scatter_add (accumulate through an index).
 *
 * All four are one cpu_geom walk in which the indexed operand's stride along `dim` is set
 * to 0 and the index value times that stride is added per element. index_select's 1-D index
 * is seen as a tensor with its stride at `dim` and 0 elsewhere, which makes it a gather.
 * Indices are validated before anything is written. The accumulating walks run serially:
 * repeated indices would make parallel updates race. */
#include "cpu_strided.h"

/* Checks that every element of `index` lies in [0, size). */
static ag_status check_indices(const char *name, const ag_kernel_tensor *index, int64_t size,
                               int dim) {
    cpu_geom g;
    cpu_geom_init(&g, index->ndim, index->shape);
    if (g.numel == 0) return AG_OK;
    cpu_geom_add(&g, index, NULL);
    cpu_geom_coalesce(&g);
    const int64_t s = g.strides[0][g.ndim - 1];
    int64_t off;
    cpu_cursor c;
    cpu_cursor_seek(&c, &g, 0);
    for (int64_t pos = 0; pos < g.numel;) {
        const int64_t n = cpu_cursor_next(&c, &g, g.numel - pos, &off);
        const i64 *ix = (const i64 *)cpu_geom_ptr(&g, 0, off);
        for (int64_t k = 0; k < n; k++)
            if (ix[k * s] < 0 || ix[k * s] >= size)
                return cpu_fail(AG_ERR_INDEX,
                                "%s: index %lld is out of range for dimension %d of size %lld",
                                name, (long long)ix[k * s], dim, (long long)size);
        pos += n;
    }
    return AG_OK;
}

/* A walk over the shape of `walk` of (target, values, index): see ag_kt_index_views, which
 * also gives *step. */
static void plan_walk(cpu_geom *g, const ag_kernel_tensor *walk, const ag_kernel_tensor *target,
                      const ag_kernel_tensor *values, const ag_kernel_tensor *index, int dim,
                      bool along, int64_t *step) {
    ag_kernel_tensor v[3];
    ag_kt_index_views(walk, target, values, index, dim, along, v, step);
    cpu_geom_init(g, walk->ndim, walk->shape);
    for (int i = 0; i < 3; i++) cpu_geom_add(g, &v[i], NULL);
    cpu_geom_coalesce(g);
}

/* Row loops per dtype. take: operands (x, out, index), out = x[index]. put_add: operands
 * (out, src, index), out[index] += src. ctx is the indexed operand's stride at dim. */
#define DEFINE_INDEX_LOOPS(T)                                                                      \
    static void take_loop_##T(int64_t n, void *const *p, const int64_t *s, void *ctx) {            \
        const int64_t step = *(const int64_t *)ctx;                                                \
        const T *x = (const T *)p[0];                                                              \
        T *o = (T *)p[1];                                                                          \
        const i64 *ix = (const i64 *)p[2];                                                         \
        for (int64_t k = 0; k < n; k++) o[k * s[1]] = x[k * s[0] + ix[k * s[2]] * step];           \
    }                                                                                              \
    static void put_add_loop_##T(int64_t n, void *const *p, const int64_t *s, void *ctx) {         \
        const int64_t step = *(const int64_t *)ctx;                                                \
        T *o = (T *)p[0];                                                                          \
        const T *src = (const T *)p[1];                                                            \
        const i64 *ix = (const i64 *)p[2];                                                         \
        for (int64_t k = 0; k < n; k++) {                                                          \
            T *d = o + k * s[0] + ix[k * s[2]] * step;                                             \
            *d = T##_add(*d, src[k * s[1]]);                                                       \
        }                                                                                          \
    }
CPU_FOR_FI(DEFINE_INDEX_LOOPS)

/* index_select(x, index[n]) (`select`) and gather(x, index): out = x read through the index
 * along dim. */
static ag_status run_take(const ag_kernel_args *args, const char *name, ag_dtype dtype,
                          cpu_loop_fn take, bool select) {
    int dim;
    ag_status st = cpu_check_args(args, name, 2, 1);
    if (st == AG_OK) st = ag_kt_check_take(args, name, dtype, select, &dim, cpu_fail);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *x = &args->inputs[0], *index = &args->inputs[1];
    const ag_kernel_tensor *out = &args->outputs[0];
    if ((st = check_indices(name, index, x->shape[dim], dim)) != AG_OK) return st;
    cpu_geom g;
    int64_t step;
    plan_walk(&g, out, x, out, index, dim, select, &step);
    if (g.numel > 0) cpu_geom_run(&g, g.numel, take, &step);
    return AG_OK;
}

/* index_add(self, index[n], source) (`index_add`) and scatter_add(self, index, src):
 * out = self, then out[index] += source along dim. */
static ag_status run_put_add(const ag_kernel_args *args, const char *name, ag_dtype dtype,
                             cpu_loop_fn put_add, bool index_add) {
    int dim;
    const ag_kernel_tensor *walk; /* the tensor whose shape the walk covers */
    ag_status st = cpu_check_args(args, name, 3, 1);
    if (st == AG_OK) st = ag_kt_check_put_add(args, name, dtype, index_add, &dim, &walk, cpu_fail);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *self = &args->inputs[0], *index = &args->inputs[1];
    const ag_kernel_tensor *src = &args->inputs[2], *out = &args->outputs[0];
    if ((st = check_indices(name, index, self->shape[dim], dim)) != AG_OK) return st;
    if ((st = cpu_copy_tensor(out, self)) != AG_OK) return st;
    cpu_geom g;
    int64_t step;
    plan_walk(&g, walk, out, src, index, dim, index_add, &step);
    if (g.numel > 0) cpu_geom_for_range(&g, 0, g.numel, put_add, &step);
    return AG_OK;
}

#define DEFINE_INDEX_KERNELS(T)                                                                    \
    static ag_status index_select_##T(const ag_kernel_args *args) {                                \
        return run_take(args, "index_select", CPU_DTYPE_##T, take_loop_##T, true);                 \
    }                                                                                              \
    static ag_status gather_##T(const ag_kernel_args *args) {                                      \
        return run_take(args, "gather", CPU_DTYPE_##T, take_loop_##T, false);                      \
    }                                                                                              \
    static ag_status index_add_##T(const ag_kernel_args *args) {                                   \
        return run_put_add(args, "index_add", CPU_DTYPE_##T, put_add_loop_##T, true);              \
    }                                                                                              \
    static ag_status scatter_add_##T(const ag_kernel_args *args) {                                 \
        return run_put_add(args, "scatter_add", CPU_DTYPE_##T, put_add_loop_##T, false);           \
    }
CPU_FOR_FI(DEFINE_INDEX_KERNELS)

const cpu_kernel_entry cpu_index_kernels[] = {
    CPU_ENTRY_FI("index_select", index_select),
    CPU_ENTRY_FI("index_add", index_add),
    CPU_ENTRY_FI("gather", gather),
    CPU_ENTRY_FI("scatter_add", scatter_add),
    {NULL, AG_F32, NULL},
};
