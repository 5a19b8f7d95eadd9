# nv-audit: the event stream as JSON lines (topic filter, --follow, --since-start).
add_executable(nv-audit ${CMAKE_CURRENT_LIST_DIR}/audit/main.cc)
target_link_libraries(nv-audit PRIVATE nv_common)
nv_warnings(nv-audit)
