/* ag neural-network layer: functional ops, losses and modules (PyTorch's torch.nn).
 *
 * Functional ops follow ag.h's ownership rules (new references owned by the innermost
 * scope). Modules are plain heap objects: created with ag_<kind>_new, freed with
 * ag_module_free; a module owns its parameters (leaf tensors requiring grad) and, for
 * containers, its children. */
#ifndef AG_NN_H
#define AG_NN_H

#include "ag/ag.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A tensor with a name, as in a state dict ("0.weight"). Names are borrowed. */
typedef struct ag_named_tensor {
    const char *name;  /* dotted name, unique within its list */
    ag_tensor *tensor; /* the tensor (borrowed unless a function says otherwise) */
} ag_named_tensor;

/* ---- functional ops (ops/nn.c; fused CPU kernels, backward in ag ops) ---- */

/* x @ weight^T + bias (bias may be NULL); weight is [out, in]. */
ag_tensor *ag_linear(ag_tensor *x, ag_tensor *weight, ag_tensor *bias);
/* Layer normalisation over the last n_normalized dims with biased variance and eps;
 * weight/bias (shape of those dims) may be NULL. Fused kernel forward. */
ag_tensor *ag_layer_norm(ag_tensor *x, int n_normalized, ag_tensor *weight, ag_tensor *bias,
                         double eps);
/* Inverted dropout: zeroes elements with probability p and scales the rest by 1/(1-p)
 * when training; the identity otherwise. gen NULL uses the default generator. */
ag_tensor *ag_dropout(ag_tensor *x, double p, bool training, ag_generator *gen);
/* Rows of weight [num, dim] at int64 indices of any shape: result shape indices + [dim]. */
ag_tensor *ag_embedding(ag_tensor *indices, ag_tensor *weight);

/* How a loss reduces over elements. */
typedef enum ag_reduction {
    AG_REDUCTION_MEAN = 0, /* mean (PyTorch's default) */
    AG_REDUCTION_SUM = 1,  /* sum */
    AG_REDUCTION_NONE = 2  /* one loss per element / sample */
} ag_reduction;

/* mean/sum/none of (input - target)^2, broadcasting as torch.nn.functional.mse_loss. */
ag_tensor *ag_mse_loss(ag_tensor *input, ag_tensor *target, ag_reduction reduction);

/* Options of ag_cross_entropy (PyTorch's defaults from ag_cross_entropy_defaults). */
typedef struct ag_cross_entropy_options {
    ag_reduction reduction; /* AG_REDUCTION_MEAN */
    int64_t ignore_index;   /* -100: targets with this class count neither loss nor mean */
    double label_smoothing; /* 0.0: mix the target with the uniform distribution */
} ag_cross_entropy_options;

/* reduction mean, ignore_index -100, label_smoothing 0. */
ag_cross_entropy_options ag_cross_entropy_defaults(void);
/* torch.nn.functional.cross_entropy: logits [N, C] (or [N, C, d...]); target int64 class
 * indices [N] ([N, d...]) or float probabilities of logits' shape. Fused kernel forward. */
ag_tensor *ag_cross_entropy(ag_tensor *logits, ag_tensor *target,
                            const ag_cross_entropy_options *options);
/* Numerically stable binary cross-entropy on logits; pos_weight (broadcast over the class
 * dim) may be NULL. */
ag_tensor *ag_bce_with_logits(ag_tensor *logits, ag_tensor *target, ag_tensor *pos_weight,
                              ag_reduction reduction);

/* ---- recurrent cells (ops/rnn.c; composites of linear, sigmoid, tanh and views, so
 * backward, double backward and forward-mode AD work on every backend) ----
 * x is [N, input_size] or unbatched [input_size]; states h, c are [N, H] or [H]; weights
 * stack the gates in PyTorch's order along their rows; either bias may be NULL. */

/* Nonlinearity of a plain (Elman) RNN. */
typedef enum ag_rnn_nonlinearity {
    AG_RNN_TANH = 0, /* tanh (PyTorch's default) */
    AG_RNN_RELU = 1  /* relu */
} ag_rnn_nonlinearity;

