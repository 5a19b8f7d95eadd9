#include "frames.h"

#include <capnp/schema.h>

#include <cstring>

namespace nv::bus {
namespace {

bool valid_kind(uint16_t raw) {
  return raw > 0 && raw < capnp::Schema::from<Kind>().getEnumerants().size();
}

std::string frame_size_text(size_t n) { return std::to_string(n) + " bytes"; }

}  // namespace

capnp::ReaderOptions Limits::reader_options() const {
  capnp::ReaderOptions o;
  o.traversalLimitInWords =
      traversal_limit_words ? traversal_limit_words : (max_frame_bytes / sizeof(capnp::word)) * 2;
  o.nestingLimit = static_cast<int>(nesting_limit);
  return o;
}

Result<BodyReader> BodyReader::open_impl(const void* data, size_t size, const Limits& limits,
                                         bool copy) {
  BodyReader b;
  if (size == 0) return b;
  if (size > limits.max_frame_bytes) {
    return make_error(ErrorCode::OVERSIZED_FRAME, "body of " + frame_size_text(size) +
                                                      " exceeds the cap of " +
                                                      frame_size_text(limits.max_frame_bytes));
  }
  if (size % sizeof(capnp::word) != 0) {
    return make_error(ErrorCode::MALFORMED_MESSAGE,
                      "body length " + std::to_string(size) + " is not a multiple of 8");
  }
  size_t words = size / sizeof(capnp::word);
  bool aligned = reinterpret_cast<uintptr_t>(data) % alignof(capnp::word) == 0;
  if (aligned && !copy) {
    b.view_ = kj::ArrayPtr<const capnp::word>(static_cast<const capnp::word*>(data), words);
  } else {
    b.words_ = kj::heapArray<capnp::word>(words);
    std::memcpy(b.words_.begin(), data, size);
    b.view_ = b.words_.asPtr();
  }
  try {
    b.reader_ = std::make_shared<capnp::FlatArrayMessageReader>(b.view_, limits.reader_options());
  } catch (const kj::Exception& e) {
    return make_error(
        ErrorCode::MALFORMED_MESSAGE,
        std::string("body is not a Cap'n Proto message: ") + e.getDescription().cStr());
  }
  return b;
}

Result<BodyReader> BodyReader::open(const void* data, size_t size, const Limits& limits) {
  return open_impl(data, size, limits, false);
}

Result<BodyReader> BodyReader::open(const zmq::message_t& frame, const Limits& limits) {
  // An owned copy: the reader then outlives the frame vector it came from.
  return open_impl(frame.data(), frame.size(), limits, true);
}

bool recv_frames(zmq::socket_t& socket, std::vector<zmq::message_t>& frames) {
  frames.clear();
  while (true) {
    zmq::message_t m;
    zmq::recv_result_t got;
    try {
      got = socket.recv(m, zmq::recv_flags::dontwait);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      // A signal: before the first part nothing was taken; within a message the rest of it is
      // already queued (ZeroMQ delivers multipart messages whole), so take it.
      if (frames.empty()) return false;
      continue;
    }
    if (!got) return !frames.empty();  // EAGAIN before the first part: nothing waiting
    bool more = m.more();
    frames.push_back(std::move(m));
    if (!more) return true;
  }
}

int poll(zmq::pollitem_t* items, size_t count, std::chrono::milliseconds timeout) {
  try {
    return zmq::poll(items, count, timeout);
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) throw;
    for (size_t i = 0; i < count; ++i) items[i].revents = 0;
    return -1;
  }
}

