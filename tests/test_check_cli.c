/* `ag check` (tools/cmd_check.c), run as a program: every built-in op passes against the
 * cpu, the shipped plugins pass (swish twice differentiable, fused::logsumexp once
 * differentiable), and failures, skips and usage errors give the documented table cells,
 * messages and exit statuses.
 *
 * This file is also two fixtures of these tests, built again by tests/check_cli.cmake:
 * with AG_CHECK_FIXTURE_PLUGIN, libag_check_fixture.so, whose ops are each wrong (or
 * limited) in one way that ag check must report; with AG_CHECK_FIXTURE_BACKEND,
 * libag_backend_checkbad.so, a backend whose few kernels are wrong in known ways. */
#if defined(AG_CHECK_FIXTURE_BACKEND)

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "ag/backend.h"

/* Spare bytes after every buffer, so that the kernel writing past its output below spoils
 * no other allocation when the core (not the guard check) calls it. */
#define SLACK 64

static _Thread_local const char *message = "";

static const char *bad_last_error(void) {
    return message;
}

static int bad_device_count(void) {
    return 1;
}

static ag_status bad_alloc(int device, size_t bytes, void **out) {
    (void)device;
    *out = calloc(1, bytes + SLACK);
    message = *out ? "" : "checkbad: out of memory";
    return *out ? AG_OK : AG_ERR_OUT_OF_MEMORY;
}

static void bad_free(int device, void *buffer, size_t bytes) {
    (void)device, (void)bytes;
    free(buffer);
}

static ag_status bad_copy_from_host(int device, void *dst, size_t dst_offset, const void *src,
                                    size_t bytes) {
    (void)device;
    memcpy((char *)dst + dst_offset, src, bytes);
    return AG_OK;
}

static ag_status bad_copy_to_host(int device, void *dst, const void *src, size_t src_offset,
                                  size_t bytes) {
    (void)device;
    memcpy(dst, (const char *)src + src_offset, bytes);
    return AG_OK;
}

static ag_status bad_synchronize(int device) {
    (void)device;
    return AG_OK;
}

/* Element offset of the i-th element (row-major) of a kernel tensor. */
static int64_t at(const ag_kernel_tensor *t, int64_t i) {
    int64_t off = t->offset;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += i % t->shape[d] * t->strides[d];
        i /= t->shape[d];
    }
    return off;
}

static double load(const ag_kernel_tensor *t, int64_t i) {
    return t->dtype == AG_F32 ? ((const float *)t->data)[at(t, i)]
                              : ((const double *)t->data)[at(t, i)];
}

static void store(const ag_kernel_tensor *t, int64_t i, double v) {
    if (t->dtype == AG_F32)
        ((float *)t->data)[at(t, i)] = (float)v;
    else
        ((double *)t->data)[at(t, i)] = v;
}

static int64_t count(const ag_kernel_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

/* add: right, then one element more past the output's end. */
static ag_status add_past_end(const ag_kernel_args *a) {
    int64_t n = count(&a->outputs[0]);
    for (int64_t i = 0; i < n; i++)
        store(&a->outputs[0], i, load(&a->inputs[0], i) + load(&a->inputs[1], i));
    const ag_kernel_tensor *y = &a->outputs[0]; /* contiguous */
    if (y->dtype == AG_F32)
        ((float *)y->data)[y->offset + n] = 0;
    else
        ((double *)y->data)[y->offset + n] = 0;
    return AG_OK;
}

/* neg: off by a little everywhere. */
static ag_status neg_wrong(const ag_kernel_args *a) {
    for (int64_t i = 0; i < count(&a->outputs[0]); i++)
        store(&a->outputs[0], i, -1.01 * load(&a->inputs[0], i));
    return AG_OK;
}

/* exp: NaN in the first element. */
static ag_status exp_nan(const ag_kernel_args *a) {
    for (int64_t i = 0; i < count(&a->outputs[0]); i++)
        store(&a->outputs[0], i, i ? exp(load(&a->inputs[0], i)) : NAN);
    return AG_OK;
}

/* Float kernels add, neg and exp; nothing else. */
static ag_status bad_get_kernel(const char *kernel, ag_dtype dtype, ag_kernel_fn *out) {
    static const struct {
        const char *name;
        ag_kernel_fn fn;
    } kernels[] = {{"add", add_past_end}, {"neg", neg_wrong}, {"exp", exp_nan}};
    for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++)
        if (strcmp(kernel, kernels[i].name) == 0 && (dtype == AG_F32 || dtype == AG_F64)) {
            *out = kernels[i].fn;
            return AG_OK;
        }
    message = "checkbad: no such kernel";
    return AG_ERR_UNSUPPORTED;
}

