/* Shared by the device backend tests (tests/backend/test_device_backend.c) and the tests of
 * each backend's own features (test_opencl_extras.c, test_cuda_extras.c), linked into one
 * binary: the table under test and the helpers every file uses. */
#ifndef AG_TESTS_DEVICE_BACKEND_EXTRAS_H
#define AG_TESTS_DEVICE_BACKEND_EXTRAS_H

#include <check.h>
#include "ag/backend.h"

/* The backend table under test, and the library file it came from. */
extern const ag_backend_iface *B;
extern const char *g_lib_path;

/* Checks that a call returned `want` and that last_error() contains `fragment`. */
void assert_error(ag_status st, ag_status want, const char *fragment);
/* The allocator statistics of `device`. */
ag_memory_stats stats(int device);
/* Runs this test program as a child that only loads the backend and runs init, with
 * environment entry `env` ("NAME=value") set; writes what it printed into out and returns
 * its exit status (1: init failed). */
int run_init_child(const char *env, char *out, size_t size);

/* OpenCL: builds and their logs, the disk cache (device); no platform (offline). */
TCase *opencl_device_tcase(void);
TCase *opencl_offline_tcase(void);
/* CUDA: source kernels through the ABI (device); NVRTC compiles and the no-GPU message of
 * init and of `ag info` (offline). */
TCase *cuda_device_tcase(void);
TCase *cuda_offline_tcase(void);

#endif
