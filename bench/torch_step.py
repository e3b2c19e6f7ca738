#!/usr/bin/env python3
"""Times one training step of the seed's section P recipe in PyTorch (CPU, or --device cuda).

One step = forward of the 784-H-H-10 MLP (Linear, GELU, Linear, GELU, LayerNorm, Linear),
cross entropy with label smoothing 0.1, backward, clip_grad_norm_(1.0), AdamW step
(lr 2e-3, weight decay 1e-2), CosineAnnealingLR step and zero_grad(set_to_none=True), on
one fixed random batch (no accumulation): the same work `ag train --bench-steps` times.
Prints the median over --steps steps after --warmup untimed ones, in ms/step.
"""
import argparse
import os
import statistics
import time

import torch
import torch.nn as nn


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=512)
    # Debian's torch starts with one thread; ag's OpenMP uses every core, so match it.
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu", help="cpu or cuda (timed with synchronisation)")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    h = args.hidden
    dev = torch.device(args.device)
    model = nn.Sequential(nn.Linear(784, h), nn.GELU(), nn.Linear(h, h), nn.GELU(),
                          nn.LayerNorm(h), nn.Linear(h, 10)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps + args.warmup)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(args.batch_size, 784, device=dev)
    y = torch.arange(args.batch_size, device=dev) % 10
    model.train()

    times = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        loss = crit(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_value = loss.item()
        if i >= args.warmup:
            times.append((time.perf_counter() - start) * 1e3)

    # loss.item() waits for the device each step, so the times include the GPU's work.
    print(f"torch {torch.__version__} on {args.device}: {statistics.median(times):.2f} ms/step (median of "
          f"{args.steps} steps after {args.warmup} warm-up; min {min(times):.2f}, max "
          f"{max(times):.2f}; batch {args.batch_size}, 784-{h}-{h}-10 MLP, "
          f"{torch.get_num_threads()} threads, last loss {loss_value:.4f})")


if __name__ == "__main__":
    main()
