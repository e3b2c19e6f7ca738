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

import torch

from torch_workloads import make_p_step, time_calls


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

    torch.set_num_threads(args.threads)
    h = args.hidden
    step = make_p_step(args.batch_size, h, args.steps + args.warmup, torch.device(args.device))
    times, loss_value = time_calls(step, args.warmup, args.steps)

    # loss.item() waits for the device each step, so the times include the GPU's work.
    print(f"torch {torch.__version__} on {args.device}: {statistics.median(times):.2f} ms/step (median of "
          f"{args.steps} steps after {args.warmup} warm-up; min {min(times):.2f}, max "
          f"{max(times):.2f}; batch {args.batch_size}, 784-{h}-{h}-10 MLP, "
          f"{torch.get_num_threads()} threads, last loss {loss_value:.4f})")


if __name__ == "__main__":
    main()