bool parse(std::vector<zmq::message_t>& frames, bool routed, const Limits& limits, Message* out,
           ParseError* failure, bool parse_body) {
  *failure = ParseError{};
  // 1. Envelope: routing frames up to the empty delimiter.
  size_t i = 0;
  while (i < frames.size() && frames[i].size() != 0) ++i;
  if (i == frames.size()) {
    // No delimiter. On a ROUTER the first frame is still the peer's identity: answer it.
    if (routed && !frames.empty() && frames[0].size() <= 255) {
      failure->routing.emplace_back(static_cast<const char*>(frames[0].data()), frames[0].size());
    }
    failure->error = make_error(ErrorCode::MALFORMED_MESSAGE,
                                "no empty delimiter frame: expected [empty][header][body]");
    return false;
  }
  if (!routed && i != 0) {
    failure->error = make_error(ErrorCode::MALFORMED_MESSAGE, "unexpected frames before delimiter");
    return false;
  }
  if (i > limits.max_routing_frames) {
    failure->error = make_error(ErrorCode::MALFORMED_MESSAGE, "too many routing frames");
    return false;
  }
  for (size_t k = 0; k < i; ++k) {
    failure->routing.emplace_back(static_cast<const char*>(frames[k].data()), frames[k].size());
  }
  if (routed && i == 0) {
    failure->error = make_error(ErrorCode::MALFORMED_MESSAGE, "no routing identity");
    return false;
  }
  // 2. Frame count and sizes.
  size_t rest = frames.size() - i - 1;
  if (rest < 1 || rest > 2) {
    failure->error = make_error(
        ErrorCode::MALFORMED_MESSAGE,
        "expected [header][body] after the delimiter, got " + std::to_string(rest) + " frames");
    return false;
  }
  for (size_t k = i + 1; k < frames.size(); ++k) {
    if (frames[k].size() > limits.max_frame_bytes) {
      failure->error =
          make_error(ErrorCode::OVERSIZED_FRAME, "frame of " + frame_size_text(frames[k].size()) +
                                                     " exceeds the cap of " +
                                                     frame_size_text(limits.max_frame_bytes));
      // Still try to read the header so the reply carries the request id.
      if (k != i + 1) {
        auto h = BodyReader::open(frames[i + 1].data(), frames[i + 1].size(), limits);
        if (h) {
          auto hr = h->root_unchecked<schema::Header>();
          if (hr) {
            failure->request_id = hr->getRequestId();
            failure->header_read = true;
          }
        }
      }
      return false;
    }
  }
  // 3. Header, read in place: it is consumed here, so no owned copy is needed.
  auto hb = BodyReader::open(frames[i + 1].data(), frames[i + 1].size(), limits);
  if (!hb) {
    failure->error = hb.error();
    return false;
  }
  auto hr = hb->root_unchecked<schema::Header>();
  if (!hr) {
    failure->error = make_error(ErrorCode::MALFORMED_MESSAGE, "header: " + hr.error().message);
    return false;
  }
  auto h = hr.value();
  failure->request_id = h.getRequestId();
  failure->header_read = true;
  if (h.getVersion() != kSchemaVersion) {
    failure->error = make_error(ErrorCode::UNSUPPORTED_VERSION,
                                "header has schema version " + std::to_string(h.getVersion()) +
                                    ", this service speaks " + std::to_string(kSchemaVersion));
    return false;
  }
  if (!valid_kind(static_cast<uint16_t>(h.getKind()))) {
    failure->error = make_error(
        ErrorCode::MALFORMED_MESSAGE,
        "header kind " + std::to_string(static_cast<int>(h.getKind())) + " is not a known kind");
    return false;
  }
  // totalSize() bounded the header but did not check pointer kinds: a text field that points
  // at a struct or a list of words throws here, and must be a typed error, not an escape.
  try {
    out->header.service = h.getService();
    out->header.trace_id = h.getTraceId();
    out->header.instance = h.getInstance();
  } catch (const kj::Exception& e) {
    failure->error = make_error(ErrorCode::MALFORMED_MESSAGE,
                                std::string("header: ") + e.getDescription().cStr());
    return false;
  }
  out->routing = std::move(failure->routing);
  out->header.kind = h.getKind();
  out->header.request_id = h.getRequestId();
  out->header.deadline_ms = h.getDeadlineMs();
  out->header.capacity = h.getCapacity();
  out->header.pid = h.getPid();
  out->header.interval_ms = h.getIntervalMs();
  out->header.running.clear();
  try {  // a list pointer of the wrong kind throws, like the text fields above
    if (h.hasRunning()) {
      auto running = h.getRunning();
      if (running.size() > kMaxRunning) {
        failure->routing = std::move(out->routing);
        failure->error =
            make_error(ErrorCode::MALFORMED_MESSAGE,
                       "header lists " + std::to_string(running.size()) +
                           " running requests, more than " + std::to_string(kMaxRunning));
        return false;
      }
      out->header.running.reserve(running.size());
      for (auto id : running) out->header.running.push_back(id);
    }
  } catch (const kj::Exception& e) {
    failure->routing = std::move(out->routing);
    failure->error = make_error(ErrorCode::MALFORMED_MESSAGE,
                                std::string("header: ") + e.getDescription().cStr());
    return false;
  }
  // 4. Body (validated when read).
  out->raw_body = zmq::message_t();
  if (rest == 2 && !parse_body) {
    out->raw_body = std::move(frames[i + 2]);
    out->body = BodyReader();
  } else if (rest == 2) {
    auto body = BodyReader::open(frames[i + 2], limits);
    if (!body) {
      failure->routing = std::move(out->routing);
      failure->error = body.error();
      return false;
    }
    out->body = std::move(body.value());
  } else {
    out->body = BodyReader();
  }
  return true;
}

