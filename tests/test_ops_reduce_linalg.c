/* Reductions (sum, mean, var, max, min, argmax, argmin, norm, sum_to_shape) and linear
 * algebra (matmul, softmax, log_softmax): values against PyTorch's (computed by hand or
 * with torch 2.x), first and second derivatives with gradcheck/gradgradcheck in float64,
 * edge shapes (0-dim, zero-size, non-contiguous, broadcast batch dims) and error cases. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "ag/ag.h"
#include "test_util.h"

/* float64 tensor of the given shape from row-major values. */
static ag_tensor *f64(int ndim, const int64_t *shape, const double *values) {
    ag_tensor *t = ag_from_f64(values, ndim, shape);
    ck_assert_ptr_nonnull(t);
    return t;
}

/* Checks shape and values (compared as float64; NaN matches NaN, inf matches inf). */
static void assert_tensor(const ag_tensor *t, int ndim, const int64_t *shape,
                          const double *expected, double tol) {
    ck_assert_msg(t != NULL, "NULL result: %s", ag_last_error());
    ck_assert_int_eq(ag_ndim(t), ndim);
    for (int d = 0; d < ndim; d++) ck_assert_int_eq(ag_shape(t)[d], shape[d]);
    int64_t n = ag_numel(t);
    double got[64];
    ck_assert_int_le(n, 64);
    ag_tensor *as_f64 = ag_to_dtype((ag_tensor *)t, AG_F64);
    ck_assert_int_eq(ag_to_host(as_f64, got, (size_t)n * sizeof *got), AG_OK);
    for (int64_t i = 0; i < n; i++) {
        bool same = isnan(expected[i])   ? isnan(got[i])
                    : isinf(expected[i]) ? got[i] == expected[i]
                                         : fabs(got[i] - expected[i]) <= tol;
        ck_assert_msg(same, "element %lld: got %.12g expected %.12g", (long long)i, got[i],
                      expected[i]);
    }
}

static void assert_error(const ag_tensor *result, ag_status expected, const char *words) {
    ck_assert_ptr_null(result);
    ck_assert_int_eq(ag_last_status(), expected);
    ck_assert_msg(strstr(ag_last_error(), words), "message '%s' lacks '%s'", ag_last_error(),
                  words);
    ag_clear_error();
}

static const int64_t S2x3[] = {2, 3};
static const double X2x3[] = {1, 2, 3, 4, 5, 6};

/* ---- values ---- */

START_TEST(sum_values) {
    ag_tensor *x = f64(2, S2x3, X2x3);
    assert_tensor(ag_sum(x, 0, NULL, false), 0, NULL, (double[]){21}, 1e-12);
    assert_tensor(ag_sum(x, 1, (int[]){0}, false), 1, (int64_t[]){3}, (double[]){5, 7, 9}, 0);
    assert_tensor(ag_sum(x, 1, (int[]){-1}, true), 2, (int64_t[]){2, 1}, (double[]){6, 15}, 0);
    assert_tensor(ag_sum(x, 2, (int[]){1, 0}, true), 2, (int64_t[]){1, 1}, (double[]){21}, 0);
    /* int64 stays int64. */
    ag_tensor *xi = ag_from_i64((int64_t[]){1, 2, 3, 4, 5, 6}, 2, S2x3);
    ag_tensor *si = ag_sum(xi, 1, (int[]){1}, false);
    ck_assert_int_eq(ag_dtype_of(si), AG_I64);
    assert_tensor(si, 1, (int64_t[]){2}, (double[]){6, 15}, 0);
    /* 0-dim: dim 0 and -1 are accepted and reduce nothing. */
    ag_tensor *s = ag_scalar(AG_F64, 2.5);
    assert_tensor(ag_sum(s, 1, (int[]){-1}, false), 0, NULL, (double[]){2.5}, 0);
    assert_tensor(ag_sum(s, 0, NULL, true), 0, NULL, (double[]){2.5}, 0);
    /* Zero-size: an empty sum is 0. */
    ag_tensor *z = ag_zeros(AG_F64, 2, (int64_t[]){0, 3});
    assert_tensor(ag_sum(z, 1, (int[]){0}, false), 1, (int64_t[]){3}, (double[]){0, 0, 0}, 0);
    assert_tensor(ag_sum(z, 1, (int[]){1}, true), 2, (int64_t[]){0, 1}, NULL, 0);
    /* Non-contiguous input: the transpose of x. */
    assert_tensor(ag_sum(ag_transpose(x, 0, 1), 1, (int[]){1}, false), 1, (int64_t[]){3},
                  (double[]){5, 7, 9}, 0);
    ck_assert_ptr_null(ag_grad_fn_name(ag_sum(x, 0, NULL, false)));
}
END_TEST

