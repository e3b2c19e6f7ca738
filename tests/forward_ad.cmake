# Forward-mode AD (core/forward_ad.c): the dual level, tangents through ops, composition
# with reverse mode, in-place ops, on every backend. Included from tests/CMakeLists.txt.
ag_add_backend_test(forward_ad ${CMAKE_CURRENT_LIST_DIR}/test_forward_ad.c)
