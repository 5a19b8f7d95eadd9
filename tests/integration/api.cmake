# api_test: nv-api over real HTTP (Python's http.client, curl) against a real stack without VMs:
# auth, OpenAPI vs routes, bad input (100 MiB body, slowloris, 1,000-request burst), traceparent,
# metrics, tasks over SSE and through the Python SDK (clients/python).
if(TARGET nv-api)
  add_test(NAME api_test COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/api/api_test.py)
  set_tests_properties(api_test PROPERTIES LABELS integration TIMEOUT 600
    ENVIRONMENT "NV_BIN_DIR=${CMAKE_BINARY_DIR}/bin;NV_SOURCE_DIR=${PROJECT_SOURCE_DIR};NV_BUILD_DIR=${CMAKE_BINARY_DIR}")
endif()
