# `ag check` run as a program on the built-in ops, on the shipped plugins, on a fixture
# plugin whose ops are wrong in known ways and on a fixture backend whose kernels are.
# test_check_cli.c is all three: built as the test, and built again with
# AG_CHECK_FIXTURE_PLUGIN as libag_check_fixture.so and with AG_CHECK_FIXTURE_BACKEND as
# libag_backend_checkbad.so (in a directory of its own, which only these tests put on
# AG_BACKEND_PATH). Included from tests/CMakeLists.txt.
add_library(ag_check_fixture MODULE ${CMAKE_CURRENT_LIST_DIR}/test_check_cli.c)
target_compile_definitions(ag_check_fixture PRIVATE AG_CHECK_FIXTURE_PLUGIN)
target_include_directories(ag_check_fixture PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../plugins)
target_link_libraries(ag_check_fixture PRIVATE ag m)
set_target_properties(ag_check_fixture PROPERTIES
  PREFIX "lib"
  LIBRARY_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fixtures)

set(AG_CHECK_BACKEND_DIR ${CMAKE_CURRENT_BINARY_DIR}/check_backends)
add_library(ag_check_backend MODULE ${CMAKE_CURRENT_LIST_DIR}/test_check_cli.c)
target_compile_definitions(ag_check_backend PRIVATE AG_CHECK_FIXTURE_BACKEND)
target_include_directories(ag_check_backend PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../include)
target_link_libraries(ag_check_backend PRIVATE m)
set_target_properties(ag_check_backend PROPERTIES
  PREFIX "lib"
  OUTPUT_NAME ag_backend_checkbad
  LIBRARY_OUTPUT_DIRECTORY ${AG_CHECK_BACKEND_DIR})

ag_add_check_test(check_cli ${CMAKE_CURRENT_LIST_DIR}/test_check_cli.c)
target_compile_definitions(test_check_cli PRIVATE
  AG_CLI_PATH="$<TARGET_FILE:ag_cli>"
  AG_SWISH_PLUGIN="$<TARGET_FILE:ag_op_swish>"
  AG_LSE_PLUGIN="$<TARGET_FILE:ag_op_logsumexp>"
  AG_FIXTURE_PLUGIN="$<TARGET_FILE:ag_check_fixture>"
  AG_FIXTURE_BACKEND_DIR="${AG_CHECK_BACKEND_DIR}"
  AG_CSV_PATH="${CMAKE_CURRENT_BINARY_DIR}/check_cli.csv")
add_dependencies(test_check_cli ag_cli ag_op_swish ag_op_logsumexp ag_check_fixture
  ag_check_backend ag_backend_cpu)
# Without --backend, ag check loads every backend built (AG_TEST_ENV_opencl: LSan
# suppressions for the OpenCL runtime, tests/CMakeLists.txt).
set_tests_properties(check_cli PROPERTIES ENVIRONMENT
                     "CK_FORK=no;AG_BACKEND=cpu;${AG_TEST_ENV_opencl}")

# Every built-in op on the OpenCL backend against the cpu, where that backend is built;
# skipped where the machine has no OpenCL platform or device (CI installs PoCL). PoCL
# compiles each kernel on first use, which takes long on a cold kernel cache.
if(TARGET ag_backend_opencl)
  add_test(NAME check_opencl COMMAND ag_cli check --backend opencl)
  set_tests_properties(check_opencl PROPERTIES ENVIRONMENT "AG_PLUGINS=;${AG_TEST_ENV_opencl}"
                       TIMEOUT 3600
                       SKIP_REGULAR_EXPRESSION "no OpenCL (platform|device)")
endif()

# The same on the CUDA backend, where it is built; skipped without a GPU ("no CUDA device").
if(TARGET ag_backend_cuda)
  add_test(NAME check_cuda COMMAND ag_cli check --backend cuda)
  set_tests_properties(check_cuda PROPERTIES ENVIRONMENT "AG_PLUGINS="
                       TIMEOUT 1800
                       SKIP_REGULAR_EXPRESSION "no CUDA device")
endif()

# The same on cudaemu, the CUDA backend's kernels emulated on the CPU (tests/cuda_emu).
if(TARGET ag_backend_cudaemu)
  add_test(NAME check_cudaemu COMMAND ag_cli check --backend cudaemu)
  set_tests_properties(check_cudaemu PROPERTIES ENVIRONMENT "AG_PLUGINS=;${AG_TEST_ENV_cudaemu}"
                       TIMEOUT 1800)
endif()
