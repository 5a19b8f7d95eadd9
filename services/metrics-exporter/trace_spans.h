// trace_spans.h — OpenTelemetry spans built from the event stream, and their OTLP/JSON encoding.
//
// Why here and not a tracer in every service: every service already publishes Events with the
// task's trace id, a publish time (unix ns) and the durations it measured (events.capnp), and the
// exporter already receives and validates all of them. Building spans from that one stream keeps
// the services free of an OTLP client (only nv-llm-gateway and this exporter speak HTTP, and
// their seccomp profiles already allow libcurl), keeps the spans, the metrics and the audit log
// in agreement because all three read the same events, and costs nothing on the request path.
// The price: a span exists only where an event is published, and its times are the publisher's
// clock (one host here; across hosts the skew between their clocks shows in the spans).
//
// The spans of one trace (trace id = the task's UUID v7, its 16 bytes as OTLP's traceId):
//   task                       task.started → task.finished                (orchestrator)
//   ├─ chat {model}            one per llm.call: [time - durationMs, time]  (llm-gateway)
//   └─ execute_tool execute_code  one per exec.finished: the executor's request,
//      │                       [time - durationMs, time] ("exec.request" when there is no task,
//      │                       e.g. nv-exec)                               (sandbox-executor)
//      └─ vm.lease             vm.acquired (time - waitMs) → vm.released    (vm-pool-manager)
//         └─ exec {language}   exec.started → exec.finished: the program in the VM (executor)
// A child whose parent's event never came hangs from the nearest ancestor there is. Names and
// attributes follow the OpenTelemetry semantic conventions where they have one (gen_ai.*:
// "chat {model}", "execute_tool {tool}", gen_ai.usage.input_tokens, ...); others are
// neurovisor.*.
#pragma once

#include <nv/schema/events.capnp.h>

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace nv::tracing {

// OTLP Span.SpanKind values (opentelemetry/proto/trace/v1/trace.proto).
enum class SpanKind : int { internal = 1, server = 2, client = 3 };
// OTLP Status.StatusCode values.
enum class StatusCode : int { unset = 0, ok = 1, error = 2 };

struct Attribute {
  std::string key;
  std::variant<std::string, int64_t, double, bool> value;
};

struct Span {
  std::string trace_id;   // 32 lower-case hex digits (the UUID v7 without dashes)
  std::string span_id;    // 16 hex digits, never all zero
  std::string parent_id;  // "" for a root span
  std::string name;
  SpanKind kind = SpanKind::internal;
  int64_t start_ns = 0;  // unix nanoseconds
  int64_t end_ns = 0;
  std::vector<Attribute> attributes;
  StatusCode status = StatusCode::unset;
  std::string status_message;
  std::string service;   // the publishing service: the span's resource service.name
  std::string instance;  // its instance: service.instance.id
};

// The OTLP traceId of a UUID text ("0193b3c4-5e6f-7abc-8def-0123456789ab" → 32 hex digits), or
// "" when `uuid` is not a canonical UUID or is all zero.
std::string otlp_trace_id(std::string_view uuid);

// An ExportTraceServiceRequest in OTLP/JSON (OTLP spec, "JSON Protobuf Encoding"): spans grouped
// into one resourceSpans per (service, instance) with one scopeSpans each; ids hex; enums as
// integers; 64-bit integers (times, intValue) as decimal strings, as proto3's JSON mapping says.
std::string otlp_json(const std::vector<Span>& spans, std::string_view scope_version);

struct AssemblerLimits {
  size_t max_traces = 1024;              // traces buffered at once; the oldest is flushed beyond
  size_t max_events_per_trace = 1024;    // later events of a trace are dropped (counted)
  int64_t linger_ns = 2'000'000'000;     // wait this long after a trace completes for stragglers
  int64_t max_age_ns = 900'000'000'000;  // an open trace is flushed as it is after this long
};

// Collects the span-making events of each trace and turns a trace into spans once it is
// complete (task.finished; or exec.finished when the trace has no task) and `linger_ns` passed.
// Not thread-safe. `now_ns` is any monotonic clock in ns, only compared with itself.
class TraceAssembler {
 public:
  explicit TraceAssembler(AssemblerLimits limits = {});

  // Keeps `event` if its topic makes spans and its trace id is a UUID; ignores the rest.
  void add(schema::Event::Reader event, int64_t now_ns);
  // The spans of every trace that is ready at `now_ns`; those traces are forgotten.
  std::vector<Span> take_ready(int64_t now_ns);
  // The spans of every buffered trace, complete or not (shutdown).
  std::vector<Span> take_all();

  size_t open_traces() const { return traces_.size(); }
  uint64_t dropped_events() const { return dropped_events_; }

 private:
  struct Rec {  // the fields of one event the spans need
    std::string topic, service, instance, vm_id, text1, text2;  // text1/2: model/api, status/...
    int64_t time_ns = 0;
    double ms = 0;                   // durationMs / waitMs / leasedMs
    int64_t n1 = 0, n2 = 0, n3 = 0;  // tokens, iterations, exit codes, ...
    bool flag = false;
  };
  struct Trace {
    std::string id;  // OTLP hex
    std::vector<Rec> recs;
    int64_t first_seen_ns = 0;
    int64_t complete_ns = 0;  // 0 = not complete yet
    bool has_task = false;
  };

  std::vector<Span> build(const Trace& t);
  std::string new_span_id();

  AssemblerLimits limits_;
  std::map<std::string, Trace> traces_;  // by OTLP trace id
  std::vector<Span> evicted_;            // spans of traces pushed out by max_traces
  uint64_t dropped_events_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace nv::tracing
