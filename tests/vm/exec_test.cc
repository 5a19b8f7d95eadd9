// exec_test — nv-sandbox-executor and nv-exec against real microVMs (QEMU; TCG on CI machines).
//
// One stack for the whole binary (VMs are slow to boot under TCG, so they are shared): an
// nv-orchestrator, an nv-vm-pool-manager serving the small tier only (--warm 2 --max 3) and an
// nv-sandbox-executor, all children in a temp NV_RUNTIME_DIR. Skips, saying why, when the
// binaries or the guest image ($NV_BUILD_DIR/guest/{vmlinux,rootfs.ext4}) are missing.
// The cases run in file order; the one that kills the executor comes last and restarts it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <sstream>

#include "support/process.h"
#include "vm/exec_harness.h"

namespace {

using namespace std::chrono_literals;
using nv::schema::Language;
using nv::schema::Stream;
using nv::test::Process;
using nv::test::exec::ExecOptions;
using nv::test::exec::ExecOutcome;

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

std::string random_token() {
  std::random_device rd;
  std::ostringstream ss;
  ss << "nvtok" << std::hex << rd() << rd() << rd();
  return ss.str();
}

// VmRSS of a process in KiB (0 when unreadable).
long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

std::string proc_status_field(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      auto v = line.substr(field.size() + 1);
      return v.substr(v.find_first_not_of(" \t"));
    }
  }
  return {};
}

class ExecStack : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string build = std::getenv("NV_BUILD_DIR") ? std::getenv("NV_BUILD_DIR") : "";
    kernel_ = build + "/guest/vmlinux";
    rootfs_ = build + "/guest/rootfs.ext4";
    for (auto name : {"nv-orchestrator", "nv-vm-pool-manager", "nv-sandbox-executor", "nv-exec"}) {
      if (!exists(nv::test::bin(name))) {
        skip_ = std::string(name) + " is not built ($NV_BIN_DIR=" + nv::test::bin("") + ")";
        return;
      }
    }
    if (!exists(kernel_) || !exists(rootfs_)) {
      skip_ = "guest image missing: run guest/build.sh " + build + "/guest " + build +
              "/bin/nv-guest-agent (needs " + kernel_ + " and " + rootfs_ + ")";
      return;
    }
    rt_ = std::make_unique<nv::test::TempDir>("nv-exec-test");
    token_ = random_token();
    marker_ = rt_->file("host-marker.txt");
    std::ofstream(marker_) << token_ << "\n";
    env_ = {{"NV_RUNTIME_DIR", rt_->path()}, {"NV_LOG_LEVEL", "info"}};
    orch_ = std::make_unique<Process>(
        Process::start({.binary = nv::test::bin("nv-orchestrator"), .args = {}, .env = env_}));
    pool_ = std::make_unique<Process>(Process::start(
        {.binary = nv::test::bin("nv-vm-pool-manager"),
         .args = {"--kernel", kernel_, "--rootfs", rootfs_, "--size", "small", "--warm", "2",
                  "--max", "3", "--accel", "tcg",
                  // no nv-ebpf-sentinel in this stack: lease without egress enforcement
                  "--no-require-egress"},
         .env = env_}));
    start_executor();
    zmq_ = std::make_unique<zmq::context_t>(1);
    client_ = std::make_unique<nv::Client>(
        *zmq_, nv::ClientOptions{nv::bus::ipc_endpoint(rt_->file("clients.sock")), {}, {}, {}});
    bool ready = nv::test::wait_until(
        [&] {
          auto w = nv::test::exec::exec_workers(*client_);
          return !w.empty() && w[0].capacity > 0;
        },
        120s, 250ms);
    if (!ready) {
      setup_error_ =
          "the executor never registered with capacity > 0 (VMs not booting?)\n"
          "--- pool manager:\n" +
          pool_->stderr_text() + "\n--- executor:\n" + exec_->stderr_text();
    }
  }

  // `host_grace_ms` 0 makes the host deadline fire before the agent's own timeout answer can
  // arrive (the last case uses that to see the host kill the VM).
  static void start_executor(const std::string& host_grace_ms = "2000") {
    auto env = env_;
    env["NV_TEST_SECRET"] = token_;  // in the executor's environment: must not reach the guest
    exec_ = std::make_unique<Process>(
        Process::start({.binary = nv::test::bin("nv-sandbox-executor"),
                        .args = {"--guest-rate-bytes", "4194304", "--guest-burst-bytes", "8388608",
                                 "--host-grace-ms", host_grace_ms},
                        .env = env}));
  }

  static void TearDownTestSuite() {
    client_.reset();
    zmq_.reset();
    for (auto* p : {&exec_, &pool_, &orch_}) {
      if (*p) (*p)->terminate(20s);
      p->reset();
    }
    rt_.reset();
  }

  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  }

  ExecOutcome run(Language l, const std::string& code, ExecOptions o = {}) {
    return nv::test::exec::run_exec(*client_, l, code, o);
  }

  nv::test::RunResult nv_exec(std::vector<std::string> args, std::optional<std::string> in = {}) {
    if (std::find(args.begin(), args.end(), "--timeout") == args.end()) {
      args.insert(args.begin(), {"--timeout", "60"});  // node starts slowly under TCG
    }
    return nv::test::run({.binary = nv::test::bin("nv-exec"),
                          .args = std::move(args),
                          .env = env_,
                          .stdin_text = std::move(in)},
                         150s);
  }

  bool vm_released(const std::string& id, std::chrono::milliseconds within = 20s) {
    return nv::test::wait_until(
        [&] {
          auto ids = nv::test::exec::released_vms(*client_);
          return std::find(ids.begin(), ids.end(), id) != ids.end();
        },
        within, 200ms);
  }

  std::string logs() {
    return "\n--- executor:\n" + exec_->stderr_text().substr(0, 20000) + "\n--- pool:\n" +
           pool_->stderr_text().substr(0, 10000);
  }

  static inline std::string skip_, setup_error_, kernel_, rootfs_, token_, marker_;
  static inline std::map<std::string, std::string> env_;
  static inline std::unique_ptr<nv::test::TempDir> rt_;
  static inline std::unique_ptr<Process> orch_, pool_, exec_;
  static inline std::unique_ptr<zmq::context_t> zmq_;
  static inline std::unique_ptr<nv::Client> client_;
};

