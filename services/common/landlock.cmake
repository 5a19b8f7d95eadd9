# nv_landlock: Landlock file confinement helper (landlock.{h,cc}). Included from
# services/ebpf-sentinel/CMakeLists.txt and may be included from services/common/CMakeLists.txt;
# the guard makes a second include a no-op.
if(NOT TARGET nv_landlock)
  add_library(nv_landlock STATIC ${CMAKE_CURRENT_LIST_DIR}/landlock.cc)
  nv_warnings(nv_landlock)
  target_include_directories(nv_landlock PUBLIC ${CMAKE_CURRENT_LIST_DIR})
endif()
