// dns_responder.cc — the per-VM DNS responders' socket loop (dns_responder.h).
#include "dns_responder.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common/log.h"

namespace nv::vm::dns {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxTcpPerVm = 4;                   // connections a guest may hold open
constexpr auto kTcpIdle = std::chrono::seconds(10);  // then the connection is closed
constexpr size_t kTcpOutCap = 256 * 1024;  // unread answers before the connection is closed

// One TCP connection from a guest (RFC 7766: 2-octet length, then the message; pipelining
// allowed). Loop thread only.
struct Responder::TcpConn {
  UniqueFd fd;
  std::string in;   // bytes read, not yet a whole message
  std::string out;  // replies not yet written
  Clock::time_point idle_deadline;
  bool closed = false;
};

// Where a reply goes: a UDP peer, or a TCP connection (when `tcp` is set).
struct Responder::ReplyTo {
  sockaddr_storage from{};
  socklen_t from_len = 0;
  std::shared_ptr<TcpConn> tcp;
};

struct Responder::Vm {
  VmDnsConfig config;
  AllowedNames names;
  UniqueFd fd;                                  // UDP
  UniqueFd tcp;                                 // TCP listener on the same address and port
  std::vector<std::shared_ptr<TcpConn>> conns;  // loop thread only
  std::atomic<bool> removed{false};
  // Counters: written by the loop thread, read by stats().
  std::atomic<uint64_t> queries{0}, forwarded{0}, answered{0}, addresses_allowed{0}, denied{0},
      errors{0}, servfail{0};
  // Loop thread only.
  size_t pending = 0;
  uint64_t unreported = 0;  // denials not yet published
  std::string last_denied;
  Clock::time_point last_event{};
};

struct Responder::Pending {
  std::shared_ptr<Vm> vm;
  Question question;
  ReplyTo to;
  Clock::time_point deadline;
};

std::string Endpoint::text() const {
  char ip[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    ::inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    return std::string(ip) + ":" + std::to_string(ntohs(a->sin_port));
  }
  const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
  ::inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
  return "[" + std::string(ip) + "]:" + std::to_string(ntohs(a->sin6_port));
}

std::optional<Endpoint> parse_endpoint(const std::string& text, uint16_t default_port) {
  std::string host = text;
  std::string port;
  if (!text.empty() && text[0] == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    if (close + 1 < text.size()) {
      if (text[close + 1] != ':') return std::nullopt;
      port = text.substr(close + 2);
      if (port.empty()) return std::nullopt;
    }
  } else if (std::count(text.begin(), text.end(), ':') == 1) {
    host = text.substr(0, text.find(':'));
    port = text.substr(text.find(':') + 1);
    if (port.empty()) return std::nullopt;
  }
  uint16_t p = default_port;
  if (!port.empty()) {
    if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) {
      return std::nullopt;
    }
    const unsigned long v = std::stoul(port);
    if (v > 65535) return std::nullopt;
    p = static_cast<uint16_t>(v);
  }
  Endpoint e;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&e.addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&e.addr);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(p);
    e.len = sizeof(sockaddr_in);
  } else if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(p);
    e.len = sizeof(sockaddr_in6);
  } else {
    return std::nullopt;
  }
  return e;
}

namespace {

struct Sockets {
  UniqueFd udp, tcp;
};

// Sockets bound to `at` for `type`; port 0 = what the kernel picks (then `at` gets it).
Result<UniqueFd> bound_socket(int type, Endpoint& at) {
  UniqueFd fd(::socket(at.addr.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return sys_error(type == SOCK_DGRAM ? "socket(UDP)" : "socket(TCP)", errno);
  // The gateway address may be configured a moment after the responder starts.
  const int one = 1;
  ::setsockopt(fd.get(), SOL_IP, IP_FREEBIND, &one, sizeof one);
  if (type == SOCK_STREAM) ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&at.addr), at.len) != 0) {
    return sys_error("bind(" + at.text() + (type == SOCK_DGRAM ? "/udp)" : "/tcp)"), errno);
  }
  at.len = sizeof at.addr;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&at.addr), &at.len);
  if (type == SOCK_STREAM && ::listen(fd.get(), 16) != 0) return sys_error("listen", errno);
  return fd;
}

