// Sandboxes that live, the pool's side (issue 13 §1, §5, §6), with real microVMs: one
// nv-vm-pool-manager (medium tier, TCG here) spoken to through the executor's PoolClient, its
// VMs shared by the cases, which run in order:
//   1. a sandbox lease gets a 100 MiB file in its RAM (/tmp is tmpfs);
//   2. fork 4: every fork sees the file (sha256), a write in one is seen by no other fork nor
//      the parent, each fork has its own random bytes and boot id;
//   3. pause: the VMM is gone; resume: the file and the guest's uptime continue;
//   4. snapshot → release the source → lease fromSnapshot: the same file;
//   5. SIGKILL the pool manager with a running and a paused sandbox: no VMM, cgroup or jail is
//      left; restarted, the paused one resumes with its file, the running one is reported lost
//      (with why) until released.
// Typed errors for bad requests ride along. Skips (with the reason) without root, QEMU or image.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include "cgroup.h"
#include "guest/host/guest_channel.h"
#include "pool_client.h"
#include "sysutil.h"
#include "support/vm_paths.h"
#include "vm/guest_run.h"

extern char** environ;

namespace nv::vm {
namespace {

using namespace std::chrono_literals;
using exec::PoolClient;
using exec::VmLease;

using test::build_dir;
using test::env_or;
using test::exists;
using test::guest_dir;

// The VMM named nv-<vm_id> (QEMU -name), or -1.
pid_t vmm_pid(const std::string& vm_id) { return nv::vm::find_process_by_arg("nv-" + vm_id); }

// "Pss:" / "Private_Dirty:" of the VMM in KiB, from smaps_rollup.
std::map<std::string, long> rollup(pid_t pid) {
  std::map<std::string, long> out;
  std::ifstream f("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string key;
  long kb;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream ls(line);
    if (ls >> key >> kb) out[key.substr(0, key.size() - 1)] = kb;
  }
  return out;
}

// Runs a bash program in the VM; stdout, or "ERROR: ..." (exit code and stderr).
std::string sh(const VmLease& l, const std::string& code, std::chrono::seconds timeout = 180s) {
  return test::run_in_guest(l, schema::Language::BASH, code, timeout);
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

constexpr const char* kOwner = "tester";
constexpr const char* kSha = "sha256sum /tmp/big | cut -c1-64";

class PoolSandboxTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) skip_ = "needs root (jails, cgroups)";
    if (skip_.empty() && !exists("/usr/bin/qemu-system-x86_64")) skip_ = "no qemu-system-x86_64";
    for (auto f : {"/vmlinux", "/rootfs.ext4"}) {
      if (skip_.empty() && !exists(guest_dir() + f)) skip_ = guest_dir() + f + " missing";
    }
    binary_ = env_or("NV_BIN_DIR", build_dir() + "/bin") + "/nv-vm-pool-manager";
    if (skip_.empty() && !exists(binary_)) skip_ = binary_ + " not built";
    if (!skip_.empty()) return;
    dir_ = "/tmp/nv-poolsbx-" + std::to_string(::getpid());
    (void)make_dirs(dir_, 0755);
    endpoint_ = "ipc://" + dir_ + "/vm-pool.sock";
    start_service();
    ctx_ = new zmq::context_t();
    client_ = new PoolClient(*ctx_, ClientOptions{endpoint_, std::nullopt, "", {}});
    if (!wait_warm()) start_error_ = "no warm medium VM within 240 s";
  }
  static void TearDownTestSuite() {
    delete client_;
    delete ctx_;
    client_ = nullptr;
    stop_service(SIGTERM);
    if (!dir_.empty()) (void)remove_tree(dir_);
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_TRUE(start_error_.empty()) << start_error_;
  }

