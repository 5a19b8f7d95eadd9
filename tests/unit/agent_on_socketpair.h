// agent_on_socketpair.h — a guest agent Session served in a thread on one end of a socketpair,
// driven by the real host GuestChannel on the other (guest_agent_test, guest_sandbox_test).
#pragma once

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "guest/agent/session.h"
#include "guest/host/guest_channel.h"

namespace nv::guest {

class FakeOps : public agent::SystemOps {
 public:
  std::string add_entropy(std::string_view b) override {
    entropy.assign(b);
    return "";
  }
  std::string set_clock(int64_t ns) override {
    clock_ns = ns;
    return "";
  }
  std::string set_identity(const std::string& id) override {
    vm_id = id;
    return "";
  }
  std::string boot_id() override { return "fake-boot"; }
  uint64_t uptime_ms() override { return 1234; }
  std::string entropy, vm_id;
  int64_t clock_ns = 0;
};

// How serve_session() ended: the peer closed the stream, the session dropped it (a protocol
// error), or the host asked the agent to power off.
enum class Served { closed, dropped, shutdown };

// Serves one agent Session on `fd` until one of the above, like the agent's loop does for a vsock
// connection (also sandbox_service_test's fake VMs).
inline Served serve_session(const agent::AgentConfig& cfg, agent::SystemOps& ops, int fd) {
  agent::Session s(cfg, ops, [fd](std::string_view b) {
    while (!b.empty()) {
      ssize_t w = ::send(fd, b.data(), b.size(), MSG_NOSIGNAL);
      if (w <= 0) return false;
      b.remove_prefix(static_cast<size_t>(w));
    }
    return true;
  });
  s.on_connect();
  char buf[65536];
  for (;;) {
    ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r <= 0) return Served::closed;
    if (!s.on_bytes(buf, static_cast<size_t>(r))) return Served::dropped;
    if (s.shutdown_requested()) return Served::shutdown;
  }
}

// Serves one Session on `fd` in a thread, like the agent's loop does for a vsock connection.
class AgentOnSocketpair : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/nv-agent-XXXXXX";
    ASSERT_TRUE(::mkdtemp(tmpl));
    dir_ = tmpl;
    cfg_.languages = agent::default_languages();
    cfg_.writable_roots = {dir_};
    cfg_.default_cwd = dir_;
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    host_fd_ = sv[0];
    agent_fd_ = sv[1];
    thread_ = std::thread([this] { serve(); });
  }
  void TearDown() override {
    channel_.reset();
    if (host_fd_ >= 0) ::close(host_fd_);
    ::shutdown(agent_fd_, SHUT_RDWR);
    thread_.join();
    ::close(agent_fd_);
    std::system(("rm -rf " + dir_).c_str());
  }
  void serve() {
    switch (serve_session(cfg_, ops_, agent_fd_)) {
      case Served::dropped:
        dropped_ = true;
        break;
      case Served::shutdown:
        shutdown_seen_ = true;
        ::shutdown(agent_fd_, SHUT_RDWR);  // what power-off looks like from the host
        break;
      case Served::closed:
        break;
    }
  }
  GuestChannel& connect() {
    auto r =
        GuestChannel::adopt(host_fd_, std::chrono::steady_clock::now() + std::chrono::seconds(5));
    host_fd_ = -1;
    EXPECT_TRUE(r.ok()) << r.error().message;
    channel_ = std::move(r.value());
    return *channel_;
  }
  void raw_send(const std::string& bytes) {
    ASSERT_EQ(::send(host_fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }

  std::string dir_;
  agent::AgentConfig cfg_;
  FakeOps ops_;
  int host_fd_ = -1, agent_fd_ = -1;
  std::thread thread_;
  std::unique_ptr<GuestChannel> channel_;
  std::atomic<bool> dropped_{false}, shutdown_seen_{false};
};

}  // namespace nv::guest
