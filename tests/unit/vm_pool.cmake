# Pool logic with a fake backend and guest link (no VMs, no root needed).
nv_add_gtest(NAME vm_pool_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/vm_pool_test.cc
  LIBS nv_vm
  LABELS unit
  TIMEOUT 120)
