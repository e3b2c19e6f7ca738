/* Backend loader: finds libag_backend_<name>.so on the search path, checks its ABI, stubs
 * the slots it left empty, and keeps the process's backend table and default device.
 * See docs/backends.md for the rules this file implements. */
#define _GNU_SOURCE /* dladdr, strchrnul */
#include <assert.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "backend_loader.h"

/* AG_INSTALL_LIBDIR, the installed backends' directory, comes from core/CMakeLists.txt
 * (no #error guard here: cppcheck skips a file whose default configuration has one). */

#define FILE_PREFIX "libag_backend_"
#define FILE_SUFFIX ".so"

enum {
    PROBE_SLOT = AG_MAX_BACKENDS, /* table entry used by ag__backend_probe */
    NAME_MAX_LEN = 63,            /* longest backend name */
};

/* Bytes before the first function slot; a table shorter than this is not a table. */
#define HEADER_SIZE offsetof(ag_backend_iface, init)
/* Every slot is a pointer of this size (checked below for the last one); all are function
 * pointers but source_language, a string that stays NULL when absent. */
#define SLOT_SIZE sizeof(void (*)(void))

/* Every function slot of ag_backend_iface, in order. */
#define SLOTS(X)                                                                                   \
    X(init)                                                                                        \
    X(shutdown)                                                                                    \
    X(last_error)                                                                                  \
    X(device_count)                                                                                \
    X(device_info)                                                                                 \
    X(alloc)                                                                                       \
    X(free)                                                                                        \
    X(copy_from_host)                                                                              \
    X(copy_to_host)                                                                                \
    X(copy_device)                                                                                 \
    X(synchronize)                                                                                 \
    X(get_kernel)                                                                                  \
    X(memory_stats)                                                                                \
    X(empty_cache)                                                                                 \
    X(get_proc_address)                                                                            \
    X(build_source)                                                                                \
    X(launch_source)

_Static_assert(sizeof(ag_backend_iface) == offsetof(ag_backend_iface, launch_source) + SLOT_SIZE,
               "a slot was appended to ag_backend_iface: add it to SLOTS and DEFINE_STUBS");

/* The table: entries [0, count) are loaded backends, published by incrementing count
 * after the entry is complete, so readers need no lock. Entry PROBE_SLOT holds a probe. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static ag_backend table[AG_MAX_BACKENDS + 1];
static char names[AG_MAX_BACKENDS + 1][NAME_MAX_LEN + 1]; /* outlive dlclose, unlike iface.name */
static atomic_int count;

enum { PROBE_NONE, PROBE_OWNED, PROBE_ALIAS };
static int probe_state; /* guarded by lock */

enum { INIT_NONE, INIT_OK, INIT_FAILED };
static atomic_int init_state;
static ag_status init_status;   /* guarded by lock, like the two below */
static char init_message[1024]; /* the failure, set again on every later ag_init */
static ag_device process_default;

static _Thread_local bool has_override;
static _Thread_local ag_device override_device;

/* ---- stubs for empty slots ---- */

/* The core reads a failed call's message from the backend's last_error(), which knows
 * nothing of stubs. So last_error is always wrapped: after a stub failed, the next call of
 * it on that thread returns the stub's message, and otherwise the backend's own. */
static _Thread_local char stub_messages[AG_MAX_BACKENDS + 1][128];
static _Thread_local bool stub_pending[AG_MAX_BACKENDS + 1];
static const char *(*own_last_error[AG_MAX_BACKENDS + 1])(void);

/* Reports that the backend of table entry `slot` lacks `fn`; returns AG_ERR_UNIMPLEMENTED. */
static ag_status unimplemented(int slot, const char *fn) {
    snprintf(stub_messages[slot], sizeof stub_messages[slot], "backend '%s' does not implement %s",
             names[slot], fn);
    stub_pending[slot] = true;
    return ag__error(AG_ERR_UNIMPLEMENTED, "%s", stub_messages[slot]);
}

/* last_error of table entry `slot`, as described above. */
static const char *wrapped_last_error(int slot) {
    if (stub_pending[slot]) {
        stub_pending[slot] = false;
        return stub_messages[slot];
    }
    return own_last_error[slot] ? own_last_error[slot]() : "";
}

