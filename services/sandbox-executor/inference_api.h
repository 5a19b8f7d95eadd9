// inference_api.h — the HTTP side of the inference bridge (issue 16): what a program in the guest
// sends to 127.0.0.1:11434 (guest/agent/inference_bridge.h forwards it whole) mapped to one
// llm.capnp ChatRequest, and the llm service's answer mapped back, in the wire formats of the
// two APIs agents use:
//   Ollama  POST /api/chat   https://github.com/ollama/ollama/blob/main/docs/api.md#generate-a-chat-completion
//           "stream" defaults to true: application/x-ndjson, one JSON object per line, the last
//           with "done": true, done_reason and the counts (prompt_eval_count, eval_count).
//           GET /api/tags lists the allowed models; errors are {"error": "<text>"}.
//   OpenAI  POST /v1/chat/completions   https://platform.openai.com/docs/api-reference/chat
//           "stream" defaults to false; true: text/event-stream, `data: <chat.completion.chunk>`
//           events, then `data: [DONE]`; stream_options.include_usage adds a usage chunk.
//           GET /v1/models lists the allowed models; errors are
//           {"error": {"message", "type", "param", "code"}}.
// Pure functions, no I/O: inference_bridge.cc does the transport and the llm call.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/sandbox_client.h"

namespace nv::exec::inference {

enum class Api { ollama, openai };

inline constexpr size_t kMaxBodyBytes = 1u << 20;  // request body (the guest caps it too: 413)
inline constexpr size_t kMaxMessages = 256;
inline constexpr size_t kMaxModelName = 128;

struct ChatMessage {
  std::string role;  // "system" | "user" | "assistant" | "tool" (OpenAI "developer" → system)
  std::string content;
};

// One chat call as the guest asked for it.
struct ChatCall {
  Api api = Api::ollama;
  std::string model;  // as the client named it
  std::vector<ChatMessage> messages;
  bool stream = false;
  bool include_usage = false;  // OpenAI stream_options.include_usage
  double temperature = -1;     // < 0 = the server's default
  uint32_t max_tokens = 0;     // Ollama options.num_predict, OpenAI max_completion_tokens /
                               // max_tokens; 0 = the server's default
};

// What the llm service answered (llm.capnp ChatReply, the fields the APIs show).
struct ChatAnswer {
  std::string model;
  std::string content;
  std::string thinking;
  std::string done_reason;  // "stop", "length", ...
  uint32_t prompt_tokens = 0, completion_tokens = 0;
  uint64_t total_duration_ns = 0, load_duration_ns = 0;
};

// An HTTP answer (whole, or the head of a streamed one).
struct HttpAnswer {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

// The route of a request. `kind`: chat, models (the listing), root (Ollama's "Ollama is
// running"), or an HttpAnswer error (404 unknown path, 405 wrong method).
enum class Route { chat, models, root, error };
Route route(std::string_view method, std::string_view path, Api& api, HttpAnswer& error);

// The error body of `api` for `status` (400, 403, 404, 405, 413, 429, 500, 502, 504).
// OpenAI types/codes: 400 invalid_request_error, 403 model_not_found (permission_error),
// 429 insufficient_quota, others api_error.
HttpAnswer error_answer(Api api, int status, const std::string& message);

// Parses and checks a chat body: a JSON object with "model" (1..128 bytes) and "messages"
// (1..256 objects with a known "role" and a string "content", OpenAI content parts of type
// "text" joined); bodies above kMaxBodyBytes → 413, malformed → 400 (the answer in `error`).
bool parse_chat(Api api, std::string_view body, ChatCall& out, HttpAnswer& error);

// The policy: a model not allowed → 403; no tokens left → 429. `model_for_llm` is the name to
// send to the gateway ("" = its default when the allow-list is empty).
bool admit(const ChatCall& call, const sandbox::Inference& policy, uint64_t used,
           std::string& model_for_llm, HttpAnswer& error);

// Non-streamed answers.
std::string ollama_reply(const ChatAnswer& a, const std::string& created_at);
std::string openai_reply(const ChatAnswer& a, const std::string& id, int64_t created);
// Streamed pieces: one NDJSON line / one SSE event (each ends in its newline(s)).
std::string ollama_delta(const std::string& model, const std::string& created_at,
                         const std::string& content, const std::string& thinking);
std::string ollama_final(const ChatAnswer& a, const std::string& created_at);
std::string openai_chunk(const std::string& id, int64_t created, const std::string& model,
                         const std::string& role, const std::string& content,
                         const std::string& finish_reason);
std::string openai_usage_chunk(const ChatAnswer& a, const std::string& id, int64_t created);
inline constexpr std::string_view kOpenAiDone = "data: [DONE]\n\n";
// A streamed call that failed after its head was sent: an error line / event in the stream.
std::string stream_error(Api api, const std::string& message);

// The model listings (GET /api/tags, GET /v1/models) of an allow-list.
std::string ollama_tags(const std::vector<std::string>& models);
std::string openai_models(const std::vector<std::string>& models, int64_t created);

// RFC 3339 UTC with nanoseconds ("2023-08-04T19:22:45.499127Z"), as Ollama's created_at.
std::string rfc3339(int64_t unix_ns);

}  // namespace nv::exec::inference
