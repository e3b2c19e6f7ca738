# Modules (nn/): parameters and names, init, forward against the functional ops, train/eval,
# forward hooks, gradients, a training loop, errors. Included from tests/CMakeLists.txt.
ag_add_check_test(nn_modules ${CMAKE_CURRENT_LIST_DIR}/test_nn_modules.c)
