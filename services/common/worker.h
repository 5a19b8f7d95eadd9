// worker.h — the worker side of the broker protocol (Majordomo, ZeroMQ RFC 7, adapted).
//
// A Worker owns one DEALER connected to the orchestrator's worker endpoint:
//   -> [empty][Header{ready, service, capacity, pid, instance}]          on (re)connect
//   <- [empty][Header{request, requestId, traceId, deadlineMs}][body]    work
//   -> [empty][Header{partial|reply|error, requestId}][body]             answers
//   <-> [empty][Header{heartbeat, capacity}]                             every heartbeat
//   -> [empty][Header{disconnect}]                                       draining on SIGTERM
//   <- [empty][Header{cancel, requestId}]                                caller gave up
// Request::cancelled() turns true on that cancel. A reconnect (the broker sent DISCONNECT, or
// fell silent for `liveness` heartbeats) keeps the running requests: READY lists them
// (Header.running) and the broker adopts those it still holds and cancels the others. Only when
// the broker stays silent through a whole second liveness window after the reconnect, and its
// connection closed (it died or restarted; a stalled broker keeps its connection) or the
// silence outlasted 30 s, are they presumed orphaned and cancelled here. A stall of this process (the poll came back much later
// than asked) restarts the liveness window instead of counting as the broker's silence.
// Capacity is how many requests the worker handles at once; the broker subtracts its in-flight
// count. A worker with capacity 0 only registers its presence (shown by `nv status`).
// The broker is presumed dead after `liveness` silent heartbeats; the worker then reconnects.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "curve.h"
#include "error.h"
#include "frames.h"

namespace nv {

class ConnectionWatch;

struct WorkerOptions {
  std::string service;          // e.g. "exec", "llm", "metrics-exporter"
  std::string broker_endpoint;  // ipc://.../workers.sock or tcp://host:port
  uint32_t capacity = 1;        // concurrent requests (0 = presence only)
  std::chrono::milliseconds heartbeat{1000};
  int liveness = 3;              // missed heartbeats before reconnecting
  bool inline_handlers = false;  // run handlers on the loop thread (must not block)
  std::chrono::milliseconds drain_timeout{10000};
  std::optional<curve::KeyPair> curve_keys;  // with curve_server_key: CURVE over tcp://
  std::string curve_server_key;
  bus::Limits limits;
  std::string instance;  // "" = host/service/pid
};

class Worker;

// One request handed to a handler. Thread-safe: answer from any thread, exactly once
// (reply or fail); partials before that. Answers after the first final one are dropped.
class Request {
 public:
  const bus::Header& header() const { return header_; }
  bus::BodyReader& body() { return body_; }
  template <class T>
  Result<typename T::Reader> read() {
    return body_.root<T>();
  }

  void partial(capnp::MessageBuilder& body);
  void reply(capnp::MessageBuilder& body);
  void fail(const Error& error);
  bool cancelled() const { return cancelled_.load(); }
  bool answered() const { return answered_.load(); }
  // Time left before the caller's deadline (max() when it set none).
  std::chrono::milliseconds remaining() const;

 private:
  friend class Worker;
  Request(Worker* worker, bus::Header header, bus::BodyReader body);
  void send(bus::Kind kind, zmq::message_t body);
  Worker* worker_;
  bus::Header header_;
  bus::BodyReader body_;
  std::chrono::steady_clock::time_point received_;
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> answered_{false};
};

using RequestHandler = std::function<void(std::shared_ptr<Request>)>;

class Worker {
 public:
  Worker(zmq::context_t& ctx, WorkerOptions options, RequestHandler handler);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Serves until `stop` becomes true, then drains: tells the broker, waits for running handlers
  // (at most drain_timeout), flushes their answers, and returns.
  void run(const std::atomic<bool>& stop);
  // Changes the advertised capacity; sent with the next heartbeat.
  void set_capacity(uint32_t capacity) { capacity_ = capacity; }
  uint32_t capacity() const { return capacity_.load(); }
  const std::string& instance() const { return options_.instance; }
  // Number of handlers running now.
  size_t active() const;

 private:
  friend class Request;
  struct Outgoing {
    bus::Header header;
    zmq::message_t body;
  };
  void connect();
  void cancel_orphans();
  std::vector<uint64_t> running_ids();
  void send_to_broker(bus::Kind kind, uint64_t request_id, zmq::message_t body = {});
  void enqueue(Outgoing out);
  void flush_outgoing();
  void dispatch(bus::Message&& msg);
  void reap_threads(bool all);

  zmq::context_t& ctx_;
  WorkerOptions options_;
  RequestHandler handler_;
  std::unique_ptr<zmq::socket_t> socket_;
  std::atomic<uint32_t> capacity_;
  std::chrono::steady_clock::time_point broker_expiry_;
  std::chrono::steady_clock::time_point next_heartbeat_;
  std::chrono::steady_clock::time_point last_heard_;

  mutable std::mutex mu_;
  std::deque<Outgoing> outgoing_;
  int wake_fd_ = -1;  // eventfd: handler threads wake the loop
  std::vector<std::pair<std::thread, std::shared_ptr<std::atomic<bool>>>> threads_;
  std::vector<std::weak_ptr<Request>> live_;
  std::thread::id loop_thread_;
  bool draining_ = false;                   // loop thread only
  bool heard_since_connect_ = false;        // loop thread only
  bool broker_dropped_ = false;             // the last connection closed (not a stall)
  std::shared_ptr<ConnectionWatch> watch_;  // events of socket_
};

// The name this process uses on the bus: "<hostname>/<service>/<pid>".
std::string default_instance(const std::string& service);

}  // namespace nv
