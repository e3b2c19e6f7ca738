/* Sample-input recipes of the built-in ops for `ag check` (tools/cmd_check.c): one or more
 * per registered built-in op, each run on the cpu reference and on the checked backend.
 * The table is tools/check_builtin_samples.c; an op without a recipe is a FAIL there. */
#ifndef AG_TOOLS_CHECK_BUILTIN_SAMPLES_H
#define AG_TOOLS_CHECK_BUILTIN_SAMPLES_H

#include <stdbool.h>
#include "ag/types.h"

/* Most inputs of one recipe. */
#define SAMPLE_MAX_INPUTS 4

/* dtype of an input that follows the row's dtype. */
#define SAMPLE_KEY (-1)

/* sample_input.flags */
enum {
    IN_TRANSPOSED = 1u << 0, /* a transposed view of its last two dims (strided) */
    IN_INTEGER = 1u << 1,    /* whole numbers: drawn in [low, high), truncated toward 0 */
};

/* builtin_sample.flags */
enum {
    SAMPLE_ATTR_DTYPE = 1u << 0,  /* attrs ints[0] = the row's dtype (arange, copy) */
    SAMPLE_ATTR_DEVICE = 1u << 1, /* attrs ints[0..1] = the cpu reference device (to_device) */
};

/* How the guard-byte check calls the op's kernel directly (none: it is not run). */
typedef enum sample_guard {
    GUARD_NONE,      /* no single kernel call reproduces the op (views, cat, in-place) */
    GUARD_BROADCAST, /* inputs broadcast to the output's shape (elementwise kernels) */
    GUARD_DIRECT,    /* inputs as they are, output of the op's output shape */
    GUARD_REDUCE,    /* inputs as they are, output of the input's rank (mask attrs ints[0]) */
    GUARD_FILL,      /* no input, output of the op's output shape (fill) */
} sample_guard;

/* One input: dtype, shape as the op sees it, and the range of its uniform values. */
typedef struct sample_input {
    bool present; /* false past the last input */
    int dtype;    /* an ag_dtype, or SAMPLE_KEY */
    int ndim;     /* 0..4 */
    int64_t shape[4];
    double low, high; /* values uniform in [low, high) */
    unsigned flags;   /* IN_* */
} sample_input;

/* One recipe: run once per dtype in `dtypes` (the row's dtype). */
typedef struct builtin_sample {
    const char *op;     /* registry name */
    const char *note;   /* shown after the shapes, or NULL */
    uint32_t dtypes;    /* AG_DTYPE_BIT of each row dtype */
    sample_guard guard; /* how the guard-byte check calls the kernel */
    unsigned flags;     /* SAMPLE_* */
    ag_attrs attrs;     /* the op's attributes (see ops/ and docs/kernels.md) */
    sample_input inputs[SAMPLE_MAX_INPUTS];
} builtin_sample;

/* The recipes, grouped by op in registration order. */
extern const builtin_sample check_builtin_samples[];
extern const int check_builtin_sample_count;

/* Number of inputs of a recipe. */
int sample_n_inputs(const builtin_sample *s);

#endif
