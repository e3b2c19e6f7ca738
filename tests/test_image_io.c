/* PNG images (ag_png_save): gray, RGB and RGBA images written, then parsed back here with
 * no PNG library: the signature, IHDR's fields, every chunk's CRC, the chunk order, and the
 * IDAT stream inflated with zlib and compared byte by byte with the pixels (filter 0 on
 * every row). Plus the refused arguments (messages checked) and atomic replacement: a write
 * that fails leaves the previous file as it was. */
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include "ag/io.h"
#include "test_util.h"

static char tmpdir[64];

/* A path in this test's temporary directory. */
static const char *tmp_path(const char *name, char *buf, size_t size) {
    return tu_tmp_path(tmpdir, sizeof tmpdir, "image_io", name, buf, size);
}

/* The whole file at path (malloc'd, *len bytes); NULL if it cannot be read. */
static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *bytes = n >= 0 ? malloc((size_t)n + 1) : NULL;
    *len = bytes ? fread(bytes, 1, (size_t)n, f) : 0;
    fclose(f);
    return bytes;
}

/* Big-endian u32 at p. */
static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* What parse_png found in a file. */
typedef struct png_info {
    uint32_t width, height;
    int bit_depth, color_type, compression, filter, interlace;
    int idat_chunks;
    unsigned char *idat; /* the IDAT chunks' data concatenated (malloc'd) */
    size_t idat_len;
} png_info;

/* Parses a PNG file chunk by chunk, asserting the signature, IHDR first with 13 bytes,
 * every CRC, IDAT chunks in one run, and IEND last with no data and nothing after it. */
static png_info parse_png(const unsigned char *bytes, size_t len) {
    png_info info = {0};
    static const unsigned char signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    ck_assert_uint_ge(len, 8);
    ck_assert_mem_eq(bytes, signature, 8);
    info.idat = malloc(len);
    ck_assert_ptr_nonnull(info.idat);
    size_t pos = 8;
    int index = 0;
    bool iend = false, idat_ended = false;
    while (!iend) {
        ck_assert_msg(pos + 12 <= len, "chunk %d: header past the end (%zu of %zu)", index, pos,
                      len);
        uint32_t n = get_u32(bytes + pos);
        char type[5] = {0};
        memcpy(type, bytes + pos + 4, 4);
        ck_assert_msg(pos + 12 + (size_t)n <= len, "chunk %d (%s): %u bytes past the end", index,
                      type, n);
        const unsigned char *data = bytes + pos + 8;
        uLong crc = crc32(crc32(0L, Z_NULL, 0), bytes + pos + 4, 4 + n);
        ck_assert_msg(get_u32(data + n) == (uint32_t)crc, "chunk %d (%s): CRC %08x, expected %08lx",
                      index, type, get_u32(data + n), crc);
        if (index == 0) {
            ck_assert_str_eq(type, "IHDR");
            ck_assert_uint_eq(n, 13);
            info.width = get_u32(data);
            info.height = get_u32(data + 4);
            info.bit_depth = data[8];
            info.color_type = data[9];
            info.compression = data[10];
            info.filter = data[11];
            info.interlace = data[12];
        } else if (strcmp(type, "IDAT") == 0) {
            ck_assert_msg(!idat_ended, "IDAT chunks must be consecutive");
            memcpy(info.idat + info.idat_len, data, n);
            info.idat_len += n;
            info.idat_chunks++;
        } else if (strcmp(type, "IEND") == 0) {
            ck_assert_uint_eq(n, 0);
            iend = true;
        } else {
            ck_abort_msg("unexpected chunk %s", type);
        }
        idat_ended = info.idat_chunks > 0 && strcmp(type, "IDAT") != 0;
        pos += 12 + (size_t)n;
        index++;
    }
    ck_assert_uint_eq(pos, len);
    ck_assert_int_ge(info.idat_chunks, 1);
    return info;
}

/* Writes the image with ag_png_save, reads the file back and checks every field and byte;
 * returns the number of IDAT chunks. */
