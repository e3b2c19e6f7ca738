/* `ag check` (tools/cmd_check.c), run as a program: the shipped plugins pass (swish twice
 * differentiable, fused::logsumexp once differentiable), and failures, skips and usage
 * errors give the documented table cells, messages and exit statuses.
 *
 * This file is also the fixture plugin of these tests: tests/check_cli.cmake builds it a
 * second time with AG_CHECK_FIXTURE_PLUGIN defined, as libag_check_fixture.so, whose ops are
 * each wrong (or limited) in one way that ag check must report. */
#ifdef AG_CHECK_FIXTURE_PLUGIN

#include <math.h>
#include "ag/plugin.h"
#include "plugin_util.h"

/* Output 0 has input 0's dtype and shape. */
static ag_status same_meta(int n_inputs, const ag_tensor_meta *inputs, const ag_attrs *attrs,
                           int n_outputs, ag_tensor_meta *outputs) {
    (void)n_inputs, (void)attrs, (void)n_outputs;
    outputs[0] = inputs[0];
    return AG_OK;
}

/* y = f(x) elementwise into the contiguous output, any strides of x. */
static void map(const ag_kernel_args *args, double (*f)(double)) {
    const ag_kernel_tensor *x = &args->inputs[0], *y = &args->outputs[0];
    for (int64_t i = 0; i < strided_count(x, x->ndim); i++)
        strided_store(y, y->offset + i, f(strided_load(x, strided_offset(x, x->ndim, i))));
}

static double square(double x) {
    return x * x;
}
static double twice(double x) {
    return 2 * x;
}
static double not_a_number(double x) {
    return x - x + NAN;
}

static ag_status square_cpu(const ag_kernel_args *args) {
    map(args, square);
    return AG_OK;
}
static ag_status twice_cpu(const ag_kernel_args *args) {
    map(args, twice);
    return AG_OK;
}
static ag_status nan_cpu(const ag_kernel_args *args) {
    map(args, not_a_number);
    return AG_OK;
}

/* d(x²)/dx written as grad·x: off by a factor 2, which gradcheck must catch. */
static ag_status square_wrong_backward(ag_plugin_backward_ctx *ctx) {
    ctx->grad_inputs[0] = ag_mul(ctx->grad_outputs[0], ctx->saved_inputs[0]);
    return ctx->grad_inputs[0] ? AG_OK : ag_last_status();
}

/* d(2x)/dx = 2. */
static ag_status twice_backward(ag_plugin_backward_ctx *ctx) {
    ctx->grad_inputs[0] = ag_mul_scalar(ctx->grad_outputs[0], 2.0);
    return ctx->grad_inputs[0] ? AG_OK : ag_last_status();
}

/* One-input, one-output op without samples (ag check generates one). */
#define FIXTURE_OP(op_name, dtypes, kernel, backward_fn)                                           \
    {                                                                                              \
        .struct_size = sizeof(ag_plugin_op), .name = op_name, .doc = "ag check fixture",           \
        .n_inputs = 1, .n_outputs = 1, .input_dtypes = {dtypes}, .save_inputs = 1u,                \
        .shape = same_meta, .cpu_kernel = kernel, .backward = backward_fn                          \
    }
#define FLOATS (AG_DTYPE_BIT(AG_F32) | AG_DTYPE_BIT(AG_F64))

static const ag_plugin_op fixture_ops[] = {
    FIXTURE_OP("checkfix::square_wrong", FLOATS, square_cpu, square_wrong_backward),
    FIXTURE_OP("checkfix::twice_f32", AG_DTYPE_BIT(AG_F32), twice_cpu, twice_backward),
    FIXTURE_OP("checkfix::nan", FLOATS, nan_cpu, twice_backward),
    /* Shares its bare name with swish::swish; has no backward. */
    FIXTURE_OP("checkfix::swish", FLOATS, twice_cpu, NULL),
};

static ag_status fixture_init(const ag_plugin_host *host, ag_plugin_registrar *registrar) {
    ag_status st = AG_OK;
    for (size_t i = 0; i < sizeof fixture_ops / sizeof fixture_ops[0] && st == AG_OK; i++)
        st = host->register_op(registrar, &fixture_ops[i]);
    return st;
}

static const ag_plugin_info fixture_info = {
    .struct_size = sizeof(ag_plugin_info),
    .abi_major = AG_PLUGIN_ABI_MAJOR,
    .abi_minor = AG_PLUGIN_ABI_MINOR,
    .name = "checkfix",
    .version = "0.0.1",
    .init = fixture_init,
};

/* Plugin entry of the fixture. */
const ag_plugin_info *ag_plugin_entry(uint32_t host_abi_major, uint32_t host_abi_minor) {
    (void)host_abi_major, (void)host_abi_minor;
    return &fixture_info;
}

