/* Unit tests of a device backend library on its own (opencl, cuda): dlopens
 * libag_backend_<name>.so (path in argv[1]) and drives the ABI table directly: devices,
 * memory, copies, allocator statistics, out-of-memory, threads and kernel lookup, the same
 * for every device backend; then the backend's own tests (device_backend_extras.h).
 *
 * `test_device_backend LIB` runs the device tests, or exits 77 (skipped, the reason
 * printed) when the machine has no device for the backend. `test_device_backend LIB
 * offline` runs the tests that need no device (a CUDA backend's NVRTC compiles and its
 * message without a GPU; an OpenCL backend without a platform) and never skips. */
#include "ag/backend.h"
#include "ag/half.h"

#include <check.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "device_backend_extras.h"

#define SKIP 77 /* ctest's SKIP_RETURN_CODE */

const ag_backend_iface *B;
const char *g_lib_path;

void assert_error(ag_status st, ag_status want, const char *fragment) {
    ck_assert_msg(st == want, "status %d, want %d (%s)", st, want, B->last_error());
    ck_assert_msg(strstr(B->last_error(), fragment), "message '%s' lacks '%s'", B->last_error(),
                  fragment);
}

ag_memory_stats stats(int device) {
    ag_memory_stats s = {.struct_size = sizeof s};
    ck_assert_int_eq(B->memory_stats(device, &s), AG_OK);
    return s;
}

/* ---- the table and devices ---- */

START_TEST(test_iface_and_devices) {
    ck_assert_uint_eq(B->struct_size, sizeof(ag_backend_iface));
    ck_assert_uint_eq(B->abi_major, AG_BACKEND_ABI_MAJOR);
    ck_assert(B->init && B->shutdown && B->last_error && B->device_count && B->device_info &&
              B->alloc && B->free && B->copy_from_host && B->copy_to_host && B->copy_device &&
              B->synchronize && B->get_kernel && B->memory_stats && B->empty_cache &&
              B->get_proc_address && B->build_source && B->launch_source);
    /* opencl compiles OpenCL C and cuda (and the emulated cudaemu) CUDA C. */
    ck_assert_ptr_nonnull(B->source_language);
    ck_assert(strncmp(B->name, B->source_language, strlen(B->source_language)) == 0);
    const int n = B->device_count();
    ck_assert_int_ge(n, 1);
    for (int d = 0; d < n; d++) {
        ag_device_info info = {.struct_size = sizeof info};
        ck_assert_int_eq(B->device_info(d, &info), AG_OK);
        printf("%s:%d  %s, %d compute units, %llu bytes\n", B->name, d, info.name,
               info.compute_units, (unsigned long long)info.total_memory);
        ck_assert(strlen(info.name) > 0);
        ck_assert(info.total_memory > 0);
        ck_assert_int_gt(info.compute_units, 0);
        ck_assert_int_eq(B->synchronize(d), AG_OK);
    }
    ag_device_info info = {.struct_size = sizeof info};
    assert_error(B->device_info(n, &info), AG_ERR_DEVICE, "no device");
    assert_error(B->synchronize(-1), AG_ERR_DEVICE, "device -1");

    /* An older caller's smaller struct: nothing past its end is written. */
    ag_device_info small;
    memset(&small, 0xab, sizeof small);
    small.struct_size = offsetof(ag_device_info, total_memory);
    ck_assert_int_eq(B->device_info(0, &small), AG_OK);
    ck_assert_uint_eq(small.total_memory, 0xababababababababull);

    /* Nothing but the entry is exported. */
    void *lib = dlopen(g_lib_path, RTLD_NOW | RTLD_NOLOAD);
    ck_assert_ptr_nonnull(lib);
    static const char *const internal[] = {"ocl_fail", "ocl_alloc", "ocl_source_common",
                                           "cu_fail",  "cu_alloc",  "ag_pool_take"};
    for (size_t i = 0; i < sizeof internal / sizeof internal[0]; i++)
        ck_assert_msg(!dlsym(lib, internal[i]), "%s is exported", internal[i]);
    dlclose(lib);
}
END_TEST

/* ---- memory ---- */

