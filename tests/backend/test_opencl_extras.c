/* The OpenCL backend's own tests, beside the common ones of test_device_backend.c: program
 * builds and their logs (through the "ocl_build_test" extra), the disk cache of program
 * binaries, a read past a buffer, and init without a platform (in a child process). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "device_backend_extras.h"

/* The "ocl_build_test" extra: builds source for float32 and creates kernel `name`. */
typedef ag_status (*build_test_fn)(int device, const char *source, const char *name);

START_TEST(test_read_past_buffer) {
    /* Past the buffer, even past its rounded size class: the driver's error, naming the
     * slot. */
    void *buf = NULL;
    int back[8];
    ck_assert_int_eq(B->alloc(0, 64 * sizeof(int), &buf), AG_OK);
    assert_error(B->copy_to_host(0, back, buf, 4096 + 60 * sizeof(int), sizeof back),
                 AG_ERR_INTERNAL, "copy_to_host");
    B->free(0, buf, 64 * sizeof(int));
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

START_TEST(test_no_platform) {
    char out[1024];
    /* OCL_ICD_VENDORS pointing nowhere: the ICD loader then finds no platform. */
    ck_assert_int_eq(run_init_child("OCL_ICD_VENDORS=/nonexistent", out, sizeof out), 1);
    printf("without a platform: %s", out);
    ck_assert_msg(strstr(out, "no OpenCL platform"), "child said '%s'", out);
}
END_TEST

TCase *opencl_device_tcase(void) {
    TCase *t = tcase_create("opencl");
    tcase_add_test(t, test_read_past_buffer);
    tcase_add_test(t, test_build_failure);
    tcase_add_test(t, test_disk_cache);
    return t;
}

TCase *opencl_offline_tcase(void) {
    TCase *t = tcase_create("opencl_offline");
    tcase_add_test(t, test_no_platform);
    return t;
}
