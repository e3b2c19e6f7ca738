/* Tensors themselves, on real data: creation (empty/zeros/ones/full, *_like, scalar, arange,
 * from_data), random sampling (seeding, ranges, moments), inspection (sizes, strides,
 * contiguity, views, item, host copies), printing, devices, dtype/status names, references
 * and scopes, and the thread-local error state. Expected values are PyTorch's unless a
 * comment says ag differs on purpose (printing). */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "ag/ag.h"
#include "test_util.h"

static ag_scope *scope;

static void setup(void) {
    ag_clear_error();
    scope = ag_scope_begin();
}

static void teardown(void) {
    ag_scope_end(scope);
    ag_set_default_device((ag_device){-1, -1}); /* drops an override a failed test left */
}

/* The ownership tests start outside any scope and end every scope they open. */
static void setup_unscoped(void) {
    ag_clear_error();
}

/* ---- helpers ---- */

/* Asserts the call returned `want`, that the thread's error state says the same with a
 * message containing `words`, then forgets the error. */
#define expect_error(got, want, words) expect_error_at(__LINE__, (got), (want), (words))
static void expect_error_at(int line, ag_status got, ag_status want, const char *words) {
    ck_assert_msg(got == want, "line %d: status %s, expected %s (%s)", line, ag_status_name(got),
                  ag_status_name(want), ag_last_error());
    ck_assert_msg(ag_last_status() == want, "line %d: last status %s, expected %s", line,
                  ag_status_name(ag_last_status()), ag_status_name(want));
    ck_assert_msg(strstr(ag_last_error(), words), "line %d: message '%s' lacks '%s'", line,
                  ag_last_error(), words);
    ag_clear_error();
}

/* Asserts a creating call returned NULL with `want` and a message containing `words`. */
#define expect_null(t, want, words) expect_null_at(__LINE__, (t), (want), (words))
static void expect_null_at(int line, const ag_tensor *t, ag_status want, const char *words) {
    ck_assert_msg(t == NULL, "line %d: expected NULL and %s, got a tensor", line,
                  ag_status_name(want));
    expect_error_at(line, ag_last_status(), want, words);
}

/* Asserts t has `shape` and the row-major values `want` within atol. */
#define expect_values(t, ndim, shape, want, atol)                                                  \
    expect_values_at(__LINE__, (t), (ndim), (shape), (want), (atol))
static void expect_values_at(int line, const ag_tensor *t, int ndim, const int64_t *shape,
                             const double *want, double atol) {
    char msg[512] = "";
    bool ok = tu_values_are(t, ndim, shape, want, atol, 0, msg, sizeof msg, NULL);
    ck_assert_msg(ok, "line %d: %s", line, msg);
}

/* Asserts t exists, without an error pending. */
#define expect_tensor(t) expect_tensor_at(__LINE__, (t))
static const ag_tensor *expect_tensor_at(int line, const ag_tensor *t) {
    ck_assert_msg(t != NULL, "line %d: NULL: %s", line, ag_last_error());
    return t;
}

/* The value of a one-element tensor. */
static double item(const ag_tensor *t) {
    double v = NAN;
    ag_status st = ag_item(t, &v);
    ck_assert_msg(st == AG_OK, "ag_item: %s", ag_last_error());
    return v;
}

/* What ag_fprint writes for t, into buf. */
static void render(const ag_tensor *t, char *buf, size_t size) {
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    ag_status st = ag_fprint(f, t);
    rewind(f);
    size_t n = fread(buf, 1, size - 1, f);
    buf[n] = '\0';
    fclose(f);
    ck_assert_msg(st == AG_OK, "ag_fprint: %s", ag_last_error());
}

#define expect_render(t, want) expect_render_at(__LINE__, (t), (want))
static void expect_render_at(int line, const ag_tensor *t, const char *want) {
    char got[1024];
    render(t, got, sizeof got);
    ck_assert_msg(strcmp(got, want) == 0, "line %d: printed\n%s\nexpected\n%s", line, got, want);
}

static bool same_device(ag_device a, ag_device b) {
    return a.backend == b.backend && a.index == b.index;
}

/* Mean, standard deviation (biased), extremes and the share of elements in [lo, hi). */
typedef struct moments {
    double mean, std, min, max, share;
} moments;

static moments moments_of(const ag_tensor *t, double lo, double hi) {
    expect_tensor(t);
    int64_t n = ag_numel(t);
    ck_assert_int_gt(n, 0);
    double *v = malloc((size_t)n * sizeof *v);
    ck_assert_ptr_nonnull(v);
    ag_status st = tu_read(t, v, n);
    moments m = {0, 0, INFINITY, -INFINITY, 0};
    double sum = 0, sq = 0;
    int64_t inside = 0, finite = 0;
    for (int64_t i = 0; st == AG_OK && i < n; i++) {
        finite += isfinite(v[i]) != 0;
        sum += v[i];
        if (v[i] < m.min) m.min = v[i];
        if (v[i] > m.max) m.max = v[i];
        inside += v[i] >= lo && v[i] < hi;
    }
    m.mean = sum / (double)n;
    for (int64_t i = 0; st == AG_OK && i < n; i++) sq += (v[i] - m.mean) * (v[i] - m.mean);
    m.std = sqrt(sq / (double)n);
    m.share = (double)inside / (double)n;
    free(v);
    ck_assert_msg(st == AG_OK, "reading samples: %s", ag_last_error());
    ck_assert_int_eq(finite, n);
    return m;
}

/* Number of positions where a and b (same numel) differ. */
static int64_t count_differences(const ag_tensor *a, const ag_tensor *b) {
    expect_tensor(a);
    expect_tensor(b);
    int64_t n = ag_numel(a);
    ck_assert_int_eq(ag_numel(b), n);
    double *va = malloc((size_t)n * sizeof *va), *vb = malloc((size_t)n * sizeof *vb);
    bool ok = va && vb && tu_read(a, va, n) == AG_OK && tu_read(b, vb, n) == AG_OK;
    int64_t diff = 0;
    for (int64_t i = 0; ok && i < n; i++) diff += va[i] != vb[i];
    free(va);
    free(vb);
    ck_assert_msg(ok, "reading samples: %s", ag_last_error());
    return diff;
}

static const ag_dtype k_dtypes[] = {AG_F32, AG_F64, AG_I64};
static const ag_dtype k_float_dtypes[] = {AG_F32, AG_F64};

/* ---- creation ---- */

START_TEST(empty_has_geometry_and_no_history) {
    ag_tensor *t = ag_empty(AG_F64, 3, TU_SHAPE(2, 3, 4));
    expect_tensor(t);
    ck_assert_int_eq(ag_ndim(t), 3);
    ck_assert_int_eq(ag_numel(t), 24);
    ck_assert_int_eq(ag_dtype_of(t), AG_F64);
    ck_assert_int_eq(ag_shape(t)[0], 2);
    ck_assert_int_eq(ag_shape(t)[1], 3);
    ck_assert_int_eq(ag_shape(t)[2], 4);
    ck_assert_int_eq(ag_strides(t)[0], 12);
    ck_assert_int_eq(ag_strides(t)[1], 4);
    ck_assert_int_eq(ag_strides(t)[2], 1);
    ck_assert(ag_is_contiguous(t));
    ck_assert(!ag_is_view(t));
    ck_assert(ag_is_leaf(t));
    ck_assert(!ag_requires_grad(t));
    ck_assert_ptr_null(ag_grad_fn_name(t));
    ck_assert_ptr_null(ag_tensor_grad(t));
    ck_assert(same_device(ag_device_of(t), ag_default_device()));
    ck_assert_ptr_nonnull(ag_data_ptr(t));

    ag_tensor *z = ag_empty(AG_I64, 2, TU_SHAPE(0, 5));
    expect_tensor(z);
    ck_assert_int_eq(ag_numel(z), 0);
    ck_assert_int_eq(ag_size(z, 0), 0);
    ck_assert_int_eq(ag_size(z, 1), 5);
    ck_assert_int_eq(ag_strides(z)[0], 5); /* torch.empty(0, 5).stride() == (5, 1) */
    ck_assert_int_eq(ag_strides(z)[1], 1);

    ag_tensor *s = ag_empty(AG_F32, 0, NULL);
    expect_tensor(s);
    ck_assert_int_eq(ag_ndim(s), 0);
    ck_assert_int_eq(ag_numel(s), 1);

    ck_assert_int_eq(ag_dtype_of(ag_empty(AG_F16, 1, TU_SHAPE(2))), AG_F16);
    expect_null(ag_empty(AG_DTYPE_COUNT, 1, TU_SHAPE(2)), AG_ERR_DTYPE, "expected float32");
    expect_null(ag_empty(AG_F32, 2, TU_SHAPE(2, -1)), AG_ERR_SHAPE, "negative extent -1 in dim 1");
}
END_TEST

