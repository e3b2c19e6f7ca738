/* Unit tests of the OpenCL backend library on its own: dlopens libag_backend_opencl.so (path
 * in argv[1] or $AG_OPENCL_BACKEND_LIB) and drives the ABI table directly: devices, memory,
 * copies, allocator statistics, out-of-memory, kernel lookup, build failures (through the
 * "ocl_build_test" extra), the disk cache of program binaries and init without a platform
 * (in a child process). Exits 77 (skipped) when the machine has no OpenCL device. */
#include "ag/backend.h"

#include <check.h>
#include <dirent.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SKIP 77 /* ctest's SKIP_RETURN_CODE */

static const ag_backend_iface *B;
static const char *g_lib_path;

/* The "ocl_build_test" extra: builds source for float32 and creates kernel `name`. */
typedef ag_status (*build_test_fn)(int device, const char *source, const char *name);

static void assert_error(ag_status st, ag_status want, const char *fragment) {
    ck_assert_msg(st == want, "status %d, want %d (%s)", st, want, B->last_error());
    ck_assert_msg(strstr(B->last_error(), fragment), "message '%s' lacks '%s'", B->last_error(),
                  fragment);
}

static ag_memory_stats stats(int device) {
    ag_memory_stats s = {.struct_size = sizeof s};
    ck_assert_int_eq(B->memory_stats(device, &s), AG_OK);
    return s;
}

/* ---- the table and devices ---- */

START_TEST(test_iface_and_devices) {
    ck_assert_uint_eq(B->struct_size, sizeof(ag_backend_iface));
    ck_assert_uint_eq(B->abi_major, AG_BACKEND_ABI_MAJOR);
    ck_assert_str_eq(B->name, "opencl");
    ck_assert(B->init && B->shutdown && B->last_error && B->device_count && B->device_info &&
              B->alloc && B->free && B->copy_from_host && B->copy_to_host && B->copy_device &&
              B->synchronize && B->get_kernel && B->memory_stats && B->empty_cache &&
              B->get_proc_address);
    const int n = B->device_count();
    ck_assert_int_ge(n, 1);
    for (int d = 0; d < n; d++) {
        ag_device_info info = {.struct_size = sizeof info};
        ck_assert_int_eq(B->device_info(d, &info), AG_OK);
        printf("opencl:%d  %s, %d compute units, %llu bytes\n", d, info.name, info.compute_units,
               (unsigned long long)info.total_memory);
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
    ck_assert_ptr_null(dlsym(lib, "ocl_fail"));
    ck_assert_ptr_null(dlsym(lib, "ocl_alloc"));
    ck_assert_ptr_null(dlsym(lib, "ocl_source_common"));
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
    assert_error(B->copy_to_host(0, back, buf, 60 * sizeof(int), 8 * sizeof(int)), AG_ERR_INTERNAL,
                 "copy_to_host");
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
    /* Size classes round up by at most 25% (256-byte steps below 4 KiB). */
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
    ck_assert_ptr_nonnull(B->get_proc_address("ocl_build_test"));
    ck_assert_ptr_null(B->get_proc_address("ag_host_memory")); /* buffers are cl_mem */
    ck_assert_ptr_null(B->get_proc_address("nope"));
}
END_TEST

static const char good_source[] =
    "__kernel void scale(__global T *x, const ag_view v, const T a) {\n"
    "    long i = get_global_id(0);\n"
    "    if (i < ag_numel(v)) x[ag_at(v, i)] *= a;\n"
    "}\n";

START_TEST(test_build_failure) {
    build_test_fn build = (build_test_fn)B->get_proc_address("ocl_build_test");
    ck_assert_ptr_nonnull(build);
    ck_assert_msg(build(0, good_source, "scale") == AG_OK, "%s", B->last_error());
    /* The build log names the undeclared identifier; the message carries the log. */
    static const char bad[] = "__kernel void broken(__global T *x) {\n"
                              "    x[0] = not_declared_anywhere + 1;\n"
                              "}\n";
    const ag_status st = build(0, bad, "broken");
    printf("build failure message: %s\n", B->last_error());
    assert_error(st, AG_ERR_INTERNAL, "not_declared_anywhere");
    assert_error(build(0, bad, "broken"), AG_ERR_INTERNAL, "build log"); /* not cached */
    ck_assert(strstr(B->last_error(), "'broken'") && strstr(B->last_error(), "float32"));
    /* A kernel missing from a program that builds. */
    assert_error(build(0, good_source, "absent"), AG_ERR_INTERNAL, "CL_INVALID_KERNEL_NAME");
    assert_error(build(B->device_count(), good_source, "scale"), AG_ERR_DEVICE, "device");
}
END_TEST

/* Path of the one file in dir (the cache holds one program here); false if not exactly one. */
static int only_file(const char *dir, char *path, size_t size) {
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int count = 0;
    for (const struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, size, "%s/%s", dir, e->d_name);
        count++;
    }
    closedir(d);
    return count == 1;
}

/* Reads a whole small file; returns its size (0 if missing). */
static size_t read_file(const char *path, char *buf, size_t size) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    const size_t n = fread(buf, 1, size, f);
    fclose(f);
    return n;
}

/* Restarts the backend, which empties the in-memory program cache. */
static void restart(void) {
    B->shutdown();
    ck_assert_msg(B->init() == AG_OK, "%s", B->last_error());
}

