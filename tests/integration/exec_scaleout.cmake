# exec_scaleout_test: two executors in two network namespaces over CURVE tcp, each with its own
# VM pool (label vm: it boots real microVMs).
if(TARGET nv-sandbox-executor AND TARGET nv_test_support)
  nv_add_gtest(NAME exec_scaleout_test
               SOURCES ${CMAKE_CURRENT_LIST_DIR}/exec_scaleout_test.cc
               LIBS nv_common nv_test_support LABELS vm TIMEOUT 400)
  add_dependencies(exec_scaleout_test nv-sandbox-executor)
  foreach(t nv-orchestrator nv-vm-pool-manager)
    if(TARGET ${t})
      add_dependencies(exec_scaleout_test ${t})
    endif()
  endforeach()
endif()
