/* ag — the command-line tool. Subcommands live in one table; each gets argv from its own
 * name on and returns the exit status (0 ok, 1 failure, 2 usage error). */
#include <getopt.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ag/ag.h"
#include "ag/plugin.h"
#include "backend_loader.h"
#include "commands.h"

typedef struct command {
    const char *name;                  /* word on the command line */
    const char *summary;               /* one line for the usage text */
    int (*run)(int argc, char **argv); /* argv[0] is the command's name */
} command;

static int cmd_info(int argc, char **argv);

static const command commands[] = {
    {"bench", "time ops, training steps and overhead per backend against hardware and PyTorch",
     ag_cmd_bench},
    {"check", "check plugin ops: forward, gradcheck, gradgradcheck on each backend", ag_cmd_check},
    {"info", "show the version, backend search path, backends, devices and plugins", cmd_info},
    {"overhead", "measure the framework's cost per tiny op (forward, backward)", ag_cmd_overhead},
    {"train", "train the seed's MLP on Fashion-MNIST (or time its steps)", ag_cmd_train},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f) {
    fprintf(f, "usage: ag [--help] [--version] <command> [<args>]\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nenvironment: AG_BACKEND, AG_BACKEND_PATH, AG_PLUGINS, AG_LOG (see "
               "docs/backends.md)\n");
}

/* Parses the options of a subcommand that takes none but --help; returns -1 to go on,
 * else the exit status. */
static int no_options(int argc, char **argv) {
    static const struct option options[] = {{"help", no_argument, NULL, 'h'}, {0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        if (c == 'h') {
            printf("usage: ag %s\n", argv[0]);
            return 0;
        }
        usage(stderr);
        return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "ag %s: unexpected argument '%s'\n", argv[0], argv[optind]);
        usage(stderr);
        return 2;
    }
    return -1;
}

/* ---- ag info ---- */

static const char *bytes_str(uint64_t n, char *buf, size_t size) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", v, units[u]);
    return buf;
}

/* Prints a loaded backend: its ABI, devices and allocator statistics. */
static void describe(const ag_backend *be) {
    const ag_backend_iface *b = &be->iface;
    int n = b->device_count();
    char x[32], y[32], z[32];
    printf("    backend %s, ABI %u.%u, %d device%s\n", b->name, b->abi_major, b->abi_minor, n,
           n == 1 ? "" : "s");
    for (int i = 0; i < n; i++) {
        ag_device_info info = {.struct_size = sizeof info};
        ag_memory_stats ms = {.struct_size = sizeof ms};
        if (b->device_info(i, &info) == AG_OK)
            printf("    %s:%d  %s, %d compute units, %s memory, %s free\n", b->name, i, info.name,
                   info.compute_units, bytes_str(info.total_memory, x, sizeof x),
                   bytes_str(info.free_memory, y, sizeof y));
        else
            printf("    %s:%d  %s\n", b->name, i, b->last_error());
        if (b->memory_stats(i, &ms) == AG_OK)
            printf("      allocator: %s in use, %s reserved, %s peak, %llu allocs, %llu cache "
                   "hits\n",
                   bytes_str(ms.in_use, x, sizeof x), bytes_str(ms.reserved, y, sizeof y),
                   bytes_str(ms.peak_in_use, z, sizeof z), (unsigned long long)ms.alloc_count,
                   (unsigned long long)ms.cache_hits);
        else
            printf("      allocator: %s\n", b->last_error());
    }
}

/* Lists and probes every backend file in one directory. */
static void list_dir(const char *dir) {
    char pattern[4096];
    glob_t g;
    snprintf(pattern, sizeof pattern, "%s/libag_backend_*.so", dir);
    if (glob(pattern, 0, NULL, &g) != 0) return; /* no match, or an unreadable directory */
    for (size_t i = 0; i < g.gl_pathc; i++) {
        printf("  %s\n", g.gl_pathv[i]);
        const ag_backend *be = ag__backend_probe(g.gl_pathv[i]);
        if (be)
            describe(be);
        else
            printf("    cannot load: %s\n", ag_last_error());
        ag__backend_probe_close();
        ag_clear_error();
    }
    globfree(&g);
}

static void print_dir(const char *dir) {
    printf("  %s\n", dir);
}

/* Calls fn on each directory of a ':'-separated list. */
static void each_dir(const char *dirs, void (*fn)(const char *dir)) {
    char copy[8192];
    snprintf(copy, sizeof copy, "%s", dirs);
    for (char *save, *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save))
        fn(dir);
}

/* Lists the loaded plugins (AG_PLUGINS) and their ops with their doc lines. */
static void list_plugins(void) {
    const char *env = getenv("AG_PLUGINS");
    int n = ag_plugin_count();
    printf("plugins (AG_PLUGINS%s%s):%s\n", env && env[0] ? "=" : " unset",
           env && env[0] ? env : "", n ? "" : " none");
    for (int i = 0; i < n; i++) {
        const char *name, *path, *version;
        int n_ops;
        if (ag_plugin_describe(i, &name, &path, &version, &n_ops) != AG_OK) continue;
        printf("  %s %s, %d op%s, from %s\n", name, version, n_ops, n_ops == 1 ? "" : "s", path);
        for (int j = 0; j < n_ops; j++) {
            const char *op = ag_plugin_op_name(i, j);
            const char *doc = ag_op_plugin_decl(ag_op_find(op))->doc;
            printf("    %-24s %s\n", op, doc ? doc : "");
        }
    }
}

static int cmd_info(int argc, char **argv) {
    int rc = no_options(argc, argv);
    if (rc >= 0) return rc;
    /* Load the selected backend first, so that listing finds it in the table instead of
     * initialising its library a second time. */
    ag_status init = ag_init();
    char init_error[1024], dirs[8192];
    snprintf(init_error, sizeof init_error, "%s", ag_last_error());
    if (ag__backend_search_dirs(dirs, sizeof dirs) != AG_OK) {
        fprintf(stderr, "ag info: %s\n", ag_last_error());
        return 1;
    }
    printf("ag %s, backend ABI %d.%d\n", ag_version(), AG_BACKEND_ABI_MAJOR, AG_BACKEND_ABI_MINOR);
    printf("backend search path (AG_BACKEND_PATH, libag's directory, install directory):\n");
    each_dir(dirs, print_dir);
    printf("backend files:\n");
    each_dir(dirs, list_dir);

    if (init != AG_OK) {
        fprintf(stderr, "ag info: %s\n", init_error);
        return 1;
    }
    const char *env = getenv("AG_BACKEND");
    ag_device dev = ag_default_device();
    char name[96];
    ag_device_str(dev, name, sizeof name);
    if (env && env[0])
        printf("selected: %s (AG_BACKEND=%s) from ", name, env);
    else
        printf("selected: %s (AG_BACKEND unset) from ", name);
    printf("%s\n", ag__backend(dev.backend)->path);
    list_plugins();
    return 0;
}

/* Parses the global options, then runs the subcommand named by the next argument. */
int main(int argc, char **argv) {
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'}, {0}};
    int c;
    /* "+" stops at the subcommand, whose options are its own. */
    while ((c = getopt_long(argc, argv, "+hV", options, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("ag %s\n", ag_version());
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(argv[optind], commands[i].name) != 0) continue;
        char **sub_argv = argv + optind;
        int sub_argc = argc - optind;
        optind = 0; /* glibc: 0 fully resets getopt for the subcommand's own parsing */
        return commands[i].run(sub_argc, sub_argv);
    }
    fprintf(stderr, "ag: unknown command '%s'\n", argv[optind]);
    usage(stderr);
    return 2;
}
