/* Plugin loader: opens a plugin file, checks its ABI, runs its init as a registration
 * transaction (all of its ops or none), and keeps the table of loaded plugins. AG_PLUGINS
 * lists plugins that ag_init loads. The rules are those of include/ag/plugin.h; the op
 * definitions themselves come from core/plugin_ops.c.
 *
 * AG_PLUGINS=a.so:b.so: loaded in order by the first ag_init after the default backend is
 * up. A plugin that fails to load ends the list there, and ag_init then fails with
 * "AG_PLUGINS=<value>: cannot load plugin <file>: <cause>", as does every later ag_init (so
 * every tensor creation): a user who asked for a plugin must not run without it. */
#define _GNU_SOURCE /* PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "ag/plugin.h"

/* Bytes of ag_plugin_info up to abi_minor: enough to read the version. */
#define INFO_HEADER offsetof(ag_plugin_info, name)
/* Sizes of the structs at plugin ABI 1.0. Fields appended by later minors are optional;
 * these are not, so a smaller struct_size is a broken plugin. */
#define INFO_SIZE_1_0 (offsetof(ag_plugin_info, init) + sizeof(void (*)(void)))
#define OP_SIZE_1_0   (offsetof(ag_plugin_op, user) + sizeof(void *))

/* A loaded plugin. */
typedef struct plugin {
    char *path;          /* the file, resolved by realpath */
    void *handle;        /* from dlopen */
    ag_plugin_info info; /* copied; fields past the plugin's struct_size are zero */
    ag_op_def **ops;     /* its registered ops, in registration order */
    int n_ops;           /* entries in ops */
} plugin;

/* One registration transaction: the ops a plugin's init registers, kept aside until init
 * has returned, and the first refusal. */
struct ag_plugin_registrar {
    ag_op_def **defs;   /* built by ag__plugin_op_def_new, not registered yet */
    int n, capacity;    /* entries used and allocated in defs */
    ag_status status;   /* first refusal, AG_OK if none */
    char message[1024]; /* its message (the thread's error may change before init returns) */
};

/* Recursive, so that a plugin's init may call ag_plugin_count and friends. */
static pthread_mutex_t lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static plugin *plugins; /* [0, count) loaded, in load order; guarded by lock */
static int count, capacity;

/* The transaction of the init running on this thread, NULL outside inits. */
static _Thread_local ag_plugin_registrar *active;

enum { ENV_NONE, ENV_DONE };
static atomic_int env_state;   /* ENV_DONE publishes the two below */
static ag_status env_status;   /* result of loading AG_PLUGINS */
static char env_message[2048]; /* its message if it failed */

/* ---- the host table ---- */

