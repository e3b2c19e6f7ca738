# Reductions and linear algebra: values, gradcheck/gradgradcheck, edge shapes, errors.
ag_add_backend_test(ops_reduce_linalg ${CMAKE_CURRENT_LIST_DIR}/test_ops_reduce_linalg.c)