// A UDP socket and a TCP listener on `at` (the TCP one on the UDP one's port), non-blocking,
// made inside the network namespace `netns_fd` (or `netns_path`) when given: setns(2) in a
// short-lived thread (the namespace is per thread; a socket keeps the one it was made in).
Result<Sockets> bound_sockets(const std::string& netns_path, int netns_fd, Endpoint at) {
  Result<Sockets> result = make_error(ErrorCode::INTERNAL, "not run");
  const bool enter = netns_fd >= 0 || !netns_path.empty();
  auto make = [&] {
    if (enter) {
      UniqueFd opened;
      if (netns_fd < 0) {
        opened.reset(::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!opened.valid()) {
          result = sys_error("open(" + netns_path + ")", errno);
          return;
        }
      }
      if (::setns(netns_fd >= 0 ? netns_fd : opened.get(), CLONE_NEWNET) != 0) {
        result = sys_error("setns(" + netns_path + ", CLONE_NEWNET)", errno);
        return;
      }
    }
    auto udp = bound_socket(SOCK_DGRAM, at);
    if (!udp) {
      result = udp.error();
      return;
    }
    auto tcp = bound_socket(SOCK_STREAM, at);
    if (!tcp) {
      result = tcp.error();
      return;
    }
    result = Sockets{std::move(*udp), std::move(*tcp)};
  };
  if (!enter) {
    make();
  } else {
    std::thread(make).join();
  }
  return result;
}

}  // namespace

Result<std::unique_ptr<Responder>> Responder::start(ResponderOptions options, DenialSink denials) {
  if (options.upstream.len == 0) return make_error(ErrorCode::BAD_REQUEST, "no upstream");
  UniqueFd up(
      ::socket(options.upstream.addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!up.valid()) return sys_error("socket(upstream)", errno);
  // connect(2): the kernel then delivers only datagrams from the upstream's address and port.
  if (::connect(up.get(), reinterpret_cast<const sockaddr*>(&options.upstream.addr),
                options.upstream.len) != 0) {
    return sys_error("connect(" + options.upstream.text() + ")", errno);
  }
  UniqueFd wake(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake.valid()) return sys_error("eventfd", errno);
  std::unique_ptr<Responder> r(
      new Responder(std::move(options), std::move(denials), std::move(up), std::move(wake)));
  r->thread_ = std::thread([p = r.get()] { p->loop(); });
  return r;
}

Responder::Responder(ResponderOptions options, DenialSink denials, UniqueFd upstream, UniqueFd wake)
    : options_(std::move(options)),
      denials_(std::move(denials)),
      upstream_(std::move(upstream)),
      wake_(std::move(wake)) {}

Responder::~Responder() {
  stop_ = true;
  wake();
  if (thread_.joinable()) thread_.join();
}

void Responder::wake() {
  const uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_.get(), &one, sizeof one);
}

Status Responder::add_vm(VmDnsConfig config) {
  std::string why;
  auto names = AllowedNames::parse(config.allow, &why);
  if (!names) return make_error(ErrorCode::BAD_REQUEST, why);
  {
    std::lock_guard lock(mu_);
    if (vms_.count(config.vm_id)) {
      return make_error(ErrorCode::INTERNAL, "DNS responder already serves " + config.vm_id);
    }
  }
  auto sockets = bound_sockets(config.netns_path, config.netns_fd, config.listen);
  if (!sockets) return sockets.error();
  auto vm = std::make_shared<Vm>();
  vm->names = std::move(*names);
  vm->fd = std::move(sockets->udp);
  vm->tcp = std::move(sockets->tcp);
  vm->config = std::move(config);
  {
    std::lock_guard lock(mu_);
    if (!vms_.emplace(vm->config.vm_id, vm).second) {
      return make_error(ErrorCode::INTERNAL, "DNS responder already serves " + vm->config.vm_id);
    }
    ++generation_;
  }
  wake();
  return {};
}

