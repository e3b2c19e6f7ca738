/* ag — public C API: tensors, autograd, ops.
 *
 * Ownership (see docs/memory.md):
 *  - Every function that returns a new `ag_tensor *` returns a new reference.
 *  - While a scope is open (ag_scope_begin), that reference belongs to the innermost
 *    scope and is released by ag_scope_end; ag_keep(t) takes an extra reference that the
 *    caller owns and must release with ag_release. Outside any scope the caller owns the
 *    returned reference and releases it with ag_release.
 *  - Functions documented as "borrowed" return a pointer without a new reference.
 * Errors (see docs/errors.md):
 *  - Fallible calls return NULL or a status != AG_OK and set a thread-local message
 *    (ag_last_error) naming the op, shapes, dtypes and devices involved.
 *  - An op given a NULL input returns NULL and keeps the first error, so a chain of nested
 *    calls can be checked once at its end. */
#ifndef AG_AG_H
#define AG_AG_H

#include <stdbool.h>
#include <stdio.h>
#include "ag/types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AG_VERSION_MAJOR 0
#define AG_VERSION_MINOR 1
#define AG_VERSION_PATCH 0

/* An n-dimensional array with optional autograd history (opaque). */
typedef struct ag_tensor ag_tensor;
/* A region owning the tensors created while it is the innermost open scope (opaque). */
typedef struct ag_scope ag_scope;
/* A seeded random number generator (opaque). */
typedef struct ag_generator ag_generator;

/* Where a tensor lives: a loaded backend and a device index on it. */
typedef struct ag_device {
    int backend; /* index of the backend in the process's backend table */
    int index;   /* device index on that backend */
} ag_device;

/* ---- library, errors, devices ------------------------------------------------------ */

/* Version string of libag ("0.1.0"). */
const char *ag_version(void);
/* Loads the default backend (AG_BACKEND, default "cpu") and the plugins in AG_PLUGINS if
 * not loaded; idempotent. Every other call does this implicitly; call it to get a load
 * error early. */
ag_status ag_init(void);
/* Message of the last error on this thread ("" if none). */
const char *ag_last_error(void);
/* Status of the last error on this thread (AG_OK if none). */
ag_status ag_last_status(void);
/* Forgets the last error of this thread. */
void ag_clear_error(void);

/* Loads backend `name` (libag_backend_<name>.so, searched as docs/backends.md says) if not
 * loaded yet and stores its index in *backend. */
ag_status ag_backend_load(const char *name, int *backend);
/* Number of loaded backends. */
int ag_backend_count(void);
/* Name of loaded backend `backend` (borrowed, NULL if out of range). */
const char *ag_backend_name(int backend);
/* Parses "cpu", "cpu:0", "opencl:1" (loading the backend if needed) into *device. */
ag_status ag_device_parse(const char *spec, ag_device *device);
/* Device new tensors are created on (from AG_BACKEND at ag_init; thread-local override
 * with ag_set_default_device). */
ag_device ag_default_device(void);
/* Sets the default device of this thread; a negative backend removes the override. */
void ag_set_default_device(ag_device device);
/* Writes "cpu:0" style text for a device into buf. */
void ag_device_str(ag_device device, char *buf, size_t size);
/* Waits for all queued work of the device to finish. */
ag_status ag_synchronize(ag_device device);

/* ---- memory: references and scopes ------------------------------------------------- */

/* Adds a reference owned by the caller; returns t. */
ag_tensor *ag_retain(ag_tensor *t);
/* Drops one reference; frees the tensor when none remain. NULL is ignored. */
void ag_release(ag_tensor *t);
/* Same as ag_retain: marks a tensor that must outlive the current scope. Returns t. */
ag_tensor *ag_keep(ag_tensor *t);
/* Opens a scope; tensors created until the matching ag_scope_end belong to it. */
ag_scope *ag_scope_begin(void);
/* Closes a scope (and any scope opened inside it still open), releasing its tensors. */
void ag_scope_end(ag_scope *scope);
/* Closes `scope` but hands t's reference to the enclosing scope (or to the caller when
 * there is none): the way a function returns one result from a scope. Returns t. */
