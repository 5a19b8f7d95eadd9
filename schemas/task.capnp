@0xe3db2b64c64e44ee;
# task.capnp — what nv-submit sends to the orchestrator's "task" service and what it gets back.
# Stream: TaskProgress partials, then one TaskResult reply (or a common.Error).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("nv::schema");
using Common = import "common.capnp";
using Exec = import "exec.capnp";
using Sandbox = import "sandbox.capnp";

struct SubmitTask {
  version @0 :UInt16;
  prompt @1 :Text;              # the user's task in plain words
  model @2 :Text;               # model name; "" = the gateway's default
  maxIterations @3 :UInt32;     # LLM calls at most; 0 = orchestrator default (10)
  timeoutMs @4 :UInt32;         # whole-task deadline; 0 = orchestrator default
  tier @5 :Common.SizeTier;     # VM size for the code; unset = small
  traceId @6 :Text;             # "" = the orchestrator mints a UUID v7
  mounts @7 :List(Sandbox.Mount);  # host directories for the task's sandbox (nv-submit --mount
                                # HOST:GUEST[:ro|:rw]); read-write ones are synced back when the
                                # task ends, whatever its status; refused with mountRefused
                                # before any model call when outside the executor's roots
  network @8 :Sandbox.NetworkPolicy;  # the task's sandbox network; unset = none
}

struct ToolCallInfo {
  # The model asked to run code.
  language @0 :Common.Language;
  code @1 :Text;
  callId @2 :Text;
  tool @3 :Text;                # the tool: "execute_code" ("" from older orchestrators),
                                # "write_file" (code = the content) or "read_file" (code = "")
  path @4 :Text;                # write_file, read_file: the absolute path in the sandbox
}

struct TaskProgress {
  version @0 :UInt16;
  traceId @1 :Text;
  iteration @2 :UInt32;         # 1-based LLM round
  union {
    thinking @3 :Void;          # an LLM call started
    modelText @4 :Text;         # text the model said alongside tool calls
    toolCall @5 :ToolCallInfo;  # code about to run in a VM
    output @6 :Exec.ExecChunk;  # live output of that code
    execResult @7 :Exec.ExecResult;   # how that code ended
    toolError @8 :Common.Error; # the tool could not run; the model is told
    modelDelta @9 :Text;        # a streamed piece of the model's text, as it arrives (the
                                # whole text follows as modelText when tool calls come with it)
    thinkingDelta @10 :Text;    # a streamed piece of the model's reasoning: shown apart (dimmed),
                                # never executed, never parsed for calls, never the answer
    notice @11 :Text;           # the agent says what it does about an odd reply, e.g. "the reply
                                # was cut at the token limit (finish_reason length); asking again"
    toolResult @12 :Text;       # what write_file or read_file answered the model (execute_code's
                                # results come as output and execResult)
  }
}

enum TaskStatus {
  unset @0;
  completed @1;          # the model gave a final answer
  failed @2;             # an error ended the task (see error)
  maxIterations @3;      # the model kept calling tools past maxIterations
  timedOut @4;           # the task deadline passed
  modelUnreachable @5;   # the LLM could not be reached at all
  cancelled @6;          # the client went away
}

struct TaskResult {
  version @0 :UInt16;
  traceId @1 :Text;
  status @2 :TaskStatus;
  answer @3 :Text;              # the model's final answer
  error @4 :Common.Error;       # set when status is not completed
  model @5 :Text;
  iterations @6 :UInt32;        # LLM calls made
  toolCalls @7 :UInt32;         # code executions requested
  promptTokens @8 :UInt64;
  completionTokens @9 :UInt64;
  modelLoadMs @10 :Float64;     # Ollama load_duration summed over calls
  llmMs @11 :Float64;           # time inside LLM calls
  execMs @12 :Float64;          # time inside code executions
  totalMs @13 :Float64;         # task wall time in the orchestrator
  firstTokenMs @14 :Float64;    # time to first token of the task's first LLM call, as the agent
                                # saw it (bus + gateway + model); 0 = nothing streamed
}
