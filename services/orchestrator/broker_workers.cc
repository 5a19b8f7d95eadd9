// broker_workers.cc — the broker's routing: dispatch to workers, their answers, registration
// (and re-registration that keeps running requests), removal, deadlines and status events.
#include <algorithm>
#include <optional>

#include "broker.h"
#include "common/log.h"

namespace nv {

namespace {
constexpr double kServiceTimeWeight = 0.2;  // EWMA weight of the newest service time
}  // namespace

void Broker::dispatch(const std::string& service) {
  auto sit = services_.find(service);
  if (sit == services_.end()) return;
  auto& svc = sit->second;
  while (!svc.queue.empty()) {
    WorkerRec* best = nullptr;
    for (auto& key : svc.workers) {
      auto& w = workers_.at(key);
      if (w.draining || w.free() <= 0) continue;
      if (!best || w.free() > best->free()) best = &w;
    }
    if (!best) return;
    uint64_t id = svc.queue.front();
    svc.queue.pop_front();
    --queued_;
    auto pit = pending_.find(id);
    if (pit == pending_.end()) continue;  // failed while queued
    send_to_worker(*best, pit->second);
  }
}

void Broker::send_to_worker(WorkerRec& w, Pending& p) {
  p.worker = worker_key(w.sock, w.identity);
  p.dispatched = Clock::now();
  ++p.attempts;
  w.in_flight.insert(p.id);
  bus::Header h;
  h.kind = bus::Kind::REQUEST;
  h.service = p.service;
  h.request_id = p.id;
  h.trace_id = p.trace_id;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(p.deadline - p.dispatched);
  h.deadline_ms = static_cast<uint32_t>(std::max<int64_t>(1, left.count()));
  zmq::message_t body;
  body.copy(p.body);  // kept for a retry on another worker
  if (!bus::send(*workers_sock_.sockets[w.sock], {w.identity}, h, std::move(body),
                 static_cast<int>(zmq::send_flags::dontwait))) {
    // The worker's pipe is gone or full: it will expire; the request is retried then.
    log::warn("send to worker failed", {{"instance", w.instance}});
  }
}

void Broker::answer_client(Pending& p, bus::Kind kind, zmq::message_t body) {
  if (p.abandoned) return;
  bus::Header h;
  h.kind = kind;
  h.request_id = p.client_request_id;
  h.service = p.service;
  h.trace_id = p.trace_id;
  send_client(p.client_sock, p.client_routing, h, std::move(body));
}

void Broker::erase_pending(std::unordered_map<uint64_t, Pending>::iterator it) {
  auto c = clients_.find(it->second.client);
  if (c != clients_.end() && --c->second.pending == 0) clients_.erase(c);
  pending_.erase(it);
}

void Broker::fail(uint64_t id, const Error& error) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  auto& p = it->second;
  Error e = error;
  if (e.service.empty()) e.service = "orchestrator";
  answer_client(p, bus::Kind::ERROR, bus::encode_error(e));
  ++stats_.errors;
  if (!p.worker.empty()) {
    auto w = workers_.find(p.worker);
    if (w != workers_.end()) w->second.in_flight.erase(id);
  } else {
    auto s = services_.find(p.service);
    if (s != services_.end()) {
      auto& q = s->second.queue;
      auto qi = std::find(q.begin(), q.end(), id);
      if (qi != q.end()) {
        q.erase(qi);
        --queued_;
      }
    }
  }
  erase_pending(it);
}

void Broker::cancel_on_worker(uint64_t id, const std::string& worker) {
  auto it = workers_.find(worker);
  if (it == workers_.end()) return;
  bus::Header h;
  h.kind = bus::Kind::CANCEL;
  h.request_id = id;
  bus::send(*workers_sock_.sockets[it->second.sock], {it->second.identity}, h, zmq::message_t(),
            static_cast<int>(zmq::send_flags::dontwait));
}

// ----------------------------------------------------------------------------------- workers

