// sandbox_reaper.cc — deadlines (lifetime, idle timeout), forgetting old destroyed sandboxes,
// checking the pool still holds each VM, the restart's recovery, and the bus-backed SandboxPool.
#include <map>

#include "common/log.h"
#include "sandbox_call.h"

namespace nv::exec {

namespace {

// Each call makes its own PoolClient: nv::Client is per thread, and a DEALER is cheap.
class BusPool : public SandboxPool {
 public:
  BusPool(zmq::context_t& ctx, ClientOptions o) : ctx_(ctx), o_(std::move(o)) {}
  Result<VmLease> lease(const std::string& t, const SandboxLeaseSpec& s) override {
    return client().lease_sandbox(t, s);
  }
  Status release(const std::string& t, const std::string& vm, const std::string& why) override {
    return client().release(t, vm, why);
  }
  Result<VmLease> extend(const std::string& t, const std::string& vm, milliseconds l) override {
    return client().extend(t, vm, l);
  }
  Result<ForkOutcome> fork(const std::string& t, const std::string& vm, uint32_t n, milliseconds l,
                           const std::vector<std::string>& ids) override {
    return client().fork(t, vm, n, l, ids);
  }
  Result<SnapshotRecord> snapshot(const std::string& t, const std::string& vm,
                                  const std::string& name, const std::string& owner) override {
    return client().snapshot(t, vm, name, owner);
  }
  Result<std::vector<SnapshotRecord>> snapshots(const std::string& owner) override {
    return client().snapshots(owner);
  }
  Result<SnapshotRecord> delete_snapshot(const std::string& t, const std::string& name,
                                         const std::string& owner) override {
    return client().delete_snapshot(t, name, owner);
  }
  Result<VmLease> pause(const std::string& t, const std::string& vm) override {
    return client().pause(t, vm);
  }
  Result<VmLease> resume(const std::string& t, const std::string& vm, milliseconds l) override {
    return client().resume(t, vm, l);
  }
  Result<std::vector<VmLease>> leases(const std::string& owner) override {
    return client().leases(owner);
  }

