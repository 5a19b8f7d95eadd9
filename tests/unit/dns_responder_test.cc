// dns_responder_test — the per-VM DNS responder (dns_responder.h) on real UDP sockets: dnsmasq
// (a real server nobody here wrote) on a loopback port is the operator's upstream; drill (ldns
// utils) and glibc's resolver (getent, python's getaddrinfo inside a network namespace the test
// makes) are the clients. Traffic stays on loopback and inside that namespace.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <ldns/ldns.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include "common/frames.h"
#include "dns_responder.h"
#include "dns_service.h"
#include "support/process.h"

namespace {

using namespace nv::vm::dns;
using namespace std::chrono_literals;
namespace t = nv::test;

// What the data path's allow set would have received.
struct Sink {
  std::mutex mu;
  std::vector<std::pair<std::string, uint32_t>> added;
  bool refuse = false;
  AllowAddress fn() {
    return [this](const std::string& ip, uint32_t ttl) {
      std::lock_guard lock(mu);
      if (refuse) return false;
      added.emplace_back(ip, ttl);
      return true;
    };
  }
  std::vector<std::pair<std::string, uint32_t>> snapshot() {
    std::lock_guard lock(mu);
    return added;
  }
};

struct Events {
  std::mutex mu;
  std::vector<Denial> denials;
  DenialSink fn() {
    return [this](const Denial& d) {
      std::lock_guard lock(mu);
      denials.push_back(d);
    };
  }
  std::vector<Denial> snapshot() {
    std::lock_guard lock(mu);
    return denials;
  }
  uint64_t total() {
    uint64_t n = 0;
    for (const auto& d : snapshot()) n += d.count;
    return n;
  }
};

std::string ip_of(const Endpoint& e) {
  const std::string s = e.text();
  return s.substr(0, s.rfind(':'));
}
std::string port_of(const Endpoint& e) {
  const std::string s = e.text();
  return s.substr(s.rfind(':') + 1);
}

// drill @server -p port name type: a real client's view (header line and answer records).
t::RunResult drill(const Endpoint& server, const std::string& name, const std::string& type = "A") {
  return t::run({.binary = t::find_program("drill"),
                 .args = {"-p", port_of(server), "@" + ip_of(server), name, type}},
                20s);
}

// One datagram out, the reply (if any) within `wait`.
std::optional<std::string> udp_ask(const Endpoint& to, const std::string& datagram,
                                   std::chrono::milliseconds wait = 3000ms) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ::sendto(fd, datagram.data(), datagram.size(), 0, reinterpret_cast<const sockaddr*>(&to.addr),
           to.len);
  pollfd p{fd, POLLIN, 0};
  std::optional<std::string> out;
  if (::poll(&p, 1, static_cast<int>(wait.count())) == 1) {
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n >= 0) out = std::string(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

std::string query(const std::string& name, ldns_rr_type type = LDNS_RR_TYPE_A, uint16_t id = 77) {
  ldns_pkt* p =
      ldns_pkt_query_new(ldns_dname_new_frm_str(name.c_str()), type, LDNS_RR_CLASS_IN, LDNS_RD);
  ldns_pkt_set_id(p, id);
  uint8_t* buf = nullptr;
  size_t n = 0;
  ldns_pkt2wire(&buf, p, &n);
  std::string w(reinterpret_cast<char*>(buf), n);
  std::free(buf);
  ldns_pkt_free(p);
  return w;
}

int rcode_of(const std::optional<std::string>& reply) {
  if (!reply) return -1;
  ldns_pkt* p = nullptr;
  if (ldns_wire2pkt(&p, reinterpret_cast<const uint8_t*>(reply->data()), reply->size()) !=
      LDNS_STATUS_OK) {
    return -2;
  }
  const int r = ldns_pkt_get_rcode(p);
  ldns_pkt_free(p);
  return r;
}

class DnsResponderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (t::find_program("dnsmasq").empty() || t::find_program("drill").empty()) {
      GTEST_SKIP() << "dnsmasq and drill are needed (tools/setup.sh installs dnsmasq-base and "
                      "ldnsutils)";
    }
    dir_ = std::make_unique<t::TempDir>("nv-dns");
    port_ = t::free_loopback_port();
    // Local records answer with --local-ttl (7 s: below the allow set's 30 s minimum).
    dnsmasq_ = std::make_unique<t::Process>(t::Process::start(
        {.binary = t::find_program("dnsmasq"),
         .args = {"--conf-file=/dev/null", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                  "--bind-interfaces", "--listen-address=127.0.0.1",
                  "--port=" + std::to_string(port_), "--pid-file=" + dir_->file("dnsmasq.pid"),
                  "--local-ttl=7", "--host-record=allowed.test,198.51.100.10",
                  "--host-record=example.test,198.51.100.20",
                  "--host-record=a.example.test,198.51.100.21,2001:db8::21",
                  "--host-record=cdn.host.test,198.51.100.30",
                  "--cname=www.allowed.test,cdn.host.test", "--address=/nx.allowed.test/"}}));
    upstream_ = *parse_endpoint("127.0.0.1:" + std::to_string(port_), 53);
    ASSERT_TRUE(t::wait_until(
        [] {
          return drill(upstream_, "allowed.test").out.find("198.51.100.10") != std::string::npos;
        },
        15s, 200ms))
        << dnsmasq_->stderr_text();
  }
  static void TearDownTestSuite() {
    if (dnsmasq_) dnsmasq_->terminate(5s);
    dnsmasq_.reset();
    dir_.reset();
  }

