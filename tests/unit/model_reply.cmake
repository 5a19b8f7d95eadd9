# model_reply_test: the agent's reading of model replies (call ids, fences, arguments, reply
# kinds) and the gateway's <think> split. Pure functions.
nv_add_gtest(NAME model_reply_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/model_reply_test.cc
  LIBS nv_agent nv_llm_client
  LABELS unit
  TIMEOUT 60)
target_include_directories(model_reply_test PRIVATE ${PROJECT_SOURCE_DIR}/services/orchestrator)
