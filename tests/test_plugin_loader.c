/* Tests of the plugin loader (core/plugin_loader.c), AG_PLUGINS and the plugins section
 * of `ag info`.
 *
 * The fixtures (tests/fixtures/plugin_fixture.c, built per variant by
 * tests/plugin_loader.cmake) are in AG_TEST_PLUGINS. Tests run in one process (CK_FORK=no);
 * the teardown unloads every plugin, so each test starts with none. */
#define _GNU_SOURCE /* RTLD_NOLOAD */
#include <check.h>
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "ag/plugin.h"
#include "internal.h"
#include "test_util.h"

/* "major.minor" of the plugin ABI this libag uses, as messages print it. */
#define PLUGIN_ABI AG_TEST_STR(AG_PLUGIN_ABI_MAJOR) "." AG_TEST_STR(AG_PLUGIN_ABI_MINOR)

/* From CMake: AG_TEST_PLUGINS, AG_TEST_CLI. */

static char tmp[64]; /* per-test temporary directory */

#define assert_has(text, needle)                                                                   \
    ck_assert_msg(strstr((text), (needle)) != NULL, "'%s'\ndoes not contain '%s'", (text), (needle))

/* Path of fixture variant `name` (libag_plugin_<name>.so) written into buf (PATH_MAX). */
static const char *fixture_path(const char *name, char *buf) {
    snprintf(buf, PATH_MAX, "%s/libag_plugin_%s.so", AG_TEST_PLUGINS, name);
    return buf;
}
/* The same in a buffer that lives until the end of the enclosing block. */
#define fixture(name) fixture_path((name), (char[PATH_MAX]){0})

static void setup(void) {
    snprintf(tmp, sizeof tmp, "/tmp/ag_plugins_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp));
    unsetenv("AG_PLUGINS");
    tu_scope_setup();
}

static void teardown(void) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/garbage.so", tmp);
    unlink(path);
    rmdir(tmp);
    tu_scope_teardown(); /* the graphs of plugin ops go before their ops */
    ag__plugins_shutdown();
    unsetenv("AG_PLUGINS");
    ag_clear_error();
}

/* ---- a good plugin ---- */

START_TEST(good_plugin_loads_and_is_described) {
    int n_ops = -1;
    const char *name, *path, *version;
    char real[PATH_MAX];
    ck_assert_ptr_nonnull(realpath(fixture("fixture"), real));
    ck_assert_int_eq(ag_plugin_load(fixture("fixture")), AG_OK);
    ck_assert_int_eq(ag_plugin_count(), 1);
    ck_assert_int_eq(ag_plugin_describe(0, &name, &path, &version, &n_ops), AG_OK);
    ck_assert_str_eq(name, "fixture");
    ck_assert_str_eq(path, real);
    ck_assert_str_eq(version, "1.2.3");
    ck_assert_int_eq(n_ops, 1);
    ck_assert_int_eq(ag_plugin_describe(0, NULL, NULL, NULL, NULL), AG_OK);
    ck_assert_str_eq(ag_plugin_op_name(0, 0), "fixture::scale");
    ck_assert_ptr_null(ag_plugin_op_name(0, 1));
    ck_assert_ptr_null(ag_plugin_op_name(1, 0));
    ck_assert_ptr_null(ag_plugin_op_name(-1, 0));
    ck_assert_int_eq(ag_plugin_describe(1, &name, &path, &version, &n_ops), AG_ERR_INVALID_ARG);
    assert_has(ag_last_error(), "no plugin 1 (1 loaded)");
    ck_assert_int_eq(ag_plugin_describe(-1, NULL, NULL, NULL, NULL), AG_ERR_INVALID_ARG);

    const ag_op *op = ag_op_find("fixture::scale");
    ck_assert_ptr_nonnull(op);
    ck_assert_str_eq(ag_op_plugin_decl(op)->doc, "x * factor (fixture of the plugin loader tests)");
    ck_assert_ptr_null(ag_op_plugin_decl(ag_op_find("add")));
}
END_TEST

