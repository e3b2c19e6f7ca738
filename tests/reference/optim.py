#!/usr/bin/env python3
"""Reference numbers of tests/test_optim.c, from PyTorch 1.13 (float64, CPU).

Prints C arrays to paste into the test: parameters after each of 5 steps of SGD, Adam and
AdamW in several settings; the lr of each scheduler right after creation and after each of
12 steps; and gradient clipping cases. Run: /usr/bin/python3 tests/reference/optim.py
"""
import math
import warnings

import torch

torch.set_default_dtype(torch.float64)
warnings.filterwarnings("ignore")

STEPS = 5
# A [3, 2] and a [2] parameter; values are exact in binary so C and Python start equal.
W0 = [[0.5, -1.25], [2.0, 0.75], [-0.5, 1.5]]
B0 = [0.25, -0.75]


def grad_value(step, j):
    """Gradient of flattened element j (W's 6, then B's 2) at step; exact in binary."""
    return ((j * 7 + step * 5) % 13 - 6) * 0.125


def c_double(x):
    if math.isnan(x):
        return "NAN"
    if math.isinf(x):
        return "INFINITY" if x > 0 else "-INFINITY"
    return repr(float(x))


def c_array(name, rows):
    dims = "".join(f"[{n}]" for n in ([len(rows), len(rows[0])] if isinstance(rows[0], list)
                                      else [len(rows)]))
    if isinstance(rows[0], list):
        body = ",\n".join("    {" + ", ".join(c_double(v) for v in r) + "}" for r in rows)
    else:
        body = "    " + ", ".join(c_double(v) for v in rows)
    print(f"static const double {name}{dims} = {{\n{body}}};")


def run_optimizer(make):
    w = torch.tensor(W0, requires_grad=True)
    b = torch.tensor(B0, requires_grad=True)
    opt = make([w, b])
    rows = []
    for k in range(STEPS):
        g = [grad_value(k, j) for j in range(8)]
        w.grad = torch.tensor(g[:6]).reshape(3, 2)
        b.grad = torch.tensor(g[6:])
        opt.step()
        rows.append(w.detach().flatten().tolist() + b.detach().tolist())
    return rows


OPTIMIZERS = [
    ("SGD_PLAIN", lambda p: torch.optim.SGD(p, lr=0.1)),
    ("SGD_MOMENTUM", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.25)),
    ("SGD_NESTEROV",
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
    ("SGD_WEIGHT_DECAY", lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=0.1)),
    ("ADAM", lambda p: torch.optim.Adam(p, lr=0.01)),
    ("ADAM_WEIGHT_DECAY",
     lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("ADAMW", lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)),
    ("ADAMW_DEFAULTS", lambda p: torch.optim.AdamW(p)),
]


def run_scheduler(make, steps=12):
    w = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    sched = make(opt)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(steps):
        opt.step()  # no gradients: nothing changes, but PyTorch expects this order
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


lr_sched = torch.optim.lr_scheduler
SCHEDULERS = [
    ("LR_STEP", lambda o: lr_sched.StepLR(o, step_size=3, gamma=0.5)),
    ("LR_COSINE", lambda o: lr_sched.CosineAnnealingLR(o, T_max=10, eta_min=0.001)),
    ("LR_LINEAR", lambda o: lr_sched.LinearLR(o, start_factor=0.25, end_factor=1.0,
                                              total_iters=4)),
    ("LR_SEQUENTIAL", lambda o: lr_sched.SequentialLR(
        o, [lr_sched.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=3),
            lr_sched.CosineAnnealingLR(o, T_max=8, eta_min=0.0)], milestones=[3])),
]

# Gradient clipping: gradients of W [3, 2] and B [2] (a third parameter has none).
CLIP_GRADS = [1.5, -2.0, 0.5, 3.0, -0.25, 1.0, 2.5, -0.75]
CLIP_CASES = [  # name, max_norm, norm_type, index of an element replaced by value (or None)
    ("CLIP_L2", 1.0, 2.0, None),
    ("CLIP_L2_NO_CLIP", 100.0, 2.0, None),
    ("CLIP_INF", 0.5, math.inf, None),
    ("CLIP_NAN", 1.0, 2.0, (3, math.nan)),
    ("CLIP_INF_GRAD", 1.0, 2.0, (6, math.inf)),
]


def run_clip(max_norm, norm_type, replace):
    g = list(CLIP_GRADS)
    if replace:
        g[replace[0]] = replace[1]
    w = torch.zeros(3, 2, requires_grad=True)
    b = torch.zeros(2, requires_grad=True)
    c = torch.zeros(2, requires_grad=True)
    w.grad = torch.tensor(g[:6]).reshape(3, 2)
    b.grad = torch.tensor(g[6:])
    total = torch.nn.utils.clip_grad_norm_([w, b, c], max_norm, norm_type)
    assert c.grad is None
    return [float(total)] + w.grad.flatten().tolist() + b.grad.tolist()


def main():
    print(f"/* torch {torch.__version__}: tests/reference/optim.py */")
    for name, make in OPTIMIZERS:
        c_array(name, run_optimizer(make))
    for name, make in SCHEDULERS:
        c_array(name, run_scheduler(make))
    for name, max_norm, norm_type, replace in CLIP_CASES:
        c_array(name, run_clip(max_norm, norm_type, replace))


if __name__ == "__main__":
    main()