/* act(x W_ih^T + b_ih + h W_hh^T + b_hh); w_ih [H, in], w_hh [H, H], biases [H]. */
ag_tensor *ag_rnn_cell(ag_tensor *x, ag_tensor *h, ag_tensor *w_ih, ag_tensor *w_hh,
                       ag_tensor *b_ih, ag_tensor *b_hh, ag_rnn_nonlinearity nonlinearity);
/* GRU step, gates r, z, n: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
 * h' = (1 - z) * n + z * h; w_ih [3H, in], w_hh [3H, H], biases [3H]. */
ag_tensor *ag_gru_cell(ag_tensor *x, ag_tensor *h, ag_tensor *w_ih, ag_tensor *w_hh,
                       ag_tensor *b_ih, ag_tensor *b_hh);
/* LSTM step, gates i, f, g, o: c' = f * c + i * g, h' = o * tanh(c'); w_ih [4H, in],
 * w_hh [4H, H], biases [4H]. Writes h' and c' (op results) to *h_out and *c_out. */
ag_status ag_lstm_cell(ag_tensor *x, ag_tensor *h, ag_tensor *c, ag_tensor *w_ih, ag_tensor *w_hh,
                       ag_tensor *b_ih, ag_tensor *b_hh, ag_tensor **h_out, ag_tensor **c_out);

/* ---- convolution, pooling, normalisation (ops/conv.c; composites of index_select,
 * matmul, reductions and elementwise ops, so backward, double backward and forward-mode AD
 * work on every backend; docs/nn.md) ----
 * x is [N, C, H, W] or unbatched [C, H, W]; pair arguments are {height, width}. */

/* 2-d convolution (cross-correlation) as torch.nn.functional.conv2d: weight
 * [O, C/groups, kH, kW], bias [O] or NULL; stride, padding, dilation NULL for 1, 0, 1. */
ag_tensor *ag_conv2d(ag_tensor *x, ag_tensor *weight, ag_tensor *bias, const int64_t *stride,
                     const int64_t *padding, const int64_t *dilation, int64_t groups);
/* Max over kernel windows, padding reading -inf; stride NULL or {0, 0} means the kernel
 * size (PyTorch's stride=None), padding NULL 0 and at most half the kernel. The first
 * maximum of a window gets its gradient. No dilation, ceil_mode or indices. */
ag_tensor *ag_max_pool2d(ag_tensor *x, const int64_t *kernel, const int64_t *stride,
                         const int64_t *padding);
/* Mean over kernel windows with count_include_pad (padded zeros count), as PyTorch's
 * default; stride and padding as ag_max_pool2d. */
ag_tensor *ag_avg_pool2d(ag_tensor *x, const int64_t *kernel, const int64_t *stride,
                         const int64_t *padding);
/* torch.nn.functional.batch_norm over x [N, C, ...]: batch statistics when training (or
 * when the running ones are NULL), then running_mean/var (float [C], both or neither)
 * updated in place without grad with momentum and the unbiased variance; running
 * statistics in eval mode. weight, bias [C] or NULL. */
ag_tensor *ag_batch_norm(ag_tensor *x, ag_tensor *running_mean, ag_tensor *running_var,
                         ag_tensor *weight, ag_tensor *bias, bool training, double momentum,
                         double eps);
/* torch.nn.functional.group_norm: x [N, C, ...] normalised per sample over each of `groups`
 * groups of C/groups channels (biased variance, eps); weight, bias [C] or NULL. */
ag_tensor *ag_group_norm(ag_tensor *x, int64_t groups, ag_tensor *weight, ag_tensor *bias,
                         double eps);

/* ---- modules (nn/) ---- */

/* A layer or container with parameters and train/eval mode (opaque). */
typedef struct ag_module ag_module;

/* Linear layer in -> out, weight and bias from U(-1/sqrt(in), 1/sqrt(in)) as PyTorch;
 * gen NULL uses the default generator. */
ag_module *ag_linear_new(int64_t in_features, int64_t out_features, bool bias, ag_generator *gen);
/* ReLU. */
ag_module *ag_relu_new(void);
/* GELU, exact (erf) or tanh approximation. */
ag_module *ag_gelu_new(bool approximate_tanh);
/* LayerNorm over a last dim of `size` (eps as given, 1e-5 in PyTorch), with weight 1 and
 * bias 0 when elementwise_affine. */
