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
// (capacity - in flight); with none free it waits in S's queue (admission control below).
// Built-in services: "nv.status" (StatusReply) and "nv.events" (HistoryReply).
//
// Names: a request for a name no worker has registered gets unknownService at once (during the
// first `startup_grace` after start, while workers re-register, it waits instead). A service
// whose workers are all gone answers noWorker at once. Nothing a client sends creates lasting
// per-name state.
//
// Admission control: when no worker of S has a free slot, the broker estimates the wait as
// (queued ahead + 1) x T / C — T the observed mean service time of S (EWMA of dispatch to final
// answer), C the summed capacity of its workers — and answers `overloaded` (queueLength,
// estimatedWaitMs) at once when wait + T exceeds the request's deadline. Before S has finished
// any request T is unknown, and at most `cold_rounds` x C requests wait.
//
// Liveness (broker_liveness.cc): a worker silent for `liveness` heartbeats is dropped; requests
// it had not started are retried if another worker of S is there, the others fail with
// workerLost at once. A worker that reconnects (READY with the same instance and pid) keeps the
// requests it lists as running. Clients that speak heartbeats (nv::Client does) get the
// broker's heartbeats while they have requests pending; a client whose connection closed, or
// that stayed silent for `client_silence`, has its requests cancelled (queued ones dropped,
// running ones sent `cancel`). A stall of the broker itself (its loop did not run) is not
// counted as the peers' silence: after one, every peer gets a fresh liveness window.
//
// Identity (roles.h): a ZAP handler runs for every endpoint, so each connection carries its
// verified identity ("uid:<n>" on ipc:// from the peer's credentials, "key:<z85>" on tcp:// with
// CURVE). A READY for a service the identity may not serve is refused with `unauthorized`; an
// event whose topic it may not publish is dropped; both are logged and reported as the hub's own
// security.alert (kind bus_unauthorized / bus_forged_event; the first ten, then every
// thousandth, so a retrying peer cannot flood the stream); every event
// kept or forwarded carries its sender's identity in Event.sender, whatever it claims. A
// registered worker's messages must keep coming from the identity that registered it.
//
// Answers are never dropped silently: when a client's pipe is full (it pipelines faster than it
// reads) answers wait in a per-client backlog (bounded by bytes; past the bound they shrink to
// an `overloaded` error) and leave in order as the client reads.
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
#include "common/roles.h"

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
  size_t history_bytes = 64u << 20;                   // ... and at most this many bytes
  size_t max_event_bytes = 1u << 20;                  // larger events are dropped (counted)
  std::chrono::milliseconds startup_grace{0};         // 0 = 2 x heartbeat x liveness
  std::chrono::milliseconds client_silence{30000};    // a client silent this long is gone
  int cold_rounds = 16;  // queue bound in rounds of capacity before a service time is known
  size_t client_backlog_bytes = 64u << 20;   // answers waiting for slow readers
  std::optional<curve::KeyPair> curve_keys;  // CURVE server keys for tcp://
  std::set<std::string> curve_allow;         // client public keys allowed over tcp://
  Roles roles = Roles::defaults();           // who may serve which service, publish which topic
  bus::Limits limits;
  std::string instance = "orchestrator";
  std::chrono::milliseconds status_interval{5000};  // broker.status events
  // The longest adaptive busy-poll window (Broker::adapt_poll_window): after a loop that moved
  // messages the broker polls without sleeping for a window that grows while messages keep
  // arriving within this bound and shrinks when traffic is sparse, so the next message of a
  // conversation finds the loop awake instead of waking a sleeping thread (nv-bench bus).
  // 200 us is KVM's default halt_poll_ns. 0: always block at once.
  std::chrono::microseconds busy_poll{200};
};

