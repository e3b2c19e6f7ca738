"""PyTorch workloads shared by bench/torch_step.py and bench/torch_compare.py.

Each make_* function seeds torch with 0, builds its model, optimizer and fixed random batch
on the given device, and returns a function that runs one training step and returns the
step's loss as a float (loss.item(), which also waits for the device). time_calls times any
such function with time.perf_counter.
"""
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def _batch(batch_size, device):
    """One fixed batch: N(0, 1) inputs of 784 features and labels 0, 1, ..., 9, 0, 1, ..."""
    x = torch.randn(batch_size, 784, device=device)
    return x, torch.arange(batch_size, device=device) % 10


def make_p_step(batch_size, hidden, total_steps, device):
    """The seed's section P step: forward of the 784-H-H-10 MLP (Linear, GELU, Linear, GELU,
    LayerNorm, Linear), cross entropy with label smoothing 0.1, backward,
    clip_grad_norm_(1.0), AdamW (lr 2e-3, weight decay 1e-2), a step of a CosineAnnealingLR
    over total_steps and zero_grad(set_to_none=True)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                          nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, 10)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    x, y = _batch(batch_size, device)
    model.train()

    def step():
        loss = crit(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def make_mlp_sgd_mse_step(batch_size, device):
    """The seed's section E-1 step on MNIST-sized data: forward of Linear(784, 512), ReLU,
    Linear(512, 10), MSE against the one-hot labels, backward, SGD (lr 0.01) and
    zero_grad(set_to_none=True)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, labels = _batch(batch_size, device)
    target = F.one_hot(labels, 10).float()
    model.train()

    def step():
        loss = F.mse_loss(model(x), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def make_mlp_transform(batch_size, device, transform):
    """The MLP of make_mlp_sgd_mse_step as a function of its input x [B, 784], and one call of
    `transform` on it: "forward" (with grad mode on), "jvp" (J v by forward-mode AD,
    torch.autograd.forward_ad), "jvp_double_vjp" (torch.autograd.functional.jvp, which uses
    the double-backward trick) or "vjp" (torch.autograd.functional.vjp). Returns a function
    that runs it and returns a float of the result (which waits for the device)."""
    import torch.autograd.forward_ad as fwad
    from torch.autograd.functional import jvp, vjp
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10)).to(device)
    x, _ = _batch(batch_size, device)
    v = torch.randn_like(x)
    u = torch.randn(batch_size, 10, device=device)

    def forward_mode():
        with fwad.dual_level():
            return fwad.unpack_dual(model(fwad.make_dual(x, v))).tangent

    calls = {"forward": lambda: model(x),
             "jvp": forward_mode,
             "jvp_double_vjp": lambda: jvp(model, x, v)[1],
             "vjp": lambda: vjp(model, x, u)[1]}
    call = calls[transform]
    return lambda: call()[0, 0].item()


def time_calls(fn, warmup, count):
    """Calls fn warmup times untimed, then count times timed; returns the timed calls'
    milliseconds and fn's last result."""
    times = []
    for i in range(warmup + count):
        start = time.perf_counter()
        result = fn()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return times, result
