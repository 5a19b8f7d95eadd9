#include "events.h"

#include <unistd.h>

#include "json.h"
#include "trace_id.h"
#include "utf8.h"

namespace nv {

void stamp_event(schema::Event::Builder e, const std::string& topic, const std::string& service,
                 const std::string& instance, const std::string& trace_id,
                 schema::Severity severity) {
  e.setVersion(bus::kSchemaVersion);
  e.setId(new_uuid_v7());
  e.setTopic(topic);
  e.setTimeNs(std::chrono::duration_cast<std::chrono::nanoseconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count());
  e.setService(service);
  e.setInstance(instance);
  e.setPid(static_cast<uint32_t>(getpid()));
  if (!trace_id.empty()) e.setTraceId(trace_id);
  e.setSeverity(severity);
}

EventPublisher::EventPublisher(zmq::context_t& ctx, const std::string& endpoint,
                               std::string service, std::string instance,
                               const std::optional<curve::KeyPair>& curve_keys,
                               const std::string& curve_server_key)
    : service_(std::move(service)), instance_(std::move(instance)) {
  if (endpoint.empty()) return;
  socket_.emplace(ctx, zmq::socket_type::push);
  // Deliver what is queued at shutdown, briefly: a reachable hub takes it in milliseconds, and
  // with the hub gone this is what a service's exit waits for — inside the 2 s every service has
  // after SIGTERM (issue 12), with room for its own draining.
  socket_->set(zmq::sockopt::linger, 500);
  socket_->set(zmq::sockopt::sndhwm, 10000);
  if (curve_keys && !curve_server_key.empty()) {
    curve::make_client(*socket_, *curve_keys, curve_server_key);
  }
  socket_->connect(endpoint);
}

void EventPublisher::publish(const std::string& topic, const EventFill& fill,
                             const std::string& trace_id, schema::Severity severity) {
  if (!socket_) return;
  capnp::MallocMessageBuilder mb;
  auto e = mb.initRoot<schema::Event>();
  stamp_event(e, topic, service_, instance_, trace_id, severity);
  if (fill) fill(e);
  auto body = bus::encode_body(mb);
  std::lock_guard lock(mu_);
  // Frames: [topic][Event]
  auto sent =
      socket_->send(zmq::buffer(topic), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
  if (!sent || !socket_->send(body, zmq::send_flags::dontwait)) ++dropped_;
}

EventSubscriber::EventSubscriber(zmq::context_t& ctx, const std::string& endpoint,
                                 const std::vector<std::string>& topic_prefixes,
                                 const std::optional<curve::KeyPair>& curve_keys,
                                 const std::string& curve_server_key)
    : socket_(ctx, zmq::socket_type::sub) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.set(zmq::sockopt::rcvhwm, 100000);
  if (curve_keys && !curve_server_key.empty()) {
    curve::make_client(socket_, *curve_keys, curve_server_key);
  }
  if (topic_prefixes.empty()) socket_.set(zmq::sockopt::subscribe, "");
  for (const auto& p : topic_prefixes) socket_.set(zmq::sockopt::subscribe, p);
  socket_.connect(endpoint);
}

std::optional<EventSubscriber::Received> EventSubscriber::receive(
    std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  std::vector<zmq::message_t> frames;
  while (true) {
    if (bus::recv_frames(socket_, frames)) {
      if (frames.size() != 2) {
        ++malformed_;
        continue;
      }
      auto body = bus::BodyReader::open(frames[1], limits_);
      if (!body) {
        ++malformed_;
        continue;
      }
      Received r;
      r.topic = frames[0].to_string();
      r.body = std::move(body.value());
      auto ev = r.body.root<schema::Event>();
      if (!ev) {
        ++malformed_;
        continue;
      }
      r.event = ev.value();
      return r;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
    if (bus::poll(&item, 1, left) < 0) return std::nullopt;  // a signal: let the caller look
  }
}

// Text fields may hold program or guest bytes; JSON consumers (nv-audit, log shippers) get
// valid UTF-8. JSON's own syntax is ASCII, so this touches only ill-formed sequences.
std::string event_to_json(schema::Event::Reader event) { return utf8::sanitize(to_json(event)); }

double event_age_seconds(schema::Event::Reader event) {
  auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  return static_cast<double>(now - event.getTimeNs()) / 1e9;
}

}  // namespace nv
