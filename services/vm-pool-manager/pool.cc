#include "pool.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>

#include "common/log.h"

namespace nv::vm {

const char* tier_name(SizeTier t) {
  switch (t) {
    case SizeTier::SMALL:
      return "small";
    case SizeTier::MEDIUM:
      return "medium";
    case SizeTier::LARGE:
      return "large";
    case SizeTier::UNSET:
      return "unset";
  }
  return "unknown";
}

bool parse_tier(const std::string& name, SizeTier* out) {
  for (SizeTier t : {SizeTier::SMALL, SizeTier::MEDIUM, SizeTier::LARGE}) {
    if (name == tier_name(t)) {
      *out = t;
      return true;
    }
  }
  return false;
}

std::vector<TierConfig> default_tiers(uint32_t warm, uint32_t max) {
  return {{SizeTier::SMALL, 1, 256, warm, max},
          {SizeTier::MEDIUM, 2, 512, warm, max},
          {SizeTier::LARGE, 4, 1024, warm, max}};
}

Pool::Pool(PoolOptions options, Backend& backend, GuestLink& guest, PoolEvents& events)
    : opt_(std::move(options)), backend_(backend), guest_(guest), events_(events) {}

Pool::~Pool() { stop(); }

double Pool::ms_since(Clock::time_point t) const {
  return std::chrono::duration<double, std::milli>(opt_.clock() - t).count();
}

Pool::TierState* Pool::find_tier(SizeTier t) {
  auto it = tiers_.find(t);
  return it == tiers_.end() ? nullptr : &it->second;
}

Status Pool::validate() const {
  std::vector<std::string> problems;
  std::map<SizeTier, int> seen;
  for (const auto& t : opt_.tiers) {
    std::string n = tier_name(t.tier);
    if (t.tier == SizeTier::UNSET) problems.push_back("a tier has no size (unset)");
    if (seen[t.tier]++) problems.push_back("tier " + n + " configured twice");
    if (t.vcpus == 0 || t.memory_mib < 64) {
      problems.push_back("tier " + n + ": vcpus >= 1 and memory >= 64 MiB");
    }
    if (t.warm > t.max) {
      problems.push_back("tier " + n + ": warm (" + std::to_string(t.warm) + ") > max (" +
                         std::to_string(t.max) + ")");
    }
  }
  if (opt_.tiers.empty()) problems.push_back("no tiers configured");
  if (opt_.refill_threads == 0) problems.push_back("refill_threads must be >= 1");
  if (opt_.default_lease_ttl.count() <= 0) problems.push_back("default lease lifetime must be > 0");
  if (opt_.max_lease_ttl.count() > int64_t{UINT32_MAX}) {
    problems.push_back("maximum lease lifetime above " + std::to_string(UINT32_MAX) +
                       " ms (LeaseRequest.leaseMs is a UInt32)");
  }
  if (opt_.max_lease_ttl < opt_.default_lease_ttl) {
    problems.push_back("maximum lease lifetime (" + std::to_string(opt_.max_lease_ttl.count()) +
                       " ms) below the default (" + std::to_string(opt_.default_lease_ttl.count()) +
                       " ms)");
  }
  if (opt_.snapshot && !backend_.supports_snapshot()) {
    problems.push_back("snapshot mode: backend " + backend_.name() + " cannot snapshot");
  }
  if (opt_.snapshot && opt_.snapshot_dir.empty()) {
    problems.push_back("snapshot mode needs snapshot_dir");
  }
  if (problems.empty()) return {};
  std::string msg = "pool configuration: ";
  for (size_t i = 0; i < problems.size(); ++i) msg += (i ? "; " : "") + problems[i];
  return make_error(ErrorCode::BAD_REQUEST, msg);
}

Status Pool::start() {
  if (Status s = validate(); !s.ok()) return s;
  {
    std::lock_guard lock(mu_);
    if (started_) return {};
    for (const auto& t : opt_.tiers) tiers_[t.tier].cfg = t;
  }
  if (!opt_.state_dir.empty()) {
    if (Status s = open_registry(); !s.ok()) return s;
  }
  if (opt_.snapshot) {
    if (Status s = make_dirs(opt_.snapshot_dir, 0700); !s.ok()) return s;
    // One tier's template failing does not stop the others: it is reported, and the refill
    // threads retry it with backoff while the other tiers serve.
    for (auto& [tier, t] : tiers_) {
      if (t.cfg.max == 0) continue;
      if (is_stopping()) break;
      if (Status s = make_snapshot(t); !s.ok()) template_failed(t, s.error());
    }
  }
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.valid()) return sys_error("epoll_create1", errno);
  wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_.valid()) return sys_error("eventfd", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;  // key 0 = wake
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) != 0) {
    return sys_error("epoll_ctl(ADD eventfd)", errno);
  }
  {
    std::lock_guard lock(mu_);
    // stop() came while the templates were made (SIGTERM during start-up): nothing to start.
    if (stopping_) return make_error(ErrorCode::SHUTTING_DOWN, "vm pool stopped while starting");
    started_ = true;
  }
  threads_.emplace_back([this] { monitor_loop(); });
  for (unsigned i = 0; i < opt_.refill_threads; ++i) {
    threads_.emplace_back([this] { refill_loop(); });
  }
  if (registry_) {
    for (unsigned i = 0; i < std::max(1u, opt_.sandbox_threads); ++i) {
      threads_.emplace_back([this] { sandbox_loop(); });
    }
  }
  log::info("vm pool started", {{"backend", backend_.name()},
                                {"accel", backend_.accel()},
                                {"accel_reason", backend_.accel_reason()},
                                {"snapshot", opt_.snapshot}});
  return {};
}

