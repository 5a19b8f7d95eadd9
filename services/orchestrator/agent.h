// agent.h — the agent loop: the orchestrator's "task" service.
//
// One SubmitTask (task.capnp) in; TaskProgress partials and one TaskResult out. Per task, on the
// request's own handler thread and with per-task state only:
//   1. validate; take the trace id from the task, else the bus header, else mint a UUID v7;
//   2. conversation = [system prompt, the user's task]; tools = [execute_code(language, code)];
//   3. loop (at most maxIterations LLM calls, all before the task deadline):
//        ask "llm" (ChatRequest) → text and tool calls; native calls first, else the fallback
//        parser reads calls written in the text (fenced/bare JSON, <tool_call>, XML);
//        no calls → the text is the answer (completed);
//        each call → "exec" (ExecRequest); ExecChunks are forwarded as TaskProgress.output,
//        the ExecResult as TaskProgress.execResult, and a tool message goes back to the model;
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

namespace nv::agent {

struct AgentOptions {
  std::string workers_endpoint = "inproc://nv-workers";  // where the "task" worker registers
  std::string clients_endpoint = "inproc://nv-clients";  // where it calls "llm" and "exec"
  std::string events_endpoint = "inproc://nv-events-in";
  uint32_t max_tasks = 64;                               // tasks run at once (worker capacity)
  uint32_t default_max_iterations = 10;                  // when SubmitTask.maxIterations is 0
  uint32_t max_iterations_cap = 100;                     // larger asks are refused
  std::chrono::milliseconds default_task_timeout{600'000};  // when SubmitTask.timeoutMs is 0
  std::chrono::milliseconds llm_call_timeout{330'000};   // bus deadline of one LLM call
  std::chrono::milliseconds exec_timeout{30'000};        // ExecRequest.timeoutMs
  std::chrono::milliseconds exec_slack{120'000};         // + waiting for a VM, on the bus
  std::string default_model;                             // "" = the gateway's --model
  size_t max_prompt_bytes = 64 * 1024;
  size_t max_calls_per_iteration = 8;                    // more are refused as tool errors
  size_t max_code_bytes = 256 * 1024;
  size_t max_tool_output_chars = 16 * 1024;              // program output shown to the model
                                                         // per call (tool_output.h)
  std::chrono::milliseconds heartbeat{1000};
  bus::Limits limits;
  std::string instance;                                  // "" = host/orchestrator/pid
};

// ------------------------------------------------------------------ pure pieces (tested alone)

// The system prompt every task starts with.
std::string system_prompt();
// The JSON Schema of execute_code's arguments.
std::string execute_code_schema();

struct ParsedCall {
  std::string name;            // the tool named, e.g. "execute_code"
  std::string arguments_json;  // an arguments object as JSON text
};

// Tool calls written inside the model's text, for models without native tool calling:
//   ```json {"name": "execute_code", "arguments": {...}} ```   (also ```tool_call, bare JSON)
//   <tool_call>{"name": ..., "arguments": {...}}</tool_call>
//   <tool_call><name>execute_code</name><arguments><language>..</language>..</arguments>
//   <execute_code language="python">CODE</execute_code>
//   {"name": "execute_code", "parameters": {...}} and {"function": {...}} spellings
// Returns every call found, in order of appearance; none when the text holds no call.
std::vector<ParsedCall> parse_text_tool_calls(std::string_view text);

struct CodeArgs {
  schema::Language language = schema::Language::UNSET;
  std::string code;
};
// execute_code's arguments → language and code, or a message for the model saying what is wrong.
// Languages: python (py, python3), bash (sh, shell), javascript (js, node).
std::optional<CodeArgs> parse_code_args(std::string_view arguments_json, std::string* why);

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
