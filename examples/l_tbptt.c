/* Seed §L: truncated backpropagation through time (TBPTT) with an LSTM.
 *
 *   task   Fashion-MNIST read as sequences: each image is 28 time steps of one 28-pixel row
 *   model  LSTM(28, 64, batch_first) -> Linear(64, 10) on the last hidden state
 *   TBPTT  the 28 steps run in segments of k (7): each segment continues from the state the
 *          previous one left (carried forward), predicts the class from its last hidden
 *          state, and backpropagates and steps the optimizer through its own k steps only.
 *          The carried state is detached between segments (ag_detach, PyTorch's
 *          h.detach()), which cuts the graph: no gradient flows into an earlier segment,
 *          whose graph backward has freed anyway.
 *   opt    Adam lr 5e-3, gradient norm clipped to 1.0 (the usual guard for recurrent nets)
 *
 * Prints the loss every few batches. Fails unless the mean loss of the last 20 batches is
 * below that of the first 20, the test accuracy on a subset beats chance, no gradient
 * crosses a segment boundary, and segmented evaluation equals one unsegmented pass.
 *
 * usage: ex_l_tbptt [--epochs N] [--limit N] [--test-limit N] [--segment K] [--data DIR] */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "ag/data.h"
#include "ag/nn.h"
#include "ag/optim.h"

enum { ROWS = 28, COLS = 28, HIDDEN = 64, BATCH = 64, CLASSES = 10, WINDOW = 20, N_PARAMS = 6 };

/* The network: an LSTM over rows and a linear classifier of its last hidden state. */
typedef struct model {
    ag_module *lstm, *head;
    ag_named_tensor params[N_PARAMS]; /* the LSTM's 4, then the head's 2 (borrowed) */
} model;

