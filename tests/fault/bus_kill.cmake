# bus_kill_test: issue 11 findings 2 and 5 with real processes (SIGKILL / SIGSTOP of the
# orchestrator, the llm-gateway and a client). Label `fault`.
if(TARGET nv_test_support)
  nv_add_gtest(NAME bus_kill_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/bus_kill_test.cc
    LIBS nv_common nv_test_support
    LABELS fault
    TIMEOUT 300)
  target_include_directories(bus_kill_test PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  add_dependencies(bus_kill_test nv-orchestrator nv-llm-gateway nv-submit nv-exec)
endif()
