ag_add_backend_test(conv ${CMAKE_CURRENT_LIST_DIR}/test_conv.c)
