# PNG images (ag_png_save): written here, then parsed back chunk by chunk, with the IDAT
# stream inflated by zlib and compared byte by byte. Included from tests/CMakeLists.txt.
ag_add_check_test(image_io ${CMAKE_CURRENT_LIST_DIR}/test_image_io.c)
find_package(ZLIB REQUIRED)
target_link_libraries(test_image_io PRIVATE ZLIB::ZLIB)
