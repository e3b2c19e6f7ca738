# libag_backend_cudaemu.so, the test-only backend "cudaemu": every source file of the CUDA
# backend (backends/cuda), its kernels compiled as host C++ by the C++ compiler, built
# against the host emulation of the CUDA runtime, cuBLAS and NVRTC in this directory, so
# that the <name>_cudaemu tests and `ag check --backend cudaemu` run the CUDA kernels in CI,
# which has no GPU. Included from tests/CMakeLists.txt where the CUDA backend is built (the
# toolkit's headers are needed); never installed. How it works: cuda_emu.h.
#
# The library goes to a directory of its own, which only the cudaemu tests put on
# AG_BACKEND_PATH (AG_TEST_ENV_cudaemu): `ag info`, `ag check` and `ag bench` in the build
# tree list the real backends only. By hand: AG_BACKEND_PATH=<build>/tests/cuda_emu
# AG_BACKEND=cudaemu.
#
# The kernel files are rewritten at build time (rewrite_launches.cmake turns each
# <<<...>>> launch into a call of the emulator), so every edit of them is picked up. The
# file list is the CUDA backend target's own. A CUDA call or device intrinsic that the
# emulation lacks fails this build, naming it: add it here.

include(CheckLanguage)
check_language(CXX)
if(NOT CMAKE_CXX_COMPILER)
  message(STATUS "cudaemu test backend skipped: no C++ compiler")
  return()
endif()
enable_language(CXX)

set(AG_CUDAEMU_DIR ${CMAKE_CURRENT_LIST_DIR})
get_target_property(AG_CUDAEMU_CUDA_DIR ag_backend_cuda SOURCE_DIR)
get_target_property(AG_CUDAEMU_CUDA_SOURCES ag_backend_cuda SOURCES)
set(AG_CUDAEMU_SOURCES "")
foreach(source IN LISTS AG_CUDAEMU_CUDA_SOURCES)
  get_filename_component(path ${source} ABSOLUTE BASE_DIR ${AG_CUDAEMU_CUDA_DIR})
  if(path MATCHES "\\.cu$")
    get_filename_component(name ${path} NAME_WE)
    set(generated ${CMAKE_CURRENT_BINARY_DIR}/cuda_emu/${name}.cpp)
    add_custom_command(OUTPUT ${generated}
      COMMAND ${CMAKE_COMMAND} -DIN=${path} -DOUT=${generated}
              -P ${AG_CUDAEMU_DIR}/rewrite_launches.cmake
      DEPENDS ${path} ${AG_CUDAEMU_DIR}/rewrite_launches.cmake
      COMMENT "cudaemu: ${name}.cu as host C++"
      VERBATIM)
    # The kernels' `#pragma unroll` means nothing to the host compiler.
    set_source_files_properties(${generated} PROPERTIES COMPILE_OPTIONS -Wno-unknown-pragmas)
    list(APPEND AG_CUDAEMU_SOURCES ${generated})
  else()
    list(APPEND AG_CUDAEMU_SOURCES ${path})
  endif()
endforeach()
# The loader looks for the entry of libag_backend_cudaemu.so; the real one keeps its table
# under another name (emu_backend.c). Source properties are per directory, so the CUDA
# backend's own build of the file is unaffected.
set_source_files_properties(${AG_CUDAEMU_CUDA_DIR}/cuda_backend.c PROPERTIES
  COMPILE_DEFINITIONS ag_backend_entry=cu_real_backend_entry)
# What the emulated NVRTC compiles plugin kernels with.
list(GET CUDAToolkit_INCLUDE_DIRS 0 AG_CUDAEMU_CUDA_INCLUDE)
set_source_files_properties(${AG_CUDAEMU_DIR}/emu_nvrtc.cpp PROPERTIES COMPILE_DEFINITIONS
  "AG_CUDAEMU_CXX=\"${CMAKE_CXX_COMPILER}\";AG_CUDAEMU_INCLUDE=\"${AG_CUDAEMU_DIR}\";AG_CUDAEMU_CUDA_INCLUDE=\"${AG_CUDAEMU_CUDA_INCLUDE}\"")

add_library(ag_backend_cudaemu SHARED ${AG_CUDAEMU_SOURCES}
  ${AG_CUDAEMU_DIR}/emu_backend.c
  ${AG_CUDAEMU_DIR}/emu_runtime.cpp
  ${AG_CUDAEMU_DIR}/emu_cudart.cpp
  ${AG_CUDAEMU_DIR}/emu_cublas.cpp
  ${AG_CUDAEMU_DIR}/emu_nvrtc.cpp)
target_include_directories(ag_backend_cudaemu PRIVATE ${AG_CUDAEMU_DIR} ${AG_CUDAEMU_CUDA_DIR}
                           ${PROJECT_SOURCE_DIR}/include)
target_include_directories(ag_backend_cudaemu SYSTEM PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
target_link_libraries(ag_backend_cudaemu PRIVATE Threads::Threads m ${CMAKE_DL_LIBS})
set_target_properties(ag_backend_cudaemu PROPERTIES
  LIBRARY_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/cuda_emu
  C_VISIBILITY_PRESET hidden
  CXX_VISIBILITY_PRESET hidden
  VISIBILITY_INLINES_HIDDEN ON
  CXX_STANDARD 20
  CXX_STANDARD_REQUIRED ON
  CXX_EXTENSIONS OFF)
# The top level sets C flags only. No contraction into fused multiply-adds: the kernels'
# __fmul_rn and friends must round each operation (cuda_emu.h).
target_compile_options(ag_backend_cudaemu PRIVATE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall> $<$<COMPILE_LANGUAGE:CXX>:-Wextra>
  $<$<COMPILE_LANGUAGE:CXX>:-Werror> $<$<COMPILE_LANGUAGE:CXX>:-ffp-contract=off>)
if(AG_SANITIZE)
  target_compile_options(ag_backend_cudaemu PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=address,undefined>
    $<$<COMPILE_LANGUAGE:CXX>:-fno-omit-frame-pointer>
    $<$<COMPILE_LANGUAGE:CXX>:-fno-sanitize-recover=undefined>)
else()
  # Catches any symbol that would have to come from libag at load time, and any CUDA
  # call without its emulation.
  target_link_options(ag_backend_cudaemu PRIVATE -Wl,--no-undefined)
endif()
# Environment of the cudaemu test variants (tests/CMakeLists.txt).
set(AG_TEST_ENV_cudaemu "AG_BACKEND_PATH=${CMAKE_CURRENT_BINARY_DIR}/cuda_emu")
