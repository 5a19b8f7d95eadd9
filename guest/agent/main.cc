// main.cc — nv-guest-agent: PID 1 of a NeuroVisor microVM.
//
// Start-up (in order): mount the pseudo filesystems and scratch (system.cc), block SIGCHLD into
// a signalfd, find the virtio-serial port named `nv.agent`, listen on AF_VSOCK port 6000. Then
// one epoll loop serves every host connection with a Session, reaps orphans, and powers off on
// Shutdown. Requests are served one at a time (an exec runs to completion before the next frame
// is read), which is all the host protocol asks for.
//
// virtio-serial facts this relies on (drivers/char/virtio_console.c): one open at a time; while
// no host client is connected, poll() reports POLLHUP (and POLLIN, read returns 0) and writes
// would block; a host connect or disconnect wakes the port's wait queue. So the port is watched
// edge-triggered (EPOLLET): one event per state change instead of a busy POLLHUP loop, and on
// each event the agent re-reads the state with a zero-timeout poll().
#include <dirent.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>

#include "guest/agent/inference_bridge.h"
#include "guest/agent/session.h"
#include "guest/agent/system.h"

namespace nv::guest::agent {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string port_name = "nv.agent";  // virtio-serial port name (QEMU: virtserialport name=)
  unsigned vsock_port = 6000;          // AF_VSOCK listen port (Firecracker, vhost-vsock)
  bool init = true;                    // mount filesystems etc. (automatic when PID 1)
  // Programs run as the image's unprivileged `nv` user (created by guest/image/build-rootfs.sh).
  int run_uid = 1000;
  int run_gid = 1000;
};

std::string errno_text(const std::string& call, int err) {
  return call + " failed: " + std::strerror(err) + " (errno " + std::to_string(err) + ")";
}

// Writes all of `data` to a non-blocking fd, waiting for POLLOUT up to `limit` in all. A host
// that stops reading for that long is treated as gone.
bool write_all(int fd, std::string_view data, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  while (!data.empty()) {
    ssize_t w = ::write(fd, data.data(), data.size());
    if (w > 0) {
      data.remove_prefix(static_cast<size_t>(w));
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno != EAGAIN) {
      log_line("warn", errno_text("write(channel)", errno));
      return false;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      log_line("warn", "host did not read for " + std::to_string(limit.count()) + " ms");
      return false;
    }
    pollfd p{fd, POLLOUT, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno != EINTR) return false;
    // POLLHUP on a virtio port: the host went away; the write would block forever.
    if (r > 0 && (p.revents & POLLHUP) && !(p.revents & POLLOUT)) return false;
  }
  return true;
}

// /sys/class/virtio-ports/vportNpM/name holds the port's name; the device is /dev/vportNpM.
std::string find_virtio_port(const std::string& name) {
  DIR* d = ::opendir("/sys/class/virtio-ports");
  if (!d) return "";
  std::string found;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string base = std::string("/sys/class/virtio-ports/") + e->d_name;
    int fd = ::open((base + "/name").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    char buf[128] = {0};
    ssize_t r = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    std::string n(buf, r > 0 ? static_cast<size_t>(r) : 0);
    while (!n.empty() && n.back() == '\n') n.pop_back();
    if (n == name) {
      found = std::string("/dev/") + e->d_name;
      break;
    }
  }
  ::closedir(d);
  return found;
}

// Early bytes kept for a host whose connection has not shown yet: one host frame and a read.
constexpr size_t kMaxPending = kDefaultHostFrameCap + 64 * 1024;

// True when the virtio_console driver has a device (virtio-serial) bound: a port may follow.
bool virtio_console_bound() {
  DIR* d = ::opendir("/sys/bus/virtio/drivers/virtio_console");
  if (!d) return false;
  bool any = false;
  while (dirent* e = ::readdir(d)) {
    if (std::strncmp(e->d_name, "virtio", 6) == 0) any = true;
  }
  ::closedir(d);
  return any;
}

struct Conn {
  int fd = -1;
  bool virtio = false;
  bool connected = false;  // virtio: a host client is attached to the port
  bool dropped = false;    // input is ignored until the host reconnects (virtio) / closed (vsock)
  std::string pending;     // virtio: bytes read before the connection showed (see service_virtio)
  std::unique_ptr<Session> session;
};

class Agent {
 public:
  Agent(const Options& opt, AgentConfig cfg) : opt_(opt), cfg_(std::move(cfg)) {}