zmq::message_t encode_header(const Header& header) {
  // The first segment lives on the stack (capnp requires it zeroed): no heap allocation for a
  // header on the hot path; a header with long strings spills into malloc'd segments.
  capnp::word first[48] = {};
  capnp::MallocMessageBuilder mb(kj::arrayPtr(first, 48));
  auto b = mb.initRoot<schema::Header>();
  b.setVersion(kSchemaVersion);
  b.setKind(header.kind);
  if (!header.service.empty()) b.setService(header.service);
  b.setRequestId(header.request_id);
  if (!header.trace_id.empty()) b.setTraceId(header.trace_id);
  b.setDeadlineMs(header.deadline_ms);
  b.setCapacity(header.capacity);
  b.setPid(header.pid);
  if (!header.instance.empty()) b.setInstance(header.instance);
  if (header.interval_ms) b.setIntervalMs(header.interval_ms);
  if (!header.running.empty()) {
    auto list = b.initRunning(static_cast<unsigned>(header.running.size()));
    for (unsigned i = 0; i < header.running.size(); ++i) list.set(i, header.running[i]);
  }
  return encode_body(mb);
}

zmq::message_t encode_body(capnp::MessageBuilder& builder) {
  auto segments = builder.getSegmentsForOutput();
  size_t words = capnp::computeSerializedSizeInWords(segments);
  zmq::message_t m(words * sizeof(capnp::word));
  kj::ArrayPtr<capnp::word> out(static_cast<capnp::word*>(m.data()), words);
  // messageToFlatArray into zmq's buffer without an extra copy.
  kj::ArrayOutputStream stream(out.asBytes());
  capnp::writeMessage(stream, segments);
  return m;
}

zmq::message_t encode_error(const Error& error) {
  capnp::MallocMessageBuilder mb(128);
  error.to_capnp(mb.initRoot<schema::Error>());
  return encode_body(mb);
}

bool send(zmq::socket_t& socket, const std::vector<std::string>& routing, const Header& header,
          zmq::message_t&& body, int flags) {
  auto sf = static_cast<zmq::send_flags>(flags);
  // One part; a signal interrupting a blocking send is retried (the part was not queued).
  auto part = [&](zmq::message_t& m, zmq::send_flags f) {
    for (;;) {
      try {
        return socket.send(m, f).has_value();
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
      }
    }
  };
  try {
    for (const auto& r : routing) {
      zmq::message_t m(r.data(), r.size());
      if (!part(m, sf | zmq::send_flags::sndmore)) return false;
    }
    zmq::message_t empty;
    if (!part(empty, sf | zmq::send_flags::sndmore)) return false;
    auto h = encode_header(header);
    if (body.size() == 0) return part(h, sf);
    if (!part(h, sf | zmq::send_flags::sndmore)) return false;
    return part(body, sf);
  } catch (const zmq::error_t&) {
    return false;  // EHOSTUNREACH on a ROUTER with ROUTER_MANDATORY, or the socket closing
  }
}

bool send_error(zmq::socket_t& socket, const std::vector<std::string>& routing, uint64_t request_id,
                const std::string& service, const Error& error, const std::string& trace_id) {
  Header h;
  h.kind = Kind::ERROR;
  h.request_id = request_id;
  h.service = service;
  h.trace_id = trace_id;
  return send(socket, routing, h, encode_error(error), static_cast<int>(zmq::send_flags::dontwait));
}

std::string ipc_endpoint(const std::string& path) { return "ipc://" + path; }
std::string ipc_path(const std::string& endpoint) {
  return endpoint.rfind("ipc://", 0) == 0 ? endpoint.substr(6) : std::string();
}

}  // namespace nv::bus
