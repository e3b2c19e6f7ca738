/* The CUDA backend's own tests, beside the common ones of test_device_backend.c.
 *
 * Offline (no GPU needed, so they run in CI): init without a visible device fails with
 * "no CUDA device: <the runtime's words>", as does `AG_BACKEND=cuda ag info`; every kernel
 * of docs/kernels.md is in the tables; the shipped plugins' CUDA sources compile with NVRTC
 * for sm_80 and sm_90 (the "cuda_compile_test" extra); compile errors carry NVRTC's log.
 * With a device: plugin sources built and launched through the ABI, copies larger than the
 * pinned staging buffers, and the TF32 switch. */
#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ag/plugin.h"
#include "../test_util.h"
#include "device_backend_extras.h"

/* The "cuda_compile_test" extra. */
typedef ag_status (*compile_test_fn)(const char *source, const char *entry, int arch);

static compile_test_fn compile_test(void) {
    compile_test_fn fn = (compile_test_fn)B->get_proc_address("cuda_compile_test");
    ck_assert_ptr_nonnull(fn);
    return fn;
}

/* ---- the shipped plugins' declarations, without libag's loader ---- */

static const ag_plugin_op *g_captured; /* the op the plugin's init registered last */

static ag_status capture_op(ag_plugin_registrar *registrar, const ag_plugin_op *op) {
    (void)registrar;
    g_captured = op;
    return AG_OK;
}

static ag_status report(ag_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    return status;
}

/* The one op of the plugin at path, by calling its init with a host that only records. */
static const ag_plugin_op *plugin_op(const char *path) {
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    ck_assert_msg(lib != NULL, "%s", dlerror());
    ag_plugin_entry_fn entry = (ag_plugin_entry_fn)dlsym(lib, AG_PLUGIN_ENTRY_SYMBOL);
    ck_assert_ptr_nonnull(entry);
    const ag_plugin_info *info = entry(AG_PLUGIN_ABI_MAJOR, AG_PLUGIN_ABI_MINOR);
    static const ag_plugin_host host = {sizeof host, AG_PLUGIN_ABI_MAJOR, AG_PLUGIN_ABI_MINOR,
                                        "test",      capture_op,          report};
    g_captured = NULL;
    ck_assert_int_eq(info->init(&host, NULL), AG_OK);
    ck_assert_ptr_nonnull(g_captured);
    return g_captured; /* the library stays loaded: the op's strings live in it */
}

/* The CUDA source among n, failing if there is none. */
static const ag_plugin_kernel_source *cuda_source(const ag_plugin_kernel_source *s, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(s[i].language, "cuda") == 0) return &s[i];
    ck_abort_msg("no cuda source");
    return NULL;
}

/* ---- offline ---- */

START_TEST(test_no_device_message) {
    char out[1024];
    /* An empty CUDA_VISIBLE_DEVICES hides every GPU, so this holds on GPU machines too. */
    ck_assert_int_eq(run_init_child("CUDA_VISIBLE_DEVICES=", out, sizeof out), 1);
    printf("without a device: %s", out);
    ck_assert_msg(strncmp(out, "no CUDA device: ", 16) == 0, "init said '%s'", out);
}
END_TEST

START_TEST(test_cli_no_device_message) {
    char out[4096] = "";
    const int status = tu_run_command(
        "env AG_BACKEND=cuda CUDA_VISIBLE_DEVICES= " AG_TEST_CLI " info 2>&1", out, sizeof out);
    printf("AG_BACKEND=cuda ag info: %s", out);
    ck_assert(status > 0); /* exited, with a failure status */
    ck_assert_msg(strstr(out, "no CUDA device: "), "ag info said '%s'", out);
    ck_assert_msg(strstr(out, "AG_ERR_DEVICE"), "ag info said '%s'", out);
}
END_TEST

