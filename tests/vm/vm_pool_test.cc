// Real microVMs under QEMU (TCG on the development machines): the pool in snapshot mode with its
// jails and cgroups, the guest agent over virtio-serial, and the nv-vm-pool-manager service over
// its bus socket. Few VMs are booted and shared by the cases; skipped (with the reason) when the
// guest image ($NV_BUILD_DIR/guest/{vmlinux,rootfs.ext4}), QEMU or root is missing.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include <nv/schema/vm.capnp.h>

#include "common/client.h"
#include "guest/host/guest_channel.h"
#include "guest_link.h"
#include "pool.h"
#include "qemu_backend.h"
#include "support/vm_paths.h"

extern char** environ;

namespace nv::vm {
namespace {

using namespace std::chrono_literals;

using test::build_dir;
using test::env_or;
using test::exists;
using test::guest_dir;

// Why the VM tests cannot run here, or "".
std::string missing_prerequisite() {
  if (::geteuid() != 0) return "needs root (jails, cgroups)";
  if (!exists("/usr/bin/qemu-system-x86_64")) return "qemu-system-x86_64 not installed";
  for (auto f : {"/vmlinux", "/rootfs.ext4"}) {
    if (!exists(guest_dir() + f)) {
      return guest_dir() + f + " missing: run guest/build.sh " + guest_dir() + " AGENT";
    }
  }
  return "";
}

struct Events : PoolEvents {
  void on_failed(const std::string& id, SizeTier, const std::string& reason, pid_t) override {
    std::lock_guard lock(mu);
    failed.emplace_back(id, reason);
    cv.notify_all();
  }
  void on_booted(const VmInfo& vm, SizeTier, double ms) override {
    std::lock_guard lock(mu);
    boots.emplace_back(vm.restored, ms);
  }
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<std::string, std::string>> failed;
  std::vector<std::pair<bool, double>> boots;
};

struct ExecResult {
  guest::ExecOutcome outcome;
  std::string out, err;
};

ExecResult run_in(const VmInfo& vm, schema::Language lang, const std::string& code,
                  std::chrono::seconds timeout = 30s) {
  ExecResult r;
  auto deadline = Clock::now() + timeout;
  auto ch =
      guest::GuestChannel::connect(vm.channel_path, guest::ChannelKind::unix_stream, 0, deadline);
  if (!ch.ok()) {
    r.err = "connect: " + ch.error().message;
    return r;
  }
  guest::ExecSpec spec;
  spec.language = lang;
  spec.code = code;
  spec.timeout_ms = static_cast<uint32_t>(timeout.count() * 1000 - 1000);
  auto o = ch.value()->exec(
      spec,
      [&](schema::Stream s, std::string_view d) {
        (s == schema::Stream::STDOUT ? r.out : r.err).append(d);
      },
      deadline);
  if (!o.ok()) {
    r.err += "exec: " + o.error().message;
    return r;
  }
  r.outcome = o.value();
  return r;
}

// One pool in snapshot mode shared by the pool cases: one cold-booted template, then restores.
class VmPoolTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    skip_ = missing_prerequisite();
    if (!skip_.empty()) return;
    dir_ = "/tmp/nv-vmtest-" + std::to_string(::getpid());
    (void)make_dirs(dir_, 0755);
    ::chmod(dir_.c_str(), 0755);
    layout_ = CgroupLayout::detect("/sys/fs/cgroup", "/proc/self/cgroup",
                                   "nv-vmtest-" + std::to_string(::getpid()));
    if (Status s = layout_.prepare(); !s.ok()) {
      skip_ = "cgroups: " + s.error().message;
      return;
    }
    QemuConfig q;
    q.runtime_dir = dir_ + "/runtime";
    q.cgroups = layout_;
    q.accel = "tcg";  // the service test below exercises the probe
    backend_ = new QemuBackend(q);
    guest_ = new ChannelGuestLink();
    events_ = new Events();
    PoolOptions o;
    o.tiers = {{SizeTier::SMALL, 1, 256, 2, 3}};
    o.kernel = guest_dir() + "/vmlinux";
    o.rootfs = guest_dir() + "/rootfs.ext4";
    o.snapshot = true;
    o.snapshot_dir = dir_ + "/snapshots";
    o.boot_timeout = 90s;
    pool_ = new Pool(o, *backend_, *guest_, *events_);
    if (Status s = pool_->start(); !s.ok()) {
      start_error_ = s.error().message;
      return;
    }
    pool_->wait_warm(Clock::now() + 120s);
  }
  static void TearDownTestSuite() {
    if (pool_) pool_->stop();
    delete pool_;
    delete events_;
    delete guest_;
    delete backend_;
    pool_ = nullptr;
    if (!dir_.empty()) {
      layout_.remove_parents();
      (void)remove_tree(dir_);
    }
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_TRUE(start_error_.empty()) << start_error_;
  }
  LeaseInfo lease() {
    auto l = pool_->lease(SizeTier::SMALL, 90s);
    EXPECT_TRUE(l.ok()) << (l.ok() ? "" : l.error().message);
    return l.ok() ? l.value() : LeaseInfo{};
  }