  // A responder with `options` (upstream = dnsmasq unless set) and a VM on 127.0.0.N:<any>.
  std::unique_ptr<Responder> start(ResponderOptions options = {}) {
    if (options.upstream.len == 0) options.upstream = upstream_;
    auto r = Responder::start(options, events_.fn());
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? std::move(*r) : nullptr;
  }
  Endpoint add(Responder& r, const std::string& vm, std::vector<std::string> allow, Sink& sink,
               const std::string& at = "127.0.0.2:0") {
    auto status = r.add_vm({.vm_id = vm,
                            .sandbox_id = "sbx-" + vm,
                            .trace_id = "trace-" + vm,
                            .allow = std::move(allow),
                            .netns_path = "",
                            .listen = *parse_endpoint(at, 53),
                            .allow_address = sink.fn()});
    EXPECT_TRUE(status.ok()) << (status.ok() ? "" : status.error().message);
    return *r.local_endpoint(vm);
  }

  static inline std::unique_ptr<t::TempDir> dir_;
  static inline std::unique_ptr<t::Process> dnsmasq_;
  static inline int port_ = 0;
  static inline Endpoint upstream_;
  Events events_;
};

TEST_F(DnsResponderTest, AllowedNameResolvesAndTheAllowSetHasItBeforeTheAnswer) {
  auto r = start();
  Sink sink;
  const Endpoint at = add(*r, "vm1", {"allowed.test"}, sink);
  const auto res = drill(at, "allowed.test");
  EXPECT_NE(res.out.find("rcode: NOERROR"), std::string::npos) << res.out << res.err;
  EXPECT_NE(res.out.find("allowed.test.\t7\tIN\tA\t198.51.100.10"), std::string::npos) << res.out;
  // Checked at once, no waiting: the address went into the set before the guest got it.
  EXPECT_EQ(sink.snapshot(),
            (std::vector<std::pair<std::string, uint32_t>>{{"198.51.100.10", 30}}));  // 7 → 30
  EXPECT_TRUE(events_.snapshot().empty());
  const auto s = r->stats("vm1");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->forwarded, 1u);
  EXPECT_EQ(s->addresses_allowed, 1u);
  EXPECT_EQ(s->denied, 0u);
}