  // `extra` arguments are appended; with `log`, the service's stderr goes to that file.
  static void start_service(const std::vector<std::string>& extra = {},
                            const std::string& log = "") {
    std::vector<std::string> args = {binary_,
                                     "--runtime-dir",
                                     dir_,
                                     "--state-dir",
                                     dir_ + "/state",
                                     "--vm-pool-endpoint",
                                     endpoint_,
                                     "--events-in-endpoint",
                                     "ipc://" + dir_ + "/no-hub.sock",
                                     "--kernel",
                                     guest_dir() + "/vmlinux",
                                     "--rootfs",
                                     guest_dir() + "/rootfs.ext4",
                                     "--no-require-egress",
                                     "--accel",
                                     "tcg",
                                     "--size",
                                     "medium",
                                     "--warm",
                                     "1",
                                     "--max",
                                     "8",
                                     "--boot-timeout-ms",
                                     "180000",
                                     "--lease-ttl-ms",
                                     "600000"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    ::posix_spawn_file_actions_init(&fa);
    if (!log.empty()) {
      ::posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    }
    if (::posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ) != 0) pid_ = -1;
    ::posix_spawn_file_actions_destroy(&fa);
  }
  static int stop_service(int sig) {
    int status = -1;
    if (pid_ > 0) {
      ::kill(pid_, sig);
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
    }
    return status;
  }
  static bool wait_warm() {
    auto until = Clock::now() + 240s;
    while (Clock::now() < until) {
      auto st = client_->status(2000ms);
      if (st.ok() && st.value().warm >= 1) return true;
      std::this_thread::sleep_for(300ms);
    }
    return false;
  }
  static VmLease lease(const std::string& sandbox_id, const std::string& from = "") {
    exec::SandboxLeaseSpec s;
    s.sandbox_id = sandbox_id;
    s.owner = kOwner;
    s.tier = schema::SizeTier::MEDIUM;
    s.from_snapshot = from;
    s.wait = 180s;
    s.lifetime = 7200s;  // above --max-lease-ttl-ms (1 h): sandboxes live up to 24 h
    auto l = client_->lease_sandbox("t-" + sandbox_id, s);
    EXPECT_TRUE(l.ok()) << (l.ok() ? "" : l.error().message);
    return l.ok() ? l.value() : VmLease{};
  }

  static inline std::string skip_, start_error_, dir_, binary_, endpoint_;
  static inline pid_t pid_ = -1;
  static inline zmq::context_t* ctx_ = nullptr;
  static inline PoolClient* client_ = nullptr;
  static inline VmLease parent_;
  static inline std::string sha_;
};

TEST_F(PoolSandboxTest, A_SandboxLeaseHoldsAHundredMiBFileInRam) {
  parent_ = lease("sbx-parent");
  ASSERT_FALSE(parent_.vm_id.empty());
  EXPECT_EQ(parent_.state, schema::LeaseState::RUNNING);
  EXPECT_EQ(parent_.sandbox_id, "sbx-parent");
  EXPECT_EQ(parent_.memory_mib, 512u);
  EXPECT_EQ(parent_.lease_ms, 7200000u);
  std::string fs = sh(parent_,
                      "stat -f -c %T /tmp; head -c 100M /dev/urandom > /tmp/big && "
                      "stat -c %s /tmp/big && " +
                          std::string(kSha));
  std::istringstream in(fs);
  std::string type, size;
  in >> type >> size >> sha_;
  EXPECT_EQ(type, "tmpfs") << fs;
  EXPECT_EQ(size, "104857600") << fs;
  ASSERT_EQ(sha_.size(), 64u) << fs;
  auto listed = client_->leases(kOwner);
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed.value().size(), 1u);
  EXPECT_EQ(listed.value()[0].vm_id, parent_.vm_id);
  // vm.extend moves the expiry; beyond --max-sandbox-ttl-ms is badRequest.
  auto ext = client_->extend("t", parent_.vm_id, 9000s);
  ASSERT_TRUE(ext.ok()) << ext.error().message;
  EXPECT_EQ(ext.value().lease_ms, 9000000u);
  EXPECT_GT(ext.value().expires_unix_ms, parent_.expires_unix_ms);
  auto too_long = client_->extend("t", parent_.vm_id, std::chrono::hours(25));
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.error().code, ErrorCode::BAD_REQUEST);
}