ag_tensor *ag_scope_return(ag_scope *scope, ag_tensor *t);

/* Bytes of tensor storage alive on device (torch.cuda.memory_allocated); devices 0..15 of
 * each backend are counted, whatever the backend caches underneath. */
uint64_t ag_memory_allocated(ag_device device);
/* Highest ag_memory_allocated(device) since the start or ag_reset_peak_memory. */
uint64_t ag_max_memory_allocated(ag_device device);
/* Starts a new peak at the current ag_memory_allocated(device). */
void ag_reset_peak_memory(ag_device device);
/* Debugging error paths: the n-th allocation libag makes on the calling thread from now on
 * (host memory, or a tensor's buffer on any device) fails as if memory ran out, with
 * AG_ERR_OUT_OF_MEMORY; n = 0 fails none. Either way the count restarts from 0. */
void ag_debug_fail_allocation(uint64_t n);
/* Allocations libag made on the calling thread since its last ag_debug_fail_allocation call
 * (counting starts with the first such call in the process): run a piece of code once
 * after ag_debug_fail_allocation(0) to learn how far n can go. */
uint64_t ag_debug_allocation_count(void);

/* ---- creation ------------------------------------------------------------------------ */

/* Uninitialised tensor on the default device. */
ag_tensor *ag_empty(ag_dtype dtype, int ndim, const int64_t *shape);
/* Tensor of zeros. */
ag_tensor *ag_zeros(ag_dtype dtype, int ndim, const int64_t *shape);
/* Tensor of ones. */
ag_tensor *ag_ones(ag_dtype dtype, int ndim, const int64_t *shape);
/* Tensor filled with value. */
ag_tensor *ag_full(ag_dtype dtype, int ndim, const int64_t *shape, double value);
/* Tensor of zeros/ones/value with the shape, dtype and device of t. */
ag_tensor *ag_zeros_like(const ag_tensor *t);
ag_tensor *ag_ones_like(const ag_tensor *t);
ag_tensor *ag_full_like(const ag_tensor *t, double value);
/* 0-dim tensor holding value. */
ag_tensor *ag_scalar(ag_dtype dtype, double value);
/* 1-D tensor start, start+step, ... < end (> end for a negative step). */
ag_tensor *ag_arange(ag_dtype dtype, double start, double end, double step);
/* Copies ndim/shape and the host data (row-major, dtype elements) into a new tensor. */
ag_tensor *ag_from_data(ag_dtype dtype, int ndim, const int64_t *shape, const void *data);
/* Shorthands of ag_from_data for float32, float64 and int64 host arrays. */
ag_tensor *ag_from_f32(const float *data, int ndim, const int64_t *shape);
ag_tensor *ag_from_f64(const double *data, int ndim, const int64_t *shape);
ag_tensor *ag_from_i64(const int64_t *data, int ndim, const int64_t *shape);

/* New generator seeded with seed (Philox-style counter-based; same seed, same numbers on
 * every backend). Free with ag_generator_free. */
ag_generator *ag_generator_new(uint64_t seed);
/* Frees a generator. */
void ag_generator_free(ag_generator *gen);
/* Reseeds the process default generator (used when gen is NULL). */
void ag_manual_seed(uint64_t seed);
/* Uniform [low, high) samples; gen NULL uses the default generator. */
ag_tensor *ag_rand(ag_generator *gen, ag_dtype dtype, int ndim, const int64_t *shape);
/* Standard normal samples. */
ag_tensor *ag_randn(ag_generator *gen, ag_dtype dtype, int ndim, const int64_t *shape);
/* Uniform samples in [low, high). */
ag_tensor *ag_uniform(ag_generator *gen, ag_dtype dtype, int ndim, const int64_t *shape, double low,
                      double high);

/* ---- inspection ---------------------------------------------------------------------- */

