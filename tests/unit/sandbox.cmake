# Sandboxes that live (schemas/sandbox.capnp): the typed client's ids, routing and conversions.
nv_add_gtest(NAME sandbox_client_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/sandbox_client_test.cc
  LIBS nv_common
  LABELS unit
  TIMEOUT 60)
# The executor's sandbox registry (SQLite), the reaper's rule and request validation.
if(TARGET nv_exec_executor)
  nv_add_gtest(NAME sandbox_registry_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/sandbox_registry_test.cc
    LIBS nv_exec_executor PkgConfig::SQLITE3
    LABELS unit
    TIMEOUT 60)
  target_include_directories(sandbox_registry_test PRIVATE ${PROJECT_SOURCE_DIR}/services)
endif()
# Host directory mounts on the client side: --mount parsing, JSON shapes, schema round trips.
nv_add_gtest(NAME sandbox_mounts_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/sandbox_mounts_test.cc
  LIBS nv_common
  LABELS unit
  TIMEOUT 60)
# The inference bridge's HTTP side (issue 16): parsing, policy, the APIs' answer shapes.
if(TARGET nv_exec_executor)
  nv_add_gtest(NAME inference_api_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/inference_api_test.cc
    LIBS nv_exec_executor
    LABELS unit
    TIMEOUT 60)
endif()