// ------------------------------------------------------------------ through nv::Client / "exec"

TEST_F(ExecStack, ExecutorRunsWithoutCapabilities) {
  EXPECT_EQ(proc_status_field(exec_->pid(), "CapEff"), "0000000000000000");
  EXPECT_EQ(proc_status_field(exec_->pid(), "CapPrm"), "0000000000000000");
  EXPECT_EQ(proc_status_field(exec_->pid(), "NoNewPrivs"), "1");
  EXPECT_EQ(proc_status_field(exec_->pid(), "Seccomp"), "2");
}

TEST_F(ExecStack, PythonBashJavascriptReturnOutputAndExitCode) {
  auto py = run(Language::PYTHON, "import sys\nprint(2**100)\nsys.exit(3)\n");
  ASSERT_TRUE(py.ok) << py.describe() << logs();
  EXPECT_EQ(py.out, "1267650600228229401496703205376\n");
  EXPECT_EQ(py.exit_code, 3);
  EXPECT_FALSE(py.timed_out);
  // Streamed: the status chunk first, then the output as partials.
  ASSERT_FALSE(py.chunks.empty());
  EXPECT_EQ(py.chunks[0].first, Stream::STATUS);
  EXPECT_EQ(py.chunks[0].second, "started vm=" + py.vm_id);
  EXPECT_EQ(py.streamed(Stream::STDOUT), py.out);

  auto sh = run(Language::BASH, "echo $((6*7)); echo oops >&2; exit 5");
  ASSERT_TRUE(sh.ok) << sh.describe() << logs();
  EXPECT_EQ(sh.out, "42\n");
  EXPECT_EQ(sh.err, "oops\n");
  EXPECT_EQ(sh.exit_code, 5);
  EXPECT_NE(sh.vm_id, py.vm_id) << "a VM must never be reused";

  auto js = run(Language::JAVASCRIPT, "console.log([1,2,3].map(x => x * 2).join(','))");
  ASSERT_TRUE(js.ok) << js.describe() << logs();
  EXPECT_EQ(js.out, "2,4,6\n");
  EXPECT_EQ(js.exit_code, 0);
  EXPECT_NE(js.vm_id, sh.vm_id);
  EXPECT_TRUE(vm_released(py.vm_id)) << "VM " << py.vm_id << " was not destroyed" << logs();
}

