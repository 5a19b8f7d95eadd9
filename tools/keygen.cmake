# nv-keygen: makes a CURVE key pair for tcp:// bus endpoints (NAME.key 0600, NAME.pub), and with
# --api an nv-api key (stored hashed in the key file, printed once).
add_executable(nv-keygen ${CMAKE_CURRENT_LIST_DIR}/keygen.cc)
target_link_libraries(nv-keygen PRIVATE nv_common)
if(TARGET nv_api_keys)
  target_link_libraries(nv-keygen PRIVATE nv_api_keys)
  target_compile_definitions(nv-keygen PRIVATE NV_HAVE_API_KEYS=1)
endif()
nv_warnings(nv-keygen)
