/* libFuzzer target: the safetensors reader (ag_safetensors_load, io/safetensors.c). The
 * input is the whole file. Any error status is fine as long as it has a message; a crash,
 * leak, undefined behaviour or hang is a bug. A file that loads is checked for consistency
 * (names, dtypes, element counts), saved again and loaded back, which must give the same
 * tensors. Seeds: fuzz/corpus/safetensors (files written by ag_safetensors_save). */
#include <string.h>
#include "fuzz_util.h"
#include "ag/io.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_init_ag();
    return 0;
}

/* Bytes of a loaded tensor, compared exactly after the round trip (NaN payloads too). */
static size_t tensor_bytes(ag_tensor *t) {
    return (size_t)ag_numel(t) * ag_dtype_size(ag_dtype_of(t));
}

/* Saves what was loaded, loads it back and compares. */
static void round_trip(int n, const ag_named_tensor *loaded) {
    char path[512];
    snprintf(path, sizeof path, "%s/roundtrip.safetensors", fuzz_tmpdir());
    ag_status st = ag_safetensors_save(path, n, loaded);
    if (st != AG_OK) fuzz_fail("saving a file that loaded", ag_last_error());
    int n2 = 0;
    ag_named_tensor *again = NULL;
    st = ag_safetensors_load(path, &n2, &again);
    if (st != AG_OK) fuzz_fail("loading a file ag saved", ag_last_error());
    if (n2 != n) fuzz_fail("round trip", "tensor count differs");
    for (int i = 0; i < n; i++) {
        /* Saving reorders by alignment: match by name. */
        const ag_named_tensor *b = NULL;
        for (int j = 0; j < n2 && !b; j++)
            if (strcmp(again[j].name, loaded[i].name) == 0) b = &again[j];
        if (!b) fuzz_fail("round trip lost a tensor", loaded[i].name);
        ag_tensor *x = loaded[i].tensor, *y = b->tensor;
        if (ag_dtype_of(x) != ag_dtype_of(y) || ag_ndim(x) != ag_ndim(y))
            fuzz_fail("round trip changed dtype or rank", loaded[i].name);
        for (int d = 0; d < ag_ndim(x); d++)
            if (ag_size(x, d) != ag_size(y, d)) fuzz_fail("round trip changed shape", b->name);
        size_t bytes = tensor_bytes(x);
        unsigned char *bx = malloc(bytes + 1), *by = malloc(bytes + 1);
        if (!bx || !by) fuzz_fail("malloc", "round trip");
        if (ag_to_host(x, bx, bytes) != AG_OK || ag_to_host(y, by, bytes) != AG_OK)
            fuzz_fail("ag_to_host", ag_last_error());
        if (memcmp(bx, by, bytes) != 0) fuzz_fail("round trip changed data", b->name);
        free(bx);
        free(by);
    }
    ag_named_tensors_free(n2, again);
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file("input.safetensors", data, size);
    int n = -1;
    ag_named_tensor *tensors = NULL;
    ag_status st = ag_safetensors_load(path, &n, &tensors);
    fuzz_check_status(st, "ag_safetensors_load");
    if (st != AG_OK) {
        if (n != 0 || tensors) fuzz_fail("ag_safetensors_load", "outputs set after an error");
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (!tensors[i].name || !tensors[i].tensor)
            fuzz_fail("loaded entry", "NULL name or tensor");
        ag_tensor *t = tensors[i].tensor;
        ag_dtype dt = ag_dtype_of(t);
        if (dt != AG_F32 && dt != AG_F64 && dt != AG_I64)
            fuzz_fail("loaded dtype", tensors[i].name);
        int64_t numel = 1;
        for (int d = 0; d < ag_ndim(t); d++) numel *= ag_size(t, d);
        if (numel != ag_numel(t)) fuzz_fail("loaded numel", tensors[i].name);
    }
    round_trip(n, tensors);
    ag_named_tensors_free(n, tensors);
    return 0;
}
