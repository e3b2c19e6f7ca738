# Plugin loader tests; included from tests/CMakeLists.txt.
#
# The fixture plugins are MODULE libraries built from one source,
# tests/fixtures/plugin_fixture.c, once per variant <variant>:<namespace>:<break>: plugin
# <variant> with op <namespace>::scale, and <break> naming what is wrong with it (NONE for
# the good ones). They land in a directory of their own as libag_plugin_<variant>.so.

set(AG_PLUGIN_FIXTURES_DIR ${CMAKE_CURRENT_BINARY_DIR}/plugin_fixtures)
set(ag_plugin_fixtures
  fixture:fixture:NONE
  other:other:NONE
  dup:fixture:NONE # fixture::scale a second time
  dupself:dupself:DUP_SELF
  noentry:noentry:NO_ENTRY
  nullinfo:nullinfo:NULL_INFO
  badmajor:badmajor:MAJOR
  smallinfo:smallinfo:SMALL_INFO
  noinit:noinit:NO_INIT
  initfail:initfail:INIT
  nested:nested:NESTED
  badschema:badschema:SCHEMA
  noshape:noshape:NO_SHAPE
  smallop:smallop:SMALL_OP
  badsource:badsource:BAD_SOURCE # loads; its sources fail to build (test_source_kernels)
  minor10:minor10:MINOR_1_0) # a good plugin built for plugin ABI 1.0
foreach(fixture IN LISTS ag_plugin_fixtures)
  string(REPLACE ":" ";" fixture ${fixture})
  list(GET fixture 0 variant)
  list(GET fixture 1 namespace)
  list(GET fixture 2 break)
  set(target ag_plugin_fixture_${variant})
  add_library(${target} MODULE ${CMAKE_CURRENT_LIST_DIR}/fixtures/plugin_fixture.c)
  target_link_libraries(${target} PRIVATE ag)
  target_compile_definitions(${target} PRIVATE
    FIXTURE_NAME="${variant}" FIXTURE_OP="${namespace}::scale" FIXTURE_BREAK=BREAK_${break})
  set_target_properties(${target} PROPERTIES
    PREFIX "lib"
    OUTPUT_NAME ag_plugin_${variant}
    LIBRARY_OUTPUT_DIRECTORY ${AG_PLUGIN_FIXTURES_DIR})
  list(APPEND ag_plugin_fixture_targets ${target})
endforeach()

ag_add_check_test(plugin_loader ${CMAKE_CURRENT_LIST_DIR}/test_plugin_loader.c)
target_include_directories(test_plugin_loader PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../core)
target_link_libraries(test_plugin_loader PRIVATE ${CMAKE_DL_LIBS})
target_compile_definitions(test_plugin_loader PRIVATE
  AG_TEST_PLUGINS="${AG_PLUGIN_FIXTURES_DIR}"
  AG_TEST_CLI="$<TARGET_FILE:ag_cli>")
# The tests load the fixtures and run the CLI.
add_dependencies(test_plugin_loader ${ag_plugin_fixture_targets} ag_cli)
