// tasks.cc — the task registry and the /v1/tasks routes (see tasks.h).
#include "tasks.h"

#include <nv/schema/task.capnp.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "api.h"
#include "common/enum_name.h"
#include "common/frames.h"
#include "common/log.h"
#include "common/sandbox_json.h"
#include "common/trace_id.h"
#include "common/utf8.h"
#include "exec_json.h"
#include "http_json.h"

namespace nv::api {
namespace {

using namespace std::chrono_literals;
using W = rapidjson::Writer<rapidjson::StringBuffer>;
constexpr size_t kMaxEvents = 20000;
constexpr size_t kMaxEventBytes = 16 << 20;

void text(W& w, const char* key, const std::string& s) { write_text(w, key, s); }
void text(W& w, const char* key, capnp::Text::Reader s) {
  write_text(w, key, std::string_view(s.cStr(), s.size()));
}

std::string bytes(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

// One TaskProgress partial as an event object; `delta` tells whether it may be dropped.
std::string progress_json(schema::TaskProgress::Reader p, bool* delta) {
  rapidjson::StringBuffer sb;
  W w(sb);
  w.StartObject();
  auto kind = [&](const char* k) {
    w.Key("event");
    w.String(k);
    w.Key("iteration");
    w.Uint(p.getIteration());
  };
  *delta = false;
  using P = schema::TaskProgress;
  switch (p.which()) {
    case P::THINKING:
      kind("thinking");
      break;
    case P::MODEL_TEXT:
      kind("modelText");
      text(w, "text", p.getModelText());
      break;
    case P::MODEL_DELTA:
      kind("modelDelta");
      text(w, "text", p.getModelDelta());
      *delta = true;
      break;
    case P::THINKING_DELTA:
      kind("thinkingDelta");
      text(w, "text", p.getThinkingDelta());
      *delta = true;
      break;
    case P::NOTICE:
      kind("notice");
      text(w, "text", p.getNotice());
      break;
    case P::TOOL_CALL: {
      kind("toolCall");
      auto t = p.getToolCall();
      w.Key("language");
      w.String(enum_name(t.getLanguage()).c_str());
      text(w, "code", t.getCode());
      text(w, "callId", t.getCallId());
      break;
    }
    case P::OUTPUT: {
      kind("output");
      auto o = p.getOutput();
      w.Key("stream");
      w.String(stream_name(o.getStream()).c_str());
      text(w, "data", bytes(o.getData()));
      *delta = true;
      break;
    }
    case P::EXEC_RESULT: {
      kind("execResult");
      std::string r = exec_result_json(p.getExecResult(), p.getTraceId().cStr());
      w.Key("result");
      w.RawValue(r.data(), r.size(), rapidjson::kObjectType);
      break;
    }
    case P::TOOL_ERROR: {
      kind("toolError");
      auto e = Error::from_capnp(p.getToolError());
      w.Key("code");
      w.String(code_name(e.code).c_str());
      text(w, "message", e.message);
      break;
    }
    default:
      kind("unknown");
  }
  w.EndObject();
  return sb.GetString();
}

std::string result_json(schema::TaskResult::Reader r) {
  rapidjson::StringBuffer sb;
  W w(sb);
  w.StartObject();
  w.Key("event");
  w.String("result");
  w.Key("status");
  w.String(enum_name(r.getStatus()).c_str());
  text(w, "answer", r.getAnswer());
  if (r.getStatus() != schema::TaskStatus::COMPLETED && r.hasError()) {
    auto e = Error::from_capnp(r.getError());
    w.Key("error");
    w.StartObject();
    w.Key("code");
    w.String(code_name(e.code).c_str());
    text(w, "message", e.message);
    w.EndObject();
  }
  text(w, "model", r.getModel());
  w.Key("iterations");
  w.Uint(r.getIterations());
  w.Key("toolCalls");
  w.Uint(r.getToolCalls());
  w.Key("promptTokens");
  w.Uint64(r.getPromptTokens());
  w.Key("completionTokens");
  w.Uint64(r.getCompletionTokens());
  w.Key("totalMs");
  w.Double(r.getTotalMs());
  w.Key("llmMs");
  w.Double(r.getLlmMs());
  w.Key("execMs");
  w.Double(r.getExecMs());
  text(w, "traceId", r.getTraceId());
  w.EndObject();
  return sb.GetString();
}

}  // namespace

std::string Task::summary_json() {
  std::lock_guard lock(mu);
  std::string s = "{\"id\":" + json_string(id) + ",\"status\":" + json_string(status) +
                  ",\"prompt\":" + json_string(prompt) + ",\"traceId\":" + json_string(trace_id) +
                  ",\"createdUnixMs\":" +
                  std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     created.time_since_epoch())
                                     .count()) +
                  ",\"events\":" + std::to_string(events.size());
  if (done) s += ",\"result\":" + result_json;
  return s + "}";
}

