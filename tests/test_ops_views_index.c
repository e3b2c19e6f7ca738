/* View, indexing and joining ops: values (hand-computed, as PyTorch gives them), storage and
 * version-counter sharing of views, errors, and gradcheck + gradgradcheck (float64) of every
 * differentiable op on contiguous, transposed, sliced, 0-dim and zero-size inputs. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "ag/ag.h"
#include "test_util.h"

/* ---- helpers ---- */

#define SHAPE(...)                                                                                 \
    (sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]) {                            \
        __VA_ARGS__                                                                                \
    }

/* 0, 1, 2, ... in `shape`, as arange(n).reshape(shape). */
static ag_tensor *range(ag_dtype dtype, int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    ag_tensor *t = ag_reshape(ag_arange(dtype, 0, (double)n, 1), ndim, shape);
    ck_assert_msg(t != NULL, "%s", ag_last_error());
    return t;
}

/* An int64 tensor; v may be NULL for zero-size shapes. */
static ag_tensor *idx(const int64_t *v, int ndim, const int64_t *shape) {
    static const int64_t nothing[1];
    ag_tensor *t = ag_from_i64(v ? v : nothing, ndim, shape);
    ck_assert_ptr_nonnull(t);
    return t;
}

static void assert_shape(const ag_tensor *t, int ndim, const int64_t *shape) {
    ck_assert_msg(t != NULL, "%s", ag_last_error());
    char got[128], want[128] = "[";
    ag_shape_str(t, got, sizeof got);
    for (int d = 0; d < ndim; d++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? ", " : "",
                 (long long)shape[d]);
    strcat(want, "]");
    ck_assert_str_eq(got, want);
}

static void assert_values(ag_tensor *t, const double *expected, int64_t n) {
    ck_assert_msg(t != NULL, "%s", ag_last_error());
    ck_assert_int_eq(ag_numel(t), n);
    double got[128];
    ck_assert_int_le(n, 128);
    ck_assert_int_eq(ag_to_host(ag_to_dtype(t, AG_F64), got, sizeof got), AG_OK);
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabs(got[i] - expected[i]) <= 1e-12, "element %lld: got %.10g expected %.10g",
                      (long long)i, got[i], expected[i]);
}

/* Asserts that an op failed (NULL) with status and a message containing words. */
static void assert_error(const ag_tensor *t, ag_status status, const char *words) {
    ck_assert_ptr_null(t);
    ck_assert_int_eq(ag_last_status(), status);
    ck_assert_msg(strstr(ag_last_error(), words), "message '%s' lacks '%s'", ag_last_error(),
                  words);
    ag_clear_error();
}

/* Host pointers show where a view starts. Without them (OpenCL), a write through the base
 * shows in the view iff they share storage. */
static bool shares_storage(const ag_tensor *view, ag_tensor *base, int64_t elem_offset) {
    if (!ag_data_ptr(base)) {
        double before[64], after[64];
        size_t bytes = (size_t)ag_numel(view) * sizeof(double);
        ck_assert_uint_le(bytes, sizeof before);
        ag_tensor *v64 = ag_to_dtype((ag_tensor *)view, AG_F64);
        ck_assert_int_eq(ag_to_host(v64, before, bytes), AG_OK);
        ck_assert_ptr_nonnull(ag_add_scalar_(base, 1));
        ck_assert_int_eq(ag_to_host(ag_to_dtype((ag_tensor *)view, AG_F64), after, bytes), AG_OK);
        ck_assert_ptr_nonnull(ag_add_scalar_(base, -1));
        return memcmp(before, after, bytes) != 0;
    }
    return (char *)ag_data_ptr(view) ==
           (char *)ag_data_ptr(base) + elem_offset * (int64_t)ag_dtype_size(ag_dtype_of(base));
}

/* Input layouts for gradchecks: how a float64 leaf lays its elements out in memory. */
enum layout { CONTIG, TRANSPOSED, STRIDED };

/* A float64 leaf requiring grad, with varied values and the given layout: TRANSPOSED is
 * the transpose of a contiguous tensor (last two dims swapped), STRIDED takes every other
 * element of dim 0 of a tensor twice as long. */
static ag_tensor *leaf(enum layout layout, int ndim, const int64_t *shape) {
    int64_t s[8] = {0};
    if (ndim) memcpy(s, shape, (size_t)ndim * sizeof *s);
    ag_generator *gen = ag_generator_new(42 + (uint64_t)ndim);
    ag_tensor *t;
    if (layout == TRANSPOSED && ndim >= 2) {
        s[ndim - 1] = shape[ndim - 2];
        s[ndim - 2] = shape[ndim - 1];
        t = ag_transpose(ag_randn(gen, AG_F64, ndim, s), -1, -2);
    } else if (layout == STRIDED && ndim >= 1) {
        s[0] = 2 * shape[0];
        t = ag_slice(ag_randn(gen, AG_F64, ndim, s), 0, 0, s[0], 2);
    } else {
        t = ag_randn(gen, AG_F64, ndim, s);
    }
    ag_generator_free(gen);
    ck_assert_msg(t != NULL, "%s", ag_last_error());
    assert_shape(t, ndim, shape);
    ck_assert_int_eq(ag_set_requires_grad(t, true), AG_OK);
    return t;
}

/* gradcheck and gradgradcheck of fn at inputs. */
static void check_grads(const char *what, ag_gradcheck_fn fn, void *user, int n,
                        ag_tensor *const *inputs) {
    ag_status st = ag_gradcheck(fn, user, n, inputs, NULL);
    ck_assert_msg(st == AG_OK, "gradcheck %s: %s", what, ag_last_error());
    st = ag_gradgradcheck(fn, user, n, inputs, NULL);
    ck_assert_msg(st == AG_OK, "gradgradcheck %s: %s", what, ag_last_error());
}

/* Arguments of the functions under gradcheck. */
typedef struct args {
    int dim, dim2;
    int64_t a, b, c;
    int ndim;
    int64_t shape[8];
    int perm[8];
    ag_tensor *index;
} args;

