/* Data and files: IDX reading (every element type, plain and gzip, malformed files),
 * MNIST-named data sets (a small one written here, and the installed Fashion-MNIST), the
 * minibatch loader (order, epochs, drop_last, shards as torch's DistributedSampler),
 * safetensors (round trips, a file written by PyTorch, a table of corrupt files, atomic
 * writes) and checkpoints of a model with its optimizer (exact resume, strict loading). */
#define _GNU_SOURCE /* nftw */
#include <check.h>
#include <float.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include "ag/ag.h"
#include "ag/data.h"
#include "ag/io.h"
#include "ag/nn.h"
#include "ag/optim.h"
#include "test_util.h"

static char tmpdir[64]; /* made by main, removed at the end */

/* ---- helpers ---- */

/* tmpdir/name in one of four rotating buffers (enough for one call's arguments). */
static const char *tmp(const char *name) {
    static char bufs[4][256];
    static int next;
    char *buf = bufs[next++ % 4];
    snprintf(buf, sizeof bufs[0], "%s/%s", tmpdir, name);
    return buf;
}

/* Asserts t has `shape` and the row-major values `want` exactly. */
#define expect_values(t, ndim, shape, want) expect_values_at(__LINE__, (t), (ndim), (shape), (want))
static void expect_values_at(int line, const ag_tensor *t, int ndim, const int64_t *shape,
                             const double *want) {
    char msg[512] = "";
    bool ok = tu_values_are(t, ndim, shape, want, 0, 0, msg, sizeof msg, NULL);
    ck_assert_msg(ok, "line %d: %s", line, msg);
}

/* Writes len bytes to path, gzip-compressed if asked. */
static void write_file(const char *path, const void *bytes, size_t len, bool gzip) {
    if (gzip) {
        gzFile gz = gzopen(path, "wb");
        ck_assert_ptr_nonnull(gz);
        ck_assert_int_eq(len ? gzwrite(gz, bytes, (unsigned)len) : 0, (int)len);
        ck_assert_int_eq(gzclose(gz), Z_OK);
    } else {
        tu_write_file(path, bytes, len);
    }
}

/* The whole content of a file (malloc'd) and its size; the test fails if it is unreadable. */
static unsigned char *read_whole(const char *path, size_t *len) {
    unsigned char *bytes = tu_read_file(path, len);
    ck_assert_msg(bytes != NULL, "cannot read %s: %s", path, strerror(errno));
    return bytes;
}

/* ---- IDX ---- */

/* Element size of an IDX type code (1 for unknown codes, for the bad-type test). */
static int idx_size(unsigned char type) {
    return type == 0x0B ? 2 : type == 0x0C || type == 0x0D ? 4 : type == 0x0E ? 8 : 1;
}

/* Appends v as a big-endian element of `type` at out; returns the bytes written. */
static int encode_be(unsigned char type, double v, unsigned char *out) {
    uint64_t bits = (uint64_t)(int64_t)v;
    if (type == 0x0D) {
        float f = (float)v;
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        bits = u;
    } else if (type == 0x0E) {
        memcpy(&bits, &v, sizeof bits);
    }
    int size = idx_size(type);
    for (int k = 0; k < size; k++) out[k] = (unsigned char)(bits >> (8 * (size - 1 - k)));
    return size;
}

/* An IDX file to write: its magic, dims and values, then `trailing` extra bytes, the whole
 * shortened by `cut` bytes. */
typedef struct idx_spec {
    unsigned char magic[4]; /* 0, 0, type, ndim */
    uint32_t dims[9];
    const double *values;
    int n;
    int trailing, cut;
} idx_spec;

static void write_idx(const char *path, const idx_spec *s, bool gzip) {
    size_t cap = 4 + 4 * 255 + (size_t)s->n * 8 + (size_t)s->trailing;
    unsigned char *buf = calloc(1, cap), *p = buf;
    ck_assert_ptr_nonnull(buf);
    memcpy(p, s->magic, 4);
    p += 4;
    for (int d = 0; d < s->magic[3] && d < 9; d++, p += 4)
        for (int k = 0; k < 4; k++) p[k] = (unsigned char)(s->dims[d] >> (8 * (3 - k)));
    for (int i = 0; i < s->n; i++) p += encode_be(s->magic[2], s->values[i], p);
    for (int i = 0; i < s->trailing; i++) *p++ = 0xAB;
    write_file(path, buf, (size_t)(p - buf) - (size_t)s->cut, gzip);
    free(buf);
}

/* Reads path as dtype; asserts it fails with `want` and words. */
#define expect_idx_error(path, dtype, want, words)                                                 \
    do {                                                                                           \
        ag_tensor *t_ = (ag_tensor *)1;                                                            \
        tu_expect_error(ag_idx_read((path), (dtype), &t_), (want), (words));                       \
        ck_assert_ptr_null(t_);                                                                    \
    } while (0)

