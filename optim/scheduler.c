/* Learning-rate schedulers (torch.optim.lr_scheduler): StepLR, CosineAnnealingLR, LinearLR
 * and SequentialLR.
 *
 * Each scheduler counts its epoch (last_epoch) and sets the optimizer's lr to its schedule's
 * closed form at that epoch: PyTorch's _get_closed_form_lr, which equals what get_last_lr
 * returns in a run where only the scheduler changes the lr. As in PyTorch, creating a
 * scheduler is its epoch 0 (a warm-up lowers the lr at once), and the base lr is the
 * optimizer's initial_lr (see ag__optimizer_initial_lr). */
#include <math.h>
#include <stdlib.h>
#include "optim_internal.h"
#include "../core/internal.h"

/* The schedule a scheduler follows. */
typedef enum sched_kind { SCHED_STEP, SCHED_COSINE, SCHED_LINEAR, SCHED_SEQUENTIAL } sched_kind;

struct ag_scheduler {
    sched_kind kind;
    ag_optimizer *opt;  /* borrowed: the optimizer must outlive the scheduler */
    double base_lr;     /* the optimizer's initial_lr at creation */
    int64_t last_epoch; /* steps taken since creation (or since a SequentialLR switched) */
    bool owned;         /* a child of a SequentialLR, which frees it */
    union {
        struct {
            int64_t step_size;
            double gamma;
        } step;
        struct {
            int64_t t_max;
            double eta_min;
        } cosine;
        struct {
            double start, end;
            int64_t total;
        } linear;
        struct {
            int n;                   /* children */
            ag_scheduler **children; /* owned */
            int64_t *milestones;     /* n - 1 epochs at which the next child takes over */
        } seq;
    } u;
};

/* The lr of a StepLR, CosineAnnealingLR or LinearLR at its last_epoch. */
static double closed_form(const ag_scheduler *s) {
    const double t = (double)s->last_epoch;
    switch (s->kind) {
    case SCHED_STEP:
        return s->base_lr * pow(s->u.step.gamma, (double)(s->last_epoch / s->u.step.step_size));
    case SCHED_COSINE: {
        const double eta_min = s->u.cosine.eta_min;
        return eta_min +
               (s->base_lr - eta_min) * (1 + cos(M_PI * t / (double)s->u.cosine.t_max)) / 2;
    }
    case SCHED_LINEAR: {
        const double total = (double)s->u.linear.total;
        return s->base_lr *
               (s->u.linear.start + (s->u.linear.end - s->u.linear.start) * fmin(total, t) / total);
    }
    case SCHED_SEQUENTIAL:
        break;
    }
    return NAN; /* a SequentialLR delegates to its children */
}

/* A new scheduler of `kind` at epoch 0 whose base is the optimizer's initial_lr; the caller
 * fills in its settings. */
static ag_scheduler *sched_new(const char *fn, ag_optimizer *opt, sched_kind kind) {
    if (!opt) {
        ag__error(AG_ERR_INVALID_ARG, "%s: optimizer is NULL", fn);
        return NULL;
    }
    ag_scheduler *s = ag__calloc(1, sizeof *s);
    if (!s) {
        ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
        return NULL;
    }
    s->kind = kind;
    s->opt = opt;
    s->base_lr = ag__optimizer_initial_lr(opt);
    return s;
}

/* Sets the optimizer's lr from s at its current epoch; returns s. */
static ag_scheduler *apply(ag_scheduler *s) {
    ag_optimizer_set_lr(s->opt, closed_form(s));
    return s;
}

ag_scheduler *ag_step_lr_new(ag_optimizer *opt, int64_t step_size, double gamma) {
    if (step_size < 1) {
        ag__error(AG_ERR_INVALID_ARG, "ag_step_lr_new: step_size must be >= 1, got %lld",
                  (long long)step_size);
        return NULL;
    }
    ag_scheduler *s = sched_new("ag_step_lr_new", opt, SCHED_STEP);
    if (!s) return NULL;
    s->u.step.step_size = step_size;
    s->u.step.gamma = gamma;
    return apply(s);
}

ag_scheduler *ag_cosine_annealing_new(ag_optimizer *opt, int64_t t_max, double eta_min) {
    if (t_max < 1) {
        ag__error(AG_ERR_INVALID_ARG, "ag_cosine_annealing_new: T_max must be >= 1, got %lld",
                  (long long)t_max);
        return NULL;
    }
    ag_scheduler *s = sched_new("ag_cosine_annealing_new", opt, SCHED_COSINE);
    if (!s) return NULL;
    s->u.cosine.t_max = t_max;
    s->u.cosine.eta_min = eta_min;
    return apply(s);
}