  static inline std::string skip_, start_error_, dir_;
  static inline CgroupLayout layout_;
  static inline QemuBackend* backend_ = nullptr;
  static inline ChannelGuestLink* guest_ = nullptr;
  static inline Events* events_ = nullptr;
  static inline Pool* pool_ = nullptr;
};

TEST_F(VmPoolTest, LeaseRunsPythonBashNodeThenReleaseLeavesNothing) {
  LeaseInfo l = lease();
  ASSERT_FALSE(l.vm.vm_id.empty());
  EXPECT_EQ(l.vm.accel, "tcg");
  EXPECT_TRUE(l.vm.restored);
  EXPECT_LT(l.wait_ms, 50.0);  // a warm VM was waiting
  auto py = run_in(l.vm, schema::Language::PYTHON, "print(sum(range(10**6)))");
  EXPECT_EQ(py.out, "499999500000\n") << py.err;
  auto sh = run_in(l.vm, schema::Language::BASH, "echo $((6 * 7))");
  EXPECT_EQ(sh.out, "42\n") << sh.err;
  auto js = run_in(l.vm, schema::Language::JAVASCRIPT, "console.log(2 ** 10)");
  EXPECT_EQ(js.out, "1024\n") << js.err;

  pid_t pid = l.vm.vmm_pid;
  std::string jail = l.vm.jail_dir;
  auto cgroups = layout_.vm_dirs(l.vm.vm_id);
  ASSERT_TRUE(exists(jail));
  for (auto& d : cgroups) ASSERT_TRUE(exists(d)) << d;
  auto t0 = Clock::now();
  ASSERT_TRUE(pool_->release(l.vm.vm_id, "test done").ok());
  std::cout << "[ figures  ] release (destroy + cleanup) took "
            << std::chrono::duration<double, std::milli>(Clock::now() - t0).count() << " ms\n";
  EXPECT_NE(::kill(pid, 0), 0);  // the VMM process is gone
  EXPECT_EQ(errno, ESRCH);
  EXPECT_FALSE(exists(jail));
  for (auto& d : cgroups) EXPECT_FALSE(exists(d)) << d;
  // Refill: back at --warm within the refill time of one restore (generous under TCG).
  t0 = Clock::now();
  EXPECT_TRUE(pool_->wait_warm(Clock::now() + 60s));
  std::cout << "[ figures  ] back at warm after "
            << std::chrono::duration<double, std::milli>(Clock::now() - t0).count() << " ms\n";
}

TEST_F(VmPoolTest, RestoredVmsHaveDifferentRandomBytesAndIds) {
  LeaseInfo a = lease(), b = lease();
  ASSERT_TRUE(a.vm.restored && b.vm.restored);
  ASSERT_NE(a.vm.vm_id, b.vm.vm_id);
  const std::string code =
      "import os\nprint(os.urandom(16).hex())\nprint(open('/run/nv/vm-id').read().strip())\n";
  auto ra = run_in(a.vm, schema::Language::PYTHON, code);
  auto rb = run_in(b.vm, schema::Language::PYTHON, code);
  ASSERT_EQ(ra.out.size(), 33 + a.vm.vm_id.size() + 1) << ra.out << ra.err;
  ASSERT_EQ(rb.out.size(), 33 + b.vm.vm_id.size() + 1) << rb.out << rb.err;
  EXPECT_NE(ra.out.substr(0, 32), rb.out.substr(0, 32));  // different random bytes
  EXPECT_EQ(ra.out.substr(33), a.vm.vm_id + "\n");        // each knows its own fresh id
  EXPECT_EQ(rb.out.substr(33), b.vm.vm_id + "\n");
  std::cout << "[ figures  ] urandom a=" << ra.out.substr(0, 32) << " b=" << rb.out.substr(0, 32)
            << "\n";
  EXPECT_TRUE(pool_->release(a.vm.vm_id, "done").ok());
  EXPECT_TRUE(pool_->release(b.vm.vm_id, "done").ok());
}

