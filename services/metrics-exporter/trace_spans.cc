#include "trace_spans.h"

#include <capnp/schema.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cmath>

namespace nv::tracing {
namespace {

using Which = schema::Event::Which;

bool hex_digit(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// The schema name of an enum value ("python"), or "" when out of range.
template <class E>
std::string enum_name(E value) {
  auto enumerants = capnp::Schema::from<E>().getEnumerants();
  auto raw = static_cast<uint16_t>(value);
  if (raw >= enumerants.size()) return {};
  return enumerants[raw].getProto().getName().cStr();
}

int64_t ms_to_ns(double ms) {
  if (!std::isfinite(ms) || ms < 0) return 0;
  return static_cast<int64_t>(std::llround(ms * 1e6));
}

void write_attr_value(rapidjson::Writer<rapidjson::StringBuffer>& w, const Attribute& a) {
  w.StartObject();
  if (auto s = std::get_if<std::string>(&a.value)) {
    w.Key("stringValue");
    w.String(s->c_str(), static_cast<rapidjson::SizeType>(s->size()));
  } else if (auto i = std::get_if<int64_t>(&a.value)) {
    w.Key("intValue");  // int64: a decimal string in proto3 JSON
    w.String(std::to_string(*i).c_str());
  } else if (auto d = std::get_if<double>(&a.value)) {
    w.Key("doubleValue");
    w.Double(std::isfinite(*d) ? *d : 0.0);
  } else if (auto b = std::get_if<bool>(&a.value)) {
    w.Key("boolValue");
    w.Bool(*b);
  }
  w.EndObject();
}

void write_attrs(rapidjson::Writer<rapidjson::StringBuffer>& w,
                 const std::vector<Attribute>& attrs) {
  w.Key("attributes");
  w.StartArray();
  for (const auto& a : attrs) {
    w.StartObject();
    w.Key("key");
    w.String(a.key.c_str());
    w.Key("value");
    write_attr_value(w, a);
    w.EndObject();
  }
  w.EndArray();
}

}  // namespace

std::string otlp_trace_id(std::string_view uuid) {
  if (uuid.size() != 36) return {};
  std::string hex;
  for (size_t i = 0; i < uuid.size(); ++i) {
    char c = uuid[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return {};
      continue;
    }
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
    if (!hex_digit(c)) return {};
    hex.push_back(c);
  }
  if (hex.find_first_not_of('0') == std::string::npos) return {};  // all zero: invalid in OTLP
  return hex;
}

std::string otlp_json(const std::vector<Span>& spans, std::string_view scope_version) {
  // One resourceSpans per publishing process, spans in their given order.
  std::vector<std::pair<std::string, std::string>> resources;
  for (const auto& s : spans) {
    std::pair<std::string, std::string> key{s.service, s.instance};
    if (std::find(resources.begin(), resources.end(), key) == resources.end()) {
      resources.push_back(key);
    }
  }
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("resourceSpans");
  w.StartArray();
  for (const auto& [service, instance] : resources) {
    w.StartObject();
    w.Key("resource");
    w.StartObject();
    write_attrs(w, {{"service.name", service.empty() ? "neurovisor" : service},
                    {"service.namespace", std::string("neurovisor")},
                    {"service.instance.id", instance}});
    w.EndObject();
    w.Key("scopeSpans");
    w.StartArray();
    w.StartObject();
    w.Key("scope");
    w.StartObject();
    w.Key("name");
    w.String("nv-metrics-exporter");
    w.Key("version");
    w.String(scope_version.data(), static_cast<rapidjson::SizeType>(scope_version.size()));
    w.EndObject();
    w.Key("spans");
    w.StartArray();
    for (const auto& s : spans) {
      if (s.service != service || s.instance != instance) continue;
      w.StartObject();
      w.Key("traceId");
      w.String(s.trace_id.c_str());
      w.Key("spanId");
      w.String(s.span_id.c_str());
      if (!s.parent_id.empty()) {
        w.Key("parentSpanId");
        w.String(s.parent_id.c_str());
      }
      w.Key("name");
      w.String(s.name.c_str(), static_cast<rapidjson::SizeType>(s.name.size()));
      w.Key("kind");
      w.Int(static_cast<int>(s.kind));
      w.Key("startTimeUnixNano");
      w.String(std::to_string(s.start_ns).c_str());
      w.Key("endTimeUnixNano");
      w.String(std::to_string(std::max(s.start_ns, s.end_ns)).c_str());
      write_attrs(w, s.attributes);
      w.Key("status");
      w.StartObject();
      w.Key("code");
      w.Int(static_cast<int>(s.status));
      if (!s.status_message.empty()) {
        w.Key("message");
        w.String(s.status_message.c_str(),
                 static_cast<rapidjson::SizeType>(s.status_message.size()));
      }
      w.EndObject();
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
    w.EndArray();
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return buf.GetString();
}

TraceAssembler::TraceAssembler(AssemblerLimits limits)
    : limits_(limits), rng_(std::random_device{}()) {}

std::string TraceAssembler::new_span_id() {
  uint64_t v = 0;
  while (v == 0) v = rng_();  // an all-zero span id is invalid
  char out[17];
  std::snprintf(out, sizeof(out), "%016llx", static_cast<unsigned long long>(v));
  return out;
}

void TraceAssembler::add(schema::Event::Reader e, int64_t now_ns) {
  Rec r;
  r.time_ns = e.getTimeNs();
  r.service = e.getService().cStr();
  r.instance = e.getInstance().cStr();
  switch (e.which()) {
    case Which::TASK_STARTED:
      r.text1 = e.getTaskStarted().getModel().cStr();
      break;
    case Which::TASK_FINISHED: {
      auto p = e.getTaskFinished();
      r.text2 = p.getStatus().cStr();
      r.ms = p.getDurationMs();
      r.n1 = p.getIterations();
      r.n2 = p.getToolCalls();
      break;
    }
    case Which::LLM_CALL: {
      auto p = e.getLlmCall();
      r.text1 = p.getModel().cStr();
      r.text2 = p.getOutcome().cStr();
      r.vm_id = p.getApi().cStr();  // the API name, kept in a spare field
      r.ms = p.getDurationMs();
      r.n1 = p.getPromptTokens();
      r.n2 = p.getCompletionTokens();
      r.n3 = ms_to_ns(p.getLoadMs());
      break;
    }
    case Which::EXEC_STARTED: {
      auto p = e.getExecStarted();
      r.vm_id = p.getVmId().cStr();
      r.text1 = enum_name(p.getLanguage());
      break;
    }
    case Which::EXEC_FINISHED: {
      auto p = e.getExecFinished();
      r.vm_id = p.getVmId().cStr();
      r.text1 = enum_name(p.getLanguage());
      r.text2 = p.getStatus().cStr();
      r.ms = p.getDurationMs();
      r.n1 = p.getExitCode();
      r.n2 = static_cast<int64_t>(p.getOutputBytes());
      r.flag = p.getTimedOut();
      break;
    }
    case Which::VM_ACQUIRED: {
      auto p = e.getVmAcquired();
      r.vm_id = p.getVmId().cStr();
      r.text1 = enum_name(p.getTier());
      r.ms = p.getWaitMs();
      break;
    }
    case Which::VM_RELEASED: {
      auto p = e.getVmReleased();
      r.vm_id = p.getVmId().cStr();
      r.text2 = p.getReason().cStr();
      r.ms = p.getLeasedMs();
      break;
    }
    default:
      return;  // no span from this topic
  }
  std::string id = otlp_trace_id(e.getTraceId().cStr());
  if (id.empty()) return;  // no task or request to hang it from
  r.topic = e.getTopic().cStr();

  auto it = traces_.find(id);
  if (it == traces_.end()) {
    if (traces_.size() >= limits_.max_traces) {
      // Full: the trace seen first goes out as it is (its spans wait in evicted_).
      auto oldest = std::min_element(traces_.begin(), traces_.end(), [](auto& a, auto& b) {
        return a.second.first_seen_ns < b.second.first_seen_ns;
      });
      auto spans = build(oldest->second);
      evicted_.insert(evicted_.end(), spans.begin(), spans.end());
      traces_.erase(oldest);
    }
    it = traces_.emplace(id, Trace{}).first;
    it->second.id = id;
    it->second.first_seen_ns = now_ns;
  }
  Trace& t = it->second;
  if (t.recs.size() >= limits_.max_events_per_trace) {
    ++dropped_events_;
    return;
  }
  bool is_task = e.which() == Which::TASK_STARTED || e.which() == Which::TASK_FINISHED;
  t.has_task |= is_task;
  if (e.which() == Which::TASK_FINISHED || (e.which() == Which::EXEC_FINISHED && !t.has_task)) {
    t.complete_ns = now_ns;
  } else if (e.which() == Which::TASK_STARTED) {
    t.complete_ns = 0;  // an exec-only trace turned out to belong to a task: wait for its end
  }
  t.recs.push_back(std::move(r));
}

std::vector<Span> TraceAssembler::take_ready(int64_t now_ns) {
  std::vector<Span> out = std::move(evicted_);
  evicted_.clear();
  for (auto it = traces_.begin(); it != traces_.end();) {
    const Trace& t = it->second;
    bool ready = (t.complete_ns != 0 && now_ns - t.complete_ns >= limits_.linger_ns) ||
                 now_ns - t.first_seen_ns >= limits_.max_age_ns;
    if (!ready) {
      ++it;
      continue;
    }
    auto spans = build(t);
    out.insert(out.end(), spans.begin(), spans.end());
    it = traces_.erase(it);
  }
  return out;
}

std::vector<Span> TraceAssembler::take_all() {
  std::vector<Span> out = std::move(evicted_);
  evicted_.clear();
  for (const auto& [id, t] : traces_) {
    auto spans = build(t);
    out.insert(out.end(), spans.begin(), spans.end());
  }
  traces_.clear();
  return out;
}

std::vector<Span> TraceAssembler::build(const Trace& t) {
  const Rec* started = nullptr;
  const Rec* finished = nullptr;
  for (const auto& r : t.recs) {
    if (r.topic == "task.started" && !started) started = &r;
    if (r.topic == "task.finished" && !finished) finished = &r;
  }
  auto base = [&](const Rec& r, std::string name, SpanKind kind) {
    Span s;
    s.trace_id = t.id;
    s.span_id = new_span_id();
    s.name = std::move(name);
    s.kind = kind;
    s.service = r.service;
    s.instance = r.instance;
    return s;
  };
  std::vector<Span> spans;

  // The task: its start from task.started (else the end minus its duration), its end from
  // task.finished (else the last event seen: the task is still running or its end was lost).
  std::string task_id;
  if (started || finished) {
    const Rec& r = finished ? *finished : *started;
    Span s = base(r, "task", SpanKind::server);
    s.start_ns = started ? started->time_ns : finished->time_ns - ms_to_ns(finished->ms);
    if (finished) {
      s.end_ns = finished->time_ns;
      s.attributes.push_back({"neurovisor.task.status", finished->text2});
      s.attributes.push_back({"neurovisor.task.iterations", finished->n1});
      s.attributes.push_back({"neurovisor.task.tool_calls", finished->n2});
      s.status = finished->text2 == "completed" ? StatusCode::ok : StatusCode::error;
      if (s.status == StatusCode::error) s.status_message = "task ended: " + finished->text2;
    } else {
      for (const auto& r2 : t.recs) s.end_ns = std::max(s.end_ns, r2.time_ns);
      s.status = StatusCode::error;
      s.status_message = "task.finished was not seen";
    }
    if (started && !started->text1.empty()) {
      s.attributes.push_back({"gen_ai.request.model", started->text1});
    }
    task_id = s.span_id;
    spans.push_back(std::move(s));
  }

  // Model calls.
  for (const auto& r : t.recs) {
    if (r.topic != "llm.call") continue;
    Span s = base(r, "chat " + r.text1, SpanKind::client);
    s.parent_id = task_id;
    s.start_ns = r.time_ns - ms_to_ns(r.ms);
    s.end_ns = r.time_ns;
    s.attributes = {{"gen_ai.operation.name", std::string("chat")},
                    {"gen_ai.system", r.vm_id},
                    {"gen_ai.request.model", r.text1},
                    {"gen_ai.usage.input_tokens", r.n1},
                    {"gen_ai.usage.output_tokens", r.n2}};
    if (r.n3 > 0) s.attributes.push_back({"neurovisor.model.load_ms", r.n3 / 1e6});
    s.status = r.text2 == "ok" ? StatusCode::ok : StatusCode::error;
    if (s.status == StatusCode::error) s.status_message = r.text2;
    spans.push_back(std::move(s));
  }

  // Tool calls (the executor's requests), keyed by the VM they ran on.
  std::map<std::string, std::string> tool_by_vm;
  for (const auto& r : t.recs) {
    if (r.topic != "exec.finished") continue;
    bool tool = !task_id.empty();
    Span s = base(r, tool ? "execute_tool execute_code" : "exec.request",
                  tool ? SpanKind::internal : SpanKind::server);
    s.parent_id = task_id;
    s.start_ns = r.time_ns - ms_to_ns(r.ms);
    s.end_ns = r.time_ns;
    if (tool) {
      s.attributes.push_back({"gen_ai.operation.name", std::string("execute_tool")});
      s.attributes.push_back({"gen_ai.tool.name", std::string("execute_code")});
    }
    s.attributes.push_back({"neurovisor.language", r.text1});
    s.attributes.push_back({"neurovisor.exec.status", r.text2});
    s.attributes.push_back({"neurovisor.exec.exit_code", r.n1});
    s.attributes.push_back({"neurovisor.exec.output_bytes", r.n2});
    if (!r.vm_id.empty()) s.attributes.push_back({"neurovisor.vm_id", r.vm_id});
    s.status = r.text2 == "ok" ? StatusCode::ok : StatusCode::error;
    if (s.status == StatusCode::error) s.status_message = "exec " + r.text2;
    if (!r.vm_id.empty()) tool_by_vm[r.vm_id] = s.span_id;
    spans.push_back(std::move(s));
  }

  // Leases: acquired (minus the wait) → released.
  std::map<std::string, std::string> lease_by_vm;
  for (const auto& r : t.recs) {
    if (r.topic != "vm.acquired") continue;
    Span s = base(r, "vm.lease", SpanKind::internal);
    auto tool = tool_by_vm.find(r.vm_id);
    s.parent_id = tool != tool_by_vm.end() ? tool->second : task_id;
    s.start_ns = r.time_ns - ms_to_ns(r.ms);
    s.end_ns = r.time_ns;
    s.attributes = {{"neurovisor.vm_id", r.vm_id},
                    {"neurovisor.tier", r.text1},
                    {"neurovisor.lease.wait_ms", r.ms}};
    bool released = false;
    for (const auto& r2 : t.recs) {
      if (r2.topic == "vm.released" && r2.vm_id == r.vm_id) {
        s.end_ns = r2.time_ns;
        s.attributes.push_back({"neurovisor.lease.release_reason", r2.text2});
        released = true;
      } else if (r2.vm_id == r.vm_id && !released) {
        s.end_ns = std::max(s.end_ns, r2.time_ns);  // no release seen: up to its last event
      }
    }
    s.attributes.push_back({"neurovisor.lease.released", released});
    lease_by_vm[r.vm_id] = s.span_id;
    spans.push_back(std::move(s));
  }

  // The program in the VM: exec.started → exec.finished on the same VM.
  for (const auto& r : t.recs) {
    if (r.topic != "exec.started") continue;
    Span s = base(r, "exec " + r.text1, SpanKind::internal);
    auto lease = lease_by_vm.find(r.vm_id);
    auto tool = tool_by_vm.find(r.vm_id);
    s.parent_id = lease != lease_by_vm.end() ? lease->second
                  : tool != tool_by_vm.end() ? tool->second
                                             : task_id;
    s.start_ns = r.time_ns;
    s.end_ns = r.time_ns;
    s.attributes = {{"neurovisor.vm_id", r.vm_id}, {"neurovisor.language", r.text1}};
    for (const auto& r2 : t.recs) {
      if (r2.topic == "exec.finished" && r2.vm_id == r.vm_id) {
        s.end_ns = r2.time_ns;
        s.attributes.push_back({"neurovisor.exec.exit_code", r2.n1});
        s.attributes.push_back({"neurovisor.exec.timed_out", r2.flag});
        s.status = r2.text2 == "ok" ? StatusCode::ok : StatusCode::error;
      }
    }
    spans.push_back(std::move(s));
  }
  return spans;
}

}  // namespace nv::tracing