/* Slots a backend may leave empty without an error: nothing to set up, nothing to tear
 * down, no extras. */
static ag_status stub_init(void) {
    return AG_OK;
}
static void stub_shutdown(void) {}
static void *stub_get_proc_address(const char *name) {
    (void)name;
    return NULL;
}

/* The ABI passes no context to a slot, so a stub can only name its backend if each table
 * entry has its own set of stubs. free returns nothing and runs on release paths, where
 * an error would be blamed on the wrong call: it only logs. */
#define DEFINE_STUBS(s)                                                                            \
    static const char *last_error_##s(void) {                                                      \
        return wrapped_last_error(s);                                                              \
    }                                                                                              \
    static int device_count_##s(void) {                                                            \
        unimplemented(s, "device_count");                                                          \
        return 0;                                                                                  \
    }                                                                                              \
    static ag_status device_info_##s(int device, ag_device_info *info) {                           \
        (void)device, (void)info;                                                                  \
        return unimplemented(s, "device_info");                                                    \
    }                                                                                              \
    static ag_status alloc_##s(int device, size_t bytes, void **out) {                             \
        (void)device, (void)bytes, (void)out;                                                      \
        return unimplemented(s, "alloc");                                                          \
    }                                                                                              \
    static void free_##s(int device, void *buffer, size_t bytes) {                                 \
        (void)device, (void)buffer, (void)bytes;                                                   \
        ag__log_debug("backend '%s' does not implement free", names[s]);                           \
    }                                                                                              \
    static ag_status copy_from_host_##s(int device, void *dst, size_t dst_offset, const void *src, \
                                        size_t bytes) {                                            \
        (void)device, (void)dst, (void)dst_offset, (void)src, (void)bytes;                         \
        return unimplemented(s, "copy_from_host");                                                 \
    }                                                                                              \
    static ag_status copy_to_host_##s(int device, void *dst, const void *src, size_t src_offset,   \
                                      size_t bytes) {                                              \
        (void)device, (void)dst, (void)src, (void)src_offset, (void)bytes;                         \
        return unimplemented(s, "copy_to_host");                                                   \
    }                                                                                              \
    static ag_status copy_device_##s(int device, void *dst, size_t dst_offset, const void *src,    \
                                     size_t src_offset, size_t bytes) {                            \
        (void)device, (void)dst, (void)dst_offset, (void)src, (void)src_offset, (void)bytes;       \
        return unimplemented(s, "copy_device");                                                    \
    }                                                                                              \
    static ag_status synchronize_##s(int device) {                                                 \
        (void)device;                                                                              \
        return unimplemented(s, "synchronize");                                                    \
    }                                                                                              \
    static ag_status get_kernel_##s(const char *kernel, ag_dtype dtype, ag_kernel_fn *out) {       \
        (void)kernel, (void)dtype, (void)out;                                                      \
        return unimplemented(s, "get_kernel");                                                     \
    }                                                                                              \
    static ag_status memory_stats_##s(int device, ag_memory_stats *stats) {                        \
        (void)device, (void)stats;                                                                 \
        return unimplemented(s, "memory_stats");                                                   \
    }                                                                                              \
    static ag_status empty_cache_##s(int device) {                                                 \
        (void)device;                                                                              \
        return unimplemented(s, "empty_cache");                                                    \
    }                                                                                              \
    static ag_status build_source_##s(const char *source, const char *entry, void **out) {         \
        (void)source, (void)entry, (void)out;                                                      \
        return unimplemented(s, "build_source");                                                   \
    }                                                                                              \
    static ag_status launch_source_##s(void *kernel, const ag_kernel_args *args, int n_sizes,      \
                                       const int64_t *sizes, int64_t work_items) {                 \
        (void)kernel, (void)args, (void)n_sizes, (void)sizes, (void)work_items;                    \
        return unimplemented(s, "launch_source");                                                  \
    }                                                                                              \
    static const ag_backend_iface stubs_##s = {                                                    \
        .init = stub_init,                                                                         \
        .shutdown = stub_shutdown,                                                                 \
        .last_error = last_error_##s,                                                              \
        .device_count = device_count_##s,                                                          \
        .device_info = device_info_##s,                                                            \
        .alloc = alloc_##s,                                                                        \
        .free = free_##s,                                                                          \
        .copy_from_host = copy_from_host_##s,                                                      \
        .copy_to_host = copy_to_host_##s,                                                          \
        .copy_device = copy_device_##s,                                                            \
        .synchronize = synchronize_##s,                                                            \
        .get_kernel = get_kernel_##s,                                                              \
        .memory_stats = memory_stats_##s,                                                          \
        .empty_cache = empty_cache_##s,                                                            \
        .get_proc_address = stub_get_proc_address,                                                 \
        .build_source = build_source_##s,                                                          \
        .launch_source = launch_source_##s,                                                        \
    };

