// bus_identity_test.cc — issue 11 finding 9, "who may speak": roles bound to identities.
//
// ipc://: an intruder running as another uid (nobody, via setresuid in a forked child with its
// own ZeroMQ context) that can reach the sockets cannot register `exec` (its READY is answered
// `unauthorized`) nor get a `security.alert` into the event stream, while root's workers and
// events pass, stamped "uid:0". tcp:// with CURVE: an unknown key gets nothing through; a key
// allowed only `llm` cannot register `exec`; the executor's key serves `exec` and its events are
// stamped "key:<its public key>", but its `security.alert` is dropped. Plus the roles file parser.
#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "../integration/bus_harness.h"
#include "common/curve.h"
#include "common/events.h"
#include "common/roles.h"

namespace nv::test {
namespace {

constexpr uid_t kNobody = 65534;

// What an intruder saw, written by the child through a pipe.
struct IntruderResult {
  int ready_answer_kind = -1;  // bus::Kind of the answer to READY, -1 none
  int error_code = -1;         // its Error.code when the answer is an error
};

// Registers `service` with capacity 1000 and publishes a forged security.alert claiming to be
// the sentinel, over `workers`/`events_in`, with `keys` for CURVE (tcp) when given.
IntruderResult intrude(zmq::context_t& ctx, const std::string& workers,
                       const std::string& events_in, const std::string& service,
                       const std::optional<curve::KeyPair>& keys = {},
                       const std::string& server_key = {}) {
  IntruderResult out;
  {
    EventPublisher forged(ctx, events_in, "ebpf-sentinel", "forged", keys, server_key);
    forged.publish(
        "security.alert",
        [](schema::Event::Builder e) {
          auto a = e.initSecurityAlert();
          a.setVmId("vm-forged");
          a.setDetail("forged by an intruder");
        },
        {}, schema::Severity::ALERT);
    zmq::socket_t s(ctx, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    if (keys) curve::make_client(s, *keys, server_key);
    s.connect(workers);
    bus::Header h;
    h.kind = bus::Kind::READY;
    h.service = service;
    h.capacity = 1000;
    h.pid = static_cast<uint32_t>(::getpid());
    h.instance = "intruder";
    bus::send(s, {}, h, zmq::message_t());
    zmq::pollitem_t item{static_cast<void*>(s), 0, ZMQ_POLLIN, 0};
    auto end = std::chrono::steady_clock::now() + 3s;
    std::vector<zmq::message_t> frames;
    while (std::chrono::steady_clock::now() < end && out.ready_answer_kind < 0) {
      zmq::poll(&item, 1, 50ms);
      while (bus::recv_frames(s, frames)) {
        bus::Message msg;
        bus::ParseError failure;
        if (!bus::parse(frames, false, bus::Limits{}, &msg, &failure)) continue;
        if (msg.header.kind == bus::Kind::HEARTBEAT) continue;
        out.ready_answer_kind = static_cast<int>(msg.header.kind);
        if (msg.header.kind == bus::Kind::ERROR) {
          auto e = msg.body.root_unchecked<schema::Error>();
          if (e) out.error_code = static_cast<int>(e->getCode());
        }
        break;
      }
    }
    // Give the forged event time to leave before the publisher's linger cuts it.
    std::this_thread::sleep_for(200ms);
  }
  return out;
}

// Runs intrude() as uid/gid `uid` in a forked child; the parent reads the result.
IntruderResult intrude_as(uid_t uid, const std::string& workers, const std::string& events_in) {
  int fds[2];
  if (::pipe(fds) != 0) return {};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    if (::setgroups(0, nullptr) != 0 || ::setresgid(uid, uid, uid) != 0 ||
        ::setresuid(uid, uid, uid) != 0 || ::getuid() != uid) {
      ::_exit(3);
    }
    IntruderResult r;
    {
      zmq::context_t child_ctx;  // never the parent's: its threads did not survive the fork
      r = intrude(child_ctx, workers, events_in, "exec");
    }
    if (::write(fds[1], &r, sizeof r) != static_cast<ssize_t>(sizeof r)) ::_exit(4);
    ::_exit(0);
  }
  ::close(fds[1]);
  IntruderResult r;
  ssize_t n = ::read(fds[0], &r, sizeof r);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "intruder status " << status;
  EXPECT_EQ(n, static_cast<ssize_t>(sizeof r));
  return r;
}

// Events in the broker's history under `prefix` (what nv-audit --since-start prints).
std::vector<std::pair<std::string, std::string>> history(Client& client,
                                                         const std::string& prefix) {
  capnp::MallocMessageBuilder mb;
  bus::init_body<schema::HistoryRequest>(mb).setTopicPrefix(prefix);
  std::vector<std::pair<std::string, std::string>> out;  // (service claimed, sender verified)
  auto r = client.call("nv.events", &mb, 3s);
  if (!r) {
    ADD_FAILURE() << r.error().to_string();
    return out;
  }
  auto reply = r->body.root<schema::HistoryReply>();
  if (!reply) return out;
  for (auto e : reply->getEvents()) out.emplace_back(e.getService(), e.getSender());
  return out;
}

// The JSON lines nv-audit prints for the events under `prefix` (event_to_json).
std::vector<std::string> audit_lines(Client& client, const std::string& prefix) {
  capnp::MallocMessageBuilder mb;
  bus::init_body<schema::HistoryRequest>(mb).setTopicPrefix(prefix);
  std::vector<std::string> out;
  auto r = client.call("nv.events", &mb, 3s);
  if (!r) return out;
  auto reply = r->body.root<schema::HistoryReply>();
  if (!reply) return out;
  for (auto e : reply->getEvents()) out.push_back(event_to_json(e));
  return out;
}

bool has_service(Client& c, const std::string& service) {
  for (auto& w : status(c).workers) {
    if (w.service == service) return true;
  }
  return false;
}

TEST(BusIdentityIpc, AnotherUidCannotRegisterExecNorForgeAlerts) {
  ASSERT_EQ(::geteuid(), 0u) << "needs root to run the intruder as nobody";
  BrokerHarness h;
  h.start();
  // The intruder can reach the sockets (the attack of finding 9): open the dir and the sockets.
  ASSERT_EQ(::chmod(h.dir.path().c_str(), 0755), 0);
  for (auto* ep : {&h.workers(), &h.events_in()}) {
    ASSERT_EQ(::chmod(bus::ipc_path(*ep).c_str(), 0777), 0);
  }
  auto r = intrude_as(kNobody, h.workers(), h.events_in());
  EXPECT_EQ(r.ready_answer_kind, static_cast<int>(bus::Kind::ERROR));
  EXPECT_EQ(r.error_code, static_cast<int>(ErrorCode::UNAUTHORIZED));

  Client client(h.ctx, h.client_options());
  EXPECT_FALSE(has_service(client, "exec"));
  // No one ever registered exec: a user's code is refused, not handed to the intruder.
  capnp::MallocMessageBuilder mb;
  fill_event(mb, "users-code");
  auto call = client.call("exec", &mb, 2s);
  ASSERT_FALSE(call);

  // The real services (root here, like nv up's) still register and publish, stamped uid:0.
  std::atomic<int> seen{0};
  WorkerThread exec(h.ctx, h.worker_options("exec", 2, "exec-1"), echo_handler("exec-1", &seen));
  ASSERT_TRUE(wait_for([&] { return has_service(client, "exec"); }));
  EventPublisher sentinel(h.ctx, h.events_in(), "ebpf-sentinel", "sentinel-1");
  sentinel.publish(
      "security.alert", [](schema::Event::Builder e) { e.initSecurityAlert().setVmId("vm-1"); }, {},
      schema::Severity::ALERT);
  // The stream: the hub's own two alerts about the intruder, then the sentinel's real one.
  std::vector<std::pair<std::string, std::string>> alerts;
  ASSERT_TRUE(wait_for([&] { return (alerts = history(client, "security.")).size() >= 3; }));
  ASSERT_EQ(alerts.size(), 3u) << "the forged alert got into the stream";
  EXPECT_EQ(alerts[2].first, "ebpf-sentinel");
  EXPECT_EQ(alerts[2].second, "uid:0");
  // What an nv-audit reader sees: the claim and, beside it, who really sent it.
  auto lines = audit_lines(client, "security.");
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_NE(lines[2].find("\"sender\":\"uid:0\""), std::string::npos) << lines[2];
  EXPECT_NE(lines[2].find("\"service\":\"ebpf-sentinel\""), std::string::npos) << lines[2];
  std::string hub = lines[0] + lines[1];
  for (const char* want :
       {"\"kind\":\"bus_forged_event\"", "uid:65534 published 'security.alert' as 'ebpf-sentinel'",
        "\"kind\":\"bus_unauthorized\"", "uid:65534 asked to serve 'exec'",
        "\"sender\":\"orchestrator\""}) {
    EXPECT_NE(hub.find(want), std::string::npos) << want << " not in " << hub;
  }
  // The broker's own events say so, too.
  auto own = history(client, "service.");
  for (auto& [service, sender] : own) {
    if (service == "orchestrator") {
      EXPECT_EQ(sender, "orchestrator");
    }
  }
}

// Makes a key pair file set NAME.key/NAME.pub in `dir`.
curve::KeyPair make_keys(const std::string& dir, const std::string& name) {
  auto k = curve::generate();
  EXPECT_TRUE(k);
  EXPECT_TRUE(curve::write_files(dir, name, k.value()));
  return k.value();
}

int free_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(s);
    return -1;
  }
  ::close(s);
  return ntohs(a.sin_port);
}

