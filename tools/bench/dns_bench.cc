// nv-bench dns: the sandbox resolver's answer latency (issue 16), side by side in one run with
// asking the upstream directly.
//
// The upstream is dnsmasq (Debian's dnsmasq-base) on a loopback port with a local record, so
// its answers come from its own table (the "cached upstream" case) and cost the same for both
// paths. The responder (services/vm-pool-manager/dns_responder.h, the code the pool manager
// runs) serves one VM on 127.0.0.2 with allow ["allowed.test"]; its allow-set callback counts
// (the nftables insertion is the data path's cost, measured by nv-bench net). Four cases, one
// query each per round, interleaved so load on the machine hits them alike:
//   allowed via responder   A allowed.test → forwarded, filtered, address allowed, answered
//   nxdomain via responder  A other.test   → NXDOMAIN from the policy, never forwarded
//   allowed direct          A allowed.test straight to dnsmasq
//   nxdomain direct         A other.test   straight to dnsmasq (--address=/other.test/)
// Reported: p50/p95 in µs per case, and what the responder adds to the allowed answer.
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "common/config.h"
#include "vm-pool-manager/dns_responder.h"
#include "vm-pool-manager/sysutil.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using namespace nv::vm::dns;

// A query for `name` type A as bytes: header (id, RD) + one question (RFC 1035 §4.1). Built by
// the responder's own encoder would measure it against itself; this is the client's side.
std::string a_query(const std::string& name, uint16_t id) {
  std::string q = {
      static_cast<char>(id >> 8), static_cast<char>(id & 0xff), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
  size_t start = 0;
  while (start < name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    q.push_back(static_cast<char>(dot - start));
    q += name.substr(start, dot - start);
    start = dot + 1;
  }
  q += std::string("\0\0\x01\0\x01", 5);
  return q;
}

// One query, its reply's RCODE and the round trip in µs; rcode -1 on timeout or a wrong id.
std::pair<int, double> ask(int fd, const Endpoint& to, const std::string& name, uint16_t id) {
  const std::string q = a_query(name, id);
  const auto t0 = Clock::now();
  ::sendto(fd, q.data(), q.size(), 0, reinterpret_cast<const sockaddr*>(&to.addr), to.len);
  pollfd p{fd, POLLIN, 0};
  char buf[1500];
  while (::poll(&p, 1, 2000) == 1) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 12) continue;
    if (static_cast<uint16_t>((static_cast<uint8_t>(buf[0]) << 8) | static_cast<uint8_t>(buf[1])) !=
        id) {
      continue;  // a late reply to an earlier query
    }
    const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    return {buf[3] & 0x0f, us};
  }
  return {-1, 0};
}

double pct(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

std::string find_dnsmasq() {
  for (const char* d : {"/usr/sbin/", "/usr/bin/", "/sbin/"}) {
    if (::access((std::string(d) + "dnsmasq").c_str(), X_OK) == 0)
      return std::string(d) + "dnsmasq";
  }
  return {};
}

int free_udp_port() {
  nv::vm::UniqueFd fd(::socket(AF_INET, SOCK_DGRAM, 0));
  Endpoint e = *parse_endpoint("127.0.0.1:0", 0);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&e.addr), e.len) != 0) return 0;
  e.len = sizeof e.addr;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&e.addr), &e.len);
  return ntohs(reinterpret_cast<sockaddr_in*>(&e.addr)->sin_port);
}

}  // namespace

