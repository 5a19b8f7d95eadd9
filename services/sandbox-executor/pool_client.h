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

#include <chrono>
#include <string>
#include <zmq.hpp>

#include "common/client.h"
#include "common/error.h"

namespace nv::exec {

struct VmLease {
  std::string vm_id;
  std::string channel_kind;  // "unixStream" | "hybridVsock"
  std::string channel_path;
  uint32_t vsock_port = 0;
  std::string backend, accel;
  uint32_t vcpus = 0, memory_mib = 0;
  double boot_ms = 0, wait_ms = 0;
  uint32_t lease_ms = 0;  // lifetime granted: the pool destroys the VM after it
};

struct PoolCounts {
  uint32_t warm = 0, active = 0, booting = 0, max = 0, waiting = 0;  // all tiers together
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

 private:
  Client client_;
  std::string endpoint_;
};

}  // namespace nv::exec