_Static_assert(AG_MAX_BACKENDS == 8, "one DEFINE_STUBS per table entry and one for the probe");
DEFINE_STUBS(0)
DEFINE_STUBS(1)
DEFINE_STUBS(2)
DEFINE_STUBS(3)
DEFINE_STUBS(4)
DEFINE_STUBS(5)
DEFINE_STUBS(6)
DEFINE_STUBS(7)
DEFINE_STUBS(8)

static const ag_backend_iface *const stubs[AG_MAX_BACKENDS + 1] = {
    &stubs_0, &stubs_1, &stubs_2, &stubs_3, &stubs_4, &stubs_5, &stubs_6, &stubs_7, &stubs_8,
};

/* Wraps last_error and replaces every NULL slot of entry `slot` by its stub. */
static void fill_stubs(ag_backend_iface *iface, int slot) {
    own_last_error[slot] = iface->last_error;
    stub_pending[slot] = false;
    iface->last_error = stubs[slot]->last_error;
    if (!own_last_error[slot]) ag__log_debug("backend '%s': no last_error", names[slot]);
#define FILL(f)                                                                                    \
    if (!iface->f) {                                                                               \
        iface->f = stubs[slot]->f;                                                                 \
        ag__log_debug("backend '%s': slot %s is empty, stubbed", names[slot], #f);                 \
    }
    SLOTS(FILL)
#undef FILL
}

/* ---- search path ---- */

/* Next non-empty segment of the ':'-separated list at *p: returns its start (NULL at the
 * end) and length, and advances *p past it. */
static const char *next_segment(const char **p, size_t *len) {
    while (**p == ':') (*p)++;
    if (!**p) return NULL;
    const char *start = *p;
    *p = strchrnul(start, ':');
    *len = (size_t)(*p - start);
    return start;
}

/* Appends dir (len bytes) to the list unless it is there already: a directory searched
 * twice would only make the failure message longer. */
static void add_dir(char *list, const char *dir, size_t len) {
    const char *p = list, *seg;
    size_t n;
    while ((seg = next_segment(&p, &n)))
        if (n == len && memcmp(seg, dir, len) == 0) return;
    size_t used = strlen(list);
    if (used) list[used++] = ':';
    memcpy(list + used, dir, len);
    list[used + len] = '\0';
}

/* Directory holding libag.so itself, found through the address of one of its objects. */
static bool libag_dir(char *out, size_t size) {
    static const char anchor;
    Dl_info info;
    char real[PATH_MAX];
    if (!dladdr(&anchor, &info) || !info.dli_fname) return false;
    const char *file = realpath(info.dli_fname, real) ? real : info.dli_fname;
    const char *slash = strrchr(file, '/');
    if (!slash) return false;
    int len = slash == file ? 1 : (int)(slash - file); /* keep "/" for a library in / */
    return snprintf(out, size, "%.*s", len, file) < (int)size;
}

/* The search path as a malloc'd ':'-separated list (NULL when out of memory). */
static char *search_dirs_new(void) {
    const char *env = getenv("AG_BACKEND_PATH");
    char self[PATH_MAX] = "", self_ag[PATH_MAX + 4] = "";
    /* libag's directory (the build tree), then its ag/ subdirectory: an install tree moved
     * or installed with another --prefix still finds its own backends. */
    if (libag_dir(self, sizeof self)) snprintf(self_ag, sizeof self_ag, "%s/ag", self);
    char *list =
        ag__calloc((env ? strlen(env) : 0) + 2 * strlen(self) + sizeof AG_INSTALL_LIBDIR + 8, 1);
    if (!list) return NULL;
    const char *p = env ? env : "", *seg;
    size_t n;
    while ((seg = next_segment(&p, &n))) add_dir(list, seg, n);
    if (self[0]) add_dir(list, self, strlen(self));
    if (self_ag[0]) add_dir(list, self_ag, strlen(self_ag));
    add_dir(list, AG_INSTALL_LIBDIR, strlen(AG_INSTALL_LIBDIR));
    return list;
}

ag_status ag__backend_search_dirs(char *buf, size_t size) {
    if (!buf || !size) return ag__error(AG_ERR_INVALID_ARG, "no buffer for search dirs");
    char *list = search_dirs_new();
    if (!list) return ag__error(AG_ERR_OUT_OF_MEMORY, "no memory for search dirs");
    size_t len = strlen(list);
    ag_status st = AG_OK;
    if (len < size)
        memcpy(buf, list, len + 1);
    else {
        buf[0] = '\0';
        st = ag__error(AG_ERR_INVALID_ARG, "search dirs need %zu bytes, buffer has %zu", len + 1,
                       size);
    }
    free(list);
    return st;
}

/* ---- loading one file ---- */

static bool valid_name(const char *name) {
    size_t n = strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_");
    return n > 0 && n <= NAME_MAX_LEN && name[n] == '\0';
}

static ag_status invalid_name(const char *name) {
    return ag__error(AG_ERR_INVALID_ARG,
                     "invalid backend name '%s': use 1 to %d of a-z, 0-9 and '_'", name,
                     NAME_MAX_LEN);
}

/* dlerror's text without the leading "<path>: ", which the caller's message already has. */
const char *ag__dl_reason(const char *path) {
    const char *msg = dlerror();
    size_t len = strlen(path);
    if (!msg) return "unknown dlopen error";
    if (strncmp(msg, path, len) == 0 && msg[len] == ':' && msg[len + 1] == ' ') msg += len + 2;
    return msg;
}

/* Bytes of a backend's table to copy: the header plus the slots that fit whole in both its
 * struct_size and ours (a torn function pointer would be a wild call). */
static size_t copy_size(size_t struct_size) {
    size_t n = struct_size < sizeof(ag_backend_iface) ? struct_size : sizeof(ag_backend_iface);
    return HEADER_SIZE + (n - HEADER_SIZE) / SLOT_SIZE * SLOT_SIZE;
}

/* Checks the table of an opened library and brings the backend up in *be (entry `slot`).
 * On failure writes the reason into why. */
static ag_status adopt_table(void *handle, const char *name, int slot, ag_backend *be, char *why,
                             size_t why_size) {
    ag_backend_entry_fn entry = (ag_backend_entry_fn)dlsym(handle, AG_BACKEND_ENTRY_SYMBOL);
    if (!entry) {
        snprintf(why, why_size, "no symbol %s (not an ag backend?)", AG_BACKEND_ENTRY_SYMBOL);
        return AG_ERR_BACKEND_LOAD;
    }
    const ag_backend_iface *t = entry(AG_BACKEND_ABI_MAJOR, AG_BACKEND_ABI_MINOR);
    if (!t) {
        snprintf(why, why_size, "%s returned no table (it refuses backend ABI %d.%d)",
                 AG_BACKEND_ENTRY_SYMBOL, AG_BACKEND_ABI_MAJOR, AG_BACKEND_ABI_MINOR);
        return AG_ERR_BACKEND_LOAD;
    }
    if (t->struct_size < HEADER_SIZE) {
        snprintf(why, why_size, "its table has struct_size %zu, less than the %zu-byte header",
                 t->struct_size, (size_t)HEADER_SIZE);
        return AG_ERR_BACKEND_LOAD;
    }
    ag__log_debug("backend '%s': table of %zu bytes, ABI %u.%u", name, t->struct_size, t->abi_major,
                  t->abi_minor);
    if (t->abi_major != AG_BACKEND_ABI_MAJOR) {
        snprintf(why, why_size, "built for backend ABI %u.%u, but this libag uses ABI %d.%d",
                 t->abi_major, t->abi_minor, AG_BACKEND_ABI_MAJOR, AG_BACKEND_ABI_MINOR);
        return AG_ERR_ABI;
    }
    if (!t->name || strcmp(t->name, name) != 0) {
        snprintf(why, why_size, "its table names the backend '%s', not '%s'",
                 t->name ? t->name : "(null)", name);
        return AG_ERR_BACKEND_LOAD;
    }
    memset(&be->iface, 0, sizeof be->iface);
    memcpy(&be->iface, t, copy_size(t->struct_size));
    snprintf(names[slot], sizeof names[slot], "%s", name);
    be->iface.name = names[slot];
    fill_stubs(&be->iface, slot);
    ag_status st = be->iface.init();
    if (st != AG_OK) {
        snprintf(why, why_size, "init failed with %s: %s", ag_status_name(st),
                 be->iface.last_error());
        return AG_ERR_BACKEND_LOAD;
    }
    be->host_memory = be->iface.get_proc_address("ag_host_memory") != NULL;
    ag__log_debug("backend '%s': init done, %d device(s)%s", name, be->iface.device_count(),
                  be->host_memory ? ", host memory" : "");
    return AG_OK;
}

/* Opens and checks one candidate file into table entry `slot`. On failure writes the
 * reason into why and leaves the entry and the process as they were. */
static ag_status try_file(const char *path, const char *name, int slot, char *why,
                          size_t why_size) {
    ag_backend *be = &table[slot];
    ag__log_debug("backend '%s': trying %s", name, path);
    if (strlen(path) >= sizeof be->path) {
        snprintf(why, why_size, "path longer than %zu bytes", sizeof be->path - 1);
        return AG_ERR_BACKEND_LOAD;
    }
    if (access(path, F_OK) != 0) {
        snprintf(why, why_size, "%s", errno == ENOENT ? "no such file" : strerror(errno));
        return AG_ERR_BACKEND_LOAD;
    }
    /* NODELETE: dlclose must not unmap a backend, because runtimes it links are not safe
     * to unload (libgomp's idle pool threads would run unmapped code; LeakSanitizer
     * reports libgomp's start-up allocation as leaked once it is unmapped). */
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!handle) {
        snprintf(why, why_size, "%s", ag__dl_reason(path));
        return AG_ERR_BACKEND_LOAD;
    }
    ag_status st = adopt_table(handle, name, slot, be, why, why_size);
    if (st != AG_OK) {
        dlclose(handle);
        memset(be, 0, sizeof *be);
        names[slot][0] = '\0';
        ag__log_debug("backend '%s': %s: %s", name, path, why);
        return st;
    }
    be->handle = handle;
    snprintf(be->path, sizeof be->path, "%s", path);
    return AG_OK;
}

