# nv-keygen: makes a CURVE key pair for tcp:// bus endpoints (NAME.key 0600, NAME.pub).
add_executable(nv-keygen ${CMAKE_CURRENT_LIST_DIR}/keygen.cc)
target_link_libraries(nv-keygen PRIVATE nv_common)
nv_warnings(nv-keygen)