TaskRegistry::~TaskRegistry() {
  cancel_all();
  join_all();
}

Result<std::shared_ptr<Task>> TaskRegistry::submit(const Caller& caller, const TaskSpec& spec) {
  prune();
  std::lock_guard lock(mu_);
  int running = 0;
  for (auto& t : tasks_) {
    std::lock_guard tl(t->mu);
    running += (t->tenant == caller.tenant && !t->done) ? 1 : 0;
  }
  if (running >= api_.options().max_tasks) {
    return make_error(ErrorCode::RATE_LIMITED,
                      "tenant '" + caller.tenant + "' has " + std::to_string(running) +
                          " tasks running, its limit (--max-tasks)",
                      true);
  }
  auto t = std::make_shared<Task>();
  t->id = new_uuid_v7();
  t->tenant = caller.tenant;
  t->trace_id = caller.trace_id;
  t->prompt = spec.prompt;
  t->created = std::chrono::system_clock::now();
  t->thread = std::thread([this, t, spec] { run(t, spec); });
  tasks_.push_back(t);
  return t;
}

void TaskRegistry::run(std::shared_ptr<Task> t, TaskSpec spec) {
  log::TraceScope scope(t->trace_id);
  Client client(api_.service().zmq, api_.service().client_options());
  capnp::MallocMessageBuilder mb;
  auto s = bus::init_body<schema::SubmitTask>(mb);
  s.setPrompt(spec.prompt);
  s.setModel(spec.model);
  s.setMaxIterations(spec.max_iterations);
  s.setTimeoutMs(spec.timeout_ms);
  s.setTier(static_cast<schema::SizeTier>(spec.tier));
  s.setTraceId(t->trace_id);
  sandbox::mounts_to_capnp(spec.mounts, s.initMounts(static_cast<unsigned>(spec.mounts.size())));
  auto deadline = std::chrono::milliseconds(spec.timeout_ms ? spec.timeout_ms : 600000) + 30s;
  uint64_t id = client.send("task", &mb, deadline, t->trace_id);
  auto give_up = std::chrono::steady_clock::now() + deadline + 5s;
  std::string final_json, status;
  bool cancel_sent = false;
  auto add = [&](std::string json, bool delta) {
    std::lock_guard lock(t->mu);
    if (delta &&
        (t->events.size() >= kMaxEvents || t->event_bytes + json.size() > kMaxEventBytes)) {
      ++t->dropped;
      return;
    }
    t->event_bytes += json.size();
    t->events.push_back(std::move(json));
    t->cv.notify_all();
  };
  while (true) {
    if (t->cancel.load() && !cancel_sent) {
      client.cancel(id, "task");
      cancel_sent = true;
      give_up = std::min(give_up, std::chrono::steady_clock::now() + 10s);
    }
    if (std::chrono::steady_clock::now() > give_up) {
      status = cancel_sent ? "cancelled" : "error";
      final_json = "{\"event\":\"error\"," +
                   error_json(cancel_sent ? "cancelled" : "timedOut",
                              cancel_sent ? "the task was cancelled"
                                          : "the orchestrator did not answer in time",
                              t->trace_id)
                       .substr(1);
      break;
    }
    auto in = client.receive(100ms);
    if (!in || in->header.request_id != id) continue;
    if (!in->final()) {
      if (auto p = in->body.root<schema::TaskProgress>(); p) {
        bool delta = false;
        std::string j = progress_json(*p, &delta);
        add(std::move(j), delta);
      }
      continue;
    }
    if (in->header.kind == bus::Kind::ERROR) {
      Error e = in->error();
      status = e.code == ErrorCode::CANCELLED ? "cancelled" : "error";
      final_json =
          "{\"event\":\"error\"," + error_json(code_name(e.code), e.message, t->trace_id).substr(1);
    } else if (auto r = in->body.root<schema::TaskResult>(); r) {
      status = enum_name(r->getStatus());
      final_json = result_json(*r);
    } else {
      status = "error";
      final_json = "{\"event\":\"error\"," +
                   error_json(code_name(r.error().code), r.error().message, t->trace_id).substr(1);
    }
    break;
  }
  {
    std::lock_guard lock(t->mu);
    t->events.push_back(final_json);
    t->result_json = final_json;
    t->status = status;
    t->done = true;
    t->cv.notify_all();
  }
  log::info("task finished", {{"task", t->id}, {"status", status}, {"tenant", t->tenant}});
}