// Restored clones run on the template's RAM: a sealed memfd they map copy-on-write. The
// snapshot file holds device state only, and a clone's VMM — even reopened by root through its
// /proc fd — cannot write the RAM the next clone starts from.
TEST_F(VmPoolTest, ClonesMapTheSealedTemplateRamCopyOnWrite) {
  auto snaps = pool_->snapshot_stats();
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_LT(snaps[0].bytes, 4u << 20) << "the snapshot should leave the RAM out";
  auto l = lease();
  ASSERT_FALSE(l.vm.vm_id.empty());
  ASSERT_TRUE(l.vm.restored);
  const std::string proc = "/proc/" + std::to_string(l.vm.vmm_pid);
  std::ifstream maps(proc + "/maps");
  std::string line;
  bool mapped = false;
  while (std::getline(maps, line))
    mapped |= line.find("memfd:nv-template-small") != std::string::npos;
  EXPECT_TRUE(mapped) << "the VMM does not map the template memfd";
  int fd = ::open((proc + "/fd/3").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  errno = 0;
  EXPECT_EQ(::pwrite(fd, "poison", 6, 4096), -1);
  EXPECT_EQ(errno, EPERM);
  ::close(fd);
  // The clone still works (its own writes are private pages).
  auto r = run_in(l.vm, schema::Language::PYTHON, "print(len(bytearray(32 << 20)))");
  EXPECT_EQ(r.out, "33554432\n") << r.err;
  EXPECT_TRUE(pool_->release(l.vm.vm_id, "done").ok());
}

TEST_F(VmPoolTest, SigkilledVmmIsNoticedWithinTwoSecondsAndReplaced) {
  ASSERT_TRUE(pool_->wait_warm(Clock::now() + 60s));
  VmInfo victim = pool_->live_vms().at(0);
  size_t before;
  {
    std::lock_guard lock(events_->mu);
    before = events_->failed.size();
  }
  auto t0 = Clock::now();
  ASSERT_EQ(::kill(victim.vmm_pid, SIGKILL), 0);
  {
    std::unique_lock lock(events_->mu);
    ASSERT_TRUE(events_->cv.wait_for(lock, 2s, [&] { return events_->failed.size() > before; }));
    EXPECT_EQ(events_->failed.back().first, victim.vm_id);
    EXPECT_NE(events_->failed.back().second.find("killed by signal 9"), std::string::npos)
        << events_->failed.back().second;
  }
  std::cout << "[ figures  ] SIGKILL noticed after "
            << std::chrono::duration<double, std::milli>(Clock::now() - t0).count() << " ms\n";
  EXPECT_FALSE(exists(victim.jail_dir));
  for (auto& d : layout_.vm_dirs(victim.vm_id)) EXPECT_FALSE(exists(d)) << d;
  EXPECT_TRUE(pool_->wait_warm(Clock::now() + 60s));
}

TEST_F(VmPoolTest, GuestMemoryHogIsKilledInsideTheGuest) {
  LeaseInfo l = lease();
  // Allocate and touch 16 MiB at a time, far beyond the small tier's 256 MiB.
  auto r = run_in(l.vm, schema::Language::PYTHON,
                  "x = []\n"
                  "for i in range(64):\n"
                  "    x.append(bytearray(16 << 20))\n"
                  "print('survived', len(x))\n",
                  60s);
  std::cout << "[ figures  ] memory hog: exit " << r.outcome.exit_code << " signal "
            << r.outcome.signal
            << " stderr tail: " << r.err.substr(r.err.size() > 200 ? r.err.size() - 200 : 0)
            << "\n";
  EXPECT_EQ(r.out.find("survived"), std::string::npos);
  // Killed in the guest (guest OOM killer: SIGKILL; or MemoryError: exit 1), not the VMM.
  EXPECT_TRUE(r.outcome.signal == SIGKILL || r.outcome.exit_code != 0);
  auto usage = pool_->usage(l.vm.vm_id);
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage.value().oom_kills, 0u);  // the cgroup never had to kill the VMM
  EXPECT_LE(usage.value().memory_bytes, usage.value().memory_limit_bytes);
  EXPECT_EQ(::kill(l.vm.vmm_pid, 0), 0);  // QEMU is alive
  auto after = run_in(l.vm, schema::Language::BASH, "echo still-here");
  EXPECT_EQ(after.out, "still-here\n") << after.err;
  std::cout << "[ figures  ] VMM cgroup memory " << (usage.value().memory_bytes >> 20) << " MiB of "
            << (usage.value().memory_limit_bytes >> 20) << " MiB\n";
  EXPECT_TRUE(pool_->release(l.vm.vm_id, "done").ok());
}

