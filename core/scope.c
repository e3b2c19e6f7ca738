/* Scopes: per-thread stacks of regions that own the tensors created inside them, so that a
 * training step written with nested expressions frees every temporary at its end. */
#include <stdlib.h>
#include "internal.h"

struct ag_scope {
    ag_tensor **items;      /* references owned by the scope */
    size_t count, capacity; /* used and allocated entries */
    ag_scope *parent;       /* enclosing scope, or NULL */
};

static _Thread_local ag_scope *current;
/* Ended scopes are kept for reuse so a steady loop does not allocate per step. */
static _Thread_local ag_scope *spare;

ag_scope *ag_scope_begin(void) {
    ag_scope *s = spare;
    if (s) {
        spare = s->parent;
    } else {
        ag__thread_cleanup_arm();
        s = ag__calloc(1, sizeof *s);
        if (!s) {
            ag__error(AG_ERR_OUT_OF_MEMORY, "out of host memory opening a scope");
            return NULL;
        }
    }
    s->count = 0;
    s->parent = current;
    current = s;
    return s;
}

static void scope_close_top(void) {
    ag_scope *s = current;
    current = s->parent;
    /* Release newest first: later temporaries usually depend on earlier ones. The slot is
     * cleared so that a spare scope holds no stale pointer (LeakSanitizer would take a
     * leaked tensor for one still reachable). */
    while (s->count) {
        ag_tensor *t = s->items[--s->count];
        s->items[s->count] = NULL;
        ag_release(t);
    }
    s->parent = spare;
    spare = s;
}

void ag_scope_end(ag_scope *scope) {
    if (!scope) return;
    ag_scope *s = current;
    while (s && s != scope) s = s->parent;
    if (!s) {
        ag__error(AG_ERR_INVALID_ARG, "ag_scope_end: scope is not open on this thread");
        return;
    }
    /* Inner scopes left open are closed too, as if they had ended first. */
    while (current != scope) scope_close_top();
    scope_close_top();
}

ag_tensor *ag__scope_adopt(ag_tensor *t) {
    ag_scope *s = current;
    if (!t || !s) return t;
    if (s->count == s->capacity) {
        size_t cap = s->capacity ? s->capacity * 2 : 64;
        ag_tensor **items = ag__realloc(s->items, cap * sizeof *items);
        if (!items) {
            ag_release(t);
            ag__error(AG_ERR_OUT_OF_MEMORY, "out of host memory growing a scope");
            return NULL;
        }
        s->items = items;
        s->capacity = cap;
    }
    s->items[s->count++] = t;
    return t;
}

ag_tensor *ag_scope_return(ag_scope *scope, ag_tensor *t) {
    /* No scope (ag_scope_begin failed): t already belongs to the enclosing one. */
    if (!scope) return t;
    ag_retain(t);
    ag_scope_end(scope);
    return ag__scope_adopt(t);
}

/* Frees this thread's spare scopes (called at process end for the main thread). */
void ag__scopes_shutdown(void) {
    while (current) scope_close_top();
    while (spare) {
        ag_scope *s = spare;
        spare = s->parent;
        free(s->items);
        free(s);
    }
}