static ag_tensor *f_reshape(ag_tensor *const *x, void *u) {
    const args *p = u;
    return ag_reshape(x[0], p->ndim, p->shape);
}
static ag_tensor *f_view(ag_tensor *const *x, void *u) {
    const args *p = u;
    return ag_view(x[0], p->ndim, p->shape);
}
static ag_tensor *f_flatten(ag_tensor *const *x, void *u) {
    const args *p = u;
    return ag_flatten(x[0], p->dim, p->dim2);
}
static ag_tensor *f_squeeze(ag_tensor *const *x, void *u) {
    const args *p = u;
    return ag_squeeze(x[0], p->dim);
}
static ag_tensor *f_unsqueeze(ag_tensor *const *x, void *u) {
    const args *p = u;
    return ag_unsqueeze(x[0], p->dim);
}
static ag_tensor *f_transpose(ag_tensor *const *x, void *u) {
    const args *p = u;
    return ag_transpose(x[0], p->dim, p->dim2);
}
static ag_tensor *f_permute(ag_tensor *const *x, void *u) {
    const args *p = u;
    return ag_permute(x[0], p->perm);
}
static ag_tensor *f_expand(ag_tensor *const *x, void *u) {
    const args *p = u;
    return ag_expand(x[0], p->ndim, p->shape);
}
static ag_tensor *f_slice(ag_tensor *const *x, void *u) {
    const args *p = u;
    return ag_slice(x[0], p->dim, p->a, p->b, p->c);
}
static ag_tensor *f_select(ag_tensor *const *x, void *u) {
    const args *p = u;
    return ag_select(x[0], p->dim, p->a);
}
static ag_tensor *f_index_select(ag_tensor *const *x, void *u) {
    const args *p = u;
    return ag_index_select(x[0], p->dim, p->index);
}
static ag_tensor *f_index_add(ag_tensor *const *x, void *u) {
    const args *p = u;
    return ag_index_add(x[0], p->dim, p->index, x[1]);
}
static ag_tensor *f_gather(ag_tensor *const *x, void *u) {
    const args *p = u;
    return ag_gather(x[0], p->dim, p->index);
}
static ag_tensor *f_scatter_add(ag_tensor *const *x, void *u) {
    const args *p = u;
    return ag_scatter_add(x[0], p->dim, p->index, x[1]);
}
/* cat of inputs x[0..a) along dim. */
static ag_tensor *f_cat(ag_tensor *const *x, void *u) {
    const args *p = u;
    return ag_cat((int)p->a, x, p->dim);
}
static ag_tensor *f_stack(ag_tensor *const *x, void *u) {
    const args *p = u;
    return ag_stack((int)p->a, x, p->dim);
}
/* A chain of views: select(slice(transpose(x))) then expand, reshaped. */
static ag_tensor *f_chain(ag_tensor *const *x, void *u) {
    (void)u;
    ag_tensor *t = ag_select(ag_slice(ag_transpose(x[0], 0, 1), 0, 1, 4, 2), -1, 0);
    return ag_reshape(ag_expand(ag_unsqueeze(t, 0), SHAPE(3, -1)), SHAPE(-1));
}

/* ---- reshape / view / flatten ---- */

START_TEST(reshape_views_when_strides_allow) {
    ag_tensor *x = range(AG_F64, SHAPE(2, 3));
    ag_tensor *r = ag_reshape(x, SHAPE(3, -1));
    assert_shape(r, SHAPE(3, 2));
    ck_assert(ag_is_view(r));
    ck_assert(shares_storage(r, x, 0));
    assert_values(r, (double[]){0, 1, 2, 3, 4, 5}, 6);
    /* The transpose splits into [3, 1, 2] without a copy: a size-1 dim fits anywhere. */
    ag_tensor *t = ag_transpose(x, 0, 1);
    ag_tensor *v = ag_view(t, SHAPE(3, 1, 2));
    assert_shape(v, SHAPE(3, 1, 2));
    ck_assert(shares_storage(v, x, 0));
    ck_assert_int_eq(ag_strides(v)[0], 1);
    ck_assert_int_eq(ag_strides(v)[2], 3);
    /* Merging the transposed dims needs a copy: reshape copies, view refuses. */
    ag_tensor *c = ag_reshape(t, SHAPE(6));
    assert_values(c, (double[]){0, 3, 1, 4, 2, 5}, 6);
    ck_assert(!shares_storage(c, x, 0));
    assert_error(ag_view(t, SHAPE(6)), AG_ERR_SHAPE, "Use reshape instead");
    /* A sliced tensor keeps its offset in views. */
    ag_tensor *s = ag_slice(range(AG_F64, SHAPE(4, 3)), 0, 1, 3, 1);
    ag_tensor *sv = ag_view(s, SHAPE(-1));
    assert_values(sv, (double[]){3, 4, 5, 6, 7, 8}, 6);
    ck_assert(ag_is_contiguous(sv));
    /* 0-dim <-> [1, 1] and zero-size reshapes. */
    ag_tensor *z = ag_scalar(AG_F64, 7);
    assert_values(ag_reshape(z, SHAPE(1, 1)), (double[]){7}, 1);
    assert_shape(ag_reshape(ag_reshape(z, SHAPE(1, 1)), 0, NULL), 0, NULL);
    ag_tensor *e = ag_zeros(AG_F64, SHAPE(0, 3));
    assert_shape(ag_reshape(e, SHAPE(3, 0, 1)), SHAPE(3, 0, 1));
    assert_error(ag_reshape(e, SHAPE(3, 0, -1)), AG_ERR_SHAPE, "ambiguous");
    assert_shape(ag_view(ag_transpose(e, 0, 1), SHAPE(0)), SHAPE(0));
}
END_TEST

