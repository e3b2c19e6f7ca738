/* libFuzzer target: plugin loading and op-schema validation (core/plugin_loader.c,
 * core/plugin_ops.c, include/ag/plugin.h).
 *
 * The bytes decode into a plugin: its ag_plugin_info (struct_size, ABI version, missing
 * name, version or init), how its init behaves (registers NULL ops, uses a wrong registrar,
 * fails with or without a message, loads a plugin itself) and up to four ag_plugin_op
 * declarations (struct_size, names, arities, dtype masks, input/output masks, attributes,
 * kernels and kernel sources, backward kind and flags, samples, launch). It is loaded
 * through the real path: ag_plugin_load of a shim shared library (fuzz_plugin_shim.c)
 * whose entry returns this info, so each declaration passes host->register_op, schema
 * validation and the registry's duplicate-name check exactly as a plugin's would.
 *
 * A plugin that loads has its ops called by name on small inputs, with a shape rule, kernels
 * and a composed backward that follow the rest of the bytes (wrong output metadata, errors
 * with and without a message, gradients of the wrong shape), then backward; finally every
 * plugin is unloaded (ag__plugins_shutdown) so that the next input starts from an empty
 * registry. Refusals are fine; crashes, leaks, UB and errors without a message are bugs. */
#include <dlfcn.h>
#include <stddef.h>
#include "fuzz_util.h"
#include "internal.h" /* ag__plugins_shutdown */
#include "ag/plugin.h"

#ifndef AG_FUZZ_PLUGIN_SHIM
#error "AG_FUZZ_PLUGIN_SHIM must name the shim plugin (fuzz/CMakeLists.txt)"
#endif

#define MAX_OPS 4
/* ABI 1.0 sizes, as the loader computes them. */
#define OP_SIZE_1_0   (offsetof(ag_plugin_op, user) + sizeof(void *))
#define INFO_SIZE_1_0 (offsetof(ag_plugin_info, init) + sizeof(void (*)(void)))

/* Init behaviour bits. */
enum {
    INIT_NULL_OP = 1 << 0,         /* register a NULL op first */
    INIT_NO_REGISTRAR = 1 << 1,    /* register with a NULL registrar first */
    INIT_FAIL = 1 << 2,            /* return an error after registering */
    INIT_FAIL_MESSAGE = 1 << 3,    /* ... with a message set through host->error */
    INIT_STOP_ON_REFUSAL = 1 << 4, /* stop at the first refused op */
    INIT_NESTED_LOAD = 1 << 5,     /* call ag_plugin_load from init */
};

/* One decoded declaration and the storage its pointers point into. */
typedef struct op_storage {
    ag_plugin_op op;
    char name[160];
    const char *attr_names[2 * AG_PLUGIN_MAX_IO];
    ag_plugin_kernel_source sources[3], backward_sources[3];
    ag_plugin_sample samples[2];
} op_storage;

/* The decoded plugin. Static: the loader keeps pointers into it while it is loaded. */
static struct {
    ag_plugin_info info;
    uint8_t init_flags;
    int n_ops;
    op_storage ops[MAX_OPS];
} plugin;

static void (*shim_configure)(const ag_plugin_info *info);
static const ag_plugin_host *host; /* from init, for errors of the kernels and rules */
static fuzz_bytes *call_bytes;     /* what the shape rule, kernels and backward read */
static ag_tensor *call_inputs[AG_PLUGIN_MAX_IO]; /* inputs of the op being called */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_init_ag();
    const char *path = getenv("AG_FUZZ_PLUGIN_SHIM");
    if (!path) path = AG_FUZZ_PLUGIN_SHIM;
    /* The loader's dlopen of the same file returns this handle. */
    void *shim = dlopen(path, RTLD_NOW | RTLD_NODELETE);
    if (!shim) fuzz_fail("dlopen shim", dlerror());
    *(void **)&shim_configure = dlsym(shim, "ag_fuzz_shim_configure");
    if (!shim_configure) fuzz_fail("dlsym ag_fuzz_shim_configure", dlerror());
    return 0;
}

