/* Recurrent module kinds: RNNCell, GRUCell, LSTMCell (one step) and RNN, GRU, LSTM (stacked
 * layers over a sequence), with PyTorch's parameter names, order and init. The steps are
 * the cells of ops/rnn.c; a layer projects the inputs of all time steps with one linear op
 * and runs only the recurrent half (ag__rnn_step) per step, as cuDNN and PyTorch do. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "module_internal.h"
#include "../ops/rnn_internal.h"

typedef struct recurrent {
    ag_module base;
    ag__rnn_mode mode;
    int64_t input, hidden;  /* features in, hidden size H */
    int layers;             /* stacked layers (1 for a cell) */
    bool bias, batch_first; /* has bias_ih/bias_hh; x is [N, T, in] */
} recurrent;

/* Parameter `which` (0 weight_ih, 1 weight_hh, 2 bias_ih, 3 bias_hh) of layer l, or NULL
 * for a bias the module lacks. Parameters are stored in PyTorch's order, layer by layer. */
static ag_tensor *param(const recurrent *r, int layer, int which) {
    const int per_layer = r->bias ? 4 : 2;
    if (which >= per_layer) return NULL;
    return r->base.params[layer * per_layer + which].tensor;
}

/* PyTorch's repr: "LSTM(28, 64, num_layers=2, batch_first=true)". */
static void recurrent_describe(const ag_module *m, char *buf, size_t size) {
    const recurrent *r = (const recurrent *)m;
    int n = snprintf(buf, size, "%s(%lld, %lld", m->kind->name, (long long)r->input,
                     (long long)r->hidden);
    char extra[160] = "";
    if (r->layers != 1) snprintf(extra, sizeof extra, ", num_layers=%d", r->layers);
    if (r->mode == AG__RNN_RELU)
        strncat(extra, ", nonlinearity='relu'", sizeof extra - strlen(extra) - 1);
    if (!r->bias) strncat(extra, ", bias=false", sizeof extra - strlen(extra) - 1);
    if (r->batch_first) strncat(extra, ", batch_first=true", sizeof extra - strlen(extra) - 1);
    if (n >= 0 && (size_t)n < size) snprintf(buf + n, size - (size_t)n, "%s)", extra);
}

/* Prefixes the pending error with m's description, as ag_module_forward does for the
 * forward of any module. */
static ag_status name_error(const ag_module *m) {
    ag_status st = ag_last_status();
    if (st == AG_OK) return st;
    char desc[160], msg[4096]; /* rewritten from a copy: ag__error writes over it */
    recurrent_describe(m, desc, sizeof desc);
    if (strstr(ag_last_error(), desc)) return st;
    snprintf(msg, sizeof msg, "%s", ag_last_error());
    return ag__error(st, "%s: %s", desc, msg);
}

/* Zeros of the given shape in x's dtype and on x's device: the state PyTorch uses when
 * none is given. */
static ag_tensor *zero_state(const ag_tensor *x, int ndim, const int64_t *shape) {
    ag_tensor *z = ag_zeros(ag_dtype_of(x), ndim, shape);
    ag_device want = ag_device_of(x), have = z ? ag_device_of(z) : want;
    if (have.backend == want.backend && have.index == want.index) return z;
    return ag_to_device(z, want);
}

/* Hands each non-NULL results[i] (owned by `scope`) to the enclosing scope through outs[i]
 * (skipped where outs[i] is NULL) and ends `scope`. */
static void return_results(ag_scope *scope, int n, ag_tensor **results, ag_tensor ***outs) {
    for (int i = 0; i < n; i++)
        if (outs[i] && results[i]) ag_keep(results[i]);
    ag_scope_end(scope);
    for (int i = 0; i < n; i++)
        if (outs[i]) *outs[i] = results[i] ? ag__scope_adopt(results[i]) : NULL;
}

/* ---- cells ---- */

