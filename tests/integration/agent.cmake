# agent_test: the agent loop end to end on the host — nv-orchestrator and nv-llm-gateway as
# child processes, tests/fixtures/fake_llm.py as the model, an in-test double of the executor.
if(TARGET nv_test_support)
  nv_add_gtest(NAME agent_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/agent_test.cc
    LIBS nv_agent nv_common nv_test_support
    LABELS integration
    TIMEOUT 600)
  target_include_directories(agent_test PRIVATE ${PROJECT_SOURCE_DIR}/services/orchestrator
                                                ${RAPIDJSON_INCLUDE_DIRS})
  target_compile_definitions(agent_test PRIVATE NV_TEST_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                                                NV_TEST_BIN_DIR="${CMAKE_BINARY_DIR}/bin")
  # The binaries it runs.
  add_dependencies(agent_test nv-orchestrator nv-llm-gateway nv-submit)
  # The agent's one sandbox per task against a test double of the sandbox service.
  nv_add_gtest(NAME agent_sandbox_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/agent_sandbox_test.cc
    LIBS nv_agent nv_common nv_test_support
    LABELS integration
    TIMEOUT 300)
  target_include_directories(agent_sandbox_test PRIVATE ${PROJECT_SOURCE_DIR}/services/orchestrator
                                                        ${RAPIDJSON_INCLUDE_DIRS})
  target_compile_definitions(agent_sandbox_test PRIVATE NV_TEST_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                                                        NV_TEST_BIN_DIR="${CMAKE_BINARY_DIR}/bin")
  add_dependencies(agent_sandbox_test nv-orchestrator nv-llm-gateway nv-submit)
  # A task with host directories (issue 15) against the sandbox service's test double.
  nv_add_gtest(NAME agent_mounts_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/agent_mounts_test.cc
    LIBS nv_agent nv_common nv_test_support
    LABELS integration
    TIMEOUT 300)
  target_include_directories(agent_mounts_test PRIVATE ${PROJECT_SOURCE_DIR}/services/orchestrator
                                                       ${RAPIDJSON_INCLUDE_DIRS})
  target_compile_definitions(agent_mounts_test PRIVATE NV_TEST_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                                                       NV_TEST_BIN_DIR="${CMAKE_BINARY_DIR}/bin")
  add_dependencies(agent_mounts_test nv-orchestrator nv-llm-gateway nv-submit)
else()
  message(STATUS "agent_test: nv_test_support (tests/support) is missing; not built")
endif()