START_TEST(good_plugin_op_runs) {
    char msg[512] = "";
    ck_assert_int_eq(ag_plugin_load(fixture("fixture")), AG_OK);
    const ag_op *op = ag_op_find("fixture::scale");
    ag_attrs attrs = {.ints = {3}};
    ag_tensor *x = tu_tensor(AG_F32, 1, TU_SHAPE(3), TU_VALUES(1, 2, -3));
    ag_tensor *y = ag_op_call1(op, 1, &x, &attrs);
    ck_assert_msg(
        tu_values_are(y, 1, TU_SHAPE(3), TU_VALUES(3, 6, -9), 0, 0, msg, sizeof msg, NULL), "%s",
        msg);
    /* a strided input */
    ag_tensor *m = tu_tensor(AG_F64, 2, TU_SHAPE(2, 3), TU_VALUES(1, 2, 3, 4, 5, 6));
    ag_tensor *t = ag_transpose(m, 0, 1);
    y = ag_op_call1(op, 1, &t, &attrs);
    ck_assert_msg(tu_values_are(y, 2, TU_SHAPE(3, 2), TU_VALUES(3, 12, 6, 15, 9, 18), 0, 0, msg,
                                sizeof msg, NULL),
                  "%s", msg);
    /* the dispatcher's checks apply: int64 is not among the op's dtypes */
    ag_tensor *i = tu_tensor(AG_I64, 1, TU_SHAPE(1), TU_VALUES(1));
    ck_assert_ptr_null(ag_op_call1(op, 1, &i, &attrs));
    assert_has(ag_last_error(), "fixture::scale");
}
END_TEST

START_TEST(plugin_of_an_older_minor_loads) {
    /* Its ops end before the 1.1 fields (launch): the host reads them as defaults. */
    char msg[512] = "";
    ck_assert_msg(ag_plugin_load(fixture("minor10")) == AG_OK, "%s", ag_last_error());
    const ag_op *op = ag_op_find("minor10::scale");
    ck_assert_ptr_nonnull(op);
    ck_assert_int_eq(ag_op_plugin_decl(op)->launch, AG_PLUGIN_LAUNCH_ELEMENTS);
    ag_attrs attrs = {.ints = {2}};
    ag_tensor *x = tu_tensor(AG_F32, 1, TU_SHAPE(2), TU_VALUES(1.5, -4));
    ck_assert_msg(tu_values_are(ag_op_call1(op, 1, &x, &attrs), 1, TU_SHAPE(2), TU_VALUES(3, -8), 0,
                                0, msg, sizeof msg, NULL),
                  "%s", msg);
}
END_TEST

/* fixture::scale with factor -2, for gradcheck. */
static ag_tensor *scale_by_minus_two(ag_tensor *const *inputs, void *op) {
    ag_attrs attrs = {.ints = {-2}};
    return ag_op_call1(op, 1, inputs, &attrs);
}

START_TEST(good_plugin_op_passes_gradcheck) {
    ck_assert_int_eq(ag_plugin_load(fixture("fixture")), AG_OK);
    const ag_op *op = ag_op_find("fixture::scale");
    ag_tensor *x = tu_tensor(AG_F64, 2, TU_SHAPE(2, 2), TU_VALUES(0.5, -1, 2, 3));
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ag_gradcheck_options opt = ag_gradcheck_defaults();
    ck_assert_msg(ag_gradcheck(scale_by_minus_two, (void *)op, 1, &x, &opt) == AG_OK, "%s",
                  ag_last_error());
    ck_assert_msg(ag_gradgradcheck(scale_by_minus_two, (void *)op, 1, &x, &opt) == AG_OK, "%s",
                  ag_last_error());
    ag_tensor *y = scale_by_minus_two(&x, (void *)op);
    ck_assert_str_eq(ag_grad_fn_name(y), "fixture::scale");
}
END_TEST