/* Number of dimensions. */
int ag_ndim(const ag_tensor *t);
/* Extents (borrowed array of ag_ndim entries). */
const int64_t *ag_shape(const ag_tensor *t);
/* Extent of dimension dim (negative counts from the end); -1 if out of range. */
int64_t ag_size(const ag_tensor *t, int dim);
/* Strides in elements (borrowed). */
const int64_t *ag_strides(const ag_tensor *t);
/* Number of elements. */
int64_t ag_numel(const ag_tensor *t);
/* Element type. */
ag_dtype ag_dtype_of(const ag_tensor *t);
/* Device the tensor lives on. */
ag_device ag_device_of(const ag_tensor *t);
/* True if the elements are laid out row-major without gaps. */
bool ag_is_contiguous(const ag_tensor *t);
/* True if t shares storage with another tensor it was viewed from. */
bool ag_is_view(const ag_tensor *t);
/* Value of a one-element tensor as double (int64 converted). */
ag_status ag_item(const ag_tensor *t, double *value);
/* Copies the elements (row-major, t's dtype) into host memory of `bytes` bytes. */
ag_status ag_to_host(const ag_tensor *t, void *data, size_t bytes);
/* Host pointer to element 0 if t lives in host memory (cpu backend), else NULL. */
void *ag_data_ptr(const ag_tensor *t);
/* Writes a readable rendering ("tensor([1, 2.5], dtype=float32)") to f. */
ag_status ag_fprint(FILE *f, const ag_tensor *t);
/* ag_fprint to stdout. */
ag_status ag_print(const ag_tensor *t);
/* Writes "[2, 3]" into buf. */
void ag_shape_str(const ag_tensor *t, char *buf, size_t size);

/* ---- autograd -------------------------------------------------------------------------- */

/* Marks a leaf as requiring grad (or not). Error for non-leaf tensors and integer dtypes. */
ag_status ag_set_requires_grad(ag_tensor *t, bool requires_grad);
/* True if gradients flow to or through t. */
bool ag_requires_grad(const ag_tensor *t);
/* True for tensors without history (created by the user, or not requiring grad). */
bool ag_is_leaf(const ag_tensor *t);
/* Accumulated gradient of t (borrowed; NULL until a backward reaches it). */
ag_tensor *ag_tensor_grad(const ag_tensor *t);
/* Replaces t's .grad (NULL clears it: zero_grad with set_to_none). */
ag_status ag_set_grad(ag_tensor *t, ag_tensor *grad);
/* Asks a non-leaf to keep its .grad during backward. */
ag_status ag_retain_grad(ag_tensor *t);
/* Name of the op that created t ("mul"), or NULL for leaves (borrowed). */
const char *ag_grad_fn_name(const ag_tensor *t);
/* Version counter of t's storage (bumped by every in-place op). */
uint64_t ag_version_of(const ag_tensor *t);

/* Backward from t. gradient may be NULL only when t has one element; otherwise its shape
 * must equal t's. Frees the graph's saved tensors unless retain_graph. */
ag_status ag_backward(ag_tensor *t, ag_tensor *gradient);
/* ag_backward with options; create_graph records the backward itself for higher order. */
ag_status ag_backward_ex(ag_tensor *t, ag_tensor *gradient, bool retain_graph, bool create_graph);
/* torch.autograd.grad: gradients of outputs w.r.t. inputs, returned in grads[n_inputs]
 * (new references; NULL for unused inputs when allow_unused). Does not touch .grad.
 * grad_outputs may be NULL, or hold NULL entries for one-element outputs. retain_graph
 * defaults to create_graph in PyTorch; here it is explicit. */
ag_status ag_grad(int n_outputs, ag_tensor *const *outputs, int n_inputs, ag_tensor *const *inputs,
                  ag_tensor *const *grad_outputs, bool retain_graph, bool create_graph,
                  bool allow_unused, ag_tensor **grads);

/* Enables or disables graph recording on this thread; returns the previous setting.
 * no_grad is ag_set_grad_enabled(false) ... ag_set_grad_enabled(previous). */