START_TEST(test_copy_round_trips) {
    static const size_t sizes[] = {1, 100, 4096, 5000, 1 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        const size_t n = sizes[i];
        unsigned char *src = malloc(n), *dst = malloc(n);
        ck_assert(src && dst);
        for (size_t k = 0; k < n; k++) src[k] = (unsigned char)(k * 7 + i);
        void *a = NULL, *b = NULL;
        ck_assert_int_eq(B->alloc(0, n, &a), AG_OK);
        ck_assert_int_eq(B->alloc(0, n, &b), AG_OK);
        ck_assert_ptr_ne(a, b);
        ck_assert_int_eq(B->copy_from_host(0, a, 0, src, n), AG_OK);
        ck_assert_int_eq(B->copy_device(0, b, 0, a, 0, n), AG_OK);
        memset(dst, 0, n);
        ck_assert_int_eq(B->copy_to_host(0, dst, b, 0, n), AG_OK);
        ck_assert_mem_eq(dst, src, n);
        B->free(0, a, n);
        B->free(0, b, n);
        free(src);
        free(dst);
    }
    ck_assert_int_eq(B->copy_to_host(0, NULL, NULL, 0, 0), AG_OK); /* zero bytes: nothing */
}
END_TEST

START_TEST(test_copy_offsets_and_overlap) {
    int host[64], back[64];
    for (int i = 0; i < 64; i++) host[i] = i;
    void *buf = NULL;
    ck_assert_int_eq(B->alloc(0, sizeof host, &buf), AG_OK);
    ck_assert_int_eq(B->copy_from_host(0, buf, 0, host, sizeof host), AG_OK);
    /* Partial write at an offset, partial read at another. */
    const int patch[4] = {-1, -2, -3, -4};
    ck_assert_int_eq(B->copy_from_host(0, buf, 10 * sizeof(int), patch, sizeof patch), AG_OK);
    int part[6];
    ck_assert_int_eq(B->copy_to_host(0, part, buf, 9 * sizeof(int), sizeof part), AG_OK);
    const int want_part[6] = {9, -1, -2, -3, -4, 14};
    ck_assert_mem_eq(part, want_part, sizeof part);
    ck_assert_int_eq(B->copy_from_host(0, buf, 0, host, sizeof host), AG_OK);

    /* Overlapping ranges of one buffer behave as memmove, both directions. */
    ck_assert_int_eq(B->copy_device(0, buf, 4 * sizeof(int), buf, 0, 32 * sizeof(int)), AG_OK);
    int want[64];
    memcpy(want, host, sizeof want);
    memmove(want + 4, want, 32 * sizeof(int));
    ck_assert_int_eq(B->copy_to_host(0, back, buf, 0, sizeof back), AG_OK);
    ck_assert_mem_eq(back, want, sizeof want);
    ck_assert_int_eq(B->copy_device(0, buf, 0, buf, 8 * sizeof(int), 40 * sizeof(int)), AG_OK);
    memmove(want, want + 8, 40 * sizeof(int));
    ck_assert_int_eq(B->copy_to_host(0, back, buf, 0, sizeof back), AG_OK);
    ck_assert_mem_eq(back, want, sizeof want);

    /* Errors name the slot. */
    assert_error(B->copy_from_host(0, NULL, 0, host, 4), AG_ERR_INVALID_ARG, "copy_from_host");
    assert_error(B->copy_device(B->device_count(), buf, 0, buf, 0, 4), AG_ERR_DEVICE,
                 "copy_device");
    ck_assert_int_eq(B->synchronize(0), AG_OK);
    B->free(0, buf, sizeof host);
}
END_TEST

