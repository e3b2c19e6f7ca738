/* Plugin kernels given as source (backend ABI 1.1, plugin ABI 1.1), through the op API on
 * the backend AG_BACKEND names: the OpenCL backend builds the shipped plugins' OpenCL C and
 * the CUDA backend their CUDA C (NVRTC); the cpu runs their cpu kernels, so the same
 * expectations hold there. Checked: swish (one work item per element) on contiguous,
 * transposed and offset inputs; logsumexp (one per row) forward and its backward kernel
 * source; zero-size inputs; float64 refused on compiling backends with a message; a source
 * that does not compile (fixture plugin) fails with the compiler's log. */
#include <check.h>
#include <math.h>
#include <string.h>
#include "ag/plugin.h"
#include "test_util.h"

/* Whether the default device's backend compiles sources (it is not the cpu). */
static bool compiles_sources(void) {
    return strcmp(ag_backend_name(ag_default_device().backend), "cpu") != 0;
}

static const ag_op *op_named(const char *name) {
    const ag_op *op = ag_op_find(name);
    ck_assert_msg(op != NULL, "%s: %s", name, ag_last_error());
    return op;
}

/* A float32 tensor [rows, cols] with values spread over [-4, 4]. */
static ag_tensor *grid(int64_t rows, int64_t cols) {
    ag_generator *gen = ag_generator_new(7);
    ag_tensor *x = ag_uniform(gen, AG_F32, 2, TU_SHAPE(rows, cols), -4, 4);
    ag_generator_free(gen);
    ck_assert_msg(x != NULL, "%s", ag_last_error());
    return x;
}

/* Reads t (at most 4096 elements) into a malloc'ed array. */
static double *values_of(const ag_tensor *t) {
    double *v = malloc(4096 * sizeof *v);
    ck_assert_ptr_nonnull(v);
    ck_assert_msg(tu_read(t, v, 4096) == AG_OK, "%s", ag_last_error());
    return v;
}

/* Checks y = swish(x) elementwise (both read row-major). */
static void assert_swish_of(const ag_tensor *x, const ag_tensor *y) {
    ck_assert_msg(y != NULL, "%s", ag_last_error());
    ck_assert_int_eq(ag_numel(y), ag_numel(x));
    double *xv = values_of(x), *yv = values_of(y);
    for (int64_t i = 0; i < ag_numel(x); i++) {
        const double want = xv[i] / (1 + exp(-xv[i]));
        ck_assert_msg(tu_close(yv[i], want, 1e-6, 1e-5), "swish(%g) = %g, want %g", xv[i], yv[i],
                      want);
    }
    free(xv);
    free(yv);
}

START_TEST(swish_contiguous_strided_and_offset) {
    const ag_op *swish = op_named("swish::swish");
    ag_tensor *x = grid(37, 29);
    assert_swish_of(x, ag_op_call1(swish, 1, &x, NULL));
    /* Not contiguous: the core copies it before the source kernel runs. */
    ag_tensor *xt = ag_transpose(x, 0, 1);
    assert_swish_of(xt, ag_op_call1(swish, 1, &xt, NULL));
    /* Contiguous rows 5..20, starting at an offset. */
    ag_tensor *rows = ag_slice(x, 0, 5, 20, 1);
    ck_assert(ag_is_contiguous(rows));
    assert_swish_of(rows, ag_op_call1(swish, 1, &rows, NULL));
}
END_TEST

START_TEST(logsumexp_forward_and_backward_kernels) {
    enum { ROWS = 6, COLS = 13 };
    ag_tensor *x = grid(ROWS, COLS);
    /* A tie for the maximum in row 2, which the backward splits between the two. */
    ag_tensor *row = ag_select(x, 0, 2);
    ck_assert_int_eq(ag_fill_(ag_slice(row, 0, 3, 5, 1), 9.0) != NULL, 1);
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ag_tensor *out[2] = {NULL, NULL};
    ck_assert_msg(ag_op_call(op_named("fused::logsumexp"), 1, &x, NULL, 2, out) == AG_OK, "%s",
                  ag_last_error());
    /* loss = Σ lse + 2 Σ max: the backward kernel gets g_lse = 1 and g_max = 2. */
    ag_tensor *loss =
        ag_add(ag_sum(out[0], 0, NULL, false), ag_mul_scalar(ag_sum(out[1], 0, NULL, false), 2.0));
    ck_assert_msg(ag_backward(loss, NULL) == AG_OK, "%s", ag_last_error());

    double *xv = values_of(x), *lse = values_of(out[0]), *mx = values_of(out[1]);
    double *g = values_of(ag_tensor_grad(x));
    for (int r = 0; r < ROWS; r++) {
        const double *v = xv + r * COLS;
        double m = -INFINITY, sum = 0;
        int ties = 0;
        for (int k = 0; k < COLS; k++) m = fmax(m, v[k]);
        for (int k = 0; k < COLS; k++) {
            sum += exp(v[k] - m);
            ties += v[k] == m;
        }
        ck_assert_int_eq(ties, r == 2 ? 2 : 1);
        const double want_lse = m + log(sum);
        ck_assert_msg(tu_close(lse[r], want_lse, 1e-5, 1e-5), "lse[%d] %g, want %g", r, lse[r],
                      want_lse);
        ck_assert_msg(mx[r] == m, "max[%d] %g, want %g", r, mx[r], m);
        for (int k = 0; k < COLS; k++) {
            const double want = exp(v[k] - want_lse) + (v[k] == m ? 2.0 / ties : 0);
            ck_assert_msg(tu_close(g[r * COLS + k], want, 1e-6, 1e-4), "grad[%d][%d] %g, want %g",
                          r, k, g[r * COLS + k], want);
        }
    }
    free(xv);
    free(lse);
    free(mx);
    free(g);
}
END_TEST

