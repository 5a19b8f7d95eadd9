// broker.h — the orchestrator's message broker and event hub.
//
// Sockets (all bound by the broker):
//   workers  ROUTER  workers connect with DEALERs (worker.h has the protocol)
//   clients  ROUTER  clients connect with DEALERs (client.h has the protocol)
//   events-in PULL   services PUSH [topic][Event]
//   events   XPUB    subscribers SUB by topic prefix
// Each endpoint list may mix ipc://, inproc:// and tcp://; tcp:// endpoints get their own socket
// with CURVE (server key + ZAP allow-list) when keys are configured.
//
// Routing: a request for service S goes to the worker of S with the most free capacity
// (capacity - in flight); with none free it waits in S's queue until its deadline. A worker that
// misses `liveness` heartbeats is dropped: requests it had not started (no partial sent yet) are
// retried on another worker, the others fail with workerLost. Built-in services: "nv.status"
// (StatusReply) and "nv.events" (HistoryReply).
#pragma once

#include <nv/schema/events.capnp.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>
#include <zmq.hpp>

#include "common/curve.h"
#include "common/error.h"
#include "common/frames.h"

namespace nv {

struct BrokerOptions {
  std::vector<std::string> worker_endpoints;
  std::vector<std::string> client_endpoints;
  std::vector<std::string> events_in_endpoints;
  std::vector<std::string> events_out_endpoints;
  std::chrono::milliseconds heartbeat{1000};
  int liveness = 3;                                   // missed heartbeats before expiry
  std::chrono::milliseconds default_deadline{60000};  // for requests that set none
  size_t max_queue = 100000;                          // queued requests, all services
  int max_attempts = 2;                               // dispatches per request
  size_t history = 20000;                             // events kept for nv.events
  std::optional<curve::KeyPair> curve_keys;           // CURVE server keys for tcp://
  std::set<std::string> curve_allow;                  // client public keys allowed over tcp://
  bus::Limits limits;
  std::string instance = "orchestrator";
  std::chrono::milliseconds status_interval{5000};    // broker.status events
};

class Broker {
 public:
  Broker(zmq::context_t& ctx, BrokerOptions options);
  ~Broker();
  // Binds every endpoint; fails with a message naming the endpoint.
  Status bind();
  // Serves until `stop`; then fails what is pending with shuttingDown and returns.
  void run(const std::atomic<bool>& stop);
  // Publishes an event from inside the broker (its own service.started etc.). Loop thread only.
  void publish(const std::string& topic, const std::function<void(schema::Event::Builder)>& fill,
               schema::Severity severity = schema::Severity::INFO);
  // All endpoints bound, for service.started and nv status.
  std::vector<std::string> endpoints() const;

  struct Stats {
    uint64_t requests = 0, replies = 0, errors = 0, malformed = 0, retries = 0, expired = 0;
    uint64_t events_in = 0, events_bad = 0;
  };
  const Stats& stats() const { return stats_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct SocketSet {
    std::vector<std::unique_ptr<zmq::socket_t>> sockets;  // [0] plain, [1] CURVE (if any)
  };
  struct WorkerRec {
    size_t sock = 0;
    std::string identity;
    std::string service, instance;
    uint32_t pid = 0, capacity = 0;
    std::set<uint64_t> in_flight;
    Clock::time_point registered, last_seen, expiry;
    bool draining = false;
    int64_t free() const { return static_cast<int64_t>(capacity) - in_flight.size(); }
  };
  struct Pending {
    uint64_t id = 0;
    size_t client_sock = 0;
    std::vector<std::string> client_routing;
    uint64_t client_request_id = 0;
    std::string service, trace_id;
    zmq::message_t body;
    Clock::time_point deadline;
    std::string worker;       // key into workers_, "" while queued
    bool started = false;     // a partial was seen: never retried
    bool abandoned = false;   // the client got its answer (deadline); wait for the worker
    int attempts = 0;
  };
  struct ServiceRec {
    std::deque<uint64_t> queue;
    std::vector<std::string> workers;  // keys into workers_
    bool ever_registered = false;
  };
  struct StoredEvent {
    std::string topic;
    std::string bytes;
  };

  Status bind_set(SocketSet& set, zmq::socket_type type, const std::vector<std::string>& eps);
  void on_client(size_t sock, std::vector<zmq::message_t>& frames);
  void on_worker(size_t sock, std::vector<zmq::message_t>& frames);
  void on_event(std::vector<zmq::message_t>& frames);
  void builtin(size_t sock, const bus::Message& msg);
  void dispatch(const std::string& service);
  void send_to_worker(WorkerRec& w, Pending& p);
  void answer_client(Pending& p, bus::Kind kind, zmq::message_t body);
  void fail(uint64_t id, const Error& error);
  void remove_worker(const std::string& key, const std::string& why);
  void heartbeat_and_expire();
  void expire_deadlines();
  void publish_status();
  void store_and_forward(const std::string& topic, const void* data, size_t size);
  static std::string worker_key(size_t sock, const std::string& identity);

  zmq::context_t& ctx_;
  BrokerOptions opt_;
  std::unique_ptr<curve::ZapHandler> zap_;
  SocketSet workers_sock_, clients_sock_, events_in_, events_out_;
  std::vector<std::string> bound_;
  std::unordered_map<std::string, WorkerRec> workers_;
  std::unordered_map<std::string, ServiceRec> services_;
  std::unordered_map<uint64_t, Pending> pending_;
  std::priority_queue<std::pair<Clock::time_point, uint64_t>,
                      std::vector<std::pair<Clock::time_point, uint64_t>>, std::greater<>>
      deadlines_;
  std::deque<StoredEvent> history_;
  uint64_t history_dropped_ = 0;
  uint64_t next_id_ = 1;
  size_t queued_ = 0;
  Clock::time_point started_ = Clock::now();
  Clock::time_point next_heartbeat_, next_status_;
  Stats stats_;
};

}  // namespace nv
