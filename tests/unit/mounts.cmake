# Host directories (issue 15): nv-mount-copier's copy-in/sync against real temp trees, each escape
# its own case, its Landlock confinement, a copier killed mid-file, and the executor's policy.
if(TARGET nv_exec_executor AND TARGET nv-mount-copier AND TARGET nv_guest_agent_core)
  nv_add_gtest(NAME mount_copier_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/mount_copier_test.cc
    LIBS nv_exec_executor nv_mount_copier nv_guest_agent_core
    LABELS unit security
    TIMEOUT 120)
  add_dependencies(mount_copier_test nv-mount-copier)
endif()
