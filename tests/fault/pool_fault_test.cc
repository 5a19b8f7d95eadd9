// pool_fault_test.cc — the VM side of faults (issue 11, findings 1 and 4), on one real stack:
// nv-orchestrator, nv-ebpf-sentinel (127.0.0.2 on its deny list) and nv-vm-pool-manager (small
// tier, real QEMU under TCG). In order, each step building on the last:
//   1. a leased VM's cgroup has the egress programs (asked of the kernel) and reaches 127.0.0.1;
//   2. SIGKILL the sentinel: the programs stay (pinned links), a connect to 127.0.0.2 from the
//      VM's cgroup is refused (EPERM) for seconds after, 127.0.0.1 still works;
//   3. with no sentinel, a VM booted meanwhile has no enforcement: its lease is refused with
//      egressUnenforced (fail-closed) — and succeeds once a new sentinel is back;
//   4. SIGKILL the pool manager with VMs idle and leased: every VMM is gone within seconds;
//   5. plant leftovers (a jail dir, cgroup dirs in every hierarchy with a live process in them,
//      a snapshot template) and start a new pool manager: it reclaims them and the predecessor's,
//      then serves a lease;
//   6. SIGTERM everything: no VMM, cgroup dir, jail dir, socket or pin dir is left.
// Only loopback addresses are used (facts.md, "Network rule").
#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nv/schema/vm.capnp.h>

#include <chrono>
#include <fstream>
#include <set>
#include <thread>

#include "cgroup.h"
#include "common/client.h"
#include "common/events.h"
#include "common/frames.h"
#include "support/egress_probe.h"
#include "support/process.h"
#include "sysutil.h"

using namespace std::chrono_literals;
using nv::test::Process;
using Clock = std::chrono::steady_clock;
using nv::Status;

namespace {

bool exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') out.push_back(e->d_name);
    }
    ::closedir(d);
  }
  return out;
}

bool pid_alive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), {});
  auto close = s.rfind(')');
  return !(close != std::string::npos && close + 2 < s.size() && s[close + 2] == 'Z');
}

using nv::test::connect_from_cgroup;
using nv::test::listen_on;

struct LeaseOutcome {
  bool ok = false;
  std::string vm_id;
  nv::ErrorCode code = nv::ErrorCode::UNSET;
  std::string message;
};

class PoolFault : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (jails, cgroups, BPF)";
    for (auto b : {"nv-orchestrator", "nv-ebpf-sentinel", "nv-vm-pool-manager"}) {
      if (nv::test::bin(b).empty() || access(nv::test::bin(b).c_str(), X_OK) != 0) {
        GTEST_SKIP() << b << " not built";
      }
    }
    const char* bd = std::getenv("NV_BUILD_DIR");
    guest_ = std::string(bd ? bd : "build") + "/guest";
    if (!exists(guest_ + "/vmlinux") || !exists(guest_ + "/rootfs.ext4")) {
      GTEST_SKIP() << "no guest image in " << guest_ << " (./nv setup)";
    }
    if (!exists("/usr/bin/qemu-system-x86_64")) GTEST_SKIP() << "no QEMU";
  }

  Process start_pool(const std::map<std::string, std::string>& env) {
    return Process::start({.binary = nv::test::bin("nv-vm-pool-manager"),
                           .args = {"--kernel", guest_ + "/vmlinux", "--rootfs",
                                    guest_ + "/rootfs.ext4", "--size", "small", "--warm", "1",
                                    "--max", "3", "--accel", "tcg", "--boot-timeout-ms", "120000"},
                           .env = env});
  }
  Process start_sentinel(const std::map<std::string, std::string>& env) {
    return Process::start({.binary = nv::test::bin("nv-ebpf-sentinel"),
                           .args = {"--egress-deny", "127.0.0.2/32"},
                           .env = env});
  }

  LeaseOutcome lease(nv::Client& c, std::chrono::milliseconds deadline) {
    capnp::MallocMessageBuilder mb;
    auto req = nv::bus::init_body<nv::schema::LeaseRequest>(mb);
    req.setTier(nv::schema::SizeTier::SMALL);
    req.setDeadlineMs(static_cast<uint32_t>(deadline.count()));
    auto r = c.call("vm.lease", &mb, deadline + 5s);
    LeaseOutcome o;
    if (!r.ok()) {
      o.code = r.error().code;
      o.message = r.error().message;
      return o;
    }
    auto l = r.value().body.root<nv::schema::Lease>();
    if (!l.ok()) {
      o.message = l.error().message;
      return o;
    }
    o.ok = true;
    o.vm_id = l.value().getVmId();
    return o;
  }

  std::string guest_;
};

