/* Anomaly mode (torch.autograd.detect_anomaly): the forward origin of every node recorded
 * while the mode is on, and the NaN/Inf check of every gradient a backward function
 * returns. The mode itself is thread state in core/graph.c, next to grad mode. */
#define _GNU_SOURCE /* dladdr, open_memstream */
#include <dlfcn.h>
#include <execinfo.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "internal.h"

/* Any object of libag: dladdr of it names libag's load address. */
static const char self_marker;

ag_origin *ag__anomaly_origin(void) {
    ag_origin *o = ag__malloc(sizeof *o);
    if (o) o->n_frames = backtrace(o->frames, (int)(sizeof o->frames / sizeof o->frames[0]));
    return o;
}

/* "<op>(<dtype shape>, ...) called from:" and n's call stack, one frame a line, into a
 * malloc'ed string (NULL if out of memory). */
static char *describe_origin(const ag_node *n) {
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    if (!f) return NULL;
    fprintf(f, "%s(", n->op->name);
    for (int i = 0; i < n->n_inputs; i++) {
        char shape[160];
        const ag_meta *m = &n->in_meta[i];
        fprintf(f, "%s%s%s", i ? ", " : "", ag_dtype_name(m->dtype),
                ag__shape_fmt(shape, sizeof shape, m->ndim, m->shape));
    }
    fputs(") called from:", f);
    const ag_origin *o = n->origin;
    char **names = backtrace_symbols(o->frames, o->n_frames);
    Dl_info self, where;
    bool know_self = dladdr(&self_marker, &self) != 0;
    for (int i = 0; names && i < o->n_frames; i++) {
        /* Frames inside libag (recording, dispatch, the op's entry point) do not tell the
         * user where their own code made the op. */
        if (know_self && dladdr(o->frames[i], &where) && where.dli_fbase == self.dli_fbase)
            continue;
        fprintf(f, "\n  %s", names[i]);
    }
    free(names);
    /* fclose publishes text; a failed write leaves it truncated, still a valid string. */
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* Elements tested per block: a fixed count, so the compiler turns a block into a few
 * vector instructions even at -O2 (no remainder loop to cost). */
#define SCAN_BLOCK 64

/* Sets bad if one of the n words at bits has all of MASK's bits set: with MASK the
 * exponent field, an Inf or a NaN. Integer tests, block by block, then the tail. */
#define SCAN_EXPONENTS(bits, n, MASK, bad)                                                         \
    do {                                                                                           \
        int64_t i_ = 0;                                                                            \
        for (; i_ + SCAN_BLOCK <= (n) && !(bad); i_ += SCAN_BLOCK) {                               \
            unsigned block_ = 0;                                                                   \
            for (int k_ = 0; k_ < SCAN_BLOCK; k_++)                                                \
                block_ |= ((bits)[i_ + k_] & (MASK)) == (MASK);                                    \
            (bad) = block_;                                                                        \
        }                                                                                          \
        for (; i_ < (n); i_++) (bad) |= ((bits)[i_] & (MASK)) == (MASK);                           \
    } while (0)

/* Host data of a contiguous float32/float64 tensor: sets *kind if an element is an Inf or
 * a NaN. */
static void scan_host(const ag_tensor *g, const void *data, const char **kind) {
    int64_t n = ag_numel(g);
    bool bad = false;
    if (g->dtype == AG_F32)
        SCAN_EXPONENTS((const uint32_t *)data, n, 0x7f800000u, bad);
    else
        SCAN_EXPONENTS((const uint64_t *)data, n, 0x7ff0000000000000u, bad);
    if (!bad) return;
    /* Only on a failure: tell a NaN from an Inf. */
    *kind = "inf";
    for (int64_t i = 0; i < n; i++) {
        double v = g->dtype == AG_F32 ? ((const float *)data)[i] : ((const double *)data)[i];
        if (isnan(v)) *kind = "nan";
    }
}

/* Any backend: sum(g * 0) is NaN exactly when g holds an Inf or a NaN (two ops on the
 * device and one scalar read back; telling NaN from Inf costs more only on a failure). */
static ag_status scan_ops(ag_tensor *g, const char **kind) {
    double probe = 0, nans = 0;
    ag_tensor *sum = ag_sum(ag_mul_scalar(g, 0), 0, NULL, false);
    ag_status st = sum ? ag_item(sum, &probe) : ag_last_status();
    if (st != AG_OK || isfinite(probe)) return st;
    ag_tensor *count = ag_sum(ag_ne(g, g), 0, NULL, false);
    st = count ? ag_item(count, &nans) : ag_last_status();
    *kind = nans > 0 ? "nan" : "inf";
    return st;
}

/* Sets *kind to "nan" or "inf" if g holds such a value (NULL: all finite). */
static ag_status find_nonfinite(ag_tensor *g, const char **kind) {
    *kind = NULL;
    if (!ag__is_float(g->dtype)) return AG_OK;
    const void *data = ag_is_contiguous(g) ? ag_data_ptr(g) : NULL;
    if (data) {
        scan_host(g, data, kind);
        return AG_OK;
    }
    /* The probe is no part of any graph, even in a create_graph backward. */
    bool prev = ag_set_grad_enabled(false);
    ag_status st = scan_ops(g, kind);
    ag_set_grad_enabled(prev);
    return st;
}

ag_status ag__anomaly_check(const ag_node *n, ag_tensor *const *grads) {
    for (int i = 0; i < n->n_inputs; i++) {
        if (!grads[i]) continue;
        const char *kind;
        ag_status st = find_nonfinite(grads[i], &kind);
        if (st != AG_OK) return st;
        if (!kind) continue;
        char shape[160];
        char *origin = n->origin ? describe_origin(n) : NULL;
        /* Backward output k is the gradient of forward input k, as in PyTorch. */
        st = ag__error(AG_ERR_ANOMALY,
                       "Function '%s backward' returned %s values in its %dth output (input %d "
                       "of %s, shape %s).\nThe forward call that created it:\n%s",
                       n->op->name, kind, i, i, n->op->name,
                       ag__shape_fmt(shape, sizeof shape, grads[i]->ndim, grads[i]->shape),
                       origin      ? origin
                       : n->origin ? "(out of memory describing it)"
                                   : "(unknown: anomaly mode was off when the forward ran)");
        free(origin);
        return st;
    }
    return AG_OK;
}
