/* N-d strided iteration shared by every kernel of the cpu backend.
 *
 * A cpu_geom describes up to CPU_MAX_OPS operands walked over one common shape, each with
 * its own element strides (zero for broadcast). cpu_geom_coalesce drops extent-1 dims and
 * merges dims that are contiguous in every operand, so contiguous (and uniformly strided)
 * tensors become a single row: the fast path. A cpu_cursor then walks any linear range of
 * the shape row by row (a row is a run along the innermost dim), which lets kernels split
 * the range across threads and keep their per-element loops free of index arithmetic. */
#ifndef AG_CPU_STRIDED_H
#define AG_CPU_STRIDED_H

#include "cpu_internal.h"

#include <omp.h>

/* Most operands one geometry walks (where: out, cond, a, b). */
#define CPU_MAX_OPS 4

/* Operands over a common shape; see the file comment. */
typedef struct cpu_geom {
    int ndim;      /* dims, >= 1 after cpu_geom_coalesce */
    int nops;      /* operands added */
    int64_t numel; /* product of shape */
    int64_t shape[AG_MAX_DIMS];
    int64_t strides[CPU_MAX_OPS][AG_MAX_DIMS]; /* per operand, in elements */
    void *base[CPU_MAX_OPS];                   /* address of element (0,...,0) */
    size_t elsize[CPU_MAX_OPS];
} cpu_geom;

/* Position of a walk over a geometry. */
typedef struct cpu_cursor {
    int64_t idx[AG_MAX_DIMS]; /* multi-index of the position */
    int64_t off[CPU_MAX_OPS]; /* element offset of the position in each operand */
} cpu_cursor;

/* Processes one row: n elements; ptrs[i] points at operand i's first element, strides[i]
 * is its step in elements. */
typedef void (*cpu_loop_fn)(int64_t n, void *const *ptrs, const int64_t *strides, void *ctx);

/* Starts a geometry over `shape` with no operands. */
static inline void cpu_geom_init(cpu_geom *g, int ndim, const int64_t *shape) {
    g->ndim = ndim;
    g->nops = 0;
    g->numel = 1;
    for (int d = 0; d < ndim; d++) {
        g->shape[d] = shape[d];
        g->numel *= shape[d];
    }
}

/* Adds t as the next operand, seen through `strides` (NULL: t's own strides). */
static inline void cpu_geom_add(cpu_geom *g, const ag_kernel_tensor *t, const int64_t *strides) {
    const int op = g->nops++;
    const size_t es = ag_dtype_size(t->dtype);
    g->elsize[op] = es;
    /* A zero-size tensor may have no buffer at all: no arithmetic on NULL. */
    g->base[op] = t->data ? (char *)t->data + t->offset * (int64_t)es : NULL;
    if (!strides) strides = t->strides;
    for (int d = 0; d < g->ndim; d++) g->strides[op][d] = strides[d];
}

/* True when dims a (outer) and b (inner) can become one dim in every operand. */
static inline bool cpu_geom_mergeable(const cpu_geom *g, int a, int b) {
    for (int op = 0; op < g->nops; op++)
        if (g->strides[op][a] != g->strides[op][b] * g->shape[b]) return false;
    return true;
}

/* Drops extent-1 dims and merges contiguous ones; leaves at least one dim. */
static inline void cpu_geom_coalesce(cpu_geom *g) {
    int nd = 0;
    for (int d = 0; d < g->ndim; d++) {
        if (g->shape[d] == 1) continue;
        if (nd > 0 && cpu_geom_mergeable(g, nd - 1, d)) {
            g->shape[nd - 1] *= g->shape[d];
            for (int op = 0; op < g->nops; op++) g->strides[op][nd - 1] = g->strides[op][d];
            continue;
        }
        g->shape[nd] = g->shape[d];
        for (int op = 0; op < g->nops; op++) g->strides[op][nd] = g->strides[op][d];
        nd++;
    }
    if (nd == 0) { /* every dim had extent 1: one element */
        g->shape[0] = 1;
        for (int op = 0; op < g->nops; op++) g->strides[op][0] = 0;
        nd = 1;
    }
    g->ndim = nd;
}

/* Address of the element at element offset `off` of operand `op` (NULL for an operand
 * without a buffer, which then has no elements to reach). */
static inline void *cpu_geom_ptr(const cpu_geom *g, int op, int64_t off) {
    return g->base[op] ? (char *)g->base[op] + off * (int64_t)g->elsize[op] : NULL;
}

