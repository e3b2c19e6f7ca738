/* Thread-local error state, dtype/status names and debug logging. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static _Thread_local ag_status last_status;
static _Thread_local char last_message[4096];
static _Thread_local uint64_t errors_set; /* how many errors this thread has set */

/* The outermost composite op running on this thread (ag__context_enter), and how deep. */
static _Thread_local struct {
    const char *op;              /* its public name */
    int n;                       /* its tensor arguments */
    ag_tensor *const *arguments; /* borrowed for the duration of the call */
} context;
static _Thread_local int context_depth;

void ag__context_enter(const char *op, int n, ag_tensor *const *arguments) {
    if (context_depth++ == 0) {
        context.op = op;
        context.n = n;
        context.arguments = arguments;
    }
}

void ag__context_exit(void) {
    context_depth--;
}

/* "conv2d(float32[1, 3, 8, 8] on cpu:0, NULL): " into buf, unless message already starts
 * with "conv2d:" (the composite's own check); "" outside a composite op. */
static void context_prefix(const char *message, char *buf, size_t size) {
    buf[0] = '\0';
    size_t len = context_depth ? strlen(context.op) : 0;
    if (!len || (strncmp(message, context.op, len) == 0 && message[len] == ':')) return;
    size_t used = (size_t)snprintf(buf, size, "%s(", context.op);
    for (int i = 0; i < context.n && used < size; i++) {
        char what[200] = "NULL";
        if (context.arguments[i]) ag__describe(context.arguments[i], what, sizeof what);
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", what);
    }
    if (used < size) snprintf(buf + used, size - used, "): ");
}

static ag_status set_error(bool replace, ag_status status, const char *fmt, va_list ap) {
    if (last_status != AG_OK && !replace) return last_status;
    last_status = status;
    errors_set++;
    char message[sizeof last_message], prefix[1024];
    vsnprintf(message, sizeof message, fmt, ap);
    context_prefix(message, prefix, sizeof prefix);
    snprintf(last_message, sizeof last_message, "%s%s", prefix, message);
    ag__log_debug("error %s: %s", ag_status_name(status), last_message);
    return status;
}

ag_status ag__error(ag_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_error(true, status, fmt, ap);
    va_end(ap);
    return status;
}

ag_status ag__error_if_none(ag_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    status = set_error(false, status, fmt, ap);
    va_end(ap);
    return status;
}

uint64_t ag__errors_set(void) {
    return errors_set;
}

const char *ag_last_error(void) {
    return last_status == AG_OK ? "" : last_message;
}

ag_status ag_last_status(void) {
    return last_status;
}

void ag_clear_error(void) {
    last_status = AG_OK;
    last_message[0] = '\0';
}

char *ag__shape_fmt(char *buf, size_t size, int ndim, const int64_t *shape) {
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < ndim && used < size; d++)
        used +=
            (size_t)snprintf(buf + used, size - used, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (used < size) snprintf(buf + used, size - used, "]");
    return buf;
}

void ag__log_debug(const char *fmt, ...) {
    /* AG_LOG is read once: logging must cost one branch when off. Atomic: the first errors
     * may come from several threads at once. */
    static int enabled = -1;
    int on = __atomic_load_n(&enabled, __ATOMIC_RELAXED);
    if (on < 0) {
        const char *env = getenv("AG_LOG");
        on = env && strcmp(env, "debug") == 0;
        __atomic_store_n(&enabled, on, __ATOMIC_RELAXED);
    }
    if (!on) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[ag debug] ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

const char *ag_status_name(ag_status status) {
    static const char *const names[] = {
        "AG_OK",         "AG_ERR_INVALID_ARG",   "AG_ERR_SHAPE",         "AG_ERR_DTYPE",
        "AG_ERR_DEVICE", "AG_ERR_UNSUPPORTED",   "AG_ERR_OUT_OF_MEMORY", "AG_ERR_BACKEND_LOAD",
        "AG_ERR_ABI",    "AG_ERR_GRAPH_FREED",   "AG_ERR_INPLACE",       "AG_ERR_NO_GRAD",
        "AG_ERR_INDEX",  "AG_ERR_UNIMPLEMENTED", "AG_ERR_INTERNAL",      "AG_ERR_GRADCHECK",
        "AG_ERR_IO",     "AG_ERR_ANOMALY",
    };
    if ((unsigned)status < sizeof names / sizeof names[0]) return names[status];
    return "AG_ERR_UNKNOWN";
}