START_TEST(zeros_ones_full_in_every_dtype) {
    for (size_t d = 0; d < sizeof k_dtypes / sizeof k_dtypes[0]; d++) {
        ag_dtype dt = k_dtypes[d];
        ag_tensor *z = ag_zeros(dt, 2, TU_SHAPE(2, 3));
        ag_tensor *o = ag_ones(dt, 2, TU_SHAPE(3, 2));
        ag_tensor *f = ag_full(dt, 1, TU_SHAPE(4), 7);
        ag_tensor *f0 = ag_full(dt, 0, NULL, -3);
        expect_values(z, 2, TU_SHAPE(2, 3), TU_VALUES(0, 0, 0, 0, 0, 0), 0);
        expect_values(o, 2, TU_SHAPE(3, 2), TU_VALUES(1, 1, 1, 1, 1, 1), 0);
        expect_values(f, 1, TU_SHAPE(4), TU_VALUES(7, 7, 7, 7), 0);
        expect_values(f0, 0, NULL, TU_VALUES(-3), 0);
        ck_assert_int_eq(ag_dtype_of(z), dt);
        ck_assert_int_eq(ag_dtype_of(o), dt);
        ck_assert_int_eq(ag_dtype_of(f), dt);
        ck_assert_int_eq(ag_dtype_of(f0), dt);
        ck_assert(!ag_requires_grad(f));
        /* Zero-size and 8-dim shapes are fine. */
        ag_tensor *e = ag_full(dt, 2, TU_SHAPE(3, 0), 5);
        expect_values(e, 2, TU_SHAPE(3, 0), TU_VALUES(0), 0);
        ag_tensor *m = ag_ones(dt, 8, TU_SHAPE(1, 2, 1, 2, 1, 2, 1, 2));
        expect_values(m, 8, TU_SHAPE(1, 2, 1, 2, 1, 2, 1, 2),
                      TU_VALUES(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), 0);
    }
    /* Fractional values: rounded to float32, truncated toward zero for int64 as
     * torch.full((2,), -2.5, dtype=torch.int64) gives [-2, -2]. */
    expect_values(ag_full(AG_F32, 1, TU_SHAPE(2), 0.1), 1, TU_SHAPE(2),
                  TU_VALUES((double)0.1f, (double)0.1f), 0);
    expect_values(ag_full(AG_F64, 1, TU_SHAPE(2), -2.5), 1, TU_SHAPE(2), TU_VALUES(-2.5, -2.5), 0);
    expect_values(ag_full(AG_I64, 1, TU_SHAPE(2), -2.5), 1, TU_SHAPE(2), TU_VALUES(-2, -2), 0);
    expect_values(ag_full(AG_F64, 1, TU_SHAPE(3), INFINITY), 1, TU_SHAPE(3),
                  TU_VALUES(INFINITY, INFINITY, INFINITY), 0);
    expect_values(ag_full(AG_F32, 1, TU_SHAPE(2), NAN), 1, TU_SHAPE(2), TU_VALUES(NAN, NAN), 0);

    expect_null(ag_zeros(AG_F32, 9, TU_SHAPE(1, 1, 1, 1, 1, 1, 1, 1, 1)), AG_ERR_SHAPE,
                "0..8 dims, got 9");
    expect_null(ag_ones(AG_F64, 1, TU_SHAPE(-1)), AG_ERR_SHAPE, "negative extent -1 in dim 0");
    /* 16-bit floats are filled through float32 and rounded: 1/3 in bfloat16 is 0.333984375. */
    expect_values(ag_full(AG_BF16, 1, TU_SHAPE(2), 1.0 / 3), 1, TU_SHAPE(2),
                  TU_VALUES(0.333984375, 0.333984375), 0);
    expect_values(ag_full(AG_F16, 1, TU_SHAPE(2), 65520), 1, TU_SHAPE(2),
                  TU_VALUES(INFINITY, INFINITY), 0);
    expect_null(ag_full((ag_dtype)-1, 1, TU_SHAPE(2), 1), AG_ERR_DTYPE, "invalid");
    expect_null(ag_zeros(AG_F32, 2, NULL), AG_ERR_INVALID_ARG, "shape is NULL");
}
END_TEST

START_TEST(like_takes_shape_dtype_device_but_not_history) {
    ag_tensor *x = ag_from_f64(TU_VALUES(1, 2, 3, 4, 5, 6), 2, TU_SHAPE(2, 3));
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ag_tensor *xt = ag_transpose(x, 0, 1);
    ag_tensor *z = ag_zeros_like(xt);
    expect_values(z, 2, TU_SHAPE(3, 2), TU_VALUES(0, 0, 0, 0, 0, 0), 0);
    ck_assert_int_eq(ag_dtype_of(z), AG_F64);
    ck_assert(same_device(ag_device_of(z), ag_device_of(x)));
    ck_assert(!ag_requires_grad(z));
    ck_assert(ag_is_leaf(z));
    ck_assert_ptr_null(ag_grad_fn_name(z));
    ck_assert(!ag_is_view(z));

    ag_tensor *f = ag_full_like(xt, -1.5);
    expect_values(f, 2, TU_SHAPE(3, 2), TU_VALUES(-1.5, -1.5, -1.5, -1.5, -1.5, -1.5), 0);
    ck_assert(!ag_requires_grad(f));

    ag_tensor *i = ag_from_i64((const int64_t[]){4, 5, 6, 7}, 1, TU_SHAPE(4));
    ag_tensor *o = ag_ones_like(i);
    expect_values(o, 1, TU_SHAPE(4), TU_VALUES(1, 1, 1, 1), 0);
    ck_assert_int_eq(ag_dtype_of(o), AG_I64);
    expect_values(ag_full_like(i, 9.75), 1, TU_SHAPE(4), TU_VALUES(9, 9, 9, 9), 0);

    ag_tensor *s = ag_full_like(ag_scalar(AG_F32, 8), 0.25);
    expect_values(s, 0, NULL, TU_VALUES(0.25), 0);
    ck_assert_int_eq(ag_dtype_of(s), AG_F32);

    ag_tensor *e = ag_ones_like(ag_zeros(AG_F32, 2, TU_SHAPE(0, 2)));
    expect_values(e, 2, TU_SHAPE(0, 2), TU_VALUES(0), 0);

    expect_null(ag_zeros_like(NULL), AG_ERR_INVALID_ARG, "is NULL");
    expect_null(ag_ones_like(NULL), AG_ERR_INVALID_ARG, "is NULL");
    expect_null(ag_full_like(NULL, 1), AG_ERR_INVALID_ARG, "is NULL");
}
END_TEST

START_TEST(scalar_is_zero_dim) {
    ag_tensor *d = ag_scalar(AG_F64, 2.5);
    expect_tensor(d);
    ck_assert_int_eq(ag_ndim(d), 0);
    ck_assert_int_eq(ag_numel(d), 1);
    ck_assert_int_eq(ag_dtype_of(d), AG_F64);
    ck_assert(ag_is_contiguous(d));
    ck_assert(item(d) == 2.5);
    ag_tensor *f = ag_scalar(AG_F32, 0.1);
    ck_assert_int_eq(ag_dtype_of(f), AG_F32);
    ck_assert(item(f) == (double)0.1f);
    ag_tensor *i = ag_scalar(AG_I64, -7);
    ck_assert_int_eq(ag_dtype_of(i), AG_I64);
    ck_assert(item(i) == -7);
    ck_assert(item(ag_scalar(AG_BF16, 257)) == 256); /* 8 bits of mantissa: a tie, to even */
    ck_assert(item(ag_scalar(AG_F16, 2049)) == 2048);
}
END_TEST

START_TEST(arange_values_steps_and_errors) {
    ag_tensor *a = ag_arange(AG_F32, 0, 5, 1);
    expect_values(a, 1, TU_SHAPE(5), TU_VALUES(0, 1, 2, 3, 4), 0);
    ck_assert_int_eq(ag_dtype_of(a), AG_F32);
    expect_values(ag_arange(AG_F64, 0, 1, 0.25), 1, TU_SHAPE(4), TU_VALUES(0, 0.25, 0.5, 0.75), 0);
    expect_values(ag_arange(AG_F64, 1, 2.5, 0.5), 1, TU_SHAPE(3), TU_VALUES(1, 1.5, 2), 0);
    /* torch.arange(-1, 1, 0.3): ceil(2 / 0.3) = 7 elements. */
    expect_values(ag_arange(AG_F64, -1, 1, 0.3), 1, TU_SHAPE(7),
                  TU_VALUES(-1, -0.7, -0.4, -0.1, 0.2, 0.5, 0.8), 1e-12);
    /* torch.arange(0, 1, 0.1, dtype=torch.float32) has 10 elements. */
    expect_values(ag_arange(AG_F32, 0, 1, 0.1), 1, TU_SHAPE(10),
                  TU_VALUES(0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), 1e-6);
    ag_tensor *i = ag_arange(AG_I64, 0, 10, 3);
    expect_values(i, 1, TU_SHAPE(4), TU_VALUES(0, 3, 6, 9), 0);
    ck_assert_int_eq(ag_dtype_of(i), AG_I64);
    expect_values(ag_arange(AG_I64, -5, 5, 4), 1, TU_SHAPE(3), TU_VALUES(-5, -1, 3), 0);
    ag_tensor *big = ag_arange(AG_F64, 0, 1000, 1);
    ck_assert_int_eq(ag_numel(big), 1000);
    ck_assert(item(ag_select(big, 0, 999)) == 999);
    ck_assert(item(ag_select(big, 0, 500)) == 500);

    /* Negative steps count down to end (exclusive). */
    expect_values(ag_arange(AG_F64, 5, 0, -2), 1, TU_SHAPE(3), TU_VALUES(5, 3, 1), 0);
    expect_values(ag_arange(AG_I64, 3, -3, -2), 1, TU_SHAPE(3), TU_VALUES(3, 1, -1), 0);
    expect_values(ag_arange(AG_F32, 1, 0, -0.25), 1, TU_SHAPE(4), TU_VALUES(1, 0.75, 0.5, 0.25), 0);

    /* Empty ranges. */
    expect_values(ag_arange(AG_F64, 3, 3, 1), 1, TU_SHAPE(0), TU_VALUES(0), 0);
    expect_values(ag_arange(AG_I64, 0, 0, -1), 1, TU_SHAPE(0), TU_VALUES(0), 0);

    expect_null(ag_arange(AG_F64, 0, 1, 0), AG_ERR_INVALID_ARG, "step=0");
    expect_null(ag_arange(AG_I64, 0, 1, 0), AG_ERR_INVALID_ARG, "arange");
    expect_null(ag_arange(AG_F64, 0, 1, NAN), AG_ERR_INVALID_ARG, "arange");
    expect_null(ag_arange(AG_F64, 0, INFINITY, 1), AG_ERR_INVALID_ARG, "arange");
    expect_null(ag_arange(AG_F64, NAN, 1, 1), AG_ERR_INVALID_ARG, "arange");
    expect_values(ag_arange(AG_F16, 0, 3, 1), 1, TU_SHAPE(3), TU_VALUES(0, 1, 2), 0);
}
END_TEST

