# The bad-input matrix (issue 11): wrong shapes, dtypes and devices for every op family,
# autograd misuse, broken backends and plugins, damaged files and bad command lines, each
# asserting the status and message. Included from tests/CMakeLists.txt after loader.cmake and
# plugin_loader.cmake, whose fixtures it loads. Two cpu devices make the device mismatches.
ag_add_check_test(bad_input ${CMAKE_CURRENT_LIST_DIR}/test_bad_input.c)
target_compile_definitions(test_bad_input PRIVATE
  AG_CLI_PATH="$<TARGET_FILE:ag_cli>"
  AG_TEST_FIXTURES="${AG_LOADER_FIXTURES_DIR}"
  AG_TEST_PLUGINS="${AG_PLUGIN_FIXTURES_DIR}")
add_dependencies(test_bad_input ag_cli ag_backend_cpu ${ag_loader_fixture_targets}
  ${ag_plugin_fixture_targets})
set_tests_properties(bad_input PROPERTIES
  ENVIRONMENT "CK_FORK=no;AG_BACKEND=cpu;AG_CPU_DEVICES=2")
