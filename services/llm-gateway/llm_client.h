// llm_client.h — one chat completion against a model server over HTTP (library nv_llm_client).
//
// Speaks two wire protocols:
//   - Ollama  POST {base}/api/chat             (NDJSON when streaming)
//   - OpenAI  POST {base}/v1/chat/completions  (SSE when streaming; llama.cpp, vLLM, OpenAI)
// and turns every failure into a typed LlmError whose code is a common.capnp Error code and
// whose message says what to do (start `ollama serve`, run `ollama pull MODEL`, set a key...).
//
// Usage:
//   nv::llm::LlmConfig cfg;                     // defaults: Ollama at http://localhost:11434
//   cfg.default_model = "qwen2.5-coder:1.5b";
//   nv::llm::LlmClient client(cfg);
//   nv::llm::ChatRequest req;
//   req.trace_id = trace;                       // sent as the X-Trace-Id header
//   req.messages.push_back({nv::llm::Role::user, "Say hi"});
//   nv::llm::ChatResult r = client.chat(req, [](std::string_view d, nv::llm::DeltaKind k) {
//     print(d, k == nv::llm::DeltaKind::thinking ? dim : plain); });
//   if (!r.ok()) report(r.error->code, r.error->message);
//
// Nothing here knows about ZeroMQ; the gateway converts with the *_capnp helpers at the end.
// Thread-safety: a client serialises its calls with a mutex (it reuses one libcurl handle for
// connection reuse); use one client per thread for parallel calls.
// Secrets: the API key is read once at construction, only ever put in the Authorization header,
// and never written to a log line, an error message or a reply.
#pragma once

#include <nv/schema/common.capnp.h>
#include <nv/schema/llm.capnp.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nv::llm {

// ---- Request / reply ----------------------------------------------------------------------

enum class Role { system, user, assistant, tool };

// "system" | "user" | "assistant" | "tool".
std::string_view role_name(Role role);

struct ToolCall {
  std::string id;              // the model's call id; "" when the API gives none (Ollama)
  std::string name;            // e.g. "execute_code"
  std::string arguments_json;  // the arguments object as JSON text, e.g. {"code":"print(1)"}
};

struct Message {
  Role role = Role::user;
  std::string content;
  std::vector<ToolCall> tool_calls;  // assistant: calls it asked for
  std::string tool_call_id;          // tool: which call this answers (OpenAI needs it)
  std::string tool_name;             // tool: the tool's name (Ollama's tool_name)
  // assistant: the model's reasoning, kept out of `content` (see reasoning.h for where it comes
  // from). Sent back as Ollama's message.thinking, and as OpenAI reasoning_content on assistant
  // messages with tool calls (DeepSeek's thinking mode refuses a tool-call turn without it).
  std::string thinking;
};

struct ToolSpec {
  std::string name;
  std::string description;
  std::string parameters_json;  // JSON Schema of the arguments object ("" = {"type":"object"})
};

struct ChatRequest {
  std::string trace_id;  // sent as X-Trace-Id; "" = no header
  std::string model;     // "" = LlmConfig::default_model
  std::vector<Message> messages;
  std::vector<ToolSpec> tools;
  bool stream = false;        // ask the server to stream; text deltas go to the DeltaFn
  float temperature = -1.0f;  // < 0 = server default
  uint32_t max_tokens = 0;    // 0 = server default
};

struct ChatReply {
  std::string model;               // the model that answered (as the server names it)
  Message message;                 // role assistant: text and/or tool calls
  std::string done_reason;         // "stop", "tool_calls" (whenever tool calls came back), "length"
  uint32_t prompt_tokens = 0;      // Ollama prompt_eval_count / OpenAI usage.prompt_tokens
  uint32_t completion_tokens = 0;  // Ollama eval_count / OpenAI usage.completion_tokens
  uint64_t load_duration_ns = 0;   // Ollama load_duration (0 for OpenAI servers)
  uint64_t total_duration_ns = 0;  // Ollama total_duration; llama.cpp timings when present
  double wall_ms = 0;              // measured around the HTTP call(s), backoff included
  uint32_t attempts = 0;           // HTTP attempts made (retries + 1)
  double first_token_ms = 0;       // streamed: ms from the call's start to the first delta
                                   // (answer or reasoning); 0 = not streamed / nothing streamed
};

// ---- Errors -------------------------------------------------------------------------------

using ErrorCode = nv::schema::Error::Code;

struct LlmError {
  ErrorCode code = ErrorCode::INTERNAL;
  std::string message;     // what happened and what to do; never contains the API key
  bool retryable = false;  // the same request may succeed later unchanged
  long http_status = 0;    // last HTTP status seen (0 = none)
  uint32_t attempts = 0;   // HTTP attempts made (0 when refused before calling)
  double wall_ms = 0;
};

// ---- Configuration ------------------------------------------------------------------------

enum class Api { ollama, openai };

