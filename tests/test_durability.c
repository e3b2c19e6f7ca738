/* Durability of saved files: a checkpoint save killed (SIGKILL) at random points never
 * damages the file under the target's name, which always holds the previous checkpoint or
 * the new one, whole; and the CRC-32 that ag writes in a safetensors header's __metadata__
 * ("ag_crc32") catches a changed data byte, while files without it (PyTorch's) still load.
 *
 * The writer is this binary run again with "--writer <path> <hidden>": a fresh process
 * (no threads inherited through fork) that saves checkpoint B over and over until killed. */
#define _GNU_SOURCE /* nftw */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include "ag/ag.h"
#include "ag/io.h"
#include "ag/nn.h"
#include "test_util.h"

/* Kills of the writer, and the widths of the two checkpoints' hidden layers. */
#define KILLS    100
#define HIDDEN_A 8
#define HIDDEN_B 4096

static char tmpdir[64]; /* made by main, removed at the end */
static char self_exe[4096];

/* tmpdir/name in one of four rotating buffers. */
static const char *tmp(const char *name) {
    static char bufs[4][256];
    static int next;
    char *buf = bufs[next++ % 4];
    snprintf(buf, sizeof bufs[0], "%s/%s", tmpdir, name);
    return buf;
}

/* The writer process: saves checkpoint B to path until killed. Tells the parent on fd 3
 * when it is about to start, so that the kill's delay counts from the first save. */
static int run_writer(const char *path, int64_t hidden) {
    ag_module *b = tu_classifier(hidden, 2);
    if (!b) return 2;
    if (write(3, "r", 1) != 1) return 3;
    for (;;)
        if (ag_checkpoint_save(path, b, NULL) != AG_OK) {
            fprintf(stderr, "writer: %s\n", ag_last_error());
            return 4;
        }
}

/* Monotonic microseconds. */
static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The names in tmpdir other than "." and ".."; *temps gets those of ag's temporary files
 * (".<name>.tmp.XXXXXX"), the rest must be listed in `allowed`. */
static void check_dir(const char *const *allowed, int *temps) {
    DIR *d = opendir(tmpdir);
    ck_assert_ptr_nonnull(d);
    *temps = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (!strncmp(e->d_name, ".ckpt.safetensors.tmp.", 22) && strlen(e->d_name) == 28) {
            (*temps)++;
            continue;
        }
        bool ok = false;
        for (int i = 0; allowed[i]; i++) ok = ok || !strcmp(e->d_name, allowed[i]);
        ck_assert_msg(ok, "unexpected file %s in %s", e->d_name, tmpdir);
    }
    closedir(d);
}

/* True if the two lists hold the same names and exactly the same tensors. */
static bool same_tensors(int n, const ag_named_tensor *a, int m, const ag_named_tensor *b) {
    if (n != m) return false;
    for (int i = 0; i < n; i++)
        if (strcmp(a[i].name, b[i].name) || ag_ndim(a[i].tensor) != ag_ndim(b[i].tensor) ||
            ag_numel(a[i].tensor) != ag_numel(b[i].tensor) ||
            memcmp(ag_shape(a[i].tensor), ag_shape(b[i].tensor),
                   (size_t)ag_ndim(a[i].tensor) * sizeof(int64_t)) ||
            tu_max_abs_diff(a[i].tensor, b[i].tensor) != 0)
            return false;
    return true;
}

/* Starts the writer on path; returns its pid once it is ready to save. */
static pid_t start_writer(const char *path) {
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        if (dup2(fds[1], 3) < 0) _exit(5);
        char hidden[24];
        snprintf(hidden, sizeof hidden, "%d", HIDDEN_B);
        execl(self_exe, self_exe, "--writer", path, hidden, (char *)NULL);
        _exit(6);
    }
    close(fds[1]);
    char c = 0;
    ssize_t got;
    while ((got = read(fds[0], &c, 1)) < 0 && errno == EINTR) {
    }
    close(fds[0]);
    ck_assert_msg(got == 1 && c == 'r', "the writer did not start");
    return pid;
}

