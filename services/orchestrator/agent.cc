// agent.cc — the agent loop (agent.h): the service, a task's model calls and its reply. The
// tool calls are in agent_calls.cc, the task's state in agent_task.h.
#include "agent.h"

#include <capnp/message.h>
#include <nv/schema/bus.capnp.h>
#include <nv/schema/llm.capnp.h>

#include <algorithm>
#include <cctype>

#include "agent_task.h"
#include "common/client.h"
#include "common/enum_name.h"
#include "common/log.h"
#include "common/sandbox_route.h"
#include "common/trace_id.h"
#include "tool_output.h"

namespace nv::agent {

// =============================================================================== pure pieces

std::string status_name(s::TaskStatus status) { return enum_name(status); }

// ================================================================================= one task

namespace {

bool printable(std::string_view v) {
  return std::all_of(v.begin(), v.end(),
                     [](char c) { return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f; });
}

}  // namespace

Result<Client::Incoming> Agent::Task::bus_call(const std::string& service,
                                               capnp::MessageBuilder& body,
                                               milliseconds deadline_ms,
                                               const Client::PartialFn& on_partial) {
  if (deadline_ms.count() <= 0) {  // 0 on the bus would mean "the broker's default"
    return make_error(ErrorCode::TIMED_OUT, "no time left before the task deadline");
  }
  uint64_t id = client.send(service, &body, deadline_ms, trace);
  auto end = Clock::now() + deadline_ms + std::chrono::seconds(1);
  while (true) {
    if (stopping()) {
      client.cancel(id, service);
      return make_error(ErrorCode::SHUTTING_DOWN, "the orchestrator is shutting down");
    }
    if (req->cancelled()) {
      client.cancel(id, service);
      return make_error(ErrorCode::CANCELLED, "the client cancelled the task");
    }
    auto remaining = std::chrono::duration_cast<milliseconds>(end - Clock::now());
    if (remaining.count() <= 0) {
      client.cancel(id, service);
      return make_error(ErrorCode::TIMED_OUT,
                        "no answer from service '" + service + "' within " +
                            std::to_string(deadline_ms.count()) + " ms",
                        true);
    }
    auto in = client.receive(std::min(remaining, milliseconds(100)));
    if (!in || in->header.request_id != id) continue;
    if (in->header.kind == bus::Kind::PARTIAL) {
      if (on_partial) on_partial(*in);
      continue;
    }
    if (in->header.kind == bus::Kind::ERROR) return in->error();
    return std::move(*in);
  }
}

bool Agent::Task::registered(const std::string& service) {
  if (auto it = known.find(service); it != known.end()) return it->second;
  capnp::MallocMessageBuilder mb;
  bus::init_body<s::StatusRequest>(mb);
  bool yes = true;
  if (auto r = bus_call("nv.status", mb, milliseconds(2000), {}); r) {
    if (auto st = r->body.root<s::StatusReply>(); st) {
      yes = false;
      for (auto svc : st.value().getServices()) {
        yes |= std::string_view(svc.getService().cStr()) == service;
      }
    }
  }
  if (yes) known[service] = true;  // a missing service is asked about again next time
  return yes;
}

void Agent::Task::fill_chat(s::ChatRequest::Builder c) {
  c.setTraceId(trace);
  c.setModel(model);
  c.setStream(true);  // pieces come back as ChatDelta partials while the model writes
  c.setTemperature(-1);
  auto msgs = c.initMessages(static_cast<unsigned>(messages.size()));
  for (unsigned i = 0; i < messages.size(); ++i) {
    const Msg& m = messages[i];
    auto b = msgs[i];
    b.setRole(m.role);
    b.setContent(m.content);
    auto calls = b.initToolCalls(static_cast<unsigned>(m.calls.size()));
    for (unsigned j = 0; j < m.calls.size(); ++j) {
      calls[j].setId(m.calls[j].id);
      calls[j].setName(m.calls[j].name);
      calls[j].setArgumentsJson(m.calls[j].arguments_json);
    }
    b.setToolCallId(m.tool_call_id);
    b.setToolName(m.tool_name);
    b.setThinking(m.thinking);
  }
  auto specs = tool_specs(persistent);
  auto tools = c.initTools(static_cast<unsigned>(specs.size()));
  for (unsigned i = 0; i < specs.size(); ++i) {
    tools[i].setName(specs[i].name);
    tools[i].setDescription(specs[i].description);
    tools[i].setParametersJson(specs[i].parameters_json);
  }
}

void Agent::Task::llm_failed(const Error& e) {
  bool first = iteration == 1;
  if (e.code == ErrorCode::CANCELLED) return finish(s::TaskStatus::CANCELLED, e);
  // The call's bus deadline is the task's time left rounded down to the millisecond, so the
  // broker may answer timedOut a little before `deadline`: allow for that.
  if (Clock::now() + milliseconds(50) >= deadline) {
    return finish(s::TaskStatus::TIMED_OUT,
                  make_error(ErrorCode::TIMED_OUT,
                             "the task deadline (" + std::to_string(timeout.count()) +
                                 " ms) passed while waiting for the model (" + e.message +
                                 "); raise --timeout or use a faster model"));
  }
  if (e.code == ErrorCode::LLM_TIMED_OUT || e.code == ErrorCode::TIMED_OUT) {
    return finish(s::TaskStatus::TIMED_OUT, e);
  }
  bool unreachable = e.code == ErrorCode::LLM_UNREACHABLE || e.code == ErrorCode::MODEL_NOT_FOUND ||
                     e.code == ErrorCode::UNAUTHORIZED;
  if (e.code == ErrorCode::UNKNOWN_SERVICE || e.code == ErrorCode::NO_WORKER) {
    Error g = make_error(e.code, "no nv-llm-gateway is serving \"llm\" (" + e.message +
                                     "): start it, e.g. `./nv up` starts the whole stack, or "
                                     "`nv-llm-gateway --llm-url URL` on its own");
    return finish(first ? s::TaskStatus::MODEL_UNREACHABLE : s::TaskStatus::FAILED, g);
  }
  if (unreachable && first) return finish(s::TaskStatus::MODEL_UNREACHABLE, e);
  finish(s::TaskStatus::FAILED, e);
}

Result<Client::Incoming> Agent::Task::ask_model() {
  const auto& o = agent.options_;
  capnp::MallocMessageBuilder mb;
  fill_chat(bus::init_body<s::ChatRequest>(mb));
  auto t0 = Clock::now();
  bool first = true;
  auto res = bus_call("llm", mb, std::min(left(), o.llm_call_timeout), [&](Client::Incoming& in) {
    auto d = in.body.root<s::ChatDelta>();
    if (!d) return;
    auto content = d.value().getContent();
    auto thinking = d.value().getThinking();
    if (content.size() == 0 && thinking.size() == 0) return;
    if (first) {
      first = false;
      if (first_token_ms == 0) first_token_ms = std::max(ms_since(t0), 0.001);
    }
    progress([&](s::TaskProgress::Builder p) {
      if (thinking.size() > 0) {
        p.setThinkingDelta(thinking);
      } else {
        p.setModelDelta(content);
      }
    });
  });
  llm_ms += ms_since(t0);
  return res;
}

void Agent::Task::run() {
  const auto& o = agent.options_;
  choose_mode();
  if (!open_mounted_sandbox()) return;  // a refused mount: no model call at all
  messages.push_back(
      {s::Role::SYSTEM, system_prompt(persistent) + mounts_prompt(mounts), {}, {}, {}, {}});
  messages.push_back({s::Role::USER, prompt, {}, {}, {}, {}});
  std::string last_text;
  bool asked_again = false;  // the previous reply was empty or cut and the model was asked again
  for (iteration = 1; iteration <= max_iterations; ++iteration) {
    progress([](s::TaskProgress::Builder p) { p.setThinking(); });
    if (!registered("llm")) {
      return llm_failed(
          make_error(ErrorCode::UNKNOWN_SERVICE, "no worker of service \"llm\" is registered"));
    }
    auto res = ask_model();
    if (!res) return llm_failed(res.error());
    auto reply = res->body.root<s::ChatReply>();
    if (!reply) {
      return finish(s::TaskStatus::FAILED,
                    make_error(ErrorCode::LLM_BAD_RESPONSE,
                               "the gateway's reply is unusable: " + reply.error().message));
    }
    auto r = reply.value();
    if (answered_model.empty()) answered_model = r.getModel().cStr();
    prompt_tokens += r.getPromptTokens();
    completion_tokens += r.getCompletionTokens();
    load_ms += static_cast<double>(r.getLoadDurationNs()) / 1e6;
    auto m = r.getMessage();
    std::string done_reason = r.getDoneReason().cStr();
    Msg said{s::Role::ASSISTANT, m.getContent().cStr(), {}, {}, {}, m.getThinking().cStr()};
    for (auto c : m.getToolCalls()) {
      said.calls.push_back({c.getId().cStr(), c.getName().cStr(), c.getArgumentsJson().cStr()});
    }
    bool fallback = false;
    if (said.calls.empty()) {
      // The text only: reasoning is never parsed for calls.
      for (auto& c : parse_text_tool_calls(said.content)) {
        said.calls.push_back(
            {"call_text_" + std::to_string(iteration) + "_" + std::to_string(said.calls.size()),
             c.name, c.arguments_json});
      }
      fallback = !said.calls.empty();
    }
    // Unique, non-empty ids, the same in the assistant message and in each tool message.
    assign_call_ids(said.calls, iteration, call_ids);
    uint32_t n_calls = static_cast<uint32_t>(said.calls.size());
    agent.events_.publish(
        "task.iteration",
        [&](s::Event::Builder e) {
          auto it = e.initTaskIteration();
          it.setIteration(iteration);
          it.setToolCalls(n_calls);
        },
        trace);
    ReplyKind kind = classify_reply(said.content, said.calls.size(), done_reason);
    log::info("model answered", {{"iteration", iteration},
                                 {"tool_calls", n_calls},
                                 {"fallback_parser", fallback},
                                 {"chars", said.content.size()},
                                 {"thinking_chars", said.thinking.size()},
                                 {"done_reason", done_reason}});
    if (kind == ReplyKind::empty || kind == ReplyKind::cut) {
      // Never a final answer. Ask once more; a second such reply in a row ends the task.
      if (asked_again || iteration == max_iterations) {
        answer = trimmed(said.content);
        return finish(s::TaskStatus::FAILED,
                      make_error(ErrorCode::LLM_REPLY_CUT, reply_cut_error(kind, done_reason)));
      }
      asked_again = true;
      std::string notice = ask_again_notice(kind, done_reason);
      progress([&](s::TaskProgress::Builder p) { p.setNotice(notice); });
      log::warn("asking the model again", {{"why", notice}});
      messages.push_back(said);
      messages.push_back({s::Role::USER, ask_again_message(kind), {}, {}, {}, {}});
      continue;
    }
    asked_again = false;
    last_text = said.content;
    if (kind == ReplyKind::answer) {
      answer = said.content;
      return finish(s::TaskStatus::COMPLETED);
    }
    if (!said.content.empty()) {
      progress([&](s::TaskProgress::Builder p) { p.setModelText(said.content); });
    }
    if (iteration == max_iterations) break;  // its calls would never be read by the model
    Msg kept = said;
    for (Call& c : kept.calls) c.arguments_json = history_arguments(c.arguments_json);
    messages.push_back(kept);
    size_t n = 0;
    for (const Call& c : said.calls) {
      std::string content =
          ++n > o.max_calls_per_iteration
              ? tool_error(make_error(ErrorCode::BAD_REQUEST,
                                      "too many tool calls in one answer (the limit is " +
                                          std::to_string(o.max_calls_per_iteration) + ")"))
              : run_call(c);
      if (stopping()) {
        return finish(s::TaskStatus::FAILED,
                      make_error(ErrorCode::SHUTTING_DOWN, "the orchestrator is shutting down"));
      }
      if (req->cancelled()) {
        return finish(s::TaskStatus::CANCELLED,
                      make_error(ErrorCode::CANCELLED, "the client cancelled the task"));
      }
      messages.push_back({s::Role::TOOL, content, {}, c.id, c.name, {}});
    }
    if (Clock::now() >= deadline) {
      return finish(
          s::TaskStatus::TIMED_OUT,
          make_error(ErrorCode::TIMED_OUT, "the task deadline (" + std::to_string(timeout.count()) +
                                               " ms) passed while code ran; raise --timeout"));
    }
  }
  iteration = max_iterations;
  answer = last_text;
  finish(s::TaskStatus::MAX_ITERATIONS,
         make_error(ErrorCode::BAD_REQUEST,
                    "the model was still calling tools after " + std::to_string(max_iterations) +
                        " iterations; raise --max-iterations or simplify the task"));
}

void Agent::Task::reply() {
  capnp::MallocMessageBuilder mb;
  auto r = bus::init_body<s::TaskResult>(mb);
  r.setTraceId(trace);
  r.setStatus(status);
  r.setAnswer(answer);
  if (error) error->to_capnp(r.initError());
  r.setModel(model.empty() ? answered_model : model);
  r.setIterations(std::min(iteration, max_iterations));
  r.setToolCalls(tool_calls);
  r.setPromptTokens(prompt_tokens);
  r.setCompletionTokens(completion_tokens);
  r.setModelLoadMs(load_ms);
  r.setLlmMs(llm_ms);
  r.setExecMs(exec_ms);
  r.setTotalMs(ms_since(started));
  r.setFirstTokenMs(first_token_ms);
  req->reply(mb);
}

// ================================================================================ the service

Agent::Agent(zmq::context_t& ctx, AgentOptions options)
    : ctx_(ctx),
      options_(std::move(options)),
      events_(ctx, options_.events_endpoint, "orchestrator",
              options_.instance.empty() ? default_instance("orchestrator") : options_.instance),
      stop_(&never_) {}

Agent::~Agent() = default;

void Agent::run(const std::atomic<bool>& stop) {
  stop_ = &stop;
  WorkerOptions w;
  w.service = "task";
  w.broker_endpoint = options_.workers_endpoint;
  w.capacity = options_.max_tasks;
  w.heartbeat = options_.heartbeat;
  w.limits = options_.limits;
  w.instance = options_.instance;
  w.drain_timeout = milliseconds(5000);
  Worker worker(ctx_, w, [this](std::shared_ptr<Request> r) { handle(r); });
  log::info("agent loop serving \"task\"", {{"max_tasks", options_.max_tasks}});
  worker.run(stop);
}

void Agent::handle(const std::shared_ptr<Request>& req) {
  auto body = req->read<s::SubmitTask>();
  if (!body) {
    req->fail(body.error());
    return;
  }
  auto t = body.value();
  auto bad = [&](std::string why) { req->fail(make_error(ErrorCode::BAD_REQUEST, why)); };
  std::string_view prompt(t.getPrompt().cStr(), t.getPrompt().size());
  if (trimmed(prompt).empty()) return bad("prompt is empty: say what the task is");
  if (prompt.size() > options_.max_prompt_bytes) {
    return bad("prompt has " + std::to_string(prompt.size()) + " bytes; the limit is " +
               std::to_string(options_.max_prompt_bytes));
  }
  if (t.getMaxIterations() > options_.max_iterations_cap) {
    return bad("maxIterations is " + std::to_string(t.getMaxIterations()) + "; the limit is " +
               std::to_string(options_.max_iterations_cap));
  }
  if (static_cast<uint16_t>(t.getTier()) > static_cast<uint16_t>(s::SizeTier::LARGE)) {
    return bad("tier " + std::to_string(static_cast<uint16_t>(t.getTier())) +
               " is not small, medium or large");
  }
  if (t.getModel().size() > 200 || !printable(t.getModel().cStr())) {
    return bad("model must be at most 200 printable characters");
  }
  if (t.getTraceId().size() > 64 || !printable(t.getTraceId().cStr())) {
    return bad("traceId must be at most 64 printable characters");
  }
  auto mounts = sandbox::mounts_from_capnp(t.getMounts());
  if (mounts.size() > 8) {
    return bad("mounts has " + std::to_string(mounts.size()) + " entries; the limit is 8");
  }
  for (const auto& m : mounts) {
    if (m.host_path.size() > 4096 || m.guest_path.size() > 4096 || !printable(m.host_path) ||
        !printable(m.guest_path)) {
      return bad("a mount's hostPath and guestPath must be at most 4096 printable characters");
    }
  }
  if (!mounts.empty() && options_.fresh_vm_per_call) {
    return bad(
        "this orchestrator runs every call in a fresh VM (--fresh-vm-per-call), so a task has no "
        "sandbox to mount host directories into: submit without --mount, or use an "
        "orchestrator without --fresh-vm-per-call");
  }

  Task task(*this, req);
  task.prompt = std::string(prompt);
  task.trace = t.getTraceId().size() > 0         ? std::string(t.getTraceId().cStr())
               : !req->header().trace_id.empty() ? req->header().trace_id
                                                 : new_uuid_v7();
  task.model = t.getModel().size() > 0 ? std::string(t.getModel().cStr()) : options_.default_model;
  task.max_iterations =
      t.getMaxIterations() > 0 ? t.getMaxIterations() : options_.default_max_iterations;
  task.tier = t.getTier();
  task.mounts = std::move(mounts);
  if (t.hasNetwork()) {  // checked in full by the pool (egressDenied, badRequest)
    auto n = t.getNetwork();
    if (n.getAllow().size() > 64) return bad("network.allow holds more than 64 entries");
    task.network.allow = n.getMode() == s::NetworkMode::ALLOW;
    for (auto e : n.getAllow()) task.network.entries.emplace_back(e.cStr(), e.size());
    task.network.max_connections = n.getMaxConnections();
    task.network.bandwidth = n.getBandwidthBytesPerS();
  }
  task.timeout =
      t.getTimeoutMs() > 0 ? milliseconds(t.getTimeoutMs()) : options_.default_task_timeout;
  task.timeout = std::min(task.timeout, req->remaining());
  task.deadline = task.started + task.timeout;
  log::TraceScope scope(task.trace);
  log::info("task started", {{"model", task.model},
                             {"max_iterations", task.max_iterations},
                             {"timeout_ms", static_cast<int64_t>(task.timeout.count())}});
  events_.publish(
      "task.started",
      [&](s::Event::Builder e) {
        auto st = e.initTaskStarted();
        st.setModel(task.model);
        st.setPromptChars(static_cast<uint32_t>(prompt.size()));
      },
      task.trace);
  try {
    task.run();
  } catch (const std::exception& e) {
    // A bug must not take the task's client down with a missing answer: report it.
    log::error("task loop threw", {{"what", e.what()}});
    task.finish(s::TaskStatus::FAILED,
                make_error(ErrorCode::INTERNAL, std::string("internal error: ") + e.what()));
  } catch (const kj::Exception& e) {
    log::error("task loop threw", {{"what", e.getDescription().cStr()}});
    task.finish(s::TaskStatus::FAILED,
                make_error(ErrorCode::INTERNAL,
                           std::string("internal error: ") + e.getDescription().cStr()));
  }
  task.close_sandbox();  // every way a task ends comes here
  std::string st = status_name(task.status);
  double total = ms_since(task.started);
  events_.publish(
      "task.finished",
      [&](s::Event::Builder e) {
        auto f = e.initTaskFinished();
        f.setStatus(st);
        f.setIterations(std::min(task.iteration, task.max_iterations));
        f.setToolCalls(task.tool_calls);
        f.setDurationMs(total);
      },
      task.trace,
      task.status == s::TaskStatus::COMPLETED ? s::Severity::INFO : s::Severity::WARNING);
  log::info("task finished", {{"status", st},
                              {"iterations", std::min(task.iteration, task.max_iterations)},
                              {"tool_calls", task.tool_calls},
                              {"total_ms", total},
                              {"llm_ms", task.llm_ms},
                              {"exec_ms", task.exec_ms},
                              {"error", task.error ? task.error->message : std::string()}});
  task.reply();
}

}  // namespace nv::agent