START_TEST(test_kernel_tables) {
    /* Every kernel of docs/kernels.md, as the cpu and OpenCL backends have them. */
    static const char *const all_float[] = {
        "neg",          "abs",        "sign",   "exp",         "log",        "sqrt",
        "sin",          "cos",        "tanh",   "erf",         "rsqrt",      "sigmoid",
        "relu",         "silu",       "gelu",   "pow_scalar",  "clamp",      "copy",
        "add",          "sub",        "mul",    "div",         "pow",        "maximum",
        "minimum",      "eq",         "ne",     "lt",          "le",         "gt",
        "ge",           "where",      "fill",   "arange",      "sum",        "max",
        "min",          "argmax",     "argmin", "matmul",      "softmax",    "log_softmax",
        "index_select", "index_add",  "gather", "scatter_add", "layer_norm", "cross_entropy",
        "sgd_update",   "adam_update"};
    static const char *const also_i64[] = {
        "neg", "abs",     "sign",    "relu",         "clamp",  "copy",       "add",    "sub",
        "mul", "maximum", "minimum", "eq",           "where",  "fill",       "arange", "sum",
        "max", "argmax",  "matmul",  "index_select", "gather", "scatter_add"};
    ag_kernel_fn fn = NULL;
    for (size_t i = 0; i < sizeof all_float / sizeof all_float[0]; i++)
        for (ag_dtype dt = AG_F32; dt <= AG_F64; dt++)
            ck_assert_msg(B->get_kernel(all_float[i], dt, &fn) == AG_OK && fn, "%s %s: %s",
                          all_float[i], ag_dtype_name(dt), B->last_error());
    for (size_t i = 0; i < sizeof also_i64 / sizeof also_i64[0]; i++)
        ck_assert_msg(B->get_kernel(also_i64[i], AG_I64, &fn) == AG_OK, "%s int64: %s", also_i64[i],
                      B->last_error());
    /* Half precision where cuBLAS takes it (the mixed-precision work) and in copy, which
     * converts to and from it (the core computes the rest in float32). */
    ck_assert_int_eq(B->get_kernel("matmul", AG_F16, &fn), AG_OK);
    ck_assert_int_eq(B->get_kernel("matmul", AG_BF16, &fn), AG_OK);
    ck_assert_int_eq(B->get_kernel("copy", AG_F16, &fn), AG_OK);
    ck_assert_int_eq(B->get_kernel("copy", AG_BF16, &fn), AG_OK);
    assert_error(B->get_kernel("exp", AG_F16, &fn), AG_ERR_UNSUPPORTED,
                 "cuda backend has no kernel 'exp' for float16");
    assert_error(B->get_kernel("exp", AG_I64, &fn), AG_ERR_UNSUPPORTED,
                 "cuda backend has no kernel 'exp' for int64 (it has float32, float64)");
    assert_error(B->get_kernel("nope", AG_F32, &fn), AG_ERR_UNSUPPORTED, "no kernel 'nope'");
}
END_TEST

START_TEST(test_plugin_sources_compile) {
    compile_test_fn compile = compile_test();
    const ag_plugin_op *swish = plugin_op(AG_TEST_SWISH_PLUGIN);
    const ag_plugin_op *lse = plugin_op(AG_TEST_LSE_PLUGIN);
    const ag_plugin_kernel_source *sources[] = {
        cuda_source(swish->sources, swish->n_sources),
        cuda_source(lse->sources, lse->n_sources),
        cuda_source(lse->backward_sources, lse->n_backward_sources),
    };
    static const int archs[] = {80, 90};
    for (size_t i = 0; i < sizeof sources / sizeof sources[0]; i++)
        for (size_t a = 0; a < sizeof archs / sizeof archs[0]; a++)
            ck_assert_msg(compile(sources[i]->source, sources[i]->entry, archs[a]) == AG_OK,
                          "%s for sm_%d: %s", sources[i]->entry, archs[a], B->last_error());
}
END_TEST

START_TEST(test_compile_errors) {
    compile_test_fn compile = compile_test();
    static const char bad[] = "extern \"C\" __global__ void broken(float *x) {\n"
                              "    x[0] = not_declared_anywhere + 1;\n"
                              "}\n";
    const ag_status st = compile(bad, "broken", 90);
    printf("compile failure message: %s\n", B->last_error());
    assert_error(st, AG_ERR_INTERNAL, "not_declared_anywhere");
    ck_assert(strstr(B->last_error(), "'broken'") && strstr(B->last_error(), "sm_90"));
    static const char good[] = "extern \"C\" __global__ void twice(float *x) { x[0] *= 2; }\n";
    ck_assert_msg(compile(good, "twice", 80) == AG_OK, "%s", B->last_error());
    /* An entry the program does not define. */
    assert_error(compile(good, "absent", 80), AG_ERR_INTERNAL, "absent");
    assert_error(compile(NULL, "twice", 80), AG_ERR_INVALID_ARG, "NULL");
}
END_TEST

