// exec_scaleout_test — two executor "hosts" in two network namespaces reach the orchestrator
// only over tcp:// with CURVE (a third namespace), each with its own small VM pool.
//
//   netns O (orchestrator)  10.213.1.1 ── veth ── 10.213.1.2  netns A: executor A
//                           10.213.2.1 ── veth ── 10.213.2.2  netns B: executor B
// Executor A uses pool manager A, B uses B (separate runtime dirs, ipc:// by path); the pool
// managers themselves run in the root network namespace (see start_host).
// All addresses live in namespaces this test creates and deletes; nothing else is contacted.
// The test client reaches the broker over its ipc:// client socket (a path, not the network).
// Needs root and `ip` (skips otherwise) plus real VMs (label vm): each pool keeps 1 warm VM.
// The executor that is SIGKILLed mid-run never releases its VM: its pool manager destroys it
// when the lease's lifetime (which the executor asked for) ends, and the pool is whole again.
#include <dirent.h>
#include <gtest/gtest.h>
#include <nv/schema/vm.capnp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <future>
#include <iostream>
#include <memory>
#include <sstream>

#include "common/curve.h"
#include "support/process.h"
#include "vm/exec_harness.h"

namespace {

using namespace std::chrono_literals;
using nv::schema::Language;
using nv::test::Process;
using nv::test::exec::ExecOptions;
using nv::test::exec::ExecOutcome;

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

// The lease the executors ask for is connect-timeout (default 15 s) + the run's timeout +
// host-grace (2 s) + lease-margin, which they are started with.
constexpr auto kLeaseMargin = 1000ms;
constexpr auto kVictimTimeout = 10000ms;
constexpr auto kVictimLease = 15000ms + kVictimTimeout + 2000ms + kLeaseMargin;

// Pids of the processes whose command line mentions `needle` (QEMU runs as -name nv-<vm id>).
std::vector<pid_t> pids_with_arg(const std::string& needle) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end) continue;
    std::ifstream f("/proc/" + std::string(e->d_name) + "/cmdline");
    std::stringstream ss;
    ss << f.rdbuf();
    if (ss.str().find(needle) != std::string::npos) out.push_back(static_cast<pid_t>(pid));
  }
  ::closedir(d);
  return out;
}

class ExecScaleOut : public ::testing::Test {
 protected:
  struct Host {
    std::string ns, rt;
    std::unique_ptr<Process> pool, exec;
  };

