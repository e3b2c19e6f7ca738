/* Small helpers shared by the unit tests: tensors from literal arrays, reading any tensor
 * back as doubles, and comparing against expected values with a readable message.
 *
 * Everything is static inline so each test binary takes only what it uses. The helpers
 * report through return values and a message buffer instead of Check's macros, so they
 * also serve tests and examples that do not link Check. */
#ifndef AG_TEST_UTIL_H
#define AG_TEST_UTIL_H

#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include "ag/ag.h"
#include "ag/half.h"
#include "ag/nn.h"

/* A macro's value as a string literal: AG_TEST_STR(AG_BACKEND_ABI_MINOR) is "1". */
#define AG_TEST_STR(x)  AG_TEST_STR_(x)
#define AG_TEST_STR_(x) #x

/* A shape literal: TU_SHAPE(2, 3). A 0-dim tensor takes ndim 0 and a NULL shape. */
#define TU_SHAPE(...) ((const int64_t[]){__VA_ARGS__})
/* A values literal: TU_VALUES(1, 2.5, -3). */
#define TU_VALUES(...) ((const double[]){__VA_ARGS__})

/* Number of elements of a shape. */
static inline int64_t tu_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    return n;
}

/* Appends printf-style text to msg (size bytes); never overflows, always terminated. */
static inline void tu_appendf(char *msg, size_t size, const char *fmt, ...) {
    if (!msg || !size) return;
    size_t used = strnlen(msg, size);
    if (used + 1 >= size) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + used, size - used, fmt, ap);
    va_end(ap);
}

/* A tensor of `dtype` holding `values` (row-major doubles, converted; int64 truncates).
 * Works for every dtype with storage, so one literal serves float and integer tests.
 * Returns a new reference (owned by the current scope if one is open), NULL on error. */
static inline ag_tensor *tu_tensor(ag_dtype dtype, int ndim, const int64_t *shape,
                                   const double *values) {
    int64_t n = tu_numel(ndim, shape);
    size_t esize = ag_dtype_size(dtype);
    if (esize == 0) return ag_from_data(dtype, ndim, shape, values); /* let ag report it */
    void *buf = malloc((size_t)(n ? n : 1) * esize);
    if (!buf) return NULL;
    for (int64_t i = 0; i < n; i++) {
        if (dtype == AG_F32)
            ((float *)buf)[i] = (float)values[i];
        else if (dtype == AG_F64)
            ((double *)buf)[i] = values[i];
        else
            ((int64_t *)buf)[i] = (int64_t)values[i];
    }
    ag_tensor *t = ag_from_data(dtype, ndim, shape, buf);
    free(buf);
    return t;
}

/* A float64 tensor of scale * sin(a*i + b) over its row-major elements: deterministic,
 * awkward values that the reference scripts in tests/reference/ rebuild the same way. */
static inline ag_tensor *tu_pattern(int ndim, const int64_t *shape, double a, double b,
                                    double scale) {
    const int64_t n = tu_numel(ndim, shape);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    ck_assert_ptr_nonnull(v);
    for (int64_t i = 0; i < n; i++) v[i] = scale * sin(a * (double)i + b);
    ag_tensor *t = ag_from_f64(v, ndim, shape);
    free(v);
    ck_assert_ptr_nonnull(t);
    return t;
}

/* Copies t's elements (row-major, any strides) into out[0..n) as doubles. n must be at
 * least ag_numel(t). */
static inline ag_status tu_read(const ag_tensor *t, double *out, int64_t n) {
    if (!t || !out) return ag_last_status() != AG_OK ? ag_last_status() : AG_ERR_INVALID_ARG;
    int64_t numel = ag_numel(t);
    if (n < numel) return AG_ERR_INVALID_ARG;
    ag_dtype dt = ag_dtype_of(t);
    size_t esize = ag_dtype_size(dt);
    void *buf = malloc((size_t)(numel ? numel : 1) * (esize ? esize : 1));
    if (!buf) return AG_ERR_OUT_OF_MEMORY;
    ag_status st = ag_to_host(t, buf, (size_t)numel * esize);
    for (int64_t i = 0; st == AG_OK && i < numel; i++)
        out[i] = dt == AG_F32    ? (double)((const float *)buf)[i]
                 : dt == AG_F64  ? ((const double *)buf)[i]
                 : dt == AG_F16  ? (double)ag_f16_to_f32(((const uint16_t *)buf)[i])
                 : dt == AG_BF16 ? (double)ag_bf16_to_f32(((const uint16_t *)buf)[i])
                                 : (double)((const int64_t *)buf)[i];
    free(buf);
    return st;
}

