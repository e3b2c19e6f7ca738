# Distributed training (dist/, include/ag/dist.h) under mpirun with 2 processes; only when
# libag_dist is built (MPI found). Included from tests/CMakeLists.txt.
# --oversubscribe: 2 ranks may share fewer cores; --allow-run-as-root: CI runs as root.
set(AG_MPIRUN ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 2 --oversubscribe --allow-run-as-root)
add_executable(test_dist ${CMAKE_CURRENT_LIST_DIR}/test_dist.c)
target_link_libraries(test_dist PRIVATE ag_dist ag PkgConfig::CHECK m Threads::Threads)
target_include_directories(test_dist PRIVATE ${CMAKE_CURRENT_LIST_DIR})
add_test(NAME dist COMMAND ${AG_MPIRUN} $<TARGET_FILE:test_dist>)
# A rank that dies must fail the job with a message within the timeout, not hang it.
add_test(NAME dist_dead_rank
  COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/dist_dead_rank.sh $<TARGET_FILE:test_dist> ${AG_MPIRUN})
# The ranks share this machine's cores with other tests: no parallel run beside them.
# Sanitizer builds: Open MPI's deliberate leaks are suppressed (tests/lsan_mpi.supp); its
# libraries have no frame pointers, so only the slow unwinder reaches their frames.
set_tests_properties(dist dist_dead_rank PROPERTIES
  ENVIRONMENT "CK_FORK=no;AG_BACKEND=cpu;OMP_NUM_THREADS=1;OMPI_MCA_mca_base_component_disable_dlclose=1;ASAN_OPTIONS=fast_unwind_on_malloc=0;LSAN_OPTIONS=suppressions=${CMAKE_CURRENT_LIST_DIR}/lsan_mpi.supp:fast_unwind_on_malloc=0"
  TIMEOUT 120 RUN_SERIAL TRUE)
# `ag train --ddp` on 2 processes: only rank 0 prints and saves.
add_test(NAME dist_train
  COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/dist_train.sh $<TARGET_FILE:ag_cli> ${AG_MPIRUN})
set_tests_properties(dist_train PROPERTIES
  ENVIRONMENT "AG_BACKEND=cpu;OMP_NUM_THREADS=1;OMPI_MCA_mca_base_component_disable_dlclose=1;ASAN_OPTIONS=fast_unwind_on_malloc=0;LSAN_OPTIONS=suppressions=${CMAKE_CURRENT_LIST_DIR}/lsan_mpi.supp:fast_unwind_on_malloc=0"
  TIMEOUT 200 RUN_SERIAL TRUE SKIP_RETURN_CODE 77)
# The same on the OpenCL backend (PoCL in CI): tensors outside host memory, staged through
# it by the communicator and DDP. Leak checking stays with the cpu run of the same binary:
# with PoCL's and Open MPI's threads together, LSan's stop-the-world tracer itself crashed
# (signal 11 in the tracer, not in ag) in a CI sanitizer run.
if(TARGET ag_backend_opencl)
  add_test(NAME dist_opencl COMMAND ${AG_MPIRUN} $<TARGET_FILE:test_dist>)
  set_tests_properties(dist_opencl PROPERTIES
    ENVIRONMENT "CK_FORK=no;AG_BACKEND=opencl;OMP_NUM_THREADS=1;OMPI_MCA_mca_base_component_disable_dlclose=1;ASAN_OPTIONS=fast_unwind_on_malloc=0:detect_leaks=0"
    TIMEOUT 200 RUN_SERIAL TRUE)
endif()
