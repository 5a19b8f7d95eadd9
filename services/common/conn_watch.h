// conn_watch.h — connect/disconnect events of one ZeroMQ socket (ZeroMQ's socket monitor over an
// inproc PAIR), for liveness rules that tell a peer that stalls (its connection stays up) from
// one that died or restarted (its connection closed).
#pragma once

#include <zmq.hpp>

namespace nv {

class ConnectionWatch : public zmq::monitor_t {
 public:
  // Starts watching `socket` (before it connects, so the first CONNECTED is seen). Throws
  // zmq::error_t when the monitor cannot be set up.
  explicit ConnectionWatch(zmq::socket_t& socket);
  // Reads the events since the last call (never blocks).
  void poll();
  bool connected = false;  // a connection is up now
  bool dropped = false;    // a connection closed since the flag was last cleared

 private:
  void on_event_connected(const zmq_event_t&, const char*) override { connected = true; }
  void on_event_disconnected(const zmq_event_t&, const char*) override {
    connected = false;
    dropped = true;
  }
};

}  // namespace nv
