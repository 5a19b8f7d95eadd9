# Sandboxes that live, pool side, with real microVMs (QEMU; TCG here) behind a real
# nv-vm-pool-manager spoken to through the executor's PoolClient: fork 4 of a VM holding a
# 100 MiB file in RAM, pause/resume, snapshot → restore, SIGKILL of the pool manager with a
# running and a paused sandbox. Needs root and $NV_BUILD_DIR/guest/{vmlinux,rootfs.ext4}.
if(TARGET nv-vm-pool-manager AND TARGET nv_exec_executor)
  nv_add_gtest(NAME pool_sandbox_vm_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/pool_sandbox_vm_test.cc
    LIBS nv_vm nv_exec_executor nv_common nv_test_support
    LABELS vm
    TIMEOUT 1500)
  add_dependencies(pool_sandbox_vm_test nv-vm-pool-manager)
endif()
