add_executable(nv ${CMAKE_CURRENT_LIST_DIR}/nv/launcher.cc ${CMAKE_CURRENT_LIST_DIR}/nv/supervisor.cc
                  ${CMAKE_CURRENT_LIST_DIR}/nv/sandbox_cmd.cc
                  ${CMAKE_CURRENT_LIST_DIR}/nv/sandbox_print.cc)
target_link_libraries(nv PRIVATE nv_common)
target_include_directories(nv PRIVATE ${RAPIDJSON_INCLUDE_DIRS})
nv_warnings(nv)