START_TEST(reshape_errors) {
    ag_tensor *x = range(AG_F64, SHAPE(2, 3));
    assert_error(ag_reshape(x, SHAPE(2, 4)), AG_ERR_SHAPE,
                 "shape '[2, 4]' is invalid for input of size 6");
    assert_error(ag_view(x, SHAPE(-1, 4)), AG_ERR_SHAPE,
                 "shape '[-1, 4]' is invalid for input of size 6");
    assert_error(ag_reshape(x, SHAPE(0, -1)), AG_ERR_SHAPE, "invalid for input of size 6");
    assert_error(ag_reshape(x, SHAPE(-1, -1)), AG_ERR_SHAPE, "only one dimension can be inferred");
    assert_error(ag_reshape(x, SHAPE(-2, -3)), AG_ERR_SHAPE, "invalid shape dimension -2");
    assert_error(ag_reshape(ag_zeros(AG_F64, SHAPE(0)), SHAPE(0, -1)), AG_ERR_SHAPE, "ambiguous");
    assert_error(ag_reshape(x, 9, (int64_t[9]){1, 1, 1, 1, 1, 1, 1, 2, 3}), AG_ERR_SHAPE,
                 "0..8 dims");
    assert_error(ag_flatten(x, 1, 0), AG_ERR_INVALID_ARG, "cannot come after");
    assert_error(ag_flatten(x, 0, 2), AG_ERR_INDEX, "dimension out of range");
}
END_TEST

START_TEST(flatten_squeeze_unsqueeze) {
    ag_tensor *x = range(AG_F64, SHAPE(2, 3, 4));
    assert_shape(ag_flatten(x, 1, -1), SHAPE(2, 12));
    assert_shape(ag_flatten(x, 0, 1), SHAPE(6, 4));
    assert_shape(ag_flatten(x, 0, -1), SHAPE(24));
    assert_shape(ag_flatten(x, -2, -2), SHAPE(2, 3, 4));
    assert_shape(ag_flatten(ag_scalar(AG_F64, 1), 0, -1), SHAPE(1));
    ag_tensor *y = range(AG_F64, SHAPE(1, 3, 1, 2));
    assert_shape(ag_squeeze(y, AG_ALL_DIMS), SHAPE(3, 2));
    assert_shape(ag_squeeze(y, -2), SHAPE(1, 3, 2));
    assert_shape(ag_squeeze(y, 1), SHAPE(1, 3, 1, 2)); /* extent 3: unchanged */
    assert_shape(ag_squeeze(ag_scalar(AG_F64, 1), 0), 0, NULL);
    assert_shape(ag_unsqueeze(x, 0), SHAPE(1, 2, 3, 4));
    assert_shape(ag_unsqueeze(x, -1), SHAPE(2, 3, 4, 1));
    assert_shape(ag_unsqueeze(x, 2), SHAPE(2, 3, 1, 4));
    assert_shape(ag_unsqueeze(ag_scalar(AG_F64, 1), -1), SHAPE(1));
    ag_tensor *u = ag_unsqueeze(ag_transpose(x, 0, 2), 1);
    assert_shape(u, SHAPE(4, 1, 3, 2));
    ck_assert(shares_storage(u, x, 0));
    assert_error(ag_unsqueeze(x, 4), AG_ERR_INDEX, "dimension out of range");
    assert_error(ag_squeeze(x, 3), AG_ERR_INDEX, "dimension out of range");
    ag_tensor *big = ag_zeros(AG_F64, SHAPE(1, 1, 1, 1, 1, 1, 1, 1));
    assert_error(ag_unsqueeze(big, 0), AG_ERR_SHAPE, "at most 8 dims");
}
END_TEST

/* ---- transpose / permute / expand ---- */

START_TEST(transpose_and_permute) {
    ag_tensor *x = range(AG_F64, SHAPE(2, 3, 4));
    ag_tensor *t = ag_transpose(x, 0, -1);
    assert_shape(t, SHAPE(4, 3, 2));
    ck_assert(shares_storage(t, x, 0));
    ck_assert_int_eq(ag_strides(t)[0], 1);
    ck_assert_int_eq(ag_strides(t)[2], 12);
    ag_tensor *p = ag_permute(x, (int[]){2, 0, -2});
    assert_shape(p, SHAPE(4, 2, 3));
    double want[24];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 3; k++) want[i * 6 + j * 3 + k] = j * 12 + k * 4 + i;
    assert_values(p, want, 24);
    assert_values(ag_transpose(range(AG_F64, SHAPE(2, 2)), 1, 0), (double[]){0, 2, 1, 3}, 4);
    assert_shape(ag_transpose(ag_scalar(AG_F64, 1), 0, -1), 0, NULL);
    ck_assert_ptr_null(ag_grad_fn_name(ag_transpose(p, 0, 1)));
    assert_error(ag_permute(x, (int[]){0, 1, 1}), AG_ERR_INVALID_ARG, "repeated dim");
    assert_error(ag_permute(x, (int[]){0, 1, 3}), AG_ERR_INDEX, "dimension out of range");
    assert_error(ag_transpose(x, 0, 3), AG_ERR_INDEX, "dimension out of range");
}
END_TEST

START_TEST(expand_values_and_errors) {
    ag_tensor *x = ag_from_f64((double[]){1, 2, 3}, SHAPE(3, 1));
    ag_tensor *e = ag_expand(x, SHAPE(2, -1, 2));
    assert_shape(e, SHAPE(2, 3, 2));
    ck_assert_int_eq(ag_strides(e)[0], 0);
    ck_assert_int_eq(ag_strides(e)[1], 1);
    ck_assert_int_eq(ag_strides(e)[2], 0);
    ck_assert(shares_storage(e, x, 0));
    assert_values(e, (double[]){1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3}, 12);
    assert_shape(ag_expand(ag_scalar(AG_F64, 5), SHAPE(2, 0)), SHAPE(2, 0));
    assert_shape(ag_expand(ag_zeros(AG_F64, SHAPE(1, 0)), SHAPE(3, 0)), SHAPE(3, 0));
    ag_tensor *y = range(AG_F64, SHAPE(2, 3));
    assert_error(ag_expand(y, SHAPE(2, 4)), AG_ERR_SHAPE,
                 "The expanded size of the tensor (4) must match the existing size (3) at "
                 "non-singleton dimension 1. Target sizes: [2, 4]. Tensor sizes: [2, 3]");
    assert_error(ag_expand(y, SHAPE(3)), AG_ERR_SHAPE, "the number of sizes provided (1)");
    assert_error(ag_expand(y, SHAPE(-1, 2, 3)), AG_ERR_SHAPE, "leading, non-existing dimension 0");
    assert_error(ag_expand(y, SHAPE(2, -3)), AG_ERR_SHAPE, "invalid size -3");
}
END_TEST

