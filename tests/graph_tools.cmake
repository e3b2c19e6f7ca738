# Graph pictures and traces (core/graph_dot.c, core/trace.c, `ag train --trace`): DOT
# export rendered with Graphviz's `dot` where installed, Chrome trace JSON parsed with
# cJSON. Included from tests/CMakeLists.txt.
find_package(PkgConfig REQUIRED)
pkg_check_modules(AG_GRAPH_TOOLS_CJSON REQUIRED IMPORTED_TARGET libcjson)
ag_add_check_test(graph_tools ${CMAKE_CURRENT_LIST_DIR}/test_graph_tools.c)
target_link_libraries(test_graph_tools PRIVATE PkgConfig::AG_GRAPH_TOOLS_CJSON)
target_compile_definitions(test_graph_tools PRIVATE AG_CLI_PATH="$<TARGET_FILE:ag_cli>")
add_dependencies(test_graph_tools ag_cli)
set_tests_properties(graph_tools PROPERTIES TIMEOUT 120)
