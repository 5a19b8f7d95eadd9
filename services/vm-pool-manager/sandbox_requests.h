// sandbox_requests.h — checks on the pool's sandbox requests (vm.capnp: LeaseRequest with
// sandbox set, ExtendRequest, VmForkRequest, VmSnapshotRequest, PauseRequest, LeasesRequest).
// Each answers badRequest naming the field and the rule, or ok. Pure functions (unit-tested).
#pragma once

#include <nv/schema/common.capnp.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"

namespace nv::vm {

constexpr uint32_t kMaxForks = 16;
constexpr size_t kMaxOwnerBytes = 128;
constexpr size_t kMaxSandboxIdBytes = 128;
constexpr size_t kMaxSnapshotNameBytes = 63;
constexpr size_t kMaxVmIdBytes = 48;

// Snapshot names: 1..63 bytes of [a-zA-Z0-9._-], not starting with '.' (vm.capnp).
Status check_snapshot_name(const std::string& name);
// Owners: 1..128 bytes of printable ASCII without '/' (an owner names a directory only through
// its hash, but a bounded, printable string keeps logs and the registry sane). `optional`:
// "" allowed (vm.leases / vm.snapshots: all owners).
Status check_owner(const std::string& owner, bool optional = false);
// Sandbox ids: 0..128 bytes of printable ASCII.
Status check_sandbox_id(const std::string& id);
// VM ids as the pool makes them: 1..48 bytes of [a-z0-9-].
Status check_vm_id(const std::string& id);
// Fork counts: 1..16; sandbox ids: none (the pool makes none) or exactly `count`, each valid.
Status check_fork(uint32_t count, const std::vector<std::string>& sandbox_ids);
// A tier the schema knows (unset allowed: small).
Status check_tier(schema::SizeTier tier);
// Where an owner's snapshots live: a hex hash of the owner (FNV-1a 64), so no owner string can
// name a path.
std::string owner_dir_name(const std::string& owner);

// shuttingDown: the pool is stopping.
Error shutting_down();
// A sandbox lifetime: 0 = `fallback`; above `max` is badRequest (never silently shortened).
Result<std::chrono::milliseconds> sandbox_lifetime(std::chrono::milliseconds asked,
                                                   std::chrono::milliseconds fallback,
                                                   std::chrono::milliseconds max);

}  // namespace nv::vm
