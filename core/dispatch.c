/* The op registry and the dispatcher: every op call, built-in or plugin, goes through
 * ag__dispatch, which checks inputs, runs the forward, records the graph and hands the
 * outputs to the current scope. Kernels are resolved once per (op, backend, dtype). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* ---- registry ---- */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static ag_op_def **registry;
static int registry_count, registry_capacity;

ag_status ag__op_register(ag_op_def *op) {
    if (!op || !op->name || !op->forward || op->n_outputs < 1 || op->n_inputs < -1)
        return ag__error(AG_ERR_INVALID_ARG, "op registration: incomplete op definition '%s'",
                         op && op->name ? op->name : "(null)");
    pthread_mutex_lock(&registry_lock);
    bool known = false;
    for (int i = 0; i < registry_count && !known; i++) known = registry[i] == op;
    pthread_mutex_unlock(&registry_lock);
    return known ? AG_OK : ag__op_register_many(&op, 1);
}

ag_status ag__op_register_many(ag_op_def *const *ops, int n) {
    pthread_mutex_lock(&registry_lock);
    ag_status st = AG_OK;
    for (int k = 0; k < n && st == AG_OK; k++) {
        for (int i = 0; i < registry_count && st == AG_OK; i++)
            if (strcmp(registry[i]->name, ops[k]->name) == 0)
                st = ag__error(AG_ERR_INVALID_ARG,
                               "op registration: an op named '%s' exists already", ops[k]->name);
        for (int j = 0; j < k && st == AG_OK; j++)
            if (strcmp(ops[j]->name, ops[k]->name) == 0)
                st = ag__error(AG_ERR_INVALID_ARG, "op registration: '%s' is registered twice",
                               ops[k]->name);
    }
    if (st == AG_OK && registry_count + n > registry_capacity) {
        int cap = registry_capacity ? registry_capacity : 128;
        while (cap < registry_count + n) cap *= 2;
        ag_op_def **grown = ag__realloc(registry, (size_t)cap * sizeof *grown);
        if (grown) {
            registry = grown;
            registry_capacity = cap;
        } else {
            st = ag__error(AG_ERR_OUT_OF_MEMORY, "op registration: out of host memory");
        }
    }
    for (int k = 0; k < n && st == AG_OK; k++) {
        ops[k]->id = registry_count;
        registry[registry_count++] = ops[k];
    }
    pthread_mutex_unlock(&registry_lock);
    return st;
}

void ag__op_unregister_many(ag_op_def *const *ops, int n) {
    pthread_mutex_lock(&registry_lock);
    int kept = 0;
    for (int i = 0; i < registry_count; i++) {
        bool gone = false;
        for (int k = 0; k < n && !gone; k++) gone = registry[i] == ops[k];
        if (gone) continue;
        registry[kept] = registry[i];
        registry[kept]->id = kept;
        kept++;
    }
    registry_count = kept;
    pthread_mutex_unlock(&registry_lock);
}

ag_op_def *ag__op_find(const char *name) {
    ag_op_def *found = NULL;
    pthread_mutex_lock(&registry_lock);
    for (int i = 0; i < registry_count && !found; i++)
        if (strcmp(registry[i]->name, name) == 0) found = registry[i];
    pthread_mutex_unlock(&registry_lock);
    return found;
}

int ag__op_count(void) {
    pthread_mutex_lock(&registry_lock);
    int n = registry_count;
    pthread_mutex_unlock(&registry_lock);
    return n;
}

ag_op_def *ag__op_at(int i) {
    pthread_mutex_lock(&registry_lock);
    ag_op_def *op = i >= 0 && i < registry_count ? registry[i] : NULL;
    pthread_mutex_unlock(&registry_lock);
    return op;
}

void ag__registry_shutdown(void) {
    free(registry);
    registry = NULL;
    registry_count = registry_capacity = 0;
}

/* ---- kernels ---- */

