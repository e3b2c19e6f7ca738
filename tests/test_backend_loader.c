/* Tests of the backend loader (core/backend_loader.c) and of `ag info`.
 *
 * AG_BACKEND_PATH points at a fresh temporary directory (for files made at test time)
 * and at the fixture backends built beside this test (tests/fixtures). Check runs every
 * test in its own process; the teardown also resets the loader for CK_FORK=no. */
#include <check.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "ag/ag.h"
#include "ag/backend.h"
#include "test_util.h"
#include "backend_loader.h"

/* From CMake: AG_TEST_FIXTURES, AG_TEST_LIBDIR, AG_TEST_INSTALL_DIR, AG_TEST_CLI. */

static char tmp[64];                /* per-test temporary directory */
static char libdir[PATH_MAX];       /* canonical directory of libag */
static char path_var[PATH_MAX * 2]; /* the AG_BACKEND_PATH of the tests */

#define assert_has(text, needle)                                                                   \
    ck_assert_msg(strstr((text), (needle)) != NULL, "'%s'\ndoes not contain '%s'", (text), (needle))

static void setup(void) {
    snprintf(tmp, sizeof tmp, "/tmp/ag_loader_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp));
    ck_assert_ptr_nonnull(realpath(AG_TEST_LIBDIR, libdir));
    snprintf(path_var, sizeof path_var, "%s:%s", tmp, AG_TEST_FIXTURES);
    setenv("AG_BACKEND_PATH", path_var, 1);
    unsetenv("AG_BACKEND");
    ag_clear_error();
}

/* Path of `file` inside the temporary directory. */
static const char *in_tmp(const char *file, char *buf, size_t size) {
    snprintf(buf, size, "%s/%s", tmp, file);
    return buf;
}

static void teardown(void) {
    static const char *const made[] = {"libag_backend_garbage.so", "libag_backend_renamed.so"};
    char buf[PATH_MAX];
    for (size_t i = 0; i < sizeof made / sizeof made[0]; i++)
        unlink(in_tmp(made[i], buf, sizeof buf));
    rmdir(tmp);
    ag__backends_shutdown();
    ag_set_default_device((ag_device){-1, -1});
    ag_clear_error();
}

/* Writes `size` bytes of data to a file in the temporary directory. */
static void write_tmp(const char *file, const void *data, size_t size) {
    char buf[PATH_MAX];
    FILE *f = fopen(in_tmp(file, buf, sizeof buf), "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, size, f), size);
    fclose(f);
}

/* Copies a fixture library into the temporary directory under another name. */
static void copy_fixture(const char *from, const char *to) {
    char src[PATH_MAX];
    snprintf(src, sizeof src, "%s/%s", AG_TEST_FIXTURES, from);
    FILE *f = fopen(src, "rb");
    ck_assert_ptr_nonnull(f);
    static char data[1 << 22];
    size_t n = fread(data, 1, sizeof data, f);
    fclose(f);
    ck_assert_uint_lt(n, sizeof data);
    write_tmp(to, data, n);
}

/* Asserts the last error names every searched path for backend `name`, in order. */
static void assert_names_every_path(const char *msg, const char *name) {
    char libdir_ag[PATH_MAX + 4];
    snprintf(libdir_ag, sizeof libdir_ag, "%s/ag", libdir);
    const char *dirs[] = {tmp, AG_TEST_FIXTURES, libdir, libdir_ag, AG_TEST_INSTALL_DIR};
    const char *last = msg;
    char path[PATH_MAX];
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(path, sizeof path, "%s/libag_backend_%s.so", dirs[i], name);
        const char *at = strstr(msg, path);
        ck_assert_msg(at != NULL, "'%s'\ndoes not name %s", msg, path);
        ck_assert_msg(at >= last, "'%s'\nnames %s out of order", msg, path);
        last = at;
    }
}

START_TEST(search_dirs_in_order_without_duplicates) {
    char want[PATH_MAX * 4], got[PATH_MAX * 4];
    snprintf(path_var, sizeof path_var, "%s::%s:%s", tmp, AG_TEST_FIXTURES, tmp);
    setenv("AG_BACKEND_PATH", path_var, 1);
    snprintf(want, sizeof want, "%s:%s:%s:%s/ag:%s", tmp, AG_TEST_FIXTURES, libdir, libdir,
             AG_TEST_INSTALL_DIR);
    ck_assert_int_eq(ag__backend_search_dirs(got, sizeof got), AG_OK);
    ck_assert_str_eq(got, want);
    ck_assert_int_eq(ag__backend_search_dirs(got, 8), AG_ERR_INVALID_ARG);
}
END_TEST

START_TEST(missing_backend_names_it_and_every_path) {
    int index = -1;
    ck_assert_int_eq(ag_backend_load("nope", &index), AG_ERR_BACKEND_LOAD);
    ck_assert_int_eq(ag_last_status(), AG_ERR_BACKEND_LOAD);
    assert_has(ag_last_error(), "'nope'");
    assert_has(ag_last_error(), "no such file");
    assert_names_every_path(ag_last_error(), "nope");
    ck_assert_int_eq(index, -1);
    ck_assert_int_eq(ag_backend_count(), 0);
}
END_TEST

START_TEST(invalid_names_are_refused) {
    int index;
    const char *bad[] = {"", "CPU", "../cpu", "cpu.so", "a-b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ag_clear_error();
        ck_assert_int_eq(ag_backend_load(bad[i], &index), AG_ERR_INVALID_ARG);
        assert_has(ag_last_error(), "invalid backend name");
    }
    ck_assert_int_eq(ag_backend_load(NULL, &index), AG_ERR_INVALID_ARG);
}
END_TEST

START_TEST(other_abi_major_is_refused) {
    int index;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/libag_backend_badmajor.so", AG_TEST_FIXTURES);
    ck_assert_int_eq(ag_backend_load("badmajor", &index), AG_ERR_ABI);
    assert_has(ag_last_error(), "'badmajor'");
    assert_has(ag_last_error(), path);
    assert_has(ag_last_error(), "ABI 99.3");
    assert_has(ag_last_error(),
               "uses ABI " AG_TEST_STR(AG_BACKEND_ABI_MAJOR) "." AG_TEST_STR(AG_BACKEND_ABI_MINOR));
    assert_names_every_path(ag_last_error(), "badmajor");
    ck_assert_int_eq(ag_backend_count(), 0);
}
END_TEST

START_TEST(library_without_entry_symbol_is_refused) {
    int index;
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/libag_backend_noentry.so: no symbol ag_backend_entry",
             AG_TEST_FIXTURES);
    ck_assert_int_eq(ag_backend_load("noentry", &index), AG_ERR_BACKEND_LOAD);
    assert_has(ag_last_error(), "'noentry'");
    assert_has(ag_last_error(), path);
}
END_TEST

