nv_add_gtest(NAME security_alert_destroys_vm_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/alert_destroys_vm_test.cc
  LIBS nv_common nv_test_support
  LABELS security vm TIMEOUT 400)
