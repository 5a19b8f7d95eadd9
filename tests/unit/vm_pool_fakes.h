// vm_pool_fakes.h — the fake backend, guest link and event recorder the pool's unit tests run
// the Pool against (no VMs, no root): vm_pool_test.cc, pool_lease_wait_test.cc.
#pragma once

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "pool.h"

namespace nv::vm {
namespace {

using namespace std::chrono_literals;

struct FakeState {
  std::mutex mu;
  std::set<std::string> booted, destroyed;
  std::vector<std::string> snapshots;  // paths
  std::vector<std::string> restored_from;
  int fail_next_boots = 0;
  // Boots of template VMs ("tpl-<tier>-...") whose id starts with this prefix fail, this often.
  std::string fail_template_prefix;
  int fail_templates = 0;
  std::atomic<int64_t>* clock_offset_ms = nullptr;  // advanced by each boot when set
};

class FakeVm : public RunningVm {
 public:
  FakeVm(VmInfo info, FakeState& st) : info_(std::move(info)), st_(st) {
    fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  }
  ~FakeVm() override { ::close(fd_); }
  const VmInfo& info() const override { return info_; }
  int exit_fd() const override { return fd_; }
  bool alive() override { return !dead_; }
  std::string exit_reason() override { return dead_ ? "killed by signal 9 (SIGKILL)" : ""; }
  Status check_responsive(Deadline) override {
    if (hung_) return make_error(ErrorCode::TIMED_OUT, "QMP: no answer before deadline");
    return {};
  }
  Status snapshot(const std::string& path, Deadline) override {
    std::lock_guard lock(st_.mu);
    st_.snapshots.push_back(path);
    return {};
  }
  Status destroy(Deadline) override {
    std::lock_guard lock(st_.mu);
    st_.destroyed.insert(info_.vm_id);
    dead_ = true;
    return {};
  }
  Result<VmUsage> usage() override { return VmUsage{}; }
  void kill_now() override { kill(); }

  void kill() {
    dead_ = true;
    uint64_t one = 1;
    (void)!::write(fd_, &one, sizeof one);
  }
  void hang() { hung_ = true; }

 private:
  VmInfo info_;
  FakeState& st_;
  int fd_ = -1;
  std::atomic<bool> dead_{false};
  std::atomic<bool> hung_{false};
};

class FakeBackend : public Backend {
 public:
  explicit FakeBackend(FakeState& st) : st_(st) {}
  std::string name() const override { return "fake"; }
  std::string accel() const override { return "none"; }
  std::string accel_reason() const override { return "fake backend"; }
  bool supports_snapshot() const override { return true; }
  Result<std::unique_ptr<RunningVm>> boot(const VmSpec& spec, Deadline) override {
    std::lock_guard lock(st_.mu);
    if (st_.clock_offset_ms) *st_.clock_offset_ms += 1234;
    if (st_.fail_next_boots > 0) {
      st_.fail_next_boots--;
      return make_error(ErrorCode::VM_FAILED, "fake boot failure");
    }
    if (st_.fail_templates > 0 && !st_.fail_template_prefix.empty() &&
        spec.vm_id.rfind(st_.fail_template_prefix, 0) == 0) {
      st_.fail_templates--;
      return make_error(ErrorCode::GUEST_PROTOCOL, "fake template failure");
    }
    VmInfo info;
    info.vm_id = spec.vm_id;
    info.vmm_pid = 4242;
    info.backend = "fake";
    info.channel_path = "/nonexistent/" + spec.vm_id;
    info.restored = !spec.restore_from.empty();
    if (info.restored) st_.restored_from.push_back(spec.restore_from);
    st_.booted.insert(spec.vm_id);
    auto vm = std::make_unique<FakeVm>(info, st_);
    vms_[spec.vm_id] = vm.get();
    return std::unique_ptr<RunningVm>(std::move(vm));
  }
  FakeVm* vm(const std::string& id) {
    std::lock_guard lock(st_.mu);
    return vms_.at(id);
  }

 private:
  FakeState& st_;
  std::map<std::string, FakeVm*> vms_;
};

class FakeGuest : public GuestLink {
 public:
  // With block_until_dead set, wait_ready waits (up to its deadline) until that VM is killed:
  // a template whose guest never answers, as a slow TCG boot looks from the pool.
  Status wait_ready(const VmInfo& vm, Deadline deadline) override {
    if (!block_until_dead) return {};
    while (Clock::now() < deadline) {
      if (!block_until_dead(vm.vm_id)) return make_error(ErrorCode::VM_FAILED, "vmm killed");
      std::this_thread::sleep_for(5ms);
    }
    return make_error(ErrorCode::TIMED_OUT, "no hello");
  }
  std::function<bool(const std::string&)> block_until_dead;  // vm id → still alive?
  Status reseed(const VmInfo& vm, const std::string& entropy, const std::string& id,
                Deadline) override {
    std::lock_guard lock(mu);
    reseeds.push_back({vm.vm_id, entropy, id});
    return {};
  }
  struct Reseed {
    std::string vm, entropy, id;
  };
  std::mutex mu;
  std::vector<Reseed> reseeds;
};

class RecordingEvents : public PoolEvents {
 public:
  void on_booted(const VmInfo& vm, SizeTier, double ms) override {
    std::lock_guard lock(mu);
    booted.push_back(vm.vm_id);
    boot_ms.push_back(ms);
  }
  void on_acquired(const std::string& id, SizeTier, double) override {
    std::lock_guard lock(mu);
    acquired.push_back(id);
  }
  void on_released(const std::string& id, SizeTier, const std::string& reason, double) override {
    std::lock_guard lock(mu);
    released.push_back(id + ":" + reason);
  }
  void on_failed(const std::string& id, SizeTier, const std::string& reason, pid_t) override {
    std::lock_guard lock(mu);
    failed.push_back({id, reason});
    cv.notify_all();
  }
  void on_status(const PoolStatusInfo&) override { statuses++; }

  bool wait_failed(size_t n, std::chrono::milliseconds within) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, within, [&] { return failed.size() >= n; });
  }

  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> booted, acquired, released;
  std::vector<double> boot_ms;
  std::vector<std::pair<std::string, std::string>> failed;
  std::atomic<int> statuses{0};
};

PoolOptions small_only(uint32_t warm, uint32_t max) {
  PoolOptions o;
  o.tiers = {{SizeTier::SMALL, 1, 256, warm, max}};
  o.kernel = "/fake/vmlinux";
  o.rootfs = "/fake/rootfs";
  o.health_interval = 100ms;
  o.health_timeout = 100ms;
  o.snapshot_settle = 0ms;
  o.max_backoff = 200ms;
  return o;
}

}  // namespace
}  // namespace nv::vm