bool ag_set_grad_enabled(bool enabled);
/* True if ops record the graph on this thread. */
bool ag_is_grad_enabled(void);
/* Turns anomaly mode on or off on this thread (torch.autograd.set_detect_anomaly): nodes
 * remember their forward origin and backward fails with AG_ERR_ANOMALY on a NaN/Inf
 * gradient. Returns the previous setting. AG_DETECT_ANOMALY=1 turns it on by default. */
bool ag_set_detect_anomaly(bool on);
/* True if anomaly mode is on on this thread. */
bool ag_is_anomaly_enabled(void);
/* A tensor sharing t's storage and version counter, without history. */
ag_tensor *ag_detach(ag_tensor *t);

/* A gradient hook: sees the gradient flowing into a tensor. Return NULL to keep it, or a
 * new tensor (same shape) to replace it. The hook must not release `grad`. */
typedef ag_tensor *(*ag_grad_hook_fn)(ag_tensor *grad, void *user);
/* Registers a hook on t (which must require grad); returns a handle > 0, or 0 on error. */
uint64_t ag_register_hook(ag_tensor *t, ag_grad_hook_fn fn, void *user);
/* Removes a hook (a tensor hook or a post-accumulate-grad hook) by handle; error if the
 * handle is unknown or already removed. */
ag_status ag_remove_hook(ag_tensor *t, uint64_t handle);
/* A post-accumulate-grad hook: runs once per ag_backward for its leaf, after every
 * gradient of that backward has been accumulated into the leaf's .grad: as soon as the last
 * graph edge into the leaf is processed, while the rest of backward still runs. */
typedef void (*ag_post_accumulate_hook_fn)(ag_tensor *leaf, void *user);
/* Registers a post-accumulate-grad hook on a leaf that requires grad (error on a non-leaf);
 * returns a handle > 0 that ag_remove_hook removes, or 0 on error. Not run by ag_grad,
 * which leaves .grad alone. */
uint64_t ag_register_post_accumulate_grad_hook(ag_tensor *leaf, ag_post_accumulate_hook_fn fn,
                                               void *user);

/* ---- mixed precision: autocast (docs/amp.md) ------------------------------------------- */

/* This thread's autocast region (torch.autocast). */
typedef struct ag_autocast {
    bool enabled;   /* inside a region */
    ag_dtype dtype; /* AG_F16 or AG_BF16: what matmul and linear compute in */
} ag_autocast;

/* Sets this thread's autocast state (enabled false leaves the region) and stores the one it
 * replaces in *previous (may be NULL) so that it can be restored. Inside a region matmul and
 * linear run in state.dtype; softmax, log_softmax, layer_norm, cross_entropy, exp, log, pow
 * and sum in float32; other ops in their inputs' dtype. Backward is not affected. */
ag_status ag_autocast_set(ag_autocast state, ag_autocast *previous);
/* This thread's autocast state. */
ag_autocast ag_autocast_get(void);

/* ---- forward-mode AD (torch.autograd.forward_ad; docs/forward-ad.md) ---------------------
 * Inside a dual level, a tensor may carry a tangent; every op then also computes its
 * output's tangent (a Jacobian-vector product), so one forward pass gives J v. Tangents are
 * computed with ag ops under the current grad mode, so reverse mode can differentiate them,
 * and backward passes run inside a level propagate tangents too. One level at a time, for
 * the whole process (as PyTorch). */

/* Opens the dual level; error if one is open already. */
ag_status ag_dual_level_enter(void);
/* Closes the dual level: every tensor's tangent is dropped. Error if none is open. */
ag_status ag_dual_level_exit(void);
/* True while the dual level is open. */
bool ag_dual_level_is_open(void);
/* A view of primal carrying tangent (same shape, dtype and device; floating point). The
 * view is differentiable with respect to primal, as torch's make_dual. */
ag_tensor *ag_make_dual(ag_tensor *primal, ag_tensor *tangent);
/* Splits t into a view without tangent (*primal, a new reference) and its tangent
 * (*tangent, a new reference, or NULL when t has none); either pointer may be NULL. */
