// pool.h — pre-warmed VMs per size tier, leased one per execution and never reused.
//
//   tiers: small 1 vCPU/256 MiB, medium 2/512, large 4/1024, each with `warm` (idle VMs kept
//   ready) and `max` (warm + leased + booting never exceeds it).
//   lease(tier, deadline)  → a warm VM, waiting up to the deadline; poolExhausted after it.
//   release(vm_id, reason) → the VM is destroyed (VMM stopped, cgroup and jail removed); the
//                            refill threads boot a fresh one.
//   Every lease has a lifetime (the lessee asks for one; 0 = default_lease_ttl). A lease that
//   is not released within it is reclaimed by the monitor thread: the VM is destroyed, reported
//   through on_failed("lease expired ..."), its tier's active count drops and the pool refills.
//   That is what frees the VMs of a lessee that died (a SIGKILLed executor never releases);
//   a later release of the id gets unknownLease saying the lease expired. A lifetime above
//   max_lease_ttl is refused with badRequest rather than shortened: a lessee that silently got
//   less time than it asked for would lose its VM mid-run with no hint why.
//   A VMM that exits or stops answering its control channel is noticed by the monitor thread
//   (pidfds in an epoll set; a health check every `health_interval`), removed, reported through
//   PoolEvents::on_failed, and replaced.
//   Snapshot mode: one template VM per tier is cold-booted and snapshotted at start; the pool is
//   then filled by restoring it, and every restored VM gets fresh entropy and a fresh id (its
//   clones would otherwise share the snapshot's RNG state) before it can be leased. Where the
//   backend keeps RAM out of snapshots (template_memory()), the template runs on a memfd that is
//   sealed read-only once the template is gone and mapped copy-on-write by every clone.
//
//   VMMs die with the pool manager: the jail sets their parent-death signal, which follows the
//   *thread* that spawned them. So VMMs are spawned only by threads that outlive them: the refill
//   threads (clones, standbys, template retries) and the thread running start() (templates, which
//   it destroys before it returns).
//
// The backend, the guest link (Hello / reseed) and the clock are injected, so the pool logic is
// unit-tested with fakes (tests/unit/vm_pool_test.cc).
#pragma once

#include <nv/schema/common.capnp.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nv/schema/vm.capnp.h>

#include "backend.h"
#include "capture.h"
#include "network.h"
#include "registry.h"
#include "sysutil.h"
#include "template_memory.h"