#else /* the test program */

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#if !defined(AG_CLI_PATH) || !defined(AG_SWISH_PLUGIN) || !defined(AG_LSE_PLUGIN) ||               \
    !defined(AG_FIXTURE_PLUGIN)
#error "tests/check_cli.cmake defines the paths of the CLI and the plugins"
#endif

static char out[1 << 16];

/* Runs `AG_PLUGINS=<plugins> ag check <args>`, stdout and stderr into out; returns the exit
 * status (-1 if it did not exit normally). */
static int run_check(const char *plugins, const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "AG_PLUGINS='%s' '%s' check %s 2>&1", plugins, AG_CLI_PATH, args);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Splits one line of out into its columns (separated by two or more spaces; cells hold
 * single spaces at most); returns the number of columns. */
static int split_columns(const char *line, char cols[8][256]) {
    int n = 0;
    const char *eol = strchr(line, '\n');
    if (!eol) eol = line + strlen(line);
    while (line < eol && n < 8) {
        const char *end = strstr(line, "  ");
        if (!end || end > eol) end = eol;
        snprintf(cols[n++], 256, "%.*s", (int)(end - line), line);
        for (line = end; line < eol && *line == ' '; line++) continue;
    }
    return n;
}

/* Asserts that the table row of op on cpu:0 whose sample column starts with `sample` reads
 * forward, gradcheck, gradgradcheck. */
static void expect_row(const char *op, const char *sample, const char *forward,
                       const char *gradcheck, const char *gradgradcheck) {
    char cols[8][256];
    for (const char *line = out; *line;) {
        if (split_columns(line, cols) == 6 && strcmp(cols[0], op) == 0 &&
            strcmp(cols[1], "cpu:0") == 0 && strncmp(cols[2], sample, strlen(sample)) == 0) {
            ck_assert_str_eq(cols[3], forward);
            ck_assert_str_eq(cols[4], gradcheck);
            ck_assert_str_eq(cols[5], gradgradcheck);
            return;
        }
        const char *eol = strchr(line, '\n');
        if (!eol) break;
        line = eol + 1;
    }
    ck_abort_msg("no row for %s sample %s in:\n%s", op, sample, out);
}

/* Asserts that out contains text. */
static void expect_text(const char *text) {
    ck_assert_msg(strstr(out, text), "'%s' not in:\n%s", text, out);
}

/* The done-when: swish passes forward, gradcheck and gradgradcheck on cpu. */
START_TEST(swish_passes) {
    ck_assert_int_eq(run_check(AG_SWISH_PLUGIN, "--op swish --backend cpu"), 0);
    expect_row("swish::swish", "0: f64[3,4]", "pass", "pass", "pass");
    expect_row("swish::swish", "1: f64[]", "pass", "pass", "pass");
    expect_row("swish::swish", "2: f32[7]", "pass", "pass", "pass");
    expect_text("3 rows, 9 checks: 9 passed, 0 failed, 0 skipped");
}
END_TEST

/* Without --backend, every backend that loads is checked, cpu among them. */
START_TEST(default_backends) {
    ck_assert_int_eq(run_check(AG_SWISH_PLUGIN, "--op swish::swish --samples 1"), 0);
    expect_row("swish::swish", "0: f64[3,4]", "pass", "pass", "pass");
    expect_text(" 0 failed");
}
END_TEST

/* A once-differentiable op passes gradgradcheck when its double backward is refused with
 * PyTorch's error. --plugin and a bare name work as AG_PLUGINS and the full name do. */
START_TEST(logsumexp_once_differentiable) {
    ck_assert_int_eq(run_check("", "--plugin " AG_LSE_PLUGIN " --op logsumexp"), 0);
    expect_row("fused::logsumexp", "0: f64[3,5]", "pass", "pass", "pass(once_differentiable)");
    expect_row("fused::logsumexp", "1: f64[2,3,4]", "pass", "pass", "pass(once_differentiable)");
    expect_text("0 failed");
}
END_TEST

/* Every op of every loaded plugin without --op; --samples limits the rows. */
START_TEST(all_ops) {
    ck_assert_int_eq(run_check(AG_SWISH_PLUGIN ":" AG_LSE_PLUGIN, "--samples 1 --backend cpu"), 0);
    expect_row("swish::swish", "0: ", "pass", "pass", "pass");
    expect_row("fused::logsumexp", "0: ", "pass", "pass", "pass(once_differentiable)");
    expect_text("2 rows, 6 checks: 6 passed"); /* --samples 1: one row per op */
}
END_TEST

/* A plugin that does not load, from --plugin or AG_PLUGINS, fails naming its file. */
START_TEST(missing_plugin_file) {
    ck_assert_int_eq(run_check("", "--plugin /nonexistent/libag_op_nothing.so"), 1);
    expect_text("/nonexistent/libag_op_nothing.so");
    ck_assert_int_eq(run_check("/nonexistent/libag_op_env.so", "--op swish"), 1);
    expect_text("/nonexistent/libag_op_env.so");
}
END_TEST

