// agent.h — the agent loop: the orchestrator's "task" service.
//
// One SubmitTask (task.capnp) in; TaskProgress partials and one TaskResult out. Per task, on the
// request's own handler thread and with per-task state only:
//   1. validate; take the trace id from the task, else the bus header, else mint a UUID v7;
//   2. conversation = [system prompt, the user's task]; tools = execute_code(language, code),
//      write_file(path, content), read_file(path, offset, length) — one sandbox per task, made
//      at the first tool call, destroyed when the task ends on every path; with
//      fresh_vm_per_call, execute_code alone, each call in a fresh VM (agent_tools.h);
//      with SubmitTask.mounts (host directories, issue 15) the sandbox is made BEFORE the first
//      model call, so a refused mount (mountRefused) fails the task with no model call; the
//      system prompt lists the mounted guest paths and which are read-only; the read-write
//      ones are synced back to the host when the task ends, whatever its status, and the
//      sync's result is a `notice` partial. Mounts with fresh_vm_per_call: badRequest (there
//      is no task sandbox to hold them);
//   3. loop (at most maxIterations LLM calls, all before the task deadline):
//        ask "llm" (ChatRequest, streamed: each ChatDelta goes on at once as a modelDelta or
//        thinkingDelta partial) → text, reasoning and tool calls; native calls first, else
//        the fallback parser reads calls written in the text (never in the reasoning);
//        every call gets a unique id (model_reply.h: assign_call_ids);
//        no calls → the text is the answer (completed); an empty or length-cut reply is
//        never an answer: the model is asked once more (a `notice` partial says so), and a
//        second such reply ends the task with llmReplyCut;
//        each execute_code → the task's sandbox ("sandbox.<executor>", SandboxExec; python
//        and javascript in a persistent context) or, per call, "exec" (ExecRequest); chunks
//        are forwarded as TaskProgress.output, the ExecResult as TaskProgress.execResult, and a
//        tool message goes back to the model; write_file and read_file answer with a
//        TaskProgress.toolResult and a tool message;
//        a call that cannot run (bad arguments, no executor, timeout) becomes a toolError
//        partial and a tool message saying what happened — never a failed task;
//   4. reply TaskResult with stats; events task.started / task.iteration / task.finished.
// The trace id rides in every bus header, so the gateway sends it as X-Trace-Id and the executor
// hands it to the guest as NEUROVISOR_TRACE_ID.
#pragma once

#include <nv/schema/common.capnp.h>
#include <nv/schema/task.capnp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "common/events.h"
#include "common/frames.h"
#include "common/worker.h"
#include "agent_tools.h"
#include "model_reply.h"

namespace nv::agent {

struct AgentOptions {
  std::string workers_endpoint = "inproc://nv-workers";  // where the "task" worker registers
  std::string clients_endpoint = "inproc://nv-clients";  // where it calls "llm" and "exec"
  std::string events_endpoint = "inproc://nv-events-in";
  uint32_t max_tasks = 64;                                  // tasks run at once (worker capacity)
  uint32_t default_max_iterations = 10;                     // when SubmitTask.maxIterations is 0
  uint32_t max_iterations_cap = 100;                        // larger asks are refused
  std::chrono::milliseconds default_task_timeout{600'000};  // when SubmitTask.timeoutMs is 0
  std::chrono::milliseconds llm_call_timeout{330'000};      // bus deadline of one LLM call
  std::chrono::milliseconds exec_timeout{30'000};           // ExecRequest.timeoutMs
  std::chrono::milliseconds exec_slack{120'000};            // + waiting for a VM, on the bus
  bool fresh_vm_per_call = false;  // true: every execute_code in a fresh VM ("exec"), no
                                   // sandbox, no file tools (agent_tools.h)
  std::chrono::milliseconds sandbox_close_timeout{15'000};  // destroying a task's sandbox
  std::chrono::milliseconds mount_sync_timeout{120'000};    // copying rw mounts back at the end
  std::string default_model;                                // "" = the gateway's --model
  size_t max_prompt_bytes = 64 * 1024;
  size_t max_calls_per_iteration = 8;  // more are refused as tool errors
  size_t max_code_bytes = 256 * 1024;
  size_t max_tool_output_chars = 16 * 1024;  // what the model is shown per call
  std::chrono::milliseconds heartbeat{1000};
  bus::Limits limits;
  std::string instance;  // "" = host/orchestrator/pid
};

// ------------------------------------------------------------------ pure pieces (tested alone)

// "completed", "maxIterations", ... (the schema's names).
std::string status_name(schema::TaskStatus status);

// -------------------------------------------------------------------------------- the service

class Agent {
 public:
  // `stop` ends the service (and the tasks in it) when it becomes true.
  Agent(zmq::context_t& ctx, AgentOptions options);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Registers "task" and serves until `stop`; tasks still running then end with an error.
  void run(const std::atomic<bool>& stop);

  // One task (the worker's handler; public for in-process use).
  void handle(const std::shared_ptr<Request>& request);

 private:
  struct Task;
  zmq::context_t& ctx_;
  AgentOptions options_;
  EventPublisher events_;
  const std::atomic<bool>* stop_ = nullptr;
  std::atomic<bool> never_{false};
};

}  // namespace nv::agent