/* Shuts down and unloads table entry `slot`. */
static void unload(int slot) {
    table[slot].iface.shutdown();
    dlclose(table[slot].handle);
    memset(&table[slot], 0, sizeof table[slot]);
    names[slot][0] = '\0';
}

/* ---- the table ---- */

/* Appends printf-style text to buf (size bytes) at *used, truncating at the end. */
static void append(char *buf, size_t size, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void append(char *buf, size_t size, size_t *used, const char *fmt, ...) {
    if (*used >= size) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *used, size - *used, fmt, ap);
    va_end(ap);
    if (n > 0) *used += (size_t)n;
}

static ag_status load_locked(const char *name, int *index) {
    if (!valid_name(name)) return invalid_name(name);
    int n = atomic_load(&count);
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0) {
            *index = i;
            return AG_OK;
        }
    if (n == AG_MAX_BACKENDS)
        return ag__error(AG_ERR_BACKEND_LOAD,
                         "cannot load backend '%s': %d backends are loaded already, the "
                         "most one process can hold",
                         name, n);
    char *dirs = search_dirs_new();
    if (!dirs) return ag__error(AG_ERR_OUT_OF_MEMORY, "no memory to load '%s'", name);
    char tried[2048] = "", path[sizeof table[0].path], why[512];
    size_t used = 0, len;
    ag_status worst = AG_ERR_BACKEND_LOAD;
    bool all_missing = true;
    const char *p = dirs, *dir;
    while ((dir = next_segment(&p, &len))) {
        int plen =
            snprintf(path, sizeof path, "%.*s/" FILE_PREFIX "%s" FILE_SUFFIX, (int)len, dir, name);
        ag_status st = AG_ERR_BACKEND_LOAD;
        if (plen >= (int)sizeof path)
            snprintf(why, sizeof why, "path too long");
        else if ((st = try_file(path, name, n, why, sizeof why)) == AG_OK) {
            free(dirs);
            atomic_store(&count, n + 1); /* publishes the complete entry */
            ag__log_debug("backend '%s' loaded from %s as backend %d", name, path, n);
            *index = n;
            return AG_OK;
        }
        if (st == AG_ERR_ABI) worst = AG_ERR_ABI;
        if (strcmp(why, "no such file") != 0) all_missing = false;
        append(tried, sizeof tried, &used, "%s%s: %s", used ? "; " : "", path, why);
    }
    free(dirs);
    return ag__error(worst, "cannot load backend '%s': %s%s", name, tried,
                     all_missing ? " (AG_BACKEND_PATH adds directories to search)" : "");
}