static const ag_backend_iface table = {
    .struct_size = sizeof(ag_backend_iface),
    .abi_major = AG_BACKEND_ABI_MAJOR,
    .abi_minor = AG_BACKEND_ABI_MINOR,
    .name = "checkbad",
    .last_error = bad_last_error,
    .device_count = bad_device_count,
    .alloc = bad_alloc,
    .free = bad_free,
    .copy_from_host = bad_copy_from_host,
    .copy_to_host = bad_copy_to_host,
    .synchronize = bad_synchronize,
    .get_kernel = bad_get_kernel,
};

/* Backend entry of the fixture. */
const ag_backend_iface *ag_backend_entry(uint32_t host_abi_major, uint32_t host_abi_minor) {
    (void)host_abi_minor;
    return host_abi_major == AG_BACKEND_ABI_MAJOR ? &table : NULL;
}

#elif defined(AG_CHECK_FIXTURE_PLUGIN)

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
#include "test_util.h"

#if !defined(AG_CLI_PATH) || !defined(AG_SWISH_PLUGIN) || !defined(AG_LSE_PLUGIN) ||               \
    !defined(AG_FIXTURE_PLUGIN) || !defined(AG_FIXTURE_BACKEND_DIR) || !defined(AG_CSV_PATH)
#error "tests/check_cli.cmake defines the paths of the CLI, the plugins and the fixtures"
#endif

static char out[1 << 20];

/* Runs `<env> ag check <args>`, stdout and stderr into out; returns the exit status (-1 if
 * it did not exit normally). */
static int run_env(const char *env, const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "env %s '%s' check %s 2>&1", env, AG_CLI_PATH, args);
    return tu_run_command(cmd, out, sizeof out);
}