ag_module *ag_layer_norm_new(int64_t size, double eps, bool elementwise_affine);
/* Dropout with probability p; samples from gen (NULL: default generator) in train mode. */
ag_module *ag_dropout_new(double p, ag_generator *gen);
/* Embedding table [num, dim] from N(0, 1), as PyTorch. */
ag_module *ag_embedding_new(int64_t num_embeddings, int64_t embedding_dim, ag_generator *gen);
/* Flattens dims start..end (PyTorch's nn.Flatten defaults are 1, -1). */
ag_module *ag_flatten_new(int start_dim, int end_dim);
/* Runs children in order; takes ownership of them (freed with the container), except when
 * it fails (NULL): the caller still owns them then. Children are named "0", "1", ... so
 * parameters are "0.weight", as torch.nn.Sequential. */
ag_module *ag_sequential_new(int n, ag_module *const *children);

/* ---- convolutional modules (nn/conv_layers.c); pair arguments are {height, width} ---- */

/* Conv2d in -> out channels with a kernel [kH, kW]; stride, padding, dilation NULL for 1,
 * 0, 1. weight [out, in/groups, kH, kW] and bias [out] from U(-1/sqrt(fan_in),
 * 1/sqrt(fan_in)), fan_in = in/groups * kH * kW, as PyTorch; gen NULL: default generator. */
ag_module *ag_conv2d_new(int64_t in_channels, int64_t out_channels, const int64_t *kernel,
                         const int64_t *stride, const int64_t *padding, const int64_t *dilation,
                         int64_t groups, bool bias, ag_generator *gen);
/* MaxPool2d; stride NULL or {0, 0} is the kernel size, padding NULL is 0. */
ag_module *ag_max_pool2d_new(const int64_t *kernel, const int64_t *stride, const int64_t *padding);
/* AvgPool2d (count_include_pad); stride and padding as MaxPool2d. */
ag_module *ag_avg_pool2d_new(const int64_t *kernel, const int64_t *stride, const int64_t *padding);
/* BatchNorm2d over [N, C, H, W]: batch statistics in train mode (updating the buffers
 * "running_mean" (zeros), "running_var" (ones, unbiased) with momentum, and
 * "num_batches_tracked"), running ones in eval mode; "weight" 1 and "bias" 0 if affine. */
ag_module *ag_batch_norm2d_new(int64_t num_features, double eps, double momentum, bool affine);
/* GroupNorm of num_channels channels in num_groups groups; "weight" 1, "bias" 0 if affine. */
ag_module *ag_group_norm_new(int64_t num_groups, int64_t num_channels, double eps, bool affine);
/* Unflatten: dim (negative counts from the end) becomes the n extents sizes (one may be
 * -1), as torch.nn.Unflatten: Unflatten(1, {1, 28, 28}) turns [N, 784] into images. */
ag_module *ag_unflatten_new(int dim, int n, const int64_t *sizes);

/* ---- recurrent modules (nn/rnn_layers.c): every parameter from U(-1/sqrt(H), 1/sqrt(H))
 * drawn from gen (NULL: default generator) in PyTorch's parameter order ---- */

/* RNNCell: "weight_ih" [H, in], "weight_hh" [H, H], "bias_ih", "bias_hh" [H] if bias. */
ag_module *ag_rnn_cell_new(int64_t input_size, int64_t hidden_size, bool bias,
                           ag_rnn_nonlinearity nonlinearity, ag_generator *gen);
/* GRUCell: as RNNCell with 3H rows (r, z, n). */
ag_module *ag_gru_cell_new(int64_t input_size, int64_t hidden_size, bool bias, ag_generator *gen);
/* LSTMCell: as RNNCell with 4H rows (i, f, g, o). */
ag_module *ag_lstm_cell_new(int64_t input_size, int64_t hidden_size, bool bias, ag_generator *gen);
/* RNN of num_layers stacked layers: "weight_ih_l0" [H, in], "weight_hh_l0" [H, H],
 * "bias_ih_l0", "bias_hh_l0" [H], then "..._l1" (layer k > 0 reads H features). */
ag_module *ag_rnn_new(int64_t input_size, int64_t hidden_size, int num_layers,
                      ag_rnn_nonlinearity nonlinearity, bool bias, bool batch_first,
                      ag_generator *gen);
