// guest_agent_test.cc — the agent's exec core and Session on the build host, no VM.
//
// The exec core runs /bin/sh here exactly as it runs python/node in the guest: own process
// group, rlimits, timeout that kills the group, output cap with counting. The Session is served
// on one end of a socketpair and driven by the real host GuestChannel on the other, so both
// ends of the protocol are exercised together.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <capnp/message.h>
#include <nv/schema/guest.capnp.h>

#include "guest/agent/exec_core.h"
#include "guest/agent/session.h"
#include "guest/host/guest_channel.h"
#include "tests/unit/agent_on_socketpair.h"

namespace nv::guest {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using agent::OutStream;

struct Collected {
  std::string out, err;
  size_t chunks = 0;
  size_t biggest = 0;
};

agent::ExecOutcome run_sh(const std::string& script, Collected& c,
                          std::chrono::milliseconds timeout = 5s, uint64_t cap = 1 << 20,
                          const std::string& stdin_data = "") {
  agent::ExecSpec spec;
  spec.argv = {"/bin/sh", "-c", script};
  spec.env = {"PATH=/usr/bin:/bin", "NEUROVISOR_TRACE_ID=trace-1"};
  spec.cwd = "/";
  spec.timeout = timeout;
  spec.output_cap = cap;
  spec.stdin_data = stdin_data;
  return agent::run_exec(spec, [&](OutStream s, std::string_view d) {
    (s == OutStream::out ? c.out : c.err).append(d);
    ++c.chunks;
    c.biggest = std::max(c.biggest, d.size());
  });
}

TEST(ExecCore, StdoutStderrExitCodeAndEnvironment) {
  Collected c;
  auto o = run_sh("echo out-$((6*7)); echo err >&2; echo $NEUROVISOR_TRACE_ID; exit 3", c);
  EXPECT_EQ(o.error, "");
  EXPECT_EQ(o.exit_code, 3);
  EXPECT_EQ(o.signal, 0);
  EXPECT_FALSE(o.timed_out);
  EXPECT_FALSE(o.truncated);
  EXPECT_EQ(c.out, "out-42\ntrace-1\n");
  EXPECT_EQ(c.err, "err\n");
  EXPECT_EQ(o.stdout_bytes, 15u);
  EXPECT_EQ(o.stderr_bytes, 4u);
}

TEST(ExecCore, StdinIsDeliveredAndClosed) {
  Collected c;
  std::string big(200 * 1024, 'z');  // larger than a pipe buffer
  auto o = run_sh("wc -c", c, 5s, 1 << 20, big);
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_EQ(std::stoul(c.out), 204800u) << c.out;
}

TEST(ExecCore, TimeoutKillsTheWholeProcessGroup) {
  char dir[] = "/tmp/nv-exec-XXXXXX";
  ASSERT_TRUE(::mkdtemp(dir));
  std::string pidfile = std::string(dir) + "/bg.pid";
  Collected c;
  auto t0 = Clock::now();
  // A background child in the same group, then the main process spins.
  auto o = run_sh("sleep 30 & echo $! > " + pidfile + "; while :; do :; done", c, 400ms);
  auto took = Clock::now() - t0;
  EXPECT_TRUE(o.timed_out);
  EXPECT_EQ(o.exit_code, -1);
  EXPECT_EQ(o.signal, SIGKILL);
  EXPECT_GE(o.duration_ms, 390);
  EXPECT_LT(took, 2s);
  std::ifstream f(pidfile);
  pid_t bg = 0;
  f >> bg;
  ASSERT_GT(bg, 0);
  // The background sleep was killed with its group (it may linger as a zombie of init briefly).
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    std::ifstream st("/proc/" + std::to_string(bg) + "/stat");
    std::string line;
    gone = !std::getline(st, line) || line.find(") Z ") != std::string::npos;
    if (!gone) std::this_thread::sleep_for(10ms);  // polling another process's state
  }
  EXPECT_TRUE(gone) << "background process " << bg << " survived the timeout";
  std::system(("rm -rf " + std::string(dir)).c_str());
}

