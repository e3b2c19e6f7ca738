/* ag — float16 and bfloat16 values: conversions to and from float32, bit-exact and
 * portable (no compiler half type needed), inline so that backends, plugins and tests use
 * the same rounding as the core without linking libag.
 *
 * Both formats are stored as 16 bits (ag_dtype_size 2). float32 -> 16 bits rounds to
 * nearest, ties to even, as IEEE 754 and PyTorch do; overflow gives infinity; NaN stays NaN
 * (quiet). 16 bits -> float32 is exact. */
#ifndef AG_HALF_H
#define AG_HALF_H

#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The bits of a float32. */
static inline uint32_t ag_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* The float32 with these bits. */
static inline float ag_f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* bfloat16 (the top 16 bits of a float32) -> float32, exactly. */
static inline float ag_bf16_to_f32(uint16_t h) {
    return ag_f32_from_bits((uint32_t)h << 16);
}

/* float32 -> bfloat16, round to nearest even; NaN stays a quiet NaN. */
static inline uint16_t ag_f32_to_bf16(float f) {
    uint32_t u = ag_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* IEEE binary16 -> float32, exactly (subnormals included). */
static inline float ag_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1fu) return ag_f32_from_bits(sign | 0x7f800000u | (man << 13)); /* inf, NaN */
    if (exp != 0) return ag_f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));
    /* Zero or subnormal: man * 2^-24, exact in float32. */
    float magnitude = (float)man * (1.0f / 16777216.0f);
    return sign ? -magnitude : magnitude;
}

/* float32 -> IEEE binary16, round to nearest even; overflow gives infinity, NaN stays a
 * quiet NaN, results below the smallest subnormal round to zero. */
static inline uint16_t ag_f32_to_f16(float f) {
    uint32_t u = ag_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);      /* NaN */
    if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);     /* rounds past 65504: inf */
    if (abs >= 0x38800000u) {                                      /* normal in binary16 */
        uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);      /* to nearest even at bit 13 */
        return (uint16_t)(sign | ((rounded - 0x38000000u) >> 13)); /* rebias 127 -> 15 */
    }
    if (abs < 0x33000000u) return sign; /* below half the smallest subnormal (2^-25): zero */
    /* Subnormal: the value in units of 2^-24, rounded to nearest even. */
    uint32_t exp = abs >> 23, man = (abs & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - exp; /* 2^(exp-127) * man / 2^23 / 2^-24 = man >> (126 - exp) */
    uint32_t q = man >> shift, rest = man & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (q & 1u))) q++;
    return (uint16_t)(sign | q);
}

#ifdef __cplusplus
}
#endif
#endif