START_TEST(idx_reads_every_element_type_plain_and_gzip) {
    static const struct {
        unsigned char type;
        double values[6];
    } cases[] = {
        {0x08, {0, 1, 127, 128, 200, 255}},
        {0x09, {-128, -1, 0, 1, 100, 127}},
        {0x0B, {-32768, -2, 0, 300, 4097, 32767}},
        {0x0C, {-2147483648.0, -70000, 0, 70000, 16777217, 2147483647}},
        {0x0D, {0.5, -1.25, 3e38, 1e-40, -0.0, 0.1}},
        {0x0E, {1.0 / 3, -1e300, 5e-324, 0.1, 2.5, -7}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        double want[6];
        for (int i = 0; i < 6; i++)
            want[i] =
                cases[c].type == 0x0D ? (double)(float)cases[c].values[i] : cases[c].values[i];
        idx_spec s = {{0, 0, cases[c].type, 3}, {2, 1, 3}, cases[c].values, 6, 0, 0};
        for (int gz = 0; gz < 2; gz++) {
            const char *path = tmp(gz ? "types.idx.gz" : "types.idx");
            write_idx(path, &s, gz);
            ag_tensor *t = NULL;
            ck_assert_int_eq(ag_idx_read(path, AG_F64, &t), AG_OK);
            ck_assert_int_eq(ag_dtype_of(t), AG_F64);
            expect_values(t, 3, TU_SHAPE(2, 1, 3), want);
            /* Integer files read exactly as int64 and as float32 (rounded as a cast). */
            if (cases[c].type <= 0x0C) {
                ck_assert_int_eq(ag_idx_read(path, AG_I64, &t), AG_OK);
                int64_t got[6];
                ck_assert_int_eq(ag_to_host(t, got, sizeof got), AG_OK);
                for (int i = 0; i < 6; i++) ck_assert_int_eq(got[i], (int64_t)want[i]);
            }
            ck_assert_int_eq(ag_idx_read(path, AG_F32, &t), AG_OK);
            double as_f32[6];
            /* Beyond float's range a cast is undefined in ISO C: GCC 12 at -O3 folded this
             * loop wrongly while -1e300 went through one (16777217 kept its last bit). */
            for (int i = 0; i < 6; i++)
                as_f32[i] =
                    fabs(want[i]) > FLT_MAX ? copysign(INFINITY, want[i]) : (double)(float)want[i];
            expect_values(t, 3, TU_SHAPE(2, 1, 3), as_f32);
        }
    }
}
END_TEST

START_TEST(idx_one_dim_and_eight_dims) {
    idx_spec one = {{0, 0, 0x08, 1}, {4}, TU_VALUES(9, 8, 7, 6), 4, 0, 0};
    write_idx(tmp("one.idx"), &one, false);
    ag_tensor *t = NULL;
    ck_assert_int_eq(ag_idx_read(tmp("one.idx"), AG_F32, &t), AG_OK);
    expect_values(t, 1, TU_SHAPE(4), TU_VALUES(9, 8, 7, 6));
    idx_spec eight = {{0, 0, 0x08, 8}, {1, 2, 1, 1, 1, 1, 1, 2}, TU_VALUES(1, 2, 3, 4), 4, 0, 0};
    write_idx(tmp("eight.idx"), &eight, true);
    ck_assert_int_eq(ag_idx_read(tmp("eight.idx"), AG_F64, &t), AG_OK);
    expect_values(t, 8, TU_SHAPE(1, 2, 1, 1, 1, 1, 1, 2), TU_VALUES(1, 2, 3, 4));
}
END_TEST

START_TEST(idx_malformed_files_are_io_errors) {
    const double *v = TU_VALUES(1, 2, 3, 4, 5, 6);
    static const struct {
        idx_spec spec;
        const char *words;
    } cases[] = {
        {{{0, 0, 0x08, 2}, {2, 3}, NULL, 4, 0, 0}, "truncated: expected 6 bytes of data, got 4"},
        {{{0, 0, 0x0B, 1}, {3}, NULL, 3, 0, 1}, "truncated: expected 6 bytes of data, got 5"},
        {{{0, 0, 0x08, 2}, {2, 3}, NULL, 0, 0, 5}, "truncated: expected 8 bytes of header, got 3"},
        {{{0, 0, 0x08, 2}, {2, 3}, NULL, 0, 0, 11}, "truncated: expected 4 bytes of header, got 1"},
        {{{1, 0, 0x08, 1}, {6}, NULL, 6, 0, 0}, "bad magic 01 00 08 01"},
        {{{0, 0, 0x0A, 1}, {6}, NULL, 6, 0, 0}, "unknown IDX element type 0x0a"},
        {{{0, 0, 0x08, 0}, {6}, NULL, 6, 0, 0}, "0 dims in the header"},
        {{{0, 0, 0x08, 9}, {1, 1, 1, 1, 1, 1, 1, 1, 6}, NULL, 6, 0, 0}, "9 dims in the header"},
        {{{0, 0, 0x08, 2}, {3, 0}, NULL, 0, 0, 0}, "dim 1 is 0"},
        {{{0, 0, 0x0E, 3}, {0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, NULL, 0, 0, 0}, "dims overflow"},
        {{{0, 0, 0x08, 1}, {6}, NULL, 6, 3, 0}, "3 bytes of trailing data after the 6"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        idx_spec s = cases[c].spec;
        s.values = v;
        for (int gz = 0; gz < 2; gz++) {
            const char *path = tmp(gz ? "bad.idx.gz" : "bad.idx");
            write_idx(path, &s, gz);
            char words[200];
            snprintf(words, sizeof words, "%s|%s", path, cases[c].words);
            expect_idx_error(path, AG_F32, AG_ERR_IO, words);
        }
    }
}
END_TEST

START_TEST(idx_huge_dims_fail_without_allocating_them) {
    /* 2^62 bytes claimed, 2 present: an error, not a 4-exabyte malloc. */
    idx_spec s = {{0, 0, 0x08, 2}, {0x7FFFFFFF, 0x7FFFFFFF}, TU_VALUES(1, 2), 2, 0, 0};
    write_idx(tmp("huge.idx"), &s, false);
    expect_idx_error(tmp("huge.idx"), AG_F32, AG_ERR_IO,
                     "truncated: expected 4611686014132420609 bytes of data, got 2");
}
END_TEST

START_TEST(idx_missing_unreadable_and_unconvertible) {
    expect_idx_error(tmp("no-such.idx"), AG_F32, AG_ERR_IO,
                     "cannot open|no-such.idx|No such file or directory");
    write_file(tmp("notgzip.idx.gz"), "\x1f\x8b\x08\x00garbage-garbage-garbage", 27, false);
    expect_idx_error(tmp("notgzip.idx.gz"), AG_F32, AG_ERR_IO, "notgzip.idx.gz");
    /* A cut gzip stream is a truncated file. */
    idx_spec s = {{0, 0, 0x0C, 1}, {64}, NULL, 64, 0, 0};
    double vals[64];
    for (int i = 0; i < 64; i++) vals[i] = i * 1000003.0;
    s.values = vals;
    write_idx(tmp("cut.idx.gz"), &s, true);
    size_t len;
    unsigned char *gz = read_whole(tmp("cut.idx.gz"), &len);
    write_file(tmp("cut.idx.gz"), gz, len / 2, false);
    free(gz);
    expect_idx_error(tmp("cut.idx.gz"), AG_F32, AG_ERR_IO, "cut.idx.gz|truncated");
    /* Fractional values cannot become int64; float16 has no storage. */
    idx_spec f = {{0, 0, 0x0D, 1}, {2}, TU_VALUES(1, 2.5), 2, 0, 0};
    write_idx(tmp("frac.idx"), &f, false);
    expect_idx_error(tmp("frac.idx"), AG_I64, AG_ERR_IO, "element 1 (2.5) is not an integer");
    expect_idx_error(tmp("frac.idx"), AG_F16, AG_ERR_DTYPE, "cannot read IDX data as float16");
    tu_expect_error(ag_idx_read(NULL, AG_F32, &(ag_tensor *){NULL}), AG_ERR_INVALID_ARG, "NULL");
}
END_TEST

/* ---- MNIST-named data sets ---- */

/* Writes a 3-image, 2x2 split named like MNIST into tmpdir/mnist (images gzip, labels
 * plain: both forms are found). */
static void write_small_mnist(int n_labels) {
    mkdir(tmp("mnist"), 0755);
    idx_spec images = {{0, 0, 0x08, 3},
                       {3, 2, 2},
                       TU_VALUES(0, 255, 51, 1, 2, 3, 4, 5, 254, 128, 64, 32),
                       12,
                       0,
                       0};
    write_idx(tmp("mnist/train-images-idx3-ubyte.gz"), &images, true);
    idx_spec labels = {
        {0, 0, 0x08, 1}, {(uint32_t)n_labels}, TU_VALUES(2, 0, 7, 1), n_labels, 0, 0};
    write_idx(tmp("mnist/train-labels-idx1-ubyte"), &labels, false);
}

START_TEST(mnist_small_split_scales_pixels_and_counts_classes) {
    write_small_mnist(3);
    ag_image_dataset ds;
    ck_assert_int_eq(ag_mnist_load(tmp("mnist"), true, &ds), AG_OK);
    ck_assert_int_eq(ds.count, 3);
    ck_assert_int_eq(ds.rows, 2);
    ck_assert_int_eq(ds.cols, 2);
    ck_assert_int_eq(ds.classes, 8);
    double want[12];
    const double *px = TU_VALUES(0, 255, 51, 1, 2, 3, 4, 5, 254, 128, 64, 32);
    for (int i = 0; i < 12; i++) want[i] = (double)((float)px[i] / 255.0f); /* torch's x/255 */
    expect_values(ds.images, 2, TU_SHAPE(3, 4), want);
    ck_assert_int_eq(ag_dtype_of(ds.labels), AG_I64);
    expect_values(ds.labels, 1, TU_SHAPE(3), TU_VALUES(2, 0, 7));
    ag_image_dataset_free(&ds);
    ck_assert_ptr_null(ds.images);
    ag_image_dataset_free(&ds); /* freeing twice is harmless */
}
END_TEST

START_TEST(mnist_errors_name_what_is_wrong) {
    ag_image_dataset ds;
    tu_expect_error(ag_mnist_load(tmp("nowhere"), true, &ds), AG_ERR_IO,
                    "data directory|nowhere|No such file or directory|train-images-idx3-ubyte");
    ck_assert_ptr_null(ds.images);
    write_small_mnist(4);
    tu_expect_error(ag_mnist_load(tmp("mnist"), true, &ds), AG_ERR_IO,
                    "has 3 images but|has 4 labels");
    ck_assert_ptr_null(ds.images);
    ck_assert_ptr_null(ds.labels);
    tu_expect_error(ag_mnist_load(tmp("mnist"), false, &ds), AG_ERR_IO,
                    "t10k-images-idx3-ubyte not found|t10k-images-idx3-ubyte.gz and");
    /* A labels file with 3 dims is refused. */
    idx_spec cube = {{0, 0, 0x08, 3}, {3, 1, 1}, TU_VALUES(1, 2, 3), 3, 0, 0};
    write_idx(tmp("mnist/train-labels-idx1-ubyte"), &cube, false);
    tu_expect_error(ag_mnist_load(tmp("mnist"), true, &ds), AG_ERR_IO, "expected 1 dim [N], got 3");
    /* Negative labels (a signed file) are refused. */
    idx_spec neg = {{0, 0, 0x09, 1}, {3}, TU_VALUES(1, -1, 3), 3, 0, 0};
    write_idx(tmp("mnist/train-labels-idx1-ubyte"), &neg, false);
    tu_expect_error(ag_mnist_load(tmp("mnist"), true, &ds), AG_ERR_IO, "label 1 is -1");
}
END_TEST

START_TEST(fashion_mnist_installed_set) {
    struct stat sb;
    if (stat(AG_FASHION_MNIST_DIR, &sb) != 0) {
        printf("fashion_mnist_installed_set: skipped, %s is missing (apt-get install "
               "dataset-fashion-mnist)\n",
               AG_FASHION_MNIST_DIR);
        return;
    }
    static const struct {
        bool train;
        int64_t count;
        double first_labels[10];
        double first_image_sum; /* sum of image 0's pixels / 255, from numpy */
    } splits[] = {
        {true, 60000, {9, 0, 0, 3, 0, 2, 7, 2, 5, 5}, 299.0078472062014},
        {false, 10000, {9, 2, 1, 1, 6, 1, 4, 6, 5, 7}, 131.20000365097076},
    };
    for (int s = 0; s < 2; s++) {
        ag_image_dataset ds;
        ck_assert_msg(ag_mnist_load(AG_FASHION_MNIST_DIR, splits[s].train, &ds) == AG_OK, "%s",
                      ag_last_error());
        ck_assert_int_eq(ds.count, splits[s].count);
        ck_assert_int_eq(ds.rows, 28);
        ck_assert_int_eq(ds.cols, 28);
        ck_assert_int_eq(ds.classes, 10);
        ck_assert_int_eq(ag_size(ds.images, 0), splits[s].count);
        ck_assert_int_eq(ag_size(ds.images, 1), 784);
        expect_values(ag_slice(ds.labels, 0, 0, 10, 1), 1, TU_SHAPE(10), splits[s].first_labels);
        double v;
        ck_assert_int_eq(ag_item(ag_min(ds.labels, 0, NULL, false), &v), AG_OK);
        ck_assert(v == 0);
        ck_assert_int_eq(ag_item(ag_max(ds.labels, 0, NULL, false), &v), AG_OK);
        ck_assert(v == 9);
        ck_assert_int_eq(ag_item(ag_max(ds.images, 0, NULL, false), &v), AG_OK);
        ck_assert(v == 1);
        ck_assert_int_eq(
            ag_item(ag_sum(ag_to_dtype(ag_select(ds.images, 0, 0), AG_F64), 0, NULL, false), &v),
            AG_OK);
        ck_assert_msg(fabs(v - splits[s].first_image_sum) < 1e-9, "sum %.17g", v);
        ag_image_dataset_free(&ds);
    }
}
END_TEST

/* ---- loader ---- */

/* Inputs [n, 2] with row i = (i, 100 + i) and int64 targets [n] = i. */
static void make_rows(int64_t n, ag_tensor **x, ag_tensor **y) {
    *y = ag_arange(AG_I64, 0, (double)n, 1);
    ag_tensor *col = ag_to_dtype(*y, AG_F32);
    ag_tensor *cols[2] = {col, ag_add_scalar(col, 100)};
    *x = ag_stack(2, cols, 1);
    ck_assert_ptr_nonnull(*x);
}

/* Runs one epoch, asserting each batch's rows match its targets; writes the targets in
 * order into order[] and the batch sizes into sizes[]; returns the number of batches. */
static int run_epoch(ag_loader *l, int64_t *order, int64_t *sizes) {
    ag_tensor *xb, *yb;
    int batches = 0;
    int64_t at = 0;
    while (ag_loader_next(l, &xb, &yb)) {
        int64_t len = ag_size(yb, 0);
        ck_assert_int_eq(ag_size(xb, 0), len);
        ck_assert_int_eq(ag_size(xb, 1), 2);
        double rows[64], targets[32];
        ck_assert_int_eq(tu_read(xb, rows, 64), AG_OK);
        ck_assert_int_eq(tu_read(yb, targets, 32), AG_OK);
        for (int64_t i = 0; i < len; i++) {
            ck_assert(rows[2 * i] == targets[i] && rows[2 * i + 1] == targets[i] + 100);
            order[at++] = (int64_t)targets[i];
        }
        sizes[batches++] = len;
    }
    ck_assert_ptr_null(xb);
    ck_assert_ptr_null(yb);
    ck_assert_int_eq(ag_last_status(), AG_OK); /* the end of an epoch is no error */
    return batches;
}

START_TEST(loader_batches_in_order_with_a_short_last_batch) {
    ag_tensor *x, *y;
    make_rows(10, &x, &y);
    ag_loader_options o = {.batch_size = 4, .world_size = 1};
    ag_loader *l = ag_loader_new(x, y, &o);
    ck_assert_ptr_nonnull(l);
    ck_assert_int_eq(ag_loader_batches(l), 3);
    int64_t order[16], sizes[8];
    ck_assert_int_eq(run_epoch(l, order, sizes), 3);
    ck_assert_int_eq(sizes[0], 4);
    ck_assert_int_eq(sizes[2], 2);
    for (int i = 0; i < 10; i++) ck_assert_int_eq(order[i], i);
    /* Next epoch starts over; drop_last removes the short batch. */
    ag_loader_set_epoch(l, 1);
    ck_assert_int_eq(run_epoch(l, order, sizes), 3);
    ag_loader_free(l);
    o.drop_last = true;
    l = ag_loader_new(x, y, &o);
    ck_assert_int_eq(ag_loader_batches(l), 2);
    ck_assert_int_eq(run_epoch(l, order, sizes), 2);
    ck_assert_int_eq(sizes[1], 4);
    ag_loader_free(l);
}
END_TEST

/* True if order[0..n) is a permutation of 0..n-1. */
static bool is_permutation(const int64_t *order, int64_t n) {
    bool seen[256] = {false};
    for (int64_t i = 0; i < n; i++) {
        if (order[i] < 0 || order[i] >= n || seen[order[i]]) return false;
        seen[order[i]] = true;
    }
    return true;
}

START_TEST(loader_shuffle_depends_on_seed_and_epoch_only) {
    enum { N = 50 };
    ag_tensor *x, *y;
    make_rows(N, &x, &y);
    ag_loader_options o = {.batch_size = 7, .shuffle = true, .seed = 1234, .world_size = 1};
    ag_loader *a = ag_loader_new(x, y, &o), *b = ag_loader_new(x, y, &o);
    int64_t oa[N], ob[N], oc[N], sizes[16];
    ck_assert_int_eq(run_epoch(a, oa, sizes), 8);
    ck_assert_int_eq(sizes[7], 1);
    ck_assert(is_permutation(oa, N));
    int64_t identity = 0;
    for (int i = 0; i < N; i++) identity += oa[i] == i;
    ck_assert_int_lt(identity, N / 2);
    run_epoch(b, ob, sizes);
    ck_assert_mem_eq(oa, ob, sizeof oa);
    /* Another epoch gives another order; going back to epoch 0 gives the first again. */
    ag_loader_set_epoch(a, 1);
    run_epoch(a, oc, sizes);
    ck_assert(is_permutation(oc, N));
    ck_assert(memcmp(oa, oc, sizeof oa) != 0);
    ag_loader_set_epoch(a, 0);
    run_epoch(a, oc, sizes);
    ck_assert_mem_eq(oa, oc, sizeof oa);
    /* Another seed, another order. */
    ag_loader_free(b);
    o.seed = 1235;
    b = ag_loader_new(x, y, &o);
    run_epoch(b, ob, sizes);
    ck_assert(memcmp(oa, ob, sizeof oa) != 0);
    ag_loader_free(a);
    ag_loader_free(b);
}
END_TEST

START_TEST(loader_shards_like_distributed_sampler) {
    ag_tensor *x, *y;
    make_rows(10, &x, &y);
    /* torch.utils.data.DistributedSampler(range(10), num_replicas=3, shuffle=False). */
    static const int64_t torch_shards[3][4] = {{0, 3, 6, 9}, {1, 4, 7, 0}, {2, 5, 8, 1}};
    int64_t order[16], sizes[8];
    for (int r = 0; r < 3; r++) {
        ag_loader_options o = {.batch_size = 3, .rank = r, .world_size = 3};
        ag_loader *l = ag_loader_new(x, y, &o);
        ck_assert_int_eq(ag_loader_batches(l), 2);
        run_epoch(l, order, sizes);
        ck_assert_mem_eq(order, torch_shards[r], sizeof torch_shards[r]);
        ag_loader_free(l);
    }
    /* Shuffled, 12 samples over 4 ranks: disjoint and covering, every epoch. */
    make_rows(12, &x, &y);
    for (uint64_t epoch = 0; epoch < 3; epoch++) {
        int64_t all[12];
        for (int r = 0; r < 4; r++) {
            ag_loader_options o = {
                .batch_size = 2, .shuffle = true, .seed = 7, .rank = r, .world_size = 4};
            ag_loader *l = ag_loader_new(x, y, &o);
            ag_loader_set_epoch(l, epoch);
            ck_assert_int_eq(run_epoch(l, all + 3 * r, sizes), 2);
            ag_loader_free(l);
        }
        ck_assert(is_permutation(all, 12));
    }
    /* Fewer samples than ranks: the order wraps around as often as needed. */
    make_rows(2, &x, &y);
    for (int r = 0; r < 5; r++) {
        ag_loader_options o = {.batch_size = 4, .rank = r, .world_size = 5};
        ag_loader *l = ag_loader_new(x, y, &o);
        ck_assert_int_eq(run_epoch(l, order, sizes), 1);
        ck_assert_int_eq(sizes[0], 1);
        ck_assert_int_eq(order[0], r % 2);
        ag_loader_free(l);
    }
}
END_TEST

START_TEST(loader_keeps_its_tensors_and_checks_arguments) {
    ag_scope *inner = ag_scope_begin();
    ag_tensor *x, *y;
    make_rows(5, &x, &y);
    ag_loader_options o = {.batch_size = 5, .world_size = 1};
    ag_loader *l = ag_loader_new(x, y, &o);
    ag_scope_end(inner); /* the loader still holds x and y */
    int64_t order[8], sizes[4];
    ck_assert_int_eq(run_epoch(l, order, sizes), 1);
    ag_loader_free(l);
    ag_loader_free(NULL);

    make_rows(5, &x, &y);
    ag_loader_options bad[] = {{.batch_size = 0, .world_size = 1},
                               {.batch_size = 1, .world_size = 0},
                               {.batch_size = 1, .rank = 2, .world_size = 2},
                               {.batch_size = 1, .rank = -1, .world_size = 2}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_ptr_null(ag_loader_new(x, y, &bad[i]));
        tu_expect_error(ag_last_status(), AG_ERR_INVALID_ARG, "batch_size > 0 and 0 <= rank");
    }
    ck_assert_ptr_null(ag_loader_new(x, ag_arange(AG_I64, 0, 4, 1), &o));
    tu_expect_error(ag_last_status(), AG_ERR_SHAPE, "inputs [5, 2] and targets [4]");
    ck_assert_ptr_null(ag_loader_new(x, NULL, &o));
    tu_expect_error(ag_last_status(), AG_ERR_INVALID_ARG, "NULL");
    ag_tensor *xb = (ag_tensor *)1, *yb = (ag_tensor *)1;
    ck_assert(!ag_loader_next(NULL, &xb, &yb));
    ck_assert_ptr_null(xb);
    tu_expect_error(ag_last_status(), AG_ERR_INVALID_ARG, "NULL");
}
END_TEST

/* ---- safetensors ---- */

/* The tensor named `name` in a loaded array (NULL if absent). */
static ag_tensor *find(int n, const ag_named_tensor *t, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0) return t[i].tensor;
    return NULL;
}

/* Asserts an int64 tensor holds exactly `want` (int64 values beyond 2^53 included). */
static void expect_i64(const ag_tensor *t, int n, const int64_t *want) {
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(ag_dtype_of(t), AG_I64);
    ck_assert_int_eq(ag_numel(t), n);
    int64_t got[16];
    ck_assert_int_eq(ag_to_host(t, got, sizeof got), AG_OK);
    for (int i = 0; i < n; i++) ck_assert_int_eq(got[i], want[i]);
}

START_TEST(safetensors_round_trip_of_every_dtype_and_odd_shapes) {
    const int64_t big[3] = {INT64_MIN, -1, (INT64_C(1) << 62) + 1};
    ag_tensor *m = tu_tensor(AG_F32, 2, TU_SHAPE(2, 3), TU_VALUES(0.1, -2, 3e38, 1e-45, -0.0, 7));
    ag_named_tensor in[] = {
        {"layer.weight", m},
        {"transposed", ag_transpose(m, 0, 1)}, /* written row-major */
        {"scale", ag_scalar(AG_F64, 1.0 / 3)},
        {"ids", ag_from_i64(big, 1, TU_SHAPE(3))},
        {"empty", ag_zeros(AG_F32, 2, TU_SHAPE(0, 3))},
        {"nothing", ag_zeros(AG_I64, 1, TU_SHAPE(0))},
    };
    const char *path = tmp("round.safetensors");
    ck_assert_int_eq(ag_safetensors_save(path, 6, in), AG_OK);
    int n = 0;
    ag_named_tensor *out = NULL;
    ck_assert_msg(ag_safetensors_load(path, &n, &out) == AG_OK, "%s", ag_last_error());
    ck_assert_int_eq(n, 6);
    const double *mv = TU_VALUES((float)0.1, -2, (float)3e38, (float)1e-45, -0.0, 7);
    expect_values(find(n, out, "layer.weight"), 2, TU_SHAPE(2, 3), mv);
    double tv[6] = {mv[0], mv[3], mv[1], mv[4], mv[2], mv[5]};
    expect_values(find(n, out, "transposed"), 2, TU_SHAPE(3, 2), tv);
    expect_values(find(n, out, "scale"), 0, NULL, TU_VALUES(1.0 / 3));
    ck_assert_int_eq(ag_dtype_of(find(n, out, "scale")), AG_F64);
    expect_i64(find(n, out, "ids"), 3, big);
    ag_tensor *empty = find(n, out, "empty");
    ck_assert(tu_shape_is(empty, 2, TU_SHAPE(0, 3), NULL, 0));
    ck_assert(tu_shape_is(find(n, out, "nothing"), 1, TU_SHAPE(0), NULL, 0));
    ag_named_tensors_free(n, out);
    /* The header: length a multiple of 8, JSON padded with spaces, 8-byte items first. */
    size_t len;
    unsigned char *file = read_whole(path, &len);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | file[i];
    ck_assert_uint_eq(hl % 8, 0);
    ck_assert_uint_eq(len, 8 + hl + 4 * 6 * 2 + 8 + 8 * 3);
    ck_assert_int_eq(file[8], '{');
    char *json = strndup((const char *)file + 8, hl);
    /* __metadata__ first, with the data's CRC-32 (tests/test_durability.c checks it). */
    ck_assert_msg(strstr(json, "{\"__metadata__\":{\"ag_crc32\":\"") == json, "%s", json);
    ck_assert_msg(
        strstr(json, "\"},\"ids\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[0,24]}"), "%s",
        json);
    free(json);
    free(file);
}
END_TEST

START_TEST(safetensors_reads_the_file_pytorch_wrote) {
    int n = 0;
    ag_named_tensor *t = NULL;
    ck_assert_msg(ag_safetensors_load(AG_TEST_FIXTURE_DIR "/torch_model.safetensors", &n, &t) ==
                      AG_OK,
                  "%s", ag_last_error());
    ck_assert_int_eq(n, 7);
    /* Values of tests/reference/safetensors_fixture.py. */
    expect_values(find(n, t, "0.weight"), 2, TU_SHAPE(2, 3),
                  TU_VALUES(1.5, -2.25, 3.0, (float)0.1, (float)1e-30, -0.0));
    ck_assert_int_eq(ag_dtype_of(find(n, t, "0.weight")), AG_F32);
    expect_values(find(n, t, "0.bias"), 1, TU_SHAPE(3), TU_VALUES(0.5, -1.0, 0x1p-20));
    expect_values(find(n, t, "scale"), 0, NULL, TU_VALUES(3.141592653589793));
    ck_assert_int_eq(ag_dtype_of(find(n, t, "scale")), AG_F64);
    expect_values(find(n, t, "moments"), 1, TU_SHAPE(4), TU_VALUES(1.0 / 3, -1e300, 5e-324, 2.5));
    const int64_t counts[4] = {0, -1, INT64_C(1) << 62, -(INT64_C(1) << 53) - 1};
    expect_i64(find(n, t, "counts"), 4, counts);
    ck_assert(tu_shape_is(find(n, t, "counts"), 2, TU_SHAPE(2, 2), NULL, 0));
    expect_i64(find(n, t, "step"), 1, (const int64_t[]){7});
    ck_assert_int_eq(ag_ndim(find(n, t, "step")), 0);
    ck_assert(tu_shape_is(find(n, t, "empty"), 2, TU_SHAPE(0, 4), NULL, 0));
    ag_named_tensors_free(n, t);
}
END_TEST

/* Writes a safetensors file by hand: the header length (`len`, or the JSON's own length
 * when 0), json_len bytes of JSON (strlen when 0), then data_len bytes of data. */
static void write_st(const char *path, uint64_t len, const char *json, size_t json_len,
                     size_t data_len) {
    json_len = json_len ? json_len : strlen(json);
    len = len ? len : json_len;
    unsigned char *buf = calloc(1, 8 + json_len + data_len);
    ck_assert_ptr_nonnull(buf);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(len >> (8 * i));
    memcpy(buf + 8, json, json_len);
    write_file(path, buf, 8 + json_len + data_len, false);
    free(buf);
}

/* A well-formed entry with the given name, dtype, shape text and offsets. */
#define ENTRY(name, dtype, shape, b, e)                                                            \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

START_TEST(safetensors_corrupt_files_are_io_errors) {
    static const struct {
        const char *what, *json;
        uint64_t len;    /* header length field; 0: the JSON's length */
        size_t json_len; /* 0: strlen */
        size_t data;     /* bytes of data after the header */
        const char *words;
    } cases[] = {
        {"header length past EOF", "{}", 1000, 0, 0, "header length 1000 runs past the end"},
        {"header length huge", "{}", UINT64_C(1) << 63, 0, 0, "exceeds the limit"},
        {"invalid JSON", "{\"a\":{\"dtype\":", 0, 0, 0, "not valid JSON"},
        {"not an object", "[1, 2]", 0, 0, 0, "not a JSON object"},
        {"text after the JSON", "{} x", 0, 0, 0, "data after its JSON value at byte 3"},
        {"NUL in the header", "{\"a\"\0:1}", 0, 8, 0, "NUL byte"},
        {"wrong dtype string", "{" ENTRY("w", "F33", "[1]", 0, 4) "}", 0, 0, 4, "dtype 'F33'"},
        {"unsupported dtype", "{" ENTRY("h", "F16", "[2]", 0, 4) "}", 0, 0, 4,
         "tensor 'h' has dtype 'F16'"},
        {"dtype not a string", "{\"a\":{\"dtype\":7,\"shape\":[],\"data_offsets\":[0,4]}}", 0, 0, 4,
         "needs a string \"dtype\""},
        {"missing offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[]}}", 0, 0, 4,
         "\"data_offsets\""},
        {"offsets out of range", "{" ENTRY("a", "F32", "[3]", 0, 12) "}", 0, 0, 8,
         "[0, 12] out of range of the 8-byte data buffer"},
        {"offsets reversed", "{" ENTRY("a", "F32", "[1]", 8, 4) "}", 0, 0, 8,
         "[8, 4] out of range"},
        {"three offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 0,
         0, 8, "two non-negative integers"},
        {"negative offset", "{" ENTRY("a", "F32", "[1]", -4, 0) "}", 0, 0, 8, "two non-negative"},
        {"overlapping", "{" ENTRY("a", "F32", "[2]", 0, 8) "," ENTRY("b", "F32", "[2]", 4, 12) "}",
         0, 0, 12, "tensor 'b' overlaps another"},
        {"gap", "{" ENTRY("a", "F32", "[1]", 0, 4) "," ENTRY("b", "F32", "[1]", 8, 12) "}", 0, 0,
         12, "tensor 'b' leaves a gap"},
        {"data after the tensors", "{" ENTRY("a", "F32", "[1]", 0, 4) "}", 0, 0, 12,
         "8 bytes of data after the last tensor"},
        {"size mismatch", "{" ENTRY("a", "F32", "[3]", 0, 8) "}", 0, 0, 8,
         "span 8 bytes but F32[3] needs 12"},
        {"duplicate names",
         "{" ENTRY("a", "F32", "[1]", 0, 4) "," ENTRY("a", "F32", "[1]", 4, 8) "}", 0, 0, 8,
         "duplicate tensor name 'a'"},
        {"entry not an object", "{\"a\": 5}", 0, 0, 0, "entry 'a' is not an object"},
        {"negative extent", "{" ENTRY("a", "F32", "[-1]", 0, 0) "}", 0, 0, 0, "shape entry 0"},
        {"fractional extent", "{" ENTRY("a", "F32", "[1.5]", 0, 6) "}", 0, 0, 6, "shape entry 0"},
        {"nine dims", "{" ENTRY("a", "F32", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}", 0, 0, 4, "9 dims"},
        {"shape overflow", "{" ENTRY("a", "F64", "[4294967296,4294967296]", 0, 0) "}", 0, 0, 0,
         "shape overflows"},
        {"truncated data", "{" ENTRY("a", "F64", "[2]", 0, 16) "}", 0, 0, 9, "out of range"},
        {"metadata not strings", "{\"__metadata__\":{\"a\":1}}", 0, 0, 0, "__metadata__"},
        {"metadata not an object", "{\"__metadata__\":[]}", 0, 0, 0, "__metadata__"},
    };
    const char *path = tmp("bad.safetensors");
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        write_st(path, cases[c].len, cases[c].json, cases[c].json_len, cases[c].data);
        int n = -1;
        ag_named_tensor *t = (ag_named_tensor *)1;
        ag_status st = ag_safetensors_load(path, &n, &t);
        ck_assert_msg(st == AG_ERR_IO, "%s: status %s (%s)", cases[c].what, ag_status_name(st),
                      ag_last_error());
        ck_assert_msg(strstr(ag_last_error(), cases[c].words) && strstr(ag_last_error(), path),
                      "%s: message '%s' lacks '%s'", cases[c].what, ag_last_error(),
                      cases[c].words);
        ck_assert_ptr_null(t);
        ck_assert_int_eq(n, 0);
        ag_clear_error();
    }
    /* Shorter than the length field, and no file at all. */
    write_file(path, "\x02\0\0", 3, false);
    int n;
    ag_named_tensor *t;
    tu_expect_error(ag_safetensors_load(path, &n, &t), AG_ERR_IO,
                    "truncated: expected 8 bytes of header length, got 3");
    tu_expect_error(ag_safetensors_load(tmp("absent.safetensors"), &n, &t), AG_ERR_IO,
                    "absent.safetensors|No such file or directory");
    /* Valid odds and ends: metadata, padding, no tensors at all. */
    write_st(path, 0, "{\"__metadata__\":{\"format\":\"pt\"}}   ", 0, 0);
    ck_assert_int_eq(ag_safetensors_load(path, &n, &t), AG_OK);
    ck_assert_int_eq(n, 0);
    ag_named_tensors_free(n, t);
}
END_TEST

START_TEST(safetensors_never_crash_on_damaged_bytes) {
    /* Every truncation and many random byte changes of a valid file: each load either
     * succeeds or says AG_ERR_IO, and (under ASan) reads nothing out of bounds. */
    ag_named_tensor in[] = {{"a", ag_arange(AG_F32, 0, 5, 1)},
                            {"b", ag_full(AG_I64, 2, TU_SHAPE(2, 2), 3)}};
    const char *path = tmp("good.safetensors"), *bad = tmp("damaged.safetensors");
    ck_assert_int_eq(ag_safetensors_save(path, 2, in), AG_OK);
    size_t len;
    unsigned char *good = read_whole(path, &len);
    unsigned char *copy = malloc(len);
    for (size_t cut = 0; cut < len; cut++) {
        write_file(bad, good, cut, false);
        int n;
        ag_named_tensor *t;
        ck_assert_int_eq(ag_safetensors_load(bad, &n, &t), AG_ERR_IO);
    }
    uint64_t state = 42;
    for (int trial = 0; trial < 3000; trial++) {
        memcpy(copy, good, len);
        for (int k = 0; k < 1 + trial % 4; k++) {
            state = state * 6364136223846793005u + 1442695040888963407u;
            size_t at = (size_t)(state >> 33) % len;
            copy[at] = (unsigned char)(state >> 13);
        }
        write_file(bad, copy, len, false);
        int n;
        ag_named_tensor *t;
        ag_status st = ag_safetensors_load(bad, &n, &t);
        ck_assert_msg(st == AG_OK || st == AG_ERR_IO, "trial %d: %s", trial, ag_last_error());
        if (st == AG_OK) ag_named_tensors_free(n, t);
        ag_clear_error();
    }
    free(copy);
    free(good);
}
END_TEST

START_TEST(safetensors_save_checks_its_arguments) {
    ag_tensor *a = ag_ones(AG_F32, 1, TU_SHAPE(2));
    ag_named_tensor dup[] = {{"x", a}, {"y", a}, {"x", ag_ones(AG_F64, 1, TU_SHAPE(1))}};
    const char *path = tmp("args.safetensors");
    tu_expect_error(ag_safetensors_save(path, 3, dup), AG_ERR_INVALID_ARG, "duplicate name 'x'");
    ag_named_tensor nul[] = {{"x", a}, {"y", NULL}};
    tu_expect_error(ag_safetensors_save(path, 2, nul), AG_ERR_INVALID_ARG,
                    "entry 1 has a NULL tensor");
    tu_expect_error(ag_safetensors_save(NULL, 1, nul), AG_ERR_INVALID_ARG, "bad path");
    ck_assert_int_eq(access(path, F_OK), -1);
    tu_expect_error(ag_safetensors_save(tmp("no/such/dir.safetensors"), 1, nul), AG_ERR_IO,
                    "no/such/dir.safetensors|No such file or directory");
}
END_TEST

/* Number of temporary files a save may leave in tmpdir (".<name>.tmp.XXXXXX"). */
static int temp_files(void) {
    DIR *d = opendir(tmpdir);
    ck_assert_ptr_nonnull(d);
    int count = 0;
    for (struct dirent *e; (e = readdir(d));)
        count += e->d_name[0] == '.' && strstr(e->d_name, ".tmp.");
    closedir(d);
    return count;
}

START_TEST(safetensors_write_is_atomic) {
    const char *path = tmp("atomic.safetensors");
    ag_named_tensor small[] = {{"v", ag_arange(AG_F32, 0, 4, 1)}};
    ck_assert_int_eq(ag_safetensors_save(path, 1, small), AG_OK);
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 0777, 0644);
    size_t old_len;
    unsigned char *old = read_whole(path, &old_len);
    /* A write that fails half-way (the file size limit, EFBIG) leaves the old file. */
    ag_named_tensor large[] = {{"v", ag_zeros(AG_F64, 1, TU_SHAPE(100000))}};
    struct rlimit saved, limit;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    limit = (struct rlimit){.rlim_cur = 65536, .rlim_max = saved.rlim_max};
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &limit), 0);
    ag_status st = ag_safetensors_save(path, 1, large);
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, prev);
    tu_expect_error(st, AG_ERR_IO, "cannot write|atomic.safetensors|File too large");
    size_t now_len;
    unsigned char *now = read_whole(path, &now_len);
    ck_assert_uint_eq(now_len, old_len);
    ck_assert_mem_eq(now, old, old_len);
    free(now);
    free(old);
    ck_assert_int_eq(temp_files(), 0);
    /* A path that is a directory: the rename fails, the temporary file goes. */
    mkdir(tmp("a-directory"), 0755);
    tu_expect_error(ag_safetensors_save(tmp("a-directory"), 1, small), AG_ERR_IO,
                    "cannot rename|a-directory");
    ck_assert_int_eq(temp_files(), 0);
    /* Replacing keeps the old file's mode; the new content is complete. */
    chmod(path, 0600);
    ck_assert_int_eq(ag_safetensors_save(path, 1, large), AG_OK);
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 0777, 0600);
    ck_assert_int_eq(sb.st_size % 8, 0);
    ck_assert_int_gt(sb.st_size, 800000);
    ck_assert_int_eq(temp_files(), 0);
}
END_TEST

