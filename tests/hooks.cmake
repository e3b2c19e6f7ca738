# Hooks and their firing order (tensor, retain_grad, post-accumulate-grad, module
# pre/forward hooks) on every backend. Included from tests/CMakeLists.txt.
ag_add_backend_test(hooks ${CMAKE_CURRENT_LIST_DIR}/test_hooks.c)
