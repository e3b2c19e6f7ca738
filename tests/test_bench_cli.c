/* `ag bench` (tools/cmd_bench.c), run as a program on the cpu backend with tiny sizes and
 * budgets: the table, the CSV (header, one row per cell) and JSON files, the PNG where
 * gnuplot is installed (and the clear failure where it is not), usage errors, backends that
 * do not load, and the PyTorch comparison through a stand-in interpreter. */
#include <cjson/cJSON.h>
#include <sys/stat.h>
#include "test_util.h"

/* The common part of the runs: cpu only, tiny cells, no PyTorch. */
#define QUICK AG_CLI_PATH " bench --backends cpu --seconds 0.01 --no-torch"
/* The CSV header of docs/bench.md. */
#define CSV_HEADER                                                                                 \
    "section,op,size,backend,pass,dtype,median_ms,min_ms,max_ms,repeats,throughput,unit,"          \
    "reference,ratio"

/* Output of the last command. */
static char out[65536];

/* Runs `ag bench <args>` (args already holding the program) with 2>&1; returns the status. */
static int run(const char *cmd) {
    char full[4096];
    /* The precision bounds the copy, which -O3's truncation check wants to see. */
    snprintf(full, sizeof full, "%.4000s 2>&1", cmd);
    return tu_run_command(full, out, sizeof out);
}

/* A path in the tests' output directory. */
static const char *out_path(const char *name, char *buf, size_t size) {
    mkdir(AG_BENCH_OUT_DIR, 0777);
    snprintf(buf, size, "%s/%s", AG_BENCH_OUT_DIR, name);
    remove(buf);
    return buf;
}

/* Number of fields of a CSV line (no quoting in these files). */
static int fields(const char *line, size_t len) {
    int n = 1;
    for (size_t i = 0; i < len; i++) n += line[i] == ',';
    return n;
}

START_TEST(table_csv_and_json) {
    char csv[512], json[512], cmd[2048];
    out_path("ops.csv", csv, sizeof csv);
    out_path("ops.json", json, sizeof json);
    snprintf(cmd, sizeof cmd, QUICK " --ops matmul,add --sizes 64 --csv %s --json %s", csv, json);
    ck_assert_msg(run(cmd) == 0, "%s", out);
    ck_assert_msg(strstr(out, "== op level (float32) =="), "%s", out);
    ck_assert_msg(strstr(out, "64x64x64") && strstr(out, "openblas sgemm") && strstr(out, "memcpy"),
                  "%s", out);
    ck_assert_msg(!strstr(out, "model level"), "--ops left the steps out: %s", out);

    char *text = tu_read_text(csv);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(strncmp(text, CSV_HEADER "\n", strlen(CSV_HEADER) + 1) == 0, "%s", text);
    int rows = 0;
    for (char *line = strchr(text, '\n') + 1; *line; rows++) {
        char *end = strchr(line, '\n');
        ck_assert_ptr_nonnull(end);
        ck_assert_int_eq(fields(line, (size_t)(end - line)), 14);
        ck_assert_msg(strncmp(line, "op,matmul,64x64x64,cpu:0,", 25) == 0 ||
                          strncmp(line, "op,add,64,cpu:0,", 16) == 0,
                      "row %.*s", (int)(end - line), line);
        line = end + 1;
    }
    ck_assert_int_eq(rows, 4); /* two ops, each forward and forward+backward */
    ck_assert_ptr_nonnull(strstr(text, ",forward+backward,float32,"));
    free(text);

    text = tu_read_text(json);
    ck_assert_ptr_nonnull(text);
    cJSON *root = cJSON_Parse(text);
    free(text);
    ck_assert_ptr_nonnull(root);
    const cJSON *records = cJSON_GetObjectItemCaseSensitive(root, "records");
    ck_assert_int_eq(cJSON_GetArraySize(records), 4);
    const cJSON *rec;
    cJSON_ArrayForEach(rec, records) {
        const cJSON *median = cJSON_GetObjectItemCaseSensitive(rec, "median_ms");
        const cJSON *repeats = cJSON_GetObjectItemCaseSensitive(rec, "repeats");
        ck_assert(cJSON_IsNumber(median) && median->valuedouble > 0);
        ck_assert(cJSON_IsNumber(repeats) && repeats->valueint >= 5);
        ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(rec, "backend")->valuestring, "cpu:0");
        ck_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(rec, "ratio")));
    }
    const cJSON *machine = cJSON_GetObjectItemCaseSensitive(root, "machine");
    ck_assert(cJSON_GetObjectItemCaseSensitive(machine, "cores")->valueint >= 1);
    ck_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(machine, "cpu_model")));
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "devices")), 1);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "torch")));
    cJSON_Delete(root);
}
END_TEST

START_TEST(float64_uses_dgemm) {
    ck_assert_msg(run(QUICK " --ops matmul --sizes 32 --dtype float64") == 0, "%s", out);
    ck_assert_msg(strstr(out, "== op level (float64) ==") && strstr(out, "openblas dgemm"), "%s",
                  out);
}
END_TEST