/* ---- slice / select ---- */

START_TEST(slice_values) {
    ag_tensor *x = range(AG_F64, SHAPE(10));
    assert_values(ag_slice(x, 0, 2, 8, 3), (double[]){2, 5}, 2);
    assert_values(ag_slice(x, 0, -3, INT64_MAX, 1), (double[]){7, 8, 9}, 3);
    assert_values(ag_slice(x, -1, -100, 3, 1), (double[]){0, 1, 2}, 3);
    assert_values(ag_slice(x, 0, 1, -7, 1), (double[]){1, 2}, 2);
    assert_values(ag_slice(x, 0, 0, 10, INT64_MAX), (double[]){0}, 1);
    assert_shape(ag_slice(x, 0, 5, 2, 1), SHAPE(0));
    assert_shape(ag_slice(x, 0, 20, 30, 1), SHAPE(0));
    ag_tensor *m = range(AG_F64, SHAPE(3, 4));
    ag_tensor *s = ag_slice(m, -1, 1, 4, 2);
    assert_values(s, (double[]){1, 3, 5, 7, 9, 11}, 6);
    ck_assert(shares_storage(s, m, 1));
    ck_assert_int_eq(ag_strides(s)[1], 2);
    /* Slices of slices keep composing offsets and steps. */
    assert_values(ag_slice(ag_slice(m, 0, 1, 3, 1), 1, 1, 4, 2), (double[]){5, 7, 9, 11}, 4);
    assert_error(ag_slice(x, 0, 0, 5, 0), AG_ERR_INVALID_ARG, "step must be positive");
    assert_error(ag_slice(x, 0, 0, 5, -1), AG_ERR_INVALID_ARG, "step must be positive");
    assert_error(ag_slice(ag_scalar(AG_F64, 1), 0, 0, 1, 1), AG_ERR_INDEX, "0-dim");
    assert_error(ag_slice(m, 2, 0, 1, 1), AG_ERR_INDEX, "dimension out of range");
}
END_TEST

START_TEST(select_values) {
    ag_tensor *m = range(AG_F64, SHAPE(3, 4));
    ag_tensor *r = ag_select(m, 0, -1);
    assert_values(r, (double[]){8, 9, 10, 11}, 4);
    ck_assert(shares_storage(r, m, 8));
    assert_values(ag_select(m, 1, 2), (double[]){2, 6, 10}, 3);
    ag_tensor *e = ag_select(ag_select(m, 1, -4), 0, 1);
    assert_shape(e, 0, NULL);
    assert_values(e, (double[]){4}, 1);
    assert_error(ag_select(range(AG_F64, SHAPE(3)), 0, 5), AG_ERR_INDEX,
                 "index 5 is out of bounds for dimension 0 with size 3");
    assert_error(ag_select(m, 0, -4), AG_ERR_INDEX, "index -4 is out of bounds");
    assert_error(ag_select(ag_zeros(AG_F64, SHAPE(0, 2)), 0, 0), AG_ERR_INDEX, "out of bounds");
    assert_error(ag_select(ag_scalar(AG_F64, 1), 0, 0), AG_ERR_INDEX, "0-dim");
    /* A failing op inside a chain: the first error survives. */
    assert_error(ag_transpose(ag_select(m, 0, 7), 0, 1), AG_ERR_INDEX, "index 7");
}
END_TEST

/* ---- storage and version sharing ---- */

START_TEST(views_share_storage_and_version) {
    ag_tensor *x = range(AG_F64, SHAPE(2, 3));
    ag_tensor *row = ag_select(x, 0, 1);
    ag_tensor *col = ag_select(ag_transpose(x, 0, 1), 0, 2);
    ag_tensor *flat = ag_view(x, SHAPE(6));
    uint64_t v0 = ag_version_of(x);
    ck_assert_ptr_nonnull(ag_mul_scalar_(row, 10));
    ck_assert_uint_eq(ag_version_of(x), v0 + 1);
    ck_assert_uint_eq(ag_version_of(row), v0 + 1);
    ck_assert_uint_eq(ag_version_of(col), v0 + 1);
    assert_values(x, (double[]){0, 1, 2, 30, 40, 50}, 6);
    assert_values(col, (double[]){2, 50}, 2);
    ck_assert_ptr_nonnull(ag_fill_(col, -1));
    ck_assert_uint_eq(ag_version_of(flat), v0 + 2);
    assert_values(flat, (double[]){0, 1, -1, 30, 40, -1}, 6);
    /* Writes through the base are seen by an expanded view. */
    ag_tensor *e = ag_expand(ag_slice(flat, 0, 0, 1, 1), SHAPE(2, 2));
    ck_assert_ptr_nonnull(ag_fill_(ag_select(ag_select(x, 0, 0), 0, 0), 9));
    assert_values(e, (double[]){9, 9, 9, 9}, 4);
}
END_TEST

START_TEST(inplace_on_view_invalidates_saved_base) {
    ag_tensor *x = leaf(CONTIG, SHAPE(2, 2));
    ag_tensor *a = ag_clone(x);
    ag_tensor *y = ag_sum(ag_mul(a, a), 0, NULL, false);
    bool prev = ag_set_grad_enabled(false);
    ck_assert_ptr_nonnull(ag_mul_scalar_(ag_select(a, 0, 0), 2));
    ag_set_grad_enabled(prev);
    ck_assert_int_eq(ag_backward(y, NULL), AG_ERR_INPLACE);
    ag_clear_error();
}
END_TEST

