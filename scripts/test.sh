#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test twice: in a plain build and in
# one with AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --test
cmake -S . -B build
cmake --build build -j2
ctest --test-dir build --output-on-failure

cmake -S . -B build-asan -DAG_SANITIZE=ON
cmake --build build-asan -j2
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure
