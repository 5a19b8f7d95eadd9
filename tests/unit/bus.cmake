# Unit tests of the bus foundation in nv_common: framing and validation, config, trace ids,
# the token bucket and error codes. No sockets beyond inproc://, no timing.
foreach(t frames_test config_test trace_id_test token_bucket_test bus_errors_test json_test)
  nv_add_gtest(NAME ${t}
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/${t}.cc
    LIBS nv_common
    LABELS unit
    TIMEOUT 60)
endforeach()

# The token bucket is also the rate-limit layer's proof: it refuses the excess, admits the refill.
set_tests_properties(token_bucket_test PROPERTIES LABELS "unit;security")
# frames_test reads a fuzz reproducer from tests/fuzz/corpus (NV_SOURCE_DIR under ctest).
target_compile_definitions(frames_test PRIVATE NV_TEST_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