void Responder::remove_vm(const std::string& vm_id) {
  std::shared_ptr<Vm> vm;
  {
    std::lock_guard lock(mu_);
    auto it = vms_.find(vm_id);
    if (it == vms_.end()) return;
    vm = std::move(it->second);
    vms_.erase(it);
    ++generation_;
  }
  vm->removed = true;  // queries in flight are dropped; the loop lets go of the socket
  wake();
}

std::optional<VmDnsStats> Responder::stats(const std::string& vm_id) const {
  std::lock_guard lock(mu_);
  auto it = vms_.find(vm_id);
  if (it == vms_.end()) return std::nullopt;
  const Vm& v = *it->second;
  return VmDnsStats{v.queries, v.forwarded, v.answered, v.addresses_allowed,
                    v.denied,  v.errors,    v.servfail};
}

std::optional<Endpoint> Responder::local_endpoint(const std::string& vm_id) const {
  std::lock_guard lock(mu_);
  auto it = vms_.find(vm_id);
  if (it == vms_.end()) return std::nullopt;
  Endpoint e;
  e.len = sizeof e.addr;
  if (::getsockname(it->second->fd.get(), reinterpret_cast<sockaddr*>(&e.addr), &e.len) != 0) {
    return std::nullopt;
  }
  return e;
}

size_t Responder::vm_count() const {
  std::lock_guard lock(mu_);
  return vms_.size();
}

void Responder::loop() {
  std::vector<std::shared_ptr<Vm>> vms;
  uint64_t seen = ~uint64_t{0};
  std::vector<pollfd> fds;
  // What each pollfd after the first two is: a VM's UDP socket, its listener, or a connection.
  struct Target {
    std::shared_ptr<Vm> vm;
    int kind;  // 0 udp, 1 listener, 2 connection
    std::shared_ptr<TcpConn> conn;
  };
  std::vector<Target> targets;
  while (!stop_) {
    {
      std::lock_guard lock(mu_);
      if (seen != generation_) {
        seen = generation_;
        vms.clear();
        for (auto& [id, vm] : vms_) vms.push_back(vm);
      }
    }
    fds.assign({{wake_.get(), POLLIN, 0}, {upstream_.get(), POLLIN, 0}});
    targets.clear();
    bool timed = !pending_.empty();
    for (const auto& vm : vms) {
      fds.push_back({vm->fd.get(), POLLIN, 0});
      targets.push_back({vm, 0, nullptr});
      fds.push_back({vm->tcp.get(), POLLIN, 0});
      targets.push_back({vm, 1, nullptr});
      for (const auto& c : vm->conns) {
        fds.push_back(
            {c->fd.get(), static_cast<short>(POLLIN | (c->out.empty() ? 0 : POLLOUT)), 0});
        targets.push_back({vm, 2, c});
      }
      timed = timed || vm->unreported > 0 || !vm->conns.empty();
    }
    // Wake for upstream deadlines, denial flushes and idle connections (every 100 ms while any
    // is outstanding), else only for sockets.
    const int n = ::poll(fds.data(), fds.size(), timed ? 100 : -1);
    if (n < 0 && errno != EINTR) {
      log::syscall_error("poll", errno, {{"component", "dns"}});
      return;
    }
    if (fds[0].revents & POLLIN) {
      uint64_t v = 0;
      [[maybe_unused]] auto r = ::read(wake_.get(), &v, sizeof v);
    }
    if (fds[1].revents & POLLIN) read_upstream();
    for (size_t i = 0; i < targets.size(); ++i) {
      const Target& t = targets[i];
      const short ev = fds[i + 2].revents;
      if (ev == 0 || t.vm->removed) continue;
      if (t.kind == 0) read_guest(t.vm);
      if (t.kind == 1) accept_tcp(*t.vm);
      if (t.kind == 2) serve_tcp(t.vm, t.conn, ev);
    }
    const auto now = Clock::now();
    for (const auto& vm : vms) {
      for (auto& c : vm->conns) {
        if (now > c->idle_deadline) c->closed = true;
      }
      std::erase_if(vm->conns, [](const auto& c) { return c->closed; });
    }
    expire_and_flush(now);
  }
}

