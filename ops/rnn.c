/* Recurrent cells (include/ag/nn.h): one time step of an Elman RNN, a GRU and an LSTM with
 * PyTorch's formulas, gate order and two biases.
 *
 * Each cell is a composite of differentiable ops (linear, slice, sigmoid, tanh, relu, mul,
 * add), so backward, double backward and forward-mode AD come from those ops on every
 * backend and no kernel is needed. Both matmuls of a step are single linear ops over all
 * gates stacked in the weight rows; the gates are then views (slices) of the result. */
#include <stdio.h>
#include "rnn_internal.h"
#include "ops_common.h"

int ag__rnn_gates(ag__rnn_mode mode) {
    return mode == AG__RNN_GRU ? 3 : mode == AG__RNN_LSTM ? 4 : 1;
}

const char *ag__rnn_cell_name(ag__rnn_mode mode) {
    static const char *const names[] = {"rnn_tanh_cell", "rnn_relu_cell", "gru_cell", "lstm_cell"};
    return names[mode];
}

/* Gate k (of extent hidden) of gates [..., G*H]: a view along the last dim. */
static ag_tensor *gate(ag_tensor *gates, int64_t k, int64_t count, int64_t hidden) {
    return ag_slice(gates, ag_ndim(gates) - 1, k * hidden, (k + count) * hidden, 1);
}

ag_status ag__rnn_step(ag__rnn_mode mode, ag_tensor *gates_x, ag_tensor *h, ag_tensor *c,
                       ag_tensor *w_hh, ag_tensor *b_hh, ag_tensor **h_out, ag_tensor **c_out) {
    const int64_t hidden = ag_size(w_hh, 1);
    ag_tensor *gates_h = ag_linear(h, w_hh, b_hh);
    ag_tensor *h_new = NULL, *c_new = NULL;
    switch (mode) {
    case AG__RNN_TANH:
        h_new = ag_tanh(ag_add(gates_x, gates_h));
        break;
    case AG__RNN_RELU:
        h_new = ag_relu(ag_add(gates_x, gates_h));
        break;
    case AG__RNN_GRU: {
        /* r and z are adjacent blocks: one add and one sigmoid serve both. */
        ag_tensor *rz =
            ag_sigmoid(ag_add(gate(gates_x, 0, 2, hidden), gate(gates_h, 0, 2, hidden)));
        ag_tensor *r = gate(rz, 0, 1, hidden), *z = gate(rz, 1, 1, hidden);
        /* b_hn sits inside the reset gate's product, as in PyTorch (and cuDNN). */
        ag_tensor *n =
            ag_tanh(ag_add(gate(gates_x, 2, 1, hidden), ag_mul(r, gate(gates_h, 2, 1, hidden))));
        /* (1 - z) * n + z * h, with one op fewer. */
        h_new = ag_add(n, ag_mul(z, ag_sub(h, n)));
        break;
    }
    case AG__RNN_LSTM: {
        ag_tensor *gates = ag_add(gates_x, gates_h);
        /* i and f are adjacent blocks: one sigmoid serves both. */
        ag_tensor *in_forget = ag_sigmoid(gate(gates, 0, 2, hidden));
        ag_tensor *g = ag_tanh(gate(gates, 2, 1, hidden));
        ag_tensor *o = ag_sigmoid(gate(gates, 3, 1, hidden));
        c_new = ag_add(ag_mul(gate(in_forget, 1, 1, hidden), c),
                       ag_mul(gate(in_forget, 0, 1, hidden), g));
        h_new = ag_mul(o, ag_tanh(c_new));
        break;
    }
    }
    *h_out = h_new;
    if (c_out) *c_out = c_new;
    return h_new && (mode != AG__RNN_LSTM || c_new) ? AG_OK : ag_last_status();
}

/* ---- argument checks ---- */