START_TEST(test_stats) {
    ck_assert_int_eq(B->empty_cache(0), AG_OK);
    const ag_memory_stats s0 = stats(0);
    ck_assert_uint_eq(s0.reserved, s0.in_use);

    void *a = NULL, *b = NULL;
    ck_assert_int_eq(B->alloc(0, 1000, &a), AG_OK);
    ck_assert_int_eq(B->alloc(0, 300000, &b), AG_OK);
    const ag_memory_stats s1 = stats(0);
    ck_assert_uint_eq(s1.alloc_count, s0.alloc_count + 2);
    ck_assert_uint_eq(s1.cache_hits, s0.cache_hits);
    /* Size classes round up by at most 25% (512-byte steps below 4 KiB). */
    ck_assert_uint_ge(s1.in_use - s0.in_use, 301000);
    ck_assert_uint_le(s1.in_use - s0.in_use, 1024 + 375000);
    ck_assert_uint_eq(s1.reserved - s0.reserved, s1.in_use - s0.in_use);
    ck_assert_uint_ge(s1.peak_in_use, s1.in_use);

    /* A freed buffer stays reserved and serves the next request of its class. */
    B->free(0, b, 300000);
    const ag_memory_stats s2 = stats(0);
    ck_assert_uint_lt(s2.in_use, s1.in_use);
    ck_assert_uint_eq(s2.reserved, s1.reserved);
    void *c = NULL;
    ck_assert_int_eq(B->alloc(0, 299000, &c), AG_OK);
    ck_assert_ptr_eq(c, b);
    const ag_memory_stats s3 = stats(0);
    ck_assert_uint_eq(s3.cache_hits, s2.cache_hits + 1);
    ck_assert_uint_eq(s3.in_use, s1.in_use);

    /* empty_cache gives cached buffers back: reserved drops to in_use. */
    B->free(0, c, 299000);
    B->free(0, a, 1000);
    ck_assert_uint_gt(stats(0).reserved, stats(0).in_use);
    ck_assert_int_eq(B->empty_cache(0), AG_OK);
    const ag_memory_stats s4 = stats(0);
    ck_assert_uint_eq(s4.in_use, s0.in_use);
    ck_assert_uint_eq(s4.reserved, s0.reserved);

    /* An older caller's smaller struct: nothing past its end is written. */
    ag_memory_stats small;
    memset(&small, 0xab, sizeof small);
    small.struct_size = offsetof(ag_memory_stats, reserved);
    ck_assert_int_eq(B->memory_stats(0, &small), AG_OK);
    ck_assert_uint_eq(small.reserved, 0xababababababababull);
    assert_error(B->memory_stats(B->device_count(), &small), AG_ERR_DEVICE, "memory_stats");
}
END_TEST

START_TEST(test_out_of_memory) {
    const ag_memory_stats before = stats(0);
    void *p = NULL;
    assert_error(B->alloc(0, (size_t)1 << 40, &p), AG_ERR_OUT_OF_MEMORY, "1099511627776 bytes");
    ck_assert_ptr_null(p);
    assert_error(B->alloc(0, SIZE_MAX, &p), AG_ERR_OUT_OF_MEMORY, "cannot allocate");
    assert_error(B->alloc(B->device_count(), 16, &p), AG_ERR_DEVICE, "alloc");
    const ag_memory_stats after = stats(0);
    ck_assert_uint_eq(after.in_use, before.in_use);
    ck_assert_uint_eq(after.alloc_count, before.alloc_count);
    /* Still usable afterwards. */
    ck_assert_int_eq(B->alloc(0, 64, &p), AG_OK);
    B->free(0, p, 64);
}
END_TEST

/* Allocates, writes, reads and frees in a loop; returns non-NULL on a mismatch. */
static void *alloc_worker(void *arg) {
    const int id = (int)(intptr_t)arg;
    for (int i = 0; i < 200; i++) {
        const size_t n = (size_t)(64 + (i * 37 + id * 11) % 9000);
        unsigned char pattern[9100], back[9100];
        memset(pattern, id * 31 + i, n);
        void *buf = NULL;
        if (B->alloc(0, n, &buf) != AG_OK) return (void *)1;
        if (B->copy_from_host(0, buf, 0, pattern, n) != AG_OK ||
            B->copy_to_host(0, back, buf, 0, n) != AG_OK || memcmp(back, pattern, n) != 0)
            return (void *)1;
        B->free(0, buf, n);
    }
    return NULL;
}

START_TEST(test_threads) {
    const ag_memory_stats before = stats(0);
    pthread_t threads[4];
    for (int t = 0; t < 4; t++)
        ck_assert_int_eq(pthread_create(&threads[t], NULL, alloc_worker, (void *)(intptr_t)t), 0);
    for (int t = 0; t < 4; t++) {
        void *failed = NULL;
        pthread_join(threads[t], &failed);
        ck_assert_ptr_null(failed);
    }
    const ag_memory_stats after = stats(0);
    ck_assert_uint_eq(after.in_use, before.in_use);
    ck_assert_uint_eq(after.alloc_count, before.alloc_count + 800);
    ck_assert_uint_gt(after.cache_hits, before.cache_hits);
}
END_TEST

/* ---- kernels and programs ---- */

