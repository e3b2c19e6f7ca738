/* IDX files (the MNIST format) and the MNIST/Fashion-MNIST data sets.
 *
 * An IDX file is: 0x00 0x00, an element type byte, a dim count byte, one big-endian u32
 * per dim, then the elements, big-endian. zlib's gz* functions read gzip and plain files
 * alike, so the format is told by content, not by the name. Nothing is allocated from
 * the header's claims alone: the data buffer grows as bytes arrive, so a lying header
 * gives a "truncated" error instead of a huge allocation. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include "ag/data.h"
#include "../core/internal.h"

/* An element type of the format. */
typedef struct idx_type {
    unsigned char code; /* byte 2 of the magic */
    int size;           /* bytes per element */
    const char *name;   /* for messages */
} idx_type;

static const idx_type idx_types[] = {
    {0x08, 1, "u8"},  {0x09, 1, "i8"},  {0x0B, 2, "i16"},
    {0x0C, 4, "i32"}, {0x0D, 4, "f32"}, {0x0E, 8, "f64"},
};

/* A file read into memory, elements still big-endian. */
typedef struct idx_file {
    const idx_type *type;
    int ndim;
    int64_t dims[AG_MAX_DIMS];
    int64_t numel;
    unsigned char *data; /* numel * type->size bytes */
} idx_file;

/* Reads up to `want` bytes; returns how many arrived, or -1 on a read error. */
static int64_t gz_read_all(gzFile gz, void *buf, int64_t want) {
    int64_t got = 0;
    while (got < want) {
        /* gzread takes an unsigned count: read in chunks well below its limit. */
        unsigned chunk = (unsigned)(want - got < (1 << 30) ? want - got : (1 << 30));
        int n = gzread(gz, (unsigned char *)buf + got, chunk);
        if (n < 0) return -1;
        if (n == 0) break;
        got += n;
    }
    return got;
}

/* AG_ERR_IO for a read that failed or came up short of `want` bytes of `what`. */
static ag_status short_read(const char *path, gzFile gz, const char *what, int64_t want,
                            int64_t got) {
    int err = Z_OK;
    const char *msg = gzerror(gz, &err);
    if (got < 0) return ag__error(AG_ERR_IO, "%s: read error: %s", path, msg);
    /* A cut gzip stream also sets Z_BUF_ERROR ("unexpected end of file"): say so. */
    return ag__error(AG_ERR_IO, "%s: truncated: expected %lld bytes of %s, got %lld%s%s%s", path,
                     (long long)want, what, (long long)got, err != Z_OK ? " (gzip: " : "",
                     err != Z_OK ? msg : "", err != Z_OK ? ")" : "");
}

/* Magic, type and dims of an open file into f. */
static ag_status read_header(const char *path, gzFile gz, idx_file *f) {
    unsigned char magic[4], raw[4 * AG_MAX_DIMS];
    int64_t got = gz_read_all(gz, magic, 4);
    if (got != 4) return short_read(path, gz, "header", 4, got);
    if (magic[0] != 0 || magic[1] != 0)
        return ag__error(AG_ERR_IO,
                         "%s: not an IDX file: bad magic %02x %02x %02x %02x (expected 00 00 "
                         "<type> <dims>)",
                         path, magic[0], magic[1], magic[2], magic[3]);
    f->type = NULL;
    for (size_t i = 0; i < sizeof idx_types / sizeof idx_types[0]; i++)
        if (idx_types[i].code == magic[2]) f->type = &idx_types[i];
    if (!f->type)
        return ag__error(AG_ERR_IO,
                         "%s: unknown IDX element type 0x%02x (expected 0x08, 0x09, 0x0B, "
                         "0x0C, 0x0D or 0x0E)",
                         path, magic[2]);
    f->ndim = magic[3];
    if (f->ndim < 1 || f->ndim > AG_MAX_DIMS)
        return ag__error(AG_ERR_IO, "%s: %d dims in the header (expected 1 to %d)", path, f->ndim,
                         AG_MAX_DIMS);
    got = gz_read_all(gz, raw, 4 * f->ndim);
    if (got != 4 * f->ndim) return short_read(path, gz, "header", 4 * f->ndim, got);
    /* The product is checked against the bytes addressable in a size_t and an int64. */
    int64_t limit = (int64_t)(SIZE_MAX < INT64_MAX ? SIZE_MAX : INT64_MAX) / f->type->size;
    f->numel = 1;
    for (int d = 0; d < f->ndim; d++) {
        const unsigned char *b = raw + 4 * d;
        f->dims[d] = (int64_t)b[0] << 24 | (int64_t)b[1] << 16 | (int64_t)b[2] << 8 | b[3];
        if (f->dims[d] == 0)
            return ag__error(AG_ERR_IO, "%s: dim %d is 0 (IDX dims must be positive)", path, d);
        if (f->numel > limit / f->dims[d])
            return ag__error(AG_ERR_IO, "%s: dims overflow: the element count is too large", path);
        f->numel *= f->dims[d];
    }
    return AG_OK;
}

