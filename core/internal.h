/* Internal interfaces of libag shared by core/ and ops/. Not installed.
 *
 * Data structures:
 *   ag_storage  refcounted backend buffer + version counter (shared by views and detach)
 *   ag_tensor   refcounted strided view of a storage + autograd metadata
 *   ag_node     refcounted graph node: one recorded op, its edges and saved tensors
 *   ag_op_def   one registered op: name, kernel name, forward, backward, kernel cache */
#ifndef AG_CORE_INTERNAL_H
#define AG_CORE_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include "ag/ag.h"
#include "ag/backend.h"
#include "ag/half.h"

/* Most backends one process can load at once. */
#define AG_MAX_BACKENDS 8

typedef struct ag_node ag_node;
typedef struct ag_op_def ag_op_def;
typedef struct ag_origin ag_origin;
typedef struct ag_dual ag_dual;

/* ---- errors (core/error.c) ---- */

/* Sets this thread's error (replacing any older one); returns status. */
ag_status ag__error(ag_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sets this thread's error only if none is pending, so a NULL passed down a chain of ops
 * keeps the first error; returns the pending status or the new one. */
ag_status ag__error_if_none(ag_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* How many errors this thread has set so far: tells whether a callback (a plugin's shape
 * rule or backward) set its own message. */
uint64_t ag__errors_set(void);
/* Composite ops (public functions built from other ops: conv2d, mse_loss, copy_, RNN
 * cells...) bracket their work with these, so that an error raised by an op inside names
 * the function the caller called and the caller's arguments: "conv2d(float32[1, 1, 4, 4] on
 * cpu:0, ...): matmul: ...". Only the outermost composite is named; arguments (n of them,
 * NULL entries allowed) are borrowed until ag__context_exit. */
void ag__context_enter(const char *op, int n, ag_tensor *const *arguments);
void ag__context_exit(void);
/* Formats "[2, 3]" of a shape into buf (returns buf). */
char *ag__shape_fmt(char *buf, size_t size, int ndim, const int64_t *shape);
/* Debug logging when AG_LOG=debug. */
void ag__log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- host allocation (core/alloc.c) ---- */

/* Whether any thread ever called ag_debug_fail_allocation (atomic): until then nothing is
 * counted, so that other programs pay one load of a global per allocation, not a call and a
 * thread-local access (slow in a shared library: 8% of the tiny-op benchmark). */
extern int ag__allocations_counted;
/* Counts one allocation on this thread; true when ag_debug_fail_allocation chose it. */
bool ag__allocation_counted_fails(void);
/* True when this allocation must fail (ag_debug_fail_allocation). Allocations that do not go
 * through the wrappers below (pooled structs, device buffers) ask it directly. */
static inline bool ag__allocation_fails(void) {
    return __builtin_expect(__atomic_load_n(&ag__allocations_counted, __ATOMIC_RELAXED), 0) &&
           ag__allocation_counted_fails();
}
/* malloc, calloc, realloc, strdup and strndup that count and can be made to fail: libag
 * allocates through these only. */
void *ag__malloc(size_t size);
void *ag__calloc(size_t count, size_t size);
void *ag__realloc(void *p, size_t size);
char *ag__strdup(const char *s);
char *ag__strndup(const char *s, size_t n);

/* ---- backends (core/backend_loader.c) ---- */

/* A loaded backend. */
typedef struct ag_backend {
    ag_backend_iface iface; /* the backend's table, stubbed where it left slots empty */
    char path[1024];        /* file it was loaded from */
    void *handle;           /* dlopen handle */
    bool host_memory;       /* buffers are host pointers ("ag_host_memory" extra) */
} ag_backend;

/* Loaded backend number `index` (no bounds check beyond an assert). */
const ag_backend *ag__backend(int index);
/* Loads `name` into the table (if not yet) and returns its index in *index. */
ag_status ag__backend_load(const char *name, int *index);
/* Directories searched for backends, in order, separated by ':' (for messages/ag info). */
ag_status ag__backend_search_dirs(char *buf, size_t size);
/* dlerror()'s text after a failed dlopen of `path`, without the "<path>: " it starts with. */
const char *ag__dl_reason(const char *path);

/* ---- struct pools (core/pool.c) ---- */

/* Classes of pooled structs. */
typedef enum ag_pool_class {
    AG_POOL_TENSOR,  /* struct ag_tensor */
    AG_POOL_STORAGE, /* struct ag_storage */
    AG_POOL_NODE,    /* graph nodes of up to AG_POOL_NODE_BYTES (see core/graph.c) */
    AG_POOL_CLASSES  /* number of classes */
} ag_pool_class;

/* Size of a pooled node block: fits nodes of up to 5 inputs and 1 output. */
#define AG_POOL_NODE_BYTES 1024

/* A zeroed struct of the class from this thread's free list, or calloc; NULL if out of
 * memory. */
void *ag__pool_alloc(ag_pool_class cls);
/* Gives a struct back to this thread's free list (or to free when the list is full). */
void ag__pool_free(ag_pool_class cls, void *p);
/* Frees this thread's free lists (thread exit, process end). */
void ag__pool_drain(void);
/* Makes sure this thread's scopes and free lists are freed when the thread exits. */
void ag__thread_cleanup_arm(void);

/* ---- storage and tensors (core/tensor.c) ---- */

typedef struct ag_storage {
    int refcount;     /* atomic: tensors sharing this storage */
    ag_device device; /* where the buffer lives */
    void *data;       /* backend buffer handle */
    size_t nbytes;    /* size of the buffer */
    uint64_t version; /* atomic: bumped by every in-place write */
} ag_storage;

/* A gradient hook on a leaf tensor or a graph node output, or a post-accumulate-grad hook
 * on a leaf (exactly one of fn and post is set). */
typedef struct ag_hook {
    uint64_t handle;                 /* returned by ag_register_hook or its post variant */
    int output_nr;                   /* node output it watches (0 for leaves) */
    ag_grad_hook_fn fn;              /* the tensor hook, or NULL */
    ag_post_accumulate_hook_fn post; /* the post-accumulate-grad hook, or NULL */
    void *user;                      /* its argument */
    struct ag_hook *next;            /* next hook, in registration order */
} ag_hook;

struct ag_tensor {
    int refcount;                 /* atomic */
    ag_storage *storage;          /* NULL never: even empty tensors have a storage */
    int64_t offset;               /* element offset of element 0 in storage */
    ag_dtype dtype;               /* element type */
    int ndim;                     /* number of dims */
    int64_t shape[AG_MAX_DIMS];   /* extents */
    int64_t strides[AG_MAX_DIMS]; /* element strides */
    int64_t numel;                /* product of shape */
    bool requires_grad;           /* leaf: set by user; non-leaf: has grad_fn */
    bool is_view;                 /* shares storage with the tensor it was made from */
    bool retains_grad;            /* non-leaf asked to keep .grad */
    ag_node *grad_fn;             /* creator node (strong), NULL for leaves */
    int output_nr;                /* which output of grad_fn this is */
    ag_tensor *grad;              /* accumulated gradient (strong) or NULL */
    ag_hook *hooks;               /* leaf hooks (tensor and post-accumulate-grad) */
    ag_dual *dual;                /* forward AD: the tangent of the dual level, or NULL */
    uint64_t post_epoch;          /* backward pass that counted post_pending */
    int64_t post_pending;         /* graph edges into this leaf that pass has yet to run */
};

/* A new tensor struct with contiguous strides and fresh storage (not registered in any
 * scope; the caller owns the reference). */
ag_tensor *ag__tensor_alloc(ag_dtype dtype, int ndim, const int64_t *shape, ag_device device);
/* A new tensor struct viewing `base`'s storage with the given geometry (not registered). */
ag_tensor *ag__tensor_view(ag_tensor *base, int ndim, const int64_t *shape, const int64_t *strides,
                           int64_t offset);
/* Hands a fresh reference to the innermost scope (if one is open); returns t. */
ag_tensor *ag__scope_adopt(ag_tensor *t);
/* Contiguous strides of shape; returns numel. */
int64_t ag__contiguous_strides(int ndim, const int64_t *shape, int64_t *strides);
/* Bumps t's version counter (after an in-place write). */
void ag__bump_version(ag_tensor *t);
/* Same backend and device. */
bool ag__same_device(ag_device a, ag_device b);
/* "float32[2, 3] on cpu:0" into buf (returns buf). */
char *ag__describe(const ag_tensor *t, char *buf, size_t size);
/* Normalises a possibly negative dim against ndim; error naming `op` if out of range. */
ag_status ag__wrap_dim(const char *op, int dim, int ndim, int *out);

/* ---- kernels and dispatch (core/dispatch.c) ---- */

/* Everything an op's forward sees. */
typedef struct ag_op_ctx {
    const ag_op_def *op;      /* the op being run */
    int n_inputs;             /* number of inputs */
    ag_tensor *const *inputs; /* inputs (never NULL entries) */
    const ag_attrs *attrs;    /* attributes */
    int n_outputs;            /* number of outputs */
    ag_tensor **outputs;      /* forward stores new (unregistered) references here */
} ag_op_ctx;

/* Everything an op's backward sees. Backward functions are written in ag ops so they can
 * be differentiated again; they run with grad mode = create_graph. */
typedef struct ag_backward_ctx {
    ag_node *node;                  /* the node being run */
    ag_tensor *const *grad_outputs; /* one per output, never NULL (zeros if unused) */
    ag_tensor **grad_inputs;        /* backward stores one result per input it needs */
} ag_backward_ctx;

/* Everything an op's forward-mode rule (jvp) sees. Rules are written in ag ops on the
 * primal values; they run with forward AD suspended and grad mode as it is, so a tangent
 * is itself differentiable in reverse mode (reverse-over-forward). */
typedef struct ag_jvp_ctx {
    const ag_op_def *op;         /* the op that ran */
    int n_inputs;                /* number of inputs */
    ag_tensor *const *inputs;    /* the primal inputs */
    ag_tensor *const *tangents;  /* one per input; NULL where it has none (a zero tangent) */
    const ag_attrs *attrs;       /* the op's attributes */
    int n_outputs;               /* number of outputs */
    ag_tensor *const *outputs;   /* the primal outputs */
    ag_tensor **output_tangents; /* the rule stores one per output (NULL: a zero tangent) */
} ag_jvp_ctx;

/* Op flags. */
enum {
    AG_OPF_NONDIFF = 1u << 0, /* outputs never require grad (comparisons, argmax) */
    AG_OPF_VIEW = 1u << 1,    /* outputs share storage with input 0 */
    /* Autocast (core/autocast.c): run in the region's 16-bit dtype, or in float32. */
    AG_OPF_AUTOCAST_LOW = 1u << 2,
    AG_OPF_AUTOCAST_F32 = 1u << 3,
};
/* save_inputs value that saves every input (variadic ops). */
#define AG_SAVE_ALL 0xffffffffu

/* Bit i of an input mask; bit 31 stands for input 31 and every later one (variadic ops). */
static inline bool ag__input_bit(uint32_t mask, int i) {
    return mask >> (i < 31 ? i : 31) & 1;
}

struct ag_op_def {
    const char *name;                     /* registry name, unique ("add", "myns::swish") */
    const char *kernel;                   /* backend kernel it runs (NULL: forward needs none) */
    int n_inputs;                         /* number of inputs; -1 for variadic (cat, stack) */
    int n_outputs;                        /* number of outputs */
    uint32_t flags;                       /* AG_OPF_* */
    uint32_t save_inputs;                 /* bit i: input i is saved for backward */
    uint32_t nondiff_inputs;              /* bit i: input i never gets a gradient (indices) */
    ag_status (*forward)(ag_op_ctx *ctx); /* computes outputs */
    ag_status (*backward)(ag_backward_ctx *ctx); /* NULL: not differentiable */
    /* Forward-mode rule; NULL derives the tangents from backward (core/forward_ad.c). */
    ag_status (*jvp)(ag_jvp_ctx *ctx);
    /* One-input elementwise ops: f'(x), which their shared backward and jvp multiply by. */
    ag_tensor *(*derivative)(ag_tensor *x, const ag_attrs *attrs);
    /* Plugin ops (core/plugin_ops.c) also use: */
    uint32_t save_outputs;    /* bit j: output j is saved (as an alias without history) */
    uint32_t mutated_inputs;  /* bit i: the forward writes input i (its version is bumped) */
    bool once_differentiable; /* backward is a kernel: double backward fails */
    ag_kernel_fn host_kernel; /* kernel run on host-memory backends instead of `kernel` */
    const struct ag_plugin_op *plugin; /* the plugin's declaration, NULL for built-ins */
    /* Filled by the registry: */
    int id;                                                     /* registry index */
    ag_kernel_fn kernel_cache[AG_MAX_BACKENDS][AG_DTYPE_COUNT]; /* resolved kernels */
    /* Bit d: backend b has no kernel for 16-bit dtype d, the float32 one runs instead. */
    uint32_t via_float32[AG_MAX_BACKENDS];
};

/* Registers an op (idempotent for the same pointer); error for a duplicate name. */
ag_status ag__op_register(ag_op_def *op);
/* Registers n ops, all or none: a name taken (in the registry or twice among them) is an
 * error naming it, and the registry stays as it was. */
ag_status ag__op_register_many(ag_op_def *const *ops, int n);
/* Removes n registered ops (a plugin that goes away). */
void ag__op_unregister_many(ag_op_def *const *ops, int n);
/* Builds the op definition of a plugin's declaration (decl_size bytes of it are valid),
 * validating the schema: errors name the op and what is wrong. */
ag_status ag__plugin_op_def_new(const struct ag_plugin_op *decl, size_t decl_size, ag_op_def **out);
/* Frees a definition from ag__plugin_op_def_new (after it was unregistered). */
void ag__plugin_op_def_free(ag_op_def *def);
/* Registered op by name, or NULL. */
ag_op_def *ag__op_find(const char *name);
/* Number of registered ops, and op number i (for ag info / ag check). */
int ag__op_count(void);
ag_op_def *ag__op_at(int i);

/* Runs an op: checks inputs (NULL, devices), calls forward, records the graph when grad
 * mode is on and an input requires grad, and hands outputs to the current scope. */
ag_status ag__dispatch(ag_op_def *op, int n_inputs, ag_tensor *const *inputs, const ag_attrs *attrs,
                       int n_outputs, ag_tensor **outputs);
/* ag__dispatch for single-output ops; NULL on error. */
ag_tensor *ag__dispatch1(ag_op_def *op, int n_inputs, ag_tensor *const *inputs,
                         const ag_attrs *attrs);
/* Kernel descriptor of a tensor. */
void ag__kt(const ag_tensor *t, ag_kernel_tensor *kt);
/* Kernel descriptor of t broadcast to (ndim, shape) (t's shape must be compatible). */
void ag__kt_broadcast(const ag_tensor *t, int ndim, const int64_t *shape, ag_kernel_tensor *kt);
/* Runs op->kernel (or `kernel_name` if not NULL... see dispatch.c) with key dtype on
 * the device; the kernel is looked up once per (op, backend, dtype) and cached. */
ag_status ag__run_kernel(ag_op_def *op, ag_device device, ag_dtype key, int n_in,
                         const ag_kernel_tensor *in, int n_out, const ag_kernel_tensor *out,
                         const ag_attrs *attrs);
/* The end of most forwards: runs ctx->op's kernel (key dtype `key`) from kin (one per
 * input) into `out` (described by kout, or by ag__kt(out) when kout is NULL); stores out as
 * output 0 on success, releases it on failure. out NULL (a failed allocation) returns the
 * pending error. */
ag_status ag__forward_kernel(ag_op_ctx *ctx, ag_dtype key, const ag_kernel_tensor *kin,
                             ag_tensor *out, const ag_kernel_tensor *kout, const ag_attrs *attrs);
/* Broadcast shape of n tensors (NumPy rules); error naming op otherwise. */
ag_status ag__broadcast_shape(const char *op, int n, ag_tensor *const *tensors, int *ndim,
                              int64_t *shape);
/* Generic forward of elementwise ops: broadcasts inputs, output dtype = input 0's. */
ag_status ag__forward_elementwise(ag_op_ctx *ctx);
/* Generic forward of reductions: attrs ints[0] = bitmask of reduced dims, ints[1] = keepdim. */
ag_status ag__forward_reduce(ag_op_ctx *ctx);

/* ---- graph (core/graph.c) ---- */

/* Static metadata of a node input or output. */
typedef struct ag_meta {
    ag_dtype dtype;             /* element type */
    int ndim;                   /* dims */
    int64_t shape[AG_MAX_DIMS]; /* extents */
    ag_device device;           /* placement */
} ag_meta;

/* Where a gradient goes: another node's output, or a leaf's .grad. */
typedef struct ag_edge {
    ag_node *node;   /* creator of the input (strong), or NULL */
    int input_nr;    /* output index of that node */
    ag_tensor *leaf; /* leaf requiring grad (strong), or NULL */
} ag_edge;

struct ag_node {
    int refcount;            /* atomic: outputs + downstream edges */
    ag_op_def *op;           /* the recorded op */
    ag_attrs attrs;          /* its attributes */
    uint64_t seq;            /* creation order (later nodes first in backward) */
    int n_inputs;            /* inputs (= edges) */
    int n_outputs;           /* outputs */
    ag_edge *edges;          /* n_inputs edges */
    ag_meta *in_meta;        /* n_inputs metas */
    ag_meta *out_meta;       /* n_outputs metas */
    ag_tensor **saved;       /* inputs then outputs (n_inputs + n_outputs), NULL if not saved */
    uint64_t *saved_version; /* version of each saved tensor at save time */
    bool has_saved;          /* anything saved at all */
    bool saved_freed;        /* saved tensors released by a backward without retain */
    bool pooled;             /* allocated from the node pool (else malloc) */
    ag_hook *hooks;          /* hooks on outputs (non-leaf tensor hooks) */
    ag_tensor **retained;    /* n_outputs weak pointers of retain_grad tensors */
    ag_origin *origin;       /* anomaly mode: the forward's call stack (malloc) or NULL */
    /* activation checkpointing (core/checkpoint.c) */
    struct ag_checkpoint_frame *checkpoint; /* frame that dropped the saved tensors (strong) */
    int checkpoint_index;                   /* position among the ops the frame recorded */
    bool awaiting_recompute;                /* saved tensors dropped, not recomputed yet */
    /* engine scratch, valid during one backward */
    uint64_t epoch;       /* backward pass that last visited the node */
    int deps;             /* pending downstream contributions */
    bool needed;          /* leads to a gradient the backward must produce (ag_grad prunes) */
    ag_tensor **grad_buf; /* n_outputs accumulated gradients */
    ag_node *dead_next;   /* ag__node_release's list of nodes to free (no allocation) */
};

/* Records a node for op with the given inputs/outputs (see dispatch). */
ag_status ag__graph_record(ag_op_def *op, int n_inputs, ag_tensor *const *inputs,
                           const ag_attrs *attrs, int n_outputs, ag_tensor **outputs);
/* Reference counting of nodes; release frees whole chains iteratively. */
void ag__node_retain(ag_node *node);
void ag__node_release(ag_node *node);
/* Releases the node's saved tensors (after a backward without retain_graph, or on free). */
void ag__node_free_saved(ag_node *n);
/* Reads AG_DETECT_ANOMALY (ag_init): "1" turns anomaly mode on for threads that never set
 * it themselves. */
void ag__anomaly_read_env(void);
/* Saved input i of the node being run (borrowed); NULL if not saved. */
ag_tensor *ag__saved(const ag_backward_ctx *ctx, int i);
/* Saved output j of the node being run (an alias without history); NULL if not saved. */
ag_tensor *ag__saved_output(const ag_backward_ctx *ctx, int j);
/* Whether the running backward must produce leaf's gradient: always for ag_backward, for
 * ag_grad only when leaf is one of its inputs (core/autograd.c). */
bool ag__leaf_needed(const ag_tensor *leaf);
/* Whether input i of the node needs a gradient. */
bool ag__needs_grad(const ag_backward_ctx *ctx, int i);
/* Node being run's attributes and metas. */
const ag_attrs *ag__bw_attrs(const ag_backward_ctx *ctx);
const ag_meta *ag__bw_in_meta(const ag_backward_ctx *ctx, int i);

/* Writes src (broadcast to dst's shape, converted to dst's dtype) into dst's elements,
 * whatever dst's strides, outside the graph (the copy op's kernel; ops/elementwise.c). */
ag_status ag__copy_into(ag_tensor *dst, ag_tensor *src);

/* ---- thread state (core/tensor.c) ---- */

/* Creates a tensor of the given dtype and device from host data (registered in scope). */
ag_tensor *ag__from_host(ag_dtype dtype, int ndim, const int64_t *shape, const void *data,
                         ag_device device);
/* 0-dim tensor with value on device (registered in scope). */
ag_tensor *ag__scalar_on(ag_dtype dtype, double value, ag_device device);
/* Type promotion of two dtypes: int64 < float16, bfloat16 < float32 < float64, and float16
 * with bfloat16 gives float32 (as PyTorch). */
ag_dtype ag__promote(ag_dtype a, ag_dtype b);
/* Whether dtype is a floating point one (float32, float64, float16, bfloat16). */
static inline bool ag__is_float(ag_dtype dtype) {
    return dtype == AG_F32 || dtype == AG_F64 || dtype == AG_F16 || dtype == AG_BF16;
}
/* Whether dtype is float16 or bfloat16 (stored in 16 bits, computed in float32). */
static inline bool ag__is_low_precision(ag_dtype dtype) {
    return dtype == AG_F16 || dtype == AG_BF16;
}
/* Element i of host data of dtype as a double (16-bit floats converted exactly). */
double ag__host_value(ag_dtype dtype, const void *data, int64_t i);

/* Closes this thread's scopes and frees the spare ones (process end). */
void ag__scopes_shutdown(void);
/* Frees the op registry's table (process end). */
void ag__registry_shutdown(void);

/* ---- anomaly mode (core/anomaly.c) ---- */

/* The call stack of a node's forward, taken while anomaly mode is on. */
struct ag_origin {
    int n_frames;     /* entries of frames in use */
    void *frames[48]; /* return addresses from backtrace(), innermost first */
};

/* The caller's call stack (malloc'ed; NULL if out of memory). Only raw addresses: they are
 * turned into text when a report needs them, which keeps recording cheap. */
ag_origin *ag__anomaly_origin(void);
/* AG_ERR_ANOMALY naming n's op, the input and n's forward call ("<op>(<dtype shape>, ...)
 * called from:" and the backtrace without ag's own frames) if a gradient in grads (one per
 * input of n, NULL entries skipped) holds a NaN or an Inf; AG_OK otherwise. */
ag_status ag__anomaly_check(const ag_node *n, ag_tensor *const *grads);

/* ---- autocast (core/autocast.c) ---- */

/* This thread's autocast region (disabled outside one). */
extern _Thread_local ag_autocast ag__autocast_state;
/* Whether autocast must convert some input of op (inputs not NULL). */
bool ag__autocast_wanted(const ag_op_def *op, int n_inputs, ag_tensor *const *inputs);
/* ag__dispatch of op on its inputs converted to the dtype autocast picks for it. */
ag_status ag__autocast_dispatch(ag_op_def *op, int n_inputs, ag_tensor *const *inputs,
                                const ag_attrs *attrs, int n_outputs, ag_tensor **outputs);

/* ---- forward-mode AD (core/forward_ad.c) ---- */

/* Non-zero while a dual level is open (atomic; any thread). */
extern int ag__fwad_level_open;
/* Non-zero while this thread runs a forward rule (whose own ops carry no tangents). */
extern _Thread_local int ag__fwad_suspended;
/* Whether ops on this thread must propagate tangents: the one check every op pays. */
static inline bool ag__fwad_active(void) {
    return __atomic_load_n(&ag__fwad_level_open, __ATOMIC_RELAXED) && !ag__fwad_suspended;
}
/* t's tangent at the open dual level (borrowed), or NULL. */
ag_tensor *ag__tangent(const ag_tensor *t);
/* Gives t the tangent (a new reference is taken; NULL removes t's). */
ag_status ag__set_tangent(ag_tensor *t, ag_tensor *tangent);
/* Called by dispatch after an op ran while ag__fwad_active(): computes the outputs'
 * tangents from the inputs' with the op's jvp rule (or from its backward). */
ag_status ag__fwad_propagate(ag_op_def *op, int n_inputs, ag_tensor *const *inputs,
                             const ag_attrs *attrs, int n_outputs, ag_tensor **outputs);
/* The jvp of ops linear in their differentiable inputs: the op itself applied to the
 * tangents (zeros where an input has none; non-differentiable inputs as they are). */
ag_status ag__jvp_linear(ag_jvp_ctx *ctx);
/* The jvp of one-input elementwise ops: tangent * op->derivative(x). */
ag_status ag__jvp_elementwise(ag_jvp_ctx *ctx);

/* ---- plugins (core/plugin_loader.c) ---- */

/* Loads the plugins of AG_PLUGINS once (ag_init calls it after the default backend is up);
 * a failure is kept and returned again by every later call, like AG_BACKEND's. */
ag_status ag__plugins_load_env(void);
/* Unregisters and unloads every plugin (process end); AG_PLUGINS is read again afterwards. */
void ag__plugins_shutdown(void);

/* ---- files written atomically (core/file_atomic.c) ---- */

/* Writes a file's contents to f; reports its own errors (ag__io_error). */
typedef ag_status (*ag__file_writer)(FILE *f, void *user);
/* AG_ERR_IO "<who>: <what> <path>: <strerror(errno)>". */
ag_status ag__io_error(const char *who, const char *what, const char *path);
/* Writes path through `write` into a temporary file beside it, then fsync and rename: path
 * is either the old file or the whole new one. `who` starts the error messages. */
ag_status ag__write_file_atomic(const char *who, const char *path, ag__file_writer write,
                                void *user);

/* ---- op timings trace (core/trace.c) ---- */

/* Non-zero while ag_trace_start is in effect (atomic). */
extern int ag__trace_on;
/* Host clock in ns, never 0 (core/trace.c). */
uint64_t ag__trace_clock(void);
/* Start time of an op to trace, or 0 when not tracing: the one relaxed load every op pays. */
static inline uint64_t ag__trace_begin(void) {
    return __atomic_load_n(&ag__trace_on, __ATOMIC_RELAXED) ? ag__trace_clock() : 0;
}
/* Records op `name` (backward: "<name> backward") on device from `start` (ag__trace_begin;
 * 0 does nothing) to now, with the shapes of inputs[0..n) as its arguments. */
void ag__trace_end(uint64_t start, const char *name, bool backward, ag_device device, int n,
                   ag_tensor *const *inputs);

/* ---- activation checkpointing (core/checkpoint.c) ---- */

/* A call of ag_checkpoint: its function, inputs, RNG state and the nodes it recorded. */
typedef struct ag_checkpoint_frame ag_checkpoint_frame;

/* The frame whose function is running on this thread (its forward or its recomputation),
 * or NULL. Every recorded node tests it, so it is a plain thread-local, not a call. */
extern _Thread_local ag_checkpoint_frame *ag__checkpoint_current;
/* Called by ag__graph_record for a node recorded while a frame is current. In the forward
 * it drops the node's saved tensors and ties the node to the frame; in the recomputation
 * it hands the saved tensors to the frame's matching original node (error if the op
 * sequence differs or a saved tensor changed version). */
ag_status ag__checkpoint_recorded(ag_node *node);
/* Runs the frame of n (n->awaiting_recompute) again so that its nodes get their saved
 * tensors back (called by the engine just before n's backward). */
ag_status ag__checkpoint_recompute(ag_node *n);
/* A node tied to a frame is being freed: clears its slot and drops its frame reference. */
void ag__checkpoint_node_freed(ag_node *n);
/* The default generator's state (core/random.c), read at ag_checkpoint and put back for
 * the recomputation so that dropout draws the same mask. */
void ag__default_rng_state(uint64_t *seed, uint64_t *counter);
/* Sets the default generator's state to one read by ag__default_rng_state. */
void ag__default_rng_restore(uint64_t seed, uint64_t counter);

#endif