void Pool::interrupt() {
  std::vector<std::shared_ptr<RunningVm>> inflight;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    inflight.assign(inflight_.begin(), inflight_.end());
  }
  // Templates and boots in progress (start() on another thread, or the refill threads) hold
  // VMs no map knows yet: killing their VMMs ends every wait on them now, not at its deadline.
  for (auto& vm : inflight) vm->kill_now();
  warm_cv_.notify_all();
  refill_cv_.notify_all();
  standby_cv_.notify_all();
  tasks_cv_.notify_all();
}

void Pool::stop() {
  std::vector<std::shared_ptr<RunningVm>> doomed;
  interrupt();
  warm_cv_.notify_all();
  refill_cv_.notify_all();
  standby_cv_.notify_all();
  if (wake_.valid()) {
    uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
  }
  for (auto& th : threads_) th.join();
  threads_.clear();
  {
    std::lock_guard lock(mu_);
    for (auto& [id, e] : vms_) doomed.push_back(e.vm);
    vms_.clear();
    keys_.clear();
    for (auto& [tier, t] : tiers_) {
      t.warm.clear();
      t.active = 0;
      if (t.standby) doomed.push_back(std::move(t.standby));
      if (t.fork_kit) {
        doomed.push_back(std::move(t.fork_kit->vmm));
        ::unlink(t.fork_kit->state_path.c_str());
      }
      t.fork_kit.reset();
    }
    started_ = false;
  }
  // Every VMM is killed first, then each is reaped and its cgroup and jail removed: the pool is
  // gone in moments however many VMs it had (no graceful quit one by one: nothing is kept).
  for (auto& vm : doomed) vm->kill_now();
  for (auto& vm : doomed) (void)vm->destroy(Clock::now() + opt_.destroy_grace);
  std::vector<SnapshotStats> snaps;
  {
    std::lock_guard lock(mu_);
    snaps = snapshots_;
  }
  for (const auto& s : snaps) ::unlink(s.path.c_str());
}

Status Pool::destroy(const std::string& vm_id, const std::string& reason) {
  {
    std::lock_guard lock(mu_);
    if (vms_.find(vm_id) == vms_.end()) {
      return make_error(ErrorCode::UNKNOWN_LEASE, "vm '" + vm_id + "' is not alive");
    }
  }
  fail_vm(vm_id, reason);
  return {};
}

