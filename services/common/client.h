// client.h — the client side of the bus: send requests to a service through the broker's
// client endpoint and receive partials, then one reply or error.
//
//   -> [empty][Header{request, service, requestId, traceId, deadlineMs}][body]
//   <- [empty][Header{partial, requestId}][body]   zero or more
//   <- [empty][Header{reply|error, requestId}][body]
// Not thread-safe: one Client per thread. Many requests may be outstanding at once.
//
// Liveness (both ways, only while requests are outstanding; see bus.capnp Header.heartbeat):
//   -> [empty][Header{heartbeat, intervalMs}]   every `heartbeat`, sent from receive()/call()
//   <- [empty][Header{heartbeat, intervalMs}]   the broker's, every broker heartbeat
// So a caller with outstanding requests must call receive() at least every `heartbeat`; the
// broker cancels the requests of a client whose connection closed, or that stayed silent for
// `client-silence` (a stalled client is not a dead one). The client fails its outstanding
// requests with brokerLost, one answer per request, when the broker is silent for `liveness`
// of its heartbeat intervals after the connection dropped (it died or restarted), or for
// `stall_limit` while the connection stays up (it stalls: SIGSTOP, a frozen host).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <zmq.hpp>

#include "curve.h"
#include "error.h"
#include "frames.h"

namespace nv {

class ConnectionWatch;

struct ClientOptions {
  std::string endpoint;                      // ipc://.../clients.sock or tcp://host:port
  std::optional<curve::KeyPair> curve_keys;  // with curve_server_key: CURVE over tcp://
  std::string curve_server_key;
  bus::Limits limits;
  std::chrono::milliseconds heartbeat{1000};     // our heartbeat while requests are outstanding
  int liveness = 3;                              // broker heartbeats missed after a disconnect
  std::chrono::milliseconds stall_limit{30000};  // silence tolerated on a connection still up
};

class Client {
 public:
  Client(zmq::context_t& ctx, ClientOptions options);
  ~Client();
  Client(Client&&) = delete;

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
  // return `cancelled` at once; so does the cancel check (set_cancel_check) returning true.
  using PartialFn = std::function<void(Incoming&)>;
  Result<Incoming> call(const std::string& service, capnp::MessageBuilder* body,
                        std::chrono::milliseconds deadline, const PartialFn& on_partial = {},
                        const std::string& trace_id = {});

  zmq::socket_t& socket() { return socket_; }

  // Polled (every 100 ms at most) while call() waits: when it returns true the request is
  // cancelled upstream and call() returns `cancelled` at once. For callers that end a wait for
  // reasons of their own (the agent: its task was cancelled). Empty = never.
  void set_cancel_check(std::function<bool()> check) { cancel_check_ = std::move(check); }

 private:
  using Clock = std::chrono::steady_clock;
  // Liveness (kept apart from the receive path): start tracking a request, stop on its final
  // answer, send our heartbeat when due, and the brokerLost answer once the broker is gone.
  void start_watch();
  void track(uint64_t id);
  void untrack(uint64_t id) { outstanding_.erase(id); }
  void heard_from_broker(const bus::Header& header);
  void keep_alive();
  std::optional<Incoming> broker_lost_answer();

  ClientOptions options_;
  zmq::socket_t socket_;
  uint64_t next_id_ = 1;
  std::set<uint64_t> outstanding_;  // sent, no final answer yet
  Clock::time_point last_heard_{}, next_heartbeat_{};
  std::chrono::milliseconds broker_interval_{0};  // from the broker's heartbeats
  std::shared_ptr<ConnectionWatch> watch_;        // connect/disconnect events of socket_
  std::function<bool()> cancel_check_;
};

}  // namespace nv