START_TEST(mean_var_values) {
    ag_tensor *x = f64(2, S2x3, X2x3);
    assert_tensor(ag_mean(x, 1, (int[]){1}, false), 1, (int64_t[]){2}, (double[]){2, 5}, 1e-12);
    assert_tensor(ag_mean(x, 0, NULL, true), 2, (int64_t[]){1, 1}, (double[]){3.5}, 1e-12);
    /* torch.mean(torch.zeros(0)) = nan */
    assert_tensor(ag_mean(ag_zeros(AG_F64, 1, (int64_t[]){0}), 0, NULL, false), 0, NULL,
                  (double[]){NAN}, 0);
    ag_tensor *v = f64(1, (int64_t[]){4}, (double[]){1, 2, 3, 4});
    assert_tensor(ag_var(v, 0, NULL, 1, false), 0, NULL, (double[]){5.0 / 3}, 1e-12);
    assert_tensor(ag_var(v, 0, NULL, 0, false), 0, NULL, (double[]){1.25}, 1e-12);
    ag_tensor *m = f64(2, (int64_t[]){2, 2}, (double[]){1, 2, 3, 5});
    assert_tensor(ag_var(m, 1, (int[]){0}, 1, true), 2, (int64_t[]){1, 2}, (double[]){2, 4.5},
                  1e-12);
    /* Divisor max(N - correction, 0) = 0: torch gives inf, and nan for 0/0. */
    assert_tensor(ag_var(v, 0, NULL, 4, false), 0, NULL, (double[]){INFINITY}, 0);
    assert_tensor(ag_var(v, 0, NULL, 7, false), 0, NULL, (double[]){INFINITY}, 0);
    assert_tensor(ag_var(ag_scalar(AG_F64, 3), 0, NULL, 1, false), 0, NULL, (double[]){NAN}, 0);
    /* float32 stays float32. */
    ag_tensor *x32 = ag_to_dtype(x, AG_F32);
    ck_assert_int_eq(ag_dtype_of(ag_mean(x32, 0, NULL, false)), AG_F32);
    ck_assert_int_eq(ag_dtype_of(ag_var(x32, 0, NULL, 1, false)), AG_F32);
}
END_TEST

START_TEST(max_min_values_and_tie_gradient) {
    ag_tensor *x = f64(2, S2x3, (double[]){1, 5, 5, 7, 0, -2});
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    assert_tensor(ag_max(x, 0, NULL, false), 0, NULL, (double[]){7}, 0);
    assert_tensor(ag_min(x, 1, (int[]){0}, false), 1, (int64_t[]){3}, (double[]){1, 0, -2}, 0);
    assert_tensor(ag_min(x, 1, (int[]){-1}, true), 2, (int64_t[]){2, 1}, (double[]){1, -2}, 0);
    ag_tensor *mx = ag_max(x, 1, (int[]){1}, false);
    assert_tensor(mx, 1, (int64_t[]){2}, (double[]){5, 7}, 0);
    ck_assert_str_eq(ag_grad_fn_name(mx), "max");
    /* torch.amax splits the gradient between ties: [[0, .5, .5], [1, 0, 0]]. */
    ck_assert_int_eq(ag_backward(ag_sum(mx, 0, NULL, false), NULL), AG_OK);
    assert_tensor(ag_tensor_grad(x), 2, S2x3, (double[]){0, 0.5, 0.5, 1, 0, 0}, 1e-12);
    /* int64 works and stays int64. */
    ag_tensor *xi = ag_from_i64((int64_t[]){3, -1, 4}, 1, (int64_t[]){3});
    ag_tensor *mi = ag_min(xi, 0, NULL, false);
    ck_assert_int_eq(ag_dtype_of(mi), AG_I64);
    assert_tensor(mi, 0, NULL, (double[]){-1}, 0);
    /* A reduction over a zero-size dim has no identity; other zero-size dims are fine. */
    ag_tensor *z = ag_zeros(AG_F64, 2, (int64_t[]){0, 3});
    assert_tensor(ag_max(z, 1, (int[]){1}, false), 1, (int64_t[]){0}, NULL, 0);
    assert_error(ag_max(z, 1, (int[]){0}, false), AG_ERR_SHAPE, "non-zero size");
    assert_error(ag_min(z, 0, NULL, false), AG_ERR_SHAPE, "non-zero size");
}
END_TEST