static int check_round_trip(const char *name, int width, int height, int channels,
                            const uint8_t *pixels) {
    char path[128];
    ck_assert_msg(ag_png_save(tmp_path(name, path, sizeof path), width, height, channels, pixels) ==
                      AG_OK,
                  "%s", ag_last_error());
    size_t len = 0;
    unsigned char *bytes = read_file(path, &len);
    ck_assert_ptr_nonnull(bytes);
    png_info info = parse_png(bytes, len);
    ck_assert_uint_eq(info.width, (uint32_t)width);
    ck_assert_uint_eq(info.height, (uint32_t)height);
    ck_assert_int_eq(info.bit_depth, 8);
    ck_assert_int_eq(info.color_type, channels == 1 ? 0 : channels == 3 ? 2 : 6);
    ck_assert_int_eq(info.compression, 0);
    ck_assert_int_eq(info.filter, 0);
    ck_assert_int_eq(info.interlace, 0);
    /* One filter byte per row, then the row; one spare byte catches extra data. */
    size_t row = (size_t)width * (size_t)channels, want = (size_t)height * (row + 1);
    uLongf got = (uLongf)want + 1;
    unsigned char *raw = malloc(want + 1);
    ck_assert_ptr_nonnull(raw);
    ck_assert_int_eq(uncompress(raw, &got, info.idat, (uLong)info.idat_len), Z_OK);
    ck_assert_uint_eq(got, want);
    for (int y = 0; y < height; y++) {
        const unsigned char *line = raw + (size_t)y * (row + 1);
        ck_assert_msg(line[0] == 0, "row %d: filter type %d, expected 0", y, line[0]);
        for (size_t x = 0; x < row; x++)
            ck_assert_msg(line[1 + x] == pixels[(size_t)y * row + x],
                          "row %d byte %zu: %d, expected %d", y, x, line[1 + x],
                          pixels[(size_t)y * row + x]);
    }
    free(raw);
    free(info.idat);
    free(bytes);
    return info.idat_chunks;
}

/* width x height x channels bytes from a fixed pseudo-random sequence (xorshift): noise
 * deflate cannot shrink, so large images span several IDAT chunks. */
static uint8_t *noise_image(int width, int height, int channels) {
    size_t n = (size_t)width * (size_t)height * (size_t)channels;
    uint8_t *pixels = malloc(n);
    ck_assert_ptr_nonnull(pixels);
    uint32_t s = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        pixels[i] = (uint8_t)(s >> 24);
    }
    return pixels;
}

START_TEST(test_png_gray) {
    /* A ramp with distinct values in every row and column, so a transposed or shifted image
     * cannot pass. */
    enum { W = 7, H = 5 };
    uint8_t pixels[W * H];
    for (int i = 0; i < W * H; i++) pixels[i] = (uint8_t)(i * 7 + 3);
    ck_assert_int_eq(check_round_trip("gray.png", W, H, 1, pixels), 1);
    /* A single pixel. */
    ck_assert_int_eq(check_round_trip("one.png", 1, 1, 1, (const uint8_t[]){200}), 1);
}
END_TEST

START_TEST(test_png_rgb_and_rgba) {
    enum { W = 13, H = 4 };
    uint8_t rgb[W * H * 3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *px = rgb + (y * W + x) * 3;
            px[0] = (uint8_t)(x * 19), px[1] = (uint8_t)(y * 60), px[2] = (uint8_t)(255 - x - y);
        }
    ck_assert_int_eq(check_round_trip("rgb.png", W, H, 3, rgb), 1);
    uint8_t *rgba = noise_image(3, 2, 4);
    ck_assert_int_eq(check_round_trip("rgba.png", 3, 2, 4, rgba), 1);
    free(rgba);
}
END_TEST

START_TEST(test_png_large_spans_chunks) {
    /* 400 x 300 RGB noise is 360 kB of incompressible data: several 64 KiB IDAT chunks. */
    uint8_t *pixels = noise_image(400, 300, 3);
    ck_assert_int_ge(check_round_trip("noise.png", 400, 300, 3, pixels), 4);
    free(pixels);
}
END_TEST

/* Asserts that st is AG_ERR_INVALID_ARG with a message holding "png" and `part`. */
static void expect_invalid(ag_status st, const char *part) {
    ck_assert_int_eq(st, AG_ERR_INVALID_ARG);
    ck_assert_msg(strstr(ag_last_error(), "png") && strstr(ag_last_error(), part),
                  "'%s' expected in: %s", part, ag_last_error());
    ag_clear_error();
}

