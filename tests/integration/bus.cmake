# Bus integration tests: the orchestrator's broker in-process with real workers, clients and
# event publishers over ipc:// (broker_test) and CURVE over tcp://127.0.0.1 (curve_test).
nv_add_gtest(NAME broker_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/broker_test.cc
  LIBS nv_broker
  LABELS integration
  TIMEOUT 120)
target_include_directories(broker_test PRIVATE ${PROJECT_SOURCE_DIR}/services)

nv_add_gtest(NAME curve_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/curve_test.cc
  LIBS nv_broker
  LABELS integration
  TIMEOUT 120)
target_include_directories(curve_test PRIVATE ${PROJECT_SOURCE_DIR}/services)
# The keys are made by the real tool, found beside the other binaries.
add_dependencies(curve_test nv-keygen)
target_compile_definitions(curve_test PRIVATE NV_TEST_BIN_DIR="${CMAKE_BINARY_DIR}/bin")

# Issue 11's bus findings (unknown names, bounded history, pipelined answers, fail-fast, client
# liveness, reconnecting workers, admission control) against the in-process broker.
nv_add_gtest(NAME broker_fault_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/broker_fault_test.cc
  LIBS nv_broker
  LABELS integration fault
  TIMEOUT 180)
target_include_directories(broker_fault_test PRIVATE ${PROJECT_SOURCE_DIR}/services)
