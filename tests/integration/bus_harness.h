// bus_harness.h — an in-process broker, workers and helpers for the bus integration tests.
//
// BrokerHarness runs nv::Broker on its own thread with ipc:// endpoints in a fresh temp dir and a
// 100 ms heartbeat, so expiry happens within a second. Tests wait with wait_for(condition) (a
// bounded poll), never with a fixed sleep.
#pragma once

#include <gtest/gtest.h>
#include <nv/schema/bus.capnp.h>
#include <nv/schema/events.capnp.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/client.h"
#include "common/log.h"
#include "common/worker.h"
#include "orchestrator/broker.h"

namespace nv::test {

using namespace std::chrono_literals;

// Polls `cond` every 2 ms until it holds or `timeout` passes; returns its last value.
template <class F>
bool wait_for(F&& cond, std::chrono::milliseconds timeout = 5s) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > end) return cond();
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/nv-bus-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A broker on a thread. Adjust `options` before start().
class BrokerHarness {
 public:
  BrokerHarness() {
    log::init("bus-test", log::Level::warn);
    options.worker_endpoints = {bus::ipc_endpoint(dir.path() + "/workers.sock")};
    options.client_endpoints = {bus::ipc_endpoint(dir.path() + "/clients.sock")};
    options.events_in_endpoints = {bus::ipc_endpoint(dir.path() + "/events-in.sock")};
    options.events_out_endpoints = {bus::ipc_endpoint(dir.path() + "/events.sock")};
    options.heartbeat = 100ms;
    options.liveness = 5;
    options.default_deadline = 10s;
  }
  ~BrokerHarness() { stop(); }

  void start() {
    broker_ = std::make_unique<Broker>(ctx, options);
    auto st = broker_->bind();
    ASSERT_TRUE(st) << st.error().to_string();
    thread_ = std::thread([this] { broker_->run(stop_); });
  }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  // CPU time the broker's loop thread has used so far.
  std::chrono::nanoseconds loop_cpu() {
    clockid_t clock;
    timespec ts{};
    if (pthread_getcpuclockid(thread_.native_handle(), &clock) != 0 ||
        clock_gettime(clock, &ts) != 0) {
      return std::chrono::nanoseconds(-1);
    }
    return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
  }

  const std::string& workers() const { return options.worker_endpoints[0]; }
  const std::string& clients() const { return options.client_endpoints[0]; }
  const std::string& events_in() const { return options.events_in_endpoints[0]; }
  const std::string& events_out() const { return options.events_out_endpoints[0]; }

  WorkerOptions worker_options(const std::string& service, uint32_t capacity,
                               const std::string& instance) const {
    WorkerOptions o;
    o.service = service;
    o.broker_endpoint = workers();
    o.capacity = capacity;
    o.heartbeat = options.heartbeat;
    o.liveness = options.liveness;
    o.instance = instance;
    o.drain_timeout = 5s;
    return o;
  }
  ClientOptions client_options() const {
    ClientOptions o;
    o.endpoint = clients();
    return o;
  }

  zmq::context_t ctx;  // destroyed last: every socket of a test closes before it
  TempDir dir;
  BrokerOptions options;

 private:
  std::unique_ptr<Broker> broker_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

// nv::Worker on its own thread.
class WorkerThread {
 public:
  WorkerThread(zmq::context_t& ctx, WorkerOptions options, RequestHandler handler)
      : worker_(ctx, std::move(options), std::move(handler)) {
    thread_ = std::thread([this] { worker_.run(stop_); });
  }
  ~WorkerThread() { join(); }
  void request_stop() { stop_ = true; }
  void join() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  Worker& worker() { return worker_; }