START_TEST(loading_twice_is_a_no_op) {
    char other_spelling[PATH_MAX];
    snprintf(other_spelling, sizeof other_spelling, "%s/./libag_plugin_fixture.so",
             AG_TEST_PLUGINS);
    ck_assert_int_eq(ag_plugin_load(fixture("fixture")), AG_OK);
    const ag_op *op = ag_op_find("fixture::scale");
    int ops = ag__op_count();
    ck_assert_int_eq(ag_plugin_load(fixture("fixture")), AG_OK);
    ck_assert_int_eq(ag_plugin_load(other_spelling), AG_OK);
    ck_assert_int_eq(ag_plugin_count(), 1);
    ck_assert_int_eq(ag__op_count(), ops);
    ck_assert_ptr_eq(ag_op_find("fixture::scale"), op);
}
END_TEST

/* ---- refusals ---- */

/* Asserts that loading `path` fails with status and a message naming the file and `cause`,
 * and that neither the plugin table nor the registry changed (op `first_op` unknown). */
static void assert_refused(const char *path, ag_status status, const char *cause,
                           const char *first_op) {
    int plugins = ag_plugin_count(), ops = ag__op_count();
    char head[PATH_MAX + 32];
    snprintf(head, sizeof head, "cannot load plugin %s: ", path);
    ag_clear_error();
    ck_assert_int_eq(ag_plugin_load(path), status);
    ck_assert_int_eq(ag_last_status(), status);
    assert_has(ag_last_error(), head);
    assert_has(ag_last_error(), cause);
    ck_assert_int_eq(ag_plugin_count(), plugins);
    ck_assert_int_eq(ag__op_count(), ops);
    if (first_op) ck_assert_ptr_null(ag_op_find(first_op));
}