START_TEST(test_get_kernel_errors) {
    ag_kernel_fn fn = NULL;
    assert_error(B->get_kernel("no_such_kernel", AG_F32, &fn), AG_ERR_UNSUPPORTED,
                 "no kernel 'no_such_kernel' for float32");
    ck_assert_int_eq(B->get_kernel(NULL, AG_F32, &fn), AG_ERR_INVALID_ARG);
    /* A kernel that exists (once the tables are filled) has no float16 version: the core
     * computes in float32 and converts with copy, which has both 16-bit types. */
    if (B->get_kernel("add", AG_F32, &fn) == AG_OK)
        assert_error(B->get_kernel("add", AG_F16, &fn), AG_ERR_UNSUPPORTED,
                     "no kernel 'add' for float16 (it has ");
    ck_assert_int_eq(B->get_kernel("copy", AG_F16, &fn), AG_OK);
    ck_assert_int_eq(B->get_kernel("copy", AG_BF16, &fn), AG_OK);
    ck_assert_ptr_null(B->get_proc_address("ag_host_memory")); /* buffers are the device's */
    ck_assert_ptr_null(B->get_proc_address("nope"));
}
END_TEST

/* ---- copy to and from float16 and bfloat16, bit for bit as include/ag/half.h ---- */

/* A view of device buffer `data`: strides NULL means contiguous. */
static ag_kernel_tensor dev_view(void *data, ag_dtype dtype, int ndim, const int64_t *shape,
                                 const int64_t *strides, int64_t offset) {
    ag_kernel_tensor t = {.data = data, .offset = offset, .dtype = dtype, .ndim = ndim};
    int64_t step = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        t.shape[d] = shape[d];
        t.strides[d] = strides ? strides[d] : step;
        step *= shape[d];
    }
    return t;
}

/* A device buffer of n elements of dtype, holding `host` (NULL: 0xab bytes). */
static void *dev_buffer(ag_dtype dtype, int64_t n, const void *host) {
    const size_t bytes = (size_t)n * ag_dtype_size(dtype);
    void *buf = NULL;
    ck_assert_int_eq(B->alloc(0, bytes, &buf), AG_OK);
    unsigned char *fill = NULL;
    if (!host) {
        fill = malloc(bytes);
        ck_assert_ptr_nonnull(fill);
        memset(fill, 0xab, bytes);
        host = fill;
    }
    ck_assert_int_eq(B->copy_from_host(0, buf, 0, host, bytes), AG_OK);
    free(fill);
    return buf;
}

/* Runs copy (key: the output's dtype) from `in` to `out`, and waits for it. */
static void run_copy(const ag_kernel_tensor *in, const ag_kernel_tensor *out) {
    ag_kernel_fn fn = NULL;
    ck_assert_msg(B->get_kernel("copy", out->dtype, &fn) == AG_OK, "copy %s: %s",
                  ag_dtype_name(out->dtype), B->last_error());
    const ag_attrs attrs = {{0}, {0}};
    const ag_kernel_args args = {.struct_size = sizeof args,
                                 .n_inputs = 1,
                                 .n_outputs = 1,
                                 .inputs = in,
                                 .outputs = out,
                                 .attrs = &attrs};
    ck_assert_msg(fn(&args) == AG_OK, "copy %s -> %s: %s", ag_dtype_name(in->dtype),
                  ag_dtype_name(out->dtype), B->last_error());
    ck_assert_int_eq(B->synchronize(0), AG_OK);
}

/* Copies n contiguous elements of dtype `from` (host values `src`) to `to` on the device and
 * returns the result's bytes (malloc'd). */
static void *convert(ag_dtype from, ag_dtype to, const void *src, int64_t n) {
    void *a = dev_buffer(from, n, src), *b = dev_buffer(to, n, NULL);
    const int64_t shape[1] = {n};
    const ag_kernel_tensor in = dev_view(a, from, 1, shape, NULL, 0),
                           out = dev_view(b, to, 1, shape, NULL, 0);
    run_copy(&in, &out);
    void *back = malloc((size_t)n * ag_dtype_size(to));
    ck_assert_ptr_nonnull(back);
    ck_assert_int_eq(B->copy_to_host(0, back, b, 0, (size_t)n * ag_dtype_size(to)), AG_OK);
    B->free(0, a, (size_t)n * ag_dtype_size(from));
    B->free(0, b, (size_t)n * ag_dtype_size(to));
    return back;
}