START_TEST(argmax_argmin_values) {
    ag_tensor *x = f64(2, S2x3, (double[]){1, 5, 5, 7, 0, -2});
    ag_tensor *a = ag_argmax(x, 1, false, false);
    ck_assert_int_eq(ag_dtype_of(a), AG_I64);
    ck_assert(!ag_requires_grad(a));
    assert_tensor(a, 1, (int64_t[]){2}, (double[]){1, 0}, 0); /* first of the ties */
    assert_tensor(ag_argmax(x, -1, true, false), 2, (int64_t[]){2, 1}, (double[]){1, 0}, 0);
    assert_tensor(ag_argmin(x, 0, false, false), 1, (int64_t[]){3}, (double[]){0, 1, 1}, 0);
    /* flatten: the dim is ignored; keepdim gives all-ones of the input's rank (torch 2.x). */
    assert_tensor(ag_argmax(x, 99, false, true), 0, NULL, (double[]){3}, 0);
    assert_tensor(ag_argmin(x, 0, true, true), 2, (int64_t[]){1, 1}, (double[]){5}, 0);
    /* Non-contiguous: argmax of x^T along dim 0 equals argmax of x along dim 1. */
    assert_tensor(ag_argmax(ag_transpose(x, 0, 1), 0, false, false), 1, (int64_t[]){2},
                  (double[]){1, 0}, 0);
    /* 0-dim input: index 0 for dim 0/-1 and for flatten. */
    ag_tensor *s = ag_scalar(AG_F64, 4);
    assert_tensor(ag_argmax(s, -1, false, false), 0, NULL, (double[]){0}, 0);
    assert_tensor(ag_argmin(s, 0, true, true), 0, NULL, (double[]){0}, 0);
    /* Requires-grad inputs give an int64 result without history. */
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ck_assert_ptr_null(ag_grad_fn_name(ag_argmax(x, 0, false, false)));
    /* Zero-size. */
    ag_tensor *z = ag_zeros(AG_F64, 2, (int64_t[]){0, 3});
    assert_tensor(ag_argmax(z, 1, false, false), 1, (int64_t[]){0}, NULL, 0);
    assert_error(ag_argmax(z, 0, false, false), AG_ERR_SHAPE, "non-zero size");
    assert_error(ag_argmin(z, 0, false, true), AG_ERR_SHAPE, "non-zero size");
    assert_error(ag_argmax(x, 2, false, false), AG_ERR_INDEX, "out of range");
}
END_TEST

START_TEST(norm_values) {
    ag_tensor *v = f64(1, (int64_t[]){2}, (double[]){3, -4});
    assert_tensor(ag_norm(v, 2, 0, NULL, false), 0, NULL, (double[]){5}, 1e-12);
    assert_tensor(ag_norm(v, 1, 0, NULL, false), 0, NULL, (double[]){7}, 1e-12);
    assert_tensor(ag_norm(v, 3, 0, NULL, false), 0, NULL, (double[]){4.497941445275415}, 1e-12);
    assert_tensor(ag_norm(v, 0.5, 0, NULL, false), 0, NULL, (double[]){13.928203230275509}, 1e-12);
    assert_tensor(ag_norm(v, INFINITY, 0, NULL, true), 1, (int64_t[]){1}, (double[]){4}, 0);
    ag_tensor *m = f64(2, (int64_t[]){2, 2}, (double[]){3, 4, 0, 0});
    assert_tensor(ag_norm(m, 2, 1, (int[]){-1}, false), 1, (int64_t[]){2}, (double[]){5, 0}, 1e-12);
    /* An empty norm is 0 (torch.linalg.vector_norm). */
    assert_tensor(ag_norm(ag_zeros(AG_F64, 1, (int64_t[]){0}), 2, 0, NULL, false), 0, NULL,
                  (double[]){0}, 0);
    /* At x = 0 PyTorch's norm gradient is 0, not NaN, for every p. */
    const double ps[] = {2, 3, 0.5, 1};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
        ag_tensor *z = ag_zeros(AG_F64, 1, (int64_t[]){3});
        ck_assert_int_eq(ag_set_requires_grad(z, true), AG_OK);
        ck_assert_int_eq(ag_backward(ag_norm(z, ps[i], 0, NULL, false), NULL), AG_OK);
        assert_tensor(ag_tensor_grad(z), 1, (int64_t[]){3}, (double[]){0, 0, 0}, 0);
    }
    /* The gradient where some elements are 0: d||x||_2 = x / ||x||. */
    ag_tensor *w = f64(1, (int64_t[]){3}, (double[]){3, 0, -4});
    ck_assert_int_eq(ag_set_requires_grad(w, true), AG_OK);
    ck_assert_int_eq(ag_backward(ag_norm(w, 2, 0, NULL, false), NULL), AG_OK);
    assert_tensor(ag_tensor_grad(w), 1, (int64_t[]){3}, (double[]){0.6, 0, -0.8}, 1e-12);
}
END_TEST