TEST_F(PoolSandboxTest, B_ForkFourSeeTheFileWriteApartAndDrawOwnEntropy) {
  ASSERT_FALSE(parent_.vm_id.empty());
  for (uint32_t bad : {0u, 17u}) {
    auto f = client_->fork("t", parent_.vm_id, bad, 0ms, {});
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.error().code, ErrorCode::BAD_REQUEST) << f.error().message;
  }
  auto unknown = client_->fork("t", "vm-nosuchvm", 1, 0ms, {});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, ErrorCode::UNKNOWN_LEASE) << unknown.error().message;

  auto uptime_before = sh(parent_, "cut -d' ' -f1 /proc/uptime");
  // Asked through a client that takes 500 ms of silence for a stalled peer (the executor's
  // takes 30 s, which a lease waiting for a full pool outlasts): the fork takes seconds, and
  // the pool manager answers the client's heartbeats meanwhile, so it is not abandoned.
  ClientOptions impatient{endpoint_, std::nullopt, "", {}};
  impatient.heartbeat = 100ms;
  impatient.stall_limit = 500ms;
  PoolClient strict(*ctx_, impatient);
  auto f = strict.fork("t-fork", parent_.vm_id, 4, 600s, {"f0", "f1", "f2", "f3"});
  ASSERT_TRUE(f.ok()) << f.error().message;
  ASSERT_EQ(f.value().leases.size(), 4u);
  std::cout << "[ figures  ] fork 4 of a 512 MiB VM holding 100 MiB: capture "
            << f.value().capture_ms << " ms, whole fork " << f.value().fork_ms << " ms\n";
  std::set<std::string> ids{parent_.vm_id}, uuids, randoms;
  for (size_t i = 0; i < 4; ++i) {
    const VmLease& k = f.value().leases[i];
    EXPECT_EQ(k.sandbox_id, "f" + std::to_string(i));
    EXPECT_TRUE(ids.insert(k.vm_id).second) << "fork ids must be new";
    EXPECT_EQ(trim(sh(k, kSha)), sha_) << k.vm_id;
    uuids.insert(trim(sh(k, "cat /proc/sys/kernel/random/uuid")));
    randoms.insert(trim(sh(k, "python3 -c 'import os; print(os.urandom(16).hex())'")));
  }
  // Before the guest agent forced a CRNG reseed (RNDRESEEDCRNG after RNDADDENTROPY), two of
  // these four came out equal: the forks of a VM up for a while shared its CRNG until Linux's
  // next scheduled reseed.
  EXPECT_EQ(uuids.size(), 4u);
  EXPECT_EQ(randoms.size(), 4u);
  // The parent (not reseeded) draws bytes none of its forks drew.
  randoms.insert(trim(sh(parent_, "python3 -c 'import os; print(os.urandom(16).hex())'")));
  EXPECT_EQ(randoms.size(), 5u);
  // A write in fork 0 (a new file and a changed byte of the big one) is its own.
  const VmLease& f0 = f.value().leases[0];
  EXPECT_EQ(sh(f0,
               "echo mine > /tmp/mark && printf X | dd of=/tmp/big bs=1 seek=5 "
               "conv=notrunc status=none && cat /tmp/mark"),
            "mine\n");
  EXPECT_NE(trim(sh(f0, kSha)), sha_);
  for (size_t i = 1; i < 4; ++i) {
    EXPECT_EQ(sh(f.value().leases[i], "ls /tmp/mark 2>/dev/null; echo end"), "end\n");
    EXPECT_EQ(trim(sh(f.value().leases[i], kSha)), sha_);
  }
  EXPECT_EQ(sh(parent_, "ls /tmp/mark 2>/dev/null; echo end"), "end\n");
  EXPECT_EQ(trim(sh(parent_, kSha)), sha_);
  // The parent ran on (its uptime went on).
  EXPECT_GT(std::stod(sh(parent_, "cut -d' ' -f1 /proc/uptime")), std::stod(uptime_before));

  // Each fork's VMM maps the captured RAM copy-on-write (memfd:nv-capture-...), inside its own
  // cgroup with the tier's memory limit.
  pid_t p1 = vmm_pid(f.value().leases[1].vm_id);
  ASSERT_GT(p1, 0);
  std::ifstream maps("/proc/" + std::to_string(p1) + "/maps");
  std::string line;
  bool cow = false;
  while (std::getline(maps, line)) {
    if (line.find("memfd:nv-capture-") != std::string::npos &&
        line.find(" rw-p ") != std::string::npos) {
      cow = true;
    }
  }
  EXPECT_TRUE(cow) << "fork VMM does not map the captured RAM privately";
  auto r = rollup(p1);
  std::cout << "[ figures  ] idle fork VMM: Pss " << r["Pss"] / 1024 << " MiB, Private_Dirty "
            << r["Private_Dirty"] / 1024 << " MiB, Rss " << r["Rss"] / 1024 << " MiB\n";
  auto layout = CgroupLayout::detect();
  bool limited = false;
  for (const auto& d : layout.vm_dirs(f.value().leases[1].vm_id)) {
    for (auto file : {"/memory.max", "/memory.limit_in_bytes"}) {
      auto v = read_file(d + file);
      if (v.ok() && trim(v.value()) == std::to_string((512ull + 256) << 20)) limited = true;
    }
  }
  EXPECT_TRUE(limited) << "fork cgroup has no tier memory limit";
  for (const auto& k : f.value().leases) {
    EXPECT_TRUE(client_->release("t", k.vm_id, "test done").ok());
  }
}

