# Sandboxes that live end to end through the bus with real microVMs: nv-orchestrator,
# nv-vm-pool-manager and nv-sandbox-executor as children, driven by the typed sandbox client
# (files and python contexts across execs, background processes, pause/resume, fork, snapshot,
# real idle reaping, SIGKILLed executor and pool manager). Needs root and the guest image.
if(TARGET nv-sandbox-executor AND TARGET nv-vm-pool-manager AND TARGET nv_test_support)
  nv_add_gtest(NAME sandbox_e2e_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/sandbox_e2e_test.cc
               LIBS nv_common nv_vm nv_test_support LABELS vm TIMEOUT 2400)
  add_dependencies(sandbox_e2e_test nv-sandbox-executor nv-vm-pool-manager)
  if(TARGET nv-orchestrator)
    add_dependencies(sandbox_e2e_test nv-orchestrator)
  endif()
endif()