START_TEST(broken_plugins_are_refused) {
    static const struct {
        const char *variant;
        ag_status status;
        const char *cause;
    } cases[] = {
        {"noentry", AG_ERR_BACKEND_LOAD, "no symbol ag_plugin_entry (not an ag plugin?)"},
        {"nullinfo", AG_ERR_BACKEND_LOAD,
         "ag_plugin_entry returned no info (it refuses plugin ABI " PLUGIN_ABI ")"},
        {"badmajor", AG_ERR_ABI, "built for plugin ABI 99.3, but this libag uses ABI " PLUGIN_ABI},
        {"smallinfo", AG_ERR_BACKEND_LOAD, "its info has struct_size 4, less than the "},
        {"noinit", AG_ERR_BACKEND_LOAD, "its info lacks a name, a version or an init function"},
        {"initfail", AG_ERR_BACKEND_LOAD,
         "init failed with AG_ERR_INTERNAL: no frobnicator on this machine (42)"},
        {"nested", AG_ERR_BACKEND_LOAD,
         "init failed with AG_ERR_INVALID_ARG: cannot load plugin nested.so from a plugin's "
         "init"},
        {"badschema", AG_ERR_INVALID_ARG, "invalid op 'add': the name must be"},
        {"noshape", AG_ERR_INVALID_ARG, "invalid op 'noshape::scale': a shape rule is required"},
        {"smallop", AG_ERR_INVALID_ARG, "op 0 has struct_size 4, less than the "},
        {"dupself", AG_ERR_INVALID_ARG, "'dupself::scale' is registered twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char op[64];
        snprintf(op, sizeof op, "%s::scale", cases[i].variant);
        assert_refused(fixture(cases[i].variant), cases[i].status, cases[i].cause, op);
    }
    /* a refused plugin can be tried again, and fails the same way */
    assert_refused(fixture("initfail"), AG_ERR_BACKEND_LOAD, "no frobnicator", "initfail::scale");
}
END_TEST

START_TEST(non_library_missing_file_and_null_are_refused) {
    static const char text[] = "this is not a shared library, only text long enough for a "
                               "header check that dlopen makes first\n";
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/garbage.so", tmp);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(text, 1, sizeof text, f), sizeof text);
    fclose(f);
    assert_refused(path, AG_ERR_BACKEND_LOAD, "ELF", NULL); /* dlerror's "invalid ELF header" */
    snprintf(path, sizeof path, "%s/missing.so", tmp);
    assert_refused(path, AG_ERR_BACKEND_LOAD, "no such file", NULL);
    ck_assert_int_eq(ag_plugin_load(NULL), AG_ERR_INVALID_ARG);
    assert_has(ag_last_error(), "NULL path");
}
END_TEST

START_TEST(op_names_taken_by_another_plugin_are_refused) {
    ck_assert_int_eq(ag_plugin_load(fixture("fixture")), AG_OK);
    const ag_op *op = ag_op_find("fixture::scale");
    assert_refused(fixture("dup"), AG_ERR_INVALID_ARG, "an op named 'fixture::scale' exists", NULL);
    ck_assert_ptr_eq(ag_op_find("fixture::scale"), op);
    ck_assert_str_eq(ag_plugin_op_name(0, 0), "fixture::scale");
}
END_TEST

START_TEST(register_op_after_init_is_refused) {
    ck_assert_int_eq(ag_plugin_load(fixture("fixture")), AG_OK);
    void *handle = dlopen(fixture("fixture"), RTLD_NOW | RTLD_NOLOAD);
    ck_assert_ptr_nonnull(handle);
    ag_status (*late)(void) = (ag_status(*)(void))dlsym(handle, "fixture_register_late");
    ck_assert_ptr_nonnull(late);
    int ops = ag__op_count();
    ck_assert_int_eq(late(), AG_ERR_INVALID_ARG);
    assert_has(ag_last_error(), "register_op: called outside the plugin's init");
    ck_assert_int_eq(ag__op_count(), ops);
    dlclose(handle);
}
END_TEST

/* Loads both good fixtures. */
static void *load_both(void *status) {
    ag_status st = ag_plugin_load(fixture("fixture"));
    *(ag_status *)status = st != AG_OK ? st : ag_plugin_load(fixture("other"));
    return NULL;
}

START_TEST(concurrent_loads_load_once) {
    pthread_t threads[4];
    ag_status status[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&threads[i], NULL, load_both, &status[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        ck_assert_int_eq(status[i], AG_OK);
    }
    ck_assert_int_eq(ag_plugin_count(), 2);
    ck_assert_ptr_nonnull(ag_op_find("fixture::scale"));
    ck_assert_ptr_nonnull(ag_op_find("other::scale"));
}
END_TEST

/* ---- AG_PLUGINS ---- */

START_TEST(ag_plugins_are_loaded_by_ag_init) {
    char list[PATH_MAX * 2 + 8];
    snprintf(list, sizeof list, "%s::%s:", fixture("fixture"), fixture("other"));
    setenv("AG_PLUGINS", list, 1);
    ck_assert_int_eq(ag_init(), AG_OK);
    ck_assert_int_eq(ag_plugin_count(), 2);
    ck_assert_str_eq(ag_plugin_op_name(0, 0), "fixture::scale");
    ck_assert_str_eq(ag_plugin_op_name(1, 0), "other::scale");
    ck_assert_int_eq(ag_init(), AG_OK);
    ck_assert_int_eq(ag_plugin_count(), 2);
}
END_TEST

START_TEST(failing_ag_plugins_fail_ag_init_every_time) {
    char list[PATH_MAX * 3 + 8], missing[PATH_MAX];
    snprintf(missing, sizeof missing, "%s/missing.so", tmp);
    snprintf(list, sizeof list, "%s:%s:%s", fixture("fixture"), missing, fixture("other"));
    setenv("AG_PLUGINS", list, 1);
    for (int k = 0; k < 2; k++) {
        ag_clear_error();
        ck_assert_int_eq(ag_init(), AG_ERR_BACKEND_LOAD);
        assert_has(ag_last_error(), "AG_PLUGINS=");
        assert_has(ag_last_error(), list);
        assert_has(ag_last_error(), missing);
        assert_has(ag_last_error(), "no such file");
    }
    /* the list stops at the failure */
    ck_assert_int_eq(ag_plugin_count(), 1);
    ck_assert_ptr_null(ag_zeros(AG_F32, 1, TU_SHAPE(2)));
    assert_has(ag_last_error(), "AG_PLUGINS=");
}
END_TEST

START_TEST(plugin_init_may_use_ag_while_ag_plugins_load) {
    setenv("AG_PLUGINS", fixture("nested"), 1);
    ck_assert_int_eq(ag_init(), AG_ERR_BACKEND_LOAD);
    assert_has(ag_last_error(), "from a plugin's init");
    ck_assert_int_eq(ag_plugin_count(), 0);
}
END_TEST

/* ---- ag info ---- */

/* Runs `ag info` with AG_PLUGINS=plugins (unset if NULL); returns its exit status and
 * stores stdout and stderr together in out. */
static int run_info(const char *plugins, char *out, size_t size) {
    char cmd[PATH_MAX * 4];
    if (plugins)
        snprintf(cmd, sizeof cmd, "env AG_PLUGINS='%s' '%s' info 2>&1", plugins, AG_TEST_CLI);
    else
        snprintf(cmd, sizeof cmd, "env -u AG_PLUGINS '%s' info 2>&1", AG_TEST_CLI);
    return tu_run_command(cmd, out, size);
}

START_TEST(cli_info_lists_plugins_and_ops) {
    static char out[1 << 16];
    char list[PATH_MAX * 2 + 8], real[PATH_MAX], line[PATH_MAX * 3];
    snprintf(list, sizeof list, "%s:%s", fixture("fixture"), fixture("other"));
    ck_assert_int_eq(run_info(list, out, sizeof out), 0);
    snprintf(line, sizeof line, "plugins (AG_PLUGINS=%s):\n", list);
    assert_has(out, line);
    ck_assert_ptr_nonnull(realpath(fixture("fixture"), real));
    snprintf(line, sizeof line, "  fixture 1.2.3, 1 op, from %s\n", real);
    assert_has(out, line);
    assert_has(out, "    fixture::scale           x * factor (fixture of the plugin loader tests)");
    assert_has(out, "  other 1.2.3, 1 op, from ");
    assert_has(out, "    other::scale ");

    ck_assert_int_eq(run_info(NULL, out, sizeof out), 0);
    assert_has(out, "plugins (AG_PLUGINS unset): none");
}
END_TEST

START_TEST(cli_info_fails_for_a_refused_plugin) {
    static char out[1 << 16];
    char line[PATH_MAX * 3];
    ck_assert_int_eq(run_info(fixture("badmajor"), out, sizeof out), 1);
    snprintf(line, sizeof line, "AG_PLUGINS=%s: cannot load plugin %s: built for plugin ABI 99.3",
             fixture("badmajor"), fixture("badmajor"));
    assert_has(out, line);
}
END_TEST

/* Runs every test; fails if any check failed. */
int main(void) {
    Suite *s = suite_create("plugin_loader");
    TCase *loader = tcase_create("loader");
    tcase_add_checked_fixture(loader, setup, teardown);
    tcase_add_test(loader, good_plugin_loads_and_is_described);
    tcase_add_test(loader, good_plugin_op_runs);
    tcase_add_test(loader, good_plugin_op_passes_gradcheck);
    tcase_add_test(loader, plugin_of_an_older_minor_loads);
    tcase_add_test(loader, loading_twice_is_a_no_op);
    tcase_add_test(loader, broken_plugins_are_refused);
    tcase_add_test(loader, non_library_missing_file_and_null_are_refused);
    tcase_add_test(loader, op_names_taken_by_another_plugin_are_refused);
    tcase_add_test(loader, register_op_after_init_is_refused);
    tcase_add_test(loader, concurrent_loads_load_once);
    tcase_add_test(loader, ag_plugins_are_loaded_by_ag_init);
    tcase_add_test(loader, failing_ag_plugins_fail_ag_init_every_time);
    tcase_add_test(loader, plugin_init_may_use_ag_while_ag_plugins_load);
    suite_add_tcase(s, loader);

    TCase *cli = tcase_create("cli");
    tcase_add_checked_fixture(cli, setup, teardown);
    tcase_set_timeout(cli, 30);
    tcase_add_test(cli, cli_info_lists_plugins_and_ops);
    tcase_add_test(cli, cli_info_fails_for_a_refused_plugin);
    suite_add_tcase(s, cli);

    return tu_run_suite(s);
}
