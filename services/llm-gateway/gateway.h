// gateway.h — the "llm" bus service: one ChatRequest in, one chat completion against the model
// server (nv_llm_client) out, as ChatDelta partials (when streaming) and one ChatReply, or a
// typed common.Error.
//
// Per request, in order:
//   1. validate the body (version, enum ranges, message/tool counts and sizes, model name);
//   2. take a token from the shared request bucket (--rate), waiting at most until the caller's
//      deadline; a request that could not get one in time fails with rateLimited;
//   3. borrow an idle LlmClient from the pool (one per --concurrency slot: each client owns one
//      reused libcurl handle and serialises its calls);
//   4. chat, forwarding streamed text as ChatDelta partials;
//   5. reply (or fail) and publish `llm.call` with model, api, duration, tokens, load time and
//      the outcome ("ok" or the error code's name).
// Nothing here logs or returns the API key: the library reads it once and only puts it in the
// Authorization header.
#pragma once

#include <nv/schema/llm.capnp.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/events.h"
#include "common/token_bucket.h"
#include "common/worker.h"
#include "llm_client.h"

namespace nv::gateway {

// Caps on what a ChatRequest may carry; anything larger is a badRequest.
struct RequestLimits {
  size_t max_messages = 512;
  size_t max_message_bytes = 1u << 20;  // content of one message
  size_t max_total_bytes = 4u << 20;    // all contents, tool arguments and tool specs
  size_t max_tools = 32;
  size_t max_tool_calls = 32;  // per message
  size_t max_model_chars = 200;
  uint32_t max_tokens = 1u << 20;
};

// Checks a request body that already passed the version check. Returns badRequest with a
// message naming the field at fault.
Status validate(schema::ChatRequest::Reader request, const RequestLimits& limits);

struct GatewayOptions {
  llm::LlmConfig llm;        // base URL, api, model, timeouts, retries, key source
  uint32_t concurrency = 4;  // LlmClients in the pool = requests served at once
  double rate_per_s = 0;     // shared request bucket refill; 0 = unlimited
  double rate_burst = 10;
  RequestLimits limits;
};

// Makes one LlmClient; tests may swap in one with injected clock/sleep.
using ClientFactory = std::function<std::unique_ptr<llm::LlmClient>(const llm::LlmConfig&)>;

class Gateway {
 public:
  Gateway(GatewayOptions options, EventPublisher& events, ClientFactory factory = {});
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // The worker's request handler (runs on the request's own thread).
  void handle(const std::shared_ptr<Request>& request);
  // Ends calls in flight soon with shuttingDown and refuses new ones (any thread).
  void shutdown();

  const GatewayOptions& options() const { return options_; }

 private:
  class Lease;
  std::unique_ptr<llm::LlmClient> acquire();
  void release(std::unique_ptr<llm::LlmClient> client);
  Status take_token(const Request& request);
  void publish_call(const std::string& trace_id, const std::string& model, double duration_ms,
                    const llm::ChatReply* reply, const std::string& outcome);

  GatewayOptions options_;
  EventPublisher& events_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<llm::LlmClient>> idle_;
  std::vector<llm::LlmClient*> all_;  // for shutdown(); owned by idle_ or a borrower
  std::mutex bucket_mu_;
  TokenBucket bucket_;
  std::atomic<bool> stopping_{false};
};

}  // namespace nv::gateway
