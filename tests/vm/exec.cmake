# exec_test: nv-sandbox-executor and nv-exec end to end against real microVMs (label vm).
if(TARGET nv-sandbox-executor AND TARGET nv_test_support)
  nv_add_gtest(NAME exec_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/exec_test.cc
               LIBS nv_common nv_test_support LABELS vm TIMEOUT 900)
  # The binaries it starts are built with it.
  add_dependencies(exec_test nv-sandbox-executor nv-exec)
  foreach(t nv-orchestrator nv-vm-pool-manager)
    if(TARGET ${t})
      add_dependencies(exec_test ${t})
    endif()
  endforeach()
endif()