START_TEST(killed_checkpoint_saves_leave_the_old_or_the_new_file_whole) {
    char path[256]; /* tmp's buffers are reused below */
    snprintf(path, sizeof path, "%s", tmp("ckpt.safetensors"));
    mkdir(tmp("ref"), 0755);
    /* References: A and B as written whole, loaded back. */
    ag_module *a = tu_classifier(HIDDEN_A, 1), *b = tu_classifier(HIDDEN_B, 2);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(ag_checkpoint_save(tmp("ref/a.safetensors"), a, NULL), AG_OK);
    int64_t t0 = now_us();
    ck_assert_int_eq(ag_checkpoint_save(tmp("ref/b.safetensors"), b, NULL), AG_OK);
    const int64_t save_us = now_us() - t0 + 1;
    int na, nb;
    ag_named_tensor *ra, *rb;
    ck_assert_int_eq(ag_safetensors_load(tmp("ref/a.safetensors"), &na, &ra), AG_OK);
    ck_assert_int_eq(ag_safetensors_load(tmp("ref/b.safetensors"), &nb, &rb), AG_OK);
    ck_assert(!same_tensors(na, ra, nb, rb));
    const char *const allowed[] = {"ckpt.safetensors", "ref", NULL};
    int as_a = 0, as_b = 0, temps = 0, leftovers = 0;
    uint64_t state = 20261126;
    for (int kill_no = 0; kill_no < KILLS; kill_no++) {
        /* Each round starts again from A, so both outcomes stay possible. */
        ck_assert_int_eq(ag_checkpoint_save(path, a, NULL), AG_OK);
        state = state * 6364136223846793005u + 1442695040888963407u;
        /* 1 us up to one and a half saves, so kills land before, in and after the first
         * save, or in the second. */
        useconds_t delay = (useconds_t)(1 + (state >> 33) % (uint64_t)(save_us * 3 / 2));
        pid_t pid = start_writer(path);
        usleep(delay);
        ck_assert_int_eq(kill(pid, SIGKILL), 0);
        int wstatus;
        ck_assert_int_eq(waitpid(pid, &wstatus, 0), pid);
        ck_assert_msg(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL,
                      "kill %d: the writer ended by itself (status %d)", kill_no, wstatus);
        int n;
        ag_named_tensor *got;
        ck_assert_msg(ag_safetensors_load(path, &n, &got) == AG_OK, "kill %d after %u us: %s",
                      kill_no, (unsigned)delay, ag_last_error());
        bool is_a = same_tensors(n, got, na, ra), is_b = same_tensors(n, got, nb, rb);
        ag_named_tensors_free(n, got);
        ck_assert_msg(is_a || is_b, "kill %d after %u us: the file is neither A nor B", kill_no,
                      (unsigned)delay);
        as_a += is_a;
        as_b += is_b;
        /* It loads as a checkpoint too, into a model of its shape. */
        ag_module *m = tu_classifier(is_a ? HIDDEN_A : HIDDEN_B, 7);
        ck_assert_msg(ag_checkpoint_load(path, m, NULL) == AG_OK, "%s", ag_last_error());
        ag_module_free(m);
        /* A killed save leaves at most its own temporary file, never another name. */
        int before = temps;
        check_dir(allowed, &temps);
        ck_assert_int_le(temps - before, 1);
        leftovers += temps - before;
    }
    /* Later saves ignore the leftovers: they succeed, and add none. */
    ck_assert_int_eq(ag_checkpoint_save(path, a, NULL), AG_OK);
    int n;
    ag_named_tensor *got;
    ck_assert_int_eq(ag_safetensors_load(path, &n, &got), AG_OK);
    ck_assert(same_tensors(n, got, na, ra));
    ag_named_tensors_free(n, got);
    int after = 0;
    check_dir(allowed, &after);
    ck_assert_int_eq(after, temps);
    printf("durability: %d kills (save of B takes %lld us): %d left A, %d left B; %d left a "
           "temporary file\n",
           KILLS, (long long)save_us, as_a, as_b, leftovers);
    ag_named_tensors_free(na, ra);
    ag_named_tensors_free(nb, rb);
    ag_module_free(a);
    ag_module_free(b);
}
END_TEST

START_TEST(a_changed_data_byte_fails_the_checksum) {
    ag_module *a = tu_classifier(HIDDEN_A, 1);
    const char *path = tmp("flip.safetensors"), *bad = tmp("flipped.safetensors");
    ck_assert_int_eq(ag_checkpoint_save(path, a, NULL), AG_OK);
    size_t len;
    unsigned char *file = tu_read_file(path, &len);
    ck_assert_ptr_nonnull(file);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | file[i];
    ck_assert_uint_lt(8 + hl, len);
    char *json = strndup((const char *)file + 8, hl);
    ck_assert_msg(strstr(json, "\"__metadata__\":{\"ag_crc32\":\""), "%s", json);
    free(json);
    /* Every data byte changed alone, in one bit or all of them: each is caught. */
    for (size_t at = 8 + hl; at < len; at += 7) {
        file[at] ^= at % 2 ? 0x01 : 0xff;
        tu_write_file(bad, file, len);
        int n = -1;
        ag_named_tensor *t = NULL;
        tu_expect_error(ag_safetensors_load(bad, &n, &t), AG_ERR_IO,
                        "flipped.safetensors|checksum mismatch|file says|data gives|the file is "
                        "corrupt");
        ck_assert_int_eq(n, 0);
        ck_assert_ptr_null(t);
        file[at] ^= at % 2 ? 0x01 : 0xff;
    }
    ag_module *b = tu_classifier(HIDDEN_A, 9);
    tu_expect_error(ag_checkpoint_load(bad, b, NULL), AG_ERR_IO, "checksum mismatch");
    ag_module_free(b);
    free(file);
    ag_module_free(a);
}
END_TEST

