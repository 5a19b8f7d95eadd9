# Real microVMs (QEMU; TCG here): pool in snapshot mode, jails, cgroups, the guest agent, and the
# nv-vm-pool-manager service over its socket. Needs root and $NV_BUILD_DIR/guest/{vmlinux,rootfs.ext4}.
nv_add_gtest(NAME vm_pool_vm_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/vm_pool_test.cc
  LIBS nv_vm nv_common nv_test_support
  LABELS vm
  TIMEOUT 400)
if(TARGET nv-vm-pool-manager)
  add_dependencies(vm_pool_vm_test nv-vm-pool-manager)
endif()
