"""Reference values for tests/test_rnn.c, from PyTorch (1.13).

Not run by the tests: run it by hand (python3 tests/reference/rnn.py) and paste its output
into the test's "reference values" block. Inputs and weights come from pattern(), which the
test computes the same way, so only the expected results are printed.
"""
import math

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)


def pattern(n, a, b, scale=1.0):
    """scale * sin(a*i + b) for i in 0..n-1 (the test's pattern())."""
    return [scale * math.sin(a * i + b) for i in range(n)]


def t(shape, a, b, scale=1.0):
    return torch.tensor(pattern(math.prod(shape), a, b, scale)).reshape(shape).requires_grad_(True)


def emit(name, tensor):
    vals = tensor.detach().reshape(-1).tolist()
    body = ", ".join(repr(float(v)) for v in vals)
    print(f"static const double {name}[] = {{{body}}};")


# ---- cells: N = 2, input 3, hidden 4; gradients of sum(h' * R_H) (+ sum(c' * R_C)) ----
N, IN, H = 2, 3, 4


def cell_inputs(gates):
    """x, h, c, w_ih, w_hh, b_ih, b_hh as the test's cell_inputs()."""
    return (t((N, IN), 0.9, 0.1), t((N, H), 0.7, 0.2, 0.5), t((N, H), 0.3, -0.4),
            t((gates * H, IN), 0.5, 0.3, 0.5), t((gates * H, H), 0.37, 0.9, 0.5),
            t((gates * H,), 1.1, 0.2, 0.3), t((gates * H,), 0.8, -0.5, 0.3))


R_H = t((N, H), 0.43, 0.6).detach()
R_C = t((N, H), 0.29, -1.1).detach()

for name, fn in (("RNN_TANH", torch.rnn_tanh_cell), ("RNN_RELU", torch.rnn_relu_cell)):
    x, h, c, w_ih, w_hh, b_ih, b_hh = cell_inputs(1)
    out = fn(x, h, w_ih, w_hh, b_ih, b_hh)
    emit(f"{name}_H", out)
    (out * R_H).sum().backward()
    for n, v in (("X", x), ("H", h), ("W_IH", w_ih), ("W_HH", w_hh), ("B_IH", b_ih), ("B_HH", b_hh)):
        emit(f"{name}_GRAD_{n}", v.grad)

x, h, c, w_ih, w_hh, b_ih, b_hh = cell_inputs(3)
out = torch.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
emit("GRU_H", out)
(out * R_H).sum().backward()
for n, v in (("X", x), ("H", h), ("W_IH", w_ih), ("W_HH", w_hh), ("B_IH", b_ih), ("B_HH", b_hh)):
    emit(f"GRU_GRAD_{n}", v.grad)
# without b_hh: b_hn no longer sits inside r * (...)
emit("GRU_NO_B_HH_H", torch.gru_cell(x, h, w_ih, w_hh, b_ih, None))

x, h, c, w_ih, w_hh, b_ih, b_hh = cell_inputs(4)
h1, c1 = torch.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
emit("LSTM_H", h1)
emit("LSTM_C", c1)
((h1 * R_H).sum() + (c1 * R_C).sum()).backward()
for n, v in (("X", x), ("H", h), ("C", c), ("W_IH", w_ih), ("W_HH", w_hh), ("B_IH", b_ih),
             ("B_HH", b_hh)):
    emit(f"LSTM_GRAD_{n}", v.grad)
h1, c1 = torch.lstm_cell(x, (h, c), w_ih, w_hh, None, b_hh)
emit("LSTM_NO_B_IH_H", h1)
emit("LSTM_NO_B_IH_C", c1)

# ---- 2-layer layers: T = 5, N = 2, input 3, hidden 4 ----
# Parameter k (PyTorch's order) of layer l is pattern(0.3 + 0.1k + 0.05l, 0.2k - l, 0.5).
# batch_first false: x [T, N, 3] with h0 (c0); batch_first true: x [N, T, 3], zero states.
# Gradients of sum(out * r_out) + sum(h_n * r_h) (+ sum(c_n * r_c)).
T, L = 5, 2


def set_params(module):
    with torch.no_grad():
        for k, (name, p) in enumerate(module.named_parameters()):
            layer = int(name[-1])
            kk = k % 4
            p.copy_(torch.tensor(pattern(p.numel(), 0.3 + 0.1 * kk + 0.05 * layer,
                                         0.2 * kk - layer, 0.5)).reshape(p.shape))


def run_layer(tag, module, batch_first, lstm):
    set_params(module)
    if batch_first:
        x = t((N, T, IN), 0.61, -0.2)
        out, state = module(x)
    else:
        x = t((T, N, IN), 0.61, -0.2)
        h0 = t((L, N, H), 0.45, 0.3, 0.5)
        c0 = t((L, N, H), 0.27, 1.0, 0.5)
        out, state = module(x, (h0, c0) if lstm else h0)
    h_n, c_n = state if lstm else (state, None)
    emit(f"{tag}_OUT", out)
    emit(f"{tag}_H_N", h_n)
    loss = (out * t(out.shape, 0.53, 0.1).detach()).sum()
    loss = loss + (h_n * t(h_n.shape, 0.71, -0.3).detach()).sum()
    if lstm:
        emit(f"{tag}_C_N", c_n)
        loss = loss + (c_n * t(c_n.shape, 0.19, 0.8).detach()).sum()
    loss.backward()
    emit(f"{tag}_GRAD_X", x.grad)
    if not batch_first:
        emit(f"{tag}_GRAD_H0", h0.grad)
        if lstm:
            emit(f"{tag}_GRAD_C0", c0.grad)
    emit(f"{tag}_GRAD_W_HH_L0", module.weight_hh_l0.grad)
    emit(f"{tag}_GRAD_B_IH_L1", module.bias_ih_l1.grad)


for batch_first in (False, True):
    suffix = "_BF" if batch_first else ""
    run_layer("RNN_L" + suffix, torch.nn.RNN(IN, H, L, batch_first=batch_first), batch_first, False)
    run_layer("RNN_RELU_L" + suffix,
              torch.nn.RNN(IN, H, L, nonlinearity="relu", batch_first=batch_first), batch_first,
              False)
    run_layer("GRU_L" + suffix, torch.nn.GRU(IN, H, L, batch_first=batch_first), batch_first, False)
    run_layer("LSTM_L" + suffix, torch.nn.LSTM(IN, H, L, batch_first=batch_first), batch_first, True)