// The same VM over TCP (RFC 7766), as a resolver falls back to after a truncated answer.
TEST_F(DnsResponderTest, TcpQueriesAreAnsweredAndAnOversizedPrefixClosesTheConnection) {
  auto r = start();
  Sink sink;
  const Endpoint at = add(*r, "vm1", {"allowed.test"}, sink);
  auto res = t::run({.binary = t::find_program("drill"),
                     .args = {"-t", "-p", port_of(at), "@" + ip_of(at), "allowed.test"}},
                    20s);
  EXPECT_NE(res.out.find("198.51.100.10"), std::string::npos) << res.out << res.err;
  res = t::run({.binary = t::find_program("drill"),
                .args = {"-t", "-p", port_of(at), "@" + ip_of(at), "other.test"}},
               20s);
  EXPECT_NE(res.out.find("rcode: NXDOMAIN"), std::string::npos) << res.out << res.err;
  EXPECT_EQ(sink.snapshot().size(), 1u);
  // A length prefix of 65535: closed without an answer (read returns 0), the VM still served.
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&at.addr), at.len), 0);
  const std::string big = std::string("\xff\xff", 2) + std::string(1500, 'x');
  ASSERT_EQ(::send(fd, big.data(), big.size(), MSG_NOSIGNAL), static_cast<ssize_t>(big.size()));
  pollfd p{fd, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1);
  char c;
  EXPECT_LE(::recv(fd, &c, 1, 0), 0);
  ::close(fd);
  EXPECT_EQ(rcode_of(udp_ask(at, query("allowed.test"))), LDNS_RCODE_NOERROR);
}

TEST_F(DnsResponderTest, NamesCompareCaseInsensitively) {
  auto r = start();
  Sink sink;
  const Endpoint at = add(*r, "vm1", {"Allowed.TEST"}, sink);
  const auto res = drill(at, "aLLoWeD.tEsT");
  EXPECT_NE(res.out.find("198.51.100.10"), std::string::npos) << res.out << res.err;
  EXPECT_EQ(sink.snapshot().size(), 1u);
}

TEST_F(DnsResponderTest, WildcardAllowsSubdomainsButNotTheApex) {
  auto r = start();
  Sink sink;
  const Endpoint at = add(*r, "vm1", {"*.example.test"}, sink);
  auto res = drill(at, "a.example.test", "AAAA");
  EXPECT_NE(res.out.find("2001:db8::21"), std::string::npos) << res.out << res.err;
  res = drill(at, "a.example.test", "A");
  EXPECT_NE(res.out.find("198.51.100.21"), std::string::npos) << res.out << res.err;
  EXPECT_EQ(sink.snapshot(), (std::vector<std::pair<std::string, uint32_t>>{
                                 {"2001:db8::21", 30}, {"198.51.100.21", 30}}));
  res = drill(at, "example.test");  // dnsmasq knows it; the policy does not allow it
  EXPECT_NE(res.out.find("rcode: NXDOMAIN"), std::string::npos) << res.out;
  EXPECT_EQ(res.out.find("198.51.100.20"), std::string::npos) << res.out;
  EXPECT_EQ(sink.snapshot().size(), 2u);
  ASSERT_TRUE(t::wait_until([&] { return events_.total() == 1; }, 5s));
  const Denial d = events_.snapshot().at(0);
  EXPECT_EQ(d.name, "example.test");
  EXPECT_EQ(d.rule, "nxdomain: not on the allow list");
  EXPECT_EQ(d.sandbox_id, "sbx-vm1");
  EXPECT_EQ(d.vm_id, "vm1");
  EXPECT_EQ(d.trace_id, "trace-vm1");
}

TEST_F(DnsResponderTest, DeniedLookupsAreNxdomainAndFoldedIntoFewEvents) {
  ResponderOptions o;
  o.denial_interval = 2000ms;
  auto r = start(o);
  Sink sink;
  const Endpoint at = add(*r, "vm1", {"allowed.test"}, sink);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(rcode_of(udp_ask(at, query(i % 2 ? "other.test" : "allowed.test.other.test",
                                         LDNS_RR_TYPE_A, static_cast<uint16_t>(i)))),
              LDNS_RCODE_NXDOMAIN);
  }
  ASSERT_TRUE(t::wait_until([&] { return events_.total() == 10; }, 10s)) << events_.total();
  EXPECT_LT(events_.snapshot().size(), 10u);        // folded, count says how many
  EXPECT_EQ(events_.snapshot().front().count, 1u);  // the first one at once
  EXPECT_TRUE(sink.snapshot().empty());
  EXPECT_EQ(r->stats("vm1")->denied, 10u);
  EXPECT_EQ(r->stats("vm1")->forwarded, 0u);
}

