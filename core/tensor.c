/* Tensors and storages: allocation, reference counting, views, inspection and host I/O. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define ATOMIC_INC(p) __atomic_add_fetch((p), 1, __ATOMIC_RELAXED)
#define ATOMIC_DEC(p) __atomic_sub_fetch((p), 1, __ATOMIC_ACQ_REL)

int64_t ag__contiguous_strides(int ndim, const int64_t *shape, int64_t *strides) {
    int64_t n = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        strides[d] = n;
        n *= shape[d];
    }
    return n;
}

bool ag__same_device(ag_device a, ag_device b) {
    return a.backend == b.backend && a.index == b.index;
}

/* ---- memory accounting: bytes of live storages per device (ag_memory_allocated) ---- */

/* Devices per backend that are counted; storages on higher indices are not. */
#define MEMORY_MAX_DEVICES 16

/* Per (backend, device) slot, see memory_slot. */
static uint64_t memory_now[AG_MAX_BACKENDS * MEMORY_MAX_DEVICES];  /* atomic: live bytes */
static uint64_t memory_peak[AG_MAX_BACKENDS * MEMORY_MAX_DEVICES]; /* atomic: high water */

/* The counters' slot of a device, or -1 when it is outside the table. */
static int memory_slot(ag_device device) {
    if (device.backend < 0 || device.backend >= AG_MAX_BACKENDS || device.index < 0 ||
        device.index >= MEMORY_MAX_DEVICES)
        return -1;
    return device.backend * MEMORY_MAX_DEVICES + device.index;
}

/* Counts nbytes more (or fewer, when freeing) on device and raises its peak. */
static void memory_count(ag_device device, size_t nbytes, bool allocated) {
    int slot = memory_slot(device);
    if (slot < 0 || !nbytes) return;
    uint64_t *now = &memory_now[slot], *peak = &memory_peak[slot];
    if (!allocated) {
        __atomic_sub_fetch(now, (uint64_t)nbytes, __ATOMIC_RELAXED);
        return;
    }
    uint64_t total = __atomic_add_fetch(now, (uint64_t)nbytes, __ATOMIC_RELAXED);
    uint64_t seen = __atomic_load_n(peak, __ATOMIC_RELAXED);
    /* A failed exchange reloads seen: retry only while total is still the higher one. */
    while (total > seen && !__atomic_compare_exchange_n(peak, &seen, total, true, __ATOMIC_RELAXED,
                                                        __ATOMIC_RELAXED))
        continue;
}

uint64_t ag_memory_allocated(ag_device device) {
    int slot = memory_slot(device);
    return slot < 0 ? 0 : __atomic_load_n(&memory_now[slot], __ATOMIC_RELAXED);
}

uint64_t ag_max_memory_allocated(ag_device device) {
    int slot = memory_slot(device);
    return slot < 0 ? 0 : __atomic_load_n(&memory_peak[slot], __ATOMIC_RELAXED);
}

void ag_reset_peak_memory(ag_device device) {
    int slot = memory_slot(device);
    if (slot < 0) return;
    uint64_t now = __atomic_load_n(&memory_now[slot], __ATOMIC_RELAXED);
    __atomic_store_n(&memory_peak[slot], now, __ATOMIC_RELAXED);
}

static ag_storage *storage_new(size_t nbytes, ag_device device) {
    if (device.backend < 0) {
        /* No backend could be loaded: ag_init sets the loader's message. */
        if (ag_init() == AG_OK)
            ag__error(AG_ERR_DEVICE, "no device: backend index %d", device.backend);
        return NULL;
    }
    const ag_backend *be = ag__backend(device.backend);
    ag_storage *s = ag__pool_alloc(AG_POOL_STORAGE);
    if (!s) {
        ag__error(AG_ERR_OUT_OF_MEMORY, "out of host memory allocating a storage");
        return NULL;
    }
    s->refcount = 1;
    s->device = device;
    s->nbytes = nbytes;
    /* Zero-size tensors still get a (tiny) buffer so every tensor has valid storage. */
    bool injected = ag__allocation_fails();
    ag_status st = injected ? AG_ERR_OUT_OF_MEMORY
                            : be->iface.alloc(device.index, nbytes ? nbytes : 1, &s->data);
    if (st != AG_OK) {
        ag__error(st, "%s backend could not allocate %zu bytes on device %d: %s", be->iface.name,
                  nbytes, device.index,
                  injected ? "out of memory (injected by ag_debug_fail_allocation)"
                           : be->iface.last_error());
        ag__pool_free(AG_POOL_STORAGE, s);
        return NULL;
    }
    memory_count(device, nbytes, true);
    return s;
}

