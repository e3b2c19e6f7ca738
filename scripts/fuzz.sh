#!/usr/bin/env bash
# Builds the libFuzzer fuzzers (fuzz/, AG_FUZZ=ON) with clang into build-fuzz/ and runs each
# for a bounded time on a copy of its committed corpus (fuzz/corpus/<name>/, never grown in
# place). Exits non-zero if any fuzzer finds a crash, leak, undefined behaviour, timeout or
# memory blow-up; the input that did it is kept under build-fuzz/fuzz-artifacts/<name>/.
#
#   scripts/fuzz.sh [SECONDS_PER_FUZZER]     (default 20)
#
# Environment: FUZZERS="safetensors idx" runs a subset; CC overrides the compiler (clang);
# FUZZ_JOBS sets build parallelism (default: nproc).
set -euo pipefail

seconds=${1:-20}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: $0 [SECONDS_PER_FUZZER]" >&2
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build-fuzz
fuzzers=${FUZZERS:-safetensors idx plugin_schema ops}
cc=${CC:-clang}
if ! command -v "$cc" >/dev/null; then
    echo "fuzz.sh: $cc not found (libFuzzer needs clang: apt-get install clang libclang-rt-14-dev)" >&2
    exit 2
fi

# -O1 and line tables: fast enough to fuzz, quick to build, readable stack traces.
mkdir -p "$build"
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER="$cc" -DAG_FUZZ=ON -DAG_BUILD_TESTS=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
    >"$build/configure.log" 2>&1 || {
    cat "$build/configure.log" >&2
    exit 1
}
read -r -a names <<<"$fuzzers"
targets=()
for name in "${names[@]}"; do targets+=("fuzz_$name"); done
cmake --build "$build" -j "${FUZZ_JOBS:-$(nproc)}" --target "${targets[@]}"

work=$(mktemp -d "${TMPDIR:-/tmp}/ag-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
# UBSan reports carry a stack; ASan's leak check runs after every input that leaks.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
export AG_BACKEND=cpu

failed=0
summary=""
for name in "${names[@]}"; do
    corpus=$work/corpus-$name
    mkdir -p "$corpus" "$work/tmp-$name" "$work/artifacts-$name"
    if [ -d "$root/fuzz/corpus/$name" ]; then cp "$root/fuzz/corpus/$name"/* "$corpus"/ 2>/dev/null || true; fi
    dict=()
    [ -f "$root/fuzz/$name.dict" ] && dict=(-dict="$root/fuzz/$name.dict")
    log=$work/$name.log
    echo "== fuzz_$name: ${seconds}s"
    set +e
    # -timeout: one input may take 10 s; -rss_limit_mb: the whole process 2 GB. The outer
    # timeout only guards against a fuzzer that does not stop by itself.
    TMPDIR=$work/tmp-$name timeout $((seconds + 120)) "$build/bin/fuzz_$name" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/artifacts-$name/" "${dict[@]}" "$corpus" >"$log" 2>&1
    rc=$?
    set -e
    runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
    [ -n "$runs" ] || runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    stats=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)
    line="fuzz_$name: ${runs:-?} executions in ${seconds}s, ${stats:-no coverage line}"
    if [ "$rc" -ne 0 ]; then
        failed=1
        line="$line: FAILED (exit $rc)"
        echo "--- fuzz_$name failed; the end of its log:" >&2
        tail -60 "$log" >&2
        mkdir -p "$build/fuzz-artifacts/$name"
        cp "$work/artifacts-$name"/* "$build/fuzz-artifacts/$name"/ 2>/dev/null || true
        echo "--- reproducer(s) kept in $build/fuzz-artifacts/$name/ (run: $build/bin/fuzz_$name FILE)" >&2
    fi
    echo "$line"
    summary="$summary$line"$'\n'
done
echo "== fuzzing summary"
printf '%s' "$summary"
exit $failed
