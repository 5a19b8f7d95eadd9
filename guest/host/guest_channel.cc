// guest_channel.cc — see guest_channel.h.
#include "guest/host/guest_channel.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <capnp/message.h>
#include <nv/schema/guest.capnp.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "guest/host/channel_util.h"
#include "guest/protocol/frame.h"

namespace nv::guest {

using namespace channel_util;

namespace {

using schema::GuestMessage;
using schema::HostMessage;

const char* which_name(GuestMessage::Which w) {
  switch (w) {
    case GuestMessage::HELLO:
      return "hello";
    case GuestMessage::CHUNK:
      return "chunk";
    case GuestMessage::RESULT:
      return "result";
    case GuestMessage::PONG:
      return "pong";
    case GuestMessage::FILE_DATA:
      return "fileData";
    case GuestMessage::ERROR:
      return "error";
    case GuestMessage::RESEEDED:
      return "reseeded";
    case GuestMessage::FILE_CHUNK:
      return "fileChunk";
    case GuestMessage::ENTRIES:
      return "entries";
    case GuestMessage::PROCESSES:
      return "processes";
    case GuestMessage::ACK:
      return "ack";
    case GuestMessage::INFERENCE_REQUEST:
      return "inferenceRequest";
    case GuestMessage::RESERVED12:
    case GuestMessage::RESERVED13:
      break;
  }
  return "unknown";
}

// An answer of another kind than the one waited for: a protocol error.
ChannelError unexpected_answer(GuestMessage::Which w, const char* waiting_for) {
  return err(ChannelErrc::protocol, std::string("guest sent '") + which_name(w) +
                                        "' while the host waited for " + waiting_for);
}

}  // namespace

const char* to_string(ChannelErrc c) {
  switch (c) {
    case ChannelErrc::ok:
      return "ok";
    case ChannelErrc::timeout:
      return "timeout";
    case ChannelErrc::closed:
      return "closed";
    case ChannelErrc::connect_failed:
      return "connect_failed";
    case ChannelErrc::protocol:
      return "protocol";
    case ChannelErrc::rate_limited:
      return "rate_limited";
    case ChannelErrc::output_cap:
      return "output_cap";
    case ChannelErrc::guest_error:
      return "guest_error";
    case ChannelErrc::bad_argument:
      return "bad_argument";
    case ChannelErrc::io:
      return "io";
  }
  return "?";
}

struct GuestChannel::Impl {
  explicit Impl(const ChannelLimits& l)
      : decoder(l.max_frame_bytes),
        bytes(l.burst_bytes, l.bytes_per_s),
        messages(l.burst_messages, l.messages_per_s) {}
  FrameDecoder decoder;
  TokenBucket bytes;
  TokenBucket messages;
  // Set once the greeting completed: from then on a Hello from the same boot is a legal repeat
  // (the agent greets each connection it notices, which can be after it answered our greeting
  // ping) and is skipped wherever it arrives; a Hello from another boot means the guest
  // restarted under us, which no request can survive.
  bool greeted = false;
  std::string boot_id;
  uint64_t repeated_hellos = 0;
};

GuestChannel::GuestChannel(int fd, const ChannelLimits& limits)
    : fd_(fd), limits_(limits), impl_(std::make_unique<Impl>(limits)) {}

GuestChannel::~GuestChannel() { close(); }

uint64_t GuestChannel::repeated_hellos() const { return impl_->repeated_hellos; }

void GuestChannel::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

// ---- internal helpers, shared by every call --------------------------------------------------

namespace {

// Errors after which the stream's state is unknown: the channel is closed.
bool is_fatal(ChannelErrc c) {
  return c != ChannelErrc::ok && c != ChannelErrc::guest_error && c != ChannelErrc::bad_argument;
}

}  // namespace

// These live in a local class so the header stays free of Cap'n Proto reader types.
class ChannelIo {
 public:
  ChannelIo(int& fd, ChannelLimits& limits, GuestChannel::Impl& impl, uint64_t& bytes_rx,
            uint64_t& frames_rx)
      : fd_(fd), limits_(limits), impl_(impl), bytes_rx_(bytes_rx), frames_rx_(frames_rx) {}

