/* Sample-input recipes of every built-in op for `ag check` (see check_builtin_samples.h).
 * Shapes are odd sizes (17, 33, ...) so that device kernels meet partial work groups and
 * tiles; many inputs are transposed views or broadcast. Value ranges keep every op away
 * from NaN/Inf and from kinks a finite difference would straddle. A new built-in op needs
 * a recipe here: `ag check` reports a registered op without one as a FAIL. */
#include "check_builtin_samples.h"
#include "ag/plugin.h"

/* float16 and bfloat16 rows run the float32 kernels through conversions on backends without
 * 16-bit kernels: checking them compares those conversions and roundings across backends. */
#define FLOATS                                                                                     \
    (AG_DTYPE_BIT(AG_F32) | AG_DTYPE_BIT(AG_F64) | AG_DTYPE_BIT(AG_F16) | AG_DTYPE_BIT(AG_BF16))
#define ALL (FLOATS | AG_DTYPE_BIT(AG_I64))

#define NDIM(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
/* An input of dtype dt with flags fl, values in [lo, hi), of shape (...). */
#define INPUT(dt, fl, lo, hi, ...)                                                                 \
    {                                                                                              \
        .present = true, .dtype = dt, .flags = fl, .low = lo, .high = hi,                          \
        .ndim = NDIM(__VA_ARGS__), .shape = {                                                      \
            __VA_ARGS__                                                                            \
        }                                                                                          \
    }
/* The row's dtype: contiguous, transposed, whole numbers. */
#define X(lo, hi, ...)  INPUT(SAMPLE_KEY, 0, lo, hi, __VA_ARGS__)
#define XT(lo, hi, ...) INPUT(SAMPLE_KEY, IN_TRANSPOSED, lo, hi, __VA_ARGS__)
#define XI(lo, hi, ...) INPUT(SAMPLE_KEY, IN_INTEGER, lo, hi, __VA_ARGS__)
/* A 0-dim input of the row's dtype. */
#define X0(lo, hi)                                                                                 \
    { .present = true, .dtype = SAMPLE_KEY, .low = lo, .high = hi }
/* An int64 index tensor with values in [0, n). */
#define INDEX(n, ...) INPUT(AG_I64, IN_INTEGER, 0, n, __VA_ARGS__)

/* Recipes shared by several ops of one kind. */
#define BINARY(name, lo_a, hi_a, lo_b, hi_b, types)                                                \
    {.op = name,                                                                                   \
     .dtypes = types,                                                                              \
     .guard = GUARD_BROADCAST,                                                                     \
     .inputs = {XT(lo_a, hi_a, 17, 33), X(lo_b, hi_b, 33)}},                                       \
    {                                                                                              \
        .op = name, .note = "by a 0-dim", .dtypes = types, .guard = GUARD_BROADCAST, .inputs = {   \
            X(lo_a, hi_a, 5, 7),                                                                   \
            X0(lo_b, hi_b)                                                                         \
        }                                                                                          \
    }
#define COMPARE(name)                                                                              \
    {                                                                                              \
        .op = name, .dtypes = ALL, .guard = GUARD_BROADCAST, .inputs = {                           \
            XI(-3, 3, 17, 33),                                                                     \
            XI(-3, 3, 33)                                                                          \
        }                                                                                          \
    }
#define UNARY(name, lo, hi, types)                                                                 \
    {                                                                                              \
        .op = name, .dtypes = types, .guard = GUARD_BROADCAST, .inputs = { XT(lo, hi, 17, 33) }    \
    }
/* sum, max, min: dims 0 and 2 kept, and everything into a 0-dim result. */
#define REDUCE(name)                                                                               \
    {.op = name,                                                                                   \
     .note = "dims 0,2 keepdim",                                                                   \
     .dtypes = ALL,                                                                                \
     .guard = GUARD_REDUCE,                                                                        \
     .attrs = {.ints = {5, 1}},                                                                    \
     .inputs = {XT(-3, 3, 5, 7, 9)}},                                                              \
    {                                                                                              \
        .op = name, .note = "all dims", .dtypes = ALL, .guard = GUARD_REDUCE,                      \
        .attrs = {.ints = {3, 0}}, .inputs = {                                                     \
            X(-3, 3, 17, 33)                                                                       \
        }                                                                                          \
    }