  void SetUp() override {
    std::string build = std::getenv("NV_BUILD_DIR") ? std::getenv("NV_BUILD_DIR") : "";
    kernel_ = build + "/guest/vmlinux";
    rootfs_ = build + "/guest/rootfs.ext4";
    ip_ = nv::test::find_program("ip");
    if (geteuid() != 0) GTEST_SKIP() << "needs root (ip netns, VMs)";
    if (ip_.empty()) GTEST_SKIP() << "needs `ip` (iproute2)";
    for (auto n : {"nv-orchestrator", "nv-vm-pool-manager", "nv-sandbox-executor"}) {
      if (!exists(nv::test::bin(n))) GTEST_SKIP() << n << " is not built";
    }
    if (!exists(kernel_) || !exists(rootfs_)) {
      GTEST_SKIP() << "guest image missing: run guest/build.sh " << build << "/guest ...";
    }
    tmp_ = std::make_unique<nv::test::TempDir>("nv-exec-scaleout");
    std::string tag = std::to_string(getpid() % 100000);
    orch_ns_ = "nvxo" + tag;
    a_.ns = "nvxa" + tag;
    b_.ns = "nvxb" + tag;
    for (auto* ns : {&orch_ns_, &a_.ns, &b_.ns}) {
      ip({"netns", "add", *ns});
      created_.push_back(*ns);
      ip({"-n", *ns, "link", "set", "lo", "up"});
    }
    link("a", a_.ns, "10.213.1");
    link("b", b_.ns, "10.213.2");

    // CURVE: the orchestrator's pair, one pair per executor, an allow-list of the executors.
    auto mk = [&](const std::string& name) {
      auto k = nv::curve::generate();
      EXPECT_TRUE(k.ok());
      EXPECT_TRUE(nv::curve::write_files(tmp_->path(), name, k.value()).ok());
    };
    mk("orch");
    mk("exec-a");
    mk("exec-b");
    ::mkdir(tmp_->file("allow").c_str(), 0700);
    for (auto n : {"exec-a", "exec-b"}) {
      std::string from = tmp_->file(std::string(n) + ".pub");
      std::string to = tmp_->path() + "/allow/" + n + ".pub";
      ASSERT_EQ(::link(from.c_str(), to.c_str()), 0);
    }

    orch_rt_ = tmp_->file("rt-orch");
    ::mkdir(orch_rt_.c_str(), 0750);
    orch_ = std::make_unique<Process>(Process::start(
        {.binary = ip_,
         .args = {"netns", "exec", orch_ns_, nv::test::bin("nv-orchestrator"), "--curve-key",
                  tmp_->file("orch.key"), "--curve-allow", tmp_->file("allow"),
                  "--extra-workers-endpoints", "tcp://10.213.1.1:5555,tcp://10.213.2.1:5555",
                  "--extra-events-in-endpoints", "tcp://10.213.1.1:5556,tcp://10.213.2.1:5556"},
         .env = {{"NV_RUNTIME_DIR", orch_rt_}}}));
    ASSERT_TRUE(nv::test::wait_until([&] { return exists(orch_rt_ + "/clients.sock"); }, 10s))
        << orch_->stderr_text();
    start_host(a_, "10.213.1.1", "exec-a");
    start_host(b_, "10.213.2.1", "exec-b");

    zmq_ = std::make_unique<zmq::context_t>(1);
    client_ = make_client();
    bool both = nv::test::wait_until(
        [&] {
          auto w = nv::test::exec::exec_workers(*client_);
          return w.size() == 2 && w[0].capacity > 0 && w[1].capacity > 0;
        },
        150s, 250ms);
    ASSERT_TRUE(both) << "both executors should register over CURVE with capacity" << logs();
  }

  void TearDown() override {
    client_.reset();
    zmq_.reset();
    for (auto* h : {&a_, &b_}) {
      if (h->exec) h->exec->terminate(10s);
      if (h->pool) h->pool->terminate(20s);
    }
    if (orch_) orch_->terminate(10s);
    for (auto& ns : created_) ip({"netns", "del", ns}, false);
  }

  void ip(std::vector<std::string> args, bool check = true) {
    auto r = nv::test::run({.binary = ip_, .args = args}, 20s);
    if (check) {
      ASSERT_TRUE(r.status.clean()) << "ip failed: " << r.err;
    }
  }

  // A veth pair between the orchestrator's namespace (.1) and a host namespace (.2).
  void link(const std::string& side, const std::string& ns, const std::string& net) {
    std::string tag = std::to_string(getpid() % 100000);
    std::string o = "nvx" + side + "o" + tag, h = "nvx" + side + "h" + tag;
    ip({"link", "add", o, "type", "veth", "peer", "name", h});
    ip({"link", "set", o, "netns", orch_ns_});
    ip({"link", "set", h, "netns", ns});
    ip({"-n", orch_ns_, "addr", "add", net + ".1/24", "dev", o});
    ip({"-n", ns, "addr", "add", net + ".2/24", "dev", h});
    ip({"-n", orch_ns_, "link", "set", o, "up"});
    ip({"-n", ns, "link", "set", h, "up"});
  }