static void storage_release(ag_storage *s) {
    if (!s || ATOMIC_DEC(&s->refcount) != 0) return;
    const ag_backend *be = ag__backend(s->device.backend);
    be->iface.free(s->device.index, s->data, s->nbytes ? s->nbytes : 1);
    memory_count(s->device, s->nbytes, false);
    ag__pool_free(AG_POOL_STORAGE, s);
}

/* Number of elements of a shape times `element_size` bytes, or -1 (with an error set) when
 * that does not fit in int64. */
static int64_t checked_size(int ndim, const int64_t *shape, int64_t element_size) {
    int64_t n = element_size;
    for (int d = 0; d < ndim; d++)
        if (__builtin_mul_overflow(n, shape[d], &n)) {
            char buf[200];
            ag__error(AG_ERR_SHAPE, "a tensor of shape %s has too many elements",
                      ag__shape_fmt(buf, sizeof buf, ndim, shape));
            return -1;
        }
    return n;
}

static ag_tensor *tensor_struct_new(ag_dtype dtype, int ndim, const int64_t *shape) {
    int64_t numel = checked_size(ndim, shape, 1);
    if (numel < 0) return NULL;
    ag_tensor *t = ag__pool_alloc(AG_POOL_TENSOR);
    if (!t) {
        ag__error(AG_ERR_OUT_OF_MEMORY, "out of host memory allocating a tensor");
        return NULL;
    }
    t->refcount = 1;
    t->dtype = dtype;
    t->ndim = ndim;
    if (ndim) memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->numel = numel;
    return t;
}

static ag_status check_geometry(ag_dtype dtype, int ndim, const int64_t *shape) {
    if (ag_dtype_size(dtype) == 0)
        return ag__error(AG_ERR_DTYPE,
                         "dtype %s (%d): expected float32, float64, int64, float16 or bfloat16",
                         ag_dtype_name(dtype), (int)dtype);
    if (ndim < 0 || ndim > AG_MAX_DIMS)
        return ag__error(AG_ERR_SHAPE, "a tensor has 0..%d dims, got %d", AG_MAX_DIMS, ndim);
    if (ndim && !shape) return ag__error(AG_ERR_INVALID_ARG, "shape is NULL for %d dims", ndim);
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 0)
            return ag__error(AG_ERR_SHAPE, "negative extent %lld in dim %d", (long long)shape[d],
                             d);
    /* The byte size must fit too: it is what the backend is asked for. */
    return checked_size(ndim, shape, (int64_t)ag_dtype_size(dtype)) < 0 ? ag_last_status() : AG_OK;
}

ag_tensor *ag__tensor_alloc(ag_dtype dtype, int ndim, const int64_t *shape, ag_device device) {
    if (check_geometry(dtype, ndim, shape) != AG_OK) return NULL;
    ag_tensor *t = tensor_struct_new(dtype, ndim, shape);
    if (!t) return NULL;
    ag__contiguous_strides(ndim, shape, t->strides);
    t->storage = storage_new((size_t)t->numel * ag_dtype_size(dtype), device);
    if (!t->storage) {
        ag__pool_free(AG_POOL_TENSOR, t);
        return NULL;
    }
    return t;
}

ag_tensor *ag__tensor_view(ag_tensor *base, int ndim, const int64_t *shape, const int64_t *strides,
                           int64_t offset) {
    ag_tensor *t = tensor_struct_new(base->dtype, ndim, shape);
    if (!t) return NULL;
    if (ndim) memcpy(t->strides, strides, (size_t)ndim * sizeof *strides);
    t->offset = offset;
    t->storage = base->storage;
    ATOMIC_INC(&t->storage->refcount);
    t->is_view = true;
    return t;
}

ag_tensor *ag_retain(ag_tensor *t) {
    if (t) ATOMIC_INC(&t->refcount);
    return t;
}

ag_tensor *ag_keep(ag_tensor *t) {
    return ag_retain(t);
}

