// inference_bridge.h — the host end of a sandbox's inference bridge (issue 16, sandbox.capnp
// InferencePolicy): it connects to the VM's `nv.inference` virtio-serial socket (vm.capnp
// Lease.inferencePath), reads guest.capnp InferenceRequest frames (the HTTP requests programs in
// the guest send to 127.0.0.1:11434), checks each (inference_api.h: route, shape, size, model
// allow-list → 403, token budget → 429), calls the "llm" bus service with the sandbox's trace id
// and answers with InferenceResponse frames, streamed piece by piece as the model writes.
// prompt + completion tokens of each answered call are charged to the sandbox
// (SandboxInfo.inferenceTokensUsed). Requests of one sandbox are served one at a time, in order.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "common/client.h"
#include "common/error.h"
#include "inference_api.h"

namespace nv::exec {

// One llm.capnp ChatRequest.
struct LlmRequest {
  std::string trace_id;
  std::string model;  // "" = the gateway's default
  std::vector<inference::ChatMessage> messages;
  bool stream = false;
  double temperature = -1;
  uint32_t max_tokens = 0;
  const std::atomic<bool>* cancel = nullptr;  // when it turns true the call is cancelled
};
using LlmDelta = std::function<void(const std::string& content, const std::string& thinking)>;
// Calls the model; streamed pieces go to the delta function as they come. Thread-safe.
using LlmCall =
    std::function<Result<inference::ChatAnswer>(const LlmRequest& request, const LlmDelta& delta)>;

// The "llm" service of the bus: a Client per call (the bridge threads are many and short).
LlmCall bus_llm(zmq::context_t& ctx, ClientOptions options, std::chrono::milliseconds timeout);

// What a bridge needs of its sandbox. Each is called from the bridge's thread.
struct InferenceAccount {
  sandbox::Inference policy;             // the token budget filled in
  std::function<uint64_t()> used;        // tokens charged so far
  std::function<void(uint64_t)> charge;  // add tokens (and keep the total)
};

class InferenceBridge {
 public:
  // Connects to `socket_path` (retrying up to `connect_for`) and starts serving.
  static Result<std::unique_ptr<InferenceBridge>> start(const std::string& socket_path,
                                                        std::string trace_id,
                                                        InferenceAccount account, LlmCall llm,
                                                        std::chrono::milliseconds connect_for);
  ~InferenceBridge();  // stops the thread and closes the socket
  InferenceBridge(const InferenceBridge&) = delete;
  InferenceBridge& operator=(const InferenceBridge&) = delete;

  // Serves one request (exposed for tests): `send(status, content_type, data, last)` is called
  // once per response frame.
  using SendFn = std::function<bool(int status, const std::string& content_type,
                                    const std::string& data, bool last)>;
  static void serve(const std::string& method, const std::string& path, const std::string& body,
                    const std::string& trace_id, InferenceAccount& account, const LlmCall& llm,
                    const SendFn& send, const std::atomic<bool>* cancel = nullptr);

 private:
  InferenceBridge(int fd, std::string trace_id, InferenceAccount account, LlmCall llm);
  void run();

  int fd_;
  std::string trace_id_;
  InferenceAccount account_;
  LlmCall llm_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace nv::exec
