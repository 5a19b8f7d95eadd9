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

#include "guest/protocol/frame.h"

namespace nv::guest {

namespace {

using Clock = std::chrono::steady_clock;
using schema::GuestMessage;
using schema::HostMessage;

ChannelError err(ChannelErrc c, std::string msg) { return ChannelError{c, std::move(msg)}; }

std::string errno_text(const std::string& call, int e) {
  return call + " failed: " + std::strerror(e) + " (errno " + std::to_string(e) + ")";
}

// Milliseconds left until the deadline, for poll(); 0 when it has passed.
int ms_left(Deadline deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return 0;
  // Round up so poll() does not wake a hair before the deadline and spin.
  return static_cast<int>(std::min<long long>(left.count() + 1, 24LL * 3600 * 1000));
}

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

// Waits until fd is ready for `events` or the deadline passes. Returns revents, 0 on timeout,
// -1 on a poll() failure (errno set).
int wait_fd(int fd, short events, Deadline deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, ms_left(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) return 0;
    return p.revents;
  }
}

// Writes everything or fails; never past the deadline.
ChannelError write_all(int fd, std::string_view data, Deadline deadline) {
  while (!data.empty()) {
    ssize_t w = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (w > 0) {
      data.remove_prefix(static_cast<size_t>(w));
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EPIPE) return err(ChannelErrc::closed, "the guest channel closed");
    if (w < 0 && errno != EAGAIN) {
      return err(ChannelErrc::io, errno_text("send(guest channel)", errno));
    }
    int r = wait_fd(fd, POLLOUT, deadline);
    if (r < 0) return err(ChannelErrc::io, errno_text("poll(guest channel)", errno));
    if (r == 0) {
      return err(ChannelErrc::timeout, "the guest did not take our request before the deadline");
    }
  }
  return {};
}

// Non-blocking AF_UNIX connect; ENOENT/ECONNREFUSED are reported as such for the retry loop.
int unix_connect(const std::string& path, int& error_out) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    error_out = errno;
    return -1;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
    error_out = errno;
    ::close(fd);
    return -1;
  }
  return fd;
}

