#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job: training the seed's §P network
# on Fashion-MNIST with `ag train` (extra arguments go to ag train, e.g. --epochs 3).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake -S . -B build
cmake --build build -j2

build/bin/ag info
build/bin/ag train "$@"