  int run() {
    ep_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) {
      log_line("error", errno_text("epoll_create1", errno));
      return 1;
    }
    setup_signals();
    open_vsock_listener();  // first: Firecracker has no virtio-serial to wait for
    open_virtio_port();
    if (virtio_fd_ < 0 && vsock_listen_ < 0) {
      log_line("error", "no channel: neither virtio-serial port '" + opt_.port_name +
                            "' nor AF_VSOCK; nothing to serve");
    }
    log_line("info", std::string("ready: ") + kAgentVersion);
    epoll_event evs[16];
    for (;;) {
      int n = ::epoll_wait(ep_, evs, 16, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        log_line("error", errno_text("epoll_wait", errno));
        return 1;
      }
      for (int i = 0; i < n; ++i) {
        int fd = evs[i].data.fd;
        if (fd == sigfd_) {
          reap();
        } else if (fd == vsock_listen_) {
          accept_vsock();
        } else if (fd == virtio_fd_) {
          service_virtio();
        } else {
          service_vsock(fd, evs[i].events);
        }
        if (shutdown_) {
          power_off();
        }
      }
    }
  }

 private:
  void setup_signals() {
    ::signal(SIGPIPE, SIG_IGN);  // a vanished peer shows up as EPIPE, not a dead agent
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    if (::sigprocmask(SIG_BLOCK, &set, nullptr) < 0) {
      log_line("error", errno_text("sigprocmask(SIGCHLD)", errno));
    }
    sigfd_ = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sigfd_ < 0) {
      log_line("error", errno_text("signalfd(SIGCHLD)", errno));
      return;
    }
    add(sigfd_, EPOLLIN);
  }

  void add(int fd, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    if (::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) < 0) {
      log_line("error", errno_text("epoll_ctl(ADD)", errno));
    }
  }

  // Orphans re-parented to PID 1 (background jobs of programs) are collected here; the exec
  // core collects its own child by pid before this runs.
  void reap() {
    signalfd_siginfo si;
    while (::read(sigfd_, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {}
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {}
  }

  std::unique_ptr<Session> make_session(int fd) {
    return std::make_unique<Session>(cfg_, ops_, [fd](std::string_view bytes) {
      return write_all(fd, bytes, std::chrono::seconds(10));
    });
  }

  void open_virtio_port() {
    // Ports and their names arrive from the device after the driver probed (control messages,
    // handled asynchronously): when a virtio-serial device is bound, give them a moment at boot.
    std::string dev;
    const bool have_device = virtio_console_bound();
    const auto until = Clock::now() + std::chrono::seconds(5);
    while ((dev = find_virtio_port(opt_.port_name)).empty() && have_device &&
           Clock::now() < until) {
      ::usleep(10000);
    }
    if (dev.empty()) {
      log_line("info", "no virtio-serial port named '" + opt_.port_name + "'");
      return;
    }
    // The device node may lag its sysfs entry by a moment on devtmpfs.
    for (int i = 0; i < 200 && virtio_fd_ < 0; ++i) {
      virtio_fd_ = ::open(dev.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
      if (virtio_fd_ < 0 && errno == ENOENT)
        ::usleep(10000);
      else
        break;
    }
    if (virtio_fd_ < 0) {
      log_line("error", errno_text("open(" + dev + ")", errno));
      return;
    }
    virtio_.fd = virtio_fd_;
    virtio_.virtio = true;
    virtio_.session = make_session(virtio_fd_);
    add(virtio_fd_, EPOLLIN | EPOLLOUT | EPOLLET);
    log_line("info", "serving on virtio-serial " + dev);
    service_virtio();  // a host may be connected already
  }

  // Data and connection state travel on different virtqueues, so the bytes of a host that just
  // connected can be readable before the port reports the connection. Such bytes are kept
  // (`pending`) and fed to the session once the connection shows, after its Hello.
  void service_virtio() {
    Conn& c = virtio_;
    char buf[64 * 1024];
    for (;;) {
      pollfd p{c.fd, POLLIN, 0};
      ::poll(&p, 1, 0);
      const bool host_here = !(p.revents & POLLHUP);
      if (!host_here && c.connected) {
        log_line("info", "host disconnected from virtio-serial");
        c.connected = false;
        c.dropped = false;
      }
      if (host_here && !c.connected) {
        c.connected = true;
        c.dropped = false;
        log_line("info", "host connected on virtio-serial");
        c.session->on_connect();  // Hello, every time a host attaches
        if (!c.pending.empty()) {
          std::string early;
          early.swap(c.pending);
          if (!c.session->on_bytes(early.data(), early.size())) c.dropped = true;
        }
      }
      ssize_t r = ::read(c.fd, buf, sizeof buf);
      if (r > 0) {
        if (!c.connected) {
          if (c.pending.size() + static_cast<size_t>(r) > kMaxPending) {
            log_line("warn", "dropping early bytes beyond " + std::to_string(kMaxPending));
            c.pending.clear();
          }
          c.pending.append(buf, static_cast<size_t>(r));
          continue;
        }
        if (!c.dropped && !c.session->on_bytes(buf, static_cast<size_t>(r))) c.dropped = true;
        if (c.session->shutdown_requested()) shutdown_ = true;
        if (shutdown_) return;
        continue;
      }
      if (r == 0) {
        // No host client and nothing buffered: wait (edge-triggered) for the next connect.
        if (c.connected) log_line("info", "host disconnected from virtio-serial");
        c.connected = false;
        c.dropped = false;
        return;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN) log_line("warn", errno_text("read(virtio port)", errno));
      return;
    }
  }

  void open_vsock_listener() {
    int s = ::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0) {
      log_line("info", errno_text("socket(AF_VSOCK)", errno) + "; vsock channel off");
      return;
    }
    sockaddr_vm addr{};
    addr.svm_family = AF_VSOCK;
    addr.svm_cid = VMADDR_CID_ANY;
    addr.svm_port = opt_.vsock_port;
    if (::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 || ::listen(s, 4) < 0) {
      log_line("info",
               errno_text("bind/listen(AF_VSOCK:" + std::to_string(opt_.vsock_port) + ")", errno) +
                   "; vsock channel off");
      ::close(s);
      return;
    }
    vsock_listen_ = s;
    add(s, EPOLLIN);
    log_line("info", "listening on vsock port " + std::to_string(opt_.vsock_port));
  }

  void accept_vsock() {
    for (;;) {
      int fd = ::accept4(vsock_listen_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR) log_line("warn", errno_text("accept4", errno));
        return;
      }
      auto& c = vsock_[fd];
      c.fd = fd;
      c.connected = true;
      c.session = make_session(fd);
      add(fd, EPOLLIN);
      c.session->on_connect();
    }
  }

  void service_vsock(int fd, uint32_t events) {
    auto it = vsock_.find(fd);
    if (it == vsock_.end()) return;
    Conn& c = it->second;
    char buf[64 * 1024];
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r > 0) {
      if (!c.session->on_bytes(buf, static_cast<size_t>(r))) r = 0;  // drop it
      if (c.session->shutdown_requested()) shutdown_ = true;
    }
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR) || (events & EPOLLERR)) {
      ::epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
      ::close(fd);
      vsock_.erase(it);
    }
  }

  Options opt_;
  AgentConfig cfg_;
  LinuxSystemOps ops_;
  int ep_ = -1;
  int sigfd_ = -1;
  int virtio_fd_ = -1;
  int vsock_listen_ = -1;
  Conn virtio_;
  std::map<int, Conn> vsock_;
  bool shutdown_ = false;
};

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--port-name NAME] [--vsock-port N] [--no-init] [--uid N --gid N]\n"
               "  --port-name NAME  virtio-serial port to serve (default nv.agent)\n"
               "  --vsock-port N    AF_VSOCK port to listen on (default 6000)\n"
               "  --no-init         do not mount filesystems (default: mount when PID 1)\n"
               "  --uid N, --gid N  run programs as this user (default 1000:1000; -1 = as is)\n",
               argv0);
  return 2;
}

}  // namespace
}  // namespace nv::guest::agent

