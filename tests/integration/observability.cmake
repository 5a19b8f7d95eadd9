# Traces over OTLP/HTTP (JSON) to a python receiver, the seed's metric names, and the dashboard
# and scrape config in deploy/ checked against a live /metrics (and promtool).
nv_add_gtest(NAME observability_test
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/observability_test.cc
             LIBS nv_common nv_test_support
             LABELS integration
             TIMEOUT 180)
foreach(dep nv-orchestrator nv-metrics-exporter)
  if(TARGET ${dep})
    add_dependencies(observability_test ${dep})
  endif()
endforeach()
