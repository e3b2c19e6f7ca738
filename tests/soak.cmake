# Soak test (tests/soak.c): training steps of a small model with RSS sampled; RSS growth
# after the warm-up must stay under 1 MiB and device memory must not grow. A plain program,
# not a Check test. ctest runs a short version; the long one is
#   build/bin/soak --steps 100000 --checkpoint-every 1000
# (docs/reliability.md). Included from tests/CMakeLists.txt.
add_executable(soak ${CMAKE_CURRENT_LIST_DIR}/soak.c)
target_link_libraries(soak PRIVATE ag PkgConfig::CHECK m)
target_include_directories(soak PRIVATE ${CMAKE_CURRENT_LIST_DIR})
if(AG_SANITIZE)
  # ASan's quarantine keeps freed memory out of reuse, so RSS grows by design: a short run
  # with the RSS limit off; LeakSanitizer at exit and the device-memory check still apply.
  # 2000 steps take about 1.5 s there.
  add_test(NAME soak COMMAND soak --steps 2000 --warmup 200 --sample-every 100
                                  --checkpoint-every 200 --no-rss-check)
else()
  # 18,000 steps after the warm-up: a leak of 64 bytes a step (with malloc's overhead)
  # reaches the 1 MiB limit. About 2 s on an idle 2-core machine.
  add_test(NAME soak COMMAND soak --steps 20000 --warmup 2000 --sample-every 100
                                  --checkpoint-every 1000)
endif()
# One OpenMP thread, as tests/dist.cmake: tiny ops stall on a loaded machine with more.
set_tests_properties(soak PROPERTIES ENVIRONMENT "AG_BACKEND=cpu;OMP_NUM_THREADS=1"
                                     TIMEOUT 300)