TEST(ExecCore, AnEndlessWriterPastTheCapEndsAtTheTimeout) {
  Collected c;
  auto t0 = Clock::now();
  auto o = run_sh("yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", c, 1500ms,
                  256 * 1024);
  auto took = Clock::now() - t0;
  EXPECT_TRUE(o.timed_out);
  EXPECT_TRUE(o.truncated);
  EXPECT_GT(o.stdout_bytes, 256u * 1024);
  EXPECT_EQ(c.out.size(), 256u * 1024);
  EXPECT_LT(took, 5s) << "the result came " << std::chrono::duration<double>(took).count()
                      << " s after the start";
}

TEST(ExecCore, OutputCapCountsEverythingSendsAtMostTheCap) {
  Collected c;
  auto o = run_sh("head -c 1000000 /dev/zero | tr '\\0' a; echo tail >&2", c, 5s, 1000);
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_TRUE(o.truncated);
  EXPECT_EQ(o.stdout_bytes, 1000000u);
  EXPECT_EQ(o.stderr_bytes, 5u);
  EXPECT_EQ(c.out.size() + c.err.size(), 1000u);
}

// Past the cap the end of each stream is kept in a ring: the result line and the error survive.
TEST(ExecCore, TheTailOfEachStreamSurvivesTheCap) {
  Collected c;
  agent::ExecSpec spec;
  spec.argv = {"/bin/sh", "-c",
               "i=0; while [ $i -lt 3000 ]; do echo progress $i; i=$((i+1)); done; "
               "echo FINAL_SUM=499500; echo 'ValueError: boom' >&2; exit 1"};
  spec.env = {"PATH=/usr/bin:/bin"};
  spec.cwd = "/";
  spec.output_cap = 1000;
  spec.tail_bytes = 64;
  auto o = agent::run_exec(spec, [&](OutStream s, std::string_view d) {
    (s == OutStream::out ? c.out : c.err).append(d);
  });
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_TRUE(o.truncated);
  EXPECT_EQ(c.out.size(), 1000u);
  EXPECT_EQ(c.out.substr(0, 22), "progress 0\nprogress 1\n");
  // The last 64 bytes of stdout, exactly; stderr was past the cap entirely: all of it.
  EXPECT_EQ(o.stdout_tail, "2996\nprogress 2997\nprogress 2998\nprogress 2999\nFINAL_SUM=499500\n");
  EXPECT_EQ(o.stderr_tail, "ValueError: boom\n");
  EXPECT_EQ(c.err, "");
  // A second shape: one big write far past the ring's size.
  Collected big;
  auto o2 = run_sh("head -c 300000 /dev/zero | tr '\\0' a; printf END", big, 5s, 100);
  EXPECT_EQ(o2.stdout_bytes, 300003u);
  EXPECT_EQ(o2.stdout_tail.size(), 64u * 1024);
  EXPECT_EQ(o2.stdout_tail.substr(o2.stdout_tail.size() - 4), "aEND");
}

// The caller's environment wins over the guest's defaults; each name appears once.
TEST(AgentEnv, CallerVariablesReplaceDefaultsInPlace) {
  std::vector<std::string> base = {"PATH=/bin", "HOME=/tmp", "LANG=C.UTF-8"};
  EXPECT_EQ(agent::merge_env(base, {{"HOME", "/tmp/home"}, {"TZ", "UTC"}, {"GREETING", "a=b c"}}),
            (std::vector<std::string>{"PATH=/bin", "HOME=/tmp/home", "LANG=C.UTF-8", "TZ=UTC",
                                      "GREETING=a=b c"}));
  // A second input: the same name twice from the caller, and a default overridden to empty.
  EXPECT_EQ(agent::merge_env(base, {{"X", "1"}, {"LANG", ""}, {"X", "2"}}),
            (std::vector<std::string>{"PATH=/bin", "HOME=/tmp", "LANG=", "X=2"}));
}

TEST(ExecCore, ChunksAreAtMost64KiBAndCoalesced) {
  Collected c;
  auto o = run_sh("head -c 1000000 /dev/zero", c, 5s, 2 << 20);
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_EQ(c.out.size(), 1000000u);
  EXPECT_LE(c.biggest, 64u * 1024);
  EXPECT_GE(c.chunks, 1000000u / (64 * 1024));
  Collected many;
  auto o2 = run_sh("i=0; while [ $i -lt 2000 ]; do echo $i; i=$((i+1)); done", many);
  EXPECT_EQ(o2.exit_code, 0);
  EXPECT_LT(many.chunks, 200u) << "2000 tiny writes should be coalesced into few chunks";
}