void Broker::on_ready(size_t sock, bus::Message& msg, const std::string& peer) {
  auto& s = *workers_sock_.sockets[sock];
  if (msg.header.service.empty() || msg.header.service.size() > 64 ||
      msg.header.service.rfind("nv.", 0) == 0) {
    bus::send_error(s, msg.routing, 0, "orchestrator",
                    make_error(ErrorCode::BAD_REQUEST, "invalid service name in READY"));
    return;
  }
  if (!opt_.roles.may_serve(peer, msg.header.service)) {
    // Logged (the first ten, then every thousandth: a refused peer retries every heartbeat).
    if (++stats_.ready_refused < 10 || stats_.ready_refused % 1000 == 0) {
      log::warn("refused a worker: its identity may not serve this service",
                {{"service", msg.header.service},
                 {"identity", peer},
                 {"instance", msg.header.instance},
                 {"pid", msg.header.pid},
                 {"total", stats_.ready_refused}});
      alert("bus_unauthorized",
            peer + " asked to serve '" + msg.header.service + "' (instance '" +
                msg.header.instance.substr(0, 64) + "')",
            "denied");
    }
    bus::send_error(s, msg.routing, 0, "orchestrator",
                    make_error(ErrorCode::UNAUTHORIZED,
                               "identity " + peer + " may not serve '" + msg.header.service +
                                   "' (the orchestrator's roles bind services to uids and keys)"));
    return;
  }
  auto key = worker_key(sock, msg.routing[0]);
  auto now = Clock::now();
  WorkerRec w;
  w.sock = sock;
  w.identity = msg.routing[0];
  w.peer = peer;
  w.service = msg.header.service;
  w.instance = msg.header.instance;
  w.pid = msg.header.pid;
  w.capacity = msg.header.capacity;
  w.registered = w.last_seen = now;
  w.expiry = now + opt_.heartbeat * opt_.liveness;
  // A reconnect of a worker we still hold (same socket set, service, instance and pid; or the
  // same identity): adopt the requests it says it still runs, cancel those we do not know.
  std::string predecessor;
  for (auto& [k, old] : workers_) {
    if (k == key || (old.sock == sock && old.service == w.service && !w.instance.empty() &&
                     old.instance == w.instance && old.pid == w.pid)) {
      predecessor = k;
      break;
    }
  }
  std::vector<uint64_t> unknown;
  for (uint64_t id : msg.header.running) {
    auto pit = pending_.find(id);
    if (pit != pending_.end() && !predecessor.empty() && pit->second.worker == predecessor) {
      workers_.at(predecessor).in_flight.erase(id);
      pit->second.worker = key;
      w.in_flight.insert(id);
    } else {
      unknown.push_back(id);
    }
  }
  // The predecessor leaves after its successor is in place, so its requests that never
  // started can be retried (on the successor, too) and the queue is not failed for want of one.
  std::optional<WorkerRec> old;
  if (!predecessor.empty()) {
    old = std::move(workers_.at(predecessor));
    workers_.erase(predecessor);
    w.registered = old->registered;
  }
  auto& svc = services_[w.service];
  if (!predecessor.empty()) std::erase(svc.workers, predecessor);
  svc.workers.push_back(key);
  svc.ever_registered = true;
  log::info(predecessor.empty() ? "worker registered" : "worker reconnected",
            {{"service", w.service},
             {"instance", w.instance},
             {"capacity", w.capacity},
             {"adopted", w.in_flight.size()},
             {"cancelled", unknown.size()}});
  std::string service = w.service;
  workers_.emplace(key, std::move(w));
  if (old) {
    std::string gone = predecessor + "/previous";
    workers_.emplace(gone, std::move(*old));
    remove_worker(gone, "reconnected");
  }
  for (uint64_t id : unknown) {
    bus::Header h;
    h.kind = bus::Kind::CANCEL;
    h.request_id = id;
    bus::send(s, msg.routing, h, zmq::message_t(), static_cast<int>(zmq::send_flags::dontwait));
  }
  dispatch(service);
}

