// client.h — the client side of the bus: send requests to a service through the broker's
// client endpoint and receive partials, then one reply or error.
//
//   -> [empty][Header{request, service, requestId, traceId, deadlineMs}][body]
//   <- [empty][Header{partial, requestId}][body]   zero or more
//   <- [empty][Header{reply|error, requestId}][body]
// Not thread-safe: one Client per thread. Many requests may be outstanding at once.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <zmq.hpp>

#include "curve.h"
#include "error.h"
#include "frames.h"

namespace nv {

struct ClientOptions {
  std::string endpoint;                      // ipc://.../clients.sock or tcp://host:port
  std::optional<curve::KeyPair> curve_keys;  // with curve_server_key: CURVE over tcp://
  std::string curve_server_key;
  bus::Limits limits;
};

class Client {
 public:
  Client(zmq::context_t& ctx, ClientOptions options);

  // One incoming answer: header (kind partial, reply or error) and body.
  struct Incoming {
    bus::Header header;
    bus::BodyReader body;
    bool final() const { return header.kind != bus::Kind::PARTIAL; }
    // The error carried by an `error` answer.
    Error error();
  };

  // Sends a request; returns its id. `body` may be null for services that take none.
  uint64_t send(const std::string& service, capnp::MessageBuilder* body,
                std::chrono::milliseconds deadline, const std::string& trace_id = {});
  // Sends raw frames after the delimiter (tests use this to send malformed messages).
  void send_raw(std::vector<zmq::message_t> frames_after_delimiter);
  // Waits up to `timeout` for the next answer to any outstanding request; returns early (empty)
  // when a signal interrupts the wait, so the caller can look at its flags.
  std::optional<Incoming> receive(std::chrono::milliseconds timeout);
  // Tells the broker (and the worker) that request `id` is no longer wanted.
  void cancel(uint64_t id, const std::string& service);

  // Sends and waits for the final answer, handing partials to `on_partial`. A reply returns its
  // body; an error answer, a malformed answer or the deadline (+1 s grace) returns an Error.
  // In a process that installed interrupt.h, SIGINT/SIGTERM cancel the request upstream and
  // return `cancelled` at once.
  using PartialFn = std::function<void(Incoming&)>;
  Result<Incoming> call(const std::string& service, capnp::MessageBuilder* body,
                        std::chrono::milliseconds deadline, const PartialFn& on_partial = {},
                        const std::string& trace_id = {});

  zmq::socket_t& socket() { return socket_; }

 private:
  ClientOptions options_;
  zmq::socket_t socket_;
  uint64_t next_id_ = 1;
};

}  // namespace nv