TEST(ExecCore, StartFailuresNameTheCallAndErrno) {
  Collected c;
  agent::ExecSpec spec;
  spec.argv = {"/nonexistent/interpreter", "-c", "x"};
  auto o = agent::run_exec(spec, [](OutStream, std::string_view) {});
  EXPECT_EQ(o.exit_code, -1);
  EXPECT_NE(o.error.find("execve()"), std::string::npos) << o.error;
  EXPECT_NE(o.error.find("errno 2"), std::string::npos) << o.error;
  spec.argv = {"/bin/sh", "-c", "true"};
  spec.cwd = "/nonexistent-dir";
  o = agent::run_exec(spec, [](OutStream, std::string_view) {});
  EXPECT_NE(o.error.find("chdir"), std::string::npos) << o.error;
  spec.argv = {"relative"};
  o = agent::run_exec(spec, [](OutStream, std::string_view) {});
  EXPECT_NE(o.error.find("absolute"), std::string::npos) << o.error;
}

TEST(ExecCore, RlimitsApply) {
  Collected c;
  auto o = run_sh("cat /proc/self/limits", c);
  EXPECT_EQ(o.exit_code, 0);
  auto has = [&](const std::string& re) {
    std::istringstream in(c.out);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(re, 0) == 0) return line;
    }
    return std::string();
  };
  EXPECT_NE(has("Max core file size").find(" 0 "), std::string::npos) << c.out;
  EXPECT_NE(has("Max open files").find(" 1024 "), std::string::npos) << c.out;
  EXPECT_NE(has("Max processes").find(" 256 "), std::string::npos) << c.out;
  EXPECT_NE(has("Max file size").find(" 268435456 "), std::string::npos) << c.out;
}

TEST(ExecCore, OomScoreAdjIsSetForTheProgram) {
  agent::ExecSpec spec;
  spec.argv = {"/bin/sh", "-c", "cat /proc/self/oom_score_adj"};
  spec.oom_score_adj = 1000;  // raising is always permitted
  std::string out;
  auto o = agent::run_exec(spec, [&](OutStream, std::string_view d) { out.append(d); });
  EXPECT_EQ(o.exit_code, 0) << o.error;
  EXPECT_EQ(out, "1000\n");
}

// ---- Session + GuestChannel over a socketpair --------------------------------------------------

TEST_F(AgentOnSocketpair, HelloListsInstalledLanguages) {
  auto& ch = connect();
  EXPECT_EQ(ch.hello().agent_version, agent::kAgentVersion);
  EXPECT_EQ(ch.hello().boot_id, "fake-boot");
  EXPECT_EQ(ch.hello().uptime_ms, 1234u);
  bool has_sh = false;
  for (auto l : ch.hello().languages) has_sh |= l == schema::Language::SH;
  EXPECT_TRUE(has_sh);
}

TEST_F(AgentOnSocketpair, ExecStreamsChunksAndResult) {
  auto& ch = connect();
  ExecSpec spec;
  spec.id = 5;
  spec.language = schema::Language::SH;
  spec.code = "echo $((6*7)) $GREETING $NEUROVISOR_TRACE_ID; pwd; cat; echo oops >&2; exit 4";
  spec.stdin_data = "from-stdin\n";
  spec.env = {{"GREETING", "hi"}};
  spec.trace_id = "0190-trace";
  std::string out, err;
  auto r = ch.exec(
      spec,
      [&](schema::Stream s, std::string_view d) {
        (s == schema::Stream::STDOUT ? out : err).append(d);
      },
      Clock::now() + 10s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->exit_code, 4);
  EXPECT_EQ(out, "42 hi 0190-trace\n" + dir_ + "\nfrom-stdin\n");
  EXPECT_EQ(err, "oops\n");
  EXPECT_EQ(r->stdout_bytes, out.size());
  EXPECT_EQ(r->received_bytes, out.size() + err.size());
  EXPECT_GT(r->duration_ms, 0);
}

