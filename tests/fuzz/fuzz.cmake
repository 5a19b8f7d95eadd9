# The `fuzz` label: build the libFuzzer targets (tests/fuzz/CMakeLists.txt, a clang project of
# its own, via tools/fuzz.sh --build), then run each for NV_FUZZ_SECONDS against its committed
# seed corpus. A finding fails the test; its input lands in <build>/fuzz/artifacts/<target>/.
set(NV_FUZZ_SECONDS 30 CACHE STRING "Seconds each fuzz target runs under ctest (label fuzz)")
set(NV_FUZZ_TARGETS bus_frames guest_agent guest_channel ollama_chat ollama_stream openai_chat
    openai_stream text_tool_calls config utf8 dns_query inference_request)

add_test(NAME fuzz_build COMMAND ${CMAKE_SOURCE_DIR}/tools/fuzz.sh --build)
set_tests_properties(fuzz_build PROPERTIES LABELS fuzz TIMEOUT 900 FIXTURES_SETUP nv_fuzz_bins
  ENVIRONMENT "NV_BUILD_DIR=${CMAKE_BINARY_DIR}")
foreach(t IN LISTS NV_FUZZ_TARGETS)
  add_test(NAME fuzz_${t} COMMAND ${CMAKE_SOURCE_DIR}/tools/fuzz.sh --ci ${t} ${NV_FUZZ_SECONDS})
  set_tests_properties(fuzz_${t} PROPERTIES LABELS fuzz TIMEOUT 300
    FIXTURES_REQUIRED nv_fuzz_bins ENVIRONMENT "NV_BUILD_DIR=${CMAKE_BINARY_DIR}")
endforeach()

# The generator of the binary seeds (tests/fuzz/make_seeds.cc), built with the main project.
add_executable(nv-fuzz-seeds ${CMAKE_CURRENT_LIST_DIR}/make_seeds.cc)
nv_warnings(nv-fuzz-seeds)
target_link_libraries(nv-fuzz-seeds PRIVATE nv_common nv_guest_agent_core)
set_target_properties(nv-fuzz-seeds PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