/* True if got and want are within atol + rtol*|want| (NaN matches NaN, infinities must be
 * equal), as torch.allclose. */
static inline bool tu_close(double got, double want, double atol, double rtol) {
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    return fabs(got - want) <= atol + rtol * fabs(want);
}

/* True if t has the given shape. On mismatch writes both shapes into msg. */
static inline bool tu_shape_is(const ag_tensor *t, int ndim, const int64_t *shape, char *msg,
                               size_t size) {
    if (!t) {
        tu_appendf(msg, size, "tensor is NULL (%s)", ag_last_error());
        return false;
    }
    bool same = ag_ndim(t) == ndim;
    for (int d = 0; same && d < ndim; d++) same = ag_shape(t)[d] == shape[d];
    if (!same) {
        char got[128];
        ag_shape_str(t, got, sizeof got);
        tu_appendf(msg, size, "shape %s, expected [", got);
        for (int d = 0; d < ndim; d++)
            tu_appendf(msg, size, "%s%lld", d ? ", " : "", (long long)shape[d]);
        tu_appendf(msg, size, "]");
    }
    return same;
}

/* True if t has the given shape and its values match `want` elementwise (tu_close). On
 * failure msg names the first bad element; *max_err (if given) receives the largest
 * absolute difference seen. */
static inline bool tu_values_are(const ag_tensor *t, int ndim, const int64_t *shape,
                                 const double *want, double atol, double rtol, char *msg,
                                 size_t size, double *max_err) {
    if (max_err) *max_err = 0;
    if (!tu_shape_is(t, ndim, shape, msg, size)) return false;
    int64_t n = tu_numel(ndim, shape);
    /* calloc: gcc -O3 cannot see that tu_read fills it and warns about the reads. */
    double *got = calloc((size_t)(n ? n : 1), sizeof *got);
    if (!got) return false;
    ag_status st = tu_read(t, got, n);
    bool ok = st == AG_OK;
    if (!ok) tu_appendf(msg, size, "reading values failed: %s", ag_last_error());
    for (int64_t i = 0; ok && i < n; i++) {
        double err = fabs(got[i] - want[i]);
        if (max_err && err > *max_err) *max_err = err;
        if (tu_close(got[i], want[i], atol, rtol)) continue;
        tu_appendf(msg, size, "element %lld is %.17g, expected %.17g (atol %g, rtol %g)",
                   (long long)i, got[i], want[i], atol, rtol);
        ok = false;
    }
    free(got);
    return ok;
}

/* Largest |a - b| over the elements of two tensors of one shape; -1 if the shapes differ
 * or reading fails (so a caller's "< tol" check fails too). */
static inline double tu_max_abs_diff(const ag_tensor *a, const ag_tensor *b) {
    if (!a || !b || ag_numel(a) != ag_numel(b) || ag_ndim(a) != ag_ndim(b)) return -1;
    for (int d = 0; d < ag_ndim(a); d++)
        if (ag_shape(a)[d] != ag_shape(b)[d]) return -1;
    int64_t n = ag_numel(a);
    double *va = malloc((size_t)(n ? n : 1) * sizeof *va);
    double *vb = malloc((size_t)(n ? n : 1) * sizeof *vb);
    double worst = va && vb ? 0 : -1;
    if (worst == 0 && (tu_read(a, va, n) != AG_OK || tu_read(b, vb, n) != AG_OK)) worst = -1;
    for (int64_t i = 0; worst >= 0 && i < n; i++) {
        if (isnan(va[i]) && isnan(vb[i])) continue;
        double d = fabs(va[i] - vb[i]);
        if (isnan(d)) d = INFINITY; /* a NaN on one side only is the worst difference */
        if (d > worst) worst = d;
    }
    free(va);
    free(vb);
    return worst;
}

