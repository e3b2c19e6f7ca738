/* Helpers shared by the fuzzers in fuzz/: library set-up on the cpu backend, a reader that
 * turns the fuzzer's bytes into bounded numbers, files in a private temporary directory, and
 * the check that an error status always comes with a message. Header-only (static
 * functions): each fuzzer is one translation unit. */
#ifndef AG_FUZZ_UTIL_H
#define AG_FUZZ_UTIL_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ag/ag.h"

/* libFuzzer's entry points (declared here so that -Wmissing-prototypes stays quiet). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Stops the process with a message: libFuzzer reports the abort with the input. */
static inline void fuzz_fail(const char *what, const char *detail) {
    fprintf(stderr, "fuzz: %s: %s\n", what, detail ? detail : "");
    abort();
}

/* ag_init on the cpu backend without plugins from the environment; aborts on failure.
 * One OpenMP and OpenBLAS thread: deterministic, cheaper under the sanitizers, and
 * LeakSanitizer's exit-time check crashes ("Tracer caught signal 11") with libomp's
 * worker threads alive. */
static inline void fuzz_init_ag(void) {
    setenv("OMP_NUM_THREADS", "1", 1);
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    setenv("AG_BACKEND", "cpu", 1);
    unsetenv("AG_PLUGINS");
    if (ag_init() != AG_OK) fuzz_fail("ag_init", ag_last_error());
}

/* A status from the library: an error must carry a non-empty message. */
static inline void fuzz_check_error(ag_status st, const char *call) {
    if (st != AG_OK) {
        const char *msg = ag_last_error();
        if (!msg || !msg[0]) fuzz_fail(call, "error status without a message");
        if (ag_last_status() == AG_OK) fuzz_fail(call, "ag_last_status is AG_OK after an error");
    }
}

/* fuzz_check_error, then clears the error so that the next call starts clean. */
static inline void fuzz_check_status(ag_status st, const char *call) {
    fuzz_check_error(st, call);
    ag_clear_error();
}

/* The fuzzer's bytes, consumed from the front; reads past the end give zeros. */
typedef struct fuzz_bytes {
    const uint8_t *p;
    size_t n;
} fuzz_bytes;

static inline uint8_t fuzz_u8(fuzz_bytes *b) {
    if (!b->n) return 0;
    b->n--;
    return *b->p++;
}

static inline uint16_t fuzz_u16(fuzz_bytes *b) {
    uint16_t hi = fuzz_u8(b);
    return (uint16_t)(hi << 8 | fuzz_u8(b));
}

static inline uint32_t fuzz_u32(fuzz_bytes *b) {
    uint32_t hi = fuzz_u16(b);
    return hi << 16 | fuzz_u16(b);
}

/* An integer in [lo, hi] (hi - lo < 256). */
static inline int fuzz_range(fuzz_bytes *b, int lo, int hi) {
    return lo + (int)(fuzz_u8(b) % (unsigned)(hi - lo + 1));
}

/* A private temporary directory, made on first use, or NULL. */
static inline const char *fuzz_tmpdir(void) {
    static char dir[256];
    if (!dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/ag-fuzz-XXXXXX", base && base[0] ? base : "/tmp");
        if (!mkdtemp(dir)) fuzz_fail("mkdtemp", dir);
    }
    return dir;
}

/* Writes bytes to <tmpdir>/<name> and returns its path, valid until the next call. */
static inline const char *fuzz_write_file(const char *name, const uint8_t *data, size_t size) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", fuzz_tmpdir(), name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) fuzz_fail("open", path);
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0) fuzz_fail("write", path);
        done += (size_t)w;
    }
    close(fd);
    return path;
}

/* Removes <tmpdir>/<name> (the directory itself stays for the process's life). */
static inline void fuzz_remove_file(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", fuzz_tmpdir(), name);
    unlink(path);
}

#endif
