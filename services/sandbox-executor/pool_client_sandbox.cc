// pool_client_sandbox.cc — PoolClient's sandbox calls (vm.capnp: vm.lease with sandbox set,
// vm.extend, vm.fork, vm.snapshot, vm.snapshots, vm.snapshot.delete, vm.pause, vm.resume,
// vm.leases), spoken over the pool manager's ROUTER like vm.lease.
#include <algorithm>
#include <cstdint>

#include "pool_client.h"
#include "pool_client_wire.h"

namespace nv::exec {

namespace wire {
Error unreachable(const std::string& endpoint, const Error& e) {
  if (e.code != ErrorCode::TIMED_OUT) return e;
  return make_error(ErrorCode::VM_FAILED,
                    "vm-pool-manager at " + endpoint + " did not answer (" + e.message +
                        "); is nv-vm-pool-manager running?",
                    true);
}

Result<VmLease> lease_of(schema::Lease::Reader l) {
  VmLease out;
  out.vm_id = l.getVmId();
  out.channel_path = l.getChannelPath();
  out.inference_path = l.getInferencePath();
  out.vsock_port = l.getVsockPort();
  out.backend = l.getBackend();
  out.accel = l.getAccel();
  out.vcpus = l.getResources().getVcpus();
  out.memory_mib = l.getResources().getMemoryMib();
  out.boot_ms = l.getBootMs();
  out.wait_ms = l.getWaitMs();
  out.lease_ms = l.getLeaseMs();
  out.tier = l.getTier();
  out.sandbox_id = l.getSandboxId();
  out.state = l.getState();
  out.expires_unix_ms = l.getExpiresUnixMs();
  out.note = l.getNote();
  out.restored = l.getRestored();
  if (l.hasNetwork()) {
    auto n = l.getNetwork();
    out.network.allow = n.getMode() == schema::NetworkMode::ALLOW;
    for (auto e : n.getAllow()) out.network.entries.emplace_back(e.cStr(), e.size());
    out.network.mac = n.getMac();
    out.network.ipv4 = n.getIpv4();
    out.network.gateway = n.getGateway();
  }
  if (out.vm_id.empty()) return make_error(ErrorCode::VM_FAILED, "vm-pool-manager sent no vmId");
  const bool running =
      out.state == schema::LeaseState::RUNNING || out.state == schema::LeaseState::UNSET;
  switch (l.getChannelKind()) {
    case schema::ChannelKind::UNIX_STREAM:
      out.channel_kind = "unixStream";
      break;
    case schema::ChannelKind::HYBRID_VSOCK:
      out.channel_kind = "hybridVsock";
      break;
    default:
      if (running) {
        return make_error(ErrorCode::VM_FAILED,
                          "vm-pool-manager leased VM " + out.vm_id + " without a channel kind");
      }
  }
  if (running && out.channel_path.empty()) {
    return make_error(ErrorCode::VM_FAILED,
                      "vm-pool-manager sent running lease " + out.vm_id + " without a channel");
  }
  return out;
}
}  // namespace wire

using wire::lease_of;
using wire::unreachable;

namespace {
// Forks, pauses and snapshots copy a VM's RAM and start VMMs: under TCG on a loaded host they
// take many seconds. The pool bounds each VMM step by its boot timeout (60 s by default).
constexpr std::chrono::milliseconds kSlowCall{180000};
constexpr std::chrono::milliseconds kQuickCall{10000};

uint32_t ms32(std::chrono::milliseconds d) {
  return static_cast<uint32_t>(std::clamp<int64_t>(d.count(), 0, UINT32_MAX));
}

SnapshotRecord snapshot_of(schema::VmSnapshot::Reader s) {
  SnapshotRecord r;
  r.name = s.getName();
  r.owner = s.getOwner();
  r.source_vm_id = s.getSourceVmId();
  r.source_sandbox_id = s.getSourceSandboxId();
  r.tier = s.getTier();
  r.created_unix_ms = s.getCreatedUnixMs();
  r.memory_bytes = s.getMemoryBytes();
  r.state_bytes = s.getStateBytes();
  return r;
}
}  // namespace

Result<VmLease> PoolClient::lease_sandbox(const std::string& trace_id,
                                          const SandboxLeaseSpec& spec) {
  capnp::MallocMessageBuilder mb;
  auto req = bus::init_body<schema::LeaseRequest>(mb);
  req.setTraceId(trace_id);
  req.setTier(spec.tier);
  req.setDeadlineMs(std::max<uint32_t>(1, ms32(spec.wait)));
  req.setLeaseMs(ms32(spec.lifetime));
  req.setSandbox(true);
  req.setSandboxId(spec.sandbox_id);
  req.setOwner(spec.owner);
  req.setFromSnapshot(spec.from_snapshot);
  if (spec.network.allow) {
    auto n = req.initNetwork();
    n.setMode(schema::NetworkMode::ALLOW);
    auto a =
        n.initAllow(static_cast<unsigned>(std::min<size_t>(spec.network.entries.size(), 1000)));
    for (unsigned i = 0; i < a.size(); ++i) a.set(i, spec.network.entries[i]);
    n.setMaxConnections(spec.network.max_connections);
    n.setBandwidthBytesPerS(spec.network.bandwidth);
  }
  auto timeout = spec.wait + (spec.from_snapshot.empty() ? kQuickCall : kSlowCall);
  auto r = client_.call("vm.lease", &mb, timeout, {}, trace_id);
  if (!r) return unreachable(endpoint_, r.error());
  auto body = r->body.root<schema::Lease>();
  if (!body) return body.error();
  return lease_of(body.value());
}

Result<VmLease> PoolClient::extend(const std::string& trace_id, const std::string& vm_id,
                                   std::chrono::milliseconds lifetime) {
  capnp::MallocMessageBuilder mb;
  auto req = bus::init_body<schema::ExtendRequest>(mb);
  req.setTraceId(trace_id);
  req.setVmId(vm_id);
  req.setLeaseMs(ms32(lifetime));
  auto r = client_.call("vm.extend", &mb, kQuickCall, {}, trace_id);
  if (!r) return unreachable(endpoint_, r.error());
  auto body = r->body.root<schema::Lease>();
  if (!body) return body.error();
  return lease_of(body.value());
}

Result<ForkOutcome> PoolClient::fork(const std::string& trace_id, const std::string& vm_id,
                                     uint32_t count, std::chrono::milliseconds lifetime,
                                     const std::vector<std::string>& sandbox_ids) {
  capnp::MallocMessageBuilder mb;
  auto req = bus::init_body<schema::VmForkRequest>(mb);
  req.setTraceId(trace_id);
  req.setVmId(vm_id);
  req.setCount(count);
  req.setLeaseMs(ms32(lifetime));
  auto ids = req.initSandboxIds(static_cast<unsigned>(sandbox_ids.size()));
  for (unsigned i = 0; i < sandbox_ids.size(); ++i) ids.set(i, sandbox_ids[i]);
  auto r = client_.call("vm.fork", &mb, kSlowCall, {}, trace_id);
  if (!r) return unreachable(endpoint_, r.error());
  auto body = r->body.root<schema::VmForkReply>();
  if (!body) return body.error();
  ForkOutcome out;
  out.capture_ms = body->getCaptureMs();
  out.fork_ms = body->getForkMs();
  for (auto l : body->getLeases()) {
    auto v = lease_of(l);
    if (!v) return v.error();
    out.leases.push_back(v.value());
  }
  if (out.leases.size() != count) {
    return make_error(ErrorCode::VM_FAILED, "vm-pool-manager answered a fork of " +
                                                std::to_string(count) + " with " +
                                                std::to_string(out.leases.size()) + " leases");
  }
  return out;
}

namespace {
Result<std::vector<SnapshotRecord>> snapshot_call(Client& client, const std::string& endpoint,
                                                  const char* service, const std::string& trace_id,
                                                  const std::string& vm_id, const std::string& name,
                                                  const std::string& owner,
                                                  std::chrono::milliseconds timeout) {
  capnp::MallocMessageBuilder mb;
  auto req = bus::init_body<schema::VmSnapshotRequest>(mb);
  req.setTraceId(trace_id);
  req.setVmId(vm_id);
  req.setName(name);
  req.setOwner(owner);
  auto r = client.call(service, &mb, timeout, {}, trace_id);
  if (!r) return unreachable(endpoint, r.error());
  auto body = r->body.root<schema::VmSnapshotList>();
  if (!body) return body.error();
  std::vector<SnapshotRecord> out;
  for (auto s : body->getSnapshots()) out.push_back(snapshot_of(s));
  return out;
}

Result<SnapshotRecord> one(Result<std::vector<SnapshotRecord>> r, const char* service) {
  if (!r) return r.error();
  if (r.value().size() != 1) {
    return make_error(ErrorCode::VM_FAILED,
                      std::string("vm-pool-manager answered ") + service + " without its snapshot");
  }
  return r.value()[0];
}
}  // namespace

Result<SnapshotRecord> PoolClient::snapshot(const std::string& trace_id, const std::string& vm_id,
                                            const std::string& name, const std::string& owner) {
  return one(
      snapshot_call(client_, endpoint_, "vm.snapshot", trace_id, vm_id, name, owner, kSlowCall),
      "vm.snapshot");
}

Result<std::vector<SnapshotRecord>> PoolClient::snapshots(const std::string& owner) {
  return snapshot_call(client_, endpoint_, "vm.snapshots", "", "", "", owner, kQuickCall);
}

Result<SnapshotRecord> PoolClient::delete_snapshot(const std::string& trace_id,
                                                   const std::string& name,
                                                   const std::string& owner) {
  return one(snapshot_call(client_, endpoint_, "vm.snapshot.delete", trace_id, "", name, owner,
                           kQuickCall),
             "vm.snapshot.delete");
}

namespace {
Result<VmLease> pause_call(Client& client, const std::string& endpoint, const char* service,
                           const std::string& trace_id, const std::string& vm_id,
                           std::chrono::milliseconds lifetime) {
  capnp::MallocMessageBuilder mb;
  auto req = bus::init_body<schema::PauseRequest>(mb);
  req.setTraceId(trace_id);
  req.setVmId(vm_id);
  req.setLeaseMs(ms32(lifetime));
  auto r = client.call(service, &mb, kSlowCall, {}, trace_id);
  if (!r) return unreachable(endpoint, r.error());
  auto body = r->body.root<schema::Lease>();
  if (!body) return body.error();
  return lease_of(body.value());
}
}  // namespace

Result<VmLease> PoolClient::pause(const std::string& trace_id, const std::string& vm_id) {
  return pause_call(client_, endpoint_, "vm.pause", trace_id, vm_id, {});
}

Result<VmLease> PoolClient::resume(const std::string& trace_id, const std::string& vm_id,
                                   std::chrono::milliseconds lifetime) {
  return pause_call(client_, endpoint_, "vm.resume", trace_id, vm_id, lifetime);
}

Result<std::vector<VmLease>> PoolClient::leases(const std::string& owner) {
  capnp::MallocMessageBuilder mb;
  bus::init_body<schema::LeasesRequest>(mb).setOwner(owner);
  auto r = client_.call("vm.leases", &mb, kQuickCall);
  if (!r) return unreachable(endpoint_, r.error());
  auto body = r->body.root<schema::LeaseList>();
  if (!body) return body.error();
  std::vector<VmLease> out;
  for (auto l : body->getLeases()) {
    auto v = lease_of(l);
    if (!v) return v.error();
    out.push_back(v.value());
  }
  return out;
}

}  // namespace nv::exec
