/* safetensors files: an 8-byte little-endian header length N, N bytes of JSON
 * ({"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}, padded with spaces),
 * then the data buffer with every tensor little-endian and row-major.
 *
 * Writes go to a temporary file in the target's directory that is renamed over the target
 * once it is complete and on disk. Reads validate the whole header against the file before
 * building a tensor, so no byte sequence makes ag read out of bounds; docs/io.md lists the
 * checks. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cjson/cJSON.h>
#include <zlib.h>
#include "ag/io.h"
#include "../core/internal.h"

/* Tensor data is copied to and from the file as it lies in memory. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian: this target needs byte swapping in io/safetensors.c"
#endif

/* Largest header accepted: the Python library's limit, so both refuse the same files. */
#define MAX_HEADER_BYTES 100000000u
/* Largest integer a JSON number (a double in cJSON) holds exactly. */
#define MAX_JSON_INT 9007199254740992.0

/* The dtypes ag stores, by safetensors name. */
static const struct {
    ag_dtype dtype;
    const char *name;
} st_dtypes[] = {{AG_F32, "F32"}, {AG_F64, "F64"}, {AG_I64, "I64"}};
#define N_DTYPES (sizeof st_dtypes / sizeof st_dtypes[0])

/* The safetensors name of dtype, or NULL if the format has none in ag. */
static const char *dtype_code(ag_dtype dtype) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (st_dtypes[i].dtype == dtype) return st_dtypes[i].name;
    return NULL;
}

/* The __metadata__ key of the data buffer's CRC-32 (zlib's crc32), in decimal. */
#define CRC_KEY "ag_crc32"

/* zlib's crc32 over any length (its length argument is an unsigned int). */
static uint32_t crc_update(uint32_t crc, const unsigned char *p, uint64_t len) {
    while (len) {
        uInt chunk = len > (1u << 30) ? 1u << 30 : (uInt)len;
        crc = (uint32_t)crc32(crc, p, chunk);
        p += chunk;
        len -= chunk;
    }
    return crc;
}

/* ---- writing ---- */

/* A tensor to write and where its bytes go in the data buffer. */
typedef struct out_entry {
    const ag_named_tensor *nt;
    size_t itemsize;
    uint64_t begin, end;
} out_entry;

/* By name, for the duplicate check. */
static int by_name(const void *a, const void *b) {
    return strcmp(((const out_entry *)a)->nt->name, ((const out_entry *)b)->nt->name);
}

/* Larger items first, then by name: the Python library's order, which keeps every tensor
 * aligned to its item size in the data buffer (whose start is 8-aligned). */
static int by_alignment(const void *a, const void *b) {
    const out_entry *x = a, *y = b;
    if (x->itemsize != y->itemsize) return x->itemsize > y->itemsize ? -1 : 1;
    return by_name(a, b);
}

/* Checks the arguments of a save and fills entries[n] in file order with their offsets. */
static ag_status plan_entries(const char *path, int n, const ag_named_tensor *tensors,
                              out_entry *entries) {
    for (int i = 0; i < n; i++) {
        const ag_named_tensor *nt = &tensors[i];
        if (!nt->name || !nt->tensor)
            return ag__error(AG_ERR_INVALID_ARG, "safetensors save %s: entry %d has a NULL %s",
                             path, i, nt->name ? "tensor" : "name");
        ag_dtype dt = ag_dtype_of(nt->tensor);
        if (!dtype_code(dt))
            return ag__error(AG_ERR_DTYPE,
                             "safetensors save %s: tensor '%.200s' is %s (F32, F64 and I64 are "
                             "supported)",
                             path, nt->name, ag_dtype_name(dt));
        entries[i] = (out_entry){.nt = nt, .itemsize = ag_dtype_size(dt)};
    }
    qsort(entries, (size_t)n, sizeof *entries, by_name);
    for (int i = 1; i < n; i++)
        if (by_name(&entries[i - 1], &entries[i]) == 0)
            return ag__error(AG_ERR_INVALID_ARG, "safetensors save %s: duplicate name '%.200s'",
                             path, entries[i].nt->name);
    qsort(entries, (size_t)n, sizeof *entries, by_alignment);
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        entries[i].begin = offset;
        offset += (uint64_t)ag_numel(entries[i].nt->tensor) * entries[i].itemsize;
        entries[i].end = offset;
    }
    return AG_OK;
}

