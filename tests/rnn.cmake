# Recurrent cells (ops/rnn.c) and modules (nn/rnn_layers.c): values and gradients against
# PyTorch, gradcheck/gradgradcheck/forward mode in float64, names, init, errors; on every
# backend of AG_TEST_BACKENDS. Included from tests/CMakeLists.txt.
ag_add_backend_test(rnn ${CMAKE_CURRENT_LIST_DIR}/test_rnn.c)