static int fail(const char *what) {
    fprintf(stderr, "l_tbptt: FAILED: %s%s%s\n", what, ag_last_error()[0] ? ": " : "",
            ag_last_error());
    return EXIT_FAILURE;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double item(ag_tensor *t) {
    double v = NAN;
    ag_item(t, &v);
    return v;
}

/* Replaces a carried state (a reference held across segments) with a detached copy of
 * `state`: the values go on, the history stays behind. */
static void carry(ag_tensor **carried, ag_tensor *state) {
    ag_release(*carried);
    *carried = state ? ag_keep(ag_detach(state)) : NULL;
}

/* Logits of the classifier from the last layer's final hidden state h_n [1, N, H]. */
static ag_tensor *classify(const model *m, ag_tensor *h_n) {
    return ag_module_forward(m->head, ag_select(h_n, 0, -1));
}

/* Checks that no gradient crosses a segment boundary: the carried state has no history,
 * and the loss of this segment does not depend on the previous segment's (undetached)
 * final state. */
static bool boundary_is_cut(ag_tensor *loss, ag_tensor *carried_h, ag_tensor *previous_h_n) {
    if (ag_requires_grad(carried_h) || !ag_is_leaf(carried_h)) {
        fprintf(stderr, "l_tbptt: the carried state still requires grad\n");
        return false;
    }
    ag_tensor *grad = NULL;
    ag_status st = ag_grad(1, &loss, 1, &previous_h_n, NULL, true, false, true, &grad);
    bool cut = st == AG_OK && grad == NULL;
    if (!cut)
        fprintf(stderr, "l_tbptt: the loss has a gradient through the previous segment (%s)\n",
                st == AG_OK ? "it is not NULL" : ag_last_error());
    return cut;
}

/* One batch: the segments of x [N, 28, 28], each with its own backward and optimizer step.
 * *loss_last receives the loss after the last segment (all rows seen), *loss_mean the mean
 * over segments. With check_boundaries, verifies the cut at every boundary. */
static ag_status train_batch(model *m, ag_optimizer *opt, ag_tensor *x, ag_tensor *y, int k,
                             bool check_boundaries, double *loss_last, double *loss_mean) {
    ag_tensor *h = NULL, *c = NULL, *previous_h_n = NULL; /* zero state for a new sequence */
    ag_status st = AG_OK;
    int segments = 0;
    *loss_mean = 0;
    for (int start = 0; st == AG_OK && start < ROWS; start += k, segments++) {
        ag_scope *scope = ag_scope_begin();
        ag_tensor *rows = ag_slice(x, 1, start, start + k, 1), *h_n, *c_n;
        st = ag_rnn_forward(m->lstm, rows, h, c, NULL, &h_n, &c_n);
        ag_tensor *loss = st == AG_OK ? ag_cross_entropy(classify(m, h_n), y, NULL) : NULL;
        if (!loss) st = ag_last_status();
        if (st == AG_OK && check_boundaries && previous_h_n &&
            !boundary_is_cut(loss, h, previous_h_n))
            st = AG_ERR_INVALID_ARG;
        if (st == AG_OK) st = ag_optimizer_zero_grad(opt, true);
        if (st == AG_OK) st = ag_backward(loss, NULL);
        if (st == AG_OK) st = ag_clip_grad_norm(N_PARAMS, m->params, 1.0, 2.0, NULL);
        if (st == AG_OK) st = ag_optimizer_step(opt);
        if (st == AG_OK) {
            *loss_last = item(loss);
            *loss_mean += *loss_last;
            /* The state goes on to the next segment; its gradient path does not. */
            carry(&h, h_n);
            carry(&c, c_n);
            ag_release(previous_h_n);
            previous_h_n = check_boundaries ? ag_keep(h_n) : NULL;
        }
        ag_scope_end(scope);
    }
    ag_release(h);
    ag_release(c);
    ag_release(previous_h_n);
    *loss_mean /= segments;
    return st;
}

/* Logits for x [N, 28, 28] in segments of k, carrying the state as training does. */
static ag_tensor *predict_segmented(const model *m, ag_tensor *x, int k) {
    ag_tensor *h = NULL, *c = NULL, *h_n = NULL, *c_n = NULL;
    for (int start = 0; start < ROWS; start += k) {
        if (ag_rnn_forward(m->lstm, ag_slice(x, 1, start, start + k, 1), h, c, NULL, &h_n, &c_n) !=
            AG_OK)
            return NULL;
        h = h_n;
        c = c_n;
    }
    return classify(m, h_n);
}

/* Accuracy on the test images (no_grad); also checks on the first batch that segmented
 * evaluation with the carried state equals one pass over all 28 rows. */
static ag_status evaluate(const model *m, ag_loader *loader, int k, int64_t *correct,
                          int64_t *total) {
    const bool was = ag_set_grad_enabled(false);
    ag_tensor *x, *y;
    ag_status st = AG_OK;
    *correct = *total = 0;
    ag_loader_set_epoch(loader, 0);
    while (st == AG_OK) {
        ag_scope *scope = ag_scope_begin();
        if (!ag_loader_next(loader, &x, &y)) {
            st = ag_last_status();
            ag_scope_end(scope);
            break;
        }
        ag_tensor *seq = ag_view(x, 3, (int64_t[]){ag_size(x, 0), ROWS, COLS});
        ag_tensor *logits = predict_segmented(m, seq, k);
        if (*total == 0 && logits) {
            ag_tensor *h_n;
            ag_rnn_forward(m->lstm, seq, NULL, NULL, NULL, &h_n, NULL);
            ag_tensor *whole = classify(m, h_n);
            double diff = item(ag_max(ag_abs(ag_sub(logits, whole)), 0, NULL, false));
            printf("segmented vs whole-sequence logits: max difference %.3g\n", diff);
            if (!(diff < 1e-4)) {
                fprintf(stderr, "l_tbptt: segmented evaluation differs from one pass\n");
                st = AG_ERR_INVALID_ARG;
            }
        }
        ag_tensor *hits = ag_sum(ag_eq(ag_argmax(logits, 1, false, false), y), 0, NULL, false);
        if (!hits && st == AG_OK) st = ag_last_status();
        if (st == AG_OK) {
            *correct += (int64_t)item(hits);
            *total += ag_size(y, 0);
        }
        ag_scope_end(scope);
    }
    ag_set_grad_enabled(was);
    return st;
}

/* The first n samples of a data set as a loader (all of them if n is 0 or larger). */
static ag_loader *loader_of(const ag_image_dataset *ds, int64_t n, bool shuffle) {
    if (n <= 0 || n > ds->count) n = ds->count;
    ag_scope *scope = ag_scope_begin();
    ag_loader_options o = {.batch_size = BATCH,
                           .shuffle = shuffle,
                           .drop_last = shuffle,
                           .seed = 0,
                           .rank = 0,
                           .world_size = 1};
    ag_loader *l =
        ag_loader_new(ag_slice(ds->images, 0, 0, n, 1), ag_slice(ds->labels, 0, 0, n, 1), &o);
    ag_scope_end(scope);
    return l;
}

/* Mean of v[from..to). */
static double mean_of(const double *v, int64_t from, int64_t to) {
    double s = 0;
    for (int64_t i = from; i < to; i++) s += v[i];
    return s / (double)(to - from);
}

int main(int argc, char **argv) {
    static const struct option options[] = {
        {"epochs", required_argument, NULL, 'e'},     {"limit", required_argument, NULL, 'l'},
        {"test-limit", required_argument, NULL, 't'}, {"segment", required_argument, NULL, 'k'},
        {"data", required_argument, NULL, 'd'},       {0}};
    int epochs = 1, k = 7, c;
    long long limit = 0, test_limit = 2000;
    const char *dir = AG_FASHION_MNIST_DIR;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (c == 'e')
            epochs = atoi(optarg);
        else if (c == 'l')
            limit = atoll(optarg);
        else if (c == 't')
            test_limit = atoll(optarg);
        else if (c == 'k')
            k = atoi(optarg);
        else if (c == 'd')
            dir = optarg;
        else
            epochs = 0; /* unknown option: print the usage below */
    }
    if (epochs < 1 || limit < 0 || test_limit < 0 || k < 1 || k > ROWS || optind < argc) {
        fprintf(stderr,
                "usage: %s [--epochs N >= 1] [--limit N] [--test-limit N] [--segment 1..28] "
                "[--data DIR]\n",
                argv[0]);
        return 2;
    }

    ag_image_dataset train = {0}, test = {0};
    if (ag_mnist_load(dir, true, &train) != AG_OK || ag_mnist_load(dir, false, &test) != AG_OK) {
        ag_image_dataset_free(&train);
        return fail("loading the data");
    }
    ag_loader *train_loader = loader_of(&train, limit, true);
    ag_loader *test_loader = loader_of(&test, test_limit, false);
    ag_generator *gen = ag_generator_new(0);
    model m = {0};
    m.lstm = ag_lstm_new(COLS, HIDDEN, 1, true, true, gen);
    m.head = ag_linear_new(HIDDEN, CLASSES, true, gen);
    ag_optimizer *opt = NULL;
    if (m.lstm && m.head) {
        ag_module_parameters(m.lstm, m.params, 4);
        ag_module_parameters(m.head, m.params + 4, 2);
        ag_adam_options adam = ag_adam_defaults();
        adam.lr = 5e-3;
        opt = ag_adam_new(N_PARAMS, m.params, &adam);
    }
    const int64_t batches = train_loader ? ag_loader_batches(train_loader) : 0;
    const int64_t steps = batches * epochs;
    double *losses = steps > 0 ? calloc((size_t)steps, sizeof *losses) : NULL;
    int rc = EXIT_SUCCESS;
    if (!train_loader || !test_loader || !opt || !losses)
        rc = fail("setting up");
    else if (steps < 2 * WINDOW)
        rc = fail("too few batches to compare the first and last 20 (raise --limit)");
    printf("LSTM(%d, %d) over %d rows in segments of %d (%d optimizer steps per image batch), "
           "%lld batches of %d\n",
           COLS, HIDDEN, ROWS, k, (ROWS + k - 1) / k, (long long)steps, BATCH);

    double t0 = now_seconds();
    int64_t step = 0;
    for (int epoch = 0; rc == EXIT_SUCCESS && epoch < epochs; epoch++) {
        ag_loader_set_epoch(train_loader, (uint64_t)epoch);
        ag_tensor *x, *y;
        while (rc == EXIT_SUCCESS) {
            ag_scope *scope = ag_scope_begin();
            if (!ag_loader_next(train_loader, &x, &y)) {
                if (ag_last_status() != AG_OK) rc = fail("reading a batch");
                ag_scope_end(scope);
                break;
            }
            ag_tensor *seq = ag_view(x, 3, (int64_t[]){ag_size(x, 0), ROWS, COLS});
            double last, mean;
            /* The boundary check costs a graph walk: the first batch of each epoch does it. */
            if (train_batch(&m, opt, seq, y, k, step % batches == 0, &last, &mean) != AG_OK)
                rc = fail("training step");
            ag_scope_end(scope);
            if (rc != EXIT_SUCCESS) break;
            losses[step++] = last;
            if (step % 10 == 0 || step == steps)
                printf("batch %4lld/%lld  loss after 28 rows %.4f  (mean over segments %.4f)\n",
                       (long long)step, (long long)steps, last, mean);
        }
    }
    double train_seconds = now_seconds() - t0;
    int64_t correct = 0, total = 0;
    if (rc == EXIT_SUCCESS && evaluate(&m, test_loader, k, &correct, &total) != AG_OK)
        rc = fail("evaluating");
    if (rc == EXIT_SUCCESS) {
        const double first = mean_of(losses, 0, WINDOW),
                     last = mean_of(losses, step - WINDOW, step);
        printf("mean loss: first %d batches %.4f, last %d batches %.4f\n", WINDOW, first, WINDOW,
               last);
        printf("test accuracy on %lld images: %.2f%% (chance 10%%)\n", (long long)total,
               100.0 * (double)correct / (double)total);
        printf("training time %.2f s (%.1f ms per batch)\n", train_seconds,
               1e3 * train_seconds / (double)step);
        printf("no gradient crossed a segment boundary\n");
        if (!(last < first)) rc = fail("the loss did not fall");
        if (correct * CLASSES <= total) rc = fail("the accuracy is no better than chance");
    }
    free(losses);
    ag_optimizer_free(opt);
    ag_module_free(m.lstm);
    ag_module_free(m.head);
    ag_generator_free(gen);
    ag_loader_free(train_loader);
    ag_loader_free(test_loader);
    ag_image_dataset_free(&train);
    ag_image_dataset_free(&test);
    return rc;
}
