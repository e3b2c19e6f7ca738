/* The module object every layer and container is (nn/module_internal.h): a kind (vtable),
 * named parameters, children, train/eval mode and forward (pre-)hooks. Kinds live in layers.c. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "module_internal.h"

/* One process-wide counter, so a handle of one module never removes another's hook. */
static atomic_uint_least64_t next_hook_handle = 1;

void *ag__module_alloc(const ag__module_kind *kind, size_t size) {
    ag_module *m = ag__calloc(1, size);
    if (!m) {
        ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory creating the module", kind->name);
        return NULL;
    }
    m->kind = kind;
    m->training = true; /* as torch.nn.Module */
    return m;
}

/* Grows m->params to hold `extra` more entries. */
static ag_status reserve_params(ag_module *m, int extra) {
    if (m->n_params + extra <= m->params_cap) return AG_OK;
    int cap = m->n_params + extra > 2 * m->params_cap ? m->n_params + extra : 2 * m->params_cap;
    ag_named_tensor *p = ag__realloc(m->params, (size_t)cap * sizeof *p);
    if (!p)
        return ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory for parameters",
                         m->kind->name);
    m->params = p;
    m->params_cap = cap;
    return AG_OK;
}

ag_tensor *ag__module_add_parameter(ag_module *m, const char *name, ag_tensor *t) {
    if (!t) {
        ag__error_if_none(AG_ERR_INVALID_ARG, "%s: parameter '%s' is NULL", m->kind->name, name);
        return NULL;
    }
    if (ag_set_requires_grad(t, true) != AG_OK || reserve_params(m, 1) != AG_OK) return NULL;
    char *copy = ag__strdup(name);
    if (!copy) {
        ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory for parameter names",
                  m->kind->name);
        return NULL;
    }
    /* Own parameters come before the children's, as in named_parameters(). */
    memmove(&m->params[m->n_own + 1], &m->params[m->n_own],
            (size_t)(m->n_params - m->n_own) * sizeof *m->params);
    m->params[m->n_own].name = copy;
    m->params[m->n_own].tensor = ag_keep(t);
    m->n_own++;
    m->n_params++;
    return t;
}

/* Grows m->buffers to hold `extra` more entries. */
static ag_status reserve_buffers(ag_module *m, int extra) {
    if (m->n_buffers + extra <= m->buffers_cap) return AG_OK;
    int cap = m->n_buffers + extra > 2 * m->buffers_cap ? m->n_buffers + extra : 2 * m->buffers_cap;
    ag_named_tensor *b = ag__realloc(m->buffers, (size_t)cap * sizeof *b);
    if (!b)
        return ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory for buffers", m->kind->name);
    m->buffers = b;
    m->buffers_cap = cap;
    return AG_OK;
}

ag_tensor *ag__module_add_buffer(ag_module *m, const char *name, ag_tensor *t) {
    if (!t) {
        ag__error_if_none(AG_ERR_INVALID_ARG, "%s: buffer '%s' is NULL", m->kind->name, name);
        return NULL;
    }
    if (reserve_buffers(m, 1) != AG_OK) return NULL;
    char *copy = ag__strdup(name);
    if (!copy) {
        ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory for buffer names", m->kind->name);
        return NULL;
    }
    memmove(&m->buffers[m->n_own_buffers + 1], &m->buffers[m->n_own_buffers],
            (size_t)(m->n_buffers - m->n_own_buffers) * sizeof *m->buffers);
    m->buffers[m->n_own_buffers].name = copy;
    m->buffers[m->n_own_buffers].tensor = ag_keep(t);
    m->n_own_buffers++;
    m->n_buffers++;
    return t;
}

/* "<index>.<name>" in a new string; NULL if out of memory. */
static char *child_param_name(int index, const char *name) {
    int len = snprintf(NULL, 0, "%d.%s", index, name);
    char *s = ag__malloc((size_t)len + 1);
    if (s) snprintf(s, (size_t)len + 1, "%d.%s", index, name);
    return s;
}