/* ---- checkpoints ---- */

/* tu_classifier, asserted to exist. */
static ag_module *classifier(int64_t hidden, uint64_t seed) {
    ag_module *m = tu_classifier(hidden, seed);
    ck_assert_msg(m != NULL, "%s", ag_last_error());
    return m;
}

/* The parameters of m (malloc'd) and their count. */
static ag_named_tensor *params_of(const ag_module *m, int *n) {
    *n = ag_module_parameters(m, NULL, 0);
    ag_named_tensor *p = malloc((size_t)*n * sizeof *p);
    ck_assert_ptr_nonnull(p);
    ag_module_parameters(m, p, *n);
    return p;
}

/* One AdamW step of m on a fixed batch. */
static void train_step(ag_module *m, ag_optimizer *opt) {
    ag_scope *step = ag_scope_begin();
    ag_tensor *x = tu_tensor(AG_F32, 2, TU_SHAPE(3, 4),
                             TU_VALUES(1, -2, 0.5, 3, 0, 1, -1, 2, -0.25, 0.75, 2, -3));
    ag_tensor *y = ag_from_i64((const int64_t[]){2, 0, 1}, 1, TU_SHAPE(3));
    ag_tensor *loss = ag_cross_entropy(ag_module_forward(m, x), y, NULL);
    ck_assert_msg(ag_backward(loss, NULL) == AG_OK, "%s", ag_last_error());
    ck_assert_int_eq(ag_optimizer_step(opt), AG_OK);
    ck_assert_int_eq(ag_optimizer_zero_grad(opt, true), AG_OK);
    ag_scope_end(step);
}

