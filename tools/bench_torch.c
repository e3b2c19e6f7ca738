/* The PyTorch comparison of `ag bench` (tools/bench.h): runs bench/torch_compare.py, which
 * times the model-level and overhead workloads in PyTorch and prints one JSON object, adds
 * its results as rows of backend "torch" and makes them the reference of the cpu backend's
 * rows (ratio = torch time / ag time: above 1, ag is faster). */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "bench.h"

extern char **environ;

/* The script, from the source tree the tool was built from (tools/CMakeLists.txt);
 * AG_TORCH_COMPARE names another. */
#ifndef AG_TORCH_COMPARE_SCRIPT
#define AG_TORCH_COMPARE_SCRIPT "bench/torch_compare.py"
#endif

/* Sort key of the torch rows' backend: after every device. */
#define TORCH_BACKEND_KEY 1000

/* A workload of the script and the row it becomes. */
typedef struct torch_workload {
    const char *workload;  /* the script's "workload" */
    const char *field;     /* its number: "ms_per_step" or "us_per_op" */
    bench_section section; /* where the row goes */
    const char *op, *pass; /* the ag row it compares with */
} torch_workload;

static const torch_workload workloads[] = {
    {BENCH_P_STEP, "ms_per_step", SECTION_MODELS, BENCH_P_STEP, "step"},
    {BENCH_MLP_STEP, "ms_per_step", SECTION_MODELS, BENCH_MLP_STEP, "step"},
    {"overhead_forward_grad", "us_per_op", SECTION_OVERHEAD, BENCH_OVERHEAD, "forward_grad"},
    {"overhead_forward_backward", "us_per_op", SECTION_OVERHEAD, BENCH_OVERHEAD,
     "forward+backward"},
    {"mlp_transforms_forward", "ms_per_step", SECTION_MODELS, BENCH_TRANSFORMS, "forward"},
    {"mlp_transforms_jvp", "ms_per_step", SECTION_MODELS, BENCH_TRANSFORMS, "jvp"},
    {"mlp_transforms_vjp", "ms_per_step", SECTION_MODELS, BENCH_TRANSFORMS, "vjp"},
    {"mlp_transforms_jvp_double_vjp", "ms_per_step", SECTION_MODELS, BENCH_TRANSFORMS,
     "jvp_double_vjp"},
};
#define N_WORKLOADS (int)(sizeof workloads / sizeof *workloads)

/* Reads fd to its end into *out (malloc'd, terminated); false when out of memory. */
static bool read_all(int fd, char **out) {
    size_t used = 0, capacity = 8192;
    char *buf = malloc(capacity);
    *out = NULL;
    if (!buf) return false;
    for (;;) {
        if (capacity - used < 4096) {
            char *grown = realloc(buf, capacity *= 2);
            if (!grown) {
                free(buf);
                return false;
            }
            buf = grown;
        }
        const ssize_t n = read(fd, buf + used, capacity - used - 1);
        if (n <= 0) break; /* the end, or an error: what came so far is the output */
        used += (size_t)n;
    }
    buf[used] = '\0';
    *out = buf;
    return true;
}

/* Runs argv (PATH searched); with out, captures its stdout into *out (malloc'd, terminated),
 * else sends stdout and stderr to /dev/null. Returns the exit status, -1 if it did not run
 * or exit normally. */
