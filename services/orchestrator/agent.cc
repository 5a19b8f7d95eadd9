#include "agent.h"

#include <capnp/message.h>
#include <nv/schema/bus.capnp.h>
#include <nv/schema/exec.capnp.h>
#include <nv/schema/llm.capnp.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <thread>

#include "common/client.h"
#include "common/enum_name.h"
#include "common/log.h"
#include "common/trace_id.h"
#include "agent_sandbox.h"
#include "agent_tools.h"
#include "common/sandbox_route.h"
#include "tool_output.h"

namespace nv::agent {

namespace s = nv::schema;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// =============================================================================== pure pieces

std::string status_name(s::TaskStatus status) { return enum_name(status); }

// ================================================================================= one task

namespace {

using Call = ModelCall;

struct Msg {
  s::Role role = s::Role::USER;
  std::string content;
  std::vector<Call> calls;   // assistant
  std::string tool_call_id;  // tool
  std::string tool_name;     // tool
  std::string thinking;      // assistant: its reasoning, sent back as the API expects
};

bool printable(std::string_view v) {
  return std::all_of(v.begin(), v.end(),
                     [](char c) { return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f; });
}

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

}  // namespace

struct Agent::Task {
  Agent& agent;
  std::shared_ptr<Request> req;
  Client client;
  std::string trace;
  std::string model;           // as asked ("" = the gateway's default)
  std::string answered_model;  // as the model server named it in its first reply
  std::string prompt;
  uint32_t max_iterations = 0;
  s::SizeTier tier = s::SizeTier::UNSET;
  sandbox::Network network;  // SubmitTask.network: the task sandbox's policy
  Clock::time_point started = Clock::now();
  Clock::time_point deadline;
  milliseconds timeout{0};
  std::vector<Msg> messages;
  uint32_t iteration = 0;

  // Outcome and stats.
  s::TaskStatus status = s::TaskStatus::UNSET;
  std::optional<Error> error;
  std::string answer;
  uint32_t tool_calls = 0;
  uint64_t prompt_tokens = 0, completion_tokens = 0;
  double load_ms = 0, llm_ms = 0, exec_ms = 0;
  double first_token_ms = 0;       // of the task's first LLM call (0 = nothing streamed)
  std::set<std::string> call_ids;  // every tool-call id given in this task

  // Sandbox mode (agent_tools.h): one sandbox for the task, made at its first tool call.
  bool persistent = true;
  std::optional<TaskSandbox> sandbox;
  bool closing =
      false;  // the task ended: its last calls (destroying the sandbox) are not cancelled

  Task(Agent& a, std::shared_ptr<Request> r)
      : agent(a),
        req(std::move(r)),
        client(a.ctx_, ClientOptions{a.options_.clients_endpoint, {}, {}, a.options_.limits}) {
    // A call waiting when the task is cancelled or the service stops is cancelled upstream
    // (what it holds is released) and returns at once.
    client.set_cancel_check([this] { return !closing && (req->cancelled() || stopping()); });
  }