Result<LeaseInfo> Pool::lease(SizeTier tier, std::chrono::milliseconds deadline_ms,
                              std::chrono::milliseconds lifetime, bool sandbox) {
  if (tier == SizeTier::UNSET) tier = SizeTier::SMALL;
  if (deadline_ms.count() <= 0) deadline_ms = opt_.default_lease_deadline;
  if (lifetime.count() <= 0) lifetime = opt_.default_lease_ttl;
  const auto max_ttl = sandbox ? opt_.max_sandbox_ttl : opt_.max_lease_ttl;
  if (lifetime > max_ttl) {
    return make_error(
        ErrorCode::BAD_REQUEST,
        "leaseMs " + std::to_string(lifetime.count()) + " is above this pool's " +
            (sandbox ? "maximum sandbox lifetime of " : "maximum lease lifetime of ") +
            std::to_string(max_ttl.count()) + " ms; ask for less or raise the pool manager's " +
            (sandbox ? "--max-sandbox-ttl-ms" : "--max-lease-ttl-ms"));
  }
  auto start = opt_.clock();
  auto deadline = Clock::now() + deadline_ms;
  std::unique_lock lock(mu_);
  TierState* t = find_tier(tier);
  if (!t) {
    std::string known;
    for (auto& [k, v] : tiers_) known += (known.empty() ? "" : ", ") + std::string(tier_name(k));
    return make_error(ErrorCode::UNKNOWN_TIER, "tier '" + std::string(tier_name(tier)) +
                                                   "' is not configured (configured: " + known +
                                                   ")");
  }
  if (!started_ || stopping_) return make_error(ErrorCode::SHUTTING_DOWN, "vm pool is not running");
  if (opt_.snapshot && t->snapshot_path.empty() && !t->template_error.empty()) {
    auto next = std::chrono::duration_cast<std::chrono::milliseconds>(t->template_retry_after -
                                                                      Clock::now());
    return make_error(
        ErrorCode::TIER_UNAVAILABLE,
        "tier " + std::string(tier_name(tier)) + " has no snapshot template: " + t->template_error +
            "; " + std::to_string(t->template_failures) + " attempt(s) so far, " +
            (t->template_building
                 ? std::string("one is running now")
                 : "the next in " + std::to_string(std::max<int64_t>(0, next.count())) + " ms") +
            "; other tiers serve meanwhile",
        true);
  }
  // Fail-closed: a VM whose lease_check (egress enforcement) fails is not handed out. A VM gets
  // `enforcement_wait` from the moment it became warm to pass it (the sentinel attaches a moment
  // after vm.booted, later under load): while one that young is waiting, the lease waits (up to
  // its deadline); once every warm VM has failed it for longer (no sentinel attaching), the lease
  // is refused at once.
  std::string unenforced;
  t->waiting++;
  refill_cv_.notify_all();
  publish_status();
  std::shared_ptr<RunningVm> vm;
  std::string id;
  for (;;) {
    warm_cv_.wait_until(lock, deadline, [&] { return stopping_ || !t->warm.empty(); });
    if (stopping_ || t->warm.empty()) break;
    // First warm VM whose VMM still runs (a dead one stays for the monitor to report) and that
    // passes the lease check.
    bool any_alive = false, any_young = false;
    const auto now = Clock::now();
    auto it = std::find_if(t->warm.begin(), t->warm.end(), [&](const std::string& w) {
      const Entry& e = vms_.at(w);
      if (!e.vm->alive()) return false;
      any_alive = true;
      if (!opt_.lease_check) return true;
      Status ok = opt_.lease_check(e.vm->info());
      if (!ok.ok()) {
        unenforced = ok.error().message;
        if (now - e.warm_since < opt_.enforcement_wait) any_young = true;
      }
      return ok.ok();
    });
    if (it == t->warm.end()) {
      if (Clock::now() >= deadline) break;
      if (any_alive && !any_young) break;  // unenforced past the grace: refuse now
      warm_cv_.wait_for(lock, std::chrono::milliseconds(any_alive ? 50 : 10));
      continue;
    }
    unenforced.clear();
    id = *it;
    t->warm.erase(it);
    Entry& e = vms_.at(id);
    e.leased = true;
    e.leased_at = opt_.clock();
    e.lifetime = lifetime;
    e.lease_expires = e.leased_at + lifetime;
    e.sandbox = sandbox;
    e.expires_unix_ms = opt_.unix_ms() + lifetime.count();
    t->active++;
    vm = e.vm;
    break;
  }
  t->waiting--;
  if (!vm) {
    if (stopping_) return make_error(ErrorCode::SHUTTING_DOWN, "vm pool is stopping");
    if (!unenforced.empty()) {
      publish_status();
      return make_error(ErrorCode::EGRESS_UNENFORCED,
                        "no warm " + std::string(tier_name(tier)) +
                            " VM has its egress enforcement in place (" + unenforced +
                            "); the pool leases none without it (fail-closed): is "
                            "nv-ebpf-sentinel running? (--no-require-egress turns this off)",
                        true);
    }
    Error err =
        make_error(ErrorCode::POOL_EXHAUSTED,
                   "no warm " + std::string(tier_name(tier)) + " VM within " +
                       std::to_string(deadline_ms.count()) + " ms (warm 0, leased " +
                       std::to_string(t->active) + ", booting " + std::to_string(t->booting) +
                       ", max " + std::to_string(t->cfg.max) + "); retry later or raise --max",
                   true);
    publish_status();
    return err;
  }
  LeaseInfo li = lease_info_locked(id, vms_.at(id));
  li.wait_ms = ms_since(start);
  publish_status();
  lock.unlock();
  refill_cv_.notify_all();
  events_.on_acquired(id, tier, li.wait_ms);
  return li;
}