/* Places c at linear (row-major) position pos of g. */
static inline void cpu_cursor_seek(cpu_cursor *c, const cpu_geom *g, int64_t pos) {
    for (int op = 0; op < g->nops; op++) c->off[op] = 0;
    if (pos == 0) { /* the usual start, without divisions */
        for (int d = 0; d < g->ndim; d++) c->idx[d] = 0;
        return;
    }
    for (int d = g->ndim - 1; d >= 0; d--) {
        c->idx[d] = pos % g->shape[d];
        pos /= g->shape[d];
        for (int op = 0; op < g->nops; op++) c->off[op] += c->idx[d] * g->strides[op][d];
    }
}

/* Takes the row at the cursor, at most `limit` elements long: stores each operand's offset
 * of its first element in row_off, advances past it and returns its length. */
static inline int64_t cpu_cursor_next(cpu_cursor *c, const cpu_geom *g, int64_t limit,
                                      int64_t *row_off) {
    const int last = g->ndim - 1;
    int64_t n = g->shape[last] - c->idx[last];
    if (n > limit) n = limit;
    for (int op = 0; op < g->nops; op++) {
        row_off[op] = c->off[op];
        c->off[op] += n * g->strides[op][last];
    }
    c->idx[last] += n;
    for (int d = last; d > 0 && c->idx[d] == g->shape[d]; d--) { /* carry */
        c->idx[d] = 0;
        c->idx[d - 1]++;
        for (int op = 0; op < g->nops; op++)
            c->off[op] += g->strides[op][d - 1] - g->shape[d] * g->strides[op][d];
    }
    return n;
}

/* Calls fn on every row of linear positions [begin, end) of g, in order. */
static inline void cpu_geom_for_range(const cpu_geom *g, int64_t begin, int64_t end, cpu_loop_fn fn,
                                      void *ctx) {
    if (begin >= end) return;
    int64_t inner[CPU_MAX_OPS], off[CPU_MAX_OPS];
    void *ptrs[CPU_MAX_OPS];
    for (int op = 0; op < g->nops; op++) inner[op] = g->strides[op][g->ndim - 1];
    cpu_cursor c;
    cpu_cursor_seek(&c, g, begin);
    for (int64_t pos = begin; pos < end;) {
        const int64_t n = cpu_cursor_next(&c, g, end - pos, off);
        for (int op = 0; op < g->nops; op++) ptrs[op] = cpu_geom_ptr(g, op, off[op]);
        fn(n, ptrs, inner, ctx);
        pos += n;
    }
}

/* Bounds of part `part` of `parts` equal parts of [0, n). */
static inline void cpu_split(int64_t n, int part, int parts, int64_t *begin, int64_t *end) {
    const int64_t chunk = n / parts, extra = n % parts;
    *begin = part * chunk + (part < extra ? part : extra);
    *end = *begin + chunk + (part < extra ? 1 : 0);
}

/* Processes the part [begin, end) of a 1-D range of work. */
typedef void (*cpu_range_fn)(int64_t begin, int64_t end, void *ctx);

/* Calls fn on [0, n), split into one part per thread when `cost` (elements of work) is large
 * enough to pay for waking the team. fn must be safe to run on disjoint parts at once. */
static inline void cpu_parallel_for(int64_t n, int64_t cost, cpu_range_fn fn, void *ctx) {
    if (cost <= CPU_PARALLEL_MIN || n < 2) {
        if (n > 0) fn(0, n, ctx);
        return;
    }
#pragma omp parallel num_threads(cpu_num_threads())
    {
        int64_t begin, end;
        cpu_split(n, omp_get_thread_num(), omp_get_num_threads(), &begin, &end);
        if (begin < end) fn(begin, end, ctx);
    }
}

/* A cpu_geom_run call, packed for cpu_parallel_for. */
typedef struct cpu_geom_job {
    const cpu_geom *g;
    cpu_loop_fn fn;
    void *ctx;
} cpu_geom_job;

/* cpu_range_fn running a cpu_geom_job over positions [begin, end). */
static inline void cpu_geom_job_range(int64_t begin, int64_t end, void *job) {
    const cpu_geom_job *j = job;
    cpu_geom_for_range(j->g, begin, end, j->fn, j->ctx);
}

/* Calls fn on every row of g, across threads when `cost` is large (see cpu_parallel_for). */
static inline void cpu_geom_run(const cpu_geom *g, int64_t cost, cpu_loop_fn fn, void *ctx) {
    cpu_geom_job job = {g, fn, ctx};
    cpu_parallel_for(g->numel, cost, cpu_geom_job_range, &job);
}

#endif
