# The sealed template memfd: clones may copy-on-write it, nobody may write it (a security proof).
nv_add_gtest(NAME template_memory_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/template_memory_test.cc
  LIBS nv_vm
  LABELS unit security
  TIMEOUT 60)

# Capture in place (capture.h) with a child process as the VMM: the captured memfd is the
# template plus exactly the pages the child wrote, sealed, made while the guest was paused.
nv_add_gtest(NAME capture_in_place_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/capture_in_place_test.cc
  LIBS nv_vm
  LABELS unit
  TIMEOUT 60)