START_TEST(test_png_refuses_bad_arguments) {
    char path[128];
    tmp_path("bad.png", path, sizeof path);
    const uint8_t pixels[12] = {0};
    expect_invalid(ag_png_save(NULL, 2, 2, 3, pixels), "path is NULL");
    expect_invalid(ag_png_save(path, 2, 2, 3, NULL), "pixels is NULL");
    expect_invalid(ag_png_save(path, 0, 2, 1, pixels), "0x2");
    expect_invalid(ag_png_save(path, 2, -3, 1, pixels), "2x-3");
    expect_invalid(ag_png_save(path, 2, 2, 2, pixels), "channels 2");
    expect_invalid(ag_png_save(path, 2, 2, 0, pixels), "channels 0");
    expect_invalid(ag_png_save(path, 1, 1, 5, pixels), "channels 5");
    /* Sizes whose bytes exceed any sane buffer are refused before a byte is read. */
    expect_invalid(ag_png_save(path, 100000, 100000, 3, pixels), "100000x100000x3 too large");
    expect_invalid(ag_png_save(path, 2147483647, 2147483647, 4, pixels), "too large");
    ck_assert_int_eq(access(path, F_OK), -1);
    /* A directory that does not exist is an I/O error naming the file. */
    const char *missing = "/nonexistent_ag_dir/image.png";
    ck_assert_int_eq(ag_png_save(missing, 2, 2, 3, pixels), AG_ERR_IO);
    ck_assert_msg(strstr(ag_last_error(), missing), "%s", ag_last_error());
}
END_TEST

/* Number of temporary files ("*.tmp.*") left in the test directory. */
static int temp_files(void) {
    char cmd[160], out[64] = "";
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -c '\\.tmp\\.'", tmpdir);
    tu_run_command(cmd, out, sizeof out);
    return atoi(out);
}

START_TEST(test_png_failed_write_keeps_file) {
    char path[128];
    tmp_path("keep.png", path, sizeof path);
    const uint8_t small[4] = {1, 2, 3, 4};
    ck_assert_int_eq(ag_png_save(path, 2, 2, 1, small), AG_OK);
    size_t old_len = 0, now_len = 0;
    unsigned char *old = read_file(path, &old_len);
    ck_assert_ptr_nonnull(old);
    /* Refused arguments do not touch the file. */
    expect_invalid(ag_png_save(path, 2, 2, 2, small), "channels 2");
    /* A write that fails half-way (the file size limit, EFBIG) leaves the old file. */
    uint8_t *noise = noise_image(400, 300, 3);
    struct rlimit saved, limit;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    limit = (struct rlimit){.rlim_cur = 65536, .rlim_max = saved.rlim_max};
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &limit), 0);
    ag_status st = ag_png_save(path, 400, 300, 3, noise);
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, prev);
    ck_assert_int_eq(st, AG_ERR_IO);
    ck_assert_msg(strstr(ag_last_error(), "png") && strstr(ag_last_error(), "keep.png"), "%s",
                  ag_last_error());
    ag_clear_error();
    unsigned char *now = read_file(path, &now_len);
    ck_assert_ptr_nonnull(now);
    ck_assert_uint_eq(now_len, old_len);
    ck_assert_mem_eq(now, old, old_len);
    ck_assert_int_eq(temp_files(), 0);
    /* Without the limit the same image replaces the file whole. */
    ck_assert_int_ge(check_round_trip("keep.png", 400, 300, 3, noise), 4);
    free(now);
    free(old);
    free(noise);
}
END_TEST

static Suite *image_io_suite(void) {
    Suite *s = suite_create("image_io");
    TCase *png = tcase_create("png");
    tcase_add_checked_fixture(png, tu_scope_setup, tu_scope_teardown);
    tcase_add_test(png, test_png_gray);
    tcase_add_test(png, test_png_rgb_and_rgba);
    tcase_add_test(png, test_png_large_spans_chunks);
    tcase_add_test(png, test_png_refuses_bad_arguments);
    tcase_add_test(png, test_png_failed_write_keeps_file);
    suite_add_tcase(s, png);
    return s;
}

int main(void) {
    int rc = tu_run_suite(image_io_suite());
    tu_remove_tmpdir(tmpdir);
    return rc;
}