void Responder::reply(Vm& vm, const std::string& bytes, const ReplyTo& to) {
  if (bytes.empty() || vm.removed) return;
  if (!to.tcp) {
    // Non-blocking: a full socket buffer drops the answer (the guest's resolver retries).
    ::sendto(vm.fd.get(), bytes.data(), bytes.size(), MSG_DONTWAIT,
             reinterpret_cast<const sockaddr*>(&to.from), to.from_len);
    return;
  }
  TcpConn& c = *to.tcp;
  if (c.closed) return;
  if (c.out.size() + bytes.size() > kTcpOutCap) {
    c.closed = true;  // the guest does not read its answers
    return;
  }
  c.out.push_back(static_cast<char>(bytes.size() >> 8));
  c.out.push_back(static_cast<char>(bytes.size() & 0xff));
  c.out += bytes;
  const ssize_t w = ::send(c.fd.get(), c.out.data(), c.out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (w > 0) c.out.erase(0, static_cast<size_t>(w));
  if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) c.closed = true;
}

void Responder::accept_tcp(Vm& vm) {
  for (int round = 0; round < 4; ++round) {
    UniqueFd fd(::accept4(vm.tcp.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd.valid()) return;
    if (vm.conns.size() >= kMaxTcpPerVm) {
      vm.errors++;
      continue;  // closed at once: a guest holds at most kMaxTcpPerVm connections
    }
    auto c = std::make_shared<TcpConn>();
    c->fd = std::move(fd);
    c->idle_deadline = Clock::now() + kTcpIdle;
    vm.conns.push_back(std::move(c));
  }
}

void Responder::serve_tcp(const std::shared_ptr<Vm>& vm, const std::shared_ptr<TcpConn>& c,
                          short events) {
  if (events & POLLOUT && !c->out.empty()) {
    const ssize_t w =
        ::send(c->fd.get(), c->out.data(), c->out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w > 0) c->out.erase(0, static_cast<size_t>(w));
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) c->closed = true;
  }
  if (!(events & (POLLIN | POLLHUP | POLLERR))) return;
  char buf[4096];
  const ssize_t n = ::recv(c->fd.get(), buf, sizeof buf, MSG_DONTWAIT);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
    c->closed = true;
    return;
  }
  if (n < 0) return;
  c->in.append(buf, static_cast<size_t>(n));
  c->idle_deadline = Clock::now() + kTcpIdle;
  while (c->in.size() >= 2 && !c->closed) {
    const size_t len = (static_cast<uint8_t>(c->in[0]) << 8) | static_cast<uint8_t>(c->in[1]);
    if (len > kMaxQueryBytes) {
      vm->errors++;
      c->closed = true;  // an oversized query: the connection is closed, nothing answered
      return;
    }
    if (c->in.size() < 2 + len) return;
    const std::string msg = c->in.substr(2, len);
    c->in.erase(0, 2 + len);
    handle_query(vm, msg, ReplyTo{{}, 0, c});
  }
}

void Responder::note_denial(Vm& vm, const std::string& name, Clock::time_point now) {
  vm.denied++;
  vm.unreported++;
  vm.last_denied = name;
  if (vm.last_event != Clock::time_point{} && now - vm.last_event < options_.denial_interval) {
    return;  // folded into the next event
  }
  vm.last_event = now;
  if (denials_) {
    denials_({vm.config.sandbox_id, vm.config.vm_id, vm.config.trace_id, name, kDenyRule,
              vm.unreported});
  }
  vm.unreported = 0;
}

void Responder::read_guest(const std::shared_ptr<Vm>& vm) {
  char buf[kMaxQueryBytes + 1];
  for (int round = 0; round < 16; ++round) {
    ReplyTo to;
    to.from_len = sizeof to.from;
    const ssize_t n = ::recvfrom(vm->fd.get(), buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC,
                                 reinterpret_cast<sockaddr*>(&to.from), &to.from_len);
    if (n < 0) return;  // EAGAIN: drained
    handle_query(vm, std::string_view(buf, std::min<size_t>(static_cast<size_t>(n), sizeof buf)),
                 std::move(to));
  }
}

