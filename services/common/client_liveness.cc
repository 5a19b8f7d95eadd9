// client_liveness.cc — the client's side of bus liveness (client.h has the rules): heartbeats
// while requests are outstanding, and the brokerLost answer when the broker is gone.
#include "client.h"
#include "conn_watch.h"

namespace nv {

void Client::start_watch() {
  try {
    watch_ = std::make_shared<ConnectionWatch>(socket_);
  } catch (const zmq::error_t&) {
    watch_.reset();  // no monitor: silence alone decides, after stall_limit
  }
}

void Client::track(uint64_t id) {
  if (outstanding_.empty()) {
    // Start the clocks with the first outstanding request, and say at once that we speak
    // heartbeats: the broker then ties the request's life to ours.
    last_heard_ = Clock::now();
    next_heartbeat_ = last_heard_;
    if (watch_) {
      watch_->poll();
      watch_->dropped = false;
    }
  }
  outstanding_.insert(id);
  keep_alive();
}

void Client::heard_from_broker(const bus::Header& header) {
  last_heard_ = Clock::now();
  if (watch_) watch_->dropped = false;
  if (header.kind == bus::Kind::HEARTBEAT && header.interval_ms) {
    broker_interval_ = std::chrono::milliseconds(header.interval_ms);
  }
}

void Client::keep_alive() {
  if (outstanding_.empty()) return;
  auto now = Clock::now();
  if (now < next_heartbeat_) return;
  bus::Header h;
  h.kind = bus::Kind::HEARTBEAT;
  h.interval_ms = static_cast<uint32_t>(options_.heartbeat.count());
  bus::send(socket_, {}, h, zmq::message_t(), static_cast<int>(zmq::send_flags::dontwait));
  next_heartbeat_ = now + options_.heartbeat;
}

std::optional<Client::Incoming> Client::broker_lost_answer() {
  if (outstanding_.empty()) return std::nullopt;
  auto silent = Clock::now() - last_heard_;
  auto interval = std::max(broker_interval_, options_.heartbeat);
  if (silent < interval * options_.liveness) return std::nullopt;
  if (watch_) watch_->poll();
  bool dropped = watch_ && watch_->dropped;
  if (!dropped && silent < options_.stall_limit) return std::nullopt;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(silent).count();
  Error e =
      make_error(ErrorCode::BROKER_LOST,
                 dropped ? "the orchestrator at " + options_.endpoint +
                               " went away (connection closed, " + std::to_string(ms) +
                               " ms without a heartbeat); the request's outcome is "
                               "unknown — check `nv status` and retry"
                         : "the orchestrator at " + options_.endpoint + " has been silent for " +
                               std::to_string(ms) + " ms (stalled?); the request was abandoned",
                 true);
  e.service = "client";
  uint64_t id = *outstanding_.begin();
  outstanding_.erase(outstanding_.begin());
  Incoming in;
  in.header.kind = bus::Kind::ERROR;
  in.header.request_id = id;
  auto bytes = bus::encode_error(e);
  auto body = bus::BodyReader::open(bytes, options_.limits);
  if (body) in.body = std::move(body.value());
  return in;
}

}  // namespace nv
