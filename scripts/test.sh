#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test twice: in a plain build and in
# one with AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer. In between,
# checks the SDK: the plain build installed, and an out-of-tree plugin built against it.
# Then the reliability runs (docs/reliability.md): valgrind memcheck on a subset of the
# plain build's tests, ThreadSanitizer on the tests that use threads, and each libFuzzer
# fuzzer for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --test
cmake -S . -B build
cmake --build build -j2
ctest --test-dir build --output-on-failure
scripts/valgrind.sh build

# SDK: install the plain build into a temporary prefix, build examples/out-of-tree-plugin
# against it (CMake package; pkg-config for its test program), run the test program with
# the installed libag and list the plugin with the installed `ag` (RUNPATH, no
# LD_LIBRARY_PATH). AG_BACKEND_PATH is unset: the installed libag must find its own
# backends in <prefix>/lib/ag although the build was configured for another prefix.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix cube=$tmp/cube
sdk_env=(env -u AG_BACKEND_PATH)
cmake --install build --prefix "$prefix" >/dev/null
cmake -S examples/out-of-tree-plugin -B "$cube" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$cube" -j2
"${sdk_env[@]}" "$cube/cube_test" "$cube/libag_op_cube.so"
info=$("${sdk_env[@]}" AG_PLUGINS="$cube/libag_op_cube.so" "$prefix/bin/ag" info)
grep -q 'cube::cube' <<<"$info"
pc_flags=$(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs ag)
cc -std=c11 -Wall -Wextra -Werror examples/out-of-tree-plugin/cube_test.c $pc_flags -o "$tmp/cube_test_pc"
"${sdk_env[@]}" LD_LIBRARY_PATH="$prefix/lib" "$tmp/cube_test_pc" "$cube/libag_op_cube.so" >/dev/null

cmake -S . -B build-asan -DAG_SANITIZE=ON
cmake --build build-asan -j2
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure
scripts/tsan.sh
scripts/fuzz.sh 20