/* One step of a cell module on x with states h, c (NULL: zeros); no name prefix. */
static ag_status cell_step(const recurrent *r, ag_tensor *x, ag_tensor *h, ag_tensor *c,
                           ag_tensor **h_out, ag_tensor **c_out) {
    ag_scope *scope = ag_scope_begin();
    if (!scope) return ag_last_status();
    /* Zeros shaped for x; a wrong x is reported by the cell's own checks. */
    const int64_t state_shape[2] = {ag_ndim(x) == 2 ? ag_size(x, 0) : r->hidden, r->hidden};
    const int state_ndim = ag_ndim(x) == 2 ? 2 : 1;
    if (!h) h = zero_state(x, state_ndim, state_ndim == 2 ? state_shape : &r->hidden);
    if (r->mode == AG__RNN_LSTM && !c)
        c = zero_state(x, state_ndim, state_ndim == 2 ? state_shape : &r->hidden);
    ag_tensor *results[2] = {NULL, NULL};
    ag_tensor *w_ih = param(r, 0, 0), *w_hh = param(r, 0, 1);
    ag_tensor *b_ih = param(r, 0, 2), *b_hh = param(r, 0, 3);
    ag_status st = AG_OK;
    if (r->mode == AG__RNN_LSTM)
        st = ag_lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh, &results[0], &results[1]);
    else if (r->mode == AG__RNN_GRU)
        results[0] = ag_gru_cell(x, h, w_ih, w_hh, b_ih, b_hh);
    else
        results[0] = ag_rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh,
                                 r->mode == AG__RNN_RELU ? AG_RNN_RELU : AG_RNN_TANH);
    if (!results[0] && st == AG_OK) st = ag_last_status();
    if (st != AG_OK) {
        ag_scope_end(scope);
        return st;
    }
    ag_tensor **wanted[2] = {h_out, c_out};
    return_results(scope, 2, results, wanted);
    return AG_OK;
}

static ag_tensor *cell_forward(ag_module *m, ag_tensor *x) {
    ag_tensor *h = NULL;
    cell_step((const recurrent *)m, x, NULL, NULL, &h, NULL);
    return h;
}

/* ---- layers ---- */

/* Error for a state (h0 or c0) of the wrong shape; returns the status. */
static ag_status bad_state(const char *role, const ag_tensor *state, int ndim,
                           const int64_t *expected) {
    char got[96];
    ag_shape_str(state, got, sizeof got);
    if (ndim == 3)
        return ag__error(
            AG_ERR_SHAPE, "%s %s should be [%lld, %lld, %lld] (num_layers, batch, hidden_size)",
            role, got, (long long)expected[0], (long long)expected[1], (long long)expected[2]);
    return ag__error(AG_ERR_SHAPE,
                     "%s %s should be [%lld, %lld] (num_layers, hidden_size) for an unbatched "
                     "input",
                     role, got, (long long)expected[0], (long long)expected[1]);
}

/* Checks x, h0 and c0 against the module; AG_OK or an error without the module prefix. */
static ag_status check_sequence(const recurrent *r, const ag_tensor *x, const ag_tensor *h0,
                                const ag_tensor *c0) {
    char sx[96];
    ag_shape_str(x, sx, sizeof sx);
    if (ag_ndim(x) != 2 && ag_ndim(x) != 3)
        return ag__error(
            AG_ERR_SHAPE, "expected an input [%s, %lld] or unbatched [T, %lld], got %s",
            r->batch_first ? "N, T" : "T, N", (long long)r->input, (long long)r->input, sx);
    if (ag_size(x, -1) != r->input)
        return ag__error(AG_ERR_SHAPE, "input %s has %lld features, expected input_size %lld", sx,
                         (long long)ag_size(x, -1), (long long)r->input);
    const bool batched = ag_ndim(x) == 3;
    const int time_dim = batched && r->batch_first ? 1 : 0;
    if (ag_size(x, time_dim) == 0) return ag__error(AG_ERR_SHAPE, "input %s has no time steps", sx);
    if (c0 && r->mode != AG__RNN_LSTM)
        return ag__error(AG_ERR_INVALID_ARG, "a cell state c0 is only for LSTM");
    const int64_t expected[3] = {r->layers, batched ? ag_size(x, 1 - time_dim) : r->hidden,
                                 r->hidden};
    const int ndim = batched ? 3 : 2;
    const ag_tensor *states[2] = {h0, c0};
    for (int i = 0; i < 2; i++) {
        const ag_tensor *s = states[i];
        if (!s) continue;
        bool fits = ag_ndim(s) == ndim;
        for (int d = 0; fits && d < ndim; d++) fits = ag_size(s, d) == expected[d];
        if (!fits) return bad_state(i ? "c0" : "h0", s, ndim, expected);
    }
    return AG_OK;
}