/* Appends v to a JSON array as integer text: cJSON's numbers are doubles, printed with
 * an exponent from 1e15 on, which the Python library refuses. */
static bool add_int(cJSON *array, uint64_t v) {
    char text[24];
    snprintf(text, sizeof text, "%llu", (unsigned long long)v);
    return cJSON_AddItemToArray(array, cJSON_CreateRaw(text));
}

/* The JSON header (malloc'd, padded with spaces to a multiple of 8) and its length; its
 * __metadata__ holds the data buffer's CRC-32. */
static char *make_header(int n, const out_entry *entries, uint32_t crc, size_t *len) {
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = root ? cJSON_AddObjectToObject(root, "__metadata__") : NULL;
    char crc_text[16];
    snprintf(crc_text, sizeof crc_text, "%lu", (unsigned long)crc);
    bool ok = meta && cJSON_AddStringToObject(meta, CRC_KEY, crc_text);
    for (int i = 0; ok && i < n; i++) {
        const ag_tensor *t = entries[i].nt->tensor;
        cJSON *info = cJSON_AddObjectToObject(root, entries[i].nt->name);
        ok = info && cJSON_AddStringToObject(info, "dtype", dtype_code(ag_dtype_of(t)));
        cJSON *shape = ok ? cJSON_AddArrayToObject(info, "shape") : NULL;
        cJSON *offsets = shape ? cJSON_AddArrayToObject(info, "data_offsets") : NULL;
        ok = offsets != NULL;
        for (int d = 0; ok && d < ag_ndim(t); d++) ok = add_int(shape, (uint64_t)ag_shape(t)[d]);
        ok = ok && add_int(offsets, entries[i].begin) && add_int(offsets, entries[i].end);
    }
    char *json = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!json) return NULL;
    size_t used = strlen(json), padded = (used + 7) / 8 * 8;
    char *header = ag__realloc(json, padded + 1);
    if (!header) {
        free(json);
        return NULL;
    }
    memset(header + used, ' ', padded - used);
    *len = padded;
    return header;
}

/* AG_ERR_IO "safetensors: <what> <path>: <strerror(errno)>". */
static ag_status io_error(const char *what, const char *path) {
    return ag__io_error("safetensors", what, path);
}

/* What a save writes: the header, then each tensor's bytes. */
typedef struct save_job {
    const char *path; /* for messages */
    const char *header;
    size_t header_len;
    int n;
    const out_entry *entries;
} save_job;

/* Writes a save job to f (an ag__file_writer). */
static ag_status write_job(FILE *f, void *user) {
    const save_job *job = user;
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)job->header_len >> (8 * i));
    if (fwrite(len, 1, 8, f) != 8 || fwrite(job->header, 1, job->header_len, f) != job->header_len)
        return io_error("cannot write", job->path);
    for (int i = 0; i < job->n; i++) {
        size_t bytes = (size_t)(job->entries[i].end - job->entries[i].begin);
        if (!bytes) continue;
        void *buf = ag__malloc(bytes);
        if (!buf)
            return ag__error(AG_ERR_OUT_OF_MEMORY, "out of host memory copying %zu bytes", bytes);
        ag_status st = ag_to_host(job->entries[i].nt->tensor, buf, bytes);
        if (st == AG_OK && fwrite(buf, 1, bytes, f) != bytes)
            st = io_error("cannot write", job->path);
        free(buf);
        if (st != AG_OK) return st;
    }
    return AG_OK;
}

/* The CRC-32 of the data buffer a save writes: each tensor copied to the host once more,
 * so that the header, which precedes the data, can carry it. */