/* Asserts two lists hold the same names and exactly equal tensors. */
static void expect_same_tensors(int n, const ag_named_tensor *a, int m, const ag_named_tensor *b) {
    ck_assert_int_eq(n, m);
    for (int i = 0; i < n; i++) {
        ck_assert_str_eq(a[i].name, b[i].name);
        ck_assert_msg(tu_max_abs_diff(a[i].tensor, b[i].tensor) == 0, "%s differs", a[i].name);
    }
}

START_TEST(checkpoint_restores_model_and_optimizer_exactly) {
    ag_module *a = classifier(8, 1), *b = classifier(8, 2);
    int n, nb;
    ag_named_tensor *pa = params_of(a, &n), *pb = params_of(b, &nb);
    ag_adam_options o = ag_adamw_defaults();
    ag_optimizer *oa = ag_adamw_new(n, pa, &o), *ob = ag_adamw_new(nb, pb, &o);
    train_step(a, oa);
    train_step(a, oa);
    const char *path = tmp("model.safetensors");
    ck_assert_msg(ag_checkpoint_save(path, a, oa) == AG_OK, "%s", ag_last_error());
    /* The file holds the parameters by name and the state under "optimizer.". */
    int nf, ns = ag_optimizer_state(oa, NULL, 0);
    ag_named_tensor *file;
    ck_assert_int_eq(ag_safetensors_load(path, &nf, &file), AG_OK);
    ck_assert_int_eq(nf, n + ns);
    ck_assert_ptr_nonnull(find(nf, file, "3.bias"));
    ck_assert_ptr_nonnull(find(nf, file, "optimizer.0.exp_avg"));
    ag_named_tensors_free(nf, file);

    ck_assert_msg(ag_checkpoint_load(path, b, ob) == AG_OK, "%s", ag_last_error());
    expect_same_tensors(n, pa, nb, pb);
    ag_named_tensor sa[64], sb[64];
    ck_assert_int_le(ns, 64);
    expect_same_tensors(ag_optimizer_state(oa, sa, 64), sa, ag_optimizer_state(ob, sb, 64), sb);
    /* Resuming from the checkpoint continues exactly as the original run. */
    train_step(a, oa);
    train_step(b, ob);
    expect_same_tensors(n, pa, nb, pb);
    /* Loading into the loaded model again leaves no graph behind: parameters stay leaves. */
    ck_assert_int_eq(ag_checkpoint_load(path, b, NULL), AG_OK);
    ck_assert(ag_is_leaf(pb[0].tensor) && ag_requires_grad(pb[0].tensor));
    ag_optimizer_free(oa);
    ag_optimizer_free(ob);
    free(pa);
    free(pb);
    ag_module_free(a);
    ag_module_free(b);
}
END_TEST

