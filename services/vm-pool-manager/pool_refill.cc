// pool_refill.cc — the Pool's refill threads (pool.h): which tier needs a VM or a template
// next, booting or restoring one (from a standby VMM started ahead when there is one), and the
// entries that make a VM warm.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>

#include "common/log.h"
#include "pool.h"

namespace nv::vm {

void Pool::refill_loop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    SizeTier pick = SizeTier::UNSET;
    auto now = Clock::now();
    Clock::time_point next_retry = now + std::chrono::milliseconds(200);
    TierState* build = nullptr;
    for (auto& [tier, t] : tiers_) {
      if (opt_.snapshot && t.snapshot_path.empty() && t.cfg.max > 0) {
        // No template yet (it failed): rebuild it after its backoff; no VMs until then.
        if (t.template_building) continue;
        if (t.template_retry_after > now) {
          next_retry = std::min(next_retry, t.template_retry_after);
          continue;
        }
        build = &t;
        break;
      }
      uint32_t warm = static_cast<uint32_t>(t.warm.size());
      uint32_t total = warm + t.active + t.booting;
      // Keep `warm` idle VMs, plus one per waiting lease, never above `max`.
      bool wanted = warm + t.booting < t.cfg.warm + t.waiting && total < t.cfg.max;
      if (!wanted) continue;
      if (t.retry_after > now) {
        next_retry = std::min(next_retry, t.retry_after);
        continue;
      }
      pick = tier;
      break;
    }
    if (build) {
      build->template_building = true;
      lock.unlock();
      Status made = make_snapshot(*build);
      if (!made.ok()) template_failed(*build, made.error());
      lock.lock();
      build->template_building = false;
      if (made.ok())
        log::info("snapshot template recovered", {{"tier", tier_name(build->cfg.tier)}});
      publish_status();
      continue;
    }
    if (pick == SizeTier::UNSET) {
      refill_cv_.wait_until(lock, next_retry);
      continue;
    }
    tiers_[pick].booting++;
    publish_status();
    lock.unlock();
    boot_one(pick);
    lock.lock();
  }
}

void Pool::boot_one(SizeTier tier) {
  TierConfig cfg;
  std::shared_ptr<RunningVm> vm;
  auto start = opt_.clock();
  {
    std::unique_lock lock(mu_);
    cfg = tiers_[tier].cfg;
    TierState& t = tiers_[tier];
    // A standby VMM about to be ready beats starting another one beside it on the same cores.
    standby_cv_.wait_until(lock, Clock::now() + opt_.boot_timeout,
                           [&] { return stopping_ || t.standby || !t.standby_starting; });
    vm = std::move(t.standby);  // a restore whose VMM already runs
  }
  VmSpec spec = restore_spec(tier);
  if (vm) spec.vm_id = vm->info().vm_id;
  auto deadline = Clock::now() + opt_.boot_timeout;

  std::string failure;
  pid_t pid = 0;
  if (!vm) {
    auto booted =
        spec.restore_from.empty() ? backend_.boot(spec, deadline) : backend_.start(spec, deadline);
    if (booted.ok()) {
      vm = std::move(booted.value());
    } else {
      failure = "boot failed: " + booted.error().message;
    }
  }
  InFlight guard(*this, vm);  // stop() kills it while the guest waits below
  if (vm) {
    pid = vm->info().vmm_pid;
    if (Status s = vm->complete_restore(deadline); !s.ok()) {
      failure = "restore failed: " + s.error().message;
    } else if (vm->info().restored) {
      // Clones of one snapshot share its RNG state and identity: fresh entropy and id first
      // (on the one connection whose Hello shows the agent is back).
      Status r = guest_.reseed(vm->info(), random_bytes(opt_.reseed_bytes), spec.vm_id, deadline);
      if (!r.ok()) failure = "reseed after restore failed: " + r.error().message;
    } else if (Status s = guest_.wait_ready(vm->info(), deadline); !s.ok()) {
      failure = "no Hello from the guest agent: " + s.error().message;
    }
  }
  double boot_ms = ms_since(start);
  guard.release();

  std::unique_lock lock(mu_);
  TierState& t = tiers_[tier];
  t.booting--;
  if (!failure.empty() || stopping_) {
    if (!failure.empty()) {
      t.failures++;
      auto delay = std::min<std::chrono::milliseconds>(
          opt_.max_backoff, std::chrono::milliseconds(250) * (1 << std::min(t.failures, 7u)));
      t.retry_after = Clock::now() + delay;
    }
    lock.unlock();
    if (vm) (void)vm->destroy(Clock::now() + opt_.destroy_grace);
    if (!failure.empty()) {
      log::warn("vm boot failed",
                {{"vm_id", spec.vm_id}, {"tier", tier_name(tier)}, {"reason", failure}});
      events_.on_failed(spec.vm_id, tier, failure, pid);
    }
    std::lock_guard again(mu_);
    publish_status();
    return;
  }
  t.failures = 0;
  Entry e;
  e.vm = vm;
  e.tier = tier;
  e.boot_ms = boot_ms;
  add_entry_locked(spec.vm_id, std::move(e));
  t.warm.push_back(spec.vm_id);
  publish_status();
  const bool want_standby =
      !t.snapshot_path.empty() && opt_.prestart && !t.standby && !t.standby_starting;
  if (want_standby) t.standby_starting = true;
  lock.unlock();
  warm_cv_.notify_all();
  events_.on_booted(vm->info(), tier, boot_ms);
  if (want_standby) start_standby(tier);
}

void Pool::add_entry_locked(const std::string& id, Entry e) {
  e.key = next_key_++;
  e.warm_since = Clock::now();
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = e.key;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, e.vm->exit_fd(), &ev) != 0) {
    log::syscall_error("epoll_ctl(ADD pidfd)", errno, {{"vm_id", id}});
  }
  keys_[e.key] = id;
  vms_[id] = std::move(e);
}

VmSpec Pool::restore_spec(SizeTier tier) {
  std::lock_guard lock(mu_);
  const TierState& t = tiers_[tier];
  VmSpec spec;
  spec.vm_id = "vm-" + random_hex(8);
  spec.vcpus = t.cfg.vcpus;
  spec.memory_mib = t.cfg.memory_mib;
  spec.kernel = opt_.kernel;
  spec.rootfs = opt_.rootfs;
  spec.restore_from = t.snapshot_path;  // "" = cold boot
  // Owned by the tier until stop(), which joins the refill threads before dropping it.
  if (!spec.restore_from.empty() && t.memory.valid()) spec.memory_fd = t.memory.fd();
  return spec;
}

void Pool::start_standby(SizeTier tier) {
  VmSpec spec = restore_spec(tier);
  auto vm = backend_.start(spec, Clock::now() + opt_.boot_timeout);
  if (!vm.ok()) {
    {
      std::lock_guard lock(mu_);
      tiers_[tier].standby_starting = false;
    }
    standby_cv_.notify_all();
    // Not fatal: the next refill starts its VMM itself.
    log::warn("standby vmm failed to start",
              {{"tier", tier_name(tier)}, {"error", vm.error().message}});
    return;
  }
  std::shared_ptr<RunningVm> doomed;
  {
    std::lock_guard lock(mu_);
    TierState& t = tiers_[tier];
    t.standby_starting = false;
    if (stopping_ || t.standby) {
      doomed = std::move(vm.value());
    } else {
      t.standby = std::move(vm.value());
    }
  }
  standby_cv_.notify_all();
  if (doomed) (void)doomed->destroy(Clock::now() + opt_.destroy_grace);
}

}  // namespace nv::vm