// The pool makes a fork kit per tier ahead (fork_kit.cc: a copy of the template and a VMM
// started on it). Nothing watches that VMM while it waits: SIGKILL it, and the next fork must
// still work (without the kit) and a new kit be made after it.
TEST_F(PoolSandboxTest, B2_ForkSurvivesADeadForkKitAndTheKitIsRemade) {
  ASSERT_FALSE(parent_.vm_id.empty());
  auto kits_ready = [](std::chrono::seconds limit) {
    for (auto until = Clock::now() + limit; Clock::now() < until;) {
      auto st = client_->status(2000ms);
      if (st.ok() && st.value().fork_kits >= 1) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  };
  ASSERT_TRUE(kits_ready(120s)) << "no fork kit made";
  // The kit's VMM: the only process mapping a capture memfd (B released its forks).
  pid_t kit = -1;
  for (const auto& name : list_dir("/proc")) {
    if (name[0] < '0' || name[0] > '9') continue;
    auto maps = read_file("/proc/" + name + "/maps", 16 << 20);
    if (maps.ok() && maps.value().find("memfd:nv-capture-") != std::string::npos) {
      kit = static_cast<pid_t>(std::stol(name));
    }
  }
  ASSERT_GT(kit, 0) << "no VMM maps a fork kit's memory";
  ASSERT_EQ(::kill(kit, SIGKILL), 0);
  for (int i = 0; i < 100 && ::kill(kit, 0) == 0; ++i) std::this_thread::sleep_for(20ms);
  auto f = client_->fork("t-fork-dead-kit", parent_.vm_id, 1, 0ms, {});
  ASSERT_TRUE(f.ok()) << f.error().message;
  ASSERT_EQ(f.value().leases.size(), 1u);
  EXPECT_EQ(trim(sh(f.value().leases[0], kSha)), sha_);
  EXPECT_TRUE(client_->release("t", f.value().leases[0].vm_id, "test done").ok());
  EXPECT_TRUE(kits_ready(120s)) << "no fork kit made after the fork";
}

TEST_F(PoolSandboxTest, C_PauseFreesTheVmmAndResumeKeepsFileAndUptime) {
  ASSERT_FALSE(parent_.vm_id.empty());
  pid_t before = vmm_pid(parent_.vm_id);
  ASSERT_GT(before, 0);
  double up = std::stod(sh(parent_, "cut -d' ' -f1 /proc/uptime"));
  auto t0 = Clock::now();
  auto p = client_->pause("t", parent_.vm_id);
  ASSERT_TRUE(p.ok()) << p.error().message;
  double pause_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  EXPECT_EQ(p.value().state, schema::LeaseState::PAUSED);
  EXPECT_TRUE(p.value().channel_path.empty());
  EXPECT_FALSE(exists("/proc/" + std::to_string(before))) << "VMM still there";
  EXPECT_EQ(vmm_pid(parent_.vm_id), -1);
  auto listed = client_->leases(kOwner);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed.value().size(), 1u);
  EXPECT_EQ(listed.value()[0].state, schema::LeaseState::PAUSED);
  auto again = client_->pause("t", parent_.vm_id);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::SANDBOX_STATE) << again.error().message;

  t0 = Clock::now();
  auto r = client_->resume("t", parent_.vm_id, 0ms);
  ASSERT_TRUE(r.ok()) << r.error().message;
  double resume_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  std::cout << "[ figures  ] pause " << pause_ms << " ms, resume " << resume_ms << " ms\n";
  EXPECT_EQ(r.value().vm_id, parent_.vm_id);
  EXPECT_EQ(r.value().state, schema::LeaseState::RUNNING);
  EXPECT_FALSE(r.value().channel_path.empty());
  parent_ = r.value();
  EXPECT_EQ(trim(sh(parent_, kSha)), sha_);
  EXPECT_GE(std::stod(sh(parent_, "cut -d' ' -f1 /proc/uptime")), up);
  auto twice = client_->resume("t", parent_.vm_id, 0ms);
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.error().code, ErrorCode::SANDBOX_STATE) << twice.error().message;
}

