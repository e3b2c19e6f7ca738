/* Plugin ops in the registry: validating a plugin's declaration, and the forward and
 * backward that every plugin op runs (its shape rule and kernels, or its composed
 * backward). Plugin ops then go through the same dispatcher, graph and engine as built-in
 * ops. Also the public way to find and call any registered op by name. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "ag/plugin.h"

/* Everything one plugin op owns. */
typedef struct plugin_def {
    ag_op_def def;          /* what the registry and the engine see */
    ag_op_def backward_def; /* runs the backward kernel (kernel cache of its own) */
    ag_plugin_op decl;      /* the declaration, copied */
    /* Source kernels compiled by each backend (build_source handles), per direction. */
    void *compiled_forward[AG_MAX_BACKENDS];
    void *compiled_backward[AG_MAX_BACKENDS];
} plugin_def;

static plugin_def *plugin_of(const ag_op_def *def) {
    return (plugin_def *)((char *)def - offsetof(plugin_def, def));
}

/* ---- validation ---- */

/* "ns::name" with both parts [a-z0-9_]+. */
static bool valid_name(const char *name) {
    const char *sep = name ? strstr(name, "::") : NULL;
    if (!sep || sep == name || !sep[2] || strlen(name) > 120) return false;
    for (const char *c = name; *c; c++) {
        if (c == sep) {
            c++;
            continue;
        }
        if (!(islower((unsigned char)*c) || isdigit((unsigned char)*c) || *c == '_')) return false;
    }
    return true;
}

static bool valid_sources(const ag_plugin_kernel_source *s, int n) {
    if (n < 0 || (n > 0 && !s)) return false;
    for (int i = 0; i < n; i++)
        if (!s[i].language || !s[i].source || !s[i].entry ||
            (strcmp(s[i].language, "opencl") != 0 && strcmp(s[i].language, "cuda") != 0))
            return false;
    return true;
}

/* Why decl is not a valid op, or NULL. */
static const char *schema_problem(const ag_plugin_op *d) {
    const uint32_t dtypes = AG_DTYPE_BIT(AG_F32) | AG_DTYPE_BIT(AG_F64) | AG_DTYPE_BIT(AG_I64);
    if (!valid_name(d->name)) return "the name must be \"namespace::name\" of [a-z0-9_]";
    if (d->n_inputs < 1 || d->n_inputs > AG_PLUGIN_MAX_IO) return "n_inputs must be 1..8";
    if (d->n_outputs < 1 || d->n_outputs > AG_PLUGIN_MAX_IO) return "n_outputs must be 1..8";
    for (int i = 0; i < d->n_inputs; i++)
        if (!d->input_dtypes[i] || (d->input_dtypes[i] & ~dtypes))
            return "input_dtypes must allow at least one of float32, float64, int64";
    uint32_t in_mask = (1u << d->n_inputs) - 1, out_mask = (1u << d->n_outputs) - 1;
    if ((d->nondiff_inputs | d->save_inputs | d->mutated_inputs) & ~in_mask)
        return "an input mask names an input the op does not have";
    if (d->save_outputs & ~out_mask) return "save_outputs names an output the op does not have";
    if (!d->shape) return "a shape rule is required";
    if (d->n_int_attrs < 0 || d->n_int_attrs > AG_PLUGIN_MAX_IO || d->n_real_attrs < 0 ||
        d->n_real_attrs > AG_PLUGIN_MAX_IO)
        return "n_int_attrs and n_real_attrs must be 0..8";
    int n_attrs = d->n_int_attrs + d->n_real_attrs;
    for (int i = 0; i < n_attrs; i++)
        if (!d->attr_names || !d->attr_names[i]) return "every attribute needs a name";
    if (!valid_sources(d->sources, d->n_sources) ||
        !valid_sources(d->backward_sources, d->n_backward_sources))
        return "a kernel source needs language \"opencl\" or \"cuda\", source and entry";
    if (!d->cpu_kernel && d->n_sources == 0) return "a forward kernel is required";
    bool once = d->flags & AG_PLUGIN_ONCE_DIFFERENTIABLE;
    bool kernel_backward = d->backward_cpu_kernel || d->n_backward_sources > 0;
    if (d->flags & ~(uint32_t)AG_PLUGIN_ONCE_DIFFERENTIABLE) return "unknown flags";
    if (d->backward && kernel_backward)
        return "give a composed backward or a backward kernel, not both";
    if (kernel_backward && !once) return "a backward kernel needs AG_PLUGIN_ONCE_DIFFERENTIABLE";
    if (once && !kernel_backward) return "AG_PLUGIN_ONCE_DIFFERENTIABLE needs a backward kernel";
    if (d->launch != AG_PLUGIN_LAUNCH_ELEMENTS && d->launch != AG_PLUGIN_LAUNCH_ROWS)
        return "launch must be AG_PLUGIN_LAUNCH_ELEMENTS or AG_PLUGIN_LAUNCH_ROWS";
    if (d->n_samples < 0 || (d->n_samples > 0 && !d->samples)) return "samples are inconsistent";
    for (int s = 0; s < d->n_samples; s++)
        if (d->samples[s].n_inputs != d->n_inputs) return "a sample has the wrong input count";
    return NULL;
}