/* ---- what the plugin's ops run ---- */

/* An error through the host, as a plugin reports one; sometimes without a message. */
static ag_status plugin_error(uint8_t choice, const char *what) {
    if (choice & 1) return AG_ERR_INVALID_ARG;
    return host->error(AG_ERR_INVALID_ARG, "fuzz plugin: %s refuses", what);
}

/* Output metadata: the first input's (maybe as another dtype), or arbitrary values that the
 * host must refuse cleanly (bad dtype, ndim, negative extents). */
static ag_status shape_rule(int n_inputs, const ag_tensor_meta *inputs, const ag_attrs *attrs,
                            int n_outputs, ag_tensor_meta *outputs) {
    (void)n_inputs;
    (void)attrs;
    fuzz_bytes *b = call_bytes;
    uint8_t mode = fuzz_u8(b);
    if (mode >= 248) return plugin_error(mode, "shape rule");
    for (int j = 0; j < n_outputs; j++) {
        outputs[j] = inputs[0];
        if (mode < 160) continue;
        if (mode < 208) {
            outputs[j].dtype = (ag_dtype)fuzz_range(b, 0, AG_DTYPE_COUNT);
            continue;
        }
        outputs[j].dtype = (ag_dtype)fuzz_range(b, -1, AG_DTYPE_COUNT + 1);
        outputs[j].ndim = fuzz_range(b, -1, AG_MAX_DIMS + 1);
        for (int d = 0; d < AG_MAX_DIMS; d++) outputs[j].shape[d] = fuzz_range(b, -2, 4);
    }
    return AG_OK;
}

/* Writes zeros to every output (fresh contiguous tensors), or fails. */
static ag_status zero_kernel(const ag_kernel_args *args) {
    uint8_t mode = fuzz_u8(call_bytes);
    if (mode >= 240) return plugin_error(mode, "kernel");
    for (int j = 0; j < args->n_outputs; j++) {
        const ag_kernel_tensor *t = &args->outputs[j];
        size_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
        size_t size = ag_dtype_size(t->dtype);
        memset((char *)t->data + (size_t)t->offset * size, 0, n * size);
    }
    return AG_OK;
}

/* A composed backward: per input, no gradient, zeros of the input's shape, a gradient of the
 * wrong shape, or an error. */
static ag_status composed_backward(ag_plugin_backward_ctx *ctx) {
    for (int i = 0; i < ctx->n_inputs; i++) {
        if (!ctx->needs_input_grad[i]) continue;
        uint8_t mode = fuzz_u8(call_bytes);
        if (mode >= 248) return plugin_error(mode, "backward");
        if (mode < 160)
            ctx->grad_inputs[i] = ag_zeros_like(call_inputs[i]);
        else if (mode < 208)
            ctx->grad_inputs[i] = ag_sum(ctx->grad_outputs[0], 0, NULL, false);
    }
    return AG_OK;
}

/* ---- the plugin's init ---- */

static ag_status plugin_init(const ag_plugin_host *h, ag_plugin_registrar *registrar) {
    host = h;
    uint8_t flags = plugin.init_flags;
    /* Errors are checked, not cleared: the loader may report the last one. */
    if (flags & INIT_NULL_OP) fuzz_check_error(h->register_op(registrar, NULL), "NULL op");
    if (flags & INIT_NO_REGISTRAR)
        fuzz_check_error(h->register_op(NULL, &plugin.ops[0].op), "NULL registrar");
    if (flags & INIT_NESTED_LOAD)
        fuzz_check_error(ag_plugin_load(AG_FUZZ_PLUGIN_SHIM), "nested ag_plugin_load");
    for (int k = 0; k < plugin.n_ops; k++) {
        ag_status st = h->register_op(registrar, &plugin.ops[k].op);
        fuzz_check_error(st, "register_op");
        if (st != AG_OK && (flags & INIT_STOP_ON_REFUSAL)) return st;
    }
    if (flags & INIT_FAIL)
        return flags & INIT_FAIL_MESSAGE ? h->error(AG_ERR_INVALID_ARG, "fuzz init fails")
                                         : AG_ERR_INVALID_ARG;
    return AG_OK;
}

