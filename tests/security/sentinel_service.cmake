nv_add_gtest(NAME security_sentinel_service_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/sentinel_service_test.cc
  LIBS nv_common nv_test_support
  LABELS security TIMEOUT 180)