/* ---- kernels ---- */

/* Which kernels one plugin kernel call may run: the def whose host kernel (and kernel
 * cache) serves host-memory backends, and the sources other backends compile. */
typedef struct plugin_kernels {
    ag_op_def *def;                         /* def or backward_def */
    const ag_plugin_kernel_source *sources; /* sources or backward_sources */
    int n_sources;                          /* entries in sources */
    void **compiled;                        /* compiled_forward or compiled_backward */
} plugin_kernels;

/* The source of k in the language backend be compiles, or NULL. */
static const ag_plugin_kernel_source *source_for(const plugin_kernels *k, const ag_backend *be) {
    const char *language = be->iface.source_language;
    if (be->host_memory || !language) return NULL;
    for (int i = 0; i < k->n_sources; i++)
        if (strcmp(k->sources[i].language, language) == 0) return &k->sources[i];
    return NULL;
}

/* Runs source kernel `src` of op `d` on dev under calling convention 1.1: float32 tensors,
 * each contiguous from element 0 (inputs that are not are copied first), then the sizes of
 * d->launch computed from (rows_ndim, rows_shape), the shape of the op's first input. */
static ag_status run_source(const ag_plugin_op *d, const plugin_kernels *k,
                            const ag_plugin_kernel_source *src, ag_device dev, int n_in,
                            ag_tensor *const *in, int n_out, ag_tensor *const *out, int rows_ndim,
                            const int64_t *rows_shape) {
    const ag_backend *be = ag__backend(dev.backend);
    for (int i = 0; i < n_in + n_out; i++) {
        const ag_tensor *t = i < n_in ? in[i] : out[i - n_in];
        if (t->dtype != AG_F32) {
            char desc[192];
            return ag__error(AG_ERR_UNSUPPORTED,
                             "%s: its %s kernel source takes float32 tensors only, but %s %d is %s",
                             d->name, src->language, i < n_in ? "input" : "output",
                             i < n_in ? i : i - n_in, ag__describe(t, desc, sizeof desc));
        }
    }
    void *kernel = __atomic_load_n(&k->compiled[dev.backend], __ATOMIC_ACQUIRE);
    if (!kernel) {
        ag_status st = be->iface.build_source(src->source, src->entry, &kernel);
        if (st != AG_OK)
            return ag__error(st, "%s: backend '%s' could not build kernel '%s': %s", d->name,
                             be->iface.name, src->entry, be->iface.last_error());
        __atomic_store_n(&k->compiled[dev.backend], kernel, __ATOMIC_RELEASE);
    }
    ag_kernel_tensor kt[3 * AG_PLUGIN_MAX_IO + AG_PLUGIN_MAX_IO];
    ag_tensor *copies[3 * AG_PLUGIN_MAX_IO] = {0};
    ag_status st = AG_OK;
    for (int i = 0; i < n_in && st == AG_OK; i++) {
        ag_tensor *t = in[i];
        if (!ag_is_contiguous(t) || t->offset != 0) {
            copies[i] = ag__tensor_alloc(t->dtype, t->ndim, t->shape, dev);
            st = copies[i] ? ag__copy_into(copies[i], t) : ag_last_status();
            t = copies[i];
        }
        if (st == AG_OK) ag__kt(t, &kt[i]);
    }
    for (int j = 0; j < n_out; j++) ag__kt(out[j], &kt[n_in + j]);
    int64_t sizes[2];
    int n_sizes;
    if (d->launch == AG_PLUGIN_LAUNCH_ROWS) {
        sizes[1] = rows_ndim ? rows_shape[rows_ndim - 1] : 1;
        sizes[0] = 1;
        for (int dim = 0; dim + 1 < rows_ndim; dim++) sizes[0] *= rows_shape[dim];
        n_sizes = 2;
    } else {
        sizes[0] = ag_numel(out[0]);
        n_sizes = 1;
    }
    if (st == AG_OK && sizes[0] > 0 && (n_sizes == 1 || sizes[1] > 0)) {
        static const ag_attrs no_attrs;
        const ag_kernel_args args = {sizeof args, dev.index, n_in, n_out, kt, kt + n_in, &no_attrs};
        st = be->iface.launch_source(kernel, &args, n_sizes, sizes, sizes[0]);
        if (st != AG_OK)
            st = ag__error(st, "%s: kernel '%s' on backend '%s': %s", d->name, src->entry,
                           be->iface.name, be->iface.last_error());
    }
    for (int i = 0; i < n_in; i++) ag_release(copies[i]);
    return st;
}

