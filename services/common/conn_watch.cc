#include "conn_watch.h"

#include <unistd.h>

#include <atomic>
#include <string>

namespace nv {

ConnectionWatch::ConnectionWatch(zmq::socket_t& socket) {
  static std::atomic<uint64_t> serial{0};
  init(socket,
       "inproc://nv-conn-watch-" + std::to_string(::getpid()) + "-" + std::to_string(serial++),
       ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED);
}

void ConnectionWatch::poll() {
  while (check_event(0)) {}
}

}  // namespace nv