START_TEST(from_data_copies_exact_values) {
    float f[6] = {1.5f, -2, 0.25f, 1e-3f, 3e8f, -0.0f};
    ag_tensor *tf = ag_from_f32(f, 2, TU_SHAPE(2, 3));
    expect_tensor(tf);
    ck_assert_int_eq(ag_dtype_of(tf), AG_F32);
    ck_assert_int_eq(ag_ndim(tf), 2);
    ck_assert_int_eq(ag_size(tf, 0), 2);
    ck_assert_int_eq(ag_size(tf, 1), 3);
    float fout[6];
    ck_assert_int_eq(ag_to_host(tf, fout, sizeof fout), AG_OK);
    ck_assert_mem_eq(fout, f, sizeof f); /* bitwise: -0.0 stays -0.0 */
    f[0] = 99;                           /* the tensor holds a copy */
    ck_assert_int_eq(ag_to_host(tf, fout, sizeof fout), AG_OK);
    ck_assert(fout[0] == 1.5f);

    const double d[4] = {1e300, 4.9406564584124654e-324, -0.0, -1.0 / 3};
    ag_tensor *td = ag_from_f64(d, 1, TU_SHAPE(4));
    double dout[4];
    ck_assert_int_eq(ag_dtype_of(td), AG_F64);
    ck_assert_int_eq(ag_to_host(td, dout, sizeof dout), AG_OK);
    ck_assert_mem_eq(dout, d, sizeof d);

    const int64_t i[4] = {INT64_MAX, INT64_MIN, ((int64_t)1 << 53) + 1, -1};
    ag_tensor *ti = ag_from_i64(i, 2, TU_SHAPE(2, 2));
    int64_t iout[4];
    ck_assert_int_eq(ag_dtype_of(ti), AG_I64);
    ck_assert_int_eq(ag_to_host(ti, iout, sizeof iout), AG_OK);
    ck_assert_mem_eq(iout, i, sizeof i);
    ag_tensor *tg = ag_from_data(AG_I64, 1, TU_SHAPE(4), i);
    ck_assert_int_eq(ag_to_host(tg, iout, sizeof iout), AG_OK);
    ck_assert_mem_eq(iout, i, sizeof i);

    ag_tensor *s = ag_from_f64(TU_VALUES(-4.25), 0, NULL);
    expect_tensor(s);
    ck_assert_int_eq(ag_ndim(s), 0);
    ck_assert_int_eq(ag_numel(s), 1);
    ck_assert(item(s) == -4.25);

    ag_tensor *z = ag_from_f32(f, 2, TU_SHAPE(0, 3));
    expect_tensor(z);
    ck_assert_int_eq(ag_numel(z), 0);
    ck_assert_int_eq(ag_size(z, 1), 3);
    ck_assert_int_eq(ag_to_host(z, fout, 0), AG_OK);

    ag_tensor *m = ag_from_f64(TU_VALUES(1, 2, 3, 4, 5, 6), 8, TU_SHAPE(1, 1, 1, 1, 1, 1, 2, 3));
    expect_values(m, 8, TU_SHAPE(1, 1, 1, 1, 1, 1, 2, 3), TU_VALUES(1, 2, 3, 4, 5, 6), 0);

    expect_null(ag_from_data(AG_F32, 1, TU_SHAPE(2), NULL), AG_ERR_INVALID_ARG, "data is NULL");
    expect_null(ag_from_f64(NULL, 0, NULL), AG_ERR_INVALID_ARG, "data is NULL");
    expect_null(ag_from_i64(NULL, 1, TU_SHAPE(0)), AG_ERR_INVALID_ARG, "data is NULL");
    expect_null(ag_from_f64(d, 9, TU_SHAPE(1, 1, 1, 1, 1, 1, 1, 1, 1)), AG_ERR_SHAPE,
                "0..8 dims, got 9");
    expect_null(ag_from_f64(d, -1, TU_SHAPE(1)), AG_ERR_SHAPE, "got -1");
    expect_null(ag_from_f64(d, 2, TU_SHAPE(2, -3)), AG_ERR_SHAPE, "negative extent -3 in dim 1");
    expect_null(ag_from_f64(d, 2, NULL), AG_ERR_INVALID_ARG, "shape is NULL");
    /* 16-bit floats come as their bits (include/ag/half.h converts). */
    const uint16_t h[2] = {0x3c00, 0xc100}, bh[2] = {0x3f80, 0x4049};
    expect_values(ag_from_data(AG_F16, 1, TU_SHAPE(2), h), 1, TU_SHAPE(2), TU_VALUES(1, -2.5), 0);
    expect_values(ag_from_data(AG_BF16, 1, TU_SHAPE(2), bh), 1, TU_SHAPE(2), TU_VALUES(1, 3.140625),
                  0);
    expect_null(ag_from_data(AG_DTYPE_COUNT, 1, TU_SHAPE(2), d), AG_ERR_DTYPE, "invalid");
}
END_TEST

/* ---- random ---- */

START_TEST(generator_seed_determines_samples) {
    ag_generator *g1 = ag_generator_new(42), *g2 = ag_generator_new(42), *g3 = ag_generator_new(43);
    ck_assert(g1 && g2 && g3);
    ag_tensor *a = ag_rand(g1, AG_F64, 1, TU_SHAPE(1000));
    ag_tensor *b = ag_rand(g2, AG_F64, 1, TU_SHAPE(1000));
    ag_tensor *c = ag_rand(g3, AG_F64, 1, TU_SHAPE(1000));
    ck_assert_int_eq(count_differences(a, b), 0);
    ck_assert_int_ge(count_differences(a, c), 990);
    /* The stream advances: a second draw differs from the first, in step on both. */
    ag_tensor *a2 = ag_rand(g1, AG_F64, 1, TU_SHAPE(1000));
    ag_tensor *b2 = ag_rand(g2, AG_F64, 1, TU_SHAPE(1000));
    ck_assert_int_ge(count_differences(a, a2), 990);
    ck_assert_int_eq(count_differences(a2, b2), 0);
    ag_tensor *n1 = ag_randn(g1, AG_F32, 2, TU_SHAPE(8, 9));
    ag_tensor *n2 = ag_randn(g2, AG_F32, 2, TU_SHAPE(8, 9));
    ck_assert_int_eq(count_differences(n1, n2), 0);
    ag_tensor *u1 = ag_uniform(g1, AG_F64, 1, TU_SHAPE(50), -2, 3);
    ag_tensor *u2 = ag_uniform(g2, AG_F64, 1, TU_SHAPE(50), -2, 3);
    ag_tensor *u3 = ag_uniform(g3, AG_F64, 1, TU_SHAPE(50), -2, 3);
    ck_assert_int_eq(count_differences(u1, u2), 0);
    ck_assert_int_ge(count_differences(u1, u3), 48);
    ag_generator_free(g1);
    ag_generator_free(g2);
    ag_generator_free(g3);
}
END_TEST

START_TEST(manual_seed_restarts_default_generator) {
    ag_manual_seed(7);
    ag_tensor *a = ag_rand(NULL, AG_F64, 1, TU_SHAPE(256));
    ag_tensor *b = ag_rand(NULL, AG_F64, 1, TU_SHAPE(256));
    ag_tensor *na = ag_randn(NULL, AG_F32, 1, TU_SHAPE(64));
    ck_assert_int_ge(count_differences(a, b), 250);
    ag_manual_seed(7);
    ag_tensor *c = ag_rand(NULL, AG_F64, 1, TU_SHAPE(256));
    ag_tensor *d = ag_rand(NULL, AG_F64, 1, TU_SHAPE(256));
    ag_tensor *nc = ag_randn(NULL, AG_F32, 1, TU_SHAPE(64));
    ck_assert_int_eq(count_differences(a, c), 0);
    ck_assert_int_eq(count_differences(b, d), 0);
    ck_assert_int_eq(count_differences(na, nc), 0);
    ag_manual_seed(8);
    ck_assert_int_ge(count_differences(a, ag_rand(NULL, AG_F64, 1, TU_SHAPE(256))), 250);
    /* As torch.manual_seed(7) and torch.Generator().manual_seed(7): one stream. */
    ag_manual_seed(7);
    ag_generator *g = ag_generator_new(7);
    ck_assert_ptr_nonnull(g);
    ag_tensor *from_default = ag_uniform(NULL, AG_F64, 1, TU_SHAPE(100), 1, 2);
    ag_tensor *from_gen = ag_uniform(g, AG_F64, 1, TU_SHAPE(100), 1, 2);
    ag_generator_free(g);
    ck_assert_int_eq(count_differences(from_default, from_gen), 0);
}
END_TEST