START_TEST(non_elf_file_reports_dlerror) {
    static const char text[] = "this is not a shared library, only text long enough for a "
                               "header check that dlopen makes first\n";
    int index;
    char path[PATH_MAX];
    write_tmp("libag_backend_garbage.so", text, sizeof text);
    ck_assert_int_eq(ag_backend_load("garbage", &index), AG_ERR_BACKEND_LOAD);
    assert_has(ag_last_error(), in_tmp("libag_backend_garbage.so: ", path, sizeof path));
    assert_has(ag_last_error(), "ELF"); /* dlerror's "invalid ELF header" */
    assert_names_every_path(ag_last_error(), "garbage");
}
END_TEST

START_TEST(table_with_another_name_is_refused) {
    int index;
    copy_fixture("libag_backend_partial.so", "libag_backend_renamed.so");
    ck_assert_int_eq(ag_backend_load("renamed", &index), AG_ERR_BACKEND_LOAD);
    assert_has(ag_last_error(), "names the backend 'partial', not 'renamed'");
}
END_TEST

START_TEST(failed_init_reports_backend_error_and_leaves_table) {
    int index;
    ck_assert_int_eq(ag_backend_load("partial", &index), AG_OK);
    ck_assert_int_eq(ag_backend_load("initfail", &index), AG_ERR_BACKEND_LOAD);
    assert_has(ag_last_error(), "'initfail'");
    assert_has(ag_last_error(), "AG_ERR_INTERNAL");
    assert_has(ag_last_error(), "no frobnicator on this machine");
    ck_assert_int_eq(ag_backend_load("badmajor", &index), AG_ERR_ABI);
    ck_assert_int_eq(ag_backend_count(), 1);
    ck_assert_str_eq(ag_backend_name(0), "partial");
    ck_assert_ptr_null(ag_backend_name(1));
}
END_TEST

