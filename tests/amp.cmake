# Mixed precision (float16/bfloat16, autocast, GradScaler; docs/amp.md) on every backend.
# Included from tests/CMakeLists.txt.
ag_add_backend_test(amp ${CMAKE_CURRENT_LIST_DIR}/test_amp.c)
