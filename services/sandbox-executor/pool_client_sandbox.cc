// pool_client_sandbox.cc — PoolClient's sandbox calls (vm.extend, vm.fork, vm.snapshot, ...).
//
// CONTRACT ONLY: every call answers internal "not implemented" until the pool manager serves
// these services (branch poolsbx replaces this file).
#include "pool_client.h"

namespace nv::exec {

namespace {
Error not_implemented(const char* what) {
  return make_error(ErrorCode::INTERNAL, std::string(what) + ": not implemented by this build",
                    false);
}
}  // namespace

Result<VmLease> PoolClient::lease_sandbox(const std::string&, const SandboxLeaseSpec&) {
  return not_implemented("vm.lease (sandbox)");
}
Result<VmLease> PoolClient::extend(const std::string&, const std::string&,
                                   std::chrono::milliseconds) {
  return not_implemented("vm.extend");
}
Result<ForkOutcome> PoolClient::fork(const std::string&, const std::string&, uint32_t,
                                     std::chrono::milliseconds, const std::vector<std::string>&) {
  return not_implemented("vm.fork");
}
Result<SnapshotRecord> PoolClient::snapshot(const std::string&, const std::string&,
                                            const std::string&, const std::string&) {
  return not_implemented("vm.snapshot");
}
Result<std::vector<SnapshotRecord>> PoolClient::snapshots(const std::string&) {
  return not_implemented("vm.snapshots");
}
Result<SnapshotRecord> PoolClient::delete_snapshot(const std::string&, const std::string&,
                                                   const std::string&) {
  return not_implemented("vm.snapshot.delete");
}
Result<VmLease> PoolClient::pause(const std::string&, const std::string&) {
  return not_implemented("vm.pause");
}
Result<VmLease> PoolClient::resume(const std::string&, const std::string&,
                                   std::chrono::milliseconds) {
  return not_implemented("vm.resume");
}
Result<std::vector<VmLease>> PoolClient::leases(const std::string&) {
  return not_implemented("vm.leases");
}

}  // namespace nv::exec