START_TEST(views_record_grad_fn) {
    ag_tensor *x = leaf(CONTIG, SHAPE(2, 3));
    ck_assert_str_eq(ag_grad_fn_name(ag_reshape(x, SHAPE(3, 2))), "view");
    ck_assert_str_eq(ag_grad_fn_name(ag_transpose(x, 0, 1)), "transpose");
    ck_assert_str_eq(ag_grad_fn_name(ag_permute(x, (int[]){1, 0})), "permute");
    ck_assert_str_eq(ag_grad_fn_name(ag_expand(x, SHAPE(2, 2, 3))), "expand");
    ck_assert_str_eq(ag_grad_fn_name(ag_slice(x, 1, 0, 2, 1)), "slice");
    ck_assert_str_eq(ag_grad_fn_name(ag_select(x, 1, 0)), "select");
    ck_assert_str_eq(ag_grad_fn_name(ag_squeeze(x, 0)), "squeeze");
    ck_assert_str_eq(ag_grad_fn_name(ag_unsqueeze(x, 0)), "unsqueeze");
    ag_tensor *v = ag_slice(x, 1, 1, 3, 1);
    ck_assert(ag_is_view(v) && !ag_is_leaf(v) && ag_requires_grad(v));
    /* Backward of a slice writes the gradient into zeros of the input shape. */
    ck_assert_int_eq(ag_backward(ag_sum(ag_mul_scalar(v, 3), 0, NULL, false), NULL), AG_OK);
    assert_values(ag_tensor_grad(x), (double[]){0, 3, 3, 0, 3, 3}, 6);
}
END_TEST

/* ---- gradchecks of the views ---- */

START_TEST(gradcheck_views) {
    static const enum layout layouts[] = {CONTIG, TRANSPOSED, STRIDED};
    for (int l = 0; l < 3; l++) {
        ag_scope *s = ag_scope_begin();
        ag_tensor *x = leaf(layouts[l], SHAPE(2, 3));
        args a = {.ndim = 2, .shape = {3, -1}};
        check_grads("reshape", f_reshape, &a, 1, &x);
        args fl = {.dim = 0, .dim2 = -1};
        check_grads("flatten", f_flatten, &fl, 1, &x);
        args tr = {.dim = -1, .dim2 = 0};
        check_grads("transpose", f_transpose, &tr, 1, &x);
        args un = {.dim = -2};
        check_grads("unsqueeze", f_unsqueeze, &un, 1, &x);
        args ex = {.ndim = 3, .shape = {2, 2, 3}};
        check_grads("expand", f_expand, &ex, 1, &x);
        args sl = {.dim = -1, .a = -2, .b = INT64_MAX, .c = 1};
        check_grads("slice", f_slice, &sl, 1, &x);
        args sl2 = {.dim = 1, .a = 0, .b = 3, .c = 2};
        check_grads("slice step 2", f_slice, &sl2, 1, &x);
        args se = {.dim = 1, .a = -1};
        check_grads("select", f_select, &se, 1, &x);
        ag_scope_end(s);
    }
    ag_tensor *x3 = leaf(TRANSPOSED, SHAPE(2, 1, 3));
    args pe = {.perm = {2, 0, 1}};
    check_grads("permute", f_permute, &pe, 1, &x3);
    args sq = {.dim = AG_ALL_DIMS};
    check_grads("squeeze all", f_squeeze, &sq, 1, &x3);
    args sq1 = {.dim = 1};
    check_grads("squeeze 1", f_squeeze, &sq1, 1, &x3);
    args ex = {.ndim = 4, .shape = {2, 2, 4, 3}};
    ag_tensor *x4 = leaf(STRIDED, SHAPE(2, 1, 3));
    check_grads("expand middle", f_expand, &ex, 1, &x4);
    args vw = {.ndim = 3, .shape = {3, 1, 2}};
    ag_tensor *xt = leaf(TRANSPOSED, SHAPE(3, 2));
    check_grads("view of transposed", f_view, &vw, 1, &xt);
    ag_tensor *x44 = leaf(STRIDED, SHAPE(4, 4));
    check_grads("chain", f_chain, NULL, 1, &x44);
}
END_TEST

START_TEST(gradcheck_views_0dim_and_empty) {
    ag_tensor *z = leaf(CONTIG, 0, NULL);
    args r = {.ndim = 2, .shape = {1, 1}};
    check_grads("reshape 0-dim", f_reshape, &r, 1, &z);
    args ex = {.ndim = 2, .shape = {2, 3}};
    check_grads("expand 0-dim", f_expand, &ex, 1, &z);
    args un = {.dim = 0};
    check_grads("unsqueeze 0-dim", f_unsqueeze, &un, 1, &z);
    args fl = {.dim = 0, .dim2 = 0};
    check_grads("flatten 0-dim", f_flatten, &fl, 1, &z);
    ag_tensor *e = leaf(CONTIG, SHAPE(0, 3));
    args re = {.ndim = 3, .shape = {3, 0, 2}};
    ag_tensor *e2 = leaf(TRANSPOSED, SHAPE(3, 0));
    check_grads("reshape empty", f_reshape, &re, 1, &e);
    args sl = {.dim = 1, .a = 1, .b = 3, .c = 1};
    check_grads("slice empty", f_slice, &sl, 1, &e);
    args se = {.dim = 0, .a = -1};
    check_grads("select of empty dim 1", f_select, &se, 1, &e2);
    args sl0 = {.dim = 0, .a = 5, .b = 9, .c = 1};
    ag_tensor *x = leaf(CONTIG, SHAPE(3, 2));
    check_grads("slice to zero rows", f_slice, &sl0, 1, &x);
}
END_TEST

/* ---- index_select / index_add / gather / scatter_add ---- */

