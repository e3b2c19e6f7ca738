# Allocation-failure injection (tests/test_alloc_failure.c): every allocation of building a
# model, two training steps, a checkpoint save and a load made to fail in turn
# (ag_debug_fail_allocation). Included from tests/CMakeLists.txt.
ag_add_check_test(alloc_failure ${CMAKE_CURRENT_LIST_DIR}/test_alloc_failure.c)