/* ---- decoding ---- */

/* A count that is mostly valid (lo..hi), sometimes anything in -1..max+1. */
static int decode_count(fuzz_bytes *b, int lo, int hi, int max) {
    uint8_t v = fuzz_u8(b);
    return v < 224 ? lo + v % (hi - lo + 1) : (int)(v % (max + 3)) - 1;
}

/* A bit mask over n entries, sometimes with bits beyond them. */
static uint32_t decode_mask(fuzz_bytes *b, int n) {
    uint32_t v = fuzz_u16(b);
    uint32_t valid = n > 0 && n < 32 ? (1u << n) - 1 : 0;
    return v & 0x8000 ? v & 0x7fff : v & valid;
}

static void decode_name(fuzz_bytes *b, char *name, size_t size) {
    static const char alphabet[] = "abz09_::-A. ";
    uint8_t mode = fuzz_u8(b) % 8;
    if (mode >= 1 && mode <= 3) {
        snprintf(name, size, "fz::op%d", mode); /* collide within a plugin */
    } else if (mode == 4) {
        memset(name, 'a', size - 1); /* longer than the 120 allowed */
        memcpy(name, "fz::", 4);
        name[size - 1] = '\0';
    } else {
        size_t len = fuzz_u8(b) % 24;
        for (size_t i = 0; i < len && i + 1 < size; i++)
            name[i] = alphabet[fuzz_u8(b) % (sizeof alphabet - 1)];
        name[len < size ? len : size - 1] = '\0';
    }
}

/* n (maybe invalid) kernel sources into s; returns the count to declare. */
static int decode_sources(fuzz_bytes *b, ag_plugin_kernel_source *s,
                          const ag_plugin_kernel_source **out) {
    static const char *const languages[] = {"opencl", "cuda", "metal", NULL};
    int n = fuzz_u8(b) < 224 ? 0 : fuzz_range(b, -1, 3);
    for (int i = 0; i < 3; i++) {
        uint8_t v = fuzz_u8(b);
        s[i] = (ag_plugin_kernel_source){languages[v % 4], v & 4 ? NULL : "kernel void k() {}",
                                         v & 8 ? NULL : "k"};
    }
    *out = fuzz_u8(b) < 16 ? NULL : s;
    return n;
}

