// The eBPF layer as a service: nv-ebpf-sentinel learns a VM from a vm.booted event, attaches the
// egress policy to the VM's cgroup2 dir, and a connect from inside that cgroup to a denied
// loopback address is refused and reported as a security.alert (seen by nv-audit) within 1 s,
// while an allowed loopback address still works. Syscall counts for the VM are published.
// Only loopback addresses are used: 127.0.0.2 is put on the deny list for the test.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "common/events.h"
#include "common/frames.h"
#include "support/egress_probe.h"
#include "support/process.h"

using namespace std::chrono_literals;
using nv::test::Process;

namespace {

std::string cgroup2_root() {
  struct stat st {};
  if (::stat("/sys/fs/cgroup/unified/cgroup.procs", &st) == 0) return "/sys/fs/cgroup/unified";
  if (::stat("/sys/fs/cgroup/cgroup.controllers", &st) == 0) return "/sys/fs/cgroup";
  return "";
}

using nv::test::connect_from_cgroup;
using nv::test::listen_on;

class SentinelService : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for BPF and cgroups";
    if (nv::test::bin("nv-ebpf-sentinel").empty() ||
        access(nv::test::bin("nv-ebpf-sentinel").c_str(), X_OK) != 0) {
      GTEST_SKIP() << "nv-ebpf-sentinel is not built";
    }
    root_ = cgroup2_root();
    if (root_.empty()) GTEST_SKIP() << "no cgroup2 hierarchy mounted";
  }
  std::string root_;
};