START_TEST(rand_and_uniform_stay_in_range) {
    ag_generator *g = ag_generator_new(2024);
    ck_assert_ptr_nonnull(g);
    for (size_t d = 0; d < 2; d++) {
        ag_dtype dt = k_float_dtypes[d];
        ag_tensor *r = ag_rand(g, dt, 2, TU_SHAPE(400, 250));
        expect_tensor(r);
        ck_assert_int_eq(ag_dtype_of(r), dt);
        ck_assert_int_eq(ag_size(r, 0), 400);
        ck_assert_int_eq(ag_size(r, 1), 250);
        ck_assert(ag_is_leaf(r) && !ag_requires_grad(r));
        moments m = moments_of(r, 0.25, 0.5);
        ck_assert_msg(m.min >= 0 && m.max < 1, "%s rand outside [0, 1): %g..%g", ag_dtype_name(dt),
                      m.min, m.max);
        ck_assert_msg(m.min < 1e-3 && m.max > 1 - 1e-3, "%s rand spans only %g..%g",
                      ag_dtype_name(dt), m.min, m.max);
        ck_assert_msg(fabs(m.mean - 0.5) < 0.01, "%s rand mean %g", ag_dtype_name(dt), m.mean);
        ck_assert_msg(fabs(m.std - sqrt(1.0 / 12)) < 0.01, "%s rand std %g", ag_dtype_name(dt),
                      m.std);
        ck_assert_msg(fabs(m.share - 0.25) < 0.01, "%s rand: %g in [0.25, 0.5)", ag_dtype_name(dt),
                      m.share);

        ag_tensor *u = ag_uniform(g, dt, 1, TU_SHAPE(100000), -3, 5);
        m = moments_of(u, -3, 1);
        ck_assert_msg(m.min >= -3 && m.max < 5, "%s uniform outside [-3, 5): %g..%g",
                      ag_dtype_name(dt), m.min, m.max);
        ck_assert_msg(m.min < -2.99 && m.max > 4.99, "%s uniform spans only %g..%g",
                      ag_dtype_name(dt), m.min, m.max);
        ck_assert_msg(fabs(m.mean - 1) < 0.05, "%s uniform mean %g", ag_dtype_name(dt), m.mean);
        ck_assert_msg(fabs(m.std - 8 / sqrt(12)) < 0.02, "%s uniform std %g", ag_dtype_name(dt),
                      m.std);
        ck_assert_msg(fabs(m.share - 0.5) < 0.01, "%s uniform: %g below 1", ag_dtype_name(dt),
                      m.share);

        /* low == high gives that value; 0-dim and zero-size shapes work. */
        expect_values(ag_uniform(g, dt, 1, TU_SHAPE(3), 2, 2), 1, TU_SHAPE(3), TU_VALUES(2, 2, 2),
                      0);
        double v = item(ag_rand(g, dt, 0, NULL));
        ck_assert(v >= 0 && v < 1);
        ck_assert_int_eq(ag_numel(expect_tensor(ag_rand(g, dt, 1, TU_SHAPE(0)))), 0);
    }
    ag_generator_free(g);
}
END_TEST

START_TEST(randn_has_standard_moments) {
    ag_generator *g = ag_generator_new(99);
    ck_assert_ptr_nonnull(g);
    for (size_t d = 0; d < 2; d++) {
        ag_dtype dt = k_float_dtypes[d];
        ag_tensor *n = ag_randn(g, dt, 1, TU_SHAPE(100000));
        expect_tensor(n);
        ck_assert_int_eq(ag_dtype_of(n), dt);
        ck_assert(ag_is_leaf(n) && !ag_requires_grad(n));
        moments m = moments_of(n, -1, 1);
        ck_assert_msg(fabs(m.mean) < 0.02, "%s randn mean %g", ag_dtype_name(dt), m.mean);
        ck_assert_msg(fabs(m.std - 1) < 0.02, "%s randn std %g", ag_dtype_name(dt), m.std);
        /* Normal, not just any unit-variance law: 68.27% within one sigma, tails beyond 4. */
        ck_assert_msg(fabs(m.share - 0.6827) < 0.01, "%s randn: %g within one sigma",
                      ag_dtype_name(dt), m.share);
        ck_assert_msg(m.min < -3.5 && m.max > 3.5, "%s randn spans only %g..%g", ag_dtype_name(dt),
                      m.min, m.max);
        ck_assert_msg(fabs(moments_of(n, 0, INFINITY).share - 0.5) < 0.01,
                      "%s randn is not symmetric", ag_dtype_name(dt));
    }
    ag_generator_free(g);
}
END_TEST

START_TEST(randn_odd_counts) {
    ag_generator *g = ag_generator_new(5);
    ck_assert_ptr_nonnull(g);
    for (size_t d = 0; d < 2; d++) {
        ag_dtype dt = k_float_dtypes[d];
        ag_tensor *n = ag_randn(g, dt, 2, TU_SHAPE(1, 100001));
        moments m = moments_of(n, -1, 1);
        ck_assert_msg(fabs(m.mean) < 0.02, "%s randn mean %g", ag_dtype_name(dt), m.mean);
        ck_assert_msg(fabs(m.std - 1) < 0.02, "%s randn std %g", ag_dtype_name(dt), m.std);
        ag_tensor *c = ag_randn(g, dt, 3, TU_SHAPE(3, 3, 3));
        expect_tensor(c);
        ck_assert_int_eq(ag_numel(c), 27);
        m = moments_of(c, -INFINITY, INFINITY);
        ck_assert(m.max > m.min);
        ck_assert(m.std > 0.3 && m.std < 3);
        ck_assert(isfinite(item(ag_randn(g, dt, 0, NULL))));
        ck_assert_int_eq(ag_numel(expect_tensor(ag_randn(g, dt, 1, TU_SHAPE(1)))), 1);
    }
    ag_generator_free(g);
}
END_TEST

START_TEST(random_rejects_int_dtypes_and_bad_shapes) {
    ag_generator *g = ag_generator_new(1);
    ck_assert_ptr_nonnull(g);
    expect_null(ag_rand(NULL, AG_I64, 1, TU_SHAPE(2)), AG_ERR_DTYPE, "int64");
    expect_null(ag_randn(g, AG_I64, 1, TU_SHAPE(2)), AG_ERR_DTYPE, "int64");
    expect_null(ag_uniform(g, AG_I64, 1, TU_SHAPE(2), 0, 1), AG_ERR_DTYPE, "int64");
    ck_assert_int_eq(ag_dtype_of(ag_rand(g, AG_F16, 1, TU_SHAPE(2))), AG_F16);
    expect_null(ag_rand(g, AG_F32, 1, TU_SHAPE(-2)), AG_ERR_SHAPE, "negative extent -2");
    expect_null(ag_randn(g, AG_F64, 9, TU_SHAPE(1, 1, 1, 1, 1, 1, 1, 1, 1)), AG_ERR_SHAPE,
                "random sampling");
    expect_null(ag_uniform(g, AG_F64, 2, NULL, 0, 1), AG_ERR_SHAPE, "random sampling");
    ag_generator_free(g);
}
END_TEST

/* ---- inspection ---- */

START_TEST(sizes_count_negative_dims_from_the_end) {
    ag_tensor *t = ag_zeros(AG_F32, 3, TU_SHAPE(2, 3, 4));
    ck_assert_int_eq(ag_ndim(t), 3);
    ck_assert_int_eq(ag_numel(t), 24);
    const int64_t want[] = {2, 3, 4, -1, 2, 3, 4, -1, -1, -1};
    const int dims[] = {0, 1, 2, 3, -3, -2, -1, -4, 100, -100};
    for (int k = 0; k < 10; k++)
        ck_assert_msg(ag_size(t, dims[k]) == want[k], "size(t, %d) = %lld, expected %lld", dims[k],
                      (long long)ag_size(t, dims[k]), (long long)want[k]);
    ag_tensor *s = ag_scalar(AG_F64, 1);
    ck_assert_int_eq(ag_ndim(s), 0);
    ck_assert_int_eq(ag_size(s, 0), -1);
    ck_assert_int_eq(ag_size(s, -1), -1);
    ag_tensor *z = ag_zeros(AG_I64, 3, TU_SHAPE(2, 0, 3));
    ck_assert_int_eq(ag_numel(z), 0);
    ck_assert_int_eq(ag_size(z, -2), 0);
    /* A NULL tensor answers "nothing". */
    ck_assert_int_eq(ag_ndim(NULL), -1);
    ck_assert_int_eq(ag_numel(NULL), -1);
    ck_assert_int_eq(ag_size(NULL, 0), -1);
    ck_assert_ptr_null(ag_shape(NULL));
    ck_assert_ptr_null(ag_strides(NULL));
    ck_assert_int_eq(ag_dtype_of(NULL), AG_DTYPE_COUNT);
    ck_assert(!ag_is_contiguous(NULL));
    ck_assert(!ag_is_view(NULL));
    ck_assert_ptr_null(ag_data_ptr(NULL));
    ck_assert_int_eq(ag_device_of(NULL).backend, -1);
}
END_TEST