START_TEST(checkpoint_mismatches_are_errors_that_change_nothing) {
    ag_module *a = classifier(8, 1);
    const char *path = tmp("model.safetensors");
    ck_assert_int_eq(ag_checkpoint_save(path, a, NULL), AG_OK);
    ag_module *wide = classifier(16, 3);
    int n;
    ag_named_tensor *p = params_of(wide, &n);
    ag_tensor *before = ag_clone(p[0].tensor);
    tu_expect_error(ag_checkpoint_load(path, wide, NULL), AG_ERR_SHAPE,
                    "parameter '0.weight' has shape [8, 4] in the file but [16, 4] in the model");
    ck_assert(tu_max_abs_diff(before, p[0].tensor) == 0);
    /* A model with fewer layers: entries of the file are left over. */
    ag_module *one = ag_sequential_new(1, (ag_module *[]){ag_linear_new(4, 8, true, NULL)});
    tu_expect_error(ag_checkpoint_load(path, one, NULL), AG_ERR_IO, "unexpected entry '2.bias'");
    /* A model with more layers: a parameter is missing. */
    ag_module *more = ag_sequential_new(
        5, (ag_module *[]){ag_linear_new(4, 8, true, NULL), ag_gelu_new(false),
                           ag_layer_norm_new(8, 1e-5, true), ag_linear_new(8, 3, true, NULL),
                           ag_linear_new(3, 3, true, NULL)});
    tu_expect_error(ag_checkpoint_load(path, more, NULL), AG_ERR_IO,
                    "parameter '4.weight' is missing");
    /* Another dtype. */
    ag_named_tensor f64[] = {{"0.weight", ag_zeros(AG_F64, 2, TU_SHAPE(8, 4))},
                             {"0.bias", ag_zeros(AG_F32, 1, TU_SHAPE(8))}};
    ck_assert_int_eq(ag_safetensors_save(tmp("f64.safetensors"), 2, f64), AG_OK);
    tu_expect_error(ag_checkpoint_load(tmp("f64.safetensors"), one, NULL), AG_ERR_DTYPE,
                    "parameter '0.weight' is float64 in the file but float32 in the model");
    /* Files that are not checkpoints at all. */
    tu_expect_error(ag_checkpoint_load(tmp("none.safetensors"), a, NULL), AG_ERR_IO,
                    "none.safetensors|No such file");
    write_file(tmp("junk.safetensors"), "\x10\0\0\0\0\0\0\0{\"a\":", 13, false);
    tu_expect_error(ag_checkpoint_load(tmp("junk.safetensors"), a, NULL), AG_ERR_IO,
                    "runs past the end");
    tu_expect_error(ag_checkpoint_save(path, NULL, NULL), AG_ERR_INVALID_ARG, "NULL");
    ag_module_free(a);
    ag_module_free(wide);
    ag_module_free(one);
    ag_module_free(more);
    free(p);
}
END_TEST