int run_dns_bench(int argc, char** argv) {
  nv::Config c("nv-bench dns", "the sandbox resolver's answer latency vs the upstream directly");
  c.add_int("queries", 2000, "queries per case");
  auto st = c.parse(argc, argv);
  if (c.help_requested()) {
    std::fputs(c.help().c_str(), stdout);
    return 0;
  }
  if (!st) {
    std::fprintf(stderr, "nv-bench dns: %s\n", st.error().message.c_str());
    return 2;
  }
  const std::string dnsmasq = find_dnsmasq();
  if (dnsmasq.empty()) {
    std::fprintf(stderr, "nv-bench dns: dnsmasq not found (apt-get install dnsmasq-base)\n");
    return 1;
  }
  const int port = free_udp_port();
  const std::string pidfile = "/tmp/nv-bench-dns-" + std::to_string(::getpid()) + ".pid";
  const pid_t child = ::fork();
  if (child == 0) {
    // nv-bench blocks SIGINT/SIGTERM in every thread (main.cc); the mask survives exec.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    const std::string port_arg = "--port=" + std::to_string(port);
    const std::string pid_arg = "--pid-file=" + pidfile;
    ::execl(dnsmasq.c_str(), "dnsmasq", "--conf-file=/dev/null", "--keep-in-foreground",
            "--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1",
            port_arg.c_str(), pid_arg.c_str(), "--local-ttl=60",
            "--host-record=allowed.test,198.51.100.10", "--address=/other.test/",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  struct Reap {
    pid_t pid;
    std::string pidfile;
    ~Reap() {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
      std::error_code ec;
      std::filesystem::remove(pidfile, ec);
    }
  } reap{child, pidfile};
  const Endpoint upstream = *parse_endpoint("127.0.0.1:" + std::to_string(port), 53);

  std::atomic<uint64_t> allowed{0};
  ResponderOptions o;
  o.upstream = upstream;
  auto r = Responder::start(o, [](const Denial&) {});
  if (!r) {
    std::fprintf(stderr, "nv-bench dns: %s\n", r.error().message.c_str());
    return 1;
  }
  auto status = (*r)->add_vm({.vm_id = "bench",
                              .sandbox_id = "bench",
                              .allow = {"allowed.test"},
                              .listen = *parse_endpoint("127.0.0.2:0", 53),
                              .allow_address = [&](const std::string&, uint32_t) {
                                allowed++;
                                return true;
                              }});
  if (!status) {
    std::fprintf(stderr, "nv-bench dns: %s\n", status.error().message.c_str());
    return 1;
  }
  const Endpoint responder = *(*r)->local_endpoint("bench");
  nv::vm::UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  // dnsmasq up?
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {
    up = ask(fd.get(), upstream, "allowed.test", static_cast<uint16_t>(i)).first == 0;
    if (!up) std::this_thread::sleep_for(50ms);
  }
  if (!up) {
    std::fprintf(stderr, "nv-bench dns: dnsmasq on 127.0.0.1:%d did not answer\n", port);
    return 1;
  }
  struct Case {
    const char* what;
    const Endpoint* to;
    const char* name;
    int rcode;
    std::vector<double> us;
    int failed = 0;
  };
  std::vector<Case> cases = {{"allowed via responder", &responder, "allowed.test", 0, {}},
                             {"nxdomain via responder", &responder, "other.test", 3, {}},
                             {"allowed direct", &upstream, "allowed.test", 0, {}},
                             {"nxdomain direct", &upstream, "other.test", 3, {}}};
  const int n = static_cast<int>(c.integer("queries"));
  uint16_t id = 1000;
  for (int round = -50; round < n; ++round) {  // 50 warm-up rounds
    for (Case& k : cases) {
      auto [rc, us] = ask(fd.get(), *k.to, k.name, ++id);
      if (round < 0) continue;
      if (rc != k.rcode) {
        k.failed++;
        continue;
      }
      k.us.push_back(us);
    }
  }
  std::printf("nv-bench dns: upstream dnsmasq 127.0.0.1:%d, responder %s, %d queries per case\n",
              port, responder.text().c_str(), n);
  for (const Case& k : cases) {
    std::printf("%-24s p50 %8.1f us  p95 %8.1f us  (%zu answered, %d wrong or lost)\n", k.what,
                pct(k.us, 0.5), pct(k.us, 0.95), k.us.size(), k.failed);
  }
  std::printf("responder adds to an allowed answer: %+.1f us p50, %+.1f us p95 (%.2fx direct)\n",
              pct(cases[0].us, 0.5) - pct(cases[2].us, 0.5),
              pct(cases[0].us, 0.95) - pct(cases[2].us, 0.95),
              pct(cases[0].us, 0.5) / std::max(1.0, pct(cases[2].us, 0.5)));
  std::printf("policy NXDOMAIN vs the upstream's NXDOMAIN: %.2fx p50; allow-set insertions %llu\n",
              pct(cases[1].us, 0.5) / std::max(1.0, pct(cases[3].us, 0.5)),
              static_cast<unsigned long long>(allowed.load()));
  const bool ok =
      std::all_of(cases.begin(), cases.end(), [](const Case& k) { return k.failed == 0; });
  return ok ? 0 : 1;
}
