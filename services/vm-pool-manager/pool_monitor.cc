// pool_monitor.cc — the Pool's monitor thread (pool.h): VMMs that exit (pidfds in an epoll
// set) or stop answering (a health check every health_interval), leases past their lifetime,
// and the removal, report and replacement of a failed VM.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>

#include "common/log.h"
#include "pool.h"

namespace nv::vm {

void Pool::monitor_loop() {
  auto next_health = Clock::now() + opt_.health_interval;
  auto next_expiry = Clock::time_point::max();
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    // Woken by a VMM exit, the next health check or the next lease end, whichever comes first
    // (a lease taken meanwhile is noticed at most health_interval late). +1: epoll counts whole
    // ms, and rounding down would spin until the wake time.
    auto wake_at = std::min(next_health, next_expiry);
    int timeout = static_cast<int>(std::max<int64_t>(
        0,
        std::chrono::duration_cast<std::chrono::milliseconds>(wake_at - Clock::now()).count() + 1));
    epoll_event evs[16];
    int n = ::epoll_wait(epoll_.get(), evs, 16, timeout);
    if (n < 0 && errno != EINTR) {
      log::syscall_error("epoll_wait", errno);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    for (int i = 0; i < n; ++i) {
      uint64_t key = evs[i].data.u64;
      if (key == 0) continue;  // stop
      std::string id;
      std::shared_ptr<RunningVm> vm;
      {
        std::lock_guard lock(mu_);
        auto it = keys_.find(key);
        if (it == keys_.end()) continue;
        id = it->second;
        auto v = vms_.find(id);
        if (v != vms_.end()) vm = v->second.vm;
      }
      if (!vm) continue;
      if (::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, vm->exit_fd(), nullptr) != 0 &&
          errno != ENOENT && errno != EBADF) {
        log::syscall_error("epoll_ctl(DEL pidfd)", errno, {{"vm_id", id}});
      }
      std::string why = vm->exit_reason();
      fail_vm(id, "vmm exited: " + (why.empty() ? std::string("unknown status") : why));
    }
    next_expiry = expire_leases();
    if (Clock::now() >= next_health) {
      next_health = Clock::now() + opt_.health_interval;
      std::vector<std::pair<std::string, std::shared_ptr<RunningVm>>> all;
      {
        std::lock_guard lock(mu_);
        // A VM being captured (fork, snapshot, pause) is paused and its control channel busy
        // with the migration: the capture's own deadline bounds it.
        for (auto& [id, e] : vms_) {
          if (!e.busy) all.emplace_back(id, e.vm);
        }
      }
      for (auto& [id, vm] : all) {
        if (!vm->alive()) continue;  // the pidfd event handles it
        Status s = vm->check_responsive(Clock::now() + opt_.health_timeout);
        if (s.ok()) continue;
        {
          std::lock_guard lock(mu_);
          auto it = vms_.find(id);
          if (it != vms_.end() && it->second.busy) continue;  // a capture began meanwhile
        }
        fail_vm(id, "vmm unresponsive: " + s.error().message);
      }
    }
  }
}

Clock::time_point Pool::expire_leases() {
  std::vector<std::pair<std::string, std::chrono::milliseconds>> expired;
  auto next = Clock::time_point::max();
  {
    std::lock_guard lock(mu_);
    auto now = opt_.clock();
    auto real_now = Clock::now();
    for (auto& [id, e] : vms_) {
      if (!e.leased) continue;
      if (e.lease_expires <= now) {
        expired.emplace_back(id, e.lifetime);
      } else {
        next = std::min(next, real_now + (e.lease_expires - now));
      }
    }
  }
  for (auto& [id, lifetime] : expired) {
    // Released meanwhile? fail_vm then finds nothing and does nothing.
    fail_vm(
        id,
        "lease expired: not released within its " + std::to_string(lifetime.count()) +
            " ms lifetime (the lessee died, hung or asked for too little); the VM was destroyed");
  }
  return std::min(next, expire_parked());
}

void Pool::fail_vm(const std::string& vm_id, const std::string& reason) {
  Entry e;
  {
    std::lock_guard lock(mu_);
    auto it = vms_.find(vm_id);
    if (it == vms_.end()) return;  // released meanwhile
    e = std::move(it->second);
    vms_.erase(it);
    keys_.erase(e.key);
    TierState& t = tiers_[e.tier];
    if (e.sandbox && registry_ && reason.rfind("lease expired", 0) != 0) {
      // A sandbox whose VMM died stays listed (lost, with why) until released or expired.
      LeaseInfo li = lease_info_locked(vm_id, e);
      li.state = schema::LeaseState::LOST;
      li.note = reason;
      LeaseRecord r = record_of(li);
      parked_[vm_id] = r;
      (void)registry_->put_lease(r);
      e.sandbox = false;
    }
    if (e.leased) {
      t.active--;
      // The lessee may still try to release it: tell it what happened rather than "unknown".
      remember_released(vm_id,
                        reason.rfind("lease expired", 0) == 0 ? reason : "failed (" + reason + ")");
    } else {
      t.warm.erase(std::remove(t.warm.begin(), t.warm.end(), vm_id), t.warm.end());
    }
    publish_status();
  }
  refill_cv_.notify_all();
  if (e.sandbox) forget_sandbox(vm_id);
  pid_t pid = e.vm->info().vmm_pid;
  log::warn("vm failed", {{"vm_id", vm_id},
                          {"tier", tier_name(e.tier)},
                          {"reason", reason},
                          {"vmm_pid", static_cast<int64_t>(pid)}});
  (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, e.vm->exit_fd(), nullptr);
  Status d = e.vm->destroy(Clock::now() + opt_.destroy_grace);
  if (!d.ok()) log::warn("vm cleanup failed", {{"vm_id", vm_id}, {"error", d.error().message}});
  events_.on_failed(vm_id, e.tier, reason, pid);
}

}  // namespace nv::vm
