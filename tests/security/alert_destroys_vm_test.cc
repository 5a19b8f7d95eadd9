// A security.alert naming a VM (what nv-ebpf-sentinel publishes when a VMM tree execs) makes the
// pool manager destroy that VM at once: vm.failed with the alert as its reason, the VMM process
// gone, and the pool refilled with a fresh VM.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>

#include "common/events.h"
#include "support/process.h"

using namespace std::chrono_literals;
using nv::test::Process;

namespace {

TEST(AlertDestroysVm, PoolManagerDestroysTheNamedVm) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for VMM jails and cgroups";
  std::string build = getenv("NV_BUILD_DIR") ? getenv("NV_BUILD_DIR") : "";
  std::string pm = nv::test::bin("nv-vm-pool-manager");
  if (pm.empty() || access(pm.c_str(), X_OK) != 0) GTEST_SKIP() << "nv-vm-pool-manager not built";
  if (access((build + "/guest/vmlinux").c_str(), R_OK) != 0) {
    GTEST_SKIP() << "guest image missing under " << build << "/guest";
  }
  nv::test::TempDir rt("nv-alert");
  std::map<std::string, std::string> env{{"NV_RUNTIME_DIR", rt.path()}};
  auto orch = Process::start({.binary = nv::test::bin("nv-orchestrator"), .env = env});
  ASSERT_TRUE(nv::test::wait_until([&] { return rt.has("events.sock"); }, 10s));
  zmq::context_t ctx(1);
  nv::EventSubscriber sub(ctx, "ipc://" + rt.file("events.sock"), {"vm."});
  auto pool = Process::start(
      {.binary = pm,
       .args = {"--size", "small", "--warm", "1", "--max", "2", "--kernel",
                build + "/guest/vmlinux", "--rootfs", build + "/guest/rootfs.ext4",
                "--no-require-egress"},  // the test publishes the alert itself: no sentinel
       .env = env});

  std::string vm_id;
  uint32_t vmm_pid = 0;
  auto until = std::chrono::steady_clock::now() + 180s;
  while (vm_id.empty() && std::chrono::steady_clock::now() < until) {
    auto ev = sub.receive(500ms);
    if (ev && ev->topic == "vm.booted") {
      vm_id = ev->event.getVmBooted().getVmId().cStr();
      vmm_pid = ev->event.getVmBooted().getVmmPid();
    }
  }
  ASSERT_FALSE(vm_id.empty()) << pool.stderr_text();
  ASSERT_EQ(kill(static_cast<pid_t>(vmm_pid), 0), 0);

  nv::EventPublisher pub(ctx, "ipc://" + rt.file("events-in.sock"), "ebpf-sentinel", "test/1");
  pub.publish(
      "security.alert",
      [&](nv::schema::Event::Builder e) {
        auto a = e.initSecurityAlert();
        a.setKind("vmm_exec");
        a.setVmId(vm_id);
        a.setDetail("process in the VMM tree exec'd /bin/sh");
        a.setAction("vm_destroy_requested");
      },
      {}, nv::schema::Severity::ALERT);

  bool failed = false, refilled = false;
  until = std::chrono::steady_clock::now() + 120s;
  while (!(failed && refilled) && std::chrono::steady_clock::now() < until) {
    auto ev = sub.receive(500ms);
    if (!ev) continue;
    if (ev->topic == "vm.failed" &&
        std::string(ev->event.getVmFailed().getVmId().cStr()) == vm_id) {
      failed = true;
      EXPECT_NE(std::string(ev->event.getVmFailed().getReason().cStr()).find("security alert"),
                std::string::npos);
    }
    if (failed && ev->topic == "vm.booted") refilled = true;
  }
  EXPECT_TRUE(failed) << pool.stderr_text();
  EXPECT_TRUE(nv::test::wait_until([&] { return kill(static_cast<pid_t>(vmm_pid), 0) != 0; }, 5s))
      << "VMM " << vmm_pid << " still alive";
  EXPECT_TRUE(refilled);
  auto p = pool.terminate(60s);
  EXPECT_TRUE(p.clean()) << p.describe();
  auto o = orch.terminate();
  EXPECT_TRUE(o.clean()) << o.describe();
}

}  // namespace
