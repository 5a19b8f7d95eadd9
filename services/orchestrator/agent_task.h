// agent_task.h — one task of the agent loop (agent.h), private to the orchestrator: its state
// and steps. agent.cc holds the loop (the model calls, the reply); agent_calls.cc the tool calls
// (the task's sandbox, execute_code, write_file, read_file, fresh VMs).
#pragma once

#include <capnp/message.h>
#include <nv/schema/llm.capnp.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "agent.h"
#include "agent_sandbox.h"
#include "agent_tools.h"
#include "common/client.h"

namespace nv::agent {

namespace s = nv::schema;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

using Call = ModelCall;

struct Msg {
  s::Role role = s::Role::USER;
  std::string content;
  std::vector<Call> calls;   // assistant
  std::string tool_call_id;  // tool
  std::string tool_name;     // tool
  std::string thinking;      // assistant: its reasoning, sent back as the API expects
};

inline double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

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
  sandbox::Network network;            // SubmitTask.network: the task sandbox's policy
  std::vector<sandbox::Mount> mounts;  // SubmitTask.mounts: the sandbox is made before the model
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
                                    milliseconds deadline_ms, const Client::PartialFn& on_partial);

  // Whether any worker of `service` is registered with the broker (asked once per task and
  // service). The broker queues requests for a service nobody serves until their deadline;
  // asking first turns "no executor at all" into an immediate, clear error. When the broker
  // cannot say, the answer is yes and the call itself decides.
  std::map<std::string, bool> known;
  bool registered(const std::string& service);

  void finish(s::TaskStatus st, std::optional<Error> e = std::nullopt) {
    status = st;
    if (e && e->service.empty()) e->service = "orchestrator";
    error = std::move(e);
  }

  // --- the LLM side -------------------------------------------------------------------------

  void fill_chat(s::ChatRequest::Builder c);

  // Ends the task after a failed LLM call, with the status and error that say what happened.
  void llm_failed(const Error& e);

  // --- the exec side ------------------------------------------------------------------------

  // Tells the client and the model that a call could not run; `what` says which ("the code
  // did not run", "the file was not written", ...).
  std::string tool_error(const Error& e, const std::string& what = "the code did not run");

  // Sandbox mode unless --fresh-vm-per-call, or no executor serves sandboxes (then the task
  // runs as with --fresh-vm-per-call, and a notice says so).
  void choose_mode();

  // After an `overloaded` answer (the broker's admission control: the executors are busy right
  // now): waits the broker's estimate (0.2–5 s) while the task's deadline allows; *budget
  // becomes the next attempt's. False when the task should not try again.
  // Other answers that say "not now" (no VM free in time, none with its egress enforcement
  // yet, the executor lost its pool for a moment) wait 1 s.
  bool wait_overloaded(const Error& e, milliseconds* budget);

  // The time a tool call may take, or an error when the deadline leaves too little.
  Result<milliseconds> call_budget();

  // The task's sandbox, made at its first tool call (and again after it was lost).
  Result<std::string> open_sandbox(milliseconds budget);

  // A task with mounts: its sandbox is made before the first model call, so that a refused
  // mount (mountRefused) ends the task at once. False when the task has ended (finish()).
  bool open_mounted_sandbox();

  // Copies the read-write mounts back to the host (close_sandbox, every way a task ends) and
  // says what happened in a notice.
  void sync_mounts();

  // Destroys the task's sandbox (every path of the task ends here). Not cancelled by the
  // task's own cancellation; bounded, since the executor reaps it at its lifetime's end anyway.
  void close_sandbox();

  // One tool call; returns the tool message for the model.
  std::string run_call(const Call& call);

  void announce(const Call& call, std::string_view tool, s::Language language,
                std::string_view code, std::string_view path);

  std::string run_code(const Call& call);

  // execute_code in the task's sandbox: python and javascript in their persistent context.
  std::string exec_in_sandbox(const CodeArgs& args, const std::string& note, milliseconds budget);

  std::string run_write(const Call& call);

  std::string run_read(const Call& call);

  // execute_code in a fresh VM ("exec" service): --fresh-vm-per-call.
  std::string exec_fresh(const CodeArgs& args, const std::string& note, milliseconds budget);

  // --- the loop -----------------------------------------------------------------------------

  // One streamed LLM call: its deltas go to the client as they arrive. Returns the reply.
  Result<Client::Incoming> ask_model();

  void run();

  void reply();
};

}  // namespace nv::agent