/* Runs all layers over all time steps; results as op results of the caller's scope (out
 * pointers may be NULL); errors carry no module prefix. */
static ag_status run_sequence(const recurrent *r, ag_tensor *x, ag_tensor *h0, ag_tensor *c0,
                              ag_tensor **output, ag_tensor **h_n, ag_tensor **c_n) {
    ag_status st = check_sequence(r, x, h0, c0);
    if (st != AG_OK) return st;
    const bool batched = ag_ndim(x) == 3, lstm = r->mode == AG__RNN_LSTM;
    ag_scope *scope = ag_scope_begin();
    if (!scope) return ag_last_status();
    /* Time-major inside: step t is ag_select(seq, 0, t). */
    ag_tensor *seq = batched && r->batch_first ? ag_transpose(x, 0, 1) : x;
    if (!seq) { /* its sizes are read below */
        ag_scope_end(scope);
        return ag_last_status();
    }
    const int64_t steps = ag_size(x, batched && r->batch_first ? 1 : 0);
    const int64_t state_shape[2] = {batched ? ag_size(seq, 1) : r->hidden, r->hidden};
    const int state_ndim = batched ? 2 : 1;
    const int64_t *zero_shape = batched ? state_shape : &r->hidden;
    ag_tensor **outs = ag__malloc((size_t)steps * sizeof *outs);
    ag_tensor **finals = ag__malloc(2 * (size_t)r->layers * sizeof *finals); /* h then c */
    if (!outs || !finals)
        st = ag__error(AG_ERR_OUT_OF_MEMORY, "out of host memory for %lld steps", (long long)steps);
    for (int l = 0; st == AG_OK && l < r->layers; l++) {
        /* One matmul projects the inputs of every time step. */
        ag_tensor *gates_x = ag_linear(seq, param(r, l, 0), param(r, l, 2));
        ag_tensor *h = h0 ? ag_select(h0, 0, l) : zero_state(x, state_ndim, zero_shape);
        ag_tensor *c = NULL;
        if (lstm) c = c0 ? ag_select(c0, 0, l) : zero_state(x, state_ndim, zero_shape);
        for (int64_t t = 0; st == AG_OK && t < steps; t++) {
            st = ag__rnn_step(r->mode, ag_select(gates_x, 0, t), h, c, param(r, l, 1),
                              param(r, l, 3), &h, lstm ? &c : NULL);
            outs[t] = h;
        }
        if (st != AG_OK) break;
        /* The last layer's sequence is only the output: skip it when nobody asked. */
        if (output || l + 1 < r->layers) {
            seq = ag_stack((int)steps, outs, 0);
            if (!seq) st = ag_last_status();
        }
        finals[l] = h;
        finals[r->layers + l] = c;
    }
    ag_tensor *results[3] = {NULL, NULL, NULL};
    if (st == AG_OK) {
        if (output) results[0] = batched && r->batch_first ? ag_transpose(seq, 0, 1) : seq;
        if (h_n) results[1] = ag_stack(r->layers, finals, 0);
        if (lstm && c_n) results[2] = ag_stack(r->layers, finals + r->layers, 0);
        if ((output && !results[0]) || (h_n && !results[1]) || (lstm && c_n && !results[2]))
            st = ag_last_status();
    }
    free(outs);
    free(finals);
    if (st != AG_OK) {
        ag_scope_end(scope);
        return st;
    }
    ag_tensor **wanted[3] = {output, h_n, c_n};
    return_results(scope, 3, results, wanted);
    return AG_OK;
}

static ag_tensor *sequence_forward(ag_module *m, ag_tensor *x) {
    ag_tensor *output = NULL;
    run_sequence((const recurrent *)m, x, NULL, NULL, &output, NULL, NULL);
    return output;
}

