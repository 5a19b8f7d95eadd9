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
