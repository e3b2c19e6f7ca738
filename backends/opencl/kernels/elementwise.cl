/* Elementwise kernels: unary maps (and copy), binary maps, where, fill and arange.
 *
 * One generic strided kernel per arity; the host picks the scalar operation with -D UOP=U_<op>
 * (ag_unary) or -D BOP=B_<op> (ag_binary), one program per op and dtype. Optional defines:
 * IN_T / IN_ID (input type of ag_unary, for copy; default T) and AG_FP64 (the device has
 * fp64: float32 arange then computes in double, as the cpu backend does). Every kernel walks
 * its n elements with a grid-stride loop, so any global size works. float16 and bfloat16
 * (T_ID / IN_ID 3 and 4) are ushort bits that only copy converts, with integer operations
 * (no cl_khr_fp16), bit for bit as include/ag/half.h. */
#ifndef IN_T
#define IN_T  T
#define IN_ID T_ID
#endif
#if IN_ID == 1 || defined(AG_FP64)
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif
/* No fused multiply-add: results round as the cpu backend's. */
#pragma OPENCL FP_CONTRACT OFF

#define EW_IS_FLOAT (T_ID == 0 || T_ID == 1) /* float32, float64 */
/* True for NaN; always false for integers. */
#define EW_ISNAN(x) ((x) != (x))

/* ---- scalar helpers ---- */

#if EW_IS_FLOAT
#define EW_NEG(x) (-(x))
#define EW_ABS(x) fabs(x)

/* tanh that is exactly +-1 where the rounded result is (PoCL's float tanh stops at
 * 0.99999994, which gelu's 1 + tanh turns into a wrong non-zero). */
#if T_ID == 1
#define EW_TANH_ONE 19.1 /* 1 - tanh(x) < 2^-54 above */
#else
#define EW_TANH_ONE 9.1f /* 1 - tanh(x) < 2^-25 above */
#endif
inline T ew_tanh(T x) {
    return fabs(x) > EW_TANH_ONE ? copysign((T)1, x) : tanh(x);
}

/* Split by sign so exp never overflows. */
inline T ew_sigmoid(T x) {
    if (x >= 0) return (T)1 / ((T)1 + exp(-x));
    const T e = exp(x);
    return e / ((T)1 + e);
}

inline T ew_gelu(T x, long tanh_mode) {
    if (tanh_mode)
        return (T)0.5 * x * ((T)1 + ew_tanh((T)0.7978845608028654 * (x + (T)0.044715 * x * x * x)));
    return (T)0.5 * x * ((T)1 + erf(x * (T)0.7071067811865476));
}
#else
/* Integer arithmetic wraps (two's complement), as on the cpu backend. */
#define EW_NEG(x) ((long)(0UL - (ulong)(x)))
#define EW_ABS(x) ((x) < 0 ? EW_NEG(x) : (x))
#endif

/* Clamp with optional bounds lo, hi (i64 bounds arrive rounded toward the inside). */
inline T ew_clamp(T x, T lo, T hi, long has_lo, long has_hi) {
    if (has_lo && x < lo) x = lo;
    if (has_hi && x > hi) x = hi;
    return x;
}

/* ---- float16 and bfloat16: include/ag/half.h ported to integer operations ---- */

/* bfloat16 (float32's top 16 bits) -> float32, exactly. */
inline float ew_bf16_to_f32(ushort h) {
    return as_float((uint)h << 16);
}

/* float32 -> bfloat16, round to nearest even; NaN stays a quiet NaN. */
inline ushort ew_f32_to_bf16(float f) {
    uint u = as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (ushort)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (ushort)(u >> 16);
}

/* IEEE binary16 -> float32, exactly; a subnormal is normalised with shifts, so no float
 * arithmetic (or a device's denormal flushing) is involved. */
inline float ew_f16_to_f32(ushort h) {
    const uint sign = (uint)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu;
    uint man = h & 0x3ffu;
    if (e == 0x1fu) return as_float(sign | 0x7f800000u | (man << 13)); /* inf, NaN */
    if (e != 0) return as_float(sign | ((e + 112u) << 23) | (man << 13));
    if (man == 0) return as_float(sign); /* +-0 */
    /* Subnormal man * 2^-24: shift the leading 1 up to bit 10 (the implicit bit). */
    uint fe = 113u;
    while (!(man & 0x400u)) {
        man <<= 1;
        fe--;
    }
    return as_float(sign | (fe << 23) | ((man & 0x3ffu) << 13));
}