/* ---- kinds and constructors ---- */

static const ag__module_kind rnn_cell_kind = {"RNNCell", cell_forward, recurrent_describe, NULL};
static const ag__module_kind gru_cell_kind = {"GRUCell", cell_forward, recurrent_describe, NULL};
static const ag__module_kind lstm_cell_kind = {"LSTMCell", cell_forward, recurrent_describe, NULL};
static const ag__module_kind rnn_kind = {"RNN", sequence_forward, recurrent_describe, NULL};
static const ag__module_kind gru_kind = {"GRU", sequence_forward, recurrent_describe, NULL};
static const ag__module_kind lstm_kind = {"LSTM", sequence_forward, recurrent_describe, NULL};

/* m as a recurrent module of the wanted sort (cell or sequence), else NULL with an error
 * naming the caller. */
static recurrent *as_recurrent(ag_module *m, bool cell, const char *caller) {
    const ag__module_kind *cells[] = {&rnn_cell_kind, &gru_cell_kind, &lstm_cell_kind};
    const ag__module_kind *layers[] = {&rnn_kind, &gru_kind, &lstm_kind};
    for (int i = 0; m && i < 3; i++)
        if (m->kind == (cell ? cells[i] : layers[i])) return (recurrent *)m;
    ag__error(AG_ERR_INVALID_ARG, "%s: %s%s is not an %s module", caller,
              m ? ag_module_kind(m) : "the module", m ? "" : " (NULL)",
              cell ? "RNNCell, GRUCell or LSTMCell" : "RNN, GRU or LSTM");
    return NULL;
}

/* A recurrent module with its parameters drawn in PyTorch's order; NULL with an error for
 * non-positive sizes. */
static ag_module *recurrent_new(const ag__module_kind *kind, ag__rnn_mode mode, bool is_cell,
                                int64_t input, int64_t hidden, int layers, bool bias,
                                bool batch_first, ag_generator *gen) {
    if (input <= 0 || hidden <= 0 || layers < 1) {
        ag__error(AG_ERR_INVALID_ARG,
                  "%s: input_size (%lld) and hidden_size (%lld) must be positive and "
                  "num_layers (%d) at least 1",
                  kind->name, (long long)input, (long long)hidden, layers);
        return NULL;
    }
    recurrent *r = ag__module_alloc(kind, sizeof *r);
    if (!r) return NULL;
    r->mode = mode;
    r->input = input;
    r->hidden = hidden;
    r->layers = layers;
    r->bias = bias;
    r->batch_first = batch_first;
    /* reset_parameters(): every parameter from U(-1/sqrt(H), 1/sqrt(H)). */
    const double bound = 1.0 / sqrt((double)hidden);
    const int64_t rows = ag__rnn_gates(mode) * hidden;
    static const char *const names[] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
    ag_scope *scope = ag_scope_begin();
    bool ok = scope != NULL;
    for (int l = 0; ok && l < layers; l++)
        for (int which = 0; ok && which < (bias ? 4 : 2); which++) {
            const int64_t shape[2] = {rows, which == 0 ? (l ? hidden : input) : hidden};
            char name[48];
            if (is_cell)
                snprintf(name, sizeof name, "%s", names[which]);
            else
                snprintf(name, sizeof name, "%s_l%d", names[which], l);
            ag_tensor *t = ag_uniform(gen, AG_F32, which < 2 ? 2 : 1, shape, -bound, bound);
            ok = ag__module_add_parameter(&r->base, name, t) != NULL;
        }
    ag_scope_end(scope);
    if (ok) return &r->base;
    ag_module_free(&r->base);
    return NULL;
}

/* Checks the nonlinearity of an RNN or RNNCell; the mode it selects, or -1 with an error. */
static int elman_mode(const char *kind, ag_rnn_nonlinearity nonlinearity) {
    if (nonlinearity == AG_RNN_TANH) return AG__RNN_TANH;
    if (nonlinearity == AG_RNN_RELU) return AG__RNN_RELU;
    ag__error(AG_ERR_INVALID_ARG, "%s: %d is not a nonlinearity (tanh or relu)", kind,
              (int)nonlinearity);
    return -1;
}