/* Runs one of the op's kernels on dev: the compiled source where the backend compiles one
 * of the op's languages, else the kernel the dispatcher finds (the cpu kernel on
 * host-memory backends). */
static ag_status run_plugin_kernel(const ag_plugin_op *d, const plugin_kernels *k, ag_device dev,
                                   ag_dtype key, int n_in, ag_tensor *const *in, int n_out,
                                   ag_tensor *const *out, const ag_attrs *attrs, int rows_ndim,
                                   const int64_t *rows_shape) {
    const ag_plugin_kernel_source *src = source_for(k, ag__backend(dev.backend));
    if (src) return run_source(d, k, src, dev, n_in, in, n_out, out, rows_ndim, rows_shape);
    ag_kernel_tensor kin[3 * AG_PLUGIN_MAX_IO], kout[AG_PLUGIN_MAX_IO];
    for (int i = 0; i < n_in; i++) ag__kt(in[i], &kin[i]);
    for (int j = 0; j < n_out; j++) ag__kt(out[j], &kout[j]);
    return ag__run_kernel(k->def, dev, key, n_in, kin, n_out, kout, attrs);
}

/* ---- forward ---- */

static void meta_of(const ag_tensor *t, ag_tensor_meta *m) {
    m->dtype = t->dtype;
    m->ndim = t->ndim;
    memcpy(m->shape, t->shape, sizeof m->shape);
}

static ag_status check_inputs(const ag_plugin_op *d, int n, ag_tensor *const *in) {
    if (n != d->n_inputs)
        return ag__error(AG_ERR_INVALID_ARG, "%s: takes %d inputs, got %d", d->name, d->n_inputs,
                         n);
    for (int i = 0; i < n; i++)
        if (!(d->input_dtypes[i] & AG_DTYPE_BIT(in[i]->dtype))) {
            char desc[192];
            return ag__error(AG_ERR_DTYPE, "%s: input %d is %s; the op accepts%s%s%s", d->name, i,
                             ag__describe(in[i], desc, sizeof desc),
                             d->input_dtypes[i] & AG_DTYPE_BIT(AG_F32) ? " float32" : "",
                             d->input_dtypes[i] & AG_DTYPE_BIT(AG_F64) ? " float64" : "",
                             d->input_dtypes[i] & AG_DTYPE_BIT(AG_I64) ? " int64" : "");
        }
    return AG_OK;
}