TEST_F(ExecStack, InvalidRequestIsRefusedWithEveryProblem) {
  capnp::MallocMessageBuilder mb;
  auto r = nv::bus::init_body<nv::schema::ExecRequest>(mb);
  r.setLanguage(static_cast<Language>(42));
  r.setCode("");
  r.setTimeoutMs(100u * 60 * 60 * 1000);
  auto env = r.initEnv(1);
  env[0].setName("BAD=NAME");
  auto reply = client_->call("exec", &mb, 10s);
  ASSERT_FALSE(reply);
  EXPECT_EQ(reply.error().code, nv::ErrorCode::BAD_REQUEST) << reply.error().to_string();
  for (auto part : {"language 42", "code is empty", "timeoutMs", "BAD=NAME"}) {
    EXPECT_NE(reply.error().message.find(part), std::string::npos) << reply.error().message;
  }
}

TEST_F(ExecStack, FilesGoInAndComeBack) {
  ExecOptions o;
  o.stdin_data = "from stdin";
  o.put = {{"/tmp/in.txt", "from a file"}};
  o.get = {"/tmp/out.txt", "/tmp/missing.txt"};
  o.env = {{"GREETING", "hello"}};
  auto r = run(Language::PYTHON,
               "import os,sys\n"
               "data = sys.stdin.read() + '|' + open('/tmp/in.txt').read() + '|' + "
               "os.environ['GREETING']\n"
               "open('/tmp/out.txt','w').write(data.upper())\n"
               "print(os.environ.get('NEUROVISOR_TRACE_ID', 'none') != 'none')\n",
               o);
  ASSERT_TRUE(r.ok) << r.describe() << logs();
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out, "True\n");
  ASSERT_EQ(r.files.size(), 1u) << "only /tmp/out.txt exists";
  EXPECT_EQ(r.files[0].first, "/tmp/out.txt");
  EXPECT_EQ(r.files[0].second, "FROM STDIN|FROM A FILE|HELLO");
}

TEST_F(ExecStack, InfiniteLoopTimesOutAndVmIsDestroyed) {
  ExecOptions o;
  o.timeout_ms = 2000;
  auto t0 = std::chrono::steady_clock::now();
  auto r = run(Language::PYTHON, "while True: pass", o);
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(r.ok) << r.describe() << logs();
  EXPECT_TRUE(r.timed_out) << r.describe();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(took, 30s);
  EXPECT_TRUE(vm_released(r.vm_id)) << "VM " << r.vm_id << " was not destroyed" << logs();
  // The executor keeps serving.
  auto next = run(Language::SH, "echo still here");
  ASSERT_TRUE(next.ok) << next.describe() << logs();
  EXPECT_EQ(next.out, "still here\n");
}

TEST_F(ExecStack, EndlessOutputIsTruncatedAtTheCapAndMemoryStaysBounded) {
  long rss_before = rss_kib(exec_->pid());
  ExecOptions o;
  o.timeout_ms = 10000;
  o.output_cap = 256 * 1024;
  auto r = run(Language::PYTHON,
               "import sys\nline = 'x' * 65535 + '\\n'\nwhile True: sys.stdout.write(line)\n", o);
  ASSERT_TRUE(r.ok) << r.describe() << logs();
  EXPECT_TRUE(r.truncated) << r.describe();
  EXPECT_LE(r.out.size() + r.err.size(), 256u * 1024);
  EXPECT_EQ(r.streamed(Stream::STDOUT), r.out) << "streamed output is capped as well";
  EXPECT_GT(r.out_bytes, 256u * 1024) << "the program wrote past the cap: " << r.describe();
  long rss_after = rss_kib(exec_->pid());
  EXPECT_LT(rss_after - rss_before, 64 * 1024)
      << "executor RSS grew from " << rss_before << " KiB to " << rss_after << " KiB";
}