TEST(BusIdentityTcp, KeysServeOnlyTheirRoles) {
  BrokerHarness h;
  std::string keys = h.dir.path();
  auto server = make_keys(keys, "orchestrator");
  auto executor = make_keys(keys, "executor");
  auto gateway = make_keys(keys, "gateway");
  auto stranger = make_keys(keys, "stranger");
  std::ofstream(keys + "/roles") << "# identity services topics\n"
                                 << "key:" << keys << "/executor.pub  exec  exec.,service.\n"
                                 << "key:" << gateway.public_key << "  llm  llm.\n";
  auto roles = Roles::load(keys + "/roles");
  ASSERT_TRUE(roles) << roles.error().to_string();
  // The in-process harness's own (root, inproc) peers keep their roles.
  roles->grant_all("uid:0");
  int p1 = free_port(), p2 = free_port();
  ASSERT_GT(p1, 0);
  ASSERT_GT(p2, 0);
  std::string workers = "tcp://127.0.0.1:" + std::to_string(p1);
  std::string events = "tcp://127.0.0.1:" + std::to_string(p2);
  h.options.worker_endpoints.push_back(workers);
  h.options.events_in_endpoints.push_back(events);
  h.options.curve_keys = server;
  h.options.roles = std::move(roles.value());
  h.start();
  Client client(h.ctx, h.client_options());

  // An unknown key: the handshake is refused, so nothing is answered and nothing registers.
  auto r = intrude(h.ctx, workers, events, "exec", stranger, server.public_key);
  EXPECT_EQ(r.ready_answer_kind, -1);
  // A known key (the gateway's) asking for exec: refused with a typed error.
  r = intrude(h.ctx, workers, events, "exec", gateway, server.public_key);
  EXPECT_EQ(r.ready_answer_kind, static_cast<int>(bus::Kind::ERROR));
  EXPECT_EQ(r.error_code, static_cast<int>(ErrorCode::UNAUTHORIZED));
  EXPECT_FALSE(has_service(client, "exec"));

  // The executor's key serves exec over tcp; its exec.* event is stamped with its key, its
  // security.alert is dropped (the gateway's was too: llm.* only).
  auto o = h.worker_options("exec", 2, "exec-tcp");
  o.broker_endpoint = workers;
  o.curve_keys = executor;
  o.curve_server_key = server.public_key;
  WorkerThread exec(h.ctx, o, echo_handler("exec-tcp"));
  ASSERT_TRUE(wait_for([&] { return has_service(client, "exec"); }));
  capnp::MallocMessageBuilder mb;
  fill_event(mb, "over-tcp");
  auto call = client.call("exec", &mb, 5s);
  ASSERT_TRUE(call) << call.error().to_string();
  EXPECT_EQ(instance_of(call->body), "exec-tcp");
  {
    EventPublisher pub(h.ctx, events, "sandbox-executor", "exec-tcp", executor, server.public_key);
    pub.publish("security.alert", [](schema::Event::Builder e) { e.initSecurityAlert(); });
    pub.publish("exec.started", [](schema::Event::Builder e) { e.initExecStarted(); });
    std::vector<std::pair<std::string, std::string>> got;
    ASSERT_TRUE(wait_for([&] { return !(got = history(client, "exec.")).empty(); }));
    EXPECT_EQ(got[0].second, "key:" + executor.public_key);
  }
  // Only the hub's alerts about the refused READY and events, none of the forgeries.
  for (auto& [service, sender] : history(client, "security.")) {
    EXPECT_EQ(sender, "orchestrator") << service;
  }
}

