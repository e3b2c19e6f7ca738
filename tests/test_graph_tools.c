/* Graph pictures and traces: ag_graph_dot on a small MLP (labels, leaves, edges between
 * defined nodes), on the section P model (rendered to PNG by `dot` where Graphviz is
 * installed) and its errors; the Chrome trace of ag_trace_start/ag_trace_stop and of
 * `ag train --trace`, parsed with cJSON. */
#include <unistd.h>
#include <cjson/cJSON.h>
#include "ag/nn.h"
#include "ag/train.h"
#include "test_util.h"

#ifndef AG_CLI_PATH
#error "AG_CLI_PATH must name the ag binary (tests/graph_tools.cmake sets it)"
#endif

static char tmpdir[64];

/* A path in this test's temporary directory. */
static const char *tmp_path(const char *name, char *buf, size_t size) {
    return tu_tmp_path(tmpdir, sizeof tmpdir, "graph_tools", name, buf, size);
}

/* A parameter of the given shape, requiring grad. */
static ag_tensor *param(int ndim, const int64_t *shape) {
    ag_tensor *p = ag_randn(NULL, AG_F32, ndim, shape);
    ck_assert_int_eq(ag_set_requires_grad(p, true), AG_OK);
    return p;
}

/* Mean (sum, then div) of a two-layer MLP (linear, relu, matmul) on a 4x3 batch: the graph the
 * tests draw. */
static ag_tensor *mlp_loss(void) {
    ag_tensor *x = ag_randn(NULL, AG_F32, 2, TU_SHAPE(4, 3));
    ag_tensor *w1 = param(2, TU_SHAPE(5, 3)), *b1 = param(1, TU_SHAPE(5));
    ag_tensor *w2 = param(2, TU_SHAPE(5, 2));
    ag_tensor *loss = ag_mean(ag_matmul(ag_relu(ag_linear(x, w1, b1)), w2), 0, NULL, false);
    ck_assert_msg(loss, "%s", ag_last_error());
    return loss;
}

/* True if text defines DOT node `id` (a line "  <id> [..."). */
static bool defines(const char *text, const char *id) {
    char key[80];
    snprintf(key, sizeof key, "\n  %s [", id);
    return strstr(text, key) != NULL;
}