static void decode_op(fuzz_bytes *b, op_storage *s, int index) {
    ag_plugin_op *op = &s->op;
    memset(op, 0, sizeof *op);
    static const size_t sizes[] = {sizeof(ag_plugin_op),     sizeof(ag_plugin_op),
                                   sizeof(ag_plugin_op),     OP_SIZE_1_0,
                                   OP_SIZE_1_0 - 1,          0,
                                   sizeof(ag_plugin_op) + 32};
    op->struct_size = sizes[fuzz_u8(b) % (sizeof sizes / sizeof sizes[0])];
    decode_name(b, s->name, sizeof s->name);
    op->name = fuzz_u8(b) < 8 ? NULL : s->name;
    op->doc = "fuzz op";
    op->n_inputs = decode_count(b, 1, 3, AG_PLUGIN_MAX_IO);
    op->n_outputs = decode_count(b, 1, 2, AG_PLUGIN_MAX_IO);
    for (int i = 0; i < AG_PLUGIN_MAX_IO; i++) {
        uint8_t v = fuzz_u8(b);
        op->input_dtypes[i] = v < 224 ? 1u + v % 7u : v & 0x1f; /* subsets of f32/f64/i64 */
    }
    op->nondiff_inputs = decode_mask(b, op->n_inputs);
    op->save_inputs = decode_mask(b, op->n_inputs);
    op->save_outputs = decode_mask(b, op->n_outputs);
    op->mutated_inputs = fuzz_u8(b) < 240 ? 0 : decode_mask(b, op->n_inputs);
    op->n_int_attrs = decode_count(b, 0, 2, AG_PLUGIN_MAX_IO);
    op->n_real_attrs = decode_count(b, 0, 2, AG_PLUGIN_MAX_IO);
    static const char *const attr_names[] = {"alpha", "beta", NULL, "dim"};
    for (int i = 0; i < 2 * AG_PLUGIN_MAX_IO; i++)
        s->attr_names[i] = attr_names[fuzz_u8(b) < 240 ? i % 2 : 2 + i % 2];
    op->attr_names = fuzz_u8(b) < 16 ? NULL : s->attr_names;
    uint8_t parts = fuzz_u8(b);
    op->shape = parts & 1 ? NULL : shape_rule;
    op->cpu_kernel = parts & 2 ? NULL : zero_kernel;
    op->n_sources = decode_sources(b, s->sources, &op->sources);
    /* Backward: none, composed, kernel (once differentiable), or a mix the host refuses. */
    switch (fuzz_u8(b) % 6) {
    case 0:
        break;
    case 1:
    case 2:
        op->backward = composed_backward;
        break;
    case 3:
    case 4:
        op->backward_cpu_kernel = zero_kernel;
        op->flags = AG_PLUGIN_ONCE_DIFFERENTIABLE;
        break;
    default:
        op->backward = parts & 4 ? composed_backward : NULL;
        op->backward_cpu_kernel = parts & 8 ? zero_kernel : NULL;
        op->flags = fuzz_u8(b);
        break;
    }
    op->n_backward_sources = decode_sources(b, s->backward_sources, &op->backward_sources);
    uint8_t samples = fuzz_u8(b);
    op->n_samples = samples < 224 ? samples % 2 : (int)(samples % 4) - 1;
    for (int k = 0; k < 2; k++) {
        memset(&s->samples[k], 0, sizeof s->samples[k]);
        s->samples[k].n_inputs = op->n_inputs + (fuzz_u8(b) < 240 ? 0 : 1);
        s->samples[k].high = 1;
    }
    op->samples = samples & 0x10 ? NULL : s->samples;
    uint8_t launch = fuzz_u8(b);
    op->launch = (ag_plugin_launch)(launch < 240 ? launch % 2 : launch);
    op->user = &plugin.ops[index];
}

static void decode_plugin(fuzz_bytes *b) {
    ag_plugin_info *info = &plugin.info;
    memset(info, 0, sizeof *info);
    static const size_t sizes[] = {sizeof(ag_plugin_info),
                                   sizeof(ag_plugin_info),
                                   sizeof(ag_plugin_info),
                                   INFO_SIZE_1_0,
                                   offsetof(ag_plugin_info, name),
                                   offsetof(ag_plugin_info, init),
                                   4,
                                   sizeof(ag_plugin_info) + 16};
    info->struct_size = sizes[fuzz_u8(b) % (sizeof sizes / sizeof sizes[0])];
    uint8_t abi = fuzz_u8(b);
    info->abi_major = abi < 240 ? AG_PLUGIN_ABI_MAJOR : abi % 3;
    info->abi_minor = abi % 4;
    uint8_t missing = fuzz_u8(b);
    info->name = missing == 1 ? NULL : "fuzz";
    info->version = missing == 2 ? NULL : "1.0";
    info->init = missing == 3 ? NULL : plugin_init;
    plugin.init_flags = fuzz_u8(b);
    /* Most inits neither fail on purpose nor nest a load. */
    if (fuzz_u8(b) < 192) plugin.init_flags &= (uint8_t) ~(INIT_FAIL | INIT_NESTED_LOAD);
    plugin.n_ops = fuzz_range(b, 0, MAX_OPS);
    for (int k = 0; k < plugin.n_ops; k++) decode_op(b, &plugin.ops[k], k);
    shim_configure(missing == 4 ? NULL : info);
}

