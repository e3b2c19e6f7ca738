#!/usr/bin/env python3
"""Times in PyTorch the workloads `ag bench` times in ag (CPU, or --device cuda).

p_step            the seed's section P training step, as bench/torch_step.py times it
                  (784-512-512-10 MLP with GELU and LayerNorm, label-smoothed cross
                  entropy, clip_grad_norm_, AdamW, cosine schedule), batch 128;
mlp_sgd_mse_step  the seed's section E-1 step: Linear(784, 512), ReLU, Linear(512, 10),
                  MSE against one-hot labels, backward, SGD lr 0.01, batch 128;
overhead_forward_grad, overhead_forward_backward
                  what PyTorch costs per tiny op, as `ag overhead` measures it: a chain of
                  100 muls y = y * x on 16 float32 elements of an x that requires grad,
                  recording the graph, then (forward_backward) y.sum().backward() and
                  x.grad = None.

Steps are timed one at a time with time.perf_counter after --warmup untimed ones; each
waits for the device through loss.item(). An overhead run times 50 chains after 20 untimed
ones and ends with a device synchronisation; the result is microseconds per mul. Every
workload reports the median, min and max over its --steps steps or --repeats runs, one
line each, and with --json FILE ('-': stdout, the lines then go to stderr) one JSON object
that `ag bench` reads.
"""
import argparse
import json
import os
import statistics
import sys

import torch

from torch_workloads import make_mlp_sgd_mse_step, make_mlp_transform, make_p_step, time_calls

TRANSFORMS = ("forward", "jvp", "vjp", "jvp_double_vjp")
WORKLOADS = ("p_step", "mlp_sgd_mse_step", "overhead_forward_grad",
             "overhead_forward_backward") + tuple(f"mlp_transforms_{t}" for t in TRANSFORMS)
WARMUP_CHAINS = 20  # as `ag overhead`
CHAINS_PER_RUN = 50


def at_least(minimum):
    """An argparse type: an int no smaller than minimum."""
    def parse(text):
        if not text.isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"not an integer >= {minimum}: {text}")
        return int(text)
    return parse


def workload_list(text):
    names = text.split(",")
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown workload {unknown[0]!r}; known: {', '.join(WORKLOADS)}")
    return names


def time_step(name, step, args):
    """Times a step function; returns its result object and the human line's details."""
    times, loss = time_calls(step, args.warmup, args.steps)
    result = {"workload": name, "ms_per_step": statistics.median(times), "min": min(times),
              "max": max(times), "steps": args.steps}
    line = (f"{result['ms_per_step']:.2f} ms/step (median of {args.steps} steps after "
            f"{args.warmup} warm-up; min {min(times):.2f}, max {max(times):.2f}; "
            f"batch {args.batch_size}, last loss {loss:.4f}")
    return result, line


def time_chain(name, backward, args, device):
    """Times runs of CHAINS_PER_RUN chains of args.chain muls; microseconds per mul."""
    torch.manual_seed(0)
    x = torch.randn(16, device=device, requires_grad=True)

    def run(chains):
        for _ in range(chains):
            y = x
            for _ in range(args.chain):
                y = y * x
            if backward:
                y.sum().backward()
                x.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run(WARMUP_CHAINS)
    times, _ = time_calls(lambda: run(CHAINS_PER_RUN), 0, args.repeats)
    us = [t * 1e3 / (CHAINS_PER_RUN * args.chain) for t in times]
    result = {"workload": name, "us_per_op": statistics.median(us), "min": min(us),
              "max": max(us), "steps": args.repeats}
    line = (f"{result['us_per_op']:.3f} us/op (median of {args.repeats} runs of "
            f"{CHAINS_PER_RUN} chains after {WARMUP_CHAINS} warm-up; min {min(us):.3f}, "
            f"max {max(us):.3f}; {args.chain} muls on 16 float32 elements")
    return result, line


def run_workload(name, args, device):
    if name == "p_step":
        total = args.warmup + args.steps
        return time_step(name, make_p_step(args.batch_size, 512, total, device), args)
    if name == "mlp_sgd_mse_step":
        return time_step(name, make_mlp_sgd_mse_step(args.batch_size, device), args)
    if name.startswith("mlp_transforms_"):
        transform = name[len("mlp_transforms_"):]
        return time_step(name, make_mlp_transform(args.batch_size, device, transform), args)
    return time_chain(name, name == "overhead_forward_backward", args, device)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=at_least(1), default=50, help="timed training steps")
    ap.add_argument("--warmup", type=at_least(0), default=10, help="untimed steps first")
    ap.add_argument("--batch-size", type=at_least(1), default=128)
    ap.add_argument("--chain", type=at_least(1), default=100, help="muls per overhead chain")
    ap.add_argument("--repeats", type=at_least(1), default=21, help="timed overhead runs")
    # Debian's torch starts with one thread; ag's OpenMP uses every core, so match it.
    ap.add_argument("--threads", type=at_least(1), default=os.cpu_count())
    ap.add_argument("--device", default="cpu", help="cpu or cuda (timed with synchronisation)")
    ap.add_argument("--only", type=workload_list, default=list(WORKLOADS),
                    metavar="WORKLOAD[,WORKLOAD]", help="run these workloads only")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout)")
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("no CUDA device")
    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    lines = sys.stderr if args.json == "-" else sys.stdout
    results = []
    for name in (n for n in WORKLOADS if n in args.only):
        result, details = run_workload(name, args, device)
        results.append(result)
        print(f"torch {torch.__version__} on {device}: {name} {details}, {threads} threads)",
              file=lines, flush=True)

    if args.json:
        report = {"torch_version": torch.__version__, "threads": threads,
                  "device": str(device), "results": results}
        text = json.dumps(report) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            with open(args.json, "w") as out:
                out.write(text)


if __name__ == "__main__":
    main()
