#!/usr/bin/env bash
# Verifies the CUDA backend on a machine with a GPU, in one go sized for a few minutes on
# an H100: builds the project (Release), runs every CUDA test (the op tests' *_cuda
# variants, cuda_backend, cuda_offline, check_cuda), `ag check --backend cuda` with a CSV,
# float32 GEMM against cuBLAS called directly (bench_cuda_gemm), the §P training step on
# cpu, cuda and PyTorch's cuda, and one epoch of `ag train` on cpu and on cuda, whose test
# accuracies should agree within 0.5 points. Writes summary.txt (and the logs and the
# check CSV) into OUTDIR (default gpu-check-out).
#
# Usage: scripts/gpu-check.sh [OUTDIR]. On a bare GPU machine, run scripts/gpu-deps.sh
# here first and carry .gpu-deps: its packages are unpacked into a private prefix. Every
# step runs even if an earlier one failed; the exit status is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check-out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
summary=$out/summary.txt
: >"$summary"
failed=0
note() { echo "$*" | tee -a "$summary"; }
# step NAME LOG CMD...: runs CMD with its output in $out/LOG, notes how it ended.
step() {
    local name=$1 log=$out/$2 start=$SECONDS rc
    shift 2
    "$@" >"$log" 2>&1
    rc=$?
    note "== $name: $([[ $rc == 0 ]] && echo ok || echo "FAILED (exit $rc)") in $((SECONDS - start)) s"
    ((rc == 0)) || failed=1
    return $rc
}

data=/usr/share/datasets/fashion-mnist
cmake_args=(-DCMAKE_BUILD_TYPE=Release)
if [[ -d .gpu-deps ]] && compgen -G ".gpu-deps/*.deb" >/dev/null; then
    root=$PWD/.gpu-deps/root
    mkdir -p "$root"
    for deb in .gpu-deps/*.deb; do dpkg -x "$deb" "$root"; done
    lib=$root/usr/lib/x86_64-linux-gnu
    # A -dev package's libX.so can be an absolute link (zlib's points at /lib/...): repoint
    # it into the prefix, or the linker finds no shared library there and takes the .a.
    for link in "$lib"/*.so; do
        target=$(readlink "$link") && [[ $target == /* ]] && ln -sf "$root$target" "$link"
    done
    export PATH=$root/usr/bin:$PATH
    export LD_LIBRARY_PATH=$lib:$lib/openblas-openmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    # Only the private prefix is searched, its paths prefixed with it.
    export PKG_CONFIG_LIBDIR=$lib/pkgconfig:$lib/openblas-openmp/pkgconfig:$root/usr/share/pkgconfig
    export PKG_CONFIG_SYSROOT_DIR=$root
    command -v pkg-config >/dev/null || ln -sf pkgconf "$root/usr/bin/pkg-config"
    data=$root/usr/share/datasets/fashion-mnist
    cmake_args+=(-DCMAKE_PREFIX_PATH="$root/usr")
    note "dependencies: unpacked $(ls .gpu-deps/*.deb | wc -l) packages from .gpu-deps"
fi
note "machine: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
note "nvcc: $(nvcc --version 2>&1 | tail -1)"

build=build-gpu
step configure configure.log cmake -S . -B $build "${cmake_args[@]}" &&
    step build build.log cmake --build $build -j"$(nproc)"
ag=$build/bin/ag
note "$(AG_BACKEND=cuda $ag info 2>&1 | grep -E 'cuda:|backend cuda|cannot load' | head -4)"

# Tests: every CUDA variant and the backend's own; the GPU must not make them skip.
step tests ctest.log ctest --test-dir $build -R cuda --output-on-failure --timeout 600
note "$(grep -E 'tests passed|Skipped|Failed|\*\*\*' "$out/ctest.log" | head -20)"

step "ag check --backend cuda" check.log $ag check --backend cuda --csv "$out/check.csv"
note "$(tail -3 "$out/check.log")"

step "GEMM vs cuBLAS" gemm.log $build/bin/bench_cuda_gemm 0.3
note "$(cat "$out/gemm.log")"

step "§P step, cpu" step_cpu.log env AG_BACKEND=cpu $ag train --bench-steps 50
step "§P step, cuda" step_cuda.log env AG_BACKEND=cuda $ag train --bench-steps 200
step "§P step, torch cuda" step_torch.log python3 bench/torch_step.py --device cuda --steps 200
note "$(cat "$out/step_cpu.log" "$out/step_cuda.log" "$out/step_torch.log" | grep -i 'ms/step')"

step "train 1 epoch, cpu" train_cpu.log env AG_BACKEND=cpu $ag train --epochs 1 --quiet --data "$data"
step "train 1 epoch, cuda" train_cuda.log env AG_BACKEND=cuda $ag train --epochs 1 --quiet --data "$data"
note "cpu:  $(tail -2 "$out/train_cpu.log" | tr '\n' ' ')"
note "cuda: $(tail -2 "$out/train_cuda.log" | tr '\n' ' ')"

note "== overall: $([[ $failed == 0 ]] && echo ok || echo FAILED)"
exit $failed