TEST_F(DnsResponderTest, EachVmHasItsOwnPolicy) {
  auto r = start();
  Sink s1, s2;
  const Endpoint a = add(*r, "vm1", {"allowed.test"}, s1, "127.0.0.2:0");
  const Endpoint b = add(*r, "vm2", {"*.example.test"}, s2, "127.0.0.3:0");
  EXPECT_EQ(rcode_of(udp_ask(b, query("allowed.test"))), LDNS_RCODE_NXDOMAIN);
  EXPECT_EQ(rcode_of(udp_ask(a, query("a.example.test"))), LDNS_RCODE_NXDOMAIN);
  EXPECT_EQ(rcode_of(udp_ask(a, query("allowed.test"))), LDNS_RCODE_NOERROR);
  EXPECT_EQ(s1.snapshot().size(), 1u);
  EXPECT_TRUE(s2.snapshot().empty());
  r->remove_vm("vm1");
  EXPECT_FALSE(udp_ask(a, query("allowed.test"), 500ms).has_value());  // socket closed
  EXPECT_EQ(rcode_of(udp_ask(b, query("a.example.test"))), LDNS_RCODE_NOERROR);
}

TEST_F(DnsResponderTest, CnameChainIsFollowedAndUpstreamNxdomainPassesWithoutAnEvent) {
  auto r = start();
  Sink sink;
  const Endpoint at = add(*r, "vm1", {"*.allowed.test"}, sink);
  auto res = drill(at, "www.allowed.test");
  EXPECT_NE(res.out.find("CNAME\tcdn.host.test."), std::string::npos) << res.out << res.err;
  EXPECT_NE(res.out.find("cdn.host.test.\t7\tIN\tA\t198.51.100.30"), std::string::npos) << res.out;
  EXPECT_EQ(sink.snapshot(),
            (std::vector<std::pair<std::string, uint32_t>>{{"198.51.100.30", 30}}));
  res = drill(at, "nx.allowed.test");
  EXPECT_NE(res.out.find("rcode: NXDOMAIN"), std::string::npos) << res.out;
  EXPECT_EQ(r->stats("vm1")->denied, 0u);  // the upstream's answer, not a policy denial
  EXPECT_TRUE(events_.snapshot().empty());
}

TEST_F(DnsResponderTest, MalformedDatagramsGetADefinedAnswerAndTheResponderLives) {
  auto r = start();
  Sink sink;
  const Endpoint at = add(*r, "vm1", {"allowed.test"}, sink);
  const std::string good = query("allowed.test", LDNS_RR_TYPE_A, 0x0102);
  EXPECT_FALSE(udp_ask(at, good.substr(0, 5), 300ms).has_value());  // truncated header
  std::string response = good;
  response[2] = static_cast<char>(response[2] | 0x80);
  EXPECT_FALSE(udp_ask(at, response, 300ms).has_value());  // a response: never answered
  const std::string header = good.substr(0, 12);
  EXPECT_EQ(rcode_of(udp_ask(at, header)), LDNS_RCODE_FORMERR);  // question missing
  EXPECT_EQ(rcode_of(udp_ask(at, header + std::string("\xc0\x0c\x00\x01\x00\x01", 6))),
            LDNS_RCODE_FORMERR);  // pointer to itself
  EXPECT_EQ(rcode_of(udp_ask(at, header + std::string("\x01"
                                                      "a\xc0\x0e\xc0\x0c\x00\x01\x00\x01",
                                                      10))),
            LDNS_RCODE_FORMERR);  // two pointers in a loop
  EXPECT_EQ(rcode_of(udp_ask(at, good + std::string(3000, 'x'))), LDNS_RCODE_FORMERR);
  EXPECT_EQ(rcode_of(udp_ask(at, good)), LDNS_RCODE_NOERROR);  // still serving
  EXPECT_TRUE(sink.snapshot().size() == 1u);
  EXPECT_GE(r->stats("vm1")->errors, 5u);
}

