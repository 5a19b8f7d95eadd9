# Faults on the VM side (issue 11 findings 1 and 4, issue 12 shutdown): SIGKILL of the sentinel
# (pinned egress stays, fail-closed leasing) and of the pool manager (VMMs die with it, the next
# one reclaims leftovers), then a SIGTERM that leaves nothing. Real QEMU (TCG), BPF, cgroups:
# needs root and the guest image.
nv_add_gtest(NAME fault_pool_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/pool_fault_test.cc
  LIBS nv_vm nv_common nv_test_support
  LABELS fault vm TIMEOUT 900)
add_dependencies(fault_pool_test nv-vm-pool-manager nv-ebpf-sentinel nv-orchestrator)

# Issue 11's acceptance, `nv up` then `nv down` with nothing left (processes, cgroups, jail dirs,
# sockets, bpffs pins), by tools/updown_cycles.sh. The acceptance run is 20 cycles (~15-25 s each
# here with one tier, ~1 min with all three under TCG); CI runs 2 to stay inside its budget.
add_test(NAME fault_updown_cycles
  COMMAND ${CMAKE_SOURCE_DIR}/tools/updown_cycles.sh 2 ${CMAKE_BINARY_DIR})
set_tests_properties(fault_updown_cycles PROPERTIES LABELS "fault;vm" TIMEOUT 900
  SKIP_RETURN_CODE 77 RUN_SERIAL TRUE)

# The fault suite's VMM case: SIGKILL the QEMU processes under two nv-exec runs and an agent
# task on a real stack (nv up); every client returns within 10 s, the next request succeeds,
# nv down leaves nothing. Real QEMU (TCG): needs root and the guest image.
if(TARGET nv_test_support)
  nv_add_gtest(NAME fault_vmm_kill_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/vmm_kill_test.cc
    LIBS nv_common nv_test_support
    LABELS fault vm TIMEOUT 1200)
  target_include_directories(fault_vmm_kill_test PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  add_dependencies(fault_vmm_kill_test nv nv-orchestrator nv-vm-pool-manager nv-sandbox-executor
                   nv-llm-gateway nv-ebpf-sentinel nv-exec nv-submit)
endif()