static ag_status plugin_forward(ag_op_ctx *ctx) {
    const ag_plugin_op *d = &plugin_of(ctx->op)->decl;
    ag_status st = check_inputs(d, ctx->n_inputs, ctx->inputs);
    if (st != AG_OK) return st;
    if (ctx->n_outputs != d->n_outputs)
        return ag__error(AG_ERR_INVALID_ARG, "%s: has %d outputs, %d asked for", d->name,
                         d->n_outputs, ctx->n_outputs);
    ag_tensor_meta in_meta[AG_PLUGIN_MAX_IO], out_meta[AG_PLUGIN_MAX_IO];
    memset(out_meta, 0, sizeof out_meta);
    for (int i = 0; i < d->n_inputs; i++) meta_of(ctx->inputs[i], &in_meta[i]);
    uint64_t errors = ag__errors_set();
    st = d->shape(d->n_inputs, in_meta, ctx->attrs, d->n_outputs, out_meta);
    if (st != AG_OK)
        return ag__errors_set() != errors
                   ? st
                   : ag__error(st, "%s: the shape rule failed without a message", d->name);
    ag_device dev = ctx->inputs[0]->storage->device;
    for (int j = 0; j < d->n_outputs && st == AG_OK; j++) {
        const ag_tensor_meta *m = &out_meta[j];
        ctx->outputs[j] = ag__tensor_alloc(m->dtype, m->ndim, m->shape, dev);
        if (!ctx->outputs[j])
            st = ag__error(ag_last_status(), "%s: output %d: %s", d->name, j, ag_last_error());
    }
    plugin_def *p = plugin_of(ctx->op);
    const plugin_kernels k = {&p->def, d->sources, d->n_sources, p->compiled_forward};
    if (st == AG_OK)
        st = run_plugin_kernel(d, &k, dev, ctx->inputs[0]->dtype, d->n_inputs, ctx->inputs,
                               d->n_outputs, ctx->outputs, ctx->attrs, in_meta[0].ndim,
                               in_meta[0].shape);
    for (int i = 0; i < d->n_inputs && st == AG_OK; i++)
        if (d->mutated_inputs >> i & 1) ag__bump_version(ctx->inputs[i]);
    if (st != AG_OK)
        for (int j = 0; j < d->n_outputs; j++) {
            ag_release(ctx->outputs[j]);
            ctx->outputs[j] = NULL;
        }
    return st;
}

/* ---- backward ---- */

static ag_status composed_backward(ag_backward_ctx *ctx) {
    const plugin_def *p = plugin_of(ctx->node->op);
    int n_in = p->decl.n_inputs, n_out = p->decl.n_outputs;
    ag_tensor *saved_in[AG_PLUGIN_MAX_IO], *saved_out[AG_PLUGIN_MAX_IO];
    bool needs[AG_PLUGIN_MAX_IO];
    for (int i = 0; i < n_in; i++) {
        saved_in[i] = ag__saved(ctx, i);
        needs[i] = ag__needs_grad(ctx, i);
    }
    for (int j = 0; j < n_out; j++) saved_out[j] = ag__saved_output(ctx, j);
    ag_plugin_backward_ctx pctx = {
        sizeof pctx, ag__bw_attrs(ctx), n_in,        n_out, saved_in, saved_out, ctx->grad_outputs,
        needs,       ctx->grad_inputs,  p->decl.user};
    uint64_t errors = ag__errors_set();
    ag_status st = p->decl.backward(&pctx);
    if (st == AG_OK || ag__errors_set() != errors) return st;
    return ag__error(st, "%s: backward failed without a message", p->decl.name);
}

static ag_status kernel_backward(ag_backward_ctx *ctx) {
    plugin_def *p = plugin_of(ctx->node->op);
    const ag_plugin_op *d = &p->decl;
    ag_tensor *kin[3 * AG_PLUGIN_MAX_IO], *kout[AG_PLUGIN_MAX_IO];
    int n_kin = 0, n_kout = 0;
    for (int j = 0; j < d->n_outputs; j++) kin[n_kin++] = ctx->grad_outputs[j];
    for (int i = 0; i < d->n_inputs; i++)
        if (d->save_inputs >> i & 1) kin[n_kin++] = ag__saved(ctx, i);
    for (int j = 0; j < d->n_outputs; j++)
        if (d->save_outputs >> j & 1) kin[n_kin++] = ag__saved_output(ctx, j);
    ag_tensor *grads[AG_PLUGIN_MAX_IO] = {0};
    ag_device dev = ctx->grad_outputs[0]->storage->device;
    ag_status st = AG_OK;
    for (int i = 0; i < d->n_inputs && st == AG_OK; i++) {
        if (d->nondiff_inputs >> i & 1) continue;
        const ag_meta *m = ag__bw_in_meta(ctx, i);
        /* Scope-owned, like any op result the engine collects. */
        grads[i] = ag__scope_adopt(ag__tensor_alloc(m->dtype, m->ndim, m->shape, dev));
        if (!grads[i])
            st = ag_last_status();
        else
            kout[n_kout++] = grads[i];
    }
    const plugin_kernels k = {&p->backward_def, d->backward_sources, d->n_backward_sources,
                              p->compiled_backward};
    const ag_meta *rows = ag__bw_in_meta(ctx, 0);
    if (st == AG_OK)
        st = run_plugin_kernel(d, &k, dev, ctx->grad_outputs[0]->dtype, n_kin, kin, n_kout, kout,
                               ag__bw_attrs(ctx), rows->ndim, rows->shape);
    for (int i = 0; i < d->n_inputs && st == AG_OK; i++)
        if (ag__needs_grad(ctx, i)) ctx->grad_inputs[i] = grads[i];
    return st;
}

