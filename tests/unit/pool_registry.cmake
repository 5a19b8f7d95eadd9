# The sandbox registry (SQLite in a temp dir: insert, list, restart semantics), the checks on
# sandbox requests, and the sparse RAM images of paused sandboxes and snapshots.
nv_add_gtest(NAME pool_registry_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/pool_registry_test.cc
  LIBS nv_vm
  LABELS unit
  TIMEOUT 60)