/* float -> int64 as every backend's copy: toward zero, NaN 0, saturating. */
static int64_t to_i64(double x) {
    if (isnan(x)) return 0;
    if (x >= 9223372036854775808.0) return INT64_MAX;
    if (x < -9223372036854775808.0) return INT64_MIN;
    return (int64_t)x;
}

/* float32 values (as bits) that exercise the rounding of both 16-bit formats. */
static const uint32_t g_special_f32[] = {
    0x00000000, 0x80000000,             /* +0, -0 */
    0x33800000, 0xb3800000,             /* 2^-24: the smallest float16 subnormal */
    0x33000000, 0x33000001, 0x32ffffff, /* 2^-25: a tie to 0, just above, just below */
    0x33c00000, 0x34200000,             /* 3 and 5 * 2^-25: subnormal ties to 2 and 2 units */
    0x387fc000, 0x387ff000, 0x387fe000, /* 1023 units (largest subnormal), 1023.75, 1023.5 */
    0x38800000, 0x35000000,             /* 2^-14 (smallest normal), a mid subnormal */
    0x3f801000, 0x3f803000, 0x3f801001, /* 1 + 2^-11 (tie down), 1 + 3*2^-11 (up), above */
    0x477fe000, 0x477fefff, 0x477ff000, /* 65504, just below 65520, 65520 (-> inf) */
    0xc77ff000, 0x7f7fffff, 0xff7fffff, /* -65520, +-max float */
    0x7f800000, 0xff800000,             /* +-inf */
    0x7fc00000, 0xffc00000, 0x7f800001, /* quiet NaNs, a signalling NaN */
    0x7fbfffff, 0xff800001,             /* NaNs whose payload sits in the low bits */
    0x3f808000, 0x3f818000, 0x3f808001, /* bfloat16 ties: down to even, up to even, above */
    0x3f7f8000, 0xbf808000,             /* a bfloat16 tie that carries, a negative tie */
    0x3eaaaaab, 0xc0200000,             /* 1/3, -2.5 */
    0x00000001, 0x807fffff, 0x00400000, /* float32 subnormals */
    0x501502f9, 0xd01502f9, 0x5f000000, /* +-1e10, 2^63 */
    0x4b800001, 0x3dcccccd, 0x42f6e979, /* 2^24 + 2 (bits), 0.1, 123.456 */
};
#define N_SPECIAL ((int64_t)(sizeof g_special_f32 / sizeof g_special_f32[0]))

/* Names a mismatch: what was converted to what, and the input's bits. */
#define ASSERT_BITS(got, want, from_name, to_name, in_bits)                                        \
    ck_assert_msg((got) == (want), "%s -> %s of 0x%llx: got 0x%llx, want 0x%llx", from_name,       \
                  to_name, (unsigned long long)(in_bits), (unsigned long long)(got),               \
                  (unsigned long long)(want))

START_TEST(test_copy_f32_to_16bit) {
    float src[N_SPECIAL];
    for (int64_t i = 0; i < N_SPECIAL; i++) src[i] = ag_f32_from_bits(g_special_f32[i]);
    uint16_t *h = convert(AG_F32, AG_F16, src, N_SPECIAL);
    uint16_t *bh = convert(AG_F32, AG_BF16, src, N_SPECIAL);
    for (int64_t i = 0; i < N_SPECIAL; i++) {
        ASSERT_BITS(h[i], ag_f32_to_f16(src[i]), "float32", "float16", g_special_f32[i]);
        ASSERT_BITS(bh[i], ag_f32_to_bf16(src[i]), "float32", "bfloat16", g_special_f32[i]);
    }
    /* Spot checks of the reference itself. */
    ck_assert_uint_eq(h[0], 0x0000);
    ck_assert_uint_eq(h[1], 0x8000);
    ck_assert_uint_eq(h[2], 0x0001);  /* 2^-24 */
    ck_assert_uint_eq(h[4], 0x0000);  /* 2^-25 ties to even: zero */
    ck_assert_uint_eq(h[5], 0x0001);  /* just above the tie */
    ck_assert_uint_eq(h[7], 0x0002);  /* 3 * 2^-25 ties up to 2 units */
    ck_assert_uint_eq(h[8], 0x0002);  /* 5 * 2^-25 ties down to 2 units */
    ck_assert_uint_eq(h[10], 0x0400); /* rounds up into the normals */
    ck_assert_uint_eq(h[11], 0x0400); /* the tie 1023.5 units goes to even 1024: 2^-14 */
    ck_assert_uint_eq(h[14], 0x3c00);
    ck_assert_uint_eq(h[15], 0x3c02);
    ck_assert_uint_eq(h[17], 0x7bff); /* 65504 */
    ck_assert_uint_eq(h[18], 0x7bff);
    ck_assert_uint_eq(h[19], 0x7c00); /* 65520: inf */
    ck_assert_uint_eq(h[20], 0xfc00);
    ck_assert_uint_eq(h[25], 0x7e00); /* NaN */
    ck_assert_uint_eq(bh[25], 0x7fc0);
    ck_assert_uint_eq(bh[27], 0x7fc0); /* a signalling NaN comes back quiet */
    ck_assert_uint_eq(bh[30], 0x3f80); /* bfloat16 ties */
    ck_assert_uint_eq(bh[31], 0x3f82);
    ck_assert_uint_eq(bh[32], 0x3f81);
    ck_assert_uint_eq(bh[21], 0x7f80); /* max float rounds to inf */
    free(h);
    free(bh);
}
END_TEST