std::shared_ptr<Task> TaskRegistry::find(const std::string& tenant, const std::string& id) {
  std::lock_guard lock(mu_);
  for (auto& t : tasks_) {
    if (t->id == id && t->tenant == tenant) return t;
  }
  return nullptr;
}

std::vector<std::shared_ptr<Task>> TaskRegistry::list(const std::string& tenant) {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<Task>> out;
  for (auto& t : tasks_) {
    if (t->tenant == tenant) out.push_back(t);
  }
  return out;
}

void TaskRegistry::prune() {
  std::vector<std::shared_ptr<Task>> gone;
  {
    std::lock_guard lock(mu_);
    auto now = std::chrono::system_clock::now();
    for (auto it = tasks_.begin(); it != tasks_.end();) {
      bool done;
      {
        std::lock_guard tl((*it)->mu);
        done = (*it)->done;
      }
      if (done && (now - (*it)->created > 10min || tasks_.size() > 1000)) {
        gone.push_back(*it);
        it = tasks_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& t : gone) {
    if (t->thread.joinable()) t->thread.join();
  }
}

void TaskRegistry::cancel_all() {
  std::lock_guard lock(mu_);
  for (auto& t : tasks_) t->cancel = true;
}

void TaskRegistry::join_all() {
  std::vector<std::shared_ptr<Task>> all;
  {
    std::lock_guard lock(mu_);
    all = tasks_;
  }
  for (auto& t : all) {
    if (t->thread.joinable()) t->thread.join();
  }
}

// ---- routes ----------------------------------------------------------------------------------

namespace {

// Streams the task's events from `from` until it is done or the client goes away.
void stream_task(httplib::Response& res, std::shared_ptr<Task> t, StreamFormat fmt) {
  if (fmt == StreamFormat::none) fmt = StreamFormat::sse;
  res.set_header("Cache-Control", "no-store");
  res.set_chunked_content_provider(content_type(fmt), [t, fmt](size_t, httplib::DataSink& sink) {
    size_t next = 0;
    while (true) {
      std::vector<std::string> batch;
      bool done;
      {
        std::unique_lock lock(t->mu);
        t->cv.wait_for(lock, 500ms, [&] { return t->events.size() > next || t->done; });
        batch.assign(t->events.begin() + static_cast<long>(next), t->events.end());
        next = t->events.size();
        done = t->done;
      }
      for (auto& e : batch) {
        auto type_at = e.find("\"event\":\"") + 9;
        std::string type = e.substr(type_at, e.find('"', type_at) - type_at);
        std::string out = stream_event(fmt, type, e);
        if (!sink.write(out.data(), out.size())) return false;
      }
      if (done) break;
      if (!sink.is_writable()) return false;  // the task goes on; GET it later
    }
    sink.done();
    return true;
  });
}

}  // namespace

void add_task_routes(Api& api) {
  api.route("POST", "/v1/tasks", kScopeTask,
            [&api](const httplib::Request& req, httplib::Response& res, Caller& c) {
              rapidjson::Document doc;
              auto st = parse_object(req.body,
                                     {{"prompt", JType::string, true},
                                      {"model", JType::string},
                                      {"maxIterations", JType::uint32},
                                      {"timeoutMs", JType::uint32},
                                      {"tier", JType::string},
                                      {"mounts", JType::array}},
                                     &doc);
              if (!st) return send_bus_error(res, st.error(), c.trace_id);
              TaskSpec spec;
              if (auto it = doc.FindMember("mounts"); it != doc.MemberEnd()) {
                auto mounts = sandbox::mounts_from_json(it->value);
                if (!mounts) return send_bus_error(res, mounts.error(), c.trace_id);
                spec.mounts = std::move(*mounts);
              }
              if (!spec.mounts.empty() && !api.options().allow_mounts) {
                return send_bus_error(res,
                                      make_error(ErrorCode::MOUNT_REFUSED,
                                                 "host directory mounts are off in this nv-api "
                                                 "(rule: nv-api --allow-mounts is not set)"),
                                      c.trace_id);
              }
              spec.prompt = get_string(doc, "prompt");
              if (spec.prompt.empty() || spec.prompt.size() > 256 * 1024) {
                return send_error(res, 400, "badRequest", "prompt must be 1..262144 bytes",
                                  c.trace_id);
              }
              spec.model = get_string(doc, "model");
              spec.max_iterations = get_uint32(doc, "maxIterations");
              spec.timeout_ms = get_uint32(doc, "timeoutMs");
              if (doc.HasMember("tier")) {
                schema::SizeTier tier;
                if (!parse_tier(get_string(doc, "tier"), &tier)) {
                  return send_error(res, 400, "badRequest", "tier must be small, medium or large",
                                    c.trace_id);
                }
                spec.tier = static_cast<int>(tier);
              }
              auto t = api.tasks().submit(c, spec);
              if (!t) return send_bus_error(res, t.error(), c.trace_id);
              res.status = 202;
              res.set_header("Location", "/v1/tasks/" + (*t)->id);
              StreamFormat fmt = stream_format(req);
              if (fmt != StreamFormat::none) {
                res.status = 200;
                res.set_header("X-Task-Id", (*t)->id);
                return stream_task(res, *t, fmt);
              }
              res.set_content((*t)->summary_json() + "\n", "application/json");
            });
  api.route("GET", "/v1/tasks", kScopeTask,
            [&api](const httplib::Request&, httplib::Response& res, Caller& c) {
              std::string out = "{\"tasks\":[";
              bool first = true;
              for (auto& t : api.tasks().list(c.tenant)) {
                out += (first ? "" : ",") + t->summary_json();
                first = false;
              }
              res.set_content(out + "]}\n", "application/json");
            });
  auto not_found = [](httplib::Response& res, const Caller& c, const std::string& id) {
    send_error(res, 404, "notFound", "no task '" + id + "'", c.trace_id);
  };
  api.route("GET", "/v1/tasks/{id}", kScopeTask,
            [&api, not_found](const httplib::Request& req, httplib::Response& res, Caller& c) {
              auto t = api.tasks().find(c.tenant, req.matches[1]);
              if (!t) return not_found(res, c, req.matches[1]);
              res.set_content(t->summary_json() + "\n", "application/json");
            });
  api.route("GET", "/v1/tasks/{id}/events", kScopeTask,
            [&api, not_found](const httplib::Request& req, httplib::Response& res, Caller& c) {
              auto t = api.tasks().find(c.tenant, req.matches[1]);
              if (!t) return not_found(res, c, req.matches[1]);
              stream_task(res, t, stream_format(req));
            });
  api.route("POST", "/v1/tasks/{id}/cancel", kScopeTask,
            [&api, not_found](const httplib::Request& req, httplib::Response& res, Caller& c) {
              auto t = api.tasks().find(c.tenant, req.matches[1]);
              if (!t) return not_found(res, c, req.matches[1]);
              t->cancel = true;
              res.status = 202;
              res.set_content(t->summary_json() + "\n", "application/json");
            });
}

}  // namespace nv::api
