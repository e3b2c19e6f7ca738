# Tests of the plugins shipped in plugins/ (swish, logsumexp); included from
# tests/CMakeLists.txt. The test loads each plugin by the path of its built module.
ag_add_check_test(plugins ${CMAKE_CURRENT_LIST_DIR}/test_plugins.c)
target_compile_definitions(test_plugins PRIVATE
  AG_TEST_SWISH_PLUGIN="$<TARGET_FILE:ag_op_swish>"
  AG_TEST_LSE_PLUGIN="$<TARGET_FILE:ag_op_logsumexp>")
add_dependencies(test_plugins ag_op_swish ag_op_logsumexp)