START_TEST(sum_to_shape_values) {
    ag_tensor *x = ag_ones(AG_F64, 3, (int64_t[]){2, 3, 4});
    assert_tensor(ag_sum_to_shape(x, 2, (int64_t[]){3, 1}), 2, (int64_t[]){3, 1},
                  (double[]){8, 8, 8}, 0);
    assert_tensor(ag_sum_to_shape(x, 2, (int64_t[]){3, 4}), 2, (int64_t[]){3, 4},
                  (double[]){2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}, 0);
    assert_tensor(ag_sum_to_shape(x, 3, (int64_t[]){1, 3, 1}), 3, (int64_t[]){1, 3, 1},
                  (double[]){8, 8, 8}, 0);
    assert_tensor(ag_sum_to_shape(x, 0, NULL), 0, NULL, (double[]){24}, 0);
    /* Equal shapes: the tensor itself. */
    ck_assert_ptr_eq(ag_sum_to_shape(x, 3, (int64_t[]){2, 3, 4}), x);
    ag_tensor *s = ag_scalar(AG_F64, 1);
    ck_assert_ptr_eq(ag_sum_to_shape(s, 0, NULL), s);
    assert_error(ag_sum_to_shape(x, 2, (int64_t[]){2, 4}), AG_ERR_SHAPE, "[2, 3, 4]");
    assert_error(ag_sum_to_shape(x, 2, (int64_t[]){2, 4}), AG_ERR_SHAPE, "[2, 4]");
    assert_error(ag_sum_to_shape(s, 1, (int64_t[]){1}), AG_ERR_SHAPE, "cannot be summed");
}
END_TEST

START_TEST(matmul_values) {
    ag_tensor *a = f64(2, (int64_t[]){2, 2}, (double[]){1, 2, 3, 4});
    ag_tensor *b = f64(2, (int64_t[]){2, 2}, (double[]){5, 6, 7, 8});
    assert_tensor(ag_matmul(a, b), 2, (int64_t[]){2, 2}, (double[]){19, 22, 43, 50}, 1e-12);
    /* Transposed operands: a^T @ b = [[26, 30], [38, 44]]. */
    assert_tensor(ag_matmul(ag_transpose(a, 0, 1), b), 2, (int64_t[]){2, 2},
                  (double[]){26, 30, 38, 44}, 1e-12);
    ag_tensor *u = f64(1, (int64_t[]){2}, (double[]){5, 6});
    assert_tensor(ag_matmul(u, u), 0, NULL, (double[]){61}, 1e-12);
    assert_tensor(ag_matmul(u, a), 1, (int64_t[]){2}, (double[]){23, 34}, 1e-12);
    assert_tensor(ag_matmul(a, u), 1, (int64_t[]){2}, (double[]){17, 39}, 1e-12);
    /* Batch dims broadcast: [2,1,3,4] @ [5,4,2] → [2,5,3,2], all entries 4 for ones. */
    ag_tensor *ba = ag_ones(AG_F64, 4, (int64_t[]){2, 1, 3, 4});
    ag_tensor *bb = ag_ones(AG_F64, 3, (int64_t[]){5, 4, 2});
    ag_tensor *bc = ag_matmul(ba, bb);
    ck_assert_int_eq(ag_ndim(bc), 4);
    ck_assert_int_eq(ag_size(bc, 0), 2);
    ck_assert_int_eq(ag_size(bc, 1), 5);
    ck_assert_int_eq(ag_size(bc, 2), 3);
    ck_assert_int_eq(ag_size(bc, 3), 2);
    assert_tensor(ag_sum(bc, 0, NULL, false), 0, NULL, (double[]){2 * 5 * 3 * 2 * 4}, 0);
    /* 1-D with batched: [4] @ [3,4,2] → [3,2]; [3,2,4] @ [4] → [3,2]. */
    ag_tensor *v4 = ag_ones(AG_F64, 1, (int64_t[]){4});
    assert_tensor(ag_matmul(v4, ag_ones(AG_F64, 3, (int64_t[]){3, 4, 2})), 2, (int64_t[]){3, 2},
                  (double[]){4, 4, 4, 4, 4, 4}, 0);
    assert_tensor(ag_matmul(ag_ones(AG_F64, 3, (int64_t[]){3, 2, 4}), v4), 2, (int64_t[]){3, 2},
                  (double[]){4, 4, 4, 4, 4, 4}, 0);
    /* int64 @ float64 promotes; int64 @ int64 stays int64. */
    ag_tensor *ai = ag_from_i64((int64_t[]){1, 2, 3, 4}, 2, (int64_t[]){2, 2});
    ag_tensor *mixed = ag_matmul(ai, b);
    ck_assert_int_eq(ag_dtype_of(mixed), AG_F64);
    assert_tensor(mixed, 2, (int64_t[]){2, 2}, (double[]){19, 22, 43, 50}, 0);
    ag_tensor *ii = ag_matmul(ai, ai);
    ck_assert_int_eq(ag_dtype_of(ii), AG_I64);
    assert_tensor(ii, 2, (int64_t[]){2, 2}, (double[]){7, 10, 15, 22}, 0);
    /* Zero-size: k = 0 gives zeros; m = 0 gives an empty result. */
    assert_tensor(
        ag_matmul(ag_ones(AG_F64, 2, (int64_t[]){2, 0}), ag_ones(AG_F64, 2, (int64_t[]){0, 3})), 2,
        (int64_t[]){2, 3}, (double[]){0, 0, 0, 0, 0, 0}, 0);
    assert_tensor(ag_matmul(ag_ones(AG_F64, 2, (int64_t[]){0, 2}), a), 2, (int64_t[]){0, 2}, NULL,
                  0);
    ck_assert_ptr_null(ag_grad_fn_name(ag_matmul(a, b)));
}
END_TEST

