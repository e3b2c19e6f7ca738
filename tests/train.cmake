# The training recipe (train/, include/ag/train.h) and `ag train`, whose binary the test
# runs for the command-line cases. Included from tests/CMakeLists.txt.
ag_add_check_test(train ${CMAKE_CURRENT_LIST_DIR}/test_train.c)
target_compile_definitions(test_train PRIVATE AG_CLI_PATH="$<TARGET_FILE:ag_cli>")
add_dependencies(test_train ag_cli)
