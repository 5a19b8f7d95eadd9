#include "broker.h"

#include <unistd.h>

#include <algorithm>

#include "common/events.h"
#include "common/log.h"

namespace nv {

namespace {
bool is_tcp(const std::string& ep) { return ep.rfind("tcp://", 0) == 0; }
constexpr const char* kStatusService = "nv.status";
constexpr const char* kEventsService = "nv.events";
}  // namespace

Broker::Broker(zmq::context_t& ctx, BrokerOptions options) : ctx_(ctx), opt_(std::move(options)) {}

Broker::~Broker() = default;

std::string Broker::worker_key(size_t sock, const std::string& identity) {
  return std::to_string(sock) + ":" + identity;
}

Status Broker::bind_set(SocketSet& set, zmq::socket_type type,
                        const std::vector<std::string>& eps) {
  for (const auto& ep : eps) {
    bool curve = is_tcp(ep) && opt_.curve_keys.has_value();
    size_t slot = curve ? 1 : 0;
    if (set.sockets.size() <= slot) set.sockets.resize(slot + 1);
    auto& s = set.sockets[slot];
    if (!s) {
      s = std::make_unique<zmq::socket_t>(ctx_, type);
      s->set(zmq::sockopt::linger, 0);
      s->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(opt_.limits.max_frame_bytes) * 4);
      if (type == zmq::socket_type::router) s->set(zmq::sockopt::router_mandatory, 1);
      if (type == zmq::socket_type::xpub) s->set(zmq::sockopt::sndhwm, 100000);
      if (type == zmq::socket_type::pull) s->set(zmq::sockopt::rcvhwm, 100000);
      if (curve) curve::make_server(*s, *opt_.curve_keys);
    }
    if (is_tcp(ep) && !opt_.curve_keys) {
      log::warn("tcp endpoint without CURVE: traffic is unencrypted and unauthenticated",
                {{"endpoint", ep}});
    }
    if (auto path = bus::ipc_path(ep); !path.empty()) ::unlink(path.c_str());  // stale socket
    try {
      s->bind(ep);
    } catch (const zmq::error_t& e) {
      return make_error(ErrorCode::BAD_REQUEST, "cannot bind " + ep + ": " + e.what());
    }
    bound_.push_back(ep);
  }
  return {};
}

Status Broker::bind() {
  bool any_tcp = false;
  for (auto* list : {&opt_.worker_endpoints, &opt_.client_endpoints, &opt_.events_in_endpoints,
                     &opt_.events_out_endpoints}) {
    for (auto& ep : *list) any_tcp |= is_tcp(ep);
  }
  if (any_tcp && opt_.curve_keys) {
    if (opt_.curve_allow.empty()) {
      return make_error(ErrorCode::BAD_REQUEST,
                        "tcp:// endpoints with CURVE need an allow-list of client keys "
                        "(--curve-allow DIR_OR_FILE)");
    }
    zap_ = std::make_unique<curve::ZapHandler>(ctx_, opt_.curve_allow);
  }
  if (auto st = bind_set(workers_sock_, zmq::socket_type::router, opt_.worker_endpoints); !st)
    return st;
  if (auto st = bind_set(clients_sock_, zmq::socket_type::router, opt_.client_endpoints); !st)
    return st;
  if (auto st = bind_set(events_in_, zmq::socket_type::pull, opt_.events_in_endpoints); !st)
    return st;
  if (auto st = bind_set(events_out_, zmq::socket_type::xpub, opt_.events_out_endpoints); !st)
    return st;
  return {};
}

std::vector<std::string> Broker::endpoints() const { return bound_; }

// ------------------------------------------------------------------------------------ events

