/* Chrome-trace recording of op timings (ag_trace_start / ag_trace_stop).
 *
 * While tracing, ag__dispatch and the backward engine time every op and append an event to
 * one mutex-protected growable array; ag_trace_stop writes them as Chrome trace JSON
 * ("traceEvents" of "ph": "X" complete events), which Perfetto and chrome://tracing open.
 * Lanes: one process per backend (pid = backend index + 1, named after the backend), one
 * thread per host thread that ran ops. When not tracing an op pays one relaxed atomic load
 * (ag__trace_begin in internal.h). Times are host-side: device backends only enqueue work,
 * so an op's duration is its enqueue time unless AG_TRACE_SYNC=1, which makes the tracer
 * wait for the device (ag_synchronize) before it stops each op's clock. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cjson/cJSON.h>
#include "internal.h"

int ag__trace_on;

/* One recorded op. */
typedef struct trace_event {
    char name[80];     /* op name, "<op> backward" for backward functions */
    char inputs[200];  /* input shapes ("[2, 3], [3]"), cut short for many inputs */
    bool backward;     /* category "backward" (else "forward") */
    ag_device device;  /* where the op ran */
    int tid;           /* host thread number (1, 2, ...) */
    uint64_t start_ns; /* host clock at the op's start */
    uint64_t dur_ns;   /* its duration */
} trace_event;

/* The trace being recorded; every field is guarded by `lock`. */
static struct {
    pthread_mutex_t lock; /* ops may run on several threads */
    trace_event *events;  /* recorded events */
    size_t count;         /* used entries of events */
    size_t capacity;      /* allocated entries of events */
    size_t dropped;       /* events lost to a failed allocation */
    char *path;           /* where ag_trace_stop writes */
    uint64_t origin_ns;   /* host clock at ag_trace_start (trace time 0) */
    bool sync_each;       /* AG_TRACE_SYNC=1: synchronize the device after each op */
} trace = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int next_tid;                 /* atomic: last thread number handed out */
static _Thread_local int thread_tid; /* this thread's number, 0 until its first event */

uint64_t ag__trace_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* +1 keeps a clock reading apart from ag__trace_begin's "not tracing" 0. */
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + 1;
}

void ag__trace_end(uint64_t start, const char *name, bool backward, ag_device device, int n,
                   ag_tensor *const *inputs) {
    if (!start) return;
    if (__atomic_load_n(&trace.sync_each, __ATOMIC_RELAXED)) ag_synchronize(device);
    trace_event ev = {.backward = backward, .device = device, .start_ns = start};
    ev.dur_ns = ag__trace_clock() - start;
    snprintf(ev.name, sizeof ev.name, "%s%s", name, backward ? " backward" : "");
    size_t used = 0;
    for (int i = 0; i < n && used + 1 < sizeof ev.inputs; i++) {
        char shape[160];
        ag__shape_fmt(shape, sizeof shape, inputs[i]->ndim, inputs[i]->shape);
        int w = snprintf(ev.inputs + used, sizeof ev.inputs - used, "%s%s", i ? ", " : "", shape);
        used += w > 0 ? (size_t)w : 0;
    }
    if (!thread_tid) thread_tid = __atomic_add_fetch(&next_tid, 1, __ATOMIC_RELAXED);
    ev.tid = thread_tid;
    pthread_mutex_lock(&trace.lock);
    /* An op that began before ag_trace_start, or ends after ag_trace_stop, is left out. */
    if (ag__trace_on && start >= trace.origin_ns) {
        if (trace.count == trace.capacity) {
            size_t cap = trace.capacity ? trace.capacity * 2 : 1024;
            trace_event *grown = ag__realloc(trace.events, cap * sizeof *grown);
            if (grown) {
                trace.events = grown;
                trace.capacity = cap;
            }
        }
        if (trace.count < trace.capacity)
            trace.events[trace.count++] = ev;
        else
            trace.dropped++;
    }
    pthread_mutex_unlock(&trace.lock);
}

ag_status ag_trace_start(const char *path) {
    if (!path || !*path) return ag__error(AG_ERR_INVALID_ARG, "ag_trace_start: no file name");
    char *copy = ag__strdup(path);
    if (!copy) return ag__error(AG_ERR_OUT_OF_MEMORY, "ag_trace_start: out of host memory");
    const char *sync = getenv("AG_TRACE_SYNC");
    pthread_mutex_lock(&trace.lock);
    ag_status st = AG_OK;
    if (ag__trace_on) {
        st = ag__error(AG_ERR_INVALID_ARG,
                       "ag_trace_start: already tracing to %s (call ag_trace_stop first)",
                       trace.path);
        free(copy);
    } else {
        trace.path = copy;
        trace.count = trace.dropped = 0;
        trace.origin_ns = ag__trace_clock();
        __atomic_store_n(&trace.sync_each, sync && strcmp(sync, "1") == 0, __ATOMIC_RELAXED);
        __atomic_store_n(&ag__trace_on, 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&trace.lock);
    return st;
}

/* Adds a "ph": "M" metadata event naming lane pid (tid 0: the process) to arr. */
static void add_lane_name(cJSON *arr, const char *what, int pid, int tid, const char *name) {
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "name", what);
    cJSON_AddStringToObject(ev, "ph", "M");
    cJSON_AddNumberToObject(ev, "pid", pid);
    cJSON_AddNumberToObject(ev, "tid", tid);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(ev, "args"), "name", name);
    cJSON_AddItemToArray(arr, ev);
}

