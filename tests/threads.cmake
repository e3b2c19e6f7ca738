# Thread safety (docs/threads.md): independent graphs on several threads, per-thread grad
# mode, autocast and errors, racing first use. scripts/tsan.sh runs it under
# ThreadSanitizer. Included from tests/CMakeLists.txt.
ag_add_check_test(threads ${CMAKE_CURRENT_LIST_DIR}/test_threads.c)
