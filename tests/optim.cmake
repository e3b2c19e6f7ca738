# Optimizers, clipping and schedulers against PyTorch 1.13 (tests/reference/optim.py).
ag_add_check_test(optim ${CMAKE_CURRENT_LIST_DIR}/test_optim.c)
# A second cpu device for the gradient-on-another-device error.
set_tests_properties(optim PROPERTIES ENVIRONMENT "CK_FORK=no;AG_BACKEND=cpu;AG_CPU_DEVICES=2")
