@0x93f2ecb46f939248;
# llm.capnp — the "llm" service of nv-llm-gateway: one chat completion per request.
# Stream: ChatDelta partials (when streaming), then one ChatReply (or a common.Error).
# How a streamed piece travels: the model server's NDJSON line / SSE event → the gateway's
# stream parser (ollama_api.cc / openai_api.cc; <think> split in reasoning.cc) → one ChatDelta
# partial per piece on the bus (the broker forwards partials unchanged, in order) → the agent
# (services/orchestrator/agent.cc) turns each into a TaskProgress modelDelta / thinkingDelta
# partial of task.capnp → nv-submit prints it. Tool calls travel whole, in the ChatReply.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("nv::schema");
using Common = import "common.capnp";

enum Role {
  unset @0;
  system @1;
  user @2;
  assistant @3;
  tool @4;
}

struct ToolCall {
  id @0 :Text;                  # the model's call id ("" when the API gives none, as Ollama)
  name @1 :Text;                # tool name, e.g. "execute_code"
  argumentsJson @2 :Text;       # the arguments object as JSON text
}

struct Message {
  role @0 :Role;
  content @1 :Text;
  toolCalls @2 :List(ToolCall); # assistant: calls it asked for
  toolCallId @3 :Text;          # tool: which call this answers
  toolName @4 :Text;            # tool: the tool's name
  thinking @5 :Text;            # assistant: the model's reasoning, never part of content. From
                                # Ollama's message.thinking, OpenAI-compatible
                                # reasoning_content / reasoning, or <think>…</think> in the text.
                                # Sent back in history as each API expects: Ollama
                                # message.thinking; OpenAI reasoning_content on assistant
                                # messages that carry tool calls (DeepSeek thinking-mode rule).
}

struct ToolSpec {
  name @0 :Text;
  description @1 :Text;
  parametersJson @2 :Text;      # JSON Schema of the arguments object
}

struct ChatRequest {
  version @0 :UInt16;
  traceId @1 :Text;
  model @2 :Text;               # "" = the gateway's --model
  messages @3 :List(Message);
  tools @4 :List(ToolSpec);
  stream @5 :Bool;              # ask the model server to stream; deltas come back as partials
  temperature @6 :Float32;      # < 0 = server default
  maxTokens @7 :UInt32;         # 0 = server default
}

struct ChatDelta {
  # One streamed piece, sent as soon as the model server sends it. Exactly one of content and
  # thinking is non-empty. Tool calls are not streamed: they arrive whole in the ChatReply.
  version @0 :UInt16;
  traceId @1 :Text;
  content @2 :Text;             # answer text the model produced since the last delta (UTF-8)
  thinking @3 :Text;            # reasoning text since the last delta (never part of content)
}

struct ChatReply {
  version @0 :UInt16;
  traceId @1 :Text;
  model @2 :Text;
  message @3 :Message;          # the assistant message (text and/or tool calls)
  doneReason @4 :Text;          # "stop", "tool_calls", "length", ...
  promptTokens @5 :UInt32;      # Ollama prompt_eval_count / OpenAI usage.prompt_tokens
  completionTokens @6 :UInt32;  # Ollama eval_count / OpenAI usage.completion_tokens
  loadDurationNs @7 :UInt64;    # Ollama load_duration
  totalDurationNs @8 :UInt64;   # Ollama total_duration
  wallMs @9 :Float64;           # measured by the gateway around the HTTP call(s)
  attempts @10 :UInt32;         # HTTP attempts made (retries + 1)
  firstTokenMs @11 :Float64;    # streamed calls: ms from the request until the first answer or
                                # reasoning byte of the attempt that answered; 0 = not streamed
                                # or nothing streamed
}