void ag_release(ag_tensor *t) {
    if (!t || ATOMIC_DEC(&t->refcount) != 0) return;
    if (t->grad_fn) {
        ag_node *node = t->grad_fn;
        /* retain_grad keeps a weak pointer in the node: clear it before t goes away. */
        if (node->retained && node->retained[t->output_nr] == t)
            node->retained[t->output_nr] = NULL;
        ag__node_release(node);
    }
    for (ag_hook *h = t->hooks, *next; h; h = next) {
        next = h->next;
        free(h);
    }
    ag_release(t->grad);
    if (t->dual) ag__set_tangent(t, NULL);
    storage_release(t->storage);
    ag__pool_free(AG_POOL_TENSOR, t);
}

void ag__bump_version(ag_tensor *t) {
    __atomic_add_fetch(&t->storage->version, 1, __ATOMIC_RELAXED);
}

uint64_t ag_version_of(const ag_tensor *t) {
    return t ? __atomic_load_n(&t->storage->version, __ATOMIC_RELAXED) : 0;
}

/* ---- inspection ---- */

int ag_ndim(const ag_tensor *t) {
    return t ? t->ndim : -1;
}
const int64_t *ag_shape(const ag_tensor *t) {
    return t ? t->shape : NULL;
}
const int64_t *ag_strides(const ag_tensor *t) {
    return t ? t->strides : NULL;
}
int64_t ag_numel(const ag_tensor *t) {
    return t ? t->numel : -1;
}
ag_dtype ag_dtype_of(const ag_tensor *t) {
    return t ? t->dtype : AG_DTYPE_COUNT;
}
ag_device ag_device_of(const ag_tensor *t) {
    return t ? t->storage->device : (ag_device){-1, -1};
}
bool ag_is_view(const ag_tensor *t) {
    return t && t->is_view;
}

int64_t ag_size(const ag_tensor *t, int dim) {
    if (!t) return -1;
    if (dim < 0) dim += t->ndim;
    return dim >= 0 && dim < t->ndim ? t->shape[dim] : -1;
}

bool ag_is_contiguous(const ag_tensor *t) {
    if (!t) return false;
    if (t->numel == 0) return true; /* no element, no layout (as PyTorch) */
    int64_t expected = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] == 1) continue; /* the stride of an extent-1 dim is irrelevant */
        if (t->strides[d] != expected) return false;
        expected *= t->shape[d];
    }
    return true;
}

ag_status ag__wrap_dim(const char *op, int dim, int ndim, int *out) {
    int lo = ndim ? -ndim : -1, hi = ndim ? ndim - 1 : 0;
    if (dim < lo || dim > hi)
        return ag__error(AG_ERR_INDEX,
                         "%s: dimension out of range (expected to be in range of [%d, %d], but "
                         "got %d)",
                         op, lo, hi, dim);
    *out = dim < 0 ? dim + (ndim ? ndim : 1) : dim;
    return AG_OK;
}

char *ag__describe(const ag_tensor *t, char *buf, size_t size) {
    char shape[160], dev[32];
    ag__shape_fmt(shape, sizeof shape, t->ndim, t->shape);
    ag_device_str(t->storage->device, dev, sizeof dev);
    snprintf(buf, size, "%s%s on %s", ag_dtype_name(t->dtype), shape, dev);
    return buf;
}

void ag_shape_str(const ag_tensor *t, char *buf, size_t size) {
    if (t)
        ag__shape_fmt(buf, size, t->ndim, t->shape);
    else
        snprintf(buf, size, "(null)");
}

/* ---- host I/O ---- */

ag_tensor *ag__from_host(ag_dtype dtype, int ndim, const int64_t *shape, const void *data,
                         ag_device device) {
    ag_tensor *t = ag__tensor_alloc(dtype, ndim, shape, device);
    if (!t) return NULL;
    size_t bytes = (size_t)t->numel * ag_dtype_size(dtype);
    if (bytes) {
        const ag_backend *be = ag__backend(device.backend);
        ag_status st = be->iface.copy_from_host(device.index, t->storage->data, 0, data, bytes);
        if (st != AG_OK) {
            ag__error(st, "copy of %zu bytes to %s failed: %s", bytes, be->iface.name,
                      be->iface.last_error());
            ag_release(t);
            return NULL;
        }
    }
    return ag__scope_adopt(t);
}

