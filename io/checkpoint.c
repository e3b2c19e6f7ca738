/* Checkpoints: a model's parameters and buffers (running statistics) under their
 * state-dict names ("0.weight", "1.running_mean"), an optimizer's state under
 * "optimizer.<name>" and a GradScaler's under "scaler.<name>", in one safetensors file. Loading is
 * strict like PyTorch's load_state_dict: every parameter present with its shape and dtype, no
 * unknown entries, and nothing is changed unless everything checks out. */
#include <stdlib.h>
#include <string.h>
#include "ag/io.h"
#include "../core/internal.h"

#define OPT_PREFIX    "optimizer."
#define SCALER_PREFIX "scaler."

/* A module's state-dict entries, its named parameters then its buffers (malloc'd array
 * with room for `extra` more entries; names and tensors borrowed) into *out. Below,
 * "parameters" means both: a buffer is saved, checked and loaded like a parameter. */
static ag_status model_params(const ag_module *model, int extra, int *n, ag_named_tensor **out) {
    *out = NULL;
    const int n_params = ag_module_parameters(model, NULL, 0);
    const int n_buffers = ag_module_buffers(model, NULL, 0);
    if (n_params < 0 || n_buffers < 0) return ag_last_status();
    *n = n_params + n_buffers;
    *out = ag__malloc((size_t)(*n + extra + 1) * sizeof **out);
    if (!*out) return ag__error(AG_ERR_OUT_OF_MEMORY, "out of host memory listing parameters");
    ag_module_parameters(model, *out, n_params);
    ag_module_buffers(model, *out + n_params, n_buffers);
    return AG_OK;
}

/* Saves a model, optionally its optimizer and GradScaler (see io.h). */
ag_status ag_checkpoint_save_with_scaler(const char *path, const ag_module *model,
                                         const ag_optimizer *opt, const ag_grad_scaler *scaler) {
    if (!path || !model)
        return ag__error(AG_ERR_INVALID_ARG, "ag_checkpoint_save: path or model is NULL");
    int n_params = 0, n_opt = opt ? ag_optimizer_state(opt, NULL, 0) : 0;
    if (n_opt < 0) return ag_last_status();
    const int n_scaler = scaler ? 2 : 0, n_state = n_opt + n_scaler;
    ag_named_tensor *all = NULL;
    ag_scope *scope = ag_scope_begin(); /* owns the scaler's state tensors */
    ag_status st = model_params(model, n_state, &n_params, &all);
    ag_named_tensor *state = all ? all + n_params : NULL;
    if (st == AG_OK && n_opt && ag_optimizer_state(opt, state, n_opt) < 0) st = ag_last_status();
    if (st == AG_OK && scaler && ag_grad_scaler_state(scaler, state + n_opt) < 0)
        st = ag_last_status();
    /* State names get their prefix in malloc'd copies, freed below. */
    int named = 0;
    while (st == AG_OK && named < n_state) {
        const char *prefix = named < n_opt ? OPT_PREFIX : SCALER_PREFIX;
        size_t len = strlen(prefix) + strlen(state[named].name) + 1;
        char *name = ag__malloc(len);
        if (name) {
            snprintf(name, len, "%s%s", prefix, state[named].name);
            state[named++].name = name;
        } else {
            st = ag__error(AG_ERR_OUT_OF_MEMORY, "out of host memory saving %s", path);
        }
    }
    if (st == AG_OK) st = ag_safetensors_save(path, n_params + n_state, all);
    for (int i = 0; i < named; i++) free((char *)all[n_params + i].name);
    free(all);
    ag_scope_end(scope);
    return st;
}

ag_status ag_checkpoint_save(const char *path, const ag_module *model, const ag_optimizer *opt) {
    return ag_checkpoint_save_with_scaler(path, model, opt, NULL);
}

/* True for the names of optimizer or scaler state. */
static bool is_optimizer(const char *name) {
    return strncmp(name, OPT_PREFIX, strlen(OPT_PREFIX)) == 0 ||
           strncmp(name, SCALER_PREFIX, strlen(SCALER_PREFIX)) == 0;
}

/* By name, for bsearch. */
static int by_name(const void *a, const void *b) {
    return strcmp(((const ag_named_tensor *)a)->name, ((const ag_named_tensor *)b)->name);
}