/* Sets a shape error "<cell>: ..." and returns false. */
static bool shape_error(ag__rnn_mode mode, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static bool shape_error(ag__rnn_mode mode, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ag__error(AG_ERR_SHAPE, "%s: %s", ag__rnn_cell_name(mode), msg);
    return false;
}

/* Whether t is a vector of extent n (a bias of G*H). */
static bool is_vector_of(const ag_tensor *t, int64_t n) {
    return ag_ndim(t) == 1 && ag_size(t, 0) == n;
}

/* Whether a state (h or c) has the shape the input asks for: [N, H] for x [N, in], [H] for
 * an unbatched x [in]. */
static bool state_fits(const ag_tensor *state, const ag_tensor *x, int64_t hidden) {
    if (ag_ndim(x) == 1) return is_vector_of(state, hidden);
    return ag_ndim(state) == 2 && ag_size(state, 0) == ag_size(x, 0) && ag_size(state, 1) == hidden;
}

/* True if the inputs of a cell fit together; else false with an error naming the cell,
 * the tensor at fault, its shape and the one expected. */
static bool check_cell(ag__rnn_mode mode, ag_tensor *x, ag_tensor *h, ag_tensor *c, ag_tensor *w_ih,
                       ag_tensor *w_hh, ag_tensor *b_ih, ag_tensor *b_hh) {
    const char *name = ag__rnn_cell_name(mode);
    const char *roles[] = {"input", "hidden state h", "weight_ih", "weight_hh", "cell state c"};
    ag_tensor *required[] = {x, h, w_ih, w_hh, c};
    for (int i = 0; i < (mode == AG__RNN_LSTM ? 5 : 4); i++)
        if (!required[i]) {
            ag__error_if_none(AG_ERR_INVALID_ARG, "%s: the %s is NULL", name, roles[i]);
            return false;
        }
    char sx[96], sh[96], sw[96], sw_hh[96], sb[96];
    ag_shape_str(x, sx, sizeof sx);
    ag_shape_str(w_ih, sw, sizeof sw);
    ag_shape_str(w_hh, sw_hh, sizeof sw_hh);
    const int64_t gates = ag__rnn_gates(mode);
    if (ag_ndim(x) != 1 && ag_ndim(x) != 2)
        return shape_error(mode, "expected an input [N, input_size] or [input_size], got %s", sx);
    if (ag_ndim(w_ih) != 2 || ag_size(w_ih, 0) == 0 || ag_size(w_ih, 0) % gates)
        return shape_error(mode, "weight_ih %s must be [%lld * hidden_size, input_size]", sw,
                           (long long)gates);
    const int64_t hidden = ag_size(w_ih, 0) / gates, features = ag_size(w_ih, 1);
    if (ag_size(x, -1) != features)
        return shape_error(mode, "input %s has %lld features, but weight_ih %s expects %lld", sx,
                           (long long)ag_size(x, -1), sw, (long long)features);
    if (ag_ndim(w_hh) != 2 || ag_size(w_hh, 0) != gates * hidden || ag_size(w_hh, 1) != hidden)
        return shape_error(mode, "weight_hh %s should be [%lld, %lld] for hidden_size %lld", sw_hh,
                           (long long)(gates * hidden), (long long)hidden, (long long)hidden);
    ag_tensor *biases[2] = {b_ih, b_hh};
    for (int i = 0; i < 2; i++) {
        if (!biases[i] || is_vector_of(biases[i], gates * hidden)) continue;
        ag_shape_str(biases[i], sb, sizeof sb);
        return shape_error(mode, "bias_%s %s should be [%lld]", i ? "hh" : "ih", sb,
                           (long long)(gates * hidden));
    }
    ag_tensor *states[2] = {h, c};
    for (int i = 0; i < (mode == AG__RNN_LSTM ? 2 : 1); i++) {
        if (state_fits(states[i], x, hidden)) continue;
        ag_shape_str(states[i], sh, sizeof sh);
        if (ag_ndim(x) == 1)
            return shape_error(mode, "%s %s should be [%lld] for the unbatched input %s",
                               roles[i ? 4 : 1], sh, (long long)hidden, sx);
        return shape_error(mode, "%s %s should be [%lld, %lld] for input %s", roles[i ? 4 : 1], sh,
                           (long long)ag_size(x, 0), (long long)hidden, sx);
    }
    return true;
}

/* ---- public cells ---- */

/* Runs a checked cell in a scope of its own; h' (and c') are handed to the caller's. */
static ag_status run_cell(ag__rnn_mode mode, ag_tensor *x, ag_tensor *h, ag_tensor *c,
                          ag_tensor *w_ih, ag_tensor *w_hh, ag_tensor *b_ih, ag_tensor *b_hh,
                          ag_tensor **h_out, ag_tensor **c_out) {
    *h_out = NULL;
    if (c_out) *c_out = NULL;
    if (!check_cell(mode, x, h, c, w_ih, w_hh, b_ih, b_hh)) return ag_last_status();
    ag_scope *scope = ag_scope_begin();
    if (!scope) return ag_last_status();
    ag_tensor *h_new = NULL, *c_new = NULL;
    ag__context_enter(ag__rnn_cell_name(mode), 7, (ag_tensor *[]){x, h, c, w_ih, w_hh, b_ih, b_hh});
    ag_status st = ag__rnn_step(mode, ag_linear(x, w_ih, b_ih), h, c, w_hh, b_hh, &h_new,
                                c_out ? &c_new : NULL);
    ag__context_exit();
    if (st != AG_OK) {
        ag_scope_end(scope);
        return st;
    }
    /* Keep both results past the scope, then give them to the enclosing one. */
    ag_keep(h_new);
    if (c_new) ag_keep(c_new);
    ag_scope_end(scope);
    *h_out = ag__scope_adopt(h_new);
    if (c_out) *c_out = c_new ? ag__scope_adopt(c_new) : NULL;
    return AG_OK;
}

ag_tensor *ag_rnn_cell(ag_tensor *x, ag_tensor *h, ag_tensor *w_ih, ag_tensor *w_hh,
                       ag_tensor *b_ih, ag_tensor *b_hh, ag_rnn_nonlinearity nonlinearity) {
    if (nonlinearity != AG_RNN_TANH && nonlinearity != AG_RNN_RELU) {
        ag__error(AG_ERR_INVALID_ARG, "rnn_cell: %d is not a nonlinearity (tanh or relu)",
                  (int)nonlinearity);
        return NULL;
    }
    ag_tensor *h_new;
    run_cell(nonlinearity == AG_RNN_TANH ? AG__RNN_TANH : AG__RNN_RELU, x, h, NULL, w_ih, w_hh,
             b_ih, b_hh, &h_new, NULL);
    return h_new;
}

ag_tensor *ag_gru_cell(ag_tensor *x, ag_tensor *h, ag_tensor *w_ih, ag_tensor *w_hh,
                       ag_tensor *b_ih, ag_tensor *b_hh) {
    ag_tensor *h_new;
    run_cell(AG__RNN_GRU, x, h, NULL, w_ih, w_hh, b_ih, b_hh, &h_new, NULL);
    return h_new;
}

ag_status ag_lstm_cell(ag_tensor *x, ag_tensor *h, ag_tensor *c, ag_tensor *w_ih, ag_tensor *w_hh,
                       ag_tensor *b_ih, ag_tensor *b_hh, ag_tensor **h_out, ag_tensor **c_out) {
    if (!h_out || !c_out) {
        if (h_out) *h_out = NULL;
        if (c_out) *c_out = NULL;
        return ag__error(AG_ERR_INVALID_ARG, "lstm_cell: h_out and c_out must not be NULL");
    }
    return run_cell(AG__RNN_LSTM, x, h, c, w_ih, w_hh, b_ih, b_hh, h_out, c_out);
}