void ag__kt(const ag_tensor *t, ag_kernel_tensor *kt) {
    kt->data = t->storage->data;
    kt->offset = t->offset;
    kt->dtype = t->dtype;
    kt->ndim = t->ndim;
    memcpy(kt->shape, t->shape, sizeof kt->shape);
    memcpy(kt->strides, t->strides, sizeof kt->strides);
}

void ag__kt_broadcast(const ag_tensor *t, int ndim, const int64_t *shape, ag_kernel_tensor *kt) {
    kt->data = t->storage->data;
    kt->offset = t->offset;
    kt->dtype = t->dtype;
    kt->ndim = ndim;
    int lead = ndim - t->ndim;
    for (int d = 0; d < ndim; d++) {
        kt->shape[d] = shape[d];
        int src = d - lead;
        kt->strides[d] = src >= 0 && t->shape[src] == shape[d] ? t->strides[src] : 0;
    }
}

/* ---- float16 and bfloat16 through float32 kernels ---- */

/* The conversion kernel every backend has for every dtype (kernel lookups only). */
static ag_op_def convert_op = {.name = "copy", .kernel = "copy"};

/* A float32 stand-in for a 16-bit kernel tensor: a buffer of its own, contiguous over the
 * tensor's shape except that broadcast (stride 0) dims keep extent 1 in the buffer, so a
 * broadcast bias is not widened to the whole output. */
typedef struct widened {
    ag_kernel_tensor view; /* what the float32 kernel sees: the original shape */
    ag_kernel_tensor buf;  /* the buffer as a tensor: extent 1 in broadcast dims */
    size_t bytes;          /* its size */
} widened;

static ag_status widen(const ag_backend *be, ag_device device, const ag_kernel_tensor *t,
                       widened *w) {
    w->buf = (ag_kernel_tensor){.offset = 0, .dtype = AG_F32, .ndim = t->ndim};
    int64_t numel = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        w->buf.shape[d] = t->strides[d] == 0 ? 1 : t->shape[d];
        w->buf.strides[d] = numel;
        numel *= w->buf.shape[d];
    }
    w->bytes = (size_t)numel * sizeof(float);
    w->buf.data = NULL;
    ag_status st = be->iface.alloc(device.index, w->bytes ? w->bytes : 1, &w->buf.data);
    if (st != AG_OK)
        return ag__error(st, "float32 stand-in of a %s kernel tensor: %s", ag_dtype_name(t->dtype),
                         be->iface.last_error());
    w->view = w->buf;
    for (int d = 0; d < t->ndim; d++) {
        w->view.shape[d] = t->shape[d];
        if (t->strides[d] == 0) w->view.strides[d] = 0;
    }
    return AG_OK;
}

/* The source of a widening copy: t restricted to extent 1 in its broadcast dims. */
static ag_kernel_tensor compact_source(const ag_kernel_tensor *t) {
    ag_kernel_tensor src = *t;
    for (int d = 0; d < t->ndim; d++)
        if (t->strides[d] == 0) src.shape[d] = 1;
    return src;
}

/* Whether two kernel tensors are the same view of the same memory. */
static bool same_view(const ag_kernel_tensor *a, const ag_kernel_tensor *b) {
    return a->data == b->data && a->offset == b->offset && a->ndim == b->ndim &&
           memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof *a->shape) == 0 &&
           memcmp(a->strides, b->strides, (size_t)a->ndim * sizeof *a->strides) == 0;
}

/* Runs op's float32 kernel for a 16-bit key the backend has no kernel for: 16-bit inputs
 * are converted into float32 buffers, the kernel writes float32 buffers, which are rounded
 * into the 16-bit outputs. The arithmetic is float32's, as PyTorch computes half ops. An
 * output that is the same view as an input (in-place updates) shares its float32 buffer;
 * one that merely overlaps an input starts from its current values. */