namespace nv::vm {

// LeaseRecord.network of an allow policy (sandbox_network.cc).
std::string encode_policy(const ParsedPolicy& policy);

using SizeTier = schema::SizeTier;
const char* tier_name(SizeTier t);
// "small" | "medium" | "large" → tier; false when unknown.
bool parse_tier(const std::string& name, SizeTier* out);

struct TierConfig {
  SizeTier tier = SizeTier::SMALL;
  uint32_t vcpus = 1;
  uint32_t memory_mib = 256;
  uint32_t warm = 1;  // idle VMs kept ready
  uint32_t max = 4;   // warm + leased + booting never exceeds it
};
// small 1/256, medium 2/512, large 4/1024 with the given warm/max each.
std::vector<TierConfig> default_tiers(uint32_t warm, uint32_t max);

// Waits for the guest agent and reseeds it (implemented over nv_guest_channel; faked in tests).
class GuestLink {
 public:
  virtual ~GuestLink() = default;
  // Connects to the guest channel and waits for the agent's Hello.
  virtual Status wait_ready(const VmInfo& vm, Deadline deadline) = 0;
  // Mixes `entropy` into the guest RNG and gives the guest its new id.
  virtual Status reseed(const VmInfo& vm, const std::string& entropy, const std::string& vm_id,
                        Deadline deadline) = 0;
  // Runs each language the agent offers once, so the guest's page cache holds the interpreters
  // and their libraries (a snapshot template does this: every clone starts warm).
  virtual Status warm_up(const VmInfo& /*vm*/, Deadline /*deadline*/) { return {}; }
  // A Reseed (fresh entropy, the same id) that also configures eth0 (issue 16).
  virtual Status configure_network(const VmInfo& /*vm*/, const std::string& /*entropy*/,
                                   const std::string& /*vm_id*/, const VmNetInfo& /*net*/,
                                   Deadline /*deadline*/) {
    return make_error(ErrorCode::INTERNAL, "this guest link cannot configure networks");
  }
};

struct TierStatusInfo {
  SizeTier tier = SizeTier::SMALL;
  uint32_t warm = 0, active = 0, booting = 0, warm_target = 0, max = 0, waiting = 0;
  uint32_t standby = 0;    // restores begun ahead of time (PoolOptions::prestart)
  uint32_t fork_kits = 0;  // ready fork kits (PoolOptions::fork_kits)
  // Snapshot mode: why the tier has no template ("" when it has one); leases of the tier get
  // tierUnavailable meanwhile, and the refill threads retry with backoff.
  std::string template_error;
  uint32_t template_failures = 0;  // consecutive template failures
};
struct PoolStatusInfo {
  std::string backend;
  std::string accel;
  std::vector<TierStatusInfo> tiers;
};

// Event callbacks (the service publishes them on the bus), from pool threads or the caller's
// thread; implementations must be thread-safe and quick. on_status runs under the pool's lock
// (so statuses arrive in order) and must not call back into the pool; the others run unlocked.
class PoolEvents {
 public:
  virtual ~PoolEvents() = default;
  virtual void on_booted(const VmInfo& /*vm*/, SizeTier, double /*boot_ms*/) {}
  virtual void on_acquired(const std::string& /*vm_id*/, SizeTier, double /*wait_ms*/) {}
  virtual void on_released(const std::string& /*vm_id*/, SizeTier, const std::string& /*reason*/,
                           double /*leased_ms*/) {}
  virtual void on_failed(const std::string& /*vm_id*/, SizeTier, const std::string& /*reason*/,
                         pid_t /*vmm_pid*/) {}
  virtual void on_status(const PoolStatusInfo&) {}
  // A released VM's last cgroup reading, taken just before it is destroyed (the periodic
  // vm.stats may never have sampled a short lease; its CPU throttling would go uncounted).
  virtual void on_final_usage(const std::string& /*vm_id*/, const VmUsage&) {}
};

struct PoolOptions {
  std::vector<TierConfig> tiers = default_tiers(1, 4);
  // Guest networking (network.h; the same manager the backend gives every VM a NIC with).
  // nullptr: sandbox leases with an allow policy get egressDenied.
  std::shared_ptr<NetworkManager> network;
  std::string kernel;        // guest kernel (host path)
  std::string rootfs;        // guest root image (host path)
  bool snapshot = false;     // fill from per-tier snapshots (see above)
  std::string snapshot_dir;  // where template snapshots are written
  std::chrono::milliseconds default_lease_deadline{5000};  // LeaseRequest.deadlineMs == 0
  std::chrono::milliseconds default_lease_ttl{600000};     // LeaseRequest.leaseMs == 0
  std::chrono::milliseconds max_lease_ttl{3600000};        // larger leaseMs: badRequest
  std::chrono::milliseconds boot_timeout{60000};           // VMM start → Hello (and reseed)
  std::chrono::milliseconds destroy_grace{500};            // "quit" → SIGKILL
  std::chrono::milliseconds health_interval{500};          // hang checks; deaths are seen at once
  std::chrono::milliseconds health_timeout{1000};  // a control channel slower than this = hung
  std::chrono::milliseconds snapshot_settle{200};  // after the template's Hello, before stop
  bool snapshot_warm_up = true;  // run each language once in the template before its snapshot
  // Snapshot mode: keep one restore per tier begun ahead of time (Backend::start: the VMM process
  // up and waiting for its state), so a refill only loads the state and reseeds. It is not
  // counted in `max` (it holds no guest yet: ~20 MiB, no vCPU running).
  bool prestart = true;
  std::chrono::milliseconds max_backoff{30000};  // retry delay cap after boot failures
  // First retry delay of a failed snapshot template (doubling per failure, up to max_backoff).
  std::chrono::milliseconds template_retry{1000};
  // Fail-closed leasing: when set, a warm VM is leased only if this passes (the service checks
  // that the VM's cgroup has the egress programs attached). A lease waits (up to its deadline)
  // while a warm VM that fails it has been warm for less than enforcement_wait; once every warm
  // VM has failed it for longer, lease() returns egressUnenforced at once.
  std::function<Status(const VmInfo&)> lease_check;
  std::chrono::milliseconds enforcement_wait{5000};
  unsigned refill_threads = 2;
  size_t reseed_bytes = 64;
  // Sandboxes that live (sandbox_leases.cc): the registry and the RAM images of paused
  // sandboxes and snapshots live under state_dir ("" = no sandbox support: those calls answer
  // badRequest). A sandbox lease may live up to max_sandbox_ttl.
  std::string state_dir;
  std::chrono::milliseconds max_sandbox_ttl{24 * 3600 * 1000};
  // Keep a fork kit per tier (fork_kit.cc): a copy of the tier's template and a VMM started on
  // it, so a fork of a sandbox of that tier neither copies the template nor starts a VMM while
  // the caller waits. Costs each template's allocated bytes once more plus one idle VMM per
  // tier; only with sandboxes (state_dir) and a backend that captures.
  bool fork_kits = true;
  // fork/snapshot/pause/resume/release and registry writes run on these (they spawn VMMs, write
  // SQLite); nothing that waits for a VM to free up does (lease waits run on the caller's thread).
  unsigned sandbox_threads = 4;
  std::function<int64_t()> unix_ms = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  std::function<Clock::time_point()> clock = [] { return Clock::now(); };
};

struct LeaseInfo {
  VmInfo vm;
  TierConfig tier;
  double boot_ms = 0;                     // VMM start (or restore start) → Hello (and reseed)
  double wait_ms = 0;                     // how long lease() waited
  std::chrono::milliseconds lifetime{0};  // granted: destroyed this long after the lease
  // Sandbox leases:
  bool sandbox = false;
  std::string sandbox_id, owner;
  schema::LeaseState state = schema::LeaseState::RUNNING;
  int64_t expires_unix_ms = 0;
  std::string note;   // lost: why
  VmNetInfo network;  // mode none unless attached (sandbox_network.cc)
};

// A sandbox lease asked for (vm.capnp LeaseRequest with sandbox set).
struct SandboxLeaseRequest {
  SizeTier tier = SizeTier::SMALL;
  std::chrono::milliseconds deadline{0};  // for a warm VM (0 = the default)
  std::chrono::milliseconds lifetime{0};  // 0 = default_lease_ttl; above max_sandbox_ttl: bad
  std::string sandbox_id, owner;
  std::string from_snapshot;  // "" = a warm VM; else a snapshot of `owner`
  ParsedPolicy network;       // validated by NetworkManager::parse; mode none by default
  std::string trace_id;
};

struct ForkResult {
  std::vector<LeaseInfo> leases;
  double capture_ms = 0;  // the parent's RAM → a sealed template
  double pause_ms = 0;    // of which the parent was paused
  double fork_ms = 0;     // the whole fork
};

// Template figures from snapshot mode (for logs and the benchmark).
struct SnapshotStats {
  SizeTier tier = SizeTier::SMALL;
  std::string path;
  double cold_boot_ms = 0;  // template: VMM start → Hello
  double warm_up_ms = 0;    // template: each language run once (GuestLink::warm_up)
  double snapshot_ms = 0;   // stop + migrate to file
  uint64_t bytes = 0;
};

class Pool {
 public:
  Pool(PoolOptions options, Backend& backend, GuestLink& guest, PoolEvents& events);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Validates the options (every problem in one error), makes the snapshots in snapshot mode,
  // and starts the monitor and refill threads. A tier whose template fails does not fail start():
  // it is reported (PoolEvents::on_failed "tpl-<tier>", TierStatusInfo::template_error), its
  // leases get tierUnavailable, and the refill threads retry it with backoff.
  Status start();
  // Stops the threads and destroys every VM (warm and leased), within moments whatever is in
  // progress (VMs being made are killed first). Idempotent. Not while start() runs on another
  // thread: interrupt() that one, then stop() once it returned.
  void stop();
  // The first half of stop(), safe while start() runs on another thread: marks the pool stopping
  // and kills the VMs being made, so start() returns shuttingDown within moments. Call stop()
  // once start() has returned.
  void interrupt();