ag_scheduler *ag_linear_lr_new(ag_optimizer *opt, double start_factor, double end_factor,
                               int64_t total_iters) {
    const char *fn = "ag_linear_lr_new";
    /* PyTorch 1.13's checks and messages (NaN fails them too). */
    if (!(start_factor >= 0 && start_factor <= 1)) {
        ag__error(AG_ERR_INVALID_ARG,
                  "%s: Starting multiplicative factor expected to be between 0 and 1, got %g", fn,
                  start_factor);
        return NULL;
    }
    if (!(end_factor >= 0 && end_factor <= 1)) {
        ag__error(AG_ERR_INVALID_ARG,
                  "%s: Ending multiplicative factor expected to be between 0 and 1, got %g", fn,
                  end_factor);
        return NULL;
    }
    if (total_iters < 1) {
        ag__error(AG_ERR_INVALID_ARG, "%s: total_iters must be >= 1, got %lld", fn,
                  (long long)total_iters);
        return NULL;
    }
    ag_scheduler *s = sched_new(fn, opt, SCHED_LINEAR);
    if (!s) return NULL;
    s->u.linear.start = start_factor;
    s->u.linear.end = end_factor;
    s->u.linear.total = total_iters;
    return apply(s);
}

/* Checks SequentialLR's arguments. */
static ag_status check_sequential(ag_optimizer *opt, int n, ag_scheduler *const *schedulers,
                                  const int64_t *milestones) {
    const char *fn = "ag_sequential_lr_new";
    if (!opt || n < 1 || !schedulers || (n > 1 && !milestones))
        return ag__error(AG_ERR_INVALID_ARG,
                         "%s: needs an optimizer, n >= 1 schedulers and n - 1 milestones", fn);
    for (int i = 0; i < n; i++) {
        const ag_scheduler *c = schedulers[i];
        if (!c) return ag__error_if_none(AG_ERR_INVALID_ARG, "%s: scheduler %d is NULL", fn, i);
        if (c->opt != opt)
            return ag__error(AG_ERR_INVALID_ARG,
                             "%s: Sequential Schedulers expects all schedulers to belong to the "
                             "same optimizer, but got scheduler %d bound to another one",
                             fn, i);
        if (c->kind == SCHED_SEQUENTIAL || c->owned)
            return ag__error(AG_ERR_INVALID_ARG,
                             "%s: scheduler %d is a SequentialLR or belongs to one already", fn, i);
        for (int j = 0; j < i; j++)
            if (schedulers[j] == c)
                return ag__error(AG_ERR_INVALID_ARG, "%s: scheduler %d is scheduler %d again", fn,
                                 i, j);
    }
    /* PyTorch does not check these; out of order, its switching is not a schedule. */
    for (int i = 0; i < n - 1; i++)
        if (milestones[i] < 1 || (i > 0 && milestones[i] <= milestones[i - 1]))
            return ag__error(AG_ERR_INVALID_ARG,
                             "%s: milestones must be positive and increasing; milestone %d is "
                             "%lld",
                             fn, i, (long long)milestones[i]);
    return AG_OK;
}

ag_scheduler *ag_sequential_lr_new(ag_optimizer *opt, int n, ag_scheduler *const *schedulers,
                                   const int64_t *milestones) {
    const char *fn = "ag_sequential_lr_new";
    if (check_sequential(opt, n, schedulers, milestones) != AG_OK) return NULL;
    ag_scheduler *s = sched_new(fn, opt, SCHED_SEQUENTIAL);
    ag_scheduler **children = ag__malloc((size_t)n * sizeof *children);
    int64_t *ms = ag__malloc((size_t)n * sizeof *ms);
    if (!s || !children || !ms) {
        free(s);
        free(children);
        free(ms);
        ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        children[i] = schedulers[i];
        children[i]->owned = true;
        if (i < n - 1) ms[i] = milestones[i];
    }
    s->u.seq.n = n;
    s->u.seq.children = children;
    s->u.seq.milestones = ms;
    /* PyTorch undoes the initial step of every child and redoes the first one's. */
    children[0]->last_epoch = 0;
    apply(children[0]);
    return s;
}

ag_status ag_scheduler_step(ag_scheduler *s) {
    if (!s) return ag__error_if_none(AG_ERR_INVALID_ARG, "ag_scheduler_step: scheduler is NULL");
    s->last_epoch++;
    if (s->kind != SCHED_SEQUENTIAL) {
        apply(s);
        return AG_OK;
    }
    /* The child whose range holds the epoch (bisect_right over the milestones) runs; at its
     * milestone it restarts from epoch 0. */
    int idx = 0;
    while (idx < s->u.seq.n - 1 && s->u.seq.milestones[idx] <= s->last_epoch) idx++;
    ag_scheduler *c = s->u.seq.children[idx];
    if (idx > 0 && s->u.seq.milestones[idx - 1] == s->last_epoch)
        c->last_epoch = 0;
    else
        c->last_epoch++;
    apply(c);
    return AG_OK;
}

/* Frees s and, for a SequentialLR, its children. */
static void sched_free(ag_scheduler *s) {
    if (s->kind == SCHED_SEQUENTIAL) {
        for (int i = 0; i < s->u.seq.n; i++) sched_free(s->u.seq.children[i]);
        free(s->u.seq.children);
        free(s->u.seq.milestones);
    }
    free(s);
}

void ag_scheduler_free(ag_scheduler *s) {
    /* A child belongs to its SequentialLR, which frees it. */
    if (s && !s->owned) sched_free(s);
}
