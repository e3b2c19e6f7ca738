#!/usr/bin/env bash
# Valgrind memcheck over a representative subset of the unit tests (issue 11, part 4):
# every test below runs under memcheck through `ctest -T memcheck`, so each gets exactly the
# command and environment ctest gives it (CK_FORK=no, AG_BACKEND=cpu, AG_CPU_DEVICES=2,
# fixture paths), plus a short soak run (tests/soak.c: training steps with AdamW, the
# scheduler, clipping and checkpoint save/load). Any memcheck error (invalid read or write,
# use of uninitialised memory, bad free) or a definite or indirect leak fails the run.
#
# usage: scripts/valgrind.sh [BUILD_DIR]     (default build; configured if it is not yet)
# VALGRIND_JOBS (default 2) tests run in parallel; each valgrind process uses one core.
# VALGRIND_TESTS="tensor optim" runs those ctest tests instead of the list below.
#
# OpenMP and OpenBLAS run on the calling thread (OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1):
# valgrind serialises threads anyway, and thread pools only add time. tests/valgrind.supp
# holds suppressions for third-party libraries only; --run-libc-freeres=no keeps glibc's
# exit-time clean-up from turning libgomp's start-up allocation into a "definite" leak
# (see that file). Only definite and indirect leaks are shown: "possibly lost" blocks are
# glibc's (thread TLS, the dlopen object map), and ctest would count them as defects.
# Processes the tests start (the `ag` command in bad_input and plugin_loader) are not
# traced. The sanitizer build (LSan) checks the whole test set for leaks; this checks
# uninitialised reads too, in a plain optimised build, with the system's libraries as they
# are.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:-build}
jobs=${VALGRIND_JOBS:-2}
# Not alloc_failure: its 5,665 runs take 2.5 minutes under valgrind (ASan and LSan check it).
tests=(tensor autograd ops_elementwise ops_reduce_linalg ops_views_index nn_functional
    nn_modules optim checkpoint data_io durability bad_input plugin_loader plugins
    backend_loader devices hooks forward_ad functional anomaly graph_tools conv rnn amp
    threads)
if [[ -n ${VALGRIND_TESTS:-} ]]; then
    read -ra tests <<<"$VALGRIND_TESTS"
fi
supp=$PWD/tests/valgrind.supp
# shellcheck disable=SC2054 # the commas belong to --errors-for-leak-kinds
vg_opts=(--tool=memcheck --leak-check=full --errors-for-leak-kinds=definite,indirect
    --show-leak-kinds=definite,indirect --error-exitcode=99 --track-origins=no
    --run-libc-freeres=no --suppressions="$supp")

if ! command -v valgrind >/dev/null; then
    echo "valgrind.sh: valgrind is not installed (scripts/setup.sh --test installs it)" >&2
    exit 1
fi
if [[ ! -f $build/CMakeCache.txt ]]; then
    cmake -S . -B "$build" >/dev/null
fi
targets=(ag_backend_cpu soak)
for t in "${tests[@]}"; do targets+=("test_$t"); done
cmake --build "$build" -j2 --target "${targets[@]}" >/dev/null

export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 CK_FORK=no AG_BACKEND=cpu
start=$SECONDS
status=0
regex="^($(
    IFS='|'
    echo "${tests[*]}"
))\$"
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== valgrind memcheck: ${#tests[@]} tests from $build ($jobs at a time)"
# ctest -T memcheck without a CTest dashboard set-up: the options come from --overwrite
# (ctest warns that DartConfiguration.tcl is missing; that line is dropped).
ctest_status=0
(
    cd "$build"
    ctest -T memcheck -R "$regex" -j "$jobs" --timeout 900 \
        --overwrite MemoryCheckCommand="$(command -v valgrind)" \
        --overwrite MemoryCheckCommandOptions="${vg_opts[*]}"
) >"$log" 2>&1 || ctest_status=$?
# "1/24 MemCheck  #17: autograd ...   Passed  1.84 sec" per test, then a summary with a
# "1/24 MemCheck: #66: anomaly ...   Defects: 1" line for each test with memcheck errors.
grep -E '^ *[0-9]+/[0-9]+ MemCheck|tests passed|tests failed' "$log" || true
found=$(grep -cE '^ *[0-9]+/[0-9]+ MemCheck +#' "$log" || true)
if ((ctest_status != 0 || found != ${#tests[@]})) || grep -q 'Defects:' "$log"; then
    status=1
    if ((found != ${#tests[@]})); then
        echo "valgrind.sh: ctest ran $found of ${#tests[@]} tests:" >&2
        grep -v DartConfiguration "$log" >&2
    fi
    # The memcheck report of each failed or defective test.
    bad='Failed|Defects|Timeout|Exception|Not Run'
    pattern="s/^ *[0-9]+\\/[0-9]+ MemCheck:? +#([0-9]+):.*($bad).*/\\1/p"
    sed -nE "$pattern" "$log" | sort -u | while read -r n; do
        echo "---- $build/Testing/Temporary/MemoryChecker.$n.log" >&2
        grep -vE '^==[0-9]+== *$' "$build/Testing/Temporary/MemoryChecker.$n.log" >&2 || true
    done
fi

# The training loop: optimizer, scheduler, clipping, checkpoint save/load, 300 steps.
echo "== valgrind memcheck: soak --steps 300"
t0=$SECONDS
if valgrind "${vg_opts[@]}" --log-file="$log" "$build/bin/soak" --steps 300 --warmup 100 \
    --sample-every 50 --checkpoint-every 100 --no-rss-check >/dev/null; then
    echo "soak ................................ Passed  $((SECONDS - t0)) s"
else
    echo "soak ................................ FAILED  $((SECONDS - t0)) s" >&2
    grep -vE '^==[0-9]+== *$' "$log" >&2 || true
    status=1
fi

result=passed
((status == 0)) || result=FAILED
echo "== valgrind memcheck: $((SECONDS - start)) s in all, $result"
exit $status