START_TEST(softmax_values) {
    ag_tensor *x = f64(1, (int64_t[]){3}, (double[]){1, 2, 3});
    const double sm[] = {0.09003057317038046, 0.24472847105479767, 0.6652409557748219};
    const double lsm[] = {-2.40760596444438, -1.4076059644443801, -0.40760596444438013};
    assert_tensor(ag_softmax(x, 0), 1, (int64_t[]){3}, sm, 1e-12);
    assert_tensor(ag_log_softmax(x, -1), 1, (int64_t[]){3}, lsm, 1e-12);
    /* Along dim 0 of a [3, 2] matrix whose columns are [1,2,3] and [1001,1002,1003]
     * (stable: no overflow). */
    ag_tensor *m = f64(2, (int64_t[]){3, 2}, (double[]){1, 1001, 2, 1002, 3, 1003});
    assert_tensor(ag_softmax(m, 0), 2, (int64_t[]){3, 2},
                  (double[]){sm[0], sm[0], sm[1], sm[1], sm[2], sm[2]}, 1e-12);
    assert_tensor(ag_log_softmax(m, -2), 2, (int64_t[]){3, 2},
                  (double[]){lsm[0], lsm[0], lsm[1], lsm[1], lsm[2], lsm[2]}, 1e-12);
    /* Non-contiguous input: softmax of m^T along dim 1. */
    assert_tensor(ag_softmax(ag_transpose(m, 0, 1), 1), 2, (int64_t[]){2, 3},
                  (double[]){sm[0], sm[1], sm[2], sm[0], sm[1], sm[2]}, 1e-12);
    /* 0-dim: one element; zero-size: empty. */
    ag_tensor *s = ag_scalar(AG_F64, 7);
    assert_tensor(ag_softmax(s, 0), 0, NULL, (double[]){1}, 0);
    assert_tensor(ag_log_softmax(s, -1), 0, NULL, (double[]){0}, 0);
    assert_tensor(ag_softmax(ag_zeros(AG_F64, 2, (int64_t[]){0, 3}), 1), 2, (int64_t[]){0, 3}, NULL,
                  0);
    ck_assert_int_eq(ag_dtype_of(ag_softmax(ag_to_dtype(x, AG_F32), 0)), AG_F32);
}
END_TEST

/* ---- errors ---- */

START_TEST(error_cases) {
    ag_tensor *x = f64(2, S2x3, X2x3);
    ag_tensor *xi = ag_from_i64((int64_t[]){1, 2, 3, 4, 5, 6}, 2, S2x3);
    assert_error(ag_sum(x, 2, (int[]){1, -1}, false), AG_ERR_INVALID_ARG,
                 "dim 1 appears multiple times");
    assert_error(ag_sum(x, 1, (int[]){2}, false), AG_ERR_INDEX, "out of range");
    assert_error(ag_max(x, 1, (int[]){-3}, false), AG_ERR_INDEX, "out of range");
    assert_error(ag_sum(x, -1, NULL, false), AG_ERR_INVALID_ARG, "dims");
    assert_error(ag_mean(xi, 0, NULL, false), AG_ERR_DTYPE, "could not infer output dtype");
    assert_error(ag_mean(xi, 0, NULL, false), AG_ERR_DTYPE, "Long");
    assert_error(ag_var(xi, 0, NULL, 1, false), AG_ERR_DTYPE, "floating point");
    assert_error(ag_norm(xi, 2, 0, NULL, false), AG_ERR_DTYPE, "floating point");
    assert_error(ag_norm(x, 0, 0, NULL, false), AG_ERR_INVALID_ARG, "p must be > 0");
    assert_error(ag_norm(x, NAN, 0, NULL, false), AG_ERR_INVALID_ARG, "p must be > 0");
    assert_error(ag_norm(ag_zeros(AG_F64, 1, (int64_t[]){0}), INFINITY, 0, NULL, false),
                 AG_ERR_SHAPE, "non-zero size");
    ag_tensor *b = ag_ones(AG_F64, 2, (int64_t[]){4, 5});
    assert_error(ag_matmul(x, b), AG_ERR_SHAPE, "mat1 and mat2 shapes cannot be multiplied");
    assert_error(ag_matmul(x, b), AG_ERR_SHAPE, "(2x3 and 4x5)");
    assert_error(ag_matmul(ag_ones(AG_F64, 3, (int64_t[]){2, 2, 3}),
                           ag_ones(AG_F64, 3, (int64_t[]){3, 3, 1})),
                 AG_ERR_SHAPE, "batch dimensions");
    assert_error(ag_matmul(ag_ones(AG_F64, 1, (int64_t[]){3}), ag_ones(AG_F64, 1, (int64_t[]){4})),
                 AG_ERR_SHAPE, "cannot be multiplied");
    assert_error(ag_matmul(ag_scalar(AG_F64, 1), x), AG_ERR_SHAPE, "at least 1D");
    assert_error(ag_softmax(x, 2), AG_ERR_INDEX, "out of range");
    assert_error(ag_log_softmax(xi, 0), AG_ERR_DTYPE, "floating point");
    /* A NULL input keeps the first error. */
    assert_error(ag_sum(ag_sum(x, 1, (int[]){5}, false), 0, NULL, false), AG_ERR_INDEX,
                 "out of range");
    assert_error(ag_matmul(NULL, x), AG_ERR_INVALID_ARG, "NULL");
    assert_error(ag_softmax(NULL, 0), AG_ERR_INVALID_ARG, "NULL");
    assert_error(ag_argmax(NULL, 0, false, false), AG_ERR_INVALID_ARG, "NULL");
    assert_error(ag_norm(NULL, 2, 0, NULL, false), AG_ERR_INVALID_ARG, "NULL");
    assert_error(ag_sum_to_shape(NULL, 0, NULL), AG_ERR_INVALID_ARG, "NULL");
}
END_TEST

