// channel_util.h — small I/O helpers shared by guest_channel.cc and guest_connect.cc (internal
// to the host side of the guest channel; not a public header).
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <string_view>

#include "guest/host/guest_channel.h"

namespace nv::guest::channel_util {

using Clock = std::chrono::steady_clock;

inline ChannelError err(ChannelErrc c, std::string msg) { return ChannelError{c, std::move(msg)}; }

inline std::string errno_text(const std::string& call, int e) {
  return call + " failed: " + std::strerror(e) + " (errno " + std::to_string(e) + ")";
}

// Milliseconds left until the deadline, for poll(); 0 when it has passed.
inline int ms_left(Deadline deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return 0;
  // Round up so poll() does not wake a hair before the deadline and spin.
  return static_cast<int>(std::min<long long>(left.count() + 1, 24LL * 3600 * 1000));
}

// Waits until fd is ready for `events` or the deadline passes. Returns revents, 0 on timeout,
// -1 on a poll() failure (errno set).
inline int wait_fd(int fd, short events, Deadline deadline) {
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
inline ChannelError write_all(int fd, std::string_view data, Deadline deadline) {
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

}  // namespace nv::guest::channel_util