/* The Chrome trace JSON document of n events, `dropped` more lost (NULL if out of memory). */
static cJSON *trace_json(const trace_event *events, size_t n, size_t dropped, uint64_t origin,
                         bool synced) {
    cJSON *doc = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(doc, "traceEvents");
    cJSON_AddStringToObject(doc, "displayTimeUnit", "ms");
    cJSON *other = cJSON_AddObjectToObject(doc, "otherData");
    cJSON_AddStringToObject(other, "times",
                            synced ? "device-synchronized (AG_TRACE_SYNC=1)"
                                   : "host-side enqueue times");
    cJSON_AddNumberToObject(other, "dropped_events", (double)dropped); /* out of memory */
    bool named[AG_MAX_BACKENDS] = {false};
    int max_tid = 0;
    for (size_t i = 0; i < n; i++) {
        const trace_event *e = &events[i];
        char device[64];
        ag_device_str(e->device, device, sizeof device);
        cJSON *ev = cJSON_CreateObject();
        cJSON_AddStringToObject(ev, "name", e->name);
        cJSON_AddStringToObject(ev, "cat", e->backward ? "backward" : "forward");
        cJSON_AddStringToObject(ev, "ph", "X");
        cJSON_AddNumberToObject(ev, "ts", (double)(e->start_ns - origin) / 1e3);
        cJSON_AddNumberToObject(ev, "dur", (double)e->dur_ns / 1e3);
        cJSON_AddNumberToObject(ev, "pid", e->device.backend + 1);
        cJSON_AddNumberToObject(ev, "tid", e->tid);
        cJSON *args = cJSON_AddObjectToObject(ev, "args");
        cJSON_AddStringToObject(args, "device", device);
        cJSON_AddStringToObject(args, "inputs", e->inputs);
        cJSON_AddItemToArray(arr, ev);
        int b = e->device.backend;
        if (b >= 0 && b < AG_MAX_BACKENDS && !named[b]) {
            named[b] = true;
            const char *be = ag_backend_name(b);
            add_lane_name(arr, "process_name", b + 1, 0, be ? be : "backend");
        }
        if (e->tid > max_tid) max_tid = e->tid;
    }
    for (int b = 0; b < AG_MAX_BACKENDS; b++)
        for (int t = 1; named[b] && t <= max_tid; t++) {
            char name[32];
            snprintf(name, sizeof name, "thread %d", t);
            add_lane_name(arr, "thread_name", b + 1, t, name);
        }
    return doc;
}

/* A text and the file it goes to. */
typedef struct text_file {
    const char *text; /* what to write */
    const char *path; /* for messages */
} text_file;

/* ag__file_writer of a text_file. */
static ag_status write_text(FILE *f, void *user) {
    const text_file *t = user;
    return fputs(t->text, f) >= 0 ? AG_OK : ag__io_error("trace", "cannot write", t->path);
}

ag_status ag_trace_stop(void) {
    pthread_mutex_lock(&trace.lock);
    bool on = ag__trace_on;
    __atomic_store_n(&ag__trace_on, 0, __ATOMIC_RELAXED);
    trace_event *events = trace.events;
    size_t n = trace.count, dropped = trace.dropped;
    char *path = trace.path;
    uint64_t origin = trace.origin_ns;
    bool synced = trace.sync_each;
    trace.events = NULL;
    trace.count = trace.capacity = trace.dropped = 0;
    trace.path = NULL;
    pthread_mutex_unlock(&trace.lock);
    if (!on) return ag__error(AG_ERR_INVALID_ARG, "ag_trace_stop: not tracing (no ag_trace_start)");
    cJSON *doc = trace_json(events, n, dropped, origin, synced);
    char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
    text_file file = {text, path};
    ag_status st =
        text ? ag__write_file_atomic("trace", path, write_text, &file)
             : ag__error(AG_ERR_OUT_OF_MEMORY, "trace: out of host memory writing %s", path);
    cJSON_free(text);
    cJSON_Delete(doc);
    free(events);
    free(path);
    return st;
}
