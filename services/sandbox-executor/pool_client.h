// pool_client.h — the executor's side of this host's nv-vm-pool-manager (vm.capnp).
//
//   vm.lease   LeaseRequest  → Lease          a warm VM, waiting up to the lease deadline;
//                                             destroyed by the pool when its lifetime ends
//   vm.release ReleaseRequest → ReleaseReply  the VM is destroyed (never reused)
//   vm.status  PoolStatusRequest → PoolStatus warm/active/booting per tier (capacity)
// Spoken with the bus framing over the pool manager's own ROUTER (nv::Client works against any
// ROUTER that speaks it). nv::Client is not thread-safe, so a PoolClient belongs to one thread;
// every request handler makes its own (a DEALER on an ipc:// socket is cheap).
#pragma once

#include <nv/schema/common.capnp.h>
#include <nv/schema/vm.capnp.h>

#include <chrono>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/client.h"
#include "common/error.h"

namespace nv::exec {

// A sandbox's network (sandbox.capnp NetworkPolicy / NetworkInfo, issue 16).
struct NetworkSpec {
  bool allow = false;                // false: mode none (no route)
  std::vector<std::string> entries;  // CIDR[:port] and domain names
  uint32_t max_connections = 0;      // 0 = the pool's default
  uint64_t bandwidth = 0;            // bytes/s; 0 = the pool's default
};
struct NetworkLease {
  bool allow = false;
  std::vector<std::string> entries;
  std::string mac, ipv4, gateway;  // "" for mode none
};

struct VmLease {
  std::string vm_id;
  std::string channel_kind;  // "unixStream" | "hybridVsock"
  std::string channel_path;
  std::string inference_path;  // the nv.inference port's socket ("" = none)
  uint32_t vsock_port = 0;
  std::string backend, accel;
  uint32_t vcpus = 0, memory_mib = 0;
  double boot_ms = 0, wait_ms = 0;
  uint32_t lease_ms = 0;  // lifetime granted: the pool destroys the VM after it
  // Sandbox leases (vm.capnp Lease @13..):
  schema::SizeTier tier = schema::SizeTier::UNSET;
  std::string sandbox_id;
  schema::LeaseState state = schema::LeaseState::UNSET;
  int64_t expires_unix_ms = 0;
  std::string note;  // lost: why
  bool restored = false;
  NetworkLease network;
};

// A sandbox lease (vm.capnp LeaseRequest with sandbox = true).
struct SandboxLeaseSpec {
  std::string sandbox_id, owner;
  std::string from_snapshot;  // "" = a warm VM of `tier`
  schema::SizeTier tier = schema::SizeTier::SMALL;
  std::chrono::milliseconds wait{30000};  // for a warm VM
  std::chrono::milliseconds lifetime{0};  // 0 = the pool's default
  NetworkSpec network;
};

struct ForkOutcome {
  std::vector<VmLease> leases;  // one per fork, running, reseeded
  double capture_ms = 0, fork_ms = 0;
};

// A named snapshot (vm.capnp VmSnapshot).
struct SnapshotRecord {
  std::string name, owner, source_vm_id, source_sandbox_id;
  schema::SizeTier tier = schema::SizeTier::UNSET;
  int64_t created_unix_ms = 0;
  uint64_t memory_bytes = 0, state_bytes = 0;
};

struct PoolCounts {
  uint32_t warm = 0, active = 0, booting = 0, max = 0, waiting = 0;  // all tiers together
  uint32_t fork_kits = 0;  // ready fork kits (vm.capnp TierStatus.forkKits), all tiers
  std::string backend, accel;
};

class PoolClient {
 public:
  PoolClient(zmq::context_t& ctx, ClientOptions options);

  // Waits up to `wait` for a warm VM of `tier`; poolExhausted (retryable) when none came. The
  // lease lasts `lifetime` (0 = the pool's default; above the pool's maximum: badRequest).
  Result<VmLease> lease(const std::string& trace_id, schema::SizeTier tier,
                        std::chrono::milliseconds wait,
                        std::chrono::milliseconds lifetime = std::chrono::milliseconds(0));
  // Destroys the VM. unknownLease counts as done (someone released it already).
  Status release(const std::string& trace_id, const std::string& vm_id, const std::string& reason,
                 std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
  Result<PoolCounts> status(std::chrono::milliseconds timeout);

  // --- Sandboxes that live (vm.capnp; pool_client_sandbox.cc). Errors are the pool's typed
  // errors (unknownLease, unknownSnapshot, badRequest, poolExhausted, vmFailed, ...).
  Result<VmLease> lease_sandbox(const std::string& trace_id, const SandboxLeaseSpec& spec);
  // vm.extend: the lease now ends `lifetime` from now.
  Result<VmLease> extend(const std::string& trace_id, const std::string& vm_id,
                         std::chrono::milliseconds lifetime);
  // vm.fork: `count` running copies of a running sandbox VM (which keeps running).
  Result<ForkOutcome> fork(const std::string& trace_id, const std::string& vm_id, uint32_t count,
                           std::chrono::milliseconds lifetime,
                           const std::vector<std::string>& sandbox_ids);
  // vm.snapshot: a named, persistent snapshot of a running sandbox VM (which keeps running).
  Result<SnapshotRecord> snapshot(const std::string& trace_id, const std::string& vm_id,
                                  const std::string& name, const std::string& owner);
  Result<std::vector<SnapshotRecord>> snapshots(const std::string& owner);
  Result<SnapshotRecord> delete_snapshot(const std::string& trace_id, const std::string& name,
                                         const std::string& owner);
  // vm.pause: state to disk, VMM gone; vm.resume: running again (new channel path).
  Result<VmLease> pause(const std::string& trace_id, const std::string& vm_id);
  Result<VmLease> resume(const std::string& trace_id, const std::string& vm_id,
                         std::chrono::milliseconds lifetime);
  // vm.leases: every sandbox lease the pool holds for `owner` ("" = all): running, paused, lost.
  Result<std::vector<VmLease>> leases(const std::string& owner);

 private:
  Client client_;
  std::string endpoint_;
};

}  // namespace nv::exec