TEST_F(DnsResponderTest, SilentUpstreamAndRefusedAllowSetGiveServfail) {
  // An upstream that never answers: a bound socket nobody reads.
  const int silent = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  Endpoint quiet = *parse_endpoint("127.0.0.1:0", 53);
  ASSERT_EQ(::bind(silent, reinterpret_cast<sockaddr*>(&quiet.addr), quiet.len), 0);
  quiet.len = sizeof quiet.addr;
  ::getsockname(silent, reinterpret_cast<sockaddr*>(&quiet.addr), &quiet.len);
  ResponderOptions o;
  o.upstream = quiet;
  o.upstream_timeout = 300ms;
  auto r = start(o);
  Sink sink;
  const Endpoint at = add(*r, "vm1", {"allowed.test"}, sink);
  EXPECT_EQ(rcode_of(udp_ask(at, query("allowed.test"))), LDNS_RCODE_SERVFAIL);
  EXPECT_EQ(r->stats("vm1")->servfail, 1u);
  ::close(silent);

  auto r2 = start();
  Sink refusing;
  refusing.refuse = true;
  const Endpoint at2 = add(*r2, "vm2", {"allowed.test"}, refusing);
  const auto reply = udp_ask(at2, query("allowed.test"));
  EXPECT_EQ(rcode_of(reply), LDNS_RCODE_SERVFAIL);
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->find(std::string("\xc6\x33\x64\x0a", 4)), std::string::npos);  // no address
}

TEST_F(DnsResponderTest, MalformedDomainEntryIsABadRequest) {
  auto r = start();
  auto status = r->add_vm(
      {.vm_id = "vm1", .allow = {"a.*.test"}, .listen = *parse_endpoint("127.0.0.2:0", 53)});
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code, nv::ErrorCode::BAD_REQUEST);
  EXPECT_NE(status.error().message.find("a.*.test"), std::string::npos);
  EXPECT_EQ(r->vm_count(), 0u);
}

// The socket is made inside a network namespace (setns in a thread) at the gateway address,
// port 53; glibc's resolver inside that namespace (ip netns exec bind-mounts
// /etc/netns/<name>/resolv.conf) resolves through it. The upstream stays in our namespace.
TEST_F(DnsResponderTest, GlibcResolverInsideANetworkNamespace) {
  if (::geteuid() != 0 || t::find_program("ip").empty()) GTEST_SKIP() << "needs root and ip";
  const std::string ns = "nv-dns-" + std::to_string(::getpid());
  const std::string etc = "/etc/netns/" + ns;
  struct Cleanup {
    std::string ns, etc;
    ~Cleanup() {
      t::run({.binary = t::find_program("ip"), .args = {"netns", "del", ns}}, 10s);
      std::error_code ec;
      std::filesystem::remove_all(etc, ec);
    }
  } cleanup{ns, etc};
  auto ip = [](std::vector<std::string> args) {
    auto res = t::run({.binary = t::find_program("ip"), .args = std::move(args)}, 10s);
    EXPECT_TRUE(res.status.clean()) << res.err;
  };
  ip({"netns", "add", ns});
  ip({"-n", ns, "link", "set", "lo", "up"});
  ip({"-n", ns, "addr", "add", "10.253.0.1/32", "dev", "lo"});
  std::filesystem::create_directories(etc);
  std::ofstream(etc + "/resolv.conf") << "nameserver 10.253.0.1\noptions timeout:3 attempts:2\n";

  auto r = start();
  Sink sink;
  // As the pool passes it: the namespace as an open fd.
  const int ns_fd = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(ns_fd, 0);
  auto status = r->add_vm({.vm_id = "vm1",
                           .sandbox_id = "sbx1",
                           .allow = {"allowed.test"},
                           .netns_fd = ns_fd,
                           .listen = *parse_endpoint("10.253.0.1", 53),
                           .allow_address = sink.fn()});
  ::close(ns_fd);
  ASSERT_TRUE(status.ok()) << status.error().message;
  // Nothing listens on 10.253.0.1:53 in our own namespace: the socket lives in the other one.
  auto exec = [&](std::vector<std::string> cmd) {
    std::vector<std::string> args = {"netns", "exec", ns};
    args.insert(args.end(), cmd.begin(), cmd.end());
    return t::run({.binary = t::find_program("ip"), .args = args}, 30s);
  };
  auto res = exec({"getent", "ahostsv4", "allowed.test"});
  EXPECT_TRUE(res.status.clean()) << res.err;
  EXPECT_NE(res.out.find("198.51.100.10"), std::string::npos) << res.out << res.err;
  res = exec({"python3", "-c",
              "import socket,sys\n"
              "print(socket.getaddrinfo('ALLOWED.test', 80, socket.AF_INET)[0][4][0])\n"
              "try:\n  socket.getaddrinfo('other.test', 80)\n  print('resolved')\n"
              "except socket.gaierror as e:\n  print('gaierror', e.errno == socket.EAI_NONAME)\n"});
  EXPECT_EQ(res.out, "198.51.100.10\ngaierror True\n") << res.err;
  EXPECT_FALSE(sink.snapshot().empty());
  EXPECT_EQ(sink.snapshot().front(), (std::pair<std::string, uint32_t>{"198.51.100.10", 30}));
  ASSERT_TRUE(t::wait_until([&] { return events_.total() >= 1; }, 5s));
  EXPECT_EQ(events_.snapshot().front().name, "other.test");
  res = exec({"drill", "@10.253.0.1", "other.test"});
  EXPECT_NE(res.out.find("rcode: NXDOMAIN"), std::string::npos) << res.out << res.err;
}

}  // namespace

