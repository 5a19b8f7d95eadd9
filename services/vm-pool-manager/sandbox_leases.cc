// sandbox_leases.cc — the Pool's sandboxes that live (pool.h "Sandboxes that live", vm.capnp):
// sandbox leases with long lifetimes, extend, fork, the leases list, and the SQLite registry
// (registry.h) that a restarted pool manager reads back. Named snapshots and pause/resume, the
// state a sandbox keeps on disk, are in sandbox_state.cc.
//
// Every operation that starts a VMM (fork, resume, a lease fromSnapshot, a capture's receiver)
// runs on a sandbox thread of the pool: a VMM's parent-death signal follows the thread that
// spawned it, and the service's request threads are short-lived and run under seccomp.
#include <sys/epoll.h>
#include <dirent.h>

#include <algorithm>
#include <future>
#include <optional>
#include <set>

#include "capture.h"
#include "common/log.h"
#include "pool.h"
#include "sandbox_requests.h"

namespace nv::vm {
namespace {
const char* kRestartNote = "pool manager restarted: VMM gone";

}  // namespace

std::string Pool::paused_dir(const std::string& vm_id) const {
  return opt_.state_dir + "/paused/" + vm_id;
}

Status Pool::open_registry() {
  for (const char* sub : {"", "/paused", "/snapshots", "/captures"}) {
    if (Status s = make_dirs(opt_.state_dir + sub, 0700); !s.ok()) return s;
  }
  auto reg = Registry::open(opt_.state_dir + "/pool.sqlite");
  if (!reg.ok()) return reg.error();
  registry_ = std::move(reg.value());
  // VMMs die with the pool manager: what the registry calls running is gone.
  auto lost = registry_->mark_running_lost(kRestartNote);
  if (!lost.ok()) return lost.error();
  auto all = registry_->leases("");
  if (!all.ok()) return all.error();
  std::set<std::string> paused;
  for (const auto& r : all.value()) {
    parked_[r.vm_id] = r;
    if (r.state == schema::LeaseState::PAUSED) paused.insert(r.vm_id);
  }
  // Remains of operations a kill cut short: paused images without a paused lease, snapshot
  // dirs without a row, capture state files.
  int removed = 0;
  for (const auto& n : list_dir(opt_.state_dir + "/paused")) {
    if (!paused.count(n) && remove_tree(opt_.state_dir + "/paused/" + n).ok()) removed++;
  }
  std::set<std::string> snap_dirs;
  if (auto rows = registry_->snapshots(""); rows.ok()) {
    for (const auto& r : rows.value()) snap_dirs.insert(r.dir);
  }
  for (const auto& o : list_dir(opt_.state_dir + "/snapshots")) {
    for (const auto& n : list_dir(opt_.state_dir + "/snapshots/" + o)) {
      std::string d = opt_.state_dir + "/snapshots/" + o + "/" + n;
      if (!snap_dirs.count(d) && remove_tree(d).ok()) removed++;
    }
  }
  for (const auto& n : list_dir(opt_.state_dir + "/captures")) {
    if (remove_tree(opt_.state_dir + "/captures/" + n).ok()) removed++;
  }
  log::info("sandbox registry opened", {{"path", registry_->path()},
                                        {"paused", static_cast<int64_t>(paused.size())},
                                        {"lost_now", static_cast<int64_t>(lost.value().size())},
                                        {"stale_removed", static_cast<int64_t>(removed)}});
  for (const auto& r : lost.value()) events_.on_failed(r.vm_id, r.tier, r.note, 0);
  return {};
}

thread_local bool on_sandbox_thread = false;

bool Pool::run_on_sandbox_thread(std::function<void()> task) {
  if (on_sandbox_thread) {
    task();
    return true;
  }
  std::promise<void> done;
  auto fut = done.get_future();
  {
    std::lock_guard lock(mu_);
    if (!started_ || stopping_ || !registry_) return false;
    tasks_.push_back([&] {
      task();
      done.set_value();
    });
  }
  tasks_cv_.notify_one();
  fut.wait();
  return true;
}

void Pool::sandbox_loop() {
  on_sandbox_thread = true;
  std::unique_lock lock(mu_);
  for (;;) {
    tasks_cv_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
    if (tasks_.empty()) return;  // stopping, nothing queued
    auto task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    task();
    lock.lock();
  }
}

Status Pool::sandboxes_enabled() const {
  if (!registry_) {
    return make_error(ErrorCode::BAD_REQUEST,
                      "this pool manager keeps no sandbox registry (no state dir)");
  }
  return {};
}

Status Pool::capture_enabled() const {
  if (Status s = sandboxes_enabled(); !s.ok()) return s;
  if (!backend_.capture()) {
    return make_error(ErrorCode::BAD_REQUEST, "the " + backend_.name() +
                                                  " backend cannot fork, snapshot, pause or "
                                                  "restore VMs");
  }
  return {};
}

LeaseInfo Pool::lease_info_locked(const std::string& id, const Entry& e) {
  LeaseInfo li;
  li.vm = e.vm->info();
  li.vm.vm_id = id;
  li.tier = tiers_[e.tier].cfg;
  li.boot_ms = e.boot_ms;
  li.lifetime = e.lifetime;
  li.sandbox = e.sandbox;
  li.sandbox_id = e.sandbox_id;
  li.owner = e.owner;
  li.state = schema::LeaseState::RUNNING;
  li.expires_unix_ms = e.expires_unix_ms;
  li.network = e.net;
  return li;
}

LeaseRecord Pool::record_of(const LeaseInfo& li) const {
  LeaseRecord r;
  r.vm_id = li.vm.vm_id;
  r.sandbox_id = li.sandbox_id;
  r.owner = li.owner;
  r.tier = li.tier.tier;
  r.vcpus = li.tier.vcpus;
  r.memory_mib = li.tier.memory_mib;
  r.state = li.state;
  r.lease_ms = static_cast<uint32_t>(li.lifetime.count());
  r.expires_unix_ms = li.expires_unix_ms;
  r.note = li.note;
  if (auto policy = opt_.network ? opt_.network->policy_of(li.vm.vm_id) : std::nullopt) {
    if (policy->allow) r.network = encode_policy(*policy);
  }
  return r;
}

static LeaseInfo info_of(const LeaseRecord& r) {
  LeaseInfo li;
  li.vm.vm_id = r.vm_id;
  li.tier.tier = r.tier;
  li.tier.vcpus = r.vcpus;
  li.tier.memory_mib = r.memory_mib;
  li.lifetime = std::chrono::milliseconds(r.lease_ms);
  li.sandbox = true;
  li.sandbox_id = r.sandbox_id;
  li.owner = r.owner;
  li.state = r.state;
  li.expires_unix_ms = r.expires_unix_ms;
  li.note = r.note;
  return li;
}

void Pool::forget_sandbox(const std::string& vm_id) {
  if (!registry_) return;
  if (Status s = registry_->remove_lease(vm_id); !s.ok()) {
    log::warn("registry remove failed", {{"vm_id", vm_id}, {"error", s.error().message}});
  }
}

Result<LeaseInfo> Pool::adopt_locked(std::shared_ptr<RunningVm> vm, SizeTier tier, double boot_ms,
                                     std::chrono::milliseconds lifetime,
                                     const std::string& sandbox_id, const std::string& owner) {
  const std::string id = vm->info().vm_id;
  Entry e;
  e.vm = vm;
  e.tier = tier;
  e.boot_ms = boot_ms;
  e.leased = true;
  e.leased_at = opt_.clock();
  e.lifetime = lifetime;
  e.lease_expires = e.leased_at + lifetime;
  e.expires_unix_ms = opt_.unix_ms() + lifetime.count();
  e.sandbox = true;
  e.sandbox_id = sandbox_id;
  e.owner = owner;
  tiers_[tier].active++;
  LeaseInfo li = lease_info_locked(id, e);
  add_entry_locked(id, std::move(e));
  return li;
}

Result<std::vector<std::shared_ptr<RunningVm>>> Pool::restore_clones(
    const TierConfig& cfg, const std::string& state_path, const TemplateMemory& memory,
    const std::vector<std::string>& ids, double* each_ms,
    const std::function<Status()>& before_guests,
    std::vector<std::shared_ptr<RunningVm>> prestarted) {
  if (memory.valid() && !memory.sealed() && !before_guests) {
    return make_error(ErrorCode::INTERNAL, "refusing to restore clones on an unsealed template");
  }
  const auto start = Clock::now();
  const auto deadline = start + opt_.boot_timeout;
  std::vector<std::shared_ptr<RunningVm>> vms;
  std::vector<std::unique_ptr<InFlight>> guards;
  auto destroy_all = [&] {
    guards.clear();
    for (auto& v : vms) (void)v->destroy(Clock::now() + opt_.destroy_grace);
  };
  // Prestarted VMMs (a fork kit's) serve the first ids; the others are spawned here, one by one
  // (this thread outlives them) ...
  for (auto& v : prestarted) {
    vms.push_back(std::move(v));
    guards.push_back(std::make_unique<InFlight>(*this, vms.back()));
  }
  for (size_t i = vms.size(); i < ids.size(); ++i) {
    const std::string& id = ids[i];
    VmSpec spec;
    spec.vm_id = id;
    spec.vcpus = cfg.vcpus;
    spec.memory_mib = cfg.memory_mib;
    spec.kernel = opt_.kernel;
    spec.rootfs = opt_.rootfs;
    spec.restore_from = state_path;
    spec.memory_fd = memory.fd();
    spec.memory_shared = false;
    auto v = backend_.start(spec, deadline);
    if (!v.ok()) {
      destroy_all();
      return make_error(ErrorCode::VM_FAILED, "restore of " + id + ": " + v.error().message);
    }
    vms.push_back(std::move(v.value()));
    guards.push_back(std::make_unique<InFlight>(*this, vms.back()));
  }
  const double spawn_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  if (before_guests) {
    if (Status s = before_guests(); !s.ok()) {
      destroy_all();
      return s.error();
    }
    if (memory.valid() && !memory.sealed()) {
      destroy_all();
      return make_error(ErrorCode::INTERNAL, "refusing to run clones on an unsealed template");
    }
  }
  // ... their state loads and reseeds run side by side.
  const auto guests_start = Clock::now();
  std::vector<std::future<Status>> done;
  for (size_t i = 0; i < vms.size(); ++i) {
    done.push_back(std::async(std::launch::async, [&, i]() -> Status {
      if (Status s = vms[i]->complete_restore(deadline); !s.ok()) return s;
      return guest_.reseed(vms[i]->info(), random_bytes(opt_.reseed_bytes), ids[i], deadline);
    }));
  }
  std::string failure;
  for (size_t i = 0; i < done.size(); ++i) {
    Status s = done[i].get();
    if (!s.ok() && failure.empty()) failure = ids[i] + ": " + s.error().message;
  }
  if (each_ms) *each_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  log::info("clones restored",
            {{"count", static_cast<int64_t>(ids.size())},
             {"spawn_ms", spawn_ms},
             {"guests_ms",
              std::chrono::duration<double, std::milli>(Clock::now() - guests_start).count()},
             {"restore_ms", vms.empty() ? 0.0 : vms[0]->info().restore_ms},
             {"vmm_start_ms", vms.empty() ? 0.0 : vms[0]->info().vmm_start_ms}});
  if (!failure.empty()) {
    destroy_all();
    return make_error(ErrorCode::VM_FAILED, "restore failed: " + failure);
  }
  guards.clear();
  if (is_stopping()) {
    destroy_all();
    return shutting_down();
  }
  return vms;
}

Result<std::shared_ptr<RunningVm>> Pool::take_running(const std::string& vm_id, Entry* copy) {
  std::lock_guard lock(mu_);
  auto it = vms_.find(vm_id);
  if (it == vms_.end() || !it->second.leased || !it->second.sandbox) {
    auto p = parked_.find(vm_id);
    if (p != parked_.end()) {
      return make_error(ErrorCode::SANDBOX_STATE,
                        "vm " + vm_id + " is not running (" +
                            (p->second.state == schema::LeaseState::PAUSED
                                 ? std::string("paused: vm.resume it first")
                                 : "lost: " + p->second.note) +
                            ")");
    }
    return make_error(ErrorCode::UNKNOWN_LEASE, "vm '" + vm_id + "' is no running sandbox lease");
  }
  if (it->second.busy) {
    return make_error(ErrorCode::SANDBOX_STATE,
                      "vm " + vm_id + " is being forked, snapshotted or paused; retry", true);
  }
  it->second.busy = true;
  *copy = it->second;
  return it->second.vm;
}

void Pool::untake(const std::string& vm_id) {
  std::lock_guard lock(mu_);
  auto it = vms_.find(vm_id);
  if (it != vms_.end()) it->second.busy = false;
}

Result<LeaseInfo> Pool::lease_sandbox(const SandboxLeaseRequest& req) {
  if (Status s = sandboxes_enabled(); !s.ok()) return s.error();
  if (Status s = check_owner(req.owner); !s.ok()) return s.error();
  if (Status s = check_sandbox_id(req.sandbox_id); !s.ok()) return s.error();
  if (Status s = check_tier(req.tier); !s.ok()) return s.error();
  if (!req.from_snapshot.empty()) {
    // A restore waits for no VM (a full tier answers poolExhausted at once): it runs on a sandbox
    // thread as a whole (SQLite, a VMM spawned).
    std::optional<Result<LeaseInfo>> out;
    if (!run_on_sandbox_thread([&] {
          out.emplace(lease_from_snapshot(req));
          if (!out->ok()) return;
          if (Status s = attach_or_release(out->value(), req.network, req.trace_id); !s.ok()) {
            out.emplace(s.error());
          }
        })) {
      return shutting_down();
    }
    return std::move(*out);
  }
  // The wait for a warm VM (up to the request's deadline) runs on the CALLER's thread, never on
  // a sandbox thread: leases waiting for more VMs than the tier has would otherwise hold every
  // sandbox thread, and the vm.release that would free a VM could never run (a deadlock). Only
  // the registry write hops to a sandbox thread, for moments.
  auto l = lease(req.tier, req.deadline, req.lifetime, true);
  if (!l.ok()) return l;
  std::optional<Result<LeaseInfo>> out;
  bool ran = run_on_sandbox_thread([&] {
    LeaseInfo li;
    {
      std::lock_guard lock(mu_);
      auto it = vms_.find(l.value().vm.vm_id);
      if (it == vms_.end()) {
        out.emplace(make_error(ErrorCode::VM_FAILED, "the VM failed at lease"));
        return;
      }
      it->second.sandbox_id = req.sandbox_id;
      it->second.owner = req.owner;
      li = lease_info_locked(it->first, it->second);
      li.wait_ms = l.value().wait_ms;
    }
    if (Status s = attach_or_release(li, req.network, req.trace_id); !s.ok()) {
      out.emplace(s.error());
      return;
    }
    if (Status s = registry_->put_lease(record_of(li)); !s.ok()) {
      (void)release(li.vm.vm_id, "registry write failed");
      out.emplace(s.error());
      return;
    }
    out.emplace(li);
  });
  // Not run: the pool stops, and stop() destroys the leased VM with every other.
  if (!ran) return shutting_down();
  return std::move(*out);
}

Result<LeaseInfo> Pool::lease_from_snapshot(const SandboxLeaseRequest& req) {
  if (Status s = capture_enabled(); !s.ok()) return s.error();
  if (Status s = check_snapshot_name(req.from_snapshot); !s.ok()) return s.error();
  auto granted = sandbox_lifetime(req.lifetime, opt_.default_lease_ttl, opt_.max_sandbox_ttl);
  if (!granted.ok()) return granted.error();
  const auto lifetime = granted.value();
  auto row = registry_->snapshot(req.owner, req.from_snapshot);
  if (!row.ok()) return row.error();
  if (!row.value()) {
    return make_error(
        ErrorCode::UNKNOWN_SNAPSHOT,
        "owner '" + req.owner + "' has no snapshot named '" + req.from_snapshot + "'");
  }
  const SnapshotRecordRow snap = *row.value();
  TierConfig cfg;
  {
    std::lock_guard lock(mu_);
    if (!started_ || stopping_) return shutting_down();
    TierState* t = find_tier(snap.tier);
    if (!t) {
      return make_error(
          ErrorCode::TIER_UNAVAILABLE,
          std::string("snapshot's tier ") + tier_name(snap.tier) + " is not served by this pool");
    }
    uint32_t total = static_cast<uint32_t>(t->warm.size()) + t->active + t->booting;
    if (total >= t->cfg.max) {
      return make_error(ErrorCode::POOL_EXHAUSTED,
                        std::string("tier ") + tier_name(snap.tier) + " is at its max (" +
                            std::to_string(t->cfg.max) + " VMs); release one or raise --max",
                        true);
    }
    t->booting++;
    cfg = t->cfg;
    cfg.vcpus = snap.vcpus;
    cfg.memory_mib = snap.memory_mib;
  }
  std::optional<Result<LeaseInfo>> out;
  const std::string id = "vm-" + random_hex(8);
  bool ran = run_on_sandbox_thread([&] {
    double ms = 0;
    auto mem =
        load_memory(snap.dir + "/memory.img", uint64_t{snap.memory_mib} << 20, "nv-snapshot-" + id);
    if (!mem.ok()) {
      out.emplace(mem.error());
      return;
    }
    auto vms = restore_clones(cfg, snap.dir + "/device.state", mem.value(), {id}, &ms);
    std::lock_guard lock(mu_);
    tiers_[snap.tier].booting--;
    if (!vms.ok()) {
      out.emplace(vms.error());
      return;
    }
    out.emplace(adopt_locked(vms.value()[0], snap.tier, ms, lifetime, req.sandbox_id, req.owner));
  });
  if (!ran) out.emplace(shutting_down());
  refill_cv_.notify_all();
  if (out->ok()) {
    out->value().vm.restored = true;
    if (Status s = registry_->put_lease(record_of(out->value())); !s.ok()) {
      (void)release(id, "registry write failed");
      return s.error();
    }
    events_.on_acquired(id, snap.tier, 0);
  }
  return std::move(*out);
}

Result<LeaseInfo> Pool::extend(const std::string& vm_id, std::chrono::milliseconds lifetime) {
  if (Status s = sandboxes_enabled(); !s.ok()) return s.error();
  if (Status s = check_vm_id(vm_id); !s.ok()) return s.error();
  auto granted = sandbox_lifetime(lifetime, opt_.default_lease_ttl, opt_.max_sandbox_ttl);
  if (!granted.ok()) return granted.error();
  lifetime = granted.value();
  LeaseInfo li;
  {
    std::lock_guard lock(mu_);
    auto it = vms_.find(vm_id);
    if (it != vms_.end() && it->second.leased && it->second.sandbox) {
      Entry& e = it->second;
      e.lifetime = lifetime;
      e.lease_expires = opt_.clock() + lifetime;
      e.expires_unix_ms = opt_.unix_ms() + lifetime.count();
      li = lease_info_locked(vm_id, e);
    } else if (auto p = parked_.find(vm_id); p != parked_.end()) {
      p->second.lease_ms = static_cast<uint32_t>(lifetime.count());
      p->second.expires_unix_ms = opt_.unix_ms() + lifetime.count();
      li = info_of(p->second);
    } else {
      return make_error(ErrorCode::UNKNOWN_LEASE, "vm '" + vm_id + "' is no sandbox lease");
    }
  }
  LeaseRecord r = record_of(li);
  if (li.state == schema::LeaseState::PAUSED) r.state_dir = paused_dir(vm_id);
  if (Status s = registry_->put_lease(r); !s.ok()) return s.error();
  return li;
}

Result<ForkResult> Pool::fork(const std::string& vm_id, uint32_t count,
                              std::chrono::milliseconds lifetime,
                              const std::vector<std::string>& sandbox_ids) {
  const auto start = Clock::now();
  if (Status s = capture_enabled(); !s.ok()) return s.error();
  if (Status s = check_vm_id(vm_id); !s.ok()) return s.error();
  if (Status s = check_fork(count, sandbox_ids); !s.ok()) return s.error();
  auto granted = sandbox_lifetime(lifetime, opt_.default_lease_ttl, opt_.max_sandbox_ttl);
  if (!granted.ok()) return granted.error();
  lifetime = granted.value();
  Entry parent;
  auto vm = take_running(vm_id, &parent);
  if (!vm.ok()) return vm.error();
  TierConfig cfg;
  {
    std::lock_guard lock(mu_);
    TierState& t = tiers_[parent.tier];
    uint32_t total = static_cast<uint32_t>(t.warm.size()) + t.active + t.booting;
    if (total + count > t.cfg.max) {
      vms_.at(vm_id).busy = false;
      return make_error(ErrorCode::POOL_EXHAUSTED,
                        std::string("tier ") + tier_name(parent.tier) + " has room for " +
                            std::to_string(t.cfg.max - std::min(total, t.cfg.max)) +
                            " more VMs, not " + std::to_string(count) +
                            " (--max); release some or fork fewer",
                        true);
    }
    t.booting += count;
    cfg = t.cfg;
  }
  std::optional<Result<ForkResult>> out;
  bool ran = run_on_sandbox_thread([&] {
    ForkResult fr;
    const std::string cap_id = "cap-" + random_hex(6);
    CaptureSpec cs{cap_id,
                   cfg.vcpus,
                   cfg.memory_mib,
                   opt_.kernel,
                   opt_.rootfs,
                   opt_.state_dir + "/captures/" + cap_id + ".state",
                   /*free_zero_pages=*/true};
    const auto deadline = Clock::now() + opt_.boot_timeout;
    // A kit (fork_kit.cc) brings the capture's memory and the first fork's VMM, made ahead.
    std::optional<ForkKit> kit = take_fork_kit(parent.tier);
    std::optional<TemplateCopy> spare;
    if (kit) {
      spare = std::move(kit->spare);
      cs.state_path = kit->state_path;
    }
    std::vector<std::string> ids;
    for (uint32_t i = 0; i < count; ++i) ids.push_back("vm-" + random_hex(8));
    Result<std::vector<std::shared_ptr<RunningVm>>> vms = std::vector<std::shared_ptr<RunningVm>>();
    // In place (capture.h): the capture finishes (pause, device state, written pages, seal) on
    // its own thread while the other forks' VMMs start, and before any guest runs.
    auto cap = begin_capture_in_place(*vm.value(), cs, kit ? &spare : nullptr);
    std::vector<std::shared_ptr<RunningVm>> prestarted;
    if (kit && cap.ok() && cap.value() && cap.value()->from_spare) {
      ids[0] = kit->vmm->info().vm_id;
      prestarted.push_back(std::move(kit->vmm));
    } else if (kit) {  // the parent maps another template (a fork's fork): the kit is no use
      (void)kit->vmm->destroy(Clock::now() + opt_.destroy_grace);
      if (!cap.ok() || !cap.value()) ::unlink(kit->state_path.c_str());
    }
    if (cap.ok() && cap.value()) {
      CapturedVm& c = *cap.value();
      auto finishing = std::async(
          std::launch::async, [&] { return finish_capture_in_place(*vm.value(), c, deadline); });
      vms = restore_clones(
          cfg, c.state_path, c.memory, ids, nullptr, [&] { return finishing.get(); },
          std::move(prestarted));
      if (finishing.valid()) finishing.wait();  // restore_clones failed before it asked
    } else {
      // By migration: the zero pages are freed and the memory sealed BEFORE any fork's VMM
      // maps it (the seal once overlapped the forks' start there and met EBUSY).
      if (cap.ok()) cap = capture(backend_, *vm.value(), cs, deadline);
      Status sealed = cap.ok() ? seal_capture(*cap.value()) : Status(cap.error());
      vms = sealed.ok()
                ? restore_clones(cfg, cap.value()->state_path, cap.value()->memory, ids, nullptr)
                : Result<std::vector<std::shared_ptr<RunningVm>>>(sealed.error());
    }
    std::lock_guard lock(mu_);
    tiers_[parent.tier].booting -= count;
    if (!vms.ok()) {
      out.emplace(vms.error());
      return;
    }
    fr.capture_ms = cap.value()->capture_ms;
    fr.pause_ms = cap.value()->pause_ms;
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    for (uint32_t i = 0; i < count; ++i) {
      auto li = adopt_locked(vms.value()[i], parent.tier, ms, lifetime,
                             sandbox_ids.empty() ? "" : sandbox_ids[i], parent.owner);
      li.value().vm.restored = true;
      fr.leases.push_back(li.value());
    }
    // The capture (its memfd and state file) goes now: each fork maps the RAM, the kernel keeps
    // it while any of them does.
    out.emplace(std::move(fr));
  });
  if (!ran) out.emplace(shutting_down());
  untake(vm_id);
  refill_cv_.notify_all();
  prepare_fork_kit(parent.tier);  // the next one, now that this fork no longer needs the cores
  if (!out->ok()) return std::move(*out);
  ForkResult& fr = out->value();
  // Forks keep the parent's policy, each with its own MAC and address.
  if (auto policy = opt_.network ? opt_.network->policy_of(vm_id) : std::nullopt) {
    Status net_ok;
    run_on_sandbox_thread([&] {
      for (auto& li : fr.leases) {
        auto net = attach_network(li.vm.vm_id, *policy, li.sandbox_id, "");
        if (!net.ok()) {
          net_ok = net.error();
          break;
        }
        li.network = net.value();
      }
    });
    if (!net_ok.ok()) {
      for (auto& li : fr.leases) (void)release(li.vm.vm_id, "fork network setup failed");
      return net_ok.error();
    }
  }
  uint64_t tier_template_bytes = 0;
  {
    std::lock_guard lock(mu_);
    const TierState& t = tiers_[parent.tier];
    if (t.memory.valid()) tier_template_bytes = fd_allocated_bytes(t.memory.fd());
  }
  fr.fork_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  for (const auto& li : fr.leases) {
    if (Status s = registry_->put_lease(record_of(li)); !s.ok()) {
      log::warn("registry write failed", {{"vm_id", li.vm.vm_id}, {"error", s.error().message}});
    }
    events_.on_acquired(li.vm.vm_id, li.tier.tier, 0);
  }
  log::info("sandbox forked", {{"parent", vm_id},
                               {"count", static_cast<int64_t>(count)},
                               {"capture_ms", fr.capture_ms},
                               {"pause_ms", fr.pause_ms},
                               {"fork_ms", fr.fork_ms},
                               {"tier_template_allocated_bytes", tier_template_bytes}});
  return std::move(*out);
}

Result<std::vector<LeaseInfo>> Pool::sandbox_leases(const std::string& owner) {
  if (Status s = sandboxes_enabled(); !s.ok()) return s.error();
  if (Status s = check_owner(owner, true); !s.ok()) return s.error();
  std::vector<LeaseInfo> out;
  std::lock_guard lock(mu_);
  for (auto& [id, e] : vms_) {
    if (!e.leased || !e.sandbox || (!owner.empty() && e.owner != owner)) continue;
    out.push_back(lease_info_locked(id, e));
  }
  for (auto& [id, r] : parked_) {
    if (!owner.empty() && r.owner != owner) continue;
    out.push_back(info_of(r));
  }
  std::sort(out.begin(), out.end(),
            [](const LeaseInfo& a, const LeaseInfo& b) { return a.vm.vm_id < b.vm.vm_id; });
  return out;
}

bool Pool::end_parked(const std::string& vm_id, const std::string& reason, bool expired) {
  LeaseRecord r;
  {
    std::lock_guard lock(mu_);
    auto p = parked_.find(vm_id);
    if (p == parked_.end()) return false;
    r = p->second;
    parked_.erase(p);
    remember_released(vm_id, expired ? reason : "released");
  }
  if (!r.state_dir.empty()) (void)remove_tree(r.state_dir);
  forget_sandbox(vm_id);
  if (expired) {
    log::warn("sandbox lease expired", {{"vm_id", vm_id}, {"reason", reason}});
    events_.on_failed(vm_id, r.tier, reason, 0);
  } else {
    events_.on_released(vm_id, r.tier, reason, 0);
  }
  return true;
}

Clock::time_point Pool::expire_parked() {
  std::vector<std::pair<std::string, std::string>> doomed;
  auto next = Clock::time_point::max();
  {
    std::lock_guard lock(mu_);
    const int64_t now = opt_.unix_ms();
    for (auto& [id, r] : parked_) {
      if (r.expires_unix_ms <= now) {
        doomed.emplace_back(id, std::string("lease expired: the ") +
                                    (r.state == schema::LeaseState::PAUSED ? "paused" : "lost") +
                                    " sandbox was not resumed or released within its " +
                                    std::to_string(r.lease_ms) + " ms lifetime");
      } else {
        next = std::min(next, Clock::now() + std::chrono::milliseconds(r.expires_unix_ms - now));
      }
    }
  }
  for (auto& [id, why] : doomed) end_parked(id, why, true);
  return next;
}

}  // namespace nv::vm