void Responder::handle_query(const std::shared_ptr<Vm>& vm, std::string_view msg, ReplyTo to) {
  vm->queries++;
  QueryDecision d = decide_query(msg, vm->names);
  if (to.tcp) d.question.reply_limit = 65535;  // TCP: no UDP size limit, never truncated
  const auto now = Clock::now();
  switch (d.verdict) {
    case QueryDecision::Verdict::drop:
      vm->errors++;
      return;
    case QueryDecision::Verdict::answer:
      if (d.denied) {
        note_denial(*vm, d.question.text, now);
      } else if (d.rcode != Rcode::noerror) {
        vm->errors++;
      }
      reply(*vm, d.reply, to);
      return;
    case QueryDecision::Verdict::forward:
      break;
  }
  if (vm->pending >= options_.max_pending_per_vm || pending_.size() >= options_.max_pending) {
    vm->servfail++;
    reply(*vm, make_reply(d.question, Rcode::servfail), to);
    return;
  }
  uint16_t id = 0;
  do {
    const std::string r = random_bytes(2);
    id = static_cast<uint16_t>((static_cast<uint8_t>(r[0]) << 8) | static_cast<uint8_t>(r[1]));
  } while (pending_.count(id));
  const std::string query = make_upstream_query(d.question, id);
  if (query.empty() || ::send(upstream_.get(), query.data(), query.size(), MSG_DONTWAIT) < 0) {
    vm->servfail++;
    reply(*vm, make_reply(d.question, Rcode::servfail), to);
    return;
  }
  vm->forwarded++;
  vm->pending++;
  pending_.emplace(
      id, Pending{vm, std::move(d.question), std::move(to), now + options_.upstream_timeout});
}

void Responder::read_upstream() {
  char buf[65536];
  for (int round = 0; round < 64; ++round) {
    const ssize_t n = ::recv(upstream_.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) return;
    if (n < 2) continue;
    const auto id =
        static_cast<uint16_t>((static_cast<uint8_t>(buf[0]) << 8) | static_cast<uint8_t>(buf[1]));
    auto it = pending_.find(id);
    if (it == pending_.end()) continue;  // late (timed out) or stray
    Pending& p = it->second;
    FilteredAnswer a = filter_upstream_answer(std::string_view(buf, static_cast<size_t>(n)),
                                              p.question, id, options_.ttl);
    if (!a.matched) continue;  // not the answer to this question: keep waiting
    Vm& vm = *p.vm;
    std::string reply = std::move(a.reply);
    if (!vm.removed) {
      // The allow set first: the guest connects as soon as it has the answer.
      for (const AllowedAddress& addr : a.addresses) {
        if (!vm.config.allow_address || !vm.config.allow_address(addr.ip, addr.ttl_s)) {
          log::warn("dns: the allow set refused an address",
                    {{"vm_id", vm.config.vm_id}, {"ip", addr.ip}});
          reply = make_reply(p.question, Rcode::servfail);
          vm.servfail++;
          break;
        }
        vm.addresses_allowed++;
      }
      vm.answered++;
      this->reply(vm, reply, p.to);
    }
    vm.pending--;
    pending_.erase(it);
  }
}

void Responder::expire_and_flush(Clock::time_point now) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    Vm& vm = *it->second.vm;
    vm.servfail++;
    reply(vm, make_reply(it->second.question, Rcode::servfail), it->second.to);
    vm.pending--;
    it = pending_.erase(it);
  }
  std::lock_guard lock(mu_);
  for (auto& [id, vm] : vms_) {
    if (vm->unreported == 0 || now - vm->last_event < options_.denial_interval) continue;
    vm->last_event = now;
    if (denials_) {
      denials_({vm->config.sandbox_id, vm->config.vm_id, vm->config.trace_id, vm->last_denied,
                kDenyRule, vm->unreported});
    }
    vm->unreported = 0;
  }
}

}  // namespace nv::vm::dns