static ag_status data_crc(int n, const out_entry *entries, uint32_t *crc) {
    *crc = (uint32_t)crc32(0, Z_NULL, 0);
    for (int i = 0; i < n; i++) {
        size_t bytes = (size_t)(entries[i].end - entries[i].begin);
        if (!bytes) continue;
        unsigned char *buf = ag__malloc(bytes);
        if (!buf)
            return ag__error(AG_ERR_OUT_OF_MEMORY, "out of host memory copying %zu bytes", bytes);
        ag_status st = ag_to_host(entries[i].nt->tensor, buf, bytes);
        if (st == AG_OK) *crc = crc_update(*crc, buf, bytes);
        free(buf);
        if (st != AG_OK) return st;
    }
    return AG_OK;
}

/* Writes n named tensors to path (see io.h). */
ag_status ag_safetensors_save(const char *path, int n, const ag_named_tensor *tensors) {
    if (!path || n < 0 || (n > 0 && !tensors))
        return ag__error(AG_ERR_INVALID_ARG, "ag_safetensors_save: bad path, count or tensors");
    out_entry *entries = ag__malloc((size_t)(n ? n : 1) * sizeof *entries);
    if (!entries) return ag__error(AG_ERR_OUT_OF_MEMORY, "out of host memory saving %s", path);
    ag_status st = plan_entries(path, n, tensors, entries);
    save_job job = {.path = path, .n = n, .entries = entries};
    char *header = NULL;
    uint32_t crc = 0;
    if (st == AG_OK) st = data_crc(n, entries, &crc);
    if (st == AG_OK) {
        header = make_header(n, entries, crc, &job.header_len);
        job.header = header;
        if (!header) st = ag__error(AG_ERR_OUT_OF_MEMORY, "out of host memory saving %s", path);
    }
    if (st == AG_OK) st = ag__write_file_atomic("safetensors", path, write_job, &job);
    free(header);
    free(entries);
    return st;
}

/* ---- reading ---- */

/* A validated header entry. */
typedef struct in_entry {
    const char *name; /* owned by the parsed JSON */
    ag_dtype dtype;
    int ndim;
    int64_t shape[AG_MAX_DIMS];
    uint64_t begin, end;
} in_entry;

/* A non-negative integer JSON number that a double holds exactly into *out. */
static bool json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return false;
    double v = j->valuedouble;
    if (!(v >= 0 && v <= MAX_JSON_INT && v == floor(v))) return false;
    *out = (uint64_t)v;
    return true;
}

