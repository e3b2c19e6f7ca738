# View, indexing and joining op tests; included from tests/CMakeLists.txt, which has found
# Check (PkgConfig::CHECK) and defines ag_add_check_test.
ag_add_backend_test(ops_views_index ${CMAKE_CURRENT_LIST_DIR}/test_ops_views_index.c)
