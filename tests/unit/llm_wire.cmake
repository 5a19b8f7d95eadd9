# The model-server reply parsers (Ollama, OpenAI; whole bodies and streams) on fixed inputs,
# among them the reproducers of tests/fuzz/corpus/{ollama,openai}_*.
nv_add_gtest(NAME llm_wire_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/llm_wire_test.cc
  LIBS nv_llm_client
  LABELS unit
  TIMEOUT 60)
target_include_directories(llm_wire_test PRIVATE ${RAPIDJSON_INCLUDE_DIRS})
target_compile_definitions(llm_wire_test PRIVATE NV_TEST_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
