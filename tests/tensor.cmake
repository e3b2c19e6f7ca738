# Tensors themselves: creation, random sampling, inspection, printing, devices, names,
# references and scopes, errors. Included from tests/CMakeLists.txt.
ag_add_check_test(tensor ${CMAKE_CURRENT_LIST_DIR}/test_tensor.c)
# Two tests check that scopes and errors are per thread.
target_link_libraries(test_tensor PRIVATE Threads::Threads)