TEST_F(SentinelService, EgressDenialIsRefusedAndPublishedWithinOneSecond) {
  nv::test::TempDir rt("nv-sentinel");
  std::map<std::string, std::string> env{{"NV_RUNTIME_DIR", rt.path()}};
  auto orch = Process::start({.binary = nv::test::bin("nv-orchestrator"), .env = env});
  ASSERT_TRUE(nv::test::wait_until([&] { return rt.has("events.sock"); }, 10s))
      << orch.stderr_text();

  zmq::context_t ctx(1);
  nv::EventSubscriber sub(ctx, "ipc://" + rt.file("events.sock"), {"security.", "sentinel."});
  auto sentinel =
      Process::start({.binary = nv::test::bin("nv-ebpf-sentinel"),
                      .args = {"--egress-deny", "127.0.0.2/32", "--counts-interval-ms", "200"},
                      .env = env});
  // sentinel.status names every program and whether the kernel took it.
  bool tracker_loaded = false;
  std::string lsm_detail;
  auto until = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < until) {
    auto ev = sub.receive(200ms);
    if (!ev || ev->topic != "sentinel.status") continue;
    for (auto p : ev->event.getSentinelStatus().getPrograms()) {
      if (std::string(p.getName().cStr()) == "nv_sys_enter") tracker_loaded = p.getLoaded();
      if (std::string(p.getName().cStr()) == "nv_file_open" && !p.getLoaded()) {
        lsm_detail = "errno " + std::to_string(p.getErrno());
      }
    }
    break;
  }
  ASSERT_TRUE(tracker_loaded) << sentinel.stderr_text();
  if (!lsm_detail.empty()) std::cout << "BPF LSM unavailable here: " << lsm_detail << "\n";

  // A stand-in VMM process in its own cgroup2 dir, announced like the pool manager does.
  std::string cg = root_ + "/nv-sentinel-test-" + std::to_string(getpid());
  ASSERT_EQ(mkdir(cg.c_str(), 0755), 0) << cg << ": " << strerror(errno);
  pid_t vmm = nv::test::park_in_cgroups({cg});
  nv::EventPublisher pub(ctx, "ipc://" + rt.file("events-in.sock"), "test", "test/1");
  pub.publish("vm.booted", [&](nv::schema::Event::Builder e) {
    auto b = e.initVmBooted();
    b.setVmId("vm-sentinel-test");
    b.setVmmPid(static_cast<uint32_t>(vmm));
    b.setCgroupPath(cg);
    b.setBackend("test");
  });

  int allowed_port = 0, denied_port = 0;
  int allowed = listen_on("127.0.0.1", &allowed_port);
  int denied = listen_on("127.0.0.2", &denied_port);
  ASSERT_GE(allowed, 0);
  ASSERT_GE(denied, 0);
  // Wait until the policy is attached: the denied connect starts failing with EPERM.
  int err = 0;
  ASSERT_TRUE(nv::test::wait_until(
      [&] { return (err = connect_from_cgroup(cg, "127.0.0.2", denied_port)) == EPERM; }, 10s))
      << "last errno " << err << "\n"
      << sentinel.stderr_text();
  auto attempted = std::chrono::steady_clock::now();
  EXPECT_EQ(connect_from_cgroup(cg, "127.0.0.1", allowed_port), 0) << "allowed address refused";
  EXPECT_EQ(connect_from_cgroup(cg, "127.0.0.2", denied_port), EPERM);

  bool alert = false, counted = false;
  double alert_after_s = -1;
  until = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < until && !(alert && counted)) {
    auto ev = sub.receive(100ms);
    if (!ev) continue;
    if (ev->topic == "security.alert") {
      auto a = ev->event.getSecurityAlert();
      if (std::string(a.getKind().cStr()) == "egress_denied" &&
          std::string(a.getVmId().cStr()) == "vm-sentinel-test" && !alert) {
        alert = true;
        alert_after_s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - attempted).count();
        EXPECT_NE(std::string(a.getDetail().cStr()).find("127.0.0.2"), std::string::npos);
        EXPECT_EQ(ev->event.getSeverity(), nv::schema::Severity::ALERT);
      }
    }
    if (ev->topic == "sentinel.syscalls") {
      for (auto c : ev->event.getSyscallCounts().getEntries()) {
        if (std::string(c.getVmId().cStr()) == "vm-sentinel-test" && c.getCount() > 0) {
          counted = true;
        }
      }
    }
  }
  EXPECT_TRUE(alert) << sentinel.stderr_text();
  EXPECT_LT(alert_after_s, 1.0) << "the alert came " << alert_after_s << " s after the attempt";
  EXPECT_TRUE(counted) << "no syscall count for the VM";

  // The audit log shows it too.
  auto audit = nv::test::run({.binary = nv::test::bin("nv-audit"),
                              .args = {"--since-start", "--topic", "security"},
                              .env = env},
                             20s);
  EXPECT_NE(audit.out.find("egress_denied"), std::string::npos) << audit.out << audit.err;

  // Releasing the VM detaches the policy: the same connect works again.
  pub.publish("vm.released", [&](nv::schema::Event::Builder e) {
    e.initVmReleased().setVmId("vm-sentinel-test");
  });
  EXPECT_TRUE(nv::test::wait_until(
      [&] { return connect_from_cgroup(cg, "127.0.0.2", denied_port) == 0; }, 10s));

  kill(vmm, SIGKILL);
  waitpid(vmm, nullptr, 0);
  close(allowed);
  close(denied);
  auto s_exit = sentinel.terminate();
  EXPECT_TRUE(s_exit.clean()) << s_exit.describe() << sentinel.stderr_text();
  auto o_exit = orch.terminate();
  EXPECT_TRUE(o_exit.clean()) << o_exit.describe();
  rmdir(cg.c_str());
}