START_TEST(checkpoint_optimizer_state_must_fit_the_optimizer) {
    ag_module *a = classifier(8, 1), *b = classifier(8, 2);
    int n;
    ag_named_tensor *pa = params_of(a, &n), *pb = params_of(b, &n);
    ag_adam_options o = ag_adamw_defaults();
    ag_optimizer *adam = ag_adamw_new(n, pa, &o);
    train_step(a, adam);
    const char *path = tmp("adam.safetensors");
    ck_assert_int_eq(ag_checkpoint_save(path, a, adam), AG_OK);
    /* Adam's state in an SGD with momentum: refused before any parameter changes. */
    ag_sgd_options so = ag_sgd_defaults(0.1);
    so.momentum = 0.9;
    ag_optimizer *sgd = ag_sgd_new(n, pb, &so);
    ag_tensor *before = ag_clone(pb[0].tensor);
    ag_status st = ag_checkpoint_load(path, b, sgd);
    ck_assert_msg(st != AG_OK && strstr(ag_last_error(), "exp_avg"), "%s", ag_last_error());
    ag_clear_error();
    ck_assert(tu_max_abs_diff(before, pb[0].tensor) == 0);
    /* Without an optimizer the state is ignored; a file without state leaves one alone. */
    ck_assert_int_eq(ag_checkpoint_load(path, b, NULL), AG_OK);
    ck_assert_int_eq(ag_checkpoint_save(tmp("plain.safetensors"), a, NULL), AG_OK);
    ck_assert_int_eq(ag_checkpoint_load(tmp("plain.safetensors"), b, sgd), AG_OK);
    ck_assert_int_eq(ag_optimizer_state(sgd, NULL, 0), 0);
    ag_optimizer_free(adam);
    ag_optimizer_free(sgd);
    free(pa);
    free(pb);
    ag_module_free(a);
    ag_module_free(b);
}
END_TEST