/* ---- gradients ---- */

enum op_kind { SUM, MEAN, VAR, MAX, MIN, NORM, SUM_TO, MATMUL, SOFTMAX, LOG_SOFTMAX };
enum layout { PLAIN, TRANSPOSED, SLICED };

/* One gradcheck case: op, input shapes, op arguments and how input 0 is presented. */
typedef struct grad_case {
    enum op_kind op;
    int n_in;
    int ndim[2];
    int64_t shape[2][4];
    int n_dims; /* reductions: dims list; softmax: dims[0] */
    int dims[3];
    bool keepdim;
    double arg;      /* var: correction; norm: p */
    int target_ndim; /* sum_to_shape target */
    int64_t target[4];
    enum layout layout; /* TRANSPOSED swaps dims 0 and 1 (given shape is pre-transpose);
                           SLICED takes every other element of the last dim */
} grad_case;

static ag_tensor *run_case(ag_tensor *const *in, void *user) {
    const grad_case *c = user;
    ag_tensor *x = in[0];
    if (c->layout == TRANSPOSED) x = ag_transpose(x, 0, 1);
    if (c->layout == SLICED) x = ag_slice(x, -1, 0, INT64_MAX, 2);
    switch (c->op) {
    case SUM:
        return ag_sum(x, c->n_dims, c->dims, c->keepdim);
    case MEAN:
        return ag_mean(x, c->n_dims, c->dims, c->keepdim);
    case VAR:
        return ag_var(x, c->n_dims, c->dims, c->arg, c->keepdim);
    case MAX:
        return ag_max(x, c->n_dims, c->dims, c->keepdim);
    case MIN:
        return ag_min(x, c->n_dims, c->dims, c->keepdim);
    case NORM:
        return ag_norm(x, c->arg, c->n_dims, c->dims, c->keepdim);
    case SUM_TO:
        return ag_sum_to_shape(x, c->target_ndim, c->target);
    case MATMUL:
        return ag_matmul(x, in[1]);
    case SOFTMAX:
        return ag_softmax(x, c->dims[0]);
    case LOG_SOFTMAX:
        return ag_log_softmax(x, c->dims[0]);
    }
    return NULL;
}

/* Shorthands for the table: one input of rank nd and extents ...; a dims list. */
#define IN1(nd, ...) .n_in = 1, .ndim = {nd}, .shape = {{__VA_ARGS__}}
#define DIMS(n, ...) .n_dims = n, .dims = {__VA_ARGS__}
#define MM(nda, ndb) .op = MATMUL, .n_in = 2, .ndim = {nda, ndb}

