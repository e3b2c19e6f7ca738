#!/usr/bin/env bash
# One §P training step at batch 128 (forward, label-smoothed cross entropy, backward,
# clip_grad_norm 1.0, AdamW, cosine schedule, zero_grad) timed in ag and in PyTorch on
# this machine, one after the other. Usage: bench/train_step.sh [build dir] [steps]
# PYTHON picks the interpreter with torch (default /usr/bin/python3).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
steps=${2:-50}
"$build/bin/ag" train --bench-steps "$steps"
"${PYTHON:-/usr/bin/python3}" bench/torch_step.py --steps "$steps"
