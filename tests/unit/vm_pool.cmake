# Pool logic with a fake backend and guest link (no VMs, no root needed).
nv_add_gtest(NAME vm_pool_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/vm_pool_test.cc
  LIBS nv_vm
  LABELS unit
  TIMEOUT 120)
# Leases waiting for a full pool (sandbox and plain) never block the release that frees a VM.
nv_add_gtest(NAME pool_lease_wait_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/pool_lease_wait_test.cc
  LIBS nv_vm
  LABELS unit
  TIMEOUT 300)
