# security_llm_gateway_seccomp_test: the real nv-llm-gateway runs under its seccomp allow-list
# (Seccomp: 2, a chat over HTTP still works) and a syscall outside it, injected into the
# gateway's own thread with ptrace, kills it with SIGSYS; the --no-seccomp control survives.
if(TARGET nv_test_support)
  nv_add_gtest(NAME security_llm_gateway_seccomp_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/llm_gateway_seccomp_test.cc
    LIBS nv_common nv_test_support
    LABELS security
    TIMEOUT 120)
  target_compile_definitions(security_llm_gateway_seccomp_test PRIVATE
    NV_TEST_SOURCE_DIR="${PROJECT_SOURCE_DIR}" NV_TEST_BIN_DIR="${CMAKE_BINARY_DIR}/bin")
  add_dependencies(security_llm_gateway_seccomp_test nv-orchestrator nv-llm-gateway)
endif()
