# The event → metric mapping of nv-metrics-exporter: events in, registry values out.
nv_add_gtest(NAME event_metrics_test
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/event_metrics_test.cc
             LIBS nv_event_metrics
             LABELS unit)
# Spans from events (trace_spans.h): trees, missing parents, eviction, the OTLP/JSON encoding.
nv_add_gtest(NAME trace_spans_test
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/trace_spans_test.cc
             LIBS nv_event_metrics
             LABELS unit)