// "ollama" | "openai"; parse_api returns false for anything else.
std::string_view api_name(Api api);
bool parse_api(std::string_view text, Api* out);

enum class LogLevel { debug, info, warn, error };
// Receives the client's own log lines (retries, backoff, failures). Never given a secret.
using LogFn = std::function<void(LogLevel, const std::string& msg, const std::string& trace_id)>;

struct LlmConfig {
  // Server root, no trailing path. The caller honours OLLAMA_HOST ("host:port" is accepted and
  // gets "http://" prepended).
  std::string base_url = "http://localhost:11434";
  Api api = Api::ollama;
  std::string default_model;             // used when ChatRequest::model is ""
  long connect_timeout_ms = 5'000;       // TCP (+TLS) connect, per attempt
  long timeout_ms = 300'000;             // whole HTTP exchange, per attempt (models are slow)
  uint32_t max_attempts = 3;             // 1 = no retries; retried: connect errors, 429, 5xx
  long backoff_initial_ms = 250;         // first retry waits ~this (jittered 50..100%)
  long backoff_max_ms = 5'000;           // exponential growth stops here
  long retry_after_max_ms = 30'000;      // a longer Retry-After is not waited for
  double rate_per_s = 0;                 // request token bucket refill; 0 = no limit
  double rate_burst = 10;                // bucket capacity (requests in one burst)
  size_t max_response_bytes = 8u << 20;  // a longer body fails with llmBadResponse
  std::string api_key_env;               // name of an env var holding the bearer key ("" = none)
  std::string api_key_file;              // or a file holding it (first line; wins over api_key_env)
  bool openai_stream_usage = true;       // send stream_options.include_usage when streaming
  LogFn log;                             // optional
};

// ---- Client -------------------------------------------------------------------------------

// What a streamed piece is: answer text, or reasoning (Ollama message.thinking, OpenAI
// reasoning_content / reasoning, or text inside <think>…</think>).
enum class DeltaKind { content, thinking };
// Called with each piece as it streams in (only when ChatRequest::stream), in order.
using DeltaFn = std::function<void(std::string_view text, DeltaKind kind)>;
// Asked while a call runs (about every 100 ms, and during retry backoff); true ends the call with
// `cancelled` and closes its HTTP connection, so the model server stops generating for nobody.
// Must be cheap and thread-safe (the gateway reads the bus request's cancel flag).
using CancelFn = std::function<bool()>;

struct ChatResult {
  std::optional<ChatReply> reply;  // set on success
  std::optional<LlmError> error;   // set on failure
  bool ok() const { return reply.has_value(); }
};

struct ModelsResult {
  std::vector<std::string> models;  // names as the server lists them
  std::optional<LlmError> error;
  bool ok() const { return !error.has_value(); }
};

// What the client takes from its surroundings, swappable in tests.
struct ClientDeps {
  std::function<std::chrono::steady_clock::time_point()> clock;  // for the rate limiter
  std::function<void(std::chrono::milliseconds)> sleep;          // for backoff
  std::function<double()> jitter;  // uniform in [0,1); default: a seeded PRNG
};

class LlmClient {
 public:
  explicit LlmClient(LlmConfig config, ClientDeps deps = {});
  ~LlmClient();
  LlmClient(const LlmClient&) = delete;
  LlmClient& operator=(const LlmClient&) = delete;

  // One chat completion, retried as configured. on_delta is called on this thread. When
  // `cancelled` turns true the call ends within about 100 ms with ErrorCode::CANCELLED.
  ChatResult chat(const ChatRequest& request, const DeltaFn& on_delta = {},
                  const CancelFn& cancelled = {});

  // The models the server has (Ollama GET /api/tags, OpenAI GET /v1/models); one attempt.
  ModelsResult list_models(const std::string& trace_id = {});

  // Makes the call in flight (if any) end soon with shuttingDown, cuts a backoff wait short,
  // and refuses later calls the same way. Safe from any thread (e.g. a SIGTERM handler thread).
  void shutdown();

  const LlmConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// OLLAMA_HOST as Ollama reads it ("", "host", "host:port", "http(s)://host[:port]") → a base
// URL: "" gives http://localhost:11434; no scheme means http; http without a port gets 11434.
std::string base_url_from_ollama_host(std::string_view ollama_host);

// ---- Cap'n Proto conversions --------------------------------------------------------------

ChatRequest from_capnp(nv::schema::ChatRequest::Reader r);
void to_capnp(const ChatRequest& req, nv::schema::ChatRequest::Builder b);
ChatReply from_capnp(nv::schema::ChatReply::Reader r);
// Sets version to schemaVersion and the given trace id.
void to_capnp(const ChatReply& reply, std::string_view trace_id, nv::schema::ChatReply::Builder b);
// service is set to "llm-gateway".
void to_capnp(const LlmError& error, nv::schema::Error::Builder b);
Message from_capnp(nv::schema::Message::Reader r);
void to_capnp(const Message& m, nv::schema::Message::Builder b);

}  // namespace nv::llm