static ag_status run_in_float32(ag_op_def *op, ag_device device, ag_dtype key, int n_in,
                                const ag_kernel_tensor *in, int n_out, const ag_kernel_tensor *out,
                                const ag_attrs *attrs) {
    enum { MAX_IO = 16 };
    if (n_in > MAX_IO || n_out > MAX_IO)
        return ag__error(AG_ERR_UNSUPPORTED, "%s: %s through float32 takes at most %d tensors",
                         op->name, ag_dtype_name(key), MAX_IO);
    const ag_backend *be = ag__backend(device.backend);
    ag_kernel_tensor win[MAX_IO], wout[MAX_IO];
    widened w_in[MAX_IO], w_out[MAX_IO];
    memset(w_in, 0, sizeof w_in);
    memset(w_out, 0, sizeof w_out);
    ag_status st = AG_OK;
    for (int i = 0; i < n_in && st == AG_OK; i++) {
        win[i] = in[i];
        if (!ag__is_low_precision(in[i].dtype)) continue;
        st = widen(be, device, &in[i], &w_in[i]);
        ag_kernel_tensor src = compact_source(&in[i]);
        if (st == AG_OK)
            st = ag__run_kernel(&convert_op, device, AG_F32, 1, &src, 1, &w_in[i].buf, NULL);
        win[i] = w_in[i].view;
    }
    int same_as_input[MAX_IO]; /* in-place kernels (optimizer updates): output j is input i */
    for (int j = 0; j < n_out; j++) same_as_input[j] = -1;
    for (int j = 0; j < n_out && st == AG_OK; j++) {
        wout[j] = out[j];
        if (!ag__is_low_precision(out[j].dtype)) continue;
        for (int i = 0; i < n_in && same_as_input[j] < 0; i++)
            if (w_in[i].buf.data && same_view(&in[i], &out[j])) same_as_input[j] = i;
        if (same_as_input[j] >= 0) {
            wout[j] = win[same_as_input[j]];
            continue;
        }
        st = widen(be, device, &out[j], &w_out[j]);
        bool overlaps = false;
        for (int i = 0; i < n_in; i++) overlaps |= in[i].data == out[j].data;
        ag_kernel_tensor current = compact_source(&out[j]);
        if (st == AG_OK && overlaps)
            st = ag__run_kernel(&convert_op, device, AG_F32, 1, &current, 1, &w_out[j].buf, NULL);
        wout[j] = w_out[j].view;
    }
    if (st == AG_OK) st = ag__run_kernel(op, device, AG_F32, n_in, win, n_out, wout, attrs);
    for (int j = 0; j < n_out && st == AG_OK; j++) {
        const widened *w = same_as_input[j] >= 0 ? &w_in[same_as_input[j]] : &w_out[j];
        /* From the view, which has out's shape: buf is compacted to extent 1 where out has
         * stride 0 (a zero-size tensor has it before its last 0 extent: [0, 3, 4, 0] has
         * strides [0, 0, 0, 1]), and the copy refuses a shape that differs from out's. */
        if (w->buf.data)
            st = ag__run_kernel(&convert_op, device, out[j].dtype, 1, &w->view, 1, &out[j], NULL);
    }
    for (int i = 0; i < n_in; i++)
        if (w_in[i].buf.data) be->iface.free(device.index, w_in[i].buf.data, w_in[i].bytes);
    for (int j = 0; j < n_out; j++)
        if (w_out[j].buf.data) be->iface.free(device.index, w_out[j].buf.data, w_out[j].bytes);
    return st;
}