/* Reads the elements, growing the buffer as they arrive, and refuses trailing bytes. */
static ag_status read_data(const char *path, gzFile gz, idx_file *f) {
    int64_t want = f->numel * f->type->size, got = 0, cap = 0;
    while (got < want) {
        int64_t next = cap ? cap * 2 : 1 << 20;
        if (next > want) next = want;
        unsigned char *grown = ag__realloc(f->data, (size_t)next);
        if (!grown)
            return ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory reading %lld bytes",
                             path, (long long)want);
        f->data = grown;
        cap = next;
        int64_t n = gz_read_all(gz, f->data + got, cap - got);
        if (n < 0) return short_read(path, gz, "data", want, n);
        got += n;
        if (got < cap) return short_read(path, gz, "data", want, got);
    }
    unsigned char extra[4096];
    int64_t trailing = 0, n;
    while ((n = gz_read_all(gz, extra, sizeof extra)) > 0) trailing += n;
    if (n < 0) return short_read(path, gz, "data", want, n);
    if (trailing)
        return ag__error(AG_ERR_IO,
                         "%s: %lld bytes of trailing data after the %lld the header announces",
                         path, (long long)trailing, (long long)want);
    return AG_OK;
}

/* Opens, validates and reads a whole file into f (freed with idx_free). */
static ag_status idx_load(const char *path, idx_file *f) {
    memset(f, 0, sizeof *f);
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz)
        return ag__error(AG_ERR_IO, "cannot open %s: %s", path,
                         errno ? strerror(errno) : "out of memory");
    gzbuffer(gz, 1 << 17);
    ag_status st = read_header(path, gz, f);
    if (st == AG_OK) st = read_data(path, gz, f);
    gzclose(gz);
    return st;
}

/* Frees what idx_load read. */
static void idx_free(idx_file *f) {
    free(f->data);
    f->data = NULL;
}

/* Element i as a double (every IDX type fits one exactly). */
static double element(const idx_file *f, int64_t i) {
    const unsigned char *b = f->data + i * f->type->size;
    uint64_t u = 0;
    for (int k = 0; k < f->type->size; k++) u = u << 8 | b[k];
    switch (f->type->code) {
    case 0x08:
        return (double)u;
    case 0x09:
        return (double)(int8_t)u;
    case 0x0B:
        return (double)(int16_t)u;
    case 0x0C:
        return (double)(int32_t)u;
    case 0x0D: {
        uint32_t u32 = (uint32_t)u;
        float v;
        memcpy(&v, &u32, sizeof v);
        return v;
    }
    default: {
        double v;
        memcpy(&v, &u, sizeof v);
        return v;
    }
    }
}

/* Elements converted per chunk by to_tensor. */
#define CONVERT_CHUNK 65536

/* Converts elements [begin, begin + n) of f to dtype into buf (n elements of dtype); float
 * dtypes are divided by `divisor` in their own precision (as torch's x.float() / 255). */
