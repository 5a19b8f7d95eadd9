// frames.h — the bus framing and the validation every receiver applies.
//
// Every message on the bus, on every socket:
//   [routing frames...][empty][Header][body]
//   - routing frames: added by ROUTER sockets (client or worker identity); none on DEALERs.
//   - empty: the delimiter, kept on DEALER sockets too so REQ peers would interoperate.
//   - Header: a bus.capnp Header (version, kind, service, request id, trace id, ...).
//   - body: one Cap'n Proto message whose type follows from (service, kind); may be absent.
// Receivers check, in this order: frame count, frame sizes against Limits, that the header
// parses within the traversal and nesting limits, the header's version, the kind's range.
// Bodies are checked when read (BodyReader::root), including their own version field.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>
#include <nv/schema/bus.capnp.h>

#include <cstdint>
#include <memory>
#include <chrono>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "error.h"

namespace nv::bus {

using Kind = schema::Header::Kind;

constexpr uint16_t kSchemaVersion = schema::SCHEMA_VERSION;

struct Limits {
  size_t max_frame_bytes = 8u << 20;   // a larger frame is answered with oversizedFrame
  size_t max_routing_frames = 8;       // deeper envelopes are malformed
  uint64_t traversal_limit_words = 0;  // 0 = max_frame_bytes / 8 * 2
  unsigned nesting_limit = 32;         // Cap'n Proto struct/list nesting depth
  capnp::ReaderOptions reader_options() const;
};

// The header's fields as plain values.
struct Header {
  Kind kind = Kind::UNSET;
  std::string service;
  uint64_t request_id = 0;
  std::string trace_id;
  uint32_t deadline_ms = 0;
  uint32_t capacity = 0;
  uint32_t pid = 0;
  std::string instance;
  uint32_t interval_ms = 0;       // heartbeat: the sender's heartbeat interval
  std::vector<uint64_t> running;  // ready: requests still running from before a reconnect
};

// At most this many ids in Header.running (a larger list is malformed).
constexpr size_t kMaxRunning = 65536;

// A Cap'n Proto body received off the wire, kept aligned and bounded.
class BodyReader {
 public:
  BodyReader() = default;
  // Takes an owned copy of the frame; nothing is parsed until root().
  static Result<BodyReader> open(const zmq::message_t& frame, const Limits& limits);
  // A view: `data` must stay alive and unchanged while the reader is used.
  static Result<BodyReader> open(const void* data, size_t size, const Limits& limits);

  bool empty() const { return words_.size() == 0 && view_.size() == 0; }
  size_t size_bytes() const { return view_.size() * sizeof(capnp::word); }

  // The root as T, validated: the whole message is traversed once (bounds, traversal limit,
  // nesting), and T's `version` field must be kSchemaVersion. T must have getVersion().
  template <class T>
  Result<typename T::Reader> root() {
    auto r = root_unchecked<T>();
    if (!r) return r.error();
    if (r.value().getVersion() != kSchemaVersion) {
      return make_error(ErrorCode::UNSUPPORTED_VERSION,
                        "body has schema version " + std::to_string(r.value().getVersion()) +
                            ", this service speaks " + std::to_string(kSchemaVersion));
    }
    return r;
  }

  // The root as T, traversed once for validity but without a version check.
  template <class T>
  Result<typename T::Reader> root_unchecked() {
    if (!reader_) return make_error(ErrorCode::MALFORMED_MESSAGE, "message has no body");
    try {
      auto r = reader_->getRoot<T>();
      (void)r.totalSize();  // walks every pointer: bounds and limits fail here, not later
      return r;
    } catch (const kj::Exception& e) {
      return make_error(ErrorCode::MALFORMED_MESSAGE,
                        std::string("body is not valid Cap'n Proto: ") + e.getDescription().cStr());
    }
  }

 private:
  static Result<BodyReader> open_impl(const void* data, size_t size, const Limits& limits,
                                      bool copy);
  kj::Array<capnp::word> words_;          // owned aligned copy, when needed
  kj::ArrayPtr<const capnp::word> view_;  // what the reader reads
  std::shared_ptr<capnp::FlatArrayMessageReader> reader_;
};

// A parsed, validated message.
struct Message {
  std::vector<std::string> routing;  // identity frames before the delimiter
  Header header;
  BodyReader body;          // when parsed with parse_body = true
  zmq::message_t raw_body;  // when parsed with parse_body = false (size-checked only)
};

// Why a message could not be parsed, with what is needed to answer it.
struct ParseError {
  Error error;
  std::vector<std::string> routing;  // empty when the envelope itself was unusable
  uint64_t request_id = 0;           // when the header could be read
  bool header_read = false;
};

// Receives one multipart message without blocking (false when none is waiting, or a signal
// interrupted the first part).
bool recv_frames(zmq::socket_t& socket, std::vector<zmq::message_t>& frames);

// zmq::poll that does not throw when a signal interrupts it: returns the number of ready items,
// 0 on timeout, -1 when interrupted by a signal (EINTR; every revents is then 0). The caller's
// loop checks its stop flags (interrupt.h) and polls again. Other errors still throw.
int poll(zmq::pollitem_t* items, size_t count, std::chrono::milliseconds timeout);

// Validates and parses frames. `routed` is true on ROUTER sockets (identity frames expected).
// On failure, *failure says why and carries the routing frames for a typed Error reply.
// With parse_body = false the body frame is only size-checked and moved to out->raw_body
// (the broker forwards bodies it does not read; the receiving worker validates them).
bool parse(std::vector<zmq::message_t>& frames, bool routed, const Limits& limits, Message* out,
           ParseError* failure, bool parse_body = true);

zmq::message_t encode_header(const Header& header);
zmq::message_t encode_body(capnp::MessageBuilder& builder);
zmq::message_t encode_error(const Error& error);

// Sends [routing...][empty][header][body]. `body` may be an empty message (no body frame sent
// when it is empty and `send_empty_body` is false). Returns false if the socket refused.
bool send(zmq::socket_t& socket, const std::vector<std::string>& routing, const Header& header,
          zmq::message_t&& body, int flags = 0);
// Sends a typed Error answering request `request_id`.
bool send_error(zmq::socket_t& socket, const std::vector<std::string>& routing, uint64_t request_id,
                const std::string& service, const Error& error, const std::string& trace_id = {});

// Builds a message of type T with its version set; fill the rest, then encode_body().
template <class T>
typename T::Builder init_body(capnp::MallocMessageBuilder& mb) {
  auto b = mb.initRoot<T>();
  b.setVersion(kSchemaVersion);
  return b;
}

// The "ipc://" form of a socket path, and the path of an ipc:// endpoint ("" otherwise).
std::string ipc_endpoint(const std::string& path);
std::string ipc_path(const std::string& endpoint);

}  // namespace nv::bus
