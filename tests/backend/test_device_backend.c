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

#include <check.h>
#include <dlfcn.h>
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
    /* A kernel that exists (once the tables are filled) has no float16 version. */
    if (B->get_kernel("add", AG_F32, &fn) == AG_OK)
        assert_error(B->get_kernel("add", AG_F16, &fn), AG_ERR_UNSUPPORTED,
                     "no kernel 'add' for float16 (it has ");
    ck_assert_ptr_null(B->get_proc_address("ag_host_memory")); /* buffers are the device's */
    ck_assert_ptr_null(B->get_proc_address("nope"));
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
