/* Progress output of a training run: on a terminal one line redrawn with \r (at most ten
 * times a second), otherwise a plain line every tenth of an epoch, so logs stay short;
 * after each epoch a summary line. Lines are flushed at once for `nohup ... &` logs. */
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include "ag/train.h"

/* Seconds between two redraws of the terminal line. */
static const double REDRAW_INTERVAL = 0.1;

/* CLOCK_MONOTONIC in seconds. */
double ag_train_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A reporter on out; a terminal gets the redrawn line. */
void ag_progress_init(ag_progress *p, FILE *out, bool quiet) {
    *p = (ag_progress){.out = out, .tty = isatty(fileno(out)) == 1, .quiet = quiet};
}

/* Starts an epoch's progress and its clock. */
void ag_progress_begin(ag_progress *p, int epoch, int epochs, int64_t batches) {
    p->epoch = epoch;
    p->epochs = epochs;
    p->batches = batches;
    p->start = ag_train_clock();
    p->last_draw = 0;
}

/* Draws the progress line when it is due. */
void ag_progress_batch(ag_progress *p, int64_t batch, int64_t images, double loss) {
    if (p->quiet) return;
    double t = ag_train_clock();
    bool last = batch == p->batches;
    if (p->tty ? !last && t - p->last_draw < REDRAW_INTERVAL
               : !last && batch % (p->batches >= 10 ? p->batches / 10 : 1) != 0)
        return;
    p->last_draw = t;
    /* \x1b[K clears what a longer previous line left on the terminal. */
    fprintf(p->out, "%sepoch %d/%d  batch %lld/%lld  loss %.4f  %.0f img/s%s", p->tty ? "\r" : "",
            p->epoch, p->epochs, (long long)batch, (long long)p->batches, loss,
            t > p->start ? (double)images / (t - p->start) : 0.0, p->tty ? "\x1b[K" : "\n");
    fflush(p->out);
}

/* Resident memory in MiB, -1 if unknown. */
double ag_train_rss_mib(void) {
    /* The second field of /proc/self/statm is the resident set in pages. */
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = -1;
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
    fclose(f);
    return resident < 0 ? -1 : (double)resident * (double)sysconf(_SC_PAGESIZE) / 1048576.0;
}

static double percent(const ag_accuracy *acc) {
    return acc->total ? 100.0 * (double)acc->correct / (double)acc->total : 0.0;
}

/* The epoch's summary line (replacing a terminal's progress line). */
void ag_progress_epoch(ag_progress *p, const ag_epoch_stats *stats, const ag_accuracy *acc) {
    if (p->tty && !p->quiet) fputs("\r\x1b[K", p->out); /* replace the progress line */
    fprintf(p->out,
            "epoch %2d/%d  train loss %.4f  test acc %.2f%%  %.2f s  %.0f img/s  RSS %.0f MiB\n",
            p->epoch, p->epochs, stats->loss, percent(acc), stats->seconds,
            stats->seconds > 0 ? (double)stats->images / stats->seconds : 0.0, ag_train_rss_mib());
    fflush(p->out);
}

/* The final accuracy line, the same for training and --eval-only. */
void ag_print_accuracy(FILE *out, const ag_accuracy *acc) {
    fprintf(out, "test accuracy %.2f%% (%lld/%lld)\n", percent(acc), (long long)acc->correct,
            (long long)acc->total);
    fflush(out);
}