/* Why child i of the list cannot be adopted, or AG_OK. */
static ag_status check_child(const ag_module *m, int i, ag_module *const *children) {
    const ag_module *c = children[i];
    /* A NULL child is usually a failed constructor: its error is the one to keep. */
    if (!c) return ag__error_if_none(AG_ERR_INVALID_ARG, "%s: child %d is NULL", m->kind->name, i);
    if (c->owned)
        return ag__error(AG_ERR_INVALID_ARG,
                         "%s: child %d (%s) already belongs to a container; a module can have "
                         "one owner",
                         m->kind->name, i, c->kind->name);
    for (int j = 0; j < i; j++)
        if (children[j] == c)
            return ag__error(AG_ERR_INVALID_ARG,
                             "%s: child %d is the same module as child %d; a module can have "
                             "one owner",
                             m->kind->name, i, j);
    return AG_OK;
}

ag_status ag__module_add_children(ag_module *m, int n, ag_module *const *children) {
    if (n < 0 || (n > 0 && !children))
        return ag__error(AG_ERR_INVALID_ARG,
                         "%s: got %d children and a %s array (want n >= 0 and an array when "
                         "n > 0)",
                         m->kind->name, n, children ? "non-NULL" : "NULL");
    if (n == 0) return AG_OK; /* realloc to 0 bytes may free */
    int extra = 0, extra_buffers = 0;
    for (int i = 0; i < n; i++) {
        ag_status st = check_child(m, i, children);
        if (st != AG_OK) return st;
        extra += children[i]->n_params;
        extra_buffers += children[i]->n_buffers;
    }
    ag_module **kids = ag__realloc(m->children, (size_t)(m->n_children + n) * sizeof *kids);
    if (kids) m->children = kids;
    if (!kids || reserve_params(m, extra) != AG_OK || reserve_buffers(m, extra_buffers) != AG_OK)
        return ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory for children",
                         m->kind->name);
    /* Buffer names first, into the unused tail of buffers, undone if anything fails. */
    int made_buffers = 0;
    for (int i = 0; i < n; i++) {
        const ag_module *c = children[i];
        for (int k = 0; k < c->n_buffers; k++, made_buffers++) {
            char *name = child_param_name(m->n_children + i, c->buffers[k].name);
            if (!name) {
                while (made_buffers--) free((char *)m->buffers[m->n_buffers + made_buffers].name);
                return ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory for names",
                                 m->kind->name);
            }
            m->buffers[m->n_buffers + made_buffers] = (ag_named_tensor){name, c->buffers[k].tensor};
        }
    }
    /* Names go into the unused tail of params first, so a failure leaves m as it was. */
    int made = 0;
    for (int i = 0; i < n; i++) {
        const ag_module *c = children[i];
        for (int k = 0; k < c->n_params; k++, made++) {
            char *name = child_param_name(m->n_children + i, c->params[k].name);
            if (!name) {
                while (made--) free((char *)m->params[m->n_params + made].name);
                while (made_buffers--) free((char *)m->buffers[m->n_buffers + made_buffers].name);
                return ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory for names",
                                 m->kind->name);
            }
            m->params[m->n_params + made] = (ag_named_tensor){name, c->params[k].tensor};
        }
    }
    for (int i = 0; i < n; i++) {
        children[i]->owned = true;
        m->children[m->n_children++] = children[i];
    }
    m->n_params += made;
    m->n_buffers += made_buffers;
    return AG_OK;
}

/* Frees m and its subtree, whoever owns it. */
static void module_destroy(ag_module *m) {
    if (m->kind->free) m->kind->free(m);
    for (int i = 0; i < m->n_children; i++) module_destroy(m->children[i]);
    for (int i = 0; i < m->n_params; i++) {
        free((char *)m->params[i].name);
        if (i < m->n_own) ag_release(m->params[i].tensor);
    }
    for (int i = 0; i < m->n_buffers; i++) {
        free((char *)m->buffers[i].name);
        if (i < m->n_own_buffers) ag_release(m->buffers[i].tensor);
    }
    free(m->children);
    free(m->params);
    free(m->buffers);
    free(m->hooks);
    free(m);
}

