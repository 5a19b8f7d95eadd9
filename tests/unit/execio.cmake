# Program output as the model and the tools see it: the UTF-8 validator (utf8_test) and the
# rendering of an execution result into the model's tool message (tool_output_test).
nv_add_gtest(NAME utf8_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/utf8_test.cc
             LIBS nv_common LABELS unit TIMEOUT 60)
if(TARGET nv_agent)
  nv_add_gtest(NAME tool_output_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/tool_output_test.cc
               LIBS nv_agent LABELS unit TIMEOUT 60)
  target_include_directories(tool_output_test PRIVATE ${PROJECT_SOURCE_DIR}/services)
endif()
