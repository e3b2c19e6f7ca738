# Tests of the plugins shipped in plugins/ (swish, logsumexp); included from
# tests/CMakeLists.txt. The test loads each plugin by the path of its built module.
ag_add_check_test(plugins ${CMAKE_CURRENT_LIST_DIR}/test_plugins.c)
target_compile_definitions(test_plugins PRIVATE
  AG_TEST_SWISH_PLUGIN="$<TARGET_FILE:ag_op_swish>"
  AG_TEST_LSE_PLUGIN="$<TARGET_FILE:ag_op_logsumexp>")
add_dependencies(test_plugins ag_op_swish ag_op_logsumexp)

# Plugin kernels given as source, on every backend (compiled by opencl and cuda).
ag_add_backend_test(source_kernels ${CMAKE_CURRENT_LIST_DIR}/test_source_kernels.c)
target_compile_definitions(test_source_kernels PRIVATE
  AG_TEST_SWISH_PLUGIN="$<TARGET_FILE:ag_op_swish>"
  AG_TEST_LSE_PLUGIN="$<TARGET_FILE:ag_op_logsumexp>"
  AG_TEST_PLUGINS="${AG_PLUGIN_FIXTURES_DIR}")
add_dependencies(test_source_kernels ag_op_swish ag_op_logsumexp ag_plugin_fixture_badsource)

# No silent CPU fallback on other backends, and the AG_CPU_FALLBACK=1 switch.
if(AG_TEST_BACKENDS)
  add_executable(test_cpu_fallback ${CMAKE_CURRENT_LIST_DIR}/test_cpu_fallback.c)
  target_link_libraries(test_cpu_fallback PRIVATE ag PkgConfig::CHECK m)
  target_compile_definitions(test_cpu_fallback PRIVATE
    AG_TEST_SWISH_PLUGIN="$<TARGET_FILE:ag_op_swish>")
  foreach(backend IN LISTS AG_TEST_BACKENDS)
    foreach(mode 0 1)
      add_test(NAME cpu_fallback_${mode}_${backend}
               COMMAND ag_backend_probe $<TARGET_FILE:test_cpu_fallback>)
      set_tests_properties(cpu_fallback_${mode}_${backend} PROPERTIES
        ENVIRONMENT "CK_FORK=no;AG_BACKEND=${backend};AG_CPU_FALLBACK=${mode};${AG_TEST_ENV_${backend}}"
        SKIP_RETURN_CODE 77)
    endforeach()
  endforeach()
endif()