ag_status ag_unpack_dual(ag_tensor *t, ag_tensor **primal, ag_tensor **tangent);

/* ---- functions of tensors: functional transforms (ag_vjp, ag_jvp, ...) and checkpointing */

/* A function of tensors, as the functional API and ag_checkpoint call it: reads
 * inputs[0..n_inputs) and stores n_outputs results (op results: new references owned like
 * any op's) in outputs. Returns AG_OK, or an error status with ag_last_error set. */
typedef ag_status (*ag_tensor_fn)(void *user, int n_inputs, ag_tensor *const *inputs, int n_outputs,
                                  ag_tensor **outputs);

/* torch.utils.checkpoint (use_reentrant=False): runs fn(user, inputs) into outputs[n_outputs]
 * (new references owned like op results) recording the graph but not the tensors its ops
 * save for backward; backward runs fn again (default generator's state restored) to get
 * them. fn must run the same ops each time. See docs/semantics.md#activation-checkpointing. */
ag_status ag_checkpoint(ag_tensor_fn fn, void *user, int n_inputs, ag_tensor *const *inputs,
                        int n_outputs, ag_tensor **outputs);

/* Options of the functional transforms (torch.autograd.functional); NULL means all false. */
typedef struct ag_functional_options {
    bool create_graph; /* results keep history (differentiable again); else detached */
    bool strict;       /* an output independent of an input is an error, not zeros */
    bool forward_mode; /* ag_jacobian: one forward-mode pass per input element instead of
                          one backward per output element */
} ag_functional_options;

/* Vector-Jacobian products v^T J of fn at inputs: vjps[n_inputs] have the inputs' shapes.
 * v[n_outputs] has the outputs' shapes (v NULL, or an entry NULL, for single-element
 * outputs). outputs (NULL to skip) receives fn's n_outputs results. New references. */
ag_status ag_vjp(ag_tensor_fn fn, void *user, int n_inputs, ag_tensor *const *inputs, int n_outputs,
                 ag_tensor *const *v, const ag_functional_options *options, ag_tensor **outputs,
                 ag_tensor **vjps);
/* Jacobian-vector products J v in one forward-mode pass: jvps[n_outputs] have the outputs'
 * shapes; v[n_inputs] the inputs' (NULL entries only for single-element inputs). */
ag_status ag_jvp(ag_tensor_fn fn, void *user, int n_inputs, ag_tensor *const *inputs,
                 ag_tensor *const *v, int n_outputs, const ag_functional_options *options,
                 ag_tensor **outputs, ag_tensor **jvps);
/* Hessian-vector product H v of a function with one single-element output (forward mode
 * inside reverse mode); *output (NULL to skip) receives f(inputs). */
ag_status ag_hvp(ag_tensor_fn fn, void *user, int n_inputs, ag_tensor *const *inputs,
                 ag_tensor *const *v, const ag_functional_options *options, ag_tensor **output,
                 ag_tensor **hvps);
/* Vector-Hessian product v^T H (reverse mode twice); as ag_hvp otherwise. */
ag_status ag_vhp(ag_tensor_fn fn, void *user, int n_inputs, ag_tensor *const *inputs,
                 ag_tensor *const *v, const ag_functional_options *options, ag_tensor **output,
                 ag_tensor **vhps);
/* Jacobian of fn: jacobian[o * n_inputs + i] has shape outputs[o].shape + inputs[i].shape
 * (n_outputs * n_inputs blocks, new references). */
ag_status ag_jacobian(ag_tensor_fn fn, void *user, int n_inputs, ag_tensor *const *inputs,
                      int n_outputs, const ag_functional_options *options, ag_tensor **jacobian);
/* Hessian of a function with one single-element output: hessian[i * n_inputs + j] has
 * shape inputs[i].shape + inputs[j].shape. */
ag_status ag_hessian(ag_tensor_fn fn, void *user, int n_inputs, ag_tensor *const *inputs,
                     const ag_functional_options *options, ag_tensor **hessian);

