# Guest networking under policy (issue 16), with real microVMs (QEMU; TCG here) behind a real
# nv-vm-pool-manager --net whose uplink is a network namespace the test makes ("the internet",
# 198.51.100.0/24 on its loopback, python3 http.server): allow lists, the operator's always-deny
# list, sandbox isolation, forks with their own MAC and address. Needs root, nsenter and
# $NV_BUILD_DIR/guest/{vmlinux,rootfs.ext4}.
if(TARGET nv-vm-pool-manager AND TARGET nv_exec_executor)
  nv_add_gtest(NAME net_vm_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/net_vm_test.cc
    LIBS nv_vm nv_exec_executor nv_common nv_test_support
    LABELS vm security
    TIMEOUT 1500)
  add_dependencies(net_vm_test nv-vm-pool-manager)
endif()
