# RSS must stay flat over 10,000 training steps (AG_MEMORY_LOOP_STEPS lowers the count for
# slow builds). Included from tests/CMakeLists.txt.
ag_add_check_test(memory_loop ${CMAKE_CURRENT_LIST_DIR}/test_memory_loop.c)