ag_status ag__run_kernel(ag_op_def *op, ag_device device, ag_dtype key, int n_in,
                         const ag_kernel_tensor *in, int n_out, const ag_kernel_tensor *out,
                         const ag_attrs *attrs) {
    const ag_backend *be = ag__backend(device.backend);
    const uint32_t key_bit = 1u << key;
    if (ag__is_low_precision(key) &&
        __atomic_load_n(&op->via_float32[device.backend], __ATOMIC_ACQUIRE) & key_bit)
        return run_in_float32(op, device, key, n_in, in, n_out, out, attrs);
    ag_kernel_fn fn = __atomic_load_n(&op->kernel_cache[device.backend][key], __ATOMIC_ACQUIRE);
    if (!fn && op->host_kernel) {
        /* A plugin's cpu kernel runs on any backend whose buffers are host memory. */
        if (!be->host_memory)
            return ag__error(AG_ERR_UNSUPPORTED,
                             "%s: no kernel for backend '%s': the op has a cpu kernel only, and "
                             "this backend's memory is not host memory",
                             op->name, be->iface.name);
        fn = op->host_kernel;
        __atomic_store_n(&op->kernel_cache[device.backend][key], fn, __ATOMIC_RELEASE);
    }
    if (!fn) {
        ag_status st = be->iface.get_kernel(op->kernel, key, &fn);
        /* No 16-bit kernel: compute in float32 (the copy kernel itself must exist). */
        if ((st != AG_OK || !fn) && ag__is_low_precision(key) && op->kernel &&
            strcmp(op->kernel, "copy") != 0) {
            __atomic_fetch_or(&op->via_float32[device.backend], key_bit, __ATOMIC_RELEASE);
            return run_in_float32(op, device, key, n_in, in, n_out, out, attrs);
        }
        if (st != AG_OK || !fn)
            return ag__error(st == AG_OK ? AG_ERR_UNSUPPORTED : st,
                             "%s: backend '%s' has no kernel '%s' for %s: %s", op->name,
                             be->iface.name, op->kernel, ag_dtype_name(key),
                             be->iface.last_error());
        __atomic_store_n(&op->kernel_cache[device.backend][key], fn, __ATOMIC_RELEASE);
    }
    static const ag_attrs no_attrs;
    ag_kernel_args args = {
        sizeof args, device.index, n_in, n_out, in, out, attrs ? attrs : &no_attrs};
    uint64_t errors = ag__errors_set();
    ag_status st = fn(&args);
    if (st != AG_OK) {
        /* A plugin's kernel reports through host->error, i.e. ag's own error state. */
        bool host = fn == op->host_kernel;
        if (host && ag__errors_set() != errors) return st;
        /* Kernels usually name themselves already ("index_select: index 7 ..."). */
        const char *msg = host ? "the kernel failed without a message" : be->iface.last_error();
        size_t len = strlen(op->name);
        bool named = strncmp(msg, op->name, len) == 0 && msg[len] == ':';
        return named ? ag__error(st, "%s", msg) : ag__error(st, "%s: %s", op->name, msg);
    }
    return AG_OK;
}

ag_status ag__forward_kernel(ag_op_ctx *ctx, ag_dtype key, const ag_kernel_tensor *kin,
                             ag_tensor *out, const ag_kernel_tensor *kout, const ag_attrs *attrs) {
    if (!out) return ag_last_status();
    ag_kernel_tensor own;
    if (!kout) {
        ag__kt(out, &own);
        kout = &own;
    }
    ag_status st = ag__run_kernel((ag_op_def *)ctx->op, out->storage->device, key, ctx->n_inputs,
                                  kin, 1, kout, attrs);
    if (st != AG_OK) {
        ag_release(out);
        return st;
    }
    ctx->outputs[0] = out;
    return AG_OK;
}

/* ---- shape rules shared by many ops ---- */

ag_status ag__broadcast_shape(const char *op, int n, ag_tensor *const *tensors, int *ndim,
                              int64_t *shape) {
    int nd = 0;
    for (int i = 0; i < n; i++)
        if (tensors[i]->ndim > nd) nd = tensors[i]->ndim;
    for (int d = 0; d < nd; d++) shape[d] = 1;
    for (int i = 0; i < n; i++) {
        const ag_tensor *t = tensors[i];
        int lead = nd - t->ndim;
        for (int d = 0; d < t->ndim; d++) {
            int64_t e = t->shape[d], *s = &shape[lead + d];
            if (e == *s || e == 1) continue;
            if (*s == 1) {
                *s = e;
                continue;
            }
            char a[160], b[160];
            return ag__error(AG_ERR_SHAPE,
                             "%s: the size of tensor a (%lld) must match the size of tensor b "
                             "(%lld) at non-singleton dimension %d (shapes %s and %s)",
                             op, (long long)*s, (long long)e, lead + d,
                             ag__shape_fmt(a, sizeof a, tensors[0]->ndim, tensors[0]->shape),
                             ag__shape_fmt(b, sizeof b, t->ndim, t->shape));
        }
    }
    *ndim = nd;
    return AG_OK;
}