static ag_status host_error(ag_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static ag_status host_error(ag_status status, const char *fmt, ...) {
    char message[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    return ag__error(status, "%s", message);
}

/* Room for entry n of an array of `size`-byte entries with *capacity allocated: the array,
 * maybe moved and *capacity doubled, or NULL (the array as it was) if out of memory. */
static void *reserve(void *array, int *capacity, int n, size_t size) {
    if (n < *capacity) return array;
    int cap = *capacity ? 2 * *capacity : 8;
    void *grown = ag__realloc(array, (size_t)cap * size);
    if (grown) *capacity = cap;
    return grown;
}

/* Builds the op's definition into the active transaction. A refusal is kept even if init
 * ignores the status: the whole load fails with it. */
static ag_status host_register_op(ag_plugin_registrar *r, const ag_plugin_op *op) {
    if (!r || r != active)
        return ag__error(AG_ERR_INVALID_ARG, "register_op: called outside the plugin's init");
    if (r->status != AG_OK) return ag__error(r->status, "%s", r->message);
    ag_op_def **defs = reserve(r->defs, &r->capacity, r->n, sizeof *defs), *def = NULL;
    if (defs) r->defs = defs;
    ag_status st;
    if (!defs)
        st = ag__error(AG_ERR_OUT_OF_MEMORY, "no memory to register op %d", r->n);
    else if (!op)
        st = ag__error(AG_ERR_INVALID_ARG, "op %d is NULL", r->n);
    else if (op->struct_size < OP_SIZE_1_0)
        st = ag__error(AG_ERR_INVALID_ARG,
                       "op %d has struct_size %zu, less than the %zu bytes of plugin ABI 1.0", r->n,
                       op->struct_size, (size_t)OP_SIZE_1_0);
    else
        st = ag__plugin_op_def_new(op, op->struct_size, &def);
    if (st != AG_OK) {
        r->status = st;
        snprintf(r->message, sizeof r->message, "%s", ag_last_error());
        return st;
    }
    r->defs[r->n++] = def;
    return AG_OK;
}

/* Static: a plugin keeps the pointer for host->error in its shape rules and backwards. */
static const ag_plugin_host host = {
    .struct_size = sizeof(ag_plugin_host),
    .abi_major = AG_PLUGIN_ABI_MAJOR,
    .abi_minor = AG_PLUGIN_ABI_MINOR,
    .version = AG_VERSION_STRING,
    .register_op = host_register_op,
    .error = host_error,
};

/* ---- loading one file ---- */

/* Finds the entry of an opened plugin and copies its checked info into *info. On failure
 * writes the reason into why. */
static ag_status read_info(void *handle, ag_plugin_info *info, char *why, size_t why_size) {
    ag_plugin_entry_fn entry = (ag_plugin_entry_fn)dlsym(handle, AG_PLUGIN_ENTRY_SYMBOL);
    if (!entry) {
        snprintf(why, why_size, "no symbol %s (not an ag plugin?)", AG_PLUGIN_ENTRY_SYMBOL);
        return AG_ERR_BACKEND_LOAD;
    }
    const ag_plugin_info *t = entry(AG_PLUGIN_ABI_MAJOR, AG_PLUGIN_ABI_MINOR);
    if (!t) {
        snprintf(why, why_size, "%s returned no info (it refuses plugin ABI %d.%d)",
                 AG_PLUGIN_ENTRY_SYMBOL, AG_PLUGIN_ABI_MAJOR, AG_PLUGIN_ABI_MINOR);
        return AG_ERR_BACKEND_LOAD;
    }
    /* abi_major is read only when struct_size covers it; another major may be smaller. */
    if (t->struct_size < INFO_HEADER ||
        (t->abi_major == AG_PLUGIN_ABI_MAJOR && t->struct_size < INFO_SIZE_1_0)) {
        snprintf(why, why_size,
                 "its info has struct_size %zu, less than the %zu bytes of plugin ABI %d.0",
                 t->struct_size, (size_t)INFO_SIZE_1_0, AG_PLUGIN_ABI_MAJOR);
        return AG_ERR_BACKEND_LOAD;
    }
    if (t->abi_major != AG_PLUGIN_ABI_MAJOR) {
        snprintf(why, why_size, "built for plugin ABI %u.%u, but this libag uses ABI %d.%d",
                 t->abi_major, t->abi_minor, AG_PLUGIN_ABI_MAJOR, AG_PLUGIN_ABI_MINOR);
        return AG_ERR_ABI;
    }
    memset(info, 0, sizeof *info);
    memcpy(info, t, t->struct_size < sizeof *info ? t->struct_size : sizeof *info);
    if (!info->name || !info->version || !info->init) {
        snprintf(why, why_size, "its info lacks a name, a version or an init function");
        return AG_ERR_BACKEND_LOAD;
    }
    return AG_OK;
}

/* Runs the plugin's init as the transaction r. On failure writes the reason into why: the
 * first refusal of an op if any (the root cause), else init's own error. */
static ag_status run_init(const ag_plugin_info *info, ag_plugin_registrar *r, char *why,
                          size_t why_size) {
    uint64_t errors = ag__errors_set();
    active = r;
    ag_status st = info->init(&host, r);
    active = NULL;
    if (r->status != AG_OK) {
        snprintf(why, why_size, "%s", r->message);
        return r->status;
    }
    if (st != AG_OK) {
        snprintf(why, why_size, "init failed with %s: %s", ag_status_name(st),
                 ag__errors_set() != errors ? ag_last_error() : "(no message)");
        return AG_ERR_BACKEND_LOAD;
    }
    return AG_OK;
}

/* Frees what a plugin owns, its (unregistered) ops included, and closes it. */
static void discard(ag_op_def **defs, int n, char *path, void *handle) {
    for (int k = 0; k < n; k++) ag__plugin_op_def_free(defs[k]);
    free(defs);
    free(path);
    dlclose(handle);
}

/* Room for one more table entry, and p's copy of its path. */
static bool make_room(plugin *p, const char *real) {
    plugin *grown = reserve(plugins, &capacity, count, sizeof *grown);
    if (!grown) return false;
    plugins = grown;
    return (p->path = ag__strdup(real)) != NULL;
}

/* The error of a refused plugin. */
static ag_status refused(const char *path, ag_status st, const char *why) {
    ag__log_debug("plugin %s refused: %s", path, why);
    return ag__error(st, "cannot load plugin %s: %s", path, why);
}

/* Loads one plugin file, all of its ops or nothing; the caller holds the lock. */
static ag_status load_locked(const char *path) {
    char real[PATH_MAX], why[2048];
    ag__log_debug("plugin %s: loading", path);
    if (!realpath(path, real))
        return refused(path, AG_ERR_BACKEND_LOAD,
                       errno == ENOENT ? "no such file" : strerror(errno));
    /* NODELETE, as for backends (docs/backends.md): runtimes a plugin links may not be
     * safe to unmap, even after a refusal. */
    void *handle = dlopen(real, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!handle) return refused(path, AG_ERR_BACKEND_LOAD, ag__dl_reason(real));
    for (int i = 0; i < count; i++)
        if (plugins[i].handle == handle) {
            dlclose(handle); /* the reference this dlopen added */
            ag__log_debug("plugin %s: loaded already from %s", path, plugins[i].path);
            return AG_OK;
        }
    plugin p = {.handle = handle};
    ag_plugin_registrar r = {0};
    ag_status st = read_info(handle, &p.info, why, sizeof why);
    if (st == AG_OK && !make_room(&p, real)) {
        snprintf(why, sizeof why, "out of host memory");
        st = AG_ERR_OUT_OF_MEMORY;
    }
    if (st == AG_OK) st = run_init(&p.info, &r, why, sizeof why);
    if (st == AG_OK && (st = ag__op_register_many(r.defs, r.n)) != AG_OK)
        snprintf(why, sizeof why, "%s", ag_last_error());
    if (st != AG_OK) {
        discard(r.defs, r.n, p.path, handle);
        return refused(path, st, why);
    }
    p.ops = r.defs;
    p.n_ops = r.n;
    plugins[count++] = p;
    ag__log_debug("plugin '%s' %s (ABI %u.%u) loaded from %s: %d op(s)", p.info.name,
                  p.info.version, p.info.abi_major, p.info.abi_minor, real, r.n);
    return AG_OK;
}

/* Public entry: refuses a nested load (from a plugin's init), else loads under the lock. */
ag_status ag_plugin_load(const char *path) {
    if (!path) return ag__error(AG_ERR_INVALID_ARG, "ag_plugin_load: NULL path");
    if (active)
        return ag__error(AG_ERR_INVALID_ARG, "cannot load plugin %s from a plugin's init", path);
    pthread_mutex_lock(&lock);
    ag_status st = load_locked(path);
    pthread_mutex_unlock(&lock);
    return st;
}

/* ---- AG_PLUGINS ---- */

/* Loads each plugin of the ':'-separated list, up to the first failure. */
static ag_status load_list_locked(const char *list) {
    char *copy = ag__strdup(list);
    if (!copy) return ag__error(AG_ERR_OUT_OF_MEMORY, "no memory to read AG_PLUGINS");
    ag_status st = AG_OK;
    char *save;
    for (char *path = strtok_r(copy, ":", &save); path && st == AG_OK;
         path = strtok_r(NULL, ":", &save))
        st = load_locked(path);
    free(copy);
    return st;
}

/* Loads AG_PLUGINS once; afterwards returns (and sets again) the kept result. */
ag_status ag__plugins_load_env(void) {
    /* Inside a plugin's init the lock is this thread's already: a later ag_init loads. */
    if (atomic_load(&env_state) != ENV_DONE && !active) {
        pthread_mutex_lock(&lock);
        if (atomic_load(&env_state) != ENV_DONE) {
            const char *env = getenv("AG_PLUGINS");
            env_status = env && env[0] ? load_list_locked(env) : AG_OK;
            if (env_status != AG_OK)
                snprintf(env_message, sizeof env_message, "AG_PLUGINS=%s: %s", env,
                         ag_last_error());
            atomic_store(&env_state, ENV_DONE);
        }
        pthread_mutex_unlock(&lock);
    }
    if (atomic_load(&env_state) != ENV_DONE || env_status == AG_OK) return AG_OK;
    return ag__error(env_status, "%s", env_message);
}

/* ---- the table ---- */

/* Number of loaded plugins. */
int ag_plugin_count(void) {
    pthread_mutex_lock(&lock);
    int n = count;
    pthread_mutex_unlock(&lock);
    return n;
}

/* Plugin i's name, file, version and op count (borrowed, valid until process end). */
ag_status ag_plugin_describe(int i, const char **name, const char **path, const char **version,
                             int *n_ops) {
    ag_status st = AG_OK;
    pthread_mutex_lock(&lock);
    if (i < 0 || i >= count) {
        st =
            ag__error(AG_ERR_INVALID_ARG, "ag_plugin_describe: no plugin %d (%d loaded)", i, count);
    } else {
        /* Every output is optional. */
        const plugin *p = &plugins[i];
        if (name) *name = p->info.name;
        if (path) *path = p->path;
        if (version) *version = p->info.version;
        if (n_ops) *n_ops = p->n_ops;
    }
    pthread_mutex_unlock(&lock);
    return st;
}

/* Name of op j of plugin i, NULL if out of range. */
const char *ag_plugin_op_name(int i, int j) {
    const char *name = NULL;
    pthread_mutex_lock(&lock);
    if (i >= 0 && i < count && j >= 0 && j < plugins[i].n_ops) name = plugins[i].ops[j]->name;
    pthread_mutex_unlock(&lock);
    return name;
}

/* Unregisters and frees every plugin's ops, closes the plugins, forgets AG_PLUGINS. */
void ag__plugins_shutdown(void) {
    pthread_mutex_lock(&lock);
    for (int i = count - 1; i >= 0; i--) {
        plugin *p = &plugins[i];
        ag__op_unregister_many(p->ops, p->n_ops);
        discard(p->ops, p->n_ops, p->path, p->handle);
    }
    free(plugins);
    plugins = NULL;
    count = capacity = 0;
    atomic_store(&env_state, ENV_NONE);
    pthread_mutex_unlock(&lock);
}
