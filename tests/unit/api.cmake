# nv-api's pure parts: traceparent parsing (W3C Trace Context), strict JSON bodies, the bus
# error → HTTP status table, API keys (generation, the key file, verification).
if(TARGET nv_api)
  nv_add_gtest(NAME api_unit_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/api_unit_test.cc
    LIBS nv_api
    LABELS unit
    TIMEOUT 60)
endif()