/* float32 -> IEEE binary16, round to nearest even; overflow gives infinity, NaN stays a
 * quiet NaN, results below the smallest subnormal round to zero. */
inline ushort ew_f32_to_f16(float f) {
    const uint u = as_uint(f);
    const ushort sign = (ushort)((u >> 16) & 0x8000u);
    const uint a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (ushort)(sign | 0x7e00u);  /* NaN */
    if (a >= 0x477ff000u) return (ushort)(sign | 0x7c00u); /* rounds past 65504: inf */
    if (a >= 0x38800000u) {                                /* normal in binary16 */
        const uint rounded = a + 0xfffu + ((a >> 13) & 1u);
        return (ushort)(sign | ((rounded - 0x38000000u) >> 13));
    }
    if (a < 0x33000000u) return sign; /* below 2^-25: zero */
    /* Subnormal: the value in units of 2^-24, rounded to nearest even. */
    const uint fe = a >> 23, man = (a & 0x7fffffu) | 0x800000u;
    const uint shift = 126u - fe;
    uint q = man >> shift;
    const uint rest = man & ((1u << shift) - 1u), mid = 1u << (shift - 1u);
    if (rest > mid || (rest == mid && (q & 1u))) q++;
    return (ushort)(sign | q);
}

/* The input as a number: float16 and bfloat16 widen to float exactly. */
#if IN_ID == 3
#define IN_NUM_T     float
#define EW_IN_NUM(x) ew_f16_to_f32(x)
#elif IN_ID == 4
#define IN_NUM_T     float
#define EW_IN_NUM(x) ew_bf16_to_f32(x)
#else
#define IN_NUM_T     IN_T
#define EW_IN_NUM(x) (x)
#endif

/* Conversion of the input type to T: float -> i64 truncates toward zero, NaN gives 0 and
 * out-of-range values saturate; -> float16 / bfloat16 goes through float32 (float64 and
 * int64 round to float32 first, as PyTorch does) and rounds to nearest even; a copy within
 * one dtype keeps the bits; everything else is a plain conversion. */
#if T_ID == 2 && IN_ID != 2
inline T ew_convert(IN_T in) {
    const IN_NUM_T x = EW_IN_NUM(in);
    if (EW_ISNAN(x)) return 0;
    if (x >= (IN_NUM_T)0x1p63) return LONG_MAX;
    if (x < (IN_NUM_T)-0x1p63) return LONG_MIN;
    return (T)x;
}
#elif T_ID == IN_ID
#define ew_convert(x) (x)
#elif T_ID == 3
#define ew_convert(x) ew_f32_to_f16((float)EW_IN_NUM(x))
#elif T_ID == 4
#define ew_convert(x) ew_f32_to_bf16((float)EW_IN_NUM(x))
#else
#define ew_convert(x) ((T)EW_IN_NUM(x))
#endif

/* ---- scalar ops: U_*(x, p0, p1, i0, i1) for ag_unary, B_*(a, b) for ag_binary ---- */
#define U_NEG(x, p0, p1, i0, i1)        EW_NEG(x)
#define U_ABS(x, p0, p1, i0, i1)        EW_ABS(x)
#define U_SIGN(x, p0, p1, i0, i1)       (EW_ISNAN(x) ? (x) : (T)(((x) > 0) - ((x) < 0)))
#define U_EXP(x, p0, p1, i0, i1)        exp(x)
#define U_LOG(x, p0, p1, i0, i1)        log(x)
#define U_SQRT(x, p0, p1, i0, i1)       sqrt(x)
#define U_SIN(x, p0, p1, i0, i1)        sin(x)
#define U_COS(x, p0, p1, i0, i1)        cos(x)
#define U_TANH(x, p0, p1, i0, i1)       ew_tanh(x)
#define U_ERF(x, p0, p1, i0, i1)        erf(x)
#define U_RSQRT(x, p0, p1, i0, i1)      ((T)1 / sqrt(x))
#define U_SIGMOID(x, p0, p1, i0, i1)    ew_sigmoid(x)
#define U_RELU(x, p0, p1, i0, i1)       ((x) > 0 || EW_ISNAN(x) ? (x) : (T)0)
#define U_SILU(x, p0, p1, i0, i1)       ((x) * ew_sigmoid(x))
#define U_GELU(x, p0, p1, i0, i1)       ew_gelu(x, i0)
#define U_POW_SCALAR(x, p0, p1, i0, i1) pow(x, p0)
#define U_CLAMP(x, p0, p1, i0, i1)      ew_clamp(x, p0, p1, i0, i1)
#define U_COPY(x, p0, p1, i0, i1)       ew_convert(x)

