/* Programs of the OpenCL backend: building OpenCL C per device and dtype, the in-memory
 * caches of programs and kernels, the optional on-disk cache of program binaries and
 * build logs in error messages. Besides the backend's own kernels (kernels/<stem>.cl, built after
 * common.cl with dtype defines), plugin sources are built "bare": exactly as given.
 *
 * Two caches, both guarded by one mutex (the OpenCL runtime is called outside it):
 *  - programs, keyed by (device, hash of build options + common.cl + source): built once;
 *  - kernels, keyed by (device, source address, dtype, extra defines, kernel name, calling
 *    thread): clSetKernelArg on a shared cl_kernel is not thread-safe, so each thread gets
 *    its own cl_kernel, and the hot path is one hash of short strings, not of the source.
 *
 * The disk cache (AG_OPENCL_CACHE_DIR) holds one file per (device identity, program hash):
 * a header with a magic, the key hash and a checksum, then the driver's binary. Files are
 * written to a temporary name and renamed, so readers never see half a file; a file that
 * fails any check or that the driver refuses is ignored and rebuilt from source. */
#include "ocl_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KERNEL_BUCKETS 1024
#define CACHE_MAGIC    "AGOCLBN1" /* 8 bytes; bump the digit when the format changes */

/* A built program. */
typedef struct program_entry {
    struct program_entry *next;
    int device;
    uint64_t hash; /* of options, common.cl and source */
    cl_program program;
} program_entry;

/* A kernel object of one thread. */
typedef struct kernel_entry {
    struct kernel_entry *next;
    uint64_t hash; /* of the whole key, to skip string compares */
    int device;
    const char *source; /* by address: sources are the never-changing ocl_source_* arrays */
    bool bare;          /* a plugin source, built as given */
    ag_dtype dtype;
    char *defines; /* copy; "" for none */
    char *name;    /* copy */
    pthread_t thread;
    cl_kernel kernel;
} kernel_entry;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static program_entry *g_programs;
static kernel_entry *g_kernels[KERNEL_BUCKETS];

/* ---- hashing (FNV-1a, 64 bits) ---- */

#define FNV_BASIS 14695981039346656037ull

