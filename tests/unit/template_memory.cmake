# The sealed template memfd: clones may copy-on-write it, nobody may write it (a security proof).
nv_add_gtest(NAME template_memory_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/template_memory_test.cc
  LIBS nv_vm
  LABELS unit security
  TIMEOUT 60)