TEST_F(PoolSandboxTest, D_SnapshotReleaseRestoreFromIt) {
  ASSERT_FALSE(parent_.vm_id.empty());
  auto bad = client_->snapshot("t", parent_.vm_id, "../evil", kOwner);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::BAD_REQUEST);
  auto s = client_->snapshot("t", parent_.vm_id, "base", kOwner);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s.value().name, "base");
  EXPECT_EQ(s.value().source_vm_id, parent_.vm_id);
  EXPECT_GT(s.value().memory_bytes, 100ull << 20);  // the file is in it
  EXPECT_LT(s.value().memory_bytes, 512ull << 20);  // sparse: untouched RAM is holes
  std::cout << "[ figures  ] snapshot on disk: memory " << (s.value().memory_bytes >> 20)
            << " MiB, device state " << (s.value().state_bytes >> 10) << " KiB\n";
  auto dup = client_->snapshot("t", parent_.vm_id, "base", kOwner);
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code, ErrorCode::BAD_REQUEST);
  auto list = client_->snapshots(kOwner);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list.value().size(), 1u);
  ASSERT_TRUE(client_->release("t", parent_.vm_id, "test: snapshot taken").ok());
  EXPECT_EQ(vmm_pid(parent_.vm_id), -1);

  exec::SandboxLeaseSpec none;
  none.owner = kOwner;
  none.tier = schema::SizeTier::MEDIUM;
  none.from_snapshot = "nosuch";
  auto missing = client_->lease_sandbox("t", none);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::UNKNOWN_SNAPSHOT) << missing.error().message;

  parent_ = lease("sbx-restored", "base");
  ASSERT_FALSE(parent_.vm_id.empty());
  EXPECT_TRUE(parent_.restored);
  EXPECT_EQ(trim(sh(parent_, kSha)), sha_);
}

