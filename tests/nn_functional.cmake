ag_add_backend_test(nn_functional ${CMAKE_CURRENT_LIST_DIR}/test_nn_functional.c)
