// guest_connect.cc — opening a guest channel (guest_channel.h): the socket (a virtio-serial
// chardev, or Firecracker's hybrid vsock with its CONNECT handshake), retried while the VMM
// starts, then the greeting (and a reseed pipelined behind it).
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "guest/host/channel_util.h"
#include "guest/host/guest_channel.h"

namespace nv::guest {

using namespace channel_util;

namespace {

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

}  // namespace nv::guest