ag_status ag__forward_elementwise(ag_op_ctx *ctx) {
    ag_tensor *const *in = ctx->inputs;
    for (int i = 1; i < ctx->n_inputs; i++)
        if (in[i]->dtype != in[0]->dtype) {
            char a[192], b[192];
            return ag__error(AG_ERR_DTYPE, "%s: expected inputs of one dtype, got %s and %s",
                             ctx->op->name, ag__describe(in[0], a, sizeof a),
                             ag__describe(in[i], b, sizeof b));
        }
    int ndim;
    int64_t shape[AG_MAX_DIMS];
    ag_status st = ag__broadcast_shape(ctx->op->name, ctx->n_inputs, in, &ndim, shape);
    if (st != AG_OK) return st;
    ag_tensor *out = ag__tensor_alloc(in[0]->dtype, ndim, shape, in[0]->storage->device);
    ag_kernel_tensor kin[4];
    for (int i = 0; i < ctx->n_inputs; i++) ag__kt_broadcast(in[i], ndim, shape, &kin[i]);
    return ag__forward_kernel(ctx, in[0]->dtype, kin, out, NULL, ctx->attrs);
}

ag_status ag__forward_reduce(ag_op_ctx *ctx) {
    ag_tensor *in = ctx->inputs[0];
    uint64_t mask = (uint64_t)ctx->attrs->ints[0];
    bool keepdim = ctx->attrs->ints[1] != 0;
    int64_t shape[AG_MAX_DIMS];
    for (int d = 0; d < in->ndim; d++) shape[d] = mask >> d & 1 ? 1 : in->shape[d];
    ag_kernel_tensor kin;
    ag__kt(in, &kin);
    ag_status st = ag__forward_kernel(
        ctx, in->dtype, &kin, ag__tensor_alloc(in->dtype, in->ndim, shape, in->storage->device),
        NULL, ctx->attrs);
    if (st != AG_OK) return st;
    ag_tensor *out = ctx->outputs[0];
    if (!keepdim) {
        /* Dropping extent-1 dims of a fresh contiguous tensor keeps it contiguous. */
        int nd = 0;
        for (int d = 0; d < in->ndim; d++)
            if (!(mask >> d & 1)) out->shape[nd++] = in->shape[d];
        out->ndim = nd;
        ag__contiguous_strides(nd, out->shape, out->strides);
    }
    return AG_OK;
}

/* ---- dispatch ---- */

/* AG_CPU_FALLBACK=1 lets ops that a device has no kernel for run on the cpu backend, with
 * copies there and back; without it such an op is an error naming the op and backend. */
static bool cpu_fallback_enabled(void) {
    static int enabled = -1; /* atomic: any thread may be the first to ask */
    int on = __atomic_load_n(&enabled, __ATOMIC_RELAXED);
    if (on < 0) {
        const char *env = getenv("AG_CPU_FALLBACK");
        on = env && strcmp(env, "1") == 0;
        __atomic_store_n(&enabled, on, __ATOMIC_RELAXED);
    }
    return on;
}

/* Runs op on cpu copies of the inputs and copies the outputs back (recorded in the graph
 * through the copies, so gradients flow). Outputs are new unregistered references. */
static ag_status run_on_cpu(ag_op_def *op, int n_inputs, ag_tensor *const *inputs,
                            const ag_attrs *attrs, int n_outputs, ag_tensor **outputs) {
    enum { MAX_IO = 16 };
    ag_device cpu, dev = inputs[0]->storage->device;
    if (n_inputs > MAX_IO || n_outputs > MAX_IO || ag_device_parse("cpu", &cpu) != AG_OK ||
        ag__same_device(cpu, dev))
        return AG_ERR_UNSUPPORTED;
    ag__log_debug("%s: no kernel on %s, running it on cpu (AG_CPU_FALLBACK=1)", op->name,
                  ag__backend(dev.backend)->iface.name);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *moved[MAX_IO], *cpu_out[MAX_IO];
    for (int i = 0; i < n_inputs; i++) moved[i] = ag_to_device(inputs[i], cpu);
    ag_status st = ag__dispatch(op, n_inputs, moved, attrs, n_outputs, cpu_out);
    for (int j = 0; j < n_outputs; j++) {
        outputs[j] = st == AG_OK ? ag_retain(ag_to_device(cpu_out[j], dev)) : NULL;
        if (st == AG_OK && !outputs[j]) st = ag_last_status();
    }
    ag_scope_end(scope);
    return st;
}