void Broker::store_and_forward(const std::string& topic, const void* data, size_t size) {
  history_.push_back(StoredEvent{topic, std::string(static_cast<const char*>(data), size)});
  if (history_.size() > opt_.history) {
    history_.pop_front();
    ++history_dropped_;
  }
  for (auto& s : events_out_.sockets) {
    if (!s) continue;
    // Frames: [topic][Event]. XPUB drops for slow subscribers instead of blocking us.
    s->send(zmq::buffer(topic), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    s->send(zmq::buffer(data, size), zmq::send_flags::dontwait);
  }
}

void Broker::publish(const std::string& topic,
                     const std::function<void(schema::Event::Builder)>& fill,
                     schema::Severity severity) {
  capnp::MallocMessageBuilder mb;
  auto e = mb.initRoot<schema::Event>();
  stamp_event(e, topic, "orchestrator", opt_.instance, "", severity);
  if (fill) fill(e);
  auto bytes = bus::encode_body(mb);
  store_and_forward(topic, bytes.data(), bytes.size());
}

void Broker::on_event(std::vector<zmq::message_t>& frames) {
  ++stats_.events_in;
  auto bad = [&](const std::string& why) {
    ++stats_.events_bad;
    if (stats_.events_bad < 10 || stats_.events_bad % 1000 == 0) {
      log::warn("dropped a malformed event", {{"why", why}, {"total", stats_.events_bad}});
    }
  };
  if (frames.size() != 2) return bad("expected [topic][Event], got " +
                                     std::to_string(frames.size()) + " frames");
  if (frames[0].size() == 0 || frames[0].size() > 128) return bad("topic length out of range");
  auto body = bus::BodyReader::open(frames[1], opt_.limits);
  if (!body) return bad(body.error().message);
  auto ev = body->root<schema::Event>();
  if (!ev) return bad(ev.error().message);
  std::string topic = frames[0].to_string();
  if (ev->getTopic() != topic.c_str()) return bad("topic frame differs from Event.topic");
  store_and_forward(topic, frames[1].data(), frames[1].size());
}

// ----------------------------------------------------------------------------------- clients

void Broker::on_client(size_t sock, std::vector<zmq::message_t>& frames) {
  auto& s = *clients_sock_.sockets[sock];
  bus::Message msg;
  bus::ParseError failure;
  if (!bus::parse(frames, true, opt_.limits, &msg, &failure, false)) {
    ++stats_.malformed;
    if (!failure.routing.empty()) {
      bus::send_error(s, failure.routing, failure.request_id, "orchestrator", failure.error);
    }
    return;
  }
  if (msg.header.kind == bus::Kind::CANCEL) {
    for (auto& [id, p] : pending_) {
      if (p.client_sock == sock && p.client_routing == msg.routing &&
          p.client_request_id == msg.header.request_id && !p.abandoned) {
        p.abandoned = true;
        if (!p.worker.empty()) {
          auto it = workers_.find(p.worker);
          if (it != workers_.end()) {
            bus::Header h;
            h.kind = bus::Kind::CANCEL;
            h.request_id = id;
            bus::send(*workers_sock_.sockets[it->second.sock], {it->second.identity}, h,
                      zmq::message_t(), static_cast<int>(zmq::send_flags::dontwait));
          }
        } else {
          fail(id, make_error(ErrorCode::CANCELLED, "cancelled by the client"));
        }
        break;
      }
    }
    return;
  }
  if (msg.header.kind != bus::Kind::REQUEST) {
    ++stats_.malformed;
    bus::send_error(s, msg.routing, msg.header.request_id, "orchestrator",
                    make_error(ErrorCode::BAD_REQUEST, "clients may only send requests"));
    return;
  }
  ++stats_.requests;
  if (msg.header.service.empty() || msg.header.service.size() > 64) {
    bus::send_error(s, msg.routing, msg.header.request_id, "orchestrator",
                    make_error(ErrorCode::BAD_REQUEST, "service name must be 1-64 characters"));
    return;
  }
  if (msg.header.service == kStatusService || msg.header.service == kEventsService) {
    builtin(sock, msg);
    return;
  }
  if (queued_ >= opt_.max_queue) {
    bus::send_error(s, msg.routing, msg.header.request_id, "orchestrator",
                    make_error(ErrorCode::OVERLOADED,
                               "broker queue is full (" + std::to_string(queued_) + ")", true));
    return;
  }
  Pending p;
  p.id = next_id_++;
  p.client_sock = sock;
  p.client_routing = std::move(msg.routing);
  p.client_request_id = msg.header.request_id;
  p.service = msg.header.service;
  p.trace_id = std::move(msg.header.trace_id);
  p.body = std::move(msg.raw_body);
  auto deadline = msg.header.deadline_ms ? std::chrono::milliseconds(msg.header.deadline_ms)
                                         : opt_.default_deadline;
  p.deadline = Clock::now() + deadline;
  // Answered requests leave their entry in the deadline heap until it expires; rebuild the heap
  // from the live requests before those leftovers outnumber them (bounded memory, and pushes
  // stay cheap at 100k requests/s with long deadlines).
  if (deadlines_.size() > 2 * pending_.size() + 1024) {
    std::vector<std::pair<Clock::time_point, uint64_t>> live;
    live.reserve(pending_.size() + 1);
    for (const auto& [pid, pend] : pending_) live.emplace_back(pend.deadline, pid);
    deadlines_ = decltype(deadlines_)(std::greater<>(), std::move(live));
  }
  deadlines_.emplace(p.deadline, p.id);
  auto& svc = services_[p.service];
  svc.queue.push_back(p.id);
  ++queued_;
  std::string service = p.service;
  pending_.emplace(p.id, std::move(p));
  dispatch(service);
}

void Broker::builtin(size_t sock, const bus::Message& msg) {
  auto& s = *clients_sock_.sockets[sock];
  capnp::MallocMessageBuilder mb;
  auto now = Clock::now();
  auto ms = [](auto d) {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
  };
  if (msg.header.service == kStatusService) {
    auto r = bus::init_body<schema::StatusReply>(mb);
    r.setOrchestratorPid(static_cast<uint32_t>(getpid()));
    r.setOrchestratorUptimeMs(ms(now - started_));
    r.setQueued(static_cast<uint32_t>(queued_));
    auto list = r.initServices(static_cast<unsigned>(workers_.size()));
    std::vector<const WorkerRec*> sorted;
    for (auto& [k, w] : workers_) sorted.push_back(&w);
    std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) {
      return std::tie(a->service, a->instance) < std::tie(b->service, b->instance);
    });
    for (unsigned i = 0; i < sorted.size(); ++i) {
      auto& w = *sorted[i];
      auto si = list[i];
      si.setService(w.service);
      si.setInstance(w.instance);
      si.setPid(w.pid);
      si.setUptimeMs(ms(now - w.registered));
      si.setCapacity(w.capacity);
      si.setInFlight(static_cast<uint32_t>(w.in_flight.size()));
      si.setLastSeenMsAgo(ms(now - w.last_seen));
    }
    auto eps = r.initEndpoints(static_cast<unsigned>(bound_.size()));
    for (unsigned i = 0; i < bound_.size(); ++i) eps.set(i, bound_[i]);
  } else {
    std::string prefix;
    uint32_t limit = 0;
    if (msg.raw_body.size() > 0) {
      auto body = bus::BodyReader::open(msg.raw_body, opt_.limits);
      if (!body) {
        bus::send_error(s, msg.routing, msg.header.request_id, "orchestrator", body.error());
        return;
      }
      auto req = body->root<schema::HistoryRequest>();
      if (!req) {
        bus::send_error(s, msg.routing, msg.header.request_id, "orchestrator", req.error());
        return;
      }
      prefix = req->getTopicPrefix();
      limit = req->getLimit();
    }
    std::vector<const StoredEvent*> chosen;
    for (auto it = history_.rbegin(); it != history_.rend(); ++it) {
      if (limit && chosen.size() >= limit) break;
      if (it->topic.rfind(prefix, 0) == 0) chosen.push_back(&*it);
    }
    std::reverse(chosen.begin(), chosen.end());
    auto r = bus::init_body<schema::HistoryReply>(mb);
    r.setDropped(history_dropped_);
    auto list = r.initEvents(static_cast<unsigned>(chosen.size()));
    for (unsigned i = 0; i < chosen.size(); ++i) {
      auto body = bus::BodyReader::open(chosen[i]->bytes.data(), chosen[i]->bytes.size(),
                                        opt_.limits);
      if (!body) continue;
      auto ev = body->root_unchecked<schema::Event>();
      if (ev) list.setWithCaveats(i, ev.value());
    }
  }
  bus::Header h;
  h.kind = bus::Kind::REPLY;
  h.request_id = msg.header.request_id;
  h.service = msg.header.service;
  bus::send(s, msg.routing, h, bus::encode_body(mb), static_cast<int>(zmq::send_flags::dontwait));
  ++stats_.replies;
}

