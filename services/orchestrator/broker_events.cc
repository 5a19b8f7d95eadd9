// broker_events.cc — the broker's event hub: events from publishers checked (framing, size,
// Event.topic, the sender's right to the topic) and stamped with the sender's verified
// identity, kept in a ring bounded by count and bytes for nv.events, and fanned out on XPUB.
#include "broker.h"
#include "common/events.h"
#include "common/log.h"

namespace nv {

void Broker::store_and_forward(const std::string& topic, const void* data, size_t size) {
  // The ring is bounded by count and by bytes; the oldest events go first.
  history_.push_back(StoredEvent{topic, std::string(static_cast<const char*>(data), size)});
  history_bytes_ += size + topic.size();
  while (!history_.empty() &&
         (history_.size() > opt_.history || history_bytes_ > opt_.history_bytes)) {
    history_bytes_ -= history_.front().bytes.size() + history_.front().topic.size();
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
  e.setSender("orchestrator");
  auto bytes = bus::encode_body(mb);
  store_and_forward(topic, bytes.data(), bytes.size());
}

void Broker::alert(const std::string& kind, const std::string& detail, const std::string& action) {
  publish(
      "security.alert",
      [&](schema::Event::Builder e) {
        auto a = e.initSecurityAlert();
        a.setKind(kind);
        a.setDetail(detail);
        a.setAction(action);
      },
      schema::Severity::ALERT);
}

void Broker::on_event(std::vector<zmq::message_t>& frames) {
  ++stats_.events_in;
  auto bad = [&](const std::string& why) {
    ++stats_.events_bad;
    if (stats_.events_bad < 10 || stats_.events_bad % 1000 == 0) {
      log::warn("dropped a malformed event", {{"why", why}, {"total", stats_.events_bad}});
    }
  };
  if (frames.size() != 2)
    return bad("expected [topic][Event], got " + std::to_string(frames.size()) + " frames");
  if (frames[0].size() == 0 || frames[0].size() > 128) return bad("topic length out of range");
  if (frames[1].size() > opt_.max_event_bytes) {
    ++stats_.events_oversized;
    return bad("event of " + std::to_string(frames[1].size()) + " bytes exceeds the cap of " +
               std::to_string(opt_.max_event_bytes));
  }
  auto body = bus::BodyReader::open(frames[1], opt_.limits);
  if (!body) return bad(body.error().message);
  auto ev = body->root<schema::Event>();
  if (!ev) return bad(ev.error().message);
  std::string topic = frames[0].to_string();
  if (ev->getTopic() != topic.c_str()) return bad("topic frame differs from Event.topic");
  auto sender = peer_identity(frames);
  if (!opt_.roles.may_publish(sender, topic)) {
    ++stats_.events_refused;
    if (stats_.events_refused < 10 || stats_.events_refused % 1000 == 0) {
      log::warn("refused an event its sender may not publish",
                {{"topic", topic},
                 {"sender", sender},
                 {"claimed_service", std::string(ev->getService().cStr())},
                 {"total", stats_.events_refused}});
      alert("bus_forged_event",
            sender + " published '" + topic + "' as '" +
                std::string(ev->getService().cStr()).substr(0, 64) + "'",
            "dropped");
    }
    return;
  }
  // Stamp the verified sender over whatever the publisher wrote there.
  capnp::MallocMessageBuilder mb;
  mb.setRoot(ev.value());
  mb.getRoot<schema::Event>().setSender(sender);
  auto bytes = bus::encode_body(mb);
  store_and_forward(topic, bytes.data(), bytes.size());
}

}  // namespace nv