TEST_F(PoolFault, SentinelAndPoolManagerKillsFailClosedAndLeaveNothing) {
  nv::test::TempDir rt("nv-poolfault");
  std::map<std::string, std::string> env{{"NV_RUNTIME_DIR", rt.path()}};
  auto orch = Process::start({.binary = nv::test::bin("nv-orchestrator"), .env = env});
  ASSERT_TRUE(nv::test::wait_until([&] { return rt.has("events.sock"); }, 20s))
      << orch.stderr_text();
  zmq::context_t ctx(1);
  // Every VM booted: id → (VMM pid, cgroup2 dir).
  nv::EventSubscriber sub(ctx, "ipc://" + rt.file("events.sock"), {"vm.booted"});
  std::map<std::string, std::pair<pid_t, std::string>> booted;
  auto drain = [&] {
    while (auto ev = sub.receive(0ms)) {
      if (!ev->event.isVmBooted()) continue;
      auto b = ev->event.getVmBooted();
      booted[b.getVmId()] = {static_cast<pid_t>(b.getVmmPid()), b.getCgroupPath()};
    }
  };

  auto sentinel = start_sentinel(env);
  std::this_thread::sleep_for(1s);  // loaded before the first vm.booted (it catches up anyway)
  auto pool = std::make_unique<Process>(start_pool(env));
  nv::Client c(ctx, nv::ClientOptions{"ipc://" + rt.file("vm-pool.sock"), std::nullopt, "", {}});

  // --- 1. enforcement in place: the lease works, the VM's cgroup denies 127.0.0.2 ------------
  LeaseOutcome first;
  for (auto until = Clock::now() + 300s; Clock::now() < until && !first.ok;) {
    ASSERT_TRUE(pool->running()) << pool->stderr_text().substr(0, 8000);
    first = lease(c, 20s);
    if (!first.ok) std::this_thread::sleep_for(500ms);
  }
  ASSERT_TRUE(first.ok) << first.message << "\n--- pool:\n"
                        << pool->stderr_text().substr(0, 8000) << "\n--- sentinel:\n"
                        << sentinel.stderr_text().substr(0, 4000);
  ASSERT_TRUE(nv::test::wait_until(
      [&] {
        drain();
        return booted.count(first.vm_id) > 0;
      },
      10s));
  const std::string cg = booted[first.vm_id].second;
  ASSERT_FALSE(cg.empty()) << "no cgroup2 dir for " << first.vm_id;
  int allowed_port = 0, denied_port = 0;
  int allowed = listen_on("127.0.0.1", &allowed_port);
  int denied = listen_on("127.0.0.2", &denied_port);
  ASSERT_GE(allowed, 0);
  ASSERT_GE(denied, 0);
  // A denied connect now would be reported, and a security.alert naming a VM destroys it (the
  // pool manager's policy): the programs are checked in the kernel here, the denial itself once
  // the sentinel is gone (no one left to report it).
  EXPECT_TRUE(nv::vm::egress_hooks_attached(cg).ok());
  EXPECT_EQ(connect_from_cgroup(cg, "127.0.0.1", allowed_port), 0);

  // --- 2. SIGKILL the sentinel: the denial outlives it ------------------------------------------
  sentinel.signal(SIGKILL);
  ASSERT_TRUE(sentinel.wait(10s).has_value());
  std::this_thread::sleep_for(1s);  // past the deferred release of the dead process' fds
  Status still = nv::vm::egress_hooks_attached(cg);
  EXPECT_TRUE(still.ok()) << still.error().message;
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(connect_from_cgroup(cg, "127.0.0.2", denied_port), EPERM) << "round " << i;
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_EQ(connect_from_cgroup(cg, "127.0.0.1", allowed_port), 0);

  // --- 3. fail-closed: a VM booted while no sentinel runs is not leased -----------------------
  // The warm VM of before the kill was enforced; lease until one booted afterwards comes up.
  LeaseOutcome refused;
  std::vector<std::string> held = {first.vm_id};
  for (int i = 0; i < 3 && (refused.ok || refused.code == nv::ErrorCode::UNSET); ++i) {
    refused = lease(c, 60s);
    if (refused.ok) held.push_back(refused.vm_id);
  }
  ASSERT_FALSE(refused.ok) << "a VM booted without a sentinel was leased";
  EXPECT_EQ(refused.code, nv::ErrorCode::EGRESS_UNENFORCED) << refused.message;
  EXPECT_NE(refused.message.find("egress"), std::string::npos) << refused.message;
  auto sentinel2 = start_sentinel(env);  // catches up from the history and attaches
  LeaseOutcome again;
  for (auto until = Clock::now() + 60s; Clock::now() < until && !again.ok;) {
    again = lease(c, 10s);
    if (!again.ok) std::this_thread::sleep_for(300ms);
  }
  ASSERT_TRUE(again.ok) << again.message << "\n--- sentinel:\n"
                        << sentinel2.stderr_text().substr(0, 4000);
  held.push_back(again.vm_id);

  // --- 4. SIGKILL the pool manager with VMs leased and idle: every VMM dies with it -----------
  drain();
  std::vector<pid_t> vmms;
  for (auto& [id, v] : booted) {
    if (pid_alive(v.first)) vmms.push_back(v.first);
  }
  ASSERT_GE(vmms.size(), 3u) << "expected leased and warm VMMs";
  auto killed_at = Clock::now();
  pool->signal(SIGKILL);
  ASSERT_TRUE(pool->wait(10s).has_value());
  bool all_gone = nv::test::wait_until(
      [&] {
        for (pid_t p : vmms) {
          if (pid_alive(p)) return false;
        }
        return true;
      },
      5s, 20ms);
  double gone_s = std::chrono::duration<double>(Clock::now() - killed_at).count();
  EXPECT_TRUE(all_gone) << vmms.size() << " VMMs, some still alive 5 s after the SIGKILL";
  RecordProperty("vmms_gone_after_pool_sigkill_ms",
                 std::to_string(static_cast<int>(gone_s * 1000)));
  std::cout << vmms.size() << " VMMs gone " << gone_s * 1000 << " ms after SIGKILL\n";
  pool.reset();

  // --- 5. plant leftovers, start a new pool manager: it reclaims, then serves ----------------
  auto layout = nv::vm::CgroupLayout::detect();
  ASSERT_TRUE(layout.prepare().ok());
  const std::string planted = "vm-planted0";
  ASSERT_TRUE(nv::vm::make_dirs(rt.file("vms/" + planted + "/run"), 0755).ok());
  std::vector<std::string> planted_dirs = layout.vm_dirs(planted);
  for (auto& d : planted_dirs) ASSERT_EQ(::mkdir(d.c_str(), 0755), 0) << d;
  pid_t squatter = nv::test::park_in_cgroups(planted_dirs);
  ASSERT_TRUE(nv::test::wait_until(
      [&] {
        std::ifstream in(planted_dirs.back() + "/cgroup.procs");
        pid_t p = 0;
        return static_cast<bool>(in >> p) && p == squatter;
      },
      5s));
  ASSERT_TRUE(nv::vm::make_dirs(rt.file("snapshots"), 0700).ok());
  std::ofstream(rt.file("snapshots/large.vmstate")) << "stale template";
  std::set<std::string> old_ids;
  for (auto& [id, v] : booted) old_ids.insert(id);

  pool = std::make_unique<Process>(start_pool(env));
  LeaseOutcome served;
  for (auto until = Clock::now() + 300s; Clock::now() < until && !served.ok;) {
    ASSERT_TRUE(pool->running()) << pool->stderr_text().substr(0, 8000);
    served = lease(c, 20s);
    if (!served.ok) std::this_thread::sleep_for(500ms);
  }
  ASSERT_TRUE(served.ok) << served.message << "\n--- pool:\n"
                         << pool->stderr_text().substr(0, 8000);
  int st = 0;
  EXPECT_EQ(waitpid(squatter, &st, WNOHANG), squatter) << "the planted process still runs";
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  for (auto& d : planted_dirs) EXPECT_FALSE(exists(d)) << d;
  EXPECT_FALSE(exists(rt.file("vms/" + planted)));
  EXPECT_FALSE(exists(rt.file("snapshots/large.vmstate")));
  for (auto& id : old_ids) {
    EXPECT_FALSE(exists(rt.file("vms/" + id))) << "jail of " << id;
    for (auto& d : layout.vm_dirs(id)) EXPECT_FALSE(exists(d)) << d;
  }
  EXPECT_NE(pool->stderr_text().find("reclaimed a predecessor's leftovers"), std::string::npos);

  // --- 6. SIGTERM everything: nothing is left ----------------------------------------------
  drain();
  auto t0 = Clock::now();
  auto pool_exit = pool->terminate();
  double stop_s = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_TRUE(pool_exit.clean()) << pool_exit.describe();
  EXPECT_LT(stop_s, 2.0) << "the pool manager took " << stop_s << " s to stop";
  std::cout << "pool manager stopped " << stop_s * 1000 << " ms after SIGTERM\n";
  RecordProperty("pool_manager_sigterm_stop_ms", std::to_string(static_cast<int>(stop_s * 1000)));
  auto s_exit = sentinel2.terminate();
  EXPECT_TRUE(s_exit.clean()) << s_exit.describe() << sentinel2.stderr_text().substr(0, 4000);
  auto o_exit = orch.terminate();
  EXPECT_TRUE(o_exit.clean()) << o_exit.describe();
  for (auto& [id, v] : booted) {
    EXPECT_FALSE(pid_alive(v.first)) << "VMM of " << id;
    EXPECT_FALSE(exists(rt.file("vms/" + id))) << "jail of " << id;
    for (auto& d : layout.vm_dirs(id)) EXPECT_FALSE(exists(d)) << d;
  }
  EXPECT_FALSE(exists(rt.file("vm-pool.sock")));
  std::string key;
  for (char ch : rt.path())
    key += std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' ? ch : '_';
  EXPECT_FALSE(exists("/sys/fs/bpf/neurovisor/" + key)) << "egress pins left behind";
  close(allowed);
  close(denied);
}