/* ---- debugging: graph pictures and op traces (docs/debugging.md) ------------------------- */

/* Writes the autograd graph behind root as Graphviz DOT to path (atomically): ops with
 * output shapes and saved tensors, leaves requiring grad, the root highlighted. */
ag_status ag_graph_dot(const ag_tensor *root, const char *path);
/* Starts recording every op's forward and backward timings (all threads) for path. */
ag_status ag_trace_start(const char *path);
/* Stops recording and writes the Chrome trace JSON (Perfetto, chrome://tracing). */
ag_status ag_trace_stop(void);

/* ---- elementwise ops (NumPy broadcasting; int64 with float promotes to the float) ---------- */

ag_tensor *ag_add(ag_tensor *a, ag_tensor *b);     /* a + b */
ag_tensor *ag_sub(ag_tensor *a, ag_tensor *b);     /* a - b */
ag_tensor *ag_mul(ag_tensor *a, ag_tensor *b);     /* a * b */
ag_tensor *ag_div(ag_tensor *a, ag_tensor *b);     /* a / b (int64 / int64 gives float32) */
ag_tensor *ag_pow(ag_tensor *a, ag_tensor *b);     /* a ** b */
ag_tensor *ag_maximum(ag_tensor *a, ag_tensor *b); /* elementwise max (NaN propagates) */
ag_tensor *ag_minimum(ag_tensor *a, ag_tensor *b); /* elementwise min (NaN propagates) */
ag_tensor *ag_add_scalar(ag_tensor *a, double s);  /* a + s */
ag_tensor *ag_mul_scalar(ag_tensor *a, double s);  /* a * s */
ag_tensor *ag_pow_scalar(ag_tensor *a, double p);  /* a ** p */
ag_tensor *ag_neg(ag_tensor *a);                   /* -a */
ag_tensor *ag_exp(ag_tensor *a);                   /* e ** a */
ag_tensor *ag_log(ag_tensor *a);                   /* natural log */
ag_tensor *ag_sqrt(ag_tensor *a);                  /* square root */
ag_tensor *ag_rsqrt(ag_tensor *a);                 /* 1 / sqrt(a) */
ag_tensor *ag_abs(ag_tensor *a);                   /* |a| */
ag_tensor *ag_sign(ag_tensor *a);                  /* -1, 0, 1 (no grad) */
ag_tensor *ag_sin(ag_tensor *a);                   /* sine */
ag_tensor *ag_cos(ag_tensor *a);                   /* cosine */
ag_tensor *ag_tanh(ag_tensor *a);                  /* hyperbolic tangent */
ag_tensor *ag_erf(ag_tensor *a);                   /* error function */
ag_tensor *ag_sigmoid(ag_tensor *a);               /* 1 / (1 + e ** -a) */
ag_tensor *ag_relu(ag_tensor *a);                  /* max(a, 0) */
ag_tensor *ag_silu(ag_tensor *a);                  /* a * sigmoid(a) */
/* GELU; approximate_tanh false: exact erf form, true: PyTorch's approximate='tanh'. */
ag_tensor *ag_gelu(ag_tensor *a, bool approximate_tanh);
/* Clamps into [min, max]; pass has_min/has_max false to leave a side open. */
ag_tensor *ag_clamp(ag_tensor *a, bool has_min, double min, bool has_max, double max);
/* cond != 0 ? a : b, broadcast over all three. */
ag_tensor *ag_where(ag_tensor *cond, ag_tensor *a, ag_tensor *b);
/* Comparisons: 1/0 in the promoted input dtype, never differentiable. */
ag_tensor *ag_eq(ag_tensor *a, ag_tensor *b);
ag_tensor *ag_ne(ag_tensor *a, ag_tensor *b);
ag_tensor *ag_lt(ag_tensor *a, ag_tensor *b);
ag_tensor *ag_le(ag_tensor *a, ag_tensor *b);
ag_tensor *ag_gt(ag_tensor *a, ag_tensor *b);
ag_tensor *ag_ge(ag_tensor *a, ag_tensor *b);
/* Converts to another dtype (differentiable between float dtypes). */
ag_tensor *ag_to_dtype(ag_tensor *a, ag_dtype dtype);
/* Copies to another device (differentiable). */
ag_tensor *ag_to_device(ag_tensor *a, ag_device device);
/* A copy with fresh, contiguous storage (differentiable). */
ag_tensor *ag_clone(ag_tensor *a);
/* a itself (new reference) if contiguous, else a contiguous copy. */
ag_tensor *ag_contiguous(ag_tensor *a);

