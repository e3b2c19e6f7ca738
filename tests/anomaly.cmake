# Anomaly mode (core/anomaly.c) on every backend, and once more with AG_DETECT_ANOMALY=1
# turning it on by default. Included from tests/CMakeLists.txt.
ag_add_backend_test(anomaly ${CMAKE_CURRENT_LIST_DIR}/test_anomaly.c)
add_test(NAME anomaly_env COMMAND test_anomaly)
set_tests_properties(anomaly_env PROPERTIES
  ENVIRONMENT "CK_FORK=no;AG_BACKEND=cpu;AG_DETECT_ANOMALY=1")