START_TEST(test_dot_mlp) {
    char path[128];
    ag_tensor *loss = mlp_loss();
    ck_assert_int_eq(ag_graph_dot(loss, tmp_path("mlp.dot", path, sizeof path)), AG_OK);
    char *text = tu_read_text(path);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(strncmp(text, "digraph", 7) == 0, "%s", text);
    const char *want[] = {"linear",
                          "relu",
                          "matmul",
                          "sum",
                          "out 0: float32[4, 5]",
                          "saved input 1: float32[5, 3]",
                          "leaf\\nfloat32[5, 3]",
                          "requires_grad",
                          "root\\nfloat32[]"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        ck_assert_msg(strstr(text, want[i]), "'%s' missing from\n%s", want[i], text);
    /* Every edge joins two defined nodes; three parameters make three leaves. */
    int edges = 0, leaves = 0;
    for (const char *p = strstr(text, "shape=ellipse"); p; p = strstr(p + 1, "shape=ellipse"))
        leaves++;
    for (const char *line = text; line; line = strchr(line + 1, '\n')) {
        char from[64], to[64];
        if (sscanf(line, " %63s -> %63[^;];", from, to) == 2) {
            edges++;
            ck_assert_msg(defines(text, from) && defines(text, to), "edge %s -> %s", from, to);
        }
    }
    ck_assert_int_ge(edges, 7);
    ck_assert_int_eq(leaves, 3);
    free(text);
}
END_TEST

START_TEST(test_dot_renders_p_model) {
    /* The section P network (train.h) on a batch of 8: its whole training graph. */
    ag_train_config cfg = ag_train_defaults();
    ag_generator *gen = ag_generator_new(0);
    ag_module *model = ag_train_model_new(&cfg, gen);
    ck_assert_msg(model, "%s", ag_last_error());
    ag_tensor *x = ag_randn(gen, AG_F32, 2, TU_SHAPE(8, cfg.in_features));
    ag_tensor *target = ag_from_i64((const int64_t[]){0, 1, 2, 3, 4, 5, 6, 7}, 1, TU_SHAPE(8));
    ag_cross_entropy_options opts = ag_cross_entropy_defaults();
    ag_tensor *loss = ag_cross_entropy(ag_module_forward(model, x), target, &opts);
    ck_assert_msg(loss, "%s", ag_last_error());
    char dot[128], png[128], cmd[400], out[512];
    ck_assert_int_eq(ag_graph_dot(loss, tmp_path("p_model.dot", dot, sizeof dot)), AG_OK);
    char *text = tu_read_text(dot);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(strstr(text, "gelu") && strstr(text, "layer_norm"), "%s", text);
    free(text);
    ag_module_free(model);
    ag_generator_free(gen);
    if (system("command -v dot >/dev/null 2>&1") != 0) return; /* Graphviz not installed */
    snprintf(cmd, sizeof cmd, "dot -Tpng '%s' -o '%s' 2>&1", dot,
             tmp_path("p_model.png", png, sizeof png));
    ck_assert_msg(tu_run_command(cmd, out, sizeof out) == 0, "%s", out);
    unsigned char sig[8] = {0};
    FILE *f = fopen(png, "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fread(sig, 1, 8, f), 8);
    fclose(f);
    ck_assert_int_eq(memcmp(sig, "\x89PNG\r\n\x1a\n", 8), 0);
}
END_TEST

START_TEST(test_dot_errors) {
    char path[128];
    tmp_path("error.dot", path, sizeof path);
    ck_assert_int_eq(ag_graph_dot(NULL, path), AG_ERR_INVALID_ARG);
    ag_clear_error();
    ag_tensor *plain = ag_ones(AG_F32, 1, TU_SHAPE(2));
    ck_assert_int_eq(ag_graph_dot(plain, path), AG_ERR_INVALID_ARG);
    ck_assert_msg(strstr(ag_last_error(), "no autograd graph"), "%s", ag_last_error());
    ck_assert_int_eq(access(path, F_OK), -1);
    /* A leaf requiring grad is a graph of one node. */
    ag_tensor *leaf = param(1, TU_SHAPE(2));
    ck_assert_int_eq(ag_graph_dot(leaf, path), AG_OK);
    const char *missing = "/nonexistent_ag_dir/graph.dot";
    ck_assert_int_eq(ag_graph_dot(leaf, missing), AG_ERR_IO);
    ck_assert_msg(strstr(ag_last_error(), missing), "%s", ag_last_error());
}
END_TEST

/* The trace at path, parsed (the caller deletes it). */
static cJSON *load_trace(const char *path) {
    char *text = tu_read_text(path);
    ck_assert_ptr_nonnull(text);
    cJSON *doc = cJSON_Parse(text);
    ck_assert_msg(doc, "not JSON: %.200s", text);
    free(text);
    return doc;
}

/* Counts the complete events of category cat named `name` (NULL: any), checking each. */
static int count_events(const cJSON *doc, const char *cat, const char *name) {
    const cJSON *events = cJSON_GetObjectItem(doc, "traceEvents"), *ev;
    ck_assert(cJSON_IsArray(events));
    int n = 0;
    cJSON_ArrayForEach(ev, events) {
        const char *ph = cJSON_GetStringValue(cJSON_GetObjectItem(ev, "ph"));
        const char *c = cJSON_GetStringValue(cJSON_GetObjectItem(ev, "cat"));
        const char *nm = cJSON_GetStringValue(cJSON_GetObjectItem(ev, "name"));
        if (!ph || strcmp(ph, "X") != 0 || strcmp(c, cat) != 0 || (name && strcmp(nm, name) != 0))
            continue;
        ck_assert_double_gt(cJSON_GetNumberValue(cJSON_GetObjectItem(ev, "dur")), 0);
        ck_assert_double_ge(cJSON_GetNumberValue(cJSON_GetObjectItem(ev, "ts")), 0);
        ck_assert_int_ge((int)cJSON_GetNumberValue(cJSON_GetObjectItem(ev, "tid")), 1);
        const cJSON *args = cJSON_GetObjectItem(ev, "args");
        ck_assert_ptr_nonnull(cJSON_GetStringValue(cJSON_GetObjectItem(args, "device")));
        n++;
    }
    return n;
}

START_TEST(test_trace_ops) {
    char path[128];
    ck_assert_int_eq(ag_trace_start(tmp_path("ops.json", path, sizeof path)), AG_OK);
    ck_assert_int_eq(ag_trace_start(path), AG_ERR_INVALID_ARG); /* already tracing */
    ag_tensor *a = param(2, TU_SHAPE(3, 4));
    ag_tensor *y = ag_sum(ag_mul(a, a), 0, NULL, false);
    ck_assert_int_eq(ag_backward(y, NULL), AG_OK);
    ck_assert_int_eq(ag_trace_stop(), AG_OK);
    cJSON *doc = load_trace(path);
    /* mul's backward runs mul ops too: they show as forward events inside it. */
    ck_assert_int_ge(count_events(doc, "forward", "mul"), 1);
    ck_assert_int_eq(count_events(doc, "backward", "mul backward"), 1);
    ck_assert_int_eq(count_events(doc, "backward", "sum backward"), 1);
    const cJSON *ev, *events = cJSON_GetObjectItem(doc, "traceEvents");
    bool shapes = false;
    cJSON_ArrayForEach(ev, events) {
        const char *in =
            cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "args"), "inputs"));
        shapes |= in && strcmp(in, "[3, 4], [3, 4]") == 0;
    }
    ck_assert(shapes);
    cJSON_Delete(doc);
    /* Once stopped, ops are not recorded and a second stop is an error. */
    ck_assert_int_eq(ag_trace_stop(), AG_ERR_INVALID_ARG);
    ck_assert_msg(strstr(ag_last_error(), "not tracing"), "%s", ag_last_error());
}
END_TEST