/* Checks that the file's entries (sorted by name) match the parameters exactly. */
static ag_status check_params(const char *path, int n_params, const ag_named_tensor *params,
                              int n_file, const ag_named_tensor *file) {
    for (int i = 0; i < n_params; i++) {
        const ag_named_tensor *p = &params[i];
        const ag_named_tensor *f = bsearch(p, file, (size_t)n_file, sizeof *file, by_name);
        char want[192], got[192];
        if (!f)
            return ag__error(AG_ERR_IO, "checkpoint %s: parameter '%s' is missing", path, p->name);
        ag_shape_str(p->tensor, want, sizeof want);
        ag_shape_str(f->tensor, got, sizeof got);
        if (strcmp(want, got) != 0)
            return ag__error(AG_ERR_SHAPE,
                             "checkpoint %s: parameter '%s' has shape %s in the file but %s in the "
                             "model",
                             path, p->name, got, want);
        if (ag_dtype_of(p->tensor) != ag_dtype_of(f->tensor))
            return ag__error(AG_ERR_DTYPE,
                             "checkpoint %s: parameter '%s' is %s in the file but %s in the model",
                             path, p->name, ag_dtype_name(ag_dtype_of(f->tensor)),
                             ag_dtype_name(ag_dtype_of(p->tensor)));
    }
    /* Names are unique, so with every parameter found, equal counts mean nothing else. */
    int model_entries = 0;
    for (int i = 0; i < n_file; i++) model_entries += !is_optimizer(file[i].name);
    for (int i = 0; model_entries > n_params && i < n_file; i++) {
        bool known = is_optimizer(file[i].name);
        for (int k = 0; !known && k < n_params; k++)
            known = strcmp(file[i].name, params[k].name) == 0;
        if (!known)
            return ag__error(AG_ERR_IO,
                             "checkpoint %s: unexpected entry '%s' (not a parameter of the model)",
                             path, file[i].name);
    }
    return AG_OK;
}

/* Copies the file's values into the parameters, under no_grad. */
static ag_status copy_params(int n_params, const ag_named_tensor *params, int n_file,
                             const ag_named_tensor *file) {
    bool prev = ag_set_grad_enabled(false);
    ag_scope *scope = ag_scope_begin();
    ag_status st = AG_OK;
    for (int i = 0; st == AG_OK && i < n_params; i++) {
        const ag_named_tensor *f = bsearch(&params[i], file, (size_t)n_file, sizeof *file, by_name);
        ag_tensor *src = ag_to_device(f->tensor, ag_device_of(params[i].tensor));
        if (!ag_copy_(params[i].tensor, src)) st = ag_last_status();
    }
    ag_scope_end(scope);
    ag_set_grad_enabled(prev);
    return st;
}

/* The entries of the file whose names start with prefix, with it removed (names point into
 * file's). */
static int prefixed_entries(int n_file, const ag_named_tensor *file, const char *prefix,
                            ag_named_tensor *out) {
    int n = 0;
    for (int i = 0; i < n_file; i++)
        if (strncmp(file[i].name, prefix, strlen(prefix)) == 0)
            out[n++] = (ag_named_tensor){file[i].name + strlen(prefix), file[i].tensor};
    return n;
}

/* Loads a checkpoint into a model and optionally an optimizer and a GradScaler (see io.h). */
ag_status ag_checkpoint_load_with_scaler(const char *path, ag_module *model, ag_optimizer *opt,
                                         ag_grad_scaler *scaler) {
    if (!path || !model)
        return ag__error(AG_ERR_INVALID_ARG, "ag_checkpoint_load: path or model is NULL");
    int n_file = 0, n_params = 0;
    ag_named_tensor *file = NULL, *params = NULL, *state = NULL;
    ag_status st = ag_safetensors_load(path, &n_file, &file);
    if (st == AG_OK) st = model_params(model, 0, &n_params, &params);
    if (st == AG_OK) {
        qsort(file, (size_t)n_file, sizeof *file, by_name);
        st = check_params(path, n_params, params, n_file, file);
    }
    if (st == AG_OK && !(state = ag__malloc((size_t)(n_file + 1) * sizeof *state)))
        st = ag__error(AG_ERR_OUT_OF_MEMORY, "out of host memory loading %s", path);
    /* The scaler and the optimizer check their state themselves: load them first, so a
     * mismatch there leaves the parameters as they were. */
    int n_state = st == AG_OK ? prefixed_entries(n_file, file, SCALER_PREFIX, state) : 0;
    if (st == AG_OK && scaler && n_state) st = ag_grad_scaler_load_state(scaler, n_state, state);
    n_state = st == AG_OK ? prefixed_entries(n_file, file, OPT_PREFIX, state) : 0;
    if (st == AG_OK && opt && n_state) st = ag_optimizer_load_state(opt, n_state, state);
    if (st == AG_OK) st = copy_params(n_params, params, n_file, file);
    free(state);
    free(params);
    ag_named_tensors_free(n_file, file);
    return st;
}

ag_status ag_checkpoint_load(const char *path, ag_module *model, ag_optimizer *opt) {
    return ag_checkpoint_load_with_scaler(path, model, opt, NULL);
}