/* ---- reductions (dims: array of n_dims dims, negative allowed; n_dims 0 = all) ---------- */

ag_tensor *ag_sum(ag_tensor *a, int n_dims, const int *dims, bool keepdim);
ag_tensor *ag_mean(ag_tensor *a, int n_dims, const int *dims, bool keepdim);
/* Variance with `correction` (1 = unbiased, 0 = biased), as torch.var. */
ag_tensor *ag_var(ag_tensor *a, int n_dims, const int *dims, double correction, bool keepdim);
/* Max/min values over dims (gradient split evenly between ties, as torch.amax). */
ag_tensor *ag_max(ag_tensor *a, int n_dims, const int *dims, bool keepdim);
ag_tensor *ag_min(ag_tensor *a, int n_dims, const int *dims, bool keepdim);
/* Index of the first max/min along dim (int64); all elements flattened if flatten. */
ag_tensor *ag_argmax(ag_tensor *a, int dim, bool keepdim, bool flatten);
ag_tensor *ag_argmin(ag_tensor *a, int dim, bool keepdim, bool flatten);
/* p-norm over dims (p > 0; p = 2 is the Euclidean norm). */
ag_tensor *ag_norm(ag_tensor *a, double p, int n_dims, const int *dims, bool keepdim);
/* Sums a broadcast gradient back to shape (the reverse of ag_expand). */
ag_tensor *ag_sum_to_shape(ag_tensor *a, int ndim, const int64_t *shape);

/* ---- linear algebra and normalisation ---------------------------------------------- */

/* Matrix product with torch.matmul rules (1-D operands, broadcast batch dims). */
ag_tensor *ag_matmul(ag_tensor *a, ag_tensor *b);
/* Softmax / log-softmax along dim. */
ag_tensor *ag_softmax(ag_tensor *a, int dim);
ag_tensor *ag_log_softmax(ag_tensor *a, int dim);

/* ---- views (share storage and version counter with the input) ------------------------ */

/* Same elements in a new shape; one extent may be -1. A view when strides allow, else a
 * copy (as torch.reshape). */
ag_tensor *ag_reshape(ag_tensor *a, int ndim, const int64_t *shape);
/* Like reshape but must be a view (error otherwise), as torch.view. */
ag_tensor *ag_view(ag_tensor *a, int ndim, const int64_t *shape);
/* Swaps two dims. */
ag_tensor *ag_transpose(ag_tensor *a, int dim0, int dim1);
/* Reorders dims: result dim i is a's dim perm[i]. */
ag_tensor *ag_permute(ag_tensor *a, const int *perm);
/* Broadcasts to shape (ndim >= a's; -1 keeps an extent), stride 0 in new/size-1 dims. */
ag_tensor *ag_expand(ag_tensor *a, int ndim, const int64_t *shape);
/* Elements start, start+step, ... < end along dim (negative start/end count from the end,
 * clamped as Python slices; step > 0). */
ag_tensor *ag_slice(ag_tensor *a, int dim, int64_t start, int64_t end, int64_t step);
/* Removes dim, taking element `index` of it (negative counts from the end). */
ag_tensor *ag_select(ag_tensor *a, int dim, int64_t index);
/* Inserts a dim of extent 1 at dim. */
ag_tensor *ag_unsqueeze(ag_tensor *a, int dim);
/* Removes dim if its extent is 1 (dim = AG_ALL_DIMS removes all extent-1 dims). */
ag_tensor *ag_squeeze(ag_tensor *a, int dim);
#define AG_ALL_DIMS (-1000)
/* Flattens dims start..end (inclusive) into one. */
ag_tensor *ag_flatten(ag_tensor *a, int start_dim, int end_dim);