 private:
  PoolClient client() { return PoolClient(ctx_, o_); }
  zmq::context_t& ctx_;
  ClientOptions o_;
};

}  // namespace

std::unique_ptr<SandboxPool> bus_pool(zmq::context_t& ctx, ClientOptions options) {
  return std::make_unique<BusPool>(ctx, std::move(options));
}

std::string SandboxService::due_reason(const SandboxRecord& rec, int64_t now) {
  const auto& info = rec.info;
  if (info.state == schema::SandboxState::DESTROYED) return {};
  if (info.state != schema::SandboxState::STARTING && now >= info.deadline_unix_ms) {
    return "lifetime ended";
  }
  if (info.state == schema::SandboxState::RUNNING && now >= info.idle_deadline_unix_ms) {
    return "idle for " + std::to_string(now - info.last_active_unix_ms) + " ms";
  }
  return {};
}

size_t SandboxService::reap(int64_t now) {
  std::vector<std::pair<std::shared_ptr<Sandbox>, std::string>> due;
  std::vector<std::string> forget;
  {
    std::lock_guard g(mu_);
    for (const auto& [id, s] : sandboxes_) {
      const auto& rec = s->rec;
      if (rec.info.state == schema::SandboxState::DESTROYED) {
        if (now - rec.ended_unix_ms >= opt_.keep_destroyed.count()) forget.push_back(id);
        continue;
      }
      if (auto why = due_reason(rec, now); !why.empty()) due.emplace_back(s, why);
    }
    for (const auto& id : forget) sandboxes_.erase(id);
  }
  for (const auto& id : forget) {
    if (registry_) (void)registry_->remove(id);
  }
  // Every verify_every: sandboxes whose VM the pool no longer holds are lost.
  std::map<std::string, std::pair<std::string, std::string>> lost;  // id → vm id, why
  if (now - last_verify_ms_ >= opt_.verify_every.count()) {
    last_verify_ms_ = now;
    // Only sandboxes that held their VM before the question are judged by its answer.
    std::map<std::string, std::string> before;  // sandbox id → vm id
    {
      std::lock_guard g(mu_);
      for (const auto& [id, s] : sandboxes_) {
        auto st = s->rec.info.state;
        if (st == schema::SandboxState::RUNNING || st == schema::SandboxState::PAUSED) {
          before[id] = s->rec.lease_vm_id;
        }
      }
    }
    auto held =
        before.empty() ? Result<std::vector<VmLease>>(std::vector<VmLease>{}) : pool_->leases("");
    if (held) {
      std::map<std::string, const VmLease*> by_vm;
      for (const auto& l : held.value()) by_vm[l.vm_id] = &l;
      for (const auto& [id, vm] : before) {
        auto it = by_vm.find(vm);
        if (it == by_vm.end()) {
          lost[id] = {vm, "vm lost: the pool no longer holds VM " + vm};
        } else if (it->second->state == schema::LeaseState::LOST) {
          lost[id] = {vm, "vm lost: " + (it->second->note.empty() ? std::string("the pool lost it")
                                                                  : it->second->note)};
        }
      }
    }
  }
  size_t reaped = 0;
  auto reap_one = [&](const std::shared_ptr<Sandbox>& s, const std::string& why, bool recheck) {
    // A sandbox busy with a call is not idle; it is looked at again next tick.
    std::unique_lock lock(s->op, std::try_to_lock);
    if (!lock.owns_lock()) return;
    if (recheck) {
      std::lock_guard g(mu_);
      if (due_reason(s->rec, opt_.now_ms()).empty()) return;  // touched meanwhile
    }
    {
      std::lock_guard g(mu_);
      if (s->rec.info.state == schema::SandboxState::DESTROYED) return;
    }
    std::string reason = why;
    if (recheck) {  // lifetime or idle: the read-write mounts are copied out first
      if (auto e = sync_before_end(*s, ""); !e.empty()) reason += "; " + e;
    } else if (has_rw_mounts(s->mounts)) {
      reason += "; its read-write mounts were not synced (a lost VM cannot be read)";
    }
    end(*s, "sandbox.reaped", reason, "");
    ++reaped;
  };
  for (const auto& [s, why] : due) reap_one(s, why, true);
  for (const auto& [id, vm_why] : lost) {
    const auto& [vm, why] = vm_why;
    std::shared_ptr<Sandbox> s;
    {
      std::lock_guard g(mu_);
      auto it = sandboxes_.find(id);
      // Resumed onto another VM meanwhile: not judged by this answer.
      if (it != sandboxes_.end() && it->second->rec.lease_vm_id == vm) s = it->second;
    }
    if (!s) continue;
    // The VM is gone: nothing to release (the pool answers unknownLease, counted as done).
    reap_one(s, why, false);
  }
  return reaped;
}

void SandboxService::start_reaper() {
  reaper_ = std::thread([this] {
    std::unique_lock lock(reaper_mu_);
    while (!reaper_stop_) {
      reaper_cv_.wait_for(lock, opt_.reap_interval, [this] { return reaper_stop_; });
      if (reaper_stop_) break;
      lock.unlock();
      try {
        reap(opt_.now_ms());
      } catch (const std::exception& e) {
        log::error("sandbox reaper failed", {{"error", e.what()}});
      }
      lock.lock();
    }
  });
}

void SandboxService::stop_reaper() {
  {
    std::lock_guard g(reaper_mu_);
    reaper_stop_ = true;
  }
  reaper_cv_.notify_all();
  if (reaper_.joinable()) reaper_.join();
}

Status SandboxService::recover() {
  if (!registry_) return {};
  auto rows = registry_->load();
  if (!rows) return rows.error();
  std::vector<SandboxRecord> open;
  for (auto& r : rows.value()) {
    if (r.info.state == schema::SandboxState::DESTROYED) {
      auto s = std::make_shared<Sandbox>();
      s->rec = std::move(r);
      std::lock_guard g(mu_);
      sandboxes_[s->rec.info.sandbox_id] = s;
    } else {
      open.push_back(std::move(r));
    }
  }
  if (open.empty()) return {};
  auto held = pool_->leases("");
  if (!held) return held.error();
  std::map<std::string, VmLease> by_vm;
  for (const auto& l : held.value()) by_vm[l.vm_id] = l;
  for (auto& rec : open) {
    auto s = std::make_shared<Sandbox>();
    s->rec = std::move(rec);
    s->mounts = decode_state(s->rec.mount_state);
    const std::string id = s->rec.info.sandbox_id;
    {
      std::lock_guard g(mu_);
      sandboxes_[id] = s;
      if (s->rec.info.memory_mib > 0) tier_mib_[s->rec.info.tier] = s->rec.info.memory_mib;
    }
    std::lock_guard op(s->op);
    auto it = by_vm.find(s->rec.lease_vm_id);
    std::string lost;
    if (it == by_vm.end()) {
      lost = "vm lost: the pool no longer holds VM " + s->rec.lease_vm_id + " after a restart";
    } else if (it->second.state == schema::LeaseState::LOST) {
      lost = "vm lost: " +
             (it->second.note.empty() ? std::string("the pool lost it") : it->second.note);
    } else if (it->second.state == schema::LeaseState::PAUSED) {
      std::lock_guard g(mu_);
      s->rec.info.state = schema::SandboxState::PAUSED;
      s->rec.info.vm_id.clear();
    } else {
      s->lease = it->second;
      auto ch = connect_(s->lease, std::chrono::steady_clock::now() + opt_.connect_timeout);
      if (!ch.ok()) {
        lost = "vm lost: its agent cannot be reached after a restart (" + ch.error().message + ")";
      } else {
        s->channel = std::move(ch.value());
        {
          std::lock_guard g(mu_);
          s->rec.info.state = schema::SandboxState::RUNNING;
          s->rec.info.vm_id = s->rec.lease_vm_id;
        }
        // The trace id of the create is not kept across a restart: the sandbox id stands in.
        if (auto st = start_inference(*s, std::chrono::steady_clock::now() + opt_.connect_timeout);
            !st) {
          log::warn("recovery: inference bridge failed",
                    {{"sandbox_id", s->rec.info.sandbox_id}, {"error", st.error().message}});
        }
      }
    }
    if (!lost.empty()) {
      if (has_rw_mounts(s->mounts)) {
        lost += "; its read-write mounts were not synced (a lost VM cannot be read)";
      }
      end(*s, "sandbox.reaped", lost, "");
      continue;
    }
    save(*s);
    log::info(
        "sandbox recovered",
        {{"sandbox_id", id},
         {"vm_id", s->rec.lease_vm_id},
         {"state", s->rec.info.state == schema::SandboxState::PAUSED ? "paused" : "running"}});
  }
  return {};
}

}  // namespace nv::exec
