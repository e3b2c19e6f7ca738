/* Runs a test binary on the backend AG_BACKEND names, or skips it when that backend finds no
 * device on this machine: usage `ag_backend_probe TEST [ARGS...]`.
 *
 * ag_init loads the backend. If its init fails with AG_ERR_DEVICE (no OpenCL platform, or
 * no device on one), the reason is printed and the exit status is 77, which ctest reports
 * as skipped (SKIP_RETURN_CODE). Any other load failure is a test failure. Otherwise the
 * test replaces this process. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ag/ag.h"

/* Exit status ctest treats as a skip (tests/CMakeLists.txt). */
#define SKIP_STATUS 77

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s TEST [ARGS...]\n", argv[0]);
        return 2;
    }
    const char *backend = getenv("AG_BACKEND");
    if (ag_init() != AG_OK) {
        const char *why = ag_last_error();
        const bool no_device = strstr(why, "AG_ERR_DEVICE") != NULL;
        printf("%s: backend '%s' %s: %s\n", argv[1], backend ? backend : "cpu",
               no_device ? "has no device here, skipped" : "failed to load", why);
        return no_device ? SKIP_STATUS : 1;
    }
    fflush(stdout);
    execv(argv[1], argv + 1);
    perror(argv[1]);
    return 1;
}