TCase *cuda_offline_tcase(void) {
    TCase *t = tcase_create("cuda_offline");
    tcase_add_test(t, test_no_device_message);
    tcase_add_test(t, test_cli_no_device_message);
    tcase_add_test(t, test_kernel_tables);
    tcase_add_test(t, test_plugin_sources_compile);
    tcase_add_test(t, test_compile_errors);
    return t;
}

/* ---- with a device ---- */

START_TEST(test_source_kernel_launch) {
    const ag_plugin_op *swish = plugin_op(AG_TEST_SWISH_PLUGIN);
    const ag_plugin_kernel_source *src = cuda_source(swish->sources, swish->n_sources);
    void *kernel = NULL, *again = NULL;
    ck_assert_msg(B->build_source(src->source, src->entry, &kernel) == AG_OK, "%s",
                  B->last_error());
    ck_assert_int_eq(B->build_source(src->source, src->entry, &again), AG_OK);
    ck_assert_ptr_eq(kernel, again); /* compiled once */

    enum { N = 1000 };
    float host[N], back[N];
    for (int i = 0; i < N; i++) host[i] = (float)(i - N / 2) / 50.0f;
    void *x = NULL, *y = NULL;
    ck_assert_int_eq(B->alloc(0, sizeof host, &x), AG_OK);
    ck_assert_int_eq(B->alloc(0, sizeof host, &y), AG_OK);
    ck_assert_int_eq(B->copy_from_host(0, x, 0, host, sizeof host), AG_OK);
    ag_kernel_tensor in = {.data = x, .dtype = AG_F32, .ndim = 1, .shape = {N}, .strides = {1}};
    ag_kernel_tensor out = {.data = y, .dtype = AG_F32, .ndim = 1, .shape = {N}, .strides = {1}};
    static const ag_attrs attrs;
    const ag_kernel_args args = {sizeof args, 0, 1, 1, &in, &out, &attrs};
    const int64_t n = N;
    ck_assert_msg(B->launch_source(kernel, &args, 1, &n, n) == AG_OK, "%s", B->last_error());
    ck_assert_int_eq(B->launch_source(kernel, &args, 1, &n, 0), AG_OK); /* nothing to run */
    ck_assert_int_eq(B->copy_to_host(0, back, y, 0, sizeof back), AG_OK);
    for (int i = 0; i < N; i++) {
        const double want = host[i] / (1.0 + exp(-(double)host[i]));
        ck_assert_msg(fabs(back[i] - want) <= 1e-6 * (1 + fabs(want)), "swish(%g) = %g, want %g",
                      host[i], back[i], want);
    }
    B->free(0, x, sizeof host);
    B->free(0, y, sizeof host);
    assert_error(B->build_source("this is not CUDA", "k", &kernel), AG_ERR_INTERNAL, "NVRTC");
}
END_TEST

START_TEST(test_large_copies_through_staging) {
    /* Larger than the two 4 MiB pinned chunks together, at an odd offset. */
    const size_t n = (9u << 20) + 123, offset = 77;
    unsigned char *src = malloc(n), *dst = malloc(n), *keep = malloc(n);
    ck_assert(src && dst && keep);
    for (size_t k = 0; k < n; k++) src[k] = (unsigned char)(k * 13 + 5);
    memcpy(keep, src, n);
    void *buf = NULL;
    ck_assert_int_eq(B->alloc(0, n + offset, &buf), AG_OK);
    ck_assert_int_eq(B->copy_from_host(0, buf, offset, src, n), AG_OK);
    memset(src, 0, n); /* the caller may reuse its memory as soon as the copy returns */
    ck_assert_int_eq(B->copy_to_host(0, dst, buf, offset, n), AG_OK);
    ck_assert_mem_eq(dst, keep, n);
    B->free(0, buf, n + offset);
    free(src);
    free(dst);
    free(keep);
}
END_TEST

START_TEST(test_tf32_switch) {
    void (*set)(int) = (void (*)(int))B->get_proc_address("cuda_set_allow_tf32");
    int (*get)(void) = (int (*)(void))B->get_proc_address("cuda_get_allow_tf32");
    ck_assert(set && get);
    const int before = get();
    set(1);
    ck_assert_int_eq(get(), 1);
    set(0);
    ck_assert_int_eq(get(), 0);
    set(before);
}
END_TEST

TCase *cuda_device_tcase(void) {
    TCase *t = tcase_create("cuda");
    tcase_add_test(t, test_source_kernel_launch);
    tcase_add_test(t, test_large_copies_through_staging);
    tcase_add_test(t, test_tf32_switch);
    return t;
}
