# nv-submit: submit a task to the orchestrator's agent loop and follow its progress.
add_executable(nv-submit ${CMAKE_CURRENT_LIST_DIR}/submit.cc)
target_link_libraries(nv-submit PRIVATE nv_common)
nv_warnings(nv-submit)
