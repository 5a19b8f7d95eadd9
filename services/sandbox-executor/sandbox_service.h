// sandbox_service.h — the "sandbox" bus service of nv-sandbox-executor (schemas/sandbox.capnp):
// sandboxes that live. main.cc registers two workers on it: "sandbox" (create, list, snapshots,
// deleteSnapshot — and any call, which is answered the same) and "sandbox.<executor>" (the calls
// on this executor's sandboxes; sandbox_route.h).
//
// A sandbox holds a sandbox lease of this host's pool manager (vm.capnp: the VM lives until the
// lease's lifetime, which this service keeps at the sandbox's deadline + lease_margin through
// vm.extend) and an open GuestChannel to its agent, reconnected when it closed. Operations on one
// sandbox run one at a time (a per-sandbox lock); operations on different sandboxes run at once,
// up to the workers' capacity. A VM that cannot be reached any more reaps the sandbox ("vm lost:
// <why>", event sandbox.reaped) and the call answers vmFailed.
//
// Deadlines (reaper, sandbox_reaper.cc, on an injectable clock): a running or paused sandbox
// whose lifetime ended is reaped "lifetime ended"; a running one without a call for its idle
// timeout is reaped "idle for <n> ms" (a paused one only has its lifetime). Destroyed sandboxes
// answer get/list (includeDestroyed) for keep_destroyed (10 min), then are forgotten.
//
// Per-owner limits: at most max_per_owner sandboxes that are not destroyed (paused count), and at
// most max_memory_mib_per_owner of RAM over the running ones → sandboxLimit.
//
// Restart (§5): every change is written to the registry (sandbox_registry.h) before the answer.
// recover() runs before the workers register: each running sandbox whose lease the pool still
// holds running gets its channel back; paused ones stay paused; the others are reaped with the
// pool's reason ("vm lost: the pool no longer holds its VM" when it has none).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "common/events.h"
#include "common/sandbox_client.h"
#include "common/worker.h"
#include "exec_limits.h"
#include "guest/host/guest_channel.h"
#include "inference_bridge.h"
#include "pool_client.h"
#include "sandbox_mounts.h"
#include "sandbox_registry.h"

namespace nv::exec {

using std::chrono::milliseconds;

// The pool manager's sandbox calls (PoolClient's), behind an interface so unit tests can run the
// service without a pool. Thread-safe implementations only.
class SandboxPool {
 public:
  virtual ~SandboxPool() = default;
  virtual Result<VmLease> lease(const std::string& trace_id, const SandboxLeaseSpec& spec) = 0;
  virtual Status release(const std::string& trace_id, const std::string& vm_id,
                         const std::string& reason) = 0;
  virtual Result<VmLease> extend(const std::string& trace_id, const std::string& vm_id,
                                 milliseconds lifetime) = 0;
  virtual Result<ForkOutcome> fork(const std::string& trace_id, const std::string& vm_id,
                                   uint32_t count, milliseconds lifetime,
                                   const std::vector<std::string>& sandbox_ids) = 0;
  virtual Result<SnapshotRecord> snapshot(const std::string& trace_id, const std::string& vm_id,
                                          const std::string& name, const std::string& owner) = 0;
  virtual Result<std::vector<SnapshotRecord>> snapshots(const std::string& owner) = 0;
  virtual Result<SnapshotRecord> delete_snapshot(const std::string& trace_id,
                                                 const std::string& name,
                                                 const std::string& owner) = 0;
  virtual Result<VmLease> pause(const std::string& trace_id, const std::string& vm_id) = 0;
  virtual Result<VmLease> resume(const std::string& trace_id, const std::string& vm_id,
                                 milliseconds lifetime) = 0;
  virtual Result<std::vector<VmLease>> leases(const std::string& owner) = 0;
};

// The real pool: a PoolClient per call (nv::Client is per thread; a DEALER is cheap).
std::unique_ptr<SandboxPool> bus_pool(zmq::context_t& ctx, ClientOptions options);

// Opens the guest channel of a leased VM (tests substitute an in-process agent).
using ChannelConnect = std::function<guest::Result<std::unique_ptr<guest::GuestChannel>>(
    const VmLease& lease, guest::Deadline deadline)>;
ChannelConnect channel_connect(const guest::ChannelLimits& limits);

struct SandboxOptions {
  std::string executor = "local";  // the <executor> of ids ("sbx-<executor>-<hex>")
  ExecLimits limits;               // code, stdin, env, timeout, output caps of exec
  milliseconds default_lifetime{3600000};
  milliseconds max_lifetime{86400000};
  milliseconds default_idle{600000};
  uint32_t max_per_owner = 8;
  uint32_t max_memory_mib_per_owner = 4096;
  milliseconds keep_destroyed{600000};  // get/list answer destroyed sandboxes this long
  milliseconds connect_timeout{15000};  // channel connect → Hello
  milliseconds file_timeout{30000};     // one file or process call
  milliseconds host_grace{2000};        // exec: no result this long after its timeout
  milliseconds lease_wait{30000};       // waiting for a warm VM
  milliseconds lease_margin{60000};     // pool lease lifetime beyond the sandbox's deadline
  milliseconds reap_interval{1000};     // reaper tick
  milliseconds verify_every{5000};      // reaper: ask the pool which leases it still holds
  uint64_t max_file_bytes = 32u << 20;  // one writeFile / readFile (also below the frame cap)
  uint32_t max_path_bytes = 4096;
  guest::ChannelLimits channel;
  std::function<int64_t()> now_ms;  // unix ms; empty = the system clock
  MountOptions mounts;              // host directories (sandbox_mounts.h)
  // The inference bridge (inference_bridge.h): the "llm" service; empty = sandboxes asking for
  // inference are refused (badRequest). Budget: InferencePolicy.tokenBudget 0 means this.
  LlmCall llm;
  uint64_t inference_token_budget = 100000;
};

// A sandbox as this executor holds it.
struct Sandbox {
  std::timed_mutex op;  // one operation at a time (held for the whole call)
  // Below: guarded by SandboxService::mu_ for reads by others (get/list/reaper); written only
  // while `op` is held too.
  SandboxRecord rec;
  VmLease lease;                                 // channel path etc. of the running VM
  std::unique_ptr<guest::GuestChannel> channel;  // only with `op` held
  std::vector<MountState> mounts;                // host directories; only with `op` held
  std::string trace_id;  // of the call that made it: every inference call carries it
  std::unique_ptr<InferenceBridge> inference;  // inference.enabled and running; with `op` held
};

class SandboxService {
 public:
  SandboxService(SandboxOptions options, std::unique_ptr<SandboxPool> pool, ChannelConnect connect,
                 EventPublisher& events, std::unique_ptr<SandboxRegistry> registry);
  ~SandboxService();