START_TEST(strides_contiguity_and_views) {
    ag_tensor *t = ag_reshape(ag_arange(AG_F64, 0, 24, 1), 3, TU_SHAPE(2, 3, 4));
    expect_tensor(t);
    ck_assert_int_eq(ag_strides(t)[0], 12);
    ck_assert_int_eq(ag_strides(t)[1], 4);
    ck_assert_int_eq(ag_strides(t)[2], 1);
    ck_assert(ag_is_contiguous(t));

    ag_tensor *tt = ag_transpose(t, 0, 2);
    ck_assert_int_eq(ag_size(tt, 0), 4);
    ck_assert_int_eq(ag_strides(tt)[0], 1);
    ck_assert_int_eq(ag_strides(tt)[1], 4);
    ck_assert_int_eq(ag_strides(tt)[2], 12);
    ck_assert(!ag_is_contiguous(tt));
    ck_assert(ag_is_view(tt));
    ck_assert(!ag_is_contiguous(ag_permute(t, (const int[]){1, 0, 2})));
    ck_assert(!ag_is_contiguous(ag_slice(t, 2, 0, 4, 2)));
    ck_assert(!ag_is_contiguous(ag_expand(ag_zeros(AG_F32, 2, TU_SHAPE(1, 3)), 2, TU_SHAPE(2, 3))));
    /* A row of a contiguous tensor is a contiguous view at an offset. */
    ag_tensor *row = ag_select(t, 0, 1);
    ck_assert(ag_is_view(row) && ag_is_contiguous(row));

    /* The stride of an extent-1 dim does not matter: torch.zeros(3, 1).t().is_contiguous(). */
    ag_tensor *ct = ag_transpose(ag_zeros(AG_F32, 2, TU_SHAPE(3, 1)), 0, 1);
    ck_assert_int_eq(ag_strides(ct)[0], 1);
    ck_assert_int_eq(ag_strides(ct)[1], 1);
    ck_assert(ag_is_contiguous(ct));
    ag_tensor *rt = ag_transpose(ag_zeros(AG_F64, 2, TU_SHAPE(1, 4)), 0, 1);
    ck_assert_int_eq(ag_strides(rt)[1], 4);
    ck_assert(ag_is_contiguous(rt));
    ag_tensor *u = ag_unsqueeze(ag_transpose(ag_zeros(AG_F64, 2, TU_SHAPE(2, 3)), 0, 1), 1);
    ck_assert(!ag_is_contiguous(u)); /* the extent-1 dim does not hide the transpose */

    /* Copies are not views. */
    ag_tensor *c = ag_contiguous(tt);
    ck_assert(ag_is_contiguous(c) && !ag_is_view(c));
    ck_assert(!ag_is_view(ag_clone(tt)));
    ck_assert(!ag_is_view(ag_zeros(AG_F32, 1, TU_SHAPE(3))));
}
END_TEST

START_TEST(item_reads_one_element_of_any_dtype) {
    ck_assert(item(ag_from_f32((const float[]){1.5f}, 0, NULL)) == 1.5);
    ck_assert(item(ag_from_f32((const float[]){0.1f}, 1, TU_SHAPE(1))) == (double)0.1f);
    ck_assert(item(ag_from_f64(TU_VALUES(-2.75), 2, TU_SHAPE(1, 1))) == -2.75);
    ck_assert(item(ag_from_i64((const int64_t[]){-42}, 1, TU_SHAPE(1))) == -42);
    ck_assert(item(ag_from_i64((const int64_t[]){(int64_t)1 << 53}, 0, NULL)) == 0x1p53);
    /* One element of a transposed view, at an offset: m.t()[2][1] == m[1][2]. */
    ag_tensor *m = ag_from_f64(TU_VALUES(0, 1, 2, 3, 4, 5), 2, TU_SHAPE(2, 3));
    ag_tensor *e = ag_select(ag_select(ag_transpose(m, 0, 1), 0, 2), 0, 1);
    expect_tensor(e);
    ck_assert(item(e) == 5);

    double v = 123;
    expect_error(ag_item(m, &v), AG_ERR_SHAPE,
                 "a Tensor with 6 elements cannot be converted to Scalar");
    expect_error(ag_item(ag_zeros(AG_F32, 1, TU_SHAPE(0)), &v), AG_ERR_SHAPE,
                 "a Tensor with 0 elements cannot be converted to Scalar");
    ck_assert(v == 123); /* untouched on failure */
    expect_error(ag_item(e, NULL), AG_ERR_INVALID_ARG, "NULL");
    expect_error(ag_item(NULL, &v), AG_ERR_INVALID_ARG, "NULL");
}
END_TEST

START_TEST(to_host_copies_views_in_row_major_order) {
    ag_tensor *m = ag_from_f64(TU_VALUES(1, 2, 3, 4, 5, 6), 2, TU_SHAPE(2, 3));
    double got[8];
    ck_assert_int_eq(ag_to_host(ag_transpose(m, 0, 1), got, 6 * sizeof *got), AG_OK);
    ck_assert_mem_eq(got, (TU_VALUES(1, 4, 2, 5, 3, 6)), 6 * sizeof *got);
    ck_assert_int_eq(ag_to_host(ag_slice(m, 1, 1, 3, 1), got, 4 * sizeof *got), AG_OK);
    ck_assert_mem_eq(got, (TU_VALUES(2, 3, 5, 6)), 4 * sizeof *got);
    ck_assert_int_eq(ag_to_host(ag_select(m, 0, 1), got, 3 * sizeof *got), AG_OK);
    ck_assert_mem_eq(got, (TU_VALUES(4, 5, 6)), 3 * sizeof *got);
    ag_tensor *v = ag_from_f64(TU_VALUES(7, 8, 9), 1, TU_SHAPE(3));
    ck_assert_int_eq(ag_to_host(ag_expand(v, 2, TU_SHAPE(2, 3)), got, 6 * sizeof *got), AG_OK);
    ck_assert_mem_eq(got, (TU_VALUES(7, 8, 9, 7, 8, 9)), 6 * sizeof *got);

    float fm[4] = {1, 2, 3, 4}, fgot[4];
    ag_tensor *ft = ag_transpose(ag_from_f32(fm, 2, TU_SHAPE(2, 2)), 0, 1);
    ck_assert_int_eq(ag_to_host(ft, fgot, sizeof fgot), AG_OK);
    ck_assert_mem_eq(fgot, ((const float[]){1, 3, 2, 4}), sizeof fgot);
    const int64_t im[6] = {10, 20, 30, 40, 50, 60};
    int64_t igot[6];
    ag_tensor *it = ag_transpose(ag_from_i64(im, 2, TU_SHAPE(3, 2)), 0, 1);
    ck_assert_int_eq(ag_to_host(it, igot, sizeof igot), AG_OK);
    ck_assert_mem_eq(igot, ((const int64_t[]){10, 30, 50, 20, 40, 60}), sizeof igot);

    /* x.permute(2, 0, 1)[i][j][k] == x[j][k][i] for x = arange(24).reshape(2, 3, 4). */
    ag_tensor *x = ag_reshape(ag_arange(AG_F64, 0, 24, 1), 3, TU_SHAPE(2, 3, 4));
    double perm[24];
    ck_assert_int_eq(ag_to_host(ag_permute(x, (const int[]){2, 0, 1}), perm, sizeof perm), AG_OK);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 3; k++)
                ck_assert_msg(perm[(i * 2 + j) * 3 + k] == j * 12 + k * 4 + i,
                              "permuted [%d][%d][%d] = %g", i, j, k, perm[(i * 2 + j) * 3 + k]);

    /* A larger buffer is fine and written only as far as needed. */
    for (int k = 0; k < 8; k++) got[k] = -1;
    ck_assert_int_eq(ag_to_host(m, got, sizeof got), AG_OK);
    ck_assert_mem_eq(got, (TU_VALUES(1, 2, 3, 4, 5, 6, -1, -1)), sizeof got);
    /* A smaller one is refused and left alone. */
    for (int k = 0; k < 8; k++) got[k] = -1;
    expect_error(ag_to_host(ag_transpose(m, 0, 1), got, 5 * sizeof *got), AG_ERR_INVALID_ARG,
                 "buffer of 40 bytes, tensor needs 48");
    ck_assert_mem_eq(got, (TU_VALUES(-1, -1, -1, -1, -1, -1, -1, -1)), sizeof got);
    expect_error(ag_to_host(m, NULL, sizeof got), AG_ERR_INVALID_ARG, "data is NULL");
    expect_error(ag_to_host(NULL, got, sizeof got), AG_ERR_INVALID_ARG, "tensor is NULL");
}
END_TEST

