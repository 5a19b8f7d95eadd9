# nv_seccomp: libseccomp allow-list profiles as data (seccomp_policy.{h,cc}). Included from
# services/ebpf-sentinel/CMakeLists.txt and may be included from services/common/CMakeLists.txt;
# the guard makes a second include a no-op.
if(NOT TARGET nv_seccomp)
  add_library(nv_seccomp STATIC ${CMAKE_CURRENT_LIST_DIR}/seccomp_policy.cc)
  nv_warnings(nv_seccomp)
  target_include_directories(nv_seccomp PUBLIC ${CMAKE_CURRENT_LIST_DIR})
  target_link_libraries(nv_seccomp PUBLIC PkgConfig::SECCOMP)
endif()
