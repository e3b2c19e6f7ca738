#!/usr/bin/env bash
# Installs the Debian 12 packages ag needs, only those missing: apt-get is skipped when
# everything is present. `--test` adds the lint tools that .ci/run uses.
set -euo pipefail

packages=(build-essential cmake pkg-config check libsubunit-dev libopenblas-openmp-dev zlib1g-dev
    libcjson-dev dataset-fashion-mnist ocl-icd-opencl-dev opencl-headers pocl-opencl-icd clinfo
    gnuplot-nox graphviz libopenmpi-dev openmpi-bin)
if [[ ${1:-} == --test ]]; then
    # clang and its runtime (libFuzzer) build fuzz/; valgrind runs scripts/valgrind.sh.
    packages+=(clang-format cppcheck clang libclang-rt-14-dev valgrind)
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        missing+=("$p")
done
if ((${#missing[@]} == 0)); then
    exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    sudo=(sudo)
fi
echo "setup: installing ${missing[*]}"
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    "${missing[@]}"
