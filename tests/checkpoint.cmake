# Activation checkpointing (ag_checkpoint) and the memory counters it is measured with, on
# every backend. Included from tests/CMakeLists.txt.
ag_add_backend_test(checkpoint ${CMAKE_CURRENT_LIST_DIR}/test_checkpoint.c)
