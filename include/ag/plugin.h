/* ag plugin ABI — third-party differentiable ops in shared libraries loaded at run time.
 *
 * A plugin exports one symbol, AG_PLUGIN_ENTRY_SYMBOL, of type ag_plugin_entry_fn. The host
 * calls it with its ABI version and gets an ag_plugin_info; it then calls info->init with
 * the host's function table, and init registers ops (ag_plugin_op) through
 * host->register_op. Registration is a transaction: if init fails, or any op is refused
 * (invalid schema, a name already taken), nothing the plugin registered is kept.
 *
 * Versioning, as for backends (docs/backends.md): every struct starts with struct_size;
 * fields are only appended (minor bump); the host refuses another major. The host reads
 * only the fields inside struct_size, so a plugin built against an older minor works.
 *
 * Plugins link libag (find_package(ag) → ag::ag, or pkg-config ag) and may call every
 * function of ag.h: a composed backward is written with ag ops, so it is differentiable
 * again. Built-in ops go through the same registry and dispatcher. docs/writing-a-plugin.md
 * is the tutorial. */
#ifndef AG_PLUGIN_H
#define AG_PLUGIN_H

#include "ag/ag.h"
#include "ag/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The plugin ABI version this header describes. */
#define AG_PLUGIN_ABI_MAJOR 1
#define AG_PLUGIN_ABI_MINOR 1

/* Name of the one symbol every plugin exports. */
#define AG_PLUGIN_ENTRY_SYMBOL "ag_plugin_entry"

/* Most inputs, outputs and attributes of each kind an op may declare. */
#define AG_PLUGIN_MAX_IO 8

/* Bit of a dtype in the dtype masks of ag_plugin_op.input_dtypes. */
#define AG_DTYPE_BIT(dtype) (1u << (dtype))

/* Static metadata of a tensor, for shape rules and sample inputs. */
typedef struct ag_tensor_meta {
    ag_dtype dtype;             /* element type */
    int ndim;                   /* dims */
    int64_t shape[AG_MAX_DIMS]; /* extents */
} ag_tensor_meta;

/* Shape rule: from the inputs' metadata and the attributes, fill the outputs' dtype and
 * shape. Returns AG_OK, or an error set with host->error naming what is wrong. */
typedef ag_status (*ag_plugin_shape_fn)(int n_inputs, const ag_tensor_meta *inputs,
                                        const ag_attrs *attrs, int n_outputs,
                                        ag_tensor_meta *outputs);

/* What a composed backward sees. Tensors are borrowed; results are stored as new op results
 * (created with ag ops while the backward runs) in grad_inputs. */
typedef struct ag_plugin_backward_ctx {
    size_t struct_size;              /* sizeof(ag_plugin_backward_ctx) of the host */
    const ag_attrs *attrs;           /* the op's attributes */
    int n_inputs;                    /* inputs of the op */
    int n_outputs;                   /* outputs of the op */
    ag_tensor *const *saved_inputs;  /* n_inputs entries, NULL where not saved */
    ag_tensor *const *saved_outputs; /* n_outputs entries, NULL where not saved */
    ag_tensor *const *grad_outputs;  /* n_outputs gradients, never NULL (zeros if unused) */
    const bool *needs_input_grad;    /* n_inputs flags: compute grad_inputs[i] only if set */
    ag_tensor **grad_inputs;         /* n_inputs slots for the results, NULL-initialised */
    void *user;                      /* the op's user pointer */
} ag_plugin_backward_ctx;

/* A composed backward, written with ag ops. */
typedef ag_status (*ag_plugin_backward_fn)(ag_plugin_backward_ctx *ctx);

/* A kernel as source code for a backend that compiles at run time (a backend whose
 * source_language matches `language`: OpenCL C on the opencl backend, CUDA C through NVRTC
 * on the cuda backend). Calling convention 1.1: every tensor is float32 (other dtypes give
 * AG_ERR_UNSUPPORTED on such backends), contiguous and passed as one buffer argument
 * starting at element 0, in kernel order (inputs, then outputs: for a backward kernel the
 * order of backward_cpu_kernel's arguments); then the int64 sizes that ag_plugin_op.launch
 * selects; one work item per element or per row as it says. */
