// agent_calls.cc — the tool calls of an agent task (agent_task.h): the task's sandbox,
// execute_code (in the sandbox or a fresh VM), write_file and read_file.
#include <capnp/message.h>
#include <nv/schema/bus.capnp.h>
#include <nv/schema/exec.capnp.h>

#include <algorithm>
#include <thread>

#include "agent_task.h"
#include "common/log.h"
#include "common/sandbox_route.h"
#include "tool_output.h"

namespace nv::agent {

std::string Agent::Task::tool_error(const Error& e, const std::string& what) {
  progress([&](s::TaskProgress::Builder p) { e.to_capnp(p.initToolError()); });
  log::warn("tool call could not run", {{"code", code_name(e.code)}, {"error", e.message}});
  return "error: " + what + ": " + e.message;
}

void Agent::Task::choose_mode() {
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

bool Agent::Task::wait_overloaded(const Error& e, milliseconds* budget) {
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

Result<milliseconds> Agent::Task::call_budget() {
  const auto& o = agent.options_;
  auto budget = std::min(left(), o.exec_timeout + o.exec_slack);
  if (budget < milliseconds(500)) {
    return make_error(ErrorCode::TIMED_OUT, "the task deadline leaves no time to run code");
  }
  return budget;
}

Result<std::string> Agent::Task::open_sandbox(milliseconds budget) {
  if (!sandbox) {
    sandbox.emplace(client,
                    TaskSandbox::Options{"task:" + trace, trace, tier,
                                         left() + std::chrono::seconds(60), mounts, network});
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

bool Agent::Task::open_mounted_sandbox() {
  if (mounts.empty()) return true;
  if (!persistent) {
    finish(s::TaskStatus::FAILED,
           make_error(ErrorCode::UNKNOWN_SERVICE,
                      "the task mounts host directories, but no executor serves sandboxes "
                      "(service \"sandbox\"): start nv-sandbox-executor with --mount-root"));
    return false;
  }
  auto budget = call_budget();
  if (!budget) {
    finish(s::TaskStatus::TIMED_OUT, budget.error());
    return false;
  }
  auto t0 = Clock::now();
  auto id = open_sandbox(*budget);
  exec_ms += ms_since(t0);
  if (id) return true;
  const Error& e = id.error();
  finish(e.code == ErrorCode::CANCELLED   ? s::TaskStatus::CANCELLED
         : e.code == ErrorCode::TIMED_OUT ? s::TaskStatus::TIMED_OUT
                                          : s::TaskStatus::FAILED,
         e);
  return false;
}

void Agent::Task::sync_mounts() {
  bool writable = std::any_of(mounts.begin(), mounts.end(),
                              [](const sandbox::Mount& m) { return !m.read_only; });
  if (!writable || !sandbox || sandbox->id().empty()) return;
  auto budget = stopping() ? milliseconds(5000) : agent.options_.mount_sync_timeout;
  auto r = sandbox->sync(budget);
  std::string notice = r ? sync_notice(*r)
                         : "the read-write mounts were not copied back to the host (" +
                               code_name(r.error().code) + ": " + r.error().message + ")";
  if (r) {
    log::info("task mounts synced", {{"notice", notice}});
  } else {
    log::warn("task mounts not synced", {{"error", r.error().message}});
  }
  progress([&](s::TaskProgress::Builder p) { p.setNotice(notice); });
}

void Agent::Task::close_sandbox() {
  closing = true;
  if (!sandbox) return;
  sync_mounts();
  auto budget = stopping() ? milliseconds(2000) : agent.options_.sandbox_close_timeout;
  (void)sandbox->close(budget);
}

std::string Agent::Task::run_call(const Call& call) {
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

void Agent::Task::announce(const Call& call, std::string_view tool, s::Language language,
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

std::string Agent::Task::run_code(const Call& call) {
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

std::string Agent::Task::exec_in_sandbox(const CodeArgs& args, const std::string& note,
                                         milliseconds budget) {
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

std::string Agent::Task::run_write(const Call& call) {
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

std::string Agent::Task::run_read(const Call& call) {
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

std::string Agent::Task::exec_fresh(const CodeArgs& args, const std::string& note,
                                    milliseconds budget) {
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

}  // namespace nv::agent