START_TEST(unknown_op_lists_available) {
    ck_assert_int_eq(run_check(AG_SWISH_PLUGIN, "--op nosuch"), 2);
    expect_text("unknown op 'nosuch'");
    expect_text("swish::swish");
    ck_assert_int_eq(run_check(AG_SWISH_PLUGIN, "--op other::swish"), 2);
    expect_text("unknown op 'other::swish'");
    ck_assert_int_eq(run_check("", "--op swish"), 2);
    expect_text("no plugin op is loaded");
}
END_TEST

/* A bare name two plugins share is ambiguous; the full name is not. */
START_TEST(ambiguous_bare_name) {
    ck_assert_int_eq(run_check(AG_SWISH_PLUGIN ":" AG_FIXTURE_PLUGIN, "--op swish"), 2);
    expect_text("'swish' is ambiguous");
    expect_text("swish::swish");
    expect_text("checkfix::swish");
    ck_assert_int_eq(run_check(AG_SWISH_PLUGIN ":" AG_FIXTURE_PLUGIN, "--op checkfix::swish"), 0);
    expect_row("checkfix::swish", "gen: f32[3,4]", "pass", "skip(no backward)",
               "skip(no backward)");
}
END_TEST

START_TEST(builtin_op_refused) {
    ck_assert_int_eq(run_check(AG_SWISH_PLUGIN, "--op add"), 2);
    expect_text("'add' is a built-in op");
}
END_TEST

/* A wrong backward fails gradcheck (exit 1, message below the table); the generated
 * sample is float32 [3, 4] converted to float64 for gradcheck. */
START_TEST(wrong_gradient_fails) {
    ck_assert_int_eq(run_check(AG_FIXTURE_PLUGIN, "--op square_wrong --backend cpu"), 1);
    /* The wrong backward is a fine function of its own: its derivatives agree. */
    expect_row("checkfix::square_wrong", "gen: f32[3,4]", "pass", "FAIL", "pass");
    expect_text("gradcheck: Jacobian mismatch");
    expect_text("1 row, 3 checks: 2 passed, 1 failed, 0 skipped");
}
END_TEST

/* An op that takes no float64 skips both gradient checks, which is not a failure. */
START_TEST(no_float64_skips) {
    ck_assert_int_eq(run_check(AG_FIXTURE_PLUGIN, "--op twice_f32"), 0);
    expect_row("checkfix::twice_f32", "gen: f32[3,4]", "pass", "skip(input 0 takes no float64)",
               "skip(input 0 takes no float64)");
}
END_TEST

START_TEST(nan_output_fails) {
    ck_assert_int_eq(run_check(AG_FIXTURE_PLUGIN, "--op checkfix::nan"), 1);
    expect_row("checkfix::nan", "gen: f32[3,4]", "FAIL", "skip(forward failed)",
               "skip(forward failed)");
    expect_text("output 0 has 12 NaN/Inf of 12 elements");
}
END_TEST

START_TEST(usage_errors) {
    ck_assert_int_eq(run_check(AG_SWISH_PLUGIN, "--samples 0"), 2);
    ck_assert_int_eq(run_check(AG_SWISH_PLUGIN, "--bogus"), 2);
    ck_assert_int_eq(run_check(AG_SWISH_PLUGIN, "stray"), 2);
    ck_assert_int_eq(run_check("", ""), 2);
    expect_text("nothing to check");
    ck_assert_int_eq(run_check(AG_SWISH_PLUGIN, "--backend 'Bad Name'"), 2);
    ck_assert_int_eq(run_check(AG_SWISH_PLUGIN, "--help"), 0);
    expect_text("usage: ag check");
}
END_TEST

/* A backend that is asked for but does not load is a failure naming it. */
START_TEST(missing_backend) {
    ck_assert_int_eq(run_check(AG_SWISH_PLUGIN, "--backend nosuchbackend"), 1);
    expect_text("nosuchbackend");
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("check_cli");
    TCase *tc = tcase_create("check_cli");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, swish_passes);
    tcase_add_test(tc, default_backends);
    tcase_add_test(tc, logsumexp_once_differentiable);
    tcase_add_test(tc, all_ops);
    tcase_add_test(tc, missing_plugin_file);
    tcase_add_test(tc, unknown_op_lists_available);
    tcase_add_test(tc, ambiguous_bare_name);
    tcase_add_test(tc, builtin_op_refused);
    tcase_add_test(tc, wrong_gradient_fails);
    tcase_add_test(tc, no_float64_skips);
    tcase_add_test(tc, nan_output_fails);
    tcase_add_test(tc, usage_errors);
    tcase_add_test(tc, missing_backend);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
