// events.h — publish and subscribe to the event stream (events.capnp).
//
// Publishers PUSH [topic][Event] to the orchestrator's events-in endpoint (PUSH queues while
// connecting, so a service's first events are not lost the way PUB's are before subscriptions
// arrive). The orchestrator keeps a history ring and fans the frames out on its XPUB endpoint.
#pragma once

#include <nv/schema/events.capnp.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "curve.h"
#include "frames.h"

namespace nv {

using EventFill = std::function<void(schema::Event::Builder)>;

class EventPublisher {
 public:
  // `endpoint` "" makes a publisher that drops everything (tools that publish nothing).
  EventPublisher(zmq::context_t& ctx, const std::string& endpoint, std::string service,
                 std::string instance, const std::optional<curve::KeyPair>& curve_keys = {},
                 const std::string& curve_server_key = {});
  // Stamps version, id, topic, time, service, instance, pid, trace id and severity, then lets
  // `fill` set the payload. Never blocks: when the queue is full the event is dropped and counted.
  // Thread-safe.
  void publish(const std::string& topic, const EventFill& fill, const std::string& trace_id = {},
               schema::Severity severity = schema::Severity::INFO);
  uint64_t dropped() const { return dropped_.load(); }
  const std::string& service() const { return service_; }

 private:
  std::string service_;
  std::string instance_;
  std::mutex mu_;
  std::optional<zmq::socket_t> socket_;
  std::atomic<uint64_t> dropped_{0};
};

// Fills an Event's common fields (used by publishers and by the orchestrator for its own).
void stamp_event(schema::Event::Builder e, const std::string& topic, const std::string& service,
                 const std::string& instance, const std::string& trace_id,
                 schema::Severity severity);

class EventSubscriber {
 public:
  EventSubscriber(zmq::context_t& ctx, const std::string& endpoint,
                  const std::vector<std::string>& topic_prefixes,
                  const std::optional<curve::KeyPair>& curve_keys = {},
                  const std::string& curve_server_key = {});
  struct Received {
    std::string topic;
    bus::BodyReader body;
    schema::Event::Reader event;  // valid while `body` lives
  };
  // The next valid event within `timeout`; malformed ones are counted and skipped.
  std::optional<Received> receive(std::chrono::milliseconds timeout);
  uint64_t malformed() const { return malformed_; }
  zmq::socket_t& socket() { return socket_; }

 private:
  zmq::socket_t socket_;
  bus::Limits limits_;
  uint64_t malformed_ = 0;
};

// One JSON object for an event (Cap'n Proto's JSON codec; enum names, 64-bit ints as strings),
// valid UTF-8 (ill-formed Text becomes U+FFFD, utf8.h).
std::string event_to_json(schema::Event::Reader event);

// Time an Event was published, as a steady duration since then (for freshness checks).
double event_age_seconds(schema::Event::Reader event);

}  // namespace nv
