/* Thread-local error state, dtype/status names and debug logging. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static _Thread_local ag_status last_status;
static _Thread_local char last_message[4096];
static _Thread_local uint64_t errors_set; /* how many errors this thread has set */

static ag_status set_error(bool replace, ag_status status, const char *fmt, va_list ap) {
    if (last_status != AG_OK && !replace) return last_status;
    last_status = status;
    errors_set++;
    vsnprintf(last_message, sizeof last_message, fmt, ap);
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
    /* AG_LOG is read once: logging must cost one branch when off. */
    static int enabled = -1;
    if (enabled < 0) {
        const char *env = getenv("AG_LOG");
        enabled = env && strcmp(env, "debug") == 0;
    }
    if (!enabled) return;
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
