// guest_channel — fuzzes the host's side of the guest protocol (guest/host/guest_channel.cc):
// whatever a hostile guest agent sends.
//
// Input: the agent → host byte stream (length-prefixed frames, guest/protocol/frame.h). It is
// written into one end of a socketpair, which is then shut for writing; the host adopts the
// other end (greeting: Hello + pong 0), then runs exec, get_file and ping against the rest of
// the stream. Every call ends at the stream's end (no waiting), with a value or a ChannelError.
// Checked: no crash, leak or UB, and no call outlives its deadline.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "guest/host/guest_channel.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace nv::guest;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  ::fcntl(sv[1], F_SETFL, O_NONBLOCK);
  size_t off = 0;  // inputs past the socket buffer are cut (the CI runs use -max_len=65536)
  while (off < size) {
    ssize_t w = ::write(sv[1], data + off, size - off);
    if (w <= 0) break;
    off += static_cast<size_t>(w);
  }
  ::shutdown(sv[1], SHUT_WR);
  const auto start = std::chrono::steady_clock::now();
  const Deadline deadline = start + std::chrono::seconds(5);
  ChannelLimits limits;
  limits.max_frame_bytes = 64u << 10;
  auto ch = GuestChannel::adopt(sv[0], deadline, limits);
  if (ch.ok()) {
    ExecSpec spec;
    spec.language = nv::schema::Language::PYTHON;
    spec.code = "print(1)";
    spec.output_cap_bytes = 4096;
    (void)(*ch)->exec(
        spec, [](nv::schema::Stream, std::string_view) {}, deadline);
    (void)(*ch)->get_file("/tmp/out.txt", deadline);
    (void)(*ch)->ping(deadline);
  }
  ::close(sv[1]);
  if (std::chrono::steady_clock::now() > deadline) std::abort();
  return 0;
}