/* Parses and checks one tensor entry of a header; data_size bounds its offsets. */
static ag_status parse_entry(const char *path, const cJSON *j, uint64_t data_size, in_entry *e) {
    const char *name = j->string;
    e->name = name;
    if (!cJSON_IsObject(j))
        return ag__error(AG_ERR_IO, "%s: entry '%.200s' is not an object", path, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
    if (!cJSON_IsString(dtype) || !cJSON_IsArray(shape) || !cJSON_IsArray(offsets))
        return ag__error(AG_ERR_IO,
                         "%s: tensor '%.200s' needs a string \"dtype\" and arrays \"shape\" and "
                         "\"data_offsets\"",
                         path, name);
    size_t k = 0;
    while (k < N_DTYPES && strcmp(st_dtypes[k].name, dtype->valuestring) != 0) k++;
    if (k == N_DTYPES)
        return ag__error(AG_ERR_IO,
                         "%s: tensor '%.200s' has dtype '%.40s' (ag reads F32, F64 and I64)", path,
                         name, dtype->valuestring);
    e->dtype = st_dtypes[k].dtype;
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > AG_MAX_DIMS)
        return ag__error(AG_ERR_IO, "%s: tensor '%.200s' has %d dims (at most %d)", path, name,
                         ndim, AG_MAX_DIMS);
    e->ndim = ndim;
    /* Bytes, not elements, are bounded: numel * itemsize must fit the data buffer. */
    uint64_t itemsize = ag_dtype_size(e->dtype), bytes = itemsize;
    for (int d = 0; d < ndim; d++) {
        uint64_t extent;
        if (!json_uint(cJSON_GetArrayItem(shape, d), &extent))
            return ag__error(AG_ERR_IO,
                             "%s: tensor '%.200s': shape entry %d is not a non-negative integer",
                             path, name, d);
        e->shape[d] = (int64_t)extent;
        if (extent && bytes > (uint64_t)INT64_MAX / extent)
            return ag__error(AG_ERR_IO, "%s: tensor '%.200s': shape overflows", path, name);
        bytes *= extent;
    }
    if (cJSON_GetArraySize(offsets) != 2 || !json_uint(cJSON_GetArrayItem(offsets, 0), &e->begin) ||
        !json_uint(cJSON_GetArrayItem(offsets, 1), &e->end))
        return ag__error(AG_ERR_IO,
                         "%s: tensor '%.200s': data_offsets must be two non-negative integers",
                         path, name);
    if (e->begin > e->end || e->end > data_size)
        return ag__error(AG_ERR_IO,
                         "%s: tensor '%.200s': data_offsets [%llu, %llu] out of range of the "
                         "%llu-byte data buffer",
                         path, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                         (unsigned long long)data_size);
    if (e->end - e->begin != bytes)
        return ag__error(
            AG_ERR_IO, "%s: tensor '%.200s': data_offsets span %llu bytes but %s%s needs %llu",
            path, name, (unsigned long long)(e->end - e->begin), dtype->valuestring,
            ag__shape_fmt((char[160]){0}, 160, e->ndim, e->shape), (unsigned long long)bytes);
    return AG_OK;
}

/* Checks __metadata__: an object of strings. */
static ag_status check_metadata(const char *path, const cJSON *meta) {
    bool ok = cJSON_IsObject(meta);
    for (const cJSON *c = ok ? meta->child : NULL; c; c = c->next) ok = ok && cJSON_IsString(c);
    return ok ? AG_OK : ag__error(AG_ERR_IO, "%s: __metadata__ must be an object of strings", path);
}

static int entry_by_name(const void *a, const void *b) {
    return strcmp(((const in_entry *)a)->name, ((const in_entry *)b)->name);
}

