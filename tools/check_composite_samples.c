/* Samples of the composite functions `ag check` covers (tools/check_composite_samples.h).
 * Shapes are small so that gradgradcheck in float64 stays quick on every backend; each
 * sample exercises what the function's own code decides (padding, strides, groups, the
 * non-overlapping pooling path, train-mode statistics). */
#include "check_composite_samples.h"
#include "ag/nn.h"
#include "ag/plugin.h"

/* A float input of the row's dtype with values uniform in [-1, 1). */
#define IN(NDIM, ...)                                                                              \
    {                                                                                              \
        .present = true, .dtype = SAMPLE_KEY, .ndim = NDIM, .shape = {__VA_ARGS__}, .low = -1.0,   \
        .high = 1.0                                                                                \
    }

/* Rows in every float dtype (gradcheck runs on the float64 ones; the 16-bit ones compare the
 * float32 computation through conversions across backends). */
#define FLOAT_ROWS                                                                                 \
    (AG_DTYPE_BIT(AG_F32) | AG_DTYPE_BIT(AG_F64) | AG_DTYPE_BIT(AG_F16) | AG_DTYPE_BIT(AG_BF16))

/* ---- the functions: inputs -> one tensor ---- */

static ag_tensor *conv2d_groups_dilation(ag_tensor *const *in, void *user) {
    (void)user;
    return ag_conv2d(in[0], in[1], in[2], (const int64_t[]){2, 1}, (const int64_t[]){1, 2},
                     (const int64_t[]){1, 2}, 2);
}

static ag_tensor *conv2d_plain(ag_tensor *const *in, void *user) {
    (void)user;
    return ag_conv2d(in[0], in[1], NULL, NULL, NULL, NULL, 1);
}

static ag_tensor *max_pool2d_padded(ag_tensor *const *in, void *user) {
    (void)user;
    return ag_max_pool2d(in[0], (const int64_t[]){3, 2}, (const int64_t[]){2, 1},
                         (const int64_t[]){1, 1});
}

static ag_tensor *max_pool2d_tiles(ag_tensor *const *in, void *user) {
    (void)user;
    return ag_max_pool2d(in[0], (const int64_t[]){2, 2}, NULL, NULL);
}

static ag_tensor *avg_pool2d_padded(ag_tensor *const *in, void *user) {
    (void)user;
    return ag_avg_pool2d(in[0], (const int64_t[]){3, 3}, (const int64_t[]){2, 2},
                         (const int64_t[]){1, 1});
}

static ag_tensor *batch_norm_training(ag_tensor *const *in, void *user) {
    (void)user;
    return ag_batch_norm(in[0], NULL, NULL, in[1], in[2], true, 0.1, 1e-5);
}

static ag_tensor *group_norm_affine(ag_tensor *const *in, void *user) {
    (void)user;
    return ag_group_norm(in[0], 2, in[1], in[2], 1e-5);
}

static ag_tensor *rnn_cell_tanh(ag_tensor *const *in, void *user) {
    (void)user;
    return ag_rnn_cell(in[0], in[1], in[2], in[3], NULL, NULL, AG_RNN_TANH);
}

static ag_tensor *gru_cell_plain(ag_tensor *const *in, void *user) {
    (void)user;
    return ag_gru_cell(in[0], in[1], in[2], in[3], NULL, NULL);
}

/* LSTM takes h and c, one input more than a row holds: they come stacked as in[1] [2, N, H],
 * and (h', c') go out stacked the same way. */
static ag_tensor *lstm_cell_stacked(ag_tensor *const *in, void *user) {
    (void)user;
    ag_tensor *h = NULL, *c = NULL;
    if (ag_lstm_cell(in[0], ag_select(in[1], 0, 0), ag_select(in[1], 0, 1), in[2], in[3], NULL,
                     NULL, &h, &c) != AG_OK)
        return NULL;
    return ag_stack(2, (ag_tensor *[]){h, c}, 0);
}

/* ---- the table ---- */

const composite_sample check_composite_samples[] = {
    {.name = "conv2d",
     .note = "groups 2, stride 2x1, padding 1x2, dilation 1x2",
     .dtypes = FLOAT_ROWS,
     .fn = conv2d_groups_dilation,
     .inputs = {IN(4, 2, 4, 5, 6), IN(4, 4, 2, 3, 2), IN(1, 4)}},
    {.name = "conv2d",
     .note = "no padding, no bias",
     .dtypes = FLOAT_ROWS,
     .fn = conv2d_plain,
     .inputs = {IN(4, 2, 3, 6, 5), IN(4, 2, 3, 3, 3)}},
    {.name = "max_pool2d",
     .note = "kernel 3x2, stride 2x1, padding 1",
     .dtypes = FLOAT_ROWS,
     .fn = max_pool2d_padded,
     .inputs = {IN(4, 2, 3, 5, 4)}},
    {.name = "max_pool2d",
     .note = "kernel 2, stride = kernel",
     .dtypes = FLOAT_ROWS,
     .fn = max_pool2d_tiles,
     .inputs = {IN(4, 2, 3, 5, 4)}},
    {.name = "avg_pool2d",
     .note = "kernel 3, stride 2, padding 1",
     .dtypes = FLOAT_ROWS,
     .fn = avg_pool2d_padded,
     .inputs = {IN(4, 2, 3, 5, 4)}},
    {.name = "batch_norm",
     .note = "training, affine",
     .dtypes = FLOAT_ROWS,
     .fn = batch_norm_training,
     .inputs = {IN(4, 3, 2, 3, 2), IN(1, 2), IN(1, 2)}},
    {.name = "group_norm",
     .note = "2 groups, affine",
     .dtypes = FLOAT_ROWS,
     .fn = group_norm_affine,
     .inputs = {IN(4, 2, 4, 3, 2), IN(1, 4), IN(1, 4)}},
    {.name = "rnn_cell",
     .note = "tanh, no biases",
     .dtypes = FLOAT_ROWS,
     .fn = rnn_cell_tanh,
     .inputs = {IN(2, 3, 4), IN(2, 3, 5), IN(2, 5, 4), IN(2, 5, 5)}},
    {.name = "gru_cell",
     .note = "no biases",
     .dtypes = FLOAT_ROWS,
     .fn = gru_cell_plain,
     .inputs = {IN(2, 3, 4), IN(2, 3, 5), IN(2, 15, 4), IN(2, 15, 5)}},
    {.name = "lstm_cell",
     .note = "h and c stacked, no biases",
     .dtypes = FLOAT_ROWS,
     .fn = lstm_cell_stacked,
     .inputs = {IN(2, 3, 4), IN(3, 2, 3, 5), IN(2, 20, 4), IN(2, 20, 5)}},
};

const int check_composite_sample_count =
    (int)(sizeof check_composite_samples / sizeof check_composite_samples[0]);
