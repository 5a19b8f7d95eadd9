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
#include "pool_types.h"
#include "template_memory.h"

namespace nv::vm {

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
  // attach_network for a new sandbox lease `li` (li.network set); when it fails the VM is
  // released ("network setup failed") and the error returned.
  Status attach_or_release(LeaseInfo& li, const ParsedPolicy& policy, const std::string& trace_id);
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