// ----------------------------------------------------------------------------------- routing

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
  ++p.attempts;
  w.in_flight.insert(p.id);
  bus::Header h;
  h.kind = bus::Kind::REQUEST;
  h.service = p.service;
  h.request_id = p.id;
  h.trace_id = p.trace_id;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(p.deadline - Clock::now());
  h.deadline_ms = static_cast<uint32_t>(std::max<int64_t>(1, left.count()));
  zmq::message_t body;
  body.copy(p.body);  // kept for a retry on another worker
  if (!bus::send(*workers_sock_.sockets[w.sock], {w.identity}, h, std::move(body),
                 static_cast<int>(zmq::send_flags::dontwait))) {
    // The worker's pipe is gone: it will expire; the request is retried then.
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
  bus::send(*clients_sock_.sockets[p.client_sock], p.client_routing, h, std::move(body),
            static_cast<int>(zmq::send_flags::dontwait));
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
  pending_.erase(it);
}

// ----------------------------------------------------------------------------------- workers

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
  auto key = worker_key(sock, msg.routing[0]);
  auto now = Clock::now();
  auto wit = workers_.find(key);
  if (msg.header.kind == bus::Kind::READY) {
    if (msg.header.service.empty() || msg.header.service.size() > 64 ||
        msg.header.service.rfind("nv.", 0) == 0) {
      bus::send_error(s, msg.routing, 0, "orchestrator",
                      make_error(ErrorCode::BAD_REQUEST, "invalid service name in READY"));
      return;
    }
    if (wit != workers_.end()) remove_worker(key, "re-registered");
    WorkerRec w;
    w.sock = sock;
    w.identity = msg.routing[0];
    w.service = msg.header.service;
    w.instance = msg.header.instance;
    w.pid = msg.header.pid;
    w.capacity = msg.header.capacity;
    w.registered = w.last_seen = now;
    w.expiry = now + opt_.heartbeat * opt_.liveness;
    auto& svc = services_[w.service];
    svc.workers.push_back(key);
    svc.ever_registered = true;
    log::info("worker registered", {{"service", w.service}, {"instance", w.instance},
                                     {"capacity", w.capacity}});
    std::string service = w.service;
    workers_.emplace(key, std::move(w));
    dispatch(service);
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
      if (msg.header.kind == bus::Kind::ERROR) ++stats_.errors;
      else ++stats_.replies;
      answer_client(p, msg.header.kind, std::move(msg.raw_body));
      w.in_flight.erase(p.id);
      std::string service = p.service;
      pending_.erase(pit);
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
  log::info("worker removed", {{"service", w.service}, {"instance", w.instance}, {"why", why},
                               {"in_flight", w.in_flight.size()}});
  for (uint64_t id : w.in_flight) {
    auto pit = pending_.find(id);
    if (pit == pending_.end()) continue;
    auto& p = pit->second;
    if (!p.started && !p.abandoned && p.attempts < opt_.max_attempts) {
      // It never started: another worker may take it.
      p.worker.clear();
      svc.queue.push_front(id);
      ++queued_;
      ++stats_.retries;
      log::info("retrying request on another worker", {{"service", p.service}});
      continue;
    }
    p.worker.clear();
    fail(id, make_error(ErrorCode::WORKER_LOST,
                        "worker " + w.instance + " of service '" + w.service + "' " + why +
                            " while handling the request" +
                            (p.started ? " (it had started, so it is not retried)" : ""),
                        !p.started));
  }
  dispatch(w.service);
}

