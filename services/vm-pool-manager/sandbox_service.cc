#include "sandbox_service.h"

#include <optional>

#include "common/log.h"
#include "net_policy.h"
#include "sandbox_requests.h"

namespace nv::vm {
namespace {
using ms = std::chrono::milliseconds;

void fill_snapshot(schema::VmSnapshot::Builder b, const SnapshotRecordRow& r) {
  b.setName(r.name);
  b.setOwner(r.owner);
  b.setTier(r.tier);
  b.setSourceVmId(r.source_vm_id);
  b.setSourceSandboxId(r.source_sandbox_id);
  b.setCreatedUnixMs(r.created_unix_ms);
  b.setMemoryBytes(r.memory_bytes);
  b.setStateBytes(r.state_bytes);
}

ReplyBody snapshot_list(const std::vector<SnapshotRecordRow>& rows) {
  auto out = std::make_shared<capnp::MallocMessageBuilder>();
  auto b = bus::init_body<schema::VmSnapshotList>(*out);
  auto l = b.initSnapshots(static_cast<unsigned>(rows.size()));
  for (unsigned i = 0; i < rows.size(); ++i) fill_snapshot(l[i], rows[i]);
  return out;
}

ReplyBody lease_reply(const LeaseInfo& li) {
  auto out = std::make_shared<capnp::MallocMessageBuilder>();
  fill_lease(bus::init_body<schema::Lease>(*out), li);
  return out;
}
}  // namespace

void fill_lease(schema::Lease::Builder b, const LeaseInfo& li) {
  b.setVmId(li.vm.vm_id);
  b.setTier(li.tier.tier);
  auto r = b.initResources();
  r.setTier(li.tier.tier);
  r.setVcpus(li.tier.vcpus);
  r.setMemoryMib(li.tier.memory_mib);
  b.setChannelKind(li.vm.channel_kind == ChannelKind::hybridVsock
                       ? schema::ChannelKind::HYBRID_VSOCK
                       : schema::ChannelKind::UNIX_STREAM);
  b.setChannelPath(li.vm.channel_path);
  b.setInferencePath(li.vm.inference_path);
  b.setVsockPort(li.vm.vsock_port);
  b.setBackend(li.vm.backend);
  b.setAccel(li.vm.accel);
  b.setRestored(li.vm.restored);
  b.setBootMs(li.boot_ms);
  b.setWaitMs(li.wait_ms);
  b.setLeaseMs(static_cast<uint32_t>(li.lifetime.count()));
  if (li.sandbox) {
    b.setSandboxId(li.sandbox_id);
    b.setState(li.state);
    b.setExpiresUnixMs(li.expires_unix_ms);
    b.setNote(li.note);
    auto n = b.initNetwork();
    n.setMode(li.network.allow ? schema::NetworkMode::ALLOW : schema::NetworkMode::NONE);
    auto a = n.initAllow(static_cast<unsigned>(li.network.entries.size()));
    for (unsigned i = 0; i < li.network.entries.size(); ++i) a.set(i, li.network.entries[i]);
    n.setMac(li.network.mac);
    n.setIpv4(li.network.ipv4);
    n.setGateway(li.network.gateway);
  }
}

Status on_pool_thread(Pool& pool, const std::function<Status()>& call) {
  if (!pool.keeps_registry()) return call();
  std::optional<Status> out;
  if (!pool.run_on_sandbox_thread([&] { out.emplace(call()); })) {
    return make_error(ErrorCode::SHUTTING_DOWN, "vm pool is stopping");
  }
  return *out;
}

Result<ReplyBody> serve_sandbox_request(Pool& pool, const std::string& service,
                                        std::shared_ptr<bus::BodyReader> body) {
  auto work = sandbox_work(pool, service, std::move(body));
  if (service == "vm.lease") return work();  // it may wait: not on a sandbox thread
  std::optional<Result<ReplyBody>> out;
  if (!pool.run_on_sandbox_thread([&] { out.emplace(work()); })) {
    return make_error(ErrorCode::SHUTTING_DOWN, "vm pool is stopping");
  }
  return std::move(*out);
}

bool is_sandbox_service(const std::string& s) {
  return s == "vm.extend" || s == "vm.fork" || s == "vm.snapshot" || s == "vm.snapshots" ||
         s == "vm.snapshot.delete" || s == "vm.pause" || s == "vm.resume" || s == "vm.leases";
}

std::function<Result<ReplyBody>()> sandbox_work(Pool& pool, const std::string& service,
                                                std::shared_ptr<bus::BodyReader> body) {
  return [&pool, service, body]() -> Result<ReplyBody> {
    if (service == "vm.lease") {
      auto req = body->root<schema::LeaseRequest>();
      if (!req) return req.error();
      auto q = req.value();
      SandboxLeaseRequest r;
      r.tier = q.getTier();
      r.deadline = ms(q.getDeadlineMs());
      r.lifetime = ms(q.getLeaseMs());
      r.sandbox_id = q.getSandboxId();
      r.owner = q.getOwner();
      r.from_snapshot = q.getFromSnapshot();
      r.trace_id = q.getTraceId();
      if (q.hasNetwork()) {
        auto n = q.getNetwork();
        std::vector<std::string> allow;
        for (auto e : n.getAllow()) allow.emplace_back(e.cStr(), e.size());
        if (n.getAllow().size() > kMaxAllowEntries) {
          return make_error(ErrorCode::BAD_REQUEST, "network.allow holds more than 64 entries");
        }
        const bool on = n.getMode() == schema::NetworkMode::ALLOW;
        if (on && !pool.network()) {
          return make_error(
              ErrorCode::EGRESS_DENIED,
              "networking is off in this pool (nv-vm-pool-manager --net-uplink-netns)");
        }
        if (on) {
          auto p =
              pool.network()->parse(true, allow, n.getMaxConnections(), n.getBandwidthBytesPerS());
          if (!p.ok()) return p.error();
          r.network = p.value();
        }
      }
      log::TraceScope scope(q.getTraceId());
      auto l = pool.lease_sandbox(r);
      if (!l) return l.error();
      return lease_reply(l.value());
    }
    if (service == "vm.extend") {
      auto req = body->root<schema::ExtendRequest>();
      if (!req) return req.error();
      log::TraceScope scope(req.value().getTraceId());
      auto l = pool.extend(req.value().getVmId(), ms(req.value().getLeaseMs()));
      if (!l) return l.error();
      return lease_reply(l.value());
    }
    if (service == "vm.fork") {
      auto req = body->root<schema::VmForkRequest>();
      if (!req) return req.error();
      auto q = req.value();
      if (q.getSandboxIds().size() > kMaxForks) {
        return make_error(ErrorCode::BAD_REQUEST, "sandboxIds lists more than 16 ids");
      }
      std::vector<std::string> ids;
      for (auto id : q.getSandboxIds()) ids.emplace_back(id);
      log::TraceScope scope(q.getTraceId());
      auto f = pool.fork(q.getVmId(), q.getCount(), ms(q.getLeaseMs()), ids);
      if (!f) return f.error();
      auto out = std::make_shared<capnp::MallocMessageBuilder>();
      auto b = bus::init_body<schema::VmForkReply>(*out);
      auto l = b.initLeases(static_cast<unsigned>(f.value().leases.size()));
      for (unsigned i = 0; i < f.value().leases.size(); ++i) fill_lease(l[i], f.value().leases[i]);
      b.setCaptureMs(f.value().capture_ms);
      b.setForkMs(f.value().fork_ms);
      return out;
    }
    if (service == "vm.snapshot" || service == "vm.snapshots" || service == "vm.snapshot.delete") {
      auto req = body->root<schema::VmSnapshotRequest>();
      if (!req) return req.error();
      auto q = req.value();
      log::TraceScope scope(q.getTraceId());
      if (service == "vm.snapshots") {
        auto rows = pool.snapshots(q.getOwner());
        if (!rows) return rows.error();
        return snapshot_list(rows.value());
      }
      auto row = service == "vm.snapshot" ? pool.snapshot(q.getVmId(), q.getName(), q.getOwner())
                                          : pool.delete_snapshot(q.getName(), q.getOwner());
      if (!row) return row.error();
      return snapshot_list({row.value()});
    }
    if (service == "vm.pause" || service == "vm.resume") {
      auto req = body->root<schema::PauseRequest>();
      if (!req) return req.error();
      log::TraceScope scope(req.value().getTraceId());
      auto l = service == "vm.pause"
                   ? pool.pause(req.value().getVmId())
                   : pool.resume(req.value().getVmId(), ms(req.value().getLeaseMs()));
      if (!l) return l.error();
      return lease_reply(l.value());
    }
    if (service == "vm.leases") {
      auto req = body->root<schema::LeasesRequest>();
      if (!req) return req.error();
      auto all = pool.sandbox_leases(req.value().getOwner());
      if (!all) return all.error();
      auto out = std::make_shared<capnp::MallocMessageBuilder>();
      auto l = bus::init_body<schema::LeaseList>(*out).initLeases(
          static_cast<unsigned>(all.value().size()));
      for (unsigned i = 0; i < all.value().size(); ++i) fill_lease(l[i], all.value()[i]);
      return out;
    }
    return make_error(ErrorCode::UNKNOWN_SERVICE, "not a sandbox service: " + service);
  };
}

}  // namespace nv::vm