TEST(Roles, ParsesRulesAndRefusesBadOnes) {
  auto r = Roles::parse(
      "# comment\n\nuid:1000 exec,llm exec.,vm. # trailing\nuser:root * *\nanonymous - -\n");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_TRUE(r->may_serve("uid:1000", "exec"));
  EXPECT_FALSE(r->may_serve("uid:1000", "sandbox"));
  EXPECT_TRUE(r->may_publish("uid:1000", "vm.booted"));
  EXPECT_FALSE(r->may_publish("uid:1000", "security.alert"));
  EXPECT_TRUE(r->may_publish("uid:0", "security.alert"));  // user:root
  EXPECT_FALSE(r->may_serve("anonymous", "exec"));
  EXPECT_FALSE(r->may_serve("uid:1001", "exec"));  // no rule: no role
  for (const char* bad :
       {"uid:x * *", "uid:1 exec", "uid:1 exec exec. extra", "nobody@host * *",
        "uid:1 * *\nuid:01 - -", "uid:1 nv.status -", "user:no-such-user-here * *",
        "key:/no/such/file.pub * *", "uid:65534 exec -", "user:nobody * *"}) {
    EXPECT_FALSE(Roles::parse(bad)) << bad;
  }
  auto d = Roles::defaults();
  EXPECT_TRUE(d.may_serve("uid:" + std::to_string(::geteuid()), "exec"));
  EXPECT_TRUE(d.may_serve("inproc", "exec"));
  EXPECT_FALSE(d.may_serve("uid:65534", "exec"));
  EXPECT_FALSE(d.may_publish("anonymous", "security.alert"));
}

