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
/* Runs children in order; takes ownership of them (freed with the container). Children
 * are named "0", "1", ... so parameters are "0.weight", as torch.nn.Sequential. */
ag_module *ag_sequential_new(int n, ag_module *const *children);

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