/* Runs a shell command with stdout and stderr into out (size bytes, terminated); returns
 * its exit status, or -1 if it did not exit normally. */
static inline int tu_run_command(const char *cmd, char *out, size_t size) {
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, size - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The whole content of the file at path, malloc'd with a NUL after it, and its size in *len
 * (len may be NULL); NULL if unreadable. */
static inline unsigned char *tu_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    size_t got = s ? fread(s, 1, (size_t)n, f) : 0;
    fclose(f);
    if (s) s[got] = '\0';
    if (len) *len = got;
    return s;
}

/* Writes len bytes to path (replacing it); the test fails if that does not work. */
static inline void tu_write_file(const char *path, const void *bytes, size_t len) {
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    ck_assert_uint_eq(fwrite(bytes, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

/* The whole text of the file at path, NUL-terminated and malloc'd; NULL if unreadable. */
static inline char *tu_read_text(const char *path) {
    return (char *)tu_read_file(path, NULL);
}

/* Asserts that a call returned `want`, that the error state says the same, and that the
 * message holds every word of the '|'-separated `words`; then forgets the error. */
#define tu_expect_error(got, want, words) tu_expect_error_at(__LINE__, (got), (want), (words))
static inline void tu_expect_error_at(int line, ag_status got, ag_status want, const char *words) {
    ck_assert_msg(got == want, "line %d: status %s, expected %s (%s)", line, ag_status_name(got),
                  ag_status_name(want), ag_last_error());
    ck_assert_msg(ag_last_status() == want, "line %d: last status %s, expected %s", line,
                  ag_status_name(ag_last_status()), ag_status_name(want));
    char copy[256];
    snprintf(copy, sizeof copy, "%s", words);
    for (char *save = NULL, *w = strtok_r(copy, "|", &save); w; w = strtok_r(NULL, "|", &save))
        ck_assert_msg(strstr(ag_last_error(), w), "line %d: message '%s' lacks '%s'", line,
                      ag_last_error(), w);
    ag_clear_error();
}

/* Path `name` in a test's temporary directory dir (a buffer of dir_size bytes, "" until
 * the first call, which creates /tmp/ag_test_<tag>_XXXXXX in it), written into buf. */
static inline const char *tu_tmp_path(char *dir, size_t dir_size, const char *tag, const char *name,
                                      char *buf, size_t size) {
    if (!dir[0]) {
        snprintf(dir, dir_size, "/tmp/ag_test_%s_XXXXXX", tag);
        ck_assert_ptr_nonnull(mkdtemp(dir));
    }
    snprintf(buf, size, "%s/%s", dir, name);
    return buf;
}

/* Removes a directory from tu_tmp_path (if one was made) and everything in it. */
static inline void tu_remove_tmpdir(const char *dir) {
    if (!dir[0]) return;
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

/* A small classifier for checkpoint tests: Linear(4, hidden), GELU, LayerNorm(hidden),
 * Linear(hidden, 3) ("0.*", "2.*", "3.*"), weights drawn from a generator seeded with seed;
 * NULL with the error set on failure. */
static inline ag_module *tu_classifier(int64_t hidden, uint64_t seed) {
    ag_generator *gen = ag_generator_new(seed);
    ag_module *layers[4];
    layers[0] = ag_linear_new(4, hidden, true, gen);
    layers[1] = ag_gelu_new(false);
    layers[2] = ag_layer_norm_new(hidden, 1e-5, true);
    layers[3] = ag_linear_new(hidden, 3, true, gen);
    ag_generator_free(gen);
    return ag_sequential_new(4, layers);
}

/* The usual Check fixture: each test starts with no pending error, inside a scope of its
 * own that the teardown ends (so LeakSanitizer sees every temporary freed). */
static ag_scope *tu_fixture_scope;
static inline void tu_scope_setup(void) {
    ag_clear_error();
    tu_fixture_scope = ag_scope_begin();
}
static inline void tu_scope_teardown(void) {
    ag_scope_end(tu_fixture_scope);
}

/* Runs every test of suite s and returns the process exit status (failure if any failed). */
static inline int tu_run_suite(Suite *s) {
    SRunner *runner = srunner_create(s);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