  ChannelError send(capnp::MessageBuilder& mb, Deadline deadline) {
    if (fd_ < 0) return err(ChannelErrc::closed, "the guest channel is closed");
    std::string frame = encode_frame(mb);
    if (frame.size() - kFrameHeaderBytes > kDefaultHostFrameCap) {
      return err(ChannelErrc::bad_argument,
                 "request of " + std::to_string(frame.size()) + " bytes exceeds the agent's " +
                     std::to_string(kDefaultHostFrameCap) + "-byte frame cap");
    }
    return fail_if_fatal(write_all(fd_, frame, deadline));
  }

  // The next guest message, parsed and version-checked.
  ChannelError next(std::unique_ptr<ParsedMessage>& out, Deadline deadline) {
    if (fd_ < 0) return err(ChannelErrc::closed, "the guest channel is closed");
    char buf[64 * 1024];
    for (;;) {
      kj::Array<capnp::word> words;
      auto st = impl_.decoder.next(words);
      if (st == FrameDecoder::Status::frame) {
        ++frames_rx_;
        if (!impl_.messages.try_take(1)) {
          return fail(err(ChannelErrc::rate_limited,
                          "the guest sent more than " + std::to_string(limits_.messages_per_s) +
                              " messages/s (burst " + std::to_string(limits_.burst_messages) +
                              "); channel closed"));
        }
        std::string perr;
        out = ParsedMessage::parse(kj::mv(words), perr);
        if (!out) return fail(err(ChannelErrc::protocol, "guest sent " + perr));
        bool repeat = false;
        try {
          auto msg = out->root<GuestMessage>();
          if (msg.getVersion() != schema::SCHEMA_VERSION) {
            return fail(err(ChannelErrc::protocol,
                            "guest speaks schema version " + std::to_string(msg.getVersion()) +
                                ", the host " + std::to_string(schema::SCHEMA_VERSION) +
                                "; rebuild the guest image (./nv setup)"));
          }
          if (impl_.greeted && msg.which() == GuestMessage::HELLO) {
            std::string boot = msg.getHello().getBootId();
            if (boot != impl_.boot_id) {
              return fail(err(ChannelErrc::protocol, "guest sent a Hello of another boot ('" +
                                                         boot.substr(0, 64) + "', greeted as '" +
                                                         impl_.boot_id + "'): it restarted"));
            }
            repeat = true;
          }
        } catch (...) {
          return fail(err(ChannelErrc::protocol,
                          "guest sent a malformed message: " + describe_current_exception()));
        }
        if (repeat) {  // a repeated greeting of this boot: legal in every state, skipped
          ++impl_.repeated_hellos;
          out.reset();
          continue;
        }
        return {};
      }
      if (st != FrameDecoder::Status::need_more) {
        return fail(err(ChannelErrc::protocol,
                        std::string("guest sent a ") + to_string(st) + " (announced " +
                            std::to_string(impl_.decoder.announced()) + " bytes, cap " +
                            std::to_string(limits_.max_frame_bytes) + ")"));
      }
      ssize_t r = ::recv(fd_, buf, sizeof buf, 0);
      if (r > 0) {
        bytes_rx_ += static_cast<uint64_t>(r);
        if (!impl_.bytes.try_take(static_cast<double>(r))) {
          return fail(err(ChannelErrc::rate_limited,
                          "the guest sent more than " + std::to_string(limits_.bytes_per_s) +
                              " bytes/s (burst " + std::to_string(limits_.burst_bytes) +
                              "); channel closed"));
        }
        impl_.decoder.feed(buf, static_cast<size_t>(r));
        continue;
      }
      if (r == 0) {
        return fail(err(ChannelErrc::closed,
                        "the guest channel closed (VM stopped, or the agent dropped us)"));
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return fail(err(ChannelErrc::io, errno_text("recv(guest)", errno)));
      int w = wait_fd(fd_, POLLIN, deadline);
      if (w < 0) return fail(err(ChannelErrc::io, errno_text("poll(guest)", errno)));
      if (w == 0) {
        return fail(err(ChannelErrc::timeout, "no answer from the guest before the deadline"));
      }
    }
  }

  ChannelError fail(ChannelError e) {
    if (is_fatal(e.code) && fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    return e;
  }
  ChannelError fail_if_fatal(ChannelError e) { return e ? fail(std::move(e)) : e; }

  // An unexpected message kind for what we wait for: a protocol violation.
  ChannelError unexpected(GuestMessage::Which w, const char* waiting_for) {
    return fail(unexpected_answer(w, waiting_for));
  }

  ChannelError guest_error(schema::Error::Reader e) {
    std::string m = e.getMessage();
    if (m.size() > 500) m.resize(500);
    ChannelError out = err(ChannelErrc::guest_error, "guest agent: " + m);
    auto code = e.getCode();
    // Only codes this build knows are passed on; a newer agent's are UNSET.
    if (static_cast<uint16_t>(code) <= static_cast<uint16_t>(schema::Error::Code::NOT_FOUND)) {
      out.guest_code = code;
    }
    return out;
  }

 private:
  int& fd_;
  ChannelLimits& limits_;
  GuestChannel::Impl& impl_;
  uint64_t& bytes_rx_;
  uint64_t& frames_rx_;
};

#define NV_IO ChannelIo io(fd_, limits_, *impl_, bytes_received_, frames_received_)

// Wraps the reading of one message so a deeper malformation becomes a protocol error.
#define NV_GUARD_BEGIN try {
#define NV_GUARD_END                                                                        \
  }                                                                                         \
  catch (...) {                                                                             \
    return io.fail(err(ChannelErrc::protocol,                                               \
                       "guest sent a malformed message: " + describe_current_exception())); \
  }

// Ping with nonce 0, the greeting request: the agent answers Hello, then the pong, even if it
// did not notice this connection (it also sends Hello by itself when it does, so one or two
// Hellos arrive).
constexpr uint64_t kGreeting = 0;

ChannelError GuestChannel::send_greeting(Deadline deadline) {
  NV_IO;
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<HostMessage>();
  m.setVersion(schema::SCHEMA_VERSION);
  m.setPing(kGreeting);
  return io.send(mb, deadline);
}

ChannelError GuestChannel::wait_hello(Deadline deadline) {
  NV_IO;
  // Frames left over from a previous host's requests may precede the Hello; a few are skipped.
  constexpr int kMaxStale = 64;
  int stale = 0;
  bool have_hello = false;
  for (;;) {
    std::unique_ptr<ParsedMessage> pm;
    if (auto e = io.next(pm, deadline)) {
      if (e.code == ChannelErrc::timeout) {
        e.message = have_hello ? "Hello came, but no answer to the first ping before the deadline"
                               : "no Hello from the guest agent before the deadline (did the VM "
                                 "boot? see its console log)";
      }
      return e;
    }
    NV_GUARD_BEGIN
    auto msg = pm->root<GuestMessage>();
    if (msg.which() == GuestMessage::HELLO) {
      auto h = msg.getHello();
      hello_.agent_version = h.getAgentVersion();
      hello_.languages.clear();
      for (auto l : h.getLanguages()) hello_.languages.push_back(l);
      hello_.boot_id = h.getBootId();
      hello_.uptime_ms = h.getUptimeMs();
      have_hello = true;
      continue;
    }
    if (have_hello && msg.which() == GuestMessage::PONG && msg.getPong() == kGreeting) {
      impl_->greeted = true;
      impl_->boot_id = hello_.boot_id;
      return {};
    }
    // Anything else (an error or a result for a previous host's request) is stale.
    if (++stale > kMaxStale) {
      return io.fail(err(ChannelErrc::protocol,
                         "guest sent " + std::to_string(stale) + " messages but no Hello/pong"));
    }
    NV_GUARD_END
  }
}

// ---- requests --------------------------------------------------------------------------------

Result<ExecOutcome> GuestChannel::exec(const ExecSpec& spec, const ChunkCallback& on_chunk,
                                       Deadline deadline) {
  NV_IO;
  if (spec.language == schema::Language::UNSET) {
    return err(ChannelErrc::bad_argument, "exec needs a language");
  }
  {
    capnp::MallocMessageBuilder mb;
    auto m = mb.initRoot<HostMessage>();
    m.setVersion(schema::SCHEMA_VERSION);
    auto x = m.initExec();
    x.setId(spec.id);
    x.setLanguage(spec.language);
    x.setCode(spec.code);
    x.setStdin(kj::arrayPtr(reinterpret_cast<const kj::byte*>(spec.stdin_data.data()),
                            spec.stdin_data.size()));
    auto env = x.initEnv(static_cast<unsigned>(spec.env.size()));
    for (unsigned i = 0; i < spec.env.size(); ++i) {
      env[i].setName(spec.env[i].first);
      env[i].setValue(spec.env[i].second);
    }
    x.setTimeoutMs(spec.timeout_ms);
    x.setOutputCapBytes(spec.output_cap_bytes);
    x.setTraceId(spec.trace_id);
    x.setCwd(spec.cwd);
    x.setTailBytes(spec.tail_bytes);
    x.setContext(spec.context);
    x.setKeepBackground(spec.keep_background);
    x.setBackground(spec.background);
    if (auto e = io.send(mb, deadline)) return e;
  }
  ExecOutcome out;
  // The host's own cap: what this exec asked for (or the agent default) and the global bound.
  const uint64_t cap = std::min<uint64_t>(
      spec.output_cap_bytes ? spec.output_cap_bytes : (1u << 20), limits_.max_output_bytes);
  uint64_t over = 0;
  for (;;) {
    std::unique_ptr<ParsedMessage> pm;
    if (auto e = io.next(pm, deadline)) return e;
    NV_GUARD_BEGIN
    auto msg = pm->root<GuestMessage>();
    switch (msg.which()) {
      case GuestMessage::CHUNK: {
        auto c = msg.getChunk();
        if (c.getExecId() != spec.id) return io.unexpected(msg.which(), "this exec's output");
        auto s = c.getStream();
        if (s != schema::Stream::STDOUT && s != schema::Stream::STDERR) {
          return io.fail(err(ChannelErrc::protocol, "guest sent a chunk for stream " +
                                                        std::to_string(static_cast<int>(s))));
        }
        auto d = c.getData();
        if (d.size() > kMaxChunkBytes) {
          return io.fail(err(ChannelErrc::protocol,
                             "guest sent a chunk of " + std::to_string(d.size()) + " bytes"));
        }
        uint64_t room = cap - std::min(cap, out.received_bytes);
        size_t keep = static_cast<size_t>(std::min<uint64_t>(room, d.size()));
        if (keep < d.size()) {
          out.truncated = true;
          over += d.size() - keep;
          // The agent enforces the same cap; this much beyond it is a broken or hostile agent.
          if (over > cap + (1u << 20)) {
            return io.fail(err(ChannelErrc::output_cap,
                               "guest sent " + std::to_string(over) + " bytes past the " +
                                   std::to_string(cap) + "-byte output cap"));
          }
        }
        out.received_bytes += keep;
        if (keep > 0 && on_chunk) {
          on_chunk(s, std::string_view(reinterpret_cast<const char*>(d.begin()), keep));
        }
        break;
      }
      case GuestMessage::RESULT: {
        auto r = msg.getResult();
        if (r.getExecId() != spec.id) return io.unexpected(msg.which(), "this exec's result");
        out.exit_code = r.getExitCode();
        out.signal = r.getSignal();
        out.duration_ms = r.getDurationMs();
        out.timed_out = r.getTimedOut();
        out.truncated = out.truncated || r.getTruncated();
        out.stdout_bytes = r.getStdoutBytes();
        out.stderr_bytes = r.getStderrBytes();
        out.error = r.getError();
        if (out.error.size() > 1000) out.error.resize(1000);
        const size_t tail_cap =
            spec.tail_bytes == 0 ? kDefaultTailBytes : std::min(spec.tail_bytes, kMaxTailBytes);
        for (auto [data, into] : {std::pair{r.getStdoutTail(), &out.stdout_tail},
                                  std::pair{r.getStderrTail(), &out.stderr_tail}}) {
          if (data.size() > tail_cap) {
            return io.fail(err(ChannelErrc::protocol,
                               "guest sent an output tail of " + std::to_string(data.size()) +
                                   " bytes; at most " + std::to_string(tail_cap) + " were asked"));
          }
          into->assign(reinterpret_cast<const char*>(data.begin()), data.size());
        }
        return out;
      }
      case GuestMessage::PONG:
        break;  // a late answer to an abandoned ping
      case GuestMessage::ERROR:
        return io.guest_error(msg.getError());
      default:
        return io.unexpected(msg.which(), "exec output");
    }
    NV_GUARD_END
  }
}

Result<std::chrono::nanoseconds> GuestChannel::ping(Deadline deadline) {
  NV_IO;
  const uint64_t nonce = next_nonce_++;
  const auto start = Clock::now();
  {
    capnp::MallocMessageBuilder mb;
    auto m = mb.initRoot<HostMessage>();
    m.setVersion(schema::SCHEMA_VERSION);
    m.setPing(nonce);
    if (auto e = io.send(mb, deadline)) return e;
  }
  for (;;) {
    std::unique_ptr<ParsedMessage> pm;
    if (auto e = io.next(pm, deadline)) return e;
    NV_GUARD_BEGIN
    auto msg = pm->root<GuestMessage>();
    if (msg.which() == GuestMessage::ERROR) return io.guest_error(msg.getError());
    if (msg.which() != GuestMessage::PONG) return io.unexpected(msg.which(), "pong");
    if (msg.getPong() == nonce) return std::chrono::nanoseconds(Clock::now() - start);
    NV_GUARD_END
  }
}

Result<Identity> GuestChannel::reseed(std::string_view entropy, const std::string& vm_id,
                                      int64_t unix_time_ns, Deadline deadline) {
  if (auto e = send_reseed(entropy, vm_id, unix_time_ns, deadline)) return e;
  return await_reseeded(vm_id, deadline);
}

ChannelError GuestChannel::send_reseed(std::string_view entropy, const std::string& vm_id,
                                       int64_t unix_time_ns, Deadline deadline,
                                       const GuestNetwork* network) {
  NV_IO;
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<HostMessage>();
  m.setVersion(schema::SCHEMA_VERSION);
  auto r = m.initReseed();
  r.setEntropy(kj::arrayPtr(reinterpret_cast<const kj::byte*>(entropy.data()), entropy.size()));
  r.setVmId(vm_id);
  r.setUnixTimeNs(unix_time_ns);
  if (network) {
    auto n = r.initNetwork();
    n.setMac(network->mac);
    n.setIpv4(network->ipv4);
    n.setGateway(network->gateway);
  }
  return io.send(mb, deadline);
}

Result<Identity> GuestChannel::await_reseeded(const std::string& vm_id, Deadline deadline) {
  Identity out;
  auto e = await_answers(
      [&](ParsedMessage& pm, ChannelError& error) {
        auto msg = pm.root<GuestMessage>();
        if (msg.which() != GuestMessage::RESEEDED) {
          error = unexpected_answer(msg.which(), "reseeded");
          return false;
        }
        auto id = msg.getReseeded();
        out = Identity{id.getVmId(), id.getBootId()};
        if (out.vm_id != vm_id) {
          error = err(ChannelErrc::protocol, "guest confirmed vm id '" + out.vm_id.substr(0, 64) +
                                                 "', asked for '" + vm_id + "'");
        }
        return true;
      },
      deadline);
  if (e) return e;
  return out;
}

ChannelError GuestChannel::send_request(capnp::MessageBuilder& request, Deadline deadline) {
  NV_IO;
  return io.send(request, deadline);
}

ChannelError GuestChannel::await_answers(const AnswerFn& on_answer, Deadline deadline) {
  NV_IO;
  for (;;) {
    std::unique_ptr<ParsedMessage> pm;
    if (auto e = io.next(pm, deadline)) return e;
    NV_GUARD_BEGIN
    auto msg = pm->root<GuestMessage>();
    if (msg.which() == GuestMessage::PONG) continue;  // a late answer to an abandoned ping
    if (msg.which() == GuestMessage::ERROR) return io.guest_error(msg.getError());
    ChannelError e;
    bool done = on_answer(*pm, e);
    if (e) return io.fail_if_fatal(std::move(e));
    if (done) return {};
    NV_GUARD_END
  }
}

void GuestChannel::credit_solicited_bytes(uint64_t n) {
  impl_->bytes.give_back(static_cast<double>(n));
}

ChannelError GuestChannel::shutdown(Deadline deadline) {
  NV_IO;
  {
    capnp::MallocMessageBuilder mb;
    auto m = mb.initRoot<HostMessage>();
    m.setVersion(schema::SCHEMA_VERSION);
    m.setShutdown();
    if (auto e = io.send(mb, deadline)) return e;
  }
  // Whatever still arrives is drained; the stream ending is the success.
  for (;;) {
    std::unique_ptr<ParsedMessage> pm;
    ChannelError e = io.next(pm, deadline);
    if (e.code == ChannelErrc::closed) return {};
    if (e.code == ChannelErrc::timeout) {
      e.message = "the guest did not power off before the deadline; kill the VMM";
    }
    if (e) return e;
  }
}

}  // namespace nv::guest
