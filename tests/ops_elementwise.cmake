# Elementwise ops: forward values against PyTorch, gradcheck/gradgradcheck over shapes,
# comparisons, int64, promotion, errors. Included from tests/CMakeLists.txt.
ag_add_backend_test(ops_elementwise ${CMAKE_CURRENT_LIST_DIR}/test_ops_elementwise.c)