TEST_F(AgentOnSocketpair, ExecTimeoutAndOutputCapThroughTheProtocol) {
  auto& ch = connect();
  ExecSpec spec;
  spec.language = schema::Language::SH;
  spec.code = "while :; do :; done";
  spec.timeout_ms = 300;
  auto r = ch.exec(spec, nullptr, Clock::now() + 10s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->timed_out);
  EXPECT_EQ(r->signal, SIGKILL);
  spec.id = 2;
  spec.code = "head -c 50000 /dev/zero";
  spec.timeout_ms = 5000;
  spec.output_cap_bytes = 1000;
  size_t got = 0;
  r = ch.exec(
      spec, [&](schema::Stream, std::string_view d) { got += d.size(); }, Clock::now() + 10s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->truncated);
  EXPECT_EQ(got, 1000u);
  EXPECT_EQ(r->stdout_bytes, 50000u);
  // The tail ring crosses the protocol: the last tail_bytes of each stream past the cap.
  spec.id = 3;
  spec.code = "seq 1 20000; echo done >&2";
  spec.tail_bytes = 12;
  r = ch.exec(spec, nullptr, Clock::now() + 10s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->stdout_tail, "19999\n20000\n");
  EXPECT_EQ(r->stderr_tail, "done\n");
}

TEST_F(AgentOnSocketpair, BadExecRequestsGetAResultWithAnError) {
  auto& ch = connect();
  ExecSpec spec;
  spec.language = static_cast<schema::Language>(77);
  spec.code = "x";
  auto r = ch.exec(spec, nullptr, Clock::now() + 5s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_NE(r->error.find("not supported"), std::string::npos) << r->error;
  spec.language = schema::Language::SH;
  spec.env = {{"BAD=NAME", "v"}};
  r = ch.exec(spec, nullptr, Clock::now() + 5s);
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->error.find("environment"), std::string::npos) << r->error;
  // The channel is still usable.
  EXPECT_TRUE(ch.ping(Clock::now() + 2s).ok());
}

TEST_F(AgentOnSocketpair, PutAndGetFilesWithinBounds) {
  auto& ch = connect();
  std::string path = dir_ + "/sub/data.bin";
  std::string data(100000, '\x01');
  data[5] = '\0';
  ASSERT_FALSE(ch.put_file(path, data, 0600, Clock::now() + 5s));
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  auto g = ch.get_file(path, Clock::now() + 5s);
  ASSERT_TRUE(g.ok()) << g.error().message;
  EXPECT_EQ(g.value(), data);
  // Outside the writable roots, with '..', missing, and too big: typed guest errors.
  auto e = ch.put_file("/etc/nv-should-not-exist", "x", 0, Clock::now() + 5s);
  EXPECT_EQ(e.code, ChannelErrc::guest_error);
  e = ch.put_file(dir_ + "/../escape", "x", 0, Clock::now() + 5s);
  EXPECT_EQ(e.code, ChannelErrc::guest_error);
  auto m = ch.get_file(dir_ + "/missing", Clock::now() + 5s);
  EXPECT_EQ(m.error().code, ChannelErrc::guest_error);
  EXPECT_NE(m.error().message.find("errno 2"), std::string::npos) << m.error().message;
  std::string big = dir_ + "/big";
  ASSERT_FALSE(ch.put_file(big, std::string(2 << 20, 'b'), 0, Clock::now() + 5s));
  auto b = ch.get_file(big, Clock::now() + 5s);
  EXPECT_EQ(b.error().code, ChannelErrc::guest_error);
  EXPECT_NE(b.error().message.find("at most"), std::string::npos) << b.error().message;
  EXPECT_TRUE(ch.is_open());
}

TEST_F(AgentOnSocketpair, ReseedCallsTheSystemAndValidatesTheId) {
  auto& ch = connect();
  std::string entropy(32, '\x5a');
  auto r = ch.reseed(entropy, "vm-0042", 1700000000123456789LL, Clock::now() + 5s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->vm_id, "vm-0042");
  EXPECT_EQ(r->boot_id, "fake-boot");
  EXPECT_EQ(ops_.entropy, entropy);
  EXPECT_EQ(ops_.vm_id, "vm-0042");
  EXPECT_EQ(ops_.clock_ns, 1700000000123456789LL);
  auto bad = ch.reseed(entropy, "bad id/with slash", 0, Clock::now() + 5s);
  EXPECT_EQ(bad.error().code, ChannelErrc::guest_error);
  auto few = ch.reseed("short", "vm-1", 0, Clock::now() + 5s);
  EXPECT_EQ(few.error().code, ChannelErrc::guest_error);
}

