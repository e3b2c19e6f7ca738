/* Internal interface of the recurrent cells (ops/rnn.c), shared with the recurrent modules
 * (nn/rnn_layers.c): a layer projects the input of all time steps with one matmul and then
 * runs only the recurrent half of each step. Not installed. */
#ifndef AG_OPS_RNN_INTERNAL_H
#define AG_OPS_RNN_INTERNAL_H

#include "ag/nn.h"

/* Which recurrence a cell computes. */
typedef enum ag__rnn_mode {
    AG__RNN_TANH = 0, /* Elman RNN, tanh */
    AG__RNN_RELU = 1, /* Elman RNN, relu */
    AG__RNN_GRU = 2,  /* gates r, z, n */
    AG__RNN_LSTM = 3  /* gates i, f, g, o */
} ag__rnn_mode;

/* Gate blocks stacked in the weights' rows: 1, 3 (GRU) or 4 (LSTM). */
int ag__rnn_gates(ag__rnn_mode mode);
/* torch's name of the function of mode ("rnn_tanh_cell", "gru_cell", "lstm_cell"). */
const char *ag__rnn_cell_name(ag__rnn_mode mode);
/* The recurrent half of one step, given gates_x = x W_ih^T + b_ih ([N, G*H] or [G*H]) and
 * the state h (and c for LSTM) of matching shape [N, H] or [H]; writes h' (and c') as op
 * results of the current scope. Shapes are the caller's to check. */
ag_status ag__rnn_step(ag__rnn_mode mode, ag_tensor *gates_x, ag_tensor *h, ag_tensor *c,
                       ag_tensor *w_hh, ag_tensor *b_hh, ag_tensor **h_out, ag_tensor **c_out);

#endif
