# nv-metrics-exporter and nv-audit against a real orchestrator: real sockets, HTTP and promtool.
nv_add_gtest(NAME metrics_exporter_test
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/metrics_exporter_test.cc
             LIBS nv_common nv_test_support
             LABELS integration
             TIMEOUT 180)
# The binaries it starts are built with it.
foreach(dep nv-orchestrator nv-metrics-exporter nv-audit)
  if(TARGET ${dep})
    add_dependencies(metrics_exporter_test ${dep})
  endif()
endforeach()
