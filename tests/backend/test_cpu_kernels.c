/* Unit tests of the cpu backend library on its own: dlopens libag_backend_cpu.so (path in
 * argv[1] or $AG_CPU_BACKEND_LIB) and drives the ABI table directly, with host arrays as
 * buffers (the cpu backend's buffer handles are host pointers). */
#include "ag/backend.h"
#include "ag/half.h"

#include <check.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const ag_backend_iface *B;

/* ---- helpers ---- */

/* A view of host memory; strides NULL means contiguous. */
static ag_kernel_tensor view(void *data, ag_dtype dtype, int ndim, const int64_t *shape,
                             const int64_t *strides, int64_t offset) {
    ag_kernel_tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.offset = offset;
    t.dtype = dtype;
    t.ndim = ndim;
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        t.shape[d] = shape[d];
        t.strides[d] = strides ? strides[d] : s;
        s *= shape[d];
    }
    return t;
}

/* Contiguous view. */
static ag_kernel_tensor cont(void *data, ag_dtype dtype, int ndim, const int64_t *shape) {
    return view(data, dtype, ndim, shape, NULL, 0);
}

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})

static ag_kernel_fn kernel(const char *name, ag_dtype dtype) {
    ag_kernel_fn fn = NULL;
    ck_assert_msg(B->get_kernel(name, dtype, &fn) == AG_OK, "no kernel %s: %s", name,
                  B->last_error());
    ck_assert_ptr_nonnull(fn);
    return fn;
}

/* Runs kernel `name` (key dtype `key`) with attrs (NULL: all zero). */
static ag_status run(const char *name, ag_dtype key, const ag_kernel_tensor *in, int n_in,
                     const ag_kernel_tensor *out, const ag_attrs *attrs) {
    static const ag_attrs zero;
    ag_kernel_args args = {sizeof args, 0, n_in, 1, in, out, attrs ? attrs : &zero};
    return kernel(name, key)(&args);
}

/* Runs and asserts success. */
static void ok(const char *name, ag_dtype key, const ag_kernel_tensor *in, int n_in,
               const ag_kernel_tensor *out, const ag_attrs *attrs) {
    const ag_status st = run(name, key, in, n_in, out, attrs);
    ck_assert_msg(st == AG_OK, "%s failed (%d): %s", name, st, B->last_error());
}

/* Element of t at multi-index idx, as double. */
static double at(const ag_kernel_tensor *t, const int64_t *idx) {
    int64_t off = t->offset;
    for (int d = 0; d < t->ndim; d++) off += idx[d] * t->strides[d];
    switch (t->dtype) {
    case AG_F32:
        return ((const float *)t->data)[off];
    case AG_F64:
        return ((const double *)t->data)[off];
    default:
        return (double)((const int64_t *)t->data)[off];
    }
}

/* Advances a row-major multi-index over shape; false after the last one. */
static int next_index(int64_t *idx, int ndim, const int64_t *shape) {
    for (int d = ndim - 1; d >= 0; d--) {
        if (++idx[d] < shape[d]) return 1;
        idx[d] = 0;
    }
    return 0;
}

static int close_to(double got, double want, double tol) {
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    return fabs(got - want) <= tol * (1 + fabs(want));
}

static void assert_error(ag_status st, ag_status want, const char *fragment) {
    ck_assert_int_eq(st, want);
    ck_assert_msg(strstr(B->last_error(), fragment), "message '%s' lacks '%s'", B->last_error(),
                  fragment);
}

static double rnd(void) {
    return (double)rand() / RAND_MAX * 2 - 1;
}

/* ---- the table, devices, kernel lookup ---- */

START_TEST(test_iface) {
    ck_assert_uint_eq(B->struct_size, sizeof(ag_backend_iface));
    ck_assert_uint_eq(B->abi_major, AG_BACKEND_ABI_MAJOR);
    ck_assert_uint_eq(B->abi_minor, AG_BACKEND_ABI_MINOR);
    ck_assert_str_eq(B->name, "cpu");
    ck_assert(B->init && B->shutdown && B->last_error && B->device_count && B->device_info &&
              B->alloc && B->free && B->copy_from_host && B->copy_to_host && B->copy_device &&
              B->synchronize && B->get_kernel && B->memory_stats && B->empty_cache &&
              B->get_proc_address);
    ck_assert_int_eq(B->device_count(), 1);
    ck_assert_int_eq(B->synchronize(0), AG_OK);

    ag_device_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(B->device_info(0, &info), AG_OK);
    ck_assert(strlen(info.name) > 0);
    ck_assert(info.total_memory > 0 && info.free_memory > 0);
    ck_assert(info.free_memory <= info.total_memory);
    ck_assert_int_gt(info.compute_units, 0);
    ck_assert_int_ne(B->device_info(1, &info), AG_OK);

    /* An older caller's smaller struct: nothing past its end is written. */
    ag_device_info small;
    memset(&small, 0xab, sizeof small);
    small.struct_size = offsetof(ag_device_info, total_memory);
    ck_assert_int_eq(B->device_info(0, &small), AG_OK);
    ck_assert_uint_eq(small.total_memory, 0xababababababababull);
}
END_TEST

START_TEST(test_entry_other_major) {
    /* The table comes back whatever the host's version; the core does the refusing. */
    void *lib = dlopen(getenv("AG_CPU_BACKEND_LIB"), RTLD_NOW);
    ck_assert_ptr_nonnull(lib);
    ag_backend_entry_fn entry = (ag_backend_entry_fn)dlsym(lib, AG_BACKEND_ENTRY_SYMBOL);
    ck_assert_ptr_nonnull(entry);
    const ag_backend_iface *t = entry(AG_BACKEND_ABI_MAJOR + 1, 0);
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(t->abi_major, AG_BACKEND_ABI_MAJOR);
    /* Nothing else is exported. */
    ck_assert_ptr_null(dlsym(lib, "cpu_fail"));
    ck_assert_ptr_null(dlsym(lib, "cpu_alloc"));
    dlclose(lib);
}
END_TEST

