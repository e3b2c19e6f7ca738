/* Seed §K: automatic mixed precision. The §P network is trained three times on the same
 * Fashion-MNIST images from the same initial weights:
 *
 *   float32   the reference
 *   bfloat16  the forward under autocast (matmul and linear in bfloat16, softmax, layer_norm
 *             and the loss in float32); bfloat16 keeps float32's range, so no loss scaling
 *   float16   autocast with float16 and a GradScaler: the loss is multiplied by the scale
 *             before backward, the gradients divided by it before clipping, and a step whose
 *             gradients overflowed is skipped while the scale backs off
 *
 * The parameters and the optimizer stay float32 in all three (PyTorch's recipe). Prints each
 * run's test accuracy, time per step and, for float16, the final scale; fails unless both
 * mixed-precision runs land within `--tolerance` points of float32 (default 1, the issue's
 * bound) and beat chance.
 *
 * usage: ex_k_amp [--epochs N] [--limit N] [--data DIR] [--tolerance POINTS] */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "ag/train.h"

/* One run's outcome. */
typedef struct run_result {
    double accuracy;    /* test accuracy in percent */
    double ms_per_step; /* training time per optimizer step */
    double scale;       /* the GradScaler's final scale, NAN without one */
} run_result;

/* Trains config (whose amp field picks the precision) for `epochs` on data. */
static ag_status train(const ag_train_config *config, ag_train_data *data, int epochs,
                       run_result *out) {
    int64_t batches = ag_loader_batches(data->train_loader);
    int64_t steps = epochs * ag_train_steps_per_epoch(batches, config->accumulate);
    ag_trainer trainer;
    ag_status st = ag_trainer_init(&trainer, config, steps);
    if (st != AG_OK) return st;
    double seconds = 0;
    ag_accuracy acc = {0};
    for (int epoch = 0; epoch < epochs && st == AG_OK; epoch++) {
        ag_epoch_stats stats;
        ag_loader_set_epoch(data->train_loader, (uint64_t)epoch);
        st = ag_train_epoch(&trainer, data->train_loader, NULL, &stats);
        seconds += stats.seconds;
    }
    if (st == AG_OK) st = ag_evaluate(trainer.model, data->test_loader, &acc);
    out->accuracy = acc.total ? 100.0 * (double)acc.correct / (double)acc.total : 0;
    out->ms_per_step = steps ? 1e3 * seconds / (double)steps : 0;
    out->scale = trainer.scaler ? ag_grad_scaler_scale_value(trainer.scaler) : NAN;
    ag_trainer_free(&trainer);
    return st;
}

int main(int argc, char **argv) {
    static const struct option options[] = {{"epochs", required_argument, NULL, 'e'},
                                            {"limit", required_argument, NULL, 'l'},
                                            {"data", required_argument, NULL, 'd'},
                                            {"tolerance", required_argument, NULL, 't'},
                                            {0}};
    int epochs = 1, c;
    long long limit = 0;
    double tolerance = 1.0;
    const char *dir = AG_FASHION_MNIST_DIR;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (c == 'e')
            epochs = atoi(optarg);
        else if (c == 'l')
            limit = atoll(optarg);
        else if (c == 'd')
            dir = optarg;
        else if (c == 't')
            tolerance = atof(optarg);
        else
            epochs = 0;
    }
    if (epochs < 1 || limit < 0 || !(tolerance >= 0) || optind < argc) {
        fprintf(stderr, "usage: %s [--epochs N] [--limit N] [--data DIR] [--tolerance POINTS]\n",
                argv[0]);
        return 2;
    }
    ag_train_config config = ag_train_defaults();
    ag_train_data data;
    if (ag_train_data_load(&data, dir, &config, true, limit) != AG_OK) {
        fprintf(stderr, "k_amp: loading the data: %s\n", ag_last_error());
        return EXIT_FAILURE;
    }
    const ag_dtype precisions[3] = {AG_F32, AG_BF16, AG_F16};
    run_result results[3] = {{0}};
    int rc = EXIT_SUCCESS;
    printf("%-9s %10s %12s %10s\n", "precision", "accuracy", "ms/step", "scale");
    for (int k = 0; k < 3 && rc == EXIT_SUCCESS; k++) {
        config.amp = precisions[k];
        if (train(&config, &data, epochs, &results[k]) != AG_OK) {
            fprintf(stderr, "k_amp: training in %s: %s\n", ag_dtype_name(precisions[k]),
                    ag_last_error());
            rc = EXIT_FAILURE;
            break;
        }
        printf("%-9s %9.2f%% %12.3f %10.0f\n", ag_dtype_name(precisions[k]), results[k].accuracy,
               results[k].ms_per_step, results[k].scale);
    }
    for (int k = 1; k < 3 && rc == EXIT_SUCCESS; k++) {
        double gap = fabs(results[k].accuracy - results[0].accuracy);
        bool ok = gap <= tolerance && results[k].accuracy > 100.0 / (double)config.classes;
        printf("%s: %.2f points from float32 (tolerance %.2f): %s\n", ag_dtype_name(precisions[k]),
               gap, tolerance, ok ? "OK" : "FAILED");
        if (!ok) rc = EXIT_FAILURE;
    }
    ag_train_data_free(&data);
    return rc;
}
