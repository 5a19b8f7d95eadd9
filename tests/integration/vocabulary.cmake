# One vocabulary across the programs: --help, variables, *-ms durations, stray arguments.
nv_add_gtest(NAME vocabulary_test
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/vocabulary_test.cc
             LIBS nv_test_support
             LABELS integration
             TIMEOUT 120)
foreach(dep nv-orchestrator nv-llm-gateway nv-vm-pool-manager nv-sandbox-executor
            nv-ebpf-sentinel nv-metrics-exporter nv-submit nv-exec nv-audit)
  if(TARGET ${dep})
    add_dependencies(vocabulary_test ${dep})
  endif()
endforeach()
