#include "client.h"

#include <nv/schema/common.capnp.h>

#include "interrupt.h"

namespace nv {

Client::Client(zmq::context_t& ctx, ClientOptions options)
    : options_(std::move(options)), socket_(ctx, zmq::socket_type::dealer) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(options_.limits.max_frame_bytes) * 4);
  if (options_.curve_keys && !options_.curve_server_key.empty()) {
    curve::make_client(socket_, *options_.curve_keys, options_.curve_server_key);
  }
  start_watch();
  socket_.connect(options_.endpoint);
}

Client::~Client() = default;

Error Client::Incoming::error() {
  if (header.kind != bus::Kind::ERROR) {
    return make_error(ErrorCode::INTERNAL, "answer is not an error");
  }
  auto e = body.root_unchecked<schema::Error>();
  if (!e) return e.error();
  return Error::from_capnp(e.value());
}

uint64_t Client::send(const std::string& service, capnp::MessageBuilder* body,
                      std::chrono::milliseconds deadline, const std::string& trace_id) {
  bus::Header h;
  h.kind = bus::Kind::REQUEST;
  h.service = service;
  h.request_id = next_id_++;
  h.trace_id = trace_id;
  h.deadline_ms = static_cast<uint32_t>(std::clamp<int64_t>(deadline.count(), 0, UINT32_MAX));
  bus::send(socket_, {}, h, body ? bus::encode_body(*body) : zmq::message_t());
  track(h.request_id);
  return h.request_id;
}

void Client::send_raw(std::vector<zmq::message_t> frames) {
  socket_.send(zmq::message_t(), zmq::send_flags::sndmore);
  for (size_t i = 0; i < frames.size(); ++i) {
    socket_.send(frames[i],
                 i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
}

void Client::cancel(uint64_t id, const std::string& service) {
  bus::Header h;
  h.kind = bus::Kind::CANCEL;
  h.service = service;
  h.request_id = id;
  bus::send(socket_, {}, h, zmq::message_t(), static_cast<int>(zmq::send_flags::dontwait));
  untrack(id);
}

std::optional<Client::Incoming> Client::receive(std::chrono::milliseconds timeout) {
  auto end = Clock::now() + timeout;
  std::vector<zmq::message_t> frames;
  while (true) {
    keep_alive();
    if (bus::recv_frames(socket_, frames)) {
      bus::Message msg;
      bus::ParseError failure;
      if (!bus::parse(frames, false, options_.limits, &msg, &failure)) {
        // A broken answer still ends its request: hand it back as an error.
        Incoming in;
        in.header.kind = bus::Kind::ERROR;
        in.header.request_id = failure.request_id;
        untrack(failure.request_id);
        capnp::MallocMessageBuilder mb;
        failure.error.to_capnp(mb.initRoot<schema::Error>());
        auto bytes = bus::encode_body(mb);
        auto body = bus::BodyReader::open(bytes, options_.limits);
        if (body) in.body = std::move(body.value());
        return in;
      }
      heard_from_broker(msg.header);
      if (msg.header.kind == bus::Kind::HEARTBEAT) continue;
      if (msg.header.kind != bus::Kind::PARTIAL) untrack(msg.header.request_id);
      Incoming in;
      in.header = std::move(msg.header);
      in.body = std::move(msg.body);
      return in;
    }
    if (auto lost = broker_lost_answer()) return lost;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
    if (left.count() <= 0) return std::nullopt;
    zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
    // Wake for our own heartbeat while requests are outstanding.
    auto wait = outstanding_.empty() ? left : std::min(left, options_.heartbeat);
    if (bus::poll(&item, 1, wait) < 0) return std::nullopt;  // a signal: let the caller look
  }
}

Result<Client::Incoming> Client::call(const std::string& service, capnp::MessageBuilder* body,
                                      std::chrono::milliseconds deadline,
                                      const PartialFn& on_partial, const std::string& trace_id) {
  uint64_t id = send(service, body, deadline, trace_id);
  // The broker answers a deadline itself; the grace second covers a broker that is gone.
  auto end = Clock::now() + deadline + std::chrono::seconds(1);
  while (true) {
    if (int sig = interrupt::requested()) {
      // Ctrl-C / SIGTERM in a client that installed interrupt.h: the request is cancelled
      // upstream (the worker releases what it holds) before the caller exits.
      cancel(id, service);
      return make_error(ErrorCode::CANCELLED, "interrupted by " + interrupt::signal_name(sig) +
                                                  ": the request to '" + service +
                                                  "' was cancelled");
    }
    if (cancel_check_ && cancel_check_()) {
      cancel(id, service);
      return make_error(ErrorCode::CANCELLED,
                        "the request to '" + service + "' was cancelled by its caller");
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
    if (left.count() <= 0) {
      cancel(id, service);
      return make_error(ErrorCode::TIMED_OUT,
                        "no answer from service '" + service + "' within " +
                            std::to_string(deadline.count()) +
                            " ms; is the orchestrator running (nv status)?",
                        true);
    }
    auto in = receive(cancel_check_ ? std::min(left, std::chrono::milliseconds(100)) : left);
    if (!in) continue;
    if (in->header.request_id != id) continue;  // a late answer to an earlier request
    if (in->header.kind == bus::Kind::PARTIAL) {
      if (on_partial) on_partial(*in);
      continue;
    }
    if (in->header.kind == bus::Kind::ERROR) return in->error();
    return std::move(*in);
  }
}

}  // namespace nv