/* GRU layers: as RNN with 3H rows (r, z, n). */
ag_module *ag_gru_new(int64_t input_size, int64_t hidden_size, int num_layers, bool bias,
                      bool batch_first, ag_generator *gen);
/* LSTM layers: as RNN with 4H rows (i, f, g, o). */
ag_module *ag_lstm_new(int64_t input_size, int64_t hidden_size, int num_layers, bool bias,
                       bool batch_first, ag_generator *gen);
/* Runs an RNN/GRU/LSTM module over every time step and layer. x is [T, N, in] ([N, T, in]
 * if batch_first) or unbatched [T, in]; h0 (and c0, LSTM only) are [layers, N, H] or
 * [layers, H], NULL for zeros. Writes output [T, N, H] ([N, T, H]), the final states h_n
 * (and c_n) [layers, N, H] as op results; any out pointer may be NULL. No module hooks
 * run; ag_module_forward on such a module returns the output only. */
ag_status ag_rnn_forward(ag_module *m, ag_tensor *x, ag_tensor *h0, ag_tensor *c0,
                         ag_tensor **output, ag_tensor **h_n, ag_tensor **c_n);
/* One step of an RNNCell/GRUCell/LSTMCell module: h (and c, LSTMCell only) NULL for zeros;
 * writes h' (and c') as op results, c_out may be NULL. ag_module_forward on a cell returns
 * h' from zero states. */
ag_status ag_rnn_cell_forward(ag_module *m, ag_tensor *x, ag_tensor *h, ag_tensor *c,
                              ag_tensor **h_out, ag_tensor **c_out);

/* Frees a module, its parameters' references and its children. NULL is ignored. */
void ag_module_free(ag_module *m);
/* Runs m's forward pre-hooks, its forward on x and its forward hooks; new reference as for
 * any op. */
ag_tensor *ag_module_forward(ag_module *m, ag_tensor *x);
/* Sets train (true) or eval (false) mode, recursively. */
void ag_module_train(ag_module *m, bool training);
/* Whether the module is in train mode. */
bool ag_module_is_training(const ag_module *m);
/* Class name ("Linear", "Sequential"). */
const char *ag_module_kind(const ag_module *m);
/* Writes up to capacity named parameters (depth first, PyTorch's order and names) into
 * out; returns how many the module has. Names and tensors are borrowed. */
int ag_module_parameters(const ag_module *m, ag_named_tensor *out, int capacity);
/* Writes up to capacity named buffers (running statistics such as "1.running_mean": state
 * saved in checkpoints but not trained) into out, depth first as PyTorch's named_buffers();
 * returns how many the module has. Names and tensors are borrowed. */
int ag_module_buffers(const ag_module *m, ag_named_tensor *out, int capacity);
/* Child i of a container (borrowed), NULL if none. */
ag_module *ag_module_child(const ag_module *m, int i);

/* A forward pre-hook: sees a module's input before its forward; returns NULL to keep it or
 * a tensor (a new reference owned as an op result) that replaces it. */
typedef ag_tensor *(*ag_forward_pre_hook_fn)(ag_module *m, ag_tensor *input, void *user);
/* A forward hook: sees a module's input and output; returns NULL to keep the output or a
 * tensor (a new reference owned as an op result) that replaces it. */
typedef ag_tensor *(*ag_forward_hook_fn)(ag_module *m, ag_tensor *input, ag_tensor *output,
                                         void *user);
/* Registers a forward pre-hook; returns a handle > 0 (0 on error). Pre-hooks run in
 * registration order before the forward, each seeing the previous one's input. */
uint64_t ag_module_register_forward_pre_hook(ag_module *m, ag_forward_pre_hook_fn fn, void *user);
/* Registers a forward hook; returns a handle > 0 (0 on error). Forward hooks run in
 * registration order after the forward, each seeing the previous one's output. */
uint64_t ag_module_register_forward_hook(ag_module *m, ag_forward_hook_fn fn, void *user);
/* Removes a forward pre-hook or forward hook of m by handle; error if m has none with it
 * (never registered on m, or removed already). */
ag_status ag_module_remove_hook(ag_module *m, uint64_t handle);

#ifdef __cplusplus
}
#endif
#endif