 private:
  Worker worker_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Holds handlers until opened (bounded, so a failing test cannot hang a worker forever).
class Gate {
 public:
  void open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  bool wait(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [this] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// A small request/reply body: an Event whose topic names the request and whose instance names
// the worker that answered.
inline void fill_event(capnp::MallocMessageBuilder& mb, const std::string& topic,
                       const std::string& instance = {}) {
  auto e = bus::init_body<schema::Event>(mb);
  e.setTopic(topic);
  if (!instance.empty()) e.setInstance(instance);
}

inline std::string topic_of(bus::BodyReader& body) {
  auto e = body.root<schema::Event>();
  return e ? std::string(e->getTopic()) : "<" + e.error().to_string() + ">";
}
inline std::string instance_of(bus::BodyReader& body) {
  auto e = body.root<schema::Event>();
  return e ? std::string(e->getInstance()) : "<" + e.error().to_string() + ">";
}

// A handler that answers at once with the request's topic and `instance`.
inline RequestHandler echo_handler(std::string instance, std::atomic<int>* seen = nullptr) {
  return [instance, seen](std::shared_ptr<Request> r) {
    if (seen) ++*seen;
    auto in = r->read<schema::Event>();
    if (!in) return r->fail(in.error());
    capnp::MallocMessageBuilder mb;
    fill_event(mb, in->getTopic(), instance);
    r->reply(mb);
  };
}

struct WorkerInfo {
  std::string service, instance;
  uint32_t pid = 0, capacity = 0, in_flight = 0;
};
struct StatusInfo {
  uint32_t orchestrator_pid = 0, queued = 0;
  std::vector<WorkerInfo> workers;
  std::vector<std::string> endpoints;
  const WorkerInfo* find(const std::string& instance) const {
    for (auto& w : workers) {
      if (w.instance == instance) return &w;
    }
    return nullptr;
  }
};

// Asks nv.status; nullopt-like empty result with pid 0 when there was no answer.
inline StatusInfo status(Client& client) {
  StatusInfo s;
  auto r = client.call("nv.status", nullptr, 3s);
  if (!r) {
    ADD_FAILURE() << "nv.status failed: " << r.error().to_string();
    return s;
  }
  auto reply = r->body.root<schema::StatusReply>();
  if (!reply) {
    ADD_FAILURE() << "nv.status reply unreadable: " << reply.error().to_string();
    return s;
  }
  s.orchestrator_pid = reply->getOrchestratorPid();
  s.queued = reply->getQueued();
  for (auto si : reply->getServices()) {
    s.workers.push_back(
        {si.getService(), si.getInstance(), si.getPid(), si.getCapacity(), si.getInFlight()});
  }
  for (auto ep : reply->getEndpoints()) s.endpoints.emplace_back(ep);
  return s;
}

// A hand-driven worker on a raw DEALER: registers, then does only what the test tells it to
// (so it can go silent in the middle of a request).
class RawWorker {
 public:
  RawWorker(zmq::context_t& ctx, const std::string& endpoint, const std::string& service,
            const std::string& instance, uint32_t capacity = 1, std::vector<uint64_t> running = {})
      : socket_(ctx, zmq::socket_type::dealer), service_(service) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(endpoint);
    bus::Header h;
    h.kind = bus::Kind::READY;
    h.service = service;
    h.capacity = capacity;
    h.pid = static_cast<uint32_t>(::getpid());
    h.instance = instance;
    h.running = std::move(running);
    bus::send(socket_, {}, h, zmq::message_t());
  }
  // The next request (heartbeats skipped), or a header with kind UNSET after `timeout`.
  bus::Message next_request(std::chrono::milliseconds timeout = 5s) {
    return next_kind(bus::Kind::REQUEST, timeout);
  }
  // The next message of `kind`, or a header with kind UNSET after `timeout`.
  bus::Message next_kind(bus::Kind kind, std::chrono::milliseconds timeout = 5s) {
    auto end = std::chrono::steady_clock::now() + timeout;
    std::vector<zmq::message_t> frames;
    while (std::chrono::steady_clock::now() < end) {
      zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, 20ms);
      while (bus::recv_frames(socket_, frames)) {
        bus::Message msg;
        bus::ParseError failure;
        if (!bus::parse(frames, false, bus::Limits{}, &msg, &failure)) continue;
        if (msg.header.kind == kind) return msg;
      }
    }
    return bus::Message{};
  }
  void send(bus::Kind kind, uint64_t request_id, zmq::message_t body = {}) {
    bus::Header h;
    h.kind = kind;
    h.service = service_;
    h.request_id = request_id;
    bus::send(socket_, {}, h, std::move(body));
  }

 private:
  zmq::socket_t socket_;
  std::string service_;
};

}  // namespace nv::test