// Firecracker hybrid vsock: "CONNECT <port>\n" → "OK <host port>\n".
ChannelError hybrid_handshake(int fd, uint32_t port, Deadline deadline) {
  std::string req = "CONNECT " + std::to_string(port) + "\n";
  if (auto e = write_all(fd, req, deadline)) return e;
  std::string line;
  while (line.size() < 64) {
    char c;
    ssize_t r = ::recv(fd, &c, 1, 0);
    if (r == 1) {
      if (c == '\n') break;
      line += c;
      continue;
    }
    if (r == 0) {
      return err(ChannelErrc::closed, "the VMM closed the vsock connection during CONNECT " +
                                          std::to_string(port) + " (agent not listening yet?)");
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return err(ChannelErrc::io, errno_text("recv(CONNECT reply)", errno));
    int w = wait_fd(fd, POLLIN, deadline);
    if (w < 0) return err(ChannelErrc::io, errno_text("poll(CONNECT reply)", errno));
    if (w == 0) return err(ChannelErrc::timeout, "no answer to CONNECT before the deadline");
  }
  if (line.rfind("OK ", 0) != 0) {
    return err(ChannelErrc::connect_failed, "hybrid vsock refused CONNECT " + std::to_string(port) +
                                                ": '" + line.substr(0, 64) + "'");
  }
  return {};
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

// ---- connect ---------------------------------------------------------------------------------

Result<int> GuestChannel::open_stream(const std::string& path, ChannelKind kind, uint32_t port,
                                      Deadline deadline, const ChannelLimits& limits) {
  sockaddr_un probe{};
  if (path.empty() || path.size() >= sizeof probe.sun_path) {
    return err(ChannelErrc::bad_argument, "socket path '" + path + "' is empty or longer than " +
                                              std::to_string(sizeof probe.sun_path - 1) + " bytes");
  }
  // While the socket does not exist yet, inotify on its directory wakes us when it appears; the
  // retry interval (doubling, capped) covers a socket that exists but is not listening yet.
  std::string dir = path.substr(0, path.rfind('/') == std::string::npos ? 0 : path.rfind('/'));
  if (dir.empty()) dir = path[0] == '/' ? "/" : ".";
  int ino = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (ino >= 0) ::inotify_add_watch(ino, dir.c_str(), IN_CREATE | IN_MOVED_TO | IN_ATTRIB);
  auto retry = limits.connect_retry;
  ChannelError last;
  int fd = -1;
  for (;;) {
    int e = 0;
    fd = unix_connect(path, e);
    if (fd >= 0 && kind == ChannelKind::hybrid_vsock) {
      last = hybrid_handshake(fd, port, deadline);
      if (last) {
        ::close(fd);
        fd = -1;
        if (last.code == ChannelErrc::connect_failed) break;  // refused for good
      }
    } else if (fd < 0) {
      if (e != ENOENT && e != ECONNREFUSED && e != EAGAIN) {
        last = err(ChannelErrc::connect_failed, errno_text("connect(" + path + ")", e));
        break;
      }
      last = err(ChannelErrc::connect_failed,
                 errno_text("connect(" + path + ")", e) + "; is the VMM running?");
    }
    if (fd >= 0) break;
    if (Clock::now() >= deadline) break;
    // Wait for the socket to appear, or the retry interval, whichever first.
    auto until = std::min(deadline, Clock::now() + retry);
    if (ino >= 0) {
      pollfd p{ino, POLLIN, 0};
      if (::poll(&p, 1, ms_left(until)) > 0) {
        char evbuf[4096];
        while (::read(ino, evbuf, sizeof evbuf) > 0) {}
      }
    } else {
      ::poll(nullptr, 0, ms_left(until));
    }
    retry = std::min(retry * 2, std::chrono::milliseconds(200));
  }
  if (ino >= 0) ::close(ino);
  if (fd < 0) {
    if (last.code == ChannelErrc::ok || Clock::now() >= deadline) {
      return err(ChannelErrc::timeout,
                 "could not connect to " + path + " before the deadline" +
                     (last ? " (last: " + last.message + ")" : std::string()));
    }
    return last;
  }
  return fd;
}

Result<std::unique_ptr<GuestChannel>> GuestChannel::greet(
    int fd, Clock::time_point start, Deadline deadline, const ChannelLimits& limits,
    const std::function<ChannelError(GuestChannel&)>& pipelined) {
  std::unique_ptr<GuestChannel> ch(new GuestChannel(fd, limits));
  if (auto e = ch->send_greeting(deadline)) return e;
  if (pipelined) {
    if (auto e = pipelined(*ch)) return e;
  }
  if (auto e = ch->wait_hello(deadline)) return e;
  ch->hello_.connect_to_hello = Clock::now() - start;
  return ch;
}

Result<std::unique_ptr<GuestChannel>> GuestChannel::connect(const std::string& path,
                                                            ChannelKind kind, uint32_t port,
                                                            Deadline deadline,
                                                            const ChannelLimits& limits) {
  const auto start = Clock::now();
  auto fd = open_stream(path, kind, port, deadline, limits);
  if (!fd.ok()) return fd.error();
  return greet(fd.value(), start, deadline, limits, nullptr);
}

Result<std::unique_ptr<GuestChannel>> GuestChannel::connect_and_reseed(
    const std::string& path, ChannelKind kind, uint32_t port, std::string_view entropy,
    const std::string& vm_id, int64_t unix_time_ns, Deadline deadline, Identity* identity,
    const ChannelLimits& limits, const GuestNetwork* network) {
  const auto start = Clock::now();
  auto fd = open_stream(path, kind, port, deadline, limits);
  if (!fd.ok()) return fd.error();
  // Greeting and Reseed in one go: the agent answers Hello, the pong, then Reseeded, in order,
  // without waiting for the host in between (a just-restored guest is slow to wake up).
  auto ch = greet(fd.value(), start, deadline, limits, [&](GuestChannel& c) {
    return c.send_reseed(entropy, vm_id, unix_time_ns, deadline, network);
  });
  if (!ch.ok()) return ch.error();
  auto id = ch.value()->await_reseeded(vm_id, deadline);
  if (!id.ok()) return id.error();
  if (identity) *identity = id.value();
  return ch;
}

Result<std::unique_ptr<GuestChannel>> GuestChannel::adopt(int fd, Deadline deadline,
                                                          const ChannelLimits& limits) {
  if (fd < 0) return err(ChannelErrc::bad_argument, "adopt() needs an open descriptor");
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
    return err(ChannelErrc::io, errno_text("fcntl(O_NONBLOCK)", errno));
  }
  return greet(fd, Clock::now(), deadline, limits, nullptr);
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
