# agent_mounts_e2e_test: a task with a mounted host project (issue 15) on a real stack with real
# microVMs: the guest reads a file of it, the result file reaches the host with the exact bytes;
# a mount outside --mount-root fails the task with mountRefused and no model call.
if(TARGET nv_test_support)
  nv_add_gtest(NAME agent_mounts_e2e_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/agent_mounts_e2e_test.cc
    LIBS nv_test_support nv_common
    LABELS vm
    TIMEOUT 1500)
  target_include_directories(agent_mounts_e2e_test PRIVATE ${RAPIDJSON_INCLUDE_DIRS})
  target_compile_definitions(agent_mounts_e2e_test PRIVATE NV_TEST_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                             NV_TEST_BIN_DIR="${CMAKE_BINARY_DIR}/bin"
                             NV_TEST_BUILD_DIR="${CMAKE_BINARY_DIR}")
  add_dependencies(agent_mounts_e2e_test nv nv-orchestrator nv-llm-gateway nv-submit)
endif()
