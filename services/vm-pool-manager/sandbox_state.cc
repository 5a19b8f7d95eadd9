// sandbox_state.cc — the Pool's sandbox state on disk (pool.h "Sandboxes that live"): named
// snapshots of a running sandbox (vm.snapshot, vm.snapshots, vm.snapshot.delete) and pause /
// resume (vm.pause, vm.resume). Like every operation that starts a VMM, they run on a sandbox
// thread of the pool (sandbox_leases.cc says why).
#include <sys/epoll.h>

#include <algorithm>
#include <future>
#include <optional>

#include "capture.h"
#include "common/log.h"
#include "pool.h"
#include "sandbox_requests.h"

namespace nv::vm {

Result<SnapshotRecordRow> Pool::snapshot(const std::string& vm_id, const std::string& name,
                                         const std::string& owner) {
  if (Status s = capture_enabled(); !s.ok()) return s.error();
  if (Status s = check_vm_id(vm_id); !s.ok()) return s.error();
  if (Status s = check_snapshot_name(name); !s.ok()) return s.error();
  if (Status s = check_owner(owner); !s.ok()) return s.error();
  auto existing = registry_->snapshot(owner, name);
  if (!existing.ok()) return existing.error();
  if (existing.value()) {
    return make_error(ErrorCode::BAD_REQUEST,
                      "owner '" + owner + "' already has a snapshot named '" + name + "'");
  }
  Entry src;
  auto vm = take_running(vm_id, &src);
  if (!vm.ok()) return vm.error();
  if (!src.owner.empty() && src.owner != owner) {
    untake(vm_id);
    return make_error(ErrorCode::UNKNOWN_LEASE,
                      "vm '" + vm_id + "' is no running sandbox lease of owner '" + owner + "'");
  }
  TierConfig cfg;
  {
    std::lock_guard lock(mu_);
    cfg = tiers_[src.tier].cfg;
  }
  std::optional<Result<SnapshotRecordRow>> out;
  bool ran = run_on_sandbox_thread([&] {
    SnapshotRecordRow row;
    row.name = name;
    row.owner = owner;
    row.tier = src.tier;
    row.vcpus = cfg.vcpus;
    row.memory_mib = cfg.memory_mib;
    row.source_vm_id = vm_id;
    row.source_sandbox_id = src.sandbox_id;
    row.dir =
        opt_.state_dir + "/snapshots/" + owner_dir_name(owner) + "/" + name + "-" + random_hex(4);
    if (Status s = make_dirs(row.dir, 0700); !s.ok()) {
      out.emplace(s.error());
      return;
    }
    CaptureSpec cs{"cap-" + random_hex(6),   cfg.vcpus, cfg.memory_mib, opt_.kernel, opt_.rootfs,
                   row.dir + "/device.state"};
    auto cap = capture(backend_, *vm.value(), cs, Clock::now() + opt_.boot_timeout);
    Status saved = cap.ok() ? Status{} : Status(cap.error());
    if (saved.ok()) {
      cap.value()->owns_state_file = false;
      saved = save_memory(cap.value()->memory, row.dir + "/memory.img", &row.memory_bytes);
    }
    if (saved.ok()) {
      row.state_bytes = allocated_bytes(row.dir + "/device.state");
      row.created_unix_ms = opt_.unix_ms();
      saved = registry_->add_snapshot(row);
    }
    if (!saved.ok()) {
      (void)remove_tree(row.dir);
      out.emplace(saved.error());
      return;
    }
    out.emplace(row);
  });
  if (!ran) out.emplace(shutting_down());
  untake(vm_id);
  return std::move(*out);
}

Result<std::vector<SnapshotRecordRow>> Pool::snapshots(const std::string& owner) {
  if (Status s = sandboxes_enabled(); !s.ok()) return s.error();
  if (Status s = check_owner(owner, true); !s.ok()) return s.error();
  return registry_->snapshots(owner);
}

Result<SnapshotRecordRow> Pool::delete_snapshot(const std::string& name, const std::string& owner) {
  if (Status s = sandboxes_enabled(); !s.ok()) return s.error();
  if (Status s = check_snapshot_name(name); !s.ok()) return s.error();
  if (Status s = check_owner(owner); !s.ok()) return s.error();
  auto row = registry_->snapshot(owner, name);
  if (!row.ok()) return row.error();
  if (!row.value()) {
    return make_error(ErrorCode::UNKNOWN_SNAPSHOT,
                      "owner '" + owner + "' has no snapshot named '" + name + "'");
  }
  if (Status s = registry_->remove_snapshot(owner, name); !s.ok()) return s.error();
  (void)remove_tree(row.value()->dir);
  return *row.value();
}

Result<LeaseInfo> Pool::pause(const std::string& vm_id) {
  if (Status s = capture_enabled(); !s.ok()) return s.error();
  if (Status s = check_vm_id(vm_id); !s.ok()) return s.error();
  Entry src;
  auto vm = take_running(vm_id, &src);
  if (!vm.ok()) return vm.error();
  TierConfig cfg;
  {
    std::lock_guard lock(mu_);
    cfg = tiers_[src.tier].cfg;
  }
  const std::string dir = paused_dir(vm_id);
  std::optional<Result<LeaseInfo>> out;
  bool ran = run_on_sandbox_thread([&] {
    (void)remove_tree(dir);
    if (Status s = make_dirs(dir, 0700); !s.ok()) {
      out.emplace(s.error());
      return;
    }
    CaptureSpec cs{"cap-" + random_hex(6), cfg.vcpus, cfg.memory_mib, opt_.kernel, opt_.rootfs,
                   dir + "/device.state"};
    auto cap = capture(backend_, *vm.value(), cs, Clock::now() + opt_.boot_timeout);
    Status saved = cap.ok() ? Status{} : Status(cap.error());
    if (saved.ok()) {
      cap.value()->owns_state_file = false;
      saved = save_memory(cap.value()->memory, dir + "/memory.img", nullptr);
    }
    if (!saved.ok()) {
      (void)remove_tree(dir);
      out.emplace(saved.error());
      return;
    }
    // On disk first, then the VMM goes: a kill in between leaves a resumable lease.
    LeaseInfo li;
    LeaseRecord rec;
    {
      std::lock_guard lock(mu_);
      auto it = vms_.find(vm_id);
      if (it == vms_.end()) {
        out.emplace(make_error(ErrorCode::VM_FAILED, "vm " + vm_id + " died while pausing"));
        (void)remove_tree(dir);
        return;
      }
      li = lease_info_locked(vm_id, it->second);
      li.state = schema::LeaseState::PAUSED;
      li.vm.channel_path.clear();
      li.vm.inference_path.clear();
      li.vm.vmm_pid = -1;
      rec = record_of(li);
      rec.state_dir = dir;
      parked_[vm_id] = rec;
      keys_.erase(it->second.key);
      tiers_[it->second.tier].active--;
      vms_.erase(it);
      publish_status();
    }
    if (Status s = registry_->put_lease(rec); !s.ok()) {
      log::warn("registry write failed", {{"vm_id", vm_id}, {"error", s.error().message}});
    }
    (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, vm.value()->exit_fd(), nullptr);
    (void)vm.value()->destroy(Clock::now() + opt_.destroy_grace);
    out.emplace(li);
  });
  if (!ran) out.emplace(shutting_down());
  refill_cv_.notify_all();
  if (!out->ok()) untake(vm_id);
  return std::move(*out);
}

Result<LeaseInfo> Pool::resume(const std::string& vm_id, std::chrono::milliseconds lifetime) {
  if (Status s = capture_enabled(); !s.ok()) return s.error();
  if (Status s = check_vm_id(vm_id); !s.ok()) return s.error();
  // 0 = keep the current expiry (below); else bounded like any sandbox lifetime.
  if (auto g = sandbox_lifetime(lifetime, lifetime, opt_.max_sandbox_ttl); !g.ok()) {
    return g.error();
  }
  LeaseRecord rec;
  TierConfig cfg;
  {
    std::lock_guard lock(mu_);
    if (!started_ || stopping_) return shutting_down();
    auto p = parked_.find(vm_id);
    if (p == parked_.end()) {
      if (vms_.count(vm_id)) {
        return make_error(ErrorCode::SANDBOX_STATE, "vm " + vm_id + " is running, not paused");
      }
      return make_error(ErrorCode::UNKNOWN_LEASE, "vm '" + vm_id + "' is no sandbox lease");
    }
    if (p->second.state != schema::LeaseState::PAUSED) {
      return make_error(ErrorCode::SANDBOX_STATE,
                        "vm " + vm_id + " cannot be resumed: lost (" + p->second.note + ")");
    }
    TierState* t = find_tier(p->second.tier);
    if (!t) {
      return make_error(
          ErrorCode::TIER_UNAVAILABLE,
          std::string("tier ") + tier_name(p->second.tier) + " is not served by this pool");
    }
    uint32_t total = static_cast<uint32_t>(t->warm.size()) + t->active + t->booting;
    if (total >= t->cfg.max) {
      return make_error(ErrorCode::POOL_EXHAUSTED,
                        std::string("tier ") + tier_name(p->second.tier) + " is at its max (" +
                            std::to_string(t->cfg.max) + " VMs); retry later or raise --max",
                        true);
    }
    t->booting++;
    rec = p->second;
    parked_.erase(p);  // taken while it resumes; put back on failure
    cfg = t->cfg;
    cfg.vcpus = rec.vcpus;
    cfg.memory_mib = rec.memory_mib;
  }
  if (lifetime.count() <= 0) {
    lifetime =
        std::chrono::milliseconds(std::max<int64_t>(1000, rec.expires_unix_ms - opt_.unix_ms()));
  }
  std::optional<Result<LeaseInfo>> out;
  bool ran = run_on_sandbox_thread([&] {
    double ms = 0;
    auto mem = load_memory(rec.state_dir + "/memory.img", uint64_t{rec.memory_mib} << 20,
                           "nv-resume-" + vm_id);
    Result<std::vector<std::shared_ptr<RunningVm>>> vms =
        mem.ok() ? restore_clones(cfg, rec.state_dir + "/device.state", mem.value(), {vm_id}, &ms)
                 : Result<std::vector<std::shared_ptr<RunningVm>>>(mem.error());
    std::lock_guard lock(mu_);
    tiers_[rec.tier].booting--;
    if (!vms.ok()) {
      parked_[vm_id] = rec;
      out.emplace(vms.error());
      return;
    }
    out.emplace(adopt_locked(vms.value()[0], rec.tier, ms, lifetime, rec.sandbox_id, rec.owner));
  });
  if (!ran) out.emplace(shutting_down());
  refill_cv_.notify_all();
  if (!out->ok()) return std::move(*out);
  out->value().vm.restored = true;
  if (!rec.network.empty()) {
    std::optional<Result<VmNetInfo>> net;
    if (!run_on_sandbox_thread(
            [&] { net.emplace(reattach_network(vm_id, rec.network, rec.sandbox_id)); })) {
      net.emplace(shutting_down());
    }
    if (!net->ok()) {
      // Never a resumed sandbox without the network it had (nor with a wider one): it is lost.
      (void)release(vm_id, "network re-attach failed: " + net->error().message);
      (void)remove_tree(rec.state_dir);
      return net->error();
    }
    out->value().network = net->value();
  }
  if (Status s = registry_->put_lease(record_of(out->value())); !s.ok()) {
    log::warn("registry write failed", {{"vm_id", vm_id}, {"error", s.error().message}});
  }
  (void)remove_tree(rec.state_dir);
  return std::move(*out);
}

}  // namespace nv::vm
