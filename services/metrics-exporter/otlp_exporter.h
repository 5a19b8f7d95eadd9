// otlp_exporter.h — sends spans to an OpenTelemetry collector over OTLP/HTTP with the JSON
// encoding (OTLP spec, "OTLP/HTTP"): POST {endpoint}/v1/traces, Content-Type application/json,
// one ExportTraceServiceRequest per batch, through libcurl on a thread of its own.
//
// Delivery follows the spec's rules: 2xx is success; 429, 502, 503 and 504 and failed
// connections are retried with exponential backoff (1 s, 2 s, 4 s; Retry-After is honoured up to
// 30 s) up to --otlp-max-attempts; any other status drops the batch. A full queue drops the
// newest spans. Every outcome is counted in the registry:
//   neurovisor_trace_spans_exported_total            spans a collector accepted
//   neurovisor_trace_spans_dropped_total{reason}     queue_full | rejected | unreachable
#pragma once

#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "trace_spans.h"

namespace nv::tracing {

struct OtlpOptions {
  std::string url;                           // full URL, e.g. http://127.0.0.1:4318/v1/traces
  std::chrono::milliseconds timeout{10000};  // per HTTP request
  size_t max_queue_spans = 8192;             // spans waiting to be sent
  size_t max_batch_spans = 512;              // spans per request
  int max_attempts = 4;                      // tries per batch
  std::string scope_version = "0";           // InstrumentationScope.version
};

// "http://host:port" (no path, or "/"): + "/v1/traces" as OTEL_EXPORTER_OTLP_ENDPOINT does;
// a URL with a path is used as given (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). http or https only.
Result<std::string> otlp_traces_url(const std::string& endpoint);

class OtlpExporter {
 public:
  OtlpExporter(OtlpOptions options, prometheus::Registry& registry);
  // Sends what is queued (each batch tried once more at most), then stops.
  ~OtlpExporter();
  OtlpExporter(const OtlpExporter&) = delete;
  OtlpExporter& operator=(const OtlpExporter&) = delete;

  void enqueue(std::vector<Span> spans);

 private:
  void loop();
  // One POST; returns the HTTP status (0 when no answer) and the Retry-After seconds, if any.
  long post(const std::string& body, long* retry_after_s);

  OtlpOptions opt_;
  prometheus::Counter& exported_;
  prometheus::Counter& dropped_full_;
  prometheus::Counter& dropped_rejected_;
  prometheus::Counter& dropped_unreachable_;
  void* curl_ = nullptr;  // CURL*, used by the sending thread only
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Span> queue_;
  bool stopping_ = false;
  uint64_t failures_logged_ = 0;
  std::thread thread_;
};

}  // namespace nv::tracing