void Broker::on_worker(size_t sock, std::vector<zmq::message_t>& frames) {
  auto& s = *workers_sock_.sockets[sock];
  bus::Message msg;
  bus::ParseError failure;
  if (!bus::parse(frames, true, opt_.limits, &msg, &failure, false)) {
    ++stats_.malformed;
    log::warn("malformed message from a worker", {{"error", failure.error.to_string()}});
    // A worker's broken answer still ends the request it names.
    if (failure.header_read && failure.request_id && !failure.routing.empty()) {
      auto key = worker_key(sock, failure.routing[0]);
      auto it = pending_.find(failure.request_id);
      if (it != pending_.end() && it->second.worker == key) {
        Error e = failure.error;
        e.message = "worker sent an invalid answer: " + e.message;
        fail(failure.request_id, e);
      }
    }
    return;
  }
  if (msg.routing.size() != 1) return;
  auto peer = peer_identity(frames);
  if (msg.header.kind == bus::Kind::READY) return on_ready(sock, msg, peer);
  auto key = worker_key(sock, msg.routing[0]);
  auto now = Clock::now();
  auto wit = workers_.find(key);
  if (wit != workers_.end() && wit->second.peer != peer) {
    // Another connection took over the registered worker's routing id: not its answers.
    ++stats_.impostors;
    log::warn("ignored a message from another identity under a worker's routing id",
              {{"service", wit->second.service}, {"identity", peer}});
    return;
  }
  if (wit == workers_.end()) {
    // Unknown worker (we restarted or expired it): ask it to register again.
    bus::Header h;
    h.kind = bus::Kind::DISCONNECT;
    bus::send(s, msg.routing, h, zmq::message_t(), static_cast<int>(zmq::send_flags::dontwait));
    return;
  }
  auto& w = wit->second;
  w.last_seen = now;
  w.expiry = now + opt_.heartbeat * opt_.liveness;
  switch (msg.header.kind) {
    case bus::Kind::HEARTBEAT:
      w.capacity = msg.header.capacity;
      dispatch(w.service);
      return;
    case bus::Kind::DISCONNECT:
      w.draining = true;
      log::info("worker draining", {{"instance", w.instance}});
      if (w.in_flight.empty()) remove_worker(key, "disconnected");
      return;
    case bus::Kind::PARTIAL:
    case bus::Kind::REPLY:
    case bus::Kind::ERROR: {
      w.capacity = msg.header.capacity ? msg.header.capacity : w.capacity;
      auto pit = pending_.find(msg.header.request_id);
      if (pit == pending_.end() || pit->second.worker != key) return;  // late or foreign
      auto& p = pit->second;
      if (msg.header.kind == bus::Kind::PARTIAL) {
        p.started = true;
        answer_client(p, bus::Kind::PARTIAL, std::move(msg.raw_body));
        return;
      }
      if (msg.header.kind == bus::Kind::ERROR)
        ++stats_.errors;
      else
        ++stats_.replies;
      // The service time feeds admission control (abandoned requests too: the slot was busy).
      auto& svc = services_[p.service];
      double took = std::chrono::duration<double, std::milli>(now - p.dispatched).count();
      svc.service_ms =
          svc.samples++ ? svc.service_ms + kServiceTimeWeight * (took - svc.service_ms) : took;
      answer_client(p, msg.header.kind, std::move(msg.raw_body));
      w.in_flight.erase(p.id);
      std::string service = p.service;
      erase_pending(pit);
      if (w.draining && w.in_flight.empty()) {
        remove_worker(key, "drained");
        return;
      }
      dispatch(service);
      return;
    }
    default:
      bus::send_error(s, msg.routing, msg.header.request_id, "orchestrator",
                      make_error(ErrorCode::BAD_REQUEST, "unexpected message kind from worker"));
  }
}