/* Every one of the 65536 bit patterns of float16 and of bfloat16 to every dtype. */
START_TEST(test_copy_16bit_exhaustive) {
    enum { N = 65536 };
    uint16_t *all = malloc(N * sizeof *all);
    ck_assert_ptr_nonnull(all);
    for (int i = 0; i < N; i++) all[i] = (uint16_t)i;
    for (int fi = 0; fi < 2; fi++) {
        const ag_dtype from = fi ? AG_BF16 : AG_F16;
        const char *name = ag_dtype_name(from);
        float *f = convert(from, AG_F32, all, N);
        double *d = convert(from, AG_F64, all, N);
        int64_t *l = convert(from, AG_I64, all, N);
        uint16_t *same = convert(from, from, all, N);
        uint16_t *other = convert(from, fi ? AG_F16 : AG_BF16, all, N);
        for (int i = 0; i < N; i++) {
            const float want = fi ? ag_bf16_to_f32(all[i]) : ag_f16_to_f32(all[i]);
            ASSERT_BITS(ag_f32_bits(f[i]), ag_f32_bits(want), name, "float32", i);
            uint64_t got_d, want_d;
            const double wd = want;
            memcpy(&got_d, &d[i], sizeof got_d);
            memcpy(&want_d, &wd, sizeof want_d);
            if (!isnan(wd))
                ASSERT_BITS(got_d, want_d, name, "float64", i);
            else
                ck_assert_msg(isnan(d[i]) && !signbit(d[i]) == !signbit(wd), "%s 0x%x", name, i);
            ASSERT_BITS(l[i], to_i64(want), name, "int64", i);
            ASSERT_BITS(same[i], all[i], name, name, i); /* bits kept, NaN payloads too */
            const uint16_t want_other = fi ? ag_f32_to_f16(want) : ag_f32_to_bf16(want);
            ASSERT_BITS(other[i], want_other, name, fi ? "float16" : "bfloat16", i);
        }
        free(f);
        free(d);
        free(l);
        free(same);
        free(other);
    }
    free(all);
}
END_TEST

