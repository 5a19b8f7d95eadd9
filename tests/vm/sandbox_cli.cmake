# sandbox_cli_test: `nv sandbox` driven from a shell against a real stack (nv up; real microVMs):
# create, exec, cp in/out binary-exact, ls, processes, fork, pause/resume, rm, typed exit codes;
# host directory mounts (--mount, sync, exit 8 outside --mount-root).
add_test(NAME sandbox_cli_test COMMAND ${CMAKE_CURRENT_LIST_DIR}/sandbox_cli_test.sh)
set_tests_properties(sandbox_cli_test PROPERTIES LABELS vm TIMEOUT 1200 SKIP_RETURN_CODE 77
  ENVIRONMENT "NV_BIN_DIR=${CMAKE_BINARY_DIR}/bin;NV_BUILD_DIR=${CMAKE_BINARY_DIR}")
