/* Batched matrix product out[.., m, n] = a[.., m, k] @ b[.., k, n], tiled in local memory.
 *
 * A work group computes a TS x TS tile of one batch element's output. For each step of KS
 * along k the group copies a TS x KS block of a and a KS x TS block of b into local memory
 * (zero outside the matrices) and each item accumulates a W x W block of outputs from
 * there, in registers. Range dimension 0 covers the column tiles, dimension 1 the row tiles
 * of every batch element in turn. Operands have any strides: av, bv and ov are views of the
 * batch dims (with the operands' offsets), the matrix dims come as row and column strides.
 */

/* Wrapping product and sum for int64 (signed overflow is undefined). */
#if T_ID == 2
#define MAD(x, y, acc) ((long)((ulong)(acc) + (ulong)(x) * (ulong)(y)))
#else
#define MAD(x, y, acc) ((acc) + (x) * (y))
#endif

/* A TS x TS output tile per group of (TS / W) x (TS / W) items, each computing a W x W
 * block (rows ty + i * TS / W, columns tx + j * TS / W); k advances KS at a time. */
#define DEFINE_MATMUL_BLOCK(NAME, TS, KS, W)                                                       \
    __kernel __attribute__((reqd_work_group_size(TS / W, TS / W, 1))) void NAME(                   \
        __global const T *a, const ag_view av, __global const T *b, const ag_view bv,              \
        __global T *out, const ag_view ov, const long m, const long n, const long k,               \
        const long ars, const long acs, const long brs, const long bcs, const long ors,            \
        const long ocs) {                                                                          \
        __local T as[KS][TS + 1]; /* as[kk][i]: a transposed */                                    \
        __local T bs[KS][TS + 1];                                                                  \
        const int r = TS / W, tx = get_local_id(0), ty = get_local_id(1), id = ty * r + tx;        \
        const long mt = (m + TS - 1) / TS;                                                         \
        const long batch = get_group_id(1) / mt;                                                   \
        const long row0 = (get_group_id(1) % mt) * TS, col0 = get_group_id(0) * TS;                \
        const long ab = ag_at(av, batch), bb = ag_at(bv, batch);                                   \
        T acc[W][W];                                                                               \
        for (int i = 0; i < W; i++)                                                                \
            for (int j = 0; j < W; j++) acc[i][j] = 0;                                             \
        for (long k0 = 0; k0 < k; k0 += KS) {                                                      \
            for (int e = id; e < TS * KS; e += r * r) {                                            \
                const int i = e % TS, kk = e / TS;                                                 \
                const long ai = row0 + i, ak = k0 + kk, bj = col0 + i;                             \
                as[kk][i] = ai < m && ak < k ? a[ab + ai * ars + ak * acs] : 0;                    \
                bs[kk][i] = bj < n && ak < k ? b[bb + ak * brs + bj * bcs] : 0;                    \
            }                                                                                      \
            barrier(CLK_LOCAL_MEM_FENCE);                                                          \
            for (int kk = 0; kk < KS; kk++) {                                                      \
                T av_[W], bv_[W];                                                                  \
                for (int i = 0; i < W; i++) av_[i] = as[kk][ty + i * r];                           \
                for (int j = 0; j < W; j++) bv_[j] = bs[kk][tx + j * r];                           \
                for (int i = 0; i < W; i++)                                                        \
                    for (int j = 0; j < W; j++) acc[i][j] = MAD(av_[i], bv_[j], acc[i][j]);        \
            }                                                                                      \
            barrier(CLK_LOCAL_MEM_FENCE);                                                          \
        }                                                                                          \
        const long ob = ag_at(ov, batch);                                                          \
        for (int i = 0; i < W; i++)                                                                \
            for (int j = 0; j < W; j++) {                                                          \
                const long oi = row0 + ty + i * r, oj = col0 + tx + j * r;                         \
                if (oi < m && oj < n) out[ob + oi * ors + oj * ocs] = acc[i][j];                   \
            }                                                                                      \
    }

/* Variants, fastest first; the host takes the first one the device runs. */
DEFINE_MATMUL_BLOCK(matmul_b64, 64, 16, 4)
DEFINE_MATMUL_BLOCK(matmul_b32, 32, 16, 4)
DEFINE_MATMUL_BLOCK(matmul_b4, 4, 4, 1)
