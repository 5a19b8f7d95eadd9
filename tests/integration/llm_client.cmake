# llm_client_test: nv_llm_client against tests/fixtures/fake_llm.py over real loopback HTTP.
nv_add_gtest(NAME llm_client_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/llm_client_test.cc
  LIBS nv_llm_client CURL::libcurl
  LABELS integration
  TIMEOUT 120)
target_include_directories(llm_client_test PRIVATE ${RAPIDJSON_INCLUDE_DIRS})
# Where fake_llm.py lives when the binary runs outside ctest (ctest sets NV_SOURCE_DIR).
target_compile_definitions(llm_client_test PRIVATE NV_TEST_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