  void start_host(Host& h, const std::string& orch_addr, const std::string& key) {
    h.rt = tmp_->file("rt-" + key);
    ::mkdir(h.rt.c_str(), 0750);
    std::map<std::string, std::string> env{{"NV_RUNTIME_DIR", h.rt}};
    // The pool manager stays in the root network namespace: `ip netns exec` remounts /sys,
    // which hides the cgroup hierarchy it needs, and it has no network traffic (VMs get no NIC).
    // Its executor reaches it by socket path (ipc://), which no network namespace affects.
    h.pool = std::make_unique<Process>(
        Process::start({.binary = nv::test::bin("nv-vm-pool-manager"),
                        .args = {"--kernel", kernel_, "--rootfs", rootfs_, "--size", "small",
                                 "--warm", "1", "--max", "2", "--accel", "tcg",
                                 "--no-require-egress"},  // no sentinel in this stack
                        .env = env}));
    h.exec = std::make_unique<Process>(Process::start(
        {.binary = ip_,
         .args = {"netns", "exec", h.ns, nv::test::bin("nv-sandbox-executor"), "--workers-endpoint",
                  "tcp://" + orch_addr + ":5555", "--events-in-endpoint",
                  "tcp://" + orch_addr + ":5556", "--curve-key", tmp_->file(key + ".key"),
                  "--curve-server-key", tmp_->file("orch.pub"), "--lease-margin-ms",
                  std::to_string(kLeaseMargin.count())},
         .env = env}));
  }

  std::unique_ptr<nv::Client> make_client() {
    return std::make_unique<nv::Client>(
        *zmq_, nv::ClientOptions{nv::bus::ipc_endpoint(orch_rt_ + "/clients.sock"), {}, {}, {}});
  }

  // Leased VMs (active) of a host's pool manager, over its own socket; -1 when it did not answer.
  int pool_active(const Host& h) {
    nv::Client c(*zmq_,
                 nv::ClientOptions{nv::bus::ipc_endpoint(h.rt + "/vm-pool.sock"), {}, {}, {}});
    capnp::MallocMessageBuilder mb;
    nv::bus::init_body<nv::schema::PoolStatusRequest>(mb);
    auto r = c.call("vm.status", &mb, 3000ms);
    if (!r) return -1;
    auto st = r->body.root<nv::schema::PoolStatus>();
    if (!st) return -1;
    int active = 0;
    for (auto t : st->getTiers()) active += static_cast<int>(t.getActive());
    return active;
  }

  std::string logs() {
    std::string s = "\n--- orchestrator:\n" + orch_->stderr_text().substr(0, 8000);
    for (auto* h : {&a_, &b_}) {
      if (h->exec) s += "\n--- executor " + h->ns + ":\n" + h->exec->stderr_text().substr(0, 8000);
      if (h->pool) s += "\n--- pool " + h->ns + ":\n" + h->pool->stderr_text().substr(0, 4000);
    }
    return s;
  }

  std::string kernel_, rootfs_, ip_, orch_ns_, orch_rt_;
  std::vector<std::string> created_;
  std::unique_ptr<nv::test::TempDir> tmp_;
  std::unique_ptr<Process> orch_;
  Host a_, b_;
  std::unique_ptr<zmq::context_t> zmq_;
  std::unique_ptr<nv::Client> client_;
};

