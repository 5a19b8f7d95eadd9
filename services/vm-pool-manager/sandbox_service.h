// sandbox_service.h — nv-vm-pool-manager's bus services for sandboxes that live (vm.capnp):
//   vm.lease (sandbox set)  LeaseRequest      → Lease
//   vm.extend               ExtendRequest     → Lease
//   vm.fork                 VmForkRequest     → VmForkReply
//   vm.snapshot             VmSnapshotRequest → VmSnapshotList (the one made)
//   vm.snapshots            VmSnapshotRequest → VmSnapshotList (the owner's; "" = all)
//   vm.snapshot.delete      VmSnapshotRequest → VmSnapshotList (the one deleted)
//   vm.pause / vm.resume    PauseRequest      → Lease (state paused / running)
//   vm.leases               LeasesRequest     → LeaseList
// Each request is answered by the Pool's typed errors (badRequest, unknownLease,
// unknownSnapshot, sandboxState, poolExhausted, tierUnavailable, vmFailed, ...).
#pragma once

#include <capnp/message.h>
#include <nv/schema/vm.capnp.h>

#include <functional>
#include <memory>
#include <string>

#include "common/frames.h"
#include "pool.h"

namespace nv::vm {

using ReplyBody = std::shared_ptr<capnp::MallocMessageBuilder>;

// True for the services above except vm.lease (which main.cc routes here when sandbox is set).
bool is_sandbox_service(const std::string& service);
// The work for one request, to run on a request thread (it may block for seconds: forks,
// pauses). `body` is the request's body, moved out of the message.
std::function<Result<ReplyBody>()> sandbox_work(Pool& pool, const std::string& service,
                                                std::shared_ptr<bus::BodyReader> body);
// Serves one sandbox request on the calling (request) thread and returns its reply: a sandbox
// vm.lease waits for its warm VM right here (Pool::lease_sandbox hops to a sandbox thread only
// for its registry write), every other service runs on a sandbox thread. So leases waiting for
// more VMs than the pool has never hold the sandbox threads that vm.release needs to free one.
// shuttingDown once the pool stops.
Result<ReplyBody> serve_sandbox_request(Pool& pool, const std::string& service,
                                        std::shared_ptr<bus::BodyReader> body);
// Runs `call` on a pool sandbox thread when the pool keeps a registry (release and destroy
// write it, and the service's request threads run under a seccomp filter SQLite must not meet);
// shuttingDown once the pool stops. Without a registry, runs it here.
Status on_pool_thread(Pool& pool, const std::function<Status()>& call);
// A Lease reply from a pool lease (plain or sandbox).
void fill_lease(schema::Lease::Builder b, const LeaseInfo& li);

}  // namespace nv::vm
