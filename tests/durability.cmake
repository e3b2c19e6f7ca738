# Durability of saved files (tests/test_durability.c): checkpoint saves killed with SIGKILL
# at random points, and the CRC-32 in a safetensors header. Included from tests/CMakeLists.txt.
ag_add_check_test(durability ${CMAKE_CURRENT_LIST_DIR}/test_durability.c)
find_package(ZLIB REQUIRED)
target_link_libraries(test_durability PRIVATE ZLIB::ZLIB)