/* ---- calling a loaded op ---- */

/* The first dtype the op's input i accepts, f32 first. */
static ag_dtype accepted_dtype(const ag_plugin_op *op, int i) {
    static const ag_dtype order[] = {AG_F32, AG_F64, AG_I64};
    for (int k = 0; k < 3; k++)
        if (op->input_dtypes[i] & AG_DTYPE_BIT(order[k])) return order[k];
    return AG_F32;
}

/* Calls op on inputs of small shapes from the bytes, then backward through the result. */
static void call_op(fuzz_bytes *b, const ag_op *op) {
    const ag_plugin_op *decl = ag_op_plugin_decl(op);
    if (!decl) fuzz_fail("ag_op_plugin_decl", "NULL for a plugin op");
    int ndim = fuzz_range(b, 0, 3);
    int64_t shape[3];
    for (int d = 0; d < ndim; d++) shape[d] = fuzz_range(b, 0, 4);
    int n = decl->n_inputs;
    for (int i = 0; i < n; i++) {
        call_inputs[i] = ag_ones(accepted_dtype(decl, i), ndim, shape);
        if (!call_inputs[i]) fuzz_fail("ag_ones", ag_last_error());
        if (ag_dtype_of(call_inputs[i]) != AG_I64 && fuzz_u8(b) & 1)
            fuzz_check_status(ag_set_requires_grad(call_inputs[i], true), "requires_grad");
    }
    ag_attrs attrs = {{0}, {0}};
    for (int k = 0; k < 8; k++) attrs.ints[k] = fuzz_range(b, -1, 3);
    ag_tensor *outputs[AG_PLUGIN_MAX_IO] = {0};
    int n_out = fuzz_u8(b) < 240 ? decl->n_outputs : fuzz_range(b, 0, AG_PLUGIN_MAX_IO);
    ag_status st = ag_op_call(op, n, call_inputs, fuzz_u8(b) & 1 ? &attrs : NULL, n_out, outputs);
    fuzz_check_status(st, "ag_op_call");
    if (st != AG_OK) return;
    ag_tensor *loss = NULL;
    for (int j = 0; j < n_out; j++) {
        if (!outputs[j]) fuzz_fail("ag_op_call", "AG_OK with a NULL output");
        if (!ag_requires_grad(outputs[j])) continue;
        ag_tensor *s = ag_sum(outputs[j], 0, NULL, false);
        loss = loss ? ag_add(loss, s) : s;
    }
    if (loss)
        fuzz_check_status(ag_backward(loss, NULL), "ag_backward");
    else
        fuzz_check_status(ag_last_status(), "loss");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_bytes b = {data, size};
    decode_plugin(&b);
    ag_status st = ag_plugin_load(AG_FUZZ_PLUGIN_SHIM);
    fuzz_check_status(st, "ag_plugin_load");
    if (st == AG_OK) {
        int n_ops = -1;
        if (ag_plugin_count() != 1 || ag_plugin_describe(0, NULL, NULL, NULL, &n_ops) != AG_OK)
            fuzz_fail("loaded plugin", "not in the table");
        /* Loading the same file again is a no-op. */
        if (ag_plugin_load(AG_FUZZ_PLUGIN_SHIM) != AG_OK || ag_plugin_count() != 1)
            fuzz_fail("second load", ag_last_error());
        call_bytes = &b;
        ag_scope *scope = ag_scope_begin();
        for (int j = 0; j < n_ops; j++) {
            const char *name = ag_plugin_op_name(0, j);
            const ag_op *op = name ? ag_op_find(name) : NULL;
            if (!op) fuzz_fail("registered op not found", name);
            call_op(&b, op);
        }
        ag_scope_end(scope);
        call_bytes = NULL;
    } else if (ag_plugin_count() != 0) {
        fuzz_fail("refused plugin", "left in the table");
    }
    /* Back to an empty registry for the next input. */
    ag__plugins_shutdown();
    ag_clear_error();
    return 0;
}
