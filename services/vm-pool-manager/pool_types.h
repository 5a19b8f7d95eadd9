// pool_types.h — what the Pool (pool.h) takes and gives: tier configurations, the guest link
// it drives, options, statuses, event callbacks, lease and fork results.
#pragma once

#include <nv/schema/common.capnp.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nv/schema/vm.capnp.h>

#include "backend.h"
#include "network.h"
#include "registry.h"
#include "sysutil.h"

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

}  // namespace nv::vm