ag_module *ag_rnn_cell_new(int64_t input_size, int64_t hidden_size, bool bias,
                           ag_rnn_nonlinearity nonlinearity, ag_generator *gen) {
    int mode = elman_mode("RNNCell", nonlinearity);
    if (mode < 0) return NULL;
    return recurrent_new(&rnn_cell_kind, (ag__rnn_mode)mode, true, input_size, hidden_size, 1, bias,
                         false, gen);
}

ag_module *ag_gru_cell_new(int64_t input_size, int64_t hidden_size, bool bias, ag_generator *gen) {
    return recurrent_new(&gru_cell_kind, AG__RNN_GRU, true, input_size, hidden_size, 1, bias, false,
                         gen);
}

ag_module *ag_lstm_cell_new(int64_t input_size, int64_t hidden_size, bool bias, ag_generator *gen) {
    return recurrent_new(&lstm_cell_kind, AG__RNN_LSTM, true, input_size, hidden_size, 1, bias,
                         false, gen);
}

ag_module *ag_rnn_new(int64_t input_size, int64_t hidden_size, int num_layers,
                      ag_rnn_nonlinearity nonlinearity, bool bias, bool batch_first,
                      ag_generator *gen) {
    int mode = elman_mode("RNN", nonlinearity);
    if (mode < 0) return NULL;
    return recurrent_new(&rnn_kind, (ag__rnn_mode)mode, false, input_size, hidden_size, num_layers,
                         bias, batch_first, gen);
}

ag_module *ag_gru_new(int64_t input_size, int64_t hidden_size, int num_layers, bool bias,
                      bool batch_first, ag_generator *gen) {
    return recurrent_new(&gru_kind, AG__RNN_GRU, false, input_size, hidden_size, num_layers, bias,
                         batch_first, gen);
}

ag_module *ag_lstm_new(int64_t input_size, int64_t hidden_size, int num_layers, bool bias,
                       bool batch_first, ag_generator *gen) {
    return recurrent_new(&lstm_kind, AG__RNN_LSTM, false, input_size, hidden_size, num_layers, bias,
                         batch_first, gen);
}

/* ---- explicit forwards ---- */

/* Sets *out to NULL unless out is NULL, so a failed call leaves no stale result. */
static void clear_output(ag_tensor **out) {
    if (out) *out = NULL;
}

/* Error for a NULL argument of m's forward; as for any op, a NULL input from a failed op
 * upstream keeps that op's error. */
static ag_status null_input(const ag_module *m, const char *what) {
    char desc[160];
    recurrent_describe(m, desc, sizeof desc);
    return ag__error_if_none(AG_ERR_INVALID_ARG, "%s: the %s is NULL", desc, what);
}

ag_status ag_rnn_forward(ag_module *m, ag_tensor *x, ag_tensor *h0, ag_tensor *c0,
                         ag_tensor **output, ag_tensor **h_n, ag_tensor **c_n) {
    clear_output(output);
    clear_output(h_n);
    clear_output(c_n);
    recurrent *r = as_recurrent(m, false, "ag_rnn_forward");
    if (!r) return ag_last_status();
    if (!x) return null_input(m, "input");
    if (run_sequence(r, x, h0, c0, output, h_n, c_n) == AG_OK) return AG_OK;
    return name_error(m);
}

ag_status ag_rnn_cell_forward(ag_module *m, ag_tensor *x, ag_tensor *h, ag_tensor *c,
                              ag_tensor **h_out, ag_tensor **c_out) {
    clear_output(h_out);
    clear_output(c_out);
    recurrent *r = as_recurrent(m, true, "ag_rnn_cell_forward");
    if (!r) return ag_last_status();
    if (!x || !h_out) return null_input(m, x ? "h_out pointer" : "input");
    if (c && r->mode != AG__RNN_LSTM) {
        ag__error(AG_ERR_INVALID_ARG, "a cell state c is only for LSTMCell");
        return name_error(m);
    }
    if (cell_step(r, x, h, c, h_out, r->mode == AG__RNN_LSTM ? c_out : NULL) == AG_OK) return AG_OK;
    return name_error(m);
}