/* ---- definitions ---- */

ag_status ag__plugin_op_def_new(const ag_plugin_op *decl, size_t decl_size, ag_op_def **out) {
    *out = NULL;
    plugin_def *p = ag__calloc(1, sizeof *p);
    if (!p) return ag__error(AG_ERR_OUT_OF_MEMORY, "plugin op: out of host memory");
    /* A plugin built against an older minor has a shorter struct: the rest stays zero. */
    memcpy(&p->decl, decl, decl_size < sizeof p->decl ? decl_size : sizeof p->decl);
    p->decl.struct_size = sizeof p->decl;
    const char *problem = schema_problem(&p->decl);
    if (problem) {
        ag_status st = ag__error(AG_ERR_INVALID_ARG, "invalid op '%s': %s",
                                 p->decl.name ? p->decl.name : "(unnamed)", problem);
        free(p);
        return st;
    }
    const ag_plugin_op *d = &p->decl;
    bool differentiable = d->backward || (d->flags & AG_PLUGIN_ONCE_DIFFERENTIABLE);
    p->def = (ag_op_def){
        .name = d->name,
        .n_inputs = d->n_inputs,
        .n_outputs = d->n_outputs,
        .flags = differentiable ? 0 : AG_OPF_NONDIFF,
        .save_inputs = d->save_inputs,
        .nondiff_inputs = d->nondiff_inputs,
        .forward = plugin_forward,
        .backward = !differentiable ? NULL
                    : d->backward   ? composed_backward
                                    : kernel_backward,
        .save_outputs = d->save_outputs,
        .mutated_inputs = d->mutated_inputs,
        .once_differentiable = d->flags & AG_PLUGIN_ONCE_DIFFERENTIABLE,
        .host_kernel = d->cpu_kernel,
        .plugin = d,
    };
    p->backward_def = (ag_op_def){.name = d->name, .host_kernel = d->backward_cpu_kernel};
    *out = &p->def;
    return AG_OK;
}

void ag__plugin_op_def_free(ag_op_def *def) {
    if (def) free(plugin_of(def));
}

/* ---- finding and calling ops ---- */

const ag_op *ag_op_find(const char *name) {
    /* AG_PLUGINS are loaded by ag_init: a program's first call may be this one. */
    if (ag_init() != AG_OK) return NULL;
    ag_op_def *op = name ? ag__op_find(name) : NULL;
    if (!op)
        ag__error(AG_ERR_INVALID_ARG, "no op named '%s' is registered", name ? name : "(null)");
    return (const ag_op *)op;
}

const ag_plugin_op *ag_op_plugin_decl(const ag_op *op) {
    return op ? ((const ag_op_def *)op)->plugin : NULL;
}

ag_status ag_op_call(const ag_op *op, int n_inputs, ag_tensor *const *inputs, const ag_attrs *attrs,
                     int n_outputs, ag_tensor **outputs) {
    const ag_op_def *def = (const ag_op_def *)op;
    if (!def || !outputs || (n_inputs > 0 && !inputs))
        return ag__error_if_none(AG_ERR_INVALID_ARG, "ag_op_call: NULL argument");
    if ((def->n_inputs >= 0 && n_inputs != def->n_inputs) || n_outputs != def->n_outputs)
        return ag__error(AG_ERR_INVALID_ARG, "%s: takes %d inputs and %d outputs, got %d and %d",
                         def->name, def->n_inputs, def->n_outputs, n_inputs, n_outputs);
    return ag__dispatch((ag_op_def *)def, n_inputs, inputs, attrs, n_outputs, outputs);
}

ag_tensor *ag_op_call1(const ag_op *op, int n_inputs, ag_tensor *const *inputs,
                       const ag_attrs *attrs) {
    ag_tensor *out = NULL;
    return ag_op_call(op, n_inputs, inputs, attrs, 1, &out) == AG_OK ? out : NULL;
}