const ag_backend *ag__backend(int index) {
    assert(index >= 0 && index < atomic_load(&count));
    return &table[index];
}

ag_status ag__backend_load(const char *name, int *index) {
    if (!name || !index) return ag__error(AG_ERR_INVALID_ARG, "ag_backend_load: NULL");
    pthread_mutex_lock(&lock);
    ag_status st = load_locked(name, index);
    pthread_mutex_unlock(&lock);
    return st;
}

ag_status ag_backend_load(const char *name, int *backend) {
    return ag__backend_load(name, backend);
}

int ag_backend_count(void) {
    return atomic_load(&count);
}

const char *ag_backend_name(int backend) {
    return backend >= 0 && backend < atomic_load(&count) ? names[backend] : NULL;
}

/* ---- probing files (ag info) ---- */

static const ag_backend *probe_locked(const char *path) {
    if (probe_state != PROBE_NONE) {
        ag__error(AG_ERR_INVALID_ARG, "cannot probe %s: another probe is open", path);
        return NULL;
    }
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    size_t pre = strlen(FILE_PREFIX), suf = strlen(FILE_SUFFIX), len = strlen(base);
    char name[NAME_MAX_LEN + 1];
    if (len <= pre + suf || len - pre - suf > NAME_MAX_LEN ||
        strncmp(base, FILE_PREFIX, pre) != 0 || strcmp(base + len - suf, FILE_SUFFIX) != 0) {
        ag__error(AG_ERR_INVALID_ARG, "cannot probe %s: not named %s<name>%s", path, FILE_PREFIX,
                  FILE_SUFFIX);
        return NULL;
    }
    snprintf(name, sizeof name, "%.*s", (int)(len - pre - suf), base + pre);
    if (!valid_name(name)) {
        invalid_name(name);
        return NULL;
    }
    /* A file already in the table must not be initialised a second time. */
    void *loaded = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (loaded) {
        const ag_backend *alias = NULL;
        for (int i = 0; i < atomic_load(&count); i++)
            if (table[i].handle == loaded) alias = &table[i];
        dlclose(loaded);
        if (alias) {
            probe_state = PROBE_ALIAS;
            return alias;
        }
    }
    char why[512];
    ag_status st = try_file(path, name, PROBE_SLOT, why, sizeof why);
    if (st != AG_OK) {
        ag__error(st, "cannot load backend '%s' from %s: %s", name, path, why);
        return NULL;
    }
    probe_state = PROBE_OWNED;
    return &table[PROBE_SLOT];
}