  // A warm VM of `tier` (unset = small); waits up to `deadline` (0 = the default). The lease
  // lasts `lifetime` (0 = default_lease_ttl; above max_lease_ttl = badRequest) unless released.
  // `sandbox`: a sandbox lease (bounded by max_sandbox_ttl; lease_sandbox() registers it).
  Result<LeaseInfo> lease(SizeTier tier, std::chrono::milliseconds deadline,
                          std::chrono::milliseconds lifetime = std::chrono::milliseconds(0),
                          bool sandbox = false);
  // Destroys a leased VM. unknownLease for ids never leased, already released, failed or
  // expired (the message says which).
  Status release(const std::string& vm_id, const std::string& reason);
  // Destroys a live VM, warm or leased, at once (a security alert names it); it is reported
  // with on_failed(reason) and the pool refills. unknownLease when no such VM is alive.
  Status destroy(const std::string& vm_id, const std::string& reason);

  PoolStatusInfo status();
  // Blocks until every tier has `warm` VMs ready, or the deadline; true when reached.
  bool wait_warm(Deadline deadline);
  // Usage of a live VM's cgroup.
  Result<VmUsage> usage(const std::string& vm_id);
  std::vector<SnapshotStats> snapshot_stats();
  // Ids of the live VMs (warm and leased) and their VMM pids (tests, bench).
  std::vector<VmInfo> live_vms();

