/* libFuzzer target: the IDX reader (data/idx.c). The input is one IDX file, plain or
 * gzip (zlib tells them apart by content). It is read with ag_idx_read as float32,
 * float64 and int64; then, when its header claims 3 dims [N, rows, cols] with a small N,
 * as the images of an MNIST directory (ag_mnist_load) beside a labels file made from its
 * bytes, which covers the data-set path (pixel scaling, label checks, count agreement).
 * Errors are fine when they carry a message; crashes, leaks, UB and hangs are bugs.
 * Seeds: fuzz/corpus/idx. */
#include "fuzz_util.h"
#include "ag/data.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_init_ag();
    return 0;
}

/* Reads path as dtype and checks what a successful read promises. */
static void read_as(const char *path, ag_dtype dtype) {
    ag_tensor *t = NULL;
    ag_status st = ag_idx_read(path, dtype, &t);
    fuzz_check_status(st, "ag_idx_read");
    if (st != AG_OK) {
        if (t) fuzz_fail("ag_idx_read", "tensor set after an error");
        return;
    }
    if (!t || ag_dtype_of(t) != dtype || ag_ndim(t) < 1) fuzz_fail("ag_idx_read", "bad result");
    ag_release(t);
}

/* Writes an idx1 labels file of n labels (bytes of the input, cycled) as
 * train-labels-idx1-ubyte and loads the directory as an MNIST training split. */
static void load_as_mnist(const uint8_t *data, size_t size, uint32_t n) {
    size_t bytes = 8 + (size_t)n;
    uint8_t *labels = malloc(bytes);
    if (!labels) fuzz_fail("malloc", "labels");
    const uint8_t head[8] = {
        0, 0, 0x08, 1, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    memcpy(labels, head, 8);
    for (size_t i = 0; i < n; i++) labels[8 + i] = data[i % size] % 16;
    fuzz_write_file("train-labels-idx1-ubyte", labels, bytes);
    free(labels);
    fuzz_write_file("train-images-idx3-ubyte", data, size);
    ag_image_dataset ds;
    ag_status st = ag_mnist_load(fuzz_tmpdir(), true, &ds);
    fuzz_check_status(st, "ag_mnist_load");
    if (st == AG_OK &&
        (!ds.images || !ds.labels || ds.count != (int64_t)n || ds.classes < 1 || ds.classes > 16))
        fuzz_fail("ag_mnist_load", "inconsistent data set");
    ag_image_dataset_free(&ds);
    fuzz_remove_file("train-images-idx3-ubyte");
    fuzz_remove_file("train-labels-idx1-ubyte");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file("input.idx", data, size);
    read_as(path, AG_F32);
    read_as(path, AG_F64);
    read_as(path, AG_I64);
    /* A plain idx3 header; gzip inputs are covered by the reads above. */
    if (size >= 16 && data[0] == 0 && data[1] == 0 && data[3] == 3) {
        uint32_t n =
            (uint32_t)data[4] << 24 | (uint32_t)data[5] << 16 | (uint32_t)data[6] << 8 | data[7];
        if (n <= 4096) load_as_mnist(data, size, n);
    }
    return 0;
}