void ag_module_free(ag_module *m) {
    if (!m) return;
    if (m->owned) {
        ag__error(AG_ERR_INVALID_ARG,
                  "ag_module_free: this %s is a child of a container; free the container",
                  m->kind->name);
        return;
    }
    module_destroy(m);
}

/* Prefixes the pending error with m's description unless the message already names it
 * (a ReLU failing in "relu: ..." needs no "ReLU: " in front). */
static void name_error(const ag_module *m) {
    ag_status st = ag_last_status();
    if (st == AG_OK) return;
    char desc[128];
    if (m->kind->describe)
        m->kind->describe(m, desc, sizeof desc);
    else
        snprintf(desc, sizeof desc, "%s", m->kind->name);
    const char *err = ag_last_error();
    size_t len = strlen(desc);
    if (strstr(err, desc) || (strncasecmp(err, desc, len) == 0 && err[len] == ':')) return;
    char msg[4096]; /* the message is rewritten from a copy: ag__error writes over it */
    snprintf(msg, sizeof msg, "%s", err);
    ag__error(st, "%s: %s", desc, msg);
}

/* Drops the hooks removed while forwards were running. */
static void compact_hooks(ag_module *m) {
    m->hooks_removed = false;
    int kept = 0;
    for (int i = 0; i < m->n_hooks; i++)
        if (m->hooks[i].pre || m->hooks[i].fn) m->hooks[kept++] = m->hooks[i];
    m->n_hooks = kept;
}

ag_tensor *ag_module_forward(ag_module *m, ag_tensor *x) {
    if (!m || !x) {
        ag__error_if_none(AG_ERR_INVALID_ARG, "ag_module_forward: the %s is NULL",
                          m ? "input" : "module");
        return NULL;
    }
    /* The module's own scope frees intermediate results, and outputs replaced by hooks,
     * whether or not the caller has a scope open. */
    ag_scope *scope = ag_scope_begin();
    if (!scope) return NULL;
    atomic_fetch_add(&m->running, 1);
    /* Hooks registered by a hook run from the next call on. Pre-hooks all run before the
     * forward and forward hooks after it, each seeing what the previous one left. */
    int n = m->n_hooks;
    for (int i = 0; i < n; i++) {
        ag__module_hook h = m->hooks[i];
        ag_tensor *r = h.pre ? h.pre(m, x, h.user) : NULL;
        if (r) x = r;
    }
    ag_tensor *y = m->kind->forward(m, x);
    if (!y) name_error(m);
    for (int i = 0; y && i < n; i++) {
        ag__module_hook h = m->hooks[i];
        ag_tensor *r = h.fn ? h.fn(m, x, y, h.user) : NULL;
        if (r) y = r;
    }
    if (atomic_fetch_sub(&m->running, 1) == 1 && m->hooks_removed) compact_hooks(m);
    if (!y) {
        ag_scope_end(scope);
        return NULL;
    }
    return ag_scope_return(scope, y);
}

ag_tensor *ag__module_forward_child(ag_module *m, int i, ag_tensor *x) {
    ag_tensor *y = ag_module_forward(m->children[i], x);
    if (!y) {
        char msg[4096];
        snprintf(msg, sizeof msg, "%s", ag_last_error());
        ag__error(ag_last_status(), "%s[%d]: %s", m->kind->name, i, msg);
    }
    return y;
}

void ag_module_train(ag_module *m, bool training) {
    if (!m) return;
    m->training = training;
    for (int i = 0; i < m->n_children; i++) ag_module_train(m->children[i], training);
}

bool ag_module_is_training(const ag_module *m) {
    return m && m->training;
}

const char *ag_module_kind(const ag_module *m) {
    return m ? m->kind->name : NULL;
}