#if EW_IS_FLOAT
#define B_ADD(a, b) ((a) + (b))
#define B_SUB(a, b) ((a) - (b))
#define B_MUL(a, b) ((a) * (b))
#else
#define B_ADD(a, b) ((long)((ulong)(a) + (ulong)(b)))
#define B_SUB(a, b) ((long)((ulong)(a) - (ulong)(b)))
#define B_MUL(a, b) ((long)((ulong)(a) * (ulong)(b)))
#endif
#define B_DIV(a, b)     ((a) / (b))
#define B_POW(a, b)     pow(a, b)
#define B_MAXIMUM(a, b) (EW_ISNAN(a) || (a) > (b) ? (a) : (b))
#define B_MINIMUM(a, b) (EW_ISNAN(a) || (a) < (b) ? (a) : (b))
#define B_EQ(a, b)      ((T)((a) == (b)))
#define B_NE(a, b)      ((T)((a) != (b)))
#define B_LT(a, b)      ((T)((a) < (b)))
#define B_LE(a, b)      ((T)((a) <= (b)))
#define B_GT(a, b)      ((T)((a) > (b)))
#define B_GE(a, b)      ((T)((a) >= (b)))

/* ag_at with fast paths for the 1-D views that coalesced contiguous tensors become and for
 * 2-D views (transposes, broadcast rows). */
inline long ew_at(const ag_view v, long i) {
    if (v.ndim == 1) return v.offset + i * v.strides[0];
    if (v.ndim != 2) return ag_at(v, i);
    const long r = i / v.shape[1];
    return v.offset + r * v.strides[0] + (i - r * v.shape[1]) * v.strides[1];
}

/* Grid-stride loop over the n output elements. */
#define EW_FOR_EACH(i, n) for (long i = get_global_id(0); i < (n); i += get_global_size(0))

/* ---- kernels ---- */

#ifdef UOP
/* out = UOP(a, params): p0, p1 are reals[0..1] in T (i64 clamp: the rounded bounds), i0, i1
 * are ints[0..1]. */
__kernel void ag_unary(__global T *out, const ag_view ov, __global const IN_T *a,
                       const ag_view av, const long n, const T p0, const T p1, const long i0,
                       const long i1) {
    (void)p0, (void)p1, (void)i0, (void)i1; /* most ops read none of them */
    EW_FOR_EACH(i, n) {
        const IN_T x = a[ew_at(av, i)];
        out[ew_at(ov, i)] = UOP(x, p0, p1, i0, i1);
    }
}
#endif

#ifdef BOP
/* out = BOP(a, b). */
__kernel void ag_binary(__global T *out, const ag_view ov, __global const T *a, const ag_view av,
                        __global const T *b, const ag_view bv, const long n) {
    EW_FOR_EACH(i, n) {
        const T x = a[ew_at(av, i)], y = b[ew_at(bv, i)];
        out[ew_at(ov, i)] = BOP(x, y);
    }
}
#endif

/* out = cond != 0 ? a : b. */
__kernel void ag_where(__global T *out, const ag_view ov, __global const T *c, const ag_view cv,
                       __global const T *a, const ag_view av, __global const T *b,
                       const ag_view bv, const long n) {
    EW_FOR_EACH(i, n) {
        out[ew_at(ov, i)] = c[ew_at(cv, i)] != 0 ? a[ew_at(av, i)] : b[ew_at(bv, i)];
    }
}

/* Every element = v. */
__kernel void ag_fill(__global T *out, const ag_view ov, const long n, const T v) {
    EW_FOR_EACH(i, n) out[ew_at(ov, i)] = v;
}

/* 1-D out[i] = start + i*step: i64 wraps; floats compute in double where the device has it
 * (float32 otherwise). */
#if T_ID == 2
#define ARANGE_T          long
#define ARANGE_VALUE(s, d, i) B_ADD(s, B_MUL(i, d))
#else
#ifdef AG_FP64
#define ARANGE_T double
#else
#define ARANGE_T T
#endif
#define ARANGE_VALUE(s, d, i) ((T)((s) + (ARANGE_T)(i) * (d)))
#endif
__kernel void ag_arange(__global T *out, const ag_view ov, const long n, const ARANGE_T start,
                        const ARANGE_T step) {
    EW_FOR_EACH(i, n) out[ew_at(ov, i)] = ARANGE_VALUE(start, step, i);
}
