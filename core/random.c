/* Random numbers: a counter-based Philox4x32-10 generator, so the same seed gives the same
 * numbers on every backend (samples are drawn on the host and copied to the device). */
#include <math.h>
#include <stdlib.h>
#include "internal.h"

struct ag_generator {
    uint64_t seed;    /* the key */
    uint64_t counter; /* blocks of four 32-bit outputs consumed so far */
};

static ag_generator default_generator = {0x5eed, 0};

ag_generator *ag_generator_new(uint64_t seed) {
    ag_generator *g = ag__calloc(1, sizeof *g);
    if (!g) {
        ag__error(AG_ERR_OUT_OF_MEMORY, "ag_generator_new: out of host memory");
        return NULL;
    }
    g->seed = seed;
    return g;
}

void ag_generator_free(ag_generator *gen) {
    free(gen);
}

/* The default generator's fields are read and written atomically: any thread may draw from
 * it (docs/threads.md). Reseeding while another thread draws is no data race, but which
 * numbers that thread gets is then undefined. */
void ag_manual_seed(uint64_t seed) {
    __atomic_store_n(&default_generator.seed, seed, __ATOMIC_RELAXED);
    __atomic_store_n(&default_generator.counter, 0, __ATOMIC_RELAXED);
}

void ag__default_rng_state(uint64_t *seed, uint64_t *counter) {
    *seed = __atomic_load_n(&default_generator.seed, __ATOMIC_RELAXED);
    *counter = __atomic_load_n(&default_generator.counter, __ATOMIC_RELAXED);
}

void ag__default_rng_restore(uint64_t seed, uint64_t counter) {
    __atomic_store_n(&default_generator.seed, seed, __ATOMIC_RELAXED);
    __atomic_store_n(&default_generator.counter, counter, __ATOMIC_RELAXED);
}

/* One Philox4x32-10 block (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"). */
static void philox(uint64_t key, uint64_t counter, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* Uniform doubles in [0, 1) with 53 random bits, two per Philox block. The blocks are
 * reserved with one atomic add, so threads sharing a generator never draw the same ones. */
static void uniform01(ag_generator *g, double *out, int64_t n) {
    const uint64_t seed = __atomic_load_n(&g->seed, __ATOMIC_RELAXED);
    uint64_t block = __atomic_fetch_add(&g->counter, (uint64_t)(n + 1) / 2, __ATOMIC_RELAXED);
    for (int64_t i = 0; i < n; i += 2) {
        uint32_t r[4];
        philox(seed, block++, r);
        out[i] = (double)(((uint64_t)r[0] << 21) ^ r[1]) * 0x1p-53;
        if (i + 1 < n) out[i + 1] = (double)(((uint64_t)r[2] << 21) ^ r[3]) * 0x1p-53;
    }
}

typedef enum { DIST_UNIFORM, DIST_NORMAL } distribution;

/* The next 16-bit float value toward -infinity (sign and magnitude bits, as both formats). */
static uint16_t step_down16(uint16_t h) {
    if (h == 0) return 0x8001; /* +0: the smallest negative value */
    return h & 0x8000 ? (uint16_t)(h + 1) : (uint16_t)(h - 1);
}

/* v as it will be stored in dtype, or the largest value of dtype below the excluded upper
 * bound b when rounding reaches it. */
static double below_bound(ag_dtype dtype, double v, double b) {
    if (dtype == AG_F32) return (float)v >= (float)b ? nextafterf((float)b, -INFINITY) : v;
    if (dtype == AG_F64) return v;
    const bool half = dtype == AG_F16;
    uint16_t h = half ? ag_f32_to_f16((float)v) : ag_f32_to_bf16((float)v);
    for (;;) {
        double stored = half ? ag_f16_to_f32(h) : ag_bf16_to_f32(h);
        if (stored < b) return stored;
        h = step_down16(h);
    }
}

static ag_tensor *sample(ag_generator *gen, ag_dtype dtype, int ndim, const int64_t *shape,
                         distribution dist, double a, double b) {
    if (!ag__is_float(dtype)) {
        ag__error(AG_ERR_DTYPE, "random sampling needs a float dtype, got %s",
                  ag_dtype_name(dtype));
        return NULL;
    }
    if (ndim < 0 || ndim > AG_MAX_DIMS || (ndim && !shape)) {
        ag__error(AG_ERR_SHAPE, "random sampling: invalid ndim %d", ndim);
        return NULL;
    }
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        if (__builtin_mul_overflow(n, shape[d] > 0 ? shape[d] : 0, &n) || n > (INT64_C(1) << 40)) {
            ag__error(AG_ERR_SHAPE, "random sampling: too many elements");
            return NULL;
        }
    ag_generator *g = gen ? gen : &default_generator;
    /* One spare value, so Box-Muller always gets whole pairs. */
    double *v = ag__malloc((size_t)(n + 1) * sizeof *v);
    if (!v) {
        ag__error(AG_ERR_OUT_OF_MEMORY, "random sampling: out of host memory for %lld values",
                  (long long)n);
        return NULL;
    }
    uniform01(g, v, dist == DIST_NORMAL ? n + (n & 1) : n);
    for (int64_t i = 0; i < n; i++) {
        if (dist == DIST_UNIFORM) {
            v[i] = a + (b - a) * v[i];
            /* Rounding to the dtype must not reach the excluded upper bound. */
            if (b > a) v[i] = below_bound(dtype, v[i], b);
            continue;
        }
        /* Box-Muller on pairs; 1 - u keeps the log argument in (0, 1]. */
        double r = sqrt(-2.0 * log(1.0 - v[i])), angle = 2.0 * M_PI * v[i + 1];
        v[i] = r * cos(angle);
        if (i + 1 < n) v[++i] = r * sin(angle);
    }
    ag_scope *scope = ag_scope_begin();
    ag_tensor *f64 = ag__from_host(AG_F64, ndim, shape, v, ag_default_device());
    free(v);
    return ag_scope_return(scope, dtype == AG_F64 ? f64 : ag_to_dtype(f64, dtype));
}

ag_tensor *ag_rand(ag_generator *gen, ag_dtype dtype, int ndim, const int64_t *shape) {
    return sample(gen, dtype, ndim, shape, DIST_UNIFORM, 0.0, 1.0);
}

ag_tensor *ag_uniform(ag_generator *gen, ag_dtype dtype, int ndim, const int64_t *shape, double low,
                      double high) {
    return sample(gen, dtype, ndim, shape, DIST_UNIFORM, low, high);
}

ag_tensor *ag_randn(ag_generator *gen, ag_dtype dtype, int ndim, const int64_t *shape) {
    return sample(gen, dtype, ndim, shape, DIST_NORMAL, 0.0, 1.0);
}