TEST_F(ExecScaleOut, BothExecutorsTakeWorkAndSurviveTheOthersDeath) {
  // Two long runs at once: the broker gives one to each executor (capacity 1 each).
  // Request 1 (the victim's) has a shorter timeout, so its lease ends sooner.
  auto launch = [&](const std::string& trace, std::promise<std::string>* started,
                    std::chrono::milliseconds timeout) {
    return std::async(std::launch::async, [this, trace, started, timeout] {
      auto client = make_client();
      ExecOptions o;
      o.trace_id = trace;
      o.timeout_ms = static_cast<uint32_t>(timeout.count());
      o.on_started = [started](const std::string& s) { started->set_value(s); };
      return nv::test::exec::run_exec(*client, Language::PYTHON,
                                      "import time\ntime.sleep(6)\nprint('done')", o);
    });
  };
  std::promise<std::string> s1, s2;
  auto f1 = launch("0193a000-0000-7000-8000-000000000001", &s1, kVictimTimeout);
  std::this_thread::sleep_for(200ms);
  auto f2 = launch("0193a000-0000-7000-8000-000000000002", &s2, 30000ms);
  auto started1 = s1.get_future();
  ASSERT_EQ(started1.wait_for(90s), std::future_status::ready) << logs();
  ASSERT_EQ(s2.get_future().wait_for(90s), std::future_status::ready) << logs();
  std::string victim_vm = started1.get();  // "started vm=<id>"
  ASSERT_EQ(victim_vm.rfind("started vm=", 0), 0u) << victim_vm;
  victim_vm = victim_vm.substr(std::string("started vm=").size());

  uint32_t p1 = 0, p2 = 0;
  ASSERT_TRUE(nv::test::wait_until(
      [&] {
        p1 = nv::test::exec::executor_of(*client_, "0193a000-0000-7000-8000-000000000001");
        p2 = nv::test::exec::executor_of(*client_, "0193a000-0000-7000-8000-000000000002");
        return p1 && p2;
      },
      10s))
      << "exec.started events (published over CURVE tcp) not seen" << logs();
  std::set<uint32_t> exec_pids{static_cast<uint32_t>(a_.exec->pid()),
                               static_cast<uint32_t>(b_.exec->pid())};
  EXPECT_TRUE(exec_pids.count(p1) && exec_pids.count(p2)) << p1 << " " << p2;
  ASSERT_NE(p1, p2) << "both requests went to one executor" << logs();

  // Kill the executor running request 1 mid-run.
  Host& victim = p1 == static_cast<uint32_t>(a_.exec->pid()) ? a_ : b_;
  Host& survivor = &victim == &a_ ? b_ : a_;
  auto vmm = pids_with_arg("nv-" + victim_vm);
  ASSERT_EQ(vmm.size(), 1u) << "the VMM of " << victim_vm << " should be running";
  victim.exec->signal(SIGKILL);
  auto killed_at = std::chrono::steady_clock::now();
  EXPECT_EQ(pool_active(victim), 1) << "the dead executor's lease is still held" << logs();
  auto r1 = f1.get();
  auto r2 = f2.get();
  ASSERT_FALSE(r1.ok) << "request 1 lost its executor but succeeded: " << r1.describe();
  EXPECT_EQ(r1.error.code, nv::ErrorCode::WORKER_LOST) << r1.error.to_string();
  ASSERT_TRUE(r2.ok) << r2.describe() << logs();
  EXPECT_EQ(r2.out, "done\n");

  // The survivor keeps serving.
  for (int i = 0; i < 2; ++i) {
    ExecOptions o;
    o.trace_id = "0193a000-0000-7000-8000-00000000001" + std::to_string(i);
    auto r = nv::test::exec::run_exec(*client_, Language::SH, "echo again", o);
    ASSERT_TRUE(r.ok) << r.describe() << logs();
    EXPECT_EQ(r.out, "again\n");
    EXPECT_EQ(nv::test::exec::executor_of(*client_, o.trace_id),
              static_cast<uint32_t>(survivor.exec->pid()));
  }

  // Nobody releases the victim's VM: its lease ends kVictimLease after it began (before the
  // kill), then the pool manager's monitor destroys the VM and the tier is empty again.
  auto gone = [&] { return ::kill(vmm[0], 0) != 0 && errno == ESRCH; };
  ASSERT_TRUE(
      nv::test::wait_until([&] { return gone() && pool_active(victim) == 0; },
                           std::chrono::duration_cast<std::chrono::milliseconds>(
                               kVictimLease + 5s - (std::chrono::steady_clock::now() - killed_at)),
                           250ms))
      << "VMM " << vmm[0] << " of " << victim_vm << " should be destroyed when its "
      << kVictimLease.count() << " ms lease ends" << logs();
  std::cout << "[ figures  ] the killed executor's VM was destroyed "
            << std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                         killed_at)
                   .count()
            << " ms after the kill (lease " << kVictimLease.count() << " ms)\n";
  std::string pool_log = victim.pool->stderr_text();
  auto at = pool_log.find("lease expired: not released within its " +
                          std::to_string(kVictimLease.count()) + " ms lifetime");
  ASSERT_NE(at, std::string::npos) << logs();
  auto line_start = pool_log.rfind('\n', at);
  line_start = line_start == std::string::npos ? 0 : line_start;
  std::string line = pool_log.substr(line_start, pool_log.find('\n', at) - line_start);
  EXPECT_NE(line.find(victim_vm), std::string::npos) << line;
  // The survivor released its own VMs (after answering, so allow it a moment).
  EXPECT_TRUE(nv::test::wait_until([&] { return pool_active(survivor) == 0; }, 5s));
}

}  // namespace