TEST_F(VmPoolTest, BootFiguresAreReported) {
  auto snaps = pool_->snapshot_stats();
  ASSERT_EQ(snaps.size(), 1u);
  std::lock_guard lock(events_->mu);
  double restore_sum = 0;
  int n = 0;
  for (auto& [restored, ms] : events_->boots) {
    if (restored) {
      restore_sum += ms;
      n++;
    }
  }
  ASSERT_GT(n, 0);
  std::cout << "[ figures  ] cold boot (template) " << snaps[0].cold_boot_ms << " ms, snapshot "
            << snaps[0].snapshot_ms << " ms (" << (snaps[0].bytes >> 20) << " MiB), restore to "
            << "reseeded mean " << restore_sum / n << " ms over " << n << " VMs\n";
}

// The service over its bus socket: typed errors and a lease/release round trip.
class VmServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = missing_prerequisite();
    if (!why.empty()) GTEST_SKIP() << why;
    binary_ = env_or("NV_BIN_DIR", build_dir() + "/bin") + "/nv-vm-pool-manager";
    if (!exists(binary_)) GTEST_SKIP() << binary_ << " not built";
    dir_ = "/tmp/nv-vmsvc-" + std::to_string(::getpid());
    ASSERT_TRUE(make_dirs(dir_, 0755).ok());
    endpoint_ = "ipc://" + dir_ + "/vm-pool.sock";
    std::vector<std::string> args = {binary_,
                                     "--runtime-dir",
                                     dir_,
                                     "--vm-pool-endpoint",
                                     endpoint_,
                                     "--events-in-endpoint",
                                     "ipc://" + dir_ + "/no-hub.sock",
                                     "--kernel",
                                     guest_dir() + "/vmlinux",
                                     "--rootfs",
                                     guest_dir() + "/rootfs.ext4",
                                     "--no-require-egress",  // no sentinel here
                                     "--size",
                                     "small",
                                     "--warm",
                                     "1",
                                     "--max",
                                     "1",
                                     "--stats-interval-ms",
                                     "1000",
                                     "--lease-ttl-ms",
                                     "120000",
                                     "--max-lease-ttl-ms",
                                     "300000"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ASSERT_EQ(::posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ), 0);
  }
  void TearDown() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      ::waitpid(pid_, &status, 0);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
      // Nothing of its VMs is left: no jail dirs.
      EXPECT_FALSE(exists(dir_ + "/vms") && ::rmdir((dir_ + "/vms").c_str()) != 0);
    }
    if (!dir_.empty()) (void)remove_tree(dir_);
  }
  template <class Fill>
  Result<Client::Incoming> call(Client& c, const std::string& svc, Fill fill,
                                std::chrono::milliseconds deadline = 5s) {
    capnp::MallocMessageBuilder mb;
    fill(mb);
    return c.call(svc, &mb, deadline);
  }

  std::string binary_, dir_, endpoint_;
  pid_t pid_ = -1;
};