/* ---- suite ---- */

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static Suite *data_io_suite(void) {
    Suite *s = suite_create("data_io");
    struct {
        const char *name;
        const TTest *tests[8];
    } cases[] = {
        {"idx",
         {idx_reads_every_element_type_plain_and_gzip, idx_one_dim_and_eight_dims,
          idx_malformed_files_are_io_errors, idx_huge_dims_fail_without_allocating_them,
          idx_missing_unreadable_and_unconvertible}},
        {"mnist",
         {mnist_small_split_scales_pixels_and_counts_classes, mnist_errors_name_what_is_wrong,
          fashion_mnist_installed_set}},
        {"loader",
         {loader_batches_in_order_with_a_short_last_batch,
          loader_shuffle_depends_on_seed_and_epoch_only, loader_shards_like_distributed_sampler,
          loader_keeps_its_tensors_and_checks_arguments}},
        {"safetensors",
         {safetensors_round_trip_of_every_dtype_and_odd_shapes,
          safetensors_reads_the_file_pytorch_wrote, safetensors_corrupt_files_are_io_errors,
          safetensors_never_crash_on_damaged_bytes, safetensors_save_checks_its_arguments,
          safetensors_write_is_atomic}},
        {"checkpoint",
         {checkpoint_restores_model_and_optimizer_exactly,
          checkpoint_mismatches_are_errors_that_change_nothing,
          checkpoint_optimizer_state_must_fit_the_optimizer}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        TCase *tc = tcase_create(cases[c].name);
        tcase_add_checked_fixture(tc, tu_scope_setup, tu_scope_teardown);
        tcase_set_timeout(tc, 300);
        for (int t = 0; t < 8 && cases[c].tests[t]; t++) tcase_add_test(tc, cases[c].tests[t]);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s", "/tmp/ag_data_io_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    int status = tu_run_suite(data_io_suite());
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return status;
}