typedef struct ag_plugin_kernel_source {
    const char *language; /* "opencl" (OpenCL C, clBuildProgram) or "cuda" (CUDA C, NVRTC) */
    const char *source;   /* the program text */
    const char *entry;    /* name of the kernel function in it (extern "C" for CUDA) */
} ag_plugin_kernel_source;

/* How source kernels are launched (ag_plugin_op.launch). */
typedef enum ag_plugin_launch {
    /* Sizes (n): n = elements of the kernel's first output; one work item per element. */
    AG_PLUGIN_LAUNCH_ELEMENTS = 0,
    /* Sizes (rows, cols) of the op's first input: cols its last extent (1 when 0-dim), rows
     * its element count / cols; one work item per row. The same sizes in backward. */
    AG_PLUGIN_LAUNCH_ROWS = 1,
} ag_plugin_launch;

/* Sample inputs for `ag check`: shapes and dtypes, a value range, attributes. */
typedef struct ag_plugin_sample {
    int n_inputs;                            /* = the op's n_inputs */
    ag_tensor_meta inputs[AG_PLUGIN_MAX_IO]; /* dtype and shape of each input */
    double low, high;                        /* float inputs are uniform in [low, high) */
    ag_attrs attrs;                          /* attributes */
} ag_plugin_sample;

/* Flags of ag_plugin_op. */
enum {
    /* The backward is a kernel without a backward of its own: a double backward fails with
     * PyTorch's "trying to differentiate twice a function that was marked with
     * @once_differentiable". */
    AG_PLUGIN_ONCE_DIFFERENTIABLE = 1u << 0,
};

/* One op. Strings and arrays must stay valid while the plugin is loaded (static data). */
typedef struct ag_plugin_op {
    size_t struct_size;                      /* sizeof(ag_plugin_op) the plugin was built with */
    const char *name;                        /* "namespace::name": [a-z0-9_]+ "::" [a-z0-9_]+ */
    const char *doc;                         /* one line shown by `ag info` */
    int n_inputs;                            /* 1..AG_PLUGIN_MAX_IO */
    int n_outputs;                           /* 1..AG_PLUGIN_MAX_IO */
    uint32_t input_dtypes[AG_PLUGIN_MAX_IO]; /* allowed dtypes of each input (AG_DTYPE_BIT) */
    uint32_t nondiff_inputs;                 /* bit i: input i never gets a gradient (indices) */
    uint32_t save_inputs;                    /* bit i: input i is saved for backward */
    uint32_t save_outputs;         /* bit j: output j is saved for backward (without history) */
    uint32_t mutated_inputs;       /* bit i: the kernel also writes input i (version bumped) */
    int n_int_attrs;               /* attrs.ints[0..n) used, 0..AG_PLUGIN_MAX_IO */
    int n_real_attrs;              /* attrs.reals[0..n) used, 0..AG_PLUGIN_MAX_IO */
    const char *const *attr_names; /* n_int_attrs + n_real_attrs names, ints first */
    ag_plugin_shape_fn shape;      /* required */
    /* Forward kernel for backends whose buffers are host memory (cpu): inputs and outputs
     * in order; outputs are fresh contiguous tensors the shape rule described. */
    ag_kernel_fn cpu_kernel;
    const ag_plugin_kernel_source *sources; /* forward kernels for other backends */
    int n_sources;                          /* entries in sources */
    ag_plugin_backward_fn backward;         /* composed backward, or NULL */
    /* Backward kernel (with AG_PLUGIN_ONCE_DIFFERENTIABLE): inputs are the grad_outputs,
     * then the saved inputs, then the saved outputs (each in index order); outputs are the
     * gradients of every differentiable input (shape and dtype of the input), in order. */
    ag_kernel_fn backward_cpu_kernel;
    const ag_plugin_kernel_source *backward_sources; /* backward kernels for other backends */
    int n_backward_sources;                          /* entries in backward_sources */
    uint32_t flags;                                  /* AG_PLUGIN_* */
    const ag_plugin_sample *samples; /* sample inputs for `ag check` (may be NULL) */
    int n_samples;                   /* entries in samples */
    void *user;                      /* passed back in ag_plugin_backward_ctx */
    /* ---- plugin ABI 1.1 ---- */
    ag_plugin_launch launch; /* how sources and backward_sources run (ELEMENTS if older) */
} ag_plugin_op;