TEST_F(ExecStack, ForkBombAndMemoryBombAreContained) {
  ExecOptions o;
  o.timeout_ms = 20000;
  auto fork_bomb = run(Language::BASH, "bomb() { bomb | bomb & }; bomb; sleep 10", o);
  ASSERT_TRUE(fork_bomb.ok) << fork_bomb.describe() << logs();
  // Contained: the agent's process limit makes fork fail (bash says so), or the run is killed
  // at its timeout; either way a result comes back and the VM is thrown away.
  EXPECT_TRUE(fork_bomb.timed_out || fork_bomb.exit_code != 0 ||
              fork_bomb.err.find("Resource temporarily unavailable") != std::string::npos)
      << fork_bomb.describe();

  auto mem_bomb = run(Language::PYTHON,
                      "chunks = []\nwhile True: chunks.append(bytearray(32 * 1024 * 1024))\n", o);
  ASSERT_TRUE(mem_bomb.ok) << mem_bomb.describe() << logs();
  EXPECT_NE(mem_bomb.exit_code, 0) << mem_bomb.describe();

  auto after = run(Language::PYTHON, "print('fresh')");
  ASSERT_TRUE(after.ok) << after.describe() << logs();
  EXPECT_EQ(after.out, "fresh\n");
  std::set<std::string> ids{fork_bomb.vm_id, mem_bomb.vm_id, after.vm_id};
  EXPECT_EQ(ids.size(), 3u) << "each request gets a fresh VM";
  EXPECT_TRUE(pool_->running()) << logs();
  EXPECT_TRUE(exec_->running()) << logs();
}

TEST_F(ExecStack, HostFilesAndTheExecutorsEnvironmentAreNotVisible) {
  std::string dir = rt_->path();
  auto r = run(Language::SH, "cat '" + marker_ + "' 2>&1; ls '" + dir +
                                 "' 2>&1; "
                                 "env; cat /proc/cmdline; cat /proc/mounts; "
                                 "grep -rl '" +
                                 token_ +
                                 "' /tmp /run /etc /root /home /var /proc/cmdline "
                                 "2>/dev/null; "
                                 "grep -c -a '" +
                                 token_ +
                                 "' /dev/vda 2>&1; "
                                 "ls /sys/class/net; echo end");
  ASSERT_TRUE(r.ok) << r.describe() << logs();
  std::string all = r.out + r.err;
  EXPECT_NE(all.find("end"), std::string::npos) << all;
  // The token must appear nowhere in what the guest could see (the command text itself is not
  // echoed: sh -c does not print it).
  EXPECT_EQ(all.find(token_), std::string::npos) << all;
  EXPECT_NE(all.find("No such file"), std::string::npos)
      << "the host path exists in the guest: " << all;
  for (auto fs : {" 9p ", " virtiofs ", " nfs ", " fuse"}) {
    EXPECT_EQ(all.find(fs), std::string::npos) << "host filesystem shared into the guest: " << all;
  }
}

// ------------------------------------------------------------------------------ through nv-exec

TEST_F(ExecStack, NvExecPythonWithStdinPutGetAndJson) {
  nv::test::TempDir local("nv-exec-cli");
  std::ofstream(local.file("in.txt")) << "abc";
  auto r = nv_exec({"--stdin", "--put", local.file("in.txt") + ":/tmp/in.txt", "--get",
                    "/tmp/out.txt:" + local.file("out.txt"), "python", "-c",
                    "import sys\nd = sys.stdin.read() + open('/tmp/in.txt').read()\n"
                    "open('/tmp/out.txt', 'w').write(d[::-1])\nprint(len(d))\nsys.exit(9)"},
                   std::string("xyz"));
  EXPECT_EQ(r.status.code, 9) << r.status.describe() << r.err << logs();
  EXPECT_EQ(r.out, "6\n");
  std::ifstream in(local.file("out.txt"));
  std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(got, "cbazyx");
}

