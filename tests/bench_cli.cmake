# `ag bench` run as a program (tests/test_bench_cli.c): the table, the CSV and JSON files,
# the PNG where gnuplot is installed, usage errors, backends that do not load and the
# PyTorch comparison through a stand-in interpreter. Included from tests/CMakeLists.txt.
find_package(PkgConfig REQUIRED)
pkg_check_modules(AG_BENCH_CJSON REQUIRED IMPORTED_TARGET libcjson)
ag_add_check_test(bench_cli ${CMAKE_CURRENT_LIST_DIR}/test_bench_cli.c)
target_link_libraries(test_bench_cli PRIVATE PkgConfig::AG_BENCH_CJSON)
target_compile_definitions(test_bench_cli PRIVATE
  AG_CLI_PATH="$<TARGET_FILE:ag_cli>"
  AG_BENCH_OUT_DIR="${CMAKE_CURRENT_BINARY_DIR}/bench_cli")
add_dependencies(test_bench_cli ag_cli ag_backend_cpu)
set_tests_properties(bench_cli PROPERTIES TIMEOUT 120)