static int entry_by_offset(const void *a, const void *b) {
    const in_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Names unique; tensors tile the data buffer exactly, as the Python library demands: no
 * overlap, no gap, nothing after the last. Sorts a copy, so entries keep file order. */
static ag_status check_layout(const char *path, int n, const in_entry *entries, uint64_t size) {
    in_entry *sorted = ag__malloc((size_t)(n ? n : 1) * sizeof *sorted);
    if (!sorted) return ag__error(AG_ERR_OUT_OF_MEMORY, "out of host memory reading %s", path);
    memcpy(sorted, entries, (size_t)n * sizeof *sorted);
    ag_status st = AG_OK;
    qsort(sorted, (size_t)n, sizeof *sorted, entry_by_name);
    for (int i = 1; st == AG_OK && i < n; i++)
        if (entry_by_name(&sorted[i - 1], &sorted[i]) == 0)
            st = ag__error(AG_ERR_IO, "%s: duplicate tensor name '%.200s'", path, sorted[i].name);
    qsort(sorted, (size_t)n, sizeof *sorted, entry_by_offset);
    uint64_t at = 0;
    for (int i = 0; st == AG_OK && i < n; i++) {
        if (sorted[i].begin != at)
            st = ag__error(
                AG_ERR_IO, "%s: tensor '%.200s' %s at byte %llu of the data, expected %llu", path,
                sorted[i].name,
                sorted[i].begin < at ? "overlaps another: it starts" : "leaves a gap: it starts",
                (unsigned long long)sorted[i].begin, (unsigned long long)at);
        at = sorted[i].end;
    }
    if (st == AG_OK && at != size)
        st = ag__error(AG_ERR_IO, "%s: %llu bytes of data after the last tensor", path,
                       (unsigned long long)(size - at));
    free(sorted);
    return st;
}

/* Parses and validates a header into entries (malloc'd, names owned by *root). */
static ag_status parse_header(const char *path, const char *header, size_t len, uint64_t data_size,
                              cJSON **root, int *n, in_entry **entries) {
    *root = NULL;
    *entries = NULL;
    if (memchr(header, '\0', len))
        return ag__error(AG_ERR_IO, "%s: header contains a NUL byte", path);
    const char *end = NULL;
    *root = cJSON_ParseWithLengthOpts(header, len, &end, false);
    if (!*root)
        return ag__error(AG_ERR_IO, "%s: header is not valid JSON (error near byte %lld of %zu)",
                         path, end ? (long long)(end - header) : -1LL, len);
    /* Only whitespace may follow the JSON value (the writer pads with spaces). */
    while (end < header + len && strchr(" \t\r\n", *end)) end++;
    if (end != header + len)
        return ag__error(AG_ERR_IO, "%s: header has data after its JSON value at byte %lld", path,
                         (long long)(end - header));
    if (!cJSON_IsObject(*root))
        return ag__error(AG_ERR_IO, "%s: header is not a JSON object", path);
    *entries = ag__malloc((size_t)(cJSON_GetArraySize(*root) + 1) * sizeof **entries);
    if (!*entries) return ag__error(AG_ERR_OUT_OF_MEMORY, "out of host memory reading %s", path);
    int count = 0;
    ag_status st = AG_OK;
    for (const cJSON *c = (*root)->child; st == AG_OK && c; c = c->next) {
        if (strcmp(c->string, "__metadata__") == 0)
            st = check_metadata(path, c);
        else
            st = parse_entry(path, c, data_size, &(*entries)[count++]);
    }
    if (st == AG_OK) st = check_layout(path, count, *entries, data_size);
    *n = count;
    return st;
}

/* Reads exactly `bytes` at the current position of f; AG_ERR_IO naming path otherwise. */
static ag_status read_exact(const char *path, FILE *f, void *buf, size_t bytes, const char *what) {
    size_t got = bytes ? fread(buf, 1, bytes, f) : 0;
    if (got == bytes) return AG_OK;
    if (ferror(f))
        return ag__error(AG_ERR_IO, "%s: error reading the %s: %s", path, what, strerror(errno));
    return ag__error(AG_ERR_IO, "%s: truncated: expected %zu bytes of %s, got %zu", path, bytes,
                     what, got);
}

/* Makes the tensors of validated entries (kept outside any scope) with malloc'd names. */
static ag_status build_tensors(const char *path, int n, const in_entry *entries,
                               const unsigned char *data, ag_named_tensor *out) {
    ag_scope *scope = ag_scope_begin();
    ag_status st = AG_OK;
    for (int i = 0; st == AG_OK && i < n; i++) {
        out[i].name = ag__strdup(entries[i].name);
        out[i].tensor = ag_keep(ag_from_data(entries[i].dtype, entries[i].ndim, entries[i].shape,
                                             data + entries[i].begin));
        if (!out[i].name)
            st = ag__error(AG_ERR_OUT_OF_MEMORY, "out of host memory reading %s", path);
        else if (!out[i].tensor)
            st = ag_last_status();
    }
    ag_scope_end(scope);
    return st;
}

/* Checks the data buffer against the CRC-32 in __metadata__, if the file has one (files
 * from other writers, PyTorch's among them, have none). */
static ag_status verify_crc(const char *path, const cJSON *root, const unsigned char *data,
                            uint64_t size) {
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
    const cJSON *item = meta ? cJSON_GetObjectItemCaseSensitive(meta, CRC_KEY) : NULL;
    if (!item) return AG_OK;
    const char *text = item->valuestring; /* a string: check_metadata saw to it */
    /* Decimal, or hex after "0x": digits only (strtoull alone would take signs, spaces and
     * octal). */
    bool hex = text[0] == '0' && (text[1] == 'x' || text[1] == 'X');
    const char *digits = hex ? text + 2 : text;
    char *end = NULL;
    errno = 0;
    unsigned long long want = strtoull(digits, &end, hex ? 16 : 10);
    if (!(hex ? isxdigit((unsigned char)*digits) : isdigit((unsigned char)*digits)) || *end ||
        errno || want > UINT32_MAX)
        return ag__error(AG_ERR_IO, "%s: __metadata__ \"" CRC_KEY "\" is '%.40s', not a CRC-32",
                         path, text);
    uint32_t got = crc_update((uint32_t)crc32(0, Z_NULL, 0), data, size);
    if (got != want)
        return ag__error(AG_ERR_IO,
                         "%s: checksum mismatch: " CRC_KEY " of the %llu-byte data (file says "
                         "%llu, data gives %lu): the file is corrupt",
                         path, (unsigned long long)size, want, (unsigned long)got);
    return AG_OK;
}

/* Reads every tensor of a safetensors file (see io.h). */
ag_status ag_safetensors_load(const char *path, int *n, ag_named_tensor **tensors) {
    if (!path || !n || !tensors)
        return ag__error(AG_ERR_INVALID_ARG, "ag_safetensors_load: path, n or tensors is NULL");
    *n = 0;
    *tensors = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ag__error(AG_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    unsigned char len_bytes[8];
    char *header = NULL;
    unsigned char *data = NULL;
    cJSON *root = NULL;
    in_entry *entries = NULL;
    int count = 0;
    uint64_t header_len = 0, file_size = 0;
    ag_status st = fstat(fileno(f), &sb) == 0
                       ? AG_OK
                       : ag__error(AG_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
    if (st == AG_OK) {
        file_size = (uint64_t)sb.st_size;
        st = read_exact(path, f, len_bytes, 8, "header length");
    }
    for (int i = 7; st == AG_OK && i >= 0; i--) header_len = header_len << 8 | len_bytes[i];
    if (st == AG_OK && header_len > MAX_HEADER_BYTES)
        st = ag__error(AG_ERR_IO, "%s: header length %llu exceeds the limit of %u bytes", path,
                       (unsigned long long)header_len, MAX_HEADER_BYTES);
    if (st == AG_OK && header_len > file_size - 8)
        st = ag__error(AG_ERR_IO,
                       "%s: header length %llu runs past the end of the file (%llu bytes)", path,
                       (unsigned long long)header_len, (unsigned long long)file_size);
    uint64_t data_size = st == AG_OK ? file_size - 8 - header_len : 0;
    if (st == AG_OK &&
        !((header = ag__malloc(header_len + 1)) && (data = ag__malloc(data_size + 1))))
        st = ag__error(AG_ERR_OUT_OF_MEMORY, "out of host memory reading %s (%llu bytes)", path,
                       (unsigned long long)file_size);
    if (st == AG_OK) st = read_exact(path, f, header, header_len, "header");
    if (st == AG_OK)
        st = parse_header(path, header, header_len, data_size, &root, &count, &entries);
    if (st == AG_OK) st = read_exact(path, f, data, data_size, "data");
    fclose(f);
    if (st == AG_OK) st = verify_crc(path, root, data, data_size);
    ag_named_tensor *out = NULL;
    if (st == AG_OK && !(out = ag__calloc((size_t)count + 1, sizeof *out)))
        st = ag__error(AG_ERR_OUT_OF_MEMORY, "out of host memory reading %s", path);
    if (st == AG_OK) st = build_tensors(path, count, entries, data, out);
    cJSON_Delete(root);
    free(entries);
    free(header);
    free(data);
    if (st != AG_OK) {
        ag_named_tensors_free(count, out);
        return st;
    }
    *n = count;
    *tensors = out;
    return AG_OK;
}

/* Frees an array from ag_safetensors_load. */
void ag_named_tensors_free(int n, ag_named_tensor *tensors) {
    if (!tensors) return;
    for (int i = 0; i < n; i++) {
        free((char *)tensors[i].name);
        ag_release(tensors[i].tensor);
    }
    free(tensors);
}