// deploy/roles.example stays a valid roles file (its user neurovisor exists only on installed
// hosts: read here as uid 1000), and gives the services their presence names.
TEST(Roles, DeployExampleParses) {
  const char* src = std::getenv("NV_SOURCE_DIR");
  ASSERT_NE(src, nullptr) << "set by ctest";
  std::ifstream in(std::string(src) + "/deploy/roles.example");
  ASSERT_TRUE(in);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  for (size_t at; (at = text.find("user:neurovisor")) != std::string::npos;) {
    text.replace(at, 15, "uid:1000");
  }
  auto r = Roles::parse(text, "roles.example");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_TRUE(r->may_serve("uid:0", "vm-pool-manager"));
  EXPECT_TRUE(r->may_serve("uid:0", "ebpf-sentinel"));
  EXPECT_TRUE(r->may_publish("uid:0", "security.alert"));
  EXPECT_FALSE(r->may_serve("uid:0", "exec"));
  EXPECT_TRUE(r->may_serve("uid:1000", "exec"));
  EXPECT_TRUE(r->may_serve("uid:1000", "task"));
  EXPECT_FALSE(r->may_publish("uid:1000", "security.alert"));
  EXPECT_FALSE(r->may_publish("uid:1000", "vm.booted"));
}

TEST(Roles, IdentityFromZapAddress) {
  // ipc:// as libzmq 4.3.4 reports it (measured): "localhost:<uid>:<gid>:<pid>".
  EXPECT_EQ(identity_from_zap("NULL", "localhost:65534:65534:16047", ""), "uid:65534");
  EXPECT_EQ(identity_from_zap("NULL", "localhost:0:0:1", ""), "uid:0");
  EXPECT_EQ(identity_from_zap("NULL", "127.0.0.1", ""), "anonymous");
  EXPECT_EQ(identity_from_zap("NULL", "::1", ""), "anonymous");
  EXPECT_EQ(identity_from_zap("NULL", "localhost:1:2", ""), "anonymous");
  EXPECT_EQ(identity_from_zap("NULL", "localhost:1:2:3:4", ""), "anonymous");
  EXPECT_EQ(identity_from_zap("CURVE", "127.0.0.1", "abc"), "key:abc");
}

}  // namespace
}  // namespace nv::test