START_TEST(index_values) {
    ag_tensor *x = range(AG_F64, SHAPE(3, 4));
    ag_tensor *i = idx((int64_t[]){3, 0, 3}, SHAPE(3));
    assert_values(ag_index_select(x, 1, i), (double[]){3, 0, 3, 7, 4, 7, 11, 8, 11}, 9);
    assert_values(ag_index_select(ag_transpose(x, 0, 1), -2, idx((int64_t[]){1}, SHAPE(1))),
                  (double[]){1, 5, 9}, 3);
    assert_shape(ag_index_select(x, 0, idx(NULL, SHAPE(0))), SHAPE(0, 4));
    assert_values(ag_index_select(ag_scalar(AG_F64, 4), 0, idx((int64_t[]){0}, 0, NULL)),
                  (double[]){4}, 1);
    ag_tensor *src = ag_from_f64((double[]){1, 2, 3, 4, 5, 6}, SHAPE(3, 2));
    ag_tensor *ia = idx((int64_t[]){0, 2, 0}, SHAPE(3));
    assert_values(ag_index_add(ag_zeros(AG_F64, SHAPE(3, 2)), 0, ia, src),
                  (double[]){6, 8, 0, 0, 3, 4}, 6);
    /* index_add is out of place. */
    ag_tensor *base = ag_ones(AG_F64, SHAPE(3, 2));
    ag_index_add(base, -2, ia, src);
    assert_values(base, (double[]){1, 1, 1, 1, 1, 1}, 6);
    ag_tensor *g = ag_from_f64((double[]){1, 2, 3, 4}, SHAPE(2, 2));
    assert_values(ag_gather(g, 1, idx((int64_t[]){0, 0, 1, 0}, SHAPE(2, 2))),
                  (double[]){1, 1, 4, 3}, 4);
    assert_values(ag_gather(g, 0, idx((int64_t[]){1}, SHAPE(1, 1))), (double[]){3}, 1);
    ag_tensor *si = idx((int64_t[]){0, 1, 1, 1, 0, 0}, SHAPE(2, 3));
    ag_tensor *ss = ag_from_f64((double[]){1, 2, 3, 4, 5, 6}, SHAPE(2, 3));
    assert_values(ag_scatter_add(ag_zeros(AG_F64, SHAPE(2, 3)), 0, si, ss),
                  (double[]){1, 5, 6, 4, 2, 3}, 6);
    /* An index smaller than src only scatters its own extent. */
    assert_values(
        ag_scatter_add(ag_zeros(AG_F64, SHAPE(2, 2)), 1, idx((int64_t[]){1, 1}, SHAPE(1, 2)), ss),
        (double[]){0, 3, 0, 0}, 4);
    /* int64 data works too. */
    assert_values(ag_index_select(range(AG_I64, SHAPE(4)), 0, i), (double[]){3, 0, 3}, 3);
}
END_TEST

START_TEST(index_errors) {
    ag_tensor *x = range(AG_F64, SHAPE(3, 4));
    ag_tensor *i = idx((int64_t[]){0, 1}, SHAPE(2));
    ag_tensor *fi = ag_from_f64((double[]){0, 1}, SHAPE(2));
    assert_error(ag_index_select(x, 0, fi), AG_ERR_DTYPE, "index_select: expected an int64 index");
    assert_error(ag_gather(x, 0, fi), AG_ERR_DTYPE, "gather");
    assert_error(ag_scatter_add(x, 0, fi, x), AG_ERR_DTYPE, "scatter_add");
    assert_error(ag_index_add(x, 0, fi, x), AG_ERR_DTYPE, "index_add");
    assert_error(ag_one_hot(fi, 3), AG_ERR_DTYPE, "one_hot");
    assert_error(ag_index_select(x, 2, i), AG_ERR_INDEX, "dimension out of range");
    assert_error(ag_index_select(x, 0, idx((int64_t[]){0, 3}, SHAPE(2))), AG_ERR_INDEX,
                 "index 3 is out of range");
    assert_error(ag_index_select(x, 1, idx((int64_t[]){-1}, SHAPE(1))), AG_ERR_INDEX, "-1");
    assert_error(ag_index_select(x, 0, idx((int64_t[]){0, 1}, SHAPE(1, 2))), AG_ERR_SHAPE,
                 "vector");
    assert_error(ag_index_add(x, 0, i, ag_zeros(AG_F64, SHAPE(3, 4))), AG_ERR_SHAPE,
                 "does not fit");
    assert_error(ag_index_add(x, 0, i, ag_zeros(AG_F32, SHAPE(2, 4))), AG_ERR_DTYPE, "same dtype");
    assert_error(ag_gather(x, 0, idx((int64_t[]){0, 1}, SHAPE(2))), AG_ERR_SHAPE,
                 "same number of dimensions");
    assert_error(ag_gather(x, 0, idx((int64_t[5]){0}, SHAPE(1, 5))), AG_ERR_SHAPE,
                 "size does not match at dimension 1");
    assert_error(ag_gather(x, 1, idx((int64_t[]){4}, SHAPE(1, 1))), AG_ERR_INDEX, "index 4");
    assert_error(
        ag_scatter_add(x, 0, idx((int64_t[5]){0}, SHAPE(1, 5)), ag_ones(AG_F64, SHAPE(2, 5))),
        AG_ERR_SHAPE, "size does not match");
    assert_error(
        ag_scatter_add(x, 0, idx((int64_t[4]){0}, SHAPE(2, 2)), ag_ones(AG_F64, SHAPE(1, 4))),
        AG_ERR_SHAPE, "than src");
    assert_error(ag_index_select(NULL, 0, i), AG_ERR_INVALID_ARG, "index_select: input 0 is NULL");
}
END_TEST