static const grad_case grad_cases[] = {
    {.op = SUM, IN1(2, 3, 4), DIMS(1, 1)},
    {.op = SUM, IN1(2, 3, 4), DIMS(2, -1, 0), .keepdim = true},
    {.op = SUM, IN1(3, 2, 3, 4), DIMS(0, 0)},
    {.op = SUM, IN1(3, 2, 3, 4), DIMS(2, 0, 2), .layout = TRANSPOSED},
    {.op = SUM, IN1(2, 3, 6), DIMS(1, 1), .keepdim = true, .layout = SLICED},
    {.op = SUM, IN1(0, 0), DIMS(1, -1)},
    {.op = SUM, IN1(2, 0, 3), DIMS(1, 0)},
    {.op = MEAN, IN1(2, 3, 4), DIMS(1, 0)},
    {.op = MEAN, IN1(3, 2, 3, 4), DIMS(2, -1, 1), .keepdim = true, .layout = TRANSPOSED},
    {.op = MEAN, IN1(0, 0), DIMS(0, 0)},
    {.op = VAR, IN1(2, 3, 4), DIMS(1, 1), .arg = 1},
    {.op = VAR, IN1(2, 3, 4), DIMS(0, 0), .keepdim = true, .arg = 0},
    {.op = VAR, IN1(3, 2, 3, 4), DIMS(2, 0, -1), .arg = 1, .layout = SLICED},
    {.op = MAX, IN1(2, 3, 4), DIMS(1, 1)},
    {.op = MAX, IN1(3, 2, 3, 4), DIMS(0, 0), .keepdim = true},
    {.op = MAX, IN1(2, 3, 4), DIMS(1, 0), .keepdim = true, .layout = TRANSPOSED},
    {.op = MIN, IN1(2, 3, 4), DIMS(1, -1)},
    {.op = MIN, IN1(3, 2, 3, 4), DIMS(2, 2, 0), .layout = SLICED},
    {.op = MIN, IN1(0, 0), DIMS(0, 0)},
    {.op = NORM, IN1(2, 3, 4), DIMS(0, 0), .arg = 2},
    {.op = NORM, IN1(2, 3, 4), DIMS(1, 1), .keepdim = true, .arg = 1},
    {.op = NORM, IN1(3, 2, 3, 4), DIMS(1, -1), .arg = 3, .layout = TRANSPOSED},
    {.op = NORM, IN1(2, 3, 4), DIMS(1, 0), .arg = 0.5},
    {.op = NORM, IN1(2, 3, 4), DIMS(1, 1), .arg = INFINITY},
    {.op = NORM, IN1(0, 0), DIMS(0, 0), .arg = 2},
    {.op = SUM_TO, IN1(3, 2, 3, 4), .target_ndim = 2, .target = {3, 1}},
    {.op = SUM_TO, IN1(3, 2, 3, 4), .target_ndim = 3, .target = {1, 3, 4}},
    {.op = SUM_TO, IN1(2, 3, 4), .target_ndim = 0},
    {.op = SUM_TO, IN1(2, 3, 4), .target_ndim = 2, .target = {3, 4}},
    {MM(2, 2), .shape = {{3, 4}, {4, 2}}},
    {MM(4, 3), .shape = {{2, 1, 3, 4}, {5, 4, 2}}},
    {MM(3, 4), .shape = {{5, 3, 4}, {2, 1, 4, 2}}},
    {MM(1, 1), .shape = {{4}, {4}}},
    {MM(1, 3), .shape = {{4}, {2, 4, 3}}},
    {MM(3, 1), .shape = {{2, 3, 4}, {4}}},
    {MM(2, 2), .shape = {{4, 3}, {4, 2}}, .layout = TRANSPOSED},
    {MM(3, 2), .shape = {{3, 2, 4}, {4, 5}}, .layout = TRANSPOSED},
    {MM(2, 2), .shape = {{3, 8}, {4, 2}}, .layout = SLICED},
    {MM(2, 2), .shape = {{0, 4}, {4, 2}}},
    {MM(2, 2), .shape = {{3, 0}, {0, 2}}},
    {.op = SOFTMAX, IN1(2, 3, 4), DIMS(0, 1)},
    {.op = SOFTMAX, IN1(3, 2, 3, 4), DIMS(0, -3), .layout = TRANSPOSED},
    {.op = SOFTMAX, IN1(2, 3, 8), DIMS(0, -1), .layout = SLICED},
    {.op = SOFTMAX, IN1(0, 0), DIMS(0, 0)},
    {.op = LOG_SOFTMAX, IN1(2, 3, 4), DIMS(0, 0)},
    {.op = LOG_SOFTMAX, IN1(3, 2, 3, 4), DIMS(0, -1), .layout = TRANSPOSED},
    {.op = LOG_SOFTMAX, IN1(0, 0), DIMS(0, -1)},
    {.op = LOG_SOFTMAX, IN1(2, 0, 3), DIMS(0, 1)},
};

START_TEST(gradcheck_and_gradgradcheck) {
    const grad_case *c = &grad_cases[_i];
    ag_generator *gen = ag_generator_new(1234 + (uint64_t)_i);
    ag_tensor *in[2];
    for (int i = 0; i < c->n_in; i++) {
        in[i] = ag_randn(gen, AG_F64, c->ndim[i], c->shape[i]);
        ck_assert_int_eq(ag_set_requires_grad(in[i], true), AG_OK);
    }
    ag_generator_free(gen);
    ag_gradcheck_options opt = ag_gradcheck_defaults();
    ck_assert_msg(ag_gradcheck(run_case, (void *)c, c->n_in, in, &opt) == AG_OK,
                  "case %d gradcheck: %s", _i, ag_last_error());
    ck_assert_msg(ag_gradgradcheck(run_case, (void *)c, c->n_in, in, &opt) == AG_OK,
                  "case %d gradgradcheck: %s", _i, ag_last_error());
}
END_TEST