ag_status ag__dispatch(ag_op_def *op, int n_inputs, ag_tensor *const *inputs, const ag_attrs *attrs,
                       int n_outputs, ag_tensor **outputs) {
    static const ag_attrs no_attrs;
    for (int j = 0; j < n_outputs; j++) outputs[j] = NULL;
    for (int i = 0; i < n_inputs; i++)
        if (!inputs[i])
            return ag__error_if_none(AG_ERR_INVALID_ARG, "%s: input %d is NULL", op->name, i);
    for (int i = 1; i < n_inputs; i++)
        if (!ag__same_device(inputs[i]->storage->device, inputs[0]->storage->device)) {
            char a[192], b[192];
            return ag__error(AG_ERR_DEVICE,
                             "%s: expected all tensors to be on the same device, but input 0 is "
                             "%s and input %d is %s",
                             op->name, ag__describe(inputs[0], a, sizeof a), i,
                             ag__describe(inputs[i], b, sizeof b));
        }
    if (ag__autocast_state.enabled && op->flags & (AG_OPF_AUTOCAST_LOW | AG_OPF_AUTOCAST_F32) &&
        ag__autocast_wanted(op, n_inputs, inputs))
        return ag__autocast_dispatch(op, n_inputs, inputs, attrs, n_outputs, outputs);
    uint64_t traced = ag__trace_begin();
    ag_op_ctx ctx = {op, n_inputs, inputs, attrs ? attrs : &no_attrs, n_outputs, outputs};
    ag_status st = op->forward(&ctx);
    bool recorded = false; /* by the fallback, through its copies */
    if (st == AG_ERR_UNSUPPORTED && n_inputs > 0 && cpu_fallback_enabled()) {
        ag_status fallback = run_on_cpu(op, n_inputs, inputs, ctx.attrs, n_outputs, outputs);
        if (fallback != AG_ERR_UNSUPPORTED) {
            st = fallback;
            recorded = true;
        }
    }
    if (st == AG_OK && !recorded && ag_is_grad_enabled() && op->backward &&
        !(op->flags & AG_OPF_NONDIFF)) {
        bool any = false;
        for (int i = 0; i < n_inputs && !any; i++)
            any = inputs[i]->requires_grad && !ag__input_bit(op->nondiff_inputs, i);
        if (any) st = ag__graph_record(op, n_inputs, inputs, ctx.attrs, n_outputs, outputs);
    }
    if (st == AG_OK && !recorded && ag__fwad_active())
        st = ag__fwad_propagate(op, n_inputs, inputs, ctx.attrs, n_outputs, outputs);
    if (traced) /* creation ops have no input: their output tells the device */
        ag__trace_end(traced, op->name, false,
                      n_inputs      ? inputs[0]->storage->device
                      : st == AG_OK ? outputs[0]->storage->device
                                    : ag_default_device(),
                      n_inputs, inputs);
    for (int j = 0; j < n_outputs; j++) {
        if (st != AG_OK) {
            ag_release(outputs[j]);
            outputs[j] = NULL;
        } else if (!ag__scope_adopt(outputs[j])) {
            st = ag_last_status();
        }
    }
    return st;
}

ag_tensor *ag__dispatch1(ag_op_def *op, int n_inputs, ag_tensor *const *inputs,
                         const ag_attrs *attrs) {
    ag_tensor *out;
    return ag__dispatch(op, n_inputs, inputs, attrs, 1, &out) == AG_OK ? out : NULL;
}