// Issue 11 finding 4: enforcement outlives the sentinel. SIGKILL it: the VM cgroup's denial of
// 127.0.0.2 stays (pinned links and maps in a bpffs), 127.0.0.1 still works. A new sentinel adopts
// the pins (from the event history) and a clean stop after the VM is gone leaves no pin behind.
TEST_F(SentinelService, EgressStaysDeniedAfterSigkillAndIsAdoptedByTheNextSentinel) {
  nv::test::TempDir rt("nv-sentinel-kill");
  std::map<std::string, std::string> env{{"NV_RUNTIME_DIR", rt.path()}};
  auto orch = Process::start({.binary = nv::test::bin("nv-orchestrator"), .env = env});
  ASSERT_TRUE(nv::test::wait_until([&] { return rt.has("events.sock"); }, 10s))
      << orch.stderr_text();
  zmq::context_t ctx(1);
  auto start_sentinel = [&] {
    return Process::start({.binary = nv::test::bin("nv-ebpf-sentinel"),
                           .args = {"--egress-deny", "127.0.0.2/32"},
                           .env = env});
  };
  auto sentinel = start_sentinel();
  std::string cg = root_ + "/nv-sentinel-kill-" + std::to_string(getpid());
  ASSERT_EQ(mkdir(cg.c_str(), 0755), 0) << cg << ": " << strerror(errno);
  pid_t vmm = nv::test::park_in_cgroups({cg});
  nv::EventPublisher pub(ctx, "ipc://" + rt.file("events-in.sock"), "test", "test/1");
  int allowed_port = 0, denied_port = 0;
  int allowed = listen_on("127.0.0.1", &allowed_port);
  int denied = listen_on("127.0.0.2", &denied_port);
  ASSERT_GE(allowed, 0);
  ASSERT_GE(denied, 0);
  int err = 0;
  ASSERT_TRUE(nv::test::wait_until(
      [&] {
        pub.publish("vm.booted", [&](nv::schema::Event::Builder e) {
          auto b = e.initVmBooted();
          b.setVmId("vm-sentinel-kill");
          b.setVmmPid(static_cast<uint32_t>(vmm));
          b.setCgroupPath(cg);
          b.setBackend("test");
        });
        return (err = connect_from_cgroup(cg, "127.0.0.2", denied_port)) == EPERM;
      },
      15s, 300ms))
      << "last errno " << err << "\n"
      << sentinel.stderr_text();

  sentinel.signal(SIGKILL);
  ASSERT_TRUE(sentinel.wait(10s).has_value());
  for (int i = 0; i < 10; ++i) {  // 2 s: well past the deferred release of the dead process' fds
    EXPECT_EQ(connect_from_cgroup(cg, "127.0.0.2", denied_port), EPERM) << "round " << i << "\n"
                                                                        << sentinel.stderr_text();
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_EQ(connect_from_cgroup(cg, "127.0.0.1", allowed_port), 0);

  // The next sentinel adopts the VM (history) and keeps denying; releasing the VM lifts it.
  auto sentinel2 = start_sentinel();
  ASSERT_TRUE(nv::test::wait_until(
      [&] { return sentinel2.stderr_text().find("tracking vm") != std::string::npos; }, 15s))
      << sentinel2.stderr_text();
  EXPECT_EQ(connect_from_cgroup(cg, "127.0.0.2", denied_port), EPERM);
  pub.publish("vm.released", [&](nv::schema::Event::Builder e) {
    e.initVmReleased().setVmId("vm-sentinel-kill");
  });
  EXPECT_TRUE(nv::test::wait_until(
      [&] { return connect_from_cgroup(cg, "127.0.0.2", denied_port) == 0; }, 10s));
  kill(vmm, SIGKILL);
  waitpid(vmm, nullptr, 0);
  rmdir(cg.c_str());
  auto s_exit = sentinel2.terminate();
  EXPECT_TRUE(s_exit.clean()) << s_exit.describe() << sentinel2.stderr_text();
  std::string key;
  for (char ch : rt.path())
    key += std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' ? ch : '_';
  struct stat st {};
  EXPECT_NE(::stat(("/sys/fs/bpf/neurovisor/" + key).c_str(), &st), 0) << "pins left behind";
  close(allowed);
  close(denied);
  orch.terminate();
}

}  // namespace
