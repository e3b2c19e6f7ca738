#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job: `ag info` and the seed examples.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake -S . -B build
cmake --build build -j2

build/bin/ag info
for example in ex_d1_scalar ex_h2_mlp_manual ex_j3_second_derivative ex_j4_hvp; do
    echo "== $example"
    "build/bin/$example"
done
