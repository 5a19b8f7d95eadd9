# The "sandbox" service (sandboxes that live) through a real in-process broker and the typed
# client, with a fake pool and the real guest agent Session on socketpairs (no VMs).
if(TARGET nv_exec_executor AND TARGET nv_guest_agent_core)
  nv_add_gtest(NAME sandbox_service_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/sandbox_service_test.cc
    LIBS nv_broker nv_exec_executor nv_guest_agent_core
    LABELS integration
    TIMEOUT 300)
  target_include_directories(sandbox_service_test PRIVATE ${PROJECT_SOURCE_DIR}/services)
endif()