TEST_F(ExecStack, NvExecBashScriptAndNode) {
  nv::test::TempDir local("nv-exec-cli");
  std::ofstream(local.file("script.sh")) << "echo \"bash $BASH_VERSION\" | cut -c1-6\nexit 7\n";
  auto b = nv_exec({"bash", local.file("script.sh")});
  EXPECT_EQ(b.status.code, 7) << b.status.describe() << b.err << logs();
  EXPECT_EQ(b.out, "bash 5\n");

  auto n = nv_exec({"--json", "node", "-e", "console.log(process.version.startsWith('v'))"});
  EXPECT_EQ(n.status.code, 0) << n.status.describe() << n.err << logs();
  EXPECT_NE(n.out.find("\"stdout\":\"true\\n\""), std::string::npos) << n.out;
  EXPECT_NE(n.out.find("\"exitCode\":0"), std::string::npos) << n.out;
}

TEST_F(ExecStack, NvExecTimeoutExits124) {
  auto r = nv_exec({"--timeout", "2", "python", "-c", "while True: pass"});
  EXPECT_EQ(r.status.code, 124) << r.status.describe() << r.err << logs();
  EXPECT_NE(r.err.find("timed out"), std::string::npos) << r.err;
}

TEST_F(ExecStack, NvExecErrorsAreClear) {
  nv::test::TempDir empty("nv-exec-none");
  auto down = nv::test::run({.binary = nv::test::bin("nv-exec"),
                             .args = {"--runtime-dir", empty.path(), "python", "-c", "1"},
                             .env = {}},
                            30s);
  EXPECT_EQ(down.status.code, 3) << down.err;
  EXPECT_NE(down.err.find("./nv up"), std::string::npos) << down.err;
  auto usage = nv_exec({"cobol", "-c", "x"});
  EXPECT_EQ(usage.status.code, 2) << usage.err;
  EXPECT_NE(usage.err.find("unknown language"), std::string::npos) << usage.err;
}

// ----------------------------------------------------------------- last: kill the executor

TEST_F(ExecStack, KillingTheExecutorMidRunFailsTheRequestCleanly) {
  ExecOptions o;
  o.timeout_ms = 60000;
  pid_t victim = exec_->pid();
  o.on_started = [&](const std::string& status) {
    EXPECT_EQ(status.rfind("started vm=", 0), 0u) << status;
    ::kill(victim, SIGKILL);
  };
  auto t0 = std::chrono::steady_clock::now();
  auto r = run(Language::PYTHON, "import time\ntime.sleep(50)", o);
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r.ok) << "the request cannot succeed without its executor: " << r.describe();
  EXPECT_EQ(r.error.code, nv::ErrorCode::WORKER_LOST) << r.error.to_string();
  EXPECT_LT(took, 30s) << "the broker should notice the dead worker within a few heartbeats";

  // A new executor takes over and serves (with no grace after the timeout: see below).
  exec_->wait(5s);
  start_executor("0");
  ASSERT_TRUE(nv::test::wait_until(
      [&] {
        for (auto& w : nv::test::exec::exec_workers(*client_)) {
          if (w.pid == static_cast<uint32_t>(exec_->pid()) && w.capacity > 0) return true;
        }
        return false;
      },
      60s, 250ms))
      << logs();
  auto next = run(Language::SH, "echo back");
  ASSERT_TRUE(next.ok) << next.describe() << logs();
  EXPECT_EQ(next.out, "back\n");
}

// Runs on the executor restarted above with --host-grace-ms 0: the host's deadline (timeout +
// 0) passes before the agent's own timeout answer can arrive, so the executor destroys the VM.
TEST_F(ExecStack, HostDeadlineDestroysTheVmWhenTheGuestDoesNotAnswerInTime) {
  ExecOptions o;
  o.timeout_ms = 2000;
  auto r = run(Language::PYTHON, "while True: pass", o);
  ASSERT_TRUE(r.ok) << r.describe() << logs();
  EXPECT_TRUE(r.timed_out) << r.describe();
  EXPECT_TRUE(r.host_killed) << r.describe();
  EXPECT_NE(r.note.find("destroyed the VM"), std::string::npos) << r.note;
  EXPECT_TRUE(vm_released(r.vm_id)) << logs();
  auto next = run(Language::SH, "echo alive");
  ASSERT_TRUE(next.ok) << next.describe() << logs();
  EXPECT_EQ(next.out, "alive\n");
}

}  // namespace
