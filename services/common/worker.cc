#include "worker.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <climits>

#include "conn_watch.h"
#include "log.h"

namespace nv {

using Clock = std::chrono::steady_clock;

namespace {
// A broker silent this long is presumed gone even while its connection stays up.
constexpr std::chrono::seconds kStallLimit{30};
}  // namespace

std::string default_instance(const std::string& service) {
  char host[256] = {0};
  if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "localhost");
  return std::string(host) + "/" + service + "/" + std::to_string(getpid());
}

// ---------------------------------------------------------------------------------- Request

Request::Request(Worker* worker, bus::Header header, bus::BodyReader body)
    : worker_(worker),
      header_(std::move(header)),
      body_(std::move(body)),
      received_(Clock::now()) {}

std::chrono::milliseconds Request::remaining() const {
  if (header_.deadline_ms == 0) return std::chrono::milliseconds::max();
  auto end = received_ + std::chrono::milliseconds(header_.deadline_ms);
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
  return std::max(left, std::chrono::milliseconds(0));
}

void Request::send(bus::Kind kind, zmq::message_t body) {
  if (answered_.load()) return;
  if (kind != bus::Kind::PARTIAL && answered_.exchange(true)) return;
  bus::Header h;
  h.kind = kind;
  h.request_id = header_.request_id;
  h.service = header_.service;
  h.trace_id = header_.trace_id;
  worker_->enqueue(Worker::Outgoing{std::move(h), std::move(body)});
}

void Request::partial(capnp::MessageBuilder& body) {
  send(bus::Kind::PARTIAL, bus::encode_body(body));
}
void Request::reply(capnp::MessageBuilder& body) { send(bus::Kind::REPLY, bus::encode_body(body)); }
void Request::fail(const Error& error) {
  Error e = error;
  if (e.service.empty()) e.service = worker_->options_.service;
  send(bus::Kind::ERROR, bus::encode_error(e));
}

// ----------------------------------------------------------------------------------- Worker

Worker::Worker(zmq::context_t& ctx, WorkerOptions options, RequestHandler handler)
    : ctx_(ctx),
      options_(std::move(options)),
      handler_(std::move(handler)),
      capacity_(options_.capacity) {
  if (options_.instance.empty()) options_.instance = default_instance(options_.service);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) log::syscall_error("eventfd", errno);
}

Worker::~Worker() {
  reap_threads(true);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

size_t Worker::active() const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (auto& [t, done] : threads_) n += done->load() ? 0 : 1;
  return n;
}

void Worker::cancel_orphans() {
  // The broker that handed us the requests still running stayed silent through a reconnect:
  // it is gone, and no one can take their answers. Tell their handlers, so those that watch
  // cancelled() (the LLM gateway's HTTP call, the executor's run) stop working for nobody.
  size_t n = 0;
  std::lock_guard lock(mu_);
  for (auto& w : live_) {
    if (auto r = w.lock(); r && !r->answered() && !r->cancelled_.exchange(true)) ++n;
  }
  if (n > 0) {
    log::warn("worker: broker gone; requests in flight are orphaned and cancelled",
              {{"service", options_.service}, {"cancelled", n}});
  }
}

std::vector<uint64_t> Worker::running_ids() {
  std::vector<uint64_t> ids;
  std::lock_guard lock(mu_);
  for (auto& w : live_) {
    if (auto r = w.lock(); r && !r->answered() && !r->cancelled()) {
      ids.push_back(r->header().request_id);
    }
  }
  if (ids.size() > bus::kMaxRunning) ids.resize(bus::kMaxRunning);
  return ids;
}