const ag_backend *ag__backend_probe(const char *path) {
    if (!path) {
        ag__error(AG_ERR_INVALID_ARG, "ag__backend_probe: NULL path");
        return NULL;
    }
    pthread_mutex_lock(&lock);
    const ag_backend *be = probe_locked(path);
    pthread_mutex_unlock(&lock);
    return be;
}

static void probe_close_locked(void) {
    if (probe_state == PROBE_OWNED) unload(PROBE_SLOT);
    probe_state = PROBE_NONE;
}

void ag__backend_probe_close(void) {
    pthread_mutex_lock(&lock);
    probe_close_locked();
    pthread_mutex_unlock(&lock);
}

void ag__backends_shutdown(void) {
    pthread_mutex_lock(&lock);
    probe_close_locked();
    for (int i = atomic_load(&count) - 1; i >= 0; i--) unload(i);
    atomic_store(&count, 0);
    atomic_store(&init_state, INIT_NONE);
    pthread_mutex_unlock(&lock);
}

/* ---- devices ---- */

/* Parses "<name>[:<index>]", loads the backend and checks the device exists. */
static ag_status parse_locked(const char *spec, ag_device *device) {
    const char *colon = strchr(spec, ':');
    size_t len = colon ? (size_t)(colon - spec) : strlen(spec);
    long index = 0;
    if (colon) {
        char *end;
        errno = 0;
        index = strtol(colon + 1, &end, 10);
        if (colon[1] < '0' || colon[1] > '9' || *end || errno || index > INT_MAX) len = 0;
    }
    if (len == 0 || len > NAME_MAX_LEN)
        return ag__error(AG_ERR_INVALID_ARG,
                         "invalid device '%s': expected <backend>[:<index>], e.g. cpu "
                         "or cuda:1",
                         spec);
    char name[NAME_MAX_LEN + 1];
    snprintf(name, sizeof name, "%.*s", (int)len, spec);
    int backend;
    ag_status st = load_locked(name, &backend);
    if (st != AG_OK) return st;
    int n = table[backend].iface.device_count();
    if (index >= n)
        return ag__error(AG_ERR_DEVICE, "no device %s:%ld: backend '%s' has %d device(s)", name,
                         index, name, n);
    device->backend = backend;
    device->index = (int)index;
    return AG_OK;
}