/* Runs `AG_PLUGINS=<plugins> ag check <args>`. */
static int run_check(const char *plugins, const char *args) {
    char env[2048];
    snprintf(env, sizeof env, "AG_PLUGINS='%s'", plugins);
    return run_env(env, args);
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

/* Asserts that the table row of op on backend whose sample column starts with `sample`
 * has the check cells `cells`, joined by '|' ("OK|FAIL(NMSE 1.0e-04)|-"). */
static void expect_cells(const char *op, const char *backend, const char *sample,
                         const char *cells) {
    char cols[8][256], got[1024];
    for (const char *line = out; *line;) {
        int n = split_columns(line, cols);
        if (n > 3 && strcmp(cols[0], op) == 0 && strcmp(cols[1], backend) == 0 &&
            strncmp(cols[2], sample, strlen(sample)) == 0) {
            int len = 0;
            for (int c = 3; c < n; c++)
                len += snprintf(got + len, sizeof got - (size_t)len, c > 3 ? "|%s" : "%s", cols[c]);
            ck_assert_str_eq(got, cells);
            return;
        }
        const char *eol = strchr(line, '\n');
        if (!eol) break;
        line = eol + 1;
    }
    ck_abort_msg("no row for %s on %s, sample %s in:\n%s", op, backend, sample, out);
}

/* Asserts that the table row of plugin op on cpu:0 whose sample column starts with `sample`
 * reads forward, gradcheck, gradgradcheck. */
static void expect_row(const char *op, const char *sample, const char *forward,
                       const char *gradcheck, const char *gradgradcheck) {
    char cells[1024];
    snprintf(cells, sizeof cells, "%s|%s|%s", forward, gradcheck, gradgradcheck);
    expect_cells(op, "cpu:0", sample, cells);
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

/* Without --op and --plugin: every built-in op and every op of every loaded plugin, in two
 * tables; --samples limits the rows. */
START_TEST(all_ops) {
    ck_assert_int_eq(run_check(AG_SWISH_PLUGIN ":" AG_LSE_PLUGIN, "--samples 1 --backend cpu"), 0);
    expect_row("swish::swish", "0: ", "pass", "pass", "pass");
    expect_row("fused::logsumexp", "0: ", "pass", "pass", "pass(once_differentiable)");
    expect_text("plugin ops: 2 rows, 6 checks: 6 passed"); /* --samples 1: one row per op */
    expect_cells("add", "cpu:0", "f32 [17,33]T, [33]", "OK|OK|OK");
    ck_assert_ptr_null(strstr(out, "by a 0-dim")); /* add's second recipe */
    expect_text(" 0 failed, 0 not supported");
    /* The composite functions (conv2d, ...) have a table of their own: forward, backward. */
    expect_cells("conv2d", "cpu:0", "f32 [2,4,5,6], [4,2,3,2], [4] (groups 2", "OK|OK");
    ck_assert_ptr_null(strstr(out, "no padding, no bias")); /* conv2d's second sample */
    /* Every float dtype: 16-bit rows run in float32 through conversions. */
    expect_cells("conv2d", "cpu:0", "bf16 [2,4,5,6], [4,2,3,2], [4] (groups 2", "OK|OK");
    expect_text("composite functions: 32 rows, 64 checks: 64 OK, 0 failed");
}
END_TEST

/* A composite function by name, with --gradcheck: gradcheck and gradgradcheck in float64
 * (float32 rows have none). */
START_TEST(composite_checked) {
    ck_assert_int_eq(run_check("", "--op batch_norm --op batch_norm --backend cpu --gradcheck"), 0);
    expect_cells("batch_norm", "cpu:0", "f64 [3,2,3,2], [2], [2] (training, affine)",
                 "OK|OK|OK|OK");
    expect_cells("batch_norm", "cpu:0", "f32 [3,2,3,2]", "OK|OK|-|-");
    expect_cells("batch_norm", "cpu:0", "f16 [3,2,3,2]", "OK|OK|-|-");
    expect_text("composite functions: 4 rows, 16 checks: 10 OK, 0 failed, 0 not supported, "
                "6 not applicable");
    ck_assert_ptr_null(strstr(out, "built-in ops")); /* --op: only what is named */
    ck_assert_ptr_null(strstr(out, "conv2d"));
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
    expect_text("built-in ops: full_like arange add");
    expect_text("composite functions: conv2d max_pool2d avg_pool2d batch_norm group_norm "
                "rnn_cell gru_cell lstm_cell");
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

/* A built-in op by name: compared with the cpu, itself here. */
START_TEST(builtin_op_checked) {
    ck_assert_int_eq(run_check(AG_SWISH_PLUGIN, "--op add --op add --backend cpu"), 0);
    expect_cells("add", "cpu:0", "f32 [17,33]T, [33]", "OK|OK|OK");
    expect_cells("add", "cpu:0", "i64 [5,7], [] (by a 0-dim)", "OK|-|OK");
    /* 16-bit rows run the float32 kernel through conversions: no guard check of theirs. */
    expect_cells("add", "cpu:0", "f16 [17,33]T, [33]", "OK|OK|-");
    expect_text("built-in ops: 10 rows, 30 checks: 24 OK, 0 failed, 0 not supported, "
                "6 not applicable");
    ck_assert_ptr_null(strstr(out, "swish::swish")); /* --op: only the ops named */
}
END_TEST

/* The test: every built-in op on a second cpu device (inputs moved there with
 * ag_to_device) against cpu:0, with gradcheck and the forward-mode Jacobian against the
 * reverse-mode one (jvp), and the CSV of it. */
START_TEST(every_builtin_against_cpu) {
    ck_assert_int_eq(
        run_env("AG_PLUGINS= AG_CPU_DEVICES=2", "--backend cpu:1 --gradcheck --csv " AG_CSV_PATH),
        0);
    expect_text("built-in ops:\nop ");
    expect_text(" 0 failed, 0 not supported");
    ck_assert_ptr_null(strstr(out, "no sample"));
    expect_cells("matmul", "cpu:1", "f64 [2,19,23], [2,23,21] (batched)", "OK|OK|OK|OK|OK");
    expect_cells("matmul", "cpu:1", "f32 [37,29]T, [29,41]", "OK|OK|OK|-|-");
    expect_cells("sum", "cpu:1", "i64 [5,7,9]T (dims 0,2 keepdim)", "OK|-|OK|-|-");
    expect_cells("cross_entropy", "cpu:1", "f64 [17,10]T, i64[17] (smoothing 0.1)",
                 "OK|OK|OK|OK|OK");
    expect_cells("to_device", "cpu:1", "f32 [17,33]T (to the cpu)", "OK|OK|-|-|-");
    expect_cells("adam_update", "cpu:1", "f32 ", "OK|-|-|-|-");
    FILE *f = fopen(AG_CSV_PATH, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    fclose(f);
    expect_text("table,op,backend,sample,check,result,reason,message\n");
    expect_text("\"builtin\",\"matmul\",\"cpu:1\",\"f64 [2,19,23], [2,23,21] (batched)\","
                "\"gradcheck\",\"OK\",\"\",\"\"\n");
    expect_text("\"builtin\",\"matmul\",\"cpu:1\",\"f64 [2,19,23], [2,23,21] (batched)\","
                "\"jvp\",\"OK\",\"\",\"\"\n");
}
END_TEST

/* A backend whose kernels are wrong: out-of-bounds writes, wrong values, NaN and missing
 * kernels each give their cell; exit 1. */
START_TEST(bad_backend_fails) {
    ck_assert_int_eq(run_env("AG_PLUGINS= AG_BACKEND_PATH=" AG_FIXTURE_BACKEND_DIR,
                             "--backend checkbad --op add --op neg --op exp --op sub"),
                     1);
    expect_cells("add", "checkbad:0", "f32 [17,33]T, [33]",
                 "OK|not supported(no kernel)|FAIL(out of bounds)");
    expect_cells("add", "checkbad:0", "i64 [17,33]T, [33]",
                 "not supported(no kernel)|-|not supported(no kernel)");
    expect_text("kernel 'add' (float32) wrote outside its output of 2244 bytes: 0 of the 256 "
                "guard bytes before it and 4 of the 256 after it changed");
    expect_cells("neg", "checkbad:0", "f64 [17,33]T", "FAIL(NMSE 1.0e-04)|-|OK");
    expect_text("output 0: NMSE 0.0001 against the cpu's is above 1e-14");
    expect_cells("exp", "checkbad:0", "f32 [17,33]T", "FAIL(NaN/Inf)|-|OK");
    expect_text("output 0 has 1 NaN/Inf of 561 where the cpu's is finite");
    expect_cells("sub", "checkbad:0", "f32 [5,7], []",
                 "not supported(no kernel)|not supported(no kernel)|not supported(no kernel)");
    expect_text("checkbad: no such kernel");
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
    ck_assert_int_eq(run_check(AG_SWISH_PLUGIN, "--op swish --csv /nonexistent/dir/x.csv"), 1);
    expect_text("cannot write /nonexistent/dir/x.csv");
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
    tcase_add_test(tc, builtin_op_checked);
    tcase_add_test(tc, composite_checked);
    tcase_add_test(tc, every_builtin_against_cpu);
    tcase_add_test(tc, bad_backend_fails);
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