/* float64 and int64 round to float32 first (as PyTorch), then to 16 bits. */
START_TEST(test_copy_f64_i64_to_16bit) {
    const double dv[] = {
        0.0,
        -0.0,
        1.0 / 3,
        -2.5,
        65504.0,
        65519.999,
        65520.0,
        1e300,
        -1e300,
        INFINITY,
        -INFINITY,
        NAN,
        5.960464477539063e-08,   /* 2^-24 */
        1.0 + 0x1p-11 + 0x1p-40, /* float32 rounds to the float16 tie 1 + 2^-11: 1.0 (not up) */
        1.0 + 0x1p-8 + 0x1p-30,  /* the same for bfloat16: 1.0 */
        0x1p-150,                /* below float32's subnormals: 0 */
        3.0e-45,
        1e-8};
    const int64_t lv[] = {0,         1,         -1,        2049,       2051,     65504,
                          65519,     65520,     -65520,    257,        16777217, (1 << 24) + 3,
                          INT64_MAX, INT64_MIN, 123456789, -987654321, 100000,   -33};
    const int64_t nd = sizeof dv / sizeof dv[0], nl = sizeof lv / sizeof lv[0];
    for (int ti = 0; ti < 2; ti++) {
        const ag_dtype to = ti ? AG_BF16 : AG_F16;
        uint16_t *hd = convert(AG_F64, to, dv, nd), *hl = convert(AG_I64, to, lv, nl);
        for (int64_t i = 0; i < nd; i++) {
            const float f = (float)dv[i];
            uint64_t bits;
            memcpy(&bits, &dv[i], sizeof bits);
            ASSERT_BITS(hd[i], ti ? ag_f32_to_bf16(f) : ag_f32_to_f16(f), "float64",
                        ag_dtype_name(to), bits);
        }
        for (int64_t i = 0; i < nl; i++) {
            const float f = (float)lv[i];
            ASSERT_BITS(hl[i], ti ? ag_f32_to_bf16(f) : ag_f32_to_f16(f), "int64",
                        ag_dtype_name(to), lv[i]);
        }
        ck_assert_uint_eq(hd[13], ti ? 0x3f80 : 0x3c00); /* through float32 */
        ck_assert_uint_eq(hd[14], ti ? 0x3f80 : 0x3c04);
        ck_assert_uint_eq(hl[3], ti ? 0x4500 : 0x6800); /* 2049: f16 tie to 2048 */
        ck_assert_uint_eq(hl[7], ti ? 0x4780 : 0x7c00); /* 65520 */
        free(hd);
        free(hl);
    }
}
END_TEST

/* Strided views: a transposed float32 input with an offset into a float16 output, a
 * float16 / bfloat16 input read transposed, and a 16-bit output written every other
 * element, whose untouched neighbours must keep their bits. */
START_TEST(test_copy_16bit_strided) {
    enum { R = 5, C = 7 };
    float m[3 + R * C];
    for (int i = 0; i < 3 + R * C; i++) m[i] = ag_f32_from_bits(g_special_f32[i % N_SPECIAL]);
    for (int ti = 0; ti < 2; ti++) {
        const ag_dtype h16 = ti ? AG_BF16 : AG_F16;
        void *src = dev_buffer(AG_F32, 3 + R * C, m);
        void *dst = dev_buffer(h16, 2 * R * C, NULL);
        /* in[c][r] = m[3 + r*C + c]: shape [C, R], strides [1, C], offset 3; out every
         * other element: strides [2R, 2], offset 1. */
        const ag_kernel_tensor in =
            dev_view(src, AG_F32, 2, (const int64_t[]){C, R}, (const int64_t[]){1, C}, 3);
        const ag_kernel_tensor out =
            dev_view(dst, h16, 2, (const int64_t[]){C, R}, (const int64_t[]){2 * R, 2}, 1);
        run_copy(&in, &out);
        uint16_t back[2 * R * C];
        ck_assert_int_eq(B->copy_to_host(0, back, dst, 0, sizeof back), AG_OK);
        for (int c = 0; c < C; c++)
            for (int r = 0; r < R; r++) {
                const float x = m[3 + r * C + c];
                const uint16_t want = ti ? ag_f32_to_bf16(x) : ag_f32_to_f16(x);
                ASSERT_BITS(back[1 + c * 2 * R + r * 2], want, "float32 (transposed)",
                            ag_dtype_name(h16), ag_f32_bits(x));
                ck_assert_uint_eq(back[c * 2 * R + r * 2], 0xabab); /* untouched */
            }

        /* Back from the strided 16-bit view, read transposed, to a contiguous float64. */
        void *d64 = dev_buffer(AG_F64, R * C, NULL);
        const ag_kernel_tensor in16 =
            dev_view(dst, h16, 2, (const int64_t[]){R, C}, (const int64_t[]){2, 2 * R}, 1);
        const ag_kernel_tensor out64 = dev_view(d64, AG_F64, 2, (const int64_t[]){R, C}, NULL, 0);
        run_copy(&in16, &out64);
        double d[R * C];
        ck_assert_int_eq(B->copy_to_host(0, d, d64, 0, sizeof d), AG_OK);
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c++) {
                const uint16_t h = back[1 + c * 2 * R + r * 2];
                const double want = ti ? ag_bf16_to_f32(h) : ag_f16_to_f32(h);
                ck_assert_msg(d[r * C + c] == want || (isnan(want) && isnan(d[r * C + c])),
                              "%s 0x%x -> float64: got %g, want %g", ag_dtype_name(h16), h,
                              d[r * C + c], want);
            }
        B->free(0, src, sizeof m);
        B->free(0, dst, sizeof back);
        B->free(0, d64, sizeof d);
    }
}
END_TEST

