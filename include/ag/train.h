/* ag training recipe: the loop of the seed chapter's §P (an MLP with GELU and LayerNorm,
 * AdamW, cosine schedule, label-smoothed cross entropy, gradient clipping, gradient
 * accumulation) on an image classification set, shared by `ag train` and
 * examples/p_train.c. docs/training.md describes the recipe and its choices.
 *
 * Every batch runs inside its own scope, so memory stays flat across epochs. */
#ifndef AG_TRAIN_H
#define AG_TRAIN_H

#include <stdio.h>
#include "ag/data.h"
#include "ag/nn.h"
#include "ag/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Networks ag_train_model_new builds. */
enum {
    AG_TRAIN_MLP = 0, /* §P's MLP (the default) */
    AG_TRAIN_CNN = 1  /* a LeNet-5 style convolutional net (docs/training.md) */
};

/* Hyperparameters of a run (§P's values from ag_train_defaults). */
typedef struct ag_train_config {
    int64_t in_features;    /* 784: flattened 28x28 images */
    int64_t hidden;         /* 512: width of both hidden layers */
    int64_t classes;        /* 10 */
    int64_t batch_size;     /* 128 */
    double lr;              /* 2e-3: peak learning rate */
    double weight_decay;    /* 1e-2: AdamW's decoupled weight decay */
    int accumulate;         /* 2: batches whose gradients make one optimizer step */
    double clip;            /* 1.0: max total gradient norm (0 disables clipping) */
    double label_smoothing; /* 0.1 */
    int64_t warmup_steps;   /* 0: linear warm-up steps before the cosine annealing */
    uint64_t seed;          /* 0: parameter initialisation and shuffling */
    int model;              /* AG_TRAIN_MLP (0, default) or AG_TRAIN_CNN */
    ag_dtype amp;           /* AG_F32 (off); AG_BF16 or AG_F16: the forward under autocast,
                               and for float16 the loss scaled by a GradScaler */
} ag_train_config;

/* §P's hyperparameters (see the field comments). */
ag_train_config ag_train_defaults(void);

/* The network config->model names, as a Sequential. AG_TRAIN_MLP, §P's: Linear(in, hidden),
 * GELU, Linear(hidden, hidden), GELU, LayerNorm(hidden), Linear(hidden, classes);
 * parameters "0.weight" ... "5.bias". AG_TRAIN_CNN (in a square side*side, hidden unused):
 * Unflatten to [1, side, side], Conv2d(1, 6, 5, padding 2, no bias), BatchNorm2d(6), ReLU,
 * MaxPool2d(2), Conv2d(6, 16, 5, no bias), BatchNorm2d(16), ReLU, MaxPool2d(2), Flatten,
 * Linear(16*s*s, 120), ReLU, Linear(120, 84), ReLU, Linear(84, classes) with
 * s = (side/2 - 4)/2 (5 for 28x28 images). */
ag_module *ag_train_model_new(const ag_train_config *config, ag_generator *gen);

/* A model with its optimizer and schedule. Fields are readable; the trainer owns them. */
typedef struct ag_trainer {
    ag_train_config config;        /* copy of the run's settings */
    ag_module *model;              /* ag_train_model_new, seeded with config.seed */
    ag_optimizer *optimizer;       /* AdamW over every parameter */
    ag_scheduler *scheduler;       /* warm-up then cosine to 0; NULL without steps */
    int n_params;                  /* entries of params */
    ag_named_tensor *params;       /* the model's parameters (borrowed from it) */
    ag_cross_entropy_options loss; /* mean, label smoothing from config */
    ag_grad_scaler *scaler;        /* float16 AMP's loss scaler, else NULL */
    /* Data parallelism (ag_ddp of include/ag/dist.h, which libag does not link), set by the
     * caller after ag_trainer_init; NULL for one process. ag_train_epoch calls
     * before_backward(sync_user, sync) before each batch's backward, sync false for the
     * batches of a group before its last (no_sync); ag_trainer_step calls
     * sync_grads(sync_user) first, to average the gradients across processes. */
    void (*before_backward)(void *sync_user, bool sync);
    ag_status (*sync_grads)(void *sync_user);
    void *sync_user;
} ag_trainer;

/* Builds the model, AdamW and, when total_steps > 0, the learning-rate schedule over
 * total_steps optimizer steps. On error nothing is left allocated. */