void Worker::connect() {
  // A reconnect keeps the requests still running: READY lists them, and the broker adopts those
  // it still holds for us (it stalled, or we did) and cancels the others (it restarted).
  // Answers queued on the old socket get a moment to leave before it closes.
  if (socket_) socket_->set(zmq::sockopt::linger, static_cast<int>(options_.heartbeat.count()));
  if (watch_) {
    watch_->poll();
    broker_dropped_ = broker_dropped_ || watch_->dropped;
  }
  watch_.reset();
  socket_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
  socket_->set(zmq::sockopt::linger, 0);
  socket_->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(options_.limits.max_frame_bytes) * 4);
  if (options_.curve_keys && !options_.curve_server_key.empty()) {
    curve::make_client(*socket_, *options_.curve_keys, options_.curve_server_key);
  }
  try {
    watch_ = std::make_shared<ConnectionWatch>(*socket_);
  } catch (const zmq::error_t&) {
    watch_.reset();  // no monitor: a broker silent through two windows counts as gone
  }
  socket_->connect(options_.broker_endpoint);
  bus::Header h;
  h.kind = bus::Kind::READY;
  h.service = options_.service;
  h.capacity = capacity_.load();
  h.pid = static_cast<uint32_t>(getpid());
  h.instance = options_.instance;
  h.interval_ms = static_cast<uint32_t>(options_.heartbeat.count());
  h.running = running_ids();
  bus::send(*socket_, {}, h, zmq::message_t());
  heard_since_connect_ = false;
  broker_expiry_ = Clock::now() + options_.heartbeat * options_.liveness;
  next_heartbeat_ = Clock::now() + options_.heartbeat;
}

void Worker::send_to_broker(bus::Kind kind, uint64_t request_id, zmq::message_t body) {
  bus::Header h;
  h.kind = kind;
  h.request_id = request_id;
  h.service = options_.service;
  h.capacity = capacity_.load();
  if (kind == bus::Kind::HEARTBEAT)
    h.interval_ms = static_cast<uint32_t>(options_.heartbeat.count());
  bus::send(*socket_, {}, h, std::move(body), static_cast<int>(zmq::send_flags::dontwait));
}

void Worker::enqueue(Outgoing out) {
  {
    std::lock_guard lock(mu_);
    outgoing_.push_back(std::move(out));
  }
  if (std::this_thread::get_id() != loop_thread_ && wake_fd_ >= 0) {
    uint64_t one = 1;
    ssize_t ignored = ::write(wake_fd_, &one, sizeof one);
    (void)ignored;
  }
}

void Worker::flush_outgoing() {
  std::deque<Outgoing> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(outgoing_);
  }
  for (auto& out : batch) {
    out.header.capacity = capacity_.load();
    bus::send(*socket_, {}, out.header, std::move(out.body));
  }
}

