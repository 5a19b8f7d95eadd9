# Label deploy: NeuroVisor installed and run the way a host runs it, judged by real systemd and
# real podman-compose (tests/deploy/*.sh; each builds or reuses the cached Debian base image).
foreach(t systemd compose supervise)
  add_test(NAME deploy_${t} COMMAND ${CMAKE_CURRENT_LIST_DIR}/${t}_test.sh)
  set_tests_properties(deploy_${t} PROPERTIES LABELS deploy TIMEOUT 1200 RUN_SERIAL TRUE
    ENVIRONMENT "NV_SOURCE_DIR=${CMAKE_SOURCE_DIR};NV_BUILD_DIR=${CMAKE_BINARY_DIR}")
endforeach()
