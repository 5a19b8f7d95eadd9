add_executable(nv ${CMAKE_CURRENT_LIST_DIR}/nv/launcher.cc ${CMAKE_CURRENT_LIST_DIR}/nv/supervisor.cc)
target_link_libraries(nv PRIVATE nv_common)
nv_warnings(nv)