  // --- Sandboxes that live (sandbox_leases.cc; vm.capnp). Errors: badRequest (the request),
  // unknownLease (no such lease, or not in the state the call needs: the message says which),
  // unknownSnapshot, poolExhausted, tierUnavailable, vmFailed (a VMM step failed).
  // A sandbox lease: a warm VM of the tier, or a restore of the owner's snapshot.
  Result<LeaseInfo> lease_sandbox(const SandboxLeaseRequest& req);
  // The lease (running or paused) now ends `lifetime` from now.
  Result<LeaseInfo> extend(const std::string& vm_id, std::chrono::milliseconds lifetime);
  // `count` running copies of a running sandbox lease (capture.h), each reseeded; the parent
  // keeps running.
  Result<ForkResult> fork(const std::string& vm_id, uint32_t count,
                          std::chrono::milliseconds lifetime,
                          const std::vector<std::string>& sandbox_ids);
  // A named snapshot of a running sandbox lease, on disk (the VM keeps running).
  Result<SnapshotRecordRow> snapshot(const std::string& vm_id, const std::string& name,
                                     const std::string& owner);
  Result<std::vector<SnapshotRecordRow>> snapshots(const std::string& owner);
  Result<SnapshotRecordRow> delete_snapshot(const std::string& name, const std::string& owner);
  // RAM and devices to disk, VMM gone (RAM freed); resume restores it with the same vm id.
  Result<LeaseInfo> pause(const std::string& vm_id);
  Result<LeaseInfo> resume(const std::string& vm_id, std::chrono::milliseconds lifetime);
  // Every sandbox lease of `owner` ("" = all): running, paused, lost.
  Result<std::vector<LeaseInfo>> sandbox_leases(const std::string& owner);
  // Runs `task` on one of the pool's sandbox threads and waits for it (the service's request
  // threads run under a seccomp filter that SQLite and VMM spawning must not meet); false (not
  // run) once the pool stops. Called from a sandbox thread, it runs `task` inline.
  bool run_on_sandbox_thread(std::function<void()> task);
  // A sandbox registry is open (PoolOptions::state_dir set and start() done).
  bool keeps_registry() const { return registry_ != nullptr; }
  // Guest networking, nullptr when off.
  NetworkManager* network() const { return opt_.network.get(); }