START_TEST(test_disk_cache) {
    char dir[] = "/tmp/ag_ocl_cache_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    setenv("AG_OPENCL_CACHE_DIR", dir, 1);
    build_test_fn build = (build_test_fn)B->get_proc_address("ocl_build_test");
    /* A source of its own, so no earlier build of this process is cached in memory. */
    static const char source[] = "__kernel void cached(__global T *x) { x[0] = (T)42; }\n";
    ck_assert_msg(build(0, source, "cached") == AG_OK, "%s", B->last_error());
    char path[512];
    ck_assert(only_file(dir, path, sizeof path));
    static char first[1 << 22], again[1 << 22];
    const size_t n = read_file(path, first, sizeof first);
    ck_assert_uint_gt(n, 32);
    ck_assert_mem_eq(first, "AGOCLBN1", 8);
    struct stat st0;
    ck_assert_int_eq(stat(path, &st0), 0);

    /* Loaded from the file: it is left as it was. */
    restart();
    ck_assert_msg(build(0, source, "cached") == AG_OK, "%s", B->last_error());
    struct stat st1;
    ck_assert_int_eq(stat(path, &st1), 0);
    ck_assert_int_eq(st1.st_ino, st0.st_ino);

    /* A corrupt file is ignored and replaced by a good one. */
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    fseek(f, 40, SEEK_SET);
    fputs("garbage", f);
    fclose(f);
    restart();
    ck_assert_msg(build(0, source, "cached") == AG_OK, "%s", B->last_error());
    ck_assert(only_file(dir, path, sizeof path));
    ck_assert_uint_eq(read_file(path, again, sizeof again), n);
    ck_assert_mem_eq(again, "AGOCLBN1", 8);
    /* A truncated file too. */
    ck_assert_int_eq(truncate(path, 20), 0);
    restart();
    ck_assert_msg(build(0, source, "cached") == AG_OK, "%s", B->last_error());
    ck_assert(only_file(dir, path, sizeof path)); /* no temporary left behind */
    ck_assert_uint_eq(read_file(path, again, sizeof again), n);

    unsetenv("AG_OPENCL_CACHE_DIR");
    unlink(path);
    rmdir(dir);
}
END_TEST

/* Starts this program as a child that only runs init, with OCL_ICD_VENDORS pointing
 * nowhere (the ICD loader then finds no platform); returns what it printed. */
static void run_no_platform_child(char *out, size_t size) {
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    const pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        setenv("OCL_ICD_VENDORS", "/nonexistent", 1);
        execl("/proc/self/exe", "test_opencl_backend", "--init-only", g_lib_path, (char *)NULL);
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
    ck_assert_int_eq(WEXITSTATUS(status), 1); /* init failed */
}

START_TEST(test_no_platform) {
    char out[1024];
    run_no_platform_child(out, sizeof out);
    printf("without a platform: %s", out);
    ck_assert_msg(strstr(out, "no OpenCL platform"), "child said '%s'", out);
}
END_TEST

static Suite *opencl_suite(void) {
    Suite *s = suite_create("opencl_backend");
    TCase *t = tcase_create("core");
    tcase_set_timeout(t, 120); /* the first program build compiles with LLVM */
    tcase_add_test(t, test_iface_and_devices);
    tcase_add_test(t, test_copy_round_trips);
    tcase_add_test(t, test_copy_offsets_and_overlap);
    tcase_add_test(t, test_stats);
    tcase_add_test(t, test_out_of_memory);
    tcase_add_test(t, test_threads);
    tcase_add_test(t, test_get_kernel_errors);
    tcase_add_test(t, test_build_failure);
    tcase_add_test(t, test_disk_cache);
    tcase_add_test(t, test_no_platform);
    suite_add_tcase(s, t);
    return s;
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

int main(int argc, char **argv) {
    /* Child mode of test_no_platform: init only, print its message, exit 1 if it failed. */
    if (argc > 2 && strcmp(argv[1], "--init-only") == 0) {
        B = load(argv[2]);
        if (!B) return 2;
        const ag_status st = B->init();
        printf("%s\n", st == AG_OK ? "init succeeded" : B->last_error());
        return st == AG_OK ? 0 : 1;
    }
    g_lib_path = argc > 1 ? argv[1] : getenv("AG_OPENCL_BACKEND_LIB");
    if (!g_lib_path) {
        fprintf(stderr,
                "usage: %s path/to/libag_backend_opencl.so (or set AG_OPENCL_BACKEND_LIB)\n",
                argv[0]);
        return 2;
    }
    B = load(g_lib_path);
    if (!B) return 2;
    if (B->init() != AG_OK) {
        const char *why = B->last_error();
        if (strstr(why, "no OpenCL platform") || strstr(why, "no OpenCL device")) {
            printf("skipped: %s\n", why);
            return SKIP;
        }
        fprintf(stderr, "cannot start the opencl backend: %s\n", why);
        return 2;
    }
    SRunner *runner = srunner_create(opencl_suite());
    /* No fork per test: a forked child would lose the driver's worker threads. */
    srunner_set_fork_status(runner, CK_NOFORK);
    srunner_run_all(runner, CK_NORMAL);
    const int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    B->shutdown();
    return failed ? 1 : 0;
}
