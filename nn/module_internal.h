/* Internal interface of modules, shared by nn/module.c (the object every module is) and
 * the files defining module kinds (nn/layers.c). Not installed; docs/nn.md shows how to
 * add a kind with it. */
#ifndef AG_NN_MODULE_INTERNAL_H
#define AG_NN_MODULE_INTERNAL_H

#include <stdatomic.h>
#include "ag/nn.h"
#include "../core/internal.h"

/* What every module of one kind shares: its class name and behaviour. */
typedef struct ag__module_kind {
    const char *name; /* class name, as PyTorch's ("Linear") */
    /* Runs the module on x (never NULL) inside a scope of its own: returns the output owned
     * by that scope (or x itself), NULL with the error set on failure. */
    ag_tensor *(*forward)(ag_module *m, ag_tensor *x);
    /* Writes the name used to prefix errors ("Linear(784 -> 512)"); NULL: the class name. */
    void (*describe)(const ag_module *m, char *buf, size_t size);
    /* Frees what a kind holds beyond parameters and children; NULL if nothing. */
    void (*free)(ag_module *m);
} ag__module_kind;

/* A registered forward pre-hook (pre set) or forward hook (fn set); both NULL mark one
 * removed while hooks were running. */
typedef struct ag__module_hook {
    uint64_t handle;            /* returned by ag_module_register_forward_(pre_)hook */
    ag_forward_pre_hook_fn pre; /* the pre-hook, or NULL */
    ag_forward_hook_fn fn;      /* the forward hook, or NULL */
    void *user;                 /* its argument */
} ag__module_hook;

/* The part every module starts with; a kind embeds it as its first member. */
struct ag_module {
    const ag__module_kind *kind; /* class */
    bool training;               /* train (true) or eval mode */
    bool owned;                  /* a child of a container, freed with it */
    int n_own;                   /* own parameters: the first n_own entries of params */
    int n_params;                /* parameters of the whole subtree */
    int params_cap;              /* allocated entries of params */
    /* Subtree parameters with full names (malloc'd), own first, then each child's in
     * order, prefixed "<index>."; own entries hold a reference, the others borrow it. */
    ag_named_tensor *params;
    /* Buffers (running statistics: state that is saved but not trained), kept like params:
     * own first (holding a reference), then the children's with prefixed names. */
    int n_own_buffers, n_buffers, buffers_cap;
    ag_named_tensor *buffers;
    int n_children;         /* children, named "0", "1", ... */
    ag_module **children;   /* owned */
    int n_hooks, hooks_cap; /* forward pre-hooks and hooks, in registration order */
    ag__module_hook *hooks;
    /* Forwards in progress (hooks may re-enter; threads may share an eval-mode module). */
    atomic_int running;
    bool hooks_removed; /* hooks were removed while running: compact when none runs */
};

/* A zeroed module of `size` bytes (the kind's struct, starting with ag_module) in train
 * mode; NULL if out of memory. */
void *ag__module_alloc(const ag__module_kind *kind, size_t size);
/* Makes t (a float tensor held by an open scope, or NULL after a failed creation: the
 * pending error is kept) parameter `name` of m: requires grad, m keeps a reference. Call it
 * before adding children. Returns t (borrowed from m), NULL on error. */
ag_tensor *ag__module_add_parameter(ag_module *m, const char *name, ag_tensor *t);
/* The end of a constructor: ends the scope its parameters were created in (so the module's
 * reference is the only one left, whether or not the caller has a scope open) and returns
 * m, or frees the half-built m and returns NULL unless ok. */
ag_module *ag__module_end_init(ag_module *m, ag_scope *scope, bool ok);
/* AG_ERR_INVALID_ARG with a printf-style message for a bad constructor argument; returns
 * NULL for the constructor to return. */
ag_module *ag__module_bad_arg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Makes t (a tensor held by an open scope, or NULL after a failed creation) buffer `name`
 * of m: saved in checkpoints, never trained; m keeps a reference. Call it before adding
 * children. Returns t (borrowed from m), NULL on error. */
ag_tensor *ag__module_add_buffer(ag_module *m, const char *name, ag_tensor *t);
/* Makes children[0..n) children of m, named by index, all or none: on error (a NULL child,
 * one owned by a container or listed twice) m and the children are unchanged. */
ag_status ag__module_add_children(ag_module *m, int n, ag_module *const *children);
/* Runs child i of m on x; an error gets the prefix "<Kind>[i]: ". */
ag_tensor *ag__module_forward_child(ag_module *m, int i, ag_tensor *x);

#endif