int run_init_child(const char *env, char *out, size_t size) {
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    const pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        putenv((char *)env);
        execl("/proc/self/exe", "test_device_backend", "--init-only", g_lib_path, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    size_t used = 0;
    ssize_t r;
    while (used + 1 < size && (r = read(fds[0], out + used, size - 1 - used)) > 0)
        used += (size_t)r;
    out[used] = '\0';
    close(fds[0]);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* The tests every device backend passes. */
static TCase *common_tcase(void) {
    TCase *t = tcase_create("abi");
    tcase_add_test(t, test_iface_and_devices);
    tcase_add_test(t, test_copy_round_trips);
    tcase_add_test(t, test_copy_offsets_and_overlap);
    tcase_add_test(t, test_stats);
    tcase_add_test(t, test_out_of_memory);
    tcase_add_test(t, test_threads);
    tcase_add_test(t, test_get_kernel_errors);
    tcase_add_test(t, test_copy_f32_to_16bit);
    tcase_add_test(t, test_copy_16bit_exhaustive);
    tcase_add_test(t, test_copy_f64_i64_to_16bit);
    tcase_add_test(t, test_copy_16bit_strided);
    return t;
}

/* Loads the backend table from path; NULL with a message on failure. */
static const ag_backend_iface *load(const char *path) {
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "cannot load %s: %s\n", path, dlerror());
        return NULL;
    }
    ag_backend_entry_fn entry = (ag_backend_entry_fn)dlsym(lib, AG_BACKEND_ENTRY_SYMBOL);
    return entry ? entry(AG_BACKEND_ABI_MAJOR, AG_BACKEND_ABI_MINOR) : NULL;
}

/* Runs the tcases of suite `name`; returns the number of failures. */
static int run(const char *name, TCase *const *tcases, int n) {
    Suite *s = suite_create(name);
    for (int i = 0; i < n; i++) {
        if (!tcases[i]) continue;
        tcase_set_timeout(tcases[i], 120); /* first builds compile with LLVM or NVRTC */
        suite_add_tcase(s, tcases[i]);
    }
    SRunner *runner = srunner_create(s);
    /* No fork per test: a forked child would lose the driver's worker threads. */
    srunner_set_fork_status(runner, CK_NOFORK);
    srunner_run_all(runner, CK_NORMAL);
    const int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed;
}

int main(int argc, char **argv) {
    /* Child mode of the no-platform / no-device tests: init only, print its message, exit 1
     * if it failed. */
    if (argc > 2 && strcmp(argv[1], "--init-only") == 0) {
        B = load(argv[2]);
        if (!B) return 2;
        const ag_status st = B->init();
        printf("%s\n", st == AG_OK ? "init succeeded" : B->last_error());
        return st == AG_OK ? 0 : 1;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: %s path/to/libag_backend_<name>.so [offline]\n", argv[0]);
        return 2;
    }
    g_lib_path = argv[1];
    B = load(g_lib_path);
    if (!B) return 2;
    /* "cuda" and the test-only "cudaemu" (the same code on the CPU, tests/cuda_emu). */
    const bool is_cuda = strncmp(B->name, "cuda", 4) == 0;
    if (argc > 2 && strcmp(argv[2], "offline") == 0) {
        TCase *offline = is_cuda ? cuda_offline_tcase() : opencl_offline_tcase();
        return run("offline", &offline, 1) ? 1 : 0;
    }
    const ag_status st = B->init();
    if (st != AG_OK) {
        const char *why = B->last_error();
        if (st == AG_ERR_DEVICE) {
            printf("skipped: %s\n", why);
            return SKIP;
        }
        fprintf(stderr, "cannot start the %s backend: %s\n", B->name, why);
        return 2;
    }
    TCase *tcases[] = {common_tcase(), is_cuda ? cuda_device_tcase() : opencl_device_tcase()};
    const int failed = run(B->name, tcases, 2);
    B->shutdown();
    return failed ? 1 : 0;
}
