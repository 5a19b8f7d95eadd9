// pool_client_wire.h — what PoolClient's calls share (pool_client.cc, pool_client_sandbox.cc):
// turning vm.capnp replies into VmLease and a silent pool manager into a clear error.
#pragma once

#include <nv/schema/vm.capnp.h>

#include <string>

#include "pool_client.h"

namespace nv::exec::wire {

// A call that timed out becomes vmFailed (retryable) naming the pool manager's endpoint; other
// errors pass unchanged.
Error unreachable(const std::string& endpoint, const Error& e);
// A Lease → VmLease. vmFailed when it names no VM, or when it is running (plain leases: state
// unset) without a channel kind or path; paused and lost sandbox leases have no channel.
Result<VmLease> lease_of(schema::Lease::Reader l);

}  // namespace nv::exec::wire