TEST_F(VmServiceTest, LeasesOverTheSocketAndAnswersBadInputWithTypedErrors) {
  zmq::context_t ctx;
  Client c(ctx, ClientOptions{endpoint_, std::nullopt, "", {}});
  // Wait until one small VM is warm (accel probe + cold boot under TCG).
  bool warm = false;
  auto until = Clock::now() + 120s;
  std::string accel;
  while (!warm && Clock::now() < until) {
    auto st = call(c, "vm.status", [](capnp::MallocMessageBuilder& mb) {
      bus::init_body<schema::PoolStatusRequest>(mb);
    });
    if (st.ok()) {
      auto s = st.value().body.root<schema::PoolStatus>();
      ASSERT_TRUE(s.ok());
      accel = s.value().getAccel();
      warm = s.value().getTiers().size() == 1 && s.value().getTiers()[0].getWarm() == 1;
    }
    if (!warm) std::this_thread::sleep_for(200ms);
  }
  ASSERT_TRUE(warm) << "no warm VM within 120 s";
  EXPECT_EQ(accel, "tcg");  // the probe found no usable KVM here

  auto unknown_tier = call(c, "vm.lease", [](capnp::MallocMessageBuilder& mb) {
    bus::init_body<schema::LeaseRequest>(mb).setTier(schema::SizeTier::LARGE);
  });
  ASSERT_FALSE(unknown_tier.ok());
  EXPECT_EQ(unknown_tier.error().code, ErrorCode::UNKNOWN_TIER) << unknown_tier.error().message;
  auto too_long = call(c, "vm.lease", [](capnp::MallocMessageBuilder& mb) {
    bus::init_body<schema::LeaseRequest>(mb).setLeaseMs(300001);
  });
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.error().code, ErrorCode::BAD_REQUEST) << too_long.error().message;
  EXPECT_NE(too_long.error().message.find("--max-lease-ttl-ms"), std::string::npos);

  auto t0 = Clock::now();
  auto lease = call(c, "vm.lease", [](capnp::MallocMessageBuilder& mb) {
    bus::init_body<schema::LeaseRequest>(mb).setTier(schema::SizeTier::SMALL);
  });
  ASSERT_TRUE(lease.ok()) << lease.error().message;
  std::cout << "[ figures  ] lease over the socket: "
            << std::chrono::duration<double, std::milli>(Clock::now() - t0).count() << " ms\n";
  auto l = lease.value().body.root<schema::Lease>();
  ASSERT_TRUE(l.ok());
  std::string id = l.value().getVmId();
  EXPECT_EQ(l.value().getChannelKind(), schema::ChannelKind::UNIX_STREAM);
  EXPECT_EQ(l.value().getResources().getMemoryMib(), 256u);
  EXPECT_EQ(l.value().getLeaseMs(), 120000u);  // leaseMs 0: --lease-ttl-ms
  VmInfo vm;
  vm.channel_path = l.value().getChannelPath();
  auto py = run_in(vm, schema::Language::PYTHON, "print(6 * 7)");
  EXPECT_EQ(py.out, "42\n") << py.err;

  // max 1 and it is leased: a short deadline runs out.
  auto exhausted = call(c, "vm.lease", [](capnp::MallocMessageBuilder& mb) {
    auto r = bus::init_body<schema::LeaseRequest>(mb);
    r.setTier(schema::SizeTier::SMALL);
    r.setDeadlineMs(300);
  });
  ASSERT_FALSE(exhausted.ok());
  EXPECT_EQ(exhausted.error().code, ErrorCode::POOL_EXHAUSTED) << exhausted.error().message;

  auto release = [&](const std::string& vm_id) {
    return call(c, "vm.release", [&](capnp::MallocMessageBuilder& mb) {
      auto r = bus::init_body<schema::ReleaseRequest>(mb);
      r.setVmId(vm_id);
      r.setReason("test");
    });
  };
  auto ok = release(id);
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  auto twice = release(id);
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.error().code, ErrorCode::UNKNOWN_LEASE);
  auto nobody = release("vm-never-was");
  ASSERT_FALSE(nobody.ok());
  EXPECT_EQ(nobody.error().code, ErrorCode::UNKNOWN_LEASE);
  auto bogus = call(c, "vm.reboot", [](capnp::MallocMessageBuilder& mb) {
    bus::init_body<schema::PoolStatusRequest>(mb);
  });
  ASSERT_FALSE(bogus.ok());
  EXPECT_EQ(bogus.error().code, ErrorCode::UNKNOWN_SERVICE);
  // Still serving.
  auto st = call(c, "vm.status", [](capnp::MallocMessageBuilder& mb) {
    bus::init_body<schema::PoolStatusRequest>(mb);
  });
  EXPECT_TRUE(st.ok());
}

}  // namespace
}  // namespace nv::vm
