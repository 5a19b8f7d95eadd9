nv_add_gtest(NAME security_cgroup_proof_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/cgroup_proof_test.cc
  LIBS nv_vm
  LABELS security TIMEOUT 120)