START_TEST(empty_slots_are_stubbed) {
    int index = -1, again = -1;
    char path[PATH_MAX];
    ck_assert_int_eq(ag_backend_load("partial", &index), AG_OK);
    ck_assert_int_eq(index, 0);
    ck_assert_int_eq(ag_backend_load("partial", &again), AG_OK);
    ck_assert_int_eq(again, 0);
    ck_assert_int_eq(ag_backend_count(), 1);

    const ag_backend *be = ag__backend(0);
    snprintf(path, sizeof path, "%s/libag_backend_partial.so", AG_TEST_FIXTURES);
    ck_assert_str_eq(be->path, path);
    ck_assert_str_eq(be->iface.name, "partial");
    ck_assert_uint_eq(be->iface.abi_major, AG_BACKEND_ABI_MAJOR);
    ck_assert_int_eq(be->iface.device_count(), 1); /* the backend's own slot */

    void *buffer = NULL;
    ag_clear_error();
    /* alloc lies past the fixture's struct_size, where it keeps a poisoned function. */
    ck_assert_int_eq(be->iface.alloc(0, 16, &buffer), AG_ERR_UNIMPLEMENTED);
    ck_assert_int_eq(ag_last_status(), AG_ERR_UNIMPLEMENTED);
    ck_assert_str_eq(ag_last_error(), "backend 'partial' does not implement alloc");
    /* the stub's message first, once, then the backend's own again */
    ck_assert_str_eq(be->iface.last_error(), "backend 'partial' does not implement alloc");
    ck_assert_str_eq(be->iface.last_error(), "partial's own message");
    ck_assert_ptr_null(buffer);

    ag_kernel_fn kernel = NULL;
    ag_clear_error();
    ck_assert_int_eq(be->iface.get_kernel("add", AG_F32, &kernel), AG_ERR_UNIMPLEMENTED);
    assert_has(ag_last_error(), "does not implement get_kernel");
    ck_assert_ptr_null(kernel);
    ag_memory_stats stats = {.struct_size = sizeof stats};
    ck_assert_int_eq(be->iface.memory_stats(0, &stats), AG_ERR_UNIMPLEMENTED);
    ck_assert_int_eq(be->iface.copy_device(0, NULL, 0, NULL, 0, 0), AG_ERR_UNIMPLEMENTED);
    ck_assert_ptr_null(be->iface.get_proc_address("cpu_set_num_threads"));

    ag_clear_error();
    be->iface.free(0, NULL, 0); /* logs only: release paths must not gain an error */
    ck_assert_int_eq(ag_last_status(), AG_OK);
    be->iface.shutdown();
}
END_TEST

START_TEST(devices_parse_and_print) {
    ag_device dev = {-1, -1};
    char buf[64];
    ck_assert_int_eq(ag_device_parse("partial", &dev), AG_OK);
    ck_assert_int_eq(dev.backend, 0);
    ck_assert_int_eq(dev.index, 0);
    ck_assert_int_eq(ag_device_parse("partial:0", &dev), AG_OK);
    ag_device_str(dev, buf, sizeof buf);
    ck_assert_str_eq(buf, "partial:0");

    ck_assert_int_eq(ag_device_parse("partial:1", &dev), AG_ERR_DEVICE);
    assert_has(ag_last_error(), "has 1 device");
    const char *bad[] = {"partial:", "partial:x", "partial:-1", ":0", "partial:99999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(ag_device_parse(bad[i], &dev), AG_ERR_INVALID_ARG);
        assert_has(ag_last_error(), bad[i]);
    }
    ck_assert_int_eq(ag_device_parse("nope:0", &dev), AG_ERR_BACKEND_LOAD);

    /* the fixture has no synchronize: the stub's message comes through */
    ag_clear_error();
    ck_assert_int_eq(ag_synchronize((ag_device){0, 0}), AG_ERR_UNIMPLEMENTED);
    ck_assert_str_eq(ag_last_error(),
                     "synchronize on partial:0 failed: backend 'partial' does not implement "
                     "synchronize");
    ck_assert_int_eq(ag_synchronize((ag_device){0, 1}), AG_ERR_DEVICE);
    ck_assert_int_eq(ag_synchronize((ag_device){5, 0}), AG_ERR_DEVICE);
    ag_device_str((ag_device){-1, -1}, buf, sizeof buf);
    ck_assert_str_eq(buf, "<no backend -1>:-1");
}
END_TEST