START_TEST(plot) {
    char png[512], csv[512], cmd[2048];
    out_path("chart.png", png, sizeof png);
    out_path("plot.csv", csv, sizeof csv);
    /* Without gnuplot on PATH: a clear failure, the CSV written all the same. */
    snprintf(cmd, sizeof cmd, "PATH=/nonexistent " QUICK " --ops add --sizes 16 --csv %s --plot %s",
             csv, png);
    ck_assert_msg(run(cmd) == 1, "%s", out);
    ck_assert_msg(strstr(out, "--plot needs gnuplot"), "%s", out);
    struct stat st;
    ck_assert_int_eq(stat(csv, &st), 0);
    ck_assert_int_ne(stat(png, &st), 0);
    char where[256];
    if (tu_run_command("command -v gnuplot", where, sizeof where) != 0) return; /* not installed */
    snprintf(cmd, sizeof cmd, QUICK " --ops add,overhead --sizes 16 --plot %s", png);
    ck_assert_msg(run(cmd) == 0, "%s", out);
    unsigned char head[8] = {0};
    FILE *f = fopen(png, "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fread(head, 1, sizeof head, f), sizeof head);
    fclose(f);
    ck_assert_mem_eq(head, "\x89PNG\r\n\x1a\n", 8);
}
END_TEST

START_TEST(usage_errors) {
    static const char *const bad[] = {"--seconds abc", "--seconds 0",    "--dtype int8",
                                      "--ops nosuch",  "--ops add,,mul", "--sizes 0",
                                      "--sizes 12x",   "--bogus",        "extra"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, AG_CLI_PATH " bench %s", bad[i]);
        ck_assert_msg(run(cmd) == 2, "%s: %s", bad[i], out);
        ck_assert_msg(strstr(out, "ag bench: "), "%s: %s", bad[i], out);
    }
    run(AG_CLI_PATH " bench --ops nosuch");
    ck_assert_msg(strstr(out, "unknown workload 'nosuch'") && strstr(out, "cross_entropy"), "%s",
                  out);
    ck_assert_int_eq(run(AG_CLI_PATH " bench --help"), 0);
    ck_assert_msg(strstr(out, "usage: ag bench") && strstr(out, "--plot"), "%s", out);
    ck_assert_int_eq(run(AG_CLI_PATH " bench --backends 'Not A Name!'"), 2);
}
END_TEST

START_TEST(unknown_backend) {
    ck_assert_msg(run(AG_CLI_PATH " bench --backends cpu,nosuch --ops add --sizes 16 --seconds "
                                  "0.01 --no-torch") == 0,
                  "%s", out);
    ck_assert_msg(strstr(out, "backend nosuch skipped: "), "%s", out);
    ck_assert_msg(strstr(out, "add"), "cpu still measured: %s", out);
    ck_assert_int_eq(run(AG_CLI_PATH " bench --backends nosuch --no-torch"), 1);
    ck_assert_msg(strstr(out, "backend nosuch skipped: ") && strstr(out, "no backend to measure"),
                  "%s", out);
}
END_TEST

START_TEST(torch_comparison) {
    char python[512], script[512], csv[512], cmd[4096];
    out_path("fake-python", python, sizeof python);
    out_path("fake_compare.py", script, sizeof script);
    out_path("torch.csv", csv, sizeof csv);
    /* A stand-in interpreter: imports anything, and "runs" the script by printing a fixed
     * object after some noise. */
    FILE *f = fopen(python, "w");
    ck_assert_ptr_nonnull(f);
    fputs("#!/bin/sh\n[ \"$1\" = -c ] && exit 0\necho noise\n"
          "echo '{\"torch_version\": \"9.9.9\", \"threads\": 2, \"device\": \"cpu\", \"results\": "
          "[{\"workload\": \"overhead_forward_grad\", \"us_per_op\": 1000}, {\"workload\": "
          "\"overhead_forward_backward\", \"us_per_op\": 2000}, {\"workload\": \"p_step\", "
          "\"ms_per_step\": 5}]}'\n",
          f);
    fclose(f);
    chmod(python, 0755);
    f = fopen(script, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "PYTHON=%s AG_TORCH_COMPARE=%s " AG_CLI_PATH
             " bench --backends cpu --ops overhead --seconds 0.01 --csv %s",
             python, script, csv);
    ck_assert_msg(run(cmd) == 0, "%s", out);
    ck_assert_msg(strstr(out, "== vs PyTorch 9.9.9 (cpu, 2 threads"), "%s", out);
    char *text = tu_read_text(csv);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(strstr(text, "overhead,overhead,16,torch,forward_grad,float32,1,"), "%s", text);
    ck_assert_msg(strstr(text, "overhead,overhead,16,cpu:0,forward+backward,float32,"), "%s", text);
    ck_assert_msg(strstr(text, "us/op,torch,"), "cpu rows get torch as reference: %s", text);
    free(text);

    snprintf(cmd, sizeof cmd,
             "PYTHON=/bin/false AG_TORCH_COMPARE=%s " AG_CLI_PATH
             " bench --backends cpu --ops overhead --seconds 0.01",
             script);
    ck_assert_msg(run(cmd) == 0, "%s", out);
    ck_assert_msg(strstr(out, "torch comparison skipped: /bin/false cannot import torch"), "%s",
                  out);
}
END_TEST

int main(void) {
    Suite *s = suite_create("bench_cli");
    TCase *tc = tcase_create("bench_cli");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, table_csv_and_json);
    tcase_add_test(tc, float64_uses_dgemm);
    tcase_add_test(tc, plot);
    tcase_add_test(tc, usage_errors);
    tcase_add_test(tc, unknown_backend);
    tcase_add_test(tc, torch_comparison);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
