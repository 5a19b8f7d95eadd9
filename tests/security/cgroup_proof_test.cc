// Proof that the per-VM cgroups the pool manager gives each VMM (nv_vm's VmCgroup, v2 or the v1
// controllers of a hybrid host) block what they promise: a memory hog is OOM-killed, a CPU quota
// throttles a busy loop, a pids limit stops a fork loop.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "cgroup.h"

namespace {

using nv::vm::CgroupLayout;
using nv::vm::CgroupLimits;
using nv::vm::VmCgroup;

class CgroupProof : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to create cgroups";
    layout_ = CgroupLayout::detect("/sys/fs/cgroup", "/proc/self/cgroup", "nv-proof");
    if (layout_.mode == CgroupLayout::Mode::none) GTEST_SKIP() << layout_.reason;
    auto st = layout_.prepare();
    ASSERT_TRUE(st.ok()) << st.error().message;
  }
  void TearDown() override { layout_.remove_parents(); }

  // Forks a child that joins `cg` and runs `body`; returns its wait status.
  template <class F>
  int run_in(VmCgroup& cg, F body) {
    auto fds = cg.open_procs();
    EXPECT_TRUE(fds.ok());
    if (!fds.ok()) return -1;
    pid_t pid = fork();
    if (pid == 0) {
      for (auto& fd : fds.value()) {
        if (::write(fd.get(), "0", 1) != 1) _exit(90);
      }
      _exit(body());
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return status;
  }

  CgroupLayout layout_;
};

TEST_F(CgroupProof, MemoryHogIsOomKilled) {
  CgroupLimits limits;
  limits.memory_bytes = 32ull << 20;
  auto cg = VmCgroup::create(layout_, "oom-" + std::to_string(getpid()), limits);
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  int status = run_in(cg.value(), [] {
    std::vector<char*> blocks;
    for (int i = 0; i < 64; ++i) {  // 256 MiB, touched
      char* b = static_cast<char*>(malloc(4 << 20));
      if (!b) return 3;
      memset(b, 1, 4 << 20);
      blocks.push_back(b);
    }
    return 0;  // reaching this means the limit did not hold
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << "status " << status;
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  EXPECT_GE(cg.value().usage().oom_kills, 1u);
  EXPECT_TRUE(cg.value().destroy().ok());
}

TEST_F(CgroupProof, CpuQuotaThrottlesABusyLoop) {
  CgroupLimits limits;
  limits.cpu_quota_percent = 10;
  auto cg = VmCgroup::create(layout_, "cpu-" + std::to_string(getpid()), limits);
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  auto start = std::chrono::steady_clock::now();
  int status = run_in(cg.value(), [] {
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
    volatile uint64_t x = 0;
    while (std::chrono::steady_clock::now() < end) x = x + 1;
    return 0;
  });
  double wall_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(WIFEXITED(status));
  auto u = cg.value().usage();
  EXPECT_GT(u.cpu_throttled_periods, 0u);
  EXPECT_GT(u.cpu_throttled_us, 0u);  // throttled_time (v1, ns) or throttled_usec (v2)
  // At 10 % of a core the loop got far less than the wall time it spun for.
  EXPECT_LT(static_cast<double>(u.cpu_usage_us), 0.5 * wall_us) << u.cpu_usage_us << " us";
  EXPECT_TRUE(cg.value().destroy().ok());
}

TEST_F(CgroupProof, PidsLimitStopsAForkLoop) {
  CgroupLimits limits;
  limits.pids_max = 8;
  auto cg = VmCgroup::create(layout_, "pids-" + std::to_string(getpid()), limits);
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  int status = run_in(cg.value(), [] {
    int forked = 0;
    std::vector<pid_t> kids;
    for (int i = 0; i < 30; ++i) {
      pid_t p = fork();
      if (p == 0) {
        pause();
        _exit(0);
      }
      if (p < 0) break;
      kids.push_back(p);
      ++forked;
    }
    for (pid_t k : kids) kill(k, SIGKILL);
    for (pid_t k : kids) waitpid(k, nullptr, 0);
    return forked;
  });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_LT(WEXITSTATUS(status), 8);
  EXPECT_GT(WEXITSTATUS(status), 0);
  EXPECT_TRUE(cg.value().destroy().ok());
}

}  // namespace
