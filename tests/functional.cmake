# The functional transforms (core/functional.c: ag_vjp, ag_jvp, ag_hvp, ag_vhp, ag_jacobian,
# ag_hessian) against closed forms and each other, on every backend. Included from
# tests/CMakeLists.txt.
ag_add_backend_test(functional ${CMAKE_CURRENT_LIST_DIR}/test_functional.c)