START_TEST(init_failure_is_kept_and_reported_again) {
    setenv("AG_BACKEND", "nope", 1);
    ck_assert_int_eq(ag_init(), AG_ERR_BACKEND_LOAD);
    assert_has(ag_last_error(), "AG_BACKEND=nope");
    assert_names_every_path(ag_last_error(), "nope");
    ag_clear_error();
    ck_assert_int_eq(ag_init(), AG_ERR_BACKEND_LOAD);
    assert_has(ag_last_error(), "AG_BACKEND=nope");
    ag_clear_error();
    ag_device dev = ag_default_device();
    ck_assert_int_eq(dev.backend, -1);
    ck_assert_int_eq(dev.index, -1);
    ck_assert_int_eq(ag_last_status(), AG_ERR_BACKEND_LOAD);
}
END_TEST

START_TEST(init_checks_device_index) {
    setenv("AG_BACKEND", "partial:3", 1);
    ck_assert_int_eq(ag_init(), AG_ERR_DEVICE);
    assert_has(ag_last_error(), "AG_BACKEND=partial:3");
    assert_has(ag_last_error(), "no device partial:3");
}
END_TEST

static void *default_device_of_thread(void *out) {
    *(ag_device *)out = ag_default_device();
    return NULL;
}

START_TEST(default_device_has_thread_override) {
    setenv("AG_BACKEND", "partial", 1);
    ck_assert_int_eq(ag_init(), AG_OK);
    ck_assert_int_eq(ag_init(), AG_OK);
    ag_device dev = ag_default_device();
    ck_assert_int_eq(dev.backend, 0);
    ck_assert_int_eq(dev.index, 0);

    ag_set_default_device((ag_device){0, 7});
    ck_assert_int_eq(ag_default_device().index, 7);
    pthread_t thread;
    ag_device other = {-1, -1};
    ck_assert_int_eq(pthread_create(&thread, NULL, default_device_of_thread, &other), 0);
    pthread_join(thread, NULL);
    ck_assert_int_eq(other.backend, 0);
    ck_assert_int_eq(other.index, 0);
    ag_set_default_device((ag_device){-1, -1});
    ck_assert_int_eq(ag_default_device().index, 0);
}
END_TEST

START_TEST(shutdown_empties_table_and_init_starts_over) {
    setenv("AG_BACKEND", "partial", 1);
    ck_assert_int_eq(ag_init(), AG_OK);
    ck_assert_int_eq(ag_backend_count(), 1);
    ag__backends_shutdown();
    ck_assert_int_eq(ag_backend_count(), 0);
    ck_assert_ptr_null(ag_backend_name(0));
    setenv("AG_BACKEND", "nope", 1);
    ck_assert_int_eq(ag_init(), AG_ERR_BACKEND_LOAD);
}
END_TEST

START_TEST(probe_loads_outside_the_table) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/libag_backend_partial.so", AG_TEST_FIXTURES);
    const ag_backend *be = ag__backend_probe(path);
    ck_assert_ptr_nonnull(be);
    ck_assert_str_eq(be->iface.name, "partial");
    ck_assert_str_eq(be->path, path);
    ck_assert_int_eq(be->iface.synchronize(0), AG_ERR_UNIMPLEMENTED);
    ck_assert_str_eq(ag_last_error(), "backend 'partial' does not implement synchronize");
    ck_assert_ptr_null(ag__backend_probe(path)); /* one probe at a time */
    assert_has(ag_last_error(), "another probe is open");
    ck_assert_int_eq(ag_backend_count(), 0);
    ag__backend_probe_close();

    int index;
    ck_assert_int_eq(ag_backend_load("partial", &index), AG_OK);
    ck_assert_ptr_eq(ag__backend_probe(path), ag__backend(index)); /* no second init */
    ag__backend_probe_close();
    ck_assert_int_eq(ag_backend_count(), 1);

    snprintf(path, sizeof path, "%s/libag_backend_badmajor.so", AG_TEST_FIXTURES);
    ck_assert_ptr_null(ag__backend_probe(path));
    ck_assert_int_eq(ag_last_status(), AG_ERR_ABI);
    assert_has(ag_last_error(), path);
    ck_assert_ptr_null(ag__backend_probe("/tmp/not_a_backend.so"));
    ck_assert_int_eq(ag_last_status(), AG_ERR_INVALID_ARG);
}
END_TEST

/* Runs `ag <args>` with extra environment settings; returns its exit status and stores
 * stdout and stderr together in out. */
static int run_cli(const char *env, const char *args, char *out, size_t size) {
    char cmd[PATH_MAX * 4];
    snprintf(cmd, sizeof cmd, "env %s '%s' %s 2>&1", env, AG_TEST_CLI, args);
    return tu_run_command(cmd, out, size);
}

