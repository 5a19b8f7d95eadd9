// inference_bridge.h — the guest end of the inference bridge (issue 16; guest.capnp
// InferenceRequest/InferenceResponse): an HTTP/1.1 server on 127.0.0.1:11434 that forwards every
// request whole to the host over the `nv.inference` virtio-serial port and writes back what the
// host answers, streamed as it arrives (RFC 9112 chunked transfer coding when the answer comes
// in several frames; Content-Length when in one). Requests are parsed by http-parser (Debian
// libhttp-parser-dev, linked statically); one request per connection (Connection: close).
//
// It knows nothing of Ollama or OpenAI: the host (nv-sandbox-executor, inference_api.h) parses,
// validates and answers. Limits here: request bodies above 1 MiB get 413, malformed HTTP 400,
// at most 16 requests at once (503 beyond), a host silent for 15 min → 504, a client silent for
// 60 s while sending its request is dropped.
//
// The agent runs it as a child process (`nv-guest-agent --inference-bridge`) on the host's
// startInference, so a fault in it never takes the agent down.
#pragma once

#include <string>

namespace nv::guest::agent {

inline constexpr int kInferencePort = 11434;                // Ollama's default port
inline constexpr size_t kInferenceMaxBodyBytes = 1u << 20;  // request bodies (413 above)

// Serves until the listener fails. `port_device` is the nv.inference port's /dev path; when the
// listener is bound (or could not be) "ok" (or why not) is written to `ready_fd`, which is then
// closed (-1: none). Returns the process exit code.
int run_inference_bridge(const std::string& port_device, int ready_fd);

// The agent's startInference: runs `agent_binary --inference-bridge DEVICE FD` as a child (once;
// a running one is kept) and waits until it listens. Returns "" or why it could not.
std::string start_inference_bridge(const std::string& agent_binary, const std::string& device);
// The agent's stopInference: kills the child if one runs (127.0.0.1:11434 then refuses).
void stop_inference_bridge();

}  // namespace nv::guest::agent
