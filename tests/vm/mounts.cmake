# Host directories in sandboxes (issue 15) with real microVMs: ro/rw mounts, sync, escapes,
# refusal before any lease, fork, destroy, quotas. Needs root and the guest image.
if(TARGET nv-sandbox-executor AND TARGET nv-mount-copier AND TARGET nv_test_support)
  nv_add_gtest(NAME mounts_vm_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/mounts_vm_test.cc
               LIBS nv_common nv_exec_executor nv_test_support LABELS vm security TIMEOUT 2400)
  add_dependencies(mounts_vm_test nv-sandbox-executor nv-vm-pool-manager nv-mount-copier)
  if(TARGET nv-orchestrator)
    add_dependencies(mounts_vm_test nv-orchestrator)
  endif()
endif()