START_TEST(zero_size_inputs) {
    ag_tensor *x = ag_zeros(AG_F32, 2, TU_SHAPE(0, 5));
    ag_tensor *y = ag_op_call1(op_named("swish::swish"), 1, &x, NULL);
    ck_assert_msg(y != NULL, "%s", ag_last_error());
    ck_assert_int_eq(ag_numel(y), 0);
    ag_tensor *out[2] = {NULL, NULL};
    ck_assert_msg(ag_op_call(op_named("fused::logsumexp"), 1, &x, NULL, 2, out) == AG_OK, "%s",
                  ag_last_error());
    ck_assert_int_eq(ag_numel(out[0]), 0);
}
END_TEST

START_TEST(float64_needs_a_cpu_kernel) {
    ag_tensor *x = tu_tensor(AG_F64, 1, TU_SHAPE(3), TU_VALUES(-1, 0, 2));
    ag_tensor *y = ag_op_call1(op_named("swish::swish"), 1, &x, NULL);
    if (!compiles_sources()) {
        assert_swish_of(x, y);
        return;
    }
    ck_assert_ptr_null(y);
    ck_assert_int_eq(ag_last_status(), AG_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(ag_last_error(), "swish::swish: its ") &&
                      strstr(ag_last_error(), "kernel source takes float32 tensors only") &&
                      strstr(ag_last_error(), "float64[3]"),
                  "%s", ag_last_error());
    ag_clear_error();
}
END_TEST

START_TEST(source_that_does_not_compile) {
    char path[4096];
    snprintf(path, sizeof path, "%s/libag_plugin_badsource.so", AG_TEST_PLUGINS);
    ck_assert_msg(ag_plugin_load(path) == AG_OK, "%s", ag_last_error());
    ag_tensor *x = tu_tensor(AG_F32, 1, TU_SHAPE(4), TU_VALUES(1, 2, 3, 4));
    const ag_attrs attrs = {.ints = {3}};
    ag_tensor *y = ag_op_call1(op_named("badsource::scale"), 1, &x, &attrs);
    if (!compiles_sources()) { /* the cpu kernel runs */
        ck_assert_msg(y != NULL, "%s", ag_last_error());
        return;
    }
    ck_assert_ptr_null(y);
    ck_assert_int_eq(ag_last_status(), AG_ERR_INTERNAL);
    printf("%s\n", ag_last_error());
    ck_assert_msg(strstr(ag_last_error(), "badsource::scale: backend '") &&
                      strstr(ag_last_error(), "could not build kernel 'scale_f32'") &&
                      strstr(ag_last_error(), "not_declared_anywhere"),
                  "%s", ag_last_error());
    ag_clear_error();
}
END_TEST

/* Loads the shipped plugins once for the whole suite. */
static void load_plugins(void) {
    ck_assert_msg(ag_plugin_load(AG_TEST_SWISH_PLUGIN) == AG_OK, "%s", ag_last_error());
    ck_assert_msg(ag_plugin_load(AG_TEST_LSE_PLUGIN) == AG_OK, "%s", ag_last_error());
}

int main(void) {
    Suite *s = suite_create("source_kernels");
    TCase *t = tcase_create("ops");
    tcase_set_timeout(t, 120); /* first builds compile with LLVM (PoCL) or NVRTC */
    tcase_add_unchecked_fixture(t, load_plugins, NULL);
    tcase_add_checked_fixture(t, tu_scope_setup, tu_scope_teardown);
    tcase_add_test(t, swish_contiguous_strided_and_offset);
    tcase_add_test(t, logsumexp_forward_and_backward_kernels);
    tcase_add_test(t, zero_size_inputs);
    tcase_add_test(t, float64_needs_a_cpu_kernel);
    tcase_add_test(t, source_that_does_not_compile);
    suite_add_tcase(s, t);
    return tu_run_suite(s);
}
