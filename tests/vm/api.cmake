# api_vm_test: issue 14's acceptance with real microVMs — exec over HTTP (curl, SDK), an agent
# task, the official MCP TypeScript SDK (npm, pinned) over Streamable HTTP and stdio, and the
# sandbox flow and tenant isolation when the executor serves "sandbox".
if(TARGET nv-api AND TARGET nv-mcp)
  add_test(NAME api_vm_test COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/api/api_vm_test.py)
  set_tests_properties(api_vm_test PROPERTIES LABELS vm TIMEOUT 1800
    ENVIRONMENT "NV_BIN_DIR=${CMAKE_BINARY_DIR}/bin;NV_SOURCE_DIR=${PROJECT_SOURCE_DIR};NV_BUILD_DIR=${CMAKE_BINARY_DIR}")
endif()
# api_mounts_test: host directory mounts over nv-api --allow-mounts with real microVMs (issue 15).
if(TARGET nv-api)
  add_test(NAME api_mounts_test COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/api/api_mounts_test.py)
  set_tests_properties(api_mounts_test PROPERTIES LABELS vm TIMEOUT 900
    ENVIRONMENT "NV_BIN_DIR=${CMAKE_BINARY_DIR}/bin;NV_SOURCE_DIR=${PROJECT_SOURCE_DIR};NV_BUILD_DIR=${CMAKE_BINARY_DIR}")
endif()