TEST_F(AgentOnSocketpair, MalformedFrameGetsAnErrorAndTheAgentGoesOn) {
  // Valid length, garbage body: the agent answers an error (which the host's connect skips as
  // stale) and keeps serving the same stream.
  raw_send(std::string("\x10\x00\x00\x00", 4) + std::string(16, '\xee'));
  auto& ch = connect();
  ASSERT_TRUE(channel_);
  EXPECT_TRUE(ch.ping(Clock::now() + 2s).ok());
  EXPECT_FALSE(dropped_);
}

TEST_F(AgentOnSocketpair, OversizedFrameIsAnsweredAndDropped) {
  raw_send(std::string("\xff\xff\xff\x7f", 4));
  char buf[4096];
  std::string got;
  // Hello, then an error frame; then the agent drops the stream.
  for (int i = 0; i < 50 && !dropped_; ++i) {
    ssize_t r = ::recv(host_fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (r > 0) got.append(buf, static_cast<size_t>(r));
    std::this_thread::sleep_for(20ms);  // waiting on another thread's state, bounded
  }
  ssize_t r;
  while ((r = ::recv(host_fd_, buf, sizeof buf, MSG_DONTWAIT)) > 0) got.append(buf, r);
  EXPECT_TRUE(dropped_);
  EXPECT_NE(got.find("frame longer than the cap"), std::string::npos);
}

TEST_F(AgentOnSocketpair, ShutdownEndsTheStream) {
  auto& ch = connect();
  auto e = ch.shutdown(Clock::now() + 5s);
  EXPECT_FALSE(e) << e.message;
  EXPECT_TRUE(shutdown_seen_);
}

// Random and bit-flipped frames: the Session answers or drops, never crashes or throws.
TEST(SessionFuzz, RandomAndMutatedFramesNeverCrash) {
  char tmpl[] = "/tmp/nv-fuzz-XXXXXX";
  ASSERT_TRUE(::mkdtemp(tmpl));
  agent::AgentConfig cfg;
  cfg.languages = {};  // nothing runs, whatever a mutation turns into
  cfg.writable_roots = {tmpl};
  FakeOps ops;
  size_t written = 0;
  std::mt19937 rng(12345);
  // Valid requests of every kind, to mutate.
  std::vector<std::string> seeds;
  auto add = [&](auto fill) {
    capnp::MallocMessageBuilder mb;
    auto m = mb.initRoot<schema::HostMessage>();
    m.setVersion(schema::SCHEMA_VERSION);
    fill(m);
    seeds.push_back(encode_frame(mb));
  };
  add([](auto m) { m.setPing(7); });
  add([&](auto m) {
    auto x = m.initExec();
    x.setLanguage(schema::Language::SH);
    x.setCode("echo hi");
    x.initEnv(2)[1].setName("A");
  });
  add([&](auto m) {
    auto p = m.initPutFile();
    p.setPath(std::string(tmpl) + "/f");
    p.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>("data"), 4));
  });
  add([](auto m) { m.setGetFile("/proc/self/status"); });
  add([](auto m) {
    auto r = m.initReseed();
    std::string e(32, 'e');
    r.setEntropy(kj::arrayPtr(reinterpret_cast<const kj::byte*>(e.data()), e.size()));
    r.setVmId("vm-1");
  });
  int sessions = 0;
  for (int round = 0; round < 3000; ++round) {
    agent::Session s(cfg, ops, [&](std::string_view b) {
      written += b.size();
      return true;
    });
    ++sessions;
    std::string f;
    if (round % 3 == 0) {
      size_t words = 1 + rng() % 64;
      f = std::string("\0\0\0\0", 4);
      uint32_t n = static_cast<uint32_t>(words * 8);
      std::memcpy(f.data(), &n, 4);
      for (size_t i = 0; i < words * 8; ++i) f += static_cast<char>(rng());
    } else {
      f = seeds[rng() % seeds.size()];
      int flips = 1 + static_cast<int>(rng() % 4);
      for (int k = 0; k < flips; ++k) {
        f[4 + rng() % (f.size() - 4)] ^= static_cast<char>(1 << (rng() % 8));
      }
    }
    (void)s.on_bytes(f.data(), f.size());
  }
  EXPECT_EQ(sessions, 3000);
  EXPECT_GT(written, 0u);
  std::system(("rm -rf " + std::string(tmpl)).c_str());
}