 private:
  struct Entry {
    std::shared_ptr<RunningVm> vm;
    SizeTier tier;
    double boot_ms = 0;
    bool leased = false;
    Clock::time_point leased_at{};
    Clock::time_point lease_expires{};  // leased_at + the granted lifetime (opt_.clock)
    Clock::time_point warm_since{};     // when it became warm (real clock)
    std::chrono::milliseconds lifetime{0};
    uint64_t key = 0;  // epoll key
    bool sandbox = false;
    std::string sandbox_id, owner;
    int64_t expires_unix_ms = 0;
    bool busy = false;  // a fork, snapshot or pause of it runs
    VmNetInfo net;      // its network (sandbox_network.cc)
  };
  // A fork made ahead for a tier (fork_kit.cc): a copy of its template (the next capture's
  // memory) and a VMM started on that copy with -incoming, waiting for the device state at
  // state_path. No guest runs on it before a capture sealed the copy.
  struct ForkKit {
    TemplateCopy spare;
    std::shared_ptr<RunningVm> vmm;
    std::string state_path;
  };
  struct TierState {
    TierConfig cfg;
    std::deque<std::string> warm;
    uint32_t active = 0;
    uint32_t booting = 0;
    uint32_t waiting = 0;
    uint32_t failures = 0;               // consecutive boot failures
    Clock::time_point retry_after{};     // backoff
    std::string snapshot_path;           // "" = cold boot
    TemplateMemory memory;               // the template's RAM (backends with template_memory())
    std::shared_ptr<RunningVm> standby;  // a restore's VMM already started (PoolOptions::prestart)
    bool standby_starting = false;
    std::optional<ForkKit> fork_kit;  // PoolOptions::fork_kits
    bool fork_kit_starting = false;
    std::string template_error;      // last template failure ("" = none)
    uint32_t template_failures = 0;  // consecutive
    Clock::time_point template_retry_after{};
    bool template_building = false;  // a refill thread is making it
  };
  // A VM being made (template, boot) that no map holds yet: stop() kills it (kill_now) so the
  // thread waiting on it returns at once. RAII: registered for the guard's lifetime.
  class InFlight {
   public:
    InFlight(Pool& pool, std::shared_ptr<RunningVm> vm);
    ~InFlight() { release(); }
    void release();

   private:
    Pool& pool_;
    std::shared_ptr<RunningVm> vm_;
  };

  Status validate() const;
  Status make_snapshot(TierState& t);
  // Records and reports a template failure; the refill threads retry after a backoff.
  void template_failed(TierState& t, const Error& e);
  bool is_stopping();
  void refill_loop();
  void monitor_loop();
  void boot_one(SizeTier tier);
  // Adds a VM to vms_ and its exit fd to the monitor's epoll set (a fresh key). mu_ held.
  void add_entry_locked(const std::string& id, Entry e);
  // The spec of the tier's next VM (a fresh id; the snapshot and template RAM in snapshot mode).
  VmSpec restore_spec(SizeTier tier);
  // Begins the tier's next restore ahead of time (TierState::standby).
  void start_standby(SizeTier tier);
  // Removes a VM that died or hung; reports it; the refill replaces it.
  void fail_vm(const std::string& vm_id, const std::string& reason);
  // fail_vm for every lease past its lifetime; returns when the next one ends (time_point::max
  // when none), on the real clock, so the monitor can wake for it.
  Clock::time_point expire_leases();
  TierState* find_tier(SizeTier t);
  PoolStatusInfo status_locked() const;
  void publish_status();
  double ms_since(Clock::time_point t) const;
  // Records how a lease ended ("released", "lease expired ...") for release()'s messages.
  void remember_released(const std::string& id, const std::string& how);