  // Loads the registry and settles every sandbox in it with the pool (see the header). Returns
  // an error when the pool cannot be asked (the caller retries).
  Status recover();
  // The workers' handler: answers `request` exactly once, from the calling thread.
  void handle(const std::shared_ptr<Request>& request);
  // One reaper pass at `now_ms` (unix ms): reaps what is due, forgets old destroyed sandboxes,
  // and every verify_every asks the pool which leases it still holds. Returns how many were
  // reaped. The reaper thread calls it every reap_interval.
  size_t reap(int64_t now_ms);
  void start_reaper();
  void stop_reaper();

  // For tests and metrics.
  std::vector<sandbox::Info> snapshot_infos();
  int64_t now() const { return opt_.now_ms(); }
  const SandboxOptions& options() const { return opt_; }

  // The state a reaper pass would end a sandbox for at `now_ms`: "" = none, else the reason.
  static std::string due_reason(const SandboxRecord& rec, int64_t now_ms);

  struct Call;  // one request being handled (sandbox_call.h)

 private:
  // sandbox_service.cc
  void dispatch(Call& c);
  void do_create(Call& c);
  void do_get(Call& c);
  void do_list(Call& c);
  void do_keepalive(Call& c, Sandbox& s);
  void do_destroy(Call& c, Sandbox& s);
  std::shared_ptr<Sandbox> find(const std::string& owner, const std::string& id);
  std::string new_id();
  Status check_limits(const std::string& owner, uint32_t more, uint32_t more_mib);
  // Registers a running sandbox made from `lease` (create, fork).
  std::shared_ptr<Sandbox> adopt(SandboxRecord rec, VmLease lease);
  // Ends a sandbox (destroy, reaping): lease released, state destroyed, event. With `op` held.
  void end(Sandbox& s, const std::string& topic, const std::string& reason,
           const std::string& trace_id);
  void save(Sandbox& s);
  void publish(const std::string& topic, const SandboxRecord& rec, const std::string& reason,
               const std::string& trace_id, double duration_ms = 0, const std::string& parent = {});
  milliseconds lease_lifetime(const SandboxRecord& rec) const;
  void touch(Sandbox& s);
  // sandbox_ops.cc: the calls that reach the guest.
  Status ensure_channel(Call& c, Sandbox& s);
  // A channel error of a guest call → the typed error; the channel or the VM is dealt with.
  Error guest_failed(Call& c, Sandbox& s, const guest::ChannelError& e, const std::string& what);
  void do_exec(Call& c, Sandbox& s);
  void do_guest_call(Call& c, Sandbox& s);
  void do_snapshot(Call& c, Sandbox& s);
  void do_snapshots(Call& c);
  void do_delete_snapshot(Call& c);
  void do_fork(Call& c, Sandbox& s);
  void do_pause(Call& c, Sandbox& s);
  void do_resume(Call& c, Sandbox& s);
  // sandbox_service_mounts.cc: host directories.
  // Copies the spec's mounts in (create); an error ends the sandbox.
  Status mount_in(Call& c, Sandbox& s, const std::vector<sandbox::Mount>& mounts);
  // Copies the read-write mounts out (sync, destroy, reaping), the registry updated after.
  Result<std::vector<sandbox::MountSync>> mount_out(Sandbox& s, const std::string& trace_id,
                                                    guest::Deadline deadline, Call* c);
  void do_sync(Call& c, Sandbox& s);
  // Before a sandbox ends: its read-write mounts copied out, best effort. "" or why it failed.
  std::string sync_before_end(Sandbox& s, const std::string& trace_id);
  // sandbox_inference.cc: with `op` held and the channel open; nothing when not enabled.
  Status start_inference(Sandbox& s, guest::Deadline deadline);

  SandboxOptions opt_;
  std::unique_ptr<SandboxPool> pool_;
  ChannelConnect connect_;
  EventPublisher& events_;
  std::unique_ptr<SandboxRegistry> registry_;

  std::mutex mu_;  // sandboxes_ and every Sandbox::rec
  std::map<std::string, std::shared_ptr<Sandbox>> sandboxes_;
  std::map<schema::SizeTier, uint32_t> tier_mib_;  // learnt from leases

  std::mutex reaper_mu_;
  std::condition_variable reaper_cv_;
  bool reaper_stop_ = false;
  int64_t last_verify_ms_ = 0;
  std::thread reaper_;
};

}  // namespace nv::exec