START_TEST(data_ptr_is_the_host_storage) {
    ag_tensor *x = ag_from_i64((const int64_t[]){10, 20, 30}, 1, TU_SHAPE(3));
    int64_t *p = ag_data_ptr(x);
    ck_assert_ptr_nonnull(p);
    ck_assert(p[0] == 10 && p[1] == 20 && p[2] == 30);
    p[1] = -5; /* writes through the pointer are what the tensor holds */
    expect_values(x, 1, TU_SHAPE(3), TU_VALUES(10, -5, 30), 0);
    ag_tensor *f = ag_from_f32((const float[]){0.5f, 1.5f}, 1, TU_SHAPE(2));
    const float *fp = ag_data_ptr(f);
    ck_assert_ptr_nonnull(fp);
    ck_assert(fp[0] == 0.5f && fp[1] == 1.5f);
    /* A row view points at its first element. */
    ag_tensor *m = ag_from_f64(TU_VALUES(1, 2, 3, 4), 2, TU_SHAPE(2, 2));
    const double *row = ag_data_ptr(ag_select(m, 0, 1));
    ck_assert_ptr_nonnull(row);
    ck_assert(row[0] == 3 && row[1] == 4);
}
END_TEST

/* ---- printing ---- */

/* ag prints floats with %.6g (no trailing "." on integral values, unlike PyTorch) and
 * always names the dtype. */
START_TEST(print_matches_expected_text) {
    ag_tensor *m = ag_from_f32((const float[]){1, 2, 3, 4}, 2, TU_SHAPE(2, 2));
    expect_render(m, "tensor([[1, 2],\n        [3, 4]], dtype=float32)\n");
    expect_render(ag_transpose(m, 0, 1), "tensor([[1, 3],\n        [2, 4]], dtype=float32)\n");
    expect_render(ag_from_f64(TU_VALUES(0.5, -1.25, 3, 1.0 / 3), 1, TU_SHAPE(4)),
                  "tensor([0.5, -1.25, 3, 0.333333], dtype=float64)\n");
    expect_render(ag_scalar(AG_I64, 7), "tensor(7, dtype=int64)\n");
    expect_render(ag_reshape(ag_arange(AG_I64, 0, 8, 1), 3, TU_SHAPE(2, 2, 2)),
                  "tensor([[[0, 1],\n         [2, 3]],\n        [[4, 5],\n         [6, 7]]], "
                  "dtype=int64)\n");
    expect_render(ag_zeros(AG_F32, 1, TU_SHAPE(0)), "tensor([], dtype=float32)\n");
    expect_render(ag_from_f64(TU_VALUES(INFINITY, -INFINITY, NAN, 1e10, 1e-5), 1, TU_SHAPE(5)),
                  "tensor([inf, -inf, nan, 1e+10, 1e-05], dtype=float64)\n");
    expect_render(ag_from_i64((const int64_t[]){INT64_MIN, INT64_MAX}, 1, TU_SHAPE(2)),
                  "tensor([-9223372036854775808, 9223372036854775807], dtype=int64)\n");
    ck_assert_int_eq(ag_print(ag_scalar(AG_F32, 1)), AG_OK);
}
END_TEST

START_TEST(print_shows_grad_fn_and_requires_grad) {
    ag_tensor *x = ag_from_f64(TU_VALUES(1, 2), 1, TU_SHAPE(2));
    expect_render(x, "tensor([1, 2], dtype=float64)\n");
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    expect_render(x, "tensor([1, 2], dtype=float64, requires_grad=true)\n");
    ag_tensor *y = ag_mul_scalar(x, 2);
    expect_render(y, "tensor([2, 4], dtype=float64, grad_fn=<mul>)\n");
    expect_render(ag_sum(y, 0, NULL, false), "tensor(6, dtype=float64, grad_fn=<sum>)\n");
    expect_render(ag_detach(y), "tensor([2, 4], dtype=float64)\n");
    bool prev = ag_set_grad_enabled(false);
    ag_tensor *n = ag_mul_scalar(x, 3);
    ag_set_grad_enabled(prev);
    expect_render(n, "tensor([3, 6], dtype=float64)\n");

    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    ag_status on_null = ag_fprint(f, NULL);
    fclose(f);
    expect_error(on_null, AG_ERR_INVALID_ARG, "NULL");
    expect_error(ag_fprint(NULL, x), AG_ERR_INVALID_ARG, "NULL");
}
END_TEST

START_TEST(shape_str_formats_and_truncates) {
    char buf[64];
    ag_shape_str(ag_zeros(AG_F32, 2, TU_SHAPE(2, 3)), buf, sizeof buf);
    ck_assert_str_eq(buf, "[2, 3]");
    ag_shape_str(ag_scalar(AG_F32, 1), buf, sizeof buf);
    ck_assert_str_eq(buf, "[]");
    ag_shape_str(ag_zeros(AG_I64, 1, TU_SHAPE(0)), buf, sizeof buf);
    ck_assert_str_eq(buf, "[0]");
    ag_shape_str(ag_zeros(AG_F32, 8, TU_SHAPE(1, 2, 1, 2, 1, 2, 1, 2)), buf, sizeof buf);
    ck_assert_str_eq(buf, "[1, 2, 1, 2, 1, 2, 1, 2]");
    ag_shape_str(NULL, buf, sizeof buf);
    ck_assert_str_eq(buf, "(null)");
    memset(buf, 'x', sizeof buf);
    ag_shape_str(ag_zeros(AG_F32, 2, TU_SHAPE(2, 3)), buf, 4);
    ck_assert_str_eq(buf, "[2,");
    ck_assert_int_eq(buf[4], 'x');
}
END_TEST

/* ---- devices ---- */

