/* ag optimizers, gradient clipping and learning-rate schedules (torch.optim).
 *
 * Optimizers keep references to the parameters they update and their per-parameter state
 * (momentum buffers, Adam moments). Updates run as one fused backend kernel per parameter,
 * outside the graph. Parameters whose .grad is NULL are skipped, as in PyTorch. */
#ifndef AG_OPTIM_H
#define AG_OPTIM_H

#include "ag/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An optimizer (opaque). */
typedef struct ag_optimizer ag_optimizer;
/* A learning-rate scheduler bound to one optimizer (opaque). */
typedef struct ag_scheduler ag_scheduler;

/* torch.optim.SGD settings. */
typedef struct ag_sgd_options {
    double lr;           /* learning rate (required, > 0) */
    double momentum;     /* 0 */
    double dampening;    /* 0 */
    double weight_decay; /* 0: L2 penalty added to the gradient */
    bool nesterov;       /* false; needs momentum > 0 and dampening 0 */
} ag_sgd_options;

/* torch.optim.Adam / AdamW settings. */
typedef struct ag_adam_options {
    double lr;           /* 1e-3 */
    double beta1;        /* 0.9 */
    double beta2;        /* 0.999 */
    double eps;          /* 1e-8 */
    double weight_decay; /* Adam: 0 (L2 added to the gradient); AdamW: 1e-2 (decoupled) */
} ag_adam_options;

/* SGD with lr as given and PyTorch's other defaults. */
ag_sgd_options ag_sgd_defaults(double lr);
/* Adam's defaults (weight_decay 0). */
ag_adam_options ag_adam_defaults(void);
/* AdamW's defaults (weight_decay 1e-2). */
ag_adam_options ag_adamw_defaults(void);

/* Optimizers over n named parameters (leaves requiring grad, float dtypes). */
ag_optimizer *ag_sgd_new(int n, const ag_named_tensor *params, const ag_sgd_options *options);
ag_optimizer *ag_adam_new(int n, const ag_named_tensor *params, const ag_adam_options *options);
ag_optimizer *ag_adamw_new(int n, const ag_named_tensor *params, const ag_adam_options *options);
/* Frees an optimizer and its state. NULL is ignored. */
void ag_optimizer_free(ag_optimizer *opt);
/* One update of every parameter that has a gradient. */
ag_status ag_optimizer_step(ag_optimizer *opt);
/* Clears gradients: set_to_none drops .grad (PyTorch's default), else fills it with 0. */
ag_status ag_optimizer_zero_grad(ag_optimizer *opt, bool set_to_none);
/* Current learning rate. */
double ag_optimizer_lr(const ag_optimizer *opt);
/* Sets the learning rate (schedulers call this). */
void ag_optimizer_set_lr(ag_optimizer *opt, double lr);
/* Writes up to capacity of the parameters it updates (names as given at creation) into out;
 * returns how many it has (-1 for a NULL optimizer). Borrowed. */
int ag_optimizer_parameters(const ag_optimizer *opt, ag_named_tensor *out, int capacity);
/* Writes up to capacity named state tensors ("0.exp_avg", "0.step", ...; step counts as
 * float64 0-dim tensors) into out; returns how many there are. Borrowed. */
int ag_optimizer_state(const ag_optimizer *opt, ag_named_tensor *out, int capacity);
/* Copies state tensors by name into the optimizer (shapes checked); unknown names are an
 * error. */
ag_status ag_optimizer_load_state(ag_optimizer *opt, int n, const ag_named_tensor *state);

/* torch.nn.utils.clip_grad_norm_: scales the gradients of the parameters so their total
 * norm (norm_type 2 or INFINITY) is at most max_norm (factor max_norm / (total + 1e-6),
 * clamped to 1); *total_norm receives the norm before clipping. */
ag_status ag_clip_grad_norm(int n, const ag_named_tensor *params, double max_norm, double norm_type,
                            double *total_norm);

