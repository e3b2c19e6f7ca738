/* Helpers shared by the op files in ops/. Each op file defines its ag_op_def structs,
 * their forward (usually a generic one from core/dispatch.c) and a backward written in
 * public ag ops, so every backward is itself differentiable. */
#ifndef AG_OPS_COMMON_H
#define AG_OPS_COMMON_H

#include "../core/internal.h"

/* Short names for what backward functions read from their context. */
#define GRAD_OUT(ctx)   ((ctx)->grad_outputs[0])
#define SAVED(ctx, i)   ag__saved((ctx), (i))
#define NEEDS(ctx, i)   ag__needs_grad((ctx), (i))
#define IN_META(ctx, i) ag__bw_in_meta((ctx), (i))

/* What forward rules (jvp) read from their context: input i's value and tangent (NULL when
 * it has none, i.e. a zero tangent). */
#define PRIMAL(ctx, i)  ((ctx)->inputs[i])
#define TANGENT(ctx, i) ((ctx)->tangents[i])

/* Sums t over broadcast dims back to the shape of input i (the reverse of broadcasting). */
ag_tensor *ag__sum_to_input(const ag_backward_ctx *ctx, int i, ag_tensor *t);
/* Sum of two tangent terms, either of which may be NULL (a zero term). */
ag_tensor *ag__jvp_sum(ag_tensor *a, ag_tensor *b);
/* 0-dim tensor with value in t's dtype and on t's device (registered in scope). */
ag_tensor *ag__scalar_like(const ag_tensor *t, double value);
/* Writes value into every element of t (any strides), outside the graph. */
ag_status ag__fill(ag_tensor *t, double value);
/* Registers every op of the given table; used by each op file's register function. */
ag_status ag__register_all(ag_op_def *const *ops, int n);

/* Per-file registration of built-in ops (ops/builtin.c calls them all at load time). */
ag_status ag__register_elementwise_ops(void);
ag_status ag__register_creation_ops(void);
ag_status ag__register_reduce_ops(void);
ag_status ag__register_linalg_ops(void);
ag_status ag__register_view_ops(void);
ag_status ag__register_index_ops(void);
ag_status ag__register_nn_ops(void);
ag_status ag__register_optim_ops(void);

#endif