void Broker::heartbeat_and_expire() {
  auto now = Clock::now();
  std::vector<std::string> dead;
  for (auto& [key, w] : workers_) {
    if (now > w.expiry) {
      dead.push_back(key);
      continue;
    }
    bus::Header h;
    h.kind = bus::Kind::HEARTBEAT;
    bus::send(*workers_sock_.sockets[w.sock], {w.identity}, h, zmq::message_t(),
              static_cast<int>(zmq::send_flags::dontwait));
  }
  for (auto& key : dead) {
    ++stats_.expired;
    remove_worker(key, "stopped answering heartbeats");
  }
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
                    bus::encode_error(make_error(ErrorCode::TIMED_OUT,
                                                 "service '" + p.service +
                                                     "' did not answer before the deadline",
                                                 true)));
      p.abandoned = true;
      ++stats_.errors;
      auto w = workers_.find(p.worker);
      if (w != workers_.end()) {
        bus::Header h;
        h.kind = bus::Kind::CANCEL;
        h.request_id = id;
        bus::send(*workers_sock_.sockets[w->second.sock], {w->second.identity}, h,
                  zmq::message_t(), static_cast<int>(zmq::send_flags::dontwait));
      }
    }
  }
}

void Broker::publish_status() {
  for (auto& [name, svc] : services_) {
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

// -------------------------------------------------------------------------------------- loop

void Broker::run(const std::atomic<bool>& stop) {
  struct Item {
    zmq::socket_t* socket;
    int role;  // 0 client, 1 worker, 2 events in, 3 events out
    size_t index;
  };
  std::vector<Item> items;
  auto add = [&](SocketSet& set, int role) {
    for (size_t i = 0; i < set.sockets.size(); ++i) {
      if (set.sockets[i]) items.push_back({set.sockets[i].get(), role, i});
    }
  };
  add(workers_sock_, 1);
  add(clients_sock_, 0);
  add(events_in_, 2);
  add(events_out_, 3);
  std::vector<zmq::pollitem_t> poll(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    poll[i] = {static_cast<void*>(*items[i].socket), 0, ZMQ_POLLIN, 0};
  }
  next_heartbeat_ = Clock::now() + opt_.heartbeat;
  next_status_ = Clock::now() + opt_.status_interval;
  std::vector<zmq::message_t> frames;
  while (!stop.load()) {
    auto now = Clock::now();
    auto next = std::min(next_heartbeat_, next_status_);
    if (!deadlines_.empty()) next = std::min(next, deadlines_.top().first);
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - now);
    zmq::poll(poll.data(), poll.size(),
              std::chrono::milliseconds(std::clamp<long>(wait.count(), 0, 100)));
    for (size_t i = 0; i < items.size(); ++i) {
      if (!(poll[i].revents & ZMQ_POLLIN)) continue;
      // Bounded batch per socket so one busy peer cannot starve the others.
      for (int n = 0; n < 256 && bus::recv_frames(*items[i].socket, frames); ++n) {
        switch (items[i].role) {
          case 0: on_client(items[i].index, frames); break;
          case 1: on_worker(items[i].index, frames); break;
          case 2: on_event(frames); break;
          case 3: break;  // subscription messages: nothing to do
        }
      }
    }
    now = Clock::now();
    if (!deadlines_.empty() && deadlines_.top().first <= now) expire_deadlines();
    if (now >= next_heartbeat_) {
      heartbeat_and_expire();
      next_heartbeat_ = now + opt_.heartbeat;
    }
    if (now >= next_status_) {
      publish_status();
      next_status_ = now + opt_.status_interval;
    }
  }
  // Shutdown: whoever still waits gets a clear answer.
  std::vector<uint64_t> ids;
  for (auto& [id, p] : pending_) ids.push_back(id);
  for (auto id : ids) {
    fail(id, make_error(ErrorCode::SHUTTING_DOWN, "the orchestrator is shutting down", true));
  }
  for (auto& [key, w] : workers_) {
    bus::Header h;
    h.kind = bus::Kind::DISCONNECT;
    bus::send(*workers_sock_.sockets[w.sock], {w.identity}, h, zmq::message_t(),
              static_cast<int>(zmq::send_flags::dontwait));
  }
  // Remove our ipc socket files: `nv down` leaves nothing behind.
  for (const auto& ep : bound_) {
    if (auto path = bus::ipc_path(ep); !path.empty()) ::unlink(path.c_str());
  }
}

}  // namespace nv