/* Backward through softmax/log_softmax by hand: y = softmax([1,2,3]), d y0 / dx =
 * y0 (e0 - y). */
START_TEST(softmax_backward_values) {
    ag_tensor *x = f64(1, (int64_t[]){3}, (double[]){1, 2, 3});
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ag_tensor *y = ag_softmax(x, 0);
    ck_assert_str_eq(ag_grad_fn_name(y), "softmax");
    ck_assert_int_eq(ag_backward(y, f64(1, (int64_t[]){3}, (double[]){1, 0, 0})), AG_OK);
    const double y0 = 0.09003057317038046, y1 = 0.24472847105479767, y2 = 0.6652409557748219;
    assert_tensor(ag_tensor_grad(x), 1, (int64_t[]){3},
                  (double[]){y0 * (1 - y0), -y0 * y1, -y0 * y2}, 1e-12);
    ck_assert_int_eq(ag_set_grad(x, NULL), AG_OK);
    /* log_softmax: d/dx sum(w * log_softmax(x)) = w - softmax(x) * sum(w). */
    ag_tensor *ly = ag_log_softmax(x, 0);
    ck_assert_int_eq(ag_backward(ly, f64(1, (int64_t[]){3}, (double[]){1, 2, 0})), AG_OK);
    assert_tensor(ag_tensor_grad(x), 1, (int64_t[]){3}, (double[]){1 - 3 * y0, 2 - 3 * y1, -3 * y2},
                  1e-12);
}
END_TEST

/* The composite functions clean up after themselves when no scope is open: run with
 * LeakSanitizer, a leaked intermediate fails the suite. */
START_TEST(no_scope_no_leak) {
    ag_scope_end(tu_fixture_scope);
    ag_tensor *x = ag_from_f64(X2x3, 2, S2x3), *v = ag_from_f64(X2x3, 1, (int64_t[]){3});
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ag_tensor *xt = ag_transpose(x, 0, 1);
    ag_tensor *results[] = {
        ag_mean(x, 1, (int[]){0}, false),
        ag_var(x, 0, NULL, 1, true),
        ag_norm(x, 2, 0, NULL, false),
        ag_norm(x, 3, 1, (int[]){1}, false),
        ag_argmax(x, 1, false, false),
        ag_argmin(x, 0, true, true),
        ag_sum_to_shape(x, 1, (int64_t[]){3}),
        ag_sum_to_shape(x, 2, (int64_t[]){1, 3}),
        ag_matmul(v, xt),
        ag_matmul(x, v),
        ag_max(x, 0, NULL, false),
        ag_softmax(x, 1),
    };
    ag_tensor *loss = NULL;
    for (size_t i = 0; i < sizeof results / sizeof results[0]; i++) {
        ck_assert_msg(results[i] != NULL, "result %zu: %s", i, ag_last_error());
        if (ag_requires_grad(results[i])) {
            ag_tensor *s = ag_sum(results[i], 0, NULL, false);
            ag_tensor *acc = loss ? ag_add(loss, s) : ag_retain(s);
            ag_release(s);
            ag_release(loss);
            loss = acc;
        }
        ag_release(results[i]);
    }
    ck_assert_int_eq(ag_backward(loss, NULL), AG_OK);
    ck_assert_ptr_nonnull(ag_tensor_grad(x));
    ag_release(loss);
    ag_release(xt);
    ag_release(x);
    ag_release(v);
    tu_fixture_scope = ag_scope_begin();
}
END_TEST

static Suite *reduce_linalg_suite(void) {
    Suite *s = suite_create("ops_reduce_linalg");
    TCase *tc = tcase_create("values");
    tcase_add_checked_fixture(tc, tu_scope_setup, tu_scope_teardown);
    tcase_add_test(tc, sum_values);
    tcase_add_test(tc, mean_var_values);
    tcase_add_test(tc, max_min_values_and_tie_gradient);
    tcase_add_test(tc, argmax_argmin_values);
    tcase_add_test(tc, norm_values);
    tcase_add_test(tc, sum_to_shape_values);
    tcase_add_test(tc, matmul_values);
    tcase_add_test(tc, softmax_values);
    tcase_add_test(tc, softmax_backward_values);
    tcase_add_test(tc, error_cases);
    tcase_add_test(tc, no_scope_no_leak);
    suite_add_tcase(s, tc);
    TCase *grads = tcase_create("gradients");
    tcase_add_checked_fixture(grads, tu_scope_setup, tu_scope_teardown);
    tcase_set_timeout(grads, 300);
    tcase_add_loop_test(grads, gradcheck_and_gradgradcheck, 0,
                        (int)(sizeof grad_cases / sizeof grad_cases[0]));
    suite_add_tcase(s, grads);
    return s;
}

int main(void) {
    return tu_run_suite(reduce_linalg_suite());
}