static uint64_t fnv(uint64_t h, const void *data, size_t size) {
    const unsigned char *p = data;
    for (size_t i = 0; i < size; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* Hashes the 8 bytes of v. */
static uint64_t fnv_u64(uint64_t h, uint64_t v) {
    for (int i = 0; i < 8; i++) h = (h ^ ((v >> (8 * i)) & 0xff)) * 1099511628211ull;
    return h;
}

/* Hashes a string with its terminator, so ("ab","c") and ("a","bc") differ. */
static uint64_t fnv_str(uint64_t h, const char *s) {
    return fnv(h, s, strlen(s) + 1);
}

/* ---- building ---- */

/* OpenCL C type of a dtype, or NULL. */
static const char *cl_type(ag_dtype dtype) {
    switch (dtype) {
    case AG_F32:
        return "float";
    case AG_F64:
        return "double";
    case AG_I64:
        return "long";
    case AG_F16:
    case AG_BF16:
        return "ushort"; /* the bits; kernels convert them (elementwise.cl) */
    default:
        return NULL;
    }
}

/* Writes the build log of `program` on device d (at most size - 1 bytes) into buf. */
static void build_log(cl_program program, const ocl_device *d, char *buf, size_t size) {
    buf[0] = '\0';
    size_t len = 0;
    if (clGetProgramBuildInfo(program, d->id, CL_PROGRAM_BUILD_LOG, 0, NULL, &len) != CL_SUCCESS)
        return;
    char *log = malloc(len + 1);
    if (!log) return;
    if (clGetProgramBuildInfo(program, d->id, CL_PROGRAM_BUILD_LOG, len, log, NULL) == CL_SUCCESS) {
        log[len] = '\0';
        snprintf(buf, size, "%s", log);
    }
    free(log);
}

/* Builds `source` (after common.cl unless bare) with `options` on device; `label` names the
 * kernel in messages. */
static ag_status build_from_source(int device, const char *source, bool bare, const char *options,
                                   const char *label, ag_dtype dtype, cl_program *out) {
    const ocl_device *d = ocl_device_at(device);
    /* #line 1 makes the build log's line numbers those of the kernel file. */
    const char *parts[] = {ocl_source_common, "\n#line 1\n", source};
    cl_int err;
    cl_program program = bare ? clCreateProgramWithSource(d->context, 1, &source, NULL, &err)
                              : clCreateProgramWithSource(d->context, 3, parts, NULL, &err);
    if (err != CL_SUCCESS) return ocl_check(err, "clCreateProgramWithSource");
    err = clBuildProgram(program, 1, &d->id, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        char log[6144];
        build_log(program, d, log, sizeof log);
        clReleaseProgram(program);
        return ocl_fail(AG_ERR_INTERNAL,
                        "opencl: building the program of kernel '%s' for %s on device %d (%s) "
                        "failed with %s; build log:\n%s",
                        label, ag_dtype_name(dtype), device, d->name, ocl_error_name(err),
                        log[0] ? log : "(empty)");
    }
    *out = program;
    return AG_OK;
}

/* ---- disk cache ---- */

/* Header of a cache file, followed by `size` bytes of program binary. */
typedef struct cache_header {
    char magic[8];
    uint64_t key;      /* hash of device identity and program */
    uint64_t size;     /* bytes of binary */
    uint64_t checksum; /* hash of the binary */
} cache_header;

/* Hash of what makes a binary valid: platform and device names and versions. */
static uint64_t device_identity(const ocl_device *d) {
    uint64_t h = FNV_BASIS;
    const cl_platform_info pinfo[] = {CL_PLATFORM_NAME, CL_PLATFORM_VERSION};
    const cl_device_info dinfo[] = {CL_DEVICE_NAME, CL_DEVICE_VERSION, CL_DRIVER_VERSION};
    char buf[256];
    for (size_t i = 0; i < sizeof pinfo / sizeof pinfo[0]; i++) {
        if (clGetPlatformInfo(d->platform, pinfo[i], sizeof buf, buf, NULL) != CL_SUCCESS)
            buf[0] = '\0';
        buf[sizeof buf - 1] = '\0';
        h = fnv_str(h, buf);
    }
    for (size_t i = 0; i < sizeof dinfo / sizeof dinfo[0]; i++) {
        if (clGetDeviceInfo(d->id, dinfo[i], sizeof buf, buf, NULL) != CL_SUCCESS) buf[0] = '\0';
        buf[sizeof buf - 1] = '\0';
        h = fnv_str(h, buf);
    }
    return h;
}

/* Path of the cache file for key under AG_OPENCL_CACHE_DIR; false when the cache is off. */
static bool cache_path(uint64_t key, char *path, size_t size) {
    const char *dir = getenv("AG_OPENCL_CACHE_DIR");
    if (!dir || !dir[0]) return false;
    const int n = snprintf(path, size, "%s/ag-%016llx.clbin", dir, (unsigned long long)key);
    return n > 0 && (size_t)n < size;
}

/* Reads a valid cache file into a malloc'ed binary; NULL when missing or invalid. */
static unsigned char *cache_read(const char *path, uint64_t key, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    cache_header h;
    unsigned char *bin = NULL;
    if (fread(&h, sizeof h, 1, f) == 1 && memcmp(h.magic, CACHE_MAGIC, 8) == 0 && h.key == key &&
        h.size > 0 && h.size < ((uint64_t)1 << 31) && (bin = malloc(h.size))) {
        const bool whole = fread(bin, 1, h.size, f) == h.size && fgetc(f) == EOF;
        if (!whole || fnv(FNV_BASIS, bin, h.size) != h.checksum) {
            free(bin);
            bin = NULL;
        }
    }
    fclose(f);
    if (bin) *size = h.size;
    return bin;
}

/* Builds a program from a cache file's binary; false when anything fails. */
static bool cache_load(const ocl_device *d, const char *path, uint64_t key, const char *options,
                       cl_program *out) {
    size_t size = 0;
    unsigned char *bin = cache_read(path, key, &size);
    if (!bin) return false;
    const unsigned char *bins[] = {bin};
    cl_int status = CL_SUCCESS, err;
    cl_program program =
        clCreateProgramWithBinary(d->context, 1, &d->id, &size, bins, &status, &err);
    free(bin);
    if (err != CL_SUCCESS || status != CL_SUCCESS) {
        if (program) clReleaseProgram(program);
        return false;
    }
    if (clBuildProgram(program, 1, &d->id, options, NULL, NULL) != CL_SUCCESS) {
        clReleaseProgram(program);
        return false;
    }
    *out = program;
    return true;
}

/* Writes program's binary to path through a temporary file and rename, so that a reader
 * sees the old file or the whole new one. Failures only cost the cache. */
static void cache_store(cl_program program, const char *path, uint64_t key) {
    size_t size = 0;
    if (clGetProgramInfo(program, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL) !=
            CL_SUCCESS ||
        size == 0)
        return;
    unsigned char *bin = malloc(size);
    unsigned char *bins[] = {bin};
    if (!bin ||
        clGetProgramInfo(program, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL) != CL_SUCCESS) {
        free(bin);
        return;
    }
    cache_header h;
    memcpy(h.magic, CACHE_MAGIC, 8);
    h.key = key;
    h.size = size;
    h.checksum = fnv(FNV_BASIS, bin, size);

    char tmp[4096];
    /* The directory itself is created (one level) so that pointing the variable at a new
     * directory is enough. */
    const char *dir = getenv("AG_OPENCL_CACHE_DIR");
    if (dir && mkdir(dir, 0777) != 0 && errno != EEXIST) dir = NULL;
    int fd = -1;
    if (dir && (size_t)snprintf(tmp, sizeof tmp, "%s.XXXXXX", path) < sizeof tmp) fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (fd >= 0 && !f) close(fd);
    if (f) {
        const bool written = fwrite(&h, sizeof h, 1, f) == 1 && fwrite(bin, 1, size, f) == size;
        if (fclose(f) != 0 || !written || rename(tmp, path) != 0) unlink(tmp);
    }
    free(bin);
}

/* ---- program cache ---- */

/* The program of `source` for (device, dtype, extra defines), built or from the caches; a
 * bare source gets neither common.cl nor defines. */
static ag_status program_get(int device, const char *source, bool bare, ag_dtype dtype,
                             const char *extra_defines, const char *label, cl_program *out) {
    const ocl_device *d = ocl_device_at(device);
    if (!d)
        return ocl_fail(AG_ERR_DEVICE, "opencl: kernel '%s' on device %d (%d devices)", label,
                        device, ocl_device_count());
    const char *type = cl_type(dtype);
    if (!type)
        return ocl_fail(AG_ERR_UNSUPPORTED, "opencl: kernel '%s' has no %s version", label,
                        ag_dtype_name(dtype));
    if (dtype == AG_F64 && !d->fp64)
        return ocl_fail(AG_ERR_UNSUPPORTED,
                        "opencl: kernel '%s' for float64 cannot run on device %d (%s): it lacks "
                        "cl_khr_fp64",
                        label, device, d->name);
    char options[512];
    const int n = bare ? snprintf(options, sizeof options, "-cl-std=CL1.2")
                       : snprintf(options, sizeof options, "-cl-std=CL1.2 -D T=%s -D T_ID=%d %s",
                                  type, (int)dtype, extra_defines ? extra_defines : "");
    if (n < 0 || (size_t)n >= sizeof options)
        return ocl_fail(AG_ERR_INVALID_ARG, "opencl: build options of kernel '%s' too long", label);
    uint64_t hash = fnv_str(FNV_BASIS, options);
    hash = fnv_str(hash, bare ? "" : ocl_source_common);
    hash = fnv_str(hash, source);

    pthread_mutex_lock(&g_lock);
    for (const program_entry *p = g_programs; p; p = p->next) {
        if (p->device == device && p->hash == hash) {
            *out = p->program;
            pthread_mutex_unlock(&g_lock);
            return AG_OK;
        }
    }
    pthread_mutex_unlock(&g_lock);

    cl_program program = NULL;
    char path[4096];
    const uint64_t key = fnv_u64(device_identity(d), hash);
    const bool disk = cache_path(key, path, sizeof path);
    if (!disk || !cache_load(d, path, key, options, &program)) {
        const ag_status st =
            build_from_source(device, source, bare, options, label, dtype, &program);
        if (st != AG_OK) return st;
        if (disk) cache_store(program, path, key);
    }

    program_entry *e = malloc(sizeof *e);
    if (!e) {
        clReleaseProgram(program);
        return ocl_fail(AG_ERR_OUT_OF_MEMORY, "opencl: out of host memory caching a program");
    }
    pthread_mutex_lock(&g_lock);
    /* Another thread may have built the same program meanwhile: keep one. */
    for (const program_entry *p = g_programs; p; p = p->next) {
        if (p->device == device && p->hash == hash) {
            pthread_mutex_unlock(&g_lock);
            clReleaseProgram(program);
            free(e);
            *out = p->program;
            return AG_OK;
        }
    }
    e->device = device;
    e->hash = hash;
    e->program = program;
    e->next = g_programs;
    g_programs = e;
    pthread_mutex_unlock(&g_lock);
    *out = program;
    return AG_OK;
}

/* Creates kernel `name` of program (built for device). */
static ag_status create_kernel(cl_program program, const char *name, int device, cl_kernel *out) {
    cl_int err;
    *out = clCreateKernel(program, name, &err);
    if (err == CL_SUCCESS) return AG_OK;
    char what[160];
    snprintf(what, sizeof what, "clCreateKernel of '%.64s' on device %d", name, device);
    return ocl_check(err, what);
}

/* ---- kernel cache ---- */

/* Hash of a kernel cache key. */
static uint64_t kernel_key(int device, const char *source, bool bare, ag_dtype dtype,
                           const char *defines, const char *name, pthread_t thread) {
    uint64_t h = fnv_u64(FNV_BASIS, (uint64_t)device);
    h = fnv_u64(h, (uint64_t)(uintptr_t)source);
    h = fnv_u64(h, (uint64_t)bare);
    h = fnv_u64(h, (uint64_t)dtype);
    h = fnv_str(h, defines);
    h = fnv_str(h, name);
    return fnv(h, &thread, sizeof thread);
}

/* ocl_kernel_get, and ocl_source_kernel_get when bare. */
static ag_status kernel_get(int device, const char *source, bool bare, ag_dtype dtype,
                            const char *extra_defines, const char *kernel_name, cl_kernel *out) {
    if (!source || !kernel_name || !out)
        return ocl_fail(AG_ERR_INVALID_ARG, "opencl: ocl_kernel_get with a NULL pointer");
    const char *defines = extra_defines ? extra_defines : "";
    const pthread_t self = pthread_self();
    const uint64_t hash = kernel_key(device, source, bare, dtype, defines, kernel_name, self);
    kernel_entry **bucket = &g_kernels[hash % KERNEL_BUCKETS];

    pthread_mutex_lock(&g_lock);
    for (const kernel_entry *e = *bucket; e; e = e->next) {
        if (e->hash == hash && e->device == device && e->source == source && e->bare == bare &&
            e->dtype == dtype && pthread_equal(e->thread, self) &&
            strcmp(e->defines, defines) == 0 && strcmp(e->name, kernel_name) == 0) {
            *out = e->kernel;
            pthread_mutex_unlock(&g_lock);
            return AG_OK;
        }
    }
    pthread_mutex_unlock(&g_lock);

    /* Only this thread adds entries with its own key: no other can race to add this one. */
    cl_program program;
    ag_status st = program_get(device, source, bare, dtype, defines, kernel_name, &program);
    cl_kernel kernel = NULL;
    if (st == AG_OK) st = create_kernel(program, kernel_name, device, &kernel);
    if (st != AG_OK) return st;
    ocl_exit_guard_dirty();
    kernel_entry *e = calloc(1, sizeof *e);
    if (e) {
        e->defines = strdup(defines);
        e->name = strdup(kernel_name);
    }
    if (!e || !e->defines || !e->name) {
        if (e) {
            free(e->defines);
            free(e->name);
        }
        free(e);
        clReleaseKernel(kernel);
        return ocl_fail(AG_ERR_OUT_OF_MEMORY, "opencl: out of host memory caching a kernel");
    }
    e->hash = hash;
    e->device = device;
    e->source = source;
    e->bare = bare;
    e->dtype = dtype;
    e->thread = self;
    e->kernel = kernel;
    pthread_mutex_lock(&g_lock);
    e->next = *bucket;
    *bucket = e;
    pthread_mutex_unlock(&g_lock);
    *out = kernel;
    return AG_OK;
}

ag_status ocl_kernel_get(int device, const char *source, ag_dtype dtype, const char *extra_defines,
                         const char *kernel_name, cl_kernel *out) {
    return kernel_get(device, source, false, dtype, extra_defines, kernel_name, out);
}

ag_status ocl_source_kernel_get(int device, const char *source, const char *entry, cl_kernel *out) {
    return kernel_get(device, source, true, AG_F32, NULL, entry, out);
}

/* Builds source (bare or not) on device and creates kernel_name to see that it exists. */
static ag_status build_check(int device, const char *source, bool bare, const char *kernel_name) {
    if (!source || !kernel_name)
        return ocl_fail(AG_ERR_INVALID_ARG, "opencl: building a kernel with a NULL pointer");
    cl_program program;
    ag_status st = program_get(device, source, bare, AG_F32, NULL, kernel_name, &program);
    cl_kernel kernel = NULL;
    if (st == AG_OK) st = create_kernel(program, kernel_name, device, &kernel);
    if (kernel) clReleaseKernel(kernel);
    return st;
}

ag_status ocl_build_test(int device, const char *source, const char *kernel_name) {
    return build_check(device, source, false, kernel_name);
}

ag_status ocl_source_build(int device, const char *source, const char *entry) {
    return build_check(device, source, true, entry);
}

void ocl_program_shutdown(void) {
    pthread_mutex_lock(&g_lock);
    for (int b = 0; b < KERNEL_BUCKETS; b++) {
        while (g_kernels[b]) {
            kernel_entry *e = g_kernels[b];
            g_kernels[b] = e->next;
            clReleaseKernel(e->kernel);
            free(e->defines);
            free(e->name);
            free(e);
        }
    }
    while (g_programs) {
        program_entry *p = g_programs;
        g_programs = p->next;
        clReleaseProgram(p->program);
        free(p);
    }
    pthread_mutex_unlock(&g_lock);
}