ag_status ag_device_parse(const char *spec, ag_device *device) {
    if (!spec || !device) return ag__error(AG_ERR_INVALID_ARG, "ag_device_parse: NULL");
    pthread_mutex_lock(&lock);
    ag_status st = parse_locked(spec, device);
    pthread_mutex_unlock(&lock);
    return st;
}

ag_status ag_init(void) {
    if (atomic_load(&init_state) == INIT_OK) return ag__plugins_load_env();
    pthread_mutex_lock(&lock);
    if (atomic_load(&init_state) == INIT_NONE) {
        ag__anomaly_read_env();
        const char *env = getenv("AG_BACKEND");
        bool unset = !env || !env[0];
        init_status = parse_locked(unset ? "cpu" : env, &process_default);
        if (init_status != AG_OK)
            snprintf(init_message, sizeof init_message, "%s%s: %s",
                     unset ? "AG_BACKEND unset, so cpu" : "AG_BACKEND=", unset ? "" : env,
                     ag_last_error());
        else
            ag__log_debug("default device %s:%d", names[process_default.backend],
                          process_default.index);
        atomic_store(&init_state, init_status == AG_OK ? INIT_OK : INIT_FAILED);
    }
    ag_status st = init_status;
    if (st != AG_OK) ag__error(st, "%s", init_message);
    pthread_mutex_unlock(&lock);
    return st == AG_OK ? ag__plugins_load_env() : st;
}

ag_device ag_default_device(void) {
    if (has_override) return override_device;
    if (ag_init() != AG_OK) return (ag_device){-1, -1};
    return process_default;
}

void ag_set_default_device(ag_device device) {
    has_override = device.backend >= 0; /* a negative backend drops the override */
    override_device = device;
}

void ag_device_str(ag_device device, char *buf, size_t size) {
    if (!buf || !size) return;
    const char *name = ag_backend_name(device.backend);
    if (name)
        snprintf(buf, size, "%s:%d", name, device.index);
    else
        snprintf(buf, size, "<no backend %d>:%d", device.backend, device.index);
}

ag_status ag_synchronize(ag_device device) {
    const char *name = ag_backend_name(device.backend);
    if (!name || device.index < 0 || device.index >= table[device.backend].iface.device_count()) {
        char buf[96];
        ag_device_str(device, buf, sizeof buf);
        return ag__error(AG_ERR_DEVICE, "ag_synchronize: no device %s", buf);
    }
    const ag_backend_iface *be = &table[device.backend].iface;
    ag_status st = be->synchronize(device.index);
    if (st != AG_OK)
        return ag__error(st, "synchronize on %s:%d failed: %s", name, device.index,
                         be->last_error());
    return AG_OK;
}
