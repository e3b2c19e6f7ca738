# IDX files, MNIST loading, the minibatch loader, safetensors and checkpoints. Included
# from tests/CMakeLists.txt. The tests read a fixture written by PyTorch's safetensors
# (tests/reference/safetensors_fixture.py) and the installed Fashion-MNIST, if present.
ag_add_check_test(data_io ${CMAKE_CURRENT_LIST_DIR}/test_data_io.c)
target_compile_definitions(test_data_io PRIVATE
  AG_TEST_FIXTURE_DIR="${CMAKE_CURRENT_LIST_DIR}/fixtures")
# The test writes IDX files of its own, plain and gzip.
find_package(ZLIB REQUIRED)
target_link_libraries(test_data_io PRIVATE ZLIB::ZLIB)
