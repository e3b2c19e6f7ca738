/* PNG images: 8-bit gray, RGB or RGBA, written for pictures such as saliency maps.
 *
 * The file is the 8-byte signature, an IHDR chunk, IDAT chunks and IEND; every chunk is
 * its length (big-endian u32), a 4-letter type, the data and a CRC-32 of type and data.
 * The image data is a zlib stream of the rows, each preceded by its filter type. Every row
 * uses filter 0 (none): saliency maps and small pictures gain little from the predictive
 * filters, and unfiltered rows keep the file checkable byte by byte.
 *
 * Rows are deflated one at a time into a fixed buffer that is written as an IDAT chunk
 * whenever it fills, so a large image costs no second copy of itself. The file goes
 * through ag__write_file_atomic: a failed write leaves the previous file as it was. */
#define ZLIB_CONST /* z_stream's next_in points to const bytes: the caller's pixels */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "ag/io.h"
#include "../core/internal.h"

/* Largest filtered image (rows plus their filter bytes) accepted: far beyond any picture
 * ag draws, and small enough that a wrong width or height is refused instead of reading
 * gigabytes past the caller's buffer. */
#define MAX_IMAGE_BYTES ((uint64_t)1 << 30)
/* Compressed bytes per IDAT chunk. */
#define IDAT_BYTES 65536

/* PNG colour types by channel count: 0 gray, 2 RGB, 6 RGB with alpha. */
static int color_type(int channels) {
    return channels == 1 ? 0 : channels == 3 ? 2 : 6;
}

/* Stores v big-endian in out[0..4). */
static void put_u32(unsigned char *out, uint32_t v) {
    for (int i = 0; i < 4; i++) out[i] = (unsigned char)(v >> (24 - 8 * i));
}

/* What a save writes, and the stream compressing it. */
typedef struct png_job {
    const char *path;
    int width, height, channels;
    const uint8_t *pixels;
    z_stream zs;
    unsigned char idat[IDAT_BYTES];
} png_job;

/* Writes one chunk: length, type, data, CRC of type and data. */
static ag_status write_chunk(FILE *f, const char *path, const char *type, const unsigned char *data,
                             uint32_t len) {
    unsigned char head[8], crc_bytes[4];
    put_u32(head, len);
    memcpy(head + 4, type, 4);
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, head + 4, 4);
    if (len) crc = crc32(crc, data, len);
    put_u32(crc_bytes, (uint32_t)crc);
    if (fwrite(head, 1, 8, f) != 8 || (len && fwrite(data, 1, len, f) != len) ||
        fwrite(crc_bytes, 1, 4, f) != 4)
        return ag__io_error("png", "cannot write", path);
    return AG_OK;
}

/* Feeds `len` bytes to the deflate stream (flush Z_NO_FLUSH or Z_FINISH), writing an IDAT
 * chunk each time the output buffer fills, and the last partial one at Z_FINISH. */
static ag_status deflate_bytes(FILE *f, png_job *job, const unsigned char *bytes, size_t len,
                               int flush) {
    job->zs.next_in = bytes;
    job->zs.avail_in = (uInt)len;
    for (;;) {
        int rc = deflate(&job->zs, flush);
        if (rc == Z_STREAM_ERROR)
            return ag__error(AG_ERR_INTERNAL, "png %s: zlib deflate failed: %s", job->path,
                             job->zs.msg ? job->zs.msg : "stream error");
        bool full = job->zs.avail_out == 0, done = flush == Z_FINISH && rc == Z_STREAM_END;
        if (full || done) {
            uint32_t n = (uint32_t)(IDAT_BYTES - job->zs.avail_out);
            ag_status st = n ? write_chunk(f, job->path, "IDAT", job->idat, n) : AG_OK;
            if (st != AG_OK) return st;
            job->zs.next_out = job->idat;
            job->zs.avail_out = IDAT_BYTES;
        }
        /* Without Z_FINISH deflate is done once it has taken all input and has room left. */
        if (done || (flush != Z_FINISH && job->zs.avail_in == 0 && !full)) return AG_OK;
    }
}

/* Writes a PNG job to f (an ag__file_writer). */
static ag_status write_png(FILE *f, void *user) {
    png_job *job = user;
    static const unsigned char signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    unsigned char ihdr[13];
    put_u32(ihdr, (uint32_t)job->width);
    put_u32(ihdr + 4, (uint32_t)job->height);
    ihdr[8] = 8; /* bits per channel */
    ihdr[9] = (unsigned char)color_type(job->channels);
    ihdr[10] = ihdr[11] = ihdr[12] = 0; /* deflate, adaptive filtering, no interlace */
    if (fwrite(signature, 1, sizeof signature, f) != sizeof signature)
        return ag__io_error("png", "cannot write", job->path);
    ag_status st = write_chunk(f, job->path, "IHDR", ihdr, sizeof ihdr);
    if (st != AG_OK) return st;

    memset(&job->zs, 0, sizeof job->zs);
    if (deflateInit(&job->zs, Z_DEFAULT_COMPRESSION) != Z_OK)
        return ag__error(AG_ERR_OUT_OF_MEMORY, "png %s: zlib deflateInit failed", job->path);
    job->zs.next_out = job->idat;
    job->zs.avail_out = IDAT_BYTES;
    size_t row_bytes = (size_t)job->width * (size_t)job->channels;
    static const unsigned char filter_none = 0;
    for (int y = 0; y < job->height && st == AG_OK; y++) {
        st = deflate_bytes(f, job, &filter_none, 1, Z_NO_FLUSH);
        if (st == AG_OK)
            st = deflate_bytes(f, job, job->pixels + (size_t)y * row_bytes, row_bytes, Z_NO_FLUSH);
    }
    if (st == AG_OK) st = deflate_bytes(f, job, NULL, 0, Z_FINISH);
    deflateEnd(&job->zs);
    if (st == AG_OK) st = write_chunk(f, job->path, "IEND", NULL, 0);
    return st;
}

ag_status ag_png_save(const char *path, int width, int height, int channels,
                      const uint8_t *pixels) {
    if (!path) return ag__error(AG_ERR_INVALID_ARG, "ag_png_save: path is NULL");
    if (!pixels) return ag__error(AG_ERR_INVALID_ARG, "ag_png_save %s: pixels is NULL", path);
    if (width <= 0 || height <= 0)
        return ag__error(AG_ERR_INVALID_ARG,
                         "ag_png_save %s: image size %dx%d (width and height must be >= 1)", path,
                         width, height);
    if (channels != 1 && channels != 3 && channels != 4)
        return ag__error(AG_ERR_INVALID_ARG,
                         "ag_png_save %s: channels %d (1 gray, 3 RGB or 4 RGBA)", path, channels);
    /* 1 + width * channels < 2^33 and height < 2^31: the product stays below 2^64. */
    uint64_t bytes = (uint64_t)height * (1 + (uint64_t)width * (uint64_t)channels);
    if (bytes > MAX_IMAGE_BYTES)
        return ag__error(AG_ERR_INVALID_ARG,
                         "ag_png_save %s: image %dx%dx%d too large (%llu bytes, at most %llu)",
                         path, width, height, channels, (unsigned long long)bytes,
                         (unsigned long long)MAX_IMAGE_BYTES);
    png_job *job = ag__malloc(sizeof *job);
    if (!job) return ag__error(AG_ERR_OUT_OF_MEMORY, "ag_png_save %s: out of host memory", path);
    *job = (png_job){
        .path = path, .width = width, .height = height, .channels = channels, .pixels = pixels};
    ag_status st = ag__write_file_atomic("png", path, write_png, job);
    free(job);
    return st;
}
