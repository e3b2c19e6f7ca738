/* Seed §P: the complete training loop, in C, on Fashion-MNIST.
 *
 *   model  784-512-512-10 MLP: Linear, GELU, Linear, GELU, LayerNorm, Linear (logits)
 *   opt    AdamW, lr 2e-3, weight decay 1e-2; cosine annealing over all optimizer steps
 *   loss   cross entropy with label smoothing 0.1, divided by the accumulation count
 *   step   every 2 batches (gradient accumulation): clip_grad_norm 1.0, step,
 *          zero_grad(set_to_none)
 *   epoch  model.train() for training, model.eval() + no_grad for the test accuracy
 *
 * The pieces are the library functions `ag train` uses (include/ag/train.h); the batch
 * loop itself is ag_train_epoch in train/trainer.c. The seed's bfloat16 autocast and
 * GradScaler have no counterpart: ag trains in float32.
 *
 * usage: ex_p_train [--epochs N] [--limit N] [--data DIR]
 * Fails unless the final test accuracy beats chance. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include "ag/train.h"

static int fail(const char *what) {
    fprintf(stderr, "p_train: %s: %s\n", what, ag_last_error());
    return EXIT_FAILURE;
}

int main(int argc, char **argv) {
    static const struct option options[] = {{"epochs", required_argument, NULL, 'e'},
                                            {"limit", required_argument, NULL, 'l'},
                                            {"data", required_argument, NULL, 'd'},
                                            {0}};
    int epochs = 10, c;
    long long limit = 0;
    const char *dir = AG_FASHION_MNIST_DIR;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (c == 'e')
            epochs = atoi(optarg);
        else if (c == 'l')
            limit = atoll(optarg);
        else if (c == 'd')
            dir = optarg;
        else
            epochs = 0; /* unknown option: print the usage below */
    }
    if (epochs < 1 || limit < 0 || optind < argc) {
        fprintf(stderr, "usage: %s [--epochs N >= 1] [--limit N] [--data DIR]\n", argv[0]);
        return 2;
    }

    /* §P's hyperparameters: see the field comments of ag_train_config. */
    ag_train_config config = ag_train_defaults();
    ag_train_data data;
    if (ag_train_data_load(&data, dir, &config, true, limit) != AG_OK)
        return fail("loading the data");
    int64_t batches = ag_loader_batches(data.train_loader);
    int64_t steps = epochs * ag_train_steps_per_epoch(batches, config.accumulate);

    /* model = Net(); opt = AdamW(...); sched = CosineAnnealingLR(opt, T_max=steps) */
    ag_trainer trainer;
    if (ag_trainer_init(&trainer, &config, steps) != AG_OK) {
        ag_train_data_free(&data);
        return fail("building the model");
    }
    ag_progress progress;
    ag_progress_init(&progress, stdout, false);
    ag_accuracy acc = {0};
    ag_status st = AG_OK;
    for (int epoch = 0; epoch < epochs && st == AG_OK; epoch++) {
        ag_epoch_stats stats;
        ag_loader_set_epoch(data.train_loader, (uint64_t)epoch); /* reshuffle */
        ag_progress_begin(&progress, epoch + 1, epochs, batches);
        st = ag_train_epoch(&trainer, data.train_loader, &progress, &stats); /* model.train() */
        if (st == AG_OK) st = ag_evaluate(trainer.model, data.test_loader, &acc); /* .eval() */
        if (st == AG_OK) ag_progress_epoch(&progress, &stats, &acc);
    }
    int rc = st == AG_OK ? EXIT_SUCCESS : fail("training");
    if (rc == EXIT_SUCCESS) {
        ag_print_accuracy(stdout, &acc);
        /* Chance is one correct answer in `classes`. */
        if (acc.correct * config.classes <= acc.total) {
            fprintf(stderr, "p_train: FAILED: the accuracy is no better than chance\n");
            rc = EXIT_FAILURE;
        }
    }
    ag_trainer_free(&trainer);
    ag_train_data_free(&data);
    return rc;
}
