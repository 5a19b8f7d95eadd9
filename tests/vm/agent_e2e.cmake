# agent_e2e_test: nv up → nv-submit → a real microVM runs the model's code → the answer; over the
# Ollama and the OpenAI wire formats; nv down. Also a task with a mounted host project (issue 15).
# Skips when the VM services or the guest image are not built.
if(TARGET nv_test_support)
  nv_add_gtest(NAME agent_e2e_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/agent_e2e_test.cc
    LIBS nv_test_support nv_common
    LABELS vm
    TIMEOUT 1500)
  target_include_directories(agent_e2e_test PRIVATE ${RAPIDJSON_INCLUDE_DIRS})
  target_compile_definitions(agent_e2e_test PRIVATE NV_TEST_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                             NV_TEST_BIN_DIR="${CMAKE_BINARY_DIR}/bin"
                             NV_TEST_BUILD_DIR="${CMAKE_BINARY_DIR}")
  add_dependencies(agent_e2e_test nv nv-orchestrator nv-llm-gateway nv-submit)
endif()