START_TEST(test_get_kernel_errors) {
    ag_kernel_fn fn = NULL;
    assert_error(B->get_kernel("foo", AG_F16, &fn), AG_ERR_UNSUPPORTED,
                 "cpu backend has no kernel 'foo' for float16");
    assert_error(B->get_kernel("exp", AG_I64, &fn), AG_ERR_UNSUPPORTED,
                 "cpu backend has no kernel 'exp' for int64");
    assert_error(B->get_kernel("add", AG_BF16, &fn), AG_ERR_UNSUPPORTED, "bfloat16");
    ck_assert_int_eq(B->get_kernel(NULL, AG_F32, &fn), AG_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(B->get_proc_address("cpu_set_num_threads"));
    ck_assert_ptr_null(B->get_proc_address("nope"));

    static const char *const all[] = {
        "neg",          "abs",        "sign",    "exp",        "log",     "sqrt",    "sin",
        "cos",          "tanh",       "erf",     "rsqrt",      "sigmoid", "relu",    "silu",
        "gelu",         "pow_scalar", "clamp",   "copy",       "add",     "sub",     "mul",
        "div",          "pow",        "maximum", "minimum",    "eq",      "ne",      "lt",
        "le",           "gt",         "ge",      "where",      "fill",    "arange",  "sum",
        "max",          "min",        "argmax",  "argmin",     "matmul",  "softmax", "log_softmax",
        "index_select", "index_add",  "gather",  "scatter_add"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        ck_assert_msg(B->get_kernel(all[i], AG_F32, &fn) == AG_OK, "%s f32", all[i]);
        ck_assert_msg(B->get_kernel(all[i], AG_F64, &fn) == AG_OK, "%s f64", all[i]);
    }
}
END_TEST

START_TEST(test_args_errors) {
    float a[6] = {0}, b[8] = {0}, o[6];
    ag_kernel_tensor in[2] = {cont(a, AG_F32, 2, SHAPE(2, 3)), cont(b, AG_F32, 2, SHAPE(2, 4))};
    ag_kernel_tensor out = cont(o, AG_F32, 2, SHAPE(2, 3));
    assert_error(run("add", AG_F32, in, 2, &out, NULL), AG_ERR_SHAPE,
                 "add: float32 input 1 has shape [2, 4] but the output has shape [2, 3]");
    in[1] = cont(b, AG_F64, 2, SHAPE(2, 3));
    assert_error(run("add", AG_F32, in, 2, &out, NULL), AG_ERR_DTYPE,
                 "add: input 1 is float64, expected float32");
    assert_error(run("add", AG_F32, in, 1, &out, NULL), AG_ERR_INVALID_ARG, "takes 2 inputs");
}
END_TEST

/* ---- allocator and copies ---- */

static ag_memory_stats stats(void) {
    ag_memory_stats s = {.struct_size = sizeof s};
    ck_assert_int_eq(B->memory_stats(0, &s), AG_OK);
    return s;
}

START_TEST(test_allocator) {
    ck_assert_int_eq(B->empty_cache(0), AG_OK);
    const ag_memory_stats s0 = stats();
    void *p = NULL, *q = NULL;
    ck_assert_int_eq(B->alloc(0, 100, &p), AG_OK);
    ck_assert_uint_eq((uintptr_t)p % 64, 0);
    ag_memory_stats s1 = stats();
    ck_assert_uint_eq(s1.in_use - s0.in_use, 128); /* 100 rounds up to 128 */
    ck_assert_uint_eq(s1.reserved - s0.reserved, 128);
    ck_assert_uint_eq(s1.alloc_count - s0.alloc_count, 1);
    memset(p, 1, 100);
    B->free(0, p, 100);
    ck_assert_uint_eq(stats().in_use, s0.in_use);
    ck_assert_uint_eq(stats().reserved, s0.reserved + 128);

    /* Same class: served from the cache. */
    ck_assert_int_eq(B->alloc(0, 120, &q), AG_OK);
    ck_assert_ptr_eq(p, q);
    ck_assert_uint_eq(stats().cache_hits - s0.cache_hits, 1);
    B->free(0, q, 120);

    /* Zero bytes still give a usable buffer. */
    ck_assert_int_eq(B->alloc(0, 0, &p), AG_OK);
    ck_assert_ptr_nonnull(p);
    B->free(0, p, 0);

    /* Many sizes in and out leave in_use where it was; peak saw them all at once. */
    enum { N = 64 };
    void *bufs[N];
    size_t sizes[N], total = 0;
    for (int i = 0; i < N; i++) {
        sizes[i] = (size_t)(i * i * 97 + i) % 300000 + 1;
        ck_assert_int_eq(B->alloc(0, sizes[i], &bufs[i]), AG_OK);
        ck_assert_uint_eq((uintptr_t)bufs[i] % 64, 0);
        memset(bufs[i], 0x5a, sizes[i]);
        total += sizes[i];
    }
    const ag_memory_stats s2 = stats();
    ck_assert_uint_ge(s2.in_use - s0.in_use, total);
    ck_assert_uint_le(s2.in_use - s0.in_use, total + total / 4 + N * 64);
    ck_assert_uint_ge(s2.peak_in_use, s2.in_use);
    for (int i = 0; i < N; i++) B->free(0, bufs[i], sizes[i]);
    ck_assert_uint_eq(stats().in_use, s0.in_use);
    ck_assert_uint_gt(stats().reserved, s0.reserved);
    ck_assert_int_eq(B->empty_cache(0), AG_OK);
    ck_assert_uint_eq(stats().reserved, stats().in_use);

    /* Older, smaller stats struct: only what fits is written. */
    ag_memory_stats small;
    memset(&small, 0xcd, sizeof small);
    small.struct_size = offsetof(ag_memory_stats, alloc_count);
    ck_assert_int_eq(B->memory_stats(0, &small), AG_OK);
    ck_assert_uint_eq(small.alloc_count, 0xcdcdcdcdcdcdcdcdull);
    ck_assert_int_ne(B->alloc(1, 16, &p), AG_OK);
}
END_TEST

START_TEST(test_copies) {
    void *a, *b;
    ck_assert_int_eq(B->alloc(0, 64, &a), AG_OK);
    ck_assert_int_eq(B->alloc(0, 64, &b), AG_OK);
    const char msg[] = "hello, backend";
    char back[32] = {0};
    ck_assert_int_eq(B->copy_from_host(0, a, 4, msg, sizeof msg), AG_OK);
    ck_assert_int_eq(B->copy_device(0, b, 0, a, 4, sizeof msg), AG_OK);
    ck_assert_int_eq(B->copy_to_host(0, back, b, 0, sizeof msg), AG_OK);
    ck_assert_str_eq(back, msg);
    /* Overlapping copy within one buffer. */
    ck_assert_int_eq(B->copy_device(0, b, 1, b, 0, sizeof msg), AG_OK);
    ck_assert_int_eq(B->copy_to_host(0, back, b, 1, sizeof msg), AG_OK);
    ck_assert_str_eq(back, msg);
    B->free(0, a, 64);
    B->free(0, b, 64);
}
END_TEST

/* ---- elementwise ---- */

typedef double (*ref1)(double);
static double r_neg(double x) {
    return -x;
}
static double r_sign(double x) {
    return isnan(x) ? x : (x > 0) - (x < 0);
}
static double r_rsqrt(double x) {
    return 1 / sqrt(x);
}
static double r_sigmoid(double x) {
    return 1 / (1 + exp(-x));
}
static double r_relu(double x) {
    return x > 0 || isnan(x) ? x : 0;
}
static double r_silu(double x) {
    return x * r_sigmoid(x);
}
static double r_gelu(double x) {
    return 0.5 * x * (1 + erf(x / sqrt(2)));
}

static const struct {
    const char *name;
    ref1 f;
    int positive; /* domain needs x > 0 */
} g_unary[] = {
    {"neg", r_neg, 0},   {"abs", fabs, 0},    {"sign", r_sign, 0},   {"exp", exp, 0},
    {"log", log, 1},     {"sqrt", sqrt, 1},   {"sin", sin, 0},       {"cos", cos, 0},
    {"tanh", tanh, 0},   {"erf", erf, 0},     {"rsqrt", r_rsqrt, 1}, {"sigmoid", r_sigmoid, 0},
    {"relu", r_relu, 0}, {"silu", r_silu, 0}, {"gelu", r_gelu, 0},
};

/* Checks out against f(in) everywhere. */
static void check_unary(const ag_kernel_tensor *in, const ag_kernel_tensor *out, ref1 f, double tol,
                        const char *what) {
    int64_t idx[AG_MAX_DIMS] = {0};
    do {
        const double want = f(at(in, idx)), got = at(out, idx);
        ck_assert_msg(close_to(got, want, tol), "%s: got %g, want %g", what, got, want);
    } while (next_index(idx, out->ndim, out->shape));
}

START_TEST(test_unary_float) {
    double src[24];
    for (int i = 0; i < 24; i++) src[i] = rnd() * 3;
    for (size_t u = 0; u < sizeof g_unary / sizeof g_unary[0]; u++) {
        double in64[24], out64[24];
        float in32[24], out32[24];
        for (int i = 0; i < 24; i++) {
            in64[i] = g_unary[u].positive ? fabs(src[i]) + 0.1 : src[i];
            in32[i] = (float)in64[i];
        }
        /* contiguous [4, 6] */
        ag_kernel_tensor i64v = cont(in64, AG_F64, 2, SHAPE(4, 6)),
                         o64 = cont(out64, AG_F64, 2, SHAPE(4, 6));
        ok(g_unary[u].name, AG_F64, &i64v, 1, &o64, NULL);
        check_unary(&i64v, &o64, g_unary[u].f, 1e-12, g_unary[u].name);
        ag_kernel_tensor i32v = cont(in32, AG_F32, 2, SHAPE(4, 6)),
                         o32 = cont(out32, AG_F32, 2, SHAPE(4, 6));
        ok(g_unary[u].name, AG_F32, &i32v, 1, &o32, NULL);
        check_unary(&i32v, &o32, g_unary[u].f, 1e-5, g_unary[u].name);
        /* transposed [6, 4] view of the same data, offset slice [3, 2] with step 2 */
        i64v = view(in64, AG_F64, 2, SHAPE(6, 4), SHAPE(1, 6), 0);
        o64 = cont(out64, AG_F64, 2, SHAPE(6, 4));
        ok(g_unary[u].name, AG_F64, &i64v, 1, &o64, NULL);
        check_unary(&i64v, &o64, g_unary[u].f, 1e-12, g_unary[u].name);
        i32v = view(in32, AG_F32, 2, SHAPE(3, 2), SHAPE(8, 2), 1);
        o32 = view(out32, AG_F32, 2, SHAPE(3, 2), SHAPE(1, 3), 0); /* strided output too */
        ok(g_unary[u].name, AG_F32, &i32v, 1, &o32, NULL);
        check_unary(&i32v, &o32, g_unary[u].f, 1e-5, g_unary[u].name);
    }
}
END_TEST

START_TEST(test_unary_special) {
    const double nan = NAN;
    double in[6] = {nan, -1000, 1000, -0.5, 0, 2}, out[6];
    ag_kernel_tensor i = cont(in, AG_F64, 1, SHAPE(6)), o = cont(out, AG_F64, 1, SHAPE(6));
    ok("sign", AG_F64, &i, 1, &o, NULL);
    ck_assert(isnan(out[0]) && out[1] == -1 && out[2] == 1 && out[4] == 0);
    ok("relu", AG_F64, &i, 1, &o, NULL);
    ck_assert(isnan(out[0]) && out[1] == 0 && out[2] == 1000 && out[5] == 2);
    ok("sigmoid", AG_F64, &i, 1, &o, NULL); /* no overflow to NaN at large |x| */
    ck_assert(out[1] == 0 && out[2] == 1 && fabs(out[3] - r_sigmoid(-0.5)) < 1e-15);
    float inf32[2] = {-1000.f, 1000.f}, outf[2];
    i = cont(inf32, AG_F32, 1, SHAPE(2));
    o = cont(outf, AG_F32, 1, SHAPE(2));
    ok("sigmoid", AG_F32, &i, 1, &o, NULL);
    ck_assert(outf[0] == 0 && outf[1] == 1);

    /* gelu, tanh approximation */
    double g[3] = {-1, 0.5, 3}, go[3];
    ag_attrs tanh_mode = {.ints = {1}};
    i = cont(g, AG_F64, 1, SHAPE(3));
    o = cont(go, AG_F64, 1, SHAPE(3));
    ok("gelu", AG_F64, &i, 1, &o, &tanh_mode);
    for (int k = 0; k < 3; k++) {
        const double x = g[k];
        const double want = 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
        ck_assert(fabs(go[k] - want) < 1e-12);
    }
    ag_attrs p = {.reals = {2.5}};
    ok("pow_scalar", AG_F64, &i, 1, &o, &p);
    ck_assert(isnan(go[0]) && fabs(go[1] - pow(0.5, 2.5)) < 1e-15);

    /* clamp: float bounds, each bound optional */
    double c[5] = {-3, -1, 0, 1.5, 9}, co[5];
    i = cont(c, AG_F64, 1, SHAPE(5));
    o = cont(co, AG_F64, 1, SHAPE(5));
    ag_attrs both = {.ints = {1, 1}, .reals = {-1.5, 2}};
    ok("clamp", AG_F64, &i, 1, &o, &both);
    ck_assert(co[0] == -1.5 && co[1] == -1 && co[3] == 1.5 && co[4] == 2);
    ag_attrs hi_only = {.ints = {0, 1}, .reals = {-1.5, 1}};
    ok("clamp", AG_F64, &i, 1, &o, &hi_only);
    ck_assert(co[0] == -3 && co[3] == 1 && co[4] == 1);
    /* i64: bounds rounded toward the inside */
    int64_t ci[5] = {-3, -1, 0, 2, 9}, cio[5];
    i = cont(ci, AG_I64, 1, SHAPE(5));
    o = cont(cio, AG_I64, 1, SHAPE(5));
    ag_attrs frac = {.ints = {1, 1}, .reals = {-1.5, 2.7}};
    ok("clamp", AG_I64, &i, 1, &o, &frac);
    ck_assert(cio[0] == -1 && cio[1] == -1 && cio[2] == 0 && cio[3] == 2 && cio[4] == 2);
}
END_TEST

START_TEST(test_unary_i64) {
    int64_t in[5] = {-7, 0, 3, INT64_MIN, INT64_MAX}, out[5];
    ag_kernel_tensor i = cont(in, AG_I64, 1, SHAPE(5)), o = cont(out, AG_I64, 1, SHAPE(5));
    ok("neg", AG_I64, &i, 1, &o, NULL);
    ck_assert(out[0] == 7 && out[1] == 0 && out[2] == -3 && out[3] == INT64_MIN &&
              out[4] == -INT64_MAX); /* negating INT64_MIN wraps */
    ok("abs", AG_I64, &i, 1, &o, NULL);
    ck_assert(out[0] == 7 && out[2] == 3 && out[4] == INT64_MAX);
    ok("sign", AG_I64, &i, 1, &o, NULL);
    ck_assert(out[0] == -1 && out[1] == 0 && out[2] == 1 && out[3] == -1);
    ok("relu", AG_I64, &i, 1, &o, NULL);
    ck_assert(out[0] == 0 && out[2] == 3 && out[3] == 0 && out[4] == INT64_MAX);
}
END_TEST

START_TEST(test_copy_convert) {
    float f[4] = {-2.7f, 2.7f, 0.5f, -0.5f};
    double d[4];
    int64_t l[4];
    ag_kernel_tensor tf = cont(f, AG_F32, 1, SHAPE(4)), td = cont(d, AG_F64, 1, SHAPE(4)),
                     tl = cont(l, AG_I64, 1, SHAPE(4));
    ok("copy", AG_I64, &tf, 1, &tl, NULL); /* truncates toward zero */
    ck_assert(l[0] == -2 && l[1] == 2 && l[2] == 0 && l[3] == 0);
    ok("copy", AG_F64, &tl, 1, &td, NULL);
    ck_assert(d[0] == -2 && d[1] == 2);
    ok("copy", AG_F64, &tf, 1, &td, NULL);
    ck_assert(d[0] == (double)-2.7f);
    /* f64 → f32 from a reversed (negative-stride) view */
    double src[3] = {1, 2, 3};
    float dst[3];
    ag_kernel_tensor rev = view(src, AG_F64, 1, SHAPE(3), SHAPE(-1), 2);
    tf = cont(dst, AG_F32, 1, SHAPE(3));
    ok("copy", AG_F32, &rev, 1, &tf, NULL);
    ck_assert(dst[0] == 3 && dst[1] == 2 && dst[2] == 1);
    /* same-dtype copy of a transposed matrix */
    int64_t m[6] = {1, 2, 3, 4, 5, 6}, mt[6];
    ag_kernel_tensor a = view(m, AG_I64, 2, SHAPE(3, 2), SHAPE(1, 3), 0),
                     b = cont(mt, AG_I64, 2, SHAPE(3, 2));
    ok("copy", AG_I64, &a, 1, &b, NULL);
    const int64_t want[6] = {1, 4, 2, 5, 3, 6};
    ck_assert(memcmp(mt, want, sizeof want) == 0);
    /* NaN and out-of-range floats saturate instead of invoking undefined behaviour */
    double odd[3] = {NAN, 1e300, -1e300};
    td = cont(odd, AG_F64, 1, SHAPE(3));
    tl = cont(l, AG_I64, 1, SHAPE(3));
    ok("copy", AG_I64, &td, 1, &tl, NULL);
    ck_assert(l[0] == 0 && l[1] == INT64_MAX && l[2] == INT64_MIN);
}
END_TEST

/* float -> int64 as copy converts: toward zero, NaN 0, saturating. */
static int64_t to_i64(double x) {
    if (isnan(x)) return 0;
    if (x >= 9223372036854775808.0) return INT64_MAX;
    if (x < -9223372036854775808.0) return INT64_MIN;
    return (int64_t)x;
}

/* copy to and from float16 and bfloat16, bit for bit as include/ag/half.h (the same checks
 * as test_device_backend.c runs on the device backends). */
START_TEST(test_copy_half) {
    /* float32 specials (bits): zeros, float16 subnormals and their ties, 65504 / 65520,
     * max float, infinities, NaNs (one signalling), bfloat16 ties, 1/3, -2.5, 1e10. */
    static const uint32_t special[] = {
        0x00000000, 0x80000000, 0x33800000, 0xb3800000, 0x33000000, 0x33000001, 0x32ffffff,
        0x33c00000, 0x34200000, 0x387fc000, 0x387ff000, 0x387fe000, 0x38800000, 0x35000000,
        0x3f801000, 0x3f803000, 0x3f801001, 0x477fe000, 0x477fefff, 0x477ff000, 0xc77ff000,
        0x7f7fffff, 0xff7fffff, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7f800001,
        0x7fbfffff, 0x3f808000, 0x3f818000, 0x3f808001, 0x3f7f8000, 0xbf808000, 0x3eaaaaab,
        0xc0200000, 0x00000001, 0x807fffff, 0x501502f9, 0xd01502f9, 0x5f000000};
    enum { NS = sizeof special / sizeof special[0] };
    float f[NS];
    uint16_t h[NS], bh[NS];
    for (int i = 0; i < NS; i++) f[i] = ag_f32_from_bits(special[i]);
    ag_kernel_tensor tf = cont(f, AG_F32, 1, SHAPE(NS)), th = cont(h, AG_F16, 1, SHAPE(NS)),
                     tb = cont(bh, AG_BF16, 1, SHAPE(NS));
    ok("copy", AG_F16, &tf, 1, &th, NULL);
    ok("copy", AG_BF16, &tf, 1, &tb, NULL);
    for (int i = 0; i < NS; i++) {
        ck_assert_msg(h[i] == ag_f32_to_f16(f[i]), "f32 0x%08x -> f16 0x%04x", special[i], h[i]);
        ck_assert_msg(bh[i] == ag_f32_to_bf16(f[i]), "f32 0x%08x -> bf16 0x%04x", special[i],
                      bh[i]);
    }
    ck_assert(h[4] == 0x0000 && h[7] == 0x0002 && h[8] == 0x0002 && h[11] == 0x0400);
    ck_assert(h[14] == 0x3c00 && h[15] == 0x3c02 && h[17] == 0x7bff && h[19] == 0x7c00);
    ck_assert(h[25] == 0x7e00 && bh[27] == 0x7fc0 && bh[29] == 0x3f80 && bh[30] == 0x3f82);

    /* Every 16-bit pattern of both formats to every dtype. */
    enum { N = 65536 };
    uint16_t *all = malloc(N * sizeof *all), *same = malloc(N * sizeof *same),
             *other = malloc(N * sizeof *other);
    float *fo = malloc(N * sizeof *fo);
    double *d = malloc(N * sizeof *d);
    int64_t *l = malloc(N * sizeof *l);
    ck_assert(all && same && other && fo && d && l);
    for (int i = 0; i < N; i++) all[i] = (uint16_t)i;
    for (int bf = 0; bf < 2; bf++) {
        const ag_dtype from = bf ? AG_BF16 : AG_F16, to16 = bf ? AG_F16 : AG_BF16;
        ag_kernel_tensor in = cont(all, from, 1, SHAPE(N));
        ag_kernel_tensor of = cont(fo, AG_F32, 1, SHAPE(N)), od = cont(d, AG_F64, 1, SHAPE(N)),
                         ol = cont(l, AG_I64, 1, SHAPE(N)), os = cont(same, from, 1, SHAPE(N)),
                         oo = cont(other, to16, 1, SHAPE(N));
        ok("copy", AG_F32, &in, 1, &of, NULL);
        ok("copy", AG_F64, &in, 1, &od, NULL);
        ok("copy", AG_I64, &in, 1, &ol, NULL);
        ok("copy", from, &in, 1, &os, NULL);
        ok("copy", to16, &in, 1, &oo, NULL);
        for (int i = 0; i < N; i++) {
            const float want = bf ? ag_bf16_to_f32(all[i]) : ag_f16_to_f32(all[i]);
            ck_assert_msg(ag_f32_bits(fo[i]) == ag_f32_bits(want), "%s 0x%04x -> f32",
                          ag_dtype_name(from), i);
            ck_assert_msg(d[i] == (double)want || (isnan(want) && isnan(d[i])), "%s 0x%04x -> f64",
                          ag_dtype_name(from), i);
            ck_assert_msg(l[i] == to_i64(want), "%s 0x%04x -> i64", ag_dtype_name(from), i);
            ck_assert_msg(same[i] == all[i], "%s 0x%04x kept", ag_dtype_name(from), i);
            ck_assert_msg(other[i] == (bf ? ag_f32_to_f16(want) : ag_f32_to_bf16(want)),
                          "%s 0x%04x -> %s", ag_dtype_name(from), i, ag_dtype_name(to16));
        }
    }
    free(all);
    free(same);
    free(other);
    free(fo);
    free(d);
    free(l);

    /* float64 and int64 reach 16 bits through float32 (as PyTorch): 1 + 2^-11 + 2^-40
     * rounds to the float16 tie 1 + 2^-11 first, then to 1.0; 1 + 2^-8 + 2^-30 likewise to
     * bfloat16's 1.0; int64 2049 ties to 2048 in float16. */
    const double dv[] = {
        1.0 + 0x1p-11 + 0x1p-40, 1.0 + 0x1p-8 + 0x1p-30, 65520.0, -1e300, NAN, 1.0 / 3};
    const int64_t lv[] = {2049, 65520, INT64_MAX, INT64_MIN, 16777217, -33};
    uint16_t hd[6], hl[6];
    ag_kernel_tensor td = cont((void *)dv, AG_F64, 1, SHAPE(6)),
                     tl = cont((void *)lv, AG_I64, 1, SHAPE(6)), thd, thl;
    for (int bf = 0; bf < 2; bf++) {
        const ag_dtype to = bf ? AG_BF16 : AG_F16;
        thd = cont(hd, to, 1, SHAPE(6));
        thl = cont(hl, to, 1, SHAPE(6));
        ok("copy", to, &td, 1, &thd, NULL);
        ok("copy", to, &tl, 1, &thl, NULL);
        for (int i = 0; i < 6; i++) {
            const float fd = (float)dv[i], fl = (float)lv[i];
            ck_assert_uint_eq(hd[i], bf ? ag_f32_to_bf16(fd) : ag_f32_to_f16(fd));
            ck_assert_uint_eq(hl[i], bf ? ag_f32_to_bf16(fl) : ag_f32_to_f16(fl));
        }
        ck_assert_uint_eq(hd[0], bf ? 0x3f80 : 0x3c00);
        ck_assert_uint_eq(hd[1], bf ? 0x3f80 : 0x3c04);
        ck_assert_uint_eq(hl[0], bf ? 0x4500 : 0x6800);
    }

    /* Strided: a transposed float32 input with an offset into every other float16 element,
     * whose neighbours keep their bits; then that view read transposed into float64. */
    float m[3 + 5 * 7];
    for (int i = 0; i < 3 + 5 * 7; i++) m[i] = ag_f32_from_bits(special[i % NS]);
    uint16_t o16[70];
    memset(o16, 0xab, sizeof o16);
    ag_kernel_tensor tin = view(m, AG_F32, 2, SHAPE(7, 5), SHAPE(1, 7), 3),
                     tout = view(o16, AG_F16, 2, SHAPE(7, 5), SHAPE(10, 2), 1);
    ok("copy", AG_F16, &tin, 1, &tout, NULL);
    for (int c = 0; c < 7; c++)
        for (int r = 0; r < 5; r++) {
            ck_assert_uint_eq(o16[1 + c * 10 + r * 2], ag_f32_to_f16(m[3 + r * 7 + c]));
            ck_assert_uint_eq(o16[c * 10 + r * 2], 0xabab);
        }
    double d35[35];
    ag_kernel_tensor tin16 = view(o16, AG_F16, 2, SHAPE(5, 7), SHAPE(2, 10), 1),
                     t64 = cont(d35, AG_F64, 2, SHAPE(5, 7));
    ok("copy", AG_F64, &tin16, 1, &t64, NULL);
    for (int r = 0; r < 5; r++)
        for (int c = 0; c < 7; c++) {
            const double want = ag_f16_to_f32(o16[1 + c * 10 + r * 2]);
            ck_assert(d35[r * 7 + c] == want || (isnan(want) && isnan(d35[r * 7 + c])));
        }
}
END_TEST

START_TEST(test_binary_broadcast) {
    /* a [2, 3] + b [3] broadcast over rows (stride 0), and a column [2, 1] over columns */
    double a[6] = {1, 2, 3, 4, 5, 6}, b[3] = {10, 20, 30}, c[2] = {100, 200}, o[6];
    ag_kernel_tensor in[2] = {cont(a, AG_F64, 2, SHAPE(2, 3)),
                              view(b, AG_F64, 2, SHAPE(2, 3), SHAPE(0, 1), 0)};
    ag_kernel_tensor out = cont(o, AG_F64, 2, SHAPE(2, 3));
    ok("add", AG_F64, in, 2, &out, NULL);
    const double want[6] = {11, 22, 33, 14, 25, 36};
    ck_assert(memcmp(o, want, sizeof want) == 0);
    in[1] = view(c, AG_F64, 2, SHAPE(2, 3), SHAPE(1, 0), 0);
    ok("sub", AG_F64, in, 2, &out, NULL);
    ck_assert(o[0] == -99 && o[2] == -97 && o[3] == -196 && o[5] == -194);
    /* scalar (all strides 0) on the left */
    in[1] = in[0];
    in[0] = view(c, AG_F64, 2, SHAPE(2, 3), SHAPE(0, 0), 0);
    ok("div", AG_F64, in, 2, &out, NULL);
    ck_assert(o[0] == 100 && o[1] == 50 && o[5] == 100.0 / 6);
    ok("pow", AG_F64, (ag_kernel_tensor[]){in[1], in[1]}, 2, &out, NULL);
    ck_assert(o[1] == 4 && o[2] == 27);
    float fa[4] = {1, 2, 3, 4}, fb[4] = {4, 3, 2, 1}, fo[4];
    ag_kernel_tensor f2[2] = {cont(fa, AG_F32, 1, SHAPE(4)), cont(fb, AG_F32, 1, SHAPE(4))};
    ag_kernel_tensor fout = cont(fo, AG_F32, 1, SHAPE(4));
    ok("mul", AG_F32, f2, 2, &fout, NULL);
    ck_assert(fo[0] == 4 && fo[1] == 6 && fo[3] == 4);
}
END_TEST

START_TEST(test_binary_compare_minmax) {
    const double nan = NAN;
    double a[4] = {1, nan, 3, 2}, b[4] = {2, 1, nan, 2}, o[4];
    ag_kernel_tensor in[2] = {cont(a, AG_F64, 1, SHAPE(4)), cont(b, AG_F64, 1, SHAPE(4))};
    ag_kernel_tensor out = cont(o, AG_F64, 1, SHAPE(4));
    ok("maximum", AG_F64, in, 2, &out, NULL);
    ck_assert(o[0] == 2 && isnan(o[1]) && isnan(o[2]) && o[3] == 2);
    ok("minimum", AG_F64, in, 2, &out, NULL);
    ck_assert(o[0] == 1 && isnan(o[1]) && isnan(o[2]) && o[3] == 2);
    static const struct {
        const char *name;
        double want[4];
    } cmp[] = {{"eq", {0, 0, 0, 1}}, {"ne", {1, 1, 1, 0}}, {"lt", {1, 0, 0, 0}},
               {"le", {1, 0, 0, 1}}, {"gt", {0, 0, 0, 0}}, {"ge", {0, 0, 0, 1}}};
    for (size_t c = 0; c < sizeof cmp / sizeof cmp[0]; c++) {
        ok(cmp[c].name, AG_F64, in, 2, &out, NULL);
        ck_assert_msg(memcmp(o, cmp[c].want, sizeof o) == 0, "%s", cmp[c].name);
    }
    int64_t ia[3] = {INT64_MAX, -5, 7}, ib[3] = {1, -5, 9}, io[3];
    ag_kernel_tensor ii[2] = {cont(ia, AG_I64, 1, SHAPE(3)), cont(ib, AG_I64, 1, SHAPE(3))};
    ag_kernel_tensor iout = cont(io, AG_I64, 1, SHAPE(3));
    ok("add", AG_I64, ii, 2, &iout, NULL);
    ck_assert(io[0] == INT64_MIN && io[1] == -10 && io[2] == 16); /* wraps */
    ok("maximum", AG_I64, ii, 2, &iout, NULL);
    ck_assert(io[0] == INT64_MAX && io[1] == -5 && io[2] == 9);
    ok("le", AG_I64, ii, 2, &iout, NULL);
    ck_assert(io[0] == 0 && io[1] == 1 && io[2] == 1);
    ok("mul", AG_I64, ii, 2, &iout, NULL);
    ck_assert(io[1] == 25 && io[2] == 63);
}
END_TEST

START_TEST(test_where_fill_arange) {
    double cond[3] = {1, 0, NAN}, a[2] = {5, 6}, b = -1, o[6];
    /* cond broadcast over rows, a over columns, b a scalar: [2, 3] */
    ag_kernel_tensor in[3] = {view(cond, AG_F64, 2, SHAPE(2, 3), SHAPE(0, 1), 0),
                              view(a, AG_F64, 2, SHAPE(2, 3), SHAPE(1, 0), 0),
                              view(&b, AG_F64, 2, SHAPE(2, 3), SHAPE(0, 0), 0)};
    ag_kernel_tensor out = cont(o, AG_F64, 2, SHAPE(2, 3));
    ok("where", AG_F64, in, 3, &out, NULL);
    const double want[6] = {5, -1, 5, 6, -1, 6}; /* NaN != 0 picks a */
    ck_assert(memcmp(o, want, sizeof want) == 0);

    float f[5];
    ag_kernel_tensor tf = cont(f, AG_F32, 1, SHAPE(5));
    ag_attrs v = {.reals = {2.5}};
    ok("fill", AG_F32, NULL, 0, &tf, &v);
    ck_assert(f[0] == 2.5f && f[4] == 2.5f);
    ag_attrs ar = {.reals = {1, 0.5}};
    ok("arange", AG_F32, NULL, 0, &tf, &ar);
    ck_assert(f[0] == 1 && f[1] == 1.5f && f[4] == 3);
    int64_t l[8] = {0};
    ag_kernel_tensor tl = view(l, AG_I64, 1, SHAPE(4), SHAPE(2), 0); /* strided output */
    ag_attrs ari = {.ints = {10, -3}};
    ok("arange", AG_I64, NULL, 0, &tl, &ari);
    ck_assert(l[0] == 10 && l[1] == 0 && l[2] == 7 && l[4] == 4 && l[6] == 1);
    ag_attrs fi = {.ints = {42}};
    ok("fill", AG_I64, NULL, 0, &tl, &fi);
    ck_assert(l[0] == 42 && l[6] == 42 && l[1] == 0);
    tl = cont(l, AG_I64, 2, SHAPE(2, 2));
    assert_error(run("arange", AG_I64, NULL, 0, &tl, &ari), AG_ERR_SHAPE, "1-D");
}
END_TEST

START_TEST(test_zero_dim_and_empty) {
    /* 0-dim: one element */
    double x = 2, y = 3, o = 0;
    ag_kernel_tensor in[2] = {cont(&x, AG_F64, 0, NULL), cont(&y, AG_F64, 0, NULL)};
    ag_kernel_tensor out = cont(&o, AG_F64, 0, NULL);
    ok("mul", AG_F64, in, 2, &out, NULL);
    ck_assert(o == 6);
    ok("exp", AG_F64, in, 1, &out, NULL);
    ck_assert(fabs(o - exp(2)) < 1e-15);
    ok("sum", AG_F64, in, 1, &out, NULL);
    ck_assert(o == 2);
    ok("softmax", AG_F64, in, 1, &out, NULL);
    ck_assert(o == 1);
    int64_t arg = 7;
    ag_kernel_tensor iout = cont(&arg, AG_I64, 0, NULL);
    /* reducing dim 0 of a 0-dim tensor has no dim to name */
    ck_assert_int_ne(run("argmax", AG_F64, in, 1, &iout, NULL), AG_OK);

    /* zero-size: nothing written, no buffer needed */
    ag_kernel_tensor e[2] = {cont(NULL, AG_F32, 2, SHAPE(0, 3)),
                             cont(NULL, AG_F32, 2, SHAPE(0, 3))};
    ag_kernel_tensor eo = cont(NULL, AG_F32, 2, SHAPE(0, 3));
    ok("add", AG_F32, e, 2, &eo, NULL);
    ok("exp", AG_F32, e, 1, &eo, NULL);
    ok("softmax", AG_F32, e, 1, &eo, NULL);
    ok("copy", AG_F32, e, 1, &eo, NULL);
    ok("fill", AG_F32, NULL, 0, &eo, NULL);
    /* sum over an empty dim is 0; max over it is an error */
    float s[3] = {9, 9, 9};
    ag_kernel_tensor so = cont(s, AG_F32, 2, SHAPE(1, 3));
    ok("sum", AG_F32, e, 1, &so, NULL);
    ck_assert(s[0] == 0 && s[1] == 0 && s[2] == 0);
    assert_error(run("max", AG_F32, e, 1, &so, NULL), AG_ERR_SHAPE, "max");
    /* but reducing the non-empty dim of [0, 3] gives [0, 1]: nothing to do */
    ag_kernel_tensor eo1 = cont(NULL, AG_F32, 2, SHAPE(0, 1));
    ok("max", AG_F32, e, 1, &eo1, NULL);
    /* matmul with k = 0 gives zeros */
    double mo[4] = {5, 5, 5, 5};
    ag_kernel_tensor mm[2] = {cont(NULL, AG_F64, 2, SHAPE(2, 0)),
                              cont(NULL, AG_F64, 2, SHAPE(0, 2))};
    ag_kernel_tensor mout = cont(mo, AG_F64, 2, SHAPE(2, 2));
    ok("matmul", AG_F64, mm, 2, &mout, NULL);
    ck_assert(mo[0] == 0 && mo[1] == 0 && mo[2] == 0 && mo[3] == 0);
    int64_t lo[4] = {5, 5, 5, 5};
    mm[0].dtype = mm[1].dtype = AG_I64;
    mout = cont(lo, AG_I64, 2, SHAPE(2, 2));
    ok("matmul", AG_I64, mm, 2, &mout, NULL);
    ck_assert(lo[0] == 0 && lo[3] == 0);
}
END_TEST

/* ---- reductions ---- */

/* Naive reduction of in into out (out's extent-1 dims where in's are not are reduced). */
static void check_reduce(const char *name, const ag_kernel_tensor *in, const ag_kernel_tensor *out,
                         double tol) {
    int64_t oidx[AG_MAX_DIMS] = {0};
    do {
        double acc = strcmp(name, "sum") == 0 ? 0 : NAN;
        int64_t iidx[AG_MAX_DIMS] = {0}, rshape[AG_MAX_DIMS];
        int first = 1;
        for (int d = 0; d < in->ndim; d++) {
            const int red = out->shape[d] == 1 && in->shape[d] != 1;
            rshape[d] = red ? in->shape[d] : 1;
            iidx[d] = red ? 0 : oidx[d];
        }
        int64_t r[AG_MAX_DIMS] = {0};
        do {
            int64_t idx[AG_MAX_DIMS];
            for (int d = 0; d < in->ndim; d++) idx[d] = iidx[d] + r[d];
            const double v = at(in, idx);
            if (strcmp(name, "sum") == 0)
                acc += v;
            else if (first || (strcmp(name, "max") == 0 ? v > acc : v < acc))
                acc = v;
            first = 0;
        } while (next_index(r, in->ndim, rshape));
        const double got = at(out, oidx);
        ck_assert_msg(close_to(got, acc, tol), "%s: got %.17g want %.17g", name, got, acc);
    } while (next_index(oidx, out->ndim, out->shape));
}

START_TEST(test_reduce_dims) {
    enum { N = 3 * 4 * 5 };
    double d[N];
    float f[N];
    int64_t l[N];
    for (int i = 0; i < N; i++) {
        d[i] = rnd() * 10;
        f[i] = (float)d[i];
        l[i] = (int64_t)(d[i] * 100);
    }
    /* every subset of dims of [3, 4, 5], on the tensor and on a permuted view */
    static const char *const names[] = {"sum", "max", "min"};
    for (int mask = 0; mask < 8; mask++) {
        for (int perm = 0; perm < 2; perm++) {
            int64_t shape[3] = {3, 4, 5}, strides[3] = {20, 5, 1};
            if (perm) { /* view as [5, 3, 4] */
                shape[0] = 5, shape[1] = 3, shape[2] = 4;
                strides[0] = 1, strides[1] = 20, strides[2] = 5;
            }
            int64_t oshape[3];
            for (int k = 0; k < 3; k++) oshape[k] = mask >> k & 1 ? 1 : shape[k];
            for (size_t n = 0; n < 3; n++) {
                double od[N];
                float of[N];
                int64_t ol[N];
                ag_kernel_tensor in = view(d, AG_F64, 3, shape, strides, 0);
                ag_kernel_tensor out = cont(od, AG_F64, 3, oshape);
                ok(names[n], AG_F64, &in, 1, &out, NULL);
                check_reduce(names[n], &in, &out, 1e-12);
                in = view(f, AG_F32, 3, shape, strides, 0);
                out = cont(of, AG_F32, 3, oshape);
                ok(names[n], AG_F32, &in, 1, &out, NULL);
                check_reduce(names[n], &in, &out, 1e-6);
                in = view(l, AG_I64, 3, shape, strides, 0);
                out = cont(ol, AG_I64, 3, oshape);
                ok(names[n], AG_I64, &in, 1, &out, NULL);
                check_reduce(names[n], &in, &out, 0);
            }
        }
    }
    /* a broadcast (stride 0) input: sum over it multiplies */
    double one = 1.5, s;
    ag_kernel_tensor b = view(&one, AG_F64, 2, SHAPE(7, 3), SHAPE(0, 0), 0);
    ag_kernel_tensor so = cont(&s, AG_F64, 2, SHAPE(1, 1));
    ok("sum", AG_F64, &b, 1, &so, NULL);
    ck_assert(s == 31.5);
    /* shape mismatch */
    double o2[2];
    ag_kernel_tensor bad = cont(o2, AG_F64, 2, SHAPE(2, 1));
    assert_error(run("sum", AG_F64, &b, 1, &bad, NULL), AG_ERR_SHAPE,
                 "sum: float64 input of shape [7, 3] cannot reduce to output shape [2, 1]");
}
END_TEST

START_TEST(test_reduce_precision_nan) {
    /* f32 sums accumulate in f64: 2^24 + 1 + 1 is exact */
    float f[3] = {16777216.f, 1.f, 1.f}, s;
    ag_kernel_tensor in = cont(f, AG_F32, 1, SHAPE(3)), out = cont(&s, AG_F32, 1, SHAPE(1));
    ok("sum", AG_F32, &in, 1, &out, NULL);
    ck_assert(s == 16777218.f);
    double d[4] = {1, NAN, 5, -2}, r;
    in = cont(d, AG_F64, 1, SHAPE(4));
    out = cont(&r, AG_F64, 1, SHAPE(1));
    ok("max", AG_F64, &in, 1, &out, NULL);
    ck_assert(isnan(r));
    ok("min", AG_F64, &in, 1, &out, NULL);
    ck_assert(isnan(r));
    int64_t i64sum[2] = {INT64_MAX, 1}, is;
    in = cont(i64sum, AG_I64, 1, SHAPE(2));
    out = cont(&is, AG_I64, 1, SHAPE(1));
    ok("sum", AG_I64, &in, 1, &out, NULL);
    ck_assert(is == INT64_MIN);
}
END_TEST

START_TEST(test_argmax) {
    /* [2, 5]: ties go to the first occurrence, a NaN counts as the extreme */
    double d[10] = {1, 7, 3, 7, 0, 2, NAN, 9, NAN, -4};
    int64_t o[5];
    ag_kernel_tensor in = cont(d, AG_F64, 2, SHAPE(2, 5)), out = cont(o, AG_I64, 2, SHAPE(2, 1));
    ag_attrs dim1 = {.ints = {1}}, dim0 = {.ints = {0}};
    ok("argmax", AG_F64, &in, 1, &out, &dim1);
    ck_assert(o[0] == 1 && o[1] == 1);
    ok("argmin", AG_F64, &in, 1, &out, &dim1);
    ck_assert(o[0] == 4 && o[1] == 1);
    out = cont(o, AG_I64, 2, SHAPE(1, 5));
    ok("argmax", AG_F64, &in, 1, &out, &dim0);
    ck_assert(o[0] == 1 && o[1] == 1 && o[2] == 1 && o[3] == 1 && o[4] == 0);
    ok("argmin", AG_F64, &in, 1, &out, &dim0);
    ck_assert(o[0] == 0 && o[1] == 1 && o[2] == 0 && o[3] == 1 && o[4] == 1);
    /* transposed view [5, 2], reduce dim 0 */
    in = view(d, AG_F64, 2, SHAPE(5, 2), SHAPE(1, 5), 0);
    out = cont(o, AG_I64, 2, SHAPE(1, 2));
    ok("argmax", AG_F64, &in, 1, &out, &dim0);
    ck_assert(o[0] == 1 && o[1] == 1);
    /* i64 and f32 */
    int64_t l[4] = {3, 9, 9, 1};
    in = cont(l, AG_I64, 1, SHAPE(4));
    out = cont(o, AG_I64, 1, SHAPE(1));
    ok("argmax", AG_I64, &in, 1, &out, &dim0);
    ck_assert(o[0] == 1);
    float f[3] = {2, -1, -1};
    in = cont(f, AG_F32, 1, SHAPE(3));
    ok("argmin", AG_F32, &in, 1, &out, &dim0);
    ck_assert(o[0] == 1);
    /* an extent-1 dim gives index 0 */
    in = cont(f, AG_F32, 2, SHAPE(3, 1));
    out = cont(o, AG_I64, 2, SHAPE(3, 1));
    ok("argmax", AG_F32, &in, 1, &out, &dim1);
    ck_assert(o[0] == 0 && o[2] == 0);
    ag_attrs dim5 = {.ints = {5}};
    assert_error(run("argmax", AG_F32, &in, 1, &out, &dim5), AG_ERR_INVALID_ARG, "dim 5");
}
END_TEST

START_TEST(test_reduce_large) {
    /* big enough for the parallel paths: one output (chunked) and many outputs */
    enum { R = 300, C = 1000, N = R * C };
    double *d = malloc(N * sizeof *d);
    float *f = malloc(N * sizeof *f);
    for (int i = 0; i < N; i++) f[i] = (float)(d[i] = rnd());
    d[N - 10] = 5; /* a late unique maximum */
    d[N - 5] = 5;  /* and a later tie */
    double s, rows[R], cols[C];
    ag_kernel_tensor in = cont(d, AG_F64, 2, SHAPE(R, C));
    ag_kernel_tensor out = cont(&s, AG_F64, 2, SHAPE(1, 1));
    ok("sum", AG_F64, &in, 1, &out, NULL);
    double want = 0;
    for (int i = 0; i < N; i++) want += d[i];
    ck_assert(fabs(s - want) < 1e-9);
    ok("max", AG_F64, &in, 1, &out, NULL);
    ck_assert(s == 5);
    out = cont(rows, AG_F64, 2, SHAPE(R, 1));
    ok("sum", AG_F64, &in, 1, &out, NULL);
    check_reduce("sum", &in, &out, 1e-12);
    out = cont(cols, AG_F64, 2, SHAPE(1, C));
    ok("min", AG_F64, &in, 1, &out, NULL);
    check_reduce("min", &in, &out, 0);
    int64_t arg;
    ag_kernel_tensor flat = cont(d, AG_F64, 1, SHAPE(N)), aout = cont(&arg, AG_I64, 1, SHAPE(1));
    ok("argmax", AG_F64, &flat, 1, &aout, NULL);
    ck_assert_int_eq(arg, N - 10);
    float fs;
    ag_kernel_tensor fin = cont(f, AG_F32, 1, SHAPE(N)), fout = cont(&fs, AG_F32, 1, SHAPE(1));
    ok("sum", AG_F32, &fin, 1, &fout, NULL);
    double fwant = 0;
    for (int i = 0; i < N; i++) fwant += f[i];
    ck_assert(fabs(fs - fwant) <= 1e-6 * fabs(fwant) + 1e-3);
    /* the very same result with one thread: chunking does not depend on the thread count */
    void (*set_threads)(int) = (void (*)(int))B->get_proc_address("cpu_set_num_threads");
    double s_many, s_one;
    out = cont(&s_many, AG_F64, 2, SHAPE(1, 1));
    ok("sum", AG_F64, &in, 1, &out, NULL);
    set_threads(1);
    out = cont(&s_one, AG_F64, 2, SHAPE(1, 1));
    ok("sum", AG_F64, &in, 1, &out, NULL);
    set_threads(0);
    ck_assert(s_one == s_many);
    free(d);
    free(f);
}
END_TEST

/* ---- matmul ---- */

/* Naive out = a @ b over all batch dims; compares with the kernel's result. */
static void check_matmul(const ag_kernel_tensor *a, const ag_kernel_tensor *b,
                         const ag_kernel_tensor *out, double tol) {
    const int nd = out->ndim;
    const int64_t k = a->shape[nd - 1];
    int64_t idx[AG_MAX_DIMS] = {0};
    do {
        double want = 0;
        int64_t ia[AG_MAX_DIMS], ib[AG_MAX_DIMS];
        memcpy(ia, idx, sizeof ia);
        memcpy(ib, idx, sizeof ib);
        for (int64_t p = 0; p < k; p++) {
            ia[nd - 1] = p;
            ib[nd - 2] = p;
            want += at(a, ia) * at(b, ib);
        }
        const double got = at(out, idx);
        ck_assert_msg(close_to(got, want, tol), "matmul: got %g want %g", got, want);
    } while (next_index(idx, nd, out->shape));
}

START_TEST(test_matmul_layouts) {
    double *buf = malloc(4096 * sizeof *buf), *buf2 = malloc(4096 * sizeof *buf2), o[2048];
    float *fbuf = malloc(4096 * sizeof *fbuf), *fbuf2 = malloc(4096 * sizeof *fbuf2), fo[2048];
    int64_t *lbuf = malloc(4096 * sizeof *lbuf), *lbuf2 = malloc(4096 * sizeof *lbuf2), lo[2048];
    for (int i = 0; i < 4096; i++) {
        buf[i] = rnd();
        buf2[i] = rnd();
        fbuf[i] = (float)buf[i];
        fbuf2[i] = (float)buf2[i];
        lbuf[i] = (int64_t)(buf[i] * 10);
        lbuf2[i] = (int64_t)(buf2[i] * 10);
    }
    /* (a shape, a strides, b shape, b strides, out shape, out strides), 2-D to 4-D */
    static const struct {
        int nd;
        int64_t as[4], ast[4], bs[4], bst[4], os[4], ost[4];
        int64_t aoff;
    } cases[] = {
        /* plain row-major */
        {2, {3, 4}, {4, 1}, {4, 5}, {5, 1}, {3, 5}, {5, 1}, 0},
        /* a and b transposed (column-major) */
        {2, {3, 4}, {1, 3}, {4, 5}, {1, 4}, {3, 5}, {5, 1}, 0},
        /* padded rows (leading dim > cols) and an offset */
        {2, {3, 4}, {7, 1}, {4, 5}, {9, 1}, {3, 5}, {5, 1}, 3},
        /* needs packing: column step 2, and a stride-0 broadcast row */
        {2, {3, 4}, {10, 2}, {4, 5}, {0, 1}, {3, 5}, {5, 1}, 1},
        /* column-major output (computed in a temporary, then scattered) */
        {2, {3, 4}, {4, 1}, {4, 5}, {5, 1}, {3, 5}, {1, 3}, 0},
        /* vectors: m = 1, n = 1 with odd strides */
        {2, {1, 4}, {99, 3}, {4, 1}, {2, 77}, {1, 1}, {1, 1}, 0},
        /* batch: a broadcast over the batch (stride 0), b batched and transposed */
        {3, {2, 3, 4}, {0, 4, 1}, {2, 4, 5}, {20, 1, 4}, {2, 3, 5}, {15, 5, 1}, 0},
        /* 4-D batches, b broadcast over dim 1, a over dim 0 */
        {4,
         {2, 3, 2, 4},
         {0, 8, 4, 1},
         {2, 3, 4, 3},
         {12, 0, 3, 1},
         {2, 3, 2, 3},
         {18, 6, 3, 1},
         0},
        /* larger than BLAS's small-matrix paths */
        {2, {40, 50}, {50, 1}, {50, 30}, {1, 50}, {40, 30}, {30, 1}, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int nd = cases[c].nd;
        ag_kernel_tensor in[2] = {view(buf, AG_F64, nd, cases[c].as, cases[c].ast, cases[c].aoff),
                                  view(buf2, AG_F64, nd, cases[c].bs, cases[c].bst, 0)};
        ag_kernel_tensor out = view(o, AG_F64, nd, cases[c].os, cases[c].ost, 0);
        ok("matmul", AG_F64, in, 2, &out, NULL);
        check_matmul(&in[0], &in[1], &out, 1e-12);
        in[0] = view(fbuf, AG_F32, nd, cases[c].as, cases[c].ast, cases[c].aoff);
        in[1] = view(fbuf2, AG_F32, nd, cases[c].bs, cases[c].bst, 0);
        out = view(fo, AG_F32, nd, cases[c].os, cases[c].ost, 0);
        ok("matmul", AG_F32, in, 2, &out, NULL);
        check_matmul(&in[0], &in[1], &out, 1e-5);
        in[0] = view(lbuf, AG_I64, nd, cases[c].as, cases[c].ast, cases[c].aoff);
        in[1] = view(lbuf2, AG_I64, nd, cases[c].bs, cases[c].bst, 0);
        out = view(lo, AG_I64, nd, cases[c].os, cases[c].ost, 0);
        ok("matmul", AG_I64, in, 2, &out, NULL);
        check_matmul(&in[0], &in[1], &out, 0);
    }
    ag_kernel_tensor in[2] = {cont(buf, AG_F64, 2, SHAPE(3, 4)),
                              cont(buf2, AG_F64, 2, SHAPE(5, 5))};
    ag_kernel_tensor out = cont(o, AG_F64, 2, SHAPE(3, 5));
    assert_error(run("matmul", AG_F64, in, 2, &out, NULL), AG_ERR_SHAPE,
                 "matmul: float64 shapes [3, 4] @ [5, 5] do not give output shape [3, 5]");
    free(buf);
    free(buf2);
    free(fbuf);
    free(fbuf2);
    free(lbuf);
    free(lbuf2);
}
END_TEST

/* ---- softmax ---- */

START_TEST(test_softmax) {
    /* [3, 4] with large values (stability), over both dims, transposed input */
    double x[12], o[12];
    for (int i = 0; i < 12; i++) x[i] = rnd() * 5 + (i == 5 ? 1000 : 0);
    for (int dim = 0; dim < 2; dim++) {
        for (int tr = 0; tr < 2; tr++) {
            ag_kernel_tensor in = tr ? view(x, AG_F64, 2, SHAPE(4, 3), SHAPE(1, 4), 0)
                                     : cont(x, AG_F64, 2, SHAPE(3, 4));
            ag_kernel_tensor out = cont(o, AG_F64, 2, in.shape);
            ag_attrs a = {.ints = {dim}};
            for (int lg = 0; lg < 2; lg++) {
                ok(lg ? "log_softmax" : "softmax", AG_F64, &in, 1, &out, &a);
                int64_t idx[2] = {0, 0};
                do {
                    int64_t j[2] = {idx[0], idx[1]};
                    double mx = -INFINITY;
                    for (j[dim] = 0; j[dim] < in.shape[dim]; j[dim]++) mx = fmax(mx, at(&in, j));
                    j[dim] = 0;
                    double sum = exp(at(&in, j) - mx);
                    for (j[dim] = 1; j[dim] < in.shape[dim]; j[dim]++) sum += exp(at(&in, j) - mx);
                    const double lw = at(&in, idx) - mx - log(sum);
                    const double want = lg ? lw : exp(lw);
                    ck_assert_msg(close_to(at(&out, idx), want, 1e-12), "got %g want %g",
                                  at(&out, idx), want);
                } while (next_index(idx, 2, in.shape));
            }
        }
    }
    float f[3] = {1000, 0, -1000}, fo[3];
    ag_kernel_tensor in = cont(f, AG_F32, 1, SHAPE(3)), out = cont(fo, AG_F32, 1, SHAPE(3));
    ok("softmax", AG_F32, &in, 1, &out, NULL);
    ck_assert(fo[0] == 1 && fo[1] == 0 && fo[2] == 0);
    ok("log_softmax", AG_F32, &in, 1, &out, NULL);
    ck_assert(fo[0] == 0 && fo[1] == -1000);
}
END_TEST

/* ---- large inputs: the multithreaded paths, split mid-row at any thread count ---- */

START_TEST(test_large_parallel) {
    enum { R = 300, C = 257, N = R * C };
    double *a = malloc(N * sizeof *a), *o = malloc(N * sizeof *o), b[C];
    for (int i = 0; i < N; i++) a[i] = rnd();
    for (int j = 0; j < C; j++) b[j] = rnd();
    void (*set_threads)(int) = (void (*)(int))B->get_proc_address("cpu_set_num_threads");
    for (int threads = 0; threads <= 3; threads += 3) { /* default, then 3 */
        set_threads(threads);
        /* transposed a [C, R] plus b broadcast along rows: no dims merge */
        ag_kernel_tensor in[2] = {view(a, AG_F64, 2, SHAPE(C, R), SHAPE(1, C), 0),
                                  view(b, AG_F64, 2, SHAPE(C, R), SHAPE(1, 0), 0)};
        ag_kernel_tensor out = cont(o, AG_F64, 2, SHAPE(C, R));
        ok("add", AG_F64, in, 2, &out, NULL);
        for (int i = 0; i < C; i++)
            for (int j = 0; j < R; j++) ck_assert(o[i * R + j] == a[j * C + i] + b[i]);

        /* softmax over each dim of [R, C]: rows sum to 1 */
        for (int dim = 0; dim < 2; dim++) {
            ag_kernel_tensor x = cont(a, AG_F64, 2, SHAPE(R, C)),
                             y = cont(o, AG_F64, 2, SHAPE(R, C));
            ag_attrs over = {.ints = {dim}};
            ok("softmax", AG_F64, &x, 1, &y, &over);
            const int outer = dim ? R : C, len = dim ? C : R;
            for (int p = 0; p < outer; p++) {
                double sum = 0;
                for (int i = 0; i < len; i++) sum += dim ? o[p * C + i] : o[i * C + p];
                ck_assert(fabs(sum - 1) < 1e-12);
            }
        }

        /* index_select of 200 rows of x [R, C] */
        int64_t idx[200];
        for (int i = 0; i < 200; i++) idx[i] = (i * 7919) % R;
        ag_kernel_tensor g[2] = {cont(a, AG_F64, 2, SHAPE(R, C)), cont(idx, AG_I64, 1, SHAPE(200))};
        ag_kernel_tensor gout = cont(o, AG_F64, 2, SHAPE(200, C));
        ag_attrs d0 = {.ints = {0}};
        ok("index_select", AG_F64, g, 2, &gout, &d0);
        for (int i = 0; i < 200; i++)
            for (int j = 0; j < C; j++) ck_assert(o[i * C + j] == a[idx[i] * C + j]);

        /* arange and fill over many elements */
        ag_kernel_tensor flat = cont(o, AG_F64, 1, SHAPE(N));
        ag_attrs ar = {.reals = {-3, 0.25}};
        ok("arange", AG_F64, NULL, 0, &flat, &ar);
        for (int i = 0; i < N; i++) ck_assert(o[i] == -3 + i * 0.25);
    }
    set_threads(0);
    free(a);
    free(o);
}
END_TEST

/* Allocator hammered from several threads: accounting stays exact. */
static void *alloc_worker(void *arg) {
    (void)arg;
    for (int i = 0; i < 2000; i++) {
        void *p;
        const size_t bytes = (size_t)(i % 37) * 100 + 1;
        if (B->alloc(0, bytes, &p) != AG_OK) return (void *)1;
        memset(p, i, bytes);
        B->free(0, p, bytes);
    }
    return NULL;
}

START_TEST(test_allocator_threads) {
    const ag_memory_stats before = stats();
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, alloc_worker, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        ck_assert_ptr_null(r);
    }
    const ag_memory_stats after = stats();
    ck_assert_uint_eq(after.in_use, before.in_use);
    ck_assert_uint_eq(after.alloc_count - before.alloc_count, 8000);
    ck_assert_uint_gt(after.cache_hits - before.cache_hits, 7000);
}
END_TEST

/* ---- indexing ---- */

START_TEST(test_index_select_gather) {
    /* x [3, 4] = 0..11 */
    double x[12], o[12];
    for (int i = 0; i < 12; i++) x[i] = i;
    int64_t idx[3] = {2, 0, 2};
    ag_kernel_tensor in[2] = {cont(x, AG_F64, 2, SHAPE(3, 4)), cont(idx, AG_I64, 1, SHAPE(3))};
    ag_kernel_tensor out = cont(o, AG_F64, 2, SHAPE(3, 4));
    ag_attrs d0 = {.ints = {0}}, d1 = {.ints = {1}};
    ok("index_select", AG_F64, in, 2, &out, &d0);
    const double rows[12] = {8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11};
    ck_assert(memcmp(o, rows, sizeof rows) == 0);
    out = cont(o, AG_F64, 2, SHAPE(3, 3));
    ok("index_select", AG_F64, in, 2, &out, &d1);
    const double cols[9] = {2, 0, 2, 6, 4, 6, 10, 8, 10};
    ck_assert(memcmp(o, cols, sizeof cols) == 0);
    /* strided (reversed) index, transposed x */
    in[0] = view(x, AG_F64, 2, SHAPE(4, 3), SHAPE(1, 4), 0);
    in[1] = view(idx, AG_I64, 1, SHAPE(2), SHAPE(-1), 1); /* {0, 2} */
    out = cont(o, AG_F64, 2, SHAPE(4, 2));
    ok("index_select", AG_F64, in, 2, &out, &d1);
    ck_assert(o[0] == 0 && o[1] == 8 && o[2] == 1 && o[7] == 11);
    /* errors */
    int64_t bad[2] = {1, 7};
    in[0] = cont(x, AG_F64, 2, SHAPE(3, 4));
    in[1] = cont(bad, AG_I64, 1, SHAPE(2));
    out = cont(o, AG_F64, 2, SHAPE(2, 4));
    assert_error(run("index_select", AG_F64, in, 2, &out, &d0), AG_ERR_INDEX,
                 "index_select: index 7 is out of range for dimension 0 of size 3");
    bad[1] = -1;
    in[1] = cont(bad, AG_I64, 1, SHAPE(2));
    assert_error(run("index_select", AG_F64, in, 2, &out, &d0), AG_ERR_INDEX, "index -1");

    /* gather dim 1: out[i][j] = x[i][index[i][j]], index smaller than x off dim */
    int64_t gi[4] = {3, 0, 1, 1};
    int64_t xl[12];
    for (int i = 0; i < 12; i++) xl[i] = 100 + i;
    int64_t go[4];
    ag_kernel_tensor g[2] = {cont(xl, AG_I64, 2, SHAPE(3, 4)), cont(gi, AG_I64, 2, SHAPE(2, 2))};
    ag_kernel_tensor gout = cont(go, AG_I64, 2, SHAPE(2, 2));
    ok("gather", AG_I64, g, 2, &gout, &d1);
    ck_assert(go[0] == 103 && go[1] == 100 && go[2] == 105 && go[3] == 105);
    /* dim 0: out[i][j] = x[index[i][j]][j]; index 3 is past x's 3 rows */
    assert_error(run("gather", AG_I64, g, 2, &gout, &d0), AG_ERR_INDEX,
                 "gather: index 3 is out of range for dimension 0 of size 3");
    gi[0] = 2;
    ok("gather", AG_I64, g, 2, &gout, &d0);
    ck_assert(go[0] == 108 && go[1] == 101 && go[2] == 104 && go[3] == 105);
    /* a broadcast (stride-0) index */
    int64_t one = 1;
    g[1] = view(&one, AG_I64, 2, SHAPE(3, 2), SHAPE(0, 0), 0);
    int64_t go6[6];
    gout = cont(go6, AG_I64, 2, SHAPE(3, 2));
    ok("gather", AG_I64, g, 2, &gout, &d1);
    ck_assert(go6[0] == 101 && go6[1] == 101 && go6[4] == 109);
    /* shape errors */
    g[1] = cont(gi, AG_I64, 2, SHAPE(4, 1)); /* 4 rows > 3 off dim 1 */
    gout = cont(go, AG_I64, 2, SHAPE(4, 1));
    assert_error(run("gather", AG_I64, g, 2, &gout, &d1), AG_ERR_SHAPE, "gather: int64 shapes");
}
END_TEST

START_TEST(test_index_add_scatter_add) {
    /* index_add over dim 0 with a repeated index: rows accumulate */
    float self[6] = {1, 1, 1, 1, 1, 1}, src[9], o[6];
    for (int i = 0; i < 9; i++) src[i] = (float)i;
    int64_t idx[3] = {1, 0, 1};
    ag_kernel_tensor in[3] = {cont(self, AG_F32, 2, SHAPE(2, 3)), cont(idx, AG_I64, 1, SHAPE(3)),
                              cont(src, AG_F32, 2, SHAPE(3, 3))};
    ag_kernel_tensor out = cont(o, AG_F32, 2, SHAPE(2, 3));
    ag_attrs d0 = {.ints = {0}}, d1 = {.ints = {1}};
    ok("index_add", AG_F32, in, 3, &out, &d0);
    const float want[6] = {4, 5, 6, 1 + 0 + 6, 1 + 1 + 7, 1 + 2 + 8};
    ck_assert(memcmp(o, want, sizeof want) == 0);
    /* dim 1 with a broadcast self (stride 0) and transposed source */
    float zero = 0;
    in[0] = view(&zero, AG_F32, 2, SHAPE(3, 2), SHAPE(0, 0), 0);
    in[2] = view(src, AG_F32, 2, SHAPE(3, 3), SHAPE(1, 3), 0); /* src^T */
    out = cont(o, AG_F32, 2, SHAPE(3, 2));
    ok("index_add", AG_F32, in, 3, &out, &d1);
    /* row r: out[r][1] = srcT[r][0] + srcT[r][2] = src[0][r] + src[2][r]; out[r][0] = src[1][r] */
    ck_assert(o[0] == 3 && o[1] == 0 + 6 && o[2] == 4 && o[3] == 1 + 7 && o[5] == 2 + 8);
    int64_t bad[3] = {0, 5, 0};
    in[1] = cont(bad, AG_I64, 1, SHAPE(3));
    assert_error(run("index_add", AG_F32, in, 3, &out, &d1), AG_ERR_INDEX,
                 "index_add: index 5 is out of range for dimension 1 of size 2");

    /* scatter_add dim 0: out[index[i][j]][j] += src[i][j]; index smaller than src */
    double s[6] = {0}, sv[6] = {1, 2, 3, 4, 5, 6}, so[6];
    int64_t si[4] = {1, 0, 1, 1}; /* [2, 2] */
    ag_kernel_tensor sin[3] = {cont(s, AG_F64, 2, SHAPE(2, 3)), cont(si, AG_I64, 2, SHAPE(2, 2)),
                               cont(sv, AG_F64, 2, SHAPE(2, 3))};
    ag_kernel_tensor sout = cont(so, AG_F64, 2, SHAPE(2, 3));
    ok("scatter_add", AG_F64, sin, 3, &sout, &d0);
    /* (0,0)->row1 +1, (0,1)->row0 +2, (1,0)->row1 +4, (1,1)->row1 +5 */
    ck_assert(so[0] == 0 && so[1] == 2 && so[2] == 0 && so[3] == 5 && so[4] == 5 && so[5] == 0);
    ok("scatter_add", AG_F64, sin, 3, &sout, &d1); /* dim 1: out[i][index[i][j]] += src[i][j] */
    ck_assert(so[0] == 2 && so[1] == 1 && so[3] == 0 && so[4] == 9);
    si[3] = -2;
    sin[1] = cont(si, AG_I64, 2, SHAPE(2, 2));
    assert_error(run("scatter_add", AG_F64, sin, 3, &sout, &d1), AG_ERR_INDEX,
                 "scatter_add: index -2 is out of range for dimension 1 of size 3");
    int64_t li[2] = {0, 0}, ls[2] = {7, 8}, lself[1] = {1}, lo[1];
    ag_kernel_tensor lin[3] = {cont(lself, AG_I64, 1, SHAPE(1)), cont(li, AG_I64, 1, SHAPE(2)),
                               cont(ls, AG_I64, 1, SHAPE(2))};
    ag_kernel_tensor lout = cont(lo, AG_I64, 1, SHAPE(1));
    ok("scatter_add", AG_I64, lin, 3, &lout, &d0);
    ck_assert(lo[0] == 16);
    ok("index_add", AG_I64, lin, 3, &lout, &d0);
    ck_assert(lo[0] == 16);
}
END_TEST

static Suite *cpu_suite(void) {
    Suite *s = suite_create("cpu_backend");
    TCase *t = tcase_create("core");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_iface);
    tcase_add_test(t, test_entry_other_major);
    tcase_add_test(t, test_get_kernel_errors);
    tcase_add_test(t, test_args_errors);
    tcase_add_test(t, test_allocator);
    tcase_add_test(t, test_copies);
    tcase_add_test(t, test_unary_float);
    tcase_add_test(t, test_unary_special);
    tcase_add_test(t, test_unary_i64);
    tcase_add_test(t, test_copy_convert);
    tcase_add_test(t, test_copy_half);
    tcase_add_test(t, test_binary_broadcast);
    tcase_add_test(t, test_binary_compare_minmax);
    tcase_add_test(t, test_where_fill_arange);
    tcase_add_test(t, test_zero_dim_and_empty);
    tcase_add_test(t, test_reduce_dims);
    tcase_add_test(t, test_reduce_precision_nan);
    tcase_add_test(t, test_argmax);
    tcase_add_test(t, test_reduce_large);
    tcase_add_test(t, test_matmul_layouts);
    tcase_add_test(t, test_softmax);
    tcase_add_test(t, test_large_parallel);
    tcase_add_test(t, test_allocator_threads);
    tcase_add_test(t, test_index_select_gather);
    tcase_add_test(t, test_index_add_scatter_add);
    suite_add_tcase(s, t);
    return s;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : getenv("AG_CPU_BACKEND_LIB");
    if (!path) {
        fprintf(stderr, "usage: %s path/to/libag_backend_cpu.so (or set AG_CPU_BACKEND_LIB)\n",
                argv[0]);
        return 2;
    }
    setenv("AG_CPU_BACKEND_LIB", path, 1); /* for test_entry_other_major */
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "cannot load %s: %s\n", path, dlerror());
        return 2;
    }
    ag_backend_entry_fn entry = (ag_backend_entry_fn)dlsym(lib, AG_BACKEND_ENTRY_SYMBOL);
    if (!entry || !(B = entry(AG_BACKEND_ABI_MAJOR, AG_BACKEND_ABI_MINOR)) || B->init() != AG_OK) {
        fprintf(stderr, "cannot start the cpu backend from %s\n", path);
        return 2;
    }
    SRunner *runner = srunner_create(cpu_suite());
    srunner_run_all(runner, CK_NORMAL);
    const int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    B->shutdown();
    dlclose(lib);
    return failed ? 1 : 0;
}