// ---- connect(): a Firecracker-style hybrid vsock socket that appears late ---------------------

// Listens on `path` (created after `delay`), answers the CONNECT line with `reply`, then serves a
// Session when the reply was OK.
void fake_hybrid_vsock(const std::string& path, std::chrono::milliseconds delay,
                       const std::string& reply, std::string* seen_request) {
  std::this_thread::sleep_for(delay);  // the socket appearing late is the scenario under test
  int l = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  ASSERT_EQ(::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(l, 1), 0);
  int c = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
  ::close(l);
  ASSERT_GE(c, 0);
  std::string line;
  char ch;
  while (::recv(c, &ch, 1, 0) == 1 && ch != '\n') line += ch;
  *seen_request = line;
  (void)::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
  if (reply.rfind("OK ", 0) == 0) {
    agent::AgentConfig cfg;
    cfg.languages = agent::default_languages();
    cfg.default_cwd = "/tmp";  // the guest's /home/agent does not exist on the build host
    FakeOps ops;
    agent::Session s(cfg, ops, [c](std::string_view b) {
      return ::send(c, b.data(), b.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(b.size());
    });
    s.on_connect();
    char buf[65536];
    ssize_t r;
    while ((r = ::recv(c, buf, sizeof buf, 0)) > 0) {
      if (!s.on_bytes(buf, static_cast<size_t>(r))) break;
    }
  }
  ::close(c);
}

TEST(HybridVsock, ConnectWaitsForTheSocketThenHandshakes) {
  char tmpl[] = "/tmp/nv-hv-XXXXXX";
  ASSERT_TRUE(::mkdtemp(tmpl));
  const std::string path = std::string(tmpl) + "/vsock.sock";
  std::string seen;
  std::thread fc(fake_hybrid_vsock, path, 200ms, "OK 1073741824\n", &seen);
  auto t0 = Clock::now();
  auto ch = GuestChannel::connect(path, ChannelKind::hybrid_vsock, 6000, Clock::now() + 5s);
  ASSERT_TRUE(ch.ok()) << ch.error().message;
  EXPECT_GE(Clock::now() - t0, 190ms);
  EXPECT_EQ(seen, "CONNECT 6000");
  EXPECT_EQ(ch.value()->hello().agent_version, agent::kAgentVersion);
  ExecSpec spec;
  spec.language = schema::Language::SH;
  spec.code = "echo vsock-ok";
  std::string out;
  auto r = ch.value()->exec(
      spec, [&](schema::Stream, std::string_view d) { out.append(d); }, Clock::now() + 5s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(out, "vsock-ok\n");
  ch.value()->close();
  fc.join();
  std::system(("rm -rf " + std::string(tmpl)).c_str());
}

TEST(HybridVsock, RefusedConnectIsConnectFailed) {
  char tmpl[] = "/tmp/nv-hv-XXXXXX";
  ASSERT_TRUE(::mkdtemp(tmpl));
  const std::string path = std::string(tmpl) + "/vsock.sock";
  std::string seen;
  std::thread fc(fake_hybrid_vsock, path, 0ms, "NOPE port closed\n", &seen);
  auto ch = GuestChannel::connect(path, ChannelKind::hybrid_vsock, 6000, Clock::now() + 5s);
  fc.join();
  ASSERT_FALSE(ch.ok());
  EXPECT_EQ(ch.error().code, ChannelErrc::connect_failed) << ch.error().message;
  EXPECT_NE(ch.error().message.find("NOPE"), std::string::npos) << ch.error().message;
  std::system(("rm -rf " + std::string(tmpl)).c_str());
}

}  // namespace
}  // namespace nv::guest