// The adaptive busy-poll rule, the grow/shrink rule of KVM's halt polling
// (Documentation/virt/kvm/halt-polling.rst). Called when a busy round's poll `window` passed
// without a message and the loop then slept `slept` (window included) until one came or a timer
// fired. A message within `longest` would have been caught by a longer window: grow (10 us, then
// double, at most `longest`). A longer sleep means sparse traffic, where polling only burns CPU:
// shrink (halve; below 10 us, 0). `longest` <= 0 disables polling (returns 0).
std::chrono::microseconds next_busy_poll_window(std::chrono::microseconds window,
                                                std::chrono::nanoseconds slept,
                                                std::chrono::microseconds longest);

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
  // Publishes the hub's own security.alert (kind, detail, action as in SecurityAlert).
  void alert(const std::string& kind, const std::string& detail, const std::string& action);
  // All endpoints bound, for service.started and nv status.
  std::vector<std::string> endpoints() const;

  struct Stats {
    uint64_t requests = 0, replies = 0, errors = 0, malformed = 0, retries = 0, expired = 0;
    uint64_t events_in = 0, events_bad = 0, events_oversized = 0;
    uint64_t unknown_service = 0, overloaded = 0, clients_lost = 0, stalls = 0;
    uint64_t backlogged = 0, backlog_shrunk = 0, answers_dropped = 0;
    uint64_t ready_refused = 0, events_refused = 0, impostors = 0;
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
    std::string peer;  // verified identity (roles.h) of the connection that registered
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
    Clock::time_point deadline, dispatched;
    std::string client;      // key into clients_
    std::string worker;      // key into workers_, "" while queued
    bool started = false;    // a partial was seen: never retried
    bool abandoned = false;  // the client got its answer (deadline); wait for the worker
    int attempts = 0;
  };
  struct ServiceRec {
    std::deque<uint64_t> queue;
    std::vector<std::string> workers;  // keys into workers_
    bool ever_registered = false;      // false: a name held only during the startup grace
    double service_ms = 0;             // EWMA of dispatch -> final answer
    uint64_t samples = 0;
  };
  struct StoredEvent {
    std::string topic;
    std::string bytes;
  };
  // A client with requests pending (only then: no state outlives its requests).
  struct ClientRec {
    size_t sock = 0;
    std::vector<std::string> routing;
    size_t pending = 0;
    bool speaks_heartbeat = false, lost = false;
    Clock::time_point expiry;
  };
  // Answers that found the client's pipe full, in order.
  struct Backlog {
    size_t sock = 0;
    std::vector<std::string> routing;
    std::deque<std::pair<zmq::message_t, zmq::message_t>> answers;  // [header][body]
  };
  enum class SendResult { ok, full, gone };

  Status bind_set(SocketSet& set, zmq::socket_type type, const std::vector<std::string>& eps);
  void on_client(size_t sock, std::vector<zmq::message_t>& frames);
  void on_worker(size_t sock, std::vector<zmq::message_t>& frames);
  void on_event(std::vector<zmq::message_t>& frames);
  void builtin(size_t sock, const bus::Message& msg);
  void on_client_request(size_t sock, std::string key, bus::Message& msg);
  void on_ready(size_t sock, bus::Message& msg, const std::string& peer);
  std::optional<Error> admit(const std::string& service, const ServiceRec& svc,
                             std::chrono::milliseconds deadline) const;
  void send_client(size_t sock, const std::vector<std::string>& routing, const bus::Header& h,
                   zmq::message_t body);
  SendResult send_routed(zmq::socket_t& s, const std::vector<std::string>& routing,
                         zmq::message_t& header, zmq::message_t& body);
  void flush_backlogs();
  void erase_pending(std::unordered_map<uint64_t, Pending>::iterator it);
  void client_heard(const std::string& key, bus::Kind kind);
  void client_lost(const std::string& key, const std::string& why);
  void cancel_on_worker(uint64_t id, const std::string& worker);
  void after_stall(Clock::duration stalled);
  void adapt_poll_window(Clock::duration slept);
  void end_startup_grace();
  void heartbeat_clients();
  static std::string client_key(size_t sock, const std::vector<std::string>& routing);
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
  size_t history_bytes_ = 0;
  uint64_t history_dropped_ = 0;
  std::unordered_map<std::string, ClientRec> clients_;
  std::unordered_map<std::string, Backlog> backlogs_;
  size_t backlog_bytes_ = 0;
  bool in_grace_ = true;
  uint64_t next_id_ = 1;
  size_t queued_ = 0;
  Clock::time_point started_ = Clock::now();
  Clock::time_point next_heartbeat_, next_status_;
  std::chrono::microseconds poll_window_{0};  // the adaptive busy-poll window, <= busy_poll
  Stats stats_;
};

}  // namespace nv
