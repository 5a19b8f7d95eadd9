# exec_io_test: output head + tail and the tool message, UTF-8 in --json, the caller's
# environment, Ctrl-C on nv-exec / nv-submit — against real microVMs (label vm).
if(TARGET nv-sandbox-executor AND TARGET nv_test_support AND TARGET nv_agent)
  nv_add_gtest(NAME exec_io_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/exec_io_test.cc
               LIBS nv_common nv_agent nv_test_support LABELS vm TIMEOUT 1200)
  target_include_directories(exec_io_test PRIVATE ${PROJECT_SOURCE_DIR}/services)
  foreach(t nv-orchestrator nv-vm-pool-manager nv-exec nv-submit nv-llm-gateway)
    if(TARGET ${t})
      add_dependencies(exec_io_test ${t})
    endif()
  endforeach()
endif()
