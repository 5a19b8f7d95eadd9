# Start-up mistakes answered at once: stray arguments, a /metrics port held by another program.
add_test(NAME startup_errors_test COMMAND ${CMAKE_CURRENT_LIST_DIR}/startup_errors_test.sh)
set_tests_properties(startup_errors_test PROPERTIES LABELS integration TIMEOUT 120
  ENVIRONMENT "NV_BIN_DIR=${CMAKE_BINARY_DIR}/bin")
