# Network policy validation (issue 16): CIDR[:port] and domain entries, the always-deny list.
nv_add_gtest(NAME net_policy_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/net_policy_test.cc
  LIBS nv_vm
  LABELS unit security
  TIMEOUT 60)
