#!/usr/bin/env bash
# ThreadSanitizer run (docs/threads.md): builds libag, the cpu backend and the tests that use
# threads into build-tsan/ with -DAG_TSAN=ON and runs them; any data race report fails it.
#
# libgomp and OpenBLAS are not built with TSan, so their thread pools would give false
# reports: the cpu backend runs its kernels on the calling thread here (OMP_NUM_THREADS=1,
# OPENBLAS_NUM_THREADS=1). The threads under test are the tests' own.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=build-tsan
# Only the cpu backend: OpenCL, CUDA and MPI are left out of the configure step.
cmake -S . -B "$build_dir" -DAG_TSAN=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_DISABLE_FIND_PACKAGE_OpenCL=ON -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON \
    -DCMAKE_CUDA_COMPILER=OFF >/dev/null
# test_threads, and the other tests that start threads (per-thread state, concurrent loads).
tests=(threads tensor autograd anomaly backend_loader plugin_loader)
targets=(ag ag_backend_cpu)
for t in "${tests[@]}"; do targets+=("test_$t"); done
cmake --build "$build_dir" -j2 --target "${targets[@]}"

export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export CK_FORK=no AG_BACKEND=cpu
# halt_on_error: the first report ends the process with exitcode 66, so a race fails the run.
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 exitcode=66"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
for t in "${tests[@]}"; do
    echo "== tsan: test_$t"
    rc=0
    "$build_dir/bin/test_$t" 2>&1 | tee "$log" || rc=$?
    # Kernels with many random mmap bits break TSan's memory layout ("unexpected memory
    # mapping"); without address randomization it works.
    if ((rc != 0)) && grep -q "unexpected memory mapping" "$log"; then
        rc=0
        setarch "$(uname -m)" -R "$build_dir/bin/test_$t" || rc=$?
    fi
    if ((rc != 0)); then
        echo "tsan: test_$t failed with status $rc (a ThreadSanitizer report or a failing test)" >&2
        status=1
    fi
done
exit $status