#define ARG_REDUCE(name)                                                                           \
    {.op = name,                                                                                   \
     .note = "dim 1",                                                                              \
     .dtypes = ALL,                                                                                \
     .guard = GUARD_DIRECT,                                                                        \
     .attrs = {.ints = {1}},                                                                       \
     .inputs = {XT(-3, 3, 17, 33)}},                                                               \
    {                                                                                              \
        .op = name, .note = "dim 0", .dtypes = ALL, .guard = GUARD_DIRECT, .attrs = {.ints = {0}}, \
        .inputs = {                                                                                \
            X(-3, 3, 17, 33)                                                                       \
        }                                                                                          \
    }
#define SOFTMAX(name)                                                                              \
    {.op = name,                                                                                   \
     .note = "dim 1",                                                                              \
     .dtypes = FLOATS,                                                                             \
     .guard = GUARD_DIRECT,                                                                        \
     .attrs = {.ints = {1}},                                                                       \
     .inputs = {XT(-3, 3, 17, 33)}},                                                               \
    {                                                                                              \
        .op = name, .note = "dim 0", .dtypes = FLOATS, .guard = GUARD_DIRECT,                      \
        .attrs = {.ints = {0}}, .inputs = {                                                        \
            X(-3, 3, 17, 33)                                                                       \
        }                                                                                          \
    }
/* A view op on one input; attrs as ops/views.c takes them. */
#define VIEW(name, text, input, ...)                                                               \
    {                                                                                              \
        .op = name, .note = text, .dtypes = ALL, .attrs = {.ints = {__VA_ARGS__}}, .inputs = {     \
            input                                                                                  \
        }                                                                                          \
    }