/* A file with header `json` and data 1, 2, 3, 4 as F32 of shape [4]. */
static const char *write_f32_file(const char *name, const char *json) {
    const float data[4] = {1, 2, 3, 4};
    size_t hl = strlen(json), len = 8 + hl + sizeof data;
    unsigned char *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, json, hl);
    memcpy(buf + 8 + hl, data, sizeof data);
    const char *path = tmp(name);
    tu_write_file(path, buf, len);
    free(buf);
    return path;
}

/* Loads path, which must hold tensor "a" = [1, 2, 3, 4]. */
static void expect_loads(const char *path) {
    int n;
    ag_named_tensor *t;
    ck_assert_msg(ag_safetensors_load(path, &n, &t) == AG_OK, "%s", ag_last_error());
    ck_assert_int_eq(n, 1);
    ck_assert(
        tu_values_are(t[0].tensor, 1, TU_SHAPE(4), TU_VALUES(1, 2, 3, 4), 0, 0, NULL, 0, NULL));
    ag_named_tensors_free(n, t);
}

START_TEST(files_without_the_checksum_still_load) {
    const float data[4] = {1, 2, 3, 4};
    const unsigned long crc = crc32(0, (const Bytef *)data, sizeof data);
    const char *entry = "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}";
    char json[512];
    /* No metadata, as PyTorch's safetensors writes by default; other keys only. */
    snprintf(json, sizeof json, "{%s}", entry);
    expect_loads(write_f32_file("plain.safetensors", json));
    snprintf(json, sizeof json, "{\"__metadata__\":{\"format\":\"pt\"},%s}", entry);
    expect_loads(write_f32_file("pt.safetensors", json));
    /* The checksum in decimal or hex, beside other keys. */
    snprintf(json, sizeof json, "{\"__metadata__\":{\"format\":\"pt\",\"ag_crc32\":\"%lu\"},%s}",
             crc, entry);
    expect_loads(write_f32_file("dec.safetensors", json));
    snprintf(json, sizeof json, "{%s,\"__metadata__\":{\"ag_crc32\":\"0x%08lX\",\"x\":\"y\"}}",
             entry, crc);
    expect_loads(write_f32_file("hex.safetensors", json));
    /* A wrong or unreadable checksum is an error naming both values or the text. */
    snprintf(json, sizeof json, "{\"__metadata__\":{\"ag_crc32\":\"%lu\"},%s}", crc ^ 1, entry);
    char words[160];
    snprintf(words, sizeof words, "wrong.safetensors|file says %lu|data gives %lu|corrupt", crc ^ 1,
             crc);
    int n;
    ag_named_tensor *t;
    tu_expect_error(ag_safetensors_load(write_f32_file("wrong.safetensors", json), &n, &t),
                    AG_ERR_IO, words);
    const char *bad_values[] = {"",   "12abc", "-1",         " 1",         "+1",
                                "0x", "0x-1",  "4294967296", "0x1ffffffff"};
    for (size_t i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++) {
        snprintf(json, sizeof json, "{\"__metadata__\":{\"ag_crc32\":\"%s\"},%s}", bad_values[i],
                 entry);
        tu_expect_error(ag_safetensors_load(write_f32_file("text.safetensors", json), &n, &t),
                        AG_ERR_IO, "text.safetensors|ag_crc32|not a CRC-32");
    }
    /* What ag writes keeps the checksum through a load and a save of the loaded tensors. */
    ag_named_tensor in[] = {{"a", tu_tensor(AG_F32, 1, TU_SHAPE(4), TU_VALUES(1, 2, 3, 4))}};
    ck_assert_int_eq(ag_safetensors_save(tmp("ag.safetensors"), 1, in), AG_OK);
    expect_loads(tmp("ag.safetensors"));
    size_t len;
    unsigned char *file = tu_read_file(tmp("ag.safetensors"), &len);
    ck_assert_ptr_nonnull(file);
    char want[64];
    snprintf(want, sizeof want, "\"ag_crc32\":\"%lu\"", crc);
    char *header = strndup((const char *)file + 8, len - 8 - sizeof data);
    ck_assert_msg(strstr(header, want), "%s lacks %s", header, want);
    free(header);
    free(file);
}
END_TEST

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--writer")) return run_writer(argv[2], atoll(argv[3]));
    ssize_t got = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (got <= 0) {
        perror("readlink /proc/self/exe");
        return EXIT_FAILURE;
    }
    self_exe[got] = '\0';
    snprintf(tmpdir, sizeof tmpdir, "%s", "/tmp/ag_durability_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    Suite *s = suite_create("durability");
    TCase *tc = tcase_create("durability");
    tcase_add_checked_fixture(tc, tu_scope_setup, tu_scope_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, killed_checkpoint_saves_leave_the_old_or_the_new_file_whole);
    tcase_add_test(tc, a_changed_data_byte_fails_the_checksum);
    tcase_add_test(tc, files_without_the_checksum_still_load);
    suite_add_tcase(s, tc);
    int status = tu_run_suite(s);
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return status;
}