START_TEST(cli_info_fails_for_missing_backend) {
    static char out[1 << 16];
    char env[PATH_MAX * 3];
    snprintf(env, sizeof env, "AG_BACKEND=nope AG_BACKEND_PATH='%s'", path_var);
    ck_assert_int_eq(run_cli(env, "info", out, sizeof out), 1);
    assert_has(out, "AG_BACKEND=nope");
    assert_names_every_path(out, "nope");
    /* the fixtures are listed, each with its verdict */
    assert_has(out, "libag_backend_badmajor.so");
    assert_has(out, "backend partial, ABI 1.0, 1 device");
}
END_TEST

START_TEST(cli_info_lists_cpu) {
    static char out[1 << 16];
    char path[PATH_MAX + 64];
    ck_assert_int_eq(run_cli("-u AG_BACKEND_PATH AG_BACKEND=cpu", "info", out, sizeof out), 0);
    snprintf(path, sizeof path, "%s/libag_backend_cpu.so", libdir);
    assert_has(out, path);
    assert_has(out, "backend cpu, ABI " AG_TEST_STR(AG_BACKEND_ABI_MAJOR) "." AG_TEST_STR(
                        AG_BACKEND_ABI_MINOR));
    assert_has(out, "cpu:0");
    assert_has(out, "selected: cpu:0 (AG_BACKEND=cpu) from ");
}
END_TEST

START_TEST(cli_debug_log_shows_steps) {
    static char out[1 << 16];
    char env[PATH_MAX * 3];
    snprintf(env, sizeof env, "AG_LOG=debug AG_BACKEND=nope AG_BACKEND_PATH='%s'", path_var);
    ck_assert_int_eq(run_cli(env, "info", out, sizeof out), 1);
    assert_has(out, "[ag debug] backend 'nope': trying ");
}
END_TEST

START_TEST(cli_usage_errors) {
    static char out[1 << 16];
    ck_assert_int_eq(run_cli("", "", out, sizeof out), 2);
    assert_has(out, "usage: ag");
    ck_assert_int_eq(run_cli("", "frobnicate", out, sizeof out), 2);
    assert_has(out, "unknown command 'frobnicate'");
    ck_assert_int_eq(run_cli("", "--frobnicate", out, sizeof out), 2);
    ck_assert_int_eq(run_cli("", "info extra", out, sizeof out), 2);
    ck_assert_int_eq(run_cli("", "--help", out, sizeof out), 0);
    assert_has(out, "info");
    ck_assert_int_eq(run_cli("", "--version", out, sizeof out), 0);
    assert_has(out, ag_version());
}
END_TEST

/* Runs both test cases; fails if any check failed. */
int main(void) {
    Suite *s = suite_create("backend_loader");
    TCase *loader = tcase_create("loader");
    tcase_add_checked_fixture(loader, setup, teardown);
    tcase_add_test(loader, search_dirs_in_order_without_duplicates);
    tcase_add_test(loader, missing_backend_names_it_and_every_path);
    tcase_add_test(loader, invalid_names_are_refused);
    tcase_add_test(loader, other_abi_major_is_refused);
    tcase_add_test(loader, library_without_entry_symbol_is_refused);
    tcase_add_test(loader, non_elf_file_reports_dlerror);
    tcase_add_test(loader, table_with_another_name_is_refused);
    tcase_add_test(loader, failed_init_reports_backend_error_and_leaves_table);
    tcase_add_test(loader, empty_slots_are_stubbed);
    tcase_add_test(loader, devices_parse_and_print);
    tcase_add_test(loader, init_failure_is_kept_and_reported_again);
    tcase_add_test(loader, init_checks_device_index);
    tcase_add_test(loader, default_device_has_thread_override);
    tcase_add_test(loader, shutdown_empties_table_and_init_starts_over);
    tcase_add_test(loader, probe_loads_outside_the_table);
    suite_add_tcase(s, loader);

    TCase *cli = tcase_create("cli");
    tcase_add_checked_fixture(cli, setup, teardown);
    tcase_set_timeout(cli, 30);
    tcase_add_test(cli, cli_info_fails_for_missing_backend);
    tcase_add_test(cli, cli_info_lists_cpu);
    tcase_add_test(cli, cli_debug_log_shows_steps);
    tcase_add_test(cli, cli_usage_errors);
    suite_add_tcase(s, cli);

    return tu_run_suite(s);
}