static ag_status convert(const char *path, const idx_file *f, ag_dtype dtype, double divisor,
                         int64_t begin, int64_t n, void *buf) {
    for (int64_t k = 0; k < n; k++) {
        double v = element(f, begin + k);
        if (dtype == AG_F32) {
            ((float *)buf)[k] = (float)v / (float)divisor;
        } else if (dtype == AG_F64) {
            ((double *)buf)[k] = v / divisor;
        } else if (v == trunc(v) && fabs(v) < 0x1p63) { /* NaN and inf fail the test too */
            ((int64_t *)buf)[k] = (int64_t)v;
        } else {
            return ag__error(AG_ERR_IO,
                             "%s: element %lld (%g) is not an integer, cannot read as int64", path,
                             (long long)(begin + k), v);
        }
    }
    return AG_OK;
}

/* A tensor of dtype (float32, float64 or int64) with the given shape holding f's elements,
 * on the default device. Converted a chunk at a time straight into the tensor's storage:
 * a converted copy of the whole file besides the tensor would double the peak memory of a
 * load (188 MB more for Fashion-MNIST's training images). */
static ag_tensor *to_tensor(const char *path, const idx_file *f, ag_dtype dtype, double divisor,
                            int ndim, const int64_t *shape) {
    const size_t esize = ag_dtype_size(dtype);
    const ag_device dev = ag_default_device();
    ag_tensor *t = ag__tensor_alloc(dtype, ndim, shape, dev);
    void *buf = ag__malloc(CONVERT_CHUNK * esize);
    ag_status st = t && buf ? AG_OK
                            : ag__error_if_none(AG_ERR_OUT_OF_MEMORY,
                                                "%s: out of memory converting %lld elements", path,
                                                (long long)f->numel);
    const ag_backend *be = ag__backend(dev.backend);
    for (int64_t at = 0; st == AG_OK && at < f->numel; at += CONVERT_CHUNK) {
        const int64_t n = f->numel - at < CONVERT_CHUNK ? f->numel - at : CONVERT_CHUNK;
        st = convert(path, f, dtype, divisor, at, n, buf);
        if (st == AG_OK &&
            (st = be->iface.copy_from_host(dev.index, t->storage->data, (size_t)at * esize, buf,
                                           (size_t)n * esize)) != AG_OK)
            ag__error(st, "%s: copy to %s failed: %s", path, be->iface.name,
                      be->iface.last_error());
    }
    free(buf);
    if (st != AG_OK) {
        ag_release(t);
        return NULL;
    }
    return ag__scope_adopt(t);
}

/* Reads an IDX file into a tensor of dtype (see data.h). */
ag_status ag_idx_read(const char *path, ag_dtype dtype, ag_tensor **out) {
    if (!path || !out) return ag__error(AG_ERR_INVALID_ARG, "ag_idx_read: path or out is NULL");
    *out = NULL;
    if (dtype != AG_F32 && dtype != AG_F64 && dtype != AG_I64)
        return ag__error(AG_ERR_DTYPE, "%s: cannot read IDX data as %s (float32, float64 or int64)",
                         path, ag_dtype_name(dtype));
    idx_file f;
    ag_status st = idx_load(path, &f);
    if (st == AG_OK) {
        *out = to_tensor(path, &f, dtype, 1.0, f.ndim, f.dims);
        if (!*out) st = ag_last_status();
    }
    idx_free(&f);
    return st;
}

/* dir/<base>.gz or dir/<base> into path, whichever exists (.gz first); an error naming
 * both otherwise. */
static ag_status find_file(const char *dir, const char *base, char *path, size_t size) {
    static const char *const suffixes[] = {".gz", ""};
    for (int i = 0; i < 2; i++) {
        snprintf(path, size, "%s/%s%s", dir, base, suffixes[i]);
        if (access(path, F_OK) == 0) return AG_OK;
    }
    return ag__error(AG_ERR_IO, "mnist: %s not found in %s (tried %s/%s.gz and %s/%s)", base, dir,
                     dir, base, dir, base);
}

