# Sandboxes that live (schemas/sandbox.capnp): the typed client's ids, routing and conversions.
nv_add_gtest(NAME sandbox_client_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/sandbox_client_test.cc
  LIBS nv_common
  LABELS unit
  TIMEOUT 60)