int main(int argc, char** argv) {
  using namespace nv::guest::agent;
  if (argc == 4 && std::string(argv[1]) == "--inference-bridge") {
    return run_inference_bridge(argv[2], std::atoi(argv[3]));
  }
  Options opt;
  opt.init = ::getpid() == 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    const char* v = nullptr;
    if (a == "--port-name" && (v = value())) {
      opt.port_name = v;
    } else if (a == "--vsock-port" && (v = value())) {
      opt.vsock_port = static_cast<unsigned>(std::stoul(v));
    } else if (a == "--no-init") {
      opt.init = false;
    } else if (a == "--uid" && (v = value())) {
      opt.run_uid = std::stoi(v);
    } else if (a == "--gid" && (v = value())) {
      opt.run_gid = std::stoi(v);
    } else if (::getpid() == 1) {
      // The kernel passes unknown command-line words to init; ignore them rather than die.
      continue;
    } else {
      return usage(argv[0]);
    }
  }
  AgentConfig cfg;
  if (opt.init) {
    init_system();
    mount_home(cfg.default_cwd.c_str(), opt.run_uid, opt.run_gid);
    cfg.reap_before_listing = true;  // PID 1: every orphan is ours to collect
  }
  cfg.languages = default_languages();
  cfg.run_uid = opt.run_uid;
  cfg.run_gid = opt.run_gid;
  if (opt.init) {
    // Out of memory, the kernel kills a program (1000: first choice), never the agent (-1000).
    cfg.program_oom_score_adj = 1000;
    protect_from_oom();
  }
  cfg.start_inference = [] {
    char self[4096];
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return errno_text("readlink(/proc/self/exe)", errno);
    return start_inference_bridge(std::string(self, static_cast<size_t>(n)),
                                  find_virtio_port("nv.inference"));
  };
  cfg.stop_inference = [] { stop_inference_bridge(); };
  Agent agent(opt, cfg);
  // PID 1 must not return: if the loop fails, end the VM rather than panic the kernel.
  try {
    agent.run();
  } catch (...) {
    log_line("error", "agent loop failed");
  }
  if (::getpid() == 1) power_off();
  return 1;
}