ag_tensor *ag_from_data(ag_dtype dtype, int ndim, const int64_t *shape, const void *data) {
    if (!data) {
        ag__error(AG_ERR_INVALID_ARG, "ag_from_data: data is NULL");
        return NULL;
    }
    return ag__from_host(dtype, ndim, shape, data, ag_default_device());
}

ag_tensor *ag_from_f32(const float *data, int ndim, const int64_t *shape) {
    return ag_from_data(AG_F32, ndim, shape, data);
}
ag_tensor *ag_from_f64(const double *data, int ndim, const int64_t *shape) {
    return ag_from_data(AG_F64, ndim, shape, data);
}
ag_tensor *ag_from_i64(const int64_t *data, int ndim, const int64_t *shape) {
    return ag_from_data(AG_I64, ndim, shape, data);
}

ag_status ag_to_host(const ag_tensor *t, void *data, size_t bytes) {
    if (!t || !data)
        return ag__error_if_none(AG_ERR_INVALID_ARG, "ag_to_host: %s is NULL",
                                 t ? "data" : "tensor");
    size_t need = (size_t)t->numel * ag_dtype_size(t->dtype);
    if (bytes < need)
        return ag__error(AG_ERR_INVALID_ARG, "ag_to_host: buffer of %zu bytes, tensor needs %zu",
                         bytes, need);
    if (!need) return AG_OK;
    /* A strided tensor is made contiguous on its device first, then copied in one go. */
    ag_tensor *src = ag_is_contiguous(t) ? ag_retain((ag_tensor *)t) : NULL;
    if (!src) {
        bool prev = ag_set_grad_enabled(false);
        ag_scope *scope = ag_scope_begin();
        src = ag_retain(ag_clone((ag_tensor *)t));
        ag_scope_end(scope);
        ag_set_grad_enabled(prev);
        if (!src) return ag_last_status();
    }
    const ag_backend *be = ag__backend(src->storage->device.backend);
    size_t esize = ag_dtype_size(src->dtype);
    ag_status st = be->iface.copy_to_host(src->storage->device.index, data, src->storage->data,
                                          (size_t)src->offset * esize, need);
    if (st == AG_OK) st = be->iface.synchronize(src->storage->device.index);
    if (st != AG_OK)
        ag__error(st, "copy of %zu bytes from %s failed: %s", need, be->iface.name,
                  be->iface.last_error());
    ag_release(src);
    return st;
}

void *ag_data_ptr(const ag_tensor *t) {
    if (!t) return NULL;
    if (!ag__backend(t->storage->device.backend)->host_memory) return NULL;
    return (char *)t->storage->data + (size_t)t->offset * ag_dtype_size(t->dtype);
}

ag_status ag_item(const ag_tensor *t, double *value) {
    if (!t || !value) return ag__error_if_none(AG_ERR_INVALID_ARG, "ag_item: NULL argument");
    if (t->numel != 1) {
        char shape[160];
        return ag__error(
            AG_ERR_SHAPE, "a Tensor with %lld elements cannot be converted to Scalar (shape %s)",
            (long long)t->numel, ag__shape_fmt(shape, sizeof shape, t->ndim, t->shape));
    }
    unsigned char bytes[8];
    ag_status st = ag_to_host(t, bytes, ag_dtype_size(t->dtype));
    if (st != AG_OK) return st;
    *value = ag__host_value(t->dtype, bytes, 0);
    return AG_OK;
}

double ag__host_value(ag_dtype dtype, const void *data, int64_t i) {
    switch (dtype) {
    case AG_F32:
        return ((const float *)data)[i];
    case AG_F64:
        return ((const double *)data)[i];
    case AG_F16:
        return ag_f16_to_f32(((const uint16_t *)data)[i]);
    case AG_BF16:
        return ag_bf16_to_f32(((const uint16_t *)data)[i]);
    default:
        return (double)((const int64_t *)data)[i];
    }
}

ag_dtype ag__promote(ag_dtype a, ag_dtype b) {
    if (a == b) return a;
    if (a == AG_F64 || b == AG_F64) return AG_F64;
    if (a == AG_F32 || b == AG_F32) return AG_F32;
    /* float16 with bfloat16: neither holds the other's values, float32 holds both. */
    if (ag__is_low_precision(a) && ag__is_low_precision(b)) return AG_F32;
    return a == AG_I64 ? b : a;
}