void Broker::remove_worker(const std::string& key, const std::string& why) {
  auto it = workers_.find(key);
  if (it == workers_.end()) return;
  WorkerRec w = std::move(it->second);
  workers_.erase(it);
  auto& svc = services_[w.service];
  std::erase(svc.workers, key);
  log::info("worker removed", {{"service", w.service},
                               {"instance", w.instance},
                               {"why", why},
                               {"in_flight", w.in_flight.size()}});
  // Another worker that can take a retry: only then is a request that never started re-queued.
  bool other = std::any_of(svc.workers.begin(), svc.workers.end(), [&](const std::string& k) {
    auto& o = workers_.at(k);
    return !o.draining && o.capacity > 0;
  });
  for (uint64_t id : w.in_flight) {
    auto pit = pending_.find(id);
    if (pit == pending_.end()) continue;
    auto& p = pit->second;
    p.worker.clear();
    if (other && !p.started && !p.abandoned && p.attempts < opt_.max_attempts) {
      svc.queue.push_front(id);
      ++queued_;
      ++stats_.retries;
      log::info("retrying request on another worker", {{"service", p.service}});
      continue;
    }
    fail(id, make_error(ErrorCode::WORKER_LOST,
                        "worker " + w.instance + " of service '" + w.service + "' " + why +
                            " while handling the request" +
                            (p.started ? " (it had started, so it is not retried)"
                             : other   ? ""
                                       : " and no other worker of the service is registered"),
                        !p.started));
  }
  // With no worker left, what waits in the queue would only wait for its deadline.
  if (svc.workers.empty() && !in_grace_) {
    std::vector<uint64_t> queued(svc.queue.begin(), svc.queue.end());
    for (uint64_t id : queued) {
      fail(id, make_error(ErrorCode::NO_WORKER,
                          "the last worker of service '" + w.service + "' " + why +
                              "; start it and check `nv status`",
                          true));
    }
  }
  dispatch(w.service);
}

void Broker::expire_deadlines() {
  auto now = Clock::now();
  while (!deadlines_.empty() && deadlines_.top().first <= now) {
    uint64_t id = deadlines_.top().second;
    deadlines_.pop();
    auto it = pending_.find(id);
    if (it == pending_.end()) continue;
    auto& p = it->second;
    if (p.worker.empty()) {
      auto& svc = services_[p.service];
      if (svc.workers.empty()) {
        fail(id, make_error(ErrorCode::NO_WORKER,
                            "no worker for service '" + p.service + "' is registered" +
                                (svc.ever_registered ? " any more" : "") +
                                "; start it and check `nv status`",
                            true));
      } else {
        fail(id, make_error(ErrorCode::TIMED_OUT,
                            "all " + std::to_string(svc.workers.size()) + " workers of '" +
                                p.service + "' stayed busy until the deadline",
                            true));
      }
    } else if (!p.abandoned) {
      // Answer the client now; the slot stays taken until the worker answers or expires.
      answer_client(p, bus::Kind::ERROR,
                    bus::encode_error(make_error(
                        ErrorCode::TIMED_OUT,
                        "service '" + p.service + "' did not answer before the deadline", true)));
      p.abandoned = true;
      ++stats_.errors;
      cancel_on_worker(id, p.worker);
    }
  }
}

void Broker::publish_status() {
  // Only services some worker registered: a client's request creates no status stream.
  for (auto& [name, svc] : services_) {
    if (!svc.ever_registered) continue;
    uint32_t in_flight = 0;
    for (auto& key : svc.workers) in_flight += workers_.at(key).in_flight.size();
    auto workers = static_cast<uint32_t>(svc.workers.size());
    auto queued = static_cast<uint32_t>(svc.queue.size());
    publish("broker.status", [&](schema::Event::Builder e) {
      auto b = e.initBrokerStatus();
      b.setService(name);
      b.setWorkers(workers);
      b.setInFlight(in_flight);
      b.setQueued(queued);
    });
  }
}

}  // namespace nv