  // --- sandbox_leases.cc
  Status open_registry();
  void sandbox_loop();
  Status sandboxes_enabled() const;  // a registry
  Status capture_enabled() const;    // and a backend that captures (fork, snapshot, pause)
  LeaseInfo lease_info_locked(const std::string& id, const Entry& e);
  LeaseRecord record_of(const LeaseInfo& li) const;
  // Registers a restored VM (fork, resume, fromSnapshot) as a running sandbox lease.
  // lease_sandbox's fromSnapshot half (on a sandbox thread).
  Result<LeaseInfo> lease_from_snapshot(const SandboxLeaseRequest& req);
  // Connects a leased VM to the uplink under `policy` and configures its eth0 (a Reseed with
  // the network); stores the result in its entry (sandbox_network.cc). Mode none: nothing.
  Result<VmNetInfo> attach_network(const std::string& vm_id, const ParsedPolicy& policy,
                                   const std::string& sandbox_id, const std::string& trace_id);
  // A resumed sandbox: its policy as the registry kept it (LeaseRecord.network, "" = none),
  // parsed again against this pool's deny list, then attached with a fresh MAC and address.
  Result<VmNetInfo> reattach_network(const std::string& vm_id, const std::string& encoded,
                                     const std::string& sandbox_id);
  Result<LeaseInfo> adopt_locked(std::shared_ptr<RunningVm> vm, SizeTier tier, double boot_ms,
                                 std::chrono::milliseconds lifetime, const std::string& sandbox_id,
                                 const std::string& owner);
  // Starts `count` VMs restored from `state_path` on `memory` (copy-on-write), reseeded with
  // `ids` (fresh VM ids, or the resumed one): VMMs spawned here, restores and reseeds in
  // parallel. `before_guests` (when set) runs once every VMM is up and before any state loads:
  // a fork finishes its capture in place there (device state, written pages, seal), so its
  // VMMs start beside the capture. `memory` must be sealed on entry, or, with before_guests,
  // once it returned: no guest ever runs on an unsealed template (the VMMs that exist meanwhile
  // only mapped it; -incoming keeps QEMU from writing guest RAM before the state loads). On
  // failure every VM made is destroyed.
  Result<std::vector<std::shared_ptr<RunningVm>>> restore_clones(
      const TierConfig& cfg, const std::string& state_path, const TemplateMemory& memory,
      const std::vector<std::string>& ids, double* each_ms,
      const std::function<Status()>& before_guests = {},
      std::vector<std::shared_ptr<RunningVm>> prestarted = {});
  // Fork kits (fork_kit.cc). prepare: queues the making of `tier`'s kit on a sandbox thread
  // (no-op when off, when one exists or is being made). take: the tier's kit, if ready.
  void prepare_fork_kit(SizeTier tier);
  std::optional<ForkKit> take_fork_kit(SizeTier tier);
  void make_fork_kit(SizeTier tier);
  // Queues `task` for a sandbox thread without waiting; false when stopping.
  bool post_sandbox_task(std::function<void()> task);
  // Takes a running sandbox lease for an operation (marks it busy); unknownLease otherwise.
  Result<std::shared_ptr<RunningVm>> take_running(const std::string& vm_id, Entry* copy);
  void untake(const std::string& vm_id);
  // release()/expiry of a paused or lost lease; true when `vm_id` was one.
  bool end_parked(const std::string& vm_id, const std::string& reason, bool expired);
  // Parked leases past their expiry; returns the next expiry (real clock) or max.
  Clock::time_point expire_parked();
  void forget_sandbox(const std::string& vm_id);
  std::string paused_dir(const std::string& vm_id) const;

  std::unique_ptr<Registry> registry_;
  std::map<std::string, LeaseRecord> parked_;  // paused and lost sandbox leases
  std::deque<std::function<void()>> tasks_;
  std::condition_variable tasks_cv_;

  PoolOptions opt_;
  Backend& backend_;
  GuestLink& guest_;
  PoolEvents& events_;

  std::mutex mu_;
  std::condition_variable warm_cv_;     // lease waiters, wait_warm
  std::condition_variable refill_cv_;   // refill threads
  std::condition_variable standby_cv_;  // a standby VMM became ready or failed
  std::map<SizeTier, TierState> tiers_;
  std::map<std::string, Entry> vms_;
  std::map<uint64_t, std::string> keys_;  // epoll key → vm id
  uint64_t next_key_ = 1;
  // Recent ends of leases (id, how), for "already released" / "lease expired" messages.
  std::deque<std::pair<std::string, std::string>> released_;
  std::vector<SnapshotStats> snapshots_;
  bool started_ = false;
  bool stopping_ = false;
  std::set<std::shared_ptr<RunningVm>> inflight_;  // see InFlight

  UniqueFd epoll_;
  UniqueFd wake_;  // eventfd: wakes the monitor on stop
  std::vector<std::thread> threads_;
};

}  // namespace nv::vm
