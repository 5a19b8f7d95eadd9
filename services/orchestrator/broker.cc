#include "broker.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

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
      if (type == zmq::socket_type::router) {
        // Mandatory: a full pipe is EAGAIN (the answer goes to the client's backlog) and a gone
        // peer EHOSTUNREACH (the client is lost) instead of a silent drop.
        s->set(zmq::sockopt::router_mandatory, 1);
        s->set(zmq::sockopt::sndhwm, 10000);
      }
      if (type == zmq::socket_type::xpub) s->set(zmq::sockopt::sndhwm, 100000);
      if (type == zmq::socket_type::pull) s->set(zmq::sockopt::rcvhwm, 100000);
      if (curve) curve::make_server(*s, *opt_.curve_keys);
      // ZAP for NULL-mechanism peers too: their identity comes from it (roles.h).
      if (!curve) s->set(zmq::sockopt::zap_domain, "nv");
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
  auto allowed = opt_.curve_allow;
  allowed.merge(opt_.roles.keys());
  if (any_tcp && opt_.curve_keys && allowed.empty()) {
    return make_error(ErrorCode::BAD_REQUEST,
                      "tcp:// endpoints with CURVE need an allow-list of client keys "
                      "(--curve-allow DIR_OR_FILE) or keys in --roles");
  }
  // Always: on ipc:// the handler's user id is the peer's uid, which roles are bound to.
  try {
    zap_ = std::make_unique<curve::ZapHandler>(ctx_, std::move(allowed));
  } catch (const zmq::error_t& e) {
    // Another handler owns this context (two brokers in one test process): identities then
    // come from the "Peer-Address" property alone. CURVE keys would be checked by no one (or
    // by another broker's list): refuse to serve tcp:// then.
    if (any_tcp && opt_.curve_keys) {
      return make_error(
          ErrorCode::BAD_REQUEST,
          std::string("cannot start the ZAP handler that checks CURVE keys: ") + e.what());
    }
    log::warn("zap handler not started", {{"error", e.what()}});
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
  auto key = client_key(sock, msg.routing);
  if (msg.header.kind == bus::Kind::HEARTBEAT) {
    client_heard(key, msg.header.kind);
    return;
  }
  if (msg.header.kind == bus::Kind::CANCEL) {
    client_heard(key, msg.header.kind);
    for (auto& [id, p] : pending_) {
      if (p.client == key && p.client_request_id == msg.header.request_id && !p.abandoned) {
        if (!p.worker.empty()) {
          p.abandoned = true;
          cancel_on_worker(id, p.worker);
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
    bus::Header h;
    h.kind = bus::Kind::ERROR;
    h.request_id = msg.header.request_id;
    h.service = "orchestrator";
    send_client(
        sock, msg.routing, h,
        bus::encode_error(make_error(ErrorCode::BAD_REQUEST, "clients may only send requests")));
    return;
  }
  client_heard(key, msg.header.kind);
  on_client_request(sock, std::move(key), msg);
}

void Broker::on_client_request(size_t sock, std::string key, bus::Message& msg) {
  ++stats_.requests;
  auto refuse = [&](Error e) {
    e.service = "orchestrator";
    bus::Header h;
    h.kind = bus::Kind::ERROR;
    h.request_id = msg.header.request_id;
    h.service = msg.header.service;
    h.trace_id = msg.header.trace_id;
    ++stats_.errors;
    send_client(sock, msg.routing, h, bus::encode_error(e));
  };
  const auto& name = msg.header.service;
  if (name.empty() || name.size() > 64) {
    return refuse(make_error(ErrorCode::BAD_REQUEST, "service name must be 1-64 characters"));
  }
  if (name == kStatusService || name == kEventsService) return builtin(sock, msg);
  auto sit = services_.find(name);
  bool registered = sit != services_.end() && sit->second.ever_registered;
  if (!registered && !in_grace_) {
    ++stats_.unknown_service;
    return refuse(make_error(
        ErrorCode::UNKNOWN_SERVICE,
        "no worker has ever registered service '" + name + "'; check the name and `nv status`"));
  }
  if (registered && sit->second.workers.empty() && !in_grace_) {
    return refuse(make_error(ErrorCode::NO_WORKER,
                             "no worker for service '" + name +
                                 "' is registered any more; start it and check `nv status`",
                             true));
  }
  if (queued_ >= opt_.max_queue) {
    ++stats_.overloaded;
    Error e = make_error(ErrorCode::OVERLOADED,
                         "broker queue is full (" + std::to_string(queued_) + " requests)", true);
    e.queue_length = static_cast<uint32_t>(queued_);
    return refuse(e);
  }
  auto deadline = msg.header.deadline_ms ? std::chrono::milliseconds(msg.header.deadline_ms)
                                         : opt_.default_deadline;
  if (registered) {
    if (auto e = admit(name, sit->second, deadline)) {
      ++stats_.overloaded;
      return refuse(*e);
    }
  }
  Pending p;
  p.id = next_id_++;
  p.client_sock = sock;
  p.client = std::move(key);
  p.client_routing = std::move(msg.routing);
  p.client_request_id = msg.header.request_id;
  p.service = name;
  p.trace_id = std::move(msg.header.trace_id);
  p.body = std::move(msg.raw_body);
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
  auto& c = clients_[p.client];
  if (c.pending++ == 0) {
    c.sock = sock;
    c.routing = p.client_routing;
    c.expiry = Clock::now() + opt_.client_silence;
  }
  auto& svc = services_[p.service];  // registered, or held during the startup grace
  svc.queue.push_back(p.id);
  ++queued_;
  std::string service = p.service;
  pending_.emplace(p.id, std::move(p));
  dispatch(service);
}

std::optional<Error> Broker::admit(const std::string& service, const ServiceRec& svc,
                                   std::chrono::milliseconds deadline) const {
  int64_t capacity = 0, free = 0;
  for (auto& key : svc.workers) {
    auto& w = workers_.at(key);
    if (w.draining) continue;
    capacity += w.capacity;
    free += std::max<int64_t>(0, w.free());
  }
  if (svc.queue.empty() && free > 0) return std::nullopt;  // runs now
  auto ahead = svc.queue.size();
  Error e = make_error(ErrorCode::OVERLOADED, "", true);
  e.queue_length = static_cast<uint32_t>(ahead);
  if (svc.samples == 0) {
    // No finished request yet, so no service time to estimate from: a bounded number of rounds
    // of the capacity may wait.
    if (ahead < static_cast<size_t>(std::max<int64_t>(capacity, 1) * opt_.cold_rounds)) {
      return std::nullopt;
    }
    e.message = "service '" + service + "' is busy: " + std::to_string(ahead) +
                " requests queued and none finished yet to estimate the wait; retry later";
    return e;
  }
  double wait_ms = static_cast<double>(ahead + 1) * svc.service_ms /
                   static_cast<double>(std::max<int64_t>(capacity, 1));
  if (wait_ms + svc.service_ms <= static_cast<double>(deadline.count())) return std::nullopt;
  e.estimated_wait_ms = static_cast<uint32_t>(std::min<double>(wait_ms, UINT32_MAX));
  e.message = "service '" + service + "' is overloaded: " + std::to_string(ahead) +
              " requests queued for " + std::to_string(capacity) + " slots; estimated wait " +
              std::to_string(std::lround(wait_ms)) + " ms plus " +
              std::to_string(std::lround(svc.service_ms)) + " ms to serve exceeds the " +
              std::to_string(deadline.count()) + " ms deadline; retry later";
  return e;
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
      auto body =
          bus::BodyReader::open(chosen[i]->bytes.data(), chosen[i]->bytes.size(), opt_.limits);
      if (!body) continue;
      auto ev = body->root_unchecked<schema::Event>();
      if (ev) list.setWithCaveats(i, ev.value());
    }
  }
  bus::Header h;
  h.kind = bus::Kind::REPLY;
  h.request_id = msg.header.request_id;
  h.service = msg.header.service;
  send_client(sock, msg.routing, h, bus::encode_body(mb));
  ++stats_.replies;
}

// -------------------------------------------------------------------------------------- loop

std::chrono::microseconds next_busy_poll_window(std::chrono::microseconds window,
                                                std::chrono::nanoseconds slept,
                                                std::chrono::microseconds longest) {
  using std::chrono::microseconds;
  if (longest.count() <= 0) return microseconds(0);
  if (slept <= longest)
    return std::min(window.count() == 0 ? microseconds(10) : window * 2, longest);
  return window.count() < 10 ? microseconds(0) : window / 2;
}

void Broker::adapt_poll_window(Clock::duration slept) {
  poll_window_ = next_busy_poll_window(poll_window_, slept, opt_.busy_poll);
}

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
  auto grace =
      opt_.startup_grace.count() > 0 ? opt_.startup_grace : 2 * opt_.heartbeat * opt_.liveness;
  auto grace_end = started_ + grace;
  std::vector<zmq::message_t> frames;
  bool busy = false;  // the last round moved messages
  while (!stop.load()) {
    auto now = Clock::now();
    auto next = std::min(next_heartbeat_, next_status_);
    if (!deadlines_.empty()) next = std::min(next, deadlines_.top().first);
    if (in_grace_) next = std::min(next, grace_end);
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - now);
    // Answers waiting for slow readers: look again soon.
    long cap = backlogs_.empty() ? 100 : 1;
    auto asked = std::chrono::milliseconds(std::clamp<long>(wait.count(), 0, cap));
    int ready = 0;
    bool spun = busy && poll_window_.count() > 0;
    if (spun) {
      // Adaptive busy-poll (the grow/shrink rule of KVM's halt polling): after a round that
      // moved messages, poll without sleeping for the current window, yielding the CPU to any
      // runnable thread between polls, so the conversation's next message finds the loop awake
      // instead of paying a sleeping thread's wake-up.
      auto spin_end = now + poll_window_;
      while ((ready = zmq::poll(poll.data(), poll.size(), std::chrono::milliseconds(0))) == 0 &&
             Clock::now() < spin_end) {
        sched_yield();
      }
    }
    if (ready == 0) {
      zmq::poll(poll.data(), poll.size(), asked);
      if (busy) adapt_poll_window(Clock::now() - now);
    }
    // The poll came back much later than asked: this process did not run (SIGSTOP, a host
    // stall). Measured before any message is read, so the backlog it built counts as heard.
    if (auto over = Clock::now() - now - asked; over > opt_.heartbeat) after_stall(over);
    if (!backlogs_.empty()) flush_backlogs();
    busy = false;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!(poll[i].revents & ZMQ_POLLIN)) continue;
      busy = true;
      // Bounded batch per socket so one busy peer cannot starve the others.
      for (int n = 0; n < 256 && bus::recv_frames(*items[i].socket, frames); ++n) {
        switch (items[i].role) {
          case 0:
            on_client(items[i].index, frames);
            break;
          case 1:
            on_worker(items[i].index, frames);
            break;
          case 2:
            on_event(frames);
            break;
          case 3:
            break;  // subscription messages: nothing to do
        }
      }
    }
    now = Clock::now();
    if (in_grace_ && now >= grace_end) end_startup_grace();
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