ag_status ag_trainer_init(ag_trainer *t, const ag_train_config *config, int64_t total_steps);
/* Frees what ag_trainer_init made and zeroes t. */
void ag_trainer_free(ag_trainer *t);
/* Optimizer steps in an epoch of `batches` batches: one per group of config.accumulate
 * batches, a final short group included. */
int64_t ag_train_steps_per_epoch(int64_t batches, int accumulate);
/* Forward and backward of one batch (x float32 [B, in], y int64 [B]) with the loss
 * divided by `divisor`, so gradients of a group add up to the group's mean; *loss (if
 * not NULL) receives the undivided batch loss. */
ag_status ag_trainer_accumulate(ag_trainer *t, ag_tensor *x, ag_tensor *y, int divisor,
                                double *loss);
/* Ends a group: clips the gradients, steps AdamW and the schedule, and drops the gradients
 * (zero_grad with set_to_none). */
ag_status ag_trainer_step(ag_trainer *t);

/* Monotonic clock in seconds, for timing epochs and steps. */
double ag_train_clock(void);

/* Reports progress: a redrawn line on a terminal, plain periodic lines otherwise. */
typedef struct ag_progress {
    FILE *out;        /* where it writes */
    bool tty;         /* out is a terminal: one line redrawn with \r */
    bool quiet;       /* no per-batch output, epoch lines only */
    int epoch;        /* current epoch, from 1 */
    int epochs;       /* epochs in the run */
    int64_t batches;  /* batches in the epoch */
    double start;     /* monotonic seconds at the start of the epoch */
    double last_draw; /* when the terminal line was last drawn */
} ag_progress;

/* Sets up a reporter on out (tty from isatty). */
void ag_progress_init(ag_progress *p, FILE *out, bool quiet);
/* Starts epoch `epoch` of `epochs` with `batches` batches. */
void ag_progress_begin(ag_progress *p, int epoch, int epochs, int64_t batches);
/* Reports that `batch` batches (`images` images) are done with mean loss `loss`. */
void ag_progress_batch(ag_progress *p, int64_t batch, int64_t images, double loss);

/* What an epoch of training did. */
typedef struct ag_epoch_stats {
    double loss;    /* mean training loss per image (before the division by accumulate) */
    int64_t images; /* images seen */
    int64_t steps;  /* optimizer steps taken */
    double seconds; /* wall time of the epoch's training */
} ag_epoch_stats;

/* Test-set accuracy. */
typedef struct ag_accuracy {
    int64_t correct; /* images whose arg-max logit is the label */
    int64_t total;   /* images evaluated */
} ag_accuracy;

/* One epoch of training in train mode over loader's batches (its epoch already set), one
 * scope per batch. progress may be NULL. */
ag_status ag_train_epoch(ag_trainer *t, ag_loader *loader, ag_progress *progress,
                         ag_epoch_stats *stats);
/* Accuracy of model in eval mode without grad over loader's batches. */
ag_status ag_evaluate(ag_module *model, ag_loader *loader, ag_accuracy *accuracy);

/* Writes the epoch line: epoch, train loss, test accuracy, seconds, images/s, RSS. */
void ag_progress_epoch(ag_progress *p, const ag_epoch_stats *stats, const ag_accuracy *acc);
/* Resident memory of the process in MiB (the epoch line's RSS), -1 if unknown. */
double ag_train_rss_mib(void);
/* Writes "test accuracy 88.12% (8812/10000)". */
void ag_print_accuracy(FILE *out, const ag_accuracy *acc);

/* Training and test data: data sets and their loaders. */
typedef struct ag_train_data {
    ag_image_dataset train;  /* training set (empty when not loaded) */
    ag_image_dataset test;   /* test set */
    ag_loader *train_loader; /* shuffled (seed config.seed) over the first `limit` images */
    ag_loader *test_loader;  /* in order, batches of 1000 */
} ag_train_data;

/* Loads dir's MNIST-format files: the test set, and the training set too when with_train;
 * limit > 0 keeps the first limit training images. A missing directory is AG_ERR_IO
 * naming it. On error nothing is left allocated. */
ag_status ag_train_data_load(ag_train_data *d, const char *dir, const ag_train_config *config,
                             bool with_train, int64_t limit);
/* Frees the data sets and loaders and zeroes d. */
void ag_train_data_free(ag_train_data *d);

#ifdef __cplusplus
}
#endif
#endif
