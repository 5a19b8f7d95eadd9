// curve_test.cc — CURVE over tcp://127.0.0.1 with keys made by the nv-keygen binary: a client
// whose public key is in the broker's allow-list gets answers; a client with another key, or
// with no CURVE at all, gets nothing through and the worker never sees its request.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "bus_harness.h"
#include "common/curve.h"

namespace nv::test {
namespace {

std::string bin_dir() {
  const char* env = std::getenv("NV_BIN_DIR");
  return env ? env : NV_TEST_BIN_DIR;
}

// Runs nv-keygen with `args`; returns its exit code and fills `output` (stdout + stderr).
int keygen(const std::string& args, std::string* output = nullptr) {
  std::string cmd = bin_dir() + "/nv-keygen " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return -1;
  std::string out;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int rc = ::pclose(p);
  if (output) *output = out;
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A TCP port on 127.0.0.1 that was free a moment ago.
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

TEST(Keygen, WritesKeyPairWithPrivateSecret) {
  TempDir dir;
  std::string out;
  ASSERT_EQ(keygen("alice --dir " + dir.path(), &out), 0) << out;
  struct stat st {};
  ASSERT_EQ(::stat((dir.path() + "/alice.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((dir.path() + "/alice.pub").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0077 & ~0044u, 0u) << "the .pub must not be group/world writable";
  auto key = curve::load(dir.path() + "/alice.key");
  ASSERT_TRUE(key) << key.error().to_string();
  auto pub = curve::load(dir.path() + "/alice.pub");
  ASSERT_TRUE(pub) << pub.error().to_string();
  EXPECT_EQ(key->public_key, pub->public_key);
  EXPECT_EQ(key->secret_key.size(), 40u);
  EXPECT_TRUE(pub->secret_key.empty());
  EXPECT_EQ(read_file(dir.path() + "/alice.pub").find("secret"), std::string::npos);
  EXPECT_NE(out.find(key->public_key), std::string::npos) << out;
}

TEST(Keygen, RefusesToOverwrite) {
  TempDir dir;
  ASSERT_EQ(keygen("bob --dir " + dir.path()), 0);
  auto before = read_file(dir.path() + "/bob.key");
  std::string out;
  EXPECT_EQ(keygen("bob --dir " + dir.path(), &out), 1);
  EXPECT_NE(out.find("overwrit"), std::string::npos) << out;
  EXPECT_EQ(read_file(dir.path() + "/bob.key"), before);
  // A lone .pub also blocks the pair, so no half-written pair is left.
  ::unlink((dir.path() + "/bob.key").c_str());
  EXPECT_EQ(keygen("bob --dir " + dir.path()), 1);
  struct stat st {};
  EXPECT_NE(::stat((dir.path() + "/bob.key").c_str(), &st), 0);
}

TEST(Keygen, HelpAndUsageErrors) {
  std::string out;
  EXPECT_EQ(keygen("--help", &out), 0);
  EXPECT_NE(out.find("usage: nv-keygen NAME"), std::string::npos) << out;
  EXPECT_NE(out.find("--dir"), std::string::npos) << out;
  EXPECT_EQ(keygen("", &out), 2) << out;
  EXPECT_EQ(keygen("a b", &out), 2) << out;
  EXPECT_EQ(keygen("--bogus x", &out), 2) << out;
  EXPECT_EQ(keygen("../escape", &out), 2) << out;
}

class Curve : public ::testing::Test {
 protected:
  void SetUp() override {
    // Keys as an operator makes them: nv-keygen, with only allowed .pub files in the allow dir.
    std::string keys = h.dir.path() + "/keys", allow = h.dir.path() + "/allow";
    ASSERT_EQ(::mkdir(keys.c_str(), 0700), 0);
    ASSERT_EQ(::mkdir(allow.c_str(), 0700), 0);
    for (const char* name : {"orchestrator", "allowed-client", "stranger"}) {
      ASSERT_EQ(keygen(std::string(name) + " --dir " + keys), 0);
    }
    ASSERT_EQ(keygen("other-allowed --dir " + allow), 0);
    ASSERT_EQ(
        ::link((keys + "/allowed-client.pub").c_str(), (allow + "/allowed-client.pub").c_str()), 0);
    auto server = curve::load(keys + "/orchestrator.key");
    ASSERT_TRUE(server) << server.error().to_string();
    auto allowed = curve::load_allow_list(allow);
    ASSERT_TRUE(allowed) << allowed.error().to_string();
    ASSERT_EQ(allowed->size(), 2u);
    client_keys = curve::load(keys + "/allowed-client.key").value();
    stranger_keys = curve::load(keys + "/stranger.key").value();
    server_public = server->public_key;
    int port = free_port();
    ASSERT_GT(port, 0);
    tcp = "tcp://127.0.0.1:" + std::to_string(port);
    h.options.client_endpoints.push_back(tcp);
    h.options.curve_keys = server.value();
    h.options.curve_allow = allowed.value();
    h.start();
    worker = std::make_unique<WorkerThread>(h.ctx, h.worker_options("echo", 4, "echo-1"),
                                            echo_handler("echo-1", &seen));
  }
  void TearDown() override { worker.reset(); }

  ClientOptions tcp_options(const std::optional<curve::KeyPair>& keys) {
    ClientOptions o;
    o.endpoint = tcp;
    o.curve_keys = keys;
    o.curve_server_key = keys ? server_public : "";
    return o;
  }

  BrokerHarness h;
  std::string tcp, server_public;
  curve::KeyPair client_keys, stranger_keys;
  std::atomic<int> seen{0};
  std::unique_ptr<WorkerThread> worker;
};

TEST_F(Curve, AllowedClientGetsAnswers) {
  Client client(h.ctx, tcp_options(client_keys));
  for (int i = 0; i < 3; ++i) {
    capnp::MallocMessageBuilder mb;
    fill_event(mb, "over-tcp-" + std::to_string(i));
    auto r = client.call("echo", &mb, 5s);
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_EQ(topic_of(r->body), "over-tcp-" + std::to_string(i));
  }
  EXPECT_EQ(seen.load(), 3);
  auto s = status(client);
  EXPECT_NE(std::find(s.endpoints.begin(), s.endpoints.end(), tcp), s.endpoints.end());
}

TEST_F(Curve, UnlistedKeyGetsNothingThrough) {
  Client stranger(h.ctx, tcp_options(stranger_keys));
  capnp::MallocMessageBuilder mb;
  fill_event(mb, "let-me-in");
  stranger.send("echo", &mb, 5s);
  stranger.send("nv.status", nullptr, 5s);
  EXPECT_FALSE(stranger.receive(1500ms).has_value()) << "a refused client got an answer";
  // An allowed client on the same endpoint is served meanwhile, and the worker saw only it.
  Client friendly(h.ctx, tcp_options(client_keys));
  capnp::MallocMessageBuilder ok;
  fill_event(ok, "friend");
  auto r = friendly.call("echo", &ok, 5s);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(topic_of(r->body), "friend");
  EXPECT_EQ(seen.load(), 1);
  EXPECT_FALSE(stranger.receive(100ms).has_value());
}

TEST_F(Curve, PlaintextClientGetsNothingThrough) {
  Client plain(h.ctx, tcp_options(std::nullopt));
  capnp::MallocMessageBuilder mb;
  fill_event(mb, "no-crypto");
  plain.send("echo", &mb, 5s);
  EXPECT_FALSE(plain.receive(1500ms).has_value());
  EXPECT_EQ(seen.load(), 0);
}

TEST_F(Curve, ClientWithWrongServerKeyGetsNothingThrough) {
  auto o = tcp_options(client_keys);
  o.curve_server_key = stranger_keys.public_key;  // not the orchestrator's key
  Client confused(h.ctx, o);
  capnp::MallocMessageBuilder mb;
  fill_event(mb, "wrong-server");
  confused.send("echo", &mb, 5s);
  EXPECT_FALSE(confused.receive(1500ms).has_value());
  EXPECT_EQ(seen.load(), 0);
}

}  // namespace
}  // namespace nv::test