  milliseconds left() const {
    return std::max(milliseconds(0),
                    std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
  }
  bool stopping() const { return agent.stop_->load(); }

  // A progress partial for this iteration; `fill` sets the union member.
  template <class F>
  void progress(F&& fill) {
    capnp::MallocMessageBuilder mb;
    auto p = bus::init_body<s::TaskProgress>(mb);
    p.setTraceId(trace);
    p.setIteration(iteration);
    fill(p);
    req->partial(mb);
  }

  // A bus call that also ends when the task is cancelled, the service stops, or the deadline
  // (+1 s for the broker's own deadline answer) passes.
  Result<Client::Incoming> bus_call(const std::string& service, capnp::MessageBuilder& body,
                                    milliseconds deadline_ms, const Client::PartialFn& on_partial) {
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

  // Whether any worker of `service` is registered with the broker (asked once per task and
  // service). The broker queues requests for a service nobody serves until their deadline;
  // asking first turns "no executor at all" into an immediate, clear error. When the broker
  // cannot say, the answer is yes and the call itself decides.
  std::map<std::string, bool> known;
  bool registered(const std::string& service) {
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

  void finish(s::TaskStatus st, std::optional<Error> e = std::nullopt) {
    status = st;
    if (e && e->service.empty()) e->service = "orchestrator";
    error = std::move(e);
  }

  // --- the LLM side -------------------------------------------------------------------------

  void fill_chat(s::ChatRequest::Builder c) {
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

  // Ends the task after a failed LLM call, with the status and error that say what happened.
  void llm_failed(const Error& e) {
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
    bool unreachable = e.code == ErrorCode::LLM_UNREACHABLE ||
                       e.code == ErrorCode::MODEL_NOT_FOUND || e.code == ErrorCode::UNAUTHORIZED;
    if (e.code == ErrorCode::UNKNOWN_SERVICE || e.code == ErrorCode::NO_WORKER) {
      Error g = make_error(e.code, "no nv-llm-gateway is serving \"llm\" (" + e.message +
                                       "): start it, e.g. `./nv up` starts the whole stack, or "
                                       "`nv-llm-gateway --llm-url URL` on its own");
      return finish(first ? s::TaskStatus::MODEL_UNREACHABLE : s::TaskStatus::FAILED, g);
    }
    if (unreachable && first) return finish(s::TaskStatus::MODEL_UNREACHABLE, e);
    finish(s::TaskStatus::FAILED, e);
  }

  // --- the exec side ------------------------------------------------------------------------

  // Tells the client and the model that a call could not run; `what` says which ("the code
  // did not run", "the file was not written", ...).
  std::string tool_error(const Error& e, const std::string& what = "the code did not run") {
    progress([&](s::TaskProgress::Builder p) { e.to_capnp(p.initToolError()); });
    log::warn("tool call could not run", {{"code", code_name(e.code)}, {"error", e.message}});
    return "error: " + what + ": " + e.message;
  }

  // Sandbox mode unless --fresh-vm-per-call, or no executor serves sandboxes (then the task
  // runs as with --fresh-vm-per-call, and a notice says so).
  void choose_mode() {
    persistent = !agent.options_.fresh_vm_per_call;
    if (persistent && !registered(std::string(kSandboxService))) {
      persistent = false;
      progress([](s::TaskProgress::Builder p) {
        p.setNotice(
            "no executor serves sandboxes (service \"sandbox\"): each execute_code runs in a "
            "fresh VM and nothing persists between calls");
      });
    }
  }

  // After an `overloaded` answer (the broker's admission control: the executors are busy right
  // now): waits the broker's estimate (0.2–5 s) while the task's deadline allows; *budget
  // becomes the next attempt's. False when the task should not try again.
  // Other answers that say "not now" (no VM free in time, none with its egress enforcement
  // yet, the executor lost its pool for a moment) wait 1 s.
  bool wait_overloaded(const Error& e, milliseconds* budget) {
    const auto& o = agent.options_;
    bool overloaded = e.code == ErrorCode::OVERLOADED;
    auto wait = overloaded ? std::clamp(milliseconds(e.estimated_wait_ms), milliseconds(200),
                                        milliseconds(5000))
                           : milliseconds(1000);
    *budget = std::min(left() - wait, o.exec_timeout + o.exec_slack);
    if (*budget < milliseconds(500) || req->cancelled() || stopping()) return false;
    progress([&](s::TaskProgress::Builder p) {
      p.setNotice(overloaded ? "the code executors are busy (" + std::to_string(e.queue_length) +
                                   " queued): waiting " + std::to_string(wait.count()) + " ms"
                             : "no sandbox yet (" + code_name(e.code) + ": " + e.message +
                                   "): trying again in " + std::to_string(wait.count()) + " ms");
    });
    for (auto until = Clock::now() + wait; Clock::now() < until && !req->cancelled();) {
      std::this_thread::sleep_for(milliseconds(50));
    }
    return !req->cancelled() && !stopping();
  }

  // The time a tool call may take, or an error when the deadline leaves too little.
  Result<milliseconds> call_budget() {
    const auto& o = agent.options_;
    auto budget = std::min(left(), o.exec_timeout + o.exec_slack);
    if (budget < milliseconds(500)) {
      return make_error(ErrorCode::TIMED_OUT, "the task deadline leaves no time to run code");
    }
    return budget;
  }

  // The task's sandbox, made at its first tool call (and again after it was lost).
  Result<std::string> open_sandbox(milliseconds budget) {
    if (!sandbox) {
      sandbox.emplace(client, TaskSandbox::Options{"task:" + trace, trace, tier,
                                                   left() + std::chrono::seconds(60), network});
    }
    if (!sandbox->id().empty()) return sandbox->id();
    if (!registered(std::string(kSandboxService))) {
      return make_error(ErrorCode::UNKNOWN_SERVICE,
                        "no executor serves sandboxes (service \"sandbox\"): start "
                        "nv-sandbox-executor (`./nv up` starts the whole stack)");
    }
    bool created = false;
    auto r = sandbox->ensure(budget, &created);
    // Busy executors (overloaded), a pool with no VM free in time (poolExhausted: other tasks
    // hold its sandboxes), no VM with its egress enforcement in place yet (egressUnenforced,
    // fail-closed), a tier whose template is being remade and an executor that lost its pool
    // for a moment (brokerLost from the executor's side: this orchestrator is up, it is asking)
    // are waited out while the task's deadline allows; a failed create leaves no sandbox.
    auto busy = [](const Error& e) {
      return e.code == ErrorCode::OVERLOADED || e.code == ErrorCode::POOL_EXHAUSTED ||
             e.code == ErrorCode::EGRESS_UNENFORCED || e.code == ErrorCode::TIER_UNAVAILABLE ||
             (e.code == ErrorCode::BROKER_LOST && !e.service.empty());
    };
    while (!r && busy(r.error()) && wait_overloaded(r.error(), &budget)) {
      r = sandbox->ensure(budget, &created);
    }
    if (!r) {
      Error e = r.error();
      if (e.code == ErrorCode::UNKNOWN_SERVICE || e.code == ErrorCode::NO_WORKER) {
        e.message += " (is nv-sandbox-executor running? `nv status` shows the services)";
      }
      return e;
    }
    if (created) {
      std::string what = sandbox->made() > 1 ? "started a new sandbox " : "started sandbox ";
      progress([&](s::TaskProgress::Builder p) {
        p.setNotice(what + *r + " for this task: files and variables persist until the task ends");
      });
    }
    return r;
  }

  // Destroys the task's sandbox (every path of the task ends here). Not cancelled by the
  // task's own cancellation; bounded, since the executor reaps it at its lifetime's end anyway.
  void close_sandbox() {
    closing = true;
    if (!sandbox) return;
    auto budget = stopping() ? milliseconds(2000) : agent.options_.sandbox_close_timeout;
    (void)sandbox->close(budget);
  }

  // One tool call; returns the tool message for the model.
  std::string run_call(const Call& call) {
    if (call.name == "execute_code") return run_code(call);
    if (persistent && call.name == "write_file") return run_write(call);
    if (persistent && call.name == "read_file") return run_read(call);
    return tool_error(
        make_error(ErrorCode::BAD_REQUEST,
                   "there is no tool named \"" + call.name + "\"; " +
                       (persistent ? "the tools are execute_code(language, code), write_file(path, "
                                     "content) and read_file(path, offset, length)"
                                   : "the only tool is execute_code(language, code)")));
  }

  void announce(const Call& call, std::string_view tool, s::Language language,
                std::string_view code, std::string_view path) {
    progress([&](s::TaskProgress::Builder p) {
      auto t = p.initToolCall();
      t.setLanguage(language);
      t.setCode({code.data(), code.size()});
      t.setCallId(call.id);
      t.setTool({tool.data(), tool.size()});
      t.setPath({path.data(), path.size()});
    });
    ++tool_calls;
  }

  std::string run_code(const Call& call) {
    const auto& o = agent.options_;
    std::string why;
    auto args = parse_code_args(call.arguments_json, &why);
    if (!args) return tool_error(make_error(ErrorCode::BAD_REQUEST, why));
    std::string note = args->note.empty() ? std::string() : args->note + "\n";
    if (args->code.size() > o.max_code_bytes) {
      return tool_error(make_error(ErrorCode::BAD_REQUEST,
                                   "the code is " + std::to_string(args->code.size()) +
                                       " bytes; the limit is " + std::to_string(o.max_code_bytes)));
    }
    announce(call, "execute_code", args->language, args->code, {});
    auto budget = call_budget();
    if (!budget) return tool_error(budget.error());
    return persistent ? exec_in_sandbox(*args, note, *budget) : exec_fresh(*args, note, *budget);
  }

  // execute_code in the task's sandbox: python and javascript in their persistent context.
  std::string exec_in_sandbox(const CodeArgs& args, const std::string& note, milliseconds budget) {
    const auto& o = agent.options_;
    auto t0 = Clock::now();
    auto id = open_sandbox(budget);
    if (!id) {
      exec_ms += ms_since(t0);
      return tool_error(id.error());
    }
    budget = std::min(left(), o.exec_timeout + o.exec_slack);
    sandbox::ExecSpec spec;
    spec.language = args.language;
    spec.code = args.code;
    spec.timeout_ms = static_cast<uint32_t>(std::min(o.exec_timeout, budget).count());
    spec.context = context_for(args.language);
    uint32_t seq = 0;
    auto res = sandbox->exec(
        spec,
        [&](s::Stream stream, std::string_view data) {
          progress([&](s::TaskProgress::Builder p) {
            auto c = p.initOutput();
            c.setTraceId(trace);
            c.setStream(stream);
            c.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
            c.setSeq(seq++);
          });
        },
        std::max(budget, milliseconds(1)));
    exec_ms += ms_since(t0);
    if (!res) return tool_error(res.error());
    capnp::MallocMessageBuilder mb;
    auto result = mb.initRoot<s::ExecResult>();
    to_capnp(*res, trace, result);
    progress([&](s::TaskProgress::Builder p) { p.setExecResult(result.asReader()); });
    return note + render_tool_output(result.asReader(), {.max_chars = o.max_tool_output_chars});
  }

  std::string run_write(const Call& call) {
    const auto& o = agent.options_;
    const std::string failed = "the file was not written";
    std::string why;
    auto args = parse_write_args(call.arguments_json, &why);
    if (!args) return tool_error(make_error(ErrorCode::BAD_REQUEST, why), failed);
    if (args->content.size() > o.max_code_bytes) {
      return tool_error(make_error(ErrorCode::BAD_REQUEST,
                                   "the content is " + std::to_string(args->content.size()) +
                                       " bytes; the limit is " + std::to_string(o.max_code_bytes)),
                        failed);
    }
    announce(call, "write_file", s::Language::UNSET, args->content, args->path);
    auto budget = call_budget();
    if (!budget) return tool_error(budget.error(), failed);
    auto t0 = Clock::now();
    auto id = open_sandbox(*budget);
    Result<sandbox::FileEntry> r =
        id ? sandbox->write(args->path, args->content, std::max(left(), milliseconds(1)))
           : Result<sandbox::FileEntry>(id.error());
    exec_ms += ms_since(t0);
    if (!r) return tool_error(r.error(), failed);
    std::string said = (args->note.empty() ? "" : args->note + "\n") + "wrote " +
                       std::to_string(args->content.size()) + " bytes to " + args->path;
    progress([&](s::TaskProgress::Builder p) { p.setToolResult(said); });
    return said;
  }

  std::string run_read(const Call& call) {
    const auto& o = agent.options_;
    const std::string failed = "the file could not be read";
    std::string why;
    auto args = parse_read_args(call.arguments_json, &why);
    if (!args) return tool_error(make_error(ErrorCode::BAD_REQUEST, why), failed);
    announce(call, "read_file", s::Language::UNSET, {}, args->path);
    auto budget = call_budget();
    if (!budget) return tool_error(budget.error(), failed);
    // At most what the model is shown of one tool call (bytes ≥ code points: 4 per point).
    uint64_t most = 4 * uint64_t{o.max_tool_output_chars};
    uint64_t length = args->length == 0 ? most : std::min<uint64_t>(args->length, most);
    auto t0 = Clock::now();
    auto id = open_sandbox(*budget);
    Result<sandbox::FileData> r =
        id ? sandbox->read(args->path, args->offset, length, std::max(left(), milliseconds(1)))
           : Result<sandbox::FileData>(id.error());
    exec_ms += ms_since(t0);
    if (!r) return tool_error(r.error(), failed);
    std::string_view data = r->data;
    data = data.substr(0, shown_bytes(data, r->offset, r->size, o.max_tool_output_chars));
    std::string said = (args->note.empty() ? "" : args->note + "\n") +
                       render_file_read(args->path, data, r->offset, r->size);
    progress([&](s::TaskProgress::Builder p) { p.setToolResult(said); });
    return said;
  }

  // execute_code in a fresh VM ("exec" service): --fresh-vm-per-call.
  std::string exec_fresh(const CodeArgs& args, const std::string& note, milliseconds budget) {
    const auto& o = agent.options_;
    if (!registered("exec")) {
      return tool_error(make_error(ErrorCode::UNKNOWN_SERVICE,
                                   "no code executor is registered (service \"exec\"): start "
                                   "nv-sandbox-executor (`./nv up` starts the whole stack)"));
    }
    capnp::MallocMessageBuilder mb;
    auto r = bus::init_body<s::ExecRequest>(mb);
    r.setTraceId(trace);
    r.setLanguage(args.language);
    r.setCode(args.code);
    r.setTimeoutMs(static_cast<uint32_t>(std::min(o.exec_timeout, budget).count()));
    r.setTier(tier);
    auto t0 = Clock::now();
    auto on_chunk = [&](Client::Incoming& in) {
      auto chunk = in.body.root<s::ExecChunk>();
      if (!chunk) return;
      progress([&](s::TaskProgress::Builder p) { p.setOutput(chunk.value()); });
    };
    auto res = bus_call("exec", mb, budget, on_chunk);
    // The task was admitted: an executor pool that is busy right now is waited for while the
    // task's deadline allows, instead of failing the tool call.
    while (!res && res.error().code == ErrorCode::OVERLOADED &&
           wait_overloaded(res.error(), &budget)) {
      r.setTimeoutMs(static_cast<uint32_t>(std::min(o.exec_timeout, budget).count()));
      res = bus_call("exec", mb, budget, on_chunk);
    }
    exec_ms += ms_since(t0);
    if (!res) {
      Error e = res.error();
      if (e.code == ErrorCode::UNKNOWN_SERVICE || e.code == ErrorCode::NO_WORKER) {
        e.message += " (is nv-sandbox-executor running? `nv status` shows the services)";
      }
      return tool_error(e);
    }
    auto result = res->body.root<s::ExecResult>();
    if (!result) return tool_error(result.error());
    progress([&](s::TaskProgress::Builder p) { p.setExecResult(result.value()); });
    return note + render_tool_output(result.value(), {.max_chars = o.max_tool_output_chars});
  }

  // --- the loop -----------------------------------------------------------------------------

  // One streamed LLM call: its deltas go to the client as they arrive. Returns the reply.
  Result<Client::Incoming> ask_model() {
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

  void run() {
    const auto& o = agent.options_;
    choose_mode();
    messages.push_back({s::Role::SYSTEM, system_prompt(persistent), {}, {}, {}, {}});
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
        return finish(s::TaskStatus::TIMED_OUT,
                      make_error(ErrorCode::TIMED_OUT,
                                 "the task deadline (" + std::to_string(timeout.count()) +
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

  void reply() {
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
};

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

  Task task(*this, req);
  task.prompt = std::string(prompt);
  task.trace = t.getTraceId().size() > 0         ? std::string(t.getTraceId().cStr())
               : !req->header().trace_id.empty() ? req->header().trace_id
                                                 : new_uuid_v7();
  task.model = t.getModel().size() > 0 ? std::string(t.getModel().cStr()) : options_.default_model;
  task.max_iterations =
      t.getMaxIterations() > 0 ? t.getMaxIterations() : options_.default_max_iterations;
  task.tier = t.getTier();
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
