# The agent's text tool-call parser on fixed inputs, among them the reproducers of
# tests/fuzz/corpus/text_tool_calls (deep nesting, quadratic scans).
nv_add_gtest(NAME text_tool_calls_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/text_tool_calls_test.cc
  LIBS nv_agent
  LABELS unit
  TIMEOUT 60)
target_include_directories(text_tool_calls_test PRIVATE ${PROJECT_SOURCE_DIR}/services)