START_TEST(default_device_and_parsing) {
    ag_device def = ag_default_device();
    ck_assert_int_ge(def.backend, 0);
    ck_assert_int_eq(def.index, 0);
    ck_assert_str_eq(ag_backend_name(def.backend), "cpu");
    char buf[64];
    ag_device_str(def, buf, sizeof buf);
    ck_assert_str_eq(buf, "cpu:0");

    ag_device d = {-5, -5};
    ck_assert_int_eq(ag_device_parse("cpu", &d), AG_OK);
    ck_assert(same_device(d, def));
    d = (ag_device){-5, -5};
    ck_assert_int_eq(ag_device_parse("cpu:0", &d), AG_OK);
    ck_assert(same_device(d, def));
    d = (ag_device){-5, -5};
    expect_error(ag_device_parse("cpu:7", &d), AG_ERR_DEVICE, "no device cpu:7");
    ck_assert(d.backend == -5 && d.index == -5); /* untouched on failure */
    expect_error(ag_device_parse("nope", &d), AG_ERR_BACKEND_LOAD, "'nope'");
    const char *bad[] = {"", "cpu:", ":0", "cpu:-1", "cpu:0x", "cpu:1:2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_error(ag_device_parse(bad[i], &d), AG_ERR_INVALID_ARG, "invalid device");
    expect_error(ag_device_parse("CPU", &d), AG_ERR_INVALID_ARG, "invalid backend name");
    expect_error(ag_device_parse(NULL, &d), AG_ERR_INVALID_ARG, "NULL");
    expect_error(ag_device_parse("cpu", NULL), AG_ERR_INVALID_ARG, "NULL");
    ck_assert(d.backend == -5 && d.index == -5);

    ag_device_str((ag_device){99, 3}, buf, sizeof buf);
    ck_assert_str_eq(buf, "<no backend 99>:3");
    memset(buf, 'x', sizeof buf);
    ag_device_str(def, buf, 3);
    ck_assert_str_eq(buf, "cp");
    ck_assert_int_eq(buf[3], 'x');
}
END_TEST

START_TEST(default_device_override_and_removal) {
    ag_device def = ag_default_device();
    ag_set_default_device((ag_device){def.backend, 3});
    ck_assert_int_eq(ag_default_device().backend, def.backend);
    ck_assert_int_eq(ag_default_device().index, 3);
    /* New tensors go to the override, which does not exist here. */
    ck_assert_ptr_null(ag_zeros(AG_F32, 1, TU_SHAPE(2)));
    ck_assert_msg(strstr(ag_last_error(), "device 3") || strstr(ag_last_error(), "cpu:3"), "%s",
                  ag_last_error());
    ag_clear_error();
    ag_set_default_device((ag_device){-1, 0}); /* a negative backend removes the override */
    ck_assert(same_device(ag_default_device(), def));
    ag_tensor *t = ag_zeros(AG_F32, 1, TU_SHAPE(2));
    expect_values(t, 1, TU_SHAPE(2), TU_VALUES(0, 0), 0);
    ck_assert(same_device(ag_device_of(t), def));
    /* Overriding with the process default works like no override. */
    ag_set_default_device(def);
    ck_assert(same_device(ag_device_of(expect_tensor(ag_ones(AG_F64, 0, NULL))), def));
    ag_set_default_device((ag_device){-7, 9});
    ck_assert(same_device(ag_default_device(), def));
}
END_TEST

START_TEST(to_same_device_shares_data_and_stays_differentiable) {
    ag_device def = ag_default_device(), parsed;
    ck_assert_int_eq(ag_device_parse("cpu:0", &parsed), AG_OK);
    ag_tensor *x = ag_from_f64(TU_VALUES(1, 2, 3), 1, TU_SHAPE(3));
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ag_tensor *y = ag_to_device(x, def);
    expect_tensor(y);
    ck_assert_ptr_eq(ag_data_ptr(y), ag_data_ptr(x)); /* no copy */
    ck_assert(ag_requires_grad(y));
    ck_assert(same_device(ag_device_of(y), def));
    ag_tensor *y2 = ag_to_device(x, parsed);
    ck_assert_ptr_eq(ag_data_ptr(y2), ag_data_ptr(x));
    ag_tensor *loss = ag_sum(ag_mul(y, y2), 0, NULL, false);
    ck_assert_int_eq(ag_backward(loss, NULL), AG_OK);
    expect_values(ag_tensor_grad(x), 1, TU_SHAPE(3), TU_VALUES(2, 4, 6), 0);

    expect_null(ag_to_device(x, (ag_device){def.backend, 7}), AG_ERR_DEVICE, "no device cpu:7");
    expect_null(ag_to_device(x, (ag_device){-1, 0}), AG_ERR_DEVICE, "no device");
    expect_null(ag_to_device(x, (ag_device){42, 0}), AG_ERR_DEVICE, "no device");
    expect_null(ag_to_device(NULL, def), AG_ERR_INVALID_ARG, "NULL");
}
END_TEST

START_TEST(synchronize_checks_the_device) {
    ck_assert_int_eq(ag_synchronize(ag_default_device()), AG_OK);
    ck_assert_int_eq(ag_last_status(), AG_OK);
    expect_error(ag_synchronize((ag_device){ag_default_device().backend, 1}), AG_ERR_DEVICE,
                 "no device cpu:1");
    expect_error(ag_synchronize((ag_device){-1, 0}), AG_ERR_DEVICE, "no device");
}
END_TEST

/* ---- names ---- */

START_TEST(dtype_names_and_sizes) {
    static const struct {
        ag_dtype dtype;
        const char *name;
        size_t size;
    } rows[] = {{AG_F32, "float32", 4},      {AG_F64, "float64", 8},
                {AG_I64, "int64", 8},        {AG_F16, "float16", 2},
                {AG_BF16, "bfloat16", 2},    {AG_DTYPE_COUNT, "invalid", 0},
                {(ag_dtype)-1, "invalid", 0}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        ck_assert_str_eq(ag_dtype_name(rows[i].dtype), rows[i].name);
        ck_assert_int_eq(ag_dtype_size(rows[i].dtype), rows[i].size);
    }
}
END_TEST

START_TEST(status_names_and_version) {
    static const char *const names[] = {
        "AG_OK",         "AG_ERR_INVALID_ARG",   "AG_ERR_SHAPE",         "AG_ERR_DTYPE",
        "AG_ERR_DEVICE", "AG_ERR_UNSUPPORTED",   "AG_ERR_OUT_OF_MEMORY", "AG_ERR_BACKEND_LOAD",
        "AG_ERR_ABI",    "AG_ERR_GRAPH_FREED",   "AG_ERR_INPLACE",       "AG_ERR_NO_GRAD",
        "AG_ERR_INDEX",  "AG_ERR_UNIMPLEMENTED", "AG_ERR_INTERNAL",      "AG_ERR_GRADCHECK",
        "AG_ERR_IO",     "AG_ERR_ANOMALY"};
    _Static_assert(sizeof names / sizeof names[0] == AG_ERR_ANOMALY + 1, "one name per status");
    for (int s = AG_OK; s <= AG_ERR_ANOMALY; s++)
        ck_assert_str_eq(ag_status_name((ag_status)s), names[s]);
    ck_assert_str_eq(ag_status_name((ag_status)(AG_ERR_ANOMALY + 1)), "AG_ERR_UNKNOWN");
    ck_assert_str_eq(ag_status_name((ag_status)-1), "AG_ERR_UNKNOWN");
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", AG_VERSION_MAJOR, AG_VERSION_MINOR, AG_VERSION_PATCH);
    ck_assert_str_eq(ag_version(), want);
}
END_TEST

/* ---- references and scopes (no fixture scope: these start outside any scope) ---- */

START_TEST(retain_release_keep_outside_scopes) {
    ag_tensor *x = ag_from_f64(TU_VALUES(1, 2, 3), 1, TU_SHAPE(3)); /* the caller's reference */
    expect_tensor(x);
    ck_assert_ptr_eq(ag_retain(x), x);
    ag_release(x); /* one reference left: x is still alive */
    expect_values(x, 1, TU_SHAPE(3), TU_VALUES(1, 2, 3), 0);
    ck_assert_ptr_eq(ag_keep(x), x);
    ag_release(x);
    expect_values(x, 1, TU_SHAPE(3), TU_VALUES(1, 2, 3), 0);
    ag_release(x); /* freed now; LeakSanitizer checks nothing is left */

    ck_assert_ptr_null(ag_retain(NULL));
    ck_assert_ptr_null(ag_keep(NULL));
    ag_release(NULL);

    /* A view keeps the storage alive after its base is released. */
    ag_tensor *m = ag_from_f64(TU_VALUES(1, 2, 3, 4), 2, TU_SHAPE(2, 2));
    ag_tensor *v = ag_transpose(m, 0, 1);
    ag_release(m);
    expect_values(v, 2, TU_SHAPE(2, 2), TU_VALUES(1, 3, 2, 4), 0);
    ag_release(v);

    /* The graph is held by its outputs: backward works after intermediates are released. */
    ag_tensor *w = ag_from_f64(TU_VALUES(0.5, -1), 1, TU_SHAPE(2));
    ck_assert_int_eq(ag_set_requires_grad(w, true), AG_OK);
    ag_tensor *y = ag_mul_scalar(w, 3);
    ag_tensor *s = ag_sum(y, 0, NULL, false);
    ag_release(y);
    ck_assert_int_eq(ag_backward(s, NULL), AG_OK);
    expect_values(ag_tensor_grad(w), 1, TU_SHAPE(2), TU_VALUES(3, 3), 0);
    ag_release(s);
    ag_release(w);
    ck_assert_int_eq(ag_last_status(), AG_OK);
}
END_TEST

START_TEST(kept_tensor_outlives_its_scope) {
    ag_scope *s = ag_scope_begin();
    ag_tensor *a = ag_keep(ag_from_f64(TU_VALUES(1, 2), 1, TU_SHAPE(2)));
    ck_assert_int_eq(ag_set_requires_grad(a, true), AG_OK);
    ag_tensor *kept = ag_keep(ag_mul_scalar(ag_add_scalar(a, 0), 2));
    ag_scope_end(s);
    /* kept and its history (the add/mul nodes and a) survive the scope. */
    expect_values(kept, 1, TU_SHAPE(2), TU_VALUES(2, 4), 0);
    ck_assert_str_eq(ag_grad_fn_name(kept), "mul");
    ag_tensor *ones = ag_ones(AG_F64, 1, TU_SHAPE(2));
    ck_assert_int_eq(ag_backward(kept, ones), AG_OK);
    expect_values(ag_tensor_grad(a), 1, TU_SHAPE(2), TU_VALUES(2, 2), 0);
    ag_release(ones);
    /* ag_scope_return with no enclosing scope hands the result to the caller. */
    ag_scope *inner = ag_scope_begin();
    ag_tensor *r = ag_scope_return(inner, ag_add_scalar(ag_detach(kept), 1));
    expect_values(r, 1, TU_SHAPE(2), TU_VALUES(3, 5), 0);
    ag_release(r);
    ag_release(kept);
    ag_release(a);
    ck_assert_int_eq(ag_last_status(), AG_OK);
}
END_TEST

START_TEST(scope_end_errors_and_out_of_order_nesting) {
    ag_scope *s = ag_scope_begin();
    ck_assert_ptr_nonnull(s);
    ag_scope_end(s);
    ck_assert_int_eq(ag_last_status(), AG_OK);
    ag_scope_end(s);
    expect_error(ag_last_status(), AG_ERR_INVALID_ARG, "scope is not open on this thread");

    ag_scope *outer = ag_scope_begin();
    ag_tensor *t_outer = ag_keep(ag_ones(AG_F32, 1, TU_SHAPE(2)));
    ag_scope *inner = ag_scope_begin();
    ag_tensor *t_inner = ag_keep(ag_full(AG_F32, 1, TU_SHAPE(2), 5));
    ag_scope *innermost = ag_scope_begin();
    ag_tensor *t_innermost = ag_keep(ag_add(t_inner, t_outer));
    ag_scope_end(outer); /* closes innermost and inner too */
    ck_assert_int_eq(ag_last_status(), AG_OK);
    ag_scope_end(inner);
    expect_error(ag_last_status(), AG_ERR_INVALID_ARG, "not open");
    ag_scope_end(innermost);
    expect_error(ag_last_status(), AG_ERR_INVALID_ARG, "not open");
    ag_scope_end(outer);
    expect_error(ag_last_status(), AG_ERR_INVALID_ARG, "not open");
    /* Each scope released its own reference; ours keep the tensors. */
    expect_values(t_innermost, 1, TU_SHAPE(2), TU_VALUES(6, 6), 0);
    expect_values(t_inner, 1, TU_SHAPE(2), TU_VALUES(5, 5), 0);
    ag_release(t_innermost);
    ag_release(t_inner);
    ag_release(t_outer);

    /* Ending the inner one first leaves the outer one open. */
    outer = ag_scope_begin();
    inner = ag_scope_begin();
    ag_scope_end(inner);
    ag_scope_end(outer);
    ck_assert_int_eq(ag_last_status(), AG_OK);
}
END_TEST

static void *end_scope_on_other_thread(void *s) {
    ag_scope_end(s);
    return (void *)(intptr_t)ag_last_status();
}

START_TEST(scopes_belong_to_their_thread) {
    ag_scope *s = ag_scope_begin();
    ag_tensor *t = ag_keep(ag_ones(AG_F64, 1, TU_SHAPE(2)));
    pthread_t thread;
    void *status = NULL;
    ck_assert_int_eq(pthread_create(&thread, NULL, end_scope_on_other_thread, s), 0);
    ck_assert_int_eq(pthread_join(thread, &status), 0);
    ck_assert_int_eq((intptr_t)status, AG_ERR_INVALID_ARG);
    ck_assert_int_eq(ag_last_status(), AG_OK); /* the other thread's error stays there */
    ag_scope_end(s);
    ck_assert_int_eq(ag_last_status(), AG_OK);
    expect_values(t, 1, TU_SHAPE(2), TU_VALUES(1, 1), 0);
    ag_release(t);
}
END_TEST

/* ---- errors ---- */

static void *status_on_other_thread(void *unused) {
    (void)unused;
    ag_status before = ag_last_status();
    ag_arange(AG_F64, 0, 1, 0);
    return (void *)(intptr_t)(before == AG_OK && ag_last_status() == AG_ERR_INVALID_ARG);
}

START_TEST(last_error_is_sticky_replaced_and_cleared) {
    ck_assert_int_eq(ag_last_status(), AG_OK);
    ck_assert_ptr_nonnull(ag_last_error());
    ck_assert_str_eq(ag_last_error(), "");

    ck_assert_ptr_null(ag_arange(AG_F64, 0, 1, 0));
    ck_assert_int_eq(ag_last_status(), AG_ERR_INVALID_ARG);
    char first[256];
    snprintf(first, sizeof first, "%s", ag_last_error());
    ck_assert_msg(strstr(first, "arange: invalid range start=0 end=1 step=0"), "%s", first);

    /* A call that succeeds leaves the last error in place. */
    expect_tensor(ag_zeros(AG_F32, 1, TU_SHAPE(2)));
    ck_assert_int_eq(ag_last_status(), AG_ERR_INVALID_ARG);
    ck_assert_str_eq(ag_last_error(), first);

    /* A new failure replaces it. */
    ck_assert_ptr_null(ag_from_data(AG_DTYPE_COUNT, 1, TU_SHAPE(2), TU_VALUES(1, 2)));
    ck_assert_int_eq(ag_last_status(), AG_ERR_DTYPE);
    char second[256];
    snprintf(second, sizeof second, "%s", ag_last_error());
    ck_assert_msg(strstr(second, "invalid"), "%s", second);

    /* Calls given the NULL of a failed chain keep the first error. */
    double v = 0, buf[2];
    ck_assert_ptr_null(ag_exp(NULL));
    ck_assert_int_eq(ag_item(NULL, &v), AG_ERR_DTYPE);
    ck_assert_int_eq(ag_to_host(NULL, buf, sizeof buf), AG_ERR_DTYPE);
    ck_assert_int_eq(ag_last_status(), AG_ERR_DTYPE);
    ck_assert_str_eq(ag_last_error(), second);

    /* Errors are per thread. */
    pthread_t thread;
    void *ok = NULL;
    ck_assert_int_eq(pthread_create(&thread, NULL, status_on_other_thread, NULL), 0);
    ck_assert_int_eq(pthread_join(thread, &ok), 0);
    ck_assert_msg(ok != NULL, "the other thread saw this thread's error or none of its own");
    ck_assert_int_eq(ag_last_status(), AG_ERR_DTYPE);

    ag_clear_error();
    ck_assert_int_eq(ag_last_status(), AG_OK);
    ck_assert_str_eq(ag_last_error(), "");
    /* Without an earlier error, the NULL itself is the error. */
    expect_error(ag_item(NULL, &v), AG_ERR_INVALID_ARG, "NULL");

    /* A very long message is cut, not overflowed. */
    char spec[6000];
    memset(spec, 'a', sizeof spec - 1);
    spec[sizeof spec - 1] = '\0';
    ag_device d;
    ck_assert_int_eq(ag_device_parse(spec, &d), AG_ERR_INVALID_ARG);
    size_t len = strlen(ag_last_error());
    ck_assert_msg(len > 1000 && len < sizeof spec - 1, "message of %zu chars", len);
    ck_assert_msg(strncmp(ag_last_error(), "invalid device 'aaa", 19) == 0, "%.40s",
                  ag_last_error());
    ag_clear_error();
}
END_TEST

/* Regressions of bugs found by this file: each check failed before its fix. */
START_TEST(randn_last_of_odd_count_is_symmetric) {
    ag_generator *g = ag_generator_new(5);
    int positive = 0;
    for (int i = 0; i < 400; i++) {
        double v = 0;
        ck_assert_int_eq(ag_item(ag_randn(g, AG_F64, 0, NULL), &v), AG_OK);
        positive += v > 0;
    }
    ag_generator_free(g);
    ck_assert_msg(positive > 150 && positive < 250, "%d of 400 positive", positive);
}
END_TEST

START_TEST(float32_rand_never_reaches_the_upper_bound) {
    ag_generator *g = ag_generator_new(66);
    ag_tensor *t = ag_rand(g, AG_F32, 1, (int64_t[]){48093});
    ag_generator_free(g);
    float *v = ag_data_ptr(expect_tensor(t));
    for (int64_t i = 0; i < 48093; i++)
        ck_assert_msg(v[i] < 1.0f, "element %lld is 1", (long long)i);
}
END_TEST

START_TEST(oversized_shapes_are_errors) {
    expect_null(ag_empty(AG_F64, 1, (int64_t[]){INT64_C(1) << 61}), AG_ERR_SHAPE,
                "too many elements");
    expect_null(ag_zeros(AG_F32, 2, (int64_t[]){INT64_C(1) << 32, INT64_C(1) << 32}), AG_ERR_SHAPE,
                "too many elements");
    expect_null(ag_arange(AG_F64, 0, 1e30, 1), AG_ERR_SHAPE, "too many elements");
    expect_null(ag_expand(ag_ones(AG_F32, 2, (int64_t[]){1, 1}), 2,
                          (int64_t[]){INT64_C(1) << 40, INT64_C(1) << 40}),
                AG_ERR_SHAPE, "too many elements");
}
END_TEST

START_TEST(allocation_on_a_missing_device_says_so) {
    ag_device cpu;
    ck_assert_int_eq(ag_device_parse("cpu", &cpu), AG_OK);
    ag_set_default_device((ag_device){cpu.backend, 3});
    ag_tensor *t = ag_zeros(AG_F32, 1, (int64_t[]){2});
    ag_set_default_device((ag_device){-1, -1});
    expect_null(t, AG_ERR_DEVICE, "device 3");
}
END_TEST

START_TEST(negative_nan_prints_as_nan) {
    double minus_nan = -NAN;
    expect_render(ag_from_f64(&minus_nan, 1, (int64_t[]){1}), "tensor([nan], dtype=float64)\n");
}
END_TEST

static Suite *tensor_suite(void) {
    Suite *s = suite_create("tensor");
    struct {
        const char *name;
        bool scoped;
        const TTest *tests[12];
    } cases[] = {
        {"creation",
         true,
         {empty_has_geometry_and_no_history, zeros_ones_full_in_every_dtype,
          like_takes_shape_dtype_device_but_not_history, scalar_is_zero_dim,
          arange_values_steps_and_errors, from_data_copies_exact_values}},
        {"random",
         true,
         {generator_seed_determines_samples, manual_seed_restarts_default_generator,
          rand_and_uniform_stay_in_range, randn_has_standard_moments, randn_odd_counts,
          random_rejects_int_dtypes_and_bad_shapes}},
        {"inspection",
         true,
         {sizes_count_negative_dims_from_the_end, strides_contiguity_and_views,
          item_reads_one_element_of_any_dtype, to_host_copies_views_in_row_major_order,
          data_ptr_is_the_host_storage}},
        {"printing",
         true,
         {print_matches_expected_text, print_shows_grad_fn_and_requires_grad,
          shape_str_formats_and_truncates}},
        {"devices",
         true,
         {default_device_and_parsing, default_device_override_and_removal,
          to_same_device_shares_data_and_stays_differentiable, synchronize_checks_the_device}},
        {"names", true, {dtype_names_and_sizes, status_names_and_version}},
        {"errors", true, {last_error_is_sticky_replaced_and_cleared}},
        {"regressions",
         true,
         {randn_last_of_odd_count_is_symmetric, float32_rand_never_reaches_the_upper_bound,
          oversized_shapes_are_errors, allocation_on_a_missing_device_says_so,
          negative_nan_prints_as_nan}},
        {"ownership",
         false,
         {retain_release_keep_outside_scopes, kept_tensor_outlives_its_scope,
          scope_end_errors_and_out_of_order_nesting, scopes_belong_to_their_thread}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        TCase *tc = tcase_create(cases[c].name);
        if (cases[c].scoped)
            tcase_add_checked_fixture(tc, setup, teardown);
        else
            tcase_add_checked_fixture(tc, setup_unscoped, NULL);
        tcase_set_timeout(tc, 120);
        for (int t = 0; t < 12 && cases[c].tests[t]; t++) tcase_add_test(tc, cases[c].tests[t]);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void) {
    return tu_run_suite(tensor_suite());
}