START_TEST(test_trace_sync_and_errors) {
    char path[128];
    ck_assert_int_eq(ag_trace_start(NULL), AG_ERR_INVALID_ARG);
    setenv("AG_TRACE_SYNC", "1", 1);
    ck_assert_int_eq(ag_trace_start(tmp_path("sync.json", path, sizeof path)), AG_OK);
    unsetenv("AG_TRACE_SYNC");
    ck_assert_ptr_nonnull(ag_add(ag_ones(AG_F32, 1, TU_SHAPE(8)), ag_ones(AG_F32, 0, NULL)));
    ck_assert_int_eq(ag_trace_stop(), AG_OK);
    cJSON *doc = load_trace(path);
    ck_assert_int_eq(count_events(doc, "forward", "add"), 1);
    const char *times =
        cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "otherData"), "times"));
    ck_assert_msg(times && strstr(times, "synchronized"), "%s", times ? times : "(none)");
    cJSON_Delete(doc);
    /* A directory that does not exist: the error names the file. */
    const char *missing = "/nonexistent_ag_dir/trace.json";
    ck_assert_int_eq(ag_trace_start(missing), AG_OK);
    ck_assert_int_eq(ag_trace_stop(), AG_ERR_IO);
    ck_assert_msg(strstr(ag_last_error(), missing), "%s", ag_last_error());
}
END_TEST

START_TEST(test_train_trace_cli) {
    char path[128], cmd[512], out[4096];
    snprintf(cmd, sizeof cmd,
             "'%s' train --bench-steps 2 --batch-size 8 --hidden 16 --trace '%s' 2>&1", AG_CLI_PATH,
             tmp_path("train.json", path, sizeof path));
    ck_assert_msg(tu_run_command(cmd, out, sizeof out) == 0, "%s", out);
    cJSON *doc = load_trace(path);
    ck_assert_int_ge(count_events(doc, "forward", "linear"), 6); /* 3 layers x 2 steps */
    ck_assert_int_ge(count_events(doc, "backward", "linear backward"), 6);
    cJSON_Delete(doc);
}
END_TEST

static Suite *graph_tools_suite(void) {
    Suite *s = suite_create("graph_tools");
    TCase *dot = tcase_create("dot");
    tcase_add_checked_fixture(dot, tu_scope_setup, tu_scope_teardown);
    tcase_add_test(dot, test_dot_mlp);
    tcase_add_test(dot, test_dot_renders_p_model);
    tcase_add_test(dot, test_dot_errors);
    suite_add_tcase(s, dot);
    TCase *trace = tcase_create("trace");
    tcase_add_checked_fixture(trace, tu_scope_setup, tu_scope_teardown);
    tcase_set_timeout(trace, 60);
    tcase_add_test(trace, test_trace_ops);
    tcase_add_test(trace, test_trace_sync_and_errors);
    tcase_add_test(trace, test_train_trace_cli);
    suite_add_tcase(s, trace);
    return s;
}

int main(void) {
    int rc = tu_run_suite(graph_tools_suite());
    tu_remove_tmpdir(tmpdir);
    return rc;
}