/* torch.optim.lr_scheduler.StepLR: lr *= gamma every step_size steps. */
ag_scheduler *ag_step_lr_new(ag_optimizer *opt, int64_t step_size, double gamma);
/* CosineAnnealingLR: eta_min + (base - eta_min)(1 + cos(pi t / T_max)) / 2. */
ag_scheduler *ag_cosine_annealing_new(ag_optimizer *opt, int64_t t_max, double eta_min);
/* LinearLR: factor from start_factor to end_factor over total_iters steps (warm-up). */
ag_scheduler *ag_linear_lr_new(ag_optimizer *opt, double start_factor, double end_factor,
                               int64_t total_iters);
/* SequentialLR: schedulers[i] runs until milestones[i] steps, then the next; takes
 * ownership of the schedulers. */
ag_scheduler *ag_sequential_lr_new(ag_optimizer *opt, int n, ag_scheduler *const *schedulers,
                                   const int64_t *milestones);
/* Advances the schedule one step and sets the optimizer's lr. */
ag_status ag_scheduler_step(ag_scheduler *s);
/* Frees a scheduler (and the ones it owns). NULL is ignored. */
void ag_scheduler_free(ag_scheduler *s);

/* ---- loss scaling for float16 training (torch.amp.GradScaler; docs/amp.md) ---- */

/* A gradient scaler (opaque). */
typedef struct ag_grad_scaler ag_grad_scaler;

/* GradScaler settings (PyTorch's defaults from ag_grad_scaler_defaults). */
typedef struct ag_grad_scaler_options {
    double init_scale;       /* 65536 */
    double growth_factor;    /* 2.0: the scale grows by it after growth_interval good steps */
    double backoff_factor;   /* 0.5: and shrinks by it after a step with inf/NaN gradients */
    int64_t growth_interval; /* 2000 */
    bool enabled;            /* true; false makes every call a pass-through */
} ag_grad_scaler_options;

/* init_scale 65536, growth 2, backoff 0.5, interval 2000, enabled. */
ag_grad_scaler_options ag_grad_scaler_defaults(void);
/* A scaler with options (NULL: the defaults); NULL with an error for bad options. */
ag_grad_scaler *ag_grad_scaler_new(const ag_grad_scaler_options *options);
/* Frees a scaler. NULL is ignored. */
void ag_grad_scaler_free(ag_grad_scaler *s);
/* loss * scale (an op result, differentiable), to call backward on. */
ag_tensor *ag_grad_scaler_scale(ag_grad_scaler *s, ag_tensor *loss);
/* unscale_: divides opt's gradients by the scale and records whether any is inf/NaN. Once
 * per optimizer between updates: a second call is an error, as after step. */
ag_status ag_grad_scaler_unscale(ag_grad_scaler *s, ag_optimizer *opt);
/* Unscales opt's gradients if not done yet, then steps opt unless a gradient was inf/NaN;
 * *stepped (may be NULL) tells which. A second step before update is an error. */
ag_status ag_grad_scaler_step(ag_grad_scaler *s, ag_optimizer *opt, bool *stepped);
/* Ends the iteration: backoff after an inf/NaN, growth after growth_interval good steps in
 * a row. Error if no optimizer was unscaled or stepped since the last update. */
ag_status ag_grad_scaler_update(ag_grad_scaler *s);
/* The current scale (float32 arithmetic, as PyTorch's scale tensor). */
double ag_grad_scaler_scale_value(const ag_grad_scaler *s);
/* Good steps since the last growth or backoff. */
int64_t ag_grad_scaler_growth_tracker(const ag_grad_scaler *s);
/* The state to checkpoint: "scale" (float32 0-dim) and "growth_tracker" (int64 0-dim),
 * new references owned like op results; returns 2, or -1 on error. */
int ag_grad_scaler_state(const ag_grad_scaler *s, ag_named_tensor out[2]);
/* Restores "scale" and "growth_tracker" from n named tensors (other names are ignored; both
 * must be present). */
ag_status ag_grad_scaler_load_state(ag_grad_scaler *s, int n, const ag_named_tensor *state);

#ifdef __cplusplus
}
#endif
#endif