/* Opaque handle of one plugin's registration transaction. */
typedef struct ag_plugin_registrar ag_plugin_registrar;

/* What the host offers a plugin during init. */
typedef struct ag_plugin_host {
    size_t struct_size;  /* sizeof(ag_plugin_host) of the host */
    uint32_t abi_major;  /* AG_PLUGIN_ABI_MAJOR of the host */
    uint32_t abi_minor;  /* AG_PLUGIN_ABI_MINOR of the host */
    const char *version; /* ag_version() of the host */
    /* Registers one op: copied and validated now; a refusal fails the whole load even if
     * init goes on. The table stays valid for the life of the process. */
    ag_status (*register_op)(ag_plugin_registrar *registrar, const ag_plugin_op *op);
    /* Sets the thread's error message (printf-style) and returns status. */
    ag_status (*error)(ag_status status, const char *fmt, ...);
} ag_plugin_host;

/* What a plugin's entry returns (static storage). */
typedef struct ag_plugin_info {
    size_t struct_size;  /* sizeof(ag_plugin_info) the plugin was built with */
    uint32_t abi_major;  /* AG_PLUGIN_ABI_MAJOR the plugin was built with */
    uint32_t abi_minor;  /* AG_PLUGIN_ABI_MINOR the plugin was built with */
    const char *name;    /* plugin name, e.g. "swish" */
    const char *version; /* the plugin's own version string */
    /* Registers the plugin's ops; AG_OK or an error (then nothing is kept). */
    ag_status (*init)(const ag_plugin_host *host, ag_plugin_registrar *registrar);
} ag_plugin_info;

/* Type of the entry symbol. */
typedef const ag_plugin_info *(*ag_plugin_entry_fn)(uint32_t host_abi_major,
                                                    uint32_t host_abi_minor);

/* ---- host side: loading plugins and calling ops by name ---- */

/* Loads a plugin file and registers its ops (all or none). Errors name the file and the
 * cause: not a shared library (dlerror), no entry symbol, ABI major mismatch, invalid
 * schema, duplicate op name, init failure. Loading the same file twice is a no-op. */
ag_status ag_plugin_load(const char *path);
/* Number of loaded plugins (AG_PLUGINS=a.so:b.so are loaded by ag_init). */
int ag_plugin_count(void);
/* Plugin i's name, file, version and number of ops (borrowed strings); error if out of range. */
ag_status ag_plugin_describe(int i, const char **name, const char **path, const char **version,
                             int *n_ops);
/* Name of op j of plugin i (borrowed), NULL if out of range. */
const char *ag_plugin_op_name(int i, int j);

/* An op found in the registry by name (built-in or plugin), opaque. */
typedef struct ag_op ag_op;

/* Finds a registered op by name ("swish::swish", "add"); NULL (with an error) if none. */
const ag_op *ag_op_find(const char *name);
/* The op's declaration for plugin ops (borrowed), NULL for built-in ops. */
const ag_plugin_op *ag_op_plugin_decl(const ag_op *op);
/* Runs an op with n_inputs inputs and attributes (NULL: all zero) into n_outputs outputs
 * (new references owned as any op result); records the graph as for built-in ops. */
ag_status ag_op_call(const ag_op *op, int n_inputs, ag_tensor *const *inputs, const ag_attrs *attrs,
                     int n_outputs, ag_tensor **outputs);
/* ag_op_call for one output; NULL on error. */
ag_tensor *ag_op_call1(const ag_op *op, int n_inputs, ag_tensor *const *inputs,
                       const ag_attrs *attrs);

#ifdef __cplusplus
}
#endif
#endif