/* ---- indexing and joining ------------------------------------------------------------ */

/* Elements of a at the int64 positions `index` (1-D) along dim. */
ag_tensor *ag_index_select(ag_tensor *a, int dim, ag_tensor *index);
/* a with source added at index positions along dim (out of place). */
ag_tensor *ag_index_add(ag_tensor *a, int dim, ag_tensor *index, ag_tensor *source);
/* torch.gather. */
ag_tensor *ag_gather(ag_tensor *a, int dim, ag_tensor *index);
/* torch.scatter_add (out of place). */
ag_tensor *ag_scatter_add(ag_tensor *a, int dim, ag_tensor *index, ag_tensor *src);
/* Concatenates n tensors along dim. */
ag_tensor *ag_cat(int n, ag_tensor *const *tensors, int dim);
/* Stacks n tensors of one shape along a new dim. */
ag_tensor *ag_stack(int n, ag_tensor *const *tensors, int dim);
/* int64 class indices → one-hot int64 with num_classes in a new last dim. */
ag_tensor *ag_one_hot(ag_tensor *index, int64_t num_classes);

/* ---- in-place ops: modify a, bump its version counter, return a (borrowed) ---------------
 * Refused on a leaf that requires grad while grad mode is on; recorded in the graph
 * otherwise, as PyTorch does. */

ag_tensor *ag_add_(ag_tensor *a, ag_tensor *b);
ag_tensor *ag_sub_(ag_tensor *a, ag_tensor *b);
ag_tensor *ag_mul_(ag_tensor *a, ag_tensor *b);
ag_tensor *ag_div_(ag_tensor *a, ag_tensor *b);
ag_tensor *ag_add_scalar_(ag_tensor *a, double s);
ag_tensor *ag_mul_scalar_(ag_tensor *a, double s);
/* Writes value into every element. */
ag_tensor *ag_fill_(ag_tensor *a, double value);
/* Writes zeros. */
ag_tensor *ag_zero_(ag_tensor *a);
/* Copies src (broadcast to a's shape, converted to a's dtype) into a. */
ag_tensor *ag_copy_(ag_tensor *a, ag_tensor *src);

/* ---- gradient checking (float64, central differences) --------------------------------- */

/* A function of tensors checked by gradcheck: returns one new tensor (or NULL on error). */
typedef ag_tensor *(*ag_gradcheck_fn)(ag_tensor *const *inputs, void *user);

/* Tolerances of gradcheck (PyTorch's defaults from ag_gradcheck_defaults). */
typedef struct ag_gradcheck_options {
    double eps;  /* finite-difference step (1e-6) */
    double atol; /* absolute tolerance (1e-5) */
    double rtol; /* relative tolerance (1e-3) */
} ag_gradcheck_options;

/* eps 1e-6, atol 1e-5, rtol 1e-3. */
ag_gradcheck_options ag_gradcheck_defaults(void);
/* Compares the analytical Jacobian (reverse mode) of fn at inputs with central
 * differences, for every input that requires grad (which must be float64). AG_OK if they
 * agree; AG_ERR_GRADCHECK with the first disagreeing entry in the message otherwise. */
ag_status ag_gradcheck(ag_gradcheck_fn fn, void *user, int n_inputs, ag_tensor *const *inputs,
                       const ag_gradcheck_options *options);
/* gradcheck of the gradients themselves: checks d/d(inputs, v) of vjp(fn, v) with a
 * random float64 v, through create_graph. */
ag_status ag_gradgradcheck(ag_gradcheck_fn fn, void *user, int n_inputs, ag_tensor *const *inputs,
                           const ag_gradcheck_options *options);

#ifdef __cplusplus
}
#endif
#endif