int ag_module_parameters(const ag_module *m, ag_named_tensor *out, int capacity) {
    if (!m || capacity < 0 || (capacity > 0 && !out)) {
        ag__error(AG_ERR_INVALID_ARG, "ag_module_parameters: %s",
                  !m ? "the module is NULL" : "capacity < 0, or out NULL with capacity > 0");
        return -1;
    }
    int n = capacity < m->n_params ? capacity : m->n_params;
    if (n) memcpy(out, m->params, (size_t)n * sizeof *out);
    return m->n_params;
}

int ag_module_buffers(const ag_module *m, ag_named_tensor *out, int capacity) {
    if (!m || capacity < 0 || (capacity > 0 && !out)) {
        ag__error(AG_ERR_INVALID_ARG, "ag_module_buffers: %s",
                  !m ? "the module is NULL" : "capacity < 0, or out NULL with capacity > 0");
        return -1;
    }
    int n = capacity < m->n_buffers ? capacity : m->n_buffers;
    if (n) memcpy(out, m->buffers, (size_t)n * sizeof *out);
    return m->n_buffers;
}

ag_module *ag_module_child(const ag_module *m, int i) {
    if (!m) {
        ag__error(AG_ERR_INVALID_ARG, "ag_module_child: the module is NULL");
        return NULL;
    }
    if (i < 0 || i >= m->n_children) {
        ag__error(AG_ERR_INDEX, "ag_module_child: index %d is out of range for %s with %d children",
                  i, m->kind->name, m->n_children);
        return NULL;
    }
    return m->children[i];
}

/* Appends a pre-hook (pre) or forward hook (fn) to m's hooks; its handle, 0 on error. */
static uint64_t add_hook(const char *who, ag_module *m, ag_forward_pre_hook_fn pre,
                         ag_forward_hook_fn fn, void *user) {
    if (!m || (!pre && !fn)) {
        ag__error(AG_ERR_INVALID_ARG, "%s: the %s is NULL", who, m ? "hook function" : "module");
        return 0;
    }
    if (m->n_hooks == m->hooks_cap) {
        int cap = m->hooks_cap ? 2 * m->hooks_cap : 4;
        ag__module_hook *h = ag__realloc(m->hooks, (size_t)cap * sizeof *h);
        if (!h) {
            ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory for a hook", m->kind->name);
            return 0;
        }
        m->hooks = h;
        m->hooks_cap = cap;
    }
    uint64_t handle = atomic_fetch_add(&next_hook_handle, 1);
    m->hooks[m->n_hooks++] = (ag__module_hook){handle, pre, fn, user};
    return handle;
}

uint64_t ag_module_register_forward_pre_hook(ag_module *m, ag_forward_pre_hook_fn fn, void *user) {
    return add_hook("ag_module_register_forward_pre_hook", m, fn, NULL, user);
}

uint64_t ag_module_register_forward_hook(ag_module *m, ag_forward_hook_fn fn, void *user) {
    return add_hook("ag_module_register_forward_hook", m, NULL, fn, user);
}

ag_status ag_module_remove_hook(ag_module *m, uint64_t handle) {
    if (!m) return ag__error(AG_ERR_INVALID_ARG, "ag_module_remove_hook: module is NULL");
    for (int i = 0; i < m->n_hooks; i++) {
        ag__module_hook *h = &m->hooks[i];
        if (h->handle != handle || (!h->pre && !h->fn)) continue;
        /* While hooks run, entries must keep their places: mark it, compact later. */
        h->pre = NULL;
        h->fn = NULL;
        m->hooks_removed = true;
        if (!atomic_load(&m->running)) compact_hooks(m);
        return AG_OK;
    }
    return ag__error(AG_ERR_INVALID_ARG,
                     "ag_module_remove_hook: %s has no hook with handle %llu (never registered "
                     "on it, or removed already)",
                     m->kind->name, (unsigned long long)handle);
}

ag_module *ag__module_end_init(ag_module *m, ag_scope *scope, bool ok) {
    ag_scope_end(scope);
    if (ok) return m;
    ag_module_free(m);
    return NULL;
}

ag_module *ag__module_bad_arg(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ag__error(AG_ERR_INVALID_ARG, "%s", msg);
    return NULL;
}