START_TEST(gradcheck_index_ops) {
    static const enum layout layouts[] = {CONTIG, TRANSPOSED, STRIDED};
    for (int l = 0; l < 3; l++) {
        ag_scope *s = ag_scope_begin();
        ag_tensor *x = leaf(layouts[l], SHAPE(3, 4));
        /* Repeated indices make the backward accumulate. */
        args is = {.dim = -1, .index = idx((int64_t[]){3, 0, 3, 1, 3}, SHAPE(5))};
        check_grads("index_select", f_index_select, &is, 1, &x);
        ag_tensor *in2[2] = {x, leaf(layouts[l], SHAPE(3, 2))};
        args ia = {.dim = 1, .index = idx((int64_t[]){2, 2}, SHAPE(2))};
        check_grads("index_add", f_index_add, &ia, 2, in2);
        args ga = {.dim = 0, .index = idx((int64_t[]){2, 0, 2, 1, 1, 1}, SHAPE(2, 3))};
        check_grads("gather", f_gather, &ga, 1, &x);
        ag_tensor *in3[2] = {x, leaf(layouts[l], SHAPE(3, 4))};
        args sa = {.dim = -2, .index = idx((int64_t[]){2, 0, 2, 1, 1, 1}, SHAPE(2, 3))};
        check_grads("scatter_add (index smaller than src)", f_scatter_add, &sa, 2, in3);
        ag_tensor *in4[2] = {x, leaf(layouts[l], SHAPE(2, 3))};
        check_grads("scatter_add", f_scatter_add, &sa, 2, in4);
        ag_scope_end(s);
    }
    /* 0-dim data and zero-size indices. */
    ag_tensor *z[2] = {leaf(CONTIG, 0, NULL), leaf(CONTIG, 0, NULL)};
    args is0 = {.dim = 0, .index = idx((int64_t[]){0}, SHAPE(1))};
    check_grads("index_select 0-dim", f_index_select, &is0, 1, z);
    check_grads("index_add 0-dim", f_index_add, &is0, 2, z);
    args ga0 = {.dim = -1, .index = idx((int64_t[]){0}, 0, NULL)};
    check_grads("gather 0-dim", f_gather, &ga0, 1, z);
    check_grads("scatter_add 0-dim", f_scatter_add, &ga0, 2, z);
    ag_tensor *x = leaf(CONTIG, SHAPE(2, 3));
    args none = {.dim = 0, .index = idx(NULL, SHAPE(0))};
    check_grads("index_select empty index", f_index_select, &none, 1, &x);
    ag_tensor *ie[2] = {x, leaf(CONTIG, SHAPE(0, 3))};
    check_grads("index_add empty index", f_index_add, &none, 2, ie);
    args ge = {.dim = 1, .index = idx(NULL, SHAPE(2, 0))};
    check_grads("gather empty index", f_gather, &ge, 1, &x);
}
END_TEST

/* ---- cat / stack / one_hot ---- */

START_TEST(cat_values) {
    ag_tensor *a = ag_from_f64((double[]){1, 2, 3, 4}, SHAPE(2, 2));
    ag_tensor *b = idx((int64_t[]){5, 6}, SHAPE(2, 1));
    ag_tensor *empty = ag_zeros(AG_F32, SHAPE(0));
    ag_tensor *r = ag_cat(3, (ag_tensor *[]){a, empty, b}, -1);
    assert_shape(r, SHAPE(2, 3));
    ck_assert_int_eq(ag_dtype_of(r), AG_F64);
    assert_values(r, (double[]){1, 2, 5, 3, 4, 6}, 6);
    ag_tensor *r0 = ag_cat(2, (ag_tensor *[]){ag_transpose(a, 0, 1), a}, 0);
    assert_values(r0, (double[]){1, 3, 2, 4, 1, 2, 3, 4}, 8);
    ag_tensor *ints = ag_cat(2, (ag_tensor *[]){b, b}, 0);
    ck_assert_int_eq(ag_dtype_of(ints), AG_I64);
    assert_values(ints, (double[]){5, 6, 5, 6}, 4);
    ag_tensor *none = ag_cat(2, (ag_tensor *[]){empty, empty}, 0);
    assert_shape(none, SHAPE(0));
    ck_assert_int_eq(ag_dtype_of(none), AG_F32);
    assert_shape(ag_cat(2, (ag_tensor *[]){ag_zeros(AG_F64, SHAPE(2, 0)), a}, 1), SHAPE(2, 2));
    ck_assert(!ag_is_view(r));
}
END_TEST

START_TEST(cat_errors) {
    ag_tensor *a = range(AG_F64, SHAPE(2, 3));
    ag_tensor *b = range(AG_F64, SHAPE(3, 3));
    assert_error(ag_cat(2, (ag_tensor *[]){a, b}, 1), AG_ERR_SHAPE,
                 "tensor 1 has shape [3, 3] and tensor 0 has shape [2, 3]");
    assert_error(ag_cat(2, (ag_tensor *[]){a, range(AG_F64, SHAPE(6))}, 0), AG_ERR_SHAPE,
                 "tensor 1 has shape [6]");
    assert_error(ag_cat(2, (ag_tensor *[]){a, ag_scalar(AG_F64, 1)}, 0), AG_ERR_SHAPE,
                 "zero-dimensional tensor (at position 1)");
    assert_error(ag_cat(1, (ag_tensor *[]){a}, 2), AG_ERR_INDEX, "dimension out of range");
    assert_error(ag_cat(0, NULL, 0), AG_ERR_INVALID_ARG, "non-empty");
    assert_error(ag_cat(2, (ag_tensor *[]){a, NULL}, 0), AG_ERR_INVALID_ARG, "input 1 is NULL");
    assert_error(ag_stack(2, (ag_tensor *[]){a, b}, 0), AG_ERR_SHAPE,
                 "got [2, 3] at entry 0 and [3, 3] at entry 1");
    assert_error(ag_stack(1, (ag_tensor *[]){a}, 3), AG_ERR_INDEX, "dimension out of range");
    assert_error(ag_stack(0, NULL, 0), AG_ERR_INVALID_ARG, "non-empty");
}
END_TEST

START_TEST(stack_values) {
    ag_tensor *a = ag_from_f64((double[]){1, 2}, SHAPE(2));
    ag_tensor *b = ag_from_f64((double[]){3, 4}, SHAPE(2));
    assert_values(ag_stack(2, (ag_tensor *[]){a, b}, 0), (double[]){1, 2, 3, 4}, 4);
    ag_tensor *s = ag_stack(2, (ag_tensor *[]){a, b}, -1);
    assert_shape(s, SHAPE(2, 2));
    assert_values(s, (double[]){1, 3, 2, 4}, 4);
    ag_tensor *z = ag_stack(
        3, (ag_tensor *[]){ag_scalar(AG_F64, 1), ag_scalar(AG_F64, 2), ag_scalar(AG_F64, 3)}, 0);
    assert_values(z, (double[]){1, 2, 3}, 3);
    assert_shape(
        ag_stack(2, (ag_tensor *[]){ag_zeros(AG_F64, SHAPE(0)), ag_zeros(AG_F64, SHAPE(0))}, 1),
        SHAPE(0, 2));
}
END_TEST