TEST_F(PoolSandboxTest, E_KilledPoolManagerLeavesNothingAndKeepsPausedSandboxes) {
  ASSERT_FALSE(parent_.vm_id.empty());  // running (restored from the snapshot)
  VmLease other = lease("sbx-paused");
  ASSERT_FALSE(other.vm_id.empty());
  ASSERT_EQ(sh(other, "echo kept > /tmp/note && echo ok"), "ok\n");
  auto p = client_->pause("t", other.vm_id);
  ASSERT_TRUE(p.ok()) << p.error().message;
  std::vector<std::string> vms;
  for (const auto& n : [&] {
         std::vector<std::string> out;
         if (DIR* d = ::opendir((dir_ + "/vms").c_str())) {
           while (dirent* e = ::readdir(d)) {
             if (e->d_name[0] != '.') out.push_back(e->d_name);
           }
           ::closedir(d);
         }
         return out;
       }()) {
    vms.push_back(n);
  }
  ASSERT_FALSE(vms.empty());

  int status = stop_service(SIGKILL);
  EXPECT_TRUE(WIFSIGNALED(status));
  // VMMs die with it (parent-death signal).
  auto until = Clock::now() + 10s;
  auto any_vmm = [&] {
    for (const auto& id : vms) {
      if (vmm_pid(id) > 0) return id;
    }
    return std::string();
  };
  while (!any_vmm().empty() && Clock::now() < until) std::this_thread::sleep_for(100ms);
  EXPECT_EQ(any_vmm(), "") << "a VMM outlived the pool manager";

  start_service();
  ASSERT_TRUE(wait_warm());
  // The restart reclaimed every dead VM's jail, cgroups and sockets.
  auto layout = CgroupLayout::detect();
  for (const auto& id : vms) {
    EXPECT_FALSE(exists(dir_ + "/vms/" + id)) << id;
    for (const auto& d : layout.vm_dirs(id)) EXPECT_FALSE(exists(d)) << d;
  }
  auto listed = client_->leases(kOwner);
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed.value().size(), 2u);
  std::map<std::string, VmLease> by_id;
  for (const auto& l : listed.value()) by_id[l.vm_id] = l;
  ASSERT_TRUE(by_id.count(parent_.vm_id));
  ASSERT_TRUE(by_id.count(other.vm_id));
  EXPECT_EQ(by_id[parent_.vm_id].state, schema::LeaseState::LOST);
  EXPECT_EQ(by_id[parent_.vm_id].note, "pool manager restarted: VMM gone");
  EXPECT_EQ(by_id[other.vm_id].state, schema::LeaseState::PAUSED);
  auto fork_lost = client_->fork("t", parent_.vm_id, 1, 0ms, {});
  ASSERT_FALSE(fork_lost.ok());
  EXPECT_EQ(fork_lost.error().code, ErrorCode::SANDBOX_STATE) << fork_lost.error().message;

  auto r = client_->resume("t", other.vm_id, 0ms);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(sh(r.value(), "cat /tmp/note"), "kept\n");
  // The snapshot survived too.
  auto snaps = client_->snapshots(kOwner);
  ASSERT_TRUE(snaps.ok());
  ASSERT_EQ(snaps.value().size(), 1u);
  auto del = client_->delete_snapshot("t", "base", kOwner);
  ASSERT_TRUE(del.ok()) << del.error().message;
  EXPECT_TRUE(client_->snapshots(kOwner).value().empty());

  ASSERT_TRUE(client_->release("t", parent_.vm_id, "lost").ok());
  ASSERT_TRUE(client_->release("t", other.vm_id, "done").ok());
  EXPECT_TRUE(client_->leases(kOwner).value().empty());
  EXPECT_EQ(vmm_pid(other.vm_id), -1);
}

// Without CAP_SYS_PTRACE the pool cannot read a VMM's memory, so captures take the migration
// path (capture.h): a fork still sees its parent's file, the pool says why once, and it makes no
// more fork kits (only a capture in place uses them).
TEST_F(PoolSandboxTest, F_WithoutPtraceCapturesMigrate) {
  stop_service(SIGTERM);
  const std::string log = dir_ + "/no-ptrace.log";
  start_service({"--keep-caps",
                 "cap_sys_admin,cap_setuid,cap_setgid,cap_chown,cap_fowner,cap_kill,"
                 "cap_dac_override"},
                log);
  ASSERT_TRUE(wait_warm());
  VmLease p = lease("sbx-no-ptrace");
  ASSERT_FALSE(p.vm_id.empty());
  ASSERT_EQ(sh(p, "echo migrated > /tmp/f && echo ok"), "ok\n");
  auto f = client_->fork("t-no-ptrace", p.vm_id, 1, 0ms, {});
  ASSERT_TRUE(f.ok()) << f.error().message;
  ASSERT_EQ(f.value().leases.size(), 1u);
  EXPECT_EQ(sh(f.value().leases[0], "cat /tmp/f"), "migrated\n");
  EXPECT_EQ(sh(p, "cat /tmp/f"), "migrated\n");
  auto text = read_file(log, 16 << 20);
  ASSERT_TRUE(text.ok());
  EXPECT_NE(text.value().find("capture in place unavailable, captures migrate instead"),
            std::string::npos)
      << text.value().substr(text.value().size() > 3000 ? text.value().size() - 3000 : 0);
  std::this_thread::sleep_for(1s);
  auto st = client_->status(2000ms);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st.value().fork_kits, 0u);
  EXPECT_TRUE(client_->release("t", f.value().leases[0].vm_id, "done").ok());
  EXPECT_TRUE(client_->release("t", p.vm_id, "done").ok());
}

}  // namespace
}  // namespace nv::vm