const builtin_sample check_builtin_samples[] = {
    /* creation */
    {.op = "full_like",
     .note = "value 3",
     .dtypes = ALL,
     .guard = GUARD_FILL,
     .attrs = {.ints = {3}, .reals = {3}},
     .inputs = {X(-1, 1, 17, 33)}},
    {.op = "arange",
     .note = "-5 + 3i, 37 elements",
     .dtypes = ALL,
     .flags = SAMPLE_ATTR_DTYPE,
     .attrs = {.ints = {0, 37}, .reals = {-5, 3}}},

    /* elementwise, two inputs */
    BINARY("add", -3, 3, -3, 3, ALL),
    BINARY("sub", -3, 3, -3, 3, ALL),
    BINARY("mul", -3, 3, -3, 3, ALL),
    BINARY("div", -3, 3, 0.5, 2, FLOATS),
    BINARY("pow", 0.5, 2, -2, 2, FLOATS),
    BINARY("maximum", -3, 3, -3, 3, ALL),
    BINARY("minimum", -3, 3, -3, 3, ALL),
    COMPARE("eq"),
    COMPARE("ne"),
    COMPARE("lt"),
    COMPARE("le"),
    COMPARE("gt"),
    COMPARE("ge"),

    /* elementwise, one input */
    UNARY("neg", -3, 3, ALL),
    UNARY("exp", -3, 3, FLOATS),
    UNARY("log", 0.1, 4, FLOATS),
    UNARY("sqrt", 0.1, 4, FLOATS),
    UNARY("rsqrt", 0.1, 4, FLOATS),
    UNARY("abs", -3, 3, ALL),
    UNARY("sin", -4, 4, FLOATS),
    UNARY("cos", -4, 4, FLOATS),
    UNARY("tanh", -4, 4, FLOATS),
    UNARY("erf", -3, 3, FLOATS),
    UNARY("sigmoid", -6, 6, FLOATS),
    UNARY("relu", -3, 3, ALL),
    UNARY("silu", -4, 4, FLOATS),
    {.op = "gelu",
     .note = "exact",
     .dtypes = FLOATS,
     .guard = GUARD_BROADCAST,
     .inputs = {XT(-4, 4, 17, 33)}},
    {.op = "gelu",
     .note = "tanh",
     .dtypes = FLOATS,
     .guard = GUARD_BROADCAST,
     .attrs = {.ints = {1}},
     .inputs = {XT(-4, 4, 17, 33)}},
    {.op = "pow_scalar",
     .note = "^2.5",
     .dtypes = FLOATS,
     .guard = GUARD_BROADCAST,
     .attrs = {.reals = {2.5}},
     .inputs = {XT(0.5, 2, 17, 33)}},
    {.op = "clamp",
     .note = "[-1, 1.5]",
     .dtypes = ALL,
     .guard = GUARD_BROADCAST,
     .attrs = {.ints = {1, 1}, .reals = {-1, 1.5}},
     .inputs = {XT(-3, 3, 17, 33)}},
    {.op = "clamp",
     .note = "max 0.5",
     .dtypes = FLOATS,
     .guard = GUARD_BROADCAST,
     .attrs = {.ints = {0, 1}, .reals = {0, 0.5}},
     .inputs = {X(-3, 3, 17, 33)}},
    UNARY("sign", -3, 3, ALL),
    {.op = "where",
     .dtypes = ALL,
     .guard = GUARD_BROADCAST,
     .inputs = {XI(0, 2, 17, 33), XT(-3, 3, 17, 33), X(-3, 3, 33)}},
    {.op = "copy",
     .note = "clone",
     .dtypes = ALL,
     .guard = GUARD_DIRECT,
     .flags = SAMPLE_ATTR_DTYPE,
     .inputs = {XT(-3, 3, 17, 33)}},
    {.op = "copy",
     .note = "from float32",
     .dtypes = ALL,
     .guard = GUARD_DIRECT,
     .flags = SAMPLE_ATTR_DTYPE,
     .inputs = {INPUT(AG_F32, 0, -50, 50, 17, 33)}},
    {.op = "copy",
     .note = "from float64",
     .dtypes = ALL,
     .guard = GUARD_DIRECT,
     .flags = SAMPLE_ATTR_DTYPE,
     .inputs = {INPUT(AG_F64, IN_TRANSPOSED, -50, 50, 17, 33)}},
    {.op = "copy",
     .note = "from int64",
     .dtypes = ALL,
     .guard = GUARD_DIRECT,
     .flags = SAMPLE_ATTR_DTYPE,
     .inputs = {INPUT(AG_I64, IN_INTEGER, -50, 50, 17, 33)}},
    {.op = "to_device",
     .note = "to the cpu",
     .dtypes = ALL,
     .flags = SAMPLE_ATTR_DEVICE,
     .inputs = {XT(-3, 3, 17, 33)}},

    /* reductions */
    REDUCE("sum"),
    REDUCE("max"),
    REDUCE("min"),
    ARG_REDUCE("argmax"),
    ARG_REDUCE("argmin"),

    /* linear algebra */
    {.op = "matmul",
     .note = "batched",
     .dtypes = ALL,
     .guard = GUARD_DIRECT,
     .inputs = {X(-2, 2, 2, 19, 23), X(-2, 2, 2, 23, 21)}},
    {.op = "matmul",
     .note = "a transposed",
     .dtypes = ALL,
     .guard = GUARD_DIRECT,
     .inputs = {XT(-2, 2, 37, 29), X(-2, 2, 29, 41)}},
    {.op = "matmul",
     .note = "b broadcast",
     .dtypes = FLOATS,
     .inputs = {X(-2, 2, 3, 5, 6), XT(-2, 2, 6, 4)}},
    SOFTMAX("softmax"),
    SOFTMAX("log_softmax"),

    /* views (no kernel) and slice_backward */
    VIEW("view", "as [33,17]", X(-3, 3, 17, 33), 33, 17, -1),
    VIEW("squeeze", "dim 1", X(-3, 3, 17, 1, 33), 17, 33, -1),
    VIEW("unsqueeze", "dim 1", X(-3, 3, 17, 33), 17, 1, 33, -1),
    VIEW("permute", "(2,0,1)", XT(-3, 3, 3, 5, 7), 2, 0, 1),
    VIEW("transpose", "(1,0)", X(-3, 3, 17, 33), 1, 0),
    VIEW("expand", "to [17,33]", X(-3, 3, 17, 1), 17, 33, -1),
    VIEW("slice", "dim 1, 2::3", XT(-3, 3, 17, 33), 1, 2, 3, 10),
    VIEW("select", "dim 0, 5", X(-3, 3, 17, 33), 0, 5),
    VIEW("slice_backward", "dim 1, 2::3 of 31", X(-3, 3, 17, 10), 1, 2, 3, 31),

    /* indexing and joining */
    {.op = "index_select",
     .note = "dim 0",
     .dtypes = ALL,
     .guard = GUARD_DIRECT,
     .inputs = {XT(-3, 3, 17, 33), INDEX(17, 9)}},
    {.op = "index_add",
     .note = "dim 0",
     .dtypes = ALL,
     .guard = GUARD_DIRECT,
     .inputs = {X(-3, 3, 9, 33), INDEX(9, 17), XT(-3, 3, 17, 33)}},
    {.op = "gather",
     .note = "dim 1",
     .dtypes = ALL,
     .guard = GUARD_DIRECT,
     .attrs = {.ints = {1}},
     .inputs = {XT(-3, 3, 17, 33), INDEX(33, 17, 5)}},
    {.op = "scatter_add",
     .note = "dim 1",
     .dtypes = ALL,
     .guard = GUARD_DIRECT,
     .attrs = {.ints = {1}},
     .inputs = {X(-3, 3, 17, 33), INDEX(33, 17, 5), X(-3, 3, 17, 5)}},
    {.op = "cat",
     .note = "dim 0",
     .dtypes = ALL,
     .inputs = {X(-3, 3, 5, 7), XT(-3, 3, 3, 7), X(-3, 3, 4, 7)}},

    /* nn */
    {.op = "linear",
     .note = "bias",
     .dtypes = FLOATS,
     .inputs = {X(-2, 2, 17, 33), X(-1, 1, 9, 33), X(-1, 1, 9)}},
    {.op = "linear",
     .note = "batched x, strided weight",
     .dtypes = FLOATS,
     .inputs = {XT(-2, 2, 3, 5, 33), XT(-1, 1, 9, 33)}},
    {.op = "layer_norm",
     .note = "weight, bias",
     .dtypes = FLOATS,
     .guard = GUARD_DIRECT,
     .attrs = {.ints = {1, 3}, .reals = {1e-5}},
     .inputs = {XT(-2, 2, 9, 33), X(0.5, 1.5, 33), X(-1, 1, 33)}},
    {.op = "layer_norm",
     .note = "last 2 dims",
     .dtypes = FLOATS,
     .guard = GUARD_DIRECT,
     .attrs = {.ints = {2, 0}, .reals = {1e-5}},
     .inputs = {X(-2, 2, 3, 5, 7)}},
    {.op = "cross_entropy",
     .note = "smoothing 0.1",
     .dtypes = FLOATS,
     .guard = GUARD_DIRECT,
     .attrs = {.ints = {1, -100}, .reals = {0.1}},
     .inputs = {XT(-3, 3, 17, 10), INDEX(10, 17)}},
    {.op = "cross_entropy",
     .note = "ignore_index 3",
     .dtypes = FLOATS,
     .guard = GUARD_DIRECT,
     .attrs = {.ints = {1, 3}},
     .inputs = {X(-3, 3, 17, 10), INDEX(10, 17)}},

    /* optimizer updates (in place) */
    {.op = "sgd_update",
     .dtypes = FLOATS,
     .attrs = {.reals = {0.1, 0, 0, 0.01}},
     .inputs = {X(-1, 1, 17, 33), XT(-1, 1, 17, 33)}},
    {.op = "sgd_momentum_update",
     .note = "nesterov",
     .dtypes = FLOATS,
     .attrs = {.ints = {1, 0}, .reals = {0.1, 0.9, 0.1, 0.01}},
     .inputs = {X(-1, 1, 17, 33), XT(-1, 1, 17, 33), X(-1, 1, 17, 33)}},
    {.op = "adam_update",
     .note = "AdamW, step 3",
     .dtypes = FLOATS,
     .attrs = {.ints = {1, 0, 3}, .reals = {1e-2, 0.9, 0.999, 1e-8, 0.01}},
     .inputs = {X(-1, 1, 17, 33), XT(-1, 1, 17, 33), X(-1, 1, 17, 33), X(0, 1, 17, 33)}},
};

const int check_builtin_sample_count =
    (int)(sizeof check_builtin_samples / sizeof check_builtin_samples[0]);

int sample_n_inputs(const builtin_sample *s) {
    int n = 0;
    while (n < SAMPLE_MAX_INPUTS && s->inputs[n].present) n++;
    return n;
}