void Worker::reap_threads(bool all) {
  std::vector<std::thread> finished;
  {
    std::lock_guard lock(mu_);
    for (auto it = threads_.begin(); it != threads_.end();) {
      if (all || it->second->load()) {
        finished.push_back(std::move(it->first));
        it = threads_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& t : finished) {
    if (t.joinable()) t.join();
  }
}

void Worker::dispatch(bus::Message&& msg) {
  switch (msg.header.kind) {
    case bus::Kind::HEARTBEAT:
      return;
    case bus::Kind::DISCONNECT:
      // The broker forgot us (it restarted, or expired us): register again — unless we are
      // draining, when registering would advertise a worker that is about to leave.
      if (!draining_) connect();
      return;
    case bus::Kind::CANCEL: {
      std::lock_guard lock(mu_);
      for (auto& w : live_) {
        if (auto r = w.lock(); r && r->header().request_id == msg.header.request_id) {
          r->cancelled_ = true;
        }
      }
      return;
    }
    case bus::Kind::REQUEST:
      break;
    case bus::Kind::ERROR: {
      // The broker refused our READY (unauthorized: this uid or key may not serve the service).
      auto e = msg.body.root_unchecked<schema::Error>();
      log::error("worker: the broker refused this worker",
                 {{"service", options_.service},
                  {"error", e ? Error::from_capnp(e.value()).to_string()
                              : std::string("unreadable error body")}});
      return;
    }
    default:
      log::warn("worker: unexpected message kind from broker",
                {{"kind", static_cast<int>(msg.header.kind)}});
      return;
  }
  auto req =
      std::shared_ptr<Request>(new Request(this, std::move(msg.header), std::move(msg.body)));
  // The dispatch boundary: whatever the handler throws becomes a typed error reply.
  auto guarded = [this](std::shared_ptr<Request> r) {
    try {
      handler_(r);
    } catch (const kj::Exception& e) {
      r->fail(make_error(ErrorCode::MALFORMED_MESSAGE,
                         std::string("request body is invalid: ") + e.getDescription().cStr()));
    } catch (const std::exception& e) {
      log::error("handler threw", {{"what", e.what()}});
      r->fail(make_error(ErrorCode::INTERNAL, std::string("internal error: ") + e.what()));
    }
    if (!r->answered()) {
      r->fail(make_error(ErrorCode::INTERNAL, "handler returned without an answer"));
    }
  };
  if (options_.inline_handlers) {
    guarded(req);
    return;
  }
  auto done = std::make_shared<std::atomic<bool>>(false);
  std::lock_guard lock(mu_);
  live_.push_back(req);
  threads_.emplace_back(std::thread([guarded, req, done]() mutable {
                          guarded(std::move(req));
                          done->store(true);
                        }),
                        done);
}

void Worker::run(const std::atomic<bool>& stop) {
  loop_thread_ = std::this_thread::get_id();
  last_heard_ = Clock::now();
  connect();
  std::vector<zmq::message_t> frames;
  draining_ = false;
  Clock::time_point drain_deadline{};
  while (true) {
    if (stop.load() && !draining_) {
      draining_ = true;
      drain_deadline = Clock::now() + options_.drain_timeout;
      capacity_ = 0;
      send_to_broker(bus::Kind::DISCONNECT, 0);
      log::info("worker draining", {{"service", options_.service}, {"active", active()}});
    }
    if (draining_) {
      reap_threads(false);
      if (active() == 0 || Clock::now() > drain_deadline) {
        flush_outgoing();
        break;
      }
    }
    zmq::pollitem_t items[] = {{static_cast<void*>(*socket_), 0, ZMQ_POLLIN, 0},
                               {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
    auto wait =
        std::chrono::duration_cast<std::chrono::milliseconds>(next_heartbeat_ - Clock::now());
    long timeout = std::clamp<long>(wait.count(), 0, draining_ ? 50 : 200);
    auto before = Clock::now();
    bus::poll(items, wake_fd_ >= 0 ? 2 : 1, std::chrono::milliseconds(timeout));  // EINTR: 0
    // A stall (SIGSTOP, an overloaded host): we did not run, so the broker's silence during it
    // proves nothing. Give it a full liveness window from now, and speak first.
    auto overshoot = Clock::now() - before - std::chrono::milliseconds(timeout);
    if (overshoot > options_.heartbeat) {
      broker_expiry_ =
          std::max(broker_expiry_, Clock::now() + options_.heartbeat * options_.liveness);
      next_heartbeat_ = Clock::now();
    }
    if (items[1].revents & ZMQ_POLLIN) {
      uint64_t v;
      ssize_t ignored = ::read(wake_fd_, &v, sizeof v);
      (void)ignored;
    }
    while (bus::recv_frames(*socket_, frames)) {
      broker_expiry_ = Clock::now() + options_.heartbeat * options_.liveness;
      last_heard_ = Clock::now();
      heard_since_connect_ = true;
      broker_dropped_ = false;
      bus::Message msg;
      bus::ParseError failure;
      if (!bus::parse(frames, false, options_.limits, &msg, &failure)) {
        log::warn("worker: dropped a malformed message from the broker",
                  {{"error", failure.error.to_string()}});
        if (failure.header_read) {
          bus::send_error(*socket_, {}, failure.request_id, options_.service, failure.error);
        }
        continue;
      }
      if (draining_ && msg.header.kind == bus::Kind::REQUEST) {
        bus::send_error(*socket_, {}, msg.header.request_id, options_.service,
                        make_error(ErrorCode::SHUTTING_DOWN, "worker is draining", true));
        continue;
      }
      dispatch(std::move(msg));
    }
    flush_outgoing();
    auto now = Clock::now();
    if (now >= next_heartbeat_) {
      send_to_broker(bus::Kind::HEARTBEAT, 0);
      next_heartbeat_ = now + options_.heartbeat;
      reap_threads(false);
      std::lock_guard lock(mu_);
      std::erase_if(live_, [](auto& w) { return w.expired(); });
    }
    if (now > broker_expiry_ && !draining_) {
      log::warn("worker: broker silent, reconnecting",
                {{"service", options_.service}, {"endpoint", options_.broker_endpoint}});
      // Silent again since the last reconnect, and gone rather than stalled: its connection
      // closed, or the new one never came up, or the silence is too long for any stall.
      if (!heard_since_connect_) {
        if (watch_) watch_->poll();
        bool gone = broker_dropped_ || !watch_ || !watch_->connected || watch_->dropped;
        if (gone || now - last_heard_ > kStallLimit) cancel_orphans();
      }
      connect();
    }
  }
  reap_threads(true);
  flush_outgoing();
}

}  // namespace nv