// Issue 12: `nv down` during template creation. SIGTERM while the pool manager is making its
// first snapshot template (the template VM's jail exists, its guest is booting): it must exit
// cleanly within 2 s and leave no VMM, cgroup dir, jail dir, socket or template file.
TEST_F(PoolFault, SigtermDuringTemplateCreationStopsWithinTwoSecondsAndLeavesNothing) {
  nv::test::TempDir rt("nv-pooltpl");
  std::map<std::string, std::string> env{{"NV_RUNTIME_DIR", rt.path()}};
  auto pool =
      Process::start({.binary = nv::test::bin("nv-vm-pool-manager"),
                      .args = {"--kernel", guest_ + "/vmlinux", "--rootfs", guest_ + "/rootfs.ext4",
                               "--size", "small,medium", "--accel", "tcg", "--no-require-egress",
                               "--events-in-endpoint", "ipc://" + rt.file("no-hub.sock")},
                      .env = env});
  std::string tpl;
  ASSERT_TRUE(nv::test::wait_until(
      [&] {
        for (const auto& name : list_dir(rt.file("vms"))) {
          if (name.rfind("tpl-", 0) == 0) tpl = name;
        }
        return !tpl.empty();
      },
      120s, 20ms))
      << pool.stderr_text().substr(0, 4000);
  std::this_thread::sleep_for(500ms);  // the template's VMM runs, its guest boots
  auto layout = nv::vm::CgroupLayout::detect();
  auto t0 = Clock::now();
  pool.signal(SIGTERM);
  auto ended = pool.wait(10s);
  double stop_s = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_TRUE(ended.has_value()) << "still running 10 s after SIGTERM";
  EXPECT_TRUE(ended->clean()) << ended->describe() << pool.stderr_text().substr(0, 4000);
  EXPECT_LT(stop_s, 2.0) << "stopped " << stop_s << " s after SIGTERM\n" << pool.stderr_text();
  std::cout << "stopped " << stop_s * 1000 << " ms after SIGTERM during the template of " << tpl
            << "\n";
  RecordProperty("template_sigterm_stop_ms", std::to_string(static_cast<int>(stop_s * 1000)));
  EXPECT_TRUE(list_dir(rt.file("vms")).empty());
  for (auto& d : layout.vm_dirs(tpl)) EXPECT_FALSE(exists(d)) << d;
  EXPECT_TRUE(list_dir(rt.file("snapshots")).empty());
  EXPECT_FALSE(exists(rt.file("vm-pool.sock")));
  EXPECT_FALSE(exists(rt.file("vm-pool-manager.lock")));
}

}  // namespace