START_TEST(one_hot_values_and_errors) {
    ag_tensor *i = idx((int64_t[]){0, 2, 1}, SHAPE(3));
    ag_tensor *h = ag_one_hot(i, -1);
    assert_shape(h, SHAPE(3, 3));
    ck_assert_int_eq(ag_dtype_of(h), AG_I64);
    assert_values(h, (double[]){1, 0, 0, 0, 0, 1, 0, 1, 0}, 9);
    ag_tensor *h4 = ag_one_hot(ag_transpose(idx((int64_t[]){1, 0, 3, 2}, SHAPE(2, 2)), 0, 1), 4);
    assert_shape(h4, SHAPE(2, 2, 4));
    assert_values(h4, (double[]){0, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0}, 16);
    assert_values(ag_one_hot(idx((int64_t[]){2}, 0, NULL), 3), (double[]){0, 0, 1}, 3);
    assert_shape(ag_one_hot(idx(NULL, SHAPE(0)), 5), SHAPE(0, 5));
    assert_error(ag_one_hot(idx((int64_t[]){0, -1}, SHAPE(2)), -1), AG_ERR_INDEX, "non-negative");
    assert_error(ag_one_hot(idx((int64_t[]){0, 3}, SHAPE(2)), 3), AG_ERR_INDEX,
                 "smaller than num_classes");
    assert_error(ag_one_hot(idx(NULL, SHAPE(0)), -1), AG_ERR_INVALID_ARG, "empty tensor");
    assert_error(ag_one_hot(NULL, 3), AG_ERR_INVALID_ARG, "one_hot");
}
END_TEST

START_TEST(gradcheck_cat_stack) {
    static const enum layout layouts[] = {CONTIG, TRANSPOSED, STRIDED};
    for (int l = 0; l < 3; l++) {
        ag_scope *s = ag_scope_begin();
        ag_tensor *in[3] = {leaf(layouts[l], SHAPE(2, 3)), leaf(CONTIG, SHAPE(2, 1)),
                            leaf(layouts[l], SHAPE(2, 2))};
        args c = {.a = 3, .dim = -1};
        check_grads("cat", f_cat, &c, 3, in);
        ag_tensor *rows[2] = {in[0], leaf(layouts[l], SHAPE(4, 3))};
        args c0 = {.a = 2, .dim = 0};
        check_grads("cat dim 0", f_cat, &c0, 2, rows);
        ag_tensor *same[2] = {in[0], leaf(CONTIG, SHAPE(2, 3))};
        args st = {.a = 2, .dim = 1};
        check_grads("stack", f_stack, &st, 2, same);
        ag_scope_end(s);
    }
    /* Skipped [0] inputs get an empty gradient; zero-size and 0-dim stack. */
    ag_tensor *sk[3] = {leaf(CONTIG, SHAPE(0)), leaf(CONTIG, SHAPE(2, 2)),
                        leaf(CONTIG, SHAPE(2, 0))};
    args c = {.a = 3, .dim = 1};
    check_grads("cat with empty inputs", f_cat, &c, 3, sk);
    ag_tensor *zs[2] = {leaf(CONTIG, 0, NULL), leaf(CONTIG, 0, NULL)};
    args st = {.a = 2, .dim = -1};
    check_grads("stack 0-dim", f_stack, &st, 2, zs);
    /* A float64 input next to an int64 one: the gradient reaches the float input. */
    ag_tensor *mixed[2] = {leaf(CONTIG, SHAPE(2)), idx((int64_t[]){7, 8}, SHAPE(2))};
    args c2 = {.a = 2, .dim = 0};
    check_grads("cat mixed dtypes", f_cat, &c2, 2, mixed);
}
END_TEST

START_TEST(cat_many_inputs) {
    enum { N = 40 };
    ag_tensor *in[N];
    for (int i = 0; i < N; i++) in[i] = leaf(CONTIG, SHAPE(1));
    ag_tensor *r = ag_cat(N, in, 0);
    assert_shape(r, SHAPE(N));
    ag_tensor *w = ag_arange(AG_F64, 0, N, 1);
    ck_assert_int_eq(ag_backward(ag_sum(ag_mul(r, w), 0, NULL, false), NULL), AG_OK);
    for (int i = 0; i < N; i++) assert_values(ag_tensor_grad(in[i]), (double[]){i}, 1);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("ops_views_index");
    TCase *values = tcase_create("values");
    tcase_add_checked_fixture(values, tu_scope_setup, tu_scope_teardown);
    tcase_add_test(values, reshape_views_when_strides_allow);
    tcase_add_test(values, reshape_errors);
    tcase_add_test(values, flatten_squeeze_unsqueeze);
    tcase_add_test(values, transpose_and_permute);
    tcase_add_test(values, expand_values_and_errors);
    tcase_add_test(values, slice_values);
    tcase_add_test(values, select_values);
    tcase_add_test(values, views_share_storage_and_version);
    tcase_add_test(values, inplace_on_view_invalidates_saved_base);
    tcase_add_test(values, views_record_grad_fn);
    tcase_add_test(values, index_values);
    tcase_add_test(values, index_errors);
    tcase_add_test(values, cat_values);
    tcase_add_test(values, cat_errors);
    tcase_add_test(values, stack_values);
    tcase_add_test(values, one_hot_values_and_errors);
    tcase_add_test(values, cat_many_inputs);
    suite_add_tcase(s, values);
    TCase *grads = tcase_create("gradcheck");
    tcase_add_checked_fixture(grads, tu_scope_setup, tu_scope_teardown);
    tcase_set_timeout(grads, 120);
    tcase_add_test(grads, gradcheck_views);
    tcase_add_test(grads, gradcheck_views_0dim_and_empty);
    tcase_add_test(grads, gradcheck_index_ops);
    tcase_add_test(grads, gradcheck_cat_stack);
    suite_add_tcase(s, grads);
    return s;
}

int main(void) {
    return tu_run_suite(suite());
}