/* Loads one split's images and labels from dir into out (all or nothing). */
static ag_status load_split(const char *dir, bool train, ag_image_dataset *out) {
    const char *split = train ? "train" : "t10k";
    char base[64], images_path[4096], labels_path[4096];
    snprintf(base, sizeof base, "%s-images-idx3-ubyte", split);
    ag_status st = find_file(dir, base, images_path, sizeof images_path);
    snprintf(base, sizeof base, "%s-labels-idx1-ubyte", split);
    if (st == AG_OK) st = find_file(dir, base, labels_path, sizeof labels_path);
    idx_file images = {0}, labels = {0};
    if (st == AG_OK) st = idx_load(images_path, &images);
    if (st == AG_OK) st = idx_load(labels_path, &labels);
    if (st == AG_OK && images.ndim != 3)
        st = ag__error(AG_ERR_IO, "%s: expected 3 dims [N, rows, cols], got %d", images_path,
                       images.ndim);
    if (st == AG_OK && labels.ndim != 1)
        st = ag__error(AG_ERR_IO, "%s: expected 1 dim [N], got %d", labels_path, labels.ndim);
    if (st == AG_OK && images.dims[0] != labels.dims[0])
        st = ag__error(AG_ERR_IO, "mnist: %s has %lld images but %s has %lld labels", images_path,
                       (long long)images.dims[0], labels_path, (long long)labels.dims[0]);
    int64_t classes = 0;
    for (int64_t i = 0; st == AG_OK && i < labels.numel; i++) {
        double v = element(&labels, i);
        if (v < 0 || v != trunc(v))
            st = ag__error(AG_ERR_IO, "%s: label %lld is %g (labels must be integers >= 0)",
                           labels_path, (long long)i, v);
        else if (v + 1 > classes)
            classes = (int64_t)v + 1;
    }
    if (st == AG_OK) {
        /* The tensors belong to the data set, not to the caller's scope. */
        ag_scope *scope = ag_scope_begin();
        int64_t shape[2] = {images.dims[0], images.dims[1] * images.dims[2]};
        out->images = ag_keep(to_tensor(images_path, &images, AG_F32, 255.0, 2, shape));
        out->labels = ag_keep(to_tensor(labels_path, &labels, AG_I64, 1.0, 1, labels.dims));
        st = out->images && out->labels ? AG_OK : ag_last_status();
        ag_scope_end(scope);
        out->count = images.dims[0];
        out->rows = images.dims[1];
        out->cols = images.dims[2];
        out->classes = classes;
    }
    idx_free(&images);
    idx_free(&labels);
    return st;
}

/* Loads the MNIST-named IDX files of a split (see data.h). */
ag_status ag_mnist_load(const char *dir, bool train, ag_image_dataset *out) {
    if (!dir || !out) return ag__error(AG_ERR_INVALID_ARG, "ag_mnist_load: dir or out is NULL");
    memset(out, 0, sizeof *out);
    struct stat sb;
    int rc = stat(dir, &sb);
    if (rc != 0 || !S_ISDIR(sb.st_mode)) {
        const char *split = train ? "train" : "t10k";
        return ag__error(AG_ERR_IO,
                         "mnist: data directory %s: %s (expected %s-images-idx3-ubyte[.gz] and "
                         "%s-labels-idx1-ubyte[.gz] in it)",
                         dir, rc != 0 ? strerror(errno) : "not a directory", split, split);
    }
    ag_status st = load_split(dir, train, out);
    if (st != AG_OK) ag_image_dataset_free(out);
    return st;
}

/* Releases a data set's tensors and zeroes it. */
void ag_image_dataset_free(ag_image_dataset *ds) {
    if (!ds) return;
    ag_release(ds->images);
    ag_release(ds->labels);
    memset(ds, 0, sizeof *ds);
}
