# nv-exec: run code once in a fresh microVM through the orchestrator's "exec" service.
add_executable(nv-exec ${CMAKE_CURRENT_LIST_DIR}/exec.cc)
target_link_libraries(nv-exec PRIVATE nv_common)
target_include_directories(nv-exec PRIVATE ${RAPIDJSON_INCLUDE_DIRS})
nv_warnings(nv-exec)