static int run_program(char *const argv[], char **out) {
    int fds[2] = {-1, -1};
    if (out && pipe(fds) != 0) return -1;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (out) {
        posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
        posix_spawn_file_actions_addclose(&actions, fds[0]);
        posix_spawn_file_actions_addclose(&actions, fds[1]);
    } else {
        posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    }
    pid_t pid;
    const int spawned = posix_spawnp(&pid, argv[0], &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    bool ok = spawned == 0;
    if (out) {
        close(fds[1]); /* so that reading ends when the child exits */
        ok = ok && read_all(fds[0], out);
        close(fds[0]);
    }
    int status = 0;
    if (spawned != 0 || waitpid(pid, &status, 0) < 0) return -1;
    return ok && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The ag row of the cpu backend (device "cpu:N") a workload compares with, from index i. */
static bench_record *find_cpu_row(bench_results *r, const torch_workload *w, int *i) {
    for (; *i < r->count; (*i)++) {
        bench_record *rec = &r->items[*i];
        if (rec->section == w->section && strcmp(rec->op, w->op) == 0 &&
            strcmp(rec->pass, w->pass) == 0 && strncmp(rec->backend, "cpu:", 4) == 0)
            return &r->items[(*i)++];
    }
    return NULL;
}

/* The number `key` of a JSON object, NAN when absent. */
static double number(const cJSON *object, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(object, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* Adds the torch row of one workload from its result object (its value, min and max in ms
 * per step or us per op, and its samples) and sets it as the reference of the cpu rows;
 * false when out of memory. */
static bool add_torch_row(bench_results *r, const torch_workload *w, int index,
                          const cJSON *result) {
    const double value = number(result, w->field);
    const double unit = strcmp(w->field, "us_per_op") == 0 ? 1e-6 : 1e-3;
    const double seconds = value * unit;
    int at = 0, keys[4] = {100, 0, index, TORCH_BACKEND_KEY};
    char size[40] = "-";
    for (bench_record *ag = find_cpu_row(r, w, &at); ag; ag = find_cpu_row(r, w, &at)) {
        snprintf(ag->reference, sizeof ag->reference, "torch");
        ag->reference_s = seconds;
        ag->ratio = seconds / ag->stats.median;
        memcpy(keys, ag->key, 3 * sizeof *keys);
        snprintf(size, sizeof size, "%s", ag->size);
    }
    bench_record *rec = bench_add(r);
    if (!rec) return false;
    rec->section = w->section;
    snprintf(rec->op, sizeof rec->op, "%s", w->op);
    snprintf(rec->size, sizeof rec->size, "%s", size);
    snprintf(rec->backend, sizeof rec->backend, "torch");
    snprintf(rec->pass, sizeof rec->pass, "%s", w->pass);
    rec->dtype = AG_F32;
    const double steps = number(result, "steps");
    rec->stats = (bench_stats){.median = seconds,
                               .min = number(result, "min") * unit,
                               .max = number(result, "max") * unit,
                               .repeats = steps >= 1 && steps < 1e9 ? (int)steps : 0};
    const bool per_op = w->section == SECTION_OVERHEAD;
    rec->throughput = per_op ? value : 1 / seconds;
    rec->unit = per_op ? "us/op" : "steps/s";
    memcpy(rec->key, keys, sizeof keys);
    return true;
}

/* Reads the script's JSON into info and the records of the workloads o selects; 0, or 1
 * after a message. */
static int parse_output(const bench_options *o, const char *text, bench_results *r,
                        bench_torch_info *info) {
    const char *start = text ? strchr(text, '{') : NULL; /* anything printed before is noise */
    cJSON *root = start ? cJSON_Parse(start) : NULL;
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "torch_version");
    const cJSON *threads = cJSON_GetObjectItemCaseSensitive(root, "threads");
    const cJSON *device = cJSON_GetObjectItemCaseSensitive(root, "device");
    const cJSON *results = cJSON_GetObjectItemCaseSensitive(root, "results");
    if (!cJSON_IsString(version) || !cJSON_IsArray(results)) {
        fputs("ag bench: the PyTorch script printed no JSON object with torch_version and "
              "results\n",
              stderr);
        cJSON_Delete(root);
        return 1;
    }
    snprintf(info->version, sizeof info->version, "%s", version->valuestring);
    info->threads = cJSON_IsNumber(threads) ? threads->valueint : 0;
    snprintf(info->device, sizeof info->device, "%s",
             cJSON_IsString(device) ? device->valuestring : "cpu");
    int rc = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, results) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(item, "workload");
        for (int w = 0; rc == 0 && cJSON_IsString(name) && w < N_WORKLOADS; w++) {
            if (strcmp(name->valuestring, workloads[w].workload) != 0 ||
                !bench_wants(o, workloads[w].op))
                continue;
            if (!(number(item, workloads[w].field) > 0)) {
                fprintf(stderr, "ag bench: the PyTorch script's workload %s has no positive %s\n",
                        workloads[w].workload, workloads[w].field);
                rc = 1;
            } else if (!add_torch_row(r, &workloads[w], w, item)) {
                rc = 1;
            }
        }
    }
    cJSON_Delete(root);
    info->ran = rc == 0;
    return rc;
}

int bench_torch_run(const bench_options *o, bench_results *r, bench_torch_info *info) {
    *info = (bench_torch_info){0};
    const char *env = getenv("PYTHON");
    char *python = (char *)(env && env[0] ? env : "/usr/bin/python3");
    const char *env_script = getenv("AG_TORCH_COMPARE");
    char *script = (char *)(env_script && env_script[0] ? env_script : AG_TORCH_COMPARE_SCRIPT);
    if (access(script, R_OK) != 0) {
        printf("torch comparison skipped: %s not found\n", script);
        return 0;
    }
    if (run_program((char *[]){python, "-c", "import torch", NULL}, NULL) != 0) {
        printf("torch comparison skipped: %s cannot import torch\n", python);
        return 0;
    }
    /* --only the workloads o selects, when that is not all of them. */
    char only[256] = "";
    for (int w = 0; w < N_WORKLOADS; w++)
        if (bench_wants(o, workloads[w].op))
            snprintf(only + strlen(only), sizeof only - strlen(only), "%s%s", only[0] ? "," : "",
                     workloads[w].workload);
    const bool all = o->n_ops == 0;
    bench_progress((ag_device){-1, -1}, "torch", script, "");
    char *out = NULL;
    const int status = run_program(
        (char *[]){python, script, "--json", "-", all ? NULL : "--only", all ? NULL : only, NULL},
        &out);
    int rc = 0;
    if (status != 0) {
        fprintf(stderr, "ag bench: %s %s --json - failed (exit status %d)\n", python, script,
                status);
        rc = 1;
    } else {
        rc = parse_output(o, out, r, info);
    }
    free(out);
    return rc;
}
