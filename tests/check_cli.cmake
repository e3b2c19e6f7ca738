# `ag check` run as a program on the shipped plugins and on a fixture plugin whose ops are
# wrong in known ways. test_check_cli.c is both: built as the test, and built again with
# AG_CHECK_FIXTURE_PLUGIN as libag_check_fixture.so. Included from tests/CMakeLists.txt.
add_library(ag_check_fixture MODULE ${CMAKE_CURRENT_LIST_DIR}/test_check_cli.c)
target_compile_definitions(ag_check_fixture PRIVATE AG_CHECK_FIXTURE_PLUGIN)
target_include_directories(ag_check_fixture PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../plugins)
target_link_libraries(ag_check_fixture PRIVATE ag m)
set_target_properties(ag_check_fixture PROPERTIES
  PREFIX "lib"
  LIBRARY_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fixtures)

ag_add_check_test(check_cli ${CMAKE_CURRENT_LIST_DIR}/test_check_cli.c)
target_compile_definitions(test_check_cli PRIVATE
  AG_CLI_PATH="$<TARGET_FILE:ag_cli>"
  AG_SWISH_PLUGIN="$<TARGET_FILE:ag_op_swish>"
  AG_LSE_PLUGIN="$<TARGET_FILE:ag_op_logsumexp>"
  AG_FIXTURE_PLUGIN="$<TARGET_FILE:ag_check_fixture>")
add_dependencies(test_check_cli ag_cli ag_op_swish ag_op_logsumexp ag_check_fixture
  ag_backend_cpu)