namespace {

// The pool's sink: a denial becomes a security.egress_denied event on the bus (PUSH frames
// [topic][Event], read here by a PULL socket standing in for the orchestrator).
TEST(DnsService, DenialIsPublishedAsSecurityEgressDenied) {
  t::TempDir dir("nv-dns-ev");
  zmq::context_t ctx(1);
  zmq::socket_t pull(ctx, zmq::socket_type::pull);
  const std::string ep = "ipc://" + dir.file("events.sock");
  pull.bind(ep);
  nv::EventPublisher events(ctx, ep, "nv-vm-pool-manager", "test");
  nv::vm::dns::publish_denial(
      events, {"sbx-1", "vm-1", "trace-1", "other.test", nv::vm::dns::kDenyRule, 7});
  pull.set(zmq::sockopt::rcvtimeo, 5000);
  zmq::message_t topic, body;
  ASSERT_TRUE(pull.recv(topic));
  ASSERT_TRUE(pull.recv(body));
  EXPECT_EQ(topic.to_string(), "security.egress_denied");
  auto reader = nv::bus::BodyReader::open(body, nv::bus::Limits{});
  ASSERT_TRUE(reader.ok());
  auto e = reader->root<nv::schema::Event>();
  ASSERT_TRUE(e.ok());
  ASSERT_TRUE(e->isEgressDenied());
  EXPECT_EQ(std::string(e->getTraceId().cStr()), "trace-1");
  EXPECT_EQ(e->getSeverity(), nv::schema::Severity::WARNING);
  auto d = e->getEgressDenied();
  EXPECT_EQ(std::string(d.getSandboxId().cStr()), "sbx-1");
  EXPECT_EQ(std::string(d.getVmId().cStr()), "vm-1");
  EXPECT_EQ(std::string(d.getDestination().cStr()), "other.test");
  EXPECT_EQ(std::string(d.getRule().cStr()), "nxdomain: not on the allow list");
  EXPECT_EQ(d.getCount(), 7u);
}

TEST(DnsService, UpstreamFlagIsChecked) {
  t::TempDir dir("nv-dns-ev");
  zmq::context_t ctx(1);
  nv::EventPublisher events(ctx, "", "nv-vm-pool-manager", "test");
  for (const std::string bad : {"", "resolver.example", "127.0.0.1:0", "127.0.0.1:99999", "[::1"}) {
    auto r = nv::vm::dns::start_pool_responder(bad, events);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, nv::ErrorCode::BAD_REQUEST);
    EXPECT_NE(r.error().message.find("--net-dns-upstream"), std::string::npos);
  }
  EXPECT_TRUE(nv::vm::dns::start_pool_responder("127.0.0.1:5353", events).ok());
  EXPECT_TRUE(nv::vm::dns::start_pool_responder("[::1]:53", events).ok());
}

}  // namespace
