# Backend loader and `ag info` tests; included from tests/CMakeLists.txt.
#
# The fixture backends are MODULE libraries named like real backends
# (libag_backend_<name>.so) in their own directory, which the tests put on
# AG_BACKEND_PATH. tests/CMakeLists.txt has found Check (PkgConfig::CHECK) already.

set(AG_LOADER_FIXTURES_DIR ${CMAKE_CURRENT_BINARY_DIR}/fixtures)
set(ag_loader_fixtures badmajor:bad_major noentry:no_entry partial:partial initfail:init_fails)
foreach(fixture IN LISTS ag_loader_fixtures)
  string(REPLACE ":" ";" fixture ${fixture})
  list(GET fixture 0 name)
  list(GET fixture 1 source)
  add_library(ag_fixture_${name} MODULE ${CMAKE_CURRENT_LIST_DIR}/fixtures/backend_${source}.c)
  target_include_directories(ag_fixture_${name} PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../include)
  set_target_properties(ag_fixture_${name} PROPERTIES
    PREFIX "lib"
    OUTPUT_NAME ag_backend_${name}
    LIBRARY_OUTPUT_DIRECTORY ${AG_LOADER_FIXTURES_DIR})
  list(APPEND ag_loader_fixture_targets ag_fixture_${name})
endforeach()

add_executable(test_backend_loader ${CMAKE_CURRENT_LIST_DIR}/test_backend_loader.c)
target_include_directories(test_backend_loader PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../core)
target_link_libraries(test_backend_loader PRIVATE ag PkgConfig::CHECK Threads::Threads)
target_compile_definitions(test_backend_loader PRIVATE
  AG_TEST_FIXTURES="${AG_LOADER_FIXTURES_DIR}"
  AG_TEST_LIBDIR="$<TARGET_FILE_DIR:ag>"
  AG_TEST_INSTALL_DIR="${CMAKE_INSTALL_FULL_LIBDIR}/ag"
  AG_TEST_CLI="$<TARGET_FILE:ag_cli>")
# The tests load the fixtures and the cpu backend at run time and run the CLI.
add_dependencies(test_backend_loader ${ag_loader_fixture_targets} ag_cli ag_backend_cpu)
add_test(NAME backend_loader COMMAND test_backend_loader)