void Pool::remember_released(const std::string& id, const std::string& how) {
  released_.emplace_back(id, how);
  if (released_.size() > 4096) released_.pop_front();
}

Status Pool::release(const std::string& vm_id, const std::string& reason) {
  if (end_parked(vm_id, reason, false)) return {};
  Entry e;
  {
    std::lock_guard lock(mu_);
    auto it = vms_.find(vm_id);
    if (it == vms_.end() || !it->second.leased) {
      auto before = std::find_if(released_.begin(), released_.end(),
                                 [&](const auto& r) { return r.first == vm_id; });
      std::string msg = "vm '" + vm_id + "' is not leased (unknown id)";
      if (before != released_.end()) {
        msg = before->second == "released"
                  ? "vm " + vm_id + " was already released"
                  : "vm " + vm_id + " is no longer leased: " + before->second;
      }
      return make_error(ErrorCode::UNKNOWN_LEASE, msg);
    }
    e = std::move(it->second);
    vms_.erase(it);
    keys_.erase(e.key);
    tiers_[e.tier].active--;
    remember_released(vm_id, "released");
    publish_status();
  }
  refill_cv_.notify_all();
  if (e.sandbox) forget_sandbox(vm_id);
  double leased_ms = ms_since(e.leased_at);
  (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, e.vm->exit_fd(), nullptr);
  if (auto u = e.vm->usage()) events_.on_final_usage(vm_id, u.value());
  Status d = e.vm->destroy(Clock::now() + opt_.destroy_grace);
  if (!d.ok()) log::warn("vm cleanup failed", {{"vm_id", vm_id}, {"error", d.error().message}});
  events_.on_released(vm_id, e.tier, reason, leased_ms);
  return {};
}

PoolStatusInfo Pool::status_locked() const {
  PoolStatusInfo s;
  s.backend = backend_.name();
  s.accel = backend_.accel();
  for (const auto& [tier, t] : tiers_) {
    TierStatusInfo ts;
    ts.tier = tier;
    ts.warm = static_cast<uint32_t>(t.warm.size());
    ts.active = t.active;
    ts.booting = t.booting;
    ts.warm_target = t.cfg.warm;
    ts.max = t.cfg.max;
    ts.waiting = t.waiting;
    ts.standby = t.standby ? 1 : 0;
    ts.fork_kits = t.fork_kit ? 1 : 0;
    ts.template_error = opt_.snapshot && t.snapshot_path.empty() ? t.template_error : "";
    ts.template_failures = t.template_failures;
    s.tiers.push_back(ts);
  }
  return s;
}

void Pool::publish_status() { events_.on_status(status_locked()); }

PoolStatusInfo Pool::status() {
  std::lock_guard lock(mu_);
  return status_locked();
}

bool Pool::wait_warm(Deadline deadline) {
  std::unique_lock lock(mu_);
  return warm_cv_.wait_until(lock, deadline, [&] {
    for (auto& [tier, t] : tiers_) {
      if (t.warm.size() < t.cfg.warm) return false;
    }
    return true;
  });
}

Result<VmUsage> Pool::usage(const std::string& vm_id) {
  std::shared_ptr<RunningVm> vm;
  {
    std::lock_guard lock(mu_);
    auto it = vms_.find(vm_id);
    if (it == vms_.end()) return make_error(ErrorCode::UNKNOWN_LEASE, "no live vm " + vm_id);
    vm = it->second.vm;
  }
  return vm->usage();
}

std::vector<SnapshotStats> Pool::snapshot_stats() {
  std::lock_guard lock(mu_);
  return snapshots_;
}

std::vector<VmInfo> Pool::live_vms() {
  std::lock_guard lock(mu_);
  std::vector<VmInfo> out;
  for (auto& [id, e] : vms_) out.push_back(e.vm->info());
  return out;
}

}  // namespace nv::vm
