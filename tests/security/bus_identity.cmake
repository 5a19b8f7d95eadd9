# Issue 11 finding 9 ("who may speak"): roles bound to peer uids (ipc://, an intruder run as
# nobody) and CURVE keys (tcp://) against the in-process broker. Needs root (setresuid).
nv_add_gtest(NAME security_bus_identity_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/bus_identity_test.cc
  LIBS nv_broker
  LABELS security integration
  TIMEOUT 120)
target_include_directories(security_bus_identity_test PRIVATE ${PROJECT_SOURCE_DIR}/services)
