# Optimizers, clipping and schedulers against PyTorch 1.13 (tests/reference/optim.py).
# A second cpu device for the gradient-on-another-device error.
ag_add_backend_test(optim ${CMAKE_CURRENT_LIST_DIR}/test_optim.c ENV AG_CPU_DEVICES=2)
