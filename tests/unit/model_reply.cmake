# model_reply_test: the agent's reading of model replies (call ids, fences, arguments, reply
# kinds) and the gateway's <think> split. Pure functions.
nv_add_gtest(NAME model_reply_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/model_reply_test.cc
  LIBS nv_agent nv_llm_client
  LABELS unit
  TIMEOUT 60)
target_include_directories(model_reply_test PRIVATE ${PROJECT_SOURCE_DIR}/services/orchestrator)

# agent_tools_test: the file tools' arguments, paths and read rendering; tool specs per mode.
nv_add_gtest(NAME agent_tools_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/agent_tools_test.cc
  LIBS nv_agent
  LABELS unit
  TIMEOUT 60)
target_include_directories(agent_tools_test PRIVATE ${PROJECT_SOURCE_DIR}/services/orchestrator
                                                    ${RAPIDJSON_INCLUDE_DIRS})
